//! Table-driven tests: each mistake produces its message at the right line and column, with the
//! right help; valid files produce the right values and defaults.

use super::*;
use crate::config::{
    Algorithm, AllUnhealthy, HealthCheck, HostMatch, Limits, OutlierDetection, Protocol, Retry,
    RetryOn,
};

mod resilience;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    validate(text, Path::new("t.toml"))
}

/// A minimal valid file; test cases append tables to it.
const BASE: &str = r#"[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[route]]
pool = "app"

[pool.app]
backends = [{ address = "127.0.0.1:9001" }]
"#;

/// Errors of `BASE` + `snippet` as (line within the snippet, column, message, help).
fn errors_in(snippet: &str) -> Vec<(usize, usize, String, Option<String>)> {
    explained_errors_in(snippet)
        .into_iter()
        .map(|(line, column, message, _, help)| (line, column, message, help))
        .collect()
}

/// Errors of `BASE` + `snippet` as (line within the snippet, column, message, note, help).
fn explained_errors_in(snippet: &str) -> Vec<Explained> {
    let base_lines = BASE.lines().count();
    let text = format!("{BASE}{snippet}");
    let errors = match parse(&text) {
        Ok(_) => panic!("expected errors for:\n{snippet}"),
        Err(errors) => errors,
    };
    errors
        .iter()
        .map(|e| {
            let line = e.line().unwrap_or_else(|| panic!("unlocated: {e}"));
            assert!(line > base_lines, "error in BASE for {snippet:?}:\n{e}");
            (
                line - base_lines,
                e.column().unwrap(),
                e.message().to_string(),
                e.note().map(str::to_string),
                e.help().map(str::to_string),
            )
        })
        .collect()
}

type Explained = (usize, usize, String, Option<String>, Option<String>);

#[test]
fn base_is_valid() {
    let config = parse(BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.routes[0].host, HostMatch::Any);
}

