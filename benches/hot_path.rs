//! Criterion benches for the pure pieces of the request path: route matching and header rules.
//! `cargo bench --bench hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderValue, Request};
use sluice::config::{HostMatch, Route};
use sluice::proxy::headers;
use sluice::proxy::route::Router;

fn routes() -> Vec<Route> {
    let mut routes = Vec::new();
    for i in 0..20 {
        routes.push(Route {
            listener: None,
            host: HostMatch::Exact(format!("svc{i}.example.com")),
            path_prefix: format!("/v{i}"),
            pool: i,
            max_body_bytes: None,
        });
    }
    routes.push(Route {
        listener: None,
        host: HostMatch::Wildcard(".example.com".into()),
        path_prefix: "/".into(),
        pool: 20,
        max_body_bytes: None,
    });
    routes.push(Route {
        listener: None,
        host: HostMatch::Any,
        path_prefix: "/".into(),
        pool: 21,
        max_body_bytes: None,
    });
    routes
}

fn routing(c: &mut Criterion) {
    let router = Router::for_listener(&routes(), 0);
    c.bench_function("route/exact_host_22_routes", |b| {
        b.iter(|| {
            router.find(
                black_box(Some("svc7.example.com:8080")),
                black_box("/v7/users"),
            )
        })
    });
    c.bench_function("route/fallthrough_any_22_routes", |b| {
        b.iter(|| router.find(black_box(Some("other.org")), black_box("/x")))
    });
}

fn request() -> Request<()> {
    Request::get("/api/v1/users?id=7")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("connection", "keep-alive")
        .body(())
        .unwrap()
}

fn header_rules(c: &mut Criterion) {
    let req = request();
    c.bench_function("headers/check_request", |b| {
        b.iter(|| headers::check_request(black_box(&req)))
    });
    let peer = headers::peer_value("10.1.2.3".parse().unwrap());
    c.bench_function("headers/strip_and_forwarded", |b| {
        b.iter_batched(
            || request().into_parts().0.headers,
            |mut h| {
                headers::strip_hop_by_hop(&mut h);
                let origin = headers::Origin {
                    peer: &peer,
                    trusted: false,
                    proto: "http",
                };
                let host = Some(HeaderValue::from_static("api.example.com"));
                let own = headers::Own::of(&h);
                let added = headers::Added::take(&mut h, own, origin, host, None);
                (h, added)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/new_request_id", |b| {
        b.iter(headers::new_request_id)
    });
}

criterion_group!(benches, routing, header_rules);
criterion_main!(benches);
