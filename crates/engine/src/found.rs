//! Found stage (issues 10, 12): the dialled address is no address of conndoc's own
//! namespace, yet a connection to it failed, and no flag names a server. If another
//! network namespace on this machine owns it (a container's bridge address, a pod IP on
//! `cni0`, a lab namespace's veth address), find that namespace and inspect it as the target
//! host with the dialled port. The facts go to `Evidence::found`.

use crate::{backend, skip, Options};
use conndoc_facts::host::{InspectScope, Listener};
use conndoc_facts::nat::{FoundFacts, NetnsIdentity, NetnsOwner};
use conndoc_facts::{ConnectKind, Evidence};
use conndoc_host::{InspectRequest, NetnsSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Time the namespace search may take (and never more than the connect timeout).
const SEARCH_DEADLINE: Duration = Duration::from_millis(500);
/// Listeners on other ports kept from the found namespace (for wrong-port).
const OTHER_LISTENERS: usize = 16;
/// The check name of a search that could not run.
pub(crate) const CHECK: &str = "owner namespace search";

/// The failed dialled address to look for, when the stage applies.
fn wanted(ev: &Evidence, opts: &Options) -> Option<IpAddr> {
    if opts.no_host || opts.ssh.is_some() || opts.netns.is_some() || opts.netns_pid.is_some() {
        return None;
    }
    // Something else already explains where the connection goes.
    if ev.host.is_some() || ev.backend.is_some() || !backend::worth_following(ev) {
        return None;
    }
    let kube = ev.kube.as_ref();
    let protocol_failed = ev.protocol.as_ref().is_some_and(|pf| pf.probes.iter().any(|p| p.error.is_some()));
    ev.probes
        .iter()
        // What a socket table explains: a refusal, a close right after the handshake, or a
        // protocol failure. A timeout is a drop on the way, which the listeners do not show.
        .filter(|p| p.kind == ConnectKind::Refused || p.peer_close.is_some() || (p.ok() && protocol_failed))
        .map(|p| p.address)
        .filter(|a| !crate::host::is_local(ev, a) && !a.is_multicast())
        // A Service address is kube-proxy's, not a namespace's: the kube stage follows it.
        .find(|a| kube.is_none_or(|k| k.for_address(*a).is_none()))
}

/// The namespaces on this machine, listed once for a whole batch (`conndoc check`) on the
/// first target that needs them: each target then only looks its address up (a batch of
/// container targets would otherwise walk /proc once per target).
#[derive(Default)]
pub(crate) struct Namespaces(std::sync::OnceLock<(Vec<conndoc_host::nsfind::Candidate>, bool)>);

impl Namespaces {
    fn find(&self, addr: IpAddr, skip: &[u64], deadline: Duration, mac: Option<&str>) -> conndoc_host::nsfind::Search {
        let start = std::time::Instant::now();
        let (all, truncated) =
            self.0.get_or_init(|| conndoc_host::nsfind::namespaces(conndoc_host::nsfind::MAX_NAMESPACES));
        // The listing counts against the first lookup's deadline, as in a single diagnose.
        let left = deadline.saturating_sub(start.elapsed());
        let mut s = conndoc_host::nsfind::find_owner_among(all, *truncated, addr, skip, left, mac);
        s.elapsed = start.elapsed();
        s
    }
}

pub(crate) fn run(ev: &mut Evidence, opts: &Options, shared: Option<&Namespaces>) {
    let Some(addr) = wanted(ev, opts) else { return };
    if !ev.client.privileges.cap_sys_admin {
        skip(
            ev,
            CHECK,
            format!(
                "{addr} is not an address of conndoc's network namespace; finding whether another namespace on this machine owns it means entering each one, which needs CAP_SYS_ADMIN"
            ),
            Some("run conndoc with sudo, or name the namespace: --netns NAME|PATH or --netns-pid PID".into()),
        );
        return;
    }
    let mut f = FoundFacts {
        address: SocketAddr::new(addr, ev.target.port.get()),
        netns: None,
        owner: None,
        host: None,
        not_inspected: None,
        owners: Vec::new(),
        owner_choice: None,
        other_listeners: Vec::new(),
        searched: 0,
        search_us: 0,
    };
    let skip_ns: Vec<u64> = conndoc_host::procs::current_netns().into_iter().collect();
    // The MAC our neighbour table has for the address picks the right holder when several
    // namespaces (separate bridges, parallel labs) carry the same address.
    let mac = backend::neighbour_mac(opts, addr);
    let deadline = SEARCH_DEADLINE.min(opts.timeout);
    // The engine's record first: every engine gives its first container 172.17.0.2 and a MAC
    // derived from it, so neither the address nor the MAC tells two engines' containers apart.
    let search = || match shared {
        Some(n) => n.find(addr, &skip_ns, deadline, mac.as_deref()),
        None => conndoc_host::nsfind::find_owner(addr, &skip_ns, deadline, mac.as_deref()),
    };
    let s = match backend::engine_owner(ev, addr) {
        Some((pid, inode)) => {
            let engine =
                NetnsIdentity { inode, paths: Vec::new(), pids: vec![pid], entered_by: format!("/proc/{pid}/ns/net") };
            // Still searched: another engine's container (or any namespace) may hold the
            // same address, and the report lists every owner.
            let all = search();
            let mut owners = if all.owners.is_empty() { all.found.into_iter().collect() } else { all.owners };
            match owners.iter_mut().find(|o| o.inode == inode) {
                Some(o) => o.pids = engine.pids.clone(),
                None => owners.insert(0, engine.clone()),
            }
            let many = owners.len() > 1;
            conndoc_host::nsfind::Search {
                found: Some(engine),
                owners: if many { owners } else { Vec::new() },
                chosen_because: many.then(|| {
                    format!(
                        "the container engine conndoc asked places its running container at {addr} there (its pid {pid}); the address and the MAC cannot tell engines' containers apart"
                    )
                }),
                searched: 0,
                elapsed: Duration::ZERO,
                incomplete: None,
            }
        }
        None => search(),
    };
    f.owners = s.owners.clone();
    f.owner_choice = s.chosen_because.clone();
    f.searched = s.searched;
    f.search_us = u64::try_from(s.elapsed.as_micros()).unwrap_or(u64::MAX);
    let Some(id) = s.found else {
        // Most failing targets are other machines: nothing to say beyond the search itself.
        f.not_inspected = Some(match s.incomplete {
            Some(why) => format!("no namespace searched owns {addr} ({} searched; {why})", s.searched),
            None => format!("no network namespace on this machine owns {addr} ({} searched)", s.searched),
        });
        ev.found = Some(f);
        return;
    };
    f.owner = owner(ev, &id, addr);
    inspect(ev, &mut f, id);
    if f.host.is_some() {
        // The server side was inspected after all — in the namespace that owns the address.
        ev.skipped.retain(|s| s.check != "server-side inspection");
        // Nor is it "another host": its firewall was just not read by this run.
        let flag = f.netns.as_ref().map(|n| n.entered_by.clone()).unwrap_or_default();
        for s in ev.skipped.iter_mut().filter(|s| s.check == "firewall of the target host") {
            if s.reason.contains("is another host") {
                s.reason = format!(
                    "{addr} is {} on this machine, not another host; its firewall rules were not read by this run",
                    f.describe()
                );
                // Scheme and authority only: the input may hold a password.
                let t = format!("{}://{}", ev.target.scheme, ev.target.authority());
                s.hint = Some(format!("conndoc diagnose {t} --netns {flag} reads them"));
            }
        }
    }
    ev.found = Some(f);
}

/// The container whose namespace this is: the engine's (already asked by the container
/// stage), else the id in a member process's cgroup.
fn owner(ev: &Evidence, id: &NetnsIdentity, addr: IpAddr) -> Option<NetnsOwner> {
    if let Some(c) = ev
        .containers
        .as_ref()
        .and_then(|cf| cf.containers.iter().find(|c| c.netns_inode == Some(id.inode)).or_else(|| cf.by_address(addr)))
    {
        return Some(NetnsOwner {
            container: Some(c.name().to_string()),
            container_id: Some(c.id.clone()),
            source: Some("docker".into()),
        });
    }
    let cg = id.pids.iter().find_map(|&p| conndoc_container::cgroup::of_pid(p))?;
    Some(NetnsOwner {
        container: Some(cg.id.chars().take(12).collect()),
        container_id: Some(cg.id),
        source: Some("cgroup".into()),
    })
}

fn inspect(ev: &mut Evidence, f: &mut FoundFacts, id: NetnsIdentity) {
    let spec = NetnsSpec::Named(id.entered_by.clone());
    let req = InspectRequest {
        port: ev.target.port,
        expect: ev.options.expect_process.clone(),
        scope: InspectScope::Found,
        netns: Some(spec),
        privileges: ev.client.privileges.clone(),
        thorough: true,
        addresses: None,
    };
    // The namespace's known pids first as the listeners' owners (checked, never trusted).
    let hint = backend::owner_hint(&id.pids, req.expect.as_deref());
    match conndoc_host::inspect::inspect_hinted(&req, None, &hint) {
        Ok((facts, skipped)) => {
            f.host = Some(facts);
            ev.skipped.extend(skipped);
            let port = ev.target.port.get();
            let others =
                conndoc_host::inspect::listener_table_hinted(None, req.netns.as_ref(), &hint).unwrap_or_default();
            f.other_listeners =
                others.into_iter().filter(|l: &Listener| l.port() != port).take(OTHER_LISTENERS).collect();
        }
        Err(e) => {
            f.not_inspected = Some(e.to_string());
            skip(
                ev,
                "found namespace inspection",
                format!("{}: {e}", id.describe()),
                Some("entering another network namespace needs root (CAP_SYS_ADMIN): run conndoc with sudo".into()),
            );
        }
    }
    f.netns = Some(id);
}
