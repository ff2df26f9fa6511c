#!/usr/bin/python3
"""Side-by-side benchmark of mpm-itk in Rust, the C mpm-itk and prefork.

Started by bench/run (which installs what is needed and builds the module).
Three httpd instances run at once on 127.0.0.1, each on its own port, with
the same httpd binary, the same modules (mod_php included), the same three
vhosts owned by three users and the same prefork-style tuning:

  rust     this module (LoadModule mpm_itk_module target/release/...)
  pools    this module with UserPools On (per-user persistent processes)
  c-itk    Debian's prefork + libapache2-mpm-itk
  prefork  stock prefork, no AssignUserID (the ceiling)

Every row of the table (workload x keep-alive x connections) is measured
interleaved (rust, c-itk, prefork, rust, c-itk, prefork, ...) and the
median of the runs is reported. Only the idle setups' sleeping processes
share the machine with the one under load.
"""

import argparse
import datetime
import json
import os
import platform
import pwd
import grp
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MODULES = "/usr/lib/apache2/modules"
HERE = os.path.dirname(os.path.abspath(__file__))
USERS = ["itkbench-a", "itkbench-b", "itkbench-c"]
VHOSTS = ["a.bench.test", "b.bench.test", "c.bench.test"]
SETUPS = ["rust", "pools", "c-itk", "prefork"]
# PHP-FPM with one pool per user behind the event MPM (static files served
# by httpd as www-data): what shared hosts pick instead of mpm-itk. Only
# where php-fpm is installed.
FPM = next((os.path.join("/usr/sbin", f) for f in sorted(os.listdir("/usr/sbin"))
            if f.startswith("php-fpm")), None) if os.path.isdir("/usr/sbin") else None
if FPM:
    SETUPS.append("fpm")

# --modset: the thread-starting modules of Apache's own test suite, loaded
# into every setup: mod_http2 (a worker thread per child) and a
# health-checked balancer (mod_proxy_hcheck's thread pool through
# mod_watchdog). Every connection child of this module runs their
# child_init; prefork and the C module run it once per worker.
MODSET_MODULES = ["http2", "proxy", "proxy_http", "proxy_balancer", "slotmem_shm",
                  "lbmethod_byrequests", "proxy_hcheck"]

WORKLOADS = {
    "1k": ("/1k.html", "1 KiB static"),
    "100k": ("/100k.html", "100 KiB static"),
    "php": ("/page.php", "PHP page"),
}

# --tls: HTTPS rows (TLS 1.3, 1 KiB static, a.bench.test under its user).
# Each is a listener of its own in every setup: the certificate's key type,
# and whether a client can resume (session tickets on; the server's session
# cache is off, so with tickets off every connection is a full handshake).
TLS_WORKLOADS = {
    "ec-full": ("/1k.html", "HTTPS ECDSA P-256, full handshakes", "ec", False),
    "ec-resume": ("/1k.html", "HTTPS ECDSA P-256, resumed", "ec", True),
    "rsa-full": ("/1k.html", "HTTPS RSA-2048, full handshakes", "rsa", False),
    "rsa-resume": ("/1k.html", "HTTPS RSA-2048, resumed", "rsa", True),
}
TLS_VHOST = VHOSTS[0]

PHP_PAGE = """<?php
$items = [];
for ($i = 0; $i < 50; $i++) { $items[] = "item " . $i; }
?><!DOCTYPE html>
<html><head><title>bench</title></head><body>
<p>Served by uid <?= posix_geteuid() ?> (<?= htmlspecialchars($_SERVER['SERVER_NAME']) ?>)</p>
<ul><?php foreach ($items as $it) { echo "<li>", htmlspecialchars($it), "</li>\\n"; } ?></ul>
</body></html>
"""

