//! Firewall and packet evidence: `firewall-reject`, `firewall-drop`, `middlebox-reset`, and
//! the ICMP that came back named in `host-unreachable`.

use crate::{Cause, Finding, Findings};
use conndoc_facts::capture::{FlowSeen, TtlBaseline};
use conndoc_facts::firewall::{
    Evaluation, FirewallRole, FirewallTool, FwVerdict, Hook, HostFirewall, RejectWith, RuleRef,
};
use conndoc_facts::{ConnectKind, ConnectProbe, Evidence, Outcome};
use serde_json::json;

pub fn run(ev: &Evidence, out: &mut Findings) {
    for p in ev.probes.iter().filter(|p| !p.ok()) {
        let flow = ev.capture.as_ref().and_then(|c| c.flow(&p.address));
        let baseline = ev.capture.as_ref().and_then(|c| c.baseline(&p.address));
        let target = host_eval(ev, FirewallRole::Target, p);
        let client = host_eval(ev, FirewallRole::Client, p);

        let mut middlebox = middlebox_reset(p, flow, baseline);
        if let (Some(f), Some((host, e))) = (middlebox.as_mut(), target) {
            // An inspected router whose FORWARD path resets the flow is the box that forged it.
            if e.hook == Hook::Forward && matches!(e.verdict, FwVerdict::Reject(RejectWith::TcpReset)) {
                if let Some(r) = &e.decided_by {
                    let (text, data) = rule_item(r);
                    f.evidence.push(crate::EvidenceItem {
                        kind: "firewall-rule".into(),
                        text: format!("{text} on {} resets the flow it forwards", where_(FirewallRole::Target, host)),
                        data,
                    });
                    f.remediation.push(remove_hint(r));
                }
            }
        }
        if let Some(f) = &middlebox {
            out.push(f.clone());
        }

        // A rule on the client's OUTPUT path, then on the target's INPUT/FORWARD path.
        for (role, found) in [(FirewallRole::Client, client), (FirewallRole::Target, target)] {
            let Some((host, e)) = found else { continue };
            match &e.verdict {
                FwVerdict::Reject(_) if middlebox.is_none() && answered(p) => {
                    out.push(reject_finding(ev, p, role, host, e, flow, baseline));
                }
                FwVerdict::Drop if silent(p, flow) => out.push(drop_finding(ev, p, role, e, flow)),
                _ => {}
            }
        }

        if let Some(f) = icmp_unreachable(p, flow) {
            out.push(f);
        }

        // Rules that could not be evaluated are named wherever the failure is explained.
        for (_, e) in [target, client].into_iter().flatten() {
            for n in &e.not_understood {
                let item = (
                    "firewall-not-understood",
                    format!("{} — not evaluated ({}): `{}`", n.rule.location(), n.reason, n.rule.text),
                    json!(n),
                );
                for c in [Cause::FirewallReject, Cause::FirewallDrop, Cause::ConnectTimeout, Cause::NoListener] {
                    if let Some(f) = out.get_mut(c) {
                        let it =
                            crate::EvidenceItem { kind: item.0.into(), text: item.1.clone(), data: item.2.clone() };
                        if !f.evidence.contains(&it) {
                            f.evidence.push(it);
                        }
                    }
                }
            }
        }
    }
}

