//! The services served inside the super server, without a process: echo
//! (RFC 862), discard (RFC 863), daytime (RFC 867), an HTTP `hello`, and
//! the status endpoint. Each connection is a small non-blocking state
//! machine driven by the loop's readiness events, with an idle deadline
//! and bounded buffers, so that the cost of a fork and an exec can be
//! measured against none.

use crate::config::Builtin;
use servers::codec::{self, Limits, Response};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A built-in connection that sends nothing for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// echo stops reading while this much waits to be sent back.
const ECHO_BACKLOG: usize = 64 * 1024;

/// Whether a connection goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Going,
    Done,
}

/// One built-in connection (`kind` `None`: the status endpoint).
pub struct Conn {
    stream: mio::net::TcpStream,
    kind: Option<Builtin>,
    service: String,
    peer: Option<IpAddr>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Close once `out` is sent.
    last: bool,
    deadline: Instant,
}

impl Conn {
    /// A connection of service `service` (empty for status).
    pub fn new(
        stream: std::net::TcpStream,
        kind: Option<Builtin>,
        service: String,
        now: Instant,
    ) -> Conn {
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let _ = stream.set_nonblocking(true);
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream: mio::net::TcpStream::from_std(stream),
            kind,
            service,
            peer,
            inbuf: Vec::new(),
            out: Vec::new(),
            last: false,
            deadline: now + IDLE,
        };
        if kind == Some(Builtin::Daytime) {
            conn.out = format!("{}\r\n", daytime(SystemTime::now())).into_bytes();
            conn.last = true;
        }
        conn
    }

    pub fn stream(&mut self) -> &mut mio::net::TcpStream {
        &mut self.stream
    }

    pub fn kind(&self) -> Option<Builtin> {
        self.kind
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Does what the socket is ready for; `status` is the text `GET
    /// /status` answers.
    pub fn drive(&mut self, status: &str) -> Progress {
        loop {
            match self.flush() {
                Err(_) => return Progress::Done,
                Ok(false) => return Progress::Going,
                Ok(true) if self.last => {
                    let _ = self.stream.shutdown(std::net::Shutdown::Write);
                    return Progress::Done;
                }
                Ok(true) => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => return self.end_of_input(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Going,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Done,
            };
            self.deadline = Instant::now() + IDLE;
            match self.kind {
                Some(Builtin::Echo) => {
                    self.out.extend_from_slice(&chunk[..n]);
                    if self.out.len() >= ECHO_BACKLOG {
                        // Sent back first; writable readiness resumes us.
                        if !matches!(self.flush(), Ok(true)) {
                            return Progress::Going;
                        }
                    }
                }
                Some(Builtin::Discard) | Some(Builtin::Daytime) => {}
                Some(Builtin::Hello) | None => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.answer(status);
                }
            }
        }
    }

    /// The client closed its side.
    fn end_of_input(&mut self) -> Progress {
        if self.kind == Some(Builtin::Echo) && !self.out.is_empty() {
            self.last = true;
            return match self.flush() {
                Ok(true) => Progress::Done,
                Ok(false) => Progress::Going,
                Err(_) => Progress::Done,
            };
        }
        Progress::Done
    }

    /// HTTP: answers the request once it is complete (or malformed).
    fn answer(&mut self, status: &str) {
        let response = match codec::parse_request(&self.inbuf, &Limits::default()) {
            Ok(None) => return,
            Err(e) => e.response(),
            Ok(Some((req, _))) => match (self.kind, req.path()) {
                (Some(_), _) => Response::text(200, "Hello, World!"),
                (None, "/status") => Response::json(200, status.to_string()),
                (None, _) => Response::text(404, "try /status"),
            },
        };
        codec::write_response(&mut self.out, &response, false, false);
        self.last = true;
    }

    /// Writes what the socket takes; true when nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// `Wed, 02 Dec 2026 15:04:05 GMT`: the date as HTTP writes it (RFC 867
/// leaves the format free).
pub fn daytime(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daytime_reads_as_a_date() {
        assert_eq!(daytime(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_223_845);
        assert_eq!(daytime(t), "Wed, 02 Dec 2026 15:04:05 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(daytime(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
