//! The prefork process model, against a real httpd with the built module.

mod harness;
use harness::*;
use std::time::Duration;

#[test]
fn serves_static_and_php_and_reports_itk() {
    let setup = Setup::new();
    write(&setup.dir.join("docs/hello.txt"), "hello world\n", 0o644);
    write(&setup.dir.join("docs/sum.php"), "<?php echo 6 * 7;", 0o644);
    let conf = setup.conf_path();
    let srv = setup.start();
    let r = srv.get("localhost", "/hello.txt");
    assert_eq!((r.status, r.body.as_str()), (200, "hello world\n"));
    let r = srv.get("localhost", "/sum.php");
    assert_eq!((r.status, r.body.as_str()), (200, "42"));
    assert!(r.headers["server"].contains("mpm-itk/"), "{:?}", r.headers);
    let out = std::process::Command::new("/usr/sbin/apache2")
        .args(["-V", "-f", conf.to_str().unwrap()])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.contains("Server MPM:     itk"), "{v}");
    assert!(v.contains("threaded:     no"), "{v}");
    assert!(
        v.contains("forked:     yes (variable process count)"),
        "{v}"
    );
    let st = srv.get("localhost", "/server-status?auto");
    assert!(st.body.contains("ServerMPM: itk"), "{}", st.body);
    assert!(st.body.contains("IdleWorkers:"), "{}", st.body);
    assert!(st.body.contains("Scoreboard:"), "{}", st.body);
}

#[test]
fn a_second_mpm_is_refused_by_config_test() {
    let mut setup = Setup::new();
    setup.load_prefork_too = true;
    let (ok, out) = setup.config_test();
    assert!(!ok, "apache2 -t accepted two MPMs: {out}");
    assert!(out.contains("More than one MPM loaded"), "{out}");
    let _ = std::fs::remove_dir_all(&setup.dir);
}

#[test]
fn graceful_restarts_under_load_answer_every_request() {
    let setup = Setup::new();
    write(&setup.dir.join("docs/a.txt"), "a\n", 0o644);
    let srv = setup.start();
    let port = srv.port();
    let loader = std::thread::spawn(move || load(port, "localhost", "/a.txt", 8, 250));
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(700));
        srv.signal(libc::SIGUSR1);
    }
    let (counts, errors) = loader.join().unwrap();
    assert_eq!(errors, 0, "{counts:?}\n{}", srv.error_log());
    assert_eq!(counts.get(&200), Some(&2000), "{counts:?}");
    // (the load may be over before the parent has logged the second one)
    let restarts = || {
        srv.error_log()
            .matches("Graceful restart requested")
            .count()
    };
    wait_until(10, || restarts() >= 2);
    assert_eq!(restarts(), 2, "{}", srv.error_log());
}

#[test]
fn graceful_stop_lets_a_slow_request_finish() {
    let setup = Setup::new();
    write(
        &setup.dir.join("docs/slow.php"),
        "<?php sleep(3); echo 'done';",
        0o644,
    );
    let mut srv = setup.start();
    let port = srv.port();
    let slow = get_in_background(port, "localhost", "/slow.php");
    // the slow request is being served
    assert!(wait_until(10, || !connection_children(&srv).is_empty()));
    srv.signal(libc::SIGWINCH);
    let r = slow.join().unwrap().expect("slow request");
    assert_eq!((r.status, r.body.as_str()), (200, "done"));
    assert!(srv.wait_exit(15), "server did not exit after graceful stop");
    assert!(srv.error_log().contains("shutting down gracefully"));
}

#[test]
fn killed_worker_is_logged_and_replaced() {
    let setup = Setup::new();
    write(&setup.dir.join("docs/a.txt"), "a\n", 0o644);
    let srv = setup.start();
    assert!(wait_until(10, || srv.worker_pids().len() >= 2));
    let before = srv.worker_pids();
    assert!(before.len() >= 2, "{before:?}");
    let victim = before[0];
    // SAFETY: a worker of our test server.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let mut replaced = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = srv.worker_pids();
        if !now.contains(&victim) && now.len() >= 2 {
            replaced = true;
            break;
        }
    }
    assert!(replaced, "no replacement worker: {:?}", srv.worker_pids());
    assert!(
        srv.error_log()
            .contains(&format!("worker pid {victim} (slot")),
        "{}",
        srv.error_log()
    );
    assert_eq!(srv.get("localhost", "/a.txt").status, 200);
}

