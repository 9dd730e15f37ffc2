use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config;
use crate::health::State;

/// `record`s each outcome (`P` pass, `F` fail) and returns the verdict after each.
fn run(mut t: Threshold, outcomes: &str) -> String {
    outcomes
        .chars()
        .map(|c| {
            t.record(c == 'P');
            if t.healthy() {
                'H'
            } else {
                'u'
            }
        })
        .collect()
}

#[test]
fn threshold_table() {
    // (starts healthy, healthy_threshold, unhealthy_threshold, outcomes, verdicts)
    let cases = [
        // A new backend: its first pass makes it healthy at once.
        (false, 2, 3, "P", "H"),
        (false, 5, 3, "PPP", "HHH"),
        // Failing before ever passing changes nothing: the first pass still suffices.
        (false, 2, 3, "FFFP", "uuuH"),
        // Once proven, it takes `unhealthy_threshold` failures in a row to go...
        (false, 2, 3, "PFFF", "HHHu"),
        // ...and `healthy_threshold` passes in a row to come back.
        (false, 2, 3, "PFFFPP", "HHHuuH"),
        (false, 3, 1, "PFPPP", "HuuuH"),
        // A pass in the middle of a failure streak resets it.
        (true, 2, 3, "FFPFFF", "HHHHHu"),
        // A failure in the middle of a pass streak resets it.
        (false, 3, 1, "PFPPFPPP", "HuuuuuuH"),
        // A carried-over healthy backend is already proven.
        (true, 2, 1, "FP", "uu"),
        (true, 2, 1, "FPP", "uuH"),
        // Thresholds of 0 behave as 1.
        (true, 0, 0, "FPF", "uHu"),
    ];
    for (healthy, up, down, outcomes, want) in cases {
        let got = run(Threshold::new(healthy, up, down), outcomes);
        assert_eq!(
            got, want,
            "start healthy={healthy} healthy_threshold={up} unhealthy_threshold={down} outcomes={outcomes}"
        );
    }
}

#[test]
fn threshold_reports_each_flip_once() {
    let mut t = Threshold::new(false, 2, 2);
    let flips: Vec<Option<bool>> = [true, true, false, false, false, true, true]
        .into_iter()
        .map(|p| t.record(p))
        .collect();
    assert_eq!(
        flips,
        [Some(true), None, None, Some(false), None, None, Some(true)]
    );
}

#[test]
fn jitter_stays_within_ten_percent_and_varies() {
    let interval = Duration::from_secs(5);
    let lo = interval.mul_f64(0.9);
    let hi = interval.mul_f64(1.1);
    assert_eq!(jittered(interval, 0.0), lo);
    assert!(jittered(interval, 0.999_999_9) <= hi);
    let delays: Vec<Duration> = (0..1000).map(|_| jittered(interval, rng::unit())).collect();
    assert!(
        delays.iter().all(|d| (lo..=hi).contains(d)),
        "{:?}",
        delays
            .iter()
            .filter(|d| !(lo..=hi).contains(*d))
            .collect::<Vec<_>>()
    );
    assert!(delays.iter().any(|d| *d != delays[0]), "not all equal");
    // Both halves of the range are used.
    assert!(delays.iter().any(|d| *d < interval));
    assert!(delays.iter().any(|d| *d > interval));
}

fn checked_pool(addr: SocketAddr, settings: HealthCheck) -> Arc<Pool> {
    let cfg = config::Pool {
        health_check: Some(settings),
        ..config::Pool::with_defaults(
            "app",
            config::Algorithm::RoundRobin,
            vec![config::Backend {
                address: format!("localhost:{}", addr.port()),
                resolved: addr,
                weight: 1,
            }],
        )
    };
    Arc::new(Pool::new(&cfg, 1))
}

fn settings(path: Option<&str>, interval: Duration, timeout: Duration) -> HealthCheck {
    HealthCheck {
        path: path.map(|p| p.parse().unwrap()),
        interval,
        timeout,
        ..HealthCheck::default()
    }
}

