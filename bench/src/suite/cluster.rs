//! Clusters in suites: the `[cluster]` section, which puts a dispatcher
//! (`serverlab dispatch`) in front of replicas of each built-in contestant
//! and makes the replica count, the balancing policy and the forwarding
//! mode matrix dimensions; and the events scheduled during each run (kill a
//! replica, restart it, make it slow, migrate its sessions to another).
//!
//! ```toml
//! [cluster]
//! replicas = 3                       # or a list: [2, 3]
//! policies = ["round-robin", "affinity"]
//! modes = ["http", "splice", "handoff"]
//! check_interval = "200ms"           # active health checks (default)
//! maxconn = 2                        # http, splice: most connections to a replica, or
//!                                    # "workers" (each bounded contestant's);
//!                                    # a list is a dimension: ["none", 2]
//!
//! [[cluster.event]]
//! at = "2s"                          # into the measured window
//! replica = 2                        # 1-based
//! action = "kill"                    # kill, restart or slow (cpus = 0.05)
//!
//! [[cluster.event]]                  # live migration (http mode, affinity)
//! at = "1s"
//! replica = 1
//! action = "migrate"
//! to = 2
//! method = ["pre-copy", "stop-and-copy", "post-copy"]  # a list: a dimension
//! threshold = 10                     # pre-copy's last live round (default 50)
//! rounds = 8                         # pre-copy's most rounds (default 8)
//! bandwidth = "20k"                  # bytes/s while clients are served
//!
//! [[cluster.dispatcher]]             # an external dispatcher, beside the
//! name = "haproxy-http"              # built-in policies × modes
//! command = "haproxy -db -f {config}"
//! config = "... bind {addr} ... {replicas} ..."
//! replica = "server r{n} {replica} check inter 200ms"
//! ```

use super::error::Locator;
use super::{External, SuiteError};
use dispatch::migrate::Method;
use dispatch::policy::Policy;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use toml::Spanned;

/// The most replicas one cluster may have.
pub const MAX_REPLICAS: i64 = 16;

/// A suite's cluster settings: its dimensions and its events.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Replica counts (a dimension).
    pub replicas: Vec<u32>,
    /// Balancing policies (a dimension).
    pub policies: Vec<Policy>,
    /// Forwarding modes (a dimension).
    pub modes: Vec<Mode>,
    /// External dispatchers, each a front of its own beside the built-in
    /// policies × modes.
    pub externals: Vec<ExternalFront>,
    /// The dispatcher's active health checks: how often, and how many
    /// failures in a row take a replica out (`fall`) or successes bring it
    /// back (`rise`).
    pub check_interval: Duration,
    pub rise: u32,
    pub fall: u32,
    /// What happens during each run, in time order.
    pub events: Vec<Event>,
    /// Migration methods (a dimension), when a migrate event lists
    /// several; empty otherwise.
    pub methods: Vec<Method>,
    /// Idle sessions each replica holds when the measured window begins
    /// (stateful and soft modes), as a server with many users between
    /// requests would: the state a migration must move besides the
    /// clients' own sessions.
    pub idle_sessions: u32,
    /// The limits of connections to each replica (`--replica
    /// ADDR,maxconn=N`; `None`: no limit), a dimension of the http and
    /// splice fronts; requests (http) or clients (splice) beyond wait in
    /// the dispatcher. Replicas with a fixed number of workers behind the
    /// http proxy need it set to that number. Empty when not set.
    pub maxconn: Vec<Option<MaxConn>>,
}

/// A connection limit per replica as a suite gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxConn {
    Connections(u32),
    /// `"workers"`: each bounded contestant's worker count (see
    /// `servers::arch::Arch::bounded`); no limit for the others.
    Per(Workers),
}

/// The word `"workers"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workers {
    Workers,
}

impl MaxConn {
    /// The limit for replicas of a contestant that serves a fixed number
    /// (`bounded`) of `workers` connections at once.
    pub fn resolve(self, bounded: bool, workers: Option<usize>) -> Option<u32> {
        match self {
            MaxConn::Connections(n) => Some(n),
            MaxConn::Per(Workers::Workers) if bounded => workers.map(|w| w as u32),
            MaxConn::Per(Workers::Workers) => None,
        }
    }
}

