//! WebSocket over HTTP/1.1 (and from HTTP/2 clients): which requests may upgrade, what their
//! headers keep, and the byte tunnel that opens once a backend answers `101 Switching
//! Protocols`.
//!
//! An upgrade request is forwarded like any other, except that `Connection: upgrade` and its
//! `Upgrade` value survive hop-by-hop removal and it is never retried. Only a 101 from the
//! backend opens the tunnel; any other answer goes back as a normal response. The tunnel then
//! runs in the downstream connection's own task (`listener::serve` picks it up from the
//! connection's `Slot` once hyper has handed the socket over), so it is tracked by the worker's
//! `TaskTracker`, keeps its `server.max_connections` slot, and holds the request's `Exchange`:
//! the backend's in-flight count stays up and the access-log line (status 101) is written when
//! the tunnel ends.
//!
//! From HTTP/2 clients a WebSocket arrives as an RFC 8441 extended CONNECT (`:protocol
//! websocket`). It goes to the backend as the HTTP/1.1 handshake, with a key sluice makes and
//! whose `Sec-WebSocket-Accept` it checks; a 101 becomes the client's 200, and the tunnel joins
//! the stream to the backend's connection. As the HTTP/2 connection keeps serving other streams,
//! that tunnel runs in its own task on the worker's `TaskTracker` (`Runner`). Masking is the
//! same over both protocols, so bytes are copied unchanged either way.

use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::ResponseBody;
use super::error::ProxyError;
use super::exchange::Exchange;
use super::headers::{self, X_REQUEST_ID};
use super::Started;
use crate::state::Shared;

/// How long closing a tunnel's two connections (close frames, FIN) may take before they are
/// dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A tunnel closes this much before the shutdown grace period ends: the worker stops (and
/// drops whatever still runs) when the grace period ends, and the close frames must go out
/// before that.
const GOODBYE_MARGIN: Duration = Duration::from_millis(100);

/// Where a connection's request service leaves an opened tunnel for the connection's task.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Option<Tunnel>>);

