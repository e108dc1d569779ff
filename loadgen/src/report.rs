//! What a run returns: [`LoadReport`], serde-serialisable (its JSON form is
//! documented in the README), holding the merged histograms themselves so
//! callers can write `.hgrm` files or merge repetitions.

use crate::config::{Arrivals, Flow};
use crate::hist;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Version of the JSON layout; bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The URL as given.
    pub url: String,
    /// The address connected to.
    pub addr: String,
    /// `"closed"` or `"open"`.
    pub mode: String,
    /// Open-loop spacing (meaningless in a closed loop).
    pub arrivals: Arrivals,
    /// The session flow, if any.
    pub flow: Option<Flow>,
    /// Connections asked for.
    pub connections: usize,
    /// Threads (event loops).
    pub threads: usize,
    /// Pipelining depth.
    pub pipeline: usize,
    /// Whether connections were reused.
    pub keepalive: bool,
    /// Warmup that was run and discarded, in seconds (with settling: as
    /// long as it took, see `LoadConfig::settle`).
    pub warmup_s: f64,
    /// Length of the measured part, in seconds.
    pub duration_s: f64,
    /// Whether the run was stopped early (Ctrl-C or the caller's flag).
    pub stopped_early: bool,
    /// Open loop: the requests per second asked for.
    pub target_rate: Option<f64>,
    /// Open loop: how late a wake-up for a send was allowed to be, µs
    /// (`--send-slack`; 0: every send on time).
    #[serde(default)]
    pub send_slack_us: Option<u64>,
    /// Requests that ended (answered or failed) inside the measured window,
    /// per second of it, whenever they were sent.
    pub achieved_rate: f64,
    /// Measured requests sent.
    pub requests: u64,
    /// Requests answered inside the measured window (any status), whenever
    /// they were sent (with `--requests`: of those N requests).
    pub responses: u64,
    /// Requests still waiting for their answer when the run ended; each is
    /// in the latency histograms at its age at the end.
    pub in_flight_at_end: u64,
    /// Open loop: requests whose send time had come but that were not yet
    /// sent when the run ended (the generator or the connection was behind).
    pub behind_schedule_at_end: u64,
    /// Connections that got no answer during the whole measured window
    /// although they had a request waiting for at least half of it: clients
    /// the server starved (an iterative server with many keep-alive
    /// clients, a pool with fewer workers than connections).
    #[serde(default)]
    pub starved_connections: u64,
    /// `--requests` only: the run gave up before the count was reached
    /// because no request ended for twice the timeout plus a second.
    #[serde(default)]
    pub stalled: bool,
    /// Each client's (connection's) longest wait for an answer, spread
    /// over the clients: what one client's worst stall was.
    #[serde(default)]
    pub client_longest: Option<ClientLongest>,
    /// Closed loop: Little's law as a self-check of the measurement.
    #[serde(default)]
    pub littles_law: Option<LittlesLaw>,
    /// Connections opened (including reconnects).
    pub connects: u64,
    /// Bytes read from and written to sockets.
    pub bytes_read: u64,
    /// See `bytes_read`.
    pub bytes_written: u64,
    /// Responses by status class.
    pub statuses: Statuses,
    /// Errors by kind; each failed request counts once.
    pub errors: Errors,
    /// Counter flow: sessions started and soft-mode restores.
    pub sessions: u64,
    /// See `sessions`.
    pub restores: u64,
    /// Latency from the intended send time (what a user waits for).
    pub corrected: Latency,
    /// Latency from the actual send (what wrk reports).
    pub uncorrected: Latency,
    /// Actual send − intended send: how far behind the schedule requests went out.
    pub send_lag: Latency,
    /// Connection establishment times.
    pub connect: Latency,
    /// Latency over time: one entry per interval of the measurement.
    pub intervals: Vec<IntervalSummary>,
    /// The generator's own CPU use.
    pub cpu: CpuReport,
    /// Plain-language warnings: the generator was the bottleneck, no
    /// connection ever succeeded, the target rate was not reached...
    pub warnings: Vec<String>,
}

impl LoadReport {
    /// Requests that ended inside the window, answered or failed.
    pub fn finished(&self) -> u64 {
        (self.achieved_rate * self.duration_s).round() as u64
    }

    /// Of [`LoadReport::finished`], the requests that failed (any kind of
    /// request error, including 4xx/5xx answers and broken counter chains).
    pub fn failed(&self) -> u64 {
        self.errors.requests().min(self.finished())
    }

    /// Of [`LoadReport::finished`], the requests that succeeded.
    pub fn succeeded(&self) -> u64 {
        self.finished() - self.failed()
    }
}

/// How far the mean number of requests in flight may stray from the
/// connections × pipeline a closed loop keeps busy before the check fails.
pub const LITTLE_TOLERANCE: f64 = 0.15;

