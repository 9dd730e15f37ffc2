//! Strict framing and local answers: every malformed request is sent as raw bytes to a real
//! sluice in front of a real backend; sluice must answer it itself, close the connection, and
//! never let the backend see it. Local answers (404, 502) carry a plain-text cause and a request
//! id.

mod support;

use support::raw::*;
use support::*;

/// Sends `request` on a fresh connection to a sluice in front of a recording backend, and
/// checks that sluice answered `status` itself, said nothing more, closed the connection, and
/// that the backend saw nothing.
fn assert_rejected(request: &[u8], status: u16) -> RawResponse {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    assert_rejected_by(&sluice, &backend, request, status)
}

fn assert_rejected_by(
    sluice: &TestSluice,
    backend: &TestBackend,
    request: &[u8],
    status: u16,
) -> RawResponse {
    let shown = String::from_utf8_lossy(&request[..request.len().min(300)]).into_owned();
    let mut conn = RawConn::open(sluice.addr());
    conn.send(request);
    let response = conn.response();
    assert_eq!(
        response.status(),
        status,
        "request {shown:?} got {response:?}"
    );
    assert!(
        response.status_line.starts_with("HTTP/1.1 "),
        "{:?}",
        response.status_line
    );
    let (rest, closed) = conn.rest();
    assert_eq!(rest, "", "more bytes after the answer to {shown:?}");
    assert!(closed, "connection left open after answering {shown:?}");
    assert!(
        backend.seen().is_empty(),
        "backend saw {:?} for {shown:?}",
        backend.seen()
    );
    response
}

// ---- Content-Length and Transfer-Encoding ----

#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn transfer_encoding_before_content_length_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn repeated_transfer_encoding_headers_are_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn stacked_gzip_then_chunked_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn chunked_not_last_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn unknown_transfer_coding_xchunked_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn identity_transfer_coding_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: identity\r\n\r\nhello",
        400,
    );
}

#[test]
fn duplicate_content_length_with_same_value_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    );
}

#[test]
fn duplicate_content_length_with_different_values_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
}

#[test]
fn content_length_list_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 5\r\n\r\nhello",
        400,
    );
}

#[test]
fn non_numeric_content_length_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: abc\r\n\r\nhello",
        400,
    );
}

#[test]
fn negative_content_length_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: -5\r\n\r\nhello",
        400,
    );
}

#[test]
fn signed_content_length_is_rejected() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: +5\r\n\r\nhello",
        400,
    );
}

// ---- Host and the request target ----

#[test]
fn http11_without_host_is_rejected() {
    assert_rejected(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400);
}

#[test]
fn duplicate_host_is_rejected() {
    assert_rejected(
        b"GET / HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\n\r\n",
        400,
    );
}

#[test]
fn absolute_form_naming_another_host_is_rejected() {
    assert_rejected(
        b"GET http://evil.example/ HTTP/1.1\r\nHost: good\r\n\r\n",
        400,
    );
}

#[test]
fn connect_is_rejected() {
    assert_rejected(
        b"CONNECT host.example:443 HTTP/1.1\r\nHost: host.example:443\r\n\r\n",
        400,
    );
}

#[test]
fn upgrade_to_h2c_is_rejected() {
    assert_rejected(
        b"GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        400,
    );
}

// ---- bodies ----

#[test]
fn invalid_chunk_size_is_not_forwarded_as_a_complete_request() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let mut conn = RawConn::open(sluice.addr());
    conn.send(
        b"POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    let response = conn.response();
    assert!(matches!(response.status(), 400 | 502), "got {response:?}");
    let (rest, closed) = conn.rest();
    assert_eq!(rest, "", "more bytes after the answer");
    assert!(closed, "connection left open after a broken chunked body");
    // The head was valid, so the backend may have seen it start; it must never have seen a
    // complete request carrying the body (its recorder stores an empty body when the request
    // broke off).
    for seen in backend.seen() {
        assert!(
            seen.body.is_empty(),
            "backend received a body from a broken chunked request: {seen:?}"
        );
    }
}

#[test]
fn smuggled_request_never_reaches_the_backend() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    // The body, read as chunked, carries a whole second request; a hop that forwards it and
    // a next hop that honours `Content-Length: 0` would see that request as a new one.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n\
{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    let mut conn = RawConn::open(sluice.addr());
    conn.send(request.as_bytes());
    let response = conn.response();
    let (rest, closed) = conn.rest();
    // First what matters most: the smuggled request never arrives as a request of its own.
    let seen = backend.seen();
    assert!(
        seen.iter().all(|s| s.uri.path() != "/smuggled"),
        "smuggled request reached the backend: {seen:?}"
    );
    assert!(
        seen.len() <= 1,
        "backend saw {} requests: {seen:?}",
        seen.len()
    );
    // And the ambiguous request is not forwarded at all.
    assert_eq!(
        response.status_line, "HTTP/1.1 400 Bad Request",
        "{response:?}"
    );
    assert_eq!(rest, "", "more bytes after the answer");
    assert!(closed, "connection left open after an ambiguous request");
    assert!(seen.is_empty(), "backend saw {seen:?}");
}

