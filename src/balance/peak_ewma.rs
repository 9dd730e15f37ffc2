//! Peak-EWMA: latency-aware power-of-two choices. Each backend's response latency is tracked by
//! an `Ewma` (peak-sensitive, decaying with time; failures count as slow), and a pick compares two
//! random backends by `latency × (in_flight + 1) / effective_weight`, taking the cheaper.
//!
//! Modelled on Finagle's and linkerd's `PeakEwma`. A backend that turns slow loses its share with
//! its first slow response (the estimate jumps to any sample above it); once it is avoided its
//! estimate decays on read, so it is tried again after a few seconds and, if it has recovered,
//! its next fast responses win its share back.
//!
//! The `Ewma` lives in the backend's shared runtime state (`upstream::Backend`), written by every
//! worker thread when a response head arrives and read by every pick, so it is two atomics and a
//! compare-and-swap loop; reads never write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{rng, BackendSpec, Backends, Pick};

/// The time constant τ: old information keeps weight `exp(−elapsed/τ)`, and an unused
/// backend's estimate falls to 1/e in τ. Finagle and linkerd use 10 s; 2 s is chosen so a
/// backend that was 10× slower than its peers is tried again after τ·ln 10 ≈ 5 s rather than
/// 23 s, and a single stray outlier (a 1 s pause on a 10 ms backend) sidelines it for ≈ 9 s
/// rather than ≈ 46 s. The estimate stays smooth enough: at 10 responses a second τ still
/// averages over about 20 of them, and below that rate latency-awareness matters little.
pub const DECAY: Duration = Duration::from_secs(2);

/// The least latency a failure counts as. A failure must count as slow: a refused connection
/// fails in microseconds, and observing that would make a dead backend the most attractive of
/// all. 1 s is 100–1000× a typical in-datacenter response, so the backend is avoided for
/// roughly τ·ln(1 s / its latency) ≈ 10–14 s before one request probes it again.
pub const FAILURE_FLOOR: Duration = Duration::from_secs(1);

/// The most a failure raises the estimate to. Each failure doubles the current estimate (so a
/// backend whose normal responses take longer than the floor still looks worse after failing),
/// but a burst of in-flight requests failing together must not push it to 2^n seconds, which
/// would take τ·n·ln 2 to decay.
pub const FAILURE_CEILING: Duration = Duration::from_secs(10);

/// The estimate's bits while the backend has never answered: a NaN no estimate can equal.
const NO_DATA: u64 = u64::MAX;

/// The latency a failure observes, given the current (decayed) estimate in nanoseconds: twice
/// the estimate, at least `FAILURE_FLOOR`, at most `FAILURE_CEILING` unless the estimate is
/// already above it (a failure never makes a backend look faster).
pub fn failure_penalty(current: Option<f64>) -> f64 {
    let current = current.unwrap_or(0.0);
    let floor = nanos(FAILURE_FLOOR);
    let ceiling = nanos(FAILURE_CEILING).max(current);
    (2.0 * current).clamp(floor, ceiling)
}

/// A backend's peak-sensitive, time-decaying moving average of response latency, shared by all
/// worker threads. All times are passed in so tests control the clock.
#[derive(Debug)]
pub struct Ewma {
    /// The estimate as of `stamp`, in nanoseconds, as `f64` bits; `NO_DATA` before the first.
    estimate: AtomicU64,
    /// When the estimate was last observed: nanoseconds since `epoch()`.
    stamp: AtomicU64,
    /// τ in nanoseconds.
    tau: f64,
}

impl Default for Ewma {
    fn default() -> Ewma {
        Ewma::new()
    }
}

impl Ewma {
    /// An estimator without data and with the default time constant `DECAY`.
    pub fn new() -> Ewma {
        Ewma::with_decay(DECAY)
    }

    /// An estimator without data whose old information decays with time constant `tau`.
    pub fn with_decay(tau: Duration) -> Ewma {
        Ewma {
            estimate: AtomicU64::new(NO_DATA),
            stamp: AtomicU64::new(0),
            tau: nanos(tau).max(1.0),
        }
    }

    /// The estimate in nanoseconds as of `now`: the stored one decayed toward zero with the
    /// time since the last observation. The decay is what brings an avoided backend back: no
    /// response ever lowers its estimate, so time must. `None` before the first observation.
    pub fn get(&self, now: Instant) -> Option<f64> {
        let bits = self.estimate.load(Ordering::Acquire);
        if bits == NO_DATA {
            return None;
        }
        let stamp = self.stamp.load(Ordering::Acquire);
        Some(f64::from_bits(bits) * self.weight(since_epoch(now).saturating_sub(stamp)))
    }

