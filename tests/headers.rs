//! Header rules through a real backend that records what it saw: hop-by-hop removal in both
//! directions, the forwarding headers, the client's `Host`, request ids, and HTTP/2 `:authority`.
//! Requests are raw bytes, so the test, not a client library, decides what is on the wire.

mod support;

use std::sync::{Arc, Mutex};

use http::Response;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::raw::*;
use support::*;

/// Sends `request` on a fresh connection and returns the response and what the backend saw.
fn exchange(sluice: &TestSluice, backend: &TestBackend, request: &str) -> (RawResponse, Seen) {
    let mut conn = RawConn::open(sluice.addr());
    conn.send(request.as_bytes());
    let response = conn.response();
    assert_eq!(response.status(), 200, "{response:?}");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "backend saw {seen:?}");
    (response, seen.into_iter().next().unwrap())
}

/// Every value the backend saw for `name`.
fn values(seen: &Seen, name: &str) -> Vec<String> {
    seen.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---- hop-by-hop, request direction ----

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let request = "GET / HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, x-secret\r\nKeep-Alive: timeout=5\r\n\
Proxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: x-checksum\r\nx-secret: hunter2\r\n\
x-kept: yes\r\n\r\n";

    // Control: sent straight to a backend, every one of these headers arrives, so their absence
    // through sluice is sluice's doing.
    let direct = TestBackend::start("direct");
    let mut conn = RawConn::open(direct.addr);
    conn.send(request.as_bytes());
    assert_eq!(conn.response().status(), 200);
    let control = &direct.seen()[0];
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "x-secret",
    ] {
        assert!(control.headers.contains_key(name), "control lost {name}");
    }

    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (_, seen) = exchange(&sluice, &backend, request);
    // `Trailer` is end-to-end (RFC 9110 section 7.6.1 does not list it).
    assert_eq!(seen.headers["trailer"], "x-checksum");
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-secret",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "backend saw {name}: {:?}",
            seen.headers
        );
    }
    assert_eq!(values(&seen, "x-kept"), ["yes"]);
}

#[test]
fn every_header_named_in_connection_is_removed() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    // Several tokens across two Connection headers, odd spacing and case.
    let (_, seen) = exchange(
        &sluice,
        &backend,
        "GET / HTTP/1.1\r\nHost: app\r\nConnection: X-One ,x-two\r\nConnection: x-three\r\n\
x-one: 1\r\nx-two: 2\r\nx-three: 3\r\nx-four: 4\r\n\r\n",
    );
    for name in ["connection", "x-one", "x-two", "x-three"] {
        assert!(
            !seen.headers.contains_key(name),
            "backend saw {name}: {:?}",
            seen.headers
        );
    }
    assert_eq!(values(&seen, "x-four"), ["4"]);
}

/// A WebSocket upgrade keeps `Connection: upgrade` and `Upgrade` (`docs/websocket.md`); the
/// rest of the hop-by-hop rules still apply to it.
#[test]
fn upgrade_websocket_is_forwarded() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (_, seen) = exchange(
        &sluice,
        &backend,
        "GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, x-one\r\nUpgrade: websocket\r\n\
x-one: 1\r\nKeep-Alive: timeout=5\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(values(&seen, "upgrade"), ["websocket"]);
    assert_eq!(values(&seen, "connection"), ["upgrade"]);
    for name in ["x-one", "keep-alive"] {
        assert!(!seen.headers.contains_key(name), "{:?}", seen.headers);
    }
    assert_eq!(values(&seen, "sec-websocket-version"), ["13"]);
}

#[test]
fn te_trailers_survives() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (_, seen) = exchange(
        &sluice,
        &backend,
        "GET / HTTP/1.1\r\nHost: app\r\nTE: trailers\r\n\r\n",
    );
    assert_eq!(values(&seen, "te"), ["trailers"]);
}

#[test]
fn connection_cannot_remove_headers_sluice_sets() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (response, seen) = exchange(
        &sluice,
        &backend,
        "POST /p HTTP/1.1\r\nHost: app.example\r\n\
Connection: x-forwarded-for, x-request-id, host, x-forwarded-proto, x-forwarded-host, content-length\r\n\
X-Forwarded-For: 6.6.6.6\r\nContent-Length: 4\r\n\r\nbody",
    );
    assert_eq!(values(&seen, "host"), ["app.example"]);
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&seen, "x-forwarded-host"), ["app.example"]);
    let ids = values(&seen, "x-request-id");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(is_request_id(&ids[0]), "{ids:?}");
    assert_eq!(response.header("x-request-id"), Some(ids[0].as_str()));
    assert_eq!(seen.body, "body");
}

