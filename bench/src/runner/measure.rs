//! Driving the in-process load generator for one run, and reducing its
//! report to [`Metrics`]. Includes the `auto` search for the highest
//! sustainable open-loop rate.

use super::search::{self, Bracket, Next, Probe};
use super::steal;
use crate::results::{AutoStep, Metrics, Percentiles, TimePoint};
use crate::suite::{LoadLevel, Objective, Suite, Workload};
use loadgen::{LoadConfig, LoadReport};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The share of the offered rate an open-loop run must achieve.
pub const KEEP_UP: f64 = 0.95;
/// The largest share of failed requests a sustainable run may have.
pub const MAX_ERRORS: f64 = 0.01;
/// Longest wait after the warmup for every connection to be answered and
/// caught up before measuring.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Most steps of one capacity search (a bound on its time).
pub const MAX_AUTO_STEPS: usize = 16;

/// Where and how the generator sends, for every measurement of a run.
pub struct Target<'a> {
    /// The server.
    pub addr: SocketAddr,
    /// Generator threads.
    pub threads: usize,
    /// The run's state mode, for counter flows.
    pub state: Option<loadgen::StateMode>,
    /// A built-in server's counters, read from its stats file.
    pub stats: Option<&'a servers::stats::Stats>,
    /// Called the moment each measured window begins.
    pub on_window: Option<&'a (dyn Fn() + Sync)>,
    /// The server's CPUs and the generator's, whose steal is watched.
    pub cpus: (&'a [usize], &'a [usize]),
    /// Whether a fixed load whose window the host disturbed may be measured
    /// again (not where the window drives timed events, as in clusters).
    pub remeasure: bool,
}

/// The generator's settings for one measurement.
pub fn config(
    suite: &Suite,
    workload: &Workload,
    target: &Target,
    connections: u32,
    rate: Option<f64>,
) -> LoadConfig {
    let (addr, threads) = (target.addr, target.threads);
    let flow = (workload.path == "/counter")
        .then(|| loadgen::Flow::Counter(target.state.unwrap_or_default()));
    LoadConfig {
        url: format!("http://{addr}{}", workload.path),
        connections: connections as usize,
        threads: threads.clamp(1, connections.max(1) as usize),
        duration: suite.duration,
        warmup: suite.warmup,
        rate,
        arrivals: suite.arrivals,
        pipeline: workload.pipeline as usize,
        keepalive: workload.keep_alive,
        mix: workload.mix.clone(),
        flow,
        // Measure steady state: servers that fork or spawn per connection
        // settle in first (bounded; a server that never does is measured
        // as it is).
        settle: Some(SETTLE),
        // Short runs get sub-second intervals, so that latency over time
        // has enough points to read.
        interval: (suite.duration / 20).clamp(Duration::from_millis(100), Duration::from_secs(1)),
        ..Default::default()
    }
}

