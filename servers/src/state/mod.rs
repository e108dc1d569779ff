//! State modes: where a client's state lives between its requests, shown on
//! the simplest possible state — a counter behind `POST /counter`.
//!
//! - **stateless**: the client carries the counter in a MAC'd token
//!   ([`token`]); the server keeps nothing, so any replica can answer.
//! - **stateful**: the server keeps the counter in a session table
//!   ([`table`]) behind a random 128-bit id ([`sid`]) sent as a cookie. The
//!   table lives in shared memory ([`crate::shm`]), so forked workers share it.
//!   An unknown id is answered `410` + `X-Session: unknown`, never silently
//!   reset; a full table refuses new sessions with `503`.
//! - **soft**: stateful, but the state may be dropped (time-to-live,
//!   eviction when full, restart): a client told its session is unknown
//!   re-sends its last value in `X-Counter-Restore` and carries on. The
//!   server trusts that value — soft state trades integrity for recovery.
//!
//! The exact wire protocol is in the README ("State modes").

pub mod migrate;
pub mod sid;
pub mod table;
pub mod token;

use crate::codec::{Request, Response};
use sid::SessionId;
use std::io;
use std::time::Duration;
use table::{Policy, SessionTable};
use token::TokenKey;

pub use crate::protocol::StateMode;
use crate::protocol::{COOKIE, RESTORE, SESSION, SESSION_UNKNOWN, TOKEN};

/// Secret key bytes for stateless tokens; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey(pub Vec<u8>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateKey({} bytes)", self.0.len())
    }
}

/// How the state modes are set up (part of [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The mode `POST /counter` runs in.
    pub mode: StateMode,
    /// Soft: a session unused for this long is gone.
    pub ttl: Duration,
    /// Stateful and soft: most sessions held at once (at least 1).
    pub max_sessions: usize,
    /// Stateful: a session unused for this long is gone, so clients that
    /// never come back cannot hold the table forever. `None`: sessions stay
    /// until the server stops.
    pub session_idle: Option<Duration>,
    /// Stateless: the MAC key; `None` picks a random one at start, which
    /// replicas do not share.
    pub key: Option<StateKey>,
    /// Stateful and soft: the route ending every session id this server
    /// issues (see [`crate::protocol::sid_route`]).
    pub route: Option<String>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            mode: StateMode::Stateful,
            ttl: Duration::from_secs(60),
            max_sessions: 100_000,
            session_idle: None,
            key: None,
            route: None,
        }
    }
}

/// What `/stats` reports about state.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StateStats {
    /// The mode's name.
    pub mode: &'static str,
    /// The session table's counters; `None` when stateless.
    pub table: Option<table::TableStats>,
}

/// The state of one server: the table or the key its mode needs.
pub struct State {
    mode: StateMode,
    table: Option<SessionTable>,
    /// Post-copy's destination: where missing sessions are fetched from.
    pull: Option<crate::shm::Shared<migrate::PullSource>>,
    key: Option<TokenKey>,
    /// `.route` (with its dot), or empty.
    suffix: String,
}

/// Values restored from a client are kept below this, so increments can
/// never overflow.
const MAX_RESTORE: u64 = 1 << 62;

