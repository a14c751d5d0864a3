//! Container stage (issue 10 part B): after the host stage, ask the container engine which
//! containers matter for the target — those publishing or mapping its port, owning its
//! address or the inspected namespace, or (after a failure) listening on the port inside
//! their own namespace — and read those listeners there.

use crate::Options;
use conndoc_facts::container::{Container, ContainerFacts};
use conndoc_facts::host::InspectScope;
use conndoc_facts::host::InspectedPortMap;
use conndoc_facts::{Evidence, Port};
use std::time::Duration;

/// Whether there is anything to ask: an engine socket, or DOCKER_HOST set.
pub(crate) fn engine_named_or_present() -> bool {
    std::env::var_os("DOCKER_HOST").is_some_and(|v| !v.is_empty())
        || std::path::Path::new(conndoc_container::api::DEFAULT_SOCKET).exists()
}

/// The engine's deadline: the run's connect timeout, at most 1 s.
fn deadline(opts: &Options) -> Duration {
    opts.timeout.min(Duration::from_secs(1))
}

/// Ask the engine for its list (and inspect what publishes the port or owns a dialled
/// address) while the probe runs; [`run`] takes the answers.
pub(crate) fn prefetch(
    ev: &Evidence,
    opts: &Options,
    addrs: &[std::net::IpAddr],
) -> Option<conndoc_container::Prefetch> {
    if opts.no_host || opts.ssh.is_some() || !engine_named_or_present() {
        return None;
    }
    let mut req = conndoc_container::Request::new(ev.target.port.get());
    req.addresses = addrs.to_vec();
    req.deadline = deadline(opts);
    conndoc_container::prefetch(&req)
}

pub(crate) fn run(ev: &mut Evidence, opts: &Options) {
    run_prefetched(ev, opts, None)
}

/// Whether the connect or the protocol exchange failed: then the engine is asked more widely
/// (stopped containers, running ones that publish nothing).
pub(crate) fn probe_failed(ev: &Evidence) -> bool {
    ev.probes.is_empty()
        || ev.probes.iter().any(|p| !p.ok())
        || ev.protocol.iter().flat_map(|p| &p.probes).any(|p| p.error.is_some())
}

/// [`run`] with the engine's answers asked early by [`prefetch`].
pub(crate) fn run_prefetched(ev: &mut Evidence, opts: &Options, early: Option<conndoc_container::Prefetch>) {
    let failed = probe_failed(ev);
    let port = ev.target.port.get();
    let mut req = conndoc_container::Request::new(port);
    req.addresses = ev.probes.iter().map(|p| p.address).collect();
    req.wide = failed;
    // The engine shares the run's deadline budget: at most the connect timeout, ≤ 1 s.
    req.deadline = deadline(opts);
    if let Some(h) = &ev.host {
        req.pids.extend(h.listeners.iter().filter_map(|l| l.process.as_ref().map(|p| p.pid)));
        if let Some(x) = &h.expected {
            req.pids.extend(x.running.iter().chain(&x.elsewhere).map(|p| p.pid));
        }
    }
    if let Some(pid) = crate::namespace_pid(opts) {
        req.pids.push(pid);
    }
    req.pids.sort_unstable();
    req.pids.dedup();
    if !engine_named_or_present() && req.pids.is_empty() {
        return;
    }
    let (facts, skipped) = conndoc_container::gather_prefetched(&req, early);
    ev.skipped.extend(skipped);
    let Some(mut facts) = facts else { return };
    let ours = conndoc_host::procs::current_netns();
    let inspected = ev.host.as_ref().and_then(|h| h.inspected.as_ref()).and_then(|i| {
        if i.scope == InspectScope::Local {
            ours
        } else {
            i.netns_inode
        }
    });
    // Each container's listeners on the target port and the container ports it is published
    // to (`-p 16379:6379`), inside its namespace; its own process is the likely owner. All
    // of them entered by one worker thread (or a few), not a thread spawned per container.
    let mut todo: Vec<(usize, (u32, Vec<u16>))> = Vec::new();
    for (i, c) in facts.containers.iter_mut().enumerate() {
        let Some(pid) = c.pid else { continue };
        c.netns_inode = conndoc_host::procs::netns_of(pid);
        // A container on the host's network shares our namespace: its listeners are the host's.
        if c.netns_inode.is_none() || c.netns_inode == ours {
            continue;
        }
        let mut ports = vec![port];
        ports.extend(c.published_on(port).map(|m| m.container_port));
        ports.sort_unstable();
        ports.dedup();
        todo.push((i, (pid, ports)));
    }
    let items: Vec<(u32, Vec<u16>)> = todo.iter().map(|(_, it)| it.clone()).collect();
    let read = conndoc_host::inspect::listener_tables_each(&items, std::time::Instant::now() + deadline(opts));
    for ((i, _), r) in todo.into_iter().zip(read) {
        if let Ok(ls) = r {
            facts.containers[i].listeners = ls;
            facts.containers[i].listeners_read = true;
        }
    }
    let pids = req.pids.clone();
    let addrs = req.addresses.clone();
    facts.containers.retain(|c| relevant(c, port, &pids, &addrs, inspected));
    ev.containers = Some(facts);
}

