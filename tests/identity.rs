//! Every vhost under its own user: real users, real mod_php, real CGI.

mod harness;
use harness::*;
use std::io::{Read, Write};
use std::time::Duration;

fn expect_identity(body: &str, u: &TestUser) {
    let groups: Vec<String> = u.groups().iter().map(|g| g.to_string()).collect();
    let want = format!("{0} {0} {1} {1} | {2}", u.uid, u.gid, groups.join(","));
    assert_eq!(body, want);
}

#[test]
fn each_vhost_runs_as_its_user_with_its_groups() {
    let alice = TestUser::create(true);
    let bob = TestUser::create(false);
    let setup = Setup::new();
    let (da, db) = (setup.docroot("a"), setup.docroot("b"));
    for d in [&da, &db, &setup.dir.join("docs")] {
        write(&d.join("who.php"), WHOAMI_PHP, 0o644);
        write(
            &d.join("id.cgi"),
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nid -u\n",
            0o755,
        );
    }
    // a directory only alice may write to, and a secret only bob may read
    let upload = da.join("upload");
    std::fs::create_dir(&upload).unwrap();
    chown(&upload, alice.uid, alice.gid);
    write(
        &da.join("mkfile.php"),
        &format!(
            "<?php file_put_contents('{}/f', 'x'); echo 'ok';",
            upload.display()
        ),
        0o644,
    );
    write(&db.join("secret.txt"), "bob's secret", 0o600);
    chown(&db.join("secret.txt"), bob.uid, bob.gid);
    write(
        &da.join("steal.php"),
        &format!(
            "<?php var_dump(@file_get_contents('{}/secret.txt')); var_dump(@file_get_contents('/etc/shadow'));",
            db.display()
        ),
        0o644,
    );
    let docs = setup.dir.join("docs");
    let cgi =
        "<Directory /tmp>\n    Options +ExecCGI\n    AddHandler cgi-script .cgi\n  </Directory>";
    let setup = setup
        .global(cgi)
        .vhost(VHost::new("default.test").line(format!("DocumentRoot {}", docs.display())))
        .vhost(
            VHost::new("alice.test")
                .line(format!("DocumentRoot {}", da.display()))
                .line(format!("AssignUserID {} {}", alice.name, alice.name)),
        )
        .vhost(
            VHost::new("bob.test")
                .line(format!("DocumentRoot {}", db.display()))
                .line(format!("AssignUserID #{} #{}", bob.uid, bob.gid)),
        );
    let srv = setup.start();

    expect_identity(&srv.get("alice.test", "/who.php").body, &alice);
    assert!(
        alice.groups().len() == 2,
        "alice has her supplementary group"
    );
    expect_identity(&srv.get("bob.test", "/who.php").body, &bob);
    let www = srv.get("default.test", "/who.php").body;
    assert!(
        www.starts_with("33 33 33 33"),
        "vhost without AssignUserID runs as User: {www}"
    );

    assert_eq!(
        srv.get("alice.test", "/id.cgi").body.trim(),
        alice.uid.to_string()
    );
    assert_eq!(
        srv.get("bob.test", "/id.cgi").body.trim(),
        bob.uid.to_string()
    );

    assert_eq!(srv.get("alice.test", "/mkfile.php").body, "ok");
    let meta = std::fs::metadata(upload.join("f")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (alice.uid, alice.gid));

    let s = srv.get("alice.test", "/steal.php").body;
    assert_eq!(
        s, "bool(false)\nbool(false)\n",
        "alice read bob's file or /etc/shadow"
    );
}

#[test]
fn after_the_switch_no_capability_and_no_listener_is_left() {
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let da = setup.docroot("a");
    write(
        &da.join("status.php"),
        "<?php echo file_get_contents('/proc/self/status');",
        0o644,
    );
    write(
        &da.join("fds.php"),
        "<?php foreach (scandir('/proc/self/fd') as $f) { $l = @readlink(\"/proc/self/fd/$f\"); if ($l) echo $l, \"\\n\"; }",
        0o644,
    );
    let setup = setup.vhost(VHost::of("alice.test", &da, &alice));
    let srv = setup.start();
    let st = srv.get("alice.test", "/status.php").body;
    for field in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        let line = st.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(
        st.lines()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "{st}"
    );
    assert!(
        st.lines().any(|l| l.starts_with("Uid:")
            && l.split_whitespace()
                .skip(1)
                .all(|u| u == alice.uid.to_string())),
        "{st}"
    );

    // Listening sockets' inodes, from /proc/net/tcp (state 0A = LISTEN).
    let listen: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(3) == Some("0A"))
        .filter_map(|l| l.split_whitespace().nth(9).map(|i| format!("socket:[{i}]")))
        .collect();
    let fds = srv.get("alice.test", "/fds.php").body;
    // Pipes the test process itself holds (cargo's jobserver) reach httpd
    // from outside; any other pipe would be one of httpd's.
    let inherited: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    for l in fds.lines() {
        assert!(
            !listen.contains(&l.to_string()),
            "listening socket {l} open in the PHP process: {fds}"
        );
        assert!(
            !l.starts_with("pipe:") || inherited.contains(&l.to_string()),
            "pipe (pipe of death?) open in the PHP process: {fds}"
        );
        assert!(
            !l.contains("/run/"),
            "runtime file (accept mutex?) open in the PHP process: {fds}"
        );
        assert!(
            !l.contains("eventpoll"),
            "the worker's pollset is open in the PHP process: {fds}"
        );
    }
}

