//! `serverlab bench`: run a suite, write its results folder and report,
//! print the answer.

use anyhow::Context;
use bench::runner::{self, Options};
use bench::suite::Suite;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// A suite file, or the name of a shipped suite (quick, full); default:
    /// quick, or with --resume the suite.toml kept in that folder.
    suite: Option<String>,
    /// Where new result folders go.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Complete an interrupted results folder (runs already there are kept).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Only the runs whose key contains PATTERN (e.g. `thread-pool`,
    /// `__hello__`).
    #[arg(long, value_name = "PATTERN")]
    only: Option<String>,
    /// Where the sandbox cannot enforce limits (not root, no cgroups), run
    /// without them; such runs are marked UNLIMITED.
    #[arg(long)]
    allow_unlimited: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let suite_arg = match (&args.suite, &args.resume) {
        (Some(s), _) => s.clone(),
        (None, Some(dir)) => dir.join("suite.toml").to_string_lossy().into_owned(),
        (None, None) => "quick".to_string(),
    };
    let mut suite = Suite::load(&suite_arg)?;
    if let (None, Some(dir)) = (&args.suite, &args.resume) {
        // The kept suite.toml may have no name of its own: keep the
        // folder's, so resumed runs carry the same suite name.
        if let Some(name) = suite_name_of(dir) {
            suite.name = name;
        }
    }
    let only = args.only.clone();
    execute(
        &suite,
        Options {
            out: args.out,
            resume: args.resume,
            only: args.only,
            allow_unlimited: args.allow_unlimited,
            exe: std::env::current_exe().context("cannot find the serverlab executable")?,
            stop: Arc::new(AtomicBool::new(false)),
            progress: !args.quiet,
        },
        only,
    )?;
    Ok(())
}

/// Runs `suite` as `opts` say (Ctrl-C stops it, keeping finished runs),
/// renders the report, prints the answer and returns the results folder.
/// Exits with 130 when interrupted, saying how to resume.
pub fn execute(suite: &Suite, opts: Options, only: Option<String>) -> anyhow::Result<PathBuf> {
    let flag = opts.stop.clone();
    // Installed before any thread starts (see on_termination): Ctrl-C
    // stops the run in progress; finished runs are already on disk.
    super::on_termination(move || {
        eprintln!("\nserverlab: stopping: the run in progress is discarded, finished runs are kept (Ctrl-C again to quit at once)");
        flag.store(true, Ordering::SeqCst);
    })?;
    for (name, why) in runner::missing_externals(suite) {
        eprintln!("serverlab: {name} will be skipped: {why}");
    }
    let leftovers = sandbox::cleanup_leftovers();
    tracing::debug!("leftovers from earlier runs: {leftovers:?}");
    let outcome = runner::run_suite(suite, &opts)?;
    let dir = &outcome.dir;
    let report = bench::report::render(dir).context("cannot write the report")?;
    let runs = bench::results::Store::open(dir)?.runs()?;
    println!("{}", bench::report::answer_table(&runs));
    if let Some(table) = bench::report::cluster_table(&runs) {
        println!("{table}");
    }
    println!(
        "{} runs done now, {} already there; results in {}; report {}",
        outcome.done,
        outcome.skipped,
        dir.display(),
        report.display()
    );
    if outcome.interrupted {
        // Resume what was asked: the same selection, if there was one.
        let only = only.map_or(String::new(), |p| format!(" --only '{p}'"));
        println!(
            "interrupted: {} runs left; complete it with: serverlab bench --resume {}{only}",
            outcome.remaining,
            dir.display()
        );
        std::process::exit(130);
    }
    Ok(dir.clone())
}

/// `quick` from `results/quick-20260101-120000` (or `...-120000-2`).
fn suite_name_of(dir: &std::path::Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let parts: Vec<&str> = name.split('-').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let i = (1..parts.len().saturating_sub(1))
        .rev()
        .find(|&i| digits(parts[i], 8) && digits(parts[i + 1], 6))?;
    Some(parts[..i].join("-"))
}
