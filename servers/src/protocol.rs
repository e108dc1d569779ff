//! The `POST /counter` contract, spelled once: the state modes, and the
//! header and cookie names that carry a client's state. The servers
//! ([`crate::state`]), the load generator's counter flow, the suite runner
//! and the tests all use these, so that the two sides cannot drift apart.
//!
//! - *stateful* and *soft*: the server keeps the counter in its session
//!   table; the first answer sets the cookie [`COOKIE`]`=<id>`. A session
//!   the server no longer has is answered `410` with [`SESSION`]`:
//!   `[`SESSION_UNKNOWN`]. In soft mode the client then rebuilds it by
//!   sending its last value in [`RESTORE`].
//! - *stateless*: the client carries the counter in an HMAC token, sent
//!   and answered in [`TOKEN`].
//! - A replica started with a route (`serve --route r2`) issues session ids
//!   that end in it, `sid=<32 hex>.r2`, as Tomcat's jvmRoute and Apache's
//!   `mod_proxy_balancer` do: a dispatcher with session affinity sends the
//!   session back to the replica that made it ([`sid_route`]).

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Where per-client state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMode {
    /// In a token the client carries ([`TOKEN`]).
    Stateless,
    /// In the server's session table, for good: a lost session is an error.
    #[default]
    Stateful,
    /// In the session table until expiry or eviction; clients rebuild it
    /// (`410`, then [`RESTORE`]).
    Soft,
}

impl StateMode {
    /// Every mode, in the order they are documented.
    pub const ALL: [StateMode; 3] = [StateMode::Stateless, StateMode::Stateful, StateMode::Soft];

    /// The name used on command lines, in suites, run keys and `/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            StateMode::Stateless => "stateless",
            StateMode::Stateful => "stateful",
            StateMode::Soft => "soft",
        }
    }
}

impl std::fmt::Display for StateMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StateMode {
    type Err = String;
    fn from_str(s: &str) -> Result<StateMode, String> {
        StateMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown state mode {s:?} (use stateless, stateful or soft)"))
    }
}

/// The cookie naming a session (stateful and soft).
pub const COOKIE: &str = "sid";

/// The most bytes of a route, and the characters it may use.
pub const MAX_ROUTE: usize = 32;

/// Whether `route` may be a replica's route: 1 to [`MAX_ROUTE`] ASCII
/// letters, digits, `-` or `_`.
pub fn valid_route(route: &str) -> bool {
    (1..=MAX_ROUTE).contains(&route.len())
        && route
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A session id's route: what follows its first `.` (`None`: no route).
pub fn sid_route(sid: &str) -> Option<&str> {
    sid.split_once('.').map(|(_, route)| route)
}

/// A session id without its route.
pub fn sid_id(sid: &str) -> &str {
    sid.split_once('.').map_or(sid, |(id, _)| id)
}
/// Header carrying the stateless token, both ways.
pub const TOKEN: &str = "X-State-Token";
/// Header with which a soft-mode client rebuilds a lost session: the last
/// value it saw.
pub const RESTORE: &str = "X-Counter-Restore";
/// Header of a `410` answer for a session the server does not have ...
pub const SESSION: &str = "X-Session";
/// ... and its value.
pub const SESSION_UNKNOWN: &str = "unknown";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_what_follows_the_dot() {
        assert_eq!(sid_route("00ff.r2"), Some("r2"));
        assert_eq!(sid_id("00ff.r2"), "00ff");
        assert_eq!((sid_route("00ff"), sid_id("00ff")), (None, "00ff"));
        assert!(valid_route("r2") && valid_route("replica_2-b"));
        assert!(!valid_route("") && !valid_route("a.b") && !valid_route("a;b"));
        assert!(!valid_route(&"r".repeat(MAX_ROUTE + 1)));
    }

    #[test]
    fn names_round_trip() {
        for m in StateMode::ALL {
            assert_eq!(m.as_str().parse::<StateMode>(), Ok(m));
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        assert!("Stateful".parse::<StateMode>().is_err());
    }
}