/// Digests a generator report. Server-side figures are filled in later.
pub fn metrics(r: &LoadReport, objective: &Objective) -> Metrics {
    let h = &r.corrected.histogram;
    let ms = |us: u64| us as f64 / 1000.0;
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(p))
        }
    };
    let ok = r.statuses.s2xx;
    let errors = r.errors.requests();
    let finished = ok + errors;
    let duration = r.duration_s.max(1e-9);
    let throughput = ok as f64 / duration;
    let objective_latency = q(objective.percentile / 100.0);
    let kept_up = r.target_rate.map_or(true, |t| throughput >= KEEP_UP * t);
    // A starved client fails the run whatever the others saw: its waiting
    // requests are in the histogram, but at a low percentile they could
    // hide behind the fast answers of the clients that were served.
    let meets = ok > 0
        && objective_latency <= objective.latency.as_secs_f64() * 1e3
        && (errors as f64) <= MAX_ERRORS * finished as f64
        && kept_up
        && r.starved_connections == 0;
    Metrics {
        requests: ok,
        errors,
        duration_s: r.duration_s,
        throughput_rps: throughput,
        starved_connections: r.starved_connections,
        littles_law_ratio: r.littles_law.map(|l| l.ratio),
        offered_rps: r.target_rate,
        latency_ms: Percentiles {
            p50: ms(r.corrected.p50_us),
            p90: ms(r.corrected.p90_us),
            p99: ms(r.corrected.p99_us),
            p999: ms(r.corrected.p99_9_us),
            max: ms(r.corrected.max_us),
            mean: r.corrected.mean_us / 1000.0,
        },
        objective_latency_ms: objective_latency,
        meets_objective: meets,
        server_cpu_s: None,
        requests_per_cpu_s: None,
        memory_peak_bytes: None,
        memory_own_bytes: None,
        memory_cache_bytes: None,
        throttled_s: None,
        server_connections_peak: None,
        server_workers_peak: None,
        generator_cpu_s: Some(r.cpu.user_s + r.cpu.system_s),
        host_steal: None,
        spectrum: spectrum(h),
        timeline: r
            .intervals
            .iter()
            .map(|i| TimePoint {
                t_s: i.start_s + i.length_s,
                rps: i.requests.saturating_sub(i.errors) as f64 / i.length_s.max(1e-9),
                p50_ms: ms(i.p50_us),
                p99_ms: ms(i.p99_us),
                errors: i.errors,
            })
            .collect(),
    }
}

/// Percentiles evenly spaced on the "nines" axis (four per decade of
/// 1/(1-p)), as far as the sample count supports, then the maximum.
pub fn spectrum(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for k in 0..=24 {
        let tail = 10f64.powf(-(k as f64) / 4.0);
        if 1.0 / tail > h.len() as f64 {
            break;
        }
        let p = 1.0 - tail;
        out.push((p * 100.0, h.value_at_quantile(p) as f64 / 1000.0));
    }
    let last = 100.0 * (1.0 - 1.0 / (h.len() as f64 * 2.0)).max(0.0);
    if out.last().map_or(true, |l| l.0 < last) {
        out.push((last, h.max() as f64 / 1000.0));
    }
    out
}

/// What one measurement (or auto search) produced.
pub struct Measured {
    /// The report of the measurement the metrics come from.
    pub report: LoadReport,
    /// Its metrics.
    pub metrics: Metrics,
    /// Auto load only: every step.
    pub steps: Vec<AutoStep>,
    /// Auto load only: what the search found.
    pub bracket: Option<Bracket>,
    /// Caveats (see [`crate::results::RunRecord::notes`]).
    pub notes: Vec<String>,
}

/// Caveats of one generator report.
fn notes_of(r: &LoadReport, m: &Metrics) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(stolen) = m.host_steal.filter(|s| s.disturbed()) {
        notes.push(stolen.note());
    }
    if r.cpu.generator_bound {
        notes.push("generator-bound: the load generator's threads were nearly always busy, so the server may not be the limit".to_string());
    }
    if r.starved_connections > 0 {
        notes.push(format!(
            "starved: {} of {} connections got no answer in the whole measured window (the run cannot meet the objective)",
            r.starved_connections, r.connections
        ));
    }
    if let Some(l) = r.littles_law {
        if (l.ratio - 1.0).abs() > loadgen::report::LITTLE_TOLERANCE {
            notes.push(format!(
                "Little's law check failed: {:.1} requests in flight on average against {:.0} connections × pipeline (ratio {:.2}): the connections idled between answers, so the figures describe the generator as much as the server",
                l.observed, l.expected, l.ratio
            ));
        }
    }
    notes
}

