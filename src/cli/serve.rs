//! `serverlab serve`: run one architecture.

use anyhow::{bail, Context};
use servers::arch;
use servers::state::{StateConfig, StateKey, StateMode};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// More workers or helpers than this is a typo, not an experiment: the
/// server would spend its start-up creating them and die of the pids limit.
const MAX_WORKERS: u64 = 100_000;

#[derive(clap::Args)]
pub struct Args {
    /// Architecture to run (see --list).
    #[arg(long, default_value = "thread-pool")]
    arch: String,
    /// Address to listen on; port 0 picks a free port (printed on start).
    /// Not used when a socket-activating launcher passed a listening
    /// socket (`LISTEN_FDS`, as systemd and systemd-socket-activate do).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve the one connection on standard input and exit (inetd's
    /// `nowait`, `systemd-socket-activate --inetd`): a process per
    /// connection, served by the shared blocking connection loop whatever
    /// --arch says (nothing is printed on standard output: it is the
    /// connection).
    #[arg(long, conflicts_with_all = ["list", "handoff"])]
    inetd: bool,
    /// Also take connections handed over on a Unix datagram socket made at
    /// this path (TCP handoff: a front end passes each connection it
    /// accepted, with the bytes it already read, and leaves the data path).
    /// The file is removed when the server stops.
    #[arg(long, value_name = "PATH")]
    handoff: Option<PathBuf>,
    /// Register the listening address as NAME in the directory at
    /// DIRECTORY (`NAME@HOST:PORT`, see `serverlab directory`), renewed
    /// while the server runs and removed when it stops.
    #[arg(long, value_name = "NAME@DIRECTORY", value_parser = superserver::directory::parse_name_at)]
    register: Option<(String, SocketAddr)>,
    /// Workers (threads, processes or loops) for architectures that have a
    /// fixed number; default: the CPUs this process may use.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_WORKERS))]
    workers: Option<u64>,
    /// Folder served under /file/.
    #[arg(long)]
    docroot: Option<PathBuf>,
    /// Close connections with no complete request for this long.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    idle_timeout: Duration,
    /// amped: the most helper threads running blocking steps at once.
    #[arg(long, default_value_t = servers::config::DEFAULT_HELPERS as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_WORKERS))]
    helpers: u64,
    /// Event-driven servers: run blocking waits inline, stalling the loop
    /// (the classic pitfall, for teaching).
    #[arg(long)]
    blocking_io: bool,
    /// List the architectures and exit.
    #[arg(long)]
    list: bool,
    /// Where POST /counter keeps per-client state: stateless (an HMAC token
    /// the client carries), stateful (a shared session table) or soft
    /// (sessions that may expire or be evicted; clients restore them).
    #[arg(long, default_value = "stateful", value_parser = super::state_mode)]
    state: StateMode,
    /// Soft state: a session unused for this long is dropped.
    #[arg(long, default_value = "60s", value_parser = super::duration)]
    ttl: Duration,
    /// Stateful and soft: most sessions held at once (the table's memory is
    /// reserved for this many up front).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_sessions: u64,
    /// Stateful: a session unused for this long is gone (its client gets
    /// 410), so clients that never return cannot fill the table for good.
    /// Default: sessions stay until the server stops.
    #[arg(long, value_parser = super::duration)]
    session_idle: Option<Duration>,
    /// Stateless: the token MAC key, as text (its bytes are the key).
    /// Replicas that must accept each other's tokens need the same key.
    #[arg(long, conflicts_with = "state_key_file")]
    state_key: Option<String>,
    /// Stateless: read the MAC key from this file (one trailing newline is
    /// ignored).
    #[arg(long)]
    state_key_file: Option<PathBuf>,
    /// Stateful and soft: end every session id with `.ROUTE`, so that a
    /// dispatcher with session affinity sends a session back to the
    /// replica that holds it (`dispatch --replica ADDR,route=ROUTE`).
    #[arg(long)]
    route: Option<String>,
    /// Serve the same routes on this address too, from a thread of the
    /// server's own that the architecture's workers cannot hold up (each
    /// connection on a thread, at most 16): the address a migration
    /// coordinator uses (dispatch --replica ADDR,control=THIS).
    #[arg(long)]
    control: Option<std::net::SocketAddr>,
    /// Keep /stats's counters in this file as well (made or emptied at
    /// start): another process maps it and reads them while the server is
    /// too busy to answer /stats (the suite runner does).
    #[arg(long)]
    stats_file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // First, before anything opens a descriptor: 3 and up may be ours.
    let inherited =
        servers::incoming::inherited().context("the socket-activating launcher's descriptors")?;
    if args.list {
        for a in arch::ALL {
            println!("{:<20} {}", a.name, a.about);
        }
        return Ok(());
    }
    let arch = arch::find(&args.arch)?;
    if args.idle_timeout.is_zero() {
        bail!("--idle-timeout must be more than 0: every connection would be closed at once");
    }
    let workers = args
        .workers
        .map_or_else(servers::config::available_cpus, |n| n as usize);
    let state = state_config(&args)?;
    // What shapes the architecture, and the app it serves.
    let options = servers::Options {
        workers,
        helpers: args.helpers as usize,
        blocking_io: args.blocking_io,
        idle_timeout: args.idle_timeout,
        ..Default::default()
    };
    let config = servers::Config {
        arch: arch.name.to_string(),
        docroot: args.docroot,
        state,
        stats_file: args.stats_file,
    };
    let shutdown = servers::Shutdown::new()?;
    let trigger = shutdown.clone();
    super::on_termination(move || trigger.trigger())?;
    let handler = Arc::new(servers::Handler::new(config, &options)?);
    if args.inetd {
        if inherited.is_some() {
            bail!("--inetd serves the connection on standard input, but the launcher passed listening sockets (LISTEN_FDS): use one or the other");
        }
        let stream = inetd_connection()?;
        servers::conn::serve_blocking(stream.into(), &handler, &options, &shutdown);
        return Ok(());
    }
    let (mut sources, how) = match inherited {
        Some(passed) => (
            passed.into_iter().map(|(_, source)| source).collect(),
            Some("socket activation"),
        ),
        None => {
            let listener = servers::net::listen_for(arch, args.listen)
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            (vec![servers::Source::Listener(listener)], None)
        }
    };
    // Kept until the server has stopped: dropping it removes the file.
    let _bound = match &args.handoff {
        Some(path) => {
            let (socket, bound) = servers::handoff::bind(path)
                .with_context(|| format!("cannot make the handoff socket {}", path.display()))?;
            sources.push(servers::Source::Handoff(socket));
            Some(bound)
        }
        None => None,
    };
    let incoming = servers::Incoming::new(sources)?;
    let control = match args.control {
        Some(at) => Some(
            servers::control::Control::start(
                at,
                handler.clone(),
                options.clone(),
                shutdown.clone(),
            )
            .with_context(|| format!("cannot listen on --control {at}"))?,
        ),
        None => None,
    };
    // Registered before the first line: whoever waits for it can look
    // the name up at once.
    let _registration = match (&args.register, first_listener(&incoming)) {
        (Some((name, at)), Some(listener)) => {
            let mut addr = listener.local_addr()?;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            Some(
                superserver::directory::Registration::start(
                    *at,
                    name,
                    addr,
                    Duration::from_secs(30),
                    None,
                )
                .with_context(|| format!("cannot register {name} in the directory at {at}"))?,
            )
        }
        (Some(_), None) => bail!("--register: no TCP listener to register"),
        (None, _) => None,
    };
    // The first line of output is the contract with scripts and the suite
    // runner: the real address, so port 0 works. One line, written at
    // once: a reader that stops after it must not make a later write fail.
    let (first, others) = incoming.sources().split_first().expect("never empty");
    let mut notes: Vec<String> = how.into_iter().map(str::to_string).collect();
    if !others.is_empty() {
        let others: Vec<String> = others.iter().map(servers::Source::describe).collect();
        notes.push(format!("also serving {}", others.join(", ")));
    }
    if let Some(c) = &control {
        notes.push(format!("control on {}", c.addr()));
    }
    let how = match notes.is_empty() {
        true => String::new(),
        false => format!(" ({})", notes.join("; ")),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}{how}", first.describe()).and_then(|()| out.flush());
    let stop = shutdown.clone();
    let served = servers::start(arch, incoming, handler, options, shutdown)?
        .wait()
        .with_context(|| format!("{} server failed", arch.name));
    if let Some(c) = control {
        // The server may have ended on its own (a failure): so does this.
        stop.trigger();
        c.join();
    }
    served
}

