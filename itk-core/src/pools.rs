//! UserPools decisions, as pure functions: which vhosts may be served by a
//! user's persistent processes, how a worker claims an idle process of a
//! pool through its shared words, and how many processes the parent starts.
//!
//! A pool is identified by what a process of it has become for good:
//! uid, gid and nice value ([`PoolKey`]). Its processes share one receiving
//! end (any of them may take the next connection) and a small table of
//! shared words, mapped only in the parent, the workers and that pool's own
//! processes (so tenant code can only ever write its own pool's words):
//!
//! * word 0, demand: connections that took the classic path because no
//!   process of the pool was idle (the parent reads and resets it);
//! * word 1, idle: processes waiting for a connection that no worker has
//!   reserved yet. A worker reserves one (idle - 1) before it sends a
//!   connection, so every connection sent has a waiting process to take
//!   it, and a process that wants to leave must first take itself out of
//!   the count (it cannot when every waiter is reserved: a connection is on
//!   its way);
//! * word 2, debt: reservations the count owes, made for a waiter that
//!   died (the next process to start waiting takes the connection on its
//!   way instead of counting itself idle);
//! * word 3 + i: 1 while process `i` waits (so the parent can correct the
//!   count when a waiting process dies).
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The most processes a pool can have (the shared table's size).
pub const MAX_PROCESSES: usize = 64;
/// Words in a pool's shared table.
pub const WORDS: usize = FLAGS + MAX_PROCESSES;
const DEMAND: usize = 0;
const IDLE: usize = 1;
const DEBT: usize = 2;
const FLAGS: usize = 3;

/// What a pool's processes run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub uid: u32,
    pub gid: u32,
    /// NiceValue of the vhost (None: the server's own).
    pub nice: Option<i32>,
}

/// What decides whether a vhost's requests can go to a pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct VhostFacts {
    /// `UserPools` in effect for this vhost.
    pub user_pools: bool,
    /// The vhost-level identity (AssignUserID, or else `User`/`Group`).
    pub uid: u32,
    pub gid: u32,
    /// The vhost-level NiceValue.
    pub nice: Option<i32>,
    /// AssignUserIDExpr or AssignGroupIDExpr applies at vhost level.
    pub expression: bool,
    /// An identity or NiceValue directive appears in a `<Directory>`,
    /// `<Location>`, `<Files>`, `<If>` (or any other section) that can
    /// apply to this vhost (its own, or the main server's).
    pub in_section: bool,
    /// MaxClientsVHost applies (counted only by processes that run no vhost
    /// code).
    pub max_clients: bool,
}

/// Why a vhost's connections always take the classic path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classic {
    Off,
    Expression,
    Section,
    MaxClientsVHost,
    Root,
}

impl std::fmt::Display for Classic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Classic::Off => "UserPools Off",
            Classic::Expression => "AssignUserIDExpr/AssignGroupIDExpr",
            Classic::Section => "an identity or NiceValue directive in a section",
            Classic::MaxClientsVHost => "MaxClientsVHost",
            Classic::Root => "uid or gid 0",
        })
    }
}

/// The pool of a vhost whose identity cannot vary by request, or why its
/// connections take the classic path.
pub fn eligibility(f: &VhostFacts) -> Result<PoolKey, Classic> {
    if !f.user_pools {
        return Err(Classic::Off);
    }
    if f.expression {
        return Err(Classic::Expression);
    }
    if f.in_section {
        return Err(Classic::Section);
    }
    if f.max_clients {
        return Err(Classic::MaxClientsVHost);
    }
    if f.uid == 0 || f.gid == 0 {
        return Err(Classic::Root);
    }
    Ok(PoolKey {
        uid: f.uid,
        gid: f.gid,
        nice: f.nice,
    })
}

