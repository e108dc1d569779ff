//! The report on synthetic runs: the answer picks the right winners, every
//! plot is drawn, spreads cover repetitions, failures and UNLIMITED runs
//! are shown, and the comparison matches runs by key.

use super::analysis;
use crate::results::{Env, Metrics, Percentiles, Placement, RunRecord, Status, Store, TimePoint};
use crate::suite::{Contestant, LoadLevel, Objective, RunSpec, Workload};
use sandbox::Limits;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn run(
    arch: &str,
    conns: u32,
    rep: u32,
    rps: f64,
    p99: f64,
    cpu: f64,
    mem: u64,
) -> RunRecord {
    let objective = Objective {
        percentile: 99.0,
        latency: Duration::from_millis(10),
    };
    let spec = RunSpec {
        contestant: Contestant::Builtin { name: arch.into() },
        workload: Workload {
            name: "hello".into(),
            path: "/hello".into(),
            keep_alive: true,
            pipeline: 1,
            mix: Vec::new(),
            files: None,
            background: Vec::new(),
        },
        load: LoadLevel::Closed { connections: conns },
        limits_name: "none".into(),
        limits: Limits::default(),
        state: None,
        repetition: rep,
        topology: None,
    };
    let requests = (rps * 2.0) as u64;
    RunRecord {
        schema: 1,
        key: spec.key(),
        suite: "synthetic".into(),
        spec,
        status: Status::Ok,
        reason: None,
        unlimited: false,
        objective,
        placement: Placement::default(),
        started: "2026-01-01T00:00:00Z".into(),
        wall_s: 3.0,
        metrics: Some(Metrics {
            requests,
            errors: 0,
            duration_s: 2.0,
            throughput_rps: rps,
            offered_rps: None,
            latency_ms: Percentiles {
                p50: p99 / 4.0,
                p90: p99 / 2.0,
                p99,
                p999: p99 * 2.0,
                max: p99 * 3.0,
                mean: p99 / 3.0,
            },
            objective_latency_ms: p99,
            meets_objective: p99 <= 10.0,
            server_cpu_s: Some(cpu),
            requests_per_cpu_s: Some(requests as f64 / cpu),
            memory_peak_bytes: Some(mem),
            memory_own_bytes: Some(mem),
            memory_cache_bytes: Some(0),
            starved_connections: 0,
            littles_law_ratio: Some(1.0),
            throttled_s: Some(0.0),
            server_connections_peak: Some(conns as u64 + 1),
            server_workers_peak: Some(2),
            generator_cpu_s: Some(0.1),
            host_steal: None,
            spectrum: vec![
                (0.0, p99 / 8.0),
                (90.0, p99 / 2.0),
                (99.0, p99),
                (99.9, p99 * 2.0),
            ],
            timeline: vec![
                TimePoint {
                    t_s: 1.0,
                    rps,
                    p50_ms: p99 / 4.0,
                    p99_ms: p99,
                    errors: 0,
                },
                TimePoint {
                    t_s: 2.0,
                    rps,
                    p50_ms: p99 / 4.0,
                    p99_ms: p99 * 1.1,
                    errors: 0,
                },
            ],
        }),
        auto_steps: Vec::new(),
        bracket: None,
        notes: Vec::new(),
        loadgen: None,
        accounting: None,
        server_stats: None,
        background: Vec::new(),
        cluster: None,
        histogram: None,
        env: Env::default(),
    }
}

