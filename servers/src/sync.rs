//! Waiting on a condition variable with a deadline, written once for the
//! places that drain workers on shutdown (connection threads, children).

use std::sync::{Condvar, MutexGuard};
use std::time::Instant;

/// Waits on `changed` until `done(&state)` holds or `deadline` passes;
/// returns whether it holds. `changed` must be notified whenever the state
/// behind `guard` changes.
pub fn wait_until<T>(
    changed: &Condvar,
    mut guard: MutexGuard<'_, T>,
    deadline: Instant,
    done: impl Fn(&T) -> bool,
) -> bool {
    while !done(&guard) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        guard = changed
            .wait_timeout(guard, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn waits_for_the_condition_or_the_deadline() {
        let pair = Arc::new((Mutex::new(2), Condvar::new()));
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(!wait_until(&pair.1, pair.0.lock().unwrap(), soon, |n| *n == 0));
        let other = pair.clone();
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                *other.0.lock().unwrap() -= 1;
                other.1.notify_all();
            }
        });
        let later = Instant::now() + Duration::from_secs(5);
        assert!(wait_until(&pair.1, pair.0.lock().unwrap(), later, |n| *n == 0));
        t.join().unwrap();
    }
}
