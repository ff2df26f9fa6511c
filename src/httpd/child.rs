//! A prefork child's own side (prefork's child_main): its pools, its
//! bucket's listeners and accept mutex, the accept loop, the connection
//! run with httpd's own connection processing, its signal handlers and its
//! end.

use super::listen::{self, buckets};
use super::process::{self, AP_SIG_GRACEFUL, AP_SIG_GRACEFUL_STOP, Handler, set_handler};
use super::retained::Unixd;
use super::{Level, Request, Server, c_to_string, log};
use crate::sys;
use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};

/// Set in a worker by SIGUSR1 (graceful): finish the current connection,
/// then exit (prefork's `die_now`).
static DIE_NOW: AtomicBool = AtomicBool::new(false);
/// Pid of a child this child waits for (0 if none): it goes with us on an
/// ungraceful stop.
static HELPER: AtomicI32 = AtomicI32::new(0);
/// Buckets index of this worker (for stop_listening from the handler).
static MY_BUCKET: AtomicI32 = AtomicI32::new(0);

pub fn die_now() -> bool {
    DIE_NOW.load(Ordering::SeqCst)
}
pub fn set_die_now() {
    DIE_NOW.store(true, Ordering::SeqCst)
}

extern "C" fn worker_just_die(_sig: c_int) {
    // Ungraceful stop/restart: the child we wait for goes with us.
    process::kill(HELPER.load(Ordering::SeqCst), libc::SIGTERM);
    // _exit is async-signal-safe. The worker holds nothing that needs
    // flushing: it never runs request code itself.
    process::exit_now(0)
}

extern "C" fn worker_stop_listening(_sig: c_int) {
    // prefork's stop_listening: close our listeners so the kernel stops
    // queueing connections for us, and exit once the current one is done.
    if let Some(u) = Unixd::cached() {
        u.set_mpm_state(sys::AP_MPMQ_STOPPING);
    }
    listen::close_listeners_from_signal(MY_BUCKET.load(Ordering::SeqCst) as usize);
    DIE_NOW.store(true, Ordering::SeqCst);
}

/// Waits for `pid`, a child of this child, which an ungraceful stop takes
/// down with us meanwhile.
pub fn wait_helper(pid: i32) -> std::io::Result<process::ChildEnd> {
    HELPER.store(pid, Ordering::SeqCst);
    let r = process::wait_child(pid);
    HELPER.store(0, Ordering::SeqCst);
    r
}

/// make_child's signal setup for a worker.
pub fn set_worker_signals() {
    set_handler(libc::SIGHUP, Handler::Run(worker_just_die));
    set_handler(libc::SIGTERM, Handler::Run(worker_just_die));
    set_handler(libc::SIGINT, Handler::Ignore);
    set_handler(AP_SIG_GRACEFUL, Handler::Run(worker_stop_listening));
}

/// Set while a user process serves a connection.
static SERVING: AtomicBool = AtomicBool::new(false);
/// Set in a user process by stop or restart (not graceful): it ends without
/// waiting for anything.
static STOP_NOW: AtomicBool = AtomicBool::new(false);

/// Did stop or restart (not graceful) reach this user process?
pub fn stop_now() -> bool {
    STOP_NOW.load(Ordering::SeqCst)
}

/// A user process (UserPools) serves a connection (true) or waits for one.
pub fn set_serving(on: bool) {
    SERVING.store(on, Ordering::SeqCst);
}

extern "C" fn pool_process_graceful(_sig: c_int) {
    // Finish the current request, then exit: STOPPING ends a keep-alive
    // connection after it (httpd asks the MPM's state), and the wait for
    // the next connection sees the flag.
    if let Some(u) = Unixd::cached() {
        u.set_mpm_state(sys::AP_MPMQ_STOPPING);
    }
    DIE_NOW.store(true, Ordering::SeqCst);
}

extern "C" fn pool_process_just_die(_sig: c_int) {
    // Stop or restart: as prefork's just_die, which ends the child through
    // clean_child_exit at once (its cleanups flush BufferedLogs), also in
    // the middle of a connection. Between connections, the wait is
    // interrupted and the loop ends the same way outside the handler.
    STOP_NOW.store(true, Ordering::SeqCst);
    DIE_NOW.store(true, Ordering::SeqCst);
    if SERVING.load(Ordering::SeqCst) {
        end(0, true)
    }
}

