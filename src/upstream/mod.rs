//! Backends and pools as the request path sees them: resolved addresses, shared runtime state
//! (in-flight and total counters, the latency estimate), the balancer, and one upstream HTTP client per worker.
//!
//! A `Backend`'s runtime state lives in an `Arc` so that a later snapshot can carry it over; the
//! per-worker clients keep their idle keep-alive connections on the worker that opened them, so a
//! request never hands a connection between threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::balance::{BackendSpec, Backends, Balancer, Ewma};
use crate::config;
use crate::health::outlier::Outliers;
use crate::health::Health;
use crate::metrics::BackendMetrics;
use crate::proxy::body::UpstreamBody;
use crate::shard::PerWorker;
use crate::tls::{UpstreamIo, UpstreamTls};

pub mod h1;

/// The HTTP client one worker uses to reach every backend of one pool.
pub type UpstreamClient = Client<CountingConnector, UpstreamBody>;

/// hyper-util's connector, counting the connections it opens (requests minus connections
/// opened is how many reused a pooled one), and adding TLS for pools with `[pool.NAME.tls]`.
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    opened: Arc<AtomicU64>,
    tls: Option<UpstreamTls>,
    /// HTTP/2 pools: the one backend this client reaches, whatever the request URI's authority
    /// (which then carries the client's host, as HTTP/2's `:authority`).
    fixed: Option<Authority>,
}

