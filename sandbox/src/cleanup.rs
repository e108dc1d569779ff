//! Cleanup that cannot be skipped.
//!
//! Every container's kernel objects (cgroup, veth, netns, outer process)
//! are held in a [`Resources`] value registered in a process-wide registry
//! from the moment they exist. They are torn down by [`Container::stop`],
//! by its `Drop` (errors, panics), by [`terminate_all`]/[`cleanup_all`]
//! from the runner's SIGINT/SIGTERM path, and — after a crash, when none of
//! that could run — by [`cleanup_leftovers`] at the next start, which finds
//! `serverlab*` objects whose owner (named in every object) is gone. The
//! owner is a pid *and* its start time (`<pid>s<ticks>`), so a new process
//! that happens to get a dead runner's pid does not protect its leftovers.
//! Host-side veths carry only the pid (15-character names); they vanish
//! with their namespace, which does carry the start time.
//!
//! A runner killed outright (SIGKILL) takes its containers with it: their
//! outer process has a parent-death signal (`namespaces.rs`), and with it
//! goes PID 1 and the whole pid namespace. Only the cgroup directories and
//! network objects are left, for the next start.
//!
//! [`Container::stop`]: super::Container::stop

use super::cgroup::{rmdir_retry, wait_until, Cgroup};
use super::detect::Layout;
use super::net::{ip, remove_netns, remove_veth, NetSetup};
use super::owner::{owner_of_cgroup, owner_of_veth, Owner};
use super::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The kernel objects of one container, torn down at most once.
#[derive(Debug)]
pub struct Resources {
    /// The container's name.
    pub name: String,
    /// Its cgroup (`None` for an unlimited run).
    pub cgroup: Option<Arc<Cgroup>>,
    /// Its isolated network, once created.
    pub net: Mutex<Option<NetSetup>>,
    /// Host pid of the outer child process, once spawned.
    pub outer_pid: Mutex<Option<i32>>,
}

impl Resources {
    /// Kills every task of the container (leaves the objects in place so
    /// that its accounting can still be read).
    pub fn kill(&self) -> Result<()> {
        match &self.cgroup {
            Some(cg) => cg.kill_all(),
            None => {
                // No cgroup: only the direct child can be found and killed.
                if let Some(pid) = *self.outer_pid.lock().unwrap_or_else(|p| p.into_inner()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Ok(())
            }
        }
    }

    /// Kills every task and removes the cgroup, veth and netns. Idempotent;
    /// returns the first error but always tries every step.
    pub fn teardown(&self) -> Result<()> {
        let killed = self.kill();
        let removed = self.cgroup.as_ref().map_or(Ok(()), |cg| cg.remove());
        if let Some(net) = self.net.lock().unwrap_or_else(|p| p.into_inner()).take() {
            net.remove();
        }
        killed.and(removed)
    }
}

static REGISTRY: Mutex<Vec<Arc<Resources>>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<Arc<Resources>>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn register(r: Arc<Resources>) {
    registry().push(r);
}

pub(crate) fn deregister(r: &Arc<Resources>) {
    registry().retain(|x| !Arc::ptr_eq(x, r));
}

/// Number of containers of this process not yet torn down.
pub fn live_containers() -> usize {
    registry().len()
}

/// For a runner's SIGINT/SIGTERM path: kills every task of every live
/// container, so that their owners' `wait` returns and they stop normally
/// (reading accounting, removing everything). Returns how many there were.
pub fn terminate_all() -> usize {
    let live: Vec<Arc<Resources>> = registry().clone();
    for r in &live {
        if let Err(e) = r.kill() {
            tracing::warn!("terminating {}: {e}", r.name);
        }
    }
    live.len()
}

/// Last resort (e.g. when the owners did not finish in time): tears every
/// live container down from here and empties the registry.
pub fn cleanup_all() {
    let live: Vec<Arc<Resources>> = std::mem::take(&mut *registry());
    for r in live {
        if let Err(e) = r.teardown() {
            tracing::warn!("cleaning up {}: {e}", r.name);
        }
    }
}

static TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a temporary folder to be removed by [`cleanup_now`] if the
/// process has to exit before its owner removes it.
pub fn track_temp_dir(path: &Path) {
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

/// The owner removed it (or is about to): forget it.
pub fn untrack_temp_dir(path: &Path) {
    TEMP_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| p != path);
}

/// For exiting at once (a second Ctrl-C, a watchdog): tears down every
/// live container and removes every tracked temporary folder, from the
/// calling thread, without waiting for their owners.
pub fn cleanup_now() {
    cleanup_all();
    let dirs = std::mem::take(&mut *TEMP_DIRS.lock().unwrap_or_else(|p| p.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Waits up to `limit` for every container to be torn down by its owner.
pub fn wait_all_stopped(limit: Duration) -> bool {
    wait_until(limit, || live_containers() == 0)
}

/// What [`cleanup_leftovers`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeftoverReport {
    /// Cgroup directories removed.
    pub cgroups: Vec<PathBuf>,
    /// Network namespaces removed.
    pub netns: Vec<String>,
    /// Host-side veths removed.
    pub veths: Vec<String>,
    /// Run folders (under the temp folder and `/dev/shm`) removed.
    pub run_dirs: Vec<PathBuf>,
}

impl LeftoverReport {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty()
            && self.netns.is_empty()
            && self.veths.is_empty()
            && self.run_dirs.is_empty()
    }
}

/// How run folders begin: `serverlab-run-<owner>-` and mkdtemp's suffix.
pub const RUN_DIR_PREFIX: &str = "serverlab-run-";

/// Where run folders are made: the temp folder and, for what must stay in
/// memory, `/dev/shm`.
pub fn run_dir_bases() -> [PathBuf; 2] {
    [std::env::temp_dir(), PathBuf::from("/dev/shm")]
}

/// The owner in a run folder's name `serverlab-run-<owner>-XXXXXX`.
pub fn owner_of_run_dir(name: &str) -> Option<Owner> {
    let rest = name.strip_prefix(RUN_DIR_PREFIX)?;
    Owner::parse(rest.rsplit_once('-')?.0)
}

/// Removes the run folders in `base` whose owner is gone (a runner killed
/// outright leaves them; its docroot and files can be large).
pub fn remove_dead_run_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owner_of_run_dir(&name).is_some_and(|o| o.gone())
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed.push(entry.path());
        }
    }
    removed
}

