//! Issue 4, end to end: what every process of a real httpd holds (README,
//! "Privileges"), that PHP has no way back after the switch, LimitUIDRange
//! and LimitGIDRange at request time, NoNewPrivileges, and a clear startup
//! error where seccomp or the capabilities are missing.

mod harness;
use harness::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// CAP_DAC_READ_SEARCH (2), CAP_SETGID (6), CAP_SETUID (7), CAP_SYS_NICE (23).
const FOUR_CAPS: &str = "00000000008000c4";
const NO_CAPS: &str = "0000000000000000";

const STATUS_PHP: &str = "<?php echo file_get_contents('/proc/self/status');";

/// The fields of README's Privileges table, from a `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Privs {
    uid: String,
    gid: String,
    cap_eff: String,
    cap_prm: String,
    cap_inh: String,
    cap_amb: String,
    cap_bnd: String,
    seccomp: String,
    no_new_privs: String,
}

impl Privs {
    fn parse(status: &str) -> Option<Privs> {
        let f = |k: &str| status_field(status, k);
        Some(Privs {
            uid: f("Uid")?,
            gid: f("Gid")?,
            cap_eff: f("CapEff")?,
            cap_prm: f("CapPrm")?,
            cap_inh: f("CapInh")?,
            cap_amb: f("CapAmb")?,
            cap_bnd: f("CapBnd")?,
            seccomp: f("Seccomp")?,
            no_new_privs: f("NoNewPrivs")?,
        })
    }

    fn of(pid: i32) -> Option<Privs> {
        Privs::parse(&proc_status(pid))
    }

    /// A row of the table: the same id four times (real, effective, saved,
    /// filesystem); CapEff = CapPrm = `caps`.
    /// The worker's row (and a connection child's before the switch) with
    /// EnableCapabilities On: effective and filesystem uid `User`, saved
    /// uid 0 (the switch is then a change away from root: the kernel clears
    /// every thread's capabilities), a real uid of the workers' own (code
    /// running as User cannot signal them, they cannot signal root); the four capabilities, and an empty bounding set
    /// (README, "Privileges").
    fn worker_row(nnp: u8) -> Privs {
        Privs {
            uid: format!("{} 33 0 33", worker_real_uid()),
            ..Privs::row((33, 33), FOUR_CAPS, NO_CAPS, 2, nnp)
        }
    }

    fn row(id: (u32, u32), caps: &str, bnd: &str, seccomp: u8, nnp: u8) -> Privs {
        Privs {
            uid: vec![id.0.to_string(); 4].join(" "),
            gid: vec![id.1.to_string(); 4].join(" "),
            cap_eff: caps.into(),
            cap_prm: caps.into(),
            cap_inh: NO_CAPS.into(),
            cap_amb: NO_CAPS.into(),
            cap_bnd: bnd.into(),
            seccomp: seccomp.to_string(),
            no_new_privs: nnp.to_string(),
        }
    }
}

/// Every capability this environment offers: the bounding set the test
/// (and so httpd's parent) was started with.
fn all_caps() -> String {
    status_field(&proc_status(std::process::id() as i32), "CapBnd").unwrap()
}

/// Polls `pid` until its fields equal `want` (a worker may still be
/// entering its sandbox), then asserts.
fn expect_privs(what: &str, pid: i32, want: &Privs) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Privs::of(pid);
    while got.as_ref() != Some(want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        got = Privs::of(pid);
    }
    assert_eq!(got.as_ref(), Some(want), "{what} (pid {pid})");
}

