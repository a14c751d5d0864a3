//! Along the path: `path-drop` (hops up to N answer, nothing beyond), the hop that forges a
//! `middlebox-reset`, and the hop that sent a router's ICMP unreachable.
//!
//! Runs after the firewall rules: a rule seen on an inspected host outranks (by rank) what
//! the path suggests, and the middlebox/unreachable findings get their hop here.

use crate::{Cause, EvidenceItem, Finding, Findings};
use conndoc_facts::path::{Hop, HopAnswer, PathTrace};
use conndoc_facts::{ConnectProbe, Evidence, Outcome};
use serde_json::json;

pub fn run(ev: &Evidence, out: &mut Findings) {
    let Some(path) = &ev.path else { return };
    for p in ev.probes.iter().filter(|p| !p.ok()) {
        let Some(t) = path.trace(&p.address) else { continue };
        let item = path_item(t);
        match p.outcome {
            Outcome::Timeout => {
                let ended = path.connect_ended(&p.address).map(ended_item);
                if let Some(f) = path_drop(ev, p, t) {
                    let mut f = f.evidence(&item.kind, item.text.clone(), item.data.clone());
                    if let Some(e) = ended {
                        add(&mut f, e);
                    }
                    out.push(f);
                } else if let Some(mut f) = rejected_on_path(p, t) {
                    // The connect's own ICMP error was lost (IPv6 loses the first one in
                    // the lab) or rate-limited, but the probes' SYNs are answered.
                    add(&mut f, item);
                    if let Some(e) = ended {
                        add(&mut f, e);
                    }
                    out.push(f);
                } else if let Some(f) = out.get_mut(Cause::ConnectTimeout) {
                    add(f, item);
                    if let Some(e) = ended {
                        add(f, e);
                    }
                }
            }
            Outcome::Refused => {
                if let (Some(f), Some(rst)) = (out.get_mut(Cause::MiddleboxReset), t.first_terminal()) {
                    if rst.answer == HopAnswer::Rst {
                        reset_hop(f, t, rst);
                    }
                    add(f, item);
                }
            }
            Outcome::Unreachable => {
                if let Some(f) = out.get_mut(Cause::HostUnreachable) {
                    if let Some(u) = t.first_terminal().filter(|h| matches!(h.answer, HopAnswer::Unreachable { .. })) {
                        unreachable_hop(f, t, u);
                    }
                    add(f, item);
                }
            }
            _ => {}
        }
    }
}

fn add(f: &mut Finding, item: EvidenceItem) {
    if !f.evidence.contains(&item) {
        f.evidence.push(item);
    }
}

fn addr(h: &Hop) -> String {
    h.address.map(|a| a.to_string()).unwrap_or_else(|| "*".into())
}

/// The connect was given up before its deadline: the trace beside it had its answer.
fn ended_item(c: &conndoc_facts::path::ConnectEnded) -> EvidenceItem {
    EvidenceItem {
        kind: "connect-ended".into(),
        text: format!(
            "the connect to {} was given up after {} of its {} deadline: the path probe beside it had located where the SYN dies (the hops that answer had answered, and the rest stayed silent for a full round), so waiting longer would show nothing new",
            c.address, c.after_us, c.deadline_us
        ),
        data: json!(c),
    }
}

/// The hop list in one line (the text renderer draws it as a table from `data`).
pub fn path_item(t: &PathTrace) -> EvidenceItem {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < t.hops.len() {
        let h = &t.hops[i];
        if h.answer == HopAnswer::Nothing {
            let mut j = i;
            while j + 1 < t.hops.len() && t.hops[j + 1].answer == HopAnswer::Nothing {
                j += 1;
            }
            let span = if j > i { format!("{}-{}", h.ttl.0, t.hops[j].ttl.0) } else { h.ttl.0.to_string() };
            parts.push(format!("{span} nothing"));
            i = j + 1;
            continue;
        }
        let rtt = h.rtt_us.map(|r| format!(" {r}")).unwrap_or_default();
        parts.push(format!("{} {} {}{rtt}", h.ttl.0, addr(h), h.answer));
        i += 1;
    }
    EvidenceItem {
        kind: "path".into(),
        text: format!("path to {} port {} (TCP SYN by TTL): {}", t.target, t.port, parts.join("; ")),
        data: json!(t),
    }
}