// ---- hop-by-hop, response direction ----

/// A backend answering every request with `fields` and the body `hello`.
fn answering_with(fields: &'static [(&'static str, &'static str)]) -> TestBackend {
    let handler: Handler = Arc::new(move |_req| {
        Box::pin(async move {
            let mut response = Response::builder();
            for (name, value) in fields {
                response = response.header(*name, *value);
            }
            response.body(full("hello")).unwrap()
        })
    });
    TestBackend::with_handler("app", Arc::new(Mutex::new(Vec::new())), handler)
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let backend = answering_with(&[
        ("connection", "x-internal"),
        ("x-internal", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "websocket"),
        ("x-public", "yes"),
    ]);
    let sluice = TestSluice::start(&simple_config(&[&backend]));

    // Control: the backend really puts these on the wire, so their absence below is sluice's.
    let mut direct = RawConn::open(backend.addr);
    direct.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let direct = direct.response();
    for name in [
        "connection",
        "x-internal",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            direct.header(name).is_some(),
            "backend did not send {name}: {direct:?}"
        );
    }

    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let response = conn.response();
    assert_eq!(response.status_line, "HTTP/1.1 200 OK");
    assert_eq!(response.text(), "hello");
    for name in [
        "connection",
        "x-internal",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert_eq!(
            response.header(name),
            None,
            "client saw {name}: {:?}",
            response.headers
        );
    }
    assert_eq!(response.header("x-public"), Some("yes"));
}

/// The usual case, a `Connection` naming no other field: sluice's HTTP/1.1 client leaves the
/// hop-by-hop fields out as it reads the head (no strip pass), for a GET and a HEAD, on a
/// connection it keeps using.
#[test]
fn hop_by_hop_response_headers_naming_nothing_else_are_removed() {
    let backend = answering_with(&[
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "h2c"),
        ("x-public", "yes"),
    ]);
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let mut conn = RawConn::open(sluice.addr());
    for method in ["GET", "HEAD", "GET"] {
        conn.send(format!("{method} / HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes());
        let response = match method {
            "HEAD" => conn.head_response(),
            _ => conn.response(),
        };
        assert_eq!(response.status_line, "HTTP/1.1 200 OK");
        for name in ["connection", "keep-alive", "proxy-connection", "upgrade"] {
            assert_eq!(response.header(name), None, "{method}: client saw {name}");
        }
        assert_eq!(response.header("x-public"), Some("yes"), "{method}");
    }
    assert_eq!(backend.connections_accepted(), 1);
}

// ---- forwarding headers ----

#[test]
fn forwarded_for_from_an_untrusted_peer_is_replaced() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (_, seen) = exchange(
        &sluice,
        &backend,
        "GET / HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
X-Forwarded-Host: forged.example\r\n\r\n",
    );
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&seen, "x-forwarded-host"), ["app"]);
}

