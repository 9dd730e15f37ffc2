//! Choosing a backend. Each algorithm is a small pure module; `Balancer` dispatches by enum.
//!
//! Selection yields backend indices in fallback order: the first choice, then the ones to try
//! next. Whether a backend may take traffic (health, ejection, limits) is decided by the caller,
//! which skips indices, so the algorithms know nothing about health.

pub mod hash;
mod least_requests;
mod maglev;
mod peak_ewma;
mod power_of_two;
mod random;
mod ring_hash;
pub mod rng;
mod round_robin;
mod weight;
mod weighted_round_robin;

pub use least_requests::LeastRequests;
pub use maglev::Maglev;
pub use peak_ewma::{Ewma, PeakEwma};
pub use power_of_two::PowerOfTwo;
pub use random::Random;
pub use ring_hash::{Clockwise, RingHash};
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use crate::config::Algorithm;

/// What an algorithm may read about a pool's backends when it picks. The pool implements it
/// over its shared runtime state; tests implement it over plain vectors. Indices are positions
/// in the pool's backend list.
pub trait Backends {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Configured weight, 1 to 1000.
    fn weight(&self, i: usize) -> u32;
    /// The share of its weight the backend may take now, in (0, 1]: below 1 while slow start
    /// ramps a new or recovered backend up. Effective weight = `weight × ramp`.
    fn ramp(&self, i: usize) -> f64;
    /// Whether every backend's ramp is 1 now, so a pick may skip reading ramps. `false` is
    /// always a correct answer, only a slower one.
    fn settled(&self) -> bool {
        false
    }
    /// Requests in flight to the backend.
    fn in_flight(&self, i: usize) -> u64;
    /// Peak-EWMA response latency in nanoseconds as of `now` (read once per pick by the
    /// caller: the clock is a large part of a pick's cost); `None` before the first response.
    fn latency(&self, i: usize, now: std::time::Instant) -> Option<f64>;
}

/// What an algorithm builds its tables from: each backend's identity and configured weight.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// The backend's address as configured: consistent hashing places backends by it, so a
    /// backend keeps its keys across reloads and restarts.
    pub id: String,
    pub weight: u32,
}

/// What a request brings to a pick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pick {
    /// `hash::hash` of the request's hash key (`hash_key`), when the pool hashes and the
    /// request has the key. Hashing algorithms fall back to a random pick without it.
    pub key: Option<u64>,
}

/// The algorithm of one pool, with whatever state it keeps between picks.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    PeakEwma(PeakEwma),
    RingHash(RingHash),
    Maglev(Maglev),
    WeightedRoundRobin(WeightedRoundRobin),
    Random(Random),
    LeastRequests(LeastRequests),
    PowerOfTwo(PowerOfTwo),
}

impl Balancer {
    /// Builds the algorithm's tables for `backends` (in pool order).
    pub fn new(algorithm: Algorithm, backends: &[BackendSpec]) -> Balancer {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
            Algorithm::PeakEwma => Balancer::PeakEwma(PeakEwma::new(backends)),
            Algorithm::RingHash => Balancer::RingHash(RingHash::new(backends)),
            Algorithm::Maglev => Balancer::Maglev(Maglev::new(backends)),
            Algorithm::WeightedRoundRobin => {
                Balancer::WeightedRoundRobin(WeightedRoundRobin::new(backends))
            }
            Algorithm::Random => Balancer::Random(Random::new(backends)),
            Algorithm::LeastRequests => Balancer::LeastRequests(LeastRequests::new(backends)),
            Algorithm::PowerOfTwo => Balancer::PowerOfTwo(PowerOfTwo::new(backends)),
        }
    }

    /// Whether picks read the backends' latency estimates (`Backends::latency`): if not, the
    /// request path need not feed them (two writes per response to a line every worker
    /// writes).
    pub fn reads_latency(&self) -> bool {
        matches!(self, Balancer::PeakEwma(_))
    }

    /// Backend indices in the order to try them: the algorithm's choice, then the rest.
    pub fn select<B: Backends + ?Sized>(&self, backends: &B, pick: &Pick) -> Selection {
        if backends.is_empty() {
            return Selection::rotating(0, 0);
        }
        let len = backends.len();
        let first = match self {
            Balancer::RoundRobin(rr) => rr.pick(backends, pick),
            Balancer::PeakEwma(pe) => pe.pick(backends, pick),
            Balancer::RingHash(ring) => ring.pick(backends, pick),
            Balancer::Maglev(maglev) => maglev.pick(backends, pick),
            Balancer::WeightedRoundRobin(wrr) => wrr.pick(backends, pick),
            Balancer::Random(random) => random.pick(backends, pick),
            Balancer::LeastRequests(lr) => lr.pick(backends, pick),
            Balancer::PowerOfTwo(p2c) => p2c.pick(backends, pick),
        };
        Selection::rotating(first, len)
    }
}

