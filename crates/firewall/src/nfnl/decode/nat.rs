//! Address translation statements: `dnat to`, `snat to`, `redirect`, and a dnat map's
//! elements turned into one translation each.

use super::field::Src;
use super::rule::{reg_slot, Dec};
use super::value::*;
use crate::model::{Action, Cond, Elem, Key, NatAction, NatKind, Op};
use crate::nfnl::expr::*;
use conndoc_facts::Family;

impl Dec<'_> {
    /// The immediate value a nat expression's register holds; Err names what it holds
    /// instead (a map lookup), the text of which moves into the statement.
    pub(super) fn nat_value(&mut self, reg: u32) -> Result<Vec<u8>, String> {
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
    pub(super) fn nat(&mut self, dnat: bool, family: u32, addr: [Option<u32>; 2], proto: [Option<u32>; 2], flags: u32) {
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
        // NF_NAT_RANGE_NETMAP (`dnat prefix to`): one address for one, not one of a range
        // (through a map, the element's data is the prefix as a range).
        let netmap = flags & 64 != 0;
        let mapped = if dnat { self.dnat_map(fam, addr, proto, netmap) } else { None };
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
                    // A map to `addr . port` (or to an address range) fills more than one
                    // register; nft then names the family.
                    from_map = true;
                    if proto[0].is_some() || netmap || addr[1].is_some_and(|z| z != r) {
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
        let prefix = if netmap { " prefix" } else { "" };
        self.piece(format!("{word}{fam_word}{prefix} to {to}{fl}"));
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
        if netmap && from_map {
            why = Some(crate::nft::NETMAP_MAP.to_string());
        }
        let action = match (why, ip, range_end, port_end) {
            (Some(why), ..) => NatAction::Unfollowed { kind, why },
            (None, Some(a), b, None) if netmap => NatAction::Netmap { addrs: (a, b.unwrap_or(a)), port },
            (None, ..) if netmap => NatAction::Unfollowed { kind, why: "dnat prefix to a port range".into() },
            (None, Some(a), None, None) => NatAction::Dnat { addr: a, port },
            (None, Some(a), b, q) => {
                NatAction::DnatRange { addrs: (a, b.unwrap_or(a)), ports: port.map(|p| (p, q.unwrap_or(p))) }
            }
            // `dnat to :P[-Q]` (no address register): the kernel keeps the address.
            (None, None, None, q) if addr[0].is_none() && port.is_some() => {
                let p = port.unwrap_or(0);
                NatAction::DnatPort { ports: (p, q.unwrap_or(p)) }
            }
            (None, None, ..) => NatAction::Unfollowed { kind, why: "dnat without an address".into() },
        };
        self.set_action(Action::Nat(action));
    }

    /// The rules a `dnat to KEY map { … }` reading a data map makes, one per element
    /// (`addr` and, when the map's data is `addr . port`, `port` read from the element's
    /// data at the registers' offset; an address range as data, `10.77.1.2-10.77.1.3`, fills
    /// `addr_max` too); None when the registers were not filled by a map, or hold a port
    /// range from it.
    pub(super) fn dnat_map(
        &mut self,
        fam: Family,
        addr: [Option<u32>; 2],
        proto: [Option<u32>; 2],
        netmap: bool,
    ) -> Option<Vec<(Vec<Cond>, Action)>> {
        let slot = reg_slot(addr[0]?);
        if self.imm.get(&slot).is_some() || self.datamap.as_ref().is_none_or(|m| m.word != slot) {
            return None;
        }
        let map = self.datamap.take()?;
        // Where a register after the address's sits in the element's data.
        let at = |reg: u32| -> Option<usize> {
            let w = reg_slot(reg);
            (w > slot).then(|| ((w - slot) * 4) as usize)
        };
        let off = match proto[0] {
            Some(p) => Some(at(p)?),
            None => None,
        };
        if proto[1].is_some_and(|q| Some(q) != proto[0]) {
            return None;
        }
        let end_off = match addr[1].filter(|z| Some(*z) != addr[0]) {
            Some(z) => Some(at(z)?),
            None => None,
        };
        let port_at = |data: &[u8]| -> Option<Option<u16>> {
            match off {
                Some(o) => Some(Some(be_u16(data.get(o..)?)?)),
                None => Some(None),
            }
        };
        // A load-balancing map's data is one backend each; NETMAP's is a range each.
        if (map.choice.is_some() && (end_off.is_some() || netmap)) || (netmap && end_off.is_none()) {
            return None;
        }
        if let Some(datas) = map.choice {
            // One rule: the kernel picks one element per connection, every one a backend.
            let mut backends = Vec::new();
            for data in &datas {
                backends.push((addr_of(fam, data)?, port_at(data)?));
            }
            return Some(vec![(Vec::new(), Action::Nat(NatAction::DnatChoice { backends }))]);
        }
        let entries = map.entries;
        let mut out = Vec::new();
        for (conds, data, key) in entries {
            let a = addr_of(fam, &data)?;
            let port = port_at(&data)?;
            let b = match end_off {
                Some(o) => addr_of(fam, data.get(o..)?)?,
                None => a,
            };
            if netmap {
                out.push((conds, Action::Nat(NatAction::Netmap { addrs: (a, b), port })));
                continue;
            }
            if b != a {
                // The kernel picks one address of the element's range per connection.
                out.push((conds, Action::Nat(NatAction::DnatRange { addrs: (a, b), ports: port.map(|p| (p, p)) })));
                continue;
            }
            let element = match port {
                Some(p) => format!("{key} : {a} . {p}"),
                None => format!("{key} : {a}"),
            };
            out.push((conds, Action::Nat(NatAction::DnatMapped { addr: a, port, element })));
        }
        Some(out)
    }

    /// `redirect [to :PORT]`.
    pub(super) fn redir(&mut self, proto: [Option<u32>; 2], flags: u32) {
        let kind = NatKind::Redirect;
        let mut text = "redirect".to_string();
        let mapped = proto[0].and_then(|r| self.redirect_map(r));
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
                    // nft prints the map after the port's colon: `redirect to :tcp dport map { … }`.
                    text.push_str(&format!(" to :{n}"));
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
        if let Some(entries) = mapped {
            if self.out.action.is_none() && self.out.vmap.is_none() && self.out.vmap_concat.is_none() {
                self.out.vmap_concat = Some(entries);
            }
            return;
        }
        self.set_action(Action::Nat(action));
    }

    /// `redirect to :KEY map { K : PORT, … }`: one rule per element, as a dnat map is; None
    /// when the register was not filled by a data map of ports.
    fn redirect_map(&mut self, reg: u32) -> Option<Vec<(Vec<Cond>, Action)>> {
        let slot = reg_slot(reg);
        if self.imm.get(&slot).is_some() || self.datamap.as_ref().is_none_or(|m| m.word != slot || m.choice.is_some()) {
            return None;
        }
        let mut out = Vec::new();
        for (conds, data, key) in &self.datamap.as_ref()?.entries {
            let port = be_u16(data)?;
            let element = format!("{key} : {port}");
            out.push((conds.clone(), Action::Nat(NatAction::RedirectMapped { port, element })));
        }
        self.datamap = None;
        Some(out)
    }
}