#[test]
fn each_mistake_is_located_and_explained() {
    // (snippet appended to BASE, line in snippet, column, message, help)
    let cases: &[(&str, usize, usize, &str, Option<&str>)] = &[
        // Names the format knows but this version does not implement.
        (
            "[pool.b]\nalgorithm = \"round-robin\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
            2, 13, "unknown algorithm `round-robin`", Some("did you mean `round_robin`?"),
        ),
        (
            "[pool.b]\nprotocol = \"h2\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
            2, 12, "protocol `h2` is not implemented in this version yet; available: http1", None,
        ),
        (
            "[pool.b]\nprotocol = \"http2\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
            2, 12, "unknown protocol `http2`", Some("did you mean `http1`?"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\" }]\n[pool.b.tls]\nca = \"/nonexistent/ca.pem\"\n",
            4, 6, "cannot read certificate file `/nonexistent/ca.pem`: No such file or directory (os error 2)",
            None,
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\" }]\n[pool.b.tls]\nclient_key = \"k.pem\"\n",
            4, 14, "`client_cert` and `client_key` go together",
            Some("set both for mutual TLS, or neither"),
        ),
        (
            "[[route]]\npool = \"app\"\npath_prefix = \"/x\"\nstrip_prefix = true\n",
            4, 16, "`strip_prefix` is part of sluice's config format but is not implemented in this version yet", Some("remove `strip_prefix` for now; docs/configuration.md lists what is implemented"),
        ),
        (
            "[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:8081\"\nhsts = \"forever\"\n",
            4, 8, "invalid hsts value `forever`", None,
        ),
        // Routes.
        (
            "[[route]]\nlistener = \"webb\"\npool = \"app\"\npath_prefix = \"/a\"\n",
            2, 12, "route names listener `webb`, which is not defined", Some("did you mean `web`?"),
        ),
        (
            "[[route]]\npool = \"ap\"\npath_prefix = \"/a\"\n",
            2, 8, "route names pool `ap`, which is not defined", Some("did you mean `app`?"),
        ),
        (
            "[[route]]\npool = \"zzz\"\npath_prefix = \"/a\"\n",
            2, 8, "route names pool `zzz`, which is not defined", None,
        ),
        (
            "[[route]]\npool = \"app\"\npath_prefix = \"v1\"\n",
            3, 15, "path_prefix `v1` must start with `/`", Some("did you mean `/v1`?"),
        ),
        (
            "[[route]]\npool = \"app\"\npath_prefix = \"/a?b\"\n",
            3, 15, "path_prefix `/a?b` contains `?` or `#`", None,
        ),
        (
            "[[route]]\npool = \"app\"\nhost = \"example.com:80\"\n",
            3, 8, "host `example.com:80` includes a port", Some("did you mean `example.com`?"),
        ),
        (
            "[[route]]\npool = \"app\"\nhost = \"api.*.com\"\n",
            3, 8, "`api.*.com` uses `*` where it is not allowed", None,
        ),
        (
            "[[route]]\npool = \"app\"\n",
            1, 1, "duplicate route: an earlier route matches the same listener, host and path_prefix",
            Some("remove one, or change its `host` or `path_prefix`"),
        ),
        // Pools and backends.
        (
            "[pool.b]\nbackends = []\n",
            2, 12, "pool `b` has no backends", Some("add `backends = [{ address = \"10.0.0.11:8080\" }]`"),
        ),
        (
            "[pool.b]\nalgorithm = \"round_robin\"\n",
            1, 7, "pool `b` has no backends", Some("add `backends = [{ address = \"10.0.0.11:8080\" }]`"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\", weight = 0 }]\n",
            2, 49, "weight must be 1 to 1000, not 0",
            Some("use draining to stop traffic to a backend: DELETE /api/pools/b/backends/127.0.0.1:1"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\", weight = 1001 }]\n",
            2, 49, "weight must be 1 to 1000, not 1001", None,
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\", weight = -3 }]\n",
            2, 49, "weight must be 1 to 1000, not -3", None,
        ),
        (
            "[pool.b]\nbackends = [\n  { address = \"127.0.0.1:1\" },\n  { address = \"127.0.0.1:1\" },\n]\n",
            4, 15, "backend `127.0.0.1:1` appears twice in pool `b`", Some("to send it more traffic, raise its `weight` instead"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1\" }]\n",
            2, 25, "backend address `127.0.0.1` has no port", Some("did you mean `127.0.0.1:80`?"),
        ),
        // Durations.
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\" }]\n[pool.b.timeouts]\nconnect = \"10\"\n",
            4, 11, "`10` has no unit", Some("did you mean \"10s\"?"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\" }]\n[pool.b.timeouts]\nrequest = 30\n",
            4, 11, "`30` is a number, not a duration", Some("durations need a unit: did you mean \"30s\"?"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\" }]\n[pool.b.timeouts]\nidle = \"0s\"\n",
            4, 8, "a timeout of zero would fail everything at once", None,
        ),
        (
            "[server]\nshutdown_timeout = \"30 seconds\"\n",
            2, 20, "`30 seconds` has an unknown unit ` seconds`", Some("did you mean \"30s\"?"),
        ),
        // Listeners, binds and the admin API.
        (
            "[[listener]]\nname = \"b\"\nbind = \"localhost:8081\"\n",
            3, 8, "`localhost:8081` is not a socket address", None,
        ),
        (
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\n",
            2, 8, "duplicate listener name `web`", Some("routes refer to listeners by name, so names must be unique"),
        ),
        (
            "[[listener]]\nname = \"b\"\nbind = \"0.0.0.0:8080\"\n",
            3, 8, "bind `0.0.0.0:8080` of listener `b` conflicts with listener `web` on `127.0.0.1:8080`",
            Some("give each listener and the admin API its own port"),
        ),
        (
            "[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:8081\"\nmax_header_bytes = 100\n",
            4, 20, "max_header_bytes must be at least 1024, not 100", None,
        ),
        (
            "[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:8081\"\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n",
            4, 34, "invalid trusted proxy: `10.0.0.1/8` has host bits set; the network is `10.0.0.0/8`",
            Some("did you mean `10.0.0.0/8`?"),
        ),
        (
            "[admin]\nbind = \"127.0.0.1:8080\"\n",
            2, 8, "bind `127.0.0.1:8080` of the admin API conflicts with listener `web` on `127.0.0.1:8080`",
            Some("give each listener and the admin API its own port"),
        ),
        (
            "[admin]\nbind = \"0.0.0.0:9901\"\ntoken = \"\"\n",
            2, 8, "the admin API on `0.0.0.0:9901` needs a token",
            Some("set `token` in `[admin]`, or bind to a loopback address like `127.0.0.1:9901`"),
        ),
        // Server and log.
        (
            "[server]\nmax_connections = 0\n",
            2, 19, "max_connections must be at least 1", Some("it caps downstream connections across all listeners; the default is 10000"),
        ),
        ("[log]\nformat = \"jsn\"\n", 2, 10, "unknown log format `jsn`", Some("did you mean `json`?")),
        ("[log]\nlevel = \"infoo\"\n", 2, 9, "unknown log level `infoo`", Some("did you mean `info`?")),
        // toml's own errors keep its message and gain the location and a did-you-mean.
        (
            "[[route]]\npool = \"app\"\nhosts = \"a.example\"\n",
            3, 1, "unknown field `hosts`, expected one of `listener`, `host`, `path_prefix`, `pool`, `max_body_bytes`, `strip_prefix`, `split`",
            Some("did you mean `host`?"),
        ),
        (
            "[listner]\n",
            1, 2, "unknown field `listner`, expected one of `server`, `admin`, `log`, `listener`, `route`, `pool`",
            Some("did you mean `listener`?"),
        ),
        (
            "[pool.b]\nbackends = [{ address = \"127.0.0.1:1\", wieght = 2 }]\n",
            2, 40, "unknown field `wieght`, expected `address` or `weight`", Some("did you mean `weight`?"),
        ),
        ("[server]\nworkers = -1\n", 2, 11, "invalid value: integer `-1`, expected usize", None),
        ("[server\n", 1, 8, "unclosed table, expected `]`", None),
        ("[pool.app]\n", 1, 7, "duplicate key `app`", None),
    ];
    for &(snippet, line, column, message, help) in cases {
        let errors = errors_in(snippet);
        let want = (line, column, message.to_string(), help.map(str::to_string));
        assert!(
            errors.contains(&want),
            "for snippet:\n{snippet}\nwant {want:?}\ngot  {errors:#?}"
        );
        assert_eq!(errors.len(), 1, "one mistake, one error:\n{errors:#?}");
    }
}

#[test]
fn log_filters_are_checked_by_tracing() {
    for good in [
        "info",
        "WARN",
        "sluice=debug,warn",
        "sluice",
        "hyper=off,info",
    ] {
        let text = format!("{BASE}[log]\nlevel = \"{good}\"\n");
        assert!(parse(&text).is_ok(), "{good}");
    }
    let errors = errors_in("[log]\nlevel = \"sluice=loud\"\n");
    assert!(
        errors[0].2.starts_with("invalid log filter `sluice=loud`"),
        "{errors:?}"
    );
}

#[test]
fn every_error_is_reported_in_file_order() {
    let text = r#"[server]
max_connections = 0

[[listener]]
name = "web"
bind = "nowhere"

[[route]]
listener = "wbe"
pool = "api"

[pool.api]
algorithm = "fastest"
backends = []
"#;
    let errors = parse(text).unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.line().unwrap(), e.message()))
        .collect();
    assert_eq!(
        found,
        [
            (2, "max_connections must be at least 1"),
            (6, "`nowhere` is not a socket address"),
            (9, "route names listener `wbe`, which is not defined"),
            (13, "unknown algorithm `fastest`"),
            (14, "pool `api` has no backends"),
        ]
    );
    // A swapped pair of letters is one edit away.
    assert_eq!(errors.errors()[2].help(), Some("did you mean `web`?"));
    let shown = errors.to_string();
    assert!(shown.contains("\n13 | algorithm = \"fastest\"\n   |             ^^^^^^^^^"));
    assert!(shown.contains("= expected one of: round_robin, weighted_round_robin, random, least_requests, power_of_two, peak_ewma, ring_hash, maglev"));
}

#[test]
fn several_syntax_errors_are_reported_once_per_line() {
    let errors = parse("a = = 1\n[server]\nworkers = 1\nb = \n[[route]\n").unwrap_err();
    let lines: Vec<_> = errors.iter().map(|e| e.line()).collect();
    assert_eq!(lines, [Some(1), Some(4), Some(5)], "{errors}");
}

#[test]
fn a_file_without_listeners_or_routes_says_so() {
    let errors = parse("[pool.app]\nbackends = [{ address = \"127.0.0.1:1\" }]\n").unwrap_err();
    let messages: Vec<_> = errors.iter().map(|e| (e.line(), e.message())).collect();
    assert_eq!(
        messages,
        [
            (None, "no listeners: sluice would accept nothing"),
            (None, "no routes: every request would get 404"),
        ]
    );
}

#[test]
fn defaults_fill_every_omitted_key() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.source, Path::new("t.toml"));
    assert_eq!(config.server.workers, 0);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.state_dir, Path::new("./state"));
    assert!(config.admin.is_none());
    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Text);
    assert!(config.log.access_log);
    let l = &config.listeners[0];
    assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.max_header_bytes, 65_536);
    assert_eq!(l.max_uri_bytes, 8192);
    assert!(l.trusted_proxies.is_empty());
    assert_eq!(l.max_body_bytes, None);
    let r = &config.routes[0];
    assert_eq!(
        (r.listener, &r.host, r.path_prefix.as_str(), r.pool),
        (None, &HostMatch::Any, "/", 0)
    );
    let p = &config.pools[0];
    assert_eq!(
        (p.algorithm, p.protocol),
        (Algorithm::RoundRobin, Protocol::Http1)
    );
    assert_eq!(p.timeouts.connect, Duration::from_secs(2));
    assert_eq!(p.timeouts.request, Duration::from_secs(30));
    assert_eq!(p.timeouts.idle, Duration::from_secs(60));
    assert_eq!(p.backends[0].weight, 1);
    // Resilience: only limits are on without their tables.
    assert_eq!(p.all_unhealthy, AllUnhealthy::FailClosed);
    assert_eq!(p.health_check, None);
    assert_eq!(p.outlier_detection, None);
    assert_eq!(p.retry, None);
    assert_eq!(
        (p.limits.max_connections_per_backend, p.limits.max_pending),
        (1024, 1024)
    );

    // `[admin]` alone enables the API on its default loopback address, without a token.
    let config = parse(&format!("{BASE}[admin]\n")).unwrap();
    let admin = config.admin.unwrap();
    assert_eq!(admin.bind, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(admin.token, None);
}

