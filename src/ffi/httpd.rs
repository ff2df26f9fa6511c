//! Safe wrappers for the httpd and process calls the MPM makes: retained
//! data, scoreboard, listener buckets (listeners, pipe of death, accept
//! mutex), the worker's accept loop, forking, signals and waiting.
//!
//! Names follow prefork.c so an httpd developer finds their way; the process
//! model itself (what to call when) lives in `crate::mpm`.

use super::sys;
use super::{Pool, Server, status_is_eacces};
use std::ffi::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};

pub use sys::{SERVER_DEAD, SERVER_GRACEFUL, SERVER_READY, SERVER_STARTING};

pub const APEXIT_CHILDFATAL: i32 = sys::APEXIT_CHILDFATAL;
pub const APEXIT_CHILDSICK: i32 = sys::APEXIT_CHILDSICK;
pub const AP_SIG_GRACEFUL: i32 = sys::AP_SIG_GRACEFUL;

/// `AP_MPMQ_*` codes the MPM answers.
pub mod mpmq {
    use super::sys;
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

// ---------------------------------------------------------------------------
// Retained data (survives the DSO unload/reload on every restart)
// ---------------------------------------------------------------------------

/// prefork's `prefork_retained_data`, kept in httpd's retained memory.
#[repr(C)]
struct RetainedBlock {
    mpm: *mut sys::ap_unixd_mpm_retained_data,
    first_server_limit: c_int,
    maxclients_reported: c_int,
    max_daemons_limit: c_int,
    idle_spawn_rate: c_int,
    hold_off_on_exponential_spawning: c_int,
    /// Shared (MAP_SHARED) table of `ServerLimit` words: which vhost each
    /// worker slot's connection child serves now (for MaxClientsVHost).
    vhost_table: *mut c_void,
    vhost_table_len: usize,
}

static RETAINED: AtomicPtr<RetainedBlock> = AtomicPtr::new(ptr::null_mut());

/// Handle on the retained block; all accessors are plain loads/stores on
/// memory httpd keeps for the life of the process.
#[derive(Clone, Copy)]
pub struct Retained(NonNull<RetainedBlock>);

macro_rules! retained_field {
    ($get:ident, $set:ident, $field:ident) => {
        pub fn $get(self) -> i32 {
            // SAFETY: the block is live for the process; single-threaded.
            unsafe { (*self.0.as_ptr()).$field }
        }
        pub fn $set(self, v: i32) {
            // SAFETY: as above.
            unsafe { (*self.0.as_ptr()).$field = v }
        }
    };
}

macro_rules! unixd_field {
    ($get:ident, $set:ident, $field:ident) => {
        unixd_field!($get, $field);
        pub fn $set(self, v: i32) {
            // SAFETY: as above.
            unsafe { ptr::write_volatile(&mut (*self.mpm()).$field, v) }
        }
    };
    ($get:ident, $field:ident) => {
        pub fn $get(self) -> i32 {
            // SAFETY: `mpm` points at httpd's unixd retained block, live for
            // the process; httpd's signal handlers write some of these
            // fields, hence the volatile read.
            unsafe { ptr::read_volatile(&(*self.mpm()).$field) }
        }
    };
}

impl Retained {
    /// prefork_pre_config's lookup: finds or creates the block, links it to
    /// mod_unixd's retained MPM data (the `baton`) and counts module loads.
    pub fn attach() -> Retained {
        const KEY: &std::ffi::CStr = c"mpm_itk_module";
        // SAFETY: ap_retained_data_get/create return memory owned by the
        // process pool (zeroed on creation) of at least the requested size.
        let block = unsafe {
            let mut p = sys::ap_retained_data_get(KEY.as_ptr()) as *mut RetainedBlock;
            if p.is_null() {
                p = sys::ap_retained_data_create(KEY.as_ptr(), size_of::<RetainedBlock>())
                    as *mut RetainedBlock;
                (*p).mpm = sys::ap_unixd_mpm_get_retained_data();
                (*p).idle_spawn_rate = 1;
            }
            p
        };
        RETAINED.store(block, Ordering::Relaxed);
        let r = Retained(NonNull::new(block).expect("ap_retained_data_create failed"));
        // SAFETY: `mpm` was set above, from httpd.
        unsafe {
            let m = r.mpm();
            (*m).mpm_state = sys::AP_MPMQ_STARTING;
            if (*m).baton != block as *mut c_void {
                (*m).was_graceful = 0;
                (*m).baton = block as *mut c_void;
            }
            (*m).module_loads += 1;
        }
        r
    }

    /// The block attached in this DSO load, if pre_config ran.
    pub fn get() -> Option<Retained> {
        NonNull::new(RETAINED.load(Ordering::Relaxed)).map(Retained)
    }

    fn mpm(self) -> *mut sys::ap_unixd_mpm_retained_data {
        // SAFETY: see `attach`.
        unsafe { (*self.0.as_ptr()).mpm }
    }

    retained_field!(
        first_server_limit,
        set_first_server_limit,
        first_server_limit
    );
    retained_field!(
        maxclients_reported,
        set_maxclients_reported,
        maxclients_reported
    );
    retained_field!(max_daemons_limit, set_max_daemons_limit, max_daemons_limit);
    retained_field!(idle_spawn_rate, set_idle_spawn_rate, idle_spawn_rate);
    retained_field!(
        hold_off_on_exponential_spawning,
        set_hold_off_on_exponential_spawning,
        hold_off_on_exponential_spawning
    );
    unixd_field!(mpm_state, set_mpm_state, mpm_state);
    unixd_field!(shutdown_pending, set_shutdown_pending, shutdown_pending);
    unixd_field!(restart_pending, restart_pending);
    unixd_field!(is_ungraceful, is_ungraceful);
    unixd_field!(my_generation, set_my_generation, my_generation);
    unixd_field!(module_loads, module_loads);
    unixd_field!(was_graceful, was_graceful);
    unixd_field!(num_buckets, set_num_buckets, num_buckets);

