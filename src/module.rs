//! Layer 3, the top: the module record, the command table and every
//! `extern "C"` entry point. The only place that names this crate's
//! functions in a C table.
//!
//! Each entry point is a trampoline: turn the raw arguments into the
//! wrappers of [`crate::httpd`], run the safe function of [`crate::mpm`],
//! [`crate::itk`] or [`crate::config`] inside [`guard`], and give httpd what
//! it expects (a status, or a directive error string in the command's pool).

use crate::config::{self, CONFIG, DirConf, ServerConf};
use crate::httpd::module::{
    self as m, AP_DECLINED, Command, CommandTable, Order, PerModule, RSRC_ACCESS_CONF, RSRC_CONF,
    arg, directive,
};
use crate::httpd::{
    self, DECLINED, HTTP_INTERNAL_SERVER_ERROR, OK, Pool, Request, Server, c, guard,
};
use crate::{itk, mpm, pools};
use std::ffi::{c_char, c_int, c_void};
use std::ptr;

type Config = PerModule<DirConf, ServerConf>;

/// The module record httpd looks up as the symbol `mpm_itk_module`. httpd
/// writes into it (index, handle, next), hence `static mut`.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mut mpm_itk_module: c::module = m::module_record(
    // `<IfModule mpm_itk.c>` matches on this name.
    c"mpm_itk.c",
    Config::create_dir,
    Config::merge_dir,
    Config::create_server,
    COMMANDS.as_ptr(),
    register_hooks,
);

static COMMANDS: CommandTable<26> = CommandTable::new([
    // httpd's LISTEN_COMMANDS: every MPM must carry them.
    Command::take1(c"ListenBacklog", Command::LISTEN_BACKLOG, RSRC_CONF,
        c"Maximum length of the queue of pending connections, as used by listen(2)"),
    Command::take1(c"ListenCoresBucketsRatio", Command::LISTEN_CORES_BUCKETS_RATIO, RSRC_CONF,
        c"Ratio between the number of CPU cores (online) and the number of listeners buckets"),
    Command::take_argv(c"Listen", Command::LISTEN, RSRC_CONF,
        c"A port number or a numeric IP address and a port number, and an optional protocol"),
    Command::take1(c"SendBufferSize", Command::SEND_BUFFER_SIZE, RSRC_CONF,
        c"Send buffer size in bytes"),
    Command::take1(c"ReceiveBufferSize", Command::RECEIVE_BUFFER_SIZE, RSRC_CONF,
        c"Receive buffer size in bytes"),
    Command::take1(c"ListenTCPDeferAccept", Command::LISTEN_TCP_DEFER_ACCEPT, RSRC_CONF,
        c"Value set for the socket option TCP_DEFER_ACCEPT if it is set"),
    // prefork's directives, same names and meanings.
    Command::take1(c"StartServers", cmd_tuning, RSRC_CONF,
        c"Number of child processes launched at server startup"),
    Command::take1(c"MinSpareServers", cmd_tuning, RSRC_CONF,
        c"Minimum number of idle children, to handle request spikes"),
    Command::take1(c"MaxSpareServers", cmd_tuning, RSRC_CONF, c"Maximum number of idle children"),
    Command::take1(c"MaxClients", cmd_tuning, RSRC_CONF, c"Deprecated name of MaxRequestWorkers"),
    Command::take1(c"MaxRequestWorkers", cmd_tuning, RSRC_CONF,
        c"Maximum number of children alive at the same time"),
    Command::take1(c"ServerLimit", cmd_tuning, RSRC_CONF,
        c"Maximum value of MaxRequestWorkers for this run of Apache"),
    Command::take1(c"GracefulShutdownTimeout", Command::GRACEFUL_SHUTDOWN_TIMEOUT, RSRC_CONF,
        c"Maximum time in seconds to wait for child processes to complete transactions during shutdown"),
    // mpm-itk's directives.
    Command::take2(c"AssignUserID", cmd_assign_user_id, RSRC_ACCESS_CONF,
        c"The user and group (names or #id) this vhost or directory runs as"),
    Command::raw_args(c"AssignUserIDExpr", cmd_user_expr, RSRC_ACCESS_CONF,
        c"Choose the user name with an expression. Overrides AssignUserID."),
    Command::raw_args(c"AssignGroupIDExpr", cmd_group_expr, RSRC_ACCESS_CONF,
        c"Choose the group name with an expression. Overrides AssignUserID."),
    Command::take2(c"LimitUIDRange", cmd_id_range, RSRC_CONF,
        c"The uids the server may ever switch to (inclusive; never 0), enforced with seccomp"),
    Command::take2(c"LimitGIDRange", cmd_id_range, RSRC_CONF,
        c"The gids the server may ever switch to (inclusive; never 0), enforced with seccomp"),
    Command::take1(c"EnableCapabilities", cmd_flag, RSRC_CONF,
        c"On: workers run as User with only the capabilities they need; Off: restricted root (NFS)"),
    Command::take1(c"NoNewPrivileges", cmd_flag, RSRC_CONF,
        c"On: set no_new_privs in workers (setgid helpers such as postdrop stop working)"),
    Command::take1(c"MaxClientsVHost", cmd_max_clients_vhost, RSRC_CONF,
        c"Maximum number of connections of this virtual host served at the same time"),
    Command::take1(c"NiceValue", cmd_nice, RSRC_ACCESS_CONF,
        c"Nice value for the vhost or directory, from -20 (highest priority) to 19"),
    Command::take1(c"UserPools", cmd_user_pools, RSRC_CONF,
        c"On: each user's requests are served by persistent processes of that user (no fork per connection)"),
    Command::take1(c"UserPoolMaxProcesses", cmd_pool_tuning, RSRC_CONF,
        c"Most processes per user pool (1-64)"),
    Command::take1(c"UserPoolIdleTimeout", cmd_pool_tuning, RSRC_CONF,
        c"Seconds an idle user pool process waits for a connection before it exits"),
    Command::end(),
]);

