//! The dispatcher in front of real replicas: handoff and splice, the
//! policies' distribution seen in the status, and a replica that dies.

mod common;

use common::{get, Client, Server};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_serverlab");

/// A running `serverlab dispatch`, killed on drop.
struct Dispatch {
    child: Child,
    addr: SocketAddr,
    status: SocketAddr,
}

impl Dispatch {
    fn start(args: &[String]) -> Dispatch {
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let status: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let mut child = Command::new(BIN)
            .args([
                "dispatch",
                "--listen",
                &addr.to_string(),
                "--status",
                &status.to_string(),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("dispatching"), "{line}");
        Dispatch {
            child,
            addr,
            status,
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&get(self.status, "/status").body).unwrap()
    }

    /// Connections each replica was given.
    fn shares(&self) -> Vec<u64> {
        let s = self.status();
        s["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["connections"].as_u64().unwrap())
            .collect()
    }
}

impl Drop for Dispatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two replicas taking handoffs, and the `--replica` arguments for them.
fn handoff_replicas(arch: &str) -> (Vec<Server>, Vec<String>) {
    let mut servers = Vec::new();
    let mut args = Vec::new();
    for _ in 0..2 {
        let path = common::socket_path("replica");
        let s = Server::start(arch, &["--handoff", path.to_str().unwrap()]);
        args.extend([
            "--replica".to_string(),
            format!("{}@{}", s.addr, path.display()),
        ]);
        servers.push(s);
    }
    (servers, args)
}

/// Handoff with round robin: an exact split, every answer from a replica
/// directly; a replica killed outright is taken out at the next handoff
/// that fails and the clients are served by the other.
#[test]
fn handoff_round_robin_and_a_dead_replica() {
    let (mut replicas, mut args) = handoff_replicas("event-loop");
    args.extend(["--mode", "handoff", "--policy", "round-robin"].map(String::from));
    let d = Dispatch::start(&args);
    for _ in 0..20 {
        let r = get(d.addr, "/hello");
        assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    }
    assert_eq!(d.shares(), [10, 10], "round robin is exact");
    let mut c = Client::connect(d.addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /work?bytes=9 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read().unwrap().status, 200);
    assert_eq!(
        c.read().unwrap().body.len(),
        9,
        "pipelined over a handed-off connection"
    );
    drop(c);

    let _ = replicas[0].child.kill();
    let _ = replicas[0].child.wait();
    // Killed outright, it could not remove its socket file: the test does.
    let dead = args[1].split_once('@').unwrap().1.to_string();
    let _guard = RemoveOnDrop(dead.into());
    for _ in 0..10 {
        assert_eq!(get(d.addr, "/hello").status, 200, "served by the survivor");
    }
    let s = d.status();
    assert_eq!(s["replicas"][0]["up"], false, "{s}");
    assert!(s["replicas"][0]["ejections"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["refused"], 0, "{s}");
}

/// splice with least connections: requests, pipelining and a large body
/// pass byte-exact; a replica that is not there is taken out.
#[test]
fn splice_relays_and_skips_a_missing_replica() {
    let a = Server::start("thread-pool", &[]);
    let b = Server::start("event-loop", &[]);
    let missing = format!("127.0.0.1:{}", common::free_port());
    let args: Vec<String> = [
        "--replica",
        &a.addr.to_string(),
        "--replica",
        &b.addr.to_string(),
        "--replica",
        &missing,
        "--mode",
        "splice",
        "--policy",
        "least-connections",
    ]
    .map(String::from)
    .to_vec();
    let d = Dispatch::start(&args);
    for _ in 0..12 {
        assert_eq!(get(d.addr, "/hello").status, 200);
    }
    let r = get(d.addr, "/work?bytes=1000000");
    assert_eq!((r.status, r.body.len()), (200, 1_000_000));
    let mut c = Client::connect(d.addr);
    let mut batch = Vec::new();
    for i in 0..8 {
        batch.extend_from_slice(
            format!("GET /work?bytes={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
    }
    c.send(&batch);
    for i in 0..8 {
        assert_eq!(c.read().unwrap().body.len(), i);
    }
    let s = d.status();
    assert_eq!(s["replicas"][2]["up"], false, "{s}");
    assert_eq!(s["refused"], 0, "{s}");
    let shares = d.shares();
    assert!(shares[0] > 0 && shares[1] > 0, "{shares:?}");
}

/// affinity keeps a session on one replica (the dispatcher peeks at the
/// cookie without consuming it); different sessions spread.
#[test]
fn affinity_keeps_a_session_on_one_replica() {
    let (_replicas, mut args) = handoff_replicas("thread-pool");
    args.extend(["--mode", "handoff", "--policy", "affinity"].map(String::from));
    let d = Dispatch::start(&args);
    for round in 0..3 {
        for sid in ["alice", "bob", "carol", "dave"] {
            let mut c = Client::connect(d.addr);
            let r = c.request(
                format!("GET /hello HTTP/1.1\r\nHost: t\r\nCookie: theme=dark; sid={sid}\r\n\r\n")
                    .as_bytes(),
            );
            assert_eq!(r.status, 200, "{sid} round {round}");
        }
    }
    let shares = d.shares();
    assert_eq!(shares.iter().sum::<u64>(), 12);
    // Each session's three connections went to one replica: every share is
    // a multiple of 3.
    assert!(shares.iter().all(|s| s % 3 == 0), "{shares:?}");
    std::thread::sleep(Duration::from_millis(10));
}

/// Sessions made by fresh clients stay with the replica that made them:
/// the replicas end their session ids in their routes (`serve --route`)
/// and affinity follows the route, per connection (handoff) and per
/// request (http). Before routes, a new client was placed by its address
/// and its session then hashed elsewhere: 410 on its second request.
#[test]
fn affinity_sends_new_sessions_back_to_the_replica_that_made_them() {
    for mode in ["handoff", "http"] {
        let mut replicas = Vec::new();
        let mut args: Vec<String> = ["--mode", mode, "--policy", "affinity"]
            .map(String::from)
            .to_vec();
        for route in ["r1", "r2"] {
            let path = common::socket_path("routed");
            let s = Server::start(
                "event-loop",
                &["--route", route, "--handoff", path.to_str().unwrap()],
            );
            args.extend([
                "--replica".to_string(),
                format!("{}@{},route={route}", s.addr, path.display()),
            ]);
            replicas.push(s);
        }
        let d = Dispatch::start(&args);
        let post = |cookie: &str| {
            let mut c = Client::connect(d.addr);
            c.request(
                format!("POST /counter HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n{cookie}\r\n")
                    .as_bytes(),
            )
        };
        let mut routes = std::collections::BTreeSet::new();
        for client in 0..8 {
            let first = post("");
            assert_eq!(
                (first.status, first.text()),
                (200, "1".to_string()),
                "{mode}"
            );
            let set = first.header("set-cookie").expect("a new session's cookie");
            let sid = set.split(';').next().unwrap().trim().to_string();
            routes.insert(sid.rsplit('.').next().unwrap().to_string());
            // Each later request on a new connection finds its session.
            for n in 2..=4 {
                let r = post(&format!("Cookie: {sid}\r\n"));
                assert_eq!(
                    (r.status, r.text()),
                    (200, n.to_string()),
                    "{mode}: client {client}, request {n}"
                );
            }
        }
        // New sessions are placed in turn: both replicas made some.
        assert_eq!(routes, ["r1", "r2"].map(String::from).into(), "{mode}");
    }
}

/// A file removed when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Active checks: a replica that stops is taken out without any client
/// noticing (no traffic at all), and comes back once it answers again.
#[test]
fn active_checks_take_a_replica_out_and_back() {
    let a = Server::start("event-loop", &[]);
    let port_b = common::free_port();
    let start_b = || {
        common::Stopped(
            Command::new(BIN)
                .args([
                    "serve",
                    "--arch",
                    "event-loop",
                    "--listen",
                    &format!("127.0.0.1:{port_b}"),
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let b = start_b();
    let args: Vec<String> = [
        "--replica",
        &a.addr.to_string(),
        "--replica",
        &format!("127.0.0.1:{port_b}"),
        "--check-interval",
        "100ms",
        "--fall",
        "2",
        "--rise",
        "2",
    ]
    .map(String::from)
    .to_vec();
    let d = Dispatch::start(&args);
    let up = |i: usize| d.status()["replicas"][i]["up"] == true;
    assert!(common::wait_for(Duration::from_secs(3), || up(1)));
    drop(b);
    assert!(
        common::wait_for(Duration::from_secs(3), || !up(1)),
        "taken out by the checks"
    );
    assert_eq!(
        d.status()["replicas"][1]["errors"],
        0,
        "no client connection failed"
    );
    for _ in 0..6 {
        assert_eq!(get(d.addr, "/hello").status, 200);
    }
    let _b = start_b();
    assert!(
        common::wait_for(Duration::from_secs(3), || up(1)),
        "back after two passed checks"
    );
    assert!(d.status()["replicas"][1]["last_change_s"].as_f64().unwrap() < 3.0);
}

/// http: each request of one keep-alive connection is routed on its own
/// (round robin: an exact split), bytes pass unchanged, bad input is the
/// codec's 400, and the dispatcher answers 503 when no replica is up and
/// 502 when one fails before its answer; a replica that dies in the
/// middle of an answer gets its client's connection closed.
#[test]
fn http_mode_routes_each_request_and_answers_for_failing_replicas() {
    let a = Server::start("event-loop", &[]);
    let b = Server::start("thread-pool", &[]);
    let args: Vec<String> = [
        "--replica",
        &a.addr.to_string(),
        "--replica",
        &b.addr.to_string(),
        "--mode",
        "http",
        "--check-interval",
        "0",
    ]
    .map(String::from)
    .to_vec();
    let d = Dispatch::start(&args);
    let mut c = Client::connect(d.addr);
    for i in 0..10 {
        let r = c.request(format!("GET /work?bytes={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!((r.status, r.body.len()), (200, i));
    }
    assert_eq!(d.shares(), [5, 5], "per request, not per connection");
    let r = get(d.addr, "/work?bytes=1000000");
    assert_eq!(r.body.len(), 1_000_000);
    // Pipelined requests are answered in order, each routed on its own.
    let mut p = Client::connect(d.addr);
    p.send(b"GET /work?bytes=3 HTTP/1.1\r\nHost: t\r\n\r\nGET /work?bytes=300000 HTTP/1.1\r\nHost: t\r\n\r\nGET /work?bytes=7 HTTP/1.1\r\nHost: t\r\n\r\n");
    // A client that does not read for a while: the answer waits for it.
    std::thread::sleep(Duration::from_millis(200));
    let sizes: Vec<usize> = (0..3).map(|_| p.read().unwrap().body.len()).collect();
    assert_eq!(sizes, [3, 300_000, 7]);
    let mut bad = Client::connect(d.addr);
    assert_eq!(bad.request(b"GET\r\n\r\n").status, 400);

    // A replica that reads the request and closes: 502.
    let closer = TcpListener::bind("127.0.0.1:0").unwrap();
    let closer_addr = closer.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in closer.incoming().take(2) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
        }
    });
    let d2 = Dispatch::start(&[
        "--replica".into(),
        closer_addr.to_string(),
        "--mode".into(),
        "http".into(),
        "--check-interval".into(),
        "0".into(),
    ]);
    assert_eq!(get(d2.addr, "/hello").status, 502);
    // No replica at all: 503.
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let d3 = Dispatch::start(&[
        "--replica".into(),
        nowhere,
        "--mode".into(),
        "http".into(),
        "--check-interval".into(),
        "0".into(),
    ]);
    assert_eq!(get(d3.addr, "/hello").status, 503);
    assert_eq!(d3.status()["refused"], 1);
}

/// http: a replica that accepts and never answers is timed out: its
/// client gets a 504, and the dispatcher goes on serving.
#[test]
fn http_mode_times_out_a_silent_replica() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in silent.incoming().take(1) {
            kept.push(s.unwrap());
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let args: Vec<String> = [
        "--replica",
        &addr.to_string(),
        "--mode",
        "http",
        "--check-interval",
        "0",
        "--answer-timeout",
        "300ms",
    ]
    .map(String::from)
    .to_vec();
    let d = Dispatch::start(&args);
    let started = std::time::Instant::now();
    let r = get(d.addr, "/hello");
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.status()["replicas"][0]["errors"], 1);
    held.join().unwrap();
}

/// The dispatcher's open descriptors.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A flood is bounded: beyond `--max-connections` clients get a 503 (http)
/// at once; and once every client has gone, the dispatcher holds as many
/// descriptors as when it was idle (http and splice: nothing leaks).
#[test]
fn floods_are_bounded_and_nothing_leaks() {
    let a = Server::start("event-loop", &[]);
    for mode in ["http", "splice"] {
        let args: Vec<String> = [
            "--replica",
            &a.addr.to_string(),
            "--mode",
            mode,
            "--check-interval",
            "0",
            "--max-connections",
            "4",
        ]
        .map(String::from)
        .to_vec();
        let d = Dispatch::start(&args);
        // One request first: the pool and the relay thread exist.
        assert_eq!(get(d.addr, "/hello").status, 200);
        // ... and its connection is over, in the dispatcher too.
        assert!(common::wait_for(Duration::from_secs(3), || d.status()
            ["open"]
            == 0));
        let idle = fds(d.child.id());
        let held: Vec<Client> = (0..4).map(|_| Client::connect(d.addr)).collect();
        // Each held client is being served (http) or relayed (splice).
        assert!(common::wait_for(Duration::from_secs(3), || d.status()
            ["open"]
            == 4));
        if mode == "http" {
            let r = get(d.addr, "/hello");
            assert_eq!(r.status, 503, "the fifth client, beyond the limit");
        } else {
            let mut extra = Client::connect(d.addr);
            extra.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
            assert!(extra.read().is_none(), "the fifth is closed unanswered");
        }
        assert!(d.status()["refused"].as_u64().unwrap() >= 1);
        drop(held);
        assert!(
            common::wait_for(Duration::from_secs(15), || fds(d.child.id()) <= idle),
            "{mode}: {} descriptors open, {idle} when idle",
            fds(d.child.id())
        );
    }
}

/// An http dispatcher over one thread-pool replica with `workers` workers
/// and `,maxconn=N` when given.
fn bounded_replica(workers: &str, maxconn: Option<u32>, timeout: &str) -> (Server, Dispatch) {
    let r = Server::start("thread-pool", &["--workers", workers]);
    let limit = maxconn.map_or(String::new(), |n| format!(",maxconn={n}"));
    let args: Vec<String> = [
        "--replica",
        &format!("{}{limit}", r.addr),
        "--mode",
        "http",
        "--check-interval",
        "0",
        "--answer-timeout",
        timeout,
    ]
    .map(String::from)
    .to_vec();
    (r, Dispatch::start(&args))
}

/// `clients` keep-alive clients at once, each asking `path` `n` times;
/// every status, and how long the slowest request took.
fn concurrent(addr: SocketAddr, clients: usize, n: usize, path: &str) -> (Vec<u16>, Duration) {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut out = Vec::new();
                for _ in 0..n {
                    let t = std::time::Instant::now();
                    let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                    out.push((r.status, t.elapsed()));
                    if r.status != 200 {
                        break;
                    }
                }
                out
            })
        })
        .collect();
    let all: Vec<(u16, Duration)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let slowest = all.iter().map(|a| a.1).max().unwrap_or_default();
    (all.into_iter().map(|a| a.0).collect(), slowest)
}

/// http with `maxconn`: six keep-alive clients on a replica of two
/// workers. Every request is answered and none waits for a pooled
/// connection to idle out: the proxy never holds more than two connections
/// to the replica (each has a worker), and the other requests wait in the
/// proxy, which its status shows.
#[test]
fn http_mode_queues_requests_for_a_replica_at_its_connection_limit() {
    let (_r, d) = bounded_replica("2", Some(2), "10s");
    let status = d.status;
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let w = watching.clone();
    let watcher = std::thread::spawn(move || {
        let (mut most_open, mut most_queued) = (0, 0);
        while w.load(std::sync::atomic::Ordering::Relaxed) {
            let s: serde_json::Value =
                serde_json::from_slice(&get(status, "/status").body).unwrap();
            most_open = most_open.max(s["replicas"][0]["proxy_connections"].as_u64().unwrap());
            // Round robin may send a request anywhere: it waits for any
            // replica (here the only one).
            most_queued = most_queued.max(s["queued"].as_u64().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
        (most_open, most_queued)
    });
    let (statuses, slowest) = concurrent(d.addr, 6, 5, "/work?io_ms=40");
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (most_open, most_queued) = watcher.join().unwrap();
    assert_eq!(statuses, vec![200; 30]);
    assert!(
        most_open <= 2,
        "{most_open} connections to a replica limited to 2"
    );
    assert!(
        most_queued >= 1,
        "six clients on two connections: some waited"
    );
    // 15 rounds of 40 ms behind two workers: about 0.6 s for the last one,
    // where a request stuck behind a pooled connection waits for the
    // replica's idle timeout (seconds).
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    assert_eq!(d.status()["replicas"][0]["maxconn"], 2);
}

/// http with `maxconn`: a request that waits in the proxy as long as the
/// answer timeout gets a 503 (counted as refused), and the others are served.
#[test]
fn http_mode_answers_503_to_a_request_that_waited_too_long() {
    // One worker, one connection, 300 ms per request, at most 1 s.
    let (_r, d) = bounded_replica("1", Some(1), "1s");
    let (statuses, _) = concurrent(d.addr, 6, 1, "/work?io_ms=300");
    let served = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(served + refused, 6, "{statuses:?}");
    assert!(served >= 3 && refused >= 1, "{statuses:?}");
    let s = d.status();
    assert_eq!(s["refused"], refused as u64);
    assert_eq!(
        (s["queued"].as_u64(), s["replicas"][0]["queued"].as_u64()),
        (Some(0), Some(0))
    );
    let r = get(d.addr, "/hello");
    assert_eq!(r.status, 200, "the dispatcher serves on");
}

/// `n` loopback addresses free now (for control addresses).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| {
            format!("127.0.0.1:{}", common::free_port())
                .parse()
                .unwrap()
        })
        .collect()
}

/// http with `maxconn` and a policy that may send a request anywhere
/// (round robin): a request whose turn falls on a full replica goes to one
/// with room; every replica full, it goes to whichever frees a connection
/// first — not to the one its turn named.
#[test]
fn http_mode_sends_a_movable_request_to_a_replica_with_room() {
    let a = Server::start("thread-pool", &["--workers", "1"]);
    let b = Server::start("thread-pool", &["--workers", "1"]);
    let args: Vec<String> = [
        "--replica".to_string(),
        format!("{},maxconn=1", a.addr),
        "--replica".into(),
        format!("{},maxconn=1", b.addr),
        "--mode".into(),
        "http".into(),
        "--check-interval".into(),
        "0".into(),
    ]
    .to_vec();
    let d = Dispatch::start(&args);
    let slow = |path: &'static str| {
        let addr = d.addr;
        std::thread::spawn(move || get(addr, path).status)
    };
    let timed = |path: &str| {
        let t = std::time::Instant::now();
        let status = get(d.addr, path).status;
        (status, t.elapsed())
    };
    // Turns: a (held 1.5 s), b, then a again — full, so b, which has room.
    let long = slow("/work?io_ms=1500");
    assert!(common::wait_for(Duration::from_secs(3), || d.status()
        ["replicas"][0]["open"]
        == 1));
    assert_eq!(timed("/hello").0, 200);
    let (status, took) = timed("/hello");
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(700),
        "waited {took:?} behind the busy replica"
    );
    assert_eq!(long.join().unwrap(), 200);
    // Both full: a for 1.5 s, b for 0.3 s; the next request's turn is a's,
    // but b frees first and takes it.
    let long = slow("/work?io_ms=1500");
    let short = slow("/work?io_ms=300");
    assert!(common::wait_for(Duration::from_secs(3), || {
        let s = d.status();
        s["replicas"][0]["open"] == 1 && s["replicas"][1]["open"] == 1
    }));
    let (status, took) = timed("/hello");
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(1200),
        "waited {took:?} for the slower replica"
    );
    assert_eq!((long.join().unwrap(), short.join().unwrap()), (200, 200));
    assert_eq!(d.status()["queued"], 0);
}

