//! The suite runner: every run of the matrix, one after the other, each
//! written to the results folder the moment it finishes.
//!
//! For each run: start the server in its sandbox on its cpuset, wait until
//! it answers, warm up and measure with the in-process load generator
//! (pinned to CPUs disjoint from the server's), read the server's `/stats`
//! and the container's accounting, stop it and clean up. A server that
//! fails to start, crashes or is OOM-killed is recorded as such and the
//! suite goes on. A stop request (Ctrl-C) discards the run in progress and
//! keeps every finished one; `--resume` completes the folder later.

pub mod background;
pub mod cluster;
mod eta;
mod measure;
pub mod placement;
mod probe;
pub use probe::free_port;
pub mod search;
mod server;
pub mod steal;

use crate::results::{Env, Placement, RunRecord, Status, Store, StoreError};
use crate::suite::{Contestant, RunSpec, Suite};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent folder of new result folders (`results`).
    pub out: PathBuf,
    /// Complete this folder instead of making a new one.
    pub resume: Option<PathBuf>,
    /// Only runs whose key contains this text.
    pub only: Option<String>,
    /// Run without limits where the sandbox cannot enforce them.
    pub allow_unlimited: bool,
    /// The `serverlab` executable (for `serve`).
    pub exe: PathBuf,
    /// Set to stop: the run in progress is discarded.
    pub stop: Arc<AtomicBool>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a suite run did.
#[derive(Debug)]
pub struct Outcome {
    /// The results folder.
    pub dir: PathBuf,
    /// Runs performed now (written).
    pub done: usize,
    /// Runs skipped because the folder already had them.
    pub skipped: usize,
    /// Runs still to do (after an interruption).
    pub remaining: usize,
    /// Whether a stop request ended it early.
    pub interrupted: bool,
}

/// Why a suite could not run at all (single runs never fail the suite).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The results folder could not be written or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Resuming a folder made by another suite.
    #[error("{0}")]
    Mismatch(String),
    /// The sandbox cannot enforce limits and unlimited runs are not allowed.
    #[error("{0}")]
    NoSandbox(String),
    /// The suite asks for something this process may not do.
    #[error("{0}")]
    NotPermitted(String),
    /// `--only` matched no run of the suite.
    #[error("--only {pattern:?} matches no run of suite {suite:?}; run keys look like {example}")]
    NoMatch {
        /// The pattern.
        pattern: String,
        /// The suite's name.
        suite: String,
        /// One key of the suite, to show the form.
        example: String,
    },
}

