//! `serverlab load URL`: drive a server and report latency and throughput.

use anyhow::Context;
use bench::runner::{placement, steal};
use loadgen::output::Which;
use loadgen::{Arrivals, Flow, LoadConfig, StateMode};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Target, `http://host[:port][/path]`; with --directory,
    /// `http://NAME/path` names a service registered there.
    url: String,
    /// Resolve the URL's host as a name registered in the directory at
    /// this address (`serverlab directory`).
    #[arg(long, value_name = "ADDR")]
    directory: Option<std::net::SocketAddr>,
    /// Connections kept open, in total.
    #[arg(short, long, default_value_t = 10)]
    connections: usize,
    /// Threads, one event loop each.
    #[arg(short, long, default_value_t = 2)]
    threads: usize,
    /// How long to measure (after the warmup).
    #[arg(short, long, default_value = "10s", value_parser = super::duration)]
    duration: Duration,
    /// Send exactly this many measured requests instead of running for --duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Run this long first and discard the results.
    #[arg(long, default_value = "0s", value_parser = super::duration)]
    warmup: Duration,
    /// After the warmup, wait up to this much longer until every connection
    /// has had an answer and caught up with its schedule, then measure
    /// (keep-alive only; for servers that fork or spawn per connection).
    #[arg(long, value_parser = super::duration)]
    settle: Option<Duration>,
    /// Open loop at this many requests per second in total (default: closed loop).
    #[arg(short = 'R', long)]
    rate: Option<f64>,
    /// Open-loop spacing of requests.
    #[arg(long, value_enum, default_value = "uniform")]
    arrivals: ArrivalsArg,
    /// Open loop: let a wake-up for a send come up to this late (e.g.
    /// 50us), so that one wake-up sends several requests: less generator
    /// CPU at tens of thousands of requests per second, paid for in send
    /// lag, which corrected latency counts. Default 0: every send on time.
    #[arg(long, default_value = "0s", value_parser = super::duration)]
    send_slack: Duration,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// A new connection for every request (sent with `Connection: close`).
    #[arg(long)]
    no_keepalive: bool,
    /// A request without a complete answer after this long is a timeout error.
    #[arg(long, default_value = "2s", value_parser = super::duration)]
    timeout: Duration,
    /// Weighted request paths, e.g. '/=8,/work?cpu=1ms=2' (default: the URL's path).
    #[arg(long)]
    mix: Option<String>,
    /// A session flow instead of plain GETs: `counter` (POST /counter, checked).
    #[arg(long, value_enum)]
    flow: Option<FlowArg>,
    /// The server's state mode, for --flow counter: stateless, stateful or
    /// soft.
    #[arg(long, default_value = "stateful", value_parser = super::state_mode)]
    state: StateMode,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Write the corrected latency distribution (.hgrm, ms) here; with --rate,
    /// the uncorrected one goes beside it as NAME.uncorrected.hgrm.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram per second) here.
    #[arg(long)]
    log: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ArrivalsArg {
    Uniform,
    Poisson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FlowArg {
    Counter,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C ends the run early; the results so far are still printed, and
    // the exit status (130, as `serverlab bench`'s) tells a script that
    // loops over runs to stop rather than start the next.
    super::on_termination(move || flag.store(true, Ordering::SeqCst))?;
    let url = match args.directory {
        Some(at) => resolve(&args.url, at)?,
        None => args.url,
    };
    let config = LoadConfig {
        url,
        connections: args.connections,
        threads: args.threads,
        duration: args.duration,
        requests: args.requests,
        warmup: args.warmup,
        settle: args.settle,
        rate: args.rate,
        send_slack: args.send_slack,
        arrivals: match args.arrivals {
            ArrivalsArg::Uniform => Arrivals::Uniform,
            ArrivalsArg::Poisson => Arrivals::Poisson,
        },
        pipeline: args.pipeline,
        keepalive: !args.no_keepalive,
        timeout: args.timeout,
        mix: match &args.mix {
            Some(m) => loadgen::config::parse_mix(m)?,
            None => Vec::new(),
        },
        flow: args.flow.map(|FlowArg::Counter| Flow::Counter(args.state)),
        log: args.log,
        ..Default::default()
    };
    // The server may be on any CPU: the host's share of all of them is
    // watched, and of this process's (the generator's).
    let watched = steal::watched(
        (&steal::online_cpus(), &placement::allowed_cpus()),
        |measuring| loadgen::run_signalling(&config, &stop, measuring),
        |_| (),
    );
    let mut report = match watched.result {
        Ok(report) => report?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    if let Some(stolen) = watched.steal.filter(|s| s.disturbed()) {
        report
            .warnings
            .push(stolen.note_naming("the machine's CPUs"));
    }
    if let Some(path) = &args.hgrm {
        write_file(path, |w| report.write_hgrm(w, Which::Corrected))?;
        if config.rate.is_some() {
            let other = path.with_extension("uncorrected.hgrm");
            write_file(&other, |w| report.write_hgrm(w, Which::Uncorrected))?;
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        report.write_json(&mut out)?;
    } else {
        report.write_text(&mut out)?;
    }
    out.flush()?;
    if stop.load(Ordering::SeqCst) {
        eprintln!("serverlab: interrupted; the results above cover the run until then");
        std::process::exit(130);
    }
    if report.succeeded() == 0 {
        anyhow::bail!(
            "no request succeeded ({} failed, {} connect errors)",
            report.failed(),
            report.errors.connect
        );
    }
    Ok(())
}

fn write_file(
    path: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    f(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `http://NAME/path` with NAME looked up in the directory at `at`.
fn resolve(url: &str, at: std::net::SocketAddr) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (name, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let addr = superserver::directory::lookup(at, name)
        .with_context(|| format!("cannot resolve {name:?} through the directory at {at}"))?;
    eprintln!("serverlab: {name} is {addr} (directory {at})");
    Ok(format!("{scheme}://{addr}{path}"))
}
