//! The status page (`GET /`) and its data (`GET /api/status`): over HTTP, the page is one
//! self-contained HTML file served without the token while its data needs it, and the JSON
//! carries every figure the page shows; in a real headless browser (Chromium through Selenium,
//! `tests/browser/status_page.py`), the page asks for the token, then shows every backend, a
//! backend taken down turns unhealthy within seconds, an ejected one shows as ejected, latency
//! is measured, nothing overflows on a phone, the console stays clean, and a stopped sluice is
//! reported as not reachable. Readiness is polled, never slept for.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Response;
use support::raw::{RawConn, RawResponse};
use support::reload::{ConfigFile, ADMIN};
use support::*;

const TOKEN: &str = "s3cret-token";

/// One admin request on a connection of its own, with the token when given.
fn admin_request(admin: SocketAddr, method: &str, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let mut conn = RawConn::open(admin);
    conn.send(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}content-length: 0\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    conn.response()
}

fn status(admin: SocketAddr, token: Option<&str>) -> serde_json::Value {
    let response = admin_request(admin, "GET", "/api/status", token);
    assert_eq!(response.status(), 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("cache-control"), Some("no-store"));
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", response.text()))
}

fn backend<'a>(status: &'a serde_json::Value, pool: &str, address: &str) -> &'a serde_json::Value {
    status["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == pool)
        .flat_map(|p| p["backends"].as_array().into_iter().flatten())
        .find(|b| b["address"] == address)
        .unwrap_or_else(|| panic!("no backend {address} in pool {pool}: {status:#}"))
}

/// Every URL-ish reference in the page: it must load nothing from anywhere, so the only ones
/// allowed are same-page anchors and `data:` URLs.
fn external_references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for needle in ["http://", "https://", "ftp://", "ws://", "wss://"] {
        if html.contains(needle) {
            found.push(needle.to_string());
        }
    }
    // Protocol-relative URLs (`//cdn.example/x.js`) in attributes, CSS or script strings.
    for (at, _) in html.match_indices("//") {
        let before = html[..at].chars().last().unwrap_or(' ');
        if matches!(before, '"' | '\'' | '(' | '=' | '`') {
            found.push(html[at.saturating_sub(20)..(at + 30).min(html.len())].to_string());
        }
    }
    for attr in ["src=", "href=", "@import", "url("] {
        for (at, _) in html.match_indices(attr) {
            let value = html[at + attr.len()..].trim_start_matches(['"', '\'', ' ']);
            if !(value.starts_with('#') || value.starts_with("data:")) {
                found.push(html[at..(at + 40).min(html.len())].to_string());
            }
        }
    }
    found
}

