//! `serverlab migrate`: live-migrates one replica's sessions to another,
//! through a running dispatcher's `--status` address.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The dispatcher's --status address.
    #[arg(long)]
    dispatcher: SocketAddr,
    /// The replica whose sessions move (its number in the dispatcher's
    /// --replica list, from 1).
    #[arg(long)]
    from: u32,
    /// The replica they move to.
    #[arg(long)]
    to: u32,
    /// pre-copy, stop-and-copy or post-copy.
    #[arg(long)]
    method: dispatch::migrate::Method,
    /// pre-copy: pause once a round copies this many sessions or fewer.
    #[arg(long, default_value_t = 50)]
    threshold: u64,
    /// pre-copy: most copy rounds before the pause.
    #[arg(long, default_value_t = 8)]
    rounds: u32,
    /// Bytes of session records per second while clients are served
    /// (pre-copy's live rounds, post-copy's background copy), e.g. 100k;
    /// default: no cap.
    #[arg(long, value_parser = dispatch::migrate::bytes_per_s)]
    bandwidth: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut plan = dispatch::migrate::Plan::new(
        args.from
            .checked_sub(1)
            .context("--from: a replica's number, from 1")? as usize,
        args.to
            .checked_sub(1)
            .context("--to: a replica's number, from 1")? as usize,
        args.method,
    );
    plan.threshold = args.threshold;
    plan.max_rounds = args.rounds.max(1);
    plan.bandwidth = args.bandwidth;
    // The dispatcher answers when the migration is over.
    let report = dispatch::migrate::request(args.dispatcher, &plan, Duration::from_secs(600))
        .map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.summary());
    }
    if report.outcome == dispatch::migrate::Outcome::Aborted {
        bail!("the migration was aborted");
    }
    Ok(())
}
