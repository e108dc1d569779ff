//! A server's control address (`serve --control ADDR`): the same routes,
//! served by a thread of the server's own process, each connection on a
//! thread of its own (at most [`MAX_CONNECTIONS`] at once), whatever the
//! architecture. A coordinator must reach a server even when every worker
//! is held: a pool whose threads all sit on a dispatcher's keep-alive
//! connections, prefork's processes likewise, an iterative server busy with
//! one connection. Live migration's coordinator and post-copy's on-demand
//! fetches go through it (`dispatch --replica ADDR,control=ADDR2`).
//!
//! The state it serves is the architecture's own: the session table and
//! post-copy's fetch settings are shared memory, mapped before any fork.
//! In a forking architecture this thread is one more thread of the parent,
//! like the reaper (see [`crate::process`] for what children inherit).

use crate::config::Options;
use crate::handler::Handler;
use crate::incoming::{Incoming, Source};
use crate::shutdown::Shutdown;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Control connections served at once; more are answered 503.
pub const MAX_CONNECTIONS: usize = 16;

/// The running control thread.
pub struct Control {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Control {
    /// Listens on `listen` and serves it until `shutdown`.
    pub fn start(
        listen: SocketAddr,
        handler: Arc<Handler>,
        options: Options,
        shutdown: Shutdown,
    ) -> io::Result<Control> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let incoming = Incoming::new(vec![Source::Listener(listener)])?;
        let open = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let served = crate::net::accept_loop(&incoming, &shutdown, |arrival| {
                    if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        open.fetch_sub(1, Ordering::AcqRel);
                        return crate::conn::refuse_busy(arrival.stream, &handler);
                    }
                    let (h, o, s, done) = (
                        handler.clone(),
                        options.clone(),
                        shutdown.clone(),
                        open.clone(),
                    );
                    let spawned = std::thread::Builder::new()
                        .name("control-conn".into())
                        .spawn(move || {
                            crate::conn::serve_blocking(arrival, &h, &o, &s);
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        // The connection is dropped (closed) with the closure.
                        open.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!("control: cannot start a thread: {e}");
                    }
                });
                if let Err(e) = served {
                    tracing::warn!("control address: {e}");
                }
            })?;
        Ok(Control { addr, thread })
    }

    /// Where it listens (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the thread to end (after shutdown).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}
