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

/// A route's own `max_body_bytes` overrides the listener's, up or down (0: none).
#[test]
fn a_routes_limit_overrides_the_listeners() {
    let backend = TestBackend::start("app");
    let toml = format!(
        r#"
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"
max_body_bytes = 1000

[[route]]
path_prefix = "/small"
pool = "app"
max_body_bytes = 10

[[route]]
path_prefix = "/upload"
pool = "app"
max_body_bytes = 0

[[route]]
pool = "app"

[pool.app]
backends = [{{ address = "{}" }}]
"#,
        backend.addr
    );
    let sluice = TestSluice::start(&toml);
    let post = |path: &str, len: usize| {
        let mut conn = RawConn::open(sluice.addr());
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: app\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'x', len));
        conn.send(&request);
        conn.response().status()
    };
    assert_eq!(post("/small", 11), 413);
    assert_eq!(post("/small", 10), 200);
    assert_eq!(post("/other", 1001), 413);
    assert_eq!(post("/other", 1000), 200);
    assert_eq!(post("/upload", 5000), 200, "no limit on /upload");
    assert_eq!(
        backend.seen().len(),
        3,
        "refused bodies never reach the backend"
    );
}
