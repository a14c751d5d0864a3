//! `lookup` of a register in a set, a verdict map or a data map (a concatenated key is
//! read in [`super::concat`]).

use super::build::cond_in;
use super::field::{Field, Fmt, Src};
use super::rule::{reg_slot, DataMap, Dec};
use super::value::*;
use crate::model::{Action, Cond, Elem, Key, Op};
use crate::nfnl::expr::*;

impl Dec<'_> {
    pub(super) fn lookup(&mut self, set: &str, sreg: u32, dreg: Option<u32>, inv: bool) {
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
        let concat = s.flags & NFT_SET_CONCAT != 0 || s.key_len as usize > l.len;
        if verdict_map && concat {
            let s = s.clone();
            return self.concat_vmap(set, &s, sreg);
        }
        if let (Some(r), true) = (dreg.filter(|r| *r != 0), concat) {
            let s = s.clone();
            return self.concat_datamap(set, &s, sreg, r);
        }
        if let (Some(r), Src::Numgen { modulus, offset, .. }) = (dreg.filter(|r| *r != 0), &l.src) {
            let (s, values) = (s.clone(), (*offset, *modulus));
            return self.numgen_datamap(set, &s, &name, values, r);
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
                        let entries = mapped.into_iter().map(|(e, v, t)| (vec![cond_in(key, e)], v, t)).collect();
                        self.datamap = Some(DataMap { word: reg_slot(r), entries, concat: false, choice: None });
                    }
                    Some(_) => self.unknown("tcp flags in a map"),
                    None => self.out.conds.push(Cond::Never),
                }
                self.load(r, Src::Other(format!("{name} map {rhs}"), Fmt::Hex), s.key_len as usize);
                self.piece(format!("{name} map {rhs}"));
            }
        }
    }

    /// `numgen inc mod N map { 0 : A, 1 : B }` into register `dreg`: a load-balancing map.
    /// Followed only when it holds every value the generator makes (`values`: offset and
    /// count), each one exactly once; then `dnat to` reading `dreg` lists every element's
    /// data as a backend the kernel may pick.
    pub(super) fn numgen_datamap(&mut self, set: &str, s: &SetMsg, name: &str, values: (u32, u32), dreg: u32) {
        let (offset, n) = values;
        let mut elems: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut problem = None;
        if s.flags & NFT_SET_INTERVAL != 0 || s.key_len != 4 {
            problem = Some(format!("map @{set} on {name} is not one element per value"));
        }
        for e in if problem.is_none() { s.elems.as_slice() } else { &[] } {
            match &e.data {
                Some(Data::Value(v)) => elems.push((ne_u32(&e.key), v.clone())),
                _ => problem = Some(format!("an element of map @{set} without data")),
            }
        }
        elems.sort_by_key(|(k, _)| *k);
        let texts: Vec<String> = elems
            .iter()
            .map(|(k, v)| match s.data_type.and_then(|ty| data_text(ty, v)) {
                Some(d) => format!("{k} : {d}"),
                None => k.to_string(),
            })
            .collect();
        let rhs = if s.anonymous() { format!("{{ {} }}", texts.join(", ")) } else { format!("@{set}") };
        let text = format!("{name} map {rhs}");
        let keys: Vec<u32> = elems.iter().map(|(k, _)| *k).collect();
        let every: Vec<u32> = (0..n).map(|i| offset.wrapping_add(i)).collect();
        if problem.is_none() && keys != every {
            // A value with no element: those connections are not translated at all.
            problem = Some(format!("map @{set} holds {} of the {n} values {name} makes", keys.len()));
        }
        match problem {
            Some(p) => self.unknown(p),
            None => {
                let choice = Some(elems.into_iter().map(|(_, v)| v).collect());
                self.datamap = Some(DataMap { word: reg_slot(dreg), entries: Vec::new(), concat: false, choice });
            }
        }
        self.load(dreg, Src::Other(text.clone(), Fmt::Hex), s.key_len as usize);
        self.piece(text);
    }
}
