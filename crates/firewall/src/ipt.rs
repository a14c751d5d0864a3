//! `iptables-save` / `ip6tables-save` output (legacy and nf_tables back-ends alike).
//! An option conndoc does not know makes that rule "not understood", never the read fail.

use crate::model::{Action, BaseChain, ChainId, Cond, Elem, Key, NatAction, Op, RouteType, Rule, Ruleset};
use crate::nft::proto_number;
use conndoc_facts::firewall::{FirewallTool, Hook, RejectWith, RuleRef};
use conndoc_facts::Family;
use std::collections::HashMap;
use std::net::IpAddr;

/// Split a save line into words, honouring double quotes (`--comment "a b"`) and, inside
/// them, backslash escapes. Runs of plain characters are copied as slices: this runs once
/// per rule, 30,000 times on a big node.
pub(crate) fn words(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    // Whitespace as `char::is_whitespace` has it (beyond ASCII only where a byte says so).
    let space = |i: usize| match b[i] {
        9..=13 | b' ' => Some(1),
        // (inside a character `get` is None: not whitespace)
        c if c >= 0x80 => line.get(i..)?.chars().next().filter(|c| c.is_whitespace()).map(char::len_utf8),
        _ => None,
    };
    let mut out = Vec::with_capacity(16);
    let mut i = 0;
    while i < b.len() {
        if let Some(n) = space(i) {
            i += n;
            continue;
        }
        let mut cur = String::new();
        let (mut start, mut quoted) = (i, false);
        while i < b.len() {
            match b[i] {
                b'"' => {
                    cur.push_str(&line[start..i]);
                    quoted = !quoted;
                    i += 1;
                    start = i;
                }
                b'\\' if quoted => {
                    cur.push_str(&line[start..i]);
                    i += 1;
                    if let Some(c) = line.get(i..).and_then(|r| r.chars().next()) {
                        cur.push(c);
                        i += c.len_utf8();
                    }
                    start = i;
                }
                _ if !quoted && space(i).is_some() => break,
                _ => i += 1,
            }
        }
        cur.push_str(&line[start..i]);
        out.push(cur);
    }
    out
}

fn table_priority(table: &str) -> Option<i64> {
    Some(match table {
        "raw" => -300,
        "mangle" => -150,
        "filter" => 0,
        "security" => 50,
        _ => return None, // nat translates, it does not filter (see `nat_priority`)
    })
}

/// The priority of the nat table's built-in chains (`NF_IP_PRI_NAT_DST` -100 where the
/// destination is translated, `NF_IP_PRI_NAT_SRC` 100 where the source is).
fn nat_priority(hook: Hook) -> i64 {
    match hook {
        Hook::Prerouting | Hook::Output => -100,
        _ => 100,
    }
}

fn builtin_hook(chain: &str) -> Option<Hook> {
    Some(match chain {
        "PREROUTING" => Hook::Prerouting,
        "INPUT" => Hook::Input,
        "FORWARD" => Hook::Forward,
        "OUTPUT" => Hook::Output,
        "POSTROUTING" => Hook::Postrouting,
        _ => return None,
    })
}