#[test]
fn expression_picks_the_user_and_root_or_unknown_gives_500() {
    // a regular account: expressions cannot pick system accounts
    let alice = TestUser::create_in(20000..=29999);
    let setup = Setup::new();
    let d = setup.dir.join("docs");
    write(&d.join("who.php"), WHOAMI_PHP, 0o644);
    let setup = setup.vhost(
        VHost::new("expr.test")
            .line(format!("DocumentRoot {}", d.display()))
            .line("SetEnvIf Request_URI \"^/u/([a-z0-9]+)/\" ITKUSER=$1")
            .line(format!("AliasMatch ^/u/[a-z0-9]+/(.*) {}/$1", d.display()))
            .line("AssignUserIDExpr %{reqenv:ITKUSER}"),
    );
    let srv = setup.start();
    let r = srv.get("expr.test", &format!("/u/{}/who.php", alice.name));
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with(&format!("{0} {0} 33 33", alice.uid)),
        "{}",
        r.body
    );
    assert_eq!(srv.get("expr.test", "/u/root/who.php").status, 500);
    assert_eq!(srv.get("expr.test", "/u/nosuchuserxyz/who.php").status, 500);
    let log = srv.error_log();
    assert!(log.contains("uid 0 is not allowed"), "{log}");
    assert!(
        log.contains("AssignUserIDExpr returned 'nosuchuserxyz'"),
        "{log}"
    );
}

#[test]
fn keepalive_to_another_uid_closes_the_connection() {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    let setup = Setup::new();
    let (da, db) = (setup.docroot("a"), setup.docroot("b"));
    write(&da.join("who.php"), WHOAMI_PHP, 0o644);
    write(&db.join("who.php"), WHOAMI_PHP, 0o644);
    let setup = setup
        .vhost(VHost::of("alice.test", &da, &alice))
        .vhost(VHost::of("bob.test", &db, &bob));
    let srv = setup.start();
    let mut s = srv.connect();
    for _ in 0..2 {
        write!(s, "GET /who.php HTTP/1.1\r\nHost: alice.test\r\n\r\n").unwrap();
        let r = read_response(&mut s).expect("keep-alive request on the same connection");
        assert!(r.body.starts_with(&alice.uid.to_string()), "{}", r.body);
    }
    write!(s, "GET /who.php HTTP/1.1\r\nHost: bob.test\r\n\r\n").unwrap();
    // Never answered as bob on alice's connection: a connection child
    // closes it unanswered; a user process (UserPools) answers a fixed 421
    // before anything of bob's vhost runs, then closes it.
    let answered = read_response(&mut s);
    if let Ok(r) = &answered {
        assert_eq!(r.status, 421, "answered on alice's connection: {}", r.body);
        assert!(!r.body.starts_with(&bob.uid.to_string()), "{}", r.body);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "more after the 421");
    }
    // the retry on a new connection is answered as bob
    assert!(
        srv.get("bob.test", "/who.php")
            .body
            .starts_with(&bob.uid.to_string())
    );
    let expected = if answered.is_ok() {
        "421, closing the connection"
    } else {
        "closing connection so the client retries"
    };
    assert!(srv.error_log().contains(expected), "{}", srv.error_log());
}

#[test]
fn max_clients_vhost_limits_concurrent_connections() {
    for extended in ["On", "Off"] {
        let setup = Setup::new()
            .global(format!("ExtendedStatus {extended}"))
            .global("StartServers 8\nMinSpareServers 8\nMaxSpareServers 16");
        let (da, db) = (setup.docroot("a"), setup.docroot("b"));
        write(&da.join("slow.php"), "<?php sleep(2); echo 'ok';", 0o644);
        write(&db.join("fast.txt"), "fast", 0o644);
        let setup = setup
            .vhost(
                VHost::new("limited.test")
                    .line(format!("DocumentRoot {}", da.display()))
                    .line("MaxClientsVHost 2"),
            )
            .vhost(VHost::new("other.test").line(format!("DocumentRoot {}", db.display())));
        let srv = setup.start();
        assert!(
            wait_until(10, || srv.worker_pids().len() >= 8),
            "StartServers 8"
        );
        let port = srv.port();
        let slow: Vec<_> = (0..6)
            .map(|_| std::thread::spawn(move || load(port, "limited.test", "/slow.php", 1, 1).0))
            .collect();
        // the slow requests are being served (racing children may both
        // refuse the last place, so at least one)
        assert!(wait_until(10, || !connection_children(&srv).is_empty()));
        assert_eq!(
            srv.get("other.test", "/fast.txt").status,
            200,
            "another vhost is not limited"
        );
        let mut ok = 0;
        let mut busy = 0;
        for h in slow {
            let c = h.join().unwrap();
            ok += c.get(&200).copied().unwrap_or(0);
            busy += c.get(&503).copied().unwrap_or(0);
        }
        // never more than 2 at once; children racing for the last place
        // may both refuse (README), so fewer than 2 may be served
        assert!(
            ok <= 2 && ok + busy == 6 && busy >= 4,
            "ExtendedStatus {extended}: 200: {ok}, 503: {busy}"
        );
        assert!(
            srv.error_log()
                .contains("MaxClientsVHost reached for limited.test")
        );
    }
}

