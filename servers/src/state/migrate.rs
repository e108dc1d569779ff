//! A replica's side of live migration: the `/migrate/...` endpoints a
//! coordinator (the dispatcher's, see `dispatch::migrate`) drives, and the
//! destination's on-demand fetch in post-copy. Every architecture serves
//! them, because they live in the shared handler; they need a session table
//! (stateful or soft), and a stateless server answers `409`.
//!
//! All are `POST`, answered in plain text, one session per line as
//! `ID VALUE LIVE` (32 hex digits, the counter, `1` live or `0` gone):
//!
//! | endpoint | does | answers |
//! |---|---|---|
//! | `/migrate/export?since=all` | marks a new epoch, lists every live session | `mark M`, then the sessions |
//! | `/migrate/export?since=M` | marks a new epoch, lists what changed since mark `M` | `mark M'`, then the sessions |
//! | `/migrate/import` (`?keep`) | stores the sessions in the body, overwriting (with `keep`: leaving alone) ones held | `imported N` |
//! | `/migrate/take?sid=ID` | post-copy's source: the session's value, marking it moved | the value, or `404` |
//! | `/migrate/take?from=S&n=N` | the next `N` live sessions from slot `S`, marking them moved | `next S'` or `next end`, then the sessions |
//! | `/migrate/pull?from=ADDR&route=R` | post-copy's destination: a session of route `R` it does not hold is fetched from `ADDR` on first use | `pulling` |
//! | `/migrate/pull` | stops fetching | `fetched N failed M` |
//! | `/migrate/drop?moved` | forgets the moved sessions | `dropped N` |
//! | `/migrate/drop` | forgets every session | `dropped N` |
//!
//! The fetch settings live in shared memory, like the table, so a request
//! reaching any worker process sets them for all. The fetch itself is a
//! blocking request to the source (at most [`FETCH_TIMEOUT`]) made by the
//! worker serving the client, which an event-loop server pays for with its
//! whole loop: that is post-copy's degraded period, and it is measured.

use super::sid::SessionId;
use super::table::{SessionRecord, SessionTable, TableFull};
use crate::codec::{Method, Request, Response};
use crate::protocol::MAX_ROUTE;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// How long an on-demand fetch waits for the source.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(1);

/// Sessions one `/migrate/take` batch holds at most.
pub const MAX_BATCH: usize = 16_384;

/// Where a post-copy destination fetches sessions from, shared by every
/// worker process. Written only while `active` is 0, then published by
/// storing 1.
#[repr(C)]
pub struct PullSource {
    active: AtomicU32,
    ip: AtomicU32,
    port: AtomicU32,
    route_len: AtomicU32,
    route: [AtomicU8; MAX_ROUTE],
    /// Sessions fetched and stored here.
    fetched: AtomicU64,
    /// Fetches that failed (the source unreachable): those clients were
    /// answered 410, their sessions lost.
    failed: AtomicU64,
}

impl PullSource {
    /// The source for a session of `route`, if pulling its sessions.
    fn source_for(&self, route: &str) -> Option<SocketAddr> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let len = self.route_len.load(Ordering::Relaxed) as usize;
        let same = route.len() == len
            && route
                .bytes()
                .zip(&self.route)
                .all(|(b, r)| r.load(Ordering::Relaxed) == b);
        same.then(|| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(self.ip.load(Ordering::Relaxed)),
                self.port.load(Ordering::Relaxed) as u16,
            ))
        })
    }

    fn start(&self, from: SocketAddrV4, route: &str) {
        self.active.store(0, Ordering::Release);
        self.ip.store(u32::from(*from.ip()), Ordering::Relaxed);
        self.port.store(u32::from(from.port()), Ordering::Relaxed);
        self.route_len.store(route.len() as u32, Ordering::Relaxed);
        for (r, b) in self.route.iter().zip(route.bytes()) {
            r.store(b, Ordering::Relaxed);
        }
        self.fetched.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        self.active.store(1, Ordering::Release);
    }
}

