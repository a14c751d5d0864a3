//! One inspection of the target host for one port: what the host stage of
//! `conndoc diagnose` and `conndoc listeners` run, inside the target's network namespace
//! when one is named.

use crate::netns::{run_in, NetnsSpec};
use crate::{audit, counters, kmsg, procs, sockets, sysctl, systemd, HostError};
use conndoc_facts::host::{
    CounterDeltas, ExpectedService, HostFacts, InspectScope, Inspected, KernelEvent, Listener, TcpCounters,
};
use conndoc_facts::{Micros, Port, Privileges, SkippedCheck};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What to inspect.
#[derive(Debug, Clone)]
pub struct InspectRequest {
    pub port: Port,
    /// The process expected to serve the port.
    pub expect: Option<String>,
    pub scope: InspectScope,
    /// The namespace to enter (None: the current one).
    pub netns: Option<NetnsSpec>,
    pub privileges: Privileges,
    /// Read everything even when nothing points at trouble (set when the probe failed).
    pub thorough: bool,
    /// The namespace's interface addresses when the caller has just read them in the same
    /// namespace (the client stage of a diagnosis does): not dumped a second time.
    pub addresses: Option<Vec<IpAddr>>,
}

/// TIME_WAIT sockets in the namespace from which the per-port state walk is worth it: the
/// time-wait-pileup warning (crates/diagnose, rules/host.rs) needs 1000 on the one port, so
/// fewer in the whole namespace cannot make it fire.
const TIME_WAIT_WALK: u64 = sysctl::TIME_WAIT_PILEUP as u64;

/// Whether the per-port state counts (a walk of the kernel's whole connection hash, shared
/// by every namespace: the filter saves copying, not walking — ~15 ms at 50,000 sockets)
/// can change a finding. Only two findings read them: syn-backlog-overflow, which needs a
/// SYN-queue counter that rose over the probe, and time-wait-pileup, which needs
/// [`TIME_WAIT_WALK`] TIME_WAIT sockets on the port — more than the namespace's total
/// (sockstat) rules out. Without counters or sockstat nothing is ruled out. A failed probe
/// alone is no reason: the walk would only list states no finding cites.
pub(crate) fn port_walk_can_matter(
    counters: Option<&CounterDeltas>,
    sockstat: Option<conndoc_facts::host::SockStat>,
) -> bool {
    let Some(c) = counters else { return true };
    let d = c.delta;
    let syn_trouble = d.syncookies_sent + d.req_q_full_drop + d.req_q_full_do_cookies + d.listen_drops > 0;
    syn_trouble || sockstat.is_none_or(|s| s.time_wait >= TIME_WAIT_WALK)
}

/// A SYN-queue counter rose over the probe (what syn-backlog-overflow needs).
pub(crate) fn syn_queue_rose(c: &CounterDeltas) -> bool {
    let d = c.delta;
    d.syncookies_sent + d.req_q_full_drop + d.req_q_full_do_cookies > 0
}

/// Counters read before the probe.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub counters: TcpCounters,
    pub at: Instant,
}

fn in_scope<T: Send>(req: &InspectRequest, f: impl FnOnce() -> T + Send) -> Result<T, HostError> {
    match &req.netns {
        Some(spec) => run_in(spec, f),
        None => Ok(f()),
    }
}

/// Read the counters before the probe, so the deltas cover it.
pub fn baseline(req: &InspectRequest) -> Result<Baseline, HostError> {
    in_scope(req, counters::read)?.map(|counters| Baseline { counters, at: Instant::now() })
}

fn skip(check: &str, reason: impl Into<String>, hint: Option<&str>) -> SkippedCheck {
    SkippedCheck { check: check.into(), reason: reason.into(), hint: hint.map(str::to_string) }
}

/// Everything about the port on the target host. Checks that cannot run are returned as
/// skipped, never as a failure of the whole inspection — except when the namespace itself
/// cannot be entered or the socket table cannot be read.
pub fn inspect(req: &InspectRequest, base: Option<&Baseline>) -> Result<(HostFacts, Vec<SkippedCheck>), HostError> {
    inspect_hinted(req, base, &[])
}