    /// Creates the shared vhost table (one word per scoreboard slot) once
    /// per process life, in anonymous shared memory, so that every worker
    /// and connection child forked later sees the same words. False if it
    /// cannot be mapped.
    pub fn create_vhost_table(self, slots: usize) -> bool {
        // SAFETY: the block is live; the mapping is created once, in the
        // parent (single-threaded), and all-zero is a valid AtomicU64.
        unsafe {
            let b = self.0.as_ptr();
            if (*b).vhost_table.is_null() {
                let len = slots.max(1) * size_of::<u64>();
                let p = libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    return false;
                }
                (*b).vhost_table = p;
                (*b).vhost_table_len = slots.max(1);
            }
            true
        }
    }

    /// Runs `f` on the vhost table, if this process still has it.
    pub fn with_vhost_table<R>(
        self,
        f: impl FnOnce(&[std::sync::atomic::AtomicU64]) -> R,
    ) -> Option<R> {
        if VHOST_TABLE_GONE.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: the block is live; the mapping, if any, stays mapped while
        // `f` runs (only drop_vhost_table unmaps it, and no reference
        // escapes `f`); AtomicU64 has the layout of u64.
        let table = unsafe {
            let b = self.0.as_ptr();
            if (*b).vhost_table.is_null() {
                return None;
            }
            std::slice::from_raw_parts(
                (*b).vhost_table as *const std::sync::atomic::AtomicU64,
                (*b).vhost_table_len,
            )
        };
        Some(f(table))
    }

    /// Unmaps the vhost table in this process for good: a switched
    /// connection child, about to run vhost code, which must not be able to
    /// write other vhosts' counts. Nothing can map it again (it has no name
    /// and no descriptor).
    pub fn drop_vhost_table(self) {
        if VHOST_TABLE_GONE.swap(true, Ordering::Relaxed) {
            return;
        }
        // SAFETY: the block is live and this process's copy; no reference to
        // the table outlives a with_vhost_table call, and none is running
        // (single-threaded caller; module threads never use it).
        unsafe {
            let b = self.0.as_ptr();
            if !(*b).vhost_table.is_null() {
                libc::munmap((*b).vhost_table, (*b).vhost_table_len * size_of::<u64>());
                (*b).vhost_table = ptr::null_mut();
            }
        }
    }
}

/// One worker as the parent recorded it when it forked it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildRecord {
    /// 0: no worker in this slot.
    pub pid: i32,
    pub generation: i32,
}

impl Retained {
    /// The parent's own records of its workers, one per scoreboard slot
    /// (`ServerLimit`, which cannot change across restarts), in httpd's
    /// retained memory: they survive restarts, and unlike the scoreboard
    /// they are private to the parent (a child only has a copy it never
    /// uses), so vhost code cannot write them.
    pub fn child_records(self) -> &'static [std::cell::Cell<ChildRecord>] {
        const KEY: &std::ffi::CStr = c"mpm_itk_children";
        let n = self.first_server_limit().max(1) as usize;
        // SAFETY: ap_retained_data_get/create return process-pool memory of
        // at least the requested size, zeroed on creation (a valid
        // ChildRecord), and the size never changes (ServerLimit is fixed
        // for the process's life). Cell has the layout of its content; the
        // parent is single-threaded.
        unsafe {
            let mut p = sys::ap_retained_data_get(KEY.as_ptr());
            if p.is_null() {
                p = sys::ap_retained_data_create(KEY.as_ptr(), n * size_of::<ChildRecord>());
            }
            std::slice::from_raw_parts(p as *const std::cell::Cell<ChildRecord>, n)
        }
    }
}

/// Set once this process has unmapped the vhost table.
static VHOST_TABLE_GONE: AtomicBool = AtomicBool::new(false);

// ---------------------------------------------------------------------------
// Configuration globals owned by httpd core
// ---------------------------------------------------------------------------

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
            super::c_to_string(sys::ap_unixd_config.user_name),
            sys::ap_unixd_config.user_id,
            sys::ap_unixd_config.group_id,
        )
    }
}

/// `ChrootDir`, if set.
pub fn unixd_chroot_dir() -> Option<String> {
    // SAFETY: plain read of mod_unixd's global configuration record.
    let p = unsafe { sys::ap_unixd_config.chroot_dir };
    (!p.is_null()).then(|| super::c_to_string(p))
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
                    let name = super::c_to_string(p);
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
    let c = super::cstring_lossy(component);
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
        unsafe { sys::ap_fatal_signal_setup(s.0.as_ptr(), pconf.raw()) };
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
        sys::ap_run_pre_mpm(
            (*(*s.0.as_ptr()).process).pool,
            sys::ap_scoreboard_e_SB_SHARED,
        ) == sys::OK
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
            super::c_to_string(sys::ap_get_server_description()),
            super::c_to_string(sys::ap_get_server_built()),
        )
    };
    super::log(
        super::Level::Notice,
        0,
        Some(s),
        &format!("{desc} configured -- resuming normal operations"),
    );
    super::log(
        super::Level::Info,
        0,
        Some(s),
        &format!("Server built: {built}"),
    );
    // SAFETY: plain httpd logging calls.
    unsafe {
        sys::ap_log_command_line(plog.raw(), s.0.as_ptr());
        sys::ap_log_mpm_common(s.0.as_ptr());
    }
    super::log(
        super::Level::Debug,
        0,
        Some(s),
        &format!("Accept mutex: {accept_mutex_name}"),
    );
}

