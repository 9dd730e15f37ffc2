//! Header rules, pure: strict framing checks, hop-by-hop removal, forwarding headers, request ids;
//! trace context in `trace`.
//!
//! hyper accepts several ambiguous HTTP/1 framings that a proxy must not forward (request
//! smuggling), so `check_request` re-checks what hyper let through.

use std::cell::RefCell;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};

use super::error::ProxyError;
use crate::upstream::h1;

pub mod trace;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Strict-Transport-Security`, as a static (sluice sets it by reference, `RawFields::set`).
pub static STRICT_TRANSPORT_SECURITY: HeaderName = header::STRICT_TRANSPORT_SECURITY;
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What one pass over a request's headers found: everything the checks and the request's
/// start need, so no header is looked up twice. Owned (the values are shared, not copied), so
/// that the request can change and move while they are kept.
#[derive(Debug, Default)]
pub struct Facts {
    pub hosts: usize,
    pub host: Option<HeaderValue>,
    lengths: usize,
    length: Option<HeaderValue>,
    codings: usize,
    coding: Option<HeaderValue>,
    upgrade_h2c: bool,
    /// The first `x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// `Content-Type` names gRPC (`grpc::is_grpc`).
    pub grpc: bool,
    /// The hop-by-hop headers present (what stripping has to remove).
    pub hop_by_hop: HopByHop,
    /// The headers sluice sets itself that the request arrived with.
    pub own: Own,
    /// Bytes of the request head as sluice counts them: names, values and separators.
    pub head_bytes: usize,
}

impl Facts {
    pub fn of(headers: &HeaderMap) -> Facts {
        let mut facts = Facts::default();
        for (name, value) in headers {
            facts.head_bytes += name.as_str().len() + value.len() + 4;
            facts.hop_by_hop.add(name);
            let before = facts.own;
            facts.own.add(name);
            if !before.has(Own::REQUEST_ID) && facts.own.has(Own::REQUEST_ID) {
                facts.request_id = Some(value.clone());
            }
            if name == header::HOST {
                facts.hosts += 1;
                facts.host.get_or_insert_with(|| value.clone());
            } else if name == header::CONTENT_LENGTH {
                facts.lengths += 1;
                facts.length.get_or_insert_with(|| value.clone());
            } else if name == header::TRANSFER_ENCODING {
                facts.codings += 1;
                facts.coding.get_or_insert_with(|| value.clone());
            } else if name == header::UPGRADE {
                facts.upgrade_h2c |= lists(value.as_bytes(), b"h2c");
            } else if name == header::CONTENT_TYPE && !facts.grpc {
                facts.grpc = super::grpc::is_grpc_type(value);
            }
        }
        facts
    }
}

/// The items of a comma-separated field value (RFC 9110 section 5.6.1), trimmed; empty ones
/// included.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a comma-separated field value lists `token` (case-insensitive).
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token))
}

/// Whether the field name `name`, a token as a parser checked it, is `lower` (lowercase
/// letters, digits and `-`) in any case. Eight bytes at a time: or-ing each byte with 0x20
/// lowercases a letter and leaves a digit or `-` as it is, and turns no other token character
/// into one of those. (Most names a proxy looks for are 10 to 17 bytes long: byte by byte,
/// their comparisons were a tenth of the work of reading a backend's answer.)
pub fn is_name(name: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 8 {
        return name.eq_ignore_ascii_case(lower);
    }
    let word = |bytes: &[u8], at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word) | CASE
    };
    let mut at = 0;
    while at + 8 < len {
        if word(name, at) != word(lower, at) {
            return false;
        }
        at += 8;
    }
    // The last eight bytes, overlapping the ones before when the length is not a multiple.
    word(name, len - 8) == word(lower, len - 8)
}

/// Rejects what cannot be forwarded unambiguously. Runs before routing: a rejected request is
/// never forwarded, and its connection is closed.
pub fn check_request<B>(req: &Request<B>) -> Result<(), ProxyError> {
    check_request_with(req, &Facts::of(req.headers()))
}