/// Decrements `w` if it is above 0; whether it did.
fn take_one(w: &AtomicU32) -> bool {
    w.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

/// A worker reserves one waiting process for the connection it is about
/// to send; false if none is idle.
pub fn claim(words: &[AtomicU32]) -> bool {
    words.get(IDLE).is_some_and(take_one)
}

/// The idle count as written (by the pool's processes: a tenant may have
/// written anything).
pub fn idle_count(words: &[AtomicU32]) -> u32 {
    words.get(IDLE).map_or(0, |w| w.load(Ordering::Acquire))
}

/// Gives back a reservation the worker could not use (the send failed).
pub fn unclaim(words: &[AtomicU32]) {
    if let Some(w) = words.get(IDLE) {
        w.fetch_add(1, Ordering::AcqRel);
    }
}

/// Process `i` (re)starts waiting for a connection: counted once.
pub fn wait_begin(words: &[AtomicU32], i: usize) {
    if let (Some(flag), Some(idle), Some(debt)) =
        (words.get(FLAGS + i), words.get(IDLE), words.get(DEBT))
        && flag.swap(1, Ordering::AcqRel) == 0
        && !take_one(debt)
    {
        idle.fetch_add(1, Ordering::AcqRel);
    }
}

/// Process `i` took a connection (the worker that sent it reserved a
/// waiter already).
pub fn got_connection(words: &[AtomicU32], i: usize) {
    if let Some(flag) = words.get(FLAGS + i) {
        flag.store(0, Ordering::Release);
    }
}

/// Process `i` stops waiting for good (idle timeout, graceful stop): true
/// if it may go, false if every waiter is reserved (a connection is on its
/// way, which it must take first).
pub fn leave(words: &[AtomicU32], i: usize) -> bool {
    if words
        .get(FLAGS + i)
        .is_none_or(|f| f.load(Ordering::Acquire) == 0)
    {
        return true;
    }
    if claim(words) {
        got_connection(words, i);
        return true;
    }
    false
}

/// The parent reaped process `i`: if it was waiting, it no longer counts;
/// if every waiter was reserved, a connection is on its way for a waiter
/// that is gone, and the next one to wait owes it.
pub fn died(words: &[AtomicU32], i: usize) {
    if let (Some(flag), Some(idle), Some(debt)) =
        (words.get(FLAGS + i), words.get(IDLE), words.get(DEBT))
        && flag.swap(0, Ordering::AcqRel) == 1
        && !take_one(idle)
    {
        debt.fetch_add(1, Ordering::AcqRel);
    }
}

/// No process of the pool is left: nothing waits.
pub fn reset(words: &[AtomicU32]) {
    for w in words.iter().skip(IDLE) {
        w.store(0, Ordering::Release);
    }
}

/// No process of the pool is left, and `queued` connections wait in its
/// channel (sent to a process that died): nothing waits, and the next
/// `queued` processes to wait take them without counting as idle.
pub fn reset_owing(words: &[AtomicU32], queued: usize) {
    reset(words);
    if let Some(debt) = words.get(DEBT) {
        debt.store(queued.min(u32::MAX as usize) as u32, Ordering::Release);
    }
}

/// A connection took the classic path for want of an idle process.
pub fn note_demand(words: &[AtomicU32]) {
    if let Some(w) = words.get(DEMAND) {
        // saturating: a tenant may have written anything here
        let _ = w.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
            Some(v.saturating_add(1))
        });
    }
}

/// The demand since the last call (the parent's read).
pub fn take_demand(words: &[AtomicU32]) -> u32 {
    words.get(DEMAND).map_or(0, |w| w.swap(0, Ordering::AcqRel))
}

/// How many processes the parent starts for a pool now: as many as the
/// demand asks, within `max` processes and `per_round` at a time, and never
/// more than `free_slots`.
pub fn to_spawn(
    alive: usize,
    max: usize,
    demand: u32,
    per_round: usize,
    free_slots: usize,
) -> usize {
    if demand == 0 {
        return 0;
    }
    let room = max.min(MAX_PROCESSES).saturating_sub(alive);
    (demand as usize).min(room).min(per_round).min(free_slots)
}

/// The first process index of a pool not in `used`.
pub fn free_index(used: &[usize], max: usize) -> Option<usize> {
    (0..max.min(MAX_PROCESSES)).find(|i| !used.contains(i))
}

/// What a scoreboard slot's process is, in the parent's records: a worker
/// (0) or process `index` of pool `pool`.
pub fn encode_kind(pool: usize, index: usize) -> i32 {
    (((pool + 1) << 8) | (index & 0xff)) as i32
}

