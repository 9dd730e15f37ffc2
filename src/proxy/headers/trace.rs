//! W3C trace context (`traceparent`, `tracestate`), pure: a request keeps a valid
//! `traceparent` as it came, and gets a new one when it has none or an invalid one, so that it
//! can be followed through sluice into the backend.
//!
//! sluice forwards the context but records no spans of its own, so it never changes the parent
//! id or the flags of a valid one. A new one is `00-<trace id>-<parent id>-00`: random ids, not
//! sampled (sluice has no tracer to decide that). A `tracestate` belongs to the `traceparent`
//! it came with, so it goes when the trace is restarted.
//!
//! Parsing follows the spec strictly (<https://www.w3.org/TR/trace-context/#traceparent-header>):
//! lowercase hex only, version `ff` and all-zero ids invalid, version `00` exactly 55 bytes, a
//! later version accepted when its first 55 bytes parse and anything after them starts with
//! `-`. More than one `traceparent` field is invalid.

use std::fmt;
use std::num::{NonZeroU128, NonZeroU64};

use http::header::{HeaderMap, HeaderName};

use crate::balance::rng;

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// A trace id: 16 bytes, never all zero. Prints as the 32 lowercase hex digits of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(NonZeroU128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What a request's `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Valid(TraceId),
    Missing,
    Invalid,
}

impl Incoming {
    pub fn of(headers: &HeaderMap) -> Incoming {
        let mut fields = headers.get_all(&TRACEPARENT).iter();
        match (fields.next(), fields.next()) {
            (None, _) => Incoming::Missing,
            (Some(value), None) => {
                parse(value.as_bytes()).map_or(Incoming::Invalid, Incoming::Valid)
            }
            // Two fields would be joined with a comma, which no valid value contains.
            (Some(_), Some(_)) => Incoming::Invalid,
        }
    }
}

/// The trace id of a valid `traceparent` value.
pub fn parse(value: &[u8]) -> Option<TraceId> {
    if value.len() < LEN {
        return None;
    }
    let version = hex(&value[0..2])?;
    match version {
        0xff => return None,
        // Version 00 has exactly these fields; a later one may append `-`-led ones.
        0 if value.len() != LEN => return None,
        _ if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace = NonZeroU128::new(hex(&value[3..35])?)?;
    NonZeroU64::new(hex(&value[36..52])? as u64)?;
    hex(&value[53..55])?;
    Some(TraceId(trace))
}

/// Lowercase hex digits (at most 32) as a number; `None` on any other byte.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |n, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u128::from(d))
    })
}

/// Makes sure the request will carry a valid `traceparent`: a valid one stays (with its
/// `tracestate`), otherwise a new one is made (returned, for the caller to add) and the
/// request's invalid one and its `tracestate` (when `tracestate` says there is one) are removed.
/// The trace id the backend sees.
pub fn outgoing(
    headers: &mut HeaderMap,
    incoming: Incoming,
    tracestate: bool,
) -> (TraceId, Option<NewContext>) {
    match incoming {
        Incoming::Valid(id) => (id, None),
        Incoming::Missing | Incoming::Invalid => {
            if incoming == Incoming::Invalid {
                headers.remove(&TRACEPARENT);
            }
            if tracestate {
                headers.remove(&TRACESTATE);
            }
            let context = NewContext::random();
            (context.trace, Some(context))
        }
    }
}

/// A trace context sluice starts: random trace and parent ids, not sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewContext {
    pub trace: TraceId,
    parent: NonZeroU64,
}

impl NewContext {
    pub fn random() -> NewContext {
        let trace = loop {
            let id = u128::from(rng::next_u64()) << 64 | u128::from(rng::next_u64());
            if let Some(id) = NonZeroU128::new(id) {
                break id;
            }
        };
        let parent = loop {
            if let Some(id) = NonZeroU64::new(rng::next_u64()) {
                break id;
            }
        };
        NewContext {
            trace: TraceId(trace),
            parent,
        }
    }

