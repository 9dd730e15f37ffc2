//! Effective weight, the one notion every weighted algorithm shares: configured weight × the
//! slow-start ramp. Owns the load measure the load-aware algorithms minimise, the acceptance
//! test that lets table-based algorithms honour ramps without rebuilding their tables, and the
//! exact (but O(n)) weighted draw they fall back on.

use std::cmp::Ordering;

use super::rng;
use super::Backends;

/// How many table draws a table-based pick makes before falling back to `scan`. Each draw is
/// accepted with probability `ramp`, so only pools where most of the weight is ramping come
/// near the bound; the fallback keeps them exact at O(n) cost.
pub(super) const RAMP_TRIES: usize = 16;

/// The smallest ramp honoured. The trait promises (0, 1]; a zero, negative or NaN ramp from a
/// buggy caller must not produce infinite or NaN scores, which would break every comparison.
const MIN_RAMP: f64 = 1e-6;

fn ramp<B: Backends + ?Sized>(b: &B, i: usize) -> f64 {
    let r = b.ramp(i);
    if r >= 1.0 {
        1.0
    } else if r > MIN_RAMP {
        r
    } else {
        MIN_RAMP
    }
}

/// `weight × ramp`: the share of traffic the backend should take relative to the others.
pub(super) fn effective<B: Backends + ?Sized>(b: &B, i: usize) -> f64 {
    f64::from(b.weight(i)) * ramp(b, i)
}

/// A ramp of 1 in `Load`'s fixed point: ramps count in steps of 1/65536.
const RAMP_ONE: f64 = 65536.0;

/// A backend's requests per unit of effective weight, `(in_flight + 1) / (weight × ramp)`:
/// lower means more room. Counting the request being placed (`+ 1`) is what lets an idle heavy
/// backend beat an idle light one. Kept as an integer fraction and compared by
/// cross-multiplying: ties are exact and a scan over many backends divides nothing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    requests: u64,
    /// Effective weight in units of 1/65536.
    weight: u64,
}

impl Load {
    pub(super) fn of<B: Backends + ?Sized>(b: &B, i: usize) -> Load {
        let r = ramp(b, i);
        let ramp = if r >= 1.0 {
            RAMP_ONE as u64
        } else {
            ((r * RAMP_ONE) as u64).max(1)
        };
        Load {
            requests: b.in_flight(i).saturating_add(1),
            weight: u64::from(b.weight(i)) * ramp,
        }
    }

    /// `Less` when `self` has more room than `other`.
    pub(super) fn compare(self, other: Load) -> Ordering {
        let this = u128::from(self.requests) * u128::from(other.weight);
        let that = u128::from(other.requests) * u128::from(self.weight);
        this.cmp(&that)
    }
}

/// Whether a pick drawn from a table of configured weights stands, given slow start: true with
/// probability `ramp(i)`. Rejected picks are redrawn, which turns the table's configured
/// proportions into effective ones.
pub(super) fn accept<B: Backends + ?Sized>(b: &B, i: usize) -> bool {
    let r = ramp(b, i);
    // Settled backends (the usual case) cost no random draw.
    r >= 1.0 || rng::unit() < r
}

/// A backend drawn with probability proportional to its effective weight, never `exclude`.
/// Exact and table-free, but reads every backend twice: the fallback, not the fast path.
/// `b` must have a backend other than `exclude`.
pub(super) fn scan<B: Backends + ?Sized>(b: &B, exclude: Option<usize>) -> usize {
    let n = b.len();
    let counted = |i: usize| Some(i) != exclude;
    let total: f64 = (0..n)
        .filter(|&i| counted(i))
        .map(|i| effective(b, i))
        .sum();
    let mut target = rng::unit() * total;
    let mut last = 0;
    for i in (0..n).filter(|&i| counted(i)) {
        let w = effective(b, i);
        if target < w {
            return i;
        }
        target -= w;
        last = i;
    }
    // Rounding, or ramps moving between the two passes, can leave `target` past the end.
    last
}

#[cfg(test)]
pub(super) mod closed_loop {
    //! A pool under steady concurrent load, for algorithms whose choices depend on in-flight
    //! counts: `concurrency` requests are always in flight; each step one of them (uniformly)
    //! completes and the algorithm places a new one. Every request takes the same time on
    //! average, so a backend's share of picks equals its share of the in-flight requests.

