//! The ITK part: every connection is served by its own connection child,
//! which becomes the vhost's user after httpd has parsed the request and
//! merged the per-directory configuration.
//!
//! * [`enter_worker_sandbox`]: the worker's privilege recipe (before accept).
//! * [`serve_connection`]: fork, close inherited descriptors, serve, exit;
//!   the worker reaps the child and goes back to accept.
//! * [`post_perdir_config`]: MaxClientsVHost, NiceValue, resolving the
//!   identity, the switch; a keep-alive request for another uid closes the
//!   connection.
//! * [`after_stat`] / [`after_htaccess_open`]: EACCES after the switch closes
//!   the connection instead of answering 403.
#![forbid(unsafe_code)]

use crate::config;
use crate::httpd::child::{self, Accepted, Child as Worker};
use crate::httpd::process::{self, ChildEnd};
use crate::httpd::retained::{SharedTable, Unixd};
use crate::httpd::{
    self as ffi, Conn, HTTP_INTERNAL_SERVER_ERROR, HTTP_SERVICE_UNAVAILABLE, Level, OK, Pool,
    Request, Server, core, scoreboard, status_is_eacces,
};
use mpm_itk_core::connection::{CloseWhy, Decision, State as ConnState};
use mpm_itk_core::directives;
use mpm_itk_core::ids::{self, Identity};
use mpm_itk_core::limits::{self, Admission};
use mpm_itk_core::privileges::{self, CapsHashSet, PrivError, RealSys, Sys, Target, WorkerPlan};
use mpm_itk_core::ranges::{self, Allowed, ExprPolicy};
use mpm_itk_core::seccomp;
use mpm_itk_core::target;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Resolved at configuration time, in the parent, inherited by every worker.
struct Prepared {
    /// `User`/`Group` with the user's supplementary groups.
    server: Arc<Identity>,
    allowed: Allowed,
    /// Who AssignUserIDExpr / AssignGroupIDExpr may choose.
    expr_policy: ExprPolicy,
    filter: Vec<seccompiler::sock_filter>,
    /// What the server was started with, if it runs as root (else the
    /// checks that need it are left to the real start).
    caps: Option<CapsHashSet>,
    /// The workers' real uid (EnableCapabilities On), 0 if no free one.
    worker_real_uid: u32,
}

static PREPARED: Mutex<Option<Prepared>> = Mutex::new(None);

fn prepared() -> MutexGuard<'static, Option<Prepared>> {
    PREPARED.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection child's identity state ([`connection::State`]).
static CONN: Mutex<ConnState> = Mutex::new(ConnState::Fresh);
/// Scoreboard slot of this worker (and of its connection child).
static MY_SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn conn_state() -> MutexGuard<'static, ConnState> {
    CONN.lock().unwrap_or_else(|e| e.into_inner())
}

fn pid() -> u32 {
    std::process::id()
}

/// check_config: resolve User/Group, validate every static AssignUserID
/// against the ranges, compile the seccomp filter. Errors stop `-t`.
pub fn check_config(_pconf: Pool, _s: Server) -> i32 {
    match prepare() {
        Ok(p) => {
            *prepared() = Some(p);
            OK
        }
        Err(e) => {
            ffi::log_startup(Level::Emerg, &format!("mpm-itk: {e}"));
            HTTP_INTERNAL_SERVER_ERROR
        }
    }
}

