//! A minimal DNS client: one A or AAAA question over UDP to one server, with a deadline.
//! Enough to compare what DNS says with what the hosts file says, and to tell a silent
//! nameserver from a name that does not exist.

use conndoc_facts::resolve::{DnsOutcome, QType, MAX_NAMESERVERS};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// resolv.conf as far as it matters here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// The first [`MAX_NAMESERVERS`] nameservers: the only ones the system resolver asks.
    pub servers: Vec<IpAddr>,
    /// How many more `nameserver` lines there were.
    pub ignored_servers: u32,
    pub search: Vec<String>,
    pub ndots: u32,
}

pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut rc = ResolvConf { ndots: 1, ..Default::default() };
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut it = line.split_whitespace();
        match it.next() {
            Some("nameserver") => {
                // A scoped IPv6 address (fe80::1%eth0) keeps only the address.
                if let Some(ip) = it.next().and_then(|s| s.split('%').next()).and_then(|s| s.parse().ok()) {
                    if rc.servers.len() < MAX_NAMESERVERS {
                        rc.servers.push(ip);
                    } else {
                        rc.ignored_servers = rc.ignored_servers.saturating_add(1);
                    }
                }
            }
            Some("search") | Some("domain") => rc.search = it.map(str::to_string).collect(),
            Some("options") => {
                for o in it {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        rc.ndots = n;
                    }
                }
            }
            _ => {}
        }
    }
    rc
}

/// The wire form of a query for `name`.
pub fn build_query(id: u16, name: &str, qtype: QType) -> Option<Vec<u8>> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD=1
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    let t: u16 = match qtype {
        QType::A => 1,
        QType::Aaaa => 28,
    };
    q.extend_from_slice(&t.to_be_bytes());
    q.extend_from_slice(&[0, 1]); // IN
    Some(q)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsParseError {
    #[error("DNS reply shorter than its header says")]
    Truncated,
    #[error("DNS reply id {got} does not match query id {want}")]
    WrongId { got: u16, want: u16 },
    #[error("DNS reply has a name-compression loop")]
    Loop,
    #[error("DNS {rtype} record with {len} bytes of address (expected {want})")]
    BadAddress { rtype: &'static str, len: usize, want: usize },
}

/// Parse a reply to a query with `id`.
pub fn parse_reply(buf: &[u8], id: u16, qtype: QType) -> Result<DnsOutcome, DnsParseError> {
    if buf.len() < 12 {
        return Err(DnsParseError::Truncated);
    }
    let got = u16::from_be_bytes([buf[0], buf[1]]);
    if got != id {
        return Err(DnsParseError::WrongId { got, want: id });
    }
    let rcode = buf[3] & 0x0f;
    let qd = u16::from_be_bytes([buf[4], buf[5]]) as usize;
    let an = u16::from_be_bytes([buf[6], buf[7]]) as usize;
    match rcode {
        0 => {}
        3 => return Ok(DnsOutcome::NxDomain),
        r => {
            let name = match r {
                1 => "FORMERR",
                2 => "SERVFAIL",
                4 => "NOTIMP",
                5 => "REFUSED",
                _ => "RCODE",
            };
            return Ok(DnsOutcome::Rcode { rcode: format!("{name} ({r})") });
        }
    }
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(buf, pos)? + 4;
    }
    let want: u16 = match qtype {
        QType::A => 1,
        QType::Aaaa => 28,
    };
    let mut addrs = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..an {
        pos = skip_name(buf, pos)?;
        let h = buf.get(pos..pos + 10).ok_or(DnsParseError::Truncated)?;
        let rtype = u16::from_be_bytes([h[0], h[1]]);
        let rttl = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let rdlen = u16::from_be_bytes([h[8], h[9]]) as usize;
        pos += 10;
        let rdata = buf.get(pos..pos + rdlen).ok_or(DnsParseError::Truncated)?;
        pos += rdlen;
        if rtype != want {
            continue; // CNAMEs and the like: the addresses follow in the same answer
        }
        let ip = match (rtype, rdata.len()) {
            (1, 4) => IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            (28, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            (1, len) => return Err(DnsParseError::BadAddress { rtype: "A", len, want: 4 }),
            (_, len) => return Err(DnsParseError::BadAddress { rtype: "AAAA", len, want: 16 }),
        };
        addrs.push(ip);
        ttl = ttl.min(rttl);
    }
    if addrs.is_empty() {
        Ok(DnsOutcome::NoData)
    } else {
        Ok(DnsOutcome::Answer { addresses: addrs, ttl })
    }
}

fn skip_name(buf: &[u8], mut pos: usize) -> Result<usize, DnsParseError> {
    for _ in 0..128 {
        let len = *buf.get(pos).ok_or(DnsParseError::Truncated)?;
        if len == 0 {
            return Ok(pos + 1);
        }
        if len & 0xc0 == 0xc0 {
            buf.get(pos + 1).ok_or(DnsParseError::Truncated)?;
            return Ok(pos + 2);
        }
        pos += 1 + len as usize;
    }
    Err(DnsParseError::Loop)
}

/// The nameserver port.
pub const PORT: u16 = 53;

/// Ask one server (address and port, [`PORT`] but in tests) one question, waiting at most
/// until `deadline`.
pub fn query(server: SocketAddr, name: &str, qtype: QType, deadline: Instant) -> DnsOutcome {
    let id = query_id(name, qtype);
    let Some(q) = build_query(id, name, qtype) else {
        return DnsOutcome::Error { message: format!("{name:?} is not a valid DNS name") };
    };
    let bind: SocketAddr = match server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let err = |e: std::io::Error| DnsOutcome::Error { message: describe_io(&e) };
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    // A connected UDP socket hears ICMP port-unreachable as ECONNREFUSED.
    if let Err(e) = sock.connect(server).and_then(|_| sock.send(&q)) {
        return err(e);
    }
    let mut buf = [0u8; 1500];
    // A reply carrying another id is not ours (skipped, as a resolver does), but it is not
    // silence either: if nothing else comes, the server answered wrongly.
    let mut stray = None;
    let timeout = |stray: Option<DnsParseError>| match stray {
        Some(e) => DnsOutcome::Malformed { message: format!("only a reply to another query came back: {e}") },
        None => DnsOutcome::Timeout,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return timeout(stray);
        }
        if let Err(e) = sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))) {
            return err(e);
        }
        match sock.recv(&mut buf) {
            Ok(n) => match parse_reply(&buf[..n], id, qtype) {
                Ok(o) => return o,
                Err(e @ DnsParseError::WrongId { .. }) => stray = Some(e),
                Err(e) => return DnsOutcome::Malformed { message: e.to_string() },
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return timeout(stray)
            }
            Err(e) => return err(e),
        }
    }
}

