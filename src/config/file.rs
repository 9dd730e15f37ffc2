//! The configuration file exactly as written in TOML, before any meaning is given to it.
//!
//! Every table denies unknown keys, so a misspelt key is an error, not a silently ignored
//! setting. Values that a semantic check may complain about are `Spanned`, so the error can
//! point at them. Enumerations (algorithm, protocol, log format, all_unhealthy, retry
//! conditions), status codes and durations stay strings here: `validate.rs` turns them into
//! types with messages that list the valid values, which serde's own "unknown variant" errors
//! would not do as well.
//!
//! Keys that are part of sluice's format but not implemented yet are accepted as raw
//! `toml::Value`s so that validation can say exactly that, instead of "unknown field".
//!
//! Defaults live in `validate.rs`, next to the checks, so that a missing key and a written
//! one take the same path.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A key the format reserves for a later version: accepted here, rejected by validation.
pub(super) type Later = Option<Spanned<toml::Value>>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub server: Option<ServerFile>,
    pub admin: Option<Spanned<AdminFile>>,
    pub log: Option<LogFile>,
    #[serde(default)]
    pub listener: Vec<Spanned<ListenerFile>>,
    #[serde(default)]
    pub route: Vec<Spanned<RouteFile>>,
    #[serde(default)]
    pub pool: Pools,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerFile {
    /// Runtime worker threads; default 0 = one per CPU core.
    pub workers: Option<usize>,
    /// Grace period for in-flight requests on shutdown; duration, default "30s".
    pub shutdown_timeout: Option<Spanned<DurationText>>,
    /// Downstream connections across all listeners; count, default 10000, at least 1.
    pub max_connections: Option<Spanned<usize>>,
    /// Directory for runtime registrations; path, default "./state".
    pub state_dir: Option<String>,
    /// Reload when the config file changes on disk; default true (sluice addition).
    pub watch: Option<bool>,
    /// Content-hash polling of the config file, the fallback when the file system sends no
    /// notifications (bind mounts); duration, default "5s", at most "1h" (sluice addition).
    pub watch_poll_interval: Option<Spanned<DurationText>>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    /// `IP:port` of the admin API; default "127.0.0.1:9901".
    pub bind: Option<Spanned<String>>,
    /// Bearer token for admin requests; default "" = none, required off loopback.
    pub token: Option<String>,
    /// An admin request head must arrive within this, counted from the connection's start
    /// (sluice addition); default "10s".
    pub header_read_timeout: Option<Spanned<DurationText>>,
    /// Per-request metrics for `GET /metrics` and the status page (sluice addition); default
    /// true. Off saves their (small) cost on the request path.
    pub metrics: Option<bool>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    /// A tracing filter; default "info".
    pub level: Option<Spanned<String>>,
    /// `text` or `json`; default "text".
    pub format: Option<Spanned<String>>,
    /// One line per request on target `access`; default true.
    pub access_log: Option<bool>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerFile {
    /// Unique name routes refer to; required.
    pub name: Spanned<String>,
    /// `IP:port` to listen on; required.
    pub bind: Spanned<String>,
    /// The whole request head must arrive within this; duration, default "10s".
    pub header_read_timeout: Option<Spanned<DurationText>>,
    /// Keep-alive connections with no request in flight close after this; default "60s".
    pub idle_timeout: Option<Spanned<DurationText>>,
    /// Longest wait for the next piece of a request body sluice is ready to take; default "60s"
    /// (sluice addition).
    pub request_body_timeout: Option<Spanned<DurationText>>,
    /// Longest a response write may wait on a client that does not read; default "60s"
    /// (sluice addition).
    pub send_timeout: Option<Spanned<DurationText>>,
    /// Larger request heads get 431; bytes, default 65536, at least 1024.
    pub max_header_bytes: Option<Spanned<usize>>,
    /// Longer request targets get 414; bytes, default 8192 (sluice addition).
    pub max_uri_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    /// CIDRs whose `X-Forwarded-For` is extended; default empty.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Larger request bodies get 413; bytes, default 0 = no limit.
    pub max_body_bytes: Option<u64>,
    /// `[listener.tls]`: HTTPS; omitted = plain HTTP.
    pub tls: Option<Spanned<ListenerTlsFile>>,
    /// Answer plain HTTP with 308 to the https URL; default false.
    pub redirect_https: Option<Spanned<bool>>,
    /// `Strict-Transport-Security` value on HTTPS answers; default none.
    pub hsts: Option<Spanned<String>>,
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerTlsFile {
    /// Chosen by SNI; the first is the default; required, at least one.
    pub certificates: Spanned<Vec<CertificateFile>>,
}

/// `{ cert = "...", key = "..." }` in `listener.tls.certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificateFile {
    /// PEM chain, leaf first; path relative to the config file's directory.
    pub cert: Spanned<String>,
    /// PEM private key of the leaf (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key: Spanned<String>,
}

/// `[pool.NAME.tls]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolTlsFile {
    /// SNI and the name verified; default: each backend address's host.
    pub server_name: Option<Spanned<String>>,
    /// PEM trust anchors; default: the system's roots.
    pub ca: Option<Spanned<String>>,
    /// PEM client certificate chain for mutual TLS, with `client_key`.
    pub client_cert: Option<Spanned<String>>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    /// Listener name; default: every listener.
    pub listener: Option<Spanned<String>>,
    /// Exact host or `*.suffix`, without port; default: any host.
    pub host: Option<Spanned<String>>,
    /// Path prefix starting with `/`; default "/".
    pub path_prefix: Option<Spanned<String>>,
    /// Pool name; required.
    pub pool: Spanned<String>,
    /// Request bodies above this get 413 on this route; bytes, default: the listener's limit
    /// (sluice addition). 0 = no limit on this route.
    pub max_body_bytes: Option<u64>,
    /// Later: remove `path_prefix` before forwarding; default false.
    pub strip_prefix: Later,
    /// Later: weighted canary split across pools.
    pub split: Later,
}

