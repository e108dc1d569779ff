//! Session flows against `POST /counter` (the wire contract is in the
//! README): each connection is one client that increments its counter and
//! checks that every answer is the previous value plus one.
//!
//! A request whose answer never came (a timeout, a reset, a proxy's 5xx)
//! may or may not have been applied: the client cannot know. The next
//! value may then be one higher per such request without the chain being
//! broken, as an at-most-once client would accept; only a value outside
//! that range is a lost or repeated increment.

use crate::config::StateMode;
use crate::response::Response;
use servers::protocol::{COOKIE, RESTORE, TOKEN};
use std::io::Write;

/// What one response meant for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The chain continues.
    Ok,
    /// A new session started (the first answer, `1`, or a soft restore).
    NewSession,
    /// Soft mode: the server forgot the session; re-send at once with
    /// `X-Counter-Restore` (not an error: the protocol working).
    Restore,
    /// The chain broke: a wrong value, a missing cookie or token, or a
    /// session the server lost.
    StateError,
    /// A 4xx answer other than the expected ones.
    Status4xx,
    /// A 5xx answer (e.g. 503: session table full).
    Status5xx,
}

/// One client's session.
#[derive(Debug, Clone)]
pub struct CounterSession {
    mode: StateMode,
    /// Stateful and soft: the session cookie.
    sid: Option<String>,
    /// Stateless: the last token.
    token: Option<String>,
    /// The last counter value seen (0: none yet).
    last: u64,
    /// Soft mode: a restore request is being sent with this value.
    restoring: Option<u64>,
    /// Requests on the session since the last answer whose outcome is
    /// unknown (each may have been applied).
    unsettled: u64,
    /// Why the last answer was a state error.
    why: Option<String>,
}

impl CounterSession {
    /// A client that has not talked to the server yet.
    pub fn new(mode: StateMode) -> CounterSession {
        CounterSession {
            mode,
            sid: None,
            token: None,
            last: 0,
            restoring: None,
            unsettled: 0,
            why: None,
        }
    }

    /// Why the last answer was a state error (once: taken).
    pub fn take_why(&mut self) -> Option<String> {
        self.why.take()
    }

    /// A request of this session got no answer (or a 5xx, which a proxy
    /// gives for a request its replica may have applied): the server may
    /// have counted it.
    pub fn on_lost(&mut self) {
        if self.sid.is_some() && self.restoring.is_none() {
            self.unsettled += 1;
        }
    }