/// Runs the load level: one measurement, or the auto search. `between`
/// is asked before each auto step whether the server still runs. Returns `None` when stopped.
pub fn run_level(
    suite: &Suite,
    workload: &Workload,
    load: &LoadLevel,
    target: &Target,
    stop: &AtomicBool,
    mut alive: impl FnMut() -> bool,
    cpu: impl Fn() -> Option<f64>,
) -> Result<Option<Measured>, String> {
    // One measurement, warmup included (so connections opened during the
    // warmup carry on into the measured part). The generator runs on its
    // own thread while this one reads the server's CPU time when the
    // generator says the measured window began (after its connects, warmup
    // and settling) and when the run returns: the CPU window matches the
    // measured part within milliseconds.
    let one = |conns: u32, rate: Option<f64>| -> Result<Option<(LoadReport, Metrics)>, String> {
        let cfg = config(suite, workload, target, conns, rate);
        let watched = steal::watched(
            target.cpus,
            |measuring| loadgen::run_signalling(&cfg, stop, measuring),
            |begins| {
                let used = cpu();
                if begins {
                    if let Some(f) = target.on_window {
                        f();
                    }
                    if let Some(stats) = target.stats {
                        stats.reset_peaks();
                    }
                }
                used
            },
        );
        let (result, (before, after)) = (watched.result, watched.marks);
        let peaks = target.stats.map(|s| s.snapshot());
        let report = result
            .map_err(|_| "load generator panicked".to_string())?
            .map_err(|e| format!("load generator: {e}"))?;
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let mut m = metrics(&report, &suite.objective);
        m.host_steal = watched.steal;
        if let (Some(a), Some(b)) = (before, after) {
            let used = (b - a).max(0.0);
            m.server_cpu_s = Some(used);
            m.requests_per_cpu_s = (used > 0.0).then(|| m.requests as f64 / used);
        }
        if let Some(p) = peaks {
            m.server_connections_peak = Some(p.connections_peak as u64);
            m.server_workers_peak = Some(p.workers_peak as u64);
        }
        Ok(Some((report, m)))
    };
    match *load {
        LoadLevel::Closed { connections } | LoadLevel::Open { connections, .. } => {
            let rate = match *load {
                LoadLevel::Open { rate, .. } => Some(rate),
                _ => None,
            };
            let measured = least_disturbed(target.remeasure, || one(connections, rate))?;
            let Some((report, metrics, tries)) = measured else {
                return Ok(None);
            };
            let mut notes = notes_of(&report, &metrics);
            if tries > 1 {
                notes.push(format!(
                    "measured {tries} times because the host disturbed the window; the least disturbed measurement is kept"
                ));
            }
            Ok(Some(Measured {
                notes,
                report,
                metrics,
                steps: Vec::new(),
                bracket: None,
            }))
        }
        LoadLevel::Auto {
            start,
            factor,
            max,
            resolution,
            confirm,
            connections,
        } => {
            let params = search::Params {
                start,
                factor,
                max,
                resolution,
                keep_up: KEEP_UP,
                max_steps: MAX_AUTO_STEPS,
                confirm,
            };
            let mut steps = Vec::new();
            let mut probes = Vec::new();
            let mut measured: Vec<(LoadReport, Metrics)> = Vec::new();
            // Every step warms up fully (the suite's warmup): its
            // connections are new, and at thousands of connections a short
            // warmup measured the server's start of the step, not its
            // steady state (event-loop at 4096 connections: p99 64–82 ms at
            // 11.3k req/s after 250 ms of warmup, 13 ms after 500 ms, as in
            // fixed-rate runs).
            let bracket = loop {
                let rate = match search::next(&params, &probes) {
                    Next::Probe(rate) => rate,
                    Next::Done(b) => break b,
                };
                if !alive() {
                    if probes.is_empty() {
                        return Err("the server was gone before the first step".into());
                    }
                    // The server died: judge what was measured.
                    break search::verdict(&params, &probes, search::End::ServerGone);
                }
                if !probes.is_empty() {
                    // Each step starts from a quiet server: closing the last
                    // step's connections (thousands, at high counts) is work
                    // the server does after that step, and it must not fall
                    // into this one.
                    wait_until_quiet(&cpu, stop);
                }
                let Some((r, m)) = one(connections, Some(rate))? else {
                    return Ok(None);
                };
                steps.push(AutoStep {
                    offered_rps: rate,
                    achieved_rps: m.throughput_rps,
                    objective_latency_ms: m.objective_latency_ms,
                    p50_ms: m.latency_ms.p50,
                    p99_ms: m.latency_ms.p99,
                    errors: m.errors,
                    starved_connections: m.starved_connections,
                    sustainable: m.meets_objective,
                    generator_bound: r.cpu.generator_bound,
                    server_cpu_s: m.server_cpu_s,
                    requests_per_cpu_s: m.requests_per_cpu_s,
                    host_steal: m.host_steal,
                });
                probes.push(Probe {
                    offered: rate,
                    achieved: m.throughput_rps,
                    sustainable: m.meets_objective,
                    generator_bound: r.cpu.generator_bound,
                    disturbed: m
                        .host_steal
                        .is_some_and(|s| s.may_explain(rate, m.throughput_rps, KEEP_UP)),
                });
                measured.push((r, m));
            };
            // The run's result is the measurement at the bracket's
            // sustainable end (a rate measured more than once: a passing
            // one, undisturbed if there is one); when nothing was
            // sustainable, the lowest failing step (so the report shows
            // why).
            let at = |rate: f64, pass: bool| {
                let here = |p: &&Probe| p.offered == rate && p.sustainable == pass;
                let calm = probes.iter().position(|p| here(&p) && !p.disturbed);
                calm.or_else(|| probes.iter().position(|p| here(&p)))
            };
            let pick = match (bracket.sustainable_rps, bracket.unsustainable_rps) {
                (Some(rate), _) => at(rate, true),
                (None, Some(rate)) => at(rate, false),
                (None, None) => None,
            };
            let Some(i) = pick else {
                return Err("the capacity search measured nothing".into());
            };
            let (report, metrics) = measured.swap_remove(i);
            let mut notes = notes_of(&report, &metrics);
            notes.extend(bracket_notes(&bracket, max));
            let limit = f64::from(connections) * 1e3 / workload_floor_ms(&workload.path);
            if bracket.unsustainable_rps.is_some() && metrics.throughput_rps > 0.7 * limit {
                notes.push(format!(
                    "near the generator's ceiling: {connections} connections can carry at most about {limit:.0} requests/s of this workload"
                ));
            }
            Ok(Some(Measured {
                report,
                metrics,
                steps,
                bracket: Some(bracket),
                notes,
            }))
        }
    }
}

