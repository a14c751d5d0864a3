//! What the service said at its protocol (Redis, HTTP, TLS), and the redis.conf lint.
//! Owned by issue 5.
//!
//! Replies are kept as the exact text the server sent (RESP rendered one line per element,
//! control bytes escaped). A password never enters these types: an `AUTH` exchange records
//! `AUTH <redacted>` as its command.

use crate::value::{Micros, Port};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolFacts {
    /// One protocol probe per address that connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProtocolProbe>,
    /// The redis.conf of the serving redis-server, linted during the diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_conf: Option<LintReport>,
    /// When a gateway on the inspected host answered 502/503/504: what its log says about
    /// the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayFacts>,
}

/// A proxy's own account of its upstream failure, read from its error log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayFacts {
    /// `nginx`
    pub proxy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub error_log: String,
    /// The last upstream error line for this client, as written.
    pub line: String,
    /// `http://127.0.0.1:9000/v1/health`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `111: Connection refused`, `110: Connection timed out`, `no live upstreams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<String>,
    /// The upstream address is on the inspected host (loopback or one of its addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_on_inspected_host: Option<bool>,
}

impl GatewayFacts {
    /// Parse an nginx error-log line about an upstream; None for other lines.
    pub fn parse_nginx_line(line: &str) -> Option<GatewayFacts> {
        if !line.contains("upstream") || !(line.contains("[error]") || line.contains("[crit]")) {
            return None;
        }
        let upstream = line.split("upstream: \"").nth(1).and_then(|r| r.split('"').next()).map(str::to_string);
        let upstream_error = if line.contains("no live upstreams") {
            Some("no live upstreams".to_string())
        } else {
            line.split_once(" failed (")
                .or_else(|| line.split_once(" timed out ("))
                .and_then(|(_, r)| r.split(')').next())
                .map(str::to_string)
        };
        Some(GatewayFacts {
            proxy: "nginx".into(),
            line: line.trim_end().to_string(),
            upstream,
            upstream_error,
            ..Default::default()
        })
    }
}

/// Which protocol was spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    Redis,
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolProbe {
    pub address: IpAddr,
    pub port: Port,
    pub kind: ProtocolKind,
    /// Whether the client wrapped the connection in TLS (`rediss://`, `https://`).
    pub tls_requested: bool,
    /// Time to (re)connect for the protocol exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFacts>,
    /// Set when the server speaks TLS and the client did not, or the reverse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_mismatch: Option<TlsMismatch>,
    /// Why the probe could not finish (connect failed, deadline, I/O error), if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProtocolProbe {
    /// A probe of `kind` at `address:port` with nothing learned yet.
    pub fn empty(address: IpAddr, port: Port, kind: ProtocolKind, tls_requested: bool) -> ProtocolProbe {
        ProtocolProbe {
            address,
            port,
            kind,
            tls_requested,
            connect_us: None,
            tls: None,
            redis: None,
            http: None,
            tls_mismatch: None,
            error: None,
        }
    }
}

/// TLS on one side only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsMismatch {
    pub direction: MismatchDirection,
    /// What showed it: the first bytes that came back, escaped, or the confirming probe.
    pub observed: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MismatchDirection {
    /// Plaintext was sent to a port that speaks TLS.
    PlaintextToTls,
    /// A TLS ClientHello was sent to a port that speaks plaintext.
    TlsToPlaintext,
}

/// The TLS handshake and the certificate chain the server presented.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsFacts {
    pub ok: bool,
    /// The server name sent in SNI and verified against the certificate.
    pub server_name: String,
    /// `--insecure`: the chain was not verified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// `--ca FILE` used as the trust anchors instead of the system store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_us: Option<Micros>,
    /// Negotiated version, e.g. `TLSv1_3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<TlsFailure>,
    /// The handshake error as the TLS library words it, or the alert received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Leaf first, as sent by the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<CertFacts>,
}

