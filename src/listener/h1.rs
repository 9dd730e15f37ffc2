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

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body;
use tokio::io::AsyncWriteExt;

use super::protocol::ServedIo;
use super::watched::WatchedIo;
use super::ConnState;
use crate::proxy::body::{NoBody, ResponseBody};
use crate::proxy::Proxy;
use crate::upstream::h1::{parse_length, write_field, RawFields};

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

/// Serves HTTP/1.1 on `io` until the connection ends or needs hyper. `max_head`: the most bytes
/// a head may take before hyper is left to refuse it (hyper's `max_buf_size`).
pub(super) fn serve(io: ServedIo, proxy: Proxy, max_head: usize) -> Serving {
    io.inner()
        .state
        .winding_down
        .store(false, Ordering::Relaxed);
    Box::pin(run(io, proxy, max_head))
}

/// What a first read allocates, as hyper's does; heads of up to `max_head` grow it.
const READ_BUFFER: usize = 8192;

/// The most header fields a head read here may have (hyper's default too).
const MAX_HEADERS: usize = 100;

async fn run(mut io: ServedIo, proxy: Proxy, max_head: usize) -> Ended {
    let state = io.inner().state.clone();
    let mut buf = BytesMut::new();
    take_replay(io.inner_mut(), &mut buf);
    let mut out = Vec::new();
    loop {
        // A request head, complete.
        let (request, close) = loop {
            if buf.is_empty() && state.winding_down.load(Ordering::Relaxed) {
                return wind_down(io, proxy, &state).await;
            }
            match parse(&mut buf) {
                Parsed::Request(request, close) => break (request, close),
                Parsed::Partial if buf.len() < max_head => {}
                Parsed::Partial => return hand_off(io, proxy, buf.split().freeze()),
                Parsed::Other(read) => return hand_off(io, proxy, read),
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
async fn wind_down(io: ServedIo, proxy: Proxy, state: &ConnState) -> Ended {
    match state.dormant.load(Ordering::Relaxed) {
        true => Ended::Rest(io, proxy),
        false => shut(io).await,
    }
}

/// Closes the connection: sluice's own answer to a refused head, if any, goes out first.
async fn shut(mut io: ServedIo) -> Ended {
    let _ = io.inner_mut().shutdown().await;
    Ended::Closed
}

/// hyper takes over: it reads `read` first (scanned already: the socket's replay was all
/// taken at the start, `take_replay`).
fn hand_off(mut io: ServedIo, proxy: Proxy, read: Bytes) -> Ended {
    let inner = io.inner_mut();
    inner.replay = read;
    inner.scan_replay = false;
    Ended::HandOff(io, proxy)
}

/// Takes the bytes read before this side had the connection (to find its protocol, or by
/// hyper before it rested) into `buf`, through the socket's scanner.
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
/// and comes back with everything read.
fn parse(buf: &mut BytesMut) -> Parsed {
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
    let Ok(uri) = Uri::from_maybe_shared(read.slice_ref(path.as_bytes())) else {
        return Parsed::Other(read);
    };
    let mut close = false;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // Bodies, upgrades, `100 Continue` and trailers are hyper's.
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"te")
        {
            return Parsed::Other(read);
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other(read);
                }
            }
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

/// How the answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// No body follows the head.
    None,
    Length(u64),
    Chunked,
}

/// Writes `response`; `closing`: the connection closes after it. `Ok(true)`: the connection
/// can serve another request.
async fn respond(
    io: &mut WatchedIo,
    response: Response<ResponseBody>,
    head: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    out.clear();
    let raw = body.take_raw_fields();
    let (framing, close) = encode_head(&parts, raw.as_deref(), &body, head, closing, out);
    drop((parts, raw));
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    // The exchange ends with the body (in-flight counts, metrics, the access log): dropped as
    // soon as its last piece is in hand, before that piece goes out, so that a client that has
    // its answer finds it counted.
    let mut body = match framing {
        Framing::None | Framing::Length(0) => None,
        _ => Some(body),
    };
    // The head waits in `out` to go out with the body's first piece.
    let mut head_pending = true;
    let mut complete = true;
    while let Some(piece) = body.as_mut() {
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *piece).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                // Nothing to add yet: what there is goes out while the body waits.
                if head_pending {
                    write_all(io, &[out]).await?;
                    head_pending = false;
                }
                io.flush().await?;
                poll_fn(|cx| Pin::new(&mut *piece).poll_frame(cx)).await
            }
        };
        let head: &[u8] = if head_pending { out } else { &[] };
        match frame {
            Some(Ok(frame)) => {
                // Trailers: HTTP/1.1 answers here carry none (requests that ask for them,
                // with `TE`, are hyper's).
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if framing == Framing::Chunked {
                    if data.is_empty() {
                        continue;
                    }
                    let mut size = [0u8; 18];
                    let line = chunk_size(&mut size, data.len());
                    write_all(io, &[head, line, &data, b"\r\n"]).await?;
                } else {
                    let take = data
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    if take < data.len() {
                        // More than the length said: the rest is dropped, the connection closed.
                        complete = false;
                    }
                    remaining -= take as u64;
                    if remaining == 0 || !complete {
                        body = None;
                    }
                    write_all(io, &[head, &data[..take]]).await?;
                }
            }
            None if framing == Framing::Chunked => {
                body = None;
                write_all(io, &[head, b"0\r\n\r\n"]).await?;
            }
            // Cut short, or failed: the client must not take what it got for all of it.
            None | Some(Err(_)) => {
                if let Some(Err(e)) = frame {
                    tracing::debug!(error = %e, "response body failed");
                }
                body = None;
                complete = false;
                write_all(io, &[head]).await?;
            }
        }
        head_pending = false;
    }
    if head_pending {
        write_all(io, &[out]).await?;
    }
    io.flush().await?;
    Ok(complete && !close)
}