/// Little's law (L = λW) as a check of a closed-loop run: every connection
/// keeps `pipeline` requests in flight, so throughput × mean time in
/// flight must equal connections × pipeline. Less means the connections
/// idled between answer and next request (the generator could not keep
/// up, or reconnects took time), so the figures describe the generator
/// as much as the server.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LittlesLaw {
    /// Connections × pipeline.
    pub expected: f64,
    /// Requests in flight on average over the window (time in flight of
    /// everything inside the window ÷ its length).
    pub observed: f64,
    /// `observed / expected`.
    pub ratio: f64,
}

/// The spread over clients of each client's longest wait, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientLongest {
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl ClientLongest {
    /// From each client's longest wait in µs; `None` without clients.
    pub fn of(waits_us: &[u64]) -> Option<ClientLongest> {
        let mut w = waits_us.to_vec();
        w.sort_unstable();
        let ms = |us: u64| us as f64 / 1e3;
        Some(ClientLongest {
            min_ms: ms(*w.first()?),
            median_ms: ms(w[w.len() / 2]),
            max_ms: ms(*w.last()?),
        })
    }
}

/// Responses by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statuses {
    /// 1xx (informational; not expected).
    pub s1xx: u64,
    /// 2xx.
    pub s2xx: u64,
    /// 3xx.
    pub s3xx: u64,
    /// 4xx.
    pub s4xx: u64,
    /// 5xx.
    pub s5xx: u64,
}

/// Errors by kind. A request that fails counts once, under one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// Connection attempts that failed or timed out (not requests).
    pub connect: u64,
    /// Requests lost to a read error or to the server closing early.
    pub read: u64,
    /// Requests lost to a write error.
    pub write: u64,
    /// Requests without a complete answer within `--timeout`.
    pub timeout: u64,
    /// Responses with a 4xx status (except soft mode's expected 410).
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
    /// Responses the parser could not read.
    pub parse: u64,
    /// Counter flow: an answer that was not the previous value plus one, or
    /// a session the server lost.
    pub state: u64,
    /// Counter flow: the first state error as its client saw it (what it
    /// expected, what came), so that a count can be looked into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_example: Option<String>,
}

impl Errors {
    /// All request errors (connect errors are not requests and excluded).
    pub fn requests(&self) -> u64 {
        self.read
            + self.write
            + self.timeout
            + self.status_4xx
            + self.status_5xx
            + self.parse
            + self.state
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.parse += o.parse;
        self.state += o.state;
        if self.state_example.is_none() {
            self.state_example.clone_from(&o.state_example);
        }
    }
}

/// One latency distribution, in microseconds, with its histogram.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest, mean, standard deviation (µs).
    pub min_us: u64,
    /// See `min_us`.
    pub mean_us: f64,
    /// See `min_us`.
    pub stdev_us: f64,
    /// Percentiles (µs, the highest value equivalent to the percentile's bucket).
    pub p50_us: u64,
    /// See `p50_us`.
    pub p90_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub p99_9_us: u64,
    /// See `p50_us`.
    pub p99_99_us: u64,
    /// Largest (µs).
    pub max_us: u64,
    /// The whole distribution; in JSON, base64 of the V2-deflate encoding.
    #[serde(with = "histogram_base64")]
    pub histogram: Histogram<u64>,
}

impl Latency {
    /// Summarises `h`.
    pub fn from_histogram(h: Histogram<u64>) -> Latency {
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Latency {
            count: h.len(),
            min_us: if h.is_empty() { 0 } else { h.min() },
            mean_us: h.mean(),
            stdev_us: h.stdev(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            histogram: h,
        }
    }
}

/// Latency over time: one interval of the measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalSummary {
    /// Start of the interval, seconds after the measurement started.
    pub start_s: f64,
    /// Length in seconds.
    pub length_s: f64,
    /// Requests that finished in it (answered or failed).
    pub requests: u64,
    /// Of those, failed ones (every kind except connect).
    pub errors: u64,
    /// Corrected latency percentiles of its requests (µs; 0 if none).
    pub p50_us: u64,
    /// See `p50_us`.
    pub p90_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub max_us: u64,
}

/// The generator's own CPU use over the measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuReport {
    /// CPU time of the generator's threads, user and system (seconds).
    pub user_s: f64,
    /// See `user_s`.
    pub system_s: f64,
    /// Per thread: CPU time / wall time (1.0 = always busy).
    pub thread_busy: Vec<f64>,
    /// Generator CPU per finished request (µs).
    pub us_per_request: f64,
    /// Whether the generator, not the server, was probably the bottleneck
    /// (its threads were nearly always busy).
    pub generator_bound: bool,
}

/// Serde glue: a histogram as a base64 V2-deflate string.
mod histogram_base64 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hist::to_base64(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        hist::from_base64(&text).map_err(serde::de::Error::custom)
    }
}