/// The SPEC's full shape, minus the keys not implemented yet.
const FULL: &str = r#"
[server]
workers = 4
shutdown_timeout = "45s"
max_connections = 500
state_dir = "/var/lib/sluice"

[admin]
bind = "0.0.0.0:9901"
token = "s3cret"

[log]
level = "sluice=debug,warn"
format = "json"
access_log = false

[[listener]]
name = "web"
bind = "0.0.0.0:8080"
header_read_timeout = "5s"
idle_timeout = "2m"
max_header_bytes = 32768
max_uri_bytes = 4096
trusted_proxies = ["10.0.0.0/8", "::1"]
max_body_bytes = 1048576

[[listener]]
name = "internal"
bind = "[::1]:8081"

[[route]]
listener = "web"
host = "API.example.com"
path_prefix = "/v1"
pool = "api"

[[route]]
host = "*.example.com"
pool = "app"

[[route]]
listener = "internal"
pool = "app"

[pool.api]
algorithm = "round_robin"
protocol = "http1"
all_unhealthy = "fail_open"
backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "localhost:9002", weight = 3 },
]

[pool.api.timeouts]
connect = "250ms"
request = "1h"
idle = "90s"

[pool.api.health_check]
path = "/healthz?deep=1"
interval = "10s"
timeout = "1500ms"
healthy_threshold = 1
unhealthy_threshold = 5
expected_status = "200-299"