/// Removes the `serverlab*` cgroups, netns and veths of earlier runs whose
/// owner is dead. Call at start. Objects of live processes (parallel
/// runners, this process) are left alone.
pub fn cleanup_leftovers() -> Result<LeftoverReport> {
    let layout = Layout::detect().ok();
    Ok(cleanup_leftovers_in(layout.as_ref()))
}

/// [`cleanup_leftovers`] for a given layout (`None`: networking only).
pub fn cleanup_leftovers_in(layout: Option<&Layout>) -> LeftoverReport {
    let mut report = LeftoverReport::default();
    for base in run_dir_bases() {
        report.run_dirs.extend(remove_dead_run_dirs(&base));
    }
    if let Some(layout) = layout {
        for root in layout.roots() {
            scan_cgroups(&root, 0, &mut report);
        }
    }
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            // netns names are serverlab-<pid>-<n>: the same shape as cgroups.
            if owner_of_cgroup(name).is_some_and(|o| o.gone()) {
                remove_netns(name);
                report.netns.push(name.to_string());
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        for line in list.lines() {
            // "12: slv1a2bx0h@if11: <...>"
            let Some(name) = line
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
            else {
                continue;
            };
            if name.ends_with('h') && owner_of_veth(name).is_some_and(|o| o.gone()) {
                remove_veth(name);
                report.veths.push(name.to_string());
            }
        }
    }
    report
}

fn scan_cgroups(dir: &Path, depth: u32, report: &mut LeftoverReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match owner_of_cgroup(&name) {
            Some(owner) if owner.gone() => {
                kill_dir_tasks(&path);
                if rmdir_retry(&path).is_ok() {
                    report.cgroups.push(path);
                }
            }
            Some(_) => {}
            // Someone else's cgroup: look inside (bounded depth).
            None if depth < 3 => scan_cgroups(&path, depth + 1, report),
            None => {}
        }
    }
}

/// SIGKILLs whatever is left in one cgroup directory (v2: `cgroup.kill`).
fn kill_dir_tasks(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let tasks = || -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..5 {
        let pids = tasks();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        wait_until(Duration::from_millis(200), || tasks().is_empty());
    }
}

#[cfg(test)]
mod tests {
    /// Run folders of a gone runner are removed at the next start; those of
    /// a live one (this process), and anything else, are left alone.
    #[test]
    fn dead_runners_run_folders_are_removed() {
        let base =
            std::env::temp_dir().join(format!("serverlab-test-rundirs-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        // Pid 1 never started at tick 1: that owner is gone.
        let dead = base.join("serverlab-run-1s1-aB3dE9");
        let live = base.join(format!("{RUN_DIR_PREFIX}{}-xYz123", Owner::me().tag()));
        let other = base.join("serverlab-run-XXXXXX");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("docroot")).unwrap();
        }
        assert_eq!(
            owner_of_run_dir("serverlab-run-12s34-ab12cd"),
            Some(Owner {
                pid: 12,
                start: Some(34)
            })
        );
        assert_eq!(owner_of_run_dir("serverlab-run-XXXXXX"), None);
        assert_eq!(remove_dead_run_dirs(&base), vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && other.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    use super::*;

    #[test]
    fn leftovers_of_dead_owners_are_removed_live_ones_kept() {
        let t = super::super::cgroup::tempdir::TempDir::new("left");
        let root = t.path().join("cpu");
        // pid_max is at most 4194304, so this owner cannot exist.
        let dead = root.join("serverlab-old-4194305-0");
        let mine = root.join(format!("serverlab-live-{}-0", Owner::me().tag()));
        let reused = root.join(format!("serverlab-reused-{}s1-0", std::process::id()));
        let nested = root.join("system.slice/serverlab-x-4194306-1");
        for d in [&dead, &mine, &nested, &reused] {
            std::fs::create_dir_all(d).unwrap();
        }
        let layout = Layout::v1([("cpu", root.clone())]);
        let mut report = LeftoverReport::default();
        scan_cgroups(&layout.roots()[0], 0, &mut report);
        report.cgroups.sort();
        let mut expected = vec![dead.clone(), nested.clone(), reused.clone()];
        expected.sort();
        assert_eq!(report.cgroups, expected);
        assert!(!dead.exists() && !nested.exists() && !reused.exists() && mine.exists());
    }
}