    /// The `traceparent` value: `00-<trace id>-<parent id>-00`.
    pub fn value(&self) -> [u8; LEN] {
        let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let trace = self.trace.0.get();
        buf[3..19].copy_from_slice(&super::hex_u64((trace >> 64) as u64));
        buf[19..35].copy_from_slice(&super::hex_u64(trace as u64));
        buf[36..52].copy_from_slice(&super::hex_u64(self.parent.get()));
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    /// `outgoing` with the new `traceparent` added, as the request path ends up.
    fn propagate(headers: &mut HeaderMap, incoming: Incoming) -> TraceId {
        let tracestate = headers.contains_key(&TRACESTATE);
        let (id, made) = outgoing(headers, incoming, tracestate);
        if let Some(context) = made {
            let value = HeaderValue::from_bytes(&context.value()).unwrap();
            headers.insert(TRACEPARENT.clone(), value);
        }
        id
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parse_table() {
        let long = |rest: &str| format!("{}{rest}", VALID.replacen("00", "cc", 1));
        #[rustfmt::skip]
        let cases: &[(&str, bool)] = &[
            (VALID, true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true),
            // Flags are opaque: bits other than `sampled` are kept, not judged.
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", true),
            // Uppercase hex anywhere.
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", false),
            ("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            // All-zero ids.
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            // Version ff is forbidden, whatever follows.
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            // Version 00 is exactly 55 bytes.
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false),
            // Wrong field lengths or separators.
            ("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", false),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", false),
            (" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false),
            ("", false),
            // A later version: the first 55 bytes as version 00, then nothing or `-...`.
            (&long(""), true),
            (&long("-extra-fields"), true),
            (&long("extra"), false),
            (&long(".x"), false),
        ];
        for (value, valid) in cases {
            assert_eq!(parse(value.as_bytes()).is_some(), *valid, "{value:?}");
        }
    }

    #[test]
    fn the_trace_id_prints_as_written() {
        let id = parse(VALID.as_bytes()).unwrap();
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let small = parse(b"00-00000000000000000000000000000001-0000000000000001-00").unwrap();
        assert_eq!(small.to_string(), "00000000000000000000000000000001");
    }

    #[test]
    fn new_ones_are_valid_distinct_and_unsampled() {
        let (a, b) = (NewContext::random(), NewContext::random());
        assert_ne!(a.trace, b.trace);
        assert_ne!(a.value(), b.value());
        for context in [a, b] {
            let (id, value) = (context.trace, context.value());
            let text = std::str::from_utf8(&value).unwrap();
            assert_eq!(parse(text.as_bytes()), Some(id), "{text}");
            assert_eq!(&text[..3], "00-");
            assert_eq!(&text[3..35], id.to_string());
            assert!(text.ends_with("-00"), "{text}");
        }
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_valid_context_is_forwarded_unchanged() {
        let mut map = headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, "congo=t61rcWkgMzE")]);
        let incoming = Incoming::of(&map);
        let id = propagate(&mut map, incoming);
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(map.get(&TRACEPARENT).unwrap(), VALID);
        assert_eq!(map.get(&TRACESTATE).unwrap(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn a_missing_context_is_created() {
        let mut map = HeaderMap::new();
        let incoming = Incoming::of(&map);
        assert_eq!(incoming, Incoming::Missing);
        let id = propagate(&mut map, incoming);
        assert_eq!(parse(map[&TRACEPARENT].as_bytes()), Some(id));
    }

    #[test]
    fn an_invalid_context_is_replaced_without_its_tracestate() {
        for bad in [
            &[(&TRACEPARENT, "00-xyz")][..],
            &[(&TRACEPARENT, VALID), (&TRACEPARENT, VALID)][..],
        ] {
            let mut map = headers(bad);
            map.append(&TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
            let incoming = Incoming::of(&map);
            assert_eq!(incoming, Incoming::Invalid);
            let id = propagate(&mut map, incoming);
            assert_eq!(map.get_all(&TRACEPARENT).iter().count(), 1);
            assert_eq!(parse(map[&TRACEPARENT].as_bytes()), Some(id));
            assert_ne!(map[&TRACEPARENT], VALID);
            assert!(!map.contains_key(&TRACESTATE));
        }
    }
}
