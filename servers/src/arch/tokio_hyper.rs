//! **Async** (`async`): a tokio multi-thread runtime serving HTTP/1.1 with
//! hyper 1.x — the production-stack reference.
//!
//! - Concurrency: every connection is a task; `--workers` runtime threads
//!   (default: the CPUs this process may use) run whichever tasks are
//!   ready and steal work from each other's queues. A `Wait` step is a
//!   tokio timer, so a waiting request costs a parked task, not a thread;
//!   `Compute` runs inline on a worker, then yields to the worker's other
//!   tasks; `ReadFile` goes to tokio's blocking
//!   pool (`spawn_blocking`), as tokio's own file API does.
//! - Cost: task and future state per connection, wakers, work-stealing
//!   queues; hyper's buffers (larger than ours by default) and its
//!   `Date` header cache.
//! - What to look for: compare with `reactor-per-core` (same cores,
//!   no stealing, our codec) to see what the general-purpose stack costs
//!   or gains, especially under uneven load, where stealing helps.
//!   `--blocking-io` makes `Wait` a `thread::sleep` on the worker: the
//!   classic async pitfall, which stalls every task queued on that worker.
//!
//! This is the one architecture that does not use our codec: hyper parses
//! and frames, and a [`codec::Request`] is built from what it parsed, so the
//! handler (routes, work, state modes) is the same. Where hyper behaves
//! differently from the codec, it is hyper's behaviour that is served:
//! - a header block that does not arrive within `--idle-timeout` (hyper's
//!   `header_read_timeout`, which also bounds keep-alive idleness) closes
//!   the connection without a 408; a body gets `--idle-timeout` from the
//!   end of its header block (the codec counts from the request's start),
//!   then 408;
//! - hyper's own error answers (400 for malformed input or a bad
//!   `Content-Length`, 431 past the header limits) have an empty body and
//!   are not counted in `/stats` `requests`;
//! - an unsupported HTTP version is 400 (the codec says 505).
//!
//! Header size and count use our limits (`max_header_size`, `max_headers`);
//! chunked bodies are refused with 501 and an over-long `Content-Length`
//! with 413 before the body is read, as the codec does.

use crate::codec::{Method, ParseError, Request, Response};
use crate::config::Options;
use crate::handler::{Await, Handler};
use crate::incoming::{Accept, Arrival, Incoming, Source};
use crate::net::ACCEPT_BACKOFF;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, SERVER,
    TRANSFER_ENCODING,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Version;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinSet;

type HyperResponse = hyper::Response<Full<Bytes>>;

/// Serves `incoming` on a tokio runtime with `config.workers` threads
/// until `shutdown`; then stops accepting, lets each connection finish its
/// current request (hyper's graceful shutdown) and returns.
pub fn run(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Options,
    shutdown: Shutdown,
) -> io::Result<()> {
    let workers = options.workers.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("async-worker")
        .enable_all()
        .build()?;
    let counted = handler.stats().workers(workers);
    incoming.set_nonblocking()?;
    let result = runtime.block_on(serve(
        incoming,
        handler.clone(),
        Arc::new(options),
        shutdown,
    ));
    // Only idle blocking-pool threads can remain; do not wait out their
    // keep-alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(counted);
    result
}

/// The shutdown pipe's read end, for tokio's reactor; holding the
/// [`Shutdown`] keeps the fd open as long as it is registered.
struct ShutdownFd(Shutdown);

impl AsRawFd for ShutdownFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd()
    }
}

