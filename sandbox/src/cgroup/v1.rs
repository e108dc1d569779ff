//! cgroup v1 back end: one directory per hierarchy (cpu and cpuacct may be
//! separate mounts, as on this project's reference machine). Files:
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpu.shares`, `cpu.cfs_burst_us`,
//! `cpuset.cpus` (+ `cpuset.mems`, copied from the parent because a new
//! cpuset starts empty and refuses tasks), `memory.limit_in_bytes` +
//! `memory.memsw.limit_in_bytes`, `pids.max`, `blkio.weight` (or
//! `blkio.bfq.weight`); accounting from `cpuacct.*`, `cpu.stat`,
//! `memory.max_usage_in_bytes`, `memory.oom_control`, `pids.peak`,
//! `pids.events`; kill by freezing (`freezer.state`).

use super::{
    keyed, parse_flat_keyed, read, read_u64, set, set_number, ticks_to_us, user_hz, Cgroup,
};
use crate::limits::{io_weight_to_blkio, parse_cpu_list, weight_to_shares, Limits};
use crate::{Accounting, Result, SandboxError};

/// Creates the cgroup in every hierarchy serverlab uses that is mounted
/// (blkio only when an I/O weight is asked for).
pub(super) fn create(cg: &mut Cgroup, limits: &Limits) -> Result<()> {
    let mut controllers = vec!["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"];
    if limits.io_weight.is_some() {
        controllers.push("blkio");
    }
    let mut made: Vec<std::path::PathBuf> = Vec::new();
    for c in controllers {
        let Some(root) = cg.layout.v1_mount(c).map(|p| p.to_path_buf()) else {
            continue;
        };
        let dir = root.join(&cg.name);
        if !made.contains(&dir) {
            super::mkdir(&dir)?;
            made.push(dir.clone());
            if c == "cpuset" {
                // A fresh cpuset has empty cpus and mems and refuses tasks.
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = read(&root.join(f))?;
                    let target = dir.join(f);
                    std::fs::write(&target, parent.trim())
                        .map_err(|e| SandboxError::io("write", &target, e))?;
                    let back = read(&target)?;
                    if back.trim() != parent.trim() {
                        return Err(SandboxError::Refused {
                            limit: "cpuset",
                            file: target,
                            wrote: parent.trim().into(),
                            outcome: format!("but it reads back {:?}", back.trim()),
                        });
                    }
                }
            }
        }
        cg.push_dir(c, dir);
    }
    if cg.dirs.is_empty() {
        return Err(SandboxError::NoCgroups(
            "no v1 controller serverlab uses is mounted".into(),
        ));
    }
    Ok(())
}

/// The directory of `controller`, or Unsupported for `limit` if not mounted.
fn need<'a>(cg: &'a Cgroup, controller: &str, limit: &'static str) -> Result<&'a std::path::Path> {
    cg.dir(controller).ok_or_else(|| SandboxError::Unsupported {
        limit,
        why: format!("the v1 {controller} controller is not mounted"),
    })
}

pub(super) fn set_quota(cg: &Cgroup, quota_us: Option<u64>, period_us: u64) -> Result<()> {
    let d = need(cg, "cpu", "cpus")?;
    set_number("cpus", &d.join("cpu.cfs_period_us"), period_us)?;
    match quota_us {
        Some(q) => set_number("cpus", &d.join("cpu.cfs_quota_us"), q),
        None => set("cpus", &d.join("cpu.cfs_quota_us"), "-1", |b| b == "-1"),
    }
}

pub(super) fn apply(cg: &Cgroup, limits: &Limits) -> Result<()> {
    let quota = limits.initial_quota_us();
    if quota.is_some() {
        set_quota(cg, quota, limits.period_us())?;
    }
    if let Some(b) = limits.cpu_burst {
        set_number(
            "cpu_burst",
            &need(cg, "cpu", "cpu_burst")?.join("cpu.cfs_burst_us"),
            b.as_micros() as u64,
        )?;
    }
    if let Some(w) = limits.cpu_weight {
        set_number(
            "cpu_weight",
            &need(cg, "cpu", "cpu_weight")?.join("cpu.shares"),
            weight_to_shares(w),
        )?;
    }
    if let Some(list) = &limits.cpuset {
        let want = parse_cpu_list(list).map_err(SandboxError::Invalid)?;
        let f = need(cg, "cpuset", "cpuset")?.join("cpuset.cpus");
        set("cpuset", &f, list, |b| {
            parse_cpu_list(b).ok() == Some(want.clone())
        })?;
    }
    if let Some(m) = limits.memory {
        let d = need(cg, "memory", "memory")?;
        set(
            "memory",
            &d.join("memory.limit_in_bytes"),
            &m.to_string(),
            |b| super::memory_matches(m, b),
        )?;
        // memsw = memory + swap; equal to the memory limit means no swap.
        // It must be written after limit_in_bytes (memsw >= memory always).
        let memsw = d.join("memory.memsw.limit_in_bytes");
        if memsw.exists() || super::swap_active() {
            set("memory (swap off)", &memsw, &m.to_string(), |b| {
                super::memory_matches(m, b)
            })?;
        }
    }
    if let Some(p) = limits.pids {
        set_number("pids", &need(cg, "pids", "pids")?.join("pids.max"), p)?;
    }
    if let Some(w) = limits.io_weight {
        let d = need(cg, "blkio", "io_weight")?;
        if d.join("blkio.weight").exists() {
            set_number("io_weight", &d.join("blkio.weight"), io_weight_to_blkio(w))?;
        } else if d.join("blkio.bfq.weight").exists() {
            // Reads back as "N" on v1 (some kernels: "default N").
            let v = w.min(1000);
            set(
                "io_weight",
                &d.join("blkio.bfq.weight"),
                &v.to_string(),
                |b| {
                    b.lines()
                        .any(|l| l.trim() == v.to_string() || l.trim() == format!("default {v}"))
                },
            )?;
        } else {
            return Err(SandboxError::Unsupported {
                limit: "io_weight",
                why: format!(
                    "neither blkio.weight nor blkio.bfq.weight exists in {}",
                    d.display()
                ),
            });
        }
    }
    Ok(())
}

pub(super) fn cpu_usage_us(cg: &Cgroup) -> Result<u64> {
    let f = need(cg, "cpuacct", "accounting")?.join("cpuacct.usage");
    read_u64(&f)
        .map(|ns| ns / 1000)
        .ok_or_else(|| SandboxError::io("read", &f, std::io::Error::other("not a number")))
}

pub(super) fn current(cg: &Cgroup) -> (Option<u64>, Option<u64>) {
    let mem = cg
        .dir("memory")
        .and_then(|d| read_u64(&d.join("memory.usage_in_bytes")));
    let tasks = cg
        .dir("pids")
        .and_then(|d| read_u64(&d.join("pids.current")));
    (mem, tasks)
}

pub(super) fn memory_split(cg: &Cgroup) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(cg.dir("memory")?.join("memory.stat")).ok()?;
    let k = |key| parse_flat_keyed(&stat, key);
    // Hierarchical totals; `cache` includes shared memory.
    let (rss, shmem, cache) = (
        k("total_rss")?,
        k("total_shmem").unwrap_or(0),
        k("total_cache")?,
    );
    Some((rss + shmem, cache.saturating_sub(shmem)))
}

pub(super) fn has_peaks(cg: &Cgroup) -> (bool, bool) {
    let mem = cg
        .dir("memory")
        .is_some_and(|d| d.join("memory.max_usage_in_bytes").exists());
    let pids = cg.dir("pids").is_some_and(|d| d.join("pids.peak").exists());
    (mem, pids)
}

pub(super) fn read_accounting(cg: &Cgroup, acc: &mut Accounting) -> Result<()> {
    if let Some(d) = cg.dir("cpuacct") {
        acc.cpu_usage_us = read_u64(&d.join("cpuacct.usage")).unwrap_or(0) / 1000;
        let stat = read(&d.join("cpuacct.stat"))?;
        let hz = user_hz();
        acc.cpu_user_us = ticks_to_us(parse_flat_keyed(&stat, "user").unwrap_or(0), hz);
        acc.cpu_system_us = ticks_to_us(parse_flat_keyed(&stat, "system").unwrap_or(0), hz);
    }
    if let Some(d) = cg.dir("cpu") {
        let stat = read(&d.join("cpu.stat"))?;
        let k = |key| parse_flat_keyed(&stat, key);
        acc.nr_periods = k("nr_periods");
        acc.nr_throttled = k("nr_throttled");
        acc.throttled_us = k("throttled_time").map(|ns| ns / 1000);
        acc.nr_bursts = k("nr_bursts");
        acc.burst_us = k("burst_time").map(|ns| ns / 1000);
    }
    if let Some(d) = cg.dir("memory") {
        acc.memory_peak_bytes = read_u64(&d.join("memory.max_usage_in_bytes"));
        acc.oom_kills = keyed(&d.join("memory.oom_control"), "oom_kill");
    }
    if let Some(d) = cg.dir("pids") {
        acc.peak_tasks = read_u64(&d.join("pids.peak"));
        acc.pids_limit_hits = keyed(&d.join("pids.events"), "max");
    }
    Ok(())
}

/// Freeze (so nothing forks while we look), SIGKILL every task, thaw (a
/// frozen task cannot die). Repeated a few times in case a task joined
/// between the list and the freeze; without a freezer hierarchy, just the
/// kill loop.
pub(super) fn kill_all(cg: &Cgroup) -> Result<()> {
    super::kill_frozen(cg, freezer(cg).as_ref())
}

/// `freezer.state`: FROZEN, then THAWED; FREEZING until every task stopped.
pub(super) fn freezer(cg: &Cgroup) -> Option<super::Freezer> {
    let state = cg.dir("freezer")?.join("freezer.state");
    Some(super::Freezer {
        file: state.clone(),
        values: ("FROZEN", "THAWED"),
        frozen: (state, "FROZEN"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tempdir::TempDir;
    use crate::detect::{Layout, V1_CONTROLLERS};
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// Separate mounts per controller, like this project's machine.
    fn fake_v1() -> (TempDir, Layout) {
        let t = TempDir::new("v1");
        let mut mounts = Vec::new();
        for c in V1_CONTROLLERS {
            let root = t.path().join(c);
            fs::create_dir(&root).unwrap();
            mounts.push((c, root));
        }
        fs::write(t.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let layout = Layout::v1(mounts);
        (t, layout)
    }

    fn populate(root: &Path, name: &str, files: &[(&str, &str, &str)]) {
        for (c, f, v) in files {
            fs::write(root.join(c).join(name).join(f), v).unwrap();
        }
    }

    fn content(root: &Path, c: &str, name: &str, f: &str) -> String {
        fs::read_to_string(root.join(c).join(name).join(f)).unwrap()
    }

    #[test]
    fn writes_exact_v1_files() {
        let (t, layout) = fake_v1();
        let r = t.path();
        let name = "serverlab-v1-1-0";
        let limits = Limits {
            cpus: Some(1.5),
            cpu_weight: Some(200),
            cpu_burst: Some(Duration::from_millis(5)),
            cpuset: Some("1".into()),
            memory: Some(64 << 20),
            pids: Some(8),
            io_weight: Some(100),
            credits: None,
            cpu_period: None,
        };
        let cg = Cgroup::create(&layout, name, &limits).unwrap();
        // cpuset.mems and cpus were copied from the parent at creation.
        assert_eq!(content(r, "cpuset", name, "cpuset.mems"), "0");
        assert_eq!(content(r, "cpuset", name, "cpuset.cpus"), "0-1");
        populate(
            r,
            name,
            &[
                ("cpu", "cpu.cfs_period_us", "100000\n"),
                ("cpu", "cpu.cfs_quota_us", "-1\n"),
                ("cpu", "cpu.cfs_burst_us", "0\n"),
                ("cpu", "cpu.shares", "1024\n"),
                ("memory", "memory.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                ("pids", "pids.max", "max\n"),
                ("blkio", "blkio.bfq.weight", "100\n"),
                ("freezer", "freezer.state", "THAWED\n"),
            ],
        );
        cg.apply(&limits).unwrap();
        assert_eq!(content(r, "cpu", name, "cpu.cfs_period_us"), "100000");
        assert_eq!(content(r, "cpu", name, "cpu.cfs_quota_us"), "150000");
        assert_eq!(content(r, "cpu", name, "cpu.cfs_burst_us"), "5000");
        assert_eq!(content(r, "cpu", name, "cpu.shares"), "2048");
        assert_eq!(content(r, "cpuset", name, "cpuset.cpus"), "1");
        assert_eq!(
            content(r, "memory", name, "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(
            content(r, "memory", name, "memory.memsw.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(content(r, "pids", name, "pids.max"), "8");
        assert_eq!(content(r, "blkio", name, "blkio.bfq.weight"), "100");
        // One cgroup.procs per hierarchy: the child joins all of them.
        let mut want: Vec<PathBuf> = V1_CONTROLLERS
            .iter()
            .map(|c| r.join(c).join(name).join("cgroup.procs"))
            .collect();
        want.sort();
        assert_eq!(cg.procs_files(), want);
        cg.set_quota(None, crate::limits::CFS_PERIOD_US).unwrap();
        assert_eq!(content(r, "cpu", name, "cpu.cfs_quota_us"), "-1");
        let short = Limits {
            cpus: Some(0.25),
            cpu_period: Some(Duration::from_millis(10)),
            ..Limits::default()
        };
        cg.apply(&short).unwrap();
        assert_eq!(content(r, "cpu", name, "cpu.cfs_period_us"), "10000");
        assert_eq!(content(r, "cpu", name, "cpu.cfs_quota_us"), "2500");
        cg.remove().unwrap();
        assert!(!r.join("cpu").join(name).exists());
    }

    #[test]
    fn missing_io_weight_file_is_unsupported() {
        let (_t, layout) = fake_v1();
        let limits = Limits {
            io_weight: Some(100),
            ..Default::default()
        };
        let cg = Cgroup::create(&layout, "serverlab-io-1-1", &limits).unwrap();
        let err = cg.apply(&limits).unwrap_err();
        assert!(
            matches!(
                err,
                SandboxError::Unsupported {
                    limit: "io_weight",
                    ..
                }
            ),
            "{err}"
        );
        cg.remove().unwrap();
    }

    #[test]
    fn parses_v1_accounting() {
        let (t, layout) = fake_v1();
        let r = t.path();
        let name = "serverlab-acc-1-2";
        let cg = Cgroup::create(&layout, name, &Limits::default()).unwrap();
        populate(
            r,
            name,
            &[
                ("cpuacct", "cpuacct.usage", "2500000000\n"),
                ("cpuacct", "cpuacct.stat", "user 200\nsystem 50\n"),
                ("cpu", "cpu.stat", "nr_periods 30\nnr_throttled 12\nthrottled_time 900000000\nnr_bursts 1\nburst_time 3000000\n"),
                ("memory", "memory.max_usage_in_bytes", "4194304\n"),
                ("memory", "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
                ("pids", "pids.peak", "5\n"),
                ("pids", "pids.events", "max 3\n"),
            ],
        );
        let mut acc = Accounting::default();
        cg.read_accounting(&mut acc).unwrap();
        let hz = user_hz();
        assert_eq!(acc.cpu_usage_us, 2_500_000);
        assert_eq!(acc.cpu_user_us, 200 * 1_000_000 / hz);
        assert_eq!(acc.cpu_system_us, 50 * 1_000_000 / hz);
        assert_eq!(
            (acc.nr_periods, acc.nr_throttled, acc.throttled_us),
            (Some(30), Some(12), Some(900_000))
        );
        assert_eq!((acc.nr_bursts, acc.burst_us), (Some(1), Some(3000)));
        assert_eq!(acc.memory_peak_bytes, Some(4 << 20));
        assert_eq!(acc.oom_kills, Some(2));
        assert_eq!((acc.peak_tasks, acc.pids_limit_hits), (Some(5), Some(3)));
        assert_eq!(acc.cgroup, "v1");
        cg.remove().unwrap();
    }
}
