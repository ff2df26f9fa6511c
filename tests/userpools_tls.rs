//! UserPools with HTTPS (issue 14): the worker peeks at the TLS
//! ClientHello, routes by its SNI name as mod_ssl would, and the user
//! process runs the whole handshake and the requests as the user.

mod harness;
use harness::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PID_PHP: &str = "<?php echo 'page ', getmypid(), ' ', posix_getuid(), ' ', posix_geteuid(), ' ', \
     posix_getgid(), \"\\n\";";

/// (pid, uid, euid, gid) from PID_PHP's line in `out`.
fn page(out: &str) -> Option<(i32, u32, u32, u32)> {
    let line = out.lines().find_map(|l| l.strip_prefix("page "))?;
    let v: Vec<i64> = line
        .split(' ')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .ok()?;
    (v.len() == 4).then(|| (v[0] as i32, v[1] as u32, v[2] as u32, v[3] as u32))
}

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate and its key in `dir`, for `names` (the first
/// is the CN), with an ECDSA P-256 (`ec`) or RSA-2048 (`rsa`) key.
fn cert(dir: &Path, file: &str, names: &[&str], alg: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (format!("{file}.crt"), format!("{file}.key"));
    let newkey: &[&str] = match alg {
        "ec" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-newkey", "rsa:2048"],
    };
    let subj = format!("/CN={}", names[0]);
    let san = format!(
        "subjectAltName={}",
        names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&[
        "-subj", &subj, "-addext", &san, "-keyout", &key, "-out", &crt,
    ]);
    openssl(dir, &args);
    (dir.join(crt), dir.join(key))
}

/// An ECDSA P-256 CA in `dir` (ca.key, ca.crt) named `cn`.
fn ec_ca(dir: &Path, cn: &str) {
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-subj",
            &subj,
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
}

/// `name`.key and `name`.crt in `dir`: an ECDSA P-256 certificate for `cn`
/// signed by [`ec_ca`]'s CA, with the extensions in file `ext` if given.
fn ec_signed(dir: &Path, name: &str, cn: &str, ext: Option<&str>) -> (PathBuf, PathBuf) {
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-subj",
            &subj,
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    let mut args = vec![
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &crt,
    ];
    if let Some(ext) = ext {
        args.extend_from_slice(&["-extfile", ext]);
    }
    openssl(dir, &args);
    (dir.join(crt), dir.join(key))
}

/// A CA and a client certificate it signed: (ca.crt, client.crt, client.key).
fn client_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    ec_ca(dir, "itk test CA");
    let (crt, key) = ec_signed(dir, "client", "itk test client", None);
    (dir.join("ca.crt"), crt, key)
}

struct Site {
    name: &'static str,
    user: TestUser,
}

struct Tls {
    srv: Server,
    port: u16,
    /// alice.test with TLS on a listener without the `https` protocol
    http_proto_port: u16,
    dir: PathBuf,
    sites: Vec<Site>,
    client: (PathBuf, PathBuf),
    keys: Vec<PathBuf>,
}

impl Tls {
    fn site(&self, name: &str) -> &Site {
        self.sites.iter().find(|s| s.name == name).unwrap()
    }
}

