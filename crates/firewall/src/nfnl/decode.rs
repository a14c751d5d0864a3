//! From decoded nf_tables messages to the evaluation model, and each rule back into the
//! nft syntax people know (`ip saddr 10.77.0.0/24 tcp dport 7000 reject with tcp reset`).
//!
//! Rule expressions form a small register machine: loads (payload, meta, ct) fill a
//! register, `bitwise` masks it, and `cmp`/`range`/`lookup` test it. Walking a rule keeps
//! what each register holds, so a test can be read as "ip saddr in 10.77.0.0/24". The
//! implicit dependencies nft adds (`meta nfproto ipv4` before `ip saddr` in an inet
//! table, `meta l4proto tcp` before `tcp dport`) are evaluated like any condition and left
//! out of the text, as nft does.

use super::expr::*;
use super::Dump;
use crate::model::{
    Action, BaseChain, Chain, ChainId, Cond, Elem, Key, NatAction, NatKind, Op, RouteType, Rule, Ruleset,
};
use conndoc_facts::firewall::{FirewallTool, Hook, RejectWith, RuleRef};
use conndoc_facts::Family;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Sets by family, table and name.
#[derive(Debug, Default)]
pub struct SetIndex(HashMap<NfFamily, HashMap<String, HashMap<String, SetMsg>>>);

impl SetIndex {
    pub fn get(&self, family: NfFamily, table: &str, name: &str) -> Option<&SetMsg> {
        self.0.get(&family)?.get(table)?.get(name)
    }
    fn insert(&mut self, s: SetMsg) {
        self.0.entry(s.family).or_default().entry(s.table.clone()).or_default().insert(s.name.clone(), s);
    }
    fn get_mut(&mut self, family: NfFamily, table: &str, name: &str) -> Option<&mut SetMsg> {
        self.0.get_mut(&family)?.get_mut(table)?.get_mut(name)
    }
}

/// Builds the model from nf_tables messages as they arrive: tables, chains and sets
/// (with their elements) first, then rules, which is the order [`super::dump_with`]
/// asks for them in.
pub struct Builder {
    source: usize,
    rs: Ruleset,
    sets: SetIndex,
    dormant: HashSet<(NfFamily, String)>,
    /// Interface names for `meta iif`/`oif`; read on first need when None.
    ifnames: Option<HashMap<u32, String>>,
    last_chain: Option<(NfFamily, ChainId)>,
    /// Whether the interface names were looked up here (they then shape the rules).
    ifnames_read: bool,
    /// Tables, chains, sets, set elements and rules taken: how big the ruleset is.
    objects: usize,
    /// iptables-nft's tables (IPv4, IPv6) as `iptables-nft-save` lines, and their rules
    /// as the dump gave them: decoded as nft rules only if the lines cannot be made.
    ipt: [super::iptnft::Family; 2],
    ipt_pending: [Vec<RuleMsg>; 2],
}

/// What besides the generation id a decoded ruleset depends on (for [`crate::cache`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// Tables + chains + sets + set elements + rules.
    pub objects: usize,
    /// A set whose elements change without a commit (timeouts, packet-path updates).
    pub volatile_sets: bool,
    /// Interface index → name as read for `meta iif`/`oif`, sorted (None: not needed).
    pub ifnames: Option<Vec<(u32, String)>>,
    /// An iptables-nft table held a rule not read as `iptables-nft-save` prints it: the
    /// tool is run for it, so this decode is not the whole answer.
    pub iptables_fallback: bool,
}

impl Builder {
    pub fn new(source: usize, ifnames: Option<Vec<(u32, String)>>) -> Builder {
        Builder {
            source,
            rs: Ruleset::default(),
            sets: SetIndex::default(),
            dormant: HashSet::new(),
            ifnames: ifnames.map(|v| v.into_iter().collect()),
            last_chain: None,
            ifnames_read: false,
            objects: 0,
            ipt: Default::default(),
            ipt_pending: Default::default(),
        }
    }

    /// What the ruleset built so far depends on besides the kernel's generation id.
    pub fn provenance(&self) -> Provenance {
        let volatile_sets =
            self.sets.0.values().flat_map(|t| t.values()).flat_map(|s| s.values()).any(SetMsg::changes_without_commit);
        let ifnames = self.ifnames.as_ref().filter(|_| self.ifnames_read).map(|m| {
            let mut v: Vec<(u32, String)> = m.iter().map(|(i, n)| (*i, n.clone())).collect();
            v.sort();
            v
        });
        let iptables_fallback = self.ipt.iter().any(|f| f.error.is_some());
        Provenance { objects: self.objects, volatile_sets, ifnames, iptables_fallback }
    }

