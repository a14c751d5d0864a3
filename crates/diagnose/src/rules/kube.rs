//! Kubernetes Services from kube-proxy's rules: `service-no-endpoints`.
//!
//! kube-proxy answers a Service without a ready endpoint itself — a REJECT rule (iptables
//! mode) or a `no-endpoint-services` map element (nftables mode) naming the Service — so
//! the client sees a refusal (or a timeout for a drop) that looks like a firewall or a
//! closed port. The rule is kube-proxy's, the cause is the empty Service.

use crate::{Cause, Finding, Findings};
use conndoc_facts::firewall::FwVerdict;
use conndoc_facts::kube::{EndpointCheck, ServiceMatch};
use conndoc_facts::nat::BackendFacts;
use conndoc_facts::{ConnectProbe, Evidence, Outcome};
use serde_json::json;
use std::net::SocketAddr;

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
    } // After the endpoint's own findings are framed by the Service (above).
    for m in kube.services.iter().filter(|m| ev.probes.iter().any(|p| p.address == m.address)) {
        endpoint_failing(ev, m, out);
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

/// What was found at one followed endpoint that does not take connections: the cause
/// code the endpoint would get on its own, and why.
pub(crate) fn endpoint_cause(c: &EndpointCheck) -> Option<(Cause, String)> {
    if c.serving != Some(false) {
        return None;
    }
    let at = SocketAddr::new(c.address, c.port);
    let port = c.port;
    let on_port: Vec<String> = c.listeners.iter().map(|l| l.local.to_string()).collect();
    if !c.listeners.is_empty() && c.listeners.iter().all(|l| l.loopback_only()) {
        return Some((
            Cause::ContainerBoundToLoopback,
            format!("the pod's process binds {} only, not {at}", on_port.join(", ")),
        ));
    }
    if !c.listeners.is_empty() {
        return Some((Cause::BoundToOtherAddress, format!("the pod listens on {}, not on {at}", on_port.join(", "))));
    }
    if !c.other_listeners.is_empty() {
        let others: Vec<String> = c.other_listeners.iter().map(|l| l.local.to_string()).collect();
        return Some((Cause::WrongPort, format!("the pod listens on {}, not on {port}", others.join(", "))));
    }
    Some((Cause::NoListener, format!("nothing listens on port {port} in the pod")))
}

/// `10.244.0.7:8080 pod 10.244.0.7 (netns cni-…, net:[…])`
fn endpoint_label(c: &EndpointCheck) -> String {
    let at = SocketAddr::new(c.address, c.port);
    let pod = c.netns.as_ref().map(|n| n.describe_pod(c.address)).unwrap_or_else(|| format!("pod {}", c.address));
    format!("{at} {pod}")
}

/// Some of the Service's endpoints take connections and some do not (or the probe got
/// through while an endpoint fails): kube-proxy sends each connection to one at random,
/// so a share of them fail. A warning-level verdict: reachable, not healthy.
fn endpoint_failing(ev: &Evidence, m: &ServiceMatch, out: &mut Findings) {
    let failing: Vec<(&EndpointCheck, Cause, String)> =
        m.followed.iter().filter_map(|c| endpoint_cause(c).map(|(cause, why)| (c, cause, why))).collect();
    let working: Vec<&EndpointCheck> = m.followed.iter().filter(|c| c.serving == Some(true)).collect();
    let connected = ev.probes.iter().any(|p| p.address == m.address && p.ok());
    // Every endpoint failing is the endpoint's own verdict (wrong-port, no-listener, …).
    if failing.is_empty() || (working.is_empty() && !connected) {
        return;
    }
    let unknown: Vec<&EndpointCheck> = m.followed.iter().filter(|c| c.serving.is_none()).collect();
    let this = match ev.probes.iter().find(|p| p.address == m.address) {
        Some(p) if p.ok() => "this connection reached a working one",
        Some(_) => "this connection was sent to a failing one",
        None => "",
    };
    let failing_text: Vec<String> =
        failing.iter().map(|(c, cause, why)| format!("{}: {cause} ({why})", endpoint_label(c))).collect();
    let mut f = Finding::warning(
        Cause::ServiceEndpointFailing,
        format!(
            "{} has {} of {} endpoint(s) failing: {}; kube-proxy sends each connection to one endpoint at random, so some connections fail ({this})",
            m.describe(),
            failing.len(),
            m.endpoints.len(),
            failing.iter().map(|(c, cause, _)| format!("{} {cause}", SocketAddr::new(c.address, c.port))).collect::<Vec<_>>().join(", "),
        ),
    );
    f = f.evidence(
        "kube-service",
        format!(
            "{} is {}; kube-proxy ({} mode) translates it to one of {} endpoint(s) at random",
            m.address_port(),
            m.describe(),
            m.mode.as_str(),
            m.endpoints.len()
        ),
        json!(m),
    );
    for ((c, cause, _), text) in failing.iter().zip(&failing_text) {
        f = f.evidence("failing-endpoint", format!("failing: {text}"), json!({ "endpoint": c, "cause": cause }));
    }
    for c in &working {
        f = f.evidence("working-endpoint", format!("working: {}: listening", endpoint_label(c)), json!(c));
    }
    for c in &unknown {
        let why = c.not_inspected.as_deref().unwrap_or("not inspected");
        f = f.evidence("endpoint-not-inspected", format!("not inspected: {}: {why}", endpoint_label(c)), json!(c));
    }
    if m.endpoints.len() > m.followed.len() {
        f.partial =
            Some(format!("{} of the Service's {} endpoints were inspected", m.followed.len(), m.endpoints.len()));
    }
    let s = &m.service;
    let ns = &s.namespace;
    for (c, cause, _) in &failing {
        f = f.fix(format!(
            "Fix the pod at {} ({cause}): `kubectl -n {ns} get pods -o wide --field-selector status.podIP={}`, then its containerPort / bind address / process, or delete it so its controller replaces it.",
            c.address, c.address
        ));
    }
    f = f.fix(format!(
        "A readiness probe on the failing port would take such a pod out of the Service's endpoints: `kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={}`.",
        s.name
    ));
    // The failing endpoint's own finding (about the pod this connection was sent to) is
    // one of the failing endpoints above: a consequence, not the verdict.
    for cause in [
        Cause::WrongPort,
        Cause::ContainerBoundToLoopback,
        Cause::BoundToLoopback,
        Cause::BoundToOtherAddress,
        Cause::ProcessNotRunning,
        Cause::NoListener,
        Cause::AcceptedThenClosed,
    ] {
        if let Some(g) = out.get_mut(cause) {
            if g.evidence.iter().any(|e| e.kind == "kube-service") || pod_finding(ev, g) {
                g.severity = crate::Severity::Warning;
            }
        }
    }
    out.push(f);
}

/// Whether a finding is about the backend kube-proxy translated the probe to.
fn pod_finding(ev: &Evidence, f: &Finding) -> bool {
    ev.backend.as_ref().is_some_and(|b| {
        f.evidence.iter().any(|e| e.kind == "translation" && e.text.contains(&b.translation.to.to_string()))
    })
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

    /// Recorded by kube-ipt-nft-endpoint-failing: the probe reached the good endpoint.
    fn degraded_connected() -> Evidence {
        serde_json::from_str(include_str!("../../tests/evidence/kube-ipt-nft-endpoint-failing.json")).unwrap()
    }

    /// Recorded by kube-nft-endpoint-failing: the probe was sent to the pod bound to loopback.
    fn degraded_refused() -> Evidence {
        serde_json::from_str(include_str!("../../tests/evidence/kube-nft-endpoint-failing.json")).unwrap()
    }

    #[test]
    fn a_service_with_a_failing_endpoint_is_not_ok_when_the_probe_connected() {
        let ev = degraded_connected();
        assert!(ev.probes.iter().all(|p| p.ok()));
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, crate::Cause::ServiceEndpointFailing);
        assert_eq!(r.exit_status(), 1);
        let f = &r.findings[0];
        assert_eq!((f.cause, f.severity), (crate::Cause::ServiceEndpointFailing, crate::Severity::Warning));
        let text = serde_json::to_string(f).unwrap();
        assert!(text.contains("failing: 10.244.0.7:8080 pod 10.244.0.7"), "{text}");
        assert!(text.contains("no-listener (nothing listens on port 8080 in the pod)"), "{text}");
        assert!(text.contains("working: 10.244.0.6:8080 pod 10.244.0.6"), "{text}");
        assert_eq!(crate::verdict(&ev), r.verdict);
    }

    #[test]
    fn the_same_verdict_when_the_probe_was_sent_to_the_failing_endpoint() {
        let ev = degraded_refused();
        assert!(ev.probes.iter().all(|p| !p.ok()));
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, crate::Cause::ServiceEndpointFailing);
        assert_eq!(r.findings[0].cause, crate::Cause::ServiceEndpointFailing, "the verdict's finding first");
        // The failing pod's own finding stays, as one of the failing endpoints.
        let pod = r.finding(crate::Cause::ContainerBoundToLoopback).unwrap();
        assert_eq!(pod.severity, crate::Severity::Warning);
        assert!(r.finding(crate::Cause::Unknown).is_none());
    }

    #[test]
    fn every_endpoint_failing_is_the_endpoints_own_verdict() {
        let mut ev = degraded_refused();
        for k in ev.kube.iter_mut().flat_map(|k| &mut k.services) {
            for c in &mut k.followed {
                c.serving = Some(false);
                c.listeners.retain(|l| l.loopback_only());
            }
        }
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, crate::Cause::ContainerBoundToLoopback);
        assert!(r.finding(crate::Cause::ServiceEndpointFailing).is_none());
    }

    #[test]
    fn every_endpoint_serving_is_ok() {
        let mut ev = degraded_connected();
        for k in ev.kube.iter_mut().flat_map(|k| &mut k.services) {
            for c in &mut k.followed {
                c.serving = Some(true);
            }
        }
        assert_eq!(diagnose(&ev).verdict.cause, crate::Cause::Ok);
    }

    #[test]
    fn endpoint_causes() {
        use conndoc_facts::kube::EndpointCheck;
        let l = |a: &str| -> conndoc_facts::host::Listener {
            serde_json::from_value(
                serde_json::json!({"family":"ipv4","local":a,"accept_queue":0,"backlog":128,"uid":0,"inode":1}),
            )
            .unwrap()
        };
        let base = EndpointCheck {
            address: "10.244.0.7".parse().unwrap(),
            port: 8080,
            netns: None,
            serving: Some(false),
            not_inspected: None,
            listeners: vec![],
            other_listeners: vec![],
        };
        let cause = |c: &EndpointCheck| super::endpoint_cause(c).map(|(c, _)| c);
        assert_eq!(cause(&base), Some(crate::Cause::NoListener));
        let wrong = EndpointCheck { other_listeners: vec![l("0.0.0.0:8081")], ..base.clone() };
        assert_eq!(cause(&wrong), Some(crate::Cause::WrongPort));
        let lo = EndpointCheck { listeners: vec![l("127.0.0.1:8080")], ..base.clone() };
        assert_eq!(cause(&lo), Some(crate::Cause::ContainerBoundToLoopback));
        let other = EndpointCheck { listeners: vec![l("10.244.0.9:8080")], ..base.clone() };
        assert_eq!(cause(&other), Some(crate::Cause::BoundToOtherAddress));
        assert_eq!(cause(&EndpointCheck { serving: Some(true), ..base.clone() }), None);
        assert_eq!(cause(&EndpointCheck { serving: None, ..base }), None);
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
