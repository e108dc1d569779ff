//! Cluster runs: replicas of the contestant, each in a container of its
//! own with the run's limits, behind `serverlab dispatch` in another
//! container, so that every component's CPU is accounted apart. The
//! suite's events (kill a replica, restart it, make it slow) are applied
//! during the measured window while the dispatcher's status is polled, and
//! the run records what the cluster did: each replica's share of the
//! answers, the dispatcher's and the replicas' CPU per request, every
//! health change, how long each failure took to be noticed, each
//! migration's report with the latency clients saw around it, and the
//! errors clients saw. State errors of the counter flow are results here, not a
//! failed run: losing sessions is what some topologies do.

use super::server::{self, ContainerExt, Context, Outcome, RunDir};
use super::{measure, probe};
use crate::results::Status;
use crate::suite::cluster::{policy_name, Action, Event, Front, Mode, Topology};
use crate::suite::RunSpec;
use dispatch::migrate::{Plan, Report as MigrationReport};
use sandbox::{Container, Limits, Net, Sandbox};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the dispatcher's status is read during a run.
const POLL: Duration = Duration::from_millis(50);
/// How long replicas and the dispatcher may take to answer at start.
const READY: Duration = Duration::from_secs(10);
/// How long a migration may take before its run gives up waiting.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// What a cluster run records beside what its clients saw.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ClusterResult {
    /// Each replica, in order.
    pub replicas: Vec<ReplicaResult>,
    /// The dispatcher's CPU over the measured window, seconds.
    pub dispatcher_cpu_s: Option<f64>,
    /// The dispatcher's CPU per answered request, µs.
    pub dispatcher_us_per_request: Option<f64>,
    /// All replicas' CPU per answered request, µs.
    pub replicas_us_per_request: Option<f64>,
    /// The suite's events as they were applied.
    pub events: Vec<EventResult>,
    /// Every change of a replica's state in the dispatcher's status
    /// (read every 50 ms), from the start of the measured window.
    pub health: Vec<HealthChange>,
    /// Whether the dispatcher's rotation could be watched (not for an
    /// external dispatcher): without it, reactions to events are unknown.
    #[serde(default)]
    pub watched: bool,
    /// Requests whose session chain broke (counter flow: a lost session, a
    /// wrong value).
    pub state_errors: u64,
    /// Requests that failed otherwise (connects, resets, timeouts, 4xx and
    /// 5xx answers).
    pub other_errors: u64,
    /// Each migrate event's outcome, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationResult>,
    /// The spread over clients of each client's longest wait (a client
    /// held by a migration's pause waits at least that long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_longest: Option<loadgen::report::ClientLongest>,
    /// The most requests (http) or clients (splice) seen waiting in the
    /// dispatcher for a connection to a replica at its `maxconn` (the
    /// status read every 50 ms during the window; `None` when not watched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_peak: Option<u64>,
}

/// A migration as the dispatcher reported it and as clients saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MigrationResult {
    /// When it was asked for, seconds into the window.
    pub at_s: f64,
    /// The dispatcher's report (`None`: it could not be asked, or refused).
    pub report: Option<MigrationReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The median of the intervals' p99 before the migration, ms.
    pub p99_before_ms: Option<f64>,
    /// The highest interval p99 while it ran, ms.
    pub p99_during_ms: Option<f64>,
    /// Failed requests in the intervals it overlapped.
    pub errors_during: u64,
    /// It ended after the measured window, when the clients had stopped:
    /// its last part ran without load (pre-copy's rounds then shrink
    /// because nobody writes), so it says little about migrating under
    /// load.
    #[serde(default)]
    pub after_window: bool,
}

/// One replica's part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ReplicaResult {
    /// 1-based, as events name it.
    pub replica: u32,
    /// Answers it sent in the measured window (its own counters, summed
    /// over its restarts).
    pub requests: Option<u64>,
    /// Its share of all replicas' answers.
    pub share: Option<f64>,
    /// Its CPU over the window, seconds.
    pub cpu_s: Option<f64>,
    /// How often it was started (1 + restarts).
    pub starts: u32,
    /// Times the dispatcher took it out (its status at the end).
    pub ejections: u64,
}

/// An event and what followed it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventResult {
    pub event: Event,
    /// When it was applied, seconds into the window.
    pub at_s: f64,
    /// Why it could not be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Kill or slow: how long until the dispatcher took the replica out
    /// (`None`: it never did).
    pub out_after_s: Option<f64>,
    /// Restart: how long until the dispatcher had it back.
    pub back_after_s: Option<f64>,
}

/// A replica going out of or back into the dispatcher's rotation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HealthChange {
    /// Seconds into the window.
    pub t_s: f64,
    pub replica: u32,
    pub up: bool,
}

/// An event as applied: when (seconds into the window), and why it could
/// not be, if it could not.
type Applied = (Event, f64, Option<String>);

/// One start of a replica.
struct Life {
    container: Container,
    stats_file: PathBuf,
    stats: Option<servers::stats::Stats>,
}

impl Life {
    /// Answers sent so far (attaching to the counters once they exist).
    fn requests(&mut self) -> Option<u64> {
        if self.stats.is_none() {
            self.stats = servers::stats::Stats::attach(&self.stats_file).ok();
        }
        Some(self.stats.as_ref()?.snapshot().requests)
    }
}

