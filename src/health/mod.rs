//! Whether a backend may take traffic, and why not: active health checks (`active`), passive
//! outlier ejection (`outlier`) and draining each own one bit of a backend's `Health`; the
//! request path reads all of them with one atomic load and skips a backend with any bit set.
//!
//! The state machines live beside the atomics: active checks flip `UNHEALTHY` after their
//! thresholds, outlier detection sets `EJECTED` for a doubling time, draining (issue 5) sets
//! `DRAINING`. None of them reads a clock on the request path.

pub mod active;
pub mod grpc;
pub mod outlier;

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Failed its active checks (or has not passed one yet).
const UNHEALTHY: u8 = 1;
/// Ejected by outlier detection.
const EJECTED: u8 = 2;
/// Being removed: finishes what it has, takes nothing new.
const DRAINING: u8 = 4;

/// What the admin API reports for a backend; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Draining,
    Ejected,
    Unhealthy,
    Healthy,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draining => "draining",
            State::Ejected => "ejected",
            State::Unhealthy => "unhealthy",
            State::Healthy => "healthy",
        }
    }
}

/// The outcome of one active probe, kept for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    pub passed: bool,
    /// What was seen: `status 200`, `timeout`, `connection refused`, ...
    pub detail: String,
    pub at: SystemTime,
}

/// A backend's active-check results: counts, the most recent ones, and the last in full.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub passed: u64,
    pub failed: u64,
    /// The last `recent_len` results, newest in bit 0: 1 passed, 0 failed.
    pub recent: u32,
    pub recent_len: u32,
    pub last: Option<CheckRecord>,
}

impl Checks {
    /// How many results `recent` keeps.
    pub const RECENT: u32 = 32;

    /// The recent results, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.recent_len)
            .rev()
            .map(|i| self.recent >> i & 1 == 1)
    }
}

/// A backend's health: the bits that keep it from traffic, and the passive detector's counts.
#[derive(Debug, Default)]
pub struct Health {
    blocked: AtomicU8,
    /// Live-traffic failures in a row (outlier detection).
    pub(crate) consecutive_failures: AtomicU32,
    /// Ejections so far that still count as repeated (outlier detection).
    pub(crate) ejections: AtomicU32,
    /// Ejected, time served, waiting for a passing probe to return (outlier detection with
    /// active checks on).
    pub(crate) awaiting_probe: std::sync::atomic::AtomicBool,
    /// Every ejection since the backend joined, for metrics.
    pub(crate) ejections_total: std::sync::atomic::AtomicU64,
    checks: Mutex<Checks>,
    /// The active-check verdict has been "passing" at some point: from then on a return to
    /// healthy takes `healthy_threshold` passes, not the first-probe rule's one. Kept here,
    /// not in the probe loop, so that a loop restarted by a reload does not forget it.
    proven: std::sync::atomic::AtomicBool,
}

impl Health {
    /// A new backend: with active checks on it starts unhealthy, to be probed at once.
    pub fn new(checked: bool) -> Health {
        Health {
            blocked: AtomicU8::new(if checked { UNHEALTHY } else { 0 }),
            proven: std::sync::atomic::AtomicBool::new(!checked),
            ..Health::default()
        }
    }

    /// Whether the backend has ever passed its checks (or never needed to).
    pub fn proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    /// Whether the backend may take new requests: one relaxed load.
    #[inline]
    pub fn available(&self) -> bool {
        self.blocked.load(Ordering::Relaxed) == 0
    }

    /// Whether the backend is being removed.
    pub fn draining(&self) -> bool {
        self.blocked.load(Ordering::Relaxed) & DRAINING != 0
    }

    pub fn state(&self) -> State {
        let blocked = self.blocked.load(Ordering::Relaxed);
        if blocked & DRAINING != 0 {
            State::Draining
        } else if blocked & EJECTED != 0 {
            State::Ejected
        } else if blocked & UNHEALTHY != 0 {
            State::Unhealthy
        } else {
            State::Healthy
        }
    }

    /// Whether active checks currently pass (or are off).
    pub fn checks_pass(&self) -> bool {
        self.blocked.load(Ordering::Relaxed) & UNHEALTHY == 0
    }

    /// Sets the active-check verdict; returns whether it changed.
    pub fn set_checks_pass(&self, pass: bool) -> bool {
        if pass {
            self.proven.store(true, Ordering::Relaxed);
        }
        self.set(UNHEALTHY, !pass)
    }

    pub fn ejected(&self) -> bool {
        self.blocked.load(Ordering::Relaxed) & EJECTED != 0
    }

    /// Sets or clears the ejection; returns whether it changed.
    pub(crate) fn set_ejected(&self, ejected: bool) -> bool {
        self.set(EJECTED, ejected)
    }

    /// Marks the backend as draining (no new requests); returns whether it changed.
    pub fn set_draining(&self, draining: bool) -> bool {
        self.set(DRAINING, draining)
    }

    pub fn record_check(&self, record: CheckRecord) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks.recent = checks.recent << 1 | u32::from(record.passed);
        checks.recent_len = (checks.recent_len + 1).min(Checks::RECENT);
        if record.passed {
            checks.passed += 1;
        } else {
            checks.failed += 1;
        }
        checks.last = Some(record);
    }

    pub fn last_check(&self) -> Option<CheckRecord> {
        self.checks().last
    }

    /// The active checks' results so far.
    pub fn checks(&self) -> Checks {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, bit: u8, on: bool) -> bool {
        let before = if on {
            self.blocked.fetch_or(bit, Ordering::Relaxed)
        } else {
            self.blocked.fetch_and(!bit, Ordering::Relaxed)
        };
        (before & bit != 0) != on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bit_blocks_and_state_reports_the_strongest() {
        let h = Health::new(false);
        assert!(h.available());
        assert_eq!(h.state(), State::Healthy);
        assert!(h.set_checks_pass(false));
        assert!(!h.set_checks_pass(false), "no change the second time");
        assert_eq!(h.state(), State::Unhealthy);
        assert!(!h.available());
        assert!(h.set_ejected(true));
        assert_eq!(h.state(), State::Ejected);
        assert!(h.set_draining(true));
        assert_eq!(h.state(), State::Draining);
        h.set_draining(false);
        h.set_ejected(false);
        assert_eq!(h.state(), State::Unhealthy);
        h.set_checks_pass(true);
        assert!(h.available());
    }

    #[test]
    fn a_checked_backend_starts_unhealthy() {
        assert_eq!(Health::new(true).state(), State::Unhealthy);
        assert!(!Health::new(true).available());
    }
}
