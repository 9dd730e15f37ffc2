//! What is open when a reload happens stays open: a response still streaming completes intact,
//! a keep-alive connection goes on serving, under the new config, and idle upstream
//! connections stay pooled.

use crate::support::gate::{stream_chunks, GatedBackend};
use crate::support::raw::RawConn;
use crate::support::reload::{who_answers, Reloadable, ADMIN};
use crate::support::TestBackend;

/// `/stream` to pool `s` of `streamer` when `streamer` is given; everything else to pool `app`
/// of `app` (one backend).
fn config(streamer: Option<&GatedBackend>, app: std::net::SocketAddr) -> String {
    let stream = streamer
        .map(|s| {
            format!(
                "[[route]]\npath_prefix = \"/stream\"\npool = \"s\"\n\n\
                 [pool.s]\nbackends = [{{ address = \"{}\" }}]\n",
                s.addr()
            )
        })
        .unwrap_or_default();
    format!(
        r#"{ADMIN}
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
backends = [{{ address = "{app}" }}]

{stream}"#
    )
}

/// Reads a chunked body's chunks until at least `n` bytes of body have arrived.
fn read_chunks(conn: &mut RawConn, body: &mut Vec<u8>, n: usize) -> bool {
    while body.len() < n {
        let line = conn.take_line();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            while !conn.take_line().is_empty() {}
            return false;
        }
        body.extend(conn.take_exact(size));
        assert_eq!(conn.take_line(), "", "chunk not followed by CRLF");
    }
    true
}

#[test]
fn a_response_streaming_across_reloads_completes_intact() {
    let streamer = GatedBackend::start("streamer");
    let other = TestBackend::start("other");
    let sluice = Reloadable::start(&config(Some(&streamer), other.addr));

    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET /stream HTTP/1.1\r\nhost: app\r\n\r\n");
    let status = conn.take_line();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut chunked = false;
    loop {
        let line = conn.take_line().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        chunked |= line == "transfer-encoding: chunked";
    }
    assert!(chunked, "a streamed body of unknown length is sent chunked");
    let expected = stream_chunks("streamer").concat();
    let first = stream_chunks("streamer")[0].len();
    let mut body = Vec::new();
    assert!(read_chunks(&mut conn, &mut body, first));
    assert!(streamer.gate.arrived() == 1, "the rest waits for the gate");

    // The streaming backend's route and pool go away: it drains.
    let reload = sluice.reload_ok(&config(None, other.addr));
    assert_eq!(
        reload.changes("backends", "removed"),
        [format!("s/{}", streamer.addr())]
    );
    streamer.gate.open();
    // Half way through the rest (chunks come 100 ms apart), another reload: the pool is back,
    // with a new `Backend` for the same address.
    assert!(read_chunks(&mut conn, &mut body, expected.len() / 2));
    sluice.reload_ok(&config(Some(&streamer), other.addr));
    read_chunks(&mut conn, &mut body, usize::MAX);
    assert_eq!(String::from_utf8_lossy(&body), expected);
    assert_eq!(sluice.generation(), 3);

    // The connection is still usable, and sees the config of now.
    conn.send(b"GET /x HTTP/1.1\r\nhost: app\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("x-backend"), Some("other"));
}

#[test]
fn a_keep_alive_connection_serves_on_across_reloads_with_the_new_config() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let streamer = GatedBackend::start("streamer");
    let sluice = Reloadable::start(&config(None, a.addr));

    let mut conn = RawConn::open(sluice.addr());
    // Every answer below comes on this one socket: had sluice closed it, reading would fail.
    let ask = |conn: &mut RawConn, path: &str| {
        conn.send(format!("GET {path} HTTP/1.1\r\nhost: app\r\n\r\n").as_bytes());
        let response = conn.response();
        assert_eq!(response.status(), 200, "{}", response.text());
        assert_eq!(response.header("connection"), None);
        response.header("x-backend").unwrap().to_string()
    };
    assert_eq!(ask(&mut conn, "/"), "a");
    assert_eq!(ask(&mut conn, "/stream"), "a");

    // The pool's backend replaced, and a route added: both visible on the same connection.
    sluice.reload_ok(&config(Some(&streamer), b.addr));
    assert_eq!(ask(&mut conn, "/"), "b");
    assert_eq!(ask(&mut conn, "/stream/x"), "streamer");
    // And back.
    sluice.reload_ok(&config(None, a.addr));
    assert_eq!(ask(&mut conn, "/stream/x"), "a");
    assert_eq!(sluice.generation(), 3);
}