/// HTTPS vhosts on a port of their own: alice.test (ECDSA P-256, session
/// tickets), bob.test (RSA-2048, tickets off: sessions resume through the
/// shared session cache), c.shared.test and d.shared.test of carol and dave
/// with one wildcard certificate, secure.test of bob's that requires a
/// client certificate. UserPools `pools`, one process per user.
fn start(pools: bool, extra: &[&str]) -> Tls {
    let mut setup = Setup::new();
    setup.cold = true;
    let dir = setup.dir.clone();
    let port = free_port();
    let http_proto_port = free_port();
    let alice = cert(&dir, "alice", &["alice.test"], "ec");
    let bob = cert(&dir, "bob", &["bob.test", "secure.test"], "rsa");
    let shared = cert(&dir, "shared", &["*.shared.test"], "ec");
    let (ca, client_crt, client_key) = client_ca(&dir);
    let users: Vec<TestUser> = (0..4).map(|_| TestUser::create(false)).collect();
    let [alice_u, bob_u, carol_u, dave_u]: [TestUser; 4] = users.try_into().ok().unwrap();
    let mut setup = setup
        .modules(&["socache_shmcb", "ssl"])
        .global(format!("Listen 127.0.0.1:{port} https"))
        // a TLS listener that httpd does not know as https: never routed
        .global(format!("Listen 127.0.0.1:{http_proto_port}"))
        .global(format!(
            "SSLSessionCache shmcb:{}/run/ssl_scache(512000)",
            dir.display()
        ))
        .global(format!("UserPools {}", if pools { "On" } else { "Off" }))
        .global("ServerLimit 40")
        .global("MaxRequestWorkers 20")
        .global("UserPoolMaxProcesses 1")
        .global("UserPoolIdleTimeout 60");
    for l in extra {
        setup = setup.global(*l);
    }
    let vhost = |name: &str, user: &TestUser, (crt, key): &(PathBuf, PathBuf), more: &str| {
        let docs = setup.docroot(name);
        write(&docs.join("pid.php"), PID_PHP, 0o644);
        write(&docs.join("index.html"), name, 0o644);
        format!(
            "<VirtualHost 127.0.0.1:{port}>\n  ServerName {name}\n  DocumentRoot {}\n  \
             AssignUserID {u} {u}\n  SSLEngine on\n  SSLCertificateFile {}\n  \
             SSLCertificateKeyFile {}\n{more}</VirtualHost>",
            docs.display(),
            crt.display(),
            key.display(),
            u = user.name,
        )
    };
    let blocks = [
        vhost(
            "alice.test",
            &alice_u,
            &alice,
            "  php_admin_value ffi.enable 1\n",
        ),
        vhost("bob.test", &bob_u, &bob, "  SSLSessionTickets off\n"),
        vhost("c.shared.test", &carol_u, &shared, ""),
        vhost("d.shared.test", &dave_u, &shared, ""),
        vhost(
            "secure.test",
            &bob_u,
            &bob,
            &format!(
                "  SSLVerifyClient require\n  SSLCACertificateFile {}\n",
                ca.display()
            ),
        ),
    ];
    for b in blocks {
        setup = setup.global(b);
    }
    setup = setup.global(format!(
        "<VirtualHost 127.0.0.1:{http_proto_port}>\n  ServerName alice.test\n  DocumentRoot {}\n  \
         AssignUserID {u} {u}\n  SSLEngine on\n  SSLCertificateFile {}\n  \
         SSLCertificateKeyFile {}\n</VirtualHost>",
        dir.join("docs/alice.test").display(),
        alice.0.display(),
        alice.1.display(),
        u = alice_u.name,
    ));
    let srv = setup.start();
    let keys = vec![alice.1.clone(), bob.1.clone(), shared.1.clone()];
    let sites = vec![
        Site {
            name: "alice.test",
            user: alice_u,
        },
        Site {
            name: "bob.test",
            user: bob_u,
        },
        Site {
            name: "c.shared.test",
            user: carol_u,
        },
        Site {
            name: "d.shared.test",
            user: dave_u,
        },
    ];
    Tls {
        srv,
        port,
        http_proto_port,
        dir,
        sites,
        client: (client_crt, client_key),
        keys,
    }
}

/// What curl got: (HTTP status, body), or None and curl's error.
fn curl(port: u16, sni: &str, path: &str, extra: &[&str]) -> (Option<u16>, String) {
    let resolve = format!("{sni}:{port}:127.0.0.1");
    let url = format!("https://{sni}:{port}{path}");
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "20", "--http1.1", "--resolve"])
        .arg(&resolve)
        .args(["-w", "\nSTATUS %{http_code}"])
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.rsplit_once("\nSTATUS ") {
        Some((body, code)) if out.status.success() => (code.trim().parse().ok(), body.to_string()),
        _ => (
            None,
            format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        ),
    }
}

/// (pid, uid) a PHP page reports over HTTPS with SNI `sni`.
fn who(t: &Tls, sni: &str, extra: &[&str]) -> (i32, u32) {
    who_at(t, t.port, sni, extra)
}

fn who_on(t: &Tls, port: u16, sni: &str) -> (i32, u32) {
    who_at(t, port, sni, &[])
}

