//! Serving one connection, shared by every architecture.
//!
//! [`Conn`] is the I/O-free part: it holds the bytes read so far, turns them
//! into plans and turns finished plans into response bytes, enforcing
//! keep-alive, pipelining order and the idle timeout. [`serve_blocking`]
//! drives a `Conn` over a blocking socket; the event-driven architectures
//! drive it from their readiness loops.

use crate::codec::{self, Limits, Response};
use crate::config::Options;
use crate::handler::{Handler, Plan};
use crate::incoming::Arrival;
use crate::linger;
use crate::shutdown::{Readiness, Shutdown};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Stop answering pipelined requests (and, in the event loop, reading)
/// while this much output waits for the client: a client that sends
/// without reading must not grow a server's buffers without bound. Every
/// architecture that uses [`Conn`] applies it; a single response larger
/// than this is still written whole.
pub const OUT_HIGH_WATER: usize = 256 * 1024;
/// Bytes offered to each read (into a buffer of the thread's or loop's,
/// not the connection's).
pub const READ_CHUNK: usize = 16 * 1024;
/// A connection keeps buffers up to this size between requests; larger
/// ones (a big body, a big answer) are given back once empty, so that
/// thousands of idle connections cost little memory.
const KEEP_BUFFER: usize = 4096;

/// The protocol state of one connection, without the socket.
pub struct Conn {
    /// Bytes read and not yet parsed.
    inbuf: Vec<u8>,
    /// Response bytes not yet written.
    out: Vec<u8>,
    /// No more requests will be read: close once `out` is written.
    closing: bool,
    /// When the connection times out if no complete request arrives.
    deadline: Instant,
    /// `100 Continue` was sent for the request being received.
    continued: bool,
    /// How long it may idle (from the architecture's options).
    idle: Duration,
    /// Request bounds (from the architecture's options).
    limits: Limits,
}

/// What [`Conn::next_plan`] found in the buffered bytes.
pub enum Next {
    /// A request to execute. Answer it (with [`Conn::finish`]) before
    /// asking for the next one, so pipelined responses stay in order.
    Plan(Plan),
    /// More bytes are needed.
    NeedInput,
    /// Nothing more will be read (an error was answered or the client asked
    /// to close): write out `out` and close.
    Close,
}

impl Conn {
    /// A fresh connection, timing out `options.idle_timeout` from now.
    pub fn new(options: &Options) -> Conn {
        let idle = options.idle_timeout;
        Conn {
            // Both grow to what the requests need: an idle connection holds
            // no buffer at all until it sends something.
            inbuf: Vec::new(),
            out: Vec::new(),
            closing: false,
            deadline: Instant::now() + idle,
            continued: false,
            idle,
            limits: options.limits,
        }
    }

    /// Appends bytes just read from the socket.
    pub fn received(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
    }

    /// Response bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Whether the output has reached [`OUT_HIGH_WATER`]: write before
    /// answering (or reading) more.
    pub fn output_full(&self) -> bool {
        self.out.len() >= OUT_HIGH_WATER
    }

    /// `n` bytes of the output were written; once all of it is, a large
    /// buffer is given back.
    pub fn wrote(&mut self, n: usize) {
        self.out.drain(..n);
        if self.out.is_empty() && self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
    }

    /// No more requests will be read: the connection closes once its
    /// output is written.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Stops reading requests (shutdown): close once the output is written.
    pub fn close_after_output(&mut self) {
        self.closing = true;
    }

    /// When the connection times out if no complete request arrives.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether part of a request has arrived but not all of it.
    pub fn has_partial_request(&self) -> bool {
        !self.inbuf.is_empty()
    }

    /// Parses the next buffered request into a plan.
    pub fn next_plan(&mut self, handler: &Handler) -> Next {
        if self.closing {
            return Next::Close;
        }
        match codec::parse_request(&self.inbuf, &self.limits) {
            Ok(Some((req, used))) => {
                self.inbuf.drain(..used);
                if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_BUFFER {
                    self.inbuf = Vec::new();
                }
                self.continued = false;
                Next::Plan(handler.plan(&req))
            }
            Ok(None) => {
                // Only a half-received request can be waiting for `100
                // Continue`; an empty buffer (every keep-alive turn) is not.
                if !self.continued && !self.inbuf.is_empty() && codec::expects_continue(&self.inbuf)
                {
                    self.out.extend_from_slice(codec::CONTINUE);
                    self.continued = true;
                }
                Next::NeedInput
            }
            Err(e) => {
                self.error(handler, e.response());
                Next::Close
            }
        }
    }

