//! Issue 11, end to end: what one tenant's code can do to the server and to
//! other tenants. The attacker is PHP (with FFI where native code is
//! needed) in a vhost of its own.

mod harness;
use harness::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// GET with extra header lines, on a new connection.
fn get_with(srv: &Server, host: &str, path: &str, headers: &str) -> Response {
    let mut s = srv.connect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut s).unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

// ---------------------------------------------------------------------------
// Item 3: code running as User cannot freeze the server
// ---------------------------------------------------------------------------

/// posix_kill(SIGSTOP) on every pid given, SIGCONT right after a success so
/// that a failing test does not leave the server frozen; prints
/// `pid:result:errno` per pid.
const KILL_PHP: &str = r#"<?php
foreach (explode(',', $_GET['pids']) as $p) {
    $ok = posix_kill((int)$p, 19); // SIGSTOP
    $err = posix_get_last_error();
    if ($ok) { posix_kill((int)$p, 18); } // SIGCONT
    echo $p, ':', $ok ? 'stopped' : 'refused', ':', $err, "\n";
}
echo 'as ', posix_getuid(), "\n";
"#;

#[test]
fn a_vhost_without_assign_user_id_cannot_stop_the_workers() {
    let setup = Setup::new();
    let d = setup.docroot("plain");
    write(&d.join("kill.php"), KILL_PHP, 0o644);
    write(&d.join("index.html"), "alive", 0o644);
    let srv = setup
        // (a connection child before the switch exists on the classic path
        // only: with UserPools the worker holds a half request)
        .global("UserPools Off")
        .vhost(VHost::new("plain.test").line(format!("DocumentRoot {}", d.display())))
        .start();
    // a connection child that has not switched yet: it waits for the rest
    // of its request
    let mut slow = srv.connect();
    write!(slow, "GET /index.html HTTP/1.1\r\nHost: plain.test\r\n").unwrap();
    let workers = srv.worker_pids();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pre_switch = vec![];
    // the slow client's own connection child (another one, such as the
    // readiness probe's, may be ending meanwhile)
    while pre_switch.is_empty() && Instant::now() < deadline {
        if let Some(inode) = server_socket_inode(&slow) {
            pre_switch = workers
                .iter()
                .flat_map(|w| children_of(*w))
                .filter(|c| holds_socket(*c, &inode))
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pre_switch.is_empty(),
        "no connection child for the slow client"
    );
    let mut targets = workers.clone();
    targets.extend(&pre_switch);
    targets.push(srv.parent_pid());
    let list: Vec<String> = targets.iter().map(|p| p.to_string()).collect();
    let r = srv.get("plain.test", &format!("/kill.php?pids={}", list.join(",")));
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert!(
        r.body.contains("as 33\n"),
        "runs as User (www-data): {}",
        r.body
    );
    // EPERM (1) for every worker, the parent and the slow client's
    // connection child; another pre-switch child may have ended meanwhile
    // (ESRCH, 3); none was stopped
    let refused = |p: &i32| r.body.contains(&format!("{p}:refused:1\n"));
    assert!(!r.body.contains(":stopped:"), "{}", r.body);
    for p in workers.iter().chain([srv.parent_pid()].iter()) {
        assert!(refused(p), "pid {p} was not refused:\n{}", r.body);
    }
    assert!(
        pre_switch.iter().any(refused),
        "no pre-switch child {pre_switch:?} refused:\n{}",
        r.body
    );
    for p in &pre_switch {
        assert!(
            refused(p) || r.body.contains(&format!("{p}:refused:3\n")),
            "pid {p}:\n{}",
            r.body
        );
    }
    // the slow client is still served, and so is everyone else
    write!(slow, "Connection: close\r\n\r\n").unwrap();
    let r = read_response(&mut slow).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "alive"));
    for _ in 0..5 {
        assert_eq!(srv.get("plain.test", "/index.html").body, "alive");
    }
}

// ---------------------------------------------------------------------------
// Item 4: identities chosen per request
// ---------------------------------------------------------------------------

