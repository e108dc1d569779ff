//! The environment a suite ran in (`env.json`): enough to tell whether two
//! result folders can be compared, in the spirit of ripgrep's benchsuite
//! archive (command, versions, commit, hardware beside the raw data).

use serde::{Deserialize, Serialize};
use std::process::Command;

/// Where and with what a suite ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Env {
    /// `uname -r`.
    pub kernel: String,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs of the host (not only those this process may use).
    pub cores: usize,
    /// `1`, `2` or `none` (the cgroup filesystem found at /sys/fs/cgroup).
    pub cgroup_version: String,
    /// `git rev-parse HEAD` of the serverlab checkout, or `unknown`.
    pub commit: String,
    /// Whether the checkout had uncommitted changes (`git status`).
    pub dirty: bool,
    /// The compiler that built this serverlab.
    pub rustc: String,
    /// serverlab's version.
    pub serverlab: String,
    /// The command line that started the suite.
    pub command: String,
    /// When the suite started (UTC, RFC 3339).
    pub started: String,
}

impl Env {
    /// Reads the environment now.
    pub fn capture() -> Env {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
        let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        let rustc = option_env!("SERVERLAB_RUSTC")
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .or_else(|| run("rustc", &["-V"]))
            .unwrap_or_else(|| "unknown".to_string());
        Env {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".to_string(), |s| s.trim().to_string()),
            cpu_model,
            cores: online_cpus(),
            cgroup_version: cgroup_version(),
            commit,
            dirty,
            rustc,
            serverlab: env!("CARGO_PKG_VERSION").to_string(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started: super::rfc3339(std::time::SystemTime::now()),
        }
    }
}

/// `2` when /sys/fs/cgroup is the unified hierarchy, `1` when it holds v1
/// controllers, `none` otherwise.
fn cgroup_version() -> String {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2".to_string()
    } else if std::path::Path::new("/sys/fs/cgroup/cpu").exists()
        || std::path::Path::new("/sys/fs/cgroup/memory").exists()
    {
        "1".to_string()
    } else {
        "none".to_string()
    }
}

/// Runs git in the folder the executable was built from, falling back to
/// the current folder (results are usually written from the checkout).
fn git(args: &[&str]) -> Option<String> {
    let dir = option_env!("CARGO_MANIFEST_DIR").unwrap_or(".");
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The host's online CPUs (`sysconf`), whatever this process's affinity.
fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
