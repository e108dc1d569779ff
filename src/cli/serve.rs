//! `serverlab serve`: run one architecture.

use anyhow::{bail, Context};
use servers::arch;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Architecture to run (see --list).
    #[arg(long, default_value = "thread-pool")]
    arch: String,
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Workers (threads, processes or loops) for architectures that have a
    /// fixed number; default: the CPUs this process may use.
    #[arg(long)]
    workers: Option<usize>,
    /// Folder served under /file/.
    #[arg(long)]
    docroot: Option<PathBuf>,
    /// Close connections with no complete request for this long.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    idle_timeout: Duration,
    /// Event-driven servers: run blocking waits inline, stalling the loop
    /// (the classic pitfall, for teaching).
    #[arg(long)]
    blocking_io: bool,
    /// List the architectures and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.list {
        for a in arch::ALL {
            println!("{:<20} {}", a.name, a.about);
        }
        return Ok(());
    }
    let arch = arch::find(&args.arch)?;
    if args.workers == Some(0) {
        bail!("--workers must be at least 1");
    }
    let workers = args.workers.unwrap_or_else(servers::config::available_cpus);
    let config = servers::Config {
        arch: arch.name.to_string(),
        workers,
        idle_timeout: args.idle_timeout,
        docroot: args.docroot,
        blocking_io: args.blocking_io,
        ..Default::default()
    };
    let shutdown = servers::Shutdown::new()?;
    let trigger = shutdown.clone();
    super::on_termination(move || trigger.trigger())?;
    let handler = Arc::new(servers::Handler::new(config)?);
    let listener = servers::net::listen(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // The first line of output is the contract with scripts and the suite
    // runner: the real address, so port 0 works.
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    (arch.run)(listener, handler, shutdown).with_context(|| format!("{} server failed", arch.name))
}
