//! The backend for one attempt: the balancer's choice, passing over backends that may not take
//! traffic (unhealthy, ejected, draining), that this request already tried, or that are at their
//! connection limit; then `fail_open`; then, when only limits stood in the way, a bounded wait
//! for a slot (`max_pending`).
//!
//! Algorithms stay pure: they see unavailable backends as heavily loaded (`Pool`'s `Backends`
//! view), and counter- or draw-based ones simply pick again, which spreads a skipped backend's
//! share evenly over the others instead of handing it all to its neighbour.

use std::cell::Cell;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::error::ProxyError;
use crate::balance::{rng, Pick, Selection};
use crate::config::AllUnhealthy;
use crate::upstream::{InFlight, Pool};

/// Picks asked of the balancer before walking its fallback order.
const PICKS: usize = 4;

/// Most backends one request tries: the first attempt and up to 10 retries.
pub const MAX_TRIES: usize = 11;

/// Backends a request has tried already.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    /// Backend indices. (32 bits: a pool of more backends than that is not a config sluice
    /// can load; the smaller list keeps the request's future small.)
    list: [u32; MAX_TRIES],
    len: u8,
}

impl Tried {
    pub fn add(&mut self, i: usize) {
        if usize::from(self.len) < MAX_TRIES {
            self.list[usize::from(self.len)] = i as u32;
            self.len += 1;
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        u32::try_from(i).is_ok_and(|i| self.list[..usize::from(self.len)].contains(&i))
    }
}

/// Why no backend could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// Some backend could take traffic but is at its connection limit: worth waiting.
    AtLimit,
    /// No untried backend may take traffic.
    NoneAvailable,
}

impl From<Shortage> for ProxyError {
    fn from(s: Shortage) -> ProxyError {
        match s {
            Shortage::AtLimit => ProxyError::Overloaded,
            Shortage::NoneAvailable => ProxyError::NoBackend,
        }
    }
}

/// A backend for the next attempt, its slot already taken, without waiting.
///
/// A first attempt asks the balancer; a retry (`tried` not empty) walks the fallback order from
/// a random backend instead, so that it neither advances a round-robin rotation (which would
/// put the failing backend first in line for every request) nor piles onto the failed
/// backend's neighbour.
pub fn choose(pool: &Pool, pick: &Pick, tried: &Tried) -> Result<(usize, InFlight), Shortage> {
    let len = pool.backends.len();
    if len == 0 {
        return Err(Shortage::NoneAvailable);
    }
    let limit = u64::from(pool.limits.max_connections_per_backend);
    let at_limit = Cell::new(false);
    let take = |i: usize, ignore_health: bool| -> Option<InFlight> {
        let backend = &pool.backends[i];
        if tried.contains(i) {
            return None;
        }
        let usable = if ignore_health {
            !backend.health.draining()
        } else {
            backend.health.available()
        };
        if !usable {
            return None;
        }
        let slot = backend.try_start_request(limit);
        if slot.is_none() {
            at_limit.set(true);
        }
        slot
    };

    let mut last = 0;
    if tried.len == 0 {
        for _ in 0..PICKS {
            let Some(first) = pool.balancer.select(pool, pick).next() else {
                break;
            };
            if let Some(slot) = take(first, false) {
                leave_fail_open(pool);
                return Ok((first, slot));
            }
            last = first;
        }
    } else {
        // A retry's walk starts at a random untried backend (a tried start would hand its turn
        // to its neighbour).
        for _ in 0..MAX_TRIES {
            last = rng::below(len as u64) as usize;
            if !tried.contains((last + 1) % len) {
                break;
            }
        }
    }
    for i in Selection::rotating(last + 1, len) {
        if let Some(slot) = take(i, false) {
            leave_fail_open(pool);
            return Ok((i, slot));
        }
    }
    if at_limit.get() {
        return Err(Shortage::AtLimit);
    }
    if pool.all_unhealthy == AllUnhealthy::FailOpen {
        // Nothing may take traffic by health: use them all anyway (but not one being removed),
        // from a random start so that the traffic spreads.
        for i in Selection::rotating(rng::below(len as u64) as usize, len) {
            if let Some(slot) = take(i, true) {
                enter_fail_open(pool);
                return Ok((i, slot));
            }
        }
        if at_limit.get() {
            return Err(Shortage::AtLimit);
        }
    }
    Err(Shortage::NoneAvailable)
}

