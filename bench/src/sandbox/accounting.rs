//! What a container used, read from its cgroup when it stops (or, for an
//! unlimited run without a cgroup, from `wait4`'s rusage).
//!
//! Where the kernel offers no peak file (v1 `pids.peak` before 6.x, v2
//! `memory.peak` before 5.19), a sampler thread records the highest value it
//! saw; the `*_sampled` flags say so, because a sample can miss a spike.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The marker every output of an unlimited (no cgroup) run carries.
pub const UNLIMITED: &str = "UNLIMITED (no cgroup)";

/// Resource use of one container over its life. Counters the kernel does
/// not provide on this host are `None`, never a made-up zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// The container's name (`serverlab-<hint>-<pid>-<n>`).
    pub name: String,
    /// `"v1"`, `"v2"`, or [`UNLIMITED`] when no cgroup was used.
    pub cgroup: String,
    /// True when the run had no cgroup, hence no limits and partial accounting.
    pub unlimited: bool,
    /// Wall-clock time from spawn to stop, µs.
    pub wall_us: u64,
    /// Total CPU time, µs (v1 `cpuacct.usage`, v2 `usage_usec`).
    pub cpu_usage_us: u64,
    /// User CPU time, µs (v1 `cpuacct.stat` ticks converted with USER_HZ).
    pub cpu_user_us: u64,
    /// System CPU time, µs.
    pub cpu_system_us: u64,
    /// CFS periods that elapsed with the group runnable under a quota.
    pub nr_periods: Option<u64>,
    /// Periods in which the quota ran out (throttled).
    pub nr_throttled: Option<u64>,
    /// Total time throttled, µs.
    pub throttled_us: Option<u64>,
    /// Periods in which banked burst time was used.
    pub nr_bursts: Option<u64>,
    /// Total burst time used, µs.
    pub burst_us: Option<u64>,
    /// Highest memory use, bytes.
    pub memory_peak_bytes: Option<u64>,
    /// True when `memory_peak_bytes` comes from sampling, not a kernel peak.
    pub memory_peak_sampled: bool,
    /// Highest memory the tasks themselves owned (anonymous + shared
    /// memory, no page cache), sampled from `memory.stat`, bytes.
    #[serde(default)]
    pub memory_own_peak_bytes: Option<u64>,
    /// Highest page cache charged to the container (sampled), bytes.
    #[serde(default)]
    pub memory_cache_peak_bytes: Option<u64>,
    /// Processes killed by the OOM killer in this container.
    pub oom_kills: Option<u64>,
    /// Highest number of tasks (processes + threads), the PID-1 reaper included.
    pub peak_tasks: Option<u64>,
    /// True when `peak_tasks` comes from sampling.
    pub peak_tasks_sampled: bool,
    /// Forks refused because of the pids limit (`pids.events` `max`).
    pub pids_limit_hits: Option<u64>,
    /// Credits left at the end, CPU-seconds (only with a credits policy).
    pub credits_left: Option<f64>,
    /// Exit code of the command (128 + signal when killed), if it ended by itself
    /// or was stopped.
    pub exit_code: Option<i32>,
}

impl Accounting {
    /// Average CPUs used over the container's life (usage / wall time).
    pub fn cpus_used(&self) -> f64 {
        if self.wall_us == 0 {
            0.0
        } else {
            self.cpu_usage_us as f64 / self.wall_us as f64
        }
    }

