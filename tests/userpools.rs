//! UserPools On: each user's connections are served by persistent
//! processes of that user, handed the socket by the workers.

mod harness;
use harness::*;
use std::io::Write;
use std::time::{Duration, Instant};

const PID_PHP: &str =
    "<?php echo getmypid(), ' ', posix_getuid(), ' ', posix_geteuid(), ' ', posix_getgid();";

struct Pools {
    srv: Server,
    alice: TestUser,
    bob: TestUser,
}

/// alice.test and bob.test under their users, UserPools On, room for user
/// processes above MaxRequestWorkers; `extra` lines for the global config
/// and `dyn_lines` for a third vhost, dyn.test (in them, `{docroot}` is its
/// document root, which has a subdirectory `sub`, both with pid.php;
/// `{alice}` and `{bob}` the users' names).
fn start(extra: &[&str], dyn_lines: &[String]) -> Pools {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    let setup = Setup::new();
    let (da, db, dd) = (setup.docroot("a"), setup.docroot("b"), setup.docroot("d"));
    let sub = dd.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    for d in [&da, &db, &dd, &sub] {
        write(&d.join("pid.php"), PID_PHP, 0o644);
        write(
            &d.join("ip.php"),
            "<?php echo getmypid(), ' ', posix_getuid(), ' ', $_SERVER['REMOTE_ADDR'];",
            0o644,
        );
        write(
            &d.join("slow.php"),
            "<?php sleep(2); echo getmypid();",
            0o644,
        );
    }
    let mut setup = setup
        .global("UserPools On")
        .global("ServerLimit 40")
        .global("MaxRequestWorkers 20")
        .global("UserPoolIdleTimeout 30");
    for l in extra {
        setup = setup.global(*l);
    }
    let mut dynv = VHost::new("dyn.test").line(format!("DocumentRoot {}", dd.display()));
    for l in dyn_lines {
        dynv = dynv.line(
            l.replace("{docroot}", &dd.display().to_string())
                .replace("{alice}", &alice.name)
                .replace("{bob}", &bob.name),
        );
    }
    let srv = setup
        .vhost(VHost::of("alice.test", &da, &alice).line("php_admin_value ffi.enable 1"))
        .vhost(VHost::of("bob.test", &db, &bob))
        .vhost(dynv)
        .start();
    Pools { srv, alice, bob }
}

/// (pid, uid, euid, gid) a PHP page reports.
fn who(srv: &Server, host: &str) -> (i32, u32, u32, u32) {
    let r = srv.get(host, "/pid.php");
    assert_eq!(r.status, 200, "{host}: {}\n{}", r.body, srv.error_log());
    let v: Vec<u64> = r.body.split(' ').map(|x| x.parse().unwrap()).collect();
    (v[0] as i32, v[1] as u32, v[2] as u32, v[3] as u32)
}

/// Is `pid` a user process of `srv`: a direct child of the parent that
/// runs PHP? (Workers never do; classic connection children are the
/// workers' children.)
fn is_user_process(srv: &Server, pid: i32) -> bool {
    parent_of(pid) == srv.parent_pid()
}

