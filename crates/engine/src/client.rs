//! Client stage: after the connects, the facts that explain client-side failures — the
//! route decision, the neighbour entry of an on-link target, and local port usage
//! towards the target when no local port was free.

use conndoc_facts::client::{EphemeralUsage, Neighbour};
use conndoc_facts::{ConnectKind, Evidence, Family};
use std::net::{IpAddr, SocketAddr};

/// Local interface addresses, so later stages know whether the target is this host.
/// Returns them when the dump succeeded, for the host stage of the same namespace (one
/// dump serves both).
pub(crate) fn local_addresses(ev: &mut Evidence) -> Option<Vec<IpAddr>> {
    match conndoc_netlink::route::addresses() {
        Ok(addrs) => {
            ev.client.local_addresses = addrs.iter().map(|a| a.address).collect();
            let mut fams: Vec<Family> =
                addrs.iter().filter(|a| !a.address.is_loopback()).map(|a| Family::of(&a.address)).collect();
            fams.sort();
            fams.dedup();
            ev.client.families = fams;
            Some(ev.client.local_addresses.clone())
        }
        Err(e) => {
            crate::skip(ev, "local addresses", e.to_string(), None);
            None
        }
    }
}

/// What resolution left out on purpose, in the report's `skipped` list: addresses beyond
/// the ones conndoc probes, nameservers the system resolver never asks.
pub(crate) fn resolution_limits(ev: &mut Evidence) {
    let sys = &ev.resolution.system;
    if sys.dropped > 0 {
        let total = sys.addresses.len() as u64 + u64::from(sys.dropped);
        let reason = format!(
            "the system resolver returned {total} addresses; conndoc kept and probed the first {}, {} dropped",
            sys.addresses.len(),
            sys.dropped
        );
        let hint = format!("getent ahosts {} lists them all", ev.target.host);
        crate::skip(ev, "connect to every address", reason, Some(hint));
    }
    if let Some(d) = ev.resolution.dns.as_ref().filter(|d| d.ignored_servers > 0) {
        let reason = format!(
            "{} names {} nameservers; the system resolver asks only the first {}, and so did conndoc ({} ignored)",
            d.resolv_conf,
            d.servers.len() as u64 + u64::from(d.ignored_servers),
            d.servers.len(),
            d.ignored_servers
        );
        crate::skip(ev, "DNS query to every nameserver", reason, None);
    }
}

pub(crate) fn after_probe(ev: &mut Evidence) {
    let failed: Vec<(IpAddr, ConnectKind)> =
        ev.probes.iter().filter(|p| !p.ok()).map(|p| (p.address, p.kind)).collect();
    if failed.is_empty() {
        return;
    }
    let mut want_neigh = Vec::new();
    for (addr, kind) in &failed {
        if matches!(kind, ConnectKind::NetworkUnreachable | ConnectKind::HostUnreachable | ConnectKind::Timeout) {
            let r = conndoc_probe::client::route_lookup(*addr);
            // An on-link destination (no gateway in its route) is resolved by ARP/ND itself.
            if r.route.as_deref().is_some_and(|s| !s.contains(" via ")) {
                want_neigh.push(*addr);
            }
            ev.client.routes.push(r);
        }
        if *kind == ConnectKind::NoLocalAddress {
            let dst = SocketAddr::new(*addr, ev.target.port.get());
            match conndoc_host::sockets_to(dst) {
                Ok(by_state) => {
                    ev.client.ephemeral.push(EphemeralUsage { destination: *addr, port: ev.target.port, by_state })
                }
                Err(e) => crate::skip(ev, "sockets to the target", e.to_string(), Some(format!("ss -tan dst {dst}"))),
            }
        }
    }
    if !want_neigh.is_empty() {
        match conndoc_netlink::route::neighbours() {
            Ok(all) => {
                for n in all.into_iter().filter(|n| want_neigh.contains(&n.address)) {
                    ev.client.neighbours.push(Neighbour {
                        address: n.address,
                        device: n.device,
                        state: n.state,
                        lladdr: n.lladdr,
                    });
                }
            }
            Err(e) => crate::skip(ev, "neighbour table", e.to_string(), Some("ip neigh show".into())),
        }
    }
}
