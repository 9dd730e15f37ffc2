//! Forwarding: round robin across backends, bodies both ways, HTTP/2 downstream.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotates_across_backends() {
    let (a, b, c) = (
        TestBackend::start("a"),
        TestBackend::start("b"),
        TestBackend::start("c"),
    );
    let sluice = TestSluice::start(&simple_config(&[&a, &b, &c]));
    let mut names = Vec::new();
    for _ in 0..6 {
        let got = get(&sluice.url("/")).await;
        assert_eq!(got.status, 200);
        names.push(got.text());
    }
    assert_eq!(names, ["a", "b", "c", "a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_query_and_body_reach_the_backend() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&simple_config(&[&a]));
    let req = http::Request::post(sluice.url("/submit?x=1&y=%20"))
        .header("content-type", "text/plain")
        .body(full("payload bytes"))
        .unwrap();
    let got = send(req).await;
    assert_eq!(got.status, 200);
    let seen = a.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].uri, "/submit?x=1&y=%20");
    assert_eq!(seen[0].body, "payload bytes");
    assert_eq!(seen[0].headers["content-type"], "text/plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_host_names_are_resolved_at_load() {
    let a = TestBackend::start("a");
    let config = simple_config(&[&a]).replace(
        &format!("\"{}\"", a.addr),
        &format!("\"localhost:{}\"", a.addr.port()),
    );
    assert!(config.contains("localhost:"));
    let sluice = TestSluice::start(&config);
    let got = get(&sluice.url("/named")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "a");
    assert_eq!(a.seen()[0].uri, "/named");
}

/// An absolute-form target names a host, but sluice only ever connects to configured backends:
/// it is never an open proxy.
#[test]
fn absolute_form_targets_never_choose_the_upstream() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&simple_config(&[&a]));
    let answer = raw(
        sluice.addr(),
        b"GET http://elsewhere.example:9/x?y=1 HTTP/1.1\r\nHost: elsewhere.example:9\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("a"), "{answer}");
    let seen = a.seen();
    assert_eq!(seen.len(), 1);
    // Forwarded in origin form to the configured backend, the client's Host kept.
    assert_eq!(seen[0].uri, "/x?y=1");
    assert_eq!(seen[0].headers["host"], "elsewhere.example:9");
}