impl Slot {
    fn put(&self, tunnel: Tunnel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    /// The tunnel the connection's last request opened, if any.
    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Where WebSocket tunnels over HTTP/2 run. An HTTP/2 connection goes on serving other streams
/// while one of its streams is a tunnel, so the tunnel cannot wait for the connection to end:
/// it runs in its own task on the worker's `TaskTracker`, with the connection's idle timeout
/// and shutdown token. (The connection itself stays open while the tunnel's stream is.)
#[derive(Debug, Clone)]
pub struct Runner {
    pub tracker: tokio_util::task::TaskTracker,
    pub shutdown: CancellationToken,
    pub idle: Duration,
    pub shared: Arc<Shared>,
}

/// A WebSocket upgrade request on its way to a backend.
#[derive(Debug)]
pub struct Pending {
    client: OnUpgrade,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// HTTP/1.1 Upgrade: the request's `Upgrade` value, forwarded as it came; the tunnel is
    /// left in the connection's slot.
    Upgrade {
        protocol: HeaderValue,
        slot: Arc<Slot>,
    },
    /// RFC 8441 extended CONNECT over HTTP/2, sent to the backend as an HTTP/1.1 Upgrade with
    /// this `Sec-WebSocket-Key` (sluice's own); the tunnel runs on `runner`.
    Connect { key: HeaderValue, runner: Runner },
}

impl Pending {
    /// `Some` for a WebSocket upgrade request: HTTP/1.1 `GET` with `Connection: upgrade` and
    /// `Upgrade: websocket`. Other upgrades (`h2c` is refused earlier) are not tunnelled: their
    /// headers are stripped and the request goes on as a plain one.
    pub fn of<B>(req: &mut Request<B>, slot: &Arc<Slot>) -> Option<Pending> {
        if req.version() != Version::HTTP_11 || req.method() != Method::GET {
            return None;
        }
        let headers = req.headers();
        if !has_token(headers, header::CONNECTION, b"upgrade") {
            return None;
        }
        let mut values = headers.get_all(header::UPGRADE).iter();
        let protocol = values.next()?.clone();
        if values.next().is_some() || !is_websocket(&protocol) {
            return None;
        }
        Some(Pending {
            client: hyper::upgrade::on(req),
            kind: Kind::Upgrade {
                protocol,
                slot: slot.clone(),
            },
        })
    }

    /// `Some` for an RFC 8441 WebSocket request: HTTP/2 `CONNECT` with `:protocol websocket`.
    /// The request becomes the `GET` it is sent to the backend as; any other `CONNECT` is left
    /// alone (and refused).
    pub fn connect<B>(req: &mut Request<B>, runner: &Runner) -> Option<Pending> {
        if req.version() != Version::HTTP_2 || req.method() != Method::CONNECT {
            return None;
        }
        let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
        if !protocol
            .as_str()
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
        {
            return None;
        }
        *req.method_mut() = Method::GET;
        Some(Pending {
            client: hyper::upgrade::on(&mut *req),
            kind: Kind::Connect {
                key: new_key(),
                runner: runner.clone(),
            },
        })
    }

    /// Puts back what hop-by-hop removal took and the backend needs to see (for extended
    /// CONNECT: the whole HTTP/1.1 handshake, with sluice's key).
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        match &self.kind {
            Kind::Upgrade { protocol, .. } => {
                headers.insert(header::UPGRADE, protocol.clone());
            }
            Kind::Connect { key, .. } => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
                headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            }
        }
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 section 4.1). The key only
/// proves the backend speaks WebSocket; it needs no secrecy, so `RandomState`'s per-instance
/// random keys are random enough.
fn new_key() -> HeaderValue {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
    bytes[8..].copy_from_slice(&state.hash_one(2u8).to_le_bytes());
    HeaderValue::from_str(&base64(&bytes)).expect("base64 is a valid header value")
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with: base64 of the SHA-1 of the key
/// and the RFC 6455 GUID.
fn accept_of(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64(ctx.finish().as_ref())
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `value` lists `websocket` as its only protocol (RFC 6455 section 4.1).
fn is_websocket(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"websocket")
}

/// Some `name` header lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .any(|value| headers::lists(value.as_bytes(), token))
}

/// The client's answer to an upgrade request: a backend's 101 opens the tunnel (left in the
/// connection's slot, or run beside an HTTP/2 connection), anything else is answered as usual.
pub(super) fn respond(
    started: Started,
    result: super::forward::Outcome,
    pending: Pending,
) -> Response<ResponseBody> {
    let (response, upstream_time) = match result {
        Ok((response, time)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            (response, time)
        }
        // To an HTTP/2 client any 2xx would mean the tunnel is open: only a 101 may say so.
        Ok((response, _))
            if response.status().is_success() && matches!(pending.kind, Kind::Connect { .. }) =>
        {
            return started.fail(&ProxyError::BadSwitch);
        }
        other => return started.respond(other),
    };
    let agreed = response
        .headers()
        .get(header::UPGRADE)
        .filter(|v| is_websocket(v))
        .cloned();
    let Some(protocol) = agreed else {
        // hyper would switch the client's connection on any 101: never to something it did
        // not ask for.
        return started.fail(&ProxyError::BadSwitch);
    };
    // Upgrades always take hyper's client (`forward::Upstream::start`).
    let (head, body) = response.into_parts();
    let Some(body) = body.into_hyper() else {
        return started.fail(&ProxyError::BadSwitch);
    };
    let mut response = Response::from_parts(head, body);
    let backend = hyper::upgrade::on(&mut response);
    let (slot, runner) = match pending.kind {
        Kind::Upgrade { slot, .. } => (Some(slot), None),
        Kind::Connect { key, runner } => {
            // sluice made the backend's handshake, so it checks the answer a client would.
            let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
            if accept.is_none_or(|a| a.as_bytes() != accept_of(key.as_bytes()).as_bytes()) {
                return started.fail(&ProxyError::BadSwitch);
            }
            (None, Some(runner))
        }
    };
    let mut exchange = started.exchange;
    if let Some(log) = exchange.log_mut() {
        log.upstream = upstream_time;
    }
    let tunnel = |exchange| Tunnel {
        client: pending.client,
        backend,
        exchange,
    };
    if let Some(runner) = runner {
        // RFC 8441 section 5: a 200 opens the stream's tunnel; the negotiated subprotocol and
        // extensions are end-to-end, nothing else of the 101 is.
        let mut answer = Response::new(ResponseBody::local("", None));
        let headers = answer.headers_mut();
        for name in [
            header::SEC_WEBSOCKET_PROTOCOL,
            header::SEC_WEBSOCKET_EXTENSIONS,
        ] {
            for value in response.headers().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(X_REQUEST_ID.clone(), started.request_id.clone());
        if let Some(hsts) = started.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts);
        }
        exchange.set_status(StatusCode::OK);
        let tunnel = tunnel(exchange);
        let Runner {
            tracker,
            shutdown,
            idle,
            shared,
        } = runner;
        tracker.spawn(async move { tunnel.run(idle, &shutdown, &shared).await });
        return answer;
    }
    let headers = response.headers_mut();
    headers::strip_hop_by_hop(headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    headers.insert(X_REQUEST_ID.clone(), started.request_id.clone());
    exchange.set_status(StatusCode::SWITCHING_PROTOCOLS);
    // From here on the client's bytes are WebSocket frames, not HTTP heads.
    exchange.conn().open_tunnel();
    if let Some(slot) = slot {
        slot.put(tunnel(exchange));
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, ResponseBody::local("", None))
}

/// An opened tunnel: both connections once hyper hands them over, and the request it belongs
/// to.
#[derive(Debug)]
pub struct Tunnel {
    client: OnUpgrade,
    backend: OnUpgrade,
    exchange: Exchange,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides closed (each close is passed on to the other side).
    Closed,
    Failed,
    /// No byte either way for the idle timeout.
    Idle,
    /// Shutdown (or a reload removing the listener), after the grace period.
    Shutdown,
}

impl Tunnel {
    /// Copies bytes both ways until both sides have closed, either fails, nothing moves for
    /// `idle`, or `shutdown`'s grace period (`server.shutdown_timeout`) runs out. Then closes
    /// both connections and ends the exchange.
    pub async fn run(self, idle: Duration, shutdown: &CancellationToken, shared: &Shared) {
        let Tunnel {
            client,
            backend,
            mut exchange,
        } = self;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                exchange.mark_aborted();
                return;
            }
        };
        let activity = Activity::new();
        let mut client = Counted::new(TokioIo::new(client), &activity);
        let mut backend = Counted::new(TokioIo::new(backend), &activity);
        let grace = || shared.snapshot().config.server.shutdown_timeout;
        let end = pump(&mut client, &mut backend, &activity, idle, shutdown, grace).await;
        if end != End::Closed {
            // A close frame (1001, going away) to each side whose stream stands between
            // frames, then FIN; a side cut mid-frame just sees the connection close (1006).
            let close = async {
                tokio::join!(
                    say_goodbye(&mut client, &GOING_AWAY_FROM_SERVER),
                    say_goodbye(&mut backend, &GOING_AWAY_FROM_CLIENT)
                )
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
        }
        tracing::debug!(
            end = ?end,
            bytes_in = client.read,
            bytes_out = backend.read,
            "websocket tunnel closed"
        );
        if end == End::Failed {
            exchange.mark_aborted();
        }
        exchange.add_bytes_out(backend.read);
        if let Some(log) = exchange.log_mut() {
            log.bytes_in = Some(Arc::new(AtomicU64::new(client.read)));
        }
    }
}

