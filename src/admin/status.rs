//! The status page for people: `GET /` serves `status.html` (one self-contained file: inline
//! CSS and JS, nothing fetched from anywhere else, since an admin network usually has no
//! internet), which polls `GET /api/status` every 2 seconds.
//!
//! The JSON carries cumulative counters and histogram bucket counts, not rates: the page keeps
//! its samples of the last few seconds and computes requests/s, error rates and p50/p99 from
//! their differences. So the server keeps no state per viewer, and "recent" means the last ten
//! seconds however long the process has run: a backend that turned slow a minute ago shows it
//! now, not averaged over hours.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::timestamp::rfc3339;
use crate::health::{CheckRecord, Checks};
use crate::metrics::{Failure, HistogramValues, BUCKETS};
use crate::state::{ReloadOutcome, Shared, Snapshot};
use crate::upstream::Backend;

/// The page: served as is, without the admin token (it holds no data; `/api/status` needs the
/// token).
pub const PAGE: &str = include_str!("status.html");

#[derive(Debug, Serialize)]
pub struct Status<'a> {
    /// sluice's version.
    pub version: &'static str,
    /// When these figures were read, in milliseconds since the Unix epoch: the page's clock for
    /// rates, and "now" for its "3 min ago".
    pub now_ms: u64,
    pub generation: u64,
    /// When the running config was loaded (RFC 3339, UTC).
    pub loaded_at: String,
    /// The config file.
    pub source: String,
    pub reloads: Reloads,
    /// `None` until the first reload.
    pub last_reload: Option<LastReload>,
    /// Per-request metrics are on (`admin.metrics`): without them `responses`,
    /// `responses_5xx` and the pools' `traffic` are `null`.
    pub metrics: bool,
    /// Upper bounds in seconds of the latency histograms' buckets (the last, `+Inf`, is
    /// implied).
    pub buckets: &'static [f64],
    pub pools: Vec<PoolStatus<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Reloads {
    pub ok: u64,
    pub error: u64,
}

#[derive(Debug, Serialize)]
pub struct LastReload {
    pub at: String,
    /// `SIGHUP`, `admin API` or `file change`.
    pub trigger: &'static str,
    pub ok: bool,
    /// The generation serving afterwards.
    pub generation: u64,
    /// What changed (`pools +0 -0 ~1, ...`), or the first error (`file:line:column: message`).
    pub message: String,
    /// How many errors the refused file had; 0 when ok.
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus<'a> {
    pub name: &'a str,
    /// As in the config; `removed` for a pool a reload removed whose backends still drain.
    pub algorithm: &'static str,
    /// The active checks' settings; `None` without them.
    pub health_check: Option<CheckSettings>,
    /// `fail_open` is in effect: no backend is healthy, so all of them take traffic.
    pub failing_open: bool,
    /// Requests routed to the pool, every listener; `None` with metrics off or for a removed
    /// pool.
    pub traffic: Option<PoolTraffic>,
    pub backends: Vec<BackendStatus<'a>>,
}

#[derive(Debug, Serialize)]
pub struct CheckSettings {
    /// The HTTP path probed; `None` for a TCP connect check.
    pub path: Option<String>,
    pub interval_ms: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq, Default)]
pub struct PoolTraffic {
    /// Requests routed to the pool, however they were answered (cumulative).
    pub requests: u64,
    /// Of those, answered with a 5xx: by a backend, or by sluice itself (502, 503, 504).
    pub responses_5xx: u64,
}

