//! The `http` mode's engine: one thread, one mio loop, every client
//! connection and every connection to a replica.
//!
//! A client connection reads until its buffer holds a whole request (the
//! project's codec: bad input gets its 4xx, then the connection closes),
//! then waits while that request goes to the replica the policy picks, over
//! an idle pooled connection or a new one, and the answer — its head parsed
//! with `httparse`, its body framed by `Content-Length` — flows back as it
//! arrives; then the next request (pipelined ones wait their turn in the
//! buffer). The dispatcher answers itself when no replica can: 503 when
//! none is up, 502 when one fails before the client got any byte of the
//! answer, 504 when one is silent for the answer timeout; a failure after
//! part of an answer went out closes the client's connection. A replica
//! that refuses the connection is taken out and the request tried on
//! another; a pooled connection the replica closed while it idled gets the
//! request once more on a fresh one; a request already sent is never sent
//! to another replica (it may have had effects). A replica with a
//! connection limit (`maxconn`) at its limit, with no idle pooled
//! connection, makes the request wait in the proxy ([`crate::queue`]): a
//! request the policy may send anywhere goes to the replica with room and
//! the fewest requests, or, every replica full, waits for whichever frees
//! a connection first; a request bound to its replica (by its session or
//! its client's address) waits for that replica. One that waits as long as
//! the answer timeout is answered 503.
//!
//! Migration ([`crate::migrate`]) pauses a replica's sessions here: while
//! its route is paused, requests for it are held (their clients wait) and
//! the pause is reported drained once no request for the route is with any
//! replica; released, the held requests are placed again — after a switch,
//! on the sessions' new home. A pause not released within [`PAUSE_LIMIT`]
//! is released by the proxy itself, so a lost coordinator cannot hold
//! clients for ever.
//!
//! Readiness is edge-triggered: every handler reads or writes until the
//! kernel says "would block". A connection watches writability only while
//! it has bytes the kernel did not take; an answer is read from the replica
//! only while the client's pending output is under `HIGH_WATER` (256 KiB).

use crate::queue::{self, Queues};
use crate::{Dispatcher, CONNECT_TIMEOUT};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use servers::codec::{self, Limits, Response};
use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX - 1);
/// Idle pooled connections kept per replica.
const POOL: usize = 64;
/// A client's pending output above which its replica is not read.
const HIGH_WATER: usize = 256 * 1024;
/// How long a closing client may keep sending before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(100);
/// A pause lasting this long is released without being asked.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(10);

/// What the migration coordinator asks of the proxy.
pub enum Command {
    /// Hold the requests for the sessions of `home` (its route); say on
    /// `drained` once none of them is with a replica.
    Pause { home: usize, drained: Sender<()> },
    /// Place the held requests of `home` again.
    Release { home: usize },
}

/// Where the accepting thread sends client connections.
pub struct Handle {
    tx: Sender<std::net::TcpStream>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
}

impl Handle {
    pub fn serve(&self, client: std::net::TcpStream) -> io::Result<()> {
        self.tx
            .send(client)
            .map_err(|_| io::Error::other("the proxy thread is gone"))?;
        self.waker.wake()
    }

    /// Passes `command` to the proxy thread.
    pub fn command(&self, command: Command) -> io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| io::Error::other("the proxy thread is gone"))?;
        self.waker.wake()
    }
}

/// Starts the proxy thread for `d`.
pub fn start(d: Arc<Dispatcher>) -> io::Result<Handle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std::sync::mpsc::channel();
    let (commands, crx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("proxy".into())
        .spawn(move || Proxy::new(d, poll).run(&rx, &crx))?;
    Ok(Handle {
        tx,
        commands,
        waker,
    })
}

enum Phase {
    /// Reading a request.
    Reading,
    /// Its request is with the replica connection in this slot.
    Waiting(usize),
    /// Its request is held: its sessions are paused for a migration.
    Held,
    /// Its request waits in this queue: a replica's (at its limit), or,
    /// numbered after the replicas, the one for any replica.
    Queued(usize),
    /// Its last bytes are going out; then it is closed (lingering until
    /// the client closes too, or `LINGER` after `since`).
    Closing { since: Option<Instant> },
}

