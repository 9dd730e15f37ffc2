//! From the file as written (`file.rs`) to the typed runtime configuration (`mod.rs`).
//!
//! Every check runs even after an earlier one failed, so a user fixing a file sees all of its
//! problems at once rather than one per attempt. A value that failed its check is replaced by
//! a placeholder so the remaining checks can proceed; the placeholders never escape, because
//! any error means no `Config` is returned.
//!
//! Defaults live here (not in `file.rs`) so that a missing key and a written one take the same
//! path through the checks.

mod summary;
#[cfg(test)]
mod tests;
mod values;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::did_you_mean;
use super::file::{self, DurationText, Later};
use super::{
    Admin, Algorithm, Backend, Config, ConfigError, ConfigErrors, HostMatch, Listener, Log,
    LogFormat, Pool, Protocol, Route, Server, Timeouts,
};
use values::{parse_duration, parse_host, resolve_backend, ValueError};

pub(super) use summary::summary;

const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
const MIN_HEADER_BYTES: usize = 1024;
const MAX_WEIGHT: i64 = 1000;

/// Every algorithm name the format defines, implemented or not, for "expected one of".
const ALGORITHMS: [&str; 8] = [
    "round_robin",
    "weighted_round_robin",
    "random",
    "least_requests",
    "power_of_two",
    "peak_ewma",
    "ring_hash",
    "maglev",
];
const PROTOCOLS: [&str; 3] = ["http1", "h2", "auto"];
const LOG_FORMATS: [&str; 2] = ["text", "json"];
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Parses and checks `text`, the contents of `source`, returning every error found.
pub(super) fn validate(text: &str, source: &Path) -> Result<Config, ConfigErrors> {
    let file = file::parse(text).map_err(|errors| {
        let mut errors: Vec<_> = errors
            .iter()
            .map(|e| ConfigError::from_toml(source, text, e))
            .collect();
        sort(&mut errors);
        // After a syntax error the parser's recovery often reports the rest of that line
        // again in other words; the first error on a line is the one worth reading.
        errors.dedup_by_key(|e| e.line());
        ConfigErrors::new(errors)
            .unwrap_or_else(|| ConfigError::unlocated(source, "invalid TOML").into())
    })?;
    let mut checker = Checker {
        text,
        source,
        errors: Vec::new(),
    };
    let config = checker.config(file);
    let mut errors = checker.errors;
    sort(&mut errors);
    match ConfigErrors::new(errors) {
        Some(errors) => Err(errors),
        None => Ok(config),
    }
}

/// Checks run table by table, but people read errors top to bottom through the file; errors
/// about the file as a whole come last.
fn sort(errors: &mut [ConfigError]) {
    errors.sort_by_key(|e| (e.line().is_none(), e.line(), e.column()));
}

/// Holds the text for locating errors and collects them.
struct Checker<'a> {
    text: &'a str,
    source: &'a Path,
    errors: Vec<ConfigError>,
}

/// Where a listener's name and (valid) bind are written, for the uniqueness checks.
struct ListenerSpans {
    name: Range<usize>,
    bind: Option<Range<usize>>,
}

