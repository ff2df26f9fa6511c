//! The prefork process model, ported from httpd's `server/mpm/prefork/prefork.c`
//! and kept recognisable: `pre_config`, `check_config`, `open_logs`, `run`
//! (prefork_run), `make_child`, `child_main`, `startup_children`,
//! `perform_idle_server_maintenance`.
//!
//! A root parent that never serves requests keeps a pool of pre-forked
//! workers between MinSpareServers and MaxSpareServers idle. The ITK part is
//! in `crate::itk`: a worker enters its sandbox before accepting, and hands
//! every accepted connection to a connection child.
#![forbid(unsafe_code)]

use crate::config::{self, MAX_SERVER_LIMIT};
use crate::httpd::child::{self, AcceptOutcome, Child as Worker};
use crate::httpd::process::{self, AP_SIG_GRACEFUL, APEXIT_CHILDFATAL, APEXIT_CHILDSICK, Reaped};
use crate::httpd::retained::{self, Unixd};
use crate::httpd::scoreboard::{self, SERVER_DEAD, SERVER_GRACEFUL, SERVER_READY, SERVER_STARTING};
use crate::httpd::{self as ffi, DONE, HTTP_INTERNAL_SERVER_ERROR, Level, OK, Pool, Server};
use crate::httpd::{core, listen, mpmq};
use mpm_itk_core::spare::{self, Action, Limits, SlotState};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

/// `-X` / `-DONE_PROCESS`: serve in the process that started.
static ONE_PROCESS: AtomicBool = AtomicBool::new(false);
static NUM_LISTENERS: AtomicUsize = AtomicUsize::new(0);

fn one_process() -> bool {
    ONE_PROCESS.load(Ordering::Relaxed)
}

/// prefork_retained_data: what the parent keeps across restarts (in
/// httpd's retained memory, which survives the DSO's reload), plus
/// mod_unixd's retained MPM state.
#[derive(Clone, Copy)]
pub struct Retained {
    fields: &'static [AtomicI32],
    unixd: Unixd,
}

/// The fields of [`Retained`], by index.
#[derive(Clone, Copy)]
enum Field {
    FirstServerLimit,
    MaxclientsReported,
    MaxDaemonsLimit,
    IdleSpawnRate,
    HoldOffOnExponentialSpawning,
}
const FIELDS: usize = 5;
// (A new key when the layout changes: a graceful restart into a newer build
// must not read an older block.)
const RETAINED_KEY: &std::ffi::CStr = c"mpm_itk_prefork_v2";

/// Set once pre_config attached the retained data in this DSO load.
static ATTACHED: AtomicBool = AtomicBool::new(false);

macro_rules! field {
    ($get:ident, $set:ident, $f:ident) => {
        pub fn $get(self) -> i32 {
            self.fields[Field::$f as usize].load(Ordering::Relaxed)
        }
        pub fn $set(self, v: i32) {
            self.fields[Field::$f as usize].store(v, Ordering::Relaxed)
        }
    };
}

macro_rules! unixd {
    ($($f:ident),*) => {
        $(pub fn $f(self) -> i32 {
            self.unixd.$f()
        })*
    };
}

impl Retained {
    fn lookup() -> (Retained, bool) {
        let (fields, created) = retained::array::<AtomicI32>(RETAINED_KEY, FIELDS);
        (
            Retained {
                fields,
                unixd: Unixd::get(),
            },
            created,
        )
    }

    /// prefork_pre_config's lookup: finds or creates the block, links it to
    /// mod_unixd's retained MPM data and counts module loads.
    fn attach() -> Retained {
        let (r, created) = Retained::lookup();
        if created {
            r.set_idle_spawn_rate(1);
        }
        r.unixd.attach(r.fields.as_ptr() as *const std::ffi::c_void);
        ATTACHED.store(true, Ordering::Relaxed);
        r
    }

    /// The block attached in this DSO load, if pre_config ran.
    pub fn get() -> Option<Retained> {
        ATTACHED
            .load(Ordering::Relaxed)
            .then(|| Retained::lookup().0)
    }

    field!(first_server_limit, set_first_server_limit, FirstServerLimit);
    field!(
        maxclients_reported,
        set_maxclients_reported,
        MaxclientsReported
    );
    field!(max_daemons_limit, set_max_daemons_limit, MaxDaemonsLimit);
    field!(idle_spawn_rate, set_idle_spawn_rate, IdleSpawnRate);
    field!(
        hold_off_on_exponential_spawning,
        set_hold_off_on_exponential_spawning,
        HoldOffOnExponentialSpawning
    );
    unixd!(
        mpm_state,
        shutdown_pending,
        restart_pending,
        is_ungraceful,
        my_generation,
        module_loads,
        was_graceful,
        num_buckets
    );
    pub fn set_mpm_state(self, v: i32) {
        self.unixd.set_mpm_state(v)
    }
    pub fn set_shutdown_pending(self, v: i32) {
        self.unixd.set_shutdown_pending(v)
    }
    pub fn set_my_generation(self, v: i32) {
        self.unixd.set_my_generation(v)
    }
    pub fn set_num_buckets(self, v: i32) {
        self.unixd.set_num_buckets(v)
    }
}

fn retained() -> Retained {
    Retained::get().expect("pre_config did not run")
}