/// "fast" has the most throughput, "lean" the best CPU efficiency and
/// least memory; "slow" never meets the objective; "broken" crashed.
fn synthetic() -> Vec<RunRecord> {
    let mut runs = Vec::new();
    for rep in 1..=2 {
        let jitter = f64::from(rep) * 10.0;
        runs.push(run("fast", 8, rep, 9000.0 + jitter, 2.0, 2.0, 50 << 20));
        runs.push(run("fast", 64, rep, 12000.0 + jitter, 9.0, 2.0, 60 << 20));
        runs.push(run("lean", 8, rep, 5000.0 + jitter, 1.0, 0.5, 4 << 20));
        runs.push(run("lean", 64, rep, 6000.0 + jitter, 30.0, 0.6, 5 << 20));
        runs.push(run("slow", 8, rep, 100.0, 80.0, 0.1, 2 << 20));
        let mut broken = run("broken", 8, rep, 0.0, 0.0, 0.0, 0);
        broken.status = Status::Crashed;
        broken.reason = Some("server exited during the run".into());
        broken.metrics = None;
        runs.push(broken);
    }
    runs
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "serverlab-report-test-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store_with(dir: &std::path::Path, runs: &[RunRecord]) -> Store {
    let store = Store::create(dir, "synthetic").unwrap();
    store.write_env(&Env::default()).unwrap();
    for r in runs {
        store.write_run(r, Some("# hgrm\n")).unwrap();
    }
    store
}

#[test]
fn answer_picks_winners_by_each_measure() {
    let runs = synthetic();
    let groups = analysis::groups(&runs);
    assert_eq!(groups.len(), 1);
    let best = groups[0].best();
    assert_eq!(best[0].contestant, "fast");
    let fast = &best[0];
    // fast's best sustainable point is c64 (p99 9 ms <= 10 ms).
    assert_eq!(groups[0].loads[fast.load.unwrap()].label(), "c64");
    let t = fast.throughput.unwrap();
    assert_eq!((t.min, t.max, t.n), (12010.0, 12020.0, 2));
    // lean at c64 breaks the objective: its best point is c8.
    let lean = best.iter().find(|b| b.contestant == "lean").unwrap();
    assert_eq!(groups[0].loads[lean.load.unwrap()].label(), "c8");
    let slow = best.iter().find(|b| b.contestant == "slow").unwrap();
    assert!(slow.load.is_none() && slow.throughput.is_none());
    let broken = best.iter().find(|b| b.contestant == "broken").unwrap();
    assert_eq!(broken.failures.len(), 2);
    assert!(broken.failures[0].contains("crashed"));
    let a = groups[0].answer();
    assert_eq!(a.throughput, ["fast"]);
    // CPU efficiency is compared at c8, the largest level both sustained.
    assert_eq!(a.common, Some(analysis::Common::Closed(0, "c8".into())));
    assert_eq!(a.per_cpu.len(), 1);
    assert_eq!(a.per_cpu[0].0, "lean");
    assert_eq!(a.memory, ["lean"]);
}

#[test]
fn html_has_the_answer_first_and_every_plot() {
    let tmp = TempDir::new("html");
    let mut runs = synthetic();
    runs[0].unlimited = true;
    for r in runs
        .iter_mut()
        .filter(|r| r.key.starts_with("fast__hello__c64"))
    {
        r.notes.push("generator-bound: test note".into());
    }
    let store = store_with(&tmp.0, &runs);
    let path = super::render(store.dir()).unwrap();
    let html = std::fs::read_to_string(path).unwrap();
    let answer = html.find("id=\"answer\"").expect("answer section");
    let first_plot = html.find("<figure class=\"plot\"").expect("plots");
    assert!(answer < first_plot, "the answer comes before the plots");
    assert!(
        html.contains("<b>fast</b> (12015 req/s; capacity 12010–"),
        "throughput winner"
    );
    assert!(html.contains("id=\"unlimited\""), "UNLIMITED banner");
    // One group × (throughput, cpu, memory) + 2 loads × (spectrum, timeline).
    let plots = html.matches("<figure class=\"plot\"").count();
    assert_eq!(plots, 7);
    assert_eq!(
        html.matches("<svg").count(),
        plots,
        "every figure holds an svg"
    );
    for id in ["throughput", "cpu", "memory", "spectrum-c8", "timeline-c64"] {
        assert!(html.contains(&format!("data-plot=\"{id}\"")), "{id}");
    }
    assert!(html.contains("99.9%"), "nines axis labels");
    assert!(only_svg_namespaces(&html), "no external resources");
    assert!(html.contains("server exited during the run"));
    assert!(
        html.contains("c64: generator-bound: test note"),
        "notes at the best point"
    );
    // The CSV was rewritten with one row per run plus the header.
    let csv = std::fs::read_to_string(store.dir().join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), runs.len() + 1);
    assert!(csv.starts_with("key,contestant,workload,load,"));
}