#[derive(Debug, Serialize)]
pub struct BackendStatus<'a> {
    pub address: &'a str,
    pub weight: u32,
    /// `healthy`, `unhealthy`, `ejected` or `draining`.
    pub state: &'static str,
    pub active_requests: u64,
    /// Attempts sent to it, retries included (cumulative, like every count below).
    pub requests_total: u64,
    /// Requests it answered (the last attempt of each), by the status sent to the client.
    pub responses: Option<u64>,
    pub responses_5xx: Option<u64>,
    /// Attempts that got no response.
    pub failures: Failures,
    /// From sending each attempt to its response head or failure.
    pub latency: Latency,
    /// `None` when its pool has no active checks.
    pub checks: Option<ChecksView>,
    /// Live-traffic failures in a row (outlier detection).
    pub consecutive_failures: u32,
    pub ejections_total: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Failures {
    pub connect: u64,
    pub timeout: u64,
    /// Reset, closed early, or an invalid response.
    pub response: u64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    /// Cumulative counts for `buckets`, then `+Inf` (the number of attempts timed).
    pub cumulative: [u64; 17],
    pub sum_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct ChecksView {
    pub passed: u64,
    pub failed: u64,
    /// The last results (up to 32), oldest first: `true` passed.
    pub recent: Vec<bool>,
    pub last: Option<LastCheck>,
}

#[derive(Debug, Serialize)]
pub struct LastCheck {
    pub passed: bool,
    /// What the probe saw: `status 200`, `connection refused`, `timeout`, ...
    pub detail: String,
    pub at: String,
}

impl<'a> Status<'a> {
    pub fn of(
        snapshot: &'a Snapshot,
        draining: &'a [(Arc<str>, Arc<Backend>)],
        reloads: Reloads,
        last_reload: Option<ReloadOutcome>,
        now: SystemTime,
    ) -> Status<'a> {
        let metrics = snapshot.config.admin.as_ref().is_some_and(|a| a.metrics);
        let mut pools: Vec<PoolStatus<'a>> = snapshot
            .pools
            .iter()
            .zip(&snapshot.config.pools)
            .enumerate()
            .map(|(i, (pool, cfg))| {
                let checked = cfg.health_check.is_some();
                PoolStatus {
                    name: &pool.name,
                    algorithm: cfg.algorithm.as_str(),
                    health_check: cfg.health_check.as_ref().map(|c| CheckSettings {
                        path: c.path.as_ref().map(ToString::to_string),
                        interval_ms: u64::try_from(c.interval.as_millis()).unwrap_or(u64::MAX),
                    }),
                    failing_open: pool.failing_open.load(Relaxed),
                    traffic: metrics.then(|| pool_traffic(snapshot, i)),
                    backends: pool
                        .backends
                        .iter()
                        .map(|b| BackendStatus::of(b, checked, metrics))
                        .collect(),
                }
            })
            .collect();
        // Removed backends still finishing requests: after their pool's, or under their old
        // pool's name when a reload removed the whole pool.
        for (name, backend) in draining {
            let checked = snapshot
                .pool(name)
                .map_or(backend.health.checks().recent_len > 0, |p| {
                    p.health_check.is_some()
                });
            let view = BackendStatus {
                state: "draining",
                ..BackendStatus::of(backend, checked, metrics)
            };
            match pools.iter_mut().find(|p| p.name == &**name) {
                Some(pool) => pool.backends.push(view),
                None => pools.push(PoolStatus {
                    name,
                    algorithm: "removed",
                    health_check: None,
                    failing_open: false,
                    traffic: None,
                    backends: vec![view],
                }),
            }
        }
        Status {
            version: env!("CARGO_PKG_VERSION"),
            now_ms: now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            generation: snapshot.generation,
            loaded_at: rfc3339(snapshot.loaded_at),
            source: snapshot.config.source.display().to_string(),
            reloads,
            last_reload: last_reload.map(LastReload::from),
            metrics,
            buckets: &BUCKETS,
            pools,
        }
    }
}

/// The requests every listener routed to the snapshot's pool at `index`, and the 5xx among
/// them: the backends' answers plus sluice's own.
fn pool_traffic(snapshot: &Snapshot, index: usize) -> PoolTraffic {
    let mut traffic = PoolTraffic::default();
    for listener in &snapshot.listeners {
        let Some(route) = listener.routes.get(index) else {
            continue;
        };
        traffic.requests += route.duration.values().count();
        traffic.responses_5xx += server_errors(&route.local.values());
    }
    for backend in &snapshot.pools[index].backends {
        traffic.responses_5xx += server_errors(&backend.metrics.codes.values());
    }
    traffic
}

fn server_errors(codes: &[(usize, u16, u64)]) -> u64 {
    codes
        .iter()
        .filter(|(_, code, _)| (500..600).contains(code))
        .map(|(_, _, count)| count)
        .sum()
}

