//! sluice's own HTTP/1.1 server side (`listener::h1`), spoken to byte by byte: keep-alive and
//! pipelining of bodiless `GET`s, the hand-off to hyper of every other request (mid-connection
//! and pipelined, with every byte read so far), the framing of the answers (length, chunked,
//! none for 204 and 304, `Date`, `Connection: close`), clients that leave early, and heads
//! that arrive in pieces. Every test runs a real sluice in front of a real backend.

mod support;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use support::gate::{stream_chunks, Gate, GatedBackend};
use support::raw::*;
use support::reload::{metrics, series};
use support::*;

/// The chunks `GET /chunked` answers with, of sizes that need one to five hex digits.
fn chunks() -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"a"),
        Bytes::from(vec![b'b'; 4096]),
        Bytes::from(vec![b'c'; 70_000]),
        Bytes::from_static(b"end"),
    ]
}

/// A backend that records every request and answers `200` with `{method} {uri}` as its body
/// (its length known). Some paths answer otherwise:
/// - `/chunked`: `chunks()`, with no length (so the backend sends it chunked);
/// - `/late`: its head at once, its body (`late`, with no length) once `gate` opens;
/// - `/held...`: the usual answer, once `gate` opens;
/// - `/status/204`: `204`; `/status/304`: `304` with an `etag`.
fn echoing_backend() -> (TestBackend, Gate) {
    let gate = Gate::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, held) = (seen.clone(), gate.clone());
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        let (record, held) = (record.clone(), held.clone());
        Box::pin(async move {
            let seen = Seen::of(req).await;
            let echo = format!("{} {}", seen.method, seen.uri);
            let path = seen.uri.path().to_string();
            record.lock().unwrap().push(seen);
            let response = Response::builder();
            match path.as_str() {
                "/chunked" => response.body(unsized_body(stream::iter(chunks()))).unwrap(),
                "/late" => {
                    let late = stream::once(async move {
                        held.pass().await;
                        Bytes::from_static(b"late")
                    });
                    response.body(unsized_body(late)).unwrap()
                }
                "/status/204" => response
                    .status(StatusCode::NO_CONTENT)
                    .body(full(""))
                    .unwrap(),
                "/status/304" => response
                    .status(StatusCode::NOT_MODIFIED)
                    .header("etag", "\"v1\"")
                    .body(full(""))
                    .unwrap(),
                _ => {
                    if path.starts_with("/held") {
                        held.pass().await;
                    }
                    response.body(full(echo)).unwrap()
                }
            }
        })
    });
    (TestBackend::with_handler("echo", seen, handler), gate)
}

/// The echoing backend (and its gate) behind a sluice, and a raw connection to that sluice.
fn echo_sluice() -> (TestBackend, Gate, TestSluice, RawConn) {
    let (backend, gate) = echoing_backend();
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let conn = RawConn::open(sluice.addr());
    (backend, gate, sluice, conn)
}

/// A body of `pieces`, of no length known in advance: hyper sends it chunked.
fn unsized_body(pieces: impl Stream<Item = Bytes> + Send + Sync + 'static) -> Body {
    let frames = pieces.map(|piece| Ok::<_, Infallible>(Frame::data(piece)));
    BodyExt::boxed(StreamBody::new(frames))
}

/// A bodiless `GET` of `path` that sluice's own side serves.
fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n")
}

/// A `POST` of `path` with `body` and its `Content-Length`: hyper's to serve.
fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Checks that `response` is a `200` whose body is `body`, framed by a `Content-Length` that
/// matches it, with one well-formed `Date` and no `Connection: close`.
fn assert_answer(response: &RawResponse, body: &str) {
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.text(), body, "{response:?}");
    assert_eq!(
        response.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{response:?}"
    );
    assert_eq!(response.header("transfer-encoding"), None, "{response:?}");
    assert_eq!(response.header("connection"), None, "{response:?}");
    assert_one_date(response);
}

