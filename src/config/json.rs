//! The running configuration as JSON, for `GET /api/config`.
//!
//! The shape is the file's: the same tables under the same key names (`listener` and `route`
//! arrays, `pool` an object by name), routes naming their listener and pool rather than the
//! indices `Config` holds, durations with a unit (`"250ms"`, `"5s"`, `"1m"`) and enumerations
//! spelled as the file spells them. So what an operator reads here is what they would write,
//! and a key means what it means in the file: a key the file may omit to say "off" or "every"
//! (`admin`, a route's `listener` and `host`, `health_check`, `outlier_detection`, `retry`,
//! `hash_key`, `health_check.path`) is omitted for the same meaning; every other key is
//! present with its effective value, defaults included. The one addition is each backend's
//! `resolved` address, the one actually dialled.
//!
//! The admin token is never written: `"<redacted>"` when one is set, no key when none is.
//!
//! The JSON is built by hand rather than derived so that the config types stay free of serde
//! and the secret cannot leak through a derive someone adds later.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{
    Admin, AllUnhealthy, Backend, Config, HashKey, HealthCheck, HostMatch, Limits, Listener, Log,
    LogFormat, OutlierDetection, Pool, Protocol, Retry, Route, Server,
};

/// What `admin.token` shows when a token is set.
const REDACTED: &str = "<redacted>";

impl Config {
    /// The configuration as the file would write it, with secrets redacted; see the module
    /// documentation for the shape.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("server".into(), server(&self.server));
        if let Some(admin) = &self.admin {
            out.insert("admin".into(), self::admin(admin));
        }
        out.insert("log".into(), log(&self.log));
        let listeners = self.listeners.iter().map(listener).collect();
        out.insert("listener".into(), Value::Array(listeners));
        let routes = self.routes.iter().map(|r| route(self, r)).collect();
        out.insert("route".into(), Value::Array(routes));
        let pools = self
            .pools
            .iter()
            .map(|p| (p.name.clone(), pool(p)))
            .collect();
        out.insert("pool".into(), Value::Object(pools));
        Value::Object(out)
    }
}

fn server(server: &Server) -> Value {
    json!({
        "workers": server.workers,
        "shutdown_timeout": duration(server.shutdown_timeout),
        "max_connections": server.max_connections,
        "state_dir": server.state_dir.to_string_lossy(),
    })
}

fn admin(admin: &Admin) -> Value {
    let mut out = Map::new();
    out.insert("bind".into(), admin.bind.to_string().into());
    if admin.token.is_some() {
        out.insert("token".into(), REDACTED.into());
    }
    out.insert(
        "header_read_timeout".into(),
        duration(admin.header_read_timeout).into(),
    );
    out.insert("metrics".into(), admin.metrics.into());
    Value::Object(out)
}

fn log(log: &Log) -> Value {
    let format = match log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    json!({
        "level": log.level,
        "format": format,
        "access_log": log.access_log,
    })
}

fn listener(listener: &Listener) -> Value {
    let trusted: Vec<String> = listener
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut out = json!({
        "name": listener.name,
        "bind": listener.bind.to_string(),
        "header_read_timeout": duration(listener.header_read_timeout),
        "idle_timeout": duration(listener.idle_timeout),
        "request_body_timeout": duration(listener.request_body_timeout),
        "send_timeout": duration(listener.send_timeout),
        "max_header_bytes": listener.max_header_bytes,
        "max_uri_bytes": listener.max_uri_bytes,
        "trusted_proxies": trusted,
        // The file's spelling of "no limit".
        "max_body_bytes": listener.max_body_bytes.unwrap_or(0),
    });
    // TLS keys only when set, so plain listeners read as before. Key files are named, never
    // their content.
    if let Some(tls) = &listener.tls {
        let certificates: Vec<Value> = tls
            .certificates
            .iter()
            .map(|c| {
                json!({
                    "cert": c.cert_path.display().to_string(),
                    "key": c.key_path.display().to_string(),
                    "names": c.names,
                    "not_after": crate::admin::timestamp::rfc3339(c.not_after),
                })
            })
            .collect();
        out["tls"] = json!({ "certificates": certificates });
    }
    if listener.redirect_https {
        out["redirect_https"] = true.into();
    }
    if let Some(hsts) = listener.hsts.as_ref().and_then(|h| h.to_str().ok()) {
        out["hsts"] = hsts.into();
    }
    out
}

