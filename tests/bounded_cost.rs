//! What one client connection may cost (issue 8, "bounded cost"): a request body that stops
//! arriving is answered 408, a client that stops reading its answer is cut off, HTTP/2 stream
//! resets cancel the upstream request at once, and a flood of them ends the connection with
//! ENHANCE_YOUR_CALM.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use support::gate::GatedBackend;
use support::*;

#[test]
fn a_request_body_that_stops_arriving_gets_408() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&config_with(
        &[a.addr],
        "",
        "request_body_timeout = \"300ms\"",
        "",
    ));
    let mut stream = TcpStream::connect(sluice.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Ten bytes of a hundred, then nothing.
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("request body not received in time"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
}

#[test]
fn a_slow_but_steady_body_is_not_cut_off() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&config_with(
        &[a.addr],
        "",
        "request_body_timeout = \"500ms\"",
        "",
    ));
    let mut stream = TcpStream::connect(sluice.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n")
        .unwrap();
    // A byte every 200 ms: 1.6 s in all, each gap well inside the timeout.
    for byte in b"abcdefgh" {
        std::thread::sleep(Duration::from_millis(200));
        stream.write_all(&[*byte]).unwrap();
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    assert_eq!(a.seen()[0].body, Bytes::from_static(b"abcdefgh"));
}

/// A backend answering every request with `size` bytes.
fn big_backend(size: usize) -> TestBackend {
    let body = Bytes::from(vec![b'x'; size]);
    let handler: Handler = Arc::new(move |_req| {
        let body = body.clone();
        Box::pin(async move { Response::new(full(body)) })
    });
    TestBackend::with_handler("big", Arc::new(Mutex::new(Vec::new())), handler)
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    const SIZE: usize = 64 << 20;
    let big = big_backend(SIZE);
    let sluice = TestSluice::start(&config_with(
        &[big.addr],
        "",
        "send_timeout = \"300ms\"",
        "",
    ));
    let mut stream = TcpStream::connect(sluice.addr()).unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    // The client reads nothing for a while: the socket buffers fill and sluice's writes wait.
    std::thread::sleep(Duration::from_secs(2));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(
        received < SIZE,
        "the whole answer ({received} bytes) went out to a client that stopped reading"
    );
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2_client(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_cancels_its_upstream_request_at_once() {
    let slow = GatedBackend::start("slow");
    let sluice = TestSluice::start(&config_with(
        &[slow.addr()],
        "[admin]\nbind = \"127.0.0.1:0\"\n",
        "",
        "",
    ));
    let admin = sluice.admin.unwrap();
    let mut client = h2_client(sluice.addr()).await.ready().await.unwrap();
    let request = Request::get(format!("http://{}/held", sluice.addr()))
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, true).unwrap();
    let arrived = tokio::task::spawn_blocking({
        let gate = slow.gate.clone();
        move || eventually(Duration::from_secs(5), || gate.arrived() == 1)
    });
    assert!(arrived.await.unwrap(), "the request reached the backend");
    let active = format!(
        "sluice_backend_active_requests{{pool=\"app\",backend=\"{}\"}} ",
        slow.addr()
    );
    let in_flight = || async {
        let text = get(&format!("http://{admin}/metrics")).await.text();
        let line = text
            .lines()
            .find(|l| l.starts_with(&active))
            .unwrap()
            .to_string();
        line[active.len()..].parse::<u64>().unwrap()
    };
    assert_eq!(in_flight().await, 1);

    // The client gives up on the stream (RST_STREAM CANCEL): the backend is still holding it.
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while in_flight().await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream request outlived the client's reset"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slow.gate.open();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reset_streams_reaches_almost_no_backend_and_ends_the_connection() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let handler: Handler = Arc::new(move |_req| {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Response::new(full("ok")) })
    });
    let backend = TestBackend::with_handler("b", Arc::new(Mutex::new(Vec::new())), handler);
    let sluice = TestSluice::start(&config_with(&[backend.addr], "", "", ""));
    let tcp = tokio::net::TcpStream::connect(sluice.addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client;
    let url = format!("http://{}/", sluice.addr());
    let mut sent = 0;
    // Open a stream and reset it at once, as fast as the connection allows (a rapid-reset
    // attack), until sluice ends the connection.
    for _ in 0..10_000 {
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let request = Request::get(&url).body(()).unwrap();
        let Ok((response, mut stream)) = client.send_request(request, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("sluice ends the connection")
        .unwrap();
    let error = ended.expect_err("the connection ends with an error (GOAWAY)");
    assert!(sent < 10_000, "sluice let all {sent} reset streams through");
    // sluice sends GOAWAY ENHANCE_YOUR_CALM and closes. A client still writing its flood can
    // meet the close (broken pipe, reset) before it reads the GOAWAY frame: then the reason is
    // lost to the client, but any reason it did read must be that one.
    match error.reason() {
        Some(reason) => assert_eq!(
            reason,
            h2::Reason::ENHANCE_YOUR_CALM,
            "after {sent} streams"
        ),
        None => assert!(error.is_io(), "{error:?} after {sent} streams"),
    }
    let hits = hits.load(Ordering::SeqCst);
    assert!(
        hits * 100 <= sent.max(100),
        "{hits} of {sent} reset streams reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&config_with(&[a.addr], "", "idle_timeout = \"300ms\"", ""));
    let tcp = tokio::net::TcpStream::connect(sluice.addr()).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::get(format!("http://{}/", sluice.addr()))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let started = Instant::now();
    // Nothing more from the client: sluice ends the connection (GOAWAY, then close).
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    let took = started.elapsed();
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
    assert!(
        took >= Duration::from_millis(200),
        "closed after {took:?}, before the timeout"
    );
    drop(client);
}