impl std::fmt::Debug for CountingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingConnector")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for CountingConnector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<UpstreamIo, ConnectError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    /// Boxed: connections are opened rarely next to the requests that reuse them.
    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let uri = match &self.fixed {
            Some(backend) => {
                let mut parts = uri.into_parts();
                parts.authority = Some(backend.clone());
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                http::Uri::from_parts(parts).expect("scheme and a socket address make a URI")
            }
            None => uri,
        };
        let connecting = self.inner.call(uri);
        let opened = self.opened.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let stream = connecting.await?;
            opened.fetch_add(1, Ordering::Relaxed);
            let Some(tls) = tls else {
                return Ok(UpstreamIo::Plain(stream));
            };
            let tcp = stream.into_inner();
            let addr = tcp.peer_addr()?;
            let stream = tls.handshake(tcp, addr, None).await?;
            Ok(UpstreamIo::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// One backend of a pool.
#[derive(Debug)]
pub struct Backend {
    /// The address as configured (`app-2.internal:8080`): the backend's identity in logs and APIs.
    pub address: Arc<str>,
    /// Resolved at load time.
    pub addr: SocketAddr,
    /// `ip:port`, pre-parsed so building an upstream URI copies nothing.
    pub authority: Authority,
    /// Configured weight; a reload that changes only the weight updates it in place, so the
    /// backend keeps the rest of its state.
    weight: AtomicU32,
    /// When the backend joined; slow start ramps its share from here.
    started: std::time::Instant,
    /// Peak-EWMA of response latency, fed by `observe`; read by the `peak_ewma` balancer.
    pub latency: Ewma,
    /// Whether it may take traffic (active checks, ejection, draining).
    pub health: Health,
    /// The pool's waiting requests, woken when a request to this backend finishes.
    waiters: Arc<Waiters>,
    /// In flight now: one count for all workers, since `max_connections_per_backend` and the
    /// least-loaded algorithms need the backend's whole load.
    active: AtomicU64,
    /// Requests started, a count per worker (`shard`).
    total: PerWorker<AtomicU64>,
    /// Its requests by listener and status, and its response times.
    pub metrics: BackendMetrics,
    /// Idle connections of sluice's own HTTP/1.1 client, per worker (`h1`).
    pub idle: h1::Idle,
}

impl Backend {
    /// A new backend; `checked`: its pool has active checks, so it starts unhealthy.
    pub fn new(
        cfg: &config::Backend,
        checked: bool,
        waiters: Arc<Waiters>,
        workers: usize,
    ) -> Backend {
        let authority = Authority::try_from(cfg.resolved.to_string().as_str())
            .expect("a socket address is a valid authority");
        Backend {
            address: Arc::from(cfg.address.as_str()),
            addr: cfg.resolved,
            authority,
            weight: AtomicU32::new(cfg.weight),
            started: std::time::Instant::now(),
            latency: Ewma::new(),
            health: Health::new(checked),
            waiters,
            active: AtomicU64::new(0),
            total: PerWorker::new(workers),
            metrics: BackendMetrics::new(workers),
            idle: h1::Idle::new(workers),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Requests currently in flight to this backend (head sent, response body not finished).
    pub fn active_requests(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    pub fn requests_total(&self) -> u64 {
        self.total.iter().map(|t| t.load(Ordering::Relaxed)).sum()
    }

    /// Counts a request as in flight until the returned guard drops, if the backend has fewer
    /// than `limit` in flight (`max_connections_per_backend`); `None` at the limit.
    pub fn try_start_request(self: &Arc<Self>, limit: u64) -> Option<InFlight> {
        // Take the slot first and give it back if it was over: two workers racing for the last
        // slot cannot both get it.
        if self.active.fetch_add(1, Ordering::Relaxed) >= limit {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.total.local().fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self.clone()))
    }
}

/// Requests of one pool waiting for a backend below its limit, and their wake-up call.
#[derive(Debug, Default)]
pub struct Waiters {
    /// Requests waiting now (`max_pending` caps it).
    pub count: std::sync::atomic::AtomicUsize,
    /// Notified when a request of the pool finishes, freeing a slot.
    pub freed: tokio::sync::Notify,
}

/// RAII: one request in flight to a backend.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let backend = &self.0;
        backend.active.fetch_sub(1, Ordering::Relaxed);
        // One load when nobody waits, the usual case.
        if backend.waiters.count.load(Ordering::Relaxed) != 0 {
            backend.waiters.freed.notify_one();
        }
    }
}

/// A pool: its backends, how to choose among them, and how to talk to them.
#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Balancer,
    pub hash_key: Option<config::HashKey>,
    /// Zero: off.
    pub slow_start: Duration,
    /// Every backend is past its slow-start window.
    ramped: AtomicBool,
    pub timeouts: config::Timeouts,
    /// HTTP/1.1 or HTTP/2 to the backends; the clients are built for it.
    pub protocol: config::Protocol,
    /// Active checks (`None`: off).
    pub health_check: Option<config::HealthCheck>,
    /// Passive outlier detection (`None`: off).
    pub outliers: Option<Arc<Outliers>>,
    pub all_unhealthy: config::AllUnhealthy,
    pub limits: config::Limits,
    /// Requests waiting for a slot (circuit breaking).
    pub waiters: Arc<Waiters>,
    /// `fail_open` is in effect: no backend was healthy at the last look.
    pub failing_open: AtomicBool,
    /// Retries on another backend (`None`: off).
    pub retry: Option<RetryPolicy>,
    /// Cheap to clone: a clone shares the client's connection pool.
    /// HTTP/1.1 pools: one per worker. HTTP/2 and `auto` pools: one per backend and worker
    /// (`backend * workers + worker`), each dialing its backend.
    clients: Box<[UpstreamClient]>,
    /// Worker count the clients were made for.
    workers: usize,
    /// Upstream connections its clients have opened, kept across reloads.
    pub connections_opened: Arc<AtomicU64>,
    /// `[pool.NAME.tls]`: requests go to `https://` URIs; health checks use it too.
    pub tls: Option<config::PoolTls>,
    /// What the clients' connectors use for TLS (shared with them).
    upstream_tls: Option<UpstreamTls>,
}

impl Pool {
    /// Feeds backend `index`'s latency estimate, if the pool's algorithm reads it (otherwise
    /// it would be two writes per response to a line every worker writes, for nothing):
    /// `Ok(rtt)` for an answer, `Err(())` for a failure (connect error, timeout, 5xx), which
    /// counts as a slow response so that failing fast never attracts traffic. `now` is the
    /// caller's clock reading (it has just read the clock to measure `rtt`).
    pub fn observe(&self, index: usize, result: Result<Duration, ()>, now: Instant) {
        if !self.balancer.reads_latency() {
            return;
        }
        let latency = &self.backends[index].latency;
        match result {
            Ok(rtt) => latency.observe(rtt, now),
            Err(()) => latency.observe_failure(now),
        }
    }

    pub fn new(cfg: &config::Pool, workers: usize) -> Pool {
        Pool::build(cfg, workers, None)
    }