/// After `choose` found only backends at their connection limit: waits (until `deadline`) for
/// a slot, as one of at most `max_pending` waiting requests.
pub async fn wait_for_slot(
    pool: &Pool,
    pick: &Pick,
    tried: &Tried,
    deadline: Instant,
) -> Result<(usize, InFlight), ProxyError> {
    let waiters = &pool.waiters;
    let max = pool.limits.max_pending as usize;
    if waiters
        .count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_err()
    {
        return Err(ProxyError::Overloaded);
    }
    let _waiting = Waiting(pool);
    loop {
        let freed = waiters.freed.notified();
        let mut freed = std::pin::pin!(freed);
        // Registered before looking again, so a slot freed in between is not missed.
        freed.as_mut().enable();
        match choose(pool, pick, tried) {
            Err(Shortage::AtLimit) => {}
            other => return other.map_err(ProxyError::from),
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            return Err(ProxyError::Overloaded);
        }
    }
}

/// RAII: one request counted among the pool's waiting ones.
struct Waiting<'a>(&'a Pool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.count.fetch_sub(1, Ordering::Relaxed);
        // The slot this waiter was woken for (if any) may suit another one.
        self.0.waiters.freed.notify_one();
    }
}

fn enter_fail_open(pool: &Pool) {
    if !pool.failing_open.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            pool = &*pool.name,
            "no backend is healthy: failing open, spreading traffic over every backend"
        );
    }
}

