//! Host rules: what the target host's own state (socket table, processes, limits, kernel
//! counters, service manager, logs) proves about a refusal. Pure: reads `ev.host`.

use crate::rules::client::connect_item;
use crate::{Cause, Finding, Findings, Severity};
use conndoc_facts::host::{HostFacts, InspectScope, KernelEvent, Listener, ProcessInfo};
use conndoc_facts::{ConnectKind, ConnectProbe, Evidence, Family, SocketState};
use serde_json::json;
use std::net::IpAddr;

/// TIME_WAIT sockets on one port worth a warning.
const TIME_WAIT_PILEUP: u32 = 1000;
/// somaxconn below this caps ordinary listen() backlogs (the default is 4096).
const LOW_SOMAXCONN: u32 = 1024;
/// A backlog this small drops connections under any burst.
const SMALL_BACKLOG: u32 = 128;
/// A soft RLIMIT_NOFILE below this is low for a server.
const LOW_NOFILE: u64 = 4096;

pub fn run(ev: &Evidence, out: &mut Findings) {
    let Some(h) = &ev.host else { return };
    let failed: Vec<&ConnectProbe> = ev.probes.iter().filter(|p| !p.ok()).collect();
    let refused: Vec<&ConnectProbe> = failed.iter().copied().filter(|p| p.kind == ConnectKind::Refused).collect();

    // Forwarded to a backend that was inspected: its socket table, not the front's, says
    // whether anything serves the port (rules/backend.rs).
    let forwarded = crate::rules::backend::inspected(ev).is_some();
    for p in refused.iter().filter(|_| !forwarded) {
        refused_here(ev, h, p, out);
    }
    port_in_use(ev, h, out);
    // A service in a stopped or unpublished container is named by the container rules;
    // "not running (found elsewhere)" would only be noise then.
    if !failed.is_empty() && h.listeners.is_empty() && !crate::rules::container::explains_absence(ev) && !forwarded {
        service_absent(ev, h, &failed, out);
    }
    fd_exhaustion(h, out);
    accept_queue(ev, h, &failed, out);
    syn_backlog(h, &failed, out);
    selinux(h, out);
    warnings(ev, h, out);
}

fn where_(h: &HostFacts) -> String {
    h.inspected.as_ref().map(|i| i.place()).unwrap_or_default()
}

fn proc_text(p: &ProcessInfo) -> String {
    let user = p.user.clone().unwrap_or_else(|| p.uid.to_string());
    format!("pid {} ({}, user {user}): {}", p.pid, p.comm, p.cmdline)
}

fn listener_text(l: &Listener) -> String {
    let fam = match (l.family, l.v6only) {
        (Family::Ipv6, Some(true)) => "IPv6 only (IPV6_V6ONLY=1)".to_string(),
        (Family::Ipv6, _) => "IPv6, dual-stack".to_string(),
        (Family::Ipv4, _) => "IPv4".to_string(),
    };
    let owner = l.process.as_ref().map(|p| format!(" — {}", proc_text(p))).unwrap_or_default();
    format!("listening on {} [{fam}], accept queue {}/{}{owner}", l.local, l.accept_queue.0, l.backlog.0)
}

fn with_listeners(mut f: Finding, h: &HostFacts, ls: &[Listener]) -> Finding {
    for l in ls {
        f = f.evidence("listener", listener_text(l), json!(l));
    }
    with_origin(f, h)
}

/// Facts read on another machine say so, with where and by which conndoc.
fn with_origin(f: Finding, h: &HostFacts) -> Finding {
    match h.inspected.as_ref().filter(|i| i.scope == InspectScope::Ssh) {
        Some(i) => f.evidence(
            "inspected",
            format!(
                "server-side facts read{} by conndoc {}{}",
                i.place(),
                i.remote_version.as_deref().unwrap_or("?"),
                i.remote_hostname.as_deref().map(|n| format!(" on host {n}")).unwrap_or_default()
            ),
            json!(i),
        ),
        None => f,
    }
}

fn with_connect(f: Finding, p: &ConnectProbe) -> Finding {
    let (text, data) = connect_item(p);
    f.evidence("connect", text, data)
}

/// Programs that hold a port on behalf of the real service (port publishing, tunnels,
/// proxies): a listener owned by one of them is not "another program".
const FORWARDERS: &[&str] = &[
    "docker-proxy",
    "rootlessport",
    "rootlesskit",
    "slirp4netns",
    "pasta",
    "passt",
    "kubectl",
    "socat",
    "ssh",
    "sshd",
    "haproxy",
    "envoy",
    "stunnel",
    "stunnel4",
];

fn is_expected(h: &HostFacts, p: &ProcessInfo) -> bool {
    let Some(svc) = &h.expected else { return false };
    if svc.running.iter().any(|r| r.pid == p.pid) {
        return true;
    }
    // A variant of the same program (redis-server → redis-stack-server) is no squatter.
    let stem = svc.name.strip_suffix("-server").unwrap_or(&svc.name);
    p.comm.contains(stem) || FORWARDERS.contains(&p.comm.as_str())
}

