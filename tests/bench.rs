//! `serverlab bench` and `serverlab report` end to end, through the binary:
//! a tiny suite (two architectures, one workload, one second each, plus an
//! external contestant that exits at once), Ctrl-C then `--resume`, and the
//! report opened in headless Chromium.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = r#"
name = "tiny"
architectures = ["iterative", "thread-pool"]
warmup = "200ms"
duration = "1s"
allow_unlimited = true
objective = { percentile = 99.0, latency = "100ms" }

[[workload]]
name = "hello"
path = "/hello"

[load]
connections = [4]

[[external]]
name = "quitter"
command = "sh -c 'echo giving up at once; exit 3'"
ready = "/health"
ready_timeout = "3s"
"#;

/// A temp folder removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p =
            std::env::temp_dir().join(format!("serverlab-bench-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn serverlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_serverlab"));
    c.stdin(Stdio::null());
    c
}

/// Waits for `child` with a deadline, reading its output meanwhile (a full
/// pipe would block it); kills it (and fails) if it hangs.
fn wait_bounded(child: Child, limit: Duration) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: killing our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = rx.recv_timeout(Duration::from_secs(10));
            panic!(
                "timed out after {limit:?}; stderr: {}",
                out.ok()
                    .and_then(Result::ok)
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            );
        }
    }
}

fn run_bench(args: &[&str], limit: Duration) -> Output {
    let child = serverlab()
        .arg("bench")
        .args(args)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, limit)
}