/// The copy loop: `grace` gives the shutdown grace period when shutdown begins (the running
/// config's, which a reload may have changed since the tunnel opened).
async fn pump<A, B>(
    client: &mut A,
    backend: &mut B,
    activity: &Activity,
    idle: Duration,
    shutdown: &CancellationToken,
    grace: impl Fn() -> Duration,
) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut copy = pin!(tokio::io::copy_bidirectional(client, backend));
    let mut idle_timer = pin!(tokio::time::sleep(idle));
    let mut grace_timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = &mut copy => {
                return match result {
                    Ok(_) => End::Closed,
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket tunnel failed");
                        End::Failed
                    }
                };
            }
            () = &mut idle_timer => {
                // Timed from the last byte read; re-armed rather than reset on every read.
                let due = activity.last() + idle;
                if due <= Instant::now() {
                    return End::Idle;
                }
                idle_timer.as_mut().reset(due);
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                let left = grace().saturating_sub(GOODBYE_MARGIN);
                grace_timer.as_mut().reset(Instant::now() + left);
            }
            () = &mut grace_timer, if stopping => return End::Shutdown,
        }
    }
}

/// A close frame with status 1001 (going away), as a server sends it: unmasked.
const GOING_AWAY_FROM_SERVER: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];
/// The same as a client must send it: masked (RFC 6455 section 5.3; the key is fixed, which
/// the receiver cannot tell from a random one, and the payload is public anyway).
const GOING_AWAY_FROM_CLIENT: [u8; 8] = [
    0x88,
    0x82,
    MASK[0],
    MASK[1],
    MASK[2],
    MASK[3],
    0x03 ^ MASK[0],
    0xe9 ^ MASK[1],
];
const MASK: [u8; 4] = [0x5a, 0x1c, 0x93, 0x2e];

/// Sends `frame` if this side's stream stands between frames, then shuts its write side down.
async fn say_goodbye<T: AsyncWrite + Unpin>(side: &mut Counted<'_, T>, frame: &[u8]) {
    if side.written.at_boundary() && side.io.write_all(frame).await.is_err() {
        return;
    }
    let _ = side.io.shutdown().await;
}

/// Follows a stream of WebSocket frames (RFC 6455 section 5.2) far enough to know whether it
/// stands between two frames: only the headers' length fields are read.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes of the current frame's header seen so far (at most 14).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload: u64,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload == 0
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload > 0 {
                let n = self.payload.min(bytes.len() as u64);
                self.payload -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.header_done() {
                self.payload = payload;
                self.have = 0;
            }
        }
    }

    /// The payload length once the whole header is in.
    fn header_done(&self) -> Option<u64> {
        if self.have < 2 {
            return None;
        }
        let b1 = self.header[1];
        let (extended, mask) = (
            match b1 & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            },
            if b1 & 0x80 != 0 { 4 } else { 0 },
        );
        if self.have < 2 + extended + mask {
            return None;
        }
        Some(match extended {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
        })
    }
}

/// When a tunnel last moved a byte, shared by its two connections.
struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// One side of a tunnel: counts the bytes read from it and notes when they arrived. Every
/// byte written to one side was first read from the other, so reads alone tell activity.
struct Counted<'a, T> {
    io: T,
    activity: &'a Activity,
    read: u64,
    /// Where the bytes written to this side stand in the WebSocket framing.
    written: Frames,
}

impl<'a, T> Counted<'a, T> {
    fn new(io: T, activity: &'a Activity) -> Self {
        Counted {
            io,
            activity,
            read: 0,
            written: Frames::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            this.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            this.written.feed(&buf[..n]);
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
