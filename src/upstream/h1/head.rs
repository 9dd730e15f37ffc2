//! The two heads of an HTTP/1.1 exchange: the request head sluice writes, and the response head
//! it reads, with the framing of the body that follows (RFC 9112 §6.3).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode, Version};

use super::Error;
use crate::proxy::headers::is_name;

/// Response heads with more fields are refused (hyper's client allows 100 too).
const MAX_HEADERS: usize = 100;

/// Writes `parts` as an HTTP/1.1 request head into `out` (cleared first), with the fields
/// `extra` writes after its own. `host`: the `Host` to send when the request has none (an
/// HTTP/1.0 client's).
pub fn encode(parts: &Parts, extra: impl FnOnce(&mut Vec<u8>), host: &str, out: &mut Vec<u8>) {
    out.clear();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // Clients send `Host` first: a look at the first field spares a lookup by hash.
    let first_is_host = parts
        .headers
        .keys()
        .next()
        .is_some_and(|name| name == http::header::HOST);
    if !first_is_host && !parts.headers.contains_key(http::header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A PUT without a body still says so: some servers refuse one without a length (411).
    if parts.method == Method::PUT && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    for (name, value) in &parts.headers {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    extra(out);
    out.extend_from_slice(b"\r\n");
}

/// Appends one head field, `name: value` and its line end.
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304, or a length of 0).
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// A parsed response head.
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// The connection may carry another request once the body is read.
    pub keep_alive: bool,
    /// The hop-by-hop fields were left out of the map (`Connection` named no other field).
    pub hop_by_hop_removed: bool,
    /// The fields, unparsed, when `parse` was allowed to leave them so: the map is empty.
    pub raw: Option<Box<RawFields>>,
}

pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// A 1xx informational head, consumed: the final response follows.
    Informational,
    Complete(Head),
}

/// A response head's fields as the backend sent them, for sluice's own HTTP/1 server side to
/// write out without a header map in between (`Head::raw`): the head's bytes, and where each
/// field it keeps has its name and value. Names and values are as `httparse` checked them
/// (tokens; visible characters, spaces and tabs); names keep the backend's case.
/// Boxed, with room for `RAW_FIELDS` fields (one allocation, as a `Vec` of spans would be; the
/// body that carries it stays small to move).
#[derive(Debug)]
pub struct RawFields {
    head: Bytes,
    count: usize,
    spans: [[u32; 4]; RAW_FIELDS],
    /// Bit i: field i gave way to one sluice set (`set`).
    replaced: u32,
    /// The length the fields give, when one `Content-Length` field gives it plainly (no list);
    /// `None` with no such field, or with several, or a list (`plain_length`).
    length: Option<u64>,
    /// `Content-Length` fields.
    lengths: u8,
    /// A `Date` field is among them.
    pub date: bool,
    /// Fields sluice sets in the answer (`x-request-id`, HSTS), in place of any of the
    /// backend's with the same name: kept here rather than in a map made for them alone (two
    /// allocations per answer).
    set: [Option<(&'static HeaderName, HeaderValue)>; SET_FIELDS],
}

/// The most `RawFields` boxes a worker keeps for reuse.
const SPARE_RAW: usize = 64;

thread_local! {
    /// `RawFields` of answers already written (`RawFields::recycle`), for the next heads read
    /// on this worker: their box is filled in place, with no allocation and no copy of its
    /// ~700 bytes from the stack.
    // Boxes, not the values: a box is what an answer carries and gives back, with no copy.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<RawFields>>> = const { RefCell::new(Vec::new()) };
}

impl RawFields {
    /// An empty one: recycled, when this worker has one.
    fn spare() -> Box<RawFields> {
        SPARE.with_borrow_mut(Vec::pop).unwrap_or_else(|| {
            Box::new(RawFields {
                head: Bytes::new(),
                count: 0,
                spans: [[0; 4]; RAW_FIELDS],
                replaced: 0,
                length: None,
                lengths: 0,
                date: false,
                set: [const { None }; SET_FIELDS],
            })
        })
    }

    /// Done with: kept, emptied, for a next answer's head (its bytes and values let go now).
    pub fn recycle(mut self: Box<Self>) {
        self.head = Bytes::new();
        self.set = [const { None }; SET_FIELDS];
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_RAW {
                spare.push(self);
            }
        });
    }
}

/// What a head's `Content-Length` fields say (`RawFields::lengths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lengths {
    Absent,
    /// One field, of one number.
    Plain(u64),
    /// Several fields, or a list: an answer gives the length once, normalised.
    Other,
}

