//! Helpers shared by the integration tests: start `serverlab serve` on port
//! 0, and a minimal HTTP client that reads real bytes off the wire.

#![allow(dead_code)]

/// For a test compiled in because build.rs found it built by root: checks
/// that it still runs as root (build.rs probes once per build).
pub fn still_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "built by root (build.rs probes once) but run as uid {uid}: rebuild as this user (touch build.rs)"
    );
}

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `serverlab serve` child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub docroot: PathBuf,
    /// Dropped after `drop` has stopped the server.
    _docroot: TempDir,
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    /// Starts `arch` on 127.0.0.1:0 with a docroot holding `index.html`.
    pub fn start(arch: &str, extra: &[&str]) -> Server {
        Server::launch(arch, extra, None, None)
    }

    /// As [`Server::start`], with at most `nofile` open descriptors.
    pub fn start_with_nofile(arch: &str, extra: &[&str], nofile: u64) -> Server {
        Server::launch(arch, extra, Some(nofile), None)
    }

    /// As [`Server::start`], but the listening socket is made here and
    /// passed as a socket-activating launcher passes it: descriptor 3,
    /// `LISTEN_FDS=1`, `LISTEN_PID` the server's pid (a shell sets it and
    /// execs the server, keeping its pid); `--listen` names an address the
    /// server could not bind.
    pub fn start_activated(arch: &str, extra: &[&str]) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Server::launch(arch, extra, None, Some(listener))
    }

    fn launch(
        arch: &str,
        extra: &[&str],
        nofile: Option<u64>,
        activate: Option<std::net::TcpListener>,
    ) -> Server {
        let docroot = std::env::temp_dir().join(format!(
            "serverlab-test-{}-{}-{}",
            arch,
            std::process::id(),
            unique()
        ));
        // Removed on drop, also when the start fails below (a panic).
        let guard = TempDir(docroot.clone());
        std::fs::create_dir_all(&docroot).unwrap();
        std::fs::write(docroot.join("index.html"), "<h1>serverlab</h1>\n").unwrap();
        let mut command = match &activate {
            Some(_) => {
                let mut c = Command::new("/bin/sh");
                c.args([
                    "-c",
                    "export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http; exec \"$0\" \"$@\"",
                    env!("CARGO_BIN_EXE_serverlab"),
                ]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_serverlab")),
        };
        let inherited = activate.as_ref().map(|l| l.as_raw_fd());
        // With a socket passed, `--listen` must go unused: an address
        // this host cannot bind (TEST-NET-1) proves it.
        let listen = if inherited.is_some() {
            "192.0.2.1:80"
        } else {
            "127.0.0.1:0"
        };
        command
            .args(["serve", "--arch", arch, "--listen", listen, "--docroot"])
            .arg(&docroot)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // If the test binary dies without unwinding (a crash, a timeout kill),
        // Drop never runs: have the kernel kill the server with it. The
        // signal fires when the *thread* that spawned it ends, so a Server
        // must be used by the thread that started it.
        // SAFETY: prctl and setrlimit are async-signal-safe; nothing else
        // runs in pre_exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = inherited {
                    // Descriptor 3, open across exec (dup2 clears
                    // close-on-exec, except onto itself).
                    if fd == 3 {
                        if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) != 3 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(n) = nofile {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("start serverlab serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "listening on ADDR", perhaps followed by how it was obtained.
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{arch}: unexpected first line {line:?}"))
            .parse()
            .unwrap();
        drop(activate);
        Server {
            child,
            addr,
            docroot,
            _docroot: guard,
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns its status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() && self.stop().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal front end for TCP handoff: accepts on its own loopback
/// port, reads part of what the client sent (connection `n`: nothing, at
/// most 10 bytes, or one whole read, in turn), and hands the connection
/// with those bytes to the server's handoff socket, closing its own copy.
/// Stops when dropped.
pub struct HandoffFront {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HandoffFront {
    pub fn start(socket: &std::path::Path) -> HandoffFront {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let channel = servers::handoff::connect(socket).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut read = vec![0u8; [0, 10, 64 * 1024][n % 3]];
                n += 1;
                if !read.is_empty() {
                    let got = conn.read(&mut read).unwrap_or(0);
                    read.truncate(got);
                }
                servers::handoff::send(&channel, &conn, &read).expect("hand off");
            }
        });
        HandoffFront {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HandoffFront {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accepting thread.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A path for a test's Unix socket, unique in this process.
pub fn socket_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "serverlab-test-{tag}-{}-{}.sock",
        std::process::id(),
        unique()
    ))
}

/// The children of `parent` as (pid, state letter), from `/proc/*/stat`.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may vanish between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            found.push((pid, state));
        }
    }
    found
}

/// `pid` and every process below it.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]).into_iter().map(|(p, _)| p));
        i += 1;
    }
    all
}

/// The largest peak resident set (`VmHWM`, KiB) of any process in `pid`'s
/// tree: a forked server's connection is served by one of its children.
pub fn peak_rss_kib(pid: u32) -> u64 {
    process_tree(pid)
        .into_iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// CPU time (user + system, all threads) process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One response as read off the wire.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection with a read timeout, so no test can hang.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).unwrap();
    }

    /// Reads one response; `None` if the server closed first.
    pub fn read(&mut self) -> Option<Resp> {
        self.read_response(false)
    }

    /// Reads one response to a HEAD request (a head without a body).
    pub fn read_head(&mut self) -> Option<Resp> {
        self.read_response(true)
    }

    fn read_response(&mut self, head_only: bool) -> Option<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; if head_only { 0 } else { len }];
        self.reader.read_exact(&mut body).ok()?;
        Some(Resp {
            status,
            headers,
            body,
        })
    }

    /// Sends a request and reads its response.
    pub fn request(&mut self, raw: &[u8]) -> Resp {
        self.send(raw);
        self.read().expect("a response")
    }

    /// Whether the server has closed the connection (EOF within the timeout).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// GET `path` on a fresh `Connection: close` connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    Client::connect(addr)
        .request(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
}

/// Calls `$callback! { module => "name", ... }` with every architecture, so
/// that each per-architecture test file lists them in one place. The
/// conformance suite checks this list against `servers::arch::ALL`.
#[allow(unused_macros)]
macro_rules! every_arch {
    ($callback:ident) => {
        $callback! {
            iterative => "iterative",
            thread_per_request => "thread-per-request",
            thread_pool => "thread-pool",
            process_per_request => "process-per-request",
            prefork => "prefork",
            event_loop => "event-loop",
            reactor_per_core => "reactor-per-core",
            amped => "amped",
            tokio_hyper => "async",
        }
    };
}

/// A free loopback port for a server a test configures by port (the
/// super server, a dispatcher). Taken below the kernel's ephemeral range
/// (32768 and up by default), so that no client connection of a parallel
/// test can take it between this check and the server's bind, and never
/// handed out twice in one test process.
pub fn free_port() -> u16 {
    bench::runner::free_port().expect("a free port on 127.0.0.1")
}

/// Processes whose command line is exactly `argv`.
pub fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want = argv.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

/// A child process killed and reaped when dropped, even by a panic.
pub struct Stopped(pub Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
