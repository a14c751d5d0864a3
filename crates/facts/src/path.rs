//! Along the path (issue 14): TCP SYNs to the target port sent with TTL (hop limit)
//! 1, 2, 3, … and what answered each one, as TCP traceroute tools show it.

use crate::value::{Micros, Port, Ttl};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Why the path stage ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathTrigger {
    /// `conndoc diagnose --path`.
    Forced,
    /// The connect was still unanswered halfway through its deadline.
    ConnectTimeout,
    /// A reset arrived whose TTL says it did not come from the host.
    ResetTtl,
    /// A router (not the target) answered the SYN with an ICMP unreachable.
    RouterUnreachable,
}

/// The kind of an ICMP/ICMPv6 destination unreachable (or packet too big), by type/code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnreachableKind {
    Network,
    Host,
    Protocol,
    Port,
    /// IPv4 fragmentation needed, IPv6 packet too big.
    FragmentationNeeded,
    /// IPv4 codes 9, 10, 13; IPv6 code 1.
    AdminProhibited,
    /// IPv6 code 5 (ingress/egress policy) and 6 (reject route).
    Policy,
    Other,
}

impl UnreachableKind {
    /// Classify an ICMP (v6 when `v6`) error type/code; None when it is no unreachable.
    pub fn classify(v6: bool, icmp_type: u8, code: u8) -> Option<UnreachableKind> {
        use UnreachableKind::*;
        Some(match (v6, icmp_type, code) {
            (false, 3, 0 | 6 | 11) => Network,
            (false, 3, 1 | 7 | 12) => Host,
            (false, 3, 2) => Protocol,
            (false, 3, 3) => Port,
            (false, 3, 4) => FragmentationNeeded,
            (false, 3, 9 | 10 | 13) => AdminProhibited,
            (false, 3, _) => Other,
            (true, 1, 0) => Network,
            (true, 1, 1) => AdminProhibited,
            (true, 1, 3) => Host,
            (true, 1, 4) => Port,
            (true, 1, 5 | 6) => Policy,
            (true, 1, _) => Other,
            (true, 2, _) => FragmentationNeeded,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            UnreachableKind::Network => "net unreachable",
            UnreachableKind::Host => "host unreachable",
            UnreachableKind::Protocol => "protocol unreachable",
            UnreachableKind::Port => "port unreachable",
            UnreachableKind::FragmentationNeeded => "fragmentation needed",
            UnreachableKind::AdminProhibited => "administratively prohibited",
            UnreachableKind::Policy => "rejected by policy",
            UnreachableKind::Other => "unreachable",
        }
    }
}

/// What came back for the probe with one TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HopAnswer {
    /// ICMP time exceeded: a router at this distance.
    TimeExceeded,
    /// ICMP/ICMPv6 destination unreachable (or packet too big) with its type and code.
    Unreachable {
        reason: UnreachableKind,
        #[serde(rename = "type")]
        icmp_type: u8,
        code: u8,
    },
    /// The SYN reached something that accepts the port.
    SynAck,
    /// A TCP reset answered the SYN.
    Rst,
    /// Nothing within the stage's deadline.
    Nothing,
}

impl HopAnswer {
    /// Whether the probe went no further (it was answered by an end point or refused).
    pub fn terminal(self) -> bool {
        matches!(self, HopAnswer::Unreachable { .. } | HopAnswer::SynAck | HopAnswer::Rst)
    }
}

impl fmt::Display for HopAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HopAnswer::TimeExceeded => f.write_str("time-exceeded"),
            HopAnswer::Unreachable { reason, icmp_type, code } => {
                write!(f, "unreachable ({}, type {icmp_type} code {code})", reason.as_str())
            }
            HopAnswer::SynAck => f.write_str("syn-ack"),
            HopAnswer::Rst => f.write_str("rst"),
            HopAnswer::Nothing => f.write_str("nothing"),
        }
    }
}

/// One TTL's probe and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The TTL (hop limit) the SYN was sent with.
    pub ttl: Ttl,
    /// Who answered; None for [`HopAnswer::Nothing`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    pub answer: HopAnswer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<Micros>,
    /// The TTL the answer arrived with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_ttl: Option<Ttl>,
}

/// The path to one target address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathTrace {
    pub target: IpAddr,
    pub port: Port,
    pub trigger: PathTrigger,
    /// Probes sent (TTL 1..=max_hops), all in flight at once.
    pub max_hops: u8,
    /// One entry per TTL, up to the first probe that reached an end (SYN-ACK, RST,
    /// unreachable), or all of them.
    pub hops: Vec<Hop>,
    pub elapsed_us: Micros,
}

impl PathTrace {
    /// The first hop whose answer ended the path (reached or refused it).
    pub fn first_terminal(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| h.answer.terminal())
    }
    /// The farthest hop that answered time-exceeded.
    pub fn last_router(&self) -> Option<&Hop> {
        self.hops.iter().rev().find(|h| h.answer == HopAnswer::TimeExceeded)
    }
    /// The lowest TTL at which `address` answered (a router's place on the path).
    pub fn hop_of(&self, address: &IpAddr) -> Option<&Hop> {
        self.hops.iter().find(|h| h.address.as_ref() == Some(address))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathFacts {
    pub traces: Vec<PathTrace>,
    /// Connects given up before their deadline because the trace beside them had located
    /// where the SYN dies (nothing more would come back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connects_ended: Vec<ConnectEnded>,
}

/// A connect the path stage ended early: when, against the deadline it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectEnded {
    pub address: IpAddr,
    /// How long the connect waited.
    pub after_us: Micros,
    pub deadline_us: Micros,
}

impl PathFacts {
    pub fn trace(&self, address: &IpAddr) -> Option<&PathTrace> {
        self.traces.iter().find(|t| &t.target == address)
    }
    pub fn connect_ended(&self, address: &IpAddr) -> Option<&ConnectEnded> {
        self.connects_ended.iter().find(|c| &c.address == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_as_tagged_json() {
        let h = Hop {
            ttl: Ttl(3),
            address: Some("10.0.0.1".parse().unwrap()),
            answer: HopAnswer::Unreachable { reason: UnreachableKind::AdminProhibited, icmp_type: 3, code: 13 },
            rtt_us: Some(Micros(120)),
            reply_ttl: Some(Ttl(63)),
        };
        let j = serde_json::to_string(&h).unwrap();
        assert!(j.contains(r#""answer":{"kind":"unreachable","reason":"admin-prohibited","type":3,"code":13}"#), "{j}");
        assert_eq!(serde_json::from_str::<Hop>(&j).unwrap(), h);
        let n: Hop = serde_json::from_str(r#"{"ttl":4,"answer":{"kind":"nothing"}}"#).unwrap();
        assert_eq!(n.answer, HopAnswer::Nothing);
    }

    #[test]
    fn classifies_router_unreachables() {
        assert_eq!(UnreachableKind::classify(false, 3, 13), Some(UnreachableKind::AdminProhibited));
        assert_eq!(UnreachableKind::classify(false, 3, 4), Some(UnreachableKind::FragmentationNeeded));
        assert_eq!(UnreachableKind::classify(true, 1, 1), Some(UnreachableKind::AdminProhibited));
        assert_eq!(UnreachableKind::classify(true, 2, 0), Some(UnreachableKind::FragmentationNeeded));
        assert_eq!(UnreachableKind::classify(false, 11, 0), None);
    }
}
