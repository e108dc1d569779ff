//! Live migration of one replica's sessions to another, coordinated by the
//! dispatcher: it alone can pause the clients of those sessions (in the
//! http proxy, [`crate::proxy::Command`]) and switch where they go (the
//! source's route now leads to the destination). The replicas move the
//! state themselves through their `/migrate/...` endpoints
//! (`servers::state::migrate`).
//!
//! - **pre-copy**: copy every session while the source serves on; copy
//!   again what was dirtied meanwhile, round after round, until a round
//!   copies at most `threshold` sessions, stops shrinking, or `max_rounds`
//!   were run; then pause, copy the rest, switch, release.
//! - **stop-and-copy**: pause, copy everything, switch, release.
//! - **post-copy**: the destination is told to fetch on first use; pause
//!   only until the requests with the source are answered, switch,
//!   release; then the rest is moved in batches in the background.
//!
//! Why no increment is lost or repeated: the final copy starts only once
//! the pause has *drained* — no request for those sessions is with any
//! replica, and new ones are held — so the source's table no longer
//! changes; the switch happens before the release. In post-copy, a session
//! taken from the source is marked moved there (it answers the same value
//! again, and serves no increment), and the destination stores a fetched
//! session only if it does not hold it yet, one import at a time.
//!
//! Failures: a destination that fails aborts the migration — before the
//! switch the source simply keeps its sessions (the copies are withdrawn
//! from the destination, best effort); in post-copy the route goes back to
//! the source, which forgets the sessions already moved (they are lost, and
//! counted). A source that fails in post-copy loses the sessions not yet
//! fetched, counted too.

use crate::proxy::Command;
use crate::{Dispatcher, Mode, NOWHERE};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout of each request to a replica.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the pause may wait for requests in flight to be answered.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Sessions per import request and per post-copy batch.
pub const BATCH: usize = 256;

/// How the sessions move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    PreCopy,
    StopAndCopy,
    PostCopy,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::PreCopy, Method::StopAndCopy, Method::PostCopy];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::PreCopy => "pre-copy",
            Method::StopAndCopy => "stop-and-copy",
            Method::PostCopy => "post-copy",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Method, String> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?}: methods are pre-copy, stop-and-copy and post-copy"))
    }
}

/// What to migrate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The replicas, by index.
    pub from: usize,
    pub to: usize,
    pub method: Method,
    /// Pre-copy: a round copying at most this many sessions is the last
    /// before the pause.
    pub threshold: u64,
    /// Pre-copy: most rounds before the pause.
    pub max_rounds: u32,
    /// Bytes of session records per second sent while clients are served
    /// (pre-copy's live rounds, post-copy's background copy); `None`: as
    /// fast as the replicas go. Copies during the pause are never held back
    /// (nobody is served then to protect). Live migration caps its
    /// bandwidth so that copying does not crowd out serving; here, where a
    /// session is a few dozen bytes, the cap also stands in for the larger
    /// state a real server would hold.
    pub bandwidth: Option<u64>,
}

impl Plan {
    /// The defaults: pause once a round copies 50 sessions or fewer, after
    /// at most 8 rounds.
    pub fn new(from: usize, to: usize, method: Method) -> Plan {
        Plan {
            from,
            to,
            method,
            threshold: 50,
            max_rounds: 8,
            bandwidth: None,
        }
    }

    /// The dispatcher's status path that asks for this migration
    /// (`POST`; replicas 1-based there; parsed back by
    /// [`crate::migrate_plan`]).
    pub fn path(&self) -> String {
        let mut path = format!(
            "/migrate?from={}&to={}&method={}&threshold={}&rounds={}",
            self.from + 1,
            self.to + 1,
            self.method.as_str(),
            self.threshold,
            self.max_rounds
        );
        if let Some(b) = self.bandwidth {
            path.push_str(&format!("&bandwidth={b}"));
        }
        path
    }
}

