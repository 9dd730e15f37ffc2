//! The admin API on `admin.bind`: `GET /healthz`, `GET /api/pools` (`pools.rs`),
//! `GET /api/config`, `POST /api/reload`, `GET /metrics` (`crate::metrics`), the status page
//! `GET /` with its data `GET /api/status` (`status.rs`), and the bearer-token check that
//! guards every endpoint but `/healthz` and the status page's HTML (which holds no data);
//! `GET`/`PUT /api/log-level` in `log_level.rs`. Endpoints that change anything take POST (or
//! DELETE, or PUT for the log level) only; other methods get 405 with an `Allow` header.

mod log_level;
mod pools;
mod reload;
mod status;
pub(crate) mod timestamp;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::reload::control::{ControlHandle, Trigger};
use crate::state::Shared;

/// Admin connections open at once; beyond it new ones are closed at once, so a flood of idle
/// admin connections cannot use up the process's file descriptors.
const MAX_CONNECTIONS: usize = 64;

/// Admin request bodies (registrations) larger than this are refused.
const MAX_BODY: usize = 64 * 1024;

/// Serves the admin API until `shutdown`.
pub async fn serve(
    socket: std::net::TcpListener,
    settings: config::Admin,
    shared: Arc<Shared>,
    control: ControlHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(socket)?;
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let settings = Arc::new(settings);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many admin connections; closing");
            continue;
        };
        let (settings, shared, shutdown) = (settings.clone(), shared.clone(), shutdown.clone());
        let control = control.clone();
        tracker.spawn(async move {
            let timeout = settings.header_read_timeout;
            let service = service_fn(move |req| {
                let (settings, shared, control) =
                    (settings.clone(), shared.clone(), control.clone());
                async move { Ok::<_, Infallible>(handle(&settings, &shared, &control, req).await) }
            });
            // HTTP/1 only: hyper's header-read timer then runs from the connection's start, so
            // a client that connects and says nothing is closed too.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn handle(
    settings: &config::Admin,
    shared: &Shared,
    control: &ControlHandle,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    if req.method() == Method::GET && path == "/" {
        // Without the token: the page is a static shell, and a browser cannot add a header
        // to a typed-in URL. Its data comes from `/api/status`, which needs the token.
        return status_page();
    }
    if let Some(token) = &settings.token {
        if !authorized(&req, token) {
            let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if path == "/api/log-level" {
        return log_level::answer(shared, req).await;
    }
    let method = req.method().clone();
    if let Some(rest) = path.strip_prefix("/api/pools/") {
        let rest = rest.to_string();
        return registration(control, &method, &rest, req).await;
    }
    match path {
        "/api/pools" if method == Method::GET => json(
            StatusCode::OK,
            pools::json(&shared.snapshot(), &shared.draining()),
        ),
        "/api/config" if method == Method::GET => json(StatusCode::OK, config_json(shared)),
        "/api/reload" if method == Method::POST => {
            let result = control.reload(Trigger::Api).await;
            reload::answer(result, shared.snapshot().generation)
        }
        "/metrics" if method == Method::GET => metrics(shared),
        "/api/status" if method == Method::GET => {
            let mut response = json(StatusCode::OK, status::json(shared));
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        "/api/pools" | "/api/config" | "/metrics" | "/healthz" | "/" | "/api/status" => {
            not_allowed("GET")
        }
        "/api/reload" => not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "no such admin endpoint\n"),
    }
}

/// `POST /api/pools/{pool}/backends` and `DELETE /api/pools/{pool}/backends/{address}`.
async fn registration(
    control: &ControlHandle,
    method: &Method,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let answer = match (segments.as_slice(), method) {
        ([pool, backends], &Method::POST) if backends == "backends" && !pool.is_empty() => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => {
                    return text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body is too large or broken\n",
                    )
                }
            };
            control.register(pool.clone(), body).await
        }
        ([_, backends], _) if backends == "backends" => return not_allowed("POST"),
        ([pool, backends, address], &Method::DELETE) if backends == "backends" => {
            control.deregister(pool.clone(), address.clone()).await
        }
        ([_, backends, _], _) if backends == "backends" => return not_allowed("DELETE"),
        _ => return text(StatusCode::NOT_FOUND, "no such admin endpoint\n"),
    };
    json(
        answer.status,
        serde_json::to_vec_pretty(&answer.body).unwrap_or_default(),
    )
}

/// Decodes `%XX` escapes (`%3A` for `:` in an address); anything malformed stays as written.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// `GET /api/config`: the running config (secrets redacted), its generation and load time.
fn config_json(shared: &Shared) -> Vec<u8> {
    let snapshot = shared.snapshot();
    let body = serde_json::json!({
        "generation": snapshot.generation,
        "loaded_at": timestamp::rfc3339(snapshot.loaded_at),
        "source": snapshot.config.source.display().to_string(),
        "config": snapshot.config.to_json(),
    });
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}

/// `GET /metrics`, Prometheus text format (`metrics::render`).
fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(crate::metrics::render::render(
        shared,
    ))));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /`: the status page. Its policy lets it run its own inline script and style and talk
/// to this admin listener only, so nothing on it can load from or send to anywhere else.
fn status_page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(status::PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The token may be in the page's URL (`/?token=`): never send it on as a referrer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Compares the bearer token in constant time, so response timing reveals nothing about it.
fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