# Per-thread Host header (each wrk thread's connections talk to one vhost,
# as browsers do), and a JSON summary on stdout at the end.
WRK_LUA = r"""
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("vhost", VHOSTS[(counter - 1) % #VHOSTS + 1])
  table.insert(threads, thread)
end
function init(args)
  wrk.headers["Host"] = vhost
  if os.getenv("ITK_BENCH_CLOSE") == "1" then
    wrk.headers["Connection"] = "close"
  end
end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def many_users(n):
    return ["itkbm%03d" % i for i in range(n)]


def many_vhost(user):
    return "%s.bench.test" % user


# --many: every request to a random one of the many vhosts.
MANY_LUA = r"""
function request()
  local h = {["Host"] = MANY[math.random(#MANY)]}
  if os.getenv("ITK_BENCH_CLOSE") == "1" then h["Connection"] = "close" end
  return wrk.format(nil, nil, h)
end
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def php_module():
    for name in sorted(os.listdir(MODULES), reverse=True):
        if name.startswith("libphp") and name.endswith(".so"):
            return os.path.join(MODULES, name)
    sys.exit("bench: no mod_php in %s (install libapache2-mod-php)" % MODULES)


class Users:
    """System users for the vhosts (the three, plus the --many ones);
    removed at the end."""

    def __init__(self, names=USERS):
        self.created = []
        for u in names:
            try:
                pwd.getpwnam(u)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", "--user-group",
                     "--shell", "/usr/sbin/nologin", "--comment", "mpm-itk bench", u],
                    check=True)
                self.created.append(u)

    def ids(self, u):
        p = pwd.getpwnam(u)
        return p.pw_uid, p.pw_gid

    def remove(self):
        for u in self.created:
            subprocess.run(["userdel", u], check=False)
            try:
                grp.getgrnam(u)
                subprocess.run(["groupdel", u], check=False)
            except KeyError:
                pass


class Httpd:
    def __init__(self, name, workdir, module, users, tuning, modset=False, many=(), tls=False):
        self.name = name
        self.modset = modset
        self.many = list(many)
        self.dir = os.path.join(workdir, name)
        self.port = free_port()
        self.tls_ports = {wl: free_port() for wl in TLS_WORKLOADS} if tls else {}
        self.proc = None
        self.cgroup = None
        for sub in ("logs", "run"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(os.path.join(self.dir, "run"), 0o755)
        self.conf = os.path.join(self.dir, "httpd.conf")
        with open(self.conf, "w") as f:
            f.write(self.config(workdir, module, users, tuning))

    def config(self, workdir, module, users, tuning):
        d = self.dir
        c = [
            "ServerRoot %s" % d,
            "ServerName localhost",
            "Listen 127.0.0.1:%d" % self.port,
            "PidFile %s/run/httpd.pid" % d,
            "DefaultRuntimeDir %s/run" % d,
            "Mutex file:%s/run default" % d,
            "ErrorLog %s/logs/error.log" % d,
            "LogLevel warn",
        ]
        if self.name.startswith("rust") or self.name == "pools":
            c.append("LoadModule mpm_itk_module %s" % module)
        elif self.name == "fpm":
            c.append("LoadModule mpm_event_module %s/mod_mpm_event.so" % MODULES)
            for m in ("proxy", "proxy_fcgi"):
                c.append("LoadModule %s_module %s/mod_%s.so" % (m, MODULES, m))
        else:
            c.append("LoadModule mpm_prefork_module %s/mod_mpm_prefork.so" % MODULES)
        if self.name == "pools" and self.many:
            # Room for a few user processes of every user.
            c += ["UserPools On", "ServerLimit %d" % (tuning["max_workers"] + 3 * len(self.many) + 100),
                  "UserPoolMaxProcesses 2"]
        elif self.name == "pools":
            # Room for user processes above MaxRequestWorkers, up to the
            # most a user may have (64): the HTTPS rows put every
            # connection on one user's vhost (prefork has 150 workers for it).
            c += ["UserPools On", "ServerLimit 256", "UserPoolMaxProcesses 64"]
        if self.name == "c-itk":
            c.append("LoadModule mpm_itk_module %s/mpm_itk.so" % MODULES)
        for m in ("authz_core", "authz_host", "mime", "dir", "alias", "setenvif", "status"):
            c.append("LoadModule %s_module %s/mod_%s.so" % (m, MODULES, m))
        if self.modset:
            for m in MODSET_MODULES:
                c.append("LoadModule %s_module %s/mod_%s.so" % (m, MODULES, m))
            c += [
                "Protocols h2 h2c http/1.1",
                "<Proxy balancer://hc>",
                "  BalancerMember http://127.0.0.1:%d hcmethod=GET hcuri=/1k.html hcinterval=30"
                % self.port,
                "</Proxy>",
            ]
        if self.name != "fpm":
            c += [
                "LoadModule php_module %s" % php_module(),
                # Debian's mpm_prefork.conf defaults.
                "StartServers %d" % tuning["start"],
                "MinSpareServers %d" % tuning["min_spare"],
                "MaxSpareServers %d" % tuning["max_spare"],
            ]
        else:
            # Debian's mpm_event.conf defaults.
            c += ["StartServers 2", "MinSpareThreads 25", "MaxSpareThreads 75",
                  "ThreadsPerChild 25"]
        c += [
            "TypesConfig /etc/mime.types",
            "User www-data",
            "Group www-data",
            "MaxRequestWorkers %d" % tuning["max_workers"],
            "MaxConnectionsPerChild 0",
            "Timeout 300",
            "KeepAlive On",
            "MaxKeepAliveRequests 100",
            "KeepAliveTimeout 5",
            'LogFormat "%v:%p %h %l %u %t \\"%r\\" %>s %O" vhost_combined',
            "CustomLog %s/logs/access.log vhost_combined" % d,
            # The module's pre-0.2 exit path (destroy pchild: mod_php's
            # engine shutdown in every connection child) is what it still
            # does with BufferedLogs On; --breakdown measures it that way.
            "BufferedLogs %s" % ("On" if self.name == "rust-full-exit" else "Off"),
            "DirectoryIndex index.html",
        ]
        if self.name != "fpm":
            c += [
                "<FilesMatch \\.php$>",
                "  SetHandler application/x-httpd-php",
                "</FilesMatch>",
            ]
        c += [
            "<Directory %s>" % workdir,
            "  Require all granted",
            "  AllowOverride None",
            "</Directory>",
            "DocumentRoot %s/docroot-%s" % (workdir, USERS[0]),
        ]
        for u, v in list(zip(USERS, VHOSTS)) + [(u, many_vhost(u)) for u in self.many]:
            c += [
                "<VirtualHost 127.0.0.1:%d>" % self.port,
                "  ServerName %s" % v,
                "  DocumentRoot %s/docroot-%s" % (workdir, u),
            ]
            if self.name == "fpm":
                c += ['  <FilesMatch \\.php$>',
                      '    SetHandler "proxy:unix:%s|fcgi://localhost"' % self.fpm_socket(u),
                      '  </FilesMatch>']
            elif self.name != "prefork":
                c.append("  AssignUserID %s %s" % (u, u))

            c.append("</VirtualHost>")
        if self.tls_ports:
            c += [
                "LoadModule socache_shmcb_module %s/mod_socache_shmcb.so" % MODULES,
                "LoadModule ssl_module %s/mod_ssl.so" % MODULES,
                "SSLSessionCache none",
                'LogFormat "%{SSL_SESSION_RESUMED}x %{SSL_PROTOCOL}x" tls',
            ]
            for wl, port in sorted(self.tls_ports.items()):
                _, _, key, resume = TLS_WORKLOADS[wl]
                c += [
                    "Listen 127.0.0.1:%d https" % port,
                    "<VirtualHost 127.0.0.1:%d>" % port,
                    "  ServerName %s" % TLS_VHOST,
                    "  DocumentRoot %s/docroot-%s" % (workdir, USERS[0]),
                    "  SSLEngine on",
                    "  SSLProtocol -all +TLSv1.3",
                    "  SSLCertificateFile %s/tls-%s.crt" % (workdir, key),
                    "  SSLCertificateKeyFile %s/tls-%s.key" % (workdir, key),
                    "  SSLSessionTickets %s" % ("on" if resume else "off"),
                    "  CustomLog %s/logs/tls-%s.log tls" % (d, wl),
                ]
                if self.name not in ("prefork", "fpm"):
                    c.append("  AssignUserID %s %s" % (USERS[0], USERS[0]))
                c.append("</VirtualHost>")
        return "\n".join(c) + "\n"

    def resumed(self, wl):
        """(connections, resumed ones) in the TLS log of workload wl so far."""
        try:
            with open(os.path.join(self.dir, "logs", "tls-%s.log" % wl)) as f:
                lines = f.read().splitlines()
        except OSError:
            return 0, 0
        return len(lines), sum(1 for l in lines if l.startswith("Resumed"))

    def fpm_socket(self, user):
        return os.path.join(self.dir, "run", "fpm-%s.sock" % user)

    def fpm_config(self):
        """php-fpm: one pool per user, as shared hosts set it up."""
        users = USERS + self.many
        c = ["[global]", "pid = %s/run/php-fpm.pid" % self.dir,
             "error_log = %s/logs/php-fpm.log" % self.dir, "daemonize = no"]
        per_user = 2 if self.many else 16
        for u in users:
            c += ["[%s]" % u, "user = %s" % u, "group = %s" % u,
                  "listen = %s" % self.fpm_socket(u), "listen.owner = www-data",
                  "listen.group = www-data", "listen.mode = 0660", "pm = dynamic",
                  "pm.max_children = %d" % per_user, "pm.start_servers = %d" % min(2, per_user),
                  "pm.min_spare_servers = 1", "pm.max_spare_servers = %d" % min(8, per_user)]
        path = os.path.join(self.dir, "php-fpm.conf")
        with open(path, "w") as f:
            f.write("\n".join(c) + "\n")
        return path

    def start(self):
        cg = "/sys/fs/cgroup/cpuacct"
        if os.path.isdir(cg) and os.access(cg, os.W_OK):
            self.cgroup = os.path.join(cg, "itk-bench-%d-%s" % (os.getpid(), self.name))
            os.makedirs(self.cgroup, exist_ok=True)
        cgroup = self.cgroup

        def enter():
            os.setpgid(0, 0)
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        self.fpm = None
        if self.name == "fpm":
            # in the same cgroup: its CPU counts with the httpd tree's
            self.fpm = subprocess.Popen(
                [FPM, "-F", "-y", self.fpm_config()], env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(self.dir, "logs", "fpm-stderr"), "w"),
                preexec_fn=enter)
            deadline = time.time() + 10
            while not all(os.path.exists(self.fpm_socket(u)) for u in USERS):
                if time.time() > deadline or self.fpm.poll() is not None:
                    sys.exit("bench: php-fpm did not start:\n%s" % self.logs())
                time.sleep(0.1)
        # Experiment switches of the module under study, passed through.
        env.update({k: v for k, v in os.environ.items() if k.startswith("ITK_EXP_")})
        self.proc = subprocess.Popen(
            ["/usr/sbin/apache2", "-f", self.conf, "-DFOREGROUND"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "logs", "stderr"), "w"),
            preexec_fn=enter)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit("bench: %s httpd exited at start:\n%s" % (self.name, self.logs()))
            try:
                self.get(VHOSTS[0], "/1k.html")
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("bench: %s httpd did not answer:\n%s" % (self.name, self.logs()))

    def logs(self):
        text = ""
        for name in ("stderr", "error.log"):
            try:
                with open(os.path.join(self.dir, "logs", name)) as f:
                    text += f.read()[-3000:]
            except OSError:
                pass
        return text

    def get(self, host, path):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                     headers={"Host": host})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def stop(self):
        fpm = getattr(self, "fpm", None)
        if fpm and fpm.poll() is None:
            fpm.send_signal(signal.SIGQUIT)
            try:
                fpm.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(fpm.pid, signal.SIGKILL)
                fpm.wait()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.cgroup:
            # Stragglers would keep the cgroup busy.
            for _ in range(50):
                try:
                    os.rmdir(self.cgroup)
                    break
                except OSError:
                    time.sleep(0.1)

    def tree(self):
        """Pids of the httpd parent and all its descendants."""
        parent = self.proc.pid
        kids = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    s = f.read()
            except OSError:
                continue
            ppid = int(s[s.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        fpm = getattr(self, "fpm", None)
        out, todo = [], [parent] + ([fpm.pid] if fpm else [])
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(kids.get(p, []))
        return out

    def cpu_ns(self):
        """CPU time used by the whole tree so far (cgroup, or /proc sums)."""
        if self.cgroup:
            with open(os.path.join(self.cgroup, "cpuacct.usage")) as f:
                return int(f.read())
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for p in self.tree():
            try:
                with open("/proc/%d/stat" % p) as f:
                    s = f.read()
            except OSError:
                continue
            fields = s[s.rindex(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])
        return total * 1_000_000_000 // tick

    def pss_kib(self):
        total = 0
        for p in self.tree():
            try:
                with open("/proc/%d/smaps_rollup" % p) as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                continue
        return total


class Sampler(threading.Thread):
    """Process count of the tree every 0.2 s, PSS a few times per run."""

    def __init__(self, httpd, duration):
        super().__init__(daemon=True)
        self.httpd = httpd
        self.duration = duration
        self.stop_ev = threading.Event()
        self.max_procs = 0
        self.pss = []

    def run(self):
        start = time.time()
        pss_at = [start + self.duration * f for f in (0.3, 0.6, 0.9)]
        while not self.stop_ev.wait(0.2):
            self.max_procs = max(self.max_procs, len(self.httpd.tree()))
            if pss_at and time.time() >= pss_at[0]:
                pss_at.pop(0)
                self.pss.append(self.httpd.pss_kib())


def run_wrk(httpd, path, close, conns, duration, lua, tls=None):
    """wrk against httpd (plain HTTP; or, with tls = (workload, hosts
    file), HTTPS to TLS_VHOST, which wrk resolves through that hosts file in
    a mount namespace of its own, so its SNI names the vhost)."""
    threads = 3 if conns >= 3 else conns
    env = dict(os.environ, ITK_BENCH_CLOSE="1" if close else "0")
    sampler = Sampler(httpd, duration)
    cpu0 = httpd.cpu_ns()
    if tls:
        wl, hosts = tls
        url = "https://%s:%d%s" % (TLS_VHOST, httpd.tls_ports[wl], path)
        prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount --bind "$0" /etc/hosts && exec "$@"', hosts]
        seen0 = httpd.resumed(wl)
    else:
        url = "http://127.0.0.1:%d%s" % (httpd.port, path)
        prefix = []
    sampler.start()
    r = subprocess.run(
        prefix + ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % duration, "--timeout", "10s",
                  "--latency", "-s", lua, url],
        env=env, capture_output=True, text=True)
    sampler.stop_ev.set()
    sampler.join()
    cpu1 = httpd.cpu_ns()
    line = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not line:
        sys.exit("bench: wrk failed against %s:\n%s%s" % (httpd.name, r.stdout, r.stderr))
    s = json.loads(line[-1])
    secs = s["duration_us"] / 1e6
    n = max(s["requests"], 1)
    resumed_pct = 0.0
    if tls:
        time.sleep(0.3)  # the last lines reach the log
        seen1 = httpd.resumed(tls[0])
        total = seen1[0] - seen0[0]
        resumed_pct = 100.0 * (seen1[1] - seen0[1]) / total if total else 0.0
    return {
        "rps": s["requests"] / secs,
        "p50_ms": s["p50_us"] / 1000,
        "p99_ms": s["p99_us"] / 1000,
        "errors": s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"],
        "cpu_us": (cpu1 - cpu0) / 1000 / n,
        "procs": sampler.max_procs,
        "pss_mib": (statistics.median(sampler.pss) / 1024) if sampler.pss else 0.0,
        "resumed_pct": resumed_pct,
    }


def median_of(runs):
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def prepare_docroots(workdir, users, names=USERS):
    for u in names:
        uid, gid = users.ids(u)
        d = os.path.join(workdir, "docroot-%s" % u)
        os.makedirs(d, exist_ok=True)
        files = {
            "1k.html": ("x" * 1023) + "\n",
            "100k.html": ("y" * 1023 + "\n") * 100,
            "page.php": PHP_PAGE,
            "index.html": "bench\n",
        }
        for name, content in files.items():
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write(content)
            os.chown(p, uid, gid)
            os.chmod(p, 0o644)
        os.chown(d, uid, gid)
        os.chmod(d, 0o755)
    os.chmod(workdir, 0o755)


def fmt_ratio(a, b):
    return "%.2fx" % (a / b) if b else "n/a"


def row_name(wl, close):
    if wl in TLS_WORKLOADS:
        label = TLS_WORKLOADS[wl][1]
        if not close:
            # one handshake per connection: resumption does not matter
            label = label.split(",")[0]
        return "%s, %s" % (label, "Connection: close" if close else "keep-alive")
    return "%s, %s" % (WORKLOADS[wl][1], "Connection: close" if close else "keep-alive")


def per_row(results, rows):
    """(row name, connections, {setup: medians}) for each table row."""
    for (wl, close, conns) in rows:
        yield row_name(wl, close), conns, {s: results[(wl, close, conns, s)] for s in SETUPS}


def make_certs(workdir):
    """The TLS rows' certificates for TLS_VHOST (ECDSA P-256, RSA-2048),
    and a hosts file that names it for wrk."""
    for key, newkey in (("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                        ("rsa", ["-newkey", "rsa:2048"])):
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "2"] + newkey +
                       ["-subj", "/CN=%s" % TLS_VHOST, "-addext",
                        "subjectAltName=DNS:%s" % TLS_VHOST,
                        "-keyout", os.path.join(workdir, "tls-%s.key" % key),
                        "-out", os.path.join(workdir, "tls-%s.crt" % key)],
                       check=True, capture_output=True)
    hosts = os.path.join(workdir, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost %s\n" % TLS_VHOST)
    return hosts


def table(results, rows, meta):
    out = []
    out.append("# Benchmark results\n")
    out.append("Produced by `bench/run%s%s%s` on %s. %s\n" % (
        " --quick" if meta["quick"] else "", " --modset" if meta["modset"] else "",
        " --tls" if meta.get("tls") else "",
        meta["date"], meta["machine"]))
    if meta["modset"]:
        out.append("With `--modset`, every setup also loads %s, with `Protocols h2 h2c "
                   "http/1.1` and a balancer health-checked every 30 s: modules that start "
                   "threads in child_init, which this module runs in every connection child.\n"
                   % ", ".join("mod_" + m for m in MODSET_MODULES))
    out.append("Each cell is the median of %d interleaved runs of %d s "
               "(wrk, %s). Setups: **rust** = this module; **pools** = this module with "
               "`UserPools On` (warm: user processes started before the runs); **fpm** = event MPM with "
               "PHP-FPM, one pool per user (static files as www-data; only where php-fpm is installed); **c-itk** = Debian's prefork + "
               "libapache2-mpm-itk %s; **prefork** = stock prefork without uid switching. "
               "Same httpd (%s), same modules (mod_php %s), three vhosts under three users "
               "(prefork: all as www-data), StartServers %d, MinSpare %d, MaxSpare %d, "
               "MaxRequestWorkers %d, KeepAlive On with MaxKeepAliveRequests 100.\n" % (
                   meta["runs"], meta["duration"], meta["wrk"], meta["citk"], meta["httpd"],
                   meta["php"], meta["tuning"]["start"], meta["tuning"]["min_spare"],
                   meta["tuning"]["max_spare"], meta["tuning"]["max_workers"]))
    ratios = [("rust", "c-itk"), ("rust", "prefork"), ("pools", "prefork"), ("pools", "c-itk")]
    if "fpm" in SETUPS:
        ratios.append(("pools", "fpm"))
    names = " / ".join(SETUPS)
    out.append("## Throughput and latency\n")
    out.append("| workload | conn. | %s | %s | p50 ms %s | p99 ms %s | errors %s |" % (
        " | ".join("%s req/s" % s for s in SETUPS),
        " | ".join("**%s/%s**" % r for r in ratios), names, names, names))
    out.append("| --- | ---: |%s%s ---: | ---: | ---: |" % (
        " ---: |" * len(SETUPS), " ---: |" * len(ratios)))
    for name, conns, r in per_row(results, rows):
        out.append("| %s | %d | %s | %s | %s | %s | %s |" % (
            name, conns,
            " | ".join("%.0f" % r[s]["rps"] for s in SETUPS),
            " | ".join(fmt_ratio(r[a]["rps"], r[b]["rps"]) for a, b in ratios),
            " / ".join("%.2f" % r[s]["p50_ms"] for s in SETUPS),
            " / ".join("%.1f" % r[s]["p99_ms"] for s in SETUPS),
            " / ".join("%d" % r[s]["errors"] for s in SETUPS)))
    out.append("")
    out.append("## Resources\n")
    out.append("CPU: CPU time of the whole httpd tree (parent, workers, connection children, "
               "user processes) per request, from %s. Processes: the largest number of "
               "processes in the tree, sampled every 0.2 s. PSS: proportional set size of the "
               "tree, median of three samples during the run.\n" % meta["cpu_source"])
    out.append("| workload | conn. | CPU µs/req %s | rust/c-itk CPU | pools/prefork CPU "
               "| max processes %s | PSS MiB %s | rust/c-itk PSS | pools/prefork PSS |"
               % (names, names, names))
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, conns, r in per_row(results, rows):
        out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            name, conns,
            " / ".join("%.0f" % r[s]["cpu_us"] for s in SETUPS),
            fmt_ratio(r["rust"]["cpu_us"], r["c-itk"]["cpu_us"]),
            fmt_ratio(r["pools"]["cpu_us"], r["prefork"]["cpu_us"]),
            " / ".join("%d" % r[s]["procs"] for s in SETUPS),
            " / ".join("%.0f" % r[s]["pss_mib"] for s in SETUPS),
            fmt_ratio(r["rust"]["pss_mib"], r["c-itk"]["pss_mib"]),
            fmt_ratio(r["pools"]["pss_mib"], r["prefork"]["pss_mib"])))
    out.append("")
    tls_rows = [x for x in rows if x[0] in TLS_WORKLOADS and x[1]]
    if tls_rows:
        out.append("## TLS resumption\n")
        out.append("HTTPS rows: TLS 1.3, `SSLSessionCache none`; \"resumed\" rows have "
                   "`SSLSessionTickets on` (wrk offers the session of its previous connection), "
                   "\"full handshakes\" rows `off`. The share of connections mod_ssl logged as "
                   "resumed (`%{SSL_SESSION_RESUMED}x`):\n")
        out.append("| workload | conn. | resumed %% %s |" % names)
        out.append("| --- | ---: | ---: |")
        for (wl, close, conns) in tls_rows:
            out.append("| %s | %d | %s |" % (
                row_name(wl, close), conns,
                " / ".join("%.0f" % results[(wl, close, conns, x)]["resumed_pct"]
                           for x in SETUPS)))
        out.append("")
    return "\n".join(out)