/// Why a TLS handshake failed, in the words of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsFailure {
    Expired,
    NotYetValid,
    NameMismatch,
    UnknownIssuer,
    ProtocolVersion,
    /// The server sent something that is not TLS (see `TlsMismatch`).
    NotTls,
    /// The server closed or reset the connection during the handshake.
    Closed,
    Timeout,
    Other,
}

impl TlsFailure {
    pub fn describe(self) -> &'static str {
        match self {
            TlsFailure::Expired => "the certificate has expired",
            TlsFailure::NotYetValid => "the certificate is not yet valid",
            TlsFailure::NameMismatch => "the certificate does not name the host dialled",
            TlsFailure::UnknownIssuer => "the certificate was issued by an authority this client does not trust",
            TlsFailure::ProtocolVersion => "client and server share no TLS protocol version",
            TlsFailure::NotTls => "the server does not speak TLS",
            TlsFailure::Closed => "the server closed the connection during the handshake",
            TlsFailure::Timeout => "the handshake did not finish before the deadline",
            TlsFailure::Other => "the handshake failed",
        }
    }
}

/// Facts of one certificate, parsed from its DER.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Seconds since the Unix epoch, for arithmetic.
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    /// Whole days from the time of the probe to `not_after` (negative once expired).
    pub expires_in_days: i64,
    pub self_signed: bool,
    pub serial: String,
}

/// How much of a reply's text evidence keeps: a 64 MiB reply is stated by its length, not
/// copied into every report, evidence file and history row.
pub const REPLY_KEEP: usize = 4096;

/// The first `max` bytes of `s`, cut at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One request and the server's reply, exactly as sent back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The command as sent, with any password replaced by `<redacted>`.
    pub command: String,
    /// The reply text (its first [`REPLY_KEEP`] bytes when `truncated`); `None` when
    /// nothing came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// `reply` holds only the start of the reply's text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// With `truncated`: the reply's real size in bytes as the server sent it (the whole
    /// RESP frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// From sending the command to the end of its reply.
    pub elapsed_us: Micros,
    /// What went wrong reading or writing (`closed by server`, `deadline`, `ECONNRESET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A RESP error reply split into its code and text: `-NOAUTH Authentication required.`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisError {
    /// The first word: `DENIED`, `NOAUTH`, `WRONGPASS`, `ERR`, `LOADING`, …
    pub code: String,
    /// The whole line after `-`.
    pub text: String,
}

impl RedisError {
    pub fn parse(line: &str) -> RedisError {
        let text = line.strip_prefix('-').unwrap_or(line).trim_end_matches(['\r', '\n']).to_string();
        let code = text.split_whitespace().next().unwrap_or("").to_string();
        RedisError { code, text }
    }
    pub fn is_max_clients(&self) -> bool {
        self.text.contains("max number of clients reached")
    }
    pub fn is_auth_failure(&self) -> bool {
        self.code == "WRONGPASS"
            || self.text.contains("invalid password")
            || self.text.contains("invalid username-password pair")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RedisFacts {
    /// Bytes the server sent before any command (protected mode and max clients reply
    /// on accept), rendered as reply text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsolicited: Option<String>,
    pub exchanges: Vec<Exchange>,
    /// The user AUTH was sent for (`default` when only a password was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// Whether an AUTH was sent (the password itself is never kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auth_sent: bool,
    /// The first error reply, classified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<RedisError>,
    /// The database the URL names (`redis://host/N`), selected before PING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u32>,
    /// The error SELECT got (the whole line after `-`), when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_error: Option<String>,
    /// The server closed (FIN or RST) the connection before the probe was done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed_by_server: bool,
    /// `+PONG` came back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pong: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<RedisInfo>,
    /// `CONFIG GET` answers, when permitted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Why CONFIG GET was not answered (e.g. `-NOPERM …`), when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_refused: Option<String>,
}

/// The INFO fields the rules use; every other field of the asked sections stays in `other`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RedisInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_clients: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxclients: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_connections: Option<u64>,
    /// `rejected_connections` read again at the end of the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_connections_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_connections_received: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loading: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub other: BTreeMap<String, String>,
}

/// INFO fields kept in `other` besides the named ones (the rest would only bloat evidence).
pub const INFO_KEPT: &[&str] = &[
    "redis_mode",
    "os",
    "uptime_in_seconds",
    "tcp_port",
    "blocked_clients",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
    "evicted_clients",
    "total_error_replies",
    "loading_eta_seconds",
    "loading_loaded_perc",
    "loading_total_bytes",
    "rdb_last_bgsave_status",
    "aof_enabled",
];

impl RedisInfo {
    /// Parse the text of an INFO reply (`# Section` headers, `key:value` lines).
    pub fn parse(text: &str) -> RedisInfo {
        RedisInfo::parse_bytes(text.as_bytes())
    }

