//! Processes: fork with a panic boundary, signals and their handlers,
//! waiting for and reaping children (as httpd reports them), pidfds, CPU
//! times.

use super::{Level, Pool, Server, log, panic_message};
use crate::sys;
use std::ffi::c_int;
use std::ptr;

pub const APEXIT_CHILDFATAL: i32 = sys::APEXIT_CHILDFATAL;
pub const APEXIT_CHILDSICK: i32 = sys::APEXIT_CHILDSICK;
pub const AP_SIG_GRACEFUL: i32 = sys::AP_SIG_GRACEFUL;
pub const AP_SIG_GRACEFUL_STOP: i32 = sys::AP_SIG_GRACEFUL_STOP;

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

/// The signals httpd's processes act on (stop, restart, graceful restart,
/// graceful stop, ^C): blocked across [`fork_process`].
const CONTROL_SIGNALS: [c_int; 5] = [
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGINT,
    AP_SIG_GRACEFUL,
    AP_SIG_GRACEFUL_STOP,
];

/// Blocks [`CONTROL_SIGNALS`]; returns the mask to restore.
fn block_control_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data filled by sigemptyset/sigaddset;
    // sigprocmask only changes this (single-threaded) process's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in CONTROL_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: restores a mask sigprocmask returned.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, ptr::null_mut()) };
}

/// Forks a process that runs `child` and never comes back: whatever happens
/// in it stays in it. A panic is logged (naming `what` and the pid) and the
/// process `_exit`s with [`PANIC_EXIT`]; it never unwinds into the parent's
/// frames (httpd's `main`, the MPM's loop), which would run the parent's
/// teardown in the child. Returns the child's pid in the parent.
///
/// `signals` installs the child's handlers first. Until it has, the control
/// signals stay blocked (in the parent too, for the fork itself): a stop or
/// graceful signal sent to the new pid just after the fork waits, pending,
/// for the child's own handler instead of running the handler inherited
/// from the parent (which would set a flag in the child's copy of the
/// parent's state, and the signal would be lost: a user process would then
/// sit out a graceful stop until its idle timeout).
///
/// The parent and the workers are single-threaded: httpd with a
/// non-threaded MPM starts no threads in them, and other modules' child_init
/// (which may start threads) runs only in connection children, which never
/// fork through here.
pub fn fork_process(
    what: &str,
    signals: fn(),
    child: impl FnOnce() -> std::convert::Infallible,
) -> std::io::Result<i32> {
    let old = block_control_signals();
    // SAFETY: called only by the parent and the workers (see above), and
    // the child below never returns.
    let forked = unsafe { fork_raw() };
    match forked {
        Ok(0) => {
            // (inside the panic boundary: nothing here unwinds into the
            // parent's frames)
            let run = || {
                signals();
                restore_signal_mask(&old);
                child()
            };
            let payload = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
                Ok(never) => match never {},
                Err(p) => p,
            };
            log(
                Level::Crit,
                0,
                Server::main(),
                &format!(
                    "panic in {what} pid {}: {}; exiting with status {PANIC_EXIT}",
                    std::process::id(),
                    panic_message(payload.as_ref())
                ),
            );
            // SAFETY: _exit ends this process without running the parent's
            // atexit handlers or unwinding further.
            unsafe { libc::_exit(PANIC_EXIT) }
        }
        other => {
            restore_signal_mask(&old);
            other
        }
    }
}

/// The sleep prefork does after a failed fork, so a resource shortage does
/// not become a busy loop.
pub fn sleep_secs(n: u64) {
    std::thread::sleep(std::time::Duration::from_secs(n));
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

/// What a signal does.
#[derive(Clone, Copy, Debug)]
pub enum Handler {
    Default,
    Ignore,
    /// A handler that only does async-signal-safe things.
    Run(extern "C" fn(c_int)),
}

/// Installs `h` for `sig` (empty mask, no flags: a blocking call is
/// interrupted with EINTR, as prefork expects).
pub fn set_handler(sig: c_int, h: Handler) {
    let h = match h {
        Handler::Default => libc::SIG_DFL,
        Handler::Ignore => libc::SIG_IGN,
        Handler::Run(f) => f as *const () as libc::sighandler_t,
    };
    // SAFETY: installs a handler with an empty mask; `Handler::Run`'s
    // contract keeps the handler async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = h;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(sig, &sa, ptr::null_mut());
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    Exited(i32),
    Signaled(i32, bool),
}

/// Waits for the child `pid`, retrying on EINTR.
pub fn wait_child(pid: i32) -> std::io::Result<ChildEnd> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: waits for our own child; status is a valid local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(if libc::WIFSIGNALED(status) {
                ChildEnd::Signaled(libc::WTERMSIG(status), libc::WCOREDUMP(status))
            } else {
                ChildEnd::Exited(libc::WEXITSTATUS(status))
            });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// This process's CPU time plus that of its reaped children, in ticks.
pub fn cpu_times() -> (u64, u64) {
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

/// Ends this process at once (`_exit`): no atexit handlers, no unwinding,
/// no pool cleanups.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// `kill(2)` usable in a signal handler (async-signal-safe).
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: plain syscall.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}