[pool.api.outlier_detection]
consecutive_failures = 7
base_ejection = "1m"
max_ejected_percent = 30

[pool.api.retry]
attempts = 3
on = ["connect_failure", "503"]
budget_percent = 10

[pool.api.limits]
max_connections_per_backend = 100
max_pending = 0

[pool.app]
backends = [{ address = "[::1]:9003" }]
"#;

#[test]
fn full_file_gives_typed_values() {
    let c = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.workers, 4);
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(45));
    assert_eq!(c.server.max_connections, 500);
    assert_eq!(c.server.state_dir, Path::new("/var/lib/sluice"));
    let admin = c.admin.as_ref().unwrap();
    assert_eq!(admin.bind, "0.0.0.0:9901".parse().unwrap());
    assert_eq!(admin.token.as_deref(), Some("s3cret"));
    assert_eq!(c.log.level, "sluice=debug,warn");
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(!c.log.access_log);

    let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["web", "internal"]);
    let web = &c.listeners[0];
    assert_eq!(web.bind, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(web.header_read_timeout, Duration::from_secs(5));
    assert_eq!(web.idle_timeout, Duration::from_secs(120));
    assert_eq!((web.max_header_bytes, web.max_uri_bytes), (32768, 4096));
    let proxies: Vec<_> = web
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
    assert_eq!(web.max_body_bytes, Some(1_048_576));
    assert_eq!(c.listeners[1].bind, "[::1]:8081".parse().unwrap());

    let routes: Vec<_> = c
        .routes
        .iter()
        .map(|r| (r.listener, r.host.clone(), r.path_prefix.as_str(), r.pool))
        .collect();
    assert_eq!(
        routes,
        [
            (
                Some(0),
                HostMatch::Exact("api.example.com".into()),
                "/v1",
                0
            ),
            (None, HostMatch::Wildcard(".example.com".into()), "/", 1),
            (Some(1), HostMatch::Any, "/", 1),
        ]
    );

    let api = &c.pools[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.timeouts.connect, Duration::from_millis(250));
    assert_eq!(api.timeouts.request, Duration::from_secs(3600));
    assert_eq!(api.timeouts.idle, Duration::from_secs(90));
    let backends: Vec<_> = api
        .backends
        .iter()
        .map(|b| (b.address.as_str(), b.resolved, b.weight))
        .collect();
    assert_eq!(
        backends,
        [
            ("127.0.0.1:9001", "127.0.0.1:9001".parse().unwrap(), 1),
            ("localhost:9002", "127.0.0.1:9002".parse().unwrap(), 3),
        ]
    );
    assert_eq!(
        c.pools[1].backends[0].resolved,
        "[::1]:9003".parse().unwrap()
    );

    assert_eq!(api.all_unhealthy, AllUnhealthy::FailOpen);
    assert_eq!(
        api.health_check,
        Some(HealthCheck {
            path: Some(http::uri::PathAndQuery::from_static("/healthz?deep=1")),
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(1500),
            healthy_threshold: 1,
            unhealthy_threshold: 5,
            expected_status: 200..=299,
        })
    );
    assert_eq!(
        api.outlier_detection,
        Some(OutlierDetection {
            consecutive_failures: 7,
            base_ejection: Duration::from_secs(60),
            max_ejected_percent: 30,
        })
    );
    assert_eq!(
        api.retry,
        Some(Retry {
            attempts: 3,
            on: RetryOn {
                connect_failure: true,
                status_503: true,
                ..RetryOn::default()
            },
            budget_percent: 10,
        })
    );
    assert_eq!(
        api.limits,
        Limits {
            max_connections_per_backend: 100,
            max_pending: 0,
        }
    );
}