/// Sends requests until one is served by a user process (the first ones
/// take the classic path while the parent starts one); returns its pid.
fn warm(srv: &Server, host: &str) -> i32 {
    let mut warm = 0;
    assert!(
        wait_until(20, || {
            let (pid, ..) = who(srv, host);
            if is_user_process(srv, pid) {
                warm = pid;
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        }),
        "no user process for {host}\n{}",
        srv.error_log()
    );
    warm
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn connections_go_to_a_persistent_process_of_the_vhosts_user() {
    let p = start(&["UserPoolMaxProcesses 1"], &[]);
    let srv = &p.srv;
    let a = warm(srv, "alice.test");
    // From now on, no fork per connection: connection after connection is
    // served by alice's one user process. (The pause lets it finish the
    // lingering close of the previous one: a connection that finds no idle
    // process takes the classic path rather than wait.)
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            who(srv, "alice.test"),
            (a, p.alice.uid, p.alice.uid, p.alice.gid)
        );
    }
    let pids = std::collections::HashSet::from([a]);
    let b = warm(srv, "bob.test");
    assert_ne!(a, b);
    std::thread::sleep(Duration::from_millis(100));
    let (pid, uid, euid, gid) = who(srv, "bob.test");
    assert_eq!((uid, euid, gid), (p.bob.uid, p.bob.uid, p.bob.gid));
    assert!(is_user_process(srv, pid) && !pids.contains(&pid));
    // Every task of a user process: the user's ids only, no capability.
    for task in std::fs::read_dir(format!("/proc/{a}/task"))
        .unwrap()
        .flatten()
    {
        let st = std::fs::read_to_string(task.path().join("status")).unwrap();
        let u = p.alice.uid.to_string();
        let g = p.alice.gid.to_string();
        assert_eq!(
            status_field(&st, "Uid")
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            [&u, &u, &u, &u]
        );
        assert_eq!(
            status_field(&st, "Gid")
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            [&g, &g, &g, &g]
        );
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(&st, cap).unwrap(),
                "0000000000000000",
                "{cap}\n{st}"
            );
        }
        assert_eq!(status_field(&st, "Seccomp").unwrap(), "2");
        // (README's table: NoNewPrivileges is off by default)
        assert_eq!(status_field(&st, "NoNewPrivs").unwrap(), "0");
        assert_eq!(
            status_field(&st, "Groups").unwrap(),
            g,
            "alice's groups only"
        );
    }
    // mod_status lists the user processes with their user and vhosts (asked
    // through dyn.test, a vhost of User's: alice's one process must stay
    // idle, "localhost" would be the default vhost, hers)
    std::thread::sleep(Duration::from_millis(200));
    let status = srv.get("dyn.test", "/server-status");
    assert!(
        status.body.contains(&format!(
            "[user {} uid {}] alice.test",
            p.alice.name, p.alice.uid
        )),
        "{}",
        status.body
    );
    assert!(
        status
            .body
            .contains(&format!("[user {} uid {}]", p.bob.name, p.bob.uid))
    );
}

