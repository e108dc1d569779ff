//! The super server's loop: one `poll` (mio) over every service's
//! listeners, the status listener, the built-in services' connections, and
//! a `signalfd` for `SIGCHLD` (children
//! reaped the moment they exit: no zombie, ever), `SIGHUP` (read the file
//! again; a refused file keeps the old one running and says why) and
//! `SIGINT`/`SIGTERM` (stop: close the listeners, `SIGTERM` the running
//! services, `SIGKILL` what is left after [`STOP_GRACE`], reap them all).
//!
//! A service listens only while it may start another instance: it stops
//! watching its ports at its `instances` limit (new connections wait in the
//! kernel's backlog, as with xinetd), while switched off by `cps`, and —
//! `wait` services — while its server runs. Refusals (`only_from`,
//! `per_source`, the connection that trips `cps`) close the connection at
//! once. A fork or exec that fails is counted and logged, its connection
//! closed; the super server lives on.

use crate::builtin::{self, Conn};
use crate::config::{Builtin, Config, Service, Start};
use crate::spawn::{self, Hand};
use crate::status::{ServiceStatus, Status};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long running services get to stop after `SIGTERM`.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// A `wait` server that fails within this long of its start is not
/// restarted for [`RESTART_BACKOFF`] (else a server that cannot start would
/// be restarted in a loop while its first client waits).
const QUICK_FAILURE: Duration = Duration::from_secs(1);
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Built-in connections' deadlines are checked this often.
const SWEEP: Duration = Duration::from_millis(100);

const SIGNALS: Token = Token(0);
const STATUS: Token = Token(1);
const LISTEN_BASE: usize = 16;
const CONN_BASE: usize = 1 << 24;

/// The signals the loop takes through its signalfd. Block them (in the
/// thread that runs [`run`], before any other thread starts) with
/// [`block_signals`].
fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
    ] {
        set.add(s);
    }
    set
}

/// Blocks the loop's signals in the calling thread (and the threads it
/// starts later), so that they reach the loop's signalfd only.
pub fn block_signals() -> io::Result<()> {
    signals().thread_block().map_err(io::Error::from)
}

/// One service as the loop runs it.
struct Svc {
    cfg: Service,
    listeners: Vec<TcpListener>,
    /// The listeners are in the poll.
    watching: bool,
    /// Processes and built-in connections running now.
    running: usize,
    per_source: HashMap<IpAddr, usize>,
    /// cps: when the current second began, and connections in it.
    window: (Instant, u32),
    off_until: Option<Instant>,
    /// wait: the server running on the listener.
    handed: Option<libc::pid_t>,
    backoff_until: Option<Instant>,
}

impl Svc {
    fn may_listen(&self, now: Instant) -> bool {
        let below_limit = !self.cfg.instances.is_some_and(|n| self.running >= n);
        below_limit
            && !self.off_until.is_some_and(|t| t > now)
            && self.handed.is_none()
            && !self.backoff_until.is_some_and(|t| t > now)
    }
}

/// A process the loop started.
struct ChildInfo {
    service: String,
    source: Option<IpAddr>,
    started: Instant,
}

/// What serves an admitted connection.
enum Launch {
    Builtin(Builtin),
    Process(spawn::Spawned),
}

/// The loop's state.
pub struct SuperServer {
    poll: Poll,
    path: PathBuf,
    config: Config,
    svcs: Vec<Svc>,
    /// Listener token → (service, listener).
    tokens: Vec<(usize, usize)>,
    status_listener: Option<TcpListener>,
    status: Status,
    children: HashMap<libc::pid_t, ChildInfo>,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    /// Built-in connections open now, and when their deadlines are next
    /// checked.
    live_conns: usize,
    next_sweep: Instant,
    signals: SignalFd,
    stopping: bool,
}

