//! The module record, the command table and every `extern "C"` entry point.
//!
//! Each entry point is a trampoline: convert the raw arguments to the safe
//! wrappers, call the safe function in `crate::mpm` / `crate::itk` /
//! `crate::config` inside [`guard`], and turn its result into what httpd
//! expects (a status, or a directive error string in the command's pool).

use super::sys;
use super::{DECLINED, Expr, Pool, Request, Server, c_to_string, guard};
use crate::config::{self, DirConf, ServerConf};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::{self, NonNull};

/// `Sync` wrapper for tables of raw pointers that httpd only reads.
#[repr(transparent)]
pub struct SyncTable<T>(pub T);
// SAFETY: the tables are immutable after construction and point only at
// 'static data (C string literals, functions).
unsafe impl<T> Sync for SyncTable<T> {}

/// The module record httpd looks up as the symbol `mpm_itk_module`. httpd
/// writes into it (index, handle, next), hence `static mut`.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mut mpm_itk_module: sys::module = sys::module {
    version: sys::MODULE_MAGIC_NUMBER_MAJOR,
    minor_version: sys::MODULE_MAGIC_NUMBER_MINOR,
    module_index: -1,
    // `<IfModule mpm_itk.c>` matches on this name.
    name: c"mpm_itk.c".as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: sys::MODULE_MAGIC_COOKIE as _,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: None,
    cmds: &COMMANDS.0 as *const _ as *const sys::command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

/// Our module index (for logging and config vectors).
pub fn module_index() -> c_int {
    // SAFETY: a plain read of a field httpd set when it loaded the module.
    unsafe { (*ptr::addr_of!(mpm_itk_module)).module_index }
}

fn module_ptr() -> *const sys::module {
    ptr::addr_of!(mpm_itk_module)
}

// ---------------------------------------------------------------------------
// Command table
// ---------------------------------------------------------------------------

type Take1 = unsafe extern "C" fn(*mut sys::cmd_parms, *mut c_void, *const c_char) -> *const c_char;
type Take2 = unsafe extern "C" fn(
    *mut sys::cmd_parms,
    *mut c_void,
    *const c_char,
    *const c_char,
) -> *const c_char;
type TakeArgv = unsafe extern "C" fn(
    *mut sys::cmd_parms,
    *mut c_void,
    c_int,
    *const *mut c_char,
) -> *const c_char;

const fn take1(name: &'static CStr, f: Take1, how: c_int, help: &'static CStr) -> sys::command_rec {
    sys::command_rec {
        name: name.as_ptr(),
        func: sys::cmd_func { take1: Some(f) },
        cmd_data: ptr::null_mut(),
        req_override: how,
        args_how: sys::cmd_how_TAKE1,
        errmsg: help.as_ptr(),
    }
}

const fn raw_args(
    name: &'static CStr,
    f: Take1,
    how: c_int,
    help: &'static CStr,
) -> sys::command_rec {
    sys::command_rec {
        name: name.as_ptr(),
        func: sys::cmd_func { raw_args: Some(f) },
        cmd_data: ptr::null_mut(),
        req_override: how,
        args_how: sys::cmd_how_RAW_ARGS,
        errmsg: help.as_ptr(),
    }
}

const fn take2(name: &'static CStr, f: Take2, how: c_int, help: &'static CStr) -> sys::command_rec {
    sys::command_rec {
        name: name.as_ptr(),
        func: sys::cmd_func { take2: Some(f) },
        cmd_data: ptr::null_mut(),
        req_override: how,
        args_how: sys::cmd_how_TAKE2,
        errmsg: help.as_ptr(),
    }
}

const fn take_argv(
    name: &'static CStr,
    f: TakeArgv,
    how: c_int,
    help: &'static CStr,
) -> sys::command_rec {
    sys::command_rec {
        name: name.as_ptr(),
        func: sys::cmd_func { take_argv: Some(f) },
        cmd_data: ptr::null_mut(),
        req_override: how,
        args_how: sys::cmd_how_TAKE_ARGV,
        errmsg: help.as_ptr(),
    }
}

