//! What any httpd module needs, for any module: the module whose index
//! logging uses, command tables and what a directive handler sees of
//! `cmd_parms`, per-module configuration created and merged in httpd's
//! pools, and hook registration. Nothing here names a function of ours: the
//! module record and its entry points live in `crate::module`.

use super::{Expr, Pool, Request, Server, c_to_string, guard, log_startup};
use crate::sys;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

// ---------------------------------------------------------------------------
// This module
// ---------------------------------------------------------------------------

/// The module record httpd loaded (set by `register_hooks`, which httpd
/// calls first, on every load of the DSO).
static THIS: AtomicPtr<sys::module> = AtomicPtr::new(ptr::null_mut());

/// Records `m` as the module this DSO is: its index is used for logging
/// (`LogLevel mpm_itk:debug`) and for the configuration vectors.
pub fn set_this_module(m: *mut sys::module) {
    THIS.store(m, Ordering::Relaxed);
}

/// The module's index, or -1 (APLOG_NO_MODULE) before it is known.
pub fn this_index() -> c_int {
    let m = THIS.load(Ordering::Relaxed);
    if m.is_null() {
        return -1;
    }
    // SAFETY: `m` is the module record (a static of this DSO); the index is
    // a plain field httpd wrote when it added the module.
    unsafe { (*m).module_index }
}

fn this_module() -> *const sys::module {
    THIS.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Command table
// ---------------------------------------------------------------------------

pub type Take1 =
    unsafe extern "C" fn(*mut sys::cmd_parms, *mut c_void, *const c_char) -> *const c_char;
pub type Take2 = unsafe extern "C" fn(
    *mut sys::cmd_parms,
    *mut c_void,
    *const c_char,
    *const c_char,
) -> *const c_char;
pub type TakeArgv = unsafe extern "C" fn(
    *mut sys::cmd_parms,
    *mut c_void,
    c_int,
    *const *mut c_char,
) -> *const c_char;

/// Where a directive may appear (`req_override`).
pub const RSRC_CONF: c_int = sys::RSRC_CONF;
pub const RSRC_ACCESS_CONF: c_int = sys::RSRC_CONF | sys::ACCESS_CONF;

/// One `command_rec`, built only by the constructors below, so it points
/// only at 'static strings and functions.
#[repr(transparent)]
pub struct Command(sys::command_rec);

impl Command {
    const fn new(
        name: &'static CStr,
        func: sys::cmd_func,
        how: c_int,
        args: sys::cmd_how,
        help: &'static CStr,
    ) -> Command {
        Command(sys::command_rec {
            name: name.as_ptr(),
            func,
            cmd_data: ptr::null_mut(),
            req_override: how,
            args_how: args,
            errmsg: help.as_ptr(),
        })
    }
    pub const fn take1(name: &'static CStr, f: Take1, how: c_int, help: &'static CStr) -> Self {
        Command::new(
            name,
            sys::cmd_func { take1: Some(f) },
            how,
            sys::cmd_how_TAKE1,
            help,
        )
    }
    pub const fn raw_args(name: &'static CStr, f: Take1, how: c_int, help: &'static CStr) -> Self {
        let func = sys::cmd_func { raw_args: Some(f) };
        Command::new(name, func, how, sys::cmd_how_RAW_ARGS, help)
    }
    pub const fn take2(name: &'static CStr, f: Take2, how: c_int, help: &'static CStr) -> Self {
        Command::new(
            name,
            sys::cmd_func { take2: Some(f) },
            how,
            sys::cmd_how_TAKE2,
            help,
        )
    }
    pub const fn take_argv(
        name: &'static CStr,
        f: TakeArgv,
        how: c_int,
        help: &'static CStr,
    ) -> Self {
        let func = sys::cmd_func { take_argv: Some(f) };
        Command::new(name, func, how, sys::cmd_how_TAKE_ARGV, help)
    }
    /// The entry with a NULL name that ends every table.
    pub const fn end() -> Self {
        Command(sys::command_rec {
            name: ptr::null(),
            func: sys::cmd_func { no_args: None },
            cmd_data: ptr::null_mut(),
            req_override: 0,
            args_how: 0,
            errmsg: ptr::null(),
        })
    }

    // httpd's LISTEN_COMMANDS and the other core handlers every MPM
    // carries in its own table.
    pub const LISTEN_BACKLOG: Take1 = sys::ap_set_listenbacklog;
    pub const LISTEN_CORES_BUCKETS_RATIO: Take1 = sys::ap_set_listencbratio;
    pub const LISTEN: TakeArgv = sys::ap_set_listener;
    pub const SEND_BUFFER_SIZE: Take1 = sys::ap_set_send_buffer_size;
    pub const RECEIVE_BUFFER_SIZE: Take1 = sys::ap_set_receive_buffer_size;
    pub const LISTEN_TCP_DEFER_ACCEPT: Take1 = sys::ap_set_listentcpdeferaccept;
    pub const GRACEFUL_SHUTDOWN_TIMEOUT: Take1 = sys::ap_mpm_set_graceful_shutdown;
}

/// A command table httpd walks up to [`Command::end`].
#[repr(transparent)]
pub struct CommandTable<const N: usize>([Command; N]);

// SAFETY: a table of `Command`s, which point only at 'static C string
// literals and functions (their constructors guarantee it); httpd only reads
// it.
unsafe impl<const N: usize> Sync for CommandTable<N> {}

impl<const N: usize> CommandTable<N> {
    /// Panics (at compile time, in a static) unless the last entry ends the
    /// table.
    pub const fn new(cmds: [Command; N]) -> Self {
        assert!(
            N > 0 && cmds[N - 1].0.name.is_null(),
            "the table must end with Command::end()"
        );
        CommandTable(cmds)
    }
    pub const fn as_ptr(&'static self) -> *const sys::command_rec {
        &self.0 as *const [Command; N] as *const sys::command_rec
    }
}

/// The successor list "run before core" for hooks.
struct CStrList<const N: usize>([*const c_char; N]);
// SAFETY: NULL-terminated list of 'static C string literals, read only.
unsafe impl<const N: usize> Sync for CStrList<N> {}
static BEFORE_CORE: CStrList<2> = CStrList([c"core.c".as_ptr(), ptr::null()]);

// ---------------------------------------------------------------------------
// Directive handlers
// ---------------------------------------------------------------------------

/// Where a directive must not appear (`ap_check_cmd_context`).
#[derive(Clone, Copy, Debug)]
pub enum Forbid {
    /// Anywhere but the main server's top level.
    NotGlobal,
    /// In `.htaccess`.
    Htaccess,
}

/// What a directive handler sees of `cmd_parms`, and this module's per-dir
/// configuration of the section being read.
pub struct Cmd<'a> {
    parms: NonNull<sys::cmd_parms>,
    mconfig: *mut c_void,
    _life: PhantomData<&'a sys::cmd_parms>,
}

