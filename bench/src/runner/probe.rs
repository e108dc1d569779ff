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

/// A port that was free a moment ago on 127.0.0.1, taken from the 12,000
/// below the kernel's ephemeral range (`ip_local_port_range`). A port the
/// kernel hands out (`bind` to port 0) is also what it gives outgoing
/// connections as their source port: while a killed replica was down, a
/// health check or a client took its port, and the restart could not bind
/// it again ("Address already in use"). Below the range only a process
/// that binds the port by number can take it; the readiness check would
/// then fail and say so. Where the range leaves no room below it, any free
/// port.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low();
    // Never the privileged ports, nor the common ones just above them.
    let span = low.saturating_sub(10_000).min(12_000);
    // Processes running side by side (tests, runners) start apart.
    let start = std::process::id().wrapping_mul(7_919);
    for _ in 0..span.min(1_000) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low - span + start.wrapping_add(n) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The first port of the kernel's ephemeral range (32768 if unreadable).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_lie_below_the_ephemeral_range_and_differ() {
        let low = super::ephemeral_low() as u16;
        let a = super::free_port().unwrap();
        let b = super::free_port().unwrap();
        assert_ne!(a, b);
        if low > 11_000 {
            assert!(
                a < low && b < low && a >= 10_000,
                "{a} {b} (range from {low})"
            );
        }
        std::net::TcpListener::bind(("127.0.0.1", a)).expect("free when handed out");
    }
}
