//! Core's and mod_unixd's configuration as the MPM reads it, and the
//! startup calls every MPM makes (listeners, pid file, detaching, banner).

use super::{Level, Pool, Server, c_to_string, cstring_lossy, log};
use crate::sys;
use std::ffi::c_int;
use std::ptr;

/// `-D NAME` given on the command line?
pub fn config_define(name: &std::ffi::CStr) -> bool {
    // SAFETY: reads httpd's define list with a NUL-terminated name.
    unsafe { sys::ap_exists_config_define(name.as_ptr()) != 0 }
}

/// `MaxConnectionsPerChild` (core directive).
pub fn max_requests_per_child() -> i32 {
    // SAFETY: plain read of a core global set during config parsing.
    unsafe { sys::ap_max_requests_per_child }
}

pub fn graceful_shutdown_timeout() -> i32 {
    // SAFETY: plain read of a core global set during config parsing.
    unsafe { sys::ap_graceful_shutdown_timeout }
}

pub fn set_extended_status(v: i32) {
    // SAFETY: plain write of a core global; prefork resets it in pre_config.
    unsafe { sys::ap_extended_status = v }
}

/// `User`/`Group` as mod_unixd parsed them: (name, uid, gid).
pub fn unixd_user_group() -> (String, u32, u32) {
    // SAFETY: plain reads of mod_unixd's global configuration record.
    unsafe {
        (
            c_to_string(sys::ap_unixd_config.user_name),
            sys::ap_unixd_config.user_id,
            sys::ap_unixd_config.group_id,
        )
    }
}

/// `ChrootDir`, if set.
pub fn unixd_chroot_dir() -> Option<String> {
    // SAFETY: plain read of mod_unixd's global configuration record.
    let p = unsafe { sys::ap_unixd_config.chroot_dir };
    (!p.is_null()).then(|| c_to_string(p))
}

/// Was `CoreDumpDirectory` configured (then workers must stay dumpable)?
pub fn coredumpdir_configured() -> bool {
    // SAFETY: plain read of a core global.
    unsafe { sys::ap_coredumpdir_configured != 0 }
}

/// Is the module whose `name` field is `name` (e.g. `mod_http2.c`) loaded?
pub fn module_loaded(name: &std::ffi::CStr) -> bool {
    // SAFETY: looks a NUL-terminated name up in httpd's module list.
    unsafe { !sys::ap_find_linked_module(name.as_ptr()).is_null() }
}

/// Removes the protocols in `names` (e.g. "h2") from the `Protocols` list of
/// every server, in place: core shares one array between a server and the
/// vhosts that inherit it, so each array is filtered once and a second call
/// finds nothing. Returns how many entries were removed.
pub fn remove_protocols(names: &[&str]) -> usize {
    let mut removed = 0;
    // SAFETY: walks the server list of this generation (pconf); every
    // server has core's config, whose `protocols` is an array of C strings
    // (created in core's create_server_config, never NULL). Single-threaded
    // parent, before any child exists.
    unsafe {
        let mut s = sys::ap_server_conf;
        while !s.is_null() {
            let conf =
                sys::ap_get_module_config((*s).module_config, ptr::addr_of!(sys::core_module))
                    as *mut sys::core_server_config;
            if !conf.is_null() && !(*conf).protocols.is_null() {
                let arr = (*conf).protocols;
                let elts = (*arr).elts as *mut *const std::ffi::c_char;
                let mut kept = 0;
                for i in 0..(*arr).nelts.max(0) as usize {
                    let p = *elts.add(i);
                    let name = c_to_string(p);
                    if names.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                        removed += 1;
                    } else {
                        *elts.add(kept) = p;
                        kept += 1;
                    }
                }
                (*arr).nelts = kept as c_int;
            }
            s = (*s).next;
        }
    }
    removed
}

pub fn add_version_component(pconf: Pool, component: &str) {
    let c = cstring_lossy(component);
    // SAFETY: httpd copies the string into pconf.
    unsafe { sys::ap_add_version_component(pconf.raw(), c.as_ptr()) }
}

pub fn mutex_register_accept(pconf: Pool) {
    // SAFETY: registers the "mpm-accept" mutex type, as prefork does.
    unsafe {
        sys::ap_mutex_register(
            pconf.raw(),
            sys::AP_ACCEPT_MUTEX_TYPE.as_ptr() as *const _,
            ptr::null(),
            sys::apr_lockmech_e_APR_LOCK_DEFAULT,
            0,
        );
    }
}

pub fn listen_pre_config() {
    // SAFETY: resets core's listener configuration, as every MPM does.
    unsafe { sys::ap_listen_pre_config() }
}

/// Daemonises (or just detaches, with `-DNO_DETACH`).
pub fn detach(foreground_only: bool) -> Result<(), i32> {
    let how = if foreground_only {
        sys::APR_PROC_DETACH_FOREGROUND
    } else {
        sys::APR_PROC_DETACH_DAEMONIZE
    };
    // SAFETY: plain APR call; the process is single-threaded here.
    match unsafe { sys::apr_proc_detach(how) } {
        0 => Ok(()),
        rv => Err(rv),
    }
}

pub fn fatal_signal_setup(pconf: Pool) {
    if let Some(s) = Server::main() {
        // SAFETY: installs httpd's crash handlers, as prefork does.
        unsafe { sys::ap_fatal_signal_setup(s.raw(), pconf.raw()) };
    }
}

