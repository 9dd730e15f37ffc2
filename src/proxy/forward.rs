//! The exchange with a backend: build the upstream request, send it with the pool's timeouts,
//! and retry the one failure a client must never see: a pooled keep-alive connection that the
//! backend closed at the moment it was reused.

use std::error::Error as _;
use std::io;

use http::request::Parts;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy;

use super::body::{BodyError, UpstreamBody};
use super::error::ProxyError;
use crate::upstream::{Backend, Pool};

/// Extra attempts on a fresh connection after a stale pooled one failed. Each stale connection
/// fails at once, so a small bound covers a backend that closed several idle connections.
const STALE_RETRIES: usize = 2;

/// Sends `parts` + `body` to `backend` and returns its response head (the body streams on).
pub async fn send(
    pool: &Pool,
    worker: usize,
    backend: &Backend,
    mut parts: Parts,
    body: UpstreamBody,
) -> Result<Response<Incoming>, ProxyError> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(backend.authority.clone());
    uri.path_and_query = Some(path);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
    parts.version = Version::HTTP_11;

    // Only a request that can be sent again identically may be retried: idempotent and with no
    // body. Its head is copied up front, since the client consumes the request.
    let replay = (is_idempotent(&parts.method) && matches!(body, UpstreamBody::Empty)).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });

    let client = pool.client(worker);
    let deadline = tokio::time::Instant::now() + pool.timeouts.request;
    let mut result = attempt(client, deadline, Request::from_parts(parts, body)).await;
    if let Some((method, uri, headers)) = replay {
        for _ in 0..STALE_RETRIES {
            match &result {
                Err(Failure::Client(e)) if is_stale_connection(e) => {}
                _ => break,
            }
            tracing::debug!(backend = %backend.address, "pooled connection was closed; retrying on a fresh one");
            let mut req = Request::new(UpstreamBody::Empty);
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            *req.headers_mut() = headers.clone();
            result = attempt(client, deadline, req).await;
        }
    }
    result.map_err(Failure::into_proxy_error)
}

enum Failure {
    Client(legacy::Error),
    Timeout,
}

impl Failure {
    fn into_proxy_error(self) -> ProxyError {
        match self {
            Failure::Timeout => ProxyError::Timeout,
            Failure::Client(e) if e.is_connect() => ProxyError::Connect(e),
            Failure::Client(e) => match body_error(&e) {
                Some(BodyError::TooLarge) => ProxyError::BodyTooLarge,
                // The client's own body was malformed or cut: not the backend's fault.
                Some(BodyError::Client(_)) => ProxyError::BadRequest("invalid request body\n"),
                None => ProxyError::Upstream(e),
            },
        }
    }
}

async fn attempt(
    client: &crate::upstream::UpstreamClient,
    deadline: tokio::time::Instant,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, Failure> {
    match tokio::time::timeout_at(deadline, client.request(req)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(Failure::Client(e)),
        Err(_) => Err(Failure::Timeout),
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The connection died before any response byte: closed, reset or cut mid-message. On a
/// pooled connection this is the keep-alive race, not a verdict on the backend.
fn is_stale_connection(e: &legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
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
