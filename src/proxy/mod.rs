//! The request service: one request's path from client to backend and back.
//!
//! `check -> route -> choose backend -> rewrite headers -> forward -> rewrite response`.
//! Every local answer goes through `local_answer`, so all carry a plain-text cause and an
//! `x-request-id` (gRPC calls get theirs from `grpc::local_answer`, as a gRPC status); every
//! request, answered locally or not, is one `Exchange`.

pub mod body;
mod choose;
pub mod error;
pub mod exchange;
mod forward;
pub mod grpc;
pub mod hash_key;
pub mod headers;
pub mod route;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use self::body::{ClientBody, FromBackend, ResponseBody, UpstreamBody};
use self::choose::{Shortage, Tried};
use self::error::ProxyError;
use self::exchange::{AccessRecord, Exchange, UpstreamStatus};
use self::headers::{trace, X_REQUEST_ID};
use crate::balance::Pick;
use crate::config::Protocol;
use crate::listener::ConnState;
use crate::state::{ListenerState, LocalSnapshot, Shared};
use crate::upstream::InFlight;

/// What a connection's requests share: where they came from and which worker serves them.
#[derive(Debug)]
pub struct ConnContext {
    pub shared: Arc<Shared>,
    /// The listener's id (`state::ListenerState::id`), stable across reloads.
    pub listener: usize,
    pub worker: usize,
    pub peer: SocketAddr,
    /// `X-Forwarded-For` value for this peer, made once per connection.
    pub peer_value: HeaderValue,
    pub conn: Arc<ConnState>,
    /// The TLS handshake's outcome on an HTTPS listener; `None` on plain HTTP.
    pub tls: Option<crate::tls::Session>,
    /// A WebSocket tunnel the connection's request opened, for the connection's task to run.
    pub tunnel: Arc<upgrade::Slot>,
    /// Where WebSocket tunnels over HTTP/2 streams run, beside their connection.
    pub runner: upgrade::Runner,
}

/// The hyper service of one downstream connection.
#[derive(Debug, Clone)]
pub struct Proxy(pub Arc<ConnContext>);

type Answer = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Proxy {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        self.serve(req)
    }
}

impl Proxy {
    /// Serves one request: hyper's (above), or a bodiless one that sluice's own HTTP/1 server
    /// side read (`listener::h1`). Everything up to the upstream exchange is synchronous, so it
    /// runs here; the returned future only awaits the backend's response head. That keeps the
    /// per-request future (boxed, as hyper needs one type) small.
    pub fn serve<B: ClientBody>(&self, req: Request<B>) -> Answer {
        let facts = headers::Facts::of(req.headers());
        let mut request = Started::new(&self.0, &req, &facts);
        let (mut outgoing, first) = match request.prepare(&self.0, req, facts) {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(std::future::ready(Ok(request.fail(&e)))),
        };
        let pool = &request.snapshot.pools[outgoing.pool];
        match choose::choose(pool, &outgoing.pick, &outgoing.tried) {
            Ok(choice) => {
                // Everything since the request was taken ran synchronously (microseconds): its
                // clock reading serves as the send time too, one reading fewer per request.
                let now = request.exchange.started();
                let upstream = request.start(&mut outgoing, first, choice, now);
                Box::pin(request.run(outgoing, upstream))
            }
            // Every backend that may take traffic is at its connection limit: wait for a slot.
            Err(Shortage::AtLimit) => Box::pin(async move {
                let pool = request.snapshot.pools[outgoing.pool].clone();
                let deadline = Instant::now() + pool.timeouts.connect;
                match choose::wait_for_slot(&pool, &outgoing.pick, &outgoing.tried, deadline).await
                {
                    Ok(choice) => {
                        let upstream = request.start(&mut outgoing, first, choice, Instant::now());
                        request.run(outgoing, upstream).await
                    }
                    Err(e) => Ok(request.fail(&e)),
                }
            }),
            Err(shortage) => Box::pin(std::future::ready(Ok(
                request.fail(&ProxyError::from(shortage))
            ))),
        }
    }
}

