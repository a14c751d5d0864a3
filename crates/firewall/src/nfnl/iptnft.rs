//! iptables-nft's own tables (families ip/ip6; filter, nat, mangle, raw, security) read
//! from the same nf_tables netlink dump as the rest, instead of running
//! `iptables-nft-save`, which on a node with 30,000 rules takes seconds.
//!
//! Each rule is turned back into the `-A CHAIN …` line `iptables-nft-save` (1.8.9) prints:
//! the native expressions iptables-nft emits (payload/meta/bitwise/cmp/range for `-s -d -i
//! -o -p`, ports, tcp flags and marks; immediate verdicts; counters) the way
//! `nft_rule_to_iptables_command_state` reads them, the xt extensions by their structs
//! ([`super::xt`]). The table text has the same lines in the same order as the tool's, so
//! [`crate::ipt::parse_save`] builds the very model (and rule texts, line numbers) the
//! tool's output would. A rule with anything else makes its family's text an Err: the
//! caller then runs the tool, which knows more extensions.

use super::expr::*;
use super::xt::{self, Ports};
use std::collections::BTreeMap;

/// How one family's iptables-nft tables were read from the dump: their rule count, or why
/// they were not (then `iptables-nft-save` is run for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub tool: conndoc_facts::firewall::FirewallTool,
    pub rules: Result<u32, String>,
}

/// The families a (cached) ruleset holds iptables-nft tables of, read from the dump, with
/// their rule counts: the chains [`crate::ipt::parse_save`] made at source 0.
pub fn reads_in(rs: &crate::model::Ruleset) -> Vec<Read> {
    use conndoc_facts::firewall::FirewallTool;
    let mut out = Vec::new();
    for (tool, fam) in [(FirewallTool::IptablesNft, "ipv4"), (FirewallTool::Ip6tablesNft, "ipv6")] {
        let mut chains = rs.chains.iter().filter(|(id, _)| id.0 == 0 && id.1 == fam).peekable();
        if chains.peek().is_none() {
            continue;
        }
        let n: usize = chains.map(|(_, c)| c.rules.len()).sum();
        out.push(Read { tool, rules: Ok(u32::try_from(n).unwrap_or(u32::MAX)) });
    }
    out
}

/// The tables iptables-nft manages, in the order `iptables-nft-save` prints them
/// (`enum nft_table_type`).
pub const TABLES: [&str; 5] = ["mangle", "security", "raw", "filter", "nat"];

/// Whether a table of this family and name is one of iptables-nft's.
pub fn is_iptables_table(family: NfFamily, table: &str) -> bool {
    (family == NfFamily::IP || family == NfFamily::IP6) && TABLES.contains(&table)
}

/// The built-in chain of a hook (NF_INET_*), and the priority iptables-nft gives it there.
fn builtin(table: &str, hook: u32) -> Option<(&'static str, i32)> {
    let name = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"].get(hook as usize).copied()?;
    let prio = match table {
        "raw" => -300,
        "mangle" => -150,
        "filter" => 0,
        // iptables-nft's own (NF_IP_PRI_SECURITY is 50)
        "security" => 150,
        "nat" if hook == 0 || hook == 3 => -100,
        "nat" => 100,
        _ => return None,
    };
    Some((name, prio))
}

/// The hooks of a table's built-in chains: `iptables-nft-save` lists each, with policy
/// ACCEPT where the kernel has none (no chain there lets every packet through).
fn builtin_hooks(table: &str) -> &'static [u32] {
    match table {
        "raw" => &[0, 3],
        "mangle" => &[0, 1, 2, 3, 4],
        "nat" => &[0, 1, 3, 4],
        _ => &[1, 2, 3],
    }
}

/// One family's iptables-nft tables as they come in the dump.
#[derive(Debug, Default, Clone)]
pub struct Family {
    /// table → chain → (declaration line, rule lines)
    tables: BTreeMap<String, Table>,
    /// The first thing not read as iptables-nft-save would print it.
    pub error: Option<String>,
    pub rules: u32,
}

#[derive(Debug, Default, Clone)]
struct Table {
    /// Base chains by hook, then user chains by name (the tool's order).
    base: BTreeMap<u32, Chain>,
    user: BTreeMap<String, Chain>,
    /// Base chain name → hook.
    hooks: Vec<(String, u32)>,
}

