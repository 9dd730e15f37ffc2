//! Criterion benches for the `peak_ewma` balancer: one pick at 3, 100 and 1000 backends, and
//! the estimator's `observe` and `get`. `cargo bench --bench peak_ewma`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice::balance::{BackendSpec, Backends, Ewma, PeakEwma, Pick};

/// A pool as the balancer sees it, with a live `Ewma` per backend read at each pick as
/// `upstream::Pool` does (one clock read per candidate), or at a fixed instant to show what
/// the clock costs.
struct Pool {
    clock: Option<Instant>,
    weights: Vec<u32>,
    in_flight: Vec<u64>,
    latency: Vec<Ewma>,
}

impl Pool {
    fn new(n: usize) -> Pool {
        let now = Instant::now();
        let latency: Vec<Ewma> = (0..n).map(|_| Ewma::new()).collect();
        for (i, e) in latency.iter().enumerate() {
            e.observe(Duration::from_micros(500 + (i as u64 * 37) % 2000), now);
        }
        Pool {
            clock: None,
            weights: vec![1; n],
            in_flight: (0..n as u64).map(|i| i % 5).collect(),
            latency,
        }
    }

    fn specs(&self) -> Vec<BackendSpec> {
        (0..self.len())
            .map(|i| BackendSpec {
                id: format!("10.0.0.{i}:80"),
                weight: 1,
            })
            .collect()
    }
}

impl Backends for Pool {
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
    fn ramp(&self, _i: usize) -> f64 {
        1.0
    }
    fn in_flight(&self, i: usize) -> u64 {
        self.in_flight[i]
    }
    fn latency(&self, i: usize, now: Instant) -> Option<f64> {
        self.latency[i].get(self.clock.unwrap_or(now))
    }
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("peak_ewma/pick");
    for n in [3, 100, 1000] {
        let pool = Pool::new(n);
        let balancer = PeakEwma::new(&pool.specs());
        group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
            b.iter(|| balancer.pick(black_box(pool), &Pick::default()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("peak_ewma/pick_fixed_clock");
    for n in [3, 1000] {
        let mut pool = Pool::new(n);
        pool.clock = Some(Instant::now());
        let balancer = PeakEwma::new(&pool.specs());
        group.bench_with_input(BenchmarkId::from_parameter(n), &pool, |b, pool| {
            b.iter(|| balancer.pick(black_box(pool), &Pick::default()))
        });
    }
    group.finish();
}

fn estimator(c: &mut Criterion) {
    let e = Ewma::new();
    let now = Instant::now();
    e.observe(Duration::from_millis(3), now);
    let mut t = 0u64;
    c.bench_function("peak_ewma/observe", |b| {
        b.iter(|| {
            t += 1_000;
            e.observe(
                black_box(Duration::from_micros(1_000 + t % 3_000)),
                now + Duration::from_nanos(t),
            )
        })
    });
    c.bench_function("peak_ewma/observe_failure", |b| {
        b.iter(|| e.observe_failure(black_box(now)))
    });
    c.bench_function("instant_now", |b| b.iter(Instant::now));
    c.bench_function("peak_ewma/get", |b| {
        b.iter(|| e.get(black_box(now + Duration::from_secs(1))))
    });
}

criterion_group!(benches, pick, estimator);
criterion_main!(benches);