/// A slow client: half a request, so that the process that holds it waits
/// before the switch. Returns the stream, the worker that accepted it and
/// the process that holds the connection: the worker's connection child,
/// or with UserPools On the worker itself, which peeks at the request head
/// before it chooses a path.
fn half_request(srv: &Server) -> (std::net::TcpStream, i32, i32) {
    let mut s = srv.connect();
    write!(s, "GET /status.php HTTP/1.1\r\nHost: alice.test\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(inode) = server_socket_inode(&s) {
            for w in srv.worker_pids() {
                for c in children_of(w) {
                    if holds_socket(c, &inode) {
                        return (s, w, c);
                    }
                }
                if user_pools_mode() && holds_socket(w, &inode) {
                    return (s, w, w);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no connection child holds our connection; workers {:?}",
            srv.worker_pids()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn privilege_table(enable_caps: bool) {
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let da = setup.docroot("a");
    write(&da.join("status.php"), STATUS_PHP, 0o644);
    write(
        &da.join("status.cgi"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncat /proc/self/status\n",
        0o755,
    );
    let setup = setup
        .global(format!(
            "EnableCapabilities {}",
            if enable_caps { "On" } else { "Off" }
        ))
        .vhost(VHost::of("alice.test", &da, &alice).line(format!(
            "<Directory {}>\n    Options +ExecCGI\n    AddHandler cgi-script .cgi\n  </Directory>",
            da.display()
        )));
    let srv = setup.start();
    let all = all_caps();

    // parent: root, every capability httpd was given, no seccomp
    expect_privs(
        "parent",
        srv.parent_pid(),
        &Privs::row((0, 0), &all, &all, 0, 0),
    );

    // connection child before the switch, and an idle worker beside it
    let (slow, busy_worker, conn_child) = half_request(&srv);
    let before = if enable_caps {
        Privs::worker_row(0)
    } else {
        // root with every capability, but an empty bounding set: emptied in
        // the worker before any module could start a thread
        Privs::row((0, 0), &all, NO_CAPS, 2, 0)
    };
    expect_privs("connection child before the switch", conn_child, &before);
    expect_privs("worker serving the slow client", busy_worker, &before);
    let idle: Vec<i32> = srv
        .worker_pids()
        .into_iter()
        .filter(|w| *w != busy_worker)
        .collect();
    assert!(!idle.is_empty(), "StartServers 2: an idle worker expected");
    for w in idle {
        expect_privs("idle worker", w, &before);
    }

    // after the switch: PHP, and a CGI program (cat), read their own status
    for (what, path) in [("PHP", "/status.php"), ("CGI", "/status.cgi")] {
        let r = srv.get("alice.test", path);
        assert_eq!(r.status, 200, "{what}: {}", srv.error_log());
        // The worker emptied the bounding set while it was root, in both
        // modes (README).
        assert_eq!(
            Privs::parse(&r.body),
            Some(Privs::row((alice.uid, alice.gid), NO_CAPS, NO_CAPS, 2, 0)),
            "{what} after the switch (EnableCapabilities {enable_caps})"
        );
        assert_eq!(
            status_field(&r.body, "Groups").as_deref(),
            Some(alice.gid.to_string().as_str()),
            "{what}: alice's groups only"
        );
    }
    drop(slow);
}

#[test]
fn privileges_match_the_readme_with_capabilities_on() {
    privilege_table(true);
}

#[test]
fn privileges_match_the_readme_with_capabilities_off() {
    privilege_table(false);
}

/// PHP that tries every way back to root (and to another vhost's uid)
/// through libc, then prints its identity. One line per call:
/// `name rc errno`; then `ids uid euid gid egid | groups`, the Uid and Gid
/// lines of /proc/self/status, and `getuid` through FFI as a sanity check.
fn escape_php(other_uid: u32, other_gid: u32) -> String {
    format!(
        r#"<?php
$c = FFI::cdef("
typedef unsigned int uid_t;
typedef unsigned int gid_t;
int setuid(uid_t);
int seteuid(uid_t);
int setreuid(uid_t, uid_t);
int setresuid(uid_t, uid_t, uid_t);
int setgid(gid_t);
int setegid(gid_t);
int setregid(gid_t, gid_t);
int setresgid(gid_t, gid_t, gid_t);
int setgroups(size_t, const gid_t *);
int setfsuid(uid_t);
int setfsgid(gid_t);
uid_t getuid(void);
int *__errno_location(void);
", "libc.so.6");
function report($c, $name, $rc) {{
    echo $name, ' ', $rc, ' ', $rc == -1 ? $c->__errno_location()[0] : 0, "\n";
}}
$g = $c->new("gid_t[1]");
$g[0] = 0;
report($c, 'setuid(0)', $c->setuid(0));
report($c, 'seteuid(0)', $c->seteuid(0));
report($c, 'setreuid(0,0)', $c->setreuid(0, 0));
report($c, 'setresuid(0,0,0)', $c->setresuid(0, 0, 0));
report($c, 'setgid(0)', $c->setgid(0));
report($c, 'setegid(0)', $c->setegid(0));
report($c, 'setregid(0,0)', $c->setregid(0, 0));
report($c, 'setresgid(0,0,0)', $c->setresgid(0, 0, 0));
report($c, 'setgroups(1,[0])', $c->setgroups(1, FFI::addr($g[0])));
report($c, 'setuid(other)', $c->setuid({other_uid}));
report($c, 'setresuid(other,other,other)', $c->setresuid({other_uid}, {other_uid}, {other_uid}));
report($c, 'setgid(other)', $c->setgid({other_gid}));
$g[0] = {other_gid};
report($c, 'setgroups(1,[other])', $c->setgroups(1, FFI::addr($g[0])));
// setfsuid/setfsgid return the previous fsuid/fsgid, failed or not:
// the status lines below show whether they changed.
$c->setfsuid(0);
$c->setfsgid(0);
$c->setfsuid({other_uid});
$g = posix_getgroups(); sort($g);
echo 'ids ', posix_getuid(), ' ', posix_geteuid(), ' ', posix_getgid(), ' ', posix_getegid(), ' | ', implode(',', $g), "\n";
foreach (file('/proc/self/status') as $l) {{
    if (preg_match('/^(Uid|Gid|Groups):/', $l)) echo preg_replace('/\s+/', ' ', trim($l)), "\n";
}}
echo 'ffi-getuid ', $c->getuid(), "\n";
"#
    )
}

#[test]
fn php_has_no_way_back_after_the_switch() {
    for caps in ["On", "Off"] {
        let alice = TestUser::create(true);
        let bob = TestUser::create(false);
        let setup = Setup::new();
        let (da, db) = (setup.docroot("a"), setup.docroot("b"));
        write(&da.join("escape.php"), &escape_php(bob.uid, bob.gid), 0o644);
        write(&db.join("index.html"), "bob", 0o644);
        let srv = setup
            .global(format!("EnableCapabilities {caps}"))
            .vhost(VHost::of("alice.test", &da, &alice).line("php_admin_value ffi.enable 1"))
            .vhost(VHost::of("bob.test", &db, &bob))
            .start();
        let r = srv.get("alice.test", "/escape.php");
        assert_eq!(r.status, 200, "{}\n{}", r.body, srv.error_log());
        let out = r.body;
        let calls: Vec<&str> = out.lines().filter(|l| l.starts_with("set")).collect();
        assert_eq!(calls.len(), 13, "EnableCapabilities {caps}: {out}");
        for l in &calls {
            let (name, res) = l.rsplit_once(' ').unwrap();
            let (name, rc) = name.rsplit_once(' ').unwrap();
            assert_eq!(
                (rc, res),
                ("-1", "1"),
                "EnableCapabilities {caps}: {name} did not fail with EPERM: {out}"
            );
        }
        let u = alice.uid;
        let g = alice.gid;
        let groups: Vec<String> = alice.groups().iter().map(|g| g.to_string()).collect();
        let want = [
            format!("ids {u} {u} {g} {g} | {}", groups.join(",")),
            format!("Uid: {u} {u} {u} {u}"),
            format!("Gid: {g} {g} {g} {g}"),
            format!("Groups: {}", groups.join(" ")),
            format!("ffi-getuid {u}"),
        ];
        let tail: Vec<&str> = out.lines().filter(|l| !l.starts_with("set")).collect();
        assert_eq!(
            tail, want,
            "EnableCapabilities {caps}: identity changed (fsuid is Uid's 4th field)"
        );
        // and bob's vhost still runs as bob
        assert_eq!(srv.get("bob.test", "/").body, "bob");
    }
}

/// LimitUIDRange at request time: an expression naming a uid outside the
/// range (by name or as `#uid`) gives a 500 and a log line naming the
/// range; a uid inside it is served as that user; vhosts without an
/// identity still run as `User` (33), which is always allowed. (A static
/// AssignUserID outside the range failing `-t` is in bad_config.rs.) The
/// directive takes its raw argument, as in the C module: quotes would be
/// part of the user name.
#[test]
fn limit_uid_range_applies_to_expressions() {
    let inside = TestUser::create_in(3000..=4000);
    let outside = TestUser::create_in(2000..=2999);
    let setup = Setup::new().global("LimitUIDRange 3000 4000");
    let d = setup.dir.join("docs");
    write(&d.join("who.php"), WHOAMI_PHP, 0o644);
    let docroot = |v: VHost| v.line(format!("DocumentRoot {}", d.display()));
    let srv = setup
        .vhost(
            docroot(VHost::new("expr.test"))
                .line("SetEnvIf Request_URI \"^/u/([a-z0-9]+)/\" ITKUSER=$1")
                .line(format!("AliasMatch ^/u/[a-z0-9]+/(.*) {}/$1", d.display()))
                .line("AssignUserIDExpr %{reqenv:ITKUSER}"),
        )
        .vhost(docroot(VHost::new("num2500.test")).line("AssignUserIDExpr #2500"))
        .vhost(docroot(VHost::new("numin.test")).line(format!("AssignUserIDExpr #{}", inside.uid)))
        .vhost(docroot(VHost::new("plain.test")))
        .start();

    let r = srv.get("expr.test", &format!("/u/{}/who.php", inside.name));
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, format!("{0} {0} 33 33 | 33", inside.uid).as_str()),
        "expression naming a user inside the range"
    );
    let r = srv.get("numin.test", "/who.php");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, format!("{0} {0} 33 33 | 33", inside.uid).as_str()),
        "#uid inside the range: {}",
        srv.error_log()
    );
    assert!(
        srv.get("plain.test", "/who.php")
            .body
            .starts_with("33 33 33 33"),
        "User is allowed outside LimitUIDRange"
    );

    let r = srv.get("expr.test", &format!("/u/{}/who.php", outside.name));
    assert_eq!(r.status, 500, "{}", r.body);
    let r = srv.get("num2500.test", "/who.php");
    assert_eq!(r.status, 500, "{}", r.body);
    let log = srv.error_log();
    for uid in [outside.uid, 2500] {
        assert!(
            log.lines().any(|l| l.contains("cannot switch identity")
                && l.contains(&format!("uid {uid} is not allowed"))
                && l.contains("LimitUIDRange")),
            "no log line for uid {uid} naming LimitUIDRange:\n{log}"
        );
    }
}

/// LimitGIDRange and supplementary groups: a group of the target user
/// outside the range is left out (and logged), one inside is kept; a
/// primary group outside it from AssignGroupIDExpr gives a 500.
#[test]
fn limit_gid_range_leaves_out_supplementary_groups_outside_it() {
    let user = TestUser::create_in(3000..=4000);
    let kept = TestGroup::create_in(3000..=4000);
    let dropped = TestGroup::create_in(2000..=2999);
    user.join(&kept);
    user.join(&dropped);
    assert!(
        user.groups().contains(&dropped.gid),
        "the user is a member of {}",
        dropped.gid
    );
    let setup = Setup::new()
        .global("LimitUIDRange 3000 4000")
        .global("LimitGIDRange 3000 4000");
    let d = setup.docroot("u");
    write(&d.join("who.php"), WHOAMI_PHP, 0o644);
    let srv = setup
        .vhost(VHost::of("user.test", &d, &user))
        .vhost(
            VHost::of("group.test", &d, &user).line(format!("AssignGroupIDExpr #{}", dropped.gid)),
        )
        .start();
    let mut groups = [user.gid, kept.gid];
    groups.sort();
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let r = srv.get("user.test", "/who.php");
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            200,
            format!("{0} {0} {0} {0} | {1}", user.uid, groups.join(",")).as_str()
        ),
        "{}",
        srv.error_log()
    );
    // a primary group outside the range, from AssignGroupIDExpr: 500
    let r = srv.get("group.test", "/who.php");
    assert_eq!(r.status, 500, "{}", r.body);
    let log = srv.error_log();
    assert!(
        log.lines().any(|l| l.contains("cannot switch identity")
            && l.contains(&format!("gid {} is not allowed", dropped.gid))
            && l.contains("LimitGIDRange")),
        "no log line for gid {} naming LimitGIDRange:\n{log}",
        dropped.gid
    );
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "user {} (uid {}) keeps no supplementary groups [{}]: outside LimitGIDRange",
            user.name, user.uid, dropped.gid
        ))),
        "{log}"
    );
}

