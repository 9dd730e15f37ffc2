//! Power of two choices: two distinct candidates drawn by effective weight, and the one with
//! fewer requests in flight per unit of effective weight wins. Nearly as even as scanning every
//! backend (`least_requests`) at O(1) cost, and it never herds: a backend that just became the
//! least loaded is only offered to the picks that happen to draw it.

use std::cmp::Ordering;

use super::random::AliasTable;
use super::weight::Load;
use super::{rng, BackendSpec, Backends, Pick};

#[derive(Debug)]
pub struct PowerOfTwo {
    table: AliasTable,
}

impl PowerOfTwo {
    pub fn new(specs: &[BackendSpec]) -> Self {
        PowerOfTwo {
            table: AliasTable::new(specs.iter().map(|s| s.weight)),
        }
    }

    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        if backends.len() < 2 {
            return 0;
        }
        let a = self.table.sample_effective(backends, None);
        let c = self.table.sample_effective(backends, Some(a));
        match Load::of(backends, a).compare(Load::of(backends, c)) {
            Ordering::Less => a,
            Ordering::Greater => c,
            Ordering::Equal if rng::below(2) == 0 => a,
            Ordering::Equal => c,
        }
    }
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
        let balancer = Balancer::new(Algorithm::PowerOfTwo, &b.specs());
        let mut counts = vec![0u64; b.weights.len()];
        for _ in 0..picks {
            counts[balancer.select(b, &Pick::default()).next().unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn idle_beats_busy_every_time() {
        for in_flight in [[0, 1], [1, 0], [0, 50]] {
            let mut b = Fixed::weights(&[1, 1]);
            b.in_flight = in_flight.to_vec();
            let idle = in_flight.iter().position(|&f| f == 0).unwrap();
            assert_eq!(counts(&b, 1000)[idle], 1000, "{in_flight:?}");
        }
    }

    #[test]
    fn single_backend_always_wins() {
        let b = Fixed::weights(&[3]);
        assert_eq!(counts(&b, 10), [10]);
    }

    #[test]
    fn share_skews_to_the_less_loaded() {
        let mut b = Fixed::weights(&[1; 4]);
        b.in_flight = vec![3, 0, 2, 1];
        const PICKS: usize = 60_000;
        let got = counts(&b, PICKS);
        // Each of the 6 pairs equally likely; a backend wins the pairs with busier partners.
        let want = [0.0, 3.0 / 6.0, 1.0 / 6.0, 2.0 / 6.0];
        for (i, want) in want.iter().enumerate() {
            let share = got[i] as f64 / PICKS as f64;
            assert!((share - want).abs() < 0.015, "{got:?}");
        }
    }

    #[test]
    fn ties_are_shared_evenly() {
        let b = Fixed::weights(&[2, 2, 2]);
        let got = counts(&b, 60_000);
        assert!(
            got.iter().all(|&c| (19_000..21_000).contains(&c)),
            "{got:?}"
        );
    }

    #[test]
    fn weights_set_the_shares_under_load() {
        let b = Fixed::weights(&[1, 3, 6]);
        let p2c = PowerOfTwo::new(&b.specs());
        let shares = closed_loop::shares(b, 1000, 50_000, |b| p2c.pick(b, &Pick::default()));
        for (share, want) in shares.iter().zip([0.1, 0.3, 0.6]) {
            assert!((share - want).abs() < 0.02, "{shares:?}");
        }
    }

    #[test]
    fn ramp_tenth_gets_a_tenth_of_its_share() {
        let mut b = Fixed::weights(&[1; 10]);
        let p2c = PowerOfTwo::new(&b.specs());
        b.ramps[0] = 0.1;
        let shares = closed_loop::shares(b, 1000, 50_000, |b| p2c.pick(b, &Pick::default()));
        let relative = shares[0] / 0.1;
        assert!((0.07..0.13).contains(&relative), "{shares:?}");
    }

    proptest! {
        #[test]
        fn the_busiest_never_wins(
            backends in prop::collection::vec((1u32..=1000, 0u64..50), 2..30),
        ) {
            let mut b = Fixed::weights(&backends.iter().map(|&(w, _)| w).collect::<Vec<_>>());
            b.in_flight = backends.iter().map(|&(_, f)| f).collect();
            // The strictly busiest per weight, if there is one, loses against any partner.
            let n = b.weights.len();
            let load = |i| Load::of(&b, i);
            let busiest = (0..n).find(|&i| {
                (0..n).all(|j| j == i || load(i).compare(load(j)) == Ordering::Greater)
            });
            let p2c = PowerOfTwo::new(&b.specs());
            for _ in 0..100 {
                let i = p2c.pick(&b, &Pick::default());
                prop_assert!(Some(i) != busiest);
            }
        }
    }
}