// ---------------------------------------------------------------------------
// Scoreboard
// ---------------------------------------------------------------------------

fn scoreboard() -> Option<&'static sys::scoreboard> {
    // SAFETY: ap_scoreboard_image is set by pre_mpm (parent) and inherited by
    // children; it points at shared memory that stays mapped.
    unsafe { sys::ap_scoreboard_image.as_ref() }
}

fn worker_score(slot: usize) -> *mut sys::worker_score {
    let sb = scoreboard().expect("scoreboard not created");
    // SAFETY: slot < ServerLimit (callers iterate below the limits), and
    // prefork uses thread index 0 only.
    unsafe { *sb.servers.add(slot) }
}

/// Worker status of scoreboard slot `slot` (`SERVER_*`).
pub fn slot_status(slot: usize) -> i32 {
    // SAFETY: see worker_score; status is a byte in shared memory.
    unsafe { ptr::read_volatile(&(*worker_score(slot)).status) as i32 }
}

pub fn set_slot_status_raw(slot: usize, status: i32) {
    // SAFETY: see worker_score.
    unsafe { ptr::write_volatile(&mut (*worker_score(slot)).status, status as u8) }
}

/// `ap_update_child_status_from_indexes(slot, 0, status, NULL)`.
pub fn update_slot_status(slot: usize, status: i32) {
    // SAFETY: slot is within the scoreboard.
    unsafe {
        sys::ap_update_child_status_from_indexes(slot as c_int, 0, status, ptr::null_mut());
    }
}

/// Writes `pid` and `generation` into slot `slot`'s process record if the
/// scoreboard says otherwise; true if it did (someone else wrote them).
pub fn repair_slot_process(slot: usize, pid: i32, generation: i32) -> bool {
    let sb = scoreboard().expect("scoreboard not created");
    // SAFETY: slot < ServerLimit; volatile: other processes write the
    // shared scoreboard.
    unsafe {
        let p = sb.parent.add(slot);
        let wrong = ptr::read_volatile(&(*p).pid) != pid
            || ptr::read_volatile(&(*p).generation) != generation;
        if wrong {
            ptr::write_volatile(&mut (*p).pid, pid);
            ptr::write_volatile(&mut (*p).generation, generation);
        }
        wrong
    }
}

pub fn running_generation() -> i32 {
    let sb = scoreboard().expect("scoreboard not created");
    // SAFETY: the global block is shared memory written by the parent.
    unsafe { ptr::read_volatile(&(*sb.global).running_generation) }
}

pub fn set_running_generation(g: i32) {
    let sb = scoreboard().expect("scoreboard not created");
    // SAFETY: as above; only the parent writes it.
    unsafe { ptr::write_volatile(&mut (*sb.global).running_generation, g) }
}

/// prefork_note_child_started.
pub fn note_child_started(slot: usize, pid: i32, generation: i32) {
    let sb = scoreboard().expect("scoreboard not created");
    // SAFETY: slot < ServerLimit; the server is the main server.
    unsafe {
        let p = sb.parent.add(slot);
        (*p).pid = pid;
        (*p).generation = generation;
        sys::ap_run_child_status(
            sys::ap_server_conf,
            pid,
            generation,
            slot as c_int,
            sys::mpm_child_status_MPM_CHILD_STARTED,
        );
    }
}

/// prefork_note_child_killed: the worker `pid` of `generation` in `slot`
/// was reaped.
pub fn note_child_killed(slot: usize, pid: i32, generation: i32) {
    let sb = scoreboard().expect("scoreboard not created");
    // SAFETY: slot < ServerLimit.
    unsafe {
        sys::ap_run_child_status(
            sys::ap_server_conf,
            pid,
            generation,
            slot as c_int,
            sys::mpm_child_status_MPM_CHILD_EXITED,
        );
        ptr::write_volatile(&mut (*sb.parent.add(slot)).pid, 0);
    }
}

/// Sends `sig` to `pid`, a child this process forked and has not reaped
/// (the caller's records say so; never a pid read from shared memory).
pub fn signal_child(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) on our own unreaped child: its pid cannot have been
    // reused.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}

/// A handle on another process that stays valid when its pid is reused
/// (a pidfd).
pub struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    /// Opens a handle on `pid`, if it still runs.
    pub fn open(pid: i32) -> std::io::Result<PidFd> {
        // SAFETY: pidfd_open with integer arguments; on success the kernel
        // returns a new descriptor that we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(PidFd(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as c_int)
        }))
    }

    /// Sends `sig` to exactly that process, whatever now has its pid.
    pub fn signal(&self, sig: i32) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal on our own descriptor, no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                ptr::null::<libc::siginfo_t>(),
                0,
            ) == 0
        }
    }
}

