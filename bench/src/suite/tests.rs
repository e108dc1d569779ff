//! Suite parsing: good files, and each kind of bad one naming its line and
//! field.

use super::*;

const GOOD: &str = r#"
name = "t"
architectures = ["iterative"]
repetitions = 2
warmup = "500ms"
duration = "1s"
objective = { percentile = 99.0, latency = "10ms" }

[[workload]]
name = "hello"
path = "/hello"

[[workload]]
name = "io"
path = "/work?io_ms=5"
keep_alive = false

[load]
connections = [4, 16]
rates = [100.5]
auto = { start = 100, factor = 2 }

[limits.half]
cpus = 0.5
memory = "64M"

[[external]]
name = "ext"
command = "true {port}"
ready = "/health"
workloads = ["hello"]
"#;

fn bad(text: &str) -> SuiteError {
    Suite::parse("bad.toml", text).expect_err("must be refused")
}

/// Replaces the first occurrence of `from` in the good suite.
fn good_with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "test bug: {from:?} not in GOOD");
    GOOD.replacen(from, to, 1)
}

/// The 1-based line of the first line of GOOD-like `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

fn assert_names(e: &SuiteError, text: &str, needle: &str, field: &str) {
    let shown = e.to_string();
    assert!(shown.starts_with("bad.toml:"), "{shown}");
    assert_eq!(e.line(), Some(line_of(text, needle)), "{shown}");
    assert_eq!(e.field(), Some(field), "{shown}");
}

#[test]
fn good_file_parses_into_the_matrix() {
    let s = Suite::parse("t.toml", GOOD).unwrap();
    assert_eq!(s.name, "t");
    assert_eq!(s.warmup, Duration::from_millis(500));
    assert_eq!(s.contestants.len(), 2);
    assert_eq!(s.loads.len(), 4);
    assert_eq!(
        s.loads[2],
        LoadLevel::Open {
            rate: 100.5,
            connections: 32
        }
    );
    assert!(
        matches!(s.loads[3], LoadLevel::Auto { factor, confirm, .. } if factor == 2.0 && !confirm)
    );
    let confirmed = GOOD.replace(
        "auto = { start = 100, factor = 2 }",
        "auto = { start = 100, factor = 2, confirm = true }",
    );
    let s = Suite::parse("t.toml", &confirmed).unwrap();
    assert!(matches!(s.loads[3], LoadLevel::Auto { confirm: true, .. }));
    let s = Suite::parse("t.toml", GOOD).unwrap();
    assert_eq!(s.limits[0].0, "half");
    assert_eq!(s.limits[0].1.cpus, Some(0.5));
    assert_eq!(s.limits[0].1.memory, Some(64 << 20));
    assert!(!s.workloads[1].keep_alive);
    // iterative: 2 workloads × 4 loads; ext: only hello × 4 loads; × 2 reps.
    let runs = s.runs();
    assert_eq!(runs.len(), (2 * 4 + 4) * 2);
    let keys: std::collections::BTreeSet<_> = runs.iter().map(RunSpec::key).collect();
    assert_eq!(keys.len(), runs.len(), "keys are unique");
    assert!(keys.contains("iterative__io__c16__half__default__rep2"));
    assert!(!keys.iter().any(|k| k.starts_with("ext__io")));
}

#[test]
fn shipped_suites_parse_and_quick_has_every_architecture() {
    for (name, _) in SHIPPED {
        let s = Suite::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&s.name, name);
    }
    let quick = Suite::load("quick").unwrap();
    for arch in servers::arch::names() {
        assert!(quick.contestants.iter().any(|c| c.name() == arch), "{arch}");
    }
    let paths: Vec<_> = quick.workloads.iter().map(|w| w.path.as_str()).collect();
    assert!(paths.contains(&"/hello"));
    assert!(paths.iter().any(|p| p.contains("io_ms=")));
}

