//! The admin API of this version: `GET /healthz`, `GET /api/pools`, and the bearer token that
//! guards the rest.

mod support;

use support::*;

fn admin_config(backend: &TestBackend, token: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{token}\"\n{}",
        simple_config(&[backend])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok_without_a_token() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&admin_config(&a, "s3cret"));
    let admin = sluice.admin.expect("admin API bound");
    let got = get(&format!("http://{admin}/healthz")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_admin_paths_need_the_bearer_token() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&admin_config(&a, "s3cret"));
    let admin = sluice.admin.unwrap();
    let url = format!("http://{admin}/api/pools");
    assert_eq!(get(&url).await.status, 401);
    let wrong = http::Request::get(&url)
        .header("authorization", "Bearer nope")
        .body(full(""))
        .unwrap();
    assert_eq!(send(wrong).await.status, 401);
    let right = http::Request::get(&url)
        .header("authorization", "Bearer s3cret")
        .body(full(""))
        .unwrap();
    assert_eq!(send(right).await.status, 200);
    let unknown = http::Request::get(format!("http://{admin}/api/nothing"))
        .header("authorization", "Bearer s3cret")
        .body(full(""))
        .unwrap();
    assert_eq!(send(unknown).await.status, 404);
}

/// `GET path` on the admin API with the bearer token.
async fn admin_get(admin: std::net::SocketAddr, path: &str, token: &str) -> Got {
    let req = http::Request::get(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    send(req).await
}

async fn pools_json(admin: std::net::SocketAddr, token: &str) -> serde_json::Value {
    let got = admin_get(admin, "/api/pools", token).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some("application/json"));
    serde_json::from_slice(&got.body).expect("valid JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pools_lists_pools_backends_states_and_counters() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let spare = TestBackend::start("spare");
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"t0k\"\n{}",
        config_with(
            &[a.addr, b.addr],
            "",
            "",
            &format!(
                "[pool.spare]\nalgorithm = \"least_requests\"\nbackends = [{{ address = \"{}\", weight = 7 }}]\n",
                spare.addr
            ),
        )
    );
    let sluice = TestSluice::start(&config);
    let admin = sluice.admin.unwrap();

    let before = pools_json(admin, "t0k").await;
    let pools = before["pools"].as_array().expect("pools array");
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["name"], "app");
    assert_eq!(pools[0]["algorithm"], "round_robin");
    assert_eq!(pools[1]["name"], "spare");
    assert_eq!(pools[1]["algorithm"], "least_requests");
    let app = pools[0]["backends"].as_array().unwrap();
    let addresses: Vec<String> = app
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addresses, [a.addr.to_string(), b.addr.to_string()]);
    for backend in app.iter().chain(pools[1]["backends"].as_array().unwrap()) {
        // Without active checks every backend is healthy, and was never probed.
        assert_eq!(backend["state"], "healthy", "{backend}");
        assert_eq!(backend["last_check"], serde_json::Value::Null, "{backend}");
        assert_eq!(backend["active_requests"], 0, "{backend}");
        assert_eq!(backend["requests_total"], 0, "{backend}");
        assert_eq!(backend["consecutive_failures"], 0, "{backend}");
        assert_eq!(backend["ejections_total"], 0, "{backend}");
    }
    assert_eq!(app[0]["weight"], 1);
    assert_eq!(pools[1]["backends"][0]["weight"], 7);

    for _ in 0..6 {
        assert_eq!(get(&sluice.url("/")).await.status, 200);
    }
    // The in-flight count falls when the exchange ends, a moment after the client has its body.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let after = loop {
        let json = pools_json(admin, "t0k").await;
        let backends = json["pools"][0]["backends"].as_array().unwrap();
        if backends.iter().all(|b| b["active_requests"] == 0) {
            break json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "in-flight counts never fell: {json}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let totals: Vec<u64> = after["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests_total"].as_u64().unwrap())
        .collect();
    assert_eq!(totals, [3, 3], "round robin over two backends");
    assert_eq!(after["pools"][1]["backends"][0]["requests_total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pools_needs_the_token_and_only_answers_get() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&admin_config(&a, "s3cret"));
    let admin = sluice.admin.unwrap();
    let anonymous = get(&format!("http://{admin}/api/pools")).await;
    assert_eq!(anonymous.status, 401);
    assert!(
        !anonymous.text().contains(&a.addr.to_string()),
        "nothing leaks"
    );
    let post = http::Request::post(format!("http://{admin}/api/pools"))
        .header("authorization", "Bearer s3cret")
        .body(full("{}"))
        .unwrap();
    let got = send(post).await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_api_pools_is_open_on_loopback() {
    let a = TestBackend::start("a");
    let config = format!("[admin]\nbind = \"127.0.0.1:0\"\n{}", simple_config(&[&a]));
    let sluice = TestSluice::start(&config);
    let json = pools_json(sluice.admin.unwrap(), "").await;
    assert_eq!(
        json["pools"][0]["backends"][0]["address"],
        a.addr.to_string()
    );
}

#[test]
fn no_admin_table_means_no_admin_listener() {
    let a = TestBackend::start("a");
    let sluice = TestSluice::start(&simple_config(&[&a]));
    assert!(sluice.admin.is_none());
}

#[test]
fn a_silent_admin_connection_is_closed_after_the_header_read_timeout() {
    use std::io::Read;
    let a = TestBackend::start("a");
    let config = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\nheader_read_timeout = \"300ms\"\n{}",
        simple_config(&[&a])
    );
    let sluice = TestSluice::start(&config);
    let mut silent = std::net::TcpStream::connect(sluice.admin.unwrap()).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    let waited = start.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        waited >= std::time::Duration::from_millis(200)
            && waited < std::time::Duration::from_secs(3),
        "closed after {waited:?}"
    );
}