#[test]
fn max_connections_per_child_recycles_workers() {
    let setup = Setup::new().global("MaxConnectionsPerChild 10");
    write(&setup.dir.join("docs/a.txt"), "a\n", 0o644);
    let srv = setup.start();
    let first = srv.worker_pids();
    let (counts, errors) = load(srv.port(), "localhost", "/a.txt", 2, 50);
    assert_eq!((errors, counts.get(&200)), (0, Some(&100)), "{counts:?}");
    wait_until(5, || srv.worker_pids().iter().all(|p| !first.contains(p)));
    let now = srv.worker_pids();
    assert!(
        now.iter().all(|p| !first.contains(p)),
        "workers not recycled: {first:?} -> {now:?}"
    );
}

#[test]
fn stop_leaves_nothing_behind() {
    let setup = Setup::new();
    let pidfile = setup.dir.join("run/httpd.pid");
    let mut srv = setup.start();
    assert!(pidfile.exists());
    let port = srv.port();
    // SIGTERM and the parent's own shutdown, before the harness's stop()
    // (which SIGKILLs whatever is left) could hide a straggler
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(15), "httpd did not stop on SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !srv.our_processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        srv.our_processes().is_empty(),
        "processes left after SIGTERM: {:?}",
        srv.our_processes()
    );
    assert!(!pidfile.exists(), "pid file left behind");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open"
    );
}

