//! Runs every gatherer for one target under one deadline and returns the [`Evidence`].
//!
//! The order matters: counters are read before the probe so deltas cover it, capture
//! runs while connecting, and the protocol and host stages see the connect results.
//! Each area has its own module with a begin/end (or one-shot) stage.

mod backend;
mod batch;
mod capture;
mod client;
pub mod container;
mod firewall;
mod found;
mod host;
pub mod inspect;
mod kube;
mod path;
mod protocol;
pub mod remote;

pub use batch::{connect_many, gather_each, gather_many, Keep};
pub use firewall::{firewall_timeout_from_env, FIREWALL_TIMEOUT_ENV};

use conndoc_facts::{Evidence, Family, Micros, RunOptions, SkippedCheck, Target, EVIDENCE_SCHEMA};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How to run one diagnosis.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline of each connect (and of each protocol read).
    pub timeout: Duration,
    /// Restrict to one address family (`-4` / `-6`).
    pub family: Option<Family>,
    /// The process expected to serve the port (`--expect`); defaults from the scheme.
    pub expect_process: Option<String>,
    /// Inspect the target host inside this network namespace (`--netns NAME|PATH`).
    pub netns: Option<String>,
    /// Inspect the network namespace of this process (`--netns-pid PID`).
    pub netns_pid: Option<u32>,
    /// Write the captured packets here (`--pcap FILE`).
    pub pcap_out: Option<PathBuf>,
    /// Skip server-side inspection even when the target is local.
    pub no_host: bool,
    /// TLS: accept any certificate (`--insecure`).
    pub insecure: bool,
    /// TLS: trust this CA bundle (`--ca FILE`).
    pub ca_file: Option<PathBuf>,
    /// Inspect the server on another machine over SSH (`--ssh`): `netns` then names a
    /// namespace there.
    pub ssh: Option<remote::SshOptions>,
    /// Probe the path with TTL-limited SYNs whatever the connect does (`--path`).
    pub path: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(3),
            family: None,
            expect_process: None,
            netns: None,
            netns_pid: None,
            pcap_out: None,
            no_host: false,
            insecure: false,
            ca_file: None,
            ssh: None,
            path: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespace_paths_name_their_process() {
        assert_eq!(super::proc_pid("/proc/42/ns/net"), Some(42));
        assert_eq!(super::proc_pid("/proc/42/task/43/ns/net"), Some(42));
        assert_eq!(super::proc_pid("/proc/self/ns/net"), None);
        assert_eq!(super::proc_pid("/run/netns/lab1"), None);
        assert_eq!(super::proc_pid("lab1"), None);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Host(String),
    /// `--ca FILE` cannot be used: bad input, reported before anything is probed.
    #[error("--ca: {0}")]
    Ca(#[from] conndoc_proto::tls::TlsSetupError),
}

/// Gather every fact about `target`.
pub fn gather(target: Target, opts: &Options) -> Result<Evidence, EngineError> {
    gather_in(target, opts, None)
}

/// [`gather`], with the namespace listing of the batch it is part of.
pub(crate) fn gather_in(
    target: Target,
    opts: &Options,
    namespaces: Option<&found::Namespaces>,
) -> Result<Evidence, EngineError> {
    let start = Instant::now();
    if let Some(ca) = &opts.ca_file {
        conndoc_proto::tls::load_ca(ca)?;
    }
    let mut ev = new_evidence(target, opts, conndoc_probe::client::basics());

    // Over ssh the session connects while names resolve here.
    let ssh = opts.ssh.as_ref().filter(|_| !opts.no_host);
    let remote = ssh.map(|o| remote::start(&ev, o, opts.timeout));
    let own_addresses = client::local_addresses(&mut ev);
    ev.resolution = conndoc_probe::resolve::resolve(&ev.target, opts.family, opts.timeout);
    client::resolution_limits(&mut ev);
    let addrs = conndoc_probe::resolve::addresses_to_probe(&ev.resolution, opts.family);

    // The engine answers while the probe runs (one diagnosis; a batch shares no engine).
    let engine = namespaces.is_none().then(|| container::prefetch(&ev, opts, &addrs)).flatten();
    let (remote, host_stage) = match remote {
        // The remote has read its "before" counters when it says ready.
        Some(r) => (Some(remote::ready(r)), None),
        None => (None, host::begin(&ev, opts, &addrs, own_addresses)),
    };
    let capture_stage = capture::begin(&ev, opts, &addrs);
    let path_stage = path::begin(&mut ev, opts, &addrs);
    // A connect stops waiting once the path stage beside it has located where its SYN dies.
    let can_stop = |a: std::net::IpAddr| path_stage.as_ref().is_some_and(|b| b.connect_can_stop(a));
    ev.probes = conndoc_probe::connect::connect_all_stoppable(
        &addrs,
        ev.target.port,
        opts.timeout,
        peer_watch(&ev, opts),
        &can_stop,
    );
    let path_ports = path::end(path_stage, &mut ev);
    capture::end(capture_stage, &mut ev, opts, &path_ports);
    path::after_capture(&mut ev, opts);
    // The rules are read beside the host and container stages when they may be wanted.
    let fw_prefetch = if namespaces.is_none() { firewall::prefetch(&ev, opts) } else { None };
    protocol::run(&mut ev, opts);
    // The engine thread widens its inspects to a failure's while the host stage runs.
    if let Some(e) = &engine {
        e.probe_outcome(container::probe_failed(&ev));
    }
    let remote_fw = match (remote, ssh) {
        (Some(r), Some(o)) => Some(remote::end(r, &mut ev, o, opts.timeout)),
        _ => {
            host::end(host_stage, &mut ev, opts);
            // Containers are read on this host only (an --ssh target's engine is remote).
            if !opts.no_host {
                container::run_prefetched(&mut ev, opts, engine);
            }
            None
        }
    };
    protocol::after_host(&mut ev, opts);
    // The rules come before the backend: a DNAT/redirect rule in a nat hook is one way
    // the port is forwarded. A refused port nothing listens on needs them only when the
    // namespace has nat chains at all.
    let read_rules = firewall_relevant(&ev)
        || (remote_fw.is_none()
            && backend::worth_following(&ev)
            && !opts.no_host
            && !backend::proxied(&ev)
            && firewall::nat_present(opts));
    // A connect that succeeded to a Service proves one endpoint only: on a node with
    // kube-proxy's rules the Service's endpoints are read and each one followed.
    let read_rules = read_rules || (remote_fw.is_none() && kube::worth_reading_when_healthy(&ev, opts));
    let nat = if read_rules {
        firewall::run_prefetched(&mut ev, opts, remote_fw, fw_prefetch)
    } else {
        if let Some(p) = fw_prefetch {
            p.finish();
        }
        None
    };
    backend::run(&mut ev, opts, nat);
    // A Service in kube-proxy's rules (read just above) is followed to its pods here.
    if opts.ssh.is_none() {
        kube::follow(&mut ev, opts);
    }
    // The dialled address is another namespace's on this machine (a container, a pod).
    found::run(&mut ev, opts, namespaces);
    // That namespace may forward the port to a backend (a DNAT/redirect rule there): its
    // rules are read as with `--netns` naming it, and the rule is followed.
    if let Some(o) = backend::through_found(&ev, opts).filter(firewall::nat_present) {
        ev.skipped.retain(|s| s.check != "firewall of the target host");
        let nat = firewall::run(&mut ev, &o, None);
        backend::run(&mut ev, &o, nat);
    }
    client::after_probe(&mut ev);

    ev.elapsed_us = Micros::from_duration(start.elapsed());
    Ok(ev)
}

/// How long a `tcp://` check watches an opened connection for a close or reset by the peer
/// (a proxy with a dead backend accepts, then closes within milliseconds). Other schemes
/// speak their protocol, which sees the same.
const PEER_WATCH: Duration = Duration::from_millis(150);

fn peer_watch(ev: &Evidence, opts: &Options) -> Option<Duration> {
    (ev.target.scheme == conndoc_facts::Scheme::Tcp).then(|| PEER_WATCH.min(opts.timeout))
}

/// What the evidence records of the options a run had.
pub(crate) fn run_options(target: &Target, opts: &Options) -> RunOptions {
    RunOptions {
        timeout_us: Micros::from_duration(opts.timeout),
        family: opts.family,
        expect_process: opts.expect_process.clone().or_else(|| target.scheme.expected_process().map(str::to_string)),
        netns: opts.netns.clone().or(opts.netns_pid.map(|p| format!("pid:{p}"))),
        ssh: opts.ssh.as_ref().map(|s| s.destination.to_string()),
    }
}

/// This build: the crate version and, when built from a git checkout, the commit.
pub fn conndoc_version() -> String {
    match option_env!("CONNDOC_GIT_COMMIT") {
        Some(c) => format!("{} (git {c})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The evidence of one run before anything is gathered.
pub(crate) fn new_evidence(target: Target, opts: &Options, client: conndoc_facts::ClientFacts) -> Evidence {
    Evidence {
        schema: EVIDENCE_SCHEMA.into(),
        conndoc_version: Some(conndoc_version()),
        options: run_options(&target, opts),
        started_at: conndoc_probe::time::now_rfc3339(),
        elapsed_us: Micros(0),
        client,
        resolution: Default::default(),
        probes: Vec::new(),
        host: None,
        firewall: None,
        capture: None,
        protocol: None,
        containers: None,
        path: None,
        backend: None,
        found: None,
        skipped: Vec::new(),
        kube: None,
        target,
    }
}

/// Whether a firewall rule could explain a failure: a silent drop, a local EPERM, an ICMP
/// error, a reset, or a refusal while a listener exists (or the host was not inspected).
/// A refusal with no listener anywhere on the port is `no-listener` whatever the rules
/// say, and a healthy target needs no rule reading: both skip spawning nft/iptables.
fn firewall_relevant(ev: &Evidence) -> bool {
    use conndoc_facts::ConnectKind::*;
    let port = ev.target.port.get();
    ev.probes.iter().any(|p| match p.kind {
        Timeout | PermissionDenied | HostUnreachable | NetworkUnreachable | Reset | Other => true,
        // The inspected namespace may be a router on the path (the address is not its own):
        // then a FORWARD rule can forge the refusal.
        Refused => ev.host.as_ref().is_none_or(|h| {
            !host::owns_address(&h.local_addresses, &p.address)
                || h.listeners.iter().any(|l| l.port() == port && l.accepts(p.address))
                // A NodePort has no listener: kube-proxy's rules translate or reject it.
                || NODE_PORTS.contains(&port)
        }),
        Connected | NoLocalAddress => false,
    })
}

/// kube-proxy's default `--service-node-port-range`: a refused local port in it may be a
/// NodePort, which only the rules explain.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The process whose namespace is inspected: `--netns-pid PID`, or the PID of a
/// `--netns /proc/PID/ns/net` path — the same namespace, so the same container lookup.
pub(crate) fn namespace_pid(opts: &Options) -> Option<u32> {
    opts.netns_pid.or_else(|| opts.netns.as_deref().and_then(proc_pid))
}

/// `/proc/PID/ns/net` (or `/proc/PID/task/TID/ns/net`) → PID.
fn proc_pid(path: &str) -> Option<u32> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "proc", pid, "ns", "net"] | ["", "proc", pid, "task", _, "ns", "net"] => pid.parse().ok(),
        _ => None,
    }
}

/// Record a check that could not run.
pub(crate) fn skip(ev: &mut Evidence, check: &str, reason: impl Into<String>, hint: Option<String>) {
    ev.skipped.push(SkippedCheck { check: check.into(), reason: reason.into(), hint });
}
