//! Spawning and stopping one container: the glue between the cgroup, the
//! namespaces, the network, the credit controller, the sampler and the
//! cleanup registry.

use super::accounting::UNLIMITED;
use super::cgroup::sampler::Sampler;
use super::cgroup::Cgroup;
use super::cleanup::{self, Resources};
use super::credits::CreditController;
use super::detect::Layout;
use super::namespaces::{in_child, ChildSetup};
use super::net::{Net, NetAddrs, NetSetup};
use super::{Accounting, Limits, Result, SandboxError, PREFIX};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Containers created by this process so far (the `<n>` in names).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Entry points for creating containers.
pub struct Sandbox;

impl Sandbox {
    /// Runs `cmd` in a new container with `limits` on the detected cgroup
    /// hierarchy. Returns once the command has been exec'd (or failed to).
    ///
    /// The container lives no longer than the *thread* that spawns it (the
    /// kernel's parent-death signal follows the spawning thread): spawn
    /// from a thread that outlives the container's use.
    pub fn spawn(name_hint: &str, limits: &Limits, net: Net, cmd: Command) -> Result<Container> {
        let layout = Layout::detect()?;
        Self::spawn_in(&layout, name_hint, limits, net, cmd)
    }

    /// [`Sandbox::spawn`] on a given layout.
    pub fn spawn_in(
        layout: &Layout,
        name_hint: &str,
        limits: &Limits,
        net: Net,
        cmd: Command,
    ) -> Result<Container> {
        limits.validate().map_err(SandboxError::Invalid)?;
        let (name, n) = new_name(name_hint);
        let cgroup = Arc::new(Cgroup::create(layout, &name, limits)?);
        let res = Arc::new(Resources {
            name: name.clone(),
            cgroup: Some(cgroup.clone()),
            net: Mutex::new(None),
            outer_pid: Mutex::new(None),
        });
        cleanup::register(res.clone());
        let built = (|| {
            cgroup.apply(limits)?;
            Container::start(name.clone(), n, res.clone(), net, cmd, true)
        })();
        let mut c = match built {
            Ok(c) => c,
            Err(e) => {
                let _ = res.teardown();
                cleanup::deregister(&res);
                return Err(e);
            }
        };
        // Helpers start after the command, so that a failed start leaves
        // none, and away from the container's CPUs (they inherit this
        // thread's affinity, set for their start only), as the runner
        // keeps its own threads off the server's: a sampler woken every
        // 20 ms must not take turns on the CPU it measures. (Its effect on
        // a server's latency was below this VM's noise when tried.)
        let _away = limits.cpuset.as_deref().and_then(AwayFrom::cpus);
        let (mem_peak, pids_peak) = cgroup.has_peaks();
        c.sampler = Some(
            Sampler::start(cgroup.clone(), !mem_peak, !pids_peak).map_err(SandboxError::Spawn)?,
        );
        if let Some(credits) = limits.credits {
            let ceiling = limits.cpus.unwrap_or_else(|| usable_cpus(limits) as f64);
            c.credits = Some(
                CreditController::start(cgroup, credits, ceiling).map_err(SandboxError::Spawn)?,
            );
        }
        Ok(c)
    }

    /// Runs `cmd` without a cgroup: no limits, accounting from rusage only,
    /// and every output says [`UNLIMITED`]. Namespaces are still used when
    /// running as root; otherwise the command runs as a plain child (and
    /// `Net::Isolated` is refused).
    pub fn spawn_unlimited(name_hint: &str, net: Net, cmd: Command) -> Result<Container> {
        let (name, n) = new_name(name_hint);
        let res = Arc::new(Resources {
            name: name.clone(),
            cgroup: None,
            net: Mutex::new(None),
            outer_pid: Mutex::new(None),
        });
        let root = nix::unistd::geteuid().is_root();
        if net == Net::Isolated && !root {
            return Err(SandboxError::Net(
                "an isolated network needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)".into(),
            ));
        }
        cleanup::register(res.clone());
        match Container::start(name, n, res.clone(), net, cmd, root) {
            Ok(c) => Ok(c),
            Err(e) => {
                let _ = res.teardown();
                cleanup::deregister(&res);
                Err(e)
            }
        }
    }