/// Asks the dispatcher whose status address is `status` for `plan`, and
/// waits (at most `timeout`) for its report. `Err`: it could not be asked,
/// or refused (the reason is its answer).
pub fn request(status: SocketAddr, plan: &Plan, timeout: Duration) -> Result<Report, String> {
    let (code, body) = servers::probe::post(status, &plan.path(), b"", timeout)
        .map_err(|e| format!("the dispatcher's status address {status}: {e}"))?;
    if code != 200 {
        return Err(format!("the dispatcher refused: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("the dispatcher's report: {e}"))
}

/// `100000`, `100k` or `2M` bytes per second.
pub fn bytes_per_s(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000),
        None => match text.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (text, 1),
        },
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?}: bytes per second, e.g. 100k"))
}

/// How a migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The sessions are at the destination (`lost` may still count
    /// sessions a failed source never gave).
    Completed,
    /// The sessions stayed at (or went back to) the source.
    Aborted,
}

/// One copy round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Sessions copied (including ones removed at the source).
    pub sessions: u64,
    /// Bytes of session records sent.
    pub bytes: u64,
    /// Seconds the round took.
    pub secs: f64,
    /// Whether it ran during the pause.
    pub paused: bool,
}

/// A stretch of the migration, for the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// `copy`, `pause` or `fetch`.
    pub phase: String,
    /// Seconds from the migration's start.
    pub start_s: f64,
    pub end_s: f64,
}

/// What a migration did, as measured by its coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub method: Method,
    pub from: String,
    pub to: String,
    pub outcome: Outcome,
    /// Why it aborted, or what went wrong.
    pub why: Option<String>,
    /// From the start to the last session at the destination (or the abort).
    pub total_s: f64,
    /// How long the sessions' clients were held.
    pub pause_s: f64,
    /// Post-copy: from the switch to the last session fetched.
    pub degraded_s: f64,
    /// Copy rounds (pre-copy: the last is the paused one; stop-and-copy:
    /// one, paused; post-copy: the background batches as one).
    pub rounds: Vec<Round>,
    /// Sessions (per second of the round before) dirtied during each
    /// pre-copy round after the first.
    pub dirty_per_s: Vec<f64>,
    /// Sessions at the destination at the end that came from the source.
    pub sessions: u64,
    /// Bytes of session records sent in all.
    pub bytes: u64,
    /// Post-copy: sessions fetched on a client's first request, and by the
    /// background copy.
    pub on_demand: u64,
    pub background: u64,
    /// Sessions lost by a failure (see the module doc).
    pub lost: u64,
    pub spans: Vec<Span>,
}

impl Report {
    /// A few lines for a person.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "{} of {}'s sessions to {}: {} in {:.3} s, clients paused {:.1} ms",
            self.method.as_str(),
            self.from,
            self.to,
            match self.outcome {
                Outcome::Completed => "completed",
                Outcome::Aborted => "ABORTED",
            },
            self.total_s,
            self.pause_s * 1e3,
        );
        let _ = write!(
            out,
            "\n  {} sessions moved, {} bytes",
            self.sessions, self.bytes
        );
        for (i, r) in self.rounds.iter().enumerate() {
            let _ = write!(
                out,
                "\n  round {}: {} sessions, {} bytes, {:.1} ms{}",
                i + 1,
                r.sessions,
                r.bytes,
                r.secs * 1e3,
                if r.paused { " (paused)" } else { "" }
            );
        }
        if !self.dirty_per_s.is_empty() {
            let rates: Vec<String> = self.dirty_per_s.iter().map(|d| format!("{d:.0}")).collect();
            let _ = write!(out, "\n  dirtied per second: {}", rates.join(", "));
        }
        if self.method == Method::PostCopy {
            let _ = write!(
                out,
                "\n  fetched on demand {}, in the background {}; degraded for {:.3} s",
                self.on_demand, self.background, self.degraded_s
            );
        }
        if self.lost > 0 {
            let _ = write!(out, "\n  LOST {} sessions", self.lost);
        }
        if let Some(why) = &self.why {
            let _ = write!(out, "\n  {why}");
        }
        out
    }
}

/// A reason to abort, and the sessions it lost.
struct Abort {
    why: String,
    lost: u64,
}