/// Hops up to N answer, nothing beyond them answers the SYN, and the target never does.
fn path_drop(ev: &Evidence, p: &ConnectProbe, t: &PathTrace) -> Option<Finding> {
    if t.first_terminal().is_some() || t.hops.iter().any(|h| h.address == Some(p.address)) {
        return None;
    }
    let last = t.last_router()?;
    let n = last.ttl.0;
    let at = addr(last);
    let mut f = Finding::critical(
        Cause::PathDrop,
        format!(
            "the SYN to {}:{} is lost after hop {n}, {at}: hops up to {n} answer, nothing beyond answers and {} never answers the SYN",
            p.address, p.port, p.address
        ),
    )
    .evidence(
        "path-drop",
        format!(
            "lost after hop {n}, {at}: the filter is in {at}'s forwarding path or at a later hop that stays silent"
        ),
        json!({ "last_hop": last, "target": p.address, "port": p.port }),
    );
    let echo = ev
        .capture
        .as_ref()
        .and_then(|c| c.baseline(&p.address))
        .filter(|b| b.source == conndoc_facts::capture::BaselineSource::IcmpEchoReply);
    if let Some(b) = echo {
        f = f.evidence(
            "echo",
            format!(
                "{} answers ICMP echo (TTL {}): the host is up and TCP/{} is filtered on the way",
                b.address, b.ttl.0, p.port
            ),
            json!(b),
        );
    }
    f = f
        .fix(format!(
            "Ask whoever runs {at} (hop {n}) which rule drops TCP/{} towards {} in its forwarding path, or what sits after it (a firewall, security group, ACL).",
            p.port, p.address
        ))
        .fix(format!("Compare with `traceroute -T -n -p {} {}` from this host.", p.port, p.address));
    Some(f)
}

/// The forged reset: the first TTL at which an RST comes back instead of time exceeded.
fn reset_hop(f: &mut Finding, t: &PathTrace, rst: &Hop) {
    let k = rst.ttl.0;
    let before = t.hops.iter().rev().find(|h| h.ttl.0 < k && h.answer == HopAnswer::TimeExceeded);
    let (text, summary) = match before {
        Some(b) => (
            format!(
                "the RST answers the SYN sent with TTL {k}, where hop {k} should answer time exceeded: it is forged in the forwarding path of hop {}, {} (or by a box between it and hop {k})",
                b.ttl.0,
                addr(b)
            ),
            format!("; it is forged right after hop {}, {}", b.ttl.0, addr(b)),
        ),
        None => (
            format!("the RST answers the SYN already at TTL {k}: it is forged by the first device on the path (the gateway) or this host's own path"),
            "; it is forged at the first hop".to_string(),
        ),
    };
    if !f.summary.contains(&summary) {
        f.summary.push_str(&summary);
    }
    add(f, EvidenceItem { kind: "reset-hop".into(), text, data: json!({ "rst": rst, "after": before }) });
    if let Some(b) = before {
        f.remediation.insert(
            0,
            format!(
                "Check the firewall/IPS of {} (hop {}) for a rule that rejects TCP/{} with a reset on forwarded traffic.",
                addr(b),
                b.ttl.0,
                t.port
            ),
        );
    }
}

/// The connect timed out, but a router answers the probes' SYN (the same packet) with an
/// ICMP unreachable: that router refuses the connection, named as its hop.
fn rejected_on_path(p: &ConnectProbe, t: &PathTrace) -> Option<Finding> {
    let u = t.first_terminal()?;
    let HopAnswer::Unreachable { .. } = u.answer else { return None };
    let from = u.address.filter(|a| *a != p.address)?;
    let mut f = Finding::critical(
        Cause::HostUnreachable,
        format!(
            "the connect to {}:{} got no answer within {}, but the path probes' SYNs to it are answered {} by {from}",
            p.address, p.port, p.deadline_us, u.answer
        ),
    );
    unreachable_hop(&mut f, t, u);
    f = f.fix(format!("Ask whoever runs {from} which rule rejects traffic to {}:{}.", p.address, p.port));
    Some(f)
}

/// A router's ICMP unreachable, attributed to the hop that sent it.
fn unreachable_hop(f: &mut Finding, t: &PathTrace, u: &Hop) {
    let Some(from) = u.address else { return };
    let place = t.hop_of(&from).filter(|h| h.ttl <= u.ttl);
    let Some(h) = place else { return };
    let text = if h.ttl == u.ttl {
        format!("{from} answers the SYN sent with TTL {} with {}: it is hop {} of the path", u.ttl.0, u.answer, h.ttl.0)
    } else {
        format!(
            "{from} is hop {} (it answers TTL {} with time exceeded) and answers the SYN sent with TTL {} with {}: the reject is in hop {}'s forwarding path",
            h.ttl.0, h.ttl.0, u.ttl.0, u.answer, h.ttl.0
        )
    };
    let summary = match u.answer {
        HopAnswer::Unreachable { reason, .. } => {
            format!("; {from}, hop {} of the path, answers {}", h.ttl.0, reason.as_str())
        }
        _ => format!("; {from} is hop {} of the path", h.ttl.0),
    };
    if !f.summary.contains(&summary) {
        f.summary.push_str(&summary);
    }
    add(f, EvidenceItem { kind: "unreachable-hop".into(), text, data: json!({ "hop": h, "answer": u }) });
}

#[cfg(test)]
mod tests {
    use crate::{diagnose, Cause};
    use conndoc_facts::path::{Hop, HopAnswer, PathFacts, PathTrace, PathTrigger};
    use conndoc_facts::{Evidence, Micros, Port, Ttl};
    use std::net::IpAddr;

