//! The `http` mode: a copy proxy that routes each request.
//!
//! A thread per client connection (at most `max_connections`; more are
//! answered 503). Each request is parsed with the project's codec (bad
//! input: its 4xx, then close), a replica picked for it (the policy sees
//! the request's session cookie), and its bytes forwarded unchanged over a
//! pooled keep-alive connection to that replica. The answer's head is
//! parsed (`httparse`) and its body, framed by `Content-Length`, copied
//! back. The dispatcher answers itself when no replica can: 503 when none
//! is up, 502 when a replica fails before its answer is complete (a
//! connection reset, a malformed or chunked answer), 504 when it gives no
//! answer within its answer timeout (`--answer-timeout`, default
//! [`ANSWER_TIMEOUT`]). A replica that cannot be connected to
//! is taken out and the request tried on another; one that fails after the
//! request was sent is not retried (the request may have had effects).

use crate::Dispatcher;
use servers::codec::{self, Limits, Response};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A replica that sends no answer for this long gets its client a 504
/// (the default of `--answer-timeout`).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client idle this long between requests is closed.
pub const CLIENT_IDLE: Duration = Duration::from_secs(10);
/// Idle pooled connections kept per replica.
const POOL: usize = 64;

/// Idle keep-alive connections to each replica.
#[derive(Default)]
pub struct Pool {
    idle: Vec<Mutex<Vec<TcpStream>>>,
}

