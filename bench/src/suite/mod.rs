//! Suites: what a benchmark run measures, read from a TOML file.
//!
//! A suite is a matrix — contestants (built-in architectures and external
//! servers) × workloads × load levels × sandbox limits × state modes ×
//! repetitions — plus warmup, duration and the latency objective. Every
//! setting is checked before anything runs; a bad file is refused with its
//! file name, line and field ([`SuiteError`]). The format is documented in
//! the README and in the shipped suites under `bench/suites/`.

pub mod cluster;
mod error;
mod parse;

pub use error::SuiteError;

use sandbox::Limits;
use serde::{Deserialize, Serialize};
pub use servers::protocol::StateMode;
use std::path::Path;
use std::time::Duration;

/// The suites shipped with serverlab, embedded so they work from any folder.
pub const SHIPPED: &[(&str, &str)] = &[
    ("quick", include_str!("../../suites/quick.toml")),
    ("full", include_str!("../../suites/full.toml")),
    ("state", include_str!("../../suites/state.toml")),
    ("cluster", include_str!("../../suites/cluster.toml")),
    ("migration", include_str!("../../suites/migration.toml")),
];

/// A checked suite, ready to run.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Name used for the results folder (`results/<name>-<timestamp>`).
    pub name: String,
    /// One line for people.
    pub description: String,
    /// The TOML text it was read from (kept with the results).
    pub source: String,
    /// Who competes.
    pub contestants: Vec<Contestant>,
    /// What the clients ask for.
    pub workloads: Vec<Workload>,
    /// How hard they ask.
    pub loads: Vec<LoadLevel>,
    /// Named sandbox limits; at least one (`none` when the file has none).
    pub limits: Vec<(String, Limits)>,
    /// State modes (`serve --state`); `[None]` when the file names none.
    pub states: Vec<Option<StateMode>>,
    /// Each run is repeated this many times.
    pub repetitions: u32,
    /// Load before measuring, not recorded.
    pub warmup: Duration,
    /// How long each measurement lasts (each step of an `auto` load).
    pub duration: Duration,
    /// The latency objective that defines "sustainable".
    pub objective: Objective,
    /// Run without limits when the sandbox cannot enforce them.
    pub allow_unlimited: bool,
    /// `serve --workers` for built-in architectures; default: their own.
    pub workers: Option<usize>,
    /// Load-generator threads; default: one per generator CPU.
    pub generator_threads: Option<usize>,
    /// CPUs for the server and for the generator; default: split the host.
    pub placement: Option<Placement>,
    /// Extra `serverlab serve` arguments per built-in architecture.
    pub server_args: std::collections::BTreeMap<String, Vec<String>>,
    /// Drop the page cache before each run (root), so that file workloads
    /// start cold.
    pub drop_caches: bool,
    /// How open-loop requests are spaced (`load.arrivals`): evenly
    /// (wrk2's schedule) or as a Poisson process.
    pub arrivals: loadgen::Arrivals,
    /// Replicas behind a dispatcher instead of one server (`[cluster]`).
    pub cluster: Option<cluster::Cluster>,
    /// Findings the suite expects (`[[claim]]`), checked against results.
    pub claims: Vec<crate::claims::Claim>,
    /// `[fast]`: the duration and warmup of a fast run (`lab run --fast`).
    pub fast: Option<(Duration, Duration)>,
}

/// CPUs (server's, generator's).
pub type Placement = (Vec<usize>, Vec<usize>);

/// A server under test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Contestant {
    /// One of `servers::arch::ALL`, started as `serverlab serve --arch NAME`.
    Builtin {
        /// The architecture's name, or a variant of it with its own worker
        /// count, `ARCH:WORKERS` (`thread-pool:64`).
        name: String,
    },
    /// Any server started from a command template.
    External(External),
}

impl Contestant {
    /// The name runs and reports use.
    pub fn name(&self) -> &str {
        match self {
            Contestant::Builtin { name } => name,
            Contestant::External(e) => &e.name,
        }
    }