/// A splice dispatcher over two one-worker pools with `maxconn=1`, by
/// `policy`.
fn spliced_pools(policy: &str, timeout: &str) -> (Vec<Server>, Dispatch) {
    let replicas: Vec<Server> = (0..2)
        .map(|_| Server::start("thread-pool", &["--workers", "1"]))
        .collect();
    let mut args: Vec<String> = [
        "--mode",
        "splice",
        "--policy",
        policy,
        "--check-interval",
        "0",
        "--answer-timeout",
        timeout,
    ]
    .map(String::from)
    .to_vec();
    for r in &replicas {
        args.extend(["--replica".into(), format!("{},maxconn=1", r.addr)]);
    }
    let d = Dispatch::start(&args);
    (replicas, d)
}

/// A keep-alive client through `addr` that has had one answer.
fn served(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read().map(|r| r.status), Some(200));
    c
}

/// splice with `maxconn`: a relayed connection holds a one-worker replica
/// for as long as it lasts, so a client beyond the limit waits in the
/// dispatcher (its status shows it) and takes whichever replica frees
/// first — under round robin not the one its turn named, whose accept
/// queue it would otherwise sit in; one that closes while it waits leaves
/// the queue, and one that waits longer than the answer timeout is closed
/// and counted.
#[test]
fn splice_parks_a_client_beyond_maxconn_for_whichever_replica_frees_first() {
    let (_replicas, d) = spliced_pools("round-robin", "10s");
    let a = served(d.addr);
    let b = served(d.addr);
    // Its turn is a's; both are full.
    let mut c = Client::connect(d.addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(common::wait_for(Duration::from_secs(3), || d.status()
        ["queued"]
        == 1));
    let waiting = std::thread::spawn(move || c.read().map(|r| r.status));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !waiting.is_finished(),
        "answered while every replica was held"
    );
    // A client that gives up waiting leaves the queue (its request still
    // unread in the dispatcher's socket).
    let mut gone = Client::connect(d.addr);
    gone.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(common::wait_for(Duration::from_secs(3), || d.status()
        ["queued"]
        == 2));
    drop(gone);
    assert!(common::wait_for(Duration::from_secs(3), || d.status()
        ["queued"]
        == 1));
    drop(b);
    assert_eq!(waiting.join().unwrap(), Some(200), "b's worker, freed");
    let s = d.status();
    assert_eq!(
        (s["queued"].clone(), s["refused"].clone()),
        (0.into(), 0.into())
    );
    assert_eq!(s["replicas"][0]["open"], 1, "a still holds its replica");
    drop(a);

    let (_replicas, d) = spliced_pools("round-robin", "300ms");
    let (_a, _b) = (served(d.addr), served(d.addr));
    let mut late = Client::connect(d.addr);
    late.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    let started = std::time::Instant::now();
    assert_eq!(
        late.read().map(|r| r.status),
        None,
        "closed, never answered"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = d.status();
    assert_eq!(
        (s["queued"].clone(), s["refused"].clone()),
        (0.into(), 1.into())
    );
}

/// splice with `maxconn` and a policy that binds a client to its replica
/// (`source`: every loopback client hashes alike): a client beyond the
/// limit waits for that replica, even while the other has room.
#[test]
fn splice_parks_a_bound_client_for_its_own_replica() {
    let (_replicas, d) = spliced_pools("source", "10s");
    let first = served(d.addr);
    let mine = (0..2)
        .position(|i| d.status()["replicas"][i]["open"] == 1)
        .unwrap();
    let mut second = Client::connect(d.addr);
    second.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(common::wait_for(Duration::from_secs(3), || d.status()
        ["replicas"][mine]["queued"]
        == 1));
    let waiting = std::thread::spawn(move || second.read().map(|r| r.status));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiting.is_finished(), "sent to the other replica");
    drop(first);
    assert_eq!(waiting.join().unwrap(), Some(200));
    assert_eq!(d.status()["replicas"][1 - mine]["connections"], 0);
}

