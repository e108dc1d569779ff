//! **Process-per-request**: the parent accepts; for each connection it
//! `fork()`s a child that serves the connection to its end and exits. The
//! parent closes its copy of the socket and a reaper thread collects each
//! child as it exits, so none is left a zombie (the classic Unix server,
//! and inetd's `nowait`, minus the `exec`).
//!
//! - Concurrency: one process per open connection, scheduled by the
//!   kernel, each in its own address space: a crash or a leak in one
//!   cannot touch the others.
//! - Cost: a `fork()` (copying page tables; memory is shared copy-on-write)
//!   and a process exit per connection — the most expensive way to start
//!   serving a connection here. The counters of `/stats` live in shared
//!   memory so they count across processes; anything else a child changes
//!   is lost when it exits (see the state modes for sessions).
//! - Failure: if `fork()` fails (`EAGAIN` under a pids limit), the
//!   connection is answered 503 and the server keeps serving.
//! - What to look for: with `Connection: close` traffic, the fork cost
//!   dominates requests per CPU-second and shows as system time; keep-alive
//!   amortises it. Peak tasks in the sandbox accounting grow with open
//!   connections. `/stats` `workers` counts the live children.

use crate::config::Options;
use crate::conn::serve_blocking;
use crate::handler::Handler;
use crate::incoming::Incoming;
use crate::net::accept_loop;
use crate::process::Children;
use crate::shutdown::Shutdown;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for children to finish their in-flight request
/// before forcing them (the longest request, `io_ms=10000`, fits in it).
const GRACE: Duration = Duration::from_secs(15);

/// Serves `incoming`, one child process per connection, until `shutdown`;
/// then waits (bounded) for the children and reaps them all.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let children = Children::new(handler.clone());
    let reaper = children.start_reaper(move |pid, status| {
        if !status.success() {
            tracing::warn!("child {pid} ended abnormally: {status}");
        }
    })?;
    // Build the shared `/work` body here, once: a child would otherwise
    // build its own 1 MiB copy for every connection that asks for a body.
    crate::work::body(0);
    let served = accept_loop(&incoming, &shutdown, |arrival| {
        let mut arrival = Some(arrival);
        let forked = children.spawn(|| {
            // In the child. The sources are the parent's business; closing
            // this copy means a long keep-alive child does not keep the
            // port bound after the parent has gone. (The child exits
            // without dropping its copy of `incoming`.)
            incoming.close_in_child();
            if let Some(arrival) = arrival.take() {
                serve_blocking(arrival, &handler, &options, &shutdown);
            }
        });
        // In the parent (the child never returns here): on success, dropping
        // `arrival` closes the parent's copy; the child owns the connection.
        if let Err(e) = forked {
            handler.stats().spawn_failed();
            tracing::warn!("fork failed: {e}; answering 503");
            if let Some(arrival) = arrival.take() {
                crate::conn::refuse_busy(arrival.stream, &handler);
            }
        }
    });
    children.stop(reaper, GRACE);
    served
}