impl State {
    /// Sets up `config.mode`: maps the shared table (call before forking)
    /// or keys the MAC.
    pub fn new(config: &StateConfig) -> io::Result<State> {
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_string());
        let suffix = match &config.route {
            Some(r) if !crate::protocol::valid_route(r) => {
                return Err(invalid(&format!(
                    "route {r:?}: 1 to {} letters, digits, '-' or '_'",
                    crate::protocol::MAX_ROUTE
                )))
            }
            Some(r) => format!(".{r}"),
            None => String::new(),
        };
        let (table, key) = match config.mode {
            StateMode::Stateless => {
                let key = match &config.key {
                    Some(k) => TokenKey::new(&k.0).map_err(|e| invalid(&e.to_string()))?,
                    None => TokenKey::random().map_err(|e| io::Error::other(e.to_string()))?,
                };
                (None, Some(key))
            }
            mode => {
                if config.max_sessions == 0 {
                    return Err(invalid("--max-sessions must be at least 1"));
                }
                let policy =
                    match (mode, config.session_idle) {
                        (StateMode::Soft, Some(_)) => return Err(invalid(
                            "--session-idle is for stateful mode; soft sessions expire after --ttl",
                        )),
                        (StateMode::Soft, None) if config.ttl.is_zero() => {
                            return Err(invalid("--ttl must be more than 0"))
                        }
                        (StateMode::Soft, None) => Policy::Evict { ttl: config.ttl },
                        (_, Some(idle)) if idle.is_zero() => {
                            return Err(invalid("--session-idle must be more than 0"))
                        }
                        (_, Some(idle)) => Policy::Reclaim { idle },
                        (_, None) => Policy::Refuse,
                    };
                (Some(SessionTable::new(config.max_sessions, policy)?), None)
            }
        };
        let pull = match table {
            // SAFETY: PullSource is atomics only; all-zero is "not pulling".
            Some(_) => Some(unsafe { crate::shm::Shared::zeroed() }?),
            None => None,
        };
        Ok(State {
            mode: config.mode,
            table,
            pull,
            key,
            suffix,
        })
    }

    /// The mode in use.
    pub fn mode(&self) -> StateMode {
        self.mode
    }

    /// Answers `POST /counter` (the caller has checked the method).
    pub fn counter(&self, req: &Request) -> Response {
        let restore = req.header(RESTORE);
        if restore.is_some() && self.mode != StateMode::Soft {
            return Response::text(400, format!("{RESTORE} is accepted in soft mode only"));
        }
        if let (Some(key), StateMode::Stateless) = (&self.key, self.mode) {
            return stateless(key, req.header(TOKEN));
        }
        let Some(table) = &self.table else {
            return Response::text(500, "no session table");
        };
        if let Some(text) = restore {
            return match text.trim().parse::<u64>() {
                Ok(v) if v < MAX_RESTORE => {
                    // The old session, if still held, is replaced, not kept
                    // as an orphan.
                    if let Some(old) =
                        sid_cookie(req).and_then(|c| SessionId::parse(crate::protocol::sid_id(c)))
                    {
                        table.remove(old);
                    }
                    self.new_session(table, v + 1)
                }
                _ => Response::text(
                    400,
                    format!("{RESTORE} must be a whole number below {MAX_RESTORE}"),
                ),
            };
        }
        match sid_cookie(req) {
            None => self.new_session(table, 1),
            Some(cookie) => match self.increment(table, cookie) {
                Some(v) => Response::text(200, v.to_string()),
                // Malformed, never issued, expired, evicted, or lost in a
                // restart: the client is told, never silently reset.
                None => {
                    Response::text(410, "unknown session").with_header(SESSION, SESSION_UNKNOWN)
                }
            },
        }
    }

    /// Adds one to the session `cookie` names, fetching it first if it is
    /// being pulled here (post-copy) and not here yet.
    fn increment(&self, table: &SessionTable, cookie: &str) -> Option<u64> {
        let sid = SessionId::parse(crate::protocol::sid_id(cookie))?;
        table.increment(sid).or_else(|| {
            let pull = self.pull.as_deref()?;
            let route = crate::protocol::sid_route(cookie)?;
            migrate::fetch(table, pull, sid, route)
                .then(|| table.increment(sid))
                .flatten()
        })
    }

    /// Answers `/migrate/...` (see [`migrate`]).
    pub fn migrate(&self, req: &Request) -> Response {
        match (&self.table, self.pull.as_deref()) {
            (Some(table), Some(pull)) => migrate::answer(table, pull, req),
            _ => Response::text(409, "a stateless server holds no sessions to migrate"),
        }
    }

    /// Counters for `/stats`.
    pub fn stats(&self) -> StateStats {
        StateStats {
            mode: self.mode.as_str(),
            table: self.table.as_ref().map(SessionTable::stats),
        }
    }
}

fn stateless(key: &TokenKey, token: Option<&str>) -> Response {
    let n = match token {
        None => 0,
        Some(t) => match key.verify(t.trim()) {
            Ok(n) => n,
            Err(_) => return Response::text(403, "invalid token"),
        },
    };
    match n.checked_add(1) {
        Some(next) => Response::text(200, next.to_string()).with_header(TOKEN, key.mint(next)),
        None => Response::text(400, "counter overflow"),
    }
}

impl State {
    fn new_session(&self, table: &SessionTable, value: u64) -> Response {
        let sid = match SessionId::generate() {
            Ok(sid) => sid,
            Err(_) => return Response::text(500, "random generator unavailable"),
        };
        match table.insert(sid, value) {
            Ok(()) => Response::text(200, value.to_string()).with_header(
                "Set-Cookie",
                format!("{COOKIE}={sid}{}; Path=/; HttpOnly", self.suffix),
            ),
            Err(table::TableFull) => Response::text(503, "session table full"),
        }
    }
}

/// The first `sid` cookie in any `Cookie` header, route included (any
/// replica may be asked, and only the id names the session).
fn sid_cookie(req: &Request) -> Option<&str> {
    req.headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
