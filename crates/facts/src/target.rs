//! What the user asked to diagnose: `host:port`, `[v6]:port`, or a URL with a scheme.
//! Passwords are kept in a [`Secret`] that never serializes and never prints.

use crate::value::{Port, ValueError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Tcp,
    Redis,
    Rediss,
    Http,
    Https,
}

/// The schemes a target may name, as written in lower case.
const SCHEMES: [(&str, Scheme); 5] = [
    ("tcp", Scheme::Tcp),
    ("redis", Scheme::Redis),
    ("rediss", Scheme::Rediss),
    ("http", Scheme::Http),
    ("https", Scheme::Https),
];

impl Scheme {
    pub fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Tcp => None,
            Scheme::Redis | Scheme::Rediss => Some(6379),
            Scheme::Http => Some(80),
            Scheme::Https => Some(443),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Redis => "redis",
            Scheme::Rediss => "rediss",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
    /// Whether the scheme wraps the connection in TLS.
    pub fn tls(self) -> bool {
        matches!(self, Scheme::Rediss | Scheme::Https)
    }
    /// The process name a service for this scheme usually runs as.
    pub fn expected_process(self) -> Option<&'static str> {
        match self {
            Scheme::Redis | Scheme::Rediss => Some("redis-server"),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A password or token. Debug and Display print `<redacted>`; it has no Serialize.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it (an AUTH command).
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// What replaces every secret in every output.
pub const REDACTED: &str = "<redacted>";

/// The host part of a target: a name to resolve, or an address literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// The target as the user wrote it, with any password replaced by `<redacted>`.
    pub input: String,
    pub scheme: Scheme,
    pub host: Host,
    pub port: Port,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether a password came with the target (the password itself is never kept here).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_password: bool,
    #[serde(skip)]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u32>,
    /// HTTP path and query (`/` when absent); empty for other schemes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("empty target: expected host:port or a URL such as redis://host:6379")]
    Empty,
    #[error("unknown scheme {0:?} in target: expected tcp, redis, rediss, http or https")]
    UnknownScheme(String),
    #[error("target {0:?} has no port: write host:PORT (the tcp scheme has no default port)")]
    MissingPort(String),
    #[error("target {0:?} has an empty host")]
    EmptyHost(String),
    /// The port text is not repeated on its own: it may be a cut-off password
    /// (`redis://u:pw/x@h`); the (redacted) input shows it when it is not.
    #[error("target {input:?}: invalid port: expected a number from 1 to 65535")]
    BadPort { input: String, source: ValueError },
    #[error("target {0:?}: malformed IPv6 literal, write it as [addr]:port")]
    BadIpv6(String),
    #[error("target {0:?}: invalid host name")]
    BadHost(String),
    #[error("target {0:?}: invalid Redis database number in path (expected /0 to /2147483647)")]
    BadDb(String),
    #[error("target {0:?}: malformed percent-encoding in user or password")]
    BadEncoding(String),
    #[error("target {0:?}: a user or password needs a URL, e.g. redis://user:password@host:6379")]
    CredentialsWithoutScheme(String),
    #[error("target {0:?}: control characters (CR, LF, …) in the URL path; percent-encode them")]
    BadPath(String),
}

impl Target {
    /// Parse a target as the CLI and the watch config take it.
    pub fn parse(raw: &str) -> Result<Target, TargetError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(TargetError::Empty);
        }
        let (scheme, rest, had_scheme) = match raw.split_once("://") {
            Some((s, rest)) => {
                // Compared without case, not lower-cased into a new String for every target.
                let scheme = match SCHEMES.iter().find(|(name, _)| s.eq_ignore_ascii_case(name)) {
                    Some((_, scheme)) => *scheme,
                    None if s.contains('@') => return Err(TargetError::UnknownScheme(REDACTED.into())),
                    None => return Err(TargetError::UnknownScheme(s.to_string())),
                };
                (scheme, rest, true)
            }
            None => (Scheme::Tcp, raw, false),
        };
        // The authority ends at the first '/', '?' or '#' — for redis(s):// and tcp:// the
        // first one after the last '@': their tail is at most `/DB`, never an '@', and
        // redis-cli users write passwords holding '/', '?' or '#' unencoded. Cutting at the
        // first one made `redis://SEK#RIT@h:1` a target on host "sek" (asked of DNS) with the
        // password in the displayed input.
        let from = match scheme {
            Scheme::Redis | Scheme::Rediss | Scheme::Tcp if had_scheme => rest.rfind('@').map_or(0, |i| i + 1),
            _ => 0,
        };
        // By bytes (the three are ASCII): `find` with a char set decodes every char.
        let end = rest.as_bytes()[from..]
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .map_or(rest.len(), |i| from + i);
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) if had_scheme => (Some(&authority[..i]), &authority[i + 1..]),
            _ => (None, authority),
        };
        let redacted_input = redact_input(raw, userinfo);
        // Errors echo the input with everything up to the last '@' redacted: a password may
        // hold '/', '?' or '#' (so the authority split above cut it) or the scheme may be
        // missing (`u:pw@h:1`); the echo must not depend on having parsed it right. Written
        // only when an error is returned: a config of 10,000 targets parsed them all.
        let echo = || redact_for_error(raw);
        if !had_scheme && rest.contains('@') {
            return Err(TargetError::CredentialsWithoutScheme(echo()));
        }
        let (host_str, port_str) = split_host_port(hostport).map_err(|_| TargetError::BadIpv6(echo()))?;
        if host_str.is_empty() {
            return Err(TargetError::EmptyHost(echo()));
        }
        let host = match host_str.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if hostport.starts_with('[') => return Err(TargetError::BadIpv6(echo())),
            Err(_) => {
                if !valid_hostname(host_str) {
                    return Err(TargetError::BadHost(echo()));
                }
                Host::Name(host_str.to_ascii_lowercase())
            }
        };
        let port = match port_str {
            Some(p) => p.parse::<Port>().map_err(|source| TargetError::BadPort { input: echo(), source })?,
            None => match scheme.default_port() {
                Some(p) => Port::new(p).expect("default ports are non-zero"),
                None => return Err(TargetError::MissingPort(echo())),
            },
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                let u = percent_decode(u).ok_or_else(|| TargetError::BadEncoding(echo()))?;
                let p = match p {
                    Some(p) => Some(Secret::new(percent_decode(p).ok_or_else(|| TargetError::BadEncoding(echo()))?)),
                    None => None,
                };
                // redis://:pass@host means "password, default user".
                let u = if u.is_empty() { None } else { Some(u) };
                // redis://pass@host (no colon) is the password form redis-cli accepts too.
                match (u, p) {
                    (Some(u), None) if matches!(scheme, Scheme::Redis | Scheme::Rediss) => (None, Some(Secret::new(u))),
                    other => other,
                }
            }
        };
        let mut db = None;
        let mut path = String::new();
        match scheme {
            Scheme::Redis | Scheme::Rediss => {
                let p = tail.split(['?', '#']).next().unwrap_or("").trim_matches('/');
                if !p.is_empty() {
                    db = Some(
                        p.parse::<u32>()
                            .ok()
                            .filter(|d| *d <= i32::MAX as u32)
                            .ok_or_else(|| TargetError::BadDb(echo()))?,
                    );
                }
            }
            Scheme::Http | Scheme::Https => {
                let t = tail.split('#').next().unwrap_or("");
                // Control characters (CR/LF would become extra header lines) are refused;
                // spaces and non-ASCII are percent-encoded as a browser does.
                if t.chars().any(|c| c.is_control()) {
                    return Err(TargetError::BadPath(echo()));
                }
                let t = percent_encoding::utf8_percent_encode(t, PATH_ENCODE).to_string();
                path = if t.is_empty() {
                    "/".into()
                } else if t.starts_with('?') {
                    format!("/{t}")
                } else {
                    t.to_string()
                };
            }
            Scheme::Tcp => {
                if !tail.is_empty() && tail != "/" {
                    return Err(TargetError::BadHost(echo()));
                }
            }
        }
        Ok(Target {
            input: redacted_input,
            scheme,
            host,
            port,
            has_password: password.is_some(),
            user,
            password,
            db,
            path,
        })
    }

    /// `host:port` with brackets around IPv6 literals.
    pub fn authority(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            h => format!("{h}:{}", self.port),
        }
    }
}