/// Signal setup for a user process (UserPools), as prefork's child:
/// stop and restart end it now, graceful after its current connection.
pub fn set_pool_process_signals() {
    set_handler(libc::SIGTERM, Handler::Run(pool_process_just_die));
    set_handler(libc::SIGHUP, Handler::Run(pool_process_just_die));
    set_handler(AP_SIG_GRACEFUL, Handler::Run(pool_process_graceful));
    set_handler(libc::SIGINT, Handler::Ignore);
    set_handler(AP_SIG_GRACEFUL_STOP, Handler::Ignore);
}

/// Signal setup for a process that serves one connection to its end:
/// stop/restart kill it (default action); a graceful signal lets it finish.
pub fn set_finish_connection_signals() {
    set_handler(libc::SIGHUP, Handler::Default);
    set_handler(libc::SIGTERM, Handler::Default);
    set_handler(libc::SIGINT, Handler::Ignore);
    set_handler(AP_SIG_GRACEFUL, Handler::Ignore);
    set_handler(AP_SIG_GRACEFUL_STOP, Handler::Ignore);
}

/// Everything a worker process holds: prefork's child_main locals.
pub struct Child {
    slot: usize,
    bucket: usize,
    pchild: *mut sys::apr_pool_t,
    ptrans: *mut sys::apr_pool_t,
    pollset: *mut sys::apr_pollset_t,
    sbh: *mut sys::ap_sb_handle_t,
    bucket_alloc: *mut sys::apr_bucket_alloc_t,
    num_listeners: usize,
    last_poll_idx: usize,
}

/// A zeroed `T` in pool `p` (`apr_pcalloc`, a macro in C).
///
/// # Safety
/// `p` must be a live pool; all-zero must be a valid `T` (plain C records).
unsafe fn pcalloc<T>(p: *mut sys::apr_pool_t) -> *mut T {
    // SAFETY: as the caller guarantees; APR aligns to 8 bytes.
    unsafe {
        let m = sys::apr_palloc(p, size_of::<T>()) as *mut T;
        ptr::write_bytes(m, 0, 1);
        m
    }
}

/// What [`Child::route_sni`] looks for and finds.
struct SniBaton {
    name: *const std::ffi::c_char,
    found: *mut sys::server_rec,
}

/// Whether the name at `names` (an APR array of C strings, or null) has
/// an entry `matches` accepts.
///
/// # Safety
/// `names` is null or a live APR array of `char *` (null entries allowed).
unsafe fn any_name(
    names: *mut sys::apr_array_header_t,
    matches: impl Fn(*const std::ffi::c_char) -> bool,
) -> bool {
    if names.is_null() {
        return false;
    }
    // SAFETY: as the caller guarantees: nelts entries of char *.
    unsafe {
        let elts = (*names).elts as *const *const std::ffi::c_char;
        (0..(*names).nelts.max(0) as usize)
            .map(|i| *elts.add(i))
            .any(|n| !n.is_null() && matches(n))
    }
}

/// `ap_vhost_iterate_given_conn` callback: mod_ssl's
/// `ssl_util_vhost_matches` (ServerName, then ServerAlias exact, then
/// wildcard ServerAlias with `ap_strcasecmp_match`); stops at the first
/// match. Does nothing that can panic.
extern "C" fn sni_matches(
    baton: *mut c_void,
    _c: *mut sys::conn_rec,
    s: *mut sys::server_rec,
) -> c_int {
    // SAFETY: baton is the SniBaton route_sni passed; s a live server
    // record of httpd's configuration, whose name fields are C strings or
    // null and whose alias arrays hold C strings.
    unsafe {
        let b = &mut *(baton as *mut SniBaton);
        if s.is_null() {
            return 0;
        }
        let host = (*s).server_hostname;
        let found = (!host.is_null() && libc::strcasecmp(b.name, host) == 0)
            || any_name((*s).names, |n| libc::strcasecmp(b.name, n) == 0)
            || any_name((*s).wild_names, |n| {
                sys::ap_strcasecmp_match(b.name, n) == 0
            });
        if found {
            b.found = s;
            1
        } else {
            0
        }
    }
}

