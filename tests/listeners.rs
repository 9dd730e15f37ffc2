//! Listeners: several per config, HTTP/1.1 keep-alive, HTTP/2 prior knowledge on the same port,
//! the per-connection timers (request head, idle), head and URI limits, and the connection limit.
//!
//! TCP_NODELAY is not tested: from the client side it is only observable through Nagle timing,
//! which is too noisy on loopback to assert on.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;

/// One response read from a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads exactly one `Content-Length`-framed response from `stream`. `None` if the connection
/// ended (or the read timed out) before a complete response arrived.
fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte so nothing after this response is consumed.
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(buf).expect("response head is UTF-8");
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut response = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = response
        .header("content-length")
        .expect("response has a content-length")
        .parse()
        .unwrap();
    response.body = vec![0; len];
    stream.read_exact(&mut response.body).ok()?;
    Some(response)
}

/// Waits until the server ends the connection; returns how long that took, or `None` if it was
/// still open after `limit`. Any bytes received meanwhile are returned too.
fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> (Option<Duration>, Vec<u8>) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (None, received);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (Some(start.elapsed()), received),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (None, received)
            }
            // A reset is a close too.
            Err(_) => return (Some(start.elapsed()), received),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_in_the_config_serves() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&format!(
        r#"
[log]
access_log = false

[[listener]]
name = "a"
bind = "127.0.0.1:0"

[[listener]]
name = "b"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
backends = [{}]
"#,
        backend_list(&[&app])
    ));
    assert_eq!(sluice.addrs.len(), 2);
    assert_ne!(sluice.addrs[0], sluice.addrs[1]);
    for (i, addr) in sluice.addrs.iter().enumerate() {
        let got = get(&format!("http://{addr}/from/{i}")).await;
        assert_eq!(got.status, 200, "listener {i}");
        assert_eq!(got.text(), "app", "listener {i}");
    }
    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/from/0", "/from/1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_serves_many_requests_on_one_connection() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&app]));
    let mut stream = connect(sluice.addr());
    for i in 0..5 {
        stream
            .write_all(&get_request(&format!("/seq/{i}")))
            .unwrap();
        let response = read_response(&mut stream)
            .unwrap_or_else(|| panic!("request {i}: connection ended without a response"));
        assert_eq!(response.status, 200, "request {i}");
        assert_eq!(response.body, b"app", "request {i}");
        assert_ne!(response.header("connection"), Some("close"), "request {i}");
    }
    // Pipelined: three requests in one write, three answers in order.
    let mut pipelined = Vec::new();
    for i in 0..3 {
        pipelined.extend(get_request(&format!("/pipe/{i}")));
    }
    stream.write_all(&pipelined).unwrap();
    for i in 0..3 {
        let response = read_response(&mut stream)
            .unwrap_or_else(|| panic!("pipelined {i}: connection ended without a response"));
        assert_eq!(response.status, 200, "pipelined {i}");
    }
    // The backend side makes no promise about its own connections: only the count and order of
    // requests matter there.
    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(
        paths,
        ["/seq/0", "/seq/1", "/seq/2", "/seq/3", "/seq/4", "/pipe/0", "/pipe/1", "/pipe/2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_and_http1_share_a_port() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&app]));

    let h2: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for i in 0..3 {
        let response = h2
            .request(
                Request::get(sluice.url(&format!("/h2/{i}")))
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .expect("HTTP/2 request failed");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(response.headers().get("x-request-id").is_some());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "app");
    }

    let response = client()
        .request(Request::get(sluice.url("/h1")).body(full("")).unwrap())
        .await
        .expect("HTTP/1.1 request failed");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);

    let seen = app.seen();
    let paths: Vec<String> = seen.iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/h2/0", "/h2/1", "/h2/2", "/h1"]);
}

/// A client socket whose first `skip` bytes of output were already sent by hand: writes drop
/// them, so that a protocol client can go on from where the test left off.
struct Resumed {
    stream: tokio::net::TcpStream,
    skip: usize,
}

