//! One model for every rule source (nftables, iptables legacy and nf_tables back-ends) and
//! the evaluation of a single packet against it. Pure: no I/O.

use conndoc_facts::firewall::{Evaluation, FwVerdict, Hook, NotUnderstood, PacketSpec, RejectWith, RuleRef};
use conndoc_facts::Family;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The probe's packet: a TCP SYN opening a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub family: Family,
    pub source: Option<IpAddr>,
    pub destination: IpAddr,
    pub source_port: Option<u16>,
    pub destination_port: u16,
    pub input_interface: Option<String>,
    pub output_interface: Option<String>,
    /// Whether the destination is one of the reading host's own addresses (`fib daddr type
    /// local`, `-m addrtype --dst-type LOCAL`); None when not known.
    pub destination_local: Option<bool>,
}

impl Packet {
    pub fn spec(&self) -> PacketSpec {
        PacketSpec {
            family: self.family,
            protocol: "tcp".into(),
            source: self.source,
            destination: self.destination,
            source_port: self.source_port,
            destination_port: conndoc_facts::Port::new(self.destination_port)
                .unwrap_or_else(|| conndoc_facts::Port::new(1).expect("1 is a port")),
            input_interface: self.input_interface.clone(),
            output_interface: self.output_interface.clone(),
        }
    }
}

pub const IPPROTO_TCP: u64 = 6;
pub const TCP_SYN: u64 = 0x02;

/// What a condition looks at in the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    L4Proto,
    NfProto,
    SAddr,
    DAddr,
    SPort,
    DPort,
    Iifname,
    Oifname,
    CtState,
    TcpFlags,
    /// The route type of the destination address (`fib daddr type`, `addrtype --dst-type`).
    DAddrType,
}

/// A route type (`RTN_*` of rtnetlink), as `fib … type` and `-m addrtype` test it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteType(pub u8);

impl RouteType {
    pub const UNSPEC: RouteType = RouteType(0);
    pub const UNICAST: RouteType = RouteType(1);
    pub const LOCAL: RouteType = RouteType(2);
    pub const BROADCAST: RouteType = RouteType(3);
    pub const ANYCAST: RouteType = RouteType(4);
    pub const MULTICAST: RouteType = RouteType(5);
    pub const BLACKHOLE: RouteType = RouteType(6);
    pub const UNREACHABLE: RouteType = RouteType(7);
    pub const PROHIBIT: RouteType = RouteType(8);

    const NAMES: [&'static str; 9] =
        ["unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable", "prohibit"];

    /// nft's lower-case name (`local`); iptables spells them upper-case.
    pub fn name(self) -> String {
        Self::NAMES.get(usize::from(self.0)).map(|n| n.to_string()).unwrap_or_else(|| self.0.to_string())
    }

    /// From nft's or iptables' name, any case.
    pub fn from_name(n: &str) -> Option<RouteType> {
        let n = n.to_ascii_lowercase();
        Self::NAMES.iter().position(|x| *x == n).and_then(|i| u8::try_from(i).ok()).map(RouteType)
    }
}

/// One element a value is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    Int(u64),
    IntRange(u64, u64),
    Addr(IpAddr),
    Prefix(IpAddr, u8),
    AddrRange(IpAddr, IpAddr),
    /// Interface name; a trailing `*` (nft) or `+` (iptables) is a wildcard.
    Name(String),
    /// Conntrack state names (`new`, `established`, …).
    State(String),
    /// `family` (ipv4/ipv6) for `meta nfproto`.
    Fam(Family),
    /// A route type for `fib daddr type` / `-m addrtype`.
    RouteType(RouteType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Value is one of the elements (`==`, `in`).
    In,
    /// Value is none of the elements (`!=`).
    NotIn,
    Lt,
    Gt,
    Le,
    Ge,
}

/// A condition a rule puts on the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Cmp {
        key: Key,
        op: Op,
        elems: Vec<Elem>,
    },
    /// `(key & mask) op value` on a bit field (tcp flags).
    Masked {
        key: Key,
        mask: u64,
        op: Op,
        value: u64,
    },
    /// Something the packet can never have (e.g. `udp dport` for a TCP packet) — or
    /// always has (`negated`).
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Reject(RejectWith),
    Jump(String),
    Goto(String),
    Return,
    /// No verdict: counter, log, mark … evaluation goes on with the next rule.
    Continue,
    /// An address translation (nat chains only): ends the nat chain walk for the packet.
    Nat(NatAction),
}

