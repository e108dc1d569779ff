//! The readiness loop shared by the event-driven architectures
//! (`event-loop`, `reactor-per-core`, `amped`).
//!
//! One [`Reactor`] is one thread's mio loop: its sources of connections, the
//! shutdown fd, a waker, and every connection it accepted, each a
//! [`Conn`](crate::conn::Conn) (the I/O-free protocol state machine) beside
//! its socket. The loop never blocks except in `poll`, whose timeout is the
//! next deadline (`timers.rs`). A plan runs as everywhere else
//! ([`Plan::advance`]: CPU work inline, the loop busy as any server would
//! be); what it waits for, the loop waits for its own way:
//!
//! - a wait arms a timer and parks the connection until it fires; requests
//!   pipelined behind it stay buffered, so answers keep their order. With
//!   `--blocking-io` it is a `thread::sleep` instead, stalling every
//!   connection of the loop: the classic pitfall, kept to be measured.
//! - a file read runs inline: this is the step that blocks on the disk, the
//!   one AMPED takes off the loop.
//!
//! An architecture may [`offload`](Reactor::offload_to) what waits: the loop
//! hands each as a [`Job`] to an [`Offload`] and parks the connection;
//! whoever runs the job sends a [`Done`] back through a [`Poster`], which
//! wakes the loop with a mio `Waker` ([`offload`]).
//!
//! Fairness: one connection gets at most [`TURN_REQUESTS`] requests or
//! [`TURN_TIME`] of the loop per turn; with more pipelined requests
//! buffered it goes to the back of a queue and the loop polls (without
//! waiting) and serves the others first, as production event loops bound
//! the work done per event. What remains: a single request's CPU work still
//! holds the whole loop for as long as it runs.
//!
//! The heap's earliest deadline is armed on a `timerfd` (nanoseconds), not
//! passed as `poll`'s timeout: epoll rounds that up to whole milliseconds,
//! which made every 10 ms wait fire 0.5–1 ms late under load.
//!
//! The same timer heap holds idle deadlines (no complete request for
//! `--idle-timeout`: closed, or answered 408 if half a request arrived),
//! stalled writers (no write progress for the idle timeout: closed) and
//! lingering closes. Shutdown stops accepting, closes idle connections,
//! lets plans in flight finish and flush, then returns.

pub mod offload;
mod timers;

use crate::config::Options;
use crate::conn::{interrupted, would_block, Conn, Next, READ_CHUNK};
use crate::handler::{Await, Handler, Plan};
use crate::incoming::{Accept, Arrival, Incoming};
use crate::linger::{self, LINGER};
use crate::net::ACCEPT_BACKOFF;
use crate::shutdown::Shutdown;
use crate::stats::ConnectionGuard;
use crate::timer::Timer;
use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
pub use offload::{Done, Job, Key, Offload, Poster};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::{Fired, Kind, Timers};

const SHUTDOWN: Token = Token(0);
const WAKER: Token = Token(1);
const TIMER: Token = Token(2);
/// The sources' tokens begin here; the connections' follow them (slot
/// numbers offset by `Reactor::first_conn`).
const FIRST_SOURCE: usize = 3;

/// The most requests one connection is answered per loop turn...
pub const TURN_REQUESTS: usize = 16;
/// ...and the most loop time it gets per turn (checked after each request).
pub const TURN_TIME: Duration = Duration::from_millis(2);

/// One connection's share of the loop in one call of `drive`.
struct Turn {
    start: Instant,
    requests: usize,
}

impl Turn {
    fn new() -> Turn {
        Turn {
            start: Instant::now(),
            requests: 0,
        }
    }

    /// Whether the connection has had [`TURN_REQUESTS`] requests or
    /// [`TURN_TIME`] (checked only once it has had one).
    fn used(&self) -> bool {
        self.requests >= TURN_REQUESTS || (self.requests > 0 && self.start.elapsed() >= TURN_TIME)
    }
}

