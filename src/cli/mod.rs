//! Command-line parsing and dispatch. Each subcommand lives in its own
//! module; the logic lives in the library crates.

mod bench;
mod check;
mod directory;
mod dispatch;
mod lab;
mod load;
mod migrate;
mod report;
mod sandbox;
mod serve;
mod superserver;

use clap::{Parser, Subcommand};

/// Measure which server architecture is most efficient, for which workload,
/// under which resource limits.
#[derive(Parser)]
#[command(name = "serverlab", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one server architecture until SIGINT or SIGTERM.
    Serve(serve::Args),
    /// Drive a server with HTTP load; report latency (HdrHistogram) and throughput.
    Load(load::Args),
    /// Run a suite (default: the quick one); write results and a report.
    Bench(bench::Args),
    /// Re-render a results folder's report, or compare two folders.
    Report(report::Args),
    /// Check a suite's claims against a results folder.
    Check(check::Args),
    /// Classroom labs: list them, run one, check what a run shows.
    Lab(lab::Args),
    /// Run any command in a container (cgroup limits, namespaces); print what it used.
    Sandbox(sandbox::Args),
    /// An inetd-style super server: start services when connections arrive.
    Superserver(superserver::Args),
    /// A directory (port mapper): servers register names, clients look them up.
    Directory(directory::Args),
    /// A dispatcher in front of replicated servers (splice or handoff).
    Dispatch(dispatch::Args),
    /// Live-migrate one replica's sessions to another behind a running dispatcher.
    Migrate(migrate::Args),
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Load(args) => load::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Report(args) => report::run(args),
        Command::Check(args) => check::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Sandbox(args) => sandbox::run(args),
        Command::Superserver(args) => superserver::run(args),
        Command::Directory(args) => directory::run(args),
        Command::Dispatch(args) => dispatch::run(args),
        Command::Migrate(args) => migrate::run(args),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings and errors,
/// and the super server's information).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The super server's log lines (limits reached, services switched
        // off and on) are what it is for: shown by default.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,superserver=info"));
    // Colours only for a terminal: a log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parses a duration argument (`500ms`, `10s`, `2m`).
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    servers::config::parse_duration(text)
}

/// A `--state` value: the one state-mode type every crate shares.
pub fn state_mode(text: &str) -> Result<servers::protocol::StateMode, String> {
    text.parse()
}

/// Turns SIGINT and SIGTERM into a call of `on_signal` on a dedicated
/// thread. Must be called before any other thread starts, so that every
/// thread inherits the blocked mask and only this one receives them. A
/// second signal exits at once, for when a clean stop hangs.
pub fn on_termination(on_signal: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first = true;
            while let Ok(sig) = set.wait() {
                if !first {
                    eprintln!("serverlab: second {sig}, exiting now");
                    // Nothing may outlive us: containers and run folders
                    // go now, without waiting for their owners.
                    ::sandbox::cleanup::cleanup_now();
                    std::process::exit(130);
                }
                first = false;
                on_signal();
            }
        })?;
    Ok(())
}
