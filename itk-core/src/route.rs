//! Name-based virtual host resolution for one local address:port, the way
//! httpd 2.4.62 does it for a Host (server/vhost.c) and mod_ssl for an SNI
//! name (modules/ssl), over a table the caller builds from httpd's
//! `server_rec`s after configuration. Pure data: no httpd symbols.
#![forbid(unsafe_code)]

/// One entry of the name chain of an address (httpd's `name_chain`): a
/// server and the `<VirtualHost>` address that put it there. A server with
/// several addresses on the chain has adjacent entries, each repeating its
/// names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameEntry {
    /// The server's index (the caller's numbering of `server_rec`s).
    pub server: usize,
    /// The address's port (`sar->host_port`); 0 for `*`.
    pub port: u16,
    /// `ServerName` (`s->server_hostname`).
    pub server_name: String,
    /// `ServerAlias` names without wildcards (`s->names`).
    pub aliases: Vec<String>,
    /// `ServerAlias` names with `*` or `?` (`s->wild_names`).
    pub wild_aliases: Vec<String>,
    /// The `<VirtualHost>` address as written, without port
    /// (`sar->virthost`).
    pub virthost: String,
    /// `ServerPath` (`s->path`).
    pub server_path: Option<String>,
}

/// The name-based vhosts of one local address:port
/// (`ap_update_vhost_given_ip`, server/vhost.c:1280): the chain in
/// configuration order and the address's default (base) server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTable {
    pub base_server: usize,
    pub chain: Vec<NameEntry>,
}

/// How the server was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// `ServerName` or `ServerAlias`.
    Name,
    /// The `<VirtualHost>` address string (Host only).
    VirtHost,
    /// A `ServerPath` prefix (no host only).
    ServerPath,
    /// Nothing matched: the base server. For a Host, httpd notes a 400 that
    /// it only enforces under `StrictHostCheck On`.
    Base,
}

/// The chosen server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub server: usize,
    pub matched: Matched,
}

impl NameTable {
    /// The server for a request on local port `local_port`, by `host` as
    /// [`crate::peek`] normalizes it (the Host's own port is ignored, as
    /// httpd does), or by `path` (`r->uri`) when there is no host
    /// (`ap_update_vhost_from_headers_ex`, server/vhost.c:1173-1226).
    pub fn by_host(&self, host: Option<&str>, local_port: u16, path: &str) -> Route {
        match host {
            Some(host) => self.update_server_from_aliases(host, local_port),
            None => self.check_serverpath(path, local_port),
        }
    }

    /// The server mod_ssl switches to for an SNI `name` (`init_vhost` →
    /// `ap_vhost_iterate_given_conn` → `ssl_find_vhost`,
    /// modules/ssl/ssl_engine_kernel.c:2374, :2507; server/vhost.c:1229):
    /// the first server in chain order whose names match
    /// (`ssl_util_vhost_matches`, modules/ssl/ssl_util.c:61). No
    /// `<VirtualHost>` address fallback and no normalization of the name;
    /// no name or no match gives the base server.
    pub fn by_sni(&self, name: Option<&str>, local_port: u16) -> Route {
        let found = name.and_then(|name| {
            self.distinct_servers(local_port)
                .find(|e| matches_aliases(e, name))
                .map(|e| e.server)
        });
        self.route(found, Matched::Name)
    }

    /// `update_server_from_aliases` (server/vhost.c:1000): the first server
    /// (in chain order, port-matching entries only) whose ServerName,
    /// exact aliases or wildcard aliases match; else the first whose
    /// `<VirtualHost>` address equals the host; else the base server.
    fn update_server_from_aliases(&self, host: &str, local_port: u16) -> Route {
        let mut virthost = None;
        let mut last = None;
        for entry in self.chain.iter().filter(|e| port_matches(e, local_port)) {
            if last != Some(entry.server) && matches_aliases(entry, host) {
                return self.route(Some(entry.server), Matched::Name);
            }
            if virthost.is_none() && host.eq_ignore_ascii_case(&entry.virthost) {
                virthost = Some(entry.server);
            }
            last = Some(entry.server);
        }
        self.route(virthost, Matched::VirtHost)
    }