    /// Writes the response of a plan whose steps have all run, and decides
    /// whether the connection stays open. `shutting_down` closes it after
    /// this response, which is how in-flight requests finish on shutdown.
    pub fn finish(&mut self, handler: &Handler, plan: &Plan, shutting_down: bool) {
        let resp = plan.response();
        let keep = plan.keep_alive && !resp.close && !shutting_down;
        codec::write_response(&mut self.out, resp, keep, plan.head_only);
        handler.stats().request_served();
        if keep {
            self.deadline = Instant::now() + self.idle;
        } else {
            self.closing = true;
        }
    }

    /// Answers with an error and stops reading.
    pub fn error(&mut self, handler: &Handler, resp: Response) {
        codec::write_response(&mut self.out, &resp, false, false);
        handler.stats().request_served();
        self.closing = true;
    }

    /// The deadline passed: a half-received request is answered 408, an
    /// idle connection is just closed.
    pub fn timed_out(&mut self, handler: &Handler) {
        if self.has_partial_request() {
            self.error(handler, Response::text(408, "request timeout").closing());
        }
        self.closing = true;
    }
}

/// Serves one connection on the calling thread until it closes, times out,
/// or shutdown is triggered (the request in progress is finished first).
pub fn serve_blocking(arrival: Arrival, handler: &Handler, options: &Options, shutdown: &Shutdown) {
    let Arrival {
        mut stream,
        already_read,
    } = arrival;
    let _open = handler.stats().connection_opened();
    // A client that stops reading must not pin this thread forever either.
    let _ = stream.set_write_timeout(Some(options.idle_timeout));
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(options);
    conn.received(&already_read);
    let mut chunk = [0u8; READ_CHUNK];
    let mut looked_at_shutdown = false;
    loop {
        // Answer the complete requests already buffered (pipelining) until
        // the output reaches the high-water mark, then write it all at once.
        while !conn.output_full() {
            let Next::Plan(plan) = conn.next_plan(handler) else {
                break;
            };
            let plan = plan.run_blocking();
            conn.finish(handler, &plan, shutdown.is_triggered());
        }
        let full = conn.output_full();
        if !conn.output().is_empty() {
            if stream.write_all(conn.output()).is_err() {
                return;
            }
            conn.wrote(conn.output().len());
        }
        if conn.is_closing() {
            linger::close(stream, conn.has_partial_request());
            return;
        }
        if full {
            // More requests may be buffered: answer them before reading.
            continue;
        }
        match shutdown.wait_readable(stream.as_raw_fd(), Some(conn.deadline())) {
            Ok(Readiness::Ready) => match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => conn.received(&chunk[..n]),
            },
            Ok(Readiness::TimedOut) => conn.timed_out(handler),
            Ok(Readiness::Shutdown) if !looked_at_shutdown => {
                // What the client sent before the shutdown may still be
                // unread (a worker that had only just taken the
                // connection): it is answered, with `Connection: close`.
                // Looked at once; an idle connection is just closed.
                looked_at_shutdown = true;
                match read_waiting(&stream, &mut chunk) {
                    0 => return,
                    n => conn.received(&chunk[..n]),
                }
            }
            Ok(Readiness::Shutdown) | Err(_) => return,
        }
    }
}

/// Reads what has already arrived on a blocking socket without waiting
/// (0: nothing, or an error).
fn read_waiting(stream: &TcpStream, buf: &mut [u8]) -> usize {
    // SAFETY: a valid fd and a buffer of `buf.len()` writable bytes.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    n.max(0) as usize
}