/// A uid no account has, near `from`.
fn free_uid(from: u32) -> u32 {
    (from..from + 1000)
        .find(|u| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*u))
                .ok()
                .flatten()
                .is_none()
        })
        .expect("a free uid")
}

fn expr_server(alice: &TestUser, ranges: &[&str]) -> Server {
    let mut setup = Setup::new();
    let d = setup.docroot("e");
    write(&d.join("who.php"), WHOAMI_PHP, 0o644);
    for r in ranges {
        setup = setup.global(*r);
    }
    setup
        .vhost(
            VHost::new("user.test")
                .line(format!("DocumentRoot {}", d.display()))
                .line("AssignUserIDExpr %{HTTP:X-User}"),
        )
        .vhost(VHost::of("group.test", &d, alice).line("AssignGroupIDExpr %{HTTP:X-Group}"))
        .start()
}

#[test]
fn identities_chosen_per_request_cannot_be_system_accounts_by_default() {
    let alice = TestUser::create_in(20000..=29999);
    let nobody_uid = free_uid(4000);
    let srv = expr_server(&alice, &[]);
    let user = |u: &str| get_with(&srv, "user.test", "/who.php", &format!("X-User: {u}\r\n"));
    let group = |g: &str| get_with(&srv, "group.test", "/who.php", &format!("X-Group: {g}\r\n"));

    let r = user(&alice.name);
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert!(
        r.body.starts_with(&format!("{0} {0} ", alice.uid)),
        "{}",
        r.body
    );
    let r = group(&alice.name);
    assert_eq!(r.status, 200, "{}", srv.error_log());

    for (what, r) in [
        ("daemon (uid 1)", user("daemon")),
        ("#uid without account", user(&format!("#{nobody_uid}"))),
        ("shadow (gid 42)", group("shadow")),
        ("disk (gid 6)", group("disk")),
    ] {
        assert_eq!(r.status, 500, "{what} was accepted: {}", r.body);
    }
    let log = srv.error_log();
    for needle in [
        "AssignUserIDExpr returned 'daemon': uid 1 is a system user account (below UID_MIN",
        &format!("uid {nobody_uid} has no user account"),
        "AssignGroupIDExpr returned 'shadow': gid 42 is a system group (below GID_MIN",
        "AssignGroupIDExpr returned 'disk': gid 6 is a system group",
    ] {
        assert!(log.contains(needle), "no log line with {needle:?}:\n{log}");
    }
}

#[test]
fn an_explicit_range_admits_system_accounts_for_expressions() {
    let alice = TestUser::create_in(20000..=29999);
    let nobody_uid = free_uid(4000);
    let srv = expr_server(&alice, &["LimitUIDRange 1 60000", "LimitGIDRange 1 60000"]);
    let user = |u: &str| get_with(&srv, "user.test", "/who.php", &format!("X-User: {u}\r\n"));
    let group = |g: &str| get_with(&srv, "group.test", "/who.php", &format!("X-Group: {g}\r\n"));
    let r = user("daemon");
    assert_eq!(
        (r.status, r.body.starts_with("1 1 ")),
        (200, true),
        "{}",
        r.body
    );
    let r = user(&format!("#{nobody_uid}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with(&format!("{0} {0} ", nobody_uid)),
        "{}",
        r.body
    );
    let r = group("shadow");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(" 42 42 |"), "{}", r.body);
}

// ---------------------------------------------------------------------------
// Item 1: MaxClientsVHost cannot be forged
// ---------------------------------------------------------------------------

// The module's key for "ServerName:port": what an attacker computes too,
// the algorithm being public.
use mpm_itk_core::limits::vhost_key;

/// Finds every shared page holding the attacker's own vhost key (the
/// MaxClientsVHost table) and writes the victim's key into every word.
const FORGE_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int forge(unsigned long long mine, unsigned long long victim, char *out, int len) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &a, &b, perms) != 3) continue;
        if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 's') continue;
        uint64_t *p = (uint64_t *)a;
        size_t n = (b - a) / 8, i;
        int ours = 0;
        for (i = 0; i < n && !ours; i++) ours = p[i] == mine;
        if (!ours) continue;
        for (i = 0; i < n; i++) p[i] = victim;
        found++;
    }
    if (f) fclose(f);
    return snprintf(out, len, "found=%d", found);
}
"#;

