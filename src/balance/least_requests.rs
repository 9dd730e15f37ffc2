//! Least requests: the backend with the fewest requests in flight per unit of effective weight,
//! `(in_flight + 1) / (weight × ramp)`, found by scanning them all. Ties are broken uniformly at
//! random, never by position: with an idle pool every backend ties, and a first-wins rule would
//! send all of that traffic to the first one.
//!
//! The scan is the whole cost, so it is kept tight: one pass finds the least load and counts the
//! backends sharing it, and only when several do does a second pass walk to a randomly drawn one
//! of them. A pool of equal weights with no backend in slow start compares in-flight counts
//! alone; any other pays for the cross-multiplied effective weights of `Load`.

use std::cmp::Ordering;

use super::weight::Load;
use super::{rng, BackendSpec, Backends, Pick};

#[derive(Debug, Default)]
pub struct LeastRequests {
    /// The pool's size when every backend has the same weight (the default, and the usual
    /// least-requests pool); then a settled pool's load order is its in-flight order.
    uniform: Option<usize>,
}

impl LeastRequests {
    pub fn new(specs: &[BackendSpec]) -> Self {
        let uniform = specs.windows(2).all(|w| w[0].weight == w[1].weight);
        LeastRequests {
            uniform: uniform.then_some(specs.len()),
        }
    }

    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        let n = backends.len();
        if self.uniform == Some(n) && backends.settled() {
            least_by(n, |i| backends.in_flight(i), |a: u64, b: u64| a.cmp(&b))
        } else {
            least_by(n, |i| Load::of(backends, i), Load::compare)
        }
    }
}

