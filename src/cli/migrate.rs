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
    #[arg(long, value_parser = bytes_per_s)]
    bandwidth: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = format!(
        "/migrate?from={}&to={}&method={}&threshold={}&rounds={}",
        args.from,
        args.to,
        args.method.as_str(),
        args.threshold,
        args.rounds
    ) + &args
        .bandwidth
        .map_or(String::new(), |b| format!("&bandwidth={b}"));
    // The dispatcher answers when the migration is over.
    let (status, body) =
        servers::probe::post(args.dispatcher, &path, b"", Duration::from_secs(600))
            .with_context(|| format!("the dispatcher's status address {}", args.dispatcher))?;
    if status != 200 {
        bail!("the dispatcher refused: {}", body.trim());
    }
    let report: dispatch::migrate::Report =
        serde_json::from_str(&body).context("the dispatcher's report")?;
    if args.json {
        println!("{}", body.trim());
    } else {
        println!("{}", report.summary());
    }
    if report.outcome == dispatch::migrate::Outcome::Aborted {
        bail!("the migration was aborted");
    }
    Ok(())
}

/// `100000`, `100k` or `2M` bytes per second.
fn bytes_per_s(text: &str) -> Result<u64, String> {
    let (digits, scale) = match text.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000),
        None => match text.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (text, 1),
        },
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?}: bytes per second, e.g. 100k"))
}
