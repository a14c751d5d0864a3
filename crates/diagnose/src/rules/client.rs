//! Client-side rules: resolution, and what each connect's errno proves on its own.

use crate::{Cause, Finding, Findings};
use conndoc_facts::resolve::{AddrSource, DnsOutcome};
use conndoc_facts::{ConnectKind, ConnectProbe, Evidence, Micros};
use serde_json::json;
use std::cell::RefCell;

pub fn run(ev: &Evidence, out: &mut Findings) {
    if !ev.resolution.literal && ev.resolution.system.addresses.is_empty() {
        resolution_failed(ev, out);
        return;
    }
    hosts_override(ev, out);
    for p in ev.probes.iter().filter(|p| !p.ok()) {
        match p.kind {
            ConnectKind::Refused => refused(ev, p, out),
            ConnectKind::Timeout => timeout(ev, p, out),
            ConnectKind::HostUnreachable => host_unreachable(ev, p, out),
            ConnectKind::NetworkUnreachable => network_unreachable(ev, p, out),
            ConnectKind::NoLocalAddress => no_local_port(ev, p, out),
            ConnectKind::PermissionDenied => local_filter(ev, p, out),
            ConnectKind::Reset | ConnectKind::Other | ConnectKind::Connected => {}
        }
    }
}

pub(crate) fn addr(p: &ConnectProbe) -> String {
    match p.address {
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", p.port),
        a => format!("{a}:{}", p.port),
    }
}

thread_local! {
    /// The connect items built during the diagnosis running on this thread, by probe: the
    /// client and the host rules both cite the same connect, and building its item (text
    /// and JSON) twice was a third of a refused port's diagnosis in `conndoc check`.
    /// Looked up by value, so an item is the one `build_connect_item` gives for that probe.
    static CONNECT_ITEMS: RefCell<Vec<(ConnectProbe, (String, serde_json::Value))>> = const { RefCell::new(Vec::new()) };
}

/// At most this many items are kept (a diagnosis has one probe per address, ≤ 32).
const CONNECT_ITEMS_KEPT: usize = 64;

/// Drop the items of the last diagnosis (called before and after each one).
pub(crate) fn forget_connect_items() {
    CONNECT_ITEMS.with(|c| c.borrow_mut().clear());
}

/// The "connect" evidence item every per-address finding carries.
pub(crate) fn connect_item(p: &ConnectProbe) -> (String, serde_json::Value) {
    // Only a verdict is wanted: the item would be dropped (report::evidence_kept).
    if !crate::report::evidence_wanted() {
        return (String::new(), serde_json::Value::Null);
    }
    if let Some(hit) = CONNECT_ITEMS.with(|c| c.borrow().iter().find(|(q, _)| q == p).map(|(_, item)| item.clone())) {
        return hit;
    }
    let item = build_connect_item(p);
    CONNECT_ITEMS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < CONNECT_ITEMS_KEPT {
            c.push((p.clone(), item.clone()));
        }
    });
    item
}

fn build_connect_item(p: &ConnectProbe) -> (String, serde_json::Value) {
    use std::fmt::Write as _;
    let errno = p.errno.as_ref().map(|e| e.as_str()).unwrap_or("-");
    // One buffer for the whole sentence (four `format!`s before).
    let mut text = String::with_capacity(96);
    let _ = match p.address {
        std::net::IpAddr::V6(a) => write!(text, "connect [{a}]:{}", p.port),
        a => write!(text, "connect {a}:{}", p.port),
    };
    let _ = write!(text, " → {} ({errno}) after {}", p.kind.as_str(), p.elapsed_us);
    if let Some(l) = p.local {
        let _ = write!(text, " from {l}");
    }
    if let Some(n) = p.syn_retransmits {
        let _ = write!(text, ", {n} SYN retransmission(s)");
    }
    (text, json!(p))
}

fn with_connect(f: Finding, p: &ConnectProbe) -> Finding {
    let (text, data) = connect_item(p);
    f.evidence("connect", text, data)
}