#[tokio::test(start_paused = true)]
async fn probes_at_once_then_once_per_jittered_interval() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let interval = Duration::from_secs(10);
    let pool = checked_pool(addr, settings(None, interval, Duration::from_secs(1)));
    // Paused time advances to the next timer whenever the runtime parks, even in the very park
    // that found a connection ready to accept, so the accept task would see the clock jump to the
    // probe's timeout. A 1ms ticker keeps every jump, and so the skew, under a millisecond.
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            if tx.send(start.elapsed()).is_err() {
                break;
            }
        }
    });
    assert_eq!(pool.backends[0].health.state(), State::Unhealthy);
    let checkers = Checkers::start_pools(std::slice::from_ref(&pool), &CancellationToken::new());
    assert_eq!(checkers.len(), 1);

    let mut probes = Vec::new();
    for _ in 0..8 {
        probes.push(rx.recv().await.unwrap());
    }
    checkers.stop().await;

    ticker.abort();

    let skew = Duration::from_millis(2);
    assert!(probes[0] <= skew, "first at once: {probes:?}");
    let gaps: Vec<Duration> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    let (lo, hi) = (interval.mul_f64(0.9) - skew, interval.mul_f64(1.1) + skew);
    assert!(
        gaps.iter().all(|g| (lo..=hi).contains(g)),
        "gaps outside [{lo:?}, {hi:?}]: {gaps:?}"
    );
    assert!(gaps.iter().any(|g| *g != gaps[0]), "jittered: {gaps:?}");
    let health = &pool.backends[0].health;
    assert_eq!(
        health.state(),
        State::Healthy,
        "healthy after the first probe"
    );
    let last = health.last_check().expect("recorded");
    assert!(last.passed);
    assert_eq!(last.detail, "connected");
    // Stopped: no more probes however long we wait.
    tokio::time::sleep(interval * 5).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_checkers_stops_the_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = checked_pool(
        addr,
        settings(None, Duration::from_secs(1), Duration::from_secs(1)),
    );
    let checkers = Checkers::start_pools(&[pool], &CancellationToken::new());
    let _ = listener.accept().await.unwrap();
    drop(checkers);
    let waited = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
    assert!(waited.is_err(), "no probe after drop");
}

#[tokio::test(start_paused = true)]
async fn pools_without_checks_get_no_checkers() {
    let mut cfg = config::Pool::with_defaults(
        "plain",
        config::Algorithm::RoundRobin,
        vec![config::Backend {
            address: "127.0.0.1:1".into(),
            resolved: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
        }],
    );
    cfg.health_check = None;
    let pool = Arc::new(Pool::new(&cfg, 1));
    let checkers = Checkers::start_pools(&[pool], &CancellationToken::new());
    assert!(checkers.is_empty());
}