/// Exactly one `Date`, as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn assert_one_date(response: &RawResponse) {
    let dates: Vec<&str> = response
        .headers
        .iter()
        .filter(|(name, _)| name == "date")
        .map(|(_, value)| value.as_str())
        .collect();
    let [date] = dates[..] else {
        panic!("want one date, got {dates:?} in {response:?}");
    };
    assert_eq!(date.len(), 29, "{date:?}");
    assert!(
        date.ends_with(" GMT") && date.as_bytes()[3] == b',',
        "{date:?}"
    );
}

/// The paths the backend saw, in order.
fn paths(backend: &TestBackend) -> Vec<String> {
    backend.seen().iter().map(|s| s.uri.to_string()).collect()
}

/// The connection is still open and serves a next `GET` with nothing stray before its answer.
fn assert_serves_next(conn: &mut RawConn, path: &str) {
    conn.send(get_request(path).as_bytes());
    let response = conn.response();
    assert_answer(&response, &format!("GET {path}"));
}

/// Reads a response head, which must be a `200` with a chunked body.
fn read_chunked_ok_head(conn: &mut RawConn) {
    let (status_line, headers) = read_head(conn);
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    assert!(
        headers.contains(&"transfer-encoding: chunked".to_string()),
        "{headers:?}"
    );
}

/// Reads a response's status line and its fields (lower-cased `name: value` lines) off
/// `conn`, leaving its body unread.
fn read_head(conn: &mut RawConn) -> (String, Vec<String>) {
    let status_line = conn.take_line();
    let mut headers = Vec::new();
    loop {
        let line = conn.take_line();
        if line.is_empty() {
            return (status_line, headers);
        }
        headers.push(line.to_ascii_lowercase());
    }
}

/// Reads one chunk of a chunked body; empty: the last chunk, read with the trailer section.
fn next_chunk(conn: &mut RawConn) -> Vec<u8> {
    let line = conn.take_line();
    let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
        .unwrap_or_else(|_| panic!("bad chunk-size line {line:?}"));
    if size == 0 {
        while !conn.take_line().is_empty() {}
        return Vec::new();
    }
    let data = conn.take_exact(size);
    assert_eq!(conn.take_line(), "", "chunk not followed by CRLF");
    data
}

/// Reads the rest of a chunked body, decoded.
fn read_chunked(conn: &mut RawConn) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let chunk = next_chunk(conn);
        if chunk.is_empty() {
            return body;
        }
        body.extend(chunk);
    }
}

/// A backend on a thread of its own that reads request heads (no bodies) off each connection
/// and writes `answer(path)` for each, keeping the connection open.
fn raw_backend(answer: fn(&str) -> String) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = find(&read, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&read[..end]).into_owned();
                        read.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/");
                        if stream.write_all(answer(path).as_bytes()).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// Whether a new connection to `addr` is refused (or closed unanswered).
fn refuses(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
}

#[test]
fn keep_alive_serves_many_gets_on_one_connection_and_one_upstream_connection() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    for i in 0..5 {
        conn.send(get_request(&format!("/ka/{i}?q={i}")).as_bytes());
        let response = conn.response();
        assert_eq!(response.status_line, "HTTP/1.1 200 OK");
        assert_answer(&response, &format!("GET /ka/{i}?q={i}"));
    }
    assert_eq!(
        paths(&backend),
        [
            "/ka/0?q=0",
            "/ka/1?q=1",
            "/ka/2?q=2",
            "/ka/3?q=3",
            "/ka/4?q=4"
        ]
    );
    assert_eq!(
        backend.connections_accepted(),
        1,
        "the upstream connection was not reused"
    );
    for seen in backend.seen() {
        assert_eq!(seen.method, http::Method::GET);
        assert_eq!(seen.headers["host"], "app.test");
        assert!(seen.body.is_empty());
    }
}

#[test]
fn pipelined_gets_are_answered_in_order() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    let pipelined: String = ["/first", "/second", "/third"]
        .iter()
        .map(|p| get_request(p))
        .collect();
    conn.send(pipelined.as_bytes());
    for path in ["/first", "/second", "/third"] {
        assert_answer(&conn.response(), &format!("GET {path}"));
    }
    assert_serves_next(&mut conn, "/fourth");
    assert_eq!(paths(&backend), ["/first", "/second", "/third", "/fourth"]);
}