/// The only URLs allowed in the page are XML namespace names, which are
/// identifiers, not fetched.
fn only_svg_namespaces(html: &str) -> bool {
    html.match_indices("http").all(|(i, _)| {
        let rest = &html[i..];
        rest.starts_with("http://www.w3.org/2000/svg")
            || rest.starts_with("http://www.w3.org/1999/xlink")
    })
}

#[test]
fn terminal_table_marks_winners() {
    let text = super::answer_table(&synthetic());
    let fast = text.lines().find(|l| l.contains("fast")).unwrap();
    assert!(fast.contains("12015 *"), "{fast}");
    let lean = text.lines().find(|l| l.contains("lean")).unwrap();
    assert!(
        lean.contains("4.0 MiB *") || lean.contains("4.1 MiB *"),
        "{lean}"
    );
    assert!(text.contains("crashed"));
}

#[test]
fn compare_matches_runs_by_key() {
    let a = TempDir::new("cmp-a");
    let b = TempDir::new("cmp-b");
    let runs_a = synthetic();
    let mut runs_b = synthetic();
    for r in &mut runs_b {
        if let Some(m) = &mut r.metrics {
            m.throughput_rps *= 2.0;
        }
    }
    runs_b.retain(|r| r.spec.contestant.name() != "slow");
    let sa = store_with(&a.0, &runs_a);
    let sb = store_with(&b.0, &runs_b);
    let text = super::compare(sa.dir(), sb.dir()).unwrap();
    let row = text
        .lines()
        .find(|l| l.contains("fast__hello__c8__"))
        .expect("fast c8 row");
    assert!(row.contains("+100.0%"), "{row}");
    assert!(
        text.contains("only in A: slow__hello__c8__none__default"),
        "{text}"
    );
}

#[test]
fn compare_says_when_folders_come_from_different_suites() {
    let a = TempDir::new("cmp-suite-a");
    let b = TempDir::new("cmp-suite-b");
    let runs_a = synthetic();
    let mut runs_b = synthetic();
    for r in &mut runs_b {
        r.suite = "other".into();
        r.spec.workload.name = "elsewhere".into();
        r.key = r.spec.key();
    }
    let sa = store_with(&a.0, &runs_a);
    let sb = store_with(&b.0, &runs_b);
    let text = super::compare(sa.dir(), sb.dir()).unwrap();
    assert!(text.contains("made by different suites"), "{text}");
    assert!(text.contains("no run key is in both folders"), "{text}");
}

#[test]
fn open_loop_levels_decide_when_present() {
    let mut runs = synthetic();
    let mut auto = run("lean", 8, 1, 3000.0, 5.0, 0.3, 4 << 20);
    auto.spec.load = LoadLevel::Auto {
        start: 100.0,
        factor: 2.0,
        max: 1e5,
        resolution: 0.05,
        confirm: false,
        connections: 32,
    };
    auto.key = auto.spec.key();
    runs.push(auto);
    let groups = analysis::groups(&runs);
    let best = groups[0].best();
    // fast has far more closed-loop throughput, but only lean was measured
    // in open loop, so only lean has a sustainable point.
    assert_eq!(best[0].contestant, "lean");
    assert_eq!(groups[0].loads[best[0].load.unwrap()].label(), "auto");
    let fast = best.iter().find(|b| b.contestant == "fast").unwrap();
    assert!(fast.load.is_none());
}

#[test]
fn near_equal_winners_are_a_tie() {
    let mut runs = synthetic();
    // "close" reaches 99 % of fast's sustainable throughput at c64.
    for rep in 1..=2 {
        runs.push(run("close", 64, rep, 11900.0, 8.0, 2.0, 70 << 20));
    }
    let a = analysis::groups(&runs)[0].answer();
    assert_eq!(a.throughput, ["fast", "close"]);
    let tmp = TempDir::new("tie");
    let store = store_with(&tmp.0, &runs);
    let html = std::fs::read_to_string(super::render(store.dir()).unwrap()).unwrap();
    assert!(
        html.contains("not told apart from close"),
        "tie shown in the answer"
    );
}

