//! The server side of `conndoc inspect` (and so of `diagnose --ssh`): the host stage's
//! facts for one port, with no probe of its own. [`begin`] reads the "before" counters,
//! [`finish`] everything else, given what the client's probe did ([`InspectFollowUp`]).

use conndoc_facts::host::InspectScope;
use conndoc_facts::inspect::{InspectFollowUp, InspectOutput, InspectPhase};
use conndoc_facts::protocol::RedisInfo;
use conndoc_facts::{Port, SkippedCheck};
use conndoc_host::{Baseline, InspectRequest, NetnsSpec};
use std::net::IpAddr;
use std::time::Duration;

/// What `conndoc inspect` was asked.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    pub port: Port,
    /// Addresses clients dial (`--address`): the firewall is evaluated for a SYN to each.
    pub addresses: Vec<IpAddr>,
    /// The process expected to serve the port (`--expect`).
    pub expect: Option<String>,
    pub netns: Option<NetnsSpec>,
    /// Deadline of each tool run (firewall tools, systemctl).
    pub timeout: Duration,
}

/// An inspection under way: the "before" counters are read.
pub struct Bracket {
    req: InspectRequest,
    base: Option<Baseline>,
    base_error: Option<String>,
}

/// Read the counters the probe's deltas are measured from.
pub fn begin(opts: &InspectOptions) -> Bracket {
    let (scope, netns) = match &opts.netns {
        Some(NetnsSpec::Pid(_)) => (InspectScope::NetnsPid, opts.netns.clone()),
        Some(_) => (InspectScope::Netns, opts.netns.clone()),
        None => (InspectScope::Local, None),
    };
    let req = InspectRequest {
        port: opts.port,
        expect: opts.expect.clone(),
        scope,
        netns,
        privileges: conndoc_probe::client::basics().privileges,
        thorough: true,
        addresses: None,
    };
    let (base, base_error) = match conndoc_host::baseline(&req) {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Bracket { req, base, base_error }
}

/// The `ready` message of `--bracket`.
pub fn ready(opts: &InspectOptions) -> InspectOutput {
    let mut o = InspectOutput::new(InspectPhase::Ready, opts.port);
    stamp(&mut o);
    o
}

fn stamp(o: &mut InspectOutput) {
    let basics = conndoc_probe::client::basics();
    o.version = env!("CARGO_PKG_VERSION").into();
    o.hostname = basics.hostname;
    o.privileges = basics.privileges;
}

/// Everything else, after the probe. A follow-up with no flows (one-shot `inspect`)
/// evaluates the firewall for `--address` instead.
pub fn finish(b: Bracket, opts: &InspectOptions, follow: &InspectFollowUp) -> InspectOutput {
    let mut out = InspectOutput::new(InspectPhase::Result, opts.port);
    stamp(&mut out);
    let mut req = b.req;
    req.thorough = follow.thorough;
    match conndoc_host::inspect::inspect_hinted(&req, b.base.as_ref(), &follow.owner_hint) {
        Ok((facts, skipped)) => {
            out.skipped.extend(skipped);
            if let Some(e) = b.base_error {
                out.skipped.push(SkippedCheck { check: "counters before the probe".into(), reason: e, hint: None });
            }
            out.host = Some(facts);
        }
        Err(e) => {
            let denied = matches!(&e, conndoc_host::HostError::Netns { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied);
            out.error = Some(e.to_string());
            out.skipped.push(SkippedCheck {
                check: "server-side inspection".into(),
                reason: e.to_string(),
                hint: denied.then(|| "entering another network namespace needs root (CAP_SYS_ADMIN)".to_string()),
            });
        }
    }
    let flows: Vec<crate::firewall::Flow> = if follow.flows.is_empty() {
        opts.addresses.iter().map(|a| (*a, None, None)).collect()
    } else {
        follow.flows.iter().map(|f| (f.destination, f.source, f.source_port)).collect()
    };
    if (follow.firewall || follow.flows.is_empty()) && !flows.is_empty() {
        match crate::firewall::target_here(req.netns.as_ref(), &flows, opts.port.get(), opts.timeout) {
            Ok(fw) => out.firewall = Some(fw),
            Err(reason) => out.skipped.push(SkippedCheck {
                check: "firewall of the target host".into(),
                reason,
                hint: Some("reading nftables/iptables rules needs root (CAP_NET_ADMIN)".into()),
            }),
        }
    }
    if let Some(host) = &out.host {
        let info = RedisInfo {
            config_file: follow.redis_config_file.clone(),
            process_id: follow.owner_hint.first().copied(),
            ..Default::default()
        };
        let info = (info.config_file.is_some() || info.process_id.is_some()).then_some(info);
        // The password stays with the client: no asking the server over loopback here.
        match crate::protocol::redis_conf_lint(host, info.as_ref(), || None) {
            Some(Ok(r)) => out.redis_conf = Some(r),
            Some(Err(s)) => out.skipped.push(s),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot inspection of a port this test listens on names the listener and this
    /// process, in the contract's schema.
    #[test]
    fn one_shot_inspection_finds_our_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port()).unwrap();
        let opts =
            InspectOptions { port, addresses: Vec::new(), expect: None, netns: None, timeout: Duration::from_secs(2) };
        let b = begin(&opts);
        let out = finish(b, &opts, &InspectFollowUp::default());
        assert_eq!(out.schema, conndoc_facts::inspect::INSPECT_SCHEMA);
        assert_eq!(out.phase, InspectPhase::Result);
        let host = out.host.expect("host facts");
        let mine = host.listeners.iter().find(|x| x.port() == port.get()).expect("our listener");
        assert!(mine.loopback_only());
        assert!(out.firewall.is_none(), "no --address, no flows: nothing to evaluate");
    }
}
