//! The validated runtime configuration: what the rest of sluice reads.
//!
//! The pipeline is `file.rs` (serde structs exactly as written in TOML, with spans) ->
//! `validate.rs` (semantic checks, name resolution, host-name resolution) -> these types.
//! The request path never sees an `Option<String>` or an unparsed duration: everything here is
//! typed, checked and resolved. Errors are located (`error.rs`).

mod cidr;
mod error;
mod file;
mod json;
mod log_filter;
mod tls;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cidr::{Cidr, CidrError};
pub use error::{ConfigError, ConfigErrors};
pub use log_filter::{log_filter, LogFilterError, LOG_FILTER_NOTE};
pub use tls::{show_time, Certificate, ListenerTls, PoolTls};

/// A hash of a config file's content, to tell whether it changed.
pub fn content_hash(content: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(content);
    hasher.finish()
}

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or a name like `<demo>`), for messages.
    pub source: PathBuf,
    /// `content_hash` of the file's text, when it was loaded from one: the file watcher
    /// compares the file with what was loaded, not with what it finds when it starts.
    pub source_hash: Option<u64>,
    pub server: Server,
    /// `None` when the `[admin]` table is absent: the admin API is disabled.
    pub admin: Option<Admin>,
    pub log: Log,
    pub listeners: Vec<Listener>,
    /// In file order; precedence is applied by the router, not here.
    pub routes: Vec<Route>,
    /// In file order; `Route::pool` indexes into this.
    pub pools: Vec<Pool>,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Worker threads; 0 = one per CPU core. `--workers` overrides it.
    pub workers: usize,
    pub shutdown_timeout: Duration,
    /// Downstream connections across all listeners; beyond it new ones wait to be accepted.
    pub max_connections: usize,
    pub state_dir: PathBuf,
    /// Reload when the config file's content changes on disk.
    pub watch: bool,
    /// How often the file's content is compared even without a notification.
    pub watch_poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub bind: SocketAddr,
    /// `None` when empty: no authentication (only allowed on a loopback bind).
    pub token: Option<String>,
    /// A request head must arrive within this, counted from the connection's start.
    pub header_read_timeout: Duration,
    /// Per-request metrics are recorded.
    pub metrics: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Log {
    /// A tracing filter (`info`, `sluice=debug,warn`).
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    /// The whole request head must arrive within this (counted from the connection's start or
    /// from the first byte of a later request on a keep-alive connection).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request whose body stops arriving for this long (while sluice waits for it) is
    /// answered 408 and its connection closed.
    pub request_body_timeout: Duration,
    /// A connection whose client takes no response bytes for this long (while sluice has some
    /// to send) is closed.
    pub send_timeout: Duration,
    /// Larger request heads get 431.
    pub max_header_bytes: usize,
    /// Longer request targets get 414 (sluice addition, default 8192).
    pub max_uri_bytes: usize,
    /// Peers whose `X-Forwarded-For` is extended instead of replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Request bodies above this get 413; `None` = no limit.
    pub max_body_bytes: Option<u64>,
    /// HTTPS; `None`: plain HTTP. The TLS handshake must finish within `header_read_timeout`.
    pub tls: Option<ListenerTls>,
    /// Plain HTTP requests are answered 308 to the https URL (never on an HTTPS listener).
    pub redirect_https: bool,
    /// `Strict-Transport-Security` on every answer of an HTTPS listener.
    pub hsts: Option<http::HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// No `host` key: matches every host.
    Any,
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as the lower-case suffix `.example.com`; matches any non-empty
    /// label sequence before it.
    Wildcard(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Index into `Config::listeners`; `None` = every listener.
    pub listener: Option<usize>,
    pub host: HostMatch,
    /// Starts with `/`; plain byte-prefix match on the request path.
    pub path_prefix: String,
    /// Index into `Config::pools`.
    pub pool: usize,
    /// Overrides the listener's `max_body_bytes` on this route: `Some(None)` no limit,
    /// `None` the listener's.
    pub max_body_bytes: Option<Option<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    PeakEwma,
    RingHash,
    Maglev,
    WeightedRoundRobin,
    Random,
    LeastRequests,
    PowerOfTwo,
}

impl Algorithm {
    /// Every algorithm, in the order error messages list them.
    pub const ALL: [Algorithm; 8] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::Random,
        Algorithm::LeastRequests,
        Algorithm::PowerOfTwo,
        Algorithm::PeakEwma,
        Algorithm::RingHash,
        Algorithm::Maglev,
    ];

    /// Its name in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::PeakEwma => "peak_ewma",
            Algorithm::RingHash => "ring_hash",
            Algorithm::Maglev => "maglev",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::Random => "random",
            Algorithm::LeastRequests => "least_requests",
            Algorithm::PowerOfTwo => "power_of_two",
        }
    }
}

impl Algorithm {
    /// Whether the algorithm places requests by `hash_key`.
    pub fn hashes(self) -> bool {
        matches!(self, Algorithm::RingHash | Algorithm::Maglev)
    }
}

/// What a hashing algorithm keys a request by (`hash_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (the TCP peer).
    ClientIp,
    /// The value of this request header.
    Header(http::HeaderName),
    /// The value of this cookie.
    Cookie(String),
    /// The request path (without the query).
    Path,
    /// The value of this query parameter.
    Query(String),
}

