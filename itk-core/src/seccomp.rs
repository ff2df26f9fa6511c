//! The seccomp filter every worker installs before it accepts (so it covers
//! every connection child): the uid/gid-changing system calls may only name
//! ids inside LimitUIDRange/LimitGIDRange, the configured User/Group, or -1
//! ("no change") where the call allows it; `setgroups` is bounded in size
//! (its list is checked in code, BPF cannot read it); system calls through a
//! foreign ABI (i386 `int 0x80`, x32) never reach the kernel's handlers.

use crate::ranges::Allowed;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;
use std::io;

/// Largest `setgroups` list a vhost switch may pass.
pub const MAX_GROUPS: u64 = 1024;

/// The x32 ABI marks its syscall numbers with this bit (x86_64 only).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uid,
    Gid,
}

/// (syscall, kind, number of id arguments, whether -1 means "no change").
fn id_syscalls() -> Vec<(i64, Kind, u8, bool)> {
    vec![
        (libc::SYS_setuid, Kind::Uid, 1, false),
        (libc::SYS_setreuid, Kind::Uid, 2, true),
        (libc::SYS_setresuid, Kind::Uid, 3, true),
        (libc::SYS_setfsuid, Kind::Uid, 1, false),
        (libc::SYS_setgid, Kind::Gid, 1, false),
        (libc::SYS_setregid, Kind::Gid, 2, true),
        (libc::SYS_setresgid, Kind::Gid, 3, true),
        (libc::SYS_setfsgid, Kind::Gid, 1, false),
    ]
}

fn cond(arg: u8, op: Op, v: u64) -> io::Result<SeccompCondition> {
    SeccompCondition::new(arg, Len::Dword, op, v).map_err(io::Error::other)
}

/// Rules that *match a forbidden call*: argument `arg` is below the range or
/// above it, and is neither the server's own id nor (where allowed) -1.
fn forbidden_arg(
    arg: u8,
    min: u32,
    max: u32,
    server: u32,
    minus_one_ok: bool,
) -> io::Result<Vec<SeccompRule>> {
    let mut rules = Vec::new();
    for outside in [
        cond(arg, Op::Lt, min as u64)?,
        cond(arg, Op::Gt, max as u64)?,
    ] {
        let mut c = vec![outside, cond(arg, Op::Ne, server as u64)?];
        if minus_one_ok {
            c.push(cond(arg, Op::Ne, u32::MAX as u64)?);
        }
        rules.push(SeccompRule::new(c).map_err(io::Error::other)?);
    }
    Ok(rules)
}

fn target_arch() -> io::Result<TargetArch> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| io::Error::other(format!("seccomp: unsupported architecture: {e:?}")))
}