/// Reaps `pid` if it has exited (without waiting), as
/// `ap_process_child_status` reports it.
pub fn try_reap(pid: i32) -> Option<Reaped> {
    let mut proc_ = sys::apr_proc_t {
        pid,
        ..Default::default()
    };
    let mut why: sys::apr_exit_why_e = 0;
    let mut status: c_int = 0;
    // SAFETY: out-parameters are valid locals.
    let rv = unsafe {
        sys::apr_proc_wait(
            &mut proc_,
            &mut status,
            &mut why,
            sys::apr_wait_how_e_APR_NOWAIT,
        )
    };
    if rv == libc::ECHILD {
        // Not (or no longer) our child: someone else reaped it. Gone, with
        // an unknown status; never wait for it again.
        return Some(Reaped {
            pid,
            processed_status: 0,
            signal: None,
            exit_code: None,
        });
    }
    if rv != sys::APR_CHILD_DONE {
        return None;
    }
    Some(reaped(proc_, why, status))
}

/// Tells httpd's "other children" (piped loggers, mod_cgid's daemon) that
/// `dead` died, as prefork's parent does for a pid that is not a worker, so
/// that a piped logger is restarted. True if one of them was it.
pub fn other_child_died(dead: &Reaped) -> bool {
    let mut proc_ = sys::apr_proc_t {
        pid: dead.pid,
        ..Default::default()
    };
    let status = dead.signal.or(dead.exit_code).unwrap_or(0);
    // SAFETY: proc_ is a valid local; APR looks the pid up in its own list.
    unsafe {
        sys::apr_proc_other_child_alert(&mut proc_, sys::APR_OC_REASON_DEATH as c_int, status) == 0
    }
}

/// Lets httpd's "other children" (piped loggers, mod_cgid's daemon) see a
/// restart, as `ap_reclaim_child_processes` does.
pub fn refresh_other_children() {
    // SAFETY: plain APR call in the parent.
    unsafe { sys::apr_proc_other_child_refresh_all(sys::APR_OC_REASON_RESTART as c_int) }
}

fn reaped(mut proc_: sys::apr_proc_t, why: sys::apr_exit_why_e, status: c_int) -> Reaped {
    // SAFETY: proc_ is a valid local; logs a crash as prefork's parent does.
    let processed = unsafe { sys::ap_process_child_status(&mut proc_, why, status) };
    let signaled = why & sys::apr_exit_why_e_APR_PROC_SIGNAL != 0;
    Reaped {
        pid: proc_.pid,
        processed_status: processed,
        signal: signaled.then_some(status),
        exit_code: (!signaled).then_some(status),
    }
}

/// What `ap_wait_or_timeout` reported.
pub struct Reaped {
    pub pid: i32,
    /// `ap_process_child_status` verdict (APEXIT_*).
    pub processed_status: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Its exit status, if it exited.
    pub exit_code: Option<i32>,
}

/// `ap_wait_or_timeout` + `ap_process_child_status` (which logs a worker
/// killed by a signal, as prefork's parent does). Which worker it was is
/// for the caller's records to say, not the scoreboard's pid fields.
pub fn wait_or_timeout(pconf: Pool) -> Option<Reaped> {
    let mut why: sys::apr_exit_why_e = 0;
    let mut status: c_int = 0;
    let mut proc_: sys::apr_proc_t = Default::default();
    // SAFETY: out-parameters are valid locals; the server is the main one.
    unsafe {
        sys::ap_wait_or_timeout(
            &mut why,
            &mut status,
            &mut proc_,
            pconf.raw(),
            sys::ap_server_conf,
        );
        if proc_.pid == -1 {
            return None;
        }
    }
    Some(reaped(proc_, why, status))
}

pub fn close_all_listeners() {
    // SAFETY: closes core's listener list in this process.
    unsafe { sys::ap_close_listeners() }
}

/// Is this process the leader of its process group (daemonised)? Only then
/// may the parent signal the whole group (in the foreground the group is the
/// caller's: a shell or a test runner).
pub fn own_process_group() -> bool {
    // SAFETY: plain syscalls without arguments.
    unsafe { libc::getpgrp() == libc::getpid() }
}

pub fn killpg_own(sig: i32) {
    if own_process_group() {
        // SAFETY: signals our own process group only (we lead it).
        unsafe { libc::killpg(libc::getpgrp(), sig) };
    }
}

// ---------------------------------------------------------------------------
// Listener buckets: listeners + pipe of death + accept mutex
// ---------------------------------------------------------------------------

struct Bucket {
    pod: *mut sys::ap_pod_t,
    listeners: *mut sys::ap_listen_rec,
    /// The accept mutex as the parent created it (in pconf).
    mutex: *mut sys::apr_proc_mutex_t,
    /// The worker's handle after `apr_proc_mutex_child_init`: a copy with a
    /// descriptor of its own for flock, the same pointer for the others.
    /// Null in the parent.
    worker_mutex: *mut sys::apr_proc_mutex_t,
}

/// The buckets opened in open_logs for this generation (per DSO load).
struct Buckets(Vec<Bucket>);
// SAFETY: the MPM is single-threaded; the Mutex below only satisfies the
// type system, the pointers are never used from another thread.
unsafe impl Send for Buckets {}
static BUCKETS: std::sync::Mutex<Buckets> = std::sync::Mutex::new(Buckets(Vec::new()));

fn buckets() -> std::sync::MutexGuard<'static, Buckets> {
    BUCKETS.lock().unwrap_or_else(|e| e.into_inner())
}