fn tuning() -> config::Tuning {
    config::state().tuning
}

/// prefork_pre_config.
pub fn pre_config(pconf: Pool) -> i32 {
    let debug = core::config_define(c"DEBUG");
    let (no_detach, foreground) = if debug {
        ONE_PROCESS.store(true, Ordering::Relaxed);
        (false, true)
    } else {
        ONE_PROCESS.store(core::config_define(c"ONE_PROCESS"), Ordering::Relaxed);
        (
            core::config_define(c"NO_DETACH"),
            core::config_define(c"FOREGROUND"),
        )
    };
    core::mutex_register_accept(pconf);
    let r = Retained::attach();
    // Detach the second time around (the first pass only checks the
    // configuration).
    if r.module_loads() == 2 && !one_process() && !foreground {
        core::fatal_signal_setup(pconf);
        if let Err(rv) = core::detach(no_detach) {
            ffi::log(Level::Crit, rv, None, "apr_proc_detach failed");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    core::listen_pre_config();
    config::reset();
    core::set_extended_status(0);
    OK
}

/// A startup correction, logged as prefork logs it (on the console the first
/// time, in the error log on restarts).
fn warn(startup: bool, s: Server, msg: &str) {
    if startup {
        ffi::log_startup(Level::Warn, &format!("WARNING: {msg}"));
    } else {
        ffi::log(Level::Warn, 0, Some(s), msg);
    }
}

/// prefork_check_config: correct impossible values with a warning.
pub fn check_config(s: Server) -> i32 {
    let r = retained();
    let startup = r.module_loads() == 1;
    let mut st = config::state();
    let t = &mut st.tuning;
    if t.server_limit > MAX_SERVER_LIMIT {
        warn(
            startup,
            s,
            &format!(
                "ServerLimit of {} exceeds compile-time limit of {MAX_SERVER_LIMIT} servers, decreasing to {MAX_SERVER_LIMIT}.",
                t.server_limit
            ),
        );
        t.server_limit = MAX_SERVER_LIMIT;
    } else if t.server_limit < 1 {
        warn(
            startup,
            s,
            &format!(
                "ServerLimit of {} not allowed, increasing to 1.",
                t.server_limit
            ),
        );
        t.server_limit = 1;
    }
    // ServerLimit cannot change across a restart.
    if r.first_server_limit() == 0 {
        r.set_first_server_limit(t.server_limit);
    } else if t.server_limit != r.first_server_limit() {
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "changing ServerLimit to {} from original value of {} not allowed during restart",
                t.server_limit,
                r.first_server_limit()
            ),
        );
        t.server_limit = r.first_server_limit();
    }
    if t.daemons_limit > t.server_limit {
        warn(
            startup,
            s,
            &format!(
                "MaxRequestWorkers of {} exceeds ServerLimit value of {} servers, decreasing MaxRequestWorkers to {}. \
             To increase, please see the ServerLimit directive.",
                t.daemons_limit, t.server_limit, t.server_limit
            ),
        );
        t.daemons_limit = t.server_limit;
    } else if t.daemons_limit < 1 {
        warn(
            startup,
            s,
            &format!(
                "MaxRequestWorkers of {} not allowed, increasing to 1.",
                t.daemons_limit
            ),
        );
        t.daemons_limit = 1;
    }
    if t.daemons_to_start < 1 {
        warn(
            startup,
            s,
            &format!(
                "StartServers of {} not allowed, increasing to 1.",
                t.daemons_to_start
            ),
        );
        t.daemons_to_start = 1;
    }
    if t.min_spare < 1 {
        warn(
            startup,
            s,
            &format!(
                "MinSpareServers of {} not allowed, increasing to 1 to avoid almost certain server failure. \
             Please read the documentation.",
                t.min_spare
            ),
        );
        t.min_spare = 1;
    }
    OK
}

/// prefork_open_logs: listeners, buckets, pipes of death, accept mutexes.
pub fn open_logs(pconf: Pool, s: Server) -> i32 {
    let r = retained();
    if one_process() {
        r.set_num_buckets(1);
    } else if r.was_graceful() == 0 {
        // Preserve the number of buckets on graceful restarts.
        r.set_num_buckets(0);
    }
    let mut n = r.num_buckets();
    match listen::open_buckets(pconf, s, &mut n) {
        Ok(listeners) => {
            r.set_num_buckets(n);
            NUM_LISTENERS.store(listeners, Ordering::Relaxed);
            OK
        }
        Err(e) => {
            if r.module_loads() == 1 {
                ffi::log_startup(Level::Alert, &e);
            } else {
                ffi::log(Level::Alert, 0, Some(s), &e);
            }
            HTTP_INTERNAL_SERVER_ERROR
        }
    }
}