/// What a nat rule does with the packet's destination (or source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatAction {
    /// `dnat to ADDR[:PORT]`, `-j DNAT --to-destination ADDR[:PORT]`; no port keeps the
    /// dialled one.
    Dnat { addr: IpAddr, port: Option<u16> },
    /// `redirect to :PORT`, `-j REDIRECT --to-ports PORT`: this host, another port; no port
    /// keeps the dialled one.
    Redirect { port: Option<u16> },
    /// `dnat to A-B[:P-Q]`, `dnat to A:P-Q`, `--to-destination A-B:P-Q`: the kernel picks
    /// one address and one port of the ranges per connection; no ports keep the dialled one.
    DnatRange { addrs: (IpAddr, IpAddr), ports: Option<(u16, u16)> },
    /// `redirect to :P-Q`, `--to-ports P-Q`: this host, one port of the range per connection.
    RedirectRange { ports: (u16, u16) },
    /// `dnat to :P[-Q]`, `--to-destination :P[-Q]`: the kernel keeps the destination address
    /// (no NF_NAT_RANGE_MAP_IPS) and rewrites the port (one of the range per connection).
    /// Unlike a redirect, the address is the dialled one, not the interface's.
    DnatPort { ports: (u16, u16) },
    /// `dnat prefix to A/len`, `-j NETMAP --to A/len` (NF_NAT_RANGE_NETMAP): one address for
    /// one, the network bits of `addrs` (the prefix as its first and last address) and the
    /// host bits of the dialled address; no port keeps the dialled one. iptables' NETMAP
    /// maps the destination in prerouting and output only (elsewhere the source).
    Netmap { addrs: (IpAddr, IpAddr), port: Option<u16> },
    /// One element of a redirect map (`redirect to :tcp dport map { 83 : 8083 }`): this
    /// host at the element's port; read as one rule per element, as a dnat map is.
    RedirectMapped { port: u16, element: String },
    /// A load-balancing map (`dnat to numgen inc mod 2 map { 0 : 10.77.1.2, 1 : 10.77.1.3 }`):
    /// the kernel picks one element per connection, so every backend is listed (in key
    /// order, a port of None keeping the dialled one). Only a map holding every value the
    /// generator makes is read so: otherwise some connections are not translated at all.
    DnatChoice { backends: Vec<(IpAddr, Option<u16>)> },
    /// One element of a dnat map (`dnat to tcp dport map { 16379 : 10.77.1.2 }`, `@name`):
    /// the rule is read as one rule per element, as a verdict map is, each matching its
    /// key; `element` is the element as nft prints it.
    DnatMapped { addr: IpAddr, port: Option<u16>, element: String },
    /// `snat`, `masquerade`: the source is rewritten (postrouting), the destination kept.
    Snat,
    /// A destination translation conndoc reads but cannot follow to one backend (a port or
    /// address range, a map): the kind and why.
    Unfollowed { kind: NatKind, why: String },
}

/// Destination translations, by how they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Dnat,
    Redirect,
}