/// A firewall conndoc tried to read but could not (no privilege, or the read ran out of
/// time: a node with tens of thousands of kube-proxy rules) may hold the rule that explains
/// a refusal or a timeout, so those verdicts say so instead of reading as certain.
pub fn unread(ev: &Evidence, out: &mut Findings) {
    // "another host" is not a failed read: conndoc reads rules only where it runs.
    let unread: Vec<String> = ev
        .skipped
        .iter()
        .filter(|s| s.check.starts_with("firewall of ") && !s.reason.contains("is another host"))
        .map(|s| format!("{}: {}", s.check, s.reason))
        .collect();
    if unread.is_empty() {
        return;
    }
    let what = unread.join("; ");
    let client_only = ev.host.is_none();
    if let Some(f) = out.get_mut(Cause::NoListener) {
        let note = format!(
            "the firewall was not read in full ({what}): a REJECT rule there (e.g. kube-proxy's for a Service with no endpoints) refuses connections the same way"
        );
        // Without the server's socket table, "nothing listens" is only one of two readings.
        if client_only {
            if let Some(p) = ev.probes.iter().find(|p| p.outcome == Outcome::Refused) {
                f.summary = format!(
                    "{} refuses connections (ECONNREFUSED): nothing listens there, or a firewall rule conndoc could not read in full rejects them",
                    crate::rules::client::addr(p)
                );
            }
        }
        append_partial(f, note);
    }
    if let Some(f) = out.get_mut(Cause::ConnectTimeout) {
        append_partial(
            f,
            format!("the firewall was not read in full ({what}): a DROP rule there may be what loses the SYN"),
        );
    }
}

fn append_partial(f: &mut Finding, note: String) {
    f.partial = Some(match f.partial.take() {
        Some(p) => format!("{p}; {note}"),
        None => note,
    });
}

fn host_eval<'a>(ev: &'a Evidence, role: FirewallRole, p: &ConnectProbe) -> Option<(&'a HostFirewall, &'a Evaluation)> {
    let h = ev.firewall.as_ref()?.host(role)?;
    let e = h.evaluations.iter().find(|e| e.packet.destination == p.address)?;
    Some((h, e))
}

/// The SYN got an answer a reject produces: RST/ICMP port unreachable (refused), an ICMP
/// unreachable of another kind, or an EPERM from a local OUTPUT rule.
fn answered(p: &ConnectProbe) -> bool {
    matches!(p.outcome, Outcome::Refused | Outcome::Unreachable) || p.kind == ConnectKind::PermissionDenied
}

/// Nothing came back: a timeout (or EPERM from a local drop), and the capture, when it ran,
/// saw no reply.
fn silent(p: &ConnectProbe, flow: Option<&FlowSeen>) -> bool {
    let timed_out = p.outcome == Outcome::Timeout || p.kind == ConnectKind::PermissionDenied;
    timed_out && flow.is_none_or(|f| f.rst.is_none() && f.icmp.is_none() && f.syn_ack_ttl.is_none())
}

fn rule_item(r: &RuleRef) -> (String, serde_json::Value) {
    (format!("{}: `{}`", r.location(), r.text), json!(r))
}

/// The command that removes or shows the rule, for the remediation.
fn remove_hint(r: &RuleRef) -> String {
    if r.policy {
        return match r.tool {
            FirewallTool::Nftables => format!(
                "The chain's policy drops it: add an accept rule for the port, e.g. `nft insert rule {} {} {} tcp dport PORT accept`, or change the policy.",
                r.family, r.table, r.chain
            ),
            t => format!(
                "The {} policy is DROP: add `{} -I {} -p tcp --dport PORT -j ACCEPT` (persist it in your rules file).",
                r.chain,
                iptables_cmd(t),
                r.chain
            ),
        };
    }
    match (r.tool, r.handle, r.position) {
        (FirewallTool::Nftables, Some(h), _) => format!(
            "If the port should be open, remove the rule: `nft delete rule {} {} {} handle {h}` (and from the file it is loaded from, e.g. /etc/nftables.conf).",
            r.family, r.table, r.chain
        ),
        (t, _, Some(pos)) => format!(
            "If the port should be open, remove the rule: `{} -t {} -D {} {pos}` (and from the saved rules, e.g. /etc/iptables/rules.v4).",
            iptables_cmd(t),
            r.table,
            r.chain
        ),
        _ => "If the port should be open, remove or narrow this rule.".into(),
    }
}

