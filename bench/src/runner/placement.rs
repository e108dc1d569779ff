//! Which CPUs the server and the load generator get, and pinning.
//!
//! The generator must not compete with the server for CPUs, or a result
//! would measure the two together. By default the host's CPUs are split:
//! the generator gets the lower half, the server the upper half (on a
//! 2-core machine: generator on CPU 0, server on CPU 1).

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The default split of the CPUs this process may use: (server, generator).
pub fn default_split() -> (Vec<usize>, Vec<usize>) {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        // One CPU: no disjoint placement is possible; share it and say so
        // in the results (both lists name the same CPU).
        return (cpus.clone(), cpus);
    }
    let half = cpus.len() / 2;
    (cpus[half..].to_vec(), cpus[..half].to_vec())
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Pins the calling thread (and the threads it creates from now on) to
/// `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> nix::Result<()> {
    sched_setaffinity(Pid::from_raw(0), &cpu_set(cpus)?)
}

fn cpu_set(cpus: &[usize]) -> nix::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)?;
    }
    Ok(set)
}

/// A kernel CPU list (`1`, `0,2`) for cpusets.
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Pins a child between fork and exec (used for the server, so that it is
/// placed even when it runs without a cgroup cpuset).
pub fn pin_child(cmd: &mut std::process::Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    let set = cpu_set(cpus).ok();
    // SAFETY: sched_setaffinity is async-signal-safe (a raw syscall) and
    // the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(set) = &set {
                sched_setaffinity(Pid::from_raw(0), set).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_when_possible() {
        let (server, generator) = default_split();
        assert!(!server.is_empty() && !generator.is_empty());
        if allowed_cpus().len() >= 2 {
            assert!(server.iter().all(|c| !generator.contains(c)));
        }
        assert_eq!(cpu_list(&[0, 2]), "0,2");
    }
}