/// [`inspect`], with pids that probably own the port's listener (for instance the
/// `process_id` a Redis server reported) tried before the process table is searched.
pub fn inspect_hinted(
    req: &InspectRequest,
    base: Option<&Baseline>,
    owner_hint: &[u32],
) -> Result<(HostFacts, Vec<SkippedCheck>), HostError> {
    let start = Instant::now();
    // After a failed probe with a program expected, the kernel log is nearly always read
    // below (an OOM kill of that program is what it is read for), and reading it is one
    // syscall the kernel spends ~3 ms in on a busy log (it walks the whole ring buffer,
    // whatever the buffer size asked for): start it now, beside the namespace's own reads.
    let early_log = (req.thorough && req.expect.is_some())
        .then(|| std::thread::Builder::new().name("kmsg".into()).spawn(read_kernel_log).ok())
        .flatten();
    let (mut facts, mut skipped) = in_scope(req, || inside(req, base, owner_hint))??;
    facts.inspected = Some(Inspected {
        scope: req.scope,
        netns: req.netns.as_ref().map(NetnsSpec::label),
        netns_inode: facts.inspected.as_ref().and_then(|i| i.netns_inode),
        ..Default::default()
    });
    // Host-wide sources, read from conndoc's own thread.
    let expect = req.expect.as_deref();
    // When the port is served as expected and no drop counter rose, the kernel log (SYN
    // floods count only with rising drop counters, OOM kills only for a service that is
    // down) and the unit state (shown with a down or displaced service) change no finding.
    let quiet = quiet(req, &facts);
    // Nor does the kernel log after a failed probe when no drop counter rose and no program
    // is expected to be down: reading it is one read per record of the whole ring buffer
    // (~800 on a freshly booted machine, ~1 ms), more than the rest of a refused port's
    // inspection.
    if !quiet && kernel_log_matters(req, &facts) {
        let events = early_log.and_then(|h| h.join().ok()).unwrap_or_else(read_kernel_log);
        kernel_log(req, &mut facts, events);
    }
    if let Some(name) = expect.filter(|_| !quiet) {
        if req.scope == InspectScope::NetnsPid {
            facts
                .unavailable
                .push("service manager: the target runs in a container; its units are not this host's".into());
        } else if systemd::is_init() {
            match systemd::unit_state(&systemd::unit_candidates(name), Duration::from_secs(2)) {
                Ok(Some(u)) => facts.unit = Some(u),
                Ok(None) => facts.unavailable.push(format!("service manager: no systemd unit found for {name}")),
                Err(e) => skipped.push(skip("service manager state", e, None)),
            }
        } else {
            facts.unavailable.push("service manager: systemd is not the init here (no /run/systemd/system)".into());
        }
    }
    match audit::read_bind_denials(audit::AUDIT_LOG, 1 << 20) {
        Ok(d) => {
            facts.avc_denials = d
                .into_iter()
                .filter(|d| {
                    d.port == Some(req.port.get())
                        || expect.is_some_and(|x| d.comm.as_deref().is_some_and(|c| procs::is_program(c, &[], x)))
                })
                .collect();
        }
        Err(e) => facts.unavailable.push(format!("audit log ({}): {e}", audit::AUDIT_LOG)),
    }
    facts.elapsed_us = Micros::from_duration(start.elapsed());
    Ok((facts, skipped))
}

/// The probe succeeded (not thorough), the port has listeners whose owners are known (and
/// are the expected program, when one is expected), and no drop counter rose over it.
fn quiet(req: &InspectRequest, facts: &HostFacts) -> bool {
    let Some(c) = facts.counters.as_ref() else { return false };
    !req.thorough && !drops_rose(c) && served_as_expected(&facts.listeners, req.expect.as_deref())
}

/// A counter of dropped or cookie-answered connection attempts rose over the probe.
pub(crate) fn drops_rose(c: &CounterDeltas) -> bool {
    let d = c.delta;
    d.listen_overflows + d.listen_drops + d.syncookies_sent + d.req_q_full_drop + d.req_q_full_do_cookies > 0
}

/// Whether a kernel log line could change a finding: a SYN flood line counts only with a
/// rising drop counter (or when the counters could not be read), an OOM kill only for an
/// expected program that does not serve the port.
fn kernel_log_matters(req: &InspectRequest, facts: &HostFacts) -> bool {
    facts.counters.as_ref().is_none_or(drops_rose)
        || req.expect.is_some() && !served_as_expected(&facts.listeners, req.expect.as_deref())
}