#[test]
fn the_page_is_one_html_file_served_without_the_token_and_its_data_needs_it() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&config_with(
        &[a.addr],
        &format!("[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        "",
        "",
    ));
    let admin = sluice.admin.unwrap();

    let page = admin_request(admin, "GET", "/", None);
    assert_eq!(page.status(), 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    let html = page.text();
    assert!(
        html.starts_with("<!doctype html>"),
        "{}",
        &html[..100.min(html.len())]
    );
    assert!(html.contains("/api/status") && html.contains("<style>") && html.contains("<script>"));
    assert_eq!(external_references(&html), Vec::<String>::new());
    // The check itself finds what it is for.
    for bad in [
        r#"<script src="//cdn.example/x.js"></script>"#,
        r#"<link rel="stylesheet" href="/fonts.css">"#,
        "<style>@font-face { src: url(fonts/a.woff2) }</style>",
        "<script>fetch('https://cdn.example/x')</script>",
    ] {
        assert!(!external_references(bad).is_empty(), "{bad}");
    }

    // The data needs the token; the page's other methods are refused like every endpoint's.
    let refused = admin_request(admin, "GET", "/api/status", None);
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        admin_request(admin, "GET", "/api/status", Some("wrong")).status(),
        401
    );
    assert_eq!(admin_request(admin, "POST", "/", None).status(), 401);
    for path in ["/", "/api/status"] {
        let response = admin_request(admin, "POST", path, Some(TOKEN));
        assert_eq!(response.status(), 405, "{path}");
        assert_eq!(response.header("allow"), Some("GET"), "{path}");
    }

    // The JSON: counters the page turns into rates.
    for _ in 0..3 {
        assert_eq!(get_blocking(sluice.addr(), "/x").status(), 200);
    }
    let status = status(admin, Some(TOKEN));
    assert_eq!(status["generation"], 1);
    assert_eq!(status["metrics"], true);
    assert_eq!(status["last_reload"], serde_json::Value::Null);
    assert_eq!(status["buckets"].as_array().unwrap().len(), 16);
    assert!(status["now_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(status["loaded_at"].as_str().unwrap().ends_with('Z'));
    let pool = &status["pools"][0];
    assert_eq!(pool["name"], "app");
    assert_eq!(pool["health_check"], serde_json::Value::Null);
    assert_eq!(
        pool["traffic"],
        serde_json::json!({"requests": 3, "responses_5xx": 0})
    );
    let b = backend(&status, "app", &a.addr.to_string());
    assert_eq!(b["state"], "healthy");
    assert_eq!(b["requests_total"], 3);
    assert_eq!(b["responses"], 3);
    assert_eq!(b["responses_5xx"], 0);
    assert_eq!(b["latency"]["cumulative"][16], 3);
    assert_eq!(
        b["failures"],
        serde_json::json!({"connect": 0, "timeout": 0, "response": 0})
    );
    assert_eq!(b["checks"], serde_json::Value::Null);
}

/// `GET path` through the proxy on a connection of its own.
fn get_blocking(addr: SocketAddr, path: &str) -> RawResponse {
    let mut conn = RawConn::open(addr);
    conn.send(format!("GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n").as_bytes());
    conn.response()
}

#[test]
fn the_last_reload_is_reported_with_its_trigger_and_first_error() {
    let a = TestBackend::start("a");
    let text = config_with(&[a.addr], ADMIN, "", "");
    let file = ConfigFile::new(&text);
    let sluice = TestSluice::start_file(file.path());
    let admin = sluice.admin.unwrap();

    file.write(&text.replace("[pool.app]", "[pool.app]\nalgorithm = \"least_requests\""));
    assert_eq!(
        admin_request(admin, "POST", "/api/reload", None).status(),
        200
    );
    let last = &status(admin, None)["last_reload"];
    assert_eq!(last["ok"], true, "{last:#}");
    assert_eq!(last["trigger"], "admin API");
    assert_eq!(last["generation"], 2);
    assert_eq!(last["errors"], 0);
    assert!(
        last["message"].as_str().unwrap().contains("pools +0 -0 ~1"),
        "{last:#}"
    );

    file.write(&text.replace("[pool.app]", "[pool.app]\nalgorithm = \"round-robin\""));
    assert_eq!(
        admin_request(admin, "POST", "/api/reload", None).status(),
        400
    );
    let refused = status(admin, None);
    let last = &refused["last_reload"];
    assert_eq!(last["ok"], false, "{last:#}");
    assert_eq!(last["generation"], 2, "the old config keeps serving");
    assert_eq!(last["errors"], 1);
    let message = last["message"].as_str().unwrap();
    let line = text.lines().position(|l| l == "[pool.app]").unwrap() + 2;
    assert!(
        message.contains(&format!("sluice.toml:{line}:13: ")) && message.contains("round-robin"),
        "{message}"
    );
    assert_eq!(refused["reloads"], serde_json::json!({"ok": 1, "error": 1}));
    assert_eq!(refused["generation"], 2);

    // A failure that is not the file's: a new listener's address is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    file.write(&format!(
        "{text}\n[[listener]]\nname = \"second\"\nbind = \"{busy}\"\n"
    ));
    assert_eq!(
        admin_request(admin, "POST", "/api/reload", None).status(),
        400
    );
    let last = &status(admin, None)["last_reload"];
    assert_eq!(
        (&last["ok"], &last["errors"]),
        (&false.into(), &1.into()),
        "{last:#}"
    );
    assert!(!last["message"].as_str().unwrap().is_empty(), "{last:#}");
}