fn who_at(t: &Tls, port: u16, sni: &str, extra: &[&str]) -> (i32, u32) {
    let (status, body) = curl(port, sni, "/pid.php", extra);
    assert_eq!(status, Some(200), "{sni}: {body}\n{}", t.srv.error_log());
    let (pid, uid, ..) = page(&body).unwrap_or_else(|| panic!("{body}"));
    (pid, uid)
}

fn parent_of(pid: i32) -> i32 {
    let st = proc_status(pid);
    status_field(&st, "PPid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A user process: a child of the parent that runs PHP.
fn is_pool_process(t: &Tls, pid: i32) -> bool {
    parent_of(pid) == t.srv.parent_pid()
}

/// HTTPS requests until one is served by a user process (the first ones
/// take the classic path while the parent starts it); returns its pid.
fn warm(t: &Tls, sni: &str, extra: &[&str]) -> i32 {
    let mut found = 0;
    assert!(
        wait_until(20, || {
            let (pid, _) = who(t, sni, extra);
            found = pid;
            std::thread::sleep(Duration::from_millis(100));
            is_pool_process(t, pid)
        }),
        "{sni} never served by a user process\n{}",
        t.srv.error_log()
    );
    found
}

/// Runs the request `f` until a user process serves it (a connection may
/// find the pool's one process still finishing the previous one, and take
/// the classic path); its result.
fn on_pool<T>(t: &Tls, mut f: impl FnMut() -> T, pid_of: impl Fn(&T) -> i32) -> T {
    for _ in 0..30 {
        let r = f();
        if is_pool_process(t, pid_of(&r)) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn assert_task_status(pid: i32, user: &TestUser) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let st = std::fs::read_to_string(task.path().join("status")).unwrap();
        let (u, g) = (user.uid.to_string(), user.gid.to_string());
        let ids = |f: &str| status_field(&st, f).unwrap();
        assert_eq!(ids("Uid"), format!("{u} {u} {u} {u}"), "{st}");
        assert_eq!(ids("Gid"), format!("{g} {g} {g} {g}"), "{st}");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(ids(cap), "0000000000000000", "{cap}\n{st}");
        }
        assert_eq!(ids("Seccomp"), "2", "{st}");
    }
}

#[test]
fn https_vhosts_are_served_as_their_users_in_both_modes() {
    for pools in [false, true] {
        let t = start(pools, &[]);
        for site in &t.sites {
            if pools {
                let pid = warm(&t, site.name, &[]);
                // the next connection: the same process, no fork
                std::thread::sleep(Duration::from_millis(150));
                assert_eq!(
                    on_pool(&t, || who(&t, site.name, &[]), |r| r.0),
                    (pid, site.user.uid),
                    "{}",
                    site.name
                );
                assert_task_status(pid, &site.user);
            } else {
                let (pid, uid) = who(&t, site.name, &[]);
                assert_eq!(uid, site.user.uid, "{}", site.name);
                assert!(!is_pool_process(&t, pid), "{}: classic mode", site.name);
            }
        }
        // a static file too (core's handler, mod_ssl's output filter)
        let (status, body) = curl(t.port, "d.shared.test", "/index.html", &[]);
        assert_eq!((status, body.as_str()), (Some(200), "d.shared.test"));
    }
}

#[test]
fn an_sni_for_one_user_and_a_host_for_another_is_never_served_in_the_sni_users_process() {
    for pools in [false, true] {
        let t = start(pools, &[]);
        let dave = t.site("d.shared.test").user.uid;
        let carol_pid = pools.then(|| warm(&t, "c.shared.test", &[]));
        let alice_pid = pools.then(|| warm(&t, "alice.test", &[]));
        // different certificates: mod_ssl's own 421 in both modes
        let (status, body) = curl(t.port, "alice.test", "/pid.php", &["-H", "Host: bob.test"]);
        assert_eq!(status, Some(421), "SNI alice, Host bob: {body}");
        assert!(page(&body).is_none(), "{body}");
        // one wildcard certificate: mod_ssl would serve the Host's vhost;
        // classic mode does, as dave; a user process of carol's refuses
        let (status, body) = curl(
            t.port,
            "c.shared.test",
            "/pid.php",
            &["-H", "Host: d.shared.test"],
        );
        if pools {
            assert_eq!(status, Some(421), "SNI carol, Host dave: {body}");
            assert!(
                body.contains("retry it on a new connection"),
                "our fixed body, no ErrorDocument: {body}"
            );
            // nothing of dave's ran there: carol's process goes on
            std::thread::sleep(Duration::from_millis(150));
            let next = |sni: &'static str| on_pool(&t, || who(&t, sni, &[]), |r| r.0).0;
            assert_eq!(next("c.shared.test"), carol_pid.unwrap());
            assert_eq!(next("alice.test"), alice_pid.unwrap());
        } else {
            assert_eq!(status, Some(200), "{body}");
            let (pid, uid, ..) = page(&body).unwrap();
            assert_eq!(uid, dave, "{body}");
            assert!(!is_pool_process(&t, pid));
        }
    }
}

/// openssl s_client with `args`, sending `request`; its whole output.
fn s_client(port: u16, args: &[&str], request: &str) -> String {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-ign_eof",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The pid in a PHP page's output within s_client's output.
fn served_pid(out: &str) -> i32 {
    page(out).unwrap_or_else(|| panic!("no page in:\n{out}")).0
}

fn get(host: &str) -> String {
    format!("GET /pid.php HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// A proxy on a port of its own for one connection to `target`: it cuts
/// the client's first TLS record (the ClientHello) into records of 40
/// bytes, each written as two TCP segments a few milliseconds apart, then
/// relays both ways.
fn fragmenting_proxy(target: u16) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut u = TcpStream::connect(("127.0.0.1", target)).unwrap();
        u.set_nodelay(true).unwrap();
        let mut head = [0u8; 5];
        c.read_exact(&mut head).unwrap();
        let len = u16::from_be_bytes([head[3], head[4]]) as usize;
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        for piece in body.chunks(40) {
            let mut rec = vec![head[0], head[1], head[2]];
            rec.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            rec.extend_from_slice(piece);
            let (a, b) = rec.split_at(rec.len() / 2);
            u.write_all(a).unwrap();
            std::thread::sleep(Duration::from_millis(3));
            u.write_all(b).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        let (mut c2, mut u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut u2);
            let _ = u2.shutdown(std::net::Shutdown::Write);
        });
        let _ = std::io::copy(&mut u, &mut c);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let _ = up.join();
    });
    (port, h)
}