/// A pipelined request whose head is cut in the middle of the first write: the start waits
/// while the first is answered, and the rest completes it.
#[test]
fn a_pipelined_head_split_across_writes_is_completed_and_answered() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    let second = get_request("/second");
    let (start, rest) = second.split_at(12);
    conn.send(format!("{}{start}", get_request("/first")).as_bytes());
    assert_answer(&conn.response(), "GET /first");
    conn.send(rest.as_bytes());
    assert_answer(&conn.response(), "GET /second");
    assert_eq!(paths(&backend), ["/first", "/second"]);
}

#[test]
fn a_post_mid_connection_goes_to_hyper_with_its_body_and_the_connection_goes_on() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    conn.send(get_request("/one").as_bytes());
    assert_answer(&conn.response(), "GET /one");
    conn.send(post_request("/two", "hello, body").as_bytes());
    assert_answer(&conn.response(), "POST /two");
    // The head alone first, its body in a later write: hyper reads the rest off the socket.
    let post = post_request("/three", "split body");
    let (head, body) = post.split_at(post.len() - 6);
    conn.send(head.as_bytes());
    conn.send(body.as_bytes());
    assert_answer(&conn.response(), "POST /three");
    // A chunked request body is hyper's too, and arrives decoded.
    conn.send(
        b"POST /four HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_answer(&conn.response(), "POST /four");
    assert_serves_next(&mut conn, "/five");

    let seen = backend.seen();
    let got: Vec<(String, &[u8])> = seen
        .iter()
        .map(|s| (format!("{} {}", s.method, s.uri), &s.body[..]))
        .collect();
    assert_eq!(
        got,
        [
            ("GET /one".to_string(), &b""[..]),
            ("POST /two".to_string(), b"hello, body"),
            ("POST /three".to_string(), b"split body"),
            ("POST /four".to_string(), b"hello world"),
            ("GET /five".to_string(), b""),
        ]
    );
    // Upstream connections are kept alive across the hand-off: one per upstream client (the
    // bodiless requests go by sluice's own, those with bodies by hyper's).
    assert!(
        backend.connections_accepted() <= 2,
        "{} upstream connections for 5 requests",
        backend.connections_accepted()
    );
}

/// A `GET` and a `POST` with its body in one write: sluice's side answers the `GET`, then hands
/// hyper the `POST` it had already read, body and all, and the requests after it.
#[test]
fn a_post_pipelined_behind_a_get_is_handed_to_hyper_whole() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    let pipelined = format!(
        "{}{}{}",
        get_request("/a"),
        post_request("/b", "pipelined body"),
        get_request("/c")
    );
    conn.send(pipelined.as_bytes());
    assert_answer(&conn.response(), "GET /a");
    assert_answer(&conn.response(), "POST /b");
    assert_answer(&conn.response(), "GET /c");
    assert_serves_next(&mut conn, "/d");
    let seen = backend.seen();
    assert_eq!(paths(&backend), ["/a", "/b", "/c", "/d"]);
    assert_eq!(seen[1].method, http::Method::POST);
    assert_eq!(&seen[1].body[..], b"pipelined body");
}

#[test]
fn connection_close_is_answered_with_close_and_the_connection_ends() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    conn.send(get_request("/warm").as_bytes());
    assert_answer(&conn.response(), "GET /warm");
    // A request pipelined behind the closing one is never served.
    conn.send(
        format!(
            "GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Close\r\n\r\n{}",
            get_request("/never")
        )
        .as_bytes(),
    );
    let response = conn.response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.text(), "GET /last");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert_one_date(&response);
    let (rest, closed) = conn.rest();
    assert_eq!(rest, "", "bytes after the last answer");
    assert!(closed, "connection still open after `Connection: close`");
    assert_eq!(paths(&backend), ["/warm", "/last"]);
}