impl<'a> BackendStatus<'a> {
    fn of(backend: &'a Backend, checked: bool, metrics: bool) -> BackendStatus<'a> {
        let health = &backend.health;
        let codes = metrics.then(|| backend.metrics.codes.values());
        let failures = |f: Failure| backend.metrics.failures[f as usize].load(Relaxed);
        let HistogramValues {
            cumulative,
            sum_seconds,
        } = backend.metrics.upstream.values();
        BackendStatus {
            address: &backend.address,
            weight: backend.weight(),
            state: health.state().as_str(),
            active_requests: backend.active_requests(),
            requests_total: backend.requests_total(),
            responses: codes.as_ref().map(|c| c.iter().map(|(_, _, n)| n).sum()),
            responses_5xx: codes.as_deref().map(server_errors),
            failures: Failures {
                connect: failures(Failure::Connect),
                timeout: failures(Failure::Timeout),
                response: failures(Failure::Response),
            },
            latency: Latency {
                cumulative,
                sum_seconds,
            },
            checks: checked.then(|| ChecksView::from(health.checks())),
            consecutive_failures: health.consecutive_failures.load(Relaxed),
            ejections_total: health.ejections_total.load(Relaxed),
        }
    }
}

impl From<Checks> for ChecksView {
    fn from(checks: Checks) -> ChecksView {
        ChecksView {
            passed: checks.passed,
            failed: checks.failed,
            recent: checks.recent().collect(),
            last: checks.last.map(LastCheck::from),
        }
    }
}

impl From<CheckRecord> for LastCheck {
    fn from(record: CheckRecord) -> LastCheck {
        LastCheck {
            passed: record.passed,
            detail: record.detail,
            at: rfc3339(record.at),
        }
    }
}

impl From<ReloadOutcome> for LastReload {
    fn from(outcome: ReloadOutcome) -> LastReload {
        let (ok, message, errors) = match outcome.result {
            Ok(summary) => (true, summary, 0),
            Err(failure) => (false, failure.first, failure.errors),
        };
        LastReload {
            at: rfc3339(outcome.at),
            trigger: outcome.trigger,
            ok,
            generation: outcome.generation,
            message,
            errors,
        }
    }
}

/// The JSON body of `GET /api/status`.
pub fn json(shared: &Shared) -> Vec<u8> {
    let snapshot = shared.snapshot();
    let draining = shared.draining();
    let reloads = Reloads {
        ok: shared.reloads.ok.load(Relaxed),
        error: shared.reloads.error.load(Relaxed),
    };
    let status = Status::of(
        &snapshot,
        &draining,
        reloads,
        shared.last_reload(),
        SystemTime::now(),
    );
    // Plain structs of strings and numbers (finite floats) always serialize.
    serde_json::to_vec(&status).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::config::Config;
    use crate::state::ReloadFailure;

    const AT: u64 = 1_795_255_200_123; // 2026-11-21T10:00:00.123Z

    fn at(offset_ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(AT + offset_ms)
    }

    fn snapshot(metrics: bool) -> Snapshot {
        let text = format!(
            r#"
[admin]
bind = "127.0.0.1:0"
metrics = {metrics}

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
algorithm = "least_requests"
backends = [
  {{ address = "127.0.0.1:1", weight = 3 }},
  {{ address = "127.0.0.1:2" }},
  {{ address = "127.0.0.1:3" }},
  {{ address = "127.0.0.1:4" }},
]
[pool.app.health_check]
path = "/healthz"
interval = "250ms"
timeout = "200ms"

[pool.plain]
backends = [{{ address = "127.0.0.1:5" }}]
"#
        );
        let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        Snapshot::build(Arc::new(config), 1, 4)
    }

    fn check(health: &crate::health::Health, passed: bool, detail: &str, offset_ms: u64) {
        health.record_check(CheckRecord {
            passed,
            detail: detail.into(),
            at: at(offset_ms),
        });
    }

    fn render(
        snapshot: &Snapshot,
        draining: &[(Arc<str>, Arc<Backend>)],
        last: Option<ReloadOutcome>,
    ) -> serde_json::Value {
        let reloads = Reloads { ok: 2, error: 1 };
        let status = Status::of(snapshot, draining, reloads, last, at(5_000));
        serde_json::to_value(&status).unwrap()
    }

    #[test]
    fn a_pool_with_a_backend_in_each_state() {
        let snapshot = snapshot(true);
        let app = &snapshot.pools[0];
        let [healthy, unhealthy, ejected, draining] = [0, 1, 2, 3].map(|i| &app.backends[i]);

        // Healthy: two passes, traffic of three requests (one a 503), one in flight.
        healthy.health.set_checks_pass(true);
        check(&healthy.health, true, "status 200", 0);
        check(&healthy.health, true, "status 200", 250);
        let in_flight = healthy.try_start_request(u64::MAX).unwrap();
        for _ in 0..2 {
            drop(healthy.try_start_request(u64::MAX).unwrap());
        }
        let listener = snapshot.listeners[0].id;
        healthy.metrics.codes.add(listener, 200);
        healthy.metrics.codes.add(listener, 200);
        healthy.metrics.codes.add(listener, 503);
        healthy.metrics.upstream.observe(Duration::from_micros(300)); // ≤ 0.5 ms
        healthy.metrics.upstream.observe(Duration::from_millis(3)); // ≤ 5 ms
        healthy.metrics.upstream.observe(Duration::from_millis(40)); // ≤ 50 ms
                                                                     // Sluice's own answers for the pool: two 503s, one 404 would not be routed here.
        let route = &snapshot.listeners[0].routes[0];
        for _ in 0..5 {
            route.duration.observe(Duration::from_millis(1));
        }
        route.local.add(listener, 503);
        route.local.add(listener, 503);

        // Unhealthy: passed once, then failed to connect.
        unhealthy.health.set_checks_pass(true);
        check(&unhealthy.health, true, "status 200", 0);
        check(&unhealthy.health, false, "connection refused", 250);
        unhealthy.health.set_checks_pass(false);
        unhealthy.metrics.failed(crate::metrics::Failure::Connect);
        unhealthy.metrics.upstream.observe(Duration::from_millis(1));

        // Ejected by outlier detection, its checks passing.
        ejected.health.set_checks_pass(true);
        check(&ejected.health, true, "status 200", 0);
        ejected.health.set_ejected(true);
        ejected.health.ejections_total.fetch_add(1, Relaxed);
        ejected.health.consecutive_failures.store(5, Relaxed);
        ejected.metrics.failed(crate::metrics::Failure::Timeout);
        ejected.metrics.failed(crate::metrics::Failure::Response);

        // Draining: being deregistered, one request still in flight.
        draining.health.set_checks_pass(true);
        draining.health.set_draining(true);
        let _draining_request = draining.try_start_request(u64::MAX).unwrap();

        let last = ReloadOutcome {
            at: at(1_000),
            trigger: "admin API",
            generation: 4,
            result: Ok(
                "listeners +0 -0 ~0, routes +0 -0, pools +0 -0 ~1, backends +1 -0 ~0".into(),
            ),
        };
        let got = render(&snapshot, &[], Some(last));

        let histogram = |cumulative: [u64; 17], sum: f64| serde_json::json!({"cumulative": cumulative, "sum_seconds": sum});
        let mut three = [3u64; 17];
        three[..6].copy_from_slice(&[1, 1, 1, 2, 2, 2]);
        let no_failures = serde_json::json!({"connect": 0, "timeout": 0, "response": 0});
        let want = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "now_ms": AT + 5_000,
            "generation": 4,
            "loaded_at": got["loaded_at"],
            "source": "t.toml",
            "reloads": {"ok": 2, "error": 1},
            "last_reload": {
                "at": "2026-11-21T10:00:01.123Z", "trigger": "admin API", "ok": true,
                "generation": 4, "errors": 0,
                "message": "listeners +0 -0 ~0, routes +0 -0, pools +0 -0 ~1, backends +1 -0 ~0",
            },
            "metrics": true,
            "buckets": BUCKETS,
            "pools": [
                {
                    "name": "app", "algorithm": "least_requests",
                    "health_check": {"path": "/healthz", "interval_ms": 250},
                    "failing_open": false,
                    // 5 routed; 5xx: the backend's 503 and sluice's two.
                    "traffic": {"requests": 5, "responses_5xx": 3},
                    "backends": [
                        {
                            "address": "127.0.0.1:1", "weight": 3, "state": "healthy",
                            "active_requests": 1, "requests_total": 3,
                            "responses": 3, "responses_5xx": 1,
                            "failures": no_failures,
                            "latency": histogram(three, 0.0433),
                            "checks": {"passed": 2, "failed": 0, "recent": [true, true],
                                "last": {"passed": true, "detail": "status 200",
                                         "at": "2026-11-21T10:00:00.373Z"}},
                            "consecutive_failures": 0, "ejections_total": 0,
                        },
                        {
                            "address": "127.0.0.1:2", "weight": 1, "state": "unhealthy",
                            "active_requests": 0, "requests_total": 0,
                            "responses": 0, "responses_5xx": 0,
                            "failures": {"connect": 1, "timeout": 0, "response": 0},
                            "latency": histogram({
                                let mut c = [1u64; 17];
                                c[..2].copy_from_slice(&[0, 1]);
                                c
                            }, 0.001),
                            "checks": {"passed": 1, "failed": 1, "recent": [true, false],
                                "last": {"passed": false, "detail": "connection refused",
                                         "at": "2026-11-21T10:00:00.373Z"}},
                            "consecutive_failures": 0, "ejections_total": 0,
                        },
                        {
                            "address": "127.0.0.1:3", "weight": 1, "state": "ejected",
                            "active_requests": 0, "requests_total": 0,
                            "responses": 0, "responses_5xx": 0,
                            "failures": {"connect": 0, "timeout": 1, "response": 1},
                            "latency": histogram([0; 17], 0.0),
                            "checks": {"passed": 1, "failed": 0, "recent": [true],
                                "last": {"passed": true, "detail": "status 200",
                                         "at": "2026-11-21T10:00:00.123Z"}},
                            "consecutive_failures": 5, "ejections_total": 1,
                        },
                        {
                            "address": "127.0.0.1:4", "weight": 1, "state": "draining",
                            "active_requests": 1, "requests_total": 1,
                            "responses": 0, "responses_5xx": 0,
                            "failures": no_failures,
                            "latency": histogram([0; 17], 0.0),
                            "checks": {"passed": 0, "failed": 0, "recent": [], "last": null},
                            "consecutive_failures": 0, "ejections_total": 0,
                        },
                    ],
                },
                {
                    "name": "plain", "algorithm": "round_robin", "health_check": null,
                    "failing_open": false,
                    "traffic": {"requests": 0, "responses_5xx": 0},
                    "backends": [{
                        "address": "127.0.0.1:5", "weight": 1, "state": "healthy",
                        "active_requests": 0, "requests_total": 0,
                        "responses": 0, "responses_5xx": 0,
                        "failures": no_failures,
                        "latency": histogram([0; 17], 0.0),
                        "checks": null,
                        "consecutive_failures": 0, "ejections_total": 0,
                    }],
                },
            ],
        });
        assert_eq!(got, want, "{got:#}");
        drop(in_flight);
    }

    #[test]
    fn removed_backends_drain_under_their_pool_or_their_removed_pool() {
        let old = snapshot(true);
        let new = snapshot(true);
        let moved = old.pools[0].backends[1].clone();
        moved.health.set_checks_pass(false);
        check(&moved.health, false, "timeout", 0);
        let _in_flight = moved.try_start_request(u64::MAX).unwrap();
        let gone = old.pools[1].backends[0].clone();
        let draining = [
            (Arc::from("app"), moved),
            (Arc::from("legacy"), gone.clone()),
        ];
        let got = render(&new, &draining, None);
        assert_eq!(got["last_reload"], serde_json::Value::Null);
        let app = &got["pools"][0]["backends"];
        assert_eq!(app.as_array().unwrap().len(), 5);
        assert_eq!(app[4]["address"], "127.0.0.1:2");
        assert_eq!(app[4]["state"], "draining", "whatever its health");
        assert_eq!(app[4]["checks"]["last"]["detail"], "timeout");
        let legacy = &got["pools"][2];
        assert_eq!(legacy["name"], "legacy");
        assert_eq!(legacy["algorithm"], "removed");
        assert_eq!(legacy["traffic"], serde_json::Value::Null);
        assert_eq!(legacy["backends"][0]["address"], "127.0.0.1:5");
        assert_eq!(legacy["backends"][0]["state"], "draining");
        assert_eq!(legacy["backends"][0]["checks"], serde_json::Value::Null);
    }

    #[test]
    fn a_refused_reload_shows_its_first_error() {
        let snapshot = snapshot(true);
        let last = ReloadOutcome {
            at: at(0),
            trigger: "SIGHUP",
            generation: 4,
            result: Err(ReloadFailure {
                errors: 2,
                first: "t.toml:3:13: unknown algorithm `round-robin`".into(),
            }),
        };
        let got = render(&snapshot, &[], Some(last));
        assert_eq!(
            got["last_reload"],
            serde_json::json!({
                "at": "2026-11-21T10:00:00.123Z", "trigger": "SIGHUP", "ok": false,
                "generation": 4, "errors": 2,
                "message": "t.toml:3:13: unknown algorithm `round-robin`",
            })
        );
    }

    #[test]
    fn without_metrics_only_the_per_request_counts_are_null() {
        let snapshot = snapshot(false);
        let backend = &snapshot.pools[0].backends[0];
        drop(backend.try_start_request(u64::MAX).unwrap());
        backend.metrics.upstream.observe(Duration::from_millis(2));
        let got = render(&snapshot, &[], None);
        assert_eq!(got["metrics"], false);
        let pool = &got["pools"][0];
        assert_eq!(pool["traffic"], serde_json::Value::Null);
        let b = &pool["backends"][0];
        assert_eq!(b["responses"], serde_json::Value::Null);
        assert_eq!(b["responses_5xx"], serde_json::Value::Null);
        assert_eq!(b["requests_total"], 1);
        assert_eq!(b["latency"]["cumulative"][16], 1);
    }

    #[test]
    fn the_page_is_self_contained() {
        // Nothing fetched from elsewhere: no absolute or protocol-relative URLs at all, so an
        // admin network without internet shows the whole page.
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        for quote in ["\"//", "'//", "(//", "`//", "=//"] {
            assert!(!PAGE.contains(quote), "{quote}");
        }
        assert!(PAGE.contains("/api/status"));
    }
}
