//! `serverlab report --compare A B`: what changed between two result
//! folders, run by run (matched by key, repetitions averaged).

use super::analysis::Spread;
use crate::results::{RunRecord, Status, Store, StoreError};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use std::collections::BTreeMap;
use std::path::Path;

/// Mean metrics of the measured repetitions of each run key.
struct Means {
    throughput: Option<Spread>,
    p99: Option<Spread>,
    cpu_us_per_request: Option<Spread>,
}

fn means(runs: &[RunRecord]) -> BTreeMap<String, Means> {
    let mut by: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        by.entry(r.spec.group_key()).or_default().push(r);
    }
    by.into_iter()
        .map(|(k, rs)| {
            let ms: Vec<_> = rs
                .iter()
                .filter(|r| r.status == Status::Ok)
                .filter_map(|r| r.metrics.as_ref())
                .collect();
            let m = Means {
                throughput: Spread::of(ms.iter().map(|m| m.throughput_rps)),
                p99: Spread::of(ms.iter().map(|m| m.latency_ms.p99)),
                cpu_us_per_request: Spread::of(ms.iter().filter_map(|m| {
                    let cpu = m.server_cpu_s?;
                    (m.requests > 0).then(|| cpu * 1e6 / m.requests as f64)
                })),
            };
            (k, m)
        })
        .collect()
}

fn delta(a: Option<Spread>, b: Option<Spread>, digits: usize) -> String {
    match (a, b) {
        (Some(a), Some(b)) => {
            let pct = if a.mean.abs() > 1e-12 {
                format!("{:+.1}%", (b.mean - a.mean) / a.mean * 100.0)
            } else {
                "n/a".into()
            };
            format!("{:.digits$} → {:.digits$} ({pct})", a.mean, b.mean)
        }
        (Some(a), None) => format!("{:.digits$} → -", a.mean),
        (None, Some(b)) => format!("- → {:.digits$}", b.mean),
        (None, None) => "-".into(),
    }
}

/// A table of every run key present in both folders: throughput, p99 and
/// server CPU per request, A → B with the relative change; then the keys
/// found in only one of them.
pub fn compare(a: &Path, b: &Path) -> Result<String, StoreError> {
    let ra = Store::open(a)?.runs()?;
    let rb = Store::open(b)?.runs()?;
    let (ma, mb) = (means(&ra), means(&rb));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["run", "req/s", "p99 ms", "server CPU µs/request"]);
    let mut only_a = Vec::new();
    for (k, x) in &ma {
        match mb.get(k) {
            Some(y) => {
                t.add_row(vec![
                    k.clone(),
                    delta(x.throughput, y.throughput, 0),
                    delta(x.p99, y.p99, 2),
                    delta(x.cpu_us_per_request, y.cpu_us_per_request, 1),
                ]);
            }
            None => only_a.push(k.clone()),
        }
    }
    let only_b: Vec<_> = mb
        .keys()
        .filter(|k| !ma.contains_key(*k))
        .cloned()
        .collect();
    let suite = |runs: &[RunRecord]| runs.first().map(|r| r.suite.clone());
    let mut out = format!("A = {}\nB = {}\n", a.display(), b.display());
    if let (Some(sa), Some(sb)) = (suite(&ra), suite(&rb)) {
        if sa != sb {
            out.push_str(&format!(
                "A and B were made by different suites ({sa:?} and {sb:?}): only runs with the same key are compared\n"
            ));
        }
    }
    if ma.keys().all(|k| !mb.contains_key(k)) {
        out.push_str("no run key is in both folders: nothing to compare\n");
    } else {
        out.push_str(&format!("{t}\n"));
    }
    if !only_a.is_empty() {
        out.push_str(&format!("only in A: {}\n", only_a.join(", ")));
    }
    if !only_b.is_empty() {
        out.push_str(&format!("only in B: {}\n", only_b.join(", ")));
    }
    Ok(out)
}
