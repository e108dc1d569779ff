//! Claims: findings a suite expects, stated in its file and checked
//! against a results folder (`serverlab check`, `serverlab lab check`).
//!
//! ```toml
//! [[claim]]
//! says = "AMPED sustains at least 5× the event loop's rate when requests block"
//! metric = "sustainable"                       # see `Metric`
//! of = { contestant = "amped", workload = "io10" }
//! than = { contestant = "event-loop", workload = "io10" }   # a ratio of/than
//! at_least = 5.0                               # and/or at_most, or near
//! tolerance = 0.2                              # slack for a noisy machine
//! ```
//!
//! Without `than` the claim is about the value itself; `than_metric`
//! divides by another metric (`p99` ÷ `p99_uncorrected` of one run). `near = X` holds
//! when the value (or ratio) is within `tolerance` of X; `at_least = X`
//! when it is at least X × (1 − tolerance); `at_most = X` when at most X ×
//! (1 + tolerance). A selector picks runs by contestant (its full name as
//! in the report, e.g. `event-loop-x3-affinity-http` in cluster suites),
//! workload, load level (`c64`, `r2000`, `auto`), limits and state mode;
//! the value is the mean over the repetitions it picks. Each claim ends
//! as held, did not hold, or could not be evaluated (nothing matched, the
//! figure was not measured, or the selector picks runs of several load
//! levels), always with the figures.

use crate::report::analysis;
use crate::results::{RunRecord, Status};
use crate::runner::steal;
use serde::{Deserialize, Serialize};

/// What a claim measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The highest throughput at which every repetition met the objective
    /// (the report's answer; 0 when none did). The load level is chosen,
    /// not selected.
    Sustainable,
    /// Answers per second.
    Throughput,
    /// Median and 99th percentile latency, ms (corrected).
    P50,
    P99,
    /// 99th percentile measured from when each request was actually sent
    /// (what a generator without wrk2's correction reports), ms.
    P99Uncorrected,
    /// Answers per server CPU-second.
    RequestsPerCpu,
    /// The server's CPU time per second of the measured window: the share
    /// of a CPU it used (needs a cgroup).
    CpuShare,
    /// The server's own peak memory, MiB.
    Memory,
    /// Failed requests (count).
    Errors,
    /// Failed requests as a share of all finished ones (0 to 1).
    ErrorRate,
    /// Counter-flow requests whose session chain broke.
    StateErrors,
    /// Connections that got no answer in the whole measured window.
    Starved,
    /// Most threads or processes at once (the server's own counters).
    WorkersPeak,
    /// Cluster runs: the dispatcher's CPU per request, µs.
    DispatcherUs,
    /// Cluster runs with a migration (the run's first): how long its
    /// clients were held, ms.
    MigrationPause,
    /// ... how long it took in all, ms.
    MigrationTotal,
    /// ... sessions copied while the clients were held (pre-copy's last
    /// round, stop-and-copy's only one).
    PausedRound,
}

