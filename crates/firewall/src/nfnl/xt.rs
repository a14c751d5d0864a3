//! iptables' compat extensions inside nf_tables rules (`[ match name comment rev 0 ]`,
//! `[ target name DNAT rev 2 ]`): the kernel struct each one carries (NFTA_MATCH_INFO /
//! NFTA_TARGET_INFO, host byte order except where the struct says `__be`), read by its
//! layout in `include/uapi/linux/netfilter*/xt_*.h` and printed as the extension's
//! `save` function in iptables 1.8.9 prints it, so the text is `iptables-nft-save`'s own.
//! Err names what is not read (an option, a revision): the caller then runs the tool.

/// A struct too short for its layout, a revision or option not read here.
fn short(name: &str, info: &[u8], need: usize) -> Result<(), String> {
    if info.len() < need {
        return Err(format!("{name}: {} bytes, its struct has {need}", info.len()));
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn be16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `xtables_save_string`: bare when only `[A-Za-z0-9_-]`, else double-quoted with `"`,
/// `\` and `'` escaped.
pub fn save_string(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A NUL-terminated char array.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The ports and flags of a `tcp`/`udp` match (`struct xt_tcp` / `xt_udp`), which
/// iptables-nft also builds from native payload tests and merges into one match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ports {
    pub udp: bool,
    /// (low, high, inverted)
    pub sport: Option<(u16, u16, bool)>,
    pub dport: Option<(u16, u16, bool)>,
    /// (mask, compare, inverted)
    pub flags: Option<(u8, u8, bool)>,
    pub option: Option<(u8, bool)>,
}

impl Ports {
    /// `struct xt_tcp { u16 spts[2], dpts[2]; u8 option, flg_mask, flg_cmp, invflags }`,
    /// `struct xt_udp { u16 spts[2], dpts[2]; u8 invflags }`.
    pub fn from_xt(udp: bool, info: &[u8]) -> Result<Ports, String> {
        short(if udp { "udp" } else { "tcp" }, info, if udp { 9 } else { 12 })?;
        let inv = if udp { info[8] } else { info[11] };
        let range = |at: usize, bit: u8| {
            let (lo, hi) = (u16_at(info, at), u16_at(info, at + 2));
            (lo != 0 || hi != 0xffff).then_some((lo, hi, inv & bit != 0))
        };
        let mut p = Ports { udp, sport: range(0, 0x01), dport: range(4, 0x02), ..Ports::default() };
        if !udp {
            if info[8] != 0 || inv & 0x08 != 0 {
                p.option = Some((info[8], inv & 0x08 != 0));
            }
            if info[9] != 0 || inv & 0x04 != 0 {
                p.flags = Some((info[9], info[10], inv & 0x04 != 0));
            }
        }
        Ok(p)
    }

    /// `tcp_save` / `udp_save`, after ` -m tcp`.
    pub fn save(&self) -> String {
        let mut s = String::from(if self.udp { " -m udp" } else { " -m tcp" });
        for (opt, r) in [("sport", self.sport), ("dport", self.dport)] {
            if let Some((lo, hi, inv)) = r {
                s.push_str(if inv { " ! --" } else { " --" });
                s.push_str(opt);
                if lo == hi {
                    s.push_str(&format!(" {lo}"));
                } else {
                    s.push_str(&format!(" {lo}:{hi}"));
                }
            }
        }
        if let Some((o, inv)) = self.option {
            s.push_str(&format!("{} --tcp-option {o}", if inv { " !" } else { "" }));
        }
        if let Some((mask, cmp, inv)) = self.flags {
            s.push_str(&format!("{} --tcp-flags {} {}", if inv { " !" } else { "" }, tcp_flags(mask), tcp_flags(cmp)));
        }
        s
    }
}

/// `print_tcpf`: the first name of iptables' table (FIN SYN RST PSH ACK URG ALL) holding
/// each remaining bit, `NONE` for none.
fn tcp_flags(mut bits: u8) -> String {
    const NAMES: [(&str, u8); 7] =
        [("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20), ("ALL", 0x3f)];
    let mut out = Vec::new();
    while bits != 0 {
        let Some((n, f)) = NAMES.iter().find(|(_, f)| bits & f != 0) else {
            // ECE/CWR: iptables knows no name for them.
            out.push(format!("{bits:#x}"));
            break;
        };
        out.push((*n).to_string());
        bits &= !f;
    }
    if out.is_empty() {
        "NONE".into()
    } else {
        out.join(",")
    }
}

/// conntrack state bits (`XT_CONNTRACK_STATE_*`), in the order iptables prints them.
const CT_STATES: [(u16, &str); 7] = [
    (1 << 0, "INVALID"),
    (1 << 3, "NEW"),
    (1 << 2, "RELATED"),
    (1 << 1, "ESTABLISHED"),
    (1 << 8, "UNTRACKED"),
    (1 << 6, "SNAT"),
    (1 << 7, "DNAT"),
];

/// `XT_ADDRTYPE_*` bit i is route type i, named as iptables spells them.
const RTN_NAMES: [&str; 12] = [
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
    "PROHIBIT",
    "THROW",
    "NAT",
    "XRESOLVE",
];

fn addr_types(mask: u16) -> String {
    RTN_NAMES.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(",")
}

/// One match extension as ` -m NAME OPTIONS` (tcp/udp are [`Ports`], read by the caller).
pub fn match_save(name: &str, rev: u32, info: &[u8]) -> Result<String, String> {
    let inv = |b: bool| if b { " !" } else { "" };
    Ok(match (name, rev) {
        // struct xt_comment_info { char comment[256]; }
        ("comment", 0) => format!(" -m comment --comment {}", save_string(&cstr(info))),
        // struct xt_conntrack_mtinfo3: 8 addresses of 16 bytes, expires_min/max, l4proto,
        // 4 ports, then match_flags @146, invert_flags @148, state_mask @150.
        ("conntrack", 3) => {
            short(name, info, 152)?;
            let (flags, invert, states) = (u16_at(info, 146), u16_at(info, 148), u16_at(info, 150));
            const STATE: u16 = 1 << 0;
            const STATE_ALIAS: u16 = 1 << 13;
            if flags & !(STATE | STATE_ALIAS) != 0 || flags & STATE == 0 {
                return Err(format!("conntrack options {flags:#x} (only --ctstate is read)"));
            }
            let list: Vec<&str> = CT_STATES.iter().filter(|(b, _)| states & b != 0).map(|(_, n)| *n).collect();
            let (m, opt) = if flags & STATE_ALIAS != 0 { ("state", "state") } else { ("conntrack", "ctstate") };
            format!(" -m {m}{} --{opt} {}", inv(invert & STATE != 0), list.join(","))
        }
        // struct xt_addrtype_info_v1 { u16 source, dest; u32 flags; }
        ("addrtype", 1) => {
            short(name, info, 8)?;
            let (src, dst, flags) = (u16_at(info, 0), u16_at(info, 2), u32_at(info, 4));
            let mut s = String::from(" -m addrtype");
            if src != 0 {
                s.push_str(&format!("{} --src-type {}", inv(flags & 1 != 0), addr_types(src)));
            }
            if dst != 0 {
                s.push_str(&format!("{} --dst-type {}", inv(flags & 2 != 0), addr_types(dst)));
            }
            if flags & 4 != 0 {
                s.push_str(" --limit-iface-in");
            }
            if flags & 8 != 0 {
                s.push_str(" --limit-iface-out");
            }
            s
        }
        // struct xt_mark_mtinfo1 { u32 mark, mask; u8 invert; }
        ("mark", 1) => {
            short(name, info, 9)?;
            format!(" -m mark{} --mark{}", inv(info[8] != 0), mark(u32_at(info, 0), u32_at(info, 4)))
        }
        // struct xt_statistic_info { u16 mode, flags; union { u32 probability; struct {
        // u32 every, packet, count; } nth; } u; … }
        ("statistic", 0) => {
            short(name, info, 16)?;
            let (mode, flags) = (u16_at(info, 0), u16_at(info, 2));
            match mode {
                0 => format!(
                    " -m statistic --mode random{} --probability {:.11}",
                    inv(flags & 1 != 0),
                    f64::from(u32_at(info, 4)) / f64::from(0x8000_0000u32)
                ),
                1 => format!(
                    " -m statistic --mode nth{} --every {} --packet {}",
                    inv(flags & 1 != 0),
                    u64::from(u32_at(info, 4)) + 1,
                    u32_at(info, 8)
                ),
                m => return Err(format!("statistic mode {m}")),
            }
        }
        // struct xt_multiport_v1 { u8 flags, count; u16 ports[15]; u8 pflags[15]; u8 invert; }
        ("multiport", 1) => {
            short(name, info, 48)?;
            let (flags, count) = (info[0], usize::from(info[1]).min(15));
            let opt = match flags {
                0 => "sports",
                1 => "dports",
                2 => "ports",
                f => return Err(format!("multiport flags {f}")),
            };
            let mut list = Vec::new();
            let mut i = 0;
            while i < count {
                let p = u16_at(info, 2 + 2 * i);
                if info[32 + i] != 0 && i + 1 < count {
                    list.push(format!("{p}:{}", u16_at(info, 2 + 2 * (i + 1))));
                    i += 2;
                } else {
                    list.push(p.to_string());
                    i += 1;
                }
            }
            format!(" -m multiport{} --{opt} {}", inv(info[47] != 0), list.join(","))
        }
        (n, r) => return Err(format!("match `{n}` revision {r}")),
    })
}

/// `print_mark`: `0xMARK` or `0xMARK/0xMASK`.
pub fn mark(mark: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!(" {mark:#x}")
    } else {
        format!(" {mark:#x}/{mask:#x}")
    }
}

// NF_NAT_RANGE_* flags.
const MAP_IPS: u32 = 1;
const PROTO_SPECIFIED: u32 = 2;
const PROTO_RANDOM: u32 = 4;
const PERSISTENT: u32 = 8;
const PROTO_RANDOM_FULLY: u32 = 16;
const PROTO_OFFSET: u32 = 32;

/// A nat range read from any of its three layouts.
struct NatRange {
    flags: u32,
    min_addr: std::net::IpAddr,
    max_addr: std::net::IpAddr,
    min_port: u16,
    max_port: u16,
}

impl NatRange {
    /// Revision 0 (IPv4 only): `struct nf_nat_ipv4_multi_range_compat { unsigned rangesize;
    /// struct nf_nat_ipv4_range { unsigned flags; __be32 min_ip, max_ip; __be16 min, max; } }`;
    /// revisions 1 and 2: `struct nf_nat_range(2) { unsigned flags; union nf_inet_addr
    /// min_addr, max_addr; __be16 min_proto, max_proto[, base_proto]; }`.
    fn parse(name: &str, rev: u32, v6: bool, info: &[u8]) -> Result<NatRange, String> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        if rev == 0 && !v6 {
            short(name, info, 20)?;
            if u32_at(info, 0) != 1 {
                return Err(format!("{name}: {} ranges", u32_at(info, 0)));
            }
            let a = |at: usize| IpAddr::V4(Ipv4Addr::new(info[at], info[at + 1], info[at + 2], info[at + 3]));
            return Ok(NatRange {
                flags: u32_at(info, 4),
                min_addr: a(8),
                max_addr: a(12),
                min_port: be16_at(info, 16),
                max_port: be16_at(info, 18),
            });
        }
        // IPv6's MASQUERADE, REDIRECT and NETMAP revision 0 carry `struct nf_nat_range`.
        if rev > 2 || (rev == 0 && v6 && !matches!(name, "MASQUERADE" | "REDIRECT" | "NETMAP")) {
            return Err(format!("target `{name}` revision {rev}"));
        }
        short(name, info, 40)?;
        let a = |at: usize| -> IpAddr {
            if v6 {
                let b: [u8; 16] = info[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(b))
            } else {
                IpAddr::V4(Ipv4Addr::new(info[at], info[at + 1], info[at + 2], info[at + 3]))
            }
        };
        Ok(NatRange {
            flags: u32_at(info, 0),
            min_addr: a(4),
            max_addr: a(20),
            min_port: be16_at(info, 36),
            max_port: be16_at(info, 38),
        })
    }

    fn ports(&self) -> String {
        if self.min_port == self.max_port {
            self.min_port.to_string()
        } else {
            format!("{}-{}", self.min_port, self.max_port)
        }
    }

    /// The options after the range: `--random`, `--random-fully`, `--persistent`.
    fn tail(&self) -> String {
        let mut s = String::new();
        if self.flags & PROTO_RANDOM != 0 {
            s.push_str(" --random");
        }
        if self.flags & PROTO_RANDOM_FULLY != 0 {
            s.push_str(" --random-fully");
        }
        if self.flags & PERSISTENT != 0 {
            s.push_str(" --persistent");
        }
        s
    }
}

fn ip6_bits(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V6(a) => u128::from(a),
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)),
    }
}

