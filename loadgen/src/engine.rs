//! The engine's conductor: checks the settings, serialises the requests
//! once, starts one [`Worker`] per thread, gathers their interval
//! histograms while they run (for the interval log and latency over time,
//! with bounded memory), and merges everything into a [`LoadReport`].

use crate::config::{LoadConfig, Target};
use crate::cpu::{CpuTime, BUSY_THRESHOLD};
use crate::hist::{self, new_histogram, Recorder};
use crate::output::IntervalLog;
use crate::report::{
    ClientLongest, CpuReport, IntervalSummary, Latency, LittlesLaw, LoadReport, LITTLE_TOLERANCE,
    SCHEMA,
};
use crate::worker::{Counters, IntervalMsg, Plan, Worker, WorkerResult};
use crate::LoadError;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Runs a load test; see [`crate::run`].
pub fn run(
    config: &LoadConfig,
    stop: &AtomicBool,
    measuring: Option<&AtomicBool>,
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let target = Target::parse(&config.url)?;
    let paths = config.paths(&target);
    let requests = paths
        .iter()
        .map(|p| serialise(&p.path, &target.host, config.keepalive))
        .collect();
    let cumulative = paths
        .iter()
        .scan(0u64, |sum, p| {
            *sum += u64::from(p.weight);
            Some(*sum)
        })
        .collect();
    // Opened now so that a bad path fails before any traffic; its header
    // is written when the measurement has started (see `start_log`).
    let log_file = match &config.log {
        Some(path) => {
            Some(BufWriter::new(File::create(path).map_err(|e| {
                LoadError::Log(format!("{}: {e}", path.display()))
            })?))
        }
        None => None,
    };
    let plan = Plan {
        addr: target.addr,
        host: target.host.clone(),
        requests,
        cumulative,
        flow: config.flow.map(|crate::Flow::Counter(mode)| mode),
        keepalive: config.keepalive,
        pipeline: config.pipeline,
        timeout: config.timeout,
        conn_rate: config.rate.map(|r| r / config.connections as f64),
        arrivals: config.arrivals,
        warmup: config.warmup,
        settle: config.settle,
        connections: config.connections,
        warm_answered: std::sync::atomic::AtomicUsize::new(0),
        measure_start: std::sync::OnceLock::new(),
        measuring,
        duration: match config.requests {
            Some(_) => None,
            None => Some(config.duration),
        },
        ready: std::sync::Barrier::new(config.threads),
        clock: std::sync::OnceLock::new(),
        tickets: config.requests.map(AtomicU64::new),
        stop,
        interval: config.interval,
        send_slack: config.send_slack,
    };
    let comment = format!(
        "serverlab load {}: corrected latency in microseconds, one histogram per {:?}",
        config.url, config.interval
    );
    // The file until the measurement starts (its header carries that
    // time), then the log.
    let mut unstarted = log_file.map(|file| (file, comment));
    let mut log: Option<IntervalLog<BufWriter<File>>> = None;
    let (tx, rx) = mpsc::channel::<IntervalMsg>();
    let mut collector = Collector::new(config.threads, config.interval);
    let results = std::thread::scope(|scope| -> Result<Vec<WorkerResult>, LoadError> {
        let mut handles = Vec::new();
        for t in 0..config.threads {
            // Spread the connections as evenly as possible.
            let n = config.connections / config.threads
                + usize::from(t < config.connections % config.threads);
            let worker =
                Worker::new(&plan, n, seed(t), tx.clone()).map_err(|source| LoadError::Os {
                    what: "cannot set up an event loop",
                    source,
                })?;
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn_scoped(scope, move || worker.run())
                .map_err(|source| LoadError::Os {
                    what: "cannot start a thread",
                    source,
                })?;
            handles.push(handle);
        }
        drop(tx);
        // Until every worker has dropped its sender.
        for msg in rx.iter() {
            start_log(&mut unstarted, &mut log, &plan)?;
            collector.add(msg, log.as_mut())?;
        }
        let mut results = Vec::new();
        for (t, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(r)) => results.push(r),
                Ok(Err(source)) => {
                    return Err(LoadError::Os {
                        what: "event loop failed",
                        source,
                    })
                }
                Err(_) => return Err(LoadError::Panic(t)),
            }
        }
        Ok(results)
    })?;
    // Every thread passed the barrier, so the clock is set.
    let measure_start = plan
        .measure_start
        .get()
        .copied()
        .unwrap_or_else(Instant::now);
    let warmup = plan.clock.get().map_or(config.warmup, |c| {
        measure_start.saturating_duration_since(c.start)
    });
    let ended = results
        .iter()
        .map(|r| r.ended)
        .max()
        .unwrap_or(measure_start);
    let duration = ended.saturating_duration_since(measure_start);
    start_log(&mut unstarted, &mut log, &plan)?;
    collector.finish(duration, log.as_mut())?;
    if let Some(log) = log {
        log.finish().map_err(|e| LoadError::Log(e.to_string()))?;
    }
    let mut report = assemble(
        config,
        &target,
        results,
        collector.summaries,
        duration,
        stop,
    );
    report.warmup_s = warmup.as_secs_f64();
    Ok(report)
}