/// A one-shot server: answers every connection with `answer` after reading the request head,
/// and keeps the heads it read.
async fn canned(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                if !answer.is_empty() {
                    let _ = stream.write_all(answer).await;
                    let _ = stream.shutdown().await;
                } else {
                    // Silent: hold the connection open.
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    (addr, heads)
}

async fn probe_of(answer: &'static [u8], path: Option<&str>) -> (Outcome, Vec<String>) {
    let (addr, heads) = canned(answer).await;
    let pool = checked_pool(
        addr,
        settings(path, Duration::from_secs(5), Duration::from_millis(500)),
    );
    let outcome = probe(&pool.backends[0], pool.health_check.as_ref().unwrap(), None).await;
    let heads = heads.lock().unwrap().clone();
    (outcome, heads)
}

#[tokio::test]
async fn an_http_probe_sends_a_get_with_host_agent_and_close() {
    let (outcome, heads) = probe_of(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Some("/healthz?deep=1"),
    )
    .await;
    assert_eq!(outcome, Outcome::pass("status 200"));
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /healthz?deep=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: localhost:"), "{head}");
    assert!(
        head.contains("\r\nuser-agent: sluice-health-check\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
}

#[tokio::test]
async fn http_probe_outcomes() {
    let cases: [(&'static [u8], bool, &str); 5] = [
        (b"HTTP/1.1 204 No Content\r\n\r\n", true, "status 204"),
        (
            b"HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n",
            true,
            "status 302",
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy",
            false,
            "status 503",
        ),
        (
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            false,
            "status 404",
        ),
        // An answer without a length, ended by the close.
        (b"HTTP/1.1 200 OK\r\n\r\nfine", true, "status 200"),
    ];
    for (answer, passed, detail) in cases {
        let (outcome, _) = probe_of(answer, Some("/healthz")).await;
        assert_eq!(
            outcome,
            Outcome {
                passed,
                detail: detail.to_string()
            },
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test]
async fn garbage_and_silence_fail_without_panicking() {
    for answer in [
        &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
        b"HTTP/1.1 999999 Nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
    ] {
        let (outcome, _) = probe_of(answer, Some("/healthz")).await;
        assert!(!outcome.passed, "{outcome:?}");
        assert!(
            outcome.detail.starts_with("invalid response: "),
            "{outcome:?}"
        );
    }
    // The server reads the request and says nothing.
    let (outcome, _) = probe_of(b"", Some("/healthz")).await;
    assert_eq!(outcome, Outcome::fail("timeout"));
}

#[tokio::test]
async fn tcp_probe_passes_on_connect_and_fails_on_refusal() {
    let (outcome, heads) = probe_of(b"", None).await;
    assert_eq!(outcome, Outcome::pass("connected"));
    assert!(heads.is_empty(), "a TCP check sends nothing");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let pool = checked_pool(
        addr,
        settings(None, Duration::from_secs(5), Duration::from_secs(1)),
    );
    let outcome = probe(&pool.backends[0], pool.health_check.as_ref().unwrap(), None).await;
    assert_eq!(outcome, Outcome::fail("connection refused"));
}

#[tokio::test]
async fn an_unhealthy_backend_flips_after_the_threshold_and_records_every_probe() {
    let (addr, _) = canned(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
    let pool = checked_pool(
        addr,
        settings(
            Some("/healthz"),
            Duration::from_secs(5),
            Duration::from_secs(1),
        ),
    );
    let backend = &pool.backends[0];
    let checker = Checker {
        pool: pool.name.clone(),
        backend: pool.backends[0].clone(),
        settings: pool.health_check.clone().unwrap(),
        tls: None,
        outliers: pool.outliers.clone(),
    };
    let mut threshold = Threshold::new(false, 2, 3);
    checker.apply(&mut threshold, Outcome::pass("status 200"));
    assert_eq!(backend.health.state(), State::Healthy);
    for n in 1..=3 {
        let outcome = probe(backend, &checker.settings, None).await;
        assert_eq!(outcome, Outcome::fail("status 503"));
        checker.apply(&mut threshold, outcome);
        let want = if n < 3 {
            State::Healthy
        } else {
            State::Unhealthy
        };
        assert_eq!(backend.health.state(), want, "after {n} failures");
    }
    let last = backend.health.last_check().unwrap();
    assert!(!last.passed);
    assert_eq!(last.detail, "status 503");
}

#[test]
fn a_passing_probe_returns_an_ejected_backend_that_served_its_time() {
    use crate::health::outlier::Verdict;
    let cfg = config::Pool {
        health_check: Some(HealthCheck::default()),
        outlier_detection: Some(config::OutlierDetection {
            consecutive_failures: 1,
            max_ejected_percent: 100,
            ..config::OutlierDetection::default()
        }),
        ..config::Pool::with_defaults(
            "app",
            config::Algorithm::RoundRobin,
            vec![config::Backend {
                address: "127.0.0.1:1".into(),
                resolved: "127.0.0.1:1".parse().unwrap(),
                weight: 1,
            }],
        )
    };
    let pool = Arc::new(Pool::new(&cfg, 1));
    let checker = Checker {
        pool: pool.name.clone(),
        backend: pool.backends[0].clone(),
        settings: HealthCheck::default(),
        tls: None,
        outliers: pool.outliers.clone(),
    };
    let health = &pool.backends[0].health;
    let mut threshold = Threshold::new(false, 2, 3);
    checker.apply(&mut threshold, Outcome::pass("status 200"));
    let outliers = pool.outliers.as_ref().unwrap();
    assert_ne!(outliers.record(health, 1, false), Verdict::Stay);
    assert!(!outliers.time_served(health, true));
    assert_eq!(health.state(), State::Ejected);
    checker.apply(&mut threshold, Outcome::fail("timeout"));
    assert_eq!(
        health.state(),
        State::Ejected,
        "a failing probe does not return it"
    );
    checker.apply(&mut threshold, Outcome::pass("status 200"));
    assert_eq!(health.state(), State::Healthy);
}
