//! **Event loop** (SPED, single-process event-driven): one thread,
//! non-blocking sockets, one mio readiness loop ([`crate::reactor`]).
//!
//! - Concurrency: multiplexing, not parallelism. The loop holds every
//!   connection at once and works on whichever is ready; a `Wait` step is a
//!   timer, so thousands of requests can wait at the same time for free.
//! - Cost: one thread, no locks, no context switches; a few hundred bytes
//!   of state per connection. It uses one core at most.
//! - What to look for: the best throughput per CPU on `/hello`, flat
//!   memory with many idle connections; throughput that stops at one core
//!   for `cpu=` work; and any step that really blocks — a `/file/` read
//!   from a cold disk, or every wait under `--blocking-io` — stalls all
//!   connections at once (latency of everyone jumps by the blocked time).
//!   That stall is what `amped` and `reactor-per-core` address.

use crate::config::Options;
use crate::handler::Handler;
use crate::incoming::Incoming;
use crate::reactor::Reactor;
use crate::shutdown::Shutdown;
use std::io;
use std::sync::Arc;

/// Serves `incoming` from one readiness loop on this thread until `shutdown`.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let _worker = handler.stats().workers(1);
    Reactor::new(incoming, &handler, &options, &shutdown)?.run()
}