/// `check_request` with the header facts already gathered.
pub fn check_request_with<B>(req: &Request<B>, facts: &Facts) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported\n"));
    }
    if facts.upgrade_h2c {
        return Err(ProxyError::BadRequest("Upgrade: h2c is not supported\n"));
    }
    if facts.hosts > 1 {
        return Err(ProxyError::BadRequest("more than one Host header\n"));
    }
    // Whatever names the host becomes the upstream `Host` and `X-Forwarded-Host`: it must be a
    // plain host[:port] (no userinfo, no spaces), whether it came from `Host`, an absolute-form
    // target or HTTP/2's `:authority`.
    if let Some(host) = &facts.host {
        if !valid_host(host.as_bytes()) {
            return Err(ProxyError::BadRequest("invalid Host header\n"));
        }
    }
    if let Some(authority) = req.uri().authority() {
        if !valid_host(authority.as_str().as_bytes()) {
            return Err(ProxyError::BadRequest("invalid host in request target\n"));
        }
    }
    match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => check_h2_authority(req, facts),
        version => check_h1_framing(req, facts, version),
    }
}

/// A `Host` value: a reg-name, IPv4 or bracketed IPv6 literal, optionally with a port. Checked
/// byte by byte (RFC 3986 authority characters, no userinfo) so the check allocates nothing.
fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&c))
}

fn check_h1_framing<B>(
    req: &Request<B>,
    facts: &Facts,
    version: Version,
) -> Result<(), ProxyError> {
    match &facts.host {
        None if version == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("missing Host header\n"))
        }
        None => {}
        Some(host) => {
            // Absolute-form target: its authority must name the same host as `Host`.
            if let Some(authority) = req.uri().authority() {
                if !authority
                    .as_str()
                    .as_bytes()
                    .eq_ignore_ascii_case(host.as_bytes())
                {
                    return Err(ProxyError::BadRequest(
                        "request target and Host name different hosts\n",
                    ));
                }
            }
        }
    }
    if let Some(scheme) = req.uri().scheme_str() {
        if scheme != "http" && scheme != "https" {
            return Err(ProxyError::BadRequest(
                "unsupported scheme in request target\n",
            ));
        }
    }
    if facts.lengths > 1 {
        return Err(ProxyError::BadRequest(
            "more than one Content-Length header\n",
        ));
    }
    if let Some(len) = &facts.length {
        let digits = len.as_bytes();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ProxyError::BadRequest("invalid Content-Length\n"));
        }
    }
    if let Some(te) = &facts.coding {
        if facts.length.is_some() {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding\n",
            ));
        }
        if version != Version::HTTP_11 {
            return Err(ProxyError::BadRequest("Transfer-Encoding in HTTP/1.0\n"));
        }
        // Only a single, plain `chunked` is unambiguous: stacked, repeated or unknown codings
        // are read differently by different servers.
        if facts.codings > 1 || !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(ProxyError::BadRequest("unsupported Transfer-Encoding\n"));
        }
    }
    Ok(())
}

/// HTTP/2 carries the host in `:authority`; a `Host` header that disagrees makes the request
/// ambiguous.
fn check_h2_authority<B>(req: &Request<B>, facts: &Facts) -> Result<(), ProxyError> {
    if let (Some(host), Some(authority)) = (&facts.host, req.uri().authority()) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return Err(ProxyError::BadRequest(
                ":authority and Host name different hosts\n",
            ));
        }
    }
    Ok(())
}

/// The host a request names: `Host` (HTTP/1), else the target's authority (HTTP/2 `:authority`).
pub fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// Which hop-by-hop headers (RFC 9110 section 7.6.1) a message carries, one bit per name,
/// found in the pass over its names that the caller makes anyway: stripping then looks up only
/// the ones present. (`Trailer` is end-to-end: it announces the trailer fields, and hyper drops
/// trailers on an HTTP/1 leg whose message lacks it.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HopByHop(u8);

/// `HopByHop`'s names, in the order of its bits.
static HOP_BY_HOP: [&HeaderName; 6] = [
    &header::CONNECTION,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::TE,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
];

/// `name`'s bit among `names` (1 << its position), 0 when it is not one of them. (Inlined:
/// then the lists are constants and the comparisons unrolled.)
#[inline(always)]
fn bit_among(name: &HeaderName, names: &[&HeaderName]) -> u8 {
    names
        .iter()
        .position(|n| *n == name)
        .map_or(0, |at| 1 << at)
}

impl HopByHop {
    const CONNECTION: u8 = 1;
    const TRANSFER_ENCODING: u8 = 1 << 1;
    const UPGRADE: u8 = 1 << 2;
    const TE: u8 = 1 << 3;
    const KEEP_ALIVE: u8 = 1 << 4;
    const PROXY_CONNECTION: u8 = 1 << 5;

    pub fn of(headers: &HeaderMap) -> HopByHop {
        HopByHop(
            headers
                .keys()
                .fold(0, |bits, name| bits | bit_among(name, &HOP_BY_HOP)),
        )
    }

