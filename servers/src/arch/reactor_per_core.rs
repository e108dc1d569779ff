//! **Reactor per core** (nginx-style): N independent single-threaded mio
//! loops ([`crate::reactor`]), one per CPU, each with its own
//! `SO_REUSEPORT` listener on the same address.
//!
//! - Concurrency: N event loops in parallel, sharing nothing. The kernel
//!   spreads new connections over the N listening sockets by a hash of the
//!   connection's addresses, so there is no shared accept queue, no lock
//!   and no thundering herd; a connection stays on the loop that accepted
//!   it for its whole life. N is `--workers` (default: the CPUs this
//!   process may use).
//! - Cost: N threads and N listening sockets; nothing else is shared but
//!   the handler's counters.
//! - What to look for: `event-loop` throughput times the number of cores
//!   on `/hello` and `cpu=` work. Imbalance: the hash ignores load, so with
//!   few connections one loop may carry more of them while another idles
//!   (compare per-core CPU); and each loop still stalls on a blocking step,
//!   which under `--blocking-io` stalls every connection of that loop.
//!
//! When the one source is a listener bound without `SO_REUSEPORT` (say,
//! passed by a super server), siblings cannot bind; the loops then share
//! that listener (each polls a duplicate of it), and a warning says so.
//! Several sources, or a handoff socket, are shared the same way: every
//! loop polls them all and the first to take a connection serves it (a
//! herd, as prefork's).

use crate::config::Options;
use crate::handler::Handler;
use crate::incoming::Incoming;
use crate::net;
use crate::reactor::Reactor;
use crate::shutdown::Shutdown;
use std::io;
use std::sync::{Arc, Condvar, Mutex};

/// Serves `incoming` from `config.workers` loops on as many threads until
/// `shutdown`.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let loops = options.workers.max(1);
    let per_loop = per_loop(incoming, loops)?;
    let _loops = handler.stats().workers(loops);
    let handler = &*handler;
    let options = &options;
    let shutdown = &shutdown;
    // Every loop is built (its epoll, timer and registrations) before any
    // accepts: a loop that accepted first could use up the descriptors its
    // siblings still need to start, and a server half up is worse than one
    // that says it cannot start.
    let start = &StartGate::new(per_loop.len());
    std::thread::scope(|scope| {
        let mut threads = Vec::with_capacity(loops);
        let mut result = Ok(());
        for (i, incoming) in per_loop.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("reactor-{i}"))
                .spawn_scoped(scope, move || {
                    let reactor = Reactor::new(incoming, handler, options, shutdown);
                    let everyone_built = start.arrive(reactor.is_ok());
                    let r = match reactor {
                        Ok(reactor) if everyone_built => reactor.run(),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    };
                    if r.is_err() {
                        // One loop failed: stop its siblings too, so the
                        // failure is reported rather than half a server.
                        shutdown.trigger();
                    }
                    r
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    start.fail();
                    shutdown.trigger();
                    result = Err(e);
                    break;
                }
            }
        }
        for t in threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a reactor thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// The sources of each of `n` loops: `incoming` for the first; for the
/// others, a sibling listener bound to the same address when the one
/// source is a listener that allows it, else handles on the same sources.
fn per_loop(incoming: Incoming, n: usize) -> io::Result<Vec<Incoming>> {
    let mut all = Vec::with_capacity(n);
    if let Some(addr) = incoming.lone_listener().and_then(|l| l.local_addr().ok()) {
        for _ in 1..n {
            match net::listen_shared(addr) {
                Ok(l) => all.push(Incoming::from(l)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    tracing::warn!(
                        "{addr} was not bound with SO_REUSEPORT; {n} loops will share one listener"
                    );
                    all.clear();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    while all.len() + 1 < n {
        all.push(incoming.try_clone()?);
    }
    all.insert(0, incoming);
    Ok(all)
}

/// Holds the loops until all of them are built, or one failed to be.
struct StartGate {
    /// Loops still to arrive, and whether any failed.
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl StartGate {
    fn new(loops: usize) -> StartGate {
        StartGate {
            state: Mutex::new((loops, false)),
            changed: Condvar::new(),
        }
    }

    /// Waits for the others; true when every loop was built.
    fn arrive(&self, built: bool) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 -= 1;
        state.1 |= !built;
        self.changed.notify_all();
        while state.0 > 0 && !state.1 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        !state.1
    }

    /// A loop will never arrive (its thread could not start).
    fn fail(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }
}