/// The index with the least `load` (by `compare`), uniformly among those tied for it. `n` > 0.
fn least_by<L: Copy>(
    n: usize,
    load: impl Fn(usize) -> L,
    compare: impl Fn(L, L) -> Ordering,
) -> usize {
    // Pass 1: the first backend with the least load, and how many share that load.
    let mut best = 0;
    let mut best_load = load(0);
    let mut ties: u64 = 1;
    for i in 1..n {
        let l = load(i);
        match compare(l, best_load) {
            Ordering::Less => {
                best = i;
                best_load = l;
                ties = 1;
            }
            Ordering::Equal => ties += 1,
            Ordering::Greater => {}
        }
    }
    if ties == 1 {
        return best;
    }
    // Pass 2: the k-th of the tied, every one equally likely. Ties all lie at or after `best`.
    // Counts move while we scan (other workers place and finish requests); if the k-th tie is
    // gone by now, the first one stands: it was a right answer a moment ago.
    let mut k = rng::below(ties);
    for i in best..n {
        if compare(load(i), best_load) == Ordering::Equal {
            if k == 0 {
                return i;
            }
            k -= 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{Fixed, Unsettled};
    use super::super::weight::closed_loop;
    use super::super::{Balancer, Pick};
    use super::*;
    use crate::config::Algorithm;

    fn counts(b: &Fixed, picks: usize) -> Vec<u64> {
        let balancer = Balancer::new(Algorithm::LeastRequests, &b.specs());
        let mut counts = vec![0u64; b.weights.len()];
        for _ in 0..picks {
            counts[balancer.select(b, &Pick::default()).next().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn picks_the_least_loaded() {
        // (weights, in flight, the only right pick)
        let cases: [(&[u32], &[u64], usize); 5] = [
            (&[1, 1, 1], &[5, 2, 7], 1),
            (&[1, 1, 1], &[0, 3, 3], 0),
            (&[1, 1, 1], &[3, 3, 0], 2),
            // 2/1 against 3/2: the heavier backend has more room.
            (&[1, 2], &[1, 2], 1),
            // 11/10 against 1/1: a busy heavy backend loses to an idle light one.
            (&[1, 10, 1], &[1, 10, 0], 2),
        ];
        for (weights, in_flight, want) in cases {
            let mut b = Fixed::weights(weights);
            b.in_flight = in_flight.to_vec();
            assert_eq!(counts(&b, 200)[want], 200, "{weights:?} {in_flight:?}");
        }
    }

    #[test]
    fn ties_are_shared_evenly_whatever_their_position() {
        let mut b = Fixed::weights(&[1; 7]);
        b.in_flight = vec![0, 4, 4, 0, 4, 4, 0];
        const PICKS: usize = 60_000;
        let got = counts(&b, PICKS);
        for i in [1, 2, 4, 5] {
            assert_eq!(got[i], 0, "{got:?}");
        }
        for i in [0, 3, 6] {
            let share = got[i] as f64 / PICKS as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.015, "{got:?}");
        }
    }

    #[test]
    fn exact_ties_across_weights_are_shared_evenly_on_both_paths() {
        // 1/1 = 3/3 = 2/2: three backends of different weights tie exactly; the fourth is busy.
        let mut b = Fixed::weights(&[1, 3, 2, 1]);
        b.in_flight = vec![0, 2, 1, 5];
        let lr = LeastRequests::new(&b.specs());
        const PICKS: usize = 60_000;
        for settled in [true, false] {
            let mut got = [0u64; 4];
            for _ in 0..PICKS {
                let i = if settled {
                    lr.pick(&b, &Pick::default())
                } else {
                    lr.pick(&Unsettled(&b), &Pick::default())
                };
                got[i] += 1;
            }
            assert_eq!(got[3], 0, "{got:?}");
            for share in got[..3].iter().map(|&c| c as f64 / PICKS as f64) {
                assert!(
                    (share - 1.0 / 3.0).abs() < 0.015,
                    "settled {settled}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn idle_pool_spreads_over_every_backend() {
        let b = Fixed::weights(&[1; 100]);
        let got = counts(&b, 100_000);
        // 1000 expected each; 5 standard deviations is about 160.
        assert!(got.iter().all(|&c| (840..1160).contains(&c)), "{got:?}");
    }

    #[test]
    fn weights_set_the_shares_under_load() {
        let b = Fixed::weights(&[1, 3, 6]);
        let lr = LeastRequests::new(&b.specs());
        let shares = closed_loop::shares(b, 1000, 50_000, |b| lr.pick(b, &Pick::default()));
        for (share, want) in shares.iter().zip([0.1, 0.3, 0.6]) {
            assert!((share - want).abs() < 0.02, "{shares:?}");
        }
    }

    #[test]
    fn ramp_tenth_gets_a_tenth_of_its_share() {
        let mut b = Fixed::weights(&[1; 10]);
        b.ramps[0] = 0.1;
        let lr = LeastRequests::new(&b.specs());
        let shares = closed_loop::shares(b, 1000, 50_000, |b| lr.pick(b, &Pick::default()));
        // Settled it would take 10%; ramping at 0.1 about 1%.
        let relative = shares[0] / 0.1;
        assert!((0.07..0.13).contains(&relative), "{shares:?}");
    }

    proptest! {
        #[test]
        fn pick_has_the_minimum_score(
            backends in prop::collection::vec((1u32..=1000, 0u64..50), 1..40),
        ) {
            let mut b = Fixed::weights(&backends.iter().map(|&(w, _)| w).collect::<Vec<_>>());
            b.in_flight = backends.iter().map(|&(_, f)| f).collect();
            // Both paths, the settled one and the one reading ramps (all 1 here).
            let lr = LeastRequests::new(&b.specs());
            let picks = [
                lr.pick(&b, &Pick::default()),
                lr.pick(&Unsettled(&b), &Pick::default()),
            ];
            for i in picks {
                // Exact comparison in integers: (f_i + 1) / w_i ≤ (f_j + 1) / w_j.
                for j in 0..backends.len() {
                    let lhs = (b.in_flight[i] + 1) * u64::from(b.weights[j]);
                    let rhs = (b.in_flight[j] + 1) * u64::from(b.weights[i]);
                    prop_assert!(lhs <= rhs, "picked {} over {}", i, j);
                }
            }
        }

        #[test]
        fn equal_weights_pick_has_the_fewest_in_flight(
            weight in 1u32..=1000,
            in_flight in prop::collection::vec(0u64..5, 1..40),
        ) {
            let mut b = Fixed::weights(&vec![weight; in_flight.len()]);
            b.in_flight = in_flight.clone();
            let least = *in_flight.iter().min().unwrap();
            let lr = LeastRequests::new(&b.specs());
            prop_assert_eq!(in_flight[lr.pick(&b, &Pick::default())], least);
            prop_assert_eq!(in_flight[lr.pick(&Unsettled(&b), &Pick::default())], least);
        }
    }
}
