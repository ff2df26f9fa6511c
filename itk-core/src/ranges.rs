//! `LimitUIDRange` / `LimitGIDRange` and the values a vhost may switch to.
#![forbid(unsafe_code)]

use std::fmt;

/// An inclusive id range that never contains 0 (root) or u32::MAX (the
/// "-1 = no change" marker of the set*id calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub min: u32,
    pub max: u32,
}

/// The default: everything but root and -1.
pub const DEFAULT_RANGE: IdRange = IdRange {
    min: 1,
    max: u32::MAX - 1,
};

#[derive(Debug, PartialEq, Eq)]
pub enum RangeError {
    NotANumber(String),
    MinAboveMax(u32, u32),
    IncludesRoot,
    TooLarge(u32),
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::NotANumber(s) => write!(f, "'{s}' is not a number"),
            RangeError::MinAboveMax(a, b) => write!(f, "minimum {a} is greater than maximum {b}"),
            RangeError::IncludesRoot => write!(
                f,
                "the range must not include 0: uid/gid 0 (root) can never be reached after the switch"
            ),
            RangeError::TooLarge(v) => write!(f, "{v} is too large (at most {})", u32::MAX - 1),
        }
    }
}

fn parse_id(s: &str) -> Result<u32, RangeError> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| RangeError::NotANumber(s.to_string()))?;
    if v >= u32::MAX as u64 {
        return Err(RangeError::TooLarge(v.min(u32::MAX as u64) as u32));
    }
    Ok(v as u32)
}

impl IdRange {
    /// Parses the two arguments of `LimitUIDRange`/`LimitGIDRange`.
    pub fn parse(min: &str, max: &str) -> Result<IdRange, RangeError> {
        let (min, max) = (parse_id(min)?, parse_id(max)?);
        if min > max {
            return Err(RangeError::MinAboveMax(min, max));
        }
        if min == 0 {
            return Err(RangeError::IncludesRoot);
        }
        Ok(IdRange { min, max })
    }

    pub fn contains(&self, id: u32) -> bool {
        id != 0 && self.min <= id && id <= self.max
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// What the process may switch to: the ranges plus the configured
/// `User`/`Group` (vhosts without AssignUserID run as them), never 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    pub uids: IdRange,
    pub gids: IdRange,
    pub server_uid: u32,
    pub server_gid: u32,
}

impl Allowed {
    pub fn uid_ok(&self, uid: u32) -> bool {
        uid != 0 && uid != u32::MAX && (self.uids.contains(uid) || uid == self.server_uid)
    }
    pub fn gid_ok(&self, gid: u32) -> bool {
        gid != 0 && gid != u32::MAX && (self.gids.contains(gid) || gid == self.server_gid)
    }
}

/// `UID_MIN` / `GID_MIN` of `/etc/login.defs` when it does not say (the
/// shadow-utils default).
pub const DEFAULT_ID_MIN: u32 = 1000;

/// The value of `key` (e.g. `UID_MIN`) in the text of `/etc/login.defs`.
pub fn login_defs_value(text: &str, key: &str) -> Option<u32> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == key).then(|| w.next()?.parse().ok())?
        })
        .next_back()
}

/// Which identities a request may choose through AssignUserIDExpr /
/// AssignGroupIDExpr (often from client input): never a system account or
/// group (below UID_MIN / GID_MIN) and never a `#uid`/`#gid` without an
/// entry in the user or group database, unless LimitUIDRange /
/// LimitGIDRange is given: then that range alone decides. The configured `User`/`Group` stay allowed
/// (vhosts without AssignUserID run as them anyway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprPolicy {
    pub uid_min: u32,
    pub gid_min: u32,
    /// LimitUIDRange / LimitGIDRange, if the configuration sets them.
    pub explicit_uids: Option<IdRange>,
    pub explicit_gids: Option<IdRange>,
    pub server_uid: u32,
    pub server_gid: u32,
}

impl ExprPolicy {
    /// May a request choose uid `uid`? `has_account`: the user database
    /// knows it.
    pub fn check_uid(&self, uid: u32, has_account: bool) -> Result<(), String> {
        Self::check(
            "uid",
            "user account",
            "UID_MIN",
            "LimitUIDRange",
            uid,
            has_account,
            self.uid_min,
            self.explicit_uids,
            self.server_uid,
        )
    }

    /// May a request choose gid `gid`? `has_group`: the group database
    /// knows it.
    pub fn check_gid(&self, gid: u32, has_group: bool) -> Result<(), String> {
        Self::check(
            "gid",
            "group",
            "GID_MIN",
            "LimitGIDRange",
            gid,
            has_group,
            self.gid_min,
            self.explicit_gids,
            self.server_gid,
        )
    }