    fn hop(ttl: u8, a: Option<&str>, answer: HopAnswer) -> Hop {
        Hop {
            ttl: Ttl(ttl),
            address: a.map(|a| a.parse().unwrap()),
            answer,
            rtt_us: a.map(|_| Micros(40)),
            reply_ttl: a.map(|_| Ttl(65 - ttl)),
        }
    }

    /// A recorded connect-timeout evidence file with a path trace put in.
    fn timeout_with(hops: Vec<Hop>) -> Evidence {
        let mut ev: Evidence =
            serde_json::from_str(include_str!("../../tests/evidence/client-timeout-drop.json")).unwrap();
        let target: IpAddr = ev.probes[0].address;
        ev.path = Some(PathFacts {
            traces: vec![PathTrace {
                target,
                port: Port::new(7000).unwrap(),
                trigger: PathTrigger::ConnectTimeout,
                max_hops: 30,
                hops,
                elapsed_us: Micros(500_000),
            }],
            connects_ended: Vec::new(),
        });
        ev
    }

    #[test]
    fn silence_after_hop_two_is_a_path_drop_naming_it() {
        let mut hops = vec![
            hop(1, Some("10.78.0.254"), HopAnswer::TimeExceeded),
            hop(2, Some("10.78.1.2"), HopAnswer::TimeExceeded),
        ];
        hops.extend((3..=30).map(|t| hop(t, None, HopAnswer::Nothing)));
        let r = diagnose(&timeout_with(hops));
        assert_eq!(r.verdict.cause, Cause::PathDrop, "{:#?}", r.findings);
        let f = r.finding(Cause::PathDrop).unwrap();
        assert!(f.summary.contains("lost after hop 2, 10.78.1.2"), "{}", f.summary);
        let texts: Vec<&str> = f.evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(texts.iter().any(|t| t.contains("3-30 nothing")), "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("forwarding path")), "{texts:?}");
        // connect-timeout stays, as its consequence.
        assert!(r.finding(Cause::ConnectTimeout).is_some());
        assert!(!texts.iter().any(|t| t.contains("given up")), "{texts:?}");
    }

    #[test]
    fn a_timeout_whose_probes_a_router_rejects_names_that_hop() {
        let ev = timeout_with(vec![
            hop(1, Some("10.78.0.254"), HopAnswer::TimeExceeded),
            hop(2, Some("10.78.1.2"), HopAnswer::TimeExceeded),
            hop(
                3,
                Some("10.78.1.2"),
                HopAnswer::Unreachable {
                    reason: conndoc_facts::path::UnreachableKind::AdminProhibited,
                    icmp_type: 3,
                    code: 13,
                },
            ),
        ]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::HostUnreachable, "{:#?}", r.findings);
        let f = r.finding(Cause::HostUnreachable).unwrap();
        assert!(
            f.summary.contains("10.78.1.2, hop 2 of the path, answers administratively prohibited"),
            "{}",
            f.summary
        );
        assert!(
            f.evidence.iter().any(|e| e.text.contains("the reject is in hop 2's forwarding path")),
            "{:#?}",
            f.evidence
        );
    }

    #[test]
    fn a_connect_the_path_stage_ended_says_so() {
        let mut hops = vec![hop(1, Some("10.78.0.254"), HopAnswer::TimeExceeded)];
        hops.extend((2..=30).map(|t| hop(t, None, HopAnswer::Nothing)));
        let mut ev = timeout_with(hops);
        let p = &ev.probes[0];
        let ended = conndoc_facts::path::ConnectEnded {
            address: p.address,
            after_us: Micros(612_000),
            deadline_us: p.deadline_us,
        };
        ev.path.as_mut().unwrap().connects_ended.push(ended);
        let r = diagnose(&ev);
        let f = r.finding(Cause::PathDrop).unwrap();
        let e = f.evidence.iter().find(|e| e.kind == "connect-ended").expect("connect-ended evidence");
        assert!(e.text.contains("given up after 612.0ms of its 1.50s deadline"), "{}", e.text);
    }

    #[test]
    fn no_answering_hop_or_an_answering_target_is_no_path_drop() {
        let silent: Vec<Hop> = (1..=30).map(|t| hop(t, None, HopAnswer::Nothing)).collect();
        let r = diagnose(&timeout_with(silent));
        assert_eq!(r.verdict.cause, Cause::ConnectTimeout);
        let f = r.finding(Cause::ConnectTimeout).unwrap();
        assert!(f.evidence.iter().any(|e| e.kind == "path"), "the hop list is still shown");

        let ev = timeout_with(vec![hop(1, Some("10.78.0.254"), HopAnswer::TimeExceeded)]);
        let target = ev.probes[0].address.to_string();
        let reached = timeout_with(vec![
            hop(1, Some("10.78.0.254"), HopAnswer::TimeExceeded),
            hop(2, Some(&target), HopAnswer::SynAck),
        ]);
        assert_ne!(diagnose(&reached).verdict.cause, Cause::PathDrop);
    }
}
