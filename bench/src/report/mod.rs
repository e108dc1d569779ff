//! The report: `report.html` (self-contained, inline SVG), the terminal
//! answer table, and the comparison of two result folders.
//!
//! The HTML opens with the answer — per workload, the most efficient
//! contestant by sustainable throughput at the objective, by requests per
//! CPU-second and by memory — then the plots: throughput against load,
//! latency spectra on a "nines" axis, latency over time, CPU and memory,
//! each with the spread over repetitions.

pub mod analysis;
mod compare;
mod html;
pub mod plots;
mod table;

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

/// Formats bytes as MiB.
pub(crate) fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests;
