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
use crate::upstream::InFlight;

#[derive(Debug)]
pub struct Exchange {
    _active: ActiveRequest,
    backend: Option<InFlight>,
    /// Present only when the access log is on: a request without it allocates nothing for logs.
    log: Option<Box<AccessRecord>>,
}

/// The fields of one access-log line.
#[derive(Debug)]
pub struct AccessRecord {
    pub start: Instant,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub path: String,
    pub request_id: HeaderValue,
    pub status: u16,
    pub pool: Option<Arc<str>>,
    pub upstream: Option<Duration>,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    pub aborted: bool,
}

impl Exchange {
    pub fn new(active: ActiveRequest, log: Option<Box<AccessRecord>>) -> Exchange {
        Exchange {
            _active: active,
            backend: None,
            log,
        }
    }

    pub fn log_mut(&mut self) -> Option<&mut AccessRecord> {
        self.log.as_deref_mut()
    }

    pub fn set_backend(&mut self, inflight: InFlight) {
        self.backend = Some(inflight);
    }

    pub fn set_status(&mut self, status: StatusCode) {
        if let Some(log) = self.log_mut() {
            log.status = status.as_u16();
        }
    }

    pub fn add_bytes_out(&mut self, n: u64) {
        if let Some(log) = self.log_mut() {
            log.bytes_out += n;
        }
    }

    pub fn mark_aborted(&mut self) {
        if let Some(log) = self.log_mut() {
            log.aborted = true;
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let Some(log) = self.log.take() else { return };
        let backend = self.backend.as_ref().map(|b| &*b.backend().address);
        let total = log.start.elapsed();
        tracing::info!(
            target: "access",
            listener = &*log.listener,
            client = %log.client,
            method = %log.method,
            host = log.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
            path = %log.path,
            status = log.status,
            pool = log.pool.as_deref().unwrap_or(""),
            backend = backend.unwrap_or(""),
            upstream_ms = log.upstream.map(|d| d.as_secs_f64() * 1e3),
            total_ms = total.as_secs_f64() * 1e3,
            bytes_in = log.bytes_in.as_ref().map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out = log.bytes_out,
            request_id = log.request_id.to_str().unwrap_or(""),
            aborted = log.aborted,
        );
    }
}
