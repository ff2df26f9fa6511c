//! The two privilege recipes, in order, each step saying why it stands where
//! it does:
//!
//! * [`enter_worker_sandbox`]: run once in every worker before it accepts
//!   anything. Root becomes `User`/`Group` with exactly four capabilities
//!   (or stays a seccomp-restricted root with `EnableCapabilities Off`).
//! * [`become_vhost_user`]: run in a connection child after httpd has picked
//!   the vhost and merged the per-directory configuration. The process takes
//!   the vhost's uid/gid/groups and keeps no capability, in any thread.
//!
//! # Threads
//!
//! Capabilities and the bounding set belong to a thread, not to a process;
//! the connection child runs other modules' `child_init` before the switch,
//! and some start threads there (mod_http2's workers, mod_watchdog's and
//! mod_proxy_hcheck's pools). Dropping capabilities with `capset` in the
//! thread that switches would leave those threads holding them while vhost
//! code runs in the same address space. So the recipes arrange for the
//! *kernel* to drop them in every thread, through calls that glibc already
//! runs in every thread (its "setxid" broadcast for `setgroups`,
//! `setresgid` and `setresuid`):
//!
//! * The bounding set is final before any thread exists: the worker empties
//!   it in its sandbox, while it is still root, and threads inherit it.
//! * The worker keeps uid 0 as its saved uid (the effective uid is `User`
//!   with `On`, the real one a uid of its own). At the switch,
//!   `setresuid(u, u, u)` takes the last 0 out of every thread's uids, and the kernel then clears the permitted,
//!   effective and ambient sets of each thread that makes the call
//!   (capabilities(7), "Effect of user ID changes on capabilities";
//!   `SECBIT_KEEP_CAPS` is off). Inheritable sets are empty from the worker
//!   on. The filter forbids uid 0 in every set*id call, so the saved 0 can
//!   never be made effective again.
//! * [`become_vhost_user`] then reads every task of the process and fails
//!   closed if any of them still holds a capability or another identity.
//!
//! Every system call goes through the small [`Sys`] trait so the order can be
//! checked with a recording double in unit tests; [`RealSys`] is the real
//! thing, checked end to end against `/proc/<pid>/status` by the tests in
//! `tests/`.

use crate::ranges::Allowed;
use caps::CapSet;
pub use caps::{Capability, CapsHashSet};
use nix::unistd::{self, Gid, Uid};
use seccompiler::BpfProgram;
use std::fmt;
use std::io;

/// The capabilities a worker keeps with `EnableCapabilities On`: switch
/// uid/gid, read any file to find the vhost's documents and `.htaccess`
/// before the switch, and apply a negative `NiceValue`. The last two are
/// optional ([`optional_capabilities`]): a container's default set lacks
/// them, and the server then runs without, with a warning.
pub fn worker_capabilities() -> CapsHashSet {
    [
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
        Capability::CAP_DAC_READ_SEARCH,
        Capability::CAP_SYS_NICE,
    ]
    .into_iter()
    .collect()
}

/// The worker capabilities a server can do without, each with what it
/// loses.
pub fn optional_capabilities() -> Vec<(Capability, &'static str)> {
    vec![
        (
            Capability::CAP_DAC_READ_SEARCH,
            "before the switch, directories and .htaccess files that only the vhost user can \
             read cannot be searched: such documents get a 403",
        ),
        (
            Capability::CAP_SYS_NICE,
            "NiceValue can only raise the nice value (a lower one is a configuration error)",
        ),
    ]
}

/// The capabilities this process holds (effective set).
pub fn effective_capabilities() -> io::Result<CapsHashSet> {
    caps::read(None, CapSet::Effective).map_err(caps_err)
}

/// Every privileged operation the recipes perform.
pub trait Sys {
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&mut self) -> io::Result<()>;
    /// Installs a seccomp filter (without setting no_new_privs itself).
    fn install_filter(&mut self, prog: &BpfProgram) -> io::Result<()>;
    /// Drops every capability but `keep` from the bounding set.
    fn limit_bounding_set(&mut self, keep: &CapsHashSet) -> io::Result<()>;
    /// `prctl(PR_SET_KEEPCAPS, on)`.
    fn set_keep_caps(&mut self, on: bool) -> io::Result<()>;
    /// Empties the inheritable and ambient sets (effective and permitted
    /// stay).
    fn clear_inheritable(&mut self) -> io::Result<()>;
    /// `setgroups(groups)`.
    fn set_groups(&mut self, groups: &[u32]) -> io::Result<()>;
    /// `setresgid(gid, gid, gid)`.
    fn set_gid(&mut self, gid: u32) -> io::Result<()>;
    /// `setresuid(uid, uid, uid)`.
    fn set_uid(&mut self, uid: u32) -> io::Result<()>;
    /// `setresuid(-1, uid, -1)`: the effective (and filesystem) uid only;
    /// real and saved stay.
    fn set_euid(&mut self, uid: u32) -> io::Result<()>;
    /// `setresuid(uid, -1, -1)`: the real uid only.
    fn set_real_uid(&mut self, uid: u32) -> io::Result<()>;
    /// Effective = permitted = `keep`; inheritable and ambient empty.
    fn set_caps(&mut self, keep: &CapsHashSet) -> io::Result<()>;
    /// `setpriority(PRIO_PROCESS, tid, nice)` for every thread (the nice
    /// value belongs to a thread on Linux).
    fn set_nice(&mut self, nice: i32) -> io::Result<()>;
    /// `prctl(PR_SET_DUMPABLE, 1)` (for CoreDumpDirectory).
    fn set_dumpable(&mut self) -> io::Result<()>;
    /// Real, effective and saved uid and gid.
    fn ids(&self) -> io::Result<([u32; 3], [u32; 3])>;
    /// The capabilities of `need` missing from the effective set.
    fn missing_caps(&self, need: &CapsHashSet) -> io::Result<CapsHashSet>;
    /// What every task (thread) of this process holds.
    fn tasks(&self) -> io::Result<Vec<TaskCreds>>;
}