/// The one results folder under `out`.
fn results_dir(out: &Path) -> PathBuf {
    let dirs: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn run_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn status_ok(s: &ExitStatus, out: &Output) {
    assert!(
        s.success(),
        "exit {s:?}; stderr: {}; stdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn tiny_suite_end_to_end() {
    let tmp = Tmp::new("e2e");
    let suite = tmp.0.join("tiny.toml");
    std::fs::write(&suite, TINY).unwrap();
    let out = tmp.0.join("results");
    let o = run_bench(
        &[suite.to_str().unwrap(), "--out", out.to_str().unwrap()],
        Duration::from_secs(90),
    );
    status_ok(&o.status, &o);
    let dir = results_dir(&out);
    assert!(dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("tiny-"));

    // env.json names the machine and the build.
    let env = json(&dir.join("env.json"));
    for field in ["kernel", "cpu_model", "cgroup_version", "commit", "rustc"] {
        assert!(
            env[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {env}"
        );
    }
    assert!(env["cores"].as_u64().unwrap() >= 1);

    // One JSON per run: two measured, the quitter recorded as failed.
    let runs = run_files(&dir, "json");
    assert_eq!(runs.len(), 3, "{runs:?}");
    for r in &runs {
        let v = json(r);
        let key = v["key"].as_str().unwrap();
        assert_eq!(r.file_stem().unwrap().to_str().unwrap(), key);
        if key.starts_with("quitter") {
            assert_eq!(v["status"], "failed", "{v}");
            let reason = v["reason"].as_str().unwrap();
            assert!(reason.contains("giving up at once"), "{reason}");
        } else {
            assert_eq!(v["status"], "ok", "{key}: {}", v["reason"]);
            let m = &v["metrics"];
            assert!(m["requests"].as_u64().unwrap() > 0, "{key}: {m}");
            assert!(m["throughput_rps"].as_f64().unwrap() > 0.0);
            assert!(!m["spectrum"].as_array().unwrap().is_empty());
            assert!(v["histogram"].as_str().is_some_and(|h| !h.is_empty()));
            // Server and generator on disjoint CPUs (when there are two).
            let cpus = |k: &str| -> Vec<u64> {
                v["placement"][k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap())
                    .collect()
            };
            let (server, generator) = (cpus("server_cpus"), cpus("generator_cpus"));
            assert!(
                !server.is_empty() && !generator.is_empty(),
                "{}",
                v["placement"]
            );
            if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
                assert!(
                    server.iter().all(|c| !generator.contains(c)),
                    "{}",
                    v["placement"]
                );
            }
            assert!(v["server_stats"]["requests"].as_u64().unwrap() > 0, "{key}");
            if v["unlimited"] == false {
                // With a cgroup, the measured window's CPU time is known.
                assert!(m["server_cpu_s"].as_f64().unwrap() > 0.0, "{key}: {m}");
            }
        }
    }
    // A .hgrm per measured run, in the standard 4-column layout.
    let hgrms = run_files(&dir, "hgrm");
    assert_eq!(hgrms.len(), 2);
    let h = std::fs::read_to_string(&hgrms[0]).unwrap();
    assert!(h.trim_start().starts_with("Value"), "{h}");
    assert!(h.contains("#[Mean"), "{h}");

    let csv = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"answer\"") && html.contains("<svg"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("thread-pool") && stdout.contains("iterative"),
        "{stdout}"
    );

    // `report` re-renders; `--compare` matches the folder with itself.
    std::fs::remove_file(dir.join("report.html")).unwrap();
    let r = wait_bounded(
        serverlab()
            .arg("report")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    status_ok(&r.status, &r);
    assert!(dir.join("report.html").is_file());
    let c = wait_bounded(
        serverlab()
            .args(["report", "--compare"])
            .arg(&dir)
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(30),
    );
    status_ok(&c.status, &c);
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        text.contains("iterative__hello__c4") && text.contains("+0.0%"),
        "{text}"
    );
}

#[test]
fn bad_suite_is_refused_before_anything_runs() {
    let tmp = Tmp::new("bad");
    let suite = tmp.0.join("bad.toml");
    std::fs::write(
        &suite,
        TINY.replace("\"iterative\",", "\"iterative\", \"no-such-arch\","),
    )
    .unwrap();
    let out = tmp.0.join("results");
    let o = run_bench(
        &[suite.to_str().unwrap(), "--out", out.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml:3: field `architectures`"), "{err}");
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn only_that_matches_nothing_is_an_error_and_writes_nothing() {
    let tmp = Tmp::new("only");
    let suite = tmp.0.join("tiny.toml");
    std::fs::write(&suite, TINY).unwrap();
    let out = tmp.0.join("results");
    let o = run_bench(
        &[
            suite.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--only",
            "no-such-run",
        ],
        Duration::from_secs(30),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--only \"no-such-run\" matches no run"),
        "{err}"
    );
    assert!(!out.exists(), "nothing was written");
}

/// Runs the suite `text` to the end (it must succeed) and returns its run
/// files, parsed, in key order; the folder goes when the `Tmp` does.
fn run_suite_text(tag: &str, text: &str) -> (Tmp, Vec<serde_json::Value>) {
    let tmp = Tmp::new(tag);
    let suite = tmp.0.join(format!("{tag}.toml"));
    std::fs::write(&suite, text).unwrap();
    let out = tmp.0.join("results");
    let o = run_bench(
        &[suite.to_str().unwrap(), "--out", out.to_str().unwrap()],
        Duration::from_secs(120),
    );
    status_ok(&o.status, &o);
    let runs = run_files(&results_dir(&out), "json")
        .iter()
        .map(|p| json(p))
        .collect();
    (tmp, runs)
}

/// A worker-count variant runs its architecture with its own workers, and
/// a suite's cpuset is honoured — the server sees both CPUs, not the one
/// the runner would pin it to — with a note that it shares the generator's.
#[test]
fn worker_variants_and_a_shared_cpuset_are_honoured() {
    let (_tmp, runs) = run_suite_text(
        "variants",
        r#"
name = "variants"
architectures = ["thread-pool:3"]
warmup = "200ms"
duration = "1s"
allow_unlimited = true
objective = { percentile = 99.0, latency = "100ms" }
[[workload]]
name = "hello"
path = "/hello"
[load]
connections = [4]
[limits.both]
cpuset = "0-1"
"#,
    );
    assert_eq!(runs.len(), 1, "{runs:?}");
    let v = &runs[0];
    assert_eq!(v["status"], "ok", "{}", v["reason"]);
    assert!(
        v["key"].as_str().unwrap().starts_with("thread-pool:3__"),
        "{}",
        v["key"]
    );
    assert_eq!(
        v["server_stats"]["configured_workers"], 3,
        "{}",
        v["server_stats"]
    );
    assert_eq!(v["metrics"]["server_workers_peak"], 3, "{}", v["metrics"]);
    let notes = v["notes"].to_string();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        assert!(notes.contains("compete"), "{notes}");
    }
}

/// Four idle keep-alive clients in the background hold a 2-worker pool:
/// the measured clients are starved, the run says so, the group's counts
/// show two of the four answered, and the server's peaks — read from its
/// stats file while it could answer nobody — show both workers held. An
/// event loop beside the same group serves everyone.
#[test]
fn idle_background_clients_hold_a_bounded_pool() {
    let (_tmp, runs) = run_suite_text(
        "background",
        r#"
name = "background"
architectures = ["thread-pool:2", "event-loop"]
warmup = "200ms"
duration = "1s"
allow_unlimited = true
objective = { percentile = 99.0, latency = "200ms" }
[server_args]
"thread-pool" = ["--idle-timeout", "30s"]
"event-loop" = ["--idle-timeout", "30s"]
[[workload]]
name = "hello"
path = "/hello"
keep_alive = false
background = [{ kind = "idle", connections = 4 }]
[load]
rates = [100]
open_connections = 4
"#,
    );
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (events, pool) = (&runs[0], &runs[1]);
    assert!(pool["key"].as_str().unwrap().starts_with("thread-pool:2"));
    let group = &pool["background"][0];
    assert_eq!(group["group"], "4 idle", "{group}");
    assert_eq!(group["open_at_end"], 4, "{group}");
    assert_eq!(group["responses"], 2, "two workers, two answers: {group}");
    assert_eq!(group["cut_off"], 0, "{group}");
    let m = &pool["metrics"];
    assert_eq!(m["meets_objective"], false, "{m}");
    assert!(m["starved_connections"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["server_workers_peak"], 2, "{m}");
    assert_eq!(m["server_connections_peak"], 2, "both workers held: {m}");

    let group = &events["background"][0];
    assert_eq!(group["responses"], 4, "{group}");
    let m = &events["metrics"];
    assert_eq!(m["meets_objective"], true, "{m}");
    assert!(
        m["server_connections_peak"].as_u64().unwrap() >= 5,
        "4 idle and a probe at least: {m}"
    );
}

/// Ctrl-C twice (the second exits at once) still leaves no run folder, no
/// container and no server behind.
#[test]
fn a_second_interrupt_exits_at_once_and_leaves_nothing() {
    let tmp = Tmp::new("twice");
    let suite = tmp.0.join("tiny.toml");
    std::fs::write(
        &suite,
        TINY.replace("duration = \"1s\"", "duration = \"20s\""),
    )
    .unwrap();
    // Run folders are made under TMPDIR: a private one shows what is left.
    let scratch = tmp.0.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let child = serverlab()
        .arg("bench")
        .arg(&suite)
        .args(["--quiet", "--out"])
        .arg(tmp.0.join("results"))
        .env("TMPDIR", &scratch)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait (bounded) until a run is in progress: its folder exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&scratch).unwrap().next().is_none() {
        assert!(Instant::now() < deadline, "no run started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..2 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = wait_bounded(child, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("exiting now"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Nor its folder in memory (the server's stats file).
    let in_memory: Vec<_> = std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("serverlab-run-{pid}s")))
        .collect();
    assert!(in_memory.is_empty(), "left in /dev/shm: {in_memory:?}");
    // No server of that runner still answers: its container went with it.
    let cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|m| std::fs::read_dir(m.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("serverlab") && n.contains(&format!("-{pid}s")))
        .collect();
    assert!(cgroups.is_empty(), "{cgroups:?}");
}

#[test]
fn interrupt_then_resume_loses_nothing() {
    let tmp = Tmp::new("resume");
    let suite = tmp.0.join("tiny.toml");
    // Six runs of about 1.5 s each: time to interrupt in the middle.
    let text = TINY
        .replace("connections = [4]", "connections = [2, 4, 8]")
        .replace("[[external]]", "[[unused]]")
        .split("[[unused]]")
        .next()
        .unwrap()
        .to_string();
    std::fs::write(&suite, &text).unwrap();
    let out = tmp.0.join("results");
    let child = serverlab()
        .arg("bench")
        .arg(&suite)
        .args(["--quiet", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first finished run, then press Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dir = loop {
        let found = std::fs::read_dir(&out)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path());
        if let Some(dir) = found {
            if dir.join("runs").is_dir() && !run_files(&dir, "json").is_empty() {
                break dir;
            }
        }
        assert!(Instant::now() < deadline, "no run finished in time");
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(
        o.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("--resume"), "{stdout}");
    let kept = run_files(&dir, "json");
    assert!(!kept.is_empty() && kept.len() < 6, "{kept:?}");
    let before: Vec<String> = kept
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let temp_left = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp"));
    assert!(!temp_left, "no half-written run");

    // No suite argument: the folder's own suite.toml is used.
    let o = run_bench(
        &["--resume", dir.to_str().unwrap()],
        Duration::from_secs(90),
    );
    status_ok(&o.status, &o);
    let all = run_files(&dir, "json");
    assert_eq!(all.len(), 6, "{all:?}");
    let names: std::collections::BTreeSet<String> = all
        .iter()
        .map(|p| json(p)["suite"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "one suite name across the resume: {names:?}"
    );
    for (p, text) in kept.iter().zip(&before) {
        assert_eq!(
            &std::fs::read_to_string(p).unwrap(),
            text,
            "{} kept as it was",
            p.display()
        );
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("{} already there", kept.len())),
        "{stdout}"
    );
}

#[test]
#[cfg_attr(
    not(serverlab_chromium),
    ignore = "needs /usr/bin/chromium (apt-get install chromium; .ci/run does)"
)]
fn report_renders_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(chromium.exists(), "the chromium build.rs found is gone");
    let tmp = Tmp::new("chromium");
    let suite = tmp.0.join("tiny.toml");
    std::fs::write(&suite, TINY).unwrap();
    let out = tmp.0.join("results");
    let o = run_bench(
        &[
            suite.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--only",
            "thread-pool",
        ],
        Duration::from_secs(60),
    );
    status_ok(&o.status, &o);
    let report = results_dir(&out).join("report.html");
    let profile = tmp.0.join("profile");
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", report.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(child, Duration::from_secs(60));
    assert!(
        o.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dom = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The page has no scripts: any console message at all is a problem.
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let figures = dom.matches("<figure class=\"plot\"").count();
    assert!(figures >= 5, "{figures} plots in the DOM");
    for chunk in dom.split("<figure class=\"plot\"").skip(1) {
        let figure = chunk.split("</figure>").next().unwrap();
        assert!(
            figure.contains("<svg"),
            "a plot without its svg: {}",
            &figure[..figure.len().min(200)]
        );
    }
    assert!(dom.contains("The answer"));
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root to make a memory-limited cgroup"
)]
fn oom_killed_server_is_recorded_and_the_suite_goes_on() {
    common::still_root();
    let tmp = Tmp::new("oom");
    let suite = tmp.0.join("oom.toml");
    // 200 clients each waiting for a 1 MiB body: far more than 24 MiB.
    std::fs::write(
        &suite,
        r#"
name = "oom"
architectures = ["thread-per-request", "event-loop"]
duration = "1s"
allow_unlimited = true
objective = { percentile = 99.0, latency = "100ms" }
[[workload]]
name = "big"
path = "/work?bytes=1048576&io_ms=200"
[load]
connections = [200]
[limits.tiny]
memory = "24M"
"#,
    )
    .unwrap();
    let out = tmp.0.join("results");
    let o = run_bench(
        &[suite.to_str().unwrap(), "--out", out.to_str().unwrap()],
        Duration::from_secs(90),
    );
    status_ok(&o.status, &o);
    let dir = results_dir(&out);
    let runs = run_files(&dir, "json");
    assert_eq!(runs.len(), 2, "the suite went on after the OOM kill");
    let v = json(
        &runs
            .iter()
            .find(|p| p.to_string_lossy().contains("thread-per-request"))
            .unwrap()
            .clone(),
    );
    assert_ne!(
        v["unlimited"], true,
        "root, yet the sandbox could not enforce limits: {}",
        v["reason"]
    );
    assert_eq!(v["status"], "oom", "{}", v["reason"]);
    assert!(v["accounting"]["oom_kills"].as_u64().unwrap() >= 1);
    assert!(dir.join("report.html").is_file());
}

#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_setpriv)),
    ignore = "needs root and /usr/bin/setpriv to run as an unprivileged user"
)]
fn without_cgroups_runs_are_unlimited_only_when_allowed_and_say_so() {
    // Runs the binary as an unprivileged user, who may not make cgroups.
    common::still_root();
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(setpriv.exists(), "the setpriv build.rs found is gone");
    use std::os::unix::fs::PermissionsExt;
    let tmp = Tmp::new("unlimited");
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let strict = tmp.0.join("strict.toml");
    let lenient = tmp.0.join("lenient.toml");
    let one_run = TINY.replace("[\"iterative\", \"thread-pool\"]", "[\"iterative\"]");
    let one_run = one_run.split("[[external]]").next().unwrap().to_string();
    std::fs::write(
        &strict,
        one_run.replace("allow_unlimited = true", "allow_unlimited = false"),
    )
    .unwrap();
    std::fs::write(&lenient, &one_run).unwrap();
    let out = tmp.0.join("results");
    let as_nobody = |suite: &Path| {
        let child = Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_serverlab"))
            .arg("bench")
            .arg(suite)
            .args(["--quiet", "--out"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_bounded(child, Duration::from_secs(60))
    };
    let o = as_nobody(&strict);
    assert!(
        !o.status.success(),
        "the test's premise does not hold: user 65534 may make cgroups here (a delegated hierarchy)"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot enforce limits") && err.contains("--allow-unlimited"),
        "{err}"
    );
    assert!(!out.exists(), "refused before anything was written");

    let o = as_nobody(&lenient);
    status_ok(&o.status, &o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("UNLIMITED"), "{stdout}");
    let dir = results_dir(&out);
    let runs = run_files(&dir, "json");
    assert_eq!(runs.len(), 1);
    let v = json(&runs[0]);
    assert_eq!(v["unlimited"], true, "{v}");
    assert_eq!(v["status"], "ok", "{}", v["reason"]);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        html.contains("id=\"unlimited\""),
        "the report says UNLIMITED"
    );
}

/// Runs `serverlab bench SUITE --out OUT` with its temporary files in
/// `scratch` (at most 2 minutes), checks it succeeded, and gives its
/// standard output.
fn bench_suite(suite: &Path, out: &Path, scratch: &Path) -> String {
    let child = serverlab()
        .arg("bench")
        .arg(suite)
        .arg("--out")
        .arg(out)
        .env("TMPDIR", scratch)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(child, Duration::from_secs(120));
    status_ok(&o.status, &o);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A cluster suite end to end: two event-loop replicas behind the
/// dispatcher in http mode, each component in a container of its own;
/// replica 2 is killed and started again inside the measured window, and
/// replica 1 slowed to half a CPU.
/// Stateful sessions behind round robin break (state errors are results:
/// the runs are ok), affinity loses only the killed replica's sessions,
/// stateless tokens with the shared key lose nothing; each event's
/// reaction, each replica's share and the dispatcher's CPU are recorded;
/// the report draws the failover timeline; and no replica, dispatcher or
/// folder outlives the suite.
#[test]
fn cluster_suite_with_a_replica_killed_and_restarted() {
    let tmp = Tmp::new("cluster");
    let suite = tmp.0.join("cluster.toml");
    std::fs::write(
        &suite,
        r#"
name = "cluster"
architectures = ["event-loop"]
states = ["stateful", "stateless"]
warmup = "300ms"
duration = "3s"
allow_unlimited = true
objective = { percentile = 99.0, latency = "200ms" }
[[workload]]
name = "counter"
path = "/counter"
[load]
rates = [300]
open_connections = 8
arrivals = "poisson"
[cluster]
replicas = 2
policies = ["round-robin", "affinity"]
modes = ["http"]
check_interval = "100ms"
[[cluster.event]]
at = "1s"
replica = 2
action = "kill"
[[cluster.event]]
at = "2s"
replica = 2
action = "restart"
[[cluster.event]]
at = "2500ms"
replica = 1
action = "slow"
cpus = 0.5
"#,
    )
    .unwrap();
    let scratch = tmp.0.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = tmp.0.join("results");
    let stdout = bench_suite(&suite, &out, &scratch);
    assert!(stdout.contains("Clusters"), "{stdout}");
    let dir = results_dir(&out);
    let runs: Vec<serde_json::Value> = run_files(&dir, "json").iter().map(|p| json(p)).collect();
    assert_eq!(runs.len(), 4);
    let run_of = |key: &str| {
        runs.iter()
            .find(|r| r["key"].as_str().unwrap().contains(key))
            .unwrap_or_else(|| panic!("no run {key}"))
    };
    let state_errors = |key: &str| run_of(key)["cluster"]["state_errors"].as_u64().unwrap();
    // What the first client with a state error saw, for a failure message.
    let first = |key: &str| run_of(key)["loadgen"]["errors"]["state_example"].to_string();
    for r in &runs {
        let key = r["key"].as_str().unwrap();
        assert_eq!(r["status"], "ok", "{key}: {}", r["reason"]);
        let c = &r["cluster"];
        let events = c["events"].as_array().unwrap();
        assert_eq!(events.len(), 3, "{key}: {c}");
        assert!(
            events[..2].iter().all(|e| e.get("error").is_none()),
            "{key}: {c}"
        );
        // Slowing a replica changes its CPU quota: only with cgroups.
        let slow = events[2].get("error").and_then(|e| e.as_str());
        if r["unlimited"].as_bool().unwrap() {
            assert!(slow.is_some_and(|e| e.contains("UNLIMITED")), "{key}: {c}");
        } else {
            assert_eq!(slow, None, "{key}: {c}");
        }
        let out_after = events[0]["out_after_s"].as_f64();
        assert!(out_after.is_some_and(|s| s < 1.0), "{key}: {c}");
        assert!(events[1]["back_after_s"].as_f64().is_some(), "{key}: {c}");
        let replicas = c["replicas"].as_array().unwrap();
        assert_eq!(replicas[1]["starts"], 2, "{key}: {c}");
        let shares: f64 = replicas.iter().map(|r| r["share"].as_f64().unwrap()).sum();
        assert!((shares - 1.0).abs() < 1e-6, "{key}: {c}");
        assert!(replicas[1]["share"].as_f64().unwrap() > 0.05, "{key}: {c}");
        if !r["unlimited"].as_bool().unwrap() {
            assert!(
                c["dispatcher_us_per_request"].as_f64().unwrap() > 0.0,
                "{c}"
            );
            assert!(c["replicas_us_per_request"].as_f64().unwrap() > 0.0, "{c}");
        }
        let timeline = r["metrics"]["timeline"].as_array().unwrap();
        assert!(timeline.iter().all(|p| p["errors"].is_u64()), "{key}");
        // Watched: the proxy's queue is read with its rotation (no
        // maxconn here, so nothing waits in it).
        assert_eq!(c["queued_peak"], 0, "{key}: {c}");
    }
    assert!(stdout.contains("waiting in dispatcher"), "{stdout}");
    let (rr, affinity) = (
        state_errors("round-robin-http__counter__r300@8__none__stateful"),
        state_errors("affinity-http__counter__r300@8__none__stateful"),
    );
    // Each of the 8 clients has one session; at most those on replica 2
    // are lost with it.
    assert!(affinity <= 8, "affinity lost {affinity}");
    assert!(rr > 30 && rr > affinity, "round robin lost only {rr}");
    for key in [
        "round-robin-http__counter__r300@8__none__stateless",
        "affinity-http__counter__r300@8__none__stateless",
    ] {
        assert_eq!(state_errors(key), 0, "{key}: first: {}", first(key));
    }
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("id=\"clusters\""));
    assert_eq!(report.matches("<figure id=\"failover-").count(), 4);
    // Nothing of the runs is left: folders, or a process using them.
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let scratch = scratch.to_string_lossy().into_owned();
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&scratch))
        .collect();
    assert!(running.is_empty(), "still running: {running:?}");
}

