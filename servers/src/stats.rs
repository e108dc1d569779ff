//! Server-wide counters for `/stats`, kept in shared memory so that the
//! process-based architectures count the requests of every child.
//!
//! The counters live in an anonymous `MAP_SHARED` mapping made before any
//! fork: threads and forked children all see the same atomics. (Atomics in
//! shared memory are safe across processes on Linux for lock-free types.)

use crate::shm::Shared;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[repr(C)]
struct Counters {
    requests: AtomicU64,
    connections_total: AtomicU64,
    connections_open: AtomicI64,
    workers: AtomicI64,
    spawn_failures: AtomicU64,
}

/// A handle to the shared counters; cheap to share by reference.
pub struct Stats {
    counters: Shared<Counters>,
}

impl Stats {
    /// Maps a fresh zeroed page of counters, shared with future children.
    pub fn new() -> std::io::Result<Stats> {
        Ok(Stats {
            // SAFETY: zero bytes are valid atomics, usable across processes.
            counters: unsafe { Shared::zeroed()? },
        })
    }

    fn c(&self) -> &Counters {
        &self.counters
    }

    /// Counts one response sent.
    pub fn request_served(&self) {
        self.c().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection opened; the guard counts it closed when dropped.
    pub fn connection_opened(&self) -> ConnectionGuard<'_> {
        self.c().connections_total.fetch_add(1, Ordering::Relaxed);
        self.c().connections_open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self)
    }

    /// Adds `delta` to the threads or processes in use.
    pub fn add_workers(&self, delta: i64) {
        self.c().workers.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a thread or process the server needed and could not start
    /// (a pids or memory limit): it runs with fewer, or answers 503.
    pub fn spawn_failed(&self) {
        self.c().spawn_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = self.c();
        StatsSnapshot {
            requests: c.requests.load(Ordering::Relaxed),
            connections_total: c.connections_total.load(Ordering::Relaxed),
            connections_open: c.connections_open.load(Ordering::Relaxed).max(0),
            workers: c.workers.load(Ordering::Relaxed).max(0),
            spawn_failures: c.spawn_failures.load(Ordering::Relaxed),
        }
    }
}

/// Decrements the open-connection count when dropped.
pub struct ConnectionGuard<'a>(&'a Stats);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.c().connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StatsSnapshot {
    /// Responses sent since start.
    pub requests: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections open now.
    pub connections_open: i64,
    /// Threads or processes in use now (see the architecture's `workers` kind).
    pub workers: i64,
    /// Threads or processes that could not be started since start.
    pub spawn_failures: u64,
}