async fn serve(
    incoming: Incoming,
    handler: Arc<Handler>,
    options: Arc<Options>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let sources = incoming
        .into_sources()
        .into_iter()
        // SAFETY: each `Source` owns its descriptor, and the `AsyncFd` owns
        // the `Source`: the fd stays open as long as it is registered.
        .map(|source| unsafe { AsyncFd::register(source) }.map_err(io::Error::from))
        .collect::<io::Result<Vec<_>>>()?;
    // SAFETY: the fd belongs to the `Shutdown` inside `ShutdownFd`, which
    // the `AsyncFd` owns, so it stays open (and is never replaced) for as
    // long as it is registered.
    let stop = unsafe {
        AsyncFd::register_with_interest(ShutdownFd(shutdown.clone()), tokio::io::Interest::READABLE)
    }?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let builder = Arc::new(builder(&options));
    let mut conns = JoinSet::new();
    let mut exhausted = crate::warn::Throttled::new();
    while !shutdown.is_triggered() {
        tokio::select! {
            // The pipe becomes readable for good on trigger.
            _ = stop.readable() => break,
            accepted = next_arrival(&sources) => match accepted? {
                Accept::Arrived(arrival) => {
                    conns.spawn(serve_conn(arrival, handler.clone(), options.clone(), builder.clone(), stop_rx.clone()));
                }
                Accept::Empty => {}
                Accept::Exhausted(e) => {
                    if let Some(n) = exhausted.check(std::time::Instant::now()) {
                        tracing::warn!("accept: {e}; backing off{}", crate::warn::more(n));
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(sources);
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// The next connection from any of `sources`, as tokio's reactor reports
/// them readable (never [`Accept::Empty`]).
async fn next_arrival(sources: &[AsyncFd<Source>]) -> io::Result<Accept> {
    std::future::poll_fn(|cx| {
        for source in sources {
            // Ready: try it; empty after all: clear, and poll again, which
            // registers for the next readiness and says Pending.
            while let Poll::Ready(ready) = source.poll_read_ready(cx) {
                let mut guard = ready?;
                match source.get_ref().accept(true) {
                    Ok(Accept::Empty) => guard.clear_ready(),
                    found => return Poll::Ready(found),
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// A connection whose first bytes were already read elsewhere (a
/// handoff): reads return those bytes first, then the socket's.
struct Prefixed<T> {
    already_read: Vec<u8>,
    /// How much of `already_read` has been returned.
    taken: usize,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = &this.already_read[this.taken..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.taken += n;
        if this.taken == this.already_read.len() {
            this.already_read = Vec::new();
            this.taken = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's HTTP/1 settings, mapped from our [`Options`].
fn builder(config: &Options) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // Starts when a connection opens and again after each response,
        // so it is our idle timeout as well as a slow-header timeout.
        .header_read_timeout(config.idle_timeout)
        .max_header_size(config.limits.max_head)
        .max_headers(config.limits.max_headers)
        // A client that sends its request and closes its side at once is
        // answered, as every other architecture answers it (hyper would
        // drop it unanswered).
        .half_close(true)
        .keep_alive(true);
    b
}

async fn serve_conn(
    arrival: Arrival,
    handler: Arc<Handler>,
    options: Arc<Options>,
    builder: Arc<http1::Builder>,
    mut stop: watch::Receiver<bool>,
) {
    let _open = handler.stats().connection_opened();
    let Ok(stream) = tokio::net::TcpStream::from_std(arrival.stream) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let stream = Prefixed {
        already_read: arrival.already_read,
        taken: 0,
        inner: stream,
    };
    let for_service = handler.clone();
    let service = service_fn(move |req| {
        let (handler, options) = (for_service.clone(), options.clone());
        async move { Ok::<_, Infallible>(respond(&handler, &options, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        // Errors are the client's doing (reset, timeout, bad input already
        // answered by hyper): nothing to report.
        _ = conn.as_mut() => {}
        _ = async { stop.wait_for(|stopping| *stopping).await.map(|_| ()) } => {
            // Finish the request in progress, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answers one request the way every other architecture does: a plan from
/// the handler, its steps run the async way, its response.
async fn respond(
    handler: &Handler,
    options: &Options,
    req: hyper::Request<hyper::body::Incoming>,
) -> HyperResponse {
    let limits = &options.limits;
    let refuse = |e: ParseError| {
        handler.stats().request_served();
        to_hyper(&e.response(), false)
    };
    // Refuse what the codec refuses, before reading any body.
    if req.headers().contains_key(TRANSFER_ENCODING) {
        return refuse(ParseError::TransferEncoding);
    }
    let hosts = req.headers().get_all(HOST).iter().count();
    if hosts > 1 || (req.version() == Version::HTTP_11 && hosts == 0) {
        return refuse(ParseError::Host);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return refuse(ParseError::BodyTooLarge);
    }
    let (parts, body) = req.into_parts();
    // hyper's header timeout does not cover the body: a body trickled in
    // gets the idle timeout too, as the codec's servers give it.
    let idle = options.idle_timeout;
    let body = match tokio::time::timeout(idle, Limited::new(body, limits.max_body).collect()).await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => return refuse(ParseError::BodyTooLarge),
        Err(_) => {
            handler.stats().request_served();
            return to_hyper(&Response::text(408, "request timeout").closing(), false);
        }
    };
    let Some(request) = to_codec(&parts, body) else {
        return refuse(ParseError::Malformed);
    };

    let mut plan = handler.plan(&request);
    while let Some(pending) = plan.advance() {
        match pending {
            // hyper answers a connection's pipelined requests in one poll;
            // yielding after CPU work lets the worker's other tasks run, the
            // turn bound the reactor applies too.
            Await::Computed => tokio::task::yield_now().await,
            // The pitfall, on purpose: this worker thread runs nothing else
            // meanwhile.
            pending @ Await::Wait(_) if options.blocking_io => pending.block(&mut plan),
            Await::Wait(d) => tokio::time::sleep(d).await,
            Await::ReadFile(file) => {
                let result = tokio::task::spawn_blocking(move || file.read())
                    .await
                    .unwrap_or_else(|e| Err(crate::handler::FileError::Failed(e.to_string())));
                plan.file_read(result);
            }
        }
    }
    handler.stats().request_served();
    to_hyper(plan.response(), plan.keep_alive)
}

/// The codec's view of a request hyper parsed; `None` if a header value
/// is not text (the codec answers that with 400 too).
fn to_codec(parts: &hyper::http::request::Parts, body: Bytes) -> Option<Request> {
    let method = match parts.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        other => Method::Other(other.to_string()),
    };
    let minor_version = if parts.version == Version::HTTP_10 {
        0
    } else {
        1
    };
    let mut headers = Vec::with_capacity(parts.headers.len());
    let (mut close, mut keep) = (false, false);
    for (name, value) in &parts.headers {
        let value = value.to_str().ok()?.trim().to_string();
        if name == CONNECTION {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
        // hyper's header names are already lower-case.
        headers.push((name.as_str().to_string(), value));
    }
    let target = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    Some(Request {
        method,
        target,
        minor_version,
        keep_alive: !close && (minor_version == 1 || keep),
        headers,
        body: body.to_vec(),
    })
}

/// Our [`Response`] as hyper's. hyper adds `Content-Length` (from the body,
/// also for HEAD, whose body it then does not send) and `Date`.
/// hyper knows the request method, so HEAD needs nothing from us.
fn to_hyper(resp: &Response, keep_alive: bool) -> HyperResponse {
    let mut out = hyper::Response::new(Full::new(resp.body.clone()));
    *out.status_mut() = hyper::StatusCode::from_u16(resp.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    headers.insert(SERVER, HeaderValue::from_static("serverlab"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(resp.content_type));
    for (name, value) in &resp.headers {
        // `from_bytes` lower-cases; a name that is not a token is a bug in
        // the handler, and dropping the field beats failing the response.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    if resp.close || !keep_alive {
        // hyper closes the connection after a response that says so.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_keep_our_fields() {
        let resp = Response::text(410, "unknown session").with_header("X-Session", "unknown");
        let out = to_hyper(&resp, true);
        assert_eq!(out.status(), 410);
        assert_eq!(out.headers()["x-session"], "unknown");
        assert_eq!(out.headers()[CONTENT_TYPE], "text/plain");
        assert!(out.headers().get(CONNECTION).is_none());
        let out = to_hyper(&resp.closing(), true);
        assert_eq!(out.headers()[CONNECTION], "close");
    }
}