/// A request's head and a handle on its replayable body, kept for retries.
struct Again {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: UpstreamBody,
}

/// One attempt's request: the head and body to send.
struct Attempt {
    parts: http::request::Parts,
    body: UpstreamBody,
}

/// A checked, routed and rewritten request on its way to a backend, with what another attempt
/// would need. (The first attempt's own request is apart, an `Attempt`: this stays in the
/// request's future to its answer, and that future is kept under 1 KiB, the largest size
/// glibc's allocator serves from its per-thread cache: past it, each box cost ~300
/// instructions more.)
struct Outgoing {
    pool: usize,
    worker: usize,
    pick: Pick,
    /// What a retry sends again (pools with retries only). Boxed, like `upgrade`: rare, and
    /// the per-request future stays small (it is moved as a whole).
    again: Option<Box<Again>>,
    idempotent: bool,
    tried: Tried,
    retries: u32,
    /// A gRPC call's deadline (`grpc-timeout`): no attempt waits for a response head past it.
    deadline: Option<Instant>,
    /// A WebSocket upgrade request: never retried; a 101 opens the tunnel.
    upgrade: Option<Box<upgrade::Pending>>,
    /// The headers sluice adds, for every attempt; taken by the last (`Started::start`).
    added: Option<headers::Added>,
    /// The backend's response fields may stay unparsed (`ClientBody::RAW_FIELDS`; not for gRPC,
    /// whose answers sluice adds a `Trailer` to when the backend sent none).
    raw_fields: bool,
}

/// A request that has arrived: what its answer needs, whichever way it goes.
struct Started {
    snapshot: LocalSnapshot,
    listener: usize,
    version: Version,
    request_id: HeaderValue,
    /// A gRPC call: sluice's own answers are gRPC statuses.
    grpc: bool,
    exchange: Exchange,
    /// `Strict-Transport-Security` for the answer (HTTPS connections with `hsts` set).
    hsts: Option<HeaderValue>,
}

impl Started {
    fn new<B>(ctx: &ConnContext, req: &Request<B>, facts: &headers::Facts) -> Started {
        let version = req.version();
        let active = ctx.conn.request_started(version == Version::HTTP_2);
        let snapshot = ctx.shared.request_snapshot();
        // `usize::MAX` when a reload removed the listener while this connection drains.
        let listener = snapshot.listener_index(ctx.listener).unwrap_or(usize::MAX);
        let request_id = match &facts.request_id {
            Some(id) if !id.is_empty() && id.len() <= 200 => headers::detach(id),
            _ => headers::new_request_id(),
        };
        let log = snapshot.access_log.then(|| {
            Box::new(AccessRecord {
                listener: snapshot
                    .listeners
                    .get(listener)
                    .map_or_else(|| Arc::from(""), |l| l.name.clone()),
                client: ctx.peer,
                method: req.method().clone(),
                host: headers::request_host(req).and_then(|h| HeaderValue::from_str(h).ok()),
                path: req.uri().path().to_owned(),
                request_id: request_id.clone(),
                trace_id: None,
                user_agent: req.headers().get(header::USER_AGENT).map(headers::detach),
                referer: req.headers().get(header::REFERER).map(headers::detach),
                pool: None,
                upstream: None,
                retries: 0,
                upstream_status: UpstreamStatus::default(),
                bytes_in: None,
                aborted: false,
            })
        });
        let hsts = ctx.tls.as_ref().and_then(|_| {
            let l = snapshot.listeners.get(listener)?;
            l.hsts.clone()
        });
        Started {
            hsts,
            listener,
            version,
            request_id,
            grpc: facts.grpc,
            exchange: Exchange::new(active, &snapshot, listener, log),
            snapshot,
        }
    }

