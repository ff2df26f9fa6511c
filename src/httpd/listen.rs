//! Listener buckets as prefork sets them up: the listening sockets, one
//! pipe of death and one accept mutex per bucket.

use super::{Pool, Server, c_to_string};
use crate::sys;
use std::ffi::c_void;
use std::ptr;

/// Bucket `i`'s listeners, closed from the graceful-stop signal handler
/// (never blocks: gives up if the table is in use).
pub fn close_listeners_from_signal(i: usize) {
    if let Ok(b) = BUCKETS.try_lock() {
        if let Some(b) = b.0.get(i) {
            // SAFETY: closes this bucket's listeners, as prefork's handler
            // does; the records live in pconf.
            unsafe { sys::ap_close_listeners_ex(b.listeners) };
        }
    }
}

pub(super) struct Bucket {
    pub(super) pod: *mut sys::ap_pod_t,
    pub(super) listeners: *mut sys::ap_listen_rec,
    /// The accept mutex as the parent created it (in pconf).
    pub(super) mutex: *mut sys::apr_proc_mutex_t,
    /// The worker's handle after `apr_proc_mutex_child_init`: a copy with a
    /// descriptor of its own for flock, the same pointer for the others.
    /// Null in the parent.
    pub(super) worker_mutex: *mut sys::apr_proc_mutex_t,
}

/// The buckets opened in open_logs for this generation (per DSO load).
pub(super) struct Buckets(pub(super) Vec<Bucket>);
// SAFETY: the MPM is single-threaded; the Mutex below only satisfies the
// type system, the pointers are never used from another thread.
unsafe impl Send for Buckets {}
pub(super) static BUCKETS: std::sync::Mutex<Buckets> = std::sync::Mutex::new(Buckets(Vec::new()));

pub(super) fn buckets() -> std::sync::MutexGuard<'static, Buckets> {
    BUCKETS.lock().unwrap_or_else(|e| e.into_inner())
}

/// prefork_open_logs: sets up the listeners, duplicates them into buckets,
/// opens one pipe of death and one accept mutex per bucket. Returns the
/// number of listening sockets.
pub fn open_buckets(pconf: Pool, s: Server, num_buckets: &mut i32) -> Result<usize, String> {
    // SAFETY: opens core's configured listeners for the main server.
    let n = unsafe { sys::ap_setup_listeners(s.raw()) };
    if n < 1 {
        return Err("no listening sockets available, shutting down".into());
    }
    let mut listen_buckets: *mut *mut sys::ap_listen_rec = ptr::null_mut();
    // SAFETY: out-pointers are valid; the duplicates live in pconf.
    let rv = unsafe {
        sys::ap_duplicate_listeners(pconf.raw(), s.raw(), &mut listen_buckets, num_buckets)
    };
    if rv != 0 {
        return Err(format!("could not duplicate listeners (status {rv})"));
    }
    let mut out = Vec::new();
    for i in 0..(*num_buckets).max(0) as usize {
        let mut pod: *mut sys::ap_pod_t = ptr::null_mut();
        // SAFETY: a pipe of death in pconf; out-pointer is a local.
        let rv = unsafe { sys::ap_mpm_pod_open(pconf.raw(), &mut pod) };
        if rv != 0 {
            return Err(format!("could not open pipe-of-death (status {rv})"));
        }
        let mut mutex: *mut sys::apr_proc_mutex_t = ptr::null_mut();
        let id = std::ffi::CString::new(i.to_string()).unwrap_or_default();
        // SAFETY: the "mpm-accept" type was registered in pre_config; the
        // mutex lives in pconf; the id is copied.
        let rv = unsafe {
            sys::ap_proc_mutex_create(
                &mut mutex,
                ptr::null_mut(),
                sys::AP_ACCEPT_MUTEX_TYPE.as_ptr() as *const _,
                id.as_ptr(),
                s.raw(),
                pconf.raw(),
                0,
            )
        };
        if rv != 0 {
            return Err(format!("could not create accept mutex (status {rv})"));
        }
        // SAFETY: ap_duplicate_listeners made `num_buckets` entries.
        let listeners = unsafe { *listen_buckets.add(i) };
        out.push(Bucket {
            pod,
            listeners,
            mutex,
            worker_mutex: ptr::null_mut(),
        });
    }
    buckets().0 = out;
    Ok(n as usize)
}

/// The ports the server listens on (core's listener list).
pub fn ports() -> Vec<u16> {
    let mut out = Vec::new();
    // SAFETY: ap_listeners is core's list for this generation (pconf).
    let mut lr = unsafe { sys::ap_listeners };
    while !lr.is_null() {
        // SAFETY: a live listener record and its bind address.
        unsafe {
            if !(*lr).bind_addr.is_null() {
                out.push((*(*lr).bind_addr).port);
            }
            lr = (*lr).next;
        }
    }
    out
}

/// Must workers take the accept mutex around accept? prefork's SAFE_ACCEPT
/// with SINGLE_LISTEN_UNSERIALIZED_ACCEPT (defined for Linux in
/// ap_config_auto.h): only with several listeners. With one, every idle
/// worker blocks in accept() and the kernel wakes exactly one of them per
/// connection, which saves two fcntl locks per connection and the wait
/// behind the worker holding the lock.
pub fn accept_serialized() -> bool {
    // SAFETY: ap_listeners is set up before the MPM runs and lives in
    // pconf; read in a single-threaded worker.
    unsafe {
        let l = sys::ap_listeners;
        !l.is_null() && !(*l).next.is_null()
    }
}

