//! Which replica gets the next connection. Pure functions of the replicas'
//! state (up or not, connections open) and a key, so every policy's
//! distribution is tested without a network.
//!
//! - `round-robin`: each up replica in turn.
//! - `least-connections`: the up replica with the fewest open, ties in turn.
//! - `p2c` (power of two choices): two up replicas at random, the one with
//!   fewer open — nearly least-connections' balance without looking at all.
//! - `source`: a hash of the client's address, by rendezvous hashing, so a
//!   client stays on one replica and a replica that goes takes only its
//!   own clients with it (the others do not move).
//! - `affinity`: sticky sessions. A session id that names its replica's
//!   route goes there (the dispatcher resolves routes, see `choose` in the
//!   crate root); another session id is hashed as `source` hashes
//!   addresses, with bounded load: a replica with more than 1.25× its
//!   share of open connections is passed over for the next in the key's
//!   order, so one hot key cannot take everything. A client without a
//!   session yet is placed in turn ([`Picker::in_turn`]), so new sessions
//!   spread evenly even when every client shares one address.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    RoundRobin,
    LeastConnections,
    P2c,
    Source,
    Affinity,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        Ok(match s {
            "round-robin" | "rr" => Policy::RoundRobin,
            "least-connections" | "least" => Policy::LeastConnections,
            "p2c" => Policy::P2c,
            "source" => Policy::Source,
            "affinity" => Policy::Affinity,
            other => {
                return Err(format!(
                    "{other:?}: policies are round-robin, least-connections, p2c, source, affinity"
                ))
            }
        })
    }
}

impl Policy {
    /// Whether the policy needs a key (the client's address or session).
    pub fn keyed(self) -> bool {
        matches!(self, Policy::Source | Policy::Affinity)
    }
}

/// What a policy sees of one replica.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub up: bool,
    pub open: usize,
}

/// Bounded load: no replica takes more than this times its share.
pub const LOAD_BOUND: f64 = 1.25;

/// A policy with its little state (the turn, a random generator).
#[derive(Debug)]
pub struct Picker {
    policy: Policy,
    turn: AtomicUsize,
    rng: AtomicU64,
}

