//! One run from start to stop: the server (built-in or external) in its
//! container, readiness, measurement, `/stats`, accounting, clean-up, and
//! the verdict (ok, failed, crashed, oom, skipped).

use super::{measure, placement, probe};
use crate::results::{AutoStep, Metrics, Status};
use crate::suite::{Contestant, External, RunSpec, Suite};
use sandbox::{self, Accounting, Container, Net, Sandbox};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What every run of a suite shares.
pub struct Context<'a> {
    pub suite: &'a Suite,
    pub exe: &'a Path,
    pub server_cpus: &'a [usize],
    pub generator_cpus: &'a [usize],
    pub threads: usize,
    pub stop: &'a AtomicBool,
    /// The sandbox cannot enforce limits: run without them.
    pub unlimited: bool,
}

/// How one run ended, with whatever was measured (the fields of the run
/// file that depend on what happened).
pub struct Outcome {
    /// Cluster runs: the replicas', dispatcher's and events' results.
    pub cluster: Option<super::cluster::ClusterResult>,
    pub status: Status,
    pub reason: Option<String>,
    pub unlimited: bool,
    pub metrics: Option<Metrics>,
    pub steps: Vec<AutoStep>,
    pub bracket: Option<crate::runner::search::Bracket>,
    pub loadgen: Option<serde_json::Value>,
    pub accounting: Option<serde_json::Value>,
    pub server_stats: Option<serde_json::Value>,
    pub background: Vec<super::background::GroupCounts>,
    pub histogram: Option<String>,
    pub hgrm: Option<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub(super) fn new(status: Status) -> Outcome {
        Outcome {
            cluster: None,
            status,
            reason: None,
            unlimited: false,
            metrics: None,
            steps: Vec::new(),
            bracket: None,
            loadgen: None,
            accounting: None,
            server_stats: None,
            background: Vec::new(),
            histogram: None,
            hgrm: None,
            notes: Vec::new(),
        }
    }

    pub(super) fn fail(status: Status, reason: impl Into<String>) -> Outcome {
        Outcome {
            reason: Some(reason.into()),
            ..Outcome::new(status)
        }
    }
}

/// `Some(why)` when the sandbox cannot make containers with limits here.
pub fn sandbox_unavailable() -> Option<String> {
    let layout = match sandbox::Layout::detect() {
        Ok(l) => l,
        Err(e) => return Some(e.to_string()),
    };
    Sandbox::check_permission(&layout)
        .err()
        .map(|e| e.to_string())
}