impl<T: Into<String>> From<T> for Abort {
    fn from(why: T) -> Abort {
        Abort {
            why: why.into(),
            lost: 0,
        }
    }
}

/// One migration in progress.
struct Run<'a> {
    d: &'a Arc<Dispatcher>,
    plan: &'a Plan,
    source: SocketAddr,
    dest: SocketAddr,
    started: Instant,
    report: Report,
    /// When the pause began, while it lasts.
    paused_at: Option<Instant>,
    /// Ids copied to the destination (to withdraw them on an abort before
    /// the switch).
    copied: Vec<String>,
}

impl Dispatcher {
    /// Migrates the sessions of replica `plan.from` to `plan.to`. `Err`
    /// when it cannot start (the setup does not allow it); else the report,
    /// completed or aborted.
    pub fn migrate(self: &Arc<Self>, plan: &Plan) -> Result<Report, String> {
        self.can_migrate(plan)?;
        let (from, to) = (&self.replicas[plan.from], &self.replicas[plan.to]);
        // One migration at a time per replica: the source retires (takes no
        // new clients) for good unless the migration aborts.
        if from.retired.swap(true, Ordering::AcqRel) {
            return Err(format!(
                "replica {} is retired: migrating already, or its sessions moved",
                plan.from + 1
            ));
        }
        let mut run = Run {
            d: self,
            plan,
            // Their control addresses when they have them: their workers
            // may all be held by this dispatcher's pooled connections.
            source: from.control.unwrap_or(from.addr),
            dest: to.control.unwrap_or(to.addr),
            started: Instant::now(),
            report: Report {
                method: plan.method,
                from: from.addr.to_string(),
                to: to.addr.to_string(),
                outcome: Outcome::Completed,
                why: None,
                total_s: 0.0,
                pause_s: 0.0,
                degraded_s: 0.0,
                rounds: Vec::new(),
                dirty_per_s: Vec::new(),
                sessions: 0,
                bytes: 0,
                on_demand: 0,
                background: 0,
                lost: 0,
                spans: Vec::new(),
            },
            paused_at: None,
            copied: Vec::new(),
        };
        let done = match plan.method {
            Method::PreCopy => run.pre_copy(),
            Method::StopAndCopy => run.stop_and_copy(),
            Method::PostCopy => run.post_copy(),
        };
        if let Err(abort) = done {
            run.abort(abort);
        }
        run.report.total_s = run.started.elapsed().as_secs_f64();
        run.report.bytes = run.report.rounds.iter().map(|r| r.bytes).sum();
        Ok(run.report)
    }

    fn can_migrate(&self, plan: &Plan) -> Result<(), String> {
        let n = self.replicas.len();
        if plan.from >= n || plan.to >= n {
            return Err(format!("replicas are numbered 1 to {n}"));
        }
        if plan.from == plan.to {
            return Err("the source and the destination are the same replica".into());
        }
        if self.mode != Mode::Http || self.picker.policy() != crate::Policy::Affinity {
            return Err(
                "migration needs the http mode and the affinity policy: only they route each \
                 request by its session, so only they can pause and switch a replica's sessions"
                    .into(),
            );
        }
        for i in [plan.from, plan.to] {
            if self.replicas[i].route.is_none() {
                return Err(format!(
                    "replica {} has no route (ADDR,route=R and serve --route R): sessions are \
                     switched by their route",
                    i + 1
                ));
            }
        }
        if self.replicas[plan.to].moved_to.load(Ordering::Relaxed) != NOWHERE {
            return Err(format!("replica {}'s sessions moved away", plan.to + 1));
        }
        if self.proxy.get().is_none() {
            return Err("the dispatcher is not serving yet".into());
        }
        Ok(())
    }
}

