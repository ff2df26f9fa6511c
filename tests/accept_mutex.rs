//! Issue 10, item 3: every accept mutex mechanism, with and without
//! `BufferedLogs On`, with one and two listeners: requests answered, no
//! process killed by a signal, every request in the access log.
//!
//! With APR's default mechanism (a process-shared pthread mutex) and
//! BufferedLogs On, connection children used to die with SIGSEGV at exit:
//! the mutex page had been unmapped, and APR's child-pool cleanup touched it.

mod harness;
use harness::*;
use std::time::{Duration, Instant};

const REQUESTS: usize = 6;

fn one(mech: &str, buffered: bool, listeners: usize) {
    let setup = Setup::new();
    let d = setup.dir.clone();
    let spec = match mech {
        "fcntl" | "flock" => format!("{mech}:{}", d.join("run").display()),
        m => m.to_string(),
    };
    let second = free_port();
    let mut setup = setup
        .global(format!("Mutex {spec} mpm-accept"))
        .global(format!(
            "CustomLog {}/logs/access.log \"%h %l %u %t \\\"%r\\\" %>s %b\"",
            d.display()
        ))
        .global(format!(
            "BufferedLogs {}",
            if buffered { "On" } else { "Off" }
        ));
    if listeners == 2 {
        setup = setup.global(format!("Listen 127.0.0.1:{second}"));
    }
    write(&setup.docroot("").join("index.html"), "hello", 0o644);
    let mut srv = setup.start();
    let what = format!("Mutex {mech}, BufferedLogs {buffered}, {listeners} listener(s)");
    let ports: Vec<u16> = if listeners == 2 {
        vec![srv.port(), second]
    } else {
        vec![srv.port()]
    };
    let mut sent = 0;
    for i in 0..REQUESTS {
        let port = ports[i % ports.len()];
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!(
                "GET /index.html?n={i} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let r =
            read_response(&mut s).unwrap_or_else(|e| panic!("{what}: {e}\n{}", srv.error_log()));
        // until the server closes: the request is over, logged included
        let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
        assert_eq!((r.status, r.body.as_str()), (200, "hello"), "{what}");
        sent += 1;
    }
    // A buffered log is written when the connection child exits, just
    // after the client saw its answer; with UserPools, when the user
    // process exits (as a prefork child's): here, at a graceful stop.
    if user_pools_mode() && buffered {
        // a graceful stop: every process finishes its connection and
        // flushes (a stop could interrupt one still in its lingering close)
        srv.signal(libc::SIGWINCH);
        assert!(srv.wait_exit(30), "no graceful stop:\n{}", srv.error_log());
    }
    let log_path = d.join("logs/access.log");
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("GET /index.html?n="))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&log_path) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = srv.error_log();
    assert_eq!(
        count(&log_path),
        sent,
        "{what}: every request in the access log:\n{}\n{log}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    assert!(
        !log.contains("signal") && !log.contains("exited with status"),
        "{what}: a process crashed or failed:\n{log}"
    );
}

fn matrix(mech: &str) {
    for buffered in [true, false] {
        for listeners in [1, 2] {
            one(mech, buffered, listeners);
        }
    }
}

#[test]
fn accept_mutex_default() {
    matrix("default");
}

#[test]
fn accept_mutex_pthread() {
    matrix("pthread");
}

#[test]
fn accept_mutex_fcntl() {
    matrix("fcntl");
}

#[test]
fn accept_mutex_flock() {
    matrix("flock");
}

#[test]
fn accept_mutex_sysvsem() {
    matrix("sysvsem");
}

#[test]
fn accept_mutex_posixsem() {
    matrix("posixsem");
}