    /// Checks, routes and rewrites the request for its backend.
    fn prepare<B: ClientBody>(
        &mut self,
        ctx: &ConnContext,
        mut req: Request<B>,
        facts: headers::Facts,
    ) -> Result<(Outgoing, Attempt), ProxyError> {
        // Every HTTP/1 head hyper read has a framing verdict, taken in order, whatever happens
        // next. (sluice's own side checks the heads it serves itself.)
        if self.version != Version::HTTP_2 && !B::VOUCHED {
            ctx.conn.framing_verdict()?;
        }
        let snapshot = &self.snapshot;
        let listener = snapshot
            .listeners
            .get(self.listener)
            .ok_or(ProxyError::ListenerGone)?;
        let exchange = &mut self.exchange;
        // RFC 8441: an HTTP/2 WebSocket arrives as `CONNECT` with `:protocol websocket`; from
        // here on it is the `GET` it goes to the backend as.
        let connect = upgrade::Pending::connect(&mut req, &ctx.runner);
        let trace = match facts.own.traceparent() {
            true => trace::Incoming::of(req.headers()),
            false => trace::Incoming::Missing,
        };
        if let (trace::Incoming::Valid(id), Some(log)) = (trace, exchange.log_mut()) {
            log.trace_id = Some(id);
        }
        check_limits(listener, &req, facts.head_bytes)?;
        headers::check_request_with(&req, &facts)?;
        if listener.redirect_https && ctx.tls.is_none() {
            return Err(redirect_https(&req));
        }
        let (hop_by_hop, own) = (facts.hop_by_hop, facts.own);
        let host_header = facts.host;

        let host = match &host_header {
            Some(h) => h.to_str().ok(),
            None => req.uri().authority().map(|a| a.as_str()),
        };
        if ctx.tls.as_ref().is_some_and(|tls| !tls.serves(host)) {
            return Err(ProxyError::Misdirected);
        }
        let route = listener
            .router
            .find(host, req.uri().path())
            .ok_or(ProxyError::NoRoute)?;
        // A declared length over the route's (or else the listener's) limit: 413 before any
        // backend is contacted. A body of unknown length is counted as it streams.
        let body_limit = route.max_body_bytes.unwrap_or(listener.max_body_bytes);
        if let (Some(limit), Some(len)) = (body_limit, req.body().size_hint().exact()) {
            if len > limit {
                return Err(ProxyError::BodyTooLarge);
            }
        }
        let pool_index = route.pool;
        let pool = &snapshot.pools[pool_index];
        exchange.set_pool(pool_index);
        if let Some(log) = exchange.log_mut() {
            log.pool = Some(pool.name.clone());
        }

        let upgrade = match hop_by_hop.upgrade() {
            true => connect.or_else(|| upgrade::Pending::of(&mut req, &ctx.tunnel)),
            false => connect,
        };
        let pick = Pick {
            key: pool
                .hash_key
                .as_ref()
                .and_then(|k| hash_key::key_of(k, req.headers(), req.uri(), ctx.peer.ip())),
        };
        let (mut parts, body) = req.into_parts();
        let host_value = match host_header {
            Some(h) => Some(h),
            // HTTP/2 names the host in `:authority`; HTTP/1.1 to the backend needs `Host`.
            None => {
                let authority = parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
                if let Some(a) = &authority {
                    parts.headers.insert(header::HOST, a.clone());
                }
                authority
            }
        };
        let body = upstream_body(
            listener,
            body_limit,
            body.into_incoming(),
            exchange,
            &ctx.conn,
        );
        headers::strip_present_hop_by_hop(&mut parts.headers, hop_by_hop);
        if let Some(upgrade) = &upgrade {
            upgrade.restore(&mut parts.headers);
        }
        // (`auto`: the connection may turn out HTTP/1.1; on HTTP/2 hyper drops the header.)
        if pool.protocol != Protocol::H2
            && !body.is_end_stream()
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            // hyper's client sends no body at all for a GET of unknown length unless told.
            // (HTTP/2 frames bodies itself and forbids the header.)
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let origin = headers::Origin {
            peer: &ctx.peer_value,
            trusted: listener
                .trusted_proxies
                .iter()
                .any(|net| net.contains(ctx.peer.ip())),
            proto: if ctx.tls.is_some() { "https" } else { "http" },
        };
        let (trace_id, traceparent) = trace::outgoing(&mut parts.headers, trace, own.tracestate());
        if let Some(log) = exchange.log_mut() {
            log.trace_id = Some(trace_id);
        }
        // Added to the head as it is sent (`forward::Upstream::start`), not to the map.
        let added = headers::Added::take(&mut parts.headers, own, origin, host_value, traceparent);

        let idempotent = forward::is_idempotent(&parts.method);
        let deadline = match self.grpc {
            true => grpc::timeout(&parts.headers).map(|t| Instant::now() + t),
            false => None,
        };
        let (body, again) = match &pool.retry {
            Some(policy) if policy.settings.attempts > 0 && upgrade.is_none() => {
                policy.deposit();
                let replayable = body.replayable();
                let first = replayable.replay();
                let again = Again {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    headers: parts.headers.clone(),
                    body: replayable,
                };
                (first, Some(Box::new(again)))
            }
            _ => (Some(body), None),
        };
        let first = Attempt {
            parts,
            body: body.unwrap_or(UpstreamBody::Empty),
        };
        let outgoing = Outgoing {
            pool: pool_index,
            worker: ctx.worker,
            pick,
            again,
            idempotent,
            tried: Tried::default(),
            retries: 0,
            deadline,
            upgrade: upgrade.map(Box::new),
            added: Some(added),
            raw_fields: B::RAW_FIELDS && !self.grpc,
        };
        Ok((outgoing, first))
    }

