//! Child processes for the process-based architectures (Linux only):
//! forking a child that runs one function and `_exit`s, setting up its
//! signals, and reaping every child so none is left a zombie.
//!
//! [`Children`] is the set of live children of one server, counted in
//! `/stats` as its workers. Children are
//! forked with [`Children::spawn`] or [`Children::top_up`]; a *reaper*
//! thread ([`Children::start_reaper`]) blocks in `waitpid` and collects each
//! one the moment it exits, so no zombie lingers even while the server is
//! idle, and no `SIGCHLD` handler is needed. [`Children::stop`] ends it all
//! on shutdown: a bounded wait for in-flight work, then `SIGTERM`, then
//! `SIGKILL`, and every child reaped.
//!
//! The reaper waits for *any* child (`waitpid(-1)`): a forking architecture
//! must be the only thing in its process that starts children, which holds
//! for `serverlab serve`.
//!
//! What a child inherits, and what is changed (see [`child_setup`]):
//! - Only the forking thread exists in the child. Other threads may have
//!   held locks at the moment of the fork, so children keep their work
//!   simple (serve, then exit) and never return into the parent's code.
//! - The shutdown pipe: it becomes readable in every process at once, so
//!   children stop (after their in-flight request) without any signal.
//! - The signal mask of `serve`, which blocks `SIGINT` and `SIGTERM` in every
//!   thread. A child ignores `SIGINT` (Ctrl-C reaches the whole process
//!   group; the parent alone decides how to stop, through the pipe) and
//!   takes `SIGTERM` with its default action, so the parent can force it.
//! - It is killed if the parent dies (`PR_SET_PDEATHSIG`), so a crashed or
//!   `kill -9`ed server leaves no orphan behind.
//! - `/stats` counters are in shared memory ([`crate::stats`]).

use crate::handler::Handler;
use crate::stats::WorkerCount;
use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A process id.
pub type Pid = libc::pid_t;

/// The live children of a server, and the condition that changes with them.
pub struct Children {
    state: Mutex<State>,
    changed: Condvar,
    /// Whose `/stats` count the children as workers.
    handler: Arc<Handler>,
}

#[derive(Default)]
struct State {
    /// Each live child, counted in `/stats` until it is removed from here.
    live: HashMap<Pid, WorkerCount>,
    /// The reaper should exit once no child is left.
    stopping: bool,
}

/// The running reaper thread, returned by [`Children::start_reaper`].
pub struct Reaper(JoinHandle<()>);

