//! The dispatcher: one address in front of replicated servers. It picks a
//! replica for each connection ([`policy`]) and forwards it:
//!
//! - `http`: a copy proxy on one event loop ([`proxy`]): each request
//!   parsed and routed on its own, its bytes forwarded over pooled
//!   keep-alive connections, 502/503/504 answered by the dispatcher itself
//!   when no replica can; at most `max_connections` clients, more answered
//!   503.
//! - `splice`: layer 4. It connects to the replica and moves the bytes both
//!   ways with `splice(2)`, socket → pipe → socket, never through user
//!   space, all links on one event-driven relay thread ([`relay`]); at most
//!   `max_connections` at once, beyond which new connections are closed and
//!   counted.
//! - `handoff`: it passes the accepted socket itself to the replica's
//!   handoff socket (`serve --handoff PATH`) and closes its copy: the
//!   replica answers the client directly and the dispatcher leaves the data
//!   path. For `affinity` it first *peeks* at the request (`MSG_PEEK`, so
//!   nothing is consumed) for the session cookie.
//!
//! Health: active ([`Checks`]) — `GET /health` every interval, `fall`
//! failures in a row take a replica out, `rise` successes bring it back —
//! and passive: a replica that refuses a connection or a handoff is taken
//! out at once, and comes back when `rise` checks pass (HAProxy's
//! `on-error mark-down`); without active checks it is tried again after
//! [`EJECT`]. The status (per replica: up or not, connections, open,
//! errors, ejections, the last change) is served as JSON on `--status`.

pub mod http;
pub mod migrate;
mod parking;
pub mod policy;
pub mod proxy;
pub mod queue;
pub mod relay;

use policy::{Candidate, Picker, Policy};
use serde::Serialize;
use servers::codec::Response;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Without active checks, a replica that failed is out for this long, then
/// tried again.
pub const EJECT: Duration = Duration::from_secs(2);
/// Connecting to a replica gives up after this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `affinity` waits for the request head to look for the cookie.
pub const PEEK_TIMEOUT: Duration = Duration::from_millis(500);

/// How connections reach the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Http,
    Splice,
    Handoff,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "http" => Ok(Mode::Http),
            "splice" => Ok(Mode::Splice),
            "handoff" => Ok(Mode::Handoff),
            other => Err(format!("{other:?}: modes are http, splice and handoff")),
        }
    }
}

/// One replica: where it listens (and takes handoffs), and its counters.
#[derive(Debug)]
pub struct Replica {
    pub addr: SocketAddr,
    pub handoff: Option<PathBuf>,
    /// The route its session ids end in (`serve --route`).
    pub route: Option<String>,
    /// Its control address (`serve --control`), which a migration uses
    /// because the replica's workers may all be held by this dispatcher's
    /// own keep-alive connections.
    pub control: Option<SocketAddr>,
    /// http: most connections the proxy opens to it (pooled idle ones
    /// included); requests beyond wait in the proxy (`None`: no limit).
    /// A replica with a bounded number of workers needs it: each
    /// keep-alive connection holds one of its workers.
    pub maxconn: Option<usize>,
    /// http: requests waiting in the proxy for a connection to it.
    queued: AtomicUsize,
    /// http: connections the proxy holds open to it.
    proxy_connections: AtomicUsize,
    channel: Option<UnixDatagram>,
    open: AtomicUsize,
    connections: AtomicU64,
    errors: AtomicU64,
    ejections: AtomicU64,
    down_until: Mutex<Option<Instant>>,
    /// Active checks: out after `fall` failures, until `rise` successes.
    checked: Mutex<Checked>,
    /// Whether active checks run (then they, not a timer, bring a replica
    /// taken out by a failure back).
    actively_checked: std::sync::atomic::AtomicBool,
    /// The replica its sessions were migrated to ([`NOWHERE`]: none).
    moved_to: AtomicUsize,
    /// Takes no new clients (its sessions are migrating or have moved).
    retired: std::sync::atomic::AtomicBool,
}

/// `Replica::moved_to` when the sessions stayed home.
const NOWHERE: usize = usize::MAX;

/// What the active checks know of a replica.
#[derive(Debug)]
struct Checked {
    down: bool,
    /// Results in a row that disagree with `down` (successes while down,
    /// failures while up).
    streak: u32,
    last_change: Option<Instant>,
}