/// prefork_query: what `ap_mpm_query` answers. None = APR_ENOTIMPL.
pub fn query(code: i32) -> Option<i32> {
    // (httpd asks for the state on every request, mod_php for more: no
    // lookup of the retained data, no configuration lock for those; the
    // block is cached once pre_config attached it, None before)
    Some(match code {
        mpmq::MPM_STATE => Unixd::cached()?.mpm_state(),
        mpmq::GENERATION => Unixd::cached()?.my_generation(),
        // Not threaded: mod_php (non-thread-safe) loads and runs.
        mpmq::IS_THREADED => mpmq::NOT_SUPPORTED,
        mpmq::IS_FORKED => mpmq::DYNAMIC,
        mpmq::HARD_LIMIT_THREADS | mpmq::MAX_THREADS => 1,
        mpmq::MIN_SPARE_THREADS | mpmq::MAX_SPARE_THREADS => 0,
        mpmq::MAX_REQUESTS_DAEMON => core::max_requests_per_child(),
        mpmq::MAX_DAEMON_USED | mpmq::MAX_DAEMONS => tuning().daemons_limit,
        mpmq::HARD_LIMIT_DAEMONS => tuning().server_limit,
        mpmq::MIN_SPARE_DAEMONS => tuning().min_spare,
        mpmq::MAX_SPARE_DAEMONS => tuning().max_spare,
        _ => return None,
    })
}

/// The parent's own records of its workers: the pids it forked and has not
/// reaped yet, by scoreboard slot, with their generation. prefork keeps
/// them in the scoreboard, which every connection child (and so vhost code)
/// can write; here the scoreboard only mirrors them for mod_status, and
/// nothing the parent decides (how many workers, whom to signal, which slot
/// a reaped pid held) depends on what it says.
///
/// Kept in httpd's retained memory: they survive restarts, and unlike the
/// scoreboard they are private to the parent (a child only has a copy it
/// never uses), so vhost code cannot write them. One word per scoreboard
/// slot (`ServerLimit`, which cannot change across restarts): the pid in
/// the low half, the generation in the high half.
///
/// Beside each record, what the process is: a worker (0) or a user process
/// of a pool (`pools::encode_kind`, UserPools).
struct Children(&'static [AtomicU64], &'static [AtomicI32]);

/// One worker as the parent recorded it when it forked it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ChildRecord {
    /// 0: no worker in this slot.
    pid: i32,
    generation: i32,
}

fn children() -> Children {
    let n = retained().first_server_limit().max(1) as usize;
    Children(
        retained::array::<AtomicU64>(c"mpm_itk_children", n).0,
        retained::array::<AtomicI32>(c"mpm_itk_child_kinds", n).0,
    )
}

impl Children {
    fn get(&self, slot: usize) -> ChildRecord {
        self.0.get(slot).map_or_else(ChildRecord::default, |w| {
            let v = w.load(Ordering::Relaxed);
            ChildRecord {
                pid: v as u32 as i32,
                generation: (v >> 32) as u32 as i32,
            }
        })
    }
    fn is_free(&self, slot: usize) -> bool {
        slot < self.0.len() && self.get(slot).pid == 0
    }
    fn started(&self, slot: usize, pid: i32, generation: i32) {
        if let Some(w) = self.0.get(slot) {
            w.store(
                (pid as u32 as u64) | ((generation as u32 as u64) << 32),
                Ordering::Relaxed,
            );
        }
    }
    /// (slot, record) of every worker alive.
    fn live(&self) -> impl Iterator<Item = (usize, ChildRecord)> + '_ {
        (0..self.0.len())
            .map(|i| (i, self.get(i)))
            .filter(|(_, c)| c.pid > 0)
    }
    /// The pool and index of the user process in `slot`; None: a worker.
    fn pool_of(&self, slot: usize) -> Option<(usize, usize)> {
        self.1
            .get(slot)
            .and_then(|k| mpm_itk_core::pools::decode_kind(k.load(Ordering::Relaxed)))
    }
    fn set_kind(&self, slot: usize, kind: i32) {
        if let Some(k) = self.1.get(slot) {
            k.store(kind, Ordering::Relaxed);
        }
    }
    fn slot_of(&self, pid: i32) -> Option<usize> {
        self.live().find(|(_, c)| c.pid == pid).map(|(i, _)| i)
    }
    /// Forgets the worker in `slot` (reaped) and clears its traces: the
    /// scoreboard slot, its MaxClientsVHost word, the child_status hooks.
    fn ended(&self, slot: usize) {
        let rec = self.get(slot);
        self.started(slot, 0, 0);
        scoreboard::update_slot_status(slot, SERVER_DEAD);
        scoreboard::note_child_killed(slot, rec.pid, rec.generation);
        crate::itk::slot_finished(slot);
    }
}

/// make_child: fork a worker into scoreboard slot `slot`.
fn make_child(slot: usize) -> Result<(), ()> {
    let r = retained();
    let buckets = r.num_buckets().max(1) as usize;
    let bucket = slot % buckets;
    note_slot_used(slot);
    if one_process() {
        children().started(slot, std::process::id() as i32, r.my_generation());
        scoreboard::note_child_started(slot, std::process::id() as i32, r.my_generation());
        child_main(slot, 0);
    }
    // The worker runs inside its own panic boundary (fork_process): a panic
    // there ends that worker only, and the parent replaces it.
    let forked = fork_into_slot(
        slot,
        ("worker", "fork: Unable to fork new process"),
        child::set_worker_signals,
        || child_main(slot, bucket),
    );
    match forked {
        // Do not spin on a resource shortage.
        None => {
            process::sleep_secs(10);
            Err(())
        }
        Some(pid) => {
            record_started(slot, pid, 0);
            Ok(())
        }
    }
}

