//! `serverlab report`: re-render a results folder, or compare two.

use anyhow::{bail, Context};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The results folder to render (results/<suite>-<timestamp>).
    dir: Option<PathBuf>,
    /// Compare two results folders, run by run: A B.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with = "dir")]
    compare: Option<Vec<PathBuf>>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(pair) = args.compare {
        print!("{}", bench::report::compare(&pair[0], &pair[1])?);
        return Ok(());
    }
    let Some(dir) = args.dir else {
        bail!("give a results folder, or --compare A B");
    };
    let path =
        bench::report::render(&dir).with_context(|| format!("cannot render {}", dir.display()))?;
    let runs = bench::results::Store::open(&dir)?.runs()?;
    println!("{}", bench::report::answer_table(&runs));
    if let Some(table) = bench::report::cluster_table(&runs) {
        println!("{table}");
    }
    println!("report: {}", path.display());
    Ok(())
}