/// Inverse of [`encode_kind`]: None for a worker.
pub fn decode_kind(k: i32) -> Option<(usize, usize)> {
    let k = k as u32 as usize;
    (k >> 8 > 0).then(|| ((k >> 8) - 1, k & 0xff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> VhostFacts {
        VhostFacts {
            user_pools: true,
            uid: 1001,
            gid: 1002,
            nice: None,
            ..Default::default()
        }
    }

    fn table() -> Vec<AtomicU32> {
        (0..WORDS).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn a_static_identity_gets_a_pool() {
        assert_eq!(
            eligibility(&facts()),
            Ok(PoolKey {
                uid: 1001,
                gid: 1002,
                nice: None
            })
        );
        let f = VhostFacts {
            nice: Some(5),
            ..facts()
        };
        assert_eq!(eligibility(&f).unwrap().nice, Some(5));
    }

    #[test]
    fn anything_that_can_vary_takes_the_classic_path() {
        let cases = [
            (
                VhostFacts {
                    user_pools: false,
                    ..facts()
                },
                Classic::Off,
            ),
            (
                VhostFacts {
                    expression: true,
                    ..facts()
                },
                Classic::Expression,
            ),
            (
                VhostFacts {
                    in_section: true,
                    ..facts()
                },
                Classic::Section,
            ),
            (
                VhostFacts {
                    max_clients: true,
                    ..facts()
                },
                Classic::MaxClientsVHost,
            ),
            (VhostFacts { uid: 0, ..facts() }, Classic::Root),
            (VhostFacts { gid: 0, ..facts() }, Classic::Root),
        ];
        for (f, why) in cases {
            assert_eq!(eligibility(&f), Err(why), "{f:?}");
        }
    }

    #[test]
    fn every_connection_sent_has_a_waiting_process() {
        let t = table();
        assert!(!claim(&t), "nobody waits");
        wait_begin(&t, 3);
        wait_begin(&t, 3); // a second round of the same wait counts once
        assert!(claim(&t));
        assert!(!claim(&t), "one waiter, one connection");
        unclaim(&t);
        assert!(claim(&t));
        // 3 is reserved; 5 starts waiting and takes that connection (any
        // waiter may): 3 is still waiting and is the idle one now
        wait_begin(&t, 5);
        got_connection(&t, 5);
        assert!(claim(&t), "3 still waits, unreserved");
        assert!(!claim(&t));
    }

    #[test]
    fn a_process_leaves_only_when_no_connection_is_on_its_way() {
        let t = table();
        wait_begin(&t, 0);
        wait_begin(&t, 1);
        assert!(claim(&t)); // one connection on its way, two waiters
        assert!(leave(&t, 0), "one waiter is not reserved: it may go");
        assert!(!leave(&t, 1), "the last waiter is reserved: it stays");
        got_connection(&t, 1);
        assert!(leave(&t, 1), "not waiting any more: free to go");
        assert!(!claim(&t));
    }

    #[test]
    fn a_waiter_that_dies_no_longer_counts() {
        let t = table();
        wait_begin(&t, 0);
        wait_begin(&t, 1);
        died(&t, 0);
        assert!(claim(&t));
        assert!(!claim(&t));
        died(&t, 1); // reserved and dead: the next waiter owes the connection
        assert!(!claim(&t));
        wait_begin(&t, 3); // takes the connection on its way
        assert!(
            !claim(&t),
            "3 is not idle: a connection is on its way to it"
        );
        wait_begin(&t, 4);
        assert!(claim(&t), "4 is idle");
        died(&t, 7); // not waiting: nothing changes
        wait_begin(&t, 2);
        reset(&t);
        assert!(!claim(&t));
        assert_eq!(t[DEMAND].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn concurrent_claims_never_exceed_the_waiters() {
        let t = std::sync::Arc::new(table());
        for i in 0..MAX_PROCESSES {
            wait_begin(&t, i);
        }
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while claim(&t) {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, MAX_PROCESSES);
    }

    #[test]
    fn demand_is_counted_and_reset() {
        let t = table();
        assert_eq!(take_demand(&t), 0);
        note_demand(&t);
        note_demand(&t);
        assert_eq!(take_demand(&t), 2);
        assert_eq!(take_demand(&t), 0);
        t[0].store(u32::MAX, Ordering::Relaxed);
        note_demand(&t);
        assert_eq!(take_demand(&t), u32::MAX);
        assert_eq!(take_demand(&[]), 0);
    }

    #[test]
    fn spawning_stays_within_every_limit() {
        assert_eq!(to_spawn(0, 4, 0, 8, 10), 0);
        assert_eq!(to_spawn(0, 4, 1, 8, 10), 1);
        assert_eq!(to_spawn(0, 4, 100, 8, 10), 4);
        assert_eq!(to_spawn(3, 4, 100, 8, 10), 1);
        assert_eq!(to_spawn(4, 4, 100, 8, 10), 0);
        assert_eq!(to_spawn(5, 4, 100, 8, 10), 0);
        assert_eq!(to_spawn(0, 100, 100, 8, 10), 8);
        assert_eq!(to_spawn(0, 100, 100, 8, 2), 2);
        assert_eq!(to_spawn(0, 1000, 1000, 1000, 1000), MAX_PROCESSES);
    }

    #[test]
    fn indices_and_kinds() {
        assert_eq!(free_index(&[], 4), Some(0));
        assert_eq!(free_index(&[0, 1, 3], 4), Some(2));
        assert_eq!(free_index(&[0, 1, 2, 3], 4), None);
        assert_eq!(decode_kind(0), None);
        for (p, i) in [(0, 0), (0, 63), (7, 5), (300, 1)] {
            assert_eq!(decode_kind(encode_kind(p, i)), Some((p, i)));
        }
    }
    #[test]
    fn a_replacement_owes_the_connections_sent_to_a_dead_last_process() {
        let w = table();
        // process 0 waits; a worker reserves it and sends; it dies before
        // it reads: the parent finds one connection queued
        wait_begin(&w, 0);
        assert!(claim(&w));
        reset_owing(&w, 1);
        assert_eq!(idle_count(&w), 0);
        // its replacement (index 0 again) waits: it owes that connection,
        // so it is not counted idle; it takes it, and waits again: idle
        wait_begin(&w, 0);
        assert_eq!(idle_count(&w), 0);
        assert!(!claim(&w));
        got_connection(&w, 0);
        wait_begin(&w, 0);
        assert_eq!(idle_count(&w), 1);
        // (plain reset, as before: the replacement counted idle while it
        // served the queued connection, and twice once it waited again)
        let w = table();
        reset(&w);
        wait_begin(&w, 0);
        got_connection(&w, 0);
        wait_begin(&w, 0);
        assert_eq!(idle_count(&w), 2);
    }
}