    /// Records a response that took `rtt`, received at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = nanos(rtt);
        self.update(now, |_| rtt);
    }

    /// Records a failure (connect error, timeout, 5xx) at `now` as a slow response of
    /// `failure_penalty` of the current estimate.
    pub fn observe_failure(&self, now: Instant) {
        self.update(now, failure_penalty);
    }

    /// Folds in the sample `sample(current estimate)`. A sample above the stored estimate
    /// replaces it (peak sensitivity: turning slow shows at once); a lower one is blended in,
    /// old information keeping weight `exp(−elapsed/τ)`, so improvement shows over about τ
    /// however often responses arrive. Either way the result is at least the sample.
    ///
    /// The estimate and its stamp are two atomics, so an observer racing another may decay the
    /// other's fresh estimate by the time since the previous observation. Both samples are then
    /// still counted within their range; the error needs two observations at once, and at the
    /// rates where that is common the gap, and so the extra decay, is small.
    fn update(&self, now: Instant, sample: impl Fn(Option<f64>) -> f64) {
        let now = since_epoch(now);
        let mut bits = self.estimate.load(Ordering::Acquire);
        loop {
            let stamp = self.stamp.load(Ordering::Acquire);
            let next = if bits == NO_DATA {
                sample(None)
            } else {
                let stored = f64::from_bits(bits);
                let w = self.weight(now.saturating_sub(stamp));
                let s = sample(Some(stored * w));
                if s > stored {
                    s
                } else {
                    stored * w + s * (1.0 - w)
                }
            };
            match self.estimate.compare_exchange_weak(
                bits,
                next.to_bits(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // `fetch_max`: a thread whose clock read was a little earlier must not move
                    // the stamp back, which would decay the estimate twice over that gap.
                    self.stamp.fetch_max(now, Ordering::AcqRel);
                    return;
                }
                Err(current) => bits = current,
            }
        }
    }

    /// How much of old information is left after `elapsed` nanoseconds.
    fn weight(&self, elapsed: u64) -> f64 {
        (-(elapsed as f64) / self.tau).exp()
    }
}

/// The instant stamps count from. Set an hour before first use so that instants taken shortly
/// before it (tests build a base instant, then an estimator) are still after it; earlier
/// instants count as the epoch itself.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

fn since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// The latency both candidates get when neither has data: any positive value will do, since
/// only the ratio of two costs matters.
const NO_DATA_RTT: f64 = 1.0;

/// Power-of-two choices over the cost `latency × (in_flight + 1) / effective_weight`.
///
/// The two candidates are drawn uniformly (not by weight): that keeps a pick O(1) at any pool
/// size with ramps changing under it, and weight still counts through the cost.
///
/// A backend without data is priced at its rival's latency, so in-flight counts and weights
/// decide: a new backend takes a fair share of its pairs at once and is measured within one
/// round trip, and cannot be flooded before its first answer because each request in flight
/// raises its cost as for any other. (linkerd's fixed 30 ms default instead depends on scale:
/// starved in a 1 ms pool, flooded in a 300 ms one.)
#[derive(Debug, Default)]
pub struct PeakEwma;

impl PeakEwma {
    /// The estimates live with the backends, so there is nothing to build.
    pub fn new(_backends: &[BackendSpec]) -> PeakEwma {
        PeakEwma
    }

    pub fn pick<B: Backends + ?Sized>(&self, backends: &B, _pick: &Pick) -> usize {
        let n = backends.len();
        if n < 2 {
            return 0;
        }
        let a = rng::below(n as u64) as usize;
        let mut b = rng::below(n as u64 - 1) as usize;
        if b >= a {
            b += 1;
        }
        // (a, b) is a uniformly random ordered pair, so keeping `a` on a tie is a random choice.
        let now = Instant::now();
        let (la, lb) = match (backends.latency(a, now), backends.latency(b, now)) {
            (Some(la), Some(lb)) => (la, lb),
            (Some(l), None) | (None, Some(l)) => (l, l),
            (None, None) => (NO_DATA_RTT, NO_DATA_RTT),
        };
        if cost(backends, b, lb) < cost(backends, a, la) {
            b
        } else {
            a
        }
    }
}

fn cost<B: Backends + ?Sized>(backends: &B, i: usize, latency: f64) -> f64 {
    let load = backends.in_flight(i) as f64 + 1.0;
    // Ramps are in (0, 1]; the floor only keeps a misreported zero from dividing by zero.
    let weight = (f64::from(backends.weight(i)) * backends.ramp(i)).max(1e-9);
    latency * load / weight
}

#[cfg(test)]
mod tests;
