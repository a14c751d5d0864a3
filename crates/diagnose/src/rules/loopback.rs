//! `container-bound-to-loopback`, one rule: the service inside a container's (a pod's,
//! another namespace's) network namespace listens only on loopback, so the connections
//! that reach it there — forwarded by a DNAT rule or a proxy, published by the engine, or
//! dialled at the container's own address — are refused.
//!
//! Three gatherings can prove it, and often two at once for the same fault: the backend a
//! forward was followed to (`ev.backend`), the namespace inspected with `--netns-pid`,
//! `--netns` or found by itself (`ev.host`, a container's by identity), and the engine's
//! view of a published container with its listeners read inside (`ev.containers`). All of
//! them feed one finding with one evidence shape (docs/causes.md):
//! `container` (when an engine names it), `translation` (how the connection got there),
//! `backend-netns` (when the namespace was searched for), one `container-listener` (the
//! listeners inside), `port-map` (the engine's map, and the port inspected inside), `connect`.

use crate::rules::backend::{netns_item, translation_item};
use crate::rules::client::connect_item;
use crate::rules::container::container_item;
use crate::rules::kube::{pod_frame, PodFrame};
use crate::{Cause, Finding, Findings};
use conndoc_facts::container::{Container, IdentitySource, PortMapping};
use conndoc_facts::host::{HostFacts, InspectScope, InspectedPortMap, Listener};
use conndoc_facts::nat::{BackendFacts, FoundFacts};
use conndoc_facts::{ConnectKind, Evidence};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};