#[test]
fn forwarded_for_from_a_trusted_peer_is_extended() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[backend.addr],
        "",
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    ));
    let (_, seen) = exchange(
        &sluice,
        &backend,
        "GET / HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    );
    assert_eq!(values(&seen, "x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
}

#[test]
fn forwarded_for_is_set_when_absent_even_from_a_trusted_peer() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&config_with(
        &[backend.addr],
        "",
        "trusted_proxies = [\"127.0.0.0/8\"]",
        "",
    ));
    let (_, seen) = exchange(&sluice, &backend, "GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
}

#[test]
fn client_host_with_port_reaches_the_backend_unchanged() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (_, seen) = exchange(
        &sluice,
        &backend,
        "GET /where?q=1 HTTP/1.1\r\nHost: Shop.Example:8080\r\n\r\n",
    );
    assert_eq!(values(&seen, "host"), ["Shop.Example:8080"]);
    assert_eq!(values(&seen, "x-forwarded-host"), ["Shop.Example:8080"]);
    assert_eq!(values(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.uri, "/where?q=1");
}

/// sluice's own HTTP/1.1 client (a GET) writes the headers sluice adds straight into the head;
/// hyper's (a POST with a body) gets them in the map. Both must send exactly the same ones,
/// with every copy the client sent replaced, or kept where a trusted peer's are kept.
#[test]
fn both_upstream_clients_send_the_same_added_headers() {
    let spoofed =
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: https\r\n\
X-Forwarded-Host: forged.example\r\nX-Request-Id: client-7\r\nX-Request-Id: client-8\r\n\
traceparent: 00-xyz\r\ntracestate: a=b\r\n";
    let names = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "traceparent",
        "tracestate",
    ];
    for (trusted, expected_for, expected_proto, expected_host) in [
        (false, "127.0.0.1", "http", "app"),
        (
            true,
            "6.6.6.6, 7.7.7.7, 127.0.0.1",
            "https",
            "forged.example",
        ),
    ] {
        let backend = TestBackend::start("app");
        let extra = if trusted {
            "trusted_proxies = [\"127.0.0.0/8\"]"
        } else {
            ""
        };
        let sluice = TestSluice::start(&config_with(&[backend.addr], "", extra, ""));
        let mut seen_by = Vec::new();
        for request in [
            format!("GET / HTTP/1.1\r\nHost: app\r\n{spoofed}\r\n"),
            format!("POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n{spoofed}\r\nhi"),
        ] {
            let mut conn = RawConn::open(sluice.addr());
            conn.send(request.as_bytes());
            assert_eq!(conn.response().status(), 200, "{request}");
            let seen = backend.seen().pop().expect("the backend saw the request");
            let got: Vec<Vec<String>> = names.iter().map(|n| values(&seen, n)).collect();
            assert_eq!(got[0], [expected_for], "trusted {trusted}: {request}");
            assert_eq!(got[1], [expected_proto], "trusted {trusted}: {request}");
            assert_eq!(got[2], [expected_host], "trusted {trusted}: {request}");
            // An x-request-id that came twice is not one id: the request gets its own.
            assert_eq!(got[3].len(), 1, "{got:?}");
            assert_eq!(got[4].len(), 1, "{got:?}");
            assert!(
                got[4][0].starts_with("00-") && got[4][0].len() == 55,
                "{got:?}"
            );
            assert!(
                got[5].is_empty(),
                "an invalid context's tracestate went on: {got:?}"
            );
            seen_by.push(got);
        }
        // The same but for the generated ids.
        let (get, post) = (&seen_by[0], &seen_by[1]);
        assert_eq!(get[..3], post[..3]);
    }
}

// ---- request ids ----

#[test]
fn request_id_is_added_and_echoed() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (response, seen) = exchange(&sluice, &backend, "GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let ids = values(&seen, "x-request-id");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(is_request_id(&ids[0]), "not 32 hex digits: {:?}", ids[0]);
    assert_eq!(response.header("x-request-id"), Some(ids[0].as_str()));

    // A second request gets a different id.
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let second = conn.response();
    let second_id = second.header("x-request-id").unwrap_or_default();
    assert!(is_request_id(second_id), "{second:?}");
    assert_ne!(second_id, ids[0]);
}

#[test]
fn client_request_id_is_kept_and_echoed() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let (response, seen) = exchange(
        &sluice,
        &backend,
        "GET / HTTP/1.1\r\nHost: app\r\nX-Request-Id: client-trace-42\r\n\r\n",
    );
    assert_eq!(values(&seen, "x-request-id"), ["client-trace-42"]);
    assert_eq!(response.header("x-request-id"), Some("client-trace-42"));
}

// ---- HTTP/2 downstream ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_becomes_host_for_an_http11_backend() {
    let backend = TestBackend::start("app");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Body>();
    let req = http::Request::get(sluice.url("/h2?x=1"))
        .body(full(""))
        .unwrap();
    let response = client.request(req).await.expect("h2 request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    let authority = sluice.addr().to_string();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.uri, "/h2?x=1");
    assert_eq!(values(seen, "host"), [authority.as_str()]);
    assert_eq!(values(seen, "x-forwarded-host"), [authority.as_str()]);
    assert_eq!(values(seen, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(values(seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(values(seen, "x-request-id"), [id]);
}
