//! Resolving users and groups to numeric identities, once at configuration
//! time for `AssignUserID` (so a connection never walks the name service),
//! or per connection for the expressions.
#![forbid(unsafe_code)]

use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::fmt;

/// Who a vhost runs as: uid, primary gid and the supplementary groups that
/// `initgroups(name, gid)` would give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum IdError {
    NoSuchUser(String),
    NoSuchGroup(String),
    Lookup(String),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::NoSuchUser(u) => write!(f, "no such user '{u}'"),
            IdError::NoSuchGroup(g) => write!(f, "no such group '{g}'"),
            IdError::Lookup(e) => write!(f, "user database lookup failed: {e}"),
        }
    }
}

fn numeric(spec: &str) -> Option<Result<u32, IdError>> {
    let n = spec.strip_prefix('#')?;
    Some(
        n.parse::<u32>()
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| IdError::Lookup(format!("'{spec}' is not a valid numeric id"))),
    )
}

/// Resolves a user given by name or as `#uid`. Returns (uid, name if known,
/// primary gid if known).
pub fn resolve_user(spec: &str) -> Result<(u32, Option<String>, Option<u32>), IdError> {
    if let Some(n) = numeric(spec) {
        let uid = n?;
        let u = User::from_uid(Uid::from_raw(uid)).map_err(|e| IdError::Lookup(e.to_string()))?;
        return Ok((
            uid,
            u.as_ref().map(|u| u.name.clone()),
            u.map(|u| u.gid.as_raw()),
        ));
    }
    match User::from_name(spec) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.name), Some(u.gid.as_raw()))),
        Ok(None) => Err(IdError::NoSuchUser(spec.to_string())),
        Err(e) => Err(IdError::Lookup(e.to_string())),
    }
}

/// Resolves a group given by name or as `#gid`.
pub fn resolve_group(spec: &str) -> Result<u32, IdError> {
    if let Some(n) = numeric(spec) {
        return n;
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(IdError::NoSuchGroup(spec.to_string())),
        Err(e) => Err(IdError::Lookup(e.to_string())),
    }
}

/// The supplementary groups `initgroups(user, gid)` would set: the user's
/// groups from the group database plus `gid`. A user with no name (numeric
/// uid without a passwd entry) gets just `gid`.
pub fn supplementary_groups(user: Option<&str>, gid: u32) -> Result<Vec<u32>, IdError> {
    let Some(name) = user else {
        return Ok(vec![gid]);
    };
    let c = CString::new(name).map_err(|e| IdError::Lookup(e.to_string()))?;
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&c, Gid::from_raw(gid))
        .map_err(|e| IdError::Lookup(e.to_string()))?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

/// `AssignUserID user group` resolved completely.
pub fn resolve_identity(user: &str, group: &str) -> Result<Identity, IdError> {
    let (uid, name, _) = resolve_user(user)?;
    let gid = resolve_group(group)?;
    let groups = supplementary_groups(name.as_deref(), gid)?;
    Ok(Identity {
        user: name.unwrap_or_else(|| user.to_string()),
        uid,
        gid,
        groups,
    })
}

/// A user name produced by `AssignUserIDExpr`: uid and the user's groups
/// with `gid` as the primary group, and whether the user database knows the
/// uid (a `#uid` may have no account).
pub fn resolve_user_name(name: &str, gid: u32) -> Result<(Identity, bool), IdError> {
    let (uid, real, _) = resolve_user(name)?;
    let known = real.is_some();
    let groups = supplementary_groups(real.as_deref(), gid)?;
    Ok((
        Identity {
            user: real.unwrap_or_else(|| name.to_string()),
            uid,
            gid,
            groups,
        },
        known,
    ))
}

/// Does the group database know `gid`?
pub fn group_exists(gid: u32) -> Result<bool, IdError> {
    Group::from_gid(Gid::from_raw(gid))
        .map(|g| g.is_some())
        .map_err(|e| IdError::Lookup(e.to_string()))
}

/// Is `uid` mapped in this user namespace (`/proc/self/uid_map`'s text:
/// "inside outside count" lines)?
pub fn uid_mapped(uid_map: &str, uid: u32) -> bool {
    uid_map.lines().any(|l| {
        let v: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        v.len() == 3 && v[0] <= uid as u64 && (uid as u64) < v[0] + v[2]
    })
}

/// The real uid for the workers: the first of 65533 down to 65000 (a range
/// no distribution allocates) that no account has, that `taken` does not
/// name (User, the uids of the vhosts, an explicit LimitUIDRange) and that
/// this user namespace maps. None if there is none.
pub fn free_worker_uid(uid_map: &str, taken: impl Fn(u32) -> bool) -> Option<u32> {
    (65000..=65533).rev().find(|u| {
        !taken(*u)
            && uid_mapped(uid_map, *u)
            && User::from_uid(Uid::from_raw(*u)).ok().flatten().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_number() {
        assert_eq!(resolve_user("root").unwrap().0, 0);
        assert_eq!(resolve_user("#0").unwrap().1.as_deref(), Some("root"));
        assert_eq!(resolve_group("#12345").unwrap(), 12345);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve_user("no-such-user-itk"),
            Err(IdError::NoSuchUser("no-such-user-itk".into()))
        );
        assert_eq!(
            resolve_group("no-such-group-itk"),
            Err(IdError::NoSuchGroup("no-such-group-itk".into()))
        );
        assert!(resolve_user("#abc").is_err());
    }

    #[test]
    fn worker_uid_is_free_and_mapped() {
        let full = "         0          0 4294967295\n";
        assert!(uid_mapped(full, 65533));
        let rootless = "0 1000 1\n1 100000 65536\n";
        assert!(uid_mapped(rootless, 65533));
        assert!(!uid_mapped("0 1000 1\n1 100000 1000\n", 65533));
        let u = free_worker_uid(full, |u| u == 65533).unwrap();
        assert!((65000..65533).contains(&u));
        assert_eq!(free_worker_uid("0 0 1\n", |_| false), None);
    }

    #[test]
    fn groups_include_primary() {
        let g = supplementary_groups(Some("root"), 0).unwrap();
        assert!(g.contains(&0));
        assert_eq!(supplementary_groups(None, 77).unwrap(), vec![77]);
    }
}
