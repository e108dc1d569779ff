//! The session table: one fixed-size hash table in shared memory, used by
//! every architecture — threads, event loops and forked processes alike.
//!
//! Layout: a small header of counters, then `slots` fixed 40-byte slots
//! (state word, 16-byte id, counter, last-used time), all atomics, in one
//! [`SharedRegion`] mapped before any fork. Open addressing with linear
//! probing inside a bounded window of [`WINDOW`] slots from the id's home.
//!
//! Locking is per slot: bit 31 of the state word is a spin lock taken with
//! a compare-and-swap, which works across processes because the word lives
//! in shared memory (a `std::sync::Mutex` would not). A critical section is
//! a handful of loads and stores, so a waiter spins briefly, then yields.
//! Teaching simplification: a process killed (SIGKILL) inside those few
//! instructions would leave that one slot locked; a production table would
//! record the owner's pid and recover.
//!
//! Capacity: `max_sessions` live sessions, counted in the header; the table
//! has twice as many slots so probe windows stay short (fill at most 50%).
//! A slot is empty, occupied, or a tombstone (once occupied). Slots never
//! become empty again, so a lookup may stop at the first empty slot: every
//! id was placed before any empty slot on its path.
//!
//! Dirty tracking, for live migration: the header holds an epoch, and every
//! change to a slot (a new session, an increment, a removal, an eviction
//! or expiry) stamps the slot with the epoch current at that moment, under
//! the slot's lock. [`SessionTable::mark`] starts a new epoch;
//! [`SessionTable::changed_since`] lists the slots stamped since a mark.
//! A writer pays one load of a read-mostly word and one store into the slot
//! it is already writing.
//!
//! A slot records only its last occupant, so a new session that takes the
//! slot of one removed, expired or evicted would erase that removal from
//! what `changed_since` can see, and a migration's destination would keep
//! a session the source no longer has. Whoever overwrites such a slot
//! first writes the old id and the epoch of its removal to the *removal
//! log*, a ring of [`REMOVAL_LOG`] entries after the slots, which
//! `changed_since` reads too. An entry overwritten in the ring raises the
//! header's `lost` epoch: a mark older than it gets `None` (the changes
//! since it are no longer all known), never an incomplete list.
//!
//! Migration (see [`super::migrate`]) adds a fourth slot state, *moved*:
//! a session the destination has taken in post-copy ([`SessionTable::take`]).
//! A moved slot keeps its id and value, so taking it again gives the same
//! answer, but no lookup finds it (it is served elsewhere now) and no
//! insert reuses it until [`SessionTable::drop_moved`] or
//! [`SessionTable::clear`]. Imports ([`SessionTable::import`]) run one at a
//! time under a table-wide lock in the header, so two imports of one id
//! (an on-demand fetch racing the background copy) cannot store it twice.
//!
//! When full, [`Policy::Refuse`] (stateful) refuses new sessions and leaves
//! old ones alone; [`Policy::Reclaim`] (stateful with an idle limit) lets a
//! session idle longer than the limit go (it is gone on its next use too),
//! so anonymous clients cannot hold the table forever; [`Policy::Evict`] (soft) removes the least-recently-used
//! session of the probed window (an expired one is always older than any
//! live one, so expired sessions go first). Soft sessions also expire
//! `ttl` after their last use; expired slots are reclaimed lazily, when a
//! lookup or an insert meets them.

use super::sid::SessionId;
use crate::shm::SharedRegion;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most slots a lookup or insert probes from an id's home slot.
pub const WINDOW: usize = 64;
/// Windows searched for an idle session to reclaim when the table is full
/// ([`Policy::Reclaim`]).
const RECLAIM_WINDOWS: usize = 4;
/// Bytes per slot.
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
const HEADER_BYTES: usize = 64;
/// Entries of the removal log (see the module doc).
pub const REMOVAL_LOG: usize = 4096;

const EMPTY: u32 = 0;
const OCCUPIED: u32 = 1;
const TOMBSTONE: u32 = 2;
/// Taken by a migration's destination (see the module doc).
const MOVED: u32 = 3;
const STATE_MASK: u32 = 3;
const LOCKED: u32 = 1 << 31;