#[test]
fn nice_value_and_directory_without_user_run_as_server_user() {
    let setup = Setup::new();
    let d = setup.docroot("n");
    write(
        &d.join("stat.php"),
        "<?php $f = explode(' ', file_get_contents('/proc/self/stat')); echo posix_geteuid(), ' ', $f[18];",
        0o644,
    );
    let setup = setup.vhost(
        VHost::new("nice.test")
            .line(format!("DocumentRoot {}", d.display()))
            .line(format!(
                "<Directory {}>\n    NiceValue 10\n  </Directory>",
                d.display()
            )),
    );
    let srv = setup.start();
    assert_eq!(srv.get("nice.test", "/stat.php").body, "33 10");
}

#[test]
fn a_crashing_php_page_is_logged_and_the_server_keeps_serving() {
    let setup = Setup::new();
    let d = setup.dir.join("docs");
    write(
        &d.join("crash.php"),
        "<?php posix_kill(posix_getpid(), 11); sleep(1);",
        0o644,
    );
    write(&d.join("ok.txt"), "ok", 0o644);
    let srv = setup.start();
    let _ = srv.try_get("localhost", "/crash.php");
    assert_eq!(srv.get("localhost", "/ok.txt").body, "ok");
    wait_until(5, || srv.error_log().contains("was killed by signal 11"));
    assert!(
        srv.error_log().contains("was killed by signal 11"),
        "{}",
        srv.error_log()
    );
}

#[test]
fn unique_id_stays_unique_across_connections() {
    let setup = Setup::new().global("StartServers 1\nMinSpareServers 1\nMaxSpareServers 1");
    write(
        &setup.dir.join("docs/uid.php"),
        "<?php echo $_SERVER['UNIQUE_ID'];",
        0o644,
    );
    let srv = setup.start();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let id = srv.get("localhost", "/uid.php").body;
        assert!(!id.is_empty());
        assert!(seen.insert(id.clone()), "duplicate UNIQUE_ID {id}");
    }
}

#[test]
fn max_clients_vhost_keeps_serving_up_to_the_limit_under_load() {
    let setup = Setup::new()
        .global("StartServers 8\nMinSpareServers 8\nMaxSpareServers 16\nMaxRequestWorkers 32");
    let d = setup.docroot("l");
    // Counts the requests of this vhost being served at once (under a lock)
    // and records the highest count seen.
    let counter = setup.dir.join("concurrency");
    std::fs::create_dir_all(&counter).unwrap();
    chown(&counter, 33, 33);
    write(
        &d.join("count.php"),
        &format!(
            r#"<?php
function bump($d) {{
    $f = fopen('{c}/lock', 'c');
    flock($f, LOCK_EX);
    $n = (int)@file_get_contents('{c}/now') + $d;
    file_put_contents('{c}/now', $n);
    if ($n > (int)@file_get_contents('{c}/max')) {{ file_put_contents('{c}/max', $n); }}
    flock($f, LOCK_UN);
}}
bump(1); usleep(20000); bump(-1); echo 'ok';
"#,
            c = counter.display()
        ),
        0o644,
    );
    let setup = setup.vhost(
        VHost::new("limited.test")
            .line(format!("DocumentRoot {}", d.display()))
            .line("MaxClientsVHost 4"),
    );
    let srv = setup.start();
    let port = srv.port();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let clients: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                let mut total = std::collections::HashMap::new();
                // bounded: at most 8 s and 2000 requests per client
                for _ in 0..2000 {
                    if std::time::Instant::now() >= deadline {
                        break;
                    }
                    for (k, v) in load(port, "limited.test", "/count.php", 1, 1).0 {
                        *total.entry(k).or_insert(0usize) += v;
                    }
                }
                total
            })
        })
        .collect();
    let (mut ok, mut busy) = (0usize, 0usize);
    for c in clients {
        let t = c.join().unwrap();
        ok += t.get(&200).copied().unwrap_or(0);
        busy += t.get(&503).copied().unwrap_or(0);
    }
    // it keeps serving (a refusal is much quicker than the page, so most
    // answers are 503s)
    assert!(ok >= 50 && busy > 0, "200: {ok}, 503: {busy}");
    let most: u32 = std::fs::read_to_string(counter.join("max"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        (1..=4).contains(&most),
        "{most} requests of limited.test served at once with MaxClientsVHost 4 (200: {ok}, 503: {busy})"
    );
}
