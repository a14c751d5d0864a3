//! kube-proxy's iptables mode (`pkg/proxy/iptables/proxier.go`):
//!
//! - filter `KUBE-SERVICES`: `-m comment --comment "NS/NAME:PORT has no endpoints" … -d
//!   CLUSTERIP --dport PORT -j REJECT`; filter `KUBE-EXTERNAL-SERVICES` the same for
//!   NodePorts (`-m addrtype --dst-type LOCAL`) and external IPs (REJECT, or DROP for
//!   "has no local endpoints");
//! - nat `KUBE-SERVICES`: `--comment "NS/NAME:PORT cluster IP"` (or `external IP`,
//!   `loadbalancer IP`) `-d ADDR --dport PORT -j KUBE-SVC-…|KUBE-EXT-…|KUBE-FW-…`, nat
//!   `KUBE-NODEPORTS`: `--comment NS/NAME:PORT --dport NODEPORT -j KUBE-EXT-…`;
//! - `KUBE-SVC-*` → `-m statistic --mode random …` → `KUBE-SEP-*` → `-j DNAT
//!   --to-destination IP:PORT`: every endpoint is a candidate.

use super::{parse_endpoint, Probe};
use crate::model::{Action, ChainId, Rule, Ruleset};
use conndoc_facts::firewall::{FirewallRole, FirewallTool, FwVerdict};
use conndoc_facts::kube::{FrontendKind, NoEndpoints, ProxyMode, ServiceEndpoint, ServiceMatch, ServicePortName};
use std::collections::HashSet;
use std::net::IpAddr;

/// At most this many endpoints are listed for one Service (and chains visited per walk).
const MAX_ENDPOINTS: usize = 256;
const MAX_CHAINS: usize = 1024;

/// The parts of a save line kube-proxy's rules use.
#[derive(Debug, Default)]
struct Line {
    comment: Option<String>,
    dest: Option<IpAddr>,
    dport: Option<u16>,
    tcp: bool,
    dst_local: bool,
    jump: Option<String>,
    to_destination: Option<String>,
}

fn parse_line(text: &str) -> Line {
    let w = crate::ipt::words(text);
    let mut l = Line::default();
    let mut i = 0;
    let mut negated = false;
    while i < w.len() {
        let v = w.get(i + 1).cloned();
        match w[i].as_str() {
            "!" => {
                negated = true;
                i += 1;
                continue;
            }
            "--comment" => l.comment = v,
            "-d" | "--destination" if !negated => {
                l.dest = v.as_deref().and_then(single_address);
            }
            "--dport" | "--destination-port" if !negated => l.dport = v.and_then(|p| p.parse().ok()),
            "-p" | "--protocol" if !negated => l.tcp = v.as_deref() == Some("tcp"),
            "--dst-type" if !negated => l.dst_local = v.as_deref() == Some("LOCAL"),
            "-j" | "-g" => l.jump = v,
            "--to-destination" => l.to_destination = v,
            _ => {}
        }
        negated = false;
        i += 1;
    }
    l
}

/// `10.96.0.20/32` or `10.96.0.20` → the address; a wider prefix is not one Service IP.
fn single_address(s: &str) -> Option<IpAddr> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().ok()?;
    let full = if ip.is_ipv4() { "32" } else { "128" };
    (len.is_none_or(|l| l == full)).then_some(ip)
}

fn is_iptables(t: FirewallTool) -> bool {
    !matches!(t, FirewallTool::Nftables)
}

pub fn recognise(rs: &Ruleset, role: FirewallRole, probe: &Probe) -> Option<ServiceMatch> {
    let fam = if probe.address.is_ipv4() { "ipv4" } else { "ipv6" };
    // Every iptables source holding kube-proxy's chains for this family.
    let mut sources: Vec<usize> = rs
        .chains
        .iter()
        .filter(|((_, f, _, c), _)| f == fam && c == "KUBE-SERVICES")
        .filter(|(_, ch)| ch.rules.first().is_none_or(|r| is_iptables(r.reference.tool)))
        .map(|((s, ..), _)| *s)
        .collect();
    sources.sort_unstable();
    sources.dedup();
    for src in sources {
        let id = |table: &str, chain: &str| -> ChainId { (src, fam.to_string(), table.to_string(), chain.to_string()) };
        let rules = |table: &str, chain: &str| rs.chains.get(&id(table, chain)).map(|c| c.rules.clone());
        if let Some(m) = no_endpoints(&rules, role, probe) {
            return Some(m);
        }
        if let Some(m) = with_endpoints(rs, src, fam, role, probe) {
            return Some(m);
        }
    }
    None
}

/// Cheap test before a rule's text is split into words: does it name this port?
fn names_port(text: &str, port: u16) -> bool {
    text.contains(&format!("--dport {port}"))
}