impl<'a> Cmd<'a> {
    fn get(&self) -> &'a sys::cmd_parms {
        // SAFETY: cmd_parms lives for the duration of the directive call,
        // which outlives this value (see `directive`).
        unsafe { &*self.parms.as_ptr() }
    }
    /// The directive's name as written in the table.
    pub fn name(&self) -> String {
        // SAFETY: cmd->cmd points at the command table entry being run.
        c_to_string(unsafe { (*self.get().cmd).name })
    }
    pub fn pool(&self) -> Pool<'a> {
        // SAFETY: cmd->pool is pconf, which outlives the directive call.
        unsafe { Pool::from_raw(self.get().pool) }.expect("cmd pool")
    }
    /// The server (main or `<VirtualHost>`) being configured.
    pub fn server(&self) -> Server<'a> {
        // SAFETY: cmd->server lives in pconf.
        unsafe { Server::from_raw(self.get().server) }.expect("cmd server")
    }
    /// Err(httpd's message) if the directive appears where `forbid` says
    /// it may not.
    pub fn check(&self, forbid: Forbid) -> Result<(), String> {
        let mask = match forbid {
            Forbid::NotGlobal => sys::GLOBAL_ONLY,
            Forbid::Htaccess => sys::NOT_IN_HTACCESS,
        };
        // SAFETY: plain httpd check on a live cmd_parms.
        let e = unsafe { sys::ap_check_cmd_context(self.parms.as_ptr(), mask as u32) };
        if e.is_null() {
            Ok(())
        } else {
            Err(c_to_string(e))
        }
    }
    /// Is the directive inside a section (`<Directory>`, `<Location>`,
    /// `<Files>`, `<If>`, `<Proxy>`...)? Those set `cmd->path`.
    pub fn in_section(&self) -> bool {
        !self.get().path.is_null()
    }
    /// "file:line" of the directive.
    pub fn location(&self) -> String {
        let d = self.get().directive;
        if d.is_null() {
            return "(unknown)".into();
        }
        // SAFETY: the directive tree lives in pconf.
        unsafe { format!("{}:{}", c_to_string((*d).filename), (*d).line_num) }
    }
    /// Parses `text` as a string-valued `ap_expr` into pconf.
    pub fn parse_string_expr(&self, text: &str) -> Result<Expr, String> {
        let t = super::cstring_lossy(text);
        let mut err: *const c_char = ptr::null();
        // SAFETY: parses a NUL-terminated string into pconf (httpd copies
        // what it keeps); err is an out-parameter.
        let e = unsafe {
            sys::ap_expr_parse_cmd_mi(
                self.parms.as_ptr(),
                t.as_ptr(),
                sys::AP_EXPR_FLAG_STRING_RESULT as u32,
                &mut err,
                None,
                sys::AP_CORE_MODULE_INDEX,
            )
        };
        if !err.is_null() {
            return Err(c_to_string(err));
        }
        NonNull::new(e)
            .map(Expr)
            .ok_or_else(|| "cannot parse expression".into())
    }
    /// This module's per-dir configuration of the section being read.
    pub fn dir_config<D, S>(&mut self, _: &PerModule<D, S>) -> &mut D {
        // SAFETY: for a directive of this module httpd passes the per-dir
        // configuration its create_dir_config made for the section being
        // read; PerModule's contract says that is a D. `&mut self` keeps
        // the borrow unique.
        unsafe { &mut *(self.mconfig as *mut D) }
    }
}

