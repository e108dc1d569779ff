//! `serverlab check SUITE RESULTS`: which of a suite's claims a results
//! folder shows.

use anyhow::Context;
use bench::suite::Suite;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The suite file (or shipped suite) whose `[[claim]]`s to check.
    suite: String,
    /// The results folder to check them against.
    results: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let suite = Suite::load(&args.suite)?;
    if !print_checks(&suite, &args.results)? {
        std::process::exit(1);
    }
    Ok(())
}

/// Prints how each of `suite`'s claims fares in `dir`; whether none failed
/// (a claim that could not be evaluated, say for want of root, or that
/// missed while the host took the CPUs, does not).
pub fn print_checks(suite: &Suite, dir: &Path) -> anyhow::Result<bool> {
    if suite.claims.is_empty() {
        anyhow::bail!("suite {:?} states no claims ([[claim]])", suite.name);
    }
    let runs = bench::results::Store::open(dir)
        .and_then(|s| s.runs())
        .with_context(|| format!("cannot read the results in {}", dir.display()))?;
    let (text, _) = bench::claims::report(&suite.claims, &runs);
    print!(
        "Claims of {} against {}:\n{text}",
        suite.name,
        dir.display()
    );
    let failed = suite
        .claims
        .iter()
        .any(|c| c.check(&runs).verdict == bench::claims::Verdict::NotHeld);
    Ok(!failed)
}
