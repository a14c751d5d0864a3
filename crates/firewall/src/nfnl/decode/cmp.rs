//! `cmp` and `range` tests of a loaded register, as conditions on the packet and as nft
//! prints them (`tcp dport 7000-7010`, `ct state established`).

use super::field::{ct_state_names, tcp_flag_names, Field, Fmt, Loaded, Src};
use super::rule::Dec;
use super::value::*;
use crate::model::{Cond, Elem, Key, Op};
use crate::nfnl::expr::*;
use conndoc_facts::Family;

impl Dec<'_> {
    /// Header fields one load may cover together (nft merges adjacent `==` tests into one
    /// load: `tcp sport 1 tcp dport 2` is a 4-byte load at transport offset 0).
    pub(super) fn split(&self, l: &Loaded) -> Option<Vec<(u32, u32)>> {
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

    pub(super) fn cmp(&mut self, sreg: u32, op: CmpOp, data: &[u8]) {
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

    pub(super) fn cmp_field(&mut self, f: Field, op: CmpOp, data: &[u8]) {
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
    pub(super) fn key(&self, f: &Field) -> Option<Key> {
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

    pub(super) fn range(&mut self, sreg: u32, neq: bool, from: &[u8], to: &[u8]) {
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
}