/// prefork_open_logs: sets up the listeners, duplicates them into buckets,
/// opens one pipe of death and one accept mutex per bucket. Returns the
/// number of listening sockets.
pub fn open_buckets(pconf: Pool, s: Server, num_buckets: &mut i32) -> Result<usize, String> {
    // SAFETY: standard listener setup calls with pconf-owned outputs.
    unsafe {
        let n = sys::ap_setup_listeners(s.0.as_ptr());
        if n < 1 {
            return Err("no listening sockets available, shutting down".into());
        }
        let mut listen_buckets: *mut *mut sys::ap_listen_rec = ptr::null_mut();
        let rv = sys::ap_duplicate_listeners(
            pconf.raw(),
            s.0.as_ptr(),
            &mut listen_buckets,
            num_buckets,
        );
        if rv != 0 {
            return Err(format!("could not duplicate listeners (status {rv})"));
        }
        let mut out = Vec::new();
        for i in 0..(*num_buckets).max(0) as usize {
            let mut pod: *mut sys::ap_pod_t = ptr::null_mut();
            let rv = sys::ap_mpm_pod_open(pconf.raw(), &mut pod);
            if rv != 0 {
                return Err(format!("could not open pipe-of-death (status {rv})"));
            }
            let mut mutex: *mut sys::apr_proc_mutex_t = ptr::null_mut();
            let id = std::ffi::CString::new(i.to_string()).unwrap_or_default();
            let rv = sys::ap_proc_mutex_create(
                &mut mutex,
                ptr::null_mut(),
                sys::AP_ACCEPT_MUTEX_TYPE.as_ptr() as *const _,
                id.as_ptr(),
                s.0.as_ptr(),
                pconf.raw(),
                0,
            );
            if rv != 0 {
                return Err(format!("could not create accept mutex (status {rv})"));
            }
            out.push(Bucket {
                pod,
                listeners: *listen_buckets.add(i),
                mutex,
                worker_mutex: ptr::null_mut(),
            });
        }
        buckets().0 = out;
        Ok(n as usize)
    }
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
                super::c_to_string(sys::apr_proc_mutex_name(b0.mutex)),
                super::c_to_string(sys::apr_proc_mutex_defname())
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

// ---------------------------------------------------------------------------
// Processes and signals
// ---------------------------------------------------------------------------

/// Exit status of a forked process whose Rust code panicked (EX_SOFTWARE):
/// the process that reaps it reports it.
pub const PANIC_EXIT: i32 = 70;

/// `fork(2)`.
///
/// # Safety
/// The calling process must be single-threaded, so the child may run
/// arbitrary code (allocate, take locks) after the fork. And the child must
/// never return into the frames it shares with the parent's stack copy
/// (httpd's `main`, the MPM's loop): use [`fork_process`].
unsafe fn fork_raw() -> std::io::Result<i32> {
    // SAFETY: as the caller guarantees.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        pid => Ok(pid),
    }
}

/// Forks a process that runs `child` and never comes back: whatever happens
/// in it stays in it. A panic is logged (naming `what` and the pid) and the
/// process `_exit`s with [`PANIC_EXIT`]; it never unwinds into the parent's
/// frames (httpd's `main`, the hook guards of `run`), which would run the
/// parent's teardown in the child. Returns the child's pid in the parent.
///
/// The parent and the workers are single-threaded: httpd with a
/// non-threaded MPM starts no threads in them, and other modules' child_init
/// (which may start threads) runs only in connection children, which never
/// fork through here.
pub fn fork_process(
    what: &str,
    child: impl FnOnce() -> std::convert::Infallible,
) -> std::io::Result<i32> {
    // SAFETY: called only by the parent and the workers (see above), and
    // the child below never returns.
    match unsafe { fork_raw() }? {
        0 => {
            let payload = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)) {
                Ok(never) => match never {},
                Err(p) => p,
            };
            super::log(
                super::Level::Crit,
                0,
                Server::main(),
                &format!(
                    "panic in {what} pid {}: {}; exiting with status {PANIC_EXIT}",
                    std::process::id(),
                    super::panic_message(payload.as_ref())
                ),
            );
            // SAFETY: _exit ends this process without running the parent's
            // atexit handlers or unwinding further.
            unsafe { libc::_exit(PANIC_EXIT) }
        }
        pid => Ok(pid),
    }
}

/// The sleep prefork does after a failed fork, so a resource shortage does
/// not become a busy loop.
pub fn sleep_secs(n: u64) {
    std::thread::sleep(std::time::Duration::from_secs(n));
}

/// Set in a worker by SIGUSR1 (graceful): finish the current connection,
/// then exit (prefork's `die_now`).
static DIE_NOW: AtomicBool = AtomicBool::new(false);
/// Pid of the worker's current connection child (0 if none).
static CONN_CHILD: AtomicI32 = AtomicI32::new(0);
/// Buckets index of this worker (for stop_listening from the handler).
static MY_BUCKET: AtomicI32 = AtomicI32::new(0);

pub fn die_now() -> bool {
    DIE_NOW.load(Ordering::SeqCst)
}
pub fn set_die_now() {
    DIE_NOW.store(true, Ordering::SeqCst)
}

extern "C" fn worker_just_die(_sig: c_int) {
    // Ungraceful stop/restart: the connection child goes with us.
    let child = CONN_CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe; child is our own child.
        unsafe { libc::kill(child, libc::SIGTERM) };
    }
    // SAFETY: _exit is async-signal-safe. The worker holds nothing that
    // needs flushing: it never runs request code itself.
    unsafe { libc::_exit(0) }
}