/// An accepted connection socket (lives in the worker's ptrans), and
/// whether its listener's protocol is `https` (`Listen 443`, or `Listen
/// 8443 https`).
pub struct Accepted(*mut c_void, bool);

impl Accepted {
    /// Was it accepted on a listener whose protocol is `https`?
    pub fn on_https_listener(&self) -> bool {
        self.1
    }

    /// The socket's descriptor (still owned by the APR socket).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        let mut fd: sys::apr_os_sock_t = -1;
        // SAFETY: reads the descriptor of a live APR socket into a local.
        unsafe { sys::apr_os_sock_get(&mut fd, self.0 as *mut sys::apr_socket_t) };
        fd
    }
}

/// What a request names as its host, for [`Child::route`].
pub struct HostName<'a> {
    /// Lower-cased, without port or IPv6 brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// From an absolute-form request target (which overrides Host).
    pub from_uri: bool,
}

/// Logging off (emerg only) for the request record [`Child::route`] makes:
/// httpd's vhost code logs at debug level, which needs a full request.
static QUIET: SyncLogConf = SyncLogConf(sys::ap_logconf {
    module_levels: ptr::null_mut(),
    level: sys::APLOG_EMERG,
});
struct SyncLogConf(sys::ap_logconf);
// SAFETY: read-only, no pointer to anything.
unsafe impl Sync for SyncLogConf {}

/// Outcome of waiting for and accepting a connection.
pub enum AcceptOutcome {
    Got(Accepted),
    /// Transient failure or interrupted: try again.
    Retry,
    /// Resource shortage: exit as APEXIT_CHILDSICK.
    Sick,
    /// Graceful stop/restart arrived while waiting.
    Stop,
}

/// pchild (with its own allocator, limited by MaxMemFree, as prefork
/// makes it) under pconf, and ptrans, the per-connection pool, under it.
fn child_pools() -> (*mut sys::apr_pool_t, *mut sys::apr_pool_t) {
    let mut allocator: *mut sys::apr_allocator_t = ptr::null_mut();
    let mut pchild: *mut sys::apr_pool_t = ptr::null_mut();
    let mut ptrans: *mut sys::apr_pool_t = ptr::null_mut();
    // SAFETY: out-pointers are valid locals; pconf (the process's
    // configuration pool) outlives pchild; the allocator is owned by pchild
    // from here on, and ptrans is a child of pchild.
    unsafe {
        sys::apr_allocator_create(&mut allocator);
        sys::apr_allocator_max_free_set(allocator, sys::ap_max_mem_free as usize);
        let pconf = (*(*sys::ap_server_conf).process).pconf;
        sys::apr_pool_create_ex(&mut pchild, pconf, None, allocator);
        sys::apr_allocator_owner_set(allocator, pchild);
        sys::apr_pool_create_ex(&mut ptrans, pchild, None, ptr::null_mut());
    }
    (pchild, ptrans)
}

/// Keeps only bucket `bucket` (closes the others' listeners and pipes of
/// death), reopens the scoreboard and initialises the accept mutex for this
/// child, as prefork's child_main does before it drops privileges. Returns
/// the bucket's listeners.
fn attach_bucket(
    bucket: usize,
    pchild: *mut sys::apr_pool_t,
) -> Result<*mut sys::ap_listen_rec, String> {
    let mut b = buckets();
    for (i, other) in b.0.iter().enumerate() {
        if i != bucket {
            // SAFETY: this process's copies of another bucket's records
            // (in pconf); this child never uses them again.
            unsafe {
                sys::ap_close_listeners_ex(other.listeners);
                sys::ap_mpm_pod_close(other.pod);
            }
        }
    }
    let mine = b.0.get_mut(bucket).ok_or("no such listener bucket")?;
    // SAFETY: reattaches the shared scoreboard in this child (pchild lives
    // as long as the child).
    unsafe { sys::ap_reopen_scoreboard(pchild, ptr::null_mut(), 0) };
    let mut mutex = mine.mutex;
    // SAFETY: the parent's mutex (in pconf) and its lock file; the child's
    // handle is allocated in pchild.
    let rv = unsafe {
        sys::apr_proc_mutex_child_init(&mut mutex, sys::apr_proc_mutex_lockfile(mine.mutex), pchild)
    };
    if rv != 0 {
        // SAFETY: the mutex's name is a static string of APR.
        let name = unsafe { c_to_string(sys::apr_proc_mutex_name(mine.mutex)) };
        return Err(format!(
            "Couldn't initialize cross-process lock in child ({name})"
        ));
    }
    // Lock through the child's handle, as prefork does (with flock it is a
    // descriptor of this worker's own).
    mine.worker_mutex = mutex;
    Ok(mine.listeners)
}