impl tokio::io::AsyncRead for Resumed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Resumed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return std::task::Poll::Ready(Ok(n));
        }
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// sluice tells HTTP/2 from HTTP/1.1 by the connection's first bytes: a preface that arrives in
/// pieces is still HTTP/2, and a request whose first byte is also the preface's is HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_is_told_apart_when_the_first_bytes_arrive_in_pieces() {
    use tokio::io::AsyncWriteExt;
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&app]));
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    let mut tcp = tokio::net::TcpStream::connect(sluice.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(&PREFACE[..3]).await.unwrap();
    // Paced like a slow client, so that sluice sees the piece on its own.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(&PREFACE[3..16]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resumed = Resumed {
        stream: tcp,
        skip: 16,
    };
    let (h2, connection) = h2::client::handshake(resumed).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = Request::get(sluice.url("/split-preface")).body(()).unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("no HTTP/2 answer to a preface sent in pieces")
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);

    let mut stream = connect(sluice.addr());
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"P").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    stream
        .write_all(b"OST /split-post HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let response = read_response(&mut stream).expect("no HTTP/1.1 answer to a split POST");
    assert_eq!(response.status, 200);
    assert!(response.head.starts_with("HTTP/1.1 "), "{}", response.head);

    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/split-preface", "/split-post"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_request_head_is_cut_after_header_read_timeout() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[app.addr],
        "",
        r#"header_read_timeout = "300ms""#,
        "",
    ));
    // A half HTTP/1.1 head, and a connection that stops inside the HTTP/2 preface (while
    // sluice is still finding out which protocol it speaks).
    let halves: [&[u8]; 2] = [
        b"GET /slow HTTP/1.1\r\nHost: test.local\r\nX-Half: ",
        b"PRI * HTTP/2.0\r\n",
    ];
    for half in halves {
        let start = Instant::now();
        let mut stream = connect(sluice.addr());
        stream.write_all(half).unwrap();
        let (closed, received) = wait_for_close(&mut stream, Duration::from_secs(5));
        let closed = closed.expect("connection with a half head still open after 5s");
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_secs(3),
            "closed after {elapsed:?} (read wait {closed:?}); want 200ms..3s"
        );
        let received = String::from_utf8_lossy(&received);
        assert!(
            !received.contains(" 200 "),
            "a half head got an answer: {received}"
        );
    }
    assert!(app.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_cut_after_header_read_timeout() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[app.addr],
        "",
        r#"header_read_timeout = "300ms""#,
        "",
    ));
    let start = Instant::now();
    let mut stream = connect(sluice.addr());
    let (closed, _) = wait_for_close(&mut stream, Duration::from_secs(5));
    assert!(closed.is_some(), "silent connection still open after 5s");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_secs(3),
        "closed after {elapsed:?}; want 200ms..3s"
    );
}

/// A slowloris client: a byte of the head every 50ms. The head timer must run from the head's
/// first byte, not restart with every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_after_header_read_timeout() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[app.addr],
        "",
        r#"header_read_timeout = "300ms""#,
        "",
    ));
    let start = Instant::now();
    let mut stream = connect(sluice.addr());
    stream.set_nonblocking(true).unwrap();
    let head = b"GET /trickle HTTP/1.1\r\nHost: test.local\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_at = None;
    let mut buf = [0u8; 1024];
    'trickle: for byte in head.iter() {
        if stream.write_all(&[*byte]).is_err() {
            closed_at = Some(start.elapsed());
            break;
        }
        // Pacing the client, not waiting for readiness: 50ms between bytes.
        let pause_until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < pause_until {
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed_at = Some(start.elapsed());
                    break 'trickle;
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => {
                    closed_at = Some(start.elapsed());
                    break 'trickle;
                }
            }
        }
    }
    let closed_at = closed_at.expect("trickling client was never cut off");
    assert!(
        closed_at >= Duration::from_millis(200) && closed_at <= Duration::from_secs(1),
        "cut after {closed_at:?}; want 200ms..1s (head timeout 300ms)"
    );
    assert!(app.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    // 300ms: closed by hyper's connection; 1500ms: closed dormant (idle HTTP/1 connections
    // drop hyper's connection after a second, `listener::REST_AFTER`).
    for (idle, earliest, latest) in [
        ("300ms", Duration::from_millis(200), Duration::from_secs(2)),
        (
            "1500ms",
            Duration::from_millis(1300),
            Duration::from_millis(3500),
        ),
    ] {
        let app = TestBackend::start("app");
        let sluice = TestSluice::start(&config_with(
            &[app.addr],
            "",
            &format!("idle_timeout = \"{idle}\"\nheader_read_timeout = \"5s\""),
            "",
        ));
        let mut stream = connect(sluice.addr());
        stream.write_all(&get_request("/once")).unwrap();
        let response = read_response(&mut stream).expect("no response");
        assert_eq!(response.status, 200);
        let (closed, received) = wait_for_close(&mut stream, Duration::from_secs(5));
        let closed = closed.expect("idle connection still open after 5s");
        assert!(
            closed >= earliest && closed <= latest,
            "idle connection closed after {closed:?}; want {earliest:?}..{latest:?} (idle {idle}, head 5s)"
        );
        assert!(
            received.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&received)
        );
    }
}