impl Children {
    /// An empty set of children, to be counted in `handler`'s `/stats`.
    pub fn new(handler: Arc<Handler>) -> Arc<Children> {
        Arc::new(Children {
            state: Mutex::default(),
            changed: Condvar::new(),
            handler,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forks a child that runs `child` and exits (status 0, or 101 if it
    /// panics). `child` runs only in the child; the parent drops it unrun.
    /// Returns the child's pid. A failed fork (`EAGAIN` under a pids limit)
    /// is an error for the caller to handle, never a crash.
    pub fn spawn(&self, child: impl FnOnce()) -> io::Result<Pid> {
        let mut state = self.lock();
        self.fork_into(&mut state, child)
    }

    /// Forks children running `child` until `target` are alive; returns how
    /// many were forked. Checking the count and forking happen under one
    /// lock, so callers on several threads never overshoot.
    pub fn top_up(&self, target: usize, child: impl Fn()) -> io::Result<usize> {
        let mut state = self.lock();
        let mut forked = 0;
        while state.live.len() < target {
            self.fork_into(&mut state, &child)?;
            forked += 1;
        }
        Ok(forked)
    }

    /// How many children are alive (forked and not yet reaped).
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// The pids of the live children.
    pub fn pids(&self) -> Vec<Pid> {
        self.lock().live.keys().copied().collect()
    }

    /// Starts the thread that reaps children as they exit and calls
    /// `on_exit` (without any lock held, so it may fork replacements) for
    /// each of ours.
    pub fn start_reaper(
        self: &Arc<Self>,
        mut on_exit: impl FnMut(Pid, ExitStatus) + Send + 'static,
    ) -> io::Result<Reaper> {
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                while let Some((pid, status)) = me.reap_next() {
                    on_exit(pid, status);
                }
            })?;
        Ok(Reaper(handle))
    }

    /// Blocks until one of our children exits and reaps it; `None` once
    /// stopping with no child left.
    fn reap_next(&self) -> Option<(Pid, ExitStatus)> {
        loop {
            {
                let mut state = self.lock();
                while state.live.is_empty() {
                    if state.stopping {
                        return None;
                    }
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
            let mut status = 0;
            // SAFETY: plain waitpid into a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            let mut state = self.lock();
            if pid < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    // ECHILD with children listed: something else reaped
                    // them. Forget them rather than spin.
                    tracing::warn!("waitpid: {err}; forgetting {} children", state.live.len());
                    state.live.clear();
                    self.changed.notify_all();
                }
                continue;
            }
            // A child forked just now may be reaped before `spawn` records
            // it; `spawn` holds the lock across fork and insert, so by the
            // time we get the lock it is listed and removed here.
            let ours = state.live.remove(&pid).is_some();
            self.changed.notify_all();
            if ours {
                return Some((pid, ExitStatus::from_raw(status)));
            }
        }
    }

    /// Waits until no child is alive or `deadline` passes; returns whether
    /// none is left.
    pub fn wait_all(&self, deadline: Instant) -> bool {
        crate::sync::wait_until(&self.changed, self.lock(), deadline, |s| s.live.is_empty())
    }

    /// Sends `signal` to every live child.
    pub fn signal_all(&self, signal: libc::c_int) {
        for pid in self.lock().live.keys() {
            // SAFETY: signalling a child we forked and have not reaped, so
            // the pid cannot have been reused.
            unsafe { libc::kill(*pid, signal) };
        }
    }

    /// Shutdown: waits up to `grace` for the children to finish on their
    /// own (they watch the shutdown pipe), then sends `SIGTERM`, then
    /// `SIGKILL`; returns once every child is reaped and the reaper has
    /// exited.
    pub fn stop(&self, reaper: Reaper, grace: Duration) {
        if !self.wait_all(Instant::now() + grace) {
            tracing::warn!(
                "{} children still busy after {grace:?}; sending SIGTERM",
                self.live()
            );
            self.signal_all(libc::SIGTERM);
            if !self.wait_all(Instant::now() + Duration::from_secs(2)) {
                self.signal_all(libc::SIGKILL);
                // SIGKILL cannot be caught; the wait is only for the
                // reaper to collect them.
                self.wait_all(Instant::now() + Duration::from_secs(10));
            }
        }
        self.lock().stopping = true;
        self.changed.notify_all();
        if reaper.0.join().is_err() {
            tracing::error!("the reaper thread panicked");
        }
    }

    /// Forks under the children lock (see [`Children::reap_next`] for why).
    fn fork_into(&self, state: &mut State, child: impl FnOnce()) -> io::Result<Pid> {
        // SAFETY: getpid and fork have no preconditions. In the child only this
        // thread runs; it does its simple work and `_exit`s, never unwinding
        // into the parent's frames or running their destructors.
        let parent = unsafe { libc::getpid() };
        // Counted before the fork, so that a child answering `/stats` already
        // counts itself; a failed fork drops the count.
        let counted = self.handler.stats().workers(1);
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                child_setup(parent);
                let code = match catch_unwind(AssertUnwindSafe(child)) {
                    Ok(()) => 0,
                    Err(_) => 101,
                };
                // SAFETY: ends the child without running the parent's atexit
                // handlers or flushing its copied stdio buffers.
                unsafe { libc::_exit(code) }
            }
            pid => {
                state.live.insert(pid, counted);
                // Wakes the reaper if it was waiting for a first child.
                self.changed.notify_all();
                Ok(pid)
            }
        }
    }
}

/// Signal setup of a freshly forked child (see the module doc).
fn child_setup(parent: Pid) {
    // SAFETY: prctl, signal and sigprocmask calls on this (only) thread
    // with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have died before prctl took effect.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn children_are_reaped_and_replaced_and_stopped() {
        let handler =
            Arc::new(Handler::new(crate::Config::default(), &crate::Options::default()).unwrap());
        let children = Children::new(handler.clone());
        let exits = Arc::new(AtomicUsize::new(0));
        let e = exits.clone();
        let reaper = children.start_reaper(move |_, _| {
            e.fetch_add(1, Ordering::SeqCst);
        });
        let reaper = reaper.unwrap();
        // Short-lived children exit at once and are reaped.
        for _ in 0..20 {
            children.spawn(|| {}).unwrap();
        }
        assert!(children.wait_all(Instant::now() + Duration::from_secs(10)));
        // `on_exit` runs just after a child leaves the set: wait for it too.
        let deadline = Instant::now() + Duration::from_secs(10);
        while exits.load(Ordering::SeqCst) < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(exits.load(Ordering::SeqCst), 20);
        // Long-lived ones: topped up to 3, one killed, topped up again.
        let sleeper = || std::thread::sleep(Duration::from_secs(60));
        assert_eq!(children.top_up(3, sleeper).unwrap(), 3);
        assert_eq!(children.top_up(3, sleeper).unwrap(), 0);
        let victim = children.pids()[0];
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.pids().contains(&victim) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(children.live(), 2);
        assert_eq!(handler.stats().snapshot().workers, 2);
        assert_eq!(children.top_up(3, sleeper).unwrap(), 1);
        // stop(): they ignore nothing, so the SIGTERM after the grace ends them.
        children.stop(reaper, Duration::from_millis(50));
        assert_eq!(children.live(), 0);
        assert_eq!(exits.load(Ordering::SeqCst), 24);
        assert_eq!(handler.stats().snapshot().workers, 0);
    }
}