fn resolution_failed(ev: &Evidence, out: &mut Findings) {
    let r = &ev.resolution;
    let name = ev.target.host.to_string();
    let sys_text = match (&r.system.error, r.system.timed_out) {
        (_, true) => format!("system resolver: no answer for {name} within {}", r.system.elapsed_us),
        (Some(e), _) => format!("system resolver (getaddrinfo) for {name}: {e}"),
        (None, _) => format!("system resolver returned no address for {name}"),
    };
    let dns = r.dns.as_ref();
    let silent = dns.is_some_and(|d| d.all_servers_silent());
    let mut f = if silent {
        let servers: Vec<String> = dns.map(|d| d.servers.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
        Finding::critical(
            Cause::DnsServerUnreachable,
            format!("{name} could not be resolved: no nameserver answered ({})", servers.join(", ")),
        )
        .fix(format!(
            "Check that the nameservers in {} are up and reachable: `dig @{} {name}`",
            dns.map(|d| d.resolv_conf.as_str()).unwrap_or("/etc/resolv.conf"),
            servers.first().map(String::as_str).unwrap_or("SERVER")
        ))
        .fix("Check the path to them: `ip route get SERVER`, and firewall rules for UDP/TCP port 53.")
        .fix("Fix /etc/resolv.conf (or the DHCP/systemd-resolved settings that write it) to name working nameservers.")
    } else {
        let how = dns
            .map(|d| {
                if d.queries.iter().any(|q| matches!(q.outcome, DnsOutcome::Malformed { .. })) {
                    "a nameserver answered, but its answer was malformed (see the dns evidence)"
                } else if d.queries.iter().any(|q| q.outcome == DnsOutcome::NxDomain) {
                    "the nameservers say the name does not exist (NXDOMAIN)"
                } else if d.queries.iter().any(|q| matches!(q.outcome, DnsOutcome::Rcode { .. })) {
                    "the nameservers refused or failed to answer it"
                } else {
                    "the nameservers have no A or AAAA record for it"
                }
            })
            .unwrap_or("the resolver returned no address");
        Finding::critical(Cause::DnsNoAddress, format!("{name} resolves to no address: {how}"))
            .fix(format!("Check the spelling and the domain: `getent ahosts {name}` and `dig {name} A` / `dig {name} AAAA`."))
            .fix("If the record should exist, add or fix it at the authoritative DNS server (or the service discovery that publishes it).")
            .fix(format!("As a stopgap, a line in /etc/hosts can pin {name} to its address (remember to remove it later)."))
    };
    f = f.evidence("resolver", sys_text, json!(r.system));
    if let Some(d) = dns {
        f = f.evidence(
            "resolv-conf",
            format!(
                "{}: nameservers {:?}, search {:?}",
                d.resolv_conf,
                d.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                d.search
            ),
            json!({"path": d.resolv_conf, "servers": d.servers, "search": d.search}),
        );
        if let Some(e) = &d.error {
            f = f.evidence("resolv-conf", e.clone(), json!({"error": e}));
        }
        for q in &d.queries {
            f = f.evidence(
                "dns-query",
                format!("{} {} {} → {}", q.server, q.qtype.as_str(), d.name, outcome_text(&q.outcome, q.elapsed_us)),
                json!(q),
            );
        }
    }
    out.push(f);
}

fn outcome_text(o: &DnsOutcome, t: Micros) -> String {
    match o {
        DnsOutcome::Answer { addresses, .. } => {
            format!("{} in {t}", addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
        }
        DnsOutcome::NoData => format!("no record of that type (NOERROR) in {t}"),
        DnsOutcome::NxDomain => format!("NXDOMAIN in {t}"),
        DnsOutcome::Rcode { rcode } => format!("{rcode} in {t}"),
        DnsOutcome::Timeout => format!("no answer within {t}"),
        DnsOutcome::Error { message } => format!("error: {message}"),
        DnsOutcome::Malformed { message } => format!("malformed answer: {message}"),
    }
}

/// A hosts-file line sends the name to an address DNS does not give, and that address fails.
fn hosts_override(ev: &Evidence, out: &mut Findings) {
    let Some(dns) = &ev.resolution.dns else { return };
    let dns_addrs = dns.addresses();
    if dns_addrs.is_empty() {
        return; // nothing to compare with: the hosts file is the only source
    }
    for ra in &ev.resolution.system.addresses {
        let AddrSource::HostsFile { path, line } = &ra.source else { continue };
        if dns_addrs.contains(&ra.address) {
            continue;
        }
        let Some(p) = ev.probes.iter().find(|p| p.address == ra.address && !p.ok()) else { continue };
        let name = ev.target.host.to_string();
        let text = ev
            .resolution
            .hosts_entries
            .iter()
            .find(|h| h.line == *line && &h.path == path)
            .map(|h| h.text.clone())
            .unwrap_or_default();
        let dns_list = dns_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        let f = Finding::critical(
            Cause::DnsHostsOverride,
            format!(
                "{path}:{line} sends {name} to {}, which fails ({}); DNS says {dns_list}",
                ra.address,
                p.kind.as_str()
            ),
        )
        .evidence(
            "hosts-line",
            format!("{path}:{line}: {text}"),
            json!({"path": path, "line": line, "address": ra.address, "text": text}),
        )
        .evidence(
            "dns-answer",
            format!(
                "DNS ({}) answers {name} with {dns_list}",
                dns.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            ),
            json!({"name": dns.name, "addresses": dns_addrs}),
        );
        let f = with_connect(f, p)
            .fix(format!("Remove or correct line {line} of {path}: it overrides DNS for {name}."))
            .fix(format!("Verify: `getent ahosts {name}` should then print {dns_list}."))
            .fix("If the entry was added on purpose (a migration, a test), point it at the address that serves now.");
        out.push(f);
    }
}

/// The `conndoc listeners` flag that enters the inspected namespace again: the evidence
/// records a pid's namespace as `pid:N`, which only `--netns-pid N` takes.
pub(crate) fn netns_flag(n: &str) -> String {
    match n.strip_prefix("pid:") {
        Some(pid) => format!(" --netns-pid {pid}"),
        None => format!(" --netns {n}"),
    }
}

fn refused(ev: &Evidence, p: &ConnectProbe, out: &mut Findings) {
    let f = Finding::critical(
        Cause::NoListener,
        format!("Nothing accepts connections on {}: the host answered the SYN with a reset (ECONNREFUSED)", addr(p)),
    );
    let f = with_connect(f, p);
    // With the server's socket table read, "check what listens" is done: nothing does.
    let f = match &ev.host {
        Some(h) => {
            let netns = h.inspected.as_ref().and_then(|i| i.netns.as_deref()).map(netns_flag).unwrap_or_default();
            f.fix_with(|| {
                format!(
                    "Start the service that should listen on port {} (its unit, container or supervisor), or point the client at the port it really listens on (`conndoc listeners{netns}` lists what listens there now).",
                    p.port
                )
            })
        }
        None => f
            .fix(format!(
                "On the server, check what listens: `ss -tlnp 'sport = :{}'` (or `conndoc listeners --port {}`).",
                p.port, p.port
            ))
            .fix("Start the service, or point the client at the port it really listens on.")
            .fix("If something listens but only on 127.0.0.1 or another address, change its bind address."),
    };
    let skipped =
        ev.skipped.iter().find(|s| s.check == "server-side inspection" || s.check == "server-side inspection over ssh");
    let f = if let (None, Some(s)) = (&ev.host, skipped) {
        // The server was named (--netns, or it is this host) but could not be read: say so,
        // rather than suggesting what the user already did.
        f.partial(format!(
            "client-side evidence only: the server-side inspection was skipped ({}){}",
            s.reason,
            s.hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default()
        ))
    } else if ev.host.is_none() {
        f.partial(format!(
            "client-side evidence only: run `conndoc diagnose {}` on the server (or with --ssh HOST, or --netns) to read its socket table",
            ev.target.input
        ))
    } else {
        f
    };
    out.push(f);
}

fn neighbour_failed<'a>(ev: &'a Evidence, p: &ConnectProbe) -> Option<&'a conndoc_facts::client::Neighbour> {
    ev.client.neighbours.iter().find(|n| n.address == p.address && matches!(n.state.as_str(), "FAILED" | "INCOMPLETE"))
}

