//! Routing: host (exact, wildcard, any; case and port ignored), longest path prefix, precedence,
//! ties, listener-scoped routes, and the 404 sluice answers when nothing matches.
//! Every backend answers its own name, so each assertion names the route that was chosen.

mod support;

use std::net::SocketAddr;

use http::Request;
use support::*;

/// One pool per backend, named after it, and the given routes.
fn config(listeners: &[&str], backends: &[&TestBackend], routes: &str) -> String {
    let mut toml = String::from("[log]\naccess_log = false\n");
    for name in listeners {
        toml += &format!("\n[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\n");
    }
    toml += routes;
    for b in backends {
        toml += &format!("\n[pool.{}]\nbackends = [{}]\n", b.name, backend_list(&[b]));
    }
    toml
}

/// The name of the backend that answered `host` + `path` on `addr` (asserting a 200).
async fn who(addr: SocketAddr, host: &str, path: &str) -> String {
    let got = send(
        Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{host}{path}: {}", got.text());
    got.text()
}

async fn assert_routes(addr: SocketAddr, cases: &[(&str, &str, &str)]) {
    for (host, path, want) in cases {
        assert_eq!(
            who(addr, host, path).await,
            *want,
            "Host: {host}, path {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_matches_case_insensitively_and_ignores_the_port() {
    let (api, other) = (TestBackend::start("api"), TestBackend::start("other"));
    let sluice = TestSluice::start(&config(
        &["web"],
        &[&api, &other],
        r#"
[[route]]
pool = "other"

[[route]]
host = "api.example.com"
pool = "api"
"#,
    ));
    assert_routes(
        sluice.addr(),
        &[
            ("api.example.com", "/", "api"),
            ("API.Example.COM", "/x", "api"),
            ("api.example.com:8443", "/", "api"),
            ("Api.Example.Com:80", "/", "api"),
            ("www.example.com", "/", "other"),
            ("api.example.com.evil", "/", "other"),
            ("example.com", "/", "other"),
        ],
    )
    .await;
}

/// HTTP/2 names the host in `:authority`, with no `Host` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_is_the_host() {
    let (api, other) = (TestBackend::start("api"), TestBackend::start("other"));
    let sluice = TestSluice::start(&config(
        &["web"],
        &[&api, &other],
        r#"
[[route]]
pool = "other"

[[route]]
host = "api.example.com"
pool = "api"
"#,
    ));
    let stream = tokio::net::TcpStream::connect(sluice.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    for (authority, want) in [
        ("API.example.com:8443", "api"),
        ("www.example.com", "other"),
    ] {
        let response = sender
            .send_request(
                Request::get(format!("http://{authority}/x"))
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .expect("h2 request");
        assert_eq!(response.status(), 200, "{authority}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, want, ":authority {authority}");
    }
    assert_eq!(api.seen()[0].headers["host"], "API.example.com:8443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_host_matches_any_subdomain() {
    let (wild, other) = (TestBackend::start("wild"), TestBackend::start("other"));
    let sluice = TestSluice::start(&config(
        &["web"],
        &[&wild, &other],
        r#"
[[route]]
pool = "other"

[[route]]
host = "*.example.com"
pool = "wild"
"#,
    ));
    assert_routes(
        sluice.addr(),
        &[
            ("www.example.com", "/", "wild"),
            ("a.b.example.com", "/", "wild"),
            ("WWW.EXAMPLE.COM:9000", "/", "wild"),
            // The wildcard needs a label before the suffix.
            ("example.com", "/", "other"),
            ("notexample.com", "/", "other"),
            ("www.example.org", "/", "other"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_path_prefix_wins() {
    let (root, v1, users) = (
        TestBackend::start("root"),
        TestBackend::start("v1"),
        TestBackend::start("users"),
    );
    // Shortest first in the file, so "first match in file order" would get every case wrong.
    let sluice = TestSluice::start(&config(
        &["web"],
        &[&root, &v1, &users],
        r#"
[[route]]
path_prefix = "/"
pool = "root"

[[route]]
path_prefix = "/v1"
pool = "v1"

[[route]]
path_prefix = "/v1/users"
pool = "users"
"#,
    ));
    assert_routes(
        sluice.addr(),
        &[
            ("h", "/v1/users/7", "users"),
            ("h", "/v1/users", "users"),
            ("h", "/v1/items", "v1"),
            ("h", "/v1", "v1"),
            ("h", "/v2/users", "root"),
            ("h", "/", "root"),
        ],
    )
    .await;
    assert_eq!(users.seen()[0].uri, "/v1/users/7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_beats_any_host() {
    let (exact, wild, any) = (
        TestBackend::start("exact"),
        TestBackend::start("wild"),
        TestBackend::start("any"),
    );
    // The any-host route has the longest prefix and comes first; host specificity still wins.
    let sluice = TestSluice::start(&config(
        &["web"],
        &[&exact, &wild, &any],
        r#"
[[route]]
path_prefix = "/v1/long"
pool = "any"

[[route]]
host = "*.example.com"
pool = "wild"

[[route]]
host = "api.example.com"
pool = "exact"
"#,
    ));
    assert_routes(
        sluice.addr(),
        &[
            ("api.example.com", "/v1/long/x", "exact"),
            ("www.example.com", "/v1/long/x", "wild"),
            ("example.org", "/v1/long/x", "any"),
        ],
    )
    .await;
}

/// Exact duplicates are rejected by validation, so the one tie a valid config can hold is a
/// listener-scoped route and an unscoped one with the same host and prefix: equally specific.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_go_to_the_earlier_route() {
    let (first, second, third, fourth) = (
        TestBackend::start("first"),
        TestBackend::start("second"),
        TestBackend::start("third"),
        TestBackend::start("fourth"),
    );
    let sluice = TestSluice::start(&config(
        &["web"],
        &[&first, &second, &third, &fourth],
        r#"
[[route]]
path_prefix = "/p"
pool = "first"

[[route]]
listener = "web"
path_prefix = "/p"
pool = "second"

[[route]]
listener = "web"
host = "t.example.com"
path_prefix = "/p"
pool = "third"

[[route]]
host = "T.EXAMPLE.COM"
path_prefix = "/p"
pool = "fourth"
"#,
    ));
    assert_routes(
        sluice.addr(),
        &[
            ("x.example.com", "/p", "first"),
            ("x.example.com", "/p/q", "first"),
            ("t.example.com", "/p/q", "third"),
            ("T.Example.com:1", "/p", "third"),
        ],
    )
    .await;
    assert!(second.seen().is_empty());
    assert!(fourth.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_scoped_routes_apply_only_on_their_listener() {
    let (only_a, only_b, common) = (
        TestBackend::start("only_a"),
        TestBackend::start("only_b"),
        TestBackend::start("common"),
    );
    let sluice = TestSluice::start(&config(
        &["a", "b"],
        &[&only_a, &only_b, &common],
        r#"
[[route]]
listener = "a"
pool = "only_a"

[[route]]
listener = "b"
host = "b.example.com"
path_prefix = "/b"
pool = "only_b"

[[route]]
pool = "common"
"#,
    ));
    let (a, b) = (sluice.addrs[0], sluice.addrs[1]);
    assert_routes(
        a,
        &[
            ("x.example.com", "/", "only_a"),
            // The `b`-scoped route would be more specific, but does not exist on `a`.
            ("b.example.com", "/b/1", "only_a"),
        ],
    )
    .await;
    assert_routes(
        b,
        &[
            ("x.example.com", "/", "common"),
            ("b.example.com", "/b/1", "only_b"),
            ("b.example.com", "/other", "common"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_gets_a_plain_text_404_with_a_request_id() {
    let known = TestBackend::start("known");
    let sluice = TestSluice::start(&config(
        &["a", "b"],
        &[&known],
        r#"
[[route]]
host = "known.example.com"
path_prefix = "/app"
pool = "known"

[[route]]
listener = "b"
pool = "known"
"#,
    ));
    let a = sluice.addrs[0];
    assert_eq!(who(a, "known.example.com", "/app/x").await, "known");
    for (host, path) in [
        ("unknown.example.com", "/app/x"),
        ("known.example.com", "/"),
        ("known.example.com", "/ap"),
    ] {
        let got = send(
            Request::get(format!("http://{a}{path}"))
                .header("host", host)
                .body(full(""))
                .unwrap(),
        )
        .await;
        assert_eq!(got.status, 404, "{host}{path}");
        assert!(
            got.header("content-type")
                .is_some_and(|v| v.starts_with("text/plain")),
            "{host}{path}: content-type {:?}",
            got.header("content-type")
        );
        assert!(!got.text().trim().is_empty(), "{host}{path}: empty body");
        assert!(
            got.header("x-request-id").is_some_and(|v| !v.is_empty()),
            "{host}{path}: no x-request-id"
        );
    }
    // Listener `b` has a catch-all: the same unknown host is routed there.
    assert_eq!(
        who(sluice.addrs[1], "unknown.example.com", "/").await,
        "known"
    );
    assert_eq!(known.seen().len(), 2);
}