/// A pollset over the bucket's listeners (used with several), and each
/// listener's accept function set to mod_unixd's.
fn listeners_pollset(
    listeners: *mut sys::ap_listen_rec,
    num_listeners: usize,
    pchild: *mut sys::apr_pool_t,
) -> Result<*mut sys::apr_pollset_t, String> {
    let mut pollset: *mut sys::apr_pollset_t = ptr::null_mut();
    // SAFETY: out-pointer is a valid local; the pollset lives in pchild.
    let rv = unsafe {
        sys::apr_pollset_create(
            &mut pollset,
            num_listeners as u32,
            pchild,
            sys::APR_POLLSET_NOCOPY as u32,
        )
    };
    if rv != 0 {
        return Err("Couldn't create pollset in child; check system or user limits".into());
    }
    let mut lr = listeners;
    while !lr.is_null() {
        // SAFETY: `lr` walks the bucket's listener list (pconf); the pollfd
        // is allocated in pchild and fully initialised before it is added
        // (NOCOPY: the pollset keeps the pointer, pchild keeps the memory).
        unsafe {
            let pfd =
                sys::apr_palloc(pchild, size_of::<sys::apr_pollfd_t>()) as *mut sys::apr_pollfd_t;
            ptr::write(
                pfd,
                sys::apr_pollfd_t {
                    desc_type: sys::apr_datatype_e_APR_POLL_SOCKET,
                    desc: sys::apr_descriptor { s: (*lr).sd },
                    reqevents: sys::APR_POLLIN as i16,
                    client_data: lr as *mut c_void,
                    ..Default::default()
                },
            );
            if sys::apr_pollset_add(pollset, pfd) != 0 {
                if die_now() {
                    return Err(String::new());
                }
                return Err("Couldn't add listener to pollset; check system or user limits".into());
            }
            (*lr).accept_func = Some(sys::ap_unixd_accept);
            lr = (*lr).next;
        }
    }
    Ok(pollset)
}

