//! Lingering close: ending a connection so that its last response still
//! reaches the client.
//!
//! Closing a socket with unread input makes the kernel send a reset, and a
//! reset can destroy a response the client has not read yet — typically
//! the 400 or 408 that made the server close. So the server stops writing
//! (the client sees the end of the stream after the response), then reads
//! and discards what the client still sends, for at most [`LINGER`] in all
//! and [`LINGER_MAX_BYTES`], and only then closes: a client that keeps
//! trickling bytes cannot hold the server longer. The blocking servers do
//! it in one call ([`close`]); the readiness loop drains what has arrived
//! each time the socket is readable ([`drain_available`]), under a timer.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The longest a closing connection's input is drained.
pub const LINGER: Duration = Duration::from_millis(500);
/// The most bytes drained from it.
pub const LINGER_MAX_BYTES: usize = 256 * 1024;

/// Lingering close on a blocking socket: stop writing and, if the client
/// may still be sending (`unread_input`), drain within the bounds above.
pub fn close(mut stream: TcpStream, unread_input: bool) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if !unread_input {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Reads and discards what has arrived on a non-blocking socket, adding
/// to `drained`. True when lingering is over: the client closed, an error,
/// or [`LINGER_MAX_BYTES`] reached; false when it should go on once more
/// arrives.
pub fn drain_available(stream: &mut impl Read, drained: &mut usize) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 && *drained + n < LINGER_MAX_BYTES => *drained += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that yields `chunks` then says "would block", or ends.
    struct Script(Vec<io::Result<usize>>);

    impl Read for Script {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.0.remove(0)
        }
    }

    #[test]
    fn draining_goes_on_until_the_end_the_cap_or_an_error() {
        let mut drained = 0;
        let mut more_later = Script(vec![
            Ok(100),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(50),
        ]);
        assert!(!drain_available(&mut more_later, &mut drained));
        assert_eq!(drained, 150);
        assert!(
            drain_available(&mut Script(vec![Ok(0)]), &mut drained),
            "end of stream"
        );
        let mut capped = 0;
        let mut flood = Script((0..=LINGER_MAX_BYTES / 4096).map(|_| Ok(4096)).collect());
        assert!(drain_available(&mut flood, &mut capped), "the cap ends it");
        assert!(capped < LINGER_MAX_BYTES);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(drain_available(&mut Script(vec![Err(reset)]), &mut 0));
    }
}
