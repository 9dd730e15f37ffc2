//! `max_body_bytes`: a declared length over the limit is answered 413 without contacting a
//! backend; a chunked body that grows past it is cut off and answered 413; bodies within it pass.

mod support;

use support::raw::*;
use support::*;

fn limited(backend: &TestBackend) -> TestSluice {
    TestSluice::start(&config_with(
        &[backend.addr],
        "",
        "max_body_bytes = 1000",
        "",
    ))
}

#[test]
fn a_declared_length_over_the_limit_gets_413_before_any_backend() {
    let backend = TestBackend::start("app");
    let sluice = limited(&backend);
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: 1001\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status(), 413, "{response:?}");
    assert!(response.text().contains("too large"), "{response:?}");
    assert!(response.header("x-request-id").is_some());
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
}

#[test]
fn a_chunked_body_growing_past_the_limit_is_cut_off_with_413() {
    let backend = TestBackend::start("app");
    let sluice = limited(&backend);
    let mut conn = RawConn::open(sluice.addr());
    let mut request =
        b"POST /up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"190\r\n");
        request.extend_from_slice(&[b'x'; 400]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    conn.send(&request);
    let response = conn.response();
    assert_eq!(response.status(), 413, "{response:?}");
    // The backend may have seen the start of the stream, never the whole 1200-byte body.
    assert!(
        backend.seen().iter().all(|s| s.body.len() < 1200),
        "{:?}",
        backend
            .seen()
            .iter()
            .map(|s| s.body.len())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_within_the_limit_pass_whole() {
    let backend = TestBackend::start("app");
    let sluice = limited(&backend);
    let body = vec![b'y'; 1000];
    let got = send(
        http::Request::post(sluice.url("/up"))
            .body(full(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(backend.seen()[0].body, body);
}