fn iptables_cmd(t: FirewallTool) -> &'static str {
    match t {
        FirewallTool::IptablesLegacy => "iptables-legacy",
        FirewallTool::IptablesNft => "iptables",
        FirewallTool::Ip6tablesLegacy => "ip6tables-legacy",
        FirewallTool::Ip6tablesNft => "ip6tables",
        FirewallTool::Nftables => "nft",
    }
}

fn where_(role: FirewallRole, host: &HostFirewall) -> String {
    match (role, &host.namespace) {
        (FirewallRole::Client, _) => "this host's OUTPUT path".into(),
        (FirewallRole::Target, _) if host.ssh.is_some() => {
            format!("the target host ({}, read over ssh)", host.ssh.as_deref().unwrap_or("?"))
        }
        (FirewallRole::Target, Some(ns)) => format!("the target host (network namespace {ns})"),
        (FirewallRole::Target, None) => "the target host".into(),
    }
}

fn packets_item(flow: Option<&FlowSeen>, baseline: Option<&TtlBaseline>) -> Option<(String, serde_json::Value)> {
    let f = flow?;
    let mut parts = vec![format!("{} SYN sent", f.syns_sent)];
    if let Some(r) = &f.rst {
        parts.push(format!("RST from {} with TTL {}", r.from, r.ttl.0));
    }
    if let Some(i) = &f.icmp {
        parts.push(icmp_text(i));
    }
    if f.rst.is_none() && f.icmp.is_none() && f.syn_ack_ttl.is_none() {
        parts.push("no reply".into());
    }
    if let Some(b) = baseline {
        parts.push(format!("the host's own packets arrive with TTL {}", b.ttl.0));
    }
    Some((format!("captured: {}", parts.join("; ")), json!({ "flow": f, "baseline": baseline })))
}

fn reject_finding(
    ev: &Evidence,
    p: &ConnectProbe,
    role: FirewallRole,
    host: &HostFirewall,
    e: &Evaluation,
    flow: Option<&FlowSeen>,
    baseline: Option<&TtlBaseline>,
) -> Finding {
    let r = e.decided_by.as_ref();
    let mut f = Finding::critical(
        Cause::FirewallReject,
        format!(
            "a firewall rule on {} answers {}:{} with {}",
            where_(role, host),
            p.address,
            p.port,
            e.verdict.describe().trim_start_matches("reject with ")
        ),
    );
    f = with_rule(f, e);
    let (text, data) = crate::rules::client::connect_item(p);
    f = f.evidence("connect", text, data);
    if role == FirewallRole::Target {
        match &host.listeners_on_port {
            Some(l) if !l.is_empty() => {
                f = f.evidence(
                    "listener",
                    format!("behind the rule a listener is ready: {}", l.join(", ")),
                    json!({ "listeners": l }),
                );
            }
            Some(_) => {
                f = f.evidence(
                    "listener",
                    format!("nothing listens on port {} behind the rule either", ev.target.port),
                    json!({ "listeners": [] }),
                );
            }
            None => {}
        }
    }
    if let Some((text, data)) = packets_item(flow, baseline) {
        f = f.evidence("packets", text, data);
    }
    if let Some(r) = r {
        f = f.fix(remove_hint(r));
    }
    f
}

/// The deciding rule (or policy) and the jumps that led to it.
fn with_rule(mut f: Finding, e: &Evaluation) -> Finding {
    if let Some(r) = e.decided_by.as_ref() {
        let (text, data) = rule_item(r);
        f = f.evidence("firewall-rule", text, data);
    }
    for j in &e.path {
        let (text, data) = rule_item(j);
        f = f.evidence("firewall-path", format!("reached through {text}"), data);
    }
    f
}

