//! Smooth weighted round robin, as nginx does it: weights 5, 1, 1 give `a a b a c a a`, each
//! backend's picks spread through the cycle instead of arriving in bursts.
//!
//! nginx keeps a running "current weight" per backend and rescans them all on every pick, under
//! a lock. Here the whole cycle is computed once, at construction, and picks walk it with an
//! atomic cursor: no lock and O(1) per pick. Building it uses a kinetic tournament (below) so
//! that large pools cost O(cycle × log n), not nginx's O(cycle × n).
//!
//! Memory: the cycle has one entry per unit of weight after dividing the weights by their
//! greatest common divisor. If it would still exceed `MAX_CYCLE` entries (possible only beyond
//! about a thousand backends with large, coprime weights), the weights are scaled down to fit,
//! each kept at least 1: proportions then hold to within one part in `MAX_CYCLE / n`.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::weight::{self, RAMP_TRIES};
use super::{rng, BackendSpec, Backends, Pick};

/// The most entries a cycle may have (4 MiB of `u32`), before rounding weights up to 1.
const MAX_CYCLE: u64 = 1 << 20;

#[derive(Debug)]
pub struct WeightedRoundRobin {
    /// One full smooth cycle of backend indices.
    cycle: Box<[u32]>,
    /// How many backends the cycle was built for.
    backends: usize,
    cursor: AtomicUsize,
}

impl WeightedRoundRobin {
    pub fn new(specs: &[BackendSpec]) -> Self {
        let weights: Vec<u32> = specs.iter().map(|s| s.weight).collect();
        Self::with_limit(&weights, MAX_CYCLE)
    }

    fn with_limit(weights: &[u32], limit: u64) -> Self {
        WeightedRoundRobin {
            cycle: smooth_cycle(&reduce(weights, limit)).into_boxed_slice(),
            backends: weights.len(),
            cursor: AtomicUsize::new(0),
        }
    }

    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        let len = self.cycle.len();
        if len == 0 || backends.len() != self.backends {
            // Built for another backend list: not to be trusted.
            return weight::scan(backends, None);
        }
        let i = self.cycle[self.cursor.fetch_add(1, Ordering::Relaxed) % len] as usize;
        if weight::accept(backends, i) {
            return i;
        }
        // A ramping backend declined its slot. Redrawing from random slots (a draw by
        // configured weight) spreads the declined traffic over the others in proportion to
        // their effective weights, instead of handing it all to the next in the cycle.
        for _ in 0..RAMP_TRIES {
            let j = self.cycle[rng::below(len as u64) as usize] as usize;
            if weight::accept(backends, j) {
                return j;
            }
        }
        weight::scan(backends, None)
    }
}

/// Weights divided by their GCD (the cycle of 2, 4, 6 is the cycle of 1, 2, 3 thrice), then, if
/// they still sum past `limit`, scaled to about `limit`, none below 1.
fn reduce(weights: &[u32], limit: u64) -> Vec<u64> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w))).max(1);
    let mut reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    if total > limit {
        for w in &mut reduced {
            *w = (*w * limit / total).max(1);
        }
        let g = reduced.iter().fold(0, |g, &w| gcd(g, w)).max(1);
        reduced.iter_mut().for_each(|w| *w /= g);
    }
    reduced
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// nginx's smooth cycle for `weights` (each at least 1): `sum(weights)` picks. At step `s`
/// (from 1) backend `i`'s current weight is `s × w_i − total × picks_i`; the largest is picked,
/// the lowest index on a tie, exactly as nginx's scan does.
fn smooth_cycle(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut tournament = Tournament::new(weights);
    (1..=total as i64)
        .map(|step| tournament.pick(step) as u32)
        .collect()
}

const NONE: usize = usize::MAX;
const NEVER: i64 = i64::MAX;

/// A kinetic tournament over the current weights. Between picks each current weight grows
/// linearly, so the winner of a match between two backends can only change once, at a step
/// computable in advance. Every node keeps its match's winner and the earliest step at which
/// anything below it changes; a pick recomputes only expired nodes and the picked leaf's path.
struct Tournament {
    weight: Vec<i64>,
    picks: Vec<i64>,
    total: i64,
    leaves: usize,
    /// Heap layout from 1: node `k` has children `2k` and `2k + 1`; leaves start at `leaves`.
    winner: Vec<usize>,
    expiry: Vec<i64>,
}

impl Tournament {
    fn new(weights: &[u64]) -> Self {
        let leaves = weights.len().next_power_of_two();
        let mut t = Tournament {
            weight: weights.iter().map(|&w| w as i64).collect(),
            picks: vec![0; weights.len()],
            total: weights.iter().sum::<u64>() as i64,
            leaves,
            winner: vec![NONE; 2 * leaves],
            expiry: vec![NEVER; 2 * leaves],
        };
        for i in 0..weights.len() {
            t.winner[leaves + i] = i;
        }
        for node in (1..leaves).rev() {
            t.recompute(node, 1);
        }
        t
    }