/// Runs `suite` as `opts` say.
pub fn run_suite(suite: &Suite, opts: &Options) -> Result<Outcome, RunnerError> {
    // A pattern that selects nothing is a mistake: say so before anything
    // is written.
    let all: Vec<RunSpec> = suite
        .runs()
        .into_iter()
        .filter(|r| {
            opts.only
                .as_ref()
                .map_or(true, |p| r.key().contains(p.as_str()))
        })
        .collect();
    if let (Some(pattern), true) = (&opts.only, all.is_empty()) {
        return Err(RunnerError::NoMatch {
            pattern: pattern.clone(),
            suite: suite.name.clone(),
            example: suite.runs().first().map(RunSpec::key).unwrap_or_default(),
        });
    }
    // Cache dropping needs root: refuse before anything runs, not at the
    // first run.
    if suite.drop_caches {
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/sys/vm/drop_caches");
        if let Err(e) = writable {
            return Err(RunnerError::NotPermitted(format!(
                "drop_caches = true needs root (writing /proc/sys/vm/drop_caches: {e}); run as root or drop the setting"
            )));
        }
    }
    // Refuse before anything is written when limits cannot be enforced
    // and unlimited runs are not allowed.
    let unlimited = server::sandbox_unavailable();
    if let Some(why) = &unlimited {
        if !(opts.allow_unlimited || suite.allow_unlimited) {
            return Err(RunnerError::NoSandbox(format!(
                "the sandbox cannot enforce limits here ({why}); run as root with cgroups, or allow unlimited runs (--allow-unlimited or allow_unlimited = true in the suite), which are then marked UNLIMITED"
            )));
        }
        eprintln!("serverlab: UNLIMITED: {why}; runs go without limits and are marked UNLIMITED");
    }

    let store = match &opts.resume {
        Some(dir) => {
            let store = Store::open(dir)?;
            let old = std::fs::read_to_string(dir.join("suite.toml")).unwrap_or_default();
            if !old.is_empty() && old != suite.source {
                return Err(RunnerError::Mismatch(format!(
                    "{} was made by a different suite file; resume it with the suite.toml it holds: serverlab bench {} --resume {}",
                    dir.display(),
                    dir.join("suite.toml").display(),
                    dir.display()
                )));
            }
            store.remove_temp_files();
            store
        }
        None => {
            let store = Store::create(&opts.out, &suite.name)?;
            store.write_file("suite.toml", suite.source.as_bytes())?;
            store.write_env(&Env::capture())?;
            store
        }
    };
    let env = store.env()?;
    let finished = store.finished_keys()?;
    let todo: Vec<&RunSpec> = all
        .iter()
        .filter(|r| !finished.contains(&r.key()))
        .collect();
    let skipped = all.len() - todo.len();

    let (server_cpus, generator_cpus) = suite
        .placement
        .clone()
        .unwrap_or_else(placement::default_split);
    let placement = Placement {
        server_cpus: server_cpus.clone(),
        generator_cpus: generator_cpus.clone(),
    };
    // The generator's threads are created by this thread, so pinning it
    // pins them. (The server is pinned by its cpuset and its own affinity.)
    if let Err(e) = placement::pin_current_thread(&generator_cpus) {
        tracing::warn!("cannot pin the load generator to CPUs {generator_cpus:?}: {e}");
    }
    let threads = suite
        .generator_threads
        .unwrap_or(generator_cpus.len().max(1));
    let plans: Vec<Duration> = todo.iter().map(|s| eta::planned(suite, s)).collect();
    let progress = Progress::start(opts.progress, plans.iter().sum());
    let mut done = 0;
    let mut interrupted = false;
    for (spec, plan) in todo.iter().zip(&plans) {
        if opts.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        progress.begin(
            *plan,
            format!("{}/{} runs, {}", done, todo.len(), spec.key()),
        );
        let ctx = server::Context {
            suite,
            exe: &opts.exe,
            server_cpus: &server_cpus,
            generator_cpus: &generator_cpus,
            threads,
            stop: &opts.stop,
            unlimited: unlimited.is_some(),
        };
        let started = SystemTime::now();
        let t0 = Instant::now();
        let Some(outcome) = server::perform(&ctx, spec) else {
            interrupted = true;
            break;
        };
        let record = RunRecord {
            schema: 1,
            key: spec.key(),
            suite: suite.name.clone(),
            spec: (*spec).clone(),
            status: outcome.status,
            reason: outcome.reason,
            unlimited: outcome.unlimited,
            objective: suite.objective,
            placement: placement.clone(),
            started: crate::results::rfc3339(started),
            wall_s: t0.elapsed().as_secs_f64(),
            metrics: outcome.metrics,
            auto_steps: outcome.steps,
            bracket: outcome.bracket,
            notes: outcome.notes,
            loadgen: outcome.loadgen,
            accounting: outcome.accounting,
            server_stats: outcome.server_stats,
            background: outcome.background,
            cluster: outcome.cluster,
            histogram: outcome.histogram,
            env: env.clone(),
        };
        store.write_run(&record, outcome.hgrm.as_deref())?;
        if record.status != Status::Ok {
            progress.bar.println(format!(
                "{}: {} ({})",
                record.key,
                record.status.as_str(),
                record.reason.as_deref().unwrap_or("")
            ));
        }
        done += 1;
        progress.end();
    }
    drop(progress);
    let runs = store.runs()?;
    store.write_summary(&runs)?;
    Ok(Outcome {
        dir: store.dir().to_path_buf(),
        done,
        skipped,
        remaining: todo.len() - done,
        interrupted,
    })
}

/// The progress bar, counting planned milliseconds: a ticker thread moves
/// it through the run in progress as time passes (never past that run's
/// plan), so the estimate of what is left ([`eta::eta`]) moves smoothly.
struct Progress {
    bar: ProgressBar,
    /// Planned ms of finished runs, the current run's plan, and its start.
    current: Arc<Mutex<(u64, u64, Instant)>>,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(show: bool, total: Duration) -> Progress {
        let bar = if show {
            ProgressBar::new(total.as_millis() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} ETA {left} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "left",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let left = eta::eta(
                        Duration::from_millis(state.len().unwrap_or(0)),
                        Duration::from_millis(state.pos()),
                        state.elapsed(),
                    );
                    let _ = write!(w, "{}", indicatif::HumanDuration(left));
                },
            ),
        );
        let current = Arc::new(Mutex::new((0, 0, Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = show.then(|| {
            let (bar, current, stop) = (bar.clone(), current.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (base, plan, since) = *current.lock().unwrap_or_else(|p| p.into_inner());
                    let into = (since.elapsed().as_millis() as u64).min(plan);
                    bar.set_position(base + into);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        });
        Progress {
            bar,
            current,
            stop,
            ticker,
        }
    }

    /// A run planned to take `plan` starts.
    fn begin(&self, plan: Duration, message: String) {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *c = (c.0, plan.as_millis() as u64, Instant::now());
        self.bar.set_message(message);
    }

    /// The run ended: its whole plan counts as done.
    fn end(&self) {
        let mut c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *c = (c.0 + c.1, 0, Instant::now());
        self.bar.set_position(c.0);
    }
}

impl Drop for Progress {
    /// Stops the ticker (on every way out of the suite) and clears the bar.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// The contestants of a suite whose external binary is missing, with why.
pub fn missing_externals(suite: &Suite) -> Vec<(String, String)> {
    suite
        .contestants
        .iter()
        .filter_map(|c| match c {
            Contestant::External(e) => {
                server::missing_binary(&e.command).map(|why| (e.name.clone(), why))
            }
            Contestant::Builtin { .. } => None,
        })
        .collect()
}
