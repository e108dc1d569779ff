//! The one HTTP/1.1 codec every architecture shares (the tokio+hyper server,
//! the production reference, is the only exception).
//!
//! It does no I/O: bytes go in, and either "not complete yet", a parsed
//! [`Request`] (with how many bytes it used), or a [`ParseError`] that names
//! the status to answer with come out. Responses are written into a buffer.
//! Because it owns no socket, the same code runs under a blocking thread, a
//! mio loop or a forked child, and it can be tested by splitting a request at
//! every byte offset.
//!
//! What it supports: keep-alive (the HTTP/1.1 default), `Connection: close`,
//! HTTP/1.0 (no keep-alive unless the client asks), pipelining (call
//! [`parse_request`] again on the bytes after the first request),
//! `Content-Length` bodies, `Expect: 100-continue` ([`expects_continue`]
//! tells the connection to send the interim answer). An HTTP/1.1 request
//! needs exactly one `Host` field, and no request may have two (RFC 9112
//! §3.2): anything else is 400. Chunked request bodies are refused with 501 and the
//! connection closed: a server that cannot read them must never guess where
//! the next request starts.

use bytes::Bytes;
use std::fmt::Write as _;

/// Bounds on what one request may use. Exceeding one answers 431 or 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request line plus header block, in bytes.
    pub max_head: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
        }
    }
}

/// Request methods the handler distinguishes; anything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other(String),
}

/// One parsed request, owning its bytes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The request target as sent: path and optional query.
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be read. Each maps to the status to answer with;
/// after any of them the connection is closed, because the framing of what
/// follows can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed request")]
    Malformed,
    #[error("request header block too large")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("transfer codings (chunked bodies) are not supported")]
    TransferEncoding,
    #[error("HTTP version not supported")]
    Version,
    #[error("an HTTP/1.1 request needs exactly one Host header field")]
    Host,
}

impl ParseError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::Malformed | ParseError::BadContentLength | ParseError::Host => 400,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::TransferEncoding => 501,
            ParseError::Version => 505,
        }
    }

    /// The response that reports this error (always closes the connection).
    pub fn response(self) -> Response {
        Response::text(self.status(), self.to_string()).closing()
    }
}

/// Parses one request from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, or the request and the
/// number of bytes it used; the rest of `buf` may hold pipelined requests.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, ParseError> {
    // httparse wants a slice of empty headers to fill. 64 on the stack is
    // cheap; a larger configured limit falls back to the heap.
    let mut stack = [httparse::EMPTY_HEADER; 64];
    let mut heap;
    let headers: &mut [httparse::Header] = if limits.max_headers <= stack.len() {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(ParseError::Version),
        Err(_) => {
            return Err(if buf.len() > limits.max_head {
                ParseError::HeadTooLarge
            } else {
                ParseError::Malformed
            })
        }
    };
    if head_len > limits.max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let minor_version = req.version.unwrap_or(1);
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        other => Method::Other(other.to_string()),
    };
    let target = req.path.unwrap_or("").to_string();
    if !target.starts_with('/') {
        // Absolute-form and authority-form targets are for proxies.
        return Err(ParseError::Malformed);
    }

    let mut owned = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<usize> = None;
    let mut wants_close = false;
    let mut wants_keep_alive = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let value = std::str::from_utf8(h.value)
            .map_err(|_| ParseError::Malformed)?
            .trim()
            .to_string();
        match name.as_str() {
            "content-length" => {
                let n = parse_content_length(&value)?;
                // Two different lengths are a classic smuggling vector.
                if content_length.is_some_and(|c| c != n) {
                    return Err(ParseError::BadContentLength);
                }
                content_length = Some(n);
            }
            "transfer-encoding" => return Err(ParseError::TransferEncoding),
            "host" => hosts += 1,
            "connection" => {
                for token in value.split(',') {
                    let token = token.trim();
                    wants_close |= token.eq_ignore_ascii_case("close");
                    wants_keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            _ => {}
        }
        owned.push((name, value));
    }

    if hosts > 1 || (minor_version == 1 && hosts == 0) {
        return Err(ParseError::Host);
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        return Err(ParseError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    let keep_alive = !wants_close && (minor_version == 1 || wants_keep_alive);
    Ok(Some((
        Request {
            method,
            target,
            minor_version,
            keep_alive,
            headers: owned,
            body: buf[head_len..total].to_vec(),
        },
        total,
    )))
}

/// Whether `buf` starts with a complete HTTP/1.1 request head that asks
/// for `100 Continue` before its body (`Expect: 100-continue` with a body to
/// send). Called only while a request is incomplete: the answer is sent
/// once, so a client that waits for it sends its body at once instead of
/// after its own timeout (curl waits a second).
pub fn expects_continue(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(buf), Ok(httparse::Status::Complete(_))) || req.version != Some(1) {
        return false;
    }
    let field = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    field("expect").is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
        && field("content-length").is_some_and(|v| v.trim_ascii() != b"0")
}

/// The interim response that tells a client to send its body.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn parse_content_length(value: &str) -> Result<usize, ParseError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::BadContentLength);
    }
    value.parse().map_err(|_| ParseError::BadContentLength)
}

