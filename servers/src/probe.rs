//! A tiny blocking HTTP/1.1 client for health checks, `/stats` and status
//! endpoints, with a timeout on every step (a hung server must not hang the
//! caller): the suite runner, the dispatcher's health checks and the
//! super server's `--status` use it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` on `addr`: the status and the body.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, b"", 1 << 20, timeout)
}

/// `POST path` with `body` on `addr`: the status and the body (of at most
/// 64 MiB: a migration's whole session table).
pub fn post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    request(addr, "POST", path, body, 64 << 20, timeout)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    most: u64,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out)?;
    let mut buf = Vec::new();
    // Bounded: a runaway answer is cut.
    s.take(most).read_to_end(&mut buf)?;
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
