//! Assembles `report.html`: the answer first, then one section of plots
//! per group, then every run and the environment. One file, no scripts,
//! no external resources.

use super::analysis::{self, Group, Spread};
use super::plots::{self, CatSeries, Curve, Spectrum};
use super::{esc, mib, rps};
use crate::results::{Env, RunRecord, Status};
use crate::suite::LoadLevel;
use std::fmt::Write;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.win{font-weight:bold;background:#e6f4e6}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;font-weight:bold}
.plots{display:flex;flex-wrap:wrap;gap:12px}figure.plot{margin:0;border:1px solid #ddd;padding:4px}
figcaption{font-size:.85em;color:#555;max-width:640px}.legend span{display:inline-block;margin-right:1em}
.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
.failed{color:#a00}code{background:#f6f6f6;padding:0 3px}";

/// The whole page.
pub fn page(suite: &str, env: &Env, runs: &[RunRecord]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>serverlab report: {s}</title><style>{STYLE}</style></head><body>\n<h1>serverlab report: suite <code>{s}</code></h1>\n",
        s = esc(suite)
    );
    let _ = writeln!(
        h,
        "<p>{} runs; {} on {} ({} cores, kernel {}, cgroup v{}); serverlab {} at commit <code>{}</code>{}; {}.</p>",
        runs.len(),
        esc(&env.started),
        esc(&env.cpu_model),
        env.cores,
        esc(&env.kernel),
        esc(&env.cgroup_version),
        esc(&env.serverlab),
        esc(&env.commit),
        if env.dirty { " (with uncommitted changes)" } else { "" },
        esc(&env.rustc)
    );
    let unlimited = runs.iter().filter(|r| r.unlimited).count();
    if unlimited > 0 {
        let _ = writeln!(
            h,
            "<p class=\"warn\" id=\"unlimited\">UNLIMITED: {unlimited} of {} runs ran without a cgroup (the sandbox could not enforce limits here): their limits are not in force, their CPU time per request is not measured, and their memory is the largest process's peak (rusage), not the container's.</p>",
            runs.len()
        );
    }
    if let Some(warning) = super::host_interference(runs) {
        let _ = writeln!(h, "<p class=\"warn\" id=\"host\">{}</p>", esc(&warning));
    }
    if runs.is_empty() {
        h.push_str("<p>No runs yet.</p></body></html>\n");
        return h;
    }
    let objective = runs[0].objective;
    let groups = analysis::groups(runs);
    let show_limits = groups.iter().any(|g| g.key.limits != groups[0].key.limits);
    let show_state = groups.iter().any(|g| g.key.state != groups[0].key.state);
    let names = contestant_order(runs);

    // The answer first.
    let _ = writeln!(
        h,
        "<h2 id=\"answer\">The answer</h2>\n<p>Objective: {} with under 1 % errors (open loop: achieved ≥ 95 % of offered). A run with a starved connection (no answer in the whole window) never meets it. Sustainable throughput is the best load level at which every repetition met it (only open-loop and auto levels count when there are any); its capacity is the range the measurements allow (an auto search's bracket over every repetition), and contestants whose ranges overlap are not told apart. A figure limited by the load generator is only a lower bound. Requests per CPU-second are compared at one offered rate every contestant sustained, from the measurements during which the virtual machine's host took less than 1 % of the CPUs; a figure marked ≥ had none such and is only a lower bound (the host lowers this figure by up to half), and a contestant below the best on such figures alone is not compared; memory is the server's own (anonymous + shared, no page cache), never compared without a cgroup.</p>",
        esc(&objective.describe())
    );
    h.push_str("<table id=\"answer-table\"><tr><th>workload</th><th>most throughput at the objective</th><th>most requests per CPU-second</th><th>least memory</th></tr>\n");
    for g in &groups {
        let [throughput, per_cpu, memory] = super::answer_cells(&g.answer(), true);
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{throughput}</td><td>{per_cpu}</td><td>{memory}</td></tr>",
            esc(&g.key.title(show_limits, show_state)),
        );
    }
    h.push_str("</table>\n");

    for (gi, g) in groups.iter().enumerate() {
        group_section(&mut h, gi, g, &names, &objective, show_limits, show_state);
    }
    super::cluster::section(&mut h, runs);
    runs_table(&mut h, runs);
    let _ = writeln!(
        h,
        "<h2>Environment</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(env).unwrap_or_default())
    );
    h
}

fn contestant_order(runs: &[RunRecord]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        let n = r.spec.subject();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

fn colour_of(names: &[String], name: &str) -> usize {
    names.iter().position(|n| n == name).unwrap_or(0)
}

fn spread_text(s: Option<Spread>, f: fn(f64) -> String) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{} ({}–{})", f(s.mean), f(s.min), f(s.max)),
        Some(s) => f(s.mean),
        None => "—".into(),
    }
}

fn group_section(
    h: &mut String,
    gi: usize,
    g: &Group,
    names: &[String],
    objective: &crate::suite::Objective,
    show_limits: bool,
    show_state: bool,
) {
    let _ = writeln!(
        h,
        "<h2 id=\"group-{gi}\">{} <small><code>{}</code></small></h2>",
        esc(&g.key.title(show_limits, show_state)),
        esc(&g.path)
    );
    let answer = g.answer();
    let _ = writeln!(
        h,
        "<table><tr><th>contestant</th><th>sustainable req/s (min–max)</th><th>capacity</th><th>at load</th><th>objective latency, ms</th><th>req/CPU-s {}</th><th>own memory (page cache)</th><th>problems</th></tr>",
        esc(&answer.common.as_ref().map_or(String::new(), |c| c.describe()))
    );
    for b in &answer.best {
        let per_cpu = answer
            .per_cpu_at_common
            .iter()
            .find(|(n, _)| *n == b.contestant)
            .map(|(_, p)| *p);
        let win = |i: usize| {
            if answer.wins(i, &b.contestant) {
                " class=\"win\""
            } else {
                ""
            }
        };
        let cache = b
            .load
            .and_then(|i| {
                g.contestants
                    .iter()
                    .find(|(n, _)| *n == b.contestant)
                    .map(|(_, c)| &c[i])
            })
            .and_then(|c| c.spread(|m| m.memory_cache_bytes.map(|v| v as f64)));
        let _ = writeln!(
            h,
            "<tr><td><span class=\"sw\" style=\"background:{}\"></span>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td{}>{} ({})</td><td class=\"failed\">{}</td></tr>",
            hex(colour_of(names, &b.contestant)),
            esc(&b.contestant),
            win(0),
            spread_text(b.throughput, rps),
            esc(&b.capacity.map_or("none".into(), |c| super::capacity_text(&c))),
            b.load.map_or("none".into(), |i| g.loads[i].label()),
            spread_text(b.objective_latency, |v| format!("{v:.2}")),
            win(1),
            super::per_cpu_text(per_cpu, |v| spread_text(v, rps)),
            win(2),
            spread_text(b.memory, mib),
            spread_text(cache, mib),
            esc(&b.failures.join("; "))
        );
    }
    h.push_str("</table>\n<p class=\"legend\">");
    for (name, _) in &g.contestants {
        let _ = write!(
            h,
            "<span><span class=\"sw\" style=\"background:{}\"></span>{}</span>",
            hex(colour_of(names, name)),
            esc(name)
        );
    }
    h.push_str("</p>\n<div class=\"plots\">\n");
    let labels: Vec<String> = g.loads.iter().map(LoadLevel::label).collect();
    let cat = |f: fn(&crate::results::Metrics) -> Option<f64>| -> Vec<CatSeries> {
        g.contestants
            .iter()
            .map(|(name, cells)| CatSeries {
                name: name.clone(),
                colour: colour_of(names, name),
                values: cells.iter().map(|c| c.spread(f)).collect(),
            })
            .collect()
    };
    let load_desc =
        "load level (cN: N connections, closed loop; rR: R req/s; auto: best sustainable step)";
    figure(
        h,
        "throughput",
        "Throughput against load (min–max over repetitions as error bars).",
        plots::categorical(
            &labels,
            load_desc,
            "responses/s",
            &cat(|m| Some(m.throughput_rps)),
        ),
    );
    figure(
        h,
        "cpu",
        "Server CPU used (CPUs busy = CPU-seconds / second), from the container's accounting.",
        plots::categorical(
            &labels,
            load_desc,
            "CPUs busy",
            &cat(|m| m.server_cpu_s.map(|c| c / m.duration_s.max(1e-9))),
        ),
    );
    figure(
        h,
        "memory",
        "The server's own peak memory (anonymous + shared, no page cache), MiB; sampled from the container's memory statistics.",
        plots::categorical(
            &labels,
            load_desc,
            "MiB",
            &cat(|m| m.memory_own_bytes.map(|b| b as f64 / 1048576.0)),
        ),
    );
    for (li, load) in g.loads.iter().enumerate() {
        let spectra: Vec<Spectrum> = g
            .contestants
            .iter()
            .filter_map(|(name, cells)| {
                spectrum_of(&cells[li]).map(|points| Spectrum {
                    colour: colour_of(names, name),
                    points,
                })
            })
            .collect();
        let objective_point = Some((objective.percentile, objective.latency.as_secs_f64() * 1e3));
        let marked = marked_runs(g, li);
        figure(h, &format!("spectrum-{}", load.label()),
            &format!("Latency percentile spectrum at {} (corrected for coordinated omission in open loop; band: min–max over repetitions; red circle: the objective).{marked}", load.label()),
            plots::spectrum(&spectra, objective_point));
        let timelines: Vec<Curve> = g
            .contestants
            .iter()
            .filter_map(|(name, cells)| {
                let m = cells[li].metrics().into_iter().next()?;
                Some(Curve {
                    colour: colour_of(names, name),
                    points: m.timeline.iter().map(|t| (t.t_s, t.p99_ms)).collect(),
                })
            })
            .collect();
        figure(
            h,
            &format!("timeline-{}", load.label()),
            &format!(
                "p99 latency over time at {} (first measured repetition), ms.{marked}",
                load.label()
            ),
            plots::curves(&timelines, "seconds", "p99 latency, ms", false),
        );
        if matches!(load, LoadLevel::Auto { .. }) {
            let steps: Vec<Curve> = g
                .contestants
                .iter()
                .filter_map(|(name, cells)| {
                    let r = cells[li].runs.iter().find(|r| !r.auto_steps.is_empty())?;
                    Some(Curve {
                        colour: colour_of(names, name),
                        points: sorted_steps(&r.auto_steps),
                    })
                })
                .collect();
            figure(h, "auto-steps", "Auto load: achieved against offered rate, each step of the search (first repetition).",
                plots::curves(&steps, "offered req/s", "achieved req/s", true));
            let capacity: Vec<plots::CapacityCurve> = g
                .contestants
                .iter()
                .filter_map(|(name, cells)| {
                    let r = cells[li].runs.iter().find(|r| !r.auto_steps.is_empty())?;
                    let mut steps = r.auto_steps.clone();
                    steps.sort_by(|a, b| a.offered_rps.total_cmp(&b.offered_rps));
                    let achieved_at = |rate: Option<f64>| {
                        rate.and_then(|x| steps.iter().find(|s| s.offered_rps == x))
                            .map(|s| s.achieved_rps)
                    };
                    let bracket = r.bracket.map_or((None, None), |b| {
                        (
                            achieved_at(b.sustainable_rps),
                            achieved_at(b.unsustainable_rps),
                        )
                    });
                    Some(plots::CapacityCurve {
                        colour: colour_of(names, name),
                        steps: steps
                            .iter()
                            .map(|s| (s.achieved_rps, s.p50_ms, s.p99_ms, s.sustainable))
                            .collect(),
                        bracket,
                    })
                })
                .collect();
            figure(h, "capacity", "Capacity curve: p50 (thin) and p99 (thick) latency against achieved throughput, every step of the capacity search (first repetition); filled dots met the objective (red line), hollow ones did not; ticks at the bottom mark each contestant's bracket.",
                plots::capacity(&capacity, objective.latency.as_secs_f64() * 1e3));
        }
    }
    h.push_str("</div>\n");
}

/// A caption's warning naming the contestants whose runs at load `li`
/// starved connections or failed, so no plot shows them unmarked.
fn marked_runs(g: &Group, li: usize) -> String {
    let mut starved = Vec::new();
    let mut failed = Vec::new();
    for (name, cells) in &g.contestants {
        let runs = &cells[li].runs;
        if runs.iter().any(|r| {
            r.metrics
                .as_ref()
                .is_some_and(|m| m.starved_connections > 0)
        }) {
            starved.push(name.clone());
        }
        if runs.iter().any(|r| r.status != crate::results::Status::Ok) {
            failed.push(name.clone());
        }
    }
    let mut out = String::new();
    if !starved.is_empty() {
        out.push_str(&format!(
            " STARVED connections (clients never answered in the window) in the runs of: {}.",
            starved.join(", ")
        ));
    }
    if !failed.is_empty() {
        out.push_str(&format!(
            " FAILED runs (not plotted): {}.",
            failed.join(", ")
        ));
    }
    out
}

/// Per-percentile spread over the measured repetitions of one cell.
fn spectrum_of(cell: &analysis::Cell) -> Option<Vec<(f64, Spread)>> {
    let ms = cell.metrics();
    let first = ms.first()?;
    let points: Vec<(f64, Spread)> = first
        .spectrum
        .iter()
        .enumerate()
        .filter_map(|(i, (p, _))| {
            Spread::of(ms.iter().filter_map(|m| m.spectrum.get(i).map(|x| x.1))).map(|s| (*p, s))
        })
        .collect();
    (!points.is_empty()).then_some(points)
}

fn figure(h: &mut String, id: &str, caption: &str, svg: Result<String, String>) {
    match svg {
        Ok(svg) => {
            let _ = writeln!(
                h,
                "<figure class=\"plot\" data-plot=\"{}\">{svg}<figcaption>{}</figcaption></figure>",
                esc(id),
                esc(caption)
            );
        }
        Err(e) => {
            let _ = writeln!(
                h,
                "<p class=\"failed\">plot {} could not be drawn: {}</p>",
                esc(id),
                esc(&e)
            );
        }
    }
}

fn hex(i: usize) -> String {
    let c = plots::colour(i);
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn runs_table(h: &mut String, runs: &[RunRecord]) {
    h.push_str("<h2 id=\"runs\">Every run</h2>\n<table><tr><th>run</th><th>status</th><th>req/s</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>errors</th><th>meets objective</th><th>CPU s</th><th>peak memory</th><th title=\"most open at once in the measured window, from the server's own counters (n/a: an external server has none)\">server connections / workers</th><th>note</th></tr>\n");
    for r in runs {
        let m = r.metrics.as_ref();
        let f = |v: Option<f64>, d: usize| v.map_or("—".into(), |v| format!("{v:.d$}"));
        let mut note = r.reason.clone().unwrap_or_default();
        if r.unlimited {
            note = format!("UNLIMITED {note}");
        }
        if !r.background.is_empty() {
            let groups: Vec<String> = r.background.iter().map(|g| g.describe()).collect();
            note = format!("{note} background: {}", groups.join("; "))
                .trim()
                .to_string();
        }
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.key),
            if r.status == Status::Ok { "" } else { " class=\"failed\"" },
            r.status.as_str(),
            f(m.map(|m| m.throughput_rps), 0),
            f(m.map(|m| m.latency_ms.p50), 2),
            f(m.map(|m| m.latency_ms.p99), 2),
            f(m.map(|m| m.latency_ms.max), 2),
            m.map_or("—".into(), |m| m.errors.to_string()),
            m.map_or("—".into(), |m| m.meets_objective.to_string()),
            f(m.and_then(|m| m.server_cpu_s), 3),
            m.and_then(|m| m.memory_peak_bytes).map_or("—".into(), |b| mib(b as f64)),
            server_peaks(r),
            esc(&note)
        );
    }
    h.push_str("</table>\n");
}

/// "connections / workers" at their peaks; n/a when the server keeps no
/// such counters (external contestants) or the run measured nothing.
fn server_peaks(r: &RunRecord) -> String {
    match r
        .metrics
        .as_ref()
        .map(|m| (m.server_connections_peak, m.server_workers_peak))
    {
        Some((Some(c), Some(w))) => format!("{c} / {w}"),
        _ => "n/a".into(),
    }
}

/// Auto steps as (offered, achieved) in order of offered rate (the search
/// goes back down when it refines, which would draw a zig-zag).
fn sorted_steps(steps: &[crate::results::AutoStep]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (s.offered_rps, s.achieved_rps))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}
