//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size `M`
//! (65537 by default) filled once from the backends, then one table read per pick. Each backend
//! walks its own permutation of the slots, `offset + k × skip (mod M)`, derived from its id;
//! backends take turns claiming their next free slot until the table is full. Weights decide
//! how often a backend gets a turn (Envoy's weighted Maglev), so table shares follow weights to
//! within a slot or so. Removing one of N backends moves its keys and a little more (slots
//! freed early in the fill let later turns land differently): close to 1/N, unlike a ring
//! exactly 1/N, in exchange for a pick with no search and near-perfect balance.
//!
//! Requests without a key get a random key, so they spread in proportion to weight. Slow start
//! is ignored for the reason given in `ring_hash`: applying `ramp` would move keys off a
//! warming backend and back, losing the affinity that hashing is for.

use super::hash::{hash, mix};
use super::{rng, BackendSpec, Backends, Pick};

/// Prime, and large against any realistic pool: the paper keeps `M` above 100 × N so that a
/// removal moves little beyond 1/N of the keys. As `u16` the table is 128 KiB.
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

#[derive(Debug)]
pub struct Maglev {
    table: Table,
    backends: usize,
}

/// Slot → backend index. Half the memory, so twice the chance of a cache hit, when indices
/// fit in 16 bits, which is every pool anyone will configure.
#[derive(Debug)]
enum Table {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

const EMPTY: u32 = u32::MAX;

impl Maglev {
    /// The table for `specs` (in pool order), of `DEFAULT_TABLE_SIZE` slots.
    pub fn new(specs: &[BackendSpec]) -> Maglev {
        Maglev::with_table_size(specs, DEFAULT_TABLE_SIZE)
    }

    /// The table with `size` slots. `size` must be prime, so every skip walks all the slots;
    /// with fewer slots than backends some backends get none.
    pub fn with_table_size(specs: &[BackendSpec], size: usize) -> Maglev {
        assert!(is_prime(size), "maglev table size {size} is not prime");
        let slots = fill(specs, size);
        let table = if specs.len() <= usize::from(u16::MAX) + 1 {
            Table::Narrow(slots.iter().map(|&s| s as u16).collect())
        } else {
            Table::Wide(slots.into_boxed_slice())
        };
        Maglev {
            table,
            backends: specs.len(),
        }
    }

    /// The backend in the key's slot; a random key's slot when the request has none.
    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, pick: &Pick) -> usize {
        let len = backends.len();
        if self.backends == 0 || self.backends != len {
            // Not built for these backends (never expected: a pool builds its balancer from
            // its own list); any index is better than one out of range.
            return rng::below(len as u64) as usize;
        }
        let key = pick.key.unwrap_or_else(rng::next_u64);
        match &self.table {
            Table::Narrow(t) => usize::from(t[slot(key, t.len())]),
            Table::Wide(t) => t[slot(key, t.len())] as usize,
        }
    }
}

/// The key's slot. Multiply-shift (Lemire) rather than `key % size`: as uniform for a
/// well-mixed key, and a multiply instead of a 64-bit division on every pick.
fn slot(key: u64, size: usize) -> usize {
    ((u128::from(key) * size as u128) >> 64) as usize
}

