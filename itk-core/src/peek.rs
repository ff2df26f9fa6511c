//! Parsers for the first bytes of a connection, peeked with `MSG_PEEK`
//! without being consumed, so that a worker can decide which user's
//! process gets the socket (UserPools): a PROXY protocol header to skip,
//! the HTTP/1.x request head (routing host or ServerPath), and the TLS
//! ClientHello (SNI name).
//!
//! Every parser takes the bytes peeked so far and is bounded. It answers
//! `NeedMore` while the input is a valid prefix that more bytes could
//! decide, a routing key once decided, or [`Classic`] for anything
//! ambiguous, malformed, unsupported or over a limit: such a connection
//! takes the classic fork-per-connection path, where httpd itself answers
//! it. The rules mirror httpd 2.4.62 (line numbers refer to that tag);
//! where httpd would answer an error before choosing a vhost, the result
//! is `Classic`, never a guess.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a connection takes the classic path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classic {
    /// Completing the input would take more bytes than the limit allows.
    TooLarge,
    /// Input httpd, mod_ssl, OpenSSL or mod_remoteip would reject (or that
    /// this module does not mirror exactly).
    Malformed(&'static str),
    /// Well-formed input that is deliberately not routed (HTTP/2, obs-fold,
    /// duplicate Host, CONNECT, ECH, ...).
    Unsupported(&'static str),
}

// ---------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------

/// Where the connection's data starts after a PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// A complete, acceptable header of this many bytes: skip them (they
    /// are never routed on).
    Skip(usize),
    NeedMore,
    Classic(Classic),
}

/// The longest v1 line, CRLF included (PROXY protocol spec, 2.1).
pub const PROXY_V1_MAX: usize = 107;
/// The v2 signature.
pub const PROXY_V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, ver_cmd, fam, len.
const PROXY_V2_FIXED: usize = 16;
/// mod_remoteip reads the v2 addresses into a 216-byte union and aborts a
/// longer header (mod_remoteip.c:87-104, :1153).
const PROXY_V2_MAX_ADDR: usize = 216;

/// The PROXY header at the start of `buf`, on a listener where
/// mod_remoteip expects one (`RemoteIPProxyProtocol On`): v1 or v2, with
/// the checks of `remoteip_determine_version` (mod_remoteip.c:1025),
/// `remoteip_process_v1_header` (:769) and `remoteip_process_v2_header`
/// (:944). Anything mod_remoteip would abort, including a missing header
/// and the v2 LOCAL command it does not support, is `Classic`.
pub fn proxy_header(buf: &[u8]) -> Proxy {
    match buf.first() {
        None => Proxy::NeedMore,
        Some(b'P') => proxy_v1(buf),
        Some(b'\r') => proxy_v2(buf),
        Some(_) => Proxy::Classic(Classic::Malformed("no PROXY header")),
    }
}

/// True if `buf` and `expected` agree on their common prefix.
fn prefix_agrees(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

/// A v1 header: `PROXY <family> ...\r\n` within [`PROXY_V1_MAX`] bytes.
fn proxy_v1(buf: &[u8]) -> Proxy {
    if !prefix_agrees(buf, b"PROXY ") {
        return Proxy::Classic(Classic::Malformed("no PROXY header"));
    }
    let window = &buf[..buf.len().min(PROXY_V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= PROXY_V1_MAX {
            Proxy::Classic(Classic::TooLarge)
        } else {
            Proxy::NeedMore
        };
    };
    if window[cr] != b'\r' {
        return Proxy::Classic(Classic::Malformed("PROXY v1 line without CRLF"));
    }
    match window.get(cr + 1) {
        None if cr + 1 < PROXY_V1_MAX => Proxy::NeedMore,
        None => Proxy::Classic(Classic::TooLarge),
        Some(b'\n') if proxy_v1_words(&window[..cr]) => Proxy::Skip(cr + 2),
        _ => Proxy::Classic(Classic::Malformed("PROXY v1 line")),
    }
}

/// The words of a v1 line (without CRLF): `UNKNOWN` followed by anything,
/// or `TCP4`/`TCP6` with two addresses of that family and two ports.
fn proxy_v1_words(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let family = words.next();
    if family == Some("UNKNOWN") {
        return true;
    }
    let rest: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = rest[..] else {
        return false;
    };
    let addrs = match family {
        Some("TCP4") => src.parse::<Ipv4Addr>().is_ok() && dst.parse::<Ipv4Addr>().is_ok(),
        Some("TCP6") => src.parse::<Ipv6Addr>().is_ok() && dst.parse::<Ipv6Addr>().is_ok(),
        _ => false,
    };
    addrs && parse_port(sport.as_bytes()).is_some() && parse_port(dport.as_bytes()).is_some()
}

/// A v2 header: the signature, version 2 with the PROXY command, family
/// TCP over IPv4 or IPv6 with room for its addresses, at most 216 bytes of
/// addresses and TLVs.
fn proxy_v2(buf: &[u8]) -> Proxy {
    if !prefix_agrees(buf, &PROXY_V2_SIG) {
        return Proxy::Classic(Classic::Malformed("no PROXY header"));
    }
    if buf.len() < PROXY_V2_FIXED {
        return Proxy::NeedMore;
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd == 0x20 {
        return Proxy::Classic(Classic::Unsupported("PROXY v2 LOCAL command"));
    }
    if ver_cmd != 0x21 {
        return Proxy::Classic(Classic::Malformed("PROXY v2 version/command"));
    }
    let min = match fam {
        0x11 => 12,
        0x21 => 36,
        _ => return Proxy::Classic(Classic::Unsupported("PROXY v2 family")),
    };
    if len > PROXY_V2_MAX_ADDR {
        return Proxy::Classic(Classic::TooLarge);
    }
    if len < min {
        return Proxy::Classic(Classic::Malformed("PROXY v2 address length"));
    }
    if buf.len() < PROXY_V2_FIXED + len {
        return Proxy::NeedMore;
    }
    Proxy::Skip(PROXY_V2_FIXED + len)
}

/// A decimal port 0..=65535 of at most 5 digits.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// HTTP/1.x request head
// ---------------------------------------------------------------------------

/// The request limits the head must respect (httpd's `LimitRequest*`
/// and `HttpProtocolOptions`), plus the overall peek bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// The whole head, request line to the empty line included, must fit
    /// in this many bytes (e.g. 32 KiB).
    pub head: usize,
    /// `LimitRequestLine`: the longest request line, line ending excluded.
    pub request_line: usize,
    /// `LimitRequestFieldSize`: the longest header line, line ending
    /// excluded, and the longest merged value of a repeated header.
    pub field_size: usize,
    /// `LimitRequestFields` (0: unlimited).
    pub fields: usize,
    /// `HttpProtocolOptions Strict` (the default): lines must end in CRLF.
    /// With `Unsafe` httpd also accepts a bare LF.
    pub strict: bool,
}

impl Default for HttpLimits {
    /// httpd's defaults (include/httpd.h:194-202) and a 32 KiB head.
    fn default() -> Self {
        HttpLimits {
            head: 32 * 1024,
            request_line: 8190,
            field_size: 8190,
            fields: 100,
            strict: true,
        }
    }
}

/// How long a worker waits for a request head (or a TLS ClientHello)
/// before it gives the connection to the classic path: httpd's `Timeout`
/// (`timeout_secs`), or less where mod_reqtimeout would end the head
/// sooner: the first value of its `header=` stage (`header=20-40,MinRate=500`:
/// 20 s; `header=0`: off). `reqtimeout` is None without mod_reqtimeout,
/// else the arguments of the server's `RequestReadTimeout` lines in order
/// (none: its default, `header=20-40,MinRate=500`). At least 1 s and at
/// most 60 s: a worker is not held longer by a silent client.
pub fn head_timeout(timeout_secs: u64, reqtimeout: Option<&[String]>) -> u64 {
    let mut header = reqtimeout.map(|_| 20);
    for args in reqtimeout.unwrap_or_default() {
        for word in args.split_whitespace() {
            // (httpd hands mod_reqtimeout each word unquoted)
            let word = word.trim_matches(['"', '\'']);
            let Some((stage, value)) = word.split_once('=') else {
                continue;
            };
            if !stage.eq_ignore_ascii_case("header") {
                continue;
            }
            match value.split([',', '-']).next().map(str::parse::<u64>) {
                Some(Ok(0)) => header = None,
                Some(Ok(n)) => header = Some(n),
                _ => {}
            }
        }
    }
    header
        .map_or(timeout_secs, |h| h.min(timeout_secs))
        .clamp(1, 60)
}

/// What the request head says about the vhost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Http {
    NeedMore,
    Classic(Classic),
    /// The first byte is a TLS handshake record: try [`tls_client_hello`].
    Tls,
    /// A routing host, normalized as httpd's `r->hostname`.
    Host(HostRequest),
    /// An HTTP/1.0 request without a host (no or empty `Host:`, no
    /// absolute-form target): the address's default vhost, or the
    /// `ServerPath` match of `path` (httpd's `r->uri`).
    NoHost {
        path: String,
    },
}

/// A request with a host to route on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRequest {
    /// Lower-cased, port and one trailing dot stripped; an IPv6 literal
    /// without its brackets (as httpd's `r->hostname`).
    pub host: String,
    /// The port given with the host, if any (never used for routing: httpd
    /// uses the connection's local port).
    pub port: Option<u16>,
    /// The host came from an absolute-form request-target.
    pub from_uri: bool,
    /// httpd's `r->uri`: the raw (still %-encoded) path without the query.
    pub path: String,
}

