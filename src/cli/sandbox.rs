//! `serverlab sandbox`: run any command in a container (cgroup limits and
//! namespaces), forward its exit status, print what it used.
//!
//! The command's own output keeps stdout and stderr; the accounting goes to
//! stderr as text, or to stdout as one JSON object with `--json`.

use anyhow::{bail, Context};
use sandbox::limits::{parse_credits, parse_size};
use sandbox::{self, Credits, Layout, Limits, Net, Sandbox};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Hard CPU limit in CPUs (0.5 = half a CPU; quota per period).
    #[arg(long)]
    cpus: Option<f64>,
    /// The CFS period of the quota (default 100ms; shorter periods throttle
    /// in shorter stalls); needs --cpus.
    #[arg(long, value_parser = super::duration)]
    cpu_period: Option<Duration>,
    /// Proportional CPU share, 1..=10000 (cgroup v2 scale, default 100).
    #[arg(long)]
    cpu_weight: Option<u64>,
    /// CFS burst banked within periods (e.g. 20ms); needs --cpus or --credits.
    #[arg(long, value_parser = super::duration)]
    cpu_burst: Option<Duration>,
    /// Burstable-instance credits: BASELINE CPUs, CAP CPU-seconds (e.g. 0.2,30).
    #[arg(long, value_parser = parse_credits)]
    credits: Option<Credits>,
    /// CPUs to run on (kernel list syntax: 0-1,3).
    #[arg(long)]
    cpuset: Option<String>,
    /// Memory limit (64M, 1G), swap off.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Maximum tasks (processes + threads), the PID-1 reaper included.
    #[arg(long)]
    pids: Option<u64>,
    /// Proportional block-I/O share, 1..=10000 (cgroup v2 scale).
    #[arg(long)]
    io_weight: Option<u64>,
    /// host, or isolated (own network namespace joined by a veth pair).
    #[arg(long, default_value = "host")]
    net: Net,
    /// Print the accounting as JSON on stdout (one document; the
    /// command's own standard output then goes to stderr).
    #[arg(long)]
    json: bool,
    /// Without permission to create cgroups, run anyway with no limits
    /// (every output then says UNLIMITED (no cgroup)).
    #[arg(long)]
    allow_unlimited: bool,
    /// Name hint for the container (letters, digits, _).
    #[arg(long, default_value = "sandbox")]
    name: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Set by the signal thread; the exit code becomes 130.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: Args) -> anyhow::Result<()> {
    // First, before any thread exists (see on_termination).
    super::on_termination(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        // Kill every task: the main thread's wait returns and it stops the
        // container normally (accounting, removal). If it does not manage
        // within 5 s, tear everything down from here and exit.
        sandbox::terminate_all();
        let _ = std::thread::Builder::new()
            .name("cleanup-watchdog".into())
            .spawn(|| {
                if !sandbox::cleanup::wait_all_stopped(Duration::from_secs(5)) {
                    sandbox::cleanup::cleanup_now();
                    eprintln!("serverlab: interrupted; containers removed");
                    std::process::exit(130);
                }
            });
    })?;
    let limits = Limits {
        cpus: args.cpus,
        cpu_period: args.cpu_period,
        cpu_weight: args.cpu_weight,
        cpu_burst: args.cpu_burst,
        credits: args.credits,
        cpuset: args.cpuset.clone(),
        memory: args.memory,
        pids: args.pids,
        io_weight: args.io_weight,
    };
    limits
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid limits")?;
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    if args.json {
        // Standard output is the one JSON document: the command's own
        // output goes to standard error.
        cmd.stdout(std::io::stderr());
    }

    let usable = Layout::detect().and_then(|l| Sandbox::check_permission(&l).map(|()| l));
    let mut container = match usable {
        Ok(layout) => {
            match sandbox::cleanup_leftovers() {
                Ok(r) if !r.is_empty() => {
                    eprintln!("serverlab: removed leftovers of an earlier run: {r:?}")
                }
                Ok(_) => {}
                Err(e) => eprintln!("serverlab: looking for leftovers: {e}"),
            }
            Sandbox::spawn_in(&layout, &args.name, &limits, args.net, cmd)
                .with_context(|| format!("cannot run {:?} in a container", args.command))?
        }
        Err(e) if args.allow_unlimited => {
            eprintln!("serverlab: {}: {e}", sandbox::accounting::UNLIMITED);
            Sandbox::spawn_unlimited(&args.name, args.net, cmd)
                .with_context(|| format!("cannot run {:?}", args.command))?
        }
        // The permission error already says what to do; the others need the hint.
        Err(e @ sandbox::SandboxError::Permission { .. }) => bail!("{e}"),
        Err(e) => bail!("{e}; pass --allow-unlimited to run the command without limits"),
    };
    match (container.cgroup(), container.ip()) {
        (Some(cg), ip) => eprintln!(
            "serverlab: container {} (cgroup {}){}",
            container.name(),
            cg.version().as_str(),
            ip.map(|ip| format!(", address {ip}")).unwrap_or_default()
        ),
        (None, _) => eprintln!(
            "serverlab: {} {}",
            container.name(),
            sandbox::accounting::UNLIMITED
        ),
    }
    if !INTERRUPTED.load(Ordering::SeqCst) {
        container.wait().context("waiting for the command")?;
    }
    let acc = container.stop().context("stopping the container")?;
    if args.json {
        println!("{}", serde_json::to_string(&acc)?);
    } else {
        eprint!("{}", acc.to_text());
    }
    let code = if INTERRUPTED.load(Ordering::SeqCst) {
        130
    } else {
        acc.exit_code.unwrap_or(1)
    };
    std::process::exit(code);
}