/// An idle HTTP/1 connection goes dormant after a second (hyper's connection and its buffers
/// are dropped, the socket stays open): its next requests, one at a time or pipelined, are
/// served on the same connection as if nothing had happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dormant_keep_alive_connection_serves_its_next_requests() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&app]));
    let mut stream = connect(sluice.addr());
    stream.write_all(&get_request("/before")).unwrap();
    assert_eq!(read_response(&mut stream).expect("no response").status, 200);
    // Past `REST_AFTER` (1s), twice: dormant, awake, dormant again.
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        stream
            .write_all(&get_request(&format!("/after/{round}")))
            .unwrap();
        let response = read_response(&mut stream).expect("no response after a dormant spell");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"app");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut pipelined = get_request("/p1");
    pipelined.extend(get_request("/p2"));
    stream.write_all(&pipelined).unwrap();
    for _ in 0..2 {
        let response = read_response(&mut stream).expect("no response to a pipelined request");
        assert_eq!(response.status, 200);
    }
    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/before", "/after/0", "/after/1", "/p1", "/p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_keep_alive_connection_outlives_idle_timeout() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[app.addr],
        "",
        "idle_timeout = \"300ms\"\nheader_read_timeout = \"5s\"",
        "",
    ));
    let mut stream = connect(sluice.addr());
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(1100) {
        stream
            .write_all(&get_request(&format!("/busy/{i}")))
            .unwrap();
        let response = read_response(&mut stream)
            .unwrap_or_else(|| panic!("request {i} at {:?}: connection closed", start.elapsed()));
        assert_eq!(response.status, 200);
        i += 1;
        // Pacing: a request every 100ms, each gap well under the 300ms idle timeout.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(i >= 8, "only {i} requests in 1.1s");
    assert_eq!(app.seen().len(), i);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(&[app.addr], "", "max_header_bytes = 1024", ""));

    // Under the limit: forwarded.
    let small = format!(
        "GET /small HTTP/1.1\r\nHost: test.local\r\nX-Fill: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(600)
    );
    let answer = raw(sluice.addr(), small.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // Over sluice's limit: sluice's own answer, with a cause and a request id.
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: test.local\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let mut stream = connect(sluice.addr());
    stream.write_all(big.as_bytes()).unwrap();
    let response = read_response(&mut stream).expect("no answer to an oversized head");
    assert_eq!(response.status, 431);
    assert!(response
        .header("x-request-id")
        .is_some_and(|v| !v.is_empty()));
    assert!(response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain")));
    assert!(!response.body.is_empty());

    // Far over it (beyond the read buffer): still 431, never a forward.
    let huge = format!(
        "GET /huge HTTP/1.1\r\nHost: test.local\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = raw(sluice.addr(), huge.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/small"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_uris_get_414() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(&[app.addr], "", "max_uri_bytes = 100", ""));

    let ok_path = format!("/{}", "a".repeat(90));
    let answer = raw(
        sluice.addr(),
        format!("GET {ok_path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    let long_path = format!("/{}?q={}", "a".repeat(100), "b".repeat(100));
    let mut stream = connect(sluice.addr());
    stream.write_all(&get_request(&long_path)).unwrap();
    let response = read_response(&mut stream).expect("no answer to an over-long URI");
    assert_eq!(response.status, 414);
    assert!(response
        .header("x-request-id")
        .is_some_and(|v| !v.is_empty()));
    assert!(!response.body.is_empty());

    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, [ok_path]);
}

/// Opens a connection and completes one request on it, leaving it idle in keep-alive.
fn held_connection(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    stream.write_all(&get_request(path)).unwrap();
    let response = read_response(&mut stream)
        .unwrap_or_else(|| panic!("connection for {path} got no answer within 5s"));
    assert_eq!(response.status, 200);
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_for_a_slot() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[app.addr],
        "[server]\nmax_connections = 2",
        "",
        "",
    ));
    let first = held_connection(sluice.addr(), "/first");
    let _second = held_connection(sluice.addr(), "/second");

    let mut third = connect(sluice.addr());
    third.write_all(&get_request("/third")).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("third connection was served while two were open: {other:?}"),
    }
    assert_eq!(app.seen().len(), 2);

    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let response =
        read_response(&mut third).expect("third connection not served after a slot freed");
    assert_eq!(response.status, 200);
    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/first", "/second", "/third"]);
}

/// The limit counts connections, across listeners: with one connection open on listener `a`, a
/// connection on `a` must still be served, whatever the other listener is doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_counts_open_connections_across_listeners() {
    let app = TestBackend::start("app");
    let sluice = TestSluice::start(&format!(
        r#"
[server]
max_connections = 2

[log]
access_log = false

[[listener]]
name = "a"
bind = "127.0.0.1:0"

[[listener]]
name = "b"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
backends = [{}]
"#,
        backend_list(&[&app])
    ));
    let (a, b) = (sluice.addrs[0], sluice.addrs[1]);
    let first = held_connection(a, "/a1");
    // One connection is open of two allowed: the second must be served. (An acceptor that holds
    // a slot while it waits in `accept` would starve this one.)
    let second = held_connection(a, "/a2");

    // Now at the limit: a connection on `b` waits...
    let mut third = connect(b);
    third.write_all(&get_request("/b1")).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("third connection was served while two were open: {other:?}"),
    }
    // ...until one on `a` closes.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let response =
        read_response(&mut third).expect("connection on `b` not served after a slot freed");
    assert_eq!(response.status, 200);
    drop(second);
    let paths: Vec<String> = app.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/a1", "/a2", "/b1"]);
}
