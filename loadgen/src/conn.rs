//! One client connection of the engine: its socket, its buffers and the
//! requests in flight on it. Only socket mechanics live here; what a
//! response means is decided by the worker.

use crate::flow::CounterSession;
use crate::response::Parser;
use crate::schedule::Schedule;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Read buffer size; responses' bodies stream through it, only heads and
/// chunk lines must fit (it grows for large heads).
const READ_BUF: usize = 16 * 1024;

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// When it should have been sent (the schedule; closed loop: when the
    /// connection became free, or the connect began with `--no-keepalive`).
    pub intended: Instant,
    /// When it was written.
    pub sent: Instant,
    /// Sent after the warmup (counts in the results).
    pub measured: bool,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No socket; connect at (or after) this time.
    Closed { retry_at: Instant },
    /// Non-blocking connect under way since `since`.
    Connecting { since: Instant },
    /// Usable.
    Open,
}

/// What a read found.
pub enum ReadEnd {
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
    /// The socket failed.
    Error(io::Error),
}

/// One connection slot; it keeps its schedule and session across
/// reconnects (it is one client).
pub struct Conn {
    pub token: Token,
    pub stream: Option<TcpStream>,
    pub state: State,
    /// Bytes to write, from `out_pos`.
    pub out: Vec<u8>,
    pub out_pos: usize,
    /// Bytes read and not yet parsed: `inbuf[..in_len]`.
    pub inbuf: Vec<u8>,
    pub in_len: usize,
    pub parser: Parser,
    pub inflight: VecDeque<Pending>,
    /// Open loop: this connection's intended send times.
    pub schedule: Option<Schedule>,
    /// The time the timer heap holds for this connection, if any.
    pub queued_at: Option<Instant>,
    /// Counter flow: this client's session.
    pub session: Option<CounterSession>,
    /// Soft mode: a restore request must go out next, at once.
    pub restore_pending: bool,
    /// When the current connect began (connect time, and the intended time
    /// of `--no-keepalive` closed-loop requests).
    pub connect_began: Instant,
    /// Requests written on the current socket.
    pub sent_on_socket: u64,
    /// Connections in a row that failed to connect or ended without an
    /// answer (for back-off); an answer resets it.
    pub failures: u32,
    /// The current socket has had an answer.
    pub answered_on_socket: bool,
    /// `--no-keepalive` with `--requests`: the ticket taken before
    /// connecting, so no connection is opened for a request that will not
    /// be sent.
    pub ticket: bool,
    /// Got at least one answer inside the measured window.
    pub answered: bool,
    /// The longest a measured request of this client waited (corrected,
    /// µs): its worst stall.
    pub longest_us: u64,
    /// Since when this client has been waiting without any answer (the
    /// intended time of its oldest unanswered request); failures and
    /// reconnects do not reset it, an answer does.
    pub waiting_since: Option<Instant>,
    /// Got an answer while caught up with its schedule (settling waits for
    /// every connection to be warm).
    pub warm: bool,
}

impl Conn {
    /// A closed slot that may connect at once.
    pub fn new(token: Token, now: Instant, keep_bodies: bool) -> Conn {
        Conn {
            token,
            stream: None,
            state: State::Closed { retry_at: now },
            out: Vec::with_capacity(1024),
            out_pos: 0,
            inbuf: vec![0; READ_BUF],
            in_len: 0,
            parser: Parser::new(keep_bodies),
            inflight: VecDeque::new(),
            schedule: None,
            queued_at: None,
            session: None,
            restore_pending: false,
            connect_began: now,
            sent_on_socket: 0,
            answered_on_socket: false,
            failures: 0,
            ticket: false,
            answered: false,
            longest_us: 0,
            waiting_since: None,
            warm: false,
        }
    }

    /// Starts a non-blocking connect. An immediate failure is returned (the
    /// caller counts it) and leaves the slot closed.
    pub fn connect(
        &mut self,
        registry: &Registry,
        addr: SocketAddr,
        now: Instant,
    ) -> io::Result<()> {
        self.connect_began = now;
        let mut stream = TcpStream::connect(addr)?;
        registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.stream = Some(stream);
        self.state = State::Connecting { since: now };
        Ok(())
    }

    /// After a writable event while connecting: `Ok(true)` connected,
    /// `Ok(false)` not yet, `Err` failed.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        let Some(stream) = &self.stream else {
            return Ok(false);
        };
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                // Requests are small and latency-bound: never let Nagle hold one.
                stream.set_nodelay(true)?;
                self.state = State::Open;
                self.sent_on_socket = 0;
                self.answered_on_socket = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops the socket and everything in it; the caller has already
    /// accounted for the requests in flight. Reconnects are allowed at
    /// `retry_at`.
    pub fn close(&mut self, registry: &Registry, retry_at: Instant) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        self.state = State::Closed { retry_at };
        self.out.clear();
        self.out_pos = 0;
        self.in_len = 0;
        self.parser.reset();
        self.inflight.clear();
    }

    /// How long to wait before reconnecting after `failures` failures in a
    /// row: none without one, then 20 ms doubling to 1 s, so that a dead
    /// server, or one that closes every connection unanswered (a
    /// dispatcher with no replica up, a server at its connection limit),
    /// is not hammered by reconnects, and errors stay countable.
    pub fn backoff(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1))
    }

    /// Writes as much of `out` as the socket takes; returns the bytes written.
    pub fn flush(&mut self) -> io::Result<usize> {
        let Some(stream) = &mut self.stream else {
            return Ok(0);
        };
        let mut written = 0;
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(written)
    }

    /// Reads once into the free part of the buffer. `Ok((n, drained))`: n
    /// bytes added; `drained` when the read came back short, which for a
    /// stream socket means its buffer is empty (epoll(7)), saving the
    /// extra `read` that would only return `WouldBlock`.
    pub fn read_some(&mut self) -> Result<(usize, bool), ReadEnd> {
        let Some(stream) = &mut self.stream else {
            return Err(ReadEnd::WouldBlock);
        };
        if self.in_len == self.inbuf.len() {
            // A head larger than the buffer: grow (the parser caps heads).
            self.inbuf.resize(self.inbuf.len() * 2, 0);
        }
        loop {
            match stream.read(&mut self.inbuf[self.in_len..]) {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(n) => {
                    let drained = self.in_len + n < self.inbuf.len();
                    self.in_len += n;
                    return Ok((n, drained));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(ReadEnd::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadEnd::Error(e)),
            }
        }
    }

    /// Drops `n` parsed bytes from the front of the read buffer.
    pub fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.inbuf.copy_within(n..self.in_len, 0);
        self.in_len -= n;
    }
}
