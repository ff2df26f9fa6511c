//! UserPools: persistent processes per user, handed connections by the
//! workers, so a connection no longer costs a fork and no process that can
//! switch users parses the request (README, "UserPools").
//!
//! * [`post_config`] (parent): which vhosts' identity cannot vary by
//!   request ([`pools::eligibility`]), one pool per identity (uid, gid,
//!   nice), each with a one-way channel and a table of shared words.
//! * [`dispatch`] (worker, after accept): peek at the request head without
//!   consuming it, let httpd choose the vhost ([`Worker::route`]), claim an
//!   idle process of that vhost's pool and send it the socket; anything
//!   else takes the classic path (fork per connection).
//! * [`spawn_orders`] (parent, in perform_idle_server_maintenance): start
//!   processes where connections took the classic path for want of one.
//! * [`process_main`] (a pool process): become the user once, child_init,
//!   then serve connection after connection; idle timeout,
//!   MaxConnectionsPerChild, graceful and stop end it.
//! * [`refuse_foreign`] (every request of a pool process): a request for a
//!   vhost that is not routed to this pool closes the connection.
#![forbid(unsafe_code)]

use crate::config::{self, CONFIG};
use crate::httpd::child::{self, Accepted, Child as Worker, HostName};
use crate::httpd::{self as ffi, Level, Pool, Request, Server, core, listen};
use crate::itk;
use mpm_itk_core::handoff::{self, Channel, Peeked, Received, SharedWords};
use mpm_itk_core::ids::Identity;
use mpm_itk_core::peek::{self, ClientHello, Http, HttpLimits, Proxy, Tls};
use mpm_itk_core::pools::{self, PoolKey, VhostFacts};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// One user pool of this generation.
struct UserPool {
    key: PoolKey,
    /// What its processes become (with the supplementary groups).
    identity: Identity,
    /// The vhosts routed to it, for log lines.
    vhosts: Vec<String>,
    /// None in a process of another pool.
    channel: Option<Channel>,
    words: Option<SharedWords>,
}

struct Table {
    pools: Vec<UserPool>,
    /// server_rec key -> pool index.
    routes: HashMap<usize, usize>,
    /// mod_remoteip expects a PROXY header somewhere.
    proxy_protocol: bool,
    /// The main server's limits on a request head (a head beyond them is
    /// for httpd to refuse, on the classic path).
    limits: HttpLimits,
    /// Seconds a worker waits for a head ([`peek::head_timeout`]).
    head_timeout: u64,
    max_processes: usize,
    /// Word `i`: how many processes of pool `i` run, as the parent counts
    /// them. Mapped in the parent and the workers only (no user process,
    /// no connection child): a pool's own idle count, which its processes
    /// can write, is never believed beyond it.
    alive: Option<SharedWords>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);
/// In a pool process: its pool index + 1 (0: not a pool process).
static MY_POOL: AtomicUsize = AtomicUsize::new(0);
/// In a pool process: the server_rec keys of the vhosts routed to its pool,
/// sorted (read for every request, without a lock).
static MY_SERVERS: OnceLock<Vec<usize>> = OnceLock::new();

fn table() -> MutexGuard<'static, Option<Table>> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

fn pid() -> u32 {
    std::process::id()
}