/// What make_child and make_pool_child share: the slot counts in
/// max_daemons_limit and shows SERVER_STARTING; the fork (the child's
/// signal handlers first; `what.0` names the child in a panic's log line);
/// a failed fork is logged (`what.1`) and leaves the slot SERVER_DEAD.
fn fork_into_slot(
    slot: usize,
    what: (&str, &str),
    signals: fn(),
    child: impl FnOnce() -> std::convert::Infallible,
) -> Option<i32> {
    note_slot_used(slot);
    scoreboard::update_slot_status(slot, SERVER_STARTING);
    match process::fork_process(what.0, signals, child) {
        Ok(pid) => Some(pid),
        Err(e) => {
            ffi::log(
                Level::Err,
                e.raw_os_error().unwrap_or(0),
                Server::main(),
                what.1,
            );
            scoreboard::update_slot_status(slot, SERVER_DEAD);
            None
        }
    }
}

/// Slots up to `slot` are in use: max_daemons_limit covers it.
fn note_slot_used(slot: usize) {
    let r = retained();
    if slot as i32 + 1 > r.max_daemons_limit() {
        r.set_max_daemons_limit(slot as i32 + 1);
    }
}

/// The parent's records and the scoreboard get a process it just forked
/// into `slot`: a worker (kind 0) or a user process.
fn record_started(slot: usize, pid: i32, kind: i32) {
    let generation = retained().my_generation();
    let kids = children();
    kids.set_kind(slot, kind);
    kids.started(slot, pid, generation);
    scoreboard::note_child_started(slot, pid, generation);
}

/// Forks process `index` of user pool `pool` (UserPools) into scoreboard
/// slot `slot`, above MaxRequestWorkers: the root parent starts it, and it
/// becomes the pool's user once.
fn make_pool_child(slot: usize, pool: usize, index: usize) {
    let listeners = NUM_LISTENERS.load(Ordering::Relaxed);
    let forked = fork_into_slot(
        slot,
        ("user process", "fork: Unable to fork a user process"),
        crate::pools::process_signals,
        || crate::pools::process_main(slot, pool, index, listeners),
    );
    if let Some(pid) = forked {
        record_started(slot, pid, mpm_itk_core::pools::encode_kind(pool, index));
        crate::pools::process_started(pool);
    }
}

/// The pools' part of perform_idle_server_maintenance: user processes where
/// connections took the classic path for want of one, in the free slots
/// between MaxRequestWorkers and ServerLimit.
fn maintain_pools(kids: &Children, generation: i32) {
    end_old_user_processes(kids, generation);
    let t = tuning();
    let live: Vec<(usize, usize)> = kids
        .live()
        .filter(|(_, c)| c.generation == generation)
        .filter_map(|(slot, _)| kids.pool_of(slot))
        .collect();
    let first = t.daemons_limit.max(0) as usize;
    let free: Vec<usize> = (first..t.server_limit.max(0) as usize)
        .filter(|&sl| kids.is_free(sl))
        .collect();
    for (slot, pool, index) in crate::pools::spawn_orders(&live, &free) {
        make_pool_child(slot, pool, index);
    }
}

/// User processes of an earlier generation were told to finish (graceful
/// restart); one that is still there after GracefulShutdownTimeout (or 5
/// minutes without one) ignores it (its code may have replaced the signal
/// handler): it is killed, so old generations cannot pile up in the slots.
fn end_old_user_processes(kids: &Children, generation: i32) {
    static SEEN: std::sync::Mutex<Vec<(i32, std::time::Instant)>> =
        std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let old: Vec<i32> = kids
        .live()
        .filter(|(slot, c)| c.generation != generation && kids.pool_of(*slot).is_some())
        .map(|(_, c)| c.pid)
        .collect();
    seen.retain(|(pid, _)| old.contains(pid));
    let grace = match core::graceful_shutdown_timeout() {
        n if n > 0 => std::time::Duration::from_secs(n as u64),
        _ => std::time::Duration::from_secs(300),
    };
    for pid in old {
        match seen.iter().find(|(p, _)| *p == pid) {
            None => seen.push((pid, std::time::Instant::now())),
            Some((_, since)) if since.elapsed() > grace => {
                ffi::log(
                    Level::Warn,
                    0,
                    Server::main(),
                    &format!(
                        "user process pid {pid} of an earlier generation did not finish within {} s; killing it",
                        grace.as_secs()
                    ),
                );
                process::signal_child(pid, libc::SIGKILL);
            }
            Some(_) => {}
        }
    }
}

/// startup_children: start `n` workers in free slots.
fn startup_children(mut n: i32) {
    let limit = tuning().daemons_limit.max(0) as usize;
    let kids = children();
    for slot in 0..limit {
        if n <= 0 {
            break;
        }
        if !kids.is_free(slot) {
            continue;
        }
        if make_child(slot).is_err() {
            break;
        }
        n -= 1;
    }
}

