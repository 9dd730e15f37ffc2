//! Listeners across reloads: one added serves on the address the reload reports, on every
//! worker; one removed stops accepting and closes its connections gracefully; one kept (also
//! when changed, reordered or renamed) keeps its socket (its port-0 port) and its open
//! connections.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::gate::GatedBackend;
use crate::support::raw::RawConn;
use crate::support::reload::{who_answers, Reloadable, ADMIN};
use crate::support::{eventually, TestBackend};

/// One listener on `127.0.0.1:0`: its name, extra keys for its table, and the backend its
/// requests go to (through a route on it alone, to a pool of its own).
type Listening<'a> = (&'a str, &'a str, SocketAddr);

fn listeners_config(listeners: &[Listening]) -> String {
    let mut text = format!("{ADMIN}\n[log]\naccess_log = false\n");
    for (name, keys, backend) in listeners {
        text += &format!(
            "\n[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\n{keys}\n\n\
             [[route]]\nlistener = \"{name}\"\npool = \"to-{name}\"\n\n\
             [pool.to-{name}]\nbackends = [{{ address = \"{backend}\" }}]\n"
        );
    }
    text
}

/// Listener `web` to backend `app`; with `extra`, listener `extra` to that backend.
fn config(app: SocketAddr, extra: Option<SocketAddr>) -> String {
    match extra {
        Some(x) => listeners_config(&[("web", "", app), ("extra", "", x)]),
        None => listeners_config(&[("web", "", app)]),
    }
}

/// `GET path` on a keep-alive connection; the backend that answered.
fn ask(conn: &mut RawConn, path: &str) -> String {
    conn.send(format!("GET {path} HTTP/1.1\r\nhost: app\r\n\r\n").as_bytes());
    let response = conn.response();
    assert_eq!(response.status(), 200, "{}", response.text());
    response.header("x-backend").unwrap().to_string()
}

#[test]
fn a_listener_added_by_reload_serves_and_a_kept_one_keeps_its_socket() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    // Two workers: the new listener has to start on each.
    let sluice = Reloadable::start_with(&config(a.addr, None), 2);
    let web = sluice.addr();
    let mut open = RawConn::open(web);
    assert_eq!(ask(&mut open, "/"), "a");

    let reload = sluice.reload_ok(&config(a.addr, Some(b.addr)));
    assert_eq!(reload.changes("listeners", "added"), ["extra"]);
    assert!(reload.changes("listeners", "changed").is_empty());
    assert_eq!(reload.listening("web"), Some(web), "{:#}", reload.body);
    let extra = reload.listening("extra").expect("extra is listening");
    assert_eq!(extra.ip(), web.ip());
    assert!(extra.port() != 0 && extra.port() != web.port(), "{extra}");

    // Many new connections, so that each worker's socket takes some.
    for _ in 0..16 {
        assert_eq!(who_answers(extra, "/"), "b");
    }
    // The kept listener: same port, the connection opened before still served.
    assert_eq!(ask(&mut open, "/"), "a");
    assert_eq!(who_answers(web, "/"), "a");

    // A reload that changes neither keeps both where they are.
    let again = sluice.reload_ok(&config(a.addr, Some(b.addr)));
    assert_eq!(again.listening("web"), Some(web));
    assert_eq!(again.listening("extra"), Some(extra));
    assert_eq!(ask(&mut open, "/"), "a");
    // Nor does one that only reorders them: each still routes by its own rules.
    let reordered = listeners_config(&[("extra", "", b.addr), ("web", "", a.addr)]);
    let again = sluice.reload_ok(&reordered);
    assert!(again.changes("listeners", "changed").is_empty());
    assert_eq!(again.listening("web"), Some(web));
    assert_eq!(again.listening("extra"), Some(extra));
    assert_eq!(ask(&mut open, "/"), "a");
    assert_eq!(who_answers(web, "/"), "a");
    assert_eq!(who_answers(extra, "/"), "b");
    assert_eq!(sluice.generation(), 4);
}

#[test]
fn a_listener_removed_by_reload_stops_accepting_and_drains_its_connections() {
    let a = TestBackend::start("a");
    let held = GatedBackend::start("held");
    let sluice = Reloadable::start_with(&config(a.addr, Some(held.addr())), 2);
    let (web, extra) = (sluice.sluice.addrs[0], sluice.sluice.addrs[1]);

    // On the listener to be removed: one request in flight, one idle keep-alive connection.
    let mut in_flight = RawConn::open(extra);
    in_flight.send(b"GET /held HTTP/1.1\r\nhost: app\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || held.gate.arrived() == 1));
    let mut idle = RawConn::open(extra);
    assert_eq!(ask(&mut idle, "/"), "held");

    let reload = sluice.reload_ok(&config(a.addr, None));
    assert_eq!(reload.changes("listeners", "removed"), ["extra"]);
    assert_eq!(reload.listening("extra"), None, "{:#}", reload.body);
    assert_eq!(reload.listening("web"), Some(web));

    // No new connections: once its sockets (one per worker) are closed, connecting is refused.
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(extra)
            .is_err()),
        "the removed listener still accepts"
    );
    for _ in 0..4 {
        assert!(TcpStream::connect(extra).is_err());
    }
    // The idle connection is closed, without a response.
    let (said, closed) = idle.rest();
    assert!(
        closed && said.is_empty(),
        "idle connection: closed {closed}, got {said:?}"
    );
    // The request in flight completes, then its connection closes.
    held.gate.open();
    let response = in_flight.response();
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("x-backend"), Some("held"));
    let (said, closed) = in_flight.rest();
    assert!(
        closed && said.is_empty(),
        "after its response: closed {closed}, got {said:?}"
    );

    // The kept listener serves on.
    assert_eq!(who_answers(web, "/"), "a");
}

#[test]
fn a_changed_or_renamed_listener_keeps_its_socket_and_connections() {
    let a = TestBackend::start("a");
    let sluice = Reloadable::start_with(&config(a.addr, None), 2);
    let web = sluice.addr();
    let mut open = RawConn::open(web);
    assert_eq!(ask(&mut open, "/"), "a");

    // New settings, applied in place.
    let reload = sluice.reload_ok(&listeners_config(&[("web", "max_body_bytes = 10", a.addr)]));
    assert_eq!(reload.changes("listeners", "changed"), ["web"]);
    assert_eq!(reload.listening("web"), Some(web));
    assert_eq!(ask(&mut open, "/"), "a");
    let mut post = RawConn::open(web);
    post.send(b"POST / HTTP/1.1\r\nhost: app\r\ncontent-length: 100\r\nconnection: close\r\n\r\n");
    post.send(&[b'x'; 100]);
    assert_eq!(post.response().status(), 413, "the new limit applies");

    // A new name for the same address continues the listener: same socket, same connections.
    let reload = sluice.reload_ok(&listeners_config(&[("front", "", a.addr)]));
    assert_eq!(reload.changes("listeners", "added"), ["front"]);
    assert_eq!(reload.changes("listeners", "removed"), ["web"]);
    assert_eq!(reload.listening("front"), Some(web), "{:#}", reload.body);
    assert_eq!(ask(&mut open, "/"), "a");
    assert_eq!(who_answers(web, "/"), "a");
}