#[test]
fn tls_without_a_routable_name_takes_the_classic_path_and_a_split_hello_is_routed() {
    let t = start(true, &["LogLevel info mpm_itk:trace1"]);
    let alice = t.site("alice.test").user.uid;
    let a = warm(&t, "alice.test", &[]);
    let pid_of = |out: &str| served_pid(out);
    // no SNI: the address's default vhost (alice's, the first), classic
    let out = s_client(t.port, &["-noservername", "-quiet"], &get("alice.test"));
    let pid = pid_of(&out);
    assert_eq!(page(&out).map(|p| p.1), Some(alice), "{out}");
    assert!(!is_pool_process(&t, pid), "no SNI served by a user process");
    // TLS on a listener whose protocol is not https (mod_ssl may be off on
    // such a port): classic, whatever the SNI
    let (pid, uid) = who_on(&t, t.http_proto_port, "alice.test");
    assert_eq!(uid, alice);
    assert!(
        !is_pool_process(&t, pid),
        "TLS on an http listener was routed"
    );
    // an SNI that names no vhost: classic too (the default vhost)
    let (pid, uid) = who(&t, "nobody.test", &[]);
    assert_eq!(uid, alice);
    assert!(
        !is_pool_process(&t, pid),
        "unknown SNI served by a user process"
    );
    // garbage that starts like a TLS record, and plain HTTP on the TLS
    // port: classic, refused there; nothing else is disturbed
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 9, 0xff, 0xfe, 0xfd, 0xfc,
    ])
    .unwrap();
    s.write_all(&[0xab; 64]).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    let mut s = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{}", get("alice.test")).unwrap();
    let r = read_response(&mut s).expect("plain HTTP on the TLS port");
    assert_eq!(r.status, 400, "{}", r.body);
    // (routed by its Host to alice's process, whose mod_ssl answers 400:
    // let it finish its lingering close)
    drop(s);
    // a ClientHello cut into many records and segments: routed, served by
    // alice's user process
    std::thread::sleep(Duration::from_millis(300));
    let split = || {
        let (proxy, h) = fragmenting_proxy(t.port);
        let (status, body) = curl(proxy, "alice.test", "/pid.php", &[]);
        h.join().unwrap();
        assert_eq!(status, Some(200), "{body}\n{}", t.srv.error_log());
        body
    };
    let body = on_pool(&t, split, |b| served_pid(b));
    assert_eq!(
        served_pid(&body),
        a,
        "split ClientHello: {body}\n{}",
        t.srv.error_log()
    );
    let log = t.srv.error_log();
    assert!(!log.contains("signal") && !log.contains("panic"), "{log}");
}