/// perform_idle_server_maintenance: keep the idle workers between
/// MinSpareServers and MaxSpareServers, ramping spawns up exponentially.
fn perform_idle_server_maintenance() {
    let r = retained();
    let t = tuning();
    let limit = t.daemons_limit.max(0) as usize;
    let kids = children();
    check_scoreboard(&kids, r.my_generation());
    // Free or taken from the parent's records; idle or busy from the
    // scoreboard, which vhost code can write: a lie there can only move
    // spawns and kills within MaxRequestWorkers.
    let slots: Vec<SlotState> = (0..limit)
        .map(|i| {
            if kids.is_free(i) {
                return SlotState::Dead;
            }
            match scoreboard::slot_status(i) {
                st if st == SERVER_STARTING || st == SERVER_READY => SlotState::Idle,
                _ => SlotState::Busy,
            }
        })
        .collect();
    let plan = spare::plan(
        &slots,
        Limits {
            min_spare: t.min_spare.max(0) as usize,
            max_spare: t.max_spare.max(0) as usize,
            daemons_limit: limit,
        },
        r.max_daemons_limit().max(0) as usize,
        r.idle_spawn_rate().max(1) as usize,
        r.hold_off_on_exponential_spawning().max(0) as usize,
    );
    maintain_pools(&kids, r.my_generation());
    r.set_max_daemons_limit((plan.max_daemons_limit as i32).max(r.max_daemons_limit()));
    r.set_idle_spawn_rate(plan.spawn_rate as i32);
    r.set_hold_off_on_exponential_spawning(plan.hold_off as i32);
    match plan.action {
        Action::KillOne => {
            // Through the pipe of death, so a worker that just picked up a
            // connection finishes it first. Rotate over the buckets.
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let buckets = r.num_buckets().max(1) as usize;
            let b = NEXT.fetch_add(1, Ordering::Relaxed) % buckets;
            listen::pod_signal(b);
        }
        Action::AtLimit => {
            if r.maxclients_reported() == 0 {
                ffi::log(
                    Level::Err,
                    0,
                    Server::main(),
                    "server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers setting",
                );
                r.set_maxclients_reported(1);
            }
        }
        Action::Spawn(free) => {
            if free.len() >= 8 {
                ffi::log(
                    Level::Info,
                    0,
                    Server::main(),
                    &format!(
                        "server seems busy, (you may need to increase StartServers, or Min/MaxSpareServers), \
                     spawning {} children, there are {} idle, and {} total children",
                        free.len(),
                        plan.idle,
                        plan.total
                    ),
                );
            }
            for slot in free {
                let _ = make_child(slot);
            }
        }
        Action::Nothing => {}
    }
}

/// Compares the scoreboard's process fields and generation with the
/// parent's records, puts the records back where they differ, and says so
/// (at most once a minute): only vhost code writing the shared scoreboard
/// makes them differ.
fn check_scoreboard(kids: &Children, generation: i32) {
    static LAST_WARNING: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut wrong = 0;
    for slot in 0..kids.0.len() {
        let rec = kids.get(slot);
        if scoreboard::repair_slot_process(slot, rec.pid, rec.generation) {
            wrong += 1;
        }
        if rec.pid == 0 && scoreboard::slot_status(slot) != SERVER_DEAD {
            scoreboard::set_slot_status_raw(slot, SERVER_DEAD);
            wrong += 1;
        }
    }
    if scoreboard::running_generation() != generation {
        scoreboard::set_running_generation(generation);
        wrong += 1;
    }
    if wrong == 0 {
        return;
    }
    let mut last = LAST_WARNING.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60)) {
        return;
    }
    *last = Some(std::time::Instant::now());
    ffi::log(
        Level::Warn,
        0,
        Server::main(),
        &format!(
            "the scoreboard disagrees with the parent's records of its workers in {wrong} fields \
             (pid, generation or status, written by vhost code?); the parent goes by its records \
             and has repaired the scoreboard"
        ),
    );
}

