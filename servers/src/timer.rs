//! A fine-grained timer for mio loops (Linux `timerfd`), used by the
//! servers' reactor and by the load generator.
//!
//! `epoll_wait` takes its timeout in whole milliseconds, rounded up: that
//! made wrk2's schedule coarse (its issue #78) and made the reactor's 10 ms
//! waits fire 0.5–1 ms late. A timerfd armed with nanosecond precision and
//! registered in the mio poll wakes the loop on time instead.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// A one-shot monotonic timer that mio can poll.
pub struct Timer {
    fd: OwnedFd,
    armed: Option<Instant>,
}

impl Timer {
    /// Creates the timer and registers it under `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd, armed: None })
    }

    /// Makes the timer fire at `at` (at once if that has passed). Re-arming
    /// for the same instant is free.
    pub fn arm(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // A zero it_value would disarm the timer; 1 ns fires at once.
        let left = at
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_nanos(1));
        self.set(left)?;
        self.armed = Some(at);
        Ok(())
    }

    /// When it will fire, if armed and not yet acknowledged.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Stops the timer (a no-op when it is not armed).
    pub fn disarm(&mut self) -> io::Result<()> {
        if self.armed.is_some() {
            self.set(std::time::Duration::ZERO)?;
            self.armed = None;
        }
        Ok(())
    }

    /// Sets the timer to fire `left` from now; zero disarms it.
    fn set(&self, left: std::time::Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Clears a fired timer's readiness (call on its event).
    pub fn acknowledge(&mut self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer; EAGAIN is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        self.armed = None;
    }
}
