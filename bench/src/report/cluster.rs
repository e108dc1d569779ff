//! The cluster part of the report: for every cluster run, how the answers
//! were shared among the replicas, what the dispatcher and the replicas
//! each spent per request, the errors clients saw (state errors apart),
//! and each event with the dispatcher's reaction; each migration (downtime,
//! rounds, bytes, dirty rate, what clients saw); in the HTML also the
//! failover timeline (answers, errors and p99 per interval, events marked,
//! a migration's phases shaded).

use super::{esc, plots};
use crate::results::RunRecord;
use crate::runner::cluster::{ClusterResult, EventResult, MigrationResult};
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
    let r = e.event.replica;
    let what = match e.event.action {
        Action::Kill => format!("kill r{r}"),
        Action::Restart => format!("restart r{r}"),
        Action::Slow { cpus } => format!("slow to {cpus} CPUs r{r}"),
        Action::Migrate { to, method, .. } => {
            let by = method.map_or("?", |m| m.as_str());
            format!("migrate r{r} to r{to} by {by}")
        }
    };
    let mut text = format!("{what} at {:.2} s", e.at_s);
    if let Some(why) = &e.error {
        text.push_str(&format!(": NOT APPLIED ({why})"));
    } else if matches!(e.event.action, Action::Migrate { .. }) {
        // Its outcome is in the migrations table.
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
/// errors, shares, dispatcher µs/request, replicas µs/request, the most
/// requests seen waiting in the proxy, events).
fn rows(runs: &[RunRecord]) -> Vec<[String; 9]> {
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
                c.queued_peak.map_or("—".into(), |n| n.to_string()),
                events.join("; "),
            ]
        })
        .collect()
}

const HEAD: [&str; 9] = [
    "run",
    "answers/s",
    "state errors",
    "other errors",
    "share per replica",
    "dispatcher µs/req",
    "replicas µs/req",
    "waiting in dispatcher (peak)",
    "events",
];

/// The terminal table (and the migrations', if any); `None` when no run
/// is a cluster run.
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
        "Clusters (CPU per answered request; state errors: sessions the counter flow lost)\n{t}\n{}",
        migration_table(runs).unwrap_or_default()
    ))
}

/// The HTML section; nothing when no run is a cluster run.
pub fn section(h: &mut String, runs: &[RunRecord]) {
    let rows = rows(runs);
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"clusters\">Clusters</h2>\n<p>Each replica ran in a container of its own, the dispatcher in another: CPU per request is each part's CPU over the measured window divided by the requests answered. A replica's share counts the answers it sent itself. State errors are counter-flow answers that broke a client's session (a 410 for a session the replica does not have, or a wrong value); other errors are failed connections, resets, timeouts and error answers. Waiting in dispatcher: the most requests (http) or client connections (splice) the dispatcher held for a connection to a replica at its <code>maxconn</code>, in its status read every 50 ms (— for an external dispatcher). Events are applied during the measured window; \"out after\" is how long the dispatcher took to take a replica out of its rotation (its status read every 50 ms).</p>\n<table><tr>");
    html_rows(h, &HEAD, &rows);
    migration_section(h, runs);
    for (i, (r, c)) in cluster_runs(runs).into_iter().enumerate() {
        if c.events.is_empty() {
            continue;
        }
        let Some(m) = &r.metrics else { continue };
        let marks: Vec<(f64, String)> = c
            .events
            .iter()
            .map(|e| {
                let label = match e.event.action {
                    Action::Kill => format!("kill r{}", e.event.replica),
                    Action::Restart => format!("restart r{}", e.event.replica),
                    Action::Slow { .. } => format!("slow r{}", e.event.replica),
                    Action::Migrate { to, .. } => format!("migrate r{}→r{to}", e.event.replica),
                };
                (e.at_s, label)
            })
            .chain(c.health.iter().map(|hc| {
                let state = if hc.up { "in" } else { "out" };
                (hc.t_s, format!("r{} {state}", hc.replica))
            }))
            .collect();
        let spans: Vec<plots::Span> = c
            .migrations
            .iter()
            .filter_map(|mig| Some((mig.at_s, mig.report.as_ref()?)))
            .flat_map(|(at_s, report)| {
                report.spans.iter().map(move |s| plots::Span {
                    start_s: at_s + s.start_s,
                    end_s: at_s + s.end_s,
                    label: s.phase.clone(),
                })
            })
            .collect();
        let svg = plots::failover(&m.timeline, &marks, &spans);
        let shaded = if spans.is_empty() {
            ""
        } else {
            "; a migration's phases shaded (copy: clients served while sessions are copied; pause: the migrating sessions' clients held; fetch: post-copy's destination fetching what it lacks)"
        };
        let _ = writeln!(
            h,
            "<figure id=\"failover-{i}\">{}<figcaption>Failover timeline of <code>{}</code>: answers per second (blue), errors per second (red) and p99 latency (grey, right axis) per interval; events and the dispatcher's reactions marked{shaded}.</figcaption></figure>",
            svg.unwrap_or_else(|e| format!("<p>(plot failed: {})</p>", esc(&e))),
            esc(&r.key)
        );
    }
}

