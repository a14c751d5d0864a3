//! kube-proxy's rules recognised in a decoded ruleset: which Service owns a probed address
//! and port, its endpoints as the rules list them, or the rule that rejects it for having
//! none. Pure: reads the [`Ruleset`] model (iptables mode, from the `*-save` rule texts
//! kept in each rule's reference) or kube-proxy's nftables table ([`nft`]).
//!
//! Shapes are kube-proxy's own (kubernetes/kubernetes `pkg/proxy/iptables/proxier.go`,
//! `pkg/proxy/nftables/proxier.go` and their tests); the lab loads them verbatim
//! (`lab/kube/`).

pub mod ipt;
pub mod nft;

use conndoc_facts::firewall::FirewallRole;
use conndoc_facts::kube::ServiceMatch;
use std::net::IpAddr;

/// What was probed, as the Service rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub address: IpAddr,
    pub port: u16,
    /// The address is one of this node's own (NodePort rules match any local address).
    pub local: bool,
}

/// The Service the probe's address and port belong to in this ruleset, if any
/// (iptables mode; nftables mode is read with [`nft::recognise`]).
pub fn recognise(rs: &crate::Ruleset, role: FirewallRole, probe: &Probe) -> Option<ServiceMatch> {
    ipt::recognise(rs, role, probe)
}

/// An `ADDR:PORT` / `[ADDR]:PORT` endpoint.
pub(crate) fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (a, p) = s.rsplit_once(':')?;
    let a = a.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(a);
    Some((a.parse().ok()?, p.parse().ok()?))
}
