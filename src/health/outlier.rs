//! Passive outlier detection: a backend that fails `consecutive_failures` live requests in a
//! row (5xx answers, connect failures, resets, timeouts) is ejected for `base_ejection`, twice
//! that the next time, and so on up to ten times, never more than `max_ejected_percent` of the
//! pool at once. Its time served, it returns by itself; with active checks on, only once a
//! probe has passed as well.
//!
//! An ejection counts as repeated until the backend has stayed in for the longest ejection
//! (10 × `base_ejection`) after returning; then the doubling starts over.
//!
//! The request path only counts (`record`); a task on the caller's runtime times the ejection,
//! so nothing here reads a clock per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Health;
use crate::config::OutlierDetection;

/// The longest ejection, in multiples of `base_ejection`.
const MAX_FACTOR: u32 = 10;

/// A pool's outlier detection: its settings and how many of its backends are ejected.
#[derive(Debug)]
pub struct Outliers {
    pub settings: OutlierDetection,
    /// Backends of the pool ejected now; shared with the pool's later versions (a reload keeps
    /// its ejected backends ejected, and their timers release them here).
    ejected: Arc<AtomicUsize>,
}

/// What `record` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes.
    Stay,
    /// The backend was ejected for `length`, its `nth` ejection in a row; the caller times it
    /// (`time_served` when it is over, `forgive` after `forgiveness` more).
    Ejected { length: Duration, nth: u32 },
}

impl Outliers {
    /// Outlier detection with `settings`, continuing the ejection count of `previous` (the
    /// same pool's before a reload) when there is one.
    pub fn new(settings: OutlierDetection, previous: Option<&Outliers>) -> Outliers {
        Outliers {
            settings,
            ejected: previous.map_or_else(Arc::default, |old| old.ejected.clone()),
        }
    }

    /// Backends ejected right now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Counts one live-traffic outcome of a backend of a pool of `pool_len`.
    pub fn record(&self, health: &Health, pool_len: usize, success: bool) -> Verdict {
        let failures = &health.consecutive_failures;
        if success {
            // Most outcomes are successes on a healthy backend: read before writing, so they
            // do not bounce the cache line between workers.
            if failures.load(Ordering::Relaxed) != 0 {
                failures.store(0, Ordering::Relaxed);
            }
            return Verdict::Stay;
        }
        let in_a_row = failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if in_a_row < self.settings.consecutive_failures || health.ejected() {
            return Verdict::Stay;
        }
        if !self.reserve(pool_len) {
            // At the cap: the failures keep counting, and the next one tries again.
            return Verdict::Stay;
        }
        if !health.set_ejected(true) {
            // Another worker ejected it a moment ago.
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            return Verdict::Stay;
        }
        failures.store(0, Ordering::Relaxed);
        health.ejections_total.fetch_add(1, Ordering::Relaxed);
        let nth = health.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        Verdict::Ejected {
            length: ejection_time(self.settings.base_ejection, nth),
            nth,
        }
    }