#[test]
fn pools_keep_file_order() {
    let text = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"
[[route]]
pool = "a"
[pool.zeta]
backends = [{ address = "127.0.0.1:1" }]
[pool.a]
backends = [{ address = "127.0.0.1:2" }]
[pool.mid]
backends = [{ address = "127.0.0.1:3" }]
"#;
    let c = parse(text).unwrap();
    let names: Vec<_> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zeta", "a", "mid"]);
    assert_eq!(c.routes[0].pool, 1);
}

#[test]
fn port_zero_binds_never_conflict() {
    let text = format!("{BASE}[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"c\"\nbind = \"127.0.0.1:0\"\n");
    assert!(parse(&text).is_ok());
}

#[test]
fn summary_lists_listeners_routes_and_pools() {
    let c = parse(FULL).unwrap();
    let want = "\
t.toml is valid
  2 listeners, 3 routes, 2 pools, 3 backends
  admin API on 0.0.0.0:9901 (token required)
listeners:
  web       0.0.0.0:8080
  internal  [::1]:8081
routes:
  web       api.example.com  /v1  -> api
  *         *.example.com    /    -> app
  internal  *                /    -> app
pools:
  api  round_robin  127.0.0.1:9001 (weight 1), localhost:9002 = 127.0.0.1:9002 (weight 3)
                    health_check GET /healthz?deep=1 every 10s, outlier_detection, retry 3, fail_open, max 100 per backend, max 0 pending
  app  round_robin  [::1]:9003 (weight 1)";
    assert_eq!(c.summary(), want);
}