/// NoNewPrivileges: off by default, so a setgid helper run from PHP (as
/// Postfix's postdrop behind mail()) gains its group; On sets no_new_privs
/// in the workers and everything below them, and the helper does not.
#[test]
fn setgid_helpers_work_unless_no_new_privileges() {
    for nnp in [false, true] {
        let alice = TestUser::create(false);
        let helper_group = TestUser::create(false);
        let setup = Setup::new();
        // a copy of id(1), setgid to the helper's group, like postdrop
        let bin = setup.dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy("/usr/bin/id", bin.join("id")).unwrap();
        chown(&bin.join("id"), 0, helper_group.gid);
        // after the chown, which clears set-id bits
        write_mode(&bin.join("id"), 0o2755);
        let da = setup.docroot("a");
        write(
            &da.join("helper.php"),
            &format!(
                "<?php preg_match('/^NoNewPrivs:\\s*(\\d)/m', file_get_contents('/proc/self/status'), $m); \
                 echo $m[1], ' ', trim(shell_exec('{} -g')), ' ', posix_getegid();",
                bin.join("id").display()
            ),
            0o644,
        );
        let mut setup = setup.vhost(VHost::of("alice.test", &da, &alice));
        if nnp {
            setup = setup.global("NoNewPrivileges On");
        }
        let srv = setup.start();
        let want = if nnp {
            format!("1 {0} {0}", alice.gid)
        } else {
            format!("0 {} {}", helper_group.gid, alice.gid)
        };
        let r = srv.get("alice.test", "/helper.php");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, want.as_str()),
            "NoNewPrivileges {nnp}: NoNewPrivs, the helper's egid, PHP's egid\n{}",
            srv.error_log()
        );
        // the workers carry the flag (and pass it to every connection child)
        let workers = srv.worker_pids();
        assert!(!workers.is_empty());
        for w in workers {
            expect_privs("idle worker", w, &Privs::worker_row(nnp as u8));
        }
        assert_eq!(
            status_field(&proc_status(srv.parent_pid()), "NoNewPrivs").as_deref(),
            Some("0"),
            "the parent itself is not restricted"
        );
    }
}

