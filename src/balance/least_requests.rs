//! Least requests: the backend with the fewest requests in flight per unit of effective weight,
//! `(in_flight + 1) / (weight × ramp)`, found by scanning them all. Ties are broken uniformly at
//! random, never by position: with an idle pool every backend ties, and a first-wins rule would
//! send all of that traffic to the first one.
//!
//! The scan is the whole cost. A settled pool (no backend in slow start) of more than eight
//! backends reads each backend's load once, into an integer key in a per-thread scratch buffer,
//! and keeps the least with compare-and-move chains that do not wait on each other, without
//! branching on the loads: the mispredicted branches of a plain argmin-and-count scan cost about
//! 1.5 ns a backend. One of the keys tying with the least is then drawn uniformly: when ties
//! look common (an idle or lightly loaded pool), by drawing random positions until one ties,
//! about one draw per share of ties; otherwise by finding the first and counting those after it
//! (a single least needs nothing more) and, if they are few, walking to a drawn one. With equal
//! weights, when only one of the four running minima (each over every fourth key) ended on the
//! least, every tie is in that lane: its quarter of the keys is counted first, and a single
//! least is returned from there.
//!
//! Equal weights key on the in-flight count itself, so ties are exact. Other weights key on
//! `(in_flight + 1)` times a fixed-point reciprocal of the weight, `2^39 / weight` rounded,
//! which orders loads to within 2^-30 without dividing; keys within one part in 2^20 (about a
//! millionth) of the least count as tied, which keeps exact ties like 1/1 = 2/2 = 3/3 together.
//! A weighted key is never below the backend's reciprocal, so the scan visits the heaviest
//! backends first and stops once the next reciprocal alone is beyond the least key so far: a
//! lightly loaded pool is decided by its few heaviest backends, a pool loaded in proportion to
//! its weights is read in full. The weighted scan also keeps where the least key's group of
//! four starts and the least of the other groups' minima (compare-and-moves on the group's
//! minimum it computes anyway): when that is beyond the tolerance, every tie is in the least's
//! group, and the pick is drawn among its four keys with no second walk. Its loads are tested
//! against the clamp once per group (their bitwise or), clamped only when one is beyond it.
//!
//! Pools of up to eight backends, pools in slow start (ramps change every pick, and reading
//! them costs more than comparing) and the rare pick the fast keys cannot settle exactly (a
//! weighted pick landing on a backend with 2^24 or more requests in flight, which in practice
//! means every backend is unavailable) compare `Load`s exactly instead.

use std::cell::RefCell;
use std::cmp::Ordering;

use super::weight::Load;
use super::{rng, BackendSpec, Backends, Pick};

#[derive(Debug, Default)]
pub struct LeastRequests {
    /// The pool's size when every backend has the same weight (the default, and the usual
    /// least-requests pool); then a settled pool's load order is its in-flight order.
    uniform: Option<usize>,
    /// The backends heaviest first, each with its reciprocal weight `2^39 / weight` rounded:
    /// `(in_flight + 1) ×` that orders loads to within 2^-30 without dividing. Empty when the
    /// weights are equal or one is outside 1 to 1000. Like `uniform`, built from the weights
    /// the pool was built with.
    heaviest_first: Box<[(usize, u64)]>,
    /// For each group of four in `heaviest_first`, the least key below which none of that
    /// group or after it can come within the tolerance: the smallest `l` with
    /// `tied(l) >= ` the group's first reciprocal.
    stops: Box<[u64]>,
}

/// Pools up to this size take the exact scan: a handful of comparisons cost less than the fast
/// path's setup.
const SMALL: usize = 8;

/// In-flight counts at or above this are clamped to it in weighted keys (so that
/// `(in_flight + 1) × reciprocal` stays below 2^63); a pick landing on such a backend is redone
/// exactly.
const CLAMP: u64 = (1 << 24) - 1;
const _: () = assert!(CLAMP & (CLAMP + 1) == 0, "CLAMP is a mask: all ones");

