//! A shutdown signal that every kind of server can wait on.
//!
//! It is a flag plus a pipe: triggering sets the flag and writes one byte
//! that is never read, so the pipe's read end stays readable for good. A
//! blocking thread `poll()`s it beside its socket, a mio loop registers it
//! like any other source, and forked children inherit it, so one trigger
//! wakes them all without signals. The flag lives in shared memory, so
//! forked children see it set too and close after their in-flight response.

use crate::shm::Shared;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Inner {
    /// In shared memory, so the parent's trigger is seen by forked children.
    flag: Shared<AtomicBool>,
    read: OwnedFd,
    write: OwnedFd,
}

/// Cloneable handle to one shutdown signal.
#[derive(Clone)]
pub struct Shutdown(Arc<Inner>);

/// What [`Shutdown::wait_readable`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The fd is readable (or has an error or hang-up to report).
    Ready,
    /// Shutdown was triggered.
    Shutdown,
    /// The deadline passed.
    TimedOut,
}

impl Shutdown {
    /// A new, untriggered signal.
    pub fn new() -> io::Result<Shutdown> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Shutdown(Arc::new(Inner {
            // SAFETY: a zero byte is `false`; an atomic is process-safe.
            flag: unsafe { Shared::zeroed()? },
            read,
            write,
        })))
    }

    /// Asks every server holding this signal to stop. Safe to call from a
    /// signal-handling thread, and more than once.
    pub fn trigger(&self) {
        if !self.0.flag.swap(true, Ordering::SeqCst) {
            // SAFETY: writing one byte from a valid buffer to our own pipe.
            unsafe { libc::write(self.0.write.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        }
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// The fd that becomes (and stays) readable on trigger.
    pub fn fd(&self) -> RawFd {
        self.0.read.as_raw_fd()
    }

    /// Sleeps for `d` unless shutdown comes first; returns whether it did.
    pub fn sleep(&self, d: Duration) -> io::Result<bool> {
        let until = Some(Instant::now() + d);
        Ok(self.wait_readable(self.fd(), until)? == Readiness::Shutdown)
    }

    /// Waits until `fd` is readable, shutdown is triggered, or `deadline`
    /// passes (`None`: no deadline).
    pub fn wait_readable(&self, fd: RawFd, deadline: Option<Instant>) -> io::Result<Readiness> {
        self.poll(&mut [pollin(fd), pollin(self.fd())], deadline)
    }

    /// Waits until any of `fds` is readable, shutdown is triggered, or
    /// `deadline` passes.
    pub fn wait_any(&self, fds: &[RawFd], deadline: Option<Instant>) -> io::Result<Readiness> {
        let mut all: Vec<libc::pollfd> = fds.iter().map(|&fd| pollin(fd)).collect();
        all.push(pollin(self.fd()));
        self.poll(&mut all, deadline)
    }

    /// `poll(2)` over `fds`, the last of which is the shutdown pipe.
    fn poll(&self, fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<Readiness> {
        loop {
            if self.is_triggered() {
                return Ok(Readiness::Shutdown);
            }
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Readiness::TimedOut);
                    }
                    // Round up so we never spin on a sub-millisecond rest.
                    (left + Duration::from_micros(999))
                        .as_millis()
                        .min(i32::MAX as u128) as i32
                }
            };
            // SAFETY: `fds` is a valid slice of pollfd entries.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let (theirs, ours) = fds.split_at(fds.len() - 1);
            if ours[0].revents != 0 {
                return Ok(Readiness::Shutdown);
            }
            if theirs.iter().any(|p| p.revents != 0) {
                return Ok(Readiness::Ready);
            }
        }
    }
}

/// A `poll` entry waiting for `fd` to become readable.
fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_wakes_a_waiter() {
        let s = Shutdown::new().unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(
            s.wait_readable(a.as_raw_fd(), deadline).unwrap(),
            Readiness::TimedOut
        );
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_readable(a.as_raw_fd(), None).unwrap());
        s.trigger();
        s.trigger();
        assert_eq!(t.join().unwrap(), Readiness::Shutdown);
        assert!(s.is_triggered());
    }
}