impl Replica {
    /// Where active checks go: its control address when the proxy may hold
    /// all its workers (a `maxconn` set to their number), since a check on
    /// its own address would then wait for a worker the proxy keeps; its
    /// address otherwise, so that a check also proves it accepts work.
    fn check_addr(&self) -> SocketAddr {
        match (self.maxconn, self.control) {
            (Some(_), Some(control)) => control,
            _ => self.addr,
        }
    }

    /// A replica at `addr` (and, for handoff, its socket at `handoff`).
    pub fn new(addr: SocketAddr, handoff: Option<PathBuf>) -> Replica {
        Replica {
            addr,
            handoff,
            route: None,
            control: None,
            maxconn: None,
            queued: AtomicUsize::new(0),
            proxy_connections: AtomicUsize::new(0),
            channel: None,
            open: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            down_until: Mutex::new(None),
            actively_checked: std::sync::atomic::AtomicBool::new(false),
            moved_to: AtomicUsize::new(NOWHERE),
            retired: std::sync::atomic::AtomicBool::new(false),
            checked: Mutex::new(Checked {
                down: false,
                streak: 0,
                last_change: None,
            }),
        }
    }

    /// Takes one active check's result.
    fn checked(&self, ok: bool, checks: &Checks) {
        let mut c = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if ok != c.down {
            c.streak = 0; // agrees with the state it is in
            return;
        }
        c.streak += 1;
        let needed = if c.down { checks.rise } else { checks.fall };
        if c.streak >= needed {
            c.down = !c.down;
            c.streak = 0;
            c.last_change = Some(Instant::now());
            if c.down {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "replica {} out: {} failed health checks",
                    self.addr,
                    checks.fall
                );
            } else {
                tracing::info!(
                    "replica {} back: {} health checks passed",
                    self.addr,
                    checks.rise
                );
            }
        }
    }

    fn up(&self, now: Instant) -> bool {
        if self.checked.lock().unwrap_or_else(|p| p.into_inner()).down {
            return false;
        }
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(t) if t > now => false,
            Some(_) => {
                *down = None;
                tracing::info!("replica {} is tried again", self.addr);
                true
            }
            None => true,
        }
    }

    /// It failed: out until `rise` active checks pass, or for [`EJECT`]
    /// when none run.
    fn eject(&self, why: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.actively_checked.load(Ordering::Relaxed) {
            let mut c = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if !c.down {
                c.down = true;
                c.streak = 0;
                c.last_change = Some(Instant::now());
                self.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "replica {} out until its health checks pass: {why}",
                    self.addr
                );
            }
            return;
        }
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_none() {
            self.ejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("replica {} taken out for {EJECT:?}: {why}", self.addr);
        }
        *down = Some(Instant::now() + EJECT);
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_change = Some(Instant::now());
    }
}

/// Active health checks: `GET path` every `interval` (with `interval` as
/// the timeout too).
#[derive(Debug, Clone)]
pub struct Checks {
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    pub path: String,
}

/// Whether `GET path` on `addr` answers 200 within `timeout`.
pub fn healthy(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    servers::probe::get(addr, path, timeout).is_ok_and(|(status, _)| status == 200)
}

/// A replica's line in the status.
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    pub addr: String,
    pub up: bool,
    /// Seconds since it last went out or came back.
    pub last_change_s: Option<f64>,
    pub open: usize,
    pub connections: u64,
    pub errors: u64,
    pub ejections: u64,
    /// Takes no new clients: its sessions are migrating or have moved.
    pub retired: bool,
    /// Where its sessions were migrated to.
    pub sessions_at: Option<String>,
    /// Its connection limit (http and splice), the connections the http
    /// proxy holds to it, and the requests (http) or clients (splice)
    /// waiting for one.
    pub maxconn: Option<usize>,
    pub proxy_connections: usize,
    pub queued: usize,
}

/// The dispatcher's status.
#[derive(Debug, Serialize)]
pub struct Status {
    pub policy: Policy,
    pub mode: Mode,
    pub accepted: u64,
    /// Client connections being served (http) or relayed (splice) now.
    pub open: usize,
    /// Connections closed because no replica was up, or at the limit.
    pub refused: u64,
    /// Requests (http) or clients (splice) free to go to any replica that
    /// wait for a connection to any of them (every replica at its
    /// `maxconn`).
    pub queued: usize,
    pub replicas: Vec<ReplicaStatus>,
}

