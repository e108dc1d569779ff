//! An open-loop load generator over io_uring, kept as a probe: it measures
//! what an open loop costs in generator CPU per request when the system
//! calls of many connections are batched into one ring submission, for
//! comparison with `serverlab load --rate` (mio, one `send` and one `recv`
//! call per request) in `bench/openloop_cost.sh`.
//!
//! One thread, `--conns` keep-alive connections, each sending one GET at
//! evenly spaced intended times (the whole rate spread over the
//! connections, staggered). As in `serverlab load`, a connection holds at
//! most `--pipeline` requests in flight (default 1): a send that comes due
//! while the connection waits for an answer goes out when the answer comes,
//! and its send lag counts the wait — so with 1, a slow answer shows up as
//! send lag too; a deep pipeline leaves only the generator's own lateness.
//! Every connection always has a receive posted in the ring; each loop
//! turn queues the sends now due, then enters the kernel once, both to
//! submit and to wait: until the next send is due (plus `--slack`), or
//! also until any completion arrives (`--wake each`, the default).
//! `--wake timer` harvests answers only when a send is due, the fewest
//! wake-ups possible — but an answer then waits up to a send interval to
//! be seen, so a generator built that way would have to take response
//! times from kernel receive timestamps instead of its own clock.
//!
//! Probe simplifications (a real generator would not make them): answers
//! are counted by length, so every response to the path must be the same
//! size (true of `/hello`); a short send or a closed connection ends the
//! probe with an error; no response latency is reported, only CPU per
//! request and send lag.
//!
//! With `none` for the address the probe only sleeps: it wakes at RATE
//! evenly spaced times a second by the same ring wait and records how late
//! each wake-up was — the floor that the machine's timers and scheduling
//! set under any generator's send lag, and what a wake-up alone costs.
//!
//! Output: one JSON line with the fields of `serverlab load --json` that
//! the comparison reads (`achieved_rate`, `cpu.us_per_request`,
//! `send_lag.p50_us`/`p99_us`).

use io_uring::{opcode, squeue, types, IoUring};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: openloop-uring HOST:PORT|none RATE [--conns N] [--duration SECS] \
[--warmup SECS] [--slack MICROS] [--wake each|timer] [--pipeline N] [--path PATH]";

/// Bytes one receive may take; several pipelined answers fit.
const RECV_CHUNK: usize = 16 * 1024;
/// Send lags are counted in 1 µs buckets up to this; longer ones share the last.
const MAX_LAG_US: usize = 100_000;
/// A user_data's low bit tells a receive from a send; the rest is the connection.
const RECV_BIT: u64 = 1;

struct Options {
    addr: String,
    rate: f64,
    conns: usize,
    duration: Duration,
    warmup: Duration,
    slack: Duration,
    wake_on_each: bool,
    pipeline: usize,
    path: String,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("openloop-uring: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openloop-uring: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut o = Options {
        addr: String::new(),
        rate: 0.0,
        conns: 64,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        slack: Duration::ZERO,
        wake_on_each: true,
        pipeline: 1,
        path: "/hello".into(),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            positional.push(arg);
            continue;
        }
        let value = it.next().ok_or(format!("{arg} needs a value"))?;
        let number = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{arg}: not a number: {v}"))
        };
        match arg.as_str() {
            "--conns" => o.conns = number(&value)? as usize,
            "--duration" => o.duration = Duration::from_secs_f64(number(&value)?),
            "--warmup" => o.warmup = Duration::from_secs_f64(number(&value)?),
            "--slack" => o.slack = Duration::from_secs_f64(number(&value)? / 1e6),
            "--wake" if value == "each" || value == "timer" => o.wake_on_each = value == "each",
            "--wake" => return Err(format!("--wake: each or timer, not {value}")),
            "--pipeline" => o.pipeline = number(&value)? as usize,
            "--path" => o.path = value,
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    let [addr, rate] =
        <[String; 2]>::try_from(positional).map_err(|_| "HOST:PORT and RATE".to_string())?;
    o.addr = addr;
    o.rate = rate
        .parse()
        .map_err(|_| format!("RATE: not a number: {rate}"))?;
    if o.rate <= 0.0 || o.conns == 0 || o.pipeline == 0 {
        return Err("RATE, --conns and --pipeline must be positive".into());
    }
    Ok(o)
}