#[derive(Debug, Default, Clone)]
struct Chain {
    decl: String,
    rules: Vec<String>,
}

impl Family {
    pub fn add_table(&mut self, t: &TableMsg) {
        self.tables.entry(t.name.clone()).or_default();
        if t.dormant() {
            self.error.get_or_insert(format!("table {} is dormant", t.name));
        }
    }

    pub fn add_chain(&mut self, c: &ChainMsg) {
        let t = self.tables.entry(c.table.clone()).or_default();
        match c.hook {
            None => {
                t.user.entry(c.name.clone()).or_default().decl = format!(":{} - [0:0]", c.name);
            }
            Some((hook, prio)) => {
                let ok = builtin(&c.table, hook).is_some_and(|(n, p)| n == c.name && p == prio);
                if !ok {
                    self.error.get_or_insert(format!(
                        "base chain {} of table {} (hook {hook}, priority {prio}) is not one iptables-nft makes",
                        c.name, c.table
                    ));
                    return;
                }
                let policy = if c.policy == Some(0) { "DROP" } else { "ACCEPT" };
                let (p, b) = c.counters.unwrap_or((0, 0));
                t.hooks.push((c.name.clone(), hook));
                t.base.entry(hook).or_default().decl = format!(":{} {policy} [{p}:{b}]", c.name);
            }
        }
    }

    pub fn add_rule(&mut self, r: &RuleMsg) {
        if self.error.is_some() {
            return;
        }
        let line = match rule_line(r) {
            Ok(l) => l,
            Err(e) => {
                self.error = Some(format!("{} {} {} handle {}: {e}", r.family.name(), r.table, r.chain, r.handle));
                return;
            }
        };
        let Some(t) = self.tables.get_mut(&r.table) else {
            self.error = Some(format!("a rule of table {} before the table", r.table));
            return;
        };
        let ch = match t.hooks.iter().find(|(n, _)| *n == r.chain) {
            Some((_, hook)) => t.base.entry(*hook).or_default(),
            None => match t.user.get_mut(&r.chain) {
                Some(c) => c,
                None => {
                    self.error =
                        Some(format!("a rule of chain {} of table {} the dump did not list", r.chain, r.table));
                    return;
                }
            },
        };
        ch.rules.push(line);
        self.rules += 1;
    }

    /// The tables read (names).
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Whether the dump held any of this family's iptables-nft tables.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The text `iptables-nft-save` would print (its banner lines aside), or why it cannot
    /// be made.
    pub fn save_text(&self, tool: &str) -> Result<String, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut out = String::new();
        for name in TABLES {
            let Some(t) = self.tables.get(name) else { continue };
            // One line each where the tool prints its banner, so line numbers agree.
            out.push_str(&format!("# {tool}: read from the nf_tables netlink dump\n*{name}\n"));
            let mut absent = Vec::new();
            for hook in builtin_hooks(name) {
                if !t.base.contains_key(hook) {
                    let (chain, _) = builtin(name, *hook).unwrap_or(("?", 0));
                    absent.push(Chain { decl: format!(":{chain} ACCEPT [0:0]"), rules: Vec::new() });
                }
            }
            let mut chains: Vec<&Chain> = t.base.values().chain(absent.iter()).collect();
            chains.sort_by_key(|c| hook_of(&c.decl));
            chains.extend(t.user.values());
            for c in &chains {
                if c.decl.is_empty() {
                    return Err(format!("rules of a chain of table {name} that the dump did not list"));
                }
                out.push_str(&c.decl);
                out.push('\n');
            }
            for c in &chains {
                let chain = c.decl[1..].split(' ').next().unwrap_or_default();
                for r in &c.rules {
                    out.push_str("-A ");
                    out.push_str(chain);
                    out.push_str(r);
                    out.push('\n');
                }
            }
            out.push_str("COMMIT\n# Completed\n");
        }
        Ok(out)
    }
}

/// Both families' iptables-nft tables in a decoded dump: (IPv4, IPv6).
pub fn from_dump(d: &super::Dump) -> (Family, Family) {
    let mut f = [Family::default(), Family::default()];
    let pick = |fam: NfFamily, table: &str| is_iptables_table(fam, table).then_some(usize::from(fam == NfFamily::IP6));
    for t in &d.tables {
        if let Some(i) = pick(t.family, &t.name) {
            f[i].add_table(t);
        }
    }
    for c in &d.chains {
        if let Some(i) = pick(c.family, &c.table) {
            f[i].add_chain(c);
        }
    }
    for r in &d.rules {
        if let Some(i) = pick(r.family, &r.table) {
            f[i].add_rule(r);
        }
    }
    let [v4, v6] = f;
    (v4, v6)
}

