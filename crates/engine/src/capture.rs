//! Capture stage (issue 4): packets of the probe's flows while connecting.
//!
//! `begin` opens the AF_PACKET capture (with the flow's BPF filter) in conndoc's own
//! namespace and sends the TTL-baseline echo; `end` collects after the connects. Without
//! CAP_NET_RAW the check is recorded as skipped.
use crate::{skip, Options};
use conndoc_capture::{Capture, CaptureError};
use conndoc_facts::Evidence;
use std::net::IpAddr;
use std::time::Duration;

const CHECK: &str = "packet capture";

pub(crate) enum CaptureStage {
    Running(Capture),
    Failed { reason: String, hint: Option<String> },
}

pub(crate) fn begin(ev: &Evidence, opts: &Options, addrs: &[IpAddr]) -> Option<CaptureStage> {
    if addrs.is_empty() {
        return None;
    }
    // A target on this host has no path to observe: the socket table and the ruleset say
    // all a capture would, and closing an AF_PACKET socket waits for an RCU grace period
    // (~10-30 ms, most of a local diagnosis). `--pcap` still asks for the file.
    let local = |a: &IpAddr| a.is_loopback() || ev.client.local_addresses.contains(a);
    if opts.pcap_out.is_none() && addrs.iter().all(local) {
        return None;
    }
    Some(match Capture::start(addrs, ev.target.port.get()) {
        Ok(c) => CaptureStage::Running(c),
        Err(e @ CaptureError::Permission(_)) => CaptureStage::Failed {
            reason: e.to_string(),
            hint: Some("run as root or grant CAP_NET_RAW (setcap cap_net_raw+ep conndoc)".into()),
        },
        Err(e) => CaptureStage::Failed { reason: e.to_string(), hint: None },
    })
}

pub(crate) fn end(stage: Option<CaptureStage>, ev: &mut Evidence, opts: &Options, path_ports: &[u16]) {
    // Echo replies normally arrived during the connect; a silent host costs at most this.
    let grace = opts.timeout.min(Duration::from_millis(300));
    match stage {
        None => {}
        Some(CaptureStage::Failed { reason, hint }) => {
            let reason = match &opts.pcap_out {
                Some(p) => format!("{reason}; {} was not written", p.display()),
                None => reason,
            };
            skip(ev, CHECK, reason, hint);
        }
        Some(CaptureStage::Running(mut c)) => match {
            c.ignore_local_ports(path_ports);
            c
        }
        .finish(grace, opts.pcap_out.as_deref())
        {
            Ok((facts, pcap_error)) => {
                ev.capture = Some(facts);
                if let Some(e) = pcap_error {
                    skip(ev, "pcap file", e.to_string(), None);
                }
            }
            Err(e) => skip(ev, CHECK, e.to_string(), None),
        },
    }
}