#[test]
fn a_body_of_unknown_length_is_sent_chunked_and_the_connection_goes_on() {
    let (_backend, _, _sluice, mut conn) = echo_sluice();
    conn.send(get_request("/chunked").as_bytes());
    let response = conn.response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("content-length"), None);
    assert_one_date(&response);
    assert_eq!(response.body, chunks().concat());
    assert_serves_next(&mut conn, "/after-chunked");
}

/// An answer whose body is slow to start: its head reaches the client while the body waits
/// (a long poll, say), not with the body's first bytes.
#[test]
fn a_head_goes_out_while_the_body_waits() {
    let (_backend, gate, _sluice, mut conn) = echo_sluice();
    conn.send(get_request("/late").as_bytes());
    read_chunked_ok_head(&mut conn);
    assert_eq!(gate.arrived(), 1, "the body was made already");
    gate.open();
    assert_eq!(read_chunked(&mut conn), b"late");
    assert_serves_next(&mut conn, "/after-late");
}

/// A body made slowly: each piece reaches the client as the backend sends it, not once the
/// body is complete (`GatedBackend`'s `/stream`: the first chunk at once, the rest once its
/// gate opens).
#[test]
fn a_slow_body_is_relayed_as_it_comes() {
    let backend = GatedBackend::start("slow");
    let sluice = TestSluice::start(&config_with(&[backend.addr()], "", "", ""));
    let mut conn = RawConn::open(sluice.addr());
    conn.send(get_request("/stream").as_bytes());
    read_chunked_ok_head(&mut conn);
    let chunks = stream_chunks("slow");
    let mut body = Vec::new();
    while body.len() < chunks[0].len() {
        let chunk = next_chunk(&mut conn);
        assert!(!chunk.is_empty(), "the body ended early: {body:?}");
        body.extend(chunk);
    }
    assert_eq!(
        body,
        chunks[0].as_bytes(),
        "more than the first chunk before the gate opened"
    );
    backend.gate.open();
    body.extend(read_chunked(&mut conn));
    assert_eq!(body, chunks.concat().as_bytes());
    conn.send(get_request("/after-stream").as_bytes());
    assert_answer(&conn.response(), "slow");
}

#[test]
fn answers_204_and_304_carry_no_body_and_the_connection_goes_on() {
    let (_backend, _, _sluice, mut conn) = echo_sluice();

    conn.send(get_request("/status/204").as_bytes());
    let response = conn.head_response();
    assert_eq!(response.status_line, "HTTP/1.1 204 No Content");
    assert_eq!(response.header("transfer-encoding"), None, "{response:?}");
    assert_eq!(response.header("content-length"), None, "{response:?}");
    assert_one_date(&response);
    assert_serves_next(&mut conn, "/after-204");

    conn.send(get_request("/status/304").as_bytes());
    let response = conn.head_response();
    assert_eq!(response.status_line, "HTTP/1.1 304 Not Modified");
    assert_eq!(response.header("etag"), Some("\"v1\""));
    assert_eq!(response.header("transfer-encoding"), None, "{response:?}");
    assert_one_date(&response);
    assert_serves_next(&mut conn, "/after-304");

    // Both pipelined, with a GET behind each.
    let pipelined: String = ["/status/204", "/p1", "/status/304", "/p2"]
        .iter()
        .map(|p| get_request(p))
        .collect();
    conn.send(pipelined.as_bytes());
    assert_eq!(conn.head_response().status(), 204);
    assert_answer(&conn.response(), "GET /p1");
    assert_eq!(conn.head_response().status(), 304);
    assert_answer(&conn.response(), "GET /p2");
}