/// One `[pool.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolFile {
    /// Balancing algorithm; default "round_robin".
    pub algorithm: Option<Spanned<String>>,
    /// Upstream protocol; default "http1".
    pub protocol: Option<Spanned<String>>,
    /// Required and non-empty.
    pub backends: Option<Spanned<Vec<BackendFile>>>,
    /// `[pool.NAME.timeouts]`; every key has a default.
    pub timeouts: Option<TimeoutsFile>,
    /// Key for `ring_hash` and `maglev`: `client_ip`, `header:NAME`, `cookie:NAME`, `path` or
    /// `query:NAME`; default "client_ip".
    pub hash_key: Option<Spanned<String>>,
    /// Ramp-up duration for new backends; default "0s" (off).
    pub slow_start: Option<Spanned<DurationText>>,
    /// `fail_closed` or `fail_open`; default "fail_closed".
    pub all_unhealthy: Option<Spanned<String>>,
    /// `[pool.NAME.tls]`: HTTPS to the backends; omitted = plain HTTP.
    pub tls: Option<Spanned<PoolTlsFile>>,
    /// `[pool.NAME.health_check]`: active checks; omitted = off.
    pub health_check: Option<HealthCheckFile>,
    /// `[pool.NAME.outlier_detection]`: passive ejection on live-traffic failures; omitted = off.
    pub outlier_detection: Option<OutlierDetectionFile>,
    /// `[pool.NAME.retry]`: retries on another backend; omitted = off.
    pub retry: Option<RetryFile>,
    /// `[pool.NAME.limits]`: circuit breaking; omitted = every key at its default.
    pub limits: Option<LimitsFile>,
}

/// `{ address = "...", weight = N }` in `pool.NAME.backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendFile {
    /// `host:port`, resolved once at load time; required.
    pub address: Spanned<String>,
    /// Relative share, 1 to 1000; default 1. Signed so that a negative weight gets sluice's
    /// range message rather than serde's.
    pub weight: Option<Spanned<i64>>,
}

/// `[pool.NAME.timeouts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeoutsFile {
    /// Connecting to a backend; duration, default "2s".
    pub connect: Option<Spanned<DurationText>>,
    /// The exchange up to the response head; duration, default "30s".
    pub request: Option<Spanned<DurationText>>,
    /// Idle upstream keep-alive connections close after this; duration, default "60s".
    pub idle: Option<Spanned<DurationText>>,
}

// Counts below are signed, as `weight` is, so that a negative one gets sluice's range message
// rather than serde's "expected u32".

