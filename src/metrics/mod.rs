//! Every metric sluice keeps, and the `GET /metrics` text (`render.rs`).
//!
//! The request path only touches atomics it already holds a handle on: a backend's own
//! `BackendMetrics` (reached through the request's in-flight guard), the `RouteMetrics` of its
//! listener and pool (resolved when the snapshot is built, indexed by pool position), and its
//! connection's `ListenerCounters`. No map lookup, no lock, no allocation per request.
//!
//! Series live as long as what they describe. Backend series live in the `Backend`, which a
//! reload carries over when the backend stays, so counters never reset on reload; a removed
//! backend's series disappear once it has drained (`render` reads the snapshot's backends and
//! the draining list). Listener-and-pool series are carried over by listener id and pool name.

mod process;
pub mod render;

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::shard::PerWorker;

/// Histogram bucket bounds in seconds: from half a millisecond (a backend on the same host) to a
/// minute (long polls, slow uploads), roughly 1-2.5-5 per decade.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// `BUCKETS` in nanoseconds, for the comparisons on the request path.
const BOUNDS_NS: [u64; 16] = {
    let mut ns = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        ns[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// A latency histogram: one counter per bucket (not cumulative: an observation touches one) and
/// the sum in nanoseconds, a copy of each per worker (`shard`).
#[derive(Debug, Default)]
pub struct Histogram {
    shards: PerWorker<HistogramCounts>,
}

#[derive(Debug, Default)]
struct HistogramCounts {
    /// `counts[i]`: observations in `(BUCKETS[i-1], BUCKETS[i]]`; the last one is `+Inf`.
    counts: [AtomicU64; 17],
    sum_ns: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramValues {
    /// Cumulative counts for `BUCKETS`, then `+Inf` (the total count).
    pub cumulative: [u64; 17],
    pub sum_seconds: f64,
}

impl HistogramValues {
    pub fn count(&self) -> u64 {
        self.cumulative[16]
    }
}

impl Histogram {
    /// One copy per worker.
    pub fn new(workers: usize) -> Histogram {
        Histogram {
            shards: PerWorker::new(workers),
        }
    }

    /// Counts into the calling worker's copy.
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        let shard = self.shards.local();
        shard.counts[bucket].fetch_add(1, Relaxed);
        shard.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn values(&self) -> HistogramValues {
        let mut cumulative = [0u64; 17];
        let mut sum_ns = 0u64;
        for shard in self.shards.iter() {
            let mut total = 0;
            for (slot, count) in cumulative.iter_mut().zip(&shard.counts) {
                total += count.load(Relaxed);
                *slot += total;
            }
            sum_ns = sum_ns.wrapping_add(shard.sum_ns.load(Relaxed));
        }
        HistogramValues {
            cumulative,
            sum_seconds: sum_ns as f64 / 1e9,
        }
    }
}

/// Requests counted by (listener id, status code), a copy per worker (`shard`).
#[derive(Debug, Default)]
pub struct CodeCounts {
    shards: PerWorker<CodeTable>,
}

/// A small lock-free table, since a backend sees a handful of codes per listener. Past `SLOTS`
/// distinct pairs the rest go to a locked list.
#[derive(Debug, Default)]
struct CodeTable {
    /// `listener << 16 | code`, plus one so that zero marks a free slot.
    keys: [AtomicU32; SLOTS],
    counts: [AtomicU64; SLOTS],
    overflow: Mutex<Vec<(u32, u64)>>,
}

const SLOTS: usize = 16;

impl CodeCounts {
    /// One copy per worker.
    pub fn new(workers: usize) -> CodeCounts {
        CodeCounts {
            shards: PerWorker::new(workers),
        }
    }

    /// Counts one request of `listener` answered with `code`, in the calling worker's copy.
    pub fn add(&self, listener: usize, code: u16) {
        self.shards.local().add(listener, code);
    }

    /// Every (listener id, code, count) counted so far, by every worker.
    pub fn values(&self) -> Vec<(usize, u16, u64)> {
        let mut values: Vec<(usize, u16, u64)> = Vec::new();
        for shard in self.shards.iter() {
            shard.values_into(&mut values);
        }
        values.sort_unstable();
        // The same pair counted by several workers: one entry with the sum.
        values.dedup_by(|later, kept| {
            let same = (later.0, later.1) == (kept.0, kept.1);
            if same {
                kept.2 += later.2;
            }
            same
        });
        values
    }
}

impl CodeTable {
    fn add(&self, listener: usize, code: u16) {
        let key = ((listener as u32 & 0xffff) << 16 | u32::from(code)) + 1;
        // Fibonacci hashing spreads the few keys over the slots; probe linearly from there.
        let start = (key.wrapping_mul(0x9e37_79b9) >> 28) as usize;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let mut held = self.keys[slot].load(Relaxed);
            if held == 0 {
                held = match self.keys[slot].compare_exchange(0, key, Relaxed, Relaxed) {
                    Ok(_) => key,
                    Err(other) => other,
                };
            }
            if held == key {
                self.counts[slot].fetch_add(1, Relaxed);
                return;
            }
        }
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        match overflow.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += 1,
            None => overflow.push((key, 1)),
        }
    }

    fn values_into(&self, values: &mut Vec<(usize, u16, u64)>) {
        let split = |key: u32| (((key - 1) >> 16) as usize, ((key - 1) & 0xffff) as u16);
        values.extend(
            self.keys
                .iter()
                .zip(&self.counts)
                .filter_map(|(key, count)| {
                    let key = key.load(Relaxed);
                    // A slot just claimed may not be counted yet: skip it until it is.
                    let count = count.load(Relaxed);
                    (key != 0 && count != 0).then(|| {
                        let (listener, code) = split(key);
                        (listener, code, count)
                    })
                }),
        );
        let overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        values.extend(overflow.iter().map(|&(key, count)| {
            let (listener, code) = split(key);
            (listener, code, count)
        }));
    }
}

/// What a backend's requests are counted into; lives in the `Backend`, so it follows the backend
/// across reloads and disappears with it.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    /// Requests the backend answered (the last attempt of each), by listener and status sent.
    pub codes: CodeCounts,
    /// From sending the request to the backend's response head (or its failure), every
    /// attempt.
    pub upstream: Histogram,
    /// Attempts that got no response, by `Failure` (the client got sluice's own 502/504, or a
    /// retry went elsewhere).
    pub failures: [AtomicU64; 3],
}