/// post_config (second pass, parent): the pools of this generation.
pub fn post_config(pconf: Pool, s: Server) -> Result<(), String> {
    if crate::httpd::retained::Unixd::get().module_loads() < 2 {
        // The first (preflight) pass only checks the configuration.
        return Ok(());
    }
    let main_on = config::server_conf(s).user_pools.unwrap_or(false);
    let st = config::state();
    let in_main_section = st.globals.identity_in_main_section;
    let max_processes = st.globals.pool_max_processes.max(1) as usize;
    let (server_limit, workers) = (st.tuning.server_limit, st.tuning.daemons_limit);
    drop(st);
    let mut pools: Vec<UserPool> = Vec::new();
    let mut routes = HashMap::new();
    let mut any_on = false;
    for v in s.all() {
        let conf = config::server_conf(v);
        let on = conf.user_pools.unwrap_or(main_on);
        any_on |= on;
        let Some(dir) = CONFIG.server_dir(v) else {
            continue;
        };
        let Some(identity) = itk::vhost_identity(dir.identity) else {
            continue;
        };
        let facts = VhostFacts {
            user_pools: on,
            uid: identity.uid,
            gid: identity.gid,
            nice: dir.nice,
            expression: dir.uid_expr.is_some() || dir.gid_expr.is_some(),
            in_section: conf.identity_in_section || in_main_section,
            max_clients: conf.max_clients_vhost.is_some(),
        };
        let name = v.describe();
        match pools::eligibility(&facts) {
            Ok(key) => {
                let i = match pools.iter().position(|p| p.key == key) {
                    Some(i) => i,
                    None => {
                        pools.push(UserPool {
                            key,
                            identity,
                            vhosts: Vec::new(),
                            channel: None,
                            words: None,
                        });
                        pools.len() - 1
                    }
                };
                pools[i].vhosts.push(name);
                routes.insert(v.key(), i);
            }
            Err(why) if on => ffi::log(
                Level::Info,
                0,
                Some(s),
                &format!("UserPools: vhost {name} takes the classic path ({why})"),
            ),
            Err(_) => {}
        }
    }
    if !any_on || pools.is_empty() {
        *table() = None;
        return Ok(());
    }
    if server_limit <= workers {
        ffi::log(
            Level::Warn,
            0,
            Some(s),
            &format!(
                "UserPools On, but ServerLimit ({server_limit}) leaves no scoreboard slot above \
                 MaxRequestWorkers ({workers}) for user processes: every connection takes the \
                 classic path; raise ServerLimit"
            ),
        );
    }
    for p in pools.iter_mut() {
        p.channel = Some(Channel::new().map_err(|e| format!("UserPools: socketpair: {e}"))?);
        p.words =
            Some(SharedWords::new(pools::WORDS).map_err(|e| format!("UserPools: mmap: {e}"))?);
        ffi::log(
            Level::Debug,
            0,
            Some(s),
            &format!(
                "UserPools: pool of user {} (uid {} gid {}) for {}",
                p.identity.user,
                p.key.uid,
                p.key.gid,
                p.vhosts.join(", ")
            ),
        );
    }
    let alive = SharedWords::new(pools.len()).map_err(|e| format!("UserPools: mmap: {e}"))?;
    let rl = core::request_limits(s);
    let limits = HttpLimits {
        request_line: rl.line,
        field_size: rl.field_size,
        fields: rl.fields,
        strict: !rl.lenient_lines,
        ..HttpLimits::default()
    };
    let reqtimeout = core::module_loaded(c"mod_reqtimeout.c")
        .then(|| core::server_directive_args("RequestReadTimeout"));
    let head_timeout = peek::head_timeout(s.timeout_secs(), reqtimeout.as_deref());
    ffi::log(
        Level::Debug,
        0,
        Some(s),
        &format!("UserPools: workers wait up to {head_timeout} s for a request head; {limits:?}"),
    );
    *table() = Some(Table {
        limits,
        head_timeout,
        alive: Some(alive),
        pools,
        routes,
        proxy_protocol: core::module_loaded(c"mod_remoteip.c")
            && core::config_flag_on("RemoteIPProxyProtocol"),
        max_processes,
    });
    // The DSO's statics vanish at the restart's unload: close the channels
    // and unmap the words first.
    pconf.on_clear(|_| *table() = None, 0);
    Ok(())
}

/// Most of a request head or TLS ClientHello the worker peeks at (a
/// largest accepted ClientHello, [`peek::TLS_MAX_HELLO`], with its record
/// and handshake headers, fits).
const PEEK_MAX: usize = peek::TLS_MAX_HELLO + 1024;

/// What the peeked bytes name.
enum Named {
    /// An HTTP request: its host (None: none) and path.
    Http(Option<peek::HostRequest>, String),
    /// A TLS ClientHello's SNI name.
    Sni(String),
}

