//! Balancing through a real sluice: three backends, one answering 50 ms slower, 32 clients at
//! once. Round robin gives the slow one a third of the requests; load- and latency-aware
//! algorithms give it much less.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// A backend that answers its name after `delay`, counting requests.
fn counting_backend(name: &'static str, delay: Duration, count: Arc<AtomicUsize>) -> TestBackend {
    TestBackend::with_handler(
        name,
        Default::default(),
        Arc::new(move |_req| {
            count.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                http::Response::new(full(name))
            })
        }),
    )
}

/// The share of `total` requests (from 32 concurrent clients) that reached the slow backend.
async fn slow_share(algorithm: &str, total: usize) -> f64 {
    // One at a time: four of these at once (the test harness runs tests in parallel) load two
    // cores enough to slow the fast backends' answers towards the slow one's, which is not what
    // the tests measure.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let slow = counting_backend("slow", Duration::from_millis(50), counts[0].clone());
    let fast1 = counting_backend("fast1", Duration::from_millis(1), counts[1].clone());
    let fast2 = counting_backend("fast2", Duration::from_millis(1), counts[2].clone());
    let config = config_with(
        &[slow.addr, fast1.addr, fast2.addr],
        "",
        "",
        &format!("algorithm = \"{algorithm}\""),
    );
    let sluice = TestSluice::start(&config);
    let url = sluice.url("/");
    let per_client = total / 32;
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    assert_eq!(get(&url).await.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let served: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(served.iter().sum::<usize>(), per_client * 32);
    served[0] as f64 / (per_client * 32) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_sends_the_slow_backend_a_third() {
    let share = slow_share("round_robin", 640).await;
    assert!((0.30..0.37).contains(&share), "slow backend got {share:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peak_ewma_sends_the_slow_backend_under_15_percent() {
    let share = slow_share("peak_ewma", 640).await;
    assert!(share < 0.15, "slow backend got {share:.3}");
}

/// `ring_hash` and `maglev` keyed by a header: the same user always reaches the same backend,
/// and different users spread over all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_pools_keep_each_key_on_one_backend() {
    for algorithm in ["ring_hash", "maglev"] {
        let backends: Vec<TestBackend> = ["a", "b", "c"]
            .iter()
            .map(|n| TestBackend::start(n))
            .collect();
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let sluice = TestSluice::start(&config_with(
            &addrs,
            "",
            "",
            &format!("algorithm = \"{algorithm}\"\nhash_key = \"header:x-user\""),
        ));
        let mut owners = std::collections::HashMap::new();
        for user in 0..60 {
            for _ in 0..3 {
                let req = http::Request::get(sluice.url("/"))
                    .header("x-user", format!("user-{user}"))
                    .body(full(""))
                    .unwrap();
                let got = send(req).await;
                assert_eq!(got.status, 200);
                let owner = owners.entry(user).or_insert_with(|| got.text());
                assert_eq!(*owner, got.text(), "{algorithm}: user-{user} moved");
            }
        }
        let mut used: Vec<String> = owners.values().cloned().collect();
        used.sort();
        used.dedup();
        assert_eq!(
            used,
            ["a", "b", "c"],
            "{algorithm}: 60 users did not spread"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_requests_sends_the_slow_backend_under_15_percent() {
    let share = slow_share("least_requests", 640).await;
    assert!(share < 0.15, "slow backend got {share:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_of_two_sends_the_slow_backend_under_15_percent() {
    let share = slow_share("power_of_two", 640).await;
    assert!(share < 0.15, "slow backend got {share:.3}");
}

/// Weights through a real sluice: 3:1 gives exactly three quarters to the heavy backend over
/// whole cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights_exactly() {
    let heavy = TestBackend::start("heavy");
    let light = TestBackend::start("light");
    let config = simple_config(&[&heavy, &light])
        .replace(
            &format!("{{ address = \"{}\" }}", heavy.addr),
            &format!("{{ address = \"{}\", weight = 3 }}", heavy.addr),
        )
        .replace(
            "[pool.app]",
            "[pool.app]\nalgorithm = \"weighted_round_robin\"",
        );
    let sluice = TestSluice::start(&config);
    let mut picks = String::new();
    for _ in 0..40 {
        picks.push_str(&get(&sluice.url("/")).await.text()[..1]);
    }
    assert_eq!(picks.matches('h').count(), 30, "{picks}");
    // Smooth: the light backend is never starved for more than three picks in a row.
    assert!(!picks.contains("hhhh"), "{picks}");
}