/// A `304` with a `Content-Length` (the length of the representation it stands for, RFC 9110
/// section 8.6; hyper's servers drop it, so the backend here writes its answers itself): the
/// length goes through, and no body follows the head.
#[test]
fn a_304_keeps_its_length_and_has_no_body() {
    let backend = raw_backend(|path| match path {
        "/not-modified" => {
            "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n".to_string()
        }
        _ => {
            let body = format!("GET {path}");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    });
    let sluice = TestSluice::start(&config_with(&[backend], "", "", ""));
    let mut conn = RawConn::open(sluice.addr());
    for _ in 0..2 {
        conn.send(get_request("/not-modified").as_bytes());
        let response = conn.head_response();
        assert_eq!(response.status_line, "HTTP/1.1 304 Not Modified");
        assert_eq!(
            response.header("content-length"),
            Some("1234"),
            "{response:?}"
        );
        assert_eq!(response.header("transfer-encoding"), None, "{response:?}");
        // The backend sends no `Date`: this one is sluice's.
        assert_one_date(&response);
        assert_serves_next(&mut conn, "/after-304");
    }
}

/// The header maps of requests already sent are filled again by the next heads read on the
/// worker: nothing of one request's fields reaches the backend with the next.
#[test]
fn a_request_carries_only_its_own_fields() {
    let (backend, _gate, _sluice, mut conn) = echo_sluice();
    conn.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\nX-Secret: one\r\nAccept: a/b\r\n\r\n");
    assert_eq!(conn.response().status(), 200);
    conn.send(b"GET /second HTTP/1.1\r\nHost: app.test\r\nX-Other: two\r\n\r\n");
    assert_eq!(conn.response().status(), 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].headers["x-secret"], "one");
    assert_eq!(seen[0].headers["accept"], "a/b");
    let second = &seen[1].headers;
    assert_eq!(second["x-other"], "two");
    assert!(
        second.get("x-secret").is_none() && second.get("accept").is_none(),
        "{second:?}"
    );
    assert_eq!(second.get_all("host").iter().count(), 1, "{second:?}");
}

/// A backend's field lines go out as it wrote them (names in its case, in its order, its
/// `Content-Length` and `Date` where they were), except the hop-by-hop ones; a line written
/// otherwise than `name: value` CRLF is written anew, and a length given twice or as a list is
/// given once.
#[test]
fn a_backends_field_lines_go_out_as_written_or_written_anew() {
    let backend = raw_backend(|path| match path {
        "/plain" => "HTTP/1.1 200 OK\r\nServer: Raw\r\nDate: Sat, 21 Nov 2026 10:00:00 GMT\r\n\
                     X-Spaced:   padded\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
                     X-Tab:\tv\r\nETag: \"e\"\r\n\r\nok"
            .to_string(),
        "/bare" => "HTTP/1.1 200 OK\nServer: Raw\nContent-Length: 2\nX-After: 1\n\nok".to_string(),
        _ => "HTTP/1.1 200 OK\r\nServer: Raw\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\
              X-After: 1\r\n\r\nok"
            .to_string(),
    });
    let sluice = TestSluice::start(&config_with(&[backend], "", "", ""));
    let mut conn = RawConn::open(sluice.addr());
    let mut lines = |path: &str| -> Vec<String> {
        conn.send(get_request(path).as_bytes());
        let mut lines = Vec::new();
        loop {
            let line = conn.take_line();
            if line.is_empty() {
                break;
            }
            // The request id is sluice's own, new each time.
            if !line.starts_with("x-request-id: ") {
                lines.push(line);
            }
        }
        assert_eq!(conn.take_exact(2), b"ok");
        lines
    };
    assert_eq!(
        lines("/plain"),
        [
            "HTTP/1.1 200 OK",
            "Server: Raw",
            "Date: Sat, 21 Nov 2026 10:00:00 GMT",
            "X-Spaced: padded",
            "Content-Length: 2",
            "X-Tab: v",
            "ETag: \"e\"",
        ]
    );
    // Bare line feeds are not passed on: every line ends in CRLF (`take_line` would keep a
    // bare LF inside a line). sluice adds the `Date` the backend did not send.
    let bare = lines("/bare");
    assert_eq!(
        bare[..4],
        [
            "HTTP/1.1 200 OK",
            "Server: Raw",
            "Content-Length: 2",
            "X-After: 1"
        ]
    );
    assert_eq!(bare.len(), 5, "{bare:?}");
    assert!(bare[4].starts_with("date: "), "{bare:?}");
    let listed = lines("/listed");
    assert_eq!(
        listed[..3],
        ["HTTP/1.1 200 OK", "Server: Raw", "X-After: 1"]
    );
    assert!(
        listed.contains(&"content-length: 2".to_string()),
        "{listed:?}"
    );
    let lengths = listed
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("content-length"));
    assert_eq!(lengths.count(), 1, "{listed:?}");
}

