//! Kubernetes Services as kube-proxy wrote them into a node's netfilter rules (issue 12).
//!
//! No API server is asked: a Service, its ClusterIP/NodePort and its endpoints are read
//! from the rules kube-proxy generates (iptables mode: `KUBE-SERVICES` → `KUBE-SVC-*` →
//! `KUBE-SEP-*`; nftables mode: `table ip kube-proxy` and its verdict maps), whose comments
//! and chain names carry the Service's `NS/NAME:PORT`.

use crate::firewall::{FirewallRole, FwVerdict, RuleRef};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Which kube-proxy mode wrote the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// `--proxy-mode=iptables` (over iptables-nft or iptables-legacy; the rule's tool says which).
    Iptables,
    /// `--proxy-mode=nftables` (`table ip kube-proxy` / `table ip6 kube-proxy`).
    Nftables,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// A Service port as kube-proxy names it: `NS/NAME:PORT` (PORT is the port's name, empty
/// for an unnamed single port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub port: String,
}

impl ServicePortName {
    /// Parse `NS/NAME:PORT` (the form in kube-proxy's comments).
    pub fn parse(s: &str) -> Option<ServicePortName> {
        let (ns, rest) = s.split_once('/')?;
        let (name, port) = rest.split_once(':')?;
        let ok = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok(ns) || !ok(name) || !(port.is_empty() || ok(port)) {
            return None;
        }
        Some(ServicePortName { namespace: ns.into(), name: name.into(), port: port.into() })
    }
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// Which of the Service's addresses the probe went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

impl FrontendKind {
    pub fn describe(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "external IP",
            FrontendKind::LoadBalancer => "load-balancer IP",
        }
    }
}

/// One endpoint as the rules list it (a DNAT target), and the rule that translates to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    pub address: IpAddr,
    pub port: u16,
    pub rule: RuleRef,
}

/// What kube-proxy does with a connection to a Service without a ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoEndpoints {
    /// reject (ClusterIP, NodePort) or drop (external traffic with a Local policy).
    pub verdict: FwVerdict,
    /// The rule (iptables) or map element (nftables) naming the Service.
    pub rule: RuleRef,
}

/// A probed address and port that a Service's rules own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMatch {
    pub role: FirewallRole,
    pub mode: ProxyMode,
    pub service: ServicePortName,
    /// `tcp`
    pub protocol: String,
    pub kind: FrontendKind,
    /// The probed address and port (ClusterIP:port, node address:NodePort, …).
    pub address: IpAddr,
    pub port: u16,
    /// The rule or map element that sends this address and port to the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<RuleRef>,
    /// Every endpoint the rules list; kube-proxy picks one at random per connection
    /// (`statistic random` / `numgen random`), so each is a candidate.
    #[serde(default)]
    pub endpoints: Vec<ServiceEndpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_endpoints: Option<NoEndpoints>,
    /// The endpoints followed to their pods (a few, in `endpoints` order) and what was
    /// found there; the one the verdict is about is `Evidence::backend`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followed: Vec<EndpointCheck>,
}

/// One endpoint followed to the pod that owns its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCheck {
    pub address: IpAddr,
    pub port: u16,
    /// The pod's network namespace, when one owns the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<crate::nat::NetnsIdentity>,
    /// Something there takes connections on `address:port` (None: not inspected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_inspected: Option<String>,
    /// The pod's listeners on the endpoint's port, whatever their address (one on
    /// 127.0.0.1 is a pod bound to its loopback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<crate::host::Listener>,
    /// A few of the pod's listeners on other ports (what a wrong targetPort names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_listeners: Vec<crate::host::Listener>,
}

impl ServiceMatch {
    /// `10.96.0.20:6379` / `[fd00:10:96::20]:6379`
    pub fn address_port(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }

    /// `Service default/redis:redis (ClusterIP 10.96.0.20:6379)`
    pub fn describe(&self) -> String {
        format!("Service {} ({} {})", self.service, self.kind.describe(), self.address_port())
    }
}

/// Every probed address that belongs to a Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeFacts {
    pub services: Vec<ServiceMatch>,
}

impl KubeFacts {
    pub fn for_address(&self, addr: IpAddr) -> Option<&ServiceMatch> {
        self.services.iter().find(|s| s.address == addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_port_names() {
        let s = ServicePortName::parse("ns6/svc6:p80").unwrap();
        assert_eq!((s.namespace.as_str(), s.name.as_str(), s.port.as_str()), ("ns6", "svc6", "p80"));
        assert_eq!(s.to_string(), "ns6/svc6:p80");
        assert_eq!(ServicePortName::parse("default/kubernetes:").unwrap().port, "");
        assert!(ServicePortName::parse("kubernetes service portals").is_none());
        assert!(ServicePortName::parse("a/b").is_none());
    }
}
