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

#[cfg(test)]
mod tests {
    use super::*;

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