/// How many fields sluice may set in an answer whose fields stay unparsed.
const SET_FIELDS: usize = 2;

/// The most fields a head left unparsed may keep; heads with more are parsed into the map.
const RAW_FIELDS: usize = 32;

impl RawFields {
    /// The backend's fields, `(name, value)`, in its order; those sluice sets too are left out.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        (0..self.count)
            .filter(|&i| self.replaced & (1 << i) == 0)
            .map(|i| self.field(i))
    }

    /// Field `i`, `(name, value)`.
    fn field(&self, i: usize) -> (&[u8], &[u8]) {
        let [ns, ne, vs, ve] = self.spans[i];
        (
            &self.head[ns as usize..ne as usize],
            &self.head[vs as usize..ve as usize],
        )
    }

    /// Sets `name` (lowercase, as `HeaderName`s are) to `value` in the answer, in place of the
    /// backend's fields of that name. The value comes back when there is no room (the caller
    /// then uses the map).
    pub fn set(
        &mut self,
        name: &'static HeaderName,
        value: HeaderValue,
    ) -> Result<(), HeaderValue> {
        let Some(slot) = self.set.iter_mut().find(|slot| slot.is_none()) else {
            return Err(value);
        };
        *slot = Some((name, value));
        let lower = name.as_str().as_bytes();
        for (i, &[ns, ne, _, _]) in self.spans[..self.count].iter().enumerate() {
            // Most names differ in length: no slice of the head is made for them.
            if (ne - ns) as usize == lower.len()
                && is_name(&self.head[ns as usize..ne as usize], lower)
            {
                self.replaced |= 1 << i;
            }
        }
        Ok(())
    }

    /// What the `Content-Length` fields say.
    pub fn lengths(&self) -> Lengths {
        match (self.lengths, self.length) {
            (0, _) => Lengths::Absent,
            (1, Some(n)) => Lengths::Plain(n),
            _ => Lengths::Other,
        }
    }

    /// Writes the fields kept (`iter`) into `out` as HTTP/1.1 field lines. Lines the backend
    /// wrote as `name: value` CRLF go as it wrote them, consecutive ones in one copy (most
    /// answers' fields are one or two runs of the head); any other line is written anew.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let head = &self.head[..];
        // The run of the head's bytes being gathered: `start..end`.
        let mut run = 0..0;
        for i in (0..self.count).filter(|&i| self.replaced & (1 << i) == 0) {
            let [ns, ne, vs, ve] = self.spans[i].map(|at| at as usize);
            let line_end = ve + 2;
            let plain = head.get(ne..vs) == Some(b": ") && head.get(ve..line_end) == Some(b"\r\n");
            if plain && run.end == ns && !run.is_empty() {
                run.end = line_end;
                continue;
            }
            out.extend_from_slice(&head[run]);
            run = 0..0;
            match plain {
                true => run = ns..line_end,
                false => write_field(out, &head[ns..ne], &head[vs..ve]),
            }
        }
        out.extend_from_slice(&head[run]);
    }

    /// The fields sluice set (`set`), `(name, value)`.
    pub fn set_fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.set
            .iter()
            .flatten()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }
}

