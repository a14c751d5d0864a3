//! Kubernetes stage (issue 12): a probed ClusterIP/NodePort that kube-proxy's rules
//! translate to endpoints is followed to the pod behind it — the network namespace that
//! owns the endpoint's address (CNI's `/run/netns/cni-*`, a pause process's namespace) —
//! and inspected there at the endpoint's port (the Service's targetPort).
//!
//! kube-proxy picks an endpoint at random per connection, so each is a candidate: every
//! endpoint the rules list (up to [`MAX_FOLLOWED`], [`AT_ONCE`] at a time, each under the
//! run's deadline) is inspected, also when the probe connected — a Service with one good
//! and one bad endpoint fails half its connections, and a probe that reached the good one
//! is no proof of health (`service-endpoint-failing`). With a failed probe the first
//! endpoint where nothing takes the connection is the one the verdict is about.

use crate::backend;
use crate::Options;
use conndoc_facts::firewall::Hook;
use conndoc_facts::kube::{EndpointCheck, ServiceMatch};
use conndoc_facts::nat::{BackendFacts, Translation, TranslationKind};
use conndoc_facts::Evidence;
use std::net::SocketAddr;

/// Endpoints of one Service inspected at most.
pub const MAX_FOLLOWED: usize = 16;
/// Endpoints inspected at the same time (each enters a namespace on its own thread).
const AT_ONCE: usize = 4;
/// Listeners on other ports kept per endpoint (what a wrong targetPort names).
const OTHER_LISTENERS: usize = 4;
/// The translation kube-proxy makes from the probed Service address to one endpoint.
pub(crate) fn translation(m: &ServiceMatch, e: &conndoc_facts::kube::ServiceEndpoint) -> Translation {
    Translation {
        kind: TranslationKind::Dnat,
        from: SocketAddr::new(m.address, m.port),
        to: SocketAddr::new(e.address, e.port),
        // conndoc dials from the node: its own connections are translated in nat OUTPUT.
        hook: Some(Hook::Output),
        rule: Some(e.rule.clone()),
        proxy: None,
        choices: Vec::new(),
        choices_total: 0,
        element: None,
        picked: None,
    }
}

/// Whether the inspected backend takes connections on its address and port.
fn serves(b: &BackendFacts) -> Option<bool> {
    let h = b.host.as_ref()?;
    let to = b.translation.to;
    Some(h.listeners.iter().any(|l| l.port() == to.port() && l.accepts(to.ip())))
}

/// Whether a probe that connected should have kube-proxy's rules read after all: the
/// dialled address is not one of this host's own (a ClusterIP never is) and the connect
/// was translated (conntrack's reply tuple comes from another address: kube-proxy's DNAT,
/// in any of its modes, one netlink round trip), or — conntrack not readable — this host
/// carries kube-proxy's rules (a `KUBE-SERVICES` chain of iptables-nft's nat table, or
/// nftables mode's `kube-proxy` table: one netlink dump, cached by generation).
pub(crate) fn worth_reading_when_healthy(ev: &Evidence, opts: &Options) -> bool {
    if opts.no_host || opts.ssh.is_some() || ev.probes.is_empty() || !ev.probes.iter().all(|p| p.ok()) {
        return false;
    }
    if opts.netns.is_some() || opts.netns_pid.is_some() {
        return false;
    }
    let port = ev.target.port.get();
    let foreign: Vec<_> = ev
        .probes
        .iter()
        .filter(|p| !p.address.is_loopback() && !ev.client.local_addresses.contains(&p.address))
        .collect();
    if foreign.is_empty() {
        return false;
    }
    let t = opts.timeout.min(std::time::Duration::from_secs(1));
    let deadline = std::time::Instant::now() + t;
    let mut unknown = false;
    for p in &foreign {
        let Some(local) = p.local.filter(|l| l.port() != 0 && !l.ip().is_unspecified()) else {
            unknown = true;
            continue;
        };
        let dst = std::net::SocketAddr::new(p.address, port);
        match conndoc_firewall::conntrack::reply_source(local, dst, deadline) {
            Ok(Some(went)) if went != dst => return true,
            Ok(Some(_)) => {}
            // No entry (conntrack not tracking this namespace) or not readable: ask the rules.
            Ok(None) | Err(_) => unknown = true,
        }
    }
    unknown
        && conndoc_firewall::nfnl::read(t).is_ok_and(|r| {
            r.ruleset
                .chains
                .keys()
                .any(|(_, _, table, chain)| table == "kube-proxy" || (table == "nat" && chain == "KUBE-SERVICES"))
        })
}

pub(crate) fn follow(ev: &mut Evidence, opts: &Options) {
    if ev.backend.is_some() || opts.no_host {
        return;
    }
    let failed = backend::worth_following(ev);
    let Some(kube) = &ev.kube else { return };
    let probed: Vec<_> = ev.probes.iter().filter(|p| !failed || !p.ok()).map(|p| p.address).collect();
    let Some((i, m)) =
        kube.services.iter().enumerate().find(|(_, m)| probed.contains(&m.address) && !m.endpoints.is_empty())
    else {
        return;
    };
    let m = m.clone();
    let eps: Vec<_> = m.endpoints.iter().take(MAX_FOLLOWED).collect();
    let mut all: Vec<(BackendFacts, Vec<conndoc_facts::SkippedCheck>)> = Vec::with_capacity(eps.len());
    // Bounded fan-out: a few at a time, each bounded by the run's deadline (the namespace
    // search and the inspection have their own).
    for group in eps.chunks(AT_ONCE) {
        let shared: &Evidence = ev;
        let done: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = group
                .iter()
                .map(|e| {
                    let t = translation(&m, e);
                    s.spawn(move || {
                        let mut skipped = Vec::new();
                        let b = backend::follow_from(shared, opts, t, &mut skipped);
                        (b, skipped)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
        });
        all.extend(done);
    }
    let mut checks = Vec::new();
    for (b, skipped) in &all {
        for sk in skipped {
            if !ev.skipped.contains(sk) {
                ev.skipped.push(sk.clone());
            }
        }
        let to = b.translation.to;
        checks.push(EndpointCheck {
            address: to.ip(),
            port: to.port(),
            netns: b.netns.clone(),
            serving: serves(b),
            not_inspected: b.not_inspected.clone(),
            listeners: b.host.as_ref().map(|h| h.listeners.clone()).unwrap_or_default(),
            other_listeners: b.other_listeners.iter().take(OTHER_LISTENERS).cloned().collect(),
        });
    }
    // The target is a Service: kube-proxy's rules on this node were read, and its pods
    // were entered. "Another host: pass --ssh" would send the reader the wrong way.
    if checks.iter().any(|c| c.netns.is_some()) {
        ev.skipped.retain(|s| s.check != "firewall of the target host");
    }
    if let Some(k) = ev.kube.as_mut() {
        k.services[i].followed = checks;
    }
    // A probe that connected needs no backend: the Service rule reads `followed`.
    if !failed {
        return;
    }
    // The first endpoint where nothing takes the connection explains the failure.
    let pick = all.iter().position(|(b, _)| serves(b) == Some(false)).unwrap_or(0);
    let chosen = all.into_iter().nth(pick).map(|(b, _)| b);
    // The server side was inspected after all — in the pod — so the "not on this host"
    // skip no longer holds.
    if chosen.as_ref().is_some_and(|b| b.host.is_some()) {
        ev.skipped.retain(|s| s.check != "server-side inspection");
    }
    ev.backend = chosen;
}