#[test]
fn vhost_code_cannot_forge_another_vhosts_max_clients_count() {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    let setup = Setup::new();
    let (da, db) = (setup.docroot("a"), setup.docroot("b"));
    let so = build_shared_object(&setup.dir, "forge", FORGE_C);
    let port = setup.port();
    write(
        &da.join("forge.php"),
        &format!(
            // (the keys come in the query string: as literals in the
            // script they would also be in opcache's shared memory, which
            // the forgery would then overwrite as a whole)
            r#"<?php
$c = FFI::cdef("int forge(unsigned long long mine, unsigned long long victim, char *out, int len);", "{}");
$buf = FFI::new("char[64]");
$c->forge(intval($_GET['mine']), intval($_GET['victim']), $buf, 64);
echo FFI::string($buf);
"#,
            so.display(),
        ),
        0o644,
    );
    write(&db.join("index.html"), "bob", 0o644);
    let srv = setup
        .vhost(VHost::of("alice.test", &da, &alice).line("php_admin_value ffi.enable 1"))
        .vhost(VHost::of("bob.test", &db, &bob).line("MaxClientsVHost 1"))
        .start();
    assert_eq!(srv.get("bob.test", "/index.html").body, "bob");
    let forge = format!(
        "/forge.php?mine={}&victim={}",
        vhost_key("alice.test", port) as i64,
        vhost_key("bob.test", port) as i64
    );
    for _ in 0..3 {
        let r = srv.get("alice.test", &forge);
        assert_eq!(r.status, 200, "{}\n{}", r.body, srv.error_log());
        assert!(r.body.starts_with("found="), "{}", r.body);
    }
    // bob answers at once (at most a maintenance cycle allowed)
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = srv.get("bob.test", "/index.html");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob.test still answers {} 2 s after the forgery:\n{}",
            r.status,
            srv.error_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After the switch the table is out of reach: a keep-alive request for
/// another vhost is served when neither vhost has MaxClientsVHost, and
/// closes the connection (to be counted anew) when one has.
#[test]
fn keep_alive_to_another_vhost_is_recounted_only_with_max_clients_vhost() {
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let d = setup.docroot("a");
    write(&d.join("index.html"), "ok", 0o644);
    let vhost = |name: &str| {
        VHost::new(name)
            .line(format!("DocumentRoot {}", d.display()))
            .line(format!("AssignUserID {0} {0}", alice.name))
    };
    let srv = setup
        .vhost(vhost("one.test"))
        .vhost(vhost("two.test"))
        .vhost(vhost("limited.test").line("MaxClientsVHost 5"))
        .start();
    let pair = |first: &str, second: &str| {
        let mut s = srv.connect();
        write!(s, "GET /index.html HTTP/1.1\r\nHost: {first}\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).unwrap().status, 200);
        let _ = write!(s, "GET /index.html HTTP/1.1\r\nHost: {second}\r\n\r\n");
        read_response(&mut s).ok().map(|r| r.status)
    };
    assert_eq!(pair("one.test", "two.test"), Some(200));
    assert_eq!(pair("limited.test", "limited.test"), Some(200));
    // refused and closed: unanswered (a connection child), or a fixed 421
    // (a user process, UserPools: limited.test is not in its pool)
    for (a, b) in [("one.test", "limited.test"), ("limited.test", "one.test")] {
        let r = pair(a, b);
        assert!(matches!(r, None | Some(421)), "{a} then {b}: {r:?}");
    }
    // and the limit still counts exactly
    assert_eq!(srv.get("limited.test", "/index.html").status, 200);
}

// ---------------------------------------------------------------------------
// Item 2: the parent trusts its own records, not the scoreboard
// ---------------------------------------------------------------------------

/// Finds the scoreboard with httpd's own headers (its global record opens
/// with ServerLimit, ThreadLimit 1 and a small generation) and, for `secs`
/// seconds, writes `status` into every slot, `victim` into every pid field
/// and random generations everywhere.
const SCRIBBLE_C: &str = r#"
#include "httpd.h"
#include "scoreboard.h"
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static char *find(int server_limit) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    char *found = NULL;
    while (f && !found && fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &a, &b, perms) != 3) continue;
        if (perms[0] != 'r' || perms[1] != 'w' || perms[3] != 's') continue;
        for (unsigned long off = 0; off <= 64 && a + off + sizeof(global_score) < b; off += 8) {
            global_score *g = (global_score *)(a + off);
            if (g->server_limit == server_limit && g->thread_limit == 1 && g->running_generation >= 0 && g->running_generation < 1000) {
                found = (char *)g;
                break;
            }
        }
    }
    if (f) fclose(f);
    return found;
}