    /// The built-in architecture it runs (`None` for an external server).
    pub fn arch(&self) -> Option<&str> {
        match self {
            Contestant::Builtin { name } => Some(name.split(':').next().unwrap_or(name)),
            Contestant::External(_) => None,
        }
    }

    /// A variant's own worker count (`thread-pool:64` → 64).
    pub fn workers(&self) -> Option<usize> {
        match self {
            Contestant::Builtin { name } => name.split_once(':')?.1.parse().ok(),
            Contestant::External(_) => None,
        }
    }
}

/// An external server such as nginx, run under the same harness.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct External {
    /// Its name in results.
    pub name: String,
    /// Shell command; `{port}`, `{addr}`, `{docroot}`, `{config}`, `{dir}`
    /// and `{serverlab}` (this program) are replaced. It must stay in the
    /// foreground.
    pub command: String,
    /// A configuration file written (with the same placeholders) to
    /// `{config}` before the command starts.
    pub config: Option<String>,
    /// Ready when `GET ready` answers 200 ...
    pub ready: String,
    /// ... within this long.
    pub ready_timeout: Duration,
    /// The workloads it can serve (empty: all).
    pub workloads: Vec<String>,
}

/// What the clients request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Workload {
    /// Short name used in run keys.
    pub name: String,
    /// The request path (and query).
    pub path: String,
    /// Reuse connections (false: `Connection: close`, one request each).
    pub keep_alive: bool,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Weighted request paths instead of `path` alone (`mix = "/a=8,/b=2"`;
    /// with `files`, one entry per generated file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mix: Vec<loadgen::MixEntry>,
    /// A data set generated into the docroot before each run, requested
    /// uniformly at random as `{path}f00000`, `{path}f00001`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Files>,
    /// Clients that run beside the measured ones for the whole run (every
    /// step of a capacity search): they load or hold the server; only
    /// their counts are reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<Background>,
}

/// A background group: what it does to the server while the measured
/// clients probe it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Background {
    /// Keep-alive clients that send one request, read its answer and then
    /// say nothing: each holds a worker in the designs that give a
    /// connection a worker. One cut off by the server is replaced.
    Idle { connections: u32 },
    /// Clients that send a request's header lines one at a time, one per
    /// `interval`, never finishing it (slowloris). One cut off (408) is
    /// replaced.
    Slow {
        connections: u32,
        interval: Duration,
    },
    /// A second load generator on `path`: closed loop, or open loop at
    /// `rate` requests per second.
    Load {
        connections: u32,
        path: String,
        rate: Option<f64>,
    },
}

impl Background {
    /// "8 idle", "500 slow", "4 on /work?cpu=1ms at 200 req/s".
    pub fn describe(&self) -> String {
        match self {
            Background::Idle { connections } => format!("{connections} idle"),
            Background::Slow { connections, .. } => format!("{connections} slow"),
            Background::Load {
                connections,
                path,
                rate,
            } => match rate {
                Some(r) => format!("{connections} on {path} at {r} req/s"),
                None => format!("{connections} on {path}"),
            },
        }
    }
}

/// A generated data set: `count` files of `size` bytes each.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Files {
    pub count: u32,
    pub size: u64,
}

impl Files {
    /// The name of file `i`.
    pub fn name(i: u32) -> String {
        format!("f{i:05}")
    }
}