fn no_endpoints(
    rules: &dyn Fn(&str, &str) -> Option<Vec<Rule>>,
    role: FirewallRole,
    probe: &Probe,
) -> Option<ServiceMatch> {
    for chain in ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"] {
        let Some(list) = rules("filter", chain) else { continue };
        for r in list.iter().filter(|r| names_port(&r.reference.text, probe.port)) {
            let l = parse_line(&r.reference.text);
            let Some(c) = &l.comment else { continue };
            let Some(name) = c.strip_suffix(" has no endpoints").or_else(|| c.strip_suffix(" has no local endpoints"))
            else {
                continue;
            };
            let Some(service) = ServicePortName::parse(name) else { continue };
            if !l.tcp || l.dport != Some(probe.port) {
                continue;
            }
            let kind = match (l.dest, chain) {
                (Some(d), "KUBE-SERVICES") if d == probe.address => FrontendKind::ClusterIp,
                (Some(d), _) if d == probe.address => FrontendKind::ExternalIp,
                (None, "KUBE-EXTERNAL-SERVICES") if l.dst_local && probe.local => FrontendKind::NodePort,
                _ => continue,
            };
            let verdict = match &r.action {
                Action::Reject(w) => FwVerdict::Reject(w.clone()),
                Action::Drop => FwVerdict::Drop,
                // kube-proxy writes only REJECT and DROP here; anything else is not its rule.
                _ => continue,
            };
            return Some(ServiceMatch {
                role,
                mode: ProxyMode::Iptables,
                service,
                protocol: "tcp".into(),
                kind,
                address: probe.address,
                port: probe.port,
                frontend: Some(r.reference.clone()),
                endpoints: Vec::new(),
                no_endpoints: Some(NoEndpoints { verdict, rule: r.reference.clone() }),
                followed: Vec::new(),
            });
        }
    }
    None
}

/// Which Service (and which of its addresses) a frontend rule's parts name.
type Recognise<'a> = dyn Fn(&Line) -> Option<(ServicePortName, FrontendKind)> + 'a;

fn with_endpoints(rs: &Ruleset, src: usize, fam: &str, role: FirewallRole, probe: &Probe) -> Option<ServiceMatch> {
    let chain = |c: &str| rs.chains.get(&(src, fam.to_string(), "nat".to_string(), c.to_string()));
    // nat KUBE-SERVICES: `-d ADDR --dport PORT` with a "… cluster IP" (external, LB) comment;
    // nat KUBE-NODEPORTS (a local address only): `--dport NODEPORT` with a bare `NS/NAME:PORT`.
    let services = |l: &Line| -> Option<(ServicePortName, FrontendKind)> {
        if l.dest != Some(probe.address) {
            return None;
        }
        let c = l.comment.as_deref()?;
        let (name, kind) = [
            (" cluster IP", FrontendKind::ClusterIp),
            (" external IP", FrontendKind::ExternalIp),
            (" loadbalancer IP", FrontendKind::LoadBalancer),
        ]
        .into_iter()
        .find_map(|(suffix, kind)| c.strip_suffix(suffix).map(|n| (n, kind)))?;
        Some((ServicePortName::parse(name)?, kind))
    };
    let node_ports = |l: &Line| -> Option<(ServicePortName, FrontendKind)> {
        if l.dest.is_some_and(|d| d != probe.address) {
            return None;
        }
        Some((l.comment.as_deref().and_then(ServicePortName::parse)?, FrontendKind::NodePort))
    };
    let walks: [(&str, &Recognise); 2] = [("KUBE-SERVICES", &services), ("KUBE-NODEPORTS", &node_ports)];
    let found = walks.into_iter().filter(|(c, _)| *c != "KUBE-NODEPORTS" || probe.local).find_map(|(c, recognise)| {
        chain(c)?.rules.iter().filter(|r| names_port(&r.reference.text, probe.port)).find_map(|r| {
            let l = parse_line(&r.reference.text);
            if !l.tcp || l.dport != Some(probe.port) {
                return None;
            }
            let (service, kind) = recognise(&l)?;
            Some((service, kind, r.reference.clone(), l.jump.clone()?))
        })
    });
    let (service, kind, frontend, target) = found?;
    let endpoints = collect_endpoints(rs, src, fam, &target);
    Some(ServiceMatch {
        role,
        mode: ProxyMode::Iptables,
        service,
        protocol: "tcp".into(),
        kind,
        address: probe.address,
        port: probe.port,
        frontend: Some(frontend),
        endpoints,
        no_endpoints: None,
        followed: Vec::new(),
    })
}