/// Answers `503 Service Unavailable` and closes: the server is out of
/// workers right now, the client may retry.
///
/// This runs on the accepting thread, which must never wait on a client:
/// the socket is non-blocking, the 503 (a hundred bytes) fits a fresh
/// socket's buffer, and only input that has already arrived is drained
/// before closing. A client whose request arrives after the close may see a
/// reset instead of the 503: the price of never lingering here.
pub fn refuse_busy(mut stream: TcpStream, handler: &Handler) {
    let mut out = Vec::with_capacity(128);
    let resp = Response::text(503, "server busy: no worker available").closing();
    codec::write_response(&mut out, &resp, false, false);
    let _ = stream.set_nonblocking(true);
    let mut drained = 0;
    linger::drain_available(&mut stream, &mut drained);
    if stream.write(&out).is_ok_and(|n| n == out.len()) {
        handler.stats().request_served();
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    linger::drain_available(&mut stream, &mut drained);
}

/// Whether an I/O error means "try again later" on a non-blocking socket.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// Whether an I/O error means "interrupted by a signal, retry now".
pub fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn handler() -> Handler {
        Handler::new(Config::default(), &Options::default()).unwrap()
    }

    /// Pipelined requests are answered in order, one plan at a time, and
    /// the output is taken as the socket takes it.
    #[test]
    fn pipelined_requests_answer_in_order_and_output_drains_in_parts() {
        let h = handler();
        let mut conn = Conn::new(&Options::default());
        conn.received(b"GET /work?bytes=3 HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hel");
        for _ in 0..2 {
            let Next::Plan(plan) = conn.next_plan(&h) else {
                panic!("a complete request is buffered");
            };
            conn.finish(&h, &plan.run_blocking(), false);
        }
        assert!(
            matches!(conn.next_plan(&h), Next::NeedInput),
            "half a request"
        );
        let text = String::from_utf8_lossy(conn.output()).into_owned();
        let first = text
            .find("Content-Length: 3\r\n")
            .expect("the 3-byte body first");
        assert!(first < text.find("Hello, World!").expect("then hello"));
        let total = conn.output().len();
        conn.wrote(10);
        assert_eq!(conn.output().len(), total - 10);
        conn.wrote(total - 10);
        assert!(conn.output().is_empty() && !conn.is_closing());
    }

    /// A malformed request is answered 400 and nothing more is read; a
    /// timed-out half request gets a 408; a shutdown closes after output.
    #[test]
    fn errors_timeouts_and_shutdown_close() {
        let h = handler();
        let mut conn = Conn::new(&Options::default());
        conn.received(b"GET\r\n\r\n");
        assert!(matches!(conn.next_plan(&h), Next::Close));
        assert!(
            conn.output().starts_with(b"HTTP/1.1 400"),
            "{:?}",
            conn.output()
        );
        assert!(conn.is_closing());

        let mut conn = Conn::new(&Options::default());
        conn.received(b"GET /hel");
        conn.timed_out(&h);
        assert!(conn.output().starts_with(b"HTTP/1.1 408"));
        assert!(conn.is_closing());

        let mut conn = Conn::new(&Options::default());
        conn.timed_out(&h);
        assert!(
            conn.output().is_empty(),
            "an idle connection is just closed"
        );
        assert!(conn.is_closing());

        let mut conn = Conn::new(&Options::default());
        conn.close_after_output();
        assert!(matches!(conn.next_plan(&h), Next::Close));
    }

    /// A request the client sent before the shutdown is answered, even
    /// when the worker had not read it yet (a process-per-request child
    /// that had just started lost it: CI saw the client's in-flight
    /// request go unanswered); an idle connection is just closed.
    #[test]
    fn a_request_that_arrived_before_shutdown_is_answered() {
        use std::io::{Read, Write};
        let h = handler();
        let shutdown = Shutdown::new().unwrap();
        shutdown.trigger();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pair = || {
            let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            (client, server)
        };
        let (mut client, server) = pair();
        client
            .write_all(b"GET /work?bytes=7 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        // The bytes are in the server's socket before it looks.
        let mut waiting = [libc::pollfd {
            fd: server.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(waiting.as_mut_ptr(), 1, 5000) }, 1);
        serve_blocking(server.into(), &h, &Options::default(), &shutdown);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        assert!(answer.contains("Connection: close"), "{answer:?}");

        let (mut client, server) = pair();
        serve_blocking(server.into(), &h, &Options::default(), &shutdown);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert!(answer.is_empty(), "an idle connection gets nothing");
    }

    /// The idle deadline is the option's, counted again after each answer.
    #[test]
    fn the_deadline_follows_the_idle_timeout() {
        let h = handler();
        let options = Options {
            idle_timeout: Duration::from_secs(30),
            ..Options::default()
        };
        let before = Instant::now();
        let mut conn = Conn::new(&options);
        assert!(conn.deadline() >= before + Duration::from_secs(30));
        conn.received(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        let Next::Plan(plan) = conn.next_plan(&h) else {
            panic!("a request");
        };
        let answered = Instant::now();
        conn.finish(&h, &plan.run_blocking(), false);
        assert!(conn.deadline() >= answered + Duration::from_secs(30));
        assert!(!conn.is_closing());
    }
}