    /// Builds the pool of `cfg`, carrying over from `previous` (the pool of the same name in
    /// the snapshot being replaced) everything a reload must not lose: each backend present in
    /// both (same address, resolving to the same socket address) keeps its `Backend`, with its
    /// health, ejection, counters, latency and slow-start clock; the pool keeps its waiters,
    /// retry budget, ejection count and, when its timeouts are unchanged, its upstream clients
    /// with their idle connections. (Retiring the backends not kept is the reload's job.)
    pub fn build(cfg: &config::Pool, workers: usize, previous: Option<&Pool>) -> Pool {
        let connections_opened =
            previous.map_or_else(Arc::default, |old| old.connections_opened.clone());
        let workers = workers.max(1);
        let same_settings = previous.filter(|old| {
            old.timeouts == cfg.timeouts
                && old.tls == cfg.tls
                && old.protocol == cfg.protocol
                && old.workers == workers
        });
        let upstream_tls = match same_settings {
            Some(old) => old.upstream_tls.clone(),
            None => cfg
                .tls
                .as_ref()
                .map(|tls| UpstreamTls::new(tls, cfg.timeouts.connect, cfg.protocol)),
        };
        let build = |fixed: Option<Authority>| {
            (0..workers)
                .map(|_| {
                    build_client(
                        &cfg.timeouts,
                        cfg.protocol,
                        &connections_opened,
                        upstream_tls.clone(),
                        fixed.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let clients: Box<[UpstreamClient]> = if cfg.protocol == config::Protocol::Http1 {
            match same_settings {
                Some(old) => old.clients.clone(),
                None => build(None).into(),
            }
        } else {
            // HTTP/2 (or maybe HTTP/2): one client per backend and worker, each dialing its
            // backend, so that a request's URI can carry the client's host as `:authority`. A
            // backend kept by a reload keeps its clients and their connections.
            cfg.backends
                .iter()
                .flat_map(|b| {
                    let kept = same_settings.and_then(|old| {
                        let i = old.backends.iter().position(|o| o.addr == b.resolved)?;
                        Some(old.clients[i * workers..(i + 1) * workers].to_vec())
                    });
                    kept.unwrap_or_else(|| {
                        let authority = Authority::try_from(b.resolved.to_string().as_str())
                            .expect("a socket address is a valid authority");
                        build(Some(authority))
                    })
                })
                .collect()
        };
        if let Some(tls) = &upstream_tls {
            tls.set_names(&cfg.backends);
        }
        let waiters = previous.map_or_else(Arc::default, |old| old.waiters.clone());
        let checked = cfg.health_check.is_some();
        let backends: Vec<Arc<Backend>> = cfg
            .backends
            .iter()
            .map(|b| match previous.and_then(|old| old.kept(b)) {
                Some(kept) => {
                    kept.weight.store(b.weight, Ordering::Relaxed);
                    if !checked {
                        // Without checks nothing would ever clear a probe's verdict.
                        kept.health.set_checks_pass(true);
                    }
                    kept.clone()
                }
                None => Arc::new(Backend::new(b, checked, waiters.clone(), workers)),
            })
            .collect();
        let specs: Vec<BackendSpec> = cfg
            .backends
            .iter()
            .map(|b| BackendSpec {
                id: b.address.clone(),
                weight: b.weight,
            })
            .collect();
        let previous_outliers = previous.and_then(|old| old.outliers.as_ref());
        Pool {
            name: Arc::from(cfg.name.as_str()),
            backends,
            balancer: Balancer::new(cfg.algorithm, &specs),
            hash_key: cfg.hash_key.clone(),
            slow_start: cfg.slow_start,
            ramped: AtomicBool::new(cfg.slow_start.is_zero()),
            timeouts: cfg.timeouts.clone(),
            protocol: cfg.protocol,
            health_check: cfg.health_check.clone(),
            outliers: cfg
                .outlier_detection
                .clone()
                .map(|settings| Arc::new(Outliers::new(settings, previous_outliers.map(|o| &**o)))),
            all_unhealthy: cfg.all_unhealthy,
            limits: cfg.limits.clone(),
            waiters,
            failing_open: AtomicBool::new(
                previous.is_some_and(|old| old.failing_open.load(Ordering::Relaxed)),
            ),
            retry: cfg.retry.clone().map(|settings| {
                RetryPolicy::new(settings, previous.and_then(|old| old.retry.as_ref()))
            }),
            clients,
            workers,
            connections_opened,
            tls: cfg.tls.clone(),
            upstream_tls,
        }
    }

    /// The backend of this pool that `cfg` describes, if there is one to keep.
    fn kept(&self, cfg: &config::Backend) -> Option<&Arc<Backend>> {
        self.backends
            .iter()
            .find(|b| *b.address == *cfg.address && b.addr == cfg.resolved)
    }

    /// How `upstream::h1` opens a new connection to one of this pool's backends.
    pub fn dial(&self) -> h1::Dial<'_> {
        h1::Dial {
            timeout: self.timeouts.connect,
            opened: &self.connections_opened,
        }
    }

    /// The client `worker` uses for `backend`; a worker number beyond the pool's (never
    /// expected) falls back to the first worker's rather than failing the request.
    pub fn client(&self, backend: usize, worker: usize) -> &UpstreamClient {
        let worker = if worker < self.workers { worker } else { 0 };
        let index = match self.protocol {
            config::Protocol::Http1 => worker,
            config::Protocol::H2 | config::Protocol::Auto => backend * self.workers + worker,
        };
        &self.clients[index]
    }
}

fn build_client(
    timeouts: &config::Timeouts,
    protocol: config::Protocol,
    opened: &Arc<AtomicU64>,
    tls: Option<UpstreamTls>,
    fixed: Option<Authority>,
) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeouts.connect));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    // The URIs we build always carry an IP literal, so the connector never resolves names.
    // TLS pools use `https://` URIs: TCP here, the handshake in `CountingConnector`.
    connector.enforce_http(tls.is_none());
    let mut builder = Client::builder(TokioExecutor::new());
    match protocol {
        // Prior knowledge: every connection speaks HTTP/2 from its first byte, and the client
        // keeps one per backend, multiplexing this worker's requests over it as streams.
        config::Protocol::H2 => {
            builder.http2_only(true).timer(TokioTimer::new());
        }
        // A connection whose ALPN chose `h2` becomes that backend's one multiplexed connection.
        config::Protocol::Auto => {
            builder.timer(TokioTimer::new());
        }
        config::Protocol::Http1 => {}
    }
    builder
        // Without a timer the idle timeout below silently does nothing.
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(timeouts.idle)
        .pool_max_idle_per_host(4096)
        // A stale pooled connection that fails before the request is written is retried by
        // hyper-util itself; one that fails after is handled in `proxy::forward`.
        .retry_canceled_requests(true)
        .build(CountingConnector {
            inner: connector,
            opened: opened.clone(),
            tls,
            fixed,
        })
}

