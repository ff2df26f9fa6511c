//! The configuration: the directives' handlers (what each one stores,
//! after `mpm_itk_core::directives` parsed and validated it), the global
//! state of one configuration pass, and the typed per-directory /
//! per-server records httpd keeps in its pools for this module.
//!
//! Safe code, but for the one promise that ties [`CONFIG`] to the module
//! record.
#![deny(unsafe_code)]

use crate::httpd::module::{Cmd, Forbid, MergeDir, PerModule, config_warning};
use crate::httpd::{Expr, Request, Server};
use mpm_itk_core::directives::{self, MAX_CLIENTS_DEPRECATED};
use mpm_itk_core::ids::{self, Identity};
use mpm_itk_core::ranges::{DEFAULT_RANGE, IdRange};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// `UserPoolMaxProcesses`: processes per user pool.
    pub pool_max_processes: i32,
    /// `UserPoolIdleTimeout`: seconds an idle pool process waits before it
    /// exits.
    pub pool_idle_timeout: i32,
    /// An identity or NiceValue directive in a section of the main server
    /// (which every vhost inherits).
    pub identity_in_main_section: bool,
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
            pool_max_processes: 8,
            pool_idle_timeout: 60,
            identity_in_main_section: false,
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
    /// (shared: a request's identity check borrows one without a copy)
    pub identities: Vec<(Arc<Identity>, String)>,
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

