//! A backend a reload removes while it has a request in flight: it takes no new request, is
//! listed as `draining` in `GET /api/pools` while the request runs, the request completes with
//! `200`, and then it is gone from the list.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::admin::pools;
use crate::support::eventually;
use crate::support::gate::GatedBackend;
use crate::support::raw::RawConn;
use crate::support::reload::{who_answers, Reloadable, ADMIN};

/// `/held` to pool `held` of `held` (when given), everything else to pool `app` of `app`.
fn config(app: &[SocketAddr], held: Option<&[SocketAddr]>) -> String {
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("{{ address = \"{a}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let held = held
        .map(|h| {
            format!(
                "[[route]]\npath_prefix = \"/held\"\npool = \"held\"\n\n\
                 [pool.held]\nbackends = [{}]\n",
                list(h)
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
backends = [{}]

{held}"#,
        list(app)
    )
}

/// Every `(pool, state)` under which `address` is listed in `GET /api/pools`.
fn listed(admin: SocketAddr, address: &str) -> Vec<(String, String)> {
    let pools = pools(admin);
    let mut found = Vec::new();
    for pool in pools["pools"].as_array().unwrap() {
        for backend in pool["backends"].as_array().unwrap() {
            if backend["address"] == address {
                found.push((
                    pool["name"].as_str().unwrap().to_string(),
                    backend["state"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    found
}

/// Sends `GET /held` on a connection of its own and waits until `backend` holds it.
fn hold_a_request(sluice: &Reloadable, backend: &GatedBackend) -> RawConn {
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET /held HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n");
    assert!(
        eventually(Duration::from_secs(5), || backend.gate.arrived() == 1),
        "the request reached the backend"
    );
    conn
}

#[test]
fn a_removed_backend_drains_its_request_then_disappears() {
    let (keep, gone) = (GatedBackend::start("keep"), GatedBackend::start("gone"));
    keep.gate.open();
    let sluice = Reloadable::start(&config(&[keep.addr(), gone.addr()], Some(&[gone.addr()])));
    let admin = sluice.admin();
    let gone_address = gone.addr().to_string();
    let mut in_flight = hold_a_request(&sluice, &gone);
    let before = gone.seen().len();

    // `gone` leaves both pools; `held` is served by `keep` instead.
    let reload = sluice.reload_ok(&config(&[keep.addr()], Some(&[keep.addr()])));
    assert_eq!(
        reload.changes("backends", "removed"),
        [
            format!("app/{gone_address}"),
            format!("held/{gone_address}")
        ]
    );
    // Listed as draining where its request runs; not at all where it had none.
    assert_eq!(
        listed(admin, &gone_address),
        [("held".to_string(), "draining".to_string())]
    );
    let held_pool = pools(admin)["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "held")
        .cloned()
        .unwrap();
    let draining = held_pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == gone_address.as_str())
        .unwrap();
    assert_eq!(draining["active_requests"], 1, "{held_pool:#}");

    // No new request reaches it, on either path.
    for _ in 0..10 {
        assert_eq!(who_answers(sluice.addr(), "/"), "keep");
        assert_eq!(who_answers(sluice.addr(), "/held"), "keep");
    }
    assert_eq!(gone.seen().len(), before);

    // Its request completes, and then it is no longer listed.
    gone.gate.open();
    let response = in_flight.response();
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("x-backend"), Some("gone"));
    assert!(
        eventually(Duration::from_secs(5), || listed(admin, &gone_address)
            .is_empty()),
        "{}",
        pools(admin)
    );
    assert_eq!(gone.seen().len(), before);
}

/// The same when the backend's whole pool goes: its request still runs, so it is listed as
/// draining until it ends.
#[test]
fn a_backend_of_a_removed_pool_is_listed_as_draining_while_its_request_runs() {
    let (keep, gone) = (GatedBackend::start("keep"), GatedBackend::start("gone"));
    let sluice = Reloadable::start(&config(&[keep.addr()], Some(&[gone.addr()])));
    let admin = sluice.admin();
    let gone_address = gone.addr().to_string();
    let mut in_flight = hold_a_request(&sluice, &gone);

    let reload = sluice.reload_ok(&config(&[keep.addr()], None));
    assert_eq!(reload.changes("pools", "removed"), ["held"]);
    let listing = listed(admin, &gone_address);
    let mut complete = || {
        gone.gate.open();
        let response = in_flight.response();
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("x-backend"), Some("gone"));
    };
    if listing != [("held".to_string(), "draining".to_string())] {
        complete();
        panic!(
            "a backend of a removed pool with a request in flight is listed as {listing:?}, \
             not as draining: {}",
            pools(admin)
        );
    }
    complete();
    assert!(eventually(Duration::from_secs(5), || listed(
        admin,
        &gone_address
    )
    .is_empty()));
}

/// A request that arrived before the reload and waits for a slot of its backend (the backend is
/// at `max_connections_per_backend`) has started under the old config: when the reload removes
/// that backend, the request must still be served, not failed.
#[test]
fn a_request_waiting_for_a_removed_backend_is_still_served() {
    let (keep, gone) = (GatedBackend::start("keep"), GatedBackend::start("gone"));
    keep.gate.open();
    let limits = "[pool.held.limits]\nmax_connections_per_backend = 1\nmax_pending = 1\n";
    let sluice = Reloadable::start(&format!(
        "{}{limits}",
        config(&[keep.addr()], Some(&[gone.addr()]))
    ));
    let mut in_flight = hold_a_request(&sluice, &gone);

    // Two more: one waits for `gone`'s slot, the other finds the queue full (503 at once).
    // Which is which tells that the one left is waiting.
    let (tx, rx) = std::sync::mpsc::channel();
    for n in 0..2 {
        let (tx, addr) = (tx.clone(), sluice.addr());
        std::thread::spawn(move || {
            let mut conn = RawConn::open(addr);
            conn.send(b"GET /held HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n");
            let response = conn.response();
            let _ = tx.send((n, response.status(), response.text()));
        });
    }
    let (refused, status, text) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("overloaded"), "{text}");

    sluice.reload_ok(&format!(
        "{}{limits}",
        config(&[keep.addr()], Some(&[keep.addr()]))
    ));
    gone.gate.open();
    assert_eq!(in_flight.response().status(), 200);
    let (waiter, status, text) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_ne!(waiter, refused);
    assert_eq!(
        status, 200,
        "the request waiting since before the reload failed: {text:?}"
    );
}
