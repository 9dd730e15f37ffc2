//! From the file as written (`file.rs`) to the typed runtime configuration (`mod.rs`).
//!
//! Every check runs even after an earlier one failed, so a user fixing a file sees all of its
//! problems at once rather than one per attempt. A value that failed its check is replaced by
//! a placeholder so the remaining checks can proceed; the placeholders never escape, because
//! any error means no `Config` is returned.
//!
//! Defaults live here (not in `file.rs`) so that a missing key and a written one take the same
//! path through the checks.

mod listeners;
mod pools;
mod resilience;
mod routes;
mod summary;
#[cfg(test)]
mod tests;
mod tls;
pub(super) mod values;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::did_you_mean;
use super::file::{self, DurationText, Later};
use super::log_filter::{log_filter, LOG_FILTER_NOTE};
use super::{Admin, Algorithm, Config, ConfigError, ConfigErrors, Log, LogFormat, Server};
use values::{parse_duration, ValueError};

pub(super) use summary::summary;

const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
const MIN_HEADER_BYTES: usize = 1024;
const MAX_WEIGHT: i64 = super::MAX_WEIGHT as i64;

/// Every algorithm name the format defines, for "expected one of".
const ALGORITHMS: [&str; Algorithm::ALL.len()] = {
    let mut names = [""; Algorithm::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Algorithm::ALL[i].as_str();
        i += 1;
    }
    names
};
const PROTOCOLS: [&str; 3] = ["http1", "h2", "auto"];
const LOG_FORMATS: [&str; 2] = ["text", "json"];

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

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.source, self.text, span, message)
    }

    fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// 1-based line of a byte offset, for "first defined at line N" notes.
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn config(&mut self, file: file::File) -> Config {
        let server = self.server(file.server.unwrap_or_default());
        let admin = file.admin.map(|admin| self.admin(admin));
        let log = self.log(file.log.unwrap_or_default());
        let listeners: Vec<_> = file
            .listener
            .into_iter()
            .map(|l| self.listener(l))
            .collect();
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
            let help = "add a `[[listener]]` with a `name` and a `bind`, \
                        like `bind = \"0.0.0.0:8080\"`";
            let message = "no listeners: sluice would accept nothing";
            self.push(ConfigError::unlocated(self.source, message).with_help(help));
        }
        if routes.is_empty() {
            let help = "add a `[[route]]` naming a `pool`; \
                        without `host` and `path_prefix` it takes every request";
            let message = "no routes: every request would get 404";
            self.push(ConfigError::unlocated(self.source, message).with_help(help));
        }
        Config {
            source: self.source.to_path_buf(),
            source_hash: None,
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
                let help =
                    "it caps downstream connections across all listeners; the default is 10000";
                let error = self.error(n.span(), "max_connections must be at least 1");
                self.push(error.with_help(help));
                1
            }
            Some(n) => n.into_inner(),
            None => 10_000,
        };
        let poll_span = server.watch_poll_interval.as_ref().map(|p| p.span());
        let mut watch_poll_interval =
            self.timeout(server.watch_poll_interval, Duration::from_secs(5));
        if let Some(span) = poll_span.filter(|_| watch_poll_interval > Duration::from_secs(3600)) {
            let error = self.error(span, "watch_poll_interval must be at most 1h");
            self.push(error.with_help("the default is 5s"));
            watch_poll_interval = Duration::from_secs(5);
        }
        Server {
            workers: server.workers.unwrap_or(0),
            shutdown_timeout: self.timeout(server.shutdown_timeout, Duration::from_secs(30)),
            max_connections,
            state_dir: PathBuf::from(server.state_dir.unwrap_or_else(|| "./state".into())),
            watch: server.watch.unwrap_or(true),
            watch_poll_interval,
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
            None => (DEFAULT_ADMIN_BIND, Some(span.clone())),
        };
        if token.is_none() && !bind.ip().is_loopback() {
            let at = admin.bind.as_ref().map_or(span, |b| b.span());
            let error = self
                .error(at, format!("the admin API on `{bind}` needs a token"))
                .with_note("without one, anyone who can reach this address can reconfigure sluice")
                .with_help(
                    "set `token` in `[admin]`, or bind to a loopback address like `127.0.0.1:9901`",
                );
            self.push(error);
        }
        let header_read_timeout = self.timeout(
            admin.header_read_timeout,
            std::time::Duration::from_secs(10),
        );
        (
            Admin {
                bind,
                token,
                header_read_timeout,
                metrics: admin.metrics.unwrap_or(true),
            },
            bind_span,
        )
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
        if let Err(e) = log_filter(level.get_ref()) {
            let error = self
                .error(level.span(), e.to_string())
                .with_note(LOG_FILTER_NOTE)
                .with_suggestion(e.suggestion());
            self.push(error);
        }
    }

    /// A timeout, or `default` when absent; must have a unit and be greater than zero.
    fn timeout(&mut self, written: Option<Spanned<DurationText>>, default: Duration) -> Duration {
        let Some(written) = written else {
            return default;
        };
        match parse_duration(written.get_ref()) {
            Ok(d) if d.is_zero() => {
                let error = self
                    .error(
                        written.span(),
                        "a timeout of zero would fail everything at once",
                    )
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
                let note =
                    "expected IP:port, like `0.0.0.0:8080`, `127.0.0.1:9901` or `[::]:8080`; \
                            host names are not allowed here";
                let message = format!("`{}` is not a socket address", bind.get_ref());
                let error = self.error(bind.span(), message).with_note(note);
                self.push(error);
                None
            }
        }
    }

    /// A key the format defines for a later version: say so, rather than silently ignoring it.
    fn later(&mut self, key: &str, value: &Later) {
        if let Some(value) = value {
            let message = format!(
                "`{key}` is part of sluice's config format but is not implemented in this version yet"
            );
            let help =
                format!("remove `{key}` for now; docs/configuration.md lists what is implemented");
            let error = self.error(value.span(), message).with_help(help);
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
