//! Cleanup that cannot be skipped.
//!
//! Every container's kernel objects (cgroup, veth, netns, outer process)
//! are held in a [`Resources`] value registered in a process-wide registry
//! from the moment they exist. They are torn down by [`Container::stop`],
//! by its `Drop` (errors, panics), by [`terminate_all`]/[`cleanup_all`]
//! from the runner's SIGINT/SIGTERM path, and — after a crash, when none of
//! that could run — by [`cleanup_leftovers`] at the next start, which finds
//! `serverlab*` objects whose owner pid (part of every name) is dead.
//!
//! [`Container::stop`]: super::Container::stop

use super::cgroup::{rmdir_retry, wait_until, Cgroup};
use super::detect::Layout;
use super::net::{ip, remove_netns, remove_veth, NetSetup};
use super::{Result, PREFIX};
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
}

impl LeftoverReport {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.netns.is_empty() && self.veths.is_empty()
    }
}

/// Whether a process with this pid exists (EPERM: exists, not ours).
fn alive(pid: i32) -> bool {
    pid > 0
        && !matches!(
            kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

/// The owner pid in `serverlab-<hint>-<pid>-<n>` (hints may contain dashes).
pub fn owner_of_cgroup(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let mut parts = rest.rsplit('-');
    parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse().ok()
}

/// The owner pid in a veth name `slv<pid hex>x<n>{h,c}`.
pub fn owner_of_veth(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("slv")?;
    let (hex, tail) = rest.split_once('x')?;
    let n = tail.strip_suffix('h').or_else(|| tail.strip_suffix('c'))?;
    n.parse::<u32>().ok()?;
    i32::from_str_radix(hex, 16).ok()
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
    if let Some(layout) = layout {
        for root in layout.roots() {
            scan_cgroups(&root, 0, &mut report);
        }
    }
    if let Ok(list) = ip(&["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            // netns names are serverlab-<pid>-<n>: the same shape as cgroups.
            if owner_of_cgroup(name).is_some_and(|p| !alive(p)) {
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
            if name.ends_with('h') && owner_of_veth(name).is_some_and(|p| !alive(p)) {
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
            Some(owner) if !alive(owner) => {
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
    use super::*;

    #[test]
    fn owners_are_parsed_from_names() {
        assert_eq!(owner_of_cgroup("serverlab-web-1234-7"), Some(1234));
        assert_eq!(owner_of_cgroup("serverlab-my-app-99-0"), Some(99));
        assert_eq!(owner_of_cgroup("serverlab-probe"), None);
        assert_eq!(owner_of_cgroup("system.slice"), None);
        assert_eq!(owner_of_veth("slv4d2x3h"), Some(0x4d2));
        assert_eq!(owner_of_veth("slvzzx3h"), None);
        assert_eq!(owner_of_veth("eth0"), None);
    }

    #[test]
    fn leftovers_of_dead_owners_are_removed_live_ones_kept() {
        let t = super::super::cgroup::tempdir::TempDir::new("left");
        let root = t.path().join("cpu");
        // pid_max is at most 4194304, so this owner cannot exist.
        let dead = root.join("serverlab-old-4194305-0");
        let mine = root.join(format!("serverlab-live-{}-0", std::process::id()));
        let nested = root.join("system.slice/serverlab-x-4194306-1");
        for d in [&dead, &mine, &nested] {
            std::fs::create_dir_all(d).unwrap();
        }
        let layout = Layout::v1([("cpu", root.clone())]);
        let mut report = LeftoverReport::default();
        scan_cgroups(&layout.roots()[0], 0, &mut report);
        report.cgroups.sort();
        assert_eq!(report.cgroups, vec![dead.clone(), nested.clone()]);
        assert!(!dead.exists() && !nested.exists() && mine.exists());
    }
}
