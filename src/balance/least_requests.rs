//! Least requests: the backend with the fewest requests in flight per unit of effective weight,
//! `(in_flight + 1) / (weight × ramp)`, found by scanning them all. Ties are broken uniformly at
//! random, never by position: with an idle pool every backend ties, and a first-wins rule would
//! send all of that traffic to the first one.

use std::cmp::Ordering;

use super::weight::Load;
use super::{rng, Backends, Pick};

#[derive(Debug, Default)]
pub struct LeastRequests;

impl LeastRequests {
    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        let mut best = 0;
        let mut best_load = Load::of(backends, 0);
        // Reservoir sampling of one among the tied: the t-th tie replaces the choice with
        // probability 1/t. Rather than a draw per tie (an idle pool ties everywhere), the tie
        // number of the next replacement is drawn ahead; 0 = not drawn yet.
        let mut ties: u64 = 1;
        let mut next_swap: u64 = 0;
        for i in 1..backends.len() {
            let load = Load::of(backends, i);
            match load.compare(best_load) {
                Ordering::Less => {
                    best = i;
                    best_load = load;
                    ties = 1;
                    next_swap = 0;
                }
                Ordering::Equal => {
                    ties += 1;
                    if next_swap == 0 {
                        next_swap = next_replacement(1);
                    }
                    if ties == next_swap {
                        best = i;
                        next_swap = next_replacement(ties);
                    }
                }
                Ordering::Greater => {}
            }
        }
        best
    }
}

/// With `seen` ties so far, the tie number that next replaces the choice. Replacing the t-th
/// with probability 1/t means none of ties `seen+1 ..= m` replaces with probability seen/m;
/// `floor(seen / u) + 1` for uniform `u` in (0, 1] has exactly that tail. Expected draws per
/// scan: about ln(ties) instead of ties.
fn next_replacement(seen: u64) -> u64 {
    let u = 1.0 - rng::unit();
    // `as` truncates, which is `floor` here, and saturates for tiny `u`: no replacement this
    // scan, as the tail says.
    (seen as f64 / u) as u64 + 1
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::Fixed;
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
    fn idle_pool_spreads_over_every_backend() {
        let b = Fixed::weights(&[1; 100]);
        let got = counts(&b, 100_000);
        // 1000 expected each; 5 standard deviations is about 160.
        assert!(got.iter().all(|&c| (840..1160).contains(&c)), "{got:?}");
    }

    #[test]
    fn weights_set_the_shares_under_load() {
        let b = Fixed::weights(&[1, 3, 6]);
        let shares =
            closed_loop::shares(b, 1000, 50_000, |b| LeastRequests.pick(b, &Pick::default()));
        for (share, want) in shares.iter().zip([0.1, 0.3, 0.6]) {
            assert!((share - want).abs() < 0.02, "{shares:?}");
        }
    }

    #[test]
    fn ramp_tenth_gets_a_tenth_of_its_share() {
        let mut b = Fixed::weights(&[1; 10]);
        b.ramps[0] = 0.1;
        let shares =
            closed_loop::shares(b, 1000, 50_000, |b| LeastRequests.pick(b, &Pick::default()));
        // Settled it would take 10%; ramping at 0.1 about 1%.
        let relative = shares[0] / 0.1;
        assert!((0.07..0.13).contains(&relative), "{shares:?}");
    }

    #[test]
    fn next_replacement_is_always_later() {
        for seen in [1, 2, 10, 1 << 40] {
            for _ in 0..1000 {
                assert!(next_replacement(seen) > seen);
            }
        }
    }

    proptest! {
        #[test]
        fn pick_has_the_minimum_score(
            backends in prop::collection::vec((1u32..=1000, 0u64..50), 1..40),
        ) {
            let mut b = Fixed::weights(&backends.iter().map(|&(w, _)| w).collect::<Vec<_>>());
            b.in_flight = backends.iter().map(|&(_, f)| f).collect();
            let i = LeastRequests.pick(&b, &Pick::default());
            // Exact comparison in integers: (f_i + 1) / w_i ≤ (f_j + 1) / w_j.
            for j in 0..backends.len() {
                let lhs = (b.in_flight[i] + 1) * u64::from(b.weights[j]);
                let rhs = (b.in_flight[j] + 1) * u64::from(b.weights[i]);
                prop_assert!(lhs <= rhs, "picked {} over {}", i, j);
            }
        }
    }
}
