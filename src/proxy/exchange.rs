//! One request's life: what it holds while in flight and what the access log says about it.
//!
//! The `Exchange` is created when a request arrives and dropped when its response body has
//! been sent (or the client went away). Dropping it releases the connection's and the backend's
//! in-flight counts and writes the access-log line, so every path through the proxy, including
//! early errors and cancelled requests, is counted and logged exactly once.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use super::headers::trace::TraceId;
use crate::listener::ActiveRequest;
use crate::metrics::CLIENT_CLOSED;
use crate::state::LocalSnapshot;
use crate::upstream::InFlight;

#[derive(Debug)]
pub struct Exchange {
    active: ActiveRequest,
    backend: Option<InFlight>,
    start: Instant,
    /// The status sent, 0 until one is.
    status: u16,
    /// sluice answered itself (`backend=""` in the metrics), even if a backend was tried.
    local: bool,
    bytes_out: u64,
    /// Where the metrics go: the snapshot, the listener's position in it and the route's
    /// position in the listener's `routes`; `None` when metrics are off.
    metrics: Option<(LocalSnapshot, usize, usize)>,
    /// Present only when the access log is on: a request without it allocates nothing for logs.
    log: Option<Box<AccessRecord>>,
}

/// The fields of one access-log line.
#[derive(Debug)]
pub struct AccessRecord {
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub path: String,
    pub request_id: HeaderValue,
    /// The W3C trace id the backend saw (or would have: a valid incoming one is known before
    /// any check, so local answers carry it too).
    pub trace_id: Option<TraceId>,
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
    pub pool: Option<Arc<str>>,
    pub upstream: Option<Duration>,
    /// Attempts sent to another backend after the first.
    pub retries: u32,
    /// The status each attempt's backend answered with.
    pub upstream_status: UpstreamStatus,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub aborted: bool,
}

/// The statuses backends answered a request's attempts with, in order, kept inline: printed
/// like nginx's `$upstream_status` (`503, 200`, `-` for an attempt that got no response), or
/// empty when no backend answered at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct UpstreamStatus {
    /// 0 for an attempt without a response.
    statuses: [u16; UpstreamStatus::KEPT],
    attempts: u8,
}

impl UpstreamStatus {
    /// `retry.attempts` is at most 10, so every attempt fits.
    const KEPT: usize = 11;

    /// Notes one attempt: the status its backend answered with, or `None`.
    pub fn push(&mut self, status: Option<u16>) {
        if let Some(slot) = self.statuses.get_mut(usize::from(self.attempts)) {
            *slot = status.unwrap_or(0);
            self.attempts += 1;
        }
    }

    fn attempts(&self) -> &[u16] {
        &self.statuses[..usize::from(self.attempts)]
    }
}

impl fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = self.attempts();
        if attempts.iter().all(|&s| s == 0) {
            return Ok(());
        }
        for (i, &status) in attempts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match status {
                0 => f.write_str("-")?,
                status => write!(f, "{status}")?,
            }
        }
        Ok(())
    }
}

impl Exchange {
    /// A request of the snapshot's listener at `listener` (a position; beyond the listeners when
    /// a reload removed it), with metrics when the listener has them.
    pub fn new(
        active: ActiveRequest,
        snapshot: &LocalSnapshot,
        listener: usize,
        log: Option<Box<AccessRecord>>,
    ) -> Exchange {
        let metrics = snapshot
            .listeners
            .get(listener)
            .filter(|l| !l.routes.is_empty())
            .map(|l| (snapshot.clone(), listener, l.routes.len() - 1));
        Exchange {
            active,
            backend: None,
            start: Instant::now(),
            status: 0,
            local: false,
            bytes_out: 0,
            metrics,
            log,
        }
    }

    /// When the request's head was taken (its clock for the metrics and the access log).
    pub fn started(&self) -> Instant {
        self.start
    }

    /// The downstream connection the request arrived on.
    pub fn conn(&self) -> &crate::listener::ConnState {
        self.active.conn()
    }

    pub fn log_mut(&mut self) -> Option<&mut AccessRecord> {
        self.log.as_deref_mut()
    }

    /// The request was routed to the snapshot's pool at `pool`.
    pub fn set_pool(&mut self, pool: usize) {
        if let Some((_, _, route)) = &mut self.metrics {
            *route = pool;
        }
    }

