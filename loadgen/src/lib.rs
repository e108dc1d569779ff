//! serverlab's load generator: open and closed loop, HdrHistogram latencies.
//!
//! The engine follows wrk's model (one mio event loop per thread, requests
//! serialised once, minimal response parsing) and wrk2's correction for
//! coordinated omission (an open-loop schedule per connection; latency is
//! measured from the *intended* send time as well as from the actual one).
//!
//! It is a library so that the `serverlab load` command and the suite runner
//! use the same code in-process:
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! let config = loadgen::LoadConfig {
//!     url: "http://127.0.0.1:8080/".into(),
//!     rate: Some(1000.0),
//!     ..Default::default()
//! };
//! let stop = AtomicBool::new(false); // set it to end the run early
//! let report = loadgen::run(&config, &stop).unwrap();
//! report.write_text(&mut std::io::stdout()).unwrap();
//! ```
//!
//! Modules, by responsibility: [`config`] (options, URL and mix parsing),
//! [`schedule`] (open-loop arrivals), `engine`, `worker` and `conn` (per-thread
//! event loops and connections), [`response`] (the response parser), [`flow`] (session
//! flows against `/counter`), [`hist`] (histograms, merging, intervals),
//! [`output`] (text, JSON, `.hgrm`, interval log), [`cpu`] (the generator's
//! own CPU use) and [`report`] (what a run returns).

pub mod config;
mod conn;
pub mod cpu;
mod engine;
pub mod flow;
pub mod hist;
pub mod output;
pub mod report;
pub mod response;
pub mod schedule;
mod worker;

pub use config::{Arrivals, Flow, LoadConfig, MixEntry, StateMode, Target};
pub use report::{CpuReport, Errors, IntervalSummary, Latency, LoadReport, Statuses};

use std::sync::atomic::AtomicBool;

/// Why a run could not start or finish. Errors of single requests are never
/// a `LoadError`: they are counted in [`LoadReport::errors`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The settings cannot work (say which and why).
    #[error("invalid settings: {0}")]
    Config(String),
    /// The URL is not one the generator can use.
    #[error("bad URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// `host:port` as given.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The operating system refused something the engine needs (threads,
    /// an epoll instance, a timer).
    #[error("{what}: {source}")]
    Os {
        /// What the engine was doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The interval log (`--log`) could not be written.
    #[error("interval log: {0}")]
    Log(String),
    /// A worker thread panicked (a bug).
    #[error("worker thread {0} panicked")]
    Panic(usize),
}

/// Runs one load test as `config` says and returns its measurements.
///
/// Blocks until the run ends: after `warmup + duration`, after exactly
/// `requests` requests, or when `stop` becomes true (Ctrl-C, the suite
/// runner), whichever is first. Results gathered until then are returned
/// either way. Settings that cannot work are refused before any traffic.
pub fn run(config: &LoadConfig, stop: &AtomicBool) -> Result<LoadReport, LoadError> {
    engine::run(config, stop, None)
}

/// [`run`], and sets `measuring` the moment the measured window begins
/// (after the connections are open, the warmup and any settling), so that
/// a caller can read other counters — a server's CPU time — over exactly
/// the measured window.
pub fn run_signalling(
    config: &LoadConfig,
    stop: &AtomicBool,
    measuring: &AtomicBool,
) -> Result<LoadReport, LoadError> {
    engine::run(config, stop, Some(measuring))
}