/// Weighted loads within `least >> TOLERANCE` of the least count as tied: one part in 2^20, far
/// above the 2^-30 error of the fixed-point reciprocals.
const TOLERANCE: u32 = 20;

impl LeastRequests {
    pub fn new(specs: &[BackendSpec]) -> Self {
        let uniform = specs.windows(2).all(|w| w[0].weight == w[1].weight);
        let mut heaviest_first: Vec<(usize, u64)> = Vec::new();
        if !uniform && specs.iter().all(|s| (1..=1000).contains(&s.weight)) {
            heaviest_first = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let w = u64::from(s.weight);
                    (i, ((1 << 39) + w / 2) / w)
                })
                .collect();
            heaviest_first.sort_by_key(|&(i, reciprocal)| (reciprocal, i));
        }
        let stops = heaviest_first
            .chunks_exact(4)
            .map(|group| {
                // The smallest l in 0..=r with tied(l) >= r (tied is monotonic, tied(r) >= r).
                let r = group[0].1;
                let (mut lo, mut hi) = (0, r);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if tied(mid) >= r {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                lo
            })
            .collect();
        LeastRequests {
            uniform: uniform.then_some(specs.len()),
            heaviest_first: heaviest_first.into(),
            stops,
        }
    }

    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        let n = backends.len();
        let fast = if n <= SMALL || !backends.settled() {
            None
        } else if self.uniform == Some(n) {
            least_in_flight(backends)
        } else if self.heaviest_first.len() == n {
            least_weighted(&self.heaviest_first, &self.stops, backends)
                .filter(|&i| backends.in_flight(i) < CLAMP)
        } else {
            None
        };
        fast.unwrap_or_else(|| self.exact(backends))
    }

    /// The pick by comparing loads exactly: in-flight counts alone when the pool is settled
    /// with equal weights, `Load`s otherwise.
    fn exact<B: Backends + ?Sized>(&self, backends: &B) -> usize {
        let n = backends.len();
        if self.uniform == Some(n) && backends.settled() {
            least_by(n, |i| backends.in_flight(i), |a: u64, b: u64| a.cmp(&b))
        } else {
            least_by(n, |i| Load::of(backends, i), Load::compare)
        }
    }
}