/// Post-copy's destination: the session `sid` of `route`, fetched from the
/// source and stored, if this table is pulling that route's sessions.
/// Whether the table may hold it now.
pub fn fetch(table: &SessionTable, pull: &PullSource, sid: SessionId, route: &str) -> bool {
    let Some(source) = pull.source_for(route) else {
        return false;
    };
    let path = format!("/migrate/take?sid={sid}");
    match crate::probe::post(source, &path, b"", FETCH_TIMEOUT) {
        Ok((200, body)) => match body.trim().parse::<u64>() {
            Ok(value) => {
                let record = SessionRecord {
                    sid,
                    value,
                    live: true,
                };
                if let Ok(true) = table.import(&record, false) {
                    pull.fetched.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(_) => false,
        },
        // The source does not hold it: unknown here too.
        Ok(_) => false,
        Err(e) => {
            pull.failed.fetch_add(1, Ordering::Relaxed);
            static SAID: std::sync::Mutex<crate::warn::Throttled> =
                std::sync::Mutex::new(crate::warn::Throttled::new());
            let say = SAID
                .lock()
                .ok()
                .and_then(|mut t| t.check(std::time::Instant::now()));
            if let Some(unsaid) = say {
                tracing::warn!(
                    "post-copy: the source {source} did not answer ({e}); the session is lost{}",
                    crate::warn::more(unsaid)
                );
            }
            false
        }
    }
}

/// Answers a `/migrate/...` request.
pub fn answer(table: &SessionTable, pull: &PullSource, req: &Request) -> Response {
    if req.method != Method::Post {
        return Response::text(405, "method not allowed").with_header("Allow", "POST");
    }
    let query = req.query().unwrap_or("");
    let param = |name: &str| {
        query.split('&').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if kv == name => Some(""),
            _ => None,
        })
    };
    let bad = |msg: String| Response::text(400, msg);
    match req.path() {
        "/migrate/export" => {
            let since = param("since").unwrap_or("");
            let (mark, records) = if since == "all" {
                let mark = table.mark();
                (mark, table.sessions())
            } else {
                let Ok(old) = since.parse::<u32>() else {
                    return bad(format!("since={since:?}: 'all' or a mark"));
                };
                let mark = table.mark();
                let Some(changed) = table.changed_since(old) else {
                    return Response::text(
                        409,
                        format!(
                            "more sessions were removed since mark {old} than the removal log \
                             holds ({}): what changed is no longer all known; copy again from \
                             since=all",
                            super::table::REMOVAL_LOG
                        ),
                    );
                };
                (mark, changed)
            };
            Response::text(200, lines(&format!("mark {mark}"), &records))
        }
        "/migrate/import" => {
            let keep = param("keep").is_some();
            let Ok(text) = std::str::from_utf8(&req.body) else {
                return bad("the body is not text".into());
            };
            let mut imported = 0u64;
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
                let Some(record) = parse_line(line) else {
                    return bad(format!(
                        "line {}: {line:?} is not 'ID VALUE LIVE' ({imported} imported before it)",
                        n + 1
                    ));
                };
                match table.import(&record, !keep) {
                    Ok(stored) => imported += u64::from(stored),
                    Err(TableFull) => {
                        return Response::text(
                            503,
                            format!("session table full after {imported} imported"),
                        )
                    }
                }
            }
            Response::text(200, format!("imported {imported}"))
        }
        "/migrate/take" => {
            if let Some(sid) = param("sid") {
                return match SessionId::parse(sid).and_then(|s| table.take(s)) {
                    Some(value) => Response::text(200, value.to_string()),
                    None => Response::text(404, "not held"),
                };
            }
            let (Some(Ok(from)), Some(Ok(n))) = (
                param("from").map(str::parse::<usize>),
                param("n").map(str::parse::<usize>),
            ) else {
                return bad("take: sid=ID, or from=SLOT&n=COUNT".into());
            };
            let (records, next) = table.take_batch(from, n.clamp(1, MAX_BATCH));
            let head = next.map_or("next end".to_string(), |s| format!("next {s}"));
            Response::text(200, lines(&head, &records))
        }
        "/migrate/pull" => match (param("from"), param("route")) {
            (Some(from), Some(route)) => {
                let Ok(from) = from.parse::<SocketAddrV4>() else {
                    return bad(format!("from={from:?}: an IPv4 host:port"));
                };
                if !crate::protocol::valid_route(route) {
                    return bad(format!("route={route:?} is not a route"));
                }
                pull.start(from, route);
                Response::text(200, "pulling")
            }
            (None, None) => {
                pull.active.store(0, Ordering::Release);
                Response::text(
                    200,
                    format!(
                        "fetched {} failed {}",
                        pull.fetched.load(Ordering::Relaxed),
                        pull.failed.load(Ordering::Relaxed)
                    ),
                )
            }
            _ => bad("pull: from=ADDR&route=R to start, neither to stop".into()),
        },
        "/migrate/drop" => {
            let n = if param("moved").is_some() {
                table.drop_moved()
            } else {
                table.clear()
            };
            Response::text(200, format!("dropped {n}"))
        }
        _ => Response::text(404, "not found"),
    }
}