/// `Some(why)` when the program an external command starts is not found.
pub fn missing_binary(command: &str) -> Option<String> {
    let program = command.split_whitespace().next()?;
    if program == "{serverlab}" {
        return None; // this very program
    }
    if program.contains('/') {
        return (!Path::new(program).is_file()).then(|| format!("{program} not found"));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .any(|dir| Path::new(dir).join(program).is_file());
    (!found).then(|| format!("{program:?} is not installed (not on PATH nor in /usr/sbin)"))
}

/// Performs one run. `None` when a stop request interrupted it (the run is
/// then discarded: nothing of it is kept).
pub fn perform(ctx: &Context, spec: &RunSpec) -> Option<Outcome> {
    if let Contestant::External(e) = &spec.contestant {
        if let Some(why) = missing_binary(&e.command) {
            return Some(Outcome::fail(Status::Skipped, why));
        }
    }
    let dir = match prepare(ctx, spec) {
        Ok(d) => d,
        Err(why) => return Some(Outcome::fail(Status::Failed, why)),
    };
    if let Some(topology) = &spec.topology {
        return super::cluster::perform(ctx, spec, topology, &dir);
    }
    let port = match probe::free_port() {
        Ok(p) => p,
        Err(e) => return Some(Outcome::fail(Status::Failed, format!("no free port: {e}"))),
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (limits, server_cpus) = match placed_limits(ctx, spec) {
        Ok(l) => l,
        Err(why) => return Some(Outcome::fail(Status::Failed, why)),
    };
    let (cmd, ready, ready_timeout) = match command(ctx, spec, addr, &dir, &server_cpus) {
        Ok(c) => c,
        Err(e) => return Some(Outcome::fail(Status::Failed, e)),
    };
    let hint = spec.contestant.name().to_string();
    let spawned = if ctx.unlimited {
        Sandbox::spawn_unlimited(&hint, Net::Host, cmd)
    } else {
        Sandbox::spawn(&hint, &limits, Net::Host, cmd)
    };
    let mut container = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Some(Outcome::fail(
                Status::Failed,
                format!("cannot start the server: {e}"),
            ))
        }
    };
    let mut out = Outcome {
        unlimited: ctx.unlimited,
        ..Outcome::new(Status::Ok)
    };
    let deadline = Instant::now() + ready_timeout;
    let ready_result = probe::wait_ready(addr, &ready, deadline, || {
        !ctx.stop.load(Ordering::SeqCst) && container.is_running()
    });
    if ctx.stop.load(Ordering::SeqCst) {
        let _ = container.stop();
        return None;
    }
    if let Err(why) = ready_result {
        let acc = container.stop();
        out.status = Status::Failed;
        out.reason = Some(format!("server {why}{}", dir.log_tail()));
        verdict_from_accounting(&mut out, acc.as_ref().ok());
        return Some(out);
    }

    // A built-in server's counters are read from its stats file: no request
    // to a server that may be too busy to answer.
    let builtin = matches!(spec.contestant, Contestant::Builtin { .. });
    let stats = if builtin {
        match servers::stats::Stats::attach(&dir.stats()) {
            Ok(s) => Some(s),
            Err(e) => {
                out.notes.push(format!("server counters unavailable: {e}"));
                None
            }
        }
    } else {
        None
    };
    let background = super::background::start(&spec.workload.background, addr, ctx.threads);
    // Both closures need the container; the generator calls them in turn.
    let shared = std::cell::RefCell::new(container);
    let measured = measure::run_level(
        ctx.suite,
        &spec.workload,
        &spec.load,
        &measure::Target {
            addr,
            threads: ctx.threads,
            state: spec.state,
            stats: stats.as_ref(),
            on_window: None,
            cpus: (&server_cpus, ctx.generator_cpus),
            remeasure: true,
        },
        ctx.stop,
        || shared.borrow_mut().is_running(),
        || shared.borrow().cpu_usage_s(),
    );
    let mut container = shared.into_inner();
    out.background = background.stop();
    if ctx.stop.load(Ordering::SeqCst) {
        let _ = container.stop();
        return None;
    }
    let running = container.is_running();
    if running && builtin {
        out.server_stats = probe::get(addr, "/stats", Duration::from_secs(2))
            .ok()
            .filter(|(code, _)| *code == 200)
            .and_then(|(_, body)| serde_json::from_str(&body).ok());
    }
    if out.server_stats.is_none() {
        // Too busy to answer, or gone: its counters as they are now.
        out.server_stats = stats.as_ref().and_then(|s| {
            let mut v = serde_json::to_value(s.snapshot()).ok()?;
            v["source"] = "stats file (the server did not answer /stats)".into();
            Some(v)
        });
    }
    let acc = container.stop();
    match measured {
        Ok(Some(m)) => {
            keep_measured(&mut out, m);
            if let (Some(metrics), Ok(a)) = (&mut out.metrics, &acc) {
                metrics.memory_peak_bytes = a.memory_peak_bytes;
                metrics.memory_own_bytes = a.memory_own_peak_bytes;
                metrics.memory_cache_bytes = a.memory_cache_peak_bytes;
                metrics.throttled_s = a.throttled_us.map(|t| t as f64 / 1e6);
            }
        }
        Ok(None) => return None,
        Err(e) => {
            out.status = Status::Failed;
            out.reason = Some(e);
        }
    }
    if !running {
        out.status = Status::Crashed;
        out.reason = Some(format!("server exited during the run{}", dir.log_tail()));
    }
    out.notes.extend(shared_cpu_note(ctx, &server_cpus));
    verdict_from_accounting(&mut out, acc.as_ref().ok());
    if let Err(e) = &acc {
        let note = format!("accounting unavailable: {e}");
        out.reason = Some(out.reason.map_or(note.clone(), |r| format!("{r}; {note}")));
    }
    Some(out)
}