/// Why an attempt got no response from its backend: the `reason` label.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    Connect = 0,
    Timeout = 1,
    /// Reset, closed early, or an invalid response.
    Response = 2,
}

impl Failure {
    pub const ALL: [Failure; 3] = [Failure::Connect, Failure::Timeout, Failure::Response];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Response => "response",
        }
    }
}

impl BackendMetrics {
    /// Counters with a copy per worker where every request writes.
    pub fn new(workers: usize) -> BackendMetrics {
        BackendMetrics {
            codes: CodeCounts::new(workers),
            upstream: Histogram::new(workers),
            failures: Default::default(),
        }
    }

    pub fn failed(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Relaxed);
    }
}

/// One listener's requests to one pool (or to no pool: unrouted and early-refused requests).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// From the request head's arrival to the last byte of the answer (or the client leaving).
    pub duration: Histogram,
    /// Requests sluice answered itself (`backend=""`), by code; the listener is implied.
    pub local: CodeCounts,
}

impl RouteMetrics {
    /// Counters with a copy per worker.
    pub fn new(workers: usize) -> RouteMetrics {
        RouteMetrics {
            duration: Histogram::new(workers),
            local: CodeCounts::new(workers),
        }
    }
}

/// A listener's counters, for its whole life across reloads (keyed by listener id).
#[derive(Debug, Default)]
pub struct ListenerCounters {
    /// Downstream connections open now.
    pub connections: AtomicI64,
    /// Downstream connections accepted so far.
    pub connections_total: AtomicU64,
    /// Request body bytes received and response body bytes sent, a count per worker.
    bytes: PerWorker<ByteCounts>,
    /// Request heads refused before they became requests (ambiguous framing, by status; listener
    /// key 0): counted in `sluice_requests_total` with `pool=""`.
    pub refused: CodeCounts,
}

#[derive(Debug, Default)]
struct ByteCounts {
    received: AtomicU64,
    sent: AtomicU64,
}

impl ListenerCounters {
    /// Byte counts with a copy per worker (every request adds to them).
    pub fn new(workers: usize) -> ListenerCounters {
        ListenerCounters {
            bytes: PerWorker::new(workers),
            ..ListenerCounters::default()
        }
    }

    /// Counts request body bytes received, in the calling worker's copy.
    pub fn add_received(&self, n: u64) {
        self.bytes.local().received.fetch_add(n, Relaxed);
    }