// ---------------------------------------------------------------------------
// Directive trampolines
// ---------------------------------------------------------------------------

macro_rules! take1 {
    ($name:ident, $f:path) => {
        unsafe extern "C" fn $name(
            cmd: *mut c::cmd_parms,
            mconfig: *mut c_void,
            a: *const c_char,
        ) -> *const c_char {
            // SAFETY: httpd calls a handler of our table with its cmd_parms,
            // our per-dir config and a NUL-terminated argument.
            unsafe { directive(cmd, mconfig, |c| $f(c, &arg(a))) }
        }
    };
}

macro_rules! take2 {
    ($name:ident, $f:path) => {
        unsafe extern "C" fn $name(
            cmd: *mut c::cmd_parms,
            mconfig: *mut c_void,
            a: *const c_char,
            b: *const c_char,
        ) -> *const c_char {
            // SAFETY: as for take1, with two arguments.
            unsafe { directive(cmd, mconfig, |c| $f(c, &arg(a), &arg(b))) }
        }
    };
}

take1!(cmd_tuning, config::set_tuning);
take2!(cmd_assign_user_id, config::assign_user_id);
take1!(cmd_user_expr, config::set_user_expr);
take1!(cmd_group_expr, config::set_group_expr);
take2!(cmd_id_range, config::set_id_range);
take1!(cmd_flag, config::set_flag);
take1!(cmd_max_clients_vhost, config::set_max_clients_vhost);
take1!(cmd_nice, config::set_nice);
take1!(cmd_user_pools, config::set_user_pools);
take1!(cmd_pool_tuning, config::set_pool_tuning);

// ---------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------

unsafe extern "C" fn register_hooks(_p: *mut c::apr_pool_t) {
    guard("register_hooks", (), || {
        // Logging and the configuration vectors need our index: this is the
        // first call httpd makes after it loaded the DSO.
        m::set_this_module(ptr::addr_of_mut!(mpm_itk_module));
        // Our open_logs must run before core's, or stderr is redirected
        // before the listeners are set up and messages vanish.
        m::open_logs_before_core(Some(hook_open_logs), Order::ReallyFirst);
        // The MPM state must be set before other pre_config hooks query it.
        m::pre_config(Some(hook_pre_config), Order::ReallyFirst);
        m::check_config(Some(hook_check_config), Order::Middle);
        m::post_config(Some(hook_post_config), Order::Middle);
        m::mpm(Some(hook_mpm), Order::Middle);
        m::mpm_query(Some(hook_mpm_query), Order::Middle);
        m::mpm_get_name(Some(hook_mpm_get_name), Order::Middle);
        // Switch user as early as possible, but after the per-dir merge.
        m::post_perdir_config(Some(hook_post_perdir_config), Order::ReallyFirst);
        // Before mod_ssl's (Middle), other modules' REALLY_FIRST ones
        // (mod_security2's phase 1 rules of the vhost) and anything that
        // reads the vhost's configuration for the request.
        m::post_read_request(Some(hook_post_read_request), Order::BeforeReallyFirst);
        m::dirwalk_stat(Some(hook_dirwalk_stat), Order::Middle);
        m::open_htaccess(Some(hook_open_htaccess), Order::ReallyFirst);
    })
}

/// A pool httpd passed to a hook (live for the call at least).
fn pool<'a>(p: *mut c::apr_pool_t) -> Pool<'a> {
    // SAFETY: httpd's configuration pools outlive every hook call.
    unsafe { Pool::from_raw(p) }.expect("NULL pool from httpd")
}

/// The server httpd passed to a hook.
fn server<'a>(s: *mut c::server_rec) -> Server<'a> {
    // SAFETY: server_recs live in pconf for the generation.
    unsafe { Server::from_raw(s) }.expect("NULL server from httpd")
}

unsafe extern "C" fn hook_pre_config(
    pconf: *mut c::apr_pool_t,
    _plog: *mut c::apr_pool_t,
    _ptemp: *mut c::apr_pool_t,
) -> c_int {
    guard("pre_config", HTTP_INTERNAL_SERVER_ERROR, || {
        mpm::pre_config(pool(pconf))
    })
}