const RSRC: c_int = sys::RSRC_CONF;
const RSRC_ACCESS: c_int = sys::RSRC_CONF | sys::ACCESS_CONF;

static COMMANDS: SyncTable<[sys::command_rec; 23]> = SyncTable([
    // httpd's LISTEN_COMMANDS: every MPM must carry them.
    take1(c"ListenBacklog", sys::ap_set_listenbacklog, RSRC,
        c"Maximum length of the queue of pending connections, as used by listen(2)"),
    take1(c"ListenCoresBucketsRatio", sys::ap_set_listencbratio, RSRC,
        c"Ratio between the number of CPU cores (online) and the number of listeners buckets"),
    take_argv(c"Listen", sys::ap_set_listener, RSRC,
        c"A port number or a numeric IP address and a port number, and an optional protocol"),
    take1(c"SendBufferSize", sys::ap_set_send_buffer_size, RSRC, c"Send buffer size in bytes"),
    take1(c"ReceiveBufferSize", sys::ap_set_receive_buffer_size, RSRC, c"Receive buffer size in bytes"),
    take1(c"ListenTCPDeferAccept", sys::ap_set_listentcpdeferaccept, RSRC,
        c"Value set for the socket option TCP_DEFER_ACCEPT if it is set"),
    // prefork's directives, same names and meanings.
    take1(c"StartServers", cmd_tuning, RSRC, c"Number of child processes launched at server startup"),
    take1(c"MinSpareServers", cmd_tuning, RSRC, c"Minimum number of idle children, to handle request spikes"),
    take1(c"MaxSpareServers", cmd_tuning, RSRC, c"Maximum number of idle children"),
    take1(c"MaxClients", cmd_tuning, RSRC, c"Deprecated name of MaxRequestWorkers"),
    take1(c"MaxRequestWorkers", cmd_tuning, RSRC, c"Maximum number of children alive at the same time"),
    take1(c"ServerLimit", cmd_tuning, RSRC, c"Maximum value of MaxRequestWorkers for this run of Apache"),
    take1(c"GracefulShutdownTimeout", sys::ap_mpm_set_graceful_shutdown, RSRC,
        c"Maximum time in seconds to wait for child processes to complete transactions during shutdown"),
    // mpm-itk's directives.
    take2(c"AssignUserID", cmd_assign_user_id, RSRC_ACCESS,
        c"The user and group (names or #id) this vhost or directory runs as"),
    raw_args(c"AssignUserIDExpr", cmd_user_expr, RSRC_ACCESS,
        c"Choose the user name with an expression. Overrides AssignUserID."),
    raw_args(c"AssignGroupIDExpr", cmd_group_expr, RSRC_ACCESS,
        c"Choose the group name with an expression. Overrides AssignUserID."),
    take2(c"LimitUIDRange", cmd_id_range, RSRC,
        c"The uids the server may ever switch to (inclusive; never 0), enforced with seccomp"),
    take2(c"LimitGIDRange", cmd_id_range, RSRC,
        c"The gids the server may ever switch to (inclusive; never 0), enforced with seccomp"),
    take1(c"EnableCapabilities", cmd_flag, RSRC,
        c"On: workers run as User with only the capabilities they need; Off: restricted root (NFS)"),
    take1(c"NoNewPrivileges", cmd_flag, RSRC,
        c"On: set no_new_privs in workers (setgid helpers such as postdrop stop working)"),
    take1(c"MaxClientsVHost", cmd_max_clients_vhost, RSRC,
        c"Maximum number of connections of this virtual host served at the same time"),
    take1(c"NiceValue", cmd_nice, RSRC_ACCESS,
        c"Nice value for the vhost or directory, from -20 (highest priority) to 19"),
    // httpd walks the table up to an entry with a NULL name.
    sys::command_rec {
        name: ptr::null(),
        func: sys::cmd_func { no_args: None },
        cmd_data: ptr::null_mut(),
        req_override: 0,
        args_how: 0,
        errmsg: ptr::null(),
    },
]);

/// What a directive handler sees of `cmd_parms`.
struct Cmd(NonNull<sys::cmd_parms>);