/// What a connection is doing.
enum Stage {
    /// Reading requests and answering them.
    Serving,
    /// A plan is parked on the timer heap until `until`.
    Waiting { plan: Plan, until: Instant },
    /// A plan's blocking step is with the [`Offload`].
    Offloaded,
    /// Write side shut; draining input until EOF, a byte cap or `until`.
    Lingering { until: Instant, drained: usize },
}

struct Entry<'h> {
    stream: TcpStream,
    conn: Conn,
    gen: u64,
    stage: Stage,
    interest: Interest,
    /// Output is waiting for the client to read.
    write_pending: bool,
    /// A client that makes us wait this long for write progress is dropped.
    write_deadline: Instant,
    /// The earliest idle-kind timer this entry has in the heap.
    idle_armed: Option<Instant>,
    /// Used up its turn with requests still buffered: queued to go on.
    yielded: bool,
    /// The client's end is closed (an event said so): read on to the end,
    /// a short read no longer means there is nothing more (see `drive`).
    read_closed: bool,
    _open: ConnectionGuard<'h>,
}

/// One thread's event loop. See the module doc.
pub struct Reactor<'h> {
    poll: Poll,
    /// Where connections come from; `None` once shutdown began.
    incoming: Option<Incoming>,
    /// The token of connection slot 0: the sources' tokens come first.
    first_conn: usize,
    handler: &'h Handler,
    options: &'h Options,
    shutdown: &'h Shutdown,
    stopping: bool,
    conns: Vec<Option<Entry<'h>>>,
    free: Vec<usize>,
    next_gen: u64,
    timers: Timers,
    /// Connections that used up their turn, in the order they did.
    yielded: Vec<Key>,
    /// Every read of this loop goes here first.
    chunk: Box<[u8]>,
    accept_paused_until: Option<Instant>,
    /// Fires at the earliest deadline (heap or accept pause).
    clock: Timer,
    /// Out of descriptors is warned about once a second, not per attempt.
    accept_warning: crate::warn::Throttled,
    offload: Option<Box<dyn Offload + 'h>>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    waker: Option<Arc<Waker>>,
}