struct Replica {
    addr: SocketAddr,
    /// Its control address (`serve --control`): migrations and idle
    /// sessions reach it there even when its workers are all held.
    control: SocketAddr,
    handoff: Option<PathBuf>,
    lives: Vec<Life>,
}

/// Every component's counters at one moment: per replica, per life, (CPU
/// µs, answers); and the dispatcher's CPU µs.
#[derive(Debug, Clone, Default)]
struct Reading {
    replicas: Vec<Vec<(Option<u64>, Option<u64>)>>,
    dispatcher_us: Option<u64>,
}

/// A running cluster.
struct Cluster<'a> {
    ctx: &'a Context<'a>,
    spec: &'a RunSpec,
    dir: &'a RunDir,
    limits: Limits,
    cpus: Vec<usize>,
    /// The shared token key of stateless replicas.
    key: String,
    replicas: Mutex<Vec<Replica>>,
    dispatcher: Mutex<Option<Container>>,
    listen: SocketAddr,
    /// The built-in dispatcher's status address.
    status: Option<SocketAddr>,
    /// Migrations asked for, each waiting on a thread of its own for the
    /// dispatcher's report (the watcher must go on meanwhile).
    migrations: Mutex<Vec<std::thread::JoinHandle<Result<MigrationReport, String>>>>,
}