#[test]
fn tls_sessions_resume_across_processes_and_the_classic_path() {
    let t = start(true, &["LogLevel info mpm_itk:trace1"]);
    for (site, how) in [
        ("alice.test", "session ticket (TLS 1.3)"),
        ("bob.test", "session cache (TLS 1.3, tickets off)"),
        ("bob.test", "session id (TLS 1.2)"),
    ] {
        let tls12: &[&str] = if how.contains("1.2") {
            &["-tls1_2"]
        } else {
            &[]
        };
        let sess = |n: usize| t.dir.join(format!("{site}-{}-{n}.sess", tls12.len()));
        let args = |inp: Option<usize>, out: usize| {
            let mut v: Vec<String> = vec!["-servername".into(), site.into()];
            v.extend(tls12.iter().map(|s| s.to_string()));
            if let Some(i) = inp {
                v.extend(["-sess_in".into(), sess(i).display().to_string()]);
            }
            v.extend(["-sess_out".into(), sess(out).display().to_string()]);
            v
        };
        let run = |a: Vec<String>| {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            s_client(t.port, &refs, &get(site))
        };
        // a first, full handshake: wherever it lands (the classic path, the
        // first time)
        let out = run(args(None, 0));
        assert!(out.contains("New, TLS"), "{site}: {out}");
        // resumed by a user process
        let a = warm(&t, site, &[]);
        std::thread::sleep(Duration::from_millis(150));
        let out = on_pool(&t, || run(args(Some(0), 1)), |o| served_pid(o));
        assert!(
            out.contains("Reused, TLS"),
            "{site} {how}: not resumed:\n{out}"
        );
        assert_eq!(served_pid(&out), a, "{out}\n{}", t.srv.error_log());
        // and by its replacement
        // SAFETY: kills a process of this test's httpd.
        unsafe { libc::kill(a, libc::SIGKILL) };
        let b = warm(&t, site, &[]);
        assert_ne!(a, b);
        std::thread::sleep(Duration::from_millis(150));
        // (s_client writes no new session after resuming a TLS 1.2 one: the
        // same session id again)
        let last = if sess(1).exists() { 1 } else { 0 };
        let out = on_pool(&t, || run(args(Some(last), 2)), |o| served_pid(o));
        assert!(
            out.contains("Reused, TLS"),
            "{site} {how}: not resumed by a new process:\n{out}"
        );
        assert_eq!(served_pid(&out), b, "{out}\n{}", t.srv.error_log());
    }
}

#[test]
fn a_vhost_that_requires_client_certificates_works_in_a_user_process() {
    let t = start(true, &[]);
    let bob = t.site("bob.test").user.uid;
    let (crt, key) = (
        t.client.0.display().to_string(),
        t.client.1.display().to_string(),
    );
    let with_cert = ["--cert", crt.as_str(), "--key", key.as_str()];
    let pid = warm(&t, "secure.test", &with_cert);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        on_pool(&t, || who(&t, "secure.test", &with_cert), |r| r.0),
        (pid, bob)
    );
    // bob's user process serves bob.test and secure.test (one pool)
    let (status, body) = curl(t.port, "secure.test", "/pid.php", &[]);
    assert_ne!(status, Some(200), "no client certificate, yet: {body}");
}