impl Cmd {
    fn new(p: *mut sys::cmd_parms) -> Cmd {
        Cmd(NonNull::new(p).expect("NULL cmd_parms"))
    }
    fn get(&self) -> &sys::cmd_parms {
        // SAFETY: cmd_parms lives for the duration of the directive call.
        unsafe { self.0.as_ref() }
    }
    fn name(&self) -> String {
        // SAFETY: cmd->cmd points at our command table entry.
        c_to_string(unsafe { (*self.get().cmd).name })
    }
    fn pool(&self) -> Pool {
        Pool::from_raw(self.get().pool).expect("cmd pool")
    }
    fn server(&self) -> Server {
        Server::from_raw(self.get().server).expect("cmd server")
    }
    /// `ap_check_cmd_context`: Some(message) if the directive is not allowed
    /// where it was written.
    fn check_context(&self, forbidden: c_int) -> Option<String> {
        // SAFETY: plain httpd check on a live cmd_parms.
        let e = unsafe { sys::ap_check_cmd_context(self.0.as_ptr(), forbidden as u32) };
        (!e.is_null()).then(|| c_to_string(e))
    }
    /// "file:line" of the directive.
    fn location(&self) -> String {
        let d = self.get().directive;
        if d.is_null() {
            return "(unknown)".into();
        }
        // SAFETY: the directive tree lives in pconf.
        unsafe { format!("{}:{}", c_to_string((*d).filename), (*d).line_num) }
    }
    /// Returns a directive result to httpd: NULL or an error in cmd->pool.
    fn result(&self, r: Result<(), String>) -> *const c_char {
        match r {
            Ok(()) => ptr::null(),
            Err(e) => self.pool().strdup(&e),
        }
    }
}

fn arg(p: *const c_char) -> String {
    c_to_string(p)
}

/// Runs a directive's safe body; a panic becomes a directive error.
fn directive(
    cmd: *mut sys::cmd_parms,
    f: impl FnOnce(&Cmd) -> Result<(), String>,
) -> *const c_char {
    let c = Cmd::new(cmd);
    let r = guard(
        "directive handler",
        Err("internal error (see the error log)".into()),
        || f(&c),
    );
    c.result(r)
}

fn dir_conf<'a>(mconfig: *mut c_void) -> &'a mut DirConf {
    // SAFETY: httpd passes the per-dir config our create_dir_config made
    // (a pool-allocated, initialised DirConf) for ACCESS_CONF/RSRC_CONF
    // directives of this module.
    unsafe { &mut *(mconfig as *mut DirConf) }
}

unsafe extern "C" fn cmd_tuning(
    cmd: *mut sys::cmd_parms,
    _: *mut c_void,
    a: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        if let Some(e) = c.check_context(sys::GLOBAL_ONLY) {
            return Err(e);
        }
        let name = c.name();
        let v = config::parse_int(&name, &arg(a))?;
        let mut st = config::state();
        let t = &mut st.tuning;
        match name.as_str() {
            "StartServers" => t.daemons_to_start = v,
            "MinSpareServers" => t.min_spare = v,
            "MaxSpareServers" => t.max_spare = v,
            "MaxClients" | "MaxRequestWorkers" => {
                if name == "MaxClients" {
                    super::log_startup(
                        super::Level::Info,
                        "MaxClients is deprecated, use MaxRequestWorkers instead.",
                    );
                }
                t.daemons_limit = v
            }
            "ServerLimit" => t.server_limit = v,
            _ => return Err(format!("{name}: unknown tuning directive")),
        }
        Ok(())
    })
}

unsafe extern "C" fn cmd_assign_user_id(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    user: *const c_char,
    group: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        if let Some(e) = c.check_context(sys::NOT_IN_HTACCESS) {
            return Err(e);
        }
        let idx = config::assign_user_id(&arg(user), &arg(group), c.location())?;
        dir_conf(mconfig).identity = Some(idx);
        Ok(())
    })
}