/// The pool as its balancer sees it: weights, live load and latency of each backend.
impl Backends for Pool {
    fn len(&self) -> usize {
        self.backends.len()
    }

    fn weight(&self, i: usize) -> u32 {
        self.backends[i].weight()
    }

    fn ramp(&self, i: usize) -> f64 {
        // Once every backend has ramped up, no pick reads the clock for it again.
        if self.slow_start.is_zero() || self.ramped.load(Ordering::Relaxed) {
            return 1.0;
        }
        let backend = &self.backends[i];
        let ramp = slow_start_ramp(backend.started.elapsed(), self.slow_start);
        if ramp >= 1.0
            && self
                .backends
                .iter()
                .all(|b| b.started.elapsed() >= self.slow_start)
        {
            self.ramped.store(true, Ordering::Relaxed);
        }
        ramp
    }

    fn settled(&self) -> bool {
        self.slow_start.is_zero() || self.ramped.load(Ordering::Relaxed)
    }

    /// A backend that may not take traffic looks busier than any that may, so load-aware
    /// algorithms pass over it without knowing about health (the caller still skips it: this
    /// only keeps their first choice useful).
    fn in_flight(&self, i: usize) -> u64 {
        let backend = &self.backends[i];
        let active = backend.active_requests();
        if backend.health.available() {
            active
        } else {
            active.saturating_add(UNAVAILABLE_LOAD)
        }
    }

    fn latency(&self, i: usize, now: Instant) -> Option<f64> {
        self.backends[i].latency.get(now)
    }
}