/// In a worker, after accept: hands `sock` to an idle process of its
/// vhost's pool (None) or gives it back for the classic path.
pub fn dispatch(w: &Worker, sock: Accepted) -> Option<Accepted> {
    let guard = table();
    let Some(t) = guard.as_ref() else {
        return Some(sock);
    };
    let fd = sock.raw_fd();
    let deadline = Instant::now() + Duration::from_secs(t.head_timeout);
    // (one buffer for the worker's life: a worker peeks at one connection
    // at a time)
    static BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    let mut buf = BUF.lock().unwrap_or_else(|e| e.into_inner());
    if buf.len() < PEEK_MAX {
        buf.resize(PEEK_MAX, 0);
    }
    let mut have = 0;
    let classic = |why: &dyn std::fmt::Display| {
        ffi::log(
            Level::Trace1,
            0,
            Server::main(),
            &format!("UserPools: classic path: {why} (worker pid {})", pid()),
        );
    };
    let named = loop {
        match handoff::peek(fd, &mut buf, have, deadline) {
            Ok(Peeked::More(n)) => have = n,
            other => {
                classic(&format_args!("peek: {other:?}"));
                return Some(sock);
            }
        }
        let mut data = &buf[..have];
        if t.proxy_protocol {
            match peek::proxy_header(data) {
                Proxy::Skip(k) => data = &data[k..],
                Proxy::NeedMore if have < buf.len() => continue,
                other => {
                    classic(&format_args!("{other:?}"));
                    return Some(sock);
                }
            }
        }
        match peek::http_request(data, &t.limits) {
            Http::NeedMore if have < buf.len() => continue,
            Http::Host(h) => break Named::Http(Some(h), String::new()),
            Http::NoHost { path } => break Named::Http(None, path),
            // The user process runs the whole handshake: mod_ssl then
            // finds the same vhost by the same name.
            // (only where httpd's listener says https: mod_ssl may be off
            // elsewhere, and httpd would then read the hello as a request,
            // with the address's default vhost's error settings)
            Http::Tls if !sock.on_https_listener() => {
                classic(&"TLS on a listener whose protocol is not https");
                return Some(sock);
            }
            Http::Tls => match peek::tls_client_hello(data, peek::TLS_MAX_HELLO) {
                Tls::NeedMore if have < buf.len() => continue,
                Tls::Hello(ClientHello {
                    server_name: Some(name),
                    ..
                }) => break Named::Sni(name),
                Tls::Hello(_) => {
                    classic(&"TLS without SNI");
                    return Some(sock);
                }
                other => {
                    classic(&format_args!("TLS: {other:?}"));
                    return Some(sock);
                }
            },
            other => {
                classic(&format_args!("{other:?}"));
                return Some(sock);
            }
        }
    };
    let routed = match &named {
        Named::Http(host, path) => {
            let name = host.as_ref().map(|h| HostName {
                host: &h.host,
                port: h.port,
                from_uri: h.from_uri,
            });
            let path = host.as_ref().map_or(path.as_str(), |h| h.path.as_str());
            w.route(&sock, name, path)
        }
        // No vhost of the address has the name: mod_ssl would stay on the
        // address's default server, and a Host header would then choose;
        // that is for the classic path to sort out.
        Named::Sni(name) => w.route_sni(&sock, name),
    };
    let Some(server) = routed else {
        classic(&"no server");
        return Some(sock);
    };
    let Some(&i) = t.routes.get(&server.key()) else {
        classic(&format_args!("vhost {} has no pool", server.describe()));
        return Some(sock);
    };
    let pool = &t.pools[i];
    let (Some(ch), Some(words)) = (&pool.channel, &pool.words) else {
        return Some(sock);
    };
    // A pool's idle count above the processes it has was written by one of
    // them: connections sent on it would wait in the channel.
    let alive = t.alive.as_ref().map_or(0, |a| {
        a.words().get(i).map_or(0, |w| w.load(Ordering::Acquire))
    });
    if pools::idle_count(words.words()) > alive {
        classic(&format_args!(
            "user {}'s idle count exceeds its processes",
            pool.identity.user
        ));
        return Some(sock);
    }
    if !pools::claim(words.words()) {
        pools::note_demand(words.words());
        classic(&format_args!(
            "no idle process of user {}",
            pool.identity.user
        ));
        return Some(sock);
    }
    match handoff::send_fd(ch.send.as_raw_fd(), fd) {
        Ok(()) => {
            w.close_accepted(sock);
            None
        }
        Err(e) => {
            pools::unclaim(words.words());
            ffi::log(
                Level::Warn,
                e.raw_os_error().unwrap_or(0),
                Server::main(),
                &format!(
                    "UserPools: cannot hand a connection for {} to user {} (worker pid {}); classic path",
                    server.describe(),
                    pool.identity.user,
                    pid()
                ),
            );
            Some(sock)
        }
    }
}

/// A pool process the parent should start now: (slot, pool, index).
pub type SpawnOrder = (usize, usize, usize);