/// Compiles the filter for `allowed`.
pub fn build(allowed: &Allowed) -> io::Result<BpfProgram> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, kind, nargs, minus_one_ok) in id_syscalls() {
        let (range, server) = match kind {
            Kind::Uid => (allowed.uids, allowed.server_uid),
            Kind::Gid => (allowed.gids, allowed.server_gid),
        };
        let mut r = Vec::new();
        for arg in 0..nargs {
            r.extend(forbidden_arg(
                arg,
                range.min,
                range.max,
                server,
                minus_one_ok,
            )?);
        }
        rules.insert(nr, r);
    }
    rules.insert(
        libc::SYS_setgroups,
        vec![SeccompRule::new(vec![cond(0, Op::Gt, MAX_GROUPS)?]).map_err(io::Error::other)?],
    );
    // Inverted filter: a matching (forbidden) call fails with EPERM,
    // everything else is allowed.
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(io::Error::other)?;
    let mut prog: BpfProgram = filter.try_into().map_err(io::Error::other)?;
    // seccompiler starts with the architecture check (load arch, jump over
    // the kill if native, kill): a foreign ABI such as i386 kills the
    // process. On x86_64 the x32 ABI shares the architecture value and
    // marks its numbers with bit 30: refuse those right after the check, so
    // an x32 twin of setuid cannot bypass the rules.
    if std::env::consts::ARCH == "x86_64" {
        let guard = [
            stmt(0x20, 0),                     // BPF_LD|BPF_W|BPF_ABS: seccomp_data.nr
            jump(0x35, X32_SYSCALL_BIT, 0, 1), // BPF_JMP|BPF_JGE|BPF_K
            stmt(0x06, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32), // BPF_RET
        ];
        prog.splice(3..3, guard);
    }
    Ok(prog)
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Installs `prog` in the calling thread without setting no_new_privs (the
/// caller holds CAP_SYS_ADMIN, or set no_new_privs itself on purpose).
pub fn install(prog: &BpfProgram) -> io::Result<()> {
    if prog.is_empty() {
        return Err(io::Error::other("empty seccomp program"));
    }
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const sock_filter,
    }
    let fprog = SockFprog {
        len: u16::try_from(prog.len()).map_err(io::Error::other)?,
        filter: prog.as_ptr(),
    };
    // SAFETY: fprog describes a live, well-formed BPF program (seccompiler's
    // sock_filter has the kernel's layout); the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const SockFprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Is seccomp filtering available at all (kernel built with it, not
/// disabled by a container runtime)?
pub fn available() -> bool {
    // SAFETY: prctl with integer arguments only; returns the mode or -1.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::IdRange;

    fn allowed() -> Allowed {
        Allowed {
            uids: IdRange {
                min: 3000,
                max: 4000,
            },
            gids: IdRange {
                min: 3000,
                max: 4000,
            },
            server_uid: 33,
            server_gid: 33,
        }
    }

    /// Runs `f` in a forked child with the filter installed (and
    /// no_new_privs so it also works unprivileged); returns the child's exit
    /// code, or 128+signal.
    fn in_filtered_child(f: impl FnOnce() -> i32) -> i32 {
        let prog = build(&allowed()).unwrap();
        // SAFETY: the test child only makes raw syscalls and _exits; the
        // test harness's other threads are not touched in the child.
        match unsafe { libc::fork() } {
            0 => {
                // SAFETY: prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = if install(&prog).is_ok() { f() } else { 99 };
                // SAFETY: leaves the child without running the parent's
                // atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut st = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                if libc::WIFSIGNALED(st) {
                    128 + libc::WTERMSIG(st)
                } else {
                    libc::WEXITSTATUS(st)
                }
            }
        }
    }

    /// errno of a raw syscall (0 on success).
    fn sc(nr: i64, a: u64, b: u64, c: u64) -> i32 {
        // SAFETY: raw id syscalls with integer arguments.
        let rc = unsafe { libc::syscall(nr, a, b, c) };
        if rc == -1 {
            io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    const M1: u64 = u32::MAX as u64;

    #[test]
    fn uid_calls_outside_the_range_fail_with_eperm() {
        // Needs root for the allowed calls to succeed; the refused ones are
        // refused by the filter whoever runs the test.
        let code = in_filtered_child(|| {
            let bad = [
                sc(libc::SYS_setuid, 0, 0, 0),
                sc(libc::SYS_setuid, 2500, 0, 0),
                sc(libc::SYS_setresuid, 0, M1, M1),
                sc(libc::SYS_setresuid, M1, 0, M1),
                sc(libc::SYS_setresuid, M1, M1, 0),
                sc(libc::SYS_setreuid, 0, 0, 0),
                sc(libc::SYS_setgid, 0, 0, 0),
                sc(libc::SYS_setresgid, 0, 0, 0),
                sc(libc::SYS_setregid, 5000, M1, 0),
                sc(libc::SYS_setfsuid, 0, 0, 0),
                sc(libc::SYS_setfsgid, 0, 0, 0),
                sc(libc::SYS_setgroups, MAX_GROUPS + 1, 0, 0),
                sc(libc::SYS_setuid, M1, 0, 0),
            ];
            // setfsuid/setfsgid return the previous id, not -1, on "failure"
            // without a filter; with it they fail with EPERM.
            if bad.iter().any(|e| *e != libc::EPERM) {
                return 1;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn in_range_and_server_ids_pass_the_filter() {
        // SAFETY: geteuid has no arguments.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test must run as root (it performs real setuid calls)");
        }
        let code = in_filtered_child(|| {
            // -1 = no change, allowed for setresgid
            if sc(libc::SYS_setresgid, 3500, M1, 3500) != 0 {
                return 1;
            }
            if sc(libc::SYS_setgid, 33, 0, 0) != 0 {
                return 2;
            }
            if sc(libc::SYS_setresuid, 3500, 3500, 3500) != 0 {
                return 3;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscall_numbers_are_refused() {
        // A kernel without x32 answers ENOSYS with no filter at all, so the
        // program itself is checked too: the guard follows the
        // architecture check.
        let prog = build(&allowed()).unwrap();
        let guard: Vec<(u16, u32)> = prog[3..6].iter().map(|i| (i.code, i.k)).collect();
        assert_eq!(
            guard,
            [
                (0x20, 0),
                (0x35, X32_SYSCALL_BIT),
                (0x06, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32)
            ]
        );
        let code = in_filtered_child(|| {
            let e = sc(libc::SYS_setuid | X32_SYSCALL_BIT as i64, 0, 0, 0);
            if e == libc::ENOSYS { 0 } else { 1 }
        });
        assert_eq!(code, 0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_int80_kills_the_process() {
        let code = in_filtered_child(|| {
            // SAFETY: int 0x80 with eax=23 (i386 setuid) and ebx=0 (rbx is
            // reserved by LLVM, so it is saved and restored around the call);
            // the filter kills the process before the kernel handles it.
            unsafe {
                std::arch::asm!(
                    "push rbx",
                    "xor ebx, ebx",
                    "int 0x80",
                    "pop rbx",
                    inout("eax") 23 => _,
                );
            }
            0
        });
        assert_eq!(code, 128 + libc::SIGSYS);
    }
}
