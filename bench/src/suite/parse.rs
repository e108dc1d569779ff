//! From TOML text to a checked [`Suite`]: the file's shape (serde, unknown
//! fields refused) and then every value's meaning, each error pointing at
//! the line that holds the value.

use super::error::Locator;
use super::{
    Background, Contestant, External, LoadLevel, Objective, RunSpec, StateMode, Suite, SuiteError,
    Workload,
};
use sandbox::Limits;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    architectures: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    external: Vec<RawExternal>,
    workload: Spanned<Vec<RawWorkload>>,
    load: Spanned<RawLoad>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<Limits>>,
    #[serde(default)]
    states: Vec<Spanned<String>>,
    repetitions: Option<Spanned<i64>>,
    warmup: Option<Spanned<String>>,
    duration: Spanned<String>,
    objective: Spanned<RawObjective>,
    #[serde(default)]
    allow_unlimited: bool,
    workers: Option<Spanned<i64>>,
    generator_threads: Option<Spanned<i64>>,
    server_cpus: Option<Spanned<Vec<Spanned<i64>>>>,
    generator_cpus: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(default)]
    server_args: BTreeMap<String, Spanned<Vec<String>>>,
    #[serde(default)]
    drop_caches: bool,
    cluster: Option<super::cluster::RawCluster>,
    #[serde(default)]
    claim: Vec<Spanned<RawClaim>>,
    fast: Option<Spanned<RawFast>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    says: Spanned<String>,
    metric: Spanned<String>,
    of: Spanned<crate::claims::Selector>,
    than: Option<Spanned<crate::claims::Selector>>,
    than_metric: Option<Spanned<String>>,
    at_least: Option<f64>,
    at_most: Option<f64>,
    near: Option<f64>,
    #[serde(default)]
    tolerance: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFast {
    duration: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    name: Spanned<String>,
    command: Spanned<String>,
    config: Option<String>,
    ready: Spanned<String>,
    ready_timeout: Option<Spanned<String>>,
    #[serde(default)]
    workloads: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    name: Spanned<String>,
    path: Spanned<String>,
    #[serde(default = "yes")]
    keep_alive: bool,
    pipeline: Option<Spanned<i64>>,
    mix: Option<Spanned<String>>,
    files: Option<Spanned<RawFiles>>,
    #[serde(default)]
    background: Vec<Spanned<RawBackground>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackground {
    kind: Spanned<String>,
    connections: Spanned<i64>,
    interval: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
}

/// The most clients of one background group.
const MAX_BACKGROUND_CONNECTIONS: i64 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    count: i64,
    size: String,
}

/// The most files and bytes a generated data set may have.
const MAX_FILES: i64 = 1_000_000;
const MAX_DATA_BYTES: u64 = 64 << 30;

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    #[serde(default)]
    connections: Vec<Spanned<i64>>,
    #[serde(default)]
    rates: Vec<Spanned<f64>>,
    open_connections: Option<Spanned<OneOrMany>>,
    auto: Option<Spanned<RawAuto>>,
    arrivals: Option<Spanned<String>>,
}

