//! The conformance suite: the same real-bytes-on-the-wire checks against
//! every architecture, each started through `serverlab serve` on port 0.
//! Adding an architecture means adding one line to the list in
//! `tests/common/mod.rs` (`every_arch!`).

#[macro_use]
mod common;

use common::{get, Client, Server};
use std::time::Duration;

pub fn routes(arch: &str) {
    let s = Server::start(arch, &[]);
    let r = get(s.addr, "/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(r.header("content-length"), Some("13"));

    let r = get(s.addr, "/work?cpu=2&io_ms=5&bytes=1000");
    assert_eq!((r.status, r.body.len()), (200, 1000));
    assert_eq!(get(s.addr, "/work?cpu=999999").status, 400);

    let r = get(s.addr, "/file/index.html");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>serverlab</h1>\n"));
    assert_eq!(get(s.addr, "/file/missing.html").status, 404);
    assert_eq!(get(s.addr, "/file/../../../etc/passwd").status, 403);

    assert_eq!(get(s.addr, "/health").status, 200);
    let r = get(s.addr, "/stats");
    assert_eq!(r.status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(stats["arch"], arch);
    assert!(stats["requests"].as_u64().unwrap() >= 7, "{stats}");
    assert!(stats["workers"].as_i64().unwrap() >= 1, "{stats}");

    assert_eq!(get(s.addr, "/nope").status, 404);
    let mut c = Client::connect(s.addr);
    let r = c.request(b"DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    c.send(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head().unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("13")));
    // The next response follows at once: no body was sent for HEAD.
    assert_eq!(c.read().unwrap().text(), "ok");
}

pub fn keep_alive_and_close(arch: &str) {
    let s = Server::start(arch, &[]);
    let mut c = Client::connect(s.addr);
    for _ in 0..5 {
        let r = c.request(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), None);
    }
    let r = c.request(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_server());

    // HTTP/1.0 closes unless asked to keep alive.
    let mut c = Client::connect(s.addr);
    let r = c.request(b"GET /hello HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(c.closed_by_server());
    let mut c = Client::connect(s.addr);
    c.request(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        c.request(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .status,
        200
    );
}

pub fn pipelining(arch: &str) {
    let s = Server::start(arch, &[]);
    let mut c = Client::connect(s.addr);
    // 16 requests in one write, mixing bodies and waits, answered in order.
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend_from_slice(
            format!(
                "GET /work?bytes={i}&io_ms={} HTTP/1.1\r\nHost: t\r\n\r\n",
                i % 3
            )
            .as_bytes(),
        );
    }
    c.send(&batch);
    for i in 0..16 {
        let r = c.read().expect("pipelined response");
        assert_eq!(
            (r.status, r.body.len()),
            (200, i),
            "response {i} out of order"
        );
    }
}

pub fn many_concurrent_clients(arch: &str) {
    let s = Server::start(arch, &[]);
    let addr = s.addr;
    let clients: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..3 {
                    let r = c.request(
                        format!("GET /work?bytes={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
                    );
                    assert_eq!((r.status, r.body.len()), (200, i));
                }
                c.request(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
}

pub fn bad_input_answered_and_server_survives(arch: &str) {
    let s = Server::start(arch, &[]);
    let cases: &[(&[u8], u16)] = &[
        (b"\x16\x03\x01garbage that is not http\r\n\r\n", 400),
        (
            b"GET /hello HTTP/1.1\r\nHost: t\r\nContent-Length: banana\r\n\r\n",
            400,
        ),
        (
            b"POST /counter HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
    ];
    for (raw, status) in cases {
        let mut c = Client::connect(s.addr);
        let r = c.request(raw);
        assert_eq!(r.status, *status, "for {:?}", String::from_utf8_lossy(raw));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed_by_server());
    }
    let huge = format!(
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let mut c = Client::connect(s.addr);
    assert_eq!(c.request(huge.as_bytes()).status, 431);

    // A client that disconnects mid-request, and one that resets.
    let mut c = Client::connect(s.addr);
    c.send(b"GET /hel");
    drop(c);
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);

    assert_eq!(get(s.addr, "/hello").status, 200);
}

pub fn stalled_client_times_out(arch: &str) {
    let s = Server::start(arch, &["--idle-timeout", "300ms"]);
    let mut c = Client::connect(s.addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost:");
    match c.read() {
        Some(r) => assert_eq!(r.status, 408),
        // Only `async` may close without answering: hyper's
        // header_read_timeout drops the connection and has no way to send a
        // 408 (documented in arch/tokio_hyper.rs). Everyone else uses our
        // codec and must answer.
        None => assert_eq!(
            arch, "async",
            "{arch} closed a stalled request without a 408"
        ),
    }
    assert!(c.closed_by_server());
    let mut idle = Client::connect(s.addr);
    assert!(idle.closed_by_server());
    assert_eq!(get(s.addr, "/hello").status, 200);
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host, or any request with
/// two, is 400. RFC 9110 §10.1.1: a client that sends `Expect:
/// 100-continue` gets `100 Continue` before sending its body, then the
/// final answer.
pub fn host_and_expect_continue(arch: &str) {
    let s = Server::start(arch, &[]);
    for raw in [
        &b"GET /hello HTTP/1.1\r\n\r\n"[..],
        b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let r = Client::connect(s.addr).request(raw);
        assert_eq!(r.status, 400, "{arch}: {:?}", String::from_utf8_lossy(raw));
    }
    let mut c = Client::connect(s.addr);
    c.send(
        b"POST /counter HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    let interim = c.read().expect("100 Continue before the body");
    assert_eq!(interim.status, 100, "{arch}");
    c.send(b"{}");
    let r = c.read().expect("the final answer");
    assert_eq!((r.status, r.text().as_str()), (200, "1"), "{arch}");
}

/// A client that sends its request and closes its side at once (both may
/// arrive in one event) is answered, and its connection closed by the
/// server then, not at the idle timeout: the event loops stop reading at a
/// short read, except when the client has closed.
pub fn half_closed_client_is_answered_and_let_go(arch: &str) {
    use std::io::{Read, Write};
    let s = Server::start(arch, &["--idle-timeout", "30s"]);
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let end = c.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{arch}: {text:?}");
        assert!(end.is_ok(), "{arch}: not closed after the answer: {end:?}");
    }
}

/// Started by a socket-activating launcher (the listening socket passed as
/// descriptor 3 with `LISTEN_FDS`), it serves on that socket and ignores
/// `--listen` (an address it could not bind), keep-alive and pipelining
/// included, and stops cleanly.
pub fn inherited_listener(arch: &str) {
    let mut s = Server::start_activated(arch, &[]);
    assert_eq!(get(s.addr, "/hello").status, 200, "{arch}");
    let mut c = Client::connect(s.addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /work?bytes=3 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read().expect("first").status, 200, "{arch}");
    assert_eq!(c.read().expect("second").body.len(), 3, "{arch}");
    drop(c);
    let status = s.stop().expect("stops within 15 s of SIGTERM");
    assert!(status.success(), "{arch} exited with {status}");
}

/// Connections handed over by a front end (`--handoff`), with part of the
/// first request already read by it — none, a few bytes, or all that had
/// arrived — are served exactly as accepted ones, keep-alive and
/// pipelining included; the server's own listener serves on beside it, and
/// the socket file is gone once it stops.
pub fn handed_off_connections(arch: &str) {
    let path = common::socket_path("handoff");
    let mut s = Server::start(arch, &["--handoff", path.to_str().unwrap()]);
    let front = common::HandoffFront::start(&path);
    for _ in 0..3 {
        let r = get(front.addr, "/hello");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello, World!"),
            "{arch}"
        );
    }
    for _ in 0..3 {
        let mut c = Client::connect(front.addr);
        c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /work?bytes=3&io_ms=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.read().expect("first").status, 200, "{arch}");
        assert_eq!(c.read().expect("second").body.len(), 3, "{arch}");
        let r = c.request(b"GET /work?bytes=7 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(r.body.len(), 7, "{arch}");
        assert!(c.closed_by_server(), "{arch}");
    }
    let mut c = Client::connect(front.addr);
    let r = c.request(b"GET\r\n\r\n");
    assert_eq!(
        r.status, 400,
        "{arch}: bad input over a handoff is answered"
    );
    assert_eq!(
        get(s.addr, "/hello").status,
        200,
        "{arch}: the listener too"
    );
    drop(front);
    let status = s.stop().expect("stops within 15 s of SIGTERM");
    assert!(status.success(), "{arch} exited with {status}");
    assert!(!path.exists(), "{arch}: the handoff socket file is removed");
}

pub fn clean_shutdown(arch: &str) {
    let mut s = Server::start(arch, &[]);
    assert_eq!(get(s.addr, "/hello").status, 200);
    let status = s.stop().expect("server stops within 15 s of SIGTERM");
    assert!(status.success(), "{arch} exited with {status}");
}

macro_rules! conformance {
    ($($module:ident => $name:literal,)*) => {
        /// Every architecture the suite covers.
        const COVERED: &[&str] = &[$($name),*];
        $(
        mod $module {
            #[test] fn routes() { super::routes($name) }
            #[test] fn keep_alive_and_close() { super::keep_alive_and_close($name) }
            #[test] fn pipelining() { super::pipelining($name) }
            #[test] fn many_concurrent_clients() { super::many_concurrent_clients($name) }
            #[test] fn bad_input_answered_and_server_survives() { super::bad_input_answered_and_server_survives($name) }
            #[test] fn stalled_client_times_out() { super::stalled_client_times_out($name) }
            #[test] fn clean_shutdown() { super::clean_shutdown($name) }
            #[test] fn host_and_expect_continue() { super::host_and_expect_continue($name) }
            #[test] fn half_closed_client_is_answered_and_let_go() { super::half_closed_client_is_answered_and_let_go($name) }
            #[test] fn inherited_listener() { super::inherited_listener($name) }
            #[test] fn handed_off_connections() { super::handed_off_connections($name) }
        }
    )*};
}

every_arch!(conformance);

/// Settings that would make a server unusable are refused at start, with
/// the reason, before anything listens.
#[test]
fn unusable_settings_are_refused() {
    for (args, says) in [
        (
            &["--idle-timeout", "0s"][..],
            "--idle-timeout must be more than 0",
        ),
        (&["--workers", "0"], "--workers"),
        (&["--workers", "100000000"], "--workers"),
        (&["--helpers", "0"], "--helpers"),
        (
            &["--state", "soft", "--session-idle", "5s"],
            "--session-idle is for stateful",
        ),
        (
            &["--session-idle", "0s"],
            "--session-idle must be more than 0",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_serverlab"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} listened");
    }
}

/// An architecture added to `servers::arch::ALL` must be added above too.
#[test]
fn every_architecture_is_covered() {
    let mut covered = COVERED.to_vec();
    let mut all = servers::arch::names();
    covered.sort_unstable();
    all.sort_unstable();
    assert_eq!(covered, all);
}
