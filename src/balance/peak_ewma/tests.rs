use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::super::testing::Fixed;
use super::super::{Balancer, Pick};
use super::*;
use crate::config::Algorithm;

const MS: f64 = 1e6;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `a` within `tolerance` (relative) of `b`.
fn near(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs()
}

// ---- the estimator ----

#[test]
fn no_data_until_the_first_observation_which_is_taken_whole() {
    let t0 = Instant::now();
    let e = Ewma::new();
    assert_eq!(e.get(t0), None);
    e.observe(ms(40), t0);
    assert_eq!(e.get(t0), Some(40.0 * MS));
}

/// Samples as (ms after t0, rtt in ms).
type Samples = &'static [(u64, u64)];

/// (name, samples, read at ms after t0, expected ms). τ = 2 s throughout.
#[test]
fn estimates_follow_peaks_at_once_and_lower_samples_over_tau() {
    let w = |elapsed_ms: f64| (-elapsed_ms / 2000.0).exp();
    let cases: &[(&str, Samples, u64, f64)] = &[
        ("peak replaces", &[(0, 10), (1, 100)], 1, 100.0),
        (
            "peak after a long quiet",
            &[(0, 10), (60_000, 50)],
            60_000,
            50.0,
        ),
        ("equal sample keeps it", &[(0, 30), (500, 30)], 500, 30.0),
        // Lower sample: old information keeps weight w(elapsed).
        (
            "lower sample blends by elapsed time",
            &[(0, 100), (2000, 10)],
            2000,
            100.0 * w(2000.0) + 10.0 * (1.0 - w(2000.0)),
        ),
        (
            "lower sample right after barely moves it",
            &[(0, 100), (1, 10)],
            1,
            100.0 * w(1.0) + 10.0 * (1.0 - w(1.0)),
        ),
        (
            "lower sample long after takes over",
            &[(0, 100), (60_000, 10)],
            60_000,
            10.0,
        ),
        // Reads decay toward zero with the time since the last observation.
        (
            "read decays with idle time",
            &[(0, 100)],
            2000,
            100.0 * w(2000.0),
        ),
        ("read decays further", &[(0, 100)], 4600, 100.0 * w(4600.0)),
        (
            "a sample below the decayed read is a lower bound",
            &[(0, 100), (4000, 30)],
            4000,
            100.0 * w(4000.0) + 30.0 * (1.0 - w(4000.0)),
        ),
    ];
    for &(name, samples, read_at, want) in cases {
        let t0 = Instant::now();
        let e = Ewma::new();
        for &(at, rtt) in samples {
            e.observe(ms(rtt), t0 + ms(at));
        }
        let got = e.get(t0 + ms(read_at)).unwrap() / MS;
        assert!(
            near(got, want, 1e-6),
            "{name}: got {got} ms, want {want} ms"
        );
    }
}

#[test]
fn steady_lower_samples_pull_the_estimate_down_within_a_few_tau() {
    let t0 = Instant::now();
    let e = Ewma::new();
    e.observe(ms(100), t0);
    // 100 responses a second at 10 ms: after 2τ most of the peak has gone, after 7τ all of it.
    let after = |from: u64, until: u64| {
        for t in (from..=until).step_by(10) {
            e.observe(ms(10), t0 + ms(t));
        }
        e.get(t0 + ms(until)).unwrap() / MS
    };
    let after_2tau = after(10, 4000);
    assert!(after_2tau < 10.0 + 90.0 * 0.14, "{after_2tau}");
    let after_7tau = after(4010, 14_000);
    assert!(near(after_7tau, 10.0, 0.01), "{after_7tau}");
}

#[test]
fn reads_do_not_change_the_estimate() {
    let t0 = Instant::now();
    let e = Ewma::new();
    e.observe(ms(100), t0);
    let late = e.get(t0 + Duration::from_secs(30)).unwrap();
    assert!(late < 1.0 * MS);
    assert_eq!(e.get(t0), Some(100.0 * MS));
}

#[test]
fn instants_out_of_order_do_not_inflate_or_reverse_the_decay() {
    let t0 = Instant::now() + Duration::from_secs(5);
    let e = Ewma::new();
    e.observe(ms(100), t0);
    // Another thread's clock read a little earlier: no negative elapsed time.
    e.observe(ms(10), t0 - ms(1));
    let got = e.get(t0).unwrap() / MS;
    assert!((10.0..=100.0).contains(&got), "{got}");
    assert!(near(got, 100.0, 1e-3), "{got}");
}

#[test]
fn failure_penalty_table() {
    let cases: &[(Option<f64>, f64)] = &[
        (None, 1000.0),
        (Some(0.0), 1000.0),
        (Some(10.0), 1000.0),
        (Some(499.0), 1000.0),
        (Some(800.0), 1600.0),
        (Some(4000.0), 8000.0),
        (Some(6000.0), 10_000.0),
        (Some(10_000.0), 10_000.0),
        // Never below the estimate, even above the ceiling.
        (Some(25_000.0), 25_000.0),
    ];
    for &(current, want) in cases {
        let got = failure_penalty(current.map(|c| c * MS)) / MS;
        assert!(near(got, want, 1e-9), "{current:?}: got {got}, want {want}");
    }
}

