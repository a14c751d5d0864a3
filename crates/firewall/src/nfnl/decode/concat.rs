//! Lookups on a concatenated key (`ip daddr . tcp dport`). The kernel lays the key out in
//! consecutive 32-bit registers from the lookup's source register, each field padded to
//! 4 bytes (a 2-byte port fills half a word and its load zeroes the rest), and each
//! element's key the same way; a map's data (`ipv4_addr . inet_service`) likewise, so the
//! port of `addr . port` is the register after the address's. A verdict map on such a key
//! is one rule per element (kube-proxy's `ip daddr . meta l4proto . th dport vmap @m`); a
//! data map feeding `dnat to` is one translation per element.

use super::build::cond_in;
use super::field::{Field, Fmt, Loaded, Src};
use super::rule::{reg_slot, DataMap, Dec};
use super::value::*;
use crate::model::{Action, Cond};
use crate::nfnl::expr::*;

/// One field of a concatenated key: what was loaded, what it means, its offset in the key.
type Part = (Loaded, Field, usize);

impl Dec<'_> {
    /// The fields of a key of `key_len` bytes in the registers from `sreg` on; None when
    /// the registers loaded do not make up the key exactly.
    fn concat_parts(&self, sreg: u32, key_len: usize) -> (Vec<Part>, bool) {
        let mut parts: Vec<Part> = Vec::new();
        let (mut word, mut at) = (reg_slot(sreg), 0usize);
        while at < key_len && parts.len() < 8 {
            let Some(l) = self.regs.get(&word).cloned() else { break };
            let f = self.field(&l);
            let padded = (l.len + 3) & !3;
            parts.push((l, f, at));
            at += padded;
            word += (padded / 4) as u32;
        }
        let whole = !parts.is_empty() && at == key_len;
        (parts, whole)
    }

    /// What one element's key (`lo`..=`hi`, field by field) puts on the packet — one
    /// condition per field — and its text (`10.77.0.2 . 16379`).
    fn concat_key(&self, set: &str, parts: &[Part], lo: &[u8], hi: &[u8]) -> Result<(Vec<Cond>, String), String> {
        let mut conds = Vec::new();
        let mut texts = Vec::new();
        for (l, f, off) in parts {
            let (Some(a), Some(b)) = (lo.get(*off..off + l.len), hi.get(*off..off + l.len)) else {
                return Err(format!("an element of map @{set} shorter than its key"));
            };
            let (e, t) = self.elem(f, a, b).map_err(|why| format!("map @{set}: {why}"))?;
            conds.push(match self.key(f) {
                Some(key) => cond_in(key, e),
                // A field this packet never has (`udp` for a TCP probe): never matches.
                None => Cond::Never,
            });
            texts.push(t);
        }
        Ok((conds, texts.join(" . ")))
    }

    /// `A . B . C vmap @map` / `vmap { KA . KB : verdict, … }`: one rule per element,
    /// matching every field of its key.
    pub(super) fn concat_vmap(&mut self, set: &str, s: &SetMsg, sreg: u32) {
        let (parts, whole) = self.concat_parts(sreg, s.key_len as usize);
        let name = parts.iter().map(|(_, f, _)| f.name()).collect::<Vec<_>>().join(" . ");
        let named = format!("{name} vmap @{set}");
        if !whole {
            self.unknown(format!("set @{set}: its concatenated key does not match the registers loaded"));
            self.piece(named);
            return;
        }
        let ranges = set_ranges(s);
        // An anonymous map prints its elements, as nft does; if one cannot be read, its name.
        let text = if s.anonymous() {
            let mut texts = Vec::new();
            for (lo, hi, data) in &ranges {
                match (self.concat_key(set, &parts, lo, hi), data) {
                    (Ok((_, k)), Some(Data::Verdict(v))) => texts.push(format!("{k} : {}", v.text())),
                    _ => {
                        texts.clear();
                        break;
                    }
                }
            }
            if texts.is_empty() {
                named
            } else {
                format!("{name} vmap {{ {} }}", texts.join(", "))
            }
        } else {
            named
        };
        let mut entries = Vec::new();
        for (lo, hi, data) in ranges {
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
            match self.concat_key(set, &parts, &lo, &hi) {
                Ok((conds, _)) => entries.push((conds, action)),
                Err(why) => {
                    self.unknown(why);
                    self.piece(text);
                    return;
                }
            }
        }
        for (_, f, _) in &parts {
            self.hide_deps(f);
        }
        if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
            self.out.vmap_concat = Some(entries);
        }
        self.piece(text);
    }

    /// `A . B map { KA . KB : DATA, … }` / `map @m` into register `dreg`: per element, the
    /// conditions of its key and its data, for the `dnat to` that reads `dreg` (see
    /// [`Dec::dnat_map`]). The register then names the map, as nft prints it.
    pub(super) fn concat_datamap(&mut self, set: &str, s: &SetMsg, sreg: u32, dreg: u32) {
        let (parts, whole) = self.concat_parts(sreg, s.key_len as usize);
        let name = parts.iter().map(|(_, f, _)| f.name()).collect::<Vec<_>>().join(" . ");
        let mut problem = None;
        if !whole {
            problem = Some(format!("set @{set}: its concatenated key does not match the registers loaded"));
        }
        let (mut texts, mut entries) = (Vec::new(), Vec::new());
        for (lo, hi, data) in if problem.is_none() { set_ranges(s) } else { Vec::new() } {
            let Some(Data::Value(v)) = data else {
                problem.get_or_insert(format!("an element of map @{set} without data"));
                break;
            };
            match self.concat_key(set, &parts, &lo, &hi) {
                Ok((conds, key)) => {
                    texts.push(match s.data_type.and_then(|ty| data_text(ty, &v)) {
                        Some(d) => format!("{key} : {d}"),
                        None => key.clone(),
                    });
                    entries.push((conds, v, key));
                }
                Err(why) => {
                    problem.get_or_insert(why);
                    break;
                }
            }
        }
        let rhs = if s.anonymous() { format!("{{ {} }}", texts.join(", ")) } else { format!("@{set}") };
        let text = format!("{name} map {rhs}");
        match problem {
            Some(p) => self.unknown(p),
            None => {
                for (_, f, _) in &parts {
                    self.hide_deps(f);
                }
                self.datamap = Some(DataMap { word: reg_slot(dreg), entries, concat: true, choice: None });
            }
        }
        // A `dnat to` reading the register moves this text after its own (nft's order).
        self.load(dreg, Src::Other(text.clone(), Fmt::Hex), s.key_len as usize);
        self.piece(text);
    }
}
