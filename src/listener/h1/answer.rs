//! The answer, written: the head encoded as hyper's HTTP/1 server encodes it, and the body
//! framed by its length or in chunks, in as few writes as the body's pieces allow.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::HeaderName;
use http::{Response, StatusCode};
use hyper::body::Body;
use tokio::io::AsyncWriteExt;

use super::WatchedIo;
use crate::proxy::body::ResponseBody;
use crate::proxy::headers::{is_name, lists};
use crate::upstream::h1::{parse_length, write_field, Lengths, RawFields};

/// How the answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Framing {
    /// No body follows the head.
    None,
    Length(u64),
    Chunked,
}

/// Writes `response`; `closing`: the connection closes after it. `Ok(true)`: the connection
/// can serve another request.
pub(super) async fn respond(
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
    drop(parts);
    if let Some(raw) = raw {
        raw.recycle();
    }
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
pub(super) fn chunk_size(buf: &mut [u8; 18], len: usize) -> &[u8] {
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
pub(super) fn encode_head(
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
        length_in_place: false,
        wrote_date: false,
    };
    match raw {
        // Most answers: the backend's field lines go out as it wrote them, and what they say
        // about the length and the date was noted as its head was read.
        Some(raw) if parts.headers.is_empty() && raw.lengths() != Lengths::Other => {
            raw.write_to(fields.out);
            if let Lengths::Plain(n) = raw.lengths() {
                fields.length = Some(n);
                fields.length_in_place = true;
            }
            fields.wrote_date = raw.date;
        }
        _ => {
            for (name, value) in raw.into_iter().flat_map(RawFields::iter) {
                let set = |k: &HeaderName| is_name(name, k.as_str().as_bytes());
                if !parts.headers.keys().any(set) {
                    fields.add(name, value);
                }
            }
        }
    }
    for (name, value) in raw.into_iter().flat_map(RawFields::set_fields) {
        fields.add(name, value);
    }
    for (name, value) in &parts.headers {
        fields.add(name.as_str().as_bytes(), value.as_bytes());
    }
    let Fields {
        out,
        listed_close,
        length,
        lengths_agree,
        length_in_place,
        wrote_date,
        ..
    } = fields;
    let framing = if bodiless {
        Framing::None
    } else if head {
        // The length a `GET` would have had, when the answer says it and no field did.
        let exact = body.size_hint().exact().filter(|_| !body.is_end_stream());
        if let (None, Some(n)) = (length, exact) {
            write_length(out, n);
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
                if !length_in_place {
                    write_length(out, n);
                }
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
    /// The one `Content-Length` field went out where the backend had it (`RawFields::write_to`).
    length_in_place: bool,
    wrote_date: bool,
}

impl Fields<'_> {
    /// One field, its name as given.
    fn add(&mut self, name: &[u8], value: &[u8]) {
        let is = |known: &str| is_name(name, known.as_bytes());
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
            10 if is("connection") => self.listed_close |= lists(value, b"close"),
            4 if is("date") => self.wrote_date = true,
            _ => {}
        }
        write_field(self.out, name, value);
    }
}

/// `content-length: n`.
fn write_length(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    write_field(out, b"content-length", decimal(&mut digits, n));
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
pub(super) mod http_date {
    use std::cell::RefCell;

    use super::*;

    const LEN: usize = 29;

    thread_local! {
        static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
    }

    /// Appends the current date.
    pub(in crate::listener::h1) fn extend(out: &mut Vec<u8>) {
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
    pub(in crate::listener::h1) fn format(secs: u64) -> [u8; LEN] {
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