TLS_MARK = "<!-- HTTPS rows: bench/run --tls -->"


def splice_tls(text):
    """RESULTS.md gets the HTTPS tables of a --tls run as its last section
    (replacing the previous one), so that one file has every row."""
    main = os.path.join(HERE, "RESULTS.md")
    try:
        with open(main) as f:
            old = f.read()
    except OSError:
        return
    body = old.split(TLS_MARK)[0].rstrip("\n")
    tls = text.split("\n", 2)[2]  # without the title line
    tls = "\n".join(("#" + l) if l.startswith("## ") else l for l in tls.splitlines())
    with open(main, "w") as f:
        f.write("%s\n\n%s\n## HTTPS\n\nFrom `bench/run --tls` (RESULTS-tls.md):\n%s\n" % (
            body, TLS_MARK, tls))
    log("bench: HTTPS rows spliced into %s" % main)


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


# perf categories of one connection: (label, symbols whose "children" share
# is summed; the first matching symbol wins, in this order).
CATEGORIES = [
    ("fork (clone: copy page tables, VMAs)", ["copy_process"]),
    ("exit (unmap, free page tables)", ["do_exit"]),
    ("page faults (COW, code re-faulted after fork)", ["asm_exc_page_fault"]),
    ("reap (wait4)", ["__x64_sys_wait4"]),
    ("uid switch (setgroups, setresuid, capset)", ["__x64_sys_setgroups", "__x64_sys_setresuid",
                                                   "__x64_sys_setresgid", "__x64_sys_capset",
                                                   "__x64_sys_capget"]),
    ("signal setup (rt_sigaction)", ["__x64_sys_rt_sigaction"]),
]


