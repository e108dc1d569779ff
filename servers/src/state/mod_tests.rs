//! The `/counter` protocol of each mode, request by request (the same
//! checks run over real sockets against every architecture in
//! `tests/state.rs`).

use super::*;
use crate::codec::{parse_request, Limits};

fn post(headers: &[(&str, &str)]) -> Request {
    let mut raw = String::from("POST /counter HTTP/1.1\r\nHost: t\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    parse_request(raw.as_bytes(), &Limits::default())
        .unwrap()
        .unwrap()
        .0
}

fn state(mode: StateMode, max_sessions: usize) -> State {
    State::new(&StateConfig {
        mode,
        max_sessions,
        key: Some(StateKey(b"a test key of 16+ bytes".to_vec())),
        ..StateConfig::default()
    })
    .unwrap()
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn body(r: &Response) -> &str {
    std::str::from_utf8(&r.body).unwrap()
}

/// The `sid=...` pair of a Set-Cookie header.
fn cookie(r: &Response) -> String {
    let set = header(r, "set-cookie").expect("Set-Cookie");
    let (pair, attrs) = set.split_once(';').unwrap();
    assert_eq!(attrs, " Path=/; HttpOnly");
    let id = pair.strip_prefix("sid=").unwrap();
    assert!(SessionId::parse(id).is_some(), "{id:?}");
    pair.to_string()
}

/// A routed server's ids end in its route; it takes them back with the
/// route or without, and refuses a route it could not write in a cookie.
#[test]
fn routed_sessions_carry_the_route() {
    for mode in [StateMode::Stateful, StateMode::Soft] {
        let s = State::new(&StateConfig {
            mode,
            route: Some("r2".into()),
            ..StateConfig::default()
        })
        .unwrap();
        let first = s.counter(&post(&[]));
        let set = header(&first, "set-cookie").unwrap();
        let pair = set.split(';').next().unwrap().to_string();
        let id = pair.strip_prefix("sid=").unwrap();
        assert!(id.ends_with(".r2"), "{id}");
        assert!(SessionId::parse(crate::protocol::sid_id(id)).is_some());
        assert_eq!(body(&s.counter(&post(&[("Cookie", &pair)]))), "2");
        let bare = pair.trim_end_matches(".r2");
        assert_eq!(body(&s.counter(&post(&[("Cookie", bare)]))), "3");
    }
    for bad in ["", "a.b", "a;b", "a b"] {
        let config = StateConfig {
            route: Some(bad.into()),
            ..StateConfig::default()
        };
        assert!(State::new(&config).is_err(), "{bad:?}");
    }
}

#[test]
fn stateful_counts_per_session_and_refuses_unknown_ids() {
    let s = state(StateMode::Stateful, 10);
    let first = s.counter(&post(&[]));
    assert_eq!((first.status, body(&first)), (200, "1"));
    let c = cookie(&first);
    for want in 2..=5 {
        let r = s.counter(&post(&[("Cookie", &c)]));
        assert_eq!((r.status, body(&r)), (200, want.to_string().as_str()));
        assert_eq!(header(&r, "set-cookie"), None);
    }
    // Among other cookies, in a second Cookie header.
    let r = s.counter(&post(&[
        ("Cookie", "a=b"),
        ("Cookie", &format!("x=1; {c}")),
    ]));
    assert_eq!(body(&r), "6");
    // A second session is independent.
    let other = s.counter(&post(&[]));
    assert_eq!(body(&other), "1");
    assert_ne!(cookie(&other), c);
    for guess in [
        "sid=0123456789abcdef0123456789abcdef",
        "sid=nonsense",
        "sid=",
    ] {
        let r = s.counter(&post(&[("Cookie", guess)]));
        assert_eq!((r.status, body(&r)), (410, "unknown session"), "{guess}");
        assert_eq!(header(&r, "x-session"), Some("unknown"));
    }
    let r = s.counter(&post(&[("X-Counter-Restore", "5")]));
    assert_eq!(r.status, 400);
}

#[test]
fn stateful_full_table_is_503_for_new_sessions_only() {
    let s = state(StateMode::Stateful, 2);
    let a = cookie(&s.counter(&post(&[])));
    let b = cookie(&s.counter(&post(&[])));
    let r = s.counter(&post(&[]));
    assert_eq!((r.status, header(&r, "set-cookie")), (503, None));
    assert_eq!(body(&s.counter(&post(&[("Cookie", &a)]))), "2");
    assert_eq!(body(&s.counter(&post(&[("Cookie", &b)]))), "2");
    let st = s.stats().table.unwrap();
    assert_eq!((st.sessions, st.refused), (2, 1));
}

#[test]
fn soft_restores_from_the_value_the_client_resends() {
    let s = state(StateMode::Soft, 2);
    let a = cookie(&s.counter(&post(&[])));
    assert_eq!(body(&s.counter(&post(&[("Cookie", &a)]))), "2");
    // Two newer sessions push `a` out (least recently used).
    s.counter(&post(&[]));
    s.counter(&post(&[]));
    let r = s.counter(&post(&[("Cookie", &a)]));
    assert_eq!((r.status, header(&r, "x-session")), (410, Some("unknown")));
    // Re-sent with the last value seen, with or without the old cookie.
    let r = s.counter(&post(&[("Cookie", &a), ("X-Counter-Restore", "2")]));
    assert_eq!((r.status, body(&r)), (200, "3"));
    let restored = cookie(&r);
    assert_ne!(restored, a);
    assert_eq!(body(&s.counter(&post(&[("Cookie", &restored)]))), "4");
    let r = s.counter(&post(&[("X-Counter-Restore", "10")]));
    assert_eq!(body(&r), "11");
    for bad in ["-1", "x", "", "4611686018427387904"] {
        let r = s.counter(&post(&[("X-Counter-Restore", bad)]));
        assert_eq!(r.status, 400, "{bad:?}");
    }
    assert!(s.stats().table.unwrap().sessions <= 2);
}

#[test]
fn stateless_tokens_carry_the_counter() {
    let s = state(StateMode::Stateless, 1);
    let mut token: Option<String> = None;
    for want in 1..=3u64 {
        let headers: Vec<(&str, &str)> = token
            .iter()
            .map(|t| ("X-State-Token", t.as_str()))
            .collect();
        let r = s.counter(&post(&headers));
        assert_eq!((r.status, body(&r)), (200, want.to_string().as_str()));
        let t = header(&r, "x-state-token").unwrap().to_string();
        assert!(t.starts_with(&format!("{want}.")), "{t}");
        token = Some(t);
    }
    let t = token.unwrap();
    let (_, mac) = t.split_once('.').unwrap();
    for bad in [
        format!("100.{mac}"),
        "3.abc".to_string(),
        "garbage".to_string(),
    ] {
        let r = s.counter(&post(&[("X-State-Token", &bad)]));
        assert_eq!((r.status, body(&r)), (403, "invalid token"), "{bad}");
    }
    // Another server with the same key accepts it; one with another does not.
    assert_eq!(
        body(&state(StateMode::Stateless, 1).counter(&post(&[("X-State-Token", &t)]))),
        "4"
    );
    let other = State::new(&StateConfig {
        mode: StateMode::Stateless,
        ..StateConfig::default()
    })
    .unwrap();
    assert_eq!(other.counter(&post(&[("X-State-Token", &t)])).status, 403);
    assert!(s.stats().table.is_none());
}

#[test]
fn bad_settings_are_refused() {
    let cfg = |mode, max_sessions, ttl, key: &[u8]| StateConfig {
        mode,
        max_sessions,
        ttl,
        session_idle: None,
        key: Some(StateKey(key.to_vec())),
        route: None,
    };
    let secs = Duration::from_secs;
    assert!(State::new(&cfg(StateMode::Stateful, 0, secs(1), b"k")).is_err());
    assert!(State::new(&cfg(StateMode::Soft, 10, secs(0), b"k")).is_err());
    assert!(State::new(&cfg(StateMode::Stateless, 10, secs(1), b"")).is_err());
    assert!(State::new(&cfg(StateMode::Stateless, 10, secs(1), b"short")).is_err());
    let idle = |mode, idle| StateConfig {
        session_idle: Some(idle),
        ..cfg(mode, 10, secs(1), b"a test key of 16+ bytes")
    };
    assert!(State::new(&idle(StateMode::Stateful, secs(0))).is_err());
    assert!(State::new(&idle(StateMode::Soft, secs(5))).is_err());
    assert!(State::new(&idle(StateMode::Stateful, secs(5))).is_ok());
    assert_eq!("soft".parse(), Ok(StateMode::Soft));
    assert!("Soft".parse::<StateMode>().is_err());
    assert_eq!(
        format!("{:?}", StateKey(b"secret".to_vec())),
        "StateKey(6 bytes)"
    );
}