struct Client {
    sock: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    phase: Phase,
    /// Close once the current answer is out (the request said so).
    last: bool,
    watching_writes: bool,
    active: Instant,
}

struct Upstream {
    sock: TcpStream,
    replica: usize,
    /// The client slot whose request it carries (`None`: idle in the pool).
    client: Option<usize>,
    request: Vec<u8>,
    sent: usize,
    connected: bool,
    /// Taken from the pool (it may have been closed while it idled).
    pooled: bool,
    inbuf: Vec<u8>,
    /// Parsed head: the answer's whole length and whether the replica
    /// closes after it.
    framing: Option<(usize, bool)>,
    /// Bytes of the answer given to the client.
    forwarded: usize,
    deadline: Instant,
    /// A connect not finished by then has failed.
    connect_by: Instant,
    watching_writes: bool,
    /// How the request is routed, kept for trying another replica.
    routing: Routing,
}

/// What the policy needs to place a request again after a refusal.
#[derive(Default)]
struct Routing {
    key: u64,
    sid: Option<String>,
    /// How many more replicas it may go to.
    retries: usize,
    /// The replica whose route the session names (see `Dispatcher::home`).
    home: Option<usize>,
}

enum Conn {
    Client(Client),
    Upstream(Upstream),
}

/// How a request's exchange with a replica ended badly.
enum Fault {
    /// Nothing sent: another replica may take it.
    Refused(io::Error),
    /// A pooled connection closed before any answer: once more, fresh.
    Stale,
    /// Sent, then it failed: 502 if the client has nothing yet, else cut.
    Broken(String),
    /// Silent past the deadline: 504 if the client has nothing yet.
    Silent,
}

struct Proxy {
    d: Arc<Dispatcher>,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Idle connection slots per replica.
    idle: Vec<Vec<usize>>,
    limits: Limits,
    /// The buffer every read goes through (allocated and zeroed once).
    chunk: Box<[u8]>,
    /// Requests with a replica now that may touch replica h's sessions:
    /// those for its sessions, and those without a session at h (each may
    /// start one there). A pause of h drains when this is 0.
    inflight: Vec<usize>,
    /// Paused routes (by home replica): since when, and who waits for the
    /// drain (taken when told).
    paused: Vec<Option<(Instant, Option<Sender<()>>)>>,
    /// Held requests: the client, the request, its routing.
    held: Vec<(usize, Vec<u8>, Routing)>,
    /// Requests waiting for a connection: one queue per replica at its
    /// limit, and last ([`Proxy::any`]) the queue for whichever has room first.
    queues: Queues<(Vec<u8>, Routing)>,
}

impl Proxy {
    fn new(d: Arc<Dispatcher>, poll: Poll) -> Proxy {
        let n = d.replicas.len();
        Proxy {
            d,
            poll,
            conns: Vec::new(),
            free: Vec::new(),
            idle: vec![Vec::new(); n],
            limits: Limits::default(),
            chunk: vec![0u8; 16 * 1024].into_boxed_slice(),
            inflight: vec![0; n],
            paused: (0..n).map(|_| None).collect(),
            held: Vec::new(),
            queues: Queues::new(n + 1),
        }
    }