def breakdown(servers, out_path, n):
    """perf stat and perf record of n Connection: close requests per setup."""
    if not shutil.which("perf") or not shutil.which("ab"):
        sys.exit("bench: --breakdown needs perf (linux-perf) and ab (apache2-utils)")
    rows = []
    for h in servers:
        url = "http://127.0.0.1:%d/1k.html" % h.port
        ab = ["ab", "-q", "-n", str(n), "-c", "8", "-H", "Host: %s" % VHOSTS[1], url]
        stat = subprocess.run(["perf", "stat", "-a", "-x", ",", "-e",
                               "task-clock,page-faults,context-switches", "--"] + ab,
                              capture_output=True, text=True)
        vals = {}
        for line in stat.stderr.splitlines():
            f = line.split(",")
            if len(f) > 3 and f[0].replace(".", "").isdigit():
                vals[f[2]] = float(f[0])
        rps = 0.0
        for line in stat.stdout.splitlines():
            if line.startswith("Requests per second"):
                rps = float(line.split()[3])
        data = os.path.join(os.path.dirname(h.dir), "perf-%s.data" % h.name)
        subprocess.run(["perf", "record", "-q", "-a", "-g", "-F", "2000", "-o", data, "--"] + ab,
                       capture_output=True, text=True)
        rep = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "sym",
                              "-g", "none", "--stdio"], capture_output=True, text=True).stdout
        share = {}
        for line in rep.splitlines():
            f = line.split()
            if len(f) >= 4 and f[0].endswith("%") and f[2] in ("[k]", "[.]"):
                share[f[3]] = float(f[0].rstrip("%"))
        busy = 100.0 - share.get("pv_native_safe_halt", 0.0) - share.get("default_idle", 0.0)
        cpu_us = vals.get("task-clock", 0.0) * 1000 / n  # msec -> usec per connection
        cats = []
        for label, syms in CATEGORIES:
            pct = sum(share.get(x, 0.0) for x in syms)
            cats.append((label, cpu_us * pct / busy if busy > 0 else 0.0))
        rows.append((h.name, rps, cpu_us, vals.get("page-faults", 0.0) / n,
                     vals.get("context-switches", 0.0) / n, cats))
        log("%-15s %7.0f conn/s  %6.0f us CPU/conn  %5.1f faults/conn" % rows[-1][:4])
    out = ["# Cost of one connection\n",
           "Produced by `bench/run --breakdown` on %s: `ab -n %d -c 8` (one request per "
           "connection, 1 KiB static file) against each setup, under `perf stat -a` (CPU "
           "of the whole machine, ab included, per connection) and `perf record -a -g` "
           "(the share of each kernel path, turned into microseconds per connection).\n"
           % (datetime.date.today().isoformat(), n),
           "| setup | conn/s | CPU µs/conn | page faults/conn | context switches/conn |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for name, rps, cpu, pf, cs, _ in rows:
        out.append("| %s | %.0f | %.0f | %.1f | %.1f |" % (name, rps, cpu, pf, cs))
    out += ["", "Where the CPU time goes (µs per connection; the rest is the request itself, "
            "the network and ab):\n",
            "| path | " + " | ".join(r[0] for r in rows) + " |",
            "| --- |" + " ---: |" * len(rows)]
    for i, (label, _) in enumerate(CATEGORIES):
        out.append("| %s | %s |" % (label, " | ".join("%.0f" % r[5][i][1] for r in rows)))
    text = "\n".join(out) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    print(text)
    log("bench: wrote %s" % out_path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--duration", type=int)
    ap.add_argument("--runs", type=int)
    ap.add_argument("--out")
    ap.add_argument("--only", help="comma-separated workloads (1k,100k,php)")
    ap.add_argument("--conns", help="comma-separated connection counts (default 16,64)")
    ap.add_argument("--ka", choices=["on", "off", "both"], default="both")
    ap.add_argument("--modset", action="store_true",
                    help="load the thread-starting modules of Apache's test suite into every "
                         "setup (into bench/RESULTS-modset.md)")
    ap.add_argument("--breakdown", action="store_true",
                    help="perf stat/record one connection's cost per setup, into bench/BREAKDOWN.md")
    ap.add_argument("--many", type=int, metavar="N",
                    help="N vhosts under N users, requests spread over them: req/s, the largest "
                         "process count and PSS per setup (into bench/RESULTS-many.md)")
    ap.add_argument("--tls", action="store_true",
                    help="HTTPS rows only (TLS 1.3, ECDSA and RSA certificates, full handshakes, "
                         "resumed, keep-alive), into bench/RESULTS-tls.md")
    ap.add_argument("--serve", action="store_true",
                    help="start the three setups, print their ports and wait (for profiling)")
    args = ap.parse_args()
    args.module = os.path.abspath(args.module)
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (starts httpd, creates users)")
    if not os.path.exists(os.path.join(MODULES, "mpm_itk.so")):
        sys.exit("bench: the C mpm-itk is missing (apt-get install libapache2-mpm-itk)")

    quick = args.quick
    duration = args.duration or (2 if quick else 10)
    runs = args.runs or (1 if quick else 3)
    workloads = args.only.split(",") if args.only else (["1k", "php"] if quick else list(WORKLOADS))
    conns_list = [int(c) for c in args.conns.split(",")] if args.conns else ([16] if quick else [16, 64])
    kas = {"on": [False], "off": [True], "both": [True, False]}[args.ka]
    rows = [(wl, close, c) for wl in workloads for close in kas for c in conns_list]
    if args.tls:
        rows = [(wl, close, c) for key in ("ec", "rsa") for c in conns_list
                for (wl, close) in (("%s-full" % key, True), ("%s-resume" % key, True),
                                    ("%s-resume" % key, False))]
    elif quick:
        # one HTTPS row: the TLS harness works, and user processes serve TLS
        rows.append(("ec-resume", True, conns_list[0]))
    tls = args.tls or quick
    out_path = args.out or os.path.join(
        HERE, "RESULTS-quick.md" if quick else ("RESULTS-modset.md" if args.modset else
                                                ("RESULTS-tls.md" if args.tls else "RESULTS.md")))

    tuning = {"start": 5, "min_spare": 5, "max_spare": 10, "max_workers": 150}
    if args.many:
        return many_main(args, tuning)
    users = Users()
    workdir = tempfile.mkdtemp(prefix="itk-bench-")
    servers = []
    try:
        prepare_docroots(workdir, users)
        lua = os.path.join(workdir, "bench.lua")
        with open(lua, "w") as f:
            f.write("VHOSTS = {%s}\n" % ", ".join('"%s"' % v for v in VHOSTS) + WRK_LUA)
        hosts = make_certs(workdir) if tls else None
        tls_lua = os.path.join(workdir, "tls.lua")
        with open(tls_lua, "w") as f:
            f.write('VHOSTS = {"%s"}\n' % TLS_VHOST + WRK_LUA)
        setups = SETUPS + (["rust-full-exit"] if args.breakdown else [])
        for name in setups:
            h = Httpd(name, workdir, args.module, users, tuning, args.modset, tls=tls)
            h.start()
            servers.append(h)
        by_name = {h.name: h for h in servers}
        # Identity check: the vhost pages report the expected users.
        for h in servers:
            body = h.get(VHOSTS[1], "/page.php").decode()
            want = pwd.getpwnam("www-data" if h.name == "prefork" else USERS[1]).pw_uid
            body = h.get(VHOSTS[1], "/page.php").decode()
            if "uid %d " % want not in body:
                sys.exit("bench: %s served page.php as the wrong user: %s" % (h.name, body[:200]))
        if args.breakdown:
            for h in servers:  # warm up
                subprocess.run(["ab", "-q", "-n", "300", "-c", "8", "-H", "Host: %s" % VHOSTS[1],
                                "http://127.0.0.1:%d/1k.html" % h.port], capture_output=True)
            breakdown(servers, args.out or os.path.join(HERE, "BREAKDOWN.md"), 3000)
            return
        if args.serve:
            for h in servers:
                print("%-8s port %d  parent pid %d  conf %s" % (h.name, h.port, h.proc.pid, h.conf),
                      flush=True)
            print("lua script: %s   (Ctrl-C or SIGTERM to stop)" % lua, flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return
        # Warm up (opcache, page cache, spare workers; user processes for
        # the largest connection count: they start on demand, a few a second).
        for h in servers:
            run_wrk(h, "/page.php", False, 16, 1, lua)
            run_wrk(h, "/1k.html", True, 16, 1, lua)
            if h.name == "pools":
                run_wrk(h, "/1k.html", True, max(conns_list), 6, lua)
            if tls:
                for wl in sorted({x[0] for x in rows if x[0] in TLS_WORKLOADS}):
                    run_wrk(h, "/1k.html", True, max(conns_list), 6 if h.name == "pools" else 1,
                            tls_lua, tls=(wl, hosts))
        results = {}
        total = len(rows) * runs * len(SETUPS)
        done = 0
        for (wl, close, conns) in rows:
            samples = {s: [] for s in SETUPS}
            for _ in range(runs):
                for s in SETUPS:
                    if wl in TLS_WORKLOADS:
                        samples[s].append(run_wrk(by_name[s], TLS_WORKLOADS[wl][0], close, conns,
                                                  duration, tls_lua, tls=(wl, hosts)))
                    else:
                        samples[s].append(run_wrk(by_name[s], WORKLOADS[wl][0], close, conns,
                                                  duration, lua))
                    done += 1
                    r = samples[s][-1]
                    log("[%3d/%d] %-4s %-9s c%-3d %-8s %8.0f req/s  p99 %7.1f ms  cpu %6.0f us/req"
                        "  procs %4d  err %d" % (done, total, wl, "close" if close else "keepalive",
                                                 conns, s, r["rps"], r["p99_ms"], r["cpu_us"],
                                                 r["procs"], r["errors"]))
                    time.sleep(0.5)
            for s in SETUPS:
                results[(wl, close, conns, s)] = median_of(samples[s])
        meta = {
            "quick": quick,
            "modset": args.modset,
            "tls": args.tls,
            "date": datetime.date.today().isoformat(),
            "machine": "%d CPUs (%s), Linux %s" % (os.cpu_count(), platform.machine(),
                                                   platform.release()),
            "runs": runs,
            "duration": duration,
            "wrk": version(["dpkg-query", "-W", "-f=wrk ${Version}", "wrk"]),
            "citk": version(["dpkg-query", "-W", "-f=${Version}", "libapache2-mpm-itk"]),
            "httpd": version(["dpkg-query", "-W", "-f=${Version}", "apache2-bin"]),
            "php": version(["php", "-r", "echo PHP_VERSION;"]),
            "tuning": tuning,
            "cpu_source": "cgroup v1 cpuacct" if servers[0].cgroup else "/proc/<pid>/stat (utime+stime+cutime+cstime)",
        }
        text = table(results, rows, meta)
        # What --quick (CI) checks: every setup answered, without errors.
        # No timing is asserted.
        broken = ["%s %s %s c%d: %.0f req/s, %d errors" % (s, wl, "close" if close else "keep-alive",
                                                          conns, r["rps"], r["errors"])
                  for (wl, close, conns, s), r in results.items()
                  if r["rps"] <= 0 or r["errors"] > 0]
        # (PHP-FPM is a comparison: its errors are reported, not a failure
        # of --quick)
        failing = [b for b in broken if not b.startswith("fpm ")]
        with open(out_path, "w") as f:
            f.write(text)
        print(text)
        log("bench: wrote %s" % out_path)
        if not quick:
            # the chart beside it (RESULTS.svg): req/s and CPU per request
            subprocess.run([sys.executable, os.path.join(HERE, "chart.py"), out_path], check=False)
        if args.tls and not args.out:
            splice_tls(text)
        elif not quick and not args.out and not args.modset:
            # a full plain run keeps the HTTPS rows of the last --tls run
            try:
                with open(os.path.join(HERE, "RESULTS-tls.md")) as f:
                    splice_tls(f.read())
            except OSError:
                pass
        if broken:
            log("bench: some runs failed:\n  " + "\n  ".join(broken))
        for h in servers:
            with open(os.path.join(h.dir, "logs", "error.log")) as f:
                errs = [l for l in f if "[error]" in l or "[crit]" in l or "[emerg]" in l]
            if errs:
                log("bench: %s logged %d errors, e.g. %s" % (h.name, len(errs), errs[0].strip()))
        if failing and quick:
            sys.exit(1)
    finally:
        for h in servers:
            h.stop()
        users.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def many_main(args, tuning):
    """--many N: one table, every setup, requests over N vhosts of N users."""
    names = many_users(args.many)
    log("bench: creating %d users" % len(names))
    users = Users(USERS + names)
    workdir = tempfile.mkdtemp(prefix="itk-bench-")
    servers = []
    duration = args.duration or 10
    runs = args.runs or 2
    conns = int(args.conns.split(",")[0]) if args.conns else 64
    out_path = args.out or os.path.join(HERE, "RESULTS-many.md")
    try:
        prepare_docroots(workdir, users, USERS + names)
        lua = os.path.join(workdir, "many.lua")
        with open(lua, "w") as f:
            f.write("MANY = {%s}\n" % ", ".join('"%s"' % many_vhost(u) for u in names))
            f.write(MANY_LUA + WRK_LUA[WRK_LUA.index("function done"):])
        for name in SETUPS:
            h = Httpd(name, workdir, args.module, users, tuning, many=names)
            h.start()
            servers.append(h)
        # (no keep-alive row: a connection whose requests hop between users'
        # vhosts is closed by design, see README "How a request is processed")
        rows = [("1k", True), ("php", True)]
        results = {}
        for wl, close in rows:
            samples = {s: [] for s in SETUPS}
            for h in servers:  # warm up: every user gets its processes
                run_wrk(h, WORKLOADS[wl][0], close, conns, 8 if h.name == "pools" else 2, lua)
            for _ in range(runs):
                for h in servers:
                    r = run_wrk(h, WORKLOADS[wl][0], close, conns, duration, lua)
                    samples[h.name].append(r)
                    log("many %-4s %-9s %-8s %8.0f req/s  procs %4d  pss %6.0f MiB  err %d" % (
                        wl, "close" if close else "keepalive", h.name, r["rps"], r["procs"],
                        r["pss_mib"], r["errors"]))
                    time.sleep(0.5)
            for sname in SETUPS:
                results[(wl, close, sname)] = median_of(samples[sname])
        out = ["# Benchmark: many users\n",
               "Produced by `bench/run --many %d` on %s, %d CPUs. %d vhosts under %d users "
               "(prefork: all as www-data), every request to a random one of them, %d "
               "connections, median of %d runs of %d s after a warm-up. Setups as in "
               "RESULTS.md; **pools** with `UserPoolMaxProcesses 2` and room for 3 processes "
               "per user in `ServerLimit`.\n" % (
                   args.many, datetime.date.today().isoformat(), os.cpu_count(), args.many,
                   args.many, conns, runs, duration),
               "| workload | %s | **pools/prefork** | **rust/prefork** | max processes %s | PSS MiB %s | errors %s |" % (
                   " | ".join("%s req/s" % x for x in SETUPS), " / ".join(SETUPS),
                   " / ".join(SETUPS), " / ".join(SETUPS)),
               "| --- |%s ---: | ---: | ---: | ---: | ---: |" % (" ---: |" * len(SETUPS))]
        for wl, close in rows:
            r = {x: results[(wl, close, x)] for x in SETUPS}
            out.append("| %s, %s | %s | %s | %s | %s | %s | %s |" % (
                WORKLOADS[wl][1], "Connection: close" if close else "keep-alive",
                " | ".join("%.0f" % r[x]["rps"] for x in SETUPS),
                fmt_ratio(r["pools"]["rps"], r["prefork"]["rps"]),
                fmt_ratio(r["rust"]["rps"], r["prefork"]["rps"]),
                " / ".join("%d" % r[x]["procs"] for x in SETUPS),
                " / ".join("%.0f" % r[x]["pss_mib"] for x in SETUPS),
                " / ".join("%d" % r[x]["errors"] for x in SETUPS)))
        text = "\n".join(out) + "\n"
        with open(out_path, "w") as f:
            f.write(text)
        print(text)
        log("bench: wrote %s" % out_path)
    finally:
        for h in servers:
            h.stop()
        users.remove()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