/// The run's folder, with its data set generated and the page cache
/// dropped when the suite asks.
fn prepare(ctx: &Context, spec: &RunSpec) -> Result<RunDir, String> {
    let dir = RunDir::new().map_err(|e| format!("cannot make a temp folder: {e}"))?;
    if let Some(files) = spec.workload.files {
        generate_files(&dir.docroot(), files)
            .map_err(|e| format!("cannot generate the data set: {e}"))?;
    }
    if ctx.suite.drop_caches {
        drop_caches().map_err(|e| format!("cannot drop the page cache: {e}"))?;
    }
    Ok(dir)
}

/// The run's limits with its cpuset, and the server's CPUs: a suite's own
/// cpuset is honoured (cgroup and affinity alike); else the server gets
/// the placement's server CPUs.
pub(super) fn placed_limits(
    ctx: &Context,
    spec: &RunSpec,
) -> Result<(sandbox::Limits, Vec<usize>), String> {
    let mut limits = spec.limits.clone();
    let server_cpus: Vec<usize> = match &limits.cpuset {
        Some(list) => sandbox::limits::parse_cpu_list(list)
            .map_err(|e| format!("cpuset: {e}"))?
            .into_iter()
            .map(|c| c as usize)
            .collect(),
        None => ctx.server_cpus.to_vec(),
    };
    limits.cpuset = Some(placement::cpu_list(&server_cpus));
    Ok((limits, server_cpus))
}

/// The note every run whose server shares a CPU with the generator carries.
pub(super) fn shared_cpu_note(ctx: &Context, server_cpus: &[usize]) -> Option<String> {
    let shared: Vec<usize> = server_cpus
        .iter()
        .copied()
        .filter(|c| ctx.generator_cpus.contains(c))
        .collect();
    (!shared.is_empty()).then(|| {
        format!(
            "the server's CPUs {} include the load generator's CPU {}: they compete for it",
            placement::cpu_list(server_cpus),
            placement::cpu_list(&shared)
        )
    })
}

/// Keeps what a finished measurement produced in the run's outcome.
pub(super) fn keep_measured(out: &mut Outcome, m: measure::Measured) {
    let mut hgrm = Vec::new();
    if m.report
        .write_hgrm(&mut hgrm, loadgen::output::Which::Corrected)
        .is_ok()
    {
        out.hgrm = Some(String::from_utf8_lossy(&hgrm).into_owned());
    }
    out.histogram = Some(loadgen::hist::to_base64(&m.report.corrected.histogram));
    out.loadgen = serde_json::to_value(&m.report).ok();
    out.metrics = Some(m.metrics);
    out.steps = m.steps;
    out.bracket = m.bracket;
    out.notes = m.notes;
}

/// An OOM kill overrides every other verdict: it explains the rest.
pub(super) fn verdict_from_accounting(out: &mut Outcome, acc: Option<&Accounting>) {
    if let Some(a) = acc {
        out.accounting = serde_json::to_value(a).ok();
        if a.unlimited {
            out.unlimited = true;
        }
        if a.oom_kills.unwrap_or(0) > 0 {
            out.status = Status::Oom;
            let note = format!("OOM killer killed {} process(es)", a.oom_kills.unwrap_or(0));
            out.reason = Some(match out.reason.take() {
                Some(r) => format!("{note}; {r}"),
                None => note,
            });
        }
    }
}

/// The command that starts the contestant, its readiness path and timeout.
fn command(
    ctx: &Context,
    spec: &RunSpec,
    addr: SocketAddr,
    dir: &RunDir,
    server_cpus: &[usize],
) -> Result<(Command, String, Duration), String> {
    let mut cmd;
    let (ready, timeout) = match &spec.contestant {
        Contestant::Builtin { .. } => {
            cmd = serve_command(ctx, spec, addr, dir, &dir.stats());
            ("/health".to_string(), Duration::from_secs(10))
        }
        Contestant::External(e) => {
            cmd = external_command(e, addr, dir, ctx.exe)?;
            (e.ready.clone(), e.ready_timeout)
        }
    };
    log_and_pin(&mut cmd, &dir.log(), server_cpus)?;
    Ok((cmd, ready, timeout))
}

