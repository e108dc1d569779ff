//! Listening sockets and the shared blocking accept loop (Linux).

use crate::incoming::{Accept, Arrival, Incoming};
use crate::shutdown::{Readiness, Shutdown};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// The listen backlog. Large so that bursts of connects queue rather than
/// being refused while a single-threaded server is busy.
pub const BACKLOG: i32 = 1024;

/// Binds a listener: `SO_REUSEADDR` (fast restarts), and nothing that would
/// let a second server bind the same port: a port in use is an error
/// ("address already in use"), never a silent share of another server's
/// traffic.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    bind(addr, false)
}

/// Binds a listener that siblings may share with `SO_REUSEPORT`, the kernel
/// spreading connections over them: reactor-per-core's loops, and only
/// they (see [`crate::arch::Arch::shares_port`]).
pub fn listen_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    bind(addr, true)
}

/// The listener `arch` needs at `addr`.
pub fn listen_for(arch: &crate::arch::Arch, addr: SocketAddr) -> io::Result<TcpListener> {
    bind(addr, arch.shares_port)
}

fn bind(addr: SocketAddr, shared: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(shared)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// How long to stop accepting when out of file descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections from every source until shutdown, calling
/// `on_conn` for each (a blocking socket).
///
/// The sources are made non-blocking and polled together with the shutdown
/// fd, so shutdown is prompt and several processes can share the sources
/// (prefork): whoever loses the race to accept just polls again. Running
/// out of file descriptors backs off briefly instead of spinning, since
/// connections will close and free some.
pub fn accept_loop(
    incoming: &Incoming,
    shutdown: &Shutdown,
    mut on_conn: impl FnMut(Arrival),
) -> io::Result<()> {
    incoming.set_nonblocking()?;
    let fds: Vec<RawFd> = incoming.sources().iter().map(AsRawFd::as_raw_fd).collect();
    let mut exhausted = crate::warn::Throttled::new();
    loop {
        if shutdown.wait_any(&fds, None)? == Readiness::Shutdown {
            return Ok(());
        }
        for source in incoming.sources() {
            loop {
                match source.accept(false)? {
                    Accept::Arrived(arrival) => on_conn(arrival),
                    Accept::Empty => break,
                    Accept::Exhausted(e) => {
                        if let Some(n) = exhausted.check(std::time::Instant::now()) {
                            tracing::warn!("accept: {e}; backing off{}", crate::warn::more(n));
                        }
                        if shutdown.sleep(ACCEPT_BACKOFF)? {
                            return Ok(());
                        }
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_server_on_a_taken_port_fails_and_only_shared_listeners_share() {
        let first = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen(addr).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        // A shared listener cannot join an unshared one either.
        assert!(listen_shared(addr).is_err());
        let a = listen_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = listen_shared(a.local_addr().unwrap()).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        assert_eq!(
            listen(a.local_addr().unwrap()).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    }
}