fn same_family_equivalent(l: &Listener, a: IpAddr) -> bool {
    // The address the client meant, in the listener's family: 127.0.0.1 ↔ ::1, any ↔ any.
    let lip = l.local.ip();
    match (a, lip) {
        (IpAddr::V4(v4), IpAddr::V6(v6)) => v6.is_unspecified() || (v4.is_loopback() && v6.is_loopback()),
        (IpAddr::V6(v6), IpAddr::V4(v4)) => v4.is_unspecified() || (v6.is_loopback() && v4.is_loopback()),
        _ => false,
    }
}

/// The dialled port is published to another port of the inspected container: the port
/// inspected inside is that one.
fn with_port_map(f: Finding, h: &HostFacts) -> Finding {
    match &h.port_map {
        Some(m) => f.evidence(
            "port-map",
            format!(
                "host port {} is published to port {} of container {} ({}): port {} was inspected inside",
                m.dialled, m.inspected, m.container, m.mapping, m.inspected
            ),
            json!(m),
        ),
        None => f,
    }
}

/// A refusal at `p.address` while listeners exist on the port: which bind explains it.
fn refused_here(ev: &Evidence, h: &HostFacts, p: &ConnectProbe, out: &mut Findings) {
    let a = p.address;
    let ls = &h.listeners;
    if ls.is_empty() {
        let f = Finding::critical(
            Cause::NoListener,
            format!("Nothing listens on port {}{}: the server's socket table has no listener on it", p.port, where_(h)),
        )
        .evidence_with("socket-table", || {
            (
                format!("no TCP listener on port {} on any address or family{} (sock_diag)", p.port, where_(h)),
                json!({ "port": p.port, "listeners": [] , "inspected": h.inspected }),
            )
        });
        out.push(with_connect(with_port_map(f, h), p));
        return;
    }
    if ls.iter().any(|l| l.accepts(a)) {
        return; // a listener takes this address; the refusal is not about the bind
    }
    let port = p.port;
    let a_loop = a.is_loopback() || matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|x| x.is_loopback()));
    if !a_loop && ls.iter().all(Listener::loopback_only) {
        // Inside a container's namespace that is `container-bound-to-loopback`, one rule
        // whatever found it (rules/loopback.rs).
        if crate::rules::loopback::inspected_container(ev, h).is_some() {
            return;
        }
        let from = p.local.map(|l| l.ip().to_string()).unwrap_or_else(|| "outside the server".into());
        let shown: Vec<String> = ls.iter().map(|l| l.local.to_string()).collect();
        let f = Finding::critical(
            Cause::BoundToLoopback,
            format!(
                "The service listens only on loopback ({}), so connections to {a}:{port} are refused",
                shown.join(", ")
            ),
        );
        let f = with_listeners(f, h, ls).evidence(
            "client-address",
            format!("the client dials {a}:{port} from {from}, which is not loopback"),
            json!({ "dialled": a, "source": p.local.map(|l| l.ip()) }),
        );
        let f = with_connect(with_port_map(f, h), p)
            .fix(format!("Bind the service to {a} or to all addresses (0.0.0.0 / [::]) instead of loopback."))
            .fix("For redis: `bind 0.0.0.0` (or the interface address) in redis.conf, and set a password before exposing it.");
        out.push(f);
        return;
    }
    if ls.iter().any(|l| same_family_equivalent(l, a)) {
        let other: Vec<&Listener> = ls.iter().filter(|l| same_family_equivalent(l, a)).collect();
        let fam = Family::of(&a);
        let f = Finding::critical(
            Cause::AddressFamilyMismatch,
            format!(
                "The service listens on {} only, but the client dialled {a} ({fam}): nothing takes {fam} connections on port {port}",
                other.iter().map(|l| l.local.to_string()).collect::<Vec<_>>().join(", ")
            ),
        );
        let f = with_listeners(f, h, ls).evidence(
            "dialled-address",
            format!("the client dialled {a} ({fam})"),
            json!({ "dialled": a, "family": fam }),
        );
        let f = with_connect(f, p)
            .fix("Make the service listen on both families (e.g. [::] with IPV6_V6ONLY=0, or both 0.0.0.0 and [::]).")
            .fix("Or make the client use the address the service binds (e.g. 127.0.0.1 rather than `localhost` resolving to ::1, or the reverse); `localhost` resolution order comes from /etc/hosts and gai.conf.");
        out.push(f);
        return;
    }
    let f = Finding::critical(
        Cause::BoundToOtherAddress,
        format!(
            "The service listens on {} but not on {a}, the address the client dialled",
            ls.iter().map(|l| l.local.to_string()).collect::<Vec<_>>().join(", ")
        ),
    );
    let f = with_listeners(f, h, ls).evidence(
        "dialled-address",
        format!(
            "the client dialled {a}:{port}; the server's addresses: {}",
            h.local_addresses.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        ),
        json!({ "dialled": a, "local_addresses": h.local_addresses }),
    );
    let f = with_connect(f, p).fix(format!(
        "Bind the service to {a} as well (or to all addresses), or point the client at the address it binds."
    ));
    out.push(f);
}