/// Runs a directive handler's safe body `f` for the raw `cmd`/`mconfig` of
/// an `extern "C"` handler: a panic becomes a directive error, an `Err` is
/// copied into the command's pool for httpd to print with file and line.
///
/// # Safety
/// `cmd` and `mconfig` must be what httpd passed to a handler of this
/// module's command table.
pub unsafe fn directive(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    f: impl FnOnce(&mut Cmd) -> Result<(), String>,
) -> *const c_char {
    let mut c = Cmd {
        parms: NonNull::new(cmd).expect("NULL cmd_parms"),
        mconfig,
        _life: PhantomData,
    };
    let r = guard(
        "directive handler",
        Err("internal error (see the error log)".into()),
        || f(&mut c),
    );
    match r {
        Ok(()) => ptr::null(),
        Err(e) => c.pool().strdup(&e),
    }
}

/// A directive argument as httpd passed it (NULL gives "").
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string live for this call.
pub unsafe fn arg(p: *const c_char) -> String {
    c_to_string(p)
}

/// Logs a configuration warning on the console (APLOG_STARTUP).
pub fn config_warning(msg: &str) {
    log_startup(super::Level::Warn, msg);
}

// ---------------------------------------------------------------------------
// Per-module configuration
// ---------------------------------------------------------------------------

/// How a per-dir configuration inherits: the innermost section wins.
pub trait MergeDir {
    fn merge(parent: &Self, child: &Self) -> Self;
}

/// The typed per-dir (`D`) and per-server (`S`) configuration of this
/// module, allocated in httpd's pools by the `create_*`/`merge_dir`
/// functions below, which the module record names.
pub struct PerModule<D, S>(PhantomData<fn() -> (D, S)>);

impl<D: Copy + Default + MergeDir + 'static, S: Copy + Default + 'static> PerModule<D, S> {
    /// # Safety
    /// The record given to [`set_this_module`] must name this type's
    /// [`Self::create_dir`], [`Self::merge_dir`] and [`Self::create_server`]
    /// (and no other configuration functions), so every configuration
    /// vector entry of the module is a `D` or an `S`. One such value per
    /// module.
    pub const unsafe fn new() -> Self {
        PerModule(PhantomData)
    }

    fn server_ptr(&self, s: Server) -> *mut S {
        // SAFETY: every server_rec has this module's S (create_server runs
        // for the main server and each vhost, see `new`); the vector lives
        // in pconf.
        unsafe { sys::ap_get_module_config((*s.raw()).module_config, this_module()) as *mut S }
    }

    /// This server's (vhost's) configuration.
    pub fn server(&self, s: Server) -> S {
        // SAFETY: see server_ptr; the value is Copy.
        unsafe { *self.server_ptr(s) }
    }

    /// Changes this server's configuration (while the configuration is read).
    pub fn update_server(&self, s: Server, f: impl FnOnce(&mut S)) {
        // SAFETY: see server_ptr; the configuration is read by one thread,
        // and no reference outlives `f`.
        f(unsafe { &mut *self.server_ptr(s) })
    }

