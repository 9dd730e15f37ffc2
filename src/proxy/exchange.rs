//! One request's life: what it holds while in flight and what the access log says about it.
//!
//! The `Exchange` is created when a request arrives and dropped when its response body has
//! been sent (or the client went away). Dropping it releases the connection's and the backend's
//! in-flight counts and writes the access-log line, so every path through the proxy, including
//! early errors and cancelled requests, is counted and logged exactly once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};
use tokio::time::Instant;

use crate::listener::ActiveRequest;
use crate::metrics::CLIENT_CLOSED;
use crate::state::Snapshot;
use crate::upstream::InFlight;

#[derive(Debug)]
pub struct Exchange {
    _active: ActiveRequest,
    backend: Option<InFlight>,
    start: Instant,
    /// The status sent, 0 until one is.
    status: u16,
    /// sluice answered itself (`backend=""` in the metrics), even if a backend was tried.
    local: bool,
    bytes_out: u64,
    /// Where the metrics go: the snapshot, the listener's position in it and the route's
    /// position in the listener's `routes`; `None` when metrics are off.
    metrics: Option<(Arc<Snapshot>, usize, usize)>,
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
    pub pool: Option<Arc<str>>,
    pub upstream: Option<Duration>,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub aborted: bool,
}

impl Exchange {
    /// A request of the snapshot's listener at `listener` (a position; beyond the listeners when
    /// a reload removed it), with metrics when the listener has them.
    pub fn new(
        active: ActiveRequest,
        snapshot: &Arc<Snapshot>,
        listener: usize,
        log: Option<Box<AccessRecord>>,
    ) -> Exchange {
        let metrics = snapshot
            .listeners
            .get(listener)
            .filter(|l| !l.routes.is_empty())
            .map(|l| (snapshot.clone(), listener, l.routes.len() - 1));
        Exchange {
            _active: active,
            backend: None,
            start: Instant::now(),
            status: 0,
            local: false,
            bytes_out: 0,
            metrics,
            log,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
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
            if let Some(counters) = self._active.conn().listener_counters() {
                counters
                    .sent_bytes
                    .fetch_add(self.bytes_out, Ordering::Relaxed);
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
        let total = self.start.elapsed();
        // No status reached a client that went away first.
        let status = match self.status {
            0 => CLIENT_CLOSED,
            status => status,
        };
        self.record(status, total);
        let Some(log) = self.log.take() else { return };
        let backend = self.backend.as_ref().map(|b| &*b.backend().address);
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
            aborted = log.aborted,
        );
    }
}
