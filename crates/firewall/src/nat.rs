//! The nat hooks for the probe's packet (issue 10): which DNAT or redirect rule, if any,
//! translates its destination. Pure: walks the [`Ruleset`]'s nat chains as the kernel's
//! nat core does — the chains of a hook in priority order, each until a rule translates
//! (then the walk ends) or the chain accepts (then the next chain runs).

use crate::model::{Action, NatAction, NatKind, Packet, Ruleset, MAX_DEPTH};
use conndoc_facts::firewall::{Hook, NotUnderstood, RuleRef};
use conndoc_facts::nat::{Translation, TranslationKind, MAX_CHOICES};
use conndoc_facts::Family;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the nat chains of one hook do with the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatEvaluation {
    pub hook: Hook,
    /// The rule that rewrote (or would rewrite) the packet, and how; None: no rule did.
    pub matched: Option<(RuleRef, NatAction)>,
    /// Jumps followed on the way (the rules that jumped).
    pub path: Vec<RuleRef>,
    /// Rules met before the translation that conndoc could not evaluate: if one of them
    /// matched, the packet may be translated otherwise.
    pub not_understood: Vec<NotUnderstood>,
}

/// A destination translation that was found but cannot be followed to one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfollowed {
    pub rule: RuleRef,
    pub kind: NatKind,
    /// Why (a port range, a map …).
    pub why: String,
}

impl NatEvaluation {
    /// The destination translation the packet meets, for the backend stage; Err names a
    /// translation that was found but cannot be followed (a port range, a map); Ok(None)
    /// when the destination is kept.
    pub fn translation(&self, pkt: &Packet) -> Result<Option<Translation>, Box<Unfollowed>> {
        let Some((rule, action)) = &self.matched else { return Ok(None) };
        let from = SocketAddr::new(pkt.destination, pkt.destination_port);
        let mut element = None;
        let mut range: Option<((IpAddr, IpAddr), (u16, u16))> = None;
        let mut list: Option<Vec<SocketAddr>> = None;
        let dialled = pkt.destination_port;
        let (kind, to) = match action {
            NatAction::Snat => return Ok(None),
            NatAction::Unfollowed { kind, why } => {
                return Err(Box::new(Unfollowed { rule: rule.clone(), kind: *kind, why: why.clone() }))
            }
            NatAction::Dnat { addr, port } => (TranslationKind::Dnat, SocketAddr::new(*addr, port.unwrap_or(dialled))),
            NatAction::DnatMapped { addr, port, element: e } => {
                element = Some(e.clone());
                (TranslationKind::Dnat, SocketAddr::new(*addr, port.unwrap_or(dialled)))
            }
            NatAction::DnatRange { addrs, ports } => {
                let ports = ports.unwrap_or((dialled, dialled));
                range = Some((*addrs, ports));
                (TranslationKind::Dnat, SocketAddr::new(addrs.0, ports.0))
            }
            NatAction::DnatPort { ports } => {
                let a = pkt.destination;
                range = Some(((a, a), *ports));
                (TranslationKind::Dnat, SocketAddr::new(a, ports.0))
            }
            // Elsewhere NETMAP rewrites the source, not the destination.
            NatAction::Netmap { .. } if !matches!(self.hook, Hook::Prerouting | Hook::Output) => return Ok(None),
            NatAction::Netmap { addrs, port } => {
                (TranslationKind::Dnat, SocketAddr::new(netmap(*addrs, pkt.destination), port.unwrap_or(dialled)))
            }
            NatAction::RedirectMapped { port, element: e } => {
                element = Some(e.clone());
                (TranslationKind::Redirect, SocketAddr::new(self.redirect_addr(pkt), *port))
            }
            NatAction::DnatChoice { backends } => {
                let all: Vec<SocketAddr> =
                    backends.iter().map(|(a, p)| SocketAddr::new(*a, p.unwrap_or(dialled))).collect();
                let first = *all.first().ok_or_else(|| {
                    Box::new(Unfollowed { rule: rule.clone(), kind: NatKind::Dnat, why: "an empty map".into() })
                })?;
                if all.len() > 1 {
                    list = Some(all);
                }
                (TranslationKind::Dnat, first)
            }
            NatAction::Redirect { port } => {
                (TranslationKind::Redirect, SocketAddr::new(self.redirect_addr(pkt), port.unwrap_or(dialled)))
            }
            NatAction::RedirectRange { ports } => {
                let a = self.redirect_addr(pkt);
                range = Some(((a, a), *ports));
                (TranslationKind::Redirect, SocketAddr::new(a, ports.0))
            }
        };
        let (choices, choices_total) = match (range, list) {
            (Some((addrs, ports)), _) => choices(addrs, ports),
            (None, Some(all)) => {
                let total = all.len() as u64;
                (all.into_iter().take(MAX_CHOICES).collect(), total)
            }
            (None, None) => (Vec::new(), 0),
        };
        Ok(Some(Translation {
            kind,
            from,
            to,
            hook: Some(self.hook),
            rule: Some(rule.clone()),
            proxy: None,
            choices,
            choices_total,
            element,
            picked: None,
        }))
    }

    /// The kernel redirects this host's own packets to loopback, others to the address of
    /// the interface they came in on: this host, either way.
    fn redirect_addr(&self, pkt: &Packet) -> IpAddr {
        match (self.hook, pkt.family) {
            (Hook::Output, Family::Ipv4) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (Hook::Output, Family::Ipv6) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            _ => pkt.destination,
        }
    }
}

