//! **Thread pool**: N worker threads, started once, take accepted
//! connections from a channel; the accepting thread only accepts and hands
//! off (Apache's worker MPM, without its per-process layer).
//!
//! - Concurrency: exactly N connections are served at once (`--workers`,
//!   default: the CPUs this process may use). A worker serves its
//!   connection to its end, keep-alive included, then takes the next.
//! - Cost: no thread creation per connection, one channel hand-off
//!   (a lock and possibly a wake-up) per connection. Memory is bounded.
//! - The queue is **bounded**, with room for N connections (one waiting
//!   per worker). When it is full the accepting thread blocks, stops
//!   accepting, and new connections wait in the kernel's listen backlog.
//!   That is deliberate: an unbounded queue would hold accepted sockets
//!   (file descriptors, memory) without limit and hide the overload from
//!   the client's connect time, while the backlog is bounded, is where the
//!   kernel reports overflow, and is what every other architecture queues
//!   in too, so the comparison stays fair.
//! - What to look for: with N below the number of keep-alive clients, the
//!   extra clients wait for a free worker — an idle keep-alive connection
//!   holds a worker until the idle timeout. Blocking waits (`io_ms`)
//!   occupy a worker each, so throughput on I/O-heavy work is capped at
//!   N / wait time; CPU-heavy work scales up to N = cores.

use crate::config::Options;
use crate::conn::serve_blocking;
use crate::handler::Handler;
use crate::incoming::{Arrival, Incoming};
use crate::net::accept_loop;
use crate::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::sync::Arc;

/// Serves `incoming` with `config.workers` threads until `shutdown`; then
/// lets every worker finish its in-flight request and joins them all.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let n = options.workers.max(1);
    let (tx, rx) = crossbeam_channel::bounded::<Arrival>(n);
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let (rx, h, o, s) = (
            rx.clone(),
            handler.clone(),
            options.clone(),
            shutdown.clone(),
        );
        // Counted in now; out when the thread ends (or was never started).
        let counted = handler.stats().workers(1);
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                let _counted = counted;
                work(rx, &h, &o, &s)
            });
        match spawned {
            Ok(w) => workers.push(w),
            // Fewer workers than asked still serve; none at all cannot.
            Err(e) if !workers.is_empty() => {
                handler.stats().spawn_failed();
                tracing::warn!("started only {i} of {n} workers: {e}");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    drop(rx);
    let accepted = accept_loop(&incoming, &shutdown, |arrival| hand_off(&tx, arrival));
    // Closing the channel tells the workers to exit once it is empty.
    // Connections still queued are closed unanswered by `serve_blocking`,
    // which sees the shutdown before reading: they were not in flight yet.
    drop(tx);
    for w in workers {
        if w.join().is_err() {
            tracing::error!("a worker panicked");
        }
    }
    accepted
}

/// Queues one connection, blocking while every worker is busy and the
/// queue is full (the backpressure described above).
fn hand_off(tx: &Sender<Arrival>, arrival: Arrival) {
    // Only fails when every worker has exited (each one panicked): then
    // dropping the connection is all that is left to do.
    if tx.send(arrival).is_err() {
        tracing::error!("no worker left to serve a connection");
    }
}

/// One worker: serves connections from the queue, one at a time, until
/// the queue is closed and empty.
fn work(rx: Receiver<Arrival>, handler: &Handler, options: &Options, shutdown: &Shutdown) {
    for arrival in rx {
        serve_blocking(arrival, handler, options, shutdown);
    }
}