/// One row per migration: (run, method, outcome, total, pause, longest
/// client wait, rounds, dirtied/s, sessions and bytes, post-copy fetches,
/// lost sessions and state errors, p99 before → during).
fn migration_rows(runs: &[RunRecord]) -> Vec<[String; 11]> {
    let mut out = Vec::new();
    for (r, c) in cluster_runs(runs) {
        for m in &c.migrations {
            out.push(migration_row(r, c, m));
        }
    }
    out
}

fn migration_row(r: &RunRecord, c: &ClusterResult, m: &MigrationResult) -> [String; 11] {
    let run = r.key.trim_end_matches("__rep1").to_string();
    let ms = |s: f64| format!("{:.1}", s * 1e3);
    let p99 = format!(
        "{} → {}",
        m.p99_before_ms.map_or("—".into(), |v| format!("{v:.1}")),
        m.p99_during_ms.map_or("—".into(), |v| format!("{v:.1}"))
    );
    let longest = c
        .client_longest
        .map_or("—".into(), |l| format!("{:.1}", l.max_ms));
    let Some(rep) = &m.report else {
        let why = m.error.as_deref().unwrap_or("no report");
        let mut row: [String; 11] = Default::default();
        row[0] = run;
        row[2] = format!("NOT RUN: {why}");
        return row;
    };
    let rounds: Vec<String> = rep
        .rounds
        .iter()
        .map(|x| {
            let paused = if x.paused { "*" } else { "" };
            format!("{}{paused} ({} B)", x.sessions, x.bytes)
        })
        .collect();
    let dirty: Vec<String> = rep.dirty_per_s.iter().map(|d| format!("{d:.0}")).collect();
    let outcome = match rep.outcome {
        dispatch::migrate::Outcome::Completed if m.after_window => {
            "completed AFTER THE WINDOW (without clients at the end)".to_string()
        }
        dispatch::migrate::Outcome::Completed => "completed".to_string(),
        dispatch::migrate::Outcome::Aborted => {
            format!("ABORTED: {}", rep.why.as_deref().unwrap_or("?"))
        }
    };
    let fetched = if rep.method == dispatch::migrate::Method::PostCopy {
        format!(
            "{} on demand, {} background; degraded {} ms",
            rep.on_demand,
            rep.background,
            ms(rep.degraded_s)
        )
    } else {
        "—".into()
    };
    [
        run,
        rep.method.as_str().to_string(),
        outcome,
        ms(rep.total_s),
        ms(rep.pause_s),
        longest,
        rounds.join(", "),
        if dirty.is_empty() {
            "—".into()
        } else {
            dirty.join(", ")
        },
        format!("{} / {} B", rep.sessions, rep.bytes),
        fetched,
        format!(
            "{} lost, {} state errors; p99 {p99} ms",
            rep.lost, c.state_errors
        ),
    ]
}

const MIGRATION_HEAD: [&str; 11] = [
    "run",
    "method",
    "outcome",
    "total ms",
    "pause ms",
    "longest client wait ms",
    "rounds: sessions (bytes), * paused",
    "dirtied/s per round",
    "sessions / bytes moved",
    "post-copy fetches",
    "lost, state errors; p99 before → during",
];

/// The terminal table of migrations; `None` when no run migrated.
fn migration_table(runs: &[RunRecord]) -> Option<String> {
    let rows = migration_rows(runs);
    if rows.is_empty() {
        return None;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(MIGRATION_HEAD);
    for row in rows {
        t.add_row(row);
    }
    Some(format!(
        "Migrations (pause: how long the migrating sessions' clients were held; state errors: counter-flow increments lost or repeated, must be 0)\n{t}\n"
    ))
}

/// The HTML section of migrations; nothing when no run migrated.
fn migration_section(h: &mut String, runs: &[RunRecord]) {
    let rows = migration_rows(runs);
    if rows.is_empty() {
        return;
    }
    h.push_str("<h2 id=\"migrations\">Migrations</h2>\n<p>Each migration moved one replica's sessions to another while clients ran the counter flow, coordinated by the dispatcher. <em>Pause</em> is how long the migrating sessions' clients were held at the dispatcher (the downtime); the longest client wait is the longest any client waited for one answer in the whole run. Rounds list the sessions (and bytes of session records) each copy round sent, the paused one starred; <em>dirtied/s</em> is how fast sessions changed during each pre-copy round after the first. Post-copy's <em>degraded</em> period runs from the switch until the destination held every session. State errors count increments lost or repeated (every method must have none). p99 is per interval: the median before the migration, the highest while it ran.</p>\n<table><tr>");
    html_rows(h, &MIGRATION_HEAD, &rows);
}

/// A table's head cells (its `<table><tr>` already written), its rows,
/// and its end.
fn html_rows<const N: usize>(h: &mut String, head: &[&str; N], rows: &[[String; N]]) {
    for cell in head {
        let _ = write!(h, "<th>{}</th>", esc(cell));
    }
    h.push_str("</tr>\n");
    for row in rows {
        h.push_str("<tr>");
        for cell in row {
            let _ = write!(h, "<td>{}</td>", esc(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}
