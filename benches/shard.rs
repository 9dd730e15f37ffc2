//! What a counter costs when two workers add to it at once: one shared atomic, whose cache line
//! moves between the cores on every add, against `shard::PerWorker` copies, one per worker on
//! lines of their own. Two threads each make `ADDS` adds with about `GAP` of other work between
//! them (a request's worth of work is ~20 µs with some twenty counted writes, so ~1 µs apart);
//! the figure is the time per add, other work included, so the two lines differ by what sharing
//! costs. `cargo bench --bench shard`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::shard::{self, PerWorker};

const ADDS: u64 = 20_000;

/// About `n` iterations of arithmetic the optimiser cannot remove.
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

/// Runs `add` `ADDS` times on each of two threads (workers 0 and 1) with `gap` iterations of
/// work between adds; the time of the slower thread, per add.
fn two_workers(gap: u64, add: Arc<dyn Fn() + Send + Sync>) -> Duration {
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|worker| {
            let (start, add) = (start.clone(), add.clone());
            std::thread::spawn(move || {
                shard::enter(worker);
                start.wait();
                let began = Instant::now();
                for _ in 0..ADDS {
                    black_box(work(gap));
                    add();
                }
                began.elapsed()
            })
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap();
    slowest / ADDS as u32
}

fn counters(c: &mut Criterion) {
    let mut group = c.benchmark_group("two workers adding");
    group.sample_size(20);
    for (gap, label) in [(50, "~0.1 us apart"), (500, "~1 us apart")] {
        let shared = Arc::new(AtomicU64::new(0));
        group.bench_function(format!("one shared counter, {label}"), |b| {
            b.iter_custom(|iters| {
                let shared = shared.clone();
                let add: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    shared.fetch_add(1, Relaxed);
                });
                (0..iters).map(|_| two_workers(gap, add.clone())).sum()
            })
        });
        let copies: Arc<PerWorker<AtomicU64>> = Arc::new(PerWorker::new(2));
        group.bench_function(format!("per-worker copies, {label}"), |b| {
            b.iter_custom(|iters| {
                let copies = copies.clone();
                let add: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    copies.local().fetch_add(1, Relaxed);
                });
                (0..iters).map(|_| two_workers(gap, add.clone())).sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, counters);
criterion_main!(benches);
