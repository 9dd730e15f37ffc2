//! sluice's own HTTP/1.1 server side, for the requests that are most of a proxy's traffic:
//! `GET` (and `HEAD`) with no body, no upgrade and no `Expect`. It reads and parses the head, hands the
//! request to the proxy and writes the answer, without hyper's dispatcher and its header-map
//! encoder; a backend's answer through sluice's own client (`upstream::h1`) is written from the
//! fields as they came, with no header map built in between (`RawFields`). Together, 11% fewer
//! instructions per small proxied request (`docs/performance.md`).
//!
//! Anything else, and anything it cannot parse, goes to hyper's HTTP/1 server with every byte
//! read so far (`Ended::HandOff`): hyper then serves the connection from that request on, with
//! its answers to malformed heads, its request bodies, `100 Continue` and upgrades. Every byte
//! read still goes through the framing scanner and the connection's timers (`WatchedIo`), and
//! every request through the same `Proxy::serve` as hyper's, so the checks, the limits and the
//! answers are the same on both sides.

mod answer;
#[cfg(test)]
mod tests;

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use tokio::io::AsyncWriteExt;

use self::answer::respond;
use super::protocol::ServedIo;
use super::watched::WatchedIo;
use super::ConnState;
use crate::framing::Limits;
use crate::proxy::body::NoBody;
use crate::proxy::headers::{is_name, lists, spare_map};
use crate::proxy::Proxy;

/// How a connection served here ended.
pub(super) enum Ended {
    /// Closed, or failed: nothing more to serve.
    Closed,
    /// A request this side does not take: hyper serves the connection from it on. The bytes
    /// read and not yet used are the socket's replay.
    HandOff(ServedIo, Proxy),
    /// Idle and asked to rest (`ConnState::dormant`): the socket and the service wait dormant.
    Rest(ServedIo, Proxy),
}

pub(super) type Serving = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// Serves HTTP/1.1 on `io` until the connection ends or needs hyper.
pub(super) fn serve(io: ServedIo, proxy: Proxy) -> Serving {
    io.inner()
        .state
        .winding_down
        .store(false, Ordering::Relaxed);
    Box::pin(run(io, proxy))
}

/// What a first read allocates, as hyper's does; heads of up to the scanner's `max_head` grow it.
const READ_BUFFER: usize = 8192;

/// The most header fields a head read here may have (hyper's default too).
const MAX_HEADERS: usize = 100;

async fn run(mut io: ServedIo, proxy: Proxy) -> Ended {
    let state = io.inner().state.clone();
    // This side reads the heads itself, and the framing scanner sees only what it hands to
    // hyper: the heads served here have no body, so between them the scanner has nothing to
    // follow (and no verdict to give: `ClientBody::VOUCHED`). Unless the scanner is in the middle
    // of something, or the bytes waiting went through it already (hyper read them): then hyper
    // serves on.
    let unscanned = io.inner().replay.is_empty() || io.inner().scan_replay;
    let Some(limits) = unscanned.then(|| state.scanner_step_aside()).flatten() else {
        return Ended::HandOff(io, proxy);
    };
    io.inner_mut().scanning = false;
    let mut buf = BytesMut::new();
    take_replay(io.inner_mut(), &mut buf);
    let mut out = Vec::new();
    loop {
        // A request head, complete.
        let (request, close) = loop {
            if buf.is_empty() {
                if state.winding_down.load(Ordering::Relaxed) {
                    return wind_down(io, proxy, &state).await;
                }
            } else {
                match parse(&mut buf, &limits) {
                    Parsed::Request(request, close) => break (request, close),
                    // The head is not all here: its timer runs from now (`header_read_timeout`).
                    // A head read whole in one go is never timed, and costs no clock reading.
                    Parsed::Partial if buf.len() <= limits.max_head => state.on_read(),
                    Parsed::Partial => return hand_off(io, proxy, buf.split().freeze()),
                    Parsed::Other(read) => return hand_off(io, proxy, read),
                }
            }
            match read(io.inner_mut(), &mut buf, &state).await {
                Read::Data => {}
                Read::WindDown => return wind_down(io, proxy, &state).await,
                Read::End => return shut(io).await,
            }
        };
        let head = request.method() == Method::HEAD;
        let mut answer = proxy.serve(request);
        // The answer, while watching for the client going away (then the request is dropped,
        // as hyper drops it). Bytes of a next request are kept for after this one.
        let response = poll_fn(|cx| {
            if let Poll::Ready(Ok(response)) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if buf.is_empty() {
                make_room(&mut buf);
                match poll_read(io.inner_mut(), cx, &mut buf) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) | Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        drop(answer);
        let Some(response) = response else {
            return Ended::Closed;
        };
        // A wind-down to rest finishes this request and rests; any other closes after it.
        let closing = close
            || (state.winding_down.load(Ordering::Relaxed)
                && !state.dormant.load(Ordering::Relaxed));
        match respond(io.inner_mut(), response, head, closing, &mut out).await {
            Ok(true) => {}
            Ok(false) => return shut(io).await,
            Err(e) => {
                tracing::debug!(error = %e, "writing a response failed");
                return Ended::Closed;
            }
        }
    }
}

/// The connection was asked to wind down while idle: rest or close.
async fn wind_down(mut io: ServedIo, proxy: Proxy, state: &ConnState) -> Ended {
    match state.dormant.load(Ordering::Relaxed) {
        true => {
            // Whoever serves it next reads through the scanner, unless it steps aside again.
            io.inner_mut().scanning = true;
            Ended::Rest(io, proxy)
        }
        false => shut(io).await,
    }
}

/// Closes the connection: sluice's own answer to a refused head, if any, goes out first.
async fn shut(mut io: ServedIo) -> Ended {
    let _ = io.inner_mut().shutdown().await;
    Ended::Closed
}

/// hyper takes over: it reads `read` first, from the start of the head this side did not
/// serve, and the framing scanner sees every byte from there on, as if it had never stepped
/// aside (`run`).
fn hand_off(mut io: ServedIo, proxy: Proxy, read: Bytes) -> Ended {
    let inner = io.inner_mut();
    inner.replay = read;
    inner.scan_replay = true;
    inner.scanning = true;
    Ended::HandOff(io, proxy)
}

/// Takes the bytes read before this side had the connection (to find its protocol) into
/// `buf`.
fn take_replay(io: &mut WatchedIo, buf: &mut BytesMut) {
    let mut cx = Context::from_waker(Waker::noop());
    while !io.replay.is_empty() {
        buf.reserve(io.replay.len());
        // Never pending: the bytes are there.
        if !matches!(poll_read(io, &mut cx, buf), Poll::Ready(Ok(n)) if n > 0) {
            break;
        }
    }
}

enum Read {
    Data,
    /// The connection was asked to wind down before any byte of a head arrived.
    WindDown,
    /// The client closed, the read failed, or sluice answered a refused head itself.
    End,
}

/// Reads more of a head into `buf`.
async fn read(io: &mut WatchedIo, buf: &mut BytesMut, state: &ConnState) -> Read {
    poll_fn(|cx| {
        if buf.is_empty() && state.winding_down.load(Ordering::Relaxed) {
            return Poll::Ready(Read::WindDown);
        }
        make_room(buf);
        match std::task::ready!(poll_read(io, cx, buf)) {
            Ok(0) | Err(_) => Poll::Ready(Read::End),
            Ok(_) => Poll::Ready(Read::Data),
        }
    })
    .await
}

/// Room in `buf` for a read. Only when little is left: the room the buffer has may be shared
/// with the fields of a request in flight, and asking for more than there is would allocate a
/// new buffer rather than wait for them to go.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUFFER);
    }
}