impl MergeDir for DirConf {
    fn merge(parent: &DirConf, child: &DirConf) -> DirConf {
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
    /// `UserPools` as written in this server (None: the main server's).
    pub user_pools: Option<bool>,
    /// An identity or NiceValue directive in a section of this vhost.
    pub identity_in_section: bool,
}

/// This module's configuration records in httpd's pools.
// SAFETY: crate::module's record names exactly this value's create_dir,
// merge_dir and create_server, and registers itself as this module.
#[allow(unsafe_code)]
pub static CONFIG: PerModule<DirConf, ServerConf> = unsafe { PerModule::new() };

/// This server's (vhost's) configuration.
pub fn server_conf(s: Server) -> ServerConf {
    CONFIG.server(s)
}

/// The merged per-dir configuration of a request; None if it is missing
/// (never treated as the default: the caller fails the request).
pub fn request_dir_conf(r: Request) -> Option<DirConf> {
    CONFIG.request_dir(r)
}

// ---------------------------------------------------------------------------
// Directive handlers (httpd has checked the argument count)
// ---------------------------------------------------------------------------

/// StartServers, MinSpareServers, MaxSpareServers, MaxRequestWorkers
/// (MaxClients), ServerLimit.
pub fn set_tuning(c: &mut Cmd, arg: &str) -> Result<(), String> {
    c.check(Forbid::NotGlobal)?;
    let name = c.name();
    let which = directives::Tuning::from_name(&name)
        .ok_or_else(|| format!("{name}: unknown tuning directive"))?;
    let v = directives::parse_int(&name, arg)?;
    let mut st = state();
    let t = &mut st.tuning;
    match which {
        directives::Tuning::StartServers => t.daemons_to_start = v,
        directives::Tuning::MinSpareServers => t.min_spare = v,
        directives::Tuning::MaxSpareServers => t.max_spare = v,
        directives::Tuning::MaxRequestWorkers { deprecated_name } => {
            if deprecated_name {
                crate::httpd::log_startup(crate::httpd::Level::Info, MAX_CLIENTS_DEPRECATED);
            }
            t.daemons_limit = v
        }
        directives::Tuning::ServerLimit => t.server_limit = v,
    }
    Ok(())
}

/// Notes an identity or NiceValue directive written inside a section: the
/// vhosts it can apply to may change identity by request (UserPools leaves
/// them to the classic path).
fn note_section(c: &Cmd) {
    if !c.in_section() {
        return;
    }
    let s = c.server();
    if s.is_virtual() {
        CONFIG.update_server(s, |conf| conf.identity_in_section = true);
    } else {
        state().globals.identity_in_main_section = true;
    }
}

/// `AssignUserID user group`: resolved now, once; unknown names and root are
/// configuration errors.
pub fn assign_user_id(c: &mut Cmd, user: &str, group: &str) -> Result<(), String> {
    c.check(Forbid::Htaccess)?;
    note_section(c);
    let id = ids::resolve_identity(user, group).map_err(|e| format!("AssignUserID: {e}"))?;
    directives::check_assigned(&id, user, group)?;
    let location = c.location();
    let idx = {
        let mut s = state();
        s.identities.push((Arc::new(id), location));
        s.identities.len() - 1
    };
    c.dir_config(&CONFIG).identity = Some(idx);
    Ok(())
}

fn parse_expr(c: &Cmd, text: &str) -> Result<Expr, String> {
    c.check(Forbid::Htaccess)?;
    note_section(c);
    c.parse_string_expr(text)
        .map_err(|e| format!("{}: cannot parse expression: {e}", c.name()))
}

/// `AssignUserIDExpr` (the raw argument, as the C module takes it).
pub fn set_user_expr(c: &mut Cmd, text: &str) -> Result<(), String> {
    let e = parse_expr(c, text)?;
    c.dir_config(&CONFIG).uid_expr = Some(e);
    Ok(())
}

/// `AssignGroupIDExpr`.
pub fn set_group_expr(c: &mut Cmd, text: &str) -> Result<(), String> {
    let e = parse_expr(c, text)?;
    c.dir_config(&CONFIG).gid_expr = Some(e);
    Ok(())
}

/// `LimitUIDRange` / `LimitGIDRange`.
pub fn set_id_range(c: &mut Cmd, min: &str, max: &str) -> Result<(), String> {
    c.check(Forbid::NotGlobal)?;
    let name = c.name();
    let r = directives::id_range(&name, min, max)?;
    let mut st = state();
    if name == "LimitUIDRange" {
        st.globals.uid_range = r;
        st.globals.uid_range_explicit = true;
    } else {
        st.globals.gid_range = r;
        st.globals.gid_range_explicit = true;
    }
    Ok(())
}

/// `EnableCapabilities` / `NoNewPrivileges`.
pub fn set_flag(c: &mut Cmd, arg: &str) -> Result<(), String> {
    c.check(Forbid::NotGlobal)?;
    let name = c.name();
    let v = directives::flag(&name, arg)?;
    let mut st = state();
    if name == "EnableCapabilities" {
        st.globals.enable_caps = v;
    } else {
        st.globals.no_new_privs = v;
    }
    Ok(())
}

/// `MaxClientsVHost n` (vhost only).
pub fn set_max_clients_vhost(c: &mut Cmd, arg: &str) -> Result<(), String> {
    let s = c.server();
    let n = directives::max_clients_vhost(arg, s.is_virtual())?;
    CONFIG.update_server(s, |conf| conf.max_clients_vhost = Some(n));
    Ok(())
}

/// `NiceValue n`.
pub fn set_nice(c: &mut Cmd, arg: &str) -> Result<(), String> {
    let (n, warning) = directives::nice_value(arg)?;
    note_section(c);
    let location = c.location();
    if let Some(w) = warning {
        config_warning(&format!("{w} ({location})"));
    }
    c.dir_config(&CONFIG).nice = Some(n);
    state().nice_values.push((n, location));
    Ok(())
}

/// `UserPools On|Off` (server config or `<VirtualHost>`).
pub fn set_user_pools(c: &mut Cmd, arg: &str) -> Result<(), String> {
    if c.in_section() {
        return Err("UserPools is only allowed at server level or in <VirtualHost>".into());
    }
    let v = directives::flag("UserPools", arg)?;
    CONFIG.update_server(c.server(), |conf| conf.user_pools = Some(v));
    Ok(())
}

/// `UserPoolMaxProcesses n` / `UserPoolIdleTimeout seconds`.
pub fn set_pool_tuning(c: &mut Cmd, arg: &str) -> Result<(), String> {
    c.check(Forbid::NotGlobal)?;
    let name = c.name();
    let v = directives::parse_int(&name, arg)?;
    let mut st = state();
    if name == "UserPoolMaxProcesses" {
        st.globals.pool_max_processes = directives::pool_max_processes(v)?;
    } else {
        st.globals.pool_idle_timeout = directives::pool_idle_timeout(v)?;
    }
    Ok(())
}
