//! The super server as a user runs it: `serverlab superserver FILE` with
//! nowait, wait and built-in services on loopback ports, its limits, its
//! status endpoint, SIGHUP and a clean stop; and the directory.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_serverlab");

/// A running `serverlab superserver`, stopped on drop.
struct Super {
    child: Child,
    file: PathBuf,
    status: SocketAddr,
    log: PathBuf,
}

impl Super {
    /// Writes `services` (TOML, `{status}` replaced) and starts it.
    fn start(services: &str) -> Super {
        let status: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let dir = std::env::temp_dir();
        let tag = format!("{}-{}", std::process::id(), common::free_port());
        let file = dir.join(format!("serverlab-test-super-{tag}.toml"));
        let log = dir.join(format!("serverlab-test-super-{tag}.log"));
        std::fs::write(&file, format!("status = \"{status}\"\n{services}")).unwrap();
        let mut child = Command::new(BIN)
            .args(["superserver"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Made first, so that a failed start below still removes the files.
        let s = Super {
            child,
            file,
            status,
            log,
        };
        // It prints its services once every port is bound.
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        assert!(first.starts_with("service "), "{first:?}: {}", s.log());
        s
    }

    fn status(&self) -> serde_json::Value {
        let r = common::get(self.status, "/status");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    }

    fn service(&self, name: &str) -> serde_json::Value {
        self.status()["services"][name].clone()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then its exit status (bounded wait).
    fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the super server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Super {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.stop();
        }
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Sends `input`, half-closes, reads everything back.
fn exchange(addr: SocketAddr, input: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(input).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// The processes whose parent is `pid` that are zombies.
fn zombies_of(pid: u32) -> usize {
    common::children_of(pid)
        .iter()
        .filter(|(_, state)| *state == 'Z')
        .count()
}

/// Three kinds of service from one file: nowait (a process per
/// connection, the connection on stdin/stdout, REMOTE_ADDR set), wait (a
/// serverlab architecture given the listener; taken back when it exits),
/// built-ins (echo, daytime, hello without a process); counted in the
/// status; stopped with nothing left behind.
#[test]
fn nowait_wait_and_builtin_services_from_one_file() {
    let (p_sh, p_http, p_wait, p_echo, p_day, p_hello) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let mut s = Super::start(&format!(
        r#"
[[service]]
name = "shell"
listen = ["127.0.0.1:{p_sh}"]
command = ["sh", "-c", "read line; echo \"got $line from $REMOTE_ADDR\""]

[[service]]
name = "http"
listen = ["127.0.0.1:{p_http}"]
command = ["{BIN}", "serve", "--inetd"]

[[service]]
name = "pool"
listen = ["127.0.0.1:{p_wait}"]
mode = "wait"
command = ["{BIN}", "serve", "--arch", "thread-pool", "--workers", "2"]

[[service]]
name = "echo"
listen = ["127.0.0.1:{p_echo}"]
builtin = "echo"

[[service]]
name = "daytime"
listen = ["127.0.0.1:{p_day}"]
builtin = "daytime"

[[service]]
name = "hello"
listen = ["127.0.0.1:{p_hello}"]
builtin = "hello"
"#
    ));
    assert_eq!(exchange(addr(p_sh), b"ping\n"), "got ping from 127.0.0.1\n");
    for _ in 0..3 {
        assert_eq!(common::get(addr(p_http), "/hello").text(), "Hello, World!");
    }
    assert_eq!(common::get(addr(p_wait), "/hello").text(), "Hello, World!");
    assert_eq!(common::get(addr(p_wait), "/work?bytes=5").body.len(), 5);
    assert_eq!(exchange(addr(p_echo), b"echo me"), "echo me");
    assert!(exchange(addr(p_day), b"").ends_with(" GMT\r\n"));
    assert_eq!(common::get(addr(p_hello), "/hello").text(), "Hello, World!");

    assert!(common::wait_for(Duration::from_secs(5), || s
        .service("shell")["running"]
        == 0));
    let shell = s.service("shell");
    assert_eq!(
        (shell["accepted"].as_u64(), shell["started"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(shell["exits"]["0"], 1, "{shell}");
    let http = s.service("http");
    assert_eq!(http["started"], 3, "{http}");
    let pool = s.service("pool");
    assert_eq!(
        (pool["mode"].as_str(), pool["started"].as_u64()),
        (Some("wait"), Some(1)),
        "{pool}"
    );
    let state = pool["state"].as_str().unwrap().to_string();
    let pid: i32 = state
        .strip_prefix("handed to pid ")
        .expect(&state)
        .parse()
        .unwrap();
    assert_eq!(s.service("echo")["started"], 1);

    // The wait server exits: the super server watches the port again and
    // starts a new server for the next client.
    // SAFETY: signalling a process we were told about.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(common::wait_for(Duration::from_secs(10), || s
        .service("pool")["state"]
        == "listening"));
    assert_eq!(common::get(addr(p_wait), "/hello").status, 200);
    assert_eq!(s.service("pool")["started"], 2);

    let super_pid = s.child.id();
    let status = s.stop();
    assert!(status.success(), "{status}: {}", s.log());
    assert!(common::children_of(super_pid).is_empty());
    for p in [p_sh, p_wait, p_echo] {
        assert!(TcpStream::connect(addr(p)).is_err(), "port {p} closed");
    }
}

/// instances, per_source, only_from and cps are each enforced, logged and
/// counted; a cps switch-off ends by itself.
#[test]
fn every_limit_is_enforced_and_counted() {
    let (p_inst, p_src, p_only, p_cps) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let s = Super::start(&format!(
        r#"
[[service]]
name = "slow"
listen = ["127.0.0.1:{p_inst}"]
command = ["sh", "-c", "read line; echo done"]
instances = 2

[[service]]
name = "per-source"
listen = ["127.0.0.1:{p_src}"]
command = ["sh", "-c", "read line; echo done"]
per_source = 1

[[service]]
name = "elsewhere"
listen = ["127.0.0.1:{p_only}"]
builtin = "echo"
only_from = ["10.0.0.0/8"]

[[service]]
name = "burst"
listen = ["127.0.0.1:{p_cps}"]
builtin = "daytime"
cps = [5, 1]
"#
    ));
    // instances: two held open; a third connects (backlog) but is not
    // served until one of them ends.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr(p_inst)).unwrap())
        .collect();
    assert!(common::wait_for(Duration::from_secs(5), || s
        .service("slow")["running"]
        == 2));
    let mut third = TcpStream::connect(addr(p_inst)).unwrap();
    third.write_all(b"x\n").unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        third.read(&mut buf).is_err(),
        "the third waits while two run"
    );
    let slow = s.service("slow");
    assert_eq!(
        (
            slow["instance_limit_waits"].as_u64(),
            slow["state"].as_str()
        ),
        (Some(1), Some("at its instances limit")),
        "{slow}"
    );
    held[0].write_all(b"x\n").unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"done\n", "served once the first ended");
    held.clear();

    // per_source: a second connection from the same address is closed.
    let mut first = TcpStream::connect(addr(p_src)).unwrap();
    assert!(common::wait_for(Duration::from_secs(5), || s
        .service("per-source")["running"]
        == 1));
    assert_eq!(exchange(addr(p_src), b"y\n"), "", "closed unanswered");
    first.write_all(b"z\n").unwrap();
    let mut out = String::new();
    first.read_to_string(&mut out).unwrap();
    assert_eq!(out, "done\n");
    assert_eq!(s.service("per-source")["refused_per_source"], 1);

    // only_from: loopback is not in 10.0.0.0/8.
    assert_eq!(exchange(addr(p_only), b"hi"), "");
    assert_eq!(s.service("elsewhere")["refused_only_from"], 1);

    // cps: the sixth connection in a second switches the service off for
    // a second; then it serves again.
    let answers: Vec<String> = (0..6).map(|_| exchange(addr(p_cps), b"")).collect();
    assert!(
        answers[..5].iter().all(|a| a.ends_with("GMT\r\n")),
        "{answers:?}"
    );
    let burst = s.service("burst");
    assert_eq!(
        (
            burst["refused_cps"].as_u64(),
            burst["cps_switch_offs"].as_u64()
        ),
        (Some(1), Some(1)),
        "{burst}"
    );
    assert!(
        burst["state"].as_str().unwrap().starts_with("off (cps)"),
        "{burst}"
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert!(exchange(addr(p_cps), b"").ends_with("GMT\r\n"), "back on");
    // A built-in that is done at once (daytime) is counted out as well as in.
    assert_eq!(s.service("burst")["running"], 0);
    let log = s.log();
    for says in ["only_from", "per_source", "(cps)", "instances running"] {
        assert!(log.contains(says), "no log line about {says}: {log}");
    }
}

/// A nowait service that fails at once is counted by exit status; a wait
/// server that fails at once is restarted after a pause, not in a loop;
/// no zombie is left after 1,000 connections; SIGHUP reads the file again
/// and a refused file keeps the old services.
#[test]
fn failures_zombies_and_reloads() {
    let (p_crash, p_wait, p_many) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let mut s = Super::start(&format!(
        r#"
[[service]]
name = "crash"
listen = ["127.0.0.1:{p_crash}"]
command = ["sh", "-c", "exit 3"]

[[service]]
name = "broken"
listen = ["127.0.0.1:{p_wait}"]
mode = "wait"
command = ["false"]

[[service]]
name = "many"
listen = ["127.0.0.1:{p_many}"]
command = ["true"]
"#
    ));
    for _ in 0..3 {
        exchange(addr(p_crash), b"");
    }
    assert!(common::wait_for(Duration::from_secs(5), || s
        .service("crash")["exits"]["3"]
        == 3));

    let _waiting = TcpStream::connect(addr(p_wait)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let broken = s.service("broken");
    let started = broken["started"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&started),
        "restarted after a pause, not in a loop: {broken}"
    );
    assert!(s.log().contains("exited at once"), "{}", s.log());

    for _ in 0..1000 {
        let _ = exchange(addr(p_many), b"");
    }
    assert!(common::wait_for(Duration::from_secs(10), || s
        .service("many")["running"]
        == 0));
    assert_eq!(s.service("many")["started"], 1000);
    assert_eq!(zombies_of(s.child.id()), 0, "no zombie");

    // A refused file: the old services keep running.
    std::fs::write(&s.file, "[[service]]\nname = \"x\"\n").unwrap();
    s.signal(libc::SIGHUP);
    assert!(common::wait_for(Duration::from_secs(5), || s
        .log()
        .contains("keeping the running configuration")));
    exchange(addr(p_crash), b"");
    assert!(common::wait_for(Duration::from_secs(5), || s
        .service("crash")["exits"]["3"]
        == 4));
    // A good one: a new service appears, the crash one goes.
    let p_new = common::free_port();
    std::fs::write(
        &s.file,
        format!("status = \"{}\"\n[[service]]\nname = \"new\"\nlisten = [\"127.0.0.1:{p_new}\"]\nbuiltin = \"echo\"\n", s.status),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    assert!(common::wait_for(Duration::from_secs(5), || {
        TcpStream::connect(addr(p_new)).is_ok()
    }));
    assert_eq!(exchange(addr(p_new), b"again"), "again");
    assert!(
        TcpStream::connect(addr(p_crash)).is_err(),
        "the old port is closed"
    );
    assert!(s.stop().success());
}

/// A file with a mistake is refused before anything starts, naming the
/// line and the field: a command that does not exist, a port in use.
#[test]
fn bad_files_are_refused_with_line_and_field() {
    let dir = std::env::temp_dir();
    let file = dir.join(format!(
        "serverlab-test-super-bad-{}.toml",
        std::process::id()
    ));
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let cases = [
        ("[[service]]\nname = \"a\"\nlisten = [\"127.0.0.1:9\"]\ncommand = [\"no-such-program\"]\n", "line 4"),
        (&*format!("[[service]]\nname = \"a\"\nlisten = [\"{}\"]\nbuiltin = \"echo\"\n", busy.local_addr().unwrap()), "cannot listen"),
    ];
    for (text, says) in cases {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BIN)
            .arg("superserver")
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).replace(":4:", " line 4");
        assert!(!out.status.success() && err.contains(says), "{says}: {err}");
    }
    std::fs::remove_file(&file).unwrap();
}

/// A fork that fails (the pids limit of the container the super server
/// runs in) is counted and its connection closed; the super server lives
/// on and serves again once processes end.
#[test]
#[cfg_attr(
    not(serverlab_pids_cgroup),
    ignore = "needs root and the pids cgroup controller"
)]
fn a_failed_fork_is_counted_and_survived() {
    common::still_root();
    let (p_sleep, status_port) = (common::free_port(), common::free_port());
    let dir = std::env::temp_dir();
    let file = dir.join(format!(
        "serverlab-test-super-pids-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &file,
        format!("status = \"127.0.0.1:{status_port}\"\n[[service]]\nname = \"sleepy\"\nlisten = [\"127.0.0.1:{p_sleep}\"]\ncommand = [\"sleep\", \"3\"]\n"),
    )
    .unwrap();
    // The sandbox's reaper and the super server take 2 of the 6 tasks.
    let mut child = common::Stopped(
        Command::new(BIN)
            .args(["sandbox", "--pids", "6", "--", BIN, "superserver"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(addr(p_sleep)).unwrap())
        .collect();
    let status: SocketAddr = addr(status_port);
    let failures = || -> u64 {
        let r = common::get(status, "/status");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["services"]["sleepy"]["start_failures"].as_u64().unwrap()
    };
    assert!(common::wait_for(Duration::from_secs(5), || failures() >= 1));
    drop(held);
    std::thread::sleep(Duration::from_secs(4));
    let c = TcpStream::connect(addr(p_sleep)).unwrap();
    drop(c);
    assert!(
        common::get(status, "/status").status == 200,
        "still serving"
    );
    // SAFETY: signalling our own child (the sandbox passes it on).
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let _ = child.0.wait();
    std::fs::remove_file(&file).unwrap();
}

/// The directory: a server registers itself (`serve --register`), the
/// load generator resolves the name through it, and the name is gone once
/// the server stops.
#[test]
fn a_server_registers_and_the_load_generator_finds_it() {
    let dir_port = common::free_port();
    let mut directory = common::Stopped(
        Command::new(BIN)
            .args(["directory", "--listen", &format!("127.0.0.1:{dir_port}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(directory.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("directory on"), "{line}");
    let at = format!("127.0.0.1:{dir_port}");
    let mut server = common::Server::start("event-loop", &["--register", &format!("web@{at}")]);
    let looked_up = Command::new(BIN)
        .args(["directory", "--at", &at, "--lookup", "web"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&looked_up.stdout).trim(),
        server.addr.to_string()
    );
    let load = Command::new(BIN)
        .args([
            "load",
            "http://web/hello",
            "--directory",
            &at,
            "-n",
            "200",
            "-c",
            "2",
            "-t",
            "1",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&load.stdout);
    assert!(
        load.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert!(String::from_utf8_lossy(&load.stderr).contains("web is 127.0.0.1:"));
    server.stop();
    let gone = Command::new(BIN)
        .args(["directory", "--at", &at, "--lookup", "web"])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));
}

/// Every architecture runs as a wait service: the listener the super
/// server hands over is served by any `--arch`.
#[test]
fn every_architecture_serves_a_handed_listener() {
    let archs = servers::arch::names();
    let ports: Vec<u16> = archs.iter().map(|_| common::free_port()).collect();
    let mut file = String::new();
    for (arch, p) in archs.iter().zip(&ports) {
        file += &format!(
            "[[service]]\nname = \"{arch}\"\nlisten = [\"127.0.0.1:{p}\"]\nmode = \"wait\"\ncommand = [\"{BIN}\", \"serve\", \"--arch\", \"{arch}\", \"--workers\", \"2\"]\n\n"
        );
    }
    let mut s = Super::start(&file);
    for (arch, p) in archs.iter().zip(&ports) {
        let r = common::get(addr(*p), "/hello");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello, World!"),
            "{arch}"
        );
        let stats = common::get(addr(*p), "/stats");
        let v: serde_json::Value = serde_json::from_slice(&stats.body).unwrap();
        assert_eq!(v["arch"], *arch);
    }
    assert!(s.stop().success(), "{}", s.log());
}

/// A wait service with two addresses hands both listening sockets to one
/// server (`LISTEN_FDS=2`), which serves each; started once, whichever
/// address a client comes to first.
#[test]
fn a_wait_service_hands_every_listener_to_one_server() {
    let (p1, p2) = (common::free_port(), common::free_port());
    let mut s = Super::start(&format!(
        "[[service]]\nname = \"pool\"\nlisten = [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]\nmode = \"wait\"\ncommand = [\"{BIN}\", \"serve\", \"--arch\", \"thread-pool\", \"--workers\", \"2\"]\n"
    ));
    for p in [p2, p1, p2] {
        assert_eq!(
            common::get(addr(p), "/hello").text(),
            "Hello, World!",
            "{p}"
        );
    }
    let pool = s.service("pool");
    assert_eq!(pool["started"], 1, "one server for both: {pool}");
    assert!(s.stop().success(), "{}", s.log());
}

/// A super server with `directory` registers each service, and the names
/// resolve to the services' addresses.
#[test]
fn the_super_server_registers_its_services() {
    let dir_port = common::free_port();
    let mut directory = common::Stopped(
        Command::new(BIN)
            .args(["directory", "--listen", &format!("127.0.0.1:{dir_port}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(directory.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let p = common::free_port();
    let s = Super::start(&format!(
        "directory = \"127.0.0.1:{dir_port}\"\n[[service]]\nname = \"greeter\"\nlisten = [\"127.0.0.1:{p}\"]\nbuiltin = \"hello\"\n"
    ));
    let at: SocketAddr = addr(dir_port);
    assert!(common::wait_for(Duration::from_secs(5), || {
        superserver::directory::lookup(at, "greeter").ok() == Some(addr(p))
    }));
    drop(s);
}
