//! A load smoke test per architecture, through `serverlab serve`: 200
//! concurrent keep-alive clients, then 2,000 `Connection: close` requests,
//! every answer checked byte for byte. Bounded: each client has a read
//! timeout and every test a deadline. Adding an architecture means adding
//! one line to the `load_smoke!` list at the bottom.

#[macro_use]
mod common;

use common::{Client, Server};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// How long one test may take in all (debug build, loaded machine).
const DEADLINE: Duration = Duration::from_secs(120);

pub fn keep_alive_200(arch: &str) {
    let s = Server::start(arch, &[]);
    let started = Instant::now();
    let addr = s.addr;
    // All 200 connect first, then all send: the connections are open at
    // the same time, as the test's name promises.
    let barrier = Arc::new(Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                for k in 0..5 {
                    let bytes = (i * 7 + k) % 300;
                    let r = c.request(
                        format!("GET /work?bytes={bytes} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
                    );
                    assert_eq!((r.status, r.body.len()), (200, bytes), "client {i}");
                    assert!(r.body.iter().all(|&b| b == b'x'), "client {i}");
                }
                let r = c.request(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
                assert!(c.closed_by_server());
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    assert!(
        started.elapsed() < DEADLINE,
        "{arch}: {:?}",
        started.elapsed()
    );
}

pub fn close_2000(arch: &str) {
    let s = Server::start(arch, &[]);
    let started = Instant::now();
    let addr = s.addr;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..250 {
                    let mut c = Client::connect(addr);
                    let r =
                        c.request(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
                    assert_eq!(r.header("connection"), Some("close"));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    assert!(
        started.elapsed() < DEADLINE,
        "{arch}: {:?}",
        started.elapsed()
    );
}

macro_rules! load_smoke {
    ($($module:ident => $name:literal,)*) => {$(
        mod $module {
            #[test] fn keep_alive_200() { super::keep_alive_200($name) }
            #[test] fn close_2000() { super::close_2000($name) }
        }
    )*};
}

every_arch!(load_smoke);

/// `serverlab load` exits non-zero when not one request succeeded (here:
/// nothing listens), after printing what it measured.
#[test]
fn load_fails_when_no_request_succeeded() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_serverlab"))
        .args([
            "load",
            &format!("http://127.0.0.1:{port}/"),
            "-c1",
            "-t1",
            "-d300ms",
            "--timeout",
            "200ms",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no request succeeded"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Requests/sec: 0.00 succeeded"), "{text}");
}

/// Ctrl-C ends a run early: what was measured is printed (JSON, with
/// `stopped_early`), and the exit status is 130, so that a script looping
/// over runs stops instead of starting the next.
#[test]
fn an_interrupted_load_prints_its_results_and_exits_130() {
    let server = Server::start("event-loop", &[]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_serverlab"))
        .args(["load", &format!("http://{}/hello", server.addr)])
        .args(["-c2", "-t1", "-d60s", "--warmup", "0s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("load went on after Ctrl-C")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stopped_early"], true, "{report}");
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
}
