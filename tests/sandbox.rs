//! The sandbox on the real kernel (issue 6): limits take effect and are
//! accounted, namespaces isolate, and nothing survives a stop, a failure or
//! a SIGINT. Needs root and a cgroup hierarchy: without root (as build.rs
//! found it) the tests are ignored with that reason; as root, a sandbox that
//! cannot be made is a failure. Containers clean up in `Drop`, so a failing
//! assertion leaks nothing.

mod common;

use common::{processes_running, wait_for};
use sandbox::{self, Layout, Limits, Net, Sandbox};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// CPU measurements run one at a time so they do not skew each other.
static CPU: Mutex<()> = Mutex::new(());

/// The cgroup layout; as root, a machine where containers cannot be made
/// fails the test, saying why.
fn usable() -> Layout {
    common::still_root();
    let layout = Layout::detect().unwrap_or_else(|e| panic!("no cgroup layout as root: {e}"));
    if let Err(e) = Sandbox::check_permission(&layout) {
        panic!("root, yet no containers here: {e}");
    }
    layout
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

const BUSY: &str = "while :; do :; done";

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn half_a_cpu_is_half_a_cpu_and_throttled() {
    let layout = usable();
    let _cpu = CPU.lock().unwrap_or_else(|p| p.into_inner());
    let limits = Limits {
        cpus: Some(0.5),
        ..Default::default()
    };
    let idle = HostIdle::start();
    let c = Sandbox::spawn_in(&layout, "half", &limits, Net::Host, sh(BUSY)).unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the measurement window
    let acc = c.stop().unwrap();
    let spare = idle.cpus();
    let used = acc.cpus_used();
    eprintln!(
        "cpus=0.5: used {used:.3} CPUs, throttled {:?} of {:?} periods, host idle {spare:.2} CPUs",
        acc.nr_throttled, acc.nr_periods
    );
    // The quota is a ceiling whatever else runs.
    assert!(used <= 0.7, "used {used:.2} CPUs under cpus=0.5: {acc:?}");
    if spare < 0.3 {
        eprintln!("half_a_cpu: host saturated by other work; lower bound not checked");
        return;
    }
    assert!(
        used >= 0.3,
        "used {used:.2} CPUs with {spare:.2} idle: {acc:?}"
    );
    assert!(
        acc.nr_throttled.unwrap_or(0) > 5,
        "throttling reported: {acc:?}"
    );
    assert!(acc.throttled_us.unwrap_or(0) > 0);
}

/// Idle CPU time of the whole host over a window (from /proc/stat), to
/// tell "the limit is wrong" from "other work took the CPU".
struct HostIdle(u64, Instant);

impl HostIdle {
    fn jiffies() -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        cpu[3] + cpu[4] // idle + iowait
    }

    fn start() -> HostIdle {
        HostIdle(Self::jiffies(), Instant::now())
    }

    /// Average idle CPUs since `start`.
    fn cpus(&self) -> f64 {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (Self::jiffies() - self.0) as f64 / hz / self.1.elapsed().as_secs_f64()
    }
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn outgrowing_memory_is_reported_as_oom_kill() {
    let layout = usable();
    let limits = Limits {
        memory: Some(64 << 20),
        ..Default::default()
    };
    // tail keeps the current line in memory; /dev/zero has no newline.
    let mut c = Sandbox::spawn_in(
        &layout,
        "oom",
        &limits,
        Net::Host,
        sh("exec tail /dev/zero"),
    )
    .unwrap();
    let status = c.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.is_some(), "the hog should have been killed");
    let acc = c.stop().unwrap();
    assert!(acc.oom_kills.unwrap_or(0) >= 1, "{acc:?}");
    assert_eq!(acc.exit_code, Some(128 + 9), "SIGKILL forwarded as 137");
    let peak = acc.memory_peak_bytes.unwrap();
    assert!(
        (32 << 20..=65 << 20).contains(&peak),
        "peak {peak} near the 64M limit"
    );
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn fork_beyond_pids_limit_fails_inside_and_is_reported() {
    let layout = usable();
    let limits = Limits {
        pids: Some(4),
        ..Default::default()
    };
    // Reaper + sh + 2 sleeps fill the limit; later forks fail.
    let mut cmd = sh("for i in 1 2 3 4 5 6; do sleep 0.3 & done; wait");
    cmd.stderr(Stdio::piped());
    let mut c = Sandbox::spawn_in(&layout, "pids", &limits, Net::Host, cmd).unwrap();
    let mut err = String::new();
    c.child_mut()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(c.wait_timeout(Duration::from_secs(10)).unwrap().is_some());
    let acc = c.stop().unwrap();
    assert!(
        err.to_lowercase().contains("fork"),
        "the shell saw the failure: {err:?}"
    );
    assert!(acc.pids_limit_hits.unwrap_or(0) >= 1, "{acc:?}");
    assert!(acc.peak_tasks.unwrap_or(0) <= 4, "{acc:?}");
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn weights_two_to_one_share_one_cpu_two_to_one() {
    let layout = usable();
    let _cpu = CPU.lock().unwrap_or_else(|p| p.into_inner());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let one = if cpus > 1 { "1" } else { "0" }.to_string();
    let limits = |w| Limits {
        cpu_weight: Some(w),
        cpuset: Some(one.clone()),
        ..Default::default()
    };
    let a = Sandbox::spawn_in(&layout, "heavy", &limits(200), Net::Host, sh(BUSY)).unwrap();
    let b = Sandbox::spawn_in(&layout, "light", &limits(100), Net::Host, sh(BUSY)).unwrap();
    std::thread::sleep(Duration::from_secs(2)); // the measurement window
    let (a, b) = (a.stop().unwrap(), b.stop().unwrap());
    let ratio = a.cpu_usage_us as f64 / b.cpu_usage_us.max(1) as f64;
    eprintln!(
        "weights 200:100 on CPU {one}: {} vs {} µs, ratio {ratio:.2}",
        a.cpu_usage_us, b.cpu_usage_us
    );
    assert!(
        (1.4..=2.8).contains(&ratio),
        "ratio {ratio:.2}: {a:?} {b:?}"
    );
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn pid_uts_mount_namespaces() {
    let layout = usable();
    let mut cmd = sh("echo $$; hostname; ls /proc | grep -c '^[0-9]'");
    cmd.stdout(Stdio::piped());
    let mut c = Sandbox::spawn_in(&layout, "ns", &Limits::default(), Net::Host, cmd).unwrap();
    let name = c.name().to_string();
    let mut out = String::new();
    c.child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let acc = c.stop().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"2"),
        "the command is PID 2, under the reaper: {out:?}"
    );
    assert_eq!(
        lines.get(1),
        Some(&name.as_str()),
        "hostname = container name"
    );
    // A fresh /proc shows only this namespace: reaper, sh, ls, grep (at most).
    let procs: u32 = lines[2].parse().unwrap();
    assert!((2..=5).contains(&procs), "{procs} pids visible in /proc");
    assert_eq!(acc.exit_code, Some(0));
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn unlimited_run_says_so() {
    common::still_root();
    let mut c = Sandbox::spawn_unlimited("free", Net::Host, sh("exit 3")).unwrap();
    c.wait().unwrap();
    let acc = c.stop().unwrap();
    assert!(acc.unlimited && acc.to_text().contains(sandbox::accounting::UNLIMITED));
    assert!(serde_json::to_string(&acc)
        .unwrap()
        .contains("UNLIMITED (no cgroup)"));
    assert_eq!(acc.exit_code, Some(3));
}

/// Reads lines from `r` until one contains `needle` (bounded by the caller's child).
fn line_with(r: &mut impl BufRead, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "EOF before {needle:?}");
        if line.contains(needle) {
            return line.trim().to_string();
        }
    }
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn isolated_server_is_reachable_through_its_veth_only() {
    let layout = usable();
    let serve = [
        env!("CARGO_BIN_EXE_serverlab"),
        "serve",
        "--arch",
        "iterative",
        "--listen",
        "0.0.0.0:0",
    ];
    let mut cmd = Command::new(serve[0]);
    cmd.args(&serve[1..]).stdout(Stdio::piped());
    let mut c = Sandbox::spawn_in(&layout, "net", &Limits::default(), Net::Isolated, cmd).unwrap();
    let ip = c.ip().unwrap();
    let mut out = BufReader::new(c.child_mut().stdout.take().unwrap());
    let port: u16 = line_with(&mut out, "listening on")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let addr = SocketAddr::from((ip, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 "),
        "reply through the veth: {reply:?}"
    );
    // The container's own loopback: not the host's.
    let host_lo = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    );
    assert!(
        host_lo.is_err() || port_open_on_host(port),
        "the server must not be on the host's loopback"
    );

    let mut links = Sandbox::spawn_in(&layout, "links", &Limits::default(), Net::Isolated, {
        let mut l = Command::new("ip");
        l.args(["-o", "link", "show", "up"]).stdout(Stdio::piped());
        l
    })
    .unwrap();
    let mut text = String::new();
    links
        .child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    links.stop().unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(
        names.len(),
        2,
        "lo and the veth, nothing of the host's: {text}"
    );
    assert_eq!(names[0], "lo");
    assert!(names[1].starts_with("slv"));
    c.stop().unwrap();
}

/// Something else on the host may listen on the same port number by chance.
fn port_open_on_host(port: u16) -> bool {
    std::fs::read_to_string("/proc/net/tcp")
        .map(|t| t.contains(&format!(":{port:04X} 00000000:0000 0A")))
        .unwrap_or(false)
}

/// SIGKILLs the CLI child if a test fails midway, then removes what it left.
struct CliGuard(std::process::Child);

impl Drop for CliGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = sandbox::cleanup_leftovers();
        }
    }
}