    fn current(&self, i: usize, step: i64) -> i64 {
        step * self.weight[i] - self.total * self.picks[i]
    }

    fn beats(&self, a: usize, b: usize, step: i64) -> bool {
        let (ca, cb) = (self.current(a, step), self.current(b, step));
        ca > cb || (ca == cb && a < b)
    }

    /// The first step after `step` at which `loser` beats `winner`, if neither is picked
    /// before. Requires `winner` to beat `loser` at `step`.
    fn overtakes(&self, winner: usize, loser: usize, step: i64) -> i64 {
        let gain = self.weight[loser] - self.weight[winner];
        if gain <= 0 {
            return NEVER;
        }
        // The loser is behind by `gap - gain × s` at step `s`.
        let gap = self.total * (self.picks[loser] - self.picks[winner]);
        debug_assert!(gap >= gain * step, "the winner must be ahead at `step`");
        if loser < winner {
            (gap + gain - 1) / gain
        } else {
            gap / gain + 1
        }
    }

    fn recompute(&mut self, node: usize, step: i64) {
        let (l, r) = (self.winner[2 * node], self.winner[2 * node + 1]);
        let below = self.expiry[2 * node].min(self.expiry[2 * node + 1]);
        let (winner, expiry) = if r == NONE {
            (l, below)
        } else if l == NONE {
            (r, below)
        } else {
            let (w, o) = if self.beats(r, l, step) {
                (r, l)
            } else {
                (l, r)
            };
            (w, below.min(self.overtakes(w, o, step)))
        };
        self.winner[node] = winner;
        self.expiry[node] = expiry;
    }

    /// Brings every node under `node` up to `step`. Leaves never expire.
    fn advance(&mut self, node: usize, step: i64) {
        if self.expiry[node] > step {
            return;
        }
        self.advance(2 * node, step);
        self.advance(2 * node + 1, step);
        self.recompute(node, step);
    }

    fn pick(&mut self, step: i64) -> usize {
        self.advance(1, step);
        let i = self.winner[1];
        self.picks[i] += 1;
        let mut node = (self.leaves + i) / 2;
        while node >= 1 {
            self.recompute(node, step);
            node /= 2;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::Fixed;
    use super::super::{Balancer, Pick};
    use super::*;
    use crate::config::Algorithm;

    /// nginx's algorithm as written (ngx_http_upstream_get_peer), the oracle for the cycle.
    fn nginx(weights: &[u64]) -> Vec<u32> {
        let total: i64 = weights.iter().sum::<u64>() as i64;
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::new();
        for _ in 0..total {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let best = best.unwrap();
            current[best] -= total;
            out.push(best as u32);
        }
        out
    }

    fn picks(wrr: &WeightedRoundRobin, b: &Fixed, count: usize) -> Vec<usize> {
        (0..count).map(|_| wrr.pick(b, &Pick::default())).collect()
    }

    #[test]
    fn five_one_one_is_nginx_order() {
        let b = Fixed::weights(&[5, 1, 1]);
        let balancer = Balancer::new(Algorithm::WeightedRoundRobin, &b.specs());
        let firsts: Vec<usize> = (0..14)
            .map(|_| balancer.select(&b, &Pick::default()).next().unwrap())
            .collect();
        assert_eq!(firsts, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn cycles_match_nginx() {
        let cases: [&[u64]; 6] = [
            &[1],
            &[1, 1, 1],
            &[3, 2],
            &[1, 2, 3, 4],
            &[7, 7, 1, 13, 2],
            &[1000, 999, 1, 500, 250, 3],
        ];
        for weights in cases {
            assert_eq!(smooth_cycle(weights), nginx(weights), "{weights:?}");
        }
    }

    #[test]
    fn weights_are_reduced_by_their_gcd() {
        assert_eq!(reduce(&[2, 4, 6], MAX_CYCLE), [1, 2, 3]);
        assert_eq!(reduce(&[1000, 1000], MAX_CYCLE), [1, 1]);
        let wrr = WeightedRoundRobin::new(&Fixed::weights(&[200, 400, 600]).specs());
        assert_eq!(wrr.cycle.len(), 6);
    }

    #[test]
    fn oversized_cycle_is_scaled_down_in_proportion() {
        let weights = [1000, 999, 1, 500];
        let wrr = WeightedRoundRobin::with_limit(&weights, 100);
        assert!(
            wrr.cycle.len() <= 100 + weights.len(),
            "{}",
            wrr.cycle.len()
        );
        let mut counts = [0u64; 4];
        wrr.cycle.iter().for_each(|&i| counts[i as usize] += 1);
        // 1000 : 999 : 1 : 500 scaled to sum 100 (the light one kept at 1).
        assert_eq!(counts, [40, 39, 1, 20]);
    }

    #[test]
    fn concurrent_picks_keep_exact_proportions() {
        let b = Fixed::weights(&[5, 1, 3]);
        let wrr = WeightedRoundRobin::new(&b.specs());
        const PER_THREAD: usize = 9 * 1000;
        let counts = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| picks(&wrr, &b, PER_THREAD)))
                .collect();
            let mut counts = [0usize; 3];
            for h in handles {
                h.join().unwrap().iter().for_each(|&i| counts[i] += 1);
            }
            counts
        });
        assert_eq!(counts, [5 * 4000, 4000, 3 * 4000]);
    }

