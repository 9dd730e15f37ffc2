//! `GET /api/pools`: every pool of the current snapshot with its backends' weight, state,
//! traffic counters and health details, as JSON.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::timestamp::rfc3339;
use crate::health::CheckRecord;
use crate::state::Snapshot;
use crate::upstream::Backend;

#[derive(Debug, Serialize)]
pub struct Pools<'a> {
    /// The config generation these pools belong to.
    pub generation: u64,
    pub pools: Vec<PoolView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct PoolView<'a> {
    pub name: &'a str,
    pub algorithm: &'static str,
    pub backends: Vec<BackendView<'a>>,
}

#[derive(Debug, Serialize)]
pub struct BackendView<'a> {
    pub address: &'a str,
    pub weight: u32,
    /// `healthy`, `unhealthy`, `ejected` or `draining`.
    pub state: &'static str,
    pub active_requests: u64,
    pub requests_total: u64,
    /// The last active probe; `None` without active checks or before the first probe.
    pub last_check: Option<CheckView>,
    /// Live-traffic failures in a row (outlier detection).
    pub consecutive_failures: u32,
    /// Outlier ejections since the backend joined.
    pub ejections_total: u64,
}

#[derive(Debug, Serialize)]
pub struct CheckView {
    pub passed: bool,
    pub detail: String,
    /// RFC 3339, UTC.
    pub at: String,
}

impl<'a> Pools<'a> {
    /// The snapshot's pools; `draining` (removed backends with requests still in flight) are
    /// listed after their pool's current backends.
    pub fn of(snapshot: &'a Snapshot, draining: &'a [(Arc<str>, Arc<Backend>)]) -> Pools<'a> {
        let pools = snapshot
            .pools
            .iter()
            .zip(&snapshot.config.pools)
            .map(|(pool, cfg)| PoolView {
                name: &pool.name,
                algorithm: cfg.algorithm.as_str(),
                backends: pool
                    .backends
                    .iter()
                    .map(|b| BackendView::of(b))
                    .chain(
                        draining
                            .iter()
                            .filter(|(name, _)| *name == pool.name)
                            .map(|(_, b)| BackendView::draining(b)),
                    )
                    .collect(),
            })
            .collect::<Vec<_>>();
        // Backends of pools a reload removed: listed under their old pool while they drain.
        let mut pools = pools;
        for (name, backend) in draining {
            if snapshot.pool(name).is_some() {
                continue;
            }
            match pools.iter_mut().find(|p| p.name == &**name) {
                Some(pool) => pool.backends.push(BackendView::draining(backend)),
                None => pools.push(PoolView {
                    name,
                    algorithm: "removed",
                    backends: vec![BackendView::draining(backend)],
                }),
            }
        }
        Pools {
            generation: snapshot.generation,
            pools,
        }
    }
}

impl<'a> BackendView<'a> {
    /// A backend a reload or deregistration removed, finishing its requests.
    fn draining(backend: &'a Backend) -> BackendView<'a> {
        BackendView {
            state: "draining",
            ..BackendView::of(backend)
        }
    }

    fn of(backend: &'a Backend) -> BackendView<'a> {
        let health = &backend.health;
        BackendView {
            address: &backend.address,
            weight: backend.weight(),
            state: health.state().as_str(),
            active_requests: backend.active_requests(),
            requests_total: backend.requests_total(),
            last_check: health.last_check().map(CheckView::from),
            consecutive_failures: health.consecutive_failures.load(Ordering::Relaxed),
            ejections_total: health.ejections_total.load(Ordering::Relaxed),
        }
    }
}

impl From<CheckRecord> for CheckView {
    fn from(record: CheckRecord) -> CheckView {
        CheckView {
            passed: record.passed,
            detail: record.detail,
            at: rfc3339(record.at),
        }
    }
}

/// The JSON body of `GET /api/pools`.
pub fn json(snapshot: &Snapshot, draining: &[(Arc<str>, Arc<Backend>)]) -> Vec<u8> {
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_vec(&Pools::of(snapshot, draining)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::config::{self, Config};

    fn snapshot() -> Snapshot {
        let text = r#"
[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
algorithm = "least_requests"
backends = [{ address = "127.0.0.1:1", weight = 3 }, { address = "127.0.0.1:2" }]

[pool.other]
backends = [{ address = "127.0.0.1:3" }]
"#;
        let config = Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        Snapshot::build(Arc::new(config), 1, 1)
    }

    #[test]
    fn lists_every_pool_and_backend_with_its_state_and_counters() {
        let snapshot = snapshot();
        let app = &snapshot.pools[0];
        let _in_flight = app.backends[0].try_start_request(u64::MAX).unwrap();
        app.backends[1].health.set_checks_pass(false);
        app.backends[1].health.record_check(CheckRecord {
            passed: false,
            detail: "connection refused".into(),
            at: UNIX_EPOCH + Duration::from_millis(1_795_255_200_123),
        });
        let got: serde_json::Value = serde_json::from_slice(&json(&snapshot, &[])).unwrap();
        let want = serde_json::json!({"generation": 1, "pools": [
            {"name": "app", "algorithm": "least_requests", "backends": [
                {"address": "127.0.0.1:1", "weight": 3, "state": "healthy",
                 "active_requests": 1, "requests_total": 1, "last_check": null,
                 "consecutive_failures": 0, "ejections_total": 0},
                {"address": "127.0.0.1:2", "weight": 1, "state": "unhealthy",
                 "active_requests": 0, "requests_total": 0,
                 "last_check": {"passed": false, "detail": "connection refused",
                                "at": "2026-11-21T10:00:00.123Z"},
                 "consecutive_failures": 0, "ejections_total": 0},
            ]},
            {"name": "other", "algorithm": "round_robin", "backends": [
                {"address": "127.0.0.1:3", "weight": 1, "state": "healthy",
                 "active_requests": 0, "requests_total": 0, "last_check": null,
                 "consecutive_failures": 0, "ejections_total": 0},
            ]},
        ]});
        assert_eq!(got, want);
    }

    #[test]
    fn ejections_and_failures_are_reported() {
        let snapshot = snapshot();
        let health = &snapshot.pools[0].backends[0].health;
        let outliers = crate::health::outlier::Outliers::new(
            config::OutlierDetection {
                consecutive_failures: 2,
                max_ejected_percent: 100,
                ..Default::default()
            },
            None,
        );
        outliers.record(health, 2, false);
        let got: serde_json::Value = serde_json::from_slice(&json(&snapshot, &[])).unwrap();
        assert_eq!(got["pools"][0]["backends"][0]["consecutive_failures"], 1);
        outliers.record(health, 2, false);
        let got: serde_json::Value = serde_json::from_slice(&json(&snapshot, &[])).unwrap();
        let backend = &got["pools"][0]["backends"][0];
        assert_eq!(backend["state"], "ejected");
        assert_eq!(backend["ejections_total"], 1);
    }
}