/// Everything named after `pid` that still exists: cgroups, netns, veths.
/// Names carry the owner as `<pid>s<start time>`.
fn leftovers_of(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let tag = format!("-{pid}s");
    for mount in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for e in std::fs::read_dir(mount.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("serverlab") && n.contains(&tag) {
                found.push(e.path().display().to_string());
            }
        }
    }
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let veth = format!("slv{pid:x}x");
    for l in String::from_utf8_lossy(&netns.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&links.stdout).lines())
    {
        if l.starts_with(&format!("serverlab{tag}")) || l.contains(&veth) {
            found.push(l.to_string());
        }
    }
    found
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn sigint_to_the_runner_leaves_nothing_behind() {
    usable();
    let child = Command::new(env!("CARGO_BIN_EXE_serverlab"))
        .args([
            "sandbox", "--cpus", "0.5", "--memory", "64M", "--net", "isolated", "--", "sleep", "30",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = CliGuard(child);
    let pid = guard.0.id();
    let mut err = BufReader::new(guard.0.stderr.take().unwrap());
    let started = line_with(&mut err, "container");
    assert!(started.contains("address 10.213."), "{started}");
    assert!(
        !leftovers_of(pid).is_empty(),
        "the container exists while it runs"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "runner did not exit after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("throttled"), "accounting printed: {rest}");
    assert_eq!(leftovers_of(pid), Vec::<String>::new());
}

/// A runner killed outright (SIGKILL: none of its cleanup runs) takes its
/// container's processes with it at once; what the kernel keeps (cgroups,
/// the namespace) is removed by the next start.
#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn leftovers_of_a_killed_runner_are_removed_at_start() {
    usable();
    // A command line no other test uses, to find the contained process by.
    let command = ["sleep", "30.25"];
    let child = Command::new(env!("CARGO_BIN_EXE_serverlab"))
        .args(["sandbox", "--pids", "16", "--net", "isolated", "--"])
        .args(command)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = CliGuard(child);
    let pid = guard.0.id();
    let mut err = BufReader::new(guard.0.stderr.take().unwrap());
    line_with(&mut err, "container");
    assert!(
        wait_for(Duration::from_secs(5), || !processes_running(&command)
            .is_empty()),
        "the contained command runs"
    );
    // A crash: SIGKILL leaves no chance to clean up.
    guard.0.kill().unwrap();
    guard.0.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || processes_running(&command)
            .is_empty()),
        "the container outlived its runner: {:?}",
        processes_running(&command)
    );
    assert!(
        !leftovers_of(pid).is_empty(),
        "a killed runner leaves its container behind"
    );
    let report = sandbox::cleanup_leftovers().unwrap();
    // (The veth usually goes with its namespace, so `report.veths` may be empty.)
    assert!(
        !report.cgroups.is_empty() && !report.netns.is_empty(),
        "{report:?}"
    );
    assert_eq!(leftovers_of(pid), Vec::<String>::new());
}