/// How the connection reached the container.
enum Route<'a> {
    /// A DNAT/redirect rule or a userland proxy, followed to the backend (seen, not declared).
    Forward(&'a BackendFacts),
    /// The engine's published mapping.
    Published(&'a PortMapping),
    /// The client dialled the container's own address.
    OwnAddress(IpAddr),
    /// The namespace was inspected directly (flag or found); the dialled port may be
    /// published to another port inside.
    Inspected(Option<&'a InspectedPortMap>),
    /// The dialled address is the container's (pod's) own, and conndoc found the namespace
    /// that owns it among this machine's (`ev.found`).
    Found(&'a FoundFacts),
}

/// What one gathering saw: loopback-only listeners inside a container's namespace.
struct Sighting<'a> {
    listeners: Vec<&'a Listener>,
    container: Option<&'a Container>,
    route: Route<'a>,
    pod: Option<PodFrame>,
    /// The address forwarded connections arrive on inside (the backend's), if known.
    arrive_on: Option<SocketAddr>,
}

pub fn run(ev: &Evidence, out: &mut Findings) {
    // The first gathering that saw it frames the finding (the forward is what happened to
    // the packet); the others add the container's identity and the route they know.
    let seen: Vec<Sighting> =
        [by_backend(ev), by_inspected_namespace(ev), by_found(ev)].into_iter().flatten().chain(by_engine(ev)).collect();
    let Some(first) = seen.first() else { return };
    let container = seen.iter().find_map(|s| s.container);
    let published = seen.iter().find_map(|s| match s.route {
        Route::Published(m) => Some(m),
        _ => None,
    });
    out.push(finding(ev, first, container, published));
    // The reset came from the container, one forwarding hop behind the host (so its TTL is
    // lower than the host's): not from a middlebox.
    let _ = out.remove(Cause::MiddleboxReset);
    if first.pod.is_some() || matches!(first.route, Route::Found(_) | Route::Forward(_)) {
        // The pod (or the backend a rule forwards to) explains the refusal: the client's
        // "nothing accepts connections on the ClusterIP" (whose fix is `ss` on a server that
        // is no host, or on a front that only forwards) steps aside.
        let _ = out.remove(Cause::NoListener);
    }
}

/// Only loopback listeners, and at least one: nothing takes what arrives from outside.
fn all_loopback(ls: &[&Listener]) -> bool {
    !ls.is_empty() && ls.iter().all(|l| l.loopback_only())
}

/// A forward followed to a backend in another namespace that listens only on loopback.
fn by_backend(ev: &Evidence) -> Option<Sighting<'_>> {
    let (b, bh) = crate::rules::backend::inspected(ev)?;
    let failed = ev.probes.iter().any(|p| !p.ok());
    let protocol_failed = ev.protocol.as_ref().is_some_and(|pf| pf.probes.iter().any(|p| p.error.is_some()));
    if !failed && !protocol_failed {
        return None;
    }
    let to = b.translation.to;
    let ls: Vec<&Listener> = bh.listeners.iter().collect();
    if !all_loopback(&ls) || ls.iter().any(|l| l.accepts(to.ip())) || !backend_elsewhere(ev, b) {
        return None;
    }
    let cf = ev.containers.as_ref();
    // The engine's container with the backend address (`inspected` checked that the engine
    // places it in the namespace inspected), else the container owning that namespace.
    let engine_owner = cf.and_then(|cf| {
        cf.containers.iter().find(|c| c.source == IdentitySource::EngineApi && c.addresses.contains(&to.ip()))
    });
    let container = engine_owner.or_else(|| cf.and_then(|cf| b.netns.as_ref().and_then(|n| cf.by_netns(n.inode))));
    Some(Sighting { listeners: ls, container, route: Route::Forward(b), pod: pod_frame(ev, b), arrive_on: Some(to) })
}

/// The backend runs in another namespace than the front host (in the same one, a loopback
/// bind is plain `bound-to-loopback`, rules/backend.rs).
pub(crate) fn backend_elsewhere(ev: &Evidence, b: &BackendFacts) -> bool {
    let front_ns = ev.host.as_ref().and_then(|h| h.inspected.as_ref()).and_then(|i| i.netns_inode);
    b.netns.as_ref().is_some_and(|n| n.inode != 0 && Some(n.inode) != front_ns)
}

/// The container the inspected namespace belongs to, when it is a container's: by its
/// identity (inode), however it was named (`--netns-pid PID`, `--netns /proc/PID/ns/net`, a
/// bind mount), or the namespace found to own the dialled address. `Some(None)`: a
/// container's namespace no engine names. A plain named namespace is the server itself.
pub(crate) fn inspected_container<'a>(ev: &'a Evidence, h: &HostFacts) -> Option<Option<&'a Container>> {
    let i = h.inspected.as_ref()?;
    if !matches!(i.scope, InspectScope::Netns | InspectScope::NetnsPid | InspectScope::Found) {
        return None;
    }
    let owner = i.netns_inode.and_then(|n| ev.containers.as_ref()?.by_netns(n));
    (owner.is_some() || i.scope == InspectScope::Found).then_some(owner)
}

/// A refusal at an address the listeners of the inspected container namespace do not take,
/// because they are all on loopback.
fn by_inspected_namespace(ev: &Evidence) -> Option<Sighting<'_>> {
    if crate::rules::backend::inspected(ev).is_some() {
        return None; // forwarded: the backend's table decides (by_backend)
    }
    let h = ev.host.as_ref()?;
    let container = inspected_container(ev, h)?;
    let p = ev.probes.iter().find(|p| p.kind == ConnectKind::Refused)?;
    let ls: Vec<&Listener> = h.listeners.iter().collect();
    if !all_loopback(&ls) || ls.iter().any(|l| l.accepts(p.address)) || dials_loopback(p.address) {
        return None;
    }
    // Where forwarded connections arrive inside: the container's address (a client dialling
    // the host's goes through the engine), or the dialled one when it is the namespace's own.
    let at = container
        .and_then(|c| c.addresses.first().copied())
        .or_else(|| h.inspected.as_ref().is_some_and(|i| i.scope == InspectScope::Found).then_some(p.address));
    let port = h.port.map(|x| x.get()).unwrap_or(p.port.get());
    Some(Sighting {
        listeners: ls,
        container,
        route: Route::Inspected(h.port_map.as_ref()),
        pod: None,
        arrive_on: at.map(|a| SocketAddr::new(a, port)),
    })
}

