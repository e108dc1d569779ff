//! The report: `report.html` (self-contained, inline SVG), the terminal
//! answer table, and the comparison of two result folders.
//!
//! The HTML opens with the answer — per workload, the most efficient
//! contestant by sustainable throughput at the objective, by requests per
//! CPU-second and by memory — then the plots: throughput against load,
//! latency spectra on a "nines" axis, latency over time, CPU and memory,
//! each with the spread over repetitions.

pub mod analysis;
mod cluster;
mod compare;
mod html;
pub mod plots;
mod table;

pub use cluster::cluster_table;
pub use compare::compare;
pub use table::answer_table;

use crate::results::{Store, StoreError};
use std::path::{Path, PathBuf};

/// Renders `report.html` in the results folder `dir` from its run files and
/// returns its path.
pub fn render(dir: &Path) -> Result<PathBuf, StoreError> {
    let store = Store::open(dir)?;
    let runs = store.runs()?;
    let env = store.env()?;
    let suite_name = runs.first().map(|r| r.suite.clone()).unwrap_or_else(|| {
        dir.file_name()
            .map_or("suite".into(), |n| n.to_string_lossy().into_owned())
    });
    let html = html::page(&suite_name, &env, &runs);
    store.write_summary(&runs)?;
    store.write_file("report.html", html.as_bytes())
}

/// A warning when the virtual machine's host took a share of the CPUs
/// during some runs' measurements (`None` when it never did).
pub(crate) fn host_interference(runs: &[crate::results::RunRecord]) -> Option<String> {
    let stolen = |r: &crate::results::RunRecord| {
        let steps = r.auto_steps.iter().filter_map(|s| s.host_steal);
        r.metrics
            .as_ref()
            .and_then(|m| m.host_steal)
            .into_iter()
            .chain(steps)
            .filter(|s| s.disturbed())
            .map(|s| s.share())
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))))
    };
    let worst: Vec<f64> = runs.iter().filter_map(stolen).collect();
    let most = worst.iter().copied().fold(0.0, f64::max);
    (!worst.is_empty()).then(|| {
        format!(
            "HOST INTERFERENCE: the virtual machine's host took at least {:.0} % of the CPUs during measurements of {} of {} runs (at most {:.0} %): a failed step measured then was measured again, and the runs' notes say which figures are doubtful",
            crate::runner::steal::DISTURBED * 100.0,
            worst.len(),
            runs.len(),
            most * 100.0
        )
    })
}

/// Escapes text for HTML.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Formats a requests-per-second figure.
pub(crate) fn rps(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A capacity range in words: `118000–124000`, or `≥ 118000 (limited by
/// the load generator)`.
pub(crate) fn capacity_text(c: &analysis::Capacity) -> String {
    match (c.high, c.open_because) {
        (Some(h), _) => format!("{}–{}", rps(c.low), rps(h)),
        (None, Some(why)) => format!("≥ {} ({why})", rps(c.low)),
        (None, None) => format!("≥ {}", rps(c.low)),
    }
}

/// The answer's three cells in plain text (HTML-escaped when `html`):
/// throughput, CPU efficiency, memory.
pub(crate) fn answer_cells(a: &analysis::Answer, html: bool) -> [String; 3] {
    let e = |s: &str| if html { esc(s) } else { s.to_string() };
    let bold = |s: &str| {
        if html {
            format!("<b>{}</b>", esc(s))
        } else {
            s.to_string()
        }
    };
    let find = |n: &str| a.best.iter().find(|b| b.contestant == n);
    let others = |names: &[String]| names.iter().map(|n| e(n)).collect::<Vec<_>>().join(", ");
    let throughput = match (a.unseparated, a.throughput.first()) {
        (Some(rate), _) => format!(
            "not separated: every contestant sustained the highest rate offered ({} req/s)",
            rps(rate)
        ),
        (None, None) => "— (none sustainable or not measured)".to_string(),
        (None, Some(n)) => {
            let b = find(n).expect("winner is in best");
            let t = b.throughput.map_or(0.0, |s| s.mean);
            let mut text = match (a.throughput_open, b.capacity) {
                (Some(why), _) => format!("{} (at least {} req/s: {why})", bold(n), rps(t)),
                (None, Some(c)) => format!(
                    "{} ({} req/s; capacity {})",
                    bold(n),
                    rps(t),
                    capacity_text(&c)
                ),
                (None, None) => format!("{} ({} req/s)", bold(n), rps(t)),
            };
            if a.throughput.len() > 1 {
                text.push_str(&format!(
                    "; not told apart from {} (capacity ranges overlap)",
                    others(&a.throughput[1..])
                ));
            }
            text
        }
    };
    let per_cpu = match (a.per_cpu.first(), &a.common) {
        (Some((n, p)), Some(common)) => {
            let mut text = format!(
                "{} ({}{} req/CPU-s {}, the highest load every ranked contestant sustained)",
                bold(n),
                if p.lower_bound { "at least " } else { "" },
                rps(p.spread.mean),
                e(&common.describe())
            );
            if a.per_cpu.len() > 1 {
                let names: Vec<String> = a.per_cpu[1..].iter().map(|(n, _)| n.clone()).collect();
                text.push_str(&format!("; tied with {}", others(&names)));
            }
            if !a.per_cpu_uncompared.is_empty() {
                text.push_str(&format!(
                    "; not compared: {} (measured only while the host took {:.0} % or more of the CPUs, which lowers this figure by up to half)",
                    others(&a.per_cpu_uncompared),
                    analysis::EFFICIENCY_STEAL * 100.0
                ));
            }
            text
        }
        _ => "— (no load every contestant sustained, or CPU not measured)".to_string(),
    };
    let memory = match a.memory.first() {
        _ if a.memory_unmeasured => "— (runs without a cgroup: memory not compared)".to_string(),
        None => "— (not measured)".to_string(),
        Some(n) => {
            let b = find(n).expect("winner is in best");
            let mut text = format!(
                "{} ({} own)",
                bold(n),
                mib(b.memory.map_or(0.0, |s| s.mean))
            );
            if a.memory.len() > 1 {
                text.push_str(&format!(
                    "; tied within 2 % with {}",
                    others(&a.memory[1..])
                ));
            }
            text
        }
    };
    [throughput, per_cpu, memory]
}

/// A contestant's requests per CPU-second for a table cell, formatted by
/// `f` (given `None` when there is none): `≥` before a lower bound (every
/// figure measured while the host took the CPUs).
pub(crate) fn per_cpu_text(
    p: Option<analysis::PerCpu>,
    f: impl Fn(Option<analysis::Spread>) -> String,
) -> String {
    match p {
        Some(p) if p.lower_bound => format!("≥{}", f(Some(p.spread))),
        p => f(p.map(|p| p.spread)),
    }
}

/// Formats bytes as MiB.
pub(crate) fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
pub(crate) mod tests;