/// A line of the head: its content without the line ending, and where the
/// next line starts.
enum Line<'a> {
    Complete(&'a [u8], usize),
    Incomplete,
    Bad(Classic),
}

/// The line starting at `start`, at most `max` bytes long (line ending
/// excluded), ending within `limits.head` bytes of the buffer. A bare LF
/// ends a line only when not strict (`ap_rgetline_core`,
/// server/protocol.c:386-393).
fn line_at<'a>(buf: &'a [u8], start: usize, max: usize, limits: &HttpLimits) -> Line<'a> {
    let window = &buf[start..buf.len().min(limits.head)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        let partial = window.strip_suffix(b"\r").unwrap_or(window);
        return if buf.len() >= limits.head || partial.len() > max {
            Line::Bad(Classic::TooLarge)
        } else {
            Line::Incomplete
        };
    };
    let content = match window[..lf].strip_suffix(b"\r") {
        Some(content) => content,
        None if limits.strict => return Line::Bad(Classic::Malformed("bare LF")),
        None => &window[..lf],
    };
    if content.len() > max {
        return Line::Bad(Classic::TooLarge);
    }
    Line::Complete(content, start + lf + 1)
}

/// The request line: method, target and HTTP major/minor version.
struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    minor: u8,
}

/// RFC 7230 `tchar` (`T_HTTP_TOKEN_STOP`, server/gen_test_char.c:132).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// VCHAR or obs-text (`T_VCHAR_OBSTEXT`, server/gen_test_char.c:150).
fn is_vchar_obstext(b: u8) -> bool {
    (0x21..0x7f).contains(&b) || b >= 0x80
}

/// `ap_parse_request_line` (server/protocol.c:721) in strict mode:
/// `method SP request-target SP HTTP/d.d`, single spaces, nothing else.
/// HTTP/0.9, other versions, the HTTP/2 preface and anything httpd would
/// 400 are `Classic`.
fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, Classic> {
    let bad = Classic::Malformed("request line");
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(proto)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad);
    }
    if target.is_empty() || !target.iter().all(|&b| is_vchar_obstext(b)) {
        return Err(bad);
    }
    let [
        b'H',
        b'T',
        b'T',
        b'P',
        b'/',
        major @ b'1'..=b'9',
        b'.',
        minor @ b'0'..=b'9',
    ] = *proto
    else {
        return Err(bad);
    };
    if method == b"PRI" && target == b"*" && proto == b"HTTP/2.0" {
        return Err(Classic::Unsupported("HTTP/2 prior knowledge"));
    }
    if major != b'1' {
        return Err(Classic::Unsupported("HTTP version"));
    }
    if method == b"CONNECT" {
        return Err(Classic::Unsupported("CONNECT"));
    }
    Ok(RequestLine {
        method,
        target,
        minor: minor - b'0',
    })
}

/// What the request-target gives: an absolute-form host and port, and
/// httpd's `r->uri`.
struct Target<'a> {
    authority: Option<(&'a [u8], Option<u16>)>,
    path: String,
}

/// `ap_parse_uri` (server/protocol.c:580) with `apr_uri_parse`, for the
/// forms routed on: origin-form (leading `//` runs collapsed to one `/`,
/// as httpd does), `*` for OPTIONS, and absolute-form with the `http`
/// scheme (`ap_http_scheme` of a plain connection; its host overrides
/// `Host:`). Fragments and userinfo (400 in strict mode), other schemes
/// and anything unusual are `Classic`.
fn parse_target<'a>(method: &[u8], target: &'a [u8]) -> Result<Target<'a>, Classic> {
    if target.contains(&b'#') {
        return Err(Classic::Malformed("fragment in request-target"));
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            Ok(Target {
                authority: None,
                path: "*".into(),
            })
        } else {
            Err(Classic::Malformed("* request-target"))
        };
    }
    if target[0] == b'/' {
        let mut path = target;
        while path.starts_with(b"//") {
            path = &path[1..];
        }
        return Ok(Target {
            authority: None,
            path: path_of(path, method)?,
        });
    }
    let rest = strip_prefix_ignore_case(target, b"http://")
        .ok_or(Classic::Unsupported("request-target form or scheme"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (host, port) = split_uri_authority(&rest[..end])?;
    Ok(Target {
        authority: Some((host, port)),
        path: path_of(&rest[end..], method)?,
    })
}

/// `r->uri`: the path up to `?`; an empty one is `/` (`*` for OPTIONS).
/// Raw obs-text that is not UTF-8 is `Classic`.
fn path_of(path_and_query: &[u8], method: &[u8]) -> Result<String, Classic> {
    let end = path_and_query
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(path_and_query.len());
    match &path_and_query[..end] {
        b"" if method == b"OPTIONS" => Ok("*".into()),
        b"" => Ok("/".into()),
        path => String::from_utf8(path.to_vec())
            .map_err(|_| Classic::Unsupported("request-target is not UTF-8")),
    }
}

/// `s` without the ASCII case-insensitive `prefix`.
fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The host (brackets removed from an IPv6 literal) and port of an
/// absolute-form authority, as `apr_uri_parse` splits them. Userinfo, an
/// empty host and a bad port are `Classic`.
fn split_uri_authority(auth: &[u8]) -> Result<(&[u8], Option<u16>), Classic> {
    let bad = Err(Classic::Malformed("absolute-form authority"));
    if auth.contains(&b'@') {
        return Err(Classic::Unsupported("userinfo in request-target"));
    }
    let (host, port) = if let Some(v6) = auth.strip_prefix(b"[") {
        let Some(close) = v6.iter().position(|&b| b == b']') else {
            return bad;
        };
        match &v6[close + 1..] {
            [] => (&v6[..close], None),
            [b':', port @ ..] => (&v6[..close], Some(port)),
            _ => return bad,
        }
    } else {
        match auth.iter().position(|&b| b == b':') {
            Some(colon) => (&auth[..colon], Some(&auth[colon + 1..])),
            None => (auth, None),
        }
    };
    let port = match port {
        None | Some(b"") => None,
        Some(digits) => match parse_port(digits) {
            Some(p) => Some(p),
            None => return bad,
        },
    };
    if host.is_empty() {
        return bad;
    }
    Ok((host, port))
}

/// The header fields the routing needs, collected while reading the head.
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a [u8]>,
    /// Each field name (as first seen) with its merged value length and
    /// count, for the limit httpd checks after merging.
    merged: Vec<(&'a [u8], usize)>,
    count: usize,
}

impl<'a> Fields<'a> {
    /// One `name: value` line (`ap_get_mime_headers_core` strict branch,
    /// server/protocol.c:1282-1317): a token, `:`, optional whitespace, a
    /// value without control characters other than HT. Duplicate `Host`
    /// and an `h2c` upgrade are `Classic`.
    fn add(&mut self, line: &'a [u8], limits: &HttpLimits) -> Result<(), Classic> {
        self.count += 1;
        if limits.fields != 0 && self.count > limits.fields {
            return Err(Classic::TooLarge);
        }
        let colon = line
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(line.len());
        if colon == 0 || line.get(colon) != Some(&b':') {
            return Err(Classic::Malformed("header field name"));
        }
        let name = &line[..colon];
        let value = trim_ows(&line[colon + 1..]);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Classic::Malformed("header field value"));
        }
        if name.eq_ignore_ascii_case(b"host") {
            if self.host.is_some() {
                return Err(Classic::Unsupported("duplicate Host"));
            }
            self.host = Some(value);
        }
        if name.eq_ignore_ascii_case(b"upgrade") && has_token(value, b"h2c") {
            return Err(Classic::Unsupported("h2c upgrade"));
        }
        self.merge(name, value.len(), limits)
    }

    /// `apr_table_compress(..., APR_OVERLAP_TABLES_MERGE)` joins repeated
    /// fields with ", " and httpd 400s a merged value over
    /// `LimitRequestFieldSize` (server/protocol.c:1342-1345, :1073).
    fn merge(&mut self, name: &'a [u8], len: usize, limits: &HttpLimits) -> Result<(), Classic> {
        let total = match self
            .merged
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some((_, total)) => {
                *total += 2 + len;
                *total
            }
            None => {
                self.merged.push((name, len));
                len
            }
        };
        if total > limits.field_size {
            return Err(Classic::TooLarge);
        }
        Ok(())
    }
}