/// Identity and capability sets of one task, as `/proc/self/task/<tid>/status`
/// shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskCreds {
    pub tid: i32,
    /// Real, effective, saved, filesystem.
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    /// Supplementary groups, as the kernel keeps them (sorted).
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
}

impl TaskCreds {
    /// Parses a `status` file; None if a field is missing or malformed.
    pub fn parse(tid: i32, status: &str) -> Option<TaskCreds> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then(|| v.trim())
            })
        };
        let ids = |name: &str| -> Option<[u32; 4]> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            v.try_into().ok()
        };
        let caps = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        let groups = field("Groups")?
            .split_whitespace()
            .map(|g| g.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(TaskCreds {
            tid,
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            groups,
            cap_inh: caps("CapInh")?,
            cap_prm: caps("CapPrm")?,
            cap_eff: caps("CapEff")?,
            cap_bnd: caps("CapBnd")?,
            cap_amb: caps("CapAmb")?,
        })
    }
}

/// After the switch: every task runs as `uid`/`gid` everywhere with exactly
/// the supplementary `groups`, and holds no capability, not even in its
/// bounding set.
pub fn check_every_task(
    tasks: &[TaskCreds],
    uid: u32,
    gid: u32,
    groups: &[u32],
) -> Result<(), PrivError> {
    let mut want_groups = groups.to_vec();
    want_groups.sort_unstable();
    want_groups.dedup();
    let fail = |t: &TaskCreds, what: String| PrivError::TaskKeeps {
        tid: t.tid,
        threads: tasks.len(),
        what,
    };
    if tasks.is_empty() {
        return Err(PrivError::TaskKeeps {
            tid: 0,
            threads: 0,
            what: "no task could be read".into(),
        });
    }
    for t in tasks {
        if t.uids.iter().any(|u| *u != uid) || t.gids.iter().any(|g| *g != gid) {
            return Err(fail(t, format!("uids {:?} gids {:?}", t.uids, t.gids)));
        }
        let mut have = t.groups.clone();
        have.sort_unstable();
        have.dedup();
        if have != want_groups {
            return Err(fail(t, format!("supplementary groups {:?}", t.groups)));
        }
        let held = t.cap_inh | t.cap_prm | t.cap_eff | t.cap_amb;
        if held != 0 {
            return Err(fail(
                t,
                format!(
                    "capabilities (CapEff {:016x} CapPrm {:016x} CapInh {:016x} CapAmb {:016x})",
                    t.cap_eff, t.cap_prm, t.cap_inh, t.cap_amb
                ),
            ));
        }
        if t.cap_bnd != 0 {
            return Err(fail(t, format!("bounding set {:016x}", t.cap_bnd)));
        }
    }
    Ok(())
}

/// A failed privilege step.
#[derive(Debug)]
pub enum PrivError {
    /// A system call failed; `step` names it.
    Call { step: &'static str, err: io::Error },
    /// The target uid is root, -1 or outside LimitUIDRange.
    UidNotAllowed(u32),
    /// The target gid is root, -1 or outside LimitGIDRange.
    GidNotAllowed(u32),
    /// After the switch the kernel reports other ids than asked for.
    Mismatch {
        want: (u32, u32),
        got: ([u32; 3], [u32; 3]),
    },
    /// A root worker lacks capabilities the switch needs (names, sorted).
    MissingCaps(Vec<String>),
    /// After the switch a task (thread) of the process still holds a
    /// capability or another identity.
    TaskKeeps {
        tid: i32,
        threads: usize,
        what: String,
    },
}

impl fmt::Display for PrivError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivError::Call { step, err } => write!(f, "{step} failed: {err}"),
            PrivError::UidNotAllowed(u) => {
                write!(f, "uid {u} is not allowed (root, or outside LimitUIDRange)")
            }
            PrivError::GidNotAllowed(g) => {
                write!(f, "gid {g} is not allowed (root, or outside LimitGIDRange)")
            }
            PrivError::Mismatch { want, got } => write!(
                f,
                "identity check failed: wanted uid {} gid {}, kernel reports uids {:?} gids {:?}",
                want.0, want.1, got.0, got.1
            ),
            PrivError::MissingCaps(names) => write!(
                f,
                "the server runs as root without {}, which switching to the vhost users needs \
                 (a container or service manager took them away)",
                names.join(", ")
            ),
            PrivError::TaskKeeps { tid, threads, what } => write!(
                f,
                "after the switch thread {tid} (of {threads} threads in the process) still holds {what}"
            ),
        }
    }
}

