//! Unit tests of the session table: lookups, capacity, eviction, expiry,
//! and exact counts under concurrent increments from threads and from
//! forked processes. Times (nanoseconds) are passed explicitly, so expiry is tested
//! without sleeping.

use super::*;

const SOFT: Policy = Policy::Evict {
    ttl: Duration::from_millis(1000),
};

/// Table times are nanoseconds.
fn ms(n: u64) -> u64 {
    n * 1_000_000
}

fn id() -> SessionId {
    SessionId::generate().unwrap()
}

#[test]
fn insert_increment_and_unknown_ids() {
    let t = SessionTable::new(100, Policy::Refuse).unwrap();
    let a = id();
    let b = id();
    t.insert(a, 1).unwrap();
    t.insert(b, 41).unwrap();
    assert_eq!(t.increment(a), Some(2));
    assert_eq!(t.increment(a), Some(3));
    assert_eq!(t.increment(b), Some(42));
    // A guessed id, and one that differs from a real one in one bit.
    assert_eq!(t.increment(id()), None);
    assert_eq!(t.increment(SessionId([a.0[0], a.0[1] ^ 1])), None);
    assert_eq!(t.stats().sessions, 2);
    assert!(t.remove(a));
    assert!(!t.remove(a));
    assert_eq!(t.increment(a), None);
    assert_eq!(t.increment(b), Some(43), "removing a must not lose b");
    let s = t.stats();
    assert_eq!((s.sessions, s.capacity), (1, 100));
    // The header, 200 slots of 40 bytes and the removal log, in whole pages.
    let need = (HEADER_BYTES + 200 * SLOT_BYTES + REMOVAL_LOG * REMOVAL_BYTES) as u64;
    assert!(s.bytes >= need && s.bytes < need + 65536 && s.bytes % 4096 == 0);
    assert_eq!(SLOT_BYTES, 40);
}

#[test]
fn stateful_refuses_when_full_and_keeps_old_sessions() {
    let t = SessionTable::new(3, Policy::Refuse).unwrap();
    let old: Vec<_> = (0..3).map(|_| id()).collect();
    for s in &old {
        t.insert(*s, 1).unwrap();
    }
    assert_eq!(t.insert(id(), 1), Err(TableFull));
    assert_eq!(t.insert(id(), 1), Err(TableFull));
    for s in &old {
        assert_eq!(t.increment(*s), Some(2));
    }
    let st = t.stats();
    assert_eq!((st.sessions, st.refused, st.evicted), (3, 2, 0));
    // Room again once one is gone.
    t.remove(old[0]);
    t.insert(id(), 1).unwrap();
}

#[test]
fn stateful_idle_limit_reclaims_idle_sessions_only() {
    // Anonymous clients filled the table; the idle limit lets their places go.
    let t = SessionTable::new(
        3,
        Policy::Reclaim {
            idle: Duration::from_millis(1000),
        },
    )
    .unwrap();
    let (a, b, c) = (id(), id(), id());
    t.insert_at(a, 1, ms(0)).unwrap();
    t.insert_at(b, 1, ms(0)).unwrap();
    t.insert_at(c, 1, ms(500)).unwrap();
    // Full, nobody idle long enough: refused, nothing evicted.
    assert_eq!(t.insert_at(id(), 1, ms(900)), Err(TableFull));
    assert_eq!(t.increment_at(a, ms(1000)), Some(2));
    assert_eq!(t.increment_at(c, ms(1000)), Some(2));
    // At 1950 ms b has been idle 1950 ms; a and c (used at 1000) not.
    let d = id();
    t.insert_at(d, 5, ms(1950)).unwrap();
    assert_eq!(
        t.increment_at(b, ms(1950)),
        None,
        "b was idle past the limit"
    );
    assert_eq!(t.increment_at(a, ms(1950)), Some(3));
    assert_eq!(t.increment_at(c, ms(1950)), Some(3));
    assert_eq!(t.increment_at(d, ms(1950)), Some(6));
    // A session idle past the limit is gone when next used, as in soft mode.
    assert_eq!(t.increment_at(d, ms(3000)), None);
    let st = t.stats();
    assert_eq!((st.refused, st.evicted, st.expired), (1, 0, 2));
}