/// perform_idle_server_maintenance's part for the pools: `live` are the
/// (pool, index) of this generation's pool processes, `free` the scoreboard
/// slots they may take. Reads and resets each pool's demand.
pub fn spawn_orders(live: &[(usize, usize)], free: &[usize]) -> Vec<SpawnOrder> {
    let guard = table();
    let Some(t) = guard.as_ref() else {
        return Vec::new();
    };
    let mut free = free.iter().copied();
    let mut out = Vec::new();
    for (i, p) in t.pools.iter().enumerate() {
        let Some(words) = &p.words else { continue };
        let demand = pools::take_demand(words.words());
        let mut used: Vec<usize> = live
            .iter()
            .filter(|(pl, _)| *pl == i)
            .map(|(_, x)| *x)
            .collect();
        let n = pools::to_spawn(used.len(), t.max_processes, demand, 8, free.len());
        for _ in 0..n {
            let (Some(index), Some(slot)) =
                (pools::free_index(&used, t.max_processes), free.next())
            else {
                break;
            };
            used.push(index);
            out.push((slot, i, index));
        }
    }
    out
}

/// The parent started a process of pool `pool`.
pub fn process_started(pool: usize) {
    with_alive(pool, |w| {
        w.fetch_add(1, Ordering::AcqRel);
    });
}

fn with_alive(pool: usize, f: impl FnOnce(&AtomicU32)) {
    let guard = table();
    if let Some(w) = guard
        .as_ref()
        .and_then(|t| t.alive.as_ref())
        .and_then(|a| a.words().get(pool))
    {
        f(w);
    }
}

/// Everything of the pools a process that runs vhost code on the classic
/// path (a connection child) must not reach: every pool's channel ends and
/// shared words are closed and unmapped here, before it reads a byte.
pub fn forget() {
    *table() = None;
}

/// The parent reaped process `index` of pool `pool`: it no longer waits
/// for connections. Returns whether connections wait in the channel of a
/// pool with no process left (a worker sent them before the parent knew
/// the process had died): the caller starts a replacement for them, or
/// else closes them ([`drop_queued`]).
pub fn process_ended(pool: usize, index: usize, others_alive: bool) -> bool {
    with_alive(pool, |w| {
        let _ = w.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
    });
    let guard = table();
    let Some(p) = guard.as_ref().and_then(|t| t.pools.get(pool)) else {
        return false;
    };
    let queued = match (&p.channel, others_alive) {
        (Some(ch), false) => handoff::queued(ch.recv.as_raw_fd()).unwrap_or(0),
        _ => 0,
    };
    if let Some(words) = &p.words {
        if others_alive {
            pools::died(words.words(), index);
        } else {
            pools::reset_owing(words.words(), queued);
        }
    }
    queued > 0
}

/// Closes the connections waiting in the channel of pool `pool`, which has
/// no process left and gets none (no one would ever read them).
pub fn drop_queued(pool: usize) {
    let guard = table();
    let Some(p) = guard.as_ref().and_then(|t| t.pools.get(pool)) else {
        return;
    };
    let Some(ch) = &p.channel else { return };
    // nothing will arrive for whoever waits next
    if let Some(words) = &p.words {
        pools::reset(words.words());
    }
    let mut dropped = 0;
    // (bounded: the channel's other end is in the workers only, but the
    // parent must never be kept here)
    for _ in 0..1024 {
        match handoff::recv_fd(ch.recv.as_raw_fd(), 0) {
            Ok(Received::Fd(fd)) => {
                drop(fd);
                dropped += 1;
            }
            Ok(Received::Junk) | Ok(Received::Taken) => {}
            _ => break,
        }
    }
    if dropped > 0 {
        ffi::log(
            Level::Warn,
            0,
            Server::main(),
            &format!(
                "UserPools: closed {dropped} connection(s) sent to user {}'s last process, which ended",
                p.identity.user
            ),
        );
    }
}

/// Asks the parent's next maintenance for a process of pool `pool`.
pub fn ask_for_process(pool: usize) {
    if let Some(words) = table()
        .as_ref()
        .and_then(|t| t.pools.get(pool))
        .and_then(|p| p.words.as_ref())
    {
        pools::note_demand(words.words());
    }
}

/// The user of pool `pool`, for log lines.
pub fn pool_user(pool: usize) -> String {
    table()
        .as_ref()
        .and_then(|t| t.pools.get(pool))
        .map_or_else(|| format!("pool {pool}"), |p| p.identity.user.clone())
}

