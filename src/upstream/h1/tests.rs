//! The client against scripted backends on real sockets: each test's backend reads requests
//! and writes exactly the bytes given, so framing, reuse and failures are exercised as sent.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config;
use crate::upstream::Waiters;

const IDLE: Duration = Duration::from_secs(60);

/// What the scripted backend does with the next request head it reads.
#[derive(Clone, Copy)]
enum Step {
    Answer(&'static [u8]),
    /// Answers, then closes the connection.
    Last(&'static [u8]),
    Close,
}

/// A backend that takes the next of `steps` for each request head it reads, on whichever
/// connection the request came. Returns its address and a counter of connections accepted.
async fn scripted(steps: Vec<Step>) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    let answers = Arc::new(Mutex::new(VecDeque::from(steps)));
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            let answers = answers.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let next = answers.lock().unwrap().pop_front();
                        match next {
                            Some(Step::Answer(bytes)) => stream.write_all(bytes).await.unwrap(),
                            Some(Step::Last(bytes)) => {
                                stream.write_all(bytes).await.unwrap();
                                return;
                            }
                            Some(Step::Close) | None => return,
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn backend(addr: SocketAddr) -> Arc<Backend> {
    let cfg = config::Backend {
        address: addr.to_string(),
        resolved: addr,
        weight: 1,
    };
    Arc::new(Backend::new(&cfg, false, Arc::new(Waiters::default()), 1))
}

fn get(path: &str) -> Parts {
    http::Request::get(path).body(()).unwrap().into_parts().0
}

fn head_request(path: &str) -> Parts {
    http::Request::head(path).body(()).unwrap().into_parts().0
}

async fn exchange(backend: &Arc<Backend>, parts: &Parts) -> Result<Response<Body>, Error> {
    let opened = Arc::new(AtomicU64::new(0));
    let dial = Dial {
        timeout: Duration::from_secs(5),
        opened: &opened,
    };
    Exchange::start(
        backend,
        0,
        parts,
        |_| {},
        false,
        IDLE,
        dial,
        std::time::Instant::now(),
    )
    .await
}

/// The whole body: its data and trailers.
async fn collect(body: Body) -> (Bytes, Option<http::HeaderMap>) {
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_is_read() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    let (addr, accepted) = scripted(vec![Step::Answer(answer); 3]).await;
    let backend = backend(addr);
    for _ in 0..3 {
        let response = exchange(&backend, &get("/")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(collect(response.into_body()).await.0, "hello");
        assert_eq!(backend.idle.len(0), 1, "back in the idle list");
    }
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        1,
        "one connection for three requests"
    );
}

#[tokio::test]
async fn chunked_bodies_keep_their_trailers_and_the_connection() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n";
    let (addr, accepted) = scripted(vec![Step::Answer(answer); 2]).await;
    let backend = backend(addr);
    for _ in 0..2 {
        let response = exchange(&backend, &get("/")).await.unwrap();
        let (data, trailers) = collect(response.into_body()).await;
        assert_eq!(data, "hello world");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_body_until_close_ends_with_the_connection() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nall of it";
    let (addr, _) = scripted(vec![Step::Last(answer)]).await;
    let backend = backend(addr);
    let response = exchange(&backend, &get("/")).await.unwrap();
    assert_eq!(collect(response.into_body()).await.0, "all of it");
    assert_eq!(backend.idle.len(0), 0, "never reused");
}

#[tokio::test]
async fn head_and_no_content_answers_have_no_body() {
    let head: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    let empty: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (addr, accepted) = scripted(vec![
        Step::Answer(head),
        Step::Answer(empty),
        Step::Answer(ok),
    ])
    .await;
    let backend = backend(addr);
    let response = exchange(&backend, &head_request("/")).await.unwrap();
    assert!(response.body().is_end_stream());
    assert_eq!(response.headers()["content-length"], "1000");
    let response = exchange(&backend, &get("/")).await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.body().is_end_stream());
    let response = exchange(&backend, &get("/")).await.unwrap();
    assert_eq!(collect(response.into_body()).await.0, "ok");
    assert_eq!(accepted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn informational_answers_are_skipped() {
    let answer: &[u8] =
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let (addr, _) = scripted(vec![Step::Answer(answer)]).await;
    let response = exchange(&backend(addr), &get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    assert_eq!(collect(response.into_body()).await.0, "x");
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_the_connection_is_dropped() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    let (addr, _) = scripted(vec![Step::Last(answer)]).await;
    let backend = backend(addr);
    let response = exchange(&backend, &get("/")).await.unwrap();
    let mut body = response.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "abc"
    );
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(body.frame().await.is_none(), "nothing after the error");
    assert_eq!(backend.idle.len(0), 0);
}

#[tokio::test]
async fn a_closed_idle_connection_is_noticed_before_reuse() {
    // The backend answers once and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            // Close after a moment, as a backend's keep-alive timeout would.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let backend = backend(addr);
    let response = exchange(&backend, &get("/")).await.unwrap();
    assert_eq!(collect(response.into_body()).await.0, "ok");
    assert_eq!(backend.idle.len(0), 1);
    // Let the close arrive and the runtime see it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        backend.idle.sweep(0, IDLE);
        if backend.idle.len(0) == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "close never noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The next request opens a new connection and succeeds.
    let response = exchange(&backend, &get("/")).await.unwrap();
    assert_eq!(collect(response.into_body()).await.0, "ok");
}

#[tokio::test]
async fn a_connection_closed_before_answering_is_a_stale_connection() {
    let (addr, _) = scripted(vec![Step::Close]).await;
    let err = exchange(&backend(addr), &get("/")).await.unwrap_err();
    assert!(err.is_stale_connection(), "{err}");
}

#[tokio::test]
async fn malformed_answers_are_errors_not_stale_connections() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"[..],
        &b"NOT HTTP\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
    ] {
        let (addr, _) = scripted(vec![Step::Answer(answer)]).await;
        let backend = backend(addr);
        match exchange(&backend, &get("/")).await {
            Err(e) => assert!(!e.is_stale_connection(), "{e}"),
            Ok(response) => {
                let err = response.into_body().collect().await.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            }
        }
        assert_eq!(backend.idle.len(0), 0);
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = exchange(&backend(addr), &get("/")).await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
}

#[tokio::test]
async fn idle_connections_expire() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    let (addr, accepted) = scripted(vec![Step::Answer(answer); 2]).await;
    let backend = backend(addr);
    let response = exchange(&backend, &get("/")).await.unwrap();
    collect(response.into_body()).await;
    assert_eq!(backend.idle.len(0), 1);
    backend.idle.sweep(0, Duration::from_secs(3600));
    assert_eq!(backend.idle.len(0), 1, "fresh and quiet: kept");
    backend.idle.sweep(0, Duration::ZERO);
    assert_eq!(backend.idle.len(0), 0, "past the idle timeout: closed");
    let response = exchange(&backend, &get("/")).await.unwrap();
    collect(response.into_body()).await;
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
}

/// A backend that writes `bytes` in pieces of `piece` bytes, each flushed on its own, for every
/// request head it reads: the client must reassemble heads, chunk-size lines, chunk data and
/// trailers cut anywhere.
async fn fragmenting(bytes: &'static [u8], piece: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        for part in bytes.chunks(piece) {
                            stream.write_all(part).await.unwrap();
                            stream.flush().await.unwrap();
                            tokio::task::yield_now().await;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn responses_cut_anywhere_are_reassembled() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
        3\r\nabc\r\n10;name=value\r\n0123456789abcdef\r\n1\r\nz\r\n0\r\nx-trailer: t\r\n\r\n";
    for piece in [1, 2, 3, 5, 7, 13] {
        let backend = backend(fragmenting(answer, piece).await);
        // Twice on one connection: the first response ends exactly where it should.
        for _ in 0..2 {
            let response = exchange(&backend, &get("/")).await.unwrap();
            assert_eq!(response.headers()["x-a"], "1", "piece {piece}");
            let (data, trailers) = collect(response.into_body()).await;
            assert_eq!(data, "abc0123456789abcdefz", "piece {piece}");
            assert_eq!(trailers.unwrap()["x-trailer"], "t", "piece {piece}");
        }
        assert_eq!(backend.idle.len(0), 1, "piece {piece}: reused");
    }
}

mod never_panics {
    use proptest::prelude::*;

    use super::super::head;

    proptest! {
        /// Whatever a backend sends as a response head, parsing answers (partial, complete or
        /// an error) and never panics.
        #[test]
        fn on_any_head(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for raw in [false, true] {
                let mut buf = bytes::BytesMut::from(&bytes[..]);
                let _ = head::parse(&mut buf, &http::Method::GET, raw);
            }
        }

        /// Nor on heads that look nearly right: a valid status line, then fields built from
        /// pieces that matter to framing.
        #[test]
        fn on_nearly_valid_heads(
            fields in proptest::collection::vec(
                prop::sample::select(vec![
                    "Content-Length: 5", "Content-Length: 5, 6", "Content-Length: -1",
                    "Content-Length: 99999999999999999999999", "Transfer-Encoding: chunked",
                    "Transfer-Encoding: gzip, chunked", "Transfer-Encoding: chunked, gzip",
                    "Transfer-Encoding:", "Connection: close", "Connection: keep-alive, close",
                    "X: \u{7f}", "Bad Name: 1", ": empty", "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ]),
                0..8,
            ),
            status in prop::sample::select(vec!["100", "101", "103", "200", "204", "304", "999", "20"]),
        ) {
            let text = format!("HTTP/1.1 {status} X\r\n{}\r\n\r\nbody", fields.join("\r\n"));
            for raw in [false, true] {
                let mut buf = bytes::BytesMut::from(text.as_bytes());
                let _ = head::parse(&mut buf, &http::Method::GET, raw);
            }
        }
    }
}