/// How sluice speaks to a pool's backends (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive: one request at a time per connection.
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge (`h2`): every request of a worker to one
    /// backend is a stream on one multiplexed connection. gRPC backends need it.
    H2,
    /// Over TLS, HTTP/2 or HTTP/1.1 as each connection's ALPN negotiates (`auto`).
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Whole exchange with the backend up to the response head.
    pub request: Duration,
    /// Idle upstream keep-alive connections are closed after this.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// As written in the file (`app-2.internal:8080`): the backend's identity.
    pub address: String,
    /// Resolved once at load time; the request path never resolves names.
    pub resolved: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    /// Set for hashing algorithms (default `client_ip`), `None` for the others.
    pub hash_key: Option<HashKey>,
    /// A new backend's share ramps linearly from 10% to full over this; zero = off.
    pub slow_start: Duration,
    pub protocol: Protocol,
    pub backends: Vec<Backend>,
    pub timeouts: Timeouts,
    /// What to do when no backend may take traffic; default `FailClosed`.
    pub all_unhealthy: AllUnhealthy,
    /// Active checks; `None` (table omitted): off, every backend counts as healthy.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection; `None` (table omitted): off.
    pub outlier_detection: Option<OutlierDetection>,
    /// Retries on another backend; `None` (table omitted): off (the replay of a request that
    /// met a stale pooled connection is always on: it is not a retry on another backend).
    pub retry: Option<Retry>,
    /// Circuit breaking; always on, with defaults when the table is omitted.
    pub limits: Limits,
    /// HTTPS to the backends; `None`: plain HTTP.
    pub tls: Option<PoolTls>,
}

impl Pool {
    /// A pool with every optional setting at its default, as a `[pool.NAME]` table with only
    /// `backends` would give (for tests and runtime-built pools).
    pub fn with_defaults(name: &str, algorithm: Algorithm, backends: Vec<Backend>) -> Pool {
        Pool {
            name: name.to_string(),
            algorithm,
            hash_key: algorithm.hashes().then_some(HashKey::ClientIp),
            slow_start: Duration::ZERO,
            protocol: Protocol::Http1,
            backends,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                request: Duration::from_secs(30),
                idle: Duration::from_secs(60),
            },
            all_unhealthy: AllUnhealthy::default(),
            health_check: None,
            outlier_detection: None,
            retry: None,
            limits: Limits::default(),
            tls: None,
        }
    }
}

/// `all_unhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllUnhealthy {
    /// 503 when no backend may take traffic.
    #[default]
    FailClosed,
    /// Spread traffic over every backend anyway (health and ejection ignored).
    FailOpen,
}

/// `[pool.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// HTTP GET of this path (and query); `None`: a plain TCP connect check.
    pub path: Option<http::uri::PathAndQuery>,
    /// The standard gRPC health check (`grpc.health.v1.Health/Check`) of this service name
    /// (`""`: the whole server) instead, passing on `SERVING`; `h2` pools only, not with `path`.
    pub grpc_service: Option<String>,
    /// Between probes of one backend (each jittered by up to ±10%); default 5s.
    pub interval: Duration,
    /// A probe not finished within this fails; default 2s.
    pub timeout: Duration,
    /// Consecutive passes for an unhealthy backend to become healthy; default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures for a healthy backend to become unhealthy; default 3.
    pub unhealthy_threshold: u32,
    /// Statuses that pass, inclusive; default 200 to 399.
    pub expected_status: std::ops::RangeInclusive<u16>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: None,
            grpc_service: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_status: 200..=399,
        }
    }
}

/// `[pool.NAME.outlier_detection]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive live-traffic failures (5xx answers, connect failures, resets, timeouts)
    /// that eject a backend; default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length; each repeated one doubles it, up to 10×; default 30s.
    pub base_ejection: Duration,
    /// At most this share of the pool is ejected at once, 0 to 100; default 50.
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        }
    }
}

/// `[pool.NAME.retry]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Extra tries, each on another backend; 0 to 10, default 2.
    pub attempts: u32,
    /// Which failures are retried; default all of them.
    pub on: RetryOn,
    /// Retries never exceed this share of the pool's requests (plus a small reserve for quiet
    /// pools), 0 to 100; default 20.
    pub budget_percent: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 2,
            on: RetryOn::all(),
            budget_percent: 20,
        }
    }
}

/// The `retry.on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// Connecting failed (refused, unreachable, connect timeout): the request never left.
    pub connect_failure: bool,
    /// The connection was reset or closed before a complete response head.
    pub reset: bool,
    /// The backend answered 502, or sent an invalid response.
    pub status_502: bool,
    /// The backend answered 503.
    pub status_503: bool,
    /// The backend answered 504, or did not answer within the request timeout.
    pub status_504: bool,
}

impl RetryOn {
    pub fn all() -> RetryOn {
        RetryOn {
            connect_failure: true,
            reset: true,
            status_502: true,
            status_503: true,
            status_504: true,
        }
    }
}

/// `[pool.NAME.limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight to one backend (each holds one upstream HTTP/1 connection); a
    /// backend at the limit is skipped; default 1024.
    pub max_connections_per_backend: u32,
    /// Requests waiting for a backend below its limit when every one is at it; beyond this,
    /// 503 at once; default 1024.
    pub max_pending: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_backend: 1024,
            max_pending: 1024,
        }
    }
}

/// The address to use of those a name resolved to: the first IPv4 one, else the first. Names
/// like `localhost` resolve to both families, and backends often listen on IPv4 only.
pub fn prefer_ipv4(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// The largest backend weight (weights are 1 to this; 0 is an error: use draining).
pub const MAX_WEIGHT: u32 = 1000;

impl Config {
    /// Reads, parses and validates a file. Every error found is returned, each located.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::from(ConfigError::unlocated(
                path,
                format!("cannot read config file: {e}"),
            ))
        })?;
        let mut config = Self::parse(&text, path)?;
        config.source_hash = Some(content_hash(text.as_bytes()));
        Ok(config)
    }

    /// Parses and validates TOML text; `source` names it in messages.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
        validate::validate(text, source)
    }

    /// The one-screen summary `sluice check` prints.
    pub fn summary(&self) -> String {
        validate::summary(self)
    }
}
