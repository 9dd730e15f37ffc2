//! Which protocol a downstream connection speaks, and hyper's server for it: HTTP/1.1 or
//! HTTP/2 (ALPN on HTTPS; in clear text, whether the first bytes read are the HTTP/2 preface),
//! and the dormant state of an idle HTTP/1 connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::watched::WatchedIo;
use super::{h1, opening, poll_again, ConnState, ListenerSettings};
use crate::config;
use crate::proxy::Proxy;
use crate::tls::Downstream;

/// The protocol a connection speaks. On HTTPS, what ALPN chose (HTTP/1.1 without ALPN, as
/// nginx and Envoy do). In plain text, HTTP/2 when the client's first bytes are the HTTP/2
/// preface (prior knowledge), HTTP/1.1 as soon as they differ from it; the bytes read to tell
/// are handed back, for hyper to read first. The first request head must arrive within the
/// listener's `header_read_timeout`, so the wait for these bytes is bounded by it. `None`: the
/// connection is closed.
pub(super) async fn protocol(
    settings: &ListenerSettings,
    stream: &mut Downstream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<(Protocol, Bytes)> {
    let stream = match stream {
        Downstream::Tls(tls) => {
            let protocol = match tls.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            return Some((protocol, Bytes::new()));
        }
        Downstream::Plain(stream) => stream,
    };
    opening(
        settings,
        peer,
        shutdown,
        "finding the protocol",
        sniff(stream),
    )
    .await
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
pub(super) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// What a connection's first bytes say about its protocol; `None` while they are a proper
/// prefix of the HTTP/2 preface and more must be waited for.
pub(super) fn classify(first: &[u8], ended: bool) -> Option<Protocol> {
    let n = first.len().min(PREFACE.len());
    if first[..n] != PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == PREFACE.len() {
        Some(Protocol::Http2)
    } else if ended {
        // The client will send nothing more: hyper's HTTP/1 side reads what there is and
        // closes the connection as HTTP/1 would.
        Some(Protocol::Http1)
    } else {
        None
    }
}

/// What one read of a connection's first bytes asks for: most request heads fit, so hyper
/// finds the whole head in them and reads the socket again only for the next request.
const FIRST_READ: usize = 4096;

/// Reads the first bytes of a plain-text connection and classifies them; returns them with the
/// protocol, for hyper to read first. They are read, not peeked: peeking would cost every
/// connection a second system call to read the same bytes again.
pub(super) async fn sniff(stream: &mut TcpStream) -> io::Result<(Protocol, Bytes)> {
    use tokio::io::AsyncReadExt;
    let mut first = Vec::new();
    loop {
        stream.readable().await?;
        // Allocated only once the socket is readable, not for a connection still silent.
        first.reserve(FIRST_READ);
        // Through tokio's `poll_read`, which notes that a short read emptied the socket: hyper's
        // first read of it then waits instead of asking the kernel for nothing.
        let ended = stream.read_buf(&mut first).await? == 0;
        // A proper prefix of the preface waits for more: it is at most 23 bytes.
        if let Some(protocol) = classify(&first, ended) {
            return Ok((protocol, Bytes::from(first)));
        }
    }
}

/// The most bytes an HTTP/1 request head may take before hyper (or sluice's own side, which
/// leaves it to hyper then) stops reading it. Room for the largest allowed head, so sluice's
/// own checks answer 414 and 431 with a body and a request id; only far larger heads meet
/// hyper's bare 431.
fn max_head(settings: &config::Listener) -> usize {
    settings
        .max_header_bytes
        .saturating_add(settings.max_uri_bytes)
        .saturating_add(1024)
        .max(8192)
}

pub(super) fn http1_builder(settings: &config::Listener) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The watchdog times heads and idle connections; hyper's timer would fight it.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(max_head(settings));
    builder
}

pub(super) fn http2_builder(settings: &config::Listener) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // Bounded cost per connection: at most 100 streams at once, modest flow-control windows
        // (what one client may make sluice buffer), streams reset before they were served
        // counted (a rapid-reset flood ends the connection with ENHANCE_YOUR_CALM), and a
        // peer that stops answering pings closed.
        .max_concurrent_streams(100)
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(Some(20))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(settings.max_header_bytes.min(u32::MAX as usize) as u32)
        // RFC 8441: WebSockets over HTTP/2 (`proxy::upgrade`).
        .enable_connect_protocol();
    builder
}

pub(super) type ServedIo = TokioIo<WatchedIo>;

/// One downstream connection as it is served, in the protocol it was found to speak: HTTP/1
/// by sluice's own side (`h1`) until a request needs hyper's, HTTP/2 by hyper. An HTTP/2
/// connection's state is several KiB and lives on the heap, so that the idle HTTP/1
/// connections that are most of a listener's do not each carry room for it in their task.
#[allow(clippy::large_enum_variant)] // hyper's HTTP/1 inline: a connection that needed it once
                                     // is likely to need it again.
