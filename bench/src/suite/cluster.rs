//! Clusters in suites: the `[cluster]` section, which puts a dispatcher
//! (`serverlab dispatch`) in front of replicas of each built-in contestant
//! and makes the replica count, the balancing policy and the forwarding
//! mode matrix dimensions; and the events scheduled during each run (kill a
//! replica, restart it, make it slow).
//!
//! ```toml
//! [cluster]
//! replicas = 3                       # or a list: [2, 3]
//! policies = ["round-robin", "affinity"]
//! modes = ["http", "splice", "handoff"]
//! check_interval = "200ms"           # active health checks (default)
//!
//! [[cluster.event]]
//! at = "2s"                          # into the measured window
//! replica = 2                        # 1-based
//! action = "kill"                    # kill, restart or slow (cpus = 0.05)
//!
//! [[cluster.dispatcher]]             # an external dispatcher, beside the
//! name = "haproxy-http"              # built-in policies × modes
//! command = "haproxy -db -f {config}"
//! config = "... bind {addr} ... {replicas} ..."
//! replica = "server r{n} {replica} check inter 200ms"
//! ```

use super::error::Locator;
use super::{External, SuiteError};
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
        let mut out = Vec::new();
        for &replicas in &self.replicas {
            for front in &fronts {
                out.push(Topology {
                    replicas,
                    front: front.clone(),
                });
            }
        }
        out
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
        match &self.front {
            Front::Builtin { policy, mode } => format!(
                "x{}-{}-{}",
                self.replicas,
                policy_name(*policy),
                mode.as_str()
            ),
            Front::External { name } => format!("x{}-{name}", self.replicas),
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
}

impl Event {
    /// "kill replica 2 at 2s".
    pub fn describe(&self) -> String {
        let (verb, how) = match self.action {
            Action::Kill => ("kill", String::new()),
            Action::Restart => ("restart", String::new()),
            Action::Slow { cpus } => ("slow", format!(" to {cpus} CPUs")),
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
}

/// Checks a `[cluster]` section. `duration` is the measured window the
/// events must fall in; `fixed_load` whether every load level is a fixed
/// one (events mean nothing across the steps of a capacity search).
pub(super) fn parse(
    loc: &Locator,
    raw: &RawCluster,
    duration: Duration,
    fixed_load: bool,
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
    let fewest = *replicas.iter().min().unwrap_or(&1);
    let mut events = Vec::new();
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
        let replica = positive(loc, &r.replica, "cluster.event.replica", MAX_REPLICAS)? as u32;
        if replica > fewest {
            return Err(loc.at(
                r.replica.span(),
                "cluster.event.replica",
                format!("replica {replica}: the smallest cluster of this suite has {fewest}"),
            ));
        }
        let action = match (r.action.get_ref().as_str(), &r.cpus) {
            ("kill", None) => Action::Kill,
            ("restart", None) => Action::Restart,
            ("slow", Some(c)) => {
                let cpus = *c.get_ref();
                if !(cpus.is_finite() && (0.01..=64.0).contains(&cpus)) {
                    return Err(loc.at(c.span(), "cluster.event.cpus", "0.01 to 64 CPUs"));
                }
                Action::Slow { cpus }
            }
            ("slow", None) => {
                return Err(loc.at(
                    e.span(),
                    "cluster.event.cpus",
                    "a slow event says how slow: cpus = 0.05",
                ))
            }
            ("kill" | "restart", Some(c)) => {
                return Err(loc.at(c.span(), "cluster.event.cpus", "only slow events take cpus"))
            }
            (other, _) => {
                return Err(loc.at(
                    r.action.span(),
                    "cluster.event.action",
                    format!("{other:?}: actions are kill, restart and slow"),
                ))
            }
        };
        events.push((
            e.span(),
            Event {
                at,
                replica,
                action,
            },
        ));
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
            Action::Kill | Action::Slow { .. } if !alive => "it was killed and not restarted",
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
            Action::Slow { .. } => false,
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
    })
}