impl NatKind {
    pub fn translation_kind(self) -> conndoc_facts::nat::TranslationKind {
        match self {
            NatKind::Dnat => conndoc_facts::nat::TranslationKind::Dnat,
            NatKind::Redirect => conndoc_facts::nat::TranslationKind::Redirect,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub reference: RuleRef,
    pub conds: Vec<Cond>,
    pub action: Action,
    /// Set when part of the rule could not be read: the rule is reported, never applied.
    pub not_understood: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub rules: Vec<Rule>,
}

/// A chain attached to a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i64,
    /// None: both families (nft `inet`).
    pub family: Option<Family>,
    pub chain: ChainId,
    /// The policy's location and verdict (accept or drop).
    pub policy: (RuleRef, bool),
}

/// A chain's identity: (source index, family, table, chain).
pub type ChainId = (usize, String, String, String);

#[derive(Debug, Default, Clone)]
pub struct Ruleset {
    /// Shared, so that copying a ruleset (a cached one, one without some tables) is cheap;
    /// `Arc::make_mut` to change one.
    pub chains: HashMap<ChainId, Arc<Chain>>,
    pub bases: Vec<BaseChain>,
    /// Chains of type nat attached to a hook: they translate, they do not filter.
    pub nat_bases: Vec<BaseChain>,
    /// Rules anywhere that could not be read at all.
    pub not_understood_total: u32,
    pub rule_count: u32,
}

pub(crate) enum Tri {
    Yes,
    No,
    Unknown(String),
}

/// The result of running one chain.
enum Outcome {
    Verdict(FwVerdict, RuleRef),
    /// Fell off the end of the chain, or `return`.
    Return,
}

struct Walk<'a> {
    rs: &'a Ruleset,
    pkt: &'a Packet,
    path: Vec<RuleRef>,
    not_understood: Vec<NotUnderstood>,
}

pub(crate) const MAX_DEPTH: usize = 64;

impl Ruleset {
    /// Merge another ruleset into this one (its chain ids already carry their source index).
    pub fn extend(&mut self, other: Ruleset) {
        self.chains.extend(other.chains);
        self.bases.extend(other.bases);
        self.nat_bases.extend(other.nat_bases);
        self.not_understood_total += other.not_understood_total;
        self.rule_count += other.rule_count;
    }

    /// Which rule `pkt` meets on its way through `hook` (prerouting is walked before input
    /// and forward, postrouting after output): the first terminal verdict in priority order,
    /// jumps and gotos followed, the chain policy when no rule decides.
    pub fn evaluate(&self, hook: Hook, pkt: &Packet) -> Evaluation {
        let hooks: &[Hook] = match hook {
            Hook::Input => &[Hook::Prerouting, Hook::Input],
            Hook::Forward => &[Hook::Prerouting, Hook::Forward, Hook::Postrouting],
            Hook::Output => &[Hook::Output, Hook::Postrouting],
            Hook::Prerouting => &[Hook::Prerouting],
            Hook::Postrouting => &[Hook::Postrouting],
        };
        let mut w = Walk { rs: self, pkt, path: Vec::new(), not_understood: Vec::new() };
        let mut last_accept = None;
        let mut result = None;
        'hooks: for h in hooks {
            let mut bases: Vec<&BaseChain> =
                self.bases.iter().filter(|b| b.hook == *h && b.family.is_none_or(|f| f == pkt.family)).collect();
            bases.sort_by_key(|b| b.priority);
            for b in bases {
                match w.run(&b.chain, 0) {
                    Outcome::Verdict(FwVerdict::Accept, r) => last_accept = Some(r),
                    Outcome::Verdict(v, r) => {
                        result = Some((v, r));
                        break 'hooks;
                    }
                    Outcome::Return => {
                        let (policy, accept) = &b.policy;
                        if !*accept {
                            result = Some((FwVerdict::Drop, policy.clone()));
                            break 'hooks;
                        }
                    }
                }
            }
        }
        let (verdict, decided_by) = match result {
            Some((v, r)) => (v, Some(r)),
            None => (FwVerdict::Accept, last_accept),
        };
        Evaluation { hook, packet: pkt.spec(), verdict, decided_by, path: w.path, not_understood: w.not_understood }
    }
}