/// The chunk-size line for `len` bytes, in `buf`.
fn chunk_size(buf: &mut [u8; 18], len: usize) -> &[u8] {
    let mut i = buf.len() - 2;
    buf[i..].copy_from_slice(b"\r\n");
    let mut n = len;
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Writes every byte of `parts`, in as few system calls as the socket allows.
async fn write_all(io: &mut WatchedIo, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: [IoSlice<'_>; 4] = [IoSlice::new(&[]); 4];
    let mut n = 0;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        slices[n] = IoSlice::new(part);
        n += 1;
    }
    let mut slices = &mut slices[..n];
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// Encodes the status line and header fields as hyper's HTTP/1 server would: the length from
/// `Content-Length`, or else the body's exact size, or else chunked; a `Date`; `Connection:
/// close` when `closing`. The answer to a `HEAD` (`head`), and a 1xx, 204 or 304, has no body: a
/// `Content-Length` given is passed on as it is. A backend's fields left unparsed (`raw`) are
/// written as they came, names in the backend's case as nginx and HAProxy pass them, except
/// those the map sets (sluice's own, which take their place). Returns the framing and whether
/// the connection closes after this answer.
fn encode_head(
    parts: &http::response::Parts,
    raw: Option<&RawFields>,
    body: &ResponseBody,
    head: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut fields = Fields {
        out,
        bodiless: bodiless || head,
        listed_close: false,
        length: None,
        lengths_agree: true,
        wrote_date: false,
    };
    for (name, value) in raw.into_iter().flat_map(RawFields::iter) {
        let set = |k: &HeaderName| {
            let k = k.as_str().as_bytes();
            k.len() == name.len() && name.eq_ignore_ascii_case(k)
        };
        if !parts.headers.keys().any(set) {
            fields.add(name, value);
        }
    }
    for (name, value) in &parts.headers {
        fields.add(name.as_str().as_bytes(), value.as_bytes());
    }
    let Fields {
        out,
        listed_close,
        length,
        lengths_agree,
        wrote_date,
        ..
    } = fields;
    let framing = if bodiless {
        Framing::None
    } else if head {
        // The length a `GET` would have had, when the answer says it and no field did.
        let exact = body.size_hint().exact().filter(|_| !body.is_end_stream());
        if let (None, Some(n)) = (length, exact) {
            let mut digits = [0u8; 20];
            write_field(out, &header::CONTENT_LENGTH, decimal(&mut digits, n));
        }
        Framing::None
    } else {
        let length = match length {
            Some(n) if lengths_agree => Some(n),
            _ if body.is_end_stream() => Some(0),
            _ => body.size_hint().exact(),
        };
        match length {
            Some(n) => {
                let mut digits = [0u8; 20];
                write_field(out, &header::CONTENT_LENGTH, decimal(&mut digits, n));
                Framing::Length(n)
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        }
    };
    if closing && !listed_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        http_date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, closing || listed_close)
}

/// The header fields of an answer as they are written, and what they said.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    /// The answer has no body (1xx, 204, 304, or to a `HEAD`): a `Content-Length` is passed on
    /// as it is.
    bodiless: bool,
    listed_close: bool,
    /// The `Content-Length` given (written once, after the fields, when there is a body).
    length: Option<u64>,
    lengths_agree: bool,
    wrote_date: bool,
}

impl Fields<'_> {
    /// One field, its name as given.
    fn add(&mut self, name: &[u8], value: &[u8]) {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            14 if is("content-length") => {
                match (parse_length(value), self.length) {
                    (Some(n), None) => self.length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => self.lengths_agree = false,
                }
                if !self.bodiless {
                    // Written once, after the fields.
                    return;
                }
            }
            // The body is framed here.
            17 if is("transfer-encoding") => return,
            10 if is("connection") => self.listed_close |= has_close(value),
            4 if is("date") => self.wrote_date = true,
            _ => {}
        }
        let out = &mut *self.out;
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a `Connection` value lists `close`.
fn has_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// `n` in decimal, in `buf`.
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The `Date` field's value (RFC 9110, IMF-fixdate), made once a second per thread.
mod http_date {
    use std::cell::RefCell;

    use super::*;

    const LEN: usize = 29;

    thread_local! {
        static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
    }

    /// Appends the current date.
    pub(super) fn extend(out: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != now {
                *cached = (now, format(now));
            }
            out.extend_from_slice(&cached.1);
        });
    }

    /// `secs` after the Unix epoch as `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub(super) fn format(secs: u64) -> [u8; LEN] {
        const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let days = secs / 86_400;
        let of_day = secs % 86_400;
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let mut out = [0u8; LEN];
        out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
        out[3..5].copy_from_slice(b", ");
        two(&mut out[5..7], day as u64);
        out[7] = b' ';
        out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
        out[11] = b' ';
        let year = year.clamp(0, 9999) as u64;
        two(&mut out[12..14], year / 100);
        two(&mut out[14..16], year % 100);
        out[16] = b' ';
        two(&mut out[17..19], of_day / 3_600);
        out[19] = b':';
        two(&mut out[20..22], of_day / 60 % 60);
        out[22] = b':';
        two(&mut out[23..25], of_day % 60);
        out[25..].copy_from_slice(b" GMT");
        out
    }

    fn two(out: &mut [u8], n: u64) {
        out[0] = b'0' + (n / 10 % 10) as u8;
        out[1] = b'0' + (n % 10) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(
            &http_date::format(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(&http_date::format(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &http_date::format(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            &http_date::format(1_795_305_599),
            b"Sat, 21 Nov 2026 23:59:59 GMT"
        );
    }

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0; 18];
        assert_eq!(chunk_size(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_size(&mut buf, 255), b"ff\r\n");
        assert_eq!(chunk_size(&mut buf, 65_536), b"10000\r\n");
    }

    fn head_of(status: u16, fields: &[(&str, &str)], body: &'static str, closing: bool) -> String {
        answer_head(false, status, fields, body, closing)
    }

    fn answer_head(
        head: bool,
        status: u16,
        fields: &[(&str, &str)],
        body: &'static str,
        closing: bool,
    ) -> String {
        let mut response = Response::new(ResponseBody::local(body, None));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in fields {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            response
                .headers_mut()
                .append(name, HeaderValue::from_str(value).unwrap());
        }
        let (parts, body) = response.into_parts();
        let mut out = Vec::new();
        let (framing, close) = encode_head(&parts, None, &body, head, closing, &mut out);
        format!("{framing:?} {close}\n{}", String::from_utf8(out).unwrap())
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let head = head_of(200, &[("x-a", "1"), ("date", "d")], "hello", false);
        assert_eq!(
            head,
            "Length(5) false\nHTTP/1.1 200 OK\r\nx-a: 1\r\ndate: d\r\ncontent-length: 5\r\n\r\n"
        );
        // The header's length is the one sent, once; a `Transfer-Encoding` is never passed on.
        let head = head_of(
            404,
            &[
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
                ("content-length", "5"),
            ],
            "hello",
            false,
        );
        assert!(
            head.starts_with(
                "Length(5) false\nHTTP/1.1 404 Not Found\r\ncontent-length: 5\r\ndate: "
            ),
            "{head}"
        );
        assert!(!head.contains("transfer-encoding"), "{head}");
        // 204 and 304 have no body; a 304 keeps the length of what it stands for.
        let head = head_of(304, &[("content-length", "99")], "", false);
        assert!(
            head.starts_with("None false\nHTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n"),
            "{head}"
        );
        let head = head_of(204, &[], "", false);
        assert!(
            head.starts_with("None false\nHTTP/1.1 204 No Content\r\ndate: "),
            "{head}"
        );
        // An empty body is a length of 0.
        assert!(head_of(200, &[], "", false)
            .starts_with("Length(0) false\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n"));
    }

    #[test]
    fn answers_to_head_say_the_length_and_carry_no_body() {
        // A backend's length is passed on as it is; the body (empty) is not framed.
        let head = answer_head(true, 200, &[("content-length", "1234")], "", false);
        assert!(
            head.starts_with("None false\nHTTP/1.1 200 OK\r\ncontent-length: 1234\r\ndate: "),
            "{head}"
        );
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        // sluice's own answer says the length its body has, and sends none of it.
        let head = answer_head(true, 404, &[], "hello", false);
        assert!(
            head.starts_with("None false\nHTTP/1.1 404 Not Found\r\ncontent-length: 5\r\n"),
            "{head}"
        );
        // Nothing known, nothing said: no `content-length: 0` for a `HEAD`.
        let head = answer_head(true, 200, &[], "", false);
        assert!(!head.contains("content-length"), "{head}");
    }

    #[test]
    fn closing_says_so_once() {
        let head = head_of(200, &[], "x", true);
        assert_eq!(head.matches("connection: close\r\n").count(), 1, "{head}");
        assert!(head.starts_with("Length(1) true\n"), "{head}");
        let head = head_of(400, &[("connection", "close")], "x", true);
        assert_eq!(head.matches("connection: close\r\n").count(), 1, "{head}");
        // A local answer that closes the connection closes it here too.
        assert!(
            head_of(400, &[("connection", "close")], "x", false).starts_with("Length(1) true\n")
        );
        let head = head_of(200, &[("connection", "keep-alive")], "x", false);
        assert!(head.starts_with("Length(1) false\n"), "{head}");
        let date = head.split("date: ").nth(1).unwrap();
        assert!(
            date.ends_with(" GMT\r\n\r\n") && date.len() == 33,
            "{date:?}"
        );
    }

    fn parsed(text: &str) -> (BytesMut, Parsed) {
        let mut buf = BytesMut::from(text);
        let parsed = parse(&mut buf);
        (buf, parsed)
    }

    #[test]
    fn a_plain_get_is_served_here_and_split_off() {
        let (rest, p) = parsed("GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-A: 2\r\n\r\nGET /next");
        let Parsed::Request(req, close) = p else {
            panic!("not served here");
        };
        assert!(!close);
        assert_eq!(req.uri(), "/a?b");
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn bodies_upgrades_and_odd_heads_go_to_hyper_untouched() {
        for text in [
            "POST / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        ] {
            let (rest, p) = parsed(text);
            let Parsed::Other(read) = p else {
                panic!("{text:?} served here");
            };
            assert_eq!(&read[..], text.as_bytes(), "{text:?}");
            assert!(rest.is_empty(), "{text:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a client sends, parsing answers and loses nothing: a request with the rest
        /// of the bytes behind it, a partial head still whole in the buffer, or everything read
        /// handed on for hyper.
        #[test]
        fn parsing_never_panics_or_loses_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            prefix in proptest::sample::select(vec!["", "GET / HTTP/1.1\r\n", "HEAD /x HTTP/1.1\r\nHost: a\r\n", "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"]),
        ) {
            let input = [prefix.as_bytes(), &bytes].concat();
            let mut buf = BytesMut::from(&input[..]);
            match parse(&mut buf) {
                Parsed::Partial => proptest::prop_assert_eq!(&buf[..], &input[..]),
                Parsed::Other(read) => {
                    proptest::prop_assert_eq!(&read[..], &input[..]);
                    proptest::prop_assert!(buf.is_empty());
                }
                Parsed::Request(_, _) => proptest::prop_assert!(input.ends_with(&buf)),
            }
        }
    }

    #[test]
    fn a_head_request_is_served_here_too() {
        let (_, p) = parsed("HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n");
        let Parsed::Request(req, false) = p else {
            panic!("not served here");
        };
        assert_eq!(req.method(), Method::HEAD);
    }

    #[test]
    fn connection_close_is_noted_and_partial_heads_wait() {
        let (_, p) = parsed("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(p, Parsed::Request(_, true)));
        let (rest, p) = parsed("GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(p, Parsed::Partial));
        assert_eq!(rest.len(), 25);
    }
}