/// `value` without leading and trailing SP/HT.
fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &value[start..end]
}

/// True if the comma-separated `list` has `token` (case-insensitively,
/// ignoring a `/version`).
fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|item| {
        let item = trim_ows(item);
        let name = item.split(|&b| b == b'/').next().unwrap_or(item);
        name.eq_ignore_ascii_case(token)
    })
}

/// The routing host of the HTTP/1.x request head at the start of `buf`
/// (after any PROXY header), the way httpd 2.4.62 chooses it:
/// `read_request_line` + `ap_parse_request_line` (server/protocol.c:655,
/// :721), `ap_get_mime_headers_core` (:1089), `ap_check_request_header`
/// (:1000) and `ap_update_vhost_from_headers_ex` + `fix_hostname`
/// (server/vhost.c:1173, :828).
///
/// An absolute-form target's host overrides `Host:`. HTTP/1.1 without
/// `Host:` and HTTP/1.0 with neither host nor `Host:` are what httpd makes
/// of them: 400 (`Classic`) and [`Http::NoHost`]. Leading empty lines
/// (which httpd skips), obs-fold, duplicate `Host:`, NUL and other
/// control bytes, and every limit of `limits` give `Classic`.
pub fn http_request(buf: &[u8], limits: &HttpLimits) -> Http {
    match buf.first() {
        None => return Http::NeedMore,
        Some(0x16) => return Http::Tls,
        Some(b'\r' | b'\n') => return Http::Classic(Classic::Unsupported("leading empty line")),
        Some(_) => {}
    }
    match http_head(buf, limits) {
        Ok(Some(http)) => http,
        Ok(None) => Http::NeedMore,
        Err(classic) => Http::Classic(classic),
    }
}

/// [`http_request`] once the first byte is known: `None` for NeedMore.
fn http_head(buf: &[u8], limits: &HttpLimits) -> Result<Option<Http>, Classic> {
    let (line, mut next) = match line_at(buf, 0, limits.request_line, limits) {
        Line::Complete(line, next) => (line, next),
        Line::Incomplete => return Ok(None),
        Line::Bad(classic) => return Err(classic),
    };
    let request = parse_request_line(line)?;
    let target = parse_target(request.method, request.target)?;
    let mut fields = Fields::default();
    loop {
        let (line, after) = match line_at(buf, next, limits.field_size, limits) {
            Line::Complete(line, after) => (line, after),
            Line::Incomplete => return Ok(None),
            Line::Bad(classic) => return Err(classic),
        };
        next = after;
        match line.first() {
            None => break,
            Some(b' ' | b'\t') => return Err(Classic::Unsupported("obs-fold")),
            Some(_) => fields.add(line, limits)?,
        }
    }
    route_request(&request, target, fields.host).map(Some)
}

/// The routing decision once the head is complete
/// (`ap_update_vhost_from_headers_ex`, server/vhost.c:1173-1194, and the
/// missing-host check of `ap_check_request_header`, server/protocol.c:
/// 1034-1048).
fn route_request(
    request: &RequestLine<'_>,
    target: Target<'_>,
    host_header: Option<&[u8]>,
) -> Result<Http, Classic> {
    if request.minor >= 1 && host_header.is_none() {
        return Err(Classic::Malformed("HTTP/1.1 without Host"));
    }
    let normalized = match (target.authority, host_header) {
        (Some((host, port)), _) => fix_uri_hostname(host).map(|h| (h, port, true))?,
        (None, Some(value)) if !value.is_empty() => {
            fix_header_hostname(value).map(|(h, port)| (h, port, false))?
        }
        (None, _) if request.minor >= 1 => {
            return Err(Classic::Malformed("HTTP/1.1 without hostname"));
        }
        (None, _) => return Ok(Http::NoHost { path: target.path }),
    };
    let (host, port, from_uri) = normalized;
    Ok(Http::Host(HostRequest {
        host,
        port,
        from_uri,
        path: target.path,
    }))
}

/// `fix_hostname(r, host_header, ...)` (server/vhost.c:828) for a `Host:`
/// value: a purely numeric host is refused, `apr_parse_addr_port` splits
/// off a port (1..=65535) and brackets an IPv6 literal (no scope id), and
/// the host is checked and lower-cased.
fn fix_header_hostname(value: &[u8]) -> Result<(String, Option<u16>), Classic> {
    let bad = Classic::Malformed("Host");
    if value.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let (addr, port) = split_addr_port(value)?;
    if let Some(inner) = addr.strip_prefix(b"[") {
        let inner = inner.strip_suffix(b"]").ok_or(bad)?;
        if inner.contains(&b']') || inner.contains(&b'%') {
            return Err(bad);
        }
        return Ok((fix_v6_literal(inner)?, port));
    }
    Ok((fix_name(addr)?, port))
}

/// `apr_parse_addr_port`'s split: a trailing `:digits` is the port (it
/// must be 1..=65535, and a string starting with `:` is refused);
/// anything else stays in the address.
fn split_addr_port(value: &[u8]) -> Result<(&[u8], Option<u16>), Classic> {
    let digits = value
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let colon = value.len() - digits;
    if digits == 0 || colon == 0 || value[colon - 1] != b':' {
        return Ok((value, None));
    }
    if colon == 1 {
        return Err(Classic::Malformed("Host"));
    }
    match parse_port(&value[colon..]) {
        Some(port) if port != 0 => Ok((&value[..colon - 1], Some(port))),
        _ => Err(Classic::Malformed("Host port")),
    }
}

/// `fix_hostname(r, NULL, ...)` for an absolute-form target's host
/// (already without port and brackets): purely numeric is refused, a host
/// with `:` is an IPv6 literal.
fn fix_uri_hostname(host: &[u8]) -> Result<String, Classic> {
    if host.iter().all(u8::is_ascii_digit) {
        return Err(Classic::Malformed("absolute-form host"));
    }
    if host.contains(&b':') {
        return fix_v6_literal(host);
    }
    fix_name(host)
}

/// `fix_hostname_v6_literal` (server/vhost.c:708): hex digits lower-cased,
/// at most one `::`, no `:.`, `.:` or `..`; the literal must also parse as
/// an IPv6 address (`apr_inet_pton` in `apr_parse_addr_port`).
fn fix_v6_literal(inner: &[u8]) -> Result<String, Classic> {
    let bad = Err(Classic::Malformed("IPv6 literal"));
    let text = std::str::from_utf8(inner).map_err(|_| Classic::Malformed("IPv6 literal"))?;
    if text.parse::<Ipv6Addr>().is_err() {
        return bad;
    }
    let mut double_colon = false;
    for (i, &b) in inner.iter().enumerate() {
        let next = inner.get(i + 1).copied();
        match b {
            b':' if next == Some(b':') => {
                if double_colon {
                    return bad;
                }
                double_colon = true;
            }
            b':' if next == Some(b'.') => return bad,
            b'.' if matches!(next, Some(b':' | b'.')) => return bad,
            b':' | b'.' => {}
            _ if b.is_ascii_hexdigit() => {}
            _ => return bad,
        }
    }
    Ok(text.to_ascii_lowercase())
}

