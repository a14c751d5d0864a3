//! One TCP connect per resolved address, classified.

use crate::value::{Errno, Family, Micros, Port};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// The contract's coarse outcome (report.md `probes[].outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Connected,
    Refused,
    Timeout,
    Unreachable,
    Error,
}

/// The finer classification behind the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectKind {
    Connected,
    /// ECONNREFUSED: a RST (or ICMP port unreachable) answered the SYN.
    Refused,
    /// Nothing came back before the deadline.
    Timeout,
    /// EHOSTUNREACH.
    HostUnreachable,
    /// ENETUNREACH.
    NetworkUnreachable,
    /// EADDRNOTAVAIL: no free local port / address.
    NoLocalAddress,
    /// EPERM/EACCES: a local filter (OUTPUT rule, seccomp, LSM) stopped the SYN.
    PermissionDenied,
    /// ECONNRESET during the handshake.
    Reset,
    Other,
}

impl ConnectKind {
    /// The name used in JSON and text (`no-local-address`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectKind::Connected => "connected",
            ConnectKind::Refused => "refused",
            ConnectKind::Timeout => "timeout",
            ConnectKind::HostUnreachable => "host-unreachable",
            ConnectKind::NetworkUnreachable => "network-unreachable",
            ConnectKind::NoLocalAddress => "no-local-address",
            ConnectKind::PermissionDenied => "permission-denied",
            ConnectKind::Reset => "reset",
            ConnectKind::Other => "error",
        }
    }
    pub fn outcome(self) -> Outcome {
        match self {
            ConnectKind::Connected => Outcome::Connected,
            ConnectKind::Refused | ConnectKind::Reset => Outcome::Refused,
            ConnectKind::Timeout => Outcome::Timeout,
            ConnectKind::HostUnreachable | ConnectKind::NetworkUnreachable => Outcome::Unreachable,
            ConnectKind::NoLocalAddress | ConnectKind::PermissionDenied | ConnectKind::Other => Outcome::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectProbe {
    pub address: IpAddr,
    pub port: Port,
    pub family: Family,
    pub outcome: Outcome,
    pub kind: ConnectKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    pub elapsed_us: Micros,
    /// The deadline this connect had.
    pub deadline_us: Micros,
    /// Our side of the connection when one was bound (source address and port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// SYN retransmissions the kernel made before giving up (TCP_INFO), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_retransmits: Option<u8>,
    /// The peer closed or reset the connection right after the handshake, before sending
    /// anything (a proxy whose backend is dead does this). Read only for `tcp://` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_close: Option<PeerClose>,
}

/// How the peer ended a connection it had just accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerCloseKind {
    /// An orderly close (FIN): a read returned end of file.
    Eof,
    /// A reset (RST): a read failed with ECONNRESET.
    Reset,
}

/// The peer closed an accepted connection within the watch window after connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerClose {
    pub kind: PeerCloseKind,
    /// Time from the connect to the close.
    pub after_us: Micros,
    /// How long conndoc watched the connection.
    pub watched_us: Micros,
}

impl ConnectProbe {
    /// Connected, and not closed by the peer straight away.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Connected && self.peer_close.is_none()
    }
}