fn prepare() -> Result<Prepared, String> {
    if let Some(dir) = core::unixd_chroot_dir() {
        // mod_unixd performs ChrootDir in its drop_privileges hook, which the
        // worker sandbox replaces: refuse rather than silently ignore it.
        return Err(format!("ChrootDir {dir} is not supported with mpm-itk"));
    }
    let (user, uid, gid) = core::unixd_user_group();
    if uid == 0 || uid == u32::MAX || gid == 0 || gid == u32::MAX {
        return Err(format!(
            "User/Group must name an unprivileged account (got User '{user}' uid {uid}, gid {gid}); \
             vhosts without AssignUserID run as them"
        ));
    }
    let name = ids::resolve_user(&user).ok().and_then(|(_, n, _)| n);
    let groups = ids::supplementary_groups(name.as_deref(), gid)
        .map_err(|e| format!("User '{user}': {e}"))?
        .into_iter()
        .filter(|g| *g != 0)
        .collect();
    let server = Identity {
        user: name.unwrap_or(user),
        uid,
        gid,
        groups,
    };
    let st = config::state();
    let allowed = Allowed {
        uids: st.globals.uid_range,
        gids: st.globals.gid_range,
        server_uid: uid,
        server_gid: gid,
    };
    for (id, at) in &st.identities {
        if !allowed.uid_ok(id.uid) {
            return Err(format!(
                "AssignUserID at {at}: uid {} of '{}' is outside LimitUIDRange {}",
                id.uid, id.user, allowed.uids
            ));
        }
        if !allowed.gid_ok(id.gid) {
            return Err(format!(
                "AssignUserID at {at}: gid {} is outside LimitGIDRange {}",
                id.gid, allowed.gids
            ));
        }
    }
    let filter =
        seccomp::build(&allowed).map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    let login_defs = std::fs::read_to_string("/etc/login.defs").unwrap_or_default();
    let id_min = |key| ranges::login_defs_value(&login_defs, key).unwrap_or(ranges::DEFAULT_ID_MIN);
    let expr_policy = ExprPolicy {
        uid_min: id_min("UID_MIN"),
        gid_min: id_min("GID_MIN"),
        explicit_uids: st
            .globals
            .uid_range_explicit
            .then_some(st.globals.uid_range),
        explicit_gids: st
            .globals
            .gid_range_explicit
            .then_some(st.globals.gid_range),
        server_uid: uid,
        server_gid: gid,
    };
    let caps = if nix::unistd::geteuid().is_root() {
        let caps = privileges::effective_capabilities()
            .map_err(|e| format!("cannot read this process's capabilities: {e}"))?;
        check_nice_values(&caps, &st.nice_values)?;
        Some(caps)
    } else {
        None
    };
    // A real uid of the workers' own: no account, no vhost, no explicit
    // range, mapped in this user namespace.
    // (no uid_map: a kernel without user namespaces maps every uid)
    let uid_map =
        std::fs::read_to_string("/proc/self/uid_map").unwrap_or_else(|_| "0 0 4294967295\n".into());
    let explicit = st
        .globals
        .uid_range_explicit
        .then_some(st.globals.uid_range);
    let worker_real_uid = ids::free_worker_uid(&uid_map, |u| {
        u == uid
            || explicit.is_some_and(|r| r.contains(u))
            || st.identities.iter().any(|(id, _)| id.uid == u)
    })
    .unwrap_or(0);
    Ok(Prepared {
        server: Arc::new(server),
        allowed,
        expr_policy,
        filter,
        caps,
        worker_real_uid,
    })
}

/// Without CAP_SYS_NICE (a container's default set) no NiceValue below the
/// server's own nice value can ever be applied: a configuration error
/// naming the directive, never a silent no-op.
fn check_nice_values(caps: &CapsHashSet, values: &[(i32, String)]) -> Result<(), String> {
    let can = caps.contains(&privileges::Capability::CAP_SYS_NICE);
    let now = privileges::current_nice().map_err(|e| format!("getpriority: {e}"))?;
    directives::check_nice_values(values, now, can)
}

/// What the server lacks of the capabilities the workers use, said once at
/// startup: refuse without the required ones, warn about the optional ones
/// (and about no_new_privs forced by a missing CAP_SYS_ADMIN).
fn check_capabilities(s: Server, caps: &CapsHashSet, no_new_privs: bool) -> Result<(), ()> {
    let mut missing: Vec<String> = privileges::required_capabilities()
        .difference(caps)
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        missing.sort();
        ffi::log(
            Level::Emerg,
            0,
            Some(s),
            &format!(
                "mpm-itk: the server was started without {}, which switching to the vhost users needs \
                 (a container or service manager took them away); refusing to start",
                missing.join(", ")
            ),
        );
        return Err(());
    }
    if config::state().globals.enable_caps {
        for (cap, loss) in privileges::optional_capabilities() {
            if !caps.contains(&cap) {
                ffi::log(
                    Level::Warn,
                    0,
                    Some(s),
                    &format!(
                        "mpm-itk: the server was started without {cap} (a container's default \
                         capability set?): {loss}"
                    ),
                );
            }
        }
    }
    if !no_new_privs && !caps.contains(&privileges::Capability::CAP_SYS_ADMIN) {
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            "mpm-itk: the server was started without CAP_SYS_ADMIN (a container's default \
             capability set?), and the kernel installs a seccomp filter without it only under \
             no_new_privs: the workers run as with NoNewPrivileges On, so setgid helpers such \
             as postdrop (PHP's mail()) cannot gain their group",
        );
    }
    Ok(())
}