impl SuperServer {
    /// Binds every service's listeners (and the status listener) from
    /// `config`, read from `path`. Call [`block_signals`] first.
    pub fn new(path: PathBuf, config: Config) -> io::Result<SuperServer> {
        let poll = Poll::new()?;
        let signals =
            SignalFd::with_flags(&signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let mut me = SuperServer {
            poll,
            path,
            config: Config {
                status: None,
                directory: None,
                services: Vec::new(),
            },
            svcs: Vec::new(),
            tokens: Vec::new(),
            status_listener: None,
            status: Status::default(),
            children: HashMap::new(),
            conns: Vec::new(),
            free_conns: Vec::new(),
            live_conns: 0,
            next_sweep: Instant::now(),
            signals,
            stopping: false,
        };
        me.apply(config)?;
        Ok(me)
    }

    /// What it listens on, for people: one line per service.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .svcs
            .iter()
            .map(|s| {
                let addrs: Vec<String> = s
                    .listeners
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .map(|a| a.to_string())
                    .collect();
                format!(
                    "service {} ({}) on {}",
                    s.cfg.name,
                    mode_name(&s.cfg.start),
                    addrs.join(", ")
                )
            })
            .collect();
        if let Some(addr) = self
            .status_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
        {
            lines.push(format!("status on http://{addr}/status"));
        }
        lines
    }