pub fn log_pid(pconf: Pool) {
    // SAFETY: writes the PidFile configured in core.
    unsafe { sys::ap_log_pid(pconf.raw(), sys::ap_pid_fname) }
}

pub fn remove_pid(pconf: Pool) {
    // SAFETY: removes the PidFile configured in core.
    unsafe { sys::ap_remove_pid(pconf.raw(), sys::ap_pid_fname) }
}

/// `ap_run_pre_mpm`: creates the scoreboard (SB_SHARED).
pub fn run_pre_mpm() -> bool {
    let Some(s) = Server::main() else {
        return false;
    };
    // SAFETY: the process record lives for the process.
    unsafe {
        sys::ap_run_pre_mpm((*(*s.raw()).process).pool, sys::ap_scoreboard_e_SB_SHARED) == sys::OK
    }
}

/// Installs mod_unixd's parent signal handlers (SIGTERM, SIGHUP, SIGUSR1,
/// SIGWINCH set the retained flags).
pub fn set_parent_signals(pconf: Pool, one_process: bool) {
    // SAFETY: plain httpd call.
    unsafe { sys::ap_unixd_mpm_set_signals(pconf.raw(), one_process as c_int) }
}

/// The "resuming normal operations" banner and friends.
pub fn log_startup_banner(plog: Pool, accept_mutex_name: &str) {
    let Some(s) = Server::main() else { return };
    // SAFETY: reads static strings from httpd.
    let (desc, built) = unsafe {
        (
            c_to_string(sys::ap_get_server_description()),
            c_to_string(sys::ap_get_server_built()),
        )
    };
    log(
        Level::Notice,
        0,
        Some(s),
        &format!("{desc} configured -- resuming normal operations"),
    );
    log(Level::Info, 0, Some(s), &format!("Server built: {built}"));
    // SAFETY: plain httpd logging calls.
    unsafe {
        sys::ap_log_command_line(plog.raw(), s.raw());
        sys::ap_log_mpm_common(s.raw());
    }
    log(
        Level::Debug,
        0,
        Some(s),
        &format!("Accept mutex: {accept_mutex_name}"),
    );
}

/// A server's limits on a request head: `LimitRequestLine`,
/// `LimitRequestFieldSize`, `LimitRequestFields` (0: unlimited) and
/// whether `HttpProtocolOptions Unsafe` lets lines end in a bare LF.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub line: usize,
    pub field_size: usize,
    pub fields: usize,
    pub lenient_lines: bool,
}

pub fn request_limits(s: Server) -> RequestLimits {
    let r = s.get();
    // SAFETY: every server has core's configuration (created in core's
    // create_server_config, never NULL for a parsed server); read only.
    let lenient_lines = unsafe {
        let conf = sys::ap_get_module_config(r.module_config, ptr::addr_of!(sys::core_module))
            as *const sys::core_server_config;
        !conf.is_null()
            && ((*conf).http_conformance as c_int & sys::AP_HTTP_CONFORMANCE_UNSAFE) != 0
    };
    RequestLimits {
        line: r.limit_req_line.max(0) as usize,
        field_size: r.limit_req_fieldsize.max(0) as usize,
        fields: r.limit_req_fields.max(0) as usize,
        lenient_lines,
    }
}

/// One node of httpd's configuration tree: its directive, arguments,
/// first child and next sibling.
struct Node {
    directive: String,
    args: String,
    child: *const sys::ap_directive_t,
    next: *const sys::ap_directive_t,
}

/// The tree's first node (post_config, in the parent).
fn conf_root() -> *const sys::ap_directive_t {
    // SAFETY: read once, at post_config, in the parent (single-threaded).
    unsafe { sys::ap_conftree as *const sys::ap_directive_t }
}

/// Node `d` (not null) of the tree from [`conf_root`].
fn node(d: *const sys::ap_directive_t) -> Node {
    // SAFETY: the tree lives in pconf for the whole generation; its strings
    // are NUL-terminated or null.
    unsafe {
        let n = &*d;
        Node {
            directive: c_to_string(n.directive),
            args: c_to_string(n.args),
            child: n.first_child,
            next: n.next,
        }
    }
}

/// The arguments of every `name` directive of the main server's own
/// configuration (the top level of the tree, outside `<VirtualHost>`), in
/// order. Read at post_config, in the parent.
pub fn server_directive_args(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut d = conf_root();
    while !d.is_null() {
        let n = node(d);
        if n.directive.eq_ignore_ascii_case(name) {
            out.push(n.args);
        }
        d = n.next;
    }
    out
}

/// Is the global directive `name` given with the argument `On` anywhere in
/// the configuration tree (inside `<IfModule>` and friends too)? For
/// directives of other modules whose state we cannot query, such as
/// mod_log_config's BufferedLogs.
pub fn config_flag_on(name: &str) -> bool {
    fn walk(mut d: *const sys::ap_directive_t, name: &str) -> bool {
        while !d.is_null() {
            let n = node(d);
            if n.directive.eq_ignore_ascii_case(name) && n.args.trim().eq_ignore_ascii_case("on") {
                return true;
            }
            if walk(n.child, name) {
                return true;
            }
            d = n.next;
        }
        false
    }
    walk(conf_root(), name)
}

/// Closes core's listener list in this process.
pub fn close_all_listeners() {
    // SAFETY: closes core's listener list in this process.
    unsafe { sys::ap_close_listeners() }
}
