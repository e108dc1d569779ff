//! Waiting for a server to be ready, with `servers::probe::get` (a tiny
//! blocking HTTP/1.1 client with a timeout on every step: a hung server
//! must not hang the runner).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use servers::probe::get;

/// Polls `GET path` until it answers 200, `alive` says the server is gone,
/// or `deadline` passes. Returns why it gave up.
pub fn wait_ready(
    addr: SocketAddr,
    path: &str,
    deadline: Instant,
    mut alive: impl FnMut() -> bool,
) -> Result<(), String> {
    let mut last = String::from("no answer");
    let mut pause = Duration::from_millis(5);
    loop {
        if !alive() {
            return Err(format!("exited before it was ready ({last})"));
        }
        match get(addr, path, Duration::from_millis(500)) {
            Ok((200, _)) => return Ok(()),
            Ok((code, _)) => last = format!("GET {path} answered {code}"),
            Err(e) => last = format!("GET {path}: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready in time ({last})"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A port that was free a moment ago on 127.0.0.1. (Another process could
/// take it before the server binds; the readiness check would then fail
/// and say so.)
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
