//! Probes what the machine offers the integration tests, once, when they are
//! built: a test that needs what is missing is compiled `#[ignore]`d with the
//! reason (`cargo test` lists it as ignored, never as passed). Each such test
//! checks again at run time that the probe still holds, and fails saying so
//! if not (tests built as root and run as another user, say).

use std::path::Path;

/// (cfg, whether it holds).
fn probes() -> Vec<(&'static str, bool)> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            // Real, effective, saved, filesystem: the effective one counts.
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let v1_cpu = Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists();
    let v1_pids = Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists();
    let v2_pids = std::fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
    // A cgroup2 tree: the unified hierarchy, or the controller-less one a
    // hybrid host mounts beside v1 (where the v2 back end still runs for
    // real, without limits).
    let cgroup2 = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.contains(" - cgroup2 ")));
    vec![
        ("serverlab_root", root),
        ("serverlab_cgroup2", cgroup2),
        ("serverlab_multicore", cpus >= 2),
        ("serverlab_cgroup_v1_cpu", v1_cpu),
        ("serverlab_pids_cgroup", v1_pids || v2_pids),
        (
            "serverlab_chromium",
            Path::new("/usr/bin/chromium").exists(),
        ),
        ("serverlab_setpriv", Path::new("/usr/bin/setpriv").exists()),
        (
            "serverlab_socket_activate",
            Path::new("/usr/bin/systemd-socket-activate").exists(),
        ),
    ]
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for (cfg, holds) in probes() {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if holds {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