/// A number, or a list of them (one load level each).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(i64),
    Many(Vec<i64>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuto {
    start: f64,
    #[serde(default = "default_factor")]
    factor: f64,
    #[serde(default = "default_max")]
    max: f64,
    #[serde(default = "super::default_resolution")]
    resolution: f64,
    #[serde(default)]
    confirm: bool,
    /// Replaced by `resolution`; refused with a hint.
    refine: Option<u32>,
}

fn default_factor() -> f64 {
    1.5
}

fn default_max() -> f64 {
    1e6
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjective {
    percentile: Spanned<f64>,
    latency: Spanned<String>,
}

/// Parses and checks a suite.
pub(super) fn parse(file: &str, text: &str) -> Result<Suite, SuiteError> {
    let loc = Locator { file, text };
    let raw: RawSuite = toml::from_str(text).map_err(|e| loc.of_toml(&e))?;
    let name = match &raw.name {
        Some(n) => {
            check_name(&loc, n, "name")?;
            n.get_ref().clone()
        }
        None => std::path::Path::new(file)
            .file_stem()
            .map_or("suite".to_string(), |s| s.to_string_lossy().into_owned()),
    };

    let contestants = contestants(&loc, &raw)?;
    let workloads = workloads(&loc, &raw)?;
    let loads = loads(&loc, &raw.load)?;
    let arrivals = match &raw.load.get_ref().arrivals {
        None => loadgen::Arrivals::Uniform,
        Some(a) => match a.get_ref().as_str() {
            "uniform" => loadgen::Arrivals::Uniform,
            "poisson" => loadgen::Arrivals::Poisson,
            other => {
                return Err(loc.at(
                    a.span(),
                    "load.arrivals",
                    format!("{other:?}: open-loop arrivals are uniform or poisson"),
                ))
            }
        },
    };
    let mut limits: Vec<(String, Limits)> = Vec::new();
    for (limit_name, l) in &raw.limits {
        if !valid_name(limit_name) {
            return Err(loc.at(l.span(), "limits", format!("bad name {limit_name:?}")));
        }
        l.get_ref()
            .validate()
            .map_err(|m| loc.at(l.span(), &format!("limits.{limit_name}"), m))?;
        limits.push((limit_name.clone(), l.get_ref().clone()));
    }
    if limits.is_empty() {
        limits.push(("none".to_string(), Limits::default()));
    }
    let mut states = Vec::new();
    for s in &raw.states {
        let mode = s
            .get_ref()
            .parse::<super::StateMode>()
            .map_err(|m| loc.at(s.span(), "states", m))?;
        states.push(Some(mode));
    }
    if states.is_empty() {
        states.push(None);
    }
    let repetitions = match &raw.repetitions {
        Some(r) => positive(&loc, r, "repetitions", 1000)? as u32,
        None => 1,
    };
    let warmup = match &raw.warmup {
        Some(w) => duration(&loc, w, "warmup", true)?,
        None => Duration::ZERO,
    };
    let duration = duration(&loc, &raw.duration, "duration", false)?;
    let p = &raw.objective.get_ref().percentile;
    if !(*p.get_ref() > 0.0 && *p.get_ref() < 100.0) {
        return Err(loc.at(
            p.span(),
            "percentile",
            "must lie between 0 and 100, e.g. 99.0",
        ));
    }
    let objective = Objective {
        percentile: *p.get_ref(),
        latency: self::duration(&loc, &raw.objective.get_ref().latency, "latency", false)?,
    };
    let workers = match &raw.workers {
        Some(w) => Some(positive(&loc, w, "workers", 4096)? as usize),
        None => None,
    };
    let generator_threads = match &raw.generator_threads {
        Some(w) => Some(positive(&loc, w, "generator_threads", 1024)? as usize),
        None => None,
    };
    let placement = placement(&loc, &raw)?;
    let mut server_args = BTreeMap::new();
    for (arch, args) in &raw.server_args {
        let of_arch: Vec<&Contestant> = contestants
            .iter()
            .filter(|c| c.arch() == Some(arch.as_str()))
            .collect();
        if of_arch.is_empty() {
            return Err(loc.at(
                args.span(),
                &format!("server_args.{arch}"),
                format!("{arch:?} is not a built-in architecture of this suite"),
            ));
        }
        // Two places setting the workers would start a server that refuses
        // its arguments: every run of it would fail at start.
        let sets_workers = super::workers_arg(args.get_ref()).is_some();
        if sets_workers && (workers.is_some() || of_arch.iter().any(|c| c.workers().is_some())) {
            return Err(loc.at(
                args.span(),
                &format!("server_args.{arch}"),
                "--workers here conflicts with the suite's `workers` or an ARCH:WORKERS contestant; set the workers in one place",
            ));
        }
        server_args.insert(arch.clone(), args.get_ref().clone());
    }
    let cluster = match &raw.cluster {
        Some(c) => {
            let fixed = loads.iter().all(|l| !matches!(l, LoadLevel::Auto { .. }));
            if let Some(e) = &raw.external.first() {
                return Err(loc.at(
                    e.name.span(),
                    "external",
                    "a cluster suite's replicas are built-in architectures; external replicas are not supported",
                ));
            }
            // A suite without states runs the servers' default, stateful.
            let stateless = states.contains(&Some(StateMode::Stateless));
            Some(super::cluster::parse(&loc, c, duration, fixed, stateless)?)
        }
        None => None,
    };
    let mut suite = Suite {
        name,
        description: raw.description,
        source: text.to_string(),
        contestants,
        workloads,
        loads,
        limits,
        states,
        repetitions,
        warmup,
        duration,
        objective,
        allow_unlimited: raw.allow_unlimited,
        workers,
        generator_threads,
        placement,
        server_args,
        drop_caches: raw.drop_caches,
        cluster,
        arrivals,
        claims: Vec::new(),
        fast: None,
    };
    if let Some(c) = &raw.cluster {
        super::cluster::check_workers(&loc, c, &suite)?;
    }
    suite.claims = claims(&loc, &raw.claim, &suite)?;
    if let Some(f) = &raw.fast {
        let f = f.get_ref();
        let shorter = |v: &Option<Spanned<String>>, field, zero_ok, full: Duration| {
            v.as_ref()
                .map_or(Ok(full), |v| self::duration(&loc, v, field, zero_ok))
        };
        let fast_duration = shorter(&f.duration, "fast.duration", false, suite.duration)?;
        let last_event = suite
            .cluster
            .iter()
            .flat_map(|c| &c.events)
            .map(|e| e.at)
            .max();
        if let (Some(at), Some(d)) = (last_event, &f.duration) {
            if at >= fast_duration {
                return Err(loc.at(
                    d.span(),
                    "fast.duration",
                    format!("the last event is at {at:?}: a fast run must last longer"),
                ));
            }
        }
        suite.fast = Some((
            fast_duration,
            shorter(&f.warmup, "fast.warmup", true, suite.warmup)?,
        ));
    }
    Ok(suite)
}

/// The suite's claims, each selector checked against what the suite runs.
fn claims(
    loc: &Locator,
    raw: &[Spanned<RawClaim>],
    suite: &Suite,
) -> Result<Vec<crate::claims::Claim>, SuiteError> {
    let runs = suite.runs();
    let mut out = Vec::new();
    for c in raw {
        let r = c.get_ref();
        if r.says.get_ref().trim().is_empty() {
            return Err(loc.at(
                r.says.span(),
                "claim.says",
                "say what the claim is, in words",
            ));
        }
        let metric = r
            .metric
            .get_ref()
            .parse()
            .map_err(|m: String| loc.at(r.metric.span(), "claim.metric", m))?;
        for (side, field) in
            std::iter::once((&r.of, "claim.of")).chain(r.than.as_ref().map(|t| (t, "claim.than")))
        {
            let s = side.get_ref();
            let known = |want: &Option<String>, have: &dyn Fn(&RunSpec) -> String, what: &str| {
                let Some(w) = want else { return Ok(()) };
                if runs.iter().any(|run| &have(run) == w) {
                    return Ok(());
                }
                let mut names: Vec<String> = runs.iter().map(have).collect();
                names.sort();
                names.dedup();
                Err(loc.at(
                    side.span(),
                    field,
                    format!(
                        "no {what} {w:?} in this suite (it has: {})",
                        names.join(", ")
                    ),
                ))
            };
            known(&s.contestant, &|r| r.subject(), "contestant")?;
            known(&s.workload, &|r| r.workload.name.clone(), "workload")?;
            known(&s.load, &|r| r.load.label(), "load level")?;
            known(&s.limits, &|r| r.limits_name.clone(), "limits")?;
            known(
                &s.state,
                &|r| r.state.map_or("default", StateMode::as_str).to_string(),
                "state",
            )?;
        }
        let than_metric = match (&r.than_metric, &r.than) {
            (None, _) => None,
            (Some(m), None) => {
                return Err(loc.at(m.span(), "claim.than_metric", "than_metric needs `than`"))
            }
            (Some(m), Some(_)) => Some(
                m.get_ref()
                    .parse()
                    .map_err(|e: String| loc.at(m.span(), "claim.than_metric", e))?,
            ),
        };
        if r.at_least.is_none() && r.at_most.is_none() && r.near.is_none() {
            return Err(loc.at(
                c.span(),
                "claim",
                "a claim needs a bound: at_least, at_most or near",
            ));
        }
        if r.near.is_some() && (r.at_least.is_some() || r.at_most.is_some()) {
            return Err(loc.at(
                c.span(),
                "claim.near",
                "near stands alone: not with at_least or at_most",
            ));
        }
        let finite = [r.at_least, r.at_most, r.near]
            .into_iter()
            .flatten()
            .all(f64::is_finite);
        if !finite || !(0.0..1.0).contains(&r.tolerance) {
            return Err(loc.at(
                c.span(),
                "claim.tolerance",
                "bounds are numbers; the tolerance is a share from 0 to below 1 (0.2: 20 %)",
            ));
        }
        out.push(crate::claims::Claim {
            says: r.says.get_ref().clone(),
            metric,
            of: r.of.get_ref().clone(),
            than: r.than.as_ref().map(|t| t.get_ref().clone()),
            than_metric,
            at_least: r.at_least,
            at_most: r.at_most,
            near: r.near,
            tolerance: r.tolerance,
        });
    }
    Ok(out)
}

fn contestants(loc: &Locator, raw: &RawSuite) -> Result<Vec<Contestant>, SuiteError> {
    let mut out = Vec::new();
    let known = servers::arch::names();
    for a in raw.architectures.get_ref() {
        if a.get_ref() == "all" {
            out.extend(known.iter().map(|n| Contestant::Builtin {
                name: n.to_string(),
            }));
        } else if known.contains(&a.get_ref().as_str()) {
            out.push(Contestant::Builtin {
                name: a.get_ref().clone(),
            });
        } else if let Some((arch, workers)) = a.get_ref().split_once(':') {
            if !known.contains(&arch) {
                return Err(loc.at(
                    a.span(),
                    "architectures",
                    format!(
                        "unknown architecture {arch:?} in {:?}; valid names: {}",
                        a.get_ref(),
                        known.join(", ")
                    ),
                ));
            }
            let n = workers.parse::<i64>().unwrap_or(0);
            positive(loc, &Spanned::new(a.span(), n), "architectures", 4096).map_err(|_| {
                loc.at(
                    a.span(),
                    "architectures",
                    format!(
                        "{:?}: after the colon comes the worker count, 1 to 4096 (thread-pool:64)",
                        a.get_ref()
                    ),
                )
            })?;
            out.push(Contestant::Builtin {
                name: format!("{arch}:{n}"),
            });
        } else {
            return Err(loc.at(
                a.span(),
                "architectures",
                format!(
                    "unknown architecture {:?}; valid names: {} (or \"all\")",
                    a.get_ref(),
                    known.join(", ")
                ),
            ));
        }
    }
    let workload_names: Vec<&String> = raw
        .workload
        .get_ref()
        .iter()
        .map(|w| w.name.get_ref())
        .collect();
    for e in &raw.external {
        check_name(loc, &e.name, "external.name")?;
        if e.command.get_ref().trim().is_empty() {
            return Err(loc.at(e.command.span(), "external.command", "empty command"));
        }
        if !e.ready.get_ref().starts_with('/') {
            return Err(loc.at(
                e.ready.span(),
                "external.ready",
                "must be a path such as /hello",
            ));
        }
        for w in &e.workloads {
            if !workload_names.contains(&w.get_ref()) {
                return Err(loc.at(
                    w.span(),
                    "external.workloads",
                    format!("no workload named {:?}", w.get_ref()),
                ));
            }
        }
        out.push(Contestant::External(External {
            name: e.name.get_ref().clone(),
            command: e.command.get_ref().clone(),
            config: e.config.clone(),
            ready: e.ready.get_ref().clone(),
            ready_timeout: match &e.ready_timeout {
                Some(t) => duration(loc, t, "external.ready_timeout", false)?,
                None => Duration::from_secs(5),
            },
            workloads: e.workloads.iter().map(|w| w.get_ref().clone()).collect(),
        }));
    }
    if out.is_empty() {
        return Err(loc.at(
            raw.architectures.span(),
            "architectures",
            "no contestants: name at least one architecture or [[external]] server",
        ));
    }
    let mut seen = BTreeSet::new();
    for c in &out {
        if !seen.insert(c.name().to_string()) {
            return Err(loc.at(
                raw.architectures.span(),
                "architectures",
                format!("{:?} is listed twice", c.name()),
            ));
        }
    }
    Ok(out)
}

fn workloads(loc: &Locator, raw: &RawSuite) -> Result<Vec<Workload>, SuiteError> {
    if raw.workload.get_ref().is_empty() {
        return Err(loc.at(raw.workload.span(), "workload", "no workloads"));
    }
    let mut out: Vec<Workload> = Vec::new();
    for w in raw.workload.get_ref() {
        check_name(loc, &w.name, "workload.name")?;
        if out.iter().any(|o| &o.name == w.name.get_ref()) {
            return Err(loc.at(w.name.span(), "workload.name", "duplicate workload name"));
        }
        if !w.path.get_ref().starts_with('/') {
            return Err(loc.at(w.path.span(), "workload.path", "must start with /"));
        }
        let files = match &w.files {
            Some(f) => Some(files(loc, w, f)?),
            None => None,
        };
        let mix = match (&w.mix, files) {
            (Some(m), Some(_)) => {
                return Err(loc.at(
                    m.span(),
                    "workload.mix",
                    "give mix or files, not both (files make their own mix)",
                ))
            }
            (Some(m), None) => loadgen::config::parse_mix(m.get_ref())
                .map_err(|e| loc.at(m.span(), "workload.mix", e.to_string()))?,
            (None, Some(f)) => (0..f.count)
                .map(|i| loadgen::MixEntry {
                    path: format!("{}{}", w.path.get_ref(), super::Files::name(i)),
                    weight: 1,
                })
                .collect(),
            (None, None) => Vec::new(),
        };
        out.push(Workload {
            name: w.name.get_ref().clone(),
            path: w.path.get_ref().clone(),
            keep_alive: w.keep_alive,
            pipeline: match &w.pipeline {
                Some(p) => positive(loc, p, "workload.pipeline", 1024)? as u32,
                None => 1,
            },
            mix,
            files,
            background: w
                .background
                .iter()
                .map(|b| background(loc, b))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(out)
}

fn background(loc: &Locator, b: &Spanned<RawBackground>) -> Result<Background, SuiteError> {
    let raw = b.get_ref();
    let field = "workload.background";
    let connections = positive(
        loc,
        &raw.connections,
        "workload.background.connections",
        MAX_BACKGROUND_CONNECTIONS,
    )? as u32;
    let kind = raw.kind.get_ref().as_str();
    // Each kind takes only its own settings: one given to another kind is
    // a mistake, not something to ignore.
    let unused = |name: &str, given: bool, span: std::ops::Range<usize>| {
        if given {
            Err(loc.at(
                span,
                &format!("{field}.{name}"),
                format!("not a setting of {kind:?} groups"),
            ))
        } else {
            Ok(())
        }
    };
    let span_of = |o: &Option<Spanned<String>>| o.as_ref().map_or(b.span(), |s| s.span());
    match kind {
        "idle" => {
            unused("interval", raw.interval.is_some(), span_of(&raw.interval))?;
            unused("path", raw.path.is_some(), span_of(&raw.path))?;
            unused(
                "rate",
                raw.rate.is_some(),
                raw.rate.as_ref().map_or(b.span(), |r| r.span()),
            )?;
            Ok(Background::Idle { connections })
        }
        "slow" => {
            unused("path", raw.path.is_some(), span_of(&raw.path))?;
            unused(
                "rate",
                raw.rate.is_some(),
                raw.rate.as_ref().map_or(b.span(), |r| r.span()),
            )?;
            let interval = match &raw.interval {
                Some(i) => duration(loc, i, "workload.background.interval", false)?,
                None => Duration::from_secs(1),
            };
            Ok(Background::Slow {
                connections,
                interval,
            })
        }
        "load" => {
            unused("interval", raw.interval.is_some(), span_of(&raw.interval))?;
            let Some(path) = &raw.path else {
                return Err(loc.at(
                    b.span(),
                    "workload.background.path",
                    "a load group needs a path",
                ));
            };
            if !path.get_ref().starts_with('/') {
                return Err(loc.at(path.span(), "workload.background.path", "must start with /"));
            }
            let rate = match &raw.rate {
                Some(r) if !(r.get_ref().is_finite() && *r.get_ref() > 0.0) => {
                    return Err(loc.at(r.span(), "workload.background.rate", "must be more than 0"))
                }
                r => r.as_ref().map(|r| *r.get_ref()),
            };
            Ok(Background::Load {
                connections,
                path: path.get_ref().clone(),
                rate,
            })
        }
        other => Err(loc.at(
            raw.kind.span(),
            "workload.background.kind",
            format!("{other:?} is not a kind of background group: idle, slow or load"),
        )),
    }
}

fn files(
    loc: &Locator,
    w: &RawWorkload,
    f: &Spanned<RawFiles>,
) -> Result<super::Files, SuiteError> {
    let raw = f.get_ref();
    let at = |m: String| loc.at(f.span(), "workload.files", m);
    if !(w.path.get_ref().starts_with("/file/") && w.path.get_ref().ends_with('/')) {
        return Err(loc.at(
            w.path.span(),
            "workload.path",
            "with files, the path is the folder they are served from, e.g. \"/file/\"",
        ));
    }
    if !(1..=MAX_FILES).contains(&raw.count) {
        return Err(at(format!("count must be 1 to {MAX_FILES}")));
    }
    let size = sandbox::limits::parse_size(&raw.size).map_err(&at)?;
    let most = servers::handler::MAX_FILE_BYTES;
    if size == 0 || size > most {
        return Err(at(format!(
            "size must be 1 byte to {} MiB (the most /file/ serves)",
            most >> 20
        )));
    }
    if raw.count as u64 * size > MAX_DATA_BYTES {
        return Err(at(format!(
            "count × size is over {} GiB",
            MAX_DATA_BYTES >> 30
        )));
    }
    Ok(super::Files {
        count: raw.count as u32,
        size,
    })
}

fn loads(loc: &Locator, raw: &Spanned<RawLoad>) -> Result<Vec<LoadLevel>, SuiteError> {
    let l = raw.get_ref();
    let open_connections: Vec<u32> = match &l.open_connections {
        None => vec![super::DEFAULT_OPEN_CONNECTIONS],
        Some(c) => counts(loc, c, "load.open_connections", 100_000)?,
    };
    let mut out = Vec::new();
    for c in &l.connections {
        out.push(LoadLevel::Closed {
            connections: positive(loc, c, "load.connections", 100_000)? as u32,
        });
    }
    for r in &l.rates {
        if !(r.get_ref().is_finite() && *r.get_ref() > 0.0) {
            return Err(loc.at(r.span(), "load.rates", "rates must be positive requests/s"));
        }
        for &connections in &open_connections {
            out.push(LoadLevel::Open {
                rate: *r.get_ref(),
                connections,
            });
        }
    }
    if let Some(a) = &l.auto {
        let v = a.get_ref();
        if v.refine.is_some() {
            return Err(loc.at(
                a.span(),
                "load.auto",
                "`refine` was replaced by `resolution` (the search now narrows the bracket until its ends are within it; default 0.05)",
            ));
        }
        let ok = v.start.is_finite()
            && v.start > 0.0
            && v.factor > 1.0
            && v.max >= v.start
            && v.resolution > 0.0
            && v.resolution <= 0.5;
        if !ok {
            return Err(loc.at(
                a.span(),
                "load.auto",
                "needs start > 0, factor > 1, max >= start and 0 < resolution <= 0.5",
            ));
        }
        for &connections in &open_connections {
            out.push(LoadLevel::Auto {
                start: v.start,
                factor: v.factor,
                max: v.max,
                resolution: v.resolution,
                confirm: v.confirm,
                connections,
            });
        }
    }
    if out.is_empty() {
        return Err(loc.at(
            raw.span(),
            "load",
            "no load levels: give connections, rates or auto",
        ));
    }
    Ok(out)
}

/// A count or a list of distinct counts, each 1 to `max`.
pub(super) fn counts(
    loc: &Locator,
    c: &Spanned<OneOrMany>,
    field: &str,
    max: i64,
) -> Result<Vec<u32>, SuiteError> {
    let list = match c.get_ref() {
        OneOrMany::One(n) => vec![*n],
        OneOrMany::Many(v) => v.clone(),
    };
    if list.is_empty() {
        return Err(loc.at(c.span(), field, "an empty list"));
    }
    let mut counts = Vec::new();
    for n in list {
        let n = positive(loc, &Spanned::new(c.span(), n), field, max)? as u32;
        if counts.contains(&n) {
            return Err(loc.at(c.span(), field, format!("{n} is listed twice")));
        }
        counts.push(n);
    }
    Ok(counts)
}

fn placement(loc: &Locator, raw: &RawSuite) -> Result<Option<super::Placement>, SuiteError> {
    let (s, g) = match (&raw.server_cpus, &raw.generator_cpus) {
        (None, None) => return Ok(None),
        (Some(s), Some(g)) => (s, g),
        (Some(s), None) | (None, Some(s)) => {
            return Err(loc.at(
                s.span(),
                "server_cpus",
                "give both server_cpus and generator_cpus, or neither",
            ))
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let list = |v: &Spanned<Vec<Spanned<i64>>>, field: &str| -> Result<Vec<usize>, SuiteError> {
        if v.get_ref().is_empty() {
            return Err(loc.at(v.span(), field, "empty CPU list"));
        }
        v.get_ref()
            .iter()
            .map(|c| {
                if (0..cpus).contains(c.get_ref()) {
                    Ok(*c.get_ref() as usize)
                } else {
                    Err(loc.at(
                        c.span(),
                        field,
                        format!("no CPU {} here (0..{cpus})", c.get_ref()),
                    ))
                }
            })
            .collect()
    };
    let server = list(s, "server_cpus")?;
    let generator = list(g, "generator_cpus")?;
    if server.iter().any(|c| generator.contains(c)) {
        return Err(loc.at(
            g.span(),
            "generator_cpus",
            "must be disjoint from server_cpus",
        ));
    }
    Ok(Some((server, generator)))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.contains("__")
}

pub(super) fn check_name(
    loc: &Locator,
    name: &Spanned<String>,
    field: &str,
) -> Result<(), SuiteError> {
    if valid_name(name.get_ref()) {
        Ok(())
    } else {
        Err(loc.at(
            name.span(),
            field,
            format!(
                "bad name {:?}: use letters, digits, '-', '_' or '.' (no \"__\")",
                name.get_ref()
            ),
        ))
    }
}

pub(super) fn positive(
    loc: &Locator,
    v: &Spanned<i64>,
    field: &str,
    max: i64,
) -> Result<i64, SuiteError> {
    if (1..=max).contains(v.get_ref()) {
        Ok(*v.get_ref())
    } else {
        Err(loc.at(
            v.span(),
            field,
            format!("{} is out of range (1..={max})", v.get_ref()),
        ))
    }
}

pub(super) fn duration(
    loc: &Locator,
    v: &Spanned<String>,
    field: &str,
    zero_ok: bool,
) -> Result<Duration, SuiteError> {
    let d = servers::config::parse_duration(v.get_ref()).map_err(|m| loc.at(v.span(), field, m))?;
    if d.is_zero() && !zero_ok {
        return Err(loc.at(v.span(), field, "must be longer than zero"));
    }
    if d > Duration::from_secs(3600) {
        return Err(loc.at(v.span(), field, "longer than an hour; surely a typo"));
    }
    Ok(d)
}
