//! Issue 10, items 1 and 2, end to end: modules that start threads in the
//! connection child (mod_http2, mod_proxy_hcheck through mod_watchdog) leave
//! no capability in any thread once vhost code runs, not even in a
//! bounding set, and HTTP/2 stays
//! inactive, as under prefork.
//!
//! The judge is `/proc/self/task/*/status` of the PHP process, every task;
//! the attacker is native code loaded into PHP through FFI that makes every
//! other thread of the process try to open a root-only file and to take
//! another tenant's uid.

mod harness;
use harness::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One line per task: tid, then the fields of its status file.
const TASKS_PHP: &str = r#"<?php
foreach (glob('/proc/self/task/*') as $t) {
    $f = [];
    foreach (file("$t/status") as $l) {
        $p = explode(':', $l, 2);
        if (count($p) == 2) { $f[$p[0]] = preg_replace('/\s+/', ' ', trim($p[1])); }
    }
    echo 'TASK ', basename($t), '|', $f['Uid'], '|', $f['Gid'], '|', $f['CapInh'], '|',
        $f['CapPrm'], '|', $f['CapEff'], '|', $f['CapBnd'], '|', $f['CapAmb'], "\n";
}
"#;

/// The native half of the attack: a signal handler that runs in whichever
/// thread receives the signal, and a function that signals every other
/// thread and counts what they achieved.
const ATTACK_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *victim;
static long other_uid;
static atomic_int answered, opened, took_uid;

static void handler(int sig) {
    (void)sig;
    int fd = open(victim, O_RDONLY);
    if (fd >= 0) { atomic_fetch_add(&opened, 1); close(fd); }
    /* raw syscall: this thread only (glibc would broadcast it) */
    if (syscall(SYS_setresuid, -1L, other_uid, -1L) == 0) atomic_fetch_add(&took_uid, 1);
    atomic_fetch_add(&answered, 1);
}

int attack(const char *path, long uid, char *out, int len) {
    victim = path;
    other_uid = uid;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    int sig = SIGRTMIN + 7;
    sigaction(sig, &sa, NULL);
    pid_t me = getpid();
    long self = syscall(SYS_gettid);
    int sent = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        long tid = atol(e->d_name);
        if (tid <= 0 || tid == self) continue;
        if (syscall(SYS_tgkill, (long)me, tid, (long)sig) == 0) sent++;
    }
    if (d) closedir(d);
    for (int i = 0; i < 300 && atomic_load(&answered) < sent; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    int fd = open(path, O_RDONLY);
    int self_opened = fd >= 0;
    if (fd >= 0) close(fd);
    return snprintf(out, len, "threads=%d answered=%d opened=%d took_uid=%d self_opened=%d",
                    sent, atomic_load(&answered), atomic_load(&opened),
                    atomic_load(&took_uid), self_opened);
}
"#;

fn attack_php(so: &Path, secret: &Path, other_uid: u32) -> String {
    format!(
        r#"<?php
$c = FFI::cdef("int attack(const char *path, long uid, char *out, int len);", "{}");
$buf = FFI::new("char[256]");
$c->attack("{}", {other_uid}, $buf, 256);
echo 'ATTACK ', FFI::string($buf), "\n";
"#,
        so.display(),
        secret.display()
    )
}

#[derive(Debug)]
struct Task {
    tid: String,
    uid: String,
    gid: String,
    inh: u64,
    prm: u64,
    eff: u64,
    bnd: u64,
    amb: u64,
}

fn parse_tasks(body: &str) -> Vec<Task> {
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    body.lines()
        .filter_map(|l| l.strip_prefix("TASK "))
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Task {
                tid: f[0].into(),
                uid: f[1].into(),
                gid: f[2].into(),
                inh: hex(f[3]),
                prm: hex(f[4]),
                eff: hex(f[5]),
                bnd: hex(f[6]),
                amb: hex(f[7]),
            }
        })
        .collect()
}

/// Which thread-starting module the case loads.
#[derive(Clone, Copy, Debug)]
enum Threads {
    Http2,
    HealthCheck,
}