/// Parses the response head at the start of `buf`; a complete head is split off `buf` (its
/// header values share the bytes read, nothing is copied), leaving the body's first bytes.
/// `raw`: the fields may stay unparsed (`RawFields`) and the map empty, when the hop-by-hop
/// fields can be left out without it.
pub fn parse(buf: &mut BytesMut, method: &Method, raw: bool) -> Result<Parsed, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Invalid("too many response header fields"))
        }
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("invalid status code"))?;
    if status.is_informational() {
        // 100 Continue, 102, 103 Early Hints: nothing to forward. A 101 was never asked for
        // (upgrades take hyper's client), so it cannot be honoured.
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid("101 to a request that asked for no upgrade"));
        }
        buf.advance(len);
        return Ok(Parsed::Informational);
    }
    let http10 = response.version == Some(0);
    // Where a field's name and value are in the head: offsets within a head of at most the read
    // limit, so they fit in 32 bits.
    let base = buf.as_ptr() as usize;
    let span = |header: &httparse::Header<'_>| {
        let name = header.name.as_ptr() as usize - base;
        let value = header.value.as_ptr() as usize - base;
        [
            name as u32,
            (name + header.name.len()) as u32,
            value as u32,
            (value + header.value.len()) as u32,
        ]
    };
    let mut facts = Facts::default();
    // Bit i: field i is hop-by-hop (`MAX_HEADERS` fits).
    let mut hop_by_hop = 0u128;
    for (i, header) in response.headers.iter().enumerate() {
        if facts.note(header.name, header.value)? {
            hop_by_hop |= 1 << i;
        }
    }
    let count = response.headers.len();
    // The hop-by-hop fields are read (`facts`) but not kept, which spares the proxy a pass to
    // strip them; unless `Connection` names other fields, which that pass then removes too.
    let strip = !facts.names_others;
    let kept = response
        .headers
        .iter()
        .enumerate()
        .filter(|&(i, _)| !strip || hop_by_hop & (1 << i) == 0)
        .map(|(_, header)| span(header));
    let (headers, raw) = if raw && strip && count <= RAW_FIELDS {
        let mut fields = RawFields::spare();
        fields.count = 0;
        fields.replaced = 0;
        fields.length = facts.length.filter(|_| !facts.length_listed);
        fields.lengths = facts.lengths;
        fields.date = facts.date;
        for span in kept {
            fields.spans[fields.count] = span;
            fields.count += 1;
        }
        fields.head = buf.split_to(len).freeze();
        (None, Some(fields))
    } else {
        let mut spans = [[0u32; 4]; MAX_HEADERS];
        let mut n = 0;
        for span in kept {
            spans[n] = span;
            n += 1;
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(n);
        for &[ns, ne, vs, ve] in &spans[..n] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                .map_err(|_| Error::Invalid("invalid response header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| Error::Invalid("invalid response header value"))?;
            headers.append(name, value);
        }
        (Some(headers), None)
    };
    let bodiless = *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut keep_alive = if http10 {
        facts.keep_alive
    } else {
        !facts.close
    };
    let framing = if bodiless {
        Framing::Empty
    } else if facts.transfer_encoding {
        // Both lengths given: the message is suspect, the connection is not used again.
        if facts.length.is_some() {
            keep_alive = false;
        }
        if facts.chunked_last {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else {
        match facts.length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::Close
            }
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Left unparsed, the fields need no map: the response's own stays, empty. (Another in its
    // place would cost its drop, ~60 instructions.)
    if let Some(headers) = headers {
        *response.headers_mut() = headers;
    }
    Ok(Parsed::Complete(Head {
        response,
        framing,
        keep_alive,
        hop_by_hop_removed: strip,
        raw,
    }))
}

/// What the framing and connection fields of a response head say.
#[derive(Default)]
struct Facts {
    length: Option<u64>,
    /// `Content-Length` fields (saturating).
    lengths: u8,
    /// A `Content-Length` value was a list.
    length_listed: bool,
    date: bool,
    transfer_encoding: bool,
    /// The last transfer coding named is `chunked`.
    chunked_last: bool,
    close: bool,
    keep_alive: bool,
    /// `Connection` names a field (a token other than `close` and `keep-alive`).
    names_others: bool,
}

impl Facts {
    /// Notes what the field `name: value` says about framing and the connection, and whether
    /// it is hop-by-hop (RFC 9110 section 7.6.1; `Trailer` is end-to-end, as in
    /// `proxy::headers::HopByHop`). Names are told apart by length first: most fields are none
    /// of these, and cost one comparison.
    fn note(&mut self, name: &str, value: &[u8]) -> Result<bool, Error> {
        let is = |known: &str| is_name(name.as_bytes(), known.as_bytes());
        let hop_by_hop = match name.len() {
            14 if is("content-length") => {
                self.lengths = self.lengths.saturating_add(1);
                self.length_listed |= value.contains(&b',');
                // `Content-Length: 5, 5` and repeated equal fields are one length; any other
                // disagreement makes the body's end unknowable.
                for part in value.split(|&b| b == b',') {
                    let n = parse_length(part.trim_ascii())
                        .ok_or(Error::Invalid("invalid Content-Length"))?;
                    if self.length.is_some_and(|l| l != n) {
                        return Err(Error::Invalid("conflicting Content-Length"));
                    }
                    self.length = Some(n);
                }
                false
            }
            17 if is("transfer-encoding") => {
                self.transfer_encoding = true;
                if let Some(last) = value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .rfind(|t| !t.is_empty())
                {
                    self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
                }
                true
            }
            10 if is("connection") => {
                for token in crate::proxy::headers::list_items(value) {
                    let close = token.eq_ignore_ascii_case(b"close");
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    self.close |= close;
                    self.keep_alive |= keep_alive;
                    self.names_others |= !(close || keep_alive || token.is_empty());
                }
                true
            }
            10 => is("keep-alive"),
            16 => is("proxy-connection"),
            7 => is("upgrade"),
            2 => is("te"),
            4 => {
                self.date |= is("date");
                false
            }
            _ => false,
        };
        Ok(hop_by_hop)
    }
}

/// A `Content-Length` value: digits only, no overflow.
pub fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> Result<Parsed, Error> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse(&mut buf, &method, false)
    }

    fn complete(text: &str) -> Head {
        match head(text, Method::GET) {
            Ok(Parsed::Complete(head)) => head,
            Ok(_) => panic!("not complete: {text:?}"),
            Err(e) => panic!("{e}: {text:?}"),
        }
    }

    #[test]
    fn encodes_the_request_line_host_and_fields() {
        let (mut parts, ()) = http::Request::get("http://10.0.0.1:80/a?b=1")
            .header("x-one", "1")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        let (name, value) = (
            HeaderName::from_static("x-added"),
            HeaderValue::from_static("2"),
        );
        let extra =
            |out: &mut Vec<u8>| write_field(out, name.as_str().as_bytes(), value.as_bytes());
        encode(&parts, extra, "10.0.0.1:80", &mut out);
        assert_eq!(
            out,
            b"GET /a?b=1 HTTP/1.1\r\nhost: 10.0.0.1:80\r\nx-one: 1\r\nx-added: 2\r\n\r\n"
        );
        parts
            .headers
            .insert(http::header::HOST, HeaderValue::from_static("example.com"));
        parts.method = Method::PUT;
        encode(&parts, |_| {}, "10.0.0.1:80", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("PUT /a?b=1 HTTP/1.1\r\ncontent-length: 0\r\n"));
        assert!(text.contains("host: example.com\r\n"));
        assert!(!text.contains("10.0.0.1"));
    }

    #[test]
    fn splits_the_head_off_and_leaves_the_body() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let Ok(Parsed::Complete(head)) = parse(&mut buf, &Method::GET, false) else {
            panic!("complete")
        };
        assert_eq!(&buf[..], b"hello");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.response.headers()["x-a"], "b");
        assert_eq!(head.response.version(), Version::HTTP_11);
    }

    #[test]
    fn partial_heads_wait_and_informational_ones_are_skipped() {
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET),
            Ok(Parsed::Partial)
        ));
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..]);
        assert!(matches!(
            parse(&mut buf, &Method::GET, false),
            Ok(Parsed::Informational)
        ));
        assert!(
            matches!(parse(&mut buf, &Method::GET, false), Ok(Parsed::Complete(h)) if h.framing == Framing::Empty)
        );
        assert!(matches!(
            head("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        let both =
            complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(both.framing, Framing::Chunked);
        assert!(!both.keep_alive, "both lengths: never reused");
        let gzip = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(gzip.framing, Framing::Close);
        assert!(!gzip.keep_alive);
        let none = complete("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(none.framing, Framing::Close);
        assert!(!none.keep_alive);
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            complete("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing,
            Framing::Length(7)
        );
        match head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD) {
            Ok(Parsed::Complete(h)) => assert_eq!(h.framing, Framing::Empty),
            _ => panic!("HEAD"),
        }
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad, Method::GET), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(
            !complete("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
                .keep_alive
        );
        assert!(!complete("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keep_alive);
        let ten =
            complete("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
        assert!(ten.keep_alive);
        assert_eq!(ten.response.version(), Version::HTTP_10);
    }

    fn raw(text: &str) -> Head {
        let mut buf = BytesMut::from(text);
        let Ok(Parsed::Complete(head)) = parse(&mut buf, &Method::GET, true) else {
            panic!("incomplete: {text:?}");
        };
        head
    }

    #[test]
    fn fields_left_unparsed_keep_their_order_and_lose_the_hop_by_hop_ones() {
        let head = raw(
            "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nX-A:  1 \r\n\
                        Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nhi",
        );
        assert!(head.response.headers().is_empty());
        assert_eq!(head.framing, Framing::Length(2));
        let fields: Vec<_> = head.raw.as_ref().unwrap().iter().collect();
        let expected: [(&[u8], &[u8]); 3] =
            [(b"Server", b"x"), (b"X-A", b"1"), (b"Content-Length", b"2")];
        assert_eq!(fields, expected);
        // `Connection` naming another field needs the map (the proxy strips that field).
        let head = raw("HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n");
        assert!(head.raw.is_none());
        assert!(head.response.headers().contains_key("x-secret"));
        // As do more fields than the raw form has room for.
        let many: String = (0..RAW_FIELDS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let head = raw(&format!("HTTP/1.1 204 No Content\r\n{many}\r\n"));
        assert!(head.raw.is_none());
        assert_eq!(head.response.headers().len(), RAW_FIELDS + 1);
    }

    #[test]
    fn unparsed_fields_say_what_their_length_and_date_are() {
        let fields = |text: &str| raw(text).raw.expect("left unparsed");
        let one = fields("HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 2\r\n\r\n");
        assert_eq!((one.lengths(), one.date), (Lengths::Plain(2), true));
        let none = fields("HTTP/1.1 200 OK\r\nX-Date: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((none.lengths(), none.date), (Lengths::Absent, false));
        let list = fields("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n");
        assert_eq!(list.lengths(), Lengths::Other);
        let twice = fields("HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(twice.lengths(), Lengths::Other);
    }

    #[test]
    fn recycled_fields_keep_nothing_of_the_answer_before() {
        static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
        // A thread of its own: the spare boxes are per thread.
        std::thread::spawn(|| {
            let mut first =
                raw("HTTP/1.1 200 OK\r\nX-Request-Id: a\r\nDate: d\r\nContent-Length: 1\r\n\r\n")
                    .raw
                    .unwrap();
            first
                .set(&REQUEST_ID, HeaderValue::from_static("mine"))
                .unwrap();
            let at = &*first as *const RawFields;
            first.recycle();
            let second = raw("HTTP/1.1 200 OK\r\nX-Request-Id: b\r\nServer: s\r\n\r\n")
                .raw
                .unwrap();
            assert_eq!(
                &*second as *const RawFields, at,
                "the same box, filled again"
            );
            let fields: Vec<_> = second.iter().collect();
            let expected: [(&[u8], &[u8]); 2] = [(b"X-Request-Id", b"b"), (b"Server", b"s")];
            assert_eq!(fields, expected);
            assert_eq!(second.set_fields().count(), 0);
            assert_eq!((second.lengths(), second.date), (Lengths::Absent, false));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn fields_sluice_sets_take_the_place_of_the_backends() {
        static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
        static HSTS: HeaderName = HeaderName::from_static("strict-transport-security");
        static OTHER: HeaderName = HeaderName::from_static("x-other");
        let mut head = raw("HTTP/1.1 200 OK\r\nX-Request-ID: backend\r\nServer: x\r\n\
             x-request-id: again\r\nContent-Length: 0\r\n\r\n");
        let fields = head.raw.as_mut().unwrap();
        fields
            .set(&REQUEST_ID, HeaderValue::from_static("mine"))
            .unwrap();
        fields
            .set(&HSTS, HeaderValue::from_static("max-age=1"))
            .unwrap();
        // Room for sluice's own fields only: a third comes back.
        let refused = fields.set(&OTHER, HeaderValue::from_static("v"));
        assert_eq!(refused, Err(HeaderValue::from_static("v")));
        let kept: Vec<_> = fields.iter().collect();
        let expected: [(&[u8], &[u8]); 2] = [(b"Server", b"x"), (b"Content-Length", b"0")];
        assert_eq!(kept, expected);
        let set: Vec<_> = fields.set_fields().collect();
        let expected: [(&[u8], &[u8]); 2] = [
            (b"x-request-id", b"mine"),
            (b"strict-transport-security", b"max-age=1"),
        ];
        assert_eq!(set, expected);
    }

    #[test]
    fn hop_by_hop_fields_are_read_but_not_kept() {
        let head = complete(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
             Transfer-Encoding: chunked\r\nProxy-Connection: x\r\nTE: trailers\r\n\
             Upgrade: y\r\nX-Kept: 1\r\nTrailer: grpc-status\r\n\r\n",
        );
        assert!(head.hop_by_hop_removed);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.keep_alive);
        let names: Vec<&str> = head.response.headers().keys().map(|n| n.as_str()).collect();
        // `Trailer` is end-to-end (see `HopByHop`).
        assert_eq!(names, ["x-kept", "trailer"]);

        // A `Connection` naming another field: everything is kept, for the proxy's strip pass
        // to remove that field as well.
        let head = complete(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t\r\n\
             Content-Length: 0\r\n\r\n",
        );
        assert!(!head.hop_by_hop_removed);
        assert!(!head.keep_alive);
        for name in ["connection", "x-hop", "keep-alive", "content-length"] {
            assert!(head.response.headers().contains_key(name), "{name}");
        }
    }
}
