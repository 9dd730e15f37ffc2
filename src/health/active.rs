//! Active health checks: one task per backend of every pool with a `health_check`, probing it at
//! once and then every `interval` (jittered by ±10% so a pool's backends are not probed in
//! lockstep), feeding a pure threshold counter (`Threshold`) whose flips set or clear the
//! backend's `UNHEALTHY` bit.
//!
//! A probe is a plain TCP connect, or, with `path` set, an HTTP/1.1 GET on a fresh connection
//! that passes when the status is in `expected_status`. Every probe is recorded on the backend
//! for the admin API; only flips are logged.
//!
//! `Checkers` owns the tasks of one snapshot's pools: a reload starts checkers for the new
//! snapshot and drops (or stops) the old ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::CheckRecord;
use crate::balance::rng;
use crate::config::{HealthCheck, OutlierDetection, PoolTls};
use crate::health::outlier::Outliers;
use crate::state::Snapshot;
use crate::upstream::{Backend, Pool};

/// Sent with every HTTP probe, so backends can tell probes from traffic in their logs.
const USER_AGENT: &str = "sluice-health-check";

/// At most this much of a probe's response body is read (and thrown away) before the connection
/// is closed: enough for any health page, and reading it spares the backend a reset.
const MAX_BODY_DRAINED: usize = 64 * 1024;

/// The running probe loops, one per checked backend, kept in step with the current snapshot:
/// `reconcile` starts loops for new backends, stops those of removed ones, and restarts those
/// whose settings changed; a backend whose checks did not change keeps its loop (and its
/// place in the probe cadence). Dropping `Checkers` (or `stop`) ends every loop.
#[derive(Debug)]
pub struct Checkers {
    cancel: CancellationToken,
    tasks: TaskTracker,
    running: HashMap<(Arc<str>, Arc<str>), Running>,
}

/// One probe loop, and what it was started with.
#[derive(Debug)]
struct Running {
    backend: Arc<Backend>,
    settings: HealthCheck,
    tls: Option<PoolTls>,
    outliers: Option<OutlierDetection>,
    cancel: CancellationToken,
}

/// What a `reconcile` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub started: usize,
    pub stopped: usize,
    pub kept: usize,
}

impl Checkers {
    /// Starts a probe loop for every backend of every pool of `snapshot` that has active checks,
    /// on the current tokio runtime. The loops also end when `shutdown` is cancelled.
    pub fn start(snapshot: &Snapshot, shutdown: &CancellationToken) -> Checkers {
        Self::start_pools(&snapshot.pools, shutdown)
    }

    /// `start` for a set of pools.
    pub fn start_pools(pools: &[Arc<Pool>], shutdown: &CancellationToken) -> Checkers {
        let mut checkers = Checkers {
            cancel: shutdown.child_token(),
            tasks: TaskTracker::new(),
            running: HashMap::new(),
        };
        checkers.reconcile(pools);
        checkers
    }

    /// Brings the loops in line with `pools` (a new snapshot's).
    pub fn reconcile(&mut self, pools: &[Arc<Pool>]) -> Reconciled {
        let mut done = Reconciled::default();
        let mut next = HashMap::new();
        for pool in pools {
            let Some(settings) = &pool.health_check else {
                continue;
            };
            let outliers = pool.outliers.as_ref().map(|o| o.settings.clone());
            for backend in &pool.backends {
                let key = (pool.name.clone(), backend.address.clone());
                if let Some(running) = self.running.remove(&key) {
                    if Arc::ptr_eq(&running.backend, backend)
                        && running.settings == *settings
                        && running.tls == pool.tls
                        && running.outliers.as_ref() == outliers.as_ref()
                    {
                        next.insert(key, running);
                        done.kept += 1;
                        continue;
                    }
                    running.cancel.cancel();
                    done.stopped += 1;
                }
                let cancel = self.cancel.child_token();
                let checker = Checker {
                    pool: pool.name.clone(),
                    backend: backend.clone(),
                    settings: settings.clone(),
                    tls: pool.tls.clone(),
                    outliers: pool.outliers.clone(),
                };
                self.tasks.spawn(checker.run(cancel.clone()));
                next.insert(
                    key,
                    Running {
                        backend: backend.clone(),
                        settings: settings.clone(),
                        tls: pool.tls.clone(),
                        outliers: outliers.clone(),
                        cancel,
                    },
                );
                done.started += 1;
            }
        }
        for (_, gone) in self.running.drain() {
            gone.cancel.cancel();
            done.stopped += 1;
        }
        self.running = next;
        done
    }