/// The hook of a built-in chain's declaration line (`:INPUT ACCEPT [0:0]`).
fn hook_of(decl: &str) -> usize {
    let name = decl.get(1..).and_then(|d| d.split(' ').next()).unwrap_or_default();
    ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"].iter().position(|n| *n == name).unwrap_or(9)
}

/// What a register holds.
#[derive(Debug, Clone, PartialEq)]
enum Load {
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    Meta(u32),
    /// `(load & mask)`.
    Masked(Box<Load>, Vec<u8>),
}

/// `struct iptables_command_state`, as far as iptables-nft fills it from native tests.
#[derive(Default)]
struct Cs {
    /// (address bytes, mask bytes, inverted)
    src: Option<(Vec<u8>, Vec<u8>, bool)>,
    dst: Option<(Vec<u8>, Vec<u8>, bool)>,
    iif: Option<(String, bool)>,
    oif: Option<(String, bool)>,
    proto: Option<(u8, bool)>,
    matches: Vec<Match>,
    target: Option<String>,
}

enum Match {
    Text(String),
    Ports(Ports),
}

fn ne_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn be_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// The rule as `iptables-nft-save` prints it after `-A CHAIN` (leading space), or why not.
pub fn rule_line(r: &RuleMsg) -> Result<String, String> {
    let v6 = r.family == NfFamily::IP6;
    let mut cs = Cs::default();
    let mut regs: Vec<(u32, Load)> = Vec::new();
    let reg = |regs: &Vec<(u32, Load)>, n: u32| regs.iter().find(|(k, _)| *k == n).map(|(_, l)| l.clone());
    for e in &r.exprs {
        match e {
            Expr::Payload { dreg, base, offset, len } => {
                regs.retain(|(k, _)| k != dreg);
                regs.push((*dreg, Load::Payload { base: *base, offset: *offset, len: *len }));
            }
            Expr::Meta { key, dreg: Some(d), sreg: None } => {
                regs.retain(|(k, _)| k != d);
                regs.push((*d, Load::Meta(*key)));
            }
            Expr::Bitwise { sreg, dreg, op: 0, mask, xor } if xor.iter().all(|b| *b == 0) => {
                let l = reg(&regs, *sreg).ok_or("bitwise on an empty register")?;
                regs.retain(|(k, _)| k != dreg);
                regs.push((*dreg, Load::Masked(Box::new(l), mask.clone())));
            }
            Expr::Cmp { sreg, op, data } => {
                let l = reg(&regs, *sreg).ok_or("cmp on an empty register")?;
                let inv = match op {
                    CmpOp::Eq => false,
                    CmpOp::Neq => true,
                    o => return Err(format!("cmp {o:?}")),
                };
                cmp(&mut cs, v6, &l, inv, data)?;
            }
            Expr::Range { sreg, neq, from, to } => {
                let l = reg(&regs, *sreg).ok_or("range on an empty register")?;
                let (Load::Payload { base: PayloadBase::Transport, offset: off @ (0 | 2), len: 2 }, Some(a), Some(b)) =
                    (l, be_u16(from), be_u16(to))
                else {
                    return Err("a range other than ports".into());
                };
                let p = ports(&mut cs)?;
                *(if off == 0 { &mut p.sport } else { &mut p.dport }) = Some((a, b, *neq));
            }
            Expr::Counter { .. } => {}
            Expr::Immediate { dreg: 0, data: Data::Verdict(v) } => {
                cs.target = Some(match v {
                    Verdict::Accept => " -j ACCEPT".into(),
                    Verdict::Drop => " -j DROP".into(),
                    Verdict::Return => " -j RETURN".into(),
                    Verdict::Jump(c) => format!(" -j {c}"),
                    Verdict::Goto(c) => format!(" -g {c}"),
                    v => return Err(format!("verdict {}", v.text())),
                });
            }
            Expr::Xt { target: false, name, rev: 0, info } if name == "tcp" || name == "udp" => {
                cs.matches.push(Match::Ports(Ports::from_xt(name == "udp", info)?));
            }
            Expr::Xt { target: false, name, rev, info } => {
                cs.matches.push(Match::Text(xt::match_save(name, *rev, info)?))
            }
            Expr::Xt { target: true, name, rev, info } => cs.target = Some(xt::target_save(name, *rev, v6, info)?),
            other => return Err(format!("expression {}", expr_name(other))),
        }
    }
    // A comment in the rule's user data (`nft … comment "…"`) is printed as a comment match
    // after the others, as iptables-nft adds it once the expressions are read.
    if let Some(c) = &r.comment {
        cs.matches.push(Match::Text(format!(" -m comment --comment {}", xt::save_string(c))));
    }
    let mut s = String::new();
    for (letter, a) in [('s', &cs.src), ('d', &cs.dst)] {
        if let Some((addr, mask, inv)) = a {
            s.push_str(&addr_text(letter, v6, addr, mask, *inv));
        }
    }
    for (letter, i) in [('i', &cs.iif), ('o', &cs.oif)] {
        if let Some((name, inv)) = i {
            if !name.is_empty() && (name != "+" || *inv) {
                s.push_str(&format!("{} -{letter} {name}", if *inv { " !" } else { "" }));
            }
        }
    }
    if let Some((p, inv)) = cs.proto {
        if p != 0 {
            s.push_str(&format!("{} -p {}", if inv { " !" } else { "" }, proto_name(p)?));
        }
    }
    for m in &cs.matches {
        match m {
            Match::Text(t) => s.push_str(t),
            Match::Ports(p) => s.push_str(&p.save()),
        }
    }
    if let Some(t) = &cs.target {
        s.push_str(t);
    }
    Ok(s)
}

