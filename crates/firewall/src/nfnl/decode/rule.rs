//! One rule's expressions walked as the kernel runs them: a small register machine where
//! loads (payload, meta, ct) fill a register, `bitwise` masks it, and `cmp`/`range`/
//! `lookup` test it ([`super::cmp`], [`super::lookup`]); statements set the rule's action
//! ([`super::nat`], [`super::reject`]) and every expression adds its piece of nft text.

use super::build::SetIndex;
use super::field::{Field, Fmt, Loaded, Src};
use super::value::ne_u32;
use crate::model::{Action, Cond, Elem, Key, NatAction};
use crate::nfnl::expr::*;
use conndoc_facts::Family;
use std::collections::HashMap;

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

/// A register's place; numbers the kernel does not define get places of their own.
pub(super) fn reg_slot(reg: u32) -> u32 {
    Register::from_u32(reg).and_then(Register::word).unwrap_or(1000 + reg)
}

pub(super) fn meta_len(key: u32) -> usize {
    match key {
        NFT_META_IIFNAME | NFT_META_OIFNAME | 17 | 18 | 26 | 27 | 34 => 16,
        NFT_META_NFPROTO | NFT_META_L4PROTO | 19 => 1,
        NFT_META_PROTOCOL => 2,
        _ => 4,
    }
}

/// Register slot → content; a rule uses a handful, so a list beats a map.
pub(super) struct Regs<T>(Vec<(u32, T)>);

impl<T> Regs<T> {
    pub(super) fn get(&self, k: &u32) -> Option<&T> {
        self.0.iter().find(|(s, _)| s == k).map(|(_, v)| v)
    }
    pub(super) fn insert(&mut self, k: u32, v: T) {
        match self.0.iter_mut().find(|(s, _)| *s == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k, v)),
        }
    }
}

pub(super) struct Dec<'a> {
    pub(super) family: NfFamily,
    pub(super) table: &'a str,
    pub(super) sets: &'a SetIndex,
    pub(super) ifnames: &'a HashMap<u32, String>,
    pub(super) regs: Regs<Loaded>,
    pub(super) imm: Regs<Vec<u8>>,
    /// From a `meta nfproto ==` test earlier in the rule.
    pub(super) nfproto: Option<Family>,
    /// From a `meta l4proto ==` test earlier in the rule.
    pub(super) l4: Option<u8>,
    pub(super) out: Decoded,
    pub(super) pieces: Vec<Option<String>>,
    pub(super) nfproto_piece: Option<usize>,
    pub(super) l4_piece: Option<usize>,
    /// (piece, field, value text, value) of a `>=` test, to read `a-b` when a `<=` follows.
    pub(super) last_gte: Option<(usize, Field, String, Vec<u8>)>,
    /// A data map looked up into a register (`tcp dport map { 16379 : 10.77.1.2 }`): what
    /// a `dnat to` reading that register turns into one rule per element.
    pub(super) datamap: Option<DataMap>,
}

/// A data map's lookup result in a register, element by element.
pub(super) struct DataMap {
    /// The register's word.
    pub(super) word: u32,
    pub(super) entries: Vec<MapEntry>,
    /// Keyed by a concatenation (`ip daddr . tcp dport`): the rule's own conditions cannot
    /// say "the pair is in the map", so only a statement that splits the rule per element
    /// (`dnat to`) is followed.
    pub(super) concat: bool,
    /// Keyed by `numgen` and holding every value it makes: the data of each element, in
    /// key order — one of which the kernel picks per connection (`entries` is empty).
    pub(super) choice: Option<Vec<Vec<u8>>>,
}

/// One data map element: the conditions its key puts on the packet (one per field of a
/// concatenation), its data, its key's text.
pub(super) type MapEntry = (Vec<Cond>, Vec<u8>, String);

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
    if d.datamap.as_ref().is_some_and(|m| m.concat) {
        d.unknown("a map on a concatenated key feeding a statement other than `dnat to`");
    }
    let mut text: Vec<String> = d.pieces.into_iter().flatten().filter(|p| !p.is_empty()).collect();
    if let Some(c) = &r.comment {
        text.push(format!("comment {c:?}"));
    }
    d.out.text = text.join(" ");
    d.out
}

impl Dec<'_> {
    pub(super) fn unknown(&mut self, why: impl Into<String>) {
        self.out.why.get_or_insert(why.into());
    }

    pub(super) fn piece(&mut self, s: String) -> usize {
        self.pieces.push(Some(s));
        self.last_gte = None;
        self.pieces.len() - 1
    }

    pub(super) fn hide(&mut self, idx: Option<usize>) {
        if let Some(i) = idx {
            if let Some(p) = self.pieces.get_mut(i) {
                *p = None;
            }
        }
    }

    pub(super) fn set_action(&mut self, a: Action) {
        if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
            self.out.action = Some(a);
        }
    }

    pub(super) fn load(&mut self, reg: u32, src: Src, len: usize) {
        self.regs.insert(reg_slot(reg), Loaded { src, len, mask: None });
    }

    pub(super) fn hide_deps(&mut self, f: &Field) {
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

    pub(super) fn expr(&mut self, e: &Expr) {
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
                self.load(*dreg, Src::Numgen { text: n, modulus: *modulus, offset: *offset }, 4);
            }
            Expr::Hash { sreg, dreg, len, modulus, seed, offset, sym } => {
                // jhash over what one load put in `sreg`, named as nft does; over anything
                // else the value is not read.
                let over = sreg.and_then(|r| self.regs.get(&reg_slot(r)).cloned()).filter(|l| l.len as u32 == *len);
                let what = match (sym, over) {
                    (true, _) => Some("symhash".to_string()),
                    (false, Some(l)) => {
                        let f = self.field(&l);
                        self.hide_deps(&f);
                        Some(format!("jhash {}", f.name()))
                    }
                    (false, None) => None,
                };
                match what {
                    Some(w) => {
                        let mut n = format!("{w} mod {modulus}");
                        if *seed != 0 && !sym {
                            n.push_str(&format!(" seed {seed:#x}"));
                        }
                        if *offset != 0 {
                            n.push_str(&format!(" offset {offset}"));
                        }
                        self.load(*dreg, Src::Numgen { text: n, modulus: *modulus, offset: *offset }, 4);
                    }
                    None => self.load(*dreg, Src::Other("[ hash ]".into(), Fmt::Hex), 4),
                }
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

    pub(super) fn loaded(&mut self, sreg: u32) -> Option<(Loaded, Field)> {
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
}