unsafe extern "C" fn hook_check_config(
    pconf: *mut c::apr_pool_t,
    _plog: *mut c::apr_pool_t,
    _ptemp: *mut c::apr_pool_t,
    s: *mut c::server_rec,
) -> c_int {
    guard("check_config", HTTP_INTERNAL_SERVER_ERROR, || {
        let s = server(s);
        let rc = mpm::check_config(s);
        if rc != OK {
            return rc;
        }
        itk::check_config(pool(pconf), s)
    })
}

unsafe extern "C" fn hook_open_logs(
    pconf: *mut c::apr_pool_t,
    _plog: *mut c::apr_pool_t,
    _ptemp: *mut c::apr_pool_t,
    s: *mut c::server_rec,
) -> c_int {
    guard("open_logs", HTTP_INTERNAL_SERVER_ERROR, || {
        mpm::open_logs(pool(pconf), server(s))
    })
}

unsafe extern "C" fn hook_post_config(
    pconf: *mut c::apr_pool_t,
    _plog: *mut c::apr_pool_t,
    _ptemp: *mut c::apr_pool_t,
    s: *mut c::server_rec,
) -> c_int {
    guard("post_config", HTTP_INTERNAL_SERVER_ERROR, || {
        let rc = itk::post_config(pool(pconf), server(s));
        if rc != OK {
            return rc;
        }
        match pools::post_config(pool(pconf), server(s)) {
            Ok(()) => OK,
            Err(e) => {
                httpd::log(httpd::Level::Emerg, 0, Some(server(s)), &e);
                HTTP_INTERNAL_SERVER_ERROR
            }
        }
    })
}

unsafe extern "C" fn hook_mpm(
    pconf: *mut c::apr_pool_t,
    plog: *mut c::apr_pool_t,
    s: *mut c::server_rec,
) -> c_int {
    guard("mpm", HTTP_INTERNAL_SERVER_ERROR, || {
        mpm::run(pool(pconf), pool(plog), server(s))
    })
}

unsafe extern "C" fn hook_mpm_query(
    code: c_int,
    result: *mut c_int,
    rv: *mut c::apr_status_t,
) -> c_int {
    guard("mpm_query", OK, || {
        let answer = mpm::query(code);
        // SAFETY: httpd passes valid out-pointers.
        unsafe { m::answer_mpm_query(result, rv, answer) };
        OK
    })
}

unsafe extern "C" fn hook_mpm_get_name() -> *const c_char {
    c"itk".as_ptr()
}

unsafe extern "C" fn hook_post_perdir_config(r: *mut c::request_rec) -> c_int {
    // SAFETY: the request lives for the hook call.
    let Some(req) = (unsafe { Request::from_raw(r) }) else {
        return DECLINED;
    };
    // A panic may leave the process half-switched: fail closed.
    httpd::guard_with(
        "post_perdir_config",
        HTTP_INTERNAL_SERVER_ERROR,
        || pools::refuse_foreign(req).unwrap_or_else(|| itk::post_perdir_config(req)),
        || itk::switch_panicked(req),
    )
}

unsafe extern "C" fn hook_post_read_request(r: *mut c::request_rec) -> c_int {
    // SAFETY: the request lives for the hook call.
    let Some(req) = (unsafe { Request::from_raw(r) }) else {
        return DECLINED;
    };
    // A panic here: refuse the request (and its connection).
    guard("post_read_request", HTTP_INTERNAL_SERVER_ERROR, || {
        pools::misdirected(req).unwrap_or(DECLINED)
    })
}

unsafe extern "C" fn hook_dirwalk_stat(
    finfo: *mut c::apr_finfo_t,
    r: *mut c::request_rec,
    wanted: i32,
) -> c::apr_status_t {
    // SAFETY: the arguments are those of this dirwalk_stat call.
    let status = unsafe { m::core_dirwalk_stat(finfo, r, wanted) };
    guard("dirwalk_stat", status, || {
        // SAFETY: the request lives for the hook call.
        if let Some(req) = unsafe { Request::from_raw(r) } {
            itk::after_stat(req, status);
        }
        status
    })
}

unsafe extern "C" fn hook_open_htaccess(
    r: *mut c::request_rec,
    dir_name: *const c_char,
    access_name: *const c_char,
    conffile: *mut *mut c::ap_configfile_t,
    full_name: *mut *const c_char,
) -> c::apr_status_t {
    guard("open_htaccess", AP_DECLINED, || {
        // SAFETY: the request lives for the hook call.
        let Some(req) = (unsafe { Request::from_raw(r) }) else {
            return AP_DECLINED;
        };
        if !itk::should_watch_htaccess(req) {
            return AP_DECLINED;
        }
        // SAFETY: the arguments are those of this open_htaccess call.
        let (status, path) =
            unsafe { m::core_open_htaccess(r, dir_name, access_name, conffile, full_name) };
        itk::after_htaccess_open(req, path, status);
        status
    })
}

/// The one per-module configuration value: `config` names it; this record
/// names its functions (see `PerModule::new`'s contract).
const _: &Config = &CONFIG;