#[test]
#[cfg_attr(
    not(serverlab_root),
    ignore = "needs root: cgroups and namespaces (run the tests as root)"
)]
fn credits_earned_idle_are_spent_busy_then_baseline() {
    let layout = usable();
    let _cpu = CPU.lock().unwrap_or_else(|p| p.into_inner());
    // Idle 2 s at baseline 0.2 earns 0.4 CPU-s (cap 0.5); then busy for 2 s:
    // about 0.4 of credit plus 0.2 × 2 of baseline ≈ 0.8 CPU-s in all,
    // against 0.4 without credits and 2.0 without any limit.
    let limits = Limits {
        credits: Some(sandbox::Credits {
            baseline: 0.2,
            cap: 0.5,
        }),
        ..Default::default()
    };
    let script = "sleep 2; exec timeout 2 sh -c 'while :; do :; done'";
    let idle = HostIdle::start();
    let mut c = Sandbox::spawn_in(&layout, "credits", &limits, Net::Host, sh(script)).unwrap();
    assert!(c.wait_timeout(Duration::from_secs(15)).unwrap().is_some());
    let acc = c.stop().unwrap();
    let spare = idle.cpus();
    let used = acc.cpu_usage_us as f64 / 1e6;
    eprintln!(
        "credits 0.2,0.5: used {used:.3} CPU-s, {:?} left, host idle {spare:.2} CPUs",
        acc.credits_left
    );
    // Earned credit + baseline + one tick of overshoot is a ceiling.
    assert!(used <= 1.2, "{used:.3} CPU-s: {acc:?}");
    assert!(
        acc.nr_throttled.unwrap_or(0) > 0,
        "held at the baseline at some point: {acc:?}"
    );
    if spare < 0.5 {
        eprintln!("credits: host saturated by other work; spending not checked");
        return;
    }
    assert!(used >= 0.55, "credits were used: {used:.3} CPU-s: {acc:?}");
    assert!(
        acc.credits_left.unwrap() < 0.1,
        "credits were spent: {acc:?}"
    );
}

