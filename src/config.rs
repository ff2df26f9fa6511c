//! Directive values and the per-directory / per-server configuration, as
//! plain Rust data. The FFI layer checks the directive's context and stores
//! these `Copy` structs in httpd's pools; everything here is pure logic.
#![forbid(unsafe_code)]

use crate::ffi::Expr;
use mpm_itk_core::ids::{self, Identity};
use mpm_itk_core::ranges::{DEFAULT_RANGE, IdRange};
use std::sync::{Mutex, MutexGuard};

/// prefork's tuning directives (DEFAULT_* from prefork's mpm_default.h).
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub daemons_to_start: i32,
    pub min_spare: i32,
    pub max_spare: i32,
    /// MaxRequestWorkers.
    pub daemons_limit: i32,
    pub server_limit: i32,
}

pub const DEFAULT_SERVER_LIMIT: i32 = 256;
pub const MAX_SERVER_LIMIT: i32 = 200_000;

impl Tuning {
    pub const fn defaults() -> Tuning {
        Tuning {
            daemons_to_start: 5,
            min_spare: 5,
            max_spare: 10,
            daemons_limit: DEFAULT_SERVER_LIMIT,
            server_limit: DEFAULT_SERVER_LIMIT,
        }
    }
}

/// The global ITK directives.
#[derive(Clone, Copy, Debug)]
pub struct Globals {
    pub uid_range: IdRange,
    pub gid_range: IdRange,
    /// Whether LimitUIDRange / LimitGIDRange were given (then they also
    /// admit system ids chosen by the expressions).
    pub uid_range_explicit: bool,
    pub gid_range_explicit: bool,
    pub enable_caps: bool,
    pub no_new_privs: bool,
}

impl Globals {
    pub const fn defaults() -> Globals {
        Globals {
            uid_range: DEFAULT_RANGE,
            gid_range: DEFAULT_RANGE,
            uid_range_explicit: false,
            gid_range_explicit: false,
            enable_caps: true,
            no_new_privs: false,
        }
    }
}

/// One configuration pass's state. The DSO is unloaded and re-loaded on
/// every restart, so this starts fresh each time; pre_config resets it too.
pub struct State {
    pub tuning: Tuning,
    pub globals: Globals,
    /// Every `AssignUserID` of the configuration, resolved once, with where
    /// it was written (for check_config's messages).
    pub identities: Vec<(Identity, String)>,
    /// Every `NiceValue` (clamped) with where it was written.
    pub nice_values: Vec<(i32, String)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    tuning: Tuning::defaults(),
    globals: Globals::defaults(),
    identities: Vec::new(),
    nice_values: Vec::new(),
});

/// The configuration state (single-threaded process: never contended).
pub fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn reset() {
    let mut s = state();
    s.tuning = Tuning::defaults();
    s.globals = Globals::defaults();
    s.identities.clear();
    s.nice_values.clear();
}

/// Per-directory configuration (AssignUserID, the expressions, NiceValue).
/// Unset fields inherit from the enclosing scope: the innermost wins.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirConf {
    /// Index into [`State::identities`].
    pub identity: Option<usize>,
    pub nice: Option<i32>,
    pub uid_expr: Option<Expr>,
    pub gid_expr: Option<Expr>,
}

impl DirConf {
    pub fn merge(parent: &DirConf, child: &DirConf) -> DirConf {
        DirConf {
            identity: child.identity.or(parent.identity),
            nice: child.nice.or(parent.nice),
            uid_expr: child.uid_expr.or(parent.uid_expr),
            gid_expr: child.gid_expr.or(parent.gid_expr),
        }
    }
}

/// Per-server configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerConf {
    pub max_clients_vhost: Option<u32>,
}

/// A whole-number directive argument (prefork's atoi, but refusing junk).
pub fn parse_int(directive: &str, arg: &str) -> Result<i32, String> {
    arg.trim()
        .parse::<i32>()
        .map_err(|_| format!("{directive}: '{arg}' is not a whole number"))
}

/// `AssignUserID user group`: resolved now, once; unknown names and root are
/// configuration errors.
pub fn assign_user_id(user: &str, group: &str, location: String) -> Result<usize, String> {
    let id = ids::resolve_identity(user, group).map_err(|e| format!("AssignUserID: {e}"))?;
    if id.uid == 0 {
        return Err(format!(
            "AssignUserID: refusing '{user}': a vhost can never run as root (uid 0)"
        ));
    }
    if id.gid == 0 {
        return Err(format!(
            "AssignUserID: refusing group '{group}': a vhost can never run as gid 0"
        ));
    }
    let mut s = state();
    s.identities.push((id, location));
    Ok(s.identities.len() - 1)
}

/// `NiceValue n`, clamped to -20..19 with a startup warning (returned).
pub fn nice_value(arg: &str) -> Result<(i32, Option<String>), String> {
    let n = parse_int("NiceValue", arg)?;
    Ok(if n < -20 {
        (
            -20,
            Some(format!(
                "WARNING: NiceValue of {n} is below -20, increasing NiceValue to -20."
            )),
        )
    } else if n > 19 {
        (
            19,
            Some(format!(
                "WARNING: NiceValue of {n} is above 19, lowering NiceValue to 19."
            )),
        )
    } else {
        (n, None)
    })
}

/// `MaxClientsVHost n`.
pub fn max_clients_vhost(arg: &str) -> Result<u32, String> {
    let n = parse_int("MaxClientsVHost", arg)?;
    if n < 1 {
        return Err(format!("MaxClientsVHost: {n} must be at least 1"));
    }
    Ok(n as u32)
}

/// `LimitUIDRange` / `LimitGIDRange`.
pub fn id_range(directive: &str, min: &str, max: &str) -> Result<IdRange, String> {
    IdRange::parse(min, max).map_err(|e| format!("{directive}: {e}"))
}

/// `On`/`Off` for flag directives given as TAKE1 (httpd's FLAG type already
/// refuses anything else with its own message).
pub fn flag(directive: &str, arg: &str) -> Result<bool, String> {
    match arg.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{directive} must be On or Off")),
    }
}
