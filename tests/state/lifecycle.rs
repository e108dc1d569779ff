//! What happens to state over a server's life: a restart, a full table, a
//! time-to-live running out, and replicas sharing (or not) a token key.

use super::{post_once, stats, Counter, Mode};
use crate::common::Server;

/// A process-based architecture when there is one (the case where sharing
/// matters most), else the first.
fn one_arch() -> &'static str {
    let names = servers::arch::names();
    names
        .iter()
        .copied()
        .find(|n| *n == "prefork")
        .unwrap_or(names[0])
}

/// A client that opens a connection per request, so that several of them
/// can take turns on one thread even against the iterative server.
fn client(addr: std::net::SocketAddr, mode: Mode) -> Counter {
    let mut c = Counter::new(addr, mode);
    c.per_connection = 1;
    c
}

fn run(c: &mut Counter, n: usize) {
    for _ in 0..n {
        c.step().unwrap();
    }
}

#[test]
fn a_restart_loses_stateful_sessions_and_says_so() {
    let arch = one_arch();
    let mut s = Server::start(arch, &["--state", "stateful"]);
    let mut c = client(s.addr, Mode::Stateful);
    run(&mut c, 3);
    let cookie = c.cookie.clone().unwrap();
    assert!(s.stop().is_some_and(|st| st.success()), "clean stop");

    let s = Server::start(arch, &["--state", "stateful"]);
    let r = post_once(s.addr, &format!("Cookie: {cookie}\r\n"));
    assert_eq!((r.status, r.text().as_str()), (410, "unknown session"));
    assert_eq!(r.header("x-session"), Some("unknown"));
    // Stateful mode never rebuilds from what the client claims.
    let r = post_once(
        s.addr,
        &format!("Cookie: {cookie}\r\nX-Counter-Restore: 3\r\n"),
    );
    assert_eq!(r.status, 400);
    // Starting over is the client's explicit choice: no cookie, a new session.
    let r = post_once(s.addr, "");
    assert_eq!((r.status, r.text().as_str()), (200, "1"));
}

#[test]
fn soft_clients_continue_across_a_restart() {
    let arch = one_arch();
    let mut s = Server::start(arch, &["--state", "soft"]);
    let mut c = client(s.addr, Mode::Soft);
    run(&mut c, 5);
    let old = c.cookie.clone();
    assert!(s.stop().is_some_and(|st| st.success()), "clean stop");

    let s = Server::start(arch, &["--state", "soft"]);
    c.addr = s.addr;
    c.conn = None;
    run(&mut c, 5);
    assert_eq!((c.last, c.restores), (10, 1));
    assert_ne!(c.cookie, old, "the restore made a new session");
    assert_eq!(stats(s.addr)["sessions"], 1);
}

#[test]
fn a_full_table_refuses_new_stateful_sessions_in_every_arch() {
    for arch in servers::arch::names() {
        let s = Server::start(arch, &["--state", "stateful", "--max-sessions", "3"]);
        let mut old: Vec<Counter> = (0..3).map(|_| client(s.addr, Mode::Stateful)).collect();
        for c in &mut old {
            run(c, 1);
        }
        let r = post_once(s.addr, "");
        assert_eq!(r.status, 503, "{arch}: {r:?}");
        assert_eq!(r.header("set-cookie"), None, "{arch}");
        for c in &mut old {
            run(c, 2);
            assert_eq!(c.last, 3, "{arch}");
        }
        let st = stats(s.addr);
        assert_eq!(st["sessions"], 3, "{arch}: {st}");
        assert_eq!(st["session_table"]["refused"], 1, "{arch}: {st}");
    }
}

#[test]
fn a_full_soft_table_evicts_and_clients_recover_in_every_arch() {
    for arch in servers::arch::names() {
        let s = Server::start(arch, &["--state", "soft", "--max-sessions", "3"]);
        let mut cs: Vec<Counter> = (0..5).map(|_| client(s.addr, Mode::Soft)).collect();
        // Five clients over three places, taking turns: each new or
        // restored session evicts the least recently used one.
        for _round in 0..4 {
            for c in &mut cs {
                run(c, 1);
            }
        }
        for c in &cs {
            assert_eq!(c.last, 4, "{arch}");
        }
        let restores: u32 = cs.iter().map(|c| c.restores).sum();
        assert!(
            restores > 0,
            "{arch}: five clients cannot fit in three places"
        );
        let st = stats(s.addr);
        assert_eq!(st["sessions"], 3, "{arch}: {st}");
        assert!(
            st["session_table"]["evicted"].as_u64() >= Some(2),
            "{arch}: {st}"
        );
        assert_eq!(st["session_table"]["refused"], 0, "{arch}: {st}");
    }
}

/// 100 cookie-less clients fill a stateful table; with `--session-idle`
/// their places come free once they have been idle that long, and a new
/// client gets a session instead of 503. A session in use is kept.
#[test]
fn a_stateful_idle_limit_frees_places_held_by_clients_that_left() {
    let s = Server::start(
        one_arch(),
        &[
            "--state",
            "stateful",
            "--max-sessions",
            "100",
            "--session-idle",
            "1s",
        ],
    );
    let mut kept = client(s.addr, Mode::Stateful);
    run(&mut kept, 1);
    for _ in 0..99 {
        assert_eq!(post_once(s.addr, "").status, 200);
    }
    assert_eq!(post_once(s.addr, "").status, 503, "the table is full");
    // The kept client stays active while the anonymous ones go idle.
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        run(&mut kept, 1);
    }
    let r = post_once(s.addr, "");
    assert_eq!(r.status, 200, "{r:?}");
    run(&mut kept, 1);
    assert_eq!(kept.last, 8);
    let st = stats(s.addr);
    assert!(st["session_table"]["expired"].as_u64() >= Some(1), "{st}");
}

#[test]
fn soft_sessions_expire_after_the_ttl() {
    let s = Server::start(one_arch(), &["--state", "soft", "--ttl", "1s"]);
    let mut c = client(s.addr, Mode::Soft);
    run(&mut c, 2);
    // Waiting is the point here, not synchronisation: idle well past the
    // TTL, which is long enough that the first two requests (on a loaded
    // machine) cannot outlast it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    run(&mut c, 1);
    assert_eq!((c.last, c.restores), (3, 1));
    assert!(stats(s.addr)["session_table"]["expired"].as_u64() >= Some(1));
}

#[test]
fn replicas_with_the_same_key_accept_each_others_tokens() {
    let arch = one_arch();
    let dir = std::env::temp_dir().join(format!("serverlab-state-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, "shared secret of the replicas\n").unwrap();
    let key_file = key_file.to_str().unwrap().to_string();

    let a = Server::start(
        arch,
        &[
            "--state",
            "stateless",
            "--state-key",
            "shared secret of the replicas",
        ],
    );
    let b = Server::start(
        arch,
        &["--state", "stateless", "--state-key-file", &key_file],
    );
    let other = Server::start(
        arch,
        &[
            "--state",
            "stateless",
            "--state-key",
            "another key, quite different",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let mut c = client(a.addr, Mode::Stateless);
    run(&mut c, 3);
    // The same client moves to the replica B and carries on.
    c.addr = b.addr;
    c.conn = None;
    run(&mut c, 3);
    assert_eq!(c.last, 6);
    let token = c.token.clone().unwrap();
    let r = post_once(other.addr, &format!("X-State-Token: {token}\r\n"));
    assert_eq!((r.status, r.text().as_str()), (403, "invalid token"));
}
