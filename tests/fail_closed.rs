//! Issue 10, items 4 and 5: a panic after fork stays in its process; the
//! switch fails closed; NiceValue holds for every request of a keep-alive
//! connection.
//!
//! Panics are injected through the test-only switch `MPM_ITK_TEST_HOOKS`
//! (a directory in httpd's environment: the first process to reach a point
//! whose file exists there removes it and panics).

mod harness;
use harness::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A server with a panic directory, one vhost as `user`.
fn panic_server(user: &TestUser) -> (Server, PathBuf) {
    let (setup, dir) = Setup::new().with_test_hooks();
    let da = setup.docroot("a");
    write(&da.join("who.php"), WHOAMI_PHP, 0o644);
    let srv = setup.vhost(VHost::of("alice.test", &da, user)).start();
    (srv, dir)
}

fn wait_for_log(srv: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = srv.error_log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serves_as(srv: &Server, user: &TestUser, n: usize) {
    for _ in 0..n {
        let r = srv.get("alice.test", "/who.php");
        assert_eq!(r.status, 200, "{}", srv.error_log());
        assert!(
            r.body.starts_with(&format!("{0} {0} ", user.uid)),
            "{}",
            r.body
        );
    }
}

#[test]
fn a_panic_in_a_worker_ends_that_worker_only() {
    let alice = TestUser::create(false);
    let (srv, dir) = panic_server(&alice);
    let parent = srv.parent_pid();
    let before = srv.worker_pids();
    write(&dir.join("worker"), "", 0o666);
    // the worker that accepts this connection panics before serving it
    let _ = srv.try_get("alice.test", "/who.php");
    let log = wait_for_log(&srv, "exited with status 70");
    assert!(
        !dir.join("worker").exists(),
        "the worker never reached the point"
    );
    assert!(
        log.contains("panic in worker pid") && log.contains("test panic injected at worker"),
        "the panic is logged with its process:\n{log}"
    );
    let dead: i32 = log
        .split("panic in worker pid ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .and_then(|p| p.trim().parse().ok())
        .expect("pid in the log line");
    assert!(
        log.contains(&format!("worker pid {dead} (slot")) && log.contains("exited with status 70"),
        "the parent reports the worker's exit:\n{log}"
    );
    // everyone else lives on; the server keeps answering
    serves_as(&srv, &alice, 5);
    assert_eq!(srv.parent_pid(), parent);
    assert!(harness_alive(parent), "the parent is alive");
    for w in before.iter().filter(|w| **w != dead) {
        assert!(harness_alive(*w), "worker {w} was taken down too:\n{log}");
    }
    assert!(
        !srv.error_log().contains("MPM run failed"),
        "the parent's teardown ran:\n{}",
        srv.error_log()
    );
}

fn harness_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !proc_status(pid).contains("State:\tZ")
}

#[test]
fn a_panic_in_a_connection_child_ends_that_connection_only() {
    let alice = TestUser::create(false);
    let (srv, dir) = panic_server(&alice);
    let workers = srv.worker_pids();
    write(&dir.join("child"), "", 0o666);
    let _ = srv.try_get("alice.test", "/who.php");
    let log = wait_for_log(&srv, "exited with status 70");
    assert!(
        !dir.join("child").exists(),
        "no connection child reached the point"
    );
    // (with UserPools, the process that serves the connection is a user
    // process, and the parent reports its exit)
    assert!(
        (log.contains("panic in connection child pid")
            || log.contains("panic in user process pid"))
            && log.contains("test panic injected at child"),
        "the panic is logged:\n{log}"
    );
    assert!(
        (log.contains("connection child pid") || log.contains("user process pid"))
            && log.contains("exited with status 70"),
        "the worker or the parent reports the exit:\n{log}"
    );
    serves_as(&srv, &alice, 5);
    for w in workers {
        assert!(harness_alive(w), "worker {w} died:\n{}", srv.error_log());
    }
}

#[test]
fn a_panic_in_the_switch_fails_the_request_and_closes_the_connection() {
    let alice = TestUser::create(false);
    let (srv, dir) = panic_server(&alice);
    write(&dir.join("switch"), "", 0o666);
    // 500, and no later request on this connection: the switch is never
    // retried
    expect_failed_closed(&srv, "alice.test", "/who.php");
    let log = srv.error_log();
    assert!(
        log.contains("internal error in post_perdir_config")
            && log.contains("test panic injected at switch"),
        "{log}"
    );
    assert!(
        log.contains("cannot switch identity") && log.contains("closing connection"),
        "{log}"
    );
    serves_as(&srv, &alice, 3);
}

// ---------------------------------------------------------------------------
// NiceValue on keep-alive connections
// ---------------------------------------------------------------------------

/// Prints the nice value of the PHP process (field 19 of /proc/self/stat).
const NICE_PHP: &str = "<?php $f = explode(' ', substr(strrchr(file_get_contents('/proc/self/stat'), ')'), 2)); echo $f[16];";

fn nice_server(user: &TestUser) -> Server {
    let setup = Setup::new();
    let da = setup.docroot("a");
    for sub in ["n5", "n10", "plain"] {
        std::fs::create_dir_all(da.join(sub)).unwrap();
        write(&da.join(sub).join("nice.php"), NICE_PHP, 0o644);
    }
    setup
        .global("KeepAlive On")
        .vhost(
            VHost::of("alice.test", &da, user)
                .line(format!(
                    "<Directory {}/n5>\n  NiceValue 5\n  </Directory>",
                    da.display()
                ))
                .line(format!(
                    "<Directory {}/n10>\n  NiceValue 10\n  </Directory>",
                    da.display()
                )),
        )
        .start()
}

/// Two requests on one connection: the second's nice value, or None if the
/// connection was closed instead.
fn nice_pair(srv: &Server, first: &str, second: &str) -> (String, Option<String>) {
    let mut s: TcpStream = srv.connect();
    write!(
        s,
        "GET /{first}/nice.php HTTP/1.1\r\nHost: alice.test\r\n\r\n"
    )
    .unwrap();
    let a = read_response(&mut s).expect("first answer");
    assert_eq!(a.status, 200, "{}", srv.error_log());
    let _ = write!(
        s,
        "GET /{second}/nice.php HTTP/1.1\r\nHost: alice.test\r\n\r\n"
    );
    let b = read_response(&mut s).ok().map(|r| {
        assert_eq!(r.status, 200);
        r.body
    });
    (a.body, b)
}

#[test]
fn nice_value_applies_to_every_request_of_a_connection() {
    let alice = TestUser::create(false);
    let srv = nice_server(&alice);
    // raising the nice value needs no privilege: applied in place
    assert_eq!(
        nice_pair(&srv, "n5", "n10"),
        ("5".into(), Some("10".into()))
    );
    assert_eq!(
        nice_pair(&srv, "plain", "n10"),
        ("0".into(), Some("10".into()))
    );
    // lowering it would need CAP_SYS_NICE: the connection is closed, never
    // served at the higher value
    assert_eq!(nice_pair(&srv, "n10", "n5"), ("10".into(), None));
    assert_eq!(nice_pair(&srv, "n10", "plain"), ("10".into(), None));
    let log = srv.error_log();
    assert!(
        log.contains("wants nice value 5 but this connection runs at 10"),
        "{log}"
    );
    // and a fresh connection gets its own value
    assert_eq!(srv.get("alice.test", "/n5/nice.php").body, "5");
}