    /// Take one message of the dump (`NFT_MSG_NEW*` payload); one that cannot be read is
    /// an error naming its kind.
    pub fn add(&mut self, ty: super::MsgType, p: &[u8]) -> Result<(), &'static str> {
        use super::MsgType as M;
        self.objects += 1;
        match ty {
            M::NewTable => {
                let t = TableMsg::parse(p).ok_or("table")?;
                if let Some(i) = ipt_index(t.family, &t.name) {
                    self.ipt[i].add_table(&t);
                }
                self.add_table(t)
            }
            M::NewChain => {
                let c = ChainMsg::parse(p).ok_or("chain")?;
                if let Some(i) = ipt_index(c.family, &c.table) {
                    self.ipt[i].add_chain(&c);
                }
                self.add_chain(&c)
            }
            M::NewSet => self.sets.insert(SetMsg::parse(p).ok_or("set")?),
            M::NewSetElem => self.add_elems(SetElemsMsg::parse(p).ok_or("set element")?),
            M::NewRule => {
                let r = RuleMsg::parse(p).ok_or("rule")?;
                match ipt_index(r.family, &r.table) {
                    Some(i) => {
                        self.ipt[i].add_rule(&r);
                        self.ipt_pending[i].push(r);
                    }
                    None => self.add_rule(&r),
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn add_table(&mut self, t: TableMsg) {
        if t.dormant() {
            self.dormant.insert((t.family, t.name));
        }
    }

    pub fn add_elems(&mut self, e: SetElemsMsg) {
        // One message carries many elements: count each (add() counted the message).
        self.objects += e.elems.len().saturating_sub(1);
        if let Some(set) = self.sets.get_mut(e.family, &e.table, &e.set) {
            set.elems.extend(e.elems);
        }
    }

    pub fn add_chain(&mut self, ch: &ChainMsg) {
        let id: ChainId = (self.source, ch.family.name(), ch.table.clone(), ch.name.clone());
        self.rs.chains.entry(id.clone()).or_default();
        let Some((hooknum, prio)) = ch.hook else { return };
        // A dormant table sees no packet.
        if self.dormant.contains(&(ch.family, ch.table.clone())) {
            return;
        }
        // Address translation chains do not filter: they are walked apart.
        let nat = ch.kind.as_deref() == Some("nat");
        let fam = match ch.family {
            NfFamily::IP => Some(Family::Ipv4),
            NfFamily::IP6 => Some(Family::Ipv6),
            NfFamily::INET => None,
            _ => return, // bridge, arp, netdev: not on the IP path
        };
        let hook = match hooknum {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return, // inet ingress
        };
        let accept = ch.policy != Some(0);
        let policy = RuleRef {
            tool: FirewallTool::Nftables,
            family: ch.family.name(),
            table: ch.table.clone(),
            chain: ch.name.clone(),
            handle: None,
            position: None,
            line: None,
            policy: true,
            text: format!("policy {};", if accept { "accept" } else { "drop" }),
        };
        let base = BaseChain { hook, priority: i64::from(prio), family: fam, chain: id, policy: (policy, accept) };
        if nat {
            self.rs.nat_bases.push(base);
        } else {
            self.rs.bases.push(base);
        }
    }

    pub fn add_rule(&mut self, r: &RuleMsg) {
        if self.ifnames.is_none() && r.exprs.iter().any(Expr::needs_ifindex) {
            self.ifnames = Some(super::interface_names().into_iter().collect());
            self.ifnames_read = true;
        }
        let empty = HashMap::new();
        let decoded = decode_rule(r, &self.sets, self.ifnames.as_ref().unwrap_or(&empty));
        // Rules come chain by chain: look the chain up once per chain, not per rule.
        let same = self.last_chain.as_ref().is_some_and(|(f, id)| *f == r.family && id.2 == r.table && id.3 == r.chain);
        if !same {
            let id: ChainId = (self.source, r.family.name(), r.table.clone(), r.chain.clone());
            self.rs.chains.entry(id.clone()).or_default();
            self.last_chain = Some((r.family, id));
        }
        let Some(ch) = self.last_chain.as_ref().and_then(|(_, id)| self.rs.chains.get_mut(id)) else { return };
        let ch = Arc::make_mut(ch);
        let reference = RuleRef {
            tool: FirewallTool::Nftables,
            family: r.family.name(),
            table: r.table.clone(),
            chain: r.chain.clone(),
            handle: Some(r.handle),
            position: Some(u32::try_from(ch.rules.len() + 1).unwrap_or(u32::MAX)),
            line: None,
            policy: false,
            text: decoded.text,
        };
        if decoded.why.is_some() {
            self.rs.not_understood_total += 1;
        }
        self.rs.rule_count += 1;
        if let (Some(entries), None) = (&decoded.vmap_concat, &decoded.why) {
            for (more, action) in entries {
                let mut conds = decoded.conds.clone();
                conds.extend(more.iter().cloned());
                ch.rules.push(Rule {
                    reference: reference.clone(),
                    conds,
                    action: action.clone(),
                    not_understood: None,
                });
            }
            return;
        }
        match decoded.vmap {
            // A verdict map is one rule per element, all with the rule's own reference:
            // the first element the packet has decides.
            Some((key, entries)) if decoded.why.is_none() => {
                for (elem, action) in entries {
                    let mut conds = decoded.conds.clone();
                    conds.push(cond_in(key, elem));
                    ch.rules.push(Rule { reference: reference.clone(), conds, action, not_understood: None });
                }
            }
            _ => ch.rules.push(Rule {
                reference,
                conds: decoded.conds,
                action: decoded.action.unwrap_or(Action::Continue),
                not_understood: decoded.why,
            }),
        }
    }

    pub fn finish(self) -> Ruleset {
        self.finish_all().0
    }

    /// The ruleset, and how iptables-nft's tables were read: each family's tables as the
    /// rules `iptables-nft-save` would print ([`crate::ipt::parse_save`] of the lines made
    /// from the dump; their nft reading dropped), or — when a rule there is not read that
    /// way — as nft rules, with the reason.
    pub fn finish_all(mut self) -> (Ruleset, Vec<super::iptnft::Read>) {
        let mut reads = Vec::new();
        let ipt = std::mem::take(&mut self.ipt);
        let pending = std::mem::take(&mut self.ipt_pending);
        for (i, (fam, rules)) in ipt.into_iter().zip(pending).enumerate() {
            if fam.is_empty() && rules.is_empty() {
                continue;
            }
            let (tool, family, nf) = if i == 0 {
                (FirewallTool::IptablesNft, Family::Ipv4, "ip")
            } else {
                (FirewallTool::Ip6tablesNft, Family::Ipv6, "ip6")
            };
            match fam.save_text(tool.list_command()) {
                Ok(text) => {
                    let part = crate::ipt::parse_save(&text, tool, family, self.source);
                    let tables = fam.table_names().map(|t| (nf.to_string(), t.to_string())).collect();
                    retain_tables(&mut self.rs, &tables);
                    reads.push(super::iptnft::Read { tool, rules: Ok(part.rule_count) });
                    self.rs.extend(part);
                }
                Err(why) => {
                    for r in &rules {
                        self.add_rule(r);
                    }
                    reads.push(super::iptnft::Read { tool, rules: Err(why) });
                }
            }
        }
        (self.rs, reads)
    }
}

/// Which of iptables-nft's families (0 IPv4, 1 IPv6) a table is, if it is one of its.
fn ipt_index(family: NfFamily, table: &str) -> Option<usize> {
    super::iptnft::is_iptables_table(family, table).then_some(usize::from(family == NfFamily::IP6))
}

/// Build the model from a dump. `source` numbers this ruleset among others; tables in
/// `skip_tables` ((family name, table), e.g. iptables-nft's own) are left to their reader.
pub fn to_ruleset(d: &Dump, source: usize, skip_tables: &HashSet<(String, String)>) -> Ruleset {
    let mut b = Builder::new(source, Some(d.ifnames.clone()));
    for t in &d.tables {
        b.add_table(t.clone());
    }
    for c in &d.chains {
        b.add_chain(c);
    }
    for s in &d.sets {
        b.sets.insert(s.clone());
    }
    for r in &d.rules {
        b.add_rule(r);
    }
    let mut rs = b.finish();
    retain_tables(&mut rs, skip_tables);
    rs
}

/// A copy of `rs` without the tables in `skip_tables` ((family, table)), counts adjusted.
pub fn without_tables(rs: &Ruleset, skip_tables: &HashSet<(String, String)>) -> Ruleset {
    let keep = |id: &ChainId| !skip_tables.contains(&(id.1.clone(), id.2.clone()));
    if rs.chains.keys().all(keep) {
        return rs.clone();
    }
    let mut out = Ruleset {
        bases: rs.bases.iter().filter(|b| keep(&b.chain)).cloned().collect(),
        nat_bases: rs.nat_bases.iter().filter(|b| keep(&b.chain)).cloned().collect(),
        ..Ruleset::default()
    };
    for (id, ch) in rs.chains.iter().filter(|(id, _)| keep(id)) {
        let (n, bad) = count(ch);
        out.rule_count += n;
        out.not_understood_total += bad;
        out.chains.insert(id.clone(), ch.clone());
    }
    out
}

/// Drop the tables in `skip_tables` ((family, table)) from `rs`, counts adjusted.
pub fn retain_tables(rs: &mut Ruleset, skip_tables: &HashSet<(String, String)>) {
    let skip = |id: &ChainId| skip_tables.contains(&(id.1.clone(), id.2.clone()));
    rs.bases.retain(|b| !skip(&b.chain));
    rs.nat_bases.retain(|b| !skip(&b.chain));
    let gone: Vec<ChainId> = rs.chains.keys().filter(|id| skip(id)).cloned().collect();
    for id in gone {
        if let Some(ch) = rs.chains.remove(&id) {
            let (n, bad) = count(&ch);
            rs.rule_count -= n;
            rs.not_understood_total -= bad;
        }
    }
}

/// Rules (a verdict map's expansion counts once) and not-understood rules of a chain.
fn count(ch: &Chain) -> (u32, u32) {
    let (mut n, mut bad, mut last) = (0, 0, None);
    for r in &ch.rules {
        if last.is_some() && last == r.reference.handle {
            continue;
        }
        last = r.reference.handle;
        n += 1;
        bad += u32::from(r.not_understood.is_some());
    }
    (n, bad)
}

fn cond_in(key: Key, elem: Elem) -> Cond {
    match (key, elem) {
        (Key::TcpFlags, Elem::Int(v)) => Cond::Masked { key, mask: 0xff, op: Op::In, value: v },
        (key, elem) => Cond::Cmp { key, op: Op::In, elems: vec![elem] },
    }
}

/// One rule, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub conds: Vec<Cond>,
    pub action: Option<Action>,
    /// A verdict map: the key looked up and (element, verdict) pairs.
    pub vmap: Option<(Key, Vec<(Elem, Action)>)>,
    /// A verdict map on a concatenation (`ip daddr . meta l4proto . th dport vmap @m`, as
    /// kube-proxy writes them): per element, the conditions on every field and the verdict.
    pub vmap_concat: Option<Vec<(Vec<Cond>, Action)>>,
    /// The first thing conndoc could not evaluate.
    pub why: Option<String>,
    /// The rule in nft syntax.
    pub text: String,
}

/// What a register holds.
#[derive(Debug, Clone)]
enum Src {
    Payload {
        base: PayloadBase,
        offset: u32,
    },
    Meta(u32),
    Ct(u32),
    /// `fib daddr type`: the route type of the destination.
    FibDaddrType,
    /// Something the evaluation does not model, named as nft would (`numgen inc mod 2`).
    Other(String, Fmt),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Hex,
    Dec,
}

#[derive(Debug, Clone)]
struct Loaded {
    src: Src,
    len: usize,
    /// `bitwise` mask applied (xor zero), native bytes.
    mask: Option<Vec<u8>>,
}

/// What a loaded register means for the packet.
#[derive(Debug, Clone, PartialEq)]
enum Field {
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
    fn name(&self) -> String {
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

fn proto_header(p: Option<u8>) -> String {
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
fn icmp_type_name(v6: bool, t: u64) -> Option<&'static str> {
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

const CT_STATES: [(u32, &str); 5] = [(1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked")];

fn ct_state_names(bits: u32) -> Vec<&'static str> {
    CT_STATES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect()
}

const TCP_FLAGS: [(u8, &str); 8] = [
    (0x01, "fin"),
    (0x02, "syn"),
    (0x04, "rst"),
    (0x08, "psh"),
    (0x10, "ack"),
    (0x20, "urg"),
    (0x40, "ecn"),
    (0x80, "cwr"),
];

fn tcp_flag_names(bits: u8) -> String {
    let v: Vec<&str> = TCP_FLAGS.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    if v.is_empty() {
        "0x0".into()
    } else {
        v.join(",")
    }
}

fn ne_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    let n = b.len().min(4);
    a[..n].copy_from_slice(&b[..n]);
    u32::from_ne_bytes(a)
}

fn be_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// An address from (possibly fewer) leading bytes, zero-filled.
fn addr(fam: Family, b: &[u8]) -> IpAddr {
    match fam {
        Family::Ipv4 => {
            let mut a = [0u8; 4];
            let n = b.len().min(4);
            a[..n].copy_from_slice(&b[..n]);
            IpAddr::V4(Ipv4Addr::from(a))
        }
        Family::Ipv6 => {
            let mut a = [0u8; 16];
            let n = b.len().min(16);
            a[..n].copy_from_slice(&b[..n]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
    }
}

/// An address of `fam` from the first bytes of a register value.
fn addr_of(fam: Family, b: &[u8]) -> Option<IpAddr> {
    let n = if fam == Family::Ipv4 { 4 } else { 16 };
    (b.len() >= n).then(|| addr(fam, &b[..n]))
}

/// A data map's element data as nft prints it, from the map's data type (nft's ids,
/// concatenations 6 bits a part: `ipv4_addr . inet_service` is 7 << 6 | 13); None for a
/// type conndoc does not print.
fn data_text(ty: u32, v: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    let mut t = ty;
    while t != 0 {
        parts.push(t & 0x3f);
        t >>= 6;
    }
    parts.reverse();
    let mut at = 0usize;
    let mut out = Vec::new();
    for p in parts {
        let (text, len) = match p {
            7 => (addr_of(Family::Ipv4, v.get(at..)?)?.to_string(), 4),
            8 => (addr_of(Family::Ipv6, v.get(at..)?)?.to_string(), 16),
            13 => (be_u16(v.get(at..)?)?.to_string(), 2),
            _ => return None,
        };
        out.push(text);
        at += (len + 3) & !3;
    }
    (!out.is_empty()).then(|| out.join(" . "))
}

/// The prefix length when `a..=b` is exactly one aligned prefix (`10.77.1.2-10.77.1.3` is
/// `10.77.1.2/31`).
fn range_prefix_len(a: IpAddr, b: IpAddr) -> Option<u32> {
    let (x, y, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    let span = y.checked_sub(x)?.checked_add(1)?;
    (span.is_power_of_two() && x % span == 0).then(|| bits - span.trailing_zeros())
}

fn full_bits(fam: Family) -> u8 {
    if fam == Family::Ipv4 {
        32
    } else {
        128
    }
}

/// Leading one bits of a mask made only of leading ones, else None.
fn prefix_len(mask: &[u8]) -> Option<u8> {
    let mut bits = 0u32;
    let mut done = false;
    for &b in mask {
        if done && b != 0 {
            return None;
        }
        let ones = b.leading_ones();
        if b.count_ones() != ones {
            return None;
        }
        bits += ones;
        if ones < 8 {
            done = true;
        }
    }
    u8::try_from(bits).ok()
}

/// Big-endian `b - 1` (the exclusive end of an interval to an inclusive one).
fn minus_one(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    for x in v.iter_mut().rev() {
        if *x == 0 {
            *x = 0xff;
        } else {
            *x -= 1;
            break;
        }
    }
    v
}

/// A set's elements as inclusive (low, high) ranges of key bytes with their data.
/// Interval sets hold each range as a start element and an end element (flagged
/// NFT_SET_ELEM_INTERVAL_END, exclusive); the kernel dumps them in any order.
fn set_ranges(set: &SetMsg) -> Vec<(Vec<u8>, Vec<u8>, Option<Data>)> {
    let mut out = Vec::new();
    if set.flags & NFT_SET_INTERVAL != 0 && set.elems.iter().all(|e| e.key_end.is_none()) {
        let mut v: Vec<&SetElem> = set.elems.iter().collect();
        // By key; at one key an end (closing the range below) before a start.
        v.sort_by(|a, b| {
            a.key.cmp(&b.key).then((b.flags & NFT_SET_ELEM_INTERVAL_END).cmp(&(a.flags & NFT_SET_ELEM_INTERVAL_END)))
        });
        let mut open: Option<&SetElem> = None;
        for e in v {
            if e.flags & NFT_SET_ELEM_INTERVAL_END != 0 {
                if let Some(s) = open.take() {
                    out.push((s.key.clone(), minus_one(&e.key), s.data.clone()));
                }
            } else if let Some(s) = open.replace(e) {
                // Two starts in a row: the first ran up to the second.
                out.push((s.key.clone(), minus_one(&e.key), s.data.clone()));
            }
        }
        if let Some(s) = open {
            out.push((s.key.clone(), vec![0xff; s.key.len()], s.data.clone()));
        }
    } else {
        for e in &set.elems {
            out.push((e.key.clone(), e.key_end.clone().unwrap_or_else(|| e.key.clone()), e.data.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
    }
    out
}

/// A register's place; numbers the kernel does not define get places of their own.
fn reg_slot(reg: u32) -> u32 {
    Register::from_u32(reg).and_then(Register::word).unwrap_or(1000 + reg)
}

fn meta_len(key: u32) -> usize {
    match key {
        NFT_META_IIFNAME | NFT_META_OIFNAME | 17 | 18 | 26 | 27 | 34 => 16,
        NFT_META_NFPROTO | NFT_META_L4PROTO | 19 => 1,
        NFT_META_PROTOCOL => 2,
        _ => 4,
    }
}

/// Register slot → content; a rule uses a handful, so a list beats a map.
struct Regs<T>(Vec<(u32, T)>);

impl<T> Regs<T> {
    fn get(&self, k: &u32) -> Option<&T> {
        self.0.iter().find(|(s, _)| s == k).map(|(_, v)| v)
    }
    fn insert(&mut self, k: u32, v: T) {
        match self.0.iter_mut().find(|(s, _)| *s == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k, v)),
        }
    }
}

struct Dec<'a> {
    family: NfFamily,
    table: &'a str,
    sets: &'a SetIndex,
    ifnames: &'a HashMap<u32, String>,
    regs: Regs<Loaded>,
    imm: Regs<Vec<u8>>,
    /// From a `meta nfproto ==` test earlier in the rule.
    nfproto: Option<Family>,
    /// From a `meta l4proto ==` test earlier in the rule.
    l4: Option<u8>,
    out: Decoded,
    pieces: Vec<Option<String>>,
    nfproto_piece: Option<usize>,
    l4_piece: Option<usize>,
    /// (piece, field, value text, value) of a `>=` test, to read `a-b` when a `<=` follows.
    last_gte: Option<(usize, Field, String, Vec<u8>)>,
    /// A data map looked up into a register (`tcp dport map { 16379 : 10.77.1.2 }`): the
    /// register's word and, per element, its condition, its data and its key's text —
    /// what a `dnat to` reading that register turns into one rule per element.
    datamap: Option<(u32, Vec<MapEntry>)>,
}

/// One data map element: the condition its key puts on the packet, its data, its key's text.
type MapEntry = (Cond, Vec<u8>, String);

/// Read one rule.
pub fn decode_rule(r: &RuleMsg, sets: &SetIndex, ifnames: &HashMap<u32, String>) -> Decoded {
    let mut d = Dec {
        family: r.family,
        table: &r.table,
        sets,
        ifnames,
        regs: Regs(Vec::new()),
        imm: Regs(Vec::new()),
        nfproto: match r.family {
            NfFamily::IP => Some(Family::Ipv4),
            NfFamily::IP6 => Some(Family::Ipv6),
            _ => None,
        },
        l4: None,
        out: Decoded { conds: Vec::new(), action: None, vmap: None, vmap_concat: None, why: None, text: String::new() },
        pieces: Vec::new(),
        nfproto_piece: None,
        l4_piece: None,
        last_gte: None,
        datamap: None,
    };
    for e in &r.exprs {
        d.expr(e);
    }
    let mut text: Vec<String> = d.pieces.into_iter().flatten().filter(|p| !p.is_empty()).collect();
    if let Some(c) = &r.comment {
        text.push(format!("comment {c:?}"));
    }
    d.out.text = text.join(" ");
    d.out
}

impl Dec<'_> {
    fn unknown(&mut self, why: impl Into<String>) {
        self.out.why.get_or_insert(why.into());
    }

    fn piece(&mut self, s: String) -> usize {
        self.pieces.push(Some(s));
        self.last_gte = None;
        self.pieces.len() - 1
    }

    fn hide(&mut self, idx: Option<usize>) {
        if let Some(i) = idx {
            if let Some(p) = self.pieces.get_mut(i) {
                *p = None;
            }
        }
    }

    fn set_action(&mut self, a: Action) {
        if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
            self.out.action = Some(a);
        }
    }

    fn load(&mut self, reg: u32, src: Src, len: usize) {
        self.regs.insert(reg_slot(reg), Loaded { src, len, mask: None });
    }

    fn field(&self, l: &Loaded) -> Field {
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
    fn elem(&self, f: &Field, lo: &[u8], hi: &[u8]) -> Result<(Elem, String), String> {
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

    fn hide_deps(&mut self, f: &Field) {
        match f {
            Field::Addr { .. } | Field::L4Proto("ip protocol" | "ip6 nexthdr") => self.hide(self.nfproto_piece),
            Field::Port { .. } | Field::TcpFlags { .. } => self.hide(self.l4_piece),
            // icmp and icmpv6 also depend on the family in an inet table
            Field::NotTcp(n) => {
                self.hide(self.l4_piece);
                if n.starts_with("icmp") {
                    self.hide(self.nfproto_piece);
                }
            }
            _ => {}
        }
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Payload { dreg, base, offset, len } => {
                self.load(*dreg, Src::Payload { base: *base, offset: *offset }, *len as usize)
            }
            Expr::Meta { key, dreg: Some(r), .. } => self.load(*r, Src::Meta(*key), meta_len(*key)),
            Expr::Ct { key, dreg: Some(r), .. } => self.load(*r, Src::Ct(*key), 4),
            Expr::Numgen { dreg, modulus, random, offset } => {
                let mut n = format!("numgen {} mod {modulus}", if *random { "random" } else { "inc" });
                if *offset != 0 {
                    n.push_str(&format!(" offset {offset}"));
                }
                self.load(*dreg, Src::Other(n, Fmt::Dec), 4);
            }
            Expr::Bitwise { sreg, dreg, op, mask, xor } => {
                let l = self.regs.get(&reg_slot(*sreg)).cloned();
                let new = match l {
                    Some(mut l) if *op == 0 && xor.iter().all(|&b| b == 0) && l.mask.is_none() => {
                        l.mask = Some(mask.clone());
                        l
                    }
                    Some(l) => Loaded { src: Src::Other("bitwise".into(), Fmt::Hex), len: l.len, mask: None },
                    None => Loaded { src: Src::Other("bitwise".into(), Fmt::Hex), len: mask.len(), mask: None },
                };
                self.regs.insert(reg_slot(*dreg), new);
            }
            Expr::Cmp { sreg, op, data } => self.cmp(*sreg, *op, data),
            Expr::Range { sreg, neq, from, to } => self.range(*sreg, *neq, from, to),
            Expr::Lookup { set, sreg, dreg, inv } => self.lookup(set, *sreg, *dreg, *inv),
            Expr::Immediate { dreg: 0, data: Data::Verdict(v) } => {
                self.piece(v.text());
                match v {
                    Verdict::Accept => self.set_action(Action::Accept),
                    Verdict::Drop => self.set_action(Action::Drop),
                    Verdict::Return => self.set_action(Action::Return),
                    Verdict::Jump(c) => self.set_action(Action::Jump(c.clone())),
                    Verdict::Goto(c) => self.set_action(Action::Goto(c.clone())),
                    Verdict::Continue => {}
                    v => self.unknown(format!("verdict {}", v.text())),
                }
            }
            Expr::Immediate { dreg, data } => {
                if let Data::Value(v) = data {
                    self.imm.insert(reg_slot(*dreg), v.clone());
                }
                self.load(*dreg, Src::Other("immediate value".into(), Fmt::Hex), 4);
            }
            Expr::Meta { key, sreg, .. } => {
                let v = sreg.and_then(|r| self.imm.get(&reg_slot(r))).map(|v| format!("{:#010x}", ne_u32(v)));
                self.piece(format!("meta {} set {}", meta_name(*key), v.unwrap_or_else(|| "…".into())));
            }
            Expr::Ct { key, sreg, .. } => {
                let v = sreg.and_then(|r| self.imm.get(&reg_slot(r))).map(|v| format!("{:#010x}", ne_u32(v)));
                self.piece(format!("ct {} set {}", ct_name(*key), v.unwrap_or_else(|| "…".into())));
            }
            Expr::PayloadSet { base, offset, len } => {
                self.piece(format!("[ payload write {len}b @ {} header + {offset} ]", base.name()));
            }
            Expr::Reject { ty, code } => self.reject(*ty, *code),
            Expr::Counter { packets, bytes } => {
                self.piece(format!("counter packets {packets} bytes {bytes}"));
            }
            Expr::Log { prefix, group, level } => {
                let mut s = "log".to_string();
                if let Some(p) = prefix {
                    s.push_str(&format!(" prefix {p:?}"));
                }
                if let Some(g) = group {
                    s.push_str(&format!(" group {g}"));
                }
                if let Some(l) = level.filter(|l| *l != 4) {
                    let names = ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit"];
                    s.push_str(&format!(" level {}", names.get(l as usize).copied().unwrap_or("?")));
                }
                self.piece(s);
            }
            Expr::Limit { rate, unit, burst, bytes, inv } => {
                let per = match unit {
                    1 => "second",
                    60 => "minute",
                    3600 => "hour",
                    86400 => "day",
                    604800 => "week",
                    _ => "?",
                };
                let mut s = format!(
                    "limit rate {}{rate}{}/{per}",
                    if *inv { "over " } else { "" },
                    if *bytes { " bytes" } else { "" }
                );
                if (!*bytes && *burst != 5) || (*bytes && *burst != 0) {
                    s.push_str(&format!(" burst {burst} {}", if *bytes { "bytes" } else { "packets" }));
                }
                self.piece(s);
                self.unknown("rate limit (depends on traffic so far)");
            }
            Expr::Quota { bytes, inv } => {
                let (n, unit) = match *bytes {
                    b if b >= 1 << 30 && b % (1 << 30) == 0 => (b >> 30, "gbytes"),
                    b if b >= 1 << 20 && b % (1 << 20) == 0 => (b >> 20, "mbytes"),
                    b if b >= 1 << 10 && b % (1 << 10) == 0 => (b >> 10, "kbytes"),
                    b => (b, "bytes"),
                };
                self.piece(format!("quota {}{n} {unit}", if *inv { "over " } else { "" }));
                self.unknown("quota (depends on traffic so far)");
            }
            Expr::Notrack => {
                self.piece("notrack".into());
            }
            Expr::Xt { target, name, .. } => {
                self.piece(format!("[ xt {} {name} ]", if *target { "target" } else { "match" }));
                self.unknown(format!("iptables extension `{name}` (xt) in an nft rule"));
            }
            Expr::Load { name, dreg } => self.load(*dreg, Src::Other(format!("[ {name} ]"), Fmt::Hex), 4),
            // NFT_FIB_RESULT_ADDRTYPE of NFTA_FIB_F_DADDR alone: `fib daddr type`.
            Expr::Fib { dreg, result: 3, flags: 2 } => self.load(*dreg, Src::FibDaddrType, 4),
            Expr::Fib { dreg, .. } => self.load(*dreg, Src::Other("[ fib ]".into(), Fmt::Hex), 4),
            Expr::Nat { dnat, family, addr_min, addr_max, proto_min, proto_max, flags } => {
                self.nat(*dnat, *family, [*addr_min, *addr_max], [*proto_min, *proto_max], *flags)
            }
            Expr::Redir { proto_min, proto_max, flags } => self.redir([*proto_min, *proto_max], *flags),
            Expr::Masq { flags } => {
                self.piece(if *flags == 0 { "masquerade".into() } else { format!("masquerade [ flags {flags:#x} ]") });
                self.set_action(Action::Nat(NatAction::Snat));
            }
            Expr::Statement { name } => {
                self.piece(format!("[ {name} ]"));
            }
            Expr::Other { name } => {
                self.piece(format!("[ {name} ]"));
                self.unknown(format!("expression `{name}`"));
            }
        }
    }

    /// The immediate value a nat expression's register holds; Err names what it holds
    /// instead (a map lookup), the text of which moves into the statement.
    fn nat_value(&mut self, reg: u32) -> Result<Vec<u8>, String> {
        if let Some(v) = self.imm.get(&reg_slot(reg)) {
            return Ok(v.clone());
        }
        match self.regs.get(&reg_slot(reg)).map(|l| l.src.clone()) {
            Some(Src::Other(n, _)) => {
                // `tcp dport map @m` reads after `dnat to` in nft's listing, not before it.
                if let Some(i) = self.pieces.iter().rposition(|p| p.as_deref() == Some(n.as_str())) {
                    self.pieces[i] = None;
                }
                Err(n)
            }
            _ => Err("a register conndoc cannot read".into()),
        }
    }

    /// `dnat to ADDR[:PORT]` / `snat to …`, as nft prints them.
    fn nat(&mut self, dnat: bool, family: u32, addr: [Option<u32>; 2], proto: [Option<u32>; 2], flags: u32) {
        let fam = match family {
            2 => Family::Ipv4,
            10 => Family::Ipv6,
            f => {
                self.piece(format!("[ nat family {f} ]"));
                return self.unknown(format!("nat family {f}"));
            }
        };
        let word = if dnat { "dnat" } else { "snat" };
        // In an inet table nft names the family (`dnat ip to`); the kernel translates
        // packets of that family only.
        let fam_name = if fam == Family::Ipv4 { " ip" } else { " ip6" };
        let mut fam_word = if self.family == NfFamily::INET {
            self.out.conds.push(Cond::Cmp { key: Key::NfProto, op: Op::In, elems: vec![Elem::Fam(fam)] });
            fam_name
        } else {
            ""
        };
        let mapped = if dnat { self.dnat_map(fam, addr[0], proto[0]) } else { None };
        let mut from_map = false;
        let kind = NatKind::Dnat;
        let mut why = None;
        let mut addr_text = String::new();
        let mut ip = None;
        let (mut range_end, mut port_end) = (None, None);
        if let Some(r) = addr[0] {
            match self.nat_value(r) {
                Ok(v) => {
                    let a = addr_of(fam, &v);
                    ip = a;
                    addr_text = a.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
                    if let Some(z) = addr[1].filter(|z| *z != r) {
                        match self.nat_value(z).ok().and_then(|v| addr_of(fam, &v)) {
                            Some(b) if Some(b) != a => {
                                // nft prints a range that is a whole prefix as the prefix.
                                addr_text = match a.and_then(|a| range_prefix_len(a, b)) {
                                    Some(len) => format!("{addr_text}/{len}"),
                                    None => format!("{addr_text}-{b}"),
                                };
                                range_end = Some(b);
                            }
                            _ => {}
                        }
                    }
                }
                Err(n) => {
                    addr_text = n.clone();
                    why.get_or_insert(format!("dnat to {n}"));
                    // A map to `addr . port` fills both registers; nft then names the family.
                    from_map = true;
                    if proto[0].is_some() {
                        fam_word = fam_name;
                    }
                }
            }
        }
        let mut port_text = String::new();
        let mut port = None;
        if let Some(r) = proto[0].filter(|_| !from_map) {
            match self.nat_value(r) {
                Ok(v) => {
                    let p = be_u16(&v);
                    port = p;
                    port_text = p.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
                    if let Some(z) = proto[1].filter(|z| *z != r) {
                        let q = self.nat_value(z).ok().and_then(|v| be_u16(&v));
                        if q.is_some_and(|q| Some(q) != p) {
                            port_text = format!("{port_text}-{}", q.unwrap_or(0));
                            port_end = q;
                        }
                    }
                }
                Err(n) => {
                    port_text = n.clone();
                    why.get_or_insert(format!("dnat to the port {n}"));
                }
            }
        }
        let to = match (addr_text.is_empty(), port_text.is_empty(), fam) {
            (false, true, _) => addr_text,
            (false, false, Family::Ipv6) if ip.is_some() => format!("[{addr_text}]:{port_text}"),
            (false, false, _) => format!("{addr_text}:{port_text}"),
            (true, false, _) => format!(":{port_text}"),
            (true, true, _) => String::new(),
        };
        // NF_NAT_RANGE_PROTO_RANDOM 4, PERSISTENT 8, PROTO_RANDOM_FULLY 16
        let mut fl: Vec<&str> = Vec::new();
        for (bit, name) in [(4, "random"), (16, "fully-random"), (8, "persistent")] {
            if flags & bit != 0 {
                fl.push(name);
            }
        }
        let fl = if fl.is_empty() { String::new() } else { format!(" {}", fl.join(",")) };
        self.piece(format!("{word}{fam_word} to {to}{fl}"));
        if !dnat {
            return self.set_action(Action::Nat(NatAction::Snat));
        }
        if let Some(entries) = mapped {
            // One rule per element, as a verdict map is: the element the packet has decides.
            if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
                self.out.vmap_concat = Some(entries);
            }
            return;
        }
        let action = match (why, ip, range_end, port_end) {
            (Some(why), ..) => NatAction::Unfollowed { kind, why },
            (None, Some(a), None, None) => NatAction::Dnat { addr: a, port },
            (None, Some(a), b, q) => {
                NatAction::DnatRange { addrs: (a, b.unwrap_or(a)), ports: port.map(|p| (p, q.unwrap_or(p))) }
            }
            (None, None, ..) => NatAction::Unfollowed { kind, why: "dnat without an address".into() },
        };
        self.set_action(Action::Nat(action));
    }

    /// The rules a `dnat to KEY map { … }` reading a data map makes, one per element
    /// (`addr` and, when the map's data is `addr . port`, `port` read from the element's
    /// data at the registers' offset); None when the registers were not filled by a map.
    fn dnat_map(
        &mut self,
        fam: Family,
        addr_reg: Option<u32>,
        port_reg: Option<u32>,
    ) -> Option<Vec<(Vec<Cond>, Action)>> {
        let slot = reg_slot(addr_reg?);
        if self.imm.get(&slot).is_some() || self.datamap.as_ref().is_none_or(|(s, _)| *s != slot) {
            return None;
        }
        let (_, entries) = self.datamap.take()?;
        let off = match port_reg.map(reg_slot) {
            Some(p) if p > slot => Some(((p - slot) * 4) as usize),
            Some(_) => return None,
            None => None,
        };
        let mut out = Vec::new();
        for (cond, data, key) in entries {
            let a = addr_of(fam, &data)?;
            let port = match off {
                Some(o) => Some(be_u16(data.get(o..)?)?),
                None => None,
            };
            let element = match port {
                Some(p) => format!("{key} : {a} . {p}"),
                None => format!("{key} : {a}"),
            };
            out.push((vec![cond], Action::Nat(NatAction::DnatMapped { addr: a, port, element })));
        }
        Some(out)
    }

    /// `redirect [to :PORT]`.
    fn redir(&mut self, proto: [Option<u32>; 2], flags: u32) {
        let kind = NatKind::Redirect;
        let mut text = "redirect".to_string();
        let action = match proto[0] {
            None => NatAction::Redirect { port: None },
            Some(r) => match self.nat_value(r) {
                Ok(v) => {
                    let p = be_u16(&v);
                    let q = proto[1].filter(|z| *z != r).and_then(|z| self.nat_value(z).ok()).and_then(|v| be_u16(&v));
                    match (p, q) {
                        (Some(p), Some(q)) if q != p => {
                            text.push_str(&format!(" to :{p}-{q}"));
                            NatAction::RedirectRange { ports: (p, q) }
                        }
                        (Some(p), _) => {
                            text.push_str(&format!(" to :{p}"));
                            NatAction::Redirect { port: Some(p) }
                        }
                        (None, _) => NatAction::Unfollowed { kind, why: "a short port value".into() },
                    }
                }
                Err(n) => {
                    text.push_str(&format!(" to {n}"));
                    NatAction::Unfollowed { kind, why: format!("redirect to the port {n}") }
                }
            },
        };
        for (bit, name) in [(4, " random"), (16, " fully-random"), (8, " persistent")] {
            if flags & bit != 0 {
                text.push_str(name);
            }
        }
        self.piece(text);
        self.set_action(Action::Nat(action));
    }

    fn loaded(&mut self, sreg: u32) -> Option<(Loaded, Field)> {
        match self.regs.get(&reg_slot(sreg)).cloned() {
            Some(l) => {
                let f = self.field(&l);
                Some((l, f))
            }
            None => {
                self.unknown("test of an empty register");
                self.piece("[ test of an empty register ]".into());
                None
            }
        }
    }

    /// Header fields one load may cover together (nft merges adjacent `==` tests into one
    /// load: `tcp sport 1 tcp dport 2` is a 4-byte load at transport offset 0).
    fn split(&self, l: &Loaded) -> Option<Vec<(u32, u32)>> {
        let Src::Payload { base, offset } = l.src else { return None };
        let fields: &[(u32, u32)] = match (base, self.nfproto) {
            (PayloadBase::Network, Some(Family::Ipv4)) => &[(9, 1), (12, 4), (16, 4)],
            (PayloadBase::Network, Some(Family::Ipv6)) => &[(6, 1), (7, 1), (8, 16), (24, 16)],
            (PayloadBase::Transport, _) => &[(0, 2), (2, 2)],
            _ => return None,
        };
        let (mut at, end) = (offset, offset + l.len as u32);
        let mut out = Vec::new();
        while at < end {
            let &(o, n) = fields.iter().find(|(o, _)| *o == at)?;
            out.push((o, n));
            at = o + n;
        }
        (at == end && out.len() > 1).then_some(out)
    }

    fn cmp(&mut self, sreg: u32, op: CmpOp, data: &[u8]) {
        let Some((l, f)) = self.loaded(sreg) else { return };
        if let (Field::Other(..), CmpOp::Eq, None, Some(parts)) = (&f, op, &l.mask, self.split(&l)) {
            if data.len() == l.len {
                let Src::Payload { base, offset } = l.src else { return };
                for (o, n) in parts {
                    let sub = Loaded { src: Src::Payload { base, offset: o }, len: n as usize, mask: None };
                    let f = self.field(&sub);
                    let at = (o - offset) as usize;
                    self.cmp_field(f, op, &data[at..at + n as usize]);
                }
                return;
            }
        }
        self.cmp_field(f, op, data);
    }

    fn cmp_field(&mut self, f: Field, op: CmpOp, data: &[u8]) {
        let mop = match op {
            CmpOp::Eq => Op::In,
            CmpOp::Neq => Op::NotIn,
            CmpOp::Lt => Op::Lt,
            CmpOp::Lte => Op::Le,
            CmpOp::Gt => Op::Gt,
            CmpOp::Gte => Op::Ge,
        };
        let sym = match op {
            CmpOp::Eq => "",
            CmpOp::Neq => "!= ",
            CmpOp::Lt => "< ",
            CmpOp::Lte => "<= ",
            CmpOp::Gt => "> ",
            CmpOp::Gte => ">= ",
        };
        let name = f.name();
        match &f {
            Field::CtState { mask: Some(m) } => {
                let states = ct_state_names(*m);
                let v = ne_u32(data);
                let (op, text) = match (op, v) {
                    (CmpOp::Neq, 0) => (Op::In, format!("ct state {}", states.join(","))),
                    (CmpOp::Eq, 0) => (Op::NotIn, format!("ct state ! {}", states.join(","))),
                    (CmpOp::Eq, v) if v == *m && states.len() == 1 => (Op::In, format!("ct state {}", states[0])),
                    _ => {
                        self.unknown(format!("ct state test {:#x} against {v:#x}", m));
                        self.piece(format!("ct state & {m:#x} {sym}{v:#x}"));
                        return;
                    }
                };
                self.out.conds.push(Cond::Cmp {
                    key: Key::CtState,
                    op,
                    elems: states.iter().map(|s| Elem::State((*s).into())).collect(),
                });
                self.piece(text);
                return;
            }
            Field::TcpFlags { mask } => {
                self.hide_deps(&f);
                let v = data.first().copied().unwrap_or(0);
                let m = mask.unwrap_or(0xff);
                let (op, text) = match (op, mask, v) {
                    (CmpOp::Neq, Some(m), 0) => (Op::NotIn, format!("tcp flags {}", tcp_flag_names(*m))),
                    (CmpOp::Eq, Some(m), 0) => (Op::In, format!("tcp flags ! {}", tcp_flag_names(*m))),
                    (CmpOp::Eq, Some(m), v) => {
                        (Op::In, format!("tcp flags {} / {}", tcp_flag_names(v), tcp_flag_names(*m)))
                    }
                    (CmpOp::Neq, Some(m), v) => {
                        (Op::NotIn, format!("tcp flags != {} / {}", tcp_flag_names(v), tcp_flag_names(*m)))
                    }
                    (CmpOp::Eq, None, v) => (Op::In, format!("tcp flags == {}", tcp_flag_names(v))),
                    (CmpOp::Neq, None, v) => (Op::NotIn, format!("tcp flags != {}", tcp_flag_names(v))),
                    _ => {
                        self.unknown("ordered test of tcp flags");
                        self.piece(format!("tcp flags {sym}{v:#x}"));
                        return;
                    }
                };
                self.out.conds.push(Cond::Masked { key: Key::TcpFlags, mask: u64::from(m), op, value: u64::from(v) });
                self.piece(text);
                return;
            }
            Field::Other(n, fmt) => {
                let v = match fmt {
                    Fmt::Hex if data.len() == 4 => format!("{:#010x}", ne_u32(data)),
                    Fmt::Dec if data.len() <= 4 => ne_u32(data).to_string(),
                    _ => format!("0x{}", data.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                };
                self.unknown(n.clone());
                self.piece(format!("{n} {sym}{v}"));
                return;
            }
            _ => {}
        }
        let (elem, vtext) = match self.elem(&f, data, data) {
            Ok(x) => x,
            Err(why) => {
                // nfproto/ether type of another family: the test never holds (or always).
                if matches!(f, Field::NfProto | Field::EtherProto) {
                    if op == CmpOp::Eq {
                        self.out.conds.push(Cond::Never);
                    }
                    self.piece(format!("{name} {sym}{}", data.first().copied().unwrap_or(0)));
                    return;
                }
                self.unknown(why);
                let v = match f {
                    Field::IfIndex { .. } => ne_u32(data).to_string(),
                    _ => format!("0x{}", data.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                };
                self.piece(format!("{name} {sym}{v}"));
                return;
            }
        };
        self.hide_deps(&f);
        let key = match self.key(&f) {
            Some(k) => k,
            None => {
                // A port of a protocol other than TCP: the probe never has it.
                self.out.conds.push(Cond::Never);
                self.piece(format!("{name} {sym}{vtext}"));
                return;
            }
        };
        // `a-b` for a >= / <= pair on one field, as nft prints it; one range test, so
        // addresses compare too.
        if op == CmpOp::Lte {
            if let Some((i, lf, lo, lo_bytes)) = self.last_gte.take() {
                if lf == f {
                    self.pieces[i] = Some(format!("{name} {lo}-{vtext}"));
                    match self.elem(&f, &lo_bytes, data) {
                        Ok((range, _)) => {
                            self.out.conds.pop();
                            self.out.conds.push(Cond::Cmp { key, op: Op::In, elems: vec![range] });
                        }
                        Err(_) => self.out.conds.push(Cond::Cmp { key, op: mop, elems: vec![elem] }),
                    }
                    return;
                }
            }
        }
        self.out.conds.push(Cond::Cmp { key, op: mop, elems: vec![elem.clone()] });
        let i = self.piece(format!("{name} {sym}{vtext}"));
        match (&f, op) {
            (Field::NfProto | Field::EtherProto, CmpOp::Eq) => {
                if let Elem::Fam(fam) = elem {
                    self.nfproto = Some(fam);
                }
                self.nfproto_piece = Some(i);
            }
            (Field::L4Proto(_), CmpOp::Eq) => {
                if let Elem::Int(p) = elem {
                    self.l4 = u8::try_from(p).ok();
                }
                self.l4_piece = Some(i);
            }
            (_, CmpOp::Gte) => self.last_gte = Some((i, f, vtext, data.to_vec())),
            _ => {}
        }
    }

    /// The model's key for a field; None for a port of another protocol than TCP.
    fn key(&self, f: &Field) -> Option<Key> {
        Some(match f {
            Field::NfProto | Field::EtherProto => Key::NfProto,
            Field::L4Proto(_) => Key::L4Proto,
            Field::Addr { src: true, .. } => Key::SAddr,
            Field::Addr { src: false, .. } => Key::DAddr,
            Field::Port { proto: Some(p), .. } if *p != 6 => return None,
            Field::Port { src: true, .. } => Key::SPort,
            Field::Port { src: false, .. } => Key::DPort,
            Field::TcpFlags { .. } => Key::TcpFlags,
            Field::IfName { out: false } | Field::IfIndex { out: false } => Key::Iifname,
            Field::IfName { out: true } | Field::IfIndex { out: true } => Key::Oifname,
            Field::CtState { .. } => Key::CtState,
            Field::DAddrType => Key::DAddrType,
            Field::NotTcp(_) | Field::Other(..) => return None,
        })
    }

    fn range(&mut self, sreg: u32, neq: bool, from: &[u8], to: &[u8]) {
        let Some((_, f)) = self.loaded(sreg) else { return };
        let name = f.name();
        let sym = if neq { "!= " } else { "" };
        match self.elem(&f, from, to) {
            Ok((elem, text)) if !matches!(f, Field::Other(..)) => {
                self.hide_deps(&f);
                match self.key(&f) {
                    Some(key) => self.out.conds.push(Cond::Cmp {
                        key,
                        op: if neq { Op::NotIn } else { Op::In },
                        elems: vec![elem],
                    }),
                    None => self.out.conds.push(Cond::Never),
                }
                self.piece(format!("{name} {sym}{text}"));
            }
            Ok(_) | Err(_) => {
                self.unknown(format!("range on {name}"));
                self.piece(format!("{name} {sym}[ range ]"));
            }
        }
    }

    fn lookup(&mut self, set: &str, sreg: u32, dreg: Option<u32>, inv: bool) {
        let Some((l, f)) = self.loaded(sreg) else { return };
        let name = f.name();
        let Some(s) = self.sets.get(self.family, self.table, set) else {
            self.unknown(format!("set @{set} not found"));
            self.piece(format!("{name} @{set}"));
            return;
        };
        let verdict_map = dreg == Some(0);
        // nft flags only interval concatenations NFT_SET_CONCAT; a key longer than the
        // first register's load is one too.
        if verdict_map && !s.anonymous() && (s.flags & NFT_SET_CONCAT != 0 || s.key_len as usize > l.len) {
            let s = s.clone();
            return self.concat_vmap(set, &s, sreg);
        }
        let mut texts = Vec::new();
        let mut elems = Vec::new();
        let mut problem = None;
        if s.flags & NFT_SET_CONCAT != 0 || s.key_len as usize != l.len {
            problem = Some(format!("set @{set} has a concatenated type"));
        }
        let mut ranges = if problem.is_none() { set_ranges(s) } else { Vec::new() };
        // nft lists elements by value; types kept in host byte order (interface names,
        // ct state, marks) compare from their last byte.
        if matches!(f, Field::IfName { .. } | Field::IfIndex { .. } | Field::CtState { .. } | Field::Other(..)) {
            ranges.sort_by(|a, b| a.0.iter().rev().cmp(b.0.iter().rev()));
        }
        let mut mapped = Vec::new();
        for (lo, hi, data) in &ranges {
            // ct state elements are bit values; each names one state.
            match self.elem(&f, lo, hi) {
                Ok((e, t)) => {
                    if let Some(Data::Value(v)) = data {
                        mapped.push((e.clone(), v.clone(), t.clone()));
                    }
                    let v = match (verdict_map, data) {
                        (true, Some(Data::Verdict(v))) => {
                            let a = match v {
                                Verdict::Accept => Some(Action::Accept),
                                Verdict::Drop => Some(Action::Drop),
                                Verdict::Return => Some(Action::Return),
                                Verdict::Jump(c) => Some(Action::Jump(c.clone())),
                                Verdict::Goto(c) => Some(Action::Goto(c.clone())),
                                Verdict::Continue => Some(Action::Continue),
                                _ => None,
                            };
                            if a.is_none() {
                                problem.get_or_insert(format!("verdict {} in map @{set}", v.text()));
                            }
                            texts.push(format!("{t} : {}", v.text()));
                            a
                        }
                        (false, Some(Data::Value(v))) if dreg.is_some() => {
                            // A data map: nft prints each element with its data.
                            match s.data_type.and_then(|ty| data_text(ty, v)) {
                                Some(d) => texts.push(format!("{t} : {d}")),
                                None => texts.push(t),
                            }
                            None
                        }
                        _ => {
                            texts.push(t);
                            None
                        }
                    };
                    elems.push((e, v));
                }
                Err(why) => {
                    problem.get_or_insert(if matches!(f, Field::Other(..)) {
                        why
                    } else {
                        format!("set @{set} has an element conndoc cannot read: {why}")
                    });
                }
            }
        }
        let rhs = if s.anonymous() { format!("{{ {} }}", texts.join(", ")) } else { format!("@{set}") };
        let sym = if inv { "!= " } else { "" };
        if let Some(p) = problem {
            self.unknown(p);
            let kw = if verdict_map { "vmap " } else { "" };
            self.piece(format!("{name} {sym}{kw}{rhs}"));
            return;
        }
        self.hide_deps(&f);
        let key = self.key(&f);
        match dreg {
            None => {
                match key {
                    Some(key) => {
                        let elems: Vec<Elem> = elems.into_iter().map(|(e, _)| e).collect();
                        let op = if inv { Op::NotIn } else { Op::In };
                        if key == Key::TcpFlags {
                            self.unknown("tcp flags in a set");
                        } else {
                            self.out.conds.push(Cond::Cmp { key, op, elems });
                        }
                    }
                    None => self.out.conds.push(Cond::Never),
                }
                self.piece(format!("{name} {sym}{rhs}"));
            }
            Some(0) => {
                match key {
                    Some(key) => {
                        let entries = elems.into_iter().filter_map(|(e, a)| Some((e, a?))).collect();
                        if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
                            self.out.vmap = Some((key, entries));
                        }
                    }
                    None => self.out.conds.push(Cond::Never),
                }
                self.piece(format!("{name} vmap {rhs}"));
            }
            Some(r) => {
                // A data map feeding a statement (`meta mark set ip saddr map { … }`). A key
                // not in the map ends the rule: the statement applies to its keys only.
                match key {
                    Some(key) if key != Key::TcpFlags => {
                        let elems = elems.into_iter().map(|(e, _)| e).collect();
                        self.out.conds.push(Cond::Cmp { key, op: Op::In, elems });
                        let entries = mapped.into_iter().map(|(e, v, t)| (cond_in(key, e), v, t)).collect();
                        self.datamap = Some((reg_slot(r), entries));
                    }
                    Some(_) => self.unknown("tcp flags in a map"),
                    None => self.out.conds.push(Cond::Never),
                }
                self.load(r, Src::Other(format!("{name} map {rhs}"), Fmt::Hex), s.key_len as usize);
                self.piece(format!("{name} map {rhs}"));
            }
        }
    }

    /// `A . B . C vmap @map`: the fields sit in consecutive 32-bit registers from `sreg`,
    /// each padded to 4 bytes, and so do they in each element's key.
    fn concat_vmap(&mut self, set: &str, s: &SetMsg, sreg: u32) {
        let mut fields: Vec<(Loaded, Field, usize)> = Vec::new();
        let (mut word, mut at) = (reg_slot(sreg), 0usize);
        while at < s.key_len as usize && fields.len() < 8 {
            let Some(l) = self.regs.get(&word).cloned() else { break };
            let f = self.field(&l);
            let padded = (l.len + 3) & !3;
            fields.push((l, f, at));
            at += padded;
            word += (padded / 4) as u32;
        }
        let name = fields.iter().map(|(_, f, _)| f.name()).collect::<Vec<_>>().join(" . ");
        let text = format!("{name} vmap @{set}");
        if fields.is_empty() || at != s.key_len as usize {
            self.unknown(format!("set @{set}: its concatenated key does not match the registers loaded"));
            self.piece(text);
            return;
        }
        let mut entries = Vec::new();
        for (lo, hi, data) in set_ranges(s) {
            let action = match &data {
                Some(Data::Verdict(Verdict::Accept)) => Action::Accept,
                Some(Data::Verdict(Verdict::Drop)) => Action::Drop,
                Some(Data::Verdict(Verdict::Return)) => Action::Return,
                Some(Data::Verdict(Verdict::Continue)) => Action::Continue,
                Some(Data::Verdict(Verdict::Jump(c))) => Action::Jump(c.clone()),
                Some(Data::Verdict(Verdict::Goto(c))) => Action::Goto(c.clone()),
                _ => {
                    self.unknown(format!("an element of map @{set} without a verdict conndoc reads"));
                    self.piece(text);
                    return;
                }
            };
            let mut conds = Vec::new();
            for (l, f, off) in &fields {
                let (Some(a), Some(b)) = (lo.get(*off..off + l.len), hi.get(*off..off + l.len)) else {
                    self.unknown(format!("an element of map @{set} shorter than its key"));
                    self.piece(text);
                    return;
                };
                match (self.elem(f, a, b), self.key(f)) {
                    (Ok((e, _)), Some(key)) => conds.push(cond_in(key, e)),
                    // A field this packet never has (`udp` for a TCP probe): never matches.
                    (Ok(_), None) => conds.push(Cond::Never),
                    (Err(why), _) => {
                        self.unknown(format!("map @{set}: {why}"));
                        self.piece(text);
                        return;
                    }
                }
            }
            entries.push((conds, action));
        }
        for (_, f, _) in &fields {
            self.hide_deps(f);
        }
        if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
            self.out.vmap_concat = Some(entries);
        }
        self.piece(text);
    }

    fn reject(&mut self, ty: u32, code: u8) {
        let fam = match (ty, self.family) {
            (1, _) => "tcp",
            (2, _) => "icmpx",
            (_, NfFamily::IP) => "icmp",
            (_, NfFamily::IP6) => "icmpv6",
            _ if self.nfproto == Some(Family::Ipv6) => "icmpv6",
            _ => "icmp",
        };
        let code_name = match (fam, code) {
            ("icmp", 0) => "net-unreachable",
            ("icmp", 1) => "host-unreachable",
            ("icmp", 2) => "prot-unreachable",
            ("icmp", 3) => "port-unreachable",
            ("icmp", 9) => "net-prohibited",
            ("icmp", 10) => "host-prohibited",
            ("icmp", 13) => "admin-prohibited",
            ("icmpv6", 0) => "no-route",
            ("icmpv6", 1) => "admin-prohibited",
            ("icmpv6", 3) => "addr-unreachable",
            ("icmpv6", 4) => "port-unreachable",
            ("icmpv6", 5) => "policy-fail",
            ("icmpv6", 6) => "reject-route",
            ("icmpx", 0) => "no-route",
            ("icmpx", 1) => "port-unreachable",
            ("icmpx", 2) => "host-unreachable",
            ("icmpx", 3) => "admin-prohibited",
            _ => "",
        };
        if fam != "tcp" && code_name.is_empty() {
            self.unknown(format!("reject type {ty} code {code}"));
            self.piece(format!("reject type {ty} code {code}"));
            return;
        }
        // nft prints the `meta l4proto tcp` a bare `reject with tcp reset` depends on.
        let with = if fam == "tcp" {
            RejectWith::TcpReset
        } else {
            if fam != "icmpx" {
                self.hide(self.nfproto_piece);
            }
            RejectWith::Icmp { family: fam.into(), code: code_name.into() }
        };
        // The default reject of the table's family prints as plain `reject`.
        let default = code_name == "port-unreachable"
            && matches!(
                (self.family, fam),
                (NfFamily::IP, "icmp") | (NfFamily::IP6, "icmpv6") | (NfFamily::INET | NfFamily::BRIDGE, "icmpx")
            );
        let text = match &with {
            _ if default => "reject".to_string(),
            RejectWith::TcpReset => "reject with tcp reset".into(),
            RejectWith::Icmp { family, code } => format!("reject with {family} {code}"),
        };
        self.piece(text);
        self.set_action(Action::Reject(with));
    }
}

/// The prefix length when [lo, hi] is exactly one CIDR block.
fn range_prefix(lo: &[u8], hi: &[u8]) -> Option<u8> {
    if lo.len() != hi.len() {
        return None;
    }
    let a = lo.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let z = hi.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let width = (lo.len() * 8) as u32;
    let host = a ^ z;
    // host bits must be a run of trailing ones, lo has them clear and hi set
    if host & host.wrapping_add(1) != 0 || a & host != 0 || z & host != host {
        return None;
    }
    u8::try_from(width - host.count_ones()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_ranges() {
        assert_eq!(prefix_len(&[0xff, 0xff, 0xf0, 0]), Some(20));
        assert_eq!(prefix_len(&[0xff, 0x0f]), None);
        assert_eq!(prefix_len(&[0xf0, 0xff]), None);
        assert_eq!(minus_one(&[10, 77, 0, 16]), vec![10, 77, 0, 15]);
        assert_eq!(minus_one(&[1, 0]), vec![0, 0xff]);
        assert_eq!(range_prefix(&[10, 77, 0, 0], &[10, 77, 0, 15]), Some(28));
        assert_eq!(range_prefix(&[10, 0, 0, 1], &[10, 0, 0, 9]), None);
        assert_eq!(range_prefix(&[0, 0, 0, 0], &[255, 255, 255, 255]), Some(0));
    }

    #[test]
    fn interval_set_elements() {
        // recorded for `elements = { 10.77.0.0/28, 192.0.2.7 }`: start and end (flag 1) keys
        let el = |k: [u8; 4], end: bool| SetElem {
            key: k.to_vec(),
            key_end: None,
            flags: u32::from(end),
            data: None,
            comment: None,
        };
        let s = SetMsg {
            family: NfFamily::INET,
            table: "t".into(),
            name: "blocked".into(),
            flags: NFT_SET_INTERVAL,
            key_len: 4,
            data_type: None,
            elems: vec![
                el([192, 0, 2, 8], true),
                el([192, 0, 2, 7], false),
                el([10, 77, 0, 16], true),
                el([10, 77, 0, 0], false),
                el([0, 0, 0, 0], true),
            ],
        };
        let r: Vec<_> = set_ranges(&s).into_iter().map(|(a, z, _)| (a, z)).collect();
        assert_eq!(r, vec![(vec![10, 77, 0, 0], vec![10, 77, 0, 15]), (vec![192, 0, 2, 7], vec![192, 0, 2, 7])]);
    }

    /// The kernel's bytes for tests/fixtures/nfnl-mixed.nft, recorded with the nfnldump
    /// example; nfnl-mixed.txt is `nft -a list ruleset` of the same ruleset.
    fn recorded() -> Ruleset {
        let raw = super::super::RawDump::from_bytes(include_bytes!("../../tests/fixtures/nfnl-mixed.bin")).unwrap();
        let mut d = Dump::parse(&raw).unwrap();
        d.ifnames = vec![(1, "lo".into())];
        to_ruleset(&d, 0, &HashSet::new())
    }

    #[test]
    fn recorded_rules_read_as_nft_prints_them() {
        let rs = recorded();
        let texts = crate::nft::parse_text(include_str!("../../tests/fixtures/nfnl-mixed.txt"));
        assert_eq!(rs.rule_count as usize, texts.len());
        let mut seen = 0;
        for ((_, fam, table, chain), ch) in &rs.chains {
            for r in &ch.rules {
                let h = r.reference.handle.unwrap();
                let want = &texts[&(fam.clone(), table.clone(), chain.clone(), h)];
                assert_eq!(&r.reference.text, want, "{fam} {table} {chain} handle {h}");
                seen += 1;
            }
        }
        assert!(seen >= texts.len());
        // numgen, meta mark, quota, limit
        assert_eq!(rs.not_understood_total, 4);
        let why: Vec<_> = rs.chains.values().flat_map(|c| &c.rules).filter_map(|r| r.not_understood.clone()).collect();
        assert!(why.contains(&"meta mark".to_string()), "{why:?}");
        assert!(why.contains(&"numgen inc mod 2".to_string()), "{why:?}");
    }

    #[test]
    fn recorded_base_chains_and_policies() {
        let rs = recorded();
        let mut b: Vec<_> =
            rs.bases.iter().map(|b| (b.chain.1.as_str(), b.chain.2.as_str(), b.hook, b.priority, b.policy.1)).collect();
        b.sort_by_key(|x| (x.0, x.1, x.3));
        assert_eq!(
            b,
            vec![
                ("inet", "t", Hook::Input, 0, true),
                ("ip", "strict", Hook::Output, 0, true),
                ("ip", "strict", Hook::Input, 10, false),
                ("ip6", "v6", Hook::Input, 0, true),
            ]
        );
        let vmap: Vec<_> = rs.chains[&(0, "inet".into(), "t".into(), "input".into())]
            .rules
            .iter()
            .filter(|r| r.reference.handle == Some(14))
            .map(|r| (r.conds.last().cloned(), r.action.clone()))
            .collect();
        let port = |p| Some(Cond::Cmp { key: Key::DPort, op: Op::In, elems: vec![Elem::Int(p)] });
        assert_eq!(vmap, vec![(port(83), Action::Accept), (port(84), Action::Drop)]);
    }
}
