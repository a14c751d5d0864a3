//! Found-namespace rules (issues 10, 12): the dialled address belongs to another network
//! namespace on this machine (a container, a pod, a lab namespace), which conndoc found by
//! itself and inspected with the dialled port. Its socket table explains the failure; the
//! client's "check on the server" advice does not apply (this machine is the server).
//! Every sentence names that namespace, container or pod — never "this host". Pure: reads
//! `ev.found` and the probes.

use crate::rules::backend::{self, with_connect};
use crate::{Cause, Finding, Findings};
use conndoc_facts::host::{HostFacts, Listener};
use conndoc_facts::nat::FoundFacts;
use conndoc_facts::{ConnectKind, ConnectProbe, Evidence};
use serde_json::json;

pub fn run(ev: &Evidence, out: &mut Findings) {
    let Some(fd) = &ev.found else { return };
    let Some(h) = &fd.host else { return };
    // The namespace forwards the port (DNAT/redirect): the backend's rules say why.
    if crate::rules::backend::inspected(ev).is_some() {
        return;
    }
    let protocol_failed = ev.protocol.as_ref().is_some_and(|pf| pf.probes.iter().any(|p| p.error.is_some()));
    // The socket table explains a refusal (or a close, or a failed exchange), not a drop.
    let to_it: Vec<&ConnectProbe> = ev.probes.iter().filter(|p| p.address == fd.address.ip()).collect();
    let p = to_it.iter().copied().find(|p| p.kind == ConnectKind::Refused || p.peer_close.is_some());
    if p.is_none() && !(protocol_failed && to_it.iter().any(|p| p.ok())) {
        return;
    }
    if let Some(f) = explain(fd, h, p) {
        // "Nothing accepts … check on the server" was the client's guess; this is the server.
        if f.cause != Cause::NoListener {
            out.remove(Cause::NoListener);
        } else if let Some(old) = out.remove(Cause::NoListener) {
            let mut f = f;
            for e in old.evidence {
                if !f.evidence.contains(&e) {
                    f.evidence.push(e);
                }
            }
            out.push(f);
            return;
        }
        out.push(f);
    }
}

/// The evidence item every finding here carries: which namespace, and how it was found.
pub(crate) fn found_item(f: Finding, fd: &FoundFacts) -> Finding {
    let Some(n) = &fd.netns else { return f };
    let by = if n.entered_by.is_empty() { String::new() } else { format!(", entered by {}", n.entered_by) };
    let who = match &fd.owner {
        Some(o) if o.container.is_some() => format!(
            "; container {} ({})",
            o.container.as_deref().unwrap_or_default(),
            match o.source.as_deref() {
                Some("docker") => "named by the Docker Engine API".to_string(),
                Some(s) => format!("id from {s}"),
                None => "id known".to_string(),
            }
        ),
        _ => String::new(),
    };
    // No search: the container engine placed the address in that container's namespace.
    let how = if fd.searched == 0 && !n.pids.is_empty() {
        "the container engine's record of the container".to_string()
    } else {
        format!(
            "found by conndoc among {} namespace(s) searched in {:.1} ms",
            fd.searched.max(1),
            fd.search_us as f64 / 1000.0
        )
    };
    let many = conndoc_facts::nat::owners_note(&fd.owners, Some(n), fd.address.ip(), fd.owner_choice.as_deref());
    f.evidence(
        "found-netns",
        format!(
            "{} is not an address of conndoc's network namespace: {} owns it ({how}{by}{who}){many}",
            fd.address.ip(),
            fd.describe(),
        ),
        json!({ "netns": n, "owner": fd.owner, "searched": fd.searched, "search_us": fd.search_us, "owners": fd.owners, "owner_choice": fd.owner_choice }),
    )
}

/// A listener seen inside the found namespace (the backend rules' item, worded "inside …").
fn listener_item(f: Finding, inside: &str, l: &Listener) -> Finding {
    backend::listener_item(f, &format!("inside {inside}"), l)
}