/// Nothing listens on the port: is the expected service down, or on another port?
fn service_absent(ev: &Evidence, h: &HostFacts, failed: &[&ConnectProbe], out: &mut Findings) {
    let Some(svc) = &h.expected else { return };
    let port = h.port.map(|p| p.get()).unwrap_or(ev.target.port.get());
    if svc.running.is_empty() {
        let mut f = Finding::critical(
            Cause::ProcessNotRunning,
            format!("{} is not running{}: nothing listens on port {port}", svc.name, where_(h)),
        )
        .evidence(
            "process-table",
            format!(
                "no process named {} runs{}{}",
                svc.name,
                where_(h),
                if svc.elsewhere.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (found in other network namespaces: {})",
                        svc.elsewhere.iter().map(|p| format!("pid {}", p.pid)).collect::<Vec<_>>().join(", ")
                    )
                }
            ),
            json!({ "expected": svc.name, "running": svc.running, "elsewhere": svc.elsewhere }),
        )
        .evidence(
            "socket-table",
            format!("no TCP listener on port {port}{}", where_(h)),
            json!({ "port": port, "listeners": [] }),
        );
        f = with_unit(f, h);
        for e in &h.kernel_log {
            if let KernelEvent::OomKill { pid, comm, line } = e {
                f = f.evidence(
                    "kernel-log",
                    format!("the kernel's OOM killer killed pid {pid} ({comm}): {line}"),
                    json!(e),
                );
            }
        }
        if let Some(p) = failed.first() {
            f = with_connect(f, p);
        }
        let start = match &h.unit {
            Some(u) => format!(
                "Start it: `systemctl start {}`; then `journalctl -u {} -n 50` shows why it stopped.",
                u.unit, u.unit
            ),
            None => format!("Start {} (and find why it stopped: its log, `dmesg` for OOM kills).", svc.name),
        };
        f = f.fix(start);
        if !h.unavailable.is_empty() {
            f = f.partial(format!("not available here: {}", h.unavailable.join("; ")));
        }
        out.push(f);
        return;
    }
    let other: Vec<&Listener> = svc.listeners.iter().filter(|l| l.port() != port).collect();
    if !other.is_empty() {
        let ports: Vec<String> = other.iter().map(|l| l.local.to_string()).collect();
        let mut f = Finding::critical(
            Cause::WrongPort,
            format!("{} runs but listens on {}, not on port {port}", svc.name, ports.join(", ")),
        );
        f = with_listeners(f, h, &other.iter().map(|l| (*l).clone()).collect::<Vec<_>>()).evidence(
            "socket-table",
            format!("no TCP listener on port {port}{}", where_(h)),
            json!({ "port": port, "listeners": [] }),
        );
        if let Some(p) = failed.first() {
            f = with_connect(f, p);
        }
        let f = f.fix(format!(
            "Point the client at port {} , or configure {} to listen on {port}.",
            other[0].port(),
            svc.name
        ));
        out.push(f);
    }
}

fn with_unit(mut f: Finding, h: &HostFacts) -> Finding {
    let Some(u) = &h.unit else { return f };
    let status = match (u.exec_main_code, u.exec_main_status) {
        (Some(1), Some(s)) => format!(", main process exited with status {s}"),
        (Some(2 | 3), Some(s)) => format!(", main process killed by signal {s}"),
        _ => String::new(),
    };
    f = f.evidence(
        "service-manager",
        format!("systemd: {} is {} ({}), result {}{status}", u.unit, u.active_state, u.sub_state, u.result),
        json!({ "unit": u.unit, "active_state": u.active_state, "sub_state": u.sub_state, "result": u.result, "exec_main_status": u.exec_main_status, "exec_main_code": u.exec_main_code }),
    );
    for j in u.journal.iter().filter(|j| journal_telling(&j.message)) {
        f = f.evidence("journal", format!("journal: {}", j.message), json!(j));
    }
    f
}