    /// Takes `config` on: keeps the listeners of addresses still in use
    /// (no port is closed and reopened), binds the new ones, closes the
    /// rest. Running processes carry on; counters follow service names.
    fn apply(&mut self, config: Config) -> io::Result<()> {
        let mut old: HashMap<SocketAddr, TcpListener> = HashMap::new();
        for svc in std::mem::take(&mut self.svcs) {
            for l in &svc.listeners {
                if svc.watching {
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&l.as_raw_fd()));
                }
            }
            for l in svc.listeners {
                if let Ok(a) = l.local_addr() {
                    old.insert(a, l);
                }
            }
        }
        let mut svcs = Vec::with_capacity(config.services.len());
        for cfg in &config.services {
            let mut listeners = Vec::new();
            for addr in &cfg.listen {
                let l = match old.remove(addr) {
                    Some(l) => l,
                    None => servers::net::listen(*addr).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("service {}: cannot listen on {addr}: {e}", cfg.name),
                        )
                    })?,
                };
                l.set_nonblocking(true)?;
                listeners.push(l);
            }
            self.status
                .services
                .entry(cfg.name.clone())
                .or_default()
                .describe(cfg);
            svcs.push(Svc {
                cfg: cfg.clone(),
                listeners,
                watching: false,
                running: 0,
                per_source: HashMap::new(),
                window: (Instant::now(), 0),
                off_until: None,
                handed: None,
                backoff_until: None,
            });
        }
        // Running processes count against their service's limits still.
        for info in self.children.values() {
            if let Some(svc) = svcs.iter_mut().find(|s| s.cfg.name == info.service) {
                svc.running += 1;
                if let Some(ip) = info.source {
                    *svc.per_source.entry(ip).or_default() += 1;
                }
            }
        }
        for (pid, info) in &self.children {
            if let Some(svc) = svcs
                .iter_mut()
                .find(|s| s.cfg.name == info.service && matches!(s.cfg.start, Start::Wait(_)))
            {
                svc.handed = Some(*pid);
            }
        }
        self.tokens = svcs
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..s.listeners.len()).map(move |j| (i, j)))
            .collect();
        self.svcs = svcs;
        if config.status != self.config.status || self.status_listener.is_none() {
            if let Some(l) = self.status_listener.take() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&l.as_raw_fd()));
            }
            if let Some(addr) = config.status {
                let l = servers::net::listen(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("status: cannot listen on {addr}: {e}"))
                })?;
                l.set_nonblocking(true)?;
                self.poll.registry().register(
                    &mut SourceFd(&l.as_raw_fd()),
                    STATUS,
                    Interest::READABLE,
                )?;
                self.status_listener = Some(l);
            }
        }
        self.config = config;
        self.reconcile_all();
        Ok(())
    }

    fn reconcile_all(&mut self) {
        for i in 0..self.svcs.len() {
            self.reconcile(i);
        }
    }

    /// Watches service `i`'s ports exactly when it may start another
    /// instance.
    fn reconcile(&mut self, i: usize) {
        let now = Instant::now();
        let want = !self.stopping && self.svcs[i].may_listen(now);
        if self.svcs[i].watching == want {
            return;
        }
        let registry = self.poll.registry();
        for (k, &(si, lj)) in self.tokens.iter().enumerate() {
            if si != i {
                continue;
            }
            let fd = self.svcs[i].listeners[lj].as_raw_fd();
            let token = Token(LISTEN_BASE + k);
            let r = if want {
                registry.register(&mut SourceFd(&fd), token, Interest::READABLE)
            } else {
                registry.deregister(&mut SourceFd(&fd))
            };
            if let Err(e) = r {
                tracing::error!("service {}: {e}", self.svcs[i].cfg.name);
            }
        }
        self.svcs[i].watching = want;
        let state = self.state_text(i);
        self.stats(i).state = state;
    }

    fn state_text(&self, i: usize) -> String {
        let s = &self.svcs[i];
        let now = Instant::now();
        if let Some(pid) = s.handed {
            format!("handed to pid {pid}")
        } else if let Some(t) = s.off_until.filter(|&t| t > now) {
            format!("off (cps) for {:.1} s", (t - now).as_secs_f64())
        } else if let Some(t) = s.backoff_until.filter(|&t| t > now) {
            format!("restarting in {:.1} s", (t - now).as_secs_f64())
        } else if s.cfg.instances.is_some_and(|n| s.running >= n) {
            "at its instances limit".into()
        } else if self.stopping {
            "stopping".into()
        } else {
            "listening".into()
        }
    }

    fn stats(&mut self, i: usize) -> &mut ServiceStatus {
        let name = &self.svcs[i].cfg.name;
        self.status
            .services
            .get_mut(name)
            .expect("`apply` makes every service's entry")
    }

    /// Runs until `SIGINT` or `SIGTERM`, then stops everything it started.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !self.stopping {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.take_signals(),
                    STATUS => self.accept_status(),
                    Token(t) if (LISTEN_BASE..CONN_BASE).contains(&t) => {
                        self.accept(t - LISTEN_BASE)
                    }
                    Token(t) => self.drive_conn(t - CONN_BASE),
                }
            }
            self.on_time();
        }
        self.stop_all();
        Ok(())
    }

    /// The poll timeout: the next cps switch-on or restart, a built-in
    /// connection's deadline check.
    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for s in &self.svcs {
            for t in [s.off_until, s.backoff_until].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        let mut timeout = next.map(|t| t.saturating_duration_since(now));
        if self.live_conns > 0 {
            let sweep = self.next_sweep.saturating_duration_since(now);
            timeout = Some(timeout.map_or(sweep, |t| t.min(sweep)));
        }
        timeout
    }

    /// Switch-ons, restarts and built-in deadlines that are due.
    fn on_time(&mut self) {
        let now = Instant::now();
        for i in 0..self.svcs.len() {
            let s = &mut self.svcs[i];
            if s.off_until.is_some_and(|t| t <= now) {
                s.off_until = None;
                tracing::info!("service {}: back on after its cps switch-off", s.cfg.name);
            }
            if s.backoff_until.is_some_and(|t| t <= now) {
                s.backoff_until = None;
            }
            self.reconcile(i);
        }
        // Deadlines are whole seconds: a look every SWEEP, not every turn.
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP;
        for slot in 0..self.conns.len() {
            if self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.deadline() <= now)
            {
                self.close_conn(slot);
            }
        }
    }

    fn take_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => self.reap(),
                Ok(Signal::SIGHUP) => self.reload(),
                Ok(Signal::SIGINT | Signal::SIGTERM) => self.stopping = true,
                _ => {}
            }
        }
        // Several SIGCHLDs may merge into one: reap whatever has exited.
        self.reap();
    }

    fn reload(&mut self) {
        match crate::config::load(&self.path) {
            Err(e) => tracing::error!("SIGHUP: {e}; keeping the running configuration"),
            Ok(config) => {
                let keep = self.config.clone();
                match self.apply(config) {
                    Ok(()) => tracing::info!(
                        "SIGHUP: {} read again, {} services",
                        self.path.display(),
                        self.svcs.len()
                    ),
                    Err(e) => {
                        tracing::error!("SIGHUP: {e}; keeping the running configuration");
                        if let Err(e) = self.apply(keep) {
                            tracing::error!("the running configuration cannot be restored: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Collects every exited child (`waitpid(-1, WNOHANG)`).
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child, not blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(info) = self.children.remove(&pid) else {
                continue;
            };
            let text = exit_text(status);
            let failed = text != "0";
            let Some(i) = self.svcs.iter().position(|s| s.cfg.name == info.service) else {
                continue;
            };
            *self.stats(i).exits.entry(text.clone()).or_default() += 1;
            self.release(i, info.source);
            let svc = &mut self.svcs[i];
            if svc.handed == Some(pid) {
                svc.handed = None;
                if failed && info.started.elapsed() < QUICK_FAILURE {
                    svc.backoff_until = Some(Instant::now() + RESTART_BACKOFF);
                    tracing::warn!("service {}: its server exited at once ({text}); starting it again in {RESTART_BACKOFF:?}", svc.cfg.name);
                }
            }
            self.reconcile(i);
        }
    }

    /// One instance of service `i` (from `source`) ended.
    fn release(&mut self, i: usize, source: Option<IpAddr>) {
        let svc = &mut self.svcs[i];
        svc.running = svc.running.saturating_sub(1);
        if let Some(ip) = source {
            if let Some(n) = svc.per_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    svc.per_source.remove(&ip);
                }
            }
        }
        let running = svc.running;
        self.stats(i).running = running;
    }

    /// Accepts from listener token `k` while its service may take more.
    fn accept(&mut self, k: usize) {
        let Some(&(i, j)) = self.tokens.get(k) else {
            return;
        };
        if let Start::Wait(command) = &self.svcs[i].cfg.start {
            // Every listener of the service goes to one server; another of
            // its listeners readable in the same turn is already handed.
            if !self.svcs[i].may_listen(Instant::now()) {
                return;
            }
            let command = command.clone();
            return self.hand_listeners(i, &command);
        }
        while self.svcs[i].watching {
            match self.svcs[i].listeners[j].accept() {
                Ok((stream, peer)) => self.admit(i, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if servers::incoming::is_transient_accept_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little.
                    tracing::warn!("service {}: accept: {e}", self.svcs[i].cfg.name);
                    self.svcs[i].backoff_until =
                        Some(Instant::now() + servers::net::ACCEPT_BACKOFF);
                    self.reconcile(i);
                    return;
                }
            }
        }
    }

    /// Applies the limits to one new connection, then starts what serves it.
    fn admit(&mut self, i: usize, stream: std::net::TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        self.stats(i).accepted += 1;
        let ip = peer.ip();
        let name = self.svcs[i].cfg.name.clone();
        if let Some(ranges) = &self.svcs[i].cfg.only_from {
            if !ranges.iter().any(|r| r.contains(ip)) {
                self.stats(i).refused_only_from += 1;
                tracing::warn!("service {name}: {ip} is not in only_from; closed");
                return;
            }
        }
        if let Some(cps) = self.svcs[i].cfg.cps {
            let svc = &mut self.svcs[i];
            if now.duration_since(svc.window.0) >= Duration::from_secs(1) {
                svc.window = (now, 0);
            }
            svc.window.1 += 1;
            if svc.window.1 > cps.rate {
                svc.off_until = Some(now + cps.off);
                svc.window = (now, 0);
                let stats = self.stats(i);
                stats.refused_cps += 1;
                stats.cps_switch_offs += 1;
                tracing::warn!(
                    "service {name}: more than {} connections in a second: off for {:?} (cps)",
                    cps.rate,
                    cps.off
                );
                self.reconcile(i);
                return;
            }
        }
        if let Some(most) = self.svcs[i].cfg.per_source {
            if self.svcs[i].per_source.get(&ip).copied().unwrap_or(0) >= most {
                self.stats(i).refused_per_source += 1;
                tracing::warn!(
                    "service {name}: {ip} already has {most} instances (per_source); closed"
                );
                return;
            }
        }
        // Started while the service's settings are borrowed; bookkept after.
        let launched = match &self.svcs[i].cfg.start {
            Start::Builtin(kind) => Ok(Launch::Builtin(*kind)),
            Start::Nowait(command) => {
                let extra = [
                    ("REMOTE_ADDR", ip.to_string()),
                    ("REMOTE_PORT", peer.port().to_string()),
                ];
                spawn::spawn(command, Hand::Connection(stream.as_raw_fd()), &name, &extra)
                    .map(Launch::Process)
                    .map_err(|e| format!("cannot start {}: {e}", command.path.display()))
            }
            Start::Wait(_) => return,
        };
        let launch = match launched {
            Ok(launch) => launch,
            Err(why) => {
                self.stats(i).start_failures += 1;
                tracing::error!("service {name}: {why}; connection closed");
                return;
            }
        };
        // Counted before a built-in runs: one that is done at once
        // (daytime) is counted out again inside `add_conn`.
        let svc = &mut self.svcs[i];
        svc.running += 1;
        *svc.per_source.entry(ip).or_default() += 1;
        let (running, at_limit) = (
            svc.running,
            svc.cfg.instances.is_some_and(|n| svc.running >= n),
        );
        let stats = self.stats(i);
        stats.started += 1;
        stats.running = running;
        if at_limit {
            stats.instance_limit_waits += 1;
            tracing::info!(
                "service {name}: {running} instances running, its limit: new connections wait"
            );
            self.reconcile(i);
        }
        match launch {
            Launch::Builtin(kind) => {
                if !self.add_conn(Conn::new(stream, Some(kind), name, now)) {
                    self.release(i, Some(ip));
                    self.reconcile(i);
                }
            }
            Launch::Process(process) => self.track(process, &name, Some(ip)),
        }
    }

    /// wait: hands the service's listeners to a new server and stops
    /// watching them.
    fn hand_listeners(&mut self, i: usize, command: &crate::config::Command) {
        let name = self.svcs[i].cfg.name.clone();
        let fds: Vec<_> = self.svcs[i]
            .listeners
            .iter()
            .map(|l| l.as_raw_fd())
            .collect();
        match spawn::spawn(command, Hand::Listeners(&fds), &name, &[]) {
            Ok(s) => {
                let pid = s.pid;
                self.track(s, &name, None);
                let svc = &mut self.svcs[i];
                svc.handed = Some(pid);
                svc.running += 1;
                let stats = self.stats(i);
                stats.started += 1;
                stats.running = 1;
            }
            Err(e) => {
                self.stats(i).start_failures += 1;
                self.svcs[i].backoff_until = Some(Instant::now() + RESTART_BACKOFF);
                tracing::error!(
                    "service {name}: cannot start {}: {e}; trying again in {RESTART_BACKOFF:?}",
                    command.path.display()
                );
            }
        }
        self.reconcile(i);
    }

    /// Remembers a started process; says so if its exec failed.
    fn track(&mut self, s: spawn::Spawned, service: &str, source: Option<IpAddr>) {
        self.children.insert(
            s.pid,
            ChildInfo {
                service: service.to_string(),
                source,
                started: Instant::now(),
            },
        );
        if let Some(e) = s.exec_error {
            if let Some(i) = self.svcs.iter().position(|v| v.cfg.name == service) {
                self.stats(i).start_failures += 1;
            }
            tracing::error!("service {service}: pid {} could not exec: {e}", s.pid);
        }
    }

    fn accept_status(&mut self) {
        loop {
            let Some(l) = &self.status_listener else {
                return;
            };
            match l.accept() {
                Ok((stream, _)) => {
                    self.add_conn(Conn::new(stream, None, String::new(), Instant::now()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if servers::incoming::is_transient_accept_error(&e) => continue,
                Err(_) => return,
            }
        }
    }

    fn add_conn(&mut self, conn: Conn) -> bool {
        let slot = self.free_conns.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let mut conn = conn;
        if self
            .poll
            .registry()
            .register(
                conn.stream(),
                Token(CONN_BASE + slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free_conns.push(slot);
            return false;
        }
        self.conns[slot] = Some(conn);
        self.live_conns += 1;
        self.drive_conn(slot);
        true
    }

    fn drive_conn(&mut self, slot: usize) {
        let Some(kind) = self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .map(Conn::kind)
        else {
            return;
        };
        // Only a status connection needs the status.
        let status = match kind {
            None => self.status_json(),
            Some(_) => String::new(),
        };
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.drive(&status) == builtin::Progress::Done {
            self.close_conn(slot);
        }
    }

    fn close_conn(&mut self, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(conn.stream());
        self.free_conns.push(slot);
        self.live_conns -= 1;
        if conn.kind().is_some() {
            let source = conn.peer_ip();
            if let Some(i) = self.svcs.iter().position(|s| s.cfg.name == conn.service()) {
                self.release(i, source);
                *self.stats(i).exits.entry("0".into()).or_default() += 1;
                self.reconcile(i);
            }
        }
    }

    /// The status as JSON (what `GET /status` answers).
    pub fn status_json(&self) -> String {
        serde_json::to_string_pretty(&self.status).unwrap_or_default()
    }

    /// Stops listening, asks every running service to stop, forces the
    /// ones that do not, reaps all.
    fn stop_all(&mut self) {
        for i in 0..self.svcs.len() {
            self.reconcile(i);
        }
        self.svcs.clear();
        self.status_listener = None;
        for slot in 0..self.conns.len() {
            self.close_conn(slot);
        }
        let pids: Vec<libc::pid_t> = self.children.keys().copied().collect();
        if pids.is_empty() {
            return;
        }
        tracing::info!("stopping {} running services", pids.len());
        for &pid in &pids {
            // SAFETY: signalling our own children.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while !self.children.is_empty() && Instant::now() < deadline {
            self.reap_any();
            std::thread::sleep(Duration::from_millis(10));
        }
        for &pid in self.children.keys() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        while !self.children.is_empty() {
            let mut status = 0;
            // SAFETY: blocking wait for our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid < 0 {
                break;
            }
            self.children.remove(&pid);
        }
    }

    fn reap_any(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child, not blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            self.children.remove(&pid);
        }
    }
}

fn mode_name(start: &Start) -> &'static str {
    match start {
        Start::Nowait(_) => "nowait",
        Start::Wait(_) => "wait",
        Start::Builtin(Builtin::Echo) => "builtin echo",
        Start::Builtin(Builtin::Discard) => "builtin discard",
        Start::Builtin(Builtin::Daytime) => "builtin daytime",
        Start::Builtin(Builtin::Hello) => "builtin hello",
    }
}

/// `0`, `1`, … for exit codes; `SIGSEGV`, … for deaths by signal.
fn exit_text(status: i32) -> String {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status).to_string()
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
    } else {
        format!("status {status}")
    }
}

/// For tests of the listener bookkeeping.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_people_say_them() {
        assert_eq!(exit_text(0), "0");
        assert_eq!(exit_text(3 << 8), "3");
        assert_eq!(exit_text(libc::SIGSEGV), "SIGSEGV");
    }

    #[test]
    fn a_service_listens_only_while_it_may_start_another() {
        let now = Instant::now();
        let cfg = crate::config::parse("t", "[[service]]\nname = \"s\"\nlisten = [\"127.0.0.1:9\"]\nbuiltin = \"echo\"\ninstances = 2\n").unwrap();
        let mut s = Svc {
            cfg: cfg.services[0].clone(),
            listeners: Vec::new(),
            watching: false,
            running: 1,
            per_source: HashMap::new(),
            window: (now, 0),
            off_until: None,
            handed: None,
            backoff_until: None,
        };
        assert!(s.may_listen(now));
        s.running = 2;
        assert!(!s.may_listen(now), "at its instances limit");
        s.running = 0;
        s.off_until = Some(now + Duration::from_secs(1));
        assert!(
            !s.may_listen(now) && s.may_listen(now + Duration::from_secs(2)),
            "cps"
        );
        s.off_until = None;
        s.handed = Some(1);
        assert!(!s.may_listen(now), "handed");
    }
}