#[test]
fn idle_workers_converge_into_the_spare_range_after_a_burst() {
    // (the workers' spare arithmetic; with UserPools, mod_status's
    // IdleWorkers also counts the user processes waiting for a connection)
    let setup = Setup::new()
        .global("StartServers 2\nMinSpareServers 2\nMaxSpareServers 4\nExtendedStatus On")
        .global("UserPools Off");
    write(
        &setup.dir.join("docs/slow.php"),
        "<?php usleep(700000); echo 'ok';",
        0o644,
    );
    let srv = setup.start();
    let (counts, errors) = load(srv.port(), "localhost", "/slow.php", 12, 3);
    assert_eq!((errors, counts.get(&200)), (0, Some(&36)), "{counts:?}");
    let idle = |srv: &Server| -> usize {
        let st = srv.get("localhost", "/server-status?auto").body;
        st.lines()
            .find_map(|l| l.strip_prefix("IdleWorkers: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(usize::MAX)
    };
    let peak = srv.worker_pids().len();
    assert!(
        peak > 4,
        "the burst should have grown the pool beyond MaxSpareServers: {peak}"
    );
    let mut last = usize::MAX;
    for _ in 0..60 {
        last = idle(&srv);
        if (2..=4).contains(&last) && srv.worker_pids().len() <= 5 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!((2..=4).contains(&last), "IdleWorkers {last} not in [2, 4]");
}

/// Connection children end with `_exit` unless `BufferedLogs On` needs
/// pchild's cleanup to flush the access log: either way every request of
/// every connection is logged while the server runs, PHP included.
#[test]
fn every_connection_is_logged_with_and_without_buffered_logs() {
    for buffered in [false, true] {
        let mut setup = Setup::new();
        let log = setup.dir.join("logs/access.log");
        setup = setup
            .global("LogFormat \"%>s %U%q\" itk")
            .global(format!("CustomLog {} itk", log.display()))
            .global(format!(
                "BufferedLogs {}",
                if buffered { "On" } else { "Off" }
            ));
        write(&setup.dir.join("docs/a.txt"), "a\n", 0o644);
        write(&setup.dir.join("docs/p.php"), "<?php echo 'p';", 0o644);
        let mut srv = setup.start();
        let before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        let n = 30;
        for i in 0..n {
            let path = if i % 2 == 0 { "/a.txt" } else { "/p.php" };
            let r = srv.get("localhost", &format!("{path}?n={i}"));
            assert_eq!(r.status, 200, "{}", srv.error_log());
        }
        // The last connection child may still be on its way out. (With
        // UserPools, a user process writes a buffered log when it exits, as
        // a prefork child: here, at a graceful stop.)
        if user_pools_mode() && buffered {
            // a graceful stop: every process finishes its connection and
            // flushes (a stop could interrupt one still in its lingering close)
            srv.signal(libc::SIGWINCH);
            assert!(srv.wait_exit(30), "no graceful stop:\n{}", srv.error_log());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .skip(before)
                .filter(|l| l.contains("?n="))
                .map(str::to_owned)
                .collect();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut seen: Vec<usize> = lines
            .iter()
            .filter_map(|l| l.rsplit("?n=").next()?.parse().ok())
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..n).collect::<Vec<_>>(),
            "BufferedLogs {buffered}: access log lines {lines:?}"
        );
        assert!(lines.iter().all(|l| l.starts_with("200 ")), "{lines:?}");
    }
}

/// Several listeners: workers serialise accept with the mutex (one
/// listener needs none, as in prefork on Linux); both ports serve under
/// concurrent load and through a graceful restart.
#[test]
fn two_listeners_serve_concurrently_and_through_a_graceful_restart() {
    let second = free_port();
    let setup = Setup::new().global(format!("Listen 127.0.0.1:{second}"));
    write(&setup.dir.join("docs/a.txt"), "a\n", 0o644);
    let srv = setup.start();
    let first = srv.port();
    let loaders: Vec<_> = [first, second]
        .into_iter()
        .map(|p| std::thread::spawn(move || load(p, "localhost", "/a.txt", 4, 100)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    srv.signal(libc::SIGUSR1);
    for (port, l) in [first, second].into_iter().zip(loaders) {
        let (counts, errors) = l.join().unwrap();
        assert_eq!(errors, 0, "port {port}: {counts:?}\n{}", srv.error_log());
        assert_eq!(counts.get(&200), Some(&400), "port {port}: {counts:?}");
    }
}

/// Issue 10, item 6: mod_status accounts the CPU time of the connection
/// children (where the requests run) in their worker's slot, as prefork's
/// children account theirs.
#[test]
fn server_status_accounts_the_connection_childrens_cpu() {
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let da = setup.docroot("a");
    // 50 ms of CPU (not wall-clock) time per request
    write(
        &da.join("burn.php"),
        "<?php function cpu() { $u = getrusage(); return $u['ru_utime.tv_sec'] + $u['ru_utime.tv_usec'] / 1e6 \
         + $u['ru_stime.tv_sec'] + $u['ru_stime.tv_usec'] / 1e6; } \
         $t = cpu(); $x = 0; while (cpu() - $t < 0.05) { $x++; } echo 'burned';",
        0o644,
    );
    let srv = setup
        .global("ExtendedStatus On")
        .vhost(VHost::of("alice.test", &da, &alice))
        .start();
    for _ in 0..30 {
        let r = srv.get("alice.test", "/burn.php");
        assert_eq!(r.body, "burned");
    }
    let r = srv.get("localhost", "/server-status?auto");
    let field = |k: &str| -> f64 {
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let cpu = field("CPUUser")
        + field("CPUSystem")
        + field("CPUChildrenUser")
        + field("CPUChildrenSystem");
    // 30 x 50 ms = 1.5 s burned; allow for clock ticks and scheduling
    assert!(
        cpu >= 1.3,
        "mod_status shows {cpu} s of CPU after 1.5 s of PHP:\n{}",
        r.body
    );
}

/// The harness itself: a port taken between free_port() and httpd's bind
/// (by some client's ephemeral port) is retried on another, so parallel
/// tests do not fail on a race that is not theirs.
#[test]
fn a_port_taken_before_httpd_binds_it_is_retried() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut setup = Setup::new();
    setup.set_port(taken.local_addr().unwrap().port());
    write(&setup.dir.join("docs/a.txt"), "a\n", 0o644);
    let srv = setup.start();
    assert_ne!(srv.port(), taken.local_addr().unwrap().port());
    assert_eq!(srv.get("localhost", "/a.txt").body, "a\n");
}

/// httpd in the foreground, in its supervisor's process group (so killpg is
/// not used): a stop still ends the connection children that switched to a
/// vhost user, which their worker can no longer signal.
#[test]
fn a_foreground_stop_ends_switched_connection_children() {
    let alice = TestUser::create(false);
    let mut setup = Setup::new();
    setup.own_process_group = false;
    let da = setup.docroot("a");
    write(&da.join("slow.php"), "<?php sleep(20); echo 'late';", 0o644);
    let mut srv = setup.vhost(VHost::of("alice.test", &da, &alice)).start();
    let port = srv.port();
    let slow = get_in_background(port, "alice.test", "/slow.php");
    let switched = |p: &i32| {
        status_field(&proc_status(*p), "Uid")
            .is_some_and(|u| u.starts_with(&format!("{} ", alice.uid)))
    };
    assert!(
        wait_until(10, || connection_children(&srv).iter().any(switched)),
        "no switched connection child"
    );
    let child = *connection_children(&srv)
        .iter()
        .find(|p| switched(p))
        .unwrap();
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(15), "httpd did not stop");
    let gone = wait_until(3, || {
        !std::path::Path::new(&format!("/proc/{child}")).exists()
            || proc_status(child).contains("State:\tZ")
    });
    assert!(
        gone,
        "the switched connection child {child} outlived the stop"
    );
    assert!(!slow.join().unwrap().is_ok_and(|r| r.body == "late"));
}
