//! One engine thread: a mio event loop driving its share of the
//! connections, as wrk does. Requests come pre-serialised from the
//! [`Plan`]; each response ends its request with exactly one outcome (a
//! status or an error), whose latency is recorded either way.

use crate::conn::{Conn, Pending, ReadEnd, State};
use crate::cpu::CpuTime;
use crate::flow::{CounterSession, Outcome};
use crate::hist::{new_histogram, Recorder};
use crate::response::{Response, Step};
use crate::schedule::{Rng, Schedule};
use crate::{Errors, Statuses};
use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};
use servers::timer::Timer;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

const TIMER: Token = Token(usize::MAX);
/// How often in-flight requests are checked for timeouts. Timeouts are
/// seconds long; 10 ms of slack is immaterial and keeps the check cheap.
const SWEEP: Duration = Duration::from_millis(10);

/// What every worker shares, fixed before the first request.
pub struct Plan<'a> {
    pub addr: std::net::SocketAddr,
    pub host: String,
    /// The serialised request for each path of the mix.
    pub requests: Vec<Vec<u8>>,
    /// Running sums of the mix weights.
    pub cumulative: Vec<u64>,
    pub flow: Option<crate::StateMode>,
    pub keepalive: bool,
    pub pipeline: usize,
    pub timeout: Duration,
    /// Open loop: requests per second for each connection.
    pub conn_rate: Option<f64>,
    pub arrivals: crate::Arrivals,
    /// Discarded load before the measured window.
    pub warmup: Duration,
    /// Keep-alive runs: after the warmup, wait up to this much longer for
    /// every connection to have had an answer (servers that fork or spawn
    /// per connection settle in first), then start measuring.
    pub settle: Option<Duration>,
    /// Connections in the run, over every thread.
    pub connections: usize,
    /// Connections warm (see `Conn::warm`) before measuring began.
    pub warm_answered: std::sync::atomic::AtomicUsize,
    /// When the measured window began: decided once, for every thread.
    pub measure_start: std::sync::OnceLock<Instant>,
    /// Set when the measured window begins (see `loadgen::run_signalling`).
    pub measuring: Option<&'a AtomicBool>,
    /// The measured window; `None` with `--requests`.
    pub duration: Option<Duration>,
    /// Keep-alive runs open every connection before the clock starts:
    /// threads wait here for each other, then the first sets the clock.
    pub ready: std::sync::Barrier,
    /// The run's clock, set once every thread's connections are open.
    pub clock: std::sync::OnceLock<Clock>,
    /// `--requests`: measured requests still to send.
    pub tickets: Option<AtomicU64>,
    pub stop: &'a AtomicBool,
    pub interval: Duration,
    pub send_slack: Duration,
}

/// When the run began (every connection open, for keep-alive runs), when
/// its measured window begins and ends.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    /// The warmup's end: the window begins here at the earliest ...
    pub earliest: Instant,
    /// ... and here at the latest (the warmup plus the settling time).
    pub latest: Instant,
    /// The window's start once decided; until then `latest`, so that
    /// nothing counts early.
    pub measure_start: Instant,
    /// `None` with `--requests`.
    pub end: Option<Instant>,
    duration: Option<Duration>,
}

impl Clock {
    fn starting(start: Instant, plan: &Plan) -> Clock {
        let earliest = start + plan.warmup;
        let latest = earliest + plan.settle.unwrap_or_default();
        let mut clock = Clock {
            start,
            earliest,
            latest,
            measure_start: latest,
            end: None,
            duration: plan.duration,
        };
        clock.begin_window(latest);
        clock
    }

    fn begin_window(&mut self, at: Instant) {
        self.measure_start = at;
        self.end = self.duration.map(|d| at + d);
    }

    /// Whether an outcome at `now` falls inside the measured window.
    fn in_window(&self, now: Instant) -> bool {
        now >= self.measure_start
    }
}

