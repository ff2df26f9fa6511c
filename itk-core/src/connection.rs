//! The identity state machine of a connection child (SPEC §3.3): what it
//! does with each request, given what it has done so far.
//!
//! ```text
//!            first request, identity resolved ──> Switch ──> Switched
//!   Fresh ── first request, no identity ───────> Refuse ──> Failed
//!            (a panic in the switch) ──────────────────────> Failed
//!
//!            same uid/gid, same nice ──> Serve
//!   Switched same uid/gid, other nice ──> Renice ──> Switched (or Close)
//!            other uid/gid ──────────────> Close(OtherIdentity)
//!            no identity ────────────────> Close(TargetError)
//!
//!   Failed ── any request ──> Close(EarlierFailure)   (never switches again)
//! ```
//!
//! "Close" means: no answer, the connection is closed so the client retries
//! on a new one (served by a fresh child); "Refuse" means: 500, and the
//! connection is closed after it.
#![forbid(unsafe_code)]

use crate::limits::{self, Later};

/// What a connection child has done about identity so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No request has asked for an identity yet (the process is the
    /// worker's copy: it can still switch).
    Fresh,
    /// Switched for good to `uid`/`gid`.
    Switched {
        uid: u32,
        gid: u32,
        /// The nice value the process runs at now.
        nice: i32,
        /// The nice value before the switch: what a request without
        /// NiceValue runs at.
        base_nice: i32,
    },
    /// A request could not get its identity, or the switch failed half-way:
    /// later requests close the connection; the switch is never retried.
    Failed,
}

/// A resolved identity's ids.
pub trait Ids {
    fn ids(&self) -> (u32, u32);
}

impl Ids for crate::ids::Identity {
    fn ids(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }
}

impl Ids for std::borrow::Cow<'_, crate::ids::Identity> {
    fn ids(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }
}

/// Why a request closes the connection without an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum CloseWhy<T, E> {
    /// An earlier request on this connection failed to get its identity.
    EarlierFailure,
    /// The request wants `wanted`, the process runs as `running` (uid, gid).
    OtherIdentity { running: (u32, u32), wanted: T },
    /// The request's identity could not be resolved (the process already
    /// runs as a vhost's user; it cannot even answer with a 500 of another).
    TargetError(E),
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<T, E> {
    /// Become `T` (then [`State::switched`], or on failure
    /// [`Decision::Refuse`]'s handling).
    Switch(T),
    /// Serve the request as the process runs.
    Serve,
    /// Set this nice value, then serve ([`State::reniced`]); close if that
    /// fails.
    Renice(i32),
    Close(CloseWhy<T, E>),
    /// Answer 500, close the connection after it, become [`State::Failed`].
    Refuse(E),
}

impl State {
    /// The decision for a request that wants `nice` (None: the server's
    /// value) and whose identity `target` resolves. `target` is not called
    /// when the decision does not depend on it (an earlier failure):
    /// expressions are not evaluated for a request that is not served.
    pub fn decide<T: Ids, E>(
        self,
        nice: Option<i32>,
        target: impl FnOnce() -> Result<T, E>,
    ) -> Decision<T, E> {
        match self {
            State::Failed => Decision::Close(CloseWhy::EarlierFailure),
            State::Fresh => match target() {
                Ok(t) => Decision::Switch(t),
                Err(e) => Decision::Refuse(e),
            },
            State::Switched {
                uid,
                gid,
                nice: cur,
                base_nice,
            } => match target() {
                Err(e) => Decision::Close(CloseWhy::TargetError(e)),
                Ok(t) => match limits::later_request((uid, gid, cur), base_nice, t.ids(), nice) {
                    Later::Serve => Decision::Serve,
                    Later::Renice(n) => Decision::Renice(n),
                    Later::OtherIdentity => Decision::Close(CloseWhy::OtherIdentity {
                        running: (uid, gid),
                        wanted: t,
                    }),
                },
            },
        }
    }

