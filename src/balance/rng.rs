//! A fast per-thread random source for picks. Balancing needs speed and uniformity, not
//! secrecy; each thread is seeded from the process's random hasher keys.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x5eed_u64) | 1);
}

/// A uniformly distributed `u64` (wyrand).
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// Uniform in `0..n` (`n` > 0), without modulo bias worth measuring (Lemire's multiply-shift).
pub fn below(n: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(n)) >> 64) as u64
}

/// Uniform in `[0, 1)`.
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }

    #[test]
    fn unit_is_in_range() {
        for _ in 0..1000 {
            let u = unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