// ---- in a real browser ----

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/status_page.py");

/// Fails (not skips) with what to install when the browser test cannot run.
fn require_browser() {
    let missing: Vec<&str> = [
        "/usr/bin/python3",
        "/usr/bin/chromium",
        "/usr/bin/chromedriver",
    ]
    .into_iter()
    .filter(|p| !std::path::Path::new(p).exists())
    .collect();
    let selenium = Command::new(PYTHON)
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        missing.is_empty() && selenium,
        "the status page's browser test needs Debian's python3-selenium, chromium and \
         chromium-driver (.ci/run installs them); missing: {missing:?}{}",
        if selenium {
            ""
        } else {
            " and Selenium for /usr/bin/python3"
        }
    );
}

/// The browser script, spoken to line by line.
struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything it has said, for failure messages.
    transcript: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Browser {
    fn start(url: &str, token: &str, addresses: &[String]) -> Browser {
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .args(["--token", token, url])
            .args(addresses)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON} {SCRIPT}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, pipe) = (stderr.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut err = err.lock().unwrap();
                err.push_str(&line);
                err.push('\n');
            }
        });
        Browser {
            stdin: child.stdin.take(),
            child,
            lines,
            transcript: Vec::new(),
            stderr,
        }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        if let Err(e) = writeln!(stdin, "{command}").and_then(|()| stdin.flush()) {
            self.fail(&format!("cannot send {command:?}: {e}"));
        }
    }

    /// The rest of the first line starting with `word`, within `timeout`.
    fn expect(&mut self, word: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(line.clone());
                    if let Some(rest) = line.strip_prefix(word) {
                        return rest.trim().to_string();
                    }
                    if line.starts_with("FAIL") {
                        // The details follow; give them a moment to arrive.
                        while let Ok(more) = self.lines.recv_timeout(Duration::from_secs(2)) {
                            self.transcript.push(more);
                        }
                        self.fail(&format!("the browser check failed waiting for {word}"));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {word} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the script ended before {word}"))
                }
            }
        }
    }

    fn expect_json(&mut self, word: &str, timeout: Duration) -> serde_json::Value {
        let rest = self.expect(word, timeout);
        serde_json::from_str(&rest).unwrap_or_else(|e| panic!("{word} {rest}: {e}"))
    }

    fn fail(&mut self, why: &str) -> ! {
        self.end();
        panic!(
            "{why}\n--- the script said:\n{}\n--- its stderr:\n{}",
            self.transcript.join("\n"),
            self.stderr.lock().unwrap()
        );
    }

    /// Waits for the script to exit 0.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return,
                Ok(Some(status)) => self.fail(&format!("the script exited with {status}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => self.fail("the script did not exit"),
            }
        }
    }
}

impl Browser {
    /// Closing stdin ends the script, which closes its browser, within moments even while it
    /// waits for the page; one that does not is killed (its browser may then be left behind).
    fn end(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end();
    }
}

/// A backend answering after `delay`.
fn slow_backend(name: &str, delay: Duration) -> TestBackend {
    let tag = name.to_string();
    let handler: Handler = Arc::new(move |_req| {
        let tag = tag.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Response::builder()
                .header("x-backend", tag.as_str())
                .body(full(tag))
                .unwrap()
        })
    });
    TestBackend::with_handler(name, Default::default(), handler)
}

/// A backend answering every request with `500`.
fn failing_backend(name: &str) -> TestBackend {
    let handler: Handler = Arc::new(move |_req| {
        Box::pin(async move {
            Response::builder()
                .status(500)
                .body(full("broken"))
                .unwrap()
        })
    });
    TestBackend::with_handler(name, Default::default(), handler)
}