/// Measures until a window the host did not disturb, at most
/// [`search::DISTURBED_TRIES`] times (once unless `remeasure`), and keeps
/// the least disturbed measurement; with how many were made. `None` when
/// a measurement was stopped.
fn least_disturbed<R>(
    remeasure: bool,
    mut measure: impl FnMut() -> Result<Option<(R, Metrics)>, String>,
) -> Result<Option<(R, Metrics, usize)>, String> {
    let stolen = |m: &Metrics| m.host_steal.map_or(0.0, |s| s.share());
    let Some(mut kept) = measure()? else {
        return Ok(None);
    };
    let mut tries = 1;
    while remeasure && tries < search::DISTURBED_TRIES && stolen(&kept.1) >= steal::DISTURBED {
        let Some(measured) = measure()? else {
            return Ok(None);
        };
        tries += 1;
        if stolen(&measured.1) < stolen(&kept.1) {
            kept = measured;
        }
    }
    Ok(Some((kept.0, kept.1, tries)))
}

/// Most a server may be busy (CPU-seconds per second) and count as quiet.
const QUIET_CPUS: f64 = 0.05;
/// Longest wait for a quiet server between two steps.
const QUIET_WAIT: Duration = Duration::from_secs(3);

/// Waits until the server's container used less than [`QUIET_CPUS`] over
/// 100 ms (at most [`QUIET_WAIT`]); without CPU accounting (no cgroup), a
/// fixed half second.
fn wait_until_quiet(cpu: &impl Fn() -> Option<f64>, stop: &AtomicBool) {
    let tick = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let Some(mut before) = cpu() else {
        std::thread::sleep(Duration::from_millis(500));
        return;
    };
    while started.elapsed() < QUIET_WAIT && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        let Some(now) = cpu() else { return };
        if now - before < QUIET_CPUS * tick.as_secs_f64() {
            return;
        }
        before = now;
    }
}