fn write_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---- Startup where seccomp or capabilities are unavailable ----

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_SETPCAP: u32 = 8;

/// A seccomp program making the listed system calls fail with `errno`; for
/// `prctl`, only the listed options (first argument).
fn deny_program(syscalls: &[i64], prctl_options: &[u64], errno: i32) -> Vec<libc::sock_filter> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let mut rules = std::collections::BTreeMap::new();
    for nr in syscalls {
        rules.insert(*nr, vec![]);
    }
    if !prctl_options.is_empty() {
        let r = prctl_options
            .iter()
            .map(|o| {
                SeccompRule::new(vec![
                    SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *o)
                        .unwrap(),
                ])
                .unwrap()
            })
            .collect();
        rules.insert(libc::SYS_prctl, r);
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: seccompiler::BpfProgram = f.try_into().unwrap();
    // seccompiler's sock_filter has the kernel's (and libc's) layout
    prog.iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// What to take away from httpd before exec.
enum Take {
    /// Install this seccomp program (without no_new_privs: we are root).
    Seccomp(Vec<libc::sock_filter>),
    /// Drop these capabilities from the bounding set (root's exec then
    /// gets none of them).
    Caps(Vec<u32>),
}

fn start_without(globals: &[&str], take: Take) -> FailedStart {
    let mut setup = Setup::new();
    write(&setup.dir.join("docs/index.html"), "served", 0o644);
    for g in globals {
        setup = setup.global(*g);
    }
    let pre_exec = move || -> std::io::Result<()> {
        match &take {
            Take::Seccomp(prog) => {
                let fprog = libc::sock_fprog {
                    len: prog.len() as u16,
                    filter: prog.as_ptr() as *mut libc::sock_filter,
                };
                // SAFETY: fprog points at a live, well-formed program that
                // the kernel copies; a plain system call, fork-safe.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        0,
                        &fprog as *const libc::sock_fprog,
                    )
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Take::Caps(caps) => {
                for c in caps {
                    // SAFETY: prctl with integer arguments, fork-safe.
                    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *c as libc::c_ulong, 0, 0, 0) }
                        != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
        }
        Ok(())
    };
    // SAFETY: pre_exec only makes raw system calls on memory it owns.
    unsafe { setup.start_expecting_failure(10, pre_exec) }
}