/// An auto run whose search bracketed the capacity at `lo`..`hi` (`None`:
/// reached the maximum), with the common ramp 1000, 2000, 4000, ... and
/// `rpcs` requests per CPU-second at every sustained step.
fn auto_run(
    arch: &str,
    rep: u32,
    lo: f64,
    hi: Option<f64>,
    generator_bound: bool,
    rpcs: f64,
) -> RunRecord {
    use crate::runner::search::{Bracket, End};
    let mut r = run(arch, 512, rep, lo, 5.0, 1.0, 8 << 20);
    r.spec.load = LoadLevel::Auto {
        start: 1000.0,
        factor: 2.0,
        max: 1e6,
        resolution: 0.05,
        confirm: false,
        connections: 512,
    };
    r.key = r.spec.key();
    let mut rate = 1000.0;
    while rate <= lo {
        r.auto_steps.push(crate::results::AutoStep {
            offered_rps: rate,
            achieved_rps: rate,
            sustainable: true,
            requests_per_cpu_s: Some(rpcs),
            ..Default::default()
        });
        rate *= 2.0;
    }
    r.bracket = Some(Bracket {
        sustainable_rps: Some(lo),
        unsustainable_rps: hi,
        end: if hi.is_some() {
            End::Converged
        } else {
            End::AtMax
        },
        resolution: 0.05,
        generator_bound,
        non_monotonic: false,
        disturbed: false,
    });
    if generator_bound {
        r.loadgen = Some(serde_json::json!({ "cpu": { "generator_bound": true } }));
    }
    r
}

#[test]
fn overlapping_brackets_tie_and_separate_ones_rank() {
    let runs = vec![
        auto_run("a", 1, 20_000.0, Some(21_000.0), false, 50_000.0),
        auto_run("a", 2, 19_500.0, Some(20_400.0), false, 50_000.0),
        // b's bracket touches a's range: not told apart.
        auto_run("b", 1, 19_800.0, Some(20_700.0), false, 40_000.0),
        auto_run("b", 2, 19_900.0, Some(20_800.0), false, 40_000.0),
        // c is clearly below: its first unsustainable rate is below a's
        // lowest sustainable one.
        auto_run("c", 1, 18_000.0, Some(18_900.0), false, 60_000.0),
        auto_run("c", 2, 18_100.0, Some(19_000.0), false, 60_000.0),
    ];
    let a = analysis::groups(&runs)[0].answer();
    // b has the higher mean; a's range overlaps it.
    assert_eq!(a.throughput, ["b", "a"]);
    assert_eq!(a.throughput_open, None);
    let of = |n: &str| {
        a.best
            .iter()
            .find(|b| b.contestant == n)
            .unwrap()
            .capacity
            .unwrap()
    };
    assert_eq!((of("a").low, of("a").high), (19_500.0, Some(21_000.0)));
    // CPU efficiency at the highest ramp rate all three sustained (16000).
    assert_eq!(a.common, Some(analysis::Common::Rate(16_000.0)));
    assert_eq!(a.per_cpu[0].0, "c");
    assert_eq!(a.per_cpu.len(), 1);
    // The report draws the capacity curve and names the common rate.
    let tmp = TempDir::new("capacity");
    let store = store_with(&tmp.0, &runs);
    let html = std::fs::read_to_string(super::render(store.dir()).unwrap()).unwrap();
    assert!(html.contains("data-plot=\"capacity\""));
    assert!(html.contains("at 16000 req/s offered"), "common rate named");
    assert!(html.contains("19500–21000"), "a's capacity range shown");
}

