//! Layer 1: safe wrappers over httpd and APR. They depend only on
//! [`crate::sys`] (layer 0) and std/libc, and know nothing of the MPM or of
//! ITK: handles with lifetimes ([`Pool`], [`Server`], [`Conn`], [`Request`],
//! [`Expr`]), logging through `ap_log_error` under the module registered in
//! [`module`], the panic guard every entry point runs in, and one submodule
//! per part of httpd the MPM drives:
//!
//! * [`module`]: command tables, `cmd_parms`, per-module configuration,
//!   hook registration;
//! * [`core`]: core and mod_unixd configuration, startup calls;
//! * [`retained`]: memory that survives the DSO reload on every restart;
//! * [`scoreboard`]: the shared scoreboard;
//! * [`listen`]: listener buckets, pipes of death, accept mutexes;
//! * [`child`]: a prefork child's pools, accept loop and connection
//!   processing;
//! * [`process`]: fork, signals, waiting, pidfds.
//!
//! Raw C types appear above this layer only through [`c`], and only in the
//! signatures of the `extern "C"` trampolines of `crate::module`.

use crate::sys;

pub mod child;
pub mod core;
pub mod listen;
pub mod module;
pub mod process;
pub mod retained;
pub mod scoreboard;

/// The C types an `extern "C"` trampoline's signature must name (and
/// nothing else: no functions, no constants).
pub mod c {
    pub use crate::sys::{
        ap_configfile_t, apr_finfo_t, apr_pool_t, apr_status_t, cmd_parms, module, request_rec,
        server_rec,
    };
}

use std::ffi::{CStr, CString, c_char, c_int};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

/// httpd's hook return values.
pub const OK: i32 = sys::OK;
pub const DECLINED: i32 = sys::DECLINED;
pub const DONE: i32 = sys::DONE;
pub const HTTP_INTERNAL_SERVER_ERROR: i32 = sys::HTTP_INTERNAL_SERVER_ERROR;
pub const HTTP_SERVICE_UNAVAILABLE: i32 = sys::HTTP_SERVICE_UNAVAILABLE;

/// `AP_MPMQ_*` codes the MPM answers.
pub mod mpmq {
    use crate::sys;
    pub const NOT_SUPPORTED: i32 = sys::AP_MPMQ_NOT_SUPPORTED;
    pub const DYNAMIC: i32 = sys::AP_MPMQ_DYNAMIC;
    pub const MAX_DAEMON_USED: i32 = sys::AP_MPMQ_MAX_DAEMON_USED;
    pub const IS_THREADED: i32 = sys::AP_MPMQ_IS_THREADED;
    pub const IS_FORKED: i32 = sys::AP_MPMQ_IS_FORKED;
    pub const HARD_LIMIT_DAEMONS: i32 = sys::AP_MPMQ_HARD_LIMIT_DAEMONS;
    pub const HARD_LIMIT_THREADS: i32 = sys::AP_MPMQ_HARD_LIMIT_THREADS;
    pub const MAX_THREADS: i32 = sys::AP_MPMQ_MAX_THREADS;
    pub const MIN_SPARE_DAEMONS: i32 = sys::AP_MPMQ_MIN_SPARE_DAEMONS;
    pub const MIN_SPARE_THREADS: i32 = sys::AP_MPMQ_MIN_SPARE_THREADS;
    pub const MAX_SPARE_DAEMONS: i32 = sys::AP_MPMQ_MAX_SPARE_DAEMONS;
    pub const MAX_SPARE_THREADS: i32 = sys::AP_MPMQ_MAX_SPARE_THREADS;
    pub const MAX_REQUESTS_DAEMON: i32 = sys::AP_MPMQ_MAX_REQUESTS_DAEMON;
    pub const MAX_DAEMONS: i32 = sys::AP_MPMQ_MAX_DAEMONS;
    pub const MPM_STATE: i32 = sys::AP_MPMQ_MPM_STATE;
    pub const GENERATION: i32 = sys::AP_MPMQ_GENERATION;
    pub const STARTING: i32 = sys::AP_MPMQ_STARTING;
    pub const RUNNING: i32 = sys::AP_MPMQ_RUNNING;
    pub const STOPPING: i32 = sys::AP_MPMQ_STOPPING;
}

