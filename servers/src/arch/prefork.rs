//! **Prefork**: the parent forks N children at start; each child runs the
//! ordinary accept loop on the shared listening socket and serves the
//! connections it wins **one at a time** (Apache's prefork MPM). The parent
//! serves nothing: it keeps N children alive, replacing any that dies, and
//! stops and reaps them all on shutdown.
//!
//! - Concurrency: exactly N connections at once (`--workers`, default: the
//!   CPUs this process may use), one per process. The kernel's accept queue
//!   is shared; the children race to accept from it.
//! - Cost: the fork is paid once per child, not per connection, so the
//!   per-connection cost is that of a single-threaded server; memory is N
//!   address spaces (mostly shared copy-on-write). Every child polls the
//!   same listener, so one new connection wakes all idle children and all
//!   but one find nothing to accept (the *thundering herd*; Apache
//!   serialises accept with a mutex for this, here it is left visible).
//! - Robustness: a child that crashes or is killed takes only its current
//!   connection with it; the parent logs it and forks a replacement.
//! - What to look for: like a thread pool of N with isolation between
//!   workers; extra keep-alive clients wait for a free child (an idle one
//!   holds its child until the idle timeout); blocking waits cap
//!   throughput at N / wait time. `/stats` `workers` counts live children.

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

/// How often the parent retries forking children that could not be
/// replaced at once (a failed fork under a pids limit).
const RETRY: Duration = Duration::from_millis(500);

/// Serves `incoming` with `config.workers` preforked children until
/// `shutdown`; then stops and reaps them.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let n = options.workers.max(1);
    let incoming = Arc::new(incoming);
    let children = Children::new(handler.clone());
    let child = {
        let (l, h, s) = (incoming.clone(), handler.clone(), shutdown.clone());
        // What every child runs: the accept loop, serving one connection at
        // a time, until the shutdown pipe becomes readable.
        move || {
            if let Err(e) = accept_loop(&l, &s, |arrival| serve_blocking(arrival, &h, &options, &s))
            {
                tracing::error!("prefork child {}: {e}", std::process::id());
            }
        }
    };
    let child = Arc::new(child);
    let top_up = {
        let (children, s, h) = (children.clone(), shutdown.clone(), handler.clone());
        move || {
            if s.is_triggered() {
                return;
            }
            if let Err(e) = children.top_up(n, &*child) {
                h.stats().spawn_failed();
                tracing::warn!(
                    "cannot fork a prefork child: {e}; {} of {n} running, retrying",
                    children.live()
                );
            }
        }
    };
    let s = shutdown.clone();
    let replace = top_up.clone();
    let reaper = children.start_reaper(move |pid, status| {
        if !s.is_triggered() {
            tracing::warn!("prefork child {pid} died ({status}); replacing it");
            replace();
        }
    })?;
    // Build the shared `/work` body before forking, so the children share
    // one copy-on-write 1 MiB buffer instead of each building its own.
    crate::work::body(0);
    top_up();
    // The reaper replaces children the moment they die; this loop only
    // retries forks that failed, and notices shutdown.
    while !shutdown.sleep(RETRY)? {
        top_up();
    }
    children.stop(reaper, GRACE);
    Ok(())
}