impl Pool {
    pub fn new(replicas: usize) -> Pool {
        Pool {
            idle: (0..replicas).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    fn take(&self, i: usize) -> Option<TcpStream> {
        self.idle[i].lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give(&self, i: usize, conn: TcpStream) {
        let mut idle = self.idle[i].lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL {
            idle.push(conn);
        }
    }
}

/// Why a request got no answer from a replica.
enum Failure {
    /// Nothing was sent: another replica may take it.
    Connect(io::Error),
    /// Sent, then the replica failed (502) or stayed silent (504).
    Broken(io::Error),
    Silent,
    /// Closed before any answer: a pooled connection the replica let go
    /// while it idled.
    Stale,
    /// Failed after part of its answer went to the client: all that is
    /// left is to close the client's connection.
    Cut(io::Error),
}

/// Serves one client connection to its end.
pub fn serve(d: &Arc<Dispatcher>, mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(CLIENT_IDLE));
    let _ = client.set_nodelay(true);
    let limits = Limits::default();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let (request, used) = loop {
            match codec::parse_request(&inbuf, &limits) {
                Ok(Some(found)) => break found,
                Ok(None) => {}
                Err(e) => return answer(client, &e.response()),
            }
            match client.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
            }
        };
        let raw: Vec<u8> = inbuf.drain(..used).collect();
        let sid = request.header("cookie").and_then(crate::session_of);
        let key = crate::key_of(sid.as_deref(), &client, d.picker.policy());
        let mut answered = false;
        for _ in 0..d.replicas.len() {
            let Some(i) = d.choose(key, sid.as_deref()) else {
                break;
            };
            let replica = &d.replicas[i];
            replica.open.fetch_add(1, Ordering::Relaxed);
            let result = forward(d, i, &raw, &mut client);
            replica.open.fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    answered = true;
                    break;
                }
                Err(Failure::Connect(e)) => replica.eject(&format_args!("connect: {e}")),
                Err(Failure::Broken(e)) => {
                    replica.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("replica {}: {e}; answered 502", replica.addr);
                    return answer(
                        client,
                        &Response::text(502, "bad gateway: the replica failed").closing(),
                    );
                }
                Err(Failure::Cut(e)) => {
                    replica.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "replica {}: {e}; the client's connection is closed",
                        replica.addr
                    );
                    return;
                }
                Err(Failure::Silent | Failure::Stale) => {
                    replica.errors.fetch_add(1, Ordering::Relaxed);
                    return answer(
                        client,
                        &Response::text(504, "gateway timeout: the replica did not answer")
                            .closing(),
                    );
                }
            }
        }
        if !answered {
            d.refused.fetch_add(1, Ordering::Relaxed);
            return answer(client, &Response::text(503, "no replica is up").closing());
        }
        if !request.keep_alive {
            let _ = client.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

/// Sends `raw` to replica `i` and copies its answer to `client`. A pooled
/// connection the replica closed while it idled fails before any byte of
/// an answer: then the request goes once more, on a fresh connection.
fn forward(d: &Dispatcher, i: usize, raw: &[u8], client: &mut TcpStream) -> Result<(), Failure> {
    if let Some(pooled) = d.pool.take(i) {
        match exchange(d, i, pooled, raw, client) {
            Err(Failure::Stale) => {}
            done => return done,
        }
    }
    let fresh = connect(d.replicas[i].addr, d.answer_timeout).map_err(Failure::Connect)?;
    match exchange(d, i, fresh, raw, client) {
        Err(Failure::Stale) => Err(Failure::Broken(io::Error::other("closed before answering"))),
        done => done,
    }
}

/// One request and its answer over `upstream`.
fn exchange(
    d: &Dispatcher,
    i: usize,
    mut upstream: TcpStream,
    raw: &[u8],
    client: &mut TcpStream,
) -> Result<(), Failure> {
    if upstream.write_all(raw).is_err() {
        return Err(Failure::Stale);
    }
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 16 * 1024];
    let (header_len, body_len, close) = loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) if head.is_empty() => return Err(Failure::Stale),
            Ok(0) => {
                return Err(Failure::Broken(io::Error::other(
                    "closed in the middle of its answer",
                )))
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Failure::Silent)
            }
            Err(e) if head.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Failure::Stale)
            }
            Err(e) => return Err(Failure::Broken(e)),
        };
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                let header = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                if header("transfer-encoding").is_some() {
                    return Err(Failure::Broken(io::Error::other("a chunked answer")));
                }
                let body = header("content-length")
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                break (len, body, close);
            }
            Ok(httparse::Status::Partial) if head.len() < 64 * 1024 => {}
            _ => return Err(Failure::Broken(io::Error::other("a malformed answer"))),
        }
    };
    let total = header_len + body_len;
    // Counted before the client can see the answer: whoever reads the
    // status after an answer finds its request there.
    d.replicas[i].connections.fetch_add(1, Ordering::Relaxed);
    let first = head.len().min(total);
    client
        .write_all(&head[..first])
        .map_err(|_| Failure::Cut(io::Error::other("the client went away")))?;
    let mut left = total - first;
    while left > 0 {
        let n = match upstream.read(&mut buf[..left.min(16 * 1024)]) {
            Ok(0) => {
                return Err(Failure::Cut(io::Error::other(
                    "closed in the middle of its answer",
                )))
            }
            Ok(n) => n,
            Err(e) => return Err(Failure::Cut(e)),
        };
        client
            .write_all(&buf[..n])
            .map_err(|_| Failure::Cut(io::Error::other("the client went away")))?;
        left -= n;
    }
    if !close && head.len() <= total {
        d.pool.give(i, upstream);
    }
    Ok(())
}

fn connect(addr: SocketAddr, answer_timeout: Duration) -> io::Result<TcpStream> {
    let c = TcpStream::connect_timeout(&addr, crate::CONNECT_TIMEOUT)?;
    c.set_read_timeout(Some(answer_timeout))?;
    c.set_nodelay(true)?;
    Ok(c)
}

/// Writes the dispatcher's own answer and closes (lingering, so that the
/// answer is not lost to a reset).
fn answer(mut client: TcpStream, response: &Response) {
    let mut out = Vec::with_capacity(256);
    codec::write_response(&mut out, response, false, false);
    let _ = client.write_all(&out);
    servers::linger::close(client, true);
}
