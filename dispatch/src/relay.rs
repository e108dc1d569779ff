//! The splice relay: one thread, one mio loop, every relayed connection.
//!
//! Each link is a client socket, a replica socket and two pipes. Bytes go
//! socket → pipe → socket with non-blocking `splice(2)`, never through user
//! space; a direction drains its pipe before reading more, so a slow reader
//! holds at most one pipe's worth (64 KiB) per direction. Readiness is
//! edge-triggered: a readable side drives the direction that reads it, a
//! writable side the one that writes it; a read shorter than asked means
//! the socket is drained (no extra read that would only say "would
//! block"), unless its peer has closed, when it reads on to the end. A side that ends (end of file) ends the other
//! side's writing once its pipe is empty (half-close passes through); a
//! link is closed when both directions have ended, or at the first error.
//! New links arrive from the accepting thread through a channel and a
//! waker.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

const WAKER: Token = Token(usize::MAX - 1);
/// The most a direction moves in one splice.
const CHUNK: usize = 64 * 1024;

/// A link to relay: the client, the replica, and whose it is.
pub struct NewLink {
    pub client: std::net::TcpStream,
    pub upstream: std::net::TcpStream,
    pub replica: usize,
}

/// Where the accepting thread sends links.
pub struct Handle {
    tx: Sender<NewLink>,
    waker: Arc<Waker>,
}

impl Handle {
    /// Gives `link` to the relay thread.
    pub fn relay(&self, link: NewLink) -> io::Result<()> {
        self.tx
            .send(link)
            .map_err(|_| io::Error::other("the relay thread is gone"))?;
        self.waker.wake()
    }
}

/// One direction: from a socket, through a pipe, to the other socket.
struct Direction {
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    /// Bytes in the pipe.
    buffered: usize,
    /// The source said end of file.
    eof: bool,
    /// The destination's writing side is shut.
    done: bool,
    /// An event said the source's peer closed: read on to the end of file
    /// (otherwise a short read means the socket is drained).
    src_closed: bool,
}