/// child_main: one worker's life. Never returns.
fn child_main(slot: usize, bucket: usize) -> ! {
    let r = retained();
    r.set_mpm_state(mpmq::STARTING);
    let mut w = match Worker::init(slot, bucket, NUM_LISTENERS.load(Ordering::Relaxed)) {
        Ok(w) => w,
        Err(e) => {
            if !e.is_empty() {
                ffi::log(Level::Emerg, 0, Server::main(), &e);
            }
            std::process::exit(if e.is_empty() { 0 } else { APEXIT_CHILDFATAL })
        }
    };
    // Instead of ap_run_drop_privileges: the worker sandbox recipe (see
    // crate::itk). A worker that cannot drop its privileges never serves.
    if let Err(e) = crate::itk::enter_worker_sandbox() {
        ffi::log(
            Level::Emerg,
            0,
            Server::main(),
            &format!(
                "worker pid {} (slot {slot}): cannot enter the worker sandbox: {e}; exiting",
                std::process::id()
            ),
        );
        w.exit(APEXIT_CHILDFATAL);
    }
    w.set_status(SERVER_READY);
    r.set_mpm_state(mpmq::RUNNING);

    let max_requests = core::max_requests_per_child();
    let mut served = 0;
    let serialized = listen::accept_serialized();
    let stop = || child::die_now() || r.shutdown_pending() != 0 || r.restart_pending() != 0;
    while !stop() {
        w.clear_transaction();
        if max_requests > 0 && served >= max_requests {
            w.exit(0);
        }
        served += 1;
        w.set_status(SERVER_READY);

        if let Err(rv) = w.accept_mutex_if(serialized, true) {
            if r.my_generation() != scoreboard::running_generation() {
                ffi::log(
                    Level::Debug,
                    rv,
                    Server::main(),
                    "couldn't grab the accept mutex",
                );
                w.exit(0);
            }
            ffi::log(
                Level::Emerg,
                rv,
                Server::main(),
                "couldn't grab the accept mutex",
            );
            std::process::exit(APEXIT_CHILDFATAL);
        }
        let outcome = w.accept(stop);
        if let Err(rv) = w.accept_mutex_if(serialized, false) {
            if r.my_generation() == scoreboard::running_generation() {
                ffi::log(
                    Level::Emerg,
                    rv,
                    Server::main(),
                    "couldn't release the accept mutex",
                );
                std::process::exit(APEXIT_CHILDFATAL);
            }
        }
        match outcome {
            AcceptOutcome::Got(sock) => {
                crate::itk::test_panic_point("worker");
                if let Some(sock) = crate::pools::dispatch(&w, sock) {
                    crate::itk::serve_connection(&w, sock, crate::pools::forget)
                }
            }
            AcceptOutcome::Retry => continue,
            AcceptOutcome::Sick => w.exit(APEXIT_CHILDSICK),
            AcceptOutcome::Stop => w.exit(0),
        }
        // Selected through the pipe of death: go away now. (A restart while
        // we were serving set die_now through the parent's signal; the
        // scoreboard's generation, which vhost code can write, is not
        // trusted for it.)
        if w.pod_check() {
            child::set_die_now();
        }
    }
    w.clear_transaction();
    w.exit(0)
}

/// Signals every worker the parent forked (its records, never the
/// scoreboard's pids), and the whole process group (CGIs, piped loggers)
/// when we lead it, i.e. when daemonised.
fn signal_workers(sig: i32) {
    // A switched connection child runs as another uid: its worker can no
    // longer signal it when it dies, and outside our own process group
    // (httpd in the foreground) killpg does not reach it either. So the
    // parent (root) signals the workers' children itself, first, while
    // they are still the workers' children.
    signal_connection_children(sig);
    for (_, c) in children().live() {
        process::signal_child(c.pid, sig);
    }
    process::killpg_own(sig);
}

/// Signals every current child of a worker (its connection child), one at
/// a time through a pidfd that is checked, once open, to hold a child of a
/// worker: a pid reused in between is never hit.
fn signal_connection_children(sig: i32) {
    let workers: Vec<i32> = children().live().map(|(_, c)| c.pid).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let of_a_worker = |pid: i32| parent_of(pid).is_some_and(|pp| workers.contains(&pp));
    for pid in dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| of_a_worker(*pid))
    {
        if let Ok(fd) = process::PidFd::open(pid) {
            if of_a_worker(pid) {
                fd.signal(sig);
            }
        }
    }
}

/// The parent pid of `pid`, from /proc/<pid>/stat.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A worker was reaped: forget it, and log what httpd's own report leaves
/// out. Returns its slot.
fn worker_ended(dead: &Reaped, s: Server) -> Option<usize> {
    let kids = children();
    let slot = kids.slot_of(dead.pid)?;
    if let Some((pool, index)) = kids.pool_of(slot) {
        user_process_ended(&kids, dead, s, slot, pool, index);
        return Some(slot);
    }
    if let Some(code) = dead
        .exit_code
        .filter(|c| ![0, APEXIT_CHILDSICK, APEXIT_CHILDFATAL].contains(c))
    {
        // e.g. process::PANIC_EXIT: the worker logged why.
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "worker pid {} (slot {slot}) exited with status {code}; its slot is free for a replacement",
                dead.pid
            ),
        );
    }
    let expected = [libc::SIGTERM, libc::SIGHUP, AP_SIG_GRACEFUL];
    if let Some(sig) = dead.signal.filter(|sg| !expected.contains(sg)) {
        // httpd's own report is silent for SIGKILL: say it.
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "worker pid {} (slot {slot}) died on signal {sig}; its slot is free for a replacement",
                dead.pid
            ),
        );
    }
    children().ended(slot);
    Some(slot)
}

/// A user process was reaped: log anything but a normal end, free its slot
/// and its idle flag (a replacement starts on demand).
fn user_process_ended(
    kids: &Children,
    dead: &Reaped,
    s: Server,
    slot: usize,
    pool: usize,
    index: usize,
) {
    let rec = kids.get(slot);
    let user = crate::pools::pool_user(pool);
    let expected = [libc::SIGTERM, libc::SIGHUP, AP_SIG_GRACEFUL];
    if let Some(sig) = dead.signal.filter(|sg| !expected.contains(sg)) {
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "user process pid {} of user {user} (slot {slot}) was killed by signal {sig}; a replacement starts on demand",
                dead.pid
            ),
        );
    } else if let Some(code) = dead.exit_code.filter(|&c| c != 0) {
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "user process pid {} of user {user} (slot {slot}) exited with status {code}",
                dead.pid
            ),
        );
    }
    kids.ended(slot);
    kids.set_kind(slot, 0);
    if rec.generation == retained().my_generation() {
        let others = kids
            .live()
            .filter(|(_, c)| c.generation == rec.generation)
            .any(|(sl, _)| kids.pool_of(sl).is_some_and(|(p, _)| p == pool));
        if crate::pools::process_ended(pool, index, others) {
            replace_for_queued(kids, pool);
        }
    }
}