    /// `check_serverpath` (server/vhost.c:1093): the first distinct
    /// port-matching server whose `ServerPath` is a prefix of `path` ending
    /// at a `/` boundary: the ServerPath ends in `/`, or the path continues
    /// with `/` or ends there. Case-sensitive, on the raw path.
    fn check_serverpath(&self, path: &str, local_port: u16) -> Route {
        let found = self
            .distinct_servers(local_port)
            .find(|e| {
                e.server_path
                    .as_deref()
                    .is_some_and(|p| serverpath_matches(p, path))
            })
            .map(|e| e.server);
        self.route(found, Matched::ServerPath)
    }

    /// The chain's entries with a matching port, each server once where
    /// its entries are adjacent (the `last_s` loops of server/vhost.c).
    fn distinct_servers(&self, local_port: u16) -> impl Iterator<Item = &NameEntry> {
        let mut last = None;
        self.chain
            .iter()
            .filter(move |e| port_matches(e, local_port))
            .filter(move |e| last.replace(e.server) != Some(e.server))
    }

    fn route(&self, found: Option<usize>, how: Matched) -> Route {
        match found {
            Some(server) => Route {
                server,
                matched: how,
            },
            None => Route {
                server: self.base_server,
                matched: Matched::Base,
            },
        }
    }
}

/// An entry on the chain applies if its port is `*` or the local port.
fn port_matches(entry: &NameEntry, local_port: u16) -> bool {
    entry.port == 0 || entry.port == local_port
}

/// `matches_aliases` (server/vhost.c:913) and `ssl_util_vhost_matches`
/// (modules/ssl/ssl_util.c:61), which are the same test: ServerName, then
/// exact aliases (`strcasecmp`), then wildcard aliases
/// (`ap_strcasecmp_match`).
fn matches_aliases(entry: &NameEntry, host: &str) -> bool {
    host.eq_ignore_ascii_case(&entry.server_name)
        || entry.aliases.iter().any(|a| host.eq_ignore_ascii_case(a))
        || entry.wild_aliases.iter().any(|w| wildcard_matches(host, w))
}

/// The `ServerPath` boundary rule of `check_serverpath`
/// (server/vhost.c:1124-1127). An empty ServerPath never matches (httpd
/// would read before the string there).
fn serverpath_matches(server_path: &str, path: &str) -> bool {
    if server_path.is_empty() || !path.starts_with(server_path) {
        return false;
    }
    server_path.ends_with('/')
        || matches!(path.as_bytes().get(server_path.len()), None | Some(b'/'))
}

/// The result of [`strcasecmp_match`], as httpd's `ap_strcasecmp_match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Glob {
    Match,
    NoMatch,
    /// The string ran out: no later `*` position can match either.
    Abort,
}

/// True if `s` matches the glob `pattern` (`*` any run, `?` one byte,
/// ASCII case-insensitive), as `!ap_strcasecmp_match(s, pattern)`.
pub fn wildcard_matches(s: &str, pattern: &str) -> bool {
    strcasecmp_match(s.as_bytes(), pattern.as_bytes()) == Glob::Match
}

