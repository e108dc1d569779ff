//! `serverlab superserver`: an inetd-style super server.

use anyhow::{bail, Context};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The services file (TOML; see the README's "Super server").
    #[arg(required_unless_present = "status")]
    config: Option<PathBuf>,
    /// Check the file, print its services and exit.
    #[arg(long)]
    check: bool,
    /// Print the status of the super server whose `status` address this
    /// is, and exit.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["config", "check"])]
    status: Option<SocketAddr>,
    /// With --status: the JSON, as the endpoint answers it.
    #[arg(long, requires = "status")]
    json: bool,
    /// Time to live of the directory registrations (renewed at a third).
    #[arg(long, default_value = "30s", value_parser = super::duration)]
    register_ttl: Duration,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = args.status {
        return print_status(addr, args.json);
    }
    let path = args.config.expect("clap requires it");
    // Before any thread starts: the loop takes these through a signalfd.
    superserver::block_signals()?;
    let config = superserver::config::load(&path)?;
    if args.check {
        for s in &config.services {
            println!("{}: {:?} on {:?}", s.name, s.start, s.listen);
        }
        return Ok(());
    }
    let directory = config.directory;
    let names: Vec<(String, SocketAddr)> = config
        .services
        .iter()
        .map(|s| (s.name.clone(), s.listen[0]))
        .collect();
    let server = superserver::SuperServer::new(path.clone(), config)?;
    let mut out = std::io::stdout().lock();
    for line in server.describe() {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    let _registrations = match directory {
        Some(at) => names
            .iter()
            .map(|(name, addr)| {
                superserver::directory::Registration::start(
                    at,
                    name,
                    *addr,
                    args.register_ttl,
                    None,
                )
                .with_context(|| format!("registering {name} in the directory at {at}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    server.run().context("the super server failed")
}

/// Fetches `GET /status` from `addr` and prints it.
fn print_status(addr: SocketAddr, json: bool) -> anyhow::Result<()> {
    let (status, body) = servers::probe::get(addr, "/status", Duration::from_secs(3))
        .with_context(|| format!("no super server status at {addr}"))?;
    if status != 200 {
        bail!("{addr}: /status answered {status}");
    }
    if json {
        println!("{body}");
        return Ok(());
    }
    let status: superserver::status::Status = serde_json::from_str(&body)
        .with_context(|| format!("{addr}: not a super server's status"))?;
    print!("{}", status.to_table());
    Ok(())
}
