//! Backend registration through the admin API: a registered backend takes traffic at once, a
//! reload keeps it (registrations are layered over the file), a restart keeps it (the state
//! file), a TTL expires it unless renewed, and deregistration drains it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::raw::RawConn;
use support::{eventually, TestBackend, TestSluice};

/// A unique scratch directory holding the config file and the state dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sluice-reg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn config(&self) -> PathBuf {
        self.0.join("sluice.toml")
    }

    fn state_file(&self) -> PathBuf {
        self.0.join("state").join("registrations.json")
    }

    /// Writes a config whose pool `app` lists `file_backends`; watching off, so that only
    /// the test's own reloads happen.
    fn write(&self, file_backends: &[&TestBackend]) -> PathBuf {
        let text = format!(
            r#"
[server]
state_dir = "{state}"
watch = false

[admin]
bind = "127.0.0.1:0"

[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
backends = [{list}]
"#,
            state = self.0.join("state").display(),
            list = support::backend_list(file_backends),
        );
        std::fs::write(self.config(), text).unwrap();
        self.config()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(path: &Path) -> TestSluice {
    TestSluice::start_from(sluice::config::Config::load(path).unwrap_or_else(|e| panic!("{e}")))
}

/// One admin request; returns status and body text.
fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut conn = RawConn::open(addr);
    conn.send(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let response = conn.response();
    (response.status(), response.text())
}

fn register(sluice: &TestSluice, backend: &TestBackend, extra: &str) -> (u16, String) {
    let body = format!(r#"{{"address": "{}"{extra}}}"#, backend.addr);
    admin(
        sluice.admin.unwrap(),
        "POST",
        "/api/pools/app/backends",
        &body,
    )
}

/// Which backends answer `n` requests (by their `x-backend` header), counted.
fn spread(sluice: &TestSluice, n: usize) -> std::collections::BTreeMap<String, usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..n {
            let got = support::get(&sluice.url("/")).await;
            assert_eq!(got.status, 200, "{}", got.text());
            *seen.entry(got.text()).or_insert(0) += 1;
        }
        seen
    })
}

