//! Writers: the wrk-like text summary, JSON, the standard `.hgrm`
//! percentile distribution, and the HdrHistogram interval log.

use crate::report::{Latency, LoadReport};
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

/// Which of the report's histograms to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// From the intended send time.
    Corrected,
    /// From the actual send time.
    Uncorrected,
    /// Actual − intended send time.
    SendLag,
    /// Connection establishment.
    Connect,
}

impl LoadReport {
    /// The latency summary `which` names.
    pub fn latency(&self, which: Which) -> &Latency {
        match which {
            Which::Corrected => &self.corrected,
            Which::Uncorrected => &self.uncorrected,
            Which::SendLag => &self.send_lag,
            Which::Connect => &self.connect,
        }
    }

    /// Writes the report as pretty JSON (the README documents the fields).
    pub fn write_json(&self, w: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        writeln!(w)
    }

    /// Writes `which` histogram as a `.hgrm` percentile distribution in
    /// milliseconds.
    pub fn write_hgrm(&self, w: &mut impl Write, which: Which) -> io::Result<()> {
        write_hgrm(w, &self.latency(which).histogram, 1000.0)
    }

    /// Writes the wrk-like text summary.
    pub fn write_text(&self, w: &mut impl Write) -> io::Result<()> {
        let r = self;
        let how = match r.target_rate {
            Some(rate) => format!("open loop at {rate} req/s ({:?} arrivals)", r.arrivals),
            None => "closed loop".to_string(),
        };
        writeln!(
            w,
            "Running {:.1}s test @ {} ({}), {how}",
            r.duration_s, r.url, r.addr
        )?;
        let mut extra = String::new();
        if r.pipeline > 1 {
            extra += &format!(", pipeline {}", r.pipeline);
        }
        if !r.keepalive {
            extra += ", a new connection per request";
        }
        if let Some(flow) = r.flow {
            extra += &format!(", flow {flow:?}");
        }
        if r.warmup_s > 0.0 {
            extra += &format!(", {:.1}s warmup discarded", r.warmup_s);
        }
        if let Some(slack) = r.send_slack_us.filter(|&s| s > 0) {
            extra += &format!(", sends up to {slack} µs late (--send-slack)");
        }
        writeln!(
            w,
            "  {} threads and {} connections{extra}",
            r.threads, r.connections
        )?;
        if r.stopped_early {
            writeln!(w, "  (stopped early)")?;
        }
        let open = r.target_rate.is_some();
        writeln!(
            w,
            "  Latency {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "p50", "p90", "p99", "p99.9", "max"
        )?;
        let rows: &[(&str, &Latency)] = if open {
            &[
                ("corrected", &r.corrected),
                ("uncorrected", &r.uncorrected),
                ("send lag", &r.send_lag),
                ("connect", &r.connect),
            ]
        } else {
            &[("latency", &r.corrected), ("connect", &r.connect)]
        };
        for (name, l) in rows {
            writeln!(
                w,
                "  {name:>20} {:>10} {:>10} {:>10} {:>10} {:>10}",
                us(l.p50_us),
                us(l.p90_us),
                us(l.p99_us),
                us(l.p99_9_us),
                us(l.max_us)
            )?;
        }
        if open {
            writeln!(
                w,
                "  (corrected: from the intended send time, what a user waits; \
                 uncorrected: from the actual send, what wrk shows)"
            )?;
        }
        writeln!(
            w,
            "  {} requests in {:.2}s, {} read, {} responses",
            r.requests,
            r.duration_s,
            bytes(r.bytes_read),
            r.responses
        )?;
        if r.sessions > 0 || r.restores > 0 {
            writeln!(
                w,
                "  Sessions started: {}, restores: {}",
                r.sessions, r.restores
            )?;
        }
        if let Some(l) = &r.client_longest {
            writeln!(
                w,
                "  Each client's longest wait: {:.2}ms to {:.2}ms, median {:.2}ms",
                l.min_ms, l.max_ms, l.median_ms
            )?;
        }
        let e = &r.errors;
        if e.requests() + e.connect > 0 {
            writeln!(
                w,
                "  Errors: connect {}, read {}, write {}, timeout {}, 4xx {}, 5xx {}, parse {}, state {}",
                e.connect, e.read, e.write, e.timeout, e.status_4xx, e.status_5xx, e.parse, e.state
            )?;
        }
        if let Some(example) = &e.state_example {
            writeln!(w, "  First state error: {example}")?;
        }
        if r.in_flight_at_end + r.behind_schedule_at_end > 0 {
            writeln!(
                w,
                "  Unfinished at the end: {} in flight, {} not yet sent (behind schedule); \
                 each is in the latency at its age",
                r.in_flight_at_end, r.behind_schedule_at_end
            )?;
        }
        if r.starved_connections > 0 {
            writeln!(
                w,
                "  Starved: {} of {} connections got no answer in the whole window",
                r.starved_connections, r.connections
            )?;
        }
        if let Some(l) = &r.littles_law {
            writeln!(
                w,
                "  Little's law: {:.1} requests in flight on average for {:.0} connections × pipeline (ratio {:.2})",
                l.observed, l.expected, l.ratio
            )?;
        }
        // Requests/sec counts successes only; failures are said apart, so
        // a server that answers nothing never shows a rate.
        let secs = r.duration_s.max(1e-9);
        let ok_rate = r.succeeded() as f64 / secs;
        match r.target_rate {
            Some(t) => writeln!(w, "Requests/sec: {ok_rate:.2} succeeded (target {t})")?,
            None => writeln!(w, "Requests/sec: {ok_rate:.2} succeeded")?,
        }
        if r.failed() > 0 {
            writeln!(
                w,
                "Failed: {} of {} requests ({:.1} %), {:.2}/sec",
                r.failed(),
                r.finished(),
                100.0 * r.failed() as f64 / r.finished().max(1) as f64,
                r.failed() as f64 / secs
            )?;
        }
        writeln!(
            w,
            "Transfer/sec: {}",
            bytes((r.bytes_read as f64 / r.duration_s.max(1e-9)) as u64)
        )?;
        let busy: Vec<String> = r
            .cpu
            .thread_busy
            .iter()
            .map(|b| format!("{:.0}%", b * 100.0))
            .collect();
        writeln!(
            w,
            "Generator CPU: {:.2}s user + {:.2}s system, {:.1} µs/request, threads busy {}",
            r.cpu.user_s,
            r.cpu.system_s,
            r.cpu.us_per_request,
            busy.join(" ")
        )?;
        for warning in &r.warnings {
            writeln!(w, "WARNING: {warning}")?;
        }
        Ok(())
    }
}