#[test]
fn summary_shows_a_tcp_check_and_default_tables_briefly() {
    let text = format!(
        "{BASE}[pool.app.health_check]\n[pool.app.outlier_detection]\n[pool.app.retry]\n[pool.app.limits]\n"
    );
    let summary = parse(&text).unwrap_or_else(|e| panic!("{e}")).summary();
    let want = "\
pools:
  app  round_robin  127.0.0.1:9001 (weight 1)
                    health_check TCP connect every 5s, outlier_detection, retry 2";
    assert!(summary.ends_with(want), "{summary}");
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../../config/sluice.toml");
    let c = parse(text).unwrap_or_else(|e| panic!("config/sluice.toml:\n{e}"));
    assert_eq!(c.listeners[0].bind, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin.unwrap().bind, "127.0.0.1:9901".parse().unwrap());
    assert!(c.pools.len() >= 2 && c.routes.len() >= 2);
}

#[test]
fn pools_may_be_written_inline_or_with_dotted_keys() {
    let text = r#"
listener = [{ name = "web", bind = "127.0.0.1:0" }]
route = [{ pool = "b" }]
pool.b.backends = [{ address = "127.0.0.1:1" }]
pool.a = { backends = [{ address = "127.0.0.1:2" }], timeouts = { connect = "1s" } }
"#;
    let c = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(c.pools[1].timeouts.connect, Duration::from_secs(1));
    let errors = parse(&format!("{text}pool.c = {{ backends = [] }}\n")).unwrap_err();
    assert_eq!(errors.errors()[0].message(), "pool `c` has no backends");
    assert_eq!(errors.errors()[0].line(), Some(6));
}

#[test]
fn every_prefix_of_the_example_is_handled_without_panicking() {
    // Truncation exercises unclosed strings, tables and arrays at every position, and spans at
    // the very end of the input.
    let text = include_str!("../../../config/sluice.toml");
    for (end, _) in text.char_indices() {
        if let Err(errors) = parse(&text[..end]) {
            for error in &errors {
                let _ = error.to_string();
            }
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Err(errors) = parse(&text) {
            proptest::prop_assert!(!errors.to_string().is_empty());
        }
    }
}

#[test]
fn head_limits_have_an_upper_bound() {
    let errors = errors_in(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmax_header_bytes = 9223372036854775807\nmax_uri_bytes = 2000000\n[[route]]\npool = \"p\"\n[pool.p]\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
    );
    let messages: Vec<&str> = errors.iter().map(|e| e.2.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("max_header_bytes must be at most 1048576")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("max_uri_bytes must be at most 1048576")),
        "{messages:?}"
    );
}

#[test]
fn hash_key_only_with_hashing_algorithms_and_slow_start_parses() {
    let errors = errors_in(
        "[pool.h]\nhash_key = \"client_ip\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
    );
    assert!(
        errors.iter().any(|e| e
            .2
            .contains("`hash_key` has no effect with algorithm `round_robin`")),
        "{errors:?}"
    );
    let text = "[[listener]]\nname = \"w\"\nbind = \"127.0.0.1:0\"\n[[route]]\npool = \"p\"\n\
                [pool.p]\nslow_start = \"30s\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.pools[0].slow_start,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(config.pools[0].hash_key, None);
    let bad =
        errors_in("[pool.s]\nslow_start = \"soon\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n");
    assert!(bad.iter().any(|e| e.2.contains("soon")), "{bad:?}");
}
