//! Issue 11, end to end: what one tenant's code can do to the server and to
//! other tenants. The attacker is PHP (with FFI where native code is
//! needed) in a vhost of its own.

mod harness;
use harness::*;
use std::io::Write;
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
        .vhost(VHost::new("plain.test").line(format!("DocumentRoot {}", d.display())))
        .start();
    // a connection child that has not switched yet: it waits for the rest
    // of its request
    let mut slow = srv.connect();
    write!(slow, "GET /index.html HTTP/1.1\r\nHost: plain.test\r\n").unwrap();
    let workers = srv.worker_pids();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pre_switch = vec![];
    while pre_switch.is_empty() && Instant::now() < deadline {
        pre_switch = workers.iter().flat_map(|w| children_of(*w)).collect();
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
    for p in &targets {
        // EPERM is 1
        assert!(
            r.body.contains(&format!("{p}:refused:1\n")),
            "pid {p} (workers {workers:?}, pre-switch children {pre_switch:?}, parent {}) was not refused:\n{}",
            srv.parent_pid(),
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
        .vhost(
            VHost::new("group.test")
                .line(format!("DocumentRoot {}", d.display()))
                .line(format!("AssignUserID {0} {0}", alice.name))
                .line("AssignGroupIDExpr %{HTTP:X-Group}"),
        )
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