/// A pool replica with `maxconn` migrates under load: eight clients count
/// through the dispatcher (four times its two workers, so their requests
/// wait in the proxy, also while the migration pauses their sessions), and
/// not one increment is lost or refused; the active checks, which go to its
/// control address, never take it out.
#[test]
fn a_bounded_replica_with_maxconn_migrates_under_load() {
    let controls = free_addrs(2);
    let common_args = ["--state", "stateful", "--idle-timeout", "30s", "--control"];
    let mut source_args = vec!["--workers", "2", "--route", "r1"];
    let c0 = controls[0].to_string();
    source_args.extend(common_args);
    source_args.push(&c0);
    let source = Server::start("thread-pool", &source_args);
    let c1 = controls[1].to_string();
    let mut dest_args = vec!["--route", "r2"];
    dest_args.extend(common_args);
    dest_args.push(&c1);
    let dest = Server::start("event-loop", &dest_args);
    let args: Vec<String> = [
        "--mode".to_string(),
        "http".into(),
        "--policy".into(),
        "affinity".into(),
        "--check-interval".into(),
        "100ms".into(),
        "--replica".into(),
        format!("{},route=r1,control={},maxconn=2", source.addr, controls[0]),
        "--replica".into(),
        format!("{},route=r2,control={}", dest.addr, controls[1]),
    ]
    .to_vec();
    let d = Dispatch::start(&args);
    let sessions: Vec<String> = (0..8).map(|_| count(source.addr, "").2).collect();
    ballast(controls[0], 2000);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = d.addr;
    let clients: Vec<_> = sessions
        .into_iter()
        .map(|cookie| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut value = 1;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && value < 400 {
                    step(addr, &cookie, &mut value, "through the dispatcher");
                }
                value
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let report = migrate(&d, "stop-and-copy", &[]);
    assert_eq!(report["outcome"], "completed", "{report}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counted: u64 = clients.into_iter().map(|c| c.join().unwrap() - 1).sum();
    assert!(counted >= 16, "only {counted} increments");
    let s = d.status();
    assert_eq!(s["refused"], 0, "{s}");
    assert_eq!(s["replicas"][0]["ejections"], 0, "{s}");
    assert_eq!(s["replicas"][0]["queued"], 0, "{s}");
    assert!(sessions_held(dest.addr) >= 2008, "the sessions moved");
}

/// Three replicas of different architectures behind an http affinity
/// dispatcher; the `--replica` arguments name their routes r1..r3.
fn routed_cluster(archs: [&str; 3], state: &str) -> (Vec<Server>, Dispatch) {
    let mut replicas = Vec::new();
    // A replica slowed for a second or two by tests running side by side
    // stays in: out, its sessions would be lost (410) and these tests,
    // about migration, would fail for the health checks' sake (which have
    // tests of their own).
    let mut args: Vec<String> = ["--mode", "http", "--policy", "affinity", "--fall", "5"]
        .map(String::from)
        .to_vec();
    for (n, arch) in archs.into_iter().enumerate() {
        let route = format!("r{}", n + 1);
        let s = Server::start(arch, &["--route", &route, "--state", state]);
        args.extend(["--replica".to_string(), format!("{},route={route}", s.addr)]);
        replicas.push(s);
    }
    let d = Dispatch::start(&args);
    (replicas, d)
}

/// `POST /counter` on `addr` with the session `cookie` (a new one when
/// empty): the status, the value, and the session's cookie.
fn count(addr: SocketAddr, cookie: &str) -> (u16, String, String) {
    let header = if cookie.is_empty() {
        String::new()
    } else {
        format!("Cookie: {cookie}\r\n")
    };
    let r = Client::connect(addr).request(
        format!("POST /counter HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n{header}\r\n")
            .as_bytes(),
    );
    let set = r
        .header("set-cookie")
        .map(|c| c.split(';').next().unwrap().trim().to_string())
        .unwrap_or_else(|| cookie.to_string());
    (r.status, r.text(), set)
}

/// `count` for a session known to be at `value`: checks the next answer.
fn step(addr: SocketAddr, cookie: &str, value: &mut u64, why: &str) {
    let (status, text, _) = count(addr, cookie);
    *value += 1;
    assert_eq!((status, text), (200, value.to_string()), "{why}: {cookie}");
}

/// Loads `n` idle sessions into a replica's table (as a migration would),
/// so that copying takes a while.
fn ballast(addr: SocketAddr, n: usize) {
    let body = servers::state::migrate::idle_sessions(0, n);
    let (status, text) = servers::probe::post(
        addr,
        "/migrate/import",
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!((status, text), (200, format!("imported {n}")));
}

/// `serverlab migrate` against the dispatcher: its JSON report.
fn migrate(d: &Dispatch, method: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["migrate", "--json", "--dispatcher", &d.status.to_string()])
        .args(["--from", "1", "--to", "2", "--method", method])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sessions_held(addr: SocketAddr) -> u64 {
    let stats: serde_json::Value = serde_json::from_slice(&get(addr, "/stats").body).unwrap();
    stats["sessions"].as_u64().unwrap()
}

/// Each method moves replica 1's sessions to replica 2 (a process per
/// connection: its processes share the post-copy fetch settings) while the
/// load generator's counter flow runs through the dispatcher: not one
/// increment lost or repeated, the source left empty, the route switched.
#[test]
fn each_migration_method_moves_sessions_under_load_without_losing_an_increment() {
    for method in ["pre-copy", "stop-and-copy", "post-copy"] {
        let (replicas, d) = routed_cluster(
            ["event-loop", "process-per-request", "thread-pool"],
            "stateful",
        );
        ballast(replicas[0].addr, 2000);
        let load = Command::new(BIN)
            .args([
                "load", "--json", "--flow", "counter", "-c", "30", "-R", "900",
            ])
            // A long timeout: on a busy machine (tests run side by side)
            // a fork may be slow; a request held for good still fails it.
            .args(["--arrivals", "poisson", "-d", "3s", "--timeout", "5s"])
            .arg(format!("http://{}/counter", d.addr))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        let report = migrate(&d, method, &["--bandwidth", "200k"]);
        let out = load.wait_with_output().unwrap();
        let load: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["outcome"], "completed", "{method}: {report}");
        assert_eq!(report["lost"], 0, "{method}");
        let moved = report["sessions"].as_u64().unwrap();
        assert!(
            moved >= 2000,
            "{method}: the ballast and the clients' sessions: {report}"
        );
        assert!(
            report["pause_s"].as_f64().unwrap() < 1.0,
            "{method}: {report}"
        );
        if method == "pre-copy" {
            assert!(report["rounds"].as_array().unwrap().len() >= 2, "{report}");
        }
        if method == "post-copy" {
            let fetched =
                report["on_demand"].as_u64().unwrap() + report["background"].as_u64().unwrap();
            assert_eq!(fetched, moved, "{report}");
        }
        let errors = &load["errors"];
        assert_eq!(
            errors["state"], 0,
            "{method}: an increment lost or repeated: {load}"
        );
        for kind in [
            "connect",
            "read",
            "write",
            "timeout",
            "status_4xx",
            "status_5xx",
            "parse",
        ] {
            assert_eq!(errors[kind], 0, "{method}: {kind}: {errors}");
        }
        assert!(
            load["responses"].as_u64().unwrap() > 2000,
            "{method}: {load}"
        );
        // A session that started over would be a state error above (a 410,
        // or a value that is not the last plus one); sessions count only
        // those started in the measured window, so some may start before.
        let sessions = load["sessions"].as_u64().unwrap();
        assert!(
            sessions <= 30,
            "{method}: {sessions} sessions for 30 clients"
        );
        assert_eq!(
            sessions_held(replicas[0].addr),
            0,
            "{method}: the source let go"
        );
        let status = d.status();
        let first = &status["replicas"][0];
        assert_eq!(first["retired"], true, "{method}");
        assert_eq!(
            first["sessions_at"],
            replicas[1].addr.to_string(),
            "{method}"
        );
    }
}

/// A replica played by the test: it answers a new session's first
/// `POST /counter` only after `hold`, and the migration endpoints with
/// nothing to move; `events` says in which order it answered what.
fn slow_to_start_sessions(
    hold: Duration,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = events.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + length);
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (extra, body) = match target.split('?').next().unwrap() {
                        "/counter" => {
                            std::thread::sleep(hold);
                            log.lock().unwrap().push("session started".to_string());
                            ("Set-Cookie: sid=s1.r1\r\n", "1".to_string())
                        }
                        "/migrate/export" => {
                            log.lock().unwrap().push("export".to_string());
                            ("", "mark 1\n".to_string())
                        }
                        "/migrate/drop" => ("", "dropped 0".to_string()),
                        "/stats" => ("", r#"{"sessions":0}"#.to_string()),
                        _ => ("", "ok".to_string()),
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let close = head.to_ascii_lowercase().contains("connection: close");
                    if stream.write_all(answer.as_bytes()).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, events)
}

/// A request without a session that is with the source when a migration
/// starts may start a session there: the pause waits for its answer
/// before the source's sessions are copied, or that session would be left
/// behind.
#[test]
fn a_migration_waits_for_a_session_being_started_at_the_source() {
    let (source, events) = slow_to_start_sessions(Duration::from_millis(800));
    let dest = Server::start("event-loop", &["--route", "r2", "--state", "stateful"]);
    let args: Vec<String> = [
        "--mode",
        "http",
        "--policy",
        "affinity",
        "--check-interval",
        "0",
        "--replica",
        &format!("{source},route=r1"),
        "--replica",
        &format!("{},route=r2", dest.addr),
    ]
    .map(String::from)
    .to_vec();
    let d = Dispatch::start(&args);
    // New sessions are placed in turn: one of two lands on the source.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let addr = d.addr;
            std::thread::spawn(move || count(addr, "").0)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let report = migrate(&d, "stop-and-copy", &[]);
    assert_eq!(report["outcome"], "completed", "{report}");
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(
        *events.lock().unwrap(),
        ["session started", "export"],
        "the copy began before the session being started was"
    );
}

/// Migration needs the http mode, affinity and routes; the dispatcher says
/// which, and the replicas' endpoints are not reachable through it.
#[test]
fn migration_refuses_what_it_cannot_do() {
    let (_replicas, d) = routed_cluster(["event-loop", "event-loop", "event-loop"], "stateful");
    let refuse = |query: &str| {
        let (status, body) = servers::probe::post(
            d.status,
            &format!("/migrate?{query}"),
            b"",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(status, 400, "{query}: {body}");
        body
    };
    assert!(refuse("from=1&to=1&method=pre-copy").contains("same replica"));
    assert!(refuse("from=1&to=4&method=pre-copy").contains("1 to 3"));
    assert!(refuse("from=1&to=2&method=live").contains("pre-copy"));
    assert!(refuse("from=1&to=2").contains("method"));
    let through = get(d.addr, "/migrate/export?since=all");
    assert_eq!(through.status, 403);
    // Stateless replicas hold nothing to move.
    let lone = Server::start("event-loop", &["--state", "stateless"]);
    let (status, _) = servers::probe::post(
        lone.addr,
        "/migrate/export?since=all",
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 409);
    let lone = lone.addr.to_string();
    let splice = Dispatch::start(
        &["--mode", "splice", "--replica", &lone, "--replica", &lone].map(String::from),
    );
    let (status, body) = servers::probe::post(
        splice.status,
        "/migrate?from=1&to=2&method=post-copy",
        b"",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(status == 400 && body.contains("http mode"), "{body}");
}

/// The destination dies during pre-copy: the migration aborts, the source
/// keeps every session and serves on; and during post-copy: the route goes
/// back to the source, the sessions it had already given are reported
/// lost (their clients are told 410, never a stale value), the rest
/// serve on.
#[test]
fn a_destination_that_dies_aborts_the_migration() {
    for method in ["pre-copy", "post-copy"] {
        let (mut replicas, d) =
            routed_cluster(["event-loop", "thread-pool", "event-loop"], "stateful");
        // Sessions made at replica 1 (their ids end in .r1).
        let mut clients: Vec<(String, u64)> = (0..6)
            .map(|_| (count(replicas[0].addr, "").2, 1u64))
            .collect();
        for (cookie, value) in &mut clients {
            step(d.addr, cookie, value, "before");
        }
        ballast(replicas[0].addr, 3000);
        let migration = Command::new(BIN)
            .args(["migrate", "--json", "--dispatcher", &d.status.to_string()])
            .args([
                "--from",
                "1",
                "--to",
                "2",
                "--method",
                method,
                "--bandwidth",
                "40k",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let fetched = if method == "post-copy" {
            // Two clients are served by the destination before it dies.
            for (cookie, value) in &mut clients[..2] {
                step(d.addr, cookie, value, "fetched on demand");
            }
            2
        } else {
            0
        };
        let _ = replicas[1].child.kill();
        let _ = replicas[1].child.wait();
        let out = migration.wait_with_output().unwrap();
        assert!(
            !out.status.success(),
            "an aborted migration fails the command"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["outcome"], "aborted", "{method}: {report}");
        assert!(
            report["why"].as_str().unwrap().contains("destination"),
            "{report}"
        );
        let status = d.status();
        assert_eq!(
            status["replicas"][0]["retired"], false,
            "{method}: back in the rotation"
        );
        assert!(status["replicas"][0]["sessions_at"].is_null(), "{method}");
        for (n, (cookie, value)) in clients.iter_mut().enumerate() {
            if n < fetched {
                let (code, _, _) = count(d.addr, cookie);
                assert_eq!(code, 410, "{method}: a lost session is said to be lost");
            } else if method == "post-copy" {
                // Taken by the background copy (lost with the destination)
                // or not yet: 410 or the next value, never a stale one.
                let (code, text, _) = count(d.addr, cookie);
                *value += 1;
                assert!(
                    code == 410 || (code, text) == (200, value.to_string()),
                    "{code}"
                );
            } else {
                step(d.addr, cookie, value, "the source serves on");
            }
        }
        if method == "post-copy" {
            assert!(report["lost"].as_u64().unwrap() >= 2, "{report}");
        } else {
            assert_eq!(report["lost"], 0, "{report}");
            assert_eq!(sessions_held(replicas[0].addr), 3006, "every session kept");
        }
    }
}

/// The source dies during post-copy: sessions fetched already serve on at
/// the destination; the rest are lost, reported as such, and their
/// clients are told 410.
#[test]
fn a_source_that_dies_during_post_copy_loses_what_was_not_fetched() {
    let (mut replicas, d) = routed_cluster(["event-loop", "event-loop", "event-loop"], "stateful");
    let mut clients: Vec<(String, u64)> = (0..6)
        .map(|_| (count(replicas[0].addr, "").2, 1u64))
        .collect();
    ballast(replicas[0].addr, 3000);
    let migration = Command::new(BIN)
        .args(["migrate", "--json", "--dispatcher", &d.status.to_string()])
        .args([
            "--from",
            "1",
            "--to",
            "2",
            "--method",
            "post-copy",
            "--bandwidth",
            "40k",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    for (cookie, value) in &mut clients[..3] {
        step(d.addr, cookie, value, "fetched on demand");
    }
    let _ = replicas[0].child.kill();
    let _ = replicas[0].child.wait();
    let out = migration.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "completed", "{report}");
    let (lost, moved) = (
        report["lost"].as_u64().unwrap(),
        report["sessions"].as_u64().unwrap(),
    );
    assert_eq!(
        lost + moved,
        3006,
        "every session either moved or counted lost: {report}"
    );
    assert!(
        lost > 0 && report["why"].as_str().unwrap().contains("source failed"),
        "{report}"
    );
    for (cookie, value) in &mut clients[..3] {
        step(d.addr, cookie, value, "at the destination");
    }
    for (cookie, _) in &clients[3..] {
        let (code, _, _) = count(d.addr, cookie);
        // Fetched by the background copy before the source died, or lost.
        assert!(code == 200 || code == 410, "{code}");
    }
}

/// A replica whose only worker is held (a one-worker pool, prefork with
/// one process, an iterative server; an idle keep-alive connection open on
/// each) answers nothing on its address but still answers on its control
/// address (`serve --control`), and a migration through it moves its
/// sessions — by each method, one per architecture: the clients continue
/// through the dispatcher where they were, from the destination.
#[test]
fn a_replica_whose_workers_are_all_held_migrates_through_its_control_address() {
    use std::io::{Read, Write};
    for (arch, method) in [
        ("thread-pool", "post-copy"),
        ("prefork", "pre-copy"),
        ("iterative", "stop-and-copy"),
    ] {
        let controls = free_addrs(2);
        let source = Server::start(
            arch,
            &[
                "--workers",
                "1",
                "--route",
                "r1",
                "--state",
                "stateful",
                "--idle-timeout",
                "30s",
                "--control",
                &controls[0].to_string(),
            ],
        );
        let dest = Server::start(
            "event-loop",
            &[
                "--route",
                "r2",
                "--state",
                "stateful",
                "--control",
                &controls[1].to_string(),
            ],
        );
        let mut args: Vec<String> = ["--mode", "http", "--policy", "affinity"]
            .map(String::from)
            .to_vec();
        // No active checks: the held replica would fail them.
        args.extend(["--check-interval".to_string(), "0".to_string()]);
        for (s, (route, control)) in [&source, &dest]
            .iter()
            .zip([("r1", controls[0]), ("r2", controls[1])])
        {
            args.push("--replica".into());
            args.push(format!("{},route={route},control={control}", s.addr));
        }
        let d = Dispatch::start(&args);
        // Sessions made at the source, each on a connection of its own.
        let mut clients: Vec<(String, u64)> =
            (0..4).map(|_| (count(source.addr, "").2, 1u64)).collect();
        ballast(controls[0], 100);
        // Hold its only worker.
        let mut held = std::net::TcpStream::connect(source.addr).unwrap();
        held.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 256];
        assert!(held.read(&mut answer).unwrap() > 0, "{arch}");
        let blocked = servers::probe::get(source.addr, "/health", Duration::from_millis(300));
        assert!(
            blocked.is_err(),
            "{arch}: its worker should be held: {blocked:?}"
        );
        let (status, _) =
            servers::probe::get(controls[0], "/health", Duration::from_secs(2)).unwrap();
        assert_eq!(status, 200, "{arch}: the control address answers");
        let report = migrate(&d, method, &[]);
        assert_eq!(report["outcome"], "completed", "{arch} {method}: {report}");
        assert!(
            report["sessions"].as_u64().unwrap() >= 104,
            "{arch}: {report}"
        );
        for (cookie, value) in &mut clients {
            step(d.addr, cookie, value, &format!("{arch} {method}: after"));
        }
        assert_eq!(sessions_held(controls[0]), 0, "{arch}: the source let go");
        drop(held);
    }
}

/// A handed-off connection is the replica's, so the dispatcher cannot keep
/// a count of them: `maxconn` with handoff is refused at start, saying so.
#[test]
fn maxconn_in_the_handoff_mode_is_refused() {
    let out = Command::new(BIN)
        .args(["dispatch", "--listen", "127.0.0.1:0", "--mode", "handoff"])
        .args(["--replica", "127.0.0.1:9@/nowhere.sock,maxconn=2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("maxconn needs the http or splice mode"),
        "{err}"
    );
}