/// Requests through the proxy, alternating between two paths, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr, paths: [&'static str; 2]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            for path in paths.iter().cycle() {
                if running.load(Ordering::Relaxed) {
                    break;
                }
                let _ = get_blocking(addr, path);
                // About 60 requests a second: a steady, visible rate.
                std::thread::sleep(Duration::from_millis(15));
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn in_a_real_browser_every_backend_shows_and_a_stopped_one_turns_unhealthy() {
    require_browser();
    let started = Instant::now();
    let fast = TestBackend::start("fast");
    let slow = slow_backend("slow", Duration::from_millis(40));
    let doomed = TestBackend::start("doomed");
    let api = TestBackend::start("api");
    let broken = failing_backend("broken");
    let config = format!(
        r#"
[admin]
bind = "127.0.0.1:0"
token = "{TOKEN}"

[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/api"
pool = "api"

[[route]]
pool = "app"

[pool.app]
backends = [{}]
[pool.app.health_check]
path = "/healthz"
interval = "200ms"
timeout = "150ms"
healthy_threshold = 1
unhealthy_threshold = 2

[pool.api]
backends = [{}]
[pool.api.outlier_detection]
consecutive_failures = 3
base_ejection = "1m"
"#,
        backend_list(&[&fast, &slow, &doomed]),
        backend_list(&[&api, &broken]),
    );
    let file = ConfigFile::new(&config);
    let sluice = TestSluice::start_file(file.path());
    let admin = sluice.admin.unwrap();
    let addresses: Vec<String> = [&fast, &slow, &doomed, &api, &broken]
        .iter()
        .map(|b| b.addr.to_string())
        .collect();

    let mut browser = Browser::start(&format!("http://{admin}/"), TOKEN, &addresses);
    browser.expect("READY", Duration::from_secs(60));
    let ready = started.elapsed();

    let traffic = Traffic::start(sluice.addr(), ["/", "/api/"]);
    let down = doomed.addr;
    drop(doomed);
    browser.send(&format!("EXPECT {down} unhealthy"));
    let seen = browser.expect_json("SEEN", Duration::from_secs(10));
    assert_eq!(seen["badge"], "UNHEALTHY", "{seen}");

    // The broken backend's 500s get it ejected; the page says so, at 100% errors.
    browser.send(&format!("EXPECT {} ejected", broken.addr));
    let ejected = browser.expect_json("SEEN", Duration::from_secs(10));
    assert_eq!(ejected["errors"], "100%", "{ejected}");

    // Latency from the histogram deltas: the slow backend's 40 ms lands in (25 ms, 50 ms] (or
    // above, on a loaded machine); the fast one's well under a millisecond.
    browser.send(&format!("LATENCY {} 25 150", slow.addr));
    let latency = browser.expect_json("LATENCY", Duration::from_secs(10));
    assert_ne!(latency["rps"], "\u{2014}", "{latency}");
    browser.send(&format!("LATENCY {} 0 20", fast.addr));
    let quick = browser.expect_json("LATENCY", Duration::from_secs(10));
    assert_eq!(quick["errors"], "0%", "{quick}");

    // A reload: the page shows the new generation and what changed.
    file.write(&config.replace(
        "[pool.app]\n",
        "[pool.app]\nalgorithm = \"least_requests\"\n",
    ));
    let reload = admin_request(admin, "POST", "/api/reload", Some(TOKEN));
    assert_eq!(reload.status(), 200, "{}", reload.text());
    browser.send("RELOADED 2");
    let said = browser.expect_json("RELOADED", Duration::from_secs(10));
    assert!(said.as_str().unwrap().contains("pools +0 -0 ~1"), "{said}");

    browser.send("CHECK");
    browser.expect("CHECKED", Duration::from_secs(30));

    drop(traffic);
    sluice.stop();
    browser.send("GONE");
    browser.expect("OK", Duration::from_secs(10));
    browser.finish();
    eprintln!(
        "browser test: ready after {ready:?}, {:?} in all; unhealthy shown {}s after the backend stopped",
        started.elapsed(),
        seen["after"]
    );
}
