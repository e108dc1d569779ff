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

/// The first descriptor a socket-activating launcher passes (systemd's
/// `SD_LISTEN_FDS_START`).
const FIRST_INHERITED_FD: i32 = 3;

/// Listening sockets passed by a socket-activating launcher (systemd,
/// `systemd-socket-activate`, a super server), by the protocol of
/// `sd_listen_fds(3)`: `LISTEN_PID` is this process's pid (the variables are
/// someone else's otherwise, and ignored), `LISTEN_FDS` counts descriptors
/// from 3 on, `LISTEN_FDNAMES` names them, colon-separated. `Ok(None)` when
/// none were passed. The variables are removed either way, so that a child
/// never takes them for its own. Each descriptor must be a listening TCP
/// socket; it is made close-on-exec, as a descriptor we open would be.
///
/// Call it before anything else opens a descriptor: the ones from 3 on are
/// taken over.
pub fn inherited_listeners() -> io::Result<Option<Vec<(String, TcpListener)>>> {
    use std::os::fd::FromRawFd;
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let count: i32 = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| bad(format!("LISTEN_FDS={fds:?} is not a count of descriptors")))?;
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let fd = FIRST_INHERITED_FD + i;
        // SAFETY: fcntl on a number that may not be an open descriptor only
        // fails with EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(bad(format!(
                "LISTEN_FDS={count}, but descriptor {fd} is not open"
            )));
        }
        // SAFETY: the launcher handed descriptors 3..3+LISTEN_FDS to this
        // process and nothing else here owns them (the caller runs first).
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let listening = socket.r#type().ok() == Some(Type::STREAM)
            && matches!(socket.domain(), Ok(d) if d == Domain::IPV4 || d == Domain::IPV6)
            && socket.is_listener().unwrap_or(false);
        if !listening {
            // Not ours to close: leave it as the launcher gave it.
            std::mem::forget(socket);
            return Err(bad(format!(
                "descriptor {fd} from the launcher is not a listening TCP socket"
            )));
        }
        socket.set_cloexec(true)?;
        let name = names.get(i as usize).cloned().unwrap_or_default();
        out.push((name, socket.into()));
    }
    Ok(Some(out))
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
    let mut exhausted = crate::warn::Throttled::new();
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
                    if let Some(n) = exhausted.check(std::time::Instant::now()) {
                        tracing::warn!("accept: {e}; backing off{}", crate::warn::more(n));
                    }
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

/// Errors that concern one would-be connection, not the listener. Besides
/// an aborted connection, accept(2) ("Error handling") passes on network
/// errors already pending on the new socket, to be treated like EAGAIN by
/// retrying: ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET,
/// EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH.
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPERM
                | libc::ENETDOWN
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// Out of file descriptors or kernel memory: wait for some to free.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
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

    #[test]
    fn network_errors_pending_on_a_new_socket_are_retried() {
        for errno in [
            libc::ENETDOWN,
            libc::EPROTO,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
            libc::ECONNABORTED,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(is_transient_accept_error(&e), "{e}");
        }
        assert!(!is_transient_accept_error(&io::Error::from_raw_os_error(
            libc::EBADF
        )));
    }
}
