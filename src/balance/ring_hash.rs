//! Consistent hashing on a Ketama-style ring: each backend owns points on a 64-bit circle, and a
//! request's hash key goes to the owner of the first point at or after it (wrapping around).
//! Removing a backend hands only its own arcs to its clockwise neighbours; adding one takes
//! keys only from the arcs its new points split. Requests without a key get a random key, so
//! they spread in proportion to weight like keyed ones.
//!
//! Slow start is ignored: applying `ramp` would mean moving keys off a ramping backend and back
//! again as it warms up, breaking the affinity that is the reason to hash at all (Envoy does not
//! apply slow start to its hashing balancers either). A hashed pool trades warm-up for
//! stickiness.

use std::fmt::Write;

use super::hash::hash;
use super::{rng, BackendSpec, Backends, Pick};

/// Points for a backend of the pool's smallest weight; a backend of weight `w` gets
/// `w / min_weight` times as many. A backend's share of the circle deviates from its weight's
/// share by about `1 / sqrt(points)` relative (the arcs are exponentially distributed), so 4096
/// points keep it within ~1.6% relative, half a percentage point at three backends. Ketama's 160
/// would leave ~8%, which shows as a 1/N + 3% key movement with three backends.
const POINTS_PER_MIN_WEIGHT: u64 = 4096;

/// The most points a ring holds (12 bytes each plus 1 byte of index): beyond it every backend's
/// count is scaled down. Only pools of more than 256 equal backends reach it, and there each
/// backend's share is small enough that fewer points still balance it; the scaling moves a few
/// extra keys when such a pool changes size.
const MAX_RING: u64 = 1 << 20;

#[derive(Debug)]
pub struct RingHash {
    /// The circle, sorted; `owners[i]` is the backend owning `points[i]`.
    points: Box<[u64]>,
    owners: Box<[u32]>,
    /// `starts[j]` is the first point at or above `j << shift`: a key's top bits find its few
    /// candidate points without a binary search over the whole ring (which would cost ~20
    /// cache misses on a large one).
    starts: Box<[u32]>,
    shift: u32,
    backends: usize,
}

impl RingHash {
    /// Builds the ring for `specs` (in pool order). Points are placed by each backend's `id`, so
    /// a backend keeps its keys whatever its position in the pool.
    pub fn new(specs: &[BackendSpec]) -> RingHash {
        let counts = point_counts(specs);
        let total: u64 = counts.iter().sum();
        let mut ring: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        let mut name = String::new();
        for (i, (spec, &count)) in specs.iter().zip(&counts).enumerate() {
            for n in 0..count {
                name.clear();
                let _ = write!(name, "{}-{n}", spec.id);
                ring.push((hash(name.as_bytes()), i as u32));
            }
        }
        // Equal points (a 64-bit collision) are ordered by id, not pool position, so which
        // backend wins one does not depend on the order the backends are listed in.
        ring.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| specs[a.1 as usize].id.cmp(&specs[b.1 as usize].id))
        });
        let points: Box<[u64]> = ring.iter().map(|&(p, _)| p).collect();
        let owners: Box<[u32]> = ring.iter().map(|&(_, o)| o).collect();
        // About four points per bucket: one cache line of candidates.
        let bits = (points.len() / 4).max(2).ilog2().min(24);
        let shift = 64 - bits;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for bucket in 0..1u64 << bits {
            let low = bucket << shift;
            while at < points.len() && points[at] < low {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(points.len() as u32);
        RingHash {
            points,
            owners,
            starts: starts.into_boxed_slice(),
            shift,
            backends: specs.len(),
        }
    }

    /// The owner of the request's key; a random key when the request has none.
    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, pick: &Pick) -> usize {
        let len = backends.len();
        if self.points.is_empty() || self.backends != len {
            // Not built for these backends (never expected: a pool builds its balancer from
            // its own list); any index is better than one out of range.
            return rng::below(len as u64) as usize;
        }
        let key = pick.key.unwrap_or_else(rng::next_u64);
        self.owners[self.position(key)] as usize
    }

    /// Distinct backends clockwise from `key`: its owner (what `pick` chooses), then the owner
    /// of each following arc not seen yet, so a retry goes where the key would go if the
    /// backends before were removed. Ends after every backend or one lap of the ring; the
    /// last few backends of a large pool can take most of a lap to find, so take what you need.
    pub fn fallback(&self, key: u64) -> Clockwise<'_> {
        let at = if self.points.is_empty() {
            0
        } else {
            self.position(key)
        };
        Clockwise {
            ring: self,
            at,
            steps: 0,
            seen: vec![false; self.backends],
            left: self.backends,
        }
    }

    /// Index of the first point at or after `key`, wrapping to 0. The ring is not empty.
    fn position(&self, key: u64) -> usize {
        let bucket = (key >> self.shift) as usize;
        let low = self.starts[bucket] as usize;
        let high = self.starts[bucket + 1] as usize;
        // Past the bucket's points, the next bucket's first point (at `high`) is above `key`.
        let at = low + self.points[low..high].partition_point(|&p| p < key);
        if at == self.points.len() {
            0
        } else {
            at
        }
    }
}

