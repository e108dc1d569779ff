//! TCP handoff: a front end (the dispatcher) accepts a connection, perhaps
//! reads the start of the request to choose a server, then passes the
//! connection itself to that server, which answers the client directly;
//! the front end closes its copy and leaves the data path.
//!
//! The channel is a Unix **datagram** socket bound at a path (`serve
//! --handoff PATH`). One datagram carries one connection: [`MAGIC`], then
//! the bytes already read from it (at most [`MAX_ALREADY_READ`]), with the
//! connection's descriptor as `SCM_RIGHTS` ancillary data. Datagrams keep
//! their boundaries and each is delivered to exactly one reader, so the
//! processes and loops of one server (prefork's children, reactor-per-core's
//! loops) can all read the same socket. A path, not an abstract name: the
//! socket is reachable from other network namespaces (a server in a
//! container), and the descriptor keeps its own namespace.
//!
//! A datagram that is not a handoff (no descriptor, or more than one, a
//! descriptor that is not a connected TCP socket, a wrong magic, a
//! truncated message) is dropped with a warning, its descriptors closed;
//! the server serves on.

use crate::incoming::Arrival;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use socket2::{Domain, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// What every handoff datagram begins with (serverlab handoff, version 1).
pub const MAGIC: &[u8; 4] = b"SLH1";

/// The most already-read bytes one handoff carries: a request head fits
/// many times over, and the datagram stays well under the socket's buffer.
pub const MAX_ALREADY_READ: usize = 64 * 1024;

/// Binds the handoff socket at `path`, readable and writable by its owner
/// only. A socket file left by a server that is gone is replaced; one a
/// live server is bound to, or any other file, is an error. The returned
/// [`BoundPath`] removes the file when dropped.
pub fn bind(path: &Path) -> io::Result<(UnixDatagram, BoundPath)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        match UnixDatagram::unbound()?.connect(path) {
            Ok(()) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another server", path.display()),
                ))
            }
            // Nobody is bound to it any more: a leftover.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        }
    }
    let socket = UnixDatagram::bind(path)?;
    let bound = BoundPath(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok((socket, bound))
}

/// The file of a bound handoff socket, removed on drop.
#[derive(Debug)]
pub struct BoundPath(PathBuf);

impl BoundPath {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A channel to the handoff socket at `path`, for [`send`].
pub fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let channel = UnixDatagram::unbound()?;
    channel.connect(path)?;
    Ok(channel)
}

