//! Which identity a request must run as: the static `AssignUserID` of its
//! per-directory configuration (or `User`/`Group`), overridden by
//! `AssignUserIDExpr` / `AssignGroupIDExpr` evaluated for the request, under
//! the rules for identities chosen per request ([`ExprPolicy`]). Pure logic:
//! the expressions are evaluated and the user database is read through
//! callbacks, so it is unit tested without httpd or real accounts.
#![forbid(unsafe_code)]

use crate::ids::{self, IdError, Identity};
use crate::ranges::ExprPolicy;
use std::borrow::Cow;

/// The user and group database.
pub trait UserDb {
    /// A user by name or `#uid`, with `gid` as primary group, and whether
    /// the database knows the uid.
    fn user(&self, name: &str, gid: u32) -> Result<(Identity, bool), IdError>;
    /// A group by name or `#gid`.
    fn group(&self, name: &str) -> Result<u32, IdError>;
    fn group_exists(&self, gid: u32) -> Result<bool, IdError>;
    /// `initgroups(user, gid)`'s groups (`[gid]` without a user name).
    fn groups(&self, user: Option<&str>, gid: u32) -> Result<Vec<u32>, IdError>;
}

/// The system's database (NSS).
pub struct SystemDb;

impl UserDb for SystemDb {
    fn user(&self, name: &str, gid: u32) -> Result<(Identity, bool), IdError> {
        ids::resolve_user_name(name, gid)
    }
    fn group(&self, name: &str) -> Result<u32, IdError> {
        ids::resolve_group(name)
    }
    fn group_exists(&self, gid: u32) -> Result<bool, IdError> {
        ids::group_exists(gid)
    }
    fn groups(&self, user: Option<&str>, gid: u32) -> Result<Vec<u32>, IdError> {
        ids::supplementary_groups(user, gid)
    }
}

/// Which expression to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expr {
    User,
    Group,
}

/// What a request's per-directory configuration says about its identity.
pub struct Directives<'a> {
    /// `AssignUserID`: None if unset; `Some(None)` if set but missing from
    /// the configuration (an internal error, never a fall-back).
    pub assigned: Option<Option<&'a Identity>>,
    pub user_expr: bool,
    pub group_expr: bool,
}

/// Why no identity could be determined.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    /// An expression failed or named nothing acceptable.
    Expr(String),
    /// Something that cannot be missing was missing.
    Internal(String),
}