    /// The server's own per-dir configuration (`lookup_defaults`: what its
    /// top level says, before any section); None if it is missing.
    pub fn server_dir(&self, s: Server) -> Option<D> {
        // SAFETY: lookup_defaults holds this module's D (made by create_dir
        // for the server's top level, merged with the main server's); the
        // vector lives in pconf; NULL is checked.
        unsafe {
            let p =
                sys::ap_get_module_config((*s.raw()).lookup_defaults, this_module()) as *const D;
            p.as_ref().copied()
        }
    }

    /// The merged per-dir configuration of a request; None if it is missing.
    pub fn request_dir(&self, r: Request) -> Option<D> {
        // SAFETY: per_dir_config holds this module's D after the per-dir
        // merge (or NULL, checked).
        unsafe {
            let p = sys::ap_get_module_config((*r.raw()).per_dir_config, this_module()) as *const D;
            p.as_ref().copied()
        }
    }

    fn palloc<T: Copy>(p: *mut sys::apr_pool_t, v: T) -> *mut c_void {
        // SAFETY: apr_palloc returns pool memory aligned for any type (APR
        // aligns to 8 bytes; `new`'s types are plain data), fully written
        // before it is returned; T is Copy, so no destructor is ever skipped.
        unsafe {
            assert!(align_of::<T>() <= 8);
            let m = sys::apr_palloc(p, size_of::<T>()) as *mut T;
            ptr::write(m, v);
            m as *mut c_void
        }
    }

    /// `create_dir_config`.
    ///
    /// # Safety
    /// Called by httpd with a live pool.
    pub unsafe extern "C" fn create_dir(p: *mut sys::apr_pool_t, _dir: *mut c_char) -> *mut c_void {
        guard("create_dir_config", ptr::null_mut(), || {
            Self::palloc(p, D::default())
        })
    }

    /// `merge_dir_config`.
    ///
    /// # Safety
    /// Called by httpd with two configurations `create_dir`/`merge_dir` made.
    pub unsafe extern "C" fn merge_dir(
        p: *mut sys::apr_pool_t,
        base: *mut c_void,
        new: *mut c_void,
    ) -> *mut c_void {
        guard("merge_dir_config", ptr::null_mut(), || {
            // SAFETY: both are D's, made by create_dir/merge_dir.
            let (b, n) = unsafe { (*(base as *const D), *(new as *const D)) };
            Self::palloc(p, D::merge(&b, &n))
        })
    }

    /// `create_server_config`.
    ///
    /// # Safety
    /// Called by httpd with a live pool.
    pub unsafe extern "C" fn create_server(
        p: *mut sys::apr_pool_t,
        _s: *mut sys::server_rec,
    ) -> *mut c_void {
        guard("create_server_config", ptr::null_mut(), || {
            Self::palloc(p, S::default())
        })
    }
}

// ---------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------

/// Where a hook runs among the others (`APR_HOOK_*`).
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// Before the hooks that other modules register REALLY_FIRST
    /// (mod_security2's request_early, mod_log_forensic).
    BeforeReallyFirst,
    ReallyFirst,
    Middle,
}

impl Order {
    fn raw(self) -> c_int {
        match self {
            Order::ReallyFirst => sys::APR_HOOK_REALLY_FIRST,
            Order::BeforeReallyFirst => sys::APR_HOOK_REALLY_FIRST - 10,
            Order::Middle => sys::APR_HOOK_MIDDLE,
        }
    }
}

