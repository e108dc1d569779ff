//! `serverlab dispatch`: a dispatcher in front of replicas.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// A replica: ADDR, ADDR@PATH with its handoff socket (serve --handoff
    /// PATH), and `,route=ROUTE` when its session ids end in ROUTE (serve
    /// --route ROUTE; affinity then sends each session to it),
    /// `,control=ADDR` its control address (serve --control ADDR), and
    /// `,maxconn=N` (http and splice) the most connections the dispatcher
    /// opens to it, the rest of the requests (http) or clients (splice)
    /// waiting in the dispatcher: set it to the workers of a thread pool,
    /// prefork or iterative replica (with control=, active checks then go
    /// there). Repeat for each.
    #[arg(long = "replica", required = true, value_parser = dispatch::parse_replica)]
    replicas: Vec<dispatch::ReplicaArg>,
    /// round-robin, least-connections, p2c, source or affinity.
    #[arg(long, default_value = "round-robin")]
    policy: dispatch::policy::Policy,
    /// http (a copy proxy routing each request), splice (bytes relayed in
    /// the kernel) or handoff (the connection passed to the replica).
    #[arg(long, default_value = "splice")]
    mode: dispatch::Mode,
    /// Answer GET /status (JSON) here.
    #[arg(long)]
    status: Option<SocketAddr>,
    /// http and splice: most client connections at once; more are
    /// answered 503 (http) or closed (splice).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Active health checks: GET /health on each replica this often (0:
    /// none, passive checks only).
    #[arg(long, default_value = "1s", value_parser = super::duration)]
    check_interval: std::time::Duration,
    /// Failed checks in a row that take a replica out.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    fall: u32,
    /// http: a replica that gives no answer for this long gets its client
    /// a 504, and a request that waited this long for a connection a 503;
    /// splice: a client that waited this long for a replica with room is
    /// closed.
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    answer_timeout: std::time::Duration,
    /// Passed checks in a row that bring it back.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    rise: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    for r in &args.replicas {
        if r.maxconn.is_some() && args.mode == dispatch::Mode::Handoff {
            anyhow::bail!(
                "replica {}: maxconn needs the http or splice mode: a handed-off connection is the replica's, and the dispatcher never learns when it closes",
                r.addr
            );
        }
        if r.maxconn.is_some() && r.control.is_none() && !args.check_interval.is_zero() {
            tracing::warn!(
                "replica {}: maxconn without control=: active checks compete with the dispatcher's connections for its workers",
                r.addr
            );
        }
    }
    let replicas = args
        .replicas
        .into_iter()
        .map(dispatch::ReplicaArg::replica)
        .collect();
    let mut dispatcher =
        dispatch::Dispatcher::new(args.mode, args.policy, replicas, args.max_connections)?;
    dispatcher.answer_timeout = args.answer_timeout;
    let dispatcher = Arc::new(dispatcher);
    let listener = servers::net::listen(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let stop = servers::Shutdown::new()?;
    let trigger = stop.clone();
    super::on_termination(move || trigger.trigger())?;
    if let Some(addr) = args.status {
        let l = servers::net::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let (d, s) = (dispatcher.clone(), stop.clone());
        std::thread::Builder::new()
            .name("status".into())
            .spawn(move || dispatch::serve_status(l, d, &s))?;
    }
    if !args.check_interval.is_zero() {
        let checks = dispatch::Checks {
            interval: args.check_interval,
            rise: args.rise,
            fall: args.fall,
            path: "/health".into(),
        };
        let (d, s) = (dispatcher.clone(), stop.clone());
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || d.check(&checks, &s))?;
    }
    println!(
        "dispatching {} to {} replicas ({:?}, {:?})",
        listener.local_addr()?,
        dispatcher.status().replicas.len(),
        args.mode,
        args.policy
    );
    dispatcher.run(listener, &stop)?;
    Ok(())
}
