//! Backend stage (issue 10): when the dialled port is forwarded — a userland proxy such as
//! `docker-proxy` holds it, or a DNAT/redirect rule in a `nat` hook translates it — find
//! the network namespace that owns the backend address and inspect it there, with the
//! backend's port. The facts go to `Evidence::backend`; the front host stays in `host`.

use crate::Options;
use conndoc_facts::container::{ContainerState, IdentitySource};
use conndoc_facts::host::{HostFacts, InspectScope, Listener};
use conndoc_facts::nat::{BackendFacts, NetnsIdentity, ProxyRef, Translation, TranslationKind};
use conndoc_facts::{Evidence, Port, SkippedCheck};
use conndoc_host::{InspectRequest, NetnsSpec};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Time the namespace search may take.
const SEARCH_DEADLINE: Duration = Duration::from_millis(500);
/// Listeners on other ports kept from the backend namespace (for wrong-port).
const OTHER_LISTENERS: usize = 16;

/// Whether anything failed that the backend could explain: a failed or closed connect, or
/// a protocol exchange that ended in an error.
pub(crate) fn worth_following(ev: &Evidence) -> bool {
    ev.probes.iter().any(|p| !p.ok())
        || ev.protocol.as_ref().is_some_and(|pf| pf.probes.iter().any(|p| p.error.is_some()))
}

/// The userland proxy holding the dialled port, and where it forwards to.
pub(crate) fn proxy_translation(ev: &Evidence, h: &HostFacts) -> Option<Translation> {
    let port = ev.target.port.get();
    let dialled: Vec<IpAddr> = ev.probes.iter().map(|p| p.address).collect();
    for l in h.listeners.iter().filter(|l| l.port() == port && dialled.iter().any(|a| l.accepts(*a))) {
        let Some(p) = &l.process else { continue };
        let args = conndoc_host::procs::cmdline_args(p.pid);
        if !conndoc_host::proxy::is_docker_proxy(&p.comm, &args) {
            continue;
        }
        let Some(a) = conndoc_host::proxy::parse_docker_proxy(&args) else { continue };
        if a.proto != "tcp" {
            continue;
        }
        return Some(Translation {
            kind: TranslationKind::Proxy,
            from: a.host,
            to: a.backend,
            hook: None,
            rule: None,
            proxy: Some(ProxyRef { pid: p.pid, comm: p.comm.clone(), cmdline: p.cmdline.clone() }),
            choices: Vec::new(),
            choices_total: 0,
            element: None,
            picked: None,
        });
    }
    None
}

/// Whether a userland proxy holds the dialled port and every dialled address is loopback:
/// then no DNAT rule can come first (Docker's rules skip 127.0.0.0/8) and the proxy is
/// followed without reading the rules.
pub(crate) fn proxied(ev: &Evidence) -> bool {
    ev.probes.iter().all(|p| p.address.is_loopback())
        && ev.host.as_ref().and_then(|front| proxy_translation(ev, front)).is_some()
}

/// The options that inspect the namespace the found stage entered as the target host, when
/// it was found owning the dialled address but nothing there takes the port: a DNAT or
/// redirect rule in its prerouting may forward it, as with `--netns` naming it.
pub(crate) fn through_found(ev: &Evidence, opts: &Options) -> Option<Options> {
    if ev.backend.is_some() || opts.no_host {
        return None;
    }
    let fd = ev.found.as_ref()?;
    let h = fd.host.as_ref()?;
    let path = fd.netns.as_ref().map(|n| n.entered_by.clone()).filter(|p| !p.is_empty())?;
    let port = fd.address.port();
    if h.listeners.iter().any(|l| l.port() == port && l.accepts(fd.address.ip())) {
        return None;
    }
    Some(Options { netns: Some(path), netns_pid: None, ..opts.clone() })
}

pub(crate) fn run(ev: &mut Evidence, opts: &Options, nat: Option<Translation>) {
    if opts.no_host || !worth_following(ev) {
        return;
    }
    let proxy = ev.host.as_ref().and_then(|front| proxy_translation(ev, front));
    // A DNAT rule that matched the connection acted before any socket saw the SYN: it is
    // the real path (Docker's DOCKER chain for clients elsewhere and for this host's own
    // non-loopback addresses); docker-proxy holding the same port is shown beside it.
    let (t, also) = match (nat, proxy) {
        (Some(n), p) => (n, p),
        (None, Some(p)) => (p, None),
        (None, None) => return,
    };
    let mut b = if t.choices.len() > 1 { follow_range(ev, opts, t) } else { follow(ev, opts, t) };
    b.also = also;
    ev.backend = Some(b);
}

/// Backends of one range rule inspected at most (each is a namespace search and a socket
/// table read); the rest are listed, not inspected.
const MAX_RANGE_FOLLOWED: usize = 16;

