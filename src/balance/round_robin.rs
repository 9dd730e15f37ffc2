//! Plain round robin: each pick is one further along. Weights are ignored (that is
//! `weighted_round_robin`); the fallback order continues the rotation.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backends, Pick};

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % backends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::Fixed;
    use super::super::{Balancer, Pick};
    use super::*;
    use crate::config::Algorithm;

    #[test]
    fn picks_rotate_evenly() {
        let rr = RoundRobin::default();
        let b = Fixed::weights(&[1, 1, 1]);
        let firsts: Vec<usize> = (0..6).map(|_| rr.pick(&b, &Pick::default())).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn fallback_continues_the_rotation() {
        let b = Fixed::weights(&[1, 1, 1]);
        let balancer = Balancer::new(Algorithm::RoundRobin, &b.specs());
        balancer.select(&b, &Pick::default());
        assert_eq!(
            balancer.select(&b, &Pick::default()).collect::<Vec<_>>(),
            [1, 2, 0]
        );
    }
}
