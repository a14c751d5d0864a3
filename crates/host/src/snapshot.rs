//! One inspection of the current network namespace shared by many targets (`conndoc check`
//! over thousands of ports): the host-wide facts are read once, and each port's
//! [`HostFacts`] are assembled from them without another kernel walk.
//!
//! Only ports with no listener and no expected process are assembled here; anything
//! else needs owner lookups and goes through [`crate::inspect`].

use crate::inspect::Baseline;
use crate::{audit, counters, kmsg, procs, sockets, HostError};
use conndoc_facts::host::{AvcDenial, CounterDeltas, HostFacts, InspectScope, Inspected, KernelEvent, Listener};
use conndoc_facts::{Micros, Port, SkippedCheck, SocketState};
use conndoc_netlink::diag::{AF_INET, AF_INET6};
use conndoc_netlink::{Bytecode, Cond};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The namespace's host-wide facts, read once after the probes.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Facts every port shares (addresses, counters, sysctls, sockstat).
    common: HostFacts,
    skipped: Vec<SkippedCheck>,
    /// Every listener of the namespace.
    pub listeners: Vec<Listener>,
    /// Per local port: sockets in the [`sockets::TELLING_STATES`].
    port_sockets: Option<BTreeMap<u16, BTreeMap<SocketState, u32>>>,
    kernel_log: Result<Vec<KernelEvent>, String>,
    avc: Result<Vec<AvcDenial>, String>,
    /// What every port's facts list as not available here (the kernel or audit log).
    unavailable: Vec<String>,
}

/// Read the current namespace once: what [`crate::inspect`] reads for one port, for every
/// port in `ports` (the per-port socket counts are one dump over their range).
pub fn snapshot(ports: &BTreeSet<u16>, base: Option<&Baseline>) -> Result<Snapshot, HostError> {
    let start = Instant::now();
    let mut skipped = Vec::new();
    let netns = procs::current_netns();
    let mut common = HostFacts {
        inspected: Some(Inspected {
            scope: InspectScope::Local,
            netns: None,
            netns_inode: netns,
            ..Default::default()
        }),
        ..Default::default()
    };
    match conndoc_netlink::addresses() {
        Ok(a) => common.local_addresses = a.into_iter().map(|a| a.address).collect(),
        Err(e) => skipped.push(SkippedCheck { check: "local addresses".into(), reason: e.to_string(), hint: None }),
    }
    let listeners = sockets::listeners(None)?;
    if let Some(b) = base {
        match counters::read() {
            Ok(after) => {
                common.counters = Some(CounterDeltas {
                    delta: after.since(&b.counters),
                    total: after,
                    window_us: Micros::from_duration(b.at.elapsed()),
                })
            }
            Err(e) => skipped.push(SkippedCheck { check: "TCP counters".into(), reason: e.to_string(), hint: None }),
        }
    }
    common.sockstat = counters::read_sockstat();
    // The per-port walk, and the parameters read, under the same conditions as one port's
    // inspection (a snapshot serves ports nothing listens on: no accept queue to cite).
    let walk = crate::inspect::port_walk_can_matter(common.counters.as_ref(), common.sockstat);
    let syn_rose = common.counters.as_ref().map(crate::inspect::syn_queue_rose);
    let tw = if walk { crate::sysctl::TIME_WAIT_PILEUP } else { 0 };
    common.sysctls = crate::sysctl::read_wanted(crate::sysctl::Wanted::for_findings(false, syn_rose, tw));
    let port_sockets = match (ports.first(), ports.last()) {
        (Some(&lo), Some(&hi)) if walk => {
            let filter = Bytecode(vec![Cond::LocalPort { lo, hi }]);
            let mut m: BTreeMap<u16, BTreeMap<SocketState, u32>> = BTreeMap::new();
            let r = sockets::dump(&[AF_INET, AF_INET6], sockets::TELLING_STATES, filter, |msg| {
                if let Some(s) = SocketState::from_kernel(msg.state) {
                    *m.entry(msg.local.port()).or_default().entry(s).or_insert(0) += 1;
                }
            });
            match r {
                Ok(()) => Some(m),
                Err(e) => {
                    skipped.push(SkippedCheck {
                        check: "sockets on the target port".into(),
                        reason: e.to_string(),
                        hint: None,
                    });
                    None
                }
            }
        }
        _ => None,
    };
    // As for one port (inspect.rs, kernel_log_matters): with no program expected, a kernel
    // log line changes no finding unless a drop counter rose (a read of the whole ring
    // buffer per chunk otherwise).
    let kernel_log = if common.counters.as_ref().is_none_or(crate::inspect::drops_rose) {
        kmsg::read_events(Duration::from_millis(300), Duration::from_secs(600)).map_err(|e| e.to_string())
    } else {
        Ok(Vec::new())
    };
    let avc = audit::read_bind_denials(audit::AUDIT_LOG, 1 << 20).map_err(|e| e.to_string());
    let mut unavailable = Vec::new();
    if let Err(e) = &kernel_log {
        unavailable.push(format!("kernel log (/dev/kmsg): {e}"));
    }
    if let Err(e) = &avc {
        unavailable.push(format!("audit log ({}): {e}", audit::AUDIT_LOG));
    }
    common.elapsed_us = Micros::from_duration(start.elapsed());
    Ok(Snapshot { common, skipped, listeners, port_sockets, kernel_log, avc, unavailable })
}

