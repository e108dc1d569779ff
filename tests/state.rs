//! State modes over real sockets: `POST /counter` against every
//! architecture in `servers::arch::ALL` (architectures added later are
//! covered without editing this file), in each mode.
//!
//! - Continuity: 50 concurrent clients × 200 increments each end with every
//!   counter at exactly 200. Clients reconnect every 10 requests, so with
//!   `process-per-request` and `prefork` one session is served by many
//!   processes: only a shared table keeps the count.
//! - Guessed session ids and forged tokens are refused.
//! - Restart: stateful sessions are lost and reported (410); soft clients
//!   restore and continue with no broken counter.
//! - Full table: stateful refuses new sessions (503); soft evicts.

mod common;

use common::{get, Client, Resp, Server};
// The servers' own state-mode type and header names: the contract these
// tests check is the one both sides use.
use servers::protocol::{StateMode as Mode, RESTORE, SESSION, SESSION_UNKNOWN, TOKEN};
use std::net::SocketAddr;
use std::time::Instant;

const CLIENTS: usize = 50;
const INCREMENTS: u64 = 200;
/// Requests per connection before the client reconnects.
const PER_CONNECTION: u64 = 10;

/// One client of `/counter` that checks every answer is the last plus one,
/// following the protocol of its mode (soft: restore after a 410).
struct Counter {
    addr: SocketAddr,
    mode: Mode,
    cookie: Option<String>,
    token: Option<String>,
    last: u64,
    restores: u32,
    conn: Option<Client>,
    sent_on_conn: u64,
    /// Requests per connection (1: a new connection for each).
    per_connection: u64,
}

impl Counter {
    fn new(addr: SocketAddr, mode: Mode) -> Counter {
        Counter {
            addr,
            mode,
            cookie: None,
            token: None,
            last: 0,
            restores: 0,
            conn: None,
            sent_on_conn: 0,
            per_connection: PER_CONNECTION,
        }
    }

    fn post(&mut self, extra: &str) -> Resp {
        self.sent_on_conn += 1;
        let close = self.sent_on_conn >= self.per_connection;
        let mut raw = String::from("POST /counter HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n");
        if let Some(c) = &self.cookie {
            raw.push_str(&format!("Cookie: {c}\r\n"));
        }
        if let Some(t) = &self.token {
            raw.push_str(&format!("{TOKEN}: {t}\r\n"));
        }
        raw.push_str(extra);
        if close {
            raw.push_str("Connection: close\r\n");
        }
        raw.push_str("\r\n");
        let addr = self.addr;
        let resp = self
            .conn
            .get_or_insert_with(|| Client::connect(addr))
            .request(raw.as_bytes());
        if close || resp.header("connection") == Some("close") {
            self.conn = None;
            self.sent_on_conn = 0;
        }
        resp
    }

    /// One increment; the value, or what went wrong.
    fn step(&mut self) -> Result<u64, String> {
        let mut resp = self.post("");
        if resp.status == 410 && self.mode == Mode::Soft {
            if resp.header(SESSION) != Some(SESSION_UNKNOWN) {
                return Err(format!(
                    "410 without {SESSION}: {SESSION_UNKNOWN}: {resp:?}"
                ));
            }
            self.restores += 1;
            resp = self.post(&format!("{RESTORE}: {}\r\n", self.last));
            if resp.header("set-cookie").is_none() {
                return Err(format!("restore made no new session: {resp:?}"));
            }
        }
        if resp.status != 200 {
            return Err(format!(
                "after {}: status {} {:?}",
                self.last,
                resp.status,
                resp.text()
            ));
        }
        let value: u64 = resp
            .text()
            .parse()
            .map_err(|_| format!("body {:?} is not a number", resp.text()))?;
        if value != self.last + 1 {
            return Err(format!("broken counter: {} after {}", value, self.last));
        }
        self.last = value;
        if let Some(set) = resp.header("set-cookie") {
            let pair = set.split(';').next().unwrap_or("");
            self.cookie = Some(pair.to_string());
        }
        if let Some(t) = resp.header(TOKEN) {
            self.token = Some(t.to_string());
        }
        match self.mode {
            Mode::Stateless if self.token.is_none() => Err("no X-State-Token".into()),
            Mode::Stateful | Mode::Soft if self.cookie.is_none() => Err("no sid cookie".into()),
            _ => Ok(value),
        }
    }
}