    /// Backends being checked.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Ends every probe loop and waits until they have (a probe in progress is abandoned).
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The probe loop of one backend.
struct Checker {
    /// The pool's name, for logs.
    pool: Arc<str>,
    backend: Arc<Backend>,
    settings: HealthCheck,
    /// The pool's `[pool.NAME.tls]`: probes use the same TLS as traffic.
    tls: Option<PoolTls>,
    /// The pool's outlier detection, which a passing probe may end an ejection for.
    outliers: Option<Arc<Outliers>>,
}

impl Checker {
    fn backend(&self) -> &Backend {
        &self.backend
    }

    async fn run(self, cancel: CancellationToken) {
        let health = &self.backend().health;
        let mut threshold = Threshold::resumed(
            health.checks_pass(),
            health.proven(),
            self.settings.healthy_threshold,
            self.settings.unhealthy_threshold,
        );
        loop {
            // Probes start on a cadence, whatever each one takes, so a slow backend is not
            // probed less often than a fast one.
            let started = Instant::now();
            let outcome = tokio::select! {
                outcome = probe(self.backend(), &self.settings, self.tls.as_ref()) => outcome,
                () = cancel.cancelled() => return,
            };
            self.apply(&mut threshold, outcome);
            let next = started + jittered(self.settings.interval, rng::unit());
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Records one probe's outcome on the backend and applies what it changes.
    fn apply(&self, threshold: &mut Threshold, outcome: Outcome) {
        let backend = self.backend();
        let pool = &*self.pool;
        let address = &*backend.address;
        tracing::trace!(
            pool,
            backend = address,
            passed = outcome.passed,
            detail = %outcome.detail,
            "probe"
        );
        // Recorded first, so that whoever sees the state change also sees its reason.
        backend.health.record_check(CheckRecord {
            passed: outcome.passed,
            detail: outcome.detail.clone(),
            at: SystemTime::now(),
        });
        if let Some(healthy) = threshold.record(outcome.passed) {
            // Two checkers may probe one backend for a moment (a reload starts the new
            // snapshot's before dropping the old): only the flip that changes the bit is logged.
            if backend.health.set_checks_pass(healthy) {
                if healthy {
                    tracing::info!(pool, backend = address, "backend became healthy");
                } else {
                    tracing::warn!(
                        pool,
                        backend = address,
                        reason = %outcome.detail,
                        "backend became unhealthy"
                    );
                }
            }
        }
        if outcome.passed
            && self
                .outliers
                .as_ref()
                .is_some_and(|o| o.probe_passed(&backend.health))
        {
            tracing::info!(
                pool,
                backend = address,
                "ejected backend returned after passing a probe"
            );
        }
    }
}

/// `interval` scaled by a factor in [0.9, 1.1); `unit` is uniform in [0, 1).
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// `status 200`, `connected`, `timeout`, `connection refused`, `connect error: ...`,
    /// `invalid response: ...`.
    pub detail: String,
}

impl Outcome {
    fn pass(detail: impl Into<String>) -> Outcome {
        Outcome {
            passed: true,
            detail: detail.into(),
        }
    }

