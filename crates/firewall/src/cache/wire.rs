//! The cache file format: a header naming what the file is for, then the decoded ruleset in
//! a compact binary form written and read by hand (every enum variant has a fixed tag; the
//! reader bounds-checks every length, so a damaged file is refused, never trusted).
//!
//! ```text
//! magic "CDNFTC\0\n" | u32 FORMAT | str build | str boot_id | u64 netns cookie | u32 generation
//! | u64 payload length | u64 checksum of the payload | payload
//! ```
//! Integers are little-endian, strings a u32 length and UTF-8 bytes. `build` names the
//! conndoc binary that wrote the file (version, executable size and mtime): another build
//! may lay the model out differently, so its files are ignored.

use crate::model::{
    Action, BaseChain, Chain, ChainId, Cond, Elem, Key, NatAction, NatKind, Op, RouteType, Rule, Ruleset,
};
use conndoc_facts::firewall::{FirewallTool, Hook, RejectWith, RuleRef};
use conndoc_facts::Family;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAGIC: &[u8; 8] = b"CDNFTC\0\n";
/// Bump when the layout below changes, or what a ruleset holds (3: iptables-nft's tables
/// as `iptables-nft-save` rules, family `ipv4`/`ipv6`, not as nft rules; 5: port-only
/// DNAT, NETMAP, redirect maps, numgen maps and dnat maps on concatenated keys are
/// followed, no longer unfollowed).
pub const FORMAT: u32 = 5;

/// What a file is valid for: all of it must match the reader's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    pub build: String,
    pub boot_id: String,
    pub cookie: u64,
    pub generation: u32,
}

/// One cached decode.
#[derive(Debug, Clone)]
pub struct Contents {
    pub ruleset: Ruleset,
    /// The interface names the rules were rendered with (see `Provenance::ifnames`).
    pub ifnames: Option<Vec<(u32, String)>>,
}

/// Why a file was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a cache file, cut short, damaged, or of another format version.
    Damaged,
    /// A sound file for another build, boot, namespace or generation.
    OtherKey,
}

pub fn encode(key: &FileKey, ruleset: &Ruleset, ifnames: Option<&[(u32, String)]>) -> Vec<u8> {
    let mut p = W(Vec::with_capacity(64 + ruleset.rule_count as usize * 128));
    p.ruleset(ruleset);
    match ifnames {
        None => p.u8(0),
        Some(v) => {
            p.u8(1);
            p.len(v.len());
            for (i, n) in v {
                p.u32(*i);
                p.str(n);
            }
        }
    }
    let mut out = W(Vec::with_capacity(p.0.len() + 128));
    out.0.extend_from_slice(MAGIC);
    out.u32(FORMAT);
    out.str(&key.build);
    out.str(&key.boot_id);
    out.u64(key.cookie);
    out.u32(key.generation);
    out.u64(p.0.len() as u64);
    out.u64(checksum(&p.0));
    out.0.extend_from_slice(&p.0);
    out.0
}

/// The header alone (cheap: the payload is checked and read only for the right key).
fn header(b: &[u8]) -> Option<(FileKey, &[u8])> {
    let mut r = R { b, at: 0 };
    if r.bytes(8)? != MAGIC || r.u32()? != FORMAT {
        return None;
    }
    let key = FileKey { build: r.string()?, boot_id: r.string()?, cookie: r.u64()?, generation: r.u32()? };
    let len = usize::try_from(r.u64()?).ok()?;
    let sum = r.u64()?;
    let payload = r.bytes(len)?;
    (r.at == b.len() && checksum(payload) == sum).then_some((key, payload))
}

pub fn decode(b: &[u8], want: &FileKey) -> Result<Contents, Refused> {
    let (key, payload) = header(b).ok_or(Refused::Damaged)?;
    if key != *want {
        return Err(Refused::OtherKey);
    }
    let mut r = R { b: payload, at: 0 };
    let ruleset = r.ruleset().ok_or(Refused::Damaged)?;
    let ifnames = match r.u8().ok_or(Refused::Damaged)? {
        0 => None,
        1 => {
            let n = r.len(5).ok_or(Refused::Damaged)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((r.u32().ok_or(Refused::Damaged)?, r.string().ok_or(Refused::Damaged)?));
            }
            Some(v)
        }
        _ => return Err(Refused::Damaged),
    };
    if r.at != payload.len() {
        return Err(Refused::Damaged);
    }
    Ok(Contents { ruleset, ifnames })
}