fn relevant(c: &Container, port: u16, pids: &[u32], addrs: &[std::net::IpAddr], inspected: Option<u64>) -> bool {
    c.published_on(port).next().is_some()
        || c.mapping_to(port).next().is_some()
        || c.addresses.iter().any(|a| addrs.contains(a))
        || !c.listeners.is_empty()
        || c.pid.is_some_and(|p| pids.contains(&p))
        || c.listeners.iter().filter_map(|l| l.process.as_ref()).any(|p| pids.contains(&p.pid))
        || (inspected.is_some() && c.netns_inode == inspected)
}

/// The container facts of a run, for callers that only want names (listeners).
pub fn containers_for_pids(pids: &[u32], port: u16) -> Option<ContainerFacts> {
    let mut req = conndoc_container::Request::new(port);
    req.pids = pids.to_vec();
    if !engine_named_or_present() && req.pids.is_empty() {
        return None;
    }
    let (facts, _) = conndoc_container::gather(&req);
    facts
}

/// The container whose namespace `pid` is in, when it publishes the dialled `port` to
/// another container port: the port to inspect inside instead.
pub(crate) fn port_map_for(pid: u32, port: Port) -> Option<InspectedPortMap> {
    let facts = containers_for_pids(&[pid], port.get())?;
    let ns = conndoc_host::procs::netns_of(pid);
    let cg = conndoc_container::cgroup::of_pid(pid).map(|c| c.id);
    let c = facts.containers.iter().find(|c| {
        c.pid == Some(pid)
            || cg.as_deref() == Some(c.id.as_str())
            || (ns.is_some() && c.pid.and_then(conndoc_host::procs::netns_of) == ns)
    })?;
    let m = c.published_on(port.get()).find(|m| m.container_port != port.get())?;
    Some(InspectedPortMap {
        dialled: port,
        inspected: Port::new(m.container_port)?,
        container: c.name().to_string(),
        mapping: m.text(),
    })
}

/// The container behind a listener, for `conndoc listeners`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListenerContainer {
    pub name: String,
    pub id: String,
    /// Set for a `docker-proxy` row: the container address and port it forwards to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwards_to: Option<std::net::SocketAddr>,
}

/// `-container-ip A -container-port P` of a docker-proxy command line.
pub fn docker_proxy_target(cmdline: &str) -> Option<std::net::SocketAddr> {
    let args: Vec<&str> = cmdline.split_whitespace().collect();
    let val = |flag: &str| args.iter().position(|a| *a == flag).and_then(|i| args.get(i + 1)).copied();
    let ip: std::net::IpAddr = val("-container-ip")?.parse().ok()?;
    let port: u16 = val("-container-port")?.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, port))
}

