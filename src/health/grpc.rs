//! The standard gRPC health check as an active probe: `grpc.health.v1.Health/Check` over
//! HTTP/2 (prior knowledge) on a fresh connection, passing when the backend answers
//! `SERVING` for the configured service name.
//!
//! The two messages are tiny, so they are encoded and decoded here by hand rather than with a
//! protobuf library: the request is field 1 (`service`, a string), the response field 1
//! (`status`, an enum where `SERVING` is 1).

use bytes::{Buf, Bytes};
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::active::Outcome;
use crate::upstream::Backend;

const PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// A health answer is a few bytes; anything longer is not one.
const MAX_RESPONSE: usize = 1024;

/// Calls `Health/Check` for `service` on `stream` before `deadline`.
pub async fn probe(
    stream: TcpStream,
    backend: &Backend,
    service: &str,
    deadline: Instant,
    user_agent: &'static str,
) -> Outcome {
    let _ = stream.set_nodelay(true);
    let uri = format!("http://{}{PATH}", backend.authority);
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, HeaderValue::from_static(user_agent))
        .body(Full::new(request_message(service)));
    let request = match request {
        Ok(request) => request,
        // Not expected: the authority was validated at load time.
        Err(e) => return Outcome::fail(format!("cannot build the probe request: {e}")),
    };
    let call = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        // The connection runs beside the call and ends with it (this future is dropped).
        tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("invalid response: {e}"))?;
        let (head, body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(format!("status {}", head.status.as_u16()));
        }
        // A trailers-only answer carries its status in the head.
        if let Some(status) = head.headers.get("grpc-status") {
            if status != "0" {
                return Err(format!("grpc-status {}", status.to_str().unwrap_or("?")));
            }
        }
        let collected = http_body_util::Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("invalid response body: {e}"))?;
        if let Some(status) = collected.trailers().and_then(|t| t.get("grpc-status")) {
            if status != "0" {
                return Err(format!("grpc-status {}", status.to_str().unwrap_or("?")));
            }
        }
        serving_status(collected.to_bytes()).ok_or_else(|| "invalid health response".to_string())
    };
    match tokio::time::timeout_at(deadline, call).await {
        Err(_) => Outcome::fail("timeout"),
        Ok(Err(detail)) => Outcome::fail(detail),
        Ok(Ok(SERVING)) => Outcome::pass("SERVING"),
        Ok(Ok(status)) => Outcome::fail(match status {
            0 => "UNKNOWN".to_string(),
            2 => "NOT_SERVING".to_string(),
            3 => "SERVICE_UNKNOWN".to_string(),
            other => format!("serving status {other}"),
        }),
    }
}

/// A length-prefixed, uncompressed gRPC message holding `HealthCheckRequest { service }`.
fn request_message(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

/// The `status` of a length-prefixed `HealthCheckResponse` (0, UNKNOWN, when absent, as
/// protobuf defaults it); `None` when the bytes are not one uncompressed message.
fn serving_status(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() != len {
        return None;
    }
    let mut status = 0;
    while body.has_remaining() {
        let key = get_varint(&mut body)?;
        match key & 7 {
            0 => {
                let value = get_varint(&mut body)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            2 => {
                let len = usize::try_from(get_varint(&mut body)?).ok()?;
                if len > body.len() {
                    return None;
                }
                body.advance(len);
            }
            1 if body.len() >= 8 => body.advance(8),
            5 if body.len() >= 4 => body.advance(4),
            _ => return None,
        }
    }
    Some(status)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(buf: &mut Bytes) -> Option<u64> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_the_service_name() {
        assert_eq!(&request_message("")[..], b"\0\0\0\0\0");
        assert_eq!(&request_message("a.B")[..], b"\0\0\0\0\x05\x0a\x03a.B");
    }

    #[test]
    fn responses_decode_to_their_serving_status() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"\0\0\0\0\x02\x08\x01", Some(1)),
            (b"\0\0\0\0\x02\x08\x02", Some(2)),
            (b"\0\0\0\0\0", Some(0)),                    // default: UNKNOWN
            (b"\0\0\0\0\x05\x12\x01x\x08\x01", Some(1)), // an unknown field skipped
            (b"\x01\0\0\0\x02\x08\x01", None),           // compressed
            (b"\0\0\0\0\x03\x08\x01", None),             // length disagrees
            (b"\0\0\0\0\x01\x08", None),                 // cut varint
            (b"\0\0", None),
        ];
        for &(bytes, want) in cases {
            assert_eq!(serving_status(Bytes::from_static(bytes)), want, "{bytes:?}");
        }
    }
}