#[test]
fn unknown_architecture_names_line_and_field() {
    let text = good_with(r#"["iterative"]"#, r#"["iterative", "fork-bomb"]"#);
    let e = bad(&text);
    assert_names(&e, &text, "fork-bomb", "architectures");
    assert!(e.to_string().contains("valid names"), "{e}");
}

#[test]
fn unknown_field_is_refused() {
    let text = good_with("keep_alive = false", "keep_alive = false\nkeepalive = true");
    assert_names(&bad(&text), &text, "keepalive = true", "keepalive");
    let text = good_with("repetitions = 2", "repetitions = 2\nrepetition = 3");
    assert_names(&bad(&text), &text, "repetition = 3", "repetition");
}

#[test]
fn unknown_limit_field_is_refused() {
    let text = good_with("cpus = 0.5", "cpus = 0.5\ncpu_quota = 3");
    assert_names(&bad(&text), &text, "cpu_quota", "cpu_quota");
}

#[test]
fn bad_durations() {
    let text = good_with(r#"duration = "1s""#, r#"duration = "1 fortnight""#);
    assert_names(&bad(&text), &text, "fortnight", "duration");
    let text = good_with(r#"duration = "1s""#, r#"duration = "0s""#);
    assert_names(&bad(&text), &text, "duration = ", "duration");
    let text = good_with(r#"latency = "10ms""#, r#"latency = "ten""#);
    assert_names(&bad(&text), &text, "ten", "latency");
    // A number where a string is expected: a type error from TOML itself.
    let text = good_with(r#"warmup = "500ms""#, "warmup = 5");
    assert_names(&bad(&text), &text, "warmup = 5", "warmup");
}

#[test]
fn bad_rates_and_levels() {
    let text = good_with("rates = [100.5]", "rates = [100.5, -3.0]");
    assert_names(&bad(&text), &text, "-3.0", "load.rates");
    let text = good_with("connections = [4, 16]", "connections = [4, 0]");
    assert_names(&bad(&text), &text, "[4, 0]", "load.connections");
    let text = good_with("factor = 2", "factor = 0.5");
    assert_names(&bad(&text), &text, "factor = 0.5", "load.auto");
}

#[test]
fn bad_limits() {
    let text = good_with("cpus = 0.5", "cpus = 0.0");
    let e = bad(&text);
    assert_eq!(e.field(), Some("limits.half"), "{e}");
    assert!(e.to_string().contains("cpus"), "{e}");
    let text = good_with(r#"memory = "64M""#, r#"memory = "lots""#);
    assert_names(&bad(&text), &text, "lots", "memory");
}

#[test]
fn empty_matrices_are_refused() {
    let text = good_with(r#"["iterative"]"#, "[]").replace(
        "[[external]]\nname = \"ext\"\ncommand = \"true {port}\"\nready = \"/health\"\nworkloads = [\"hello\"]\n",
        "",
    );
    assert_names(&bad(&text), &text, "architectures = []", "architectures");
    let text = good_with(
        "connections = [4, 16]\nrates = [100.5]\nauto = { start = 100, factor = 2 }",
        "",
    );
    assert_names(&bad(&text), &text, "[load]", "load");
    let text = good_with("repetitions = 2", "repetitions = 0");
    assert_names(&bad(&text), &text, "repetitions = 0", "repetitions");
}

#[test]
fn missing_field_and_syntax_errors_name_a_line() {
    let text = good_with(r#"duration = "1s""#, "");
    let e = bad(&text);
    assert_eq!(e.field(), Some("duration"), "{e}");
    let text = good_with("[load]", "[load");
    let e = bad(&text);
    assert_eq!(e.line(), Some(line_of(&text, "[load")), "{e}");
}

#[test]
fn bad_external_and_names() {
    let text = good_with(r#"workloads = ["hello"]"#, r#"workloads = ["nope"]"#);
    assert_names(&bad(&text), &text, "nope", "external.workloads");
    let text = good_with(r#"ready = "/health""#, r#"ready = "health""#);
    assert_names(&bad(&text), &text, r#"ready = "health""#, "external.ready");
    let text = good_with(r#"name = "io""#, r#"name = "a/b""#);
    assert_names(&bad(&text), &text, "a/b", "workload.name");
}

#[test]
fn unknown_state_mode_and_bad_server_args() {
    let text = good_with("repetitions = 2", "repetitions = 2\nstates = [\"sticky\"]");
    assert_names(&bad(&text), &text, "sticky", "states");
    let text = format!("{GOOD}\n[server_args]\nprefork = [\"--workers\", \"2\"]\n");
    assert_names(&bad(&text), &text, "prefork =", "server_args.prefork");
}

#[test]
fn worker_variants_are_contestants_of_their_own() {
    let text = good_with(
        "architectures = [\"iterative\"]",
        "architectures = [\"thread-pool:4\", \"thread-pool:064\", \"prefork\"]",
    );
    let s = Suite::parse("t.toml", &text).unwrap();
    let builtins: Vec<(&str, Option<&str>, Option<usize>)> = s
        .contestants
        .iter()
        .filter(|c| c.arch().is_some())
        .map(|c| (c.name(), c.arch(), c.workers()))
        .collect();
    assert_eq!(
        builtins,
        [
            ("thread-pool:4", Some("thread-pool"), Some(4)),
            ("thread-pool:64", Some("thread-pool"), Some(64)),
            ("prefork", Some("prefork"), None),
        ]
    );
    for wrong in [
        "thread-pool:0",
        "thread-pool:x",
        "thread-pool:5000",
        "pool:4",
    ] {
        let text = good_with("[\"iterative\"]", &format!("[\"{wrong}\"]"));
        assert_names(&bad(&text), &text, wrong, "architectures");
    }
    let text = good_with("[\"iterative\"]", "[\"thread-pool:4\", \"thread-pool:4\"]");
    assert_names(&bad(&text), &text, "architectures", "architectures");
}

#[test]
fn workers_set_in_two_places_are_refused_before_anything_runs() {
    // The suite's `workers` and `--workers` in server_args.
    let text = format!(
        "{}\n[server_args]\niterative = [\"--workers\", \"2\"]\n",
        good_with("repetitions = 2", "repetitions = 2\nworkers = 4")
    );
    assert_names(&bad(&text), &text, "iterative = [", "server_args.iterative");
    // A variant's count and `--workers=N` in server_args.
    let text = format!(
        "{}\n[server_args]\nthread-pool = [\"--workers=8\"]\n",
        good_with("[\"iterative\"]", "[\"thread-pool:4\"]")
    );
    assert_names(
        &bad(&text),
        &text,
        "thread-pool = [",
        "server_args.thread-pool",
    );
    // Other arguments for a variant's architecture are fine.
    let text = format!(
        "{}\n[server_args]\nthread-pool = [\"--idle-timeout\", \"2s\"]\n",
        good_with("[\"iterative\"]", "[\"thread-pool:4\"]")
    );
    let s = Suite::parse("t.toml", &text).unwrap();
    assert_eq!(s.server_args["thread-pool"], ["--idle-timeout", "2s"]);
}

#[test]
fn several_open_loop_connection_counts() {
    let text = good_with(
        "rates = [100.5]",
        "rates = [100.5]\nopen_connections = [32, 4096]",
    );
    let s = Suite::parse("t.toml", &text).unwrap();
    let labels: Vec<String> = s.loads.iter().map(LoadLevel::label).collect();
    assert_eq!(
        labels,
        ["c4", "c16", "r100.5", "r100.5@4096", "auto", "auto@4096"]
    );
    let text = good_with("rates = [100.5]", "rates = [100.5]\nopen_connections = 64");
    let s = Suite::parse("t.toml", &text).unwrap();
    assert_eq!(s.loads[2].label(), "r100.5@64");
    for wrong in ["[]", "[8, 8]", "[0]", "\"many\""] {
        let text = good_with(
            "rates = [100.5]",
            &format!("rates = [100.5]\nopen_connections = {wrong}"),
        );
        let e = bad(&text);
        assert_eq!(
            e.line(),
            Some(line_of(&text, "open_connections")),
            "{wrong}: {e}"
        );
    }
}

#[test]
fn workload_mixes_and_generated_files() {
    let text = good_with(
        "path = \"/hello\"",
        "path = \"/hello\"\nmix = \"/hello=8,/work?cpu=10=2\"",
    );
    let s = Suite::parse("t.toml", &text).unwrap();
    let mix: Vec<(&str, u32)> = s.workloads[0]
        .mix
        .iter()
        .map(|m| (m.path.as_str(), m.weight))
        .collect();
    assert_eq!(mix, [("/hello", 8), ("/work?cpu=10", 2)]);

    let text = good_with(
        "path = \"/hello\"",
        "path = \"/file/\"\nfiles = { count = 3, size = \"128K\" }",
    );
    let s = Suite::parse("t.toml", &text).unwrap();
    let w = &s.workloads[0];
    assert_eq!(
        w.files,
        Some(Files {
            count: 3,
            size: 128 * 1024
        })
    );
    let paths: Vec<&str> = w.mix.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["/file/f00000", "/file/f00001", "/file/f00002"]);

    for (from, to, needle, field) in [
        (
            "path = \"/hello\"",
            "path = \"/hello\"\nmix = \"hello=x\"",
            "mix =",
            "workload.mix",
        ),
        (
            "path = \"/hello\"",
            "path = \"/hello\"\nfiles = { count = 3, size = \"1K\" }",
            "path = \"/hello\"",
            "workload.path",
        ),
        (
            "path = \"/hello\"",
            "path = \"/file/\"\nfiles = { count = 3, size = \"17M\" }",
            "files =",
            "workload.files",
        ),
        (
            "path = \"/hello\"",
            "path = \"/file/\"\nfiles = { count = 0, size = \"1K\" }",
            "files =",
            "workload.files",
        ),
        (
            "path = \"/hello\"",
            "path = \"/file/\"\nfiles = { count = 2, size = \"1K\" }\nmix = \"/a\"",
            "mix =",
            "workload.mix",
        ),
    ] {
        let text = good_with(from, to);
        assert_names(&bad(&text), &text, needle, field);
    }
}

#[test]
fn background_groups_parse_with_their_own_settings() {
    let text = good_with(
        "keep_alive = false\n",
        "keep_alive = false\nbackground = [{ kind = \"idle\", connections = 8 }, { kind = \"slow\", connections = 500, interval = \"2s\" }, { kind = \"load\", connections = 4, path = \"/work?cpu=1\", rate = 200 }]\n",
    );
    let s = Suite::parse("t.toml", &text).unwrap();
    assert!(s.workloads[0].background.is_empty());
    assert_eq!(
        s.workloads[1].background,
        vec![
            Background::Idle { connections: 8 },
            Background::Slow {
                connections: 500,
                interval: Duration::from_secs(2)
            },
            Background::Load {
                connections: 4,
                path: "/work?cpu=1".into(),
                rate: Some(200.0)
            },
        ]
    );
    assert_eq!(
        s.workloads[1].background[2].describe(),
        "4 on /work?cpu=1 at 200 req/s"
    );
}

#[test]
fn bad_background_groups_name_line_and_field() {
    let with = |group: &str| {
        good_with(
            "keep_alive = false\n",
            &format!("keep_alive = false\nbackground = [{group}]\n"),
        )
    };
    for (group, field) in [
        (
            "{ kind = \"sleepy\", connections = 8 }",
            "workload.background.kind",
        ),
        (
            "{ kind = \"idle\", connections = 0 }",
            "workload.background.connections",
        ),
        (
            "{ kind = \"idle\", connections = 8, rate = 5.0 }",
            "workload.background.rate",
        ),
        (
            "{ kind = \"slow\", connections = 8, path = \"/x\" }",
            "workload.background.path",
        ),
        (
            "{ kind = \"slow\", connections = 8, interval = \"0s\" }",
            "workload.background.interval",
        ),
        (
            "{ kind = \"load\", connections = 8 }",
            "workload.background.path",
        ),
        (
            "{ kind = \"load\", connections = 8, path = \"/x\", rate = -1.0 }",
            "workload.background.rate",
        ),
        (
            "{ kind = \"load\", connections = 8, path = \"x\" }",
            "workload.background.path",
        ),
    ] {
        let text = with(group);
        assert_names(&bad(&text), &text, "background = [", field);
    }
    let text = with("{ kind = \"idle\", connections = 8, colour = \"red\" }");
    assert!(bad(&text).to_string().contains("colour"), "{}", bad(&text));
}

#[test]
fn experiment_suites_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/experiments");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Suite::load(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(
        seen >= 8,
        "only {seen} experiment suites in {}",
        dir.display()
    );
}

const CLUSTER: &str = r#"
name = "c"
architectures = ["event-loop", "thread-pool"]
states = ["stateful"]
duration = "4s"
objective = { percentile = 99.0, latency = "50ms" }

[[workload]]
name = "counter"
path = "/counter"

[load]
rates = [500]
arrivals = "poisson"

[cluster]
replicas = [2, 3]
policies = ["round-robin", "affinity"]
modes = ["http", "handoff"]

[[cluster.event]]
at = "2s"
replica = 2
action = "restart"

[[cluster.event]]
at = "1s"
replica = 2
action = "kill"

[[cluster.event]]
at = "3s"
replica = 1
action = "slow"
cpus = 0.1
"#;

fn cluster_with(from: &str, to: &str) -> String {
    assert!(CLUSTER.contains(from), "test bug: {from:?} not in CLUSTER");
    CLUSTER.replacen(from, to, 1)
}

#[test]
fn cluster_dimensions_and_events_parse() {
    use super::cluster::{Action, Mode};
    let s = Suite::parse("c.toml", CLUSTER).unwrap();
    assert_eq!(s.arrivals, loadgen::Arrivals::Poisson);
    let c = s.cluster.as_ref().unwrap();
    assert_eq!(c.replicas, [2, 3]);
    assert_eq!(c.modes, [Mode::Http, Mode::Handoff]);
    assert_eq!(
        (c.rise, c.fall, c.check_interval),
        (2, 2, Duration::from_millis(200))
    );
    // Sorted by time, whatever the file's order.
    let actions: Vec<Action> = c.events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [Action::Kill, Action::Restart, Action::Slow { cpus: 0.1 }]
    );
    assert_eq!(c.events[0].at, Duration::from_secs(1));
    // 2 architectures × 2 replica counts × 2 policies × 2 modes.
    let runs = s.runs();
    assert_eq!(runs.len(), 16);
    let keys: std::collections::BTreeSet<_> = runs.iter().map(RunSpec::key).collect();
    assert_eq!(keys.len(), 16, "keys are unique");
    assert!(
        keys.contains("event-loop-x3-affinity-handoff__counter__r500__none__stateful__rep1"),
        "{keys:?}"
    );
    // A suite without a cluster keeps its keys and uniform arrivals.
    let plain = Suite::parse("t.toml", GOOD).unwrap();
    assert!(plain.cluster.is_none() && plain.runs().iter().all(|r| r.topology.is_none()));
    assert_eq!(plain.arrivals, loadgen::Arrivals::Uniform);
}

#[test]
fn bad_clusters_name_line_and_field() {
    let cases = [
        ("\"affinity\"]", "\"sticky\"]", "sticky", "cluster.policies"),
        ("\"handoff\"]", "\"teleport\"]", "teleport", "cluster.modes"),
        (
            "replicas = [2, 3]",
            "replicas = [2, 0]",
            "replicas = [2, 0]",
            "cluster.replicas",
        ),
        (
            "at = \"3s\"",
            "at = \"4s\"",
            "at = \"4s\"",
            "cluster.event.at",
        ),
        (
            "replica = 1",
            "replica = 3",
            "replica = 3",
            "cluster.event.replica",
        ),
        (
            "action = \"slow\"",
            "action = \"melt\"",
            "melt",
            "cluster.event.action",
        ),
        ("cpus = 0.1", "cpus = 0", "cpus = 0", "cluster.event.cpus"),
        (
            "arrivals = \"poisson\"",
            "arrivals = \"bursty\"",
            "bursty",
            "load.arrivals",
        ),
    ];
    for (from, to, needle, field) in cases {
        let text = cluster_with(from, to);
        assert_names(&bad(&text), &text, needle, field);
    }
    // Events must make sense in order: a restart of a running replica, a
    // kill of a killed one, a slow event without its speed.
    let text = cluster_with("at = \"2s\"", "at = \"500ms\"");
    let e = bad(&text);
    assert_eq!(e.field(), Some("cluster.event"), "{e}");
    assert!(e.to_string().contains("it is running"), "{e}");
    let text = cluster_with("action = \"restart\"", "action = \"kill\"");
    assert!(bad(&text).to_string().contains("killed and not restarted"));
    let text = cluster_with("cpus = 0.1\n", "");
    assert_eq!(bad(&text).field(), Some("cluster.event.cpus"));
    // Events need fixed loads; replicas are built-in architectures.
    let text = cluster_with("rates = [500]", "auto = { start = 100 }");
    let e = bad(&text);
    assert!(e.to_string().contains("fixed load levels"), "{e}");
    let text =
        format!("{CLUSTER}\n[[external]]\nname = \"x\"\ncommand = \"true\"\nready = \"/\"\n");
    assert_eq!(bad(&text).field(), Some("external"));
}

/// `maxconn` reaches the http and splice fronts' topologies (a list is a
/// dimension of those fronts only); it is refused out of range, listed
/// twice, or with only the handoff mode, which cannot keep it, naming the
/// line and the field.
#[test]
fn cluster_maxconn_is_a_dimension_of_the_http_and_splice_fronts() {
    use super::cluster::MaxConn;
    let s = Suite::parse("c.toml", CLUSTER).unwrap();
    assert!(s.cluster.as_ref().unwrap().maxconn.is_empty());
    let cells = s.cluster.as_ref().unwrap().cells();
    assert_eq!(cells.len(), 8);
    assert!(cells.iter().all(|t| t.maxconn.is_none()));
    let modes = "modes = [\"http\", \"handoff\"]";
    let with = |value: &str| cluster_with(modes, &format!("{modes}\nmaxconn = {value}"));
    let one = Suite::parse("c.toml", &with("2")).unwrap();
    assert_eq!(
        one.cluster.as_ref().unwrap().maxconn,
        [Some(MaxConn::Connections(2))]
    );
    let both = Suite::parse("c.toml", &with("[\"none\", 2]")).unwrap();
    let c = both.cluster.as_ref().unwrap();
    assert_eq!(c.maxconn, [None, Some(MaxConn::Connections(2))]);
    // Per replica count: 2 http fronts × 2 limits + 2 handoff fronts.
    let cells = c.cells();
    assert_eq!(cells.len(), 12);
    let limited: Vec<String> = cells
        .iter()
        .filter(|t| t.maxconn.is_some())
        .map(|t| t.label())
        .collect();
    assert_eq!(limited.len(), 4);
    assert!(
        limited.contains(&"x3-affinity-http-maxconn2".to_string()),
        "{limited:?}"
    );
    let keys: std::collections::BTreeSet<_> = both.runs().iter().map(RunSpec::key).collect();
    assert_eq!(keys.len(), both.runs().len(), "keys are unique");
    for bad_value in ["0", "[2, 2]", "[]", "\"many\"", "1.5"] {
        let text = with(bad_value);
        assert_names(
            &bad(&text),
            &text,
            &format!("maxconn = {bad_value}"),
            "cluster.maxconn",
        );
    }
    let handoff = cluster_with(modes, "modes = [\"handoff\"]\nmaxconn = 2");
    let e = bad(&handoff);
    assert_names(&e, &handoff, "maxconn = 2", "cluster.maxconn");
    assert!(e.to_string().contains("http and splice"), "{e}");
    let splice = cluster_with(modes, "modes = [\"splice\", \"handoff\"]\nmaxconn = 2");
    let cells = Suite::parse("c.toml", &splice)
        .unwrap()
        .cluster
        .unwrap()
        .cells();
    let limited: Vec<String> = cells
        .iter()
        .filter(|t| t.maxconn.is_some())
        .map(|t| t.label())
        .collect();
    assert_eq!(limited.len(), 4, "the splice fronts only: {limited:?}");
    assert!(
        limited.iter().all(|l| l.contains("-splice-maxconn2")),
        "{limited:?}"
    );
}

/// `maxconn = "workers"` gives each bounded contestant's replicas its
/// worker count and the others no limit; a bounded contestant whose count
/// the suite does not give is refused, naming the field.
#[test]
fn cluster_maxconn_workers_follows_each_contestant() {
    let modes = "modes = [\"http\", \"handoff\"]";
    let text = cluster_with(modes, &format!("{modes}\nmaxconn = \"workers\""));
    let e = bad(&text);
    assert_names(&e, &text, "maxconn = \"workers\"", "cluster.maxconn");
    assert!(e.to_string().contains("thread-pool:N"), "{e}");
    for (set, want) in [
        ("workers = 4", 4),
        ("[server_args]\nthread-pool = [\"--workers\", \"3\"]", 3),
        ("[server_args]\nthread-pool = [\"--workers=5\"]", 5),
    ] {
        let counted = text.replacen("duration = \"4s\"", &format!("duration = \"4s\"\n{set}"), 1);
        let counted = if set.starts_with('[') {
            // A table goes after the top-level keys.
            text.replacen("[[workload]]", &format!("{set}\n\n[[workload]]"), 1)
        } else {
            counted
        };
        let s = Suite::parse("c.toml", &counted).unwrap_or_else(|e| panic!("{e}"));
        let limits: std::collections::BTreeSet<(String, Option<u32>)> = s
            .runs()
            .iter()
            .filter(|r| r.key().contains("-http"))
            .map(|r| (r.contestant.name().to_string(), s.maxconn_of(r)))
            .collect();
        assert_eq!(
            limits.into_iter().collect::<Vec<_>>(),
            [
                ("event-loop".to_string(), None),
                ("thread-pool".to_string(), Some(want))
            ],
            "{set}"
        );
    }
    // A variant names its own count; the iterative server has one thread.
    let variants = text.replacen(
        "[\"event-loop\", \"thread-pool\"]",
        "[\"iterative\", \"thread-pool:8\"]",
        1,
    );
    let s = Suite::parse("c.toml", &variants).unwrap_or_else(|e| panic!("{e}"));
    let mut limits: Vec<Option<u32>> = s.runs().iter().map(|r| s.maxconn_of(r)).collect();
    limits.sort();
    limits.dedup();
    assert_eq!(limits, [None, Some(1), Some(8)], "handoff: none");
}

const MIGRATION: &str = r#"
name = "m"
architectures = ["event-loop"]
states = ["stateful", "soft"]
duration = "4s"
objective = { percentile = 99.0, latency = "50ms" }

[[workload]]
name = "counter"
path = "/counter"

[load]
rates = [300, 3000]

[cluster]
replicas = 3
policies = ["affinity"]
modes = ["http"]
idle_sessions = 500

[[cluster.event]]
at = "1s"
replica = 1
action = "migrate"
to = 2
method = ["pre-copy", "stop-and-copy", "post-copy"]
threshold = 10
bandwidth = "20k"
"#;

/// A migrate event's method list is a dimension; its settings reach each
/// run's event, which takes the run's method.
#[test]
fn migrate_events_parse_and_their_methods_are_a_dimension() {
    use super::cluster::Action;
    use dispatch::migrate::Method;
    let s = Suite::parse("m.toml", MIGRATION).unwrap();
    let c = s.cluster.as_ref().unwrap();
    assert_eq!(c.methods, Method::ALL);
    assert_eq!(c.idle_sessions, 500);
    // 2 states × 2 rates × 3 methods.
    let runs = s.runs();
    assert_eq!(runs.len(), 12);
    let keys: std::collections::BTreeSet<_> = runs.iter().map(RunSpec::key).collect();
    assert_eq!(keys.len(), 12, "keys are unique: {keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.contains("x3-affinity-http-post-copy")),
        "{keys:?}"
    );
    for run in &runs {
        let topology = run.topology.as_ref().unwrap();
        let events = c.events_of(topology);
        assert_eq!(
            events[0].action,
            Action::Migrate {
                to: 2,
                method: topology.migration,
                threshold: 10,
                rounds: 8,
                bandwidth: Some(20_000),
            }
        );
        assert!(topology.migration.is_some());
    }
    // One method: no dimension, the event carries it.
    let one = MIGRATION.replace(
        "[\"pre-copy\", \"stop-and-copy\", \"post-copy\"]",
        "\"post-copy\"",
    );
    let s = Suite::parse("m.toml", &one).unwrap();
    let c = s.cluster.as_ref().unwrap();
    assert!(c.methods.is_empty());
    assert_eq!(s.runs().len(), 4);
    assert!(matches!(
        c.events[0].action,
        Action::Migrate {
            method: Some(Method::PostCopy),
            ..
        }
    ));
}

#[test]
fn bad_migrations_name_line_and_field() {
    let with = |from: &str, to: &str| {
        assert!(MIGRATION.contains(from), "test bug: {from:?}");
        MIGRATION.replacen(from, to, 1)
    };
    let cases = [
        ("to = 2", "to = 1", "to = 1", "cluster.event.to"),
        ("to = 2", "to = 4", "to = 4", "cluster.event.to"),
        (
            "\"post-copy\"]",
            "\"teleport\"]",
            "teleport",
            "cluster.event.method",
        ),
        (
            "\"post-copy\"]",
            "\"pre-copy\"]",
            "method",
            "cluster.event.method",
        ),
        (
            "threshold = 10",
            "threshold = 0",
            "threshold = 0",
            "cluster.event.threshold",
        ),
        (
            "bandwidth = \"20k\"",
            "bandwidth = \"fast\"",
            "fast",
            "cluster.event.bandwidth",
        ),
        (
            "idle_sessions = 500",
            "idle_sessions = -1",
            "idle_sessions = -1",
            "cluster.idle_sessions",
        ),
        (
            "action = \"migrate\"",
            "action = \"kill\"",
            "to = 2",
            "cluster.event.to",
        ),
    ];
    for (from, to, needle, field) in cases {
        let text = with(from, to);
        assert_names(&bad(&text), &text, needle, field);
    }
    // Only the built-in http proxy with affinity can migrate.
    for (from, to) in [
        ("policies = [\"affinity\"]", "policies = [\"round-robin\"]"),
        ("modes = [\"http\"]", "modes = [\"http\", \"splice\"]"),
    ] {
        let e = bad(&with(from, to));
        assert_eq!(e.field(), Some("cluster.event"), "{e}");
        assert!(
            e.to_string().contains("only the built-in http proxy"),
            "{e}"
        );
    }
    // Stateless replicas hold nothing to migrate.
    let e = bad(&with(
        "states = [\"stateful\", \"soft\"]",
        "states = [\"stateless\"]",
    ));
    assert!(e.to_string().contains("session table"), "{e}");
    // A destination killed before the migration.
    let killed = with(
        "[[cluster.event]]\nat = \"1s\"",
        "[[cluster.event]]\nat = \"500ms\"\nreplica = 2\naction = \"kill\"\n\n[[cluster.event]]\nat = \"1s\"",
    );
    let e = bad(&killed);
    assert!(e.to_string().contains("destination was killed"), "{e}");
    // Two events listing several methods.
    let twice = format!(
        "{MIGRATION}\n[[cluster.event]]\nat = \"2s\"\nreplica = 2\naction = \"migrate\"\nto = 3\nmethod = [\"pre-copy\", \"post-copy\"]\n"
    );
    assert!(bad(&twice).to_string().contains("only one migrate event"));
}

#[test]
fn external_dispatchers_are_fronts_of_their_own() {
    use super::cluster::Front;
    let s = Suite::load("cluster").unwrap();
    let c = s.cluster.as_ref().unwrap();
    // 3 states × (2 policies × 3 modes + 2 external dispatchers).
    assert_eq!(s.runs().len(), 3 * (2 * 3 + 2));
    let haproxy = c.external("haproxy-tcp").unwrap();
    let addrs = [
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9002".parse().unwrap(),
    ];
    let config = haproxy.fill_replicas(haproxy.external.config.as_ref().unwrap(), &addrs);
    assert!(
        config.contains("    server r1 127.0.0.1:9001 check inter 100ms rise 2 fall 2\n    server r2 127.0.0.1:9002 check"),
        "{config}"
    );
    assert!(s
        .runs()
        .iter()
        .any(|r| r.topology.as_ref().is_some_and(|t| t.front
            == Front::External {
                name: "haproxy-http".into()
            })));

    let front = |name: &str, config: &str, replica: &str| {
        format!(
            "{CLUSTER}\n[[cluster.dispatcher]]\nname = \"{name}\"\ncommand = \"haproxy -f {{config}}\"\nready = \"/health\"\nreplica = \"{replica}\"\nconfig = \"{config}\"\n"
        )
    };
    assert!(Suite::parse("c.toml", &front("ha", "x {replicas}", "server {replica}")).is_ok());
    let text = front("ha", "no replicas here", "server {replica}");
    assert_names(
        &bad(&text),
        &text,
        "replica = \"",
        "cluster.dispatcher.replica",
    );
    let text = front("ha", "{replicas}", "server nowhere");
    assert_names(
        &bad(&text),
        &text,
        "replica = \"",
        "cluster.dispatcher.replica",
    );
    let text = front("http", "{replicas}", "server {replica}");
    assert_names(
        &bad(&text),
        &text,
        "name = \"http\"",
        "cluster.dispatcher.name",
    );
}

#[test]
fn claims_parse_and_bad_ones_name_line_and_field() {
    let with = |claim: &str| format!("{GOOD}\n[[claim]]\n{claim}\n");
    let good = with(
        "says = \"iterative is quick\"\nmetric = \"p99\"\nof = { contestant = \"iterative\", workload = \"hello\", load = \"c4\" }\nat_most = 10.0\ntolerance = 0.2",
    );
    let s = Suite::parse("t.toml", &good).unwrap();
    assert_eq!(s.claims.len(), 1);
    assert_eq!(s.claims[0].metric, crate::claims::Metric::P99);
    let cases = [
        ("metric = \"speed\"", "speed", "claim.metric"),
        ("of = { contestant = \"nginx\" }", "nginx", "claim.of"),
        ("of = { load = \"c5\" }", "c5", "claim.of"),
        ("than = { workload = \"nope\" }", "nope", "claim.than"),
        ("than_metric = \"p50\"", "than_metric", "claim.than_metric"),
    ];
    for (line, needle, field) in cases {
        let key = line.split(' ').next().unwrap();
        let claim = [
            "says = \"x\"",
            "metric = \"p99\"",
            "of = { contestant = \"iterative\" }",
            "at_most = 1.0",
        ]
        .iter()
        .map(|l| if l.starts_with(key) { line } else { l })
        .collect::<Vec<_>>()
        .join("\n");
        let claim = if claim.contains(line) {
            claim
        } else {
            format!("{claim}\n{line}")
        };
        let text = with(&claim);
        assert_names(&bad(&text), &text, needle, field);
    }
    let text = with("says = \"x\"\nmetric = \"p99\"\nof = { contestant = \"iterative\" }");
    assert!(bad(&text).to_string().contains("needs a bound"));
    let text = with("says = \"x\"\nmetric = \"p99\"\nof = {}\nat_most = 1.0\ntolerance = 1.5");
    assert_eq!(bad(&text).field(), Some("claim.tolerance"));
    // A fast run must still hold every cluster event.
    let text = format!("{CLUSTER}\n[fast]\nduration = \"2s\"\n");
    assert_names(&bad(&text), &text, "duration = \"2s\"", "fast.duration");
    let text = format!("{CLUSTER}\n[fast]\nduration = \"3500ms\"\nwarmup = \"100ms\"\n");
    let fast = Suite::parse("c.toml", &text).unwrap().fast();
    assert_eq!(
        (
            fast.duration,
            fast.warmup,
            fast.repetitions,
            fast.name.as_str()
        ),
        (
            Duration::from_millis(3500),
            Duration::from_millis(100),
            1,
            "c-fast"
        )
    );
}