fn expr_name(e: &Expr) -> String {
    let dbg = format!("{e:?}");
    dbg.split([' ', '{', '(']).next().unwrap_or("?").to_ascii_lowercase()
}

/// The names iptables 1.8.9 prints (as /etc/protocols has them: 58 is `ipv6-icmp`); others
/// come from that file on the tool's host, so the tool is asked.
fn proto_name(p: u8) -> Result<&'static str, String> {
    Ok(match p {
        6 => "tcp",
        132 => "sctp",
        17 => "udp",
        136 => "udplite",
        1 => "icmp",
        58 => "ipv6-icmp",
        50 => "esp",
        51 => "ah",
        p => return Err(format!("protocol {p} (named from /etc/protocols by the tool)")),
    })
}

/// The tcp/udp match native port tests go into: the rule's first one, made if none
/// (`nft_create_match(…, reuse = true)`).
fn ports(cs: &mut Cs) -> Result<&mut Ports, String> {
    let udp = match cs.proto {
        Some((6, false)) => false,
        Some((17, false)) => true,
        _ => return Err("a port test without -p tcp or -p udp".into()),
    };
    let at = cs.matches.iter().position(|m| matches!(m, Match::Ports(p) if p.udp == udp));
    let at = match at {
        Some(i) => i,
        None => {
            cs.matches.push(Match::Ports(Ports { udp, ..Ports::default() }));
            cs.matches.len() - 1
        }
    };
    match &mut cs.matches[at] {
        Match::Ports(p) => Ok(p),
        Match::Text(_) => unreachable!("position found a Ports"),
    }
}