impl Picker {
    pub fn new(policy: Policy) -> Picker {
        Picker {
            policy,
            turn: AtomicUsize::new(0),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The replica for the next connection (`key`: the hash of the client's
    /// address or session, for the keyed policies); `None` if none is up.
    pub fn pick(&self, replicas: &[Candidate], key: u64) -> Option<usize> {
        let up: Vec<usize> = (0..replicas.len()).filter(|&i| replicas[i].up).collect();
        if up.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(match self.policy {
            Policy::RoundRobin => up[turn % up.len()],
            Policy::LeastConnections => {
                let least = up.iter().map(|&i| replicas[i].open).min().unwrap_or(0);
                let ties: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&i| replicas[i].open == least)
                    .collect();
                ties[turn % ties.len()]
            }
            Policy::P2c => {
                let a = up[(self.random() % up.len() as u64) as usize];
                let b = up[(self.random() % up.len() as u64) as usize];
                if replicas[b].open < replicas[a].open {
                    b
                } else {
                    a
                }
            }
            Policy::Source => ranked(&up, key)[0],
            Policy::Affinity => {
                let total: usize = up.iter().map(|&i| replicas[i].open).sum();
                let bound = ((total + 1) as f64 * LOAD_BOUND / up.len() as f64).ceil() as usize;
                let order = ranked(&up, key);
                order
                    .iter()
                    .copied()
                    .find(|&i| replicas[i].open < bound.max(1))
                    .unwrap_or(order[0])
            }
        })
    }

    /// The next up replica in turn, whatever the policy: where `affinity`
    /// places a client that has no session yet.
    pub fn in_turn(&self, replicas: &[Candidate]) -> Option<usize> {
        let up: Vec<usize> = (0..replicas.len()).filter(|&i| replicas[i].up).collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        (!up.is_empty()).then(|| up[turn % up.len()])
    }

    fn random(&self) -> u64 {
        // xorshift64*, shared by the threads (a lost update is harmless).
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The up replicas in `key`'s rendezvous order (highest weight first).
fn ranked(up: &[usize], key: u64) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = up
        .iter()
        .map(|&i| (mix(key ^ mix(i as u64 + 1)), i))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, i)| i).collect()
}

/// A 64-bit mixer (splitmix64's finaliser).
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The key of a byte string (an address, a session id).
pub fn key_of(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_up(n: usize) -> Vec<Candidate> {
        vec![Candidate { up: true, open: 0 }; n]
    }

    #[test]
    fn round_robin_is_exact_and_skips_what_is_down() {
        let p = Picker::new(Policy::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| p.pick(&all_up(3), 0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let mut r = all_up(3);
        r[1].up = false;
        let picks: Vec<usize> = (0..4).map(|_| p.pick(&r, 0).unwrap()).collect();
        assert!(picks.iter().all(|&i| i != 1), "{picks:?}");
        assert_eq!(p.pick(&[Candidate { up: false, open: 0 }], 0), None);
        // Clients without a session under affinity are placed the same way.
        let a = Picker::new(Policy::Affinity);
        let picks: Vec<usize> = (0..4).map(|_| a.in_turn(&r).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(a.in_turn(&[Candidate { up: false, open: 0 }]), None);
    }

    #[test]
    fn least_connections_and_p2c_avoid_a_loaded_replica() {
        let mut r = all_up(3);
        r[0].open = 50; // a slow replica holding many connections
        let least = Picker::new(Policy::LeastConnections);
        let p2c = Picker::new(Policy::P2c);
        let (mut to_slow_least, mut to_slow_p2c) = (0, 0);
        for _ in 0..300 {
            let i = least.pick(&r, 0).unwrap();
            to_slow_least += usize::from(i == 0);
            r[i].open += 1;
            let j = p2c.pick(&r, 0).unwrap();
            to_slow_p2c += usize::from(j == 0);
            r[i].open -= 1;
        }
        assert_eq!(to_slow_least, 0);
        // p2c sends to the loaded one only when both choices are it: ~1/9.
        assert!(to_slow_p2c < 60, "{to_slow_p2c}");
    }

    #[test]
    fn source_hashing_is_sticky_and_moves_only_the_lost_replicas_keys() {
        let p = Picker::new(Policy::Source);
        let keys: Vec<u64> = (0..1000u32).map(|k| key_of(&k.to_be_bytes())).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|&k| p.pick(&all_up(4), k).unwrap())
            .collect();
        let again: Vec<usize> = keys
            .iter()
            .map(|&k| p.pick(&all_up(4), k).unwrap())
            .collect();
        assert_eq!(before, again, "sticky");
        let mut counts = [0usize; 4];
        for &i in &before {
            counts[i] += 1;
        }
        assert!(
            counts.iter().all(|&c| (180..=320).contains(&c)),
            "{counts:?}"
        );
        let mut r = all_up(4);
        r[2].up = false;
        for (k, &was) in keys.iter().zip(&before) {
            let now = p.pick(&r, *k).unwrap();
            if was != 2 {
                assert_eq!(now, was, "a key on a replica still up does not move");
            } else {
                assert_ne!(now, 2);
            }
        }
    }

    #[test]
    fn affinity_is_sticky_until_its_replica_is_over_its_bound() {
        let p = Picker::new(Policy::Affinity);
        let hot = key_of(b"sid=hot");
        let mut r = all_up(4);
        let home = p.pick(&r, hot).unwrap();
        assert_eq!(p.pick(&r, hot), Some(home), "sticky");
        // The hot session's replica fills up: beyond 1.25x its share the
        // next connection goes to the key's next replica.
        let mut placed = [0usize; 4];
        for _ in 0..100 {
            let i = p.pick(&r, hot).unwrap();
            r[i].open += 1;
            placed[i] += 1;
        }
        let total: usize = placed.iter().sum();
        let bound = ((total as f64) * LOAD_BOUND / 4.0).ceil() as usize + 1;
        assert!(
            placed.iter().all(|&c| c <= bound),
            "bounded load: {placed:?}"
        );
        assert!(placed[home] >= placed.iter().copied().max().unwrap() - 1);
    }
}
