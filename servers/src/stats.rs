//! Server-wide counters for `/stats`, kept in shared memory so that the
//! process-based architectures count the requests of every child.
//!
//! The counters live in a `MAP_SHARED` mapping made before any fork:
//! threads and forked children all see the same atomics. (Atomics in
//! shared memory are safe across processes on Linux for lock-free types.)
//! With `--stats-file`, the mapping is of that file, and the benchmark
//! runner maps it too ([`Stats::attach`]): it samples the counters while
//! the load runs without sending the server anything, so a saturated or
//! stalled server is read as well as an idle one.

use crate::shm::Shared;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The layout both sides of a stats file use; `MAGIC` first, so a reader
/// never takes some other file for one.
#[repr(C)]
struct Counters {
    magic: AtomicU64,
    requests: AtomicU64,
    connections_total: AtomicU64,
    connections_open: AtomicI64,
    workers: AtomicI64,
    spawn_failures: AtomicU64,
    /// Most connections open at once since start or the last reset.
    connections_peak: AtomicI64,
    /// Most threads or processes at once since start or the last reset.
    workers_peak: AtomicI64,
}

/// Marks a stats file as one of ours, in this layout ("srvlab" + version).
const MAGIC: u64 = u64::from_be_bytes(*b"srvlab\0\x02");

/// A handle to the shared counters; cheap to share by reference, and to
/// clone (clones count into the same mapping).
#[derive(Clone)]
pub struct Stats {
    counters: std::sync::Arc<Shared<Counters>>,
}

impl Stats {
    /// Maps a fresh zeroed page of counters, shared with future children,
    /// and with anyone who maps `file` if one is given.
    pub fn new(file: Option<&Path>) -> io::Result<Stats> {
        // SAFETY: zero bytes are valid atomics, usable across processes.
        let counters: Shared<Counters> = unsafe {
            match file {
                Some(path) => Shared::file(path, true)?,
                None => Shared::zeroed()?,
            }
        };
        counters.magic.store(MAGIC, Ordering::Release);
        Ok(Stats {
            counters: std::sync::Arc::new(counters),
        })
    }

    /// The counters of the server that made `file` with `--stats-file`.
    pub fn attach(file: &Path) -> io::Result<Stats> {
        // SAFETY: a valid `Counters` is any bytes of atomics; the magic
        // number checks the file is a stats file at all.
        let counters: Shared<Counters> = unsafe { Shared::file(file, false)? };
        if counters.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a serverlab stats file", file.display()),
            ));
        }
        Ok(Stats {
            counters: std::sync::Arc::new(counters),
        })
    }

    /// Starts the peaks again from what is open now (the runner does this
    /// when its measured window begins).
    pub fn reset_peaks(&self) {
        let c = self.c();
        c.connections_peak.store(
            c.connections_open.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        c.workers_peak
            .store(c.workers.load(Ordering::Relaxed), Ordering::Relaxed);
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
        let c = self.c();
        c.connections_total.fetch_add(1, Ordering::Relaxed);
        let open = c.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        c.connections_peak.fetch_max(open, Ordering::Relaxed);
        ConnectionGuard(self)
    }

    /// Counts `n` threads or processes in use until the returned guard is
    /// dropped (a thread that ends, panics or was never started counts
    /// itself out with it), so `/stats` never drifts.
    pub fn workers(&self, n: usize) -> WorkerCount {
        let mut count = WorkerCount {
            stats: self.clone(),
            n: 0,
        };
        count.add(n);
        count
    }

    fn add_workers(&self, delta: i64) {
        let c = self.c();
        let now = c.workers.fetch_add(delta, Ordering::Relaxed) + delta;
        c.workers_peak.fetch_max(now, Ordering::Relaxed);
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
            connections_peak: c.connections_peak.load(Ordering::Relaxed).max(0),
            workers_peak: c.workers_peak.load(Ordering::Relaxed).max(0),
        }
    }
}

/// Threads or processes counted in `/stats` while this lives (see
/// [`Stats::workers`]); owned, so it can move into the thread it counts.
#[must_use = "dropping it counts the workers out at once"]
pub struct WorkerCount {
    stats: Stats,
    n: i64,
}

impl WorkerCount {
    /// Counts `n` more (a pool that grows).
    pub fn add(&mut self, n: usize) {
        self.n += n as i64;
        self.stats.add_workers(n as i64);
    }
}

impl Drop for WorkerCount {
    fn drop(&mut self) {
        self.stats.add_workers(-self.n);
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
    /// Most connections open at once (since start or the last reset).
    pub connections_peak: i64,
    /// Most threads or processes at once (since start or the last reset).
    pub workers_peak: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("serverlab-stats-{name}-{}", std::process::id()))
    }

    /// What the server counts is what a reader of its file sees, at once
    /// and without asking it; peaks restart from what is open now.
    #[test]
    fn a_reader_of_the_file_sees_the_counters_and_peaks() {
        let path = temp("shared");
        let server = Stats::new(Some(&path)).unwrap();
        let reader = Stats::attach(&path).unwrap();
        let pool = server.workers(4);
        let a = server.connection_opened();
        let b = server.connection_opened();
        let c = server.connection_opened();
        server.request_served();
        drop((b, c));
        let s = reader.snapshot();
        assert_eq!(
            (s.requests, s.connections_open, s.connections_total),
            (1, 1, 3)
        );
        assert_eq!((s.connections_peak, s.workers, s.workers_peak), (3, 4, 4));
        reader.reset_peaks();
        let extra = server.workers(2);
        drop(pool);
        let s = reader.snapshot();
        assert_eq!((s.connections_peak, s.workers_peak), (1, 6));
        reader.reset_peaks();
        assert_eq!(reader.snapshot().workers_peak, 2);
        drop(extra);
        assert_eq!(reader.snapshot().workers, 0, "every guard counted out");
        drop(a);
        std::fs::remove_file(&path).unwrap();
    }

    /// A worker counted by a guard it owns is counted out when its thread
    /// ends, panicking or not, and when it is never started.
    #[test]
    fn worker_guards_count_out_whatever_happens() {
        let stats = Stats::new(None).unwrap();
        let counted = stats.workers(1);
        let t = std::thread::spawn(move || {
            let _counted = counted;
            panic!("a worker that panics");
        });
        assert!(t.join().is_err());
        let never_started = stats.workers(1);
        drop(never_started);
        let running = stats.workers(3);
        assert_eq!(stats.snapshot().workers, 3);
        drop(running);
        assert_eq!(stats.snapshot().workers, 0);
    }

    #[test]
    fn a_file_that_is_not_a_stats_file_is_refused() {
        let path = temp("other");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let e = Stats::attach(&path).err().expect("refused");
        assert!(e.to_string().contains("not a serverlab stats file"), "{e}");
        std::fs::write(&path, b"short").unwrap();
        assert!(Stats::attach(&path).is_err(), "too short");
        std::fs::remove_file(&path).unwrap();
        assert!(Stats::attach(&path).is_err(), "missing");
    }
}
