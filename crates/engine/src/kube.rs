//! Kubernetes stage (issue 12): a probed ClusterIP/NodePort that kube-proxy's rules
//! translate to endpoints is followed to the pod behind it — the network namespace that
//! owns the endpoint's address (CNI's `/run/netns/cni-*`, a pause process's namespace) —
//! and inspected there at the endpoint's port (the Service's targetPort).
//!
//! kube-proxy picks an endpoint at random per connection, so with several each is a
//! candidate: up to [`MAX_FOLLOWED`] are inspected and the first where nothing takes the
//! connection is the one the verdict is about; the others are listed in the evidence.

use crate::backend;
use crate::Options;
use conndoc_facts::firewall::Hook;
use conndoc_facts::kube::{EndpointCheck, ServiceMatch};
use conndoc_facts::nat::{BackendFacts, Translation, TranslationKind};
use conndoc_facts::Evidence;
use std::net::SocketAddr;

/// Endpoints of one Service inspected at most.
pub const MAX_FOLLOWED: usize = 4;

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
    }
}

/// Whether the inspected backend takes connections on its address and port.
fn serves(b: &BackendFacts) -> Option<bool> {
    let h = b.host.as_ref()?;
    let to = b.translation.to;
    Some(h.listeners.iter().any(|l| l.port() == to.port() && l.accepts(to.ip())))
}

pub(crate) fn follow(ev: &mut Evidence, opts: &Options) {
    if ev.backend.is_some() || opts.no_host || !backend::worth_following(ev) {
        return;
    }
    let Some(kube) = &ev.kube else { return };
    let failed: Vec<_> = ev.probes.iter().filter(|p| !p.ok()).map(|p| p.address).collect();
    let Some((i, m)) =
        kube.services.iter().enumerate().find(|(_, m)| failed.contains(&m.address) && !m.endpoints.is_empty())
    else {
        return;
    };
    let m = m.clone();
    let mut all = Vec::new();
    let mut checks = Vec::new();
    for e in m.endpoints.iter().take(MAX_FOLLOWED) {
        let b = backend::follow(ev, opts, translation(&m, e));
        checks.push(EndpointCheck {
            address: e.address,
            port: e.port,
            netns: b.netns.clone(),
            serving: serves(&b),
            not_inspected: b.not_inspected.clone(),
        });
        all.push(b);
    }
    // The first endpoint where nothing takes the connection explains the failure.
    let pick = all.iter().position(|b| serves(b) == Some(false)).unwrap_or(0);
    if let Some(k) = ev.kube.as_mut() {
        k.services[i].followed = checks;
    }
    let chosen = all.into_iter().nth(pick);
    // The server side was inspected after all — in the pod — so the "not on this host"
    // skip no longer holds.
    if chosen.as_ref().is_some_and(|b| b.host.is_some()) {
        ev.skipped.retain(|s| s.check != "server-side inspection");
    }
    ev.backend = chosen;
}