/// Name the container behind each listener: the owner's container (cgroup id, named by the
/// engine), the container a docker-proxy forwards to, or — inside `--netns-pid PID` — PID's.
pub fn listener_containers(
    ls: &[conndoc_facts::host::Listener],
    netns_pid: Option<u32>,
) -> Vec<Option<ListenerContainer>> {
    let proxies: Vec<Option<std::net::SocketAddr>> = ls
        .iter()
        .map(|l| l.process.as_ref().filter(|p| p.comm == "docker-proxy").and_then(|p| docker_proxy_target(&p.cmdline)))
        .collect();
    let mut req = conndoc_container::Request::new(0);
    req.pids = ls.iter().filter_map(|l| l.process.as_ref().map(|p| p.pid)).chain(netns_pid).collect();
    req.pids.sort_unstable();
    req.pids.dedup();
    req.addresses = proxies.iter().flatten().map(|a| a.ip()).collect();
    if !engine_named_or_present() && req.pids.is_empty() {
        return vec![None; ls.len()];
    }
    let (facts, _) = conndoc_container::gather(&req);
    let Some(facts) = facts else { return vec![None; ls.len()] };
    let by_pid = |pid: u32| {
        let id = conndoc_container::cgroup::of_pid(pid)?.id;
        facts.containers.iter().find(|c| c.id == id)
    };
    let ns_owner = netns_pid.and_then(by_pid);
    ls.iter()
        .zip(&proxies)
        .map(|(l, proxy)| {
            let (c, fwd) = match proxy {
                Some(a) => (facts.by_address(a.ip()), Some(*a)),
                None => (l.process.as_ref().and_then(|p| by_pid(p.pid)).or(ns_owner), None),
            };
            c.map(|c| ListenerContainer { name: c.name().to_string(), id: c.short_id().to_string(), forwards_to: fwd })
        })
        .collect()
}

/// The container each network namespace belongs to, for `conndoc listeners --all-netns`:
/// the engine's container whose process runs in it, else the container id in a member
/// process's cgroup. One engine query for all of them.
pub fn netns_containers(ns: &[(u64, Vec<u32>)]) -> Vec<Option<ListenerContainer>> {
    let mut pids: Vec<u32> = ns.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    pids.sort_unstable();
    pids.dedup();
    let facts = containers_for_pids(&pids, 0);
    let engine_ns: Vec<(u64, &Container)> = facts
        .iter()
        .flat_map(|f| &f.containers)
        .filter_map(|c| Some((conndoc_host::procs::netns_of(c.pid?)?, c)))
        .collect();
    ns.iter()
        .map(|(inode, pids)| {
            if let Some((_, c)) = engine_ns.iter().find(|(i, _)| i == inode) {
                return Some(ListenerContainer {
                    name: c.name().to_string(),
                    id: c.short_id().to_string(),
                    forwards_to: None,
                });
            }
            let cg = pids.iter().find_map(|&p| conndoc_container::cgroup::of_pid(p))?;
            let id: String = cg.id.chars().take(12).collect();
            Some(ListenerContainer { name: id.clone(), id, forwards_to: None })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_proxy_arguments() {
        let cmd = "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 6379 -container-ip 172.17.0.2 -container-port 6379";
        assert_eq!(super::docker_proxy_target(cmd), Some("172.17.0.2:6379".parse().unwrap()));
        let v6 = "docker-proxy -proto tcp -host-ip :: -host-port 80 -container-ip fd00::2 -container-port 8080";
        assert_eq!(super::docker_proxy_target(v6), Some("[fd00::2]:8080".parse().unwrap()));
        assert_eq!(super::docker_proxy_target("docker-proxy -proto tcp"), None);
        assert_eq!(super::docker_proxy_target("docker-proxy -container-ip x -container-port 1"), None);
    }
}