#[test]
fn generator_bound_figures_are_lower_bounds_never_ranked_against_each_other() {
    let runs = vec![
        auto_run("fast", 1, 60_000.0, Some(64_000.0), true, 90_000.0),
        auto_run("faster", 1, 62_000.0, Some(65_000.0), true, 95_000.0),
        auto_run("slow", 1, 10_000.0, Some(10_400.0), false, 30_000.0),
    ];
    let a = analysis::groups(&runs)[0].answer();
    // Both generator-bound contestants are open above: not told apart.
    assert_eq!(a.throughput, ["faster", "fast"]);
    assert_eq!(a.throughput_open, Some("limited by the load generator"));
    let [text, _, _] = super::answer_cells(&a, false);
    assert!(
        text.contains("at least 62000 req/s: limited by the load generator"),
        "{text}"
    );
    // The one below them is ranked below.
    assert!(!a.throughput.contains(&"slow".to_string()));
}

#[test]
fn fixed_rates_that_everyone_sustained_separate_nobody() {
    let mut runs = Vec::new();
    for (arch, rpcs) in [("x", 10_000.0), ("y", 12_000.0)] {
        for rate in [1000.0, 2000.0] {
            let mut r = run(arch, 64, 1, rate, 2.0, rate * 2.0 / rpcs, 8 << 20);
            r.spec.load = LoadLevel::Open {
                rate,
                connections: 64,
            };
            r.key = r.spec.key();
            r.metrics.as_mut().unwrap().offered_rps = Some(rate);
            runs.push(r);
        }
    }
    let a = analysis::groups(&runs)[0].answer();
    assert_eq!(a.unseparated, Some(2000.0));
    let [text, cpu, _] = super::answer_cells(&a, false);
    assert!(text.contains("not separated"), "{text}");
    // CPU efficiency is still compared, at the highest rate: y wins.
    assert_eq!(a.common, Some(analysis::Common::Rate(2000.0)));
    assert!(cpu.starts_with("y ("), "{cpu}");
}

#[test]
fn no_memory_winner_without_a_cgroup_and_starved_runs_do_not_count() {
    let mut runs = synthetic();
    runs.retain(|r| r.status == Status::Ok);
    for r in &mut runs {
        r.unlimited = true;
    }
    let a = analysis::groups(&runs)[0].answer();
    assert!(a.memory.is_empty() && a.memory_unmeasured);
    let [_, _, memory] = super::answer_cells(&a, false);
    assert!(memory.contains("not compared"), "{memory}");
    // A starved run never meets the objective (the runner's rule), so it
    // never yields a sustainable point.
    let mut starved = run("starved", 8, 1, 50_000.0, 0.1, 0.1, 1 << 20);
    starved.metrics.as_mut().unwrap().starved_connections = 7;
    starved.metrics.as_mut().unwrap().meets_objective = false;
    runs.push(starved);
    let best = analysis::groups(&runs)[0].best();
    let s = best.iter().find(|b| b.contestant == "starved").unwrap();
    assert!(s.capacity.is_none() && s.load.is_none());
}