// ---- limits ----

/// A sluice with `max_uri_bytes = 1024` in front of a recording backend.
fn with_uri_limit_1024() -> (TestBackend, TestSluice) {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[backend.addr],
        "",
        "max_uri_bytes = 1024",
        "",
    ));
    (backend, sluice)
}

#[test]
fn over_long_uri_gets_414() {
    let (backend, sluice) = with_uri_limit_1024();
    let path = format!("/{}", "a".repeat(1999));
    let request = format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n");
    let response = assert_rejected_by(&sluice, &backend, request.as_bytes(), 414);
    assert_eq!(response.status_line, "HTTP/1.1 414 URI Too Long");

    // The limit is the only reason: a URI under it goes through on the same sluice.
    let mut conn = RawConn::open(sluice.addr());
    conn.send(format!("GET /{} HTTP/1.1\r\nHost: app\r\n\r\n", "b".repeat(900)).as_bytes());
    assert_eq!(conn.response().status(), 200);
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn over_large_head_gets_431() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[backend.addr],
        "",
        "max_header_bytes = 4096",
        "",
    ));
    let request = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
        "x".repeat(6000)
    );
    let response = assert_rejected_by(&sluice, &backend, request.as_bytes(), 431);
    assert_eq!(
        response.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    let mut conn = RawConn::open(sluice.addr());
    conn.send(
        format!(
            "GET / HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
            "x".repeat(3000)
        )
        .as_bytes(),
    );
    assert_eq!(conn.response().status(), 200);
    assert_eq!(backend.seen().len(), 1);
}

// ---- what is accepted ----

#[test]
fn http10_without_host_is_forwarded() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET /old HTTP/1.0\r\nAccept: */*\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.text(), "app");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].uri, "/old");
    assert_eq!(seen[0].headers["accept"], "*/*");
}

// ---- local answers ----

fn assert_local_answer(response: &RawResponse, status: u16, cause: &str) {
    assert_eq!(response.status(), status, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "content-type {content_type:?}"
    );
    let text = response.text();
    assert!(!text.trim().is_empty() && text.len() < 200, "body {text:?}");
    assert!(
        text.to_ascii_lowercase().contains(cause),
        "body {text:?} does not name {cause:?}"
    );
    let id = response.header("x-request-id").unwrap_or_default();
    assert!(!id.is_empty(), "no x-request-id in {response:?}");
}

#[test]
fn no_route_gets_a_plain_text_404() {
    let backend = TestBackend::start("app");
    let config = format!(
        r#"
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
host = "only.example"
pool = "app"

[pool.app]
backends = [{}]
"#,
        backend_list(&[&backend])
    );
    let sluice = TestSluice::start(&config);
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET /x HTTP/1.1\r\nHost: other.example\r\n\r\n");
    let response = conn.response();
    assert_local_answer(&response, 404, "route");
    assert!(backend.seen().is_empty());

    // The route itself works: only the host made the difference.
    conn.send(b"GET /x HTTP/1.1\r\nHost: only.example\r\n\r\n");
    assert_eq!(conn.response().status(), 200);
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn refused_backend_gets_a_plain_text_502() {
    let refused = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let config = format!(
        r#"
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
backends = [{{ address = "{refused}" }}]
"#
    );
    let sluice = TestSluice::start(&config);
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: app\r\nX-Request-Id: trace-502\r\n\r\n");
    let response = conn.response();
    assert_local_answer(&response, 502, "backend");
    assert_eq!(response.header("x-request-id"), Some("trace-502"));
}

// ---- every refusal is a proper local answer ----

#[test]
fn every_refused_head_gets_a_plain_text_cause_and_a_request_id() {
    let cases: &[(&[u8], u16, &str)] = &[
        (b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "transfer-encoding"),
        (b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, "content-length"),
        (b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "content-length"),
        (b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: abc\r\n\r\n", 400, "content-length"),
        (b"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 5\r\n\r\nhello", 400, "content-length"),
        (b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "transfer-encoding"),
        (b"POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: identity\r\n\r\n", 400, "transfer-encoding"),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "transfer-encoding"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "host"),
        (b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n", 400, "connect"),
    ];
    for (request, status, cause) in cases {
        let response = assert_rejected(request, *status);
        assert_local_answer(&response, *status, cause);
    }
}

#[test]
fn heads_beyond_the_default_limits_get_431_and_414_with_a_cause() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    // Default max_header_bytes is 64 KiB: a 100 KiB head is refused before hyper's buffer fills.
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n",
        "x".repeat(100 * 1024)
    );
    let response = assert_rejected_by(&sluice, &backend, big_head.as_bytes(), 431);
    assert_local_answer(&response, 431, "too large");
    // More header lines than hyper takes (100).
    let many = format!(
        "GET / HTTP/1.1\r\nHost: app\r\n{}\r\n",
        (0..120)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    let response = assert_rejected_by(&sluice, &backend, many.as_bytes(), 431);
    assert_local_answer(&response, 431, "too large");
    // Default max_uri_bytes is 8 KiB.
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: app\r\n\r\n",
        "u".repeat(20 * 1024)
    );
    let response = assert_rejected_by(&sluice, &backend, long_uri.as_bytes(), 414);
    assert_local_answer(&response, 414, "too long");
}

