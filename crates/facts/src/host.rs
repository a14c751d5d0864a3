//! Facts read on the target host (local, or inside its network namespace): listeners,
//! owning processes, limits, kernel parameters and counters, service manager, logs.
//! Owned by the host-inspection work (issue 3).

use crate::value::{Family, Micros, Port, QueueLen, SocketState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// How the target host was inspected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InspectScope {
    /// The target address is on one of this host's interfaces (same network namespace).
    #[default]
    Local,
    /// A network namespace named with `--netns NAME|PATH`.
    Netns,
    /// The network namespace of a process named with `--netns-pid PID` (a container).
    NetnsPid,
    /// Another machine, read by `conndoc inspect` run there over SSH (`--ssh`).
    Ssh,
    /// The network namespace that owns the dialled address, found by conndoc among this
    /// machine's namespaces (no flag given).
    Found,
}

/// The namespace that was inspected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspected {
    pub scope: InspectScope,
    /// The namespace as given (`NAME`, a path, or `pid:PID`), absent for `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Inode of the network namespace (`/proc/PID/ns/net`), to compare with processes'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
    /// Scope `ssh`: the SSH destination (`[USER@]HOST[:PORT]`) the facts were read on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Scope `ssh`: the remote conndoc's version and hostname, as it reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_hostname: Option<String>,
}

impl Inspected {
    /// Where the facts were read, for a sentence: "", " in network namespace X", " on HOST (over ssh)".
    pub fn place(&self) -> String {
        match self.scope {
            InspectScope::Local => String::new(),
            InspectScope::Ssh => format!(" on {} (read over ssh)", self.destination.as_deref().unwrap_or("?")),
            _ => format!(" in network namespace {}", self.netns.as_deref().unwrap_or("?")),
        }
    }
}

/// A process as the report shows it. The command line has secrets replaced by `<redacted>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// Command line, secrets redacted.
    pub cmdline: String,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Open file descriptors, when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_fds: Option<u64>,
    /// RLIMIT_NOFILE soft limit (None = unlimited or unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile_soft: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile_hard: Option<u64>,
    /// Whether it runs in the inspected network namespace (None: could not tell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_target_netns: Option<bool>,
}

impl ProcessInfo {
    /// Open fds as a share of the soft limit, 0.0..=1.0+.
    pub fn fd_fill(&self) -> Option<f64> {
        match (self.open_fds, self.nofile_soft) {
            (Some(n), Some(l)) if l > 0 => Some(n as f64 / l as f64),
            _ => None,
        }
    }
}

/// A listening TCP socket from the kernel's table (sock_diag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub family: Family,
    pub local: SocketAddr,
    /// IPV6_V6ONLY of an IPv6 listener (None for IPv4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6only: Option<bool>,
    /// Connections waiting in the accept queue.
    pub accept_queue: QueueLen,
    /// The accept queue's limit: the listen() backlog capped by somaxconn.
    pub backlog: QueueLen,
    pub uid: u32,
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
}

impl Listener {
    pub fn port(&self) -> u16 {
        self.local.port()
    }
    /// Bound to 127.0.0.0/8, ::1 or ::ffff:127.x — reachable only from this namespace.
    pub fn loopback_only(&self) -> bool {
        match self.local.ip() {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        }
    }
    pub fn wildcard(&self) -> bool {
        self.local.ip().is_unspecified()
    }
    /// Whether a connection to `dst` (on this listener's port) would reach this listener.
    pub fn accepts(&self, dst: IpAddr) -> bool {
        let me = self.local.ip();
        match (me, dst) {
            (IpAddr::V4(m), IpAddr::V4(d)) => m.is_unspecified() || m == d,
            (IpAddr::V6(m), IpAddr::V6(d)) => m.is_unspecified() || m == d,
            // A dual-stack [::] listener takes IPv4 too; an IPv4-mapped bind takes that one.
            (IpAddr::V6(m), IpAddr::V4(d)) => {
                self.v6only != Some(true) && (m.is_unspecified() || m.to_ipv4_mapped() == Some(d))
            }
            (IpAddr::V4(_), IpAddr::V6(d)) => d.to_ipv4_mapped().is_some_and(|d4| {
                let IpAddr::V4(m) = me else { return false };
                m.is_unspecified() || m == d4
            }),
        }
    }
    /// The accept queue is at its limit (the kernel queues up to backlog + 1).
    pub fn queue_full(&self) -> bool {
        self.accept_queue.0 > 0 && self.accept_queue.0 >= self.backlog.0
    }
}

/// Kernel parameters that decide how the host takes connections (of the inspected
/// namespace where they are per-namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sysctls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub somaxconn: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_max_syn_backlog: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_syncookies: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_abort_on_overflow: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_local_port_range: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_fin_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_tw_reuse: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_open: Option<u64>,
}

/// TCP counters from /proc/net/netstat (TcpExt) and /proc/net/snmp (Tcp) that explain
/// refused or dropped connections. As a delta: how much each rose over the probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpCounters {
    pub listen_overflows: u64,
    pub listen_drops: u64,
    pub syncookies_sent: u64,
    pub syncookies_recv: u64,
    pub syncookies_failed: u64,
    pub req_q_full_drop: u64,
    pub req_q_full_do_cookies: u64,
    pub attempt_fails: u64,
    pub out_rsts: u64,
    pub estab_resets: u64,
    pub passive_opens: u64,
    pub active_opens: u64,
}

impl TcpCounters {
    /// `self - before`, saturating (a counter that went down reads as 0).
    pub fn since(&self, before: &TcpCounters) -> TcpCounters {
        macro_rules! d {
            ($($f:ident),*) => { TcpCounters { $( $f: self.$f.saturating_sub(before.$f), )* } };
        }
        d!(
            listen_overflows,
            listen_drops,
            syncookies_sent,
            syncookies_recv,
            syncookies_failed,
            req_q_full_drop,
            req_q_full_do_cookies,
            attempt_fails,
            out_rsts,
            estab_resets,
            passive_opens,
            active_opens
        )
    }
}