impl Walk<'_> {
    fn run(&mut self, id: &ChainId, depth: usize) -> Outcome {
        let Some(chain) = self.rs.chains.get(id) else {
            return Outcome::Return;
        };
        if depth > MAX_DEPTH {
            return Outcome::Return;
        }
        for rule in &chain.rules {
            if !applies(rule, self.pkt, &mut self.not_understood) {
                continue;
            }
            match &rule.action {
                // Nat statements sit in nat chains, which the filter walk never enters.
                Action::Continue | Action::Nat(_) => {}
                Action::Accept => return Outcome::Verdict(FwVerdict::Accept, rule.reference.clone()),
                Action::Drop => return Outcome::Verdict(FwVerdict::Drop, rule.reference.clone()),
                Action::Reject(r) => return Outcome::Verdict(FwVerdict::Reject(r.clone()), rule.reference.clone()),
                Action::Return => return Outcome::Return,
                Action::Jump(target) | Action::Goto(target) => {
                    let tid = (id.0, id.1.clone(), id.2.clone(), target.clone());
                    self.path.push(rule.reference.clone());
                    let out = self.run(&tid, depth + 1);
                    if let Outcome::Verdict(..) = out {
                        return out;
                    }
                    self.path.pop();
                    if matches!(rule.action, Action::Goto(_)) {
                        return Outcome::Return;
                    }
                }
            }
        }
        Outcome::Return
    }
}

pub(crate) fn rule_matches(rule: &Rule, pkt: &Packet) -> Tri {
    let mut unknown = None;
    for c in &rule.conds {
        match cond_matches(c, pkt) {
            Tri::No => return Tri::No,
            Tri::Unknown(r) => unknown = unknown.or(Some(r)),
            Tri::Yes => {}
        }
    }
    match unknown {
        Some(r) => Tri::Unknown(r),
        None => Tri::Yes,
    }
}

/// The packet's value for a key; None when not known (e.g. input interface of a remote host).
enum Val<'a> {
    Int(u64),
    Addr(IpAddr),
    Name(&'a str),
    State(&'static str),
    Fam(Family),
    RouteType(RouteType),
}

fn value<'a>(key: Key, pkt: &'a Packet) -> Option<Val<'a>> {
    Some(match key {
        Key::L4Proto => Val::Int(IPPROTO_TCP),
        Key::NfProto => Val::Fam(pkt.family),
        Key::SAddr => Val::Addr(pkt.source?),
        Key::DAddr => Val::Addr(pkt.destination),
        Key::SPort => Val::Int(u64::from(pkt.source_port?)),
        Key::DPort => Val::Int(u64::from(pkt.destination_port)),
        Key::Iifname => Val::Name(pkt.input_interface.as_deref()?),
        Key::Oifname => Val::Name(pkt.output_interface.as_deref()?),
        Key::CtState => Val::State("new"),
        Key::TcpFlags => Val::Int(TCP_SYN),
        Key::DAddrType => Val::RouteType(if pkt.destination_local? { RouteType::LOCAL } else { RouteType::UNICAST }),
    })
}

fn key_name(key: Key) -> &'static str {
    match key {
        Key::L4Proto => "protocol",
        Key::NfProto => "family",
        Key::SAddr => "source address",
        Key::DAddr => "destination address",
        Key::SPort => "source port",
        Key::DPort => "destination port",
        Key::Iifname => "input interface",
        Key::Oifname => "output interface",
        Key::CtState => "conntrack state",
        Key::TcpFlags => "tcp flags",
        Key::DAddrType => "destination address type",
    }
}

