//! One run's file (`runs/<key>.json`): what was asked, where it ran, what
//! happened, and the measurements the report is drawn from.
//!
//! `metrics` is serverlab's own digest, stable for the report and for
//! scripts; `loadgen`, `accounting` and `server_stats` keep the raw
//! documents of the parts that produced them, and `histogram` the corrected
//! latency histogram (HdrHistogram V2 deflate, base64) for re-analysis.

use super::Env;
use crate::suite::{Objective, RunSpec};
use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Measured.
    Ok,
    /// The server never became ready, or the harness could not start it.
    Failed,
    /// The server exited during the run.
    Crashed,
    /// The kernel's OOM killer killed part of the server.
    Oom,
    /// Not run, with a reason (e.g. an external server's binary is missing).
    Skipped,
}

impl Status {
    /// The lowercase name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Crashed => "crashed",
            Status::Oom => "oom",
            Status::Skipped => "skipped",
        }
    }
}

/// Which CPUs the server and the generator were allowed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Placement {
    /// The server's cpuset.
    pub server_cpus: Vec<usize>,
    /// The generator threads' affinity.
    pub generator_cpus: Vec<usize>,
}

/// Latencies in milliseconds (corrected for coordinated omission in open
/// loop; equal to uncorrected in closed loop).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// One second (one interval) of a run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct TimePoint {
    /// Seconds since the measurement began (interval end).
    pub t_s: f64,
    /// Responses per second in the interval.
    pub rps: f64,
    /// Median latency in the interval, ms.
    pub p50_ms: f64,
    /// 99th percentile latency in the interval, ms.
    pub p99_ms: f64,
    /// Requests that failed in the interval.
    #[serde(default)]
    pub errors: u64,
}

/// One step of an `auto` load.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
pub struct AutoStep {
    /// Requests per second asked for.
    pub offered_rps: f64,
    /// Responses per second obtained.
    pub achieved_rps: f64,
    /// Latency at the objective's percentile, ms.
    pub objective_latency_ms: f64,
    /// Median latency, ms.
    #[serde(default)]
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    #[serde(default)]
    pub p99_ms: f64,
    /// Errors in the step.
    pub errors: u64,
    /// Connections starved in the step.
    #[serde(default)]
    pub starved_connections: u64,
    /// Whether the step met the objective and kept up with the offer.
    pub sustainable: bool,
    /// Whether the load generator was saturated during the step.
    #[serde(default)]
    pub generator_bound: bool,
    /// Server CPU time during the step, s.
    #[serde(default)]
    pub server_cpu_s: Option<f64>,
    /// Responses per server CPU-second in the step.
    #[serde(default)]
    pub requests_per_cpu_s: Option<f64>,
    /// What the virtual machine's host took from the step's CPUs
    /// (`None` where the kernel does not count it).
    #[serde(default)]
    pub host_steal: Option<Steal>,
}

/// The share of their time the host took from the measurement's CPUs
/// (see `runner::steal`): over the window, and in its worst 200 ms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Steal {
    /// Of the server's CPUs, over the window (0–1).
    pub server: f64,
    /// Of the generator's CPUs, over the window.
    pub generator: f64,
    /// Of the server's CPUs, in the worst sample of the window.
    pub server_worst: f64,
    /// Of the generator's CPUs, in the worst sample.
    pub generator_worst: f64,
}

/// The measurements of a finished run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Metrics {
    /// Responses received in the measured period.
    pub requests: u64,
    /// Failed requests (connect errors, resets, timeouts, bad status).
    pub errors: u64,
    /// Length of the measured period, s.
    pub duration_s: f64,
    /// Responses per second (every response that ended inside the
    /// measured window).
    pub throughput_rps: f64,
    /// Connections that got no answer in the whole window although they
    /// had a request waiting: a run with any cannot meet the objective.
    #[serde(default)]
    pub starved_connections: u64,
    /// Closed loop: mean requests in flight ÷ (connections × pipeline),
    /// Little's law as a check of the measurement (≈ 1 when sound).
    #[serde(default)]
    pub littles_law_ratio: Option<f64>,
    /// Open loop: the rate asked for.
    pub offered_rps: Option<f64>,
    /// Latency percentiles, ms.
    pub latency_ms: Percentiles,
    /// Latency at the objective's percentile, ms.
    pub objective_latency_ms: f64,
    /// Whether the run met the objective (latency, < 1 % errors and, in
    /// open loop, achieved ≥ 95 % of offered).
    pub meets_objective: bool,
    /// Server CPU time (user + system), s, from the container's accounting.
    pub server_cpu_s: Option<f64>,
    /// Responses per server CPU-second.
    pub requests_per_cpu_s: Option<f64>,
    /// Peak memory of the server's container, bytes (page cache included).
    pub memory_peak_bytes: Option<u64>,
    /// Peak of the server's own memory (anonymous + shared memory, no page
    /// cache), sampled from the cgroup's memory statistics, bytes: the
    /// figure memory answers compare.
    #[serde(default)]
    pub memory_own_bytes: Option<u64>,
    /// Page cache charged to the container at the end, bytes (depends on
    /// which run read a file first; shown apart, never compared).
    #[serde(default)]
    pub memory_cache_bytes: Option<u64>,
    /// Time the server was throttled by its CPU quota, s.
    pub throttled_s: Option<f64>,
    /// Built-in servers: most connections the server held open at once
    /// in the measured window, read from its stats file while the load ran
    /// (`None` for external contestants: they have no such counter).
    #[serde(default)]
    pub server_connections_peak: Option<u64>,
    /// Built-in servers: most threads or processes at once in the
    /// measured window (as `server_connections_peak`).
    #[serde(default)]
    pub server_workers_peak: Option<u64>,
    /// CPU time the load generator used, s.
    pub generator_cpu_s: Option<f64>,
    /// What the virtual machine's host took from the CPUs of the measured
    /// window (`None` where the kernel does not count it).
    #[serde(default)]
    pub host_steal: Option<Steal>,
    /// The latency spectrum: (percentile, ms) pairs.
    pub spectrum: Vec<(f64, f64)>,
    /// Latency and throughput over time.
    pub timeline: Vec<TimePoint>,
}