    pub fn set_backend(&mut self, inflight: InFlight) {
        self.backend = Some(inflight);
    }

    pub fn set_status(&mut self, status: StatusCode) {
        self.status = status.as_u16();
    }

    /// sluice answers the request itself.
    pub fn set_local(&mut self) {
        self.local = true;
    }

    pub fn add_bytes_out(&mut self, n: u64) {
        self.bytes_out += n;
    }

    pub fn mark_aborted(&mut self) {
        if let Some(log) = self.log_mut() {
            log.aborted = true;
        }
    }

    /// Counts the finished request: its status (by backend, or as sluice's own answer), its
    /// duration and the bytes sent.
    fn record(&self, status: u16, took: Duration) {
        if self.bytes_out > 0 {
            if let Some(counters) = self.active.conn().listener_counters() {
                counters.add_sent(self.bytes_out);
            }
        }
        let Some((snapshot, listener, route)) = &self.metrics else {
            return;
        };
        let listener = &snapshot.listeners[*listener];
        let route = &listener.routes[*route];
        route.duration.observe(took);
        match &self.backend {
            Some(inflight) if !self.local => {
                inflight.backend().metrics.codes.add(listener.id, status);
            }
            _ => route.local.add(listener.id, status),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let now = Instant::now();
        let total = now.saturating_duration_since(self.start);
        self.active.ended_at(now);
        // No status reached a client that went away first.
        let status = match self.status {
            0 => CLIENT_CLOSED,
            status => status,
        };
        self.record(status, total);
        let Some(log) = self.log.take() else { return };
        let backend = self.backend.as_ref().map(|b| &*b.backend().address);
        // Written as plain strings (quoted in text, strings in JSON) without allocating.
        let (mut trace_buf, mut status_buf) = ([0u8; 32], [0u8; 64]);
        tracing::info!(
            target: "access",
            listener = &*log.listener,
            client = %log.client,
            method = %log.method,
            host = log.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
            path = %log.path,
            status,
            pool = log.pool.as_deref().unwrap_or(""),
            backend = backend.unwrap_or(""),
            upstream_ms = log.upstream.map(|d| d.as_secs_f64() * 1e3),
            total_ms = total.as_secs_f64() * 1e3,
            bytes_in = log.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out = self.bytes_out,
            request_id = log.request_id.to_str().unwrap_or(""),
            trace_id = log.trace_id.map_or("", |id| in_buffer(id, &mut trace_buf)),
            retries = log.retries,
            upstream_status = in_buffer(log.upstream_status, &mut status_buf),
            user_agent = text(&log.user_agent),
            referer = text(&log.referer),
            aborted = log.aborted,
        );
    }
}

/// A header's text for the log; empty when absent or not visible ASCII.
fn text(value: &Option<HeaderValue>) -> &str {
    value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// `value` printed into `buf` (cut short if it does not fit).
fn in_buffer(value: impl fmt::Display, buf: &mut [u8]) -> &str {
    let mut cursor = std::io::Cursor::new(&mut *buf);
    let _ = write!(cursor, "{value}");
    let end = cursor.position() as usize;
    std::str::from_utf8(&buf[..end]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(attempts: &[Option<u16>]) -> String {
        let mut statuses = UpstreamStatus::default();
        for &a in attempts {
            statuses.push(a);
        }
        let mut buf = [0u8; 64];
        in_buffer(statuses, &mut buf).to_string()
    }

    #[test]
    fn upstream_status_lists_every_attempt_like_nginx() {
        assert_eq!(shown(&[]), "");
        assert_eq!(shown(&[Some(200)]), "200");
        assert_eq!(shown(&[Some(503), Some(200)]), "503, 200");
        assert_eq!(shown(&[None, Some(404)]), "-, 404");
        // No backend answered at all: nothing to show.
        assert_eq!(shown(&[None]), "");
        assert_eq!(shown(&[None, None]), "");
        // The most attempts a pool allows (1 + 10 retries) all fit, in order.
        let most = shown(&[Some(503); 11]);
        assert_eq!(most, ["503"; 11].join(", "));
        assert_eq!(shown(&[Some(502); 12]), most.replace("503", "502"));
    }
}