/// Follow `KUBE-EXT-*`/`KUBE-FW-*`/`KUBE-SVC-*`/`KUBE-SVL-*` to every `KUBE-SEP-*` and its DNAT.
fn collect_endpoints(rs: &Ruleset, src: usize, fam: &str, start: &str) -> Vec<ServiceEndpoint> {
    let mut out: Vec<ServiceEndpoint> = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![start.to_string()];
    while let Some(c) = stack.pop() {
        if !seen.insert(c.clone()) || seen.len() > MAX_CHAINS || out.len() >= MAX_ENDPOINTS {
            continue;
        }
        let Some(ch) = rs.chains.get(&(src, fam.to_string(), "nat".to_string(), c.clone())) else { continue };
        // Reverse so the stack visits the chain's rules in order.
        for r in ch.rules.iter().rev() {
            let l = parse_line(&r.reference.text);
            match l.jump.as_deref() {
                Some("DNAT") => {
                    if let Some((address, port)) = l.to_destination.as_deref().and_then(parse_endpoint) {
                        if !out.iter().any(|e| e.address == address && e.port == port) {
                            out.push(ServiceEndpoint { address, port, rule: r.reference.clone() });
                        }
                    }
                }
                Some(t)
                    if ["KUBE-SEP-", "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-"]
                        .iter()
                        .any(|p| t.starts_with(p)) =>
                {
                    stack.push(t.to_string());
                }
                _ => {}
            }
        }
    }
    out.sort_by_key(|e| (e.address, e.port));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use conndoc_facts::firewall::RejectWith;

    /// What an iptables REJECT without `--reject-with` answers.
    fn port_unreachable() -> FwVerdict {
        FwVerdict::Reject(RejectWith::Icmp { family: "icmp".into(), code: "port-unreachable".into() })
    }
    use conndoc_facts::Family;

    /// `iptables-nft-save` of lab/kube/iptables.rules loaded with `iptables-nft-restore`
    /// (recorded from the lab node).
    const SAVE: &str = include_str!("../../tests/fixtures/kube-iptables-nft.save");

    fn rs() -> Ruleset {
        crate::ipt::parse_save(SAVE, FirewallTool::IptablesNft, Family::Ipv4, 1)
    }

    fn probe(a: &str, port: u16, local: bool) -> Probe {
        Probe { address: a.parse().unwrap(), port, local }
    }

    #[test]
    fn cluster_ip_without_endpoints_names_the_service_and_its_reject() {
        let m = recognise(&rs(), FirewallRole::Client, &probe("10.96.0.20", 6379, false)).unwrap();
        assert_eq!(m.service.to_string(), "default/redis:redis");
        assert_eq!(m.kind, FrontendKind::ClusterIp);
        let ne = m.no_endpoints.unwrap();
        assert_eq!(ne.verdict, port_unreachable());
        assert_eq!(ne.rule.table, "filter");
        assert!(ne.rule.text.contains("has no endpoints"), "{}", ne.rule.text);
    }

    #[test]
    fn node_port_without_endpoints_only_on_a_local_address() {
        let m = recognise(&rs(), FirewallRole::Client, &probe("10.77.9.2", 30379, true)).unwrap();
        assert_eq!(m.kind, FrontendKind::NodePort);
        assert!(m.no_endpoints.is_some());
        assert!(recognise(&rs(), FirewallRole::Client, &probe("10.77.9.9", 30379, false)).is_none());
    }

    #[test]
    fn cluster_ip_with_endpoints_lists_the_dnat_targets() {
        let m = recognise(&rs(), FirewallRole::Client, &probe("10.96.0.30", 80, false)).unwrap();
        assert_eq!(m.service.to_string(), "default/web:http");
        assert!(m.no_endpoints.is_none());
        let eps: Vec<String> = m.endpoints.iter().map(|e| format!("{}:{}", e.address, e.port)).collect();
        assert_eq!(eps, vec!["10.244.0.5:8080"]);
        assert_eq!(m.endpoints[0].rule.chain, "KUBE-SEP-7U6MWNJWR3SADOJA");
        assert!(m.frontend.unwrap().text.contains("cluster IP"));
    }

    #[test]
    fn other_ports_and_addresses_are_not_services() {
        assert!(recognise(&rs(), FirewallRole::Client, &probe("10.96.0.30", 81, false)).is_none());
        assert!(recognise(&rs(), FirewallRole::Client, &probe("10.96.0.31", 80, false)).is_none());
    }

    #[test]
    fn statistic_split_lists_every_endpoint() {
        // TestOverallIPTablesRules' svc4: two endpoints behind `-m statistic --mode random`.
        let save = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]\n:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]\n:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]\n-A KUBE-SERVICES -d 172.30.0.44/32 -p tcp -m comment --comment \"ns4/svc4:p80 cluster IP\" -m tcp --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK\n-A KUBE-SEP-C6EBXVWJJZMIWKLZ -p tcp -m comment --comment ns4/svc4:p80 -m tcp -j DNAT --to-destination 10.180.0.5:80\n-A KUBE-SEP-UKSFD7AGPMPPLUHC -p tcp -m comment --comment ns4/svc4:p80 -m tcp -j DNAT --to-destination 10.180.0.4:80\n-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment \"ns4/svc4:p80 -> 10.180.0.4:80\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC\n-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment \"ns4/svc4:p80 -> 10.180.0.5:80\" -j KUBE-SEP-C6EBXVWJJZMIWKLZ\nCOMMIT\n";
        let rs = crate::ipt::parse_save(save, FirewallTool::IptablesLegacy, Family::Ipv4, 0);
        let m = recognise(&rs, FirewallRole::Target, &probe("172.30.0.44", 80, false)).unwrap();
        assert_eq!(m.endpoints.len(), 2);
    }
}