    fn add(&mut self, name: &HeaderName) {
        self.0 |= bit_among(name, &HOP_BY_HOP);
    }

    pub fn any(self) -> bool {
        self.0 != 0
    }

    /// Whether `Upgrade` is present (only then can the request be a WebSocket upgrade).
    pub fn upgrade(self) -> bool {
        self.has(HopByHop::UPGRADE)
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Headers a client or backend cannot make sluice drop by naming them in `Connection`: the ones
/// sluice sets itself and the ones that frame the message.
fn is_protected(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONTENT_LENGTH
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name == X_FORWARDED_HOST
        || name == X_REQUEST_ID
        || name == trace::TRACEPARENT
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1) and every header named in `Connection`,
/// except protected ones. `TE: trailers` survives: it is end-to-end in practice (gRPC needs it).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names is cheaper than a lookup per hop-by-hop name.
    strip_present_hop_by_hop(headers, HopByHop::of(headers));
}

/// `strip_hop_by_hop` for a message whose hop-by-hop headers are `present`.
pub fn strip_present_hop_by_hop(headers: &mut HeaderMap, present: HopByHop) {
    if !present.any() {
        return;
    }
    if present.has(HopByHop::CONNECTION) {
        remove_connection(headers);
    }
    // (A name listed in `Connection` may already be gone: removing it again is harmless.)
    if present.has(HopByHop::KEEP_ALIVE) {
        headers.remove(&KEEP_ALIVE);
    }
    if present.has(HopByHop::PROXY_CONNECTION) {
        headers.remove(&PROXY_CONNECTION);
    }
    if present.has(HopByHop::TRANSFER_ENCODING) {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if present.has(HopByHop::UPGRADE) {
        headers.remove(header::UPGRADE);
    }
    if present.has(HopByHop::TE) {
        if let Some(te) = headers.get(header::TE) {
            if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers") {
                headers.remove(header::TE);
            }
        }
    }
}

/// Removes `Connection` and every header it names, except protected ones.
fn remove_connection(headers: &mut HeaderMap) {
    // The usual one value naming only the connection's fate names no header: one removal.
    let mut values = headers.get_all(header::CONNECTION).iter();
    if let (Some(only), None) = (values.next(), values.next()) {
        let value = only.as_bytes().trim_ascii();
        if value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close") {
            headers.remove(header::CONNECTION);
            return;
        }
    }
    let header::Entry::Occupied(connection) = headers.entry(header::CONNECTION) else {
        return;
    };
    // Tokens are read from the raw bytes: one odd byte elsewhere in the value must not
    // hide the names it lists. The usual `keep-alive` and `close` allocate nothing.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in connection.remove_entry_mult().1 {
        for token in list_items(value.as_bytes()) {
            if token.is_empty()
                || token.eq_ignore_ascii_case(b"close")
                || token.eq_ignore_ascii_case(b"keep-alive")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    for name in named {
        if !is_protected(&name) {
            headers.remove(&name);
        }
    }
}

/// Which of the headers sluice sets itself a message carries (a bit per name), noted in the pass
/// over its names that `Facts` makes: the ones absent are never looked up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Own(u8);

/// `Own`'s names, in the order of its bits. All custom names: a standard one (most of a
/// request's) differs from each at once.
static OWN: [&HeaderName; 6] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_REQUEST_ID,
    &trace::TRACESTATE,
    &trace::TRACEPARENT,
];

impl Own {
    const FORWARDED_FOR: u8 = 1;
    const FORWARDED_PROTO: u8 = 1 << 1;
    const FORWARDED_HOST: u8 = 1 << 2;
    const REQUEST_ID: u8 = 1 << 3;
    const TRACESTATE: u8 = 1 << 4;
    const TRACEPARENT: u8 = 1 << 5;

    pub fn of(headers: &HeaderMap) -> Own {
        Own(headers
            .keys()
            .fold(0, |bits, name| bits | bit_among(name, &OWN)))
    }

    fn add(&mut self, name: &HeaderName) {
        self.0 |= bit_among(name, &OWN);
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    pub fn tracestate(self) -> bool {
        self.has(Own::TRACESTATE)
    }

    pub fn traceparent(self) -> bool {
        self.has(Own::TRACEPARENT)
    }
}

/// Where a request came from, for the `X-Forwarded-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The peer's address (`peer_value`).
    pub peer: &'a HeaderValue,
    /// The peer is a trusted proxy: its `X-Forwarded-*` are extended or kept, not replaced.
    pub trusted: bool,
    pub proto: &'static str,
}

