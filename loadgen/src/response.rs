//! The response parser: just enough HTTP/1.1 to find where each response
//! ends (status line, `Content-Length`, chunked encoding, or the end of the
//! connection) and, for session flows, the few headers and the body they
//! check. I/O-free: bytes in, responses out, so it is tested byte by byte.

use servers::protocol::{COOKIE, SESSION, SESSION_UNKNOWN, TOKEN};

/// What the parser keeps of one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
    /// The body, when the parser was asked to keep it (flows); bodies are
    /// otherwise skipped without copying.
    pub body: Vec<u8>,
    /// `Set-Cookie: sid=...` value, if kept and present.
    pub sid: Option<String>,
    /// `X-State-Token` value, if kept and present.
    pub state_token: Option<String>,
    /// `X-Session: unknown` was present (kept headers only).
    pub session_unknown: bool,
}

/// A response that cannot be parsed; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed response: {0}")]
pub struct ParseError(pub &'static str);

/// Responses are refused past this head size (a server gone wrong).
const MAX_HEAD: usize = 64 * 1024;
/// And past this many headers.
const MAX_HEADERS: usize = 64;
/// Kept bodies are capped (flows only need a short number).
const MAX_KEPT_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Waiting for the head.
    Head,
    /// `n` body bytes left.
    Length(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// `n` bytes of chunk data left, then CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// Trailer lines until an empty one.
    Trailers,
    /// Until the connection closes.
    UntilClose,
}

/// Incremental parser for the responses of one connection.
#[derive(Debug)]
pub struct Parser {
    keep: bool,
    state: Body,
    current: Response,
    /// Bytes of a head (or chunk line) already looked at without finding
    /// its end, so a trickled head is not rescanned from the start.
    scanned: usize,
}

/// What [`Parser::advance`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// `consumed` bytes were used; more are needed to finish a response.
    More {
        /// Bytes to drop from the front of the input.
        consumed: usize,
    },
    /// A response ended after `consumed` bytes.
    Done {
        /// Bytes to drop from the front of the input.
        consumed: usize,
        /// The response.
        response: Response,
    },
}

impl Parser {
    /// A parser; `keep` keeps bodies and the flow headers.
    pub fn new(keep: bool) -> Parser {
        Parser {
            keep,
            state: Body::Head,
            current: Response::default(),
            scanned: 0,
        }
    }

    /// Whether no response is partly parsed.
    pub fn idle(&self) -> bool {
        self.state == Body::Head && self.scanned == 0
    }

    /// Forgets any partial response (the connection was reset).
    pub fn reset(&mut self) {
        *self = Parser::new(self.keep);
    }