impl std::error::Error for PrivError {}

fn step<T>(name: &'static str, r: io::Result<T>) -> Result<T, PrivError> {
    r.map_err(|err| PrivError::Call { step: name, err })
}

/// What every worker must be able to use, whatever EnableCapabilities says:
/// setgroups/setgid, setuid, and emptying the bounding set. Without them
/// there is no per-vhost identity: the server refuses to start.
pub fn required_capabilities() -> CapsHashSet {
    [
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
        Capability::CAP_SETPCAP,
    ]
    .into_iter()
    .collect()
}

/// What a worker becomes.
#[derive(Clone, Debug)]
pub struct WorkerPlan {
    /// `User`, `Group` and the user's supplementary groups.
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// `EnableCapabilities`.
    pub enable_caps: bool,
    /// With `EnableCapabilities On`: the real uid the workers keep, an id of
    /// their own that no account and no vhost uses (so that nothing but
    /// root and the workers themselves can signal them, and they can signal
    /// no root process); 0 if none could be found.
    pub real_uid: u32,
    /// What the worker keeps with `EnableCapabilities On`: the four of
    /// [`worker_capabilities`], less the optional ones the server was
    /// started without.
    pub keep: CapsHashSet,
    /// `NoNewPrivileges`, or forced because the server lacks CAP_SYS_ADMIN
    /// (the kernel then installs a filter only under no_new_privs).
    pub no_new_privs: bool,
    /// Keep the process dumpable (CoreDumpDirectory).
    pub dumpable: bool,
    /// The compiled uid/gid filter ([`crate::seccomp::build`]).
    pub filter: BpfProgram,
}

/// Recipe 1: enter the worker sandbox (once per worker, before accept).
pub fn enter_worker_sandbox<S: Sys>(sys: &mut S, plan: &WorkerPlan) -> Result<(), PrivError> {
    // Only if asked: no_new_privs also disables setgid helpers (postdrop
    // behind PHP's mail()), which the C module never did.
    if plan.no_new_privs {
        step("prctl(PR_SET_NO_NEW_PRIVS)", sys.set_no_new_privs())?;
    }
    if plan.enable_caps && plan.real_uid != 0 {
        // The real uid first, still as root (effective and saved uid stay
        // 0, so nothing is cleared): the filter below admits only the
        // ranges and User. kill(2) needs the sender's real or effective uid
        // to be the target's real or saved uid: with a real uid of its own
        // and a saved uid 0, a worker can be signalled by neither vhost code
        // running as `User` nor any tenant, and can itself signal no root
        // process.
        step("setresuid (real uid)", sys.set_real_uid(plan.real_uid))?;
    }
    // The filter goes in first, while we are still root: without
    // no_new_privs the kernel requires CAP_SYS_ADMIN to install it, and every
    // later set*id call (our own below included) must already pass through it.
    step("seccomp filter", sys.install_filter(&plan.filter))?;
    // Without these no switch can work: a worker stripped of them would
    // start and then fail every request (the parent checks at startup too).
    // CAP_SETPCAP empties the bounding set just below.
    let missing = step(
        "read capabilities",
        sys.missing_caps(&required_capabilities()),
    )?;
    if !missing.is_empty() {
        let mut names: Vec<String> = missing.iter().map(|c| c.to_string()).collect();
        names.sort();
        return Err(PrivError::MissingCaps(names));
    }
    // Empty the bounding set while we are root (it takes CAP_SETPCAP), and
    // before any module can start a thread (each thread has its own and
    // inherits its creator's). It leaves what we hold now; it caps what an
    // exec can ever give: a setuid-root or file-capability program that vhost
    // code runs after the switch gets no capability at all.
    step(
        "empty capability bounding set",
        sys.limit_bounding_set(&CapsHashSet::new()),
    )?;
    // The switch relies on the kernel clearing the capabilities of every
    // thread when the last uid 0 goes: make sure nothing asked it to keep
    // them (the flag is inherited by the threads modules start later).
    step("prctl(PR_SET_KEEPCAPS, 0)", sys.set_keep_caps(false))?;
    if !plan.enable_caps {
        // Root keeps its effective and permitted sets, but nothing
        // inheritable or ambient (a service manager may have granted some),
        // which no switch clears and the check after it would refuse.
        return step(
            "clear inheritable and ambient capabilities",
            sys.clear_inheritable(),
        );
    }
    // Groups before gid before uid: each needs the privilege the next drops.
    step("setgroups", sys.set_groups(&plan.groups))?;
    step("setresgid", sys.set_gid(plan.gid))?;
    // The effective (and so filesystem) uid becomes User; the saved uid
    // stays 0. That keeps the permitted set across this call (the effective
    // set is cleared), and it makes the vhost switch a change away from
    // root, at which the kernel clears the capabilities of every thread (see
    // the module docs). The filter refuses 0 in every set*id call: root can
    // never come back.
    step("setresuid", sys.set_euid(plan.uid))?;
    // Now an ordinary user: make exactly the four capabilities effective and
    // permitted; nothing inheritable or ambient, so no exec'd program gets any.
    step("set capabilities", sys.set_caps(&plan.keep))?;
    if plan.dumpable {
        // setuid cleared the dumpable flag; CoreDumpDirectory wants it back.
        step("prctl(PR_SET_DUMPABLE)", sys.set_dumpable())?;
    }
    check_ids(sys, [plan.real_uid, plan.uid, 0], plan.gid)
}