    fn run(mut self, rx: &Receiver<std::net::TcpStream>, commands: &Receiver<Command>) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("proxy: {e}");
                    return;
                }
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    loop {
                        match rx.try_recv() {
                            Ok(client) => self.add_client(client),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                        }
                    }
                    while let Ok(command) = commands.try_recv() {
                        self.command(command);
                    }
                    continue;
                }
                let slot = event.token().0;
                match self.conns.get(slot) {
                    Some(Some(Conn::Client(_))) => {
                        if event.is_writable() {
                            self.flush(slot);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.client_readable(slot);
                        }
                    }
                    Some(Some(Conn::Upstream(_))) => self.upstream_ready(slot),
                    _ => {}
                }
            }
            if Instant::now() >= next_tick {
                self.check_deadlines();
                self.check_pauses();
                next_tick = Instant::now() + TICK;
            }
            self.serve_queues();
            self.check_drains();
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Pause { home, drained } => {
                if let Some(p) = self.paused.get_mut(home) {
                    *p = Some((Instant::now(), Some(drained)));
                }
                // Requests for these sessions waiting for a connection are
                // held too: released, they are placed again, on the
                // sessions' new home after a switch.
                let waiting = self.queues.take_if(|(_, r)| r.home == Some(home));
                for (q, w) in waiting {
                    self.dequeued(q);
                    if let Some(c) = client_at(&mut self.conns, w.client) {
                        c.phase = Phase::Held;
                        let (raw, routing) = w.request;
                        self.held.push((w.client, raw, routing));
                    }
                }
            }
            Command::Release { home } => self.release(home),
        }
    }

    /// Tells each waiting coordinator whose route has nothing in flight.
    fn check_drains(&mut self) {
        for (home, p) in self.paused.iter_mut().enumerate() {
            if let Some((_, waiting)) = p {
                if self.inflight[home] == 0 {
                    if let Some(tx) = waiting.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }

    /// Releases pauses held past [`PAUSE_LIMIT`].
    fn check_pauses(&mut self) {
        let now = Instant::now();
        let over: Vec<usize> = (0..self.paused.len())
            .filter(|&h| {
                self.paused[h]
                    .as_ref()
                    .is_some_and(|(since, _)| now.duration_since(*since) >= PAUSE_LIMIT)
            })
            .collect();
        for home in over {
            tracing::warn!(
                "the pause of replica {}'s sessions lasted {PAUSE_LIMIT:?}: released",
                self.d.replicas[home].addr
            );
            self.release(home);
        }
    }

    /// Ends `home`'s pause: its held requests are placed again.
    fn release(&mut self, home: usize) {
        if let Some(p) = self.paused.get_mut(home) {
            *p = None;
        }
        let (go, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(_, _, r)| r.home == Some(home));
        self.held = stay;
        for (slot, raw, routing) in go {
            if let Some(c) = client_at(&mut self.conns, slot) {
                c.phase = Phase::Reading;
                self.send(slot, raw, routing);
            }
        }
    }

    fn insert(&mut self, conn: Conn) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[slot] = Some(conn);
        slot
    }

    fn add_client(&mut self, client: std::net::TcpStream) {
        let _ = client.set_nodelay(true);
        if client.set_nonblocking(true).is_err() {
            self.d.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut sock = TcpStream::from_std(client);
        let slot = self.free.last().copied().unwrap_or(self.conns.len());
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(slot), Interest::READABLE)
        {
            tracing::warn!("proxy: {e}");
            self.d.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let at = self.insert(Conn::Client(Client {
            sock,
            inbuf: Vec::new(),
            out: Vec::new(),
            phase: Phase::Reading,
            last: false,
            watching_writes: false,
            active: Instant::now(),
        }));
        debug_assert_eq!(at, slot);
        self.client_readable(slot);
    }

    /// Reads what the client sent; serves the next request when whole.
    fn client_readable(&mut self, slot: usize) {
        let chunk = &mut self.chunk;
        let mut ended = false;
        {
            let Some(c) = client_at(&mut self.conns, slot) else {
                return;
            };
            loop {
                match c.sock.read(chunk) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => {
                        // A closing client's bytes are read and dropped.
                        if !matches!(c.phase, Phase::Closing { .. }) {
                            c.inbuf.extend_from_slice(&chunk[..n]);
                        }
                        c.active = Instant::now();
                        if n < chunk.len() {
                            // Drained: more data raises a new edge, so no
                            // read that would only say "would block".
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        ended = true;
                        break;
                    }
                }
            }
        }
        if ended {
            return self.close_client(slot);
        }
        self.next_request(slot);
    }

    /// If the client is between requests and one is whole, sends it on.
    fn next_request(&mut self, slot: usize) {
        let limits = self.limits;
        let Some(c) = client_at(&mut self.conns, slot) else {
            return;
        };
        if !matches!(c.phase, Phase::Reading) || c.last {
            return;
        }
        let (request, used) = match codec::parse_request(&c.inbuf, &limits) {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => return self.answer_and_close(slot, &e.response()),
        };
        if request.path().starts_with("/migrate/") {
            // The replicas' migration endpoints are the coordinator's.
            return self.answer_and_close(
                slot,
                &Response::text(
                    403,
                    "replica administration is not served through the dispatcher",
                ),
            );
        }
        let raw: Vec<u8> = c.inbuf.drain(..used).collect();
        c.last = !request.keep_alive;
        let sid = request.header("cookie").and_then(crate::session_of);
        let key = crate::key_of(
            sid.as_deref(),
            || c.sock.peer_addr().ok(),
            self.d.picker.policy(),
        );
        let retries = self.d.replicas.len();
        let home = sid.as_deref().and_then(|s| self.d.home(s));
        self.send(
            slot,
            raw,
            Routing {
                key,
                sid,
                retries,
                home,
            },
        );
    }

    /// Sends `raw` for client `slot` to the replica the policy picks, or
    /// holds it while its sessions are paused.
    fn send(&mut self, slot: usize, raw: Vec<u8>, routing: Routing) {
        if let Some(home) = routing.home.filter(|&h| self.paused[h].is_some()) {
            let _ = home;
            if let Some(c) = client_at(&mut self.conns, slot) {
                c.phase = Phase::Held;
            }
            self.held.push((slot, raw, routing));
            return;
        }
        let Some(i) = (routing.retries > 0)
            .then(|| self.d.choose(routing.key, routing.sid.as_deref()))
            .flatten()
        else {
            self.d.refused.fetch_add(1, Ordering::Relaxed);
            return self.answer_and_close(slot, &Response::text(503, "no replica is up"));
        };
        self.place(slot, raw, routing, i);
    }

    /// Sends `raw` for client `slot` to replica `i`: on an idle pooled
    /// connection, on a new one, or, at `i`'s limit, to the replica with
    /// room if the request may go anywhere, else after those waiting.
    fn place(&mut self, slot: usize, raw: Vec<u8>, mut routing: Routing, i: usize) {
        if !self.has_room(i) {
            let queue = if self.d.movable(routing.sid.as_deref()) {
                if let Some(j) = self.roomiest() {
                    return self.place(slot, raw, routing, j);
                }
                self.any()
            } else {
                i
            };
            return self.enqueue(queue, slot, raw, routing);
        }
        let deadline = Instant::now() + self.d.answer_timeout;
        let up = match self.idle[i].pop() {
            Some(u) => u,
            None => match self.connect(i, deadline) {
                Ok(u) => u,
                Err(e) => {
                    self.d.replicas[i].eject(&format_args!("connect: {e}"));
                    routing.retries -= 1;
                    return self.send(slot, raw, routing);
                }
            },
        };
        routing.retries -= 1;
        self.started(i, routing.home);
        if let Some(u) = upstream_at(&mut self.conns, up) {
            u.client = Some(slot);
            u.request = raw;
            u.sent = 0;
            u.inbuf.clear();
            u.framing = None;
            u.forwarded = 0;
            u.deadline = deadline;
            u.routing = routing;
        }
        if let Some(c) = client_at(&mut self.conns, slot) {
            c.phase = Phase::Waiting(up);
        }
        self.upstream_ready(up);
    }

    /// Forgets pooled connections of replica `i` that are gone.
    fn prune_idle(&mut self, i: usize) {
        let conns = &mut self.conns;
        self.idle[i].retain(|&u| upstream_at(conns, u).is_some());
    }

    /// Whether replica `i` can take a request now: an idle pooled
    /// connection, or fewer connections than its limit.
    fn has_room(&mut self, i: usize) -> bool {
        self.prune_idle(i);
        let r = &self.d.replicas[i];
        let open = r.proxy_connections.load(Ordering::Relaxed);
        !queue::must_wait(self.idle[i].len(), open, r.maxconn)
    }

    /// Of the replicas taking requests that have room, the one with the
    /// fewest requests now.
    fn roomiest(&mut self) -> Option<usize> {
        let now = Instant::now();
        let d = self.d.clone();
        (0..d.replicas.len())
            .filter(|&j| d.replicas[j].up(now) && !d.replicas[j].retired.load(Ordering::Relaxed))
            .filter(|&j| self.has_room(j))
            .min_by_key(|&j| d.replicas[j].open.load(Ordering::Relaxed))
    }

    /// The queue of requests that may go to any replica.
    fn any(&self) -> usize {
        self.d.replicas.len()
    }

    fn enqueue(&mut self, queue: usize, slot: usize, raw: Vec<u8>, routing: Routing) {
        self.d.queued_in(queue).fetch_add(1, Ordering::Relaxed);
        if let Some(c) = client_at(&mut self.conns, slot) {
            c.phase = Phase::Queued(queue);
        }
        self.queues
            .push(queue, slot, (raw, routing), Instant::now());
    }

    /// A request left `queue`: the status's counts follow.
    fn dequeued(&self, queue: usize) {
        self.d.queued_in(queue).fetch_sub(1, Ordering::Relaxed);
    }

    /// Places waiting requests on replicas that can take them now: a
    /// connection came free or closed, or the replica went out (then its
    /// waiting requests are placed by the policy again). A request whose
    /// sessions were paused meanwhile is held instead.
    fn serve_queues(&mut self) {
        let now = Instant::now();
        let waiting: Vec<usize> = self.queues.waiting().collect();
        for q in waiting {
            // Bounded: a request placed again may come back to this queue.
            for _ in 0..self.queues.len(q) {
                // Where the head of the queue goes (`None`: by the policy).
                let target = if q == self.any() {
                    match self.roomiest() {
                        Some(j) => Some(j),
                        None => break,
                    }
                } else if !self.d.replicas[q].up(now) {
                    None
                } else if self.has_room(q) {
                    Some(q)
                } else {
                    break;
                };
                let Some(w) = self.queues.pop(q) else { break };
                self.dequeued(q);
                let (raw, routing) = w.request;
                let Some(c) = client_at(&mut self.conns, w.client) else {
                    continue;
                };
                c.phase = Phase::Reading;
                match target {
                    Some(j) if !routing.home.is_some_and(|h| self.paused[h].is_some()) => {
                        self.place(w.client, raw, routing, j)
                    }
                    _ => self.send(w.client, raw, routing),
                }
            }
        }
    }

    /// A new, not yet connected connection to replica `i`.
    fn connect(&mut self, i: usize, deadline: Instant) -> io::Result<usize> {
        let mut sock = TcpStream::connect(self.d.replicas[i].addr)?;
        let _ = sock.set_nodelay(true);
        let slot = self.free.last().copied().unwrap_or(self.conns.len());
        self.poll.registry().register(
            &mut sock,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let at = self.insert(Conn::Upstream(Upstream {
            sock,
            replica: i,
            client: None,
            request: Vec::new(),
            sent: 0,
            connected: false,
            pooled: false,
            inbuf: Vec::new(),
            framing: None,
            forwarded: 0,
            deadline,
            connect_by: Instant::now() + CONNECT_TIMEOUT,
            watching_writes: true,
            routing: Routing::default(),
        }));
        debug_assert_eq!(at, slot);
        self.d.replicas[i]
            .proxy_connections
            .fetch_add(1, Ordering::Relaxed);
        Ok(slot)
    }

    /// Drives a replica connection: finishes connecting, sends the
    /// request, reads the answer and passes it on.
    fn upstream_ready(&mut self, up: usize) {
        match self.exchange(up) {
            Ok(()) => {}
            Err(fault) => self.fault(up, fault),
        }
    }

    fn exchange(&mut self, up: usize) -> Result<(), Fault> {
        let Some(u) = upstream_at(&mut self.conns, up) else {
            return Ok(());
        };
        if !u.connected {
            match u.sock.take_error() {
                Ok(Some(e)) | Err(e) => return Err(Fault::Refused(e)),
                Ok(None) => {}
            }
            match u.sock.peer_addr() {
                Ok(_) => u.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(Fault::Refused(e)),
            }
        }
        let Some(client) = u.client else {
            // Idle in the pool: anything readable is the replica closing.
            let mut probe = [0u8; 1];
            return match u.sock.read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                _ => Err(Fault::Stale),
            };
        };
        while u.sent < u.request.len() {
            match u.sock.write(&u.request[u.sent..]) {
                Ok(n) => u.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if u.pooled && u.inbuf.is_empty() => {
                    let _ = e;
                    return Err(Fault::Stale);
                }
                Err(e) => return Err(Fault::Broken(e.to_string())),
            }
        }
        let want_writes = u.sent < u.request.len();
        if want_writes != u.watching_writes {
            let interest = if want_writes {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            u.watching_writes = want_writes;
            let _ = self
                .poll
                .registry()
                .reregister(&mut u.sock, Token(up), interest);
        }
        self.read_answer(up, client)
    }

    /// Reads the replica's answer while the client can take it.
    fn read_answer(&mut self, up: usize, client: usize) -> Result<(), Fault> {
        loop {
            let pending = client_at(&mut self.conns, client).map_or(0, |c| c.out.len());
            if pending >= HIGH_WATER {
                return Ok(()); // resumed by `flush`
            }
            let Some(u) = upstream_at(&mut self.conns, up) else {
                return Ok(());
            };
            let chunk = &mut self.chunk;
            let n = match u.sock.read(chunk) {
                Ok(0) if u.inbuf.is_empty() && u.forwarded == 0 && u.pooled => {
                    return Err(Fault::Stale)
                }
                Ok(0) => {
                    return Err(Fault::Broken(
                        "closed before its answer was complete".into(),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if u.pooled
                        && u.inbuf.is_empty()
                        && u.forwarded == 0
                        && e.kind() == io::ErrorKind::ConnectionReset =>
                {
                    return Err(Fault::Stale)
                }
                Err(e) => return Err(Fault::Broken(e.to_string())),
            };
            u.inbuf.extend_from_slice(&chunk[..n]);
            // A short read drained the socket (edge-triggered: more data
            // raises a new edge).
            let drained = n < chunk.len();
            if u.framing.is_none() {
                u.framing = match frame(&u.inbuf)? {
                    Some(f) => Some(f),
                    None if drained => return Ok(()),
                    None => continue,
                };
                // Counted before the client can see the answer.
                self.d.replicas[u.replica]
                    .connections
                    .fetch_add(1, Ordering::Relaxed);
            }
            let (total, _) = u.framing.expect("set above");
            let take = u.inbuf.len().min(total - u.forwarded);
            let bytes: Vec<u8> = u.inbuf.drain(..take).collect();
            u.forwarded += take;
            let done = u.forwarded == total;
            if let Some(c) = client_at(&mut self.conns, client) {
                c.out.extend_from_slice(&bytes);
            }
            self.flush(client);
            if done {
                self.answered(up, client);
                return Ok(());
            }
            if drained {
                return Ok(());
            }
        }
    }

    /// The answer is out: the replica connection goes back to the pool (or
    /// is closed), the client reads its next request.
    fn answered(&mut self, up: usize, client: usize) {
        let Some(u) = upstream_at(&mut self.conns, up) else {
            return;
        };
        let replica = u.replica;
        let reusable = u.framing.is_some_and(|(_, close)| !close) && u.inbuf.is_empty();
        u.client = None;
        u.pooled = true;
        u.request = Vec::new();
        let home = std::mem::take(&mut u.routing).home;
        self.ended(replica, home);
        if reusable && self.idle[replica].len() < POOL {
            self.idle[replica].push(up);
        } else {
            self.drop_conn(up);
        }
        let Some(c) = client_at(&mut self.conns, client) else {
            return;
        };
        c.phase = Phase::Reading;
        c.active = Instant::now();
        if c.last {
            return self.begin_closing(client);
        }
        self.next_request(client);
    }

    /// What to do when a replica connection fails.
    fn fault(&mut self, up: usize, fault: Fault) {
        let Some(u) = upstream_at(&mut self.conns, up) else {
            return;
        };
        let (replica, client, request, routing, forwarded) = (
            u.replica,
            u.client,
            std::mem::take(&mut u.request),
            std::mem::take(&mut u.routing),
            u.forwarded,
        );
        self.drop_conn(up);
        let Some(client) = client else {
            return; // an idle pooled connection the replica closed
        };
        let d = self.d.clone();
        let r = &d.replicas[replica];
        self.ended(replica, routing.home);
        match fault {
            Fault::Stale => {
                // Once more on a fresh connection to the same replica.
                let deadline = Instant::now() + self.d.answer_timeout;
                match self.connect(replica, deadline) {
                    Ok(fresh) => {
                        self.started(replica, routing.home);
                        if let Some(u) = upstream_at(&mut self.conns, fresh) {
                            u.client = Some(client);
                            u.request = request;
                            u.routing = routing;
                        }
                        if let Some(c) = client_at(&mut self.conns, client) {
                            c.phase = Phase::Waiting(fresh);
                        }
                        self.upstream_ready(fresh);
                    }
                    Err(e) => {
                        r.eject(&format_args!("connect: {e}"));
                        self.send(client, request, routing);
                    }
                }
            }
            Fault::Refused(e) => {
                r.eject(&format_args!("connect: {e}"));
                self.send(client, request, routing);
            }
            Fault::Broken(_) | Fault::Silent if forwarded > 0 => {
                r.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "replica {}: failed in the middle of an answer; the client's connection is closed",
                    r.addr
                );
                self.close_client(client);
            }
            Fault::Broken(why) => {
                r.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("replica {}: {why}; answered 502", r.addr);
                self.answer_and_close(
                    client,
                    &Response::text(502, "bad gateway: the replica failed"),
                );
            }
            Fault::Silent => {
                r.errors.fetch_add(1, Ordering::Relaxed);
                self.answer_and_close(
                    client,
                    &Response::text(504, "gateway timeout: the replica did not answer"),
                );
            }
        }
    }

    /// Writes what the client has pending; resumes its replica's answer
    /// when below the high-water mark; closes a closing client when done.
    fn flush(&mut self, slot: usize) {
        let Some(c) = client_at(&mut self.conns, slot) else {
            return;
        };
        let mut written = 0;
        let mut failed = false;
        while written < c.out.len() {
            match c.sock.write(&c.out[written..]) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        c.out.drain(..written);
        if failed {
            return self.close_client(slot);
        }
        let want = !c.out.is_empty();
        if want != c.watching_writes {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            c.watching_writes = want;
            let _ = self
                .poll
                .registry()
                .reregister(&mut c.sock, Token(slot), interest);
        }
        match c.phase {
            Phase::Closing { since: None } if c.out.is_empty() => {
                let _ = c.sock.shutdown(std::net::Shutdown::Write);
                c.phase = Phase::Closing {
                    since: Some(Instant::now()),
                };
            }
            Phase::Waiting(up) if c.out.len() < HIGH_WATER => {
                if let Err(fault) = self.read_answer(up, slot) {
                    self.fault(up, fault);
                }
            }
            _ => {}
        }
    }

    /// The dispatcher's own answer, then a lingering close.
    fn answer_and_close(&mut self, slot: usize, response: &Response) {
        let Some(c) = client_at(&mut self.conns, slot) else {
            return;
        };
        codec::write_response(&mut c.out, &response.clone().closing(), false, false);
        self.begin_closing(slot);
    }

    fn begin_closing(&mut self, slot: usize) {
        let Some(c) = client_at(&mut self.conns, slot) else {
            return;
        };
        c.phase = Phase::Closing { since: None };
        c.inbuf.clear();
        self.flush(slot);
    }

    fn close_client(&mut self, slot: usize) {
        let Some(Some(Conn::Client(c))) = self.conns.get(slot) else {
            return;
        };
        match c.phase {
            Phase::Waiting(up) => {
                // Its answer would go to nobody.
                if let Some(u) = upstream_at(&mut self.conns, up) {
                    let (replica, home) = (u.replica, u.routing.home);
                    self.ended(replica, home);
                }
                self.drop_conn(up);
            }
            Phase::Held => self.held.retain(|(s, _, _)| *s != slot),
            Phase::Queued(q) if self.queues.remove(q, slot).is_some() => self.dequeued(q),
            _ => {}
        }
        self.drop_conn(slot);
        self.d.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request for a session of `home` (`None`: no session yet) went to
    /// replica `i`.
    fn started(&mut self, i: usize, home: Option<usize>) {
        self.d.replicas[i].open.fetch_add(1, Ordering::Relaxed);
        self.inflight[home.unwrap_or(i)] += 1;
    }

    /// ... and came back (or failed).
    fn ended(&mut self, i: usize, home: Option<usize>) {
        self.d.replicas[i].open.fetch_sub(1, Ordering::Relaxed);
        self.inflight[home.unwrap_or(i)] -= 1;
    }

    fn drop_conn(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            let mut sock = match conn {
                Conn::Client(c) => c.sock,
                Conn::Upstream(u) => {
                    self.d.replicas[u.replica]
                        .proxy_connections
                        .fetch_sub(1, Ordering::Relaxed);
                    u.sock
                }
            };
            let _ = self.poll.registry().deregister(&mut sock);
            self.free.push(slot);
        }
    }

    /// Answers that did not come in time, idle clients, lingering closes,
    /// connects that did not finish.
    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let mut silent = Vec::new();
        let mut gone = Vec::new();
        for (slot, conn) in self.conns.iter().enumerate() {
            match conn {
                Some(Conn::Upstream(u)) if u.client.is_some() => {
                    let connect_late = !u.connected && now >= u.connect_by;
                    if now >= u.deadline || connect_late {
                        silent.push((slot, !u.connected));
                    }
                }
                Some(Conn::Client(c)) => match c.phase {
                    Phase::Reading if now.duration_since(c.active) >= crate::http::CLIENT_IDLE => {
                        gone.push(slot)
                    }
                    Phase::Closing { since: Some(t) } if now.duration_since(t) >= LINGER => {
                        gone.push(slot)
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        for (up, connecting) in silent {
            let fault = if connecting {
                Fault::Refused(io::ErrorKind::TimedOut.into())
            } else {
                Fault::Silent
            };
            self.fault(up, fault);
        }
        for slot in gone {
            self.close_client(slot);
        }
        for (q, w) in self.queues.expired(now, self.d.answer_timeout) {
            self.dequeued(q);
            self.d.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = client_at(&mut self.conns, w.client) {
                c.phase = Phase::Reading;
            }
            self.answer_and_close(
                w.client,
                &Response::text(503, "every connection to the replicas stayed busy"),
            );
        }
    }
}

fn client_at(conns: &mut [Option<Conn>], slot: usize) -> Option<&mut Client> {
    match conns.get_mut(slot) {
        Some(Some(Conn::Client(c))) => Some(c),
        _ => None,
    }
}

fn upstream_at(conns: &mut [Option<Conn>], slot: usize) -> Option<&mut Upstream> {
    match conns.get_mut(slot) {
        Some(Some(Conn::Upstream(u))) => Some(u),
        _ => None,
    }
}

/// The answer's whole length and whether the replica closes after it, once
/// its head is complete; `Err` for an answer the proxy cannot frame.
fn frame(head: &[u8]) -> Result<Option<(usize, bool)>, Fault> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(len)) => {
            let header = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
            };
            if header("transfer-encoding").is_some() {
                return Err(Fault::Broken("a chunked answer".into()));
            }
            let body = header("content-length")
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            Ok(Some((len + body, close)))
        }
        Ok(httparse::Status::Partial) if head.len() < 64 * 1024 => Ok(None),
        _ => Err(Fault::Broken("a malformed answer".into())),
    }
}