    /// Checks that this process may create cgroups here, by creating and
    /// removing an empty probe cgroup. Use it to fail early with a clear message.
    pub fn check_permission(layout: &Layout) -> Result<()> {
        let (name, _) = new_name("probe");
        Cgroup::create(layout, &name, &Limits::default())?.remove()
    }
}

/// `serverlab-<hint>-<pid>s<start>-<n>` (see [`cleanup`](super::cleanup)), the hint reduced to `[A-Za-z0-9_]`, ≤ 24 chars.
fn new_name(hint: &str) -> (String, u32) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h: String = hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    if h.is_empty() {
        h.push('c');
    }
    let owner = super::owner::Owner::me().tag();
    (format!("{PREFIX}-{h}-{owner}-{n}"), n)
}

/// While alive, the calling thread runs on the CPUs it may use outside a
/// cpuset (so that the threads it starts do too); dropped, it runs where
/// it did before.
struct AwayFrom(nix::sched::CpuSet);

impl AwayFrom {
    /// `None` when the thread's CPUs all lie in `cpuset`, or cannot be
    /// read or set: then nothing changes.
    fn cpus(cpuset: &str) -> Option<AwayFrom> {
        use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
        let inside = super::limits::parse_cpu_list(cpuset).ok()?;
        let me = nix::unistd::Pid::from_raw(0);
        let before = sched_getaffinity(me).ok()?;
        let mut away = CpuSet::new();
        let mut any = false;
        for cpu in 0..CpuSet::count() {
            if before.is_set(cpu).ok()? && !inside.contains(&(cpu as u32)) {
                away.set(cpu).ok()?;
                any = true;
            }
        }
        (any && sched_setaffinity(me, &away).is_ok()).then_some(AwayFrom(before))
    }
}

impl Drop for AwayFrom {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

/// The CPUs a credits policy may open up to: the cpuset, else the host's.
fn usable_cpus(limits: &Limits) -> usize {
    limits
        .cpuset
        .as_deref()
        .and_then(|s| super::limits::parse_cpu_list(s).ok())
        .map(|v| v.len())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// A running container. Stop it with [`Container::stop`] to get its
/// [`Accounting`]; dropping it without stopping still kills and removes
/// everything.
pub struct Container {
    name: String,
    res: Arc<Resources>,
    child: Child,
    addrs: Option<NetAddrs>,
    status: Option<ExitStatus>,
    rusage: Option<libc::rusage>,
    started: Instant,
    sampler: Option<Sampler>,
    credits: Option<CreditController>,
    stopped: bool,
}

impl Container {
    fn start(
        name: String,
        n: u32,
        res: Arc<Resources>,
        net: Net,
        mut cmd: Command,
        namespaces: bool,
    ) -> Result<Container> {
        let mut addrs = None;
        let mut netns_fd: Option<OwnedFd> = None;
        if net == Net::Isolated {
            let setup = NetSetup::create(std::process::id(), n)?;
            addrs = Some(setup.addrs);
            let fd = setup.open();
            *res.net.lock().unwrap_or_else(|p| p.into_inner()) = Some(setup);
            netns_fd = Some(fd?);
        }
        // Opened here, written in the child: no path formatting after fork.
        let procs: Vec<OwnedFd> = match &res.cgroup {
            Some(cg) => cg
                .procs_files()
                .iter()
                .map(|p| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(p)
                        .map(OwnedFd::from)
                        .map_err(|e| SandboxError::io("open", p, e))
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let setup = ChildSetup {
            cgroup_procs: procs.iter().map(|f| f.as_raw_fd()).collect(),
            netns: netns_fd.as_ref().map(|f| f.as_raw_fd()),
            hostname: name.as_bytes()[..name.len().min(64)].to_vec(),
            namespaces,
            parent: std::process::id() as libc::pid_t,
        };
        // SAFETY: in_child only makes async-signal-safe calls (see namespaces.rs).
        unsafe {
            cmd.pre_exec(move || in_child(&setup));
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(SandboxError::Spawn)?;
        *res.outer_pid.lock().unwrap_or_else(|p| p.into_inner()) = Some(child.id() as i32);
        drop((procs, netns_fd));
        Ok(Container {
            name,
            res,
            child,
            addrs,
            status: None,
            rusage: None,
            started,
            sampler: None,
            credits: None,
            stopped: false,
        })
    }

    /// The container's name (also its cgroup name and hostname).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Host pid of the outer process (it forwards signals to the command
    /// and exits with the command's status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The container's address on its veth (isolated network only).
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.addrs.map(|a| a.container)
    }

    /// Both ends of the container's link (isolated network only).
    pub fn addrs(&self) -> Option<NetAddrs> {
        self.addrs
    }

    /// The cgroup (None for an unlimited run).
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.res.cgroup.as_deref()
    }

    /// The std handle, for piped stdin/stdout/stderr (`child_mut().stdout.take()`).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` to the command (through the outer process and the reaper).
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .map_err(|e| SandboxError::Spawn(e.into()))
    }

    /// Kills every task of the container at once (SIGKILL), as a crash
    /// would; the container stays, so that its accounting can still be
    /// read and [`Container::stop`] still cleans up.
    pub fn kill(&self) -> Result<()> {
        self.res.kill()
    }

    /// Reaps the outer process if it has exited (`block`: wait for it).
    fn reap(&mut self, block: bool) -> Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let mut status = 0;
        // SAFETY: plain syscall on our own child; rusage is written by the kernel.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let flags = if block { 0 } else { libc::WNOHANG };
            let r = unsafe { libc::wait4(self.child.id() as i32, &mut status, flags, &mut ru) };
            if r > 0 {
                self.status = Some(ExitStatus::from_raw(status));
                self.rusage = Some(ru);
                return Ok(self.status);
            }
            if r == 0 {
                return Ok(None);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(SandboxError::Spawn(e));
            }
        }
    }

