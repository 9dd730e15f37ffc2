//! Active health checks end to end: a new pool serves within one probe, a backend whose health
//! endpoint fails is taken out of rotation within its thresholds and comes back when it
//! recovers, TCP checks find a dead address, and each flip is logged once. Real backends, a real
//! sluice (in-process, and the binary for the logs), real sockets; readiness is polled, never
//! slept for.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Response;
use support::admin::{backend, state};
use support::raw::RawConn;
use support::*;

/// A backend whose `GET /healthz` answers `200` or `503` as told, counting the probes, and
/// whose other paths answer with its name in `x-backend`.
struct Checked {
    backend: TestBackend,
    healthy: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
}

impl Checked {
    fn start(name: &str) -> Checked {
        let healthy = Arc::new(AtomicBool::new(true));
        let probes = Arc::new(AtomicUsize::new(0));
        let (ok, count, tag) = (healthy.clone(), probes.clone(), name.to_string());
        let handler: Handler = Arc::new(move |req| {
            let probe = req.uri().path() == "/healthz";
            let (ok, count, tag) = (ok.clone(), count.clone(), tag.clone());
            Box::pin(async move {
                if probe {
                    count.fetch_add(1, Ordering::SeqCst);
                    let status = if ok.load(Ordering::SeqCst) { 200 } else { 503 };
                    return Response::builder()
                        .status(status)
                        .body(full("health"))
                        .unwrap();
                }
                Response::builder()
                    .header("x-backend", tag.as_str())
                    .body(full(tag))
                    .unwrap()
            })
        });
        Checked {
            backend: TestBackend::with_handler(name, Default::default(), handler),
            healthy,
            probes,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    fn address(&self) -> String {
        self.backend.addr.to_string()
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }
}

/// Pool `app` of `backends` with `[pool.app.health_check]` set to `check`, and an admin API.
fn checked_config(backends: &[SocketAddr], check: &str) -> String {
    config_with(
        backends,
        "[admin]\nbind = \"127.0.0.1:0\"",
        "",
        &format!("[pool.app.health_check]\n{check}"),
    )
}

/// The name of the backend that answered a `GET /` through sluice, or `status N` when sluice
/// answered itself.
fn who_answers(sluice: &TestSluice) -> String {
    let mut conn = RawConn::open(sluice.addr());
    conn.send(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n");
    let response = conn.response();
    match response.header("x-backend") {
        Some(name) => name.to_string(),
        None => format!("status {}", response.status()),
    }
}

/// An address with nothing listening: connecting is refused.
fn dead_addr() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[test]
fn a_new_pool_with_checks_serves_within_one_probe() {
    let (a, b) = (Checked::start("a"), Checked::start("b"));
    let started = Instant::now();
    // A long interval and a high healthy_threshold: only the first-pass rule can make the
    // backends healthy this fast.
    let sluice = TestSluice::start(&checked_config(
        &[a.addr(), b.addr()],
        "path = \"/healthz\"\ninterval = \"10s\"\ntimeout = \"1s\"\nhealthy_threshold = 3",
    ));
    let admin = sluice.admin.unwrap();
    assert!(
        eventually(Duration::from_secs(2), || {
            state(admin, "app", &a.address()) == "healthy"
                && state(admin, "app", &b.address()) == "healthy"
        }),
        "{}",
        support::admin::pools(admin)
    );
    let to_healthy = started.elapsed();
    eprintln!("start to healthy: {to_healthy:?}");
    assert_eq!((a.probes(), b.probes()), (1, 1), "one probe each");
    let last = &backend(admin, "app", &a.address())["last_check"];
    assert_eq!(last["passed"], true);
    assert_eq!(last["detail"], "status 200");

    let mut seen: Vec<String> = (0..4).map(|_| who_answers(&sluice)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"]);
}

#[test]
fn a_failing_backend_gets_no_traffic_within_its_threshold_and_returns_after_recovering() {
    let interval = Duration::from_millis(300);
    let (unhealthy_threshold, healthy_threshold) = (2, 2);
    let (a, b) = (Checked::start("a"), Checked::start("b"));
    let sluice = TestSluice::start(&checked_config(
        &[a.addr(), b.addr()],
        &format!(
            "path = \"/healthz\"\ninterval = \"300ms\"\ntimeout = \"200ms\"\n\
             unhealthy_threshold = {unhealthy_threshold}\nhealthy_threshold = {healthy_threshold}"
        ),
    ));
    let admin = sluice.admin.unwrap();
    assert!(eventually(Duration::from_secs(2), || {
        state(admin, "app", &a.address()) == "healthy"
            && state(admin, "app", &b.address()) == "healthy"
    }));

    // Each probe is due within 1.1 × interval of the last; the slack covers a busy machine.
    let slack = Duration::from_millis(500);
    let out_within = interval.mul_f64(1.1) * unhealthy_threshold + slack;
    a.set_healthy(false);
    let failing_since = Instant::now();
    let mut answers = Vec::new();
    while failing_since.elapsed() < out_within + Duration::from_millis(500) {
        answers.push((failing_since.elapsed(), who_answers(&sluice)));
        std::thread::sleep(Duration::from_millis(5));
    }
    let last_to_a = answers
        .iter()
        .filter(|(_, who)| who == "a")
        .map(|(at, _)| *at)
        .max()
        .expect("a kept serving until it was found failing");
    eprintln!("failing backend's last request {last_to_a:?} after its health endpoint failed");
    assert!(last_to_a <= out_within, "a still served at {last_to_a:?}");
    assert!(
        answers.iter().all(|(_, who)| who == "a" || who == "b"),
        "every request was served: {:?}",
        answers
            .iter()
            .filter(|(_, w)| w != "a" && w != "b")
            .collect::<Vec<_>>()
    );
    let after: Vec<&String> = answers
        .iter()
        .filter(|(at, _)| *at > out_within)
        .map(|(_, who)| who)
        .collect();
    assert!(after.len() > 10, "enough requests after the bound");
    assert!(after.iter().all(|who| *who == "b"));
    let a_now = backend(admin, "app", &a.address());
    assert_eq!(a_now["state"], "unhealthy");
    assert_eq!(a_now["last_check"]["passed"], false);
    assert_eq!(a_now["last_check"]["detail"], "status 503");

    a.set_healthy(true);
    let recovering_since = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || who_answers(&sluice) == "a"),
        "a never returned"
    );
    let back_after = recovering_since.elapsed();
    eprintln!("recovered backend served again {back_after:?} after its health endpoint recovered");
    assert!(back_after <= interval.mul_f64(1.1) * healthy_threshold + slack);
    assert_eq!(state(admin, "app", &a.address()), "healthy");
}

#[test]
fn tcp_checks_find_an_address_with_nothing_listening() {
    let live = TestBackend::start("live");
    let dead = dead_addr();
    let sluice = TestSluice::start(&checked_config(
        &[live.addr, dead],
        "interval = \"10s\"\ntimeout = \"1s\"",
    ));
    let admin = sluice.admin.unwrap();
    let dead_address = dead.to_string();
    assert!(eventually(Duration::from_secs(2), || {
        state(admin, "app", &live.addr.to_string()) == "healthy"
            && backend(admin, "app", &dead_address)["last_check"].is_object()
    }));
    let dead_now = backend(admin, "app", &dead_address);
    assert_eq!(dead_now["state"], "unhealthy", "{dead_now}");
    assert_eq!(dead_now["last_check"]["passed"], false, "{dead_now}");
    assert_eq!(
        dead_now["last_check"]["detail"], "connection refused",
        "{dead_now}"
    );
    let live_now = backend(admin, "app", &live.addr.to_string());
    assert_eq!(live_now["last_check"]["detail"], "connected", "{live_now}");
    assert!(live_now["last_check"]["at"]
        .as_str()
        .is_some_and(|at| at.ends_with('Z') && at.len() == "2026-11-21T10:00:00.123Z".len()));
    for _ in 0..6 {
        assert_eq!(who_answers(&sluice), "live");
    }
    assert!(
        live.seen().iter().all(|s| s.uri.path() == "/"),
        "a TCP check sends no request"
    );
}

/// The `sluice` binary with its JSON log lines collected.
struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Logged {
    fn run(config: &str) -> Logged {
        let dir = std::env::temp_dir().join(format!("sluice-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sluice.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--config", path.to_str().unwrap()])
            .args(["--log-format", "json", "--workers", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Logged { child, lines }
    }

    fn find(&self, pick: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| pick(l)).cloned().collect()
    }

    /// SIGTERM, then waits for a clean exit, so every line is flushed.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let exited = eventually(Duration::from_secs(10), || {
            self.child.try_wait().unwrap().is_some()
        });
        assert!(exited, "sluice exited after SIGTERM");
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn each_flip_is_logged_once_not_each_probe() {
    let (a, b) = (Checked::start("a"), Checked::start("b"));
    let mut sluice = Logged::run(&checked_config(
        &[a.addr(), b.addr()],
        "path = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         unhealthy_threshold = 2\nhealthy_threshold = 2",
    ));
    let mut admin = None;
    assert!(eventually(Duration::from_secs(20), || {
        admin = sluice
            .find(|l| l["message"] == "admin API listening")
            .first()
            .and_then(|l| l["addr"].as_str()?.parse::<SocketAddr>().ok());
        admin.is_some()
    }));
    let admin = admin.unwrap();
    let healthy = |c: &Checked| state(admin, "app", &c.address()) == "healthy";
    assert!(eventually(Duration::from_secs(5), || healthy(&a) && healthy(&b)));

    a.set_healthy(false);
    assert!(eventually(Duration::from_secs(5), || state(
        admin,
        "app",
        &a.address()
    ) == "unhealthy"));
    // Several more failing probes, none of which may log again.
    let probes = a.probes();
    assert!(eventually(Duration::from_secs(5), || a.probes() >= probes + 4));
    a.set_healthy(true);
    assert!(eventually(Duration::from_secs(5), || healthy(&a)));
    let probes = a.probes();
    assert!(eventually(Duration::from_secs(5), || a.probes() >= probes + 4));
    sluice.stop();

    let about = |message: &'static str, who: String| {
        move |l: &serde_json::Value| l["message"] == message && l["backend"] == who.as_str()
    };
    let down = sluice.find(about("backend became unhealthy", a.address()));
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0]["level"], "WARN");
    assert_eq!(down[0]["pool"], "app");
    assert_eq!(down[0]["reason"], "status 503");
    // Healthy at start (the first probe), and again after recovering.
    let up = sluice.find(about("backend became healthy", a.address()));
    assert_eq!(up.len(), 2, "{up:?}");
    assert_eq!(up[0]["level"], "INFO");
    assert_eq!(
        sluice
            .find(about("backend became healthy", b.address()))
            .len(),
        1
    );
    assert!(sluice
        .find(about("backend became unhealthy", b.address()))
        .is_empty());
}