    /// Sends `attempt` to the chosen backend, whose slot `choice` holds; `now`: the clock.
    fn start(
        &mut self,
        out: &mut Outgoing,
        Attempt { parts, body }: Attempt,
        (index, slot): (usize, InFlight),
        now: Instant,
    ) -> forward::Upstream {
        out.tried.add(index);
        self.exchange.set_backend(slot);
        let pool = &self.snapshot.pools[out.pool];
        let timed = self.exchange.log_mut().is_some();
        // An attempt without a copy kept for another is the last: it takes the added headers,
        // which go once it is sent. Kept to the answer, their `X-Forwarded-Host` (a slice of
        // hyper's read buffer, see `headers::detach`) made hyper allocate a new buffer for
        // the connection's next request.
        let last;
        let added = match out.again {
            Some(_) => out.added.as_ref(),
            None => {
                last = out.added.take();
                last.as_ref()
            }
        }
        .expect("no attempt follows the last");
        let request = forward::Outbound {
            parts,
            upgrade: out.upgrade.is_some(),
            added,
            request_id: &self.request_id,
            body,
            raw_fields: out.raw_fields,
        };
        forward::Upstream::start(out.pool, out.worker, index, pool, request, timed, now)
            .limit(out.deadline)
    }

    /// Runs attempts until one gives the client's answer.
    ///
    /// An `async` block rather than an `async fn`: an `async fn` moves its arguments into
    /// locals of its own, so its future held each of them twice (the request's future was
    /// 3 952 bytes, copied as a whole into its box); the block uses them where they are.
    #[allow(clippy::manual_async_fn)] // see above: the `async fn` form is what doubled it
    fn run(
        mut self,
        mut out: Outgoing,
        mut upstream: forward::Upstream,
    ) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
        async move {
            loop {
                let result = upstream.finish(&self.snapshot, self.exchange.conn()).await;
                if let Some(log) = self.exchange.log_mut() {
                    let status = result.as_ref().ok().map(|(r, _)| r.status().as_u16());
                    log.upstream_status.push(status);
                    log.retries = out.retries;
                }
                match self.retry(&mut out, &result) {
                    Some(next) => upstream = next,
                    None => {
                        return Ok(match out.upgrade.take() {
                            Some(pending) => upgrade::respond(self, result, *pending),
                            None => self.respond(result),
                        })
                    }
                }
            }
        }
    }

    /// Another attempt on another backend, if the pool's retry policy allows one for this
    /// outcome; `None` leaves `result` as the answer.
    fn retry(
        &mut self,
        out: &mut Outgoing,
        result: &forward::Outcome,
    ) -> Option<forward::Upstream> {
        let pool = &self.snapshot.pools[out.pool];
        let policy = pool.retry.as_ref()?;
        let condition = forward::retry_condition(result)?;
        if out.deadline.is_some_and(|d| Instant::now() >= d) {
            // The client has stopped waiting.
            return None;
        }
        if out.retries >= policy.settings.attempts || !condition.allowed_by(&policy.settings.on) {
            return None;
        }
        // Only a request that provably never reached a backend may be sent twice whatever its
        // method.
        if !out.idempotent && condition != forward::Condition::ConnectFailure {
            return None;
        }
        let again = out.again.as_ref()?;
        if !again.body.can_replay() {
            return None;
        }
        if !policy.withdraw() {
            tracing::debug!(pool = &*pool.name, "retry budget spent; not retrying");
            return None;
        }
        let Ok(choice) = choose::choose(pool, &out.pick, &out.tried) else {
            policy.refund();
            return None;
        };
        let Some(body) = again.body.replay() else {
            policy.refund();
            return None;
        };
        let mut head = Request::new(());
        *head.method_mut() = again.method.clone();
        *head.uri_mut() = again.uri.clone();
        *head.headers_mut() = again.headers.clone();
        let attempt = Attempt {
            parts: head.into_parts().0,
            body,
        };
        out.retries += 1;
        tracing::debug!(
            pool = &*pool.name,
            from = ?condition,
            retry = out.retries,
            "retrying on another backend"
        );
        Some(self.start(out, attempt, choice, Instant::now()))
    }

    /// The client's answer from the backend's response, or a local answer for a failure.
    fn respond(mut self, result: forward::Outcome) -> Response<ResponseBody> {
        match result {
            Ok((mut response, upstream_time)) => {
                // sluice's own client leaves them out as it reads the head, usually.
                if !matches!(response.body(), FromBackend::H1(b) if b.hop_by_hop_removed()) {
                    headers::strip_hop_by_hop(response.headers_mut());
                }
                if self.grpc && self.version != Version::HTTP_2 {
                    grpc::announce_trailers(response.headers_mut());
                }
                set_own(&mut response, &X_REQUEST_ID, self.request_id);
                if let Some(hsts) = self.hsts {
                    set_own(&mut response, &headers::STRICT_TRANSPORT_SECURITY, hsts);
                }
                self.exchange.set_status(response.status());
                if let Some(log) = self.exchange.log_mut() {
                    log.upstream = upstream_time;
                }
                let exchange = self.exchange;
                response.map(|body| ResponseBody::upstream(body, exchange))
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(self, e: &ProxyError) -> Response<ResponseBody> {
        if e.origin() == error::Origin::Backend {
            let listener = self.snapshot.listeners.get(self.listener);
            let listener = listener.map_or("", |l| &*l.name);
            tracing::warn!(listener, error = %e, "upstream request failed");
        }
        let mut response = match self.grpc {
            true => grpc::local_answer(e, self.request_id, Some(self.exchange)),
            false => local_answer(e, self.request_id, Some(self.exchange)),
        };
        if let Some(hsts) = self.hsts {
            let headers = response.headers_mut();
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        if self.version == Version::HTTP_2 {
            // Connection-specific headers are malformed in HTTP/2.
            response.headers_mut().remove(header::CONNECTION);
        }
        response
    }
}

/// Sets a field of sluice's own in a backend's answer: in its unparsed fields when they were
/// left so (`RawFields::set`, no map made for it), else in its map.
fn set_own(response: &mut forward::BackendResponse, name: &'static HeaderName, value: HeaderValue) {
    let raw = match response.body_mut() {
        FromBackend::H1(body) => body.raw_fields_mut(),
        _ => None,
    };
    let value = match raw {
        Some(raw) => match raw.set(name, value) {
            Ok(()) => return,
            Err(value) => value,
        },
        None => value,
    };
    response.headers_mut().insert(name.clone(), value);
}

/// Limits hyper does not enforce the way the SPEC wants: URI length (414) and head size (431).
/// (The body limit depends on the route: checked once it is known.)
fn check_limits<B>(
    listener: &ListenerState,
    req: &Request<B>,
    header_bytes: usize,
) -> Result<(), ProxyError> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > listener.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let head = req.method().as_str().len() + uri_len + header_bytes;
    if head > listener.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    Ok(())
}

fn upstream_body(
    listener: &ListenerState,
    limit: Option<u64>,
    body: Option<Incoming>,
    exchange: &mut Exchange,
    conn: &Arc<ConnState>,
) -> UpstreamBody {
    let Some(body) = body.filter(|body| !body.is_end_stream()) else {
        return UpstreamBody::Empty;
    };
    let counter = exchange.log_mut().map(|log| {
        let counter = Arc::new(AtomicU64::new(0));
        log.bytes_in = Some(counter.clone());
        counter
    });
    UpstreamBody::Streaming {
        inner: body,
        allowed: limit.unwrap_or(u64::MAX),
        counter,
        conn: conn.clone(),
        timeout: listener.request_body_timeout,
        stall: None,
    }
}

/// An answer sluice makes itself: the status, a short plain-text cause, the request id, and
/// `Connection: close` when the request's framing cannot be trusted.
pub fn local_answer(
    e: &ProxyError,
    request_id: HeaderValue,
    mut exchange: Option<Exchange>,
) -> Response<ResponseBody> {
    let status = e.status();
    if let Some(exchange) = exchange.as_mut() {
        exchange.set_status(status);
        exchange.set_local();
    }
    let mut response = Response::new(ResponseBody::local(e.body(), exchange));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_REQUEST_ID.clone(), request_id);
    if e.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let ProxyError::HttpsRedirect(location) = e {
        headers.insert(header::LOCATION, location.clone());
    }
    response
}

/// `redirect_https`: 308 to `https://HOST/path?query`, HOST from `Host` (or `:authority`)
/// without its port, so the redirect goes to the default HTTPS port 443.
fn redirect_https<B>(req: &Request<B>) -> ProxyError {
    let Some(host) = headers::request_host(req) else {
        return ProxyError::BadRequest("no Host to redirect to https\n");
    };
    let host = crate::tls::strip_port(host);
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match HeaderValue::from_str(&format!("https://{host}{path}")) {
        Ok(location) => ProxyError::HttpsRedirect(location),
        Err(_) => ProxyError::BadRequest("invalid Host\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request's future (`Started::run`) holds these three and the exchange's own future
    /// (under 200 bytes: `forward::Upstream::finish` borrows). Boxed per request, it must stay
    /// within glibc's per-thread cache (1 032 bytes); past it, each box cost ~300 instructions
    /// more. (`-Zprint-type-sizes` on nightly shows the future's whole layout.)
    #[test]
    fn the_request_future_fits_the_allocator_cache() {
        let held = std::mem::size_of::<Outgoing>()
            + std::mem::size_of::<forward::Upstream>()
            + std::mem::size_of::<Started>();
        assert!(held + 200 <= 1024, "{held} bytes held across the await");
    }
}
