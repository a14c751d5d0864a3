//! How the target name turned into addresses: the system resolver (what the application
//! sees), the hosts file, and a direct DNS query to the configured nameservers.

use crate::value::Micros;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where an address came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AddrSource {
    /// The target was an address literal.
    Literal,
    /// A line of the hosts file.
    HostsFile { path: String, line: u32 },
    /// The DNS answer from the configured nameservers.
    Dns,
    /// The system resolver returned it and neither the hosts file nor DNS explains it
    /// (nss-myhostname, mDNS, a DNS answer that changed in between).
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedAddr {
    pub address: IpAddr,
    pub source: AddrSource,
}

/// The system resolver's (getaddrinfo) view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemLookup {
    pub addresses: Vec<ResolvedAddr>,
    /// The resolver's error, e.g. `EAI_NONAME: Name or service not known`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub timed_out: bool,
    pub elapsed_us: Micros,
    /// Addresses the resolver returned beyond the ones kept (conndoc keeps and probes at
    /// most [`MAX_ADDRESSES`]): a hostile or broken resolver cannot make it fan out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u32,
}

/// At most this many resolved addresses are kept and probed.
pub const MAX_ADDRESSES: usize = 32;

/// At most this many nameservers are asked: the system resolver (glibc and musl, `MAXNS`)
/// uses only the first three, so the others cannot matter to the application either.
pub const MAX_NAMESERVERS: usize = 3;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One matching line of the hosts file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsEntry {
    pub path: String,
    pub line: u32,
    pub address: IpAddr,
    /// The line as written (comments stripped).
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QType {
    A,
    Aaaa,
}

impl QType {
    /// The record type's name (`AAAA`), as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DnsOutcome {
    Answer {
        addresses: Vec<IpAddr>,
        ttl: u32,
    },
    /// NOERROR with no record of that type.
    NoData,
    NxDomain,
    /// SERVFAIL, REFUSED, … by name.
    Rcode {
        rcode: String,
    },
    Timeout,
    /// The query could not be sent (no route, refused port …).
    Error {
        message: String,
    },
    /// The nameserver answered, but the reply could not be parsed (truncated, a label
    /// loop, bad lengths): it answered, so it is not "silent".
    Malformed {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsQuery {
    pub server: IpAddr,
    pub qtype: QType,
    pub outcome: DnsOutcome,
    pub elapsed_us: Micros,
}

/// A direct query to each configured nameserver, independent of the hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsLookup {
    pub resolv_conf: String,
    pub servers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// The fully qualified name that was asked.
    pub name: String,
    pub queries: Vec<DnsQuery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Nameservers resolv.conf names after the first [`MAX_NAMESERVERS`]: the system
    /// resolver ignores them, and so does conndoc.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ignored_servers: u32,
}

impl DnsLookup {
    /// Every address any server answered.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = Vec::new();
        for q in &self.queries {
            if let DnsOutcome::Answer { addresses, .. } = &q.outcome {
                for a in addresses {
                    if !v.contains(a) {
                        v.push(*a);
                    }
                }
            }
        }
        v
    }
    /// Whether at least one server answered at all (with anything but a timeout/error).
    pub fn any_server_answered(&self) -> bool {
        self.queries.iter().any(|q| !matches!(q.outcome, DnsOutcome::Timeout | DnsOutcome::Error { .. }))
    }
    pub fn all_servers_silent(&self) -> bool {
        !self.queries.is_empty() && !self.any_server_answered()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// True when the target was an address literal and nothing was resolved.
    pub literal: bool,
    pub system: SystemLookup,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts_entries: Vec<HostsEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsLookup>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_answer_is_an_answer_not_silence() {
        let q = |outcome| DnsQuery {
            server: "10.0.0.53".parse().unwrap(),
            qtype: QType::A,
            outcome,
            elapsed_us: Micros(5),
        };
        let mut d = DnsLookup { queries: vec![q(DnsOutcome::Timeout)], ..Default::default() };
        assert!(d.all_servers_silent());
        d.queries.push(q(DnsOutcome::Malformed { message: "truncated".into() }));
        assert!(!d.all_servers_silent());
        let json = serde_json::to_string(&d.queries[1].outcome).unwrap();
        assert_eq!(serde_json::from_str::<DnsOutcome>(&json).unwrap(), d.queries[1].outcome);
    }
}
