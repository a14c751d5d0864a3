//! Firewall stage (issue 4): read the rulesets of the inspected host and evaluate the probe's packet.
//!
//! The target host is the namespace named with `--netns`/`--netns-pid` (entered on a
//! dedicated thread), or this host when the target address is local. The client's own
//! OUTPUT path is always evaluated. Reading is read-only (nf_tables over netlink, `*-save`);
//! the only write is conndoc's own cache of big decoded rulesets (docs/firewall.md).
use crate::{skip, Options};
use conndoc_facts::firewall::{FirewallFacts, FirewallRole, Hook, HostFirewall};
use conndoc_facts::kube::{KubeFacts, ServiceMatch};
use conndoc_facts::nat::Translation;
use conndoc_facts::{Evidence, Family};
use conndoc_firewall::kube;
use conndoc_firewall::{build, inspect_here, HostView, Packet};
use conndoc_host::netns::{run_in, NetnsSpec};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// The source address the kernel picks towards `dst` (no packet is sent).
fn source_towards(dst: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = match dst {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect((dst, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Nothing could be read at all (no tool, or no permission): the reason, else None.
fn unreadable(view: &HostView) -> Option<String> {
    let nft_err = view.raw.nft_error()?;
    if view.raw.iptables.iter().any(|(_, r)| r.is_ok()) {
        return None;
    }
    Some(nft_err)
}

fn skip_unreadable(ev: &mut Evidence, check: &str, view: &HostView, reason: String, deadline: Duration) {
    let hint = if view.raw.deadline_exceeded.is_empty() {
        "reading nftables/iptables rules needs root (CAP_NET_ADMIN)".to_string()
    } else {
        deadline_hint(deadline)
    };
    skip(ev, check, reason, Some(hint));
}

fn dev_of(view: &HostView, addr: IpAddr) -> Option<String> {
    view.route_dev.iter().find(|(a, _)| *a == addr).map(|(_, d)| d.clone())
}

/// The probe's SYN of one flow (destination, source, source port) as a rule sees it.
fn syn(
    flow: (IpAddr, Option<IpAddr>, Option<u16>),
    port: u16,
    iif: Option<String>,
    oif: Option<String>,
    local: bool,
) -> Packet {
    let (dst, src, sport) = flow;
    Packet {
        family: Family::of(&dst),
        source: src,
        destination: dst,
        source_port: sport,
        destination_port: port,
        input_interface: iif,
        output_interface: oif,
        destination_local: Some(local),
    }
}

/// One flow of the probe: destination, source address, source port.
pub(crate) type Flow = (IpAddr, Option<IpAddr>, Option<u16>);

/// The probe's flows, one per destination address.
pub(crate) fn flows(ev: &Evidence) -> Vec<Flow> {
    let mut flows: Vec<Flow> = Vec::new();
    for p in &ev.probes {
        if flows.iter().any(|f| f.0 == p.address) {
            continue;
        }
        let src = p.local.map(|l| l.ip()).filter(|ip| !ip.is_unspecified()).or_else(|| source_towards(p.address));
        flows.push((p.address, src, p.local.map(|l| l.port()).filter(|p| *p != 0)));
    }
    flows
}

/// Overrides the deadline of the firewall read (a node with tens of thousands of rules
/// under load can need more than 10 s; a test can make it run out).
pub const FIREWALL_TIMEOUT_ENV: &str = "CONNDOC_FIREWALL_TIMEOUT";

/// The value of [`FIREWALL_TIMEOUT_ENV`], checked (1 ms to 10 min); None when unset.
pub fn firewall_timeout_from_env() -> Result<Option<Duration>, String> {
    let Some(v) = std::env::var_os(FIREWALL_TIMEOUT_ENV) else { return Ok(None) };
    let v = v.to_str().ok_or_else(|| format!("{FIREWALL_TIMEOUT_ENV} is not UTF-8"))?;
    conndoc_facts::duration::parse_in(v, Duration::from_millis(1), Duration::from_secs(600))
        .map(Some)
        .map_err(|e| format!("{FIREWALL_TIMEOUT_ENV}: {e}"))
}

/// The deadline of one firewall tool run: `--timeout` within 2-10 s, unless overridden.
pub(crate) fn cmd_timeout(timeout: Duration) -> Duration {
    match firewall_timeout_from_env() {
        Ok(Some(d)) => d,
        _ => timeout.clamp(Duration::from_secs(2), Duration::from_secs(10)),
    }
}

/// What to do about a firewall read that ran out of time.
fn deadline_hint(deadline: Duration) -> String {
    format!(
        "the firewall read had {} (from --timeout, 2-10 s): give it longer with {FIREWALL_TIMEOUT_ENV}=30s, or list the rules yourself (`iptables-save`, `nft list ruleset`)",
        conndoc_facts::duration::format(deadline)
    )
}

/// The view was read, but not all of it in time: listed under `skipped` so that no
/// verdict reads as if every rule had been seen.
fn skip_incomplete(ev: &mut Evidence, check: &str, view: &HostView, deadline: Duration) {
    let why = view.incomplete();
    if !why.is_empty() {
        skip(ev, check, format!("read only in part: {}", why.join("; ")), Some(deadline_hint(deadline)));
    }
}

/// Every address a firewall view must know about: the destinations and sources of `flows`.
pub(crate) fn addresses(flows: &[Flow]) -> Vec<IpAddr> {
    let mut ask: Vec<IpAddr> = flows.iter().map(|f| f.0).collect();
    ask.extend(flows.iter().filter_map(|f| f.1));
    ask.sort();
    ask.dedup();
    ask
}

/// The target host's rules evaluated for each flow: INPUT when the destination is its
/// own, FORWARD when it routes it. None when no ruleset could be read (the reason).
pub(crate) fn target_firewall(
    view: &HostView,
    flows: &[Flow],
    port: u16,
    namespace: Option<String>,
) -> (HostFirewall, conndoc_firewall::Ruleset) {
    let (rs, sources) = build(&view.raw);
    let mut evaluations = Vec::new();
    for (dst, src, sport) in flows {
        let local = view.local.contains(dst);
        let iif = match src {
            Some(s) if view.local.contains(s) => Some("lo".to_string()),
            Some(s) => dev_of(view, *s),
            None => None,
        };
        let oif = if local { None } else { dev_of(view, *dst) };
        let pkt = syn((*dst, *src, *sport), port, iif, oif, local);
        evaluations.push(rs.evaluate(if local { Hook::Input } else { Hook::Forward }, &pkt));
    }
    let fw = HostFirewall {
        role: FirewallRole::Target,
        namespace,
        ssh: None,
        sources,
        evaluations,
        not_understood_total: rs.not_understood_total,
        listeners_on_port: view.listeners.clone(),
    };
    (fw, rs)
}

/// The firewall of the host `conndoc inspect` runs on (inside `spec` when given), or why not.
pub(crate) fn target_here(
    spec: Option<&NetnsSpec>,
    flows: &[Flow],
    port: u16,
    timeout: Duration,
) -> Result<HostFirewall, String> {
    let ask = addresses(flows);
    let view = match spec {
        Some(spec) => run_in(spec, || inspect_here(port, &ask, cmd_timeout(timeout))).map_err(|e| e.to_string())?,
        None => inspect_here(port, &ask, cmd_timeout(timeout)),
    };
    if let Some(reason) = unreadable(&view) {
        return Err(reason);
    }
    Ok(target_firewall(&view, flows, port, spec.map(NetnsSpec::label)).0)
}

/// This host's firewall view read on a thread beside the host and container stages, for
/// [`run`] to use instead of reading it then (see [`prefetch`]).
pub(crate) struct Prefetch {
    port: u16,
    ask: Vec<IpAddr>,
    thread: std::thread::JoinHandle<Option<HostView>>,
}

impl Prefetch {
    /// The view, when it was read for the same port and addresses.
    fn take(self, port: u16, ask: &[IpAddr]) -> Option<HostView> {
        let view = self.thread.join().ok().flatten()?;
        (self.port == port && self.ask == ask).then_some(view)
    }

    /// Wait for a view no stage asked for (no thread outlives the diagnosis).
    pub(crate) fn finish(self) {
        let _ = self.thread.join();
    }
}

/// Start reading conndoc's own namespace's rules as soon as the connects have failed,
/// while the host and container stages run: the Docker faults need them (a refused port
/// nat chains may forward), and reading them after those stages added their time to the
/// whole diagnosis. Only where [`run`] would read this same view — no `--netns`, no
/// `--ssh`, a failed probe — and, for refusals only, only where nat chains exist (the one
/// case the decision after the host stage can still want them for without a listener).
pub(crate) fn prefetch(ev: &Evidence, opts: &Options) -> Option<Prefetch> {
    use conndoc_facts::ConnectKind::Refused;
    if opts.ssh.is_some() || opts.no_host || opts.netns.is_some() || opts.netns_pid.is_some() {
        return None;
    }
    if ev.probes.is_empty() || ev.probes.iter().all(|p| p.ok()) {
        return None;
    }
    let port = ev.target.port.get();
    let ask = addresses(&flows(ev));
    let only_refused = ev.probes.iter().all(|p| p.ok() || p.kind == Refused);
    let (t, nat_t) = (cmd_timeout(opts.timeout), opts.timeout.min(Duration::from_secs(1)));
    let asked = ask.clone();
    let thread = std::thread::Builder::new()
        .name("firewall".into())
        .spawn(move || {
            let nat = || conndoc_firewall::nfnl::nat_chains_present(nat_t).unwrap_or(false) || legacy_nat_table();
            if only_refused && !nat() {
                return None;
            }
            Some(inspect_here(port, &asked, t))
        })
        .ok()?;
    Some(Prefetch { port, ask, thread })
}

/// Read the rules, evaluate the probe's packet, and return the destination translation
/// the nat hooks make of it (for the backend stage), if any.
pub(crate) fn run(
    ev: &mut Evidence,
    opts: &Options,
    remote: Option<crate::remote::RemoteFirewall>,
) -> Option<Translation> {
    run_prefetched(ev, opts, remote, None)
}

/// [`run`], with this host's view from [`prefetch`] when it was read.
pub(crate) fn run_prefetched(
    ev: &mut Evidence,
    opts: &Options,
    remote: Option<crate::remote::RemoteFirewall>,
    prefetched: Option<Prefetch>,
) -> Option<Translation> {
    if ev.probes.is_empty() {
        if let Some(p) = prefetched {
            p.finish();
        }
        return None;
    }
    let over_ssh = remote.is_some();
    let port = ev.target.port.get();
    let cmd_timeout = cmd_timeout(opts.timeout);
    let flows = flows(ev);
    let dests: Vec<IpAddr> = flows.iter().map(|f| f.0).collect();
    let ask = addresses(&flows);

    // Over ssh the target's rules were read there; `--netns` then names a namespace there.
    let spec = if remote.is_some() {
        None
    } else {
        opts.netns.clone().map(NetnsSpec::Named).or(opts.netns_pid.map(NetnsSpec::Pid))
    };
    // This host and the target namespace are read at the same time.
    let (client, target_view) = std::thread::scope(|s| {
        let target = spec.as_ref().map(|spec| s.spawn(|| run_in(spec, || inspect_here(port, &ask, cmd_timeout))));
        let client =
            prefetched.and_then(|p| p.take(port, &ask)).unwrap_or_else(|| inspect_here(port, &ask, cmd_timeout));
        (client, target.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))))
    });
    let mut facts = FirewallFacts::default();
    let mut services = Vec::new();
    // The target namespace's ruleset when it is another than conndoc's own: packets from
    // the client enter it through prerouting.
    let mut target_nat: Option<(conndoc_firewall::Ruleset, HostView)> = None;

    // The target host.
    let target: Option<(HostView, Option<String>)> =
        match (remote, target_view) {
            (Some(crate::remote::RemoteFirewall::Read(fw)), _) => {
                facts.hosts.push(*fw);
                None
            }
            (Some(crate::remote::RemoteFirewall::Skipped(check)), _) => {
                ev.skipped.extend(check);
                None
            }
            (None, target_view) => match target_view {
                Some(Ok(v)) => Some((v, ev.options.netns.clone())),
                Some(Err(e)) => {
                    skip(
                        ev,
                        "firewall of the target host",
                        e.to_string(),
                        Some("entering a network namespace needs root (CAP_SYS_ADMIN)".into()),
                    );
                    None
                }
                None if dests.iter().any(|d| client.local.contains(d)) => Some((client.clone(), None)),
                None => {
                    skip(
                ev,
                "firewall of the target host",
                format!("{} is another host: conndoc reads firewall rules only where it runs", ev.target.authority()),
                Some(
                    "pass --ssh [USER@]HOST to read them on the server over SSH, or --netns for a local namespace"
                        .into(),
                ),
            );
                    None
                }
            },
        };

    if let Some((view, namespace)) = target {
        match unreadable(&view) {
            Some(reason) => skip_unreadable(ev, "firewall of the target host", &view, reason, cmd_timeout),
            None => {
                skip_incomplete(ev, "firewall of the target host", &view, cmd_timeout);
                let (fw, rs) = target_firewall(&view, &flows, port, namespace);
                services.extend(kube_services(&rs, FirewallRole::Target, &view, &flows, port));
                facts.hosts.push(fw);
                if spec.is_some() {
                    target_nat = Some((rs, view));
                }
            }
        }
    }

    // The client's OUTPUT path.
    let mut client_nat = None;
    match unreadable(&client) {
        Some(reason) => skip_unreadable(ev, "firewall of this host (OUTPUT)", &client, reason, cmd_timeout),
        None => {
            skip_incomplete(ev, "firewall of this host (OUTPUT)", &client, cmd_timeout);
            let (rs, sources) = build(&client.raw);
            let evaluations = flows
                .iter()
                .map(|(dst, src, sport)| {
                    let pkt = syn((*dst, *src, *sport), port, None, dev_of(&client, *dst), client.local.contains(dst));
                    rs.evaluate(Hook::Output, &pkt)
                })
                .collect();
            services.extend(kube_services(&rs, FirewallRole::Client, &client, &flows, port));
            facts.hosts.push(HostFirewall {
                role: FirewallRole::Client,
                namespace: None,
                sources,
                evaluations,
                ssh: None,
                not_understood_total: rs.not_understood_total,
                listeners_on_port: None,
            });
            client_nat = Some(rs);
        }
    }
    ev.firewall = Some(facts);
    // A Kubernetes Service is followed to its endpoints by the kube stage.
    let nat = if services.is_empty() && !over_ssh {
        translation(ev, &flows, port, client_nat.as_ref().map(|rs| (rs, &client)), target_nat.as_ref())
    } else {
        None
    };
    if !services.is_empty() {
        ev.kube = Some(KubeFacts { services });
    }
    nat
}

/// The first destination translation of a failed flow: the client's own nat OUTPUT
/// chains come first (they rewrite the packet before it leaves), then the target
/// namespace's prerouting chains. A translation that cannot be followed (a port range, a
/// map) is listed as a skipped check naming the rule.
fn translation(
    ev: &mut Evidence,
    flows: &[Flow],
    port: u16,
    client: Option<(&conndoc_firewall::Ruleset, &HostView)>,
    target: Option<&(conndoc_firewall::Ruleset, HostView)>,
) -> Option<Translation> {
    let failed: Vec<IpAddr> = ev.probes.iter().filter(|p| !p.ok()).map(|p| p.address).collect();
    for (dst, src, sport) in flows.iter().filter(|f| failed.contains(&f.0)) {
        let mut evals = Vec::new();
        if let Some((rs, view)) = client {
            // This host's own packet has no input interface: rules compare an empty name.
            let pkt =
                syn((*dst, *src, *sport), port, Some(String::new()), dev_of(view, *dst), view.local.contains(dst));
            evals.push((rs.translate(Hook::Output, &pkt), pkt));
        }
        if let Some((rs, view)) = target {
            let iif = src.and_then(|s| dev_of(view, s));
            let pkt = syn((*dst, *src, *sport), port, iif, None, view.local.contains(dst));
            evals.push((rs.translate(Hook::Prerouting, &pkt), pkt));
        }
        for (e, pkt) in evals {
            match e.translation(&pkt) {
                Ok(Some(t)) => return Some(t),
                Ok(None) => {}
                Err(u) => {
                    let (rule, kind, why) = (u.rule, u.kind, u.why);
                    skip(
                        ev,
                        "address translation",
                        format!(
                            "{} `{}` translates {}:{port} ({} in {}): {why}; the backend is not followed",
                            rule.location(),
                            rule.text,
                            dst,
                            kind.translation_kind().as_str(),
                            e.hook.as_str()
                        ),
                        None,
                    );
                    return None;
                }
            }
        }
    }
    None
}

/// Whether the inspected namespace (and conndoc's own) has a nat chain attached: any
/// nf_tables base chain of type nat (iptables-nft's `nat` table makes them; one chain dump,
/// not the whole ruleset), or a legacy `nat` table. Only then may a refused port that
/// nothing listens on still be forwarded — without one the rules are not read at all.
pub(crate) fn nat_present(opts: &Options) -> bool {
    let t = opts.timeout.min(Duration::from_secs(1));
    let here = move || conndoc_firewall::nfnl::nat_chains_present(t).unwrap_or(false) || legacy_nat_table();
    let target = opts.netns.clone().map(NetnsSpec::Named).or(opts.netns_pid.map(NetnsSpec::Pid));
    here() || target.is_some_and(|spec| run_in(&spec, here).unwrap_or(false))
}

/// A legacy iptables `nat` table exists in the calling thread's namespace (the kernel
/// lists each instantiated table there).
fn legacy_nat_table() -> bool {
    ["/proc/thread-self/net/ip_tables_names", "/proc/thread-self/net/ip6_tables_names"]
        .iter()
        .any(|p| conndoc_files::read_to_string(p, 4096).is_ok_and(|s| s.lines().any(|l| l.trim() == "nat")))
}

/// The probed addresses that are Kubernetes Services in kube-proxy's rules on this host
/// (the first role that has one wins: a node's own rules are where kube-proxy writes).
fn kube_services(
    rs: &conndoc_firewall::Ruleset,
    role: FirewallRole,
    view: &HostView,
    flows: &[(IpAddr, Option<IpAddr>, Option<u16>)],
    port: u16,
) -> Vec<ServiceMatch> {
    flows
        .iter()
        .filter_map(|(dst, _, _)| {
            let probe = kube::Probe { address: *dst, port, local: view.local.contains(dst) };
            kube::recognise(rs, role, &probe).or_else(|| {
                view.kube_nft.iter().find(|m| m.address == *dst).cloned().map(|mut m| {
                    m.role = role;
                    m
                })
            })
        })
        .collect()
}
