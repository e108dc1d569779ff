//! The sandbox: containers built from what the Linux kernel offers, with no
//! container engine (DESIGN §6). A crate of its own that depends on nothing
//! else of serverlab's, so that the runner, the super server and the
//! dispatcher can each put what they start in a container.
//!
//! A container here is a cgroup (limits and accounting, v1 or v2, detected at
//! run time) plus namespaces (pid with a reaper as PID 1, mount with a fresh
//! /proc, uts, ipc, and optionally an isolated network joined by a veth
//! pair). The order of operations follows runc: create the cgroup, fork, move
//! the child into the cgroup before it execs, unshare, fork the reaper, mount
//! /proc, exec.
//!
//! Everything this crate creates is named `serverlab-…` (veths `slv…`), carries
//! the owner's pid, and is registered in a process-wide registry, so that
//! it is removed on [`Container::stop`], on drop, on SIGINT/SIGTERM of the
//! runner ([`terminate_all`]) and, after a crash, by [`cleanup_leftovers`].
//!
//! Files, each depending only on those before it: `owner` (who made an
//! object, as its name says), `limits` (what a user asks for),
//! `accounting` (what was used), `detect` (which hierarchy), `cgroup/`
//! (cgroupfs v1/v2 back ends, and the sampler of what the kernel keeps no
//! peak of), `namespaces` (the pre-exec child code), `net` (veth + netns
//! via `ip`), `credits` (burstable-instance controller), `cleanup` (kill,
//! remove, registry, leftovers), `container` (spawn/stop tying it
//! together).

pub mod accounting;
pub mod cgroup;
pub mod cleanup;
mod container;
pub mod credits;
pub mod detect;
pub mod limits;
pub mod namespaces;
pub mod net;
pub mod owner;

pub use accounting::Accounting;
pub use cleanup::{cleanup_leftovers, terminate_all, LeftoverReport};
pub use container::{Container, Sandbox};
pub use detect::{CgroupVersion, Layout};
pub use limits::{Credits, Limits};
pub use net::{Net, NetAddrs};

/// Prefix of every cgroup, network namespace and (shortened) veth serverlab creates.
pub const PREFIX: &str = "serverlab";

/// What can go wrong while building, running or tearing down a container.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No usable cgroup hierarchy (not Linux, not mounted, or not writable).
    #[error("no usable cgroup hierarchy: {0}")]
    NoCgroups(String),
    /// The caller may not create cgroups (typically: not root).
    #[error("no permission to create cgroups under {path} ({source}); run as root, or pass --allow-unlimited to run without limits")]
    Permission {
        /// The directory we tried to create.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A limit the kernel does not offer here (missing file or controller).
    #[error("limit {limit} is not supported here: {why}")]
    Unsupported {
        /// The limit's name as the user spelled it (e.g. `io_weight`).
        limit: &'static str,
        /// Why (e.g. which file is missing).
        why: String,
    },
    /// The kernel accepted the write but reads back something else, or refused it.
    #[error("limit {limit}: wrote {wrote:?} to {file}, {outcome}")]
    Refused {
        /// The limit's name.
        limit: &'static str,
        /// The cgroup file.
        file: std::path::PathBuf,
        /// What we wrote.
        wrote: String,
        /// What happened instead (the error, or the value read back).
        outcome: String,
    },
    /// A limit value that makes no sense (e.g. `cpus = 0`).
    #[error("invalid limit: {0}")]
    Invalid(String),
    /// A cgroupfs or procfs file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing (`read`, `write`, `mkdir`, `rmdir`, ...).
        op: &'static str,
        /// Which file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An `ip` command for the isolated network failed.
    #[error("network setup: {0}")]
    Net(String),
    /// Starting the command failed (fork, unshare, exec, ...).
    #[error("cannot start the command: {0}")]
    Spawn(std::io::Error),
}

/// Short form of results in this module.
pub type Result<T> = std::result::Result<T, SandboxError>;

impl SandboxError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SandboxError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