/// `ap_strcasecmp_match` (server/util.c:199), recursion and abort
/// included, so backtracking is bounded the same way.
fn strcasecmp_match(s: &[u8], pattern: &[u8]) -> Glob {
    let mut x = 0;
    let mut y = 0;
    while y < pattern.len() {
        if x >= s.len() && pattern[y] != b'*' {
            return Glob::Abort;
        }
        if pattern[y] == b'*' {
            while pattern.get(y) == Some(&b'*') {
                y += 1;
            }
            if y == pattern.len() {
                return Glob::Match;
            }
            while x < s.len() {
                let ret = strcasecmp_match(&s[x..], &pattern[y..]);
                x += 1;
                if ret != Glob::NoMatch {
                    return ret;
                }
            }
            return Glob::Abort;
        }
        if pattern[y] != b'?' && !s[x].eq_ignore_ascii_case(&pattern[y]) {
            return Glob::NoMatch;
        }
        x += 1;
        y += 1;
    }
    if x == s.len() {
        Glob::Match
    } else {
        Glob::NoMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(server: usize, port: u16, name: &str) -> NameEntry {
        NameEntry {
            server,
            port,
            server_name: name.into(),
            virthost: "*".into(),
            ..NameEntry::default()
        }
    }

    fn aliases(mut e: NameEntry, exact: &[&str], wild: &[&str]) -> NameEntry {
        e.aliases = exact.iter().map(|s| s.to_string()).collect();
        e.wild_aliases = wild.iter().map(|s| s.to_string()).collect();
        e
    }

    fn table(chain: Vec<NameEntry>) -> NameTable {
        NameTable {
            base_server: 100,
            chain,
        }
    }

    fn host(t: &NameTable, host: &str) -> (usize, Matched) {
        let r = t.by_host(Some(host), 80, "/");
        (r.server, r.matched)
    }

    fn sni(t: &NameTable, name: &str) -> (usize, Matched) {
        let r = t.by_sni(Some(name), 443);
        (r.server, r.matched)
    }

    #[test]
    fn server_name_then_aliases_then_wildcards() {
        let t = table(vec![
            aliases(
                entry(1, 0, "one.example"),
                &["www.one.example"],
                &["*.one.example"],
            ),
            aliases(entry(2, 0, "two.example"), &["one.example"], &[]),
        ]);
        assert_eq!(host(&t, "one.example"), (1, Matched::Name));
        assert_eq!(host(&t, "www.one.example"), (1, Matched::Name));
        assert_eq!(host(&t, "x.one.example"), (1, Matched::Name));
        assert_eq!(host(&t, "two.example"), (2, Matched::Name));
        assert_eq!(host(&t, "three.example"), (100, Matched::Base));
    }

    #[test]
    fn first_server_in_chain_order_wins() {
        // An earlier server's wildcard beats a later server's ServerName.
        let t = table(vec![
            aliases(entry(1, 0, "a.example"), &[], &["*.example"]),
            entry(2, 0, "b.example"),
        ]);
        assert_eq!(host(&t, "b.example"), (1, Matched::Name));
        assert_eq!(sni(&t, "b.example"), (1, Matched::Name));
        let t = table(vec![
            entry(2, 0, "b.example"),
            aliases(entry(1, 0, "a.example"), &[], &["*.example"]),
        ]);
        assert_eq!(host(&t, "b.example"), (2, Matched::Name));
        assert_eq!(sni(&t, "b.example"), (2, Matched::Name));
    }

    #[test]
    fn case_insensitive() {
        let t = table(vec![aliases(
            entry(1, 0, "Mixed.Example"),
            &["ALIAS.example"],
            &["*.WILD.example"],
        )]);
        for name in [
            "mixed.example",
            "MIXED.EXAMPLE",
            "alias.EXAMPLE",
            "x.wild.EXAMPLE",
        ] {
            assert_eq!(host(&t, name), (1, Matched::Name), "{name}");
            assert_eq!(sni(&t, name), (1, Matched::Name), "{name}");
        }
    }

    #[test]
    fn ports() {
        let t = table(vec![
            entry(1, 8080, "a.example"),
            entry(2, 0, "a.example"),
            entry(3, 80, "b.example"),
        ]);
        assert_eq!(t.by_host(Some("a.example"), 8080, "/").server, 1);
        assert_eq!(
            t.by_host(Some("a.example"), 80, "/").server,
            2,
            "port 8080 skipped"
        );
        assert_eq!(t.by_host(Some("b.example"), 80, "/").server, 3);
        assert_eq!(t.by_host(Some("b.example"), 81, "/").matched, Matched::Base);
        assert_eq!(t.by_sni(Some("a.example"), 80).server, 2);
        assert_eq!(t.by_sni(Some("b.example"), 8080).server, 100);
    }

    #[test]
    fn virthost_fallback_for_host_only() {
        let mut a = entry(1, 0, "a.example");
        a.virthost = "192.0.2.1".into();
        let mut b = entry(2, 0, "b.example");
        b.virthost = "192.0.2.1".into();
        let mut c = entry(3, 0, "c.example");
        c.virthost = "vhost.example".into();
        let t = table(vec![a, b, c]);
        assert_eq!(
            host(&t, "192.0.2.1"),
            (1, Matched::VirtHost),
            "the first one"
        );
        assert_eq!(host(&t, "VHOST.example"), (3, Matched::VirtHost));
        assert_eq!(host(&t, "c.example"), (3, Matched::Name));
        assert_eq!(sni(&t, "192.0.2.1"), (100, Matched::Base));
        assert_eq!(sni(&t, "vhost.example"), (100, Matched::Base));
    }

    #[test]
    fn virthost_loses_to_a_later_name() {
        let mut a = entry(1, 0, "a.example");
        a.virthost = "shared.example".into();
        let t = table(vec![a, entry(2, 0, "shared.example")]);
        assert_eq!(host(&t, "shared.example"), (2, Matched::Name));
    }

    #[test]
    fn a_server_with_several_addresses_is_tested_once() {
        // Server 1 listed for two addresses (adjacent entries); the second
        // entry's virthost still counts.
        let mut first = entry(1, 0, "one.example");
        first.virthost = "192.0.2.1".into();
        let mut second = first.clone();
        second.virthost = "192.0.2.2".into();
        let t = table(vec![first, second, entry(2, 0, "two.example")]);
        assert_eq!(host(&t, "192.0.2.2"), (1, Matched::VirtHost));
        assert_eq!(host(&t, "one.example"), (1, Matched::Name));
        let mut seen = Vec::new();
        t.distinct_servers(80).for_each(|e| seen.push(e.server));
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn trailing_dot_only_normalized_by_the_caller() {
        let t = table(vec![entry(1, 0, "a.example")]);
        assert_eq!(
            sni(&t, "a.example."),
            (100, Matched::Base),
            "mod_ssl keeps the dot"
        );
        assert_eq!(host(&t, "a.example"), (1, Matched::Name));
    }

    #[test]
    fn no_name_or_empty_chain() {
        let t = table(vec![entry(1, 0, "a.example")]);
        assert_eq!(
            t.by_sni(None, 443),
            Route {
                server: 100,
                matched: Matched::Base
            }
        );
        let empty = table(vec![]);
        assert_eq!(host(&empty, "a.example"), (100, Matched::Base));
        assert_eq!(sni(&empty, "a.example"), (100, Matched::Base));
        assert_eq!(empty.by_host(None, 80, "/x").matched, Matched::Base);
    }

    #[test]
    fn serverpath() {
        let path = |server, port, p: &str| {
            let mut e = entry(server, port, "x");
            e.server_path = Some(p.into());
            e
        };
        let t = table(vec![
            entry(1, 0, "plain.example"),
            path(2, 0, "/sub"),
            path(3, 0, "/dir/"),
            path(4, 8080, "/other"),
            path(5, 0, "/sub/deeper"),
        ]);
        let by_path = |p: &str| {
            let r = t.by_host(None, 80, p);
            (r.server, r.matched)
        };
        assert_eq!(by_path("/sub"), (2, Matched::ServerPath));
        assert_eq!(by_path("/sub/"), (2, Matched::ServerPath));
        assert_eq!(
            by_path("/sub/deeper/x"),
            (2, Matched::ServerPath),
            "first in chain order"
        );
        assert_eq!(
            by_path("/subway"),
            (100, Matched::Base),
            "not at a / boundary"
        );
        assert_eq!(by_path("/SUB"), (100, Matched::Base), "case-sensitive");
        assert_eq!(by_path("/dir/x"), (3, Matched::ServerPath));
        assert_eq!(by_path("/dirx"), (100, Matched::Base));
        assert_eq!(
            by_path("/dir"),
            (100, Matched::Base),
            "shorter than the ServerPath"
        );
        assert_eq!(by_path("/other"), (100, Matched::Base), "port 8080 only");
        assert_eq!(t.by_host(None, 8080, "/other").server, 4);
        assert_eq!(by_path("*"), (100, Matched::Base));
        assert!(
            !serverpath_matches("", "/x"),
            "an empty ServerPath never matches"
        );
    }

    #[test]
    fn wildcards() {
        let cases = [
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", ".example.com", true),
            ("*example.com", "example.com", true),
            ("www.example.*", "WWW.EXAMPLE.ORG", true),
            ("w?w.example.com", "wxw.example.com", true),
            ("w?w.example.com", "ww.example.com", false),
            ("???", "abc", true),
            ("???", "abcd", false),
            ("???", "ab", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYYcd", false),
            ("a**", "a", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("a*", "", false),
        ];
        for (pattern, s, expected) in cases {
            assert_eq!(wildcard_matches(s, pattern), expected, "{pattern} vs {s}");
        }
        // The abort result: the recursion gives up once the string is used up.
        assert_eq!(strcasecmp_match(b"ab", b"*c"), Glob::Abort);
        assert_eq!(strcasecmp_match(b"ab", b"ac"), Glob::NoMatch);
        let long = "a".repeat(200);
        assert!(!wildcard_matches(
            &long,
            &"*a".repeat(30).replace("a*a", "a*b")
        ));
    }
}