/// Everything known about one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// File format version.
    pub schema: u32,
    /// `contestant__workload__load__limits__state__repN`.
    pub key: String,
    /// The suite's name.
    pub suite: String,
    /// What was asked.
    pub spec: RunSpec,
    /// How it ended.
    pub status: Status,
    /// Why, when not `ok`.
    pub reason: Option<String>,
    /// True when the sandbox could not enforce limits and the run went
    /// without them (allowed by the suite or `--allow-unlimited`).
    pub unlimited: bool,
    /// The latency objective the run was judged by.
    pub objective: Objective,
    /// CPUs used.
    pub placement: Placement,
    /// When the run started (UTC).
    pub started: String,
    /// Wall time of the whole run including start, warmup and stop, s.
    pub wall_s: f64,
    /// The digest of the measurements (absent when the run failed early).
    pub metrics: Option<Metrics>,
    /// The steps of an `auto` load.
    #[serde(default)]
    pub auto_steps: Vec<AutoStep>,
    /// `auto` loads: what the capacity search found (the bracket).
    #[serde(default)]
    pub bracket: Option<crate::runner::search::Bracket>,
    /// Caveats about a measured run: the generator was the bottleneck, an
    /// auto search stopped at its maximum rate, ...
    #[serde(default)]
    pub notes: Vec<String>,
    /// The load generator's full report (JSON), for the measured period.
    pub loadgen: Option<serde_json::Value>,
    /// The container's accounting (JSON).
    pub accounting: Option<serde_json::Value>,
    /// The server's `/stats` after the measurement.
    pub server_stats: Option<serde_json::Value>,
    /// What the workload's background groups did, one entry per group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<crate::runner::background::GroupCounts>,
    /// Cluster runs: what the replicas, the dispatcher and the events did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::runner::cluster::ClusterResult>,
    /// Corrected latency histogram, HdrHistogram V2 deflate, base64.
    pub histogram: Option<String>,
    /// The environment (as in `env.json`).
    pub env: Env,
}

/// Columns of `summary.csv`.
pub const CSV_HEADER: &[&str] = &[
    "key",
    "contestant",
    "workload",
    "load",
    "limits",
    "state",
    "repetition",
    "status",
    "unlimited",
    "requests",
    "errors",
    "throughput_rps",
    "offered_rps",
    "sustainable_rps",
    "unsustainable_rps",
    "starved_connections",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "meets_objective",
    "server_cpu_s",
    "requests_per_cpu_s",
    "memory_peak_bytes",
    "memory_own_bytes",
    "memory_cache_bytes",
    "throttled_s",
    "host_steal",
    "server_connections_peak",
    "server_workers_peak",
    "background",
    "reason",
];

impl RunRecord {
    /// This run as a `summary.csv` row (empty cells for what is unknown).
    pub fn csv_row(&self) -> Vec<String> {
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        let m = self.metrics.clone().unwrap_or_default();
        let has = self.metrics.is_some();
        let num = |v: f64| {
            if has {
                format!("{v:.3}")
            } else {
                String::new()
            }
        };
        vec![
            self.key.clone(),
            self.spec.subject(),
            self.spec.workload.name.clone(),
            self.spec.load.label(),
            self.spec.limits_name.clone(),
            self.spec.state.map_or("", |s| s.as_str()).to_string(),
            self.spec.repetition.to_string(),
            self.status.as_str().to_string(),
            self.unlimited.to_string(),
            if has {
                m.requests.to_string()
            } else {
                String::new()
            },
            if has {
                m.errors.to_string()
            } else {
                String::new()
            },
            num(m.throughput_rps),
            opt(m.offered_rps),
            opt(self.bracket.and_then(|b| b.sustainable_rps)),
            opt(self.bracket.and_then(|b| b.unsustainable_rps)),
            if has {
                m.starved_connections.to_string()
            } else {
                String::new()
            },
            num(m.latency_ms.p50),
            num(m.latency_ms.p90),
            num(m.latency_ms.p99),
            num(m.latency_ms.p999),
            num(m.latency_ms.max),
            if has {
                m.meets_objective.to_string()
            } else {
                String::new()
            },
            opt(m.server_cpu_s),
            opt(m.requests_per_cpu_s),
            m.memory_peak_bytes.map_or(String::new(), |v| v.to_string()),
            m.memory_own_bytes.map_or(String::new(), |v| v.to_string()),
            m.memory_cache_bytes
                .map_or(String::new(), |v| v.to_string()),
            opt(m.throttled_s),
            opt(m.host_steal.map(|s| s.share())),
            m.server_connections_peak
                .map_or(String::new(), |v| v.to_string()),
            m.server_workers_peak
                .map_or(String::new(), |v| v.to_string()),
            self.background
                .iter()
                .map(|g| g.describe())
                .collect::<Vec<_>>()
                .join("; "),
            match (&self.reason, self.notes.is_empty()) {
                (Some(r), _) => r.clone(),
                (None, false) => self.notes.join("; "),
                (None, true) => String::new(),
            },
        ]
    }
}