impl Plan<'_> {
    /// Whether request `p`, ending at `now`, counts in the results. A
    /// timed run counts what *ends* inside the measured window, whenever it
    /// was sent: counting only what was sent after the warmup and answered
    /// before the end would bias throughput low by latency ÷ duration, and
    /// would drop warmup requests that fail during the window. A run of
    /// exactly `--requests` N counts those N requests.
    fn counts(&self, clock: &Clock, p: &Pending, now: Instant) -> bool {
        match self.tickets {
            Some(_) => p.measured,
            None => clock.in_window(now),
        }
    }

    fn take_ticket(&self) -> bool {
        match &self.tickets {
            None => true,
            Some(t) => t
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    fn give_back_ticket(&self) {
        if let Some(t) = &self.tickets {
            t.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tickets_left(&self) -> bool {
        self.tickets
            .as_ref()
            .map_or(true, |t| t.load(Ordering::Relaxed) > 0)
    }
}

/// One interval's worth of a thread's corrected latencies.
pub struct IntervalMsg {
    pub index: u64,
    pub hist: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    /// The thread's last interval, cut short by the end of the run.
    pub last: bool,
}

/// Counters of one thread (or, merged, of the run).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub requests: u64,
    pub responses: u64,
    pub statuses: Statuses,
    pub errors: Errors,
    pub connects: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub sessions: u64,
    pub restores: u64,
    pub in_flight_at_end: u64,
    pub behind_schedule_at_end: u64,
    /// Connections that got no answer in the whole window although they
    /// had a request waiting for at least half of it.
    pub starved: u64,
    /// Seconds requests spent in flight inside the window (from their
    /// intended send, or the window's start, to their end or the run's).
    /// Divided by the window, the mean number in flight (Little's law:
    /// L = λW).
    pub busy_s: f64,
    /// `--requests`: the thread gave up because no request ended for
    /// [`stall_limit`] (nothing listens, or the server stopped answering).
    pub stalled: bool,
    /// Each client's longest wait (µs), one per connection.
    pub longest_waits: Vec<u64>,
}

/// `--requests` runs end by count, so a server that never answers would
/// hold them forever; a request ends within the timeout either way, so
/// when none has ended for twice the timeout plus the longest connect
/// back-off, nothing will: the run gives up and says so.
pub fn stall_limit(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(1)
}

/// What a thread hands back when it ends.
pub struct WorkerResult {
    pub rec: Recorder,
    pub counters: Counters,
    pub cpu: CpuTime,
    /// Wall time from the measurement start to the thread's end.
    pub wall: Duration,
    /// When the thread stopped measuring.
    pub ended: Instant,
}

/// A request's outcome when it is not a plain success.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Read,
    Write,
    Timeout,
    Parse,
    State,
    Status4xx,
    Status5xx,
}

/// The recorder, counters and current interval of one thread.
struct Tally {
    rec: Recorder,
    c: Counters,
    index: u64,
    interval_requests: u64,
    interval_errors: u64,
    tx: Sender<IntervalMsg>,
    /// When a request last ended (answered or failed), measured or not.
    last_end: Instant,
}

impl Tally {
    /// Sends every interval that has ended by `now` to the collector.
    fn tick(&mut self, plan: &Plan, clock: &Clock, now: Instant) {
        let Some(since) = now.checked_duration_since(clock.measure_start) else {
            return;
        };
        let current = (since.as_nanos() / plan.interval.as_nanos()) as u64;
        while self.index < current {
            self.send_interval(false);
        }
    }

    fn send_interval(&mut self, last: bool) {
        let msg = IntervalMsg {
            last,
            index: self.index,
            hist: std::mem::replace(&mut self.rec.interval, new_histogram()),
            requests: std::mem::take(&mut self.interval_requests),
            errors: std::mem::take(&mut self.interval_errors),
        };
        // The collector outlives the workers; a send cannot fail meanwhile.
        let _ = self.tx.send(msg);
        self.index += 1;
    }

    /// Ends request `p` at `now` with `failure` (or success).
    fn finish(
        &mut self,
        plan: &Plan,
        clock: &Clock,
        p: Pending,
        now: Instant,
        failure: Option<Failure>,
    ) -> u64 {
        self.last_end = now;
        if !plan.counts(clock, &p, now) {
            return 0;
        }
        self.tick(plan, clock, now);
        let served = now.saturating_duration_since(p.sent);
        let inside = now.saturating_duration_since(p.intended.max(clock.measure_start));
        self.c.busy_s += inside.as_secs_f64();
        let waited = us(now - p.intended);
        self.rec.request(waited, us(served));
        self.interval_requests += 1;
        let Some(f) = failure else { return waited };
        self.interval_errors += 1;
        let e = &mut self.c.errors;
        match f {
            Failure::Read => e.read += 1,
            Failure::Write => e.write += 1,
            Failure::Timeout => e.timeout += 1,
            Failure::Parse => e.parse += 1,
            Failure::State => e.state += 1,
            Failure::Status4xx => e.status_4xx += 1,
            Failure::Status5xx => e.status_5xx += 1,
        }
        waited
    }

    fn status(&mut self, status: u16) {
        let s = &mut self.c.statuses;
        match status {
            100..=199 => s.s1xx += 1,
            200..=299 => s.s2xx += 1,
            300..=399 => s.s3xx += 1,
            400..=499 => s.s4xx += 1,
            _ => s.s5xx += 1,
        }
    }
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// One thread's event loop and connections.
pub struct Worker<'a> {
    plan: &'a Plan<'a>,
    /// Set when the run starts (after the connections are open).
    clock: Clock,
    poll: Poll,
    timer: Timer,
    conns: Vec<Conn>,
    /// Open loop: (intended send time, connection), earliest first.
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    tally: Tally,
    rng: Rng,
    /// Open loop: how late a wake-up may be (`LoadConfig::send_slack`).
    slack: Duration,
}

impl<'a> Worker<'a> {
    /// A worker for `connections` connections; `seed` varies per thread.
    pub fn new(
        plan: &'a Plan<'a>,
        connections: usize,
        seed: u64,
        tx: Sender<IntervalMsg>,
    ) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let timer = Timer::new(poll.registry(), TIMER)?;
        let now = Instant::now();
        let conns = (0..connections)
            .map(|i| {
                let mut c = Conn::new(Token(i), now, plan.flow.is_some());
                c.session = plan.flow.map(CounterSession::new);
                c
            })
            .collect();
        Ok(Worker {
            plan,
            clock: Clock::starting(now, plan),
            poll,
            timer,
            conns,
            heap: BinaryHeap::new(),
            tally: Tally {
                rec: Recorder::default(),
                c: Counters::default(),
                index: 0,
                interval_requests: 0,
                interval_errors: 0,
                tx,
                last_end: now,
            },
            rng: Rng::new(seed),
            slack: plan.send_slack,
        })
    }

    /// Keep-alive runs: opens every connection before the clock starts, so
    /// that no connect (a SYN retried after a full accept queue takes a
    /// second) falls inside the measured window, and no open-loop schedule
    /// counts time before its connection could possibly send. Connections
    /// that fail here are retried by the run itself. Bounded by the
    /// request timeout (at least 5 s) whatever the count.
    fn open_all(&mut self) -> std::io::Result<()> {
        if !self.plan.keepalive {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.plan.timeout.max(Duration::from_secs(5));
        for i in 0..self.conns.len() {
            if self.conns[i]
                .connect(self.poll.registry(), self.plan.addr, started)
                .is_err()
            {
                self.pre_connect_failed(i, started);
            }
        }
        let mut events = Events::with_capacity(1024);
        while self
            .conns
            .iter()
            .any(|c| matches!(c.state, State::Connecting { .. }))
        {
            let now = Instant::now();
            if now >= deadline || self.plan.stop.load(Ordering::Relaxed) {
                break;
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                let i = event.token().0;
                if i >= self.conns.len() {
                    continue;
                }
                let State::Connecting { since } = self.conns[i].state else {
                    continue;
                };
                match self.conns[i].finish_connect() {
                    Ok(true) => {
                        self.tally.c.connects += 1;
                        self.tally.rec.connect.saturating_record(us(now - since));
                    }
                    Ok(false) => {}
                    Err(_) => self.pre_connect_failed(i, now),
                }
            }
        }
        // Whatever is still connecting is given up and retried in the run.
        let now = Instant::now();
        for i in 0..self.conns.len() {
            if matches!(self.conns[i].state, State::Connecting { .. }) {
                self.pre_connect_failed(i, now);
            }
        }
        Ok(())
    }

    fn pre_connect_failed(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.failures += 1;
        c.close(self.poll.registry(), now);
    }

    /// Waits for every thread's connections, then starts the clock (the
    /// first thread past the barrier sets it for all) and the schedules.
    fn start_clock(&mut self) {
        self.plan.ready.wait();
        let plan = self.plan;
        self.clock = *plan
            .clock
            .get_or_init(|| Clock::starting(Instant::now(), plan));
        if plan.settle.is_none() || !plan.keepalive {
            // A fixed warmup: the window's start is known now.
            plan.measure_start.get_or_init(|| self.clock.earliest);
        }
        for c in &mut self.conns {
            c.schedule = plan.conn_rate.map(|rate| {
                Schedule::new(plan.arrivals, rate, self.clock.start, self.rng.next_u64())
            });
            if let State::Closed { .. } = c.state {
                c.state = State::Closed {
                    retry_at: self.clock.start,
                };
            }
        }
    }

    /// Runs until the end, the stop flag, or the last ticketed request.
    pub fn run(mut self) -> std::io::Result<WorkerResult> {
        let plan = self.plan;
        // Even a thread whose connects failed must reach the barrier, or
        // the others would wait for it forever.
        let opened = self.open_all();
        self.start_clock();
        opened?;
        let mut events = Events::with_capacity(1024);
        let mut measuring = false;
        let mut cpu_start = CpuTime::this_thread();
        let mut next_sweep = Instant::now() + SWEEP;
        let mut started = false;
        let ended = loop {
            let now = Instant::now();
            if let Some(at) = (!measuring).then(|| self.window_start(now)).flatten() {
                // The warmup is over: forget it.
                self.clock.begin_window(at);
                measuring = true;
                if let Some(flag) = plan.measuring {
                    flag.store(true, Ordering::SeqCst);
                }
                cpu_start = CpuTime::this_thread();
                // Connects made before the clock started are the run's own.
                let (connects, connect) = (self.tally.c.connects, self.tally.rec.connect.clone());
                self.tally.rec.reset();
                self.tally.c = Counters {
                    connects,
                    ..Counters::default()
                };
                self.tally.rec.connect = connect;
            }
            if !started {
                // The first requests go out once the warmup question is
                // settled, so that a run without warmup counts them.
                started = true;
                for i in 0..self.conns.len() {
                    self.fill(i, now);
                }
            }
            let clock = self.clock;
            if let Some(end) = clock.end.filter(|&e| now >= e) {
                break end;
            }
            if plan.stop.load(Ordering::Relaxed) || self.finished() {
                break now;
            }
            if plan.tickets.is_some()
                && now.saturating_duration_since(self.tally.last_end.max(clock.start))
                    > stall_limit(plan.timeout)
            {
                self.tally.c.stalled = true;
                break now;
            }
            self.tally.tick(plan, &clock, now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
            self.run_due(now);
            // Wake for the earliest schedule entry or the end via the fine
            // timer; the sweep period bounds the wait otherwise.
            let wake = self
                .heap
                .peek()
                .map(|Reverse((t, _))| *t)
                .into_iter()
                .chain(clock.end)
                .min();
            if let Some(at) = wake {
                // Any wake-up from `at` to `at + slack` will do. Re-arming
                // only when the armed one is outside that window (each
                // re-arm reprograms a hardware timer, a VM exit here) is
                // what lets one wake-up send several requests.
                let fits = self
                    .timer
                    .armed()
                    .is_some_and(|armed| armed >= at && armed <= at + self.slack);
                if !fits {
                    self.timer.arm(at + self.slack)?;
                }
            }
            let wait = next_sweep.saturating_duration_since(now);
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                if event.token() == TIMER {
                    self.timer.acknowledge();
                    continue;
                }
                let i = event.token().0;
                if event.is_writable() || event.is_error() {
                    self.on_writable(i, now);
                }
                let closed = event.is_read_closed() || event.is_error();
                if event.is_readable() || closed {
                    self.on_readable(i, now, closed);
                }
                self.fill(i, now);
            }
        };
        let cpu = CpuTime::this_thread().since(cpu_start);
        self.account_unfinished(ended);
        Ok(WorkerResult {
            wall: ended.saturating_duration_since(self.clock.measure_start),
            rec: self.tally.rec,
            counters: self.tally.c,
            cpu: if measuring { cpu } else { CpuTime::default() },
            ended,
        })
    }

    /// When the measured window begins, once `now` is past its start: after
    /// the warmup, and (with settling) once every connection has had an
    /// answer or the settling time is up. The first thread to see it
    /// decides for all.
    fn window_start(&self, now: Instant) -> Option<Instant> {
        let plan = self.plan;
        if let Some(&at) = plan.measure_start.get() {
            return (now >= at).then_some(at);
        }
        if now < self.clock.earliest {
            return None;
        }
        let settled = plan.warm_answered.load(Ordering::Relaxed) >= plan.connections;
        (settled || now >= self.clock.latest).then(|| *plan.measure_start.get_or_init(|| now))
    }

    /// With `--requests`: every ticket is spent and every answer is in.
    fn finished(&self) -> bool {
        !self.plan.tickets_left()
            && self
                .conns
                .iter()
                .all(|c| c.inflight.iter().all(|p| !p.measured) && !c.restore_pending && !c.ticket)
    }

    /// Counts what is left at the end, then flushes the last interval.
    ///
    /// Every client counts: a request still unanswered at the end (in
    /// flight, or due on an open-loop schedule and not yet sent) is a
    /// latency sample of its age at the end, at least; that is wrk2's
    /// correction applied to what was never answered. Without it, a server
    /// that serves one connection and leaves the rest waiting would show
    /// only the fast answers of the one it serves. A connection with no
    /// answer in the whole window, although it had a request waiting for
    /// at least half of it, is counted as starved.
    fn account_unfinished(&mut self, ended: Instant) {
        let plan = self.plan;
        let clock = self.clock;
        let window = ended.saturating_duration_since(clock.measure_start);
        let long_wait = ended.checked_sub(window / 2).unwrap_or(ended);
        let tally = &mut self.tally;
        for c in &self.conns {
            let mut waiting_since = c.waiting_since;
            let mut longest = c.longest_us;
            for p in &c.inflight {
                if plan.tickets.is_some() && !p.measured {
                    continue;
                }
                longest = longest.max(us(ended - p.intended));
                tally.c.in_flight_at_end += 1;
                // In the run's histograms, not the last interval's: the
                // intervals hold what ended in them.
                tally
                    .rec
                    .corrected
                    .saturating_record(us(ended - p.intended));
                tally.rec.uncorrected.saturating_record(us(ended - p.sent));
                let inside = ended.saturating_duration_since(p.intended.max(clock.measure_start));
                tally.c.busy_s += inside.as_secs_f64();
            }
            if let (Some(s), None) = (&c.schedule, &plan.tickets) {
                let mut due = s.clone();
                while due.next() <= ended {
                    let intended = due.next();
                    tally.c.behind_schedule_at_end += 1;
                    tally.rec.corrected.saturating_record(us(ended - intended));
                    longest = longest.max(us(ended - intended));
                    waiting_since = Some(waiting_since.map_or(intended, |w| w.min(intended)));
                    due.advance();
                }
            } else if c.inflight.is_empty() && c.state != State::Open && !window.is_zero() {
                // A closed-loop client still trying to connect (or waiting
                // to try again): waiting since its oldest unanswered
                // request, or since it began this connect.
                waiting_since =
                    Some(waiting_since.map_or(c.connect_began, |w| w.min(c.connect_began)));
            }
            if !c.answered && !window.is_zero() && waiting_since.is_some_and(|w| w <= long_wait) {
                tally.c.starved += 1;
            }
            tally.c.longest_waits.push(longest);
        }
        if ended >= clock.measure_start {
            self.tally.tick(plan, &clock, ended);
            // The interval the run ended in, unless it ended exactly on its
            // start (then it is empty and would be reported at full length).
            let start = clock.measure_start + plan.interval * self.tally.index as u32;
            if ended > start {
                self.tally.send_interval(true);
            }
        }
    }

    /// Serves schedule entries whose time has come.
    fn run_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.conns[i].queued_at == Some(at) {
                self.conns[i].queued_at = None;
                self.fill(i, now);
            }
        }
    }

    /// Times out requests and connects that waited too long.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let expired = match c.state {
                State::Connecting { since } => now >= since + self.plan.timeout,
                State::Open => c
                    .inflight
                    .front()
                    .is_some_and(|p| now >= p.sent + self.plan.timeout),
                State::Closed { .. } => false,
            };
            if !expired {
                continue;
            }
            if let State::Connecting { .. } = c.state {
                self.connect_failed(i, now);
            } else {
                // The connection is reset; everything on it timed out.
                self.fail_all(i, now, Failure::Timeout);
            }
            self.fill(i, now);
        }
    }

    fn connect_failed(&mut self, i: usize, now: Instant) {
        self.tally.c.errors.connect += u64::from(self.clock.in_window(now));
        let c = &mut self.conns[i];
        c.failures += 1;
        let retry = now + c.backoff();
        c.close(self.poll.registry(), retry);
        self.queue(i, retry);
    }

    /// Ends every request in flight on connection `i` with `f` and closes
    /// it. A connection that ends without having had an answer counts as a
    /// failure: the next connect waits the back-off.
    fn fail_all(&mut self, i: usize, now: Instant, f: Failure) {
        let c = &mut self.conns[i];
        for p in c.inflight.drain(..) {
            let waited = self.tally.finish(self.plan, &self.clock, p, now, Some(f));
            c.longest_us = c.longest_us.max(waited);
            if let Some(s) = c.session.as_mut() {
                s.on_lost();
            }
        }
        if !c.answered_on_socket {
            c.failures += 1;
        }
        let retry = now + c.backoff();
        c.close(self.poll.registry(), retry);
    }

    /// Makes the loop come back to connection `i` at `at`.
    fn queue(&mut self, i: usize, at: Instant) {
        let c = &mut self.conns[i];
        if c.queued_at.map_or(true, |q| at < q) {
            c.queued_at = Some(at);
            self.heap.push(Reverse((at, i)));
        }
    }

    fn on_writable(&mut self, i: usize, now: Instant) {
        if let State::Connecting { since } = self.conns[i].state {
            match self.conns[i].finish_connect() {
                Ok(true) => {
                    if self.clock.in_window(now) {
                        self.tally.c.connects += 1;
                        self.tally
                            .rec
                            .connect
                            .saturating_record((now - since).as_micros() as u64);
                    }
                }
                Ok(false) => return,
                Err(_) => return self.connect_failed(i, now),
            }
        }
        self.flush(i, now);
    }

    fn flush(&mut self, i: usize, now: Instant) {
        match self.conns[i].flush() {
            Ok(n) => self.tally.c.bytes_written += n as u64,
            Err(_) => self.fail_all(i, now, Failure::Write),
        }
    }

    /// Reads and parses; `closed`: the peer hung up, so read on to the end
    /// even after a short read (no further edge will come).
    fn on_readable(&mut self, i: usize, now: Instant, closed: bool) {
        loop {
            if self.conns[i].state != State::Open {
                return;
            }
            match self.conns[i].read_some() {
                Ok((n, drained)) => {
                    self.tally.c.bytes_read += n as u64;
                    if !self.parse(i, now) || (drained && !closed) {
                        return;
                    }
                }
                Err(ReadEnd::WouldBlock) => return,
                Err(ReadEnd::Eof) => return self.on_eof(i, now),
                Err(ReadEnd::Error(e)) => {
                    tracing::debug!("read: {e}");
                    return self.fail_all(i, now, Failure::Read);
                }
            }
        }
    }

    /// Parses every complete response in the buffer. Returns false if the
    /// connection was closed meanwhile.
    fn parse(&mut self, i: usize, now: Instant) -> bool {
        let mut pos = 0;
        loop {
            let c = &mut self.conns[i];
            match c.parser.advance(&c.inbuf[pos..c.in_len]) {
                Ok(Step::More { consumed }) => {
                    pos += consumed;
                    c.consume(pos);
                    return true;
                }
                Ok(Step::Done { consumed, response }) => {
                    pos += consumed;
                    if !self.on_response(i, response, now) {
                        return false;
                    }
                }
                Err(_) => {
                    self.fail_all(i, now, Failure::Parse);
                    return false;
                }
            }
        }
    }

    fn on_eof(&mut self, i: usize, now: Instant) {
        match self.conns[i].parser.eof() {
            Ok(Some(response)) => {
                if self.on_response(i, response, now) {
                    self.close_and_reconnect(i, now);
                }
            }
            // Closed between responses: an idle keep-alive connection timing
            // out, or the server stopping. Whatever was in flight is lost.
            Ok(None) => self.fail_all(i, now, Failure::Read),
            Err(_) => self.fail_all(i, now, Failure::Read),
        }
    }

    fn close_and_reconnect(&mut self, i: usize, now: Instant) {
        // Requests pipelined behind a closing response are lost.
        self.fail_all(i, now, Failure::Read);
    }

    /// Ends the oldest request with `r`. Returns false if the connection
    /// was closed (the server said so, or the response had no request).
    fn on_response(&mut self, i: usize, r: Response, now: Instant) -> bool {
        let plan = self.plan;
        let c = &mut self.conns[i];
        let Some(p) = c.inflight.pop_front() else {
            // An answer nobody asked for: the stream is out of step.
            self.tally.c.errors.parse += 1;
            self.fail_all(i, now, Failure::Parse);
            return false;
        };
        c.answered_on_socket = true;
        c.failures = 0;
        let counts = plan.counts(&self.clock, &p, now);
        // Warm: answered, and (open loop) no more than one gap behind its
        // schedule, so the backlog of a slow start has drained. A closed
        // loop has no schedule to fall behind.
        let caught_up = match (&c.schedule, plan.conn_rate) {
            (Some(s), Some(rate)) => s.next() + Duration::from_secs_f64(1.0 / rate) >= now,
            _ => true,
        };
        if !c.warm && caught_up {
            c.warm = true;
            plan.warm_answered.fetch_add(1, Ordering::Relaxed);
        }
        c.answered |= self.clock.in_window(now);
        c.waiting_since = c.inflight.front().map(|p| p.intended);
        let failure = match c.session.as_mut().map(|s| s.on_response(&r)) {
            None => match r.status {
                400..=499 => Some(Failure::Status4xx),
                500..=599 => Some(Failure::Status5xx),
                _ => None,
            },
            Some(Outcome::Ok) => None,
            Some(Outcome::NewSession) => {
                self.tally.c.sessions += u64::from(counts);
                None
            }
            Some(Outcome::Restore) => {
                self.tally.c.restores += u64::from(counts);
                c.restore_pending = true;
                None
            }
            Some(Outcome::StateError) => {
                let why = c.session.as_mut().and_then(|s| s.take_why());
                let e = &mut self.tally.c.errors;
                if counts && e.state_example.is_none() {
                    e.state_example = why;
                }
                Some(Failure::State)
            }
            Some(Outcome::Status4xx) => Some(Failure::Status4xx),
            Some(Outcome::Status5xx) => Some(Failure::Status5xx),
        };
        if counts {
            self.tally.c.responses += 1;
            self.tally.status(r.status);
        }
        let waited = self.tally.finish(plan, &self.clock, p, now, failure);
        let c = &mut self.conns[i];
        c.longest_us = c.longest_us.max(waited);
        if r.close || !plan.keepalive {
            self.close_and_reconnect(i, now);
            return false;
        }
        true
    }

    /// Connects, or sends as many requests as the schedule, the pipeline
    /// depth and the tickets allow on connection `i`.
    fn fill(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        if self.clock.end.is_some_and(|e| now >= e) || plan.stop.load(Ordering::Relaxed) {
            return;
        }
        match self.conns[i].state {
            State::Connecting { .. } => return,
            State::Closed { retry_at } => {
                if retry_at > now {
                    return self.queue(i, retry_at);
                }
                // Without keep-alive, connect only when a request is due, so
                // the connect is part of its (corrected) latency.
                if !plan.keepalive {
                    if let Some(next) = self.conns[i].schedule.as_ref().map(|s| s.next()) {
                        if next > now {
                            return self.queue(i, next);
                        }
                    }
                }
                let c = &mut self.conns[i];
                if self.clock.in_window(now) && !c.restore_pending && !c.ticket {
                    if !plan.keepalive {
                        // One connection per request: hold its ticket first.
                        if !plan.take_ticket() {
                            return;
                        }
                        c.ticket = plan.tickets.is_some();
                    } else if !plan.tickets_left() {
                        return;
                    }
                }
                if self.conns[i]
                    .connect(self.poll.registry(), plan.addr, now)
                    .is_err()
                {
                    self.connect_failed(i, now);
                }
                return;
            }
            State::Open => {}
        }
        let mut wrote = false;
        loop {
            let c = &mut self.conns[i];
            if c.inflight.len() >= plan.pipeline || (!plan.keepalive && c.sent_on_socket > 0) {
                break;
            }
            // A soft-mode restore goes out at once, outside the schedule.
            let restore = c.restore_pending;
            let intended = if restore {
                now
            } else if let Some(s) = &c.schedule {
                let next = s.next();
                if next > now {
                    self.queue(i, next);
                    break;
                }
                next
            } else if !plan.keepalive {
                c.connect_began
            } else {
                now
            };
            let measured = self.clock.in_window(intended);
            let held = std::mem::take(&mut c.ticket);
            if held && (!measured || restore) {
                plan.give_back_ticket();
            }
            if measured && !restore && !held && !plan.take_ticket() {
                break;
            }
            let c = &mut self.conns[i];
            if restore {
                c.restore_pending = false;
            } else if let Some(s) = &mut c.schedule {
                s.advance();
            }
            match &c.session {
                Some(session) => session.write_request(&plan.host, !plan.keepalive, &mut c.out),
                None => {
                    let k = pick(&plan.cumulative, &mut self.rng);
                    c.out.extend_from_slice(&plan.requests[k]);
                }
            }
            c.waiting_since.get_or_insert(intended);
            c.inflight.push_back(Pending {
                intended,
                sent: now,
                measured,
            });
            c.sent_on_socket += 1;
            wrote = true;
            if measured {
                self.tally.c.requests += 1;
                self.tally
                    .rec
                    .send_lag
                    .saturating_record((now - intended).as_micros() as u64);
            }
        }
        if wrote {
            self.flush(i, now);
        }
    }
}

/// Picks a path index by weight.
fn pick(cumulative: &[u64], rng: &mut Rng) -> usize {
    if cumulative.len() == 1 {
        return 0;
    }
    let total = *cumulative.last().unwrap_or(&1);
    let r = rng.next_u64() % total;
    cumulative.partition_point(|&c| c <= r)
}
