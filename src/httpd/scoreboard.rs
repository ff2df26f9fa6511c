//! The shared scoreboard: worker slots' status and times, the parent's
//! process records and the running generation.

use crate::sys;
use std::ffi::c_int;
use std::ptr;

pub use crate::sys::{SERVER_DEAD, SERVER_GRACEFUL, SERVER_READY, SERVER_STARTING};

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

/// Puts (user, system) CPU clock ticks into slot `slot`'s times, which
/// mod_status sums over the slots.
pub fn set_slot_times(slot: usize, user: u64, system: u64) {
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
