//! Output formats checked against their contracts: `.hgrm` (what the
//! HdrHistogram plotter reads), the JSON report, and the interval log.

mod common;

use common::{ok, Reply, TestServer};
use loadgen::output::{write_hgrm, Which};
use loadgen::{LoadConfig, LoadReport};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn short_run(log: Option<std::path::PathBuf>) -> LoadReport {
    let server = TestServer::start(|_, _| Reply::Send(ok("hello")));
    let config = LoadConfig {
        url: server.url("/"),
        connections: 2,
        threads: 1,
        rate: Some(400.0),
        duration: Duration::from_millis(1500),
        log,
        ..Default::default()
    };
    loadgen::run(&config, &AtomicBool::new(false)).unwrap()
}

#[test]
fn hgrm_follows_the_percentile_distribution_format() {
    let mut h = loadgen::hist::new_histogram();
    for v in 1..=10_000u64 {
        h.saturating_record(v * 7);
    }
    let mut out = Vec::new();
    write_hgrm(&mut out, &h, 1000.0).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{:>12} {:>14} {:>10} {:>14}",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )
    );
    assert_eq!(lines[1], "");
    let footer = &lines[lines.len() - 3..];
    assert!(
        footer[0].starts_with("#[Mean    = ") && footer[0].contains(", StdDeviation   = "),
        "{}",
        footer[0]
    );
    assert!(
        footer[1].starts_with("#[Max     = ")
            && footer[1].ends_with(&format!("Total count    = {:>12}]", 10_000)),
        "{}",
        footer[1]
    );
    assert_eq!(
        footer[2],
        format!(
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            h.buckets(),
            2048
        )
    );
    let rows = &lines[2..lines.len() - 3];
    assert!(rows.len() > 50);
    let mut last_count = 0;
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let is_last = i == rows.len() - 1;
        assert_eq!(fields.len(), if is_last { 3 } else { 4 }, "row {i}: {row}");
        let value: f64 = fields[0].parse().unwrap();
        let q: f64 = fields[1].parse().unwrap();
        let count: u64 = fields[2].parse().unwrap();
        assert!(count >= last_count);
        last_count = count;
        // Three decimals (3 significant digits), 12 decimals of percentile.
        assert_eq!(fields[0].split('.').nth(1).unwrap().len(), 3, "{row}");
        assert_eq!(fields[1].split('.').nth(1).unwrap().len(), 12, "{row}");
        if is_last {
            assert_eq!(q, 1.0);
            assert_eq!(count, 10_000);
            assert!((value - 70.0).abs() < 0.1, "max {value} ms");
        } else {
            let inv: f64 = fields[3].parse().unwrap();
            assert!((inv - 1.0 / (1.0 - q)).abs() < 0.01 * inv.max(1.0), "{row}");
        }
    }
}

#[test]
fn json_report_has_the_documented_fields_and_mergeable_histograms() {
    let report = short_run(None);
    let mut out = Vec::new();
    report.write_json(&mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in [
        "schema",
        "url",
        "addr",
        "mode",
        "connections",
        "threads",
        "duration_s",
        "target_rate",
        "achieved_rate",
        "requests",
        "responses",
        "in_flight_at_end",
        "behind_schedule_at_end",
        "connects",
        "statuses",
        "errors",
        "corrected",
        "uncorrected",
        "send_lag",
        "connect",
        "intervals",
        "cpu",
        "warnings",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["mode"], "open");
    for kind in [
        "connect",
        "read",
        "write",
        "timeout",
        "status_4xx",
        "status_5xx",
        "parse",
        "state",
    ] {
        assert!(v["errors"][kind].is_u64(), "errors.{kind}");
    }
    for which in ["corrected", "uncorrected"] {
        for p in [
            "p50_us",
            "p90_us",
            "p99_us",
            "p99_9_us",
            "p99_99_us",
            "max_us",
            "count",
        ] {
            assert!(v[which][p].is_u64(), "{which}.{p}");
        }
        // The histogram decodes back to the same distribution.
        let h = loadgen::hist::from_base64(v[which]["histogram"].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), v[which]["count"].as_u64().unwrap());
        assert_eq!(h.max(), v[which]["max_us"].as_u64().unwrap());
    }
    for key in [
        "user_s",
        "system_s",
        "thread_busy",
        "us_per_request",
        "generator_bound",
    ] {
        assert!(v["cpu"].get(key).is_some(), "cpu.{key}");
    }
    assert!(v["requests"].as_u64().unwrap() > 400);
    // The whole report reads back, histograms included.
    let back: LoadReport = serde_json::from_slice(&out).unwrap();
    assert_eq!(back.corrected.histogram, report.corrected.histogram);
    // One summary per second of the 1.5 s measurement: 1 s, then 0.5 s.
    assert_eq!(report.intervals.len(), 2, "{:?}", report.intervals);
    assert!((report.intervals[1].length_s - 0.5).abs() < 0.1);
    // The intervals hold what ended in them; the histogram also holds one
    // sample for each request still unanswered (or unsent) at the end.
    let summed: u64 = report.intervals.iter().map(|i| i.requests).sum();
    assert_eq!(
        summed + report.in_flight_at_end + report.behind_schedule_at_end,
        report.corrected.count
    );
    // .hgrm of the report itself writes.
    let mut hgrm = Vec::new();
    report.write_hgrm(&mut hgrm, Which::Uncorrected).unwrap();
    assert!(String::from_utf8(hgrm).unwrap().contains("#[Max     ="));
}

#[test]
fn interval_log_has_one_histogram_per_interval() {
    let path = std::env::temp_dir().join(format!(
        "serverlab-loadgen-test-{}.hlog",
        std::process::id()
    ));
    let report = short_run(Some(path.clone()));
    let text = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let text = text.unwrap();
    assert!(text.contains("#[StartTime: "));
    assert!(text.contains("#[BaseTime: "));
    let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rows.len(), report.intervals.len());
    let mut total = 0;
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f.len(), 4, "{row}");
        let h = loadgen::hist::from_base64(f[3]).unwrap();
        total += h.len();
        let max: f64 = f[2].parse().unwrap();
        assert_eq!(max as u64, h.max());
    }
    // The log holds what ended in each interval; the run's histogram also
    // holds the requests left unanswered or unsent at the end.
    assert_eq!(
        total + report.in_flight_at_end + report.behind_schedule_at_end,
        report.corrected.count
    );
}

#[test]
fn text_counts_successes_per_second_and_failures_apart() {
    let server = TestServer::start(|_, _| {
        Reply::Send(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec())
    });
    let config = LoadConfig {
        url: server.url("/"),
        connections: 2,
        threads: 1,
        duration: Duration::from_millis(300),
        ..Default::default()
    };
    let report = loadgen::run(&config, &AtomicBool::new(false)).unwrap();
    assert!(report.finished() > 0);
    assert_eq!(report.succeeded(), 0);
    assert_eq!(report.failed(), report.finished());
    let mut text = Vec::new();
    report.write_text(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("Requests/sec: 0.00 succeeded"), "{text}");
    assert!(text.contains("(100.0 %)"), "{text}");
}
