//! The loop's deadlines, earliest first: exact `Wait` ones (one per parked
//! plan) and lazy `Idle` ones (when one fires, the loop checks the
//! connection's current deadline and re-arms if it moved, so a busy
//! connection does not push a timer per request). A deadline names its
//! connection by slot and generation; one whose connection is gone is
//! skipped by the loop when it fires.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Wait,
    Idle,
}

/// A deadline that has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fired {
    pub at: Instant,
    pub slot: usize,
    pub gen: u64,
    pub kind: Kind,
}

/// A min-heap of deadlines.
#[derive(Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64, Kind)>>,
}

impl Timers {
    /// Adds a deadline at `at` for connection `slot` of generation `gen`.
    pub fn push(&mut self, at: Instant, slot: usize, gen: u64, kind: Kind) {
        self.heap.push(Reverse((at, slot, gen, kind)));
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
    }

    /// Takes the earliest deadline if it has come by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Fired> {
        let &Reverse((at, slot, gen, kind)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        Some(Fired {
            at,
            slot,
            gen,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_come_due_in_order_and_not_before() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.push(ms(30), 1, 0, Kind::Idle);
        timers.push(ms(10), 2, 5, Kind::Wait);
        timers.push(ms(20), 3, 1, Kind::Idle);
        timers.push(ms(10), 4, 0, Kind::Wait);
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.pop_due(ms(5)), None, "nothing due yet");
        let due: Vec<usize> = std::iter::from_fn(|| timers.pop_due(ms(20)))
            .map(|f| f.slot)
            .collect();
        assert_eq!(due, [2, 4, 3], "all due by 20 ms, earliest first");
        assert_eq!(timers.next(), Some(ms(30)));
        let last = timers.pop_due(ms(100)).unwrap();
        assert_eq!(
            (last.at, last.slot, last.gen, last.kind),
            (ms(30), 1, 0, Kind::Idle)
        );
        assert_eq!(timers.pop_due(ms(100)), None);
    }
}