#[test]
fn a_request_for_another_users_vhost_is_never_served_by_a_user_process() {
    let p = start(&[], &[]);
    let srv = &p.srv;
    warm(srv, "alice.test");
    std::thread::sleep(Duration::from_millis(100));
    // keep-alive: alice's vhost (served by one of her user processes), then
    // bob's on the same connection
    let mut s = srv.connect();
    write!(s, "GET /pid.php HTTP/1.1\r\nHost: alice.test\r\n\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    let served: i32 = r.body.split(' ').next().unwrap().parse().unwrap();
    assert!(is_user_process(srv, served), "{}", r.body);
    write!(s, "GET /pid.php HTTP/1.1\r\nHost: bob.test\r\n\r\n").unwrap();
    // 421 with a fixed body, then the connection closes: the client
    // retries on a new one, which a worker routes to bob
    let r = read_response(&mut s).expect("a 421");
    assert_eq!(r.status, 421, "{}", r.body);
    assert!(
        r.body.contains("retry it on a new connection"),
        "{}",
        r.body
    );
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(rest.is_empty(), "more after the 421: {rest:?}");
    assert!(
        srv.error_log().contains("is not served by user"),
        "{}",
        srv.error_log()
    );
    // nothing of bob's vhost ran in alice's process: it goes on serving
    assert_eq!(
        parent_of(served),
        srv.parent_pid(),
        "user process {served} ended"
    );
    assert_eq!(who(srv, "bob.test").1, p.bob.uid);
    // an absolute URI naming bob's vhost, sent with alice's Host
    let a = warm(srv, "alice.test");
    let mut s = srv.connect();
    write!(
        s,
        "GET http://bob.test/pid.php HTTP/1.1\r\nHost: alice.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    // routed by the URI (httpd's rule), so served as bob, never by alice's process
    assert_eq!(r.status, 200);
    assert!(!r.body.starts_with(&format!("{a} ")), "{}", r.body);
    assert!(
        r.body.contains(&format!(" {} {} ", p.bob.uid, p.bob.uid)),
        "{}",
        r.body
    );
    // HTTP/1.0 without Host: the address's default vhost (the first, alice)
    let mut s = srv.connect();
    write!(s, "GET /pid.php HTTP/1.0\r\n\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    assert!(
        r.body
            .contains(&format!(" {} {} ", p.alice.uid, p.alice.uid)),
        "{}",
        r.body
    );
    // a Host that matches no vhost: the default vhost too
    let r = srv.get("nobody.test", "/pid.php");
    assert!(
        r.body
            .contains(&format!(" {} {} ", p.alice.uid, p.alice.uid)),
        "{}",
        r.body
    );
}

#[test]
fn vhosts_whose_identity_can_vary_take_the_classic_path() {
    // (the test users' ids are below login.defs' UID_MIN: an explicit
    // range lets the expression choose them)
    let p = start(
        &["LimitUIDRange 100 60000", "LimitGIDRange 100 60000"],
        &[format!("AssignUserIDExpr {}", "%{HTTP:X-User}")],
    );
    let srv = &p.srv;
    // dyn.test: a fresh connection child per connection, whatever the load
    let mut pids = std::collections::HashSet::new();
    for _ in 0..4 {
        let mut s = srv.connect();
        write!(
            s,
            "GET /pid.php HTTP/1.1\r\nHost: dyn.test\r\nX-User: {}\r\nConnection: close\r\n\r\n",
            p.bob.name
        )
        .unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!(r.status, 200, "{}\n{}", r.body, srv.error_log());
        assert!(r.body.contains(&format!(" {} ", p.bob.uid)), "{}", r.body);
        pids.insert(r.body.split(' ').next().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(pids.len(), 4, "dyn.test was served by a persistent process");
    assert!(
        srv.error_log()
            .contains("takes the classic path (AssignUserIDExpr"),
        "{}",
        srv.error_log()
    );
}

#[test]
fn a_vhost_with_an_identity_in_a_directory_takes_the_classic_path() {
    let p = start(
        &[],
        &[
            "AssignUserID {bob} {bob}".into(),
            "<Directory {docroot}/sub>".into(),
            "AssignUserID {alice} {alice}".into(),
            "</Directory>".into(),
        ],
    );
    let srv = &p.srv;
    // alice.test is served by a user process: the pools are on
    warm(srv, "alice.test");
    let mut pids = std::collections::HashSet::new();
    for (path, want) in [
        ("/pid.php", p.bob.uid),
        ("/sub/pid.php", p.alice.uid),
        ("/pid.php", p.bob.uid),
        ("/sub/pid.php", p.alice.uid),
    ] {
        let r = srv.get("dyn.test", path);
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.body, srv.error_log());
        let v: Vec<&str> = r.body.split(' ').collect();
        assert_eq!(v[1], want.to_string(), "{path}: {}", r.body);
        assert_eq!(v[2], want.to_string(), "{path}: {}", r.body);
        let pid: i32 = v[0].parse().unwrap();
        // a connection child of a worker, never a user process
        assert!(
            !is_user_process(srv, pid),
            "{path} served by user process {pid}"
        );
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 4, "a connection child served two connections");
    assert!(
        srv.error_log().lines().any(|l| l.contains("dyn.test")
            && l.contains(
                "takes the classic path (an identity or NiceValue directive in a section)"
            )),
        "{}",
        srv.error_log()
    );
}

#[test]
fn a_killed_user_process_is_replaced_and_the_server_keeps_serving() {
    let p = start(&[], &[]);
    let srv = &p.srv;
    let a = warm(srv, "alice.test");
    // kill it while it serves a slow request
    let slow = get_in_background(srv.port(), "alice.test", "/slow.php");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signals a process of this test's httpd.
    unsafe { libc::kill(a, libc::SIGKILL) };
    let _ = slow.join();
    assert!(
        wait_until(10, || srv
            .error_log()
            .contains(&format!("user process pid {a} of user"))),
        "{}",
        srv.error_log()
    );
    let b = warm(srv, "alice.test");
    assert_ne!(a, b);
    assert_eq!(who(srv, "alice.test").1, p.alice.uid);
    assert_eq!(who(srv, "bob.test").1, p.bob.uid);
    // killed while it waits: until the parent reaps it, workers still see
    // it waiting and send it connections; its replacement takes them (none
    // is reset)
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signals a process of this test's httpd.
    unsafe { libc::kill(b, libc::SIGKILL) };
    for i in 0..4 {
        let r = srv
            .try_get("alice.test", "/pid.php")
            .unwrap_or_else(|e| panic!("request {i} after the kill: {e}\n{}", srv.error_log()));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        !srv.error_log().contains("closed 1 connection"),
        "{}",
        srv.error_log()
    );
}

/// A PHP FFI page (tenant code with native code) that forks a process
/// which, after a pause and for `secs` seconds, marks its pool as having an
/// idle process (it writes the pool's shared words, one page of shared
/// memory it inherited) so that workers queue connections for it, and
/// sends SIGKILL to every process of its user: each replacement dies as
/// soon as it starts, with connections still queued.
const KILL_LOOP_PHP: &str = r#"<?php
$c = FFI::cdef("int fork(void); int kill(int pid, int sig); int usleep(unsigned int us); void _exit(int s); long time(void *t); void *memcpy(uintptr_t d, const void *s, size_t n);", "libc.so.6");
if ($c->fork() == 0) {
    $one = FFI::new("uint32_t");
    $one->cdata = 1;
    $words = [];
    foreach (file('/proc/self/maps') as $l) {
        if (preg_match('/^([0-9a-f]+)-([0-9a-f]+) rw-s .*\/dev\/zero/', $l, $m)
            && hexdec($m[2]) - hexdec($m[1]) == 4096) $words[] = hexdec($m[1]);
    }
    $c->usleep(300000);
    $end = $c->time(null) + (int)$_GET['secs'];
    while ($c->time(null) < $end) {
        foreach ($words as $w) $c->memcpy($w + 4, FFI::addr($one), 4);
        $c->kill(-1, 9);
        $c->usleep(500);
    }
    $c->_exit(0);
}
echo "started";
"#;

#[test]
fn a_user_that_kills_its_processes_and_writes_its_pool_words_harms_no_one_else() {
    let p = start(&["UserPoolMaxProcesses 2"], &[]);
    let srv = &p.srv;
    write(&srv.setup.dir.join("docs/a/kill.php"), KILL_LOOP_PHP, 0o644);
    warm(srv, "alice.test");
    // (every user process the parent reaps is logged, also one killed
    // before it logged its start)
    let spawned = |log: &str| {
        log.matches(&format!("of user {} (slot", p.alice.name))
            .count()
    };
    let before = spawned(&srv.error_log());
    assert_eq!(srv.get("alice.test", "/kill.php?secs=3").body, "started");
    // connections keep coming for alice while every process of hers dies:
    // some are sent to a process that is already dead
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        let _ = srv.try_get("alice.test", "/pid.php");
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = spawned(&srv.error_log()) - before;
    // the parent replaces them at its own pace (immediate replacements at
    // most once a second, the rest at the maintenance's): no fork loop
    assert!(
        during <= 40,
        "{during} user processes of alice ended in 3.5 s\n{}",
        srv.error_log()
    );
    // the server is fine, and alice is served again by her processes
    std::thread::sleep(Duration::from_millis(1500));
    let a = warm(srv, "alice.test");
    assert_eq!(who(srv, "alice.test").1, p.alice.uid);
    assert!(is_user_process(srv, a));
    assert_eq!(who(srv, "bob.test").1, p.bob.uid);
    println!("user processes of alice that ended during the kill loop: {during}");
}

#[test]
fn idle_user_processes_exit_and_max_connections_recycles_them() {
    let p = start(
        &[
            "UserPoolIdleTimeout 2",
            "MaxConnectionsPerChild 3",
            "UserPoolMaxProcesses 1",
        ],
        &[],
    );
    let srv = &p.srv;
    warm(srv, "alice.test");
    // MaxConnectionsPerChild 3: no user process serves a fourth connection,
    // and its replacement takes over. (Connections that find no idle user
    // process take the classic path: not counted.)
    let mut served: std::collections::HashMap<i32, usize> = Default::default();
    assert!(
        wait_until(30, || {
            std::thread::sleep(Duration::from_millis(100));
            let pid = who(srv, "alice.test").0;
            if is_user_process(srv, pid) {
                *served.entry(pid).or_default() += 1;
            }
            served.len() >= 3
        }),
        "user processes were not recycled: {served:?}"
    );
    assert!(served.values().all(|&n| n <= 3), "{served:?}");
    // idle: the user process exits after UserPoolIdleTimeout
    let b = warm(srv, "alice.test");
    assert!(
        wait_until(15, || !std::path::Path::new(&format!("/proc/{b}")).exists()
            || parent_of(b) != srv.parent_pid()),
        "user process {b} did not exit when idle"
    );
}

#[test]
fn under_load_a_user_has_at_most_user_pool_max_processes() {
    let p = start(&["UserPoolMaxProcesses 2"], &[]);
    let srv = &p.srv;
    warm(srv, "alice.test");
    let alice = p.alice.uid.to_string();
    // alice's user processes: the parent's children that run as her
    let count = || {
        children_of(srv.parent_pid())
            .into_iter()
            .filter(|&c| {
                status_field(&proc_status(c), "Uid")
                    .is_some_and(|u| u.split(' ').next() == Some(alice.as_str()))
            })
            .count()
    };
    let mut most = 0;
    // six slow requests at a time, four times: the demand asks for more
    // processes than the cap; the rest take the classic path
    for round in 0..4 {
        let batch: Vec<_> = (0..6)
            .map(|_| get_in_background(srv.port(), "alice.test", "/slow.php"))
            .collect();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2500) {
            most = most.max(count());
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in batch {
            let r = h
                .join()
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", srv.error_log()));
            assert_eq!(r.status, 200, "round {round}: {}", r.body);
        }
    }
    assert_eq!(
        most,
        2,
        "UserPoolMaxProcesses 2: alice had at most {most} user processes\n{}",
        srv.error_log()
    );
}

#[test]
fn a_stalled_request_head_leaves_the_worker_after_request_read_timeout() {
    // Timeout 300 would hold the worker that peeks for 60 s; mod_reqtimeout
    // ends a head after 2 s, and so does the peek
    let load = format!("LoadModule reqtimeout_module {MODULES}/mod_reqtimeout.so");
    let p = start(
        &[
            &load,
            "RequestReadTimeout header=2",
            "Timeout 300",
            "LogLevel info mpm_itk:trace1",
        ],
        &[],
    );
    let srv = &p.srv;
    warm(srv, "alice.test");
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // half a head, then nothing
    write!(s, "GET /pid.php HTTP/1.1\r\nHost: alice.test\r\n").unwrap();
    let r = read_response(&mut s)
        .unwrap_or_else(|e| panic!("no answer to a stalled head: {e}\n{}", srv.error_log()));
    // (the classic path's child reads on, and mod_reqtimeout ends it)
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(
        srv.error_log()
            .contains("UserPools: classic path: peek: Ok(Timeout)"),
        "{}",
        srv.error_log()
    );
    assert!(
        srv.error_log()
            .contains("workers wait up to 2 s for a request head"),
        "{}",
        srv.error_log()
    );
    // and the pools still serve
    assert_eq!(who(srv, "alice.test").1, p.alice.uid);
}

#[test]
fn a_proxy_protocol_header_is_skipped_and_the_request_routed_by_its_host() {
    let load = format!("LoadModule remoteip_module {MODULES}/mod_remoteip.so");
    let p = start(&[&load, "RemoteIPProxyProtocol On"], &[]);
    let srv = &p.srv;
    // (pid, uid, client address) of /ip.php through a PROXY v1 header that
    // names 192.0.2.7
    let get = |host: &str| {
        let mut s = srv.connect();
        write!(
            s,
            "PROXY TCP4 192.0.2.7 127.0.0.1 40000 {}\r\nGET /ip.php HTTP/1.1\r\nHost: {host}\r\n\
             Connection: close\r\n\r\n",
            srv.port()
        )
        .unwrap();
        let r =
            read_response(&mut s).unwrap_or_else(|e| panic!("{host}: {e}\n{}", srv.error_log()));
        assert_eq!(r.status, 200, "{host}: {}\n{}", r.body, srv.error_log());
        let v: Vec<&str> = r.body.split(' ').collect();
        (
            v[0].parse::<i32>().unwrap(),
            v[1].parse::<u32>().unwrap(),
            v[2].to_string(),
        )
    };
    for (host, uid) in [("alice.test", p.alice.uid), ("bob.test", p.bob.uid)] {
        // the first connections take the classic path while the parent
        // starts the user's process
        let mut last = (0, 0, String::new());
        assert!(
            wait_until(20, || {
                last = get(host);
                assert_eq!(last.1, uid, "{host} as the wrong user");
                assert_eq!(last.2, "192.0.2.7", "{host}: the header's client address");
                std::thread::sleep(Duration::from_millis(100));
                is_user_process(srv, last.0)
            }),
            "{host} never reached a user process through a PROXY header: {last:?}\n{}",
            srv.error_log()
        );
    }
}

#[test]
fn a_graceful_stop_that_reaches_a_user_process_before_its_handlers_ends_it() {
    // CI once saw a user process forked just before a graceful stop miss
    // the signal (it ran the parent's inherited handler) and wait for
    // connections until its idle timeout. The hook holds a new user
    // process for 2 s between its fork and its own signal handlers; the
    // stop comes in that window every time.
    let (mut setup, hooks) = Setup::new().with_test_hooks();
    setup.cold = true;
    let alice = TestUser::create(false);
    let da = setup.docroot("a");
    write(&da.join("slow.php"), "<?php sleep(1); echo 'done';", 0o644);
    let mut srv = setup
        .global("UserPools On")
        .global("ServerLimit 40")
        .global("MaxRequestWorkers 20")
        .global("UserPoolIdleTimeout 300")
        .global("UserPoolMaxProcesses 1")
        .vhost(VHost::of("alice.test", &da, &alice))
        .start();
    let hook = hooks.join("user-process-start");
    write(&hook, "", 0o666);
    // no idle user process: served the classic way, and the parent starts
    // one on its next tick
    let slow = get_in_background(srv.port(), "alice.test", "/slow.php");
    // the new user process removes the hook's file, then pauses
    assert!(
        wait_until(10, || !hook.exists()),
        "no user process started:\n{}",
        srv.error_log()
    );
    srv.signal(libc::SIGWINCH);
    let stopped = srv.wait_exit(20);
    let left = srv.our_processes();
    assert!(
        stopped && left.is_empty(),
        "graceful stop did not end every process (left: {left:?})\n{}",
        srv.error_log()
    );
    let r = slow.join().unwrap().expect("the request in progress");
    assert_eq!((r.status, r.body.as_str()), (200, "done"));
    drop(alice);
}

/// What a process serving a connection holds: PHP lists its sockets.
const SOCKETS_PHP: &str = "<?php $n = 0; foreach (scandir('/proc/self/fd') as $f) { if (str_starts_with((string)@readlink(\"/proc/self/fd/$f\"), 'socket:')) $n++; } echo $n;";

#[test]
fn vhost_code_holds_no_other_users_channel() {
    // dyn.test takes the classic path (an expression): its connection
    // child, where tenant code runs, must hold no pool's channel, only its
    // client's socket; a user process holds its own pool's receiving end
    // and its client's socket.
    let p = start(
        &["LimitUIDRange 100 60000", "LimitGIDRange 100 60000"],
        &[format!("AssignUserIDExpr {}", "%{HTTP:X-User}")],
    );
    let srv = &p.srv;
    for d in ["a", "d"] {
        write(
            &srv.setup.dir.join("docs").join(d).join("fds.php"),
            SOCKETS_PHP,
            0o644,
        );
    }
    let mut s = srv.connect();
    write!(
        s,
        "GET /fds.php HTTP/1.1\r\nHost: dyn.test\r\nX-User: {}\r\nConnection: close\r\n\r\n",
        p.bob.name
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "1"),
        "{}",
        srv.error_log()
    );
    warm(srv, "alice.test");
    std::thread::sleep(Duration::from_millis(100));
    let r = srv.get("alice.test", "/fds.php");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "2"),
        "{}",
        srv.error_log()
    );
}
