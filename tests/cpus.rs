//! Pools and loops default to the CPUs this process may use, not the host's
//! core count: a server started inside a cgroup with a one-CPU quota, or
//! pinned to one CPU, reports one worker in `/stats`.
//!
//! Needs root and the cgroup v1 `cpu` controller (this machine's layout);
//! elsewhere the quota case is ignored with the reason. The cgroup is named
//! `serverlab-test-cpus-<pid>-<n>` and removed even when the test fails;
//! leftovers of killed test runs are removed on the next run.

mod common;

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a new cgroup for the `cpu` controller would go: the v1 mount plus
/// our own cgroup's path in that hierarchy.
fn v1_cpu_parent() -> Option<PathBuf> {
    let mount = Path::new("/sys/fs/cgroup/cpu");
    if !mount.join("cpu.cfs_quota_us").exists() {
        return None;
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        ctrl.split(',')
            .any(|c| c == "cpu")
            .then(|| path.to_string())
    })?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// A server process, killed and reaped when dropped.
struct Confined {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Confined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test cgroup, removed when dropped (drop it after its processes).
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.0);
    }
}

fn remove_cgroup(dir: &Path) {
    // Children first: a cgroup with child cgroups cannot be removed.
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&e.path());
        }
    }
    // The tasks are reaped by now; the kernel may take a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: signalling a process left in our own test cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes cgroups left by test runs that were killed before cleaning up.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("serverlab-test-cpus-") else {
            continue;
        };
        let owner: i32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        // SAFETY: signal 0 only checks whether the process exists.
        if owner > 0 && unsafe { libc::kill(owner, 0) } != 0 {
            remove_cgroup(&e.path());
        }
    }
}

/// Starts `serverlab serve --arch ARCH` on port 0; before it execs, it
/// joins `cgroup` (if any) and/or pins itself to CPU 0.
fn start(arch: &str, cgroup: Option<&Path>, pin_to_cpu0: bool) -> Confined {
    let procs = cgroup.as_ref().map(|d| {
        CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap()
    });
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serverlab"));
    cmd.args(["serve", "--arch", arch, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe calls (getpid, open, write, close,
    // sched_setaffinity) on stack buffers between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(path) = &procs {
                let mut digits = [0u8; 12];
                let mut n = libc::getpid() as u32;
                let mut i = digits.len();
                loop {
                    i -= 1;
                    digits[i] = b'0' + (n % 10) as u8;
                    n /= 10;
                    if n == 0 {
                        break;
                    }
                }
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let len = digits.len() - i;
                let wrote = libc::write(fd, digits[i..].as_ptr().cast(), len);
                libc::close(fd);
                if wrote != len as isize {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if pin_to_cpu0 {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start serverlab serve");
    let stdout = child.stdout.take().unwrap();
    let mut confined = Confined {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    confined.addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{arch}: unexpected first line {line:?}"))
        .parse()
        .unwrap();
    confined
}

fn workers(s: &Confined) -> (u64, i64) {
    let r = common::get(s.addr, "/stats");
    let stats: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (
        stats["configured_workers"].as_u64().unwrap(),
        stats["workers"].as_i64().unwrap(),
    )
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_multicore, serverlab_cgroup_v1_cpu)),
    ignore = "needs root, 2 CPUs or more (one worker on one CPU proves nothing) and a cgroup v1 cpu controller"
)]
fn one_cpu_quota_means_one_worker() {
    common::still_root();
    assert!(
        host_cpus() >= 2,
        "built with 2 CPUs or more, run with {}",
        host_cpus()
    );
    let parent = v1_cpu_parent().expect("the cgroup v1 cpu controller build.rs found is gone");
    remove_stale(&parent);
    for (i, arch) in ["reactor-per-core", "async"].into_iter().enumerate() {
        let dir = parent.join(format!("serverlab-test-cpus-{}-{i}", std::process::id()));
        std::fs::create_dir(&dir).expect("create the test cgroup");
        let cgroup = Cgroup(dir);
        // Quota of one period per period: one CPU's worth of time.
        std::fs::write(cgroup.0.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(cgroup.0.join("cpu.cfs_quota_us"), "100000").unwrap();
        // Declared after `cgroup`, so the server is killed before rmdir.
        let s = start(arch, Some(&cgroup.0), false);
        assert_eq!(workers(&s), (1, 1), "{arch} under a one-CPU quota");
    }
    // A quota set on an ancestor (a container's cgroup) binds a process in
    // a child cgroup that has none of its own.
    let dir = parent.join(format!("serverlab-test-cpus-{}-nested", std::process::id()));
    std::fs::create_dir(&dir).expect("create the test cgroup");
    let outer = Cgroup(dir);
    std::fs::write(outer.0.join("cpu.cfs_quota_us"), "100000").unwrap();
    std::fs::create_dir(outer.0.join("inner")).expect("create the inner cgroup");
    let inner = Cgroup(outer.0.join("inner"));
    let s = start("reactor-per-core", Some(&inner.0), false);
    assert_eq!(workers(&s), (1, 1), "under a parent's one-CPU quota");
}

#[test]
#[cfg_attr(
    not(serverlab_multicore),
    ignore = "needs 2 CPUs or more: one worker on one CPU proves nothing"
)]
fn one_allowed_cpu_means_one_worker() {
    assert!(
        host_cpus() >= 2,
        "built with 2 CPUs or more, run with {}",
        host_cpus()
    );
    let s = start("reactor-per-core", None, true);
    assert_eq!(workers(&s), (1, 1), "pinned to CPU 0");
    // And without the pin, the default follows the CPUs we may use.
    let s = start("reactor-per-core", None, false);
    let n = host_cpus() as u64;
    assert_eq!(workers(&s), (n, n as i64), "unpinned");
}