/// A backend's own `X-Request-Id` fields (in any case) give way to sluice's one, the request's
/// id, on sluice's own side where the backend's fields are written as they came.
#[test]
fn the_request_id_replaces_the_backends_own() {
    let backend = raw_backend(|_| {
        "HTTP/1.1 200 OK\r\nX-Request-ID: from-backend\r\nServer: raw\r\n\
         x-request-id: again\r\nContent-Length: 2\r\n\r\nok"
            .to_string()
    });
    let sluice = TestSluice::start(&config_with(&[backend], "", "", ""));
    let mut conn = RawConn::open(sluice.addr());
    let ids = |response: &RawResponse| -> Vec<String> {
        let named = response.headers.iter().filter(|(n, _)| n == "x-request-id");
        named.map(|(_, v)| v.clone()).collect()
    };
    conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Request-Id: client-7\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.text(), "ok");
    assert_eq!(ids(&response), ["client-7"], "{response:?}");
    assert_eq!(response.header("server"), Some("raw"), "{response:?}");

    conn.send(get_request("/").as_bytes());
    let response = conn.response();
    let generated = ids(&response);
    assert_eq!(generated.len(), 1, "{response:?}");
    assert_eq!(generated[0].len(), 32, "{response:?}");
    assert!(
        generated[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "{response:?}"
    );
}

/// A client that leaves while its `GET` waits at a slow backend: the request is dropped and
/// counted as 499, and sluice serves the next client as before.
#[test]
fn a_client_leaving_mid_request_is_counted_499_and_sluice_serves_on() {
    let (backend, gate) = echoing_backend();
    let sluice = TestSluice::start(&config_with(
        &[backend.addr],
        "[admin]\nbind = \"127.0.0.1:0\"",
        "",
        "",
    ));
    let admin = sluice.admin.unwrap();
    let left = format!(
        "sluice_requests_total{{listener=\"web\",pool=\"app\",backend=\"{}\",code=\"499\"}}",
        backend.addr
    );

    let mut conn = RawConn::open(sluice.addr());
    conn.send(get_request("/held/leaving").as_bytes());
    assert!(
        eventually(Duration::from_secs(5), || gate.arrived() == 1),
        "the request never reached the backend"
    );
    assert_eq!(series(&metrics(admin), &left), None);
    drop(conn);
    assert!(
        eventually(Duration::from_secs(5), || series(&metrics(admin), &left)
            == Some(1.0)),
        "the abandoned request was not counted 499:\n{}",
        metrics(admin)
    );

    let mut conn = RawConn::open(sluice.addr());
    assert_serves_next(&mut conn, "/after-leaving");
    assert_serves_next(&mut conn, "/after-leaving/again");
    gate.open();
}

/// An answer finished while sluice shuts down says `Connection: close`, and the connection
/// closes after it.
#[test]
fn an_answer_during_shutdown_says_close() {
    let (backend, gate) = echoing_backend();
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let addr = sluice.addr();
    let mut conn = RawConn::open(addr);
    conn.send(get_request("/held/shutdown").as_bytes());
    assert!(eventually(Duration::from_secs(5), || gate.arrived() == 1));
    sluice.begin_shutdown();
    // The listener stops accepting once shutdown has reached the workers.
    assert!(
        eventually(Duration::from_secs(5), || refuses(addr)),
        "still accepting connections after shutdown began"
    );
    gate.open();
    let response = conn.response();
    assert_eq!(response.text(), "GET /held/shutdown");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    let (rest, closed) = conn.rest();
    assert_eq!(rest, "");
    assert!(
        closed,
        "connection still open after the shutdown's last answer"
    );
}