#[test]
fn soft_evicts_the_least_recently_used() {
    let t = SessionTable::new(2, SOFT).unwrap();
    let (a, b, c) = (id(), id(), id());
    t.insert_at(a, 1, ms(0)).unwrap();
    t.insert_at(b, 1, ms(10)).unwrap();
    assert_eq!(t.increment_at(a, ms(20)), Some(2)); // b is now the older one
    t.insert_at(c, 7, ms(30)).unwrap();
    assert_eq!(t.increment_at(b, ms(40)), None, "b was evicted");
    assert_eq!(t.increment_at(a, ms(40)), Some(3));
    assert_eq!(t.increment_at(c, ms(40)), Some(8));
    let st = t.stats();
    assert_eq!((st.sessions, st.evicted, st.expired), (2, 1, 0));
}

#[test]
fn soft_sessions_expire_after_ttl_of_idleness() {
    let t = SessionTable::new(10, SOFT).unwrap();
    let a = id();
    t.insert_at(a, 1, ms(0)).unwrap();
    // Each use restarts the clock.
    assert_eq!(t.increment_at(a, ms(900)), Some(2));
    assert_eq!(t.increment_at(a, ms(1800)), Some(3));
    assert_eq!(t.increment_at(a, ms(2801)), None, "idle 1001 ms > ttl");
    let st = t.stats();
    assert_eq!((st.sessions, st.expired), (0, 1));
    // Stateful sessions never expire.
    let t = SessionTable::new(10, Policy::Refuse).unwrap();
    t.insert_at(a, 1, ms(0)).unwrap();
    assert_eq!(t.increment_at(a, u64::MAX / 2), Some(2));
}

#[test]
fn full_soft_table_evicts_expired_sessions_first() {
    let t = SessionTable::new(2, SOFT).unwrap();
    let (a, b, c) = (id(), id(), id());
    t.insert_at(a, 1, ms(0)).unwrap();
    t.insert_at(b, 1, ms(1500)).unwrap();
    // At 2000, a (idle 2000 ms) has expired, b has not.
    t.insert_at(c, 1, ms(2000)).unwrap();
    assert_eq!(t.increment_at(b, ms(2000)), Some(2));
    assert_eq!(t.increment_at(a, ms(2000)), None);
    let st = t.stats();
    assert_eq!((st.sessions, st.expired, st.evicted), (2, 1, 0));
}

/// Ids whose home is slot 0 in any table (their hash bits are tiny).
fn colliding(n: u64) -> SessionId {
    SessionId([n, 0])
}

#[test]
fn a_full_probe_window_refuses_or_evicts() {
    // Room for 10 sessions but a window of 2 slots: the third id with the
    // same home finds its window full before the table is.
    let t = SessionTable::with_geometry(10, 10, 2, Policy::Refuse).unwrap();
    t.insert_at(colliding(1), 1, ms(0)).unwrap();
    t.insert_at(colliding(2), 1, ms(0)).unwrap();
    assert_eq!(t.insert_at(colliding(3), 1, ms(0)), Err(TableFull));
    assert_eq!(
        t.stats().sessions,
        2,
        "the refused insert gave its place back"
    );
    assert_eq!(t.increment_at(colliding(1), ms(0)), Some(2));
    assert_eq!(t.increment_at(colliding(2), ms(0)), Some(2));

    let t = SessionTable::with_geometry(10, 10, 2, SOFT).unwrap();
    t.insert_at(colliding(1), 1, ms(0)).unwrap();
    t.insert_at(colliding(2), 1, ms(5)).unwrap();
    t.insert_at(colliding(3), 1, ms(10)).unwrap();
    assert_eq!(
        t.increment_at(colliding(1), ms(10)),
        None,
        "LRU of the window"
    );
    assert_eq!(t.increment_at(colliding(2), ms(10)), Some(2));
    assert_eq!(t.increment_at(colliding(3), ms(10)), Some(2));
    assert_eq!(t.stats().sessions, 2);
}

#[test]
fn lookups_find_ids_past_tombstones() {
    let t = SessionTable::with_geometry(10, 10, 4, Policy::Refuse).unwrap();
    for n in 1..=3 {
        t.insert_at(colliding(n), n, ms(0)).unwrap();
    }
    assert!(t.remove(colliding(1)));
    assert_eq!(t.increment_at(colliding(3), ms(0)), Some(4));
    // The tombstone is reused by the next insert.
    t.insert_at(colliding(4), 40, ms(0)).unwrap();
    assert_eq!(t.increment_at(colliding(4), ms(0)), Some(41));
    assert_eq!(t.increment_at(colliding(2), ms(0)), Some(3));
}