fn parse_expr(c: &Cmd, text: *const c_char) -> Result<Expr, String> {
    if let Some(e) = c.check_context(sys::NOT_IN_HTACCESS) {
        return Err(e);
    }
    let mut err: *const c_char = ptr::null();
    // SAFETY: parses the raw argument string into pconf; err is an
    // out-parameter.
    let e = unsafe {
        sys::ap_expr_parse_cmd_mi(
            c.0.as_ptr(),
            text,
            sys::AP_EXPR_FLAG_STRING_RESULT as u32,
            &mut err,
            None,
            sys::AP_CORE_MODULE_INDEX,
        )
    };
    if !err.is_null() {
        return Err(format!(
            "{}: cannot parse expression: {}",
            c.name(),
            c_to_string(err)
        ));
    }
    NonNull::new(e)
        .map(Expr)
        .ok_or_else(|| format!("{}: cannot parse expression", c.name()))
}

unsafe extern "C" fn cmd_user_expr(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    a: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        dir_conf(mconfig).uid_expr = Some(parse_expr(c, a)?);
        Ok(())
    })
}

unsafe extern "C" fn cmd_group_expr(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    a: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        dir_conf(mconfig).gid_expr = Some(parse_expr(c, a)?);
        Ok(())
    })
}

unsafe extern "C" fn cmd_id_range(
    cmd: *mut sys::cmd_parms,
    _: *mut c_void,
    min: *const c_char,
    max: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        if let Some(e) = c.check_context(sys::GLOBAL_ONLY) {
            return Err(e);
        }
        let name = c.name();
        let r = config::id_range(&name, &arg(min), &arg(max))?;
        let mut st = config::state();
        if name == "LimitUIDRange" {
            st.globals.uid_range = r;
            st.globals.uid_range_explicit = true;
        } else {
            st.globals.gid_range = r;
            st.globals.gid_range_explicit = true;
        }
        Ok(())
    })
}

unsafe extern "C" fn cmd_flag(
    cmd: *mut sys::cmd_parms,
    _: *mut c_void,
    a: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        if let Some(e) = c.check_context(sys::GLOBAL_ONLY) {
            return Err(e);
        }
        let name = c.name();
        let v = config::flag(&name, &arg(a))?;
        let mut st = config::state();
        if name == "EnableCapabilities" {
            st.globals.enable_caps = v;
        } else {
            st.globals.no_new_privs = v;
        }
        Ok(())
    })
}

unsafe extern "C" fn cmd_max_clients_vhost(
    cmd: *mut sys::cmd_parms,
    _: *mut c_void,
    a: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        // Vhost-only, as documented by the C module: in the main server it
        // would silently limit only requests that no vhost matched.
        if !c.server().is_virtual() {
            // (httpd names the file and line)
            return Err(format!("{} is only allowed inside <VirtualHost>", c.name()));
        }
        let n = config::max_clients_vhost(&arg(a))?;
        server_conf_mut(c.server()).max_clients_vhost = Some(n);
        Ok(())
    })
}