/// Every listener's owner is known and, when a program is expected, is that program.
fn served_as_expected(listeners: &[Listener], expect: Option<&str>) -> bool {
    !listeners.is_empty()
        && listeners.iter().all(|l| {
            l.process
                .as_ref()
                .is_some_and(|p| expect.is_none_or(|x| procs::is_program(&p.comm, std::slice::from_ref(&p.cmdline), x)))
        })
}

/// The kernel log's events of the last ten minutes.
fn read_kernel_log() -> std::io::Result<Vec<KernelEvent>> {
    kmsg::read_events(Duration::from_millis(300), Duration::from_secs(600))
}

/// Keep the kernel log events (`events`, from [`read_kernel_log`]) that matter here.
fn kernel_log(req: &InspectRequest, facts: &mut HostFacts, events: std::io::Result<Vec<KernelEvent>>) {
    let expect = req.expect.as_deref();
    match events {
        Ok(events) => {
            facts.kernel_log = events
                .into_iter()
                .filter(|e| match e {
                    KernelEvent::SynFlood { port, .. } => *port == req.port.get(),
                    KernelEvent::OomKill { comm, .. } => expect.is_some_and(|x| procs::is_program(comm, &[], x)),
                })
                .collect();
            // The same warning repeats (one per listener start): keep each line once, the
            // newest few.
            let mut seen = BTreeSet::new();
            facts.kernel_log.reverse();
            facts.kernel_log.retain(|e| seen.insert(format!("{e:?}")));
            facts.kernel_log.truncate(5);
            facts.kernel_log.reverse();
        }
        Err(e) => facts.unavailable.push(format!("kernel log (/dev/kmsg): {e}")),
    }
}

/// The part that must run inside the target namespace.
fn inside(
    req: &InspectRequest,
    base: Option<&Baseline>,
    owner_hint: &[u32],
) -> Result<(HostFacts, Vec<SkippedCheck>), HostError> {
    let mut skipped = Vec::new();
    let port = req.port.get();
    let netns = procs::current_netns();
    let mut facts = HostFacts {
        inspected: Some(Inspected { scope: req.scope, netns: None, netns_inode: netns, ..Default::default() }),
        port: Some(req.port),
        ..Default::default()
    };
    match req.addresses.clone().filter(|_| req.netns.is_none()) {
        Some(a) => facts.local_addresses = a,
        None => match conndoc_netlink::addresses() {
            Ok(a) => facts.local_addresses = a.into_iter().map(|a| a.address).collect(),
            Err(e) => skipped.push(skip("local addresses", e.to_string(), None)),
        },
    }
    facts.listeners = sockets::listeners(Some(port))?;
    if let Some(b) = base {
        match counters::read() {
            Ok(after) => {
                facts.counters = Some(CounterDeltas {
                    delta: after.since(&b.counters),
                    total: after,
                    window_us: Micros::from_duration(b.at.elapsed()),
                })
            }
            Err(e) => skipped.push(skip("TCP counters", e.to_string(), None)),
        }
    }
    facts.sockstat = counters::read_sockstat();

    if port_walk_can_matter(facts.counters.as_ref(), facts.sockstat) {
        match sockets::sockets_on_port(port) {
            Ok(m) => {
                facts.port_sockets = m;
                facts.port_sockets_read = true;
            }
            Err(e) => skipped.push(skip("sockets on the target port", e.to_string(), None)),
        }
    }
    // The parameters a finding can cite given what was found (one file each; a refused
    // port reads one instead of nine).
    let syn_rose = facts.counters.as_ref().map(syn_queue_rose);
    let tw_here = facts.port_sockets.get(&conndoc_facts::SocketState::TimeWait).copied().unwrap_or(0);
    let queue_full = facts.listeners.iter().any(Listener::queue_full);
    facts.sysctls = sysctl::read_wanted(sysctl::Wanted::for_findings(queue_full, syn_rose, tw_here));

    // Owners of the listeners on the target port: the hinted pids and the expected
    // program's processes are tried before the rest of the process table.
    let expect = req.expect.as_deref();
    let wanted: BTreeSet<u64> = facts.listeners.iter().map(|l| l.inode).collect();
    let (found, _) = procs::owners_hinted(&wanted, netns, expect, owner_hint);
    let mut cache = BTreeMap::new();
    for l in &mut facts.listeners {
        l.process =
            found.get(&l.inode).and_then(|&pid| cache.entry(pid).or_insert_with(|| procs::info(pid, netns)).clone());
    }

    // The expected service: running here, elsewhere, and on which ports it listens.
    if let Some(name) = expect {
        let mut svc = ExpectedService { name: name.to_string(), ..Default::default() };
        if served_as_expected(&facts.listeners, expect) {
            // It serves the port: its owners are the service, and no finding asks where
            // else it runs or listens (those explain a port nobody serves).
            for p in facts.listeners.iter().filter_map(|l| l.process.as_ref()) {
                if !svc.running.iter().any(|r| r.pid == p.pid) {
                    svc.running.push(p.clone());
                }
            }
            svc.listeners = facts.listeners.clone();
        } else {
            for (pid, here) in procs::find_program(name, netns) {
                let Some(info) = cache.get(&pid).cloned().flatten().or_else(|| procs::info(pid, netns)) else {
                    continue;
                };
                if here == Some(false) {
                    svc.elsewhere.push(info);
                } else {
                    svc.running.push(info);
                }
            }
            if !svc.running.is_empty() {
                // Which of the namespace's listeners (a short list) are the service's: look
                // the listeners' owners up rather than reading the service's whole fd
                // table, which may hold thousands of connections.
                let all = sockets::listeners(None)?;
                let inodes: BTreeSet<u64> = all.iter().map(|l| l.inode).collect();
                let (owner, _) = procs::owners(&inodes, netns, Some(name));
                for l in all {
                    let Some(p) = owner.get(&l.inode).and_then(|pid| svc.running.iter().find(|p| p.pid == *pid)) else {
                        continue;
                    };
                    let mut l = l;
                    l.process = Some(p.clone());
                    svc.listeners.push(l);
                }
            }
        }
        facts.expected = Some(svc);
    }
    let missing = facts.listeners.iter().filter(|l| l.process.is_none()).count();
    // Root without CAP_SYS_PTRACE (a least-privilege DaemonSet) is refused the fds of any
    // process with capabilities it lacks, as a user is those of other users.
    if missing > 0 && !req.privileges.cap_sys_ptrace {
        skipped.push(skip(
            "listener owner",
            format!(
                "{missing} listener(s) on port {port} belong to processes whose fds conndoc may not read (no CAP_SYS_PTRACE: /proc/PID/fd of a process of another user, or with capabilities conndoc lacks, is closed to it)"
            ),
            Some("run conndoc as root with CAP_SYS_PTRACE (and CAP_DAC_READ_SEARCH for other users' processes) to name the owning process"),
        ));
    }
    Ok((facts, skipped))
}

