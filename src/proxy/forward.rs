//! The exchange with a backend: build the upstream request, send it with the pool's timeouts,
//! and retry the one failure a client must never see: a pooled keep-alive connection that the
//! backend closed at the moment it was reused.

use std::error::Error as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper_util::client::legacy::{self, ResponseFuture};
use tokio::time::Instant;

use super::body::{BodyError, FromBackend, UpstreamBody};
use super::error::ProxyError;
use super::headers::Added;
use crate::config::{Protocol, RetryOn};
use crate::health::outlier::Verdict;
use crate::listener::ConnState;
use crate::metrics;
use crate::state::Snapshot;
use crate::upstream::{h1, Pool};

/// A response head from a backend, with the body still to come.
pub type BackendResponse = Response<FromBackend>;

/// The outcome of one attempt: the response and, when timed, how long the backend took.
pub type Outcome = Result<(BackendResponse, Option<Duration>), ProxyError>;

/// Extra attempts on a fresh connection after a stale pooled one failed. Each stale connection
/// fails at once, so a small bound covers a backend that closed several idle connections.
const STALE_RETRIES: usize = 2;

/// A request as an attempt sends it: its head, the headers sluice adds to it with its id, its
/// body.
pub struct Outbound<'a> {
    pub parts: Parts,
    /// A WebSocket upgrade (`Upgrade` restored in `parts`): hyper's client carries it.
    pub upgrade: bool,
    pub added: &'a Added,
    pub request_id: &'a HeaderValue,
    pub body: UpstreamBody,
    /// The response's fields may stay unparsed (`ClientBody::RAW_FIELDS`).
    pub raw_fields: bool,
}

/// An exchange with a backend in progress: the client's request is on its way.
pub struct Upstream {
    pool: usize,
    worker: usize,
    backend: usize,
    response: Pending,
    deadline: Instant,
    /// The deadline is the client's (a gRPC call's), not the pool's: its passing says nothing
    /// about the backend.
    client_deadline: bool,
    /// The request head again, for a retry on a fresh connection; only for requests that can
    /// be sent twice (idempotent, no body).
    replay: Option<Replay>,
    /// When the request left: feeds the backend's latency estimate (and the access log).
    sent: Instant,
    /// Whether the caller wants the upstream time back (the access log is on).
    timed: bool,
}

impl Upstream {
    /// Builds the upstream request and hands it to the worker's client: sluice's own HTTP/1.1
    /// client (`upstream::h1`) for a bodiless request that may be sent twice to a plain HTTP/1.1
    /// pool (most traffic), hyper's otherwise. Synchronous: the exchange itself happens in
    /// `finish`. The response head must come within the pool's request timeout (`limit` may
    /// bring that forward). `now`: the clock, read by the caller.
    pub fn start(
        pool_index: usize,
        worker: usize,
        backend_index: usize,
        pool: &Pool,
        request: Outbound<'_>,
        timed: bool,
        now: Instant,
    ) -> Upstream {
        let backend = &pool.backends[backend_index];
        let Outbound {
            mut parts,
            upgrade,
            added,
            request_id,
            body,
            raw_fields,
        } = request;
        // A request that may be sent twice: kept for a retry on a fresh connection.
        let replayable = is_idempotent(&parts.method) && matches!(body, UpstreamBody::Empty);
        let (response, replay) =
            if replayable && pool.protocol == Protocol::Http1 && pool.tls.is_none() && !upgrade {
                // The exchange keeps its encoded head for a retry: no copy needed here.
                let exchange = h1::Exchange::start(
                    backend,
                    worker,
                    &parts,
                    |out: &mut Vec<u8>| added.write(request_id, out),
                    raw_fields,
                    pool.timeouts.idle,
                    pool.dial(),
                    now.into_std(),
                );
                // Written: the map is for a next request's head.
                let Parts { headers, .. } = parts;
                super::headers::recycle_map(headers);
                (Pending::H1(exchange), None)
            } else {
                added.insert_into(request_id, &mut parts.headers);
                let (response, replay) =
                    hyper_request(pool, backend_index, worker, parts, body, replayable);
                (Pending::Hyper(response), replay)
            };
        Upstream {
            pool: pool_index,
            worker,
            backend: backend_index,
            response,
            deadline: now + pool.timeouts.request,
            client_deadline: false,
            replay,
            sent: now,
            timed,
        }
    }