/// A migration suite end to end: three event-loop replicas with idle
/// sessions, replica 1's sessions migrated to replica 2 one second into
/// each run, one run per method, in stateful and in soft mode. Each run
/// records the dispatcher's report (completed, nothing lost, every session
/// moved, the method's shape of rounds), the clients saw no state error
/// and rebuilt no session, p99 around the migration is recorded, and the
/// terminal and HTML reports show the migrations.
#[test]
fn migration_suite_moves_sessions_by_each_method_and_reports_them() {
    let tmp = Tmp::new("migration");
    let suite = tmp.0.join("migration.toml");
    std::fs::write(
        &suite,
        r#"
name = "migration"
architectures = ["event-loop"]
states = ["stateful", "soft"]
warmup = "300ms"
duration = "3s"
allow_unlimited = true
objective = { percentile = 99.0, latency = "200ms" }
[[workload]]
name = "counter"
path = "/counter"
[load]
rates = [600]
open_connections = 30
arrivals = "poisson"
[cluster]
replicas = 3
policies = ["affinity"]
modes = ["http"]
idle_sessions = 300
[[cluster.event]]
at = "1s"
replica = 1
action = "migrate"
to = 2
method = ["pre-copy", "stop-and-copy", "post-copy"]
threshold = 5
bandwidth = "50k"
"#,
    )
    .unwrap();
    let scratch = tmp.0.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = tmp.0.join("results");
    let stdout = bench_suite(&suite, &out, &scratch);
    assert!(stdout.contains("Migrations"), "{stdout}");
    let dir = results_dir(&out);
    let runs: Vec<serde_json::Value> = run_files(&dir, "json").iter().map(|p| json(p)).collect();
    assert_eq!(runs.len(), 6);
    for r in &runs {
        let key = r["key"].as_str().unwrap();
        assert_eq!(r["status"], "ok", "{key}: {}", r["reason"]);
        let c = &r["cluster"];
        assert_eq!(c["state_errors"], 0, "{key}: an increment lost or repeated");
        // Soft clients rebuild a lost session without an error: none may
        // have had to.
        assert_eq!(r["loadgen"]["restores"], 0, "{key}: a session was lost");
        assert_eq!(c["other_errors"], 0, "{key}: {c}");
        let m = &c["migrations"][0];
        let report = &m["report"];
        assert_eq!(report["outcome"], "completed", "{key}: {m}");
        assert_eq!(report["lost"], 0, "{key}: {m}");
        // The idle sessions, and the clients' that replica 1 held.
        let moved = report["sessions"].as_u64().unwrap();
        assert!(moved > 300, "{key}: {m}");
        let method = report["method"].as_str().unwrap();
        assert!(key.contains(method), "{key} ran {method}");
        let rounds = report["rounds"].as_array().unwrap();
        let paused: Vec<bool> = rounds.iter().map(|x| x["paused"] == true).collect();
        match method {
            "pre-copy" => {
                assert!(rounds.len() >= 2, "{key}: {m}");
                assert_eq!(paused.last(), Some(&true), "{key}: {m}");
                // At 50 kB/s the first round (300 idle sessions, ~12 kB)
                // takes about a quarter of a second.
                assert!(rounds[0]["secs"].as_f64().unwrap() > 0.15, "{key}: {m}");
            }
            "stop-and-copy" => assert_eq!(paused, [true], "{key}: {m}"),
            _ => {
                let fetched =
                    report["on_demand"].as_u64().unwrap() + report["background"].as_u64().unwrap();
                assert_eq!(fetched, moved, "{key}: {m}");
                assert!(report["degraded_s"].as_f64().unwrap() > 0.15, "{key}: {m}");
            }
        }
        assert!(m["p99_during_ms"].as_f64().is_some(), "{key}: {m}");
        assert!(
            c["client_longest"]["max_ms"].as_f64().is_some(),
            "{key}: {c}"
        );
    }
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("id=\"migrations\""));
    assert_eq!(report.matches("<figure id=\"failover-").count(), 6);
    assert!(report.contains(">\npause\n</text>"), "the pause is marked");
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