/// Parse one `*-save` output. `family` is the family the tool handles.
pub fn parse_save(text: &str, tool: FirewallTool, family: Family, source: usize) -> Ruleset {
    let mut rs = Ruleset::default();
    let fam = family.to_string();
    let mut table = String::new();
    let mut policies: HashMap<String, (bool, u32, String)> = HashMap::new();
    // The chains the current table declares (`:NAME …`, before its rules): a `-j NAME` to
    // anything else is a target extension, not a jump.
    let mut declared: std::collections::HashSet<String> = std::collections::HashSet::new();
    let flush = |rs: &mut Ruleset, table: &str, policies: &mut HashMap<String, (bool, u32, String)>| {
        for (chain, (accept, line, text)) in policies.drain() {
            let Some(hook) = builtin_hook(&chain) else { continue };
            let nat = table == "nat";
            let Some(priority) = (if nat { Some(nat_priority(hook)) } else { table_priority(table) }) else { continue };
            let policy = RuleRef {
                tool,
                family: fam.clone(),
                table: table.to_string(),
                chain: chain.clone(),
                handle: None,
                position: None,
                line: Some(line),
                policy: true,
                text,
            };
            let base = BaseChain {
                hook,
                priority,
                family: Some(family),
                chain: (source, fam.clone(), table.to_string(), chain),
                policy: (policy, accept),
            };
            if nat {
                rs.nat_bases.push(base);
            } else {
                rs.bases.push(base);
            }
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let lineno = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix('*') {
            // A table cut short (no COMMIT): its policies stay its own, not the next table's.
            flush(&mut rs, &table, &mut policies);
            table = t.trim().to_string();
            declared.clear();
            continue;
        }
        if line == "COMMIT" {
            flush(&mut rs, &table, &mut policies);
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut it = decl.split_whitespace();
            let chain = it.next().unwrap_or_default().to_string();
            let policy = it.next().unwrap_or("-");
            rs.chains.entry((source, fam.clone(), table.clone(), chain.clone())).or_default();
            if policy != "-" {
                policies.insert(chain.clone(), (policy != "DROP", lineno, format!(":{chain} {policy}")));
            }
            declared.insert(chain);
            continue;
        }
        // `[packets:bytes] -A …` when saved with counters.
        if line.starts_with('[') {
            if let Some((_, rest)) = line.split_once(']') {
                line = rest.trim();
            }
        }
        let w = words(line);
        if w.first().map(String::as_str) != Some("-A") || w.len() < 2 {
            continue;
        }
        let chain = w[1].clone();
        let id: ChainId = (source, fam.clone(), table.clone(), chain.clone());
        let ch = std::sync::Arc::make_mut(rs.chains.entry(id).or_default());
        let reference = RuleRef {
            tool,
            family: fam.clone(),
            table: table.clone(),
            chain,
            handle: None,
            position: Some(u32::try_from(ch.rules.len() + 1).unwrap_or(u32::MAX)),
            line: Some(lineno),
            policy: false,
            text: line.to_string(),
        };
        let mut rule = Rule { reference, conds: Vec::new(), action: Action::Continue, not_understood: None };
        let mut read = rule_options(&w[2..], family, &mut rule);
        // A target conndoc does not know (`-j SYNPROXY`, …) read as a jump would be passed
        // over silently: iptables cannot save a jump to a chain the table does not declare.
        if let (Ok(()), Action::Jump(t) | Action::Goto(t)) = (&read, &rule.action) {
            if !declared.contains(t) {
                read = Err(format!("target `{t}`"));
                rule.action = Action::Continue;
            }
        }
        if let Err(why) = read {
            rule.not_understood = Some(why);
            rs.not_understood_total += 1;
        }
        rs.rule_count += 1;
        ch.rules.push(rule);
    }
    // Output cut short without COMMIT: still use the policies read.
    flush(&mut rs, &table, &mut policies);
    rs
}

fn rule_options(w: &[String], family: Family, rule: &mut Rule) -> Result<(), String> {
    let mut i = 0;
    let mut neg = false;
    let mut module = String::new();
    let mut err: Option<String> = None;
    let next = |i: &mut usize| -> Result<&str, String> {
        *i += 1;
        w.get(*i).map(String::as_str).ok_or_else(|| format!("{} without a value", w[*i - 1]))
    };
    while i < w.len() {
        let opt = w[i].as_str();
        if opt == "!" {
            neg = true;
            i += 1;
            continue;
        }
        let op = if neg { Op::NotIn } else { Op::In };
        neg = false;
        match opt {
            "-p" | "--protocol" => {
                let p = next(&mut i)?;
                if p != "all" && p != "0" {
                    let n = proto_number(p).ok_or_else(|| format!("protocol {p}"))?;
                    rule.conds.push(Cond::Cmp { key: Key::L4Proto, op, elems: vec![Elem::Int(n)] });
                }
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let key = if opt.starts_with("-s") || opt == "--source" { Key::SAddr } else { Key::DAddr };
                let v = next(&mut i)?;
                let elems = v.split(',').map(|a| addr(a, family)).collect::<Result<Vec<_>, _>>()?;
                rule.conds.push(Cond::Cmp { key, op, elems });
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let key = if opt.starts_with("-i") || opt == "--in-interface" { Key::Iifname } else { Key::Oifname };
                let v = next(&mut i)?;
                rule.conds.push(Cond::Cmp { key, op, elems: vec![Elem::Name(v.to_string())] });
            }
            "-m" | "--match" => {
                module = next(&mut i)?.to_string();
                match module.as_str() {
                    "tcp" | "multiport" | "conntrack" | "state" | "comment" | "iprange" | "addrtype" => {}
                    "udp" | "icmp" | "icmp6" | "icmpv6" | "udplite" | "sctp" => rule.conds.push(Cond::Never),
                    m => {
                        err.get_or_insert(format!("match module `{m}`"));
                    }
                }
            }
            "--dport"
            | "--destination-port"
            | "--sport"
            | "--source-port"
            | "--dports"
            | "--sports"
            | "--destination-ports"
            | "--source-ports"
            | "--ports" => {
                let v = next(&mut i)?;
                let elems = ports(v)?;
                if module == "udp" || module == "sctp" {
                    // already Never
                } else if opt == "--ports" {
                    // either port: unknown unless the destination port decides
                    rule.conds.push(Cond::Cmp { key: Key::DPort, op, elems });
                    if op == Op::In {
                        err.get_or_insert("multiport --ports (source or destination)".into());
                    }
                } else {
                    let key =
                        if opt.contains("dport") || opt.contains("destination") { Key::DPort } else { Key::SPort };
                    rule.conds.push(Cond::Cmp { key, op, elems });
                }
            }
            "--syn" => {
                let c = Cond::Masked { key: Key::TcpFlags, mask: 0x17, op, value: 0x02 };
                rule.conds.push(c);
            }
            "--tcp-flags" => {
                let mask = flags(next(&mut i)?)?;
                let value = flags(next(&mut i)?)?;
                rule.conds.push(Cond::Masked { key: Key::TcpFlags, mask, op, value });
            }
            "--ctstate" | "--state" => {
                let v = next(&mut i)?;
                let elems = v.split(',').map(|s| Elem::State(s.to_ascii_lowercase())).collect();
                rule.conds.push(Cond::Cmp { key: Key::CtState, op, elems });
            }
            "--comment" => {
                next(&mut i)?;
            }
            "--src-range" | "--dst-range" => {
                let v = next(&mut i)?;
                let (a, b) = v.split_once('-').ok_or_else(|| format!("range {v}"))?;
                let (a, b): (IpAddr, IpAddr) =
                    (a.parse().map_err(|_| format!("address {a}"))?, b.parse().map_err(|_| format!("address {b}"))?);
                let key = if opt == "--src-range" { Key::SAddr } else { Key::DAddr };
                rule.conds.push(Cond::Cmp { key, op, elems: vec![Elem::AddrRange(a, b)] });
            }
            // `-m addrtype --dst-type LOCAL` (Docker's jump to its DOCKER chain).
            "--dst-type" => {
                let v = next(&mut i)?;
                let elems = v
                    .split(',')
                    .map(|t| RouteType::from_name(t).map(Elem::RouteType).ok_or_else(|| format!("address type {t}")))
                    .collect::<Result<Vec<_>, _>>()?;
                rule.conds.push(Cond::Cmp { key: Key::DAddrType, op, elems });
            }
            "--icmp-type" | "--icmpv6-type" => {
                next(&mut i)?;
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let target = next(&mut i)?.to_string();
                let goto = opt == "-g" || opt == "--goto";
                let rest = &w[i + 1..];
                rule.action = match target.as_str() {
                    "ACCEPT" => Action::Accept,
                    "DROP" => Action::Drop,
                    "RETURN" => Action::Return,
                    "REJECT" => Action::Reject(reject_with(rest, family)?),
                    "DNAT" | "REDIRECT" => Action::Nat(nat_target(&target, rest)?),
                    "NETMAP" => Action::Nat(netmap_target(rest)?),
                    "SNAT" | "MASQUERADE" => Action::Nat(NatAction::Snat),
                    // Targets that mark, log or count and let the packet go on.
                    "LOG" | "NFLOG" | "ULOG" | "MARK" | "CONNMARK" | "TRACE" | "CT" | "NOTRACK" | "TCPMSS" | "DSCP"
                    | "TOS" | "CLASSIFY" | "AUDIT" | "CHECKSUM" | "TTL" | "HL" | "SET" | "CONNSECMARK" | "SECMARK" => {
                        Action::Continue
                    }
                    t if t.chars().all(|c| c.is_ascii_uppercase()) && !rs_chain_like(t) => {
                        return Err(format!("target `{t}`"));
                    }
                    t => {
                        if goto {
                            Action::Goto(t.to_string())
                        } else {
                            Action::Jump(t.to_string())
                        }
                    }
                };
                // The target's own options follow; they were read above.
                break;
            }
            o if o.starts_with('-') => {
                // An option of a module we know nothing more about: skip its value.
                err.get_or_insert(format!("option `{o}`"));
                if w.get(i + 1).is_some_and(|v| !v.starts_with('-')) {
                    i += 1;
                }
            }
            o => {
                err.get_or_insert(format!("word `{o}`"));
            }
        }
        i += 1;
    }
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// User chains may be upper-case too; those that look like a built-in target are not.
fn rs_chain_like(t: &str) -> bool {
    !matches!(
        t,
        "NFQUEUE" | "QUEUE" | "DNAT" | "SNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP" | "TPROXY" | "TARPIT" | "TEE"
    )
}

/// `-j DNAT --to-destination ADDR[:PORT]` / `-j REDIRECT --to-ports PORT`; ranges are read
/// but not followed.
fn nat_target(target: &str, rest: &[String]) -> Result<NatAction, String> {
    let opt = if target == "DNAT" { "--to-destination" } else { "--to-ports" };
    let mut it = rest.iter();
    let mut value = None;
    while let Some(w) = it.next() {
        match w.as_str() {
            o if o == opt => value = it.next().map(String::as_str),
            "--random" | "--persistent" | "--random-fully" => {}
            o => return Err(format!("{target} option `{o}`")),
        }
    }
    if target == "REDIRECT" {
        return Ok(match value {
            None => NatAction::Redirect { port: None },
            Some(p) => match nat_port(p)? {
                (a, z) if a == z => NatAction::Redirect { port: Some(a) },
                ports => NatAction::RedirectRange { ports },
            },
        });
    }
    let v = value.ok_or("DNAT without --to-destination")?;
    dnat_to(v)
}

/// `-j NETMAP --to A/len` (or a bare address, a /32 or /128): the prefix as its first and
/// last address.
fn netmap_target(rest: &[String]) -> Result<NatAction, String> {
    let mut it = rest.iter();
    let mut to = None;
    while let Some(w) = it.next() {
        match w.as_str() {
            "--to" => to = it.next(),
            o => return Err(format!("NETMAP option `{o}`")),
        }
    }
    let v = to.ok_or("NETMAP without --to")?;
    let (a, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v.as_str(), None),
    };
    let a: IpAddr = a.parse().map_err(|_| format!("NETMAP --to {v}"))?;
    let bits = if a.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        Some(l) => l.parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("NETMAP --to {v}"))?,
        None => bits,
    };
    // The host bits (a shift by the whole width is none).
    let (first, last) = match a {
        IpAddr::V4(v4) => {
            let h = u32::MAX.checked_shr(len).unwrap_or(0);
            let n = u32::from(v4) & !h;
            (IpAddr::V4(n.into()), IpAddr::V4((n | h).into()))
        }
        IpAddr::V6(v6) => {
            let h = u128::MAX.checked_shr(len).unwrap_or(0);
            let n = u128::from(v6) & !h;
            (IpAddr::V6(n.into()), IpAddr::V6((n | h).into()))
        }
    };
    Ok(NatAction::Netmap { addrs: (first, last), port: None })
}