    /// Parses from the front of `input`. The caller drops `consumed` bytes
    /// and calls again while input remains.
    pub fn advance(&mut self, input: &[u8]) -> Result<Step, ParseError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                Body::Head => {
                    let Some(end) = find_crlfcrlf(rest, self.scanned) else {
                        if rest.len() > MAX_HEAD {
                            return Err(ParseError("head too large"));
                        }
                        self.scanned = rest.len().saturating_sub(3);
                        return Ok(Step::More { consumed: used });
                    };
                    self.scanned = 0;
                    self.head(&rest[..end])?;
                    used += end;
                    if is_interim(self.current.status) {
                        // RFC 9110 §15.2: an interim answer (100 Continue,
                        // 103 Early Hints) precedes the final one; skip it.
                        self.current = Response::default();
                        self.state = Body::Head;
                    }
                }
                Body::Length(0) => return Ok(self.done(used)),
                Body::Length(n) => {
                    let take = rest.len().min(n.min(usize::MAX as u64) as usize);
                    self.keep_body(&rest[..take]);
                    used += take;
                    self.state = Body::Length(n - take as u64);
                    if take == 0 {
                        return Ok(Step::More { consumed: used });
                    }
                }
                Body::ChunkSize | Body::Trailers => {
                    let Some(i) = find_crlf(rest, self.scanned) else {
                        if rest.len() > MAX_HEAD {
                            return Err(ParseError("chunk line too long"));
                        }
                        self.scanned = rest.len().saturating_sub(1);
                        return Ok(Step::More { consumed: used });
                    };
                    self.scanned = 0;
                    let line = &rest[..i];
                    used += i + 2;
                    if self.state == Body::Trailers {
                        if line.is_empty() {
                            return Ok(self.done(used));
                        }
                        continue;
                    }
                    let size = parse_chunk_size(line)?;
                    self.state = if size == 0 {
                        Body::Trailers
                    } else {
                        Body::ChunkData(size)
                    };
                }
                Body::ChunkData(n) => {
                    let take = rest.len().min(n.min(usize::MAX as u64) as usize);
                    if take == 0 {
                        return Ok(Step::More { consumed: used });
                    }
                    self.keep_body(&rest[..take]);
                    used += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        Body::ChunkEnd
                    } else {
                        Body::ChunkData(left)
                    };
                }
                Body::ChunkEnd => {
                    if rest.len() < 2 {
                        return Ok(Step::More { consumed: used });
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ParseError("chunk data not followed by CRLF"));
                    }
                    used += 2;
                    self.state = Body::ChunkSize;
                }
                Body::UntilClose => {
                    self.keep_body(rest);
                    return Ok(Step::More {
                        consumed: input.len(),
                    });
                }
            }
        }
    }

    /// The connection closed: a body delimited by the close ends here.
    /// Anything else partly parsed is an error (`Err`); nothing pending is
    /// `Ok(None)`.
    pub fn eof(&mut self) -> Result<Option<Response>, ParseError> {
        match self.state {
            Body::UntilClose => {
                self.current.close = true;
                match self.done(0) {
                    Step::Done { response, .. } => Ok(Some(response)),
                    Step::More { .. } => unreachable!("done always completes"),
                }
            }
            Body::Head if self.scanned == 0 => Ok(None),
            _ => Err(ParseError("connection closed inside a response")),
        }
    }

    fn keep_body(&mut self, bytes: &[u8]) {
        if self.keep && self.current.body.len() < MAX_KEPT_BODY {
            let room = MAX_KEPT_BODY - self.current.body.len();
            self.current
                .body
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn done(&mut self, consumed: usize) -> Step {
        self.state = Body::Head;
        self.scanned = 0;
        Step::Done {
            consumed,
            response: std::mem::take(&mut self.current),
        }
    }

    /// Parses a complete head (ending in CRLFCRLF) and picks the body framing.
    fn head(&mut self, head: &[u8]) -> Result<(), ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ParseError("incomplete head")),
            Err(httparse::Error::TooManyHeaders) => return Err(ParseError("too many headers")),
            Err(_) => return Err(ParseError("bad status line or header")),
        }
        let status = parsed.code.ok_or(ParseError("no status code"))?;
        if !(100..=599).contains(&status) {
            return Err(ParseError("status code outside 100–599"));
        }
        let http10 = parsed.version == Some(0);
        let mut length = None;
        let mut chunked = false;
        let mut close = http10;
        for h in parsed.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(ParseError("bad Content-Length"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(ParseError("conflicting Content-Length"));
                }
                length = Some(v);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = last_token_is(h.value, b"chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                if has_token(h.value, b"close") {
                    close = true;
                } else if has_token(h.value, b"keep-alive") {
                    close = false;
                }
            } else if self.keep {
                self.keep_header(name, h.value);
            }
        }
        self.current.status = status;
        self.current.close = close;
        // RFC 9112 §6.3: 1xx, 204 and 304 have no body; chunked wins over
        // Content-Length; without either, the body runs to the close.
        self.state = if (100..200).contains(&status) || status == 204 || status == 304 {
            Body::Length(0)
        } else if chunked {
            Body::ChunkSize
        } else if let Some(n) = length {
            Body::Length(n)
        } else {
            self.current.close = true;
            Body::UntilClose
        };
        Ok(())
    }

    fn keep_header(&mut self, name: &str, value: &[u8]) {
        let text = || String::from_utf8_lossy(value).trim().to_string();
        if name.eq_ignore_ascii_case("set-cookie") {
            let v = text();
            let pair = v.split(';').next().unwrap_or("");
            if let Some((COOKIE, id)) = pair.trim().split_once('=') {
                self.current.sid = Some(id.trim().to_string());
            }
        } else if name.eq_ignore_ascii_case(TOKEN) {
            self.current.state_token = Some(text());
        } else if name.eq_ignore_ascii_case(SESSION) {
            self.current.session_unknown = text().eq_ignore_ascii_case(SESSION_UNKNOWN);
        }
    }
}