pub fn accept_mutex_name() -> String {
    let b = buckets();
    match b.0.first() {
        // SAFETY: the mutex lives in pconf.
        Some(b0) if !b0.mutex.is_null() => unsafe {
            format!(
                "{} (default: {})",
                c_to_string(sys::apr_proc_mutex_name(b0.mutex)),
                c_to_string(sys::apr_proc_mutex_defname())
            )
        },
        _ => "none".into(),
    }
}

/// Writes to bucket `i`'s pipe of death (one idle worker exits).
pub fn pod_signal(i: usize) {
    if let Some(b) = buckets().0.get(i) {
        // SAFETY: the pod lives in pconf.
        unsafe { sys::ap_mpm_pod_signal(b.pod) };
    }
}

/// `ap_mpm_pod_killpg` on every bucket (graceful restart/stop).
pub fn pod_killpg_all(num: i32) {
    for b in buckets().0.iter() {
        // SAFETY: the pod lives in pconf.
        unsafe { sys::ap_mpm_pod_killpg(b.pod, num) };
    }
}

/// In a child that will never accept again and is about to run code that
/// must not reach them: closes every listening socket and pipe of death,
/// and takes the accept mutexes out of reach (`close_mutex_descriptor`).
/// `mine` is the bucket the child belonged to.
///
/// Fails if an accept mutex could not be taken out of reach.
pub fn close_all_in_this_process(mine: usize) -> Result<(), String> {
    super::core::close_all_listeners();
    let bucket = mine;
    let b = buckets();
    for (i, bk) in b.0.iter().enumerate() {
        // SAFETY: closes this process's copies; the records live in pconf.
        unsafe {
            if i == bucket {
                sys::ap_close_listeners_ex(bk.listeners);
            }
            sys::ap_mpm_pod_close(bk.pod);
            close_mutex_descriptor(bk.mutex)?;
            if !bk.worker_mutex.is_null() && bk.worker_mutex != bk.mutex {
                close_mutex_descriptor(bk.worker_mutex)?;
            }
        }
    }
    Ok(())
}

/// Takes this process's handle on an accept mutex out of reach of vhost code
/// without destroying the lock for the other processes, and so that APR's
/// cleanups, which still run on it when pchild is destroyed at exit
/// (`BufferedLogs On`), find something harmless to touch.
///
/// Fails if the lock stays within reach.
///
/// # Safety
/// `m` must be a live apr_proc_mutex_t of this process, never locked again.
unsafe fn close_mutex_descriptor(m: *mut sys::apr_proc_mutex_t) -> Result<(), String> {
    if m.is_null() {
        return Ok(());
    }
    let mut os: sys::apr_os_proc_mutex_t = Default::default();
    let mut mech: sys::apr_lockmech_e = 0;
    // SAFETY: out-parameters are valid locals; the caller guarantees `m`.
    let rv = unsafe { sys::apr_os_proc_mutex_get_ex(&mut os, m, &mut mech) };
    if rv != 0 {
        return Err(format!(
            "cannot read the accept mutex's handle (status {rv})"
        ));
    }
    match mech {
        sys::apr_lockmech_e_APR_LOCK_FCNTL | sys::apr_lockmech_e_APR_LOCK_FLOCK
            if os.crossproc >= 0 =>
        {
            // Replace rather than close: the descriptor number stays taken,
            // so APR's own cleanup (flock's child handle registers one) can
            // never close a file that later reused the number.
            // SAFETY: plain descriptor calls on this process's table.
            let replaced = unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                let ok = null >= 0 && libc::dup3(null, os.crossproc, libc::O_CLOEXEC) >= 0;
                if null >= 0 {
                    libc::close(null);
                }
                ok
            };
            if !replaced {
                return Err(format!(
                    "cannot replace the accept mutex's descriptor {}: {}",
                    os.crossproc,
                    std::io::Error::last_os_error()
                ));
            }
            Ok(())
        }
        sys::apr_lockmech_e_APR_LOCK_PROC_PTHREAD if !os.pthread_interproc.is_null() => {
            // SAFETY: APR maps the process-shared mutex alone on its page.
            unsafe { replace_shared_page(os.pthread_interproc as *mut c_void) }
        }
        sys::apr_lockmech_e_APR_LOCK_POSIXSEM if !os.psem_interproc.is_null() => {
            // SAFETY: sem_open maps the named semaphore alone on its page.
            unsafe { replace_shared_page(os.psem_interproc as *mut c_void) }
        }
        // SysV semaphores have no descriptor or mapping (the id is owned by
        // User, mode 0600).
        _ => Ok(()),
    }
}

/// Puts a private zero page where this process mapped a shared one: the
/// other processes keep the shared page, vhost code here can no longer write
/// it, and APR's child-pool cleanup of a pthread mutex
/// (`proc_pthread_mutex_unref`: unlock if held, decrement a reference count)
/// touches the private copy instead of faulting on an unmapped page.
///
/// # Safety
/// `addr` must lie in a page that nothing in this process uses again except
/// such cleanups.
unsafe fn replace_shared_page(addr: *mut c_void) -> Result<(), String> {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let start = (addr as usize & !(page - 1)) as *mut c_void;
    // SAFETY: MAP_FIXED over exactly one page of ours, as the caller
    // guarantees; on failure the shared page stays mapped and the caller
    // drops the connection.
    let p = unsafe {
        libc::mmap(
            start,
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "cannot replace the accept mutex's shared page: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
