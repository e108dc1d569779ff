//! Where an architecture's connections come from.
//!
//! [`Incoming`] is one or more [`Source`]s, served alike:
//!
//! - a TCP listener serverlab binds (`serve --listen`);
//! - listeners inherited from a socket-activating launcher (systemd,
//!   `systemd-socket-activate`, a super server), any number of them
//!   ([`inherited`]);
//! - a handoff socket, over which a front end passes connections it
//!   accepted, each with the bytes it already read from it ([`handoff`]).
//!
//! Each source is a descriptor that becomes readable when a connection is
//! waiting, and [`Source::accept`] takes one without blocking, so every
//! architecture waits for its sources its own way (a `poll` with the
//! shutdown pipe, a mio loop, tokio) and then takes what arrived as an
//! [`Arrival`]: the connection and the bytes already read from it, which
//! are served before anything read afterwards. The one source that is not
//! here is inetd's connection on standard input (`serve --inetd`): it is a
//! single connection, served by the blocking connection loop directly.
//!
//! [`handoff`]: crate::handoff

use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// One connection that arrived, and the bytes already read from it (empty
/// unless a front end read them before handing it over).
#[derive(Debug)]
pub struct Arrival {
    /// The client's connection.
    pub stream: TcpStream,
    /// Bytes the client sent that were read before the connection got
    /// here: the start of its first request.
    pub already_read: Vec<u8>,
}

impl From<TcpStream> for Arrival {
    fn from(stream: TcpStream) -> Arrival {
        Arrival {
            stream,
            already_read: Vec::new(),
        }
    }
}

/// One place connections come from.
#[derive(Debug)]
pub enum Source {
    /// A listening TCP socket.
    Listener(TcpListener),
    /// A handoff socket (see [`crate::handoff`]).
    Handoff(UnixDatagram),
}

/// What one [`Source::accept`] found.
#[derive(Debug)]
pub enum Accept {
    /// A connection.
    Arrived(Arrival),
    /// Nothing is waiting now.
    Empty,
    /// Out of descriptors or kernel memory: connections will close and
    /// free some, so wait a little (the rest wait in the source's queue).
    Exhausted(io::Error),
}

impl Source {
    /// Takes the next waiting connection without blocking (the source must
    /// be non-blocking, see [`Incoming::set_nonblocking`]), made blocking or
    /// not as asked. Errors that concern one would-be connection are
    /// skipped; an error is the source's own failure.
    pub fn accept(&self, nonblocking: bool) -> io::Result<Accept> {
        loop {
            let attempt = match self {
                Source::Listener(l) => accept4(l, nonblocking),
                Source::Handoff(h) => crate::handoff::receive(h, nonblocking),
            };
            return match attempt {
                Ok(arrival) => Ok(Accept::Arrived(arrival)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Accept::Empty),
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) if is_resource_exhaustion(&e) => Ok(Accept::Exhausted(e)),
                Err(e) => Err(e),
            };
        }
    }

    /// Another handle on the same source (the loops of reactor-per-core
    /// share one when they cannot each bind their own).
    pub fn try_clone(&self) -> io::Result<Source> {
        Ok(match self {
            Source::Listener(l) => Source::Listener(l.try_clone()?),
            Source::Handoff(h) => Source::Handoff(h.try_clone()?),
        })
    }

    /// What it is, for people: the listening address, or the handoff path.
    pub fn describe(&self) -> String {
        match self {
            Source::Listener(l) => match l.local_addr() {
                Ok(a) => a.to_string(),
                Err(_) => "a listener".into(),
            },
            Source::Handoff(h) => match h
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(p) => format!("handoff socket {p}"),
                None => "a handoff socket".into(),
            },
        }
    }
}

impl AsRawFd for Source {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Source::Listener(l) => l.as_raw_fd(),
            Source::Handoff(h) => h.as_raw_fd(),
        }
    }
}

/// `accept4(2)` with the connection's flags set at once: close-on-exec, and
/// non-blocking if asked (no extra system call per connection either way).
fn accept4(listener: &TcpListener, nonblocking: bool) -> io::Result<Arrival> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: a valid listening descriptor; no address is asked for.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor, owned by nothing else.
    Ok(Arrival::from(unsafe { TcpStream::from_raw_fd(fd) }))
}

/// Every source an architecture serves. Never empty.
#[derive(Debug)]
pub struct Incoming {
    sources: Vec<Source>,
}