/// The dispatcher's shared state.
pub struct Dispatcher {
    mode: Mode,
    picker: Picker,
    replicas: Vec<Replica>,
    max_connections: usize,
    open: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// Affinity in handoff and splice: threads peeking at a request now.
    peeking: AtomicUsize,
    /// splice: the relay thread, started by `run`.
    relay: std::sync::OnceLock<relay::Handle>,
    /// http: the proxy thread, started by `run`.
    proxy: std::sync::OnceLock<proxy::Handle>,
    /// http and splice: requests (http) or clients (splice) waiting for
    /// whichever replica frees a connection first.
    queued: AtomicUsize,
    /// splice: clients waiting for a replica at its `maxconn`.
    parking: parking::Parking,
    /// http: a replica silent this long gets its client a 504 (and a
    /// request waiting this long for a connection a 503); splice: a client
    /// waiting this long for a replica with room is closed.
    pub answer_timeout: Duration,
}

impl Dispatcher {
    /// A dispatcher over `replicas`; for handoff each needs its socket.
    pub fn new(
        mode: Mode,
        policy: Policy,
        mut replicas: Vec<Replica>,
        max_connections: usize,
    ) -> io::Result<Dispatcher> {
        if replicas.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no replica"));
        }
        if mode == Mode::Handoff {
            for r in &mut replicas {
                let Some(path) = &r.handoff else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("replica {}: handoff needs its socket (ADDR@PATH)", r.addr),
                    ));
                };
                let channel = UnixDatagram::unbound()?;
                // A replica not up yet is found at the next try (see
                // `dispatch`).
                let _ = channel.connect(path);
                r.channel = Some(channel);
            }
        }
        let n = replicas.len();
        Ok(Dispatcher {
            mode,
            picker: Picker::new(policy),
            replicas,
            max_connections: max_connections.max(1),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            peeking: AtomicUsize::new(0),
            relay: std::sync::OnceLock::new(),
            proxy: std::sync::OnceLock::new(),
            queued: AtomicUsize::new(0),
            parking: parking::Parking::new(n),
            answer_timeout: http::ANSWER_TIMEOUT,
        })
    }

    /// Serves `listener` until `shutdown` is triggered.
    pub fn run(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: &servers::Shutdown,
    ) -> io::Result<()> {
        if self.mode == Mode::Splice && self.relay.get().is_none() {
            let me = self.clone();
            let _ = self.relay.set(relay::start(move |i| me.closed(i))?);
            if self.replicas.iter().any(|r| r.maxconn.is_some()) {
                let (me, stop) = (self.clone(), shutdown.clone());
                std::thread::Builder::new()
                    .name("splice-queue".into())
                    .spawn(move || me.serve_parked(&stop))?;
            }
        }
        if self.mode == Mode::Http && self.proxy.get().is_none() {
            let _ = self.proxy.set(proxy::start(self.clone())?);
        }
        servers::net::accept_loop(&listener.into(), shutdown, |arrival| {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            self.dispatch(arrival.stream);
        })
    }

    /// The replica for a connection or request: with affinity, the one
    /// holding the session ([`Dispatcher::home`]) while it is up, and the
    /// next in turn for a client without a session; else the policy's pick
    /// by `key` (the session's hash, or the client's address). A retired
    /// replica takes no new client. `None` when no replica is up.
    fn choose(&self, key: u64, sid: Option<&str>) -> Option<usize> {
        if self.picker.policy() == Policy::Affinity {
            let Some(sid) = sid else {
                return self.picker.in_turn(&self.candidates());
            };
            if let Some(home) = self
                .home(sid)
                .filter(|&h| self.replicas[h].up(Instant::now()))
            {
                return Some(home);
            }
        }
        self.picker.pick(&self.candidates(), key)
    }

    /// With affinity, the replica holding the session `sid`: the one whose
    /// route ends the id, or the one its sessions migrated to (and on, if
    /// they moved again). Never a source its sessions left: its copies are
    /// stale, or dropped.
    pub(crate) fn home(&self, sid: &str) -> Option<usize> {
        if self.picker.policy() != Policy::Affinity {
            return None;
        }
        let route = servers::protocol::sid_route(sid)?;
        let mut home = self
            .replicas
            .iter()
            .position(|r| r.route.as_deref() == Some(route))?;
        // Bounded: a replica whose sessions moved away is never a
        // migration's destination, so the chain has no loop.
        for _ in 0..self.replicas.len() {
            match self.replicas[home].moved_to.load(Ordering::Acquire) {
                NOWHERE => break,
                next => home = next,
            }
        }
        Some(home)
    }

    /// Whether a request may go to any replica: the policy keeps no
    /// client or session on one (round robin, least connections, p2c, or
    /// affinity for a request without a session yet).
    fn movable(&self, sid: Option<&str>) -> bool {
        match self.picker.policy() {
            Policy::RoundRobin | Policy::LeastConnections | Policy::P2c => true,
            Policy::Affinity => sid.is_none(),
            Policy::Source => false,
        }
    }

    fn candidates(&self) -> Vec<Candidate> {
        let now = Instant::now();
        self.replicas
            .iter()
            .map(|r| Candidate {
                up: r.up(now) && !r.retired.load(Ordering::Relaxed),
                open: r.open.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Picks a replica and forwards `client` to it; a replica that fails is
    /// taken out and another tried. With affinity the request is first
    /// peeked at for its session, on a thread of its own (at most
    /// `max_connections` at once; beyond, the client is placed without
    /// looking): a client slow to send must not hold up the accepting
    /// thread and every client behind it.
    fn dispatch(self: &Arc<Self>, client: TcpStream) {
        if self.mode == Mode::Http {
            return self.serve_http(client);
        }
        if self.picker.policy() != Policy::Affinity {
            return self.forward(client, None);
        }
        if self.peeking.fetch_add(1, Ordering::Relaxed) < self.max_connections {
            let me = self.clone();
            let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
            let spawned = std::thread::Builder::new()
                .name("peek".into())
                .spawn(move || {
                    if let Ok(client) = rx.recv() {
                        let sid = peek_session(&client);
                        me.forward(client, sid);
                    }
                    me.peeking.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_ok() {
                // The thread owns it now (a send to a live thread cannot fail).
                let _ = tx.send(client);
                return;
            }
        }
        self.peeking.fetch_sub(1, Ordering::Relaxed);
        self.forward(client, None);
    }

    /// Forwards `client` (whose session is `sid`) to a replica.
    fn forward(self: &Arc<Self>, mut client: TcpStream, sid: Option<String>) {
        let key = key_of(
            sid.as_deref(),
            || client.peer_addr().ok(),
            self.picker.policy(),
        );
        for _ in 0..self.replicas.len() {
            let Some(i) = self.choose(key, sid.as_deref()) else {
                break;
            };
            let replica = &self.replicas[i];
            match self.mode {
                // Served per request by `serve_http`, never here.
                Mode::Http => return,
                Mode::Handoff => {
                    let channel = replica.channel.as_ref().expect("made in new");
                    // Counted before the replica can answer (and a client
                    // read the status after its answer), taken back if
                    // the handoff fails.
                    replica.connections.fetch_add(1, Ordering::Relaxed);
                    match servers::handoff::send(channel, &client, b"") {
                        Ok(()) => return,
                        Err(e) => {
                            replica.connections.fetch_sub(1, Ordering::Relaxed);
                            replica.eject(&format_args!("handoff: {e}"));
                            // A restarted replica has a new socket at the
                            // same path: aim at it for the next try.
                            if let Some(path) = &replica.handoff {
                                let _ = channel.connect(path);
                            }
                        }
                    }
                }
                Mode::Splice => {
                    if self.open.load(Ordering::Relaxed) >= self.max_connections {
                        break;
                    }
                    let j = match self.splice_slot(i, sid.as_deref()) {
                        Ok(j) => j,
                        Err(queue) => return self.park(queue, parking::Parked { client, sid }),
                    };
                    match self.splice_to(j, client) {
                        Ok(()) => return,
                        Err(back) => client = back,
                    }
                }
            }
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// splice: connects to replica `j`, whose slot was taken, and relays
    /// `client` there; a replica that cannot be reached is taken out and
    /// the client given back.
    fn splice_to(&self, j: usize, client: TcpStream) -> Result<(), TcpStream> {
        let replica = &self.replicas[j];
        match TcpStream::connect_timeout(&replica.addr, CONNECT_TIMEOUT) {
            Ok(upstream) => {
                replica.connections.fetch_add(1, Ordering::Relaxed);
                self.relay(j, client, upstream);
                Ok(())
            }
            Err(e) => {
                replica.give_back();
                self.parking.notify();
                replica.eject(&format_args!("connect: {e}"));
                Err(client)
            }
        }
    }

    /// http: a thread serves the connection's requests ([`http`]); beyond
    /// `max_connections` the client gets a 503.
    fn serve_http(self: &Arc<Self>, client: TcpStream) {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.fetch_add(1, Ordering::Relaxed);
            // The accepting thread never waits on a client: a 503 into
            // the fresh socket's buffer, and close.
            let mut out = Vec::with_capacity(128);
            let busy = servers::codec::Response::text(503, "dispatcher busy").closing();
            servers::codec::write_response(&mut out, &busy, false, false);
            let _ = client.set_nonblocking(true);
            let mut client = client;
            let _ = client.write(&out);
            let _ = client.shutdown(Shutdown::Write);
            return;
        }
        let given = match self.proxy.get() {
            Some(handle) => handle.serve(client),
            None => Err(io::Error::other("no proxy thread")),
        };
        if let Err(e) = given {
            tracing::warn!("http: {e}");
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// splice: the link goes to the relay thread ([`relay`]); replica
    /// `i`'s slot was taken.
    fn relay(&self, i: usize, client: TcpStream, upstream: TcpStream) {
        self.open.fetch_add(1, Ordering::Relaxed);
        let link = relay::NewLink {
            client,
            upstream,
            replica: i,
        };
        let given = match self.relay.get() {
            Some(handle) => handle.relay(link),
            None => Err(io::Error::other("no relay thread")),
        };
        if let Err(e) = given {
            tracing::error!("splice: {e}");
            self.closed(i);
        }
    }

    /// splice: a link of replica `i` ended; a parked client may take its
    /// place.
    fn closed(&self, i: usize) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.replicas[i].give_back();
        if self.replicas[i].maxconn.is_some() {
            self.parking.notify();
        }
    }

    /// The count of requests or clients waiting in `queue` (a replica's,
    /// or, past the last replica, the queue for any).
    fn queued_in(&self, queue: usize) -> &AtomicUsize {
        self.replicas.get(queue).map_or(&self.queued, |r| &r.queued)
    }

    /// Checks every replica every `checks.interval` until `shutdown`.
    pub fn check(&self, checks: &Checks, shutdown: &servers::Shutdown) {
        for r in &self.replicas {
            r.actively_checked.store(true, Ordering::Relaxed);
        }
        loop {
            let started = Instant::now();
            for r in &self.replicas {
                r.checked(
                    healthy(r.check_addr(), &checks.path, checks.interval),
                    checks,
                );
            }
            let rest = checks.interval.saturating_sub(started.elapsed());
            if shutdown.sleep(rest).unwrap_or(true) {
                return;
            }
        }
    }

    /// The status now.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        Status {
            policy: self.picker.policy(),
            mode: self.mode,
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            replicas: self
                .replicas
                .iter()
                .map(|r| ReplicaStatus {
                    addr: r.addr.to_string(),
                    up: r.up(now),
                    last_change_s: r
                        .checked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last_change
                        .map(|t| (now - t).as_secs_f64()),
                    open: r.open.load(Ordering::Relaxed),
                    connections: r.connections.load(Ordering::Relaxed),
                    errors: r.errors.load(Ordering::Relaxed),
                    ejections: r.ejections.load(Ordering::Relaxed),
                    retired: r.retired.load(Ordering::Relaxed),
                    sessions_at: self
                        .replicas
                        .get(r.moved_to.load(Ordering::Relaxed))
                        .map(|to| to.addr.to_string()),
                    maxconn: r.maxconn,
                    proxy_connections: r.proxy_connections.load(Ordering::Relaxed),
                    queued: r.queued.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

/// The `sid` session in a `Cookie` header's value.
pub fn session_of(cookie: &str) -> Option<String> {
    cookie.split(';').find_map(|c| {
        c.trim()
            .strip_prefix(servers::protocol::COOKIE)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::to_string)
    })
}

/// The key the keyed policies hash: the session id when there is one,
/// else the client's address (0 for the others).
/// (`peer` is asked only when the address is needed: a system call.)
fn key_of(sid: Option<&str>, peer: impl FnOnce() -> Option<SocketAddr>, policy: Policy) -> u64 {
    match sid {
        _ if !policy.keyed() => 0,
        Some(sid) => policy::key_of(sid.as_bytes()),
        None => peer().map_or(0, |a| key_of_addr(a.ip())),
    }
}

pub fn key_of_addr(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => policy::key_of(&a.octets()),
        IpAddr::V6(a) => policy::key_of(&a.octets()),
    }
}

/// The `sid` cookie of the request waiting on `client`, read without
/// consuming it (`MSG_PEEK`), if it arrives within [`PEEK_TIMEOUT`].
fn peek_session(client: &TcpStream) -> Option<String> {
    let _ = client.set_read_timeout(Some(PEEK_TIMEOUT));
    let mut buf = [0u8; 8192];
    let n = client.peek(&mut buf).ok()?;
    let _ = client.set_read_timeout(None);
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    let head = head.split("\r\n\r\n").next()?;
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("cookie"))
        .find_map(|(_, value)| session_of(value))
}

/// Answers `GET /status` with the dispatcher's status as JSON, and
/// `POST /migrate?from=A&to=B&method=M[&threshold=N&rounds=N&bandwidth=B]` (replicas
/// 1-based) with a migration's report (see [`migrate`]), until `shutdown`.
pub fn serve_status(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    shutdown: &servers::Shutdown,
) -> io::Result<()> {
    servers::net::accept_loop(&listener.into(), shutdown, |arrival| {
        let mut s = arrival.stream;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut request = [0u8; 2048];
        let n = s.read(&mut request).unwrap_or(0);
        let head = String::from_utf8_lossy(&request[..n]);
        let target = head.split_whitespace().take(2).collect::<Vec<_>>();
        if let ["POST", target] = target[..] {
            let query = target.strip_prefix("/migrate?").unwrap_or("").to_string();
            let d = dispatcher.clone();
            // A migration takes a while: the status stays served meanwhile.
            let _ = std::thread::Builder::new()
                .name("migrate".into())
                .spawn(move || answer(s, &migrate_request(&d, &query)));
            return;
        }
        let body = serde_json::to_string_pretty(&dispatcher.status()).unwrap_or_default();
        answer(s, &Response::json(200, body));
    })
}

fn answer(mut s: TcpStream, response: &Response) {
    let mut out = Vec::with_capacity(response.body.len() + 128);
    servers::codec::write_response(&mut out, response, false, false);
    let _ = s.write_all(&out);
    let _ = s.shutdown(Shutdown::Write);
}

/// Runs the migration a `/migrate` query asks for.
fn migrate_request(d: &Arc<Dispatcher>, query: &str) -> Response {
    match migrate_plan(query).and_then(|plan| d.migrate(&plan)) {
        Ok(report) => Response::json(
            200,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        ),
        Err(why) => Response::text(400, why),
    }
}

/// `from=A&to=B&method=M[&threshold=N&rounds=N&bandwidth=BYTES_PER_S]`,
/// replicas 1-based.
pub fn migrate_plan(query: &str) -> Result<migrate::Plan, String> {
    let mut from = None;
    let mut to = None;
    let mut method = None;
    let mut threshold = None;
    let mut rounds = None;
    let mut bandwidth = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{what}={v:?}: a whole number"))
        };
        match k {
            "from" => from = Some(number("from")?),
            "to" => to = Some(number("to")?),
            "method" => method = Some(v.parse::<migrate::Method>()?),
            "threshold" => threshold = Some(number("threshold")?),
            "rounds" => rounds = Some(number("rounds")?),
            "bandwidth" => bandwidth = Some(number("bandwidth")?),
            other => {
                return Err(format!(
                    "{other:?}: a migration takes from, to, method, threshold, rounds and bandwidth"
                ))
            }
        }
    }
    let replica = |n: Option<u64>, what: &str| match n {
        Some(n @ 1..) => Ok(n as usize - 1),
        _ => Err(format!("{what}: a replica's number, from 1")),
    };
    let mut plan = migrate::Plan::new(
        replica(from, "from")?,
        replica(to, "to")?,
        method.ok_or("method: pre-copy, stop-and-copy or post-copy")?,
    );
    if let Some(t) = threshold {
        plan.threshold = t;
    }
    if let Some(r) = rounds {
        plan.max_rounds = u32::try_from(r).unwrap_or(u32::MAX).max(1);
    }
    plan.bandwidth = bandwidth.filter(|&b| b > 0);
    Ok(plan)
}

/// A replica as the command line gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaArg {
    pub addr: SocketAddr,
    /// Its handoff socket.
    pub handoff: Option<PathBuf>,
    /// The route its session ids end in.
    pub route: Option<String>,
    /// Its control address.
    pub control: Option<SocketAddr>,
    /// http: its connection limit.
    pub maxconn: Option<usize>,
}

impl ReplicaArg {
    pub fn replica(self) -> Replica {
        let mut r = Replica::new(self.addr, self.handoff);
        r.route = self.route;
        r.control = self.control;
        r.maxconn = self.maxconn;
        r
    }
}

/// Parses `ADDR[@HANDOFF_PATH][,route=ROUTE][,control=ADDR][,maxconn=N]`.
pub fn parse_replica(text: &str) -> Result<ReplicaArg, String> {
    const FORM: &str = "a replica is ADDR[@HANDOFF_PATH][,route=ROUTE][,control=ADDR][,maxconn=N]";
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or("");
    let (addr, handoff) = match head.split_once('@') {
        Some((a, p)) => (a, Some(PathBuf::from(p))),
        None => (head, None),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not host:port ({FORM})"))?;
    let mut route = None;
    let mut control = None;
    let mut maxconn = None;
    for part in parts {
        match part.split_once('=') {
            Some(("route", r)) if route.is_none() => {
                if !servers::protocol::valid_route(r) {
                    return Err(format!(
                        "route {r:?}: 1 to {} letters, digits, '-' or '_'",
                        servers::protocol::MAX_ROUTE
                    ));
                }
                route = Some(r.to_string());
            }
            Some(("control", c)) if control.is_none() => {
                control = Some(
                    c.parse()
                        .map_err(|_| format!("control {c:?} is not host:port ({FORM})"))?,
                );
            }
            Some(("maxconn", n)) if maxconn.is_none() => {
                maxconn =
                    Some(n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("maxconn {n:?}: a number of connections, 1 or more")
                    })?);
            }
            _ => return Err(format!("{part:?}: {FORM}, each once")),
        }
    }
    Ok(ReplicaArg {
        addr,
        handoff,
        route,
        control,
        maxconn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_modes_parse() {
        let plain = parse_replica("127.0.0.1:9001").unwrap();
        assert_eq!(
            (plain.addr, plain.handoff, plain.route),
            ("127.0.0.1:9001".parse().unwrap(), None, None)
        );
        let r = parse_replica("127.0.0.1:9001@/tmp/r1.sock,route=r1").unwrap();
        assert_eq!(
            (r.addr.port(), r.handoff.unwrap(), r.route.as_deref()),
            (9001, PathBuf::from("/tmp/r1.sock"), Some("r1"))
        );
        let c = parse_replica("127.0.0.1:9001,route=r2,control=127.0.0.1:9101").unwrap();
        assert_eq!(
            (c.route.as_deref(), c.control),
            (Some("r2"), Some("127.0.0.1:9101".parse().unwrap()))
        );
        assert_eq!(plain.maxconn, None);
        let m = parse_replica("127.0.0.1:9001,maxconn=2,route=r3").unwrap();
        assert_eq!((m.maxconn, m.route.as_deref()), (Some(2), Some("r3")));
        assert!(parse_replica("127.0.0.1:9001,maxconn=0").is_err());
        assert!(parse_replica("127.0.0.1:9001,maxconn=two").is_err());
        assert!(parse_replica("nowhere").is_err());
        assert!(parse_replica("127.0.0.1:9001,route=a.b").is_err());
        assert!(parse_replica("127.0.0.1:9001,control=here").is_err());
        assert!(parse_replica("127.0.0.1:9001,route=a,route=b").is_err());
        assert!(parse_replica("127.0.0.1:9001,weight=2").is_err());
        assert!("teleport".parse::<Mode>().is_err());
        assert!(Dispatcher::new(
            Mode::Handoff,
            Policy::RoundRobin,
            vec![Replica::new("127.0.0.1:1".parse().unwrap(), None)],
            8
        )
        .is_err());
    }

    /// A session follows its replica's migrations, and is never sent back
    /// to a source it left (whose copy is stale or dropped), even when its
    /// new home is out: then it is a lost session, placed by the policy.
    #[test]
    fn sessions_follow_migrations_and_never_return_to_the_source() {
        let replicas = (1..=3)
            .map(|n| {
                let mut r = Replica::new(format!("127.0.0.1:{n}").parse().unwrap(), None);
                r.route = Some(format!("r{n}"));
                r
            })
            .collect();
        let d = Dispatcher::new(Mode::Http, Policy::Affinity, replicas, 8).unwrap();
        assert_eq!(d.home("abc.r1"), Some(0));
        assert_eq!(d.home("abc"), None, "no route");
        d.replicas[0].retired.store(true, Ordering::Relaxed);
        assert_eq!(
            d.choose(0, Some("abc.r1")),
            Some(0),
            "retired, not yet moved"
        );
        d.replicas[0].moved_to.store(1, Ordering::Relaxed);
        assert_eq!(d.home("abc.r1"), Some(1));
        assert_eq!(d.choose(0, Some("abc.r1")), Some(1));
        d.replicas[1].eject(&"refused");
        for key in 0..10 {
            assert_eq!(d.choose(key, Some("abc.r1")), Some(2), "never the source");
        }
        d.replicas[1].moved_to.store(2, Ordering::Relaxed);
        assert_eq!(d.home("abc.r1"), Some(2), "moved twice");
        assert_eq!(d.home("xyz.r2"), Some(2));
    }

    /// splice: a replica's connections are taken up to its `maxconn` and
    /// given back as links end; without a limit, always.
    #[test]
    fn slots_are_bounded_by_maxconn() {
        let mut bounded = Replica::new("127.0.0.1:1".parse().unwrap(), None);
        bounded.maxconn = Some(2);
        assert!(bounded.take_slot() && bounded.take_slot());
        assert!(!bounded.take_slot(), "full");
        bounded.give_back();
        assert!(bounded.take_slot());
        assert_eq!(bounded.open.load(Ordering::Relaxed), 2);
        let free = Replica::new("127.0.0.1:2".parse().unwrap(), None);
        assert!((0..100).all(|_| free.take_slot()));
    }

    /// fall failures take a replica out, rise successes bring it back;
    /// results that agree with its state reset the count.
    #[test]
    fn checks_need_fall_failures_and_rise_successes_in_a_row() {
        let r = Replica::new("127.0.0.1:1".parse().unwrap(), None);
        let checks = Checks {
            interval: Duration::from_millis(100),
            rise: 2,
            fall: 3,
            path: "/health".into(),
        };
        let now = Instant::now();
        for ok in [false, false, true, false, false] {
            r.checked(ok, &checks);
        }
        assert!(r.up(now), "never three failures in a row");
        r.checked(false, &checks);
        assert!(!r.up(now), "three in a row");
        r.checked(true, &checks);
        assert!(!r.up(now));
        r.checked(true, &checks);
        assert!(r.up(now), "two successes bring it back");
        assert_eq!(r.ejections.load(Ordering::Relaxed), 1);
    }

    /// A failure takes a replica out at once; with active checks running,
    /// `rise` passing checks bring it back (no fixed wait); without, it is
    /// tried again after EJECT.
    #[test]
    fn a_failure_ejects_until_checks_pass_or_for_a_while() {
        let checks = Checks {
            interval: Duration::from_millis(100),
            rise: 2,
            fall: 3,
            path: "/health".into(),
        };
        let checked = Replica::new("127.0.0.1:1".parse().unwrap(), None);
        checked.actively_checked.store(true, Ordering::Relaxed);
        checked.eject(&"refused");
        checked.eject(&"refused again");
        let now = Instant::now();
        assert!(!checked.up(now));
        checked.checked(true, &checks);
        assert!(!checked.up(now), "one pass is not rise");
        checked.checked(true, &checks);
        assert!(checked.up(now), "rise passes bring it back at once");
        assert_eq!(checked.ejections.load(Ordering::Relaxed), 1);

        let timed = Replica::new("127.0.0.1:1".parse().unwrap(), None);
        timed.eject(&"refused");
        assert!(!timed.up(Instant::now()));
        assert!(timed.up(Instant::now() + EJECT + Duration::from_millis(1)));
    }

    /// splice moves every byte both ways, and a half-close passes through.
    #[test]
    fn splice_relays_bytes_exactly() {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let baddr = backend.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = backend.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            s.write_all(&all).unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let faddr = front.local_addr().unwrap();
        let d = Arc::new(
            Dispatcher::new(
                Mode::Splice,
                Policy::RoundRobin,
                vec![Replica::new(baddr, None)],
                8,
            )
            .unwrap(),
        );
        let stop = servers::Shutdown::new().unwrap();
        let runner = {
            let (d, stop) = (d.clone(), stop.clone());
            std::thread::spawn(move || d.run(front, &stop))
        };
        let mut c = TcpStream::connect(faddr).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        c.write_all(&data).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert!(back == data, "byte-exact both ways");
        echo.join().unwrap();
        stop.trigger();
        runner.join().unwrap().unwrap();
        assert_eq!(d.status().replicas[0].connections, 1);
    }
}
