//! **Iterative**: one thread accepts a connection, serves it until it
//! closes, then accepts the next.
//!
//! - Concurrency: none. Connections queue in the kernel's listen backlog
//!   while the one in service is handled.
//! - Cost: the lowest possible — no threads, no locks, no context switches.
//! - What to look for: fine latency at one client; with more clients,
//!   latency grows with the queue, and one slow or idle keep-alive client
//!   stalls everyone behind it until the idle timeout closes it. Any
//!   blocking wait (`io_ms`) is paid by every queued request in turn.

use crate::config::Options;
use crate::conn::serve_blocking;
use crate::handler::Handler;
use crate::incoming::Incoming;
use crate::net::accept_loop;
use crate::shutdown::Shutdown;
use std::io;
use std::sync::Arc;

/// Serves `incoming` one connection at a time until `shutdown`.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let _worker = handler.stats().workers(1);
    accept_loop(&incoming, &shutdown, |arrival| {
        serve_blocking(arrival, &handler, &options, &shutdown)
    })
}