/// Who a connection child becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// `NiceValue`, already clamped to -20..19.
    pub nice: Option<i32>,
}

/// The outcome of a successful switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switched {
    /// Supplementary groups left out because LimitGIDRange excludes them.
    pub dropped_groups: Vec<u32>,
}

/// Recipe 2: become the vhost's user (once per connection, after the
/// per-dir merge). Irreversible: on success no capability is left.
pub fn become_vhost_user<S: Sys>(
    sys: &mut S,
    target: &Target,
    allowed: &Allowed,
) -> Result<Switched, PrivError> {
    // Refuse before touching anything: root and out-of-range ids are never
    // taken, whatever the configuration or an expression produced (the
    // seccomp filter would refuse them too; this gives a clear message).
    if !allowed.uid_ok(target.uid) {
        return Err(PrivError::UidNotAllowed(target.uid));
    }
    if !allowed.gid_ok(target.gid) {
        return Err(PrivError::GidNotAllowed(target.gid));
    }
    // BPF cannot read setgroups' list, so the list is checked here.
    let (groups, dropped_groups): (Vec<u32>, Vec<u32>) = target
        .groups
        .iter()
        .partition(|g| **g == target.gid || allowed.gid_ok(**g));
    // Lowering the nice value needs CAP_SYS_NICE: before the caps go.
    if let Some(n) = target.nice {
        step("setpriority", sys.set_nice(n))?;
    }
    // Groups, gid, uid: each call needs the capability the next one takes
    // away (CAP_SETGID for the first two, CAP_SETUID for the last). glibc
    // runs each of them in every thread of the process. The setresuid takes
    // the last uid 0 away (the worker's real and saved uids, or all three
    // with EnableCapabilities Off), so the kernel clears every thread's
    // permitted, effective and ambient sets as it runs there.
    step("setgroups", sys.set_groups(&groups))?;
    step("setresgid", sys.set_gid(target.gid))?;
    step("setresuid", sys.set_uid(target.uid))?;
    // This thread again, explicitly (inheritable included), in case the
    // kernel's rule did not apply. From here there is no way back.
    step("drop capabilities", sys.set_caps(&CapsHashSet::new()))?;
    check_ids(sys, [target.uid; 3], target.gid)?;
    // The judge: every task of the process, as /proc shows it. A thread
    // glibc did not reach, or one that asked to keep its capabilities, fails
    // the request here, before any vhost code runs.
    let tasks = step("read /proc/self/task", sys.tasks())?;
    check_every_task(&tasks, target.uid, target.gid, &groups)?;
    Ok(Switched { dropped_groups })
}

/// NiceValue for a later request on a switched connection: raising the nice
/// value needs nothing; lowering it needs CAP_SYS_NICE, which a switched
/// process no longer holds (then the caller closes the connection, as on a
/// uid change). The capability is never kept for this.
pub fn renice<S: Sys>(sys: &mut S, nice: i32) -> Result<(), PrivError> {
    step("setpriority", sys.set_nice(nice))
}

/// The nice value of this process.
pub fn current_nice() -> io::Result<i32> {
    // getpriority may return -1 as a value: clear errno to tell.
    nix::errno::Errno::clear();
    // SAFETY: integer arguments only.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if n == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// The effective uid of this process (for log lines).
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Reads back real/effective/saved ids: a request is never served under an
/// identity other than the one asked for.
fn check_ids<S: Sys>(sys: &S, uids: [u32; 3], gid: u32) -> Result<(), PrivError> {
    let got = step("getresuid/getresgid", sys.ids())?;
    if got.0 == uids && got.1.iter().all(|g| *g == gid) {
        Ok(())
    } else {
        Err(PrivError::Mismatch {
            want: (uids[1], gid),
            got,
        })
    }
}

/// The real system calls.
pub struct RealSys;

fn caps_err(e: caps::errors::CapsError) -> io::Error {
    io::Error::other(e.to_string())
}

/// The thread ids of this process.
fn task_ids() -> io::Result<Vec<i32>> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = e?.file_name().to_str().and_then(|n| n.parse().ok()) {
            ids.push(tid);
        }
    }
    Ok(ids)
}

