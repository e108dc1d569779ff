//! The second half of "how does a client reach a server?": a **super
//! server** (inetd: one process listens on many ports and starts a service
//! only when a connection arrives, `nowait` or `wait`, within limits) and a
//! **directory** (a port mapper: servers register a name and an address,
//! clients look names up). See the README's "Super server and directory".
//!
//! Files: `config` (the TOML file, checked), `spawn` (fork and exec with
//! the connection or the listener handed over), `builtin` (services served
//! without a process), `status` (counters), `server` (the loop),
//! `directory` (the port mapper and its client).

pub mod builtin;
pub mod config;
pub mod directory;
pub mod server;
pub mod spawn;
pub mod status;

pub use config::Config;
pub use server::{block_signals, SuperServer};