/// The error log without its debug and info lines, for failure messages.
fn log_summary(f: &FailedStart) -> String {
    let log: Vec<&str> = f
        .error_log
        .lines()
        .filter(|l| !l.contains(":debug]") && !l.contains(":info]"))
        .collect();
    format!(
        "exit {:?}, answered {}, leftovers {:?}\nstderr: {}\nerror log:\n{}",
        f.status,
        f.answered,
        f.leftovers,
        f.stderr,
        log.join("\n")
    )
}

/// httpd stopped by itself (not killed by a signal) with exit status 1,
/// served nothing, left no process behind, and logged one of `needles` at
/// level emerg.
fn assert_refused(what: &str, f: &FailedStart, needles: &[&str]) {
    let summary = log_summary(f);
    assert!(
        f.status.is_some_and(|s| s.code().is_some()),
        "{what}: httpd did not exit by itself: {summary}"
    );
    // as prefork: "MPM run failed" (AH02818) or "Configuration Failed",
    // exit 1, so that a supervisor sees the failure
    assert_eq!(
        f.status.and_then(|s| s.code()),
        Some(1),
        "{what}: exit status: {summary}"
    );
    assert!(!f.answered, "{what}: httpd answered a request: {summary}");
    assert!(
        f.leftovers.is_empty(),
        "{what}: processes left behind: {summary}"
    );
    assert!(
        f.error_log
            .lines()
            .any(|l| l.contains(":emerg]") && needles.iter().any(|n| l.contains(n))),
        "{what}: no emerg line with one of {needles:?}: {summary}"
    );
}