fn route_item(ev: &Evidence, p: &ConnectProbe, f: Finding) -> Finding {
    match ev.client.routes.iter().find(|r| r.destination == p.address) {
        Some(r) => {
            let text = match (&r.error, &r.source, &r.route) {
                (Some(e), _, _) => format!("route lookup for {}: {e}", p.address),
                (None, Some(src), Some(route)) => format!("route to {}: {route} (source {src})", p.address),
                (None, Some(src), None) => format!("route to {}: source {src}", p.address),
                _ => format!("route to {}: none", p.address),
            };
            f.evidence("route", text, json!(r))
        }
        None => f,
    }
}

fn timeout(ev: &Evidence, p: &ConnectProbe, out: &mut Findings) {
    if neighbour_failed(ev, p).is_some() {
        return host_unreachable(ev, p, out);
    }
    let f = Finding::critical(
        Cause::ConnectTimeout,
        format!(
            "{} did not answer within {}: the SYN went unanswered (dropped on the way or at the host)",
            addr(p),
            p.deadline_us
        ),
    );
    let f = route_item(ev, p, with_connect(f, p))
        .fix("Look for a DROP rule on the server and on the path: `nft list ruleset`, `iptables -S` (conndoc names it when run on the server or with --netns).")
        .fix(format!("Confirm the SYN leaves and nothing returns: `tcpdump -ni any host {} and port {}`.", p.address, p.port))
        .fix("Check security groups / network ACLs between client and server, and that the host is up (`ping`, console).");
    out.push(f);
}

