//! The answer as a terminal table, printed at the end of every suite.

use super::analysis::{self, Spread};
use super::{answer_cells, capacity_text, mib, rps};
use crate::results::RunRecord;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, Table};

/// One table per group: each contestant's sustainable throughput, where,
/// its latency at the objective, requests per CPU-second, peak memory and
/// problems; winners marked with `*`.
pub fn answer_table(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    let Some(first) = runs.first() else {
        return "no runs\n".to_string();
    };
    out.push_str(&format!(
        "Objective: {} (sustainable = every repetition met it; * = best, or not told apart from it)\n",
        first.objective.describe()
    ));
    let unlimited = runs.iter().filter(|r| r.unlimited).count();
    if unlimited > 0 {
        out.push_str(&format!(
            "UNLIMITED: {unlimited} of {} runs ran without a cgroup: no limits, no CPU per request, no memory comparison\n",
            runs.len()
        ));
    }
    if let Some(warning) = super::host_interference(runs) {
        out.push_str(&warning);
        out.push('\n');
    }
    let groups = analysis::groups(runs);
    for g in &groups {
        let a = g.answer();
        let per_cpu_at = |name: &str| {
            a.per_cpu_at_common
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
        };
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        let cpu_head = match &a.common {
            Some(c) => format!("req/CPU-s {}", c.describe()),
            None => "req/CPU-s".to_string(),
        };
        t.set_header(vec![
            "contestant",
            "sustainable req/s",
            "capacity",
            &format!("p{} ms", first.objective.percentile),
            &cpu_head,
            "own memory",
            "problems",
        ]);
        for b in &a.best {
            let star = |i: usize, text: String| {
                if a.wins(i, &b.contestant) {
                    format!("{text} *")
                } else {
                    text
                }
            };
            let s =
                |v: Option<Spread>, f: fn(f64) -> String| v.map_or("-".to_string(), |v| f(v.mean));
            t.add_row(vec![
                Cell::new(&b.contestant),
                Cell::new(star(0, s(b.throughput, rps))),
                Cell::new(b.capacity.map_or("none".into(), |c| capacity_text(&c))),
                Cell::new(s(b.objective_latency, |v| format!("{v:.2}"))),
                Cell::new(star(
                    1,
                    super::per_cpu_text(per_cpu_at(&b.contestant), |v| s(v, rps)),
                )),
                Cell::new(star(2, s(b.memory, mib))),
                Cell::new(summarise(&b.failures)),
            ]);
        }
        let [throughput, per_cpu, memory] = answer_cells(&a, false);
        let legend = if a.per_cpu_at_common.iter().any(|(_, p)| p.lower_bound) {
            format!(
                "  ≥ req/CPU-s: measured only while the host took {:.0} % or more of the CPUs (a lower bound)\n",
                analysis::EFFICIENCY_STEAL * 100.0
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "\n{} ({}, limits {}, state {})\n{t}\n  most throughput: {throughput}\n  most requests per CPU-second: {per_cpu}\n  least memory: {memory}\n{legend}",
            g.key.workload, g.path, g.key.limits, g.key.state
        ));
    }
    out
}

fn summarise(failures: &[String]) -> String {
    match failures.len() {
        0 => String::new(),
        1 => truncate(&failures[0], 60),
        n => format!("{n} runs: {}", truncate(&failures[0], 50)),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}