impl<'h> Reactor<'h> {
    /// A loop serving the connections from `incoming` until `shutdown`.
    pub fn new(
        incoming: Incoming,
        handler: &'h Handler,
        options: &'h Options,
        shutdown: &'h Shutdown,
    ) -> io::Result<Reactor<'h>> {
        incoming.set_nonblocking()?;
        let poll = Poll::new()?;
        for (i, source) in incoming.sources().iter().enumerate() {
            poll.registry().register(
                &mut SourceFd(&source.as_raw_fd()),
                Token(FIRST_SOURCE + i),
                Interest::READABLE,
            )?;
        }
        let first_conn = FIRST_SOURCE + incoming.sources().len();
        poll.registry()
            .register(&mut SourceFd(&shutdown.fd()), SHUTDOWN, Interest::READABLE)?;
        let clock = Timer::new(poll.registry(), TIMER)?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Ok(Reactor {
            poll,
            incoming: Some(incoming),
            first_conn,
            handler,
            options,
            shutdown,
            stopping: false,
            conns: Vec::new(),
            free: Vec::new(),
            next_gen: 0,
            timers: Timers::default(),
            yielded: Vec::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            accept_paused_until: None,
            clock,
            accept_warning: crate::warn::Throttled::new(),
            offload: None,
            done_tx,
            done_rx,
            waker: None,
        })
    }

    /// A handle through which other threads return finished jobs.
    pub fn poster(&mut self) -> io::Result<Poster> {
        let waker = match &self.waker {
            Some(w) => w.clone(),
            None => {
                let w = Arc::new(Waker::new(self.poll.registry(), WAKER)?);
                self.waker = Some(w.clone());
                w
            }
        };
        Ok(Poster {
            tx: self.done_tx.clone(),
            waker,
        })
    }

    /// From now on, `Wait` and `ReadFile` steps go to `offload` instead of
    /// a timer and an inline read (unless `--blocking-io` keeps waits inline).
    pub fn offload_to(&mut self, offload: Box<dyn Offload + 'h>) {
        self.offload = Some(offload);
    }

    /// Runs the loop until shutdown has been triggered and every
    /// connection has finished. Only listener failures are errors.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if self.shutdown.is_triggered() && !self.stopping {
                self.begin_shutdown();
            }
            if self.stopping && self.conns.len() == self.free.len() {
                return Ok(());
            }
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if interrupted(&e) {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    SHUTDOWN => self.begin_shutdown(),
                    WAKER => self.take_completions(),
                    // The deadlines are checked after this turn's events.
                    TIMER => self.clock.acknowledge(),
                    Token(t) if t < self.first_conn => {
                        if self.accept_paused_until.is_none() {
                            self.accept_from(t - FIRST_SOURCE)?;
                        }
                    }
                    Token(t) => {
                        let slot = t - self.first_conn;
                        if event.is_read_closed() || event.is_error() {
                            if let Some(e) = self.entry(slot) {
                                e.read_closed = true;
                            }
                        }
                        self.drive(slot)
                    }
                }
            }
            if self
                .accept_paused_until
                .is_some_and(|t| t <= Instant::now())
            {
                self.accept_paused_until = None;
                self.accept_all()?;
            }
            self.fire_timers();
            self.continue_yielded();
        }
    }

    /// Gives the connections that used up their last turn another one.
    fn continue_yielded(&mut self) {
        for key in std::mem::take(&mut self.yielded) {
            match self.entry(key.slot) {
                Some(e) if e.gen == key.gen => e.yielded = false,
                _ => continue,
            }
            self.drive(key.slot);
        }
    }

    /// `poll`'s timeout: none (the clock fd wakes the loop at the next
    /// deadline), or zero when there is work to go on with or a deadline
    /// has already passed.
    fn next_timeout(&mut self) -> Option<Duration> {
        if !self.yielded.is_empty() {
            return Some(Duration::ZERO);
        }
        let timer = self.timers.next();
        let next = match (timer, self.accept_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(t) = next else {
            let _ = self.clock.disarm();
            return None;
        };
        if t <= Instant::now() {
            return Some(Duration::ZERO);
        }
        match self.clock.arm(t) {
            Ok(()) => None,
            // No clock: fall back to poll's millisecond timeout.
            Err(_) => Some(t.saturating_duration_since(Instant::now())),
        }
    }

    /// Accepts from every source until each is empty.
    fn accept_all(&mut self) -> io::Result<()> {
        let sources = self.incoming.as_ref().map_or(0, |i| i.sources().len());
        for i in 0..sources {
            if self.accept_paused_until.is_some() {
                break;
            }
            self.accept_from(i)?;
        }
        Ok(())
    }

    /// Accepts from source `i` until it is empty (its readiness is
    /// edge-triggered), or descriptors run out.
    fn accept_from(&mut self, i: usize) -> io::Result<()> {
        loop {
            let Some(incoming) = &self.incoming else {
                return Ok(());
            };
            match incoming.sources()[i].accept(true)? {
                Accept::Arrived(arrival) => self.add(arrival),
                Accept::Empty => return Ok(()),
                Accept::Exhausted(e) => {
                    // Connections will close and free descriptors; until
                    // then, leave the rest waiting in the source.
                    if let Some(n) = self.accept_warning.check(Instant::now()) {
                        tracing::warn!("accept: {e}; backing off{}", crate::warn::more(n));
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return Ok(());
                }
            }
        }
    }

    /// Takes in a connection. Bytes already read from it (a handoff) are
    /// answered at once: no readiness event will announce them.
    fn add(&mut self, arrival: Arrival) {
        let mut stream = TcpStream::from_std(arrival.stream);
        let _ = stream.set_nodelay(true);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot + self.first_conn),
            Interest::READABLE,
        ) {
            tracing::warn!("registering a connection: {e}");
            self.free.push(slot);
            return;
        }
        self.next_gen += 1;
        let idle = self.options.idle_timeout;
        let mut conn = Conn::new(self.options);
        conn.received(&arrival.already_read);
        self.conns[slot] = Some(Entry {
            stream,
            conn,
            gen: self.next_gen,
            stage: Stage::Serving,
            interest: Interest::READABLE,
            write_pending: false,
            write_deadline: Instant::now() + idle,
            idle_armed: None,
            yielded: false,
            read_closed: false,
            _open: self.handler.stats().connection_opened(),
        });
        self.arm_idle(slot);
        if !arrival.already_read.is_empty() {
            self.drive(slot);
        }
    }

    fn entry(&mut self, slot: usize) -> Option<&mut Entry<'h>> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    fn close(&mut self, slot: usize) {
        // Dropping the socket closes it, which also removes it from epoll.
        if let Some(e) = self.conns.get_mut(slot).and_then(Option::take) {
            drop(e);
            self.free.push(slot);
        }
    }

    /// Does everything a connection is ready for: answer buffered requests,
    /// write, read more. Called on readiness and whenever a parked plan
    /// resumes (edge-triggered readiness is not repeated, so every path
    /// back to "may read" must try reading).
    fn drive(&mut self, slot: usize) {
        let Some(e) = self.entry(slot) else { return };
        if matches!(e.stage, Stage::Lingering { .. }) {
            self.drain_linger(slot);
            return;
        }
        // One turn spans every read of this call: a client that answers
        // each response at once would otherwise be served again and again.
        let mut turn = Turn::new();
        // A read shorter than the buffer emptied the socket: the next read
        // would only say "would block" (a system call per request, the
        // difference from nginx), and data that arrives later raises a new
        // edge. Not so once the client has closed: its end-of-file raises
        // none, so then the loop reads on until it sees it.
        let mut drained = false;
        loop {
            let turn_used = self.answer_buffered(slot, &mut turn);
            if !self.flush(slot) {
                return;
            }
            // Fields, not `self.entry`: the read below borrows `chunk` too.
            let Some(e) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if turn_used {
                // Reading more now would only buffer more: come back later.
                if !e.yielded {
                    e.yielded = true;
                    let key = Key { slot, gen: e.gen };
                    self.yielded.push(key);
                }
                break;
            }
            let wants_read =
                matches!(e.stage, Stage::Serving) && !e.conn.is_closing() && !e.conn.output_full();
            if !wants_read || drained {
                break;
            }
            // Read into the loop's buffer; the connection keeps only what
            // arrived (see `Conn::received`).
            match e.stream.read(&mut self.chunk[..]) {
                // The client is gone (or half-closed): stop, as the blocking
                // servers do.
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    drained = n < self.chunk.len() && !e.read_closed;
                    e.conn.received(&self.chunk[..n]);
                }
                Err(err) => {
                    if would_block(&err) {
                        break;
                    }
                    if !interrupted(&err) {
                        return self.close(slot);
                    }
                }
            }
        }
        self.update_interest(slot);
        self.arm_idle(slot);
    }

    /// Answers complete buffered requests until one parks, the output
    /// reaches the high-water mark, or the connection's turn is used up
    /// (then returns true: more may be buffered).
    fn answer_buffered(&mut self, slot: usize, turn: &mut Turn) -> bool {
        loop {
            if turn.used() {
                return true;
            }
            let handler = self.handler;
            let Some(e) = self.entry(slot) else {
                return false;
            };
            if !matches!(e.stage, Stage::Serving) || e.conn.output_full() {
                return false;
            }
            match e.conn.next_plan(handler) {
                Next::Plan(plan) => self.execute(slot, plan),
                Next::NeedInput | Next::Close => return false,
            }
            turn.requests += 1;
        }
    }

    /// Runs a plan's remaining steps; a wait or an offloaded step parks it,
    /// otherwise its response is written.
    fn execute(&mut self, slot: usize, mut plan: Plan) {
        let blocking_io = self.options.blocking_io;
        let Some(e) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let key = Key { slot, gen: e.gen };
        while let Some(pending) = plan.advance() {
            match (pending, &mut self.offload) {
                (Await::Computed, _) => {}
                // The pitfall: every other connection of this loop waits too.
                (pending @ Await::Wait(_), _) if blocking_io => pending.block(&mut plan),
                (Await::Wait(d), None) => {
                    let until = Instant::now() + d;
                    self.timers.push(until, slot, key.gen, Kind::Wait);
                    e.stage = Stage::Waiting { plan, until };
                    return;
                }
                // Inline: the loop blocks on the disk for as long as it takes.
                (pending @ Await::ReadFile(_), None) => pending.block(&mut plan),
                (pending, Some(offload)) => {
                    e.stage = Stage::Offloaded;
                    offload.submit(Job { key, pending, plan });
                    return;
                }
            }
        }
        e.conn
            .finish(self.handler, &plan, self.shutdown.is_triggered());
    }

    /// Continues a parked plan and then the connection.
    fn resume(&mut self, key: Key, plan: Plan) {
        match self.entry(key.slot) {
            Some(e) if e.gen == key.gen => e.stage = Stage::Serving,
            _ => return, // closed meanwhile (client reset): drop the plan
        }
        self.execute(key.slot, plan);
        self.drive(key.slot);
    }

    fn take_completions(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.resume(done.key, done.plan);
        }
    }

    /// Writes what the client will take. Returns false if the connection
    /// was closed. Starts closing once everything is written, if asked to.
    fn flush(&mut self, slot: usize) -> bool {
        let idle = self.options.idle_timeout;
        let Some(e) = self.entry(slot) else {
            return false;
        };
        let mut progressed = false;
        while !e.conn.output().is_empty() {
            match e.stream.write(e.conn.output()) {
                Ok(0) => break,
                Ok(n) => {
                    e.conn.wrote(n);
                    progressed = true;
                }
                Err(err) if would_block(&err) => break,
                Err(err) if interrupted(&err) => continue,
                Err(_) => {
                    self.close(slot);
                    return false;
                }
            }
        }
        if progressed || !e.write_pending {
            e.write_deadline = Instant::now() + idle;
        }
        e.write_pending = !e.conn.output().is_empty();
        if e.write_pending || !e.conn.is_closing() || !matches!(e.stage, Stage::Serving) {
            return true;
        }
        // All written and nothing more to read: end the stream so the client
        // sees the end of the last response.
        let _ = e.stream.shutdown(std::net::Shutdown::Write);
        if !e.conn.has_partial_request() {
            self.close(slot);
            return false;
        }
        e.stage = Stage::Lingering {
            until: Instant::now() + LINGER,
            drained: 0,
        };
        self.arm_idle(slot);
        self.drain_linger(slot);
        false
    }

    /// Reads and discards what a closing client still sends ([`linger`]).
    fn drain_linger(&mut self, slot: usize) {
        let Some(e) = self.entry(slot) else { return };
        let Stage::Lingering { drained, .. } = &mut e.stage else {
            return;
        };
        if linger::drain_available(&mut e.stream, drained) {
            return self.close(slot);
        }
        self.update_interest(slot);
    }

    /// Readable always (edge-triggered, so asking costs nothing while we
    /// do not want to read); writable only while output is pending, or
    /// every writable socket would wake the loop for nothing.
    fn update_interest(&mut self, slot: usize) {
        let registry = self.poll.registry();
        let Some(e) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let want = if e.write_pending {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if want != e.interest {
            let token = Token(slot + self.first_conn);
            if registry.reregister(&mut e.stream, token, want).is_ok() {
                e.interest = want;
            }
        }
    }

    /// When this connection next needs attention from the clock, if ever.
    fn idle_due(e: &Entry) -> Option<Instant> {
        match e.stage {
            Stage::Serving if e.write_pending => Some(e.write_deadline),
            Stage::Serving => Some(e.conn.deadline()),
            Stage::Lingering { until, .. } => Some(until),
            // The server is busy on the client's behalf: no idle timeout.
            Stage::Waiting { .. } | Stage::Offloaded => None,
        }
    }

    /// Makes sure an idle-kind timer fires no later than the connection's
    /// deadline. Deadlines mostly move later, so usually nothing is pushed.
    fn arm_idle(&mut self, slot: usize) {
        let Some(e) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if let Some(due) = Self::idle_due(e) {
            let earlier = match e.idle_armed {
                Some(armed) => due < armed,
                None => true,
            };
            if earlier {
                e.idle_armed = Some(due);
                self.timers.push(due, slot, e.gen, Kind::Idle);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Fired {
            at,
            slot,
            gen,
            kind,
        }) = self.timers.pop_due(now)
        {
            let Some(e) = self.entry(slot).filter(|e| e.gen == gen) else {
                continue; // a timer of a connection that is gone
            };
            match kind {
                Kind::Wait => {
                    if matches!(e.stage, Stage::Waiting { until, .. } if until == at) {
                        if let Stage::Waiting { plan, .. } =
                            std::mem::replace(&mut e.stage, Stage::Serving)
                        {
                            self.resume(Key { slot, gen }, plan);
                        }
                    }
                }
                Kind::Idle => {
                    if e.idle_armed == Some(at) {
                        e.idle_armed = None;
                    }
                    match Self::idle_due(e) {
                        Some(due) if due <= now => self.expire(slot),
                        _ => self.arm_idle(slot),
                    }
                }
            }
        }
    }

    /// A deadline passed: drop a stalled writer or a lingering close; time
    /// out an idle connection (408 if half a request is buffered).
    fn expire(&mut self, slot: usize) {
        let handler = self.handler;
        let Some(e) = self.entry(slot) else { return };
        if e.write_pending || matches!(e.stage, Stage::Lingering { .. }) {
            return self.close(slot);
        }
        e.conn.timed_out(handler);
        self.drive(slot);
    }

    /// Stops accepting, closes connections that have nothing in progress,
    /// and lets the others finish their current request and close.
    fn begin_shutdown(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if let Some(incoming) = self.incoming.take() {
            for source in incoming.sources() {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&source.as_raw_fd()));
            }
        }
        self.accept_paused_until = None;
        for slot in 0..self.conns.len() {
            let Some(e) = self.entry(slot) else { continue };
            match e.stage {
                Stage::Serving if !e.write_pending => {
                    // A request the client sent before the shutdown may be
                    // unread (its readiness not yet handled in this turn):
                    // it is answered, with `Connection: close`. What is
                    // still idle after that is closed.
                    self.drive(slot);
                    let idle = self.entry(slot).is_some_and(|e| {
                        matches!(e.stage, Stage::Serving)
                            && !e.write_pending
                            && !e.conn.is_closing()
                    });
                    if idle {
                        self.close(slot);
                    }
                }
                Stage::Serving => e.conn.close_after_output(),
                // finish() sees the trigger and closes after this response.
                Stage::Waiting { .. } | Stage::Offloaded | Stage::Lingering { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn ends after TURN_REQUESTS requests however fast they are, and
    /// never before the first.
    #[test]
    fn a_turn_is_bounded_by_requests() {
        let mut turn = Turn::new();
        assert!(!turn.used(), "a fresh turn");
        turn.requests = TURN_REQUESTS - 1;
        turn.start = Instant::now();
        assert!(!turn.used());
        turn.requests = TURN_REQUESTS;
        assert!(turn.used());
    }

    /// ... and by TURN_TIME once it has had a request.
    #[test]
    fn a_turn_is_bounded_by_time() {
        let mut turn = Turn::new();
        turn.start = Instant::now() - TURN_TIME * 2;
        assert!(!turn.used(), "no request yet: not used, however long");
        turn.requests = 1;
        assert!(turn.used());
    }
}