/// How hard the clients ask.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LoadLevel {
    /// Closed loop: this many connections, each as fast as answers come.
    Closed {
        /// Connections.
        connections: u32,
    },
    /// Open loop: a fixed rate of requests per second (coordinated omission
    /// corrected) over `connections` connections.
    Open {
        /// Requests per second.
        rate: f64,
        /// Connections carrying them.
        connections: u32,
    },
    /// The capacity search (see `runner::search`): open-loop rates stepped
    /// up geometrically until one is unsustainable, then the bracket
    /// between the last sustainable and the first unsustainable rate
    /// narrowed until it is within `resolution`.
    Auto {
        /// First rate.
        start: f64,
        /// Each ramp step multiplies the rate by this.
        factor: f64,
        /// Stop here even if the objective still holds.
        max: f64,
        /// Stop when the bracket's ends are within this share (0.05: 5 %).
        #[serde(default = "default_resolution")]
        resolution: f64,
        /// A step that failed although it kept up with its offer (on
        /// latency, errors or a starved connection: what one noisy moment
        /// can cause) is measured once more before the search believes
        /// it; a rate that passes either time counts as sustainable.
        #[serde(default)]
        confirm: bool,
        /// Connections carrying the requests.
        connections: u32,
    },
}

/// Connections that carry open-loop requests unless the suite says.
pub const DEFAULT_OPEN_CONNECTIONS: u32 = 32;

/// The default resolution of the capacity search: 5 %.
pub fn default_resolution() -> f64 {
    0.05
}

impl LoadLevel {
    /// A short label for keys and plots: `c64`, `r2000`, `auto`.
    /// Open-loop levels name their connection count unless it is the
    /// default ([`DEFAULT_OPEN_CONNECTIONS`]), so keys of suites with one
    /// count stay as they were.
    pub fn label(&self) -> String {
        let over = |c: u32| {
            if c == DEFAULT_OPEN_CONNECTIONS {
                String::new()
            } else {
                format!("@{c}")
            }
        };
        match self {
            LoadLevel::Closed { connections } => format!("c{connections}"),
            LoadLevel::Open { rate, connections } => format!("r{rate}{}", over(*connections)),
            LoadLevel::Auto { connections, .. } => format!("auto{}", over(*connections)),
        }
    }
}

/// The latency objective: the `percentile` latency must stay at or below
/// `latency` (and no more than 1 % of requests may fail).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Objective {
    /// For example 99.0.
    pub percentile: f64,
    /// For example 10 ms.
    pub latency: Duration,
}

impl Objective {
    /// `p99 <= 10ms`.
    pub fn describe(&self) -> String {
        format!("p{} ≤ {:?}", self.percentile, self.latency)
    }
}

/// One cell of the matrix: everything needed to perform one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSpec {
    /// The server.
    pub contestant: Contestant,
    /// The requests.
    pub workload: Workload,
    /// The load.
    pub load: LoadLevel,
    /// Name of the limits entry.
    pub limits_name: String,
    /// The limits themselves.
    pub limits: Limits,
    /// State mode passed as `serve --state`, if any.
    pub state: Option<StateMode>,
    /// 1-based repetition number.
    pub repetition: u32,
    /// Cluster suites: the replicas, policy and mode of this run (the
    /// contestant is the replicas' architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<cluster::Topology>,
}

impl RunSpec {
    /// The key that names this run's files; equal keys are the same run.
    pub fn key(&self) -> String {
        format!(
            "{}__{}__{}__{}__{}__rep{}",
            self.subject(),
            self.workload.name,
            self.load.label(),
            self.limits_name,
            self.state.map_or("default", StateMode::as_str),
            self.repetition
        )
    }

    /// What runs are compared as: the contestant, or in a cluster suite
    /// the contestant with its topology (`event-loop-x3-round-robin-http`).
    pub fn subject(&self) -> String {
        match &self.topology {
            Some(t) => format!("{}-{}", self.contestant.name(), t.label()),
            None => self.contestant.name().to_string(),
        }
    }

    /// The key without the repetition: runs that differ only by repetition.
    pub fn group_key(&self) -> String {
        let key = self.key();
        key.rsplit_once("__rep")
            .map_or(key.clone(), |(k, _)| k.to_string())
    }
}