fn route(config: &Config, route: &Route) -> Value {
    let mut out = Map::new();
    if let Some(listener) = route.listener.and_then(|i| config.listeners.get(i)) {
        out.insert("listener".into(), listener.name.clone().into());
    }
    match &route.host {
        HostMatch::Any => {}
        HostMatch::Exact(host) => {
            out.insert("host".into(), host.clone().into());
        }
        HostMatch::Wildcard(suffix) => {
            out.insert("host".into(), format!("*{suffix}").into());
        }
    }
    out.insert("path_prefix".into(), route.path_prefix.clone().into());
    // Validation guarantees the index; `?` keeps a broken one visible rather than a panic.
    let pool = config
        .pools
        .get(route.pool)
        .map_or("?", |p| p.name.as_str());
    out.insert("pool".into(), pool.into());
    if let Some(limit) = route.max_body_bytes {
        out.insert("max_body_bytes".into(), limit.unwrap_or(0).into());
    }
    Value::Object(out)
}

fn pool(pool: &Pool) -> Value {
    let protocol = match pool.protocol {
        Protocol::Http1 => "http1",
    };
    let all_unhealthy = match pool.all_unhealthy {
        AllUnhealthy::FailClosed => "fail_closed",
        AllUnhealthy::FailOpen => "fail_open",
    };
    let mut out = Map::new();
    out.insert("algorithm".into(), pool.algorithm.as_str().into());
    if let Some(key) = &pool.hash_key {
        out.insert("hash_key".into(), hash_key(key).into());
    }
    out.insert("protocol".into(), protocol.into());
    out.insert("slow_start".into(), duration(pool.slow_start).into());
    out.insert("all_unhealthy".into(), all_unhealthy.into());
    let backends = pool.backends.iter().map(backend).collect();
    out.insert("backends".into(), Value::Array(backends));
    let timeouts = json!({
        "connect": duration(pool.timeouts.connect),
        "request": duration(pool.timeouts.request),
        "idle": duration(pool.timeouts.idle),
    });
    out.insert("timeouts".into(), timeouts);
    if let Some(check) = &pool.health_check {
        out.insert("health_check".into(), health_check(check));
    }
    if let Some(detection) = &pool.outlier_detection {
        out.insert("outlier_detection".into(), outlier_detection(detection));
    }
    if let Some(retry) = &pool.retry {
        out.insert("retry".into(), self::retry(retry));
    }
    out.insert("limits".into(), limits(&pool.limits));
    if let Some(tls) = &pool.tls {
        let mut t = Map::new();
        if let Some(name) = &tls.server_name {
            t.insert("server_name".into(), name.to_str().into_owned().into());
        }
        let ca = tls.ca.as_ref().map(|p| p.display().to_string());
        t.insert("ca".into(), ca.unwrap_or_else(|| "system".into()).into());
        if let Some((cert, key)) = &tls.client_cert {
            t.insert("client_cert".into(), cert.display().to_string().into());
            t.insert("client_key".into(), key.display().to_string().into());
        }
        out.insert("tls".into(), Value::Object(t));
    }
    Value::Object(out)
}

fn backend(backend: &Backend) -> Value {
    json!({
        "address": backend.address,
        "weight": backend.weight,
        "resolved": backend.resolved.to_string(),
    })
}

fn hash_key(key: &HashKey) -> String {
    match key {
        HashKey::ClientIp => "client_ip".to_string(),
        HashKey::Path => "path".to_string(),
        HashKey::Header(name) => format!("header:{name}"),
        HashKey::Cookie(name) => format!("cookie:{name}"),
        HashKey::Query(name) => format!("query:{name}"),
    }
}

fn health_check(check: &HealthCheck) -> Value {
    let mut out = Map::new();
    if let Some(path) = &check.path {
        out.insert("path".into(), path.as_str().into());
    }
    out.insert("interval".into(), duration(check.interval).into());
    out.insert("timeout".into(), duration(check.timeout).into());
    out.insert("healthy_threshold".into(), check.healthy_threshold.into());
    out.insert(
        "unhealthy_threshold".into(),
        check.unhealthy_threshold.into(),
    );
    let (low, high) = (check.expected_status.start(), check.expected_status.end());
    let expected = if low == high {
        low.to_string()
    } else {
        format!("{low}-{high}")
    };
    out.insert("expected_status".into(), expected.into());
    Value::Object(out)
}

fn outlier_detection(detection: &OutlierDetection) -> Value {
    json!({
        "consecutive_failures": detection.consecutive_failures,
        "base_ejection": duration(detection.base_ejection),
        "max_ejected_percent": detection.max_ejected_percent,
    })
}

