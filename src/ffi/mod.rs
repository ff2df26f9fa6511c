//! The only place that touches httpd's raw C API.
//!
//! Layering (after ngx-rust): `sys` holds what bindgen generated from the
//! installed headers and is private; this module and its children expose thin
//! `#[repr(transparent)]` wrappers over `NonNull` ([`Pool`], [`Server`],
//! [`Conn`], [`Request`]) and small safe functions for every httpd call the
//! MPM makes. [`module`] owns the module record, the command table and every
//! `extern "C"` entry point; each one is a trampoline that runs the safe Rust
//! function inside [`guard`], so no panic ever unwinds into httpd.

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unnecessary_transmutes,
    improper_ctypes,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    unsafe_op_in_unsafe_fn
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub mod httpd;
pub mod module;

use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

/// httpd's hook return values.
pub const OK: i32 = sys::OK;
pub const DECLINED: i32 = sys::DECLINED;
pub const DONE: i32 = sys::DONE;
pub const HTTP_INTERNAL_SERVER_ERROR: i32 = sys::HTTP_INTERNAL_SERVER_ERROR;
pub const HTTP_SERVICE_UNAVAILABLE: i32 = sys::HTTP_SERVICE_UNAVAILABLE;

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
            module::module_index(),
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
            module::module_index(),
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

/// An APR pool owned by httpd.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Pool(NonNull<sys::apr_pool_t>);

impl Pool {
    fn from_raw(p: *mut sys::apr_pool_t) -> Option<Pool> {
        NonNull::new(p).map(Pool)
    }
    fn raw(self) -> *mut sys::apr_pool_t {
        self.0.as_ptr()
    }
    /// Copies `s` into the pool (for strings httpd keeps, such as directive
    /// error messages).
    pub fn strdup(self, s: &str) -> *const c_char {
        let c = cstring_lossy(s);
        // SAFETY: apr_pstrdup copies the NUL-terminated string into pool
        // memory that lives as long as the pool.
        unsafe { sys::apr_pstrdup(self.raw(), c.as_ptr()) }
    }
}

/// A `server_rec` (the main server or a virtual host).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server(NonNull<sys::server_rec>);

impl Server {
    fn from_raw(p: *mut sys::server_rec) -> Option<Server> {
        NonNull::new(p).map(Server)
    }
    fn get(&self) -> &sys::server_rec {
        // SAFETY: server_recs live in pconf for the whole generation, and we
        // only read fields httpd set while parsing the configuration.
        unsafe { self.0.as_ref() }
    }
    /// The main server (`ap_server_conf`); None before httpd set it.
    pub fn main() -> Option<Server> {
        // SAFETY: reading a pointer-sized global httpd sets once per
        // configuration pass; the process is single-threaded.
        Server::from_raw(unsafe { sys::ap_server_conf })
    }
    /// `ServerName` of this (virtual) server.
    pub fn hostname(&self) -> String {
        c_to_string(self.get().server_hostname)
    }
    /// Is this a `<VirtualHost>` (not the main server)?
    pub fn is_virtual(&self) -> bool {
        self.get().is_virtual != 0
    }
}

/// A `conn_rec`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Conn(NonNull<sys::conn_rec>);

impl Conn {
    fn get(&self) -> &sys::conn_rec {
        // SAFETY: the conn_rec lives in the connection pool for the whole
        // connection, which outlives every hook call that hands it out.
        unsafe { self.0.as_ref() }
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
        // SAFETY: the conn_rec is live for the connection; httpd reads
        // `keepalive` when it finishes the response.
        unsafe { (*self.0.as_ptr()).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE };
    }
    /// Does the lingering close now and ends this connection child: the
    /// connection is closed without an answer (SPEC §3.3).
    pub fn close_and_exit(self) -> ! {
        // SAFETY: the conn_rec is live; ap_lingering_close flushes and shuts
        // the socket down; nothing uses the connection afterwards because
        // the process exits.
        unsafe { sys::ap_lingering_close(self.0.as_ptr()) };
        httpd::connection_child_exit(0)
    }
}

/// A `request_rec`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Request(NonNull<sys::request_rec>);

impl Request {
    fn from_raw(p: *mut sys::request_rec) -> Option<Request> {
        NonNull::new(p).map(Request)
    }
    fn get(&self) -> &sys::request_rec {
        // SAFETY: the request_rec lives in the request pool, which outlives
        // the hook call that handed it to us.
        unsafe { self.0.as_ref() }
    }
    /// Is this the main request (not a subrequest)?
    pub fn is_main(&self) -> bool {
        self.get().main.is_null()
    }
    /// The virtual host selected for this request.
    pub fn server(&self) -> Server {
        Server::from_raw(self.get().server).expect("request without server")
    }
    pub fn conn(&self) -> Conn {
        Conn(NonNull::new(self.get().connection).expect("request without connection"))
    }
    pub fn uri(&self) -> String {
        c_to_string(self.get().uri)
    }
    /// The request's pool (for cleanups of the layer below).
    fn pool_raw(&self) -> *mut sys::apr_pool_t {
        self.get().pool
    }
    pub fn filename(&self) -> String {
        c_to_string(self.get().filename)
    }
}

/// Is `status` an APR EACCES (permission denied)?
pub fn status_is_eacces(status: i32) -> bool {
    // SAFETY: pure function of an integer, defined in the C shim.
    unsafe { sys::itk_shim_status_is_eacces(status) != 0 }
}

/// A parsed `ap_expr` (AssignUserIDExpr / AssignGroupIDExpr), owned by pconf.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct Expr(NonNull<sys::ap_expr_info_t>);

impl Request {
    /// Evaluates a string expression for this request.
    pub fn eval(&self, e: Expr) -> Result<String, String> {
        let mut err: *const c_char = std::ptr::null();
        // SAFETY: the expression was parsed in pconf for this configuration;
        // the result and the error live in the request pool.
        let v = unsafe { sys::ap_expr_str_exec(self.0.as_ptr(), e.0.as_ptr(), &mut err) };
        if !err.is_null() {
            return Err(c_to_string(err));
        }
        Ok(c_to_string(v))
    }
}
