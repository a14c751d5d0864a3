//! Kubernetes Services from kube-proxy's rules: `service-no-endpoints`.
//!
//! kube-proxy answers a Service without a ready endpoint itself — a REJECT rule (iptables
//! mode) or a `no-endpoint-services` map element (nftables mode) naming the Service — so
//! the client sees a refusal (or a timeout for a drop) that looks like a firewall or a
//! closed port. The rule is kube-proxy's, the cause is the empty Service.

use crate::{Cause, Finding, Findings};
use conndoc_facts::firewall::FwVerdict;
use conndoc_facts::kube::ServiceMatch;
use conndoc_facts::nat::BackendFacts;
use conndoc_facts::{ConnectProbe, Evidence, Outcome};
use serde_json::json;

pub fn run(ev: &Evidence, out: &mut Findings) {
    let Some(kube) = &ev.kube else { return };
    for p in ev.probes.iter().filter(|p| !p.ok()) {
        let Some(m) = kube.for_address(p.address) else { continue };
        let Some(ne) = &m.no_endpoints else {
            with_endpoints(m, out);
            continue;
        };
        // The client must have seen what the rule does: a refusal/unreachable for a reject,
        // silence for a drop. Anything else means the rule did not decide this probe.
        let consistent = match &ne.verdict {
            // A port-unreachable/RST reject is ECONNREFUSED; other ICMP codes are "unreachable"
            // (but a local ENETUNREACH means no route: the rule never saw the packet).
            FwVerdict::Reject(w) if w.looks_like_refused() => p.outcome == Outcome::Refused,
            FwVerdict::Reject(_) => {
                p.outcome == Outcome::Unreachable && p.kind != conndoc_facts::ConnectKind::NetworkUnreachable
            }
            FwVerdict::Drop => p.outcome == Outcome::Timeout,
            FwVerdict::Accept => false,
        };
        if !consistent {
            continue;
        }
        out.push(no_endpoints(p, m));
        // The firewall finding for the same rule must not advise deleting it: kube-proxy
        // owns it and writes it back on its next sync.
        for c in [Cause::FirewallReject, Cause::FirewallDrop] {
            if let Some(f) = out.get_mut(c) {
                let kube_proxys = f.evidence.iter().any(|e| {
                    e.kind == "firewall-rule"
                        && (e.text.contains(&ne.rule.text)
                            || e.data.get("table").and_then(|t| t.as_str()) == Some("kube-proxy")
                            || e.data.get("chain").and_then(|c| c.as_str()).is_some_and(|c| c.starts_with("KUBE-")))
                });
                if kube_proxys {
                    f.remediation = vec![format!(
                        "This rule is kube-proxy's (Service {}); it is rewritten on every sync — fix the Service's endpoints, not the rule.",
                        m.service
                    )];
                }
            }
        }
    }
}

/// A Service with endpoints that failed: kube-proxy translated the connection, so the
/// failure is the endpoint's. Name the Service and its endpoints wherever the failure is
/// explained; drop a reject that only an untranslated evaluation produced.
fn with_endpoints(m: &ServiceMatch, out: &mut Findings) {
    // nftables mode: `cluster-ips-check` (filter-output, priority 0) rejects ClusterIP ports
    // kube-proxy does not serve; a served port was rewritten to an endpoint by nat-output
    // (priority -100) before it, so a reject found there for the ClusterIP is not real.
    let untranslated = |f: &Finding| {
        f.evidence.iter().any(|e| {
            e.kind == "firewall-rule"
                && e.data.get("table").and_then(|t| t.as_str()) == Some("kube-proxy")
                && e.data.get("chain").and_then(|c| c.as_str()) == Some("cluster-ips-check")
        })
    };
    if !m.endpoints.is_empty() && out.iter().any(|f| f.cause == Cause::FirewallReject && untranslated(f)) {
        out.remove(Cause::FirewallReject);
    }
    let eps: Vec<String> =
        m.endpoints.iter().map(|e| std::net::SocketAddr::new(e.address, e.port).to_string()).collect();
    let text = match eps.as_slice() {
        [] => format!("{} is {}; its rules list no endpoint", m.address_port(), m.describe()),
        _ => format!(
            "{} is {}; kube-proxy ({} mode) translates it to {} {} ({})",
            m.address_port(),
            m.describe(),
            m.mode.as_str(),
            if eps.len() == 1 { "its endpoint" } else { "one of its endpoints, at random:" },
            eps.join(", "),
            m.endpoints[0].rule.location()
        ),
    };
    let item = crate::EvidenceItem { kind: "kube-service".into(), text, data: json!(m) };
    let followed = followed_item(m);
    for c in [
        Cause::WrongPort,
        Cause::ContainerBoundToLoopback,
        Cause::BoundToLoopback,
        Cause::ProcessNotRunning,
        Cause::NoListener,
        Cause::AcceptedThenClosed,
        Cause::ConnectTimeout,
        Cause::FirewallReject,
        Cause::FirewallDrop,
        Cause::Unknown,
    ] {
        if let Some(f) = out.get_mut(c) {
            // The Service first: the finding's other evidence is about its endpoint.
            if !f.evidence.contains(&item) {
                f.evidence.insert(0, item.clone());
            }
            if let Some(fi) = &followed {
                if !f.evidence.contains(fi) {
                    f.evidence.insert(1, fi.clone());
                }
            }
        }
    }
}

/// How the backend rules name a Service's endpoint they found the failure in.
pub(crate) struct PodFrame {
    /// `Service default/web:http (ClusterIP 10.96.0.30:80)`
    pub service: String,
    /// `pod 10.244.0.5 (netns cni-…, net:[…])`
    pub pod: String,
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    /// The command that names the pod by its IP.
    pub find_pod: String,
}