fn host_unreachable(ev: &Evidence, p: &ConnectProbe, out: &mut Findings) {
    let neigh = ev.client.neighbours.iter().find(|n| n.address == p.address);
    let why = match neigh {
        Some(n) if matches!(n.state.as_str(), "FAILED" | "INCOMPLETE") => {
            format!("no host answered ARP/neighbour discovery for {} on {} ({})", p.address, n.device, n.state)
        }
        _ => format!(
            "the kernel reported {} (host unreachable)",
            p.errno.as_ref().map(|e| e.as_str()).unwrap_or("EHOSTUNREACH")
        ),
    };
    let mut f =
        with_connect(Finding::critical(Cause::HostUnreachable, format!("{} is unreachable: {why}", p.address)), p);
    if let Some(n) = neigh {
        f = f.evidence(
            "neighbour",
            format!(
                "neighbour {} dev {} {}{}",
                n.address,
                n.device,
                n.state,
                n.lladdr.as_ref().map(|l| format!(" lladdr {l}")).unwrap_or_default()
            ),
            json!(n),
        );
    }
    let f = route_item(ev, p, f)
        .fix(format!(
            "Check that the host at {} is up and on this link: `ip neigh show {}`, `ping {}`.",
            p.address, p.address, p.address
        ))
        .fix("If the address moved or changed, update DNS / the client's configuration.")
        .fix("If a router sent ICMP host-unreachable or admin-prohibited, check its ACLs.");
    out.push(f);
}

fn network_unreachable(ev: &Evidence, p: &ConnectProbe, out: &mut Findings) {
    let f = with_connect(
        Finding::critical(
            Cause::NetworkUnreachable,
            format!("No route to {}: this host has no route for that network (ENETUNREACH)", p.address),
        ),
        p,
    );
    let f = route_item(ev, p, f)
        .fix(format!("Show the decision: `ip route get {}`; list routes: `ip route` / `ip -6 route`.", p.address))
        .fix("Add the missing route or default gateway (or fix the interface that should carry it: `ip link`, `ip addr`).")
        .fix("For IPv6, check that the host has a global IPv6 address and a default route; otherwise connect with -4.");
    out.push(f);
}

fn no_local_port(ev: &Evidence, p: &ConnectProbe, out: &mut Findings) {
    let range = ev.client.local_port_range;
    let usage = ev.client.ephemeral.iter().find(|u| u.destination == p.address);
    let in_use: u32 = usage.map(|u| u.by_state.values().sum()).unwrap_or(0);
    let range_text = range
        .map(|(a, b)| format!("{a}-{b} ({} ports)", u32::from(b).saturating_sub(a.into()) + 1))
        .unwrap_or("unknown".into());
    let mut f = with_connect(
        Finding::critical(
            Cause::EphemeralPortExhaustion,
            format!("No free local port to reach {} (EADDRNOTAVAIL): {in_use} sockets already use the local port range {range_text} towards it", addr(p)),
        ),
        p,
    );
    if let Some((a, b)) = range {
        f = f.evidence(
            "local-port-range",
            format!("net.ipv4.ip_local_port_range = {a} {b}"),
            json!({"low": a, "high": b}),
        );
    }
    match usage {
        Some(u) => {
            let states: Vec<String> = u.by_state.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
            f = f.evidence(
                "sockets-by-state",
                format!(
                    "sockets to {}: {}",
                    addr(p),
                    if states.is_empty() { "none".into() } else { states.join(", ") }
                ),
                json!({"destination": u.destination, "port": u.port, "by_state": u.by_state}),
            );
        }
        None => f = f.partial("the socket table could not be read to count sockets to the target"),
    }
    let f = f
        .fix(format!("See who holds them: `ss -tan dst {}` (count by state; many TIME_WAIT means short-lived connections).", addr(p)))
        .fix("Reuse connections (pooling / keep-alive) instead of opening one per request.")
        .fix("Widen the range: `sysctl -w net.ipv4.ip_local_port_range=\"15000 64000\"`; consider `net.ipv4.tcp_tw_reuse=1` for outgoing connections.");
    out.push(f);
}

fn local_filter(_ev: &Evidence, p: &ConnectProbe, out: &mut Findings) {
    let f = with_connect(
        Finding::critical(
            Cause::FirewallDrop,
            format!("The local host refused to send the SYN to {} ({}): a local OUTPUT firewall rule or security policy blocks it", addr(p), p.errno.as_ref().map(|e| e.as_str()).unwrap_or("EPERM")),
        ),
        p,
    )
    .partial("the rule itself was not read on this host")
    .fix("List the local rules: `nft list ruleset` / `iptables -S OUTPUT` and look for a drop/reject of this destination.")
    .fix("Check seccomp/LSM policies (AppArmor, SELinux, cgroup BPF) of the client process.");
    out.push(f);
}
