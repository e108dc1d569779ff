//! The code that runs in the forked child between `fork` and `exec`
//! (installed with `CommandExt::pre_exec`), building the namespaces in
//! runc's order. Only async-signal-safe calls are made here: raw syscalls
//! through `libc`, no allocation, no locks — the parent may be
//! multi-threaded, and any lock another thread held at fork stays held.
//!
//! Three processes result:
//!
//! ```text
//! runner ── outer (host pid ns, not in the cgroup): setns(net), unshare(pid,
//!           │    mount, uts, ipc), private mounts, hostname; waits for pid 1
//!           │    and exits with its status; forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT
//!           └── reaper = PID 1 (joins the cgroup, mounts a fresh /proc):
//!                │    reaps every orphan, forwards signals, exits with the
//!                │    command's status (the kernel then kills the rest)
//!                └── command = PID 2 → exec
//! ```
//!
//! Exit statuses are forwarded as shells do: a code as is, death by signal
//! N as 128 + N. The outer process stays outside the cgroup so that only the
//! reaper (one task) is added to what the container accounts and its
//! `pids` limit counts.

use std::io;
use std::os::fd::RawFd;

/// What the child needs, prepared by the parent before the fork.
pub struct ChildSetup {
    /// Open `cgroup.procs` files (O_CLOEXEC) the reaper writes `0` into.
    pub cgroup_procs: Vec<RawFd>,
    /// Open network namespace to `setns` into (isolated network).
    pub netns: Option<RawFd>,
    /// New hostname (the container's name), at most 64 bytes.
    pub hostname: Vec<u8>,
    /// Whether to create namespaces at all (false for an unlimited run
    /// without privileges: then only the cgroup join happens).
    pub namespaces: bool,
    /// The process making the container: the outer process dies with it.
    pub parent: libc::pid_t,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Signals the outer process and the reaper wait for (blocked, then taken
/// with `sigwaitinfo`, so no handler runs in this fragile context).
unsafe fn wait_set() -> libc::sigset_t {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    for s in [
        libc::SIGCHLD,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
    ] {
        libc::sigaddset(&mut set, s);
    }
    set
}

/// A wait status as a shell exit code.
fn exit_code(status: libc::c_int) -> libc::c_int {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Closes every descriptor from 3 up. The outer process and the reaper never
/// exec, so they must drop their copies of std's exec-error pipe, or the
/// parent's `spawn` would wait for them to exit.
unsafe fn close_from_3() {
    libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
}

/// Waits for signals until `child` ends, forwarding termination signals to
/// it; `reap_all` additionally reaps every other child (PID 1's duty).
/// Never returns.
unsafe fn supervise(child: libc::pid_t, set: &libc::sigset_t, reap_all: bool) -> ! {
    loop {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigwaitinfo(set, &mut info);
        if sig == libc::SIGCHLD {
            loop {
                let mut status = 0;
                let who = if reap_all { -1 } else { child };
                let r = libc::waitpid(who, &mut status, libc::WNOHANG);
                if r == child {
                    libc::_exit(exit_code(status));
                }
                if r <= 0 {
                    break;
                }
            }
        } else if sig > 0 {
            libc::kill(child, sig);
        }
    }
}

/// The pre-exec body. Returns `Ok` only in the process that must exec the
/// command; the outer process and the reaper never return.
///
/// # Safety
/// Must run in a freshly forked child of a possibly multi-threaded parent.
pub unsafe fn in_child(setup: &ChildSetup) -> io::Result<()> {
    // Die with the process that made the container, however it ends
    // (SIGKILL included, where none of its own cleanup runs): the kernel
    // signals this process when the spawning thread exits, and with it go
    // PID 1 and the whole pid namespace. If the parent died before the
    // prctl, the signal will never come: leave now.
    check(libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
    ))?;
    if libc::getppid() != setup.parent {
        libc::_exit(1);
    }
    if !setup.namespaces {
        for &fd in &setup.cgroup_procs {
            check(libc::write(fd, b"0".as_ptr().cast(), 1) as libc::c_int)?;
        }
        return unblock_all();
    }
    if let Some(fd) = setup.netns {
        check(libc::setns(fd, libc::CLONE_NEWNET))?;
    }
    check(libc::unshare(
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
    ))?;
    // Private propagation: our /proc mount must not leak to the host, and
    // host mounts must not appear half-way through a run.
    check(libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ))?;
    check(libc::sethostname(
        setup.hostname.as_ptr().cast(),
        setup.hostname.len(),
    ))?;

    let set = wait_set();
    check(libc::sigprocmask(
        libc::SIG_BLOCK,
        &set,
        std::ptr::null_mut(),
    ))?;
    let reaper = libc::fork();
    if reaper < 0 {
        return Err(io::Error::last_os_error());
    }
    if reaper > 0 {
        close_from_3();
        supervise(reaper, &set, false);
    }

    // PID 1 of the new namespace. If the outer process dies (runner
    // killed), die too: the kernel then kills the whole namespace.
    // (getppid() is 0 here whatever happens: the parent lives in another
    // pid namespace, so a lost race with its death cannot be detected.)
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    // Join the cgroup before anything execs: "0" means the writer itself.
    for &fd in &setup.cgroup_procs {
        check(libc::write(fd, b"0".as_ptr().cast(), 1) as libc::c_int)?;
    }
    check(libc::mount(
        c"proc".as_ptr(),
        c"/proc".as_ptr(),
        c"proc".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    ))?;
    let command = libc::fork();
    if command < 0 {
        return Err(io::Error::last_os_error());
    }
    if command > 0 {
        close_from_3();
        supervise(command, &set, true);
    }
    // PID 2: the command starts with no blocked signals.
    unblock_all()
}

/// Empties the signal mask. A runner blocks SIGINT/SIGTERM in every thread
/// (to take them on one signal thread), the mask survives fork and exec,
/// and std does not reset it: a command would otherwise ignore SIGTERM.
unsafe fn unblock_all() -> io::Result<()> {
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    check(libc::sigprocmask(
        libc::SIG_SETMASK,
        &empty,
        std::ptr::null_mut(),
    ))
}