/// `fix_hostname_non_v6` (server/vhost.c:741) then `strict_hostname_check`
/// (:772), which httpd applies in its default strict mode and which this
/// module always applies (a host it refuses goes to the classic path even
/// under `HttpProtocolOptions Unsafe`).
fn fix_name(host: &[u8]) -> Result<String, Classic> {
    let bad = Err(Classic::Malformed("host name"));
    if host.windows(2).any(|w| w == b"..") || host.iter().any(|&b| b == b'/' || b == b'\\') {
        return bad;
    }
    let host = host.strip_suffix(b".").unwrap_or(host);
    if !strict_hostname_ok(host) {
        return bad;
    }
    // Only [A-Za-z0-9._-] are left, so this is ASCII.
    Ok(String::from_utf8_lossy(host).to_ascii_lowercase())
}

/// `strict_hostname_check` (server/vhost.c:772): letters, digits, `-`, `_`
/// and `.` only; a dotted-decimal address needs exactly three dots and no
/// leading zeros; otherwise the last label, if after a dot, starts with a
/// letter.
fn strict_hostname_ok(host: &[u8]) -> bool {
    let mut dotted_decimal = true;
    let mut leading_zeroes = false;
    let mut dots = 0;
    for (i, &b) in host.iter().enumerate() {
        if b.is_ascii_alphabetic() || b == b'-' || b == b'_' {
            dotted_decimal = false;
        } else if b == b'.' {
            dots += 1;
            let next = host.get(i + 1).copied();
            let after = host.get(i + 2).copied();
            if next == Some(b'0') && after.is_some_and(|c| c.is_ascii_digit()) {
                leading_zeroes = true;
            }
        } else if !b.is_ascii_digit() {
            return false;
        }
    }
    if dotted_decimal {
        let first_zero = host.first() == Some(&b'0') && host.get(1).is_some_and(u8::is_ascii_digit);
        let leading = leading_zeroes || host.first() == Some(&b'.') || first_zero;
        return !leading && dots == 3;
    }
    match host.iter().rposition(|&b| b == b'.') {
        Some(dot) => host.get(dot + 1).is_none_or(|c| c.is_ascii_alphabetic()),
        None => true,
    }
}

// ---------------------------------------------------------------------------
// TLS ClientHello
// ---------------------------------------------------------------------------

/// The largest ClientHello body accepted by default (§3.16 of the design).
pub const TLS_MAX_HELLO: usize = 16 * 1024;
/// The largest TLS plaintext record (RFC 8446 5.1).
const TLS_MAX_RECORD: usize = 1 << 14;
const TLS_RECORD_HEADER: usize = 5;
const TLS_HANDSHAKE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// `encrypted_client_hello` (draft-ietf-tls-esni).
const EXT_ECH: u16 = 0xfe0d;

/// What the ClientHello says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    NeedMore,
    Classic(Classic),
    Hello(ClientHello),
}

/// The parts of a complete ClientHello that routing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHello {
    /// The `server_name` host_name, ASCII lower-cased and otherwise as
    /// sent (mod_ssl strips no trailing dot); `None` without the extension.
    pub server_name: Option<String>,
    /// The ALPN protocol names, in the client's order, if offered.
    pub alpn: Option<Vec<Vec<u8>>>,
    pub legacy_version: u16,
    /// Bytes of the records that carried the ClientHello.
    pub records_len: usize,
}

/// The ClientHello at the start of `buf`, reassembled from one or more
/// handshake records (content type 22, record version 0x0301..=0x0304,
/// 1..=16384 bytes each) with no other record in between, its body at most
/// `limit` bytes (use [`TLS_MAX_HELLO`]). The hello must end with its
/// record. An `encrypted_client_hello` extension is `Classic`: the outer
/// name is not the real one.
pub fn tls_client_hello(buf: &[u8], limit: usize) -> Tls {
    match reassemble(buf, limit) {
        Ok(Some((body, records_len))) => match parse_client_hello(&body, records_len) {
            Ok(hello) => Tls::Hello(hello),
            Err(classic) => Tls::Classic(classic),
        },
        Ok(None) => Tls::NeedMore,
        Err(classic) => Tls::Classic(classic),
    }
}

/// The record header at `buf[pos..]`, as far as present: `Ok(None)` if a
/// valid prefix, else the record's length.
fn record_header(buf: &[u8], pos: usize) -> Result<Option<usize>, Classic> {
    let header = &buf[pos..buf.len().min(pos + TLS_RECORD_HEADER)];
    if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(Classic::Malformed("not a TLS handshake record"));
    }
    if header.get(1).is_some_and(|&major| major != 3) {
        return Err(Classic::Malformed("TLS record version"));
    }
    if header
        .get(2)
        .is_some_and(|&minor| !(1..=4).contains(&minor))
    {
        return Err(Classic::Malformed("TLS record version"));
    }
    let [_, _, _, hi, lo] = *header else {
        return Ok(None);
    };
    match usize::from(u16::from_be_bytes([hi, lo])) {
        0 => Err(Classic::Malformed("empty TLS handshake record")),
        len if len > TLS_MAX_RECORD => Err(Classic::Malformed("TLS record length")),
        len => Ok(Some(len)),
    }
}

/// The handshake message from consecutive records: `Ok(None)` while
/// incomplete, else the ClientHello body (handshake header stripped) and
/// the bytes of records it took.
fn reassemble(buf: &[u8], limit: usize) -> Result<Option<(Vec<u8>, usize)>, Classic> {
    let mut message = Vec::new();
    let mut pos = 0;
    loop {
        let Some(len) = record_header(buf, pos)? else {
            return Ok(None);
        };
        let start = pos + TLS_RECORD_HEADER;
        let end = buf.len().min(start + len);
        message.extend_from_slice(&buf[start..end]);
        let Some(total) = handshake_len(&message, limit)? else {
            if end < start + len {
                return Ok(None);
            }
            pos = end;
            continue;
        };
        if message.len() > total {
            return Err(Classic::Malformed(
                "data after the ClientHello in its record",
            ));
        }
        if end < start + len {
            return Ok(None);
        }
        if message.len() == total {
            message.drain(..TLS_HANDSHAKE_HEADER);
            return Ok(Some((message, end)));
        }
        pos = end;
    }
}

/// The whole handshake message's length (header included), once its
/// header is there: it must be a ClientHello of at most `limit` bytes.
fn handshake_len(message: &[u8], limit: usize) -> Result<Option<usize>, Classic> {
    if message
        .first()
        .is_some_and(|&t| t != HANDSHAKE_CLIENT_HELLO)
    {
        return Err(Classic::Malformed(
            "first handshake message is not a ClientHello",
        ));
    }
    let [_, a, b, c, ..] = *message else {
        return Ok(None);
    };
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if len > limit {
        return Err(Classic::TooLarge);
    }
    Ok(Some(TLS_HANDSHAKE_HEADER + len))
}

/// A cursor over a complete message; `None` when it runs out.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

const TRUNCATED: Classic = Classic::Malformed("truncated ClientHello");