/// Caveats of a capacity search's verdict.
fn bracket_notes(b: &Bracket, max: f64) -> Vec<String> {
    let mut notes = Vec::new();
    match b.end {
        search::End::AtMax => notes.push(format!(
            "auto search stopped at its maximum rate ({max}/s) with the objective still met: the true limit is higher"
        )),
        search::End::StepLimit => notes.push(format!(
            "auto search used its {MAX_AUTO_STEPS} steps before the bracket was within {:.0} %",
            b.resolution * 100.0
        )),
        search::End::ServerGone => {
            notes.push("the server stopped before the capacity search finished".into())
        }
        search::End::NoneSustainable => notes.push(match b.unsustainable_rps {
            Some(lowest) => format!(
                "auto search: not even its lowest rate ({lowest:.0}/s) met the objective: the capacity lies below it (lower auto.start to measure it)"
            ),
            None => "auto search: no rate met the objective".into(),
        }),
        search::End::Converged => {}
    }
    if b.generator_bound {
        notes.push("generator-bound: the load generator was saturated at the first unsustainable rate, so the server's capacity may lie above it".into());
    }
    if b.disturbed {
        notes.push(format!(
            "disturbed bracket: its unsustainable end failed in {} measurements, each while the host took at least {:.0} % of the CPUs: the capacity may lie above it",
            search::DISTURBED_TRIES,
            steal::DISTURBED * 100.0
        ));
    }
    if b.non_monotonic {
        notes.push("non-monotonic: a rate above the bracket was sustainable (noise, or the server's capacity changed during the search)".into());
    }
    notes
}

/// The least time one request of `path` takes: its `io_ms=` wait, else
/// nothing to speak of. With one request in flight per connection, N
/// connections can carry at most N / that time requests per second.
fn workload_floor_ms(path: &str) -> f64 {
    path.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("io_ms="))
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Steal;

    fn stolen(share: f64) -> Metrics {
        Metrics {
            host_steal: Some(Steal {
                server: share,
                generator: share,
                server_worst: share,
                generator_worst: share,
            }),
            ..Default::default()
        }
    }

    /// Which measurement (1-based) was kept, and how many were made, when
    /// the host took `shares` of the CPUs in turn.
    fn kept_of(shares: &[f64]) -> (usize, usize) {
        let mut n = 0;
        let (kept, _, tries) = least_disturbed(true, || {
            n += 1;
            Ok(Some((n, stolen(shares[n - 1]))))
        })
        .unwrap()
        .unwrap();
        (kept, tries)
    }

    #[test]
    fn a_disturbed_window_is_measured_again_and_the_calmest_kept() {
        // 30 %, 40 %, then 5 %: three measurements, the third kept.
        assert_eq!(kept_of(&[0.30, 0.40, 0.05]), (3, 3));
        // Disturbed every time: three tries, the least disturbed kept.
        assert_eq!(kept_of(&[0.30, 0.20, 0.40]), (2, 3));
    }

    #[test]
    fn a_calm_window_or_a_run_that_cannot_repeat_is_measured_once() {
        assert_eq!(kept_of(&[0.02]), (1, 1));
        let got = least_disturbed(false, || Ok(Some(((), stolen(0.5)))))
            .unwrap()
            .unwrap();
        assert_eq!(got.2, 1, "cluster windows drive events: never repeated");
        // Without steal figures (not a VM, or no such column): once.
        let got = least_disturbed(true, || Ok(Some(((), Metrics::default()))))
            .unwrap()
            .unwrap();
        assert_eq!(got.2, 1);
        // A stop during a repeat ends the run without a result.
        let mut n = 0;
        let got = least_disturbed(true, || {
            n += 1;
            Ok((n == 1).then(|| ((), stolen(0.5))))
        })
        .unwrap();
        assert!(got.is_none());
    }
}
