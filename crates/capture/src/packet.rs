//! IPv4/IPv6, TCP and ICMP/ICMPv6 headers parsed from bytes (a packet as an AF_PACKET
//! SOCK_DGRAM socket hands it over: starting at the IP header).

use conndoc_facts::capture::{IcmpSeen, TcpSeen};
use conndoc_facts::Ttl;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_ICMPV6: u8 = 58;

/// The parts of an IP header conndoc uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpHeader {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: Ttl,
    pub protocol: u8,
    /// Offset of the transport header.
    pub payload_offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short for {0}")]
    Short(&'static str),
    #[error("IP version {0} is neither 4 nor 6")]
    Version(u8),
    #[error("IPv4 header length {0} below 20 bytes")]
    HeaderLength(usize),
}

pub fn ip_header(b: &[u8]) -> Result<IpHeader, PacketError> {
    let first = *b.first().ok_or(PacketError::Short("IP version"))?;
    match first >> 4 {
        4 => {
            if b.len() < 20 {
                return Err(PacketError::Short("IPv4 header"));
            }
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(PacketError::HeaderLength(ihl));
            }
            if b.len() < ihl {
                return Err(PacketError::Short("IPv4 options"));
            }
            Ok(IpHeader {
                source: IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15])),
                destination: IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19])),
                ttl: Ttl(b[8]),
                protocol: b[9],
                payload_offset: ihl,
            })
        }
        6 => {
            if b.len() < 40 {
                return Err(PacketError::Short("IPv6 header"));
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&b[8..24]);
            d.copy_from_slice(&b[24..40]);
            Ok(IpHeader {
                source: IpAddr::V6(Ipv6Addr::from(s)),
                destination: IpAddr::V6(Ipv6Addr::from(d)),
                ttl: Ttl(b[7]),
                protocol: b[6],
                payload_offset: 40,
            })
        }
        v => Err(PacketError::Version(v)),
    }
}

