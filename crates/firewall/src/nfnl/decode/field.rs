//! What a loaded register means for the packet (`ip saddr`, `tcp dport`, `ct state` …),
//! its name as nft prints it, and the element a value of it stands for.

use super::rule::Dec;
use super::value::*;
use crate::model::{Elem, RouteType};
use crate::nfnl::expr::*;
use conndoc_facts::Family;

/// What a register holds.
#[derive(Debug, Clone)]
pub(super) enum Src {
    Payload {
        base: PayloadBase,
        offset: u32,
    },
    Meta(u32),
    Ct(u32),
    /// `fib daddr type`: the route type of the destination.
    FibDaddrType,
    /// Something the evaluation does not model, named as nft would (`[ fib ]`).
    Other(String, Fmt),
    /// `numgen inc|random mod N [offset O]`, `jhash ip saddr mod N`, `symhash mod N`: a value
    /// of O..O+N per packet (numgen) or per flow (the hashes), no packet field; what a
    /// load-balancing map (`dnat to numgen inc mod 2 map { … }`) looks up.
    Numgen {
        text: String,
        modulus: u32,
        offset: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fmt {
    Hex,
    Dec,
}

#[derive(Debug, Clone)]
pub(super) struct Loaded {
    pub(super) src: Src,
    pub(super) len: usize,
    /// `bitwise` mask applied (xor zero), native bytes.
    pub(super) mask: Option<Vec<u8>>,
}

/// What a loaded register means for the packet.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field {
    NfProto,
    EtherProto,
    /// `meta l4proto`, `ip protocol`, `ip6 nexthdr` (name).
    L4Proto(&'static str),
    Addr {
        src: bool,
        fam: Family,
        bits: u8,
    },
    /// Port of `proto` (None: `th`, any transport).
    Port {
        src: bool,
        proto: Option<u8>,
    },
    TcpFlags {
        mask: Option<u8>,
    },
    IfName {
        out: bool,
    },
    IfIndex {
        out: bool,
    },
    CtState {
        mask: Option<u32>,
    },
    /// `fib daddr type`.
    DAddrType,
    /// A header field of another transport protocol than TCP (`icmp type`).
    NotTcp(String),
    Other(String, Fmt),
}

impl Field {
    pub(super) fn name(&self) -> String {
        match self {
            Field::NfProto => "meta nfproto".into(),
            Field::EtherProto => "meta protocol".into(),
            Field::L4Proto(n) => (*n).into(),
            Field::Addr { src, fam, .. } => {
                format!("{} {}", if *fam == Family::Ipv4 { "ip" } else { "ip6" }, if *src { "saddr" } else { "daddr" })
            }
            Field::Port { src, proto } => {
                format!("{} {}", proto_header(*proto), if *src { "sport" } else { "dport" })
            }
            Field::TcpFlags { .. } => "tcp flags".into(),
            Field::IfName { out } => if *out { "oifname" } else { "iifname" }.into(),
            Field::IfIndex { out } => if *out { "oif" } else { "iif" }.into(),
            Field::CtState { .. } => "ct state".into(),
            Field::DAddrType => "fib daddr type".into(),
            Field::NotTcp(n) | Field::Other(n, _) => n.clone(),
        }
    }
}

pub(super) fn proto_header(p: Option<u8>) -> String {
    match p {
        None => "th".into(),
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(33) => "dccp".into(),
        Some(132) => "sctp".into(),
        Some(136) => "udplite".into(),
        Some(n) => format!("th({n})"),
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

/// The names nft prints for common ICMP / ICMPv6 types.
pub(super) fn icmp_type_name(v6: bool, t: u64) -> Option<&'static str> {
    Some(match (v6, t) {
        (false, 0) => "echo-reply",
        (false, 3) => "destination-unreachable",
        (false, 5) => "redirect",
        (false, 8) => "echo-request",
        (false, 11) => "time-exceeded",
        (false, 12) => "parameter-problem",
        (true, 1) => "destination-unreachable",
        (true, 2) => "packet-too-big",
        (true, 3) => "time-exceeded",
        (true, 4) => "parameter-problem",
        (true, 128) => "echo-request",
        (true, 129) => "echo-reply",
        (true, 133) => "nd-router-solicit",
        (true, 134) => "nd-router-advert",
        (true, 135) => "nd-neighbor-solicit",
        (true, 136) => "nd-neighbor-advert",
        _ => return None,
    })
}

pub(super) const CT_STATES: [(u32, &str); 5] =
    [(1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked")];

pub(super) fn ct_state_names(bits: u32) -> Vec<&'static str> {
    CT_STATES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

pub(super) const TCP_FLAGS: [(u8, &str); 8] = [
    (0x01, "fin"),
    (0x02, "syn"),
    (0x04, "rst"),
    (0x08, "psh"),
    (0x10, "ack"),
    (0x20, "urg"),
    (0x40, "ecn"),
    (0x80, "cwr"),
];

pub(super) fn tcp_flag_names(bits: u8) -> String {
    let v: Vec<&str> = TCP_FLAGS.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    if v.is_empty() {
        "0x0".into()
    } else {
        v.join(",")
    }
}

impl Dec<'_> {
    pub(super) fn field(&self, l: &Loaded) -> Field {
        let masked_other = |name: String| Field::Other(format!("{name} & mask"), Fmt::Hex);
        match &l.src {
            Src::Meta(k) => {
                let f = match *k {
                    NFT_META_NFPROTO => Field::NfProto,
                    NFT_META_PROTOCOL => Field::EtherProto,
                    NFT_META_L4PROTO => Field::L4Proto("meta l4proto"),
                    NFT_META_IIFNAME => Field::IfName { out: false },
                    NFT_META_OIFNAME => Field::IfName { out: true },
                    NFT_META_IIF => Field::IfIndex { out: false },
                    NFT_META_OIF => Field::IfIndex { out: true },
                    k => Field::Other(format!("meta {}", meta_name(k)), Fmt::Hex),
                };
                if l.mask.is_some() {
                    return masked_other(f.name());
                }
                f
            }
            Src::Ct(NFT_CT_STATE) => Field::CtState { mask: l.mask.as_deref().map(ne_u32) },
            Src::Ct(k) => {
                let n = format!("ct {}", ct_name(*k));
                if l.mask.is_some() {
                    masked_other(n)
                } else {
                    Field::Other(n, Fmt::Hex)
                }
            }
            Src::Other(n, f) => Field::Other(n.clone(), *f),
            Src::Numgen { text, .. } => Field::Other(text.clone(), Fmt::Dec),
            Src::FibDaddrType if l.mask.is_none() => Field::DAddrType,
            Src::FibDaddrType => masked_other("fib daddr type".into()),
            Src::Payload { base: PayloadBase::Network, offset } => {
                let Some(fam) = self.nfproto else {
                    return Field::Other(format!("network header + {offset}"), Fmt::Hex);
                };
                let len = l.len as u32;
                let addr_field = |src: bool, max: u32| -> Field {
                    let bits = (len.min(max) * 8) as u8;
                    match &l.mask {
                        None => Field::Addr { src, fam, bits },
                        Some(m) => match prefix_len(m) {
                            Some(p) => Field::Addr { src, fam, bits: bits.min(p) },
                            None => masked_other(Field::Addr { src, fam, bits }.name()),
                        },
                    }
                };
                let (v4, name) = (fam == Family::Ipv4, if fam == Family::Ipv4 { "ip" } else { "ip6" });
                let f = match (v4, *offset, len) {
                    (true, 12, 1..=4) => return addr_field(true, 4),
                    (true, 16, 1..=4) => return addr_field(false, 4),
                    (false, 8, 1..=16) => return addr_field(true, 16),
                    (false, 24, 1..=16) => return addr_field(false, 16),
                    (true, 9, 1) => Field::L4Proto("ip protocol"),
                    (false, 6, 1) => Field::L4Proto("ip6 nexthdr"),
                    (true, 8, 1) => Field::Other("ip ttl".into(), Fmt::Dec),
                    (false, 7, 1) => Field::Other("ip6 hoplimit".into(), Fmt::Dec),
                    (true, 2, 2) | (false, 4, 2) => Field::Other(format!("{name} length"), Fmt::Dec),
                    (_, o, _) => Field::Other(format!("{name} header + {o}"), Fmt::Hex),
                };
                if l.mask.is_some() {
                    return masked_other(f.name());
                }
                f
            }
            Src::Payload { base: PayloadBase::Transport, offset } => {
                // Another protocol's header: the TCP probe never has it.
                if let Some(p) = self.l4.filter(|p| *p != 6) {
                    let field = match (p, *offset, l.len) {
                        (_, 0 | 2, 2) if l.mask.is_none() => return Field::Port { src: *offset == 0, proto: Some(p) },
                        (1 | 58, 0, 1) => "type".to_string(),
                        (1 | 58, 1, 1) => "code".to_string(),
                        (_, o, _) => format!("header + {o}"),
                    };
                    let proto = if p == 58 { "icmpv6".into() } else { proto_name(p) };
                    return Field::NotTcp(format!("{proto} {field}"));
                }
                let f = match (*offset, l.len) {
                    (0, 2) => Field::Port { src: true, proto: self.l4 },
                    (2, 2) => Field::Port { src: false, proto: self.l4 },
                    (13, 1) if self.l4 == Some(6) => {
                        return Field::TcpFlags { mask: l.mask.as_ref().and_then(|m| m.first().copied()) }
                    }
                    (o, _) => Field::Other(format!("{} header + {o}", proto_header(self.l4)), Fmt::Hex),
                };
                if l.mask.is_some() {
                    return masked_other(f.name());
                }
                f
            }
            Src::Payload { base, offset } => Field::Other(format!("{} header + {offset}", base.name()), Fmt::Hex),
        }
    }

    /// The element a register value (or range of values) stands for, and its text.
    pub(super) fn elem(&self, f: &Field, lo: &[u8], hi: &[u8]) -> Result<(Elem, String), String> {
        let single = lo == hi;
        Ok(match f {
            Field::Addr { fam, bits, .. } => {
                let (a, z) = (addr(*fam, lo), addr(*fam, hi));
                if single && *bits == full_bits(*fam) {
                    (Elem::Addr(a), a.to_string())
                } else if single {
                    (Elem::Prefix(a, *bits), format!("{a}/{bits}"))
                } else if let Some(p) = range_prefix(lo, hi) {
                    (Elem::Prefix(a, p), format!("{a}/{p}"))
                } else {
                    (Elem::AddrRange(a, z), format!("{a}-{z}"))
                }
            }
            Field::Port { .. } => {
                let a = be_u16(lo).ok_or("short port value")?;
                let z = be_u16(hi).ok_or("short port value")?;
                if single {
                    (Elem::Int(u64::from(a)), a.to_string())
                } else {
                    (Elem::IntRange(u64::from(a), u64::from(z)), format!("{a}-{z}"))
                }
            }
            Field::L4Proto(_) => {
                let (a, z) = (*lo.first().ok_or("empty value")?, *hi.first().ok_or("empty value")?);
                if single {
                    (Elem::Int(u64::from(a)), proto_name(a))
                } else {
                    (Elem::IntRange(u64::from(a), u64::from(z)), format!("{a}-{z}"))
                }
            }
            Field::NfProto | Field::EtherProto => {
                let v = if *f == Field::NfProto {
                    u16::from(*lo.first().ok_or("empty value")?)
                } else {
                    be_u16(lo).ok_or("short value")?
                };
                match v {
                    2 | 0x0800 => (Elem::Fam(Family::Ipv4), if *f == Field::NfProto { "ipv4" } else { "ip" }.into()),
                    10 | 0x86dd => (Elem::Fam(Family::Ipv6), if *f == Field::NfProto { "ipv6" } else { "ip6" }.into()),
                    v => return Err(format!("{} {v}", f.name())),
                }
            }
            Field::IfName { .. } => {
                let end = lo.iter().position(|&b| b == 0);
                let name = String::from_utf8_lossy(&lo[..end.unwrap_or(lo.len())]).into_owned();
                // A test on fewer bytes than IFNAMSIZ without the NUL is a prefix: `eth*`.
                let wild = if single {
                    end.is_none() && lo.len() < 16
                } else {
                    hi.iter().skip(name.len()).all(|&b| b == 0xff)
                };
                if !single && !wild {
                    return Err(format!("interface name range {name}"));
                }
                let n = if wild { format!("{name}*") } else { name };
                (Elem::Name(n.clone()), format!("{n:?}"))
            }
            Field::IfIndex { .. } => {
                let i = ne_u32(lo);
                let n = self.ifnames.get(&i).ok_or_else(|| format!("{} {i}: no such interface", f.name()))?;
                (Elem::Name(n.clone()), format!("{n:?}"))
            }
            Field::CtState { .. } => {
                let names = ct_state_names(ne_u32(lo));
                if !single || names.len() != 1 {
                    return Err(format!("ct state value {:#x}", ne_u32(lo)));
                }
                (Elem::State(names[0].into()), names[0].into())
            }
            Field::TcpFlags { .. } => {
                let v = *lo.first().ok_or("empty value")?;
                (Elem::Int(u64::from(v)), tcp_flag_names(v))
            }
            Field::DAddrType => {
                let v = ne_u32(lo);
                if !single {
                    return Err(format!("fib daddr type range {v}-{}", ne_u32(hi)));
                }
                let t = RouteType(u8::try_from(v).map_err(|_| format!("fib daddr type {v}"))?);
                (Elem::RouteType(t), t.name())
            }
            Field::NotTcp(n) => {
                let int = |b: &[u8]| b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
                if single {
                    let text = match (n.as_str(), int(lo)) {
                        ("icmp type", v) => icmp_type_name(false, v),
                        ("icmpv6 type", v) => icmp_type_name(true, v),
                        _ => None,
                    };
                    (Elem::Int(int(lo)), text.map(str::to_string).unwrap_or_else(|| int(lo).to_string()))
                } else {
                    (Elem::IntRange(int(lo), int(hi)), format!("{}-{}", int(lo), int(hi)))
                }
            }
            Field::Other(n, _) => return Err(n.clone()),
        })
    }
}