/// Connections wait in the channel of `pool`, whose last process ended: a
/// replacement starts now and takes them, while the server runs and a slot
/// above MaxRequestWorkers is free; otherwise they are closed. At most one
/// immediate replacement per pool a second (the parent's own clock, not
/// shared memory): a replacement that dies at once (killed by its user's
/// code, or failing before it waits) must not make the parent fork in a
/// loop. Within that second the connections stay queued and the next
/// maintenance starts a process (at its usual rate).
fn replace_for_queued(kids: &Children, pool: usize) {
    use std::time::{Duration, Instant};
    static LAST: std::sync::Mutex<Vec<Option<Instant>>> = std::sync::Mutex::new(Vec::new());
    let r = retained();
    let t = tuning();
    let running =
        r.mpm_state() == mpmq::RUNNING && r.shutdown_pending() == 0 && r.restart_pending() == 0;
    let free = (t.daemons_limit.max(0) as usize..t.server_limit.max(0) as usize)
        .find(|&sl| kids.is_free(sl));
    let Some(slot) = free.filter(|_| running) else {
        crate::pools::drop_queued(pool);
        return;
    };
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.len() <= pool {
        last.resize(pool + 1, None);
    }
    let now = Instant::now();
    if last[pool].is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
        crate::pools::ask_for_process(pool);
        return;
    }
    last[pool] = Some(now);
    drop(last);
    make_pool_child(slot, pool, 0);
}

/// ap_relieve_child_processes over the parent's records: reaps the workers
/// that have exited.
fn relieve_children(s: Server) {
    let kids = children();
    let live: Vec<i32> = kids.live().map(|(_, c)| c.pid).collect();
    for pid in live {
        if let Some(dead) = process::try_reap(pid) {
            worker_ended(&dead, s);
        }
    }
}

/// ap_reclaim_child_processes over the parent's records: signals every
/// worker (SIGTERM if `terminate`), then waits for them, sending SIGTERM
/// again at 3, 5 and 7 s and SIGKILL at 9 s, and gives up at 10 s.
fn reclaim_children(terminate: bool, s: Server) {
    use std::time::{Duration, Instant};
    if terminate {
        signal_workers_only(libc::SIGTERM);
    }
    let start = Instant::now();
    let mut next = [3u64, 5, 7, 9, 10].into_iter().peekable();
    let mut wait = Duration::from_millis(16);
    loop {
        relieve_children(s);
        process::refresh_other_children();
        if children().live().next().is_none() {
            return;
        }
        std::thread::sleep(wait);
        wait = (wait * 4).min(Duration::from_secs(1));
        if next
            .peek()
            .is_some_and(|t| start.elapsed() >= Duration::from_secs(*t))
        {
            let at = next.next().unwrap_or(10);
            for (_, c) in children().live() {
                match at {
                    10 => ffi::log(
                        Level::Err,
                        0,
                        Some(s),
                        &format!(
                            "could not make child process {} exit, attempting to continue anyway",
                            c.pid
                        ),
                    ),
                    9 => {
                        ffi::log(
                            Level::Err,
                            0,
                            Some(s),
                            &format!(
                                "child process {} still did not exit, sending a SIGKILL",
                                c.pid
                            ),
                        );
                        process::signal_child(c.pid, libc::SIGKILL);
                    }
                    _ => {
                        ffi::log(
                            Level::Warn,
                            0,
                            Some(s),
                            &format!(
                                "child process {} still did not exit, sending a SIGTERM",
                                c.pid
                            ),
                        );
                        process::signal_child(c.pid, libc::SIGTERM);
                    }
                }
            }
            if at == 10 {
                return;
            }
        }
    }
}

/// Signals every recorded worker, not the process group.
fn signal_workers_only(sig: i32) {
    for (_, c) in children().live() {
        process::signal_child(c.pid, sig);
    }
}

/// What prefork's run returns after a fatal error in a worker (`!OK`).
const RUN_FAILED: i32 = 1;

