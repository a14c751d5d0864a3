//! The evaluation model built from decoded nf_tables messages as they arrive: base
//! chains and policies, sets with their elements, each rule read by [`super::rule::decode_rule`]
//! (a verdict map or dnat map as one rule per element), iptables-nft's tables as the
//! lines `iptables-nft-save` would print.

use super::rule::decode_rule;
use crate::model::{Action, BaseChain, Chain, ChainId, Cond, Elem, Key, Op, Rule, Ruleset};
use crate::nfnl::expr::*;
use crate::nfnl::Dump;
use conndoc_facts::firewall::{FirewallTool, Hook, RuleRef};
use conndoc_facts::Family;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Sets by family, table and name.
#[derive(Debug, Default)]
pub struct SetIndex(HashMap<NfFamily, HashMap<String, HashMap<String, SetMsg>>>);

impl SetIndex {
    pub fn get(&self, family: NfFamily, table: &str, name: &str) -> Option<&SetMsg> {
        self.0.get(&family)?.get(table)?.get(name)
    }
    pub(super) fn insert(&mut self, s: SetMsg) {
        self.0.entry(s.family).or_default().entry(s.table.clone()).or_default().insert(s.name.clone(), s);
    }
    pub(super) fn get_mut(&mut self, family: NfFamily, table: &str, name: &str) -> Option<&mut SetMsg> {
        self.0.get_mut(&family)?.get_mut(table)?.get_mut(name)
    }
}

/// Builds the model from nf_tables messages as they arrive: tables, chains and sets
/// (with their elements) first, then rules, which is the order [`crate::nfnl::dump_with`]
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
    ipt: [crate::nfnl::iptnft::Family; 2],
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
    pub fn add(&mut self, ty: crate::nfnl::MsgType, p: &[u8]) -> Result<(), &'static str> {
        use crate::nfnl::MsgType as M;
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
            self.ifnames = Some(crate::nfnl::interface_names().into_iter().collect());
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
    pub fn finish_all(mut self) -> (Ruleset, Vec<crate::nfnl::iptnft::Read>) {
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
                    reads.push(crate::nfnl::iptnft::Read { tool, rules: Ok(part.rule_count) });
                    self.rs.extend(part);
                }
                Err(why) => {
                    for r in &rules {
                        self.add_rule(r);
                    }
                    reads.push(crate::nfnl::iptnft::Read { tool, rules: Err(why) });
                }
            }
        }
        (self.rs, reads)
    }
}

/// Which of iptables-nft's families (0 IPv4, 1 IPv6) a table is, if it is one of its.
pub(super) fn ipt_index(family: NfFamily, table: &str) -> Option<usize> {
    crate::nfnl::iptnft::is_iptables_table(family, table).then_some(usize::from(family == NfFamily::IP6))
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
pub(super) fn count(ch: &Chain) -> (u32, u32) {
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

pub(super) fn cond_in(key: Key, elem: Elem) -> Cond {
    match (key, elem) {
        (Key::TcpFlags, Elem::Int(v)) => Cond::Masked { key, mask: 0xff, op: Op::In, value: v },
        (key, elem) => Cond::Cmp { key, op: Op::In, elems: vec![elem] },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's bytes for tests/fixtures/nfnl-mixed.nft, recorded with the nfnldump
    /// example; nfnl-mixed.txt is `nft -a list ruleset` of the same ruleset.
    fn recorded() -> Ruleset {
        let raw = crate::nfnl::RawDump::from_bytes(include_bytes!("../../../tests/fixtures/nfnl-mixed.bin")).unwrap();
        let mut d = Dump::parse(&raw).unwrap();
        d.ifnames = vec![(1, "lo".into())];
        to_ruleset(&d, 0, &HashSet::new())
    }

    #[test]
    fn recorded_rules_read_as_nft_prints_them() {
        let rs = recorded();
        let texts = crate::nft::parse_text(include_str!("../../../tests/fixtures/nfnl-mixed.txt"));
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