fn stats(addr: SocketAddr) -> serde_json::Value {
    serde_json::from_slice(&get(addr, "/stats").body).expect("/stats is JSON")
}

fn post_once(addr: SocketAddr, headers: &str) -> Resp {
    Client::connect(addr).request(
        format!("POST /counter HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n")
            .as_bytes(),
    )
}

/// The continuity test and the refusal checks for one architecture.
fn continuity(arch: &str, mode: Mode) -> Result<(), String> {
    let s = Server::start(arch, &["--state", mode.as_str(), "--workers", "4"]);
    let addr = s.addr;
    let outcomes: Vec<Result<Counter, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(move || {
                    let mut c = Counter::new(addr, mode);
                    for _ in 0..INCREMENTS {
                        c.step()?;
                    }
                    Ok(c)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let mut clients = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        clients.push(outcome.map_err(|e| format!("client {i}: {e}"))?);
    }
    for c in &clients {
        if c.last != INCREMENTS || c.restores != 0 {
            return Err(format!(
                "a client ended at {} with {} restores",
                c.last, c.restores
            ));
        }
    }
    for method in ["GET", "PUT"] {
        let r = Client::connect(addr).request(
            format!("{method} /counter HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        if r.status != 405 || r.header("allow") != Some("POST") {
            return Err(format!("{method} /counter got {r:?}"));
        }
    }
    let st = stats(addr);
    if st["state"] != mode.as_str() {
        return Err(format!("/stats state: {st}"));
    }
    match mode {
        Mode::Stateless => {
            if st["sessions"] != 0 || st["session_bytes"] != 0 {
                return Err(format!("stateless server holds memory: {st}"));
            }
            let token = clients[0].token.clone().unwrap_or_default();
            let (_, mac) = token.split_once('.').unwrap_or_default();
            for forged in [
                format!("{}.{mac}", INCREMENTS + 1000),
                format!("{INCREMENTS}.{}", "0".repeat(64)),
                "200".to_string(),
            ] {
                let r = post_once(addr, &format!("{TOKEN}: {forged}\r\n"));
                if (r.status, r.text().as_str()) != (403, "invalid token") {
                    return Err(format!("forged token {forged:?} got {r:?}"));
                }
            }
        }
        Mode::Stateful | Mode::Soft => {
            if st["sessions"] != CLIENTS as u64 || st["session_bytes"].as_u64() < Some(1) {
                return Err(format!("expected {CLIENTS} sessions: {st}"));
            }
            // A guessed id, and a real one with its last digit changed.
            let real = clients[0].cookie.clone().unwrap_or_default();
            let mut near = real.clone();
            let last = near.pop();
            near.push(if last == Some('0') { '1' } else { '0' });
            for guess in ["sid=0123456789abcdef0123456789abcdef".to_string(), near] {
                let r = post_once(addr, &format!("Cookie: {guess}\r\n"));
                if r.status != 410 || r.header(SESSION) != Some(SESSION_UNKNOWN) {
                    return Err(format!("guessed {guess} got {r:?}"));
                }
            }
            // The real one still counts on.
            let r = post_once(addr, &format!("Cookie: {real}\r\n"));
            if r.text() != (INCREMENTS + 1).to_string() {
                return Err(format!("the real session after guesses: {r:?}"));
            }
        }
    }
    Ok(())
}

fn every_arch(mode: Mode) {
    let started = Instant::now();
    let mut failures = Vec::new();
    for arch in servers::arch::names() {
        let t = Instant::now();
        if let Err(e) = continuity(arch, mode) {
            failures.push(format!("{arch} ({}): {e}", mode.as_str()));
        }
        eprintln!("{arch} {}: {:.1?}", mode.as_str(), t.elapsed());
    }
    eprintln!("{} in {:.1?}", mode.as_str(), started.elapsed());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn continuity_stateful() {
    every_arch(Mode::Stateful);
}

#[test]
fn continuity_soft() {
    every_arch(Mode::Soft);
}

#[test]
fn continuity_stateless() {
    every_arch(Mode::Stateless);
}

#[path = "state/lifecycle.rs"]
mod lifecycle;