const SESSIONS: usize = 4;
const ROUNDS: u64 = 2000;

#[test]
fn concurrent_increments_from_threads_are_exact() {
    let t = SessionTable::new(16, Policy::Refuse).unwrap();
    let ids: Vec<_> = (0..SESSIONS).map(|_| id()).collect();
    for s in &ids {
        t.insert(*s, 0).unwrap();
    }
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..ROUNDS {
                    for s in &ids {
                        assert!(t.increment(*s).is_some());
                    }
                }
            });
        }
    });
    for s in &ids {
        assert_eq!(t.increment(*s), Some(8 * ROUNDS + 1));
    }
}

#[test]
fn concurrent_increments_from_forked_processes_are_exact() {
    let t = SessionTable::new(16, Policy::Refuse).unwrap();
    let ids: Vec<_> = (0..SESSIONS).map(|_| id()).collect();
    for s in &ids {
        t.insert(*s, 0).unwrap();
    }
    // Children report through shared memory, not exit codes: another test
    // in this process may run a `waitpid(-1)` reaper that collects them.
    let report = SharedRegion::new(16).unwrap();
    // SAFETY: two zero-valid atomics at the start of a page-aligned mapping
    // that outlives the children's use (the parent waits for them below).
    let done = unsafe { &*report.as_ptr().cast::<AtomicU64>() };
    let failed = unsafe { &*report.as_ptr().add(8).cast::<AtomicU64>() };
    const CHILDREN: u64 = 4;
    let mut pids = Vec::new();
    for _ in 0..CHILDREN {
        // SAFETY: the child touches only shared memory (atomics, no
        // allocation, no locks other than the table's own) and `_exit`s, so
        // it is safe even though the test harness is multi-threaded.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", io::Error::last_os_error());
        if pid == 0 {
            let mut ok = true;
            for _ in 0..ROUNDS {
                for s in &ids {
                    ok &= t.increment(*s).is_some();
                }
            }
            if !ok {
                failed.fetch_add(1, Ordering::SeqCst);
            }
            done.fetch_add(1, Ordering::SeqCst);
            unsafe { libc::_exit(0) };
        }
        pids.push(pid);
    }
    // The parent increments too, at the same time.
    for _ in 0..ROUNDS {
        for s in &ids {
            assert!(t.increment(*s).is_some());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < CHILDREN && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    for pid in pids {
        // SAFETY: reaping our own child if nobody else has (ECHILD is fine).
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    assert_eq!(
        done.load(Ordering::SeqCst),
        CHILDREN,
        "children did not finish"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "a child lost a session");
    for s in &ids {
        assert_eq!(t.increment(*s), Some((CHILDREN + 1) * ROUNDS + 1));
    }
}

#[test]
fn concurrent_soft_churn_never_exceeds_capacity() {
    // Many threads creating sessions in a small soft table: evictions race
    // with inserts, yet the count stays within bounds and stays consistent.
    let t = SessionTable::new(32, SOFT).unwrap();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..2000 {
                    let s = id();
                    t.insert(s, 1).unwrap();
                    // It may already be evicted by another thread, but if it
                    // is found, its value is the one we stored plus one.
                    if let Some(v) = t.increment(s) {
                        assert_eq!(v, 2);
                    }
                }
            });
        }
    });
    let st = t.stats();
    assert!(st.sessions <= 32, "{st:?}");
    assert_eq!(st.evicted + st.expired + st.sessions, 8000, "{st:?}");
}