/// `serverlab serve` for a built-in contestant, its counters in `stats`.
pub(super) fn serve_command(
    ctx: &Context,
    spec: &RunSpec,
    addr: SocketAddr,
    dir: &RunDir,
    stats: &Path,
) -> Command {
    let arch = spec.contestant.arch().unwrap_or(spec.contestant.name());
    let mut cmd = Command::new(ctx.exe);
    cmd.args(["serve", "--arch", arch, "--listen", &addr.to_string()]);
    cmd.arg("--docroot").arg(dir.docroot());
    cmd.arg("--stats-file").arg(stats);
    // A variant's own count (thread-pool:64) wins over the suite's.
    if let Some(w) = spec.contestant.workers().or(ctx.suite.workers) {
        cmd.args(["--workers", &w.to_string()]);
    }
    if let Some(s) = spec.state {
        cmd.args(["--state", s.as_str()]);
    }
    if let Some(extra) = ctx.suite.server_args.get(arch) {
        cmd.args(extra);
    }
    cmd
}

/// Sends a command's output to `log` (appended) and pins it to `cpus`.
pub(super) fn log_and_pin(cmd: &mut Command, log: &Path, cpus: &[usize]) -> Result<(), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("server log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("server log: {e}"))?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    placement::pin_child(cmd, cpus);
    Ok(())
}

pub(super) fn external_command(
    e: &External,
    addr: SocketAddr,
    dir: &RunDir,
    serverlab: &Path,
) -> Result<Command, String> {
    let fill = |text: &str| {
        text.replace("{serverlab}", &serverlab.display().to_string())
            .replace("{port}", &addr.port().to_string())
            .replace("{addr}", &addr.to_string())
            .replace("{docroot}", &dir.docroot().display().to_string())
            .replace("{config}", &dir.config().display().to_string())
            .replace("{dir}", &dir.path.display().to_string())
    };
    if let Some(config) = &e.config {
        std::fs::write(dir.config(), fill(config)).map_err(|err| format!("config file: {err}"))?;
    }
    let mut cmd = Command::new("/bin/sh");
    // exec: the server replaces the shell, so stopping it stops the server.
    cmd.arg("-c").arg(format!("exec {}", fill(&e.command)));
    Ok(cmd)
}

/// Writes `files.count` files of `files.size` bytes into `docroot`, named
/// as [`Files::name`](crate::suite::Files::name) says. The bytes are
/// pseudo-random (nothing along the way can compress them) and the same
/// in every run.
pub fn generate_files(docroot: &Path, files: crate::suite::Files) -> std::io::Result<()> {
    use std::io::Write;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 64 * 1024];
    for i in 0..files.count {
        let file = std::fs::File::create(docroot.join(crate::suite::Files::name(i)))?;
        let mut out = std::io::BufWriter::with_capacity(chunk.len(), file);
        let mut left = files.size;
        while left > 0 {
            for word in chunk.chunks_exact_mut(8) {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
            }
            let n = left.min(chunk.len() as u64) as usize;
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        out.flush()?;
    }
    Ok(())
}

/// Writes dirty pages back and drops the clean page cache (root only), so
/// a file workload starts cold.
pub fn drop_caches() -> std::io::Result<()> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3")
}

/// A per-run temp folder (docroot, config, server log), removed on drop.
pub(super) struct RunDir {
    path: PathBuf,
    /// A second folder in memory (`/dev/shm`) for the server's stats file:
    /// a page every request writes should not be written back to a disk.
    /// `None` where there is no such tmpfs (the run folder is used).
    memory: Option<PathBuf>,
}

