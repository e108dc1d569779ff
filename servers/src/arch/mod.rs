//! Every architecture, selectable by name.
//!
//! Each one is a file in this folder with the same entry,
//! `run(incoming, handler, options, shutdown)`: it serves the connections
//! that arrive from `incoming` ([`Incoming`]: listeners, a handoff socket)
//! with `handler` (the app: routes, state, stats, docroot), shaped by
//! `options` (workers, helpers, blocking I/O, timeouts), until `shutdown`
//! is triggered, then lets in-flight requests finish and returns. Adding an
//! architecture means adding its file and one entry to [`ALL`].

use crate::config::Options;
use crate::handler::Handler;
use crate::incoming::Incoming;
use crate::shutdown::Shutdown;
use std::io;
use std::sync::Arc;

pub mod amped;
pub mod event_loop;
pub mod iterative;
pub mod prefork;
pub mod process_per_request;
pub mod reactor_per_core;
pub mod thread_per_request;
pub mod thread_pool;
pub mod tokio_hyper;

/// The entry every architecture has.
pub type RunFn = fn(Incoming, Arc<Handler>, Options, Shutdown) -> io::Result<()>;

/// One architecture: its name, a line about it, and its entry.
pub struct Arch {
    /// The name used by `serve --arch` and suites.
    pub name: &'static str,
    /// One line: the model.
    pub about: &'static str,
    /// What `/stats` counts as workers: "threads" or "processes".
    pub workers: &'static str,
    /// Whether `--workers` sizes it (pools, loops, preforked children).
    pub sized: bool,
    /// Whether it binds several listeners to one address (`SO_REUSEPORT`):
    /// only reactor-per-core, whose loops each own a listener.
    pub shares_port: bool,
    /// Whether it serves a fixed number of connections at once, each
    /// holding a worker for its whole life (iterative, thread-pool,
    /// prefork): kept-alive connections beyond that number wait in the
    /// accept queue until one closes.
    pub bounded: bool,
    /// Serves until shutdown.
    pub run: RunFn,
}

/// Every architecture, in the order they are usually taught.
pub const ALL: &[Arch] = &[
    Arch {
        name: "iterative",
        about: "one thread: accept a connection, serve it to its end, accept the next",
        workers: "threads",
        sized: false,
        shares_port: false,
        bounded: true,
        run: iterative::run,
    },
    Arch {
        name: "thread-per-request",
        about: "a new thread for each accepted connection, serving it to its end",
        workers: "threads",
        sized: false,
        shares_port: false,
        bounded: false,
        run: thread_per_request::run,
    },
    Arch {
        name: "thread-pool",
        about: "N pre-spawned threads fed connections by a bounded channel (Apache worker)",
        workers: "threads",
        sized: true,
        shares_port: false,
        bounded: true,
        run: thread_pool::run,
    },
    Arch {
        name: "process-per-request",
        about: "fork() per connection; the child serves it and exits, the parent reaps",
        workers: "processes",
        sized: false,
        shares_port: false,
        bounded: false,
        run: process_per_request::run,
    },
    Arch {
        name: "prefork",
        about: "N pre-forked processes, each accepting and serving one connection at a time",
        workers: "processes",
        sized: true,
        shares_port: false,
        bounded: true,
        run: prefork::run,
    },
    Arch {
        name: "event-loop",
        about: "one thread, non-blocking sockets, one mio readiness loop (SPED)",
        workers: "threads",
        sized: false,
        shares_port: false,
        bounded: false,
        run: event_loop::run,
    },
    Arch {
        name: "reactor-per-core",
        about: "one mio loop per CPU, each with its own SO_REUSEPORT listener (nginx-style)",
        workers: "threads",
        sized: true,
        shares_port: true,
        bounded: false,
        run: reactor_per_core::run,
    },
    Arch {
        name: "amped",
        about: "one mio loop plus helper threads for blocking steps (Flash's AMPED)",
        workers: "threads",
        sized: false,
        shares_port: false,
        bounded: false,
        run: amped::run,
    },
    Arch {
        name: "async",
        about:
            "tokio multi-thread runtime with hyper: a task per connection, work-stealing threads",
        workers: "threads",
        sized: true,
        shares_port: false,
        bounded: false,
        run: tokio_hyper::run,
    },
];

/// Starts `arch` on a thread of its own, serving `incoming` until
/// `shutdown` (or [`Running::stop`]): `run` for callers that go on doing
/// something else — tests, front ends, `serverlab serve` itself.
///
/// The process-based architectures fork, and reap every child of the
/// process: in a process that starts children of its own, run them in a
/// `serverlab serve` of their own instead.
pub fn start(
    arch: &'static Arch,
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<Running> {
    let stop = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name(arch.name.into())
        .spawn(move || (arch.run)(incoming, handler, options, shutdown))?;
    Ok(Running {
        arch,
        shutdown: stop,
        thread: Some(thread),
    })
}

/// A server started with [`start`]. Dropping it stops it.
pub struct Running {
    arch: &'static Arch,
    shutdown: Shutdown,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Its architecture.
    pub fn arch(&self) -> &'static Arch {
        self.arch
    }

    /// Stops it (in-flight requests finish) and waits until it has.
    pub fn stop(mut self) -> io::Result<()> {
        self.shutdown.trigger();
        self.join()
    }

    /// Waits until it stops by itself: its shutdown was triggered
    /// elsewhere (a signal), or it failed.
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other(format!("{} panicked", self.arch.name)))),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        let _ = self.join();
    }
}

/// The architecture called `name`, or an error that lists the valid names.
pub fn find(name: &str) -> Result<&'static Arch, UnknownArch> {
    ALL.iter()
        .find(|a| a.name == name)
        .ok_or_else(|| UnknownArch(name.to_string()))
}

/// An architecture name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture {name:?}; valid names: {valid}", name = .0, valid = names().join(", "))]
pub struct UnknownArch(pub String);

/// Every architecture's name.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|a| a.name).collect()
}
