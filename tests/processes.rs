//! Behaviour of the process-based architectures that the conformance suite
//! cannot see from the wire alone: no zombie is left behind, a killed
//! prefork child is replaced while service continues, shutdown reaps every
//! child, and in-flight requests finish on shutdown (checked for every
//! blocking architecture). Children are found by scanning `/proc`.

mod common;

use common::{children_of, get, still_root, wait_for, Client, Server};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn process_per_request_leaves_no_zombie() {
    let s = Server::start("process-per-request", &[]);
    let pid = s.child.id();
    for i in 0..200 {
        let r = get(s.addr, "/hello");
        assert_eq!(r.status, 200, "request {i}");
    }
    // Every child has exited by now or is about to: once the reaper has
    // collected them the server has no child at all, zombie or not.
    let clean = wait_for(Duration::from_secs(10), || children_of(pid).is_empty());
    assert!(clean, "children left behind: {:?}", children_of(pid));
    // And the server still serves (the check above saw a live server).
    assert_eq!(get(s.addr, "/hello").status, 200);
}

/// One `Connection: close` request with timeouts; `Err` on any failure.
fn try_hello(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    if answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"Hello, World!") {
        Ok(())
    } else {
        Err(format!("bad answer {:?}", String::from_utf8_lossy(&answer)))
    }
}

