//! The validated runtime configuration: what the rest of sluice reads.
//!
//! The pipeline is `file.rs` (serde structs exactly as written in TOML, with spans) ->
//! `validate.rs` (semantic checks, name resolution, host-name resolution) -> these types.
//! The request path never sees an `Option<String>` or an unparsed duration: everything here is
//! typed, checked and resolved. Errors are located (`error.rs`).

mod cidr;
mod error;
mod file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cidr::{Cidr, CidrError};
pub use error::{ConfigError, ConfigErrors};

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a path, or a name like `<demo>`), for messages.
    pub source: PathBuf,
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
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub bind: SocketAddr,
    /// `None` when empty: no authentication (only allowed on a loopback bind).
    pub token: Option<String>,
    /// A request head must arrive within this, counted from the connection's start.
    pub header_read_timeout: Duration,
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
    /// Larger request heads get 431.
    pub max_header_bytes: usize,
    /// Longer request targets get 414 (sluice addition, default 8192).
    pub max_uri_bytes: usize,
    /// Peers whose `X-Forwarded-For` is extended instead of replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Request bodies above this get 413; `None` = no limit.
    pub max_body_bytes: Option<u64>,
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
    pub fn as_str(self) -> &'static str {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
}

#[derive(Debug, Clone)]
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
}

impl Config {
    /// Reads, parses and validates a file. Every error found is returned, each located.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::from(ConfigError::unlocated(
                path,
                format!("cannot read config file: {e}"),
            ))
        })?;
        Self::parse(&text, path)
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