#[test]
fn a_bad_head_pipelined_behind_a_good_one_is_refused_after_it() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let mut conn = RawConn::open(sluice.addr());
    conn.send(
        b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    );
    let first = conn.response();
    assert_eq!(first.status(), 200, "{first:?}");
    let second = conn.response();
    assert_local_answer(&second, 400, "content-length");
    let (rest, closed) = conn.rest();
    assert_eq!(rest, "");
    assert!(closed);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/first");
}

/// sluice's own HTTP/1 side serves bodiless `GET`s without the framing scanner, and hands any
/// other head to hyper from its first byte: the scanner still judges every one of those, after
/// any number of `GET`s, in separate reads or pipelined behind them.
#[test]
fn heads_after_gets_served_by_sluices_own_side_are_still_scanned() {
    let (backend, sluice) = with_uri_limit_1024();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n");

    // `Content-Length` with `Transfer-Encoding`: hyper alone would drop the length and forward.
    let mut conn = RawConn::open(sluice.addr());
    for path in ["/one", "/two"] {
        conn.send(get(path).as_bytes());
        assert_eq!(conn.response().status(), 200);
    }
    conn.send(
        b"POST /smuggled HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_local_answer(
        &conn.response(),
        400,
        "both content-length and transfer-encoding",
    );
    assert_eq!(conn.rest(), (String::new(), true));

    // A head past a limit, pipelined behind a `GET` in one write, and in a read of its own.
    for pipelined in [true, false] {
        let mut conn = RawConn::open(sluice.addr());
        let long = get(&format!("/{}", "u".repeat(2000)));
        match pipelined {
            true => conn.send(format!("{}{long}", get("/three")).as_bytes()),
            false => conn.send(get("/three").as_bytes()),
        }
        assert_eq!(conn.response().status(), 200);
        if !pipelined {
            conn.send(long.as_bytes());
        }
        assert_local_answer(&conn.response(), 414, "too long");
        assert_eq!(conn.rest(), (String::new(), true));
    }
    let seen: Vec<String> = backend.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(seen, ["/one", "/two", "/three", "/three"]);
}

/// Bytes that hyper reads as chunked trailers must not look like request heads to sluice's own
/// framing scanner, or a later refused request could slip through under another's verdict.
#[test]
fn requests_hidden_in_chunked_trailers_never_shift_the_verdicts() {
    let smuggles: [&[u8]; 2] = [
        b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /p HTTP/1.1\r\nHost: app\r\n\r\n\
          POST /smuggled HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nPRI * HTTP/2.0\r\n\r\n\
          POST /smuggled HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    ];
    for bytes in smuggles {
        let backend = TestBackend::start("app");
        let sluice = TestSluice::start(&simple_config(&[&backend]));
        let mut conn = RawConn::open(sluice.addr());
        conn.send(bytes);
        let _ = conn.rest();
        let seen: Vec<String> = backend.seen().iter().map(|s| s.uri.to_string()).collect();
        assert!(
            seen.iter().all(|uri| uri == "/a"),
            "backend saw {seen:?} for {}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// A refusal never cuts into the response before it: a large answer still draining to a slow
/// reader arrives whole, and the refusal comes after it.
#[test]
fn a_refusal_waits_for_the_previous_response_to_drain() {
    const SIZE: usize = 3 * 1024 * 1024;
    let big = TestBackend::with_handler(
        "big",
        Default::default(),
        std::sync::Arc::new(|_req| Box::pin(async { http::Response::new(full(vec![b'z'; SIZE])) })),
    );
    let sluice = TestSluice::start(&simple_config(&[&big]));
    for round in 0..5 {
        let mut conn = RawConn::open(sluice.addr());
        conn.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n");
        // Read only the start, so most of the answer is still queued in sluice...
        let mut first = [0u8; 64 * 1024];
        let mut got = 0;
        while got < first.len() {
            got += std::io::Read::read(&mut conn.stream(), &mut first[got..]).unwrap();
        }
        // ...then send a head that must be refused.
        conn.send(
            b"POST /x HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        );
        let (rest, closed) = conn.rest();
        let mut all = first.to_vec();
        all.extend_from_slice(rest.as_bytes());
        let text = String::from_utf8_lossy(&all);
        let body_start = text.find("\r\n\r\n").unwrap() + 4;
        let after = &text[body_start..];
        let zs = after.bytes().take_while(|&b| b == b'z').count();
        assert_eq!(zs, SIZE, "round {round}: the first response was cut");
        let tail = &after[SIZE..];
        assert!(
            tail.starts_with("HTTP/1.1 400"),
            "round {round}: then {tail:?}"
        );
        assert!(closed);
    }
}