    /// [`RedisInfo::parse`] on the reply's bytes as they came (no UTF-8 pass over the whole
    /// reply: only the values kept are decoded). One scan per line finds its end and its
    /// first colon; section headers (`# Server`) and blank lines have no colon.
    pub fn parse_bytes(b: &[u8]) -> RedisInfo {
        let mut info = RedisInfo::default();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            let mut colon = None;
            while i < b.len() && b[i] != b'\n' {
                if b[i] == b':' && colon.is_none() {
                    colon = Some(i);
                }
                i += 1;
            }
            let end = if i > start && b[i - 1] == b'\r' { i - 1 } else { i };
            i += 1;
            let Some(c) = colon.filter(|&c| c < end) else { continue };
            let (k, v) = (&b[start..c], &b[c + 1..end]);
            let text = || String::from_utf8_lossy(v).into_owned();
            let num = || std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
            // One match over every key kept (the INFO_KEPT ones spelled out): a reply has
            // ~120 lines and most match nothing.
            match k {
                b"redis_version" => info.redis_version = Some(text()),
                b"tcp_port" => info.tcp_port = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
                b"process_id" => info.process_id = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
                b"config_file" => info.config_file = Some(text()).filter(|s| !s.is_empty()),
                b"executable" => info.executable = Some(text()).filter(|s| !s.is_empty()),
                b"connected_clients" => info.connected_clients = num(),
                b"maxclients" => info.maxclients = num(),
                b"rejected_connections" => info.rejected_connections = num(),
                b"total_connections_received" => info.total_connections_received = num(),
                b"loading" => info.loading = Some(v == b"1"),
                b"redis_mode"
                | b"os"
                | b"uptime_in_seconds"
                | b"blocked_clients"
                | b"total_commands_processed"
                | b"instantaneous_ops_per_sec"
                | b"evicted_clients"
                | b"total_error_replies"
                | b"loading_eta_seconds"
                | b"loading_loaded_perc"
                | b"loading_total_bytes"
                | b"rdb_last_bgsave_status"
                | b"aof_enabled" => {
                    info.other.insert(String::from_utf8_lossy(k).into_owned(), text());
                }
                _ => {}
            }
        }
        info
    }
}

/// An HTTP/1.1 exchange with its phase timings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpFacts {
    /// `GET /path HTTP/1.1`
    pub request_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_us: Option<Micros>,
    /// From sending the request to the first byte of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_us: Option<Micros>,
    /// From sending the request to the end of the headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_us: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HttpFacts {
    /// A 502/503/504: the usual answer of a gateway whose upstream refused or timed out.
    pub fn gateway_error(&self) -> bool {
        matches!(self.status, Some(502..=504))
    }
}

