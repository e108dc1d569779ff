//! cgroup v2 back end (the unified hierarchy): `cpu.max`, `cpu.weight`,
//! `cpu.max.burst`, `cpuset.cpus`, `memory.max` + `memory.swap.max`,
//! `pids.max`, `io.weight` (else `io.bfq.weight`), `cgroup.kill`, and
//! `cpu.stat`, `memory.peak`, `memory.events`, `pids.peak`, `pids.events`
//! for accounting.
//!
//! Controllers must be enabled in the parent's `cgroup.subtree_control`
//! before a child sees their files; serverlab creates its cgroups directly
//! under the root, which is exempt from the no-internal-processes rule.

use super::{keyed, parse_flat_keyed, read, read_u64, set, set_number, write_existing, Cgroup};
use crate::limits::{parse_cpu_list, Limits};
use crate::{Accounting, Result, SandboxError};

/// Creates the directory after enabling the controllers `limits` needs
/// (cpu, memory, pids always, for accounting; cpuset and io on demand).
pub(super) fn create(cg: &mut Cgroup, limits: &Limits) -> Result<()> {
    let root = cg.layout.v2_root.clone();
    let mut wanted = vec!["cpu", "memory", "pids"];
    if limits.cpuset.is_some() {
        wanted.push("cpuset");
    }
    if limits.io_weight.is_some() {
        wanted.push("io");
    }
    enable_controllers(&root, &wanted)?;
    let dir = root.join(&cg.name);
    super::mkdir(&dir)?;
    cg.push_dir("", dir);
    Ok(())
}