/// The namespace found to own the dialled address (no flag) is a container's or a pod's, and
/// all it listens on is loopback. A plain namespace's loopback bind is `bound-to-loopback`
/// (rules/found.rs).
fn by_found(ev: &Evidence) -> Option<Sighting<'_>> {
    let fd = ev.found.as_ref()?;
    let h = fd.host.as_ref()?;
    let to = fd.address;
    let refused =
        ev.probes.iter().any(|p| p.address == to.ip() && (p.kind == ConnectKind::Refused || p.peer_close.is_some()));
    let ls: Vec<&Listener> = h.listeners.iter().collect();
    if !fd.is_container() || !refused || !all_loopback(&ls) || ls.iter().any(|l| l.accepts(to.ip())) {
        return None;
    }
    let cf = ev.containers.as_ref();
    let container =
        cf.and_then(|cf| fd.netns.as_ref().and_then(|n| cf.by_netns(n.inode)).or_else(|| cf.by_address(to.ip())));
    Some(Sighting { listeners: ls, container, route: Route::Found(fd), pod: None, arrive_on: Some(to) })
}

fn dials_loopback(a: IpAddr) -> bool {
    a.is_loopback() || matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|x| x.is_loopback()))
}

/// The engine's containers: one that publishes the dialled port (or owns the dialled
/// address) and whose listeners on that port, read inside its namespace, are all loopback.
fn by_engine(ev: &Evidence) -> Option<Sighting<'_>> {
    let cf = ev.containers.as_ref()?;
    let port = ev.target.port.get();
    let dialled: Vec<IpAddr> = ev.probes.iter().map(|p| p.address).collect();
    cf.containers.iter().filter(|c| c.state.serving() && c.listeners_read).find_map(|c| {
        let via_map = c.published_on(port).next();
        let own = c.addresses.iter().find(|a| dialled.contains(a)).copied();
        let (route, inner) = match (via_map, own) {
            (Some(m), _) => (Route::Published(m), m.container_port),
            (None, Some(a)) => (Route::OwnAddress(a), port),
            _ => return None,
        };
        let ls: Vec<&Listener> = c.listeners.iter().filter(|l| l.port() == inner).collect();
        all_loopback(&ls).then(|| Sighting {
            listeners: ls,
            container: Some(c),
            route,
            pod: None,
            arrive_on: c.addresses.first().map(|a| SocketAddr::new(*a, inner)),
        })
    })
}