fn drop_finding(
    ev: &Evidence,
    p: &ConnectProbe,
    role: FirewallRole,
    e: &Evaluation,
    flow: Option<&FlowSeen>,
) -> Finding {
    let host = ev.firewall.as_ref().and_then(|fw| fw.host(role));
    let place = host.map(|h| where_(role, h)).unwrap_or_default();
    let r = e.decided_by.as_ref();
    let what = match r {
        Some(r) if r.policy => "the drop policy of a firewall chain".to_string(),
        _ => "a firewall rule".to_string(),
    };
    let mut f = Finding::critical(
        Cause::FirewallDrop,
        format!("{what} on {place} silently drops the SYN to {}:{}", p.address, p.port),
    );
    f = with_rule(f, e);
    let retrans = p.syn_retransmits.map(|n| format!(", {n} SYN retransmissions")).unwrap_or_default();
    f = f.evidence("connect", format!("{}:{} timed out after {}{retrans}", p.address, p.port, p.elapsed_us), json!(p));
    if let Some((text, data)) = packets_item(flow, None) {
        f = f.evidence("packets", text, data);
    }
    if let Some(r) = r {
        f = f.fix(remove_hint(r));
    }
    f
}

fn middlebox_reset(p: &ConnectProbe, flow: Option<&FlowSeen>, baseline: Option<&TtlBaseline>) -> Option<Finding> {
    if p.outcome != Outcome::Refused {
        return None;
    }
    let (flow, base) = (flow?, baseline?);
    let rst = flow.rst.as_ref()?;
    if rst.ttl == base.ttl {
        return None;
    }
    let hops = |t: conndoc_facts::Ttl| i32::from(t.likely_initial()) - i32::from(t.0);
    // A reset from further away than the host came from behind it — a backend the host
    // forwards to (DNAT, a container), one forwarding hop further — not from a box on the way.
    if hops(rst.ttl) > hops(base.ttl) {
        return None;
    }
    let f = Finding::critical(
        Cause::MiddleboxReset,
        format!(
            "the RST for {}:{} did not come from that host: it arrived with TTL {}, the host's own packets with TTL {}",
            p.address, p.port, rst.ttl.0, base.ttl.0
        ),
    )
    .evidence(
        "rst-ttl",
        format!("RST from {} with TTL {} ({} hops away)", rst.from, rst.ttl.0, hops(rst.ttl)),
        json!(rst),
    )
    .evidence(
        "baseline-ttl",
        format!(
            "{} sends with TTL {} ({} hops away), seen in {}",
            base.address,
            base.ttl.0,
            hops(base.ttl),
            match base.source {
                conndoc_facts::capture::BaselineSource::IcmpEchoReply => "its ICMP echo reply".to_string(),
                conndoc_facts::capture::BaselineSource::SynAck =>
                    format!("its SYN-ACK from port {}", base.port.map(|p| p.get()).unwrap_or(0)),
            }
        ),
        json!(base),
    )
    .fix(format!(
        "A device {} hop(s) from this host forges the reset: check firewalls, load balancers or IPS on the path (traceroute -T -p {} {}).",
        hops(rst.ttl),
        p.port,
        p.address
    ));
    Some(f)
}

/// An ICMP unreachable about this flow, named, in the `host-unreachable` finding.
fn icmp_unreachable(p: &ConnectProbe, flow: Option<&FlowSeen>) -> Option<Finding> {
    if p.outcome != Outcome::Unreachable {
        return None;
    }
    let i = flow?.icmp.as_ref()?;
    let admin = matches!(
        (i.icmp.protocol.as_str(), i.icmp.icmp_type, i.icmp.code),
        ("icmp", 3, 9 | 10 | 13) | ("icmpv6", 1, 1)
    );
    let summary = if admin {
        format!("{} answers for {}: {} — a firewall on the path refuses the connection", i.from, p.address, i.icmp.name)
    } else {
        format!("{} answers for {}: {}", i.from, p.address, i.icmp.name)
    };
    let mut f = Finding::critical(Cause::HostUnreachable, summary).evidence("icmp", icmp_text(i), json!(i));
    if admin {
        f = f.fix(format!("Ask whoever runs {} which rule rejects traffic to {}:{}.", i.from, p.address, p.port));
    }
    Some(f)
}

