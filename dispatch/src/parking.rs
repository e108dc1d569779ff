//! splice: clients waiting for a replica at its connection limit
//! (`maxconn`), as HAProxy queues a server's connections at its `maxconn`
//! in TCP mode.
//!
//! A relayed connection holds its replica for as long as it lasts — a
//! worker, for a thread pool, prefork or the iterative server. Without a
//! limit a client beyond the workers waits in the accept queue of the
//! replica the policy picked, for that replica alone, and the active
//! checks wait there with it. Parked here instead, it takes the first
//! connection that closes: at its own replica when the policy binds it
//! (a session with affinity, `source`), at any replica otherwise. One
//! thread ([`Dispatcher::serve_parked`]) places parked clients as links
//! close, forgets those that closed their connection while they waited,
//! and closes those that waited longer than the answer timeout, counted
//! as refused.

use crate::queue::Queues;
use crate::{Dispatcher, Replica};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the placing thread looks at the queues' age without news.
const TICK: Duration = Duration::from_millis(50);

/// Whether a parked client has closed its connection, or it was reset.
/// Its request is usually still unread in the socket, so a peek would find
/// those bytes and not the end behind them: `POLLRDHUP` says the peer shut
/// its side whatever is buffered.
fn has_left(client: &TcpStream) -> bool {
    let mut fd = libc::pollfd {
        fd: client.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the descriptor is open for
    // the call (borrowed from `client`).
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// A client waiting for a replica, with what routes it.
pub(crate) struct Parked {
    pub client: TcpStream,
    pub sid: Option<String>,
}

/// The waiting clients: a queue per replica and, last, one for any.
pub(crate) struct Parking {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    queues: Queues<Parked>,
    /// Ids for the queues' entries.
    next: usize,
    /// A link closed or a client parked since the thread last looked.
    news: bool,
}

impl Parking {
    pub fn new(replicas: usize) -> Parking {
        Parking {
            state: Mutex::new(State {
                queues: Queues::new(replicas + 1),
                next: 0,
                news: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A replica may have room now: the thread looks again.
    pub fn notify(&self) {
        self.lock().news = true;
        self.changed.notify_one();
    }
}

impl Replica {
    /// splice: takes one of its connections if it has room under its
    /// `maxconn` (always without one). Given back by `Dispatcher::closed`,
    /// or by [`Replica::give_back`] when the connection fails.
    pub(crate) fn take_slot(&self) -> bool {
        match self.maxconn {
            None => {
                self.open.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(m) => self
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |o| {
                    (o < m).then_some(o + 1)
                })
                .is_ok(),
        }
    }

    pub(crate) fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatcher {
    /// splice: a connection of replica `i` taken for a client of session
    /// `sid` — `i`'s own, or, for a client the policy may send anywhere,
    /// the one with the fewest connections that has room. `Err`: the queue
    /// to wait in (`i`'s, or the queue for any replica).
    pub(crate) fn splice_slot(&self, i: usize, sid: Option<&str>) -> Result<usize, usize> {
        if self.replicas[i].take_slot() {
            return Ok(i);
        }
        if !self.movable(sid) {
            return Err(i);
        }
        self.roomiest_slot().ok_or(self.replicas.len())
    }

    /// Of the replicas taking clients, the one with the fewest connections
    /// whose slot could be taken.
    fn roomiest_slot(&self) -> Option<usize> {
        let now = Instant::now();
        let mut order: Vec<usize> = (0..self.replicas.len())
            .filter(|&j| {
                self.replicas[j].up(now) && !self.replicas[j].retired.load(Ordering::Relaxed)
            })
            .collect();
        order.sort_by_key(|&j| self.replicas[j].open.load(Ordering::Relaxed));
        order.into_iter().find(|&j| self.replicas[j].take_slot())
    }

    /// Parks `p` in `queue`; beyond `max_connections` waiting, it is closed
    /// and counted as refused.
    pub(crate) fn park(&self, queue: usize, p: Parked) {
        let mut s = self.parking.lock();
        let waiting: usize = (0..=self.replicas.len()).map(|q| s.queues.len(q)).sum();
        if waiting >= self.max_connections {
            drop(s);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return; // `p.client` closes here
        }
        let id = s.next;
        s.next = s.next.wrapping_add(1);
        s.queues.push(queue, id, p, Instant::now());
        s.news = true;
        drop(s);
        self.queued_in(queue).fetch_add(1, Ordering::Relaxed);
        self.parking.changed.notify_one();
    }

    /// Places parked clients as replicas get room, and closes those that
    /// waited longer than the answer timeout, until `shutdown`.
    pub fn serve_parked(self: &Arc<Self>, shutdown: &servers::Shutdown) {
        let any = self.replicas.len();
        let mut next_sweep = Instant::now();
        while !shutdown.is_triggered() {
            let mut s = self.parking.lock();
            if !s.news {
                s = self
                    .parking
                    .changed
                    .wait_timeout(s, TICK)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            s.news = false;
            let now = Instant::now();
            let expired = s.queues.expired(now, self.answer_timeout);
            // Clients that gave up waiting leave the queue (their closes
            // would otherwise hold places until the timeout): looked for
            // once a tick, not at every link that closes (a poll each).
            let left = if now >= next_sweep {
                next_sweep = now + TICK;
                s.queues.take_if(|p| has_left(&p.client))
            } else {
                Vec::new()
            };
            // Where each placed client goes (`None`: by the policy again,
            // its replica being out).
            let mut placed = Vec::new();
            let waiting: Vec<usize> = s.queues.waiting().collect();
            for q in waiting {
                while s.queues.len(q) > 0 {
                    let target = if q == any {
                        match self.roomiest_slot() {
                            Some(j) => Some(j),
                            None => break,
                        }
                    } else if !self.replicas[q].up(now) {
                        None
                    } else if self.replicas[q].take_slot() {
                        Some(q)
                    } else {
                        break;
                    };
                    if let Some(w) = s.queues.pop(q) {
                        placed.push((q, w.request, target));
                    }
                }
            }
            drop(s);
            for (q, _) in &expired {
                self.queued_in(*q).fetch_sub(1, Ordering::Relaxed);
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            drop(expired); // their clients close
            for (q, _) in left {
                self.queued_in(q).fetch_sub(1, Ordering::Relaxed);
            }
            for (q, p, target) in placed {
                self.queued_in(q).fetch_sub(1, Ordering::Relaxed);
                match target {
                    Some(j) => match self.splice_to(j, p.client) {
                        Ok(()) => {}
                        Err(client) => self.forward(client, p.sid),
                    },
                    None => self.forward(p.client, p.sid),
                }
            }
        }
    }
}
