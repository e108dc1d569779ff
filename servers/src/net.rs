//! Listening sockets and the shared blocking accept loop (Linux).

use crate::shutdown::{Readiness, Shutdown};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The listen backlog. Large so that bursts of connects queue rather than
/// being refused while a single-threaded server is busy.
pub const BACKLOG: i32 = 1024;

/// Binds a listener the way every architecture expects: `SO_REUSEADDR` (fast
/// restarts) and `SO_REUSEPORT` (so reactor-per-core can bind siblings to the
/// same address, including one chosen by port 0).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts connections until shutdown, calling `on_conn` for each.
///
/// The listener is made non-blocking and polled together with the shutdown
/// fd, so shutdown is prompt and several processes can share the listener
/// (prefork): whoever loses the race to accept just polls again. Errors that
/// concern one connection are skipped; running out of file descriptors backs
/// off briefly instead of spinning, since connections will close and free some.
pub fn accept_loop(
    listener: &TcpListener,
    shutdown: &Shutdown,
    mut on_conn: impl FnMut(TcpStream),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    loop {
        match shutdown.wait_readable(listener.as_raw_fd(), None)? {
            Readiness::Shutdown => return Ok(()),
            Readiness::TimedOut | Readiness::Ready => {}
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    // accept4 does not pass O_NONBLOCK on; be explicit anyway.
                    stream.set_nonblocking(false)?;
                    on_conn(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) if is_resource_exhaustion(&e) => {
                    tracing::warn!("accept: {e}; backing off");
                    if shutdown.sleep(Duration::from_millis(50))? {
                        return Ok(());
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Errors that concern one would-be connection, not the listener.
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// Out of file descriptors or kernel memory: wait for some to free.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