/// Hands `conn` to the server at the other end of `channel`, with the bytes
/// already read from it. The caller then closes its own copy. Blocks while
/// the server's queue is full, unless `channel` is non-blocking (then
/// `WouldBlock`: the caller decides).
pub fn send(channel: &UnixDatagram, conn: &impl AsFd, already_read: &[u8]) -> io::Result<()> {
    if already_read.len() > MAX_ALREADY_READ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} bytes already read; a handoff carries at most {MAX_ALREADY_READ}",
                already_read.len()
            ),
        ));
    }
    let fds = [conn.as_fd().as_raw_fd()];
    let parts = [IoSlice::new(MAGIC), IoSlice::new(already_read)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<UnixAddr>(channel.as_raw_fd(), &parts, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives the next handed-off connection, without waiting: `WouldBlock`
/// when none is queued. The connection is made blocking or not as asked
/// (its flags are shared with the sender's copy, so they are set here,
/// whatever the sender left).
pub fn receive(socket: &UnixDatagram, nonblocking: bool) -> io::Result<Arrival> {
    thread_local! {
        // Made (and zeroed) once per thread, not per message: every accept
        // loop ends with a call that finds the queue empty.
        static BUF: std::cell::RefCell<Vec<u8>> =
            std::cell::RefCell::new(vec![0; MAGIC.len() + MAX_ALREADY_READ]);
    }
    BUF.with(|buf| receive_into(socket, nonblocking, &mut buf.borrow_mut()))
}

fn receive_into(socket: &UnixDatagram, nonblocking: bool, buf: &mut [u8]) -> io::Result<Arrival> {
    loop {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let (len, flags, fds) = {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut fds = Vec::new();
            for c in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(received) = c {
                    // SAFETY: the kernel just installed these descriptors
                    // in this process; nothing else knows them.
                    fds.extend(
                        received
                            .into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            (msg.bytes, msg.flags, fds)
        };
        match check(&buf[..len], flags, fds) {
            Ok(stream) => {
                stream.set_nonblocking(nonblocking)?;
                let already_read = buf[MAGIC.len()..len].to_vec();
                return Ok(Arrival {
                    stream,
                    already_read,
                });
            }
            // Its descriptors are closed as they drop.
            Err(why) => tracing::warn!("dropped a message on the handoff socket: {why}"),
        }
    }
}

/// The connection in a received datagram, or why it is not a handoff.
fn check(bytes: &[u8], flags: MsgFlags, mut fds: Vec<OwnedFd>) -> Result<TcpStream, String> {
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err("truncated".into());
    }
    if !bytes.starts_with(MAGIC) {
        return Err(format!("it does not begin with {MAGIC:?}"));
    }
    if fds.len() != 1 {
        return Err(format!("{} descriptors, not one", fds.len()));
    }
    let socket = Socket::from(fds.remove(0));
    let tcp = matches!(socket.domain(), Ok(d) if d == Domain::IPV4 || d == Domain::IPV6)
        && socket.r#type().ok() == Some(Type::STREAM)
        && !socket.is_listener().unwrap_or(true);
    if !tcp {
        return Err("the descriptor is not a TCP connection".into());
    }
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("serverlab-test-{tag}-{}.sock", std::process::id()))
    }

    /// A connection and the bytes read from it arrive together; the
    /// receiver reads the rest from the same connection, and answers the
    /// client directly.
    #[test]
    fn a_connection_arrives_with_what_was_read() {
        let path = temp_path("handoff");
        let (socket, bound) = bind(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        let mut first = [0u8; 4];
        accepted.read_exact(&mut first).unwrap();
        assert_eq!(
            receive(&socket, false).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        send(&connect(bound.path()).unwrap(), &accepted, &first).unwrap();
        drop(accepted);
        let mut arrival = receive(&socket, false).unwrap();
        assert_eq!(arrival.already_read, b"GET ");
        let mut rest = [0u8; 14];
        arrival.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"/ HTTP/1.1\r\n\r\n");
        arrival.stream.write_all(b"answer").unwrap();
        drop(arrival);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "answer");
        drop(bound);
        assert!(!path.exists(), "the socket file is removed");
    }

    /// Datagrams that are not handoffs are dropped, and the next real one
    /// is still received; too many bytes are refused at the sender.
    #[test]
    fn what_is_not_a_handoff_is_dropped() {
        let path = temp_path("handoff-bad");
        let (socket, bound) = bind(&path).unwrap();
        let channel = connect(bound.path()).unwrap();
        channel.send(b"SLH1 but no descriptor").unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        send(&channel, &a, b"").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(send(&channel, &listener, b"").is_ok());
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let too_much = vec![b'x'; MAX_ALREADY_READ + 1];
        assert_eq!(
            send(&channel, &client, &too_much).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        send(&channel, &client, b"ok").unwrap();
        let arrival = receive(&socket, true).unwrap();
        assert_eq!(arrival.already_read, b"ok");
        // The very socket that was sent.
        assert_eq!(
            arrival.stream.local_addr().unwrap(),
            client.local_addr().unwrap()
        );
        assert_eq!(
            receive(&socket, true).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    /// A path a live server holds is refused; a leftover socket file is
    /// replaced; a file that is not a socket is never touched.
    #[test]
    fn binding_refuses_a_live_socket_and_replaces_a_leftover() {
        let path = temp_path("handoff-bind");
        let (live, bound) = bind(&path).unwrap();
        assert_eq!(bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(live);
        std::mem::forget(bound); // the file stays behind, as after a crash
        let (_again, bound) = bind(&path).unwrap();
        drop(bound);
        std::fs::write(&path, "not a socket").unwrap();
        assert_eq!(
            bind(&path).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
        std::fs::remove_file(&path).unwrap();
    }
}
