//! Container stage (issue 10 part B): after the host stage, ask the container engine which
//! containers matter for the target — those publishing or mapping its port, owning its
//! address or the inspected namespace, or (after a failure) listening on the port inside
//! their own namespace — and read those listeners there.

use crate::Options;
use conndoc_facts::container::{Container, ContainerFacts};
use conndoc_facts::host::InspectScope;
use conndoc_facts::Evidence;
use conndoc_host::NetnsSpec;
use std::time::Duration;

/// Whether there is anything to ask: an engine socket, or DOCKER_HOST set.
fn engine_named_or_present() -> bool {
    std::env::var_os("DOCKER_HOST").is_some_and(|v| !v.is_empty())
        || std::path::Path::new(conndoc_container::api::DEFAULT_SOCKET).exists()
}

pub(crate) fn run(ev: &mut Evidence, opts: &Options) {
    let failed = ev.probes.is_empty()
        || ev.probes.iter().any(|p| !p.ok())
        || ev.protocol.iter().flat_map(|p| &p.probes).any(|p| p.error.is_some());
    let port = ev.target.port.get();
    let mut req = conndoc_container::Request::new(port);
    req.addresses = ev.probes.iter().map(|p| p.address).collect();
    req.wide = failed;
    // The engine shares the run's deadline budget: at most the connect timeout, ≤ 1 s.
    req.deadline = opts.timeout.min(Duration::from_secs(1));
    if let Some(h) = &ev.host {
        req.pids.extend(h.listeners.iter().filter_map(|l| l.process.as_ref().map(|p| p.pid)));
        if let Some(x) = &h.expected {
            req.pids.extend(x.running.iter().chain(&x.elsewhere).map(|p| p.pid));
        }
    }
    if let Some(pid) = opts.netns_pid {
        req.pids.push(pid);
    }
    req.pids.sort_unstable();
    req.pids.dedup();
    if !engine_named_or_present() && req.pids.is_empty() {
        return;
    }
    let (facts, skipped) = conndoc_container::gather(&req);
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
    for c in &mut facts.containers {
        let Some(pid) = c.pid else { continue };
        c.netns_inode = conndoc_host::procs::netns_of(pid);
        // A container on the host's network shares our namespace: its listeners are the host's.
        if c.netns_inode.is_none() || c.netns_inode == ours {
            continue;
        }
        if let Ok(ls) = conndoc_host::inspect::listener_table(Some(port), Some(&NetnsSpec::Pid(pid))) {
            c.listeners = ls;
            c.listeners_read = true;
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