fn leave_fail_open(pool: &Pool) {
    // One load on every request; a write only on the change.
    if pool.failing_open.load(Ordering::Relaxed) && pool.failing_open.swap(false, Ordering::Relaxed)
    {
        tracing::info!(
            pool = &*pool.name,
            "a backend is healthy again: no longer failing open"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Algorithm};

    fn pool(algorithm: Algorithm, n: usize, edit: impl FnOnce(&mut config::Pool)) -> Pool {
        let backends = (0..n)
            .map(|i| config::Backend {
                address: format!("127.0.0.1:{}", 10_000 + i),
                resolved: format!("127.0.0.1:{}", 10_000 + i).parse().unwrap(),
                weight: 1,
            })
            .collect();
        let mut cfg = config::Pool::with_defaults("p", algorithm, backends);
        edit(&mut cfg);
        Pool::new(&cfg, 1)
    }

    /// How many of `picks` choices each backend got (slots released at once).
    fn shares(pool: &Pool, picks: usize) -> Vec<usize> {
        let mut got = vec![0; pool.backends.len()];
        for _ in 0..picks {
            let (i, _slot) = choose(pool, &Pick::default(), &Tried::default()).unwrap();
            got[i] += 1;
        }
        got
    }

    #[test]
    fn a_skipped_backends_share_spreads_evenly() {
        for algorithm in Algorithm::ALL.into_iter().filter(|a| !a.hashes()) {
            let p = pool(algorithm, 4, |_| {});
            p.backends[1].health.set_checks_pass(false);
            let got = shares(&p, 3000);
            assert_eq!(got[1], 0, "{algorithm:?}: {got:?}");
            for i in [0, 2, 3] {
                assert!((800..1200).contains(&got[i]), "{algorithm:?}: {got:?}");
            }
        }
    }

    #[test]
    fn tried_backends_are_not_chosen_again() {
        let p = pool(Algorithm::RoundRobin, 3, |_| {});
        let mut tried = Tried::default();
        tried.add(0);
        tried.add(2);
        for _ in 0..10 {
            assert_eq!(choose(&p, &Pick::default(), &tried).unwrap().0, 1);
        }
        tried.add(1);
        assert_eq!(
            choose(&p, &Pick::default(), &tried).unwrap_err(),
            Shortage::NoneAvailable
        );
    }

    #[test]
    fn retries_spread_over_the_other_backends_and_leave_the_rotation_alone() {
        let p = pool(Algorithm::RoundRobin, 4, |_| {});
        let mut tried = Tried::default();
        tried.add(0);
        let mut got = [0usize; 4];
        for _ in 0..3000 {
            got[choose(&p, &Pick::default(), &tried).unwrap().0] += 1;
        }
        assert_eq!(got[0], 0);
        assert!(
            got[1..].iter().all(|&c| (850..1150).contains(&c)),
            "{got:?}"
        );
        // The rotation did not move: the next first attempt is still backend 0.
        assert_eq!(
            choose(&p, &Pick::default(), &Tried::default()).unwrap().0,
            0
        );
    }

    #[test]
    fn backends_at_their_limit_are_skipped_then_reported() {
        let p = pool(Algorithm::RoundRobin, 2, |c| {
            c.limits.max_connections_per_backend = 1;
        });
        let (a, _held_a) = choose(&p, &Pick::default(), &Tried::default()).unwrap();
        let (b, held_b) = choose(&p, &Pick::default(), &Tried::default()).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            choose(&p, &Pick::default(), &Tried::default()).unwrap_err(),
            Shortage::AtLimit
        );
        drop(held_b);
        assert_eq!(
            choose(&p, &Pick::default(), &Tried::default()).unwrap().0,
            b
        );
    }

    #[test]
    fn fail_closed_and_fail_open_when_nothing_is_healthy() {
        for (mode, want) in [
            (AllUnhealthy::FailClosed, false),
            (AllUnhealthy::FailOpen, true),
        ] {
            let p = pool(Algorithm::RoundRobin, 3, |c| c.all_unhealthy = mode);
            for b in &p.backends {
                b.health.set_checks_pass(false);
            }
            let got = choose(&p, &Pick::default(), &Tried::default());
            assert_eq!(got.is_ok(), want, "{mode:?}");
            if want {
                assert!(p.failing_open.load(Ordering::Relaxed));
                // Spread over all of them, not stuck on one.
                let got = shares(&p, 300);
                assert!(got.iter().all(|&c| c >= 50), "{got:?}");
                // One recovers: the mode ends and it takes everything.
                p.backends[2].health.set_checks_pass(true);
                assert_eq!(shares(&p, 30)[2], 30);
                assert!(!p.failing_open.load(Ordering::Relaxed));
            } else {
                assert_eq!(got.unwrap_err(), Shortage::NoneAvailable);
            }
        }
    }

    #[test]
    fn fail_open_still_spares_a_draining_backend() {
        let p = pool(Algorithm::RoundRobin, 2, |c| {
            c.all_unhealthy = AllUnhealthy::FailOpen
        });
        p.backends[0].health.set_checks_pass(false);
        p.backends[1].health.set_checks_pass(false);
        p.backends[1].health.set_draining(true);
        assert_eq!(shares(&p, 20), [20, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_the_first_freed_slot() {
        let p = std::sync::Arc::new(pool(Algorithm::RoundRobin, 1, |c| {
            c.limits.max_connections_per_backend = 1;
            c.limits.max_pending = 1;
        }));
        let (_, held) = choose(&p, &Pick::default(), &Tried::default()).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                wait_for_slot(&p, &Pick::default(), &Tried::default(), deadline)
                    .await
                    .map(|(i, _)| i)
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(p.waiters.count.load(Ordering::Relaxed), 1);
        // A second waiter is over `max_pending`: refused at once.
        let refused = wait_for_slot(&p, &Pick::default(), &Tried::default(), deadline).await;
        assert!(matches!(refused, Err(ProxyError::Overloaded)));
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), 0);
        assert_eq!(p.waiters.count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_with_503_at_the_deadline() {
        let p = pool(Algorithm::RoundRobin, 1, |c| {
            c.limits.max_connections_per_backend = 1;
        });
        let (_, _held) = choose(&p, &Pick::default(), &Tried::default()).unwrap();
        let start = Instant::now();
        let deadline = start + std::time::Duration::from_secs(2);
        let got = wait_for_slot(&p, &Pick::default(), &Tried::default(), deadline).await;
        assert!(matches!(got, Err(ProxyError::Overloaded)));
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
    }
}