fn split_host_port(s: &str) -> Result<(&str, Option<&str>), ()> {
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or(())?;
        let host = &rest[..close];
        let after = &rest[close + 1..];
        return match after {
            "" => Ok((host, None)),
            a if a.starts_with(':') => Ok((host, Some(&a[1..]))),
            _ => Err(()),
        };
    }
    // A bare IPv6 literal without brackets has several colons: treat it as host only.
    if s.bytes().filter(|&b| b == b':').count() > 1 {
        return if s.parse::<std::net::Ipv6Addr>().is_ok() { Ok((s, None)) } else { Err(()) };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h, Some(p))),
        None => Ok((s, None)),
    }
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        || h.ends_with('.') && valid_hostname(&h[..h.len() - 1])
}

/// Bytes percent-encoded in an HTTP path: spaces, quotes, angle brackets, backquote,
/// braces and everything outside ASCII (what the URL standard's path set encodes).
const PATH_ENCODE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`').add(b'{').add(b'}');

/// `%XX` decoding (strict: a `%` must start two hex digits) to UTF-8, on percent-encoding.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let well_formed = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

/// The input as an error echoes it: everything between the scheme and the last `@`
/// replaced, whatever the parse made of it.
fn redact_for_error(raw: &str) -> String {
    let Some(at) = raw.rfind('@') else { return raw.to_string() };
    let start = raw.find("://").map(|i| i + 3).filter(|s| *s <= at).unwrap_or(0);
    format!("{}{REDACTED}{}", &raw[..start], &raw[at..])
}

/// The input with the password part of the userinfo replaced.
fn redact_input(raw: &str, userinfo: Option<&str>) -> String {
    let Some(ui) = userinfo else { return raw.to_string() };
    let redacted_ui = match ui.split_once(':') {
        Some((u, _)) => format!("{u}:{REDACTED}"),
        // A lone userinfo on redis:// is the password.
        None => REDACTED.to_string(),
    };
    raw.replacen(&format!("{ui}@"), &format!("{redacted_ui}@"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Target {
        Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parse_errors_never_echo_a_password() {
        for raw in [
            "redis://u:SEKRIT/abc@h:99999",
            "redis://u:SEKRIT?x@h:0",
            "redis://u:SEKRIT#x@h:x",
            "redis://:SEKRIT/@h:99999",
            "u:SEKRIT@h:1",
            "SEKRIT@h",
            "u:SEKRIT@h://x",
            "redis://u:SEKRIT@[::1:6379",
            "redis://u:SEKRIT@h:6379/notadb",
            "http://u:SEKRIT@h:1/a\r\nX-Evil: 1",
        ] {
            let e = Target::parse(raw).expect_err(raw).to_string();
            assert!(!e.contains("SEKRIT"), "{raw}: {e}");
        }
    }

    #[test]
    fn a_redis_password_may_hold_slash_question_mark_or_hash() {
        for (raw, pw) in [
            ("redis://SEK#RIT@127.0.0.1:1", "SEK#RIT"),
            ("redis://:SEK?RIT@127.0.0.1:1/2", "SEK?RIT"),
            ("rediss://u:SEK/RIT@h:1", "SEK/RIT"),
            ("redis://u:a/b?c#d@h", "a/b?c#d"),
            ("tcp://u:SEK#RIT@h:1", "SEK#RIT"),
        ] {
            let t = p(raw);
            assert_eq!(t.password.as_ref().map(Secret::expose), Some(pw), "{raw}");
            assert!(
                matches!(&t.host, Host::Name(h) if h == "h") || t.host == Host::Ip("127.0.0.1".parse().unwrap()),
                "{raw}: {:?}",
                t.host
            );
            assert!(!t.input.contains("SEK") && !t.input.contains("a/b"), "{raw}: {}", t.input);
            assert!(t.input.contains(REDACTED), "{raw}: {}", t.input);
        }
        assert_eq!(p("redis://:SEK?RIT@127.0.0.1:1/2").db, Some(2));
        // Without a scheme an '@' anywhere is refused, redacted.
        for raw in ["SEK#RIT@h:1", "SEK/x@h:1"] {
            let e = Target::parse(raw).unwrap_err();
            assert!(matches!(e, TargetError::CredentialsWithoutScheme(_)), "{raw}: {e}");
            assert!(!e.to_string().contains("SEK"), "{e}");
        }
        // http(s) keeps the URL standard: an '@' in the path is part of the path.
        let t = p("http://h:8080/users/@me");
        assert_eq!(t.path, "/users/@me");
        assert!(t.password.is_none());
    }

    #[test]
    fn crlf_in_an_http_path_is_refused_spaces_encoded() {
        let e = Target::parse("http://h:80/a\r\nX-Injected: 1").unwrap_err();
        assert!(matches!(e, TargetError::BadPath(_)), "{e}");
        assert!(!e.to_string().contains('\r'), "{e}");
        assert!(matches!(Target::parse("http://h/a\x1b[2J"), Err(TargetError::BadPath(_))));
        assert_eq!(p("http://h/a b/é?q=1 2").path, "/a%20b/%C3%A9?q=1%202");
        assert_eq!(p("http://h/a%20b").path, "/a%20b");
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(p("redis://us%40r:p%2Fw@h:1").user.as_deref(), Some("us@r"));
        for bad in ["redis://u:%zz@h:1", "redis://u:%+1@h:1", "redis://u:%4@h:1", "redis://u:%ff@h:1"] {
            assert!(matches!(Target::parse(bad), Err(TargetError::BadEncoding(_))), "{bad}");
        }
    }

    #[test]
    fn plain_host_port() {
        let t = p("cache.internal:6379");
        assert_eq!(t.scheme, Scheme::Tcp);
        assert_eq!(t.host, Host::Name("cache.internal".into()));
        assert_eq!(t.port.get(), 6379);
    }

    #[test]
    fn ipv6_literals() {
        let t = p("[::1]:8080");
        assert_eq!(t.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(t.authority(), "[::1]:8080");
        let t = p("redis://[fd00::5]");
        assert_eq!(t.port.get(), 6379);
        assert!(Target::parse("[::1:80").is_err());
        assert!(Target::parse("[nothex]:80").is_err());
    }

    #[test]
    fn default_ports_by_scheme() {
        assert_eq!(p("redis://h").port.get(), 6379);
        assert_eq!(p("rediss://h").port.get(), 6379);
        assert_eq!(p("http://h").port.get(), 80);
        assert_eq!(p("https://h/x?y=1").port.get(), 443);
        assert_eq!(p("https://h/x?y=1").path, "/x?y=1");
        assert_eq!(p("http://h").path, "/");
        assert!(matches!(Target::parse("tcp://h"), Err(TargetError::MissingPort(_))));
        assert!(matches!(Target::parse("h"), Err(TargetError::MissingPort(_))));
    }

    #[test]
    fn redis_userinfo_and_db() {
        let t = p("redis://app:s3cr%40t@cache:6380/2");
        assert_eq!(t.user.as_deref(), Some("app"));
        assert_eq!(t.password.as_ref().unwrap().expose(), "s3cr@t");
        assert_eq!(t.db, Some(2));
        assert_eq!(t.input, "redis://app:<redacted>@cache:6380/2");
        let t = p("redis://:pw@cache");
        assert_eq!(t.user, None);
        assert_eq!(t.password.unwrap().expose(), "pw");
        let t = p("redis://onlypw@cache");
        assert_eq!(t.input, "redis://<redacted>@cache");
        assert_eq!(t.password.unwrap().expose(), "onlypw");
        assert!(matches!(Target::parse("redis://h/x"), Err(TargetError::BadDb(_))));
    }

    #[test]
    fn secrets_never_serialize_or_print() {
        let t = p("redis://u:hunter2@h:1/0");
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(json.contains("\"has_password\":true"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "ftp://h:1",
            "h:0",
            "h:65536",
            "h:-1",
            "h:abc",
            ":80",
            "redis://:80",
            "http://[::1",
            "a b:80",
            "tcp://h:1/x",
            "redis://u:%zz@h",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} should fail");
        }
        let e = Target::parse("ftp://h:1").unwrap_err().to_string();
        assert!(e.contains("unknown scheme"), "{e}");
    }
}
