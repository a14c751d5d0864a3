//! Backend rules (issue 10): the dialled port is forwarded (DNAT, redirect, userland proxy)
//! and the backend was inspected in its own namespace. What the backend's socket table
//! says there explains the failure; the front host's own table (no listener, or only the
//! proxy) does not. Also `accepted-then-closed`. Pure: reads `ev.backend` and the probes.

use crate::rules::client::connect_item;
use crate::{Cause, Finding, Findings};
use conndoc_facts::container::IdentitySource;
use conndoc_facts::host::{HostFacts, Listener};
use conndoc_facts::nat::{BackendFacts, TranslationKind};
use conndoc_facts::{ConnectProbe, Evidence, PeerCloseKind};
use serde_json::json;

/// The backend was inspected: the front host's absence rules step aside.
pub fn inspected(ev: &Evidence) -> Option<(&BackendFacts, &HostFacts)> {
    let b = ev.backend.as_ref()?;
    if engine_disowns(ev, b) {
        return None;
    }
    Some((b, b.host.as_ref()?))
}

/// The container engine places the backend address in another namespace than the one
/// inspected. Several namespaces on one machine can own the same address (every Docker
/// engine's first container is 172.17.0.2, and so are kind nodes'), so the namespace found
/// by address may be the wrong one: its socket table then says nothing about this backend,
/// and the engine's own view (the container rules) decides.
pub(crate) fn engine_disowns(ev: &Evidence, b: &BackendFacts) -> bool {
    let (Some(cf), Some(n)) = (&ev.containers, &b.netns) else { return false };
    let to = b.translation.to.ip();
    cf.containers
        .iter()
        .filter(|c| c.source == IdentitySource::EngineApi && c.addresses.contains(&to))
        .any(|c| c.netns_inode.is_some_and(|i| i != n.inode))
}

pub fn run(ev: &Evidence, out: &mut Findings) {
    let failed: Vec<&ConnectProbe> = ev.probes.iter().filter(|p| !p.ok()).collect();
    let protocol_failed = ev.protocol.as_ref().is_some_and(|pf| pf.probes.iter().any(|p| p.error.is_some()));
    if let Some((b, bh)) = inspected(ev) {
        if !failed.is_empty() || protocol_failed {
            backend(ev, b, bh, failed.first().copied(), out);
        }
    }
    for p in ev.probes.iter().filter(|p| p.peer_close.is_some()) {
        out.push(accepted_then_closed(ev, p));
    }
}

pub(crate) fn translation_item(f: Finding, b: &BackendFacts) -> Finding {
    let t = &b.translation;
    let text = match t.kind {
        TranslationKind::Proxy => format!("{} forwards {} → {}", proxy_name(b), t.from, t.to),
        _ => t.describe(),
    };
    let text = match (&t.proxy, t.kind) {
        (Some(p), TranslationKind::Proxy) => format!("{text} (pid {}: {})", p.pid, p.cmdline),
        _ => text,
    };
    let f = f.evidence("translation", text, json!(t));
    match &b.also {
        Some(a) => {
            let by = a.proxy.as_ref().map(|p| format!("{} pid {}", p.comm, p.pid)).unwrap_or_else(|| "a proxy".into());
            f.evidence(
                "translation",
                format!(
                    "{by} also holds {} → {}, but the rule above catches this connection first; only connections the rule skips (to 127.0.0.1) go through the proxy",
                    a.from, a.to
                ),
                json!(a),
            )
        }
        None => f,
    }
}

fn proxy_name(b: &BackendFacts) -> String {
    b.translation.proxy.as_ref().map(|p| p.comm.clone()).unwrap_or_else(|| "a proxy".into())
}

/// Where the backend runs, for a person: the namespace and a process in it.
pub(crate) fn where_backend(b: &BackendFacts) -> String {
    match &b.netns {
        Some(n) if !n.paths.is_empty() || !n.pids.is_empty() => n.describe(),
        Some(n) if n.inode != 0 => n.describe(),
        _ => "the same network namespace".into(),
    }
}