impl Cluster<'_> {
    fn spawn(&self, hint: &str, limits: &Limits, cmd: Command) -> Result<Container, String> {
        let spawned = if self.ctx.unlimited {
            Sandbox::spawn_unlimited(hint, Net::Host, cmd)
        } else {
            Sandbox::spawn(hint, limits, Net::Host, cmd)
        };
        spawned.map_err(|e| format!("cannot start {hint}: {e}"))
    }

    /// Starts replica `i` (0-based) once more.
    fn start_replica(&self, i: usize, r: &mut Replica) -> Result<(), String> {
        let n = r.lives.len();
        let stats_file = self.dir.in_memory(&format!("stats-r{}-{n}", i + 1));
        let mut cmd = server::serve_command(self.ctx, self.spec, r.addr, self.dir, &stats_file);
        if let Some(path) = &r.handoff {
            cmd.arg("--handoff").arg(path);
        }
        if self.spec.state == Some(servers::protocol::StateMode::Stateless) {
            cmd.args(["--state-key", &self.key]);
        }
        // Its sessions name it, so that affinity can send them back.
        cmd.args(["--route", &route(i)]);
        cmd.args(["--control", &r.control.to_string()]);
        server::log_and_pin(&mut cmd, &self.dir.log(), &self.cpus)?;
        let hint = format!("{}-r{}", self.spec.contestant.arch().unwrap_or("r"), i + 1);
        let container = self.spawn(&hint, &self.limits, cmd)?;
        r.lives.push(Life {
            container,
            stats_file,
            stats: None,
        });
        Ok(())
    }

    /// The dispatcher's command, the path to ask through it when it is
    /// ready, and how long it may take.
    fn dispatcher_command(
        &self,
        topology: &Topology,
        replicas: &[Replica],
    ) -> Result<(Command, String, Duration), String> {
        let (policy, mode) = match &topology.front {
            Front::Builtin { policy, mode } => (*policy, *mode),
            Front::External { name } => {
                let e = self
                    .ctx
                    .suite
                    .cluster
                    .as_ref()
                    .and_then(|c| c.external(name))
                    .ok_or_else(|| format!("no external dispatcher {name:?}"))?;
                let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
                let filled = crate::suite::External {
                    command: e.fill_replicas(&e.external.command, &addrs),
                    config: e
                        .external
                        .config
                        .as_ref()
                        .map(|c| e.fill_replicas(c, &addrs)),
                    ..e.external.clone()
                };
                let cmd = server::external_command(&filled, self.listen, self.dir, self.ctx.exe)?;
                return Ok((cmd, filled.ready, filled.ready_timeout));
            }
        };
        let mut cmd = Command::new(self.ctx.exe);
        cmd.args(["dispatch", "--listen", &self.listen.to_string()]);
        if let Some(status) = self.status {
            cmd.args(["--status", &status.to_string()]);
        }
        cmd.args(["--mode", mode.as_str()]);
        cmd.args(["--policy", policy_name(policy)]);
        let c = self.ctx.suite.cluster.as_ref();
        let interval = c.map_or(Duration::from_millis(200), |c| c.check_interval);
        cmd.args(["--check-interval", &format!("{}ms", interval.as_millis())]);
        cmd.args(["--rise", &c.map_or(2, |c| c.rise).to_string()]);
        cmd.args(["--fall", &c.map_or(2, |c| c.fall).to_string()]);
        let clients = connections(self.spec) + 64;
        cmd.args(["--max-connections", &clients.max(1024).to_string()]);
        for (i, r) in replicas.iter().enumerate() {
            let handoff = r
                .handoff
                .as_ref()
                .map_or(String::new(), |p| format!("@{}", p.display()));
            let maxconn = self
                .ctx
                .suite
                .maxconn_of(self.spec)
                .map_or(String::new(), |n| format!(",maxconn={n}"));
            let replica = format!(
                "{}{handoff},route={},control={}{maxconn}",
                r.addr,
                route(i),
                r.control
            );
            cmd.args(["--replica", &replica]);
        }
        Ok((cmd, "/health".to_string(), READY))
    }

    /// Every component's counters now.
    fn read(&self) -> Reading {
        let mut replicas = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        let per_replica = replicas
            .iter_mut()
            .map(|r| {
                r.lives
                    .iter_mut()
                    .map(|l| (cpu_us(&l.container), l.requests()))
                    .collect()
            })
            .collect();
        let dispatcher = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
        Reading {
            replicas: per_replica,
            dispatcher_us: dispatcher.as_ref().and_then(cpu_us),
        }
    }

    /// The whole cluster's CPU, seconds (the run's server CPU).
    fn cpu_s(&self) -> Option<f64> {
        let r = self.read();
        let mut total = r.dispatcher_us?;
        for life in r.replicas.iter().flatten() {
            total += life.0?;
        }
        Some(total as f64 / 1e6)
    }

    fn dispatcher_running(&self) -> bool {
        let mut d = self.dispatcher.lock().unwrap_or_else(|p| p.into_inner());
        d.as_mut().is_some_and(|c| c.is_running())
    }

    /// Applies one event; `Err` says why it could not be.
    fn apply(&self, e: &Event) -> Result<(), String> {
        let i = e.replica as usize - 1;
        let mut replicas = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        let r = replicas
            .get_mut(i)
            .ok_or_else(|| format!("there is no replica {}", e.replica))?;
        match e.action {
            Action::Kill => r
                .lives
                .last()
                .ok_or("never started")?
                .container
                .kill()
                .map_err(|err| err.to_string()),
            Action::Restart => self.start_replica(i, r),
            Action::Migrate {
                to,
                method,
                threshold,
                rounds,
                bandwidth,
            } => {
                let status = self
                    .status
                    .ok_or("only the built-in dispatcher migrates sessions")?;
                let method = method.ok_or("no migration method for this run")?;
                let plan = Plan {
                    threshold,
                    max_rounds: rounds,
                    bandwidth,
                    ..Plan::new(i, to as usize - 1, method)
                };
                let waiting = std::thread::Builder::new()
                    .name("migration".into())
                    .spawn(move || dispatch::migrate::request(status, &plan, MIGRATION_TIMEOUT))
                    .map_err(|e| format!("cannot start the migration's thread: {e}"))?;
                self.migrations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(waiting);
                Ok(())
            }
            Action::Slow { cpus } => {
                let life = r.lives.last().ok_or("never started")?;
                let cgroup = life
                    .container
                    .cgroup()
                    .ok_or("this run has no cgroups (UNLIMITED): the quota cannot change")?;
                let period = 100_000;
                cgroup
                    .set_quota(Some((cpus * period as f64).round() as u64), period)
                    .map_err(|err| err.to_string())
            }
        }
    }

    /// Which replicas the dispatcher has in rotation now, and how many
    /// requests wait in its proxy for a connection.
    fn rotation(&self) -> Option<(Vec<bool>, u64)> {
        let status = self.status?;
        let (code, body) = probe::get(status, "/status", Duration::from_millis(200)).ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let replicas = v["replicas"].as_array()?;
        let up = replicas
            .iter()
            .map(|r| r["up"].as_bool())
            .collect::<Option<Vec<bool>>>()?;
        let queued = v["queued"].as_u64().unwrap_or(0)
            + replicas
                .iter()
                .map(|r| r["queued"].as_u64().unwrap_or(0))
                .sum::<u64>();
        Some((up, queued))
    }

    /// Times ejections from the dispatcher's status at the end.
    fn ejections(&self) -> Vec<u64> {
        self.status
            .and_then(|status| probe::get(status, "/status", Duration::from_secs(1)).ok())
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| {
                v["replicas"].as_array().map(|a| {
                    a.iter()
                        .map(|r| r["ejections"].as_u64().unwrap_or(0))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

/// Replica `i`'s route (0-based `i`): `r1`, `r2`, ...
fn route(i: usize) -> String {
    format!("r{}", i + 1)
}

fn cpu_us(c: &Container) -> Option<u64> {
    c.cpu_usage_s().map(|s| (s * 1e6) as u64)
}

/// Client connections of the run's load (for the dispatcher's limit).
fn connections(spec: &RunSpec) -> usize {
    use crate::suite::{Background, LoadLevel};
    let measured = match spec.load {
        LoadLevel::Closed { connections }
        | LoadLevel::Open { connections, .. }
        | LoadLevel::Auto { connections, .. } => connections as usize,
    };
    let background: usize = spec
        .workload
        .background
        .iter()
        .map(|b| match b {
            Background::Idle { connections }
            | Background::Slow { connections, .. }
            | Background::Load { connections, .. } => *connections as usize,
        })
        .sum();
    measured * spec.workload.pipeline.max(1) as usize + background
}

/// Distinct free ports.
fn ports(n: usize) -> std::io::Result<Vec<u16>> {
    let mut out: Vec<u16> = Vec::new();
    while out.len() < n {
        let p = probe::free_port()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Performs one cluster run (see the module doc). `None` when a stop
/// request interrupted it.
pub(super) fn perform(
    ctx: &Context,
    spec: &RunSpec,
    topology: &Topology,
    dir: &RunDir,
) -> Option<Outcome> {
    let fail = |why: String| Some(Outcome::fail(Status::Failed, why));
    let (limits, cpus) = match server::placed_limits(ctx, spec) {
        Ok(l) => l,
        Err(why) => return fail(why),
    };
    let n = topology.replicas as usize;
    let ports = match ports(2 * n + 2) {
        Ok(p) => p,
        Err(e) => return fail(format!("no free port: {e}")),
    };
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let replicas = (0..n)
        .map(|i| Replica {
            addr: at(ports[i]),
            control: at(ports[n + 2 + i]),
            handoff: matches!(
                topology.front,
                Front::Builtin {
                    mode: Mode::Handoff,
                    ..
                }
            )
            .then(|| dir.file(&format!("replica-{}.sock", i + 1))),
            lives: Vec::new(),
        })
        .collect();
    let cluster = Cluster {
        ctx,
        spec,
        dir,
        limits,
        cpus,
        key: format!("{:016x}{:08x}", rand_u64(), std::process::id()),
        replicas: Mutex::new(replicas),
        dispatcher: Mutex::new(None),
        listen: at(ports[n]),
        status: matches!(topology.front, Front::Builtin { .. }).then(|| at(ports[n + 1])),
        migrations: Mutex::new(Vec::new()),
    };
    if let Front::External { name } = &topology.front {
        let missing = ctx
            .suite
            .cluster
            .as_ref()
            .and_then(|c| c.external(name))
            .and_then(|e| server::missing_binary(&e.external.command));
        if let Some(why) = missing {
            return Some(Outcome::fail(Status::Skipped, why));
        }
    }
    if let Err(why) = start(&cluster, topology) {
        return if ctx.stop.load(Ordering::SeqCst) {
            None
        } else {
            fail(format!("{why}{}", dir.log_tail()))
        };
    }
    if let Err(why) = give_idle_sessions(&cluster) {
        stop_all(&cluster);
        return fail(why);
    }
    let events = ctx
        .suite
        .cluster
        .as_ref()
        .map_or_else(Vec::new, |c| c.events_of(topology));
    let events = &events[..];
    let window: OnceLock<Instant> = OnceLock::new();
    let first: Mutex<Option<Reading>> = Mutex::new(None);
    let finished = AtomicBool::new(false);
    let on_window = || {
        *first.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster.read());
        let _ = window.set(Instant::now());
    };
    let background =
        super::background::start(&spec.workload.background, cluster.listen, ctx.threads);
    // The watcher runs on this thread and the measurement on another: a
    // replica restarted by an event must be started by a thread that
    // outlives the run (a container dies with the thread that spawned it,
    // PR_SET_PDEATHSIG). The measuring thread inherits this thread's
    // pinning to the generator's CPUs.
    let (measured, (applied, health, queued_peak)) = std::thread::scope(|s| {
        let measurer = s.spawn(|| {
            let measured = measure::run_level(
                ctx.suite,
                &spec.workload,
                &spec.load,
                &measure::Target {
                    addr: cluster.listen,
                    threads: ctx.threads,
                    state: spec.state,
                    stats: None,
                    on_window: Some(&on_window),
                    cpus: (&cluster.cpus, ctx.generator_cpus),
                    // Its events are timed from the one window.
                    remeasure: false,
                },
                ctx.stop,
                || cluster.dispatcher_running(),
                || cluster.cpu_s(),
            );
            finished.store(true, Ordering::SeqCst);
            measured
        });
        let watched = watch(&cluster, events, &window, &finished);
        let measured = measurer
            .join()
            .unwrap_or_else(|_| Err("the measuring thread panicked".to_string()));
        (measured, watched)
    });
    let last = cluster.read();
    // A migration still running when the window ended is waited for: its
    // report is the run's result as much as the clients' latencies. Not
    // after a stop request: stopping the dispatcher below ends it.
    let waiting =
        std::mem::take(&mut *cluster.migrations.lock().unwrap_or_else(|p| p.into_inner()));
    let reports: Vec<Result<MigrationReport, String>> = waiting
        .into_iter()
        .filter(|_| !ctx.stop.load(Ordering::SeqCst))
        .map(|waiting| {
            waiting
                .join()
                .unwrap_or_else(|_| Err("the migration's thread panicked".to_string()))
        })
        .collect();
    let mut out = Outcome::new(Status::Ok);
    out.unlimited = ctx.unlimited;
    out.background = background.stop();
    let ejections = cluster.ejections();
    let dispatcher_alive = cluster.dispatcher_running();
    let crashed = unscheduled_exits(&cluster, events);
    let accounting = stop_all(&cluster);
    if ctx.stop.load(Ordering::SeqCst) {
        return None;
    }
    let (state_errors, other_errors, client_longest) = match &measured {
        Ok(Some(m)) => (
            m.report.errors.state,
            m.report.errors.requests() - m.report.errors.state,
            m.report.client_longest,
        ),
        _ => (0, 0, None),
    };
    match measured {
        Ok(Some(m)) => server::keep_measured(&mut out, m),
        Ok(None) => return None,
        Err(e) => {
            out.status = Status::Failed;
            out.reason = Some(e);
        }
    }
    let start = first
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_default();
    let answered = out.metrics.as_ref().map_or(0, |m| m.requests);
    let mut result = split(&start, &last, answered, &ejections);
    result.events = follow(&applied, &health);
    result.queued_peak = queued_peak;
    result.health = health;
    result.watched = cluster.status.is_some();
    result.state_errors = state_errors;
    result.other_errors = other_errors;
    result.client_longest = client_longest;
    let timeline = out.metrics.as_ref().map_or(&[][..], |m| &m.timeline[..]);
    let window_s = out.metrics.as_ref().map_or(0.0, |m| m.duration_s);
    result.migrations = migrations(&applied, reports, timeline, window_s);
    for m in &result.migrations {
        if m.after_window {
            out.notes.push(format!(
                "the migration at {:.2} s ended after the measured window ({window_s:.2} s): its last part ran without clients; give the suite a longer duration",
                m.at_s
            ));
        }
        match (&m.report, &m.error) {
            (Some(r), _) if r.outcome == dispatch::migrate::Outcome::Aborted => {
                out.notes.push(format!(
                    "the migration at {:.2} s was aborted: {}",
                    m.at_s,
                    r.why.as_deref().unwrap_or("no reason given")
                ))
            }
            (None, Some(why)) => out.notes.push(format!(
                "the migration at {:.2} s did not run: {why}",
                m.at_s
            )),
            _ => {}
        }
    }
    out.notes.extend(unlimited_bounded_note(ctx.suite, spec));
    if matches!(spec.load, crate::suite::LoadLevel::Auto { .. }) {
        out.notes.push(
            "cluster figures (shares, CPU per request) are those of the capacity search's last step"
                .to_string(),
        );
    }
    out.cluster = Some(result);
    out.notes
        .extend(server::shared_cpu_note(ctx, &cluster.cpus));
    if !dispatcher_alive {
        out.status = Status::Crashed;
        out.reason = Some(format!(
            "the dispatcher exited during the run{}",
            dir.log_tail()
        ));
    } else if !crashed.is_empty() {
        out.status = Status::Crashed;
        out.reason = Some(format!(
            "replica {} exited during the run without a scheduled kill{}",
            crashed.join(", "),
            dir.log_tail()
        ));
    }
    // The cluster's memory: every container's peak, summed (an upper
    // bound: the peaks need not coincide).
    if let Some(m) = &mut out.metrics {
        let sum = |f: fn(&sandbox::Accounting) -> Option<u64>| -> Option<u64> {
            accounting.iter().map(|(_, a)| f(a)).sum()
        };
        m.memory_peak_bytes = sum(|a| a.memory_peak_bytes);
        m.memory_own_bytes = sum(|a| a.memory_own_peak_bytes);
        m.memory_cache_bytes = sum(|a| a.memory_cache_peak_bytes);
        m.throttled_s = sum(|a| a.throttled_us).map(|t| t as f64 / 1e6);
    }
    for (who, acc) in &accounting {
        if acc.oom_kills.unwrap_or(0) > 0 {
            out.status = Status::Oom;
            out.reason = Some(format!(
                "OOM killer killed {} process(es) of {who}",
                acc.oom_kills.unwrap_or(0)
            ));
        }
        if acc.unlimited {
            out.unlimited = true;
        }
    }
    out.accounting = serde_json::to_value(
        accounting
            .iter()
            .map(|(who, a)| (who.clone(), a))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .ok();
    Some(out)
}

/// A note for replicas that serve a fixed number of connections behind
/// the http proxy without a connection limit: the proxy's pooled
/// connections hold their workers, and its requests on further
/// connections wait in their accept queues (results that look like a
/// broken server are the setup's).
fn unlimited_bounded_note(suite: &crate::suite::Suite, spec: &RunSpec) -> Option<String> {
    let topology = spec.topology.as_ref()?;
    let http = matches!(
        topology.front,
        Front::Builtin {
            mode: Mode::Http,
            ..
        }
    );
    let arch = servers::arch::find(spec.contestant.arch()?).ok()?;
    (http && arch.bounded && suite.maxconn_of(spec).is_none()).then(|| {
        format!(
            "{} replicas behind the http proxy without maxconn: each of the proxy's keep-alive connections holds one of a replica's workers, and requests beyond them wait in its accept queue; set [cluster] maxconn to the replicas' workers (\"workers\")",
            arch.name
        )
    })
}

/// Starts the replicas and then the dispatcher, each ready.
fn start(cluster: &Cluster, topology: &Topology) -> Result<(), String> {
    let deadline = Instant::now() + READY;
    let still = || !cluster.ctx.stop.load(Ordering::SeqCst);
    let mut replicas = cluster.replicas.lock().unwrap_or_else(|p| p.into_inner());
    for i in 0..replicas.len() {
        cluster.start_replica(i, &mut replicas[i])?;
    }
    for (i, r) in replicas.iter_mut().enumerate() {
        let life = r.lives.last_mut().ok_or("never started")?;
        probe::wait_ready(r.addr, "/health", deadline, || {
            still() && life.container.is_running()
        })
        .map_err(|why| format!("replica {} {why}", i + 1))?;
    }
    let (mut cmd, ready, ready_timeout) = cluster.dispatcher_command(topology, &replicas)?;
    drop(replicas);
    server::log_and_pin(&mut cmd, &cluster.dir.log(), &cluster.cpus)?;
    let dispatcher = cluster.spawn(
        "dispatcher",
        &Limits {
            cpuset: cluster.limits.cpuset.clone(),
            ..Limits::default()
        },
        cmd,
    )?;
    *cluster.dispatcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(dispatcher);
    // Ready when its status answers (built in) and a request through it
    // is served.
    let deadline = deadline.max(Instant::now() + ready_timeout);
    let status = cluster.status.map(|s| (s, "/status"));
    for (addr, path) in status.into_iter().chain([(cluster.listen, ready.as_str())]) {
        probe::wait_ready(addr, path, deadline, || {
            still() && cluster.dispatcher_running()
        })
        .map_err(|why| format!("dispatcher {why}"))?;
    }
    Ok(())
}

/// The watcher: once the measured window begins, applies each event when
/// it is due and reads the dispatcher's rotation every [`POLL`], until
/// `finished`. Returns the events applied (when, and any error), the
/// health changes, and the most requests seen waiting in the proxy.
fn watch(
    cluster: &Cluster,
    events: &[Event],
    window: &OnceLock<Instant>,
    finished: &AtomicBool,
) -> (Vec<Applied>, Vec<HealthChange>, Option<u64>) {
    let mut applied = Vec::new();
    let mut health = Vec::new();
    let mut queued_peak: Option<u64> = None;
    let mut rotation: Vec<bool> = Vec::new();
    let mut next_poll = Duration::ZERO;
    while !finished.load(Ordering::SeqCst) {
        let Some(t0) = window.get() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let now = t0.elapsed();
        while let Some(e) = events.get(applied.len()).filter(|e| e.at <= now) {
            let error = cluster.apply(e).err();
            applied.push((*e, t0.elapsed().as_secs_f64(), error));
        }
        if now >= next_poll {
            next_poll = now + POLL;
            if let Some((up, queued)) = cluster.rotation() {
                queued_peak = Some(queued_peak.unwrap_or(0).max(queued));
                let t_s = t0.elapsed().as_secs_f64();
                if rotation.is_empty() {
                    rotation = vec![true; up.len()];
                }
                for (i, (&was, &is)) in rotation.iter().zip(&up).enumerate() {
                    if was != is {
                        health.push(HealthChange {
                            t_s,
                            replica: i as u32 + 1,
                            up: is,
                        });
                    }
                }
                rotation = up;
            }
        }
        let due = events
            .get(applied.len())
            .map_or(next_poll, |e| e.at.min(next_poll));
        std::thread::sleep(
            due.saturating_sub(t0.elapsed())
                .min(Duration::from_millis(5)),
        );
    }
    (applied, health, queued_peak)
}

/// Each applied event with how long the dispatcher took to react: a kill
/// or slow-down until the replica was out, a restart until it was back.
fn follow(applied: &[Applied], health: &[HealthChange]) -> Vec<EventResult> {
    applied
        .iter()
        .map(|(event, at_s, error)| {
            let after = |up: bool| {
                health
                    .iter()
                    .find(|h| h.replica == event.replica && h.up == up && h.t_s >= *at_s)
                    .map(|h| h.t_s - at_s)
            };
            let (out_after_s, back_after_s) = match (error, event.action) {
                (Some(_), _) | (None, Action::Migrate { .. }) => (None, None),
                (None, Action::Restart) => (None, after(true)),
                (None, _) => (after(false), None),
            };
            EventResult {
                event: *event,
                at_s: *at_s,
                error: error.clone(),
                out_after_s,
                back_after_s,
            }
        })
        .collect()
}

/// Gives each replica the suite's idle sessions (distinct ids per
/// replica), through its `/migrate/import`.
fn give_idle_sessions(cluster: &Cluster) -> Result<(), String> {
    let n = cluster
        .ctx
        .suite
        .cluster
        .as_ref()
        .map_or(0, |c| c.idle_sessions as usize);
    if n == 0 {
        return Ok(());
    }
    let replicas = cluster.replicas.lock().unwrap_or_else(|p| p.into_inner());
    for (i, r) in replicas.iter().enumerate() {
        let body = servers::state::migrate::idle_sessions(i as u64 + 1, n);
        let answer = servers::probe::post(r.control, "/migrate/import", body.as_bytes(), READY);
        match answer {
            Ok((200, text)) if text.trim() == format!("imported {n}") => {}
            Ok((code, text)) => {
                return Err(format!(
                    "replica {} did not take its {n} idle sessions: {code} {}",
                    i + 1,
                    text.trim()
                ))
            }
            Err(e) => return Err(format!("replica {} idle sessions: {e}", i + 1)),
        }
    }
    Ok(())
}

/// Each applied migrate event with its report, and the latency clients
/// saw around it: the intervals' p99 before it (their median) and while it
/// ran (their highest), and the errors of the intervals it overlapped.
fn migrations(
    applied: &[Applied],
    reports: Vec<Result<MigrationReport, String>>,
    timeline: &[crate::results::TimePoint],
    window_s: f64,
) -> Vec<MigrationResult> {
    let mut reports = reports.into_iter();
    applied
        .iter()
        .filter(|(e, _, _)| matches!(e.action, Action::Migrate { .. }))
        .map(|(_, at_s, error)| {
            // An event that was not applied asked for no report.
            let (report, error) = match error {
                Some(why) => (None, Some(why.clone())),
                None => match reports.next() {
                    Some(Ok(r)) => (Some(r), None),
                    Some(Err(why)) => (None, Some(why)),
                    None => (None, Some("no report".to_string())),
                },
            };
            let ran = report.is_some();
            let end_s = at_s + report.as_ref().map_or(0.0, |r| r.total_s);
            let mut before: Vec<f64> = Vec::new();
            let mut during: Option<f64> = None;
            let mut errors_during = 0;
            let mut start_s = 0.0;
            for p in timeline {
                // Each point covers (start_s, p.t_s].
                if p.t_s <= *at_s {
                    before.push(p.p99_ms);
                } else if start_s <= end_s {
                    during = Some(during.map_or(p.p99_ms, |d: f64| d.max(p.p99_ms)));
                    errors_during += p.errors;
                }
                start_s = p.t_s;
            }
            before.sort_by(f64::total_cmp);
            MigrationResult {
                at_s: *at_s,
                report,
                error,
                p99_before_ms: before.get(before.len() / 2).copied(),
                p99_during_ms: during,
                errors_during,
                after_window: ran && end_s > window_s,
            }
        })
        .collect()
}

/// Per-replica answers and CPU between two readings, and CPU per request.
fn split(start: &Reading, end: &Reading, answered: u64, ejections: &[u64]) -> ClusterResult {
    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a.unwrap_or(0)));
    let mut replicas: Vec<ReplicaResult> = end
        .replicas
        .iter()
        .enumerate()
        .map(|(i, lives)| {
            let before = start.replicas.get(i);
            let mut cpu = Some(0u64);
            let mut requests = Some(0u64);
            for (k, &(c, q)) in lives.iter().enumerate() {
                // A life started during the window began at zero.
                let (c0, q0) = before
                    .and_then(|b| b.get(k))
                    .copied()
                    .unwrap_or((Some(0), Some(0)));
                cpu = cpu.zip(delta(c0, c)).map(|(a, b)| a + b);
                requests = requests.zip(delta(q0, q)).map(|(a, b)| a + b);
            }
            ReplicaResult {
                replica: i as u32 + 1,
                requests,
                share: None,
                cpu_s: cpu.map(|us| us as f64 / 1e6),
                starts: lives.len() as u32,
                ejections: ejections.get(i).copied().unwrap_or(0),
            }
        })
        .collect();
    let total: u64 = replicas.iter().filter_map(|r| r.requests).sum();
    for r in &mut replicas {
        r.share = r
            .requests
            .filter(|_| total > 0)
            .map(|q| q as f64 / total as f64);
    }
    let per_request = |s: f64| (answered > 0).then(|| s * 1e6 / answered as f64);
    let dispatcher_cpu_s = delta(start.dispatcher_us, end.dispatcher_us).map(|us| us as f64 / 1e6);
    let replicas_cpu: Option<f64> = replicas.iter().map(|r| r.cpu_s).sum();
    ClusterResult {
        dispatcher_us_per_request: dispatcher_cpu_s.and_then(per_request),
        replicas_us_per_request: replicas_cpu.and_then(per_request),
        dispatcher_cpu_s,
        replicas,
        ..ClusterResult::default()
    }
}

/// Replicas whose last start ended although no event killed it.
fn unscheduled_exits(cluster: &Cluster, events: &[Event]) -> Vec<String> {
    let mut replicas = cluster.replicas.lock().unwrap_or_else(|p| p.into_inner());
    replicas
        .iter_mut()
        .enumerate()
        .filter(|(i, r)| {
            let killed_last = events
                .iter()
                .filter(|e| e.replica as usize == i + 1)
                .rfind(|e| matches!(e.action, Action::Kill | Action::Restart))
                .is_some_and(|e| e.action == Action::Kill);
            !killed_last && r.lives.last().is_some()
        })
        .filter_map(|(i, r)| {
            let running = r.lives.last_mut()?.container.is_running();
            (!running).then(|| (i + 1).to_string())
        })
        .collect()
}

/// Stops every container; their accounting by name.
fn stop_all(cluster: &Cluster) -> Vec<(String, sandbox::Accounting)> {
    let mut out = Vec::new();
    if let Some(d) = cluster
        .dispatcher
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        if let Ok(a) = d.stop() {
            out.push(("dispatcher".to_string(), a));
        }
    }
    let mut replicas = cluster.replicas.lock().unwrap_or_else(|p| p.into_inner());
    for (i, r) in replicas.iter_mut().enumerate() {
        for (k, life) in r.lives.drain(..).enumerate() {
            if let Ok(a) = life.container.stop() {
                out.push((format!("replica {} start {}", i + 1, k + 1), a));
            }
        }
    }
    out
}

/// A random number for the stateless replicas' shared key.
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    u64::from_ne_bytes(b) ^ now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(replicas: Vec<Vec<(Option<u64>, Option<u64>)>>, dispatcher: u64) -> Reading {
        Reading {
            replicas,
            dispatcher_us: Some(dispatcher),
        }
    }

    /// Shares and CPU count only the window, a start during the window
    /// counts from zero, and CPU per request divides by the answers.
    #[test]
    fn split_counts_the_window_and_restarts() {
        let start = reading(
            vec![
                vec![(Some(1_000), Some(100))],
                vec![(Some(2_000), Some(50))],
            ],
            500,
        );
        let end = reading(
            vec![
                vec![(Some(301_000), Some(700))],
                // Killed at 250 answers, then started again: 50 more.
                vec![(Some(102_000), Some(250)), (Some(50_000), Some(50))],
            ],
            80_500,
        );
        let c = split(&start, &end, 800, &[0, 1]);
        let r = &c.replicas;
        assert_eq!((r[0].requests, r[1].requests), (Some(600), Some(250)));
        assert_eq!((r[0].starts, r[1].starts, r[1].ejections), (1, 2, 1));
        let shares = (r[0].share.unwrap(), r[1].share.unwrap());
        assert!((shares.0 - 600.0 / 850.0).abs() < 1e-9, "{shares:?}");
        assert_eq!((r[0].cpu_s, r[1].cpu_s), (Some(0.3), Some(0.15)));
        assert_eq!(c.dispatcher_cpu_s, Some(0.08));
        assert_eq!(c.dispatcher_us_per_request, Some(100.0));
        let replicas = c.replicas_us_per_request.unwrap();
        assert!((replicas - 562.5).abs() < 1e-9, "{replicas}");
        // Without cgroups there is no CPU, and nothing is made up.
        let none = Reading {
            replicas: vec![vec![(None, Some(10))]],
            dispatcher_us: None,
        };
        let c = split(&none, &none, 10, &[]);
        assert_eq!((c.replicas[0].cpu_s, c.dispatcher_cpu_s), (None, None));
        assert_eq!(c.replicas_us_per_request, None);
    }

    /// A migration's report pairs with its applied event; p99 before is
    /// the median of the intervals ending by its start, p99 during the
    /// highest of those it overlapped, with their errors; an event that was
    /// not applied keeps its reason and takes no report.
    #[test]
    fn migrations_pair_reports_and_read_the_timeline_around_them() {
        use crate::results::TimePoint;
        use dispatch::migrate::{Method, Outcome, Report};
        let migrate = Event {
            at: Duration::from_secs(1),
            replica: 1,
            action: Action::Migrate {
                to: 2,
                method: Some(Method::PreCopy),
                threshold: 50,
                rounds: 8,
                bandwidth: None,
            },
        };
        let applied = vec![
            (migrate, 1.0, None),
            (migrate, 2.5, Some("refused".to_string())),
        ];
        let report = Report {
            method: Method::PreCopy,
            from: "a".into(),
            to: "b".into(),
            outcome: Outcome::Completed,
            why: None,
            total_s: 0.7,
            pause_s: 0.01,
            degraded_s: 0.0,
            rounds: Vec::new(),
            dirty_per_s: Vec::new(),
            sessions: 10,
            bytes: 400,
            on_demand: 0,
            background: 0,
            lost: 0,
            spans: Vec::new(),
        };
        let point = |t_s, p99_ms, errors| TimePoint {
            t_s,
            rps: 100.0,
            p50_ms: 1.0,
            p99_ms,
            errors,
        };
        // Intervals of 0.5 s: the migration (1.0 to 1.7 s) overlaps the
        // ones ending at 1.5 and 2.0 s.
        let timeline = [
            point(0.5, 3.0, 0),
            point(1.0, 5.0, 0),
            point(1.5, 40.0, 2),
            point(2.0, 9.0, 1),
            point(2.5, 80.0, 7),
        ];
        let m = migrations(&applied, vec![Ok(report.clone())], &timeline, 2.5);
        assert_eq!(m.len(), 2);
        assert!(!m[0].after_window);
        let late = migrations(&applied, vec![Ok(report.clone())], &timeline, 1.5);
        assert!(
            late[0].after_window,
            "1.0 + 0.7 s ends after a 1.5 s window"
        );
        assert_eq!(m[0].report.as_ref(), Some(&report));
        assert_eq!(
            (m[0].p99_before_ms, m[0].p99_during_ms),
            (Some(5.0), Some(40.0))
        );
        assert_eq!(m[0].errors_during, 3);
        assert_eq!(
            (m[1].report.as_ref(), m[1].error.as_deref()),
            (None, Some("refused"))
        );
    }

    /// An event's reaction is the first matching change of its replica at
    /// or after it; none when none came, or when it was not applied.
    #[test]
    fn follow_finds_each_events_reaction() {
        let event = |at_ms, replica, action| Event {
            at: Duration::from_millis(at_ms),
            replica,
            action,
        };
        let applied = vec![
            (event(1000, 2, Action::Kill), 1.0, None),
            (event(2000, 2, Action::Restart), 2.0, None),
            (event(2500, 1, Action::Slow { cpus: 0.1 }), 2.5, None),
            (event(3000, 1, Action::Kill), 3.0, Some("gone".to_string())),
        ];
        let change = |t_s, replica, up| HealthChange { t_s, replica, up };
        let health = vec![
            change(0.5, 1, false), // before any event: not a reaction
            change(0.6, 1, true),
            change(1.2, 2, false),
            change(2.7, 2, true),
        ];
        let r = follow(&applied, &health);
        assert!((r[0].out_after_s.unwrap() - 0.2).abs() < 1e-9);
        assert_eq!(r[0].back_after_s, None);
        assert!((r[1].back_after_s.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(
            r[2].out_after_s, None,
            "replica 1 was never taken out after 2.5 s"
        );
        assert_eq!(
            (r[3].out_after_s, r[3].error.as_deref()),
            (None, Some("gone"))
        );
    }

    /// Only a bounded architecture behind the http proxy without a limit
    /// gets the note: not with maxconn, not in splice, not an event loop.
    #[test]
    fn bounded_replicas_without_maxconn_are_noted() {
        let text = r#"
name = "b"
architectures = ["thread-pool:2", "event-loop"]
duration = "2s"
objective = { percentile = 99.0, latency = "50ms" }

[[workload]]
name = "hello"
path = "/hello"

[load]
rates = [100]

[cluster]
replicas = 2
policies = ["round-robin"]
modes = ["http", "splice"]
maxconn = ["none", 2]
"#;
        let suite = crate::suite::Suite::parse("b.toml", text).unwrap();
        let noted: Vec<String> = suite
            .runs()
            .iter()
            .filter(|r| unlimited_bounded_note(&suite, r).is_some())
            .map(|r| r.key())
            .collect();
        assert_eq!(noted.len(), 1, "{noted:?}");
        assert!(
            noted[0].starts_with("thread-pool:2-x2-round-robin-http__"),
            "{noted:?}"
        );
    }
}