impl Metric {
    pub const ALL: [Metric; 17] = [
        Metric::Sustainable,
        Metric::Throughput,
        Metric::P50,
        Metric::P99,
        Metric::P99Uncorrected,
        Metric::RequestsPerCpu,
        Metric::CpuShare,
        Metric::Memory,
        Metric::Errors,
        Metric::ErrorRate,
        Metric::StateErrors,
        Metric::Starved,
        Metric::WorkersPeak,
        Metric::DispatcherUs,
        Metric::MigrationPause,
        Metric::MigrationTotal,
        Metric::PausedRound,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Sustainable => "sustainable",
            Metric::Throughput => "throughput",
            Metric::P50 => "p50",
            Metric::P99 => "p99",
            Metric::P99Uncorrected => "p99_uncorrected",
            Metric::RequestsPerCpu => "requests_per_cpu",
            Metric::CpuShare => "cpu_share",
            Metric::Memory => "memory",
            Metric::Errors => "errors",
            Metric::ErrorRate => "error_rate",
            Metric::StateErrors => "state_errors",
            Metric::Starved => "starved",
            Metric::WorkersPeak => "workers_peak",
            Metric::DispatcherUs => "dispatcher_us",
            Metric::MigrationPause => "migration_pause",
            Metric::MigrationTotal => "migration_total",
            Metric::PausedRound => "paused_round",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Sustainable | Metric::Throughput => " req/s",
            Metric::P50
            | Metric::P99
            | Metric::P99Uncorrected
            | Metric::MigrationPause
            | Metric::MigrationTotal => " ms",
            Metric::RequestsPerCpu => " req/CPU-s",
            Metric::CpuShare => " CPU",
            Metric::Memory => " MiB",
            Metric::DispatcherUs => " µs",
            _ => "",
        }
    }

    /// One run's figure (`None`: not measured).
    fn of_run(self, r: &RunRecord) -> Option<f64> {
        let m = r.metrics.as_ref()?;
        Some(match self {
            Metric::Sustainable => return None,
            Metric::Throughput => m.throughput_rps,
            Metric::P50 => m.latency_ms.p50,
            Metric::P99 => m.latency_ms.p99,
            Metric::P99Uncorrected => {
                r.loadgen.as_ref()?["uncorrected"]["p99_us"].as_u64()? as f64 / 1000.0
            }
            Metric::RequestsPerCpu => m.requests_per_cpu_s?,
            Metric::CpuShare => m.server_cpu_s? / m.duration_s.max(1e-9),
            Metric::Memory => m.memory_own_bytes? as f64 / (1024.0 * 1024.0),
            Metric::Errors => m.errors as f64,
            Metric::ErrorRate => m.errors as f64 / ((m.requests + m.errors).max(1)) as f64,
            Metric::StateErrors => match &r.cluster {
                Some(c) => c.state_errors as f64,
                None => r.loadgen.as_ref()?["errors"]["state"].as_u64()? as f64,
            },
            Metric::Starved => m.starved_connections as f64,
            Metric::WorkersPeak => m.server_workers_peak? as f64,
            Metric::DispatcherUs => r.cluster.as_ref()?.dispatcher_us_per_request?,
            Metric::MigrationPause | Metric::MigrationTotal | Metric::PausedRound => {
                // One that outlasted the load measured something else.
                let first = r.cluster.as_ref()?.migrations.first()?;
                let m = first.report.as_ref().filter(|_| !first.after_window)?;
                match self {
                    Metric::MigrationPause => m.pause_s * 1e3,
                    Metric::MigrationTotal => m.total_s * 1e3,
                    _ => m
                        .rounds
                        .iter()
                        .filter(|x| x.paused)
                        .map(|x| x.sessions)
                        .sum::<u64>() as f64,
                }
            }
        })
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Metric, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                format!("{s:?}: metrics are {}", names.join(", "))
            })
    }
}

/// Which runs a side of a claim is about; an unset field matches all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub contestant: Option<String>,
    pub workload: Option<String>,
    pub load: Option<String>,
    pub limits: Option<String>,
    pub state: Option<String>,
}

impl Selector {
    fn matches(&self, r: &RunRecord) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().map_or(true, |w| w == have);
        is(&self.contestant, &r.spec.subject())
            && is(&self.workload, &r.spec.workload.name)
            && is(&self.load, &r.spec.load.label())
            && is(&self.limits, &r.spec.limits_name)
            && is(&self.state, r.spec.state.map_or("default", |s| s.as_str()))
    }

    /// "amped, io10".
    pub fn describe(&self) -> String {
        let parts: Vec<&str> = [
            &self.contestant,
            &self.workload,
            &self.load,
            &self.limits,
            &self.state,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
        if parts.is_empty() {
            "every run".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A checked claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// What it says, in words.
    pub says: String,
    pub metric: Metric,
    pub of: Selector,
    /// Present: the claim is about the ratio `of / than`.
    pub than: Option<Selector>,
    /// The metric of the `than` side, when not `metric`.
    pub than_metric: Option<Metric>,
    pub at_least: Option<f64>,
    pub at_most: Option<f64>,
    pub near: Option<f64>,
    /// Relative slack on the bounds (0.2: 20 %).
    pub tolerance: f64,
}

/// How a claim came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Held,
    NotHeld,
    /// Why it could not be evaluated.
    Unknown(String),
    /// The figures missed, but the virtual machine's host took this share
    /// (the most of any run behind them) of the CPUs while they were
    /// measured: not evidence either way.
    Disturbed(f64),
}

/// A claim with its verdict and the figures behind it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub verdict: Verdict,
    /// "amped sustainable 5230 req/s ÷ event-loop 98 req/s = 53.4; wanted ≥ 5 (4.0 with the tolerance)".
    pub figures: String,
}

