//! When backends fail: retries on another backend (conditions, methods, bodies, budget),
//! passive outlier ejection, circuit breaking (`limits`) and `all_unhealthy`. Real backends, a
//! real sluice, real sockets.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;

/// A backend that answers `status` (and its name) to every request, counting them and
/// recording their bodies.
struct Counting {
    name: String,
    addr: SocketAddr,
    /// `None` once killed.
    backend: Option<TestBackend>,
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Counting {
    fn start(name: &str, status: u16) -> Counting {
        Self::with(name, move |_path| Reply::Status(status))
    }

    /// `reply` decides per request path what the backend does.
    fn with(name: &str, reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Counting {
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (h, b, tag) = (hits.clone(), bodies.clone(), name.to_string());
        let reply = Arc::new(reply);
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let (h, b, tag, reply) = (h.clone(), b.clone(), tag.clone(), reply.clone());
            Box::pin(async move {
                let path = req.uri().path().to_string();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                h.fetch_add(1, Ordering::SeqCst);
                b.lock().unwrap().push(body);
                match reply(&path) {
                    Reply::Status(status) => Response::builder()
                        .status(status)
                        .header("x-backend", tag.as_str())
                        .body(full(tag))
                        .unwrap(),
                    Reply::Slow(delay) => {
                        tokio::time::sleep(delay).await;
                        Response::builder()
                            .header("x-backend", tag.as_str())
                            .body(full(tag))
                            .unwrap()
                    }
                    Reply::Hang => std::future::pending().await,
                }
            })
        });
        let backend = TestBackend::with_handler(name, Arc::new(Mutex::new(Vec::new())), handler);
        Counting {
            name: name.to_string(),
            addr: backend.addr,
            backend: Some(backend),
            hits,
            bodies,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend process dies: its listener and every connection close.
    fn kill(&mut self) {
        self.backend = None;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

enum Reply {
    Status(u16),
    Slow(Duration),
    /// Read the request, then never answer.
    Hang,
}

/// An address with nothing listening: connecting is refused.
fn dead_addr() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn sluice(addrs: &[SocketAddr], pool: &str) -> TestSluice {
    TestSluice::start(&config_with(addrs, "", "", pool))
}

const RETRY: &str = r#"
[pool.app.retry]
attempts = 2
"#;

async fn request(method: &str, url: &str, body: &'static str) -> Got {
    send(
        Request::builder()
            .method(method)
            .uri(url)
            .body(full(body))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_is_retried_on_another_backend_after_a_503() {
    let failing = Counting::start("failing", 503);
    let ok = Counting::start("ok", 200);
    let proxy = sluice(&[failing.addr(), ok.addr()], RETRY);
    for i in 0..20 {
        let got = get(&proxy.url("/")).await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {}", got.text());
        assert_eq!(got.text(), "ok");
    }
    // Round robin sent it every other first attempt; each retried once on `ok`.
    assert_eq!(failing.hits(), 10);
    assert_eq!(ok.hits(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_table_a_503_reaches_the_client() {
    let failing = Counting::start("failing", 503);
    let ok = Counting::start("ok", 200);
    let proxy = sluice(&[failing.addr(), ok.addr()], "");
    let statuses: Vec<u16> = futures_statuses(&proxy, 4).await;
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), 2);
}

async fn futures_statuses(proxy: &TestSluice, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(&proxy.url("/")).await.status.as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_limits_the_conditions() {
    let failing = Counting::start("failing", 503);
    let ok = Counting::start("ok", 200);
    let pool = "[pool.app.retry]\nattempts = 2\non = [\"502\", \"504\"]\n";
    let proxy = sluice(&[failing.addr(), ok.addr()], pool);
    let statuses = futures_statuses(&proxy, 4).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_not_retried_after_a_503() {
    let failing = Counting::start("failing", 503);
    let ok = Counting::start("ok", 200);
    let proxy = sluice(&[failing.addr(), ok.addr()], RETRY);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(request("POST", &proxy.url("/"), "x").await.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        failing.hits() + ok.hits(),
        4,
        "every POST reached one backend once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_when_connecting_was_refused() {
    let ok = Counting::start("ok", 200);
    let proxy = sluice(&[dead_addr(), ok.addr()], RETRY);
    for _ in 0..6 {
        let got = request("POST", &proxy.url("/"), "payload").await;
        assert_eq!(got.status, StatusCode::OK);
    }
    assert_eq!(ok.hits(), 6);
    assert!(ok.bodies.lock().unwrap().iter().all(|b| b == "payload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_refused_connection_is_a_502() {
    let ok = Counting::start("ok", 200);
    let proxy = sluice(&[dead_addr(), ok.addr()], "");
    let statuses = futures_statuses(&proxy, 4).await;
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_to_a_backend_killed_after_reading_it_is_a_502_and_reached_it_once() {
    let mut killed = Counting::with("killed", |_| Reply::Hang);
    let other = Counting::start("other", 200);
    let proxy = sluice(&[killed.addr(), other.addr()], RETRY);
    let url = proxy.url("/order");
    let post = tokio::spawn(async move { request("POST", &url, "pay 10 EUR").await });
    assert!(
        eventually(Duration::from_secs(5), || killed.hits() == 1),
        "the POST reached the first backend"
    );
    killed.kill(); // its connections close unanswered
    let got = post.await.unwrap();
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text());
    assert_eq!(killed.hits(), 1);
    assert_eq!(
        other.hits(),
        0,
        "a POST that may have been processed is not sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_a_small_body_is_replayed_whole_on_another_backend() {
    // The first backend reads the body, then dies without answering: a reset.
    let mut killed = Counting::with("killed", |_| Reply::Hang);
    let other = Counting::start("other", 200);
    let proxy = sluice(&[killed.addr(), other.addr()], RETRY);
    let body: &'static str = Box::leak("0123456789".repeat(3000).into_boxed_str()); // 30 KB
    let url = proxy.url("/doc");
    let put = tokio::spawn(async move { request("PUT", &url, body).await });
    assert!(eventually(Duration::from_secs(5), || killed.hits() == 1));
    killed.kill();
    let got = put.await.unwrap();
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(other.hits(), 1);
    assert_eq!(other.bodies.lock().unwrap()[0], body.as_bytes());
    assert_eq!(killed.bodies.lock().unwrap()[0], body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_a_body_larger_than_the_replay_bound_is_not_retried() {
    let mut killed = Counting::with("killed", |_| Reply::Hang);
    let other = Counting::start("other", 200);
    let proxy = sluice(&[killed.addr(), other.addr()], RETRY);
    let body: &'static str = Box::leak("x".repeat(200 * 1024).into_boxed_str());
    let url = proxy.url("/doc");
    let put = tokio::spawn(async move { request("PUT", &url, body).await });
    assert!(eventually(Duration::from_secs(5), || killed.hits() == 1));
    killed.kill();
    let got = put.await.unwrap();
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(other.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_during_a_stream_of_gets_costs_no_failed_request() {
    let backends: Vec<Counting> = (0..3)
        .map(|i| Counting::start(&format!("b{i}"), 200))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Counting::addr).collect();
    let pool = format!("{RETRY}\n[pool.app.outlier_detection]\nconsecutive_failures = 3\n");
    let proxy = sluice(&addrs, &pool);
    let url = proxy.url("/");
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients, each a keep-alive connection sending GETs back to back.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let response = client
                        .request(Request::get(&url).body(full("")).unwrap())
                        .await
                        .expect("sluice answers");
                    statuses.push(response.status().as_u16());
                    let _ = response.into_body().collect().await;
                }
                statuses
            })
        })
        .collect();
    let mut backends = backends;
    assert!(eventually(Duration::from_secs(10), || backends[1].hits() >= 50));
    let mut killed = backends.remove(1);
    let hits_at_kill = killed.hits();
    killed.kill();
    let served = || backends.iter().map(Counting::hits).sum::<usize>();
    let before = served();
    assert!(eventually(Duration::from_secs(10), || served() >= before + 400));
    stop.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for c in clients {
        statuses.extend(c.await.unwrap());
    }
    let failed = statuses.iter().filter(|&&s| s != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", statuses.len());
    assert!(hits_at_kill >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_500_is_ejected_and_its_share_moves_to_the_others() {
    let bad = Counting::start("bad", 500);
    let a = Counting::start("a", 200);
    let b = Counting::start("b", 200);
    let pool = "[pool.app.outlier_detection]\nconsecutive_failures = 3\nbase_ejection = \"30s\"\n";
    let proxy = sluice(&[bad.addr(), a.addr(), b.addr()], pool);
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(get(&proxy.url("/")).await.status.as_u16());
    }
    assert_eq!(bad.hits(), 3, "ejected on its third failure in a row");
    assert_eq!(statuses.iter().filter(|&&s| s == 500).count(), 3);
    // After the ejection the other two share the traffic evenly.
    assert!(
        a.hits() >= 27 && b.hits() >= 27,
        "a {} b {}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_backend_returns_when_its_time_is_up() {
    let flaky_failing = Arc::new(AtomicBool::new(true));
    let f = flaky_failing.clone();
    let flaky = Counting::with("flaky", move |_| {
        Reply::Status(if f.load(Ordering::SeqCst) { 500 } else { 200 })
    });
    let steady = Counting::start("steady", 200);
    let pool =
        "[pool.app.outlier_detection]\nconsecutive_failures = 2\nbase_ejection = \"300ms\"\n";
    let proxy = sluice(&[flaky.addr(), steady.addr()], pool);
    for _ in 0..4 {
        get(&proxy.url("/")).await;
    }
    assert_eq!(flaky.hits(), 2);
    let ejected_at = Instant::now();
    flaky_failing.store(false, Ordering::SeqCst);
    // While ejected: nothing; then it is back.
    let mut first_back = None;
    while ejected_at.elapsed() < Duration::from_secs(5) {
        let got = get(&proxy.url("/")).await;
        if got.text() == "flaky" {
            first_back = Some(ejected_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = first_back.expect("the ejected backend came back");
    assert!(back >= Duration::from_millis(250), "back after {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limits_the_answer_is_a_quick_503() {
    let slow: Vec<Counting> = (0..2)
        .map(|i| Counting::with(&format!("slow{i}"), |_| Reply::Slow(Duration::from_secs(1))))
        .collect();
    let addrs: Vec<SocketAddr> = slow.iter().map(Counting::addr).collect();
    let pool = "[pool.app.limits]\nmax_connections_per_backend = 1\nmax_pending = 0\n";
    let proxy = sluice(&addrs, pool);
    let url = proxy.url("/");
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || slow
        .iter()
        .all(|b| b.hits() == 1)));
    let start = Instant::now();
    let got = get(&url).await;
    let took = start.elapsed();
    assert_eq!(
        got.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        got.text()
    );
    assert!(got.text().contains("connection limit"), "{}", got.text());
    assert!(took < Duration::from_millis(300), "503 after {took:?}");
    for b in busy {
        assert_eq!(b.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_waits_for_a_slot() {
    let slow = Counting::with("slow", |_| Reply::Slow(Duration::from_millis(1500)));
    let pool = "[pool.app.limits]\nmax_connections_per_backend = 1\nmax_pending = 1\n";
    let admin = "[admin]\nbind = \"127.0.0.1:0\"\n";
    let proxy = TestSluice::start(&config_with(&[slow.addr()], admin, "", pool));
    let url = proxy.url("/");
    let first = {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await.status })
    };
    assert!(eventually(Duration::from_secs(5), || slow.hits() == 1));
    let waiting = {
        let url = url.clone();
        tokio::spawn(async move { get(&url).await.status })
    };
    // Once the second holds the only pending place (seen in the metrics, so that a loaded
    // machine cannot let the third overtake it), a third is refused at once.
    let pending = format!("http://{}/metrics", proxy.admin.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !get(&pending)
        .await
        .text()
        .contains("sluice_pool_pending_requests{pool=\"app\"} 1\n")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second never waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(get(&url).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(
        waiting.await.unwrap(),
        StatusCode::OK,
        "served once the slot freed"
    );
}

/// Backends that fail `/fail` and serve `/ok`, in a pool that ejects on one failure: two
/// requests to `/fail` leave no backend to take traffic.
async fn all_ejected(mode: &str) -> (Vec<Counting>, TestSluice) {
    let backends: Vec<Counting> = (0..2)
        .map(|i| {
            Counting::with(&format!("b{i}"), |path| {
                Reply::Status(if path == "/fail" { 500 } else { 200 })
            })
        })
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(Counting::addr).collect();
    let pool = format!(
        "all_unhealthy = \"{mode}\"\n[pool.app.outlier_detection]\nconsecutive_failures = 1\n\
         max_ejected_percent = 100\n"
    );
    let proxy = sluice(&addrs, &pool);
    for _ in 0..2 {
        assert_eq!(get(&proxy.url("/fail")).await.status, 500);
    }
    (backends, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_fail_closed_answers_503() {
    let (backends, proxy) = all_ejected("fail_closed").await;
    let got = get(&proxy.url("/ok")).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.text(), "no backend available\n");
    assert!(got.header("x-request-id").is_some());
    assert_eq!(backends.iter().map(Counting::hits).sum::<usize>(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_fail_open_still_sends_traffic_to_all() {
    let (backends, proxy) = all_ejected("fail_open").await;
    for _ in 0..40 {
        assert_eq!(get(&proxy.url("/ok")).await.status, StatusCode::OK);
    }
    // Spread at random: 20 each expected, fewer than 8 has odds below 1 in 10^4.
    for b in &backends {
        assert!(b.hits() > 8, "{} got {}", b.name, b.hits());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_during_an_outage() {
    let a = Counting::start("a", 503);
    let b = Counting::start("b", 503);
    let pool = "[pool.app.retry]\nattempts = 1\nbudget_percent = 20\n";
    let proxy = sluice(&[a.addr(), b.addr()], pool);
    const REQUESTS: usize = 200;
    for _ in 0..REQUESTS {
        assert_eq!(get(&proxy.url("/")).await.status, 503);
    }
    let retries = a.hits() + b.hits() - REQUESTS;
    // 20% of the requests plus the reserve of 10; without a budget it would be 200.
    assert!(retries <= REQUESTS / 5 + 10, "{retries} retries");
    assert!(
        retries >= REQUESTS / 5,
        "{retries} retries: the budget is used"
    );
}