/// Backends in clockwise order from a key; see [`RingHash::fallback`].
#[derive(Debug)]
pub struct Clockwise<'a> {
    ring: &'a RingHash,
    at: usize,
    steps: usize,
    seen: Vec<bool>,
    left: usize,
}

impl Iterator for Clockwise<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let owners = &self.ring.owners;
        while self.left > 0 && self.steps < owners.len() {
            let owner = owners[self.at] as usize;
            self.at = if self.at + 1 == owners.len() {
                0
            } else {
                self.at + 1
            };
            self.steps += 1;
            if !self.seen[owner] {
                self.seen[owner] = true;
                self.left -= 1;
                return Some(owner);
            }
        }
        None
    }
}

/// Points per backend: proportional to weight, `POINTS_PER_MIN_WEIGHT` for the lightest, all
/// scaled down together if the ring would exceed `MAX_RING`. With equal weights a backend's
/// count does not depend on the others, so adding or removing one leaves the rest in place.
fn point_counts(specs: &[BackendSpec]) -> Vec<u64> {
    let Some(min_weight) = specs.iter().map(|s| u64::from(s.weight.max(1))).min() else {
        return Vec::new();
    };
    let wanted: Vec<u64> = specs
        .iter()
        .map(|s| u64::from(s.weight.max(1)) * POINTS_PER_MIN_WEIGHT / min_weight)
        .collect();
    let total: u64 = wanted.iter().sum();
    if total <= MAX_RING {
        return wanted;
    }
    wanted
        .into_iter()
        .map(|w| (w * MAX_RING / total).max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{hashed_specs, keys, Fixed};
    use super::*;

    fn specs(weights: &[u32], seed: u64) -> Vec<BackendSpec> {
        hashed_specs(weights, seed)
    }

    /// The backend id each key goes to.
    fn owners(specs: &[BackendSpec], keys: impl Iterator<Item = u64>) -> Vec<&str> {
        let ring = RingHash::new(specs);
        let view = Fixed::weights(&specs.iter().map(|s| s.weight).collect::<Vec<_>>());
        keys.map(|key| {
            specs[ring.pick(&view, &Pick { key: Some(key) })]
                .id
                .as_str()
        })
        .collect()
    }

    #[test]
    fn same_key_same_backend_across_builds_and_pool_orders() {
        let specs = specs(&[1, 2, 3, 1, 1], 7);
        let mut reversed = specs.clone();
        reversed.reverse();
        let first = owners(&specs, keys(1, 10_000));
        assert_eq!(first, owners(&specs, keys(1, 10_000)));
        assert_eq!(first, owners(&reversed, keys(1, 10_000)));
        // And it is a real choice: every backend gets some of the keys.
        for spec in &specs {
            assert!(first.contains(&spec.id.as_str()), "{} got nothing", spec.id);
        }
    }

    #[test]
    fn points_are_proportional_to_weight_and_capped() {
        let cases: &[(&[u32], &[u64])] = &[
            (&[1, 1], &[4096, 4096]),
            (&[1, 3], &[4096, 12_288]),
            // Normalised by the lightest, so the unit of weight does not matter.
            (&[10, 20, 30], &[4096, 8192, 12_288]),
            (&[], &[]),
        ];
        for &(weights, counts) in cases {
            assert_eq!(point_counts(&specs(weights, 0)), counts, "{weights:?}");
        }
        // 300 × 4096 points exceed the cap: all scale down alike, to 2^20 / 300.
        let capped = point_counts(&specs(&[1000; 300], 0));
        assert!(capped.iter().all(|&c| c == 3495), "{:?}", &capped[..3]);
        let ring = RingHash::new(&specs(&[1, 3], 0));
        assert_eq!(ring.points.len(), 4 * 4096);
        assert!(ring.points.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn share_of_keys_follows_weight() {
        // A weight-1 backend's 4096 points hold its share to ~1.6% relative (0.0016 of 0.1);
        // 200k keys add ~0.0007 of sampling noise: 0.01 is several deviations of both.
        let weights = [1, 2, 3, 4];
        let specs = specs(&weights, 3);
        let picked = owners(&specs, keys(5, 200_000));
        for (spec, w) in specs.iter().zip(weights) {
            let share = picked.iter().filter(|&&id| id == spec.id).count() as f64 / 200_000.0;
            let expected = f64::from(w) / 10.0;
            assert!((share - expected).abs() < 0.01, "{share} vs {expected}");
        }
    }

    #[test]
    fn keyless_picks_spread_over_all_backends() {
        let view = Fixed::weights(&[1, 1, 1, 1]);
        let ring = RingHash::new(&view.specs());
        let mut seen = [0u32; 4];
        for _ in 0..40_000 {
            seen[ring.pick(&view, &Pick::default())] += 1;
        }
        // Each expects 10,000 (sd ~90 from sampling, ~160 from the ring's own imbalance).
        assert!(
            seen.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn a_pool_it_was_not_built_for_still_gets_an_index_in_range() {
        let ring = RingHash::new(&[]);
        let view = Fixed::weights(&[1, 1]);
        for key in keys(0, 100) {
            assert!(ring.pick(&view, &Pick { key: Some(key) }) < 2);
        }
        assert_eq!(ring.fallback(3).count(), 0);
    }

    #[test]
    fn fallback_starts_with_the_pick_and_continues_as_if_it_were_removed() {
        let specs = specs(&[1; 6], 11);
        let view = Fixed::weights(&[1; 6]);
        let ring = RingHash::new(&specs);
        let without: Vec<_> = specs.iter().skip(1).cloned().collect();
        let smaller = RingHash::new(&without);
        let smaller_view = Fixed::weights(&[1; 5]);
        for key in keys(2, 2_000) {
            let order: Vec<usize> = ring.fallback(key).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
            assert_eq!(order[0], ring.pick(&view, &Pick { key: Some(key) }));
            if order[0] == 0 {
                // Backend 0 gone, the key lands where its retry would have gone.
                let next = smaller.pick(&smaller_view, &Pick { key: Some(key) });
                assert_eq!(without[next].id, specs[order[1]].id);
            }
        }
    }

    /// Share of 100k keys whose backend changes between two pools, and whether every move
    /// involved `changed` (the backend removed or added).
    fn movement(before: &[BackendSpec], after: &[BackendSpec], changed: &str) -> (f64, bool) {
        let a = owners(before, keys(9, 100_000));
        let b = owners(after, keys(9, 100_000));
        let mut moved = 0;
        let mut only_changed = true;
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                moved += 1;
                only_changed &= *x == changed || *y == changed;
            }
        }
        (f64::from(moved) / 100_000.0, only_changed)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn removing_one_of_n_moves_only_its_keys(n in 3usize..=20, gone in 0usize..20, seed: u64) {
            let before = specs(&vec![1; n], seed);
            let gone = gone % n;
            let mut after = before.clone();
            after.remove(gone);
            let (moved, only_gone) = movement(&before, &after, &before[gone].id);
            prop_assert!(moved <= 1.0 / n as f64 + 0.02, "{moved} of keys moved, n = {n}");
            prop_assert!(only_gone, "a key moved between two backends that stayed");
        }

        #[test]
        fn adding_one_to_n_moves_keys_only_to_it(n in 3usize..=20, seed: u64) {
            let after = specs(&vec![1; n + 1], seed);
            let before = &after[..n];
            let (moved, only_new) = movement(before, &after, &after[n].id);
            // Stricter than 1/n: the new backend takes its share of n + 1.
            prop_assert!(moved <= 1.0 / (n + 1) as f64 + 0.02, "{moved} moved, n = {n}");
            prop_assert!(only_new, "a key moved between two backends that stayed");
        }
    }

    /// `cargo test --release --lib ring_hash::tests::report -- --ignored --nocapture`
    #[test]
    #[ignore = "prints the key movement table for the docs"]
    fn report_key_movement() {
        for n in 3..=20 {
            let (mut worst, mut sum) = (0f64, 0.0);
            for seed in 0..8 {
                let before = specs(&vec![1; n], seed);
                let mut after = before.clone();
                after.remove(seed as usize % n);
                let (moved, _) = movement(&before, &after, &before[seed as usize % n].id);
                worst = worst.max(moved);
                sum += moved;
            }
            println!(
                "n={n:2} 1/n={:.4} removal moved mean={:.4} max={:.4}",
                1.0 / n as f64,
                sum / 8.0,
                worst
            );
        }
    }
}