/// The headers sluice adds to every request it forwards, kept apart from the request's header
/// map: sluice's HTTP/1.1 client writes them straight into the head (`write`), without a map
/// insert and its hashing each; hyper's client gets them inserted (`insert_into`). The request
/// id is the request's own (`Started`), lent for each attempt rather than copied here (a copy
/// of a new id's bytes cost an allocation), and a new `traceparent` stays two numbers until
/// written.
#[derive(Debug, Clone)]
pub struct Added {
    forwarded_for: HeaderValue,
    /// `None`: a trusted peer's own is kept.
    forwarded_proto: Option<HeaderValue>,
    /// `None`: a trusted peer's own is kept, or there is no host to name.
    forwarded_host: Option<HeaderValue>,
    /// `None`: the client's valid trace context is kept.
    traceparent: Option<trace::NewContext>,
}

impl Added {
    /// Takes the request's own copies of what sluice sets out of `headers` (`own`: which it
    /// has): the `X-Forwarded-*` (`take_forwarded`) and `x-request-id` (replaced by the
    /// request's id, the client's own when it sent a usable one); `traceparent`: the new trace
    /// context `trace::outgoing` started, if it did.
    pub fn take(
        headers: &mut HeaderMap,
        own: Own,
        origin: Origin<'_>,
        host: Option<HeaderValue>,
        traceparent: Option<trace::NewContext>,
    ) -> Added {
        let [forwarded_for, forwarded_proto, forwarded_host] =
            take_forwarded(headers, own, origin, host);
        if own.has(Own::REQUEST_ID) {
            headers.remove(&X_REQUEST_ID);
        }
        Added {
            forwarded_for: forwarded_for.unwrap_or_else(|| origin.peer.clone()),
            forwarded_proto,
            forwarded_host,
            traceparent,
        }
    }

    /// Writes them as HTTP/1.1 head fields into `out`, in order, with `request_id`.
    pub fn write(&self, request_id: &HeaderValue, out: &mut Vec<u8>) {
        let mut field =
            |name: &HeaderName, value: &[u8]| h1::write_field(out, name.as_str().as_bytes(), value);
        field(&X_FORWARDED_FOR, self.forwarded_for.as_bytes());
        if let Some(proto) = &self.forwarded_proto {
            field(&X_FORWARDED_PROTO, proto.as_bytes());
        }
        if let Some(host) = &self.forwarded_host {
            field(&X_FORWARDED_HOST, host.as_bytes());
        }
        field(&X_REQUEST_ID, request_id.as_bytes());
        if let Some(context) = &self.traceparent {
            field(&trace::TRACEPARENT, &context.value());
        }
    }

    /// Adds them, with `request_id`, to a request's map (for hyper's client).
    pub fn insert_into(&self, request_id: &HeaderValue, headers: &mut HeaderMap) {
        // One growth at most: a new connection's first map is exact-size.
        headers.reserve(5);
        headers.insert(X_FORWARDED_FOR.clone(), self.forwarded_for.clone());
        if let Some(proto) = &self.forwarded_proto {
            headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
        }
        if let Some(host) = &self.forwarded_host {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(context) = &self.traceparent {
            let value = HeaderValue::from_bytes(&context.value())
                .expect("hex digits and dashes are a valid value");
            headers.insert(trace::TRACEPARENT.clone(), value);
        }
    }
}

/// `X-Forwarded-For`, `-Proto` and `-Host` for a request, with the request's own copies of the
/// ones replaced taken out of `headers`. From a trusted peer the existing chain is extended and
/// its `-Proto`/`-Host` kept (`None`); from anyone else they are replaced, so a client cannot
/// forge its address. `-For` is always `Some`; `-Host` is `None` without a host to name.
fn take_forwarded(
    headers: &mut HeaderMap,
    own: Own,
    origin: Origin<'_>,
    host: Option<HeaderValue>,
) -> [Option<HeaderValue>; 3] {
    let chain = match origin.trusted && own.has(Own::FORWARDED_FOR) {
        true => {
            let mut joined = Vec::with_capacity(64);
            for v in headers.get_all(&X_FORWARDED_FOR) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(origin.peer.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        false => None,
    };
    let mut replaced = |name: &HeaderName, bit: u8| {
        let kept = origin.trusted && own.has(bit) && bit != Own::FORWARDED_FOR;
        if own.has(bit) && !kept {
            headers.remove(name);
        }
        !kept
    };
    let forwarded_for = replaced(&X_FORWARDED_FOR, Own::FORWARDED_FOR)
        .then(|| chain.unwrap_or_else(|| origin.peer.clone()));
    let forwarded_proto = replaced(&X_FORWARDED_PROTO, Own::FORWARDED_PROTO)
        .then(|| HeaderValue::from_static(origin.proto));
    let forwarded_host = match replaced(&X_FORWARDED_HOST, Own::FORWARDED_HOST) {
        true => host,
        false => None,
    };
    [forwarded_for, forwarded_proto, forwarded_host]
}

/// The peer address as a header value, made once per connection. IPv4 (also IPv4-mapped
/// IPv6) is written digit by digit: `Display` costs more than the rest of a short connection's
/// header work.
pub fn peer_value(ip: IpAddr) -> HeaderValue {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => {
                return HeaderValue::try_from(v6.to_string())
                    .expect("an IP address is a valid header value")
            }
        },
    };
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        for digit in &digits[skip..] {
            buf[len] = b'0' + digit;
            len += 1;
        }
    }
    HeaderValue::from_bytes(&buf[..len]).expect("digits and dots are a valid header value")
}