/// A duration in µs, shown the way wrk does (`812.00us`, `1.25ms`, `2.10s`).
fn us(v: u64) -> String {
    let v = v as f64;
    if v < 1000.0 {
        format!("{v:.0}us")
    } else if v < 1_000_000.0 {
        format!("{:.2}ms", v / 1e3)
    } else {
        format!("{:.2}s", v / 1e6)
    }
}

fn bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1024.0 {
        format!("{b:.0}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}MB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}GB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// Writes `h` in HdrHistogram's percentile-distribution format (what Java's
/// `outputPercentileDistribution(out, 5, scale)` writes and the plotter
/// reads), with values divided by `scale` (1000.0: µs shown as ms).
pub fn write_hgrm(w: &mut impl Write, h: &Histogram<u64>, scale: f64) -> io::Result<()> {
    let d = usize::from(h.sigfig());
    writeln!(
        w,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    w,
                    "{value:12.d$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(w, "{value:12.d$} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    writeln!(
        w,
        "#[Mean    = {mean:12.d$}, StdDeviation   = {stdev:12.d$}]"
    )?;
    writeln!(
        w,
        "#[Max     = {max:12.d$}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        w,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h)
    )
}

/// HdrHistogram's sub-bucket count: 2^ceil(log2(2·10^d)).
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two()
}

/// Writes an HdrHistogram interval log as intervals arrive (one histogram
/// per interval, timestamps relative to the measurement start).
pub struct IntervalLog<W: Write> {
    out: W,
    serializer: V2DeflateSerializer,
}

impl<W: Write> IntervalLog<W> {
    /// Writes the log's header: a comment, `#[StartTime]` and `#[BaseTime]`
    /// (the measurement start), and the column legend.
    pub fn start(mut out: W, started: SystemTime, comment: &str) -> io::Result<Self> {
        let mut serializer = V2DeflateSerializer::new();
        {
            let mut log = IntervalLogWriterBuilder::new()
                .add_comment(comment)
                .with_start_time(started)
                .with_base_time(started)
                .begin_log_with(&mut out, &mut serializer)?;
            log.write_comment("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")?;
        }
        Ok(IntervalLog { out, serializer })
    }

    /// Appends one interval histogram.
    pub fn write(
        &mut self,
        h: &Histogram<u64>,
        start: Duration,
        length: Duration,
    ) -> io::Result<()> {
        // The builder only writes headers; one without any (no comment, no
        // times, divisor 1) appends plain interval lines to the same stream.
        let mut log =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.out, &mut self.serializer)?;
        log.write_histogram(h, start, length, None)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
