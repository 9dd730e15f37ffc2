//! Per-worker copies of state every request writes, so that workers on different cores never
//! write the same cache line: a counter two cores both add to moves its line between them on
//! every add (15–20 ns more per add on the 2-vCPU benchmark VM, `benches/shard.rs`), a cost that grows with
//! the number of cores. Each worker writes its own copy; readers (the metrics page, the admin
//! API) add the copies up.

use std::cell::Cell;

/// What `worker()` gives on a thread that is no worker: it shares the last copy.
const NO_WORKER: usize = usize::MAX;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(NO_WORKER) };
}

/// Marks the calling thread as worker `index`: what it counts goes to that worker's copies.
/// Each per-core worker's thread does (`server`); the shared runtime's threads do not.
pub fn enter(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The calling thread's worker index (`enter`); past every copy if it is no worker.
#[inline]
pub fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// Whether the calling thread is a worker's (`enter`): the only thread that worker's tasks run on.
pub fn is_worker() -> bool {
    worker() != NO_WORKER
}

/// `T` alone on its cache lines: 128 bytes, since Intel's prefetcher pulls lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One `T` per worker, each on cache lines of its own.
#[derive(Debug)]
pub struct PerWorker<T> {
    copies: Box<[Padded<T>]>,
}

impl<T: Default> PerWorker<T> {
    /// `workers` copies (at least one).
    pub fn new(workers: usize) -> PerWorker<T> {
        PerWorker {
            copies: (0..workers.max(1)).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T: Default> Default for PerWorker<T> {
    /// A single copy: for what only one worker, or a test, writes.
    fn default() -> Self {
        PerWorker::new(1)
    }
}

impl<T> PerWorker<T> {
    /// Worker `worker`'s copy; a worker index past the copies (a thread that is no worker of
    /// this server) shares the last one.
    #[inline]
    pub fn of(&self, worker: usize) -> &T {
        &self.copies[worker.min(self.copies.len() - 1)]
    }

    /// The calling thread's copy (`worker()`).
    #[inline]
    pub fn local(&self) -> &T {
        self.of(worker())
    }

    /// Every copy, for adding them up.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.copies.iter().map(|c| &c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    #[test]
    fn copies_sit_on_separate_cache_line_pairs() {
        let counters: PerWorker<AtomicU64> = PerWorker::new(4);
        let addresses: Vec<usize> = counters.iter().map(|c| c as *const _ as usize).collect();
        for pair in addresses.windows(2) {
            assert!(pair[1] - pair[0] >= 128, "{addresses:?}");
        }
        assert!(addresses.iter().all(|a| a % 128 == 0), "{addresses:?}");
    }

    #[test]
    fn each_thread_writes_its_own_copy_and_the_sum_sees_all() {
        let counters: std::sync::Arc<PerWorker<AtomicU64>> = std::sync::Arc::new(PerWorker::new(2));
        let threads: Vec<_> = (0..2)
            .map(|w| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    enter(w);
                    for _ in 0..1000 * (w + 1) {
                        counters.local().fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counters.of(0).load(Relaxed), 1000);
        assert_eq!(counters.of(1).load(Relaxed), 2000);
        // A worker index past the copies shares the last copy.
        assert!(std::ptr::eq(counters.of(7), counters.of(1)));
        assert_eq!(counters.iter().map(|c| c.load(Relaxed)).sum::<u64>(), 3000);
    }
}