/// HTTP/1.0 and absolute-form targets are hyper's; `HEAD` is sluice's own side's, like `GET`.
#[test]
fn http_1_0_absolute_targets_and_head_requests_are_answered() {
    let (backend, _) = echoing_backend();
    let sluice = TestSluice::start(&simple_config(&[&backend]));

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET /old HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(response.text(), "GET /old");
    let (rest, closed) = conn.rest();
    assert_eq!(rest, "");
    assert!(
        closed,
        "an HTTP/1.0 connection without keep-alive stayed open"
    );

    // HTTP/1.0 with keep-alive: two answers on one connection.
    let mut conn = RawConn::open(sluice.addr());
    for path in ["/old/1", "/old/2"] {
        conn.send(
            format!("GET {path} HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        );
        let response = conn.response();
        assert_eq!(response.status(), 200, "{response:?}");
        assert_eq!(response.text(), format!("GET {path}"));
    }

    // HEAD: the GET's length, no body; the next request's answer follows at once (so no body
    // bytes were sent).
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"HEAD /head HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let response = conn.head_response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(
        response.header("content-length"),
        Some("HEAD /head".len().to_string().as_str())
    );
    assert_serves_next(&mut conn, "/after-head");

    // An absolute-form target: hyper's, forwarded with its path.
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET http://app.test/absolute HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status(), 200, "{response:?}");
    assert!(response.text().ends_with("/absolute"), "{response:?}");

    let seen = backend.seen();
    let methods: Vec<String> = seen.iter().map(|s| s.method.to_string()).collect();
    assert_eq!(methods, ["GET", "GET", "GET", "HEAD", "GET", "GET"]);
}

/// More header fields than sluice's side parses (100): handed to hyper, which refuses it; the
/// answer is a 431, the connection closes, and the backend never sees the request.
#[test]
fn a_head_with_too_many_fields_is_handed_off_and_refused() {
    let (backend, _) = echoing_backend();
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let fields: String = (0..120).map(|i| format!("X-F{i}: v\r\n")).collect();
    let mut conn = RawConn::open(sluice.addr());
    conn.send(format!("GET /many HTTP/1.1\r\nHost: app.test\r\n{fields}\r\n").as_bytes());
    let response = conn.response();
    assert_eq!(response.status(), 431, "{response:?}");
    let (_, closed) = conn.rest();
    assert!(closed);
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
}

#[test]
fn a_head_arriving_in_pieces_is_answered() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    conn.stream().set_nodelay(true).unwrap();
    let head = "GET /in/pieces?x=1 HTTP/1.1\r\nHost: app.test\r\nX-Long: some value\r\n\r\n";
    // Paced, so that sluice reads the head in pieces rather than whole once it is all there.
    let pause = || std::thread::sleep(Duration::from_millis(5));
    let (bytes, rest) = head.as_bytes().split_at(20);
    for byte in bytes {
        conn.send(&[*byte]);
        pause();
    }
    // The rest in two, cut inside the blank line that ends the head.
    let (middle, end) = rest.split_at(rest.len() - 3);
    conn.send(middle);
    pause();
    conn.send(end);
    assert_answer(&conn.response(), "GET /in/pieces?x=1");
    assert_serves_next(&mut conn, "/whole");
    let seen = backend.seen();
    assert_eq!(seen[0].headers["x-long"], "some value");
    assert_eq!(paths(&backend), ["/in/pieces?x=1", "/whole"]);
}

/// A connection handed to hyper rests when idle and comes back to sluice's side, which serves
/// its next requests (`listener::REST_AFTER`: a second).
#[test]
fn a_handed_off_connection_rests_and_is_served_again() {
    let (backend, _, _sluice, mut conn) = echo_sluice();
    conn.send(post_request("/post", "x").as_bytes());
    assert_answer(&conn.response(), "POST /post");
    // Past the rest period: the connection is dormant, then woken by the next request.
    std::thread::sleep(Duration::from_millis(1500));
    let pipelined = format!("{}{}", get_request("/woken/1"), get_request("/woken/2"));
    conn.send(pipelined.as_bytes());
    assert_answer(&conn.response(), "GET /woken/1");
    assert_answer(&conn.response(), "GET /woken/2");
    assert_eq!(paths(&backend), ["/post", "/woken/1", "/woken/2"]);
}