/// The two 32-byte needles of a secret number given as hex bytes with
/// colons (openssl -text): big-endian (DER, PEM decoded) and the least
/// significant bytes first (an OpenSSL BIGNUM's limbs on x86-64).
fn needles(hex: &str) -> [Vec<u8>; 2] {
    let mut be: Vec<u8> = hex
        .split(':')
        .map(|b| u8::from_str_radix(b.trim(), 16).unwrap())
        .collect();
    while be.first() == Some(&0) {
        be.remove(0);
    }
    let le: Vec<u8> = be.iter().rev().copied().collect();
    [be[..32].to_vec(), le[..32].to_vec()]
}

/// The secret of a private key file: the EC scalar or RSA's first prime.
fn secret_of(key: &Path) -> [Vec<u8>; 2] {
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = if text.contains("prime1:") {
        "prime1:"
    } else {
        "priv:"
    };
    let start = text.find(field).unwrap() + field.len();
    let hex: String = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    needles(hex.trim_end_matches(':'))
}

/// A PHP FFI page (the attacker: tenant code that runs native code) that
/// reads its own process's memory, every readable mapping, with
/// process_vm_readv (an unreadable page fails the call instead of
/// crashing), and counts needles it gets XOR-ed with 0xA5 (so the page
/// never holds them in the clear and cannot find itself).
const SCAN_PHP: &str = r#"<?php
$needles = array_map('hex2bin', explode(',', $_GET['n']));
$found = array_fill(0, count($needles), 0);
$c = FFI::cdef("
typedef struct { void *base; size_t len; } liov;
typedef struct { uintptr_t base; size_t len; } riov;
long process_vm_readv(int pid, const liov *l, unsigned long ln, const riov *r, unsigned long rn, unsigned long flags);
int getpid(void);
", "libc.so.6");
$size = 1048576; $over = 64;
$buf = FFI::new("char[" . ($size + $over) . "]");
$l = $c->new("liov");
$l->base = FFI::addr($buf[0]);
$r = $c->new("riov");
$pid = $c->getpid();
$mask = str_repeat("\xa5", $size + $over);
foreach (file('/proc/self/maps') as $line) {
    if (!preg_match('/^([0-9a-f]+)-([0-9a-f]+) r/', $line, $m)) continue;
    $start = hexdec($m[1]); $end = hexdec($m[2]);
    for ($a = $start; $a < $end; $a += $size) {
        $len = min($size + $over, $end - $a);
        $l->len = $len; $r->base = $a; $r->len = $len;
        $n = $c->process_vm_readv($pid, FFI::addr($l), 1, FFI::addr($r), 1, 0);
        if ($n <= 0) break;
        $masked = FFI::string($buf, $n) ^ substr($mask, 0, $n);
        foreach ($needles as $i => $nd) $found[$i] += substr_count($masked, $nd);
    }
}
echo implode(' ', $found);
"#;

#[test]
fn what_a_user_process_holds_of_other_users_private_keys() {
    let t = start(true, &[]);
    let docs = t.dir.join("docs/alice.test");
    write(&docs.join("scan.php"), SCAN_PHP, 0o644);
    let a = warm(&t, "alice.test", &[]);
    let masked = |v: &[u8]| {
        v.iter()
            .map(|b| format!("{:02x}", b ^ 0xa5))
            .collect::<String>()
    };
    let mut all = vec![];
    for k in &t.keys {
        all.extend(secret_of(k).iter().map(|n| masked(n)));
    }
    // a needle that is nowhere: the scan finds nothing it was not given
    all.push(masked(&[0x3c; 32]));
    std::thread::sleep(Duration::from_millis(150));
    let (status, body) = curl(
        t.port,
        "alice.test",
        &format!("/scan.php?n={}", all.join(",")),
        &[],
    );
    assert_eq!(status, Some(200), "{body}\n{}", t.srv.error_log());
    let n: Vec<u64> = body.split(' ').map(|x| x.parse().unwrap()).collect();
    assert_eq!(n.len(), 7, "{body}");
    assert_eq!(n[6], 0, "the control needle: {body}");
    let seen = |i: usize| n[2 * i] + n[2 * i + 1] > 0;
    // the scan works: alice's own key is in her process (it signs her
    // handshakes)
    assert!(seen(0), "alice's key not found in her own process: {body}");
    // Measured: bob's and the wildcard pair's keys are there too. mod_ssl
    // loads every vhost's key in the parent (and keeps a DER copy of each);
    // the README's security model says so. If this changes, update it.
    assert!(
        seen(1) && seen(2),
        "other users' keys are no longer in a user process ({body}): update the README"
    );
    println!("key secrets seen in alice's user process {a}: {body}");
}

/// `openssl ocsp` as a responder on `port` for the certificates `ca`
/// issued (index.txt in `dir`); killed on drop.
struct Responder(std::process::Child);

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ocsp_stapling_works_in_a_user_process() {
    let mut setup = Setup::new();
    setup.cold = true;
    let dir = setup.dir.clone();
    let ocsp_port = free_port();
    let tls_port = free_port();
    let alice = TestUser::create(false);
    // a CA, and alice's certificate with the responder in its AIA
    ec_ca(&dir, "itk ocsp CA");
    write(
        &dir.join("ext.cnf"),
        &format!(
            "subjectAltName=DNS:alice.test\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{ocsp_port}/\n"
        ),
        0o644,
    );
    ec_signed(&dir, "alice", "alice.test", Some("ext.cnf"));
    let field = |opt: &str| {
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args([
                "x509",
                "-noout",
                opt,
                "-dateopt",
                "iso_8601",
                "-in",
                "alice.crt",
            ])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        s.split_once('=').unwrap().1.to_string()
    };
    // index.txt: V, expiry as YYMMDDHHMMSSZ, no revocation, serial
    let end: String = field("-enddate")
        .chars()
        .filter(char::is_ascii_digit)
        .skip(2)
        .collect();
    write(
        &dir.join("index.txt"),
        &format!(
            "V\t{end}Z\t\t{}\tunknown\t/CN=alice.test\n",
            field("-serial")
        ),
        0o644,
    );
    let _responder = Responder(
        Command::new("openssl")
            .current_dir(&dir)
            .args([
                "ocsp",
                "-index",
                "index.txt",
                "-CA",
                "ca.crt",
                "-rsigner",
                "ca.crt",
                "-rkey",
                "ca.key",
                "-nmin",
                "5",
                "-port",
            ])
            .arg(ocsp_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl ocsp"),
    );
    let docs = setup.docroot("alice.test");
    write(&docs.join("pid.php"), PID_PHP, 0o644);
    let srv = setup
        .modules(&["socache_shmcb", "ssl"])
        .global(format!("Listen 127.0.0.1:{tls_port} https"))
        .global(format!(
            "SSLStaplingCache shmcb:{}/run/ssl_stapling(65536)",
            dir.display()
        ))
        .global("UserPools On")
        .global("ServerLimit 40")
        .global("MaxRequestWorkers 20")
        .global("UserPoolMaxProcesses 1")
        .global(format!(
            "<VirtualHost 127.0.0.1:{tls_port}>\n  ServerName alice.test\n  DocumentRoot {}\n  \
             AssignUserID {u} {u}\n  SSLEngine on\n  SSLCertificateFile {d}/alice.crt\n  \
             SSLCertificateKeyFile {d}/alice.key\n  SSLCertificateChainFile {d}/ca.crt\n  \
             SSLUseStapling on\n  SSLStaplingResponderTimeout 5\n</VirtualHost>",
            docs.display(),
            u = alice.name,
            d = dir.display()
        ))
        .start();
    let t = Tls {
        srv,
        port: tls_port,
        http_proto_port: 0,
        dir: dir.clone(),
        sites: vec![],
        client: (PathBuf::new(), PathBuf::new()),
        keys: vec![],
    };
    let a = warm(&t, "alice.test", &[]);
    std::thread::sleep(Duration::from_millis(150));
    let status = || {
        s_client(
            tls_port,
            &["-servername", "alice.test", "-status"],
            &get("alice.test"),
        )
    };
    let out = on_pool(&t, status, |o| served_pid(o));
    assert_eq!(served_pid(&out), a, "{out}");
    assert!(
        out.contains("OCSP Response Status: successful") && out.contains("Cert Status: good"),
        "no stapled response:\n{out}\n{}",
        t.srv.error_log()
    );
    drop(alice);
}