/// prefork_run: the parent's main loop. Returns OK to restart, DONE to stop.
pub fn run(pconf: Pool, plog: Pool, s: Server) -> i32 {
    let r = retained();
    core::log_pid(pconf);
    if r.was_graceful() == 0 {
        if !core::run_pre_mpm() {
            r.set_mpm_state(mpmq::STOPPING);
            return DONE;
        }
        // A new, cleared scoreboard: fix its generation.
        scoreboard::set_running_generation(r.my_generation());
    }
    core::set_parent_signals(pconf, one_process());
    if one_process() {
        let _ = make_child(0);
        return DONE;
    }

    // Don't thrash since num_buckets depends on the system's cores.
    let buckets = r.num_buckets().max(1);
    {
        let mut st = config::state();
        let t = &mut st.tuning;
        t.daemons_limit = t.daemons_limit.max(buckets);
        t.daemons_to_start = t.daemons_to_start.max(buckets);
        t.min_spare = t.min_spare.max(buckets);
        t.max_spare = t.max_spare.max(t.min_spare + buckets);
    }
    let t = tuning();
    let mut remaining = t.daemons_to_start.min(t.daemons_limit);
    if r.was_graceful() == 0 {
        startup_children(remaining);
        remaining = 0;
    } else {
        // Give the system time to recover before exponential spawning.
        r.set_hold_off_on_exponential_spawning(10);
    }
    core::log_startup_banner(plog, &listen::accept_mutex_name());
    r.set_mpm_state(mpmq::RUNNING);

    while r.restart_pending() == 0 && r.shutdown_pending() == 0 {
        if let Some(dead) = process::wait_or_timeout(pconf) {
            // (A user process runs tenant code: its exit status decides
            // nothing.)
            let generation = children()
                .slot_of(dead.pid)
                .filter(|&sl| children().pool_of(sl).is_none())
                .map(|sl| children().get(sl).generation);
            if dead.processed_status == APEXIT_CHILDFATAL {
                // A fatal error in a worker of this generation stops the
                // server (prefork's rule); one of an old generation is
                // ignored, and so is a process that is no worker at all (an
                // orphan of vhost code re-parented to us when httpd is pid 1
                // must not be able to stop the server with exit(15)).
                if generation.is_some_and(|g| g == r.my_generation()) {
                    r.set_mpm_state(mpmq::STOPPING);
                    // prefork's `return !OK`: main logs "MPM run failed,
                    // exiting" (AH02818) and exits 1, so a supervisor sees
                    // the failure (DONE would be a clean exit 0).
                    return RUN_FAILED;
                }
                ffi::log(
                    Level::Warn,
                    0,
                    Some(s),
                    &format!(
                        "Ignoring fatal error in child of previous generation (pid {}).",
                        dead.pid
                    ),
                );
            }
            if let Some(slot) = worker_ended(&dead, s) {
                if dead.processed_status == APEXIT_CHILDSICK {
                    r.set_idle_spawn_rate(1);
                } else if remaining > 0 && (slot as i32) < t.daemons_limit {
                    // Still replacing dead workers 1 for 1.
                    let _ = make_child(slot);
                    remaining -= 1;
                }
            } else if process::other_child_died(&dead) {
                // a piped logger or mod_cgid's daemon: httpd restarts it
            } else if r.was_graceful() != 0 {
                ffi::log(
                    Level::Warn,
                    0,
                    Some(s),
                    &format!("long lost child came home! (pid {})", dead.pid),
                );
            }
            // No maintenance when a child dies: only on timeouts.
            continue;
        } else if remaining > 0 {
            // A second went by without reaping old-generation workers:
            // assume they are gone and pick up the slack.
            startup_children(remaining);
            remaining = 0;
            continue;
        }
        perform_idle_server_maintenance();
    }

    r.set_mpm_state(mpmq::STOPPING);
    let max_daemons = r.max_daemons_limit();

    if r.shutdown_pending() != 0 && r.is_ungraceful() != 0 {
        // SIGTERM: kill the workers (they take their connection children
        // with them), then wait for them.
        signal_workers(libc::SIGTERM);
        reclaim_children(false, s);
        core::remove_pid(pconf);
        ffi::log(Level::Notice, 0, Some(s), "caught SIGTERM, shutting down");
        return DONE;
    }

    if r.shutdown_pending() != 0 {
        // Graceful stop: stop listening, let idle workers go and the busy
        // ones finish their connection.
        core::close_all_listeners();
        listen::pod_killpg_all(max_daemons);
        signal_workers_only(AP_SIG_GRACEFUL);
        relieve_children(s);
        core::remove_pid(pconf);
        ffi::log(
            Level::Notice,
            0,
            Some(s),
            "caught SIGWINCH, shutting down gracefully",
        );
        let timeout = core::graceful_shutdown_timeout();
        let cutoff = (timeout > 0)
            .then(|| std::time::Instant::now() + std::time::Duration::from_secs(timeout as u64));
        r.set_shutdown_pending(0);
        loop {
            process::sleep_secs(1);
            relieve_children(s);
            let active = children().live().next().is_some();
            let timed_out = cutoff.is_some_and(|c| std::time::Instant::now() >= c);
            if r.shutdown_pending() != 0 || !active || timed_out {
                break;
            }
        }
        // Make sure everything is really gone (SIGTERM during the wait, or
        // the timeout expired).
        signal_workers(libc::SIGTERM);
        return DONE;
    }

    // Restart: advance to the next generation.
    r.set_my_generation(r.my_generation() + 1);
    scoreboard::set_running_generation(r.my_generation());
    if r.is_ungraceful() == 0 {
        ffi::log(
            Level::Notice,
            0,
            Some(s),
            "Graceful restart requested, doing restart",
        );
        listen::pod_killpg_all(max_daemons);
        for (slot, c) in children().live() {
            scoreboard::set_slot_status_raw(slot, SERVER_GRACEFUL);
            // Each worker the parent forked, not the process group: CGIs
            // and piped loggers must not get SIGUSR1.
            process::signal_child(c.pid, AP_SIG_GRACEFUL);
        }
    } else {
        signal_workers(libc::SIGHUP);
        reclaim_children(false, s);
        ffi::log(
            Level::Notice,
            0,
            Some(s),
            "SIGHUP received.  Attempting to restart",
        );
    }
    OK
}