/// NoNewPrivileges, or forced without CAP_SYS_ADMIN (see check_capabilities).
fn no_new_privs(p: &Prepared) -> bool {
    config::state().globals.no_new_privs
        || p.caps
            .as_ref()
            .is_some_and(|c| !c.contains(&privileges::Capability::CAP_SYS_ADMIN))
}

/// What a worker keeps with EnableCapabilities On: the four, less those the
/// server lacks.
fn worker_keeps(p: &Prepared) -> CapsHashSet {
    let four = privileges::worker_capabilities();
    match &p.caps {
        Some(c) => four.intersection(c).copied().collect(),
        None => four,
    }
}

/// post_config: version banner; refuse to start where the confinement
/// cannot work (not root, no seccomp).
pub fn post_config(pconf: Pool, s: Server) -> i32 {
    core::add_version_component(pconf, &format!("mpm-itk/{VERSION}"));
    if Unixd::get().module_loads() < 2 {
        // The first (preflight) pass only checks the configuration.
        return OK;
    }
    if nix::unistd::geteuid().as_raw() != 0 {
        ffi::log(
            Level::Emerg,
            0,
            Some(s),
            "mpm-itk must be started as root: it switches every connection to its vhost's user",
        );
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if core::module_loaded(c"mod_http2.c") {
        // As under prefork (mod_http2's AH10034), which mod_http2 does not
        // recognise us as: the engines this MPM exists for (mod_php) are not
        // thread-safe, and HTTP/2 runs a connection's streams on several
        // threads at once. Without h2/h2c in any Protocols list, ALPN, the
        // h2c Upgrade and the prior-knowledge preface all stay HTTP/1.1.
        let removed = core::remove_protocols(&["h2", "h2c"]);
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "mpm-itk: mod_http2 is loaded, but HTTP/2 is inactive under mpm-itk, as under prefork: \
                 the engines it runs (mod_php) are not thread-safe and HTTP/2 would run a connection's \
                 streams on several threads; h2 and h2c were removed from the Protocols lists \
                 ({removed} entries), so every connection speaks HTTP/1.1"
            ),
        );
    }
    if core::module_loaded(c"mod_cgid.c") {
        // mod_cgid's daemon is forked by the parent and runs every CGI as
        // User, outside any connection child: never as the vhost's user.
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            "mpm-itk: mod_cgid is loaded: its daemon runs CGI programs as User for every vhost, \
             not as the vhost's AssignUserID user; load mod_cgi instead (a2dismod cgid; a2enmod cgi)",
        );
    }
    let enable_caps = config::state().globals.enable_caps;
    if enable_caps && prepared().as_ref().is_some_and(|p| p.worker_real_uid == 0) {
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            "mpm-itk: no free uid between 65000 and 65533 for the workers' real uid (each has an \
             account, a vhost or is in LimitUIDRange); the workers keep real uid 0, so code running \
             before the switch could signal root processes",
        );
    }
    let nnp = config::state().globals.no_new_privs;
    let caps = prepared().as_ref().and_then(|p| p.caps.clone());
    if let Some(caps) = caps {
        if check_capabilities(s, &caps, nnp).is_err() {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    if !seccomp::available() {
        ffi::log(
            Level::Emerg,
            0,
            Some(s),
            "mpm-itk: this kernel or container does not offer seccomp filters, which enforce LimitUIDRange/LimitGIDRange; refusing to start",
        );
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    // mod_log_config flushes BufferedLogs in a pchild cleanup: only then
    // do connection children pay for destroying pchild at exit.
    FULL_CHILD_EXIT.store(core::config_flag_on("BufferedLogs"), Ordering::Relaxed);
    let slots = crate::config::state().tuning.server_limit.max(1) as usize;
    {
        if SharedTable::create(VHOST_TABLE, slots).is_none() {
            ffi::log(
                Level::Emerg,
                0,
                Some(s),
                "mpm-itk: cannot map the MaxClientsVHost table",
            );
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    OK
}

/// Recipe 1, with this configuration: called by child_main before accept.
pub fn enter_worker_sandbox() -> Result<(), String> {
    let p = prepared();
    let p = p.as_ref().ok_or("configuration was not prepared")?;
    let g = config::state().globals;
    let plan = WorkerPlan {
        uid: p.server.uid,
        gid: p.server.gid,
        groups: p.server.groups.clone(),
        enable_caps: g.enable_caps,
        real_uid: p.worker_real_uid,
        keep: worker_keeps(p),
        no_new_privs: no_new_privs(p),
        dumpable: core::coredumpdir_configured(),
        filter: p.filter.clone(),
    };
    privileges::enter_worker_sandbox(&mut RealSys, &plan).map_err(|e| {
        format!(
            "{e} (User uid {} gid {}, EnableCapabilities {})",
            plan.uid,
            plan.gid,
            if plan.enable_caps { "On" } else { "Off" }
        )
    })
}

/// The worker hands an accepted connection to a connection child and waits
/// for it; the scoreboard slot shows the connection while the child serves.
///
/// `forget` runs in the connection child before it reads a byte: what the
/// caller holds that vhost code must not reach (UserPools: every pool's
/// channel and shared words).
pub fn serve_connection(w: &Worker, sock: Accepted, forget: fn()) {
    MY_SLOT.store(w.slot(), Ordering::Relaxed);
    // The connection child runs inside its own panic boundary: a panic
    // there ends this connection only.
    match process::fork_process(
        "connection child",
        child::set_finish_connection_signals,
        || connection_child(w, &sock, forget),
    ) {
        Ok(child) => {
            match child::wait_helper(child) {
                Ok(ChildEnd::Exited(0)) => {}
                Ok(ChildEnd::Exited(code)) => ffi::log(
                    Level::Err,
                    0,
                    Server::main(),
                    &format!(
                        "connection child pid {child} of worker pid {} exited with status {code}",
                        pid()
                    ),
                ),
                Ok(ChildEnd::Signaled(sig, core)) => ffi::log(
                    Level::Err,
                    0,
                    Server::main(),
                    &format!(
                        "connection child pid {child} of worker pid {} was killed by signal {sig}{}",
                        pid(),
                        if core { " (core dumped)" } else { "" }
                    ),
                ),
                Err(e) => ffi::log(
                    Level::Err,
                    e.raw_os_error().unwrap_or(0),
                    Server::main(),
                    &format!("waitpid for connection child pid {child} failed"),
                ),
            }
            slot_finished(w.slot());
            account_children_cpu(w.slot());
            w.close_accepted(sock);
        }
        Err(e) => {
            ffi::log(
                Level::Err,
                e.raw_os_error().unwrap_or(0),
                Server::main(),
                "fork: unable to fork a connection child; dropping the connection",
            );
            w.close_accepted(sock);
        }
    }
}

/// The connection child: never returns.
fn connection_child(w: &Worker, sock: &Accepted, forget: fn()) -> ! {
    test_panic_point("child");
    // Before a byte is read: nothing vhost code could misuse stays open
    // (the listening sockets, the pipe of death, the accept mutex, the
    // user pools' channels and words).
    forget();
    if let Err(e) = w.close_listening_side() {
        ffi::log(
            Level::Err,
            0,
            Server::main(),
            &format!(
                "connection child pid {}: {e}; dropping the connection unread",
                pid()
            ),
        );
        connection_child_exit(1)
    }
    // Each connection child is a fresh "prefork child" for other modules.
    w.run_child_init();
    test_thread_keeping_caps();
    w.process_connection(sock);
    connection_child_exit(0)
}

/// The test-only switch: with `MPM_ITK_TEST_HOOKS=<dir>` in httpd's
/// environment, the first process to reach `point` while the file
/// `<dir>/<point>` exists removes it and gets true. Tests use it to inject
/// failures a correct configuration never produces. Only whoever sets
/// httpd's environment can turn it on.
fn test_trigger(point: &str) -> bool {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| std::env::var_os("MPM_ITK_TEST_HOOKS").map(Into::into));
    dir.as_ref()
        .is_some_and(|d| std::fs::remove_file(d.join(point)).is_ok())
}

/// Test hook: panics at `point` ("worker": a worker that just accepted a
/// connection; "child": a fresh connection child; "switch": the switch
/// hook), to check that a panic stays in its process.
pub fn test_panic_point(point: &str) {
    if test_trigger(point) {
        panic!("test panic injected at {point} (MPM_ITK_TEST_HOOKS)");
    }
}

/// Test hook: sleeps `secs` at `point` ("user-process-start": a user
/// process just forked, before its signal handlers), to widen a race
/// window a test then hits every time.
pub fn test_pause_point(point: &str, secs: u64) {
    if test_trigger(point) {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
}

/// Test hook "thread-keeps-caps": after child_init, starts a thread that
/// asks the kernel to keep its capabilities across uid changes, as a
/// careless module could; the check after the switch must then fail the
/// request.
fn test_thread_keeping_caps() {
    if !test_trigger("thread-keeps-caps") {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(privileges::RealSys.set_keep_caps(true));
        loop {
            std::thread::park();
        }
    });
    let _ = rx.recv();
}

/// Whether connection children end through pchild's cleanups (see
/// [`connection_child_exit`]); decided at post_config.
static FULL_CHILD_EXIT: AtomicBool = AtomicBool::new(false);

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
fn connection_child_exit(code: i32) -> ! {
    // A user process (UserPools) served many connections and ran
    // child_init once: it ends as a prefork child does.
    let full = FULL_CHILD_EXIT.load(Ordering::Relaxed) || IN_POOL.load(Ordering::Relaxed);
    child::end(code, full)
}

/// Set in a user process of a pool (UserPools).
static IN_POOL: AtomicBool = AtomicBool::new(false);

/// Closes the request's connection without an answer and ends the process
/// (a connection child, or a user process, which the parent replaces).
pub fn close_connection(r: Request) -> ! {
    close_and_exit(r.conn())
}

/// The identity of a vhost's top-level configuration: its AssignUserID
/// (an index into the configuration's identities), or else User/Group.
pub fn vhost_identity(assigned: Option<usize>) -> Option<Identity> {
    match assigned {
        Some(i) => config::state()
            .identities
            .get(i)
            .map(|(id, _)| Identity::clone(id)),
        None => prepared().as_ref().map(|p| Identity::clone(&p.server)),
    }
}

/// A user process of a pool becomes `id` for good, at `nice`: the worker
/// sandbox recipe, then the switch (recipe 2) with the same checks as a
/// connection child's, before it runs child_init or reads a byte. From
/// then on every request must be for this identity (the state machine
/// closes the connection otherwise).
pub fn become_pool_user(slot: usize, id: &Identity, nice: Option<i32>) -> Result<(), String> {
    MY_SLOT.store(slot, Ordering::Relaxed);
    IN_POOL.store(true, Ordering::Relaxed);
    if let Some(t) = SharedTable::get(VHOST_TABLE) {
        t.unmap();
    }
    let base_nice = privileges::current_nice().map_err(|e| format!("getpriority: {e}"))?;
    enter_worker_sandbox()?;
    let allowed = prepared()
        .as_ref()
        .map(|p| p.allowed.clone())
        .ok_or("configuration was not prepared")?;
    let tgt = Target {
        uid: id.uid,
        gid: id.gid,
        groups: id.groups.clone(),
        nice,
    };
    privileges::become_vhost_user(&mut RealSys, &tgt, &allowed).map_err(|e| {
        format!(
            "cannot become user {} (uid {} gid {}): {e}",
            id.user, id.uid, id.gid
        )
    })?;
    *conn_state() = ConnState::switched(id.uid, id.gid, nice, base_nice);
    Ok(())
}

/// Closes the connection without an answer and ends the connection child
/// (SPEC §3.3).
fn close_and_exit(c: Conn) -> ! {
    c.lingering_close();
    connection_child_exit(0)
}

/// The worker's CPU total (user, system, in clock ticks) when it last
/// reaped a connection child; a connection child inherits it.
static CPU_BASE: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));

/// In the worker, after it reaped a connection child: accounts the CPU time
/// of its reaped children in its scoreboard slot, as prefork's children
/// account the requests they serve (mod_status sums the slots' times). The
/// slot gets the worker's lifetime total: its own time plus its reaped
/// children's (which include their CGIs). The total is also what the next
/// connection child starts from ([`account_request_cpu`]).
fn account_children_cpu(slot: usize) {
    let (u, s) = process::cpu_times();
    CPU_BASE.0.store(u, Ordering::Relaxed);
    CPU_BASE.1.store(s, Ordering::Relaxed);
    scoreboard::set_slot_times(slot, u, s);
}

/// In a connection child: once `r` is over (after httpd's own
/// `ap_increment_counts` has put this child's times alone into the slot),
/// put back the slot's total: the worker's, from before the fork, plus this
/// child's. mod_status then sees a worker's CPU time grow as prefork's
/// children's does, also while a connection is served.
fn account_request_cpu(r: Request, slot: usize) {
    fn put_total(slot: usize) {
        let (u, s) = process::cpu_times();
        scoreboard::set_slot_times(
            slot,
            CPU_BASE.0.load(Ordering::Relaxed) + u,
            CPU_BASE.1.load(Ordering::Relaxed) + s,
        );
    }
    child::on_request_end(r, put_total, slot);
}

/// The MaxClientsVHost table: which vhost each worker slot's connection
/// child serves now, one word per scoreboard slot, shared by every process
/// that runs no vhost code.
const VHOST_TABLE: &std::ffi::CStr = c"mpm_itk_vhost_table";

/// The slot's connection is over (child reaped, or worker died).
pub fn slot_finished(slot: usize) {
    if let Some(t) = SharedTable::get(VHOST_TABLE) {
        t.with(|t| {
            if let Some(word) = t.get(slot) {
                word.store(0, Ordering::SeqCst);
            }
        });
    }
}

/// What this connection child counts as in the MaxClientsVHost table:
/// (vhost key, whether that vhost has a limit).
static COUNTED: Mutex<Option<(u64, bool)>> = Mutex::new(None);

fn counted() -> MutexGuard<'static, Option<(u64, bool)>> {
    COUNTED.lock().unwrap_or_else(|e| e.into_inner())
}

