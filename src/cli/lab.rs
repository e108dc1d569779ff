//! `serverlab lab`: the classroom labs of `docs/labs/` — list them, run
//! one (its suite, report and claims), check a results folder.

use anyhow::Context;
use bench::labs::{Lab, LABS};
use bench::runner::Options;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Subcommand)]
enum LabCommand {
    /// The labs in reading order: what each needs and how long it takes.
    List,
    /// Run lab N: its suite, its report, then its claims checked.
    Run {
        number: u32,
        /// Short runs, one repetition: the whole lab in under a minute
        /// (noisier; the claims' tolerances allow for it).
        #[arg(long)]
        fast: bool,
        /// Where the results folder goes.
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Check lab N's claims against a results folder (default: the newest
    /// one of that lab under results/).
    Check {
        number: u32,
        results: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        LabCommand::List => {
            println!("{:>3}  {:<58} {:>5}  needs", "lab", "title", "time");
            for lab in LABS {
                println!(
                    "{:>3}  {:<58} {:>3} m  {}",
                    lab.number, lab.title, lab.minutes, lab.needs
                );
            }
            println!("\nHandouts: docs/labs/ (start with docs/labs/README.md). Run one with `serverlab lab run N` (`--fast`: under a minute).");
            Ok(())
        }
        LabCommand::Run {
            number,
            fast,
            out,
            quiet,
        } => {
            let lab = Lab::find(number).map_err(anyhow::Error::msg)?;
            let mut suite = lab.suite()?;
            if fast {
                suite = suite.fast();
            }
            println!(
                "Lab {}: {} (handout: {})",
                lab.number,
                lab.title,
                lab.handout()
            );
            let dir = super::bench::execute(
                &suite,
                Options {
                    out,
                    resume: None,
                    only: None,
                    allow_unlimited: true,
                    exe: std::env::current_exe().context("cannot find the serverlab executable")?,
                    stop: Arc::new(AtomicBool::new(false)),
                    progress: !quiet,
                },
                None,
            )?;
            if !super::check::print_checks(&suite, &dir)? {
                std::process::exit(1);
            }
            Ok(())
        }
        LabCommand::Check { number, results } => {
            let lab = Lab::find(number).map_err(anyhow::Error::msg)?;
            let suite = lab.suite()?;
            let dir = match results {
                Some(d) => d,
                None => newest(Path::new("results"), &suite.name).with_context(|| {
                    format!(
                        "no results of lab {number} under results/; run it first: serverlab lab run {number}"
                    )
                })?,
            };
            if !super::check::print_checks(&suite, &dir)? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// The newest results folder of suite `name` (a full or a fast run) in
/// `out`: `NAME-YYYYMMDD-HHMMSS` or `NAME-fast-YYYYMMDD-HHMMSS`.
fn newest(out: &Path, name: &str) -> Option<PathBuf> {
    let stamp = |rest: &str| {
        let rest = rest.strip_prefix("fast-").unwrap_or(rest);
        (rest.len() >= 15 && rest.as_bytes()[..8].iter().all(u8::is_ascii_digit))
            .then(|| rest.to_string())
    };
    std::fs::read_dir(out)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = file.strip_prefix(name)?.strip_prefix('-')?;
            Some((stamp(rest)?, e.path()))
        })
        .max()
        .map(|(_, path)| path)
}