    fn fail(detail: impl Into<String>) -> Outcome {
        Outcome {
            passed: false,
            detail: detail.into(),
        }
    }
}

/// Probes `backend` once, within `settings.timeout`; over TLS (a handshake, then the GET) when
/// the pool has `tls`.
pub async fn probe(backend: &Backend, settings: &HealthCheck, tls: Option<&PoolTls>) -> Outcome {
    let deadline = Instant::now() + settings.timeout;
    let connected = match tokio::time::timeout_at(deadline, TcpStream::connect(backend.addr)).await
    {
        Err(_) => return Outcome::fail("timeout"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Outcome::fail("connection refused")
        }
        Ok(Err(e)) => return Outcome::fail(format!("connect error: {e}")),
        Ok(Ok(stream)) => stream,
    };
    let _ = connected.set_nodelay(true);
    let Some(tls) = tls else {
        return match &settings.path {
            None => Outcome::pass("connected"),
            Some(path) => http_probe(connected, backend, path, settings, deadline).await,
        };
    };
    let name = tls
        .server_name
        .clone()
        .unwrap_or_else(|| crate::tls::backend_name(&backend.address, backend.addr));
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = match tokio::time::timeout_at(deadline, connector.connect(name, connected)).await {
        Err(_) => return Outcome::fail("timeout"),
        Ok(Err(e)) => return Outcome::fail(format!("TLS handshake failed: {e}")),
        Ok(Ok(stream)) => stream,
    };
    match &settings.path {
        None => Outcome::pass("TLS handshake done"),
        Some(path) => http_probe(stream, backend, path, settings, deadline).await,
    }
}

/// GET `path` on `stream`; the verdict comes from the response head.
async fn http_probe<S>(
    stream: S,
    backend: &Backend,
    path: &http::uri::PathAndQuery,
    settings: &HealthCheck,
    deadline: Instant,
) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let host = HeaderValue::from_str(&backend.address)
        .or_else(|_| HeaderValue::from_str(backend.authority.as_str()));
    let request = host.map_err(http::Error::from).and_then(|host| {
        Request::get(path.as_str())
            .header(header::HOST, host)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
    });
    let request = match request {
        Ok(request) => request,
        // Not expected: the address and path were validated at load time.
        Err(e) => return Outcome::fail(format!("cannot build the probe request: {e}")),
    };
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
    let (mut sender, conn) = match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => return Outcome::fail("timeout"),
        Ok(Err(e)) => return Outcome::fail(format!("invalid response: {e}")),
        Ok(Ok(handshaken)) => handshaken,
    };
    let mut conn = std::pin::pin!(conn);
    let head = async {
        let mut response = std::pin::pin!(sender.send_request(request));
        let ended = tokio::select! {
            response = response.as_mut() => {
                return response.map_err(|e| format!("invalid response: {e}"));
            }
            ended = conn.as_mut() => ended,
        };
        // The connection may end in the same poll that hands the answer over (it was asked to
        // close after it): the answer, if any, is waiting.
        match (response.await, ended) {
            (Ok(response), _) => Ok(response),
            (Err(e), Ok(())) | (_, Err(e)) => Err(format!("invalid response: {e}")),
        }
    };
    let response = match tokio::time::timeout_at(deadline, head).await {
        Err(_) => return Outcome::fail("timeout"),
        Ok(Err(detail)) => return Outcome::fail(detail),
        Ok(Ok(response)) => response,
    };
    drop(sender);
    let status = response.status().as_u16();
    let outcome = Outcome {
        passed: settings.expected_status.contains(&status),
        detail: format!("status {status}"),
    };
    // The verdict is in; read a little of the body so the backend sees a clean close. Neither
    // an error nor the deadline here changes the verdict.
    let drain = async {
        let mut body = response.into_body();
        let mut read = 0;
        while read < MAX_BODY_DRAINED {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, async {
        let _ = tokio::join!(drain, conn.as_mut());
    })
    .await;
    outcome
}

/// The pure threshold logic of active checks: consecutive outcomes against the current verdict
/// flip it once they reach the threshold for that direction.
///
/// A backend that has never been healthy flips on its first pass: a fresh start (or a new
/// backend) serves within one probe instead of `healthy_threshold` intervals, as Envoy does for
/// new hosts. Once it has been healthy, both thresholds apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threshold {
    healthy: bool,
    /// Has been healthy at least once.
    proven: bool,
    /// Outcomes in a row that disagree with `healthy`.
    streak: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl Threshold {
    /// A counter whose verdict starts at `healthy` (unhealthy for a new backend; a backend
    /// carried over by a reload keeps its verdict).
    pub fn new(healthy: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Threshold {
        Threshold::resumed(healthy, healthy, healthy_threshold, unhealthy_threshold)
    }

    /// A counter taking over a backend's verdict: `proven` when it has passed before (a
    /// restarted probe loop must not apply the first-probe rule to a backend that failed its
    /// way out).
    pub fn resumed(
        healthy: bool,
        proven: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Threshold {
        Threshold {
            healthy,
            proven: proven || healthy,
            streak: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one probe; returns the new verdict when it flips.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = match (passed, self.proven) {
            (true, false) => 1,
            (true, true) => self.healthy_threshold,
            (false, _) => self.unhealthy_threshold,
        };
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.healthy = passed;
        self.proven |= passed;
        Some(passed)
    }
}

#[cfg(test)]
mod tests;