/// What the table does when it is full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// Stateful: refuse new sessions; existing ones are never touched.
    Refuse,
    /// Stateful with an idle limit: a session unused for `idle` is gone;
    /// when full, a new session takes the place of such a one nearby, else
    /// it is refused. Live sessions are never evicted.
    Reclaim {
        /// Idle time after which a session is gone.
        idle: Duration,
    },
    /// Soft: sessions expire `ttl` after last use; when full, evict.
    Evict {
        /// Idle time after which a session is gone.
        ttl: Duration,
    },
}

/// The table has no room for a new session (not with [`Policy::Evict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("session table full")]
pub struct TableFull;

#[repr(C)]
struct Header {
    sessions: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
    refused: AtomicU64,
    /// The dirty-tracking epoch (see the module doc).
    epoch: AtomicU64,
    /// Held by an import (see the module doc).
    import_lock: AtomicU32,
    /// Entries ever written to the removal log.
    log_head: AtomicU64,
    /// One more than the latest epoch whose removals the log lost (0:
    /// none lost).
    log_lost: AtomicU64,
}

/// A removal log entry: an id gone from a slot since reused.
#[repr(C)]
struct Removal {
    /// 0 while being written; else the entry's index in the log + 1 (low
    /// 32 bits), written last.
    seq: AtomicU32,
    /// The epoch of the removal (its low 32 bits, as a slot's `dirty`).
    epoch: AtomicU32,
    sid: [AtomicU64; 2],
}

const REMOVAL_BYTES: usize = std::mem::size_of::<Removal>();

#[repr(C)]
struct Slot {
    word: AtomicU32,
    /// The epoch of the slot's last change (its low 32 bits).
    dirty: AtomicU32,
    sid: [AtomicU64; 2],
    counter: AtomicU64,
    last_used_ns: AtomicU64,
}

/// Holds a slot's lock; writes `state` back and unlocks on drop.
struct Locked<'a> {
    slot: &'a Slot,
    state: u32,
}

impl Slot {
    fn state(&self) -> u32 {
        self.word.load(Ordering::Acquire) & STATE_MASK
    }

    fn sid(&self) -> [u64; 2] {
        [
            self.sid[0].load(Ordering::Relaxed),
            self.sid[1].load(Ordering::Relaxed),
        ]
    }

    fn lock(&self) -> Locked<'_> {
        let mut spins = 0u32;
        loop {
            let cur = self.word.load(Ordering::Relaxed);
            if cur & LOCKED == 0
                && self
                    .word
                    .compare_exchange_weak(cur, cur | LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Locked {
                    slot: self,
                    state: cur & STATE_MASK,
                };
            }
            // The holder may be another process descheduled mid-section:
            // spin a little, then give the CPU away.
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    fn fill(&self, sid: SessionId, value: u64, now: u64) {
        self.sid[0].store(sid.0[0], Ordering::Relaxed);
        self.sid[1].store(sid.0[1], Ordering::Relaxed);
        self.counter.store(value, Ordering::Relaxed);
        self.last_used_ns.store(now, Ordering::Relaxed);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.slot.word.store(self.state, Ordering::Release);
    }
}

/// A session as [`SessionTable::changed_since`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    pub sid: SessionId,
    /// Its counter (meaningless when it is gone).
    pub value: u64,
    /// `false`: the session was removed, evicted or expired since the mark
    /// (its slot may since have been taken by a session of its own record).
    pub live: bool,
}

/// Counters of a table, for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    /// Sessions held now (soft: including expired ones not yet reclaimed).
    pub sessions: u64,
    /// Most sessions held at once (`--max-sessions`).
    pub capacity: u64,
    /// Bytes of the shared mapping (reserved up front; the kernel backs
    /// pages on first touch).
    pub bytes: u64,
    /// Sessions removed to make room (soft).
    pub evicted: u64,
    /// Sessions removed because their time-to-live passed (soft).
    pub expired: u64,
    /// New sessions refused because the table was full (stateful).
    pub refused: u64,
}

/// The shared session table. Create it before forking; share it by
/// reference between threads.
pub struct SessionTable {
    region: SharedRegion,
    slots: usize,
    window: usize,
    max_sessions: u64,
    policy: Policy,
    /// Times are nanoseconds since this instant. Forked children inherit
    /// the same value, and the monotonic clock is system-wide, so every
    /// process measures on the same scale.
    epoch: Instant,
}

