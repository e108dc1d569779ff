//! Warnings that can repeat many times a second (out of file descriptors,
//! fork refused) said at most once a second, with a count of those left
//! unsaid, so a server under attack does not flood its log.

use std::time::{Duration, Instant};

/// How often one kind of warning may be said.
pub const EVERY: Duration = Duration::from_secs(1);

/// One kind of repeated warning.
#[derive(Debug, Default)]
pub struct Throttled {
    last: Option<Instant>,
    unsaid: u64,
}

impl Throttled {
    /// A warning never said yet.
    pub const fn new() -> Throttled {
        Throttled {
            last: None,
            unsaid: 0,
        }
    }

    /// Whether to say the warning now: `Some(n)` with the number of times
    /// it was left unsaid since it was last said, `None` to stay quiet.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            self.unsaid += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// ` (and 41 more times in the last second)`, or nothing.
pub fn more(unsaid: u64) -> String {
    match unsaid {
        0 => String::new(),
        n => format!(" (and {n} more times since the last such warning)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_once_a_second_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut w = Throttled::new();
        assert_eq!(w.check(t0), Some(0));
        // Twenty attempts in the next second: all quiet, all counted.
        for i in 1..=20 {
            assert_eq!(w.check(t0 + Duration::from_millis(i * 45)), None);
        }
        assert_eq!(w.check(t0 + Duration::from_millis(1000)), Some(20));
        assert_eq!(w.check(t0 + Duration::from_millis(1500)), None);
        assert_eq!(w.check(t0 + Duration::from_millis(3000)), Some(1));
        assert_eq!(more(0), "");
        assert!(more(3).contains("3 more times"));
    }
}
