//! Packets seen while probing (SYN, SYN-ACK, RST, ICMP) with their TTLs. Owned by issue 4.

use crate::value::{Micros, Port, Ttl};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Which way a captured packet went, seen from conndoc's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
}

/// The TCP part of a captured packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSeen {
    pub source_port: u16,
    pub destination_port: u16,
    /// Flag names as tcpdump prints them in long form: `SYN`, `SYN,ACK`, `RST,ACK`.
    pub flags: String,
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
}

/// An ICMP or ICMPv6 message, named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpSeen {
    /// `icmp` or `icmpv6`.
    pub protocol: String,
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
    /// e.g. `destination unreachable: communication administratively prohibited`.
    pub name: String,
    /// For errors: the destination address and port of the packet it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about_destination: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub about_port: Option<u16>,
}

/// One captured packet, summarised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketSeen {
    /// Time since the capture started.
    pub at_us: Micros,
    pub direction: Direction,
    pub source: IpAddr,
    pub destination: IpAddr,
    /// IPv4 TTL or IPv6 hop limit as received.
    pub ttl: Ttl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSeen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpSeen>,
}

/// How the host's own TTL was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineSource {
    IcmpEchoReply,
    /// A SYN-ACK from the probed port or another open port of the same host.
    SynAck,
}

/// The TTL of packets the target host certainly sent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlBaseline {
    pub address: IpAddr,
    pub source: BaselineSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    pub ttl: Ttl,
}

/// What came back for one probed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSeen {
    pub address: IpAddr,
    pub port: Port,
    /// SYNs conndoc sent (first one plus retransmissions).
    pub syns_sent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_ack_ttl: Option<Ttl>,
    /// The first RST that answered, with its sender and TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rst: Option<ReplySeen>,
    /// The first ICMP error about this flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpReply>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplySeen {
    pub from: IpAddr,
    pub ttl: Ttl,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpReply {
    pub from: IpAddr,
    pub ttl: Ttl,
    pub icmp: IcmpSeen,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureFacts {
    /// What the BPF filter lets through, in tcpdump-like words.
    pub filter: String,
    pub flows: Vec<FlowSeen>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<TtlBaseline>,
    /// Every packet that passed the filter, in order (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packets: Vec<PacketSeen>,
    /// Where `--pcap` wrote the packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcap_file: Option<String>,
    /// Packets the kernel dropped from the capture buffer (PACKET_STATISTICS).
    #[serde(default)]
    pub kernel_drops: u32,
}

impl CaptureFacts {
    pub fn flow(&self, address: &IpAddr) -> Option<&FlowSeen> {
        self.flows.iter().find(|f| &f.address == address)
    }
    pub fn baseline(&self, address: &IpAddr) -> Option<&TtlBaseline> {
        self.baselines.iter().find(|b| &b.address == address)
    }
}