impl Direction {
    fn new() -> io::Result<Direction> {
        let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Direction {
            pipe_r,
            pipe_w,
            buffered: 0,
            eof: false,
            done: false,
            src_closed: false,
        })
    }

    /// Moves what it can from `from` to `to`; an error ends the link.
    fn pump(&mut self, from: &TcpStream, to: &TcpStream) -> io::Result<()> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            if self.buffered > 0 {
                match splice(&self.pipe_r, None, to.as_fd(), None, self.buffered, flags) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.buffered -= n,
                    Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            if self.eof {
                if !self.done {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    self.done = true;
                }
                return Ok(());
            }
            match splice(from.as_fd(), None, &self.pipe_w, None, CHUNK, flags) {
                Ok(0) => self.eof = true,
                Ok(n) if n < CHUNK && !self.src_closed => {
                    // Drained (edge-triggered: more data raises a new
                    // edge): send it on, and stop without another read
                    // that would only say "would block".
                    self.buffered += n;
                    return match splice(&self.pipe_r, None, to.as_fd(), None, self.buffered, flags)
                    {
                        Ok(m) => {
                            self.buffered -= m;
                            Ok(())
                        }
                        Err(nix::errno::Errno::EAGAIN) => Ok(()),
                        Err(e) => Err(e.into()),
                    };
                }
                Ok(n) => self.buffered += n,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct Link {
    client: TcpStream,
    upstream: TcpStream,
    up: Direction,
    down: Direction,
    replica: usize,
    /// Writable interest registered (client, upstream): only while a pipe
    /// holds what its destination could not take, or every acknowledgement
    /// that frees send buffer space would wake the loop.
    watching_writes: (bool, bool),
}

/// Starts the relay thread; `closed(replica)` is called as each link ends.
pub fn start(closed: impl Fn(usize) + Send + 'static) -> io::Result<Handle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || run(poll, rx, closed))?;
    Ok(Handle { tx, waker })
}

fn run(mut poll: Poll, rx: Receiver<NewLink>, closed: impl Fn(usize)) {
    let mut links: Vec<Option<Link>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("relay: {e}");
            return;
        }
        for event in events.iter() {
            if event.token() == WAKER {
                loop {
                    match rx.try_recv() {
                        Ok(new) => {
                            let slot = free.pop().unwrap_or_else(|| {
                                links.push(None);
                                links.len() - 1
                            });
                            match add(&poll, slot, new) {
                                Ok(link) => {
                                    links[slot] = Some(link);
                                    drive(&poll, &mut links, &mut free, slot, true, true, &closed);
                                }
                                Err((replica, e)) => {
                                    tracing::warn!("relay: {e}");
                                    free.push(slot);
                                    closed(replica);
                                }
                            }
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        // The dispatcher is gone: so is the relay.
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            }
            let (slot, upstream_side) = (event.token().0 / 2, event.token().0 % 2 == 1);
            if let Some(link) = links.get_mut(slot).and_then(Option::as_mut) {
                if event.is_read_closed() || event.is_error() {
                    // Reading on to the end is due on this side.
                    let from_this_side = if upstream_side {
                        &mut link.down
                    } else {
                        &mut link.up
                    };
                    from_this_side.src_closed = true;
                }
            }
            // Readable: the direction that reads this side; writable: the
            // one that writes it (its pipe may hold what it could not take).
            let reads = event.is_readable() || event.is_read_closed() || event.is_error();
            let writes = event.is_writable();
            let (up, down) = match upstream_side {
                false => (reads, writes),
                true => (writes, reads),
            };
            drive(&poll, &mut links, &mut free, slot, up, down, &closed);
        }
    }
}

fn add(poll: &Poll, slot: usize, new: NewLink) -> Result<Link, (usize, io::Error)> {
    let fail = |e| (new.replica, e);
    for s in [&new.client, &new.upstream] {
        s.set_nonblocking(true).map_err(fail)?;
        let _ = s.set_nodelay(true);
    }
    let mut link = Link {
        client: TcpStream::from_std(new.client),
        upstream: TcpStream::from_std(new.upstream),
        up: Direction::new().map_err(|e| (new.replica, e))?,
        down: Direction::new().map_err(|e| (new.replica, e))?,
        replica: new.replica,
        watching_writes: (false, false),
    };
    let registry = poll.registry();
    registry
        .register(&mut link.client, Token(slot * 2), Interest::READABLE)
        .and_then(|()| {
            registry.register(&mut link.upstream, Token(slot * 2 + 1), Interest::READABLE)
        })
        .map_err(|e| (new.replica, e))?;
    Ok(link)
}

/// Drives the directions asked of link `slot` (client → replica `up`,
/// replica → client `down`); closes it when done or failed.
#[allow(clippy::too_many_arguments)]
fn drive(
    poll: &Poll,
    links: &mut [Option<Link>],
    free: &mut Vec<usize>,
    slot: usize,
    up: bool,
    down: bool,
    closed: &impl Fn(usize),
) {
    let Some(link) = links.get_mut(slot).and_then(Option::as_mut) else {
        return;
    };
    let ok = (!up || link.up.pump(&link.client, &link.upstream).is_ok())
        && (!down || link.down.pump(&link.upstream, &link.client).is_ok());
    if ok && !(link.up.done && link.down.done) {
        // A pipe that holds bytes waits for its destination to be writable.
        let want = (link.down.buffered > 0, link.up.buffered > 0);
        let registry = poll.registry();
        let interest = |w: bool| {
            if w {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            }
        };
        if want.0 != link.watching_writes.0 {
            let _ = registry.reregister(&mut link.client, Token(slot * 2), interest(want.0));
        }
        if want.1 != link.watching_writes.1 {
            let _ = registry.reregister(&mut link.upstream, Token(slot * 2 + 1), interest(want.1));
        }
        link.watching_writes = want;
        return;
    }
    let mut link = links[slot].take().expect("checked above");
    let _ = poll.registry().deregister(&mut link.client);
    let _ = poll.registry().deregister(&mut link.upstream);
    free.push(slot);
    closed(link.replica);
}