/// MaxClientsVHost for this request ([`limits::admit`]). Only processes
/// that run no vhost code have the table: a connection child unmaps it at
/// the switch, so vhost code can never forge another vhost's count (README,
/// "Security model").
fn admit(key: u64, limit: Option<u32>) -> Admission {
    let slot = MY_SLOT.load(Ordering::Relaxed);
    let mut counted = counted();
    let table = SharedTable::get(VHOST_TABLE);
    match table.and_then(|t| t.with(|t| limits::admit(Some(t), slot, key, limit, &mut counted))) {
        Some(a) => a,
        None => limits::admit(None, slot, key, limit, &mut counted),
    }
}

/// Why a request could not get its identity.
enum Refusal {
    Expr(String),
    /// Something that cannot be missing was missing: never fall back to
    /// another identity.
    Internal(String),
    Priv(PrivError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Expr(s) | Refusal::Internal(s) => f.write_str(s),
            Refusal::Priv(p) => p.fmt(f),
        }
    }
}

/// The identity this request must run as ([`target::resolve`]): the
/// expressions are evaluated for this request, users and groups read from
/// the system's database. `assigned` is the request's AssignUserID (None:
/// none; `Some(None)`: missing from the configuration). Without an
/// expression, the answer borrows `assigned` or `server`: no copy.
fn resolve_target<'a>(
    r: Request,
    d: &config::DirConf,
    assigned: Option<Option<&'a Identity>>,
    server: &'a Identity,
    policy: &ExprPolicy,
) -> Result<Cow<'a, Identity>, Refusal> {
    let directives = target::Directives {
        assigned,
        user_expr: d.uid_expr.is_some(),
        group_expr: d.gid_expr.is_some(),
    };
    let eval = |which| {
        let e = match which {
            target::Expr::User => d.uid_expr,
            target::Expr::Group => d.gid_expr,
        };
        e.map_or_else(|| Err("no expression".to_string()), |e| r.eval(e))
    };
    target::resolve(&directives, server, policy, &target::SystemDb, eval).map_err(|e| match e {
        target::TargetError::Expr(m) => Refusal::Expr(m),
        target::TargetError::Internal(m) => Refusal::Internal(m),
    })
}