fn cond_matches(c: &Cond, pkt: &Packet) -> Tri {
    match c {
        Cond::Never => Tri::No,
        Cond::Masked { key, mask, op, value: want } => {
            let Some(Val::Int(v)) = value(*key, pkt) else {
                return Tri::Unknown(format!("{} not known for the probe", key_name(*key)));
            };
            let got = v & mask;
            let yes = match op {
                Op::In => got == *want,
                Op::NotIn => got != *want,
                Op::Lt => got < *want,
                Op::Gt => got > *want,
                Op::Le => got <= *want,
                Op::Ge => got >= *want,
            };
            bool_tri(yes)
        }
        Cond::Cmp { key, op, elems } => {
            let Some(v) = value(*key, pkt) else {
                return Tri::Unknown(format!("{} not known for the probe", key_name(*key)));
            };
            match op {
                Op::In | Op::NotIn => {
                    let mut any = false;
                    for e in elems {
                        match elem_contains(e, &v) {
                            Some(true) => {
                                any = true;
                                break;
                            }
                            Some(false) => {}
                            None => return Tri::Unknown(format!("cannot compare {} with {e:?}", key_name(*key))),
                        }
                    }
                    bool_tri(any == (*op == Op::In))
                }
                Op::Lt | Op::Gt | Op::Le | Op::Ge => {
                    let (Val::Int(v), [Elem::Int(w)]) = (&v, elems.as_slice()) else {
                        return Tri::Unknown(format!("ordered comparison of {}", key_name(*key)));
                    };
                    bool_tri(match op {
                        Op::Lt => v < w,
                        Op::Gt => v > w,
                        Op::Le => v <= w,
                        _ => v >= w,
                    })
                }
            }
        }
    }
}

fn bool_tri(b: bool) -> Tri {
    if b {
        Tri::Yes
    } else {
        Tri::No
    }
}

/// Whether the element contains the value; None when they are of different kinds.
fn elem_contains(e: &Elem, v: &Val) -> Option<bool> {
    Some(match (e, v) {
        (Elem::Int(a), Val::Int(b)) => a == b,
        (Elem::IntRange(a, z), Val::Int(b)) => a <= b && b <= z,
        (Elem::Addr(a), Val::Addr(b)) => a == b,
        (Elem::Prefix(net, len), Val::Addr(b)) => in_prefix(*b, *net, *len),
        (Elem::AddrRange(a, z), Val::Addr(b)) => match (a, z, b) {
            (IpAddr::V4(a), IpAddr::V4(z), IpAddr::V4(b)) => a <= b && b <= z,
            (IpAddr::V6(a), IpAddr::V6(z), IpAddr::V6(b)) => a <= b && b <= z,
            _ => false,
        },
        (Elem::Name(pat), Val::Name(n)) => name_matches(pat, n),
        (Elem::State(s), Val::State(n)) => s == n,
        (Elem::Fam(f), Val::Fam(g)) => f == g,
        (Elem::RouteType(a), Val::RouteType(b)) => a == b,
        _ => return None,
    })
}

pub fn in_prefix(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn name_matches(pat: &str, name: &str) -> bool {
    match pat.strip_suffix('*').or_else(|| pat.strip_suffix('+')) {
        Some(prefix) => name.starts_with(prefix),
        None => pat == name,
    }
}

/// Whether the walk takes `rule`'s action for `pkt`: it matches and is understood. A rule
/// that may match but is not understood is recorded and passed over (both walks, filter
/// and nat, do the same).
pub(crate) fn applies(rule: &Rule, pkt: &Packet, not_understood: &mut Vec<NotUnderstood>) -> bool {
    match rule_matches(rule, pkt) {
        Tri::No => return false,
        Tri::Unknown(reason) => {
            not_understood.push(NotUnderstood { rule: rule.reference.clone(), reason });
            return false;
        }
        Tri::Yes => {}
    }
    if let Some(reason) = &rule.not_understood {
        not_understood.push(NotUnderstood { rule: rule.reference.clone(), reason: reason.clone() });
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(in_prefix("10.1.2.3".parse().unwrap(), "10.0.0.0".parse().unwrap(), 8));
        assert!(!in_prefix("11.1.2.3".parse().unwrap(), "10.0.0.0".parse().unwrap(), 8));
        assert!(in_prefix("fd77::2".parse().unwrap(), "fd77::".parse().unwrap(), 64));
        assert!(in_prefix("1.2.3.4".parse().unwrap(), "0.0.0.0".parse().unwrap(), 0));
        assert!(!in_prefix("fd77::2".parse().unwrap(), "10.0.0.0".parse().unwrap(), 8));
    }

    #[test]
    fn wildcards() {
        assert!(name_matches("veth*", "veth0"));
        assert!(name_matches("eth+", "eth1"));
        assert!(!name_matches("eth0", "eth1"));
    }
}