extern "C" fn worker_stop_listening(_sig: c_int) {
    // prefork's stop_listening: close our listeners so the kernel stops
    // queueing connections for us, and exit once the current one is done.
    if let Some(r) = Retained::get() {
        r.set_mpm_state(mpmq::STOPPING);
    }
    let i = MY_BUCKET.load(Ordering::SeqCst) as usize;
    // try_lock: never block inside a signal handler.
    if let Ok(b) = BUCKETS.try_lock() {
        if let Some(b) = b.0.get(i) {
            // SAFETY: closes this bucket's listeners, as prefork's handler
            // does; the records live in pconf.
            unsafe { sys::ap_close_listeners_ex(b.listeners) };
        }
    }
    DIE_NOW.store(true, Ordering::SeqCst);
}

fn set_handler(sig: c_int, h: libc::sighandler_t) {
    // SAFETY: installs a handler with an empty mask; the handlers above only
    // touch atomics and async-signal-safe calls (and apr close, like prefork).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = h;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(sig, &sa, ptr::null_mut());
    }
}

/// make_child's signal setup for a worker.
pub fn set_worker_signals() {
    set_handler(
        libc::SIGHUP,
        worker_just_die as *const () as libc::sighandler_t,
    );
    set_handler(
        libc::SIGTERM,
        worker_just_die as *const () as libc::sighandler_t,
    );
    set_handler(libc::SIGINT, libc::SIG_IGN);
    set_handler(
        AP_SIG_GRACEFUL,
        worker_stop_listening as *const () as libc::sighandler_t,
    );
}

/// Signal setup for a connection child: stop/restart kill it (default
/// action); a graceful signal lets it finish its connection.
pub fn set_connection_child_signals() {
    set_handler(libc::SIGHUP, libc::SIG_DFL);
    set_handler(libc::SIGTERM, libc::SIG_DFL);
    set_handler(libc::SIGINT, libc::SIG_IGN);
    set_handler(AP_SIG_GRACEFUL, libc::SIG_IGN);
    set_handler(sys::AP_SIG_GRACEFUL_STOP, libc::SIG_IGN);
}

/// How a connection child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32, bool),
}

/// Waits for the connection child `pid`, retrying on EINTR.
pub fn wait_connection_child(pid: i32) -> std::io::Result<ChildEnd> {
    CONN_CHILD.store(pid, Ordering::SeqCst);
    let mut status: c_int = 0;
    let res = loop {
        // SAFETY: waits for our own child; status is a valid local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break Ok(if libc::WIFSIGNALED(status) {
                ChildEnd::Signaled(libc::WTERMSIG(status), libc::WCOREDUMP(status))
            } else {
                ChildEnd::Exited(libc::WEXITSTATUS(status))
            });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            break Err(e);
        }
    };
    CONN_CHILD.store(0, Ordering::SeqCst);
    res
}

// ---------------------------------------------------------------------------
// The worker (child_main's state)
// ---------------------------------------------------------------------------

