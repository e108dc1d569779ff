//! Background groups: clients that run beside the measured ones for a
//! whole run, holding or loading the server, reported only by their counts
//! (see [`crate::suite::Background`]).
//!
//! Idle and slow clients are one thread of non-blocking sockets that wakes
//! every few milliseconds: they send almost nothing, so a loop over them is
//! cheap even at thousands. A load group is a second load generator.

use crate::suite::Background;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one group did in the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GroupCounts {
    /// The group as the suite gave it ("8 idle").
    pub group: String,
    /// Connections made (replacements included).
    pub connected: u64,
    /// Connections that could not be made (refused, or no answer in 2 s).
    pub failed_connects: u64,
    /// Connections the server closed or answered with an error, each then
    /// replaced by a new one (idle and slow groups).
    pub cut_off: u64,
    /// Of this group's connections, how many were open at the end.
    pub open_at_end: u64,
    /// Responses received (idle: answers to the first request; load: all).
    pub responses: u64,
    /// Load groups: failed requests.
    pub errors: u64,
    /// Load groups: responses per second over the group's life.
    pub throughput_rps: Option<f64>,
}

impl GroupCounts {
    /// One line for reports: "8 idle: 8 open at the end, 4 answered, 0 cut off".
    pub fn describe(&self) -> String {
        let mut s = format!("{}: ", self.group);
        match self.throughput_rps {
            Some(rps) => s.push_str(&format!(
                "{} responses ({rps:.0} req/s), {} errors",
                self.responses, self.errors
            )),
            None => s.push_str(&format!(
                "{} open at the end, {} answered, {} cut off",
                self.open_at_end, self.responses, self.cut_off
            )),
        }
        if self.failed_connects > 0 {
            s.push_str(&format!(", {} connects failed", self.failed_connects));
        }
        s
    }
}

/// The groups of one run, running until [`Running::stop`].
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<GroupCounts>>,
}

/// How long a background connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle and slow clients look at their sockets.
const TICK: Duration = Duration::from_millis(20);

/// Starts every group against `addr`. Idle and slow clients are connected
/// (and idle ones have sent their request) before this returns, so the
/// measurement that follows sees them in place.
pub fn start(groups: &[Background], addr: SocketAddr, threads: usize) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for g in groups {
        let stop = stop.clone();
        let g = g.clone();
        match g {
            Background::Idle { connections } => {
                let mut clients = Clients::new(addr, false, g.describe());
                clients.fill(connections);
                handles.push(std::thread::spawn(move || {
                    clients.run(connections, None, &stop)
                }));
            }
            Background::Slow {
                connections,
                interval,
            } => {
                let mut clients = Clients::new(addr, true, g.describe());
                clients.fill(connections);
                handles.push(std::thread::spawn(move || {
                    clients.run(connections, Some(interval), &stop)
                }));
            }
            Background::Load {
                connections,
                ref path,
                rate,
            } => {
                let cfg = loadgen::LoadConfig {
                    url: format!("http://{addr}{path}"),
                    connections: connections as usize,
                    threads: threads.clamp(1, connections.max(1) as usize),
                    // Bounded by `stop`; the hour is only a backstop.
                    duration: Duration::from_secs(3600),
                    warmup: Duration::ZERO,
                    rate,
                    ..Default::default()
                };
                let group = g.describe();
                handles.push(std::thread::spawn(move || {
                    let mut counts = GroupCounts {
                        group,
                        ..GroupCounts::default()
                    };
                    match loadgen::run(&cfg, &stop) {
                        Ok(r) => {
                            counts.connected = r.connects;
                            counts.responses = r.statuses.s2xx;
                            counts.errors = r.errors.requests();
                            counts.throughput_rps =
                                Some(r.statuses.s2xx as f64 / r.duration_s.max(1e-9));
                        }
                        Err(e) => {
                            tracing::warn!("background group {}: {e}", counts.group);
                            counts.failed_connects = connections as u64;
                        }
                    }
                    counts
                }));
            }
        }
    }
    Running {
        stop,
        threads: handles,
    }
}

impl Running {
    /// Stops every group and returns what each did, in the suite's order.
    pub fn stop(self) -> Vec<GroupCounts> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| GroupCounts {
                    group: "a background group panicked".into(),
                    ..GroupCounts::default()
                })
            })
            .collect()
    }
}

/// One idle or slow connection.
struct Client {
    stream: TcpStream,
    /// An answer (or its first bytes) arrived.
    answered: bool,
    /// Slow clients: when the next header line goes out.
    next_line: Instant,
}

/// A group of idle or slow clients, kept at its size.
struct Clients {
    addr: SocketAddr,
    slow: bool,
    conns: Vec<Client>,
    counts: GroupCounts,
}

impl Clients {
    fn new(addr: SocketAddr, slow: bool, group: String) -> Clients {
        Clients {
            addr,
            slow,
            conns: Vec::new(),
            counts: GroupCounts {
                group,
                ..GroupCounts::default()
            },
        }
    }

    /// Connects until there are `n` clients; a connect that fails is
    /// counted and tried again on a later tick.
    fn fill(&mut self, n: u32) {
        while self.conns.len() < n as usize {
            match self.connect() {
                Some(c) => self.conns.push(c),
                None => return,
            }
        }
    }

    fn connect(&mut self) -> Option<Client> {
        let opened = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).and_then(|mut s| {
            // An idle client's one request; a slow client's first line of
            // one it never finishes.
            let first: &[u8] = if self.slow {
                b"GET /hello HTTP/1.1\r\nHost: serverlab\r\n"
            } else {
                b"GET /hello HTTP/1.1\r\nHost: serverlab\r\n\r\n"
            };
            s.write_all(first)?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match opened {
            Ok(stream) => {
                self.counts.connected += 1;
                Some(Client {
                    stream,
                    answered: false,
                    next_line: Instant::now(),
                })
            }
            Err(_) => {
                self.counts.failed_connects += 1;
                None
            }
        }
    }

    /// Holds `n` clients until `stop`; slow ones send a header line every
    /// `interval`.
    fn run(mut self, n: u32, interval: Option<Duration>, stop: &AtomicBool) -> GroupCounts {
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut i = 0;
            while i < self.conns.len() {
                let c = &mut self.conns[i];
                let mut gone = false;
                match c.stream.read(&mut buf) {
                    Ok(0) => gone = true,
                    Ok(_) => {
                        if !c.answered {
                            c.answered = true;
                            self.counts.responses += 1;
                        }
                        // A slow client gets an answer only when cut off
                        // (408): it goes, and another takes its place.
                        gone = self.slow;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => gone = true,
                }
                if let (false, Some(every)) = (gone, interval) {
                    if now >= c.next_line {
                        c.next_line = now + every;
                        match c.stream.write(b"X-Slow: 1\r\n") {
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(_) => gone = true,
                        }
                    }
                }
                if gone {
                    self.counts.cut_off += 1;
                    self.conns.swap_remove(i);
                } else {
                    i += 1;
                }
            }
            self.fill(n);
            std::thread::sleep(TICK);
        }
        self.counts.open_at_end = self.conns.len() as u64;
        self.counts
    }
}