pub(super) enum Served {
    /// sluice's own HTTP/1 side, with the connection's state (for its wind-down signal).
    Own(h1::Serving, Arc<ConnState>),
    Http1(http1::UpgradeableConnection<ServedIo, Proxy>),
    Http2(Pin<Box<http2::Connection<ServedIo, Proxy, TokioExecutor>>>),
    /// An idle HTTP/1 connection in clear text without hyper's connection and its buffers: the
    /// socket and the service, until the client sends again (`REST_AFTER`).
    Dormant(ServedIo, Proxy),
    /// Only while changing from one of the others to another.
    Changing,
}

impl Served {
    pub(super) fn new(
        settings: &ListenerSettings,
        protocol: Protocol,
        io: ServedIo,
        proxy: Proxy,
    ) -> Served {
        match protocol {
            Protocol::Http1 => {
                let state = io.inner().state.clone();
                Served::Own(h1::serve(io, proxy), state)
            }
            Protocol::Http2 => Served::Http2(Box::pin(settings.http2.serve_connection(io, proxy))),
        }
    }

    /// Serves until the connection ends. An HTTP/1 request sluice's own side does not take goes
    /// to a hyper connection made for it. An HTTP/1 connection that ends dormant
    /// (`state.dormant`) becomes `Dormant`, and is served by sluice's own side again once the
    /// client sends again.
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        settings: &ListenerSettings,
        state: &ConnState,
    ) -> Poll<hyper::Result<()>> {
        loop {
            let done = match self {
                Served::Own(serving, _) => {
                    let ended = std::task::ready!(serving.as_mut().poll(cx));
                    *self = match ended {
                        h1::Ended::Closed => return Poll::Ready(Ok(())),
                        h1::Ended::HandOff(io, proxy) => Served::Http1(
                            settings.http1.serve_connection(io, proxy).with_upgrades(),
                        ),
                        h1::Ended::Rest(io, proxy) => Served::Dormant(io, proxy),
                    };
                    continue;
                }
                Served::Http1(conn) => {
                    let polled = Pin::new(&mut *conn).poll(cx);
                    // Asked to wind down just before handing a request over: hyper's
                    // connection, busy with it now, finishes it and then closes (or rests).
                    if polled.is_pending() && state.winding_down.swap(false, Ordering::Relaxed) {
                        Pin::new(conn).graceful_shutdown();
                        return poll_again(cx);
                    }
                    std::task::ready!(polled)
                }
                Served::Http2(conn) => return conn.as_mut().poll(cx),
                Served::Dormant(io, _) => {
                    let Downstream::Plain(stream) = &io.inner().stream else {
                        return Poll::Ready(Ok(()));
                    };
                    // Data, or the end of the stream: a new hyper connection reads it. Bytes
                    // hyper had read and not used are waiting already.
                    if io.inner().replay.is_empty() {
                        std::task::ready!(stream.poll_read_ready(cx)).ok();
                    }
                    let Served::Dormant(io, proxy) = std::mem::replace(self, Served::Changing)
                    else {
                        return Poll::Ready(Ok(()));
                    };
                    state.dormant.store(false, Ordering::Relaxed);
                    *self = Served::new(settings, Protocol::Http1, io, proxy);
                    continue;
                }
                Served::Changing => return Poll::Ready(Ok(())),
            };
            if done.is_err() || !state.dormant.load(Ordering::Relaxed) {
                return Poll::Ready(done);
            }
            // hyper closed its end for dormancy: keep the socket and the service.
            let Served::Http1(conn) = std::mem::replace(self, Served::Changing) else {
                return Poll::Ready(Ok(()));
            };
            let Some(parts) = conn.into_parts() else {
                return Poll::Ready(Ok(()));
            };
            let mut io = parts.io;
            // A copy: even empty, hyper's `Bytes` can hold its whole read buffer. (Scanned
            // already, when hyper read them.)
            io.inner_mut().replay = bytes::Bytes::copy_from_slice(&parts.read_buf);
            io.inner_mut().scan_replay = false;
            *self = Served::Dormant(io, parts.service);
        }
    }

    /// Whether the connection may go dormant once idle: HTTP/1, not already going dormant, and
    /// not a WebSocket tunnel (its socket belongs to the tunnel).
    pub(super) fn may_rest(&self, state: &ConnState) -> bool {
        matches!(self, Served::Http1(_) | Served::Own(..))
            && !state.dormant.load(Ordering::Relaxed)
            && !state.tunnel.load(Ordering::Relaxed)
    }

    /// Finish what is in flight, then close (HTTP/2: GOAWAY first).
    pub(super) fn graceful_shutdown(&mut self) {
        match self {
            // Seen by sluice's side when it next polls (`serve` has the task polled again).
            Served::Own(_, state) => state.winding_down.store(true, Ordering::Relaxed),
            Served::Http1(conn) => Pin::new(conn).graceful_shutdown(),
            Served::Http2(conn) => conn.as_mut().graceful_shutdown(),
            Served::Dormant(..) | Served::Changing => {}
        }
    }

    /// Nothing of the connection is left to finish: a dormant connection is closed at once.
    pub(super) fn is_dormant(&self) -> bool {
        matches!(self, Served::Dormant(..))
    }
}