/// Everything a worker process holds: prefork's child_main locals.
pub struct Worker {
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

/// An accepted connection socket (lives in the worker's ptrans).
pub struct Accepted(*mut c_void);

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

impl Worker {
    /// child_main's setup: pchild with MaxMemFree, ptrans, closing the other
    /// buckets, re-attaching the scoreboard and the accept mutex, the pollset
    /// and the scoreboard handle.
    pub fn init(slot: usize, bucket: usize, num_listeners: usize) -> Result<Worker, String> {
        MY_BUCKET.store(bucket as i32, Ordering::SeqCst);
        // SAFETY: standard child setup, in the order prefork uses; every
        // out-pointer is a valid local; pconf is the parent of pchild.
        unsafe {
            let s = sys::ap_server_conf;
            sys::ap_fatal_signal_child_setup(s);
            let mut allocator: *mut sys::apr_allocator_t = ptr::null_mut();
            sys::apr_allocator_create(&mut allocator);
            sys::apr_allocator_max_free_set(allocator, sys::ap_max_mem_free as usize);
            let mut pchild: *mut sys::apr_pool_t = ptr::null_mut();
            sys::apr_pool_create_ex(&mut pchild, (*(*s).process).pconf, None, allocator);
            sys::apr_allocator_owner_set(allocator, pchild);
            let mut ptrans: *mut sys::apr_pool_t = ptr::null_mut();
            sys::apr_pool_create_ex(&mut ptrans, pchild, None, ptr::null_mut());
            PCHILD.store(pchild, Ordering::Relaxed);

            let mut b = buckets();
            for (i, other) in b.0.iter().enumerate() {
                if i != bucket {
                    sys::ap_close_listeners_ex(other.listeners);
                    sys::ap_mpm_pod_close(other.pod);
                }
            }
            let mine = b.0.get_mut(bucket).ok_or("no such listener bucket")?;
            sys::ap_reopen_scoreboard(pchild, ptr::null_mut(), 0);
            let mut mutex = mine.mutex;
            let rv = sys::apr_proc_mutex_child_init(
                &mut mutex,
                sys::apr_proc_mutex_lockfile(mine.mutex),
                pchild,
            );
            if rv != 0 {
                return Err(format!(
                    "Couldn't initialize cross-process lock in child ({})",
                    super::c_to_string(sys::apr_proc_mutex_name(mine.mutex))
                ));
            }
            // Lock through the child's handle, as prefork does (with flock
            // it is a descriptor of this worker's own).
            mine.worker_mutex = mutex;
            let listeners = mine.listeners;
            drop(b);

            let mut sbh: *mut sys::ap_sb_handle_t = ptr::null_mut();
            sys::ap_create_sb_handle(&mut sbh, pchild, slot as c_int, 0);

            let mut pollset: *mut sys::apr_pollset_t = ptr::null_mut();
            if sys::apr_pollset_create(
                &mut pollset,
                num_listeners as u32,
                pchild,
                sys::APR_POLLSET_NOCOPY as u32,
            ) != 0
            {
                return Err("Couldn't create pollset in child; check system or user limits".into());
            }
            let mut lr = listeners;
            while !lr.is_null() {
                let pfd = sys::apr_palloc(pchild, size_of::<sys::apr_pollfd_t>())
                    as *mut sys::apr_pollfd_t;
                ptr::write(pfd, sys::apr_pollfd_t::default());
                (*pfd).desc_type = sys::apr_datatype_e_APR_POLL_SOCKET;
                (*pfd).desc.s = (*lr).sd;
                (*pfd).reqevents = sys::APR_POLLIN as i16;
                (*pfd).client_data = lr as *mut c_void;
                if sys::apr_pollset_add(pollset, pfd) != 0 {
                    if die_now() {
                        return Err(String::new());
                    }
                    return Err(
                        "Couldn't add listener to pollset; check system or user limits".into(),
                    );
                }
                (*lr).accept_func = Some(sys::ap_unixd_accept);
                lr = (*lr).next;
            }
            let bucket_alloc = sys::apr_bucket_alloc_create(pchild);
            Ok(Worker {
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
        // SAFETY: listener records and the pollset live in pconf/pchild;
        // output pointers are valid locals; csd is allocated in ptrans.
        unsafe {
            let lr: *mut sys::ap_listen_rec = if self.num_listeners == 1 {
                match buckets().0.get(self.bucket) {
                    Some(b) => b.listeners,
                    None => return AcceptOutcome::Sick,
                }
            } else {
                loop {
                    if should_stop() {
                        return AcceptOutcome::Stop;
                    }
                    let mut num: i32 = 0;
                    let mut pdesc: *const sys::apr_pollfd_t = ptr::null();
                    // 10 s timeout, to notice a graceful stop whose signal
                    // closed the sockets under us.
                    let st = sys::apr_pollset_poll(self.pollset, 10_000_000, &mut num, &mut pdesc);
                    if st != 0 {
                        if sys::itk_shim_status_is_timeup(st) != 0
                            || sys::itk_shim_status_is_eintr(st) != 0
                        {
                            continue;
                        }
                        super::log(
                            super::Level::Err,
                            st,
                            Server::main(),
                            "apr_pollset_poll: (listen)",
                        );
                        return AcceptOutcome::Sick;
                    }
                    if self.last_poll_idx >= num as usize {
                        self.last_poll_idx = 0;
                    }
                    let d = pdesc.add(self.last_poll_idx);
                    self.last_poll_idx += 1;
                    break (*d).client_data as *mut sys::ap_listen_rec;
                }
            };
            let mut csd: *mut c_void = ptr::null_mut();
            let accept = match (*lr).accept_func {
                Some(f) => f,
                None => return AcceptOutcome::Retry,
            };
            let st = accept(&mut csd, lr, self.ptrans);
            if st == sys::APR_EGENERAL {
                AcceptOutcome::Sick
            } else if st != 0 {
                AcceptOutcome::Retry
            } else {
                AcceptOutcome::Got(Accepted(csd))
            }
        }
    }

    /// After the connection child took over the socket, the worker drops its
    /// own copy (no lingering close here: the child did it).
    pub fn close_accepted(&self, a: Accepted) {
        // SAFETY: csd is the apr_socket_t accepted into ptrans.
        unsafe { sys::apr_socket_close(a.0 as *mut sys::apr_socket_t) };
    }

    /// Accounts the CPU time of the connection children this worker has
    /// reaped in its scoreboard slot, as prefork's children account the
    /// requests they serve: mod_status sums the slots' `times`. After the
    /// reap, the slot gets the worker's lifetime total: its own time plus
    /// its reaped children's (which include their CGIs), shown as the
    /// process's user and system time. The total is also what the next
    /// connection child starts from ([`account_request_cpu`]).
    pub fn account_children_cpu(&self) {
        let (u, s) = own_and_children_cpu();
        CPU_BASE.0.store(u, Ordering::Relaxed);
        CPU_BASE.1.store(s, Ordering::Relaxed);
        write_slot_cpu(self.slot, u, s);
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
        if let Some(r) = Retained::get() {
            r.set_mpm_state(mpmq::STOPPING);
        }
        set_handler(libc::SIGHUP, libc::SIG_IGN);
        set_handler(libc::SIGTERM, libc::SIG_IGN);
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

    /// In a freshly forked connection child: closes every descriptor vhost
    /// code has no business holding (the listening sockets, the pipe of
    /// death, the accept mutex) before a byte of the request is read.
    ///
    /// Fails (the caller drops the connection unread) if an accept mutex
    /// could not be taken out of reach.
    pub fn close_inherited_descriptors(&self) -> Result<(), String> {
        close_inherited_descriptors_of(self.bucket)?;
        // The worker's epoll instance still watches the listeners.
        // SAFETY: the pollset belongs to this process's copy of pchild and
        // is never used again here.
        unsafe { sys::apr_pollset_destroy(self.pollset) };
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

fn close_inherited_descriptors_of(bucket: usize) -> Result<(), String> {
    close_all_listeners();
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

/// The worker's CPU total (user, system, in clock ticks) when it last
/// reaped a connection child; a connection child inherits it.
static CPU_BASE: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// This process's CPU time plus that of its reaped children, in ticks.
fn own_and_children_cpu() -> (u64, u64) {
    // SAFETY: times() fills a local.
    let t = unsafe {
        let mut t: libc::tms = std::mem::zeroed();
        libc::times(&mut t);
        t
    };
    (
        (t.tms_utime + t.tms_cutime) as u64,
        (t.tms_stime + t.tms_cstime) as u64,
    )
}

fn write_slot_cpu(slot: usize, user: u64, system: u64) {
    // SAFETY: the slot is this process's, in the shared scoreboard.
    unsafe {
        let ws = worker_score(slot);
        ptr::write_volatile(
            ptr::addr_of_mut!((*ws).times),
            sys::tms {
                tms_utime: user as _,
                tms_stime: system as _,
                tms_cutime: 0,
                tms_cstime: 0,
            },
        );
    }
}

unsafe extern "C" fn request_cpu_cleanup(data: *mut c_void) -> sys::apr_status_t {
    super::guard("request_cpu_cleanup", 0, || {
        let (u, s) = own_and_children_cpu();
        write_slot_cpu(
            data as usize,
            CPU_BASE.0.load(Ordering::Relaxed) + u,
            CPU_BASE.1.load(Ordering::Relaxed) + s,
        );
        0
    })
}

/// In a connection child: once `r` is over (after httpd's own
/// `ap_increment_counts` has put this child's times alone into the slot),
/// put back the slot's total: the worker's, from before the fork, plus this
/// child's. mod_status then sees a worker's CPU time grow as prefork's
/// children's does, also while a connection is served.
pub fn account_request_cpu(r: super::Request, slot: usize) {
    // SAFETY: a cleanup on the request pool, registered after the
    // end-of-request bucket's (which calls ap_increment_counts), so it runs
    // after it; the DSO stays loaded while requests run; `data` is the slot
    // number, not a pointer.
    unsafe {
        sys::apr_pool_cleanup_register(
            r.pool_raw(),
            slot as *mut c_void,
            Some(request_cpu_cleanup),
            Some(sys::apr_pool_cleanup_null),
        );
    }
}

/// The worker's pchild (in a connection child: its copy).
static PCHILD: AtomicPtr<sys::apr_pool_t> = AtomicPtr::new(ptr::null_mut());

/// Whether connection children end through pchild's cleanups (see
/// [`connection_child_exit`]); decided at post_config.
static FULL_CHILD_EXIT: AtomicBool = AtomicBool::new(false);

pub fn set_full_child_exit(on: bool) {
    FULL_CHILD_EXIT.store(on, Ordering::Relaxed);
}

/// Ends a connection child, after its lingering close (SPEC §3.4).
///
/// The child_stopping hooks run first. Then, by default, `_exit`: the
/// kernel frees the memory and closes the descriptors. Destroying pchild
/// instead would run every cleanup that modules registered in child_init,
/// and for the common case they only free memory that is about to vanish:
/// mod_php's is a full engine shutdown that unloads every extension with
/// dlclose, which made up two thirds of a connection's CPU time
/// (bench/README.md). The one cleanup that matters is mod_log_config's
/// flush of `BufferedLogs On`: with it configured, pchild is destroyed as
/// prefork's clean_child_exit does.
pub fn connection_child_exit(code: i32) -> ! {
    let pchild = PCHILD.swap(ptr::null_mut(), Ordering::Relaxed);
    if !pchild.is_null() {
        // SAFETY: pchild is this process's copy of the worker pool; nothing
        // runs after its destruction but exit.
        unsafe {
            sys::ap_run_child_stopping(pchild, 0);
            if FULL_CHILD_EXIT.load(Ordering::Relaxed) {
                sys::apr_pool_destroy(pchild);
            }
        }
    }
    // SAFETY: _exit ends the process at once; the connection is closed and
    // every log line was written (unbuffered, or flushed above).
    unsafe { libc::_exit(code) }
}

/// Is the global directive `name` given with the argument `On` anywhere in
/// the configuration tree (inside `<IfModule>` and friends too)? For
/// directives of other modules whose state we cannot query, such as
/// mod_log_config's BufferedLogs.
pub fn config_flag_on(name: &str) -> bool {
    fn walk(mut d: *const sys::ap_directive_t, name: &str) -> bool {
        while !d.is_null() {
            // SAFETY: the tree lives in pconf for the whole generation;
            // its strings are NUL-terminated or null.
            let (directive, args, child, next) = unsafe {
                let n = &*d;
                (
                    super::c_to_string(n.directive),
                    super::c_to_string(n.args),
                    n.first_child as *const sys::ap_directive_t,
                    n.next as *const sys::ap_directive_t,
                )
            };
            if directive.eq_ignore_ascii_case(name) && args.trim().eq_ignore_ascii_case("on") {
                return true;
            }
            if walk(child, name) {
                return true;
            }
            d = next;
        }
        false
    }
    // SAFETY: read once, at post_config, in the parent (single-threaded).
    let root = unsafe { sys::ap_conftree } as *const sys::ap_directive_t;
    walk(root, name)
}

/// Did `stat`/`open` fail with EACCES? (re-export for the ITK hooks)
pub fn is_eacces(status: i32) -> bool {
    status_is_eacces(status)
}