impl Cluster {
    /// Every topology of the matrix.
    pub fn cells(&self) -> Vec<Topology> {
        let mut fronts = Vec::new();
        for &policy in &self.policies {
            for &mode in &self.modes {
                fronts.push(Front::Builtin { policy, mode });
            }
        }
        for e in &self.externals {
            fronts.push(Front::External {
                name: e.external.name.clone(),
            });
        }
        let methods: Vec<Option<Method>> = if self.methods.is_empty() {
            vec![None]
        } else {
            self.methods.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for &replicas in &self.replicas {
            for front in &fronts {
                let limits = match front {
                    Front::Builtin { mode, .. }
                        if limits_connections(*mode) && !self.maxconn.is_empty() =>
                    {
                        self.maxconn.clone()
                    }
                    _ => vec![None],
                };
                for &maxconn in &limits {
                    for &migration in &methods {
                        out.push(Topology {
                            replicas,
                            front: front.clone(),
                            migration,
                            maxconn,
                        });
                    }
                }
            }
        }
        out
    }

    /// The events of a run of `topology`: a migrate event listing several
    /// methods takes the run's.
    pub fn events_of(&self, topology: &Topology) -> Vec<Event> {
        let mut events = self.events.clone();
        for e in &mut events {
            if let Action::Migrate { method, .. } = &mut e.action {
                if method.is_none() {
                    *method = topology.migration;
                }
            }
        }
        events
    }

    /// The external dispatcher called `name`.
    pub fn external(&self, name: &str) -> Option<&ExternalFront> {
        self.externals.iter().find(|e| e.external.name == name)
    }
}

/// An external dispatcher (HAProxy, nginx): a command and a configuration
/// template as for external contestants, with `{replicas}` replaced by one
/// `replica` line per replica (`{n}`: its number, `{replica}`: its
/// address, `{host}`, `{port}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalFront {
    /// Name, command, config, readiness (a path answered through it).
    pub external: External,
    /// The line written for each replica.
    pub replica: String,
}

impl ExternalFront {
    /// `text` with `{replicas}` written out for `replicas`.
    pub fn fill_replicas(&self, text: &str, replicas: &[std::net::SocketAddr]) -> String {
        let lines: Vec<String> = replicas
            .iter()
            .enumerate()
            .map(|(i, a)| {
                self.replica
                    .replace("{n}", &(i + 1).to_string())
                    .replace("{replica}", &a.to_string())
                    .replace("{host}", &a.ip().to_string())
                    .replace("{port}", &a.port().to_string())
            })
            .collect();
        text.replace("{replicas}", &lines.join("\n"))
    }
}

/// How the dispatcher forwards (`serverlab dispatch --mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Http,
    Splice,
    Handoff,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Splice => "splice",
            Mode::Handoff => "handoff",
        }
    }
}

/// One cell of the cluster dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub replicas: u32,
    pub front: Front,
    /// The migration method of the run, when methods are a dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Method>,
    /// The http proxy's connection limit per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxconn: Option<MaxConn>,
}

/// What stands in front of the replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Front {
    /// `serverlab dispatch` with this policy and mode.
    Builtin { policy: Policy, mode: Mode },
    /// The suite's external dispatcher of this name.
    External { name: String },
}

impl Topology {
    /// `x3-round-robin-http`, `x3-haproxy-http`: the part of run keys and
    /// names it adds.
    pub fn label(&self) -> String {
        let front = match &self.front {
            Front::Builtin { policy, mode } => format!(
                "x{}-{}-{}",
                self.replicas,
                policy_name(*policy),
                mode.as_str()
            ),
            Front::External { name } => format!("x{}-{name}", self.replicas),
        };
        let front = match self.maxconn {
            Some(MaxConn::Connections(n)) => format!("{front}-maxconn{n}"),
            Some(MaxConn::Per(Workers::Workers)) => format!("{front}-maxconn-workers"),
            None => front,
        };
        match self.migration {
            Some(m) => format!("{front}-{}", m.as_str()),
            None => front,
        }
    }
}

/// The name suites and command lines use for a policy.
pub fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::RoundRobin => "round-robin",
        Policy::LeastConnections => "least-connections",
        Policy::P2c => "p2c",
        Policy::Source => "source",
        Policy::Affinity => "affinity",
    }
}

/// Something done to a replica during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When, from the start of the measured window.
    pub at: Duration,
    /// Which replica, 1-based.
    pub replica: u32,
    pub action: Action,
}

