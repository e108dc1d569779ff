//! A tiny blocking HTTP/1.1 client for health checks and `/stats`, with a
//! timeout on every step (a hung server must not hang the runner).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// `GET path` on `addr`: the status and the body.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    // Bounded: /stats and /health are tiny; a runaway answer is cut.
    s.take(1 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

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