/// What `--workers` is given in a server's arguments (`--workers N` or
/// `--workers=N`; empty when nothing follows it), if it is there.
pub(crate) fn workers_arg(args: &[String]) -> Option<&str> {
    args.iter()
        .enumerate()
        .find_map(|(at, a)| match a.strip_prefix("--workers") {
            Some("") => Some(args.get(at + 1).map_or("", String::as_str)),
            Some(v) => v.strip_prefix('='),
            None => None,
        })
}

impl Suite {
    /// Parses suite text; `file` is what errors call it.
    pub fn parse(file: &str, text: &str) -> Result<Suite, SuiteError> {
        parse::parse(file, text)
    }

    /// How many workers a built-in contestant's server starts with, when
    /// the suite says: its `ARCH:N`, the suite's `workers`, or `--workers`
    /// in its `server_args`; 1 for the iterative server (bounded, not
    /// sized: one thread); `None` for a thread or process per connection.
    pub fn workers_of(&self, c: &Contestant) -> Option<usize> {
        let arch = servers::arch::find(c.arch()?).ok()?;
        if !arch.sized {
            return arch.bounded.then_some(1);
        }
        let in_args = || workers_arg(self.server_args.get(arch.name)?)?.parse().ok();
        c.workers().or(self.workers).or_else(in_args)
    }

    /// The connection limit of the replicas of a cluster run (`--replica
    /// ADDR,maxconn=N`), with `"workers"` resolved for its contestant.
    pub fn maxconn_of(&self, spec: &RunSpec) -> Option<u32> {
        let limit = spec.topology.as_ref()?.maxconn?;
        let bounded = spec
            .contestant
            .arch()
            .and_then(|a| servers::arch::find(a).ok())
            .is_some_and(|a| a.bounded);
        limit.resolve(bounded, self.workers_of(&spec.contestant))
    }

    /// Loads a suite from a path, or a shipped suite by name (`quick`).
    pub fn load(name_or_path: &str) -> Result<Suite, SuiteError> {
        let path = Path::new(name_or_path);
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
                file: name_or_path.to_string(),
                source,
            })?;
            return Suite::parse(name_or_path, &text);
        }
        match SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, text)) => Suite::parse(&format!("bench/suites/{n}.toml"), text),
            None => Err(SuiteError::NotFound(
                name_or_path.to_string(),
                SHIPPED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// The suite shortened for a fast run: one repetition, and the
    /// `[fast]` duration and warmup (default: at most 1 s and 300 ms).
    /// Its name says so, so that its results are never taken for a full
    /// run's.
    pub fn fast(mut self) -> Suite {
        let (duration, warmup) = self.fast.unwrap_or((
            self.duration.min(Duration::from_secs(1)),
            self.warmup.min(Duration::from_millis(300)),
        ));
        self.duration = duration;
        self.warmup = warmup;
        self.repetitions = 1;
        self.name = format!("{}-fast", self.name);
        self
    }

    /// Every run of the matrix, in the order they are performed:
    /// repetitions outermost, so an interrupted suite has whole rounds.
    pub fn runs(&self) -> Vec<RunSpec> {
        let topologies: Vec<Option<cluster::Topology>> = match &self.cluster {
            Some(c) => c.cells().into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut runs = Vec::new();
        for repetition in 1..=self.repetitions {
            for workload in &self.workloads {
                for (limits_name, limits) in &self.limits {
                    for state in &self.states {
                        for load in &self.loads {
                            for topology in &topologies {
                                for contestant in &self.contestants {
                                    if let Contestant::External(e) = contestant {
                                        if !e.workloads.is_empty()
                                            && !e.workloads.contains(&workload.name)
                                        {
                                            continue;
                                        }
                                    }
                                    runs.push(RunSpec {
                                        contestant: contestant.clone(),
                                        workload: workload.clone(),
                                        load: *load,
                                        limits_name: limits_name.clone(),
                                        limits: limits.clone(),
                                        state: *state,
                                        repetition,
                                        topology: topology.clone(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests;