/// Indices `start, start+1, ...` modulo `len`, each once: the fallback order of rotating
/// algorithms.
#[derive(Debug, Clone)]
pub struct Selection {
    next: usize,
    len: usize,
    remaining: usize,
}

impl Selection {
    pub fn rotating(start: usize, len: usize) -> Selection {
        Selection {
            next: if len == 0 { 0 } else { start % len },
            len,
            remaining: len,
        }
    }
}

impl Iterator for Selection {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        let i = self.next;
        self.remaining -= 1;
        self.next = if i + 1 == self.len { 0 } else { i + 1 };
        Some(i)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_visits_every_index_once_from_start() {
        assert_eq!(Selection::rotating(2, 4).collect::<Vec<_>>(), [2, 3, 0, 1]);
        assert_eq!(Selection::rotating(9, 4).collect::<Vec<_>>(), [1, 2, 3, 0]);
        assert_eq!(Selection::rotating(0, 0).count(), 0);
    }

    /// Latency estimates are fed only for the algorithms `reads_latency` names: one that read
    /// them without being named would see none.
    #[test]
    fn only_algorithms_that_say_so_read_latency() {
        let mut backends = testing::Fixed::weights(&[1, 2, 3, 4]);
        backends.latency = vec![Some(0.004), Some(0.001), Some(0.003), Some(0.002)];
        for algorithm in Algorithm::ALL {
            let balancer = Balancer::new(algorithm, &backends.specs());
            backends
                .latency_reads
                .store(0, std::sync::atomic::Ordering::Relaxed);
            for key in 0..50 {
                let _ = balancer.select(&backends, &Pick { key: Some(key) }).next();
            }
            let read = backends
                .latency_reads
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
            assert_eq!(read, balancer.reads_latency(), "{algorithm:?}");
        }
    }
}

/// Backends for tests: fixed weights, ramps, in-flight counts and latencies.
#[cfg(test)]
pub mod testing {
    use super::hash::mix;
    use super::{BackendSpec, Backends};

    /// Specs with plausible, seed-dependent addresses: what consistent hashing places.
    pub fn hashed_specs(weights: &[u32], seed: u64) -> Vec<BackendSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendSpec {
                id: address(seed, i),
                weight,
            })
            .collect()
    }

    /// A plausible backend address, different for each `(seed, i)`.
    pub fn address(seed: u64, i: usize) -> String {
        let h = mix(seed ^ mix(i as u64));
        format!(
            "10.{}.{}.{}:{}",
            h as u8,
            (h >> 8) as u8,
            i,
            8000 + (h >> 16) % 1000
        )
    }

    /// `n` well-spread keys, different for each seed.
    pub fn keys(seed: u64, n: usize) -> impl Iterator<Item = u64> {
        (0..n as u64).map(move |i| mix(mix(seed) ^ i))
    }

    #[derive(Debug, Clone, Default)]
    pub struct Fixed {
        pub weights: Vec<u32>,
        pub ramps: Vec<f64>,
        pub in_flight: Vec<u64>,
        pub latency: Vec<Option<f64>>,
        /// How many times a pick read `latency` (shared by clones).
        pub latency_reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Fixed {
        pub fn weights(weights: &[u32]) -> Fixed {
            Fixed {
                weights: weights.to_vec(),
                ramps: vec![1.0; weights.len()],
                in_flight: vec![0; weights.len()],
                latency: vec![None; weights.len()],
                latency_reads: Default::default(),
            }
        }

        /// Specs with ids `b0`, `b1`, ...
        pub fn specs(&self) -> Vec<BackendSpec> {
            self.weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| BackendSpec {
                    id: format!("b{i}"),
                    weight,
                })
                .collect()
        }
    }

    impl Backends for Fixed {
        fn len(&self) -> usize {
            self.weights.len()
        }
        fn weight(&self, i: usize) -> u32 {
            self.weights[i]
        }
        fn ramp(&self, i: usize) -> f64 {
            self.ramps[i]
        }
        fn settled(&self) -> bool {
            self.ramps.iter().all(|&r| r >= 1.0)
        }
        fn in_flight(&self, i: usize) -> u64 {
            self.in_flight[i]
        }
        fn latency(&self, i: usize, _now: std::time::Instant) -> Option<f64> {
            self.latency_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.latency[i]
        }
    }

    /// `Fixed` that never reports itself settled: drives the general (ramp-reading) paths of
    /// algorithms that have a fast path for settled pools.
    #[derive(Debug)]
    pub struct Unsettled<'a>(pub &'a Fixed);

    impl Backends for Unsettled<'_> {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn weight(&self, i: usize) -> u32 {
            self.0.weight(i)
        }
        fn ramp(&self, i: usize) -> f64 {
            self.0.ramp(i)
        }
        fn in_flight(&self, i: usize) -> u64 {
            self.0.in_flight(i)
        }
        fn latency(&self, i: usize, now: std::time::Instant) -> Option<f64> {
            self.0.latency(i, now)
        }
    }
}