/// A user process's signal handlers, installed first thing after the fork
/// (while the control signals are still blocked).
pub fn process_signals() {
    itk::test_pause_point("user-process-start", 2);
    child::set_pool_process_signals();
}

/// A pool process: never returns. Runs in a process the root parent just
/// forked into scoreboard slot `slot`.
pub fn process_main(slot: usize, pool: usize, index: usize, num_listeners: usize) -> ! {
    let mut w = match Worker::init(slot, 0, num_listeners) {
        Ok(w) => w,
        Err(e) => {
            ffi::log(Level::Emerg, 0, Server::main(), &e);
            child::end(1, false)
        }
    };
    let ports = listen::ports();
    // Nothing of the listening side, nothing of the other pools, nothing
    // of the MaxClientsVHost table stays within reach of the user's code.
    let fail = |what: String| -> ! {
        ffi::log(
            Level::Emerg,
            0,
            Server::main(),
            &format!(
                "UserPools: user process pid {} (pool {pool}): {what}; exiting",
                pid()
            ),
        );
        child::end(1, false)
    };
    if let Err(e) = w.close_listening_side() {
        fail(e)
    }
    let (identity, key, recv, words, vhosts) = {
        let mut guard = table();
        let Some(t) = guard.as_mut() else {
            fail("no pools in this generation".into())
        };
        t.alive = None;
        let mut mine = None;
        for (i, p) in t.pools.iter_mut().enumerate() {
            let ch = p.channel.take();
            let words = p.words.take();
            if i == pool {
                mine = ch.map(|c| (c.recv, words));
            }
            // the other pools' ends and words, and our own sending end, are
            // dropped here
        }
        let Some((recv, Some(words))) = mine else {
            fail("no such pool".into())
        };
        let mut servers: Vec<usize> = t
            .routes
            .iter()
            .filter(|&(_, &p)| p == pool)
            .map(|(&k, _)| k)
            .collect();
        servers.sort_unstable();
        if MY_SERVERS.set(servers).is_err() {
            fail("the pool's vhosts were set before".into())
        }
        let p = &t.pools[pool];
        (p.identity.clone(), p.key, recv, words, p.vhosts.join(" "))
    };
    MY_POOL.store(pool + 1, Ordering::Relaxed);
    if let Err(e) = itk::become_pool_user(slot, &identity, key.nice) {
        fail(e)
    }
    w.run_child_init();
    ffi::log(
        Level::Debug,
        0,
        Server::main(),
        &format!(
            "UserPools: user process pid {} serves user {} uid {} gid {} (slot {slot})",
            pid(),
            identity.user,
            identity.uid,
            identity.gid
        ),
    );
    let st = config::state().globals;
    // Waits of a second (every process of the pool sets the same value on
    // the shared end): a graceful signal that arrives just before a wait
    // is seen within a second; UserPoolIdleTimeout counts them.
    if let Err(e) = handoff::set_recv_timeout(recv.as_raw_fd(), 1) {
        fail(format!("SO_RCVTIMEO: {e}"))
    }
    let idle_limit = st.pool_idle_timeout.max(1) as u32;
    let mut idle_secs = 0;
    let max_conns = core::max_requests_per_child().max(0) as u64;
    let mut served: u64 = 0;
    let flags = words.words();
    // mod_status: whose process this is, and for which vhosts.
    let descr = format!("[user {} uid {}] {vhosts}", identity.user, identity.uid);
    // (configuration strings hold no NUL)
    let descr = std::ffi::CString::new(descr).unwrap_or_default();
    loop {
        if child::die_now() {
            break;
        }
        w.set_idle_descr(&descr);
        pools::wait_begin(flags, index);
        match handoff::recv_fd_blocking(recv.as_raw_fd()) {
            Ok(Received::Fd(fd)) => {
                idle_secs = 0;
                pools::got_connection(flags, index);
                let addrs = match handoff::check_connection(fd.as_raw_fd(), &ports) {
                    Ok(a) => a,
                    Err(e) => {
                        let level = match e {
                            handoff::Refused::Gone(_) => Level::Info,
                            handoff::Refused::Foreign(_) => Level::Warn,
                        };
                        ffi::log(
                            level,
                            0,
                            Server::main(),
                            &format!(
                                "UserPools: user process pid {} of user {} refused a descriptor: {e}",
                                pid(),
                                identity.user
                            ),
                        );
                        continue;
                    }
                };
                // (blocking or not: httpd's core sets the socket's mode with
                // its timeout before it reads)
                itk::test_panic_point("child");
                child::set_serving(true);
                let served_ok = w.serve_fd(fd, &addrs.local, &addrs.remote);
                child::set_serving(false);
                if let Err(e) = served_ok {
                    ffi::log(Level::Info, 0, Server::main(), &format!("UserPools: {e}"));
                }
                served += 1;
                if max_conns > 0 && served >= max_conns {
                    break;
                }
                // A request of that connection could not get its identity
                // (or the switch hook failed): this process is not trusted
                // with another connection.
                if itk::identity_failed() {
                    break;
                }
            }
            Ok(Received::Interrupted) | Ok(Received::Junk) | Ok(Received::Taken) => {}
            Ok(Received::Timeout) => {
                idle_secs += 1;
                if idle_secs >= idle_limit && pools::leave(flags, index) {
                    break;
                }
                // (not idle long enough, or every waiter is reserved: a
                // connection is on its way)
            }
            // no worker and no parent left to send anything
            Ok(Received::Closed) => break,
            Err(e) => fail(format!("recvmsg: {e}")),
        }
    }
    // Leaving (graceful stop, MaxConnectionsPerChild): while every waiter
    // of the pool is reserved, a connection is on its way to one of us;
    // take it (bounded), so none is left in the channel.
    for _ in 0..50 {
        // (a stop or restart waits for nothing: what was sent is dropped,
        // as prefork drops the connections in its listen queue)
        if child::stop_now() || pools::leave(flags, index) {
            break;
        }
        if let Ok(Received::Fd(fd)) = handoff::recv_fd(recv.as_raw_fd(), 100) {
            pools::got_connection(flags, index);
            if let Ok(addrs) = handoff::check_connection(fd.as_raw_fd(), &ports) {
                let _ = w.serve_fd(fd, &addrs.local, &addrs.remote);
            }
        }
    }
    child::end(0, true)
}