/// What an event does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// SIGKILL to every process of the replica: it is gone at once.
    Kill,
    /// Start a killed replica again, on its address.
    Restart,
    /// Cut the replica's CPU quota to `cpus` CPUs (needs the sandbox).
    Slow { cpus: f64 },
    /// Migrate the replica's sessions live to replica `to` (1-based) by
    /// the dispatcher (`dispatch::migrate`); `method` is `None` only in the
    /// suite, when the run's [`Topology::migration`] decides.
    Migrate {
        to: u32,
        method: Option<Method>,
        threshold: u64,
        rounds: u32,
        bandwidth: Option<u64>,
    },
}

impl Event {
    /// "kill replica 2 at 2s".
    pub fn describe(&self) -> String {
        let (verb, how) = match self.action {
            Action::Kill => ("kill", String::new()),
            Action::Restart => ("restart", String::new()),
            Action::Slow { cpus } => ("slow", format!(" to {cpus} CPUs")),
            Action::Migrate { to, method, .. } => (
                "migrate",
                format!(
                    " to replica {to} by {}",
                    method.map_or("the run's method", Method::as_str)
                ),
            ),
        };
        format!("{verb} replica {}{how} at {:?}", self.replica, self.at)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    replicas: Spanned<super::parse::OneOrMany>,
    policies: Spanned<Vec<Spanned<String>>>,
    modes: Spanned<Vec<Spanned<String>>>,
    check_interval: Option<Spanned<String>>,
    rise: Option<Spanned<i64>>,
    fall: Option<Spanned<i64>>,
    idle_sessions: Option<Spanned<i64>>,
    maxconn: Option<Spanned<toml::Value>>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
    #[serde(default)]
    dispatcher: Vec<RawFront>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFront {
    name: Spanned<String>,
    command: Spanned<String>,
    config: Option<String>,
    replica: Spanned<String>,
    ready: Spanned<String>,
    ready_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Spanned<String>,
    replica: Spanned<i64>,
    action: Spanned<String>,
    cpus: Option<Spanned<f64>>,
    to: Option<Spanned<i64>>,
    method: Option<Spanned<Methods>>,
    threshold: Option<Spanned<i64>>,
    rounds: Option<Spanned<i64>>,
    bandwidth: Option<Spanned<String>>,
}

/// One migration method, or a list of them (a dimension).
#[derive(Deserialize)]
#[serde(untagged)]
enum Methods {
    One(String),
    Many(Vec<String>),
}

/// Checks a `[cluster]` section. `duration` is the measured window the
/// events must fall in; `fixed_load` whether every load level is a fixed
/// one (events mean nothing across the steps of a capacity search);
/// `stateless` whether some run has no session table (nothing to migrate).
pub(super) fn parse(
    loc: &Locator,
    raw: &RawCluster,
    duration: Duration,
    fixed_load: bool,
    stateless: bool,
) -> Result<Cluster, SuiteError> {
    use super::parse::{duration as time, positive};
    let replicas = super::parse::counts(loc, &raw.replicas, "cluster.replicas", MAX_REPLICAS)?;
    let mut policies = Vec::new();
    for p in raw.policies.get_ref() {
        let policy: Policy = p
            .get_ref()
            .parse()
            .map_err(|m: String| loc.at(p.span(), "cluster.policies", m))?;
        if policies.contains(&policy) {
            return Err(loc.at(p.span(), "cluster.policies", "listed twice"));
        }
        policies.push(policy);
    }
    if policies.is_empty() {
        return Err(loc.at(raw.policies.span(), "cluster.policies", "an empty list"));
    }
    let mut modes = Vec::new();
    for m in raw.modes.get_ref() {
        let mode = match m.get_ref().as_str() {
            "http" => Mode::Http,
            "splice" => Mode::Splice,
            "handoff" => Mode::Handoff,
            other => {
                return Err(loc.at(
                    m.span(),
                    "cluster.modes",
                    format!("{other:?}: modes are http, splice and handoff"),
                ))
            }
        };
        if modes.contains(&mode) {
            return Err(loc.at(m.span(), "cluster.modes", "listed twice"));
        }
        modes.push(mode);
    }
    if modes.is_empty() {
        return Err(loc.at(raw.modes.span(), "cluster.modes", "an empty list"));
    }
    let mut externals: Vec<ExternalFront> = Vec::new();
    for f in &raw.dispatcher {
        super::parse::check_name(loc, &f.name, "cluster.dispatcher.name")?;
        let name = f.name.get_ref();
        let taken = externals.iter().any(|e| &e.external.name == name)
            || modes.iter().any(|m| m.as_str() == name);
        if taken {
            return Err(loc.at(
                f.name.span(),
                "cluster.dispatcher.name",
                format!("{name:?} is taken"),
            ));
        }
        if f.command.get_ref().trim().is_empty() {
            return Err(loc.at(
                f.command.span(),
                "cluster.dispatcher.command",
                "empty command",
            ));
        }
        if !f.ready.get_ref().starts_with('/') {
            return Err(loc.at(
                f.ready.span(),
                "cluster.dispatcher.ready",
                "must be a path such as /health",
            ));
        }
        let in_config = f.config.as_deref().unwrap_or("").contains("{replicas}");
        if !(in_config || f.command.get_ref().contains("{replicas}")) {
            return Err(loc.at(
                f.replica.span(),
                "cluster.dispatcher.replica",
                "the config or the command must say where the replicas go: {replicas}",
            ));
        }
        if !f.replica.get_ref().contains("{replica}") && !f.replica.get_ref().contains("{port}") {
            return Err(loc.at(
                f.replica.span(),
                "cluster.dispatcher.replica",
                "a replica's line names its address: {replica} (or {host} and {port})",
            ));
        }
        externals.push(ExternalFront {
            external: External {
                name: name.clone(),
                command: f.command.get_ref().clone(),
                config: f.config.clone(),
                ready: f.ready.get_ref().clone(),
                ready_timeout: match &f.ready_timeout {
                    Some(t) => time(loc, t, "cluster.dispatcher.ready_timeout", false)?,
                    None => Duration::from_secs(5),
                },
                workloads: Vec::new(),
            },
            replica: f.replica.get_ref().clone(),
        });
    }
    let check_interval = match &raw.check_interval {
        Some(i) => time(loc, i, "cluster.check_interval", false)?,
        None => Duration::from_millis(200),
    };
    let rise = match &raw.rise {
        Some(r) => positive(loc, r, "cluster.rise", 100)? as u32,
        None => 2,
    };
    let fall = match &raw.fall {
        Some(f) => positive(loc, f, "cluster.fall", 100)? as u32,
        None => 2,
    };
    let idle_sessions = match &raw.idle_sessions {
        Some(n) => {
            if stateless {
                return Err(loc.at(
                    n.span(),
                    "cluster.idle_sessions",
                    "idle sessions need a session table: states = [\"stateful\"] or [\"soft\"]",
                ));
            }
            positive(loc, n, "cluster.idle_sessions", 1_000_000)? as u32
        }
        None => 0,
    };
    let maxconn =
        match &raw.maxconn {
            Some(v) if !modes.iter().any(|&m| limits_connections(m)) => return Err(loc.at(
                v.span(),
                "cluster.maxconn",
                "a limit of the http and splice modes' connections to a replica: modes has neither",
            )),
            Some(v) => limits(loc, v)?,
            None => Vec::new(),
        };
    let fewest = *replicas.iter().min().unwrap_or(&1);
    let mut events = Vec::new();
    let mut methods = Vec::new();
    for e in &raw.event {
        let r = e.get_ref();
        let at = time(loc, &r.at, "cluster.event.at", true)?;
        if at >= duration {
            return Err(loc.at(
                r.at.span(),
                "cluster.event.at",
                format!("{at:?} is not inside the measured window ({duration:?})"),
            ));
        }
        let source = replica(loc, &r.replica, "cluster.event.replica", fewest)?;
        let verb = r.action.get_ref().as_str();
        if !["kill", "restart", "slow", "migrate"].contains(&verb) {
            return Err(loc.at(
                r.action.span(),
                "cluster.event.action",
                format!("{verb:?}: actions are kill, restart, slow and migrate"),
            ));
        }
        // Fields that belong to another action are mistakes, not defaults.
        if verb != "slow" {
            if let Some(c) = &r.cpus {
                return Err(loc.at(c.span(), "cluster.event.cpus", "only slow events take cpus"));
            }
        }
        if verb != "migrate" {
            let migrate_only = [
                r.to.as_ref().map(|v| (v.span(), "to")),
                r.method.as_ref().map(|v| (v.span(), "method")),
                r.threshold.as_ref().map(|v| (v.span(), "threshold")),
                r.rounds.as_ref().map(|v| (v.span(), "rounds")),
                r.bandwidth.as_ref().map(|v| (v.span(), "bandwidth")),
            ];
            if let Some((span, field)) = migrate_only.into_iter().flatten().next() {
                return Err(loc.at(
                    span,
                    &format!("cluster.event.{field}"),
                    "only migrate events take it",
                ));
            }
        }
        let action = match verb {
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "slow" => {
                let Some(c) = &r.cpus else {
                    return Err(loc.at(
                        e.span(),
                        "cluster.event.cpus",
                        "a slow event says how slow: cpus = 0.05",
                    ));
                };
                let cpus = *c.get_ref();
                if !(cpus.is_finite() && (0.01..=64.0).contains(&cpus)) {
                    return Err(loc.at(c.span(), "cluster.event.cpus", "0.01 to 64 CPUs"));
                }
                Action::Slow { cpus }
            }
            _ => migrate_action(loc, e, fewest, source, &mut methods, stateless)?,
        };
        events.push((
            e.span(),
            Event {
                at,
                replica: source,
                action,
            },
        ));
    }
    if let Some((span, _)) = events
        .iter()
        .find(|(_, e)| matches!(e.action, Action::Migrate { .. }))
    {
        // Only the http proxy can hold a session's clients, and only
        // affinity knows where a session lives.
        let builtin_http_affinity =
            policies == [Policy::Affinity] && modes == [Mode::Http] && externals.is_empty();
        if !builtin_http_affinity {
            return Err(loc.at(
                span.clone(),
                "cluster.event",
                "migrate events need policies = [\"affinity\"], modes = [\"http\"] and no external dispatcher: only the built-in http proxy can pause a session's clients and switch where they go",
            ));
        }
    }
    if !events.is_empty() && !fixed_load {
        return Err(loc.at(
            raw.event[0].span(),
            "cluster.event",
            "events need fixed load levels (load.connections or load.rates): a capacity search repeats its measurement",
        ));
    }
    events.sort_by_key(|(_, e)| e.at);
    // Each event must make sense after the ones before it.
    let mut dead = std::collections::BTreeSet::new();
    for (span, e) in &events {
        let alive = !dead.contains(&e.replica);
        let why = match e.action {
            Action::Kill | Action::Slow { .. } | Action::Migrate { .. } if !alive => {
                "it was killed and not restarted"
            }
            Action::Migrate { to, .. } if dead.contains(&to) => {
                "the destination was killed and not restarted"
            }
            Action::Restart if alive => "it is running (kill it first)",
            _ => "",
        };
        if !why.is_empty() {
            return Err(loc.at(
                span.clone(),
                "cluster.event",
                format!("cannot {}: {why}", e.describe()),
            ));
        }
        match e.action {
            Action::Kill => dead.insert(e.replica),
            Action::Restart => dead.remove(&e.replica),
            Action::Slow { .. } | Action::Migrate { .. } => false,
        };
    }
    Ok(Cluster {
        replicas,
        policies,
        modes,
        externals,
        check_interval,
        rise,
        fall,
        events: events.into_iter().map(|(_, e)| e).collect(),
        methods,
        idle_sessions,
        maxconn,
    })
}

/// Whether the dispatcher's `mode` can hold its connections to a replica
/// to `maxconn` (a handed-off connection is the replica's: it cannot).
fn limits_connections(mode: Mode) -> bool {
    matches!(mode, Mode::Http | Mode::Splice)
}

/// `maxconn = "workers"` needs the worker count of every contestant that
/// serves a fixed number of connections: refused, naming the field, for
/// one whose count the suite leaves to the server (it depends on the CPUs
/// the server finds).
pub(super) fn check_workers(
    loc: &Locator,
    raw: &RawCluster,
    suite: &super::Suite,
) -> Result<(), SuiteError> {
    let (Some(v), Some(c)) = (&raw.maxconn, &suite.cluster) else {
        return Ok(());
    };
    if !c.maxconn.contains(&Some(MaxConn::Per(Workers::Workers))) {
        return Ok(());
    }
    for contestant in &suite.contestants {
        let Some(arch) = contestant.arch().and_then(|a| servers::arch::find(a).ok()) else {
            continue;
        };
        if arch.bounded && suite.workers_of(contestant).is_none() {
            return Err(loc.at(
                v.span(),
                "cluster.maxconn",
                format!(
                    "\"workers\" needs {}'s worker count: name it {}:N, or set workers",
                    arch.name, arch.name
                ),
            ));
        }
    }
    Ok(())
}

/// `maxconn`: a number of connections, "workers" or "none", or a list of them.
fn limits(loc: &Locator, v: &Spanned<toml::Value>) -> Result<Vec<Option<MaxConn>>, SuiteError> {
    const FIELD: &str = "cluster.maxconn";
    let err = |m: String| loc.at(v.span(), FIELD, m);
    let one = |item: &toml::Value| match item {
        toml::Value::Integer(n) if (1..=100_000).contains(n) => {
            Ok(Some(MaxConn::Connections(*n as u32)))
        }
        toml::Value::String(s) if s == "none" => Ok(None),
        toml::Value::String(s) if s == "workers" => Ok(Some(MaxConn::Per(Workers::Workers))),
        other => Err(err(format!(
            "{other}: a number of connections from 1 to 100000, \"workers\" or \"none\""
        ))),
    };
    let list = match v.get_ref() {
        toml::Value::Array(items) if items.is_empty() => return Err(err("an empty list".into())),
        toml::Value::Array(items) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        item => vec![one(item)?],
    };
    for (i, l) in list.iter().enumerate() {
        if list[..i].contains(l) {
            let shown = match l {
                None => "\"none\"".to_string(),
                Some(MaxConn::Connections(n)) => n.to_string(),
                Some(MaxConn::Per(_)) => "\"workers\"".to_string(),
            };
            return Err(err(format!("{shown} is listed twice")));
        }
    }
    Ok(list)
}

/// A replica's number in an event: from 1 to the smallest cluster's size.
fn replica(loc: &Locator, n: &Spanned<i64>, field: &str, fewest: u32) -> Result<u32, SuiteError> {
    let replica = super::parse::positive(loc, n, field, MAX_REPLICAS)? as u32;
    if replica > fewest {
        return Err(loc.at(
            n.span(),
            field,
            format!("replica {replica}: the smallest cluster of this suite has {fewest}"),
        ));
    }
    Ok(replica)
}

/// A migrate event's action; a list of methods becomes the suite's
/// `methods` dimension (one such event per suite).
fn migrate_action(
    loc: &Locator,
    e: &Spanned<RawEvent>,
    fewest: u32,
    source: u32,
    methods: &mut Vec<Method>,
    stateless: bool,
) -> Result<Action, SuiteError> {
    use super::parse::positive;
    let r = e.get_ref();
    if stateless {
        return Err(loc.at(
            e.span(),
            "cluster.event",
            "a stateless replica holds no sessions to migrate: states = [\"stateful\"] or [\"soft\"]",
        ));
    }
    let Some(to) = &r.to else {
        return Err(loc.at(
            e.span(),
            "cluster.event.to",
            "a migrate event says where the sessions go: to = 2",
        ));
    };
    let to_n = replica(loc, to, "cluster.event.to", fewest)?;
    if to_n == source {
        return Err(loc.at(
            to.span(),
            "cluster.event.to",
            "the destination must be another replica",
        ));
    }
    let Some(method) = &r.method else {
        return Err(loc.at(
            e.span(),
            "cluster.event.method",
            "pre-copy, stop-and-copy or post-copy (or a list of them)",
        ));
    };
    let names = match method.get_ref() {
        Methods::One(m) => vec![m.clone()],
        Methods::Many(v) => v.clone(),
    };
    let mut listed = Vec::new();
    for name in &names {
        let m: Method = name
            .parse()
            .map_err(|why: String| loc.at(method.span(), "cluster.event.method", why))?;
        if listed.contains(&m) {
            return Err(loc.at(method.span(), "cluster.event.method", "listed twice"));
        }
        listed.push(m);
    }
    let one = match listed[..] {
        [] => return Err(loc.at(method.span(), "cluster.event.method", "an empty list")),
        [m] => Some(m),
        _ if !methods.is_empty() => return Err(loc.at(
            method.span(),
            "cluster.event.method",
            "only one migrate event may list several methods (they are a dimension of the matrix)",
        )),
        _ => {
            *methods = listed;
            None
        }
    };
    let defaults = dispatch::migrate::Plan::new(0, 1, Method::PreCopy);
    let threshold = match &r.threshold {
        Some(t) => positive(loc, t, "cluster.event.threshold", 1_000_000)? as u64,
        None => defaults.threshold,
    };
    let rounds = match &r.rounds {
        Some(n) => positive(loc, n, "cluster.event.rounds", 100)? as u32,
        None => defaults.max_rounds,
    };
    let bandwidth = match &r.bandwidth {
        Some(b) => Some(
            dispatch::migrate::bytes_per_s(b.get_ref())
                .map_err(|why| loc.at(b.span(), "cluster.event.bandwidth", why))?,
        ),
        None => None,
    };
    Ok(Action::Migrate {
        to: to_n,
        method: one,
        threshold,
        rounds,
        bandwidth,
    })
}