/// `ICMP type 3 code 3 (port unreachable) from 10.0.0.2 with TTL 64`
fn icmp_text(i: &conndoc_facts::capture::IcmpReply) -> String {
    format!(
        "{} type {} code {} ({}) from {} with TTL {}",
        proto_label(&i.icmp.protocol),
        i.icmp.icmp_type,
        i.icmp.code,
        i.icmp.name,
        i.from,
        i.ttl.0
    )
}

fn proto_label(p: &str) -> &'static str {
    if p == "icmpv6" {
        "ICMPv6"
    } else {
        "ICMP"
    }
}

#[cfg(test)]
mod tests {
    use crate::{diagnose, Cause};
    use conndoc_facts::capture::ReplySeen;
    use conndoc_facts::firewall::{FirewallRole, FwVerdict};
    use conndoc_facts::{ConnectKind, Evidence, Outcome, Ttl};

    /// Evidence recorded by `conndoc diagnose tcp://[fd77::2]:7000 --netns fws
    /// --evidence-out` against an nftables `reject with icmpv6 type port-unreachable` rule
    /// (host facts left out).
    fn recorded() -> Evidence {
        serde_json::from_str(include_str!("../../../firewall/tests/fixtures/evidence/nft-icmpv6-reject.json")).unwrap()
    }

    fn text(r: &crate::Report, c: Cause) -> String {
        serde_json::to_string(r.finding(c).unwrap()).unwrap()
    }

    #[test]
    fn reject_rule_with_its_packets() {
        let r = diagnose(&recorded());
        assert_eq!(r.verdict.cause, Cause::FirewallReject);
        let t = text(&r, Cause::FirewallReject);
        for want in [
            "nftables inet lab input handle 2",
            "tcp dport 7000 reject with icmpv6 port-unreachable",
            "[::]:7000",
            "ICMPv6 type 1 code 4",
            "nft delete rule inet lab input handle 2",
        ] {
            assert!(t.contains(want), "{want} not in {t}");
        }
    }

    #[test]
    fn a_firewall_read_that_ran_out_never_leaves_a_confident_no_listener() {
        let mut ev = recorded();
        ev.firewall = None;
        ev.capture = None;
        ev.host = None;
        ev.skipped.retain(|s| !s.check.starts_with("firewall of "));
        let other = conndoc_facts::SkippedCheck {
            check: "firewall of the target host".into(),
            reason: "[fd77::2]:7000 is another host: conndoc reads firewall rules only where it runs".into(),
            hint: None,
        };
        ev.skipped.push(other);
        // Not having tried to read a remote host's rules is no reason to doubt the verdict.
        let r = diagnose(&ev);
        let f = r.finding(Cause::NoListener).unwrap();
        assert!(f.summary.starts_with("Nothing accepts connections"), "{}", f.summary);
        assert!(!f.partial.as_deref().unwrap_or("").contains("not read in full"), "{:?}", f.partial);

        ev.skipped.push(conndoc_facts::SkippedCheck {
            check: "firewall of this host (OUTPUT)".into(),
            reason: "read only in part: `iptables-nft-save` did not finish within 2000 ms".into(),
            hint: None,
        });
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::NoListener);
        let f = r.finding(Cause::NoListener).unwrap();
        assert!(
            f.summary.contains("nothing listens there, or a firewall rule conndoc could not read in full"),
            "{}",
            f.summary
        );
        let p = f.partial.as_deref().unwrap();
        assert!(p.contains("`iptables-nft-save` did not finish within 2000 ms") && p.contains("kube-proxy's"), "{p}");

