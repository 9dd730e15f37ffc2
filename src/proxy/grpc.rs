//! What sluice does differently for gRPC requests (`content-type: application/grpc*`): its own
//! answers become gRPC statuses, and the call's deadline (`grpc-timeout`) caps the wait for
//! the backend.
//!
//! gRPC passes through otherwise untouched: requests and responses stream frame by frame, `te:
//! trailers` survives hop-by-hop removal, and trailers (`grpc-status`, `grpc-message`) are
//! frames of the response body like any other. The backend pool must speak HTTP/2
//! (`protocol = "h2"`): gRPC needs trailers, which HTTP/1.1 backends rarely send.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use super::error::ProxyError;
use super::exchange::Exchange;
use super::headers::X_REQUEST_ID;

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The gRPC status codes sluice answers with (a subset of `google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

/// Whether the request is a gRPC call: its content type is `application/grpc` or one of its
/// subtypes (`application/grpc+proto`, `application/grpc-web`...).
/// Whether a `Content-Type` value names gRPC (`headers::Facts::grpc`).
pub fn is_grpc_type(value: &HeaderValue) -> bool {
    value.as_bytes().starts_with(b"application/grpc")
}

/// The gRPC status for a failure sluice answers itself. The HTTP status the failure would
/// have had decides it, following gRPC's own HTTP-to-gRPC mapping, except that sluice's own
/// timeout is the call's deadline running out.
pub fn code(e: &ProxyError) -> Code {
    match e {
        ProxyError::Timeout => Code::DeadlineExceeded,
        // The client's own request stream stopped arriving (408).
        ProxyError::BodyTimeout => Code::DeadlineExceeded,
        ProxyError::NoRoute => Code::Unimplemented,
        ProxyError::BodyTooLarge | ProxyError::HeadersTooLarge | ProxyError::UriTooLong => {
            Code::ResourceExhausted
        }
        ProxyError::BadRequest(_) => Code::Internal,
        // Both ask the client to go elsewhere (a new connection, https): retryable.
        ProxyError::Misdirected | ProxyError::HttpsRedirect(_) => Code::Unavailable,
        ProxyError::NoBackend
        | ProxyError::Overloaded
        | ProxyError::ListenerGone
        | ProxyError::Connect(_)
        | ProxyError::Upstream(_)
        | ProxyError::BadSwitch => Code::Unavailable,
    }
}

/// The gRPC form of `proxy::local_answer`: HTTP 200 with the status in `grpc-status` and the
/// cause in `grpc-message`, headers only ("Trailers-Only"), so gRPC clients report
/// `UNAVAILABLE` and the like instead of a protocol error about an unexpected HTTP status.
///
/// The exchange records the HTTP status the failure would have had (502, 503, 504...), not the
/// 200 that was sent: metrics and the access log keep counting sluice's failures as failures.
pub fn local_answer(
    e: &ProxyError,
    request_id: HeaderValue,
    mut exchange: Option<Exchange>,
) -> Response<ResponseBody> {
    if let Some(exchange) = exchange.as_mut() {
        exchange.set_status(e.status());
        exchange.set_local();
    }
    let mut response = Response::new(ResponseBody::local("", exchange));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(u16::from(code(e) as u8)),
    );
    if let Ok(message) = HeaderValue::from_str(&percent_encode(e.body().trim_end())) {
        headers.insert(GRPC_MESSAGE.clone(), message);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id);
    if e.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Announces gRPC's trailers in a response to an HTTP/1.1 client: hyper writes a trailer field
/// on an HTTP/1.1 connection only when the response's `Trailer` header names it (and the
/// request said `TE: trailers`), and HTTP/2 backends never send `Trailer`.
pub fn announce_trailers(headers: &mut HeaderMap) {
    if !headers.contains_key(header::TRAILER) {
        headers.insert(
            header::TRAILER,
            HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
        );
    }
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The call's deadline from its `grpc-timeout` header: 1 to 8 digits and a unit (`H`ours,
/// `M`inutes, `S`econds, `m`illi-, `u` micro-, `n`anoseconds). `None` when absent or malformed
/// (a malformed one is passed on for the backend to judge, and does not shorten anything).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn grpc_requests_are_known_by_their_content_type() {
        let cases = [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", true),
            ("application/json", false),
            ("text/plain", false),
        ];
        for (ct, want) in cases {
            let facts = crate::proxy::headers::Facts::of(&headers(&[("content-type", ct)]));
            assert_eq!(facts.grpc, want, "{ct}");
        }
        assert!(!crate::proxy::headers::Facts::of(&HeaderMap::new()).grpc);
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_reject_malformed_values() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789m", None), // more than 8 digits
            ("10", None),
            ("m", None),
            ("10x", None),
            ("-1S", None),
            ("", None),
        ];
        for &(value, want) in cases {
            let map: HeaderMap = [(GRPC_TIMEOUT.clone(), HeaderValue::from_str(value).unwrap())]
                .into_iter()
                .collect();
            assert_eq!(timeout(&map), want, "{value:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn each_failure_maps_to_a_grpc_status() {
        let cases = [
            (ProxyError::Timeout, Code::DeadlineExceeded),
            (ProxyError::NoBackend, Code::Unavailable),
            (ProxyError::Overloaded, Code::Unavailable),
            (ProxyError::NoRoute, Code::Unimplemented),
            (ProxyError::BodyTooLarge, Code::ResourceExhausted),
            (ProxyError::BadRequest("x\n"), Code::Internal),
        ];
        for (e, want) in cases {
            assert_eq!(code(&e), want, "{e}");
        }
    }

    #[test]
    fn grpc_answers_are_trailers_only_with_an_encoded_message() {
        let response = local_answer(&ProxyError::NoBackend, HeaderValue::from_static("id"), None);
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "no backend available");
        assert_eq!(h["x-request-id"], "id");
        assert!(hyper::body::Body::is_end_stream(response.body()));
        assert_eq!(percent_encode("50% off: é"), "50%25 off: %C3%A9");
    }
}