    /// Counts response body bytes sent, in the calling worker's copy.
    pub fn add_sent(&self, n: u64) {
        self.bytes.local().sent.fetch_add(n, Relaxed);
    }

    pub fn received_bytes(&self) -> u64 {
        self.bytes.iter().map(|b| b.received.load(Relaxed)).sum()
    }

    pub fn sent_bytes(&self) -> u64 {
        self.bytes.iter().map(|b| b.sent.load(Relaxed)).sum()
    }
}

/// RAII: one open downstream connection of a listener.
#[derive(Debug)]
pub struct ConnectionGauge(std::sync::Arc<ListenerCounters>);

impl ConnectionGauge {
    pub fn new(counters: std::sync::Arc<ListenerCounters>) -> ConnectionGauge {
        counters.connections.fetch_add(1, Relaxed);
        counters.connections_total.fetch_add(1, Relaxed);
        ConnectionGauge(counters)
    }

    pub fn counters(&self) -> &ListenerCounters {
        &self.0
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

/// The status recorded for a request whose client went away before any answer was sent
/// (nginx's convention): no status reached the client, but the request must still be counted.
pub const CLIENT_CLOSED: u16 = 499;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100)); // ≤ 0.5 ms
        h.observe(Duration::from_micros(500)); // exactly on a bound: that bucket
        h.observe(Duration::from_millis(3)); // ≤ 5 ms
        h.observe(Duration::from_secs(120)); // +Inf
        let v = h.values();
        assert_eq!(v.cumulative[0], 2);
        assert_eq!(v.cumulative[1], 2);
        assert_eq!(v.cumulative[2], 2);
        assert_eq!(v.cumulative[3], 3);
        assert_eq!(v.cumulative[15], 3);
        assert_eq!(v.count(), 4);
        assert!((v.sum_seconds - 120.0036).abs() < 1e-9, "{}", v.sum_seconds);
    }

    #[test]
    fn codes_are_counted_per_listener_past_the_table() {
        let c = CodeCounts::default();
        for _ in 0..3 {
            c.add(0, 200);
        }
        c.add(1, 200);
        c.add(0, 502);
        // More distinct pairs than slots: the rest overflow, and every one is still counted.
        for code in 300..330 {
            c.add(7, code);
        }
        let values = c.values();
        assert_eq!(values.len(), 3 + 30);
        assert!(values.contains(&(0, 200, 3)));
        assert!(values.contains(&(1, 200, 1)));
        assert!(values.contains(&(0, 502, 1)));
        assert!((300..330).all(|code| values.contains(&(7, code, 1))));
    }

    #[test]
    fn counting_from_many_threads_loses_nothing() {
        let c = std::sync::Arc::new(CodeCounts::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u16 {
                        c.add(t, 200 + i % 20);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let values = c.values();
        assert_eq!(values.iter().map(|v| v.2).sum::<u64>(), 40_000);
        assert_eq!(values.len(), 80);
    }

    #[test]
    fn each_worker_counts_into_its_own_copy_and_values_add_them_up() {
        let h = std::sync::Arc::new(Histogram::new(2));
        let c = std::sync::Arc::new(CodeCounts::new(2));
        let threads: Vec<_> = (0..2)
            .map(|worker| {
                let (h, c) = (h.clone(), c.clone());
                std::thread::spawn(move || {
                    crate::shard::enter(worker);
                    h.observe(Duration::from_millis(2 + 10 * worker as u64)); // ≤ 2.5 ms, ≤ 25 ms
                    c.add(0, 200);
                    c.add(worker, 503);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Written apart: each copy holds one worker's observation.
        for (worker, shard) in h.shards.iter().enumerate() {
            assert_eq!(
                shard.counts.iter().map(|n| n.load(Relaxed)).sum::<u64>(),
                1,
                "{worker}"
            );
        }
        let v = h.values();
        assert_eq!(
            (v.cumulative[1], v.cumulative[2], v.cumulative[4], v.count()),
            (0, 1, 1, 2)
        );
        assert_eq!(v.cumulative[5], 2);
        assert!((v.sum_seconds - 0.014).abs() < 1e-9, "{}", v.sum_seconds);
        // The pair both workers counted is one entry with the sum.
        assert_eq!(c.values(), [(0, 200, 2), (0, 503, 1), (1, 503, 1)]);
    }
}