        // A timeout is not called a plain one either.
        ev.probes[0].outcome = Outcome::Timeout;
        ev.probes[0].kind = ConnectKind::Timeout;
        let r = diagnose(&ev);
        let f = r.finding(Cause::ConnectTimeout).unwrap();
        assert!(
            f.partial.as_deref().unwrap().contains("a DROP rule there may be what loses the SYN"),
            "{:?}",
            f.partial
        );
    }

    #[test]
    fn accepted_packet_names_no_rule() {
        let mut ev = recorded();
        let fw = ev.firewall.as_mut().unwrap();
        fw.hosts.iter_mut().find(|h| h.role == FirewallRole::Target).unwrap().evaluations[0].verdict =
            FwVerdict::Accept;
        let r = diagnose(&ev);
        assert!(r.finding(Cause::FirewallReject).is_none());
        assert_ne!(r.verdict.cause, Cause::FirewallReject);
    }

    #[test]
    fn forged_reset_is_a_middlebox_not_the_rule() {
        let mut ev = recorded();
        let cap = ev.capture.as_mut().unwrap();
        cap.flows[0].icmp = None;
        cap.flows[0].rst = Some(ReplySeen { from: cap.flows[0].address, ttl: Ttl(64) });
        cap.baselines[0].ttl = Ttl(61);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::MiddleboxReset);
        assert!(r.finding(Cause::FirewallReject).is_none());
        let t = text(&r, Cause::MiddleboxReset);
        assert!(t.contains("TTL 64") && t.contains("TTL 61") && t.contains("3 hops away"), "{t}");
        // Same TTL as the host: the host sent it, no middlebox.
        ev.capture.as_mut().unwrap().baselines[0].ttl = Ttl(64);
        assert!(diagnose(&ev).finding(Cause::MiddleboxReset).is_none());
        // Lower than the host's: it came from behind the host (a forwarded backend), never a middlebox.
        let cap = ev.capture.as_mut().unwrap();
        cap.baselines[0].ttl = Ttl(64);
        cap.flows[0].rst = Some(ReplySeen { from: cap.flows[0].address, ttl: Ttl(63) });
        let r = diagnose(&ev);
        assert!(r.finding(Cause::MiddleboxReset).is_none());
        assert_ne!(r.verdict.cause, Cause::MiddleboxReset);
    }

    #[test]
    fn inspected_router_rule_joins_the_middlebox_finding() {
        use conndoc_facts::firewall::{Hook, RejectWith};
        let mut ev = recorded();
        let cap = ev.capture.as_mut().unwrap();
        cap.flows[0].icmp = None;
        cap.flows[0].rst = Some(ReplySeen { from: cap.flows[0].address, ttl: Ttl(64) });
        cap.baselines[0].ttl = Ttl(63);
        let fw = ev.firewall.as_mut().unwrap();
        let t = fw.hosts.iter_mut().find(|h| h.role == FirewallRole::Target).unwrap();
        t.evaluations[0].hook = Hook::Forward;
        t.evaluations[0].verdict = FwVerdict::Reject(RejectWith::TcpReset);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::MiddleboxReset);
        let f = r.finding(Cause::MiddleboxReset).unwrap();
        assert!(f.evidence.iter().any(|e| e.kind == "firewall-rule" && e.text.contains("handle 2")), "{f:?}");
        assert!(f.remediation.iter().any(|s| s.contains("nft delete rule inet lab input handle 2")));
    }

    #[test]
    fn drop_needs_silence() {
        let mut ev = recorded();
        ev.probes[0].outcome = Outcome::Timeout;
        ev.probes[0].kind = ConnectKind::Timeout;
        let fw = ev.firewall.as_mut().unwrap();
        fw.hosts.iter_mut().find(|h| h.role == FirewallRole::Target).unwrap().evaluations[0].verdict = FwVerdict::Drop;
        // The capture saw an ICMP error come back: not a silent drop.
        assert!(diagnose(&ev).finding(Cause::FirewallDrop).is_none());
        ev.capture.as_mut().unwrap().flows[0].icmp = None;
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::FirewallDrop);
        assert!(text(&r, Cause::FirewallDrop).contains("no reply"));
    }
}
