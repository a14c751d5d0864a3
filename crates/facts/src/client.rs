//! Facts about the machine conndoc runs on (the client side): privileges, routes,
//! neighbours, the local port range and sockets towards the target.

use crate::value::{Family, Port, SocketState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What this process may do; checks that need more are skipped, and said so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges {
    pub uid: u32,
    pub cap_net_admin: bool,
    pub cap_net_raw: bool,
    pub cap_sys_admin: bool,
    pub cap_sys_ptrace: bool,
}

impl Privileges {
    pub fn root(&self) -> bool {
        self.uid == 0
    }
}

/// A check that did not run, and why, so a person knows what the report does not cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCheck {
    pub check: String,
    pub reason: String,
    /// How to get it done (e.g. the command to run on the server, or `run as root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The kernel's route decision for a destination, asked without sending anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLookup {
    pub destination: IpAddr,
    /// The source address the kernel would pick; None when there is no route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The error of the lookup, e.g. ENETUNREACH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The matching route line (`10.0.0.0/24 dev veth0`), when found in the tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// A neighbour (ARP / NDP) entry for an on-link destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    pub address: IpAddr,
    pub device: String,
    /// Kernel NUD state: REACHABLE, STALE, INCOMPLETE, FAILED, …
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lladdr: Option<String>,
}

/// Local (ephemeral) port usage towards one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralUsage {
    pub destination: IpAddr,
    pub port: Port,
    /// Sockets from this host to that destination, by state.
    pub by_state: BTreeMap<SocketState, u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFacts {
    pub hostname: String,
    pub privileges: Privileges,
    /// `net.ipv4.ip_local_port_range` as (low, high).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port_range: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteLookup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Neighbour>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ephemeral: Vec<EphemeralUsage>,
    /// Addresses configured on this host's interfaces (to tell whether the target is local).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_addresses: Vec<IpAddr>,
    /// Families this host has a usable (non-loopback) address in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<Family>,
}