/// The namespace's socket totals (/proc/net/sockstat, "TCP:" line): read in O(1),
/// whatever the size of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SockStat {
    pub inuse: u64,
    pub orphan: u64,
    pub time_wait: u64,
    pub alloc: u64,
}

/// Counter deltas over the probe, and the totals since boot (after the probe).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterDeltas {
    pub delta: TcpCounters,
    pub total: TcpCounters,
    /// Time between the two reads.
    pub window_us: Micros,
}

/// A kernel log line that matters for the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KernelEvent {
    /// "Possible SYN flooding on port N. Sending cookies/Dropping request."
    SynFlood { port: u16, action: String, line: String },
    /// "Out of memory: Killed process PID (COMM)" / "oom-kill: …".
    OomKill { pid: u32, comm: String, line: String },
}

/// The expected service process (`--expect`, or the scheme's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedService {
    pub name: String,
    /// Matching processes in the inspected network namespace.
    pub running: Vec<ProcessInfo>,
    /// Matching processes elsewhere on the machine (another network namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elsewhere: Vec<ProcessInfo>,
    /// Every listener owned by a running matching process, on any port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

/// A systemd unit's state (`systemctl show`) and its last journal lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `Result=`: success, exit-code, signal, core-dump, timeout, …
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// ExecMainStatus: the exit status or signal number of the main process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_main_status: Option<i32>,
    /// ExecMainCode: 1 exited, 2 killed, 3 dumped (CLD_*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_main_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<JournalLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalLine {
    /// Microseconds since the epoch (`__REALTIME_TIMESTAMP`).
    pub time_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    pub message: String,
}

/// An SELinux AVC denial from the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvcDenial {
    pub permission: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The port of a `name_bind`/`name_connect` denial (`src=` / `dest=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub scontext: String,
    pub tcontext: String,
    pub tclass: String,
    pub permissive: bool,
    pub line: String,
}

/// Everything read on the target host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspected: Option<Inspected>,
    /// Addresses on the inspected namespace's interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_addresses: Vec<IpAddr>,
    /// The port that was inspected (the target's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Every listener on the target port, on any address and family.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Non-listening sockets whose local port is the target port, by state (server side:
    /// TIME_WAIT, CLOSE_WAIT, SYN_RECV …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_sockets: BTreeMap<SocketState, u32>,
    /// Whether `port_sockets` was read. It is read only where its counts can change a
    /// finding: a SYN-queue counter rose over the probe (or the counters were not read), or
    /// the namespace holds 1,000 TIME_WAIT sockets or more (sockstat); otherwise the walk of
    /// the kernel's whole connection table is skipped, after a failed probe too.
    #[serde(default)]
    pub port_sockets_read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockstat: Option<SockStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedService>,
    #[serde(default)]
    pub sysctls: Sysctls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<CounterDeltas>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_log: Vec<KernelEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<UnitState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avc_denials: Vec<AvcDenial>,
    /// Sources that were not available here (no systemd, no audit log, kmsg unreadable),
    /// so a reader knows what the report could not look at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
    pub elapsed_us: Micros,
    /// Set when the inspected namespace is a container's and the dialled port is published
    /// to another port of it (`-p 16379:6379`): that port was inspected instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_map: Option<InspectedPortMap>,
}

/// The dialled host port and the container port it is published to, read from the
/// engine's port map before the container's namespace was inspected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectedPortMap {
    /// The port the client dialled (on the host).
    pub dialled: Port,
    /// The container's port, inspected inside its namespace.
    pub inspected: Port,
    /// The container's name.
    pub container: String,
    /// The mapping as the engine shows it (`0.0.0.0:16379 → 6379/tcp`).
    pub mapping: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(addr: &str, v6only: Option<bool>) -> Listener {
        let local: SocketAddr = addr.parse().unwrap();
        Listener {
            family: Family::of(&local.ip()),
            local,
            v6only,
            accept_queue: QueueLen(0),
            backlog: QueueLen(128),
            uid: 0,
            inode: 1,
            process: None,
        }
    }

    #[test]
    fn which_listener_takes_which_address() {
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert!(l("0.0.0.0:80", None).accepts(v4));
        assert!(!l("0.0.0.0:80", None).accepts(v6));
        assert!(l("[::]:80", Some(false)).accepts(v4));
        assert!(!l("[::]:80", Some(true)).accepts(v4));
        assert!(l("[::]:80", Some(true)).accepts(v6));
        assert!(!l("127.0.0.1:80", None).accepts(v4));
        assert!(l("127.0.0.1:80", None).loopback_only());
        assert!(l("[::1]:80", Some(false)).loopback_only());
        assert!(!l("[::1]:80", Some(false)).accepts("127.0.0.1".parse().unwrap()));
        assert!(l("[::ffff:10.0.0.2]:80", Some(false)).accepts(v4));
    }

    #[test]
    fn queue_full_and_counter_deltas() {
        let mut x = l("0.0.0.0:80", None);
        x.accept_queue = QueueLen(128);
        assert!(x.queue_full());
        x.accept_queue = QueueLen(3);
        assert!(!x.queue_full());
        let a = TcpCounters { listen_overflows: 5, out_rsts: 2, ..Default::default() };
        let b = TcpCounters { listen_overflows: 9, out_rsts: 1, ..Default::default() };
        let d = b.since(&a);
        assert_eq!((d.listen_overflows, d.out_rsts), (4, 0));
    }
}