/// A fast 64-bit checksum (word-wise multiply–rotate): catches a damaged file, not an attacker
/// (the directory is root's own, mode 0700).
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(0x517c_c1b7_2722_0a95);
    h ^ (h >> 29)
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
        }
    }
    fn ip(&mut self, a: &IpAddr) {
        match a {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
    fn family(&mut self, f: Option<Family>) {
        self.u8(match f {
            None => 0,
            Some(Family::Ipv4) => 4,
            Some(Family::Ipv6) => 6,
        });
    }
    fn chain_id(&mut self, id: &ChainId) {
        self.u64(id.0 as u64);
        self.str(&id.1);
        self.str(&id.2);
        self.str(&id.3);
    }
    fn rule_ref(&mut self, r: &RuleRef) {
        self.u8(match r.tool {
            FirewallTool::Nftables => 0,
            FirewallTool::IptablesNft => 1,
            FirewallTool::IptablesLegacy => 2,
            FirewallTool::Ip6tablesNft => 3,
            FirewallTool::Ip6tablesLegacy => 4,
        });
        self.str(&r.family);
        self.str(&r.table);
        self.str(&r.chain);
        self.opt_u64(r.handle);
        self.opt_u32(r.position);
        self.opt_u32(r.line);
        self.u8(u8::from(r.policy));
        self.str(&r.text);
    }
    fn key(&mut self, k: Key) {
        self.u8(match k {
            Key::L4Proto => 0,
            Key::NfProto => 1,
            Key::SAddr => 2,
            Key::DAddr => 3,
            Key::SPort => 4,
            Key::DPort => 5,
            Key::Iifname => 6,
            Key::Oifname => 7,
            Key::CtState => 8,
            Key::TcpFlags => 9,
            Key::DAddrType => 10,
        });
    }
    fn op(&mut self, o: Op) {
        self.u8(match o {
            Op::In => 0,
            Op::NotIn => 1,
            Op::Lt => 2,
            Op::Gt => 3,
            Op::Le => 4,
            Op::Ge => 5,
        });
    }
    fn elem(&mut self, e: &Elem) {
        match e {
            Elem::Int(v) => {
                self.u8(0);
                self.u64(*v);
            }
            Elem::IntRange(a, z) => {
                self.u8(1);
                self.u64(*a);
                self.u64(*z);
            }
            Elem::Addr(a) => {
                self.u8(2);
                self.ip(a);
            }
            Elem::Prefix(a, l) => {
                self.u8(3);
                self.ip(a);
                self.u8(*l);
            }
            Elem::AddrRange(a, z) => {
                self.u8(4);
                self.ip(a);
                self.ip(z);
            }
            Elem::Name(n) => {
                self.u8(5);
                self.str(n);
            }
            Elem::State(s) => {
                self.u8(6);
                self.str(s);
            }
            Elem::Fam(f) => {
                self.u8(7);
                self.family(Some(*f));
            }
            Elem::RouteType(t) => {
                self.u8(8);
                self.u8(t.0);
            }
        }
    }
    fn cond(&mut self, c: &Cond) {
        match c {
            Cond::Cmp { key, op, elems } => {
                self.u8(0);
                self.key(*key);
                self.op(*op);
                self.len(elems.len());
                for e in elems {
                    self.elem(e);
                }
            }
            Cond::Masked { key, mask, op, value } => {
                self.u8(1);
                self.key(*key);
                self.u64(*mask);
                self.op(*op);
                self.u64(*value);
            }
            Cond::Never => self.u8(2),
        }
    }
    fn action(&mut self, a: &Action) {
        match a {
            Action::Accept => self.u8(0),
            Action::Drop => self.u8(1),
            Action::Reject(RejectWith::TcpReset) => self.u8(2),
            Action::Reject(RejectWith::Icmp { family, code }) => {
                self.u8(3);
                self.str(family);
                self.str(code);
            }
            Action::Jump(t) => {
                self.u8(4);
                self.str(t);
            }
            Action::Goto(t) => {
                self.u8(5);
                self.str(t);
            }
            Action::Return => self.u8(6),
            Action::Continue => self.u8(7),
            Action::Nat(NatAction::Dnat { addr, port }) => {
                self.u8(8);
                self.ip(addr);
                self.opt_u32(port.map(u32::from));
            }
            Action::Nat(NatAction::Redirect { port }) => {
                self.u8(9);
                self.opt_u32(port.map(u32::from));
            }
            Action::Nat(NatAction::Snat) => self.u8(10),
            Action::Nat(NatAction::DnatRange { addrs, ports }) => {
                self.u8(12);
                self.ip(&addrs.0);
                self.ip(&addrs.1);
                self.opt_u32(ports.map(|p| u32::from(p.0) << 16 | u32::from(p.1)));
            }
            Action::Nat(NatAction::RedirectRange { ports }) => {
                self.u8(13);
                self.u32(u32::from(ports.0) << 16 | u32::from(ports.1));
            }
            Action::Nat(NatAction::DnatMapped { addr, port, element }) => {
                self.u8(14);
                self.ip(addr);
                self.opt_u32(port.map(u32::from));
                self.str(element);
            }
            Action::Nat(NatAction::DnatPort { ports }) => {
                self.u8(15);
                self.u32(u32::from(ports.0) << 16 | u32::from(ports.1));
            }
            Action::Nat(NatAction::Netmap { addrs, port }) => {
                self.u8(16);
                self.ip(&addrs.0);
                self.ip(&addrs.1);
                self.opt_u32(port.map(u32::from));
            }
            Action::Nat(NatAction::RedirectMapped { port, element }) => {
                self.u8(17);
                self.u32(u32::from(*port));
                self.str(element);
            }
            Action::Nat(NatAction::DnatChoice { backends }) => {
                self.u8(18);
                self.u32(backends.len() as u32);
                for (a, p) in backends {
                    self.ip(a);
                    self.opt_u32(p.map(u32::from));
                }
            }
            Action::Nat(NatAction::Unfollowed { kind, why }) => {
                self.u8(11);
                self.u8(match kind {
                    NatKind::Dnat => 0,
                    NatKind::Redirect => 1,
                });
                self.str(why);
            }
        }
    }
    fn bases(&mut self, bases: &[BaseChain]) {
        self.len(bases.len());
        for b in bases {
            self.u8(match b.hook {
                Hook::Prerouting => 0,
                Hook::Input => 1,
                Hook::Forward => 2,
                Hook::Output => 3,
                Hook::Postrouting => 4,
            });
            self.u64(b.priority as u64);
            self.family(b.family);
            self.chain_id(&b.chain);
            self.rule_ref(&b.policy.0);
            self.u8(u8::from(b.policy.1));
        }
    }
    fn ruleset(&mut self, rs: &Ruleset) {
        self.u32(rs.rule_count);
        self.u32(rs.not_understood_total);
        self.bases(&rs.bases);
        self.bases(&rs.nat_bases);
        self.len(rs.chains.len());
        for (id, ch) in &rs.chains {
            self.chain_id(id);
            self.len(ch.rules.len());
            for r in &ch.rules {
                self.rule_ref(&r.reference);
                self.len(r.conds.len());
                for c in &r.conds {
                    self.cond(c);
                }
                self.action(&r.action);
                match &r.not_understood {
                    None => self.u8(0),
                    Some(s) => {
                        self.u8(1);
                        self.str(s);
                    }
                }
            }
        }
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn bool(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    /// A count of items each at least `min` bytes long: more than the rest of the file
    /// holds is damage (and must not become a huge allocation).
    fn len(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.saturating_mul(min) <= self.b.len() - self.at).then_some(n)
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.bytes(n)?).ok().map(str::to_string)
    }
    fn opt_u64(&mut self) -> Option<Option<u64>> {
        Some(if self.bool()? { Some(self.u64()?) } else { None })
    }
    fn opt_u32(&mut self) -> Option<Option<u32>> {
        Some(if self.bool()? { Some(self.u32()?) } else { None })
    }
    fn ip(&mut self) -> Option<IpAddr> {
        Some(match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(self.bytes(4)?).ok()?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(self.bytes(16)?).ok()?)),
            _ => return None,
        })
    }
    fn family(&mut self) -> Option<Option<Family>> {
        Some(match self.u8()? {
            0 => None,
            4 => Some(Family::Ipv4),
            6 => Some(Family::Ipv6),
            _ => return None,
        })
    }
    fn chain_id(&mut self) -> Option<ChainId> {
        Some((usize::try_from(self.u64()?).ok()?, self.string()?, self.string()?, self.string()?))
    }
    fn rule_ref(&mut self) -> Option<RuleRef> {
        let tool = match self.u8()? {
            0 => FirewallTool::Nftables,
            1 => FirewallTool::IptablesNft,
            2 => FirewallTool::IptablesLegacy,
            3 => FirewallTool::Ip6tablesNft,
            4 => FirewallTool::Ip6tablesLegacy,
            _ => return None,
        };
        Some(RuleRef {
            tool,
            family: self.string()?,
            table: self.string()?,
            chain: self.string()?,
            handle: self.opt_u64()?,
            position: self.opt_u32()?,
            line: self.opt_u32()?,
            policy: self.bool()?,
            text: self.string()?,
        })
    }
    fn key(&mut self) -> Option<Key> {
        Some(match self.u8()? {
            0 => Key::L4Proto,
            1 => Key::NfProto,
            2 => Key::SAddr,
            3 => Key::DAddr,
            4 => Key::SPort,
            5 => Key::DPort,
            6 => Key::Iifname,
            7 => Key::Oifname,
            8 => Key::CtState,
            9 => Key::TcpFlags,
            10 => Key::DAddrType,
            _ => return None,
        })
    }
    fn op(&mut self) -> Option<Op> {
        Some(match self.u8()? {
            0 => Op::In,
            1 => Op::NotIn,
            2 => Op::Lt,
            3 => Op::Gt,
            4 => Op::Le,
            5 => Op::Ge,
            _ => return None,
        })
    }
    fn elem(&mut self) -> Option<Elem> {
        Some(match self.u8()? {
            0 => Elem::Int(self.u64()?),
            1 => Elem::IntRange(self.u64()?, self.u64()?),
            2 => Elem::Addr(self.ip()?),
            3 => Elem::Prefix(self.ip()?, self.u8()?),
            4 => Elem::AddrRange(self.ip()?, self.ip()?),
            5 => Elem::Name(self.string()?),
            6 => Elem::State(self.string()?),
            7 => Elem::Fam(self.family()??),
            8 => Elem::RouteType(RouteType(self.u8()?)),
            _ => return None,
        })
    }
    fn cond(&mut self) -> Option<Cond> {
        Some(match self.u8()? {
            0 => {
                let (key, op) = (self.key()?, self.op()?);
                let n = self.len(2)?;
                let mut elems = Vec::with_capacity(n);
                for _ in 0..n {
                    elems.push(self.elem()?);
                }
                Cond::Cmp { key, op, elems }
            }
            1 => Cond::Masked { key: self.key()?, mask: self.u64()?, op: self.op()?, value: self.u64()? },
            2 => Cond::Never,
            _ => return None,
        })
    }
    fn action(&mut self) -> Option<Action> {
        Some(match self.u8()? {
            0 => Action::Accept,
            1 => Action::Drop,
            2 => Action::Reject(RejectWith::TcpReset),
            3 => Action::Reject(RejectWith::Icmp { family: self.string()?, code: self.string()? }),
            4 => Action::Jump(self.string()?),
            5 => Action::Goto(self.string()?),
            6 => Action::Return,
            7 => Action::Continue,
            8 => Action::Nat(NatAction::Dnat { addr: self.ip()?, port: self.port()? }),
            9 => Action::Nat(NatAction::Redirect { port: self.port()? }),
            10 => Action::Nat(NatAction::Snat),
            12 => {
                let addrs = (self.ip()?, self.ip()?);
                let ports = self.opt_u32()?.map(|p| ((p >> 16) as u16, p as u16));
                Action::Nat(NatAction::DnatRange { addrs, ports })
            }
            13 => {
                let p = self.u32()?;
                Action::Nat(NatAction::RedirectRange { ports: ((p >> 16) as u16, p as u16) })
            }
            14 => Action::Nat(NatAction::DnatMapped { addr: self.ip()?, port: self.port()?, element: self.string()? }),
            15 => {
                let p = self.u32()?;
                Action::Nat(NatAction::DnatPort { ports: ((p >> 16) as u16, p as u16) })
            }
            16 => Action::Nat(NatAction::Netmap { addrs: (self.ip()?, self.ip()?), port: self.port()? }),
            17 => Action::Nat(NatAction::RedirectMapped {
                port: u16::try_from(self.u32()?).ok()?,
                element: self.string()?,
            }),
            18 => {
                let n = self.u32()? as usize;
                let mut backends = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    backends.push((self.ip()?, self.port()?));
                }
                Action::Nat(NatAction::DnatChoice { backends })
            }
            11 => {
                let kind = match self.u8()? {
                    0 => NatKind::Dnat,
                    1 => NatKind::Redirect,
                    _ => return None,
                };
                Action::Nat(NatAction::Unfollowed { kind, why: self.string()? })
            }
            _ => return None,
        })
    }
    fn port(&mut self) -> Option<Option<u16>> {
        match self.opt_u32()? {
            None => Some(None),
            Some(p) => u16::try_from(p).ok().map(Some),
        }
    }
    fn bases(&mut self) -> Option<Vec<BaseChain>> {
        let n = self.len(8)?;
        let mut bases = Vec::with_capacity(n);
        for _ in 0..n {
            let hook = match self.u8()? {
                0 => Hook::Prerouting,
                1 => Hook::Input,
                2 => Hook::Forward,
                3 => Hook::Output,
                4 => Hook::Postrouting,
                _ => return None,
            };
            bases.push(BaseChain {
                hook,
                priority: self.u64()? as i64,
                family: self.family()?,
                chain: self.chain_id()?,
                policy: (self.rule_ref()?, self.bool()?),
            });
        }
        Some(bases)
    }
    fn ruleset(&mut self) -> Option<Ruleset> {
        let mut rs = Ruleset { rule_count: self.u32()?, not_understood_total: self.u32()?, ..Ruleset::default() };
        rs.bases = self.bases()?;
        rs.nat_bases = self.bases()?;
        let n = self.len(8)?;
        rs.chains.reserve(n);
        for _ in 0..n {
            let id = self.chain_id()?;
            let k = self.len(8)?;
            let mut rules = Vec::with_capacity(k);
            for _ in 0..k {
                let reference = self.rule_ref()?;
                let c = self.len(1)?;
                let mut conds = Vec::with_capacity(c);
                for _ in 0..c {
                    conds.push(self.cond()?);
                }
                let action = self.action()?;
                let not_understood = if self.bool()? { Some(self.string()?) } else { None };
                rules.push(Rule { reference, conds, action, not_understood });
            }
            rs.chains.insert(id, Chain { rules }.into());
        }
        Some(rs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rref(text: &str, handle: Option<u64>) -> RuleRef {
        RuleRef {
            tool: FirewallTool::Nftables,
            family: "inet".into(),
            table: "t".into(),
            chain: "input".into(),
            handle,
            position: handle.map(|h| h as u32),
            line: None,
            policy: handle.is_none(),
            text: text.into(),
        }
    }

    /// Every variant of every model type, once.
    fn sample() -> Contents {
        let id: ChainId = (0, "inet".into(), "t".into(), "input".into());
        let mut rs = Ruleset { rule_count: 3, not_understood_total: 1, ..Ruleset::default() };
        rs.bases.push(BaseChain {
            hook: Hook::Input,
            priority: -150,
            family: None,
            chain: id.clone(),
            policy: (rref("policy drop;", None), false),
        });
        rs.bases.push(BaseChain {
            hook: Hook::Postrouting,
            priority: 100,
            family: Some(Family::Ipv6),
            chain: id.clone(),
            policy: (rref("policy accept;", None), true),
        });
        rs.nat_bases.push(BaseChain {
            hook: Hook::Prerouting,
            priority: -100,
            family: Some(Family::Ipv4),
            chain: id.clone(),
            policy: (rref("policy accept;", None), true),
        });
        let all_elems = vec![
            Elem::Int(7000),
            Elem::IntRange(1, 1024),
            Elem::Addr("10.77.0.2".parse().unwrap()),
            Elem::Prefix("fd77::".parse().unwrap(), 64),
            Elem::AddrRange("192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap()),
            Elem::Name("veth*".into()),
            Elem::State("new".into()),
            Elem::Fam(Family::Ipv4),
            Elem::RouteType(RouteType::LOCAL),
        ];
        let keys = [
            Key::L4Proto,
            Key::NfProto,
            Key::SAddr,
            Key::DAddr,
            Key::SPort,
            Key::DPort,
            Key::Iifname,
            Key::Oifname,
            Key::CtState,
            Key::TcpFlags,
            Key::DAddrType,
        ];
        let ops = [Op::In, Op::NotIn, Op::Lt, Op::Gt, Op::Le, Op::Ge];
        let actions = [
            Action::Accept,
            Action::Drop,
            Action::Reject(RejectWith::TcpReset),
            Action::Reject(RejectWith::Icmp { family: "icmpx".into(), code: "admin-prohibited".into() }),
            Action::Jump("web".into()),
            Action::Goto("web".into()),
            Action::Return,
            Action::Continue,
            Action::Nat(NatAction::Dnat { addr: "172.17.0.2".parse().unwrap(), port: Some(6379) }),
            Action::Nat(NatAction::Dnat { addr: "fd77:1::2".parse().unwrap(), port: None }),
            Action::Nat(NatAction::Redirect { port: Some(6390) }),
            Action::Nat(NatAction::Redirect { port: None }),
            Action::Nat(NatAction::Snat),
            Action::Nat(NatAction::Unfollowed { kind: NatKind::Redirect, why: "a port range".into() }),
            Action::Nat(NatAction::Unfollowed { kind: NatKind::Dnat, why: "a map".into() }),
            Action::Nat(NatAction::DnatRange {
                addrs: ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()),
                ports: Some((6379, 6380)),
            }),
            Action::Nat(NatAction::DnatRange {
                addrs: ("fd00::2".parse().unwrap(), "fd00::2".parse().unwrap()),
                ports: None,
            }),
            Action::Nat(NatAction::RedirectRange { ports: (6000, 6010) }),
            Action::Nat(NatAction::DnatPort { ports: (8080, 8080) }),
            Action::Nat(NatAction::DnatPort { ports: (8080, 8090) }),
            Action::Nat(NatAction::Netmap {
                addrs: ("10.77.1.0".parse().unwrap(), "10.77.1.255".parse().unwrap()),
                port: None,
            }),
            Action::Nat(NatAction::RedirectMapped { port: 8083, element: "83 : 8083".into() }),
            Action::Nat(NatAction::DnatChoice {
                backends: vec![("10.77.1.2".parse().unwrap(), None), ("fd77:1::3".parse().unwrap(), Some(6379))],
            }),
            Action::Nat(NatAction::Netmap {
                addrs: ("fd77:1::".parse().unwrap(), "fd77:1::ffff:ffff:ffff:ffff".parse().unwrap()),
                port: Some(80),
            }),
            Action::Nat(NatAction::DnatMapped {
                addr: "10.77.1.2".parse().unwrap(),
                port: Some(6379),
                element: "16379 : 10.77.1.2 . 6379".into(),
            }),
        ];
        let mut rules = Vec::new();
        for (i, action) in actions.into_iter().enumerate() {
            let mut conds: Vec<Cond> = keys
                .iter()
                .zip(ops.iter().cycle())
                .map(|(k, o)| Cond::Cmp { key: *k, op: *o, elems: all_elems.clone() })
                .collect();
            conds.push(Cond::Masked { key: Key::TcpFlags, mask: 0x12, op: Op::NotIn, value: 2 });
            conds.push(Cond::Never);
            let not_understood = (i == 3).then(|| "[ fib ]".to_string());
            rules.push(Rule {
                reference: rref(&format!("rule {i}"), Some(i as u64 + 2)),
                conds,
                action,
                not_understood,
            });
        }
        rs.chains.insert(id, Chain { rules }.into());
        rs.chains.insert((2, "ipv4".into(), "filter".into(), "INPUT".into()), Chain { rules: vec![] }.into());
        Contents { ruleset: rs, ifnames: Some(vec![(1, "lo".into()), (2, "eth0".into())]) }
    }

    fn key() -> FileKey {
        FileKey { build: "0.1.0 exe=1:2".into(), boot_id: "b0".into(), cookie: 4097, generation: 12 }
    }

    fn same(a: &Ruleset, b: &Ruleset) {
        assert_eq!(a.chains, b.chains);
        assert_eq!(a.bases, b.bases);
        assert_eq!(a.nat_bases, b.nat_bases);
        assert_eq!((a.rule_count, a.not_understood_total), (b.rule_count, b.not_understood_total));
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let back = decode(&encode(&key(), &c.ruleset, c.ifnames.as_deref()), &key()).unwrap();
        same(&back.ruleset, &c.ruleset);
        assert_eq!(back.ifnames, c.ifnames);
        let none = Contents { ifnames: None, ..c };
        assert_eq!(decode(&encode(&key(), &none.ruleset, None), &key()).unwrap().ifnames, None);
    }

    #[test]
    fn another_key_is_refused() {
        let c = sample();
        let b = encode(&key(), &c.ruleset, c.ifnames.as_deref());
        for other in [
            FileKey { generation: 13, ..key() },
            FileKey { cookie: 4098, ..key() },
            FileKey { boot_id: "b1".into(), ..key() },
            FileKey { build: "0.1.0 exe=1:3".into(), ..key() },
        ] {
            assert_eq!(decode(&b, &other).err(), Some(Refused::OtherKey), "{other:?}");
        }
    }

    #[test]
    fn damage_is_refused() {
        let c = sample();
        let b = encode(&key(), &c.ruleset, c.ifnames.as_deref());
        // Another format version.
        let mut v = b.clone();
        v[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        assert_eq!(decode(&v, &key()).err(), Some(Refused::Damaged));
        // Every cut, and a flipped bit anywhere in the payload.
        for n in [0, 7, 8, 12, 40, b.len() / 2, b.len() - 1] {
            assert_eq!(decode(&b[..n], &key()).err(), Some(Refused::Damaged), "cut at {n}");
        }
        for at in [b.len() - 1, b.len() - 200, b.len() / 2] {
            let mut v = b.clone();
            v[at] ^= 0x40;
            assert_eq!(decode(&v, &key()).err(), Some(Refused::Damaged), "flip at {at}");
        }
        let mut v = b.clone();
        v.push(0);
        assert_eq!(decode(&v, &key()).err(), Some(Refused::Damaged));
        assert_eq!(decode(b"garbage", &key()).err(), Some(Refused::Damaged));
    }
}

/// The cache file's decoder on damaged payloads: the checksum is recomputed after each
/// mutation so the decoder itself is reached (a real damaged file is turned away by the
/// checksum first). Seed: the real ruleset of tests/fixtures/nfnl-mixed.bin, encoded.
#[cfg(test)]
mod fuzz {
    use super::*;
    use conndoc_testsupport::fuzz::{budget, cases, inputs};
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use std::collections::HashSet;

    fn seal(key: &FileKey, payload: &[u8]) -> Vec<u8> {
        let mut out = W(Vec::new());
        out.0.extend_from_slice(MAGIC);
        out.u32(FORMAT);
        out.str(&key.build);
        out.str(&key.boot_id);
        out.u64(key.cookie);
        out.u32(key.generation);
        out.u64(payload.len() as u64);
        out.u64(checksum(payload));
        out.0.extend_from_slice(payload);
        out.0
    }

    #[test]
    fn damaged_payloads_are_refused_or_decoded_never_a_panic() {
        let b = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nfnl-mixed.bin")).unwrap();
        let d = crate::nfnl::Dump::parse(&crate::nfnl::RawDump::from_bytes(&b).unwrap()).unwrap();
        let rs = crate::nfnl::to_ruleset(&d, 0, &HashSet::new());
        let key = FileKey { build: "b".into(), boot_id: "boot".into(), cookie: 7, generation: 3 };
        let file = encode(&key, &rs, Some(&[(1, "lo".into())]));
        assert_eq!(decode(&file, &key).map(|c| c.ruleset.rule_count).ok(), Some(rs.rule_count));
        let payload = header(&file).unwrap().1.to_vec();
        assert_eq!(seal(&key, &payload), file, "seal builds what encode builds");
        let start = std::time::Instant::now();
        let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
        runner
            .run(&inputs(vec![payload]), |p| {
                if start.elapsed() > budget() {
                    return Ok(());
                }
                let file = seal(&key, &p);
                std::panic::catch_unwind(|| {
                    let _ = decode(&file, &key);
                })
                .map_err(|_| TestCaseError::fail("decode panicked"))
            })
            .unwrap();
    }
}
