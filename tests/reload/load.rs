//! Steady keep-alive load through 50 reloads: every request answered `200` by a backend,
//! exactly once, and seen by exactly one backend exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::eventually;
use crate::support::gate::GatedBackend;
use crate::support::raw::RawConn;
use crate::support::reload::{metrics, reload_counts, series, Reloadable, ADMIN};

const CLIENTS: usize = 12;
const RELOADS: u64 = 50;

/// Two valid configs to alternate between. `first`: pool `app` of a, b, c (equal weights),
/// `/alt` to pool `alt` of d. The other: a, b and d in `app` with other weights (c removed, d
/// added), `/alt` to `app` (a changed route), pool `alt` gone.
fn load_config(first: bool, [a, b, c, d]: [SocketAddr; 4]) -> String {
    let (alt_pool, app) = if first {
        (
            "alt",
            format!(
                "{{ address = \"{a}\", weight = 1 }}, {{ address = \"{b}\", weight = 1 }}, \
                 {{ address = \"{c}\", weight = 1 }}"
            ),
        )
    } else {
        (
            "app",
            format!(
                "{{ address = \"{a}\", weight = 3 }}, {{ address = \"{b}\", weight = 1 }}, \
                 {{ address = \"{d}\", weight = 2 }}"
            ),
        )
    };
    let alt = if first {
        format!("[pool.alt]\nbackends = [{{ address = \"{d}\" }}]\n")
    } else {
        String::new()
    };
    format!(
        r#"{ADMIN}
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[[route]]
path_prefix = "/alt"
pool = "{alt_pool}"

[pool.app]
algorithm = "weighted_round_robin"
backends = [{app}]

{alt}"#
    )
}

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    /// Request id -> the backend that answered it.
    answered: Mutex<HashMap<u64, String>>,
    failures: Mutex<Vec<String>>,
}

/// One client: a keep-alive connection sending requests tagged `x-id` until `stop`; a failed
/// request is recorded and the client goes on with a new connection.
fn client(
    addr: SocketAddr,
    next_id: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Outcomes>,
) {
    let mut conn = RawConn::open(addr);
    while !stop.load(Ordering::SeqCst) {
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let path = if id % 2 == 0 { "/" } else { "/alt/x" };
        conn.send(format!("GET {path} HTTP/1.1\r\nhost: app\r\nx-id: {id}\r\n\r\n").as_bytes());
        // `response` panics on a closed connection or a malformed answer: a failure to record.
        let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| conn.response())) {
            Ok(r) if r.status() != 200 => Some(format!(
                "request {id} (GET {path}): status {}, {:?}",
                r.status(),
                r.text().trim()
            )),
            Ok(r) if r.header("x-id") != Some(id.to_string().as_str()) => Some(format!(
                "request {id}: answered with x-id {:?}",
                r.header("x-id")
            )),
            Ok(r) => match r.header("x-backend") {
                Some(backend) => {
                    let previous = outcomes
                        .answered
                        .lock()
                        .unwrap()
                        .insert(id, backend.to_string());
                    previous.map(|p| format!("request {id} answered twice ({p}, {backend})"))
                }
                None => Some(format!("request {id}: no x-backend")),
            },
            Err(panic) => Some(format!(
                "request {id}: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "connection failed".to_string())
            )),
        };
        if let Some(failure) = failure {
            outcomes.failures.lock().unwrap().push(failure);
            conn = RawConn::open(addr);
        }
    }
}

#[test]
fn fifty_reloads_under_keep_alive_load_lose_no_request() {
    let backends: Vec<GatedBackend> = ["a", "b", "c", "d"]
        .into_iter()
        .map(GatedBackend::start)
        .collect();
    let addrs = [0, 1, 2, 3].map(|i| backends[i].addr());
    let sluice = Reloadable::start_with(&load_config(true, addrs), 2);
    let admin = sluice.admin();

    let (next_id, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let outcomes = Arc::new(Outcomes::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next_id, stop, outcomes) = (next_id.clone(), stop.clone(), outcomes.clone());
            let addr = sluice.addr();
            std::thread::spawn(move || client(addr, next_id, stop, outcomes))
        })
        .collect();

    let started = Instant::now();
    let issued = || next_id.load(Ordering::SeqCst);
    for i in 0..RELOADS {
        // Let the load run between reloads: at least one request per client since the last.
        let before = issued();
        assert!(
            eventually(Duration::from_secs(5), || issued()
                >= before + CLIENTS as u64),
            "the load stalled before reload {i}"
        );
        let reload = sluice.reload_ok(&load_config(i % 2 == 1, addrs));
        assert_eq!(reload.generation(), i + 2);
    }
    let before = issued();
    assert!(eventually(Duration::from_secs(5), || issued()
        >= before + CLIENTS as u64));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed();

    let failures = outcomes.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let answered = outcomes.answered.lock().unwrap().clone();
    let total = issued();
    assert_eq!(answered.len() as u64, total, "every request answered");

    // Each id seen by exactly one backend exactly once: the one that answered it.
    let mut seen_by: HashMap<u64, Vec<String>> = HashMap::new();
    for backend in &backends {
        for seen in backend.seen() {
            let id = seen.headers["x-id"].to_str().unwrap().parse().unwrap();
            seen_by
                .entry(id)
                .or_default()
                .push(backend.backend.name.clone());
        }
    }
    assert_eq!(
        seen_by.len() as u64,
        total,
        "every request reached a backend"
    );
    for (id, seen) in &seen_by {
        assert_eq!(
            seen,
            &vec![answered[id].clone()],
            "request {id} reached {seen:?}, answered by {}",
            answered[id]
        );
    }
    // Both configs served: c is only in the first, d takes `/` only in the second.
    for backend in &backends {
        assert!(
            !backend.seen().is_empty(),
            "{} saw no request",
            backend.backend.name
        );
    }

    assert_eq!(sluice.generation(), RELOADS + 1);
    assert_eq!(reload_counts(admin), (RELOADS as f64, 0.0));
    let gauge = series(&metrics(admin), "sluice_config_generation");
    assert_eq!(gauge, Some((RELOADS + 1) as f64));
    eprintln!(
        "{total} requests from {CLIENTS} keep-alive clients through {RELOADS} reloads in {elapsed:?}"
    );
}
