//! serverlab's servers: one HTTP/1.1 codec ([`codec`]), one handler that
//! turns requests into plans of work ([`handler`]), and every architecture
//! ([`arch`]), all sharing the same entry so they can be compared fairly.
//!
//! Linux-only system code lives in [`net`], [`shutdown`] and [`stats`], and
//! in the process-based architectures.

pub mod arch;
pub mod codec;
pub mod config;
pub mod conn;
pub mod control;
pub mod handler;
pub mod handoff;
pub mod incoming;
pub mod linger;
pub mod net;
pub mod probe;
pub mod process;
pub mod protocol;
pub mod reactor;
pub mod shm;
pub mod shutdown;
pub mod state;
pub mod stats;
pub mod sync;
pub mod timer;
pub mod warn;
pub mod work;

pub use arch::{start, Running};
pub use config::{Config, Options};
pub use handler::Handler;
pub use incoming::{Arrival, Incoming, Source};
pub use shutdown::Shutdown;