/// The address NETMAP makes of `dst`, as the kernel does (`nf_nat_netmap`): the bits where
/// the range's first and last address agree come from the range, the others from `dst`.
pub fn netmap(addrs: (IpAddr, IpAddr), dst: IpAddr) -> IpAddr {
    match (addrs, dst) {
        ((IpAddr::V4(a), IpAddr::V4(b)), IpAddr::V4(d)) => {
            let (a, b, d) = (u32::from(a), u32::from(b), u32::from(d));
            let net = !(a ^ b);
            IpAddr::V4(Ipv4Addr::from((a & net) | (d & !net)))
        }
        ((IpAddr::V6(a), IpAddr::V6(b)), IpAddr::V6(d)) => {
            let (a, b, d) = (u128::from(a), u128::from(b), u128::from(d));
            let net = !(a ^ b);
            IpAddr::V6(Ipv6Addr::from((a & net) | (d & !net)))
        }
        // Mixed families cannot be written: the address is kept.
        _ => dst,
    }
}

/// Every backend of an address range × port range, address-major as listed (the first
/// [`MAX_CHOICES`]), and how many there are in all; a single backend gives none.
pub fn choices(addrs: (IpAddr, IpAddr), ports: (u16, u16)) -> (Vec<SocketAddr>, u64) {
    let (p0, p1) = (ports.0.min(ports.1), ports.0.max(ports.1));
    let nports = u128::from(p1 - p0) + 1;
    let (a0, n_addr) = match addrs {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let (a, b) = (u32::from(a).min(u32::from(b)), u32::from(a).max(u32::from(b)));
            (u128::from(a), u128::from(b - a) + 1)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let (a, b) = (u128::from(a).min(u128::from(b)), u128::from(a).max(u128::from(b)));
            (a, (b - a).saturating_add(1))
        }
        // Mixed families cannot be written; keep the first address alone.
        (a, _) => return choices((a, a), ports),
    };
    let total = n_addr.saturating_mul(nports);
    if total <= 1 {
        return (Vec::new(), 0);
    }
    let v4 = addrs.0.is_ipv4();
    let mut out = Vec::new();
    'all: for i in 0..n_addr {
        let n = a0 + i;
        let ip = if v4 { IpAddr::V4(Ipv4Addr::from(n as u32)) } else { IpAddr::V6(Ipv6Addr::from(n)) };
        for p in p0..=p1 {
            if out.len() >= MAX_CHOICES {
                break 'all;
            }
            out.push(SocketAddr::new(ip, p));
        }
    }
    (out, u64::try_from(total).unwrap_or(u64::MAX))
}

enum Outcome {
    Translated(RuleRef, NatAction),
    /// `accept`, the end of the chain or `return` from the base chain: the next chain runs.
    Next,
    /// `drop`/`reject` in a nat chain: the packet goes no further.
    Stopped,
}

struct NatWalk<'a> {
    rs: &'a Ruleset,
    pkt: &'a Packet,
    path: Vec<RuleRef>,
    not_understood: Vec<NotUnderstood>,
}

impl Ruleset {
    /// Which destination translation `pkt` meets in the nat chains of `hook`: prerouting
    /// for a packet from another host, output for this host's own. Jumps and gotos are
    /// followed as in [`Ruleset::evaluate`].
    pub fn translate(&self, hook: Hook, pkt: &Packet) -> NatEvaluation {
        let mut bases: Vec<_> =
            self.nat_bases.iter().filter(|b| b.hook == hook && b.family.is_none_or(|f| f == pkt.family)).collect();
        bases.sort_by_key(|b| b.priority);
        let mut w = NatWalk { rs: self, pkt, path: Vec::new(), not_understood: Vec::new() };
        let mut matched = None;
        for b in bases {
            match w.run(&b.chain, 0) {
                Outcome::Translated(r, a) => {
                    matched = Some((r, a));
                    break;
                }
                Outcome::Stopped => break,
                Outcome::Next => w.path.clear(),
            }
        }
        NatEvaluation { hook, matched, path: w.path, not_understood: w.not_understood }
    }
}

impl NatWalk<'_> {
    fn run(&mut self, id: &crate::model::ChainId, depth: usize) -> Outcome {
        match self.chain(id, depth) {
            Some(o) => o,
            None => Outcome::Next,
        }
    }

    /// One chain: `Some` ends the base chain's walk, `None` returns to the caller.
    fn chain(&mut self, id: &crate::model::ChainId, depth: usize) -> Option<Outcome> {
        let chain = self.rs.chains.get(id)?;
        if depth > MAX_DEPTH {
            return None;
        }
        for rule in &chain.rules {
            if !crate::model::applies(rule, self.pkt, &mut self.not_understood) {
                continue;
            }
            match &rule.action {
                Action::Continue => {}
                Action::Nat(a) => return Some(Outcome::Translated(rule.reference.clone(), a.clone())),
                Action::Accept => return Some(Outcome::Next),
                Action::Drop | Action::Reject(_) => return Some(Outcome::Stopped),
                Action::Return => return None,
                Action::Jump(target) | Action::Goto(target) => {
                    let tid = (id.0, id.1.clone(), id.2.clone(), target.clone());
                    self.path.push(rule.reference.clone());
                    if let Some(out) = self.chain(&tid, depth + 1) {
                        return Some(out);
                    }
                    self.path.pop();
                    if matches!(rule.action, Action::Goto(_)) {
                        return None;
                    }
                }
            }
        }
        None
    }
}