/// `-1` for setresuid: leave that id as it is.
const UNCHANGED_UID: Uid = Uid::from_raw(u32::MAX);

impl Sys for RealSys {
    fn set_no_new_privs(&mut self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)
    }

    fn install_filter(&mut self, prog: &BpfProgram) -> io::Result<()> {
        crate::seccomp::install(prog)
    }

    fn limit_bounding_set(&mut self, keep: &CapsHashSet) -> io::Result<()> {
        // PR_CAPBSET_DROP, one capability at a time, over those this kernel
        // knows.
        for cap in caps::runtime::thread_all_supported() {
            if !keep.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap).map_err(caps_err)?
            {
                caps::drop(None, CapSet::Bounding, cap).map_err(caps_err)?;
            }
        }
        Ok(())
    }

    fn set_keep_caps(&mut self, on: bool) -> io::Result<()> {
        nix::sys::prctl::set_keepcaps(on).map_err(io::Error::from)
    }

    fn clear_inheritable(&mut self) -> io::Result<()> {
        caps::clear(None, CapSet::Inheritable).map_err(caps_err)?;
        caps::clear(None, CapSet::Ambient).map_err(caps_err)
    }

    // glibc's wrappers of the set*id calls (which nix calls) apply them to
    // every thread of the process, as POSIX requires.

    fn set_groups(&mut self, groups: &[u32]) -> io::Result<()> {
        let g: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
        unistd::setgroups(&g).map_err(io::Error::from)
    }

    fn set_gid(&mut self, gid: u32) -> io::Result<()> {
        let g = Gid::from_raw(gid);
        unistd::setresgid(g, g, g).map_err(io::Error::from)
    }

    fn set_uid(&mut self, uid: u32) -> io::Result<()> {
        let u = Uid::from_raw(uid);
        unistd::setresuid(u, u, u).map_err(io::Error::from)
    }

    fn set_euid(&mut self, uid: u32) -> io::Result<()> {
        // -1: leave the real and saved uid.
        unistd::setresuid(UNCHANGED_UID, Uid::from_raw(uid), UNCHANGED_UID).map_err(io::Error::from)
    }

    fn set_real_uid(&mut self, uid: u32) -> io::Result<()> {
        // -1: leave the effective and saved uid.
        unistd::setresuid(Uid::from_raw(uid), UNCHANGED_UID, UNCHANGED_UID).map_err(io::Error::from)
    }

    fn set_caps(&mut self, keep: &CapsHashSet) -> io::Result<()> {
        // Effective first: it must stay a subset of permitted at each step.
        caps::set(None, CapSet::Effective, keep).map_err(caps_err)?;
        caps::set(None, CapSet::Permitted, keep).map_err(caps_err)?;
        caps::clear(None, CapSet::Inheritable).map_err(caps_err)?;
        caps::clear(None, CapSet::Ambient).map_err(caps_err)
    }

    fn set_nice(&mut self, nice: i32) -> io::Result<()> {
        for tid in task_ids()? {
            // SAFETY: integer arguments only (setpriority returns 0 or -1);
            // a tid of this process names that thread.
            let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
            if rc == -1 {
                let e = io::Error::last_os_error();
                // the thread ended since the listing
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn set_dumpable(&mut self) -> io::Result<()> {
        nix::sys::prctl::set_dumpable(true).map_err(io::Error::from)
    }

    fn ids(&self) -> io::Result<([u32; 3], [u32; 3])> {
        let u = unistd::getresuid().map_err(io::Error::from)?;
        let g = unistd::getresgid().map_err(io::Error::from)?;
        Ok((
            [u.real.as_raw(), u.effective.as_raw(), u.saved.as_raw()],
            [g.real.as_raw(), g.effective.as_raw(), g.saved.as_raw()],
        ))
    }

    fn missing_caps(&self, need: &CapsHashSet) -> io::Result<CapsHashSet> {
        let have = caps::read(None, CapSet::Effective).map_err(caps_err)?;
        Ok(need.difference(&have).copied().collect())
    }

    fn tasks(&self) -> io::Result<Vec<TaskCreds>> {
        let mut out = Vec::new();
        for tid in task_ids()? {
            let status = match std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) {
                Ok(s) => s,
                // The thread ended between the listing and the read.
                Err(err)
                    if err.kind() == io::ErrorKind::NotFound
                        || err.raw_os_error() == Some(libc::ESRCH) =>
                {
                    continue;
                }
                Err(err) => return Err(err),
            };
            out.push(TaskCreds::parse(tid, &status).ok_or_else(|| {
                io::Error::other(format!("cannot parse /proc/self/task/{tid}/status"))
            })?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::IdRange;

    /// A recording double: remembers every call in order and plays the
    /// kernel's part for the ids.
    #[derive(Default)]
    struct Recorder {
        steps: Vec<String>,
        uids: [u32; 3],
        gid: u32,
        fail_at: Option<&'static str>,
        /// The effective set `missing_caps` compares against.
        caps: CapsHashSet,
        /// Other threads `tasks` reports.
        extra_tasks: Vec<TaskCreds>,
        /// The supplementary groups as set.
        groups: Vec<u32>,
    }

    impl Recorder {
        fn rec(&mut self, s: String, name: &'static str) -> io::Result<()> {
            self.steps.push(s);
            if self.fail_at == Some(name) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
    }

    impl Sys for Recorder {
        fn set_no_new_privs(&mut self) -> io::Result<()> {
            self.rec("no_new_privs".into(), "nnp")
        }
        fn install_filter(&mut self, _p: &BpfProgram) -> io::Result<()> {
            self.rec("filter".into(), "filter")
        }
        fn limit_bounding_set(&mut self, keep: &CapsHashSet) -> io::Result<()> {
            self.rec(format!("bounding {}", keep.len()), "bounding")
        }
        fn set_keep_caps(&mut self, on: bool) -> io::Result<()> {
            self.rec(format!("keepcaps {on}"), "keepcaps")
        }
        fn clear_inheritable(&mut self) -> io::Result<()> {
            self.rec("clear inheritable".into(), "inheritable")
        }
        fn set_groups(&mut self, g: &[u32]) -> io::Result<()> {
            self.rec(format!("setgroups {g:?}"), "setgroups")?;
            self.groups = g.to_vec();
            Ok(())
        }
        fn set_gid(&mut self, gid: u32) -> io::Result<()> {
            self.rec(format!("setgid {gid}"), "setgid")?;
            self.gid = gid;
            Ok(())
        }
        fn set_uid(&mut self, uid: u32) -> io::Result<()> {
            self.rec(format!("setuid {uid}"), "setuid")?;
            self.uids = [uid; 3];
            Ok(())
        }
        fn set_euid(&mut self, uid: u32) -> io::Result<()> {
            self.rec(format!("seteuid {uid}"), "setuid")?;
            self.uids[1] = uid;
            Ok(())
        }
        fn set_real_uid(&mut self, uid: u32) -> io::Result<()> {
            self.rec(format!("setruid {uid}"), "setruid")?;
            self.uids[0] = uid;
            Ok(())
        }
        fn set_caps(&mut self, keep: &CapsHashSet) -> io::Result<()> {
            self.rec(format!("caps {}", keep.len()), "caps")
        }
        fn set_nice(&mut self, n: i32) -> io::Result<()> {
            self.rec(format!("nice {n}"), "nice")
        }
        fn set_dumpable(&mut self) -> io::Result<()> {
            self.rec("dumpable".into(), "dumpable")
        }
        fn ids(&self) -> io::Result<([u32; 3], [u32; 3])> {
            Ok((self.uids, [self.gid; 3]))
        }
        fn missing_caps(&self, need: &CapsHashSet) -> io::Result<CapsHashSet> {
            Ok(need.difference(&self.caps).copied().collect())
        }
        fn tasks(&self) -> io::Result<Vec<TaskCreds>> {
            // The main thread as the calls left it, plus any extra threads
            // the test put there.
            let mut main = TaskCreds {
                tid: 1,
                uids: [self.uids[0]; 4],
                gids: [self.gid; 4],
                groups: self.groups.clone(),
                ..Default::default()
            };
            main.uids[2] = self.uids[2];
            let mut all = vec![main];
            all.extend(self.extra_tasks.iter().cloned());
            Ok(all)
        }
    }

    fn plan(enable_caps: bool) -> WorkerPlan {
        WorkerPlan {
            uid: 33,
            gid: 33,
            groups: vec![33],
            enable_caps,
            real_uid: 65533,
            keep: worker_capabilities(),
            no_new_privs: false,
            dumpable: false,
            filter: Vec::new(),
        }
    }

    fn allowed() -> Allowed {
        Allowed {
            uids: IdRange {
                min: 1000,
                max: 2000,
            },
            gids: IdRange {
                min: 1000,
                max: 2000,
            },
            server_uid: 33,
            server_gid: 33,
        }
    }

    /// A recorder for a root process with every capability.
    fn root() -> Recorder {
        Recorder {
            caps: caps::all(),
            ..Default::default()
        }
    }

    #[test]
    fn worker_sandbox_order() {
        let mut r = root();
        enter_worker_sandbox(&mut r, &plan(true)).unwrap();
        assert_eq!(
            r.steps,
            [
                "setruid 65533",
                "filter",
                "bounding 0",
                "keepcaps false",
                "setgroups [33]",
                "setgid 33",
                "seteuid 33",
                "caps 4",
            ]
        );
        // effective User, saved root (the switch is a change away from uid
        // 0, which clears every thread's capabilities), a real uid of its
        // own (User cannot signal the worker)
        assert_eq!(r.uids, [65533, 33, 0]);
    }

    #[test]
    fn worker_sandbox_without_caps_stays_root_but_filtered() {
        let mut r = Recorder {
            caps: caps::all(),
            ..Default::default()
        };
        let mut p = plan(false);
        p.no_new_privs = true;
        p.uid = 0;
        p.gid = 0;
        enter_worker_sandbox(&mut r, &p).unwrap();
        // the bounding set is emptied before any thread can exist; root
        // keeps its own capabilities but nothing inheritable or ambient
        assert_eq!(
            r.steps,
            [
                "no_new_privs",
                "filter",
                "bounding 0",
                "keepcaps false",
                "clear inheritable"
            ]
        );
    }

    #[test]
    fn root_worker_without_setuid_is_refused_and_named() {
        let mut r = Recorder {
            caps: caps::all(),
            ..Default::default()
        };
        r.caps.remove(&Capability::CAP_SETUID);
        r.caps.remove(&Capability::CAP_SETPCAP);
        let e = enter_worker_sandbox(&mut r, &plan(false)).unwrap_err();
        assert!(matches!(e, PrivError::MissingCaps(_)), "{e:?}");
        assert!(
            e.to_string().contains("without CAP_SETPCAP, CAP_SETUID"),
            "{e}"
        );
    }

    #[test]
    fn worker_sandbox_stops_at_first_failure() {
        let mut r = Recorder {
            fail_at: Some("setgid"),
            ..root()
        };
        let e = enter_worker_sandbox(&mut r, &plan(true)).unwrap_err();
        assert!(e.to_string().contains("setresgid"), "{e}");
        assert_eq!(r.steps.last().unwrap(), "setgid 33");
        assert!(!r.steps.iter().any(|s| s.starts_with("setuid")));
    }

    #[test]
    fn a_worker_without_the_optional_capabilities_keeps_the_others() {
        // a container's default set: no CAP_SYS_NICE, no CAP_DAC_READ_SEARCH
        let mut r = root();
        r.caps.remove(&Capability::CAP_SYS_NICE);
        r.caps.remove(&Capability::CAP_DAC_READ_SEARCH);
        let mut p = plan(true);
        p.keep = [Capability::CAP_SETUID, Capability::CAP_SETGID]
            .into_iter()
            .collect();
        enter_worker_sandbox(&mut r, &p).unwrap();
        assert!(r.steps.contains(&"caps 2".to_string()), "{:?}", r.steps);
        // but never without a required one, in either mode
        for enable in [true, false] {
            let mut r = root();
            r.caps.remove(&Capability::CAP_SETPCAP);
            let e = enter_worker_sandbox(&mut r, &plan(enable)).unwrap_err();
            assert!(e.to_string().contains("CAP_SETPCAP"), "{e}");
        }
    }

    #[test]
    fn vhost_switch_order_and_group_filtering() {
        let mut r = Recorder::default();
        let t = Target {
            uid: 1500,
            gid: 1500,
            groups: vec![0, 1500, 1600, 5000],
            nice: Some(5),
        };
        let s = become_vhost_user(&mut r, &t, &allowed()).unwrap();
        assert_eq!(s.dropped_groups, vec![0, 5000]);
        assert_eq!(
            r.steps,
            [
                "nice 5",
                "setgroups [1500, 1600]",
                "setgid 1500",
                "setuid 1500",
                "caps 0"
            ]
        );
    }

    fn target() -> Target {
        Target {
            uid: 1500,
            gid: 1500,
            groups: vec![1500],
            nice: None,
        }
    }

    fn thread(tid: i32) -> TaskCreds {
        TaskCreds {
            tid,
            uids: [1500; 4],
            gids: [1500; 4],
            groups: vec![1500],
            ..Default::default()
        }
    }

    #[test]
    fn a_thread_that_kept_a_capability_fails_the_switch() {
        let mut r = Recorder::default();
        let mut t = thread(7);
        t.cap_eff = 0x80_00c4;
        t.cap_prm = 0x80_00c4;
        r.extra_tasks = vec![thread(5), t];
        let e = become_vhost_user(&mut r, &target(), &allowed()).unwrap_err();
        match &e {
            PrivError::TaskKeeps { tid, threads, .. } => assert_eq!((*tid, *threads), (7, 3)),
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("thread 7 (of 3 threads"), "{e}");
        assert!(e.to_string().contains("CapEff 00000000008000c4"), "{e}");
    }

    /// A recorder whose process has one more thread, `extra`.
    fn with_thread(extra: TaskCreds) -> Recorder {
        Recorder {
            extra_tasks: vec![extra],
            ..Default::default()
        }
    }

    #[test]
    fn a_thread_with_a_bounding_set_or_another_identity_fails_the_switch() {
        let mut t = thread(9);
        t.cap_bnd = 0x80_00c4;
        let e = become_vhost_user(&mut with_thread(t), &target(), &allowed()).unwrap_err();
        assert!(
            e.to_string().contains("bounding set 00000000008000c4"),
            "{e}"
        );

        let mut t = thread(9);
        t.uids = [1500, 1500, 0, 1500];
        let e = become_vhost_user(&mut with_thread(t), &target(), &allowed()).unwrap_err();
        assert!(e.to_string().contains("uids [1500, 1500, 0, 1500]"), "{e}");

        let mut t = thread(9);
        t.groups = vec![0, 1500];
        let e = become_vhost_user(&mut with_thread(t), &target(), &allowed()).unwrap_err();
        assert!(
            e.to_string().contains("supplementary groups [0, 1500]"),
            "{e}"
        );
    }

    #[test]
    fn clean_threads_pass() {
        let mut r = Recorder {
            extra_tasks: vec![thread(2), thread(3)],
            ..Default::default()
        };
        become_vhost_user(&mut r, &target(), &allowed()).unwrap();
    }

    #[test]
    fn task_status_parses() {
        let status = "Name:\tapache2\nUid:\t1500\t1500\t0\t1500\nGid:\t33\t33\t33\t33\nGroups:\t33 1600 \n\
            CapInh:\t0000000000000000\nCapPrm:\t00000000008000c4\nCapEff:\t00000000008000c4\n\
            CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let t = TaskCreds::parse(42, status).unwrap();
        assert_eq!(t.uids, [1500, 1500, 0, 1500]);
        assert_eq!(t.gids, [33; 4]);
        assert_eq!(t.groups, [33, 1600]);
        assert_eq!(t.cap_prm, 0x80_00c4);
        assert_eq!(t.cap_bnd, 0x1ff_ffff_ffff);
        assert!(TaskCreds::parse(1, "Uid:\t1 2 3\n").is_none());
    }

    #[test]
    fn vhost_switch_refuses_root_and_out_of_range_before_any_call() {
        for (uid, gid) in [
            (0, 1500),
            (1500, 0),
            (2500, 1500),
            (1500, 2500),
            (u32::MAX, 1500),
        ] {
            let mut r = Recorder::default();
            let t = Target {
                uid,
                gid,
                groups: vec![],
                nice: None,
            };
            assert!(become_vhost_user(&mut r, &t, &allowed()).is_err());
            assert!(r.steps.is_empty(), "{uid}/{gid}: {:?}", r.steps);
        }
        // the server's own User/Group is allowed outside the range
        let mut r = Recorder::default();
        let t = Target {
            uid: 33,
            gid: 33,
            groups: vec![33],
            nice: None,
        };
        become_vhost_user(&mut r, &t, &allowed()).unwrap();
    }

    #[test]
    fn vhost_switch_detects_wrong_identity() {
        struct Liar(Recorder);
        impl Sys for Liar {
            fn set_no_new_privs(&mut self) -> io::Result<()> {
                Ok(())
            }
            fn install_filter(&mut self, _: &BpfProgram) -> io::Result<()> {
                Ok(())
            }
            fn limit_bounding_set(&mut self, _: &CapsHashSet) -> io::Result<()> {
                Ok(())
            }
            fn set_keep_caps(&mut self, _: bool) -> io::Result<()> {
                Ok(())
            }
            fn clear_inheritable(&mut self) -> io::Result<()> {
                Ok(())
            }
            fn set_groups(&mut self, _: &[u32]) -> io::Result<()> {
                Ok(())
            }
            fn set_gid(&mut self, _: u32) -> io::Result<()> {
                Ok(())
            }
            // pretends success but leaves the uid unchanged
            fn set_uid(&mut self, _: u32) -> io::Result<()> {
                Ok(())
            }
            fn set_euid(&mut self, _: u32) -> io::Result<()> {
                Ok(())
            }
            fn set_real_uid(&mut self, _: u32) -> io::Result<()> {
                Ok(())
            }
            fn set_caps(&mut self, _: &CapsHashSet) -> io::Result<()> {
                Ok(())
            }
            fn set_nice(&mut self, _: i32) -> io::Result<()> {
                Ok(())
            }
            fn set_dumpable(&mut self) -> io::Result<()> {
                Ok(())
            }
            fn ids(&self) -> io::Result<([u32; 3], [u32; 3])> {
                self.0.ids()
            }
            fn missing_caps(&self, need: &CapsHashSet) -> io::Result<CapsHashSet> {
                self.0.missing_caps(need)
            }
            fn tasks(&self) -> io::Result<Vec<TaskCreds>> {
                self.0.tasks()
            }
        }
        let mut l = Liar(Recorder::default());
        let t = Target {
            uid: 1500,
            gid: 1500,
            groups: vec![],
            nice: None,
        };
        assert!(matches!(
            become_vhost_user(&mut l, &t, &allowed()),
            Err(PrivError::Mismatch { .. })
        ));
    }
}