thread_local! {
    /// Each thread's keys of the pool it is picking from, reused from pick to pick.
    static KEYS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` scratch keys; `None` when they are already in use (a `Backends` that
/// picks from inside `in_flight`).
fn with_keys<T>(len: usize, f: impl FnOnce(&mut [u64]) -> Option<T>) -> Option<T> {
    KEYS.with(|keys| {
        let mut keys = keys.try_borrow_mut().ok()?;
        if keys.len() < len {
            keys.resize(len, 0);
        }
        f(&mut keys[..len])
    })
}

/// Equal weights: a uniformly drawn backend among those with the fewest requests in flight.
fn least_in_flight<B: Backends + ?Sized>(backends: &B) -> Option<usize> {
    let n = backends.len();
    with_keys(n, |keys| {
        // Every load, once, and the least. Four running minima keep the compare-and-move chains
        // independent; reading the fourth backend of each group first lets one bounds check in
        // `in_flight` cover the group.
        let mut least = [u64::MAX; 4];
        let mut groups = keys.chunks_exact_mut(4);
        let mut i = 0;
        for group in &mut groups {
            let last = backends.in_flight(i + 3);
            let loads = [
                backends.in_flight(i),
                backends.in_flight(i + 1),
                backends.in_flight(i + 2),
                last,
            ];
            for ((slot, least), load) in group.iter_mut().zip(&mut least).zip(loads) {
                *slot = load;
                *least = (*least).min(load);
            }
            i += 4;
        }
        for slot in groups.into_remainder() {
            *slot = backends.in_flight(i);
            least[0] = least[0].min(*slot);
            i += 1;
        }
        let minimum = least[0].min(least[1]).min(least[2].min(least[3]));
        // Most of the four minima ending on the least (every one, in an idle pool) hints that
        // ties are common.
        let holding = least.iter().filter(|&&l| l == minimum).count();
        if holding == 1 {
            // Every tie is in the one lane whose minimum is the least (the remainder counts as
            // lane 0): a quarter of the keys settles whether the least is the only one.
            let lane = least.iter().position(|&l| l == minimum).unwrap_or(0);
            if let Some(j) = only_tie_in_lane(keys, lane, minimum) {
                return Some(j);
            }
        }
        draw_tie(keys, minimum, holding >= 3)
    })
}

/// Other weights: a uniformly drawn backend among those whose key is within one part in 2^20
/// of the least, as an index into the pool.
fn least_weighted<B: Backends + ?Sized>(
    heaviest_first: &[(usize, u64)],
    stops: &[u64],
    backends: &B,
) -> Option<usize> {
    let n = heaviest_first.len();
    let key = |&(i, reciprocal): &(usize, u64)| (backends.in_flight(i).min(CLAMP) + 1) * reciprocal;
    let position = with_keys(n, |keys| {
        // The least key, the start of the group of four that holds its first occurrence, and
        // the least of the other groups' minima (a group's minimum equal to the least counts):
        // when that is beyond the tolerance, every tie is in the least's own group, and the
        // pick is drawn there without a second walk over the keys.
        let mut least = u64::MAX;
        let mut second = u64::MAX;
        let mut at = 0;
        let mut scanned = 0;
        let groups = keys.chunks_exact_mut(4).zip(heaviest_first.chunks_exact(4));
        for ((group, heaviest), &stop) in groups.zip(stops) {
            // No backend from here on can come within the tolerance of `least`.
            if least < stop {
                break;
            }
            let loads = [0, 1, 2, 3].map(|j| backends.in_flight(heaviest[j].0));
            // One test for the group instead of a clamp per key (CLAMP is all ones).
            let [a, b, c, d] = if (loads[0] | loads[1] | loads[2] | loads[3]) <= CLAMP {
                [0, 1, 2, 3].map(|j| (loads[j] + 1) * heaviest[j].1)
            } else {
                [0, 1, 2, 3].map(|j| (loads[j].min(CLAMP) + 1) * heaviest[j].1)
            };
            group.copy_from_slice(&[a, b, c, d]);
            let m = a.min(b).min(c.min(d));
            second = second.min(least.max(m));
            at = if m < least { scanned } else { at };
            least = least.min(m);
            scanned += 4;
        }
        while scanned < n && heaviest_first[scanned].1 <= tied(least) {
            let k = key(&heaviest_first[scanned]);
            keys[scanned] = k;
            second = second.min(least.max(k));
            at = if k < least { scanned } else { at };
            least = least.min(k);
            scanned += 1;
        }
        let top = tied(least);
        if second > top {
            // Every tie is among the (up to) four keys from `at`, which hold the least.
            let group = &keys[at..scanned.min(at + 4)];
            return only_tie(group, top)
                .or_else(|| draw_tie(group, top, false))
                .map(|j| at + j);
        }
        draw_tie(&keys[..scanned], top, false)
    })?;
    Some(heaviest_first[position].0)
}

/// The position of the only key at most `top` in `keys`, if exactly one is.
fn only_tie(keys: &[u64], top: u64) -> Option<usize> {
    let mut count = 0;
    let mut at = 0;
    for (j, &k) in keys.iter().enumerate() {
        let tie = k <= top;
        count += usize::from(tie);
        at = if tie { j } else { at };
    }
    (count == 1).then_some(at)
}

/// The position of the only key equal to `least` among those `least_in_flight` kept in `lane`
/// (positions `lane`, `lane + 4`, ... of the groups of four, and for lane 0 the remainder
/// too), if exactly one is; `None` also when there are more (then `draw_tie` decides).
fn only_tie_in_lane(keys: &[u64], lane: usize, least: u64) -> Option<usize> {
    let mut count = 0;
    let mut at = 0;
    let mut groups = keys.chunks_exact(4);
    for (g, group) in (&mut groups).enumerate() {
        let tie = group[lane & 3] == least;
        count += usize::from(tie);
        at = if tie { 4 * g + (lane & 3) } else { at };
    }
    if lane == 0 {
        let start = keys.len() - groups.remainder().len();
        for (j, &k) in groups.remainder().iter().enumerate() {
            let tie = k == least;
            count += usize::from(tie);
            at = if tie { start + j } else { at };
        }
    }
    (count == 1).then_some(at)
}

/// The keys that count as tied with a least key of `least`.
fn tied(least: u64) -> u64 {
    least.saturating_add(least >> TOLERANCE)
}

/// How many random positions a pick whose ties look common tries before counting them.
const DRAWS: usize = 16;

/// A uniformly drawn position among the keys at most `top`. `common`: ties look common, so
/// random positions are tried before counting them.
fn draw_tie(keys: &[u64], top: u64, common: bool) -> Option<usize> {
    let n = keys.len();
    // A random position holding a tie: each draw is uniform over all positions, so the first
    // that ties is uniform over the ties.
    let draw = || {
        let j = rng::below(n as u64) as usize;
        (keys[j] <= top).then_some(j)
    };
    if common {
        if let Some(j) = (0..DRAWS).find_map(|_| draw()) {
            return Some(j);
        }
    }
    // The first tie, then how many follow it, in four independent counts so that the compares
    // do not wait on each other. A loaded pool usually has one: found without a second walk.
    let first = keys.iter().position(|&k| k <= top)?;
    let rest = &keys[first + 1..];
    let mut counts = [0usize; 4];
    let mut fours = rest.chunks_exact(4);
    for four in &mut fours {
        for (count, &k) in counts.iter_mut().zip(four) {
            *count += usize::from(k <= top);
        }
    }
    for &k in fours.remainder() {
        counts[0] += usize::from(k <= top);
    }
    match counts.iter().sum::<usize>() + 1 {
        1 => Some(first),
        ties if ties == n => Some(rng::below(n as u64) as usize),
        // At least one position in eight ties: eight draws or fewer on average.
        ties if ties * 8 >= n && n > 32 => (0..).find_map(|_| draw()),
        // Rare ties, or few keys: walk to a drawn one.
        ties => {
            let mut r = rng::below(ties as u64) as usize;
            if r == 0 {
                return Some(first);
            }
            rest.iter()
                .position(|&k| {
                    r -= usize::from(k <= top);
                    r == 0 && k <= top
                })
                .map(|j| first + 1 + j)
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
        let cases: [(&[u32], &[u64], usize); 7] = [
            (&[1, 1, 1], &[5, 2, 7], 1),
            (&[1, 1, 1], &[0, 3, 3], 0),
            (&[1, 1, 1], &[3, 3, 0], 2),
            // 2/1 against 3/2: the heavier backend has more room.
            (&[1, 2], &[1, 2], 1),
            // 11/10 against 1/1: a busy heavy backend loses to an idle light one.
            (&[1, 10, 1], &[1, 10, 0], 2),
            // Just past the exact scan's size, on the keyed scans: an idle pool's heaviest
            // backend (a case proptest found), and equal weights.
            (&[1, 1, 1, 1, 1, 1, 1, 1, 2], &[0; 9], 8),
            (&[1; 9], &[2, 2, 2, 2, 2, 2, 2, 2, 1], 8),
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

    /// Asserts that `got` (picks per backend, out of `picks`) gives each of `tied` a share
    /// within five standard deviations of an even one and the others none.
    fn assert_shared_evenly(got: &[u64], tied: &[usize], picks: usize, case: &str) {
        let even = 1.0 / tied.len() as f64;
        let tolerance = 5.0 * (even * (1.0 - even) / picks as f64).sqrt();
        for (i, &count) in got.iter().enumerate() {
            if tied.contains(&i) {
                let share = count as f64 / picks as f64;
                assert!(
                    (share - even).abs() <= tolerance,
                    "{case}: backend {i} took {share:.4}, want {even:.4} ± {tolerance:.4}: {got:?}"
                );
            } else {
                assert_eq!(count, 0, "{case}: backend {i} is not tied: {got:?}");
            }
        }
    }

    #[test]
    fn ties_are_shared_evenly_on_the_fast_path_whatever_their_position() {
        // 100 backends of equal weight, all busy but the tied ones: ties packed at either end,
        // spread, one in each of the scan's four running minima (which makes them look common),
        // all in the same one, a fifth of the pool in a row or every fifth, and every backend.
        let every_fifth: Vec<usize> = (0..100).step_by(5).collect();
        let first_fifth: Vec<usize> = (0..20).collect();
        let all: Vec<usize> = (0..100).collect();
        let cases: [&[usize]; 9] = [
            &[0, 1, 2],
            &[97, 98, 99],
            &[0, 50, 99],
            &[0, 1, 2, 3],
            &[4, 8, 12, 16],
            &[33],
            &every_fifth,
            &first_fifth,
            &all,
        ];
        const PICKS: usize = 40_000;
        for tied in cases {
            let mut b = Fixed::weights(&[1; 100]);
            b.in_flight = vec![3; 100];
            for &i in tied {
                b.in_flight[i] = 1;
            }
            let got = counts(&b, PICKS);
            assert_shared_evenly(&got, tied, PICKS, &format!("{} tied", tied.len()));
        }
    }

    #[test]
    fn weighted_ties_are_shared_evenly_on_the_fast_path() {
        // Weights 1 to 30; three exact ties at a load of 1 (1/1, 3/3, 30/30), the others at 2:
        // the scan reads the heaviest first and must reach the lightest.
        let weights: Vec<u32> = (1..=30).collect();
        let mut b = Fixed::weights(&weights);
        b.in_flight = weights.iter().map(|&w| 2 * u64::from(w) - 1).collect();
        let tied = [0, 2, 29];
        for &i in &tied {
            b.in_flight[i] = u64::from(weights[i]) - 1;
        }
        const PICKS: usize = 30_000;
        let got = counts(&b, PICKS);
        assert_shared_evenly(&got, &tied, PICKS, "spread weights");

        // Two idle heaviest backends at either end of the pool: the scan stops after them.
        let mut weights = vec![10; 20];
        (weights[0], weights[19]) = (1000, 1000);
        let mut b = Fixed::weights(&weights);
        b.in_flight = vec![0; 20];
        let got = counts(&b, PICKS);
        assert_shared_evenly(&got, &[0, 19], PICKS, "idle heaviest");
    }

    #[test]
    fn a_single_least_is_found_wherever_it_is() {
        // Every position of pools around the sizes where the scans' groups of four and their
        // remainder change, as the only least; the others busier, with ties among them. Equal
        // weights, and weights spread with loads in proportion to them.
        for n in [9, 10, 11, 12, 13, 16, 17, 31, 100, 103] {
            for p in 0..n {
                let mut b = Fixed::weights(&vec![1; n]);
                b.in_flight = (0..n).map(|i| 2 + (i * 7 % 5) as u64).collect();
                b.in_flight[p] = 1;
                let got = counts(&b, 20)[p];
                assert_eq!(got, 20, "equal weights, {n} backends, least {p}");

                let weights: Vec<u32> = (0..n).map(|i| (i * 379 % 1000) as u32 + 1).collect();
                let mut b = Fixed::weights(&weights);
                b.in_flight = weights.iter().map(|&w| 3 * u64::from(w)).collect();
                b.in_flight[p] = u64::from(weights[p]);
                let got = counts(&b, 20)[p];
                assert_eq!(got, 20, "weights spread, {n} backends, least {p}");
            }
        }
    }

    #[test]
    fn an_unavailable_backend_beside_the_least_does_not_hide_it() {
        // Weights 1 to 20, loads in proportion but one backend least; the heaviest (read first,
        // in the first group of four) unavailable, its load beyond the fast keys' clamp.
        let weights: Vec<u32> = (1..=20).collect();
        for p in 0..19 {
            let mut b = Fixed::weights(&weights);
            b.in_flight = weights.iter().map(|&w| 3 * u64::from(w)).collect();
            b.in_flight[19] = 1 << 40;
            b.in_flight[p] = u64::from(weights[p]);
            assert_eq!(counts(&b, 20)[p], 20, "least {p}");
        }
    }

    #[test]
    fn two_weighted_ties_next_to_each_other_are_shared_evenly() {
        // Weights 1 to 12, all at a load of 2 but the two heaviest, at 1: the scan reads them
        // first, in the same group of four, and finds no other tie.
        let weights: Vec<u32> = (1..=12).collect();
        let mut b = Fixed::weights(&weights);
        b.in_flight = weights.iter().map(|&w| 2 * u64::from(w) - 1).collect();
        for i in [10, 11] {
            b.in_flight[i] = u64::from(weights[i]) - 1;
        }
        const PICKS: usize = 30_000;
        let got = counts(&b, PICKS);
        assert_shared_evenly(&got, &[10, 11], PICKS, "two heaviest");

        // Equal weights: two ties in the same lane of the scan (positions 1 and 5), and in the
        // remainder after the groups of four (positions 0 and 12).
        for tied in [[1, 5], [0, 12]] {
            let mut b = Fixed::weights(&[1; 13]);
            b.in_flight = vec![4; 13];
            for i in tied {
                b.in_flight[i] = 2;
            }
            let got = counts(&b, PICKS);
            assert_shared_evenly(&got, &tied, PICKS, &format!("{tied:?}"));
        }
    }

    #[test]
    fn loads_beyond_the_fast_keys_are_ordered_exactly() {
        // Every backend unavailable: the pool adds 2^40 to their in-flight counts. The least
        // loaded of them must still win, with equal weights and with others.
        for weights in [vec![1; 20], (1..=20).collect::<Vec<u32>>()] {
            let mut b = Fixed::weights(&weights);
            b.in_flight = (0..20).map(|i| (1 << 40) + 2 * (20 - i)).collect();
            let want = (0..20)
                .min_by(|&i, &j| Load::of(&b, i).compare(Load::of(&b, j)))
                .unwrap();
            assert_eq!(counts(&b, 200)[want], 200, "{weights:?}");
        }
    }

    /// Backends whose in-flight counts are read by picking from another pool: a pick made
    /// while another is under way on the same thread.
    struct Nested(Fixed);

    impl Backends for Nested {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn weight(&self, i: usize) -> u32 {
            self.0.weight(i)
        }
        fn ramp(&self, i: usize) -> f64 {
            self.0.ramp(i)
        }
        fn settled(&self) -> bool {
            true
        }
        fn in_flight(&self, i: usize) -> u64 {
            let mut inner = Fixed::weights(&[1; 12]);
            inner.in_flight = (0..12).map(|j| u64::from(j != 7)).collect();
            let lr = LeastRequests::new(&inner.specs());
            assert_eq!(lr.pick(&inner, &Pick::default()), 7);
            self.0.in_flight(i)
        }
        fn latency(&self, i: usize, now: std::time::Instant) -> Option<f64> {
            self.0.latency(i, now)
        }
    }

    #[test]
    fn a_pick_inside_a_pick_still_picks_the_least() {
        let mut b = Fixed::weights(&[1; 16]);
        b.in_flight = (0..16).map(|i| 20 - i).collect();
        let nested = Nested(b.clone());
        let lr = LeastRequests::new(&b.specs());
        assert_eq!(lr.pick(&nested, &Pick::default()), 15);
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
