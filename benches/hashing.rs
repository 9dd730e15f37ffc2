//! Criterion benches for the consistent-hashing balancers: the cost of a pick at 3, 100 and
//! 1000 backends, and of building the ring or table for 1000 (what a reload pays per pool).
//! `cargo bench --bench hashing`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sluice::balance::hash::{hash, mix};
use sluice::balance::{BackendSpec, Backends, Maglev, Pick, RingHash};

/// Equal backends: hashing reads nothing but the count.
struct Equal(usize);

impl Backends for Equal {
    fn len(&self) -> usize {
        self.0
    }
    fn weight(&self, _: usize) -> u32 {
        1
    }
    fn ramp(&self, _: usize) -> f64 {
        1.0
    }
    fn in_flight(&self, _: usize) -> u64 {
        0
    }
    fn latency(&self, _: usize, _: std::time::Instant) -> Option<f64> {
        None
    }
}

fn specs(n: usize) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| BackendSpec {
            id: format!("10.0.{}.{}:8080", i / 256, i % 256),
            weight: 1,
        })
        .collect()
}

/// Keys hashed like request keys; the bench cycles through them so each pick lands somewhere
/// else in the ring or table, as real traffic does, rather than on one cached line.
fn keys() -> Vec<u64> {
    (0..4096u32)
        .map(|i| hash(format!("user-{i}").as_bytes()))
        .collect()
}

fn picks(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("pick");
    for n in [3, 100, 1000] {
        let view = Equal(n);
        let ring = RingHash::new(&specs(n));
        let maglev = Maglev::new(&specs(n));
        group.bench_with_input(BenchmarkId::new("ring_hash", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                ring.pick(&view, black_box(&Pick { key: Some(keys[i]) }))
            })
        });
        group.bench_with_input(BenchmarkId::new("maglev", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                maglev.pick(&view, black_box(&Pick { key: Some(keys[i]) }))
            })
        });
    }
    let view = Equal(100);
    let ring = RingHash::new(&specs(100));
    group.bench_function("ring_hash/100/keyless", |b| {
        b.iter(|| ring.pick(&view, black_box(&Pick::default())))
    });
    group.bench_function("ring_hash/100/fallback_3", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            ring.fallback(black_box(mix(i))).take(3).sum::<usize>()
        })
    });
    group.finish();
}

fn builds(c: &mut Criterion) {
    let specs = specs(1000);
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("ring_hash/1000", |b| {
        b.iter(|| RingHash::new(black_box(&specs)))
    });
    group.bench_function("maglev/1000", |b| b.iter(|| Maglev::new(black_box(&specs))));
    group.finish();
}

criterion_group!(benches, picks, builds);
criterion_main!(benches);
