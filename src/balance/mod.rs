//! Choosing a backend. Each algorithm is a small pure module; `Balancer` dispatches by enum.
//!
//! Selection yields backend indices in fallback order: the first choice, then the ones to try
//! next. Whether a backend may take traffic (health, ejection, limits) is decided by the caller,
//! which skips indices, so the algorithms know nothing about health.

mod round_robin;

pub use round_robin::RoundRobin;

use crate::config::Algorithm;

/// The algorithm of one pool, with whatever state it keeps between picks.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Balancer {
        match algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
        }
    }

    /// Backend indices of a pool of `len` backends, in the order to try them.
    pub fn select(&self, len: usize) -> Selection {
        match self {
            Balancer::RoundRobin(rr) => rr.select(len),
        }
    }
}

/// Indices `start, start+1, ...` modulo `len`, each once: the fallback order of rotating
/// algorithms.
#[derive(Debug, Clone)]
pub struct Selection {
    next: usize,
    len: usize,
    remaining: usize,
}

impl Selection {
    pub fn rotating(start: usize, len: usize) -> Selection {
        Selection {
            next: if len == 0 { 0 } else { start % len },
            len,
            remaining: len,
        }
    }
}

impl Iterator for Selection {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        let i = self.next;
        self.remaining -= 1;
        self.next = if i + 1 == self.len { 0 } else { i + 1 };
        Some(i)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotating_visits_every_index_once_from_start() {
        assert_eq!(Selection::rotating(2, 4).collect::<Vec<_>>(), [2, 3, 0, 1]);
        assert_eq!(Selection::rotating(9, 4).collect::<Vec<_>>(), [1, 2, 3, 0]);
        assert_eq!(Selection::rotating(0, 0).count(), 0);
    }
}