/// Every task of the PHP process: the vhost user everywhere, no
/// capability, the documented bounding set; and the attack gets nothing.
fn no_capability_in_any_thread(kind: Threads, caps_on: bool) {
    let alice = TestUser::create(false);
    let bob = TestUser::create(false);
    let mut setup = Setup::new();
    let da = setup.docroot("a");
    let so = build_shared_object(&setup.dir, "attack", ATTACK_C);
    let secret = setup.dir.join("secret.key");
    write(&secret, "root-only key material\n", 0o600);
    write(&da.join("tasks.php"), TASKS_PHP, 0o644);
    write(
        &da.join("attack.php"),
        &attack_php(&so, &secret, bob.uid),
        0o644,
    );
    write(&da.join("index.html"), "ok", 0o644);
    setup = setup.global(format!(
        "EnableCapabilities {}",
        if caps_on { "On" } else { "Off" }
    ));
    setup = match kind {
        Threads::Http2 => setup
            .modules(&["http2"])
            .global("Protocols h2 h2c http/1.1"),
        Threads::HealthCheck => {
            let port = setup.port();
            setup
                .modules(&[
                    "proxy",
                    "proxy_http",
                    "proxy_balancer",
                    "slotmem_shm",
                    "lbmethod_byrequests",
                    // mod_watchdog is built into Debian's apache2
                    "proxy_hcheck",
                ])
                .global(format!(
                    "<Proxy balancer://hc>\n  BalancerMember http://127.0.0.1:{port} hcmethod=GET hcuri=/index.html hcinterval=2\n</Proxy>"
                ))
        }
    };
    let srv = setup
        .vhost(VHost::of("alice.test", &da, &alice).line("php_admin_value ffi.enable 1"))
        .start();
    let what = format!("{kind:?}, EnableCapabilities {caps_on}");

    let r = srv.get("alice.test", "/attack.php");
    assert_eq!(r.status, 200, "{what}: {}\n{}", r.body, srv.error_log());
    let line = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("ATTACK "))
        .unwrap_or_else(|| panic!("{what}: no attack result: {}", r.body));
    let field = |k: &str| -> i64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {k} missing in {line}"))
    };
    assert!(field("threads") >= 1, "{what}: no other thread: {line}");
    assert_eq!(
        field("answered"),
        field("threads"),
        "{what}: not every thread ran the handler, so the attack was not tried everywhere: {line}"
    );
    assert_eq!(
        field("opened"),
        0,
        "{what}: a thread opened the root-only file: {line}"
    );
    assert_eq!(
        field("took_uid"),
        0,
        "{what}: a thread took bob's uid: {line}"
    );
    assert_eq!(field("self_opened"), 0, "{what}: {line}");
    let r = srv.get("alice.test", "/tasks.php");
    assert_eq!(r.status, 200, "{what}: {}\n{}", r.body, srv.error_log());
    let tasks = parse_tasks(&r.body);
    assert!(
        tasks.len() >= 2,
        "{what}: the module started no thread in the connection child, so this test proves nothing: {}",
        r.body
    );
    let (u, g) = (alice.uid, alice.gid);
    for t in &tasks {
        assert_eq!(
            (t.uid.as_str(), t.gid.as_str()),
            (
                format!("{u} {u} {u} {u}").as_str(),
                format!("{g} {g} {g} {g}").as_str()
            ),
            "{what}: task {} runs as another identity: {t:?}",
            t.tid
        );
        assert_eq!(
            (t.eff, t.prm, t.inh, t.amb),
            (0, 0, 0, 0),
            "{what}: task {} holds capabilities: {t:?}",
            t.tid
        );
        assert_eq!(
            t.bnd, 0,
            "{what}: task {} has bounding set {:016x}: {t:?}",
            t.tid, t.bnd
        );
    }

    assert!(
        !srv.error_log().contains("still holds"),
        "{what}: the invariant check failed a request:\n{}",
        srv.error_log()
    );
}

#[test]
fn http2_threads_hold_no_capability_caps_on() {
    no_capability_in_any_thread(Threads::Http2, true);
}

#[test]
fn http2_threads_hold_no_capability_caps_off() {
    no_capability_in_any_thread(Threads::Http2, false);
}

#[test]
fn health_check_threads_hold_no_capability_caps_on() {
    no_capability_in_any_thread(Threads::HealthCheck, true);
}

#[test]
fn health_check_threads_hold_no_capability_caps_off() {
    no_capability_in_any_thread(Threads::HealthCheck, false);
}

// ---------------------------------------------------------------------------
// Item 2: HTTP/2 inactive
// ---------------------------------------------------------------------------

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=alice.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (crt, key)
}

/// `curl` with `args`, printing the HTTP version it ended with and the body.
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\nVERSION %{http_version}\n",
        ])
        .args(args)
        .output()
        .expect("curl");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