/// post_perdir_config (REALLY_FIRST): the switch.
pub fn post_perdir_config(r: Request) -> i32 {
    test_panic_point("switch");
    let s = r.server();
    // (written only into log lines: not formatted for every request)
    let vhost = VhostName(r);

    if r.is_main() && !IN_POOL.load(Ordering::Relaxed) {
        // mod_status: this request's CPU time on top of the worker's total
        // (a user process's own times are its slot's, as in prefork)
        account_request_cpu(r, MY_SLOT.load(Ordering::Relaxed));
        let key = limits::vhost_key(&s.hostname(), r.conn().local_port());
        match admit(key, config::server_conf(s).max_clients_vhost) {
            Admission::Admitted => {}
            Admission::Full(others) => {
                ffi::log_request(
                    Level::Warn,
                    0,
                    r,
                    &format!(
                        "MaxClientsVHost reached for {vhost} ({others} connections served), refusing client (pid {})",
                        pid()
                    ),
                );
                return HTTP_SERVICE_UNAVAILABLE;
            }
            Admission::Recount => {
                ffi::log_request(
                    Level::Info,
                    0,
                    r,
                    &format!(
                        "vhost {vhost}: this connection is counted for MaxClientsVHost as another vhost; \
                         closing connection so the client retries on a new one (pid {})",
                        pid()
                    ),
                );
                close_and_exit(r.conn());
            }
        }
    }

    let state = *conn_state();
    let Some(d) = config::request_dir_conf(r) else {
        return refuse(
            r,
            &vhost,
            &Refusal::Internal(
                "internal error: the request has no mpm-itk per-directory configuration".into(),
            ),
        );
    };
    let (server, allowed, policy) = match prepared().as_ref() {
        Some(p) => (
            Arc::clone(&p.server),
            p.allowed.clone(),
            p.expr_policy.clone(),
        ),
        None => {
            return refuse(
                r,
                &vhost,
                &Refusal::Internal("internal error: the configuration was not prepared".into()),
            );
        }
    };
    // Before the first switch, the process's nice value is the base.
    let base_nice = match state {
        ConnState::Switched { base_nice, .. } => base_nice,
        _ => match privileges::current_nice() {
            Ok(n) => n,
            Err(e) => {
                let e = PrivError::Call {
                    step: "getpriority",
                    err: e,
                };
                return refuse(r, &vhost, &Refusal::Priv(e));
            }
        },
    };
    // (shared, not copied: the configuration lock is not held while
    // expressions run)
    let assigned: Option<Option<Arc<Identity>>> = d.identity.map(|i| {
        config::state()
            .identities
            .get(i)
            .map(|(id, _)| Arc::clone(id))
    });
    let assigned = assigned.as_ref().map(Option::as_deref);
    match state.decide(d.nice, || resolve_target(r, &d, assigned, &server, &policy)) {
        Decision::Switch(t) => switch(r, &vhost, t.into_owned(), d.nice, base_nice, &allowed),
        Decision::Serve => OK,
        Decision::Renice(want) => match privileges::renice(&mut RealSys, want) {
            Ok(()) => {
                *conn_state() = state.reniced(want);
                OK
            }
            Err(e) => {
                ffi::log_request(
                    Level::Warn,
                    0,
                    r,
                    &format!(
                        "vhost {vhost} wants nice value {want} but this connection runs at {} as uid {}, \
                         and a switched process cannot lower it ({e}); closing connection so the client retries \
                         on a new one (pid {})",
                        match state {
                            ConnState::Switched { nice, .. } => nice,
                            _ => base_nice,
                        },
                        privileges::current_uid(),
                        pid()
                    ),
                );
                close_and_exit(r.conn())
            }
        },
        Decision::Refuse(e) => refuse(r, &vhost, &e),
        Decision::Close(why) => {
            let (level, msg) = match why {
                CloseWhy::EarlierFailure => (
                    Level::Warn,
                    format!(
                        "vhost {vhost}: an earlier request on this connection could not get its identity; \
                         closing connection (pid {})",
                        pid()
                    ),
                ),
                CloseWhy::OtherIdentity {
                    running: (uid, gid),
                    wanted: t,
                } => (
                    Level::Warn,
                    format!(
                        "vhost {vhost} runs as uid {} gid {} but this connection already runs as uid {uid} gid {gid}; \
                         closing connection so the client retries on a new one (pid {})",
                        t.uid,
                        t.gid,
                        pid()
                    ),
                ),
                CloseWhy::TargetError(e) => (
                    Level::Err,
                    format!(
                        "vhost {vhost}: {e}; closing connection (uid {}, pid {})",
                        privileges::current_uid(),
                        pid()
                    ),
                ),
            };
            ffi::log_request(level, 0, r, &msg);
            close_and_exit(r.conn())
        }
    }
}