/// All listeners (optionally on one port) with their processes: `conndoc listeners`.
pub fn listener_table(port: Option<u16>, netns: Option<&NetnsSpec>) -> Result<Vec<Listener>, HostError> {
    listener_table_hinted(port, netns, &[])
}

/// [`listener_table`], the owners looked for first among `hint` (the pids known to run in
/// the namespace): checked against each socket's inode, never trusted.
pub fn listener_table_hinted(
    port: Option<u16>,
    netns: Option<&NetnsSpec>,
    hint: &[u32],
) -> Result<Vec<Listener>, HostError> {
    match netns {
        Some(spec) => run_in(spec, || table(port, hint))?,
        None => table(port, hint),
    }
}

/// The listeners on each of `ports` inside one namespace (entered once), their owners looked
/// for first among `hint` (a container's own process): what the container stage reads.
pub fn listener_tables_hinted(ports: &[u16], netns: &NetnsSpec, hint: &[u32]) -> Result<Vec<Listener>, HostError> {
    run_in(netns, || -> Result<Vec<Listener>, HostError> {
        let mut all = Vec::new();
        for &p in ports {
            all.extend(table(Some(p), hint)?);
        }
        Ok(all)
    })?
}

/// [`listener_tables_hinted`] for several processes' namespaces at once — each entry is a
/// pid (its namespace entered, its own process the hinted owner) and the ports to read there
/// — on a few worker threads that enter one namespace after another (one thread for up to
/// 16, not one spawned per namespace), all by `until`. One result per entry, in order.
pub fn listener_tables_each(items: &[(u32, Vec<u16>)], until: Instant) -> Vec<Result<Vec<Listener>, HostError>> {
    use crate::nsfind::{each_in, Candidate};
    let cands: Vec<Candidate> = items
        .iter()
        .map(|(pid, _)| {
            let path = NetnsSpec::Pid(*pid).path();
            Candidate {
                identity: conndoc_facts::nat::NetnsIdentity {
                    pids: vec![*pid],
                    entered_by: path.display().to_string(),
                    ..Default::default()
                },
                path,
            }
        })
        .collect();
    let read = each_in(&cands, until, |c| {
        let pid = c.identity.pids[0];
        let ports = items.iter().find(|(p, _)| *p == pid).map_or(&[][..], |(_, ports)| ports.as_slice());
        let mut all = Vec::new();
        for &p in ports {
            all.extend(table(Some(p), &[pid])?);
        }
        Ok::<_, HostError>(all)
    });
    items
        .iter()
        .zip(read)
        .map(|((pid, _), r)| {
            let ns = || NetnsSpec::Pid(*pid).label();
            match r {
                Some(Ok(r)) => r,
                Some(Err(source)) => Err(HostError::Netns { ns: ns(), source }),
                None => Err(HostError::Netns {
                    ns: ns(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "the deadline passed first"),
                }),
            }
        })
        .collect()
}