/// `A`, `A:P`, `[A6]:P`, `A6`, with ranges (`A-B`, `P-Q`: the kernel picks one per
/// connection, every one listed as a possible backend).
pub(crate) fn dnat_to(v: &str) -> Result<NatAction, String> {
    let (a, p) = if let Some(rest) = v.strip_prefix('[') {
        // `[A6]:P`, or `[A6]-[B6]:P` as iptables prints an IPv6 range.
        let (a, after) = match rest.split_once("]-[") {
            Some((first, more)) => {
                let (b, after) = more.split_once(']').ok_or_else(|| format!("--to-destination {v}"))?;
                (format!("{first}-{b}"), after)
            }
            None => {
                let (a, after) = rest.split_once(']').ok_or_else(|| format!("--to-destination {v}"))?;
                (a.to_string(), after)
            }
        };
        (a, after.strip_prefix(':').map(str::to_string))
    } else if v.parse::<IpAddr>().is_ok() || (v.matches(':').count() > 1) {
        // A bare IPv6 address or range has no port.
        (v.to_string(), None)
    } else {
        match v.rsplit_once(':') {
            Some((a, p)) => (a.to_string(), Some(p.to_string())),
            None => (v.to_string(), None),
        }
    };
    if a.is_empty() {
        // `:P[-Q]`: the port alone; the kernel keeps the packet's own address.
        let p = p.ok_or_else(|| format!("--to-destination {v}"))?;
        return Ok(NatAction::DnatPort { ports: nat_port(&p)? });
    }
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|_| format!("--to-destination address {s}"));
    let addrs = match a.split_once('-') {
        Some((x, y)) => (ip(x)?, ip(y)?),
        None => (ip(&a)?, ip(&a)?),
    };
    if addrs.0.is_ipv4() != addrs.1.is_ipv4() {
        return Err(format!("--to-destination {v}: an address range across families"));
    }
    let ports = p.as_deref().map(nat_port).transpose()?;
    Ok(match ports {
        None if addrs.0 == addrs.1 => NatAction::Dnat { addr: addrs.0, port: None },
        Some((p, q)) if p == q && addrs.0 == addrs.1 => NatAction::Dnat { addr: addrs.0, port: Some(p) },
        ports => NatAction::DnatRange { addrs, ports },
    })
}

