//! Host stage (issue 3): counters before the probe, inspection after it.
//!
//! The target host is inspected when its address is on one of this host's interfaces (or
//! is loopback), or when the user names its network namespace (`--netns`, `--netns-pid`).
//! Probes always leave from conndoc's own namespace; only the inspection enters the
//! target's, on a thread of its own.

use crate::{skip, Options};
use conndoc_facts::host::InspectScope;
use conndoc_facts::{Evidence, Host};
use conndoc_host::{Baseline, InspectRequest, NetnsSpec};
use std::net::IpAddr;

pub(crate) struct HostStage {
    req: InspectRequest,
    base: Option<Baseline>,
    port_map: Option<conndoc_facts::host::InspectedPortMap>,
}

/// Whether `addr` is this namespace's own: loopback, or on a local interface.
pub(crate) fn is_local(ev: &Evidence, addr: &IpAddr) -> bool {
    addr.is_loopback()
        || addr.is_unspecified()
        || ev.client.local_addresses.contains(addr)
        || matches!(addr, IpAddr::V6(a) if a.to_ipv4_mapped().is_some_and(|v4| ev.client.local_addresses.contains(&IpAddr::V4(v4))))
}

/// Whether `ip` is one of an inspected namespace's own addresses (`local`: the addresses on
/// its interfaces). Every 127.0.0.0/8 address is, once loopback holds one of them: the
/// kernel routes the whole block to `lo` (`local 127.0.0.0/8` in the local table), so a
/// refusal from 127.0.0.5 is this host's stack answering, as from 127.0.0.1.
pub(crate) fn owns_address(local: &[IpAddr], ip: &IpAddr) -> bool {
    local.contains(ip) || (ip.is_loopback() && ip.is_ipv4() && local.iter().any(|a| a.is_ipv4() && a.is_loopback()))
}

/// `own_addresses`: conndoc's namespace's interface addresses, as the client stage read them
/// (reused when that is the namespace inspected).
pub(crate) fn begin(
    ev: &Evidence,
    opts: &Options,
    addrs: &[IpAddr],
    own_addresses: Option<Vec<IpAddr>>,
) -> Option<HostStage> {
    if opts.no_host {
        return None;
    }
    let ours = conndoc_host::procs::current_netns();
    let (scope, netns) = if let Some(pid) = opts.netns_pid {
        if ours.is_some() && conndoc_host::procs::netns_of(pid) == ours {
            // The process shares our namespace: nothing to enter, and no container.
            (InspectScope::Local, None)
        } else {
            (InspectScope::NetnsPid, Some(NetnsSpec::Pid(pid)))
        }
    } else if let Some(n) = &opts.netns {
        (InspectScope::Netns, Some(NetnsSpec::Named(n.clone())))
    } else if !addrs.is_empty() && addrs.iter().any(|a| is_local(ev, a)) {
        (InspectScope::Local, None)
    } else {
        return None;
    };
    // Inside a container's namespace the dialled host port may be published to another
    // port of the container (`-p 16379:6379`): inspect that one, and say so.
    let port_map = match (&netns, crate::namespace_pid(opts)) {
        (Some(_), Some(pid)) => crate::container::port_map_for(pid, ev.target.port),
        _ => None,
    };
    let same_namespace = netns.is_none();
    let req = InspectRequest {
        port: port_map.as_ref().map_or(ev.target.port, |m| m.inspected),
        expect: ev.options.expect_process.clone(),
        scope,
        netns,
        privileges: ev.client.privileges.clone(),
        thorough: false,
        addresses: own_addresses.filter(|_| same_namespace),
    };
    // A failure here shows again (and is recorded) in `end`.
    let base = conndoc_host::baseline(&req).ok();
    Some(HostStage { req, base, port_map })
}

pub(crate) fn end(stage: Option<HostStage>, ev: &mut Evidence, opts: &Options) {
    let Some(stage) = stage else {
        if !opts.no_host {
            remote_skip(ev, opts);
        }
        return;
    };
    let mut req = stage.req;
    req.thorough = ev.probes.is_empty() || ev.probes.iter().any(|p| !p.ok());
    // The pid a Redis server reported about itself (INFO process_id) is most likely the
    // listener's owner: trying it first spares a search of the process table. The host
    // crate checks it against the socket's inode, so a pid from another pid namespace is
    // harmless.
    let hint: Vec<u32> = ev
        .protocol
        .iter()
        .flat_map(|p| &p.probes)
        .filter_map(|pr| pr.redis.as_ref()?.info.as_ref()?.process_id)
        .collect();
    match conndoc_host::inspect::inspect_hinted(&req, stage.base.as_ref(), &hint) {
        Ok((mut facts, skipped)) => {
            facts.port_map = stage.port_map;
            ev.host = Some(facts);
            ev.skipped.extend(skipped);
        }
        Err(e) => {
            let denied = matches!(&e, conndoc_host::HostError::Netns { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied);
            let hint = if denied {
                Some("entering another network namespace needs root (CAP_SYS_ADMIN): run conndoc with sudo".to_string())
            } else {
                None
            };
            skip(ev, "server-side inspection", e.to_string(), hint);
        }
    }
}

/// The target is another machine: say which server-side checks did not run, and the exact
/// command that runs them there.
fn remote_skip(ev: &mut Evidence, opts: &Options) {
    if ev.probes.is_empty() || ev.probes.iter().all(|p| p.ok()) {
        return;
    }
    let t = &ev.target;
    let host = match &t.host {
        Host::Ip(IpAddr::V6(a)) => format!("[{a}]"),
        h => h.to_string(),
    };
    let mut cmd = format!("conndoc diagnose {}://{}:{}", t.scheme, host, t.port);
    if let Some(x) = &opts.expect_process {
        cmd.push_str(&format!(" --expect {x}"));
    }
    skip(
        ev,
        "server-side inspection",
        format!(
            "{} is not on this host, so its listeners, their owning processes, accept queues, fd limits, \
             kernel counters (ListenOverflows, ListenDrops, SyncookiesSent), sysctls and service state were not read",
            t.host
        ),
        Some(format!(
            "read them over SSH: conndoc diagnose … --ssh [USER@]{host}   (or on the server run: sudo {cmd})"
        )),
    );
}
