//! `--blocking-io` shows the classic event-loop pitfall: a wait run inline
//! stalls every connection of the loop, so 50 concurrent 50 ms waits take
//! 50 × 50 ms. AMPED hands the same waits to helper threads, and the plain
//! event loop parks them on timers; both finish them all in about one wait.
//! Margins are generous: the machine may be busy with other builds.

mod common;

use common::{Client, Server};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const IO_MS: u64 = 50;

/// Time for `CLIENTS` concurrent `GET /work?io_ms=IO_MS`, each on its own
/// connection, all connected before the first request is sent.
fn concurrent_waits(arch: &str, extra: &[&str]) -> Duration {
    let s = Server::start(arch, extra);
    let addr = s.addr;
    let ready = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                ready.wait();
                c.request(
                    format!(
                        "GET /work?io_ms={IO_MS} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .status
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for c in clients {
        assert_eq!(c.join().expect("client thread"), 200, "{arch} {extra:?}");
    }
    start.elapsed()
}

#[test]
fn amped_does_not_stall_where_blocking_io_does() {
    let serial = Duration::from_millis(IO_MS * CLIENTS as u64);
    let blocking = concurrent_waits("event-loop", &["--blocking-io"]);
    let amped = concurrent_waits("amped", &[]);
    let timers = concurrent_waits("event-loop", &[]);
    println!("{CLIENTS} × {IO_MS} ms waits: event-loop --blocking-io {blocking:?}, amped {amped:?}, event-loop {timers:?}");
    // Inline waits run one after another: at least 80% of the serial sum.
    assert!(
        blocking >= serial * 4 / 5,
        "blocking-io took only {blocking:?}"
    );
    assert!(
        amped < blocking * 2 / 5,
        "amped {amped:?} vs blocking-io {blocking:?}"
    );
    assert!(
        timers < blocking * 2 / 5,
        "event-loop {timers:?} vs blocking-io {blocking:?}"
    );
}

#[test]
fn amped_blocking_io_stalls_too() {
    // Under --blocking-io AMPED runs waits inline as well (documented): the
    // flag means "show the pitfall", whatever the architecture.
    let serial = Duration::from_millis(IO_MS * CLIENTS as u64);
    let t = concurrent_waits("amped", &["--blocking-io"]);
    assert!(t >= serial * 4 / 5, "amped --blocking-io took only {t:?}");
}

#[test]
fn async_blocking_io_stalls_its_workers() {
    // In async code a blocking sleep holds a runtime thread: with two
    // workers at most two waits run at once, so 50 take at least 25 × 50 ms.
    // As a timer (the default) they all overlap.
    let serial = Duration::from_millis(IO_MS * CLIENTS as u64);
    let blocking = concurrent_waits("async", &["--workers", "2", "--blocking-io"]);
    let timers = concurrent_waits("async", &["--workers", "2"]);
    println!("{CLIENTS} × {IO_MS} ms waits: async --blocking-io {blocking:?}, async {timers:?}");
    assert!(
        blocking >= serial * 2 / 5,
        "async --blocking-io took only {blocking:?}"
    );
    assert!(
        timers < blocking * 2 / 5,
        "async {timers:?} vs --blocking-io {blocking:?}"
    );
}

#[test]
fn amped_helpers_bound_the_waits_in_progress() {
    // 50 waits through 5 helpers run 5 at a time: about 10 rounds of 50 ms,
    // where 50 helpers finish them in about one round.
    let few = concurrent_waits("amped", &["--helpers", "5"]);
    let many = concurrent_waits("amped", &["--helpers", "50"]);
    println!("{CLIENTS} × {IO_MS} ms waits: amped --helpers 5 {few:?}, --helpers 50 {many:?}");
    let rounds = Duration::from_millis(IO_MS * (CLIENTS as u64 / 5));
    assert!(few >= rounds * 4 / 5, "5 helpers took only {few:?}");
    assert!(many < few / 2, "50 helpers {many:?} vs 5 helpers {few:?}");
}

/// Median time for a 10 ms wait, over 20 staggered keep-alive clients
/// each sending 30 in a row (so the loop keeps waking for other clients
/// between one wait's start and its end).
fn median_10ms_wait(arch: &str) -> Duration {
    let s = Server::start(arch, &["--workers", "32"]);
    let addr = s.addr;
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                std::thread::sleep(Duration::from_micros(i * 500));
                (0..30)
                    .map(|_| {
                        let start = Instant::now();
                        let r = c.request(b"GET /work?io_ms=10 HTTP/1.1\r\nHost: t\r\n\r\n");
                        assert_eq!(r.status, 200);
                        start.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Duration> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort();
    all[all.len() / 2]
}

/// An event loop's timers fire on time: its 10 ms waits take no longer
/// than a thread's `sleep` of 10 ms, measured in the same run. (Timers
/// used to ride on epoll's millisecond timeout, rounded up: 0.5–1 ms late.)
#[test]
fn event_loop_timers_fire_on_time() {
    let threads = median_10ms_wait("thread-pool");
    let timers = median_10ms_wait("event-loop");
    eprintln!("median 10 ms wait: thread-pool {threads:?}, event-loop {timers:?}");
    assert!(
        timers < threads + Duration::from_micros(400),
        "event-loop {timers:?} against thread-pool {threads:?}"
    );
}