/// `head`, then one line per record.
fn lines(head: &str, records: &[SessionRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(head.len() + 1 + records.len() * 48);
    out.push_str(head);
    out.push('\n');
    for r in records {
        let _ = writeln!(out, "{} {} {}", r.sid, r.value, u8::from(r.live));
    }
    out
}

/// An `/migrate/import` body of `n` idle sessions (values 1 to `n`),
/// their ids spread over the table as random ones are; `seed` keeps the
/// ids of different replicas apart. Benchmarks give replicas such sessions
/// so that a migration has the state of many users between requests to
/// move, not only the few the load generator's clients hold.
pub fn idle_sessions(seed: u64, n: usize) -> String {
    // splitmix64: distinct inputs give distinct, well-spread outputs.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    use std::fmt::Write;
    let mut out = String::with_capacity(n * 40);
    for i in 0..n as u64 {
        let k = seed.wrapping_mul(1 << 40).wrapping_add(2 * i);
        let _ = writeln!(out, "{:016x}{:016x} {} 1", mix(k), mix(k + 1), i + 1);
    }
    out
}

/// One `ID VALUE LIVE` line.
pub fn parse_line(line: &str) -> Option<SessionRecord> {
    let mut fields = line.split_ascii_whitespace();
    let sid = SessionId::parse(fields.next()?)?;
    let value = fields.next()?.parse().ok()?;
    let live = match fields.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    fields
        .next()
        .is_none()
        .then_some(SessionRecord { sid, value, live })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(target: &str, body: &str) -> Request {
        Request {
            method: Method::Post,
            target: target.into(),
            minor_version: 1,
            keep_alive: true,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn text(r: &Response) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    fn pull() -> crate::shm::Shared<PullSource> {
        // SAFETY: PullSource is atomics only; all-zero is "not pulling".
        unsafe { crate::shm::Shared::zeroed() }.unwrap()
    }

    /// Export, import and rounds of changes between two tables, as a
    /// coordinator would run them over HTTP.
    /// Idle sessions parse as records, are distinct, and two seeds give
    /// two disjoint sets (two replicas' idle sessions never collide).
    #[test]
    fn idle_sessions_are_valid_and_distinct_per_seed() {
        let ids = |seed| -> Vec<String> {
            idle_sessions(seed, 500)
                .lines()
                .map(|l| {
                    assert!(parse_line(l).is_some(), "{l}");
                    l[..32].to_string()
                })
                .collect()
        };
        let (a, b) = (ids(1), ids(2));
        let all: std::collections::HashSet<_> = a.iter().chain(&b).collect();
        assert_eq!((a.len(), all.len()), (500, 1000));
        let first = parse_line(idle_sessions(1, 1).trim()).unwrap();
        assert_eq!((first.value, first.live), (1, true));
    }

    #[test]
    fn rounds_copy_what_changed() {
        let (a, b, p) = (
            SessionTable::new(64, super::super::table::Policy::Refuse).unwrap(),
            SessionTable::new(64, super::super::table::Policy::Refuse).unwrap(),
            pull(),
        );
        let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate().unwrap()).collect();
        for &sid in &ids {
            a.insert(sid, 1).unwrap();
        }
        let first = answer(&a, &p, &post("/migrate/export?since=all", ""));
        let body = text(&first);
        let (head, rest) = body.split_once('\n').unwrap();
        let mark: u32 = head.strip_prefix("mark ").unwrap().parse().unwrap();
        assert_eq!(rest.lines().count(), 5);
        let imported = answer(&b, &p, &post("/migrate/import", rest));
        assert_eq!(text(&imported), "imported 5");
        a.increment(ids[0]).unwrap();
        a.remove(ids[1]);
        let second = text(&answer(
            &a,
            &p,
            &post(&format!("/migrate/export?since={mark}"), ""),
        ));
        let rest = second.split_once('\n').unwrap().1;
        assert_eq!(rest.lines().count(), 2);
        answer(&b, &p, &post("/migrate/import", rest));
        assert_eq!(b.increment(ids[0]), Some(3));
        assert_eq!(b.increment(ids[1]), None);
        assert_eq!(b.increment(ids[2]), Some(2));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let t = SessionTable::new(8, super::super::table::Policy::Refuse).unwrap();
        let p = pull();
        let status = |target: &str, body: &str| answer(&t, &p, &post(target, body)).status;
        assert_eq!(status("/migrate/export?since=soon", ""), 400);
        assert_eq!(status("/migrate/import", "x 1 1"), 400);
        assert_eq!(
            status("/migrate/import", &format!("{} 1 2", "a".repeat(32))),
            400
        );
        assert_eq!(status("/migrate/take", ""), 400);
        assert_eq!(status("/migrate/take?sid=zz", ""), 404);
        assert_eq!(status("/migrate/pull?from=nowhere&route=r1", ""), 400);
        assert_eq!(status("/migrate/pull?from=127.0.0.1:1&route=a.b", ""), 400);
        assert_eq!(status("/migrate/elsewhere", ""), 404);
        let mut get = post("/migrate/export?since=all", "");
        get.method = Method::Get;
        assert_eq!(answer(&t, &p, &get).status, 405);
        let body = text(&answer(&t, &p, &post("/migrate/import", "x 1 1")));
        assert!(body.contains("line 1"), "{body}");
    }

    /// Pulling only for the named route, and a dead source counted.
    #[test]
    fn pull_fetches_only_its_route() {
        let t = SessionTable::new(8, super::super::table::Policy::Refuse).unwrap();
        let p = pull();
        let sid = SessionId::generate().unwrap();
        assert!(!fetch(&t, &p, sid, "r1"), "not pulling");
        // A port nothing listens on.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let start = format!("/migrate/pull?from={addr}&route=r1");
        assert_eq!(answer(&t, &p, &post(&start, "")).status, 200);
        assert!(!fetch(&t, &p, sid, "r2"), "another route");
        assert_eq!(p.failed.load(Ordering::Relaxed), 0);
        assert!(!fetch(&t, &p, sid, "r1"));
        assert_eq!(
            text(&answer(&t, &p, &post("/migrate/pull", ""))),
            "fetched 0 failed 1"
        );
        assert!(!fetch(&t, &p, sid, "r1"), "stopped");
    }
}