/// Whether `r`, read by a user process, is for a vhost that is not routed
/// to the process's pool (never in other processes).
fn foreign(r: Request) -> Option<usize> {
    let mine = MY_POOL.load(Ordering::Relaxed);
    if mine == 0 {
        return None;
    }
    let key = r.server().key();
    let routed = MY_SERVERS
        .get()
        .is_some_and(|s| s.binary_search(&key).is_ok());
    (!routed).then_some(mine - 1)
}

/// In a user process, as soon as httpd has read a request and chosen its
/// vhost (post_read_request, before mod_ssl's checks, the URI mapping,
/// `.htaccess` and the handlers): a request for a vhost that is not routed
/// to this process's pool (a keep-alive request or an absolute URI for
/// another vhost, a TLS connection whose SNI named another user's vhost
/// than its Host, a misroute) gets `421 Misdirected Request` with a fixed
/// body (never the vhost's ErrorDocument) and its connection closes; the
/// client retries on a new connection (RFC 9110 15.5.20), which the
/// workers route anew. Nothing of that vhost ran, so the process goes on.
pub fn misdirected(r: Request) -> Option<i32> {
    let pool = foreign(r)?;
    ffi::log_request(
        Level::Info,
        0,
        r,
        &format!(
            "UserPools: vhost {} is not served by user {}'s processes: 421, closing the \
             connection (uid {}, pid {})",
            r.server().describe(),
            pool_user(pool),
            mpm_itk_core::privileges::current_uid(),
            pid()
        ),
    );
    Some(r.misdirected(
        "The request names a site this connection does not serve; retry it on a new connection.",
    ))
}

/// In a user process, before the switch hook: the same check as
/// [`misdirected`] once more, should a request's vhost have changed since;
/// this one closes the connection unanswered and ends the process.
pub fn refuse_foreign(r: Request) -> Option<i32> {
    let pool = foreign(r)?;
    ffi::log_request(
        Level::Warn,
        0,
        r,
        &format!(
            "UserPools: vhost {} is not served by user {}'s processes; closing connection \
             (uid {}, pid {})",
            r.server().describe(),
            pool_user(pool),
            mpm_itk_core::privileges::current_uid(),
            pid()
        ),
    );
    itk::close_connection(r)
}
