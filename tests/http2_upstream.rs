//! HTTP/2 to the backends (`protocol = "h2"`, cleartext prior knowledge): one client
//! connection's requests are balanced one by one over every backend, each backend's requests
//! share one multiplexed connection, and the two protocols meet in both directions (HTTP/1.1
//! client to HTTP/2 backend, HTTP/2 client to HTTP/1.1 backend), trailers included.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{config_with, full, Body, Handler, TestBackend, TestSluice};

fn h2_sluice(backends: &[&TestBackend]) -> TestSluice {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    TestSluice::start(&config_with(&addrs, "", "", "protocol = \"h2\"\n"))
}

/// A body of unknown length, in two frames, ending with `trailers` if given.
fn streamed(trailers: Option<HeaderMap>) -> Body {
    let mut frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello "))),
        Ok(Frame::data(Bytes::from_static(b"world"))),
    ];
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    StreamBody::new(tokio_stream::iter(frames)).boxed()
}

#[tokio::test]
async fn one_http2_client_connections_requests_spread_over_all_backends() {
    let backends = [
        TestBackend::start("a"),
        TestBackend::start("b"),
        TestBackend::start("c"),
    ];
    let sluice = h2_sluice(&backends.iter().collect::<Vec<_>>());

    // Exactly one client connection, HTTP/2 prior knowledge.
    let tcp = tokio::net::TcpStream::connect(sluice.addr()).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let url = sluice.url("/spread");
    let send = |mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>| {
        let request = Request::get(url.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        async move {
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap().to_bytes()
        }
    };
    // The first few one at a time (each backend's connection gets opened), then the rest at
    // once, as concurrent streams of the one connection.
    for _ in 0..3 {
        send(sender.clone()).await;
    }
    let tasks: Vec<_> = (0..197)
        .map(|_| tokio::spawn(send(sender.clone())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let mut total = 0;
    for backend in &backends {
        let seen = backend.seen();
        total += seen.len();
        // Round robin over three: every backend has its share.
        assert!(
            seen.len() >= 50,
            "{} got {} of 200",
            backend.name,
            seen.len()
        );
        assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
        // Multiplexed: all of a backend's requests (some concurrent) on one connection.
        assert_eq!(backend.connections_accepted(), 1, "{}", backend.name);
    }
    assert_eq!(total, 200);
}

#[tokio::test]
async fn an_http1_client_reaches_an_http2_backend() {
    let backend = TestBackend::start("a");
    let sluice = h2_sluice(&[&backend]);
    let request = Request::post(sluice.url("/upload?x=1"))
        .header("host", "app.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("te", "trailers")
        .body(streamed(None))
        .unwrap();
    let got = support::send(request).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "a");

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.uri.path_and_query().unwrap(), "/upload?x=1");
    assert_eq!(
        seen.body, "hello world",
        "a body of unknown length, framed by HTTP/2"
    );
    // The client's Host is kept, as HTTP/2's `:authority` (RFC 9113: no `host` header that
    // could differ from it); nothing connection-specific crosses into HTTP/2.
    assert_eq!(seen.uri.authority().unwrap().as_str(), "app.example");
    assert!(!seen.headers.contains_key("host"), "{:?}", seen.headers);
    assert_eq!(seen.headers["x-forwarded-host"], "app.example");
    assert_eq!(seen.headers["te"], "trailers");
    for name in [
        "connection",
        "transfer-encoding",
        "keep-alive",
        "x-hop",
        "upgrade",
    ] {
        assert!(!seen.headers.contains_key(name), "{name} sent over HTTP/2");
    }
}

#[tokio::test]
async fn an_http2_client_reaches_an_http1_backend() {
    let backend = TestBackend::start("a");
    let sluice = TestSluice::start(&support::simple_config(&[&backend]));
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(sluice.url("/h2-in"))
        .body(streamed(None))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "a"
    );

    let seen = &backend.seen()[0];
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.body, "hello world");
    // HTTP/2's `:authority` becomes the HTTP/1.1 backend's Host.
    assert_eq!(seen.headers["host"], sluice.addr().to_string());
}

/// A backend answering with a streamed body and trailers, recording the request's trailers.
fn trailer_backend(request_trailers: Arc<Mutex<Option<HeaderMap>>>) -> TestBackend {
    let handler: Handler = Arc::new(move |req: Request<Incoming>| {
        let record = request_trailers.clone();
        Box::pin(async move {
            let content_type = req.headers().get("content-type").cloned();
            let collected = req.into_body().collect().await.unwrap();
            *record.lock().unwrap() = collected.trailers().cloned();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "fine".parse().unwrap());
            let mut response = Response::builder();
            if let Some(ct) = content_type {
                response = response.header("content-type", ct);
            }
            response.body(streamed(Some(trailers))).unwrap()
        })
    });
    TestBackend::with_handler("t", Arc::default(), handler)
}

#[tokio::test]
async fn trailers_pass_both_ways_between_http2_ends() {
    let request_trailers = Arc::default();
    let backend = trailer_backend(Arc::clone(&request_trailers));
    let sluice = h2_sluice(&[&backend]);
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut sent = HeaderMap::new();
    sent.insert("x-checksum", "abc".parse().unwrap());
    let request = Request::post(sluice.url("/t"))
        .header("te", "trailers")
        .body(streamed(Some(sent)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().expect("response trailers").clone();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
    assert_eq!(collected.to_bytes(), "hello world");
    let got = request_trailers.lock().unwrap().clone();
    assert_eq!(got.expect("request trailers")["x-checksum"], "abc");
}

#[tokio::test]
async fn grpc_trailers_reach_an_http1_client_that_accepts_them() {
    let backend = trailer_backend(Arc::default());
    let sluice = h2_sluice(&[&backend]);
    let request = Request::post(sluice.url("/svc/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(""))
        .unwrap();
    let response = support::client().request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .expect("trailers over chunked HTTP/1.1")
        .clone();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");
}

/// sluice behind sluice over HTTP/2: the inner one is strict about `:authority` and `Host`
/// agreeing (RFC 9113), so this only works when the outer one sends the client's host as the
/// authority and no `Host` that differs from it.
#[tokio::test]
async fn an_http2_hop_is_accepted_by_a_strict_http2_server() {
    let backend = TestBackend::start("inner-backend");
    let inner = TestSluice::start(&config_with(&[backend.addr], "", "", ""));
    let outer = TestSluice::start(&config_with(&[inner.addr()], "", "", "protocol = \"h2\""));
    let request = Request::get(outer.url("/x"))
        .header("host", "site.example")
        .body(full(""))
        .unwrap();
    let got = support::send(request).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "inner-backend");
    let seen = backend.seen();
    assert_eq!(
        seen[0].headers["host"], "site.example",
        "the client's host, end to end"
    );
}
