use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::answer::{chunk_size, encode_head, http_date};
use super::*;
use crate::proxy::body::ResponseBody;

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
        head.starts_with("Length(5) false\nHTTP/1.1 404 Not Found\r\ncontent-length: 5\r\ndate: "),
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
    assert!(head_of(400, &[("connection", "close")], "x", false).starts_with("Length(1) true\n"));
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
    let parsed = parse(&mut buf, &Limits::NONE);
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
        match parse(&mut buf, &Limits::NONE) {
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