/// `[pool.NAME.health_check]`; every key has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheckFile {
    /// HTTP GET of this path (and query), starting with `/`; omitted = a TCP connect check.
    pub path: Option<Spanned<String>>,
    /// Between probes of one backend; duration, default "5s", greater than zero.
    pub interval: Option<Spanned<DurationText>>,
    /// A probe not finished within this fails; duration, default "2s", at most `interval`.
    pub timeout: Option<Spanned<DurationText>>,
    /// Consecutive passes that make an unhealthy backend healthy; 1 to 100, default 2.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Consecutive failures that make a healthy backend unhealthy; 1 to 100, default 3.
    pub unhealthy_threshold: Option<Spanned<i64>>,
    /// Passing statuses: `"200"` or an inclusive range `"200-399"`; default "200-399".
    pub expected_status: Option<Spanned<TextOrNumber>>,
}

/// `[pool.NAME.outlier_detection]`; every key has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutlierDetectionFile {
    /// Consecutive live-traffic failures that eject a backend; 1 to 1000, default 5.
    pub consecutive_failures: Option<Spanned<i64>>,
    /// The first ejection's length; duration, default "30s", greater than zero.
    pub base_ejection: Option<Spanned<DurationText>>,
    /// Most of the pool that may be ejected at once; percent, 0 to 100, default 50.
    pub max_ejected_percent: Option<Spanned<i64>>,
}

/// `[pool.NAME.retry]`; every key has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryFile {
    /// Extra tries, each on another backend; 0 to 10, default 2.
    pub attempts: Option<Spanned<i64>>,
    /// Failures retried: `connect_failure`, `reset`, `502`, `503`, `504`; default all five.
    pub on: Option<Vec<Spanned<TextOrNumber>>>,
    /// Most retries as a share of the pool's requests; percent, 0 to 100, default 20.
    pub budget_percent: Option<Spanned<i64>>,
}

/// `[pool.NAME.limits]`; every key has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    /// Requests in flight to one backend; 1 to 1000000, default 1024.
    pub max_connections_per_backend: Option<Spanned<i64>>,
    /// Requests waiting when every backend is at its limit; 0 to 1000000, default 1024.
    pub max_pending: Option<Spanned<i64>>,
}

/// The `[pool.*]` tables in file order, each with its name.
///
/// A plain map would come out sorted by name (toml keeps tables in a `BTreeMap` unless its
/// `preserve_order` feature is on), but pools are documented to keep file order, so the
/// entries are sorted by where their name appears.
#[derive(Debug, Default)]
pub(super) struct Pools(pub Vec<(Spanned<String>, PoolFile)>);

impl<'de> Deserialize<'de> for Pools {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PoolsVisitor;

        impl<'de> Visitor<'de> for PoolsVisitor {
            type Value = Pools;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of pools, one `[pool.NAME]` each")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pools, A::Error> {
                let mut pools = Vec::new();
                while let Some(name) = map.next_key::<Spanned<String>>()? {
                    pools.push((name, map.next_value::<PoolFile>()?));
                }
                pools.sort_by_key(|(name, _)| name.span().start);
                Ok(Pools(pools))
            }
        }

        deserializer.deserialize_map(PoolsVisitor)
    }
}

/// A duration as written. Numbers are accepted here only so that validation can answer
/// `timeout = 5` with "durations need a unit" instead of serde's "expected a string".
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DurationText {
    Text(String),
    Number(f64),
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration string with a unit, like \"250ms\", \"5s\", \"1m\" or \"1h\"",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText::Text(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                // Precision does not matter: the value is only echoed back in an error.
                Ok(DurationText::Number(v as f64))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText::Number(v as f64))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Ok(DurationText::Number(v))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A value sluice spells as a string that people also write as a bare integer (status codes:
/// `expected_status = 200`, `on = [502]`). The integer is accepted here only so that
/// validation can answer with the exact fix (`"200"`) instead of serde's "expected a string".
#[derive(Debug, Clone, PartialEq)]
pub(super) enum TextOrNumber {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for TextOrNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextOrNumberVisitor;

        impl Visitor<'_> for TextOrNumberVisitor {
            type Value = TextOrNumber;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TextOrNumber, E> {
                Ok(TextOrNumber::Text(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TextOrNumber, E> {
                Ok(TextOrNumber::Number(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TextOrNumber, E> {
                Ok(TextOrNumber::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }

        deserializer.deserialize_any(TextOrNumberVisitor)
    }
}

/// Parses the whole file. On failure the errors are toml's own: every syntax error it can
/// find (its parser recovers and goes on), or else the first unknown key or wrong type, where
/// serde stops. Never an empty list.
pub(super) fn parse(text: &str) -> Result<File, Vec<toml::de::Error>> {
    let (_, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax);
    }
    toml::from_str(text).map_err(|e| vec![e])
}