/// Idle upstream keep-alive connections belong to the pool's clients, which a reload that
/// leaves the pool's timeouts alone carries over: the backend sees no new connection.
#[test]
fn idle_upstream_connections_survive_a_reload() {
    let a = TestBackend::start("a");
    let streamer = GatedBackend::start("streamer");
    let sluice = Reloadable::start(&config(None, a.addr));
    // One worker, one request at a time: one upstream connection, reused.
    for _ in 0..5 {
        assert_eq!(who_answers(sluice.addr(), "/"), "a");
    }
    assert_eq!(a.connections_accepted(), 1);

    // Another pool and route added; pool `app` as it was.
    sluice.reload_ok(&config(Some(&streamer), a.addr));
    for _ in 0..5 {
        assert_eq!(who_answers(sluice.addr(), "/"), "a");
    }
    assert_eq!(
        a.connections_accepted(),
        1,
        "the idle upstream connection was dropped by the reload"
    );
}

/// HTTP/2: one connection, a stream still sending when the reload lands, and new streams on the
/// same connection after it, under the new config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_serves_on_across_a_reload_with_a_stream_in_flight() {
    use http::Request;
    use http_body_util::BodyExt;

    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let streamer = GatedBackend::start("streamer");
    let sluice = Reloadable::start(&config(Some(&streamer), a.addr));
    let stream = tokio::net::TcpStream::connect(sluice.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    // The connection's task ends only when the connection does.
    let conn = tokio::spawn(conn);
    let get = |path: &str| {
        Request::get(format!("http://app{path}"))
            .body(crate::support::full(""))
            .unwrap()
    };
    let backend_of = |response: &http::Response<hyper::body::Incoming>| {
        response.headers()["x-backend"]
            .to_str()
            .unwrap()
            .to_string()
    };

    let response = sender.send_request(get("/")).await.expect("h2 request");
    assert_eq!(backend_of(&response), "a");
    let streaming = sender
        .send_request(get("/stream"))
        .await
        .expect("h2 request");
    assert_eq!(backend_of(&streaming), "streamer");
    let mut body = streaming.into_body();
    let mut received = Vec::new();
    let first = stream_chunks("streamer")[0].len();
    while received.len() < first {
        let frame = body.frame().await.expect("a frame").expect("no error");
        received.extend_from_slice(&frame.into_data().unwrap_or_default());
    }

    // `/stream`'s route and pool go; `app` is now b.
    let reload = tokio::task::block_in_place(|| sluice.reload_ok(&config(None, b.addr)));
    assert_eq!(reload.generation(), 2);
    let response = sender
        .send_request(get("/"))
        .await
        .expect("h2 request after the reload");
    assert_eq!(backend_of(&response), "b");
    let response = sender
        .send_request(get("/stream"))
        .await
        .expect("h2 request");
    assert_eq!(backend_of(&response), "b");

    streamer.gate.open();
    while let Some(frame) = body.frame().await {
        received.extend_from_slice(&frame.expect("no error").into_data().unwrap_or_default());
    }
    assert_eq!(
        String::from_utf8_lossy(&received),
        stream_chunks("streamer").concat()
    );
    let response = sender.send_request(get("/")).await.expect("h2 request");
    assert_eq!(backend_of(&response), "b");
    assert!(!conn.is_finished(), "the connection is still open");
}