impl Run<'_> {
    fn since_start(&self, t: Instant) -> f64 {
        t.duration_since(self.started).as_secs_f64()
    }

    fn span(&mut self, phase: &str, start: Instant, end: Instant) {
        let span = Span {
            phase: phase.into(),
            start_s: self.since_start(start),
            end_s: self.since_start(end),
        };
        self.report.spans.push(span);
    }

    fn pre_copy(&mut self) -> Result<(), Abort> {
        let copying = Instant::now();
        let mut mark = self.copy_round(None, false)?;
        loop {
            let last = self.report.rounds.last().cloned().unwrap_or_default();
            let rounds = self.report.rounds.len() as u32;
            if last.sessions <= self.plan.threshold || rounds >= self.plan.max_rounds {
                break;
            }
            mark = self.copy_round(Some(mark), false)?;
            let now = self.report.rounds.last().cloned().unwrap_or_default();
            self.report
                .dirty_per_s
                .push(now.sessions as f64 / last.secs.max(1e-6));
            if now.sessions >= last.sessions {
                break; // not converging: writes outpace the copy
            }
        }
        self.span("copy", copying, Instant::now());
        self.pause()?;
        self.copy_round(Some(mark), true)?;
        self.switch_and_release();
        self.finish_at_source()
    }

    fn stop_and_copy(&mut self) -> Result<(), Abort> {
        self.pause()?;
        self.copy_round(None, true)?;
        self.switch_and_release();
        self.finish_at_source()
    }

    fn post_copy(&mut self) -> Result<(), Abort> {
        let route = self.d.replicas[self.plan.from]
            .route
            .clone()
            .unwrap_or_default();
        let path = format!("/migrate/pull?from={}&route={route}", self.source);
        self.dest_call(&path, b"")?;
        self.pause()?;
        let held = self.source_sessions().map_err(Abort::from)?;
        self.switch_and_release();
        let switched = Instant::now();
        let fetching = self.fetch_all();
        let (on_demand, failed) = self.stop_pulling();
        self.report.on_demand = on_demand;
        self.report.sessions = self.report.background + on_demand;
        self.span("fetch", switched, Instant::now());
        self.report.degraded_s = switched.elapsed().as_secs_f64();
        match fetching {
            Ok(()) => self.finish_at_source(),
            Err(Fetch::Source(e)) => {
                self.report.lost = held.saturating_sub(self.report.sessions);
                self.report.why = Some(format!(
                    "the source failed during post-copy ({e}): {} sessions not yet fetched are \
                     lost ({failed} clients were answered 410)",
                    self.report.lost
                ));
                Ok(())
            }
            Err(Fetch::Dest(e)) => {
                // Back to the source, which forgets what it gave away.
                self.d.replicas[self.plan.from]
                    .moved_to
                    .store(NOWHERE, Ordering::Release);
                let lost = self
                    .source_call("/migrate/drop?moved")
                    .ok()
                    .and_then(|b| b.trim().strip_prefix("dropped ")?.parse().ok())
                    .unwrap_or(0);
                Err(Abort {
                    why: format!(
                        "the destination failed during post-copy ({e}); the source serves on \
                         without the {lost} sessions it had given"
                    ),
                    lost,
                })
            }
        }
    }

    /// Post-copy's background copy: batches taken from the source, stored
    /// at the destination unless a client's request fetched them first.
    fn fetch_all(&mut self) -> Result<(), Fetch> {
        let started = Instant::now();
        let mut round = Round::default();
        let mut from = 0usize;
        let result = loop {
            let path = format!("/migrate/take?from={from}&n={BATCH}");
            let body = match self.source_call(&path) {
                Ok(b) => b,
                Err(e) => break Err(Fetch::Source(e)),
            };
            let (head, records) = body.split_once('\n').unwrap_or((&body, ""));
            let next = head.strip_prefix("next ").unwrap_or("end");
            if !records.is_empty() {
                round.sessions += records.lines().count() as u64;
                round.bytes += records.len() as u64;
                match self.dest_call("/migrate/import?keep", records.as_bytes()) {
                    Ok(n) => self.report.background += n,
                    Err(a) => break Err(Fetch::Dest(a.why)),
                }
                self.throttle(started, round.bytes);
            }
            match next.parse::<usize>() {
                Ok(n) => from = n,
                Err(_) => break Ok(()),
            }
        };
        round.secs = started.elapsed().as_secs_f64();
        self.report.rounds.push(round);
        result
    }

    /// Waits until `sent` bytes sent since `since` would have arrived at
    /// the bandwidth: a round is never shorter than its bytes take.
    fn throttle(&self, since: Instant, sent: u64) {
        if let Some(rate) = self.plan.bandwidth.filter(|&r| r > 0) {
            let due = since + Duration::from_secs_f64(sent as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }

    /// Stops the destination's on-demand fetches: how many it made, and
    /// how many failed.
    fn stop_pulling(&mut self) -> (u64, u64) {
        let Ok(body) = self.dest_call_text("/migrate/pull", b"") else {
            return (0, 0);
        };
        let mut words = body.split_whitespace();
        let mut field = |name: &str| {
            (words.next() == Some(name))
                .then(|| words.next()?.parse().ok())
                .flatten()
                .unwrap_or(0)
        };
        (field("fetched"), field("failed"))
    }

    /// The source's live session count.
    fn source_sessions(&self) -> Result<u64, String> {
        let (status, body) = servers::probe::get(self.source, "/stats", REPLICA_TIMEOUT)
            .map_err(|e| format!("source {}: {e}", self.source))?;
        let stats: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| format!("source {}: /stats answered {status}", self.source))?;
        Ok(stats["sessions"].as_u64().unwrap_or(0))
    }

    /// One copy: what changed at the source since `mark` (everything
    /// without one), stored at the destination. The mark for the next.
    fn copy_round(&mut self, since: Option<u32>, paused: bool) -> Result<u32, Abort> {
        let started = Instant::now();
        let path = match since {
            Some(m) => format!("/migrate/export?since={m}"),
            None => "/migrate/export?since=all".into(),
        };
        let body = self
            .source_call(&path)
            .map_err(|e| format!("the source failed: {e}"))?;
        let (head, records) = body.split_once('\n').unwrap_or((&body, ""));
        let mark = head
            .strip_prefix("mark ")
            .and_then(|m| m.trim().parse().ok())
            .ok_or_else(|| format!("the source's export began {head:?}, not a mark"))?;
        let mut sessions = 0;
        let mut sent = 0;
        for chunk in lines_in_batches(records, BATCH) {
            sent += chunk.len() as u64;
            self.dest_call("/migrate/import", chunk.as_bytes())?;
            if !paused {
                self.throttle(started, sent);
            }
            sessions += chunk.lines().count() as u64;
            self.copied.extend(
                chunk
                    .lines()
                    .filter_map(|l| l.split_whitespace().next().map(str::to_string)),
            );
        }
        self.report.rounds.push(Round {
            sessions,
            bytes: records.len() as u64,
            secs: started.elapsed().as_secs_f64(),
            paused,
        });
        Ok(mark)
    }

    /// Holds the source's sessions' requests, and waits until none is
    /// with a replica.
    fn pause(&mut self) -> Result<(), Abort> {
        let home = self.plan.from;
        let (tx, rx) = std::sync::mpsc::channel();
        let proxy = self.d.proxy.get().ok_or("the proxy is not running")?;
        self.paused_at = Some(Instant::now());
        proxy
            .command(Command::Pause { home, drained: tx })
            .map_err(|e| e.to_string())?;
        rx.recv_timeout(DRAIN_TIMEOUT).map_err(|_| {
            format!("requests for the sessions were still with a replica after {DRAIN_TIMEOUT:?}")
        })?;
        Ok(())
    }

    fn release(&mut self) {
        let Some(since) = self.paused_at.take() else {
            return;
        };
        if let Some(proxy) = self.d.proxy.get() {
            let _ = proxy.command(Command::Release {
                home: self.plan.from,
            });
        }
        let now = Instant::now();
        self.report.pause_s = now.duration_since(since).as_secs_f64();
        self.span("pause", since, now);
    }

    fn switch_and_release(&mut self) {
        self.d.replicas[self.plan.from]
            .moved_to
            .store(self.plan.to, Ordering::Release);
        self.release();
    }

    /// The source forgets the sessions it gave away.
    fn finish_at_source(&mut self) -> Result<(), Abort> {
        if self.plan.method != Method::PostCopy {
            self.copied.sort_unstable();
            self.copied.dedup();
            self.report.sessions = self.copied.len() as u64;
        }
        if let Err(e) = self.source_call("/migrate/drop") {
            self.report.why = Some(format!(
                "the source could not be told to drop the moved sessions: {e}"
            ));
        }
        Ok(())
    }

    fn abort(&mut self, abort: Abort) {
        self.release();
        let from = &self.d.replicas[self.plan.from];
        if from.moved_to.load(Ordering::Acquire) == NOWHERE {
            // Best effort: withdraw the copies from the destination.
            let withdraw: String = self.copied.iter().map(|id| format!("{id} 0 0\n")).collect();
            for chunk in lines_in_batches(&withdraw, BATCH) {
                if self.dest_call("/migrate/import", chunk.as_bytes()).is_err() {
                    break;
                }
            }
            from.retired.store(false, Ordering::Release);
        }
        self.report.outcome = Outcome::Aborted;
        self.report.lost += abort.lost;
        self.report.why = Some(abort.why);
    }

    /// `POST path` on the source: its answer's body.
    fn source_call(&self, path: &str) -> Result<String, String> {
        call(self.source, path, b"").map_err(|e| format!("source {}: {e}", self.source))
    }

    /// `POST path` with `body` on the destination: the number in its
    /// answer (`imported N`).
    fn dest_call(&self, path: &str, body: &[u8]) -> Result<u64, Abort> {
        let text = self.dest_call_text(path, body)?;
        Ok(text
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    fn dest_call_text(&self, path: &str, body: &[u8]) -> Result<String, Abort> {
        call(self.dest, path, body)
            .map_err(|e| Abort::from(format!("the destination {} failed: {e}", self.dest)))
    }
}

/// Why the post-copy background copy stopped.
enum Fetch {
    Source(String),
    Dest(String),
}

/// `POST path` with `body` on `addr`: the body of a 200 answer.
fn call(addr: SocketAddr, path: &str, body: &[u8]) -> Result<String, String> {
    match servers::probe::post(addr, path, body, REPLICA_TIMEOUT) {
        Ok((200, text)) => Ok(text),
        Ok((status, text)) => Err(format!("{path} answered {status}: {}", text.trim())),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// `text`'s lines in pieces of at most `n` lines.
fn lines_in_batches(text: &str, n: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .match_indices('\n')
            .nth(n - 1)
            .map_or(rest.len(), |(i, _)| i + 1);
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_whole_lines() {
        let text = "a\nb\nc\nd\ne\n";
        let got: Vec<&str> = lines_in_batches(text, 2).collect();
        assert_eq!(got, ["a\nb\n", "c\nd\n", "e\n"]);
        assert_eq!(lines_in_batches("", 2).count(), 0);
        assert_eq!(lines_in_batches("x", 3).collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn methods_parse() {
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
        }
        assert!("precopy"
            .parse::<Method>()
            .unwrap_err()
            .contains("pre-copy"));
    }
    /// The path a plan is asked with parses back to the same plan; bad
    /// queries and bandwidths say what is wrong.
    #[test]
    fn plans_round_trip_through_their_path() {
        let mut plan = Plan::new(0, 2, Method::PostCopy);
        plan.threshold = 7;
        plan.max_rounds = 3;
        plan.bandwidth = Some(20_000);
        for p in [plan, Plan::new(4, 1, Method::PreCopy)] {
            let query = p.path();
            let query = query.strip_prefix("/migrate?").unwrap();
            assert_eq!(crate::migrate_plan(query), Ok(p));
        }
        assert!(crate::migrate_plan("from=0&to=2&method=pre-copy")
            .unwrap_err()
            .contains("from"));
        assert!(crate::migrate_plan("from=1&to=2&speed=9")
            .unwrap_err()
            .contains("\"speed\""));
        assert_eq!(bytes_per_s("20k"), Ok(20_000));
        assert_eq!(bytes_per_s("2M"), Ok(2_000_000));
        assert!(bytes_per_s("0").is_err() && bytes_per_s("fast").is_err());
    }
}
