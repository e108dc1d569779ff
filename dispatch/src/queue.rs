//! http: requests waiting in the proxy for a connection to a replica that
//! is at its connection limit (`maxconn`), one first-come first-served
//! queue per replica, as HAProxy queues requests for a server at its
//! `maxconn`.
//!
//! Why a limit needs a queue: a replica with a fixed number of workers (a
//! thread pool, prefork, the iterative server) gives each keep-alive
//! connection a worker for as long as the connection lasts. A proxy that
//! opened a connection per concurrent request would leave the extra
//! connections, with their requests, in the replica's accept queue until
//! some pooled connection idled out — seconds for requests that take
//! microseconds. Waiting here instead, a request takes the first
//! connection that finishes an answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One request waiting: its client's slot, what it carries, since when.
pub struct Waiting<T> {
    pub client: usize,
    pub request: T,
    pub since: Instant,
}

/// The waiting requests of each replica.
pub struct Queues<T> {
    per_replica: Vec<VecDeque<Waiting<T>>>,
}

impl<T> Queues<T> {
    pub fn new(replicas: usize) -> Queues<T> {
        Queues {
            per_replica: (0..replicas).map(|_| VecDeque::new()).collect(),
        }
    }

    pub fn push(&mut self, replica: usize, client: usize, request: T, now: Instant) {
        self.per_replica[replica].push_back(Waiting {
            client,
            request,
            since: now,
        });
    }

    /// The request that has waited longest for `replica`.
    pub fn pop(&mut self, replica: usize) -> Option<Waiting<T>> {
        self.per_replica[replica].pop_front()
    }

    /// Takes `client`'s request out of `replica`'s queue (its client left).
    pub fn remove(&mut self, replica: usize, client: usize) -> Option<Waiting<T>> {
        let q = &mut self.per_replica[replica];
        let at = q.iter().position(|w| w.client == client)?;
        q.remove(at)
    }

    /// Takes out every request for which `pred` holds, with its replica,
    /// in queue order.
    pub fn take_if(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<(usize, Waiting<T>)> {
        let mut out = Vec::new();
        for (i, q) in self.per_replica.iter_mut().enumerate() {
            let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(q)
                .into_iter()
                .partition(|w| pred(&w.request));
            *q = kept;
            out.extend(taken.into_iter().map(|w| (i, w)));
        }
        out
    }

    pub fn len(&self, replica: usize) -> usize {
        self.per_replica[replica].len()
    }

    /// Replicas with a request waiting.
    pub fn waiting(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.per_replica.len()).filter(|&i| !self.per_replica[i].is_empty())
    }

    /// Takes out every request that has waited `limit` or longer, with its
    /// replica. A queue is in arrival order, so only its front is looked at.
    pub fn expired(&mut self, now: Instant, limit: Duration) -> Vec<(usize, Waiting<T>)> {
        let mut out = Vec::new();
        for (i, q) in self.per_replica.iter_mut().enumerate() {
            while q
                .front()
                .is_some_and(|w| now.duration_since(w.since) >= limit)
            {
                out.extend(q.pop_front().map(|w| (i, w)));
            }
        }
        out
    }
}

/// Whether a request for a replica must wait: it has no idle pooled
/// connection and already holds `maxconn` connections.
pub fn must_wait(idle: usize, open: usize, maxconn: Option<usize>) -> bool {
    idle == 0 && maxconn.is_some_and(|m| open >= m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_come_first_served_per_replica() {
        let t = Instant::now();
        let mut q = Queues::new(2);
        q.push(0, 7, "a", t);
        q.push(1, 8, "b", t);
        q.push(0, 9, "c", t);
        assert_eq!(q.waiting().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(q.pop(0).map(|w| (w.client, w.request)), Some((7, "a")));
        assert_eq!(q.pop(0).map(|w| w.request), Some("c"));
        assert!(q.pop(0).is_none());
        assert_eq!(q.len(1), 1);
        assert_eq!(q.waiting().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_client_that_leaves_is_taken_out() {
        let t = Instant::now();
        let mut q = Queues::new(1);
        for client in [3, 4, 5] {
            q.push(0, client, client * 10, t);
        }
        assert_eq!(q.remove(0, 4).map(|w| w.request), Some(40));
        assert!(q.remove(0, 4).is_none());
        assert_eq!(q.pop(0).map(|w| w.client), Some(3));
        assert_eq!(q.pop(0).map(|w| w.client), Some(5));
    }

    #[test]
    fn requests_taken_by_what_they_carry_keep_their_order() {
        let t = Instant::now();
        let mut q = Queues::new(2);
        for (replica, client, home) in [(0, 1, 'a'), (0, 2, 'b'), (1, 3, 'a'), (0, 4, 'a')] {
            q.push(replica, client, home, t);
        }
        let taken: Vec<(usize, usize)> = q
            .take_if(|&home| home == 'a')
            .iter()
            .map(|(i, w)| (*i, w.client))
            .collect();
        assert_eq!(taken, [(0, 1), (0, 4), (1, 3)]);
        assert_eq!((q.len(0), q.len(1)), (1, 0));
        assert_eq!(q.pop(0).map(|w| w.client), Some(2));
    }

    #[test]
    fn only_requests_past_the_limit_expire() {
        let t = Instant::now();
        let mut q = Queues::new(2);
        q.push(0, 1, (), t);
        q.push(0, 2, (), t + Duration::from_millis(600));
        q.push(1, 3, (), t + Duration::from_millis(100));
        let gone = q.expired(t + Duration::from_secs(1), Duration::from_millis(500));
        let gone: Vec<(usize, usize)> = gone.iter().map(|(i, w)| (*i, w.client)).collect();
        assert_eq!(gone, [(0, 1), (1, 3)]);
        assert_eq!((q.len(0), q.len(1)), (1, 0));
    }

    #[test]
    fn a_request_waits_only_at_the_limit_with_nothing_idle() {
        assert!(!must_wait(0, 5, None), "no limit");
        assert!(!must_wait(0, 1, Some(2)));
        assert!(must_wait(0, 2, Some(2)));
        assert!(
            !must_wait(1, 2, Some(2)),
            "an idle pooled connection is free"
        );
    }
}