#[test]
fn a_registered_backend_takes_traffic_and_survives_reload_and_restart() {
    let scratch = Scratch::new("survives");
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let path = scratch.write(&[&a]);
    let sluice = start(&path);
    let (status, body) = register(&sluice, &b, r#", "weight": 1"#);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains(r#""result": "created""#), "{body}");
    assert_eq!(
        spread(&sluice, 10).get("b"),
        Some(&5),
        "round robin over a and b"
    );

    // A reload of the file (which does not list b) keeps the registration.
    let (status, body) = admin(sluice.admin.unwrap(), "POST", "/api/reload", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(spread(&sluice, 10).get("b"), Some(&5), "after reload");

    // A restart reads it back from the state file.
    assert!(scratch.state_file().is_file());
    sluice.stop();
    let sluice = start(&path);
    assert_eq!(spread(&sluice, 10).get("b"), Some(&5), "after restart");
    assert_eq!(
        support::admin::state(sluice.admin.unwrap(), "app", &b.addr.to_string()),
        "healthy"
    );
}

#[test]
fn posting_again_renews_and_a_new_weight_updates() {
    let scratch = Scratch::new("renew");
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let sluice = start(&scratch.write(&[&a]));
    assert_eq!(register(&sluice, &b, "").0, 201);
    let (status, body) = register(&sluice, &b, "");
    assert_eq!((status, body.contains("renewed")), (200, true), "{body}");
    let (status, body) = register(&sluice, &b, r#", "weight": 3"#);
    assert_eq!((status, body.contains("updated")), (200, true), "{body}");
    let entry = support::admin::backend(sluice.admin.unwrap(), "app", &b.addr.to_string());
    assert_eq!(entry["weight"], 3, "{entry}");
}

#[test]
fn bad_registrations_are_refused_with_the_reason() {
    let scratch = Scratch::new("bad");
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let sluice = start(&scratch.write(&[&a]));
    let addr = sluice.admin.unwrap();
    let cases: [(&str, &str, &str, u16, &str); 6] = [
        (
            "POST",
            "/api/pools/app/backends",
            r#"{"address": "x"}"#,
            400,
            "port",
        ),
        (
            "POST",
            "/api/pools/app/backends",
            &format!(r#"{{"address": "{}", "weight": 0}}"#, b.addr),
            400,
            "DELETE",
        ),
        (
            "POST",
            "/api/pools/nope/backends",
            &format!(r#"{{"address": "{}"}}"#, b.addr),
            404,
            "no pool named `nope`",
        ),
        (
            "POST",
            "/api/pools/app/backends",
            &format!(r#"{{"address": "{}"}}"#, a.addr),
            409,
            "configured",
        ),
        (
            "GET",
            "/api/pools/app/backends",
            "",
            405,
            "method not allowed",
        ),
        (
            "DELETE",
            &format!("/api/pools/app/backends/{}", b.addr),
            "",
            404,
            "no registered",
        ),
    ];
    for (method, path, body, status, reason) in cases {
        let (got, text) = admin(addr, method, path, body);
        assert_eq!(got, status, "{method} {path} {body}: {text}");
        assert!(text.contains(reason), "{method} {path} {body}: {text}");
    }
    // Nothing was registered: every request still goes to a.
    assert_eq!(spread(&sluice, 4).get("a"), Some(&4));
    assert!(!scratch.state_file().exists());
}

#[test]
fn a_ttl_expires_the_registration_unless_renewed() {
    let scratch = Scratch::new("ttl");
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let sluice = start(&scratch.write(&[&a]));
    let admin_addr = sluice.admin.unwrap();
    assert_eq!(register(&sluice, &b, r#", "ttl_seconds": 1"#).0, 201);
    let address = b.addr.to_string();
    assert_eq!(
        support::admin::state(admin_addr, "app", &address),
        "healthy"
    );
    // Renewed half-way, it outlives its first TTL.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(register(&sluice, &b, r#", "ttl_seconds": 1"#).0, 200);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        support::admin::state(admin_addr, "app", &address),
        "healthy"
    );
    // Not renewed again, it goes.
    assert!(eventually(Duration::from_secs(3), || {
        support::admin::state(admin_addr, "app", &address) == "absent"
    }));
    assert_eq!(spread(&sluice, 4).get("a"), Some(&4));
}

#[test]
fn deregistration_drains_then_removes() {
    let scratch = Scratch::new("drain");
    let a = TestBackend::start("a");
    // b answers after 700 ms, so a request is in flight when it is deregistered.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow: support::Handler = std::sync::Arc::new(|_req| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            hyper::Response::builder()
                .header("x-backend", "b")
                .body(support::full("b"))
                .unwrap()
        })
    });
    let b = TestBackend::with_handler("b", seen, slow);
    let sluice = start(&scratch.write(&[&a]));
    let admin_addr = sluice.admin.unwrap();
    let body = format!(r#"{{"address": "{}"}}"#, b.addr);
    assert_eq!(
        admin(admin_addr, "POST", "/api/pools/app/backends", &body).0,
        201
    );

    // Requests until one is in flight on b.
    let url = sluice.url("/");
    let in_flight = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (x, y) = tokio::join!(support::get(&url), support::get(&url));
            vec![(x.status.as_u16(), x.text()), (y.status.as_u16(), y.text())]
        })
    });
    let address = b.addr.to_string();
    assert!(eventually(Duration::from_secs(2), || {
        support::admin::backend(admin_addr, "app", &address)["active_requests"] == 1
    }));
    let (status, text) = admin(
        admin_addr,
        "DELETE",
        &format!("/api/pools/app/backends/{}", address.replace(':', "%3A")),
        "",
    );
    assert_eq!(status, 202, "{text}");
    assert_eq!(
        support::admin::state(admin_addr, "app", &address),
        "draining"
    );
    // No new request reaches it; the one in flight completes.
    assert_eq!(spread(&sluice, 4).get("a"), Some(&4));
    let answers = in_flight.join().unwrap();
    assert!(answers.contains(&(200, "b".to_string())), "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert!(eventually(Duration::from_secs(2), || {
        support::admin::state(admin_addr, "app", &address) == "absent"
    }));
}