    /// Takes one of the pool's ejection slots, if `max_ejected_percent` leaves one.
    fn reserve(&self, pool_len: usize) -> bool {
        let percent = self.settings.max_ejected_percent as usize;
        self.ejected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ejected| {
                ((ejected + 1) * 100 <= percent * pool_len).then_some(ejected + 1)
            })
            .is_ok()
    }

    /// An ejected backend's time is up. Without active checks it returns now (true); with
    /// them it waits for the next passing probe (`probe_passed`).
    pub fn time_served(&self, health: &Health, checked: bool) -> bool {
        if checked {
            health.awaiting_probe.store(true, Ordering::Relaxed);
            // A probe may have passed between the store and now; it did not see the flag.
            false
        } else {
            self.release(health)
        }
    }

    /// An active probe of the backend passed: returns it if it was waiting for that.
    pub fn probe_passed(&self, health: &Health) -> bool {
        if health.awaiting_probe.swap(false, Ordering::Relaxed) {
            self.release(health)
        } else {
            false
        }
    }

    fn release(&self, health: &Health) -> bool {
        health.awaiting_probe.store(false, Ordering::Relaxed);
        health.consecutive_failures.store(0, Ordering::Relaxed);
        let released = health.set_ejected(false);
        if released {
            self.ejected.fetch_sub(1, Ordering::Relaxed);
        }
        released
    }

    /// After a return: once the backend has stayed in for the longest ejection, its next
    /// ejection is a first one again. `nth` is the ejection it returned from.
    pub fn forgive(&self, health: &Health, nth: u32) {
        // Only if it was not ejected again in the meantime.
        let _ = health
            .ejections
            .compare_exchange(nth, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How long a returned backend must stay in before its ejections are forgiven.
    pub fn forgiveness(&self) -> Duration {
        self.settings.base_ejection.saturating_mul(MAX_FACTOR)
    }
}

/// The `nth` ejection's length (1-based): `base`, doubling each time, at most 10 × `base`.
pub fn ejection_time(base: Duration, nth: u32) -> Duration {
    let doublings = nth.saturating_sub(1).min(4);
    base.saturating_mul((1u32 << doublings).min(MAX_FACTOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejected(secs: u64, nth: u32) -> Verdict {
        Verdict::Ejected {
            length: Duration::from_secs(secs),
            nth,
        }
    }

    fn outliers(consecutive: u32, percent: u32) -> Outliers {
        Outliers::new(
            OutlierDetection {
                consecutive_failures: consecutive,
                base_ejection: Duration::from_secs(30),
                max_ejected_percent: percent,
            },
            None,
        )
    }

    #[test]
    fn ejection_doubles_up_to_ten_times_base() {
        let base = Duration::from_secs(30);
        let got: Vec<u64> = (1..=7).map(|n| ejection_time(base, n).as_secs()).collect();
        assert_eq!(got, [30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(ejection_time(base, u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn ejects_on_the_nth_failure_in_a_row_only() {
        let o = outliers(3, 100);
        let h = Health::new(false);
        assert_eq!(o.record(&h, 4, false), Verdict::Stay);
        assert_eq!(o.record(&h, 4, false), Verdict::Stay);
        // A success breaks the run.
        assert_eq!(o.record(&h, 4, true), Verdict::Stay);
        assert_eq!(o.record(&h, 4, false), Verdict::Stay);
        assert_eq!(o.record(&h, 4, false), Verdict::Stay);
        assert!(h.available());
        assert_eq!(o.record(&h, 4, false), ejected(30, 1));
        assert!(!h.available());
        assert_eq!(h.state(), super::super::State::Ejected);
        assert_eq!(o.ejected(), 1);
    }

    #[test]
    fn repeated_ejections_double_until_forgiven() {
        let o = outliers(1, 100);
        let h = Health::new(false);
        let mut lengths = Vec::new();
        for _ in 0..3 {
            match o.record(&h, 2, false) {
                Verdict::Ejected { length, .. } => lengths.push(length.as_secs()),
                Verdict::Stay => panic!("not ejected"),
            }
            assert!(o.time_served(&h, false));
            assert!(h.available());
        }
        assert_eq!(lengths, [30, 60, 120]);
        o.forgive(&h, 3);
        assert_eq!(o.record(&h, 2, false), ejected(30, 1));
    }

    #[test]
    fn forgiving_an_older_ejection_does_nothing() {
        let o = outliers(1, 100);
        let h = Health::new(false);
        o.record(&h, 2, false);
        o.time_served(&h, false);
        o.record(&h, 2, false); // second ejection
        o.time_served(&h, false);
        o.forgive(&h, 1); // the first one's forgiveness arrives late
        assert_eq!(o.record(&h, 2, false), ejected(120, 3));
    }

    #[test]
    fn never_more_than_the_percent_of_the_pool() {
        // 50% of 5 backends: two at most.
        let o = outliers(1, 50);
        let backends: Vec<Health> = (0..5).map(|_| Health::new(false)).collect();
        let ejected = backends
            .iter()
            .filter(|h| matches!(o.record(h, 5, false), Verdict::Ejected { .. }))
            .count();
        assert_eq!(ejected, 2);
        assert_eq!(backends.iter().filter(|h| !h.available()).count(), 2);
        // One returns: the next failing backend may take its slot.
        let out = backends.iter().find(|h| !h.available()).unwrap();
        o.time_served(out, false);
        let third = backends.iter().find(|h| h.available()).unwrap();
        assert!(matches!(o.record(third, 5, false), Verdict::Ejected { .. }));
    }

    #[test]
    fn a_single_backend_pool_is_never_ejected_below_100_percent() {
        let o = outliers(1, 99);
        let h = Health::new(false);
        for _ in 0..10 {
            assert_eq!(o.record(&h, 1, false), Verdict::Stay);
        }
        assert!(h.available());
    }

    #[test]
    fn with_active_checks_the_return_waits_for_a_passing_probe() {
        let o = outliers(1, 100);
        let h = Health::new(false);
        o.record(&h, 2, false);
        assert!(
            !o.probe_passed(&h),
            "a probe during the ejection does not end it"
        );
        assert!(!o.time_served(&h, true));
        assert!(!h.available());
        assert!(o.probe_passed(&h));
        assert!(h.available());
        assert_eq!(o.ejected(), 0);
    }
}
