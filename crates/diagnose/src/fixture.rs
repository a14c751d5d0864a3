//! The facts rule tests start from, built in one place (compiled for this crate's tests and,
//! with the `fixture` feature, for other crates' tests): evidence for a target with nothing
//! gathered yet, a connect probe, a listener, its process. A test sets the fields its rule
//! reads on top; recorded evidence files (tests/evidence/) are for facts a builder would only
//! guess.

use conndoc_facts::host::{Listener, ProcessInfo};
use conndoc_facts::resolve::{AddrSource, ResolvedAddr};
use conndoc_facts::{ConnectKind, ConnectProbe, Errno, Evidence, Family, Host, Micros, Port, QueueLen, Target};

/// Evidence for `target` as the engine starts it: root privileges, an address literal
/// "resolved" to itself (a name resolves to nothing), no probe yet, 1 s timeout.
pub fn evidence(target: &str) -> Evidence {
    let target = Target::parse(target).expect("fixture target");
    let mut ev: Evidence = serde_json::from_value(serde_json::json!({
        "schema": conndoc_facts::EVIDENCE_SCHEMA,
        "target": target,
        "options": { "timeout_us": 1_000_000 },
        "started_at": "2026-01-01T00:00:00Z",
        "elapsed_us": 1500,
        "client": { "hostname": "c", "privileges": { "uid": 0, "cap_net_admin": true, "cap_net_raw": true, "cap_sys_admin": true, "cap_sys_ptrace": true } },
        "resolution": serde_json::to_value(conndoc_facts::Resolution::default()).expect("resolution"),
        "probes": [],
    }))
    .expect("fixture evidence");
    if let Host::Ip(address) = ev.target.host {
        ev.resolution.literal = true;
        ev.resolution.system.addresses = vec![ResolvedAddr { address, source: AddrSource::Literal }];
    }
    ev
}

/// A connect to `addr:port` that ended as `kind` after 100 µs (ECONNREFUSED when refused),
/// from no particular local address.
pub fn connect(addr: &str, port: u16, kind: ConnectKind) -> ConnectProbe {
    let address = addr.parse().expect("fixture address");
    ConnectProbe {
        address,
        port: Port::new(port).expect("fixture port"),
        family: Family::of(&address),
        outcome: kind.outcome(),
        kind,
        errno: (kind == ConnectKind::Refused).then(|| Errno::from_raw(111)),
        elapsed_us: Micros(100),
        deadline_us: Micros(1_000_000),
        local: None,
        syn_retransmits: None,
        peer_close: None,
    }
}

/// A listening socket on `addr` (`ip:port`) with an empty accept queue of 511, no process.
pub fn listener(addr: &str) -> Listener {
    let local: std::net::SocketAddr = addr.parse().expect("fixture listener address");
    Listener {
        family: Family::of(&local.ip()),
        local,
        v6only: None,
        accept_queue: QueueLen(0),
        backlog: QueueLen(511),
        uid: 0,
        inode: 7,
        process: None,
    }
}

/// Process 42 named `comm` (its command line too), root, in the target's namespace.
pub fn process(comm: &str) -> ProcessInfo {
    ProcessInfo {
        pid: 42,
        comm: comm.into(),
        cmdline: comm.into(),
        uid: 0,
        user: None,
        open_fds: None,
        nofile_soft: None,
        nofile_hard: None,
        in_target_netns: Some(true),
    }
}