/// "name:port" of a request's vhost, for log lines.
struct VhostName<'r>(Request<'r>);

impl std::fmt::Display for VhostName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            self.0.server().hostname(),
            self.0.conn().local_port()
        )
    }
}

/// The first switch of this connection child: recipe 2, then vhost code
/// runs.
fn switch(
    r: Request,
    vhost: &VhostName,
    t: Identity,
    nice: Option<i32>,
    base_nice: i32,
    allowed: &Allowed,
) -> i32 {
    let tgt = Target {
        uid: t.uid,
        gid: t.gid,
        groups: t.groups.clone(),
        nice,
    };
    let sw = match privileges::become_vhost_user(&mut RealSys, &tgt, allowed) {
        Ok(sw) => sw,
        Err(e) => return refuse(r, vhost, &Refusal::Priv(e)),
    };
    // Vhost code runs from here on: it must not reach the other vhosts'
    // MaxClientsVHost counts.
    if let Some(table) = SharedTable::get(VHOST_TABLE) {
        table.unmap();
    }
    *conn_state() = ConnState::switched(t.uid, t.gid, nice, base_nice);
    if !sw.dropped_groups.is_empty() {
        ffi::log_request(
            Level::Warn,
            0,
            r,
            &format!(
                "vhost {vhost}: user {} (uid {}) keeps no supplementary groups {:?}: outside LimitGIDRange (pid {})",
                t.user,
                t.uid,
                sw.dropped_groups,
                pid()
            ),
        );
    }
    ffi::log_request(
        Level::Debug,
        0,
        r,
        &format!(
            "vhost {vhost}: switched to user {} uid {} gid {} (pid {})",
            t.user,
            t.uid,
            t.gid,
            pid()
        ),
    );
    OK
}

