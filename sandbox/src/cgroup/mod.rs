//! A thin cgroupfs layer: one [`Cgroup`] value per container, backed by the
//! v1 (`v1.rs`) or v2 (`v2.rs`) file layout chosen by [`Layout`].
//!
//! Every limit is written, then read back and compared: a value the kernel
//! refused (write error) or altered (read-back differs) is an error, and a
//! limit whose file does not exist here is [`SandboxError::Unsupported`],
//! never a silent no-op. Files are plain paths under an injectable root, so
//! the unit tests run both back ends against fake trees in a temp dir.

pub mod sampler;
pub mod v1;
pub mod v2;

use super::detect::{CgroupVersion, Layout};
use super::{Accounting, Limits, Result, SandboxError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One container's cgroup (v2: one directory; v1: one per hierarchy).
#[derive(Debug)]
pub struct Cgroup {
    layout: Layout,
    name: String,
    /// v1: controller → this cgroup's directory in that hierarchy; v2: `""` → dir.
    dirs: Vec<(String, PathBuf)>,
}

impl Cgroup {
    /// Creates the cgroup `name` directly under the layout's roots, with the
    /// controllers `limits` needs. Nothing joins it yet. On error, whatever
    /// was created is removed again.
    pub fn create(layout: &Layout, name: &str, limits: &Limits) -> Result<Cgroup> {
        let mut cg = Cgroup {
            layout: layout.clone(),
            name: name.to_string(),
            dirs: Vec::new(),
        };
        let made = match layout.version {
            CgroupVersion::V2 => v2::create(&mut cg, limits),
            CgroupVersion::V1 => v1::create(&mut cg, limits),
        };
        if let Err(e) = made {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// The cgroup's name (the last path component everywhere).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which back end.
    pub fn version(&self) -> CgroupVersion {
        self.layout.version
    }

    /// The directory holding `controller`'s files (v2: the one directory).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match self.layout.version {
            CgroupVersion::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            CgroupVersion::V1 => self
                .dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    /// Every distinct directory of this cgroup.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut d: Vec<PathBuf> = self.dirs.iter().map(|(_, d)| d.clone()).collect();
        d.sort();
        d.dedup();
        d
    }

    /// The `cgroup.procs` files a task writes itself into (`0` = the writer)
    /// to join: one per hierarchy.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Applies every limit set in `limits`, each read back. `max_cpus` is the
    /// quota ceiling a credits policy may open up to.
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        match self.layout.version {
            CgroupVersion::V2 => v2::apply(self, limits),
            CgroupVersion::V1 => v1::apply(self, limits),
        }
    }

    /// Sets the CPU quota per period (`None` = unlimited), read back.
    pub fn set_quota(&self, quota_us: Option<u64>, period_us: u64) -> Result<()> {
        match self.layout.version {
            CgroupVersion::V2 => v2::set_quota(self, quota_us, period_us),
            CgroupVersion::V1 => v1::set_quota(self, quota_us, period_us),
        }
    }

    /// CPU time used so far, µs.
    pub fn cpu_usage_us(&self) -> Result<u64> {
        match self.layout.version {
            CgroupVersion::V2 => v2::cpu_usage_us(self),
            CgroupVersion::V1 => v1::cpu_usage_us(self),
        }
    }

    /// Current memory use and task count, for the sampler (`None` if unreadable).
    pub fn current(&self) -> (Option<u64>, Option<u64>) {
        match self.layout.version {
            CgroupVersion::V2 => v2::current(self),
            CgroupVersion::V1 => v1::current(self),
        }
    }

    /// The memory the tasks own (anonymous + shared memory: heaps, stacks,
    /// the session table's shared mapping) and the page cache charged to
    /// the cgroup, from `memory.stat`: (own, cache) bytes. The cache is
    /// charged to whichever cgroup read a file first, so it is shown
    /// apart and never compared.
    pub fn memory_split(&self) -> Option<(u64, u64)> {
        match self.layout.version {
            CgroupVersion::V2 => v2::memory_split(self),
            CgroupVersion::V1 => v1::memory_split(self),
        }
    }

    /// Whether the kernel keeps peak files: (memory peak, pids peak).
    pub fn has_peaks(&self) -> (bool, bool) {
        match self.layout.version {
            CgroupVersion::V2 => v2::has_peaks(self),
            CgroupVersion::V1 => v1::has_peaks(self),
        }
    }

    /// Fills the cgroup counters of `acc` (CPU, throttling, bursts, memory
    /// peak, OOM kills, tasks). Sampled peaks are merged by the caller.
    pub fn read_accounting(&self, acc: &mut Accounting) -> Result<()> {
        acc.cgroup = self.layout.version.as_str().into();
        match self.layout.version {
            CgroupVersion::V2 => v2::read_accounting(self, acc),
            CgroupVersion::V1 => v1::read_accounting(self, acc),
        }
    }

    /// Host pids of every task in the cgroup (all hierarchies).
    pub fn tasks(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Kills every task (v2 `cgroup.kill`; v1, and v2 kernels before 5.14:
    /// freeze, SIGKILL each, thaw) and waits (bounded) until the cgroup is
    /// empty.
    pub fn kill_all(&self) -> Result<()> {
        match self.layout.version {
            CgroupVersion::V2 => v2::kill_all(self)?,
            CgroupVersion::V1 => v1::kill_all(self)?,
        }
        self.wait_empty()
    }

    /// [`Cgroup::kill_all`] the way a kernel without `cgroup.kill` must
    /// (freeze, SIGKILL each task, thaw), even where `cgroup.kill` exists:
    /// public so that this path is exercised on new kernels too.
    pub fn kill_all_frozen(&self) -> Result<()> {
        let freezer = match self.layout.version {
            CgroupVersion::V2 => v2::freezer(self),
            CgroupVersion::V1 => v1::freezer(self),
        };
        kill_frozen(self, freezer.as_ref())?;
        self.wait_empty()
    }

    /// Waits up to 3 s for the last killed task to go; an error names the
    /// survivors.
    fn wait_empty(&self) -> Result<()> {
        wait_until(Duration::from_secs(3), || self.tasks().is_empty());
        let left = self.tasks();
        if left.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::io(
                "kill",
                self.procs_files().first().cloned().unwrap_or_default(),
                std::io::Error::other(format!("tasks still alive after SIGKILL: {left:?}")),
            ))
        }
    }

    /// Removes the cgroup's directories, retrying while dying tasks drain
    /// (rmdir fails with EBUSY until the last one is gone). Idempotent.
    pub fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.dirs().iter().rev() {
            if let Err(e) = rmdir_retry(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub(crate) fn push_dir(&mut self, controller: &str, dir: PathBuf) {
        self.dirs.push((controller.to_string(), dir));
    }
}

/// A cgroup's freezer, as each version spells it.
pub(crate) struct Freezer {
    /// The file written to freeze and to thaw.
    pub file: PathBuf,
    /// What is written there: (freeze, thaw).
    pub values: (&'static str, &'static str),
    /// The file, and the line in it, that say every task has stopped
    /// (freezing is asynchronous: a task may fork until then).
    pub frozen: (PathBuf, &'static str),
}

/// Kills every task without `cgroup.kill`: freeze, so that no task forks
/// between the listing and the signals; SIGKILL each task; thaw (a v1
/// task frozen with a pending SIGKILL dies only when thawed). Repeated at
/// most 5 times while tasks remain. Without a freezer, the signals alone.
pub(crate) fn kill_frozen(cg: &Cgroup, freezer: Option<&Freezer>) -> Result<()> {
    for _ in 0..5 {
        if cg.tasks().is_empty() {
            break;
        }
        if let Some(f) = freezer {
            write_existing("kill", &f.file, f.values.0)?;
            let (file, line) = (&f.frozen.0, f.frozen.1);
            wait_until(Duration::from_secs(1), || {
                read(file).is_ok_and(|s| s.lines().any(|l| l.trim() == line))
            });
        }
        for pid in cg.tasks() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(f) = freezer {
            write_existing("kill", &f.file, f.values.1)?;
        }
        wait_until(Duration::from_millis(500), || cg.tasks().is_empty());
    }
    Ok(())
}

/// Creates one cgroup directory; not being allowed to is
/// [`SandboxError::Permission`] (the message says to run as root).
pub(crate) fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => SandboxError::Permission {
            path: dir.to_path_buf(),
            source: e,
        },
        _ => SandboxError::io("mkdir", dir, e),
    })
}

/// Removes one cgroup directory (its control files go with it), retrying
/// EBUSY for up to 3 s. A missing directory is success.
pub fn rmdir_retry(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // A fake tree (tests) holds real files: remove them like the kernel would.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                std::fs::remove_dir_all(dir).map_err(|e| SandboxError::io("rmdir", dir, e))?;
                return Ok(());
            }
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(SandboxError::io("rmdir", dir, e)),
        }
    }
}