#[test]
fn failures_count_as_slow_and_a_burst_is_capped() {
    let t0 = Instant::now();
    let e = Ewma::new();
    e.observe_failure(t0);
    assert_eq!(e.get(t0), Some(1000.0 * MS), "no data: the floor");

    let e = Ewma::new();
    e.observe(ms(2), t0);
    e.observe_failure(t0 + ms(1));
    let got = e.get(t0 + ms(1)).unwrap() / MS;
    assert!(
        near(got, 1000.0, 1e-9),
        "a fast failure must not look fast: {got}"
    );

    for i in 0..50 {
        e.observe_failure(t0 + ms(2 + i));
    }
    let got = e.get(t0 + ms(51)).unwrap() / MS;
    assert!(
        near(got, 10_000.0, 0.01),
        "burst capped at the ceiling: {got}"
    );
    // ...so the backend is tried again within about τ·ln(10 s / 2 ms) ≈ 17 s.
    let later = e.get(t0 + Duration::from_secs(18)).unwrap() / MS;
    assert!(later < 2.0, "{later}");
}

#[test]
fn concurrent_observers_keep_the_estimate_within_the_samples() {
    let t0 = Instant::now();
    let e = Arc::new(Ewma::new());
    let threads: Vec<_> = (0..8u64)
        .map(|k| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    // Samples 10..=17 ms, times advancing 1 µs per sample on every thread.
                    e.observe(ms(10 + (i + k) % 8), t0 + Duration::from_micros(i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let at = t0 + Duration::from_micros(20_000);
    let got = e.get(at).unwrap() / MS;
    assert!((9.9..=17.0).contains(&got), "{got}");

    // A peak observed by one thread among many lower ones is not lost.
    let e = Arc::new(Ewma::new());
    e.observe(ms(10), t0);
    let threads: Vec<_> = (0..8u64)
        .map(|k| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    let rtt = if k == 0 && i == 2_500 { 500 } else { 10 };
                    e.observe(ms(rtt), t0 + Duration::from_micros(i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let got = e.get(t0 + Duration::from_micros(5_000)).unwrap() / MS;
    assert!(
        got > 400.0,
        "the peak survives the racing lower samples: {got}"
    );
}

// ---- the algorithm ----

fn shares(b: &Fixed, picks: usize) -> Vec<f64> {
    let pe = PeakEwma::new(&b.specs());
    let mut counts = vec![0usize; b.weights.len()];
    for _ in 0..picks {
        counts[pe.pick(b, &Pick::default())] += 1;
    }
    counts.iter().map(|&c| c as f64 / picks as f64).collect()
}

#[test]
fn a_single_backend_is_always_picked() {
    let b = Fixed::weights(&[5]);
    assert_eq!(PeakEwma::new(&b.specs()).pick(&b, &Pick::default()), 0);
}

#[test]
fn a_backend_ten_times_slower_gets_a_small_share() {
    let mut b = Fixed::weights(&[1, 1, 1]);
    b.latency = vec![Some(10.0 * MS), Some(10.0 * MS), Some(100.0 * MS)];
    let s = shares(&b, 10_000);
    assert!(s[2] < 0.15, "{s:?}");
    // Even when the fast ones are busier, up to 10× the in-flight requests.
    b.in_flight = vec![4, 6, 0];
    let s = shares(&b, 10_000);
    assert!(s[2] < 0.15, "{s:?}");
    assert!(s[0] > s[1], "{s:?}");
}

#[test]
fn with_equal_latency_the_least_loaded_wins() {
    let mut b = Fixed::weights(&[1, 1, 1]);
    b.latency = vec![Some(10.0 * MS); 3];
    b.in_flight = vec![0, 2, 5];
    let s = shares(&b, 10_000);
    // Power of two among three: the idlest wins both its pairs, the busiest none.
    assert!(near(s[0], 2.0 / 3.0, 0.05), "{s:?}");
    assert!(near(s[1], 1.0 / 3.0, 0.1), "{s:?}");
    assert_eq!(s[2], 0.0, "{s:?}");
}

#[test]
fn ties_are_broken_at_random() {
    let mut b = Fixed::weights(&[1, 1]);
    b.latency = vec![Some(10.0 * MS); 2];
    let s = shares(&b, 10_000);
    assert!(near(s[0], 0.5, 0.06), "{s:?}");
}

#[test]
fn cost_divides_by_effective_weight() {
    let mut b = Fixed::weights(&[2, 2]);
    b.latency = vec![Some(10.0 * MS); 2];
    b.ramps = vec![1.0, 0.5];
    assert_eq!(shares(&b, 1000), [1.0, 0.0]);
    // Weight 3 at twice the latency is cheaper than weight 1: 20/3 < 10/1.
    let mut b = Fixed::weights(&[1, 3]);
    b.latency = vec![Some(10.0 * MS), Some(20.0 * MS)];
    assert_eq!(shares(&b, 1000), [0.0, 1.0]);
}

#[test]
fn a_backend_without_data_is_priced_at_its_rival() {
    let mut b = Fixed::weights(&[1, 1]);
    b.latency = vec![None, Some(10.0 * MS)];
    let s = shares(&b, 10_000);
    assert!(near(s[0], 0.5, 0.06), "idle: an even chance {s:?}");
    b.in_flight = vec![1, 0];
    assert_eq!(
        shares(&b, 1000),
        [0.0, 1.0],
        "busy: no flood before it answers"
    );
    b.latency = vec![None, None];
    assert_eq!(
        shares(&b, 1000),
        [0.0, 1.0],
        "neither has data: least loaded"
    );
}

#[test]
fn the_balancer_dispatches_and_falls_back_through_every_backend() {
    let mut b = Fixed::weights(&[1, 1, 1]);
    b.latency = vec![Some(50.0 * MS), Some(1.0 * MS), Some(50.0 * MS)];
    b.in_flight = vec![0, 0, 0];
    let balancer = Balancer::new(Algorithm::PeakEwma, &b.specs());
    let mut order: Vec<usize> = balancer.select(&b, &Pick::default()).collect();
    order.sort_unstable();
    assert_eq!(order, [0, 1, 2]);
}

/// Requests arriving at a fixed rate, each picked over live in-flight counts and estimates and
/// answered after its backend's latency at the time it was sent: the whole feedback loop, on a
/// simulated clock.
struct Sim {
    backends: Fixed,
    ewmas: Vec<Ewma>,
    /// (done at, backend, sent at), in nanoseconds since `t0`.
    pending: BinaryHeap<Reverse<(u64, usize, u64)>>,
    t0: Instant,
    now: u64,
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim {
            backends: Fixed::weights(&vec![1; n]),
            ewmas: (0..n).map(|_| Ewma::new()).collect(),
            pending: BinaryHeap::new(),
            t0: Instant::now(),
            now: 0,
        }
    }

    /// Runs for `duration` with one request every `interval`; returns picks per backend.
    fn run(
        &mut self,
        duration: Duration,
        interval: Duration,
        latency: impl Fn(usize) -> Duration,
    ) -> Vec<usize> {
        let pe = PeakEwma::new(&self.backends.specs());
        let mut counts = vec![0; self.ewmas.len()];
        let end = self.now + duration.as_nanos() as u64;
        while self.now < end {
            while let Some(&Reverse((done, i, sent))) = self.pending.peek() {
                if done > self.now {
                    break;
                }
                self.pending.pop();
                self.ewmas[i].observe(Duration::from_nanos(done - sent), self.at(done));
                self.backends.in_flight[i] -= 1;
            }
            let now = self.at(self.now);
            for (i, e) in self.ewmas.iter().enumerate() {
                self.backends.latency[i] = e.get(now);
            }
            let i = pe.pick(&self.backends, &Pick::default());
            counts[i] += 1;
            self.backends.in_flight[i] += 1;
            let done = self.now + latency(i).as_nanos() as u64;
            self.pending.push(Reverse((done, i, self.now)));
            self.now += interval.as_nanos() as u64;
        }
        counts
    }

    fn at(&self, nanos: u64) -> Instant {
        self.t0 + Duration::from_nanos(nanos)
    }
}

fn share(counts: &[usize], i: usize) -> f64 {
    counts[i] as f64 / counts.iter().sum::<usize>() as f64
}

#[test]
fn under_load_a_backend_ten_times_slower_gets_a_small_share() {
    for interval in [ms(1), Duration::from_micros(200), ms(20)] {
        let mut sim = Sim::new(3);
        let slow = |i: usize| if i == 2 { ms(100) } else { ms(10) };
        sim.run(Duration::from_secs(1), interval, slow);
        let counts = sim.run(interval * 10_000, interval, slow);
        assert!(share(&counts, 2) < 0.15, "every {interval:?}: {counts:?}");
    }
}

#[test]
fn a_backend_that_turns_slow_loses_its_share_and_wins_it_back_when_it_recovers() {
    let mut sim = Sim::new(3);
    let every = ms(2);
    let fast = |_: usize| ms(10);
    let slow = |i: usize| if i == 2 { ms(100) } else { ms(10) };
    let second = Duration::from_secs(1);

    sim.run(second * 5, every, fast);
    let before = sim.run(second * 5, every, fast);
    assert!(share(&before, 2) > 0.25, "healthy: {before:?}");

    let first = sim.run(second, every, slow);
    let slow_after = sim.run(second * 9, every, slow);
    assert!(
        share(&first, 2) < 0.15,
        "loses it within a second: {first:?}"
    );
    assert!(share(&slow_after, 2) < 0.1, "while slow: {slow_after:?}");

    let mut recovered = Vec::new();
    for _ in 0..10 {
        recovered.push(share(&sim.run(second, every, fast), 2));
    }
    // Its estimate must first decay enough for a probe, then blend down over about τ.
    let late = recovered[6..].iter().sum::<f64>() / 4.0;
    assert!(
        late > 0.25,
        "back to most of its fair third within seconds, per second: {recovered:?}"
    );
}