    #[test]
    fn ramp_tenth_gets_a_tenth_of_its_weight() {
        let mut b = Fixed::weights(&[1; 10]);
        b.ramps[3] = 0.1;
        let wrr = WeightedRoundRobin::new(&b.specs());
        const PICKS: usize = 200_000;
        let got = picks(&wrr, &b, PICKS);
        let mut counts = [0u64; 10];
        got.iter().for_each(|&i| counts[i] += 1);
        let want = 0.1 / 9.1;
        let share = counts[3] as f64 / PICKS as f64;
        assert!((share - want).abs() < want * 0.15, "{counts:?}");
        // The declined slots spread over the others, not onto the next in the cycle.
        let others = counts.iter().enumerate().filter(|&(i, _)| i != 3);
        for (i, &c) in others {
            let share = c as f64 / PICKS as f64;
            assert!((share - 1.0 / 9.1).abs() < 0.005, "{i}: {counts:?}");
        }
    }

    #[test]
    fn table_for_other_backends_is_not_trusted() {
        let wrr = WeightedRoundRobin::new(&Fixed::weights(&[1, 1]).specs());
        let b = Fixed::weights(&[1, 1, 1]);
        let seen: std::collections::HashSet<usize> = picks(&wrr, &b, 1000).into_iter().collect();
        assert_eq!(seen.len(), 3);
    }

    proptest! {
        #[test]
        fn cycle_is_nginx_order(weights in prop::collection::vec(1u64..=60, 1..16)) {
            prop_assert_eq!(smooth_cycle(&weights), nginx(&weights));
        }

        #[test]
        fn every_window_has_exact_proportions(
            factor in 1u32..=10,
            small in prop::collection::vec(1u32..=100, 1..8),
        ) {
            // A common factor, so the window is that of the weights divided by their GCD.
            let weights: Vec<u32> = small.iter().map(|w| w * factor).collect();
            let b = Fixed::weights(&weights);
            let wrr = WeightedRoundRobin::new(&b.specs());
            let reduced = reduce(&weights, MAX_CYCLE);
            let window = reduced.iter().sum::<u64>() as usize;
            let seq = picks(&wrr, &b, 3 * window);
            let mut counts = vec![0u64; weights.len()];
            seq[..window].iter().for_each(|&i| counts[i] += 1);
            prop_assert_eq!(&counts, &reduced);
            for start in 1..=2 * window {
                counts[seq[start - 1]] -= 1;
                counts[seq[start + window - 1]] += 1;
                prop_assert_eq!(&counts, &reduced, "window from {}", start);
            }
        }

        /// The smoothness nginx's order actually has. It does not promise that a backend with
        /// at most half the weight never comes twice in a row: 39, 15, 24 gives the first two in
        /// a row mid-cycle, and shares down to about 15% can repeat.
        #[test]
        fn picks_never_burst(weights in prop::collection::vec(1u64..=40, 2..10)) {
            let cycle = smooth_cycle(&weights);
            let total = cycle.len();
            let twice: Vec<u32> = cycle.iter().chain(&cycle).copied().collect();
            // At most half the weight: never three in a row, across the cycle's wrap too.
            for k in 0..total {
                let i = twice[k];
                if 2 * weights[i as usize] <= total as u64 {
                    prop_assert!(twice[k + 1] != i || twice[k + 2] != i, "run of 3 at {}", k);
                }
            }
            // Any run of picks gives each backend its weighted share to within 2.
            for len in 1..=total {
                let mut counts = vec![0i64; weights.len()];
                twice[..len].iter().for_each(|&i| counts[i as usize] += 1);
                for start in 0..total {
                    for (i, &c) in counts.iter().enumerate() {
                        let share = (len as u64 * weights[i]) as f64 / total as f64;
                        prop_assert!((c as f64 - share).abs() < 2.0, "{} picks from {}", len, start);
                    }
                    counts[twice[start] as usize] -= 1;
                    counts[twice[start + len] as usize] += 1;
                }
            }
        }

        #[test]
        fn two_backends_alternate_unless_one_outweighs(a in 1u64..=1000, b in 1u64..=1000) {
            let weights = reduce(&[a as u32, b as u32], MAX_CYCLE);
            let cycle = smooth_cycle(&weights);
            let total: u64 = weights.iter().sum();
            for k in 0..cycle.len() {
                let (i, next) = (cycle[k], cycle[(k + 1) % cycle.len()]);
                if 2 * weights[i as usize] <= total {
                    prop_assert_ne!(i, next, "at {}", k);
                }
            }
        }
    }
}