impl SessionTable {
    /// A table for at most `max_sessions` sessions (at least 1).
    pub fn new(max_sessions: usize, policy: Policy) -> io::Result<SessionTable> {
        let max = max_sessions.max(1);
        let slots = max.checked_mul(2).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "--max-sessions too large")
        })?;
        SessionTable::with_geometry(max, slots, WINDOW.min(slots), policy)
    }

    fn with_geometry(
        max: usize,
        slots: usize,
        window: usize,
        policy: Policy,
    ) -> io::Result<SessionTable> {
        let bytes = slots
            .checked_mul(SLOT_BYTES)
            .and_then(|b| b.checked_add(HEADER_BYTES + REMOVAL_LOG * REMOVAL_BYTES))
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "--max-sessions too large")
            })?;
        Ok(SessionTable {
            region: SharedRegion::new(bytes)?,
            slots,
            window,
            max_sessions: max as u64,
            policy,
            epoch: Instant::now(),
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: the region is at least HEADER_BYTES, page-aligned, zeroed
        // at creation (valid atomics), and lives as long as `self`.
        unsafe { &*self.region.as_ptr().cast::<Header>() }
    }

    fn slot(&self, index: usize) -> &Slot {
        let i = index % self.slots;
        // SAFETY: slot `i < slots` lies inside the region (see
        // `with_geometry`), 8-aligned after the 64-byte header, zero-valid.
        unsafe { &*self.region.as_ptr().add(HEADER_BYTES).cast::<Slot>().add(i) }
    }

    fn removal(&self, index: usize) -> &Removal {
        let i = index % REMOVAL_LOG;
        // SAFETY: the log lies after the slots inside the region (see
        // `with_geometry`), 8-aligned (slots are 40 bytes), zero-valid.
        unsafe {
            &*self
                .region
                .as_ptr()
                .add(HEADER_BYTES + self.slots * SLOT_BYTES)
                .cast::<Removal>()
                .add(i)
        }
    }

    /// The full epoch of a 32-bit stamp made at most 2^31 epochs ago.
    fn full_epoch(&self, stamp: u32) -> u64 {
        let now = self.header().epoch.load(Ordering::Acquire);
        now.wrapping_sub(u64::from((now as u32).wrapping_sub(stamp)))
    }

    /// Before `slot` (locked by the caller, in state `state`) is given to
    /// a new session: logs its old occupant's removal if it had one — a
    /// tombstone's at the epoch it was stamped, a live session's (expired
    /// or evicted now) at the current epoch.
    fn log_overwrite(&self, slot: &Slot, state: u32) {
        let epoch = match state {
            TOMBSTONE => slot.dirty.load(Ordering::Relaxed),
            OCCUPIED => self.header().epoch.load(Ordering::Relaxed) as u32,
            _ => return,
        };
        let h = self.header();
        let index = h.log_head.fetch_add(1, Ordering::AcqRel) as usize;
        let entry = self.removal(index);
        let old = entry.seq.swap(0, Ordering::AcqRel);
        if old != 0 {
            // Its removal can no longer be reported.
            let lost = self.full_epoch(entry.epoch.load(Ordering::Relaxed));
            h.log_lost.fetch_max(lost + 1, Ordering::AcqRel);
        }
        let sid = slot.sid();
        entry.epoch.store(epoch, Ordering::Relaxed);
        entry.sid[0].store(sid[0], Ordering::Relaxed);
        entry.sid[1].store(sid[1], Ordering::Relaxed);
        entry
            .seq
            .store((index as u32).wrapping_add(1).max(1), Ordering::Release);
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Stamps `slot` (whose lock the caller holds) as changed now.
    fn touch(&self, slot: &Slot) {
        let epoch = self.header().epoch.load(Ordering::Relaxed) as u32;
        slot.dirty.store(epoch, Ordering::Relaxed);
    }

    /// Starts a new dirty-tracking epoch and returns it: every change from
    /// now on is reported by `changed_since` of this mark (or an older one).
    pub fn mark(&self) -> u32 {
        (self.header().epoch.fetch_add(1, Ordering::AcqRel) as u32).wrapping_add(1)
    }

    /// Every session changed since `mark` (at or after it was made): the
    /// sessions gone since whose slots were reused (from the removal log),
    /// then every slot changed, each read under its lock — live sessions
    /// with their counters, and sessions gone since. Epochs compare with
    /// wrap-around, so a mark stays usable for two billion later marks.
    /// `None` when the removal log lost removals made since `mark`.
    pub fn changed_since(&self, mark: u32) -> Option<Vec<SessionRecord>> {
        let since = |stamp: u32| (stamp.wrapping_sub(mark) as i32) >= 0;
        let h = self.header();
        let lost = |h: &Header| {
            let lost = h.log_lost.load(Ordering::Acquire);
            lost > self.full_epoch(mark)
        };
        if lost(h) {
            return None;
        }
        let mut out = Vec::new();
        let head = h.log_head.load(Ordering::Acquire) as usize;
        for index in head.saturating_sub(REMOVAL_LOG)..head {
            let entry = self.removal(index);
            let seq = entry.seq.load(Ordering::Acquire);
            let epoch = entry.epoch.load(Ordering::Relaxed);
            let sid = [
                entry.sid[0].load(Ordering::Relaxed),
                entry.sid[1].load(Ordering::Relaxed),
            ];
            // Skip entries being written or rewritten meanwhile.
            if seq == 0 || entry.seq.load(Ordering::Acquire) != seq || !since(epoch) {
                continue;
            }
            out.push(SessionRecord {
                sid: SessionId(sid),
                value: 0,
                live: false,
            });
        }
        out.extend(self.scan(|slot| since(slot.dirty.load(Ordering::Relaxed))));
        // Rewritten while read: what was lost may matter.
        (!lost(h)).then_some(out)
    }

    /// Every live session now, each read under its lock.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        // An expired session not yet reclaimed is not live any more.
        self.scan(|slot| slot.state() == OCCUPIED)
            .into_iter()
            .filter(|r| r.live)
            .collect()
    }

    /// The records of the slots `pick` selects (checked again under each
    /// slot's lock).
    fn scan(&self, pick: impl Fn(&Slot) -> bool) -> Vec<SessionRecord> {
        let now = self.now();
        let mut out = Vec::new();
        for i in 0..self.slots {
            let slot = self.slot(i);
            if slot.state() == EMPTY || !pick(slot) {
                continue;
            }
            let g = slot.lock();
            if g.state == EMPTY || !pick(slot) {
                continue;
            }
            out.push(SessionRecord {
                sid: SessionId(slot.sid()),
                value: slot.counter.load(Ordering::Relaxed),
                live: g.state == OCCUPIED && !self.expired(slot, now),
            });
        }
        out
    }

    fn expired(&self, slot: &Slot, now: u64) -> bool {
        match self.policy {
            Policy::Refuse => false,
            Policy::Reclaim { idle: limit } | Policy::Evict { ttl: limit } => {
                let last = slot.last_used_ns.load(Ordering::Relaxed);
                u128::from(now.saturating_sub(last)) > limit.as_nanos()
            }
        }
    }

    /// Adds one to the session's counter and returns the new value, or
    /// `None` if the id is unknown (never issued, expired or evicted).
    pub fn increment(&self, sid: SessionId) -> Option<u64> {
        self.increment_at(sid, self.now())
    }

    fn increment_at(&self, sid: SessionId, now: u64) -> Option<u64> {
        self.with_session(sid, now, |g| {
            g.slot.last_used_ns.store(now, Ordering::Relaxed);
            self.touch(g.slot);
            g.slot
                .counter
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1)
        })
    }

    /// Forgets a session; whether it was there.
    pub fn remove(&self, sid: SessionId) -> bool {
        self.with_session(sid, self.now(), |g| {
            g.state = TOMBSTONE;
            self.touch(g.slot);
            self.header().sessions.fetch_sub(1, Ordering::Relaxed);
        })
        .is_some()
    }

    /// Runs `f` on the session's slot under its lock; `None` if unknown.
    /// An expired session met here is reclaimed and reported unknown.
    fn with_session<R>(
        &self,
        sid: SessionId,
        now: u64,
        f: impl FnOnce(&mut Locked<'_>) -> R,
    ) -> Option<R> {
        let home = sid.home(self.slots);
        for i in 0..self.window {
            let slot = self.slot(home + i);
            let state = slot.state();
            if state == EMPTY {
                return None;
            }
            // Read without the lock first, so probing past other sessions
            // takes no locks; then check again under the lock.
            if state != OCCUPIED || !sid.same(slot.sid()) {
                continue;
            }
            let mut g = slot.lock();
            if g.state != OCCUPIED || !sid.same(slot.sid()) {
                continue;
            }
            if self.expired(slot, now) {
                g.state = TOMBSTONE;
                self.touch(slot);
                let h = self.header();
                h.sessions.fetch_sub(1, Ordering::Relaxed);
                h.expired.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            return Some(f(&mut g));
        }
        None
    }

    /// Stores a new session holding `value`. With [`Policy::Refuse`] a full
    /// table answers [`TableFull`]; with [`Policy::Reclaim`] it does unless
    /// an idle session near the id's home can go; with [`Policy::Evict`] it
    /// makes room.
    /// `sid` must be fresh (from [`SessionId::generate`]).
    pub fn insert(&self, sid: SessionId, value: u64) -> Result<(), TableFull> {
        self.insert_at(sid, value, self.now())
    }

    fn insert_at(&self, sid: SessionId, value: u64, now: u64) -> Result<(), TableFull> {
        let h = self.header();
        let home = sid.home(self.slots);
        // 1. Reserve one of the `max_sessions` places.
        loop {
            let n = h.sessions.load(Ordering::Relaxed);
            if n < self.max_sessions {
                if h.sessions
                    .compare_exchange_weak(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            match self.policy {
                Policy::Evict { .. } => {
                    // Nothing found to evict means the places are reserved
                    // by inserts still claiming their slots: let them finish.
                    if !self.evict_one(home, now, self.slots.div_ceil(self.window), false) {
                        std::thread::yield_now();
                    }
                }
                // Bounded search, so a full table cannot be made to scan
                // itself whole for every refused client.
                Policy::Reclaim { .. } if self.evict_one(home, now, RECLAIM_WINDOWS, true) => {}
                Policy::Refuse | Policy::Reclaim { .. } => {
                    h.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(TableFull);
                }
            }
        }
        // 2. Claim a free (or expired) slot in the window.
        for i in 0..self.window {
            let slot = self.slot(home + i);
            if slot.state() == OCCUPIED && !self.expired(slot, now) {
                continue;
            }
            let mut g = slot.lock();
            match g.state {
                EMPTY | TOMBSTONE => {}
                OCCUPIED if self.expired(slot, now) => {
                    h.sessions.fetch_sub(1, Ordering::Relaxed);
                    h.expired.fetch_add(1, Ordering::Relaxed);
                }
                _ => continue,
            }
            self.log_overwrite(slot, g.state);
            slot.fill(sid, value, now);
            self.touch(slot);
            g.state = OCCUPIED;
            return Ok(());
        }
        // 3. Every slot of the window is live (rare at 50% fill).
        if !matches!(self.policy, Policy::Evict { .. }) {
            h.sessions.fetch_sub(1, Ordering::Relaxed);
            h.refused.fetch_add(1, Ordering::Relaxed);
            return Err(TableFull);
        }
        let victim = self.slot(self.least_recent(home).unwrap_or(home));
        let mut g = victim.lock();
        if g.state == OCCUPIED {
            h.sessions.fetch_sub(1, Ordering::Relaxed);
            h.evicted.fetch_add(1, Ordering::Relaxed);
        }
        self.log_overwrite(victim, g.state);
        victim.fill(sid, value, now);
        self.touch(victim);
        g.state = OCCUPIED;
        Ok(())
    }

    /// The occupied slot of the window at `start` used longest ago.
    fn least_recent(&self, start: usize) -> Option<usize> {
        (start..start + self.window)
            .filter(|&i| self.slot(i).state() == OCCUPIED)
            .min_by_key(|&i| self.slot(i).last_used_ns.load(Ordering::Relaxed))
    }

    /// Removes one session to make room, looking first in the window at
    /// `start`, then in up to `windows - 1` following windows; with
    /// `expired_only`, only a session past its idle limit. Whether one was
    /// removed.
    fn evict_one(&self, start: usize, now: u64, windows: usize, expired_only: bool) -> bool {
        for w in 0..windows {
            let Some(i) = self.least_recent(start + w * self.window) else {
                continue;
            };
            let slot = self.slot(i);
            if expired_only && !self.expired(slot, now) {
                continue;
            }
            let mut g = slot.lock();
            if g.state != OCCUPIED {
                return false; // raced with another remover; the caller retries
            }
            let counter = if self.expired(slot, now) {
                &self.header().expired
            } else {
                &self.header().evicted
            };
            counter.fetch_add(1, Ordering::Relaxed);
            g.state = TOMBSTONE;
            self.touch(slot);
            self.header().sessions.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Migration's destination side: stores `record` unless it is gone
    /// (then forgets the id); a session already held is overwritten with
    /// `overwrite` (pre-copy: a later round's value is newer) and left alone
    /// without it (post-copy: the destination's own value is newer).
    /// Whether the table changed.
    pub fn import(&self, record: &SessionRecord, overwrite: bool) -> Result<bool, TableFull> {
        let _lock = self.import_lock();
        let now = self.now();
        if !record.live {
            return Ok(overwrite && self.remove(record.sid));
        }
        let held = self.with_session(record.sid, now, |g| {
            if overwrite {
                g.slot.counter.store(record.value, Ordering::Relaxed);
                g.slot.last_used_ns.store(now, Ordering::Relaxed);
                self.touch(g.slot);
            }
        });
        match held {
            Some(()) => Ok(overwrite),
            None => self.insert_at(record.sid, record.value, now).map(|()| true),
        }
    }

    /// Holds the table's import lock until the guard drops.
    fn import_lock(&self) -> impl Drop + '_ {
        struct Guard<'a>(&'a AtomicU32);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        let word = &self.header().import_lock;
        while word
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
        Guard(word)
    }

    /// Migration's source side in post-copy: the session's value, marking
    /// it moved the first time (from then on it is served elsewhere); the
    /// same value again for a session already moved. `None`: not held.
    pub fn take(&self, sid: SessionId) -> Option<u64> {
        let now = self.now();
        let home = sid.home(self.slots);
        for i in 0..self.window {
            let slot = self.slot(home + i);
            match slot.state() {
                EMPTY => return None,
                OCCUPIED | MOVED if sid.same(slot.sid()) => {}
                _ => continue,
            }
            let mut g = slot.lock();
            if !sid.same(slot.sid()) {
                continue;
            }
            match g.state {
                MOVED => return Some(slot.counter.load(Ordering::Relaxed)),
                OCCUPIED if !self.expired(slot, now) => {
                    self.move_out(&mut g);
                    return Some(slot.counter.load(Ordering::Relaxed));
                }
                _ => continue,
            }
        }
        None
    }

    /// Takes (as [`SessionTable::take`]) up to `n` live sessions from slot
    /// `from` on; and the slot to go on from, `None` once the table is done.
    pub fn take_batch(&self, from: usize, n: usize) -> (Vec<SessionRecord>, Option<usize>) {
        let now = self.now();
        let mut out = Vec::new();
        for i in from..self.slots {
            if out.len() >= n {
                return (out, Some(i));
            }
            let slot = self.slot(i);
            if slot.state() != OCCUPIED {
                continue;
            }
            let mut g = slot.lock();
            if g.state != OCCUPIED || self.expired(slot, now) {
                continue;
            }
            self.move_out(&mut g);
            out.push(SessionRecord {
                sid: SessionId(slot.sid()),
                value: slot.counter.load(Ordering::Relaxed),
                live: true,
            });
        }
        (out, None)
    }

    fn move_out(&self, g: &mut Locked<'_>) {
        g.state = MOVED;
        self.touch(g.slot);
        self.header().sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Forgets every moved session (their destination holds them); how many.
    pub fn drop_moved(&self) -> u64 {
        self.forget(|state| state == MOVED)
    }

    /// Forgets every session, live or moved; how many.
    pub fn clear(&self) -> u64 {
        self.forget(|state| state == MOVED || state == OCCUPIED)
    }

    fn forget(&self, pick: impl Fn(u32) -> bool) -> u64 {
        let mut n = 0;
        for i in 0..self.slots {
            let slot = self.slot(i);
            if !pick(slot.state()) {
                continue;
            }
            let mut g = slot.lock();
            if !pick(g.state) {
                continue;
            }
            if g.state == OCCUPIED {
                self.header().sessions.fetch_sub(1, Ordering::Relaxed);
            }
            g.state = TOMBSTONE;
            self.touch(slot);
            n += 1;
        }
        n
    }

    /// The table's counters.
    pub fn stats(&self) -> TableStats {
        let h = self.header();
        TableStats {
            sessions: h.sessions.load(Ordering::Relaxed),
            capacity: self.max_sessions,
            bytes: self.region.len() as u64,
            evicted: h.evicted.load(Ordering::Relaxed),
            expired: h.expired.load(Ordering::Relaxed),
            refused: h.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