/// The one evidence shape, whichever gathering saw it.
fn finding(ev: &Evidence, s: &Sighting, container: Option<&Container>, published: Option<&PortMapping>) -> Finding {
    let shown = s.listeners.iter().map(|l| l.local.to_string()).collect::<Vec<_>>().join(", ");
    let p = ev.probes.iter().find(|p| !p.ok()).or(ev.probes.first());
    let dialled =
        p.map(|p| SocketAddr::new(p.address, p.port.get()).to_string()).unwrap_or_else(|| ev.target.authority());
    let inside = match (&s.pod, container, &s.route) {
        (Some(_), _, _) => "the pod".to_string(),
        (None, Some(c), _) => format!("{}'s network namespace", c.name()),
        (None, None, Route::Forward(_)) => "the backend".to_string(),
        (None, None, Route::Found(fd)) => fd.inside().to_string(),
        (None, None, _) => "the container's network namespace".to_string(),
    };
    let summary = match (&s.pod, container, &s.route) {
        (Some(k), _, _) => format!(
            "{} sends its connections to {} at targetPort {}, where the pod's process listens only on loopback ({shown}): connections from the Service arrive on {} and are refused",
            k.service,
            k.pod,
            s.arrive_on.map(|a| a.port()).unwrap_or_default(),
            s.arrive_on.map(|a| a.ip().to_string()).unwrap_or_default()
        ),
        (None, Some(c), route) => format!(
            "Container {} listens only on loopback ({shown}) inside its network namespace: connections to {dialled}{} are refused there",
            c.name(),
            match route {
                Route::Forward(b) => format!(" (forwarded to {})", b.translation.to),
                Route::Published(m) => format!(" (published as {})", m.text()),
                Route::Inspected(Some(m)) => format!(" (published to its port {})", m.inspected),
                _ => String::new(),
            }
        ),
        (None, None, Route::Forward(b)) => format!(
            "{dialled} is forwarded to {} ({}), where the service listens only on loopback ({shown}): the forwarded connections are refused there",
            b.translation.to,
            crate::rules::backend::where_backend(b)
        ),
        (None, None, Route::Found(fd)) => format!(
            "{dialled} belongs to {}, where the service listens only on loopback ({shown}): connections to {} are refused there",
            fd.describe(),
            fd.address.ip()
        ),
        (None, None, _) => format!(
            "The service inside its container's network namespace listens only on loopback ({shown}), so connections to {dialled} are refused"
        ),
    };
    let mut f = Finding::critical(Cause::ContainerBoundToLoopback, summary);
    if let Some(c) = container {
        f = container_item(f, c);
    }
    f = match &s.route {
        Route::Forward(b) => netns_item(translation_item(f, b), b),
        Route::Published(m) => published_item(f, container, m),
        Route::OwnAddress(a) => f.evidence(
            "translation",
            format!("the client dials the container's own address {a}:{}", ev.target.port),
            json!({ "container": container.map(Container::name), "addresses": container.map(|c| &c.addresses), "container_port": ev.target.port }),
        ),
        Route::Found(fd) => {
            let whose = if fd.inside() == "the pod" { "pod" } else { "container" };
            let f = f.evidence(
                "translation",
                format!("the client dials the {whose}'s own address {}", fd.address),
                json!({ "container": container.map(Container::name), "address": fd.address }),
            );
            crate::rules::found::found_item(f, fd)
        }
        // A published port the engine knows, when the namespace was named directly.
        Route::Inspected(_) => match published {
            Some(m) => published_item(f, container, m),
            None => f,
        },
    };
    let owner = s
        .listeners
        .iter()
        .find_map(|l| l.process.as_ref())
        .map(|p| format!(" — pid {} ({}): {}", p.pid, p.comm, p.cmdline))
        .unwrap_or_default();
    f = f.evidence(
        "container-listener",
        format!("inside {inside}: listening on {shown}{owner}"),
        json!({
            "container": container.map(Container::name),
            "listeners": s.listeners,
            "netns": match &s.route {
                Route::Forward(b) => json!(b.netns),
                Route::Found(fd) => json!(fd.netns),
                _ => json!(null),
            },
        }),
    );
    let inspected = match &s.route {
        Route::Inspected(m) => *m,
        _ => None,
    };
    if let Some(c) = container.filter(|c| c.ports_known) {
        let mut text = format!("{} port map: {}", c.name(), c.ports_text());
        if let Some(m) = inspected {
            text.push_str(&format!(
                "; host port {} is published to port {} of container {} ({}): port {} was inspected inside",
                m.dialled, m.inspected, m.container, m.mapping, m.inspected
            ));
        }
        f = f.evidence("port-map", text, json!({ "container": c.name(), "ports": c.ports, "inspected": inspected }));
    } else if let Some(m) = inspected {
        f = f.evidence(
            "port-map",
            format!(
                "host port {} is published to port {} of container {} ({}): port {} was inspected inside",
                m.dialled, m.inspected, m.container, m.mapping, m.inspected
            ),
            json!({ "container": m.container, "inspected": m }),
        );
    }
    if let Some(p) = p {
        let (text, data) = connect_item(p);
        f = f.evidence("connect", text, data);
    }
    fixes(f, s, container, &inside)
}

