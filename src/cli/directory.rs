//! `serverlab directory`: the port mapper, and its client.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Serve the directory on this address.
    #[arg(long, value_name = "ADDR", conflicts_with = "at")]
    listen: Option<SocketAddr>,
    /// Most names held at once.
    #[arg(long, default_value_t = 1024, requires = "listen")]
    max_entries: usize,
    /// A file whose text (one line) lets clients on other machines
    /// register and unregister when they give it.
    #[arg(long, requires = "listen")]
    secret_file: Option<PathBuf>,
    /// Ask the directory at this address (with --lookup or --list).
    #[arg(long, value_name = "ADDR")]
    at: Option<SocketAddr>,
    /// The address registered as this name.
    #[arg(long, requires = "at")]
    lookup: Option<String>,
    /// Every registered name.
    #[arg(long, requires = "at")]
    list: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(at) = args.at {
        use superserver::directory::{lookup, request};
        match (&args.lookup, args.list) {
            (Some(name), _) => println!("{}", lookup(at, name)?),
            (None, true) => {
                let text = request(at, "LIST")?;
                for line in text.lines().skip(1) {
                    println!("{line}");
                }
            }
            (None, false) => bail!("--at needs --lookup NAME or --list"),
        }
        return Ok(());
    }
    let Some(addr) = args.listen else {
        bail!("--listen ADDR to serve a directory, or --at ADDR to ask one");
    };
    let secret = match &args.secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --secret-file {}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() || text.contains(char::is_whitespace) {
                bail!("--secret-file {}: one word, no spaces", path.display());
            }
            Some(text)
        }
        None => None,
    };
    let listener =
        servers::net::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    println!("directory on {}", listener.local_addr()?);
    let stop = servers::Shutdown::new()?;
    let trigger = stop.clone();
    super::on_termination(move || trigger.trigger())?;
    let directory = Arc::new(superserver::directory::Directory::new(
        args.max_entries,
        secret,
    ));
    superserver::directory::serve(listener, directory, &stop)?;
    Ok(())
}
