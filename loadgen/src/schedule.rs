//! Open-loop arrivals: when each connection should send its next request.
//!
//! As in wrk2, the target rate is split evenly over the connections and each
//! connection keeps its own schedule; a connection that falls behind sends
//! at once to catch up, so the backlog shows up as (corrected) latency and
//! is never silently skipped.

use crate::config::Arrivals;
use std::time::{Duration, Instant};

/// A small, fast pseudo-random generator (SplitMix64). Statistical quality
/// is ample for spacing requests and picking paths; it is not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value works).
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One connection's schedule of intended send times.
#[derive(Debug, Clone)]
pub struct Schedule {
    arrivals: Arrivals,
    /// Mean gap between requests, in seconds.
    gap_s: f64,
    /// Whole-run origin; times are kept as offsets from it in f64 seconds
    /// so that uniform spacing does not accumulate rounding.
    origin: Instant,
    next_s: f64,
    rng: Rng,
}

impl Schedule {
    /// A schedule of `rate` requests per second starting at `origin`. The
    /// first send is placed at a random point of the first gap so that
    /// connections do not all fire together.
    pub fn new(arrivals: Arrivals, rate: f64, origin: Instant, seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let gap_s = 1.0 / rate;
        let next_s = match arrivals {
            Arrivals::Uniform => rng.next_f64() * gap_s,
            Arrivals::Poisson => exponential(&mut rng, gap_s),
        };
        Schedule {
            arrivals,
            gap_s,
            origin,
            next_s,
            rng,
        }
    }

    /// When the next request should be sent.
    pub fn next(&self) -> Instant {
        self.origin + Duration::from_secs_f64(self.next_s)
    }

    /// Moves past the next request (it has been sent).
    pub fn advance(&mut self) {
        self.next_s += match self.arrivals {
            Arrivals::Uniform => self.gap_s,
            Arrivals::Poisson => exponential(&mut self.rng, self.gap_s),
        };
    }

    /// How many requests were due by `at` but not yet sent.
    pub fn behind(&self, at: Instant) -> u64 {
        let at_s = at.saturating_duration_since(self.origin).as_secs_f64();
        if at_s < self.next_s {
            0
        } else {
            // Expected count; exact for uniform spacing.
            1 + ((at_s - self.next_s) / self.gap_s) as u64
        }
    }
}

/// An exponentially distributed gap with the given mean.
fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    // 1 - u is in (0, 1], so the logarithm is finite.
    -(1.0 - rng.next_f64()).ln() * mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_evenly_spaced() {
        let origin = Instant::now();
        let mut s = Schedule::new(Arrivals::Uniform, 100.0, origin, 1);
        let first = s.next();
        assert!(first < origin + Duration::from_millis(10));
        for _ in 0..1000 {
            s.advance();
        }
        let d = s.next() - first;
        assert!((d.as_secs_f64() - 10.0).abs() < 1e-6, "{d:?}");
        assert_eq!(s.behind(origin), 0);
        assert_eq!(s.behind(s.next() + Duration::from_millis(25)), 3);
    }

    #[test]
    fn poisson_has_the_right_mean() {
        let origin = Instant::now();
        let mut s = Schedule::new(Arrivals::Poisson, 1000.0, origin, 7);
        let n = 20_000;
        for _ in 0..n {
            s.advance();
        }
        let mean = (s.next() - origin).as_secs_f64() / n as f64;
        assert!((mean - 0.001).abs() < 0.00005, "{mean}");
    }
}