impl Child {
    /// child_main's setup: pchild with MaxMemFree, ptrans, closing the other
    /// buckets, re-attaching the scoreboard and the accept mutex, the pollset
    /// and the scoreboard handle.
    pub fn init(slot: usize, bucket: usize, num_listeners: usize) -> Result<Child, String> {
        MY_BUCKET.store(bucket as i32, Ordering::SeqCst);
        Unixd::get(); // looked up now, for the signal handlers

        // SAFETY: installs httpd's crash handlers for a child, as prefork
        // does first; ap_server_conf is this generation's main server.
        unsafe { sys::ap_fatal_signal_child_setup(sys::ap_server_conf) };
        let (pchild, ptrans) = child_pools();
        PCHILD.store(pchild, Ordering::Relaxed);
        let listeners = attach_bucket(bucket, pchild)?;
        let mut sbh: *mut sys::ap_sb_handle_t = ptr::null_mut();
        // SAFETY: the scoreboard was reopened in attach_bucket; the handle
        // is allocated in pchild for this worker's slot (< ServerLimit).
        unsafe { sys::ap_create_sb_handle(&mut sbh, pchild, slot as c_int, 0) };
        let pollset = listeners_pollset(listeners, num_listeners, pchild)?;
        // SAFETY: a bucket allocator in pchild, which outlives its users.
        let bucket_alloc = unsafe { sys::apr_bucket_alloc_create(pchild) };
        Ok(Child {
            slot,
            bucket,
            pchild,
            ptrans,
            pollset,
            sbh,
            bucket_alloc,
            num_listeners,
            last_poll_idx: 0,
        })
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    /// apr_pool_clear(ptrans): re-initialise to a pre-connection state.
    pub fn clear_transaction(&mut self) {
        // SAFETY: ptrans belongs to this worker; nothing from the previous
        // connection is used after this point.
        unsafe { sys::apr_pool_clear(self.ptrans) }
    }

    /// Marks the slot idle with `descr` in mod_status's request column
    /// (`ap_update_child_status_descr`; shown with ExtendedStatus, which
    /// mod_status turns on).
    pub fn set_idle_descr(&self, descr: &std::ffi::CStr) {
        // SAFETY: sbh was created for this process's slot; httpd copies the
        // NUL-terminated string.
        unsafe {
            sys::ap_update_child_status_descr(self.sbh, sys::SERVER_READY as c_int, descr.as_ptr())
        };
    }

    /// `ap_update_child_status(sbh, status, NULL)`.
    pub fn set_status(&self, status: i32) {
        // SAFETY: sbh was created for this worker's slot.
        unsafe { sys::ap_update_child_status(self.sbh, status, ptr::null_mut()) };
    }

    fn mutex(&self) -> *mut sys::apr_proc_mutex_t {
        buckets()
            .0
            .get(self.bucket)
            .map_or(ptr::null_mut(), |b| b.worker_mutex)
    }

    /// prefork's `SAFE_ACCEPT(accept_mutex_on/off())`: nothing unless
    /// `serialized` ([`accept_serialized`]); Err carries the status for
    /// logging.
    pub fn accept_mutex_if(&self, serialized: bool, on: bool) -> Result<(), i32> {
        if !serialized {
            return Ok(());
        }
        let m = self.mutex();
        // SAFETY: the mutex was child-initialised in `init`.
        let rv = unsafe {
            if on {
                sys::apr_proc_mutex_lock(m)
            } else {
                sys::apr_proc_mutex_unlock(m)
            }
        };
        if rv == 0 { Ok(()) } else { Err(rv) }
    }

    /// Waits for a listener to become readable (several listeners) and
    /// accepts on it.
    pub fn accept(&mut self, should_stop: impl Fn() -> bool) -> AcceptOutcome {
        let lr = if self.num_listeners == 1 {
            match buckets().0.get(self.bucket) {
                Some(b) => b.listeners,
                None => return AcceptOutcome::Sick,
            }
        } else {
            match self.poll_listeners(should_stop) {
                Ok(lr) => lr,
                Err(outcome) => return outcome,
            }
        };
        // SAFETY: `lr` is one of this bucket's listener records (pconf).
        let Some(accept) = (unsafe { (*lr).accept_func }) else {
            return AcceptOutcome::Retry;
        };
        let mut csd: *mut c_void = ptr::null_mut();
        // SAFETY: mod_unixd's accept function on a live listener; the
        // socket is allocated in ptrans, which lives until the next
        // clear_transaction.
        let st = unsafe { accept(&mut csd, lr, self.ptrans) };
        if st == sys::APR_EGENERAL {
            AcceptOutcome::Sick
        } else if st != 0 {
            AcceptOutcome::Retry
        } else {
            // SAFETY: the listener record and its protocol string (NUL-
            // terminated or null) live in pconf.
            let https = unsafe {
                let p = (*lr).protocol;
                !p.is_null()
                    && std::ffi::CStr::from_ptr(p)
                        .to_bytes()
                        .eq_ignore_ascii_case(b"https")
            };
            AcceptOutcome::Got(Accepted(csd, https))
        }
    }

    /// Waits until one of several listeners is readable; Err: what
    /// `accept` reports instead.
    fn poll_listeners(
        &mut self,
        should_stop: impl Fn() -> bool,
    ) -> Result<*mut sys::ap_listen_rec, AcceptOutcome> {
        loop {
            if should_stop() {
                return Err(AcceptOutcome::Stop);
            }
            let mut num: i32 = 0;
            let mut pdesc: *const sys::apr_pollfd_t = ptr::null();
            // 10 s timeout, to notice a graceful stop whose signal closed
            // the sockets under us.
            // SAFETY: the pollset lives in pchild; out-pointers are locals.
            let st =
                unsafe { sys::apr_pollset_poll(self.pollset, 10_000_000, &mut num, &mut pdesc) };
            if st != 0 {
                // SAFETY: pure functions of an integer (the C shim).
                let again = unsafe {
                    sys::itk_shim_status_is_timeup(st) != 0
                        || sys::itk_shim_status_is_eintr(st) != 0
                };
                if again {
                    continue;
                }
                log(Level::Err, st, Server::main(), "apr_pollset_poll: (listen)");
                return Err(AcceptOutcome::Sick);
            }
            if self.last_poll_idx >= num as usize {
                self.last_poll_idx = 0;
            }
            // SAFETY: the pollset returned `num` > last_poll_idx descriptors,
            // ours (client_data is the listener record, set in
            // listeners_pollset).
            let lr = unsafe { (*pdesc.add(self.last_poll_idx)).client_data };
            self.last_poll_idx += 1;
            return Ok(lr as *mut sys::ap_listen_rec);
        }
    }

    /// After the connection child took over the socket, the worker drops its
    /// own copy (no lingering close here: the child did it).
    pub fn close_accepted(&self, a: Accepted) {
        // SAFETY: csd is the apr_socket_t accepted into ptrans.
        unsafe { sys::apr_socket_close(a.0 as *mut sys::apr_socket_t) };
    }

    /// Was this worker chosen through the pipe of death?
    pub fn pod_check(&self) -> bool {
        let b = buckets();
        match b.0.get(self.bucket) {
            // SAFETY: the pod lives in pconf.
            Some(b) => unsafe { sys::ap_mpm_pod_check(b.pod) == 0 },
            None => false,
        }
    }

    /// clean_child_exit for a worker.
    pub fn exit(&self, code: i32) -> ! {
        Unixd::get().set_mpm_state(sys::AP_MPMQ_STOPPING);
        set_handler(libc::SIGHUP, Handler::Ignore);
        set_handler(libc::SIGTERM, Handler::Ignore);
        // SAFETY: the worker's own pools; the pod is closed once.
        unsafe {
            sys::apr_pool_destroy(self.pchild);
            if let Some(b) = buckets().0.get(self.bucket) {
                sys::ap_mpm_pod_close(b.pod);
            }
        }
        std::process::exit(code)
    }

    // ---- connection child side ----

    /// In a child of this worker that will never accept: closes every
    /// listening socket, pipe of death and the worker's epoll instance, and
    /// takes the accept mutexes out of reach ([`listen::close_all_in_this_process`]).
    pub fn close_listening_side(&self) -> Result<(), String> {
        listen::close_all_in_this_process(self.bucket)?;
        // The worker's epoll instance still watches the listeners.
        // SAFETY: the pollset belongs to this process's copy of pchild and
        // is never used again here.
        unsafe { sys::apr_pollset_destroy(self.pollset) };
        Ok(())
    }

    /// The virtual host httpd itself would choose for a request on the
    /// connection `a` that names `host` (None: no Host) and `path`, by the
    /// connection's local address and port (`ap_update_vhost_given_ip`)
    /// and the name (`ap_update_vhost_from_headers`: ServerName,
    /// ServerAlias, wildcards, the `<VirtualHost>` address, ServerPath).
    /// The records are scratch ones in ptrans; nothing is read from the
    /// socket.
    pub fn route(
        &self,
        a: &Accepted,
        host: Option<HostName>,
        path: &str,
    ) -> Option<Server<'static>> {
        let c = self.scratch_conn(a)?;
        let p = self.ptrans;
        let host_c = host.as_ref().map(|h| super::cstring_lossy(h.host));
        let header = host.as_ref().filter(|h| !h.from_uri).map(|h| {
            let name = if h.host.contains(':') {
                format!("[{}]", h.host)
            } else {
                h.host.to_string()
            };
            super::cstring_lossy(&match h.port {
                Some(port) => format!("{name}:{port}"),
                None => name,
            })
        });
        let path_c = super::cstring_lossy(path);
        // SAFETY: a zeroed request record allocated in ptrans (which
        // outlives this call), filled with what ap_update_vhost_from_headers
        // reads: the pool, the scratch connection, server, status, hostname
        // or Host header, uri, and a log configuration that keeps its debug
        // logging quiet. Strings are copied into ptrans.
        unsafe {
            let r = pcalloc::<sys::request_rec>(p);
            (*r).pool = p;
            (*r).connection = c;
            (*r).server = (*c).base_server;
            (*r).status = sys::HTTP_OK as c_int;
            (*r).log = &QUIET.0 as *const sys::ap_logconf;
            (*r).headers_in = sys::apr_table_make(p, 2);
            (*r).notes = sys::apr_table_make(p, 1);
            (*r).uri = sys::apr_pstrdup(p, path_c.as_ptr());
            match (&host, &host_c, &header) {
                (Some(h), Some(name), _) if h.from_uri => {
                    (*r).hostname = sys::apr_pstrdup(p, name.as_ptr());
                }
                (_, _, Some(hv)) => {
                    sys::apr_table_set((*r).headers_in, c"Host".as_ptr(), hv.as_ptr());
                }
                _ => {}
            }
            sys::ap_update_vhost_from_headers(r);
            Server::from_raw((*r).server)
        }
    }