/// The filled table: backends take turns claiming the next free slot of their permutation; a
/// backend of weight `w` gets a turn in round `r` when `r × w` has reached the weights it has
/// already been served, in steps of the heaviest weight, so the heaviest takes a turn every
/// round and one of a third its weight every third round.
fn fill(specs: &[BackendSpec], size: usize) -> Vec<u32> {
    let mut slots = vec![EMPTY; size];
    if specs.is_empty() {
        return slots;
    }
    let m = size as u64;
    let max_weight = specs.iter().map(|s| u64::from(s.weight.max(1))).max();
    let max_weight = max_weight.unwrap_or(1);
    let mut turns: Vec<Turn> = specs
        .iter()
        .map(|s| {
            // Two independent hashes of the id: where the walk starts and its stride.
            let h = hash(s.id.as_bytes());
            Turn {
                at: h % m,
                skip: mix(h ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1,
                weight: u64::from(s.weight.max(1)),
                served: 0,
            }
        })
        .collect();
    let mut filled = 0;
    let mut round = 1u64;
    while filled < size {
        for (i, turn) in turns.iter_mut().enumerate() {
            if filled == size {
                break;
            }
            if round * turn.weight < turn.served {
                continue;
            }
            turn.served += max_weight;
            // A free slot exists (filled < size) and the walk visits every slot (size prime).
            while slots[turn.at as usize] != EMPTY {
                turn.advance(m);
            }
            slots[turn.at as usize] = i as u32;
            turn.advance(m);
            filled += 1;
        }
        round += 1;
    }
    slots
}

/// One backend's place in the fill: the next slot of its permutation and its weighted turns.
struct Turn {
    at: u64,
    skip: u64,
    weight: u64,
    served: u64,
}

impl Turn {
    fn advance(&mut self, m: u64) {
        self.at += self.skip;
        if self.at >= m {
            self.at -= m;
        }
    }
}

fn is_prime(n: usize) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
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
        let maglev = Maglev::new(specs);
        let view = Fixed::weights(&specs.iter().map(|s| s.weight).collect::<Vec<_>>());
        keys.map(|key| {
            specs[maglev.pick(&view, &Pick { key: Some(key) })]
                .id
                .as_str()
        })
        .collect()
    }

    fn slots_per_backend(maglev: &Maglev) -> Vec<usize> {
        let mut counts = vec![0; maglev.backends];
        match &maglev.table {
            Table::Narrow(t) => t.iter().for_each(|&i| counts[usize::from(i)] += 1),
            Table::Wide(t) => t.iter().for_each(|&i| counts[i as usize] += 1),
        }
        counts
    }

    #[test]
    fn same_key_same_backend_across_builds_and_pool_orders() {
        let specs = specs(&[1, 2, 3, 1, 1], 7);
        let mut reversed = specs.clone();
        reversed.reverse();
        let first = owners(&specs, keys(1, 10_000));
        assert_eq!(first, owners(&specs, keys(1, 10_000)));
        // Turns go in pool order, so order can move a few contested slots, not more.
        let other = owners(&reversed, keys(1, 10_000));
        let differ = first.iter().zip(&other).filter(|(a, b)| a != b).count();
        assert!(differ < 500, "{differ} of 10000 keys moved with the order");
    }

    #[test]
    fn slots_follow_weights_to_within_a_turn() {
        // (weights, table size, slots each): the last round is cut short when the table
        // fills, so a backend may be one turn short of its exact share.
        let cases: &[(&[u32], usize, &[usize])] = &[
            (&[1, 1, 1], 7, &[3, 2, 2]),
            (&[1, 1], 65_537, &[32_769, 32_768]),
            (&[1, 3], 65_537, &[16_385, 49_152]),
            (&[1], 2, &[2]),
        ];
        for &(weights, size, expected) in cases {
            let maglev = Maglev::with_table_size(&specs(weights, 0), size);
            assert_eq!(slots_per_backend(&maglev), expected, "{weights:?}");
        }
    }

    #[test]
    fn share_of_keys_follows_weight() {
        // Table shares are exact to a slot (1/65537), so only the sampling noise of 200k keys
        // remains, ~0.001 at these shares: 0.005 is five deviations.
        let weights = [1, 2, 3, 4];
        let specs = specs(&weights, 3);
        let picked = owners(&specs, keys(5, 200_000));
        for (spec, w) in specs.iter().zip(weights) {
            let share = picked.iter().filter(|&&id| id == spec.id).count() as f64 / 200_000.0;
            let expected = f64::from(w) / 10.0;
            assert!((share - expected).abs() < 0.005, "{share} vs {expected}");
        }
    }

    #[test]
    fn keyless_picks_spread_over_all_backends() {
        let view = Fixed::weights(&[1, 1, 1, 1]);
        let maglev = Maglev::new(&view.specs());
        let mut seen = [0u32; 4];
        for _ in 0..40_000 {
            seen[maglev.pick(&view, &Pick::default())] += 1;
        }
        // Each expects 10,000, sd ~90.
        assert!(
            seen.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{seen:?}"
        );
    }

    #[test]
    fn a_pool_it_was_not_built_for_still_gets_an_index_in_range() {
        let maglev = Maglev::new(&[]);
        let view = Fixed::weights(&[1, 1]);
        for key in keys(0, 100) {
            assert!(maglev.pick(&view, &Pick { key: Some(key) }) < 2);
        }
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn a_table_size_that_is_not_prime_is_refused() {
        Maglev::with_table_size(&specs(&[1], 0), 65_536);
    }

    #[test]
    fn slot_covers_the_table_evenly() {
        assert_eq!(slot(0, 65_537), 0);
        assert_eq!(slot(u64::MAX, 65_537), 65_536);
        assert_eq!(slot(1 << 63, 4), 2);
    }

    /// Share of 100k keys whose backend changes between two pools.
    fn moved(before: &[BackendSpec], after: &[BackendSpec]) -> f64 {
        let a = owners(before, keys(9, 100_000));
        let b = owners(after, keys(9, 100_000));
        let moved = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        moved as f64 / 100_000.0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn removing_one_of_n_moves_about_its_share(n in 3usize..=20, gone in 0usize..20, seed: u64) {
            let before = specs(&vec![1; n], seed);
            let mut after = before.clone();
            after.remove(gone % n);
            let moved = moved(&before, &after);
            prop_assert!(moved <= 1.0 / n as f64 + 0.03, "{moved} of keys moved, n = {n}");
        }

        #[test]
        fn adding_one_to_n_moves_about_its_share(n in 3usize..=20, seed: u64) {
            let after = specs(&vec![1; n + 1], seed);
            let moved = moved(&after[..n], &after);
            prop_assert!(moved <= 1.0 / n as f64 + 0.03, "{moved} moved, n = {n}");
        }
    }

    /// `cargo test --release --lib maglev::tests::report -- --ignored --nocapture`
    #[test]
    #[ignore = "prints the key movement table for the docs"]
    fn report_key_movement() {
        for n in 3..=20 {
            let (mut worst, mut sum) = (0f64, 0.0);
            for seed in 0..8 {
                let before = specs(&vec![1; n], seed);
                let mut after = before.clone();
                after.remove(seed as usize % n);
                let moved = moved(&before, &after);
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