unsafe extern "C" fn cmd_nice(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    a: *const c_char,
) -> *const c_char {
    directive(cmd, |c| {
        let (n, warning) = config::nice_value(&arg(a))?;
        if let Some(w) = warning {
            super::log_startup(super::Level::Warn, &format!("{w} ({})", c.location()));
        }
        dir_conf(mconfig).nice = Some(n);
        config::state().nice_values.push((n, c.location()));
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Configuration structures
// ---------------------------------------------------------------------------

fn palloc<T: Copy>(p: *mut sys::apr_pool_t, v: T) -> *mut c_void {
    // SAFETY: apr_palloc returns pool memory suitably aligned for any type
    // (APR aligns to 8 bytes, enough for these structs); we initialise it
    // fully before returning; T is Copy so no destructor is ever skipped.
    unsafe {
        let m = sys::apr_palloc(p, size_of::<T>()) as *mut T;
        ptr::write(m, v);
        m as *mut c_void
    }
}

unsafe extern "C" fn create_dir_config(p: *mut sys::apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    guard("create_dir_config", ptr::null_mut(), || {
        palloc(p, DirConf::default())
    })
}

unsafe extern "C" fn merge_dir_config(
    p: *mut sys::apr_pool_t,
    base: *mut c_void,
    new: *mut c_void,
) -> *mut c_void {
    guard("merge_dir_config", ptr::null_mut(), || {
        // SAFETY: both come from create_dir_config/merge_dir_config.
        let (b, n) = unsafe { (*(base as *const DirConf), *(new as *const DirConf)) };
        palloc(p, DirConf::merge(&b, &n))
    })
}

unsafe extern "C" fn create_server_config(
    p: *mut sys::apr_pool_t,
    _s: *mut sys::server_rec,
) -> *mut c_void {
    guard("create_server_config", ptr::null_mut(), || {
        palloc(p, ServerConf::default())
    })
}

fn server_conf_mut<'a>(s: Server) -> &'a mut ServerConf {
    // SAFETY: every server_rec has our ServerConf (create_server_config runs
    // for the main server and each vhost); the config vector is in pconf.
    unsafe {
        &mut *(sys::ap_get_module_config((*s.0.as_ptr()).module_config, module_ptr())
            as *mut ServerConf)
    }
}

/// This server's (vhost's) ServerConf.
pub fn server_conf(s: Server) -> ServerConf {
    *server_conf_mut(s)
}

/// The merged per-dir configuration of a request; None if it is missing
/// (never treated as the default: the caller fails the request).
pub fn request_dir_conf(r: Request) -> Option<DirConf> {
    // SAFETY: per_dir_config holds our DirConf after the per-dir merge (or
    // NULL, checked).
    unsafe {
        let p = sys::ap_get_module_config((*r.0.as_ptr()).per_dir_config, module_ptr())
            as *const DirConf;
        p.as_ref().copied()
    }
}

// ---------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------

unsafe extern "C" fn register_hooks(_p: *mut sys::apr_pool_t) {
    static SUCC_CORE: SyncTable<[*const c_char; 2]> = SyncTable([c"core.c".as_ptr(), ptr::null()]);
    guard("register_hooks", (), || {
        // SAFETY: registering hook functions of this DSO; httpd drops the
        // registrations before it unloads the DSO. The successor list is a
        // 'static NULL-terminated array.
        unsafe {
            // Our open_logs must run before core's, or stderr is redirected
            // before the listeners are set up and messages vanish.
            sys::ap_hook_open_logs(
                Some(hook_open_logs),
                ptr::null(),
                SUCC_CORE.0.as_ptr(),
                sys::APR_HOOK_REALLY_FIRST,
            );
            // The MPM state must be set before other pre_config hooks query it.
            sys::ap_hook_pre_config(
                Some(hook_pre_config),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_REALLY_FIRST,
            );
            sys::ap_hook_check_config(
                Some(hook_check_config),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_MIDDLE,
            );
            sys::ap_hook_post_config(
                Some(hook_post_config),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_MIDDLE,
            );
            sys::ap_hook_mpm(
                Some(hook_mpm),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_MIDDLE,
            );
            sys::ap_hook_mpm_query(
                Some(hook_mpm_query),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_MIDDLE,
            );
            sys::ap_hook_mpm_get_name(
                Some(hook_mpm_get_name),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_MIDDLE,
            );
            // Switch user as early as possible, but after the per-dir merge.
            sys::ap_hook_post_perdir_config(
                Some(hook_post_perdir_config),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_REALLY_FIRST,
            );
            sys::ap_hook_dirwalk_stat(
                Some(hook_dirwalk_stat),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_MIDDLE,
            );
            sys::ap_hook_open_htaccess(
                Some(hook_open_htaccess),
                ptr::null(),
                ptr::null(),
                sys::APR_HOOK_REALLY_FIRST,
            );
        }
    })
}

fn pool(p: *mut sys::apr_pool_t) -> Pool {
    Pool::from_raw(p).expect("NULL pool from httpd")
}

unsafe extern "C" fn hook_pre_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
) -> c_int {
    guard("pre_config", sys::HTTP_INTERNAL_SERVER_ERROR, || {
        crate::mpm::pre_config(pool(pconf))
    })
}

unsafe extern "C" fn hook_check_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    s: *mut sys::server_rec,
) -> c_int {
    guard("check_config", sys::HTTP_INTERNAL_SERVER_ERROR, || {
        let s = Server::from_raw(s).expect("server");
        let rc = crate::mpm::check_config(s);
        if rc != sys::OK {
            return rc;
        }
        crate::itk::check_config(pool(pconf), s)
    })
}

unsafe extern "C" fn hook_open_logs(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    s: *mut sys::server_rec,
) -> c_int {
    guard("open_logs", sys::HTTP_INTERNAL_SERVER_ERROR, || {
        crate::mpm::open_logs(pool(pconf), Server::from_raw(s).expect("server"))
    })
}

unsafe extern "C" fn hook_post_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    s: *mut sys::server_rec,
) -> c_int {
    guard("post_config", sys::HTTP_INTERNAL_SERVER_ERROR, || {
        crate::itk::post_config(pool(pconf), Server::from_raw(s).expect("server"))
    })
}

