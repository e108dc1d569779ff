//! Settings: the [`Options`] that shape an architecture, and the [`Config`]
//! of the app it serves.

use crate::codec::Limits;
use crate::state::StateConfig;
use std::path::PathBuf;
use std::time::Duration;

/// What shapes an architecture: its own argument (`run(listener, handler,
/// options, shutdown)`), never read from the app it serves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads, processes or loops, for architectures that have a
    /// fixed number of them. Always at least 1.
    pub workers: usize,
    /// AMPED only: the most helper threads running blocking steps at once.
    pub helpers: usize,
    /// Event-driven servers only: run blocking steps inline, stalling the
    /// loop (the classic single-threaded pitfall, kept for teaching).
    pub blocking_io: bool,
    /// A connection with no complete request for this long is closed (a
    /// request stalled mid-way is answered 408 first).
    pub idle_timeout: Duration,
    /// Request size bounds.
    pub limits: Limits,
}

/// AMPED's default cap on helper threads.
pub const DEFAULT_HELPERS: usize = 128;

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            helpers: DEFAULT_HELPERS,
            blocking_io: false,
            idle_timeout: Duration::from_secs(10),
            limits: Limits::default(),
        }
    }
}

/// The app every architecture serves: where files come from, how state is
/// kept, where the counters go, and the name `/stats` reports.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The architecture's name, reported by `/stats`.
    pub arch: String,
    /// Where `/file/<name>` is served from; `None` answers 404.
    pub docroot: Option<PathBuf>,
    /// How `POST /counter` keeps state (`--state`, `--ttl`, ...).
    pub state: StateConfig,
    /// `/stats`'s counters are kept in this file too, for a reader that
    /// must not depend on the server answering (see [`crate::stats`]).
    pub stats_file: Option<PathBuf>,
}

/// Parses a duration as users write it: `250ms`, `10s`, `2m`, `1h`, `500us`,
/// or a bare number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 10s, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use us, ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

/// The CPUs this process may actually use: its affinity mask (which a
/// cgroup cpuset also sets), further bounded by a cgroup CPU quota (v1
/// `cpu.cfs_quota_us`/`cpu.cfs_period_us` or v2 `cpu.max`, the tightest on
/// the path to the root), as the standard library reads them; a fractional
/// quota rounds down, to at least 1. Pools and loops default to this, not to
/// the host's core count. `tests/cpus.rs` checks it against a real cgroup
/// and an affinity pin.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
