//! **Thread-per-request**: the accepting thread spawns a new OS thread for
//! every connection; that thread serves the connection to its end (one
//! request when the client sends `Connection: close`) and exits.
//!
//! - Concurrency: one kernel thread per open connection, scheduled by the
//!   kernel. Blocking waits (`io_ms`) cost nothing but a sleeping thread.
//! - Cost: a `clone()` plus a stack mapping and teardown per connection, and
//!   memory and scheduler load that grow with the number of open
//!   connections — nothing bounds them but the kernel (a pids or memory
//!   limit). When a thread cannot be created (`EAGAIN` under a pids limit)
//!   the connection is answered 503 and the server keeps going.
//! - What to look for: good latency while connections are few and short;
//!   with `Connection: close` traffic the spawn cost shows in requests per
//!   CPU-second; under a pids limit or thousands of idle keep-alive
//!   clients, 503s and memory growth. `/stats` `workers` counts the
//!   connection threads alive now (the accepting thread is not counted).

use crate::config::Options;
use crate::conn::{refuse_busy, serve_blocking};
use crate::handler::Handler;
use crate::incoming::{Arrival, Incoming};
use crate::net::accept_loop;
use crate::shutdown::Shutdown;
use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long shutdown waits for connection threads to finish their
/// in-flight request (the longest request, `io_ms=10000`, fits in it).
const DRAIN: Duration = Duration::from_secs(15);

/// Serves `incoming`, one new thread per connection, until `shutdown`;
/// then waits (bounded) for the connection threads to finish.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let live = Arc::new(Live::default());
    accept_loop(&incoming, &shutdown, |arrival| {
        spawn_for(arrival, &handler, &options, &shutdown, &live)
    })?;
    if !live.wait_zero(Instant::now() + DRAIN) {
        tracing::warn!("connection threads still busy after {DRAIN:?}; exiting anyway");
    }
    Ok(())
}

/// Starts a thread that serves `arrival`; answers 503 if none can be made.
fn spawn_for(
    arrival: Arrival,
    handler: &Arc<Handler>,
    options: &Options,
    shutdown: &Shutdown,
    live: &Arc<Live>,
) {
    // The thread receives the socket as a bare fd so that, if the thread
    // cannot be created, the socket is still ours to answer: the closure
    // (holding only an integer) is dropped unrun, and exactly one side ever
    // turns the fd back into a `TcpStream`.
    let Arrival {
        stream,
        already_read,
    } = arrival;
    let fd = stream.into_raw_fd();
    let (h, o, s, l) = (
        handler.clone(),
        options.clone(),
        shutdown.clone(),
        live.clone(),
    );
    // Counted in now; out when the thread ends (or was never started).
    let counted = handler.stats().workers(1);
    live.add();
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .spawn(move || {
            // Counted out even if serving panics.
            let _counted = counted;
            let _alive = Alive(&l);
            // SAFETY: the fd came from `into_raw_fd` above and, the spawn
            // having succeeded, nobody else will use or close it.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            let arrival = Arrival {
                stream,
                already_read,
            };
            serve_blocking(arrival, &h, &o, &s);
        });
    if let Err(e) = spawned {
        live.done();
        handler.stats().spawn_failed();
        tracing::warn!("cannot start a thread for a connection: {e}; answering 503");
        // SAFETY: the spawn failed, so the closure never ran and the fd is
        // still owned here alone.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        refuse_busy(stream, handler);
    }
}

/// Counts one connection thread out of [`Live`] when dropped.
struct Alive<'a>(&'a Live);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// Counts the connection threads alive, so shutdown can wait for them
/// without keeping a join handle per connection ever served.
#[derive(Default)]
struct Live {
    n: Mutex<usize>,
    zero: Condvar,
}

impl Live {
    fn add(&self) {
        *self.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn done(&self) {
        let mut n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.zero.notify_all();
        }
    }

    /// Waits until no thread is alive or `deadline` passes; returns whether
    /// all finished.
    fn wait_zero(&self, deadline: Instant) -> bool {
        let n = self.n.lock().unwrap_or_else(|e| e.into_inner());
        crate::sync::wait_until(&self.zero, n, deadline, |n| *n == 0)
    }
}
