//! `GET /metrics`: a known set of requests (answered by backends, 404s, 502s) is counted per
//! label, and the text parses as the Prometheus exposition format.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::reload::series;
use support::*;

/// A port nothing listens on: bound, then closed.
fn closed_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// Two listeners; `/api` to pool `app` (round robin over `backends`), `/dead` to pool `dead`
/// (a closed port), nothing else routed.
fn config(backends: &[&TestBackend], dead: SocketAddr, extra_pool: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[listener]]
name = "internal"
bind = "127.0.0.1:0"

[[route]]
path_prefix = "/api"
pool = "app"

[[route]]
path_prefix = "/dead"
pool = "dead"

[pool.app]
algorithm = "round_robin"
backends = [{}]
{extra_pool}

[pool.dead]
backends = [{{ address = "{dead}" }}]
"#,
        backend_list(backends)
    )
}

async fn scrape(admin: SocketAddr) -> String {
    let got = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    got.text()
}

/// The value of a series, or a panic naming it with the whole text.
fn value(text: &str, name: &str) -> f64 {
    series(text, name).unwrap_or_else(|| panic!("no `{name}` in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_per_listener_pool_backend_and_code() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let dead = closed_port();
    let sluice = TestSluice::start(&config(&[&a, &b], dead, ""));
    let admin = sluice.admin.unwrap();
    let (web, internal) = (sluice.addrs[0], sluice.addrs[1]);

    for _ in 0..6 {
        assert_eq!(get(&format!("http://{web}/api/x")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&format!("http://{internal}/api/x")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&format!("http://{web}/missing")).await.status, 404);
    }
    for _ in 0..3 {
        assert_eq!(get(&format!("http://{web}/dead")).await.status, 502);
    }
    // An ambiguous head, refused before it became a request: counted with pool "".
    let refused = raw(
        web,
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        Duration::from_secs(5),
    );
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    // A body in: counted as received bytes.
    let post = http::Request::post(format!("http://{internal}/api/upload"))
        .body(full(vec![b'x'; 1000]))
        .unwrap();
    assert_eq!(send(post).await.status, 200);

    let text = scrape(admin).await;
    let requests = |listener: &str, pool: &str, backend: &str, code: &str| {
        let name = format!(
            "sluice_requests_total{{listener=\"{listener}\",pool=\"{pool}\",backend=\"{backend}\",code=\"{code}\"}}"
        );
        value(&text, &name)
    };
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    assert_eq!(requests("web", "app", &a_addr, "200"), 3.0);
    assert_eq!(requests("web", "app", &b_addr, "200"), 3.0);
    // The internal listener's three went round robin too, continuing where web left off.
    assert_eq!(
        requests("internal", "app", &a_addr, "200") + requests("internal", "app", &b_addr, "200"),
        3.0
    );
    assert_eq!(requests("web", "", "", "404"), 2.0);
    assert_eq!(requests("web", "", "", "400"), 1.0);
    assert_eq!(requests("web", "dead", "", "502"), 3.0);
    let request_lines = text
        .lines()
        .filter(|l| l.starts_with("sluice_requests_total{"))
        .count();
    assert!(request_lines <= 7, "no other series: {text}");

    // Durations per listener and pool; attempts and failures per backend.
    let count = |listener: &str, pool: &str| {
        value(
            &text,
            &format!(
                "sluice_request_duration_seconds_count{{listener=\"{listener}\",pool=\"{pool}\"}}"
            ),
        )
    };
    assert_eq!(count("web", "app"), 6.0);
    assert_eq!(count("internal", "app"), 3.0);
    assert_eq!(count("web", ""), 2.0);
    assert_eq!(count("web", "dead"), 3.0);
    let inf = value(
        &text,
        "sluice_request_duration_seconds_bucket{listener=\"web\",pool=\"app\",le=\"+Inf\"}",
    );
    assert_eq!(inf, 6.0);
    let upstream_a = value(
        &text,
        &format!("sluice_upstream_duration_seconds_count{{pool=\"app\",backend=\"{a_addr}\"}}"),
    );
    assert!((4.0..=5.0).contains(&upstream_a), "{upstream_a}");
    let dead_addr = dead.to_string();
    assert_eq!(
        value(
            &text,
            &format!(
                "sluice_upstream_failures_total{{pool=\"dead\",backend=\"{dead_addr}\",reason=\"connect\"}}"
            )
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &format!("sluice_upstream_requests_total{{pool=\"dead\",backend=\"{dead_addr}\"}}")
        ),
        3.0
    );

    // Gauges.
    for addr in [&a_addr, &b_addr, &dead_addr] {
        let pool = if *addr == dead_addr { "dead" } else { "app" };
        let labels = format!("{{pool=\"{pool}\",backend=\"{addr}\"}}");
        assert_eq!(value(&text, &format!("sluice_backend_up{labels}")), 1.0);
        assert_eq!(
            value(&text, &format!("sluice_backend_active_requests{labels}")),
            0.0
        );
    }
    assert_eq!(
        value(
            &text,
            "sluice_downstream_connections_total{listener=\"web\"}"
        ),
        12.0,
        "one connection per request from `get`, and the refused one"
    );
    assert_eq!(
        value(
            &text,
            "sluice_downstream_received_bytes_total{listener=\"internal\"}"
        ),
        1000.0
    );
    // Each backend answers with its one-letter name; sluice's own answers say more.
    assert!(
        value(
            &text,
            "sluice_downstream_sent_bytes_total{listener=\"web\"}"
        ) >= 6.0 + 5.0
    );
    assert_eq!(value(&text, "sluice_config_generation"), 1.0);
    assert_eq!(value(&text, "sluice_log_lines_dropped_total"), 0.0);
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    assert!(value(&text, "process_open_fds") > 3.0);

    assert_parses_as_prometheus_text(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_upstream_connections_and_says_so() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&config(&[&a], closed_port(), ""));
    let admin = sluice.admin.unwrap();
    let url = format!("http://{}/api/x", sluice.addrs[0]);
    for _ in 0..5 {
        assert_eq!(get(&url).await.status, 200);
    }
    let text = scrape(admin).await;
    let labels = format!("{{pool=\"app\",backend=\"{}\"}}", a.addr);
    assert_eq!(
        value(&text, &format!("sluice_upstream_requests_total{labels}")),
        5.0
    );
    assert_eq!(
        value(
            &text,
            "sluice_upstream_connections_opened_total{pool=\"app\"}"
        ),
        a.connections_accepted() as f64
    );
    assert_eq!(
        a.connections_accepted(),
        1,
        "sequential requests reuse one connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_results_are_counted() {
    let a = TestBackend::start("a");
    let check = "[pool.app.health_check]\npath = \"/\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\nhealthy_threshold = 1";
    let sluice = TestSluice::start(&config(&[&a], closed_port(), check));
    let admin = sluice.admin.unwrap();
    let name = format!(
        "sluice_health_checks_total{{pool=\"app\",backend=\"{}\",result=\"pass\"}}",
        a.addr
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(admin).await;
        if series(&text, &name).is_some_and(|v| v >= 3.0) {
            let fail = name.replace("\"pass\"", "\"fail\"");
            assert_eq!(value(&text, &fail), 0.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_records_nothing_per_request() {
    let a = TestBackend::start("a");
    let toml = config(&[&a], closed_port(), "").replace(
        "bind = \"127.0.0.1:0\"\n\n[log]",
        "bind = \"127.0.0.1:0\"\nmetrics = false\n\n[log]",
    );
    assert!(toml.contains("metrics = false"));
    let sluice = TestSluice::start(&toml);
    assert_eq!(
        get(&format!("http://{}/api/x", sluice.addrs[0]))
            .await
            .status,
        200
    );
    let text = scrape(sluice.admin.unwrap()).await;
    assert!(!text.contains("sluice_requests_total{"), "{text}");
    assert!(
        !text.contains("sluice_request_duration_seconds_count"),
        "{text}"
    );
    // The rest is still there.
    assert_eq!(value(&text, "sluice_config_generation"), 1.0);
}

/// Parses `text` with the Prometheus project's own Python parser (`python3-prometheus-client`,
/// which `.ci/run` installs), failing on anything it rejects.
fn assert_parses_as_prometheus_text(text: &str) {
    use std::io::Write;
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(sys.stdin.read()))\n\
        print(len(families), sum(len(f.samples) for f in families))\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to check the exposition format (.ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser rejected the text (is python3-prometheus-client installed? \
         .ci/run installs it): {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let counts = String::from_utf8_lossy(&output.stdout);
    let samples: usize = counts
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples, lines, "every sample line parsed: {counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_a_reload_and_a_removed_backends_series_go_once_it_drains() {
    use support::gate::GatedBackend;
    use support::reload::{Reloadable, ADMIN};
    let keep = TestBackend::start("keep");
    let gone = GatedBackend::start("gone");
    let pool = |backends: &str| {
        format!(
            "{ADMIN}\n[log]\naccess_log = false\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n\n\
             [[route]]\npool = \"app\"\n\n[pool.app]\nalgorithm = \"round_robin\"\nbackends = [{backends}]\n"
        )
    };
    let both = format!(
        "{{ address = \"{}\" }}, {{ address = \"{}\" }}",
        keep.addr,
        gone.addr()
    );
    let sluice = Reloadable::start(&pool(&both));
    let (admin, url) = (sluice.admin(), format!("http://{}/held", sluice.addr()));
    // Two requests: one answered by `keep`, one held by `gone` until the gate opens.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.status.as_u16() })
        })
        .collect();
    let waited = tokio::task::spawn_blocking({
        let gate = gone.gate.clone();
        move || eventually(Duration::from_secs(5), || gate.arrived() == 1)
    });
    assert!(waited.await.unwrap(), "a request reached `gone`");
    let keep_200 = format!(
        "sluice_requests_total{{listener=\"web\",pool=\"app\",backend=\"{}\",code=\"200\"}}",
        keep.addr
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let before = loop {
        // The other request was answered by `keep`: counted once its answer is complete.
        if let Some(before) = series(&scrape(admin).await, &keep_200) {
            break before;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(before, 1.0);

    let only_keep = format!("{{ address = \"{}\" }}", keep.addr);
    let sluice = tokio::task::spawn_blocking(move || {
        sluice.reload_ok(&pool(&only_keep));
        sluice
    })
    .await
    .unwrap();
    assert_eq!(get(&url.replace("/held", "/after")).await.status, 200);
    let text = scrape(admin).await;
    assert_eq!(
        value(&text, &keep_200),
        before + 1.0,
        "not reset by the reload"
    );
    assert_eq!(value(&text, "sluice_config_generation"), 2.0);
    let gone_active = format!(
        "sluice_backend_active_requests{{pool=\"app\",backend=\"{}\"}}",
        gone.addr()
    );
    assert_eq!(value(&text, &gone_active), 1.0, "draining, still listed");

    gone.gate.open();
    for request in held {
        assert_eq!(request.await.unwrap(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(admin).await;
        if !text.contains(&gone.addr().to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gone's series stay:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sluice);
}

/// Each worker counts into copies of its own (`shard`): the page adds them up, so requests
/// served by either of two workers are all counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_served_by_two_workers_are_all_counted() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let sluice = TestSluice::start_with(
        &config(&[&a, &b], closed_port(), ""),
        2,
        sluice::server::RuntimeKind::PerCore,
    );
    let web = sluice.addrs[0];
    // Each on a new connection: the kernel spreads them over both workers' sockets (all 40 on
    // one worker has a chance of 2^-39).
    let mut body_bytes = 0;
    for _ in 0..40 {
        let got = get(&format!("http://{web}/api/x")).await;
        assert_eq!(got.status, 200);
        body_bytes += got.body.len();
    }
    let text = scrape(sluice.admin.unwrap()).await;
    assert_eq!(
        value(
            &text,
            "sluice_downstream_sent_bytes_total{listener=\"web\"}"
        ),
        body_bytes as f64
    );
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let per_backend = |name: &str, labels: &str| {
        [&a_addr, &b_addr].map(|addr| {
            value(
                &text,
                &format!("{name}{{pool=\"app\",backend=\"{addr}\"{labels}}}"),
            )
        })
    };
    let answered = [&a_addr, &b_addr].map(|addr| {
        value(
            &text,
            &format!(
                "sluice_requests_total{{listener=\"web\",pool=\"app\",backend=\"{addr}\",code=\"200\"}}"
            ),
        )
    });
    assert_eq!(answered[0] + answered[1], 40.0, "{answered:?}");
    let upstream = per_backend("sluice_upstream_duration_seconds_count", "");
    assert_eq!(upstream[0] + upstream[1], 40.0, "{upstream:?}");
    assert_eq!(
        value(
            &text,
            "sluice_request_duration_seconds_count{listener=\"web\",pool=\"app\"}"
        ),
        40.0
    );
}
