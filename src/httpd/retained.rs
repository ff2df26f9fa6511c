//! Memory that survives the DSO unload/reload on every restart: httpd's
//! retained data (`ap_retained_data_*`), mod_unixd's retained MPM state,
//! and shared word tables whose address is kept there.

use crate::sys;
use std::ffi::{CStr, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Types for which all-zero bytes are a valid value and that may be shared
/// by reference (atomics, `Cell`s of plain integers in a single-threaded
/// process, and `repr(C)` structs of those).
///
/// # Safety
/// All-zero must be a valid value of the type, its layout must not change
/// between two builds that may follow each other on a graceful restart of
/// one server, and it must own no heap memory.
pub unsafe trait Zeroable {}

// SAFETY: zero is a valid atomic integer/pointer; fixed layout.
unsafe impl Zeroable for std::sync::atomic::AtomicI32 {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicU64 {}

/// The process's retained array of `n` zero-initialised `T` under `key`:
/// created on the first load, found again after every restart; and whether
/// it was just created. `n` must never grow for the same key during the
/// process's life.
pub fn array<T: Zeroable>(key: &'static CStr, n: usize) -> (&'static [T], bool) {
    let n = n.max(1);
    // SAFETY: ap_retained_data_get/create return process-pool memory (kept
    // for the process's life) of at least the requested size, zeroed on
    // creation, which is a valid T (Zeroable); the caller never grows `n`
    // for a key; APR aligns allocations to 8 bytes.
    unsafe {
        assert!(align_of::<T>() <= 8);
        let mut p = sys::ap_retained_data_get(key.as_ptr());
        let created = p.is_null();
        if created {
            p = sys::ap_retained_data_create(key.as_ptr(), n * size_of::<T>());
        }
        (std::slice::from_raw_parts(p as *const T, n), created)
    }
}

/// One retained `T` under `key`, and whether it was just created (first
/// load of the module in this process).
pub fn block<T: Zeroable>(key: &'static CStr) -> (&'static T, bool) {
    let (a, created) = array::<T>(key, 1);
    (&a[0], created)
}

/// mod_unixd's retained MPM state (`ap_unixd_mpm_retained_data`), which its
/// signal handlers set and every MPM reads.
#[derive(Clone, Copy)]
pub struct Unixd(*mut sys::ap_unixd_mpm_retained_data);

macro_rules! unixd_field {
    ($get:ident, $set:ident, $field:ident) => {
        unixd_field!($get, $field);
        pub fn $set(self, v: i32) {
            // SAFETY: as in the getter.
            unsafe { ptr::write_volatile(&mut (*self.0).$field, v) }
        }
    };
    ($get:ident, $field:ident) => {
        pub fn $get(self) -> i32 {
            // SAFETY: mod_unixd's block lives for the process; its signal
            // handlers write some fields, hence the volatile access.
            unsafe { ptr::read_volatile(&(*self.0).$field) }
        }
    };
}

/// The block's address once looked up (for signal handlers).
static UNIXD: AtomicPtr<sys::ap_unixd_mpm_retained_data> = AtomicPtr::new(ptr::null_mut());

impl Unixd {
    /// The block (mod_unixd creates it on first use).
    pub fn get() -> Unixd {
        // SAFETY: plain httpd call returning process-lifetime memory.
        let p = unsafe { sys::ap_unixd_mpm_get_retained_data() };
        UNIXD.store(p, Ordering::Relaxed);
        Unixd(p)
    }

    /// The block if [`Unixd::get`] ran in this process: no lookup, no
    /// allocation, so a signal handler may call it.
    pub fn cached() -> Option<Unixd> {
        let p = UNIXD.load(Ordering::Relaxed);
        (!p.is_null()).then_some(Unixd(p))
    }

    /// prefork_pre_config's bookkeeping: state STARTING, one more module
    /// load, and `was_graceful` cleared unless the MPM (identified by
    /// `baton`, the address of its own retained data) is the one that ran
    /// before.
    pub fn attach(self, baton: *const c_void) {
        // SAFETY: see the getters; single-threaded parent.
        unsafe {
            let m = self.0;
            (*m).mpm_state = sys::AP_MPMQ_STARTING;
            if !std::ptr::eq((*m).baton, baton) {
                (*m).was_graceful = 0;
                (*m).baton = baton as *mut c_void;
            }
            (*m).module_loads += 1;
        }
    }

    unixd_field!(mpm_state, set_mpm_state, mpm_state);
    unixd_field!(shutdown_pending, set_shutdown_pending, shutdown_pending);
    unixd_field!(restart_pending, restart_pending);
    unixd_field!(is_ungraceful, is_ungraceful);
    unixd_field!(my_generation, set_my_generation, my_generation);
    unixd_field!(module_loads, module_loads);
    unixd_field!(was_graceful, was_graceful);
    unixd_field!(num_buckets, set_num_buckets, num_buckets);
}

/// Where a [`SharedTable`] keeps its mapping (retained, so the table is
/// created once per process life and every later child inherits it).
#[repr(C)]
struct TableBlock {
    words: AtomicPtr<AtomicU64>,
    len: AtomicUsize,
}
// SAFETY: zero is a null pointer and a zero length; fixed layout.
unsafe impl Zeroable for TableBlock {}

/// A table of 64-bit words in anonymous shared memory (`MAP_SHARED`),
/// created once in the parent, seen by every process forked after it;
/// a process can unmap its own copy for good.
#[derive(Clone, Copy)]
pub struct SharedTable(&'static TableBlock);

impl SharedTable {
    /// The table under `key`, mapped with `slots` words if this process has
    /// none yet. None if it cannot be mapped.
    pub fn create(key: &'static CStr, slots: usize) -> Option<SharedTable> {
        let (b, _) = block::<TableBlock>(key);
        if b.words.load(Ordering::Relaxed).is_null() {
            let len = slots.max(1);
            // SAFETY: a fresh anonymous mapping; no memory of ours changes.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len * size_of::<u64>(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            b.len.store(len, Ordering::Relaxed);
            b.words.store(p as *mut AtomicU64, Ordering::Relaxed);
        }
        Some(SharedTable(b))
    }

    /// The table under `key` if this process maps it.
    pub fn get(key: &'static CStr) -> Option<SharedTable> {
        let (b, _) = block::<TableBlock>(key);
        (!b.words.load(Ordering::Relaxed).is_null()).then_some(SharedTable(b))
    }

    /// Runs `f` on the words, if this process still maps them.
    pub fn with<R>(self, f: impl FnOnce(&[AtomicU64]) -> R) -> Option<R> {
        let p = self.0.words.load(Ordering::Relaxed);
        if p.is_null() {
            return None;
        }
        // SAFETY: the mapping holds `len` words (all-zero is a valid
        // AtomicU64, which has u64's layout) and stays mapped while `f`
        // runs: only `unmap` removes it, and the processes using the table
        // are single-threaded, so it cannot run meanwhile.
        let words = unsafe { std::slice::from_raw_parts(p, self.0.len.load(Ordering::Relaxed)) };
        Some(f(words))
    }

    /// Unmaps this process's view for good: nothing can map it again (it
    /// has no name and no descriptor).
    pub fn unmap(self) {
        let p = self.0.words.swap(ptr::null_mut(), Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: our own mapping of `len` words; no reference into it
            // outlives a `with` call, and none runs (single-threaded).
            unsafe {
                libc::munmap(p as *mut c_void, self.0.len.load(Ordering::Relaxed) * 8);
            }
        }
    }
}