/// The identity for a request.
/// Without an expression, the answer borrows the directive's identity or
/// `server` (every request of a connection asks again: no copy).
pub fn resolve<'a>(
    d: &Directives<'a>,
    server: &'a Identity,
    policy: &ExprPolicy,
    db: &dyn UserDb,
    mut eval: impl FnMut(Expr) -> Result<String, String>,
) -> Result<Cow<'a, Identity>, TargetError> {
    let mut id = match d.assigned {
        Some(Some(id)) => Cow::Borrowed(id),
        Some(None) => {
            return Err(TargetError::Internal(
                "internal error: the AssignUserID entry is missing from this configuration".into(),
            ));
        }
        None => Cow::Borrowed(server),
    };
    if d.user_expr {
        let name = eval(Expr::User)
            .map_err(|e| TargetError::Expr(format!("AssignUserIDExpr failed: {e}")))?;
        let (user, known) = db.user(&name, id.gid).map_err(|e| {
            TargetError::Expr(format!(
                "AssignUserIDExpr returned '{name}', which is not a valid user name ({e})"
            ))
        })?;
        policy
            .check_uid(user.uid, known)
            .map_err(|e| TargetError::Expr(format!("AssignUserIDExpr returned '{name}': {e}")))?;
        id = Cow::Owned(user);
    }
    if d.group_expr {
        let name = eval(Expr::Group)
            .map_err(|e| TargetError::Expr(format!("AssignGroupIDExpr failed: {e}")))?;
        let bad =
            |e: String| TargetError::Expr(format!("AssignGroupIDExpr returned '{name}': {e}"));
        let gid = db.group(&name).map_err(|e| {
            TargetError::Expr(format!(
                "AssignGroupIDExpr returned '{name}', which is not a valid group name ({e})"
            ))
        })?;
        let known = db.group_exists(gid).map_err(|e| bad(e.to_string()))?;
        policy.check_gid(gid, known).map_err(bad)?;
        // The user's groups with the new primary group; `User`'s own only if
        // the user was configured or chosen.
        let user = (id.uid != server.uid || d.assigned.is_some() || d.user_expr)
            .then_some(id.user.as_str());
        let groups = db.groups(user, gid).unwrap_or_else(|_| vec![gid]);
        let id = id.to_mut();
        id.groups = groups;
        id.gid = gid;
    }
    if d.user_expr || d.group_expr {
        // An identity chosen per request keeps no system group from the
        // group database (docker, adm, sudo...), unless LimitGIDRange says
        // otherwise; its primary group was checked above.
        let primary = id.gid;
        id.to_mut()
            .groups
            .retain(|g| *g == primary || policy.keeps_group(*g));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::IdRange;

    /// [`super::resolve`], owned: the tests compare whole identities.
    fn resolve(
        d: &Directives,
        server: &Identity,
        policy: &ExprPolicy,
        db: &dyn UserDb,
        eval: impl FnMut(Expr) -> Result<String, String>,
    ) -> Result<Identity, TargetError> {
        super::resolve(d, server, policy, db, eval).map(Cow::into_owned)
    }

    /// alice 1500 (groups 1500, sudo 27, staff 1600), daemon 1, no #4000;
    /// groups alice 1500, shadow 42, staff 1600.
    struct Db;

    impl UserDb for Db {
        fn user(&self, name: &str, gid: u32) -> Result<(Identity, bool), IdError> {
            let (user, uid, known) = match name {
                "alice" => ("alice", 1500, true),
                "daemon" => ("daemon", 1, true),
                "#4000" => ("#4000", 4000, false),
                _ => return Err(IdError::NoSuchUser(name.into())),
            };
            let groups = self.groups(known.then_some(user), gid)?;
            Ok((
                Identity {
                    user: user.into(),
                    uid,
                    gid,
                    groups,
                },
                known,
            ))
        }
        fn group(&self, name: &str) -> Result<u32, IdError> {
            match name {
                "alice" => Ok(1500),
                "shadow" => Ok(42),
                "staff" => Ok(1600),
                "#7000" => Ok(7000),
                _ => Err(IdError::NoSuchGroup(name.into())),
            }
        }
        fn group_exists(&self, gid: u32) -> Result<bool, IdError> {
            Ok([1500, 42, 1600, 33].contains(&gid))
        }
        fn groups(&self, user: Option<&str>, gid: u32) -> Result<Vec<u32>, IdError> {
            let mut g = match user {
                Some("alice") => vec![27, 1500, 1600],
                _ => vec![],
            };
            g.push(gid);
            g.sort_unstable();
            g.dedup();
            Ok(g)
        }
    }

    fn server() -> Identity {
        Identity {
            user: "www-data".into(),
            uid: 33,
            gid: 33,
            groups: vec![33],
        }
    }

    fn policy(explicit: bool) -> ExprPolicy {
        let r = IdRange { min: 1, max: 60000 };
        ExprPolicy {
            uid_min: 1000,
            gid_min: 1000,
            explicit_uids: explicit.then_some(r),
            explicit_gids: explicit.then_some(r),
            server_uid: 33,
            server_gid: 33,
        }
    }

    fn with(user: bool, group: bool) -> Directives<'static> {
        Directives {
            assigned: None,
            user_expr: user,
            group_expr: group,
        }
    }

    fn eval<'a>(u: &'a str, g: &'a str) -> impl FnMut(Expr) -> Result<String, String> + 'a {
        move |e| {
            Ok(match e {
                Expr::User => u.to_string(),
                Expr::Group => g.to_string(),
            })
        }
    }

    #[test]
    fn without_directives_the_server_identity() {
        let id = resolve(
            &with(false, false),
            &server(),
            &policy(false),
            &Db,
            eval("", ""),
        )
        .unwrap();
        assert_eq!(id, server());
    }

    #[test]
    fn a_static_identity_and_a_missing_one() {
        let alice = Identity {
            user: "alice".into(),
            uid: 1500,
            gid: 1500,
            groups: vec![27, 1500],
        };
        let d = Directives {
            assigned: Some(Some(&alice)),
            user_expr: false,
            group_expr: false,
        };
        // static AssignUserID keeps its groups, system ones included
        assert_eq!(
            resolve(&d, &server(), &policy(false), &Db, eval("", "")).unwrap(),
            alice
        );
        let d = Directives {
            assigned: Some(None),
            user_expr: false,
            group_expr: false,
        };
        assert!(matches!(
            resolve(&d, &server(), &policy(false), &Db, eval("", "")),
            Err(TargetError::Internal(_))
        ));
    }

    #[test]
    fn an_expression_user_keeps_no_system_group() {
        let id = resolve(
            &with(true, false),
            &server(),
            &policy(false),
            &Db,
            eval("alice", ""),
        )
        .unwrap();
        assert_eq!((id.uid, id.gid), (1500, 33));
        assert_eq!(id.groups, vec![33, 1500, 1600]);
        // with an explicit range it keeps them
        let id = resolve(
            &with(true, false),
            &server(),
            &policy(true),
            &Db,
            eval("alice", ""),
        )
        .unwrap();
        assert_eq!(id.groups, vec![27, 33, 1500, 1600]);
    }

    #[test]
    fn expressions_cannot_pick_system_or_unknown_ids() {
        for (u, g, needle) in [
            ("daemon", "", "uid 1 is a system user account"),
            ("#4000", "", "uid 4000 has no user account"),
            ("nobody-here", "", "not a valid user name"),
        ] {
            let e = resolve(
                &with(true, false),
                &server(),
                &policy(false),
                &Db,
                eval(u, g),
            )
            .unwrap_err();
            assert!(
                matches!(&e, TargetError::Expr(m) if m.contains(needle)),
                "{u}: {e:?}"
            );
        }
        for (g, needle) in [
            ("shadow", "gid 42 is a system group"),
            ("#7000", "gid 7000 has no group"),
            ("nothing", "not a valid group name"),
        ] {
            let e = resolve(
                &with(false, true),
                &server(),
                &policy(false),
                &Db,
                eval("", g),
            )
            .unwrap_err();
            assert!(
                matches!(&e, TargetError::Expr(m) if m.contains(needle)),
                "{g}: {e:?}"
            );
        }
        // admitted with explicit ranges
        let id = resolve(
            &with(true, true),
            &server(),
            &policy(true),
            &Db,
            eval("daemon", "shadow"),
        )
        .unwrap();
        assert_eq!((id.uid, id.gid), (1, 42));
    }

    #[test]
    fn a_failing_expression_is_an_expression_error() {
        let e = resolve(&with(true, false), &server(), &policy(false), &Db, |_| {
            Err("boom".into())
        })
        .unwrap_err();
        assert_eq!(e, TargetError::Expr("AssignUserIDExpr failed: boom".into()));
    }

    #[test]
    fn a_group_expression_keeps_the_chosen_users_groups() {
        let id = resolve(
            &with(true, true),
            &server(),
            &policy(false),
            &Db,
            eval("alice", "staff"),
        )
        .unwrap();
        assert_eq!((id.uid, id.gid), (1500, 1600));
        assert_eq!(id.groups, vec![1500, 1600]);
        // the server's own user gets just the group
        let id = resolve(
            &with(false, true),
            &server(),
            &policy(false),
            &Db,
            eval("", "staff"),
        )
        .unwrap();
        assert_eq!((id.uid, id.gid, id.groups.clone()), (33, 1600, vec![1600]));
    }
}
