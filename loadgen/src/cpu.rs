//! The generator's own CPU use (Linux: `getrusage(RUSAGE_THREAD)`), so a
//! report can say when the generator, not the server, was the bottleneck.

use std::time::Duration;

/// CPU time a thread has used so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In user mode.
    pub user: Duration,
    /// In the kernel on the thread's behalf.
    pub system: Duration,
}

impl CpuTime {
    /// The calling thread's CPU time (zero if the kernel refuses, which it
    /// does not on Linux ≥ 2.6.26).
    pub fn this_thread() -> CpuTime {
        // SAFETY: rusage is plain data; getrusage fills it on success.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a rusage.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
            return CpuTime::default();
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        CpuTime {
            user: tv(ru.ru_utime),
            system: tv(ru.ru_stime),
        }
    }

    /// CPU used between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// User plus system time.
    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// A thread busier than this (CPU time / wall time) was the bottleneck:
/// it had no idle time left to wait for the server.
pub const BUSY_THRESHOLD: f64 = 0.9;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_uses_cpu() {
        let before = CpuTime::this_thread();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let used = CpuTime::this_thread().since(before).total();
        // Generous: the machine may be loaded, but a 50 ms spin gets some CPU.
        assert!(used > Duration::from_millis(5), "{used:?}");
    }
}