/// With `--json`, standard output is one JSON document: what the command
/// prints goes to standard error (it used to be mixed into the JSON).
#[test]
fn json_output_is_one_document() {
    let out = Command::new(env!("CARGO_BIN_EXE_serverlab"))
        .args([
            "sandbox",
            "--json",
            "--allow-unlimited",
            "--",
            "echo",
            "from the command",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(doc.is_object(), "{doc}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("from the command"));
}

/// The sandbox's own helper threads (here the memory and task sampler)
/// start outside the container's cpuset when other CPUs are allowed, so
/// that they never wake up on the server's CPU; the caller's thread keeps
/// its affinity.
#[test]
#[cfg_attr(
    not(all(serverlab_root, serverlab_multicore)),
    ignore = "needs root and two CPUs"
)]
fn helpers_run_outside_the_containers_cpus() {
    use nix::sched::sched_getaffinity;
    use nix::unistd::Pid;
    let layout = usable();
    // The weights test's containers share a cpuset with this one: one at a time.
    let _cpu = CPU.lock().unwrap_or_else(|p| p.into_inner());
    let me = Pid::from_raw(0);
    let before = sched_getaffinity(me).unwrap();
    let last = (0..nix::sched::CpuSet::count())
        .rev()
        .find(|&c| before.is_set(c).unwrap_or(false))
        .unwrap();
    let limits = Limits {
        cpuset: Some(last.to_string()),
        ..Default::default()
    };
    let c = Sandbox::spawn_in(&layout, "away", &limits, Net::Host, sh("sleep 30")).unwrap();
    assert_eq!(
        sched_getaffinity(me).unwrap(),
        before,
        "the caller's affinity"
    );
    // Samplers of other tests' containers (no cpuset) may run anywhere;
    // this one runs on every allowed CPU but the container's. A new thread
    // names itself once it runs, so look until it has (at most 2 s).
    let samplers = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "sampler")
            })
            .filter_map(|t| {
                let status = std::fs::read_to_string(t.path().join("status")).ok()?;
                let line = status
                    .lines()
                    .find(|l| l.starts_with("Cpus_allowed_list:"))?;
                Some(line.split_whitespace().nth(1)?.to_string())
            })
            .collect()
    };
    let away = |list: &str| {
        sandbox::limits::parse_cpu_list(list).is_ok_and(|cpus| !cpus.contains(&(last as u32)))
    };
    wait_for(Duration::from_secs(2), || {
        samplers().iter().any(|l| away(l))
    });
    let samplers = samplers();
    assert!(samplers.iter().any(|l| away(l)), "{samplers:?}");
    c.stop().unwrap();
}