/// The Service whose endpoint the backend is (kube-proxy translated the probe to it).
pub(crate) fn pod_frame(ev: &Evidence, b: &BackendFacts) -> Option<PodFrame> {
    let t = &b.translation;
    let m = ev.kube.as_ref()?.services.iter().find(|m| {
        m.address == t.from.ip()
            && m.port == t.from.port()
            && m.endpoints.iter().any(|e| std::net::SocketAddr::new(e.address, e.port) == t.to)
    })?;
    let ip = t.to.ip();
    let pod = match &b.netns {
        Some(n) => n.describe_pod(ip),
        None => format!("pod {ip}"),
    };
    let s = &m.service;
    Some(PodFrame {
        service: m.describe(),
        pod,
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        port_name: s.port.clone(),
        find_pod: format!("`kubectl -n {} get pods -o wide --field-selector status.podIP={ip}`", s.namespace),
    })
}

/// The endpoints followed to their pods, when there were several (which one failed).
fn followed_item(m: &ServiceMatch) -> Option<crate::EvidenceItem> {
    if m.followed.len() < 2 && m.endpoints.len() < 2 {
        return None;
    }
    let each: Vec<String> = m
        .followed
        .iter()
        .map(|c| {
            let at = std::net::SocketAddr::new(c.address, c.port);
            let pod =
                c.netns.as_ref().map(|n| n.describe_pod(c.address)).unwrap_or_else(|| format!("pod {}", c.address));
            match (c.serving, &c.not_inspected) {
                (Some(true), _) => format!("{at} in {pod}: listening"),
                (Some(false), _) => format!("{at} in {pod}: nothing takes connections on {at}"),
                (None, Some(why)) => format!("{at}: not inspected ({why})"),
                (None, None) => format!("{at}: not inspected"),
            }
        })
        .collect();
    Some(crate::EvidenceItem {
        kind: "kube-endpoints".into(),
        text: format!(
            "kube-proxy picks one of {} endpoint(s) at random per connection; {} inspected: {}",
            m.endpoints.len(),
            m.followed.len(),
            each.join("; ")
        ),
        data: json!(m.followed),
    })
}

fn no_endpoints(p: &ConnectProbe, m: &ServiceMatch) -> Finding {
    let ne = m.no_endpoints.as_ref().expect("checked by the caller");
    let s = &m.service;
    let what = match ne.verdict {
        FwVerdict::Drop => "drops".to_string(),
        ref v => format!("rejects ({})", v.describe().trim_start_matches("reject with ")),
    };
    let mut f = Finding::critical(
        Cause::ServiceNoEndpoints,
        format!("{} has no ready endpoint: kube-proxy {what} connections to {}:{}", m.describe(), p.address, p.port),
    );
    let element = match m.mode {
        conndoc_facts::kube::ProxyMode::Iptables => "rule",
        conndoc_facts::kube::ProxyMode::Nftables => "map element",
    };
    f = f.evidence(
        "kube-service",
        format!(
            "kube-proxy ({} mode) {element} for Service {s} ({} {}): {}: `{}`",
            m.mode.as_str(),
            m.kind.describe(),
            m.address_port(),
            ne.rule.location(),
            ne.rule.text
        ),
        json!(m),
    );
    f = f.evidence(
        "connect",
        format!("{} {:?} {}", m.address_port(), p.outcome, p.errno.as_ref().map(|e| e.as_str()).unwrap_or("")),
        json!(p),
    );
    let ns = &s.namespace;
    let name = &s.name;
    f.fix(format!(
        "Check the endpoints of Service {ns}/{name}: `kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}` (no addresses, or all not ready)."
    ))
    .fix(format!(
        "Check the pods behind its selector: `kubectl -n {ns} get service {name} -o jsonpath='{{.spec.selector}}'`, then `kubectl -n {ns} get pods -l KEY=VALUE` — none matching, not Ready (readiness probe failing), or crash-looping."
    ))
    .fix(format!(
        "If the pods are Ready, check that the Service's port{} names a port the pods declare (`targetPort`), and kube-proxy's logs on this node.",
        if s.port.is_empty() { String::new() } else { format!(" {:?}", s.port) }
    ))
}

#[cfg(test)]
mod tests {
    use crate::diagnose;
    use conndoc_facts::Evidence;

    /// Recorded by the lab scenario kube-ipt-nft-no-endpoints (`CONNDOC_LAB_EVIDENCE_DIR`).
    fn recorded() -> Evidence {
        serde_json::from_str(include_str!("../../tests/evidence/kube-ipt-nft-no-endpoints.json")).unwrap()
    }

    #[test]
    fn empty_service_outranks_the_firewall_reject_of_its_rule() {
        let ev = recorded();
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, crate::Cause::ServiceNoEndpoints);
        let f = r.finding(crate::Cause::ServiceNoEndpoints).unwrap();
        let text = serde_json::to_string(f).unwrap();
        assert!(text.contains("default/redis:redis has no endpoints"), "{text}");
        assert!(text.contains("kubernetes.io/service-name=redis"), "{text}");
        let fw = serde_json::to_string(r.finding(crate::Cause::FirewallReject).unwrap()).unwrap();
        assert!(!fw.contains("-D KUBE-SERVICES"), "never advise deleting kube-proxy's rule: {fw}");
        assert!(fw.contains("rule is kube-proxy's"), "{fw}");
    }

    #[test]
    fn a_probe_that_connected_is_not_an_empty_service() {
        let mut ev = recorded();
        for p in &mut ev.probes {
            p.outcome = conndoc_facts::Outcome::Connected;
            p.kind = conndoc_facts::ConnectKind::Connected;
        }
        assert!(diagnose(&ev).finding(crate::Cause::ServiceNoEndpoints).is_none());
    }
}
