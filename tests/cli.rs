//! The `sluice` binary as a user runs it: `check`, `--version`, `demo`, `run` with signals and
//! access logs. Each test starts the real binary and talks real HTTP to it.

mod support;

use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::process::*;
use support::*;

#[test]
fn version_prints_name_and_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sluice {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_a_valid_file_and_summarises_it() {
    let a = TestBackend::start("a");
    let path = temp_config("valid", &simple_config(&[&a]));
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("web"), "{stdout}");
    assert!(stdout.contains("app"), "{stdout}");
    assert!(stdout.contains(&a.addr.to_string()), "{stdout}");
}

#[test]
fn check_rejects_an_invalid_file_with_location_caret_and_suggestion() {
    let text = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"app\"\n\n[pool.app]\nalgorithm = \"round-robin\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    let path = temp_config("invalid", text);
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:9:13", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("algorithm = \"round-robin\""), "{stderr}");
    assert!(stderr.contains('^'), "{stderr}");
    assert!(stderr.contains("did you mean `round_robin`"), "{stderr}");
}

#[test]
fn check_reads_sluice_config_from_the_environment() {
    let a = TestBackend::start("a");
    let path = temp_config("env", &simple_config(&[&a]));
    let out = Command::new(BIN)
        .arg("check")
        .env("SLUICE_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let missing = Command::new(BIN)
        .arg("check")
        .env("SLUICE_CONFIG", "/nonexistent/sluice.toml")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/sluice.toml"));
}

#[test]
fn run_refuses_an_invalid_file_with_exit_1() {
    let path = temp_config("run-invalid", "[[listener]]\nname = 1\n");
    let out = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_rotates_across_three_backends_and_stops_on_sigterm() {
    let mut demo = Proc::spawn(&["demo", "--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let url = demo
        .wait_for(Duration::from_secs(20), |line| {
            let start = line.find("curl http://")? + 5;
            let url = line[start..].split_whitespace().next()?;
            url.ends_with('/').then(|| url.to_string())
        })
        .expect("demo printed what to curl");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let got = get(&url).await;
        assert_eq!(got.status, 200);
        let text = got.text();
        let name = text.split(':').next().unwrap().to_string();
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "hello from backend-1",
            "hello from backend-2",
            "hello from backend-3"
        ]
    );
    demo.signal("TERM");
    assert_eq!(demo.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_closes_idle_ones_and_exits_0() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let entered = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = entered.clone();
    let slow = TestBackend::with_handler(
        "slow",
        Default::default(),
        std::sync::Arc::new(move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                http::Response::new(full("finished"))
            })
        }),
    );
    let config = format!(
        "[server]\nshutdown_timeout = \"10s\"\n{}",
        simple_config(&[&slow])
    );
    let path = temp_config("sigterm", &config);
    let mut sluice = Proc::spawn(&["run", "--config", path.to_str().unwrap(), "--workers", "1"]);
    let addr = sluice
        .wait_for(Duration::from_secs(20), listening_addr)
        .expect("listening line");

    // Idle keep-alive connections: one request answered, then nothing. The first one has been
    // idle long enough to be dormant when the signal comes (`listener::REST_AFTER`, 1s), the
    // second is idle in hyper's hands.
    let dormant = idle_connection(addr);
    std::thread::sleep(Duration::from_millis(1300));
    let idle = idle_connection(addr);

    // A request in flight at the backend when the signal arrives.
    let in_flight = tokio::spawn(get_owned(format!("http://{addr}/")));
    assert!(eventually(Duration::from_secs(10), || entered
        .load(Ordering::SeqCst)
        == 3));
    let signalled = Instant::now();
    sluice.signal("TERM");

    let got = in_flight.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "finished");
    for idle in [dormant, idle] {
        let (idle_text, idle_closed) = idle
            .join()
            .unwrap()
            .expect("idle connection closed cleanly");
        assert!(idle_text.starts_with("HTTP/1.1 200"), "{idle_text}");
        // Closed at once, not after the in-flight request's remaining ~800ms.
        assert!(idle_closed.duration_since(signalled) < Duration::from_millis(500));
    }
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

/// A keep-alive connection that sends one request, and once it is answered (`finished`) sends
/// nothing more: its thread ends with what it received and when the connection closed.
type IdleConnection = std::thread::JoinHandle<Option<(String, Instant)>>;

fn idle_connection(addr: std::net::SocketAddr) -> IdleConnection {
    let (answered_tx, answered) = mpsc::channel();
    let idle = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"finished") {
                        answered_tx.send(()).unwrap();
                    }
                }
                Err(_) => return None,
            }
        }
        Some((String::from_utf8_lossy(&got).into_owned(), Instant::now()))
    });
    answered
        .recv_timeout(Duration::from_secs(10))
        .expect("idle connection answered");
    idle
}

async fn get_owned(url: String) -> Got {
    get(&url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_per_request_with_its_fields() {
    let a = TestBackend::start("a");
    let config = simple_config(&[&a]).replace("access_log = false", "access_log = true");
    let path = temp_config("json", &config);
    let mut sluice = Proc::spawn(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let addr = sluice
        .wait_for(Duration::from_secs(20), json_listening_addr)
        .expect("listening line");
    let req = http::Request::post(format!("http://{addr}/logged?q=1"))
        .header("host", "site.example")
        .header("x-request-id", "trace-me-123")
        .body(full("12345"))
        .unwrap();
    let got = send(req).await;
    assert_eq!(got.status, 200);
    let line = sluice
        .wait_for(Duration::from_secs(10), |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            (v["target"] == "access").then_some(v)
        })
        .expect("an access log line");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/logged");
    assert_eq!(line["host"], "site.example");
    assert_eq!(line["status"], 200);
    assert_eq!(line["pool"], "app");
    assert_eq!(line["backend"], a.addr.to_string());
    assert_eq!(line["listener"], "web");
    assert_eq!(line["request_id"], "trace-me-123");
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], 1);
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(line["total_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap());
    assert!(line["timestamp"].is_string());
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_off_writes_no_access_lines() {
    let a = TestBackend::start("a");
    let path = temp_config("nolog", &simple_config(&[&a]));
    let mut sluice = Proc::spawn(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let addr = sluice
        .wait_for(Duration::from_secs(20), json_listening_addr)
        .expect("listening line");
    assert_eq!(get(&format!("http://{addr}/")).await.status, 200);
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
    let rest: Vec<String> = sluice.lines.try_iter().collect();
    assert!(
        rest.iter().all(|l| !l.contains("\"target\":\"access\"")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_log_has_the_request_fields() {
    let a = TestBackend::start("a");
    let config = simple_config(&[&a]).replace("access_log = false", "access_log = true");
    let path = temp_config("text", &config);
    let mut sluice = Proc::spawn(&["run", "--config", path.to_str().unwrap()]);
    let addr = sluice
        .wait_for(Duration::from_secs(20), listening_addr)
        .expect("listening line");
    let req = http::Request::get(format!("http://{addr}/texty?x=1"))
        .header("x-request-id", "text-id-7")
        .body(full(""))
        .unwrap();
    assert_eq!(send(req).await.status, 200);
    let line = sluice
        .wait_for(Duration::from_secs(10), |line| {
            (line.contains(" access: ") || line.contains(" access:")).then(|| line.to_string())
        })
        .expect("an access log line");
    for field in [
        "method=GET",
        "path=/texty",
        "status=200",
        "pool=\"app\"",
        "request_id=\"text-id-7\"",
        "bytes_out=1",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(line.contains(&format!("backend=\"{}\"", a.addr)), "{line}");
    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
}