/// Every seccomp request fails as on a kernel without CONFIG_SECCOMP:
/// the parent refuses to start, exit status 1.
#[test]
fn startup_fails_clearly_without_seccomp() {
    let f = start_without(
        &[],
        Take::Seccomp(deny_program(
            &[libc::SYS_seccomp],
            &[libc::PR_GET_SECCOMP as u64, libc::PR_SET_SECCOMP as u64],
            libc::EINVAL,
        )),
    );
    assert_refused("no seccomp", &f, &["does not offer seccomp filters"]);
    assert!(
        f.error_log.contains("refusing to start"),
        "{}",
        log_summary(&f)
    );
}

/// seccomp exists but installing a filter fails, refused by a container's
/// own policy (EPERM): every worker logs why and exits; the parent stops.
#[test]
fn startup_fails_clearly_when_the_seccomp_filter_cannot_be_installed() {
    let f = start_without(
        &[],
        Take::Seccomp(deny_program(
            &[libc::SYS_seccomp],
            &[libc::PR_SET_SECCOMP as u64],
            libc::EPERM,
        )),
    );
    assert_refused(
        "seccomp refused",
        &f,
        &["cannot enter the worker sandbox: seccomp filter failed: Operation not permitted"],
    );
    // (Without CAP_SYS_ADMIN the filter goes in under no_new_privs:
    // container.rs.)
}

/// httpd started without one of the capabilities every switch needs
/// (EnableCapabilities On): the parent names it at startup (or a worker
/// names the step that failed) and httpd exits with status 1. (Without the
/// optional CAP_SYS_NICE or CAP_DAC_READ_SEARCH it starts: container.rs.)
#[test]
fn startup_fails_clearly_without_capabilities() {
    for (cap, name, step) in [
        (CAP_SETUID, "CAP_SETUID", "setresuid failed"),
        (CAP_SETGID, "CAP_SETGID", "setgroups failed"),
        (
            CAP_SETPCAP,
            "CAP_SETPCAP",
            "empty capability bounding set failed",
        ),
    ] {
        let f = start_without(&[], Take::Caps(vec![cap]));
        assert_refused(
            &format!("no {name}"),
            &f,
            // the failed step, or (from a check at startup) the capability
            &[&format!("cannot enter the worker sandbox: {step}"), name],
        );
    }
}

/// With EnableCapabilities Off the workers stay root and only the
/// connection children switch: a root without CAP_SETUID, CAP_SETGID or
/// CAP_SETPCAP (with which the worker empties its bounding set) must not
/// start and then fail every request with a 500; the workers name what is
/// missing and the server stops.
#[test]
fn startup_fails_clearly_without_capabilities_with_capabilities_off() {
    for (cap, name) in [
        (CAP_SETUID, "CAP_SETUID"),
        (CAP_SETGID, "CAP_SETGID"),
        (CAP_SETPCAP, "CAP_SETPCAP"),
    ] {
        let f = start_without(&["EnableCapabilities Off"], Take::Caps(vec![cap]));
        assert_refused(&format!("no {name}, EnableCapabilities Off"), &f, &[name]);
    }
}