/// Enables, for the children of `root`, those of `wanted` that `root` has
/// (`cgroup.controllers`) and has not handed down yet, in one write to
/// `cgroup.subtree_control` ("+cpu +memory +pids"), read back. A
/// controller `root` lacks is left out here: the limit that needs it then
/// finds its file missing and says so.
pub fn enable_controllers(root: &std::path::Path, wanted: &[&str]) -> Result<()> {
    let available = read(&root.join("cgroup.controllers"))?;
    let control = root.join("cgroup.subtree_control");
    let enabled = read(&control)?;
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .filter(|c| {
            !enabled
                .split_whitespace()
                .any(|e| e.trim_start_matches('+') == *c)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    refuse_internal_processes(root, &missing)?;
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    set("controllers", &control, &value, |back| {
        missing.iter().all(|c| {
            back.split_whitespace()
                .any(|e| e.trim_start_matches('+') == *c)
        })
    })
}

/// cgroup v2 hands controllers to a cgroup's children only if it holds no
/// process of its own; the true root is exempt. A root that is not the
/// true one (inside a container's cgroup namespace, where `/sys/fs/cgroup`
/// is the container's cgroup and the container's processes sit in it)
/// would refuse the write with a bare EBUSY: say why and what to do.
fn refuse_internal_processes(root: &std::path::Path, controllers: &[&str]) -> Result<()> {
    // The true root has no `cgroup.type`; every other cgroup has one.
    if !root.join("cgroup.type").exists() {
        return Ok(());
    }
    let procs = read(&root.join("cgroup.procs"))?;
    let pids: Vec<&str> = procs.split_whitespace().collect();
    if pids.is_empty() {
        return Ok(());
    }
    let root = root.display();
    Err(SandboxError::NoCgroups(format!(
        "{root} is not the root cgroup and holds processes ({} of them, pids {}), so cgroup v2 \
         will not hand its controllers ({}) to containers below it; move its processes into a leaf first, as \
         container entrypoints do: mkdir {root}/init && for p in $(cat {root}/cgroup.procs); \
         do echo $p > {root}/init/cgroup.procs; done",
        pids.len(),
        pids.iter().take(5).copied().collect::<Vec<_>>().join(" ")
            + if pids.len() > 5 { " …" } else { "" },
        controllers.join(" "),
    )))
}

fn dir(cg: &Cgroup) -> &std::path::Path {
    cg.dir("")
        .expect("a v2 cgroup has its directory once created")
}

/// `cpu.max` contents for a quota per period (`max` = unlimited).
pub fn cpu_max_value(quota_us: Option<u64>, period_us: u64) -> String {
    match quota_us {
        Some(q) => format!("{q} {period_us}"),
        None => format!("max {period_us}"),
    }
}

pub(super) fn set_quota(cg: &Cgroup, quota_us: Option<u64>, period_us: u64) -> Result<()> {
    let v = cpu_max_value(quota_us, period_us);
    set("cpus", &dir(cg).join("cpu.max"), &v, |b| b == v)
}

pub(super) fn apply(cg: &Cgroup, limits: &Limits) -> Result<()> {
    let d = dir(cg);
    // Credits start at the baseline; the controller moves the quota later.
    let quota = limits.initial_quota_us();
    if quota.is_some() {
        set_quota(cg, quota, limits.period_us())?;
    }
    if let Some(b) = limits.cpu_burst {
        set_number("cpu_burst", &d.join("cpu.max.burst"), b.as_micros() as u64)?;
    }
    if let Some(w) = limits.cpu_weight {
        set_number("cpu_weight", &d.join("cpu.weight"), w)?;
    }
    if let Some(list) = &limits.cpuset {
        let want = parse_cpu_list(list).map_err(SandboxError::Invalid)?;
        set("cpuset", &d.join("cpuset.cpus"), list, |b| {
            parse_cpu_list(b).ok() == Some(want.clone())
        })?;
    }
    if let Some(m) = limits.memory {
        set("memory", &d.join("memory.max"), &m.to_string(), |b| {
            super::memory_matches(m, b)
        })?;
        let swap = d.join("memory.swap.max");
        if swap.exists() || super::swap_active() {
            set_number("memory (swap off)", &swap, 0)?;
        }
    }
    if let Some(p) = limits.pids {
        set_number("pids", &d.join("pids.max"), p)?;
    }
    if let Some(w) = limits.io_weight {
        let (file, w) = if d.join("io.weight").exists() {
            ("io.weight", w)
        } else if d.join("io.bfq.weight").exists() {
            ("io.bfq.weight", w.min(1000))
        } else {
            return Err(SandboxError::Unsupported {
                limit: "io_weight",
                why: format!(
                    "neither io.weight nor io.bfq.weight exists in {}",
                    d.display()
                ),
            });
        };
        // Both read back as "default N" (plus per-device lines).
        let want = format!("default {w}");
        set("io_weight", &d.join(file), &want, |b| {
            b.lines().any(|l| l.trim() == want)
        })?;
    }
    Ok(())
}

pub(super) fn cpu_usage_us(cg: &Cgroup) -> Result<u64> {
    let path = dir(cg).join("cpu.stat");
    keyed(&path, "usage_usec")
        .ok_or_else(|| SandboxError::io("read", &path, std::io::Error::other("no usage_usec")))
}

pub(super) fn current(cg: &Cgroup) -> (Option<u64>, Option<u64>) {
    let d = dir(cg);
    (
        read_u64(&d.join("memory.current")),
        read_u64(&d.join("pids.current")),
    )
}

pub(super) fn memory_split(cg: &Cgroup) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(dir(cg).join("memory.stat")).ok()?;
    let k = |key| parse_flat_keyed(&stat, key);
    // `file` includes shared memory.
    let (anon, shmem, file) = (k("anon")?, k("shmem").unwrap_or(0), k("file")?);
    Some((anon + shmem, file.saturating_sub(shmem)))
}

pub(super) fn has_peaks(cg: &Cgroup) -> (bool, bool) {
    let d = dir(cg);
    (d.join("memory.peak").exists(), d.join("pids.peak").exists())
}

pub(super) fn read_accounting(cg: &Cgroup, acc: &mut Accounting) -> Result<()> {
    let d = dir(cg);
    let stat_path = d.join("cpu.stat");
    let stat = read(&stat_path)?;
    let k = |key| parse_flat_keyed(&stat, key);
    acc.cpu_usage_us = k("usage_usec").unwrap_or(0);
    acc.cpu_user_us = k("user_usec").unwrap_or(0);
    acc.cpu_system_us = k("system_usec").unwrap_or(0);
    acc.nr_periods = k("nr_periods");
    acc.nr_throttled = k("nr_throttled");
    acc.throttled_us = k("throttled_usec");
    acc.nr_bursts = k("nr_bursts");
    acc.burst_us = k("burst_usec");
    acc.memory_peak_bytes = read_u64(&d.join("memory.peak"));
    acc.oom_kills = keyed(&d.join("memory.events"), "oom_kill");
    acc.peak_tasks = read_u64(&d.join("pids.peak"));
    acc.pids_limit_hits = keyed(&d.join("pids.events"), "max");
    Ok(())
}

/// `cgroup.kill` (kernel ≥ 5.14) kills every task atomically, forks
/// included; older kernels: freeze, SIGKILL each task, thaw.
pub(super) fn kill_all(cg: &Cgroup) -> Result<()> {
    let kill = dir(cg).join("cgroup.kill");
    if kill.exists() {
        return write_existing("kill", &kill, "1");
    }
    super::kill_frozen(cg, freezer(cg).as_ref())
}

/// `cgroup.freeze` (kernel ≥ 5.2): 1, then 0; `cgroup.events` says
/// `frozen 1` once every task has stopped.
pub(super) fn freezer(cg: &Cgroup) -> Option<super::Freezer> {
    let d = dir(cg);
    d.join("cgroup.freeze").exists().then(|| super::Freezer {
        file: d.join("cgroup.freeze"),
        values: ("1", "0"),
        frozen: (d.join("cgroup.events"), "frozen 1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tempdir::TempDir;
    use crate::detect::Layout;
    use crate::limits::Credits;
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    /// A fake unified root: files as the kernel would show them.
    fn fake_root() -> TempDir {
        let t = TempDir::new("v2");
        fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(t.path().join("cgroup.subtree_control"), "memory\n").unwrap();
        t
    }

    /// What the kernel populates in a new v2 cgroup (the subset we touch).
    fn populate(dir: &Path) {
        for (f, v) in [
            ("cgroup.procs", ""),
            ("cgroup.kill", ""),
            ("cpu.max", "max 100000\n"),
            ("cpu.max.burst", "0\n"),
            ("cpu.weight", "100\n"),
            ("cpuset.cpus", "\n"),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("pids.max", "max\n"),
            ("io.weight", "default 100\n"),
        ] {
            fs::write(dir.join(f), v).unwrap();
        }
    }

    fn content(dir: &Path, f: &str) -> String {
        fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn a_root_with_processes_of_its_own_is_refused_with_the_way_out() {
        // A container's cgroup namespace: the root it sees is a cgroup
        // (it has cgroup.type) with the container's processes in it.
        let root = fake_root();
        fs::write(root.path().join("cgroup.type"), "domain\n").unwrap();
        fs::write(root.path().join("cgroup.procs"), "1\n7\n").unwrap();
        let layout = Layout::v2(root.path());
        let err = Cgroup::create(&layout, "serverlab-t-1-0", &Limits::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SandboxError::NoCgroups(_)), "{msg}");
        assert!(
            msg.contains("pids 1 7") && msg.contains("cpu pids"),
            "{msg}"
        );
        assert!(msg.contains("/init/cgroup.procs"), "{msg}");
        assert_eq!(content(root.path(), "cgroup.subtree_control"), "memory\n");
        assert!(!root.path().join("serverlab-t-1-0").exists());

        // Once the processes are in a leaf, or with every controller
        // already handed down, nothing stands in the way.
        fs::write(root.path().join("cgroup.procs"), "").unwrap();
        Cgroup::create(&layout, "serverlab-t-1-1", &Limits::default()).unwrap();
        fs::write(root.path().join("cgroup.procs"), "1\n").unwrap();
        fs::write(
            root.path().join("cgroup.subtree_control"),
            "cpu memory pids\n",
        )
        .unwrap();
        Cgroup::create(&layout, "serverlab-t-1-2", &Limits::default()).unwrap();
    }

    #[test]
    fn writes_exact_v2_files() {
        let root = fake_root();
        let limits = Limits {
            cpus: Some(0.5),
            cpu_weight: Some(200),
            cpu_burst: Some(Duration::from_millis(20)),
            cpuset: Some("0-1".into()),
            memory: Some(64 << 20),
            pids: Some(16),
            io_weight: Some(300),
            credits: None,
            cpu_period: None,
        };
        let cg = Cgroup::create(&Layout::v2(root.path()), "serverlab-t-1-0", &limits).unwrap();
        // Enabled in one write, the already-enabled memory left alone.
        assert_eq!(
            content(root.path(), "cgroup.subtree_control"),
            "+cpu +pids +cpuset +io"
        );
        let d = root.path().join("serverlab-t-1-0");
        populate(&d);
        cg.apply(&limits).unwrap();
        assert_eq!(content(&d, "cpu.max"), "50000 100000");
        assert_eq!(content(&d, "cpu.max.burst"), "20000");
        assert_eq!(content(&d, "cpu.weight"), "200");
        assert_eq!(content(&d, "cpuset.cpus"), "0-1");
        assert_eq!(content(&d, "memory.max"), "67108864");
        assert_eq!(content(&d, "memory.swap.max"), "0");
        assert_eq!(content(&d, "pids.max"), "16");
        assert_eq!(content(&d, "io.weight"), "default 300");
        assert_eq!(cg.procs_files(), vec![d.join("cgroup.procs")]);

        cg.set_quota(None, crate::limits::CFS_PERIOD_US).unwrap();
        assert_eq!(content(&d, "cpu.max"), "max 100000");
        // A shorter period: the quota scales with it.
        let short = Limits {
            cpus: Some(0.25),
            cpu_period: Some(Duration::from_millis(10)),
            ..Limits::default()
        };
        cg.apply(&short).unwrap();
        assert_eq!(content(&d, "cpu.max"), "2500 10000");
        cg.kill_all().unwrap();
        assert_eq!(content(&d, "cgroup.kill"), "1");
        cg.remove().unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn credits_start_at_baseline_and_bfq_fallback() {
        let root = fake_root();
        let limits = Limits {
            credits: Some(Credits {
                baseline: 0.2,
                cap: 10.0,
            }),
            io_weight: Some(5000),
            ..Default::default()
        };
        let cg = Cgroup::create(&Layout::v2(root.path()), "serverlab-c-1-1", &limits).unwrap();
        let d = root.path().join("serverlab-c-1-1");
        populate(&d);
        fs::remove_file(d.join("io.weight")).unwrap();
        fs::write(d.join("io.bfq.weight"), "default 100\n").unwrap();
        cg.apply(&limits).unwrap();
        assert_eq!(content(&d, "cpu.max"), "20000 100000");
        assert_eq!(
            content(&d, "io.bfq.weight"),
            "default 1000",
            "bfq's range ends at 1000"
        );
        cg.remove().unwrap();
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let root = fake_root();
        let limits = Limits {
            io_weight: Some(100),
            ..Default::default()
        };
        let cg = Cgroup::create(&Layout::v2(root.path()), "serverlab-m-1-2", &limits).unwrap();
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
        let limits = Limits {
            pids: Some(5),
            ..Default::default()
        };
        assert!(matches!(
            cg.apply(&limits).unwrap_err(),
            SandboxError::Unsupported { limit: "pids", .. }
        ));
        cg.remove().unwrap();
    }

    #[test]
    fn read_back_mismatch_is_refused() {
        let root = fake_root();
        let cg = Cgroup::create(
            &Layout::v2(root.path()),
            "serverlab-r-1-3",
            &Limits::default(),
        )
        .unwrap();
        let d = root.path().join("serverlab-r-1-3");
        // A directory where the file should be: the write fails like a kernel EINVAL would.
        fs::create_dir(d.join("pids.max")).unwrap();
        let err = cg
            .apply(&Limits {
                pids: Some(5),
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::Refused { limit: "pids", .. }),
            "{err}"
        );
        cg.remove().unwrap();
    }

    #[test]
    fn parses_v2_accounting() {
        let root = fake_root();
        let cg = Cgroup::create(
            &Layout::v2(root.path()),
            "serverlab-a-1-4",
            &Limits::default(),
        )
        .unwrap();
        let d = root.path().join("serverlab-a-1-4");
        fs::write(
            d.join("cpu.stat"),
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 20\nnr_throttled 9\n\
             throttled_usec 450000\nnr_bursts 2\nburst_usec 7000\n",
        )
        .unwrap();
        fs::write(d.join("memory.peak"), "1048576\n").unwrap();
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(d.join("pids.events"), "max 4\n").unwrap();
        let mut acc = Accounting::default();
        cg.read_accounting(&mut acc).unwrap();
        assert_eq!(
            (acc.cpu_usage_us, acc.cpu_user_us, acc.cpu_system_us),
            (3000, 2000, 1000)
        );
        assert_eq!(
            (acc.nr_periods, acc.nr_throttled, acc.throttled_us),
            (Some(20), Some(9), Some(450_000))
        );
        assert_eq!((acc.nr_bursts, acc.burst_us), (Some(2), Some(7000)));
        assert_eq!(acc.memory_peak_bytes, Some(1 << 20));
        assert_eq!(acc.oom_kills, Some(1));
        assert_eq!(
            acc.peak_tasks, None,
            "no pids.peak: the sampler must fill it"
        );
        assert_eq!(acc.pids_limit_hits, Some(4));
        assert_eq!(cg.has_peaks(), (true, false));
        assert_eq!(acc.cgroup, "v2");
        cg.remove().unwrap();
    }
}