pub fn tcp(b: &[u8]) -> Result<TcpSeen, PacketError> {
    if b.len() < 14 {
        return Err(PacketError::Short("TCP header"));
    }
    let flags = b[13];
    let names = [(0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK"), (0x20, "URG")];
    let list: Vec<&str> = names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect();
    Ok(TcpSeen {
        source_port: u16::from_be_bytes([b[0], b[1]]),
        destination_port: u16::from_be_bytes([b[2], b[3]]),
        flags: list.join(","),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        rst: flags & 0x04 != 0,
    })
}

/// Name an ICMP (v4) type/code the way people search for it.
pub fn icmp_name(ty: u8, code: u8) -> String {
    let unreach = |c: u8| -> &'static str {
        match c {
            0 => "net unreachable",
            1 => "host unreachable",
            2 => "protocol unreachable",
            3 => "port unreachable",
            4 => "fragmentation needed",
            5 => "source route failed",
            6 => "destination network unknown",
            7 => "destination host unknown",
            9 => "network administratively prohibited",
            10 => "host administratively prohibited",
            11 => "network unreachable for TOS",
            12 => "host unreachable for TOS",
            13 => "communication administratively prohibited",
            14 => "host precedence violation",
            15 => "precedence cutoff in effect",
            _ => "unknown code",
        }
    };
    match ty {
        0 => "echo reply".into(),
        3 => format!("destination unreachable: {}", unreach(code)),
        8 => "echo request".into(),
        11 => "time exceeded".into(),
        t => format!("icmp type {t} code {code}"),
    }
}

/// Name an ICMPv6 type/code.
pub fn icmpv6_name(ty: u8, code: u8) -> String {
    match ty {
        1 => format!(
            "destination unreachable: {}",
            match code {
                0 => "no route to destination",
                1 => "communication administratively prohibited",
                2 => "beyond scope of source address",
                3 => "address unreachable",
                4 => "port unreachable",
                5 => "source address failed ingress/egress policy",
                6 => "reject route to destination",
                _ => "unknown code",
            }
        ),
        3 => "time exceeded".into(),
        128 => "echo request".into(),
        129 => "echo reply".into(),
        t => format!("icmpv6 type {t} code {code}"),
    }
}

/// An ICMP/ICMPv6 message; for errors, the destination and TCP port of the packet it
/// quotes. Also returns the echo identifier for echo replies.
pub fn icmp(b: &[u8], v6: bool) -> Result<(IcmpSeen, Option<u16>), PacketError> {
    if b.len() < 8 {
        return Err(PacketError::Short("ICMP header"));
    }
    let (ty, code) = (b[0], b[1]);
    let is_error = if v6 { ty < 128 } else { matches!(ty, 3 | 11 | 12) };
    let mut seen = IcmpSeen {
        protocol: if v6 { "icmpv6" } else { "icmp" }.into(),
        icmp_type: ty,
        code,
        name: if v6 { icmpv6_name(ty, code) } else { icmp_name(ty, code) },
        about_destination: None,
        about_port: None,
    };
    let echo_id = if (!v6 && ty == 0) || (v6 && ty == 129) { Some(u16::from_be_bytes([b[4], b[5]])) } else { None };
    if is_error {
        // The quoted packet follows the 8-byte ICMP header.
        if let Ok(inner) = ip_header(&b[8..]) {
            seen.about_destination = Some(inner.destination);
            let t = &b[8 + inner.payload_offset..];
            if inner.protocol == PROTO_TCP && t.len() >= 4 {
                seen.about_port = Some(u16::from_be_bytes([t[2], t[3]]));
            }
        }
    }
    Ok((seen, echo_id))
}

/// The RFC 1071 internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request (v4 with checksum; the kernel fills the ICMPv6 one).
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"conndoc-baseline");
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Recorded with `tcpdump -i lo -xx` in a lab namespace (link header stripped).
    /// SYN 127.0.0.1:60616 → 127.0.0.1:6379, TTL 64.
    pub const SYN_V4: &[u8] = &[
        0x45, 0x00, 0x00, 0x3c, 0x2e, 0xa5, 0x40, 0x00, 0x40, 0x06, 0x0e, 0x15, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00,
        0x00, 0x01, 0xec, 0xc8, 0x18, 0xeb, 0x5b, 0xb1, 0xb3, 0xef, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xff, 0xd7,
        0xfe, 0x30, 0x00, 0x00, 0x02, 0x04, 0xff, 0xd7, 0x04, 0x02, 0x08, 0x0a, 0xc8, 0xf7, 0x9a, 0xc6, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];
    /// RST,ACK 127.0.0.1:6379 → 127.0.0.1:60616 (nothing listening), TTL 64.
    pub const RST_V4: &[u8] = &[
        0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x3c, 0xce, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00,
        0x00, 0x01, 0x18, 0xeb, 0xec, 0xc8, 0x00, 0x00, 0x00, 0x00, 0x5b, 0xb1, 0xb3, 0xf0, 0x50, 0x14, 0x00, 0x00,
        0x9c, 0x78, 0x00, 0x00,
    ];
    /// ICMP type 3 code 13 from `reject with icmp type admin-prohibited`, quoting the SYN
    /// to 127.0.0.1:6380.
    pub const ADMIN_PROHIBITED: &[u8] = &[
        0x45, 0xc0, 0x00, 0x58, 0x0b, 0x47, 0x00, 0x00, 0x40, 0x01, 0x70, 0x9c, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00,
        0x00, 0x01, 0x03, 0x0d, 0x21, 0x49, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x7a, 0xa6, 0x40, 0x00,
        0x40, 0x06, 0xc2, 0x13, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01, 0xb3, 0x06, 0x18, 0xec, 0xdc, 0xc0,
        0xe2, 0xf3, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xff, 0xd7, 0xfe, 0x30, 0x00, 0x00, 0x02, 0x04, 0xff, 0xd7,
        0x04, 0x02, 0x08, 0x0a, 0xd4, 0xa0, 0xcb, 0x60, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    #[test]
    fn parses_rst() {
        let h = ip_header(RST_V4).unwrap();
        assert_eq!(h.source, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.ttl, Ttl(64));
        assert_eq!(h.protocol, PROTO_TCP);
        let t = tcp(&RST_V4[h.payload_offset..]).unwrap();
        assert_eq!((t.source_port, t.destination_port), (6379, 60616));
        assert!(t.rst && t.ack && !t.syn);
        assert_eq!(t.flags, "RST,ACK");
        let h = ip_header(SYN_V4).unwrap();
        let t = tcp(&SYN_V4[h.payload_offset..]).unwrap();
        assert_eq!((t.flags.as_str(), t.destination_port), ("SYN", 6379));
        // The recorded IPv4 header checksums verify.
        assert_eq!(checksum(&SYN_V4[..20]), 0);
        assert_eq!(checksum(&RST_V4[..20]), 0);
    }

    #[test]
    fn parses_icmp_admin_prohibited() {
        let h = ip_header(ADMIN_PROHIBITED).unwrap();
        assert_eq!(h.protocol, PROTO_ICMP);
        let (i, id) = icmp(&ADMIN_PROHIBITED[h.payload_offset..], false).unwrap();
        assert_eq!((i.icmp_type, i.code), (3, 13));
        assert_eq!(i.name, "destination unreachable: communication administratively prohibited");
        assert_eq!(i.about_destination, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(i.about_port, Some(6380));
        assert_eq!(id, None);
    }

    #[test]
    fn parses_icmpv6_port_unreachable() {
        let mut p = vec![0x60, 0, 0, 0, 0, 56, 58, 64];
        p.extend("fd77::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend("fd77::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend([1, 4, 0, 0, 0, 0, 0, 0]);
        let mut inner = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        inner.extend("fd77::1".parse::<Ipv6Addr>().unwrap().octets());
        inner.extend("fd77::2".parse::<Ipv6Addr>().unwrap().octets());
        inner.extend([0x9c, 0x40, 0x1b, 0x58]);
        p.extend(inner);
        let h = ip_header(&p).unwrap();
        assert_eq!((h.protocol, h.ttl), (PROTO_ICMPV6, Ttl(64)));
        let (i, _) = icmp(&p[h.payload_offset..], true).unwrap();
        assert_eq!(i.name, "destination unreachable: port unreachable");
        assert_eq!(i.about_port, Some(7000));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(ip_header(&[]), Err(PacketError::Short("IP version")));
        assert_eq!(ip_header(&[0x55; 40]), Err(PacketError::Version(5)));
        assert_eq!(ip_header(&[0x41; 40]), Err(PacketError::HeaderLength(4)));
        assert!(tcp(&[0; 5]).is_err());
    }

    #[test]
    fn echo_checksum_verifies() {
        let p = echo_request(false, 0x1234, 1);
        assert_eq!(checksum(&p), 0);
    }
}