/// A rule translating to a range: the kernel picks one backend per connection, so each
/// is inspected (the first [`MAX_RANGE_FOLLOWED`]) and the first one where nothing takes
/// the connection is the backend the verdict speaks of — a range where one backend fails
/// fails some connections. The translation says which one was inspected and why.
fn follow_range(ev: &mut Evidence, opts: &Options, t: Translation) -> BackendFacts {
    let mut all = Vec::new();
    for c in t.choices.iter().take(MAX_RANGE_FOLLOWED) {
        let mut one = t.clone();
        one.to = *c;
        let skipped = ev.skipped.len();
        let b = follow(ev, opts, one);
        all.push((b, ev.skipped.split_off(skipped)));
    }
    let serving: Vec<Option<bool>> = all.iter().map(|(b, _)| serves(b)).collect();
    let pick = serving.iter().position(|s| *s == Some(false)).unwrap_or(0);
    let state = |i: usize| match serving[i] {
        Some(true) => "takes connections",
        Some(false) => "nothing takes the connection",
        None => "not inspected",
    };
    let listed: Vec<String> = (0..all.len()).map(|i| format!("{} {}", t.choices[i], state(i))).collect();
    let not_followed = t.choices_total.saturating_sub(all.len() as u64);
    let why = if serving[pick] == Some(false) {
        format!("{} inspected: the first backend where nothing takes the connection", t.choices[pick])
    } else {
        format!("{} inspected: no backend inspected refuses the connection", t.choices[pick])
    };
    let more = if not_followed > 0 { format!("; {not_followed} more not inspected") } else { String::new() };
    let (mut chosen, skipped) = all.swap_remove(pick);
    ev.skipped.extend(skipped);
    chosen.translation.picked = Some(format!("{why} ({}{more})", listed.join(", ")));
    chosen
}

/// Whether the inspected backend takes connections on its address and port.
fn serves(b: &BackendFacts) -> Option<bool> {
    let h = b.host.as_ref()?;
    let to = b.translation.to;
    Some(h.listeners.iter().any(|l| l.port() == to.port() && l.accepts(to.ip())))
}

/// Find the namespace that owns `t.to` and inspect it there with the backend's port. The
/// front is the inspected host, or conndoc's own namespace when none was (a ClusterIP is
/// no address of the node's). Skipped checks go to `ev`; the facts are returned.
pub(crate) fn follow(ev: &mut Evidence, opts: &Options, t: Translation) -> BackendFacts {
    let mut skipped = Vec::new();
    let b = follow_from(ev, opts, t, &mut skipped);
    ev.skipped.extend(skipped);
    b
}

/// [`follow`] reading `ev` only (several endpoints are followed at once): the checks that
/// could not run go to `skipped`.
pub(crate) fn follow_from(
    ev: &Evidence,
    opts: &Options,
    t: Translation,
    skipped: &mut Vec<SkippedCheck>,
) -> BackendFacts {
    let mut b = BackendFacts {
        translation: t.clone(),
        also: None,
        netns: None,
        host: None,
        not_inspected: None,
        owners: Vec::new(),
        owner_choice: None,
        other_listeners: Vec::new(),
        searched: 0,
        search_us: 0,
    };
    let to = t.to.ip();
    let front = ev.host.as_ref();
    let front_inode = front.and_then(|f| f.inspected.as_ref()).and_then(|i| i.netns_inode);
    let front_local = front.map(|f| &f.local_addresses).unwrap_or(&ev.client.local_addresses);
    // The backend is the front namespace itself (a redirect, a DNAT to one of its own
    // addresses): inspect it again with the backend's port.
    let same = t.kind == TranslationKind::Redirect || to.is_loopback() || front_local.contains(&to);
    let entered: Option<(Option<NetnsSpec>, NetnsIdentity)> = if same {
        let spec = front_spec(opts);
        let id = NetnsIdentity {
            inode: front_inode.unwrap_or(0),
            entered_by: spec.as_ref().map(|s| s.path().display().to_string()).unwrap_or_default(),
            ..Default::default()
        };
        Some((spec, id))
    } else if let Some((pid, inode)) = engine_owner(ev, to) {
        // The engine says which container has the address: its namespace, not the first
        // one an address search meets (every engine's first container is 172.17.0.2).
        let path = format!("/proc/{pid}/ns/net");
        let engine = NetnsIdentity { inode, paths: Vec::new(), pids: vec![pid], entered_by: path };
        // Still searched: another engine's container (or any namespace) may hold the same
        // address, and the report lists every owner.
        let mut skip_ns: Vec<u64> = front_inode.into_iter().collect();
        skip_ns.extend(conndoc_host::procs::current_netns());
        let s = conndoc_host::nsfind::find_owner(to, &skip_ns, SEARCH_DEADLINE.min(opts.timeout), None);
        let mut owners = if s.owners.is_empty() { s.found.into_iter().collect() } else { s.owners };
        match owners.iter_mut().find(|o| o.inode == inode) {
            Some(o) => o.pids = engine.pids.clone(),
            None => owners.insert(0, engine.clone()),
        }
        if owners.len() > 1 {
            b.owners = owners;
            b.owner_choice = Some(format!(
                "the container engine conndoc asked places its running container at {to} there (its pid {pid}); the address and the MAC cannot tell engines' containers apart"
            ));
        }
        Some((Some(NetnsSpec::Pid(pid)), engine))
    } else {
        let mut skip_ns: Vec<u64> = front_inode.into_iter().collect();
        skip_ns.extend(conndoc_host::procs::current_netns());
        // Which MAC the front namespace reaches the backend at: the namespace whose
        // interface has it is the one the traffic goes to (an address may repeat).
        let mac = neighbour_mac(opts, to);
        let s = conndoc_host::nsfind::find_owner(to, &skip_ns, SEARCH_DEADLINE.min(opts.timeout), mac.as_deref());
        b.searched = s.searched;
        b.search_us = u64::try_from(s.elapsed.as_micros()).unwrap_or(u64::MAX);
        b.owners = s.owners.clone();
        b.owner_choice = s.chosen_because.clone();
        match s.found {
            Some(id) => Some((Some(NetnsSpec::Named(id.entered_by.clone())), id)),
            None => {
                b.not_inspected = Some(match s.incomplete {
                    Some(why) => format!("no namespace searched owns {to} ({} searched; {why})", s.searched),
                    None => format!("no network namespace on this machine owns {to} ({} searched)", s.searched),
                });
                None
            }
        }
    };
    if let Some((spec, id)) = entered {
        inspect_backend(ev, skipped, &mut b, spec, id, t.to);
    }
    b
}

