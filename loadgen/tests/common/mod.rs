//! A tiny purpose-built HTTP server for the engine tests, where behaviour
//! must be controlled exactly (a one-time stall, a request that never gets
//! an answer, a deliberately broken counter), plus a real serverlab
//! architecture started in-process.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the server does with one request.
pub enum Reply {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Hold every connection's requests for this long, then send.
    StallThenSend(Duration, Vec<u8>),
    /// Wait this long (this connection only), then send.
    DelayThenSend(Duration, Vec<u8>),
    /// Never answer (until the client goes away).
    Hang,
}

/// Decides the reply to a request head, given its number (0-based, over
/// the whole server).
pub type Behaviour = dyn Fn(&str, u64) -> Reply + Send + Sync;

/// A thread-per-connection test server; stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(behaviour: impl Fn(&str, u64) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        // Every request passes through this lock, so a stall holds them all,
        // like a server whose only thread is paused (GC, swap, a lock).
        let lock = Arc::new(Mutex::new(()));
        let (a, r, s) = (accepts.clone(), requests.clone(), stop.clone());
        let accept_thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (r, s, b, l) = (r.clone(), s.clone(), behaviour.clone(), lock.clone());
                std::thread::spawn(move || serve(stream, &r, &s, &*b, &l));
            }
        });
        TestServer {
            addr,
            accepts,
            requests,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    requests: &AtomicU64,
    stop: &AtomicBool,
    behaviour: &Behaviour,
    lock: &Mutex<()>,
) {
    // Short read timeouts so the thread notices the stop flag.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let reply = {
                let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
                let n = requests.fetch_add(1, Ordering::SeqCst);
                match behaviour(&head, n) {
                    Reply::StallThenSend(d, bytes) => {
                        std::thread::sleep(d);
                        Some(bytes)
                    }
                    Reply::Send(bytes) => Some(bytes),
                    Reply::DelayThenSend(d, bytes) => {
                        drop(_g);
                        std::thread::sleep(d);
                        Some(bytes)
                    }
                    Reply::Hang => None,
                }
            };
            match reply {
                Some(bytes) => {
                    if stream.write_all(&bytes).is_err() {
                        return;
                    }
                    if head.to_ascii_lowercase().contains("connection: close") {
                        return;
                    }
                }
                None => {
                    // Wait for the client to give up, then end.
                    while !stop.load(Ordering::SeqCst) {
                        match stream.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(_) => {}
                            Err(e) if is_timeout(&e) => {}
                            Err(_) => return,
                        }
                    }
                    return;
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn find(buf: &[u8], needle: &[u8]) -> Option<usize> {
    buf.windows(needle.len()).position(|w| w == needle)
}

/// A 200 response with `body`.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A header's value in a request head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A real serverlab architecture, in-process on port 0
/// ([`servers::start`]); stopped on drop.
pub struct ArchServer {
    pub addr: SocketAddr,
    _running: servers::Running,
}

impl ArchServer {
    pub fn start(arch: &str) -> ArchServer {
        let arch = servers::arch::find(arch).unwrap();
        let listener = servers::net::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let config = servers::Config {
            arch: arch.name.to_string(),
            ..Default::default()
        };
        let options = servers::Options {
            workers: 2,
            ..Default::default()
        };
        let handler = Arc::new(servers::Handler::new(config, &options).unwrap());
        let shutdown = servers::Shutdown::new().unwrap();
        let running = servers::start(arch, listener.into(), handler, options, shutdown).unwrap();
        ArchServer {
            addr,
            _running: running,
        }
    }
}

/// A watchdog: sets `stop` after `after`, so no test can run away.
pub fn watchdog(stop: Arc<AtomicBool>, after: Duration) {
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + after;
        while std::time::Instant::now() < deadline {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
        stop.store(true, Ordering::SeqCst);
    });
}
