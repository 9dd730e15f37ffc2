//! Logging: tracing-subscriber in text or JSON, written by a background thread so that a slow
//! terminal or disk never blocks the request path (lines are dropped instead when it falls far
//! behind, and counted: `dropped_lines`). Access logs are ordinary events on the `access`
//! target.
//!
//! The filter sits behind a reload handle (`LogControl`), so the admin API
//! (`PUT /api/log-level`) and config reloads change the level of the running process.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Dispatch;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{log_filter, LogFilterError, LogFormat};

/// Lines the background writer may hold before new ones are dropped.
const BUFFERED_LINES: usize = 64 * 1024;

/// The installed writer's count of lines dropped because it fell behind.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the writer could not keep up (0 when no logger is
/// installed), for `sluice_log_lines_dropped_total`.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keeps the background writer alive (dropping it flushes what is queued), and holds the
/// handle on the running filter.
pub struct LogGuard {
    _writer: WorkerGuard,
    control: LogControl,
}

impl LogGuard {
    /// The handle that changes the installed logger's filter.
    pub fn control(&self) -> LogControl {
        self.control.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Filter(#[from] LogFilterError),
    #[error("a global logger is already installed")]
    AlreadyInstalled,
    #[error("the logger this filter belonged to is gone")]
    LoggerGone,
}

/// Installs the global subscriber. `level` is a tracing filter (`info`, `sluice=debug,warn`).
pub fn init(level: &str, format: LogFormat) -> Result<LogGuard, TelemetryError> {
    let (control, filter) = LogControl::new(log_filter(level)?, None);
    let (writer, guard) = lossy_writer(std::io::stdout(), BUFFERED_LINES);
    let counter = writer.error_counter();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true)
        .with_ansi(ansi);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    let _ = DROPPED.set(counter);
    Ok(LogGuard {
        _writer: guard,
        control,
    })
}

/// A writer that hands lines to a background thread and never waits for it: past `limit`
/// queued lines, new ones are dropped and counted.
fn lossy_writer<W: std::io::Write + Send + 'static>(
    sink: W,
    limit: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(limit)
        .finish(sink)
}

/// Changes the running log filter. Cheap to clone; every clone controls the same filter.
#[derive(Clone)]
pub struct LogControl(Arc<ControlInner>);

struct ControlInner {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The filter in force, as tracing prints it; the lock also keeps changes in order.
    current: Mutex<String>,
    /// A subscriber that exists only for this control (`detached`); the installed one lives
    /// in tracing's global state.
    detached: Option<Dispatch>,
}

/// What a change of filter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelChange {
    /// The filter now in force.
    pub level: String,
    /// The filter it replaced.
    pub previous: String,
}

impl LogControl {
    /// A reloadable `filter`: the control that changes it, and the layer to install.
    fn new(
        filter: EnvFilter,
        detached: Option<Dispatch>,
    ) -> (LogControl, reload::Layer<EnvFilter, Registry>) {
        let current = Mutex::new(filter.to_string());
        let (layer, handle) = reload::Layer::new(filter);
        let inner = ControlInner {
            handle,
            current,
            detached,
        };
        (LogControl(Arc::new(inner)), layer)
    }

    /// A control whose filter governs a subscriber of its own that is installed nowhere:
    /// changes behave as on the real logger, but nothing is written. For tests, and for
    /// embedders that run the server in a process that logs its own way.
    pub fn detached(level: &str) -> Result<LogControl, TelemetryError> {
        let (control, layer) = LogControl::new(log_filter(level)?, None);
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        let inner = ControlInner {
            handle: control.0.handle.clone(),
            current: Mutex::new(control.current()),
            detached: Some(dispatch),
        };
        Ok(LogControl(Arc::new(inner)))
    }

    /// The filter in force, as tracing prints it (`info`, `sluice=debug,warn`).
    pub fn current(&self) -> String {
        self.0
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the filter at once. An invalid `level` changes nothing.
    pub fn set(&self, level: &str) -> Result<LevelChange, TelemetryError> {
        let filter = log_filter(level)?;
        let text = filter.to_string();
        let mut current = self.0.current.lock().unwrap_or_else(|e| e.into_inner());
        self.0
            .handle
            .reload(filter)
            .map_err(|_| TelemetryError::LoggerGone)?;
        let previous = std::mem::replace(&mut *current, text.clone());
        drop(current);
        // Not `level`: JSON lines already have a `level` key, the event's own.
        tracing::info!(filter = %text, %previous, "log filter changed");
        Ok(LevelChange {
            level: text,
            previous,
        })
    }
}

impl fmt::Debug for LogControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &self.current())
            .field("detached", &self.0.detached.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    /// Whether the filter inside the control's subscriber lets some debug events through.
    /// Asked of the filter itself: `tracing::enabled!` would consult process-wide caches that
    /// the other tests' subscribers share.
    fn debug_on(control: &LogControl) -> bool {
        assert!(control.0.detached.is_some(), "a detached control");
        let max = control.0.handle.with_current(|f| f.max_level_hint());
        max.unwrap()
            .is_some_and(|max| max >= tracing::level_filters::LevelFilter::DEBUG)
    }

    #[test]
    fn a_change_applies_at_once_and_reports_both_filters() {
        let control = LogControl::detached("info").unwrap();
        assert!(!debug_on(&control));
        let change = control.set("sluice=debug,warn").unwrap();
        assert_eq!(change.previous, "info");
        assert_eq!(change.level, control.current());
        assert!(change.level.contains("sluice=debug"), "{}", change.level);
        assert!(debug_on(&control));
        control.set(" error ").unwrap();
        assert_eq!(control.current(), "error");
        assert!(!debug_on(&control));
    }

    #[test]
    fn an_invalid_filter_changes_nothing() {
        let control = LogControl::detached("warn").unwrap();
        for bad in ["", "infoo", "sluice=loud"] {
            assert!(
                matches!(control.set(bad), Err(TelemetryError::Filter(_))),
                "{bad}"
            );
        }
        assert_eq!(control.current(), "warn");
    }

    #[test]
    fn clones_control_the_same_filter() {
        let control = LogControl::detached("info").unwrap();
        control.clone().set("debug").unwrap();
        assert_eq!(control.current(), "debug");
        assert!(debug_on(&control));
    }

    /// A sink that blocks until told to go on, like a stalled disk or a full pipe.
    struct Stalled(mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_drops_and_counts_lines_instead_of_blocking() {
        let (go, wait) = mpsc::channel();
        let (mut writer, guard) = lossy_writer(Stalled(wait), 4);
        let counter = writer.error_counter();
        // The writer thread takes at most one line and blocks on it; four more queue; the
        // rest are dropped. Were the writer blocking, this loop would never finish.
        for _ in 0..100 {
            writer.write_all(b"line\n").unwrap();
        }
        assert!(counter.dropped_lines() >= 95, "{}", counter.dropped_lines());
        drop(go);
        drop(guard);
    }

    #[test]
    fn no_logger_no_dropped_lines() {
        // Nothing in the library's tests installs the global logger.
        assert_eq!(dropped_lines(), 0);
    }
}