/// Dirty tracking: after a mark, exactly the sessions changed since are
/// reported — increments, new sessions, removals, evictions and expiries —
/// and a later mark leaves the earlier changes behind.
#[test]
fn changes_since_a_mark_are_exactly_what_changed() {
    let t = SessionTable::with_geometry(4, 8, 8, SOFT).unwrap();
    let (a, b, c, d) = (id(), id(), id(), id());
    t.insert_at(a, 1, ms(0)).unwrap();
    t.insert_at(b, 10, ms(0)).unwrap();
    t.insert_at(c, 100, ms(0)).unwrap();
    // Everything live, before any mark.
    let mut all: Vec<u64> = t.sessions().iter().map(|r| r.value).collect();
    all.sort();
    assert_eq!(all, [1, 10, 100]);
    let m1 = t.mark();
    assert!(
        t.changed_since(m1).unwrap().is_empty(),
        "nothing changed yet"
    );
    assert_eq!(t.increment_at(a, ms(10)), Some(2));
    assert!(t.remove(b));
    t.insert_at(d, 7, ms(10)).unwrap();
    // A session gone is known by its id (its slot may hold another now):
    // reported here by the value it was made with.
    let made_with = |sid: SessionId| {
        [(a, 1), (b, 10), (c, 100), (d, 7)]
            .into_iter()
            .find(|(s, _)| s.same(sid.0))
            .map_or(0, |(_, v)| v)
    };
    let changed = |m| {
        let mut v: Vec<(u64, bool)> = t
            .changed_since(m)
            .unwrap()
            .iter()
            .map(|r| (if r.live { r.value } else { made_with(r.sid) }, r.live))
            .collect();
        v.sort();
        v
    };
    assert_eq!(changed(m1), [(2, true), (7, true), (10, false)]);
    // A new round: only what changes from now on.
    let m2 = t.mark();
    assert_eq!(t.increment_at(d, ms(20)), Some(8));
    assert_eq!(changed(m2), [(8, true)]);
    // Since the first mark: both rounds.
    assert_eq!(changed(m1), [(2, true), (8, true), (10, false)]);
    // Expiry is a change too (c idle past the ttl, met by a lookup).
    let m3 = t.mark();
    assert_eq!(t.increment_at(c, ms(5000)), None);
    assert_eq!(changed(m3), [(100, false)]);
    // A session that expired unseen is not among the live ones.
    assert!(t.sessions().iter().all(|r| r.sid != c));
}

/// A slot reused by a new session, or taken from an evicted one, still
/// reports the removal of its old occupant (through the removal log); a
/// log that had to drop removals made since a mark says so (`None`)
/// instead of answering with less, and a newer mark is whole again.
#[test]
fn removals_survive_their_slots_being_reused() {
    // One slot: every new session takes it.
    let t = SessionTable::with_geometry(1, 1, 1, Policy::Refuse).unwrap();
    let (a, b) = (id(), id());
    t.insert(a, 5).unwrap();
    let m = t.mark();
    assert!(t.remove(a));
    t.insert(b, 9).unwrap();
    let got = t.changed_since(m).unwrap();
    let gone: Vec<bool> = got
        .iter()
        .filter(|r| a.same(r.sid.0))
        .map(|r| r.live)
        .collect();
    assert_eq!(gone, [false], "a's removal: {got:?}");
    assert!(got
        .iter()
        .any(|r| b.same(r.sid.0) && r.live && r.value == 9));
    // Evicted to make room (soft): the same.
    let t = SessionTable::with_geometry(1, 1, 1, SOFT).unwrap();
    t.insert(a, 5).unwrap();
    let m = t.mark();
    t.insert(b, 9).unwrap();
    let got = t.changed_since(m).unwrap();
    assert!(got.iter().any(|r| a.same(r.sid.0) && !r.live), "{got:?}");
    // More reuses since the mark than the log holds.
    let t = SessionTable::with_geometry(1, 1, 1, Policy::Refuse).unwrap();
    let m = t.mark();
    for _ in 0..=REMOVAL_LOG {
        let s = id();
        t.insert(s, 1).unwrap();
        assert!(t.remove(s));
    }
    t.insert(id(), 1).unwrap();
    assert_eq!(t.changed_since(m), None);
    let fresh = t.mark();
    assert_eq!(t.changed_since(fresh), Some(Vec::new()));
}