    use super::super::rng;
    use super::super::testing::Fixed;

    /// Share of `steps` picks each backend received, after a warm-up of as many steps.
    pub fn shares(
        mut b: Fixed,
        concurrency: u64,
        steps: usize,
        mut pick: impl FnMut(&Fixed) -> usize,
    ) -> Vec<f64> {
        let n = b.weights.len();
        b.in_flight = vec![0; n];
        for _ in 0..concurrency {
            let i = pick(&b);
            b.in_flight[i] += 1;
        }
        let mut picks = vec![0u64; n];
        for step in 0..2 * steps {
            let mut done = rng::below(concurrency);
            let finished = (0..n)
                .find(|&i| {
                    if done < b.in_flight[i] {
                        return true;
                    }
                    done -= b.in_flight[i];
                    false
                })
                .expect("in-flight counts sum to the concurrency");
            b.in_flight[finished] -= 1;
            let i = pick(&b);
            b.in_flight[i] += 1;
            if step >= steps {
                picks[i] += 1;
            }
        }
        picks.iter().map(|&c| c as f64 / steps as f64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixed;
    use super::*;

    #[test]
    fn effective_weight_is_weight_times_ramp() {
        let mut b = Fixed::weights(&[10, 10, 10, 10, 10]);
        b.ramps = vec![1.0, 0.25, 0.0, -1.0, f64::NAN];
        assert_eq!(effective(&b, 0), 10.0);
        assert_eq!(effective(&b, 1), 2.5);
        // Out-of-contract ramps stay finite and positive.
        for i in 2..5 {
            let w = effective(&b, i);
            assert!(w > 0.0 && w.is_finite(), "{i}: {w}");
        }
    }

    #[test]
    fn load_is_requests_per_effective_weight() {
        use Ordering::*;
        // (weight, ramp, in flight) against (weight, ramp, in flight)
        let cases = [
            ((1, 1.0, 0), (4, 1.0, 3), Equal),
            ((1, 1.0, 0), (4, 0.5, 3), Less),
            ((1, 1.0, 0), (2, 1.0, 0), Greater),
            ((10, 1.0, 10), (1, 1.0, 0), Greater),
            ((200, 0.5, 9), (100, 1.0, 9), Equal),
            ((1, 1.0, u64::MAX - 1), (1, 1.0, u64::MAX - 2), Greater),
        ];
        for (a, b, want) in cases {
            let mut pool = Fixed::weights(&[a.0, b.0]);
            pool.ramps = vec![a.1, b.1];
            pool.in_flight = vec![a.2, b.2];
            let (la, lb) = (Load::of(&pool, 0), Load::of(&pool, 1));
            assert_eq!(la.compare(lb), want, "{a:?} {b:?}");
            assert_eq!(lb.compare(la), want.reverse(), "{a:?} {b:?}");
        }
    }

    #[test]
    fn accept_rate_is_the_ramp() {
        let mut b = Fixed::weights(&[1, 1]);
        b.ramps = vec![1.0, 0.2];
        assert!((0..1000).all(|_| accept(&b, 0)));
        let accepted = (0..100_000).filter(|_| accept(&b, 1)).count();
        assert!((19_000..21_000).contains(&accepted), "{accepted}");
    }

    #[test]
    fn scan_follows_effective_weights_and_skips_the_excluded() {
        let mut b = Fixed::weights(&[1, 2, 3, 4]);
        b.ramps[3] = 0.5; // effective 1, 2, 3, 2
        let mut counts = [0u32; 4];
        for _ in 0..80_000 {
            counts[scan(&b, Some(1))] += 1;
        }
        assert_eq!(counts[1], 0);
        // Expected 1/6, 3/6, 2/6 of 80k: 13.3k, 40k, 26.7k.
        for (got, want) in [
            (counts[0], 13_333.0),
            (counts[2], 40_000.0),
            (counts[3], 26_667.0),
        ] {
            assert!((f64::from(got) - want).abs() < want * 0.05, "{counts:?}");
        }
    }
}
