//! Firewall rulesets and which rule the probe's packet meets. Owned by issue 4.
//!
//! The rulesets are read on the inspected host (the target, or the namespace given with
//! `--netns`) and on the client; each probe's packet is evaluated against the hook it
//! passes there (INPUT on the target, OUTPUT on the client, FORWARD on a router).

use crate::value::{Family, Port};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Which program the rules were read with (and so which kernel back-end holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirewallTool {
    /// `nft -j list ruleset`
    Nftables,
    /// `iptables-nft-save` (iptables over the nf_tables back-end)
    IptablesNft,
    /// `iptables-legacy-save` (the x_tables back-end)
    IptablesLegacy,
    Ip6tablesNft,
    Ip6tablesLegacy,
}

impl FirewallTool {
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallTool::Nftables => "nftables",
            FirewallTool::IptablesNft => "iptables-nft",
            FirewallTool::IptablesLegacy => "iptables-legacy",
            FirewallTool::Ip6tablesNft => "ip6tables-nft",
            FirewallTool::Ip6tablesLegacy => "ip6tables-legacy",
        }
    }
    /// The command that lists these rules, for a person to check by hand.
    pub fn list_command(self) -> &'static str {
        match self {
            FirewallTool::Nftables => "nft -a list ruleset",
            FirewallTool::IptablesNft => "iptables-nft-save",
            FirewallTool::IptablesLegacy => "iptables-legacy-save",
            FirewallTool::Ip6tablesNft => "ip6tables-nft-save",
            FirewallTool::Ip6tablesLegacy => "ip6tables-legacy-save",
        }
    }
}

/// The netfilter hook a packet passes on the inspected host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// Where the rules were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallRole {
    /// The target host (or the namespace named with `--netns`), INPUT or FORWARD.
    Target,
    /// The host conndoc runs on, OUTPUT.
    Client,
}

/// How a reject answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "with", rename_all = "kebab-case")]
pub enum RejectWith {
    /// A TCP RST: the client sees ECONNREFUSED, just like a closed port.
    TcpReset,
    /// An ICMP / ICMPv6 / ICMPx (either family) destination-unreachable of this name,
    /// e.g. `port-unreachable`, `admin-prohibited`, `host-unreachable`.
    Icmp { family: String, code: String },
}

impl RejectWith {
    pub fn describe(&self) -> String {
        match self {
            RejectWith::TcpReset => "tcp reset".into(),
            RejectWith::Icmp { family, code } => format!("{family} {code}"),
        }
    }
    /// True when the client sees the same ECONNREFUSED a closed port gives.
    pub fn looks_like_refused(&self) -> bool {
        match self {
            RejectWith::TcpReset => true,
            RejectWith::Icmp { code, .. } => code.starts_with("port-unreach"),
        }
    }
}

/// The fate of the packet on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum FwVerdict {
    Accept,
    Drop,
    Reject(RejectWith),
}

impl FwVerdict {
    pub fn describe(&self) -> String {
        match self {
            FwVerdict::Accept => "accept".into(),
            FwVerdict::Drop => "drop".into(),
            FwVerdict::Reject(r) => format!("reject with {}", r.describe()),
        }
    }
}

/// A rule (or a chain policy) as a person finds it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub tool: FirewallTool,
    /// nftables family (`ip`, `ip6`, `inet`) or `ipv4`/`ipv6` for iptables.
    pub family: String,
    pub table: String,
    pub chain: String,
    /// nftables rule handle (`nft -a list ruleset` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// 1-based position in the chain (`iptables -L CHAIN --line-numbers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// 1-based line in the `*-save` output the rule was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// True when this is the chain's policy, not a rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy: bool,
    /// The rule as the tool prints it.
    pub text: String,
}

impl RuleRef {
    /// `nftables inet filter input handle 4` / `iptables-legacy filter INPUT rule 2 (line 7)`.
    pub fn location(&self) -> String {
        let mut s = format!("{} {} {} {}", self.tool.as_str(), self.family, self.table, self.chain);
        if self.policy {
            s.push_str(" policy");
        }
        if let Some(h) = self.handle {
            s.push_str(&format!(" handle {h}"));
        }
        if let Some(p) = self.position {
            s.push_str(&format!(" rule {p}"));
        }
        if let Some(l) = self.line {
            s.push_str(&format!(" (line {l})"));
        }
        s
    }
}

/// A rule conndoc could not evaluate for this packet, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotUnderstood {
    pub rule: RuleRef,
    pub reason: String,
}

/// The packet the evaluation was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketSpec {
    pub family: Family,
    /// `tcp`
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    pub destination: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    pub destination_port: Port,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_interface: Option<String>,
}

/// Which rule the probe's packet meets on one host, for one hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub hook: Hook,
    pub packet: PacketSpec,
    pub verdict: FwVerdict,
    /// The rule (or policy) that decided; None when every chain let the packet through
    /// (or no chain is attached to the hook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<RuleRef>,
    /// Jumps/gotos followed on the way to the verdict (the rules that jumped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<RuleRef>,
    /// Rules met before the verdict that conndoc could not evaluate: if one of them
    /// matched, the verdict may differ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_understood: Vec<NotUnderstood>,
}

/// One ruleset read (one tool), with how many rules it held or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetSource {
    pub tool: FirewallTool,
    pub command: String,
    pub rules: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// nf_tables generation id (`NFT_MSG_GETGEN`) the rules are consistent with (netlink only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// True when the rules came from conndoc's cache of this generation, not a dump made now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// The firewall of one host (namespace) and the evaluations made against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFirewall {
    pub role: FirewallRole,
    /// The network namespace the rules were read in (None: conndoc's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Read on another machine over SSH (`--ssh`): its destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    pub sources: Vec<RulesetSource>,
    /// One per probed address (and hook).
    pub evaluations: Vec<Evaluation>,
    /// Rules anywhere in the ruleset that could not be read at all (unknown expressions),
    /// counted so none is silently ignored; the ones on the packet's path are in
    /// `Evaluation::not_understood`.
    #[serde(default)]
    pub not_understood_total: u32,
    /// TCP listeners on the probed port in this namespace (`addr:port`), read from
    /// `/proc/net/tcp{,6}` there: what sits behind a rejecting rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners_on_port: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirewallFacts {
    pub hosts: Vec<HostFirewall>,
}

impl FirewallFacts {
    pub fn host(&self, role: FirewallRole) -> Option<&HostFirewall> {
        self.hosts.iter().find(|h| h.role == role)
    }
}