fn retry(retry: &Retry) -> Value {
    let on = &retry.on;
    let conditions: Vec<&str> = [
        (on.connect_failure, "connect_failure"),
        (on.reset, "reset"),
        (on.status_502, "502"),
        (on.status_503, "503"),
        (on.status_504, "504"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    json!({
        "attempts": retry.attempts,
        "on": conditions,
        "budget_percent": retry.budget_percent,
    })
}

fn limits(limits: &Limits) -> Value {
    json!({
        "max_connections_per_backend": limits.max_connections_per_backend,
        "max_pending": limits.max_pending,
    })
}

/// A duration as the file writes it: the largest of `h`, `m`, `s`, `ms` that divides it
/// exactly (`"1m"` for 60 seconds, `"90s"`, `"1500ms"`), `"0s"` for zero. The file cannot
/// express less than a millisecond, so a duration built at runtime with a finer remainder is
/// shown in nanoseconds (`"1500us"` would be no more readable) rather than rounded.
fn duration(d: Duration) -> String {
    if d.subsec_nanos() % 1_000_000 != 0 {
        return format!("{}ns", d.as_nanos());
    }
    super::validate::values::show_duration(d)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TOKEN: &str = "s3cr3t-t0ken-value";

    /// Every table and, where it has one, a non-default value for every key.
    const FULL: &str = r#"[server]
workers = 4
shutdown_timeout = "90s"
max_connections = 500
state_dir = "/var/lib/sluice"

[admin]
bind = "127.0.0.1:9901"
token = "s3cr3t-t0ken-value"
header_read_timeout = "1500ms"

[log]
level = "sluice=debug,warn"
format = "json"
access_log = false

[[listener]]
name = "web"
bind = "0.0.0.0:8080"
header_read_timeout = "60s"
idle_timeout = "2h"
max_header_bytes = 16384
max_uri_bytes = 4096
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
max_body_bytes = 1048576

[[listener]]
name = "internal"
bind = "127.0.0.1:8081"

[[route]]
listener = "web"
host = "API.example.com"
path_prefix = "/v1"
pool = "api"

[[route]]
host = "*.example.com"
pool = "static"

[[route]]
listener = "internal"
pool = "api"

[pool.static]
backends = [{ address = "127.0.0.1:9101" }]

[pool.api]
algorithm = "maglev"
hash_key = "header:X-User"
slow_start = "30s"
all_unhealthy = "fail_open"
backends = [
  { address = "127.0.0.1:9001", weight = 3 },
  { address = "[::1]:9002" },
]

[pool.api.timeouts]
connect = "250ms"
request = "5s"
idle = "1m"

[pool.api.health_check]
path = "/healthz?full=1"
interval = "10s"
timeout = "1s"
healthy_threshold = 1
unhealthy_threshold = 5
expected_status = "200"

[pool.api.outlier_detection]
consecutive_failures = 7
base_ejection = "45s"
max_ejected_percent = 30

[pool.api.retry]
attempts = 1
on = ["reset", "503"]
budget_percent = 10

[pool.api.limits]
max_connections_per_backend = 100
max_pending = 0
"#;

    /// Only what the file requires: everything else at its default.
    const MINIMAL: &str = r#"[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[route]]
pool = "app"

[pool.app]
backends = [{ address = "127.0.0.1:9001" }]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_full_config_keeps_the_file_shape() {
        let want = json!({
            "server": {
                "workers": 4,
                "shutdown_timeout": "90s",
                "max_connections": 500,
                "state_dir": "/var/lib/sluice",
            },
            "admin": {
                "bind": "127.0.0.1:9901",
                "token": "<redacted>",
                "header_read_timeout": "1500ms",
                "metrics": true,
            },
            "log": { "level": "sluice=debug,warn", "format": "json", "access_log": false },
            "listener": [
                {
                    "name": "web",
                    "bind": "0.0.0.0:8080",
                    "header_read_timeout": "1m",
                    "idle_timeout": "2h",
                    "request_body_timeout": "1m",
                    "send_timeout": "1m",
                    "max_header_bytes": 16384,
                    "max_uri_bytes": 4096,
                    "trusted_proxies": ["10.0.0.0/8", "fd00::/8"],
                    "max_body_bytes": 1048576,
                },
                {
                    "name": "internal",
                    "bind": "127.0.0.1:8081",
                    "header_read_timeout": "10s",
                    "idle_timeout": "1m",
                    "request_body_timeout": "1m",
                    "send_timeout": "1m",
                    "max_header_bytes": 65536,
                    "max_uri_bytes": 8192,
                    "trusted_proxies": [],
                    "max_body_bytes": 0,
                },
            ],
            "route": [
                // Names, not indices: `api` is the second pool in the file.
                {
                    "listener": "web",
                    "host": "api.example.com",
                    "path_prefix": "/v1",
                    "pool": "api",
                },
                { "host": "*.example.com", "path_prefix": "/", "pool": "static" },
                { "listener": "internal", "path_prefix": "/", "pool": "api" },
            ],
            "pool": {
                "static": {
                    "algorithm": "round_robin",
                    "protocol": "http1",
                    "slow_start": "0s",
                    "all_unhealthy": "fail_closed",
                    "backends": [
                        { "address": "127.0.0.1:9101", "weight": 1, "resolved": "127.0.0.1:9101" },
                    ],
                    "timeouts": { "connect": "2s", "request": "30s", "idle": "1m" },
                    "limits": { "max_connections_per_backend": 1024, "max_pending": 1024 },
                },
                "api": {
                    "algorithm": "maglev",
                    "hash_key": "header:x-user",
                    "protocol": "http1",
                    "slow_start": "30s",
                    "all_unhealthy": "fail_open",
                    "backends": [
                        { "address": "127.0.0.1:9001", "weight": 3, "resolved": "127.0.0.1:9001" },
                        { "address": "[::1]:9002", "weight": 1, "resolved": "[::1]:9002" },
                    ],
                    "timeouts": { "connect": "250ms", "request": "5s", "idle": "1m" },
                    "health_check": {
                        "path": "/healthz?full=1",
                        "interval": "10s",
                        "timeout": "1s",
                        "healthy_threshold": 1,
                        "unhealthy_threshold": 5,
                        "expected_status": "200",
                    },
                    "outlier_detection": {
                        "consecutive_failures": 7,
                        "base_ejection": "45s",
                        "max_ejected_percent": 30,
                    },
                    "retry": { "attempts": 1, "on": ["reset", "503"], "budget_percent": 10 },
                    "limits": { "max_connections_per_backend": 100, "max_pending": 0 },
                },
            },
        });
        assert_eq!(parse(FULL).to_json(), want);
    }

    #[test]
    fn defaults_are_shown_and_off_tables_omitted() {
        let json = parse(MINIMAL).to_json();
        // No `[admin]` table: the API is off, and the key is absent as in the file.
        assert_eq!(json.get("admin"), None);
        assert_eq!(
            json["server"],
            json!({
                "workers": 0,
                "shutdown_timeout": "30s",
                "max_connections": 10000,
                "state_dir": "./state",
            })
        );
        assert_eq!(
            json["log"],
            json!({ "level": "info", "format": "text", "access_log": true })
        );
        assert_eq!(
            json["route"],
            json!([{ "path_prefix": "/", "pool": "app" }])
        );
        let pool = json["pool"]["app"].as_object().unwrap();
        for off in ["hash_key", "health_check", "outlier_detection", "retry"] {
            assert!(!pool.contains_key(off), "{off} should be omitted");
        }
        assert_eq!(pool["limits"]["max_pending"], 1024);

        // An empty table turns the feature on with every default, spelled out.
        let on = parse(&format!(
            "{MINIMAL}[pool.app.health_check]\n[pool.app.retry]\n[pool.app.outlier_detection]\n"
        ))
        .to_json();
        let pool = &on["pool"]["app"];
        assert_eq!(
            pool["health_check"],
            json!({
                "interval": "5s",
                "timeout": "2s",
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
                "expected_status": "200-399",
            })
        );
        assert_eq!(
            pool["retry"]["on"],
            json!(["connect_failure", "reset", "502", "503", "504"])
        );
        assert_eq!(pool["outlier_detection"]["base_ejection"], "30s");
    }

    #[test]
    fn the_token_never_appears() {
        let config = parse(FULL);
        let text = serde_json::to_string(&config.to_json()).unwrap();
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(text.contains(r#""token":"<redacted>""#), "{text}");
        let pretty = serde_json::to_string_pretty(&config.to_json()).unwrap();
        assert!(!pretty.contains(TOKEN));

        // An empty token means none: no key rather than a redacted nothing.
        let without = parse(&FULL.replace(&format!("token = \"{TOKEN}\"\n"), "token = \"\"\n"));
        assert!(without.admin.as_ref().unwrap().token.is_none());
        let json = without.to_json();
        assert_eq!(json["admin"].get("token"), None);
        assert_eq!(json["admin"]["bind"], "127.0.0.1:9901");
    }

    #[test]
    fn written_back_as_toml_it_is_the_same_config() {
        // The shape is the file's: drop the one addition (`resolved`), write it as TOML, and
        // sluice reads the same configuration back. (The token reads back as the literal
        // placeholder, which is still redacted on the way out.)
        for text in [FULL, MINIMAL] {
            let first = parse(text).to_json();
            let mut file = first.clone();
            for pool in file["pool"].as_object_mut().unwrap().values_mut() {
                for backend in pool["backends"].as_array_mut().unwrap() {
                    backend.as_object_mut().unwrap().remove("resolved");
                }
            }
            let toml = toml::to_string(&file).unwrap();
            assert_eq!(parse(&toml).to_json(), first, "{toml}");
        }
    }

    #[test]
    fn durations_use_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_millis(60_001), "60001ms"),
            // Finer than the file can write: exact, in nanoseconds, never rounded.
            (Duration::from_micros(1500), "1500000ns"),
            (Duration::new(2, 1), "2000000001ns"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }
}