fn query_id(name: &str, qtype: QType) -> u16 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut h: u32 = nanos ^ std::process::id().rotate_left(16) ^ (qtype as u32);
    for b in name.bytes() {
        h = h.rotate_left(5) ^ b as u32;
    }
    (h ^ (h >> 16)) as u16
}

pub(crate) fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{}: {e}", conndoc_facts::Errno::from_raw(code)),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes() {
        let q = build_query(0xbeef, "api.lab", QType::A).unwrap();
        assert_eq!(
            q,
            [0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'p', b'i', 3, b'l', b'a', b'b', 0, 0, 1, 0, 1]
        );
        assert!(build_query(1, "a..b", QType::A).is_none());
    }

    // A reply as dnsmasq sends it: "api.lab A 10.77.0.2, ttl 0", answer name compressed.
    const REPLY_A: &[u8] = &[
        0xbe, 0xef, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, // header: QR AA RD RA, 1 question, 1 answer
        3, b'a', b'p', b'i', 3, b'l', b'a', b'b', 0, 0, 1, 0, 1, // question
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 77, 0, 2, // answer
    ];

    #[test]
    fn parses_an_answer() {
        assert_eq!(
            parse_reply(REPLY_A, 0xbeef, QType::A).unwrap(),
            DnsOutcome::Answer { addresses: vec!["10.77.0.2".parse().unwrap()], ttl: 0 }
        );
        assert!(matches!(parse_reply(REPLY_A, 1, QType::A), Err(DnsParseError::WrongId { .. })));
        assert_eq!(parse_reply(&REPLY_A[..30], 0xbeef, QType::A), Err(DnsParseError::Truncated));
    }

    #[test]
    fn nxdomain_and_rcodes() {
        let mut r = REPLY_A[..25].to_vec();
        r[3] = 0x83;
        r[7] = 0;
        assert_eq!(parse_reply(&r, 0xbeef, QType::A).unwrap(), DnsOutcome::NxDomain);
        r[3] = 0x85;
        assert_eq!(parse_reply(&r, 0xbeef, QType::A).unwrap(), DnsOutcome::Rcode { rcode: "REFUSED (5)".into() });
        r[3] = 0x80;
        assert_eq!(parse_reply(&r, 0xbeef, QType::Aaaa).unwrap(), DnsOutcome::NoData);
    }

    #[test]
    fn resolv_conf() {
        let rc = parse_resolv_conf(
            "# c\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nsearch a.lab b.lab\noptions ndots:2 timeout:1\n",
        );
        assert_eq!(rc.servers, vec!["10.0.0.53".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
        assert_eq!(rc.search, vec!["a.lab", "b.lab"]);
        assert_eq!(rc.ndots, 2);
    }

    #[test]
    fn resolv_conf_keeps_the_servers_the_resolver_uses() {
        let text: String = (0..5000).map(|i| format!("nameserver 10.{}.{}.53\n", i / 256, i % 256)).collect();
        let rc = parse_resolv_conf(&text);
        assert_eq!(rc.servers.len(), MAX_NAMESERVERS);
        assert_eq!(rc.servers[0], "10.0.0.53".parse::<IpAddr>().unwrap());
        assert_eq!(rc.ignored_servers, 5000 - MAX_NAMESERVERS as u32);
    }
}