pub(crate) fn netns_item(f: Finding, b: &BackendFacts) -> Finding {
    match &b.netns {
        // No search: the container engine placed the address in that namespace.
        Some(n) if b.searched == 0 && !n.pids.is_empty() => f.evidence(
            "backend-netns",
            format!(
                "{} owns {} (the container engine's record of the container){}",
                n.describe(),
                b.translation.to.ip(),
                conndoc_facts::nat::owners_note(&b.owners, Some(n), b.translation.to.ip(), b.owner_choice.as_deref())
            ),
            json!(n),
        ),
        Some(n) => f.evidence(
            "backend-netns",
            format!(
                "{} owns {} (found among {} namespace(s) searched){}",
                n.describe(),
                b.translation.to.ip(),
                b.searched.max(1),
                conndoc_facts::nat::owners_note(&b.owners, Some(n), b.translation.to.ip(), b.owner_choice.as_deref())
            ),
            json!(n),
        ),
        None => f,
    }
}

pub(crate) fn listener_item(f: Finding, inside: &str, l: &Listener) -> Finding {
    let owner = l.process.as_ref().map(|p| format!(" — pid {} ({}): {}", p.pid, p.comm, p.cmdline)).unwrap_or_default();
    f.evidence("listener", format!("{inside}: listening on {}{owner}", l.local), json!(l))
}

pub(crate) fn with_connect(f: Finding, p: Option<&ConnectProbe>) -> Finding {
    match p {
        Some(p) => {
            let (text, data) = connect_item(p);
            f.evidence("connect", text, data)
        }
        None => f,
    }
}

/// The backend explains the refusal: the client's "nothing accepts connections on the
/// dialled address" (whose fix is `ss` on a front that only forwards, or on a ClusterIP
/// that is no host) steps aside.
fn push_backend(out: &mut Findings, f: Finding) {
    out.remove(Cause::NoListener);
    out.push(f);
}

