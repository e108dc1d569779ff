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

#[cfg(test)]
mod tests {
    use super::*;

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
