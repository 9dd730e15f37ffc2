//! Criterion benches for backend selection: the cost of one pick by each weighted algorithm at
//! 3, 100 and 1000 backends, and of building the tables they pick from.
//! `cargo bench --bench balance`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice::balance::{
    BackendSpec, Backends, LeastRequests, Pick, PowerOfTwo, Random, RoundRobin, WeightedRoundRobin,
};

/// A pool's view held in plain vectors: mixed weights, a few requests in flight each, every
/// backend settled (ramp 1), as in a steady pool.
struct Pool {
    weights: Vec<u32>,
    in_flight: Vec<u64>,
}

impl Pool {
    fn new(n: usize) -> Pool {
        Pool {
            // Spread over 1..=1000 and mostly coprime: the largest tables the config allows.
            weights: (0..n).map(|i| (i * 379 % 1000) as u32 + 1).collect(),
            in_flight: (0..n).map(|i| (i * 7 % 5) as u64).collect(),
        }
    }

    fn specs(&self) -> Vec<BackendSpec> {
        self.weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendSpec {
                id: format!("10.0.{}.{}:8080", i / 256, i % 256),
                weight,
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
    fn settled(&self) -> bool {
        true
    }
    fn in_flight(&self, i: usize) -> u64 {
        self.in_flight[i]
    }
    fn latency(&self, _i: usize, _now: std::time::Instant) -> Option<f64> {
        None
    }
}

const SIZES: [usize; 3] = [3, 100, 1000];

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/pick");
    let pick = Pick::default();
    for n in SIZES {
        let pool = Pool::new(n);
        let specs = pool.specs();
        let rr = RoundRobin::default();
        group.bench_with_input(BenchmarkId::new("round_robin", n), &pool, |b, p| {
            b.iter(|| rr.pick(black_box(p), &pick))
        });
        let wrr = WeightedRoundRobin::new(&specs);
        group.bench_with_input(
            BenchmarkId::new("weighted_round_robin", n),
            &pool,
            |b, p| b.iter(|| wrr.pick(black_box(p), &pick)),
        );
        let random = Random::new(&specs);
        group.bench_with_input(BenchmarkId::new("random", n), &pool, |b, p| {
            b.iter(|| random.pick(black_box(p), &pick))
        });
        let lr = LeastRequests::new(&specs);
        group.bench_with_input(BenchmarkId::new("least_requests", n), &pool, |b, p| {
            b.iter(|| lr.pick(black_box(p), &pick))
        });
        let p2c = PowerOfTwo::new(&specs);
        group.bench_with_input(BenchmarkId::new("power_of_two", n), &pool, |b, p| {
            b.iter(|| p2c.pick(black_box(p), &pick))
        });
        // An idle pool: every backend ties, the case reservoir sampling must keep cheap.
        let idle = Pool {
            in_flight: vec![0; n],
            weights: vec![1; n],
        };
        let lr_equal = LeastRequests::new(&idle.specs());
        group.bench_with_input(BenchmarkId::new("least_requests_idle", n), &idle, |b, p| {
            b.iter(|| lr_equal.pick(black_box(p), &pick))
        });
        // Equal weights under load: in-flight counts 0..5, a fifth of the pool tied for least.
        let busy = Pool {
            in_flight: pool.in_flight.clone(),
            weights: vec![1; n],
        };
        group.bench_with_input(
            BenchmarkId::new("least_requests_equal_weights", n),
            &busy,
            |b, p| b.iter(|| lr_equal.pick(black_box(p), &pick)),
        );
        // Equal weights, every backend busy and one less than the rest: a single least, found
        // by counting the ties rather than by drawing positions.
        let one_least = Pool {
            in_flight: (0..n)
                .map(|i| {
                    if i == n / 2 {
                        1
                    } else {
                        2 + (i * 7 % 5) as u64
                    }
                })
                .collect(),
            weights: vec![1; n],
        };
        group.bench_with_input(
            BenchmarkId::new("least_requests_one_least", n),
            &one_least,
            |b, p| b.iter(|| lr_equal.pick(black_box(p), &pick)),
        );
        // Weights spread, loads in proportion to them (about two requests per unit of weight):
        // the heaviest-first scan cannot stop early, its worst case.
        let proportional = Pool {
            in_flight: pool
                .weights
                .iter()
                .enumerate()
                .map(|(i, &w)| 2 * u64::from(w) + (i % 3) as u64)
                .collect(),
            weights: pool.weights.clone(),
        };
        group.bench_with_input(
            BenchmarkId::new("least_requests_proportional", n),
            &proportional,
            |b, p| b.iter(|| lr.pick(black_box(p), &pick)),
        );
    }
    group.finish();
}

fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/build");
    group.sample_size(10);
    for n in SIZES {
        let specs = Pool::new(n).specs();
        group.bench_with_input(
            BenchmarkId::new("weighted_round_robin", n),
            &specs,
            |b, s| b.iter(|| WeightedRoundRobin::new(black_box(s))),
        );
        group.bench_with_input(BenchmarkId::new("random", n), &specs, |b, s| {
            b.iter(|| Random::new(black_box(s)))
        });
    }
    group.finish();
}

criterion_group!(benches, picks, builds);
criterion_main!(benches);