/// The one running container the engine places at `to`, as (its first pid, its netns
/// inode), when that pid still runs in that namespace (not a reused pid).
pub(crate) fn engine_owner(ev: &Evidence, to: IpAddr) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let cf = ev.containers.as_ref()?;
    let mut at = cf.containers.iter().filter(|c| {
        c.source == IdentitySource::EngineApi && c.state == ContainerState::Running && c.addresses.contains(&to)
    });
    let c = at.next()?;
    if at.next().is_some() {
        return None; // two containers of this engine at one address: let the search decide
    }
    let (pid, inode) = (c.pid?, c.netns_inode?);
    let now = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?.ino();
    (now == inode).then_some((pid, inode))
}

/// The pids to try first as the owners of a namespace's listeners: those known to run there,
/// of the expected program when one is expected (a socket several processes hold — a
/// supervisor and its child, a forked child — is then named after the same process as the
/// search of the whole table would name it).
pub(crate) fn owner_hint(pids: &[u32], expect: Option<&str>) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|&p| {
            expect.is_none_or(|x| {
                conndoc_host::procs::comm(p).is_some_and(|c| conndoc_host::procs::is_program(&c, &[], x))
            })
        })
        .collect()
}

/// The link-layer address the front namespace's neighbour table holds for `to`.
pub(crate) fn neighbour_mac(opts: &Options, to: IpAddr) -> Option<String> {
    let read = || conndoc_netlink::neighbours().ok();
    let table = match front_spec(opts) {
        Some(spec) => conndoc_host::netns::run_in(&spec, read).ok().flatten(),
        None => read(),
    }?;
    table.into_iter().find(|n| n.address == to && n.nud & NUD_USABLE != 0).and_then(|n| n.lladdr)
}

/// NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80 | 0x40;

/// The namespace the front host was inspected in, to enter again (None: conndoc's own).
fn front_spec(opts: &Options) -> Option<NetnsSpec> {
    opts.netns_pid.map(NetnsSpec::Pid).or_else(|| opts.netns.clone().map(NetnsSpec::Named))
}

fn inspect_backend(
    ev: &Evidence,
    skipped_out: &mut Vec<SkippedCheck>,
    b: &mut BackendFacts,
    spec: Option<NetnsSpec>,
    id: NetnsIdentity,
    to: SocketAddr,
) {
    let Some(port) = Port::new(to.port()) else {
        b.not_inspected = Some(format!("backend port {} is not a port", to.port()));
        return;
    };
    let req = InspectRequest {
        port,
        expect: ev.options.expect_process.clone(),
        scope: if spec.is_none() { InspectScope::Local } else { InspectScope::Found },
        netns: spec,
        privileges: ev.client.privileges.clone(),
        thorough: true,
        addresses: None,
    };
    // The pids known to run in the namespace (the engine's container process, or those the
    // search met) are tried first as the listeners' owners: a container's listener is
    // usually its own process's, and the process table is then not searched.
    let hint = owner_hint(&id.pids, req.expect.as_deref());
    match conndoc_host::inspect::inspect_hinted(&req, None, &hint) {
        Ok((facts, skipped)) => {
            b.host = Some(facts);
            skipped_out.extend(skipped);
            // Listeners on other ports of the backend: what wrong-port names.
            let others =
                conndoc_host::inspect::listener_table_hinted(None, req.netns.as_ref(), &hint).unwrap_or_default();
            b.other_listeners =
                others.into_iter().filter(|l: &Listener| l.port() != to.port()).take(OTHER_LISTENERS).collect();
        }
        Err(e) => {
            b.not_inspected = Some(e.to_string());
            skipped_out.push(SkippedCheck {
                check: "backend inspection".into(),
                reason: format!("{}: {e}", id.describe()),
                hint: Some(
                    "entering another network namespace needs root (CAP_SYS_ADMIN): run conndoc with sudo".into(),
                ),
            });
        }
    }
    b.netns = Some(id);
}