/// A response to be written by [`write_response`].
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header fields (name, value), written as given.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Close the connection after this response whatever the client asked.
    pub close: bool,
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            headers: Vec::new(),
            body: body.into(),
            close: false,
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            content_type: "application/json",
            ..Response::text(status, body)
        }
    }

    /// The same response, marked to close the connection.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// The same response with one more header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// The reason phrase for the status codes serverlab answers with.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends `resp` to `out`. `keep_alive` is whether the connection stays
/// open afterwards (the caller decides, from the request and `resp.close`);
/// `head_only` omits the body, for HEAD requests.
pub fn write_response(out: &mut Vec<u8>, resp: &Response, keep_alive: bool, head_only: bool) {
    // Writing into a String first keeps the formatting readable; the copy
    // is of a ~100-byte head, not the body.
    let mut head = String::with_capacity(128);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\nServer: serverlab\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (name, value) in &resp.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str(if keep_alive {
        "\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, ParseError> {
        parse_request(buf, &Limits::default())
    }

    /// Every prefix of a complete request is "incomplete", never an error and
    /// never a wrong request; the whole is parsed exactly.
    fn check_every_split(raw: &[u8]) -> Request {
        for cut in 0..raw.len() {
            match parse(&raw[..cut]) {
                Ok(None) => {}
                other => panic!("prefix of {cut} bytes gave {other:?}"),
            }
        }
        let (req, used) = parse(raw).unwrap().unwrap();
        assert_eq!(used, raw.len());
        req
    }

    #[test]
    fn simple_get_at_every_split() {
        let req = check_every_split(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.path(), "/hello");
        assert_eq!(req.query(), None);
        assert!(req.keep_alive);
        assert_eq!(req.header("host"), Some("x"));
    }

    #[test]
    fn body_at_every_split() {
        let req = check_every_split(
            b"POST /counter HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.body, b"hello");
    }

    #[test]
    fn query_is_split_from_path() {
        let req = check_every_split(b"GET /work?cpu=1&io_ms=2 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(req.path(), "/work");
        assert_eq!(req.query(), Some("cpu=1&io_ms=2"));
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &[u8]| parse(raw).unwrap().unwrap().0.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn pipelined_requests_parse_in_order_at_every_split() {
        let one = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n".as_slice();
        let two = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz".as_slice();
        let three = b"GET /c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".as_slice();
        let all = [one, two, three].concat();
        for cut in 0..=all.len() {
            // Feed the stream in two pieces, as two reads would deliver it.
            let mut buf = all[..cut].to_vec();
            let mut got = Vec::new();
            let feed = |buf: &mut Vec<u8>, got: &mut Vec<Request>| {
                while let Some((req, used)) = parse(buf).unwrap() {
                    buf.drain(..used);
                    got.push(req);
                }
            };
            feed(&mut buf, &mut got);
            buf.extend_from_slice(&all[cut..]);
            feed(&mut buf, &mut got);
            assert!(buf.is_empty());
            let paths: Vec<_> = got.iter().map(|r| r.path().to_string()).collect();
            assert_eq!(paths, ["/a", "/b", "/c"], "cut at {cut}");
            assert_eq!(got[1].body, b"xyz");
            assert!(!got[2].keep_alive);
        }
    }

    #[test]
    fn malformed_input_is_400() {
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(parse(b"GET\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            parse(b"GET http://x/ HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: t\r\nbad header\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn bad_content_length_is_400() {
        for cl in ["abc", "-1", "+5", "1 2", "", "99999999999999999999999"] {
            let raw = format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes()).unwrap_err(),
                ParseError::BadContentLength,
                "{cl:?}"
            );
        }
        let twice =
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse(twice).unwrap_err().status(), 400);
        let same =
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse(same).unwrap().unwrap().0.body, b"ab");
    }

    #[test]
    fn chunked_is_refused_not_misread() {
        let raw = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(parse(raw).unwrap_err().status(), 501);
    }

    #[test]
    fn limits_answer_431_and_413() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(parse(big.as_bytes()).unwrap_err().status(), 431);
        // An unfinished head already past the limit is refused without waiting.
        assert_eq!(parse(&big.as_bytes()[..8500]).unwrap_err().status(), 431);
        let many: String = (0..65).map(|i| format!("H{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes()).unwrap_err().status(), 431);
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            2 * 1024 * 1024
        );
        assert_eq!(parse(raw.as_bytes()).unwrap_err().status(), 413);
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        let status = |raw: &[u8]| parse(raw).unwrap_err().status();
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        assert!(parse(b"GET / HTTP/1.1\r\nHOST: \r\n\r\n")
            .unwrap()
            .is_some());
    }

    #[test]
    fn expect_continue_is_seen_on_a_complete_head_only() {
        let raw = b"POST /counter HTTP/1.1\r\nHost: t\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
        assert!(expects_continue(raw));
        assert!(!expects_continue(&raw[..raw.len() - 2]));
        assert!(parse(raw).unwrap().is_none(), "the body is still to come");
        let no_body =
            b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n";
        assert!(!expects_continue(no_body));
        let http10 = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(!expects_continue(http10));
        let plain = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n";
        assert!(!expects_continue(plain));
    }

    #[test]
    fn version_other_than_1x_is_refused() {
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 505);
    }

    #[test]
    fn response_bytes() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(200, "Hello, World!"), true, false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: serverlab\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
        );
        out.clear();
        let resp = Response::text(404, "no").with_header("X-A", "b");
        write_response(&mut out, &resp, false, true);
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nServer: serverlab\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-A: b\r\nConnection: close\r\n\r\n"
        );
    }
}
