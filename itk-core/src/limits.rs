//! MaxClientsVHost admission over the shared table (one word per scoreboard
//! slot, holding the key of the vhost that slot's connection serves), and
//! what a connection child that already switched decides about a later
//! request of its keep-alive connection. Pure logic over a slice of
//! atomics: unit tested without httpd.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

/// A stable, never-zero key for "ServerName:port" (the whole name: no
/// truncation as in the scoreboard's 32-byte vhost field).
pub fn vhost_key(name: &str, port: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([b':']).chain(port.to_string().bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// What MaxClientsVHost says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The vhost is full: this many other connections serve it.
    Full(usize),
    /// After the switch (the table is out of reach), a request for another
    /// vhost than the one this connection is counted as, where one of the
    /// two has a limit: the connection must be closed and counted anew.
    Recount,
}

/// What this connection child counts as in the table: (vhost key, whether
/// that vhost has a limit).
pub type Counted = Option<(u64, bool)>;

/// Marks `slot` as serving `key`, then counts. Marking before counting
/// (sequentially consistent) means two children racing for the last place
/// may both refuse, but never both serve. `table` is None once this process
/// has unmapped it (after the switch): then only the vhost it is counted as
/// (or, where neither has a limit, any vhost) is admitted. Updates
/// `counted`.
pub fn admit(
    table: Option<&[AtomicU64]>,
    slot: usize,
    key: u64,
    limit: Option<u32>,
    counted: &mut Counted,
) -> Admission {
    let Some(t) = table else {
        return match *counted {
            Some((k, _)) if k == key => Admission::Admitted,
            Some((_, false)) | None if limit.is_none() => Admission::Admitted,
            _ => Admission::Recount,
        };
    };
    // No slot of ours in the table (one process, -X): nothing to count.
    let Some(mine) = t.get(slot) else {
        return Admission::Admitted;
    };
    mine.store(key, Ordering::SeqCst);
    if let Some(limit) = limit {
        let n = t.iter().filter(|w| w.load(Ordering::SeqCst) == key).count();
        if n > limit as usize {
            mine.store(0, Ordering::SeqCst);
            *counted = None;
            return Admission::Full(n - 1);
        }
    }
    *counted = Some((key, limit.is_some()));
    Admission::Admitted
}

/// What a switched connection child does with a later request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Later {
    /// Same identity, same nice value: serve it.
    Serve,
    /// Same identity, another nice value: set it, then serve (or close if
    /// that fails: lowering it needs a privilege the process no longer has).
    Renice(i32),
    /// Another identity: close the connection so the client retries on a
    /// new one.
    OtherIdentity,
}

/// The decision for a later request that wants (`uid`, `gid`) and
/// `nice` (None: the server's base value `base_nice`) on a connection that
/// runs as (`cur_uid`, `cur_gid`) at `cur_nice`.
pub fn later_request(
    (cur_uid, cur_gid, cur_nice): (u32, u32, i32),
    base_nice: i32,
    (uid, gid): (u32, u32),
    nice: Option<i32>,
) -> Later {
    if (uid, gid) != (cur_uid, cur_gid) {
        return Later::OtherIdentity;
    }
    let want = nice.unwrap_or(base_nice);
    if want == cur_nice {
        Later::Serve
    } else {
        Later::Renice(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn keys_are_stable_and_never_zero() {
        assert_eq!(vhost_key("a.test", 80), vhost_key("a.test", 80));
        assert_ne!(vhost_key("a.test", 80), vhost_key("a.test", 81));
        assert_ne!(vhost_key("a.test", 80), 0);
    }

    #[test]
    fn at_most_the_limit_is_admitted() {
        let t = table(4);
        let k = vhost_key("v", 80);
        let mut c = [None; 4];
        for (slot, c) in c.iter_mut().enumerate().take(2) {
            assert_eq!(admit(Some(&t), slot, k, Some(2), c), Admission::Admitted);
        }
        assert_eq!(
            admit(Some(&t), 2, k, Some(2), &mut c[2]),
            Admission::Full(2)
        );
        // the refused slot is not left marked
        assert_eq!(t[2].load(Ordering::SeqCst), 0);
        assert_eq!(c[2], None);
        // another vhost is not limited by it
        assert_eq!(
            admit(Some(&t), 3, vhost_key("w", 80), Some(1), &mut c[3]),
            Admission::Admitted
        );
        assert_eq!(c[0], Some((k, true)));
    }

    #[test]
    fn without_a_slot_nothing_is_counted() {
        let t = table(1);
        let mut c = None;
        assert_eq!(admit(Some(&t), 5, 7, Some(1), &mut c), Admission::Admitted);
    }

    #[test]
    fn after_the_switch_only_the_counted_vhost_or_unlimited_ones_pass() {
        let (a, b) = (vhost_key("a", 80), vhost_key("b", 80));
        // counted as a limited vhost
        let mut c = Some((a, true));
        assert_eq!(admit(None, 0, a, Some(3), &mut c), Admission::Admitted);
        assert_eq!(admit(None, 0, b, None, &mut c), Admission::Recount);
        assert_eq!(admit(None, 0, b, Some(3), &mut c), Admission::Recount);
        // counted as an unlimited vhost
        let mut c = Some((a, false));
        assert_eq!(admit(None, 0, b, None, &mut c), Admission::Admitted);
        assert_eq!(admit(None, 0, b, Some(3), &mut c), Admission::Recount);
    }

    #[test]
    fn later_requests() {
        let cur = (1500, 1500, 0);
        assert_eq!(later_request(cur, 0, (1500, 1500), None), Later::Serve);
        assert_eq!(later_request(cur, 0, (1500, 1500), Some(0)), Later::Serve);
        assert_eq!(
            later_request(cur, 0, (1500, 1500), Some(10)),
            Later::Renice(10)
        );
        assert_eq!(
            later_request((1500, 1500, 10), 0, (1500, 1500), None),
            Later::Renice(0)
        );
        assert_eq!(
            later_request(cur, 0, (1600, 1500), None),
            Later::OtherIdentity
        );
        assert_eq!(
            later_request(cur, 0, (1500, 1600), Some(0)),
            Later::OtherIdentity
        );
    }
}