    /// Brings the response-head deadline forward to `limit` (a gRPC call's deadline), if earlier.
    pub fn limit(mut self, limit: Option<Instant>) -> Upstream {
        if let Some(limit) = limit.filter(|&limit| limit < self.deadline) {
            self.deadline = limit;
            self.client_deadline = true;
        }
        self
    }

    /// Waits for the backend's response head within the pool's request timeout, retrying the
    /// keep-alive race on a fresh connection. Returns the response and, when timed, how long
    /// the backend took. `conn`: the client's connection, whose watchdog times the wait on
    /// HTTP/1 (`ConnState::watch_request`); HTTP/2 requests get a timer of their own.
    pub async fn finish(&mut self, snapshot: &Snapshot, conn: &ConnState) -> Outcome {
        let pool = &snapshot.pools[self.pool];
        let backend = &pool.backends[self.backend];
        let mut retries = 0;
        let watched = conn.watch_request(self.deadline);
        // The attempt was started just before the first poll, with its deadline ahead.
        let mut first = true;
        // One await point, in a loop: the future stays small.
        loop {
            let deadline = self.deadline;
            let response = &mut self.response;
            let head = match &watched {
                Some(_) => {
                    std::future::poll_fn(|cx| match Pin::new(&mut *response).poll(cx) {
                        Poll::Ready(head) => Poll::Ready(Some(head)),
                        Poll::Pending if first => {
                            first = false;
                            Poll::Pending
                        }
                        // Woken by the watchdog at the deadline, or by the exchange before it.
                        Poll::Pending if Instant::now() >= deadline => Poll::Ready(None),
                        Poll::Pending => Poll::Pending,
                    })
                    .await
                }
                None => tokio::time::timeout_at(deadline, response).await.ok(),
            };
            let failure = match head {
                Some(Ok(response)) => {
                    let now = Instant::now();
                    let took = now - self.sent;
                    // A 5xx is a failure for latency purposes: a backend answering errors fast
                    // must not look attractive.
                    let failed = response.status().is_server_error();
                    let pool = &snapshot.pools[self.pool];
                    let result = if failed { Err(()) } else { Ok(took) };
                    pool.observe(self.backend, result, now.into_std());
                    backend.metrics.upstream.observe(took);
                    record_outcome(pool, self.backend, !failed);
                    return Ok((response, self.timed.then_some(took)));
                }
                Some(Err(e)) => e,
                None => Failure::Timeout,
            };
            if let (Failure::H1(e), Pending::H1(exchange)) = (&failure, &mut self.response) {
                if retries < STALE_RETRIES && exchange.reused() && e.is_stale_connection() {
                    retries += 1;
                    tracing::debug!(backend = %backend.address, "pooled connection was closed; retrying on a fresh one");
                    exchange.retry_fresh(pool.dial());
                    continue;
                }
            }
            match (&failure, &self.replay) {
                (Failure::Client(e), Some(head))
                    if retries < STALE_RETRIES && is_stale_connection(e) =>
                {
                    retries += 1;
                    tracing::debug!(backend = %backend.address, "pooled connection was closed; retrying on a fresh one");
                    let (method, uri, headers) = &**head;
                    let mut req = Request::new(UpstreamBody::Empty);
                    *req.method_mut() = method.clone();
                    *req.uri_mut() = uri.clone();
                    *req.headers_mut() = headers.clone();
                    self.response =
                        Pending::Hyper(pool.client(self.backend, self.worker).request(req));
                }
                _ => {
                    let error = failure.into_proxy_error();
                    // Only the backend's own failures count against it, not a client's body.
                    let failure = match error {
                        ProxyError::Connect(_) => Some(metrics::Failure::Connect),
                        // A client that allows 1 ms must not get backends ejected.
                        ProxyError::Timeout if self.client_deadline => None,
                        ProxyError::Timeout => Some(metrics::Failure::Timeout),
                        ProxyError::Upstream(_) => Some(metrics::Failure::Response),
                        _ => None,
                    };
                    if let Some(failure) = failure {
                        backend.metrics.failed(failure);
                        backend.metrics.upstream.observe(self.sent.elapsed());
                        let pool = &snapshot.pools[self.pool];
                        pool.observe(self.backend, Err(()), std::time::Instant::now());
                        record_outcome(pool, self.backend, false);
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// The upstream head as hyper's client takes it, kept for a retry on a fresh connection.
type Replay = Box<(Method, Uri, HeaderMap)>;

/// Hands `parts` to hyper's client of `worker` for backend `backend_index`, with the upstream
/// URI (the backend's IP literal, or for HTTP/2 the client's host as `:authority`); with a copy
/// of the head when `replayable`.
fn hyper_request(
    pool: &Pool,
    backend_index: usize,
    worker: usize,
    mut parts: Parts,
    body: UpstreamBody,
    replayable: bool,
) -> (ResponseFuture, Option<Replay>) {
    let backend = &pool.backends[backend_index];
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if pool.tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    });
    uri.authority = Some(match pool.protocol {
        Protocol::Http1 => backend.authority.clone(),
        // HTTP/2 takes `:authority` from the URI: the client's host, as HTTP/2 wants it
        // (the backend's own client dials the backend whatever the authority says), and no
        // `Host` beside it (hyper-util writes one from the URI if `auto` ends up HTTP/1.1).
        Protocol::H2 | Protocol::Auto => parts
            .headers
            .remove(http::header::HOST)
            .and_then(|host| Authority::try_from(host.as_bytes()).ok())
            .unwrap_or_else(|| backend.authority.clone()),
    });
    uri.path_and_query = Some(path);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    parts.version = match pool.protocol {
        // `auto`: hyper-util sends it as HTTP/2 on a connection whose ALPN chose `h2`.
        Protocol::Http1 | Protocol::Auto => Version::HTTP_11,
        Protocol::H2 => Version::HTTP_2,
    };
    // Copied up front, since the client consumes the request.
    let replay = replayable.then(|| {
        Box::new((
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        ))
    });
    let response = pool
        .client(backend_index, worker)
        .request(Request::from_parts(parts, body));
    (response, replay)
}

/// Feeds outlier detection with one exchange's outcome, and times an ejection it causes.
fn record_outcome(pool: &Arc<Pool>, index: usize, success: bool) {
    let Some(outliers) = &pool.outliers else {
        return;
    };
    let backend = &pool.backends[index];
    let Verdict::Ejected { length, nth } =
        outliers.record(&backend.health, pool.backends.len(), success)
    else {
        return;
    };
    tracing::warn!(
        pool = &*pool.name,
        backend = &*backend.address,
        ejection_secs = length.as_secs_f64(),
        nth,
        "backend ejected after consecutive failures"
    );
    let pool = pool.clone();
    // Timed from now, not from when the task first runs.
    let until = Instant::now() + length;
    tokio::spawn(async move {
        tokio::time::sleep_until(until).await;
        let Some(outliers) = &pool.outliers else {
            return;
        };
        let backend = &pool.backends[index];
        if outliers.time_served(&backend.health, pool.health_check.is_some()) {
            tracing::info!(
                pool = &*pool.name,
                backend = &*backend.address,
                "ejected backend returned"
            );
        }
        tokio::time::sleep(outliers.forgiveness()).await;
        outliers.forgive(&backend.health, nth);
    });
}

/// Which retry condition (`retry.on`) an attempt's outcome meets, if any.
pub fn retry_condition(result: &Outcome) -> Option<Condition> {
    match result {
        Ok((response, _)) => match response.status().as_u16() {
            502 => Some(Condition::Status502),
            503 => Some(Condition::Status503),
            504 => Some(Condition::Status504),
            _ => None,
        },
        Err(ProxyError::Connect(_)) => Some(Condition::ConnectFailure),
        Err(ProxyError::Upstream(e)) if is_stale_connection(&**e) => Some(Condition::Reset),
        Err(ProxyError::Upstream(_)) => Some(Condition::Status502),
        Err(ProxyError::Timeout) => Some(Condition::Status504),
        Err(_) => None,
    }
}

/// The `retry.on` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    ConnectFailure,
    Reset,
    Status502,
    Status503,
    Status504,
}

impl Condition {
    pub fn allowed_by(self, on: &RetryOn) -> bool {
        match self {
            Condition::ConnectFailure => on.connect_failure,
            Condition::Reset => on.reset,
            Condition::Status502 => on.status_502,
            Condition::Status503 => on.status_503,
            Condition::Status504 => on.status_504,
        }
    }
}

/// The response head on its way, from one client or the other.
// The large variant is the common one: boxing it would allocate per request to save bytes only
// the rarer one wastes.
#[allow(clippy::large_enum_variant)]
enum Pending {
    Hyper(ResponseFuture),
    H1(h1::Exchange),
}

impl std::future::Future for Pending {
    type Output = Result<BackendResponse, Failure>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::ready;
        use std::task::Poll;
        match self.get_mut() {
            Pending::Hyper(future) => {
                Poll::Ready(match ready!(std::pin::Pin::new(future).poll(cx)) {
                    Ok(response) => Ok(response.map(FromBackend::Hyper)),
                    Err(e) => Err(Failure::Client(e)),
                })
            }
            Pending::H1(exchange) => {
                Poll::Ready(match ready!(std::pin::Pin::new(exchange).poll(cx)) {
                    Ok(response) => Ok(response.map(FromBackend::H1)),
                    Err(e) => Err(Failure::H1(e)),
                })
            }
        }
    }
}

enum Failure {
    Client(legacy::Error),
    H1(h1::Error),
    Timeout,
}

impl Failure {
    fn into_proxy_error(self) -> ProxyError {
        match self {
            Failure::Timeout => ProxyError::Timeout,
            Failure::H1(h1::Error::Connect(e)) => ProxyError::Connect(e.into()),
            Failure::H1(e) => ProxyError::Upstream(e.into()),
            Failure::Client(e) if e.is_connect() => ProxyError::Connect(e.into()),
            Failure::Client(e) => match body_error(&e) {
                Some(BodyError::TooLarge) => ProxyError::BodyTooLarge,
                Some(BodyError::TimedOut) => ProxyError::BodyTimeout,
                // The client's own body was malformed or cut: not the backend's fault.
                Some(BodyError::Client(_)) => ProxyError::BadRequest("invalid request body\n"),
                // Superseded: only an abandoned attempt's body says so, never the live one's.
                Some(BodyError::Superseded) | None => ProxyError::Upstream(e.into()),
            },
        }
    }
}

pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The connection died before any response byte: closed, reset or cut mid-message. On a
/// pooled connection this is the keep-alive race, not a verdict on the backend.
fn is_stale_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = e.downcast_ref::<legacy::Error>() {
        if e.is_connect() {
            return false;
        }
    }
    if let Some(e) = e.downcast_ref::<h1::Error>() {
        return e.is_stale_connection();
    }
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return h1::is_stale_io(io);
        }
        source = err.source();
    }
    false
}