/// One target extension as ` -j NAME OPTIONS`.
pub fn target_save(name: &str, rev: u32, v6: bool, info: &[u8]) -> Result<String, String> {
    Ok(match name {
        // enum ipt_reject_with / ip6t_reject_with (one u32)
        "REJECT" if rev == 0 => {
            short(name, info, 4)?;
            let with = u32_at(info, 0);
            let n = if v6 {
                match with {
                    0 => "icmp6-no-route",
                    1 => "icmp6-adm-prohibited",
                    3 => "icmp6-addr-unreachable",
                    4 => "icmp6-port-unreachable",
                    6 => "tcp-reset",
                    w => return Err(format!("REJECT --reject-with {w} (IPv6)")),
                }
            } else {
                match with {
                    0 => "icmp-net-unreachable",
                    1 => "icmp-host-unreachable",
                    2 => "icmp-proto-unreachable",
                    3 => "icmp-port-unreachable",
                    5 => "icmp-net-prohibited",
                    6 => "icmp-host-prohibited",
                    7 => "tcp-reset",
                    8 => "icmp-admin-prohibited",
                    w => return Err(format!("REJECT --reject-with {w}")),
                }
            };
            format!(" -j REJECT --reject-with {n}")
        }
        // struct xt_mark_tginfo2 { u32 mark, mask; }
        "MARK" if rev == 2 => {
            short(name, info, 8)?;
            format!(" -j MARK --set-xmark {:#x}/{:#x}", u32_at(info, 0), u32_at(info, 4))
        }
        "MASQUERADE" | "REDIRECT" => {
            let r = NatRange::parse(name, rev, v6, info)?;
            if r.flags & !(PROTO_SPECIFIED | PROTO_RANDOM | PROTO_RANDOM_FULLY) != 0 {
                return Err(format!("{name} flags {:#x}", r.flags));
            }
            let mut s = format!(" -j {name}");
            if r.flags & PROTO_SPECIFIED != 0 {
                s.push_str(&format!(" --to-ports {}", r.ports()));
            }
            s + &r.tail()
        }
        // libxt_NETMAP prints the range as its first address and prefix length.
        "NETMAP" => {
            let r = NatRange::parse(name, rev, v6, info)?;
            if r.flags & MAP_IPS == 0 || r.min_addr.is_ipv4() != r.max_addr.is_ipv4() {
                return Err(format!("NETMAP flags {:#x}", r.flags));
            }
            let (bits, ones) = match (r.min_addr, r.max_addr) {
                (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                    let m = !(u32::from(a) ^ u32::from(b));
                    (m.leading_ones(), m.count_ones())
                }
                (a, b) => {
                    let m = !(ip6_bits(a) ^ ip6_bits(b));
                    (m.leading_ones(), m.count_ones())
                }
            };
            // A mask that is no prefix prints in another form: the tool reads it.
            if bits != ones {
                return Err("NETMAP with a mask that is no prefix".into());
            }
            format!(" -j NETMAP --to {}/{bits}", r.min_addr)
        }
        "DNAT" | "SNAT" => {
            let r = NatRange::parse(name, rev, v6, info)?;
            if r.flags & PROTO_OFFSET != 0 {
                return Err(format!("{name} with a port offset"));
            }
            let mut s = format!(" -j {name}");
            if r.flags & (MAP_IPS | PROTO_SPECIFIED) != 0 {
                s.push_str(if name == "DNAT" { " --to-destination " } else { " --to-source " });
                let brackets = v6 && r.flags & PROTO_SPECIFIED != 0;
                if r.flags & MAP_IPS != 0 {
                    s.push_str(if brackets { "[" } else { "" });
                    s.push_str(&r.min_addr.to_string());
                    if r.max_addr != r.min_addr {
                        s.push_str(&format!("-{}", r.max_addr));
                    }
                    s.push_str(if brackets { "]" } else { "" });
                }
                if r.flags & PROTO_SPECIFIED != 0 {
                    s.push_str(&format!(":{}", r.ports()));
                }
            }
            s + &r.tail()
        }
        n => return Err(format!("target `{n}` revision {rev}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_as_iptables_does() {
        assert_eq!(save_string("abc_DEF-1"), "abc_DEF-1");
        assert_eq!(save_string("default/web:http"), "\"default/web:http\"");
        assert_eq!(save_string("a \"q\" b"), "\"a \\\"q\\\" b\"");
        assert_eq!(save_string(""), "\"\"");
    }

    #[test]
    fn tcp_flag_names() {
        assert_eq!(tcp_flags(0x17), "FIN,SYN,RST,ACK");
        assert_eq!(tcp_flags(0x02), "SYN");
        assert_eq!(tcp_flags(0), "NONE");
    }

    #[test]
    fn short_structs_are_named_not_read() {
        assert!(match_save("conntrack", 3, &[0; 10]).unwrap_err().contains("10 bytes"));
        assert!(target_save("DNAT", 2, false, &[0; 3]).is_err());
        assert!(match_save("physdev", 0, &[]).unwrap_err().contains("physdev"));
        assert!(Ports::from_xt(false, &[0; 4]).is_err());
    }
}