impl Incoming {
    /// These sources; an error if there are none.
    pub fn new(sources: Vec<Source>) -> io::Result<Incoming> {
        if sources.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no source of connections",
            ));
        }
        Ok(Incoming { sources })
    }

    /// The sources.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Makes every source non-blocking, as [`Source::accept`] needs.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        for s in &self.sources {
            match s {
                Source::Listener(l) => l.set_nonblocking(true)?,
                Source::Handoff(h) => h.set_nonblocking(true)?,
            }
        }
        Ok(())
    }

    /// Other handles on the same sources.
    pub fn try_clone(&self) -> io::Result<Incoming> {
        let sources = self
            .sources
            .iter()
            .map(Source::try_clone)
            .collect::<io::Result<_>>()?;
        Ok(Incoming { sources })
    }

    /// The sources, to own.
    pub fn into_sources(self) -> Vec<Source> {
        self.sources
    }

    /// The listener, when it is the only source.
    pub fn lone_listener(&self) -> Option<&TcpListener> {
        match self.sources.as_slice() {
            [Source::Listener(l)] => Some(l),
            _ => None,
        }
    }

    /// Every source, described, comma-separated.
    pub fn describe(&self) -> String {
        let all: Vec<String> = self.sources.iter().map(Source::describe).collect();
        all.join(", ")
    }

    /// Closes every source's descriptor in a forked child, which serves
    /// its one connection and exits without dropping its copy of `self`
    /// (so each descriptor is closed exactly once).
    pub fn close_in_child(&self) {
        for s in &self.sources {
            // SAFETY: our own open descriptors; the caller never uses or
            // drops `self` again in this process (see above).
            unsafe { libc::close(s.as_raw_fd()) };
        }
    }
}

impl From<TcpListener> for Incoming {
    fn from(listener: TcpListener) -> Incoming {
        Incoming {
            sources: vec![Source::Listener(listener)],
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

/// The first descriptor a socket-activating launcher passes (systemd's
/// `SD_LISTEN_FDS_START`).
const FIRST_INHERITED_FD: i32 = 3;

/// The sources passed by a socket-activating launcher (systemd,
/// `systemd-socket-activate`, a super server), by the protocol of
/// `sd_listen_fds(3)`: `LISTEN_PID` is this process's pid (the variables are
/// someone else's otherwise, and ignored), `LISTEN_FDS` counts descriptors
/// from 3 on, `LISTEN_FDNAMES` names them, colon-separated. `Ok(None)` when
/// none were passed. The variables are removed either way, so that a child
/// never takes them for its own. Each descriptor must be a listening TCP
/// socket or a bound Unix datagram socket (a handoff socket); each is made
/// close-on-exec, as a descriptor we open would be.
///
/// Call it before anything else opens a descriptor: the ones from 3 on are
/// taken over.
pub fn inherited() -> io::Result<Option<Vec<(String, Source)>>> {
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
        let (domain, kind) = (socket.domain().ok(), socket.r#type().ok());
        let source = if (domain == Some(Domain::IPV4) || domain == Some(Domain::IPV6))
            && kind == Some(Type::STREAM)
            && socket.is_listener().unwrap_or(false)
        {
            Source::Listener(socket.into())
        } else if domain == Some(Domain::UNIX) && kind == Some(Type::DGRAM) {
            Source::Handoff(UnixDatagram::from(std::os::fd::OwnedFd::from(socket)))
        } else {
            // Not ours to close: leave it as the launcher gave it.
            std::mem::forget(socket);
            return Err(bad(format!(
                "descriptor {fd} from the launcher is neither a listening TCP socket nor a handoff (Unix datagram) socket"
            )));
        };
        set_cloexec(&source)?;
        let name = names.get(i as usize).cloned().unwrap_or_default();
        out.push((name, source));
    }
    Ok(Some(out))
}

fn set_cloexec(source: &Source) -> io::Result<()> {
    // SAFETY: fcntl on our own open descriptor.
    if unsafe { libc::fcntl(source.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Accepting takes each waiting connection once, flags as asked, and
    /// says when nothing is left.
    #[test]
    fn accept_takes_what_waits_then_says_empty() {
        let incoming = Incoming::from(TcpListener::bind("127.0.0.1:0").unwrap());
        incoming.set_nonblocking().unwrap();
        let addr = incoming.lone_listener().unwrap().local_addr().unwrap();
        let source = &incoming.sources()[0];
        assert!(matches!(source.accept(false).unwrap(), Accept::Empty));
        let _a = TcpStream::connect(addr).unwrap();
        let _b = TcpStream::connect(addr).unwrap();
        let wait = || std::thread::sleep(std::time::Duration::from_millis(20));
        wait();
        for nonblocking in [true, false] {
            let Accept::Arrived(arrival) = source.accept(nonblocking).unwrap() else {
                panic!("a connection waits");
            };
            assert!(arrival.already_read.is_empty());
            // SAFETY: fcntl on the arrival's own descriptor.
            let fl = unsafe { libc::fcntl(arrival.stream.as_raw_fd(), libc::F_GETFL) };
            assert_eq!(fl & libc::O_NONBLOCK != 0, nonblocking);
            // SAFETY: as above.
            let fd = unsafe { libc::fcntl(arrival.stream.as_raw_fd(), libc::F_GETFD) };
            assert!(fd & libc::FD_CLOEXEC != 0);
        }
        assert!(matches!(source.accept(false).unwrap(), Accept::Empty));
        assert!(Incoming::new(Vec::new()).is_err());
    }
}
