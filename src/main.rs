//! The `serverlab` command: a thin layer over the library crates.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    cli::init_tracing();
    if let Err(e) = cli::run(args) {
        eprintln!("serverlab: {e:#}");
        std::process::exit(1);
    }
}
