//! Burstable-instance CPU credits, enforced from user space.
//!
//! CFS burst (`cpu.max.burst`) banks at most one quota within a period;
//! cloud burstable instances bank credits over minutes. So a controller
//! thread reads the container's CPU usage every [`TICK`] and moves the
//! quota: a container running below its baseline earns credits (the unused
//! part of the baseline, in CPU-seconds, up to the cap); one running above
//! spends them; with credits left the quota is opened to the ceiling, with
//! none it is held at the baseline. Credits start at zero.
//!
//! The policy is the pure [`CreditState::step`], unit-tested; the thread
//! only feeds it usage readings.

use super::cgroup::Cgroup;
use super::limits::{Credits, Limits, CFS_PERIOD_US};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the controller looks at usage.
pub const TICK: Duration = Duration::from_millis(100);

/// The credit balance and the quota it implies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CreditState {
    /// The policy.
    pub credits: Credits,
    /// The quota ceiling in CPUs when credits are available.
    pub ceiling: f64,
    /// Credits banked, CPU-seconds (negative: debt from the last burst tick).
    pub balance: f64,
    /// Whether the quota is currently open to the ceiling.
    pub bursting: bool,
}

impl CreditState {
    /// Starts with no credits, at the baseline.
    pub fn new(credits: Credits, ceiling: f64) -> CreditState {
        CreditState {
            credits,
            ceiling: ceiling.max(credits.baseline),
            balance: 0.0,
            bursting: false,
        }
    }

    /// Accounts `used_cpus` over `dt_s` seconds and returns the quota (in
    /// CPUs) for the next interval.
    pub fn step(&mut self, used_cpus: f64, dt_s: f64) -> f64 {
        self.balance =
            (self.balance + (self.credits.baseline - used_cpus) * dt_s).min(self.credits.cap);
        // Any credit opens the quota for the next tick. The last tick of a
        // burst may overspend by at most (ceiling − baseline) × tick: that
        // debt (a negative balance) is repaid before the next burst, so
        // over time the container gets exactly baseline + earned credit.
        self.bursting = self.balance > 0.0;
        if self.bursting {
            self.ceiling
        } else {
            self.credits.baseline
        }
    }
}

/// The running controller; [`CreditController::stop`] returns the balance.
pub struct CreditController {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    state: Arc<Mutex<CreditState>>,
}

impl CreditController {
    /// Starts the controller thread for `cgroup`.
    pub fn start(
        cgroup: Arc<Cgroup>,
        credits: Credits,
        ceiling: f64,
    ) -> std::io::Result<CreditController> {
        let state = Arc::new(Mutex::new(CreditState::new(credits, ceiling)));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name("credits".into())
            .spawn(move || {
                let mut last = (Instant::now(), cgroup.cpu_usage_us().unwrap_or(0));
                let mut quota = credits.baseline;
                // recv_timeout doubles as the tick and the stop signal.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    let now = (Instant::now(), cgroup.cpu_usage_us().unwrap_or(last.1));
                    let dt = now.0.duration_since(last.0).as_secs_f64();
                    let used = now.1.saturating_sub(last.1) as f64 / 1e6 / dt.max(1e-6);
                    last = now;
                    let next = shared
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .step(used, dt);
                    if next != quota {
                        if let Err(e) = cgroup
                            .set_quota(Some(Limits::quota_us(next, CFS_PERIOD_US)), CFS_PERIOD_US)
                        {
                            tracing::warn!("credits: cannot move the quota: {e}");
                        }
                        quota = next;
                    }
                }
            })?;
        Ok(CreditController {
            stop,
            thread: Some(thread),
            state,
        })
    }

    /// Stops the thread and returns the credits left, CPU-seconds (a debt reads as 0).
    pub fn stop(&mut self) -> f64 {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .balance
            .max(0.0)
    }
}

impl Drop for CreditController {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earn_while_idle_spend_while_busy_cap_and_floor() {
        let mut s = CreditState::new(
            Credits {
                baseline: 0.2,
                cap: 1.0,
            },
            2.0,
        );
        // Busy from the start: no credits, held at the baseline.
        assert_eq!(s.step(0.2, 0.1), 0.2);
        assert_eq!(s.balance, 0.0);
        // Idle 10 s: earns 0.2 CPU-s per s, capped at 1.0.
        for _ in 0..100 {
            s.step(0.0, 0.1);
        }
        assert!((s.balance - 1.0).abs() < 1e-9, "capped: {}", s.balance);
        assert_eq!(
            s.step(0.0, 0.1),
            2.0,
            "credits open the quota to the ceiling"
        );
        // Busy at 2 CPUs: spends 1.8 CPU-s per s → about 0.55 s of burst.
        let mut ticks = 0;
        while s.step(2.0, 0.1) == 2.0 {
            ticks += 1;
            assert!(ticks < 20);
        }
        assert!((4..=6).contains(&ticks), "{ticks} ticks of burst");
        assert!(
            s.balance > -0.18 - 1e-9 && s.balance <= 0.0,
            "at most one tick of debt: {}",
            s.balance
        );
        assert_eq!(
            s.step(0.2, 0.1),
            0.2,
            "at the baseline the balance neither grows nor shrinks"
        );
    }
}
