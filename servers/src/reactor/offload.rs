//! Blocking steps taken off the loop: a [`Job`] (the step and its plan)
//! goes to an [`Offload`] (AMPED's helper threads), which runs it and
//! [`post`](Poster::post)s the [`Done`] back; the poster wakes the loop.

use crate::handler::{Await, Plan};
use crossbeam_channel::Sender;
use mio::Waker;
use std::sync::Arc;

/// Names one connection of one loop, also after its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub(super) slot: usize,
    pub(super) gen: u64,
}

/// A blocking step taken off the loop, with the plan it belongs to.
pub struct Job {
    pub(super) key: Key,
    pub(super) pending: Await,
    pub(super) plan: Plan,
}

impl Job {
    /// Waits on the calling thread and returns the plan, ready to go back
    /// to its loop.
    pub fn run(mut self) -> Done {
        self.pending.block(&mut self.plan);
        Done {
            key: self.key,
            plan: self.plan,
        }
    }
}

/// A finished [`Job`]: the plan goes back to its connection.
pub struct Done {
    pub(super) key: Key,
    pub(super) plan: Plan,
}

/// Runs blocking steps somewhere other than the loop thread.
pub trait Offload {
    /// Takes a job; must eventually [`post`](Poster::post) its [`Done`].
    fn submit(&mut self, job: Job);
}

/// Sends finished jobs back to their loop and wakes it. Cheap to clone.
#[derive(Clone)]
pub struct Poster {
    pub(super) tx: Sender<Done>,
    pub(super) waker: Arc<Waker>,
}

impl Poster {
    /// Hands `done` to the loop. If the loop has already exited, the plan
    /// is dropped (its connection is gone anyway).
    pub fn post(&self, done: Done) {
        if self.tx.send(done).is_ok() {
            if let Err(e) = self.waker.wake() {
                tracing::warn!("waking the loop: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{parse_request, Limits};
    use crate::config::{Config, Options};
    use crate::handler::Handler;
    use mio::{Events, Poll, Token};
    use std::time::{Duration, Instant};

    fn plan(path: &str) -> Plan {
        let handler = Handler::new(Config::default(), &Options::default()).unwrap();
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let (req, _) = parse_request(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        handler.plan(&req)
    }

    /// A job waits on the thread that runs it, and hands back its plan
    /// with nothing left to do but answer.
    #[test]
    fn a_job_waits_where_it_runs_and_returns_its_plan() {
        let mut p = plan("/work?io_ms=20&bytes=7");
        let Some(pending @ Await::Wait(_)) = p.advance() else {
            panic!("a wait first");
        };
        let key = Key { slot: 3, gen: 9 };
        let start = Instant::now();
        let done = Job {
            key,
            pending,
            plan: p,
        }
        .run();
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(done.key, key);
        let mut p = done.plan;
        assert!(p.advance().is_none(), "nothing left but the answer");
        assert_eq!(p.response().body.len(), 7);
    }

    /// Posting hands the plan to the loop and wakes it; posting to a loop
    /// that is gone drops the plan quietly.
    #[test]
    fn posting_wakes_the_loop_and_survives_its_end() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(7)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let poster = Poster { tx, waker };
        let done = Done {
            key: Key { slot: 1, gen: 2 },
            plan: plan("/hello"),
        };
        poster.post(done);
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == Token(7)), "woken");
        assert_eq!(rx.try_recv().unwrap().key, Key { slot: 1, gen: 2 });
        drop(rx);
        poster.post(Done {
            key: Key { slot: 1, gen: 3 },
            plan: plan("/hello"),
        });
    }
}