#[test]
fn prefork_replaces_a_killed_child_under_load() {
    let s = Server::start("prefork", &["--workers", "3"]);
    let pid = s.child.id();
    assert!(
        wait_for(Duration::from_secs(10), || children_of(pid).len() == 3),
        "expected 3 children, found {:?}",
        children_of(pid)
    );
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients, each bounded in requests and in time.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (ok, errors, stop, addr) = (ok.clone(), errors.clone(), stop.clone(), s.addr);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..5_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    match try_hello(addr) {
                        Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            errors.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    assert!(
        wait_for(Duration::from_secs(20), || ok.load(Ordering::SeqCst) >= 50),
        "no load before the kill"
    );
    let before: Vec<u32> = children_of(pid).iter().map(|c| c.0).collect();
    let victim = before[0];
    // SAFETY: killing a child of the server this test started.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    let ok_at_kill = ok.load(Ordering::SeqCst);

    let replaced = wait_for(Duration::from_secs(10), || {
        let now: Vec<u32> = children_of(pid).iter().map(|c| c.0).collect();
        now.len() == 3 && !now.contains(&victim)
    });
    // Service continues: plenty of answers after the kill.
    let served_after = wait_for(Duration::from_secs(20), || {
        ok.load(Ordering::SeqCst) >= ok_at_kill + 200
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, errors) = (ok.load(Ordering::SeqCst), errors.load(Ordering::SeqCst));
    eprintln!("prefork under kill -9: {ok} answered, {errors} errors");
    assert!(replaced, "child not replaced: {:?}", children_of(pid));
    assert!(served_after, "service did not continue: {ok} ok at most");
    // Only the killed child's connection can fail; leave a wide margin.
    assert!(errors <= 10, "{errors} errors");
    // The shared counters agree: three workers again.
    let stats = get(s.addr, "/stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
    assert_eq!(stats["workers"], 3, "{stats}");
}

/// Shutdown with idle keep-alive clients connected: every child stops and
/// is reaped, and the server exits cleanly.
fn shutdown_reaps_children(arch: &str) {
    let mut s = Server::start(arch, &["--workers", "3"]);
    let pid = s.child.id();
    let mut idle: Vec<Client> = (0..3).map(|_| Client::connect(s.addr)).collect();
    for c in &mut idle {
        assert_eq!(
            c.request(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n").status,
            200
        );
    }
    let kids: Vec<u32> = children_of(pid).iter().map(|c| c.0).collect();
    assert!(kids.len() >= 3, "{arch}: children {kids:?}");
    let status = s.stop().expect("stops within 15 s");
    assert!(status.success(), "{arch} exited with {status}");
    for kid in kids {
        assert!(
            !std::path::Path::new(&format!("/proc/{kid}")).exists(),
            "{arch}: child {kid} survived the server"
        );
    }
}

#[test]
fn process_per_request_shutdown_reaps_children() {
    shutdown_reaps_children("process-per-request");
}

#[test]
fn prefork_shutdown_reaps_children() {
    shutdown_reaps_children("prefork");
}

/// A request in progress when SIGTERM arrives is answered before exit.
fn in_flight_request_finishes(arch: &str) {
    let mut s = Server::start(arch, &[]);
    let mut c = Client::connect(s.addr);
    c.send(b"GET /work?io_ms=1000&bytes=7 HTTP/1.1\r\nHost: t\r\n\r\n");
    // Make sure the server has the request before stopping it: /stats
    // counts the connection once it is being served.
    assert!(wait_for(Duration::from_secs(10), || {
        let r = get(s.addr, "/stats");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["connections_open"].as_i64().unwrap_or(0) >= 2
    }));
    // SAFETY: signalling the server this test started.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let r = c.read().expect("the in-flight request is answered");
    assert_eq!((r.status, r.body.len()), (200, 7), "{arch}");
    assert_eq!(r.header("connection"), Some("close"), "{arch}");
    // Not `stop()`: a second SIGTERM means "exit now" (status 130).
    let mut status = None;
    wait_for(Duration::from_secs(15), || {
        status = s.child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.expect("exits within 15 s of SIGTERM");
    assert!(status.success(), "{arch} exited with {status}");
}

#[test]
fn in_flight_request_finishes_thread_per_request() {
    in_flight_request_finishes("thread-per-request");
}

#[test]
fn in_flight_request_finishes_thread_pool() {
    in_flight_request_finishes("thread-pool");
}

#[test]
fn in_flight_request_finishes_process_per_request() {
    in_flight_request_finishes("process-per-request");
}

#[test]
fn in_flight_request_finishes_prefork() {
    in_flight_request_finishes("prefork");
}

/// A pids cgroup (v1 or v2) holding the server, removed on drop. Declare
/// it before the `Server`, so the server is stopped first.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    /// A fresh pids cgroup. The tests that use one are ignored where
    /// build.rs found no root or no pids controller; here, failing to make
    /// one is a failure that says why.
    fn new(name: &str) -> PidsCgroup {
        still_root();
        let v1 = std::path::Path::new("/sys/fs/cgroup/pids");
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let parent = if v1.join("pids.max").exists() || v1.join("cgroup.procs").exists() {
            v1
        } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
        {
            v2
        } else {
            panic!("the pids cgroup controller build.rs found is gone");
        };
        let dir = parent.join(format!("serverlab-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        PidsCgroup(dir)
    }

    /// Caps the cgroup at `max` tasks (threads count) and moves `pid` in.
    fn confine(&self, pid: u32, max: usize) {
        std::fs::write(self.0.join("pids.max"), max.to_string()).unwrap();
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // The server has exited by now; its tasks may take a moment to leave.
        wait_for(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.0).is_ok()
        });
    }
}

/// The number of threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Under a pids limit that leaves room for one more task, concurrent slow
/// requests get either their answer or a 503; none is dropped silently,
/// and the server keeps serving afterwards.
fn spawn_failure_answers_503(arch: &str) {
    let cgroup = PidsCgroup::new(arch);
    let mut s = Server::start(arch, &[]);
    let pid = s.child.id();
    // Once a request is answered every helper thread of the server has
    // started; once its child (if any) is gone, the task count is stable.
    assert_eq!(get(s.addr, "/hello").status, 200);
    assert!(wait_for(Duration::from_secs(10), || children_of(pid).is_empty()));
    cgroup.confine(pid, threads_of(pid) + 1);
    let addr = s.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.request(
                    b"GET /work?io_ms=1500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                r.status
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    eprintln!("{arch} under a pids limit: {statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "{arch}: no 503 {statuses:?}");
    assert!(
        statuses.contains(&200),
        "{arch}: nothing served {statuses:?}"
    );
    let stats: serde_json::Value = serde_json::from_slice(&get(addr, "/stats").body).unwrap();
    assert!(
        stats["spawn_failures"].as_u64() >= Some(1),
        "{arch}: {stats}"
    );
    // Capacity is back once the worker has finished.
    assert!(wait_for(Duration::from_secs(10), || get(addr, "/hello")
        .status
        == 200));
    let status = s.stop().expect("stops within 15 s");
    assert!(status.success(), "{arch} exited with {status}");
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_pids_cgroup)),
    ignore = "needs root and a pids cgroup controller"
)]
fn thread_per_request_answers_503_when_no_thread_can_start() {
    spawn_failure_answers_503("thread-per-request");
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_pids_cgroup)),
    ignore = "needs root and a pids cgroup controller"
)]
fn process_per_request_answers_503_when_fork_fails() {
    spawn_failure_answers_503("process-per-request");
}

/// A prefork child that cannot be replaced at once (the pids limit is
/// reached) is replaced as soon as the limit allows it; meanwhile the
/// remaining children keep serving.
#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_pids_cgroup)),
    ignore = "needs root and a pids cgroup controller"
)]
fn prefork_retries_a_failed_replacement() {
    let cgroup = PidsCgroup::new("prefork-retry");
    let s = Server::start("prefork", &["--workers", "3"]);
    let pid = s.child.id();
    assert!(wait_for(Duration::from_secs(10), || children_of(pid).len() == 3));
    // No room for any new task: the replacement fork fails with EAGAIN.
    cgroup.confine(pid, 1);
    let victim = children_of(pid)[0].0;
    // SAFETY: killing a child of the server this test started.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    assert!(wait_for(Duration::from_secs(10), || children_of(pid).len() == 2));
    assert_eq!(get(s.addr, "/hello").status, 200);
    assert_eq!(children_of(pid).len(), 2, "replaced despite the limit?");
    // Room again: the parent's retry brings the count back to 3.
    std::fs::write(cgroup.0.join("pids.max"), "max").unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || children_of(pid).len() == 3),
        "not replaced: {:?}",
        children_of(pid)
    );
    drop(s);
}

/// amped under a pids limit runs with the helpers it could start, and says
/// so: `/stats` counts the failed starts (it used to show only in the pids
/// accounting, as a throughput a quarter of the usual).
#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_pids_cgroup)),
    ignore = "needs root and a pids cgroup controller"
)]
fn amped_short_of_helpers_says_so() {
    let cgroup = PidsCgroup::new("amped");
    let s = Server::start("amped", &["--helpers", "8"]);
    let pid = s.child.id();
    assert_eq!(get(s.addr, "/hello").status, 200);
    // Room for two helpers.
    cgroup.confine(pid, threads_of(pid) + 2);
    let addr = s.addr;
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                Client::connect(addr)
                    .request(
                        b"GET /work?io_ms=300 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    )
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200, "every request is still answered");
    }
    let stats: serde_json::Value = serde_json::from_slice(&get(addr, "/stats").body).unwrap();
    assert!(stats["spawn_failures"].as_u64() >= Some(1), "{stats}");
    assert_eq!(stats["workers"], 3, "the loop and two helpers: {stats}");
    drop(s);
}