#[test]
fn http2_is_inactive_alpn_upgrade_and_preface() {
    let alice = TestUser::create(false);
    let setup = Setup::new();
    let da = setup.docroot("a");
    let (crt, key) = self_signed(&setup.dir);
    write(&da.join("who.php"), WHOAMI_PHP, 0o644);
    let tls_port = free_port();
    let port = setup.port();
    let vhost = |p: u16| {
        format!(
            "<VirtualHost 127.0.0.1:{p}>\n  ServerName alice.test\n  DocumentRoot {}\n  AssignUserID {1} {1}\n",
            da.display(),
            alice.name
        )
    };
    let srv = setup
        .modules(&["http2", "socache_shmcb", "ssl"])
        .global("Protocols h2 h2c http/1.1")
        .global(format!("Listen 127.0.0.1:{tls_port}"))
        .global(format!("{}</VirtualHost>", vhost(port)))
        .global(format!(
            "{}  SSLEngine on\n  SSLCertificateFile {}\n  SSLCertificateKeyFile {}\n</VirtualHost>",
            vhost(tls_port),
            crt.display(),
            key.display()
        ))
        .start();
    let uid_line = format!("{0} {0} ", alice.uid);

    // TLS, ALPN offering h2 first
    let url = format!("https://alice.test:{tls_port}/who.php");
    let resolve = format!("alice.test:{tls_port}:127.0.0.1");
    let (ok, out) = curl(&["-k", "--http2", "--resolve", &resolve, &url]);
    assert!(ok, "ALPN h2: {out}\n{}", srv.error_log());
    assert!(
        out.contains("VERSION 1.1"),
        "ALPN h2 must end as HTTP/1.1: {out}"
    );
    assert!(out.contains(&uid_line), "served as alice: {out}");

    // cleartext Upgrade: h2c
    let url = format!("http://127.0.0.1:{port}/who.php");
    let (ok, out) = curl(&["-i", "--http2", "-H", "Host: alice.test", &url]);
    assert!(ok, "h2c upgrade: {out}\n{}", srv.error_log());
    assert!(
        out.contains("VERSION 1.1"),
        "h2c Upgrade must end as HTTP/1.1: {out}"
    );
    assert!(out.contains(&uid_line), "served as alice: {out}");
    assert!(
        !out.to_ascii_lowercase().contains("upgrade: h2"),
        "no h2 upgrade offered: {out}"
    );

    // prior-knowledge preface: a clean HTTP/1.1 refusal, then close
    let mut s = srv.connect();
    s.write_all(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04\0\0\0\0\0\0\x03\0\0\0\x64\0\x04\0\x01\0\0",
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "a prior-knowledge preface gets an HTTP/1.1 400: {answer:?}"
    );

    // and the server is fine afterwards, with no crash anywhere
    let r = srv.get("alice.test", "/who.php");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(&uid_line), "{}", r.body);
    let log = srv.error_log();
    assert!(
        !log.contains("signal") && !log.contains("Segmentation"),
        "a process crashed:\n{log}"
    );
    assert_eq!(
        log.matches("HTTP/2 is inactive under mpm-itk").count(),
        1,
        "one startup warning, naming why:\n{log}"
    );
}

/// The check after the switch is the judge: a thread that kept its
/// capabilities (through the test hook, as a careless module could) fails
/// the request closed: 500, the connection closed, one log line naming the
/// vhost, the uid and the thread count; the next connection is served.
#[test]
fn a_thread_that_kept_its_capabilities_fails_the_request_closed() {
    let alice = TestUser::create(false);
    let (setup, hooks) = Setup::new().with_test_hooks();
    let da = setup.docroot("a");
    write(&da.join("who.php"), WHOAMI_PHP, 0o644);
    // The classic path: a connection child runs child_init before the
    // switch. (A user process runs it after: a thread it starts there was
    // never privileged.)
    let srv = setup
        .global("UserPools Off")
        .vhost(VHost::of("alice.test", &da, &alice))
        .start();
    write(&hooks.join("thread-keeps-caps"), "", 0o666);
    let r = expect_failed_closed(&srv, "alice.test", "/who.php");
    assert!(
        !hooks.join("thread-keeps-caps").exists(),
        "the hook never ran"
    );
    assert!(
        !r.body.contains(&alice.uid.to_string()),
        "PHP ran: {}",
        r.body
    );
    let log = srv.error_log();
    let line = log
        .lines()
        .find(|l| l.contains("still holds"))
        .unwrap_or_else(|| panic!("no log line:\n{log}"));
    assert!(
        line.contains("vhost alice.test")
            && line.contains("of 2 threads")
            && line.contains(&format!("uid {}", alice.uid))
            && line.contains("CapEff 00000000008000c4"),
        "{line}"
    );
    let r = srv.get("alice.test", "/who.php");
    assert!(
        r.body.starts_with(&format!("{0} {0} ", alice.uid)),
        "{}",
        r.body
    );
}
