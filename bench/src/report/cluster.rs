//! The cluster part of the report: for every cluster run, how the answers
//! were shared among the replicas, what the dispatcher and the replicas
//! each spent per request, the errors clients saw (state errors apart),
//! and each event with the dispatcher's reaction; in the HTML also the
//! failover timeline (answers, errors and p99 per interval, events marked).

use super::{esc, plots};
use crate::results::RunRecord;
use crate::runner::cluster::{ClusterResult, EventResult};
use crate::suite::cluster::Action;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use std::fmt::Write;

/// The cluster runs of `runs`, each with its result.
fn cluster_runs(runs: &[RunRecord]) -> Vec<(&RunRecord, &ClusterResult)> {
    runs.iter()
        .filter_map(|r| Some((r, r.cluster.as_ref()?)))
        .collect()
}

/// "52/48 %".
pub fn shares(c: &ClusterResult) -> String {
    let parts: Vec<String> = c
        .replicas
        .iter()
        .map(|r| r.share.map_or("?".into(), |s| format!("{:.0}", s * 100.0)))
        .collect();
    format!("{} %", parts.join("/"))
}

/// "kill r2 at 1.01 s: out after 0.00 s" (`watched`: whether the
/// dispatcher's rotation was seen, so that its reaction is known).
pub fn event_text(e: &EventResult, watched: bool) -> String {
    let what = match e.event.action {
        Action::Kill => "kill".to_string(),
        Action::Restart => "restart".to_string(),
        Action::Slow { cpus } => format!("slow to {cpus} CPUs"),
    };
    let mut text = format!("{what} r{} at {:.2} s", e.event.replica, e.at_s);
    if let Some(why) = &e.error {
        text.push_str(&format!(": NOT APPLIED ({why})"));
    } else if !watched {
        // An external dispatcher: its rotation is not seen.
    } else if e.event.action == Action::Restart {
        match e.back_after_s {
            Some(s) => text.push_str(&format!(": back after {s:.2} s")),
            None => text.push_str(": not back by the end"),
        }
    } else {
        match e.out_after_s {
            Some(s) => text.push_str(&format!(": out after {s:.2} s")),
            None => text.push_str(": never taken out"),
        }
    }
    text
}

fn micros(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1}"))
}

/// One row per cluster run: (run, answered req/s, state errors, other
/// errors, shares, dispatcher µs/request, replicas µs/request, events).
fn rows(runs: &[RunRecord]) -> Vec<[String; 8]> {
    cluster_runs(runs)
        .into_iter()
        .map(|(r, c)| {
            let events: Vec<String> = c.events.iter().map(|e| event_text(e, c.watched)).collect();
            [
                r.key.trim_end_matches("__rep1").to_string(),
                r.metrics
                    .as_ref()
                    .map_or("—".into(), |m| format!("{:.0}", m.throughput_rps)),
                c.state_errors.to_string(),
                c.other_errors.to_string(),
                shares(c),
                micros(c.dispatcher_us_per_request),
                micros(c.replicas_us_per_request),
                events.join("; "),
            ]
        })
        .collect()
}

const HEAD: [&str; 8] = [
    "run",
    "answers/s",
    "state errors",
    "other errors",
    "share per replica",
    "dispatcher µs/req",
    "replicas µs/req",
    "events",
];

/// The terminal table; `None` when no run is a cluster run.
pub fn cluster_table(runs: &[RunRecord]) -> Option<String> {
    let rows = rows(runs);
    if rows.is_empty() {
        return None;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(HEAD);
    for row in rows {
        t.add_row(row);
    }
    Some(format!(
        "Clusters (CPU per answered request; state errors: sessions the counter flow lost)\n{t}\n"
    ))
}

/// The HTML section; nothing when no run is a cluster run.
pub fn section(h: &mut String, runs: &[RunRecord]) {
    let rows = rows(runs);
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"clusters\">Clusters</h2>\n<p>Each replica ran in a container of its own, the dispatcher in another: CPU per request is each part's CPU over the measured window divided by the requests answered. A replica's share counts the answers it sent itself. State errors are counter-flow answers that broke a client's session (a 410 for a session the replica does not have, or a wrong value); other errors are failed connections, resets, timeouts and error answers. Events are applied during the measured window; \"out after\" is how long the dispatcher took to take a replica out of its rotation (its status read every 50 ms).</p>\n<table><tr>");
    for head in HEAD {
        let _ = write!(h, "<th>{}</th>", esc(head));
    }
    h.push_str("</tr>\n");
    for row in &rows {
        h.push_str("<tr>");
        for cell in row {
            let _ = write!(h, "<td>{}</td>", esc(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    for (i, (r, c)) in cluster_runs(runs).into_iter().enumerate() {
        if c.events.is_empty() {
            continue;
        }
        let Some(m) = &r.metrics else { continue };
        let marks: Vec<(f64, String)> = c
            .events
            .iter()
            .map(|e| {
                let verb = match e.event.action {
                    Action::Kill => "kill",
                    Action::Restart => "restart",
                    Action::Slow { .. } => "slow",
                };
                (e.at_s, format!("{verb} r{}", e.event.replica))
            })
            .chain(c.health.iter().map(|hc| {
                let state = if hc.up { "in" } else { "out" };
                (hc.t_s, format!("r{} {state}", hc.replica))
            }))
            .collect();
        let svg = plots::failover(&m.timeline, &marks);
        let _ = writeln!(
            h,
            "<figure id=\"failover-{i}\">{}<figcaption>Failover timeline of <code>{}</code>: answers per second (blue), errors per second (red) and p99 latency (grey, right axis) per interval; events and the dispatcher's reactions marked.</figcaption></figure>",
            svg.unwrap_or_else(|e| format!("<p>(plot failed: {})</p>", esc(&e))),
            esc(&r.key)
        );
    }
}