fn backend(ev: &Evidence, b: &BackendFacts, bh: &HostFacts, p: Option<&ConnectProbe>, out: &mut Findings) {
    let t = &b.translation;
    let (to, port) = (t.to.ip(), t.to.port());
    let ls = &bh.listeners;
    let dialled =
        format!("{}:{}", ev.probes.first().map(|p| p.address.to_string()).unwrap_or_default(), ev.target.port);
    let front_ns = ev.host.as_ref().and_then(|h| h.inspected.as_ref()).and_then(|i| i.netns_inode);
    let other_ns = b.netns.as_ref().is_some_and(|n| n.inode != 0 && Some(n.inode) != front_ns);
    let wher = if other_ns { where_backend(b) } else { "the same network namespace".to_string() };
    // A Kubernetes Service's endpoint: the words name the Service and the pod.
    let pod = crate::rules::kube::pod_frame(ev, b);
    // A DNAT that keeps the address (`--to-destination :P`) lands in the front's own
    // namespace: "inside the backend" would send the reader looking for another host.
    let inside = match (&pod, other_ns) {
        (Some(_), _) => "inside the pod",
        (None, true) => "inside the backend",
        (None, false) => "in the same namespace",
    };
    if !ls.is_empty() && !ls.iter().any(|l| l.accepts(to)) && ls.iter().all(Listener::loopback_only) {
        if crate::rules::loopback::backend_elsewhere(ev, b) {
            return; // `container-bound-to-loopback`: one rule, rules/loopback.rs
        }
        let shown: Vec<String> = ls.iter().map(|l| l.local.to_string()).collect();
        let summary = match &pod {
            Some(k) => format!(
                "{} sends its connections to {} at targetPort {port}, where the pod's process listens only on loopback ({}): connections from the Service arrive on {to} and are refused",
                k.service,
                k.pod,
                shown.join(", ")
            ),
            None => format!(
                "{dialled} is forwarded to {} ({}), where the service listens only on loopback ({}): the forwarded connections are refused there",
                t.to,
                wher,
                shown.join(", ")
            ),
        };
        let mut f = Finding::critical(Cause::BoundToLoopback, summary);
        f = translation_item(f, b);
        f = netns_item(f, b);
        for l in ls {
            f = listener_item(f, inside, l);
        }
        f = with_connect(f, p);
        if let Some(k) = &pod {
            f = f.fix(format!(
                "Make the container of {} listen on all addresses (0.0.0.0 / [::]) or on its pod IP {to}, port {port}: traffic of Service {} arrives on the pod IP, never on 127.0.0.1 (find the pod: {}).",
                k.pod, k.name, k.find_pod
            ));
        }
        f = f
            .fix(format!(
                "Make the service inside {wher} listen on {to}:{port} or on all addresses (0.0.0.0 / [::]) instead of loopback; forwarded connections arrive on {to}, never on 127.0.0.1."
            ))
            .fix("For redis in a container: `--bind 0.0.0.0` (or `bind 0.0.0.0` in its redis.conf), and set a password before exposing it.");
        push_backend(out, f);
        return;
    }
    if !ls.is_empty() {
        return; // something takes the forwarded connections; other rules say what else fails
    }
    // Nothing listens on the backend port: on another port, not running, or nothing at all.
    let svc = bh.expected.as_ref();
    let mut others: Vec<&Listener> =
        b.other_listeners.iter().filter(|l| !l.loopback_only() || to.is_loopback()).collect();
    if let Some(s) = svc {
        others.retain(|l| l.process.as_ref().is_none_or(|p| s.running.iter().any(|r| r.pid == p.pid)));
        if s.running.is_empty() && !others.is_empty() && others.iter().all(|l| l.process.is_some()) {
            others.clear();
        }
    }
    if !others.is_empty() {
        let ports: Vec<String> = others.iter().map(|l| l.local.to_string()).collect();
        let summary = match &pod {
            Some(k) => format!(
                "{} sends its connections to {} at targetPort {port}, but the pod listens on {}, not on {port}",
                k.service,
                k.pod,
                ports.join(", ")
            ),
            None => format!(
                "{dialled} is forwarded to {} ({}), but the service there listens on {}, not on port {port}",
                t.to,
                wher,
                ports.join(", ")
            ),
        };
        let mut f = Finding::critical(Cause::WrongPort, summary);
        f = translation_item(f, b);
        f = netns_item(f, b);
        for l in &others {
            f = listener_item(f, inside, l);
        }
        f = f.evidence(
            "socket-table",
            format!("{inside}: no TCP listener on port {port}"),
            json!({ "port": port, "listeners": [] }),
        );
        f = with_connect(f, p);
        f = match &pod {
            Some(k) => f.fix(format!(
                "Set the targetPort of Service {} port {:?} to {} (`kubectl -n {} edit service {}`), or make the pod's container listen on {port} (its containerPort); find the pod: {}.",
                k.name,
                k.port_name,
                others[0].port(),
                k.namespace,
                k.name,
                k.find_pod
            )),
            None => f.fix(format!(
                "Make the forwarding point at port {} (the {} maps {} → {}), or make the service listen on {port}.",
                others[0].port(),
                t.kind.as_str(),
                t.from,
                t.to
            )),
        };
        push_backend(out, f);
        return;
    }
    let not_running = svc.is_some_and(|s| s.running.is_empty());
    let (cause, summary) = match svc {
        Some(s) if not_running && pod.is_some() => (
            Cause::ProcessNotRunning,
            format!(
                "{} sends its connections to {} at targetPort {port}, where {} is not running: nothing listens on port {port} in the pod",
                pod.as_ref().map(|k| k.service.as_str()).unwrap_or_default(),
                pod.as_ref().map(|k| k.pod.as_str()).unwrap_or_default(),
                s.name
            ),
        ),
        _ if pod.is_some() => (
            Cause::NoListener,
            format!(
                "{} sends its connections to {} at targetPort {port}, where nothing listens",
                pod.as_ref().map(|k| k.service.as_str()).unwrap_or_default(),
                pod.as_ref().map(|k| k.pod.as_str()).unwrap_or_default(),
            ),
        ),
        Some(s) if not_running => (
            Cause::ProcessNotRunning,
            format!(
                "{dialled} is forwarded to {} ({}), where {} is not running: nothing listens on port {port} there",
                t.to, wher, s.name
            ),
        ),
        _ => (
            Cause::NoListener,
            format!("{dialled} is forwarded to {} ({}), where nothing listens on port {port}", t.to, wher),
        ),
    };
    let mut f = Finding::critical(cause, summary);
    f = translation_item(f, b);
    f = netns_item(f, b);
    f = f.evidence(
        "socket-table",
        format!("{inside}: no TCP listener on port {port} on any address (sock_diag in {wher})"),
        json!({ "port": port, "listeners": [], "inspected": bh.inspected }),
    );
    if let Some(s) = svc.filter(|_| not_running) {
        f = f.evidence(
            "process-table",
            format!(
                "no process named {} runs in the {}'s namespace",
                s.name,
                if pod.is_some() { "pod" } else { "backend" }
            ),
            json!({ "expected": s.name, "running": s.running }),
        );
    }
    f = with_connect(f, p);
    if let Some(k) = &pod {
        f = f.fix(format!(
            "Check the container of {} that should serve port {port}: find the pod ({}), then `kubectl -n {} describe pod POD` (restarts, OOMKilled, probes) and `kubectl -n {} logs POD --previous`; the Service's targetPort must be the port the container listens on.",
            k.pod, k.find_pod, k.namespace, k.namespace
        ));
    }
    f = f.fix(format!(
        "Start the backend service inside {wher} on port {port}, or point the {} at where it really listens.",
        match t.kind {
            TranslationKind::Proxy => format!("{} (its -container-port)", proxy_name(b)),
            _ => "DNAT rule".to_string(),
        }
    ));
    push_backend(out, f);
}