fn run(o: &Options) -> io::Result<()> {
    // Timers may fire this late (the default is 50 µs): the probe asks for
    // exactly the lateness it was given.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0, 0, 0) };
    if o.addr == "none" {
        return wake_only(o);
    }
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", o.path, o.addr).into_bytes();
    let answer_len = answer_length(&o.addr, &request)?;
    let conns = (0..o.conns)
        .map(|_| {
            let s = TcpStream::connect(&o.addr)?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut probe = Probe::new(o, conns, request, answer_len)?;
    let measured_from = probe.start + o.warmup;
    let end = measured_from + o.duration;
    let mut cpu_at_start = None;
    loop {
        let now = Instant::now();
        if cpu_at_start.is_none() && now >= measured_from {
            cpu_at_start = Some(thread_cpu());
            probe.answered = 0;
            probe.lags.fill(0);
        }
        if now >= end {
            break;
        }
        probe.send_due(now)?;
        probe.wait(o, end)?;
        probe.harvest()?;
    }
    let cpu = thread_cpu() - cpu_at_start.unwrap_or_default();
    report(probe.answered, o.duration, cpu, &probe.lags);
    Ok(())
}

/// `none`: wake-ups alone, at `o.rate` a second, each one's lateness counted.
fn wake_only(o: &Options) -> io::Result<()> {
    let ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)?;
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let start = Instant::now() + Duration::from_millis(10);
    let measured_from = start + o.warmup;
    let end = measured_from + o.duration;
    let (mut due, mut woken, mut cpu_at_start) = (start, 0u64, None);
    let mut lags = vec![0u64; MAX_LAG_US + 1];
    loop {
        let now = Instant::now();
        if cpu_at_start.is_none() && now >= measured_from {
            cpu_at_start = Some(thread_cpu());
            woken = 0;
            lags.fill(0);
        }
        if now >= end {
            break;
        }
        while due <= now {
            lags[((now - due).as_micros() as usize).min(MAX_LAG_US)] += 1;
            woken += 1;
            due += interval;
        }
        let timeout =
            types::Timespec::from((due + o.slack).saturating_duration_since(Instant::now()));
        match ring
            .submitter()
            .submit_with_args(1, &types::SubmitArgs::new().timespec(&timeout))
        {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
    let cpu = thread_cpu() - cpu_at_start.unwrap_or_default();
    report(woken, o.duration, cpu, &lags);
    Ok(())
}

/// The JSON line: events a second, CPU per event, send (or wake) lag.
fn report(events: u64, duration: Duration, cpu: Duration, lags: &[u64]) {
    println!(
        "{{\"achieved_rate\":{:.1},\"cpu\":{{\"us_per_request\":{:.3}}},\"send_lag\":{{\"p50_us\":{},\"p99_us\":{}}}}}",
        events as f64 / duration.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / events.max(1) as f64,
        quantile(lags, 0.5),
        quantile(lags, 0.99)
    );
}

/// The loop's state: the ring, the connections and their schedule.
struct Probe {
    ring: IoUring,
    conns: Vec<TcpStream>,
    request: Vec<u8>,
    answer_len: usize,
    bufs: Vec<Vec<u8>>,
    /// Bytes of a connection's next answer received so far.
    unparsed: Vec<usize>,
    /// Requests sent on a connection and not yet answered.
    in_flight: Vec<usize>,
    /// A send that came due while its connection had `pipeline` requests in
    /// flight: it goes out (late, its lag counted) when an answer comes.
    held: Vec<Option<Instant>>,
    /// Each connection's next intended send, unless one is held.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    interval: Duration,
    pipeline: usize,
    start: Instant,
    answered: u64,
    lags: Vec<u64>,
}

impl Probe {
    fn new(
        o: &Options,
        conns: Vec<TcpStream>,
        request: Vec<u8>,
        answer_len: usize,
    ) -> io::Result<Probe> {
        // One issuer, and completions processed only when this thread enters
        // the kernel: no interrupts of the loop between its own waits.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(4096)?;
        let n = conns.len();
        let interval = Duration::from_secs_f64(n as f64 / o.rate);
        let start = Instant::now() + Duration::from_millis(10);
        let mut probe = Probe {
            ring,
            conns,
            request,
            answer_len,
            bufs: vec![vec![0u8; RECV_CHUNK]; n],
            unparsed: vec![0; n],
            in_flight: vec![0; n],
            held: vec![None; n],
            due: (0..n)
                .map(|i| Reverse((start + interval.mul_f64(i as f64 / n as f64), i)))
                .collect(),
            interval,
            pipeline: o.pipeline,
            start,
            answered: 0,
            lags: vec![0; MAX_LAG_US + 1],
        };
        for i in 0..n {
            probe.post_recv(i)?;
        }
        Ok(probe)
    }

    /// Queues every send due by `now` (the ring submits them on the next wait).
    fn send_due(&mut self, now: Instant) -> io::Result<()> {
        while let Some(&Reverse((at, i))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.in_flight[i] >= self.pipeline {
                self.held[i] = Some(at);
            } else {
                self.send(i, at, now)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, i: usize, intended: Instant, now: Instant) -> io::Result<()> {
        let send = opcode::Send::new(
            types::Fd(self.conns[i].as_raw_fd()),
            self.request.as_ptr(),
            self.request.len() as u32,
        )
        .build()
        .user_data((i as u64) << 1);
        push(&mut self.ring, &send)?;
        self.lags[((now - intended).as_micros() as usize).min(MAX_LAG_US)] += 1;
        self.in_flight[i] += 1;
        self.due.push(Reverse((intended + self.interval, i)));
        Ok(())
    }

    /// Submits what is queued and sleeps in the same system call: until the
    /// next send is due (plus the slack), or until any completion comes if
    /// every completion wakes the loop (or a held send waits for one).
    fn wait(&mut self, o: &Options, end: Instant) -> io::Result<()> {
        let next = self.due.peek().map_or(end, |r| r.0 .0);
        let wait = (next + o.slack).saturating_duration_since(Instant::now());
        let timeout = types::Timespec::from(wait);
        // Otherwise more completions than can come before the timeout.
        let want = if o.wake_on_each || self.held.iter().any(Option::is_some) {
            1
        } else {
            1 << 20
        };
        let args = types::SubmitArgs::new().timespec(&timeout);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Counts the answers that came, re-posts receives, sends what was held.
    fn harvest(&mut self) -> io::Result<()> {
        let completions: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, result) in completions {
            let i = (data >> 1) as usize;
            if data & RECV_BIT == 0 {
                if result != self.request.len() as i32 {
                    return Err(io::Error::other(format!(
                        "connection {i}: send returned {result}"
                    )));
                }
                continue;
            }
            if result <= 0 {
                return Err(io::Error::other(format!(
                    "connection {i}: receive returned {result}"
                )));
            }
            self.unparsed[i] += result as usize;
            let answers = self.unparsed[i] / self.answer_len;
            self.unparsed[i] %= self.answer_len;
            self.answered += answers as u64;
            self.in_flight[i] -= answers.min(self.in_flight[i]);
            self.post_recv(i)?;
            if self.in_flight[i] < self.pipeline {
                if let Some(intended) = self.held[i].take() {
                    self.send(i, intended, Instant::now())?;
                }
            }
        }
        Ok(())
    }

    fn post_recv(&mut self, i: usize) -> io::Result<()> {
        let buf = &mut self.bufs[i];
        let recv = opcode::Recv::new(
            types::Fd(self.conns[i].as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
        .build()
        .user_data((i as u64) << 1 | RECV_BIT);
        push(&mut self.ring, &recv)
    }
}

/// The length of one whole answer to `request` (head and Content-Length body),
/// learnt from one exchange on a connection of its own.
fn answer_length(addr: &str, request: &[u8]) -> io::Result<usize> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("the server closed before answering"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let body_len = text[..head_end]
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .ok_or_else(|| io::Error::other("the answer has no Content-Length"))?;
        return Ok(head_end + 4 + body_len);
    }
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    // Safety: every buffer an entry points at (a connection's receive buffer,
    // the request) lives until the loop ends, and a connection has at most
    // one receive in flight, so no two entries write the same buffer.
    unsafe { ring.submission().push(entry) }.map_err(|_| io::Error::other("submission queue full"))
}

/// This thread's user + system CPU time, as `serverlab load` counts its own.
fn thread_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn quantile(counts: &[u64], q: f64) -> usize {
    let total: u64 = counts.iter().sum();
    let rank = (total as f64 * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    counts
        .iter()
        .position(|&c| {
            seen += c;
            seen >= rank
        })
        .unwrap_or(0)
}