fn published_item(f: Finding, c: Option<&Container>, m: &PortMapping) -> Finding {
    f.evidence(
        "translation",
        format!("the engine forwards {} to the container's address", m.text()),
        json!({ "container": c.map(Container::name), "addresses": c.map(|c| &c.addresses), "container_port": m.container_port }),
    )
}

fn fixes(mut f: Finding, s: &Sighting, container: Option<&Container>, inside: &str) -> Finding {
    let port = s.arrive_on.map(|a| a.port()).or_else(|| s.listeners.first().map(|l| l.port())).unwrap_or_default();
    if let (Some(k), Some(to)) = (&s.pod, s.arrive_on) {
        f = f.fix(format!(
            "Make the container of {} listen on all addresses (0.0.0.0 / [::]) or on its pod IP {}, port {port}: traffic of Service {} arrives on the pod IP, never on 127.0.0.1 (find the pod: {}).",
            k.pod, to.ip(), k.name, k.find_pod
        ));
    }
    if let (Route::Found(fd), Some(to)) = (&s.route, s.arrive_on) {
        if fd.inside() == "the pod" {
            f = f.fix(format!(
                "Make the container of {} listen on its pod IP {} or on all addresses (0.0.0.0 / [::]), port {port} (find the pod: `kubectl get pods -A -o wide --field-selector status.podIP={}`).",
                fd.describe(),
                to.ip(),
                to.ip()
            ));
        }
    }
    let arrive = match s.arrive_on {
        Some(a) => format!("; forwarded connections arrive on {}, never on 127.0.0.1", a.ip()),
        None => String::new(),
    };
    f = f
        .fix(format!(
            "Make the service inside {inside} listen on all addresses (0.0.0.0 / [::]) instead of loopback{arrive}."
        ))
        .fix("For redis in a container: `--bind 0.0.0.0` (or `bind 0.0.0.0` in its redis.conf), and set a password before exposing it.");
    if let Some(c) = container {
        f = f
            .fix(format!(
                "A running container's command cannot be changed: re-create {} with the new bind (`docker run … redis-server --bind 0.0.0.0`).",
                c.name()
            ))
            .fix("Publishing to 127.0.0.1 on the host (`-p 127.0.0.1:P:P`) keeps it private to the host; binding loopback inside the container makes it unreachable even there.");
    }
    f
}

#[cfg(test)]
mod tests {
    use crate::{diagnose, Cause};
    use conndoc_facts::Evidence;

    /// Evidence the lab gathered for real (docs/lab.md, "Recording evidence").
    fn recorded(name: &str) -> Evidence {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
        let path = format!("{dir}/{name}.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
    }

    /// The kinds of the finding's evidence, in order, without the Service's own items that
    /// the kube rules put in front.
    fn kinds(ev: &Evidence) -> Vec<String> {
        let r = diagnose(ev);
        assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback, "{}", r.verdict.summary);
        let f = r.finding(Cause::ContainerBoundToLoopback).unwrap();
        f.evidence.iter().map(|e| e.kind.clone()).filter(|k| !k.starts_with("kube-")).collect()
    }

    #[test]
    fn one_evidence_shape_whichever_gathering_saw_it() {
        let shapes = [
            // docker-proxy followed to the backend, and the engine's view of the same container
            (
                "evidence/docker-bound-loopback",
                &["container", "translation", "backend-netns", "container-listener", "port-map", "connect"][..],
            ),
            // the engine's DNAT rule followed (a client on another host)
            (
                "evidence/docker-bound-loopback-dnat",
                &["container", "translation", "backend-netns", "container-listener", "port-map", "connect"],
            ),
            // --netns-pid / --netns /proc/PID/ns/net, with -p 16379:6379
            (
                "evidence/docker-netns-pid-port-map",
                &["container", "translation", "container-listener", "port-map", "connect"],
            ),
            (
                "evidence/docker-netns-path-port-map",
                &["container", "translation", "container-listener", "port-map", "connect"],
            ),
            (
                "evidence/docker-netns-pid-loopback",
                &["container", "translation", "container-listener", "port-map", "connect"],
            ),
            // the container's own address dialled from the Docker host
            (
                "evidence/docker-bridge-address-loopback",
                &["container", "translation", "container-listener", "port-map", "connect"],
            ),
            // a standalone docker-proxy, no engine: no container, no port map
            ("evidence/nat-proxy-loopback", &["translation", "backend-netns", "container-listener", "connect"]),
            // a pod behind a Service
            ("evidence/kube-nft-pod-loopback", &["translation", "backend-netns", "container-listener", "connect"]),
            ("evidence/kube-ipt-nft-pod-loopback", &["translation", "backend-netns", "container-listener", "connect"]),
        ];
        for (name, want) in shapes {
            assert_eq!(kinds(&recorded(name)), want.to_vec(), "{name}");
        }
    }