fn table(port: Option<u16>, hint: &[u32]) -> Result<Vec<Listener>, HostError> {
    let ns = procs::current_netns();
    let mut ls = sockets::listeners(port)?;
    let wanted: BTreeSet<u64> = ls.iter().map(|l| l.inode).collect();
    let (found, _) = procs::owners_hinted(&wanted, ns, None, hint);
    let mut cache = BTreeMap::new();
    for l in &mut ls {
        if let Some(&pid) = found.get(&l.inode) {
            l.process = cache.entry(pid).or_insert_with(|| procs::info(pid, ns)).clone();
        }
    }
    Ok(ls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn inspects_a_local_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port()).unwrap();
        let me = procs::comm(std::process::id()).unwrap();
        let req = InspectRequest {
            port,
            expect: Some(me.clone()),
            scope: InspectScope::Local,
            netns: None,
            privileges: Privileges::default(),
            thorough: true,
            addresses: None,
        };
        let base = baseline(&req).unwrap();
        let (facts, _) = inspect(&req, Some(&base)).unwrap();
        assert_eq!(facts.listeners.len(), 1);
        let owner = facts.listeners[0].process.as_ref().unwrap();
        assert_eq!(owner.pid, std::process::id());
        let svc = facts.expected.as_ref().unwrap();
        assert!(svc.running.iter().any(|p| p.pid == std::process::id()));
        assert!(svc.listeners.iter().any(|x| x.port() == port.get()));
        assert!(facts.counters.is_some());
        assert_eq!(facts.port_sockets_read, port_walk_can_matter(facts.counters.as_ref(), facts.sockstat));
        assert!(facts.sockstat.is_some());
        assert!(facts.sysctls.somaxconn.is_some());
        assert!(facts.local_addresses.iter().any(|a| a.is_loopback()));
        let table = listener_table(Some(port.get()), None).unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].process.as_ref().map(|p| p.pid), Some(std::process::id()));
    }

    #[test]
    fn listener_tables_of_several_namespaces() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = std::process::id();
        let until = Instant::now() + Duration::from_secs(5);
        let r = listener_tables_each(&[(me, vec![port]), (u32::MAX, vec![port])], until);
        assert_eq!(r.len(), 2);
        // Entering a namespace (even our own) needs CAP_SYS_ADMIN.
        match &r[0] {
            Ok(ls) => {
                assert_eq!(ls.len(), 1, "{ls:?}");
                assert_eq!(ls[0].process.as_ref().map(|p| p.pid), Some(me));
            }
            Err(e) => assert!(e.to_string().contains("ermission"), "{e}"),
        }
        let e = r[1].as_ref().unwrap_err().to_string();
        assert!(e.contains(&format!("pid:{}", u32::MAX)), "{e}");
        // A passed deadline reads nothing, and says so.
        let late = listener_tables_each(&[(me, vec![port])], Instant::now());
        assert!(late[0].as_ref().is_err_and(|e| e.to_string().contains("deadline")), "{:?}", late[0]);
    }

    #[test]
    fn the_port_walk_runs_only_where_a_finding_can_use_it() {
        use conndoc_facts::host::{SockStat, TcpCounters};
        let quiet = CounterDeltas::default();
        let few = SockStat { time_wait: TIME_WAIT_WALK - 1, ..Default::default() };
        let many = SockStat { time_wait: TIME_WAIT_WALK, ..Default::default() };
        assert!(!port_walk_can_matter(Some(&quiet), Some(few)), "a refusal with quiet counters");
        assert!(port_walk_can_matter(Some(&quiet), Some(many)), "a TIME_WAIT pile-up is possible");
        assert!(port_walk_can_matter(None, Some(few)), "no counters: SYN trouble not ruled out");
        assert!(port_walk_can_matter(Some(&quiet), None), "no sockstat: TIME_WAIT not ruled out");
        for rose in [
            TcpCounters { syncookies_sent: 1, ..Default::default() },
            TcpCounters { req_q_full_drop: 1, ..Default::default() },
            TcpCounters { req_q_full_do_cookies: 1, ..Default::default() },
            TcpCounters { listen_drops: 1, ..Default::default() },
        ] {
            let c = CounterDeltas { delta: rose, ..Default::default() };
            assert!(port_walk_can_matter(Some(&c), Some(few)), "{rose:?}");
        }
    }

    /// A TIME_WAIT pile-up on a served port (the server closes first, as an HTTP/1.0 server
    /// does): sockstat lets the walk run, and the walk counts the port's own sockets — what
    /// time-wait-pileup cites — with the sysctls that finding quotes read. 1,000 loopback
    /// connections to a port this test opened (their TIME_WAIT sockets last 60 s).
    #[test]
    fn a_time_wait_pileup_is_walked_and_counted() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port()).unwrap();
        let req = InspectRequest {
            port,
            expect: None,
            scope: InspectScope::Local,
            netns: None,
            privileges: Privileges::default(),
            thorough: false,
            addresses: None,
        };
        let base = baseline(&req).unwrap();
        crate::sockets::tests::server_closes_first(&l, TIME_WAIT_WALK as usize);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (facts, _) = inspect(&req, Some(&base)).unwrap();
            assert!(facts.sockstat.is_some_and(|s| s.time_wait >= TIME_WAIT_WALK), "{:?}", facts.sockstat);
            assert!(facts.port_sockets_read, "≥ {TIME_WAIT_WALK} TIME_WAIT in the namespace: the walk runs");
            let tw = facts.port_sockets.get(&conndoc_facts::SocketState::TimeWait).copied();
            // Until the last FINs are through, a few may still be in FIN_WAIT2.
            if tw == Some(TIME_WAIT_WALK as u32) {
                assert_eq!(facts.port_sockets.len(), 1, "{:?}", facts.port_sockets);
                assert!(facts.sysctls.tcp_fin_timeout.is_some() && facts.sysctls.tcp_tw_reuse.is_some());
                break;
            }
            assert!(Instant::now() < deadline, "{:?}", facts.port_sockets);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_served_port_is_inspected_from_its_owner() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port()).unwrap();
        let me = std::process::id();
        let req = InspectRequest {
            port,
            expect: Some(procs::comm(me).unwrap()),
            scope: InspectScope::Local,
            netns: None,
            privileges: Privileges::default(),
            thorough: false,
            addresses: None,
        };
        let base = baseline(&req).unwrap();
        // pid 1 does not hold the socket: a hint is checked, never trusted.
        for hint in [&[1, me][..], &[1][..], &[]] {
            let (facts, _) = inspect_hinted(&req, Some(&base), hint).unwrap();
            assert_eq!(facts.listeners.len(), 1, "{hint:?}");
            let owner = facts.listeners[0].process.as_ref().expect("owner found");
            assert_eq!(owner.pid, me, "{hint:?}");
            // What the healthy-path warnings read: fd limit, backlog, somaxconn, counters.
            assert!(owner.nofile_soft.is_some() && owner.open_fds.is_some());
            assert!(facts.listeners[0].backlog.0 > 0);
            assert!(facts.sysctls.somaxconn.is_some());
            assert!(facts.counters.is_some());
            let svc = facts.expected.as_ref().unwrap();
            assert_eq!(svc.running.iter().map(|p| p.pid).collect::<Vec<_>>(), [me]);
            assert!(svc.listeners.iter().any(|x| x.port() == port.get()));
        }
    }
}