    /// The virtual host mod_ssl would choose for a TLS connection on `a`
    /// whose ClientHello names `sni`: the first server of the address's
    /// name chain (`ap_vhost_iterate_given_conn`, as mod_ssl's
    /// `init_vhost`) whose ServerName, ServerAlias or wildcard ServerAlias
    /// matches (mod_ssl's `ssl_util_vhost_matches`: no trailing-dot
    /// normalisation, no `<VirtualHost>` address fallback). `None` when no
    /// server matches: mod_ssl then stays on the address's default server.
    pub fn route_sni(&self, a: &Accepted, sni: &str) -> Option<Server<'static>> {
        let c = self.scratch_conn(a)?;
        let name = super::cstring_lossy(sni);
        let mut baton = SniBaton {
            name: name.as_ptr(),
            found: ptr::null_mut(),
        };
        // SAFETY: c is a scratch connection on which ap_update_vhost_given_ip
        // ran; the callback only reads the server records httpd passes it
        // and writes the baton, a live local.
        unsafe {
            sys::ap_vhost_iterate_given_conn(
                c,
                Some(sni_matches),
                &mut baton as *mut SniBaton as *mut c_void,
            );
            Server::from_raw(baton.found)
        }
    }

    /// A scratch connection record in ptrans for the accepted socket `a`,
    /// with the base server and name chain of its local address and port
    /// (`ap_update_vhost_given_ip`). Nothing is read from the socket.
    fn scratch_conn(&self, a: &Accepted) -> Option<*mut sys::conn_rec> {
        let sock = a.0 as *mut sys::apr_socket_t;
        let mut local: *mut sys::apr_sockaddr_t = ptr::null_mut();
        let mut remote: *mut sys::apr_sockaddr_t = ptr::null_mut();
        // SAFETY: addresses of a live socket, allocated in its pool.
        let ok = unsafe {
            sys::apr_socket_addr_get(&mut local, sys::apr_interface_e_APR_LOCAL, sock) == 0
                && sys::apr_socket_addr_get(&mut remote, sys::apr_interface_e_APR_REMOTE, sock) == 0
        };
        if !ok || local.is_null() || remote.is_null() {
            return None;
        }
        let p = self.ptrans;
        // SAFETY: a zeroed record allocated in ptrans (which outlives the
        // caller's use), filled with what ap_update_vhost_given_ip reads:
        // the pool, addresses, base server and a quiet log configuration.
        unsafe {
            let c = pcalloc::<sys::conn_rec>(p);
            (*c).pool = p;
            (*c).local_addr = local;
            (*c).client_addr = remote;
            sys::apr_sockaddr_ip_get(&mut (*c).local_ip, local);
            sys::apr_sockaddr_ip_get(&mut (*c).client_ip, remote);
            (*c).base_server = sys::ap_server_conf;
            (*c).log = &QUIET.0 as *const sys::ap_logconf;
            sys::ap_update_vhost_given_ip(c);
            Some(c)
        }
    }

    /// In a user process: serves the connection `fd`, which another process
    /// accepted (and this one checked, reading its `local` and `remote`
    /// addresses), as prefork serves one it accepted: an APR socket from the
    /// descriptor and those addresses (`apr_os_sock_make`),
    /// create_connection, process_connection, lingering close; then ptrans
    /// is cleared.
    pub fn serve_fd(
        &mut self,
        fd: std::os::fd::OwnedFd,
        local: &libc::sockaddr_storage,
        remote: &libc::sockaddr_storage,
    ) -> Result<(), String> {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        let (mut local, mut remote) = (*local, *remote);
        let mut os: sys::apr_os_sock_t = raw;
        let mut info = sys::apr_os_sock_info_t {
            os_sock: &mut os,
            local: &mut local as *mut _ as *mut sys::sockaddr,
            remote: &mut remote as *mut _ as *mut sys::sockaddr,
            family: local.ss_family as c_int,
            type_: libc::SOCK_STREAM,
            protocol: libc::IPPROTO_TCP,
        };
        let mut csd: *mut sys::apr_socket_t = ptr::null_mut();
        // SAFETY: APR copies the addresses and takes the descriptor (its
        // cleanup in ptrans closes it); `info` points at live locals.
        let rv = unsafe { sys::apr_os_sock_make(&mut csd, &mut info, self.ptrans) };
        if rv != 0 || csd.is_null() {
            // SAFETY: APR did not take it.
            unsafe { libc::close(raw) };
            return Err(format!("apr_os_sock_make failed (status {rv})"));
        }
        self.process_connection(&Accepted(csd as *mut c_void, false));
        self.clear_transaction();
        Ok(())
    }

    /// Runs the connection (create_connection, process_connection,
    /// lingering close) in the connection child.
    pub fn process_connection(&self, a: &Accepted) {
        // SAFETY: the socket and pools are this process's copies; the
        // scoreboard handle is the worker's slot, which the child updates
        // while it serves (so mod_status shows the connection).
        unsafe {
            let c = sys::ap_run_create_connection(
                self.ptrans,
                sys::ap_server_conf,
                a.0 as *mut sys::apr_socket_t,
                self.slot as i64,
                self.sbh as *mut c_void,
                self.bucket_alloc,
            );
            if !c.is_null() {
                sys::ap_process_connection(c, a.0);
                sys::ap_lingering_close(c);
            }
        }
    }

    /// `ap_run_child_init` in the connection child: each connection child is
    /// a fresh "prefork child" for other modules, so per-process state
    /// (random seeds, counters, connections) is never shared between
    /// connections.
    pub fn run_child_init(&self) {
        // SAFETY: pchild is this process's pool.
        unsafe {
            sys::ap_run_child_init(self.pchild, sys::ap_server_conf);
        }
    }
}

/// The worker's pchild (in a connection child: its copy).
static PCHILD: AtomicPtr<sys::apr_pool_t> = AtomicPtr::new(ptr::null_mut());

/// Ends this child: the child_stopping hooks run, then, if
/// `run_cleanups`, pchild is destroyed (every cleanup modules registered in
/// child_init runs, as in prefork's clean_child_exit), then `_exit(code)`.
pub fn end(code: i32, run_cleanups: bool) -> ! {
    let pchild = PCHILD.swap(ptr::null_mut(), Ordering::Relaxed);
    if !pchild.is_null() {
        // SAFETY: pchild is this process's copy of the worker pool; nothing
        // runs after its destruction but _exit.
        unsafe {
            sys::ap_run_child_stopping(pchild, 0);
            if run_cleanups {
                sys::apr_pool_destroy(pchild);
            }
        }
    }
    process::exit_now(code)
}

/// Runs `f(data)` when `r`'s pool is cleared, after the cleanups registered
/// before (such as the end-of-request bucket's, which calls
/// `ap_increment_counts`). A panic in `f` is logged and ignored.
pub fn on_request_end(r: Request, f: fn(usize), data: usize) {
    r.pool().on_clear(f, data);
}