/// A bind address and who owns it, for the overlap check.
struct BindOwner {
    addr: SocketAddr,
    span: Range<usize>,
    what: String,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.source, self.text, span, message)
    }

    fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// 1-based line of a byte offset, for "first defined at line N" notes.
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    fn config(&mut self, file: file::File) -> Config {
        let server = self.server(file.server.unwrap_or_default());
        let admin = file.admin.map(|admin| self.admin(admin));
        let log = self.log(file.log.unwrap_or_default());
        let listeners: Vec<_> = file.listener.into_iter().map(|l| self.listener(l)).collect();
        self.check_names_and_binds(&listeners, admin.as_ref());
        let pool_names: Vec<_> = file.pool.0.iter().map(|(name, _)| name.clone()).collect();
        let listener_names: Vec<_> = listeners.iter().map(|(l, _)| l.name.clone()).collect();
        let routes = self.routes(file.route, &listener_names, &pool_names);
        let pools = file
            .pool
            .0
            .into_iter()
            .map(|(name, pool)| self.pool(name, pool))
            .collect();
        if listeners.is_empty() {
            self.push(
                ConfigError::unlocated(self.source, "no listeners: sluice would accept nothing")
                    .with_help("add a `[[listener]]` with a `name` and a `bind`, like `bind = \"0.0.0.0:8080\"`"),
            );
        }
        if routes.is_empty() {
            self.push(
                ConfigError::unlocated(self.source, "no routes: every request would get 404")
                    .with_help("add a `[[route]]` naming a `pool`; without `host` and `path_prefix` it takes every request"),
            );
        }
        Config {
            source: self.source.to_path_buf(),
            server,
            admin: admin.map(|(admin, _)| admin),
            log,
            listeners: listeners.into_iter().map(|(l, _)| l).collect(),
            routes,
            pools,
        }
    }

    fn server(&mut self, server: file::ServerFile) -> Server {
        let max_connections = match server.max_connections {
            Some(n) if *n.get_ref() == 0 => {
                self.push(
                    self.error(n.span(), "max_connections must be at least 1")
                        .with_help("it caps downstream connections across all listeners; the default is 10000"),
                );
                1
            }
            Some(n) => n.into_inner(),
            None => 10_000,
        };
        Server {
            workers: server.workers.unwrap_or(0),
            shutdown_timeout: self.timeout(server.shutdown_timeout, Duration::from_secs(30)),
            max_connections,
            state_dir: PathBuf::from(server.state_dir.unwrap_or_else(|| "./state".into())),
        }
    }

    /// The admin API and, when its bind is valid, the span of that bind for the overlap check.
    fn admin(&mut self, admin: Spanned<file::AdminFile>) -> (Admin, Option<Range<usize>>) {
        let span = admin.span();
        let admin = admin.into_inner();
        let token = admin.token.filter(|t| !t.is_empty());
        let (bind, bind_span) = match &admin.bind {
            Some(bind) => match self.socket_addr(bind) {
                Some(addr) => (addr, Some(bind.span())),
                None => (DEFAULT_ADMIN_BIND, None),
            },
            None => (DEFAULT_ADMIN_BIND, Some(span)),
        };
        if token.is_none() && !bind.ip().is_loopback() {
            let at = admin.bind.as_ref().map_or(0..0, |b| b.span());
            self.push(
                self.error(at, format!("the admin API on `{bind}` needs a token"))
                    .with_note("without one, anyone who can reach this address could reconfigure sluice")
                    .with_help("set `token` in `[admin]`, or bind to a loopback address like `127.0.0.1:9901`"),
            );
        }
        (Admin { bind, token }, bind_span)
    }

    fn log(&mut self, log: file::LogFile) -> Log {
        let level = match log.level {
            Some(level) => {
                self.check_log_level(&level);
                level.into_inner()
            }
            None => "info".to_string(),
        };
        let format = match log.format {
            None => LogFormat::Text,
            Some(format) => match format.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    let error = self
                        .error(format.span(), format!("unknown log format `{other}`"))
                        .with_note(format!("expected one of: {}", LOG_FORMATS.join(", ")))
                        .with_suggestion(did_you_mean(other, LOG_FORMATS));
                    self.push(error);
                    LogFormat::Text
                }
            },
        };
        Log {
            level,
            format,
            access_log: log.access_log.unwrap_or(true),
        }
    }

    fn check_log_level(&mut self, level: &Spanned<String>) {
        let note = "expected a level (trace, debug, info, warn, error, off) or tracing directives like `sluice=debug,warn`";
        let text = level.get_ref().trim();
        if text.is_empty() {
            self.push(self.error(level.span(), "log level is empty").with_note(note));
            return;
        }
        // A lone word that is not a level is a valid filter (every event of that target), so
        // tracing would accept `infoo`; a near miss of a level name is almost surely a typo.
        let is_word = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let is_level = LOG_LEVELS.contains(&text.to_ascii_lowercase().as_str());
        if is_word && !is_level {
            if let Some(suggestion) = did_you_mean(text, LOG_LEVELS) {
                let error = self
                    .error(level.span(), format!("unknown log level `{text}`"))
                    .with_note(note)
                    .with_suggestion(Some(suggestion));
                self.push(error);
                return;
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(text) {
            let error = self
                .error(level.span(), format!("invalid log filter `{text}`: {e}"))
                .with_note(note);
            self.push(error);
        }
    }

    fn listener(&mut self, listener: Spanned<file::ListenerFile>) -> (Listener, ListenerSpans) {
        let l = listener.into_inner();
        if l.name.get_ref().trim().is_empty() {
            self.push(self.error(l.name.span(), "listener name is empty"));
        }
        let bind = self.socket_addr(&l.bind);
        let max_header_bytes = match l.max_header_bytes {
            Some(n) if *n.get_ref() < MIN_HEADER_BYTES => {
                let error = self
                    .error(n.span(), format!("max_header_bytes must be at least {MIN_HEADER_BYTES}, not {}", n.get_ref()))
                    .with_note("ordinary browser requests have heads of several hundred bytes; the default is 65536");
                self.push(error);
                MIN_HEADER_BYTES
            }
            Some(n) => n.into_inner(),
            None => 65_536,
        };
        let max_uri_bytes = match l.max_uri_bytes {
            Some(n) if *n.get_ref() == 0 => {
                self.push(self.error(n.span(), "max_uri_bytes must be at least 1").with_note("the default is 8192"));
                1
            }
            Some(n) => n.into_inner(),
            None => 8192,
        };
        let trusted_proxies = l
            .trusted_proxies
            .iter()
            .filter_map(|cidr| match cidr.get_ref().parse() {
                Ok(c) => Some(c),
                Err(e) => {
                    let mut error = self
                        .error(cidr.span(), format!("invalid trusted proxy: {e}"))
                        .with_note("expected a network like `10.0.0.0/8` or an address like `192.0.2.7`");
                    if let super::CidrError::HostBits { network, .. } = &e {
                        error = error.with_help(format!("did you mean `{network}`?"));
                    }
                    self.errors.push(error);
                    None
                }
            })
            .collect();
        for (key, value) in [("tls", &l.tls), ("redirect_https", &l.redirect_https), ("hsts", &l.hsts)] {
            self.later(key, value);
        }
        let listener = Listener {
            name: l.name.get_ref().clone(),
            bind: bind.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            header_read_timeout: self.timeout(l.header_read_timeout, Duration::from_secs(10)),
            idle_timeout: self.timeout(l.idle_timeout, Duration::from_secs(60)),
            max_header_bytes,
            max_uri_bytes,
            trusted_proxies,
            max_body_bytes: l.max_body_bytes.filter(|&n| n > 0),
        };
        let spans = ListenerSpans {
            name: l.name.span(),
            bind: bind.map(|_| l.bind.span()),
        };
        (listener, spans)
    }

    /// Unique listener names, and no two sockets that would fight over the same address.
    fn check_names_and_binds(
        &mut self,
        listeners: &[(Listener, ListenerSpans)],
        admin: Option<&(Admin, Option<Range<usize>>)>,
    ) {
        let mut first_by_name: HashMap<&str, usize> = HashMap::new();
        let mut owners = Vec::new();
        for (listener, spans) in listeners {
            if let Some(first) = first_by_name.get(listener.name.as_str()) {
                let error = self
                    .error(spans.name.clone(), format!("duplicate listener name `{}`", listener.name))
                    .with_note(format!("first defined at line {}", self.line_of(*first)))
                    .with_help("routes refer to listeners by name, so names must be unique");
                self.push(error);
            } else {
                first_by_name.insert(&listener.name, spans.name.start);
            }
            if let Some(span) = &spans.bind {
                owners.push(BindOwner {
                    addr: listener.bind,
                    span: span.clone(),
                    what: format!("listener `{}`", listener.name),
                });
            }
        }
        if let Some((admin, Some(span))) = admin {
            owners.push(BindOwner {
                addr: admin.bind,
                span: span.clone(),
                what: "the admin API".to_string(),
            });
        }
        owners.sort_by_key(|o| o.span.start);
        for (i, later) in owners.iter().enumerate() {
            if let Some(earlier) = owners[..i].iter().find(|e| binds_overlap(e.addr, later.addr)) {
                let error = self
                    .error(later.span.clone(), format!("bind `{}` conflicts with {} on `{}`", later.addr, earlier.what, earlier.addr))
                    .with_note(format!("{} is bound at line {}", earlier.what, self.line_of(earlier.span.start)))
                    .with_help("give each listener and the admin API its own port");
                self.push(error);
            }
        }
    }

    fn routes(
        &mut self,
        routes: Vec<Spanned<file::RouteFile>>,
        listeners: &[String],
        pools: &[Spanned<String>],
    ) -> Vec<Route> {
        let pool_names: Vec<&str> = pools.iter().map(|p| p.get_ref().as_str()).collect();
        let listener_names: Vec<&str> = listeners.iter().map(String::as_str).collect();
        // Routes are few; a list avoids asking `HostMatch` for `Hash` just for this check.
        let mut seen: Vec<((Option<usize>, HostMatch, String), usize)> = Vec::new();
        let mut out = Vec::new();
        for route in routes {
            let span = route.span();
            let r = route.into_inner();
            let listener = r.listener.as_ref().map(|name| {
                self.lookup(name, "listener", &listener_names)
            });
            let host = match &r.host {
                None => HostMatch::Any,
                Some(host) => match parse_host(host.get_ref()) {
                    Ok(h) => h,
                    Err(e) => {
                        self.push(self.value_error(host.span(), e));
                        HostMatch::Any
                    }
                },
            };
            let path_prefix = match &r.path_prefix {
                None => "/".to_string(),
                Some(prefix) => {
                    self.check_path_prefix(prefix);
                    prefix.get_ref().clone()
                }
            };
            let pool = self.lookup(&r.pool, "pool", &pool_names);
            self.later("strip_prefix", &r.strip_prefix);
            self.later("split", &r.split);
            let listener = listener.flatten();
            let key = (listener, host.clone(), path_prefix.clone());
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                let error = self
                    .error(span.clone(), "duplicate route: an earlier route matches the same listener, host and path_prefix")
                    .with_note(format!("the earlier route is at line {}; this one would never be used", self.line_of(*first)))
                    .with_help("remove one, or change its `host` or `path_prefix`");
                self.push(error);
            } else {
                seen.push((key, span.start));
            }
            out.push(Route {
                listener,
                host,
                path_prefix,
                pool: pool.unwrap_or(0),
            });
        }
        out
    }

    /// The index of `name` among `names`, or a located error listing the defined ones.
    fn lookup(&mut self, name: &Spanned<String>, kind: &str, names: &[&str]) -> Option<usize> {
        if let Some(i) = names.iter().position(|n| n == name.get_ref()) {
            return Some(i);
        }
        let defined = if names.is_empty() {
            format!("no {kind}s are defined")
        } else {
            format!("defined {kind}s: {}", names.join(", "))
        };
        let error = self
            .error(name.span(), format!("route names {kind} `{}`, which is not defined", name.get_ref()))
            .with_note(defined)
            .with_suggestion(did_you_mean(name.get_ref(), names.iter().copied()));
        self.push(error);
        None
    }

    fn check_path_prefix(&mut self, prefix: &Spanned<String>) {
        let p = prefix.get_ref();
        if !p.starts_with('/') {
            let error = self
                .error(prefix.span(), format!("path_prefix `{p}` must start with `/`"))
                .with_help(format!("did you mean `/{p}`?"));
            self.push(error);
        } else if p.contains(['?', '#']) {
            let error = self
                .error(prefix.span(), format!("path_prefix `{p}` contains `?` or `#`"))
                .with_note("routes match the path only, never the query or fragment");
            self.push(error);
        }
    }

    fn pool(&mut self, name: Spanned<String>, pool: file::PoolFile) -> Pool {
        let algorithm = self.algorithm(pool.algorithm.as_ref());
        let protocol = self.protocol(pool.protocol.as_ref());
        for (key, value) in [
            ("hash_key", &pool.hash_key),
            ("slow_start", &pool.slow_start),
            ("all_unhealthy", &pool.all_unhealthy),
            ("tls", &pool.tls),
            ("health_check", &pool.health_check),
            ("outlier_detection", &pool.outlier_detection),
            ("retry", &pool.retry),
            ("limits", &pool.limits),
        ] {
            self.later(key, value);
        }
        let backends = self.backends(&name, pool.backends);
        let timeouts = pool.timeouts.unwrap_or_default();
        Pool {
            name: name.into_inner(),
            algorithm,
            protocol,
            backends,
            timeouts: Timeouts {
                connect: self.timeout(timeouts.connect, Duration::from_secs(2)),
                request: self.timeout(timeouts.request, Duration::from_secs(30)),
                idle: self.timeout(timeouts.idle, Duration::from_secs(60)),
            },
        }
    }

    fn algorithm(&mut self, written: Option<&Spanned<String>>) -> Algorithm {
        let Some(written) = written else {
            return Algorithm::RoundRobin;
        };
        match written.get_ref().as_str() {
            "round_robin" => Algorithm::RoundRobin,
            _ => {
                self.push(self.choice_error(written, "algorithm", &ALGORITHMS, &["round_robin"]));
                Algorithm::RoundRobin
            }
        }
    }

    fn protocol(&mut self, written: Option<&Spanned<String>>) -> Protocol {
        if let Some(written) = written {
            if written.get_ref() != "http1" {
                self.push(self.choice_error(written, "protocol", &PROTOCOLS, &["http1"]));
            }
        }
        Protocol::Http1
    }

    /// A value outside the implemented ones: "not implemented yet" for a name the format
    /// defines, "unknown" with the full list and a did-you-mean for anything else.
    fn choice_error(&self, written: &Spanned<String>, what: &str, all: &[&str], available: &[&str]) -> ConfigError {
        let value = written.get_ref();
        if all.contains(&value.as_str()) {
            return self
                .error(written.span(), format!("{what} `{value}` is not implemented in this version yet; available: {}", available.join(", ")));
        }
        self.error(written.span(), format!("unknown {what} `{value}`"))
            .with_note(format!("expected one of: {}", all.join(", ")))
            .with_suggestion(did_you_mean(value, all.iter().copied()))
    }

    fn backends(&mut self, pool: &Spanned<String>, backends: Option<Spanned<Vec<file::BackendFile>>>) -> Vec<Backend> {
        let backends = match backends {
            Some(b) if !b.get_ref().is_empty() => b.into_inner(),
            other => {
                let span = other.map_or_else(|| pool.span(), |b| b.span());
                let error = self
                    .error(span, format!("pool `{}` has no backends", pool.get_ref()))
                    .with_help("add `backends = [{ address = \"10.0.0.11:8080\" }]`");
                self.push(error);
                return Vec::new();
            }
        };
        let mut first_at: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for backend in backends {
            let address = &backend.address;
            let key = address.get_ref().to_ascii_lowercase();
            if let Some(first) = first_at.get(&key) {
                let error = self
                    .error(address.span(), format!("backend `{}` appears twice in pool `{}`", address.get_ref(), pool.get_ref()))
                    .with_note(format!("first listed at line {}", self.line_of(*first)))
                    .with_help("to send it more traffic, raise its `weight` instead");
                self.push(error);
            } else {
                first_at.insert(key, address.span().start);
            }
            let weight = match &backend.weight {
                None => 1,
                Some(w) if (1..=MAX_WEIGHT).contains(w.get_ref()) => *w.get_ref() as u32,
                Some(w) => {
                    let mut error = self.error(w.span(), format!("weight must be 1 to {MAX_WEIGHT}, not {}", w.get_ref()));
                    if *w.get_ref() == 0 {
                        error = error.with_help(format!(
                            "use draining to stop traffic to a backend: DELETE /api/pools/{}/backends/{}",
                            pool.get_ref(),
                            address.get_ref()
                        ));
                    }
                    self.push(error);
                    1
                }
            };
            let resolved = match resolve_backend(address.get_ref()) {
                Ok(addr) => addr,
                Err(e) => {
                    self.push(self.value_error(address.span(), e));
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
                }
            };
            out.push(Backend {
                address: address.get_ref().clone(),
                resolved,
                weight,
            });
        }
        out
    }

    /// A timeout, or `default` when absent; must have a unit and be greater than zero.
    fn timeout(&mut self, written: Option<Spanned<DurationText>>, default: Duration) -> Duration {
        let Some(written) = written else {
            return default;
        };
        match parse_duration(written.get_ref()) {
            Ok(d) if d.is_zero() => {
                let error = self
                    .error(written.span(), "a timeout of zero would fail everything at once")
                    .with_note("timeouts must be greater than zero");
                self.push(error);
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.push(self.value_error(written.span(), e));
                default
            }
        }
    }

    fn socket_addr(&mut self, bind: &Spanned<String>) -> Option<SocketAddr> {
        match bind.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let error = self
                    .error(bind.span(), format!("`{}` is not a socket address", bind.get_ref()))
                    .with_note("expected IP:port, like `0.0.0.0:8080`, `127.0.0.1:9901` or `[::]:8080`; host names are not allowed here");
                self.push(error);
                None
            }
        }
    }

    /// A key the format defines for a later version: say so, rather than silently ignoring it.
    fn later(&mut self, key: &str, value: &Later) {
        if let Some(value) = value {
            let error = self
                .error(value.span(), format!("`{key}` is part of sluice's config format but is not implemented in this version yet"))
                .with_help(format!("remove `{key}` for now; docs/configuration.md lists what is implemented"));
            self.push(error);
        }
    }

    fn value_error(&self, span: Range<usize>, e: ValueError) -> ConfigError {
        let mut error = self.error(span, e.message);
        if let Some(note) = e.note {
            error = error.with_note(note);
        }
        if let Some(help) = e.help {
            error = error.with_help(help);
        }
        error
    }
}

/// Whether two binds would fail with "address in use": the same port on the same address, or
/// on the wildcard address of the same family. Port 0 asks the OS for a free port, so it never
/// conflicts.
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}