/// True when `path` is on a cgroup (v1 or v2) filesystem.
fn is_cgroupfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| {
            let t = s.filesystem_type();
            t == nix::sys::statfs::CGROUP_SUPER_MAGIC || t == nix::sys::statfs::CGROUP2_SUPER_MAGIC
        })
        .unwrap_or(false)
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a control file.
pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| SandboxError::io("read", path, e))
}

/// Writes a control file that must already exist (the kernel creates them;
/// writing never creates a file, so a missing one reads as "unsupported").
pub(crate) fn write_existing(limit: &'static str, path: &Path, value: &str) -> Result<()> {
    if !path.exists() {
        return Err(SandboxError::Unsupported {
            limit,
            why: format!(
                "{} does not exist (controller not enabled or kernel too old)",
                path.display()
            ),
        });
    }
    let refused = |e: std::io::Error| SandboxError::Refused {
        limit,
        file: path.into(),
        wrote: value.into(),
        outcome: format!("the kernel refused it: {e}"),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(refused)?;
    std::io::Write::write_all(&mut f, value.as_bytes()).map_err(refused)
}

/// Writes `value`, reads the file back and checks it with `accept`.
pub(crate) fn set(
    limit: &'static str,
    path: &Path,
    value: &str,
    accept: impl Fn(&str) -> bool,
) -> Result<()> {
    write_existing(limit, path, value)?;
    let back = read(path)?;
    if accept(back.trim()) {
        Ok(())
    } else {
        Err(SandboxError::Refused {
            limit,
            file: path.into(),
            wrote: value.into(),
            outcome: format!("but it reads back {:?}", back.trim()),
        })
    }
}

/// Writes a plain number and expects exactly it back.
pub(crate) fn set_number(limit: &'static str, path: &Path, value: u64) -> Result<()> {
    set(limit, path, &value.to_string(), |b| {
        b.parse::<u64>().ok() == Some(value)
    })
}

/// Memory limits read back rounded down to whole pages.
pub(crate) fn memory_matches(wrote: u64, back: &str) -> bool {
    let page = page_size();
    back.parse::<u64>()
        .is_ok_and(|b| b == wrote || b == wrote / page * page)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Whether any swap is active: if none, an absent swap-limit file is
/// harmless (there is nothing to turn off).
pub(crate) fn swap_active() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|t| t.lines().count() > 1)
}

/// Reads a file to a number, `None` if absent or unparsable.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads one `key value` entry of a flat-keyed file.
pub(crate) fn keyed(path: &Path, key: &str) -> Option<u64> {
    parse_flat_keyed(&std::fs::read_to_string(path).ok()?, key)
}

/// A temporary directory for fake cgroupfs trees, removed on drop.
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

#[cfg(test)]
pub(crate) mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// See the module doc.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates `$TMPDIR/serverlab-test-<tag>-<pid>-<n>`.
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "serverlab-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        /// The directory.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
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
}