/// Log levels, as `APLOG_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Emerg,
    Alert,
    Crit,
    Err,
    Warn,
    Notice,
    Info,
    Debug,
    /// `trace1`: per-connection detail.
    Trace1,
}

impl Level {
    fn raw(self) -> c_int {
        match self {
            Level::Emerg => sys::APLOG_EMERG,
            Level::Alert => sys::APLOG_ALERT,
            Level::Crit => sys::APLOG_CRIT,
            Level::Err => sys::APLOG_ERR,
            Level::Warn => sys::APLOG_WARNING,
            Level::Notice => sys::APLOG_NOTICE,
            Level::Info => sys::APLOG_INFO,
            Level::Debug => sys::APLOG_DEBUG,
            Level::Trace1 => sys::APLOG_TRACE1,
        }
    }
}

fn cstring_lossy(msg: &str) -> CString {
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

/// Logs through httpd's `ap_log_error` with this module's index, so
/// `LogLevel mpm_itk:debug` applies. `server` None logs to the main server
/// (or to stderr during startup, as httpd does for a NULL server).
pub fn log(level: Level, status: i32, server: Option<Server>, msg: &str) {
    log_flags(level, 0, status, server, msg);
}

/// Like [`log`], with `APLOG_STARTUP` (no timestamp prefix; printed on the
/// console during `-t` / startup).
pub fn log_startup(level: Level, msg: &str) {
    log_flags(level, sys::APLOG_STARTUP, 0, None, msg);
}

fn log_flags(level: Level, flags: c_int, status: i32, server: Option<Server>, msg: &str) {
    let text = cstring_lossy(msg);
    let s = server.map_or(std::ptr::null(), |s| s.0.as_ptr() as *const _);
    // SAFETY: ap_log_error_ is httpd's variadic logger; the format is a
    // literal "%s" consuming exactly one NUL-terminated string argument that
    // lives until the call returns; a NULL server is documented as allowed.
    unsafe {
        sys::ap_log_error_(
            c"mpm_itk".as_ptr(),
            0,
            module::this_index(),
            level.raw() | flags,
            status,
            s,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Logs against a request (`ap_log_rerror`): httpd adds the client address.
pub fn log_request(level: Level, status: i32, r: Request, msg: &str) {
    let text = cstring_lossy(msg);
    // SAFETY: as in `log_flags`; `r` is a live request_rec for this call.
    unsafe {
        sys::ap_log_rerror_(
            c"mpm_itk".as_ptr(),
            0,
            module::this_index(),
            level.raw(),
            status,
            r.0.as_ptr(),
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Runs `f` so that no panic crosses into httpd: a panic is logged (with the
/// entry point's name and the pid) and `on_panic` is returned instead.
pub fn guard<T>(entry: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    caught(entry, f).unwrap_or(on_panic)
}

/// Like [`guard`], with the value on panic computed by `on_panic` after the
/// panic is logged (e.g. to mark the connection failed); should that panic
/// too, `fallback`.
pub fn guard_with<T>(
    entry: &str,
    fallback: T,
    f: impl FnOnce() -> T,
    on_panic: impl FnOnce() -> T,
) -> T {
    caught(entry, f).unwrap_or_else(|| guard(entry, fallback, on_panic))
}

/// Runs `f`; a panic is logged and gives None.
fn caught<T>(entry: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            // Logging itself must not panic again: `log` does not.
            log(
                Level::Crit,
                0,
                None,
                &format!(
                    "internal error in {entry} (pid {}): {}",
                    std::process::id(),
                    panic_message(payload.as_ref())
                ),
            );
            None
        }
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Copies a C string owned by httpd into Rust; NULL gives "".
fn c_to_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: every caller passes a NUL-terminated string owned by an httpd
    // pool that outlives this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An APR pool owned by httpd, live for `'p`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Pool<'p>(NonNull<sys::apr_pool_t>, PhantomData<&'p sys::apr_pool_t>);

impl<'p> Pool<'p> {
    /// # Safety
    /// `p` must be NULL or a pool that stays alive for `'p`.
    pub unsafe fn from_raw(p: *mut sys::apr_pool_t) -> Option<Pool<'p>> {
        NonNull::new(p).map(|p| Pool(p, PhantomData))
    }
    fn raw(self) -> *mut sys::apr_pool_t {
        self.0.as_ptr()
    }
    /// Runs `f(data)` when the pool is cleared or destroyed (before the
    /// cleanups registered earlier, such as the DSO's unload for pconf).
    pub fn on_clear(self, f: fn(usize), data: usize) {
        /// The pair, in the pool.
        #[derive(Clone, Copy)]
        struct Job(fn(usize), usize);
        unsafe extern "C" fn run(p: *mut std::ffi::c_void) -> sys::apr_status_t {
            // SAFETY: `p` is the Job allocated below, in the pool being
            // cleared.
            let job = unsafe { *(p as *const Job) };
            guard("pool cleanup", 0, || {
                (job.0)(job.1);
                0
            })
        }
        // SAFETY: a Job (Copy, 8-byte aligned) in the pool, fully written
        // before the cleanup is registered; the function lives in this DSO,
        // which stays loaded until the cleanups registered before ours ran.
        unsafe {
            let job = sys::apr_palloc(self.raw(), size_of::<Job>()) as *mut Job;
            std::ptr::write(job, Job(f, data));
            sys::apr_pool_cleanup_register(
                self.raw(),
                job as *mut std::ffi::c_void,
                Some(run),
                Some(sys::apr_pool_cleanup_null),
            );
        }
    }
    /// Copies `s` into the pool (NUL-terminated; a NUL inside is escaped).
    pub fn strdup(self, s: &str) -> *const c_char {
        let c = cstring_lossy(s);
        // SAFETY: apr_pstrdup copies the NUL-terminated string into the
        // pool, which outlives the returned pointer's users ('p).
        unsafe { sys::apr_pstrdup(self.raw(), c.as_ptr()) }
    }
}

/// A `server_rec` (the main server or a virtual host). server_recs live in
/// pconf for a whole configuration generation.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server<'s>(NonNull<sys::server_rec>, PhantomData<&'s sys::server_rec>);

impl<'s> Server<'s> {
    /// # Safety
    /// `p` must be NULL or a server_rec that stays alive for `'s`.
    pub unsafe fn from_raw(p: *mut sys::server_rec) -> Option<Server<'s>> {
        NonNull::new(p).map(|p| Server(p, PhantomData))
    }
    fn raw(self) -> *mut sys::server_rec {
        self.0.as_ptr()
    }
    fn get(&self) -> &'s sys::server_rec {
        // SAFETY: live for 's (from_raw's contract); we only read fields
        // httpd set while parsing the configuration.
        unsafe { &*self.0.as_ptr() }
    }
    /// The main server (`ap_server_conf`) of this generation; None before
    /// httpd set it.
    pub fn main() -> Option<Server<'static>> {
        // SAFETY: reading a pointer-sized global httpd sets once per
        // configuration pass (in the single-threaded parent); the record
        // lives until pconf is cleared, which no caller outlives.
        unsafe { Server::from_raw(sys::ap_server_conf) }
    }
    /// `ServerName` of this (virtual) server.
    pub fn hostname(&self) -> String {
        c_to_string(self.get().server_hostname)
    }
    /// Is this a `<VirtualHost>` (not the main server)?
    pub fn is_virtual(&self) -> bool {
        self.get().is_virtual != 0
    }
    /// The record's identity (its address), for maps keyed by server.
    pub fn key(&self) -> usize {
        self.0.as_ptr() as usize
    }
    /// The main server and every virtual host, in configuration order.
    pub fn all(self) -> impl Iterator<Item = Server<'s>> {
        std::iter::successors(Some(self), |s| {
            // SAFETY: the server list lives in pconf like this record.
            unsafe { Server::from_raw(s.get().next) }
        })
    }
    /// `Timeout`, in seconds.
    pub fn timeout_secs(&self) -> u64 {
        (self.get().timeout.max(0) as u64).div_ceil(1_000_000)
    }
    /// `ServerName`, with `:port` if the ServerName gave one, for log lines.
    pub fn describe(&self) -> String {
        match self.get().port {
            0 => self.hostname(),
            port => format!("{}:{port}", self.hostname()),
        }
    }
}

/// A `conn_rec`, live for `'c` (its connection pool).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Conn<'c>(NonNull<sys::conn_rec>, PhantomData<&'c sys::conn_rec>);

impl<'c> Conn<'c> {
    fn get(&self) -> &'c sys::conn_rec {
        // SAFETY: the conn_rec lives in the connection pool for 'c.
        unsafe { &*self.0.as_ptr() }
    }
    /// The local port the connection came in on.
    pub fn local_port(&self) -> u16 {
        let a = self.get().local_addr;
        if a.is_null() {
            return 0;
        }
        // SAFETY: local_addr is set by core's create_connection and lives in
        // the connection pool.
        unsafe { (*a).port }
    }
    /// No keep-alive after the current response: the connection closes.
    pub fn set_close(self) {
        // SAFETY: the conn_rec is live for 'c; httpd reads `keepalive` when
        // it finishes the response, on this same thread.
        unsafe { (*self.0.as_ptr()).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE };
    }
    /// `ap_lingering_close`: flushes and shuts the connection down. The
    /// caller must not use the connection afterwards: it ends the process.
    pub fn lingering_close(self) {
        // SAFETY: the conn_rec is live; see the caller contract above.
        unsafe { sys::ap_lingering_close(self.0.as_ptr()) };
    }
}

/// A `request_rec`, live for `'r` (its request pool).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Request<'r>(NonNull<sys::request_rec>, PhantomData<&'r sys::request_rec>);

impl<'r> Request<'r> {
    /// # Safety
    /// `p` must be NULL or a request_rec that stays alive for `'r`.
    pub unsafe fn from_raw(p: *mut sys::request_rec) -> Option<Request<'r>> {
        NonNull::new(p).map(|p| Request(p, PhantomData))
    }
    fn raw(self) -> *mut sys::request_rec {
        self.0.as_ptr()
    }
    fn get(&self) -> &'r sys::request_rec {
        // SAFETY: the request_rec lives in the request pool for 'r.
        unsafe { &*self.0.as_ptr() }
    }
    /// Is this the main request (not a subrequest)?
    pub fn is_main(&self) -> bool {
        self.get().main.is_null()
    }
    /// The virtual host selected for this request.
    pub fn server(&self) -> Server<'r> {
        // SAFETY: r->server outlives the request.
        unsafe { Server::from_raw(self.get().server) }.expect("request without server")
    }
    pub fn conn(&self) -> Conn<'r> {
        let c = NonNull::new(self.get().connection).expect("request without connection");
        Conn(c, PhantomData)
    }
    pub fn uri(&self) -> String {
        c_to_string(self.get().uri)
    }
    pub fn filename(&self) -> String {
        c_to_string(self.get().filename)
    }
    /// The request's pool.
    pub fn pool(&self) -> Pool<'r> {
        // SAFETY: r->pool lives exactly as long as the request.
        unsafe { Pool::from_raw(self.get().pool) }.expect("request without pool")
    }
    /// Answers the request `421 Misdirected Request` with `text` as the
    /// whole body (`ap_custom_response`, which comes before any
    /// ErrorDocument of the vhost: nothing of it runs), and closes the
    /// connection after it. Returns the status for the hook to return.
    pub fn misdirected(self, text: &str) -> i32 {
        let t = cstring_lossy(text);
        // SAFETY: the request is live; ap_custom_response copies the text
        // into the request pool.
        unsafe { sys::ap_custom_response(self.raw(), sys::HTTP_MISDIRECTED_REQUEST, t.as_ptr()) };
        self.conn().set_close();
        sys::HTTP_MISDIRECTED_REQUEST
    }
    /// Evaluates a string expression for this request.
    pub fn eval(&self, e: Expr) -> Result<String, String> {
        let mut err: *const c_char = std::ptr::null();
        // SAFETY: the expression was parsed in pconf for this configuration;
        // the result and the error live in the request pool.
        let v = unsafe { sys::ap_expr_str_exec(self.raw(), e.0.as_ptr(), &mut err) };
        if !err.is_null() {
            return Err(c_to_string(err));
        }
        Ok(c_to_string(v))
    }
}

/// Is `status` an APR EACCES (permission denied)?
pub fn status_is_eacces(status: i32) -> bool {
    // SAFETY: pure function of an integer, defined in the C shim.
    unsafe { sys::itk_shim_status_is_eacces(status) != 0 }
}

/// A parsed string `ap_expr` (owned by pconf; a configuration generation).
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Expr(NonNull<sys::ap_expr_info_t>);