/// The ClientHello body (RFC 8446 4.1.2): legacy_version, random,
/// legacy_session_id (<= 32), cipher_suites (even, non-empty),
/// legacy_compression_methods (non-empty), then either nothing or the
/// extensions filling the rest exactly, each type at most once.
fn parse_client_hello(body: &[u8], records_len: usize) -> Result<ClientHello, Classic> {
    let mut r = Reader { rest: body };
    let legacy_version = r.u16().ok_or(TRUNCATED)?;
    if legacy_version >> 8 != 3 {
        return Err(Classic::Malformed("ClientHello version"));
    }
    r.take(32).ok_or(TRUNCATED)?;
    let session_id = r.vec8().ok_or(TRUNCATED)?;
    let suites = r.vec16().ok_or(TRUNCATED)?;
    let compression = r.vec8().ok_or(TRUNCATED)?;
    if session_id.len() > 32 || suites.is_empty() || suites.len() % 2 != 0 || compression.is_empty()
    {
        return Err(Classic::Malformed("ClientHello fields"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: None,
        legacy_version,
        records_len,
    };
    if r.rest.is_empty() {
        return Ok(hello);
    }
    let extensions = r.vec16().ok_or(TRUNCATED)?;
    if !r.rest.is_empty() {
        return Err(Classic::Malformed("data after the ClientHello extensions"));
    }
    parse_extensions(extensions, &mut hello)?;
    Ok(hello)
}

/// The extensions block: server_name and ALPN are parsed, ECH refused,
/// duplicates refused (as OpenSSL does), others skipped.
fn parse_extensions(block: &[u8], hello: &mut ClientHello) -> Result<(), Classic> {
    let mut r = Reader { rest: block };
    let mut seen = Vec::new();
    while !r.rest.is_empty() {
        let kind = r.u16().ok_or(TRUNCATED)?;
        let data = r.vec16().ok_or(TRUNCATED)?;
        if seen.contains(&kind) {
            return Err(Classic::Malformed("duplicate TLS extension"));
        }
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = Some(parse_server_name(data)?),
            EXT_ALPN => hello.alpn = Some(parse_alpn(data)?),
            EXT_ECH => return Err(Classic::Unsupported("encrypted_client_hello")),
            _ => {}
        }
    }
    Ok(())
}

/// The server_name extension the way `ssl_callback_ClientHello` reads it
/// (modules/ssl/ssl_engine_kernel.c:2446-2498): a list that is exactly one
/// host_name entry. What mod_ssl would give up on, and what OpenSSL then
/// refuses (an empty name, over 255 bytes, a NUL), is `Classic`, as is
/// anything but printable ASCII. The name is lower-cased, nothing else.
fn parse_server_name(data: &[u8]) -> Result<String, Classic> {
    let bad = Classic::Malformed("server_name extension");
    let mut r = Reader { rest: data };
    let list = r.vec16().ok_or(bad)?;
    if !r.rest.is_empty() {
        return Err(bad);
    }
    let mut r = Reader { rest: list };
    if r.u8() != Some(0) {
        return Err(bad);
    }
    let name = r.vec16().ok_or(bad)?;
    if !r.rest.is_empty() || name.is_empty() || name.len() > 255 {
        return Err(bad);
    }
    if !name.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Classic::Malformed("server_name characters"));
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The ALPN extension (RFC 7301 3.1): a non-empty list of non-empty names
/// filling the extension exactly.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, Classic> {
    let bad = Classic::Malformed("ALPN extension");
    let mut r = Reader { rest: data };
    let list = r.vec16().ok_or(bad)?;
    if !r.rest.is_empty() || list.is_empty() {
        return Err(bad);
    }
    let mut r = Reader { rest: list };
    let mut names = Vec::new();
    while !r.rest.is_empty() {
        match r.vec8() {
            Some(name) if !name.is_empty() => names.push(name.to_vec()),
            _ => return Err(bad),
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_timeout_follows_timeout_and_request_read_timeout() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // no mod_reqtimeout: Timeout, at most 60 s
        assert_eq!(head_timeout(300, None), 60);
        assert_eq!(head_timeout(10, None), 10);
        assert_eq!(head_timeout(0, None), 1);
        // its default (header=20-40,MinRate=500)
        assert_eq!(head_timeout(300, Some(&[])), 20);
        assert_eq!(head_timeout(5, Some(&[])), 5);
        // Debian's reqtimeout.conf
        let debian = args(&["header=20-40,minrate=500", "body=10,minrate=500"]);
        assert_eq!(head_timeout(300, Some(&debian)), 20);
        assert_eq!(
            head_timeout(300, Some(&args(&["handshake=5 header=10"]))),
            10
        );
        assert_eq!(head_timeout(300, Some(&args(&["Header=7,MinRate=100"]))), 7);
        // off, and the later line wins
        assert_eq!(head_timeout(300, Some(&args(&["header=0"]))), 60);
        assert_eq!(
            head_timeout(300, Some(&args(&["header=0", "header=15-30"]))),
            15
        );
        // only body: the default header stage stays
        assert_eq!(head_timeout(300, Some(&args(&["body=30"]))), 20);
        // quoted, as httpd allows
        assert_eq!(
            head_timeout(
                300,
                Some(&args(&["\"header=30-60,MinRate=500\" 'body=10'"]))
            ),
            30
        );
        // nonsense is ignored
        assert_eq!(head_timeout(300, Some(&args(&["header=abc", "foo"]))), 20);
    }

    // -- PROXY --------------------------------------------------------------

    const V1_TCP4: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";

    fn v2(ver_cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
        let mut h = PROXY_V2_SIG.to_vec();
        h.extend([ver_cmd, fam]);
        h.extend(u16::try_from(addr.len()).unwrap().to_be_bytes());
        h.extend(addr);
        h
    }

    #[test]
    fn proxy_v1_is_skipped_and_every_prefix_needs_more() {
        let mut conn = V1_TCP4.to_vec();
        conn.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(proxy_header(&conn), Proxy::Skip(V1_TCP4.len()));
        for n in 0..V1_TCP4.len() {
            assert_eq!(proxy_header(&V1_TCP4[..n]), Proxy::NeedMore, "prefix {n}");
        }
    }

    #[test]
    fn proxy_v1_families() {
        let tcp6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        assert_eq!(proxy_header(tcp6), Proxy::Skip(tcp6.len()));
        let unknown = b"PROXY UNKNOWN whatever follows\r\n";
        assert_eq!(proxy_header(unknown), Proxy::Skip(unknown.len()));
        assert_eq!(proxy_header(b"PROXY UNKNOWN\r\n"), Proxy::Skip(15));
    }

    #[test]
    fn proxy_v1_malformed() {
        for line in [
            &b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
            b"PROXY TCP4 192.0.2.300 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 x 2\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
            b"PROXY \xff\r\n",
            b"PROXX TCP4",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(
                matches!(proxy_header(line), Proxy::Classic(Classic::Malformed(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn proxy_v1_line_limit() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(PROXY_V1_MAX - 2, b'x');
        line.extend(b"\r\n");
        assert_eq!(proxy_header(&line), Proxy::Skip(PROXY_V1_MAX));
        line.insert(20, b'x');
        assert_eq!(proxy_header(&line), Proxy::Classic(Classic::TooLarge));
        // The CR is the 107th byte: its LF would be the 108th.
        assert_eq!(
            proxy_header(&line[..PROXY_V1_MAX]),
            Proxy::Classic(Classic::TooLarge)
        );
        assert_eq!(proxy_header(&line[..PROXY_V1_MAX - 1]), Proxy::NeedMore);
    }

    #[test]
    fn proxy_v2_is_skipped_and_every_prefix_needs_more() {
        let mut ip4 = [0u8; 12].to_vec();
        ip4.extend([0x03, 0, 2, 0xab, 0xcd]); // a TLV
        let header = v2(0x21, 0x11, &ip4);
        let mut conn = header.clone();
        conn.push(0x16);
        assert_eq!(proxy_header(&conn), Proxy::Skip(16 + 17));
        for n in 0..header.len() {
            assert_eq!(proxy_header(&header[..n]), Proxy::NeedMore, "prefix {n}");
        }
        assert_eq!(proxy_header(&v2(0x21, 0x21, &[0; 36])), Proxy::Skip(52));
        assert_eq!(proxy_header(&v2(0x21, 0x21, &[0; 216])), Proxy::Skip(232));
    }

    #[test]
    fn proxy_v2_refused() {
        let unsupported =
            |h: &[u8]| matches!(proxy_header(h), Proxy::Classic(Classic::Unsupported(_)));
        let malformed = |h: &[u8]| matches!(proxy_header(h), Proxy::Classic(Classic::Malformed(_)));
        assert!(
            unsupported(&v2(0x20, 0x00, &[])),
            "LOCAL: mod_remoteip aborts it"
        );
        assert!(unsupported(&v2(0x21, 0x31, &[0; 216])), "AF_UNIX");
        assert!(unsupported(&v2(0x21, 0x12, &[0; 12])), "UDP");
        assert!(malformed(&v2(0x11, 0x11, &[0; 12])), "version 1");
        assert!(malformed(&v2(0x22, 0x11, &[0; 12])), "command 2");
        assert!(malformed(&v2(0x21, 0x11, &[0; 11])), "short IPv4 addresses");
        assert!(malformed(&v2(0x21, 0x21, &[0; 35])), "short IPv6 addresses");
        assert_eq!(
            proxy_header(&v2(0x21, 0x21, &[0; 217])),
            Proxy::Classic(Classic::TooLarge)
        );
        let mut bad_sig = v2(0x21, 0x11, &[0; 12]);
        bad_sig[5] = b'X';
        assert!(malformed(&bad_sig));
        assert!(malformed(&bad_sig[..6]), "a wrong signature is known early");
        assert!(malformed(b"\r\n\r\nX"));
    }

    #[test]
    fn proxy_missing() {
        assert_eq!(proxy_header(b""), Proxy::NeedMore);
        assert!(matches!(
            proxy_header(&[0x16, 3, 1]),
            Proxy::Classic(Classic::Malformed(_))
        ));
    }

    // -- HTTP ---------------------------------------------------------------

    fn http(head: &str) -> Http {
        http_request(head.as_bytes(), &HttpLimits::default())
    }

    fn host(head: &str) -> (String, Option<u16>, bool, String) {
        match http(head) {
            Http::Host(h) => (h.host, h.port, h.from_uri, h.path),
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn classic(head: &str) -> Classic {
        match http(head) {
            Http::Classic(c) => c,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn malformed(head: &str) -> bool {
        matches!(classic(head), Classic::Malformed(_))
    }

    fn unsupported(head: &str) -> bool {
        matches!(classic(head), Classic::Unsupported(_))
    }

    fn with_host(value: &str) -> String {
        format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n")
    }

    #[test]
    fn http_host_and_every_prefix_needs_more() {
        let head = "GET /index.html?x=1 HTTP/1.1\r\nHost: Example.COM.:8080\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            host(head),
            (
                "example.com".into(),
                Some(8080),
                false,
                "/index.html".into()
            )
        );
        for n in 0..head.len() {
            assert_eq!(http(&head[..n]), Http::NeedMore, "prefix {n}");
        }
        let mut pipelined = head.to_string();
        pipelined.push_str("GET /next HTTP/1.1\r\n");
        assert_eq!(host(&pipelined).0, "example.com");
    }

    #[test]
    fn http_tls_and_empty() {
        assert_eq!(
            http_request(&[0x16, 3, 1], &HttpLimits::default()),
            Http::Tls
        );
        assert_eq!(http(""), Http::NeedMore);
        assert!(unsupported("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(unsupported("\nGET / HTTP/1.1\r\n"));
    }

    #[test]
    fn http_absolute_form_overrides_host() {
        let head = "GET http://Abs.Example:81/p/q?r HTTP/1.1\r\nHost: other.example\r\n\r\n";
        assert_eq!(
            host(head),
            ("abs.example".into(), Some(81), true, "/p/q".into())
        );
        let head = "GET HTTP://abs.example HTTP/1.1\r\nHost: \r\n\r\n";
        assert_eq!(host(head), ("abs.example".into(), None, true, "/".into()));
        let head = "GET http://abs.example:?q HTTP/1.0\r\n\r\n";
        assert_eq!(host(head), ("abs.example".into(), None, true, "/".into()));
        let head = "OPTIONS http://abs.example HTTP/1.0\r\n\r\n";
        assert_eq!(host(head).3, "*");
        let head = "GET http://[2001:DB8::1]:8080/x HTTP/1.0\r\n\r\n";
        assert_eq!(
            host(head),
            ("2001:db8::1".into(), Some(8080), true, "/x".into())
        );
        let head = "GET http://[2001:db8::1]/x HTTP/1.0\r\n\r\n";
        assert_eq!(host(head).1, None);
        let head = "GET http://abs.example./ HTTP/1.0\r\n\r\n";
        assert_eq!(host(head).0, "abs.example");
    }

    #[test]
    fn http_absolute_form_refused() {
        // HTTP/1.1 requires a Host header even with an absolute-form target
        // (server/protocol.c:1034-1036).
        assert!(malformed("GET http://a.example/ HTTP/1.1\r\n\r\n"));
        assert!(unsupported(
            "GET https://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
        ));
        assert!(unsupported(
            "GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
        ));
        assert!(unsupported(
            "GET http:/a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
        ));
        assert!(unsupported(
            "GET a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"
        ));
        assert!(unsupported("GET http://u:p@a.example/ HTTP/1.0\r\n\r\n"));
        for target in [
            "http:///x",
            "http://:80/",
            "http://a.example:x/",
            "http://a.example:65536/",
            "http://[::1/",
            "http://[::1]x/",
            "http://[::1%25eth0]/",
            "http://[zz::1]/",
            "http://1234/",
            "http://a..b/",
            "http://a%2fb/",
            "http://a.example/#frag",
        ] {
            assert!(
                malformed(&format!("GET {target} HTTP/1.0\r\n\r\n")),
                "{target}"
            );
        }
    }

    #[test]
    fn http_no_host() {
        assert_eq!(
            http("GET /docs/a?b HTTP/1.0\r\n\r\n"),
            Http::NoHost {
                path: "/docs/a".into()
            }
        );
        assert_eq!(
            http("GET /docs HTTP/1.0\r\nHost:\r\n\r\n"),
            Http::NoHost {
                path: "/docs".into()
            }
        );
        assert_eq!(
            http("GET //docs//x HTTP/1.0\r\n\r\n"),
            Http::NoHost {
                path: "/docs//x".into()
            }
        );
        assert_eq!(
            http("OPTIONS * HTTP/1.0\r\n\r\n"),
            Http::NoHost { path: "*".into() }
        );
        assert!(malformed("GET / HTTP/1.1\r\n\r\n"));
        assert!(malformed("GET / HTTP/1.1\r\nHost:  \r\n\r\n"));
        assert!(malformed("GET / HTTP/1.2\r\n\r\n"));
    }

    #[test]
    fn http_request_line_refused() {
        assert!(unsupported("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(unsupported("GET / HTTP/2.0\r\nHost: a\r\n\r\n"));
        assert!(unsupported(
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n"
        ));
        for line in [
            "GET /",
            "GET / http/1.1",
            "GET / HTTP/1.1 ",
            "GET / HTTP/1.10",
            "GET / HTTP/0.9",
            "GET / HTTP/1",
            "GET  / HTTP/1.1",
            "GET /  HTTP/1.1",
            " GET / HTTP/1.1",
            "GET\t/ HTTP/1.1",
            "G(T / HTTP/1.1",
            "GET / x HTTP/1.1",
            "GET /\x7f HTTP/1.1",
            "GET /\0 HTTP/1.1",
            "GET * HTTP/1.1",
            "GET /#f HTTP/1.1",
            "GET / HTTP/1.1\r",
        ] {
            assert!(malformed(&format!("{line}\r\nHost: a\r\n\r\n")), "{line:?}");
        }
        let non_utf8 = b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(matches!(
            http_request(non_utf8, &HttpLimits::default()),
            Http::Classic(Classic::Unsupported(_))
        ));
    }

    #[test]
    fn http_headers_refused() {
        assert!(unsupported("GET / HTTP/1.1\r\nHost: a\r\nhOsT: a\r\n\r\n"));
        assert!(unsupported(
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n"
        ));
        assert!(unsupported("GET / HTTP/1.1\r\n Host: a\r\n\r\n"));
        assert!(unsupported(
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n"
        ));
        assert!(unsupported(
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, H2C\r\n\r\n"
        ));
        for field in [
            "X : 1",
            "X",
            ": 1",
            "X\0: 1",
            "X: a\0b",
            "X: a\x01b",
            "X: a\rb",
            "X: \x7f",
        ] {
            assert!(
                malformed(&format!("GET / HTTP/1.1\r\n{field}\r\nHost: a\r\n\r\n")),
                "{field:?}"
            );
        }
        let (h, ..) = host(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nHost: \t a.example \t\r\nX: \u{80}\r\n\r\n",
        );
        assert_eq!(h, "a.example");
    }

    #[test]
    fn http_bare_lf() {
        let head = "GET / HTTP/1.1\nHost: a.example\n\n";
        assert!(malformed(head));
        assert!(malformed("GET / HTTP/1.1\r\nHost: a.example\n\r\n"));
        let unsafe_mode = HttpLimits {
            strict: false,
            ..HttpLimits::default()
        };
        match http_request(head.as_bytes(), &unsafe_mode) {
            Http::Host(h) => assert_eq!(h.host, "a.example"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn http_limits() {
        let limits = HttpLimits {
            head: 200,
            request_line: 30,
            field_size: 20,
            fields: 3,
            strict: true,
        };
        let run = |s: &str| http_request(s.as_bytes(), &limits);
        let too_large = Http::Classic(Classic::TooLarge);
        let line30 = format!("GET /{} HTTP/1.1", "a".repeat(16));
        assert_eq!(line30.len(), 30);
        assert!(matches!(
            run(&format!("{line30}\r\nHost: a\r\n\r\n")),
            Http::Host(_)
        ));
        let line31 = format!("GET /{} HTTP/1.1", "a".repeat(17));
        assert_eq!(run(&format!("{line31}\r\nHost: a\r\n\r\n")), too_large);
        assert_eq!(
            run(&format!("{line30}\r")),
            Http::NeedMore,
            "the LF may follow"
        );
        assert_eq!(run(&line30), Http::NeedMore);
        assert_eq!(
            run(&format!("{line30}x")),
            too_large,
            "known before the line ends"
        );
        assert_eq!(run(&format!("{line31}\r")), too_large);
        // A header line of exactly 20 bytes, then 21.
        let ok = run("GET / HTTP/1.1\r\nHost: a\r\nX: 12345678901234567\r\n\r\n");
        assert!(matches!(ok, Http::Host(_)), "{ok:?}");
        let long = "GET / HTTP/1.1\r\nHost: a\r\nX: 123456789012345678\r\n\r\n";
        assert_eq!(run(long), too_large);
        assert_eq!(
            run("GET / HTTP/1.1\r\nHost: a\r\nX: 123456789012345678"),
            too_large
        );
        // Three fields, then four.
        assert!(matches!(
            run("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nHost: a\r\n\r\n"),
            Http::Host(_)
        ));
        assert_eq!(
            run("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nHost: a\r\n\r\n"),
            too_large
        );
        let no_field_limit = HttpLimits {
            fields: 0,
            ..limits
        };
        let four = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nHost: a\r\n\r\n";
        assert!(matches!(http_request(four, &no_field_limit), Http::Host(_)));
        // Repeated fields merge to "123456789, 123456789" (20), then 21.
        assert!(matches!(
            run("GET / HTTP/1.1\r\nHost: a\r\nA: 123456789\r\nA: 123456789\r\n\r\n"),
            Http::Host(_)
        ));
        let merged = "GET / HTTP/1.1\r\nHost: a\r\nA: 123456789\r\na: 1234567890\r\n\r\n";
        assert_eq!(run(merged), too_large);
        // The whole head must end within 200 bytes.
        let unlimited = HttpLimits {
            field_size: 1000,
            ..limits
        };
        let fill = |n: usize| format!("GET / HTTP/1.1\r\nHost: a\r\nB: {}\r\n\r\n", "x".repeat(n));
        let run = |s: &str| http_request(s.as_bytes(), &unlimited);
        assert_eq!(fill(168).len(), 200);
        assert!(matches!(run(&fill(168)), Http::Host(_)));
        assert_eq!(run(&fill(169)), too_large);
        assert_eq!(run(&fill(169)[..200]), too_large);
        assert_eq!(run(&fill(169)[..199]), Http::NeedMore);
    }

    #[test]
    fn host_normalization() {
        let cases = [
            ("Example.COM", "example.com", None),
            ("example.com.", "example.com", None),
            ("example.com.:443", "example.com", Some(443)),
            ("a-b_c.example", "a-b_c.example", None),
            ("localhost", "localhost", None),
            ("LOCALHOST:1", "localhost", Some(1)),
            ("192.0.2.1", "192.0.2.1", None),
            ("192.0.2.1:80", "192.0.2.1", Some(80)),
            (".example", ".example", None),
            ("[::1]", "::1", None),
            ("[FE80::A:b]:8080", "fe80::a:b", Some(8080)),
            ("[::FFFF:192.0.2.1]", "::ffff:192.0.2.1", None),
        ];
        for (value, name, port) in cases {
            let (h, p, from_uri, _) = host(&with_host(value));
            assert_eq!((h.as_str(), p, from_uri), (name, port, false), "{value}");
        }
    }

    #[test]
    fn host_refused() {
        for value in [
            "80",
            ":80",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:0000080",
            "example.com:8o",
            "example..com",
            "a/b",
            "a\\b",
            ".",
            "..",
            "a,b",
            "a, b",
            "exa mple",
            "ex%41mple.com",
            "ex\u{e9}.com",
            "01.2.3.4",
            "1.02.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "foo.1com",
            "foo.-bar",
            "::1",
            "[::1",
            "::1]",
            "[::1]]",
            "[fe80::1%eth0]",
            "[::1]:",
            "[1::2::3]",
            "[::g]",
            "[1.2.3.4]",
            "[]",
        ] {
            assert!(malformed(&with_host(value)), "{value:?}");
        }
    }

    // -- TLS ----------------------------------------------------------------

    /// The first bytes `openssl s_client -servername Example.COM -alpn
    /// h2,http/1.1` (OpenSSL 3.0) sent: one record of 330 bytes.
    const OPENSSL_HELLO: [&str; 7] = [
        "160301014a010001460303962b5f31c98a6db7f68ebc097cd80c3d2ca146ab6bc6038482a1c46cb42cf8b520760872a9",
        "7fbb770e3828cbd7d36b97e7a6af12fae58f926347eb93ffdff657fe003e130213031301c02cc030009fcca9cca8ccaa",
        "c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff010000bf",
        "00000010000e00000b4578616d706c652e434f4d000b000403000102000a00160014001d0017001e0019001801000101",
        "010201030104002300000010000e000c02683208687474702f312e310016000000170000000d002a0028040305030603",
        "080708080809080a080b080408050806040105010601030303010302040205020602002b000908030403030302030100",
        "2d00020101003300260024001d00205ba3d48cb804d46ab3c15f4275a9a9043021e415998e64b8d63719ab93897e05",
    ];

    fn openssl_hello() -> Vec<u8> {
        let hex: String = OPENSSL_HELLO.concat();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn tls(buf: &[u8]) -> Tls {
        tls_client_hello(buf, TLS_MAX_HELLO)
    }

    fn hello_of(buf: &[u8]) -> ClientHello {
        match tls(buf) {
            Tls::Hello(h) => h,
            other => panic!("{other:?}"),
        }
    }

    fn tls_malformed(buf: &[u8]) -> bool {
        matches!(tls(buf), Tls::Classic(Classic::Malformed(_)))
    }

    /// The handshake message inside the records of `stream`.
    fn unrecord(stream: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let len = usize::from(u16::from_be_bytes([stream[pos + 3], stream[pos + 4]]));
            msg.extend(&stream[pos + 5..pos + 5 + len]);
            pos += 5 + len;
        }
        msg
    }

    /// `msg` in records of the given sizes, the last taking the rest.
    fn records(msg: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = msg;
        for (i, &size) in sizes.iter().chain(std::iter::once(&usize::MAX)).enumerate() {
            if rest.is_empty() && i > 0 {
                break;
            }
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            out.extend([22, 3, 1]);
            out.extend(u16::try_from(chunk.len()).unwrap().to_be_bytes());
            out.extend(chunk);
            rest = after;
        }
        out
    }

    fn vec16(data: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(data.len()).unwrap().to_be_bytes().to_vec();
        v.extend(data);
        v
    }

    fn sni(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend(vec16(name));
        vec16(&entry)
    }

    /// A ClientHello body with these extensions (`None`: no block).
    fn body(exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([7; 32]);
        b.push(32);
        b.extend([9; 32]);
        b.extend(vec16(&[0x13, 0x01, 0x13, 0x02]));
        b.extend([1, 0]);
        if let Some(exts) = exts {
            let mut block = Vec::new();
            for (kind, data) in exts {
                block.extend(kind.to_be_bytes());
                block.extend(vec16(data));
            }
            b.extend(vec16(&block));
        }
        b
    }

    fn message(body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut m = vec![1, len[1], len[2], len[3]];
        m.extend(body);
        m
    }

    fn hello_with(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        records(&message(&body(Some(exts))), &[])
    }

    #[test]
    fn tls_openssl_hello() {
        let stream = openssl_hello();
        assert_eq!(stream.len(), 335);
        let hello = hello_of(&stream);
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert_eq!(hello.alpn, Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()]));
        assert_eq!(hello.legacy_version, 0x0303);
        assert_eq!(hello.records_len, 335);
        let mut more = stream.clone();
        more.extend([0x14, 3, 3, 0, 1, 1]);
        assert_eq!(tls(&more), Tls::Hello(hello));
    }

    #[test]
    fn tls_every_two_segment_split_needs_more_first() {
        let stream = openssl_hello();
        for n in 0..stream.len() {
            assert_eq!(tls(&stream[..n]), Tls::NeedMore, "prefix {n}");
        }
    }

    #[test]
    fn tls_hello_split_over_two_records_at_every_point() {
        let stream = openssl_hello();
        let msg = unrecord(&stream);
        for split in 1..msg.len() {
            let two = records(&msg, &[split]);
            assert_eq!(two.len(), stream.len() + 5);
            let hello = hello_of(&two);
            assert_eq!(hello.server_name.as_deref(), Some("example.com"));
            assert_eq!(hello.records_len, two.len());
            for n in [split + 4, split + 5, split + 6, split + 9, two.len() - 1] {
                assert_eq!(tls(&two[..n]), Tls::NeedMore, "split {split} prefix {n}");
            }
        }
    }

    #[test]
    fn tls_one_byte_records() {
        let msg = unrecord(&openssl_hello());
        let ones = records(&msg, &vec![1; msg.len()]);
        assert_eq!(ones.len(), msg.len() * 6);
        assert_eq!(hello_of(&ones).server_name.as_deref(), Some("example.com"));
        assert_eq!(tls(&ones[..ones.len() - 1]), Tls::NeedMore);
    }

    #[test]
    fn tls_large_hello_over_two_records() {
        let mut exts = vec![(0, sni(b"big.example"))];
        let small = body(Some(&exts)).len();
        exts.push((21, vec![0; TLS_MAX_HELLO - small - 4]));
        let big = body(Some(&exts));
        assert_eq!(big.len(), TLS_MAX_HELLO);
        let msg = message(&big);
        let stream = records(&msg, &[TLS_MAX_RECORD]);
        assert_eq!(stream.len(), msg.len() + 10);
        assert_eq!(
            hello_of(&stream).server_name.as_deref(),
            Some("big.example")
        );
        assert_eq!(tls(&stream[..stream.len() - 1]), Tls::NeedMore);
        assert_eq!(tls(&stream[..TLS_MAX_RECORD + 5]), Tls::NeedMore);
        // One byte over the limit is known from the handshake header.
        assert_eq!(
            tls_client_hello(&stream[..9], TLS_MAX_HELLO - 1),
            Tls::Classic(Classic::TooLarge)
        );
        let huge = message(&vec![0; 20_000]);
        assert_eq!(
            tls(&records(&huge, &[TLS_MAX_RECORD])[..9]),
            Tls::Classic(Classic::TooLarge)
        );
    }

    #[test]
    fn tls_records_refused() {
        let stream = openssl_hello();
        assert!(tls_malformed(b"GET / HTTP/1.1\r\n"));
        assert!(tls_malformed(&[0x80, 0x2e, 0x01]), "SSLv2-compatible hello");
        for (i, byte) in [(0, 23), (0, 21), (1, 2), (2, 0), (2, 5)] {
            let mut bad = stream.clone();
            bad[i] = byte;
            assert!(tls_malformed(&bad), "byte {i} = {byte}");
            assert!(tls_malformed(&bad[..i + 1]), "known at byte {i}");
        }
        for v in [1, 2, 3, 4] {
            let mut ok = stream.clone();
            ok[2] = v;
            assert!(matches!(tls(&ok), Tls::Hello(_)), "record version 3.{v}");
        }
        let msg = unrecord(&stream);
        let mut empty_record = vec![22, 3, 1, 0, 0];
        empty_record.extend(&stream);
        assert!(tls_malformed(&empty_record));
        let mut oversized = records(&msg, &[]);
        oversized[3..5].copy_from_slice(&16385u16.to_be_bytes());
        assert!(tls_malformed(&oversized[..5]));
        // A change_cipher_spec record between the two fragments.
        let mut interleaved = records(&msg[..100], &[]);
        interleaved.extend([20, 3, 3, 0, 1, 1]);
        interleaved.extend(records(&msg[100..], &[]));
        assert!(tls_malformed(&interleaved));
        // Another handshake message after the ClientHello in its record.
        let mut extra = msg.clone();
        extra.extend([2, 0, 0, 0]);
        assert!(tls_malformed(&records(&extra, &[])));
        assert!(tls_malformed(&records(&extra, &[])[..stream.len() + 1]));
        let mut server_hello = msg.clone();
        server_hello[0] = 2;
        assert!(tls_malformed(&records(&server_hello, &[])[..6]));
        assert!(tls_malformed(&records(&message(&[]), &[])));
    }

    #[test]
    fn tls_hello_fields_refused() {
        let good = body(None);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let mut b = good.clone();
        b[0] = 2; // legacy_version 2.3
        cases.push(b);
        let mut b = good.clone();
        b[34] = 33; // session id longer than 32
        cases.push(b);
        cases.push(good[..good.len() - 1].to_vec()); // compression list cut
        let mut b = good.clone();
        b.truncate(35 + 32);
        b.extend([0, 3, 0x13, 0x01, 0x13, 1, 0]); // odd cipher_suites
        cases.push(b);
        let mut b = good.clone();
        b.truncate(35 + 32);
        b.extend([0, 0, 1, 0]); // no cipher suites
        cases.push(b);
        let mut b = good.clone();
        let n = b.len();
        b[n - 2] = 0; // no compression methods
        b.pop();
        cases.push(b);
        let mut b = body(Some(&[(0, sni(b"a.example"))]));
        b.push(0); // a byte after the extensions
        cases.push(b);
        let mut b = body(Some(&[(0, sni(b"a.example"))]));
        let n = b.len();
        b[n - 15] += 1; // an extension longer than the block
        cases.push(b);
        let mut b = body(Some(&[]));
        b.push(0); // a lone byte where an extension starts
        let n = b.len();
        b[n - 2] = 1;
        cases.push(b);
        cases.push(body(Some(&[(5, vec![]), (5, vec![])]))); // duplicate
        for (i, case) in cases.iter().enumerate() {
            assert!(tls_malformed(&records(&message(case), &[])), "case {i}");
        }
    }

    #[test]
    fn tls_server_name() {
        let name = |exts: &[(u16, Vec<u8>)]| hello_of(&hello_with(exts)).server_name;
        assert_eq!(
            hello_of(&records(&message(&body(None)), &[])).server_name,
            None
        );
        assert_eq!(name(&[]), None);
        assert_eq!(name(&[(5, vec![])]), None);
        assert_eq!(
            name(&[(0, sni(b"WWW.Example.com."))]).as_deref(),
            Some("www.example.com.")
        );
        assert_eq!(name(&[(0, sni(&[b'a'; 255]))]).map(|n| n.len()), Some(255));
        let mut two = vec![0];
        two.extend(vec16(b"a.example"));
        two.push(0);
        two.extend(vec16(b"b.example"));
        let mut host_type_1 = vec![1];
        host_type_1.extend(vec16(b"a.example"));
        let mut short_name = vec![0];
        short_name.extend(vec16(b"a.example"));
        short_name.pop();
        let mut trailing = sni(b"a.example");
        trailing.push(0);
        for bad in [
            vec16(&two),
            vec16(&host_type_1),
            vec16(&short_name),
            trailing,
            sni(b""),
            sni(&[b'a'; 256]),
            sni(b"a\0.example"),
            sni(b"a b.example"),
            sni("\u{e9}.example".as_bytes()),
            vec![0, 0],
            vec![],
        ] {
            assert!(tls_malformed(&hello_with(&[(0, bad.clone())])), "{bad:?}");
        }
    }

    #[test]
    fn tls_alpn_and_ech() {
        let alpn = |names: &[&[u8]]| {
            let mut list = Vec::new();
            for n in names {
                list.push(u8::try_from(n.len()).unwrap());
                list.extend(*n);
            }
            vec16(&list)
        };
        let hello = hello_of(&hello_with(&[(16, alpn(&[b"http/1.1"])), (0, sni(b"a"))]));
        assert_eq!(hello.alpn, Some(vec![b"http/1.1".to_vec()]));
        assert_eq!(hello.server_name.as_deref(), Some("a"));
        assert_eq!(hello_of(&hello_with(&[(0, sni(b"a"))])).alpn, None);
        let mut cut = alpn(&[b"h2"]);
        cut.push(1);
        for bad in [alpn(&[]), alpn(&[b""]), alpn(&[b"h2", b""]), cut, vec![0]] {
            assert!(tls_malformed(&hello_with(&[(16, bad.clone())])), "{bad:?}");
        }
        let ech = hello_with(&[(0, sni(b"public.example")), (EXT_ECH, vec![0; 40])]);
        assert_eq!(
            tls(&ech),
            Tls::Classic(Classic::Unsupported("encrypted_client_hello"))
        );
    }
}