/// The first TCP listener among the sources.
fn first_listener(incoming: &servers::Incoming) -> Option<&std::net::TcpListener> {
    incoming.sources().iter().find_map(|s| match s {
        servers::Source::Listener(l) => Some(l),
        servers::Source::Handoff(_) => None,
    })
}

/// inetd `nowait`: standard input is the client's connection (and standard
/// output the same socket). Takes it over and points descriptors 0 and 1 at
/// /dev/null, so that nothing printed by mistake reaches the client.
fn inetd_connection() -> anyhow::Result<std::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: dup of descriptor 0; the copy is owned by the stream below.
    let fd = unsafe { libc::dup(0) };
    if fd < 0 {
        bail!(
            "--inetd: no standard input: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    if stream.peer_addr().is_err() {
        bail!("--inetd: standard input is not a TCP connection (run under inetd, xinetd or systemd-socket-activate --inetd)");
    }
    // The connection loop blocks, with its own timeouts.
    stream.set_nonblocking(false)?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors, which we replace.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            bail!("--inetd: {}", std::io::Error::last_os_error());
        }
    }
    Ok(stream)
}

/// The state settings from the flags; reads the key file.
fn state_config(args: &Args) -> anyhow::Result<StateConfig> {
    let mode = args.state;
    let key = match (&args.state_key, &args.state_key_file) {
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path)
                .with_context(|| format!("cannot read --state-key-file {}", path.display()))?;
            // `echo secret > key` and `--state-key secret` give the same key.
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            Some(bytes)
        }
        (None, None) => None,
    };
    if key.as_ref().is_some_and(Vec::is_empty) {
        bail!("the state key is empty");
    }
    if mode == StateMode::Stateless && key.is_none() {
        eprintln!(
            "serverlab: warning: no --state-key or --state-key-file: using a random key; \
             replicas will not accept each other's tokens, and tokens die with this server"
        );
    }
    Ok(StateConfig {
        mode,
        ttl: args.ttl,
        max_sessions: usize::try_from(args.max_sessions).context("--max-sessions too large")?,
        session_idle: args.session_idle,
        key: key.map(StateKey),
        route: args.route.clone(),
    })
}