/// Epochs compare with wrap-around.
#[test]
fn marks_survive_the_epoch_wrapping() {
    let t = SessionTable::new(4, Policy::Refuse).unwrap();
    t.header()
        .epoch
        .store(u64::from(u32::MAX) - 1, Ordering::Relaxed);
    let before = t.mark(); // u32::MAX
    let a = id();
    t.insert(a, 1).unwrap();
    let after = t.mark(); // wraps to 0
    assert_eq!((before, after), (u32::MAX, 0));
    assert_eq!(t.changed_since(before).unwrap().len(), 1);
    assert!(t.changed_since(after).unwrap().is_empty());
    assert_eq!(t.increment(a), Some(2));
    assert_eq!(t.changed_since(after).unwrap()[0].value, 2);
}

/// Imports: pre-copy overwrites and forgets, post-copy keeps the
/// destination's own (newer) value.
#[test]
fn imports_overwrite_or_keep() {
    let t = SessionTable::new(8, Policy::Refuse).unwrap();
    let a = id();
    let rec = |value, live| SessionRecord {
        sid: a,
        value,
        live,
    };
    assert_eq!(t.import(&rec(5, true), true), Ok(true), "new");
    assert_eq!(t.import(&rec(9, true), true), Ok(true), "overwritten");
    assert_eq!(t.increment(a), Some(10));
    assert_eq!(t.import(&rec(3, true), false), Ok(false), "kept");
    assert_eq!(t.increment(a), Some(11));
    assert_eq!(
        t.import(&rec(0, false), false),
        Ok(false),
        "a gone record kept out"
    );
    assert_eq!(t.import(&rec(0, false), true), Ok(true), "forgotten");
    assert_eq!(t.increment(a), None);
    assert_eq!(t.stats().sessions, 0);
    // A full stateful table says so.
    let small = SessionTable::new(1, Policy::Refuse).unwrap();
    small.insert(id(), 1).unwrap();
    assert_eq!(small.import(&rec(1, true), true), Err(TableFull));
}

/// Post-copy's source: a taken session answers the same value again, is no
/// longer served here, and leaves when the moved ones are dropped.
#[test]
fn taken_sessions_move_out() {
    let t = SessionTable::new(64, Policy::Refuse).unwrap();
    let ids: Vec<SessionId> = (0..20).map(|_| id()).collect();
    for (n, &sid) in ids.iter().enumerate() {
        t.insert(sid, n as u64).unwrap();
    }
    assert_eq!(t.take(ids[3]), Some(3));
    assert_eq!(t.take(ids[3]), Some(3), "taking again gives the same value");
    assert_eq!(t.increment(ids[3]), None, "served elsewhere now");
    assert_eq!(t.take(id()), None);
    assert_eq!(t.stats().sessions, 19);
    // Batches take the rest exactly once.
    let mut seen = vec![3u64];
    let mut from = Some(0);
    while let Some(f) = from {
        let (batch, next) = t.take_batch(f, 4);
        assert!(batch.len() <= 4);
        seen.extend(batch.iter().map(|r| r.value));
        from = next;
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    assert_eq!(t.stats().sessions, 0);
    assert_eq!(t.take(ids[7]), Some(7), "moved, still answered");
    assert_eq!(t.drop_moved(), 20);
    assert_eq!(t.take(ids[7]), None);
    // Dropped slots are free again.
    for _ in 0..64 {
        t.insert(id(), 1).unwrap();
    }
}

/// An on-demand fetch and the background copy importing one id at once
/// store it once: the other import sees it held.
#[test]
fn concurrent_imports_of_one_id_store_it_once() {
    let t = std::sync::Arc::new(SessionTable::new(1024, Policy::Refuse).unwrap());
    for round in 0..200u64 {
        let sid = id();
        let rec = SessionRecord {
            sid,
            value: round,
            live: true,
        };
        let stored: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let t = t.clone();
                    s.spawn(move || t.import(&rec, false).unwrap())
                })
                .collect();
            hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
        });
        assert_eq!(stored, 1, "round {round}");
        assert_eq!(t.increment(sid), Some(round + 1));
        assert!(t.remove(sid));
        assert!(!t.remove(sid), "one copy only");
    }
}

#[test]
fn clear_forgets_everything() {
    let t = SessionTable::new(16, Policy::Refuse).unwrap();
    let (a, b) = (id(), id());
    t.insert(a, 1).unwrap();
    t.insert(b, 1).unwrap();
    t.take(a).unwrap();
    assert_eq!(t.clear(), 2);
    assert_eq!(
        (t.take(a), t.increment(b), t.stats().sessions),
        (None, None, 0)
    );
}