impl Claim {
    /// The figure one selector picks, with the most the host took of the
    /// CPUs during any run behind it: `Err` says why there is none.
    fn value(
        &self,
        metric: Metric,
        side: &Selector,
        runs: &[RunRecord],
    ) -> Result<(f64, f64), String> {
        let picked: Vec<&RunRecord> = runs.iter().filter(|r| side.matches(r)).collect();
        let stolen = picked.iter().map(|r| host_steal(r)).fold(0.0, f64::max);
        self.figure(metric, side, &picked).map(|v| (v, stolen))
    }

    fn figure(
        &self,
        metric: Metric,
        side: &Selector,
        picked: &[&RunRecord],
    ) -> Result<f64, String> {
        if picked.is_empty() {
            return Err(format!("no run matches {}", side.describe()));
        }
        // A run the sandbox could not limit says nothing about its limits.
        let unlimited: Vec<&str> = picked
            .iter()
            .filter(|r| r.unlimited && r.spec.limits != sandbox::Limits::default())
            .map(|r| r.key.as_str())
            .collect();
        if !unlimited.is_empty() {
            return Err(format!(
                "ran without its limits (UNLIMITED: no root or no cgroups): {}",
                unlimited.join(", ")
            ));
        }
        if metric == Metric::Sustainable {
            return sustainable(side, picked);
        }
        let mut levels: Vec<String> = picked.iter().map(|r| r.spec.group_key()).collect();
        levels.sort();
        levels.dedup();
        if levels.len() > 1 {
            return Err(format!(
                "{} picks runs of {} different settings ({}); say which (load, limits, state)",
                side.describe(),
                levels.len(),
                levels.join(", ")
            ));
        }
        let failed: Vec<&str> = picked
            .iter()
            .filter(|r| r.status != Status::Ok)
            .map(|r| r.key.as_str())
            .collect();
        if !failed.is_empty() {
            return Err(format!("runs did not finish: {}", failed.join(", ")));
        }
        let values: Vec<f64> = picked.iter().filter_map(|r| metric.of_run(r)).collect();
        if values.len() < picked.len() {
            return Err(format!(
                "{} was not measured in {} (no cgroup, or not that kind of run)",
                metric.name(),
                side.describe()
            ));
        }
        Ok(values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Checks the claim against a results folder's runs.
    pub fn check(&self, runs: &[RunRecord]) -> Checked {
        let unit = self.metric.unit();
        let (of, mut stolen) = match self.value(self.metric, &self.of, runs) {
            Ok(v) => v,
            Err(why) => return unknown(why),
        };
        let (value, shown) = match &self.than {
            None => (
                of,
                format!(
                    "{} {} = {}{unit}",
                    self.of.describe(),
                    self.metric.name(),
                    num(of)
                ),
            ),
            Some(than) => {
                let than_metric = self.than_metric.unwrap_or(self.metric);
                let base = match self.value(than_metric, than, runs) {
                    Ok((v, than_stolen)) => {
                        stolen = stolen.max(than_stolen);
                        v
                    }
                    Err(why) => return unknown(why),
                };
                let ratio = if base == 0.0 {
                    if of == 0.0 {
                        return unknown(format!("both {} are 0", self.metric.name()));
                    }
                    f64::INFINITY
                } else {
                    of / base
                };
                (
                    ratio,
                    format!(
                        "{} {} {}{unit} ÷ {} {} {}{} = {}",
                        self.of.describe(),
                        self.metric.name(),
                        num(of),
                        than.describe(),
                        than_metric.name(),
                        num(base),
                        than_metric.unit(),
                        num(ratio)
                    ),
                )
            }
        };
        let t = self.tolerance;
        let mut wanted = Vec::new();
        let mut held = true;
        if let Some(x) = self.at_least {
            let floor = x * (1.0 - t);
            held &= value >= floor;
            wanted.push(format!("≥ {} ({} with the tolerance)", num(x), num(floor)));
        }
        if let Some(x) = self.at_most {
            let ceiling = x * (1.0 + t);
            held &= value <= ceiling;
            wanted.push(format!(
                "≤ {} ({} with the tolerance)",
                num(x),
                num(ceiling)
            ));
        }
        if let Some(x) = self.near {
            let (lo, hi) = (x * (1.0 - t), x * (1.0 + t));
            held &= (lo..=hi).contains(&value);
            wanted.push(format!("near {} ({}–{})", num(x), num(lo), num(hi)));
        }
        let mut figures = format!("{shown}; wanted {}", wanted.join(" and "));
        let verdict = if held {
            Verdict::Held
        } else if stolen >= steal::DISTURBED {
            figures.push_str(&format!(
                "; the virtual machine's host took up to {:.0} % of the CPUs while these runs were measured, which slows servers and generator alike: run it again when the host is quieter",
                stolen * 100.0
            ));
            Verdict::Disturbed(stolen)
        } else {
            Verdict::NotHeld
        };
        Checked { verdict, figures }
    }
}

/// The most the host took of the server's or the generator's CPUs over any
/// measured window of a run (its kept measurement and every search step).
fn host_steal(r: &RunRecord) -> f64 {
    let kept = r.metrics.as_ref().and_then(|m| m.host_steal);
    let steps = r.auto_steps.iter().filter_map(|s| s.host_steal);
    kept.into_iter()
        .chain(steps)
        .map(|s| s.share())
        .fold(0.0, f64::max)
}

fn unknown(why: String) -> Checked {
    Checked {
        figures: why.clone(),
        verdict: Verdict::Unknown(why),
    }
}

/// The report's sustainable throughput of the one contestant `side` picks
/// (0 when nothing was sustainable).
fn sustainable(side: &Selector, picked: &[&RunRecord]) -> Result<f64, String> {
    let owned: Vec<RunRecord> = picked.iter().map(|r| (*r).clone()).collect();
    let groups = analysis::groups(&owned);
    let mut found = Vec::new();
    for g in &groups {
        for b in g.best() {
            found.push((
                format!("{} in {}", b.contestant, g.key.title(true, true)),
                b,
            ));
        }
    }
    match found.len() {
        1 => Ok(found[0].1.throughput.map_or(0.0, |s| s.mean)),
        _ => Err(format!(
            "{} picks {} contestant-and-settings pairs ({}); say which",
            side.describe(),
            found.len(),
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// A figure for people: three significant digits or so.
fn num(v: f64) -> String {
    if !v.is_finite() {
        "∞".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Checks every claim; the text to print, and whether all held.
pub fn report(claims: &[Claim], runs: &[RunRecord]) -> (String, bool) {
    let mut out = String::new();
    let (mut held, mut disturbed) = (0, 0);
    for (i, c) in claims.iter().enumerate() {
        let checked = c.check(runs);
        let word = match &checked.verdict {
            Verdict::Held => "held",
            Verdict::NotHeld => "DID NOT HOLD",
            Verdict::Unknown(_) => "could not be evaluated",
            Verdict::Disturbed(_) => "not judged (host interference)",
        };
        held += usize::from(checked.verdict == Verdict::Held);
        disturbed += usize::from(matches!(checked.verdict, Verdict::Disturbed(_)));
        out.push_str(&format!(
            "{}. {word}: {}\n   {}\n",
            i + 1,
            c.says,
            checked.figures
        ));
    }
    out.push_str(&format!("{held} of {} claims held", claims.len()));
    if disturbed > 0 {
        out.push_str(&format!(
            "; {disturbed} not judged: the host took the CPUs while they were measured"
        ));
    }
    out.push('\n');
    (out, held == claims.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    fn claim(metric: Metric, of: &str, than: Option<&str>) -> Claim {
        let pick = |name: &str| Selector {
            contestant: Some(name.into()),
            ..Selector::default()
        };
        Claim {
            says: "test".into(),
            metric,
            of: pick(of),
            than: than.map(pick),
            than_metric: None,
            at_least: None,
            at_most: None,
            near: None,
            tolerance: 0.0,
        }
    }

    fn runs() -> Vec<RunRecord> {
        // Two repetitions each at one load level: fast at 1000 and 1200
        // req/s, slow at 100; p99 under the 10 ms objective for both.
        vec![
            run("fast", 16, 1, 1000.0, 2.0, 1.0, 8 << 20),
            run("fast", 16, 2, 1200.0, 4.0, 1.0, 8 << 20),
            run("slow", 16, 1, 100.0, 3.0, 1.0, 4 << 20),
            run("slow", 16, 2, 100.0, 3.0, 1.0, 4 << 20),
        ]
    }

    #[test]
    fn a_miss_measured_while_the_host_took_the_cpus_is_not_judged() {
        let mut runs = runs();
        let stolen = |share: f64| crate::results::Steal {
            server: share,
            generator: 0.0,
            server_worst: share,
            generator_worst: share,
        };
        let mut c = claim(Metric::Throughput, "fast", Some("slow"));
        c.at_least = Some(12.0);
        // Steal below the threshold: the miss stands.
        runs[3].metrics.as_mut().unwrap().host_steal = Some(stolen(0.05));
        assert_eq!(c.check(&runs).verdict, Verdict::NotHeld);
        // On the `than` side too: a search step counts as much as the
        // kept measurement.
        runs[3].auto_steps.push(crate::results::AutoStep {
            host_steal: Some(stolen(0.25)),
            ..Default::default()
        });
        let checked = c.check(&runs);
        assert_eq!(checked.verdict, Verdict::Disturbed(0.25));
        assert!(
            checked.figures.contains("took up to 25 %"),
            "{}",
            checked.figures
        );
        let (text, all) = report(std::slice::from_ref(&c), &runs);
        assert!(!all);
        assert!(text.contains("not judged (host interference)"), "{text}");
        assert!(text.ends_with("0 of 1 claims held; 1 not judged: the host took the CPUs while they were measured\n"), "{text}");
        // A claim that held is believed, whatever the host did.
        c.at_least = Some(11.0);
        assert_eq!(c.check(&runs).verdict, Verdict::Held);
    }

    #[test]
    fn values_and_ratios_against_bounds_with_tolerance() {
        let runs = runs();
        let mut c = claim(Metric::Throughput, "fast", Some("slow"));
        c.at_least = Some(11.0);
        assert_eq!(c.check(&runs).verdict, Verdict::Held, "mean 1100 ÷ 100");
        c.at_least = Some(12.0);
        assert_eq!(c.check(&runs).verdict, Verdict::NotHeld);
        c.tolerance = 0.1;
        let checked = c.check(&runs);
        assert_eq!(checked.verdict, Verdict::Held, "{}", checked.figures);
        assert!(checked.figures.contains("= 11.00"), "{}", checked.figures);

        let mut p99 = claim(Metric::P99, "fast", None);
        p99.near = Some(3.0);
        assert_eq!(p99.check(&runs).verdict, Verdict::Held);
        p99.near = Some(4.0);
        p99.tolerance = 0.2;
        assert_eq!(
            p99.check(&runs).verdict,
            Verdict::NotHeld,
            "3 is not within 20 % of 4"
        );
        let mut most = claim(Metric::Memory, "slow", Some("fast"));
        most.at_most = Some(0.5);
        assert_eq!(most.check(&runs).verdict, Verdict::Held);
        // Another metric on the other side: p99 ÷ p50 of one contestant.
        let mut spread = claim(Metric::P99, "fast", Some("fast"));
        spread.than_metric = Some(Metric::P50);
        spread.near = Some(4.0);
        let checked = spread.check(&runs);
        assert_eq!(checked.verdict, Verdict::Held, "{}", checked.figures);
    }

    /// The migration metrics read the run's first migration: its pause
    /// and total in ms, and the sessions of its paused rounds; a run
    /// without one has no such figure.
    #[test]
    fn migration_metrics_read_the_runs_first_migration() {
        use crate::runner::cluster::{ClusterResult, MigrationResult};
        use dispatch::migrate::{Method, Outcome, Report, Round};
        let mut runs = runs();
        let round = |sessions, paused| Round {
            sessions,
            bytes: sessions * 39,
            secs: 0.1,
            paused,
        };
        for (r, pause_s) in runs.iter_mut().zip([0.002, 0.004]) {
            r.cluster = Some(ClusterResult {
                migrations: vec![MigrationResult {
                    at_s: 1.0,
                    report: Some(Report {
                        method: Method::PreCopy,
                        from: "a".into(),
                        to: "b".into(),
                        outcome: Outcome::Completed,
                        why: None,
                        total_s: 2.0,
                        pause_s,
                        degraded_s: 0.0,
                        rounds: vec![round(1000, false), round(60, false), round(12, true)],
                        dirty_per_s: vec![30.0],
                        sessions: 1000,
                        bytes: 41_028,
                        on_demand: 0,
                        background: 0,
                        lost: 0,
                        spans: Vec::new(),
                    }),
                    error: None,
                    p99_before_ms: None,
                    p99_during_ms: None,
                    errors_during: 0,
                    after_window: false,
                }],
                ..ClusterResult::default()
            });
        }
        let figure = |metric, of, runs: &[RunRecord]| {
            let mut c = claim(metric, of, None);
            c.at_least = Some(0.0);
            c.check(runs)
        };
        // "fast" is the two runs given migrations: means of 2 and 4 ms.
        assert!(figure(Metric::MigrationPause, "fast", &runs)
            .figures
            .contains("= 3.00"));
        assert!(figure(Metric::MigrationTotal, "fast", &runs)
            .figures
            .contains("= 2000"));
        assert!(figure(Metric::PausedRound, "fast", &runs)
            .figures
            .contains("= 12.00"));
        let none = figure(Metric::MigrationPause, "slow", &runs).verdict;
        assert!(matches!(none, Verdict::Unknown(_)), "{none:?}");
        // A migration that outlasted the load is no figure of migrating
        // under load.
        for r in &mut runs {
            if let Some(c) = &mut r.cluster {
                c.migrations[0].after_window = true;
            }
        }
        let late = figure(Metric::PausedRound, "fast", &runs).verdict;
        assert!(matches!(late, Verdict::Unknown(_)), "{late:?}");
    }

    #[test]
    fn sustainable_is_the_reports_answer() {
        let runs = runs();
        let mut c = claim(Metric::Sustainable, "fast", Some("slow"));
        c.at_least = Some(10.0);
        let checked = c.check(&runs);
        assert_eq!(checked.verdict, Verdict::Held, "{}", checked.figures);
    }

    #[test]
    fn what_cannot_be_evaluated_says_why() {
        let mut runs = runs();
        let unknown = |c: &Claim, runs: &[RunRecord]| match c.check(runs).verdict {
            Verdict::Unknown(why) => why,
            v => panic!("{v:?}"),
        };
        let mut c = claim(Metric::Throughput, "nobody", None);
        c.at_least = Some(1.0);
        assert!(unknown(&c, &runs).contains("no run matches"));
        // The workload alone picks two contestants' runs.
        c.of = Selector {
            workload: Some("hello".into()),
            ..Selector::default()
        };
        c.metric = Metric::Sustainable;
        assert!(unknown(&c, &runs).contains("say which"));
        // A figure not measured (no cgroup: no CPU).
        let mut cpu = claim(Metric::RequestsPerCpu, "slow", None);
        cpu.at_least = Some(1.0);
        for r in &mut runs {
            r.metrics.as_mut().unwrap().requests_per_cpu_s = None;
        }
        assert!(unknown(&cpu, &runs).contains("not measured"));
        // A run whose limits the sandbox could not enforce.
        runs[3].spec.limits.cpus = Some(0.5);
        runs[3].unlimited = true;
        let mut limited = claim(Metric::Throughput, "slow", None);
        limited.at_least = Some(1.0);
        assert!(unknown(&limited, &runs).contains("UNLIMITED"));
        runs[3].unlimited = false;
        // A failed run is not averaged in.
        runs[2].status = Status::Crashed;
        let mut t = claim(Metric::Throughput, "slow", None);
        t.at_least = Some(1.0);
        assert!(unknown(&t, &runs).contains("did not finish"));
        let (text, all) = report(&[t, cpu], &runs);
        assert!(!all && text.contains("0 of 2 claims held"), "{text}");
    }
}