int scribble(int server_limit, int victim, int status, int secs, char *out, int len) {
    char *sb = find(server_limit);
    if (!sb) return snprintf(out, len, "found=0");
    global_score *g = (global_score *)sb;
    process_score *ps = (process_score *)(sb + sizeof(global_score));
    worker_score *ws = (worker_score *)(sb + sizeof(global_score) + sizeof(process_score) * server_limit);
    unsigned r = 12345;
    long rounds = 0;
    time_t end = time(NULL) + secs;
    while (time(NULL) < end) {
        r = r * 1103515245u + 12345u;
        g->running_generation = (int)r;
        for (int i = 0; i < server_limit; i++) {
            ps[i].pid = victim;
            ps[i].generation = (int)(r >> 3);
            ws[i].status = status;
        }
        rounds++;
        usleep(2000);
    }
    return snprintf(out, len, "found=1 rounds=%ld", rounds);
}
"#;

#[test]
fn scribbling_on_the_scoreboard_neither_forks_a_storm_nor_signals_foreign_pids() {
    const SERVER_LIMIT: u32 = 13;
    const MAX_WORKERS: usize = 6;
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let da = setup.docroot("a");
    let cflags: Vec<String> = {
        let out = std::process::Command::new("apr-1-config")
            .args(["--includes", "--cppflags"])
            .output()
            .expect("apr-1-config (apache2-dev)");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .chain(["-I/usr/include/apache2".to_string()])
            .collect()
    };
    let flags: Vec<&str> = cflags.iter().map(String::as_str).collect();
    let so = build_shared_object_with(&setup.dir, "scribble", SCRIBBLE_C, &flags);
    write(
        &da.join("scribble.php"),
        &format!(
            r#"<?php
$c = FFI::cdef("int scribble(int server_limit, int victim, int status, int secs, char *out, int len);", "{}");
$buf = FFI::new("char[64]");
$c->scribble({SERVER_LIMIT}, (int)$_GET['victim'], (int)$_GET['status'], (int)$_GET['secs'], $buf, 64);
echo FFI::string($buf);
"#,
            so.display()
        ),
        0o644,
    );
    write(&da.join("index.html"), "alive", 0o644);
    let srv = setup
        .global(format!("ServerLimit {SERVER_LIMIT}"))
        .global(format!("MaxRequestWorkers {MAX_WORKERS}"))
        .vhost(VHost::of("alice.test", &da, &alice).line("php_admin_value ffi.enable 1"))
        .start();
    // a sacrificial process in httpd's own process group, whose pid the
    // attack writes into every slot
    let mut victim = std::process::Command::new("sleep")
        .arg("120")
        .process_group(srv.parent_pid())
        .spawn()
        .expect("sleep");
    let vpid = victim.id();

    // SERVER_DEAD (0) and SERVER_READY (2)
    let attack = |status: u32, secs: u32| {
        let port = srv.port();
        get_in_background(
            port,
            "alice.test",
            &format!("/scribble.php?victim={vpid}&status={status}&secs={secs}"),
        )
    };

    // Every slot dead, for 3 s: the parent must not fork past
    // MaxRequestWorkers (it forked over a hundred before).
    let a = attack(0, 3);
    let mut most = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        most = most.max(srv.worker_pids().len());
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = a.join().unwrap().map(|r| r.body).unwrap_or_default();
    assert!(
        body.starts_with("found=1"),
        "the attack found no scoreboard: {body}"
    );
    assert!(
        most <= MAX_WORKERS,
        "{most} workers with MaxRequestWorkers {MAX_WORKERS}:\n{}",
        srv.error_log()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !srv.error_log().contains("the scoreboard disagrees") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        srv.error_log().contains("the scoreboard disagrees"),
        "{}",
        srv.error_log()
    );

    // Every slot "ready" with the victim's pid, and a graceful restart
    // meanwhile: the parent signals its workers, never the pids the
    // scoreboard names (SIGUSR1 would end the victim, as it would a piped
    // logger or another tenant's CGI in httpd's process group).
    let a = attack(2, 3);
    std::thread::sleep(Duration::from_millis(1000));
    srv.signal(libc::SIGUSR1);
    let body = a.join().unwrap().map(|r| r.body).unwrap_or_default();
    assert!(body.starts_with("found=1"), "{body}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the parent signalled a pid it did not fork: {:?}\n{}",
        victim.try_wait(),
        srv.error_log()
    );
    // and the server answers, with the restart done
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = srv
            .try_get("alice.test", "/index.html")
            .is_ok_and(|r| r.body == "alive");
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "{}", srv.error_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = victim.kill();
    let _ = victim.wait();
}