fn cmp(cs: &mut Cs, v6: bool, l: &Load, inv: bool, data: &[u8]) -> Result<(), String> {
    let (inner, mask) = match l {
        Load::Masked(inner, m) => (inner.as_ref(), Some(m.as_slice())),
        l => (l, None),
    };
    match (inner, mask) {
        (Load::Meta(NFT_META_L4PROTO), None) if data.len() == 1 => cs.proto = Some((data[0], inv)),
        (Load::Meta(k @ (NFT_META_IIFNAME | NFT_META_OIFNAME)), None) => {
            // A name ending in NUL is exact; one without is a prefix (`eth+`).
            let name = match data.iter().position(|&b| b == 0) {
                Some(end) => String::from_utf8_lossy(&data[..end]).into_owned(),
                None => format!("{}+", String::from_utf8_lossy(data)),
            };
            *(if *k == NFT_META_IIFNAME { &mut cs.iif } else { &mut cs.oif }) = Some((name, inv));
        }
        (Load::Meta(NFT_META_MARK), m) => {
            let value = ne_u32(data).ok_or("mark of fewer than 4 bytes")?;
            let mask = m.map(|m| ne_u32(m).ok_or("mark mask of fewer than 4 bytes")).transpose()?.unwrap_or(u32::MAX);
            let text = format!(" -m mark{} --mark{}", if inv { " !" } else { "" }, xt::mark(value, mask));
            cs.matches.push(Match::Text(text));
        }
        (Load::Payload { base: PayloadBase::Network, offset, len }, m) => {
            let (s_off, d_off, full) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
            let field = if *offset == s_off {
                &mut cs.src
            } else if *offset == d_off {
                &mut cs.dst
            } else {
                return Err(format!("a test of network header byte {offset}"));
            };
            let len = *len as usize;
            if len > full || data.len() < len {
                return Err("an address test longer than the address".into());
            }
            let mut addr = data[..len].to_vec();
            addr.resize(full, 0);
            let mut mk = m.map(|m| m[..len.min(m.len())].to_vec()).unwrap_or_else(|| vec![0xff; len]);
            mk.resize(full, 0);
            *field = Some((addr, mk, inv));
        }
        (Load::Payload { base: PayloadBase::Transport, offset, len }, None) => {
            let p = ports(cs)?;
            match (offset, len, inv) {
                (0 | 2, 2, _) => {
                    let v = be_u16(data).ok_or("port of fewer than 2 bytes")?;
                    *(if *offset == 0 { &mut p.sport } else { &mut p.dport }) = Some((v, v, inv));
                }
                // --sport and --dport together, one 4-byte load
                (0, 4, false) => {
                    let (a, b) = (be_u16(data).ok_or("ports")?, be_u16(&data[2..]).ok_or("ports")?);
                    p.sport = Some((a, a, false));
                    p.dport = Some((b, b, false));
                }
                _ => return Err(format!("a test of transport header bytes {offset}+{len}")),
            }
        }
        (Load::Payload { base: PayloadBase::Transport, offset: 13, len: 1 }, Some(m)) => {
            let p = ports(cs)?;
            if p.udp {
                return Err("tcp flags of a udp packet".into());
            }
            p.flags = Some((m.first().copied().unwrap_or(0), data.first().copied().unwrap_or(0), inv));
        }
        (l, _) => return Err(format!("a test of {l:?}")),
    }
    Ok(())
}

/// `save_ipv4_addr` / `save_ipv6_addr`.
fn addr_text(letter: char, v6: bool, addr: &[u8], mask: &[u8], inv: bool) -> String {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let bits: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = {
        let ones = mask.iter().take_while(|b| **b == 0xff).count();
        let rest = &mask[ones..];
        rest.is_empty() || (rest[0].leading_ones() + rest[0].trailing_zeros() == 8 && rest[1..].iter().all(|b| *b == 0))
    };
    let not = if inv { " !" } else { "" };
    if v6 {
        if !inv && bits == 0 {
            return String::new();
        }
        let a = Ipv6Addr::from(<[u8; 16]>::try_from(addr).unwrap_or([0; 16]));
        let m = if contiguous {
            bits.to_string()
        } else {
            Ipv6Addr::from(<[u8; 16]>::try_from(mask).unwrap_or([0; 16])).to_string()
        };
        format!("{not} -{letter} {a}/{m}")
    } else {
        if bits == 0 && !inv && addr.iter().all(|b| *b == 0) {
            return String::new();
        }
        let a = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
        let m =
            if contiguous { bits.to_string() } else { Ipv4Addr::new(mask[0], mask[1], mask[2], mask[3]).to_string() };
        format!("{not} -{letter} {a}/{m}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_print_as_the_tool_does() {
        assert_eq!(addr_text('s', false, &[10, 244, 0, 0], &[255, 255, 0, 0], true), " ! -s 10.244.0.0/16");
        assert_eq!(addr_text('d', false, &[10, 0, 0, 0], &[255, 0, 255, 0], false), " -d 10.0.0.0/255.0.255.0");
        let mut m = [0u8; 16];
        m[..8].fill(0xff);
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfd, 0]);
        assert_eq!(addr_text('s', true, &a, &m, false), " -s fd00::/64");
    }
}