/// Position of the byte after the first CRLFCRLF, searching from `from`.
fn find_crlfcrlf(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.min(buf.len());
    buf[start..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

/// Position of the first CRLF, searching from `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.min(buf.len());
    buf[start..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| start + i)
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    // Chunk extensions (";name=value") are allowed and ignored.
    let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
    let hex = std::str::from_utf8(hex).map_err(|_| ParseError("bad chunk size"))?;
    u64::from_str_radix(hex.trim(), 16).map_err(|_| ParseError("bad chunk size"))
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|t| t.trim_ascii())
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

fn last_token_is(value: &[u8], token: &[u8]) -> bool {
    tokens(value)
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(token))
}

/// 1xx answers other than 101 (which switches protocols and ends HTTP on
/// the connection) are interim: the final answer follows.
fn is_interim(status: u16) -> bool {
    (100..200).contains(&status) && status != 101
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interim_answers_are_skipped_and_odd_status_codes_refused() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        for cut in 0..=input.len() {
            let rs = parse_split(input, cut, true).unwrap();
            let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
            assert_eq!(statuses, [201], "cut {cut}");
            assert_eq!(rs[0].body, b"ok");
        }
        for bad in ["HTTP/1.1 600 Odd\r\n\r\n", "HTTP/1.1 099 Low\r\n\r\n"] {
            assert!(parse_split(bad.as_bytes(), 0, false).is_err(), "{bad}");
        }
    }

    /// Feeds `input` to a fresh parser in pieces cut at `cut`, as a socket
    /// would deliver it, and returns the responses.
    fn parse_split(input: &[u8], cut: usize, keep: bool) -> Result<Vec<Response>, ParseError> {
        let mut p = Parser::new(keep);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in [&input[..cut], &input[cut..]] {
            buf.extend_from_slice(piece);
            loop {
                match p.advance(&buf)? {
                    Step::More { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                    Step::Done { consumed, response } => {
                        buf.drain(..consumed);
                        out.push(response);
                    }
                }
            }
        }
        if let Some(r) = p.eof()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn pipelined_mixed_framing_at_every_split() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 200 OK\r\nSet-Cookie: sid=abc123; Path=/; HttpOnly\r\nX-State-Token: 2.ff\r\nX-Session: unknown\r\nConnection: close\r\nContent-Length: 1\r\n\r\n2\
HTTP/1.0 200 OK\r\n\r\nto the end";
        for cut in 0..=input.len() {
            let rs = parse_split(input, cut, true).unwrap();
            let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
            assert_eq!(statuses, [200, 404, 204, 200, 200], "cut {cut}");
            assert_eq!(rs[0].body, b"hello");
            assert!(!rs[0].close);
            assert_eq!(rs[1].body, b"abc0123456789abcdef");
            assert_eq!(rs[3].sid.as_deref(), Some("abc123"));
            assert_eq!(rs[3].state_token.as_deref(), Some("2.ff"));
            assert!(rs[3].session_unknown && rs[3].close);
            assert_eq!(rs[4].body, b"to the end");
            assert!(rs[4].close);
        }
    }

    #[test]
    fn bodies_are_not_kept_unless_asked() {
        let rs = parse_split(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 10, false).unwrap();
        assert!(rs[0].body.is_empty());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(parse_split(b"SMTP ready\r\n\r\n", 3, false).is_err());
        assert!(parse_split(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 3, false).is_err());
        assert!(parse_split(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            3,
            false
        )
        .is_err());
        assert!(parse_split(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            3,
            false
        )
        .is_err());
    }
}