impl Snapshot {
    /// Whether any listener of the namespace is on `port`.
    pub fn has_listener(&self, port: u16) -> bool {
        self.listeners.iter().any(|l| l.port() == port)
    }

    /// The facts [`crate::inspect`] would report for `port` with no expected process
    /// (a thorough inspection), or None when the port has a listener (its owners need a
    /// process walk: inspect it on its own).
    pub fn facts_for(&self, port: Port) -> Option<(HostFacts, Vec<SkippedCheck>)> {
        let p = port.get();
        if self.has_listener(p) {
            return None;
        }
        let mut facts = self.common.clone();
        facts.port = Some(port);
        let skipped = self.skipped.clone();
        if let Some(m) = &self.port_sockets {
            facts.port_sockets = m.get(&p).cloned().unwrap_or_default();
            facts.port_sockets_read = true;
        }
        if let Ok(events) = &self.kernel_log {
            if !events.is_empty() {
                let mut seen = BTreeSet::new();
                let mut log: Vec<KernelEvent> = events
                    .iter()
                    .filter(|e| matches!(e, KernelEvent::SynFlood { port, .. } if *port == p))
                    .cloned()
                    .collect();
                log.reverse();
                log.retain(|e| seen.insert(format!("{e:?}")));
                log.truncate(5);
                log.reverse();
                facts.kernel_log = log;
            }
        }
        if let Ok(d) = &self.avc {
            facts.avc_denials = d.iter().filter(|d| d.port == Some(p)).cloned().collect();
        }
        // Written once for the snapshot (a `format!` per port before).
        facts.unavailable.extend_from_slice(&self.unavailable);
        Some((facts, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn assembles_a_free_port_and_refuses_a_listening_one() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = l.local_addr().unwrap().port();
        let free_l = TcpListener::bind("127.0.0.1:0").unwrap();
        let free = free_l.local_addr().unwrap().port();
        drop(free_l);
        let req = crate::InspectRequest {
            port: Port::new(free).unwrap(),
            expect: None,
            scope: InspectScope::Local,
            netns: None,
            privileges: Default::default(),
            thorough: true,
            addresses: None,
        };
        let base = crate::baseline(&req).unwrap();
        let ports: BTreeSet<u16> = [busy, free].into_iter().collect();
        let snap = snapshot(&ports, Some(&base)).unwrap();
        assert!(snap.facts_for(Port::new(busy).unwrap()).is_none(), "a listening port needs a full inspection");
        let (facts, _) = snap.facts_for(Port::new(free).unwrap()).unwrap();
        let (single, _) = crate::inspect(&req, Some(&base)).unwrap();
        assert_eq!(facts.port, single.port);
        assert!(facts.listeners.is_empty() && single.listeners.is_empty());
        assert_eq!(facts.local_addresses, single.local_addresses);
        assert_eq!(facts.port_sockets_read, single.port_sockets_read);
        assert_eq!(facts.sysctls.somaxconn, single.sysctls.somaxconn);
        assert!(facts.counters.is_some());
    }
}