/// The run table shows the server's own peaks (n/a for a server that keeps
/// none) and what a background group did.
#[test]
fn runs_table_shows_server_peaks_and_background_counts() {
    let tmp = TempDir::new("peaks");
    let mut runs = synthetic();
    runs[0].background = vec![crate::runner::background::GroupCounts {
        group: "8 idle".into(),
        connected: 12,
        cut_off: 4,
        open_at_end: 8,
        responses: 4,
        ..Default::default()
    }];
    let peaks = runs[0]
        .metrics
        .as_ref()
        .unwrap()
        .server_connections_peak
        .unwrap();
    runs[1].metrics.as_mut().unwrap().server_workers_peak = None;
    let store = store_with(&tmp.0, &runs);
    let html = std::fs::read_to_string(super::render(store.dir()).unwrap()).unwrap();
    assert!(html.contains(&format!("<td>{peaks} / 2</td>")), "peaks");
    assert!(html.contains("<td>n/a</td>"), "no peaks: n/a");
    assert!(
        html.contains("background: 8 idle: 8 open at the end, 4 answered, 4 cut off"),
        "background counts"
    );
    let csv = std::fs::read_to_string(store.dir().join("summary.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains("server_connections_peak,server_workers_peak,background"));
    assert!(csv.contains("8 idle: 8 open at the end"), "{csv}");
}

#[test]
fn host_interference_is_announced_in_the_table_and_the_page() {
    let mut runs = synthetic();
    let quiet = super::answer_table(&runs);
    assert!(!quiet.contains("HOST INTERFERENCE"), "{quiet}");
    let stolen = |share: f64| crate::results::Steal {
        server: share,
        generator: share / 2.0,
        server_worst: share,
        generator_worst: share,
    };
    // Below the threshold: reported in the run, not announced.
    runs[0].metrics.as_mut().unwrap().host_steal = Some(stolen(0.05));
    assert!(!super::answer_table(&runs).contains("HOST INTERFERENCE"));
    runs[1].metrics.as_mut().unwrap().host_steal = Some(stolen(0.31));
    let text = super::answer_table(&runs);
    let line = text
        .lines()
        .find(|l| l.starts_with("HOST INTERFERENCE"))
        .expect("announced");
    assert!(
        line.contains(&format!("1 of {} runs (at most 31 %)", runs.len())),
        "{line}"
    );
    let html = super::html::page("s", &Env::default(), &runs);
    assert!(html.contains("id=\"host\""), "banner in the page");
}

#[test]
fn efficiency_disturbed_by_the_host_is_a_lower_bound_never_beaten() {
    let stolen = |share: f64| crate::results::Steal {
        server: share,
        generator: 0.0,
        server_worst: share,
        generator_worst: 0.0,
    };
    let run = |arch: &str, rep: u32, rpcs: f64, steal: f64| {
        let mut r = auto_run(arch, rep, 16_000.0, Some(17_000.0), false, rpcs);
        for s in &mut r.auto_steps {
            s.host_steal = Some(stolen(steal));
        }
        r
    };
    let mut runs = vec![
        run("a", 1, 80_000.0, 0.0),
        run("a", 2, 80_000.0, 0.005),
        // b's disturbed repetition does not drag its quiet one down.
        run("b", 1, 40_000.0, 0.0),
        run("b", 2, 20_000.0, 0.05),
        // c was measured only while the host took the CPUs.
        run("c", 1, 30_000.0, 0.03),
        run("c", 2, 30_000.0, 0.20),
    ];
    let a = analysis::groups(&runs)[0].answer();
    let of =
        |a: &analysis::Answer, n: &str| a.per_cpu_at_common.iter().find(|(c, _)| c == n).unwrap().1;
    assert_eq!(a.common, Some(analysis::Common::Rate(16_000.0)));
    assert_eq!((of(&a, "a").spread.n, of(&a, "a").lower_bound), (2, false));
    let b = of(&a, "b");
    assert_eq!(
        (b.spread.mean, b.spread.n, b.lower_bound),
        (40_000.0, 1, false)
    );
    let c = of(&a, "c");
    assert_eq!((c.spread.mean, c.lower_bound), (30_000.0, true));
    let names: Vec<&str> = a.per_cpu.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a"], "b is beaten on quiet figures");
    assert_eq!(a.per_cpu_uncompared, ["c"], "c is neither beaten nor tied");
    let text = super::answer_table(&runs);
    assert!(text.contains("not compared: c"), "{text}");
    assert!(text.contains("≥30"), "c's figure is marked: {text}");
    let html = super::html::page("s", &Env::default(), &runs);
    assert!(html.contains("not compared: c"));
    // A lower bound above everyone is a real win: the host only lowers it.
    runs.push(run("d", 1, 200_000.0, 0.15));
    runs.push(run("d", 2, 200_000.0, 0.15));
    let a = analysis::groups(&runs)[0].answer();
    let names: Vec<&str> = a.per_cpu.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["d"]);
    assert_eq!(a.per_cpu_uncompared, ["c"]);
    assert!(super::answer_table(&runs).contains("at least 200"));
}