    /// After a successful switch to `uid`/`gid` with `nice` (None: the
    /// process keeps `base_nice`).
    pub fn switched(uid: u32, gid: u32, nice: Option<i32>, base_nice: i32) -> State {
        State::Switched {
            uid,
            gid,
            nice: nice.unwrap_or(base_nice),
            base_nice,
        }
    }

    /// After a successful renice to `nice`.
    pub fn reniced(self, nice: i32) -> State {
        match self {
            State::Switched {
                uid,
                gid,
                base_nice,
                ..
            } => State::Switched {
                uid,
                gid,
                nice,
                base_nice,
            },
            other => other,
        }
    }

    pub fn is_switched(self) -> bool {
        matches!(self, State::Switched { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Id(u32, u32);
    impl Ids for Id {
        fn ids(&self) -> (u32, u32) {
            (self.0, self.1)
        }
    }

    fn ok(uid: u32, gid: u32) -> impl FnOnce() -> Result<Id, String> {
        move || Ok(Id(uid, gid))
    }

    fn err() -> impl FnOnce() -> Result<Id, String> {
        || Err("no such user".to_string())
    }

    const A: State = State::Switched {
        uid: 1001,
        gid: 1001,
        nice: 0,
        base_nice: 0,
    };

    #[test]
    fn the_first_request_switches() {
        assert_eq!(
            State::Fresh.decide(None, ok(1001, 1001)),
            Decision::Switch(Id(1001, 1001))
        );
        assert_eq!(State::switched(1001, 1001, None, 0), A);
        assert_eq!(
            State::switched(1001, 1001, Some(5), 0),
            State::Switched {
                uid: 1001,
                gid: 1001,
                nice: 5,
                base_nice: 0
            }
        );
    }

    #[test]
    fn a_first_request_without_identity_is_refused() {
        assert_eq!(
            State::Fresh.decide(None, err()),
            Decision::Refuse("no such user".to_string())
        );
    }

    #[test]
    fn keep_alive_on_the_same_identity_is_served() {
        assert_eq!(A.decide(None, ok(1001, 1001)), Decision::Serve);
        assert_eq!(A.decide(Some(0), ok(1001, 1001)), Decision::Serve);
    }

    #[test]
    fn another_identity_closes() {
        for (uid, gid) in [(1002, 1001), (1001, 1002), (1002, 1002)] {
            assert_eq!(
                A.decide(None, ok(uid, gid)),
                Decision::Close(CloseWhy::OtherIdentity {
                    running: (1001, 1001),
                    wanted: Id(uid, gid)
                })
            );
        }
    }

    #[test]
    fn a_later_request_without_identity_closes() {
        assert_eq!(
            A.decide(None, err()),
            Decision::Close(CloseWhy::TargetError("no such user".to_string()))
        );
    }

    #[test]
    fn another_nice_value_renices_both_ways() {
        assert_eq!(A.decide(Some(10), ok(1001, 1001)), Decision::Renice(10));
        let b = A.reniced(10);
        assert_eq!(
            b,
            State::Switched {
                uid: 1001,
                gid: 1001,
                nice: 10,
                base_nice: 0
            }
        );
        // back to the base value for a request without NiceValue
        assert_eq!(b.decide(None, ok(1001, 1001)), Decision::Renice(0));
        assert_eq!(b.decide(Some(10), ok(1001, 1001)), Decision::Serve);
    }

    #[test]
    fn after_a_failure_nothing_is_served_and_nothing_evaluated() {
        let d = State::Failed.decide(None, || -> Result<Id, String> {
            panic!("the target must not be resolved after a failure")
        });
        assert_eq!(d, Decision::Close(CloseWhy::EarlierFailure));
        assert_eq!(State::Failed.reniced(3), State::Failed);
        assert!(!State::Failed.is_switched());
        assert!(A.is_switched());
        assert!(!State::Fresh.is_switched());
    }
}