/// What an unavailable backend adds to its in-flight count in the balancer's view.
const UNAVAILABLE_LOAD: u64 = 1 << 40;

/// A pool's retry settings and budget.
#[derive(Debug)]
pub struct RetryPolicy {
    pub settings: config::Retry,
    /// Kept across reloads.
    state: Arc<RetryState>,
}

#[derive(Debug)]
struct RetryState {
    /// Retry tokens in thousandths: each request deposits `budget_percent × 10`, each retry
    /// takes 1000, and the balance never exceeds the reserve.
    balance: AtomicI64,
    /// Retries made, for metrics.
    retries_total: AtomicU64,
}

impl RetryPolicy {
    /// Retries a quiet pool may make beyond its budget share: without a reserve a pool that
    /// has just started, or sees little traffic, could not retry at all.
    pub const RESERVE: i64 = 10;
    const UNIT: i64 = 1000;

    /// A policy with `settings`, continuing the budget and counter of `previous` (the same
    /// pool's policy before a reload) when there is one.
    pub fn new(settings: config::Retry, previous: Option<&RetryPolicy>) -> RetryPolicy {
        let state = previous.map_or_else(
            || {
                Arc::new(RetryState {
                    balance: AtomicI64::new(Self::RESERVE * Self::UNIT),
                    retries_total: AtomicU64::new(0),
                })
            },
            |old| old.state.clone(),
        );
        RetryPolicy { settings, state }
    }

    /// Retries made (and not refunded) since the pool first had a retry policy.
    pub fn retries_total(&self) -> u64 {
        self.state.retries_total.load(Ordering::Relaxed)
    }

    /// Credits one request to the budget.
    pub fn deposit(&self) {
        let cap = Self::RESERVE * Self::UNIT;
        // A full budget (the usual case: retries are rare) costs one load, no write.
        if self.state.balance.load(Ordering::Relaxed) >= cap {
            return;
        }
        let credit = i64::from(self.settings.budget_percent) * (Self::UNIT / 100);
        let _ = self
            .state
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + credit).min(cap))
            });
    }

    /// Takes one retry from the budget, if it has one.
    pub fn withdraw(&self) -> bool {
        let taken = self
            .state
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= Self::UNIT).then_some(b - Self::UNIT)
            })
            .is_ok();
        if taken {
            self.state.retries_total.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Gives back a retry that was not made after all.
    pub fn refund(&self) {
        self.state.balance.fetch_add(Self::UNIT, Ordering::Relaxed);
        self.state.retries_total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The share a backend `age` old may take under slow start over `window`: linear from
/// `SLOW_START_FLOOR` to 1, so a new backend gets some traffic at once (and warms up) but not
/// its full share.
pub fn slow_start_ramp(age: Duration, window: Duration) -> f64 {
    const SLOW_START_FLOOR: f64 = 0.1;
    if window.is_zero() || age >= window {
        return 1.0;
    }
    let progress = age.as_secs_f64() / window.as_secs_f64();
    SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_ramp_rises_then_settles_at_full() {
        let cfg = config::Pool {
            slow_start: Duration::from_millis(50),
            ..config::Pool::with_defaults(
                "p",
                config::Algorithm::LeastRequests,
                vec![config::Backend {
                    address: "127.0.0.1:1".into(),
                    resolved: "127.0.0.1:1".parse().unwrap(),
                    weight: 1,
                }],
            )
        };
        let pool = Pool::new(&cfg, 1);
        assert!(pool.ramp(0) < 1.0);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(pool.ramp(0), 1.0);
        assert!(
            pool.ramped.load(Ordering::Relaxed),
            "no clock reads from here on"
        );
    }

    #[test]
    fn slow_start_ramps_linearly_from_a_floor() {
        let w = Duration::from_secs(10);
        assert_eq!(slow_start_ramp(Duration::ZERO, w), 0.1);
        assert!((slow_start_ramp(Duration::from_secs(5), w) - 0.55).abs() < 1e-9);
        assert_eq!(slow_start_ramp(Duration::from_secs(10), w), 1.0);
        assert_eq!(slow_start_ramp(Duration::from_secs(99), w), 1.0);
        assert_eq!(slow_start_ramp(Duration::ZERO, Duration::ZERO), 1.0);
    }
}