    /// May a request's identity chosen per request keep supplementary group
    /// `gid` (of the user's entries in the group database)? Not a system
    /// group (`docker`, `adm`, `sudo`...) unless LimitGIDRange is set.
    pub fn keeps_group(&self, gid: u32) -> bool {
        gid == self.server_gid || self.explicit_gids.is_some() || gid >= self.gid_min
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        what: &str,
        entry: &str,
        min_key: &str,
        directive: &str,
        id: u32,
        known: bool,
        min: u32,
        explicit: Option<IdRange>,
        server: u32,
    ) -> Result<(), String> {
        // An explicit range decides alone (the switch refuses what lies
        // outside it, with a message naming the range), and the switch
        // refuses root whatever the configuration.
        if id == server || id == 0 || explicit.is_some() {
            return Ok(());
        }
        if !known {
            return Err(format!(
                "{what} {id} has no {entry}; an identity chosen per request must exist, \
                 unless {directive} admits it"
            ));
        }
        if id < min {
            return Err(format!(
                "{what} {id} is a system {entry} (below {min_key} {min} of /etc/login.defs); \
                 an identity chosen per request cannot be one unless {directive} admits it"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_defs_values() {
        let text = "# comment UID_MIN 5\nUID_MIN\t\t\t 1000\nUID_MAX 60000\n#GID_MIN 7\nGID_MIN 2000 # local\n";
        assert_eq!(login_defs_value(text, "UID_MIN"), Some(1000));
        assert_eq!(login_defs_value(text, "GID_MIN"), Some(2000));
        assert_eq!(login_defs_value(text, "SYS_UID_MIN"), None);
        assert_eq!(login_defs_value("UID_MIN abc\n", "UID_MIN"), None);
    }

    fn policy(explicit: Option<IdRange>) -> ExprPolicy {
        ExprPolicy {
            uid_min: 1000,
            gid_min: 1000,
            explicit_uids: explicit,
            explicit_gids: explicit,
            server_uid: 33,
            server_gid: 33,
        }
    }

    #[test]
    fn expressions_cannot_pick_system_or_unknown_ids_by_default() {
        let p = policy(None);
        assert!(
            p.check_uid(1, true)
                .unwrap_err()
                .contains("system user account")
        );
        assert!(
            p.check_gid(42, true)
                .unwrap_err()
                .contains("below GID_MIN 1000")
        );
        assert!(
            p.check_uid(4000, false)
                .unwrap_err()
                .contains("has no user account")
        );
        assert!(p.check_uid(1500, true).is_ok());
        assert!(p.check_gid(1500, true).is_ok());
        // the server's own User/Group
        assert!(p.check_uid(33, true).is_ok());
        assert!(p.check_gid(33, true).is_ok());
    }

    #[test]
    fn supplementary_system_groups_are_left_out_by_default() {
        let p = policy(None);
        assert!(!p.keeps_group(27)); // sudo
        assert!(!p.keeps_group(4)); // adm
        assert!(p.keeps_group(33)); // the server's Group
        assert!(p.keeps_group(1500));
        assert!(policy(Some(IdRange { min: 1, max: 5000 })).keeps_group(27));
    }

    #[test]
    fn an_explicit_range_admits_them() {
        let p = policy(Some(IdRange { min: 1, max: 5000 }));
        assert!(p.check_uid(1, true).is_ok());
        assert!(p.check_gid(42, true).is_ok());
        assert!(p.check_uid(4000, false).is_ok());
    }

    #[test]
    fn parse_and_reject() {
        assert_eq!(
            IdRange::parse("1000", "2000"),
            Ok(IdRange {
                min: 1000,
                max: 2000
            })
        );
        assert_eq!(
            IdRange::parse("2000", "1000"),
            Err(RangeError::MinAboveMax(2000, 1000))
        );
        assert_eq!(IdRange::parse("0", "10"), Err(RangeError::IncludesRoot));
        assert!(matches!(
            IdRange::parse("abc", "10"),
            Err(RangeError::NotANumber(_))
        ));
        assert!(matches!(
            IdRange::parse("1", "4294967295"),
            Err(RangeError::TooLarge(_))
        ));
    }

    #[test]
    fn allowed_adds_server_identity_but_never_root() {
        let a = Allowed {
            uids: IdRange {
                min: 3000,
                max: 4000,
            },
            gids: IdRange {
                min: 3000,
                max: 4000,
            },
            server_uid: 33,
            server_gid: 33,
        };
        assert!(a.uid_ok(3500));
        assert!(a.uid_ok(33));
        assert!(!a.uid_ok(2500));
        assert!(!a.uid_ok(0));
        assert!(!a.uid_ok(u32::MAX));
        assert!(a.gid_ok(33));
        assert!(!a.gid_ok(0));
    }
}