    #[test]
    fn names_the_container_and_its_listener_once() {
        for name in ["evidence/docker-bound-loopback", "evidence/docker-netns-pid-port-map"] {
            let r = diagnose(&recorded(name));
            let f = r.finding(Cause::ContainerBoundToLoopback).unwrap();
            assert!(
                f.summary.starts_with("Container cache listens only on loopback (127.0.0.1:6379)"),
                "{}",
                f.summary
            );
            let inside: Vec<&str> =
                f.evidence.iter().filter(|e| e.kind == "container-listener").map(|e| e.text.as_str()).collect();
            assert_eq!(inside.len(), 1, "{name}: {inside:?}");
            assert!(
                inside[0].starts_with("inside cache's network namespace: listening on 127.0.0.1:6379 — pid "),
                "{}",
                inside[0]
            );
            assert!(f.evidence.iter().all(|e| e.kind != "listener"), "{name}");
            assert!(f.remediation.iter().any(|s| s.contains("--bind 0.0.0.0")), "{:?}", f.remediation);
        }
        // The port inspected inside is said with the engine's map, in one item.
        let r = diagnose(&recorded("evidence/docker-netns-pid-port-map"));
        let f = r.finding(Cause::ContainerBoundToLoopback).unwrap();
        let map: Vec<&str> = f.evidence.iter().filter(|e| e.kind == "port-map").map(|e| e.text.as_str()).collect();
        assert_eq!(map.len(), 1);
        assert!(
            map[0].contains("0.0.0.0:16379 → 6379/tcp") && map[0].contains("port 6379 was inspected inside"),
            "{}",
            map[0]
        );
    }

    /// Two lab engines ran at once, and each one's first container is 172.17.0.2: the
    /// namespace found by address was the other engine's container (also a redis bound to
    /// loopback, known only by its cgroup). The engine places `cache` elsewhere, so the
    /// backend facts are not cache's: the finding is framed by the engine's own view.
    #[test]
    fn a_namespace_the_engine_disowns_is_not_the_backend() {
        let ev = recorded("cases/docker-bound-loopback-redis-other-engines-netns");
        let b = ev.backend.as_ref().unwrap();
        let cache = ev.containers.as_ref().unwrap().containers.iter().find(|c| c.name() == "cache").unwrap();
        assert_ne!(cache.netns_inode, b.netns.as_ref().map(|n| n.inode), "the fixture's premise");
        assert!(crate::rules::backend::inspected(&ev).is_none());
        let r = diagnose(&ev);
        let f = r.finding(Cause::ContainerBoundToLoopback).unwrap();
        let text = serde_json::to_string(f).unwrap();
        assert!(
            text.contains("container cache (") && text.contains("cache port map: 0.0.0.0:6379 → 6379/tcp"),
            "{text}"
        );
        assert!(!text.contains(&format!("net:[{}]", b.netns.as_ref().unwrap().inode)), "{text}");
        // The recorded twin where the other namespace had no listener: not "not running there".
        let r = diagnose(&recorded("cases/docker-bound-loopback-redis-other-engines-empty-netns"));
        assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback);
        assert!(r.finding(Cause::ProcessNotRunning).is_none());
    }
}
