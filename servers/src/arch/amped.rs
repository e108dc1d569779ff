//! **AMPED** (asymmetric multi-process event-driven, after the Flash web
//! server): the [`event-loop`](super::event_loop) plus a pool of helper
//! threads that run the blocking steps of plans.
//!
//! - Concurrency: the loop multiplexes every connection as in SPED; when a
//!   plan reaches a step that blocks (`Wait`, standing for disk or database
//!   I/O, and `ReadFile`), the loop hands it to a helper and goes on with
//!   other connections. The helper blocks, then posts the plan back through
//!   a channel and wakes the loop with a mio `Waker`. `Compute` stays on the
//!   loop: helpers exist for blocking, not for extra CPUs.
//! - Helpers are started on demand, one whenever a job arrives and all are
//!   busy, up to `--helpers` (default [`DEFAULT_HELPERS`]; Flash likewise
//!   grew its helper pool with the number of outstanding disk operations).
//!   Past the cap, jobs queue: the cap bounds how many blocking steps are
//!   in progress at once, so it caps `io_ms` throughput at helpers / wait,
//!   exactly as a thread pool's size does.
//! - Cost: a channel send, a wake-up and two context switches per blocking
//!   step, plus a thread (its stack) per concurrently blocked step.
//! - What to look for: on `io_ms=` or cold-file workloads, latency close
//!   to the wait itself at concurrencies where `event-loop` collapses (it
//!   serialises the waits only under `--blocking-io`, where AMPED also runs
//!   waits inline and so stalls like SPED); on `/hello` the same throughput
//!   as `event-loop`, since no helper is involved. `/stats` `workers` is
//!   the loop plus the helpers started so far.

use crate::config::Options;
use crate::handler::Handler;
use crate::incoming::Incoming;
use crate::reactor::{Job, Offload, Poster, Reactor};
use crate::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Most helper threads one server starts unless `--helpers` says otherwise.
pub const DEFAULT_HELPERS: usize = crate::config::DEFAULT_HELPERS;

/// Serves `incoming` from one loop on this thread, with blocking steps
/// given to helper threads, until `shutdown`.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let _loop = handler.stats().workers(1);
    let mut reactor = Reactor::new(incoming, &handler, &options, &shutdown)?;
    let helpers = Helpers::new(reactor.poster()?, &handler, options.helpers);
    reactor.offload_to(Box::new(helpers));
    // Dropping the reactor drops the helpers, which joins their threads.
    reactor.run()
}

/// The helper pool: a job queue and the threads that empty it.
struct Helpers<'h> {
    jobs: Option<Sender<Job>>,
    queue: Receiver<Job>,
    poster: Poster,
    /// Jobs submitted and not yet finished.
    in_flight: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
    /// The helpers in `/stats`; counted out when the pool is dropped.
    counted: crate::stats::WorkerCount,
    /// The most helpers it may start (`--helpers`).
    most: usize,
    handler: &'h Handler,
    /// Failed helper starts are said once a second, with a count.
    warning: crate::warn::Throttled,
}

impl<'h> Helpers<'h> {
    fn new(poster: Poster, handler: &'h Handler, most: usize) -> Helpers<'h> {
        let (jobs, queue) = crossbeam_channel::unbounded();
        Helpers {
            jobs: Some(jobs),
            queue,
            poster,
            in_flight: Arc::new(AtomicUsize::new(0)),
            threads: Vec::new(),
            counted: handler.stats().workers(0),
            most,
            handler,
            warning: crate::warn::Throttled::new(),
        }
    }

    fn spawn_helper(&mut self) -> io::Result<()> {
        let queue = self.queue.clone();
        let poster = self.poster.clone();
        let in_flight = self.in_flight.clone();
        let thread = std::thread::Builder::new()
            .name(format!("amped-helper-{}", self.threads.len()))
            .spawn(move || {
                for job in queue.iter() {
                    let done = job.run();
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    poster.post(done);
                }
            })?;
        self.threads.push(thread);
        self.counted.add(1);
        Ok(())
    }
}

impl Offload for Helpers<'_> {
    fn submit(&mut self, job: Job) {
        let busy = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if busy > self.threads.len() && self.threads.len() < self.most {
            if let Err(e) = self.spawn_helper() {
                // Under a pids limit: carry on with the helpers we have,
                // and say so (the log, and /stats spawn_failures).
                self.handler.stats().spawn_failed();
                if let Some(n) = self.warning.check(std::time::Instant::now()) {
                    tracing::warn!(
                        "cannot start helper {} of {}: {e}; running with {}{}",
                        self.threads.len() + 1,
                        self.most,
                        self.threads.len(),
                        crate::warn::more(n)
                    );
                }
            }
        }
        if self.threads.is_empty() {
            // No helper could be started at all: run the step here rather
            // than lose it. The loop stalls, but the request is answered.
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.poster.post(job.run());
            return;
        }
        if let Some(jobs) = &self.jobs {
            // Cannot fail: `self.queue` keeps the channel open.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Helpers<'_> {
    fn drop(&mut self) {
        // Closing the queue ends each helper after its current job.
        self.jobs = None;
        let (_, closed) = crossbeam_channel::bounded(0);
        self.queue = closed;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // `counted` counts the helpers out as the pool goes.
    }
}