    /// Appends the next request to `out`.
    pub fn write_request(&self, host: &str, close: bool, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "POST /counter HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
        );
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        if let Some(sid) = &self.sid {
            let _ = write!(out, "Cookie: {COOKIE}={sid}\r\n");
        }
        if let Some(token) = &self.token {
            let _ = write!(out, "{TOKEN}: {token}\r\n");
        }
        if let Some(value) = self.restoring {
            let _ = write!(out, "{RESTORE}: {value}\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Checks `r` against the chain and updates the session.
    pub fn on_response(&mut self, r: &Response) -> Outcome {
        match r.status {
            200 => self.on_value(r),
            410 if r.session_unknown => {
                self.sid = None;
                self.unsettled = 0;
                if self.mode == StateMode::Soft && self.restoring.is_none() {
                    self.restoring = Some(self.last);
                    Outcome::Restore
                } else {
                    // Stateful: a lost session is a broken chain (the
                    // server must never reset silently, and did not). Start
                    // over with a new session.
                    self.why = Some(format!("410: session lost after value {}", self.last));
                    self.restoring = None;
                    self.last = 0;
                    Outcome::StateError
                }
            }
            400..=499 => {
                self.restoring = None;
                Outcome::Status4xx
            }
            500..=599 => {
                self.on_lost();
                self.restoring = None;
                Outcome::Status5xx
            }
            s => {
                self.why = Some(format!("status {s} in the counter flow"));
                Outcome::StateError
            }
        }
    }

    fn on_value(&mut self, r: &Response) -> Outcome {
        let value = std::str::from_utf8(&r.body)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let restored = self.restoring.take();
        let fresh = match self.mode {
            StateMode::Stateless => self.token.is_none(),
            StateMode::Stateful | StateMode::Soft => self.sid.is_none(),
        };
        let expected = match restored {
            Some(v) => v + 1,
            None if fresh => 1,
            None => self.last + 1,
        };
        // Each request of this session whose outcome was unknown may have
        // counted (a new or restored session starts from a known value).
        let unsettled = std::mem::take(&mut self.unsettled);
        let tolerated = if fresh || restored.is_some() {
            0
        } else {
            unsettled
        };
        // Keep what the server hands back, so one broken answer does not
        // break every later one.
        match self.mode {
            StateMode::Stateless => {
                if r.state_token.is_some() {
                    self.token = r.state_token.clone();
                }
            }
            StateMode::Stateful | StateMode::Soft => {
                if r.sid.is_some() {
                    self.sid = r.sid.clone();
                }
            }
        }
        let Some(value) = value else {
            self.why = Some(format!(
                "200 without a number: {:?}",
                String::from_utf8_lossy(&r.body[..r.body.len().min(40)])
            ));
            return Outcome::StateError;
        };
        self.last = value;
        let carried = match self.mode {
            StateMode::Stateless => r.state_token.is_some(),
            // A new session must come with its cookie; later answers need not.
            StateMode::Stateful | StateMode::Soft => !fresh || r.sid.is_some(),
        };
        if !(expected..=expected + tolerated).contains(&value) || !carried {
            let range = if tolerated > 0 {
                format!("{expected}..={}", expected + tolerated)
            } else {
                expected.to_string()
            };
            let what = match self.mode {
                StateMode::Stateless => "state token",
                StateMode::Stateful | StateMode::Soft => "session cookie",
            };
            self.why = Some(if carried {
                format!("expected {range}, got {value}")
            } else {
                format!("expected {range}, got {value} without its {what}")
            });
            Outcome::StateError
        } else if fresh || restored.is_some() {
            Outcome::NewSession
        } else {
            Outcome::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: u64, sid: Option<&str>, token: Option<&str>) -> Response {
        Response {
            status: 200,
            body: value.to_string().into_bytes(),
            sid: sid.map(String::from),
            state_token: token.map(String::from),
            ..Default::default()
        }
    }

    fn request(s: &CounterSession) -> String {
        let mut out = Vec::new();
        s.write_request("h", false, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn stateful_chain_and_breaks() {
        let mut s = CounterSession::new(StateMode::Stateful);
        assert!(!request(&s).contains("Cookie"));
        assert_eq!(s.on_response(&ok(1, Some("aa"), None)), Outcome::NewSession);
        assert!(request(&s).contains("Cookie: sid=aa\r\n"));
        assert_eq!(s.on_response(&ok(2, None, None)), Outcome::Ok);
        assert_eq!(s.take_why(), None);
        assert_eq!(s.on_response(&ok(4, None, None)), Outcome::StateError);
        assert_eq!(s.take_why().as_deref(), Some("expected 3, got 4"));
        assert_eq!(s.take_why(), None, "taken once");
        assert_eq!(s.on_response(&ok(5, None, None)), Outcome::Ok);
        let gone = Response {
            status: 410,
            session_unknown: true,
            ..Default::default()
        };
        assert_eq!(s.on_response(&gone), Outcome::StateError);
        assert_eq!(
            s.take_why().as_deref(),
            Some("410: session lost after value 5")
        );
        assert!(!request(&s).contains("Cookie"));
    }

    /// A request whose answer was lost may have been counted: the next
    /// value may skip one per such request, and no more.
    #[test]
    fn a_lost_answer_may_have_counted() {
        let mut s = CounterSession::new(StateMode::Stateful);
        s.on_response(&ok(1, Some("aa"), None));
        s.on_lost();
        assert_eq!(s.on_response(&ok(3, None, None)), Outcome::Ok, "applied");
        s.on_lost();
        assert_eq!(
            s.on_response(&ok(4, None, None)),
            Outcome::Ok,
            "not applied"
        );
        s.on_lost();
        assert_eq!(
            s.on_response(&ok(7, None, None)),
            Outcome::StateError,
            "two more than one lost request"
        );
        assert_eq!(s.take_why().as_deref(), Some("expected 5..=6, got 7"));
        let proxy_error = Response {
            status: 502,
            ..Default::default()
        };
        assert_eq!(s.on_response(&proxy_error), Outcome::Status5xx);
        assert_eq!(
            s.on_response(&ok(9, None, None)),
            Outcome::Ok,
            "the 502's request counted"
        );
        assert_eq!(
            s.on_response(&ok(11, None, None)),
            Outcome::StateError,
            "nothing unsettled now"
        );
        // Stateless: the state travels with the client, a lost answer
        // changes nothing on the server.
        let mut t = CounterSession::new(StateMode::Stateless);
        t.on_response(&ok(1, None, Some("1.ab")));
        t.on_lost();
        assert_eq!(
            t.on_response(&ok(3, None, Some("3.cd"))),
            Outcome::StateError
        );
    }

    #[test]
    fn soft_restore_dance() {
        let mut s = CounterSession::new(StateMode::Soft);
        s.on_response(&ok(1, Some("aa"), None));
        s.on_response(&ok(2, None, None));
        let gone = Response {
            status: 410,
            session_unknown: true,
            ..Default::default()
        };
        assert_eq!(s.on_response(&gone), Outcome::Restore);
        let req = request(&s);
        assert!(
            req.contains("X-Counter-Restore: 2\r\n") && !req.contains("Cookie"),
            "{req}"
        );
        assert_eq!(s.on_response(&ok(3, Some("bb"), None)), Outcome::NewSession);
        assert!(request(&s).contains("Cookie: sid=bb"));
        assert!(!request(&s).contains("Restore"));
    }

    #[test]
    fn stateless_tokens() {
        let mut s = CounterSession::new(StateMode::Stateless);
        assert_eq!(
            s.on_response(&ok(1, None, Some("1.ab"))),
            Outcome::NewSession
        );
        assert!(request(&s).contains("X-State-Token: 1.ab\r\n"));
        assert_eq!(s.on_response(&ok(2, None, Some("2.cd"))), Outcome::Ok);
        // A missing token breaks the chain.
        assert_eq!(s.on_response(&ok(3, None, None)), Outcome::StateError);
        assert_eq!(
            s.take_why().as_deref(),
            Some("expected 3, got 3 without its state token")
        );
    }
}