/// The lint of one redis.conf (and the files it includes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LintReport {
    /// The file linted first.
    pub path: String,
    /// How the file was found during a diagnosis (`INFO config_file`, a command line, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Every file read, in order (the main file, then includes).
    pub files: Vec<String>,
    pub problems: Vec<LintProblem>,
    /// The effective values of the directives the lint looks at (`requirepass` is `<redacted>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effective: BTreeMap<String, String>,
    /// What the limits were compared against: `fd limit 1024 (pid 42)`, `somaxconn 4096`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compared_with: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LintProblem {
    /// Stable identifier: `no-password`, `bind-all-interfaces`, `protected-mode-off`, …
    pub code: String,
    pub file: String,
    /// 1-based; 0 when the problem is the absence of a directive.
    pub line: u32,
    pub directive: String,
    pub message: String,
    pub fix: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_upstream_lines() {
        let l = r#"2026/11/21 04:50:00 [error] 77#77: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 10.77.6.1, server: , request: "GET /v1/health HTTP/1.1", upstream: "http://127.0.0.1:9000/v1/health", host: "api.lab:8080""#;
        let g = GatewayFacts::parse_nginx_line(l).unwrap();
        assert_eq!(g.upstream.as_deref(), Some("http://127.0.0.1:9000/v1/health"));
        assert_eq!(g.upstream_error.as_deref(), Some("111: Connection refused"));
        let t = r#"2026/11/21 04:50:00 [error] 77#77: *3 upstream timed out (110: Connection timed out) while connecting to upstream, client: 10.0.0.1, server: , request: "GET / HTTP/1.1", upstream: "http://10.0.0.9:80/", host: "x""#;
        assert_eq!(
            GatewayFacts::parse_nginx_line(t).unwrap().upstream_error.as_deref(),
            Some("110: Connection timed out")
        );
        let n = r#"2026/11/21 04:50:00 [error] 77#77: *5 no live upstreams while connecting to upstream, client: 10.0.0.1, server: , request: "GET / HTTP/1.1", upstream: "http://backend/", host: "x""#;
        assert_eq!(GatewayFacts::parse_nginx_line(n).unwrap().upstream_error.as_deref(), Some("no live upstreams"));
        assert!(GatewayFacts::parse_nginx_line("2026/11/21 04:50:00 [notice] 1#1: start worker processes").is_none());
    }

    #[test]
    fn info_keeps_every_listed_key() {
        let text: String = INFO_KEPT.iter().map(|k| format!("{k}:7\r\n")).collect();
        let i = RedisInfo::parse(&format!("# Server\r\n{text}"));
        for k in INFO_KEPT.iter().filter(|k| **k != "tcp_port") {
            assert_eq!(i.other.get(*k).map(String::as_str), Some("7"), "{k}");
        }
        assert_eq!(i.tcp_port, Some(7));
        // Bare \n line ends, a colon in the value, bytes that are not UTF-8 in a value.
        let i = RedisInfo::parse_bytes(
            b"redis_version:7.2.4\nexecutable:/opt/r\xffdis:x\nmaxclients:12\n:orphan\nloading:1",
        );
        assert_eq!(i.redis_version.as_deref(), Some("7.2.4"));
        assert_eq!(i.executable.as_deref(), Some("/opt/r\u{fffd}dis:x"));
        assert_eq!((i.maxclients, i.loading), (Some(12), Some(true)));
    }

    #[test]
    fn info_text() {
        let i = RedisInfo::parse("# Server\r\nredis_version:7.0.15\r\ntcp_port:6379\r\nconfig_file:\r\n# Clients\r\nconnected_clients:3\r\nmaxclients:10000\r\n# Stats\r\nrejected_connections:2\r\nrun_id:abc\r\n# Persistence\r\nloading:0\r\n");
        assert_eq!(i.redis_version.as_deref(), Some("7.0.15"));
        assert_eq!(
            (i.tcp_port, i.connected_clients, i.maxclients, i.rejected_connections),
            (Some(6379), Some(3), Some(10000), Some(2))
        );
        assert_eq!(i.config_file, None);
        assert_eq!(i.loading, Some(false));
        assert!(!i.other.contains_key("run_id"));
    }

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("h\u{e9}llo", 2), "h");
        assert_eq!(clip("h\u{e9}llo", 3), "h\u{e9}");
        assert_eq!(clip("", 0), "");
    }

    #[test]
    fn redis_errors() {
        let e = RedisError::parse("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
        assert_eq!(e.code, "WRONGPASS");
        assert!(e.is_auth_failure());
        assert!(RedisError::parse("-ERR max number of clients reached").is_max_clients());
        assert!(!RedisError::parse("-NOAUTH Authentication required.").is_auth_failure());
    }
}