/// The flag that enters the found namespace again (for `conndoc listeners`).
fn netns_flag(fd: &FoundFacts) -> String {
    let Some(n) = &fd.netns else { return String::new() };
    match (n.paths.first(), n.pids.first()) {
        (Some(p), _) => format!(" --netns {p}"),
        (None, Some(pid)) => format!(" --netns-pid {pid}"),
        _ => String::new(),
    }
}

fn explain(fd: &FoundFacts, h: &HostFacts, p: Option<&ConnectProbe>) -> Option<Finding> {
    let (to, port) = (fd.address.ip(), fd.address.port());
    let wher = fd.describe();
    let inside = fd.inside();
    let ls = &h.listeners;
    let pod = fd.netns.as_ref().and_then(|n| n.cni_name()).is_some();
    let container = fd.owner.as_ref().and_then(|o| o.container.clone());
    if !ls.is_empty() && !ls.iter().any(|l| l.accepts(to)) && ls.iter().all(Listener::loopback_only) {
        if fd.is_container() {
            return None; // a container's or pod's: one rule, one evidence shape (rules/loopback.rs)
        }
        let cause = Cause::BoundToLoopback;
        let shown: Vec<String> = ls.iter().map(|l| l.local.to_string()).collect();
        let mut f = Finding::critical(
            cause,
            format!(
                "{to}:{port} belongs to {wher}, where the service listens only on loopback ({}): connections to {to} are refused there",
                shown.join(", ")
            ),
        );
        f = found_item(f, fd);
        for l in ls {
            f = listener_item(f, inside, l);
        }
        f = f.evidence(
            "client-address",
            format!(
                "the client dials {to}:{port}{}, which is not loopback inside {inside}",
                p.and_then(|p| p.local).map(|l| format!(" from {}", l.ip())).unwrap_or_default()
            ),
            json!({ "dialled": fd.address, "from": p.and_then(|p| p.local) }),
        );
        f = with_connect(f, p);
        f = f.fix(format!(
            "Make the service inside {wher} listen on {to}:{port} or on all addresses (0.0.0.0 / [::]) instead of loopback: connections to it arrive on {to}, never on 127.0.0.1."
        ));
        return Some(f);
    }
    if !ls.is_empty() {
        return None; // something takes connections there; other rules say what else fails
    }
    let svc = h.expected.as_ref();
    let mut others: Vec<&Listener> = fd.other_listeners.iter().filter(|l| l.accepts(to)).collect();
    if let Some(s) = svc {
        others.retain(|l| l.process.as_ref().is_none_or(|p| s.running.iter().any(|r| r.pid == p.pid)));
    }
    if !others.is_empty() {
        let ports: Vec<String> = others.iter().map(|l| l.local.to_string()).collect();
        let mut f = Finding::critical(
            Cause::WrongPort,
            format!("{to} belongs to {wher}, which listens on {}, not on port {port}", ports.join(", ")),
        );
        f = found_item(f, fd);
        for l in &others {
            f = listener_item(f, inside, l);
        }
        f = f.evidence(
            "socket-table",
            format!("inside {inside}: no TCP listener on port {port}"),
            json!({ "port": port, "listeners": [] }),
        );
        f = with_connect(f, p);
        f = f.fix(format!(
            "Dial {to}:{} (where the service inside {wher} listens), or make it listen on port {port}.",
            others[0].port()
        ));
        return Some(f);
    }
    let not_running = svc.filter(|s| s.running.is_empty());
    let (cause, summary) = match not_running {
        Some(s) => (
            Cause::ProcessNotRunning,
            format!(
                "{to} belongs to {wher}, where {} is not running: nothing listens on port {port} inside {inside}",
                s.name
            ),
        ),
        None => (Cause::NoListener, format!("{to} belongs to {wher}, where nothing listens on port {port}")),
    };
    let mut f = Finding::critical(cause, summary);
    f = found_item(f, fd);
    f = f.evidence(
        "socket-table",
        format!("inside {inside}: no TCP listener on port {port} on any address (sock_diag in {wher})"),
        json!({ "port": port, "listeners": [], "inspected": h.inspected }),
    );
    if let Some(s) = not_running {
        f = f.evidence(
            "process-table",
            format!("no process named {} runs inside {inside}", s.name),
            json!({ "expected": s.name, "running": s.running }),
        );
    }
    f = with_connect(f, p);
    let again = netns_flag(fd);
    f = f.fix(format!(
        "Start the service inside {wher} on port {port}, or dial the port it really listens on (`conndoc listeners{again}` lists what listens inside {inside})."
    ));
    if let Some(c) = container.filter(|_| !pod) {
        f = f.fix(format!("`docker logs {c}` shows why its service is not listening."));
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose;
    use conndoc_facts::host::{ExpectedService, InspectScope, Inspected, ProcessInfo};
    use conndoc_facts::nat::{NetnsIdentity, NetnsOwner};
    use conndoc_facts::{Errno, Family, Micros, Port};

    fn listener(addr: &str) -> Listener {
        Listener { process: Some(crate::fixture::process("redis-server")), ..crate::fixture::listener(addr) }
    }

    fn evidence(netns_path: &str, owner: Option<&str>, ls: Vec<Listener>, others: Vec<Listener>) -> Evidence {
        let p = ConnectProbe {
            address: "172.17.0.2".parse().unwrap(),
            port: Port::new(6379).unwrap(),
            family: Family::Ipv4,
            outcome: ConnectKind::Refused.outcome(),
            kind: ConnectKind::Refused,
            errno: Some(Errno::from_raw(111)),
            elapsed_us: Micros(100),
            deadline_us: Micros(1_000_000),
            local: Some("172.17.0.1:40000".parse().unwrap()),
            syn_retransmits: None,
            peer_close: None,
        };
        let json = serde_json::json!({
            "schema": conndoc_facts::EVIDENCE_SCHEMA,
            "target": conndoc_facts::Target::parse("redis://172.17.0.2:6379").unwrap(),
            "options": { "timeout_us": 1_000_000 },
            "started_at": "2026-01-01T00:00:00Z",
            "elapsed_us": 1,
            "client": { "hostname": "c", "privileges": { "uid": 0, "cap_net_admin": true, "cap_net_raw": true, "cap_sys_admin": true, "cap_sys_ptrace": true } },
            "resolution": serde_json::to_value(conndoc_facts::Resolution::default()).unwrap(),
            "probes": [p],
        });
        let mut ev: Evidence = serde_json::from_value(json).expect("evidence");
        ev.resolution.literal = true;
        let running: Vec<ProcessInfo> = ls.iter().chain(&others).filter_map(|l| l.process.clone()).take(1).collect();
        let netns =
            NetnsIdentity { inode: 7, paths: vec![netns_path.into()], pids: vec![42], entered_by: netns_path.into() };
        ev.found = Some(FoundFacts {
            address: "172.17.0.2:6379".parse().unwrap(),
            netns: Some(netns),
            owner: owner.map(|c| NetnsOwner {
                container: Some(c.into()),
                container_id: None,
                source: Some("docker".into()),
            }),
            host: Some(HostFacts {
                inspected: Some(Inspected {
                    scope: InspectScope::Found,
                    netns: Some(netns_path.into()),
                    netns_inode: Some(7),
                    ..Default::default()
                }),
                listeners: ls,
                expected: Some(ExpectedService {
                    name: "redis-server".into(),
                    running,
                    elsewhere: vec![],
                    listeners: vec![],
                }),
                ..Default::default()
            }),
            not_inspected: None,
            owners: Vec::new(),
            owner_choice: None,
            other_listeners: others,
            searched: 5,
            search_us: 1200,
        });
        ev
    }

    fn texts(f: &Finding) -> String {
        let mut t: Vec<&str> = f.evidence.iter().map(|e| e.text.as_str()).collect();
        t.push(&f.summary);
        t.extend(f.remediation.iter().map(String::as_str));
        t.join("\n")
    }

    #[test]
    fn several_owners_are_all_listed_and_the_inspected_one_named() {
        let mut ev = evidence("/var/run/docker/netns/ab12", Some("cache"), vec![listener("127.0.0.1:6379")], vec![]);
        let fd = ev.found.as_mut().unwrap();
        let other = NetnsIdentity { inode: 9, paths: vec!["/run/netns/other".into()], ..Default::default() };
        fd.owners = vec![fd.netns.clone().unwrap(), other];
        fd.owner_choice = Some("its interface has 02:42:ac:11:00:02".into());
        let r = diagnose(&ev);
        let t = texts(r.finding(Cause::ContainerBoundToLoopback).unwrap());
        assert!(
            t.contains(
                "; 2 network namespaces own 172.17.0.2: network namespace net:[7] (/var/run/docker/netns/ab12, pid 42), network namespace net:[9] (/run/netns/other) — net:[7] was inspected: its interface has 02:42:ac:11:00:02"
            ),
            "{t}"
        );
        // One owner: nothing added.
        let ev = evidence("/var/run/docker/netns/ab12", Some("cache"), vec![listener("127.0.0.1:6379")], vec![]);
        let t = texts(&r_finding(&ev));
        assert!(!t.contains("network namespaces own"), "{t}");
    }

    fn r_finding(ev: &Evidence) -> Finding {
        diagnose(ev).finding(Cause::ContainerBoundToLoopback).unwrap().clone()
    }

    #[test]
    fn loopback_in_a_found_container_names_the_container() {
        let ev = evidence("/var/run/docker/netns/ab12", Some("cache"), vec![listener("127.0.0.1:6379")], vec![]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback);
        let t = texts(r.finding(Cause::ContainerBoundToLoopback).unwrap());
        assert!(t.contains("belongs to container cache (network namespace net:[7]"), "{t}");
        assert!(t.contains("among 5 namespace(s) searched in 1.2 ms"), "{t}");
        assert!(t.contains("inside the container: listening on 127.0.0.1:6379"), "{t}");
        assert!(!t.contains("this host"), "{t}");
        // The one evidence shape of container-bound-to-loopback (rules/loopback.rs).
        let kinds: Vec<&str> =
            r.finding(Cause::ContainerBoundToLoopback).unwrap().evidence.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["translation", "found-netns", "container-listener", "connect"]);
        // The client's "check on the server" guess is gone: this machine is the server.
        assert!(r.finding(Cause::NoListener).is_none());
        // A plain namespace is no container: bound-to-loopback.
        let ev = evidence("/run/netns/lab1", None, vec![listener("127.0.0.1:6379")], vec![]);
        assert_eq!(diagnose(&ev).verdict.cause, Cause::BoundToLoopback);
    }

    #[test]
    fn pod_namespace_wrong_port_and_not_running() {
        let ev = evidence("/run/netns/cni-1f2e", None, vec![], vec![listener("0.0.0.0:6380")]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::WrongPort);
        let t = texts(r.finding(Cause::WrongPort).unwrap());
        assert!(t.contains("belongs to pod 172.17.0.2 (netns cni-1f2e, net:[7])"), "{t}");
        assert!(t.contains("inside the pod: listening on 0.0.0.0:6380"), "{t}");
        // Nothing listens and no redis-server runs there.
        let mut ev = evidence("/run/netns/x", None, vec![], vec![]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::ProcessNotRunning);
        let t = texts(r.finding(Cause::ProcessNotRunning).unwrap());
        assert!(t.contains("where redis-server is not running"), "{t}");
        assert!(t.contains("conndoc listeners --netns /run/netns/x"), "{t}");
        // A drop is no socket table's business: the timeout stands.
        let mut dropped = ev.clone();
        dropped.probes[0].kind = conndoc_facts::ConnectKind::Timeout;
        dropped.probes[0].outcome = conndoc_facts::ConnectKind::Timeout.outcome();
        let r = diagnose(&dropped);
        assert!(r.finding(Cause::ProcessNotRunning).is_none() && r.finding(Cause::NoListener).is_none());
        // Not inspected (no owner found): the client's own finding stands.
        ev.found.as_mut().unwrap().host = None;
        assert_eq!(diagnose(&ev).verdict.cause, Cause::NoListener);
    }
}