/// The request-body failure behind an upstream error, if that is what it was.
fn body_error(e: &legacy::Error) -> Option<&BodyError> {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(body) = err.downcast_ref::<BodyError>() {
            return Some(body);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{self, Algorithm, OutlierDetection};

    fn pool() -> Arc<Pool> {
        let backends = (0..2)
            .map(|i| config::Backend {
                address: format!("127.0.0.1:{}", 10_000 + i),
                resolved: format!("127.0.0.1:{}", 10_000 + i).parse().unwrap(),
                weight: 1,
            })
            .collect();
        let mut cfg = config::Pool::with_defaults("p", Algorithm::RoundRobin, backends);
        cfg.outlier_detection = Some(OutlierDetection {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(10),
            max_ejected_percent: 100,
        });
        Arc::new(Pool::new(&cfg, 1))
    }

    /// Lets the ejection timer run after the clock moved.
    async fn advance(by: Duration) {
        tokio::time::advance(by).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// How long backend 0 stays out after one more failure, in whole seconds.
    async fn ejection_secs(pool: &Arc<Pool>) -> u64 {
        let health = &pool.backends[0].health;
        record_outcome(pool, 0, false);
        assert!(!health.available(), "ejected");
        let mut secs = 0;
        while !health.available() {
            advance(Duration::from_secs(1)).await;
            secs += 1;
            assert!(secs <= 1000, "never returned");
        }
        secs
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_are_timed_double_when_repeated_and_are_forgiven() {
        let pool = pool();
        let lengths = [
            ejection_secs(&pool).await,
            ejection_secs(&pool).await,
            ejection_secs(&pool).await,
            ejection_secs(&pool).await,
            ejection_secs(&pool).await,
            ejection_secs(&pool).await,
        ];
        assert_eq!(lengths, [10, 20, 40, 80, 100, 100]);
        // In for the longest ejection (10 × base) since returning: a first ejection again.
        advance(Duration::from_secs(101)).await;
        assert_eq!(ejection_secs(&pool).await, 10);
        // Successes in between do not shorten anything, and the other backend never left.
        assert!(pool.backends[1].health.available());
    }
}