/// One read into the spare capacity of `buf`.
fn poll_read(
    io: &mut WatchedIo,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

#[allow(clippy::large_enum_variant)] // returned in place: boxing would cost an allocation
enum Parsed {
    Partial,
    /// The request, and whether it asked for the connection to close after it.
    Request(Request<NoBody>, bool),
    /// Not a request this side serves: hyper's, with everything read.
    Other(Bytes),
}

/// Parses the request head at the start of `buf`. A head this side serves is taken off `buf`
/// (its fields share the bytes read, nothing is copied); one it does not leaves `buf` empty
/// and comes back with everything read. So does a head that may be past the framing scanner's
/// `limits`, for the scanner to refuse.
fn parse(buf: &mut BytesMut, limits: &Limits) -> Parsed {
    // Frozen, so that the fields can share it: most heads arrive whole, and what follows them
    // (rarely anything) goes back to `buf`.
    let read = buf.split().freeze();
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, &read, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            buf.extend_from_slice(&read);
            return Parsed::Partial;
        }
        Err(_) => return Parsed::Other(read),
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other(read),
    };
    if req.version != Some(1) {
        return Parsed::Other(read);
    }
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Other(read);
    };
    // The request line as the scanner counts it, line end included (leading empty lines, which
    // it leaves out, are in `len`: near a limit, the head is the scanner's to judge).
    let request_line = method.as_str().len() + path.len() + "  HTTP/1.1\r\n".len();
    if len > limits.max_head || request_line > limits.max_request_line {
        return Parsed::Other(read);
    }
    let Ok(uri) = Uri::from_maybe_shared(read.slice_ref(path.as_bytes())) else {
        return Parsed::Other(read);
    };
    let mut close = false;
    let mut headers = spare_map(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // Bodies, upgrades, `100 Continue` and trailers are hyper's.
        if is_name(name, b"content-length")
            || is_name(name, b"transfer-encoding")
            || is_name(name, b"upgrade")
            || is_name(name, b"expect")
            || is_name(name, b"te")
        {
            return Parsed::Other(read);
        }
        if is_name(name, b"connection") {
            if lists(h.value, b"upgrade") {
                return Parsed::Other(read);
            }
            close |= lists(h.value, b"close");
        }
        let name = HeaderName::from_bytes(name);
        let value = HeaderValue::from_maybe_shared(read.slice_ref(h.value));
        match (name, value) {
            (Ok(name), Ok(value)) => headers.append(name, value),
            _ => return Parsed::Other(read),
        };
    }
    if len < read.len() {
        // The start of a next request, sent before this one's answer.
        buf.extend_from_slice(&read[len..]);
    }
    let mut request = Request::new(NoBody::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Request(request, close)
}