    /// Whether the command has ended, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.reap(false)
    }

    /// Waits until the command ends (exit status as a shell reports it).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.reap(true)?.expect("a blocking wait returns a status"))
    }

    /// Waits at most `limit`; `None` if still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.reap(false)? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills every task, reads the accounting, removes everything.
    pub fn stop(mut self) -> Result<Accounting> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<Accounting> {
        self.stopped = true;
        let credits_left = self.credits.as_mut().map(|c| c.stop());
        let sampled = self.sampler.as_mut().map(|s| s.stop());
        let wall = self.started.elapsed();
        let killed = if self.status.is_none() {
            self.res.kill()
        } else {
            Ok(())
        };
        // The outer process exits as soon as its reaper is gone.
        if self.wait_timeout(Duration::from_secs(5))?.is_none() {
            let _ = self.signal(nix::sys::signal::Signal::SIGKILL);
            self.wait()?;
        }
        let mut acc = Accounting {
            name: self.name.clone(),
            wall_us: wall.as_micros() as u64,
            credits_left,
            exit_code: self
                .status
                .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
            ..Default::default()
        };
        let read = match self.res.cgroup.as_deref() {
            Some(cg) => cg.read_accounting(&mut acc),
            None => {
                acc.unlimited = true;
                acc.cgroup = UNLIMITED.into();
                if let Some(ru) = &self.rusage {
                    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
                    acc.cpu_user_us = us(ru.ru_utime);
                    acc.cpu_system_us = us(ru.ru_stime);
                    acc.cpu_usage_us = acc.cpu_user_us + acc.cpu_system_us;
                    // ru_maxrss: the largest single process, KiB.
                    acc.memory_peak_bytes = Some(ru.ru_maxrss as u64 * 1024);
                }
                Ok(())
            }
        };
        if let Some(s) = sampled {
            if acc.memory_peak_bytes.is_none() && s.memory.is_some() {
                acc.memory_peak_bytes = s.memory;
                acc.memory_peak_sampled = true;
            }
            if acc.peak_tasks.is_none() && s.tasks.is_some() {
                acc.peak_tasks = s.tasks;
                acc.peak_tasks_sampled = true;
            }
            acc.memory_own_peak_bytes = s.own;
            acc.memory_cache_peak_bytes = s.cache;
        }
        let torn = self.res.teardown();
        cleanup::deregister(&self.res);
        killed?;
        read?;
        torn?;
        Ok(acc)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.stopped {
            if let Err(e) = self.stop_inner() {
                tracing::warn!("stopping container {} on drop: {e}", self.name);
            }
        }
    }
}