/// One port (`P`, as the range `P-P`) or a range `P-Q`.
fn nat_port(p: &str) -> Result<(u16, u16), String> {
    let num = |s: &str| s.parse::<u16>().map_err(|_| format!("nat port {s}"));
    match p.split_once('-') {
        Some((a, z)) => Ok((num(a)?, num(z)?)),
        None => Ok((num(p)?, num(p)?)),
    }
}

fn reject_with(rest: &[String], family: Family) -> Result<RejectWith, String> {
    let mut with = None;
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        if w == "--reject-with" {
            with = it.next().map(String::as_str);
        }
    }
    let icmp = |code: &str| RejectWith::Icmp {
        family: if family == Family::Ipv4 { "icmp".into() } else { "icmpv6".into() },
        code: code.into(),
    };
    Ok(match with.unwrap_or(if family == Family::Ipv4 { "icmp-port-unreachable" } else { "icmp6-port-unreachable" }) {
        "tcp-reset" | "tcp-rst" => RejectWith::TcpReset,
        "icmp-port-unreachable" | "port-unreach" | "icmp6-port-unreachable" => icmp("port-unreachable"),
        "icmp-net-unreachable" | "net-unreach" => icmp("net-unreachable"),
        "icmp-host-unreachable" | "host-unreach" => icmp("host-unreachable"),
        "icmp-proto-unreachable" | "proto-unreach" => icmp("prot-unreachable"),
        "icmp-net-prohibited" | "net-prohib" => icmp("net-prohibited"),
        "icmp-host-prohibited" | "host-prohib" => icmp("host-prohibited"),
        "icmp-admin-prohibited" | "admin-prohib" | "icmp6-adm-prohibited" | "adm-prohibited" => {
            icmp("admin-prohibited")
        }
        "icmp6-no-route" | "no-route" => icmp("no-route"),
        "icmp6-addr-unreachable" | "addr-unreach" => icmp("addr-unreachable"),
        o => return Err(format!("--reject-with {o}")),
    })
}

