//! Health survives reloads: a backend that active checks hold out of rotation stays out, and a
//! kept backend's counters keep counting.
//!
//! A reset would be invisible for a backend whose health endpoint always fails (a new backend
//! starts unhealthy too), so the sick backend here is *flaky* after having failed: its probes
//! alternate pass, fail, pass, ... With `healthy_threshold = 3` the verdict it earned stays
//! "unhealthy" (never three passes in a row); a reset verdict would start over as a new
//! backend's, which the first pass makes healthy (and `unhealthy_threshold = 3` would never
//! take back, with never two failures in a row): traffic would reach it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Response;

use crate::support::admin::{backend, pools, state};
use crate::support::reload::{who_answers, Reloadable, ADMIN};
use crate::support::{eventually, full, Handler, TestBackend};

const PASS: u8 = 0;
const FAIL: u8 = 1;
const ALTERNATE: u8 = 2;

/// A backend whose `GET /healthz` passes, fails, or alternates as told, counting the probes;
/// other paths answer with its name in `x-backend` and are counted as traffic.
struct Flaky {
    backend: TestBackend,
    mode: Arc<AtomicU8>,
    probes: Arc<AtomicUsize>,
    traffic: Arc<AtomicUsize>,
}

impl Flaky {
    fn start(name: &str) -> Flaky {
        let mode = Arc::new(AtomicU8::new(PASS));
        let (probes, traffic) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (m, p, t, tag) = (
            mode.clone(),
            probes.clone(),
            traffic.clone(),
            name.to_string(),
        );
        let handler: Handler = Arc::new(move |req| {
            let probe = req.uri().path() == "/healthz";
            let (m, p, t, tag) = (m.clone(), p.clone(), t.clone(), tag.clone());
            Box::pin(async move {
                if probe {
                    let n = p.fetch_add(1, Ordering::SeqCst);
                    let pass = match m.load(Ordering::SeqCst) {
                        PASS => true,
                        FAIL => false,
                        _ => n % 2 == 0,
                    };
                    let status = if pass { 200 } else { 500 };
                    return Response::builder()
                        .status(status)
                        .body(full("health"))
                        .unwrap();
                }
                t.fetch_add(1, Ordering::SeqCst);
                Response::builder()
                    .header("x-backend", tag.as_str())
                    .body(full(tag))
                    .unwrap()
            })
        });
        Flaky {
            backend: TestBackend::with_handler(name, Default::default(), handler),
            mode,
            probes,
            traffic,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    fn address(&self) -> String {
        self.backend.addr.to_string()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }
}

/// Pool `app` of `backends` (with their weights), checked every `interval`; with `other`,
/// one more pool that no route uses.
fn checked_config(
    backends: &[(&Flaky, u32)],
    other: Option<&TestBackend>,
    interval: &str,
) -> String {
    let list = backends
        .iter()
        .map(|(b, weight)| format!("{{ address = \"{}\", weight = {weight} }}", b.addr()))
        .collect::<Vec<_>>()
        .join(", ");
    let other = other
        .map(|o| {
            format!(
                "[pool.other]\nbackends = [{{ address = \"{}\" }}]\n",
                o.addr
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
backends = [{list}]

[pool.app.health_check]
path = "/healthz"
interval = "{interval}"
timeout = "{interval}"
healthy_threshold = 3
unhealthy_threshold = 3

{other}"#
    )
}

/// Starts sluice over `good` and `sick`, brings `sick` to the state under test (proven
/// healthy, then unhealthy, now flaky) and returns the running sluice.
fn with_a_flaky_unhealthy_backend(good: &Flaky, sick: &Flaky) -> Reloadable {
    let sluice = Reloadable::start(&checked_config(&[(good, 1), (sick, 1)], None, "60ms"));
    let admin = sluice.admin();
    assert!(
        eventually(Duration::from_secs(3), || {
            state(admin, "app", &good.address()) == "healthy"
                && state(admin, "app", &sick.address()) == "healthy"
        }),
        "both backends pass their first probes: {}",
        pools(admin)
    );
    sick.set(FAIL);
    assert!(
        eventually(Duration::from_secs(3), || state(
            admin,
            "app",
            &sick.address()
        ) == "unhealthy"),
        "failing probes take the sick backend out"
    );
    sick.set(ALTERNATE);
    sluice
}

/// Waits for `n` more probes of `backend`: the checks keep running, and with the alternation
/// at least one of any two probes passed.
fn await_probes(backend: &Flaky, n: usize) {
    let before = backend.probes();
    assert!(
        eventually(Duration::from_secs(3), || backend.probes() >= before + n),
        "{} is still probed",
        backend.backend.name
    );
}

#[test]
fn an_unhealthy_backend_gets_no_traffic_across_twenty_reloads() {
    let (good, sick) = (Flaky::start("good"), Flaky::start("sick"));
    let other = TestBackend::start("other");
    let sluice = with_a_flaky_unhealthy_backend(&good, &sick);
    let (admin, addr) = (sluice.admin(), sluice.addr());

    // Before any reload: the flaky probes alone do not bring it back.
    await_probes(&sick, 3);
    for _ in 0..5 {
        assert_eq!(who_answers(addr, "/"), "good");
    }
    let counted = |a: &Flaky| backend(admin, "app", &a.address())["requests_total"].as_u64();
    let total_before = counted(&good).unwrap();
    assert_eq!(total_before, 5);
    assert_eq!(good.traffic(), 5);

    let per_reload = 5;
    for i in 0..20u32 {
        // Unrelated changes: the other backend's weight, and a pool added or removed.
        let added = i % 2 == 0;
        let backends = [(&good, 1 + i % 3), (&sick, 1)];
        let config = checked_config(&backends, added.then_some(&other), "60ms");
        sluice.reload_ok(&config);
        await_probes(&sick, 2);
        assert_eq!(
            state(admin, "app", &sick.address()),
            "unhealthy",
            "after reload {i}: {}",
            pools(admin)
        );
        for _ in 0..per_reload {
            assert_eq!(who_answers(addr, "/"), "good", "after reload {i}");
        }
    }
    assert_eq!(sick.traffic(), 0, "the unhealthy backend got traffic");
    assert_eq!(sluice.generation(), 21);
    // The kept backend's counter went on from where it was.
    assert_eq!(
        counted(&good),
        Some(total_before + 20 * per_reload as u64),
        "requests_total of a kept backend counts on across reloads"
    );
}

/// Changing a pool's `health_check` settings restarts its probe loops; the backends are kept,
/// and so must be what their probes have established: a flaky backend that failed its way out
/// still needs `healthy_threshold` passes in a row to come back, not one.
#[test]
fn a_changed_health_check_keeps_an_unhealthy_backends_verdict() {
    let (good, sick) = (Flaky::start("good"), Flaky::start("sick"));
    let sluice = with_a_flaky_unhealthy_backend(&good, &sick);
    let (admin, addr) = (sluice.admin(), sluice.addr());

    let reload = sluice.reload_ok(&checked_config(&[(&good, 1), (&sick, 1)], None, "70ms"));
    assert_eq!(reload.changes("pools", "changed"), ["app"]);
    for _ in 0..3 {
        await_probes(&sick, 2);
        assert_eq!(
            state(admin, "app", &sick.address()),
            "unhealthy",
            "{}",
            pools(admin)
        );
    }
    for _ in 0..10 {
        assert_eq!(who_answers(addr, "/"), "good");
    }
    assert_eq!(sick.traffic(), 0);
}

/// A backend that answers every request `500`, naming itself in `x-backend`.
fn failing(name: &str) -> TestBackend {
    let tag = name.to_string();
    let handler: Handler = Arc::new(move |_req| {
        let tag = tag.clone();
        Box::pin(async move {
            Response::builder()
                .status(500)
                .header("x-backend", tag.as_str())
                .body(full("broken"))
                .unwrap()
        })
    });
    TestBackend::with_handler(name, Default::default(), handler)
}

/// Pool `app` of `good` (with `weight`) and `bad` with outlier detection (two failures eject
/// for 30 s); with `other`, one more pool.
fn ejecting_config(
    good: SocketAddr,
    weight: u32,
    bad: SocketAddr,
    other: Option<SocketAddr>,
) -> String {
    let other = other
        .map(|o| format!("[pool.other]\nbackends = [{{ address = \"{o}\" }}]\n"))
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
backends = [{{ address = "{good}", weight = {weight} }}, {{ address = "{bad}" }}]

[pool.app.outlier_detection]
consecutive_failures = 2
base_ejection = "30s"
max_ejected_percent = 50

{other}"#
    )
}

#[test]
fn an_ejected_backend_stays_ejected_across_reloads() {
    let (good, bad, other) = (
        TestBackend::start("good"),
        failing("bad"),
        TestBackend::start("other"),
    );
    let sluice = Reloadable::start(&ejecting_config(good.addr, 1, bad.addr, None));
    let (admin, addr) = (sluice.admin(), sluice.addr());
    let bad_address = bad.addr.to_string();
    // Round robin: every other request fails until two failures in a row eject it.
    assert!(
        eventually(Duration::from_secs(5), || {
            who_answers(addr, "/");
            state(admin, "app", &bad_address) == "ejected"
        }),
        "{}",
        pools(admin)
    );
    let failed = bad.connections_accepted();

    for i in 0..6u32 {
        let added = (i % 2 == 0).then_some(other.addr);
        sluice.reload_ok(&ejecting_config(good.addr, 1 + i % 3, bad.addr, added));
        assert_eq!(
            state(admin, "app", &bad_address),
            "ejected",
            "after reload {i}"
        );
        for _ in 0..5 {
            assert_eq!(who_answers(addr, "/"), "good", "after reload {i}");
        }
    }
    assert_eq!(
        bad.connections_accepted(),
        failed,
        "the ejected backend got traffic"
    );
    assert_eq!(
        backend(admin, "app", &bad_address)["ejections_total"],
        1,
        "one ejection, carried over"
    );
}

#[test]
fn a_pool_added_by_reload_is_checked_and_one_removed_is_not() {
    let (good, checked) = (Flaky::start("good"), Flaky::start("checked"));
    let without = checked_config(&[(&good, 1)], None, "60ms");
    let with = format!(
        "{without}\n[[route]]\npath_prefix = \"/checked\"\npool = \"checked\"\n\n\
         [pool.checked]\nbackends = [{{ address = \"{}\" }}]\n\n\
         [pool.checked.health_check]\npath = \"/healthz\"\ninterval = \"60ms\"\ntimeout = \"60ms\"\n",
        checked.addr()
    );
    let sluice = Reloadable::start(&without);
    let (admin, addr) = (sluice.admin(), sluice.addr());
    assert_eq!(checked.probes(), 0);

    sluice.reload_ok(&with);
    assert!(
        eventually(Duration::from_secs(3), || state(
            admin,
            "checked",
            &checked.address()
        ) == "healthy"),
        "the new pool's backend is probed"
    );
    assert_eq!(who_answers(addr, "/checked"), "checked");
    await_probes(&checked, 2);

    sluice.reload_ok(&without);
    let stopped_at = checked.probes();
    // While `good` is probed five more times, `checked` at most finishes the probe it was in.
    await_probes(&good, 5);
    assert!(
        checked.probes() <= stopped_at + 1,
        "a removed pool's backend is still probed: {} probes after its removal",
        checked.probes() - stopped_at
    );
}