/// An owned copy of a request header's value. The request's values are slices of hyper's
/// read buffer: one kept past the request's head (in its answer, its log record) keeps that
/// buffer shared, and hyper then allocates a new one, 8 KiB, for the connection's next request
/// where this copies a few bytes.
pub fn detach(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(value.as_bytes()))
        .unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// A new request id: 128 random bits as 32 hex digits. (The balancers' per-thread random
/// source: ids need uniqueness, not secrecy.)
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    random_hex(&mut buf);
    HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
}

/// Fills `buf` with random hex digits. Not inlined: where the compiler could follow the digits
/// into `HeaderValue`'s check of them, it checked them byte by byte out of registers, at twice
/// the cost of the plain loop over memory.
#[inline(never)]
fn random_hex(buf: &mut [u8; 32]) {
    buf[..16].copy_from_slice(&hex_u64(crate::balance::rng::next_u64()));
    buf[16..].copy_from_slice(&hex_u64(crate::balance::rng::next_u64()));
}

/// `n` as 16 lowercase hex digits, most significant first. Branch- and table-free: each nibble
/// is spread to a byte of its own in four shift-and-mask steps, then all sixteen are turned
/// into digits at once (a table lookup per nibble cost about ten times as much).
pub fn hex_u64(n: u64) -> [u8; 16] {
    /// `byte` in every byte of a `u128`.
    const fn each(byte: u8) -> u128 {
        u128::from_ne_bytes([byte; 16])
    }
    let n = u128::from(n);
    // Nibble i (counting from the least significant) ends in byte i.
    let mut v = (n & 0xffff_ffff_0000_0000) << 32 | (n & 0xffff_ffff);
    v = (v & 0x0000_0000_ffff_0000_0000_0000_ffff_0000) << 16
        | (v & 0x0000_0000_0000_ffff_0000_0000_0000_ffff);
    v = (v & 0x0000_ff00_0000_ff00_0000_ff00_0000_ff00) << 8
        | (v & 0x0000_00ff_0000_00ff_0000_00ff_0000_00ff);
    v = (v & 0x00f0_00f0_00f0_00f0_00f0_00f0_00f0_00f0) << 4
        | (v & 0x000f_000f_000f_000f_000f_000f_000f_000f);
    // 1 in the bytes holding 10 to 15, which become letters: `'a'` is 39 past `'0' + 10`.
    let letters = ((v + each(6)) >> 4) & each(1);
    (v + each(b'0') + letters * 39).to_be_bytes()
}

/// The most request maps a worker keeps for reuse, and the most fields one may have room for.
const SPARE_MAPS: usize = 64;
const SPARE_MAP_ROOM: usize = 64;

thread_local! {
    /// Header maps of requests already sent (`recycle_map`), for the next request heads read on
    /// this worker (`spare_map`): a request's map then costs no allocation. (Two were made and
    /// freed per request, about 300 instructions of a small request's 18 000.)
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `fields`: one this worker recycled, when it has one.
pub fn spare_map(fields: usize) -> HeaderMap {
    let map = SPARE.with_borrow_mut(Vec::pop);
    match map {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`, emptied, for a next request (`spare_map`); not one grown large.
pub fn recycle_map(mut map: HeaderMap) {
    if map.capacity() > SPARE_MAP_ROOM {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests;
