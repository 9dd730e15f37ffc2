//! Plain round robin: each pick starts one further along; the fallback order continues the
//! rotation so a retry goes to the next backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Selection;

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn select(&self, len: usize) -> Selection {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        Selection::rotating(start, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_rotate_evenly() {
        let rr = RoundRobin::default();
        let firsts: Vec<usize> = (0..6).map(|_| rr.select(3).next().unwrap()).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn fallback_continues_the_rotation() {
        let rr = RoundRobin::default();
        rr.select(3);
        assert_eq!(rr.select(3).collect::<Vec<_>>(), [1, 2, 0]);
    }
}
