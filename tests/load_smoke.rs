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
                    let r =
                        c.request(format!("GET /work?bytes={bytes} HTTP/1.1\r\n\r\n").as_bytes());
                    assert_eq!((r.status, r.body.len()), (200, bytes), "client {i}");
                    assert!(r.body.iter().all(|&b| b == b'x'), "client {i}");
                }
                let r = c.request(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
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
                    let r = c.request(b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
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
