//! Test harness: a self-contained httpd configuration in a temp dir, a real
//! `/usr/sbin/apache2` started in the foreground in its own process group,
//! real users, a tiny HTTP client. Everything is removed on drop, also when
//! the test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MODULES: &str = "/usr/lib/apache2/modules";

/// Is `pid` a user process (UserPools) rather than a worker: one uid, not
/// root, and no permitted capability (a worker always keeps CAP_SETUID or
/// runs as root).
pub fn is_user_process(pid: i32) -> bool {
    let st = proc_status(pid);
    let uids: Vec<String> = status_field(&st, "Uid")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    uids.len() == 4
        && uids.iter().all(|u| *u == uids[0] && u != "0")
        && status_field(&st, "CapPrm").as_deref() == Some("0000000000000000")
}

/// Does this run test UserPools On (`ITK_TEST_USER_POOLS=1`, run-tests'
/// second pass over the whole suite)?
pub fn user_pools_mode() -> bool {
    std::env::var("ITK_TEST_USER_POOLS").is_ok_and(|v| v == "1")
}

pub fn require_root() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("these tests must run as root (they start httpd and create users)");
    }
}

pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("MPM_ITK_SO") {
        return PathBuf::from(p);
    }
    // cargo's target directory: CARGO_TARGET_DIR (relative to the
    // checkout) if set, as scripts/common.sh's itk_so_path
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| root.join(t))
        .unwrap_or_else(|| root.join("target"));
    let p = target.join("release/libmpm_itk.so");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release` first",
        p.display()
    );
    p
}

static SEQ: AtomicUsize = AtomicUsize::new(0);
static USERDB: Mutex<()> = Mutex::new(());

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// A system user (and its group) that exists for the test's duration.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    extra_group: Option<String>,
}

impl TestUser {
    pub fn create(with_extra_group: bool) -> TestUser {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        let name = unique("itk");
        let (ok, out) = run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                &name,
            ],
        );
        assert!(ok, "useradd {name}: {out}");
        let extra_group = with_extra_group.then(|| {
            let g = format!("{name}g");
            let (ok, out) = run("groupadd", &["--system", &g]);
            assert!(ok, "groupadd: {out}");
            let (ok, out) = run("usermod", &["-aG", &g, &name]);
            assert!(ok, "usermod: {out}");
            g
        });
        let uid = run("id", &["-u", &name]).1.trim().parse().unwrap();
        let gid = run("id", &["-g", &name]).1.trim().parse().unwrap();
        TestUser {
            name,
            uid,
            gid,
            extra_group,
        }
    }

    /// All group ids of the user, sorted.
    pub fn groups(&self) -> Vec<u32> {
        let mut v: Vec<u32> = run("id", &["-G", &self.name])
            .1
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        run("userdel", &[&self.name]);
        run("groupdel", &[&self.name]);
        if let Some(g) = &self.extra_group {
            run("groupdel", &[g]);
        }
    }
}

/// A virtual host of the test configuration.
pub struct VHost {
    pub name: String,
    pub lines: Vec<String>,
}

impl VHost {
    pub fn new(name: &str) -> VHost {
        VHost {
            name: name.into(),
            lines: vec![],
        }
    }
    /// A vhost `name` with `docroot`, running as `user`
    /// (`AssignUserID user user`).
    pub fn of(name: &str, docroot: &Path, user: &TestUser) -> VHost {
        VHost::new(name)
            .line(format!("DocumentRoot {}", docroot.display()))
            .line(format!("AssignUserID {0} {0}", user.name))
    }

    pub fn line(mut self, l: impl Into<String>) -> VHost {
        self.lines.push(l.into());
        self
    }
}

/// Writes a self-contained configuration; `start` runs httpd with it.
pub struct Setup {
    pub dir: PathBuf,
    /// Read through `port()`, which pins it: a test that wrote it anywhere
    /// must never see the harness move httpd to another port.
    port: u16,
    port_pinned: std::cell::Cell<bool>,
    pub global: Vec<String>,
    pub vhosts: Vec<VHost>,
    pub load_prefork_too: bool,
    /// Start httpd as the leader of a process group of its own (as when
    /// daemonised); false: in the test's group, as a foreground httpd under
    /// a supervisor.
    pub own_process_group: bool,
    /// Extra environment variables for httpd (e.g. the test-only
    /// `MPM_ITK_TEST_HOOKS`, see `with_test_hooks`).
    pub env: Vec<(String, String)>,
    /// Start without warming the user pools in the UserPools pass (a test
    /// that watches the first user processes start).
    pub cold: bool,
}

impl Setup {
    pub fn new() -> Setup {
        require_root();
        let dir = PathBuf::from(format!("/tmp/{}", unique("itk-test-")));
        for d in ["", "logs", "run", "docs"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("docs"), fs::Permissions::from_mode(0o755)).unwrap();
        Setup {
            dir,
            port: free_port(),
            port_pinned: std::cell::Cell::new(false),
            global: vec![],
            vhosts: vec![],
            load_prefork_too: false,
            own_process_group: true,
            env: vec![],
            cold: false,
        }
    }

    /// `apache2 -f <conf> -DFOREGROUND` with a clean environment (plus
    /// `env`), stderr into `stderr_path` (startup errors come before the
    /// error log is open), in a process group of its own unless
    /// `own_process_group` is false.
    fn httpd_command(&self, stderr_path: &Path) -> Command {
        let stderr = fs::File::create(stderr_path).unwrap();
        let mut cmd = Command::new("/usr/sbin/apache2");
        cmd.args(["-f", self.conf_path().to_str().unwrap(), "-DFOREGROUND"])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if self.own_process_group {
            cmd.process_group(0);
        }
        cmd
    }

    /// The port httpd will listen on; from now on it never changes.
    pub fn port(&self) -> u16 {
        self.port_pinned.set(true);
        self.port
    }

    /// Another port (not pinned: the harness may still move away from it).
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Setup {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Turns on the test-only hooks (`MPM_ITK_TEST_HOOKS`): returns the
    /// directory in which a file named after a hook point triggers it once.
    /// Mode 0777: workers and connection children (User) remove the files.
    pub fn with_test_hooks(self) -> (Setup, PathBuf) {
        let dir = self.dir.join("hooks");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let s = self.env("MPM_ITK_TEST_HOOKS", dir.display().to_string());
        (s, dir)
    }

    /// `LoadModule name_module mod_name.so` for each name, unless already
    /// loaded by the base configuration.
    pub fn modules(mut self, names: &[&str]) -> Setup {
        for m in names {
            self.global
                .push(format!("LoadModule {m}_module {MODULES}/mod_{m}.so"));
        }
        self
    }

    pub fn global(mut self, l: impl Into<String>) -> Setup {
        self.global.push(l.into());
        self
    }

    pub fn vhost(mut self, v: VHost) -> Setup {
        self.vhosts.push(v);
        self
    }

    /// A document root for `name` under the test dir (created, 0755).
    pub fn docroot(&self, name: &str) -> PathBuf {
        let d = self.dir.join("docs").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("httpd.conf")
    }

    pub fn write_conf(&self) {
        let d = self.dir.display();
        let mut c = format!(
            "ServerRoot {d}\nServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/run/httpd.pid\n\
             ErrorLog {d}/logs/error.log\nLogLevel info mpm_itk:debug\nDefaultRuntimeDir {d}/run\n\
             Mutex file:{d}/run default\nLoadModule mpm_itk_module {so}\n",
            port = self.port,
            so = module_path().display()
        );
        if self.load_prefork_too {
            c.push_str(&format!(
                "LoadModule mpm_prefork_module {MODULES}/mod_mpm_prefork.so\n"
            ));
        }
        for m in [
            "authz_core",
            "mime",
            "dir",
            "alias",
            "status",
            "cgi",
            "setenvif",
            "env",
            "unique_id",
        ] {
            c.push_str(&format!("LoadModule {m}_module {MODULES}/mod_{m}.so\n"));
        }
        c.push_str(&format!(
            "LoadModule php_module {MODULES}/libphp8.2.so\nTypesConfig /etc/mime.types\n\
             User www-data\nGroup www-data\nStartServers 2\nMinSpareServers 2\nMaxSpareServers 4\n\
             KeepAliveTimeout 5\nDocumentRoot {d}/docs\n\
             <FilesMatch \\.php$>\n  SetHandler application/x-httpd-php\n</FilesMatch>\n\
             <Location /server-status>\n  SetHandler server-status\n</Location>\n"
        ));
        if user_pools_mode() {
            // The whole suite again with UserPools On (run-tests' second
            // pass): room for user processes above MaxRequestWorkers, which
            // a test's own lines below may still change.
            c.push_str("UserPools On\nServerLimit 300\nMaxRequestWorkers 150\n");
        }
        for g in &self.global {
            c.push_str(g);
            c.push('\n');
        }
        for v in &self.vhosts {
            c.push_str(&format!(
                "<VirtualHost 127.0.0.1:{}>\n  ServerName {}\n",
                self.port, v.name
            ));
            for l in &v.lines {
                c.push_str(&format!("  {l}\n"));
            }
            c.push_str("</VirtualHost>\n");
        }
        fs::write(self.conf_path(), c).unwrap();
    }

    /// `apache2 -t`: (success, output).
    pub fn config_test(&self) -> (bool, String) {
        self.write_conf();
        let conf = self.conf_path();
        run("/usr/sbin/apache2", &["-t", "-f", conf.to_str().unwrap()])
    }

    pub fn start(self) -> Server {
        // SAFETY: a pre_exec that does nothing.
        unsafe { self.start_with(|| Ok(())) }
    }

    /// Starts httpd with `pre_exec` run in the child just before exec (to
    /// start it with fewer capabilities, as in a container) and waits until
    /// it answers.
    ///
    /// # Safety
    /// `pre_exec` runs between fork and exec: it must only make
    /// async-signal-safe calls (see `CommandExt::pre_exec`).
    pub unsafe fn start_with<F>(mut self, pre_exec: F) -> Server
    where
        F: FnMut() -> std::io::Result<()> + Clone + Send + Sync + 'static,
    {
        // The port was free when free_port() looked; another process may
        // have taken it since (an ephemeral port of some client). Then
        // httpd cannot bind: try again on a new port, when nothing but the
        // harness wrote the old one into the configuration.
        for attempt in 0..3 {
            self.write_conf();
            // startup errors (a port in use) go to stderr, before the
            // error log is open
            let stderr_path = self.dir.join("logs/stderr");
            let mut cmd = self.httpd_command(&stderr_path);
            // SAFETY: the caller guarantees that `pre_exec` is fork-safe.
            unsafe { cmd.pre_exec(pre_exec.clone()) };
            let mut child = cmd.spawn().expect("spawn apache2");
            let log_path = self.dir.join("logs/error.log");
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut exited = false;
            // (a configuration that expects a PROXY header on every
            // connection gets one)
            let proxy = if self
                .global
                .iter()
                .any(|g| g.eq_ignore_ascii_case("RemoteIPProxyProtocol On"))
            {
                format!("PROXY TCP4 127.0.0.1 127.0.0.1 40000 {}\r\n", self.port)
            } else {
                String::new()
            };
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                let answered = TcpStream::connect(("127.0.0.1", self.port))
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        write!(
                            s,
                            "{proxy}GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                        )?;
                        read_response(&mut s)
                    })
                    .is_ok_and(|r| r.status > 0);
                if answered {
                    let srv = Server {
                        setup: self,
                        child: Some(child),
                    };
                    srv.warm_user_pools();
                    return srv;
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let log = fs::read_to_string(&log_path).unwrap_or_default()
                + &fs::read_to_string(&stderr_path).unwrap_or_default();
            let port = format!(":{}", self.port);
            let retry = exited
                && log.contains("Address already in use")
                && !self.port_pinned.get()
                && !self.global.iter().any(|g| g.contains(&port))
                && attempt < 2;
            if !retry {
                // dropped while the panic unwinds: stops httpd, removes the
                // test directory
                let _srv = Server {
                    setup: self,
                    child: Some(child),
                };
                panic!("httpd did not answer; error log:\n{log}");
            }
            let _ = child.wait();
            let _ = fs::remove_file(&log_path);
            self.port = free_port();
        }
        unreachable!("the loop returns or panics")
    }
}

/// Sends `GET path` for `host` on a new connection and expects it to fail
/// closed: a 500 with `Connection: close`, and no answer to a second
/// request on the same connection. Returns the 500.
pub fn expect_failed_closed(srv: &Server, host: &str, path: &str) -> Response {
    let mut s = srv.connect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let r = read_response(&mut s).expect("an answer to the first request");
    assert_eq!(r.status, 500, "{}\n{}", r.body, srv.error_log());
    assert_eq!(
        r.headers.get("connection").map(String::as_str),
        Some("close"),
        "{:?}",
        r.headers
    );
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    assert!(
        read_response(&mut s).is_err(),
        "a second request on the failed connection was answered"
    );
    r
}

/// `GET path` for `host` on a new connection, in a thread of its own (for
/// a slow page the test acts on meanwhile); the thread ends with the
/// response.
pub fn get_in_background(
    port: u16,
    host: &str,
    path: &str,
) -> std::thread::JoinHandle<std::io::Result<Response>> {
    let (host, path) = (host.to_string(), path.to_string());
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let r = read_response(&mut s)?;
        // Until the server closes: it has then finished the request (its
        // access log line included), whichever process served it.
        let _ = s.read_to_end(&mut Vec::new());
        Ok(r)
    })
}

/// Polls `f` every 50 ms until it holds or `secs` pass; whether it held.
/// (Tests synchronise on what they wait for, never on a fixed sleep.)
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The connection children of `srv`'s workers right now.
/// The processes that serve connections: the workers' connection
/// children, and with UserPools the user processes.
pub fn connection_children(srv: &Server) -> Vec<i32> {
    let mut v: Vec<i32> = srv
        .worker_pids()
        .into_iter()
        .flat_map(children_of)
        .collect();
    v.extend(srv.user_processes());
    v
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Reads one response from `s` (Content-Length, chunked, or until close).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body: Vec<u8> = buf[head_end..].to_vec();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while body.len() < len {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
        body.truncate(len);
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        let mut out = Vec::new();
        loop {
            while !body.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut tmp)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&tmp[..n]);
            }
            let Some(i) = body.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&body[..i]).trim(), 16).unwrap_or(0);
            body.drain(..i + 2);
            if size == 0 {
                break;
            }
            while body.len() < size + 2 {
                let n = s.read(&mut tmp)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&tmp[..n]);
            }
            out.extend_from_slice(&body[..size.min(body.len())]);
            body.drain(..(size + 2).min(body.len()));
        }
        body = out;
    } else if status != 304 && status != 204 {
        loop {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A running httpd; stopped and cleaned up on drop.
pub struct Server {
    pub setup: Setup,
    child: Option<Child>,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.setup.port
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    pub fn try_get(&self, host: &str, path: &str) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port()))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        read_response(&mut s)
    }

    pub fn get(&self, host: &str, path: &str) -> Response {
        self.try_get(host, path)
            .unwrap_or_else(|e| panic!("GET {host}{path}: {e}\n{}", self.error_log()))
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.setup.dir.join("logs/error.log")).unwrap_or_default()
    }

    pub fn parent_pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// The workers: the parent's children but its user processes
    /// (UserPools).
    pub fn worker_pids(&self) -> Vec<i32> {
        children_of(self.parent_pid())
            .into_iter()
            .filter(|p| !is_user_process(*p))
            .collect()
    }

    /// With UserPools On (the suite's second pass), one request to every
    /// vhost and a wait for the user processes it asks for, so that the
    /// test's own requests are served by them rather than by the classic
    /// path that cold users take.
    fn warm_user_pools(&self) {
        let off = self
            .setup
            .global
            .iter()
            .any(|g| g.contains("UserPools Off"));
        if !user_pools_mode() || off || self.setup.cold {
            return;
        }
        let names: Vec<String> = self.setup.vhosts.iter().map(|v| v.name.clone()).collect();
        for name in names
            .iter()
            .chain(std::iter::once(&"localhost".to_string()))
        {
            let _ = self.try_get(name, "/");
        }
        wait_until(3, || !self.user_processes().is_empty());
    }

    /// The parent's user processes (UserPools).
    pub fn user_processes(&self) -> Vec<i32> {
        children_of(self.parent_pid())
            .into_iter()
            .filter(|p| is_user_process(*p))
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.parent_pid(), sig) };
    }

    /// Waits up to `secs` for the parent to exit; true if it did.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Pids of every process whose command line names this config.
    pub fn our_processes(&self) -> Vec<i32> {
        let conf = self.setup.conf_path().display().to_string();
        let mut v = vec![];
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) {
                if String::from_utf8_lossy(&cmd).contains(&conf) {
                    v.push(pid);
                }
            }
        }
        v
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // Not once it is reaped (wait_exit): the pid may be reused.
            if let Ok(None) = c.try_wait() {
                // SAFETY: signals our own child, not reaped yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if self.setup.own_process_group {
                    // SAFETY: the process group we created for httpd, whose
                    // leader is not reaped yet (so the group id is ours).
                    unsafe { libc::killpg(pid, libc::SIGKILL) };
                }
                // SIGKILL if it is still there (a no-op once it exited)
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for pid in self.our_processes() {
            // SAFETY: leftover processes of this test's httpd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("ITK_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.setup.dir);
        }
    }
}

pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut v = vec![];
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
            if after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
                == Some(ppid)
            {
                v.push(pid);
            }
        }
    }
    v
}

/// `n` threads each doing `m` requests; returns (status counts, errors).
pub fn load(port: u16, host: &str, path: &str, n: usize, m: usize) -> (HashMap<u16, usize>, usize) {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (host, path) = (host.to_string(), path.to_string());
            std::thread::spawn(move || {
                let mut counts: HashMap<u16, usize> = HashMap::new();
                let mut errors = 0;
                for _ in 0..m {
                    let r = (|| -> std::io::Result<Response> {
                        let mut s = TcpStream::connect(("127.0.0.1", port))?;
                        s.set_read_timeout(Some(Duration::from_secs(20)))?;
                        write!(
                            s,
                            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                        )?;
                        read_response(&mut s)
                    })();
                    match r {
                        Ok(r) => *counts.entry(r.status).or_default() += 1,
                        Err(_) => errors += 1,
                    }
                }
                (counts, errors)
            })
        })
        .collect();
    let mut total: HashMap<u16, usize> = HashMap::new();
    let mut errors = 0;
    for h in handles {
        let (c, e) = h.join().unwrap();
        for (k, v) in c {
            *total.entry(k).or_default() += v;
        }
        errors += e;
    }
    (total, errors)
}

/// The real uid the workers keep with EnableCapabilities On (README,
/// "Signals"): the first of 65533 down to 65000 without an account.
pub fn worker_real_uid() -> u32 {
    (65000..=65533)
        .rev()
        .find(|u| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*u))
                .ok()
                .flatten()
                .is_none()
        })
        .expect("a free uid in 65000-65533")
}

/// Docker's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT,
/// MKNOD, AUDIT_WRITE, SETFCAP): no CAP_SYS_ADMIN, CAP_SYS_NICE or
/// CAP_DAC_READ_SEARCH.
pub const DOCKER_DEFAULT_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// A pre_exec for `start_with`: drops every capability but `keep` from the
/// bounding set, so that root's exec of httpd gets only `keep`, as in a
/// container started with that set.
pub fn bounding_set_only(
    keep: &'static [u32],
) -> impl FnMut() -> std::io::Result<()> + Clone + Send + Sync {
    move || {
        for cap in 0..64u32 {
            if keep.contains(&cap) {
                continue;
            }
            // SAFETY: prctl with integer arguments, fork-safe. EINVAL: a
            // number past the kernel's last capability.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Builds C `source` into `dir/name.so` (readable by every user), for PHP
/// FFI pages that play the attacker with native code.
pub fn build_shared_object(dir: &Path, name: &str, source: &str) -> PathBuf {
    build_shared_object_with(dir, name, source, &[])
}

/// Like `build_shared_object`, with extra compiler flags.
pub fn build_shared_object_with(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    write(&src, source, 0o644);
    let out = Command::new("cc")
        .args(flags)
        .args(["-O1", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("cc (build-essential) is needed to build the attack library");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::set_permissions(&so, fs::Permissions::from_mode(0o755)).unwrap();
    so
}

pub fn write(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

/// PHP that prints the process identity as `uid euid gid egid | groups`.
pub const WHOAMI_PHP: &str = "<?php $g = posix_getgroups(); sort($g); echo posix_getuid(), ' ', posix_geteuid(), ' ', posix_getgid(), ' ', posix_getegid(), ' | ', implode(',', $g);";

/// A free id in `range` (no user and no group has it yet), starting at a
/// point that depends on the process and a counter so that parallel tests
/// rarely race for the same one (useradd/groupadd refuse a taken id anyway).
fn free_id_candidates(range: std::ops::RangeInclusive<u32>) -> impl Iterator<Item = u32> {
    let (lo, hi) = (*range.start(), *range.end());
    let len = hi - lo + 1;
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) as u32;
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(seq.wrapping_mul(104_729))
        % len;
    (0..len).map(move |i| lo + (start + i) % len).filter(|id| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*id))
            .ok()
            .flatten()
            .is_none()
            && nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*id))
                .ok()
                .flatten()
                .is_none()
    })
}

impl TestUser {
    /// A user whose uid and primary gid are the same free number in `range`
    /// (for LimitUIDRange / LimitGIDRange tests).
    pub fn create_in(range: std::ops::RangeInclusive<u32>) -> TestUser {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        let name = unique("itk");
        for id in free_id_candidates(range.clone()).take(50) {
            let ids = id.to_string();
            if !run("groupadd", &["-g", &ids, &name]).0 {
                continue;
            }
            let (ok, _) = run(
                "useradd",
                &[
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "-u",
                    &ids,
                    "-g",
                    &ids,
                    &name,
                ],
            );
            if ok {
                return TestUser {
                    name,
                    uid: id,
                    gid: id,
                    extra_group: None,
                };
            }
            run("groupdel", &[&name]);
        }
        panic!("no free uid/gid in {range:?} for a test user");
    }

    /// Makes the user a member of `g` (before the server reads its groups).
    pub fn join(&self, g: &TestGroup) {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        let (ok, out) = run("usermod", &["-aG", &g.name, &self.name]);
        assert!(ok, "usermod -aG {} {}: {out}", g.name, self.name);
    }
}

/// A group with a chosen gid range; removed on drop.
pub struct TestGroup {
    pub name: String,
    pub gid: u32,
}

impl TestGroup {
    pub fn create_in(range: std::ops::RangeInclusive<u32>) -> TestGroup {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        let name = unique("itkg");
        for id in free_id_candidates(range.clone()).take(50) {
            if run("groupadd", &["-g", &id.to_string(), &name]).0 {
                return TestGroup { name, gid: id };
            }
        }
        panic!("no free gid in {range:?} for a test group");
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _g = USERDB.lock().unwrap_or_else(|e| e.into_inner());
        run("groupdel", &[&self.name]);
    }
}

/// `/proc/<pid>/status`, empty if the process is gone.
pub fn proc_status(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The value of `field` in a `/proc/<pid>/status` text, whitespace
/// collapsed to single spaces ("Uid:\t33\t33\t33\t33" gives "33 33 33 33").
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

/// How a server that should refuse to start ended.
#[derive(Debug)]
pub struct FailedStart {
    /// The exit status, None if it was still running after the wait.
    pub status: Option<std::process::ExitStatus>,
    /// Whether it answered an HTTP request while we waited.
    pub answered: bool,
    pub stderr: String,
    pub error_log: String,
    /// Processes of this configuration still alive after the parent exited
    /// (killed afterwards).
    pub leftovers: Vec<i32>,
}

impl Setup {
    /// Starts httpd in the foreground with `pre_exec` run in the child just
    /// before exec (to take seccomp or capabilities away), waits up to
    /// `secs` for it to exit, then kills whatever is left and removes the
    /// test directory.
    ///
    /// # Safety
    /// `pre_exec` runs between fork and exec: it must only make
    /// async-signal-safe calls (see `CommandExt::pre_exec`).
    pub unsafe fn start_expecting_failure<F>(self, secs: u64, pre_exec: F) -> FailedStart
    where
        F: FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    {
        self.write_conf();
        let stderr_path = self.dir.join("logs/stderr");
        let mut cmd = self.httpd_command(&stderr_path);
        // SAFETY: the caller guarantees that `pre_exec` is fork-safe.
        unsafe { cmd.pre_exec(pre_exec) };
        let child = cmd.spawn().expect("spawn apache2");
        let mut srv = Server {
            setup: self,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut answered = false;
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(Ok(Some(st))) = srv.child.as_mut().map(|c| c.try_wait()) {
                status = Some(st);
                break;
            }
            if !answered {
                answered = srv.try_get("localhost", "/").is_ok_and(|r| r.status > 0);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if status.is_some() {
            // the parent is gone: give its workers a moment to notice
            std::thread::sleep(Duration::from_millis(500));
        }
        let leftovers = srv.our_processes();
        let out = FailedStart {
            status,
            answered,
            stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
            error_log: srv.error_log(),
            leftovers,
        };
        drop(srv); // kills what is left, removes the directory
        out
    }
}

/// The inode of the server side of our connection `s`, from /proc/net/tcp.
pub fn server_socket_inode(s: &std::net::TcpStream) -> Option<String> {
    let (ours, theirs) = (s.local_addr().ok()?.port(), s.peer_addr().ok()?.port());
    let local = format!("0100007F:{theirs:04X}");
    let remote = format!("0100007F:{ours:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 9 && f[1] == local && f[2] == remote)
        .map(|f| f[9].to_string())
}

pub fn holds_socket(pid: i32, inode: &str) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
    })
}