/// Writes the interval log's header, once: its start time is the
/// measurement's, known only when a thread has decided it.
fn start_log(
    unstarted: &mut Option<(BufWriter<File>, String)>,
    log: &mut Option<IntervalLog<BufWriter<File>>>,
    plan: &Plan,
) -> Result<(), LoadError> {
    let Some((file, comment)) = unstarted.take() else {
        return Ok(());
    };
    let measure_start = plan
        .measure_start
        .get()
        .copied()
        .unwrap_or_else(Instant::now);
    // The wall-clock time of that instant.
    let started = match measure_start.checked_duration_since(Instant::now()) {
        Some(ahead) => SystemTime::now() + ahead,
        None => SystemTime::now() - Instant::now().duration_since(measure_start),
    };
    *log = Some(
        IntervalLog::start(file, started, &comment).map_err(|e| LoadError::Log(e.to_string()))?,
    );
    Ok(())
}

/// The bytes of one GET request, built once and copied per send.
fn serialise(path: &str, host: &str, keepalive: bool) -> Vec<u8> {
    let close = if keepalive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{close}\r\n").into_bytes()
}

fn seed(thread: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (thread as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Merges the threads' interval histograms as they arrive and keeps only a
/// small summary per interval.
struct Collector {
    threads: usize,
    interval: Duration,
    open: BTreeMap<u64, (Histogram<u64>, usize, u64, u64)>,
    summaries: Vec<IntervalSummary>,
}

impl Collector {
    fn new(threads: usize, interval: Duration) -> Collector {
        Collector {
            threads,
            interval,
            open: BTreeMap::new(),
            summaries: Vec::new(),
        }
    }

    fn add(
        &mut self,
        msg: IntervalMsg,
        log: Option<&mut IntervalLog<BufWriter<File>>>,
    ) -> Result<(), LoadError> {
        let entry = self
            .open
            .entry(msg.index)
            .or_insert_with(|| (new_histogram(), 0, 0, 0));
        hist::merge(&mut entry.0, &msg.hist);
        entry.1 = entry.1.saturating_add(1);
        entry.2 += msg.requests;
        entry.3 += msg.errors;
        // A thread's last interval stays open: its length is known at the end.
        if msg.last {
            entry.1 = usize::MAX;
        }
        if entry.1 == self.threads {
            // Threads report intervals in order, so this one is complete.
            let (h, _, requests, errors) = self
                .open
                .remove(&msg.index)
                .unwrap_or_else(|| (new_histogram(), 0, 0, 0));
            self.close(msg.index, &h, requests, errors, self.interval, log)?;
        }
        Ok(())
    }

    /// Closes the intervals still open at the end; the last may be short.
    fn finish(
        &mut self,
        duration: Duration,
        mut log: Option<&mut IntervalLog<BufWriter<File>>>,
    ) -> Result<(), LoadError> {
        for (index, (h, _, requests, errors)) in std::mem::take(&mut self.open) {
            let start = self.interval * index as u32;
            let length = duration.saturating_sub(start).min(self.interval);
            self.close(index, &h, requests, errors, length, log.as_deref_mut())?;
        }
        self.summaries
            .sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        Ok(())
    }

    fn close(
        &mut self,
        index: u64,
        h: &Histogram<u64>,
        requests: u64,
        errors: u64,
        length: Duration,
        log: Option<&mut IntervalLog<BufWriter<File>>>,
    ) -> Result<(), LoadError> {
        let start = self.interval * index as u32;
        if let Some(log) = log {
            log.write(h, start, length)
                .map_err(|e| LoadError::Log(e.to_string()))?;
        }
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        self.summaries.push(IntervalSummary {
            start_s: start.as_secs_f64(),
            length_s: length.as_secs_f64(),
            requests,
            errors,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            max_us: if h.is_empty() { 0 } else { h.max() },
        });
        Ok(())
    }
}

/// Merges the threads' results into the report and its warnings.
fn assemble(
    config: &LoadConfig,
    target: &Target,
    results: Vec<WorkerResult>,
    intervals: Vec<IntervalSummary>,
    duration: Duration,
    stop: &AtomicBool,
) -> LoadReport {
    let mut rec = Recorder::default();
    let mut c = Counters::default();
    let mut cpu = CpuTime::default();
    let mut thread_busy = Vec::new();
    for r in &results {
        hist::merge(&mut rec.corrected, &r.rec.corrected);
        hist::merge(&mut rec.uncorrected, &r.rec.uncorrected);
        hist::merge(&mut rec.send_lag, &r.rec.send_lag);
        hist::merge(&mut rec.connect, &r.rec.connect);
        add_counters(&mut c, &r.counters);
        cpu.user += r.cpu.user;
        cpu.system += r.cpu.system;
        let wall = r.wall.as_secs_f64();
        thread_busy.push(if wall > 0.0 {
            (r.cpu.total().as_secs_f64() / wall).min(1.0)
        } else {
            0.0
        });
    }
    let secs = duration.as_secs_f64();
    // Requests that ended in the window; the corrected histogram also
    // holds one sample for each that was still waiting at the end.
    let finished = rec
        .corrected
        .len()
        .saturating_sub(c.in_flight_at_end + c.behind_schedule_at_end);
    let achieved_rate = if secs > 0.0 {
        finished as f64 / secs
    } else {
        0.0
    };
    let mean_busy = thread_busy.iter().sum::<f64>() / thread_busy.len().max(1) as f64;
    let generator_bound = mean_busy >= BUSY_THRESHOLD;
    let mut warnings = Vec::new();
    if generator_bound {
        warnings.push(format!(
            "the load generator was the bottleneck: its threads were {:.0}% busy on average, so \
             these figures describe the generator as much as the server (give it more threads or \
             cores, or measure at a fixed --rate below this)",
            mean_busy * 100.0
        ));
    }
    if c.connects == 0 && c.errors.connect > 0 {
        warnings.push(format!(
            "no connection succeeded ({} connect errors): is the server up at {}?",
            c.errors.connect, target.addr
        ));
    }
    if let Some(rate) = config.rate {
        if secs >= 1.0
            && achieved_rate < 0.95 * rate
            && !stop.load(std::sync::atomic::Ordering::Relaxed)
        {
            let who = if generator_bound {
                "the generator"
            } else {
                "the server (or the connections: raise --connections)"
            };
            warnings.push(format!(
                "target rate not reached: {achieved_rate:.1} of {rate} req/s; {who} could not keep up, \
                 and the corrected latency shows the resulting queueing"
            ));
        }
    }
    if c.in_flight_at_end + c.behind_schedule_at_end > 0
        && config.rate.is_some()
        && c.behind_schedule_at_end > c.requests / 100
    {
        warnings.push(format!(
            "{} requests were due but not yet sent when the run ended: the schedule was behind",
            c.behind_schedule_at_end
        ));
    }
    if c.stalled {
        warnings.push(format!(
            "gave up before the request count was reached: no request ended for {:.1} s \
             (twice the timeout plus the longest connect back-off); is the server up at {}?",
            crate::worker::stall_limit(config.timeout).as_secs_f64(),
            target.addr
        ));
    }
    if c.starved > 0 {
        warnings.push(format!(
            "{} of {} connections got no answer in the whole measured window although they \
             had a request waiting: the server starved them (their waiting requests are \
             counted as latency samples of their age)",
            c.starved, config.connections
        ));
    }
    let littles_law =
        (config.rate.is_none() && config.requests.is_none() && secs > 0.0).then(|| {
            let expected = (config.connections * config.pipeline) as f64;
            let observed = c.busy_s / secs;
            LittlesLaw {
                expected,
                observed,
                ratio: observed / expected,
            }
        });
    if let Some(l) = &littles_law {
        if (l.ratio - 1.0).abs() > LITTLE_TOLERANCE {
            warnings.push(format!(
                "Little's law check failed: {:.1} requests were in flight on average, against \
                 {:.0} connections × pipeline; {}",
                l.observed,
                l.expected,
                if l.ratio < 1.0 {
                    "the connections spent time idle between answer and next request (a busy \
                     generator, or reconnects)"
                } else {
                    "more requests were in flight than the connections can carry (a bug)"
                }
            ));
        }
    }
    let cpu_total = cpu.total().as_secs_f64();
    LoadReport {
        schema: SCHEMA,
        url: config.url.clone(),
        addr: target.addr.to_string(),
        mode: if config.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        arrivals: config.arrivals,
        flow: config.flow,
        connections: config.connections,
        threads: config.threads,
        pipeline: config.pipeline,
        keepalive: config.keepalive,
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: secs,
        stopped_early: stop.load(std::sync::atomic::Ordering::Relaxed),
        target_rate: config.rate,
        send_slack_us: config.rate.map(|_| config.send_slack.as_micros() as u64),
        achieved_rate,
        requests: c.requests,
        responses: c.responses,
        in_flight_at_end: c.in_flight_at_end,
        behind_schedule_at_end: c.behind_schedule_at_end,
        starved_connections: c.starved,
        stalled: c.stalled,
        client_longest: ClientLongest::of(&c.longest_waits),
        littles_law,
        connects: c.connects,
        bytes_read: c.bytes_read,
        bytes_written: c.bytes_written,
        statuses: c.statuses,
        errors: c.errors,
        sessions: c.sessions,
        restores: c.restores,
        corrected: Latency::from_histogram(rec.corrected),
        uncorrected: Latency::from_histogram(rec.uncorrected),
        send_lag: Latency::from_histogram(rec.send_lag),
        connect: Latency::from_histogram(rec.connect),
        intervals,
        cpu: CpuReport {
            user_s: cpu.user.as_secs_f64(),
            system_s: cpu.system.as_secs_f64(),
            thread_busy,
            us_per_request: if finished > 0 {
                cpu_total * 1e6 / finished as f64
            } else {
                0.0
            },
            generator_bound,
        },
        warnings,
    }
}

fn add_counters(into: &mut Counters, c: &Counters) {
    into.requests += c.requests;
    into.responses += c.responses;
    into.statuses.s1xx += c.statuses.s1xx;
    into.statuses.s2xx += c.statuses.s2xx;
    into.statuses.s3xx += c.statuses.s3xx;
    into.statuses.s4xx += c.statuses.s4xx;
    into.statuses.s5xx += c.statuses.s5xx;
    into.errors.add(&c.errors);
    into.connects += c.connects;
    into.bytes_read += c.bytes_read;
    into.bytes_written += c.bytes_written;
    into.sessions += c.sessions;
    into.restores += c.restores;
    into.in_flight_at_end += c.in_flight_at_end;
    into.behind_schedule_at_end += c.behind_schedule_at_end;
    into.starved += c.starved;
    into.stalled |= c.stalled;
    into.busy_s += c.busy_s;
    into.longest_waits.extend_from_slice(&c.longest_waits);
}