macro_rules! hook {
    ($(#[$doc:meta])* $name:ident, $reg:ident, $ty:ident) => {
        $(#[$doc])*
        pub fn $name(f: sys::$ty, order: Order) {
            // SAFETY: registers a function of this DSO; httpd drops the
            // registrations before it unloads the DSO.
            unsafe { sys::$reg(f, ptr::null(), ptr::null(), order.raw()) }
        }
    };
}

hook!(pre_config, ap_hook_pre_config, ap_HOOK_pre_config_t);
hook!(check_config, ap_hook_check_config, ap_HOOK_check_config_t);
hook!(post_config, ap_hook_post_config, ap_HOOK_post_config_t);
hook!(mpm, ap_hook_mpm, ap_HOOK_mpm_t);
hook!(mpm_query, ap_hook_mpm_query, ap_HOOK_mpm_query_t);
hook!(mpm_get_name, ap_hook_mpm_get_name, ap_HOOK_mpm_get_name_t);
hook!(
    post_perdir_config,
    ap_hook_post_perdir_config,
    ap_HOOK_post_perdir_config_t
);
hook!(
    post_read_request,
    ap_hook_post_read_request,
    ap_HOOK_post_read_request_t
);
hook!(dirwalk_stat, ap_hook_dirwalk_stat, ap_HOOK_dirwalk_stat_t);
hook!(
    open_htaccess,
    ap_hook_open_htaccess,
    ap_HOOK_open_htaccess_t
);

/// `open_logs`, before core's own.
pub fn open_logs_before_core(f: sys::ap_HOOK_open_logs_t, order: Order) {
    // SAFETY: as `hook!`; the successor list is 'static and NULL-terminated.
    unsafe { sys::ap_hook_open_logs(f, ptr::null(), BEFORE_CORE.0.as_ptr(), order.raw()) }
}

/// Writes an `mpm_query` answer: the value, or APR_ENOTIMPL.
///
/// # Safety
/// `result` and `rv` must be the out-pointers httpd passed to the hook.
pub unsafe fn answer_mpm_query(result: *mut c_int, rv: *mut sys::apr_status_t, v: Option<i32>) {
    // SAFETY: as the caller guarantees.
    unsafe {
        match v {
            Some(v) => {
                *result = v;
                *rv = 0;
            }
            None => *rv = sys::APR_ENOTIMPL,
        }
    }
}

/// Core's own `dirwalk_stat`: stats `r->filename` into `finfo`.
///
/// # Safety
/// The arguments must be those httpd passed to a dirwalk_stat hook.
pub unsafe fn core_dirwalk_stat(
    finfo: *mut sys::apr_finfo_t,
    r: *mut sys::request_rec,
    wanted: i32,
) -> sys::apr_status_t {
    // SAFETY: as the caller guarantees; the result lives in the request pool.
    unsafe { sys::apr_stat(finfo, (*r).filename, wanted, (*r).pool) }
}

/// Core's own `open_htaccess`: builds the path in the request pool and
/// opens it. Returns the status and the path.
///
/// # Safety
/// The arguments must be those httpd passed to an open_htaccess hook, and
/// the returned path (in the request's pool) must not be used after the
/// hook returns (`'r` ends with it).
pub unsafe fn core_open_htaccess<'r>(
    r: *mut sys::request_rec,
    dir_name: *const c_char,
    access_name: *const c_char,
    conffile: *mut *mut sys::ap_configfile_t,
    full_name: *mut *const c_char,
) -> (sys::apr_status_t, &'r CStr) {
    // SAFETY: as the caller guarantees: live request, out-pointers from httpd;
    // the full path is a NUL-terminated string in the request's pool
    // (ap_make_full_path never returns NULL), which outlives the caller's
    // use ('r).
    unsafe {
        *full_name = sys::ap_make_full_path((*r).pool, dir_name, access_name);
        let status = sys::ap_pcfg_openfile(conffile, (*r).pool, *full_name);
        (status, CStr::from_ptr(*full_name))
    }
}

/// The value `open_htaccess` returns to let the next hook (core) do it.
pub const AP_DECLINED: sys::apr_status_t = sys::AP_DECLINED;

/// Builds the module record httpd looks up by symbol name.
pub const fn module_record(
    name: &'static CStr,
    create_dir: unsafe extern "C" fn(*mut sys::apr_pool_t, *mut c_char) -> *mut c_void,
    merge_dir: unsafe extern "C" fn(*mut sys::apr_pool_t, *mut c_void, *mut c_void) -> *mut c_void,
    create_server: unsafe extern "C" fn(*mut sys::apr_pool_t, *mut sys::server_rec) -> *mut c_void,
    cmds: *const sys::command_rec,
    register_hooks: unsafe extern "C" fn(*mut sys::apr_pool_t),
) -> sys::module {
    sys::module {
        version: sys::MODULE_MAGIC_NUMBER_MAJOR,
        minor_version: sys::MODULE_MAGIC_NUMBER_MINOR,
        module_index: -1,
        name: name.as_ptr(),
        dynamic_load_handle: ptr::null_mut(),
        next: ptr::null_mut(),
        magic: sys::MODULE_MAGIC_COOKIE as _,
        rewrite_args: None,
        create_dir_config: Some(create_dir),
        merge_dir_config: Some(merge_dir),
        create_server_config: Some(create_server),
        merge_server_config: None,
        cmds,
        register_hooks: Some(register_hooks),
        flags: 0,
    }
}