impl RunDir {
    /// A fresh folder made by mkdtemp(3): an unpredictable name, created
    /// atomically with mode 0700, so nothing placed at a guessable path
    /// beforehand (a symlink, say) can redirect what a root runner writes.
    fn new() -> std::io::Result<RunDir> {
        let made = |template: PathBuf| -> std::io::Result<PathBuf> {
            let path = nix::unistd::mkdtemp(&template).map_err(std::io::Error::from)?;
            // Tracked first, so that even a failure below, or exiting at
            // once on a second Ctrl-C, leaves nothing behind.
            sandbox::cleanup::track_temp_dir(&path);
            Ok(path)
        };
        // Named after this runner, so that the next start removes them if
        // it is killed outright (`cleanup::remove_dead_run_dirs`).
        use sandbox::cleanup::{run_dir_bases, RUN_DIR_PREFIX};
        use sandbox::owner::Owner;
        let name = format!("{RUN_DIR_PREFIX}{}-XXXXXX", Owner::me().tag());
        let [temp, memory] = run_dir_bases();
        let path = made(temp.join(&name))?;
        let mut dir = RunDir { path, memory: None };
        dir.memory = made(memory.join(&name)).ok();
        std::fs::create_dir(dir.docroot())?;
        std::fs::write(dir.docroot().join("index.html"), "<h1>serverlab</h1>\n")?;
        Ok(dir)
    }
    pub(super) fn docroot(&self) -> PathBuf {
        self.path.join("docroot")
    }
    pub(super) fn config(&self) -> PathBuf {
        self.path.join("server.conf")
    }
    pub(super) fn log(&self) -> PathBuf {
        self.path.join("server.log")
    }
    /// A built-in server's counters (`serve --stats-file`).
    pub(super) fn stats(&self) -> PathBuf {
        self.in_memory("stats")
    }
    /// A file in the in-memory folder (the run folder where there is none).
    pub(super) fn in_memory(&self, name: &str) -> PathBuf {
        self.memory.as_ref().unwrap_or(&self.path).join(name)
    }
    /// A file in the run folder.
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    /// The last lines the server wrote, for failure reasons.
    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "; server output: {}",
                tail.chars().take(400).collect::<String>()
            )
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        for dir in std::iter::once(&self.path).chain(&self.memory) {
            let _ = std::fs::remove_dir_all(dir);
            sandbox::cleanup::untrack_temp_dir(dir);
        }
    }
}

/// What the runner needs from a container beyond the sandbox's API.
pub(super) trait ContainerExt {
    fn is_running(&mut self) -> bool;
    fn cpu_usage_s(&self) -> Option<f64>;
}

impl ContainerExt for Container {
    fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }
    fn cpu_usage_s(&self) -> Option<f64> {
        let cgroup = self.cgroup()?;
        cgroup.cpu_usage_us().ok().map(|us| us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::RunDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_data_sets_have_their_size_and_differ_per_file() {
        let dir = RunDir::new().unwrap();
        let files = crate::suite::Files {
            count: 3,
            size: 100_000,
        };
        super::generate_files(&dir.docroot(), files).unwrap();
        let read = |i| std::fs::read(dir.docroot().join(crate::suite::Files::name(i))).unwrap();
        let (a, b) = (read(0), read(1));
        assert_eq!(
            (a.len(), b.len(), read(2).len()),
            (100_000, 100_000, 100_000)
        );
        assert_ne!(a, b);
        // Not compressible by anything along the way: all byte values occur.
        let distinct: std::collections::BTreeSet<u8> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        // The same data set every run.
        let again = RunDir::new().unwrap();
        super::generate_files(&again.docroot(), files).unwrap();
        assert_eq!(std::fs::read(again.docroot().join("f00000")).unwrap(), a);
    }

    #[test]
    fn run_folders_are_private_unpredictable_and_removed() {
        let (a, b) = (RunDir::new().unwrap(), RunDir::new().unwrap());
        assert_ne!(a.path, b.path);
        let name = a.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("serverlab-run-") && !name.ends_with("XXXXXX"),
            "{name}"
        );
        let mode = std::fs::metadata(&a.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(a.docroot().join("index.html").is_file());
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists());
    }
}