fn journal_telling(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    [
        "address already in use",
        "main process exited",
        "failed with result",
        "permission denied",
        "cannot assign requested address",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// The expected service's port is held by another program.
fn port_in_use(ev: &Evidence, h: &HostFacts, out: &mut Findings) {
    let Some(svc) = &h.expected else { return };
    if h.listeners.is_empty() || h.listeners.iter().any(|l| l.process.is_none()) {
        return;
    }
    let others: Vec<&Listener> =
        h.listeners.iter().filter(|l| l.process.as_ref().is_some_and(|p| !is_expected(h, p))).collect();
    if others.len() != h.listeners.len() {
        return; // the expected service holds (one of) the listeners itself
    }
    let port = ev.target.port;
    let holder = others[0].process.as_ref().map(proc_text).unwrap_or_default();
    let mut f = Finding::critical(
        Cause::PortInUse,
        format!("Port {port} is held by another program ({holder}), not by {}", svc.name),
    );
    f = with_listeners(f, h, &h.listeners.clone());
    f = f.evidence(
        "process-table",
        if svc.running.is_empty() {
            format!("{} is not running{}", svc.name, where_(h))
        } else {
            format!(
                "{} runs ({}) but does not hold port {port}",
                svc.name,
                svc.running.iter().map(|p| format!("pid {}", p.pid)).collect::<Vec<_>>().join(", ")
            )
        },
        json!({ "expected": svc.name, "running": svc.running }),
    );
    f = with_unit(f, h);
    let pid = others[0].process.as_ref().map(|p| p.pid).unwrap_or(0);
    f = f
        .fix(format!("Stop the program holding the port (pid {pid}) or move it elsewhere, then start {}.", svc.name))
        .fix(format!("Or configure {} for a free port and point the clients there.", svc.name));
    if h.unit.is_none() {
        f = f.partial("the service's own log line (\"Address already in use\") was not readable here".to_string());
    }
    out.push(f);
}

/// A listening process at its open-file limit cannot accept.
fn fd_exhaustion(h: &HostFacts, out: &mut Findings) {
    let mut seen = std::collections::BTreeSet::new();
    for l in &h.listeners {
        let Some(p) = &l.process else { continue };
        let (Some(n), Some(soft)) = (p.open_fds, p.nofile_soft) else { continue };
        if n < soft || !seen.insert(p.pid) {
            continue;
        }
        let f = Finding::critical(
            Cause::FdExhaustion,
            format!("{} (pid {}) has {n} files open, its limit (RLIMIT_NOFILE soft {soft}): it cannot accept connections", p.comm, p.pid),
        )
        .evidence(
            "fd-limit",
            format!(
                "pid {} ({}) open fds {n} of soft limit {soft}, hard limit {}",
                p.pid,
                p.comm,
                p.nofile_hard.map(|x| x.to_string()).unwrap_or_else(|| "unlimited".into())
            ),
            json!({ "pid": p.pid, "open_fds": n, "nofile_soft": soft, "nofile_hard": p.nofile_hard }),
        )
        .evidence("listener", listener_text(l), json!(l))
        .fix(format!(
            "Raise the limit: `LimitNOFILE=65536` in the unit (systemd), `ulimit -n 65536` before starting, or `prlimit --pid {} --nofile=65536:65536` now.",
            p.pid
        ))
        .fix("Check whether the process leaks connections or file descriptors (`ls /proc/PID/fd | wc -l` over time).");
        out.push(f);
    }
}

fn counter_item(h: &HostFacts) -> Option<(String, serde_json::Value)> {
    let c = h.counters.as_ref()?;
    let d = &c.delta;
    Some((
        format!(
            "over the probe ({}): ListenOverflows +{}, ListenDrops +{}, SyncookiesSent +{}, TCPReqQFullDrop +{}, TCPReqQFullDoCookies +{}",
            c.window_us, d.listen_overflows, d.listen_drops, d.syncookies_sent, d.req_q_full_drop, d.req_q_full_do_cookies
        ),
        json!(c),
    ))
}

fn accept_queue(ev: &Evidence, h: &HostFacts, failed: &[&ConnectProbe], out: &mut Findings) {
    let full: Vec<&Listener> = h.listeners.iter().filter(|l| l.queue_full()).collect();
    if full.is_empty() {
        return;
    }
    let s = &h.sysctls;
    let abort = s.tcp_abort_on_overflow == Some(1);
    let l = full[0];
    let symptom = if abort {
        "answered with a reset (tcp_abort_on_overflow=1)"
    } else {
        "dropped (the client retries, then times out)"
    };
    let mut f = Finding::new(
        Cause::AcceptQueueOverflow,
        if failed.is_empty() { Severity::Warning } else { Severity::Critical },
        format!(
            "The accept queue of {} is full ({}/{}): the program does not accept() fast enough, new connections are {symptom}",
            l.local, l.accept_queue.0, l.backlog.0
        ),
    );
    for l in &full {
        f = f.evidence("accept-queue", listener_text(l), json!(l));
    }
    if let Some((t, d)) = counter_item(h) {
        f = f.evidence("counters", t, d);
    }
    f = f.evidence(
        "sysctl",
        format!(
            "net.core.somaxconn = {}, net.ipv4.tcp_abort_on_overflow = {}",
            opt(s.somaxconn),
            opt(s.tcp_abort_on_overflow)
        ),
        json!({ "somaxconn": s.somaxconn, "tcp_abort_on_overflow": s.tcp_abort_on_overflow }),
    );
    for p in failed.iter().take(1) {
        f = with_connect(f, p);
    }
    let _ = ev;
    f = with_origin(f, h)
        .fix("Find why the program stalls in accept(): a blocked event loop, too few workers, or its fd limit (see fd-exhaustion).")
        .fix(format!(
            "Give it a larger backlog: listen(fd, N) with N up to net.core.somaxconn (now {}); for redis `tcp-backlog`.",
            opt(s.somaxconn)
        ));
    out.push(f);
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "?".into())
}

fn syn_backlog(h: &HostFacts, failed: &[&ConnectProbe], out: &mut Findings) {
    let port = h.port.map(|p| p.get()).unwrap_or(0);
    let syn_recv = h.port_sockets.get(&SocketState::SynRecv).copied().unwrap_or(0)
        + h.port_sockets.get(&SocketState::NewSynRecv).copied().unwrap_or(0);
    let flood_log: Vec<&KernelEvent> =
        h.kernel_log.iter().filter(|e| matches!(e, KernelEvent::SynFlood { port: p, .. } if *p == port)).collect();
    let d = h.counters.as_ref().map(|c| c.delta).unwrap_or_default();
    let counters_rose = d.syncookies_sent > 0 || d.req_q_full_drop > 0 || d.req_q_full_do_cookies > 0;
    // The counters are namespace-wide: tie them to this port by its half-open sockets or
    // by the kernel's own log line naming the port.
    if !(counters_rose && (syn_recv > 0 || !flood_log.is_empty())) {
        return;
    }
    let s = &h.sysctls;
    let cookies = d.syncookies_sent > 0 || d.req_q_full_do_cookies > 0;
    let mut f = Finding::new(
        Cause::SynBacklogOverflow,
        if failed.is_empty() { Severity::Warning } else { Severity::Critical },
        format!(
            "The SYN queue of port {port} is overflowing ({syn_recv} half-open connections): {}",
            if cookies { "the kernel answers with SYN cookies" } else { "new SYNs are dropped" }
        ),
    )
    .evidence(
        "half-open",
        format!("{syn_recv} sockets in SYN_RECV on port {port}"),
        json!({ "port": port, "syn_recv": syn_recv, "by_state": h.port_sockets }),
    );
    if let Some((t, dd)) = counter_item(h) {
        f = f.evidence("counters", t, dd);
    }
    f = f.evidence(
        "sysctl",
        format!(
            "net.ipv4.tcp_max_syn_backlog = {}, net.ipv4.tcp_syncookies = {}, net.core.somaxconn = {}",
            opt(s.tcp_max_syn_backlog),
            opt(s.tcp_syncookies),
            opt(s.somaxconn)
        ),
        json!({ "tcp_max_syn_backlog": s.tcp_max_syn_backlog, "tcp_syncookies": s.tcp_syncookies, "somaxconn": s.somaxconn }),
    );
    for e in flood_log {
        if let KernelEvent::SynFlood { line, .. } = e {
            f = f.evidence("kernel-log", format!("kernel: {line}"), json!(e));
        }
    }
    for p in failed.iter().take(1) {
        f = with_connect(f, p);
    }
    if !h.unavailable.iter().any(|u| u.starts_with("kernel log")) {
        // readable and checked
    } else {
        f = f.partial("the kernel log was not readable here (\"Possible SYN flooding\" lines)");
    }
    f = f
        .fix("If this is an attack or a misbehaving client, find its sources: `ss -tn state syn-recv sport = :PORT`.")
        .fix("Enable SYN cookies (`net.ipv4.tcp_syncookies = 1`) and raise the listener backlog and net.ipv4.tcp_max_syn_backlog.");
    out.push(f);
}

fn selinux(h: &HostFacts, out: &mut Findings) {
    for d in h.avc_denials.iter().filter(|d| !d.permissive) {
        let f = Finding::critical(
            Cause::SelinuxDenied,
            format!(
                "SELinux denied {} {} binding port {}",
                d.comm.as_deref().unwrap_or("a process"),
                d.pid.map(|p| format!("(pid {p})")).unwrap_or_default(),
                d.port.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ),
        )
        .evidence("audit", format!("audit: {}", d.line), json!(d))
        .fix(format!(
            "Allow the port for the service's type: `semanage port -a -t <type>_port_t -p tcp {}` (see `ausearch -m AVC -ts recent`).",
            d.port.map(|p| p.to_string()).unwrap_or_else(|| "PORT".into())
        ));
        out.push(f);
    }
}

fn warnings(ev: &Evidence, h: &HostFacts, out: &mut Findings) {
    let s = &h.sysctls;
    let tw = h.port_sockets.get(&SocketState::TimeWait).copied().unwrap_or(0);
    if tw >= TIME_WAIT_PILEUP {
        out.push(
            Finding::warning(
                Cause::TimeWaitPileup,
                format!("{tw} connections on port {} sit in TIME_WAIT", ev.target.port),
            )
            .evidence("socket-states", socket_states_text(ev.target.port, &h.port_sockets), json!(h.port_sockets))
            .evidence(
                "sysctl",
                format!(
                    "net.ipv4.tcp_fin_timeout = {}, net.ipv4.tcp_tw_reuse = {}",
                    opt(s.tcp_fin_timeout),
                    opt(s.tcp_tw_reuse)
                ),
                json!({ "tcp_fin_timeout": s.tcp_fin_timeout, "tcp_tw_reuse": s.tcp_tw_reuse }),
            )
            .fix("Reuse connections (keep-alive, connection pools) instead of opening one per request."),
        );
    }
    if let Some(m) = s.somaxconn.filter(|&m| m < LOW_SOMAXCONN) {
        out.push(
            Finding::warning(
                Cause::LowSomaxconn,
                format!("net.core.somaxconn is {m}: every listen() backlog is capped at {m}"),
            )
            .evidence("sysctl", format!("net.core.somaxconn = {m}"), json!({ "somaxconn": m }))
            .fix("Raise it: `sysctl -w net.core.somaxconn=4096` (persist in /etc/sysctl.d/)."),
        );
    }
    for l in &h.listeners {
        let cap = s.somaxconn.unwrap_or(4096);
        if l.backlog.0 < cap && l.backlog.0 < SMALL_BACKLOG {
            out.push(
                Finding::warning(
                    Cause::ListenerBacklogBelowSomaxconn,
                    format!("{} was opened with a backlog of {} (somaxconn allows {cap})", l.local, l.backlog.0),
                )
                .evidence("listener", listener_text(l), json!(l))
                .fix("Pass a larger backlog to listen() (redis: `tcp-backlog`, nginx: `listen … backlog=`)."),
            );
        }
        if let Some(p) = &l.process {
            let low = p.nofile_soft.is_some_and(|soft| soft < LOW_NOFILE);
            let near = p.fd_fill().is_some_and(|x| (0.8..1.0).contains(&x));
            if low || near {
                out.push(
                    Finding::warning(
                        Cause::LowNofileLimit,
                        format!(
                            "{} (pid {}) may open at most {} files ({} open now)",
                            p.comm,
                            p.pid,
                            opt(p.nofile_soft),
                            opt(p.open_fds)
                        ),
                    )
                    .evidence(
                        "fd-limit",
                        format!("pid {} open fds {} of soft limit {}, hard {}", p.pid, opt(p.open_fds), opt(p.nofile_soft), opt(p.nofile_hard)),
                        json!({ "pid": p.pid, "open_fds": p.open_fds, "nofile_soft": p.nofile_soft, "nofile_hard": p.nofile_hard }),
                    )
                    .fix("Raise RLIMIT_NOFILE for the service (LimitNOFILE= in its unit, or ulimit -n before it starts)."),
                );
            }
        }
    }
}

/// `port 7000: 1200 TIME_WAIT, 3 ESTABLISHED` (kernel state names, as `ss` users know them).
fn socket_states_text(port: impl std::fmt::Display, by_state: &std::collections::BTreeMap<SocketState, u32>) -> String {
    let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
    format!("port {port}: {}", if states.is_empty() { "none".into() } else { states.join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose, fixture};
    use conndoc_facts::host::{CounterDeltas, ExpectedService, Inspected, Sysctls, TcpCounters};
    use conndoc_facts::{Outcome, Port, QueueLen};

    fn evidence(probes: Vec<ConnectProbe>, host: HostFacts) -> Evidence {
        let mut ev = fixture::evidence("tcp://10.0.0.2:7000");
        ev.probes = probes;
        ev.host = Some(host);
        ev
    }

    fn probe(addr: &str, kind: ConnectKind) -> ConnectProbe {
        let mut p = fixture::connect(addr, 7000, kind);
        let from = if p.address.is_ipv4() { "10.0.0.1" } else { "[fd00::1]" };
        p.local = Some(format!("{from}:40000").parse().unwrap());
        p
    }

    fn listener(addr: &str, v6only: Option<bool>) -> Listener {
        Listener {
            v6only,
            backlog: QueueLen(4096),
            process: Some(proc_("redis-server", 42)),
            ..fixture::listener(addr)
        }
    }

    fn proc_(comm: &str, pid: u32) -> ProcessInfo {
        ProcessInfo {
            pid,
            user: Some("root".into()),
            open_fds: Some(10),
            nofile_soft: Some(65536),
            nofile_hard: Some(65536),
            ..fixture::process(comm)
        }
    }

    fn host(listeners: Vec<Listener>) -> HostFacts {
        HostFacts {
            inspected: Some(Inspected {
                scope: InspectScope::Netns,
                netns: Some("srv".into()),
                netns_inode: Some(1),
                ..Default::default()
            }),
            local_addresses: vec!["10.0.0.2".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            port: Port::new(7000),
            listeners,
            sysctls: Sysctls { somaxconn: Some(4096), ..Default::default() },
            ..Default::default()
        }
    }

    fn verdict(ev: &Evidence) -> Cause {
        diagnose(ev).verdict.cause
    }

    #[test]
    fn loopback_bind_seen_from_outside() {
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], host(vec![listener("127.0.0.1:7000", None)]));
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::BoundToLoopback);
        let f = r.finding(Cause::BoundToLoopback).unwrap();
        assert!(f.evidence.iter().any(|e| e.kind == "listener" && e.text.contains("127.0.0.1:7000")));
        assert!(f.evidence.iter().any(|e| e.kind == "client-address" && e.text.contains("10.0.0.1")));
    }

    #[test]
    fn container_loopback_by_namespace_identity_not_by_flag() {
        use conndoc_facts::container::{Container, ContainerFacts, ContainerState};
        // The same namespace (inode 1) named either way gives the same verdict: a plain
        // namespace is the server itself…
        for scope in [InspectScope::NetnsPid, InspectScope::Netns] {
            let mut h = host(vec![listener("127.0.0.1:7000", None)]);
            h.inspected.as_mut().unwrap().scope = scope;
            let mut ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], h);
            assert_eq!(verdict(&ev), Cause::BoundToLoopback, "{scope:?}");
            // …and a container's namespace is named as the container's.
            let c = Container {
                names: vec!["cache".into()],
                state: ContainerState::Running,
                netns_inode: Some(1),
                ..serde_json::from_value(serde_json::json!({"id": "e789749d466b", "image": "redis:7", "engine": "docker", "state": "running", "source": "engine-api"})).unwrap()
            };
            ev.containers = Some(ContainerFacts { containers: vec![c], ..Default::default() });
            let r = diagnose(&ev);
            assert_eq!(r.verdict.cause, Cause::ContainerBoundToLoopback, "{scope:?}");
            assert!(r.verdict.summary.contains("cache"), "{}", r.verdict.summary);
        }
    }

    #[test]
    fn other_address_and_family() {
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], host(vec![listener("10.0.0.3:7000", None)]));
        assert_eq!(verdict(&ev), Cause::BoundToOtherAddress);
        // ::1 only, dialled at 127.0.0.1
        let ev =
            evidence(vec![probe("127.0.0.1", ConnectKind::Refused)], host(vec![listener("[::1]:7000", Some(false))]));
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::AddressFamilyMismatch);
        assert!(r
            .finding(Cause::AddressFamilyMismatch)
            .unwrap()
            .evidence
            .iter()
            .any(|e| e.text.contains("[::1]:7000")));
        // IPv6-only wildcard dialled over IPv4
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], host(vec![listener("[::]:7000", Some(true))]));
        assert_eq!(verdict(&ev), Cause::AddressFamilyMismatch);
        // dual-stack wildcard takes IPv4: no bind finding
        let ev =
            evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], host(vec![listener("[::]:7000", Some(false))]));
        assert!(diagnose(&ev).finding(Cause::AddressFamilyMismatch).is_none());
    }

    #[test]
    fn empty_table_confirms_no_listener_or_names_the_service() {
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], host(vec![]));
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::NoListener);
        assert!(r.finding(Cause::NoListener).unwrap().evidence.iter().any(|e| e.kind == "socket-table"));

        let mut h = host(vec![]);
        h.expected = Some(ExpectedService { name: "redis-server".into(), ..Default::default() });
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], h.clone());
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::ProcessNotRunning);
        assert!(r.finding(Cause::ProcessNotRunning).unwrap().evidence.iter().any(|e| e.kind == "process-table"));

        let svc = h.expected.as_mut().unwrap();
        svc.running = vec![proc_("redis-server", 42)];
        svc.listeners = vec![listener("0.0.0.0:7001", None)];
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], h);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::WrongPort);
        assert!(r.finding(Cause::WrongPort).unwrap().evidence.iter().any(|e| e.text.contains("0.0.0.0:7001")));
    }

    #[test]
    fn port_held_by_another_program() {
        let mut l = listener("0.0.0.0:7000", None);
        l.process = Some(proc_("nc", 99));
        let mut h = host(vec![l]);
        h.expected = Some(ExpectedService { name: "redis-server".into(), ..Default::default() });
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Connected)], h);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::PortInUse);
        assert!(r.finding(Cause::PortInUse).unwrap().summary.contains("pid 99"));
    }

    #[test]
    fn forwarders_and_variants_are_not_squatters() {
        for comm in ["docker-proxy", "redis-stack-ser"] {
            let mut l = listener("0.0.0.0:7000", None);
            l.process = Some(proc_(comm, 99));
            let mut h = host(vec![l]);
            h.expected = Some(ExpectedService { name: "redis-server".into(), ..Default::default() });
            let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Connected)], h);
            assert!(diagnose(&ev).finding(Cause::PortInUse).is_none(), "{comm}");
        }
    }

    #[test]
    fn queue_full_and_fd_limit() {
        let mut l = listener("0.0.0.0:7000", None);
        l.accept_queue = QueueLen(3);
        l.backlog = QueueLen(2);
        let mut h = host(vec![l.clone()]);
        h.counters = Some(CounterDeltas {
            delta: TcpCounters { listen_overflows: 2, listen_drops: 2, ..Default::default() },
            ..Default::default()
        });
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Timeout)], h.clone());
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::AcceptQueueOverflow);
        let f = r.finding(Cause::AcceptQueueOverflow).unwrap();
        assert!(f.evidence.iter().any(|e| e.kind == "counters" && e.text.contains("ListenOverflows +2")));
        assert!(r.finding(Cause::ListenerBacklogBelowSomaxconn).is_some());

        // The owner at its fd limit explains the full queue.
        let p = h.listeners[0].process.as_mut().unwrap();
        p.open_fds = Some(64);
        p.nofile_soft = Some(64);
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Timeout)], h);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::FdExhaustion);
        assert!(r.finding(Cause::AcceptQueueOverflow).is_some());
        assert!(r
            .finding(Cause::FdExhaustion)
            .unwrap()
            .evidence
            .iter()
            .any(|e| e.text.contains("64 of soft limit 64")));
    }

    #[test]
    fn syn_flood_needs_port_attribution() {
        let mut h = host(vec![listener("0.0.0.0:7000", None)]);
        h.counters = Some(CounterDeltas {
            delta: TcpCounters { req_q_full_drop: 3, listen_drops: 3, ..Default::default() },
            ..Default::default()
        });
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Timeout)], h.clone());
        assert!(diagnose(&ev).finding(Cause::SynBacklogOverflow).is_none(), "no half-open sockets on the port");
        h.port_sockets.insert(SocketState::SynRecv, 5);
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Timeout)], h);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::SynBacklogOverflow);
        assert_eq!(r.finding(Cause::SynBacklogOverflow).unwrap().severity, Severity::Critical);
    }

    #[test]
    fn service_manager_and_audit_evidence() {
        use conndoc_facts::host::{AvcDenial, JournalLine, UnitState};
        // Facts as the parsers produce them from the systemctl/journalctl/audit fixtures.
        let mut h = host(vec![]);
        h.expected = Some(ExpectedService { name: "redis-server".into(), ..Default::default() });
        h.unit = Some(UnitState {
            unit: "redis-server.service".into(),
            load_state: "loaded".into(),
            active_state: "failed".into(),
            sub_state: "failed".into(),
            result: "exit-code".into(),
            main_pid: None,
            exec_main_status: Some(1),
            exec_main_code: Some(1),
            journal: vec![
                JournalLine {
                    time_us: 1,
                    pid: Some(2817),
                    identifier: Some("redis-server".into()),
                    message: "Could not create server TCP listening socket *:6380: bind: Permission denied".into(),
                },
                JournalLine {
                    time_us: 2,
                    pid: Some(1),
                    identifier: Some("systemd".into()),
                    message: "redis-server.service: Main process exited, code=exited, status=1/FAILURE".into(),
                },
                JournalLine { time_us: 3, pid: Some(2817), identifier: None, message: "Server initialized".into() },
            ],
        });
        h.avc_denials = vec![AvcDenial {
            permission: "name_bind".into(),
            pid: Some(2817),
            comm: Some("redis-server".into()),
            port: Some(6380),
            scontext: "system_u:system_r:redis_t:s0".into(),
            tcontext: "system_u:object_r:unreserved_port_t:s0".into(),
            tclass: "tcp_socket".into(),
            permissive: false,
            line: "type=AVC msg=audit(1700000123.456:913): avc:  denied  { name_bind } for  pid=2817".into(),
        }];
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Refused)], h);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::SelinuxDenied, "the denial explains why the process is not running");
        assert!(r.finding(Cause::SelinuxDenied).unwrap().evidence.iter().any(|e| e.kind == "audit"));
        let down = r.finding(Cause::ProcessNotRunning).unwrap();
        assert!(down.evidence.iter().any(|e| e.kind == "service-manager" && e.text.contains("exited with status 1")));
        let journal: Vec<_> = down.evidence.iter().filter(|e| e.kind == "journal").collect();
        assert_eq!(journal.len(), 2, "only the telling lines: {journal:?}");
        assert!(journal[1].text.contains("status=1/FAILURE"));
    }

    #[test]
    fn warnings_only_when_healthy() {
        let mut h = host(vec![listener("0.0.0.0:7000", None)]);
        h.sysctls.somaxconn = Some(64);
        h.port_sockets.insert(SocketState::TimeWait, 5000);
        let ev = evidence(vec![probe("10.0.0.2", ConnectKind::Connected)], h);
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::Ok);
        assert!(r.finding(Cause::LowSomaxconn).is_some());
        assert!(r.finding(Cause::TimeWaitPileup).is_some());
        let _ = Outcome::Connected;
    }
}