/// A request that cannot get its identity: 500, and the connection is
/// closed after it; this process never tries the switch again.
fn refuse(r: Request, vhost: &VhostName, e: &Refusal) -> i32 {
    *conn_state() = ConnState::Failed;
    r.conn().set_close();
    ffi::log_request(
        Level::Err,
        0,
        r,
        &format!(
            "vhost {vhost}: cannot switch identity for {}: {}; closing connection (uid {}, pid {})",
            r.uri(),
            e,
            privileges::current_uid(),
            pid()
        ),
    );
    HTTP_INTERNAL_SERVER_ERROR
}

/// The switch hook panicked (logged by the trampoline): the process may be
/// half-switched, so fail the request and close the connection.
pub fn switch_panicked(r: Request) -> i32 {
    // First, with nothing that could panic again before it.
    *conn_state() = ConnState::Failed;
    r.conn().set_close();
    refuse(
        r,
        &VhostName(r),
        &Refusal::Internal("internal error in the switch hook (see the line above)".into()),
    )
}

fn switched() -> bool {
    conn_state().is_switched()
}

/// Has a request of this process failed to get its identity (or did the
/// switch hook fail)? A user process then serves no further connection.
pub fn identity_failed() -> bool {
    *conn_state() == ConnState::Failed
}

/// core's dirwalk stat just ran: EACCES on a main request after the switch
/// closes the connection (a fresh connection may well succeed).
pub fn after_stat(r: Request, status: i32) {
    if switched() && r.is_main() && status_is_eacces(status) {
        ffi::log_request(
            Level::Warn,
            status,
            r,
            &format!(
                "Couldn't read {}, closing connection (pid {})",
                r.filename(),
                pid()
            ),
        );
        close_and_exit(r.conn());
    }
}

/// Should we open `.htaccess` ourselves (to catch EACCES)?
pub fn should_watch_htaccess(r: Request) -> bool {
    switched() && r.is_main()
}

pub fn after_htaccess_open(r: Request, path: &std::ffi::CStr, status: i32) {
    if status_is_eacces(status) {
        ffi::log_request(
            Level::Warn,
            status,
            r,
            &format!(
                "Couldn't read {}, closing connection (pid {})",
                path.to_string_lossy(),
                pid()
            ),
        );
        close_and_exit(r.conn());
    }
}