    /// A short human-readable report, one item per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_string(), |v| v.to_string());
        let ms = |v: Option<u64>| {
            v.map_or_else(
                || "n/a".to_string(),
                |v| format!("{:.1} ms", v as f64 / 1e3),
            )
        };
        if self.unlimited {
            let _ = writeln!(s, "container  {}  {}", self.name, UNLIMITED);
        } else {
            let _ = writeln!(s, "container  {}  (cgroup {})", self.name, self.cgroup);
        }
        let _ = writeln!(s, "wall       {:.3} s", self.wall_us as f64 / 1e6);
        let _ = writeln!(
            s,
            "cpu        {:.3} s = {:.2} CPUs (user {:.3} s, system {:.3} s)",
            self.cpu_usage_us as f64 / 1e6,
            self.cpus_used(),
            self.cpu_user_us as f64 / 1e6,
            self.cpu_system_us as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "throttled  {} of {} periods, {}",
            opt(self.nr_throttled),
            opt(self.nr_periods),
            ms(self.throttled_us)
        );
        let _ = writeln!(
            s,
            "bursts     {}, {}",
            opt(self.nr_bursts),
            ms(self.burst_us)
        );
        let peak = self.memory_peak_bytes.map_or_else(
            || "n/a".into(),
            |b| format!("{:.1} MiB", b as f64 / 1048576.0),
        );
        let _ = writeln!(
            s,
            "memory     peak {peak}{}",
            if self.memory_peak_sampled {
                " (sampled)"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "oom kills  {}", opt(self.oom_kills));
        let _ = writeln!(
            s,
            "tasks      peak {}{}, forks refused by pids limit {}",
            opt(self.peak_tasks),
            if self.peak_tasks_sampled {
                " (sampled)"
            } else {
                ""
            },
            opt(self.pids_limit_hits)
        );
        if let Some(c) = self.credits_left {
            let _ = writeln!(s, "credits    {c:.2} CPU-s left");
        }
        if let Some(code) = self.exit_code {
            let _ = writeln!(s, "exit       {code}");
        }
        s
    }
}

/// Converts v1 `cpuacct.stat` ticks (USER_HZ) to µs.
pub fn ticks_to_us(ticks: u64, user_hz: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / user_hz.max(1)
}

/// The kernel's USER_HZ (the unit of `cpuacct.stat`), usually 100.
pub fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Reads `key value` lines (cpu.stat, memory.events, cpuacct.stat,
/// memory.oom_control, pids.events) into a lookup.
pub fn parse_flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next()? == key)
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// Samples memory use and task count where the kernel keeps no peak, and
/// the split of memory into the tasks' own and page cache (no kernel
/// keeps a peak of those), every [`SAMPLE_EVERY`], keeping the maxima.
pub struct Sampler {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<Sampled>>,
}

/// The maxima a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sampled {
    /// Memory use (when sampled).
    pub memory: Option<u64>,
    /// Tasks (when sampled).
    pub tasks: Option<u64>,
    /// The tasks' own memory.
    pub own: Option<u64>,
    /// Page cache.
    pub cache: Option<u64>,
}

/// Sampling interval: short spikes between samples are missed (hence the
/// `*_sampled` flags).
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

impl Sampler {
    /// Starts sampling `cgroup` (memory use only if `memory`, tasks only
    /// if `tasks`; the memory split always).
    pub fn start(
        cgroup: std::sync::Arc<super::cgroup::Cgroup>,
        memory: bool,
        tasks: bool,
    ) -> std::io::Result<Sampler> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let mut max = Sampled::default();
                loop {
                    let (m, t) = cgroup.current();
                    if memory {
                        max.memory = max.memory.max(m);
                    }
                    if tasks {
                        max.tasks = max.tasks.max(t);
                    }
                    if let Some((own, cache)) = cgroup.memory_split() {
                        max.own = max.own.max(Some(own));
                        max.cache = max.cache.max(Some(cache));
                    }
                    match stopped.recv_timeout(SAMPLE_EVERY) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return max,
                    }
                }
            })?;
        Ok(Sampler {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the maxima it saw.
    pub fn stop(&mut self) -> Sampled {
        let _ = self.stop.send(());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_and_ticks() {
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\n";
        assert_eq!(parse_flat_keyed(stat, "user_usec"), Some(1000));
        assert_eq!(parse_flat_keyed(stat, "nr_periods"), Some(7));
        assert_eq!(parse_flat_keyed(stat, "usage"), None, "no prefix matches");
        assert_eq!(ticks_to_us(250, 100), 2_500_000);
    }

    #[test]
    fn unlimited_says_so_in_text_and_json() {
        let a = Accounting {
            unlimited: true,
            cgroup: UNLIMITED.into(),
            ..Default::default()
        };
        assert!(a.to_text().contains(UNLIMITED));
        assert!(serde_json::to_string(&a).unwrap().contains(UNLIMITED));
    }
}
