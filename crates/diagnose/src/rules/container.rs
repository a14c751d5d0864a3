//! Container rules (issue 10 part B): what the container engine's facts (state, port map)
//! and the listeners inside a container's own namespace prove about a failure on a Docker
//! host. Pure: reads `ev.containers` and `ev.host`.

use crate::rules::client::connect_item;
use crate::{Cause, Finding, Findings};
use conndoc_facts::container::{Container, ContainerFacts, IdentitySource};
use conndoc_facts::host::Listener;
use conndoc_facts::{ConnectKind, ConnectProbe, Evidence};
use serde_json::json;

pub(crate) fn container_item(f: Finding, c: &Container) -> Finding {
    let mut text = match c.source {
        // Only the id is known: "is unknown" would read as if the container were in doubt.
        IdentitySource::Cgroup => format!(
            "{} container {}, identified by its id in /proc/{}/cgroup; the engine was not readable, so its name, state and port map are unknown",
            c.engine.as_str(),
            c.short_id(),
            c.pid.map_or_else(|| "PID".to_string(), |p| p.to_string())
        ),
        IdentitySource::EngineApi => format!("{} is {}", c.label(), c.state.as_str()),
    };
    if let Some(code) = c.exit_code {
        text.push_str(&format!(", exit code {code}"));
    }
    if let Some(oom) = c.oom_killed {
        text.push_str(if oom { ", OOM-killed" } else { ", not OOM-killed" });
    }
    if let Some(n) = c.restart_count {
        text.push_str(&format!(", restarted {n} time{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(t) = &c.finished_at {
        text.push_str(&format!(", finished at {t}"));
    }
    if let Some(e) = &c.error {
        text.push_str(&format!(", engine error: {e}"));
    }
    f.evidence(
        "container",
        text,
        json!({ "id": c.id, "names": c.names, "image": c.image, "engine": c.engine, "state": c.state,
                "exit_code": c.exit_code, "oom_killed": c.oom_killed, "restart_count": c.restart_count,
                "pid": c.pid, "source": c.source }),
    )
}

fn port_map_item(f: Finding, c: &Container) -> Finding {
    f.evidence(
        "port-map",
        format!("{} port map: {}", c.name(), c.ports_text()),
        json!({ "container": c.name(), "ports": c.ports }),
    )
}

fn inside_listeners_item(f: Finding, c: &Container, ls: &[&Listener]) -> Finding {
    let shown: Vec<String> = ls.iter().map(|l| l.local.to_string()).collect();
    let owner =
        ls.iter().find_map(|l| l.process.as_ref()).map(|p| format!(" ({} pid {})", p.comm, p.pid)).unwrap_or_default();
    f.evidence(
        "container-listener",
        format!("inside {}'s network namespace: listening on {}{owner}", c.name(), shown.join(", ")),
        json!({ "container": c.name(), "listeners": ls }),
    )
}

fn first_refused(ev: &Evidence) -> Option<&ConnectProbe> {
    ev.probes.iter().find(|p| p.kind == ConnectKind::Refused)
}

/// A refusal on the Docker host itself with nothing listening on the port there.
fn refused_on_host(ev: &Evidence) -> Option<&ConnectProbe> {
    let h = ev.host.as_ref()?;
    let p = first_refused(ev)?;
    let port = ev.target.port.get();
    (h.listeners.iter().all(|l| l.port() != port)).then_some(p)
}

/// Whether these rules explain a refusal that the host rules would call
/// `process-not-running` (the process is in a container, stopped or unpublished).
pub fn explains_absence(ev: &Evidence) -> bool {
    let Some(cf) = &ev.containers else { return false };
    let port = ev.target.port.get();
    refused_on_host(ev).is_some()
        && cf.containers.iter().any(|c| {
            (!c.state.serving() && c.published_on(port).next().is_some())
                || c.mapping_to(port).next().is_some()
                || !c.listeners.is_empty()
        })
}

pub fn run(ev: &Evidence, out: &mut Findings) {
    let Some(cf) = &ev.containers else { return };
    let port = ev.target.port.get();
    if let Some(p) = refused_on_host(ev) {
        not_running(cf, port, p, out);
        wrong_port(cf, port, p, out);
        not_published(cf, port, p, out);
    }
    protected_mode_note(ev, cf, port, out);
}

fn not_running(cf: &ContainerFacts, port: u16, p: &ConnectProbe, out: &mut Findings) {
    for c in cf.containers.iter().filter(|c| c.ports_known && !c.state.serving()) {
        let Some(m) = c.published_on(port).next() else { continue };
        let mut f = Finding::critical(
            Cause::ContainerNotRunning,
            format!(
                "Container {} publishes port {port} ({}) but is {}{}: nothing forwards the connection",
                c.name(),
                m.text(),
                c.state.as_str(),
                c.exit_code
                    .map(|x| format!(
                        " (exit code {x}{})",
                        if c.oom_killed == Some(true) { ", OOM-killed" } else { "" }
                    ))
                    .unwrap_or_default()
            ),
        );
        f = container_item(f, c);
        f = port_map_item(f, c);
        if !c.log_tail.is_empty() {
            f = f.evidence(
                "container-log",
                format!("last log lines of {}: {}", c.name(), c.log_tail.join(" | ")),
                json!({ "container": c.name(), "lines": c.log_tail }),
            );
        }
        let (text, data) = connect_item(p);
        f = f.evidence("connect", text, data);
        f = f.fix(format!("See why it stopped: `docker logs --tail 50 {}`.", c.name()));
        if c.oom_killed == Some(true) {
            f = f.fix(format!("It was OOM-killed: give it more memory (`docker update --memory … {}` or `docker run -m`), or make it use less.", c.name()));
        }
        f = f.fix(format!(
            "Start it again: `docker start {}` (a restart policy, `--restart unless-stopped`, keeps it up).",
            c.name()
        ));
        out.push(f);
    }
}

fn wrong_port(cf: &ContainerFacts, port: u16, p: &ConnectProbe, out: &mut Findings) {
    for c in cf.containers.iter().filter(|c| c.state.serving()) {
        if c.published_on(port).next().is_some() {
            continue;
        }
        let Some(m) = c.mapping_to(port).find(|m| m.host_port != port) else { continue };
        let mut f = Finding::critical(
            Cause::WrongPort,
            format!(
                "Port {port} of container {} is published on host port {} ({}), not on {port}: the client dials the container's port on the host",
                c.name(),
                m.host_port,
                m.text()
            ),
        );
        if let (Some(why), Some(_)) = (&cf.engine_error, &cf.endpoint) {
            f = f.partial(format!("the container's inspect did not answer; its port map is the engine's list ({why})"));
        }
        f = container_item(f, c);
        f = port_map_item(f, c);
        let (text, data) = connect_item(p);
        f = f.evidence("connect", text, data);
        f = f.fix(format!("Point the client at host port {} (the published one), or", m.host_port));
        f = f.fix(format!(
            "publish the container's port {port} on host port {port}: re-create it with `docker run -p {port}:{port} …` (`docker port {}` shows the map).",
            c.name()
        ));
        out.push(f);
    }
}

fn not_published(cf: &ContainerFacts, port: u16, p: &ConnectProbe, out: &mut Findings) {
    // A container known only by its cgroup id (engine unreadable) with a listener on the
    // port runs; nothing on this host forwards the port to it (the refusal came from the
    // host with no listener there), which is what "not published" means for the client.
    // Only when the engine was not read at all: an engine that answered without describing
    // the container proves nothing about its port map either way.
    let engine_unread = cf.endpoint.is_none();
    for c in cf
        .containers
        .iter()
        .filter(|c| (c.state.serving() && c.ports_known) || (engine_unread && !c.ports_known && c.listeners_read))
    {
        let ls: Vec<&Listener> = c.listeners.iter().filter(|l| l.port() == port).collect();
        if ls.is_empty() || c.mapping_to(port).next().is_some() || c.published_on(port).next().is_some() {
            continue;
        }
        let summary = if c.ports_known {
            format!(
                "Container {} listens on port {port} inside its network namespace, but publishes no host port for it ({})",
                c.name(),
                c.ports_text()
            )
        } else {
            format!(
                "Container {} listens on port {port} inside its network namespace, but nothing listens on port {port} on this host to forward it there (the engine's port map could not be read)",
                c.name()
            )
        };
        // An engine that is there but did not answer has a port map nobody read: the port
        // may be published on another host port (wrong-port). Said, not named as the cause.
        let mut f = match (&cf.engine_error, c.ports_known) {
            (Some(why), false) => Finding::warning(Cause::ContainerPortNotPublished, summary).partial(format!(
                "the engine socket is there but did not answer ({why}): whether the container publishes port {port} on another host port (wrong-port) or not at all is unknown"
            )),
            _ => Finding::critical(Cause::ContainerPortNotPublished, summary),
        };
        f = container_item(f, c);
        f = inside_listeners_item(f, c, &ls);
        if c.ports_known {
            f = port_map_item(f, c);
        } else {
            f = f.fix(format!(
                "See which host port, if any, it is published on: `docker port {}` (or `docker ps`); the engine socket was not readable here.",
                c.short_id()
            ));
        }
        let (text, data) = connect_item(p);
        f = f.evidence("connect", text, data);
        f = f.fix(format!(
            "Publish the port: re-create the container with `docker run -p {port}:{port} …` (or `ports: [\"{port}:{port}\"]` in compose); a running container's port map cannot be changed."
        ));
        if let Some(a) = c.addresses.first() {
            if ls.iter().any(|l| !l.loopback_only()) {
                f = f.fix(format!(
                    "From this host only, the container's own address works without publishing: {a}:{port}."
                ));
            }
        }
        out.push(f);
    }
}

/// Redis in protected mode behind docker-proxy or DNAT: it sees the bridge gateway (or the
/// remote client), never loopback, even when the client runs on the Docker host.
fn protected_mode_note(ev: &Evidence, cf: &ContainerFacts, port: u16, out: &mut Findings) {
    let Some(c) = cf.containers.iter().find(|c| c.state.serving() && c.published_on(port).next().is_some()) else {
        return;
    };
    let Some(f) = out.get_mut(Cause::RedisProtectedMode) else { return };
    let local_client = ev.probes.iter().any(|p| p.address.is_loopback());
    let text = format!(
        "{} publishes {}: the connection reaches Redis from the bridge gateway (docker-proxy or the engine's NAT){}, not from loopback — protected mode refuses it{}",
        c.label(),
        c.ports_text(),
        c.addresses.first().map(|a| format!(" on {a}'s network")).unwrap_or_default(),
        if local_client { " although the client runs on the Docker host" } else { "" }
    );
    f.evidence.push(crate::EvidenceItem {
        kind: "container".into(),
        text,
        data: json!({ "container": c.name(), "ports": c.ports, "addresses": c.addresses }),
    });
    let fix = format!(
        "Inside the container, loopback is the only address protected mode trusts: set a password (`--requirepass`), or `--protected-mode no` on a network you trust (e.g. `docker run … {} redis-server --protected-mode no`).",
        c.image
    );
    if !f.remediation.contains(&fix) {
        f.remediation.insert(0, fix);
    }
}

#[cfg(test)]
mod tests {
    use crate::{diagnose, fixture, Cause};
    use conndoc_facts::container::{
        Container, ContainerEngine, ContainerFacts, ContainerState, IdentitySource, PortMapping,
    };
    use conndoc_facts::host::{HostFacts, InspectScope, Inspected, Listener};
    use conndoc_facts::{ConnectKind, Evidence, Micros, Port};

    fn ev(kind: ConnectKind, target: &str, host: Option<HostFacts>, cs: Vec<Container>) -> Evidence {
        let mut e = fixture::evidence(target);
        let (address, port) = (e.target.host.to_string(), e.target.port.get());
        e.probes = vec![fixture::connect(&address, port, kind)];
        e.host = host;
        e.containers = Some(ContainerFacts {
            containers: cs,
            endpoint: Some("unix:///var/run/docker.sock".into()),
            ..Default::default()
        });
        e
    }

    fn host() -> HostFacts {
        HostFacts {
            inspected: Some(Inspected { scope: InspectScope::Local, ..Default::default() }),
            local_addresses: vec!["127.0.0.1".parse().unwrap()],
            port: Some(Port::new(6379).unwrap()),
            elapsed_us: Micros(1),
            ..Default::default()
        }
    }

    fn listener(a: &str) -> Listener {
        fixture::listener(a)
    }

    fn cache(state: ContainerState, ports: &[(u16, u16)], inside: &[&str]) -> Container {
        Container {
            id: "e789749d466b394f7abd25eab1ccda533d154f6a4df486ee2c8589f53e3cfa6d".into(),
            names: vec!["cache".into()],
            image: "redis:7".into(),
            engine: ContainerEngine::Docker,
            state,
            exit_code: (!state.serving()).then_some(1),
            oom_killed: Some(false),
            restart_count: Some(0),
            error: None,
            finished_at: None,
            pid: state.serving().then_some(4242),
            netns_inode: state.serving().then_some(4026532999),
            addresses: if state.serving() { vec!["172.17.0.2".parse().unwrap()] } else { vec![] },
            ports: ports
                .iter()
                .map(|&(h, c)| PortMapping { host_ip: None, host_port: h, container_port: c, protocol: "tcp".into() })
                .collect(),
            ports_known: true,
            listeners: inside.iter().map(|a| listener(a)).collect(),
            listeners_read: state.serving(),
            log_tail: if state.serving() { vec![] } else { vec!["Fatal error, can't open config file".into()] },
            source: IdentitySource::EngineApi,
        }
    }

    fn text(r: &crate::Report, c: Cause) -> String {
        serde_json::to_string(
            r.finding(c)
                .unwrap_or_else(|| panic!("no {c} in {:?}", r.findings.iter().map(|f| f.cause).collect::<Vec<_>>())),
        )
        .unwrap()
    }

    #[test]
    fn stopped_container_publishing_the_port() {
        let e = ev(
            ConnectKind::Refused,
            "redis://127.0.0.1:6379",
            Some(host()),
            vec![cache(ContainerState::Exited, &[(6379, 6379)], &[])],
        );
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::ContainerNotRunning);
        let t = text(&r, Cause::ContainerNotRunning);
        for s in [
            "cache",
            "exit code 1",
            "not OOM-killed",
            "0.0.0.0:6379 → 6379/tcp",
            "can't open config file",
            "docker start cache",
            "docker logs",
        ] {
            assert!(t.contains(s), "{s} in {t}");
        }
        assert!(r.finding(Cause::ProcessNotRunning).is_none());
    }

    #[test]
    fn published_on_another_host_port() {
        let e = ev(
            ConnectKind::Refused,
            "redis://127.0.0.1:6379",
            Some(host()),
            vec![cache(ContainerState::Running, &[(6380, 6379)], &["0.0.0.0:6379"])],
        );
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::WrongPort);
        let t = text(&r, Cause::WrongPort);
        assert!(t.contains("0.0.0.0:6380 → 6379/tcp") && t.contains("host port 6380") && t.contains("cache"), "{t}");
        assert!(r.finding(Cause::ContainerPortNotPublished).is_none());
    }

    /// Engine socket unreadable: the container is known by its cgroup id only, its port map
    /// is unknown. It still runs and listens; "start the service" would be wrong.
    #[test]
    fn cgroup_only_container_listening_is_not_published() {
        let mut c = cache(ContainerState::Unknown, &[], &["0.0.0.0:6379"]);
        (c.names, c.image, c.source, c.ports_known, c.listeners_read) =
            (vec![], String::new(), IdentitySource::Cgroup, false, true);
        (c.pid, c.exit_code, c.oom_killed, c.restart_count, c.log_tail) = (Some(4242), None, None, None, vec![]);
        let mut e = ev(ConnectKind::Refused, "redis://127.0.0.1:6379", Some(host()), vec![c]);
        e.containers.as_mut().unwrap().endpoint = None;
        let mut answered = e.clone();
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::ContainerPortNotPublished);
        // The engine answered but did not describe it: "could not be read" would be false.
        answered.containers.as_mut().unwrap().endpoint = Some("unix:///var/run/docker.sock".into());
        assert!(diagnose(&answered).finding(Cause::ContainerPortNotPublished).is_none());
        let t = text(&r, Cause::ContainerPortNotPublished);
        for s in [
            "Container e789749d466b listens on port 6379",
            "the engine's port map could not be read",
            "docker container e789749d466b, identified by its id in /proc/4242/cgroup",
            "listening on 0.0.0.0:6379",
            "docker port e789749d466b",
        ] {
            assert!(t.contains(s), "{s} in {t}");
        }
        assert!(!t.contains("is unknown") && !t.contains("no published ports"), "{t}");
    }

    /// The engine socket is there but did not answer (a hung or busy engine): the unread
    /// port map could as well publish the port elsewhere (wrong-port). Not the verdict;
    /// said as a partial warning. Its list read without the inspects: wrong-port, partial.
    #[test]
    fn engine_that_did_not_answer_names_no_port_map_cause() {
        let mut c = cache(ContainerState::Unknown, &[], &["0.0.0.0:6379"]);
        (c.names, c.source, c.ports_known, c.listeners_read) = (vec![], IdentitySource::Cgroup, false, true);
        let mut e = ev(ConnectKind::Refused, "redis://127.0.0.1:6379", Some(host()), vec![c]);
        let cf = e.containers.as_mut().unwrap();
        cf.endpoint = None;
        cf.engine_error = Some("the engine did not answer in time (GET /containers/json?all=1)".into());
        let r = diagnose(&e);
        assert_ne!(r.verdict.cause, Cause::ContainerPortNotPublished);
        let f = r.finding(Cause::ContainerPortNotPublished).expect("said as a warning");
        assert_eq!(f.severity, crate::Severity::Warning);
        let p = f.partial.as_deref().unwrap_or_default();
        assert!(p.contains("did not answer in time") && p.contains("wrong-port"), "{p}");

        let mut listed = cache(ContainerState::Running, &[(6380, 6379)], &["0.0.0.0:6379"]);
        (listed.exit_code, listed.oom_killed, listed.restart_count) = (None, None, None);
        let mut e = ev(ConnectKind::Refused, "redis://127.0.0.1:6379", Some(host()), vec![listed]);
        e.containers.as_mut().unwrap().engine_error = Some("GET /containers/x/json: status 404".into());
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::WrongPort);
        assert!(r.finding(Cause::WrongPort).unwrap().partial.as_deref().unwrap_or_default().contains("status 404"));
    }

    #[test]
    fn listening_inside_but_not_published() {
        let e = ev(
            ConnectKind::Refused,
            "redis://127.0.0.1:6379",
            Some(host()),
            vec![cache(ContainerState::Running, &[], &["0.0.0.0:6379"])],
        );
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::ContainerPortNotPublished);
        let t = text(&r, Cause::ContainerPortNotPublished);
        assert!(
            t.contains("no published ports") && t.contains("0.0.0.0:6379") && t.contains("docker run -p 6379:6379"),
            "{t}"
        );
        assert!(r.finding(Cause::ProcessNotRunning).is_none(), "no 'found elsewhere' noise");
        // A container that does not listen on the port is no explanation.
        let e = ev(
            ConnectKind::Refused,
            "redis://127.0.0.1:6379",
            Some(host()),
            vec![cache(ContainerState::Running, &[], &[])],
        );
        assert!(diagnose(&e).finding(Cause::ContainerPortNotPublished).is_none());
    }

    #[test]
    fn loopback_inside_behind_a_published_port() {
        // docker-proxy accepted the connection: the connect succeeded, the backend refuses.
        let e = ev(
            ConnectKind::Connected,
            "tcp://127.0.0.1:6379",
            Some(HostFacts { listeners: vec![listener("0.0.0.0:6379")], ..host() }),
            vec![cache(ContainerState::Running, &[(6379, 6379)], &["127.0.0.1:6379"])],
        );
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback);
        let t = text(&r, Cause::ContainerBoundToLoopback);
        assert!(t.contains("cache") && t.contains("127.0.0.1:6379") && t.contains("0.0.0.0:6379 → 6379/tcp"), "{t}");
        // The container's own address dialled from the Docker host.
        let e = ev(
            ConnectKind::Refused,
            "tcp://172.17.0.2:6379",
            None,
            vec![cache(ContainerState::Running, &[], &["127.0.0.1:6379"])],
        );
        let r = diagnose(&e);
        assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback);
        assert!(text(&r, Cause::ContainerBoundToLoopback).contains("172.17.0.2:6379"));
        // Bound to all addresses inside: healthy.
        let e = ev(
            ConnectKind::Connected,
            "tcp://127.0.0.1:6379",
            Some(HostFacts { listeners: vec![listener("0.0.0.0:6379")], ..host() }),
            vec![cache(ContainerState::Running, &[(6379, 6379)], &["0.0.0.0:6379"])],
        );
        assert_eq!(diagnose(&e).verdict.cause, Cause::Ok);
    }
}