fn addr(a: &str, family: Family) -> Result<Elem, String> {
    let (ip, len) = match a.split_once('/') {
        Some((ip, l)) => (ip, Some(l)),
        None => (a, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("address {a}"))?;
    let max = if family == Family::Ipv4 { 32 } else { 128 };
    match len {
        None => Ok(Elem::Addr(ip)),
        Some(l) => {
            if let Ok(n) = l.parse::<u8>() {
                if n == max {
                    return Ok(Elem::Addr(ip));
                }
                return Ok(Elem::Prefix(ip, n));
            }
            // dotted mask, 255.255.255.0
            let m: std::net::Ipv4Addr = l.parse().map_err(|_| format!("mask {l}"))?;
            let bits = u32::from(m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(format!("non-contiguous mask {l}"));
            }
            Ok(Elem::Prefix(ip, u8::try_from(bits.leading_ones()).unwrap_or(32)))
        }
    }
}

fn ports(v: &str) -> Result<Vec<Elem>, String> {
    v.split(',')
        .map(|p| {
            let num = |s: &str| s.parse::<u64>().map_err(|_| format!("port {s}"));
            Ok(match p.split_once(':') {
                Some((a, b)) => {
                    Elem::IntRange(if a.is_empty() { 0 } else { num(a)? }, if b.is_empty() { 65535 } else { num(b)? })
                }
                None => Elem::Int(num(p)?),
            })
        })
        .collect()
}

fn flags(v: &str) -> Result<u64, String> {
    let mut bits = 0;
    for f in v.split(',') {
        bits |= match f {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            "ALL" => 0xff,
            "NONE" => 0,
            o => return Err(format!("tcp flag {o}")),
        };
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_as_the_restore_parser_does() {
        let w = |s: &str| words(s);
        assert_eq!(w(r#"a "" b"#), vec!["a", "", "b"]);
        assert_eq!(w(r#"--comment "x \"y\" z\\" -j A"#), vec!["--comment", "x \"y\" z\\", "-j", "A"]);
        assert_eq!(w(r#"a\b "c\"#), vec!["a\\b", "c"]);
        assert_eq!(w("  x\u{3000}y  "), vec!["x", "y"]);
        assert_eq!(w(r#"pre"mid dle"post"#), vec!["premid dlepost"]);
        assert_eq!(w("café \"né\u{3000}e\" ü"), vec!["café", "né\u{3000}e", "ü"]);
        assert!(w("   ").is_empty());
    }

    #[test]
    fn words_keep_quoted_comments() {
        assert_eq!(
            words(r#"-A sub -s 10.0.0.0/8 -m comment --comment "hello world" -j DROP"#),
            vec!["-A", "sub", "-s", "10.0.0.0/8", "-m", "comment", "--comment", "hello world", "-j", "DROP"]
        );
    }

    #[test]
    fn nat_targets() {
        let w = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            nat_target("DNAT", &w("--to-destination 172.17.0.2:6379")),
            Ok(NatAction::Dnat { addr: a("172.17.0.2"), port: Some(6379) })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination 10.0.0.1")),
            Ok(NatAction::Dnat { addr: a("10.0.0.1"), port: None })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination [fd77:1::2]:6379")),
            Ok(NatAction::Dnat { addr: a("fd77:1::2"), port: Some(6379) })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination fd77:1::2")),
            Ok(NatAction::Dnat { addr: a("fd77:1::2"), port: None })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination 10.0.0.1:6000-6010")),
            Ok(NatAction::DnatRange { addrs: (a("10.0.0.1"), a("10.0.0.1")), ports: Some((6000, 6010)) })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination 10.0.0.1-10.0.0.3")),
            Ok(NatAction::DnatRange { addrs: (a("10.0.0.1"), a("10.0.0.3")), ports: None })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination 10.0.0.2-10.0.0.3:6379-6380")),
            Ok(NatAction::DnatRange { addrs: (a("10.0.0.2"), a("10.0.0.3")), ports: Some((6379, 6380)) })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination [fd77::2]-[fd77::3]:6379")),
            Ok(NatAction::DnatRange { addrs: (a("fd77::2"), a("fd77::3")), ports: Some((6379, 6379)) })
        );
        assert_eq!(
            nat_target("DNAT", &w("--to-destination fd77::2-fd77::3")),
            Ok(NatAction::DnatRange { addrs: (a("fd77::2"), a("fd77::3")), ports: None })
        );
        assert!(nat_target("DNAT", &w("--to-destination 10.0.0.2-fd77::3")).is_err());
        assert_eq!(nat_target("REDIRECT", &w("--to-ports 6390")), Ok(NatAction::Redirect { port: Some(6390) }));
        assert_eq!(nat_target("REDIRECT", &[]), Ok(NatAction::Redirect { port: None }));
        assert_eq!(
            nat_target("REDIRECT", &w("--to-ports 6390-6392")),
            Ok(NatAction::RedirectRange { ports: (6390, 6392) })
        );
        // The port alone: the address is the packet's own.
        assert_eq!(nat_target("DNAT", &w("--to-destination :8080")), Ok(NatAction::DnatPort { ports: (8080, 8080) }));
        assert_eq!(
            nat_target("DNAT", &w("--to-destination :8080-8090 --random")),
            Ok(NatAction::DnatPort { ports: (8080, 8090) })
        );
        assert!(nat_target("DNAT", &w("--to-destination :")).is_err());
        assert!(nat_target("DNAT", &w("--to-destination :x")).is_err());
        assert!(nat_target("DNAT", &w("--to-destination 10.0.0.1:x")).is_err());
        let netmap =
            |a: &str, b: &str| Ok(NatAction::Netmap { addrs: (a.parse().unwrap(), b.parse().unwrap()), port: None });
        assert_eq!(netmap_target(&w("--to 10.77.1.0/24")), netmap("10.77.1.0", "10.77.1.255"));
        assert_eq!(netmap_target(&w("--to 10.77.1.9/24")), netmap("10.77.1.0", "10.77.1.255"));
        assert_eq!(netmap_target(&w("--to 10.77.1.9")), netmap("10.77.1.9", "10.77.1.9"));
        assert_eq!(netmap_target(&w("--to 0.0.0.0/0")), netmap("0.0.0.0", "255.255.255.255"));
        assert_eq!(netmap_target(&w("--to fd77:1::/64")), netmap("fd77:1::", "fd77:1::ffff:ffff:ffff:ffff"));
        assert!(netmap_target(&w("--to 10.77.1.0/33")).is_err());
        assert!(netmap_target(&[]).is_err());
        assert!(nat_target("DNAT", &w("--to-destination 10.0.0.1 --bogus")).is_err());
    }

    #[test]
    fn unknown_targets_are_not_jumps() {
        let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:web - [0:0]\n-A PREROUTING -p tcp -j SYNPROXY --sack-perm\n\
                    -A PREROUTING -j web\n-A PREROUTING -g web\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j web\nCOMMIT\n";
        let rs = parse_save(text, FirewallTool::IptablesLegacy, Family::Ipv4, 0);
        let rules = |table: &str, chain: &str| {
            rs.chains[&(0, "ipv4".to_string(), table.to_string(), chain.to_string())]
                .rules
                .iter()
                .map(|r| (r.action.clone(), r.not_understood.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rules("nat", "PREROUTING"),
            vec![
                (Action::Continue, Some("target `SYNPROXY`".into())),
                (Action::Jump("web".into()), None),
                (Action::Goto("web".into()), None),
            ]
        );
        // `web` is the nat table's: the filter table declares no such chain.
        assert_eq!(rules("filter", "INPUT"), vec![(Action::Continue, Some("target `web`".into()))]);
        assert_eq!(rs.not_understood_total, 2);
    }

    #[test]
    fn masks() {
        assert_eq!(addr("10.0.0.0/255.0.0.0", Family::Ipv4).unwrap(), Elem::Prefix("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(addr("10.0.0.1/32", Family::Ipv4).unwrap(), Elem::Addr("10.0.0.1".parse().unwrap()));
        assert!(addr("10.0.0.0/255.0.255.0", Family::Ipv4).is_err());
    }
}