fn accepted_then_closed(ev: &Evidence, p: &ConnectProbe) -> Finding {
    let pc = p.peer_close.unwrap_or(conndoc_facts::PeerClose {
        kind: PeerCloseKind::Eof,
        after_us: p.elapsed_us,
        watched_us: conndoc_facts::Micros(0),
    });
    let how = match pc.kind {
        PeerCloseKind::Eof => "closed it (FIN)",
        PeerCloseKind::Reset => "reset it (RST)",
    };
    let mut f = Finding::critical(
        Cause::AcceptedThenClosed,
        format!(
            "{}:{} accepts the TCP handshake, then the peer {how} after {} without sending anything: nothing serves the connection",
            p.address, p.port, pc.after_us
        ),
    )
    .evidence(
        "peer-close",
        format!(
            "connect {}:{} → connected, then the peer {how} {} after the connect (watched {})",
            p.address, p.port, pc.after_us, pc.watched_us
        ),
        json!({ "probe": p, "peer_close": pc }),
    );
    if let Some(b) = &ev.backend {
        f = translation_item(f, b);
        if let Some(why) = &b.not_inspected {
            f = f.evidence(
                "backend",
                format!("the backend {} was not inspected: {why}", b.translation.to),
                json!(b.not_inspected),
            );
        }
        f = f.fix(format!(
            "The {} accepts on behalf of {}, which does not take the connection: check that the backend runs and listens on {}.",
            b.translation.kind.as_str(),
            b.translation.to,
            b.translation.to
        ));
    } else {
        f = f.fix("Something accepts on the port but drops every connection at once: a proxy or load balancer whose backend is down, or a service refusing this client; check its log.");
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose, fixture};
    use conndoc_facts::host::{InspectScope, Inspected};
    use conndoc_facts::nat::{NetnsIdentity, ProxyRef, Translation};
    use conndoc_facts::{ConnectKind, Micros, PeerClose};

    fn probe(kind: ConnectKind) -> ConnectProbe {
        ConnectProbe { local: Some("10.0.0.1:40000".parse().unwrap()), ..fixture::connect("10.0.0.2", 16379, kind) }
    }

    fn listener(addr: &str, comm: &str) -> Listener {
        Listener { inode: 9, process: Some(fixture::process(comm)), ..fixture::listener(addr) }
    }

    fn evidence(p: ConnectProbe, backend_listeners: Vec<Listener>, others: Vec<Listener>) -> Evidence {
        let mut ev = fixture::evidence("tcp://10.0.0.2:16379");
        ev.probes = vec![p];
        ev.host = Some(HostFacts {
            inspected: Some(Inspected {
                scope: InspectScope::Local,
                netns: None,
                netns_inode: Some(1),
                ..Default::default()
            }),
            listeners: vec![listener("0.0.0.0:16379", "docker-proxy")],
            ..Default::default()
        });
        ev.backend = Some(BackendFacts {
            also: None,
            translation: Translation {
                kind: TranslationKind::Proxy,
                from: "0.0.0.0:16379".parse().unwrap(),
                to: "172.17.0.2:6379".parse().unwrap(),
                hook: None,
                rule: None,
                proxy: Some(ProxyRef {
                    pid: 42,
                    comm: "docker-proxy".into(),
                    cmdline: "docker-proxy -proto tcp".into(),
                }),
                choices: Vec::new(),
                choices_total: 0,
                element: None,
                picked: None,
            },
            netns: Some(NetnsIdentity {
                inode: 7,
                paths: vec!["/run/netns/c1".into()],
                pids: vec![77],
                entered_by: "/run/netns/c1".into(),
            }),
            host: Some(HostFacts {
                inspected: Some(Inspected {
                    scope: InspectScope::Found,
                    netns: Some("/run/netns/c1".into()),
                    netns_inode: Some(7),
                    ..Default::default()
                }),
                listeners: backend_listeners,
                ..Default::default()
            }),
            not_inspected: None,
            owners: Vec::new(),
            owner_choice: None,
            other_listeners: others,
            searched: 3,
            search_us: 100,
        });
        ev
    }

    fn closed() -> ConnectProbe {
        let mut p = probe(ConnectKind::Connected);
        p.peer_close = Some(PeerClose { kind: PeerCloseKind::Eof, after_us: Micros(900), watched_us: Micros(800) });
        p
    }

    #[test]
    fn loopback_backend_behind_a_proxy() {
        let ev = evidence(closed(), vec![listener("127.0.0.1:6379", "redis-server")], vec![]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback);
        let f = r.finding(Cause::ContainerBoundToLoopback).unwrap();
        let text: Vec<&str> = f.evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(text.iter().any(|t| t.contains("docker-proxy forwards 0.0.0.0:16379 → 172.17.0.2:6379")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("127.0.0.1:6379") && t.contains("redis-server")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("/run/netns/c1")), "{text:?}");
        // The closed connection is a failure of its own, outranked by the backend's cause.
        assert!(r.finding(Cause::AcceptedThenClosed).is_some());
    }

    #[test]
    fn backend_on_another_port_and_absent() {
        let ev = evidence(closed(), vec![], vec![listener("0.0.0.0:6380", "redis-server")]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::WrongPort);
        let f = r.finding(Cause::WrongPort).unwrap();
        assert!(f.summary.contains("0.0.0.0:6380") && f.summary.contains("not on port 6379"), "{}", f.summary);
        let ev = evidence(closed(), vec![], vec![]);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::NoListener);
        assert!(r.finding(Cause::NoListener).unwrap().summary.contains("forwarded to 172.17.0.2:6379"));
        // Nothing known of a backend: the close itself is the verdict, never ok.
        let mut ev = evidence(closed(), vec![], vec![]);
        ev.backend = None;
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::AcceptedThenClosed);
        assert_ne!(r.exit_status(), 0);
    }

    #[test]
    fn netns_hint_takes_the_pid_flag() {
        assert_eq!(crate::rules::client::netns_flag("pid:42"), " --netns-pid 42");
        assert_eq!(crate::rules::client::netns_flag("lab1"), " --netns lab1");
    }
}