// ---------------------------------------------------------------------------
// Item 5: what vhost code can still reach (README, "Security model")
// ---------------------------------------------------------------------------

/// Reads every private, readable mapping of `pid` and says whether `needle`
/// is in it.
fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let Ok(mut mem) = std::fs::File::open(format!("/proc/{pid}/mem")) else {
        return false;
    };
    for l in maps.lines() {
        let mut f = l.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        // private and readable: heaps, pools, the configuration
        if !perms.starts_with('r') || !perms.ends_with('p') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        if b - a > 256 << 20 || mem.seek(SeekFrom::Start(a)).is_err() {
            continue;
        }
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.read_exact(&mut buf).is_ok() && buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// The residual risks the README's security model lists, as measured: a
/// PHP process of vhost A holds vhost B's log descriptor open for writing
/// and B's `SetEnv` secret in its memory, and a process it starts with
/// `setsid` outlives `apachectl stop`.
#[test]
fn what_vhost_code_can_still_reach_is_as_documented() {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    let setup = Setup::new();
    let (da, db) = (setup.docroot("a"), setup.docroot("b"));
    let drop_dir = setup.dir.join("alice-drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    chown(&drop_dir, alice.uid, alice.gid);
    let secret = format!("itk-secret-{}-{}", std::process::id(), bob.uid);
    let bob_log = setup.dir.join("logs/bob-access.log");
    write(
        &da.join("reach.php"),
        &format!(
            r#"<?php
file_put_contents('{drop}/pid', getmypid());
foreach (scandir('/proc/self/fd') as $fd) {{
    if (!ctype_digit($fd)) continue;
    $path = @readlink("/proc/self/fd/$fd");
    $info = @file_get_contents("/proc/self/fdinfo/$fd");
    preg_match('/flags:\s*([0-7]+)/', (string)$info, $m);
    echo "FD $fd ", $path, ' ', $m[1] ?? '?', "\n";
}}
foreach (file('/proc/self/maps') as $l) {{
    if (preg_match('/^([0-9a-f]+)-([0-9a-f]+) rw-s /', $l, $m)) {{
        echo 'SHM ', hexdec($m[2]) - hexdec($m[1]), ' ', trim(substr($l, 73)), "\n";
    }}
}}
echo 'OPCACHE ', function_exists('opcache_get_status') && @opcache_get_status(false) ? 'on' : 'off', "\n";
echo 'ESCAPED ', trim(shell_exec('setsid sleep 300 > /dev/null 2>&1 & echo $!')), "\n";
sleep(3);
"#,
            drop = drop_dir.display()
        ),
        0o644,
    );
    write(&db.join("index.html"), "bob", 0o644);
    let srv = setup
        .vhost(VHost::of("alice.test", &da, &alice))
        .vhost(
            VHost::of("bob.test", &db, &bob)
                .line(format!("SetEnv BOB_DB_PASSWORD {secret}"))
                .line(format!("CustomLog {} common", bob_log.display())),
        )
        .global("LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b\" common")
        .start();
    assert_eq!(srv.get("bob.test", "/index.html").body, "bob");

    let port = srv.port();
    let page = get_in_background(port, "alice.test", "/reach.php");
    let pid_file = drop_dir.join("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let php_pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("the PHP page wrote its pid")
        .trim()
        .parse()
        .unwrap();
    let in_memory = memory_contains(php_pid, secret.as_bytes());
    let body = page.join().unwrap().map(|r| r.body).unwrap_or_default();

    // a process started with setsid survives the stop (checked, and
    // cleaned up, before anything else can fail)
    let escaped: Option<i32> = body
        .lines()
        .find_map(|l| l.strip_prefix("ESCAPED "))
        .and_then(|p| p.trim().parse().ok());
    let mut srv = srv;
    srv.stop();
    let alive = escaped.is_some_and(|p| {
        std::path::Path::new(&format!("/proc/{p}")).exists()
            && !proc_status(p).contains("State:\tZ")
    });
    if let Some(p) = escaped {
        // SAFETY: the escaped test process (a sleep as alice), ours to clean up.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    assert!(escaped.is_some(), "no escaped pid:\n{body}");

    // another vhost's secret is in the tenant's address space
    assert!(
        in_memory,
        "bob's SetEnv value was not found in alice's PHP process (README says it is)"
    );
    // another vhost's log is open for writing in the tenant's process
    let bob_fd = body
        .lines()
        .filter_map(|l| l.strip_prefix("FD "))
        .find(|l| l.contains(&bob_log.display().to_string()))
        .unwrap_or_else(|| panic!("bob's log is not open in alice's process:\n{body}"));
    let flags = u32::from_str_radix(bob_fd.rsplit(' ').next().unwrap(), 8).unwrap();
    assert_ne!(flags & 3, 0, "bob's log is open read-only: {bob_fd}");
    // shared memory the tenant can write: the scoreboard always, opcache's
    // (every tenant's compiled scripts) when it is on
    let shm: Vec<u64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("SHM "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!shm.is_empty(), "no writable shared mapping:\n{body}");
    if body.contains("OPCACHE on") {
        assert!(
            shm.iter().any(|n| *n >= 8 << 20),
            "opcache is on but its shared memory is not mapped writable:\n{body}"
        );
    }
    // no epoll instance of the worker (identity.rs checks the rest)
    assert!(
        !body.lines().any(|l| l.contains("anon_inode:[eventpoll]")),
        "{body}"
    );
    assert!(
        alive,
        "the setsid process died with the server (README says it survives)"
    );
}

/// mod_cgid runs CGI programs from a daemon of its own, as User for every
/// vhost: the module says so at startup.
#[test]
fn mod_cgid_is_warned_about() {
    let srv = Setup::new().modules(&["cgid"]).start();
    let log = srv.error_log();
    assert!(
        log.lines().any(|l| l.contains(":warn]")
            && l.contains("mod_cgid is loaded")
            && l.contains("load mod_cgi instead")),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// .htaccess expressions before the switch
// ---------------------------------------------------------------------------

/// `<If>` in a tenant's .htaccess is evaluated before the switch, while the
/// connection child can still search any directory (CAP_DAC_READ_SEARCH).
/// httpd (2.4.71) refuses `file()` in .htaccess, so no content leaks; the
/// file tests (`-f`, `-d`, ...) still tell whether a path exists, also in
/// another tenant's directory: a residual risk the README's security model
/// lists, measured here.
#[test]
fn htaccess_expressions_read_no_file_but_see_whether_paths_exist() {
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let da = setup.docroot("a");
    let secret = setup.dir.join("secret.txt");
    write(&secret, "TOPSECRET\n", 0o600);
    write(&da.join("index.html"), "alice", 0o644);
    let oracle = |re: &str| {
        format!(
            "<If \"file('{}') =~ /{re}/\">\n  Require all denied\n</If>\n",
            secret.display()
        )
    };
    let srv = setup
        .vhost(VHost::of("alice.test", &da, &alice).line(format!(
            "<Directory {}>\n    AllowOverride All\n  </Directory>",
            da.display()
        )))
        .start();
    let mut answers = vec![];
    for re in ["^TOPSECRET", "^NOPE"] {
        write(&da.join(".htaccess"), &oracle(re), 0o644);
        answers.push(srv.get("alice.test", "/index.html").status);
    }
    // with the leak: 403 for the right guess, 200 for the wrong one
    assert_ne!(
        answers,
        vec![403, 200],
        "the .htaccess read a root-only file"
    );
    assert_eq!(answers, vec![500, 500], "{}", srv.error_log());
    assert!(
        srv.error_log()
            .contains("not available in restricted context"),
        "{}",
        srv.error_log()
    );
    // existence still answers (documented residual risk)
    write(
        &da.join(".htaccess"),
        &format!(
            "<If \"-f '{}'\">\n  Require all denied\n</If>\n",
            secret.display()
        ),
        0o644,
    );
    assert_eq!(srv.get("alice.test", "/index.html").status, 403);
    // an ordinary .htaccess still works
    write(
        &da.join(".htaccess"),
        "<If \"%{HTTP_HOST} == 'x'\">\n  Require all denied\n</If>\n",
        0o644,
    );
    assert_eq!(srv.get("alice.test", "/index.html").body, "alice");
}

/// A regular account chosen by an expression keeps its regular
/// supplementary groups but none below GID_MIN (docker, adm, sudo...),
/// unless LimitGIDRange is set.
#[test]
fn expression_users_keep_no_system_supplementary_group() {
    let alice = TestUser::create_in(20000..=29999);
    let system = TestGroup::create_in(500..=999);
    let regular = TestGroup::create_in(30000..=39999);
    alice.join(&system);
    alice.join(&regular);
    for (ranges, kept) in [(vec![], false), (vec!["LimitGIDRange 1 60000"], true)] {
        let srv = expr_server(&alice, &ranges);
        let r = get_with(
            &srv,
            "user.test",
            "/who.php",
            &format!("X-User: {}\r\n", alice.name),
        );
        assert_eq!(r.status, 200, "{}", srv.error_log());
        let groups: Vec<u32> = r
            .body
            .rsplit('|')
            .next()
            .unwrap()
            .split(',')
            .filter_map(|g| g.trim().parse().ok())
            .collect();
        assert!(groups.contains(&regular.gid), "{ranges:?}: {}", r.body);
        assert_eq!(groups.contains(&system.gid), kept, "{ranges:?}: {}", r.body);
    }
}

/// A piped logger that dies is restarted, as under prefork.
#[test]
fn a_dead_piped_logger_is_restarted() {
    let setup = Setup::new();
    let d = setup.dir.clone();
    write(&setup.docroot("").join("index.html"), "ok", 0o644);
    let log = d.join("logs/piped.log");
    let srv = setup
        .global(format!(
            "CustomLog \"|/usr/bin/tee -a {} >/dev/null\" \"%r\"",
            log.display()
        ))
        .start();
    let logger = || {
        children_of(srv.parent_pid()).into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("tee"))
                .unwrap_or(false)
                || children_of(*p).iter().any(|c| {
                    std::fs::read(format!("/proc/{c}/cmdline"))
                        .map(|x| String::from_utf8_lossy(&x).contains("tee"))
                        .unwrap_or(false)
                })
        })
    };
    let first = logger().expect("the piped logger runs");
    // SAFETY: the piped logger of this test's httpd.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(p) = logger().filter(|p| *p != first) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the piped logger was not restarted:\n{}",
            srv.error_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(first, second);
    srv.get("localhost", "/index.html?after-restart");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("after-restart")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("after-restart")
    );
}