unsafe extern "C" fn hook_mpm(
    pconf: *mut sys::apr_pool_t,
    plog: *mut sys::apr_pool_t,
    s: *mut sys::server_rec,
) -> c_int {
    guard("mpm", sys::HTTP_INTERNAL_SERVER_ERROR, || {
        crate::mpm::run(
            pool(pconf),
            pool(plog),
            Server::from_raw(s).expect("server"),
        )
    })
}

unsafe extern "C" fn hook_mpm_query(
    code: c_int,
    result: *mut c_int,
    rv: *mut sys::apr_status_t,
) -> c_int {
    guard("mpm_query", sys::OK, || {
        let answer = crate::mpm::query(code);
        // SAFETY: httpd passes valid out-pointers.
        unsafe {
            match answer {
                Some(v) => {
                    *result = v;
                    *rv = 0;
                }
                None => *rv = sys::APR_ENOTIMPL,
            }
        }
        sys::OK
    })
}

unsafe extern "C" fn hook_mpm_get_name() -> *const c_char {
    c"itk".as_ptr()
}

unsafe extern "C" fn hook_post_perdir_config(r: *mut sys::request_rec) -> c_int {
    let Some(req) = Request::from_raw(r) else {
        return DECLINED;
    };
    // A panic may leave the process half-switched: fail closed.
    super::guard_with(
        "post_perdir_config",
        sys::HTTP_INTERNAL_SERVER_ERROR,
        || crate::itk::post_perdir_config(req),
        || crate::itk::switch_panicked(req),
    )
}

unsafe extern "C" fn hook_dirwalk_stat(
    finfo: *mut sys::apr_finfo_t,
    r: *mut sys::request_rec,
    wanted: i32,
) -> sys::apr_status_t {
    // SAFETY: core's own dirwalk_stat: stat r->filename into finfo.
    let status = unsafe { sys::apr_stat(finfo, (*r).filename, wanted, (*r).pool) };
    guard("dirwalk_stat", status, || {
        if let Some(req) = Request::from_raw(r) {
            crate::itk::after_stat(req, status);
        }
        status
    })
}

unsafe extern "C" fn hook_open_htaccess(
    r: *mut sys::request_rec,
    dir_name: *const c_char,
    access_name: *const c_char,
    conffile: *mut *mut sys::ap_configfile_t,
    full_name: *mut *const c_char,
) -> sys::apr_status_t {
    guard("open_htaccess", sys::AP_DECLINED, || {
        let Some(req) = Request::from_raw(r) else {
            return sys::AP_DECLINED;
        };
        if !crate::itk::should_watch_htaccess(req) {
            return sys::AP_DECLINED;
        }
        // SAFETY: as core's open_htaccess: build the path in the request
        // pool and open it; the out-pointers come from httpd.
        let status = unsafe {
            *full_name = sys::ap_make_full_path((*r).pool, dir_name, access_name);
            sys::ap_pcfg_openfile(conffile, (*r).pool, *full_name)
        };
        crate::itk::after_htaccess_open(
            req,
            &c_to_string(
                // SAFETY: set just above.
                unsafe { *full_name },
            ),
            status,
        );
        status
    })
}
