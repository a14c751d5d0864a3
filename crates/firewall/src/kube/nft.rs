//! kube-proxy's nftables mode (`pkg/proxy/nftables/proxier.go`), read with targeted
//! netlink requests instead of a dump — a node with 5,000 Services holds tens of thousands
//! of elements and chains, of which one Service needs a handful:
//!
//! - `table ip kube-proxy` (`ip6` for IPv6) map `no-endpoint-services`: element
//!   `ADDR . tcp . PORT comment "NS/NAME:PORT" : goto reject-chain` (or `drop`), and
//!   `no-endpoint-nodeports`: `tcp . NODEPORT comment "NS/NAME:PORT" : …` for the addresses in
//!   `nodeport-ips`;
//! - map `service-ips`: `ADDR . tcp . PORT : goto service-HASH-NS/NAME/tcp/PORT` (or
//!   `external-HASH-…`), `service-nodeports`: `tcp . NODEPORT : goto external-HASH-…`;
//! - chain `service-HASH-NS/NAME/tcp/PORT`: `numgen random mod N vmap { 0 : goto
//!   endpoint-HASH-NS/NAME/tcp/PORT__IP/PORT, … }`; each `endpoint-…` chain ends in
//!   `dnat to IP:PORT` — the endpoint is in its name.
//!
//! A concatenated key is each field padded to 4 bytes (nf_tables registers):
//! address, `inet_proto` (1 byte + 3), `inet_service` (2 bytes big-endian + 2).

use super::Probe;
use crate::nfnl::expr::{Data, Expr, SetElem, Verdict};
use crate::nfnl::{NfFamily, NfnlError, TableReader};
use conndoc_facts::firewall::{FirewallRole, FirewallTool, FwVerdict, RejectWith, RuleRef};
use conndoc_facts::kube::{FrontendKind, NoEndpoints, ProxyMode, ServiceEndpoint, ServiceMatch, ServicePortName};
use std::net::IpAddr;
use std::time::Instant;

pub const TABLE: &str = "kube-proxy";
const IPPROTO_TCP: u8 = 6;
/// Bounds on what one Service may make conndoc read.
const MAX_RULES: usize = 64;
const MAX_ENDPOINTS: usize = 256;

/// `ADDR . tcp . PORT` as the kernel stores it.
pub fn key_addr_proto_port(addr: IpAddr, port: u16) -> Vec<u8> {
    let mut k = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    k.extend_from_slice(&key_proto_port(port));
    k
}

/// `tcp . PORT`.
pub fn key_proto_port(port: u16) -> Vec<u8> {
    let p = port.to_be_bytes();
    vec![IPPROTO_TCP, 0, 0, 0, p[0], p[1], 0, 0]
}

/// `service-HASH-NS/NAME/PROTO/PORT`, `external-…`, `endpoint-HASH-NS/NAME/PROTO/PORT__IP/PORT`
/// → the Service port name (and the endpoint for an `endpoint-` chain).
pub fn parse_chain_name(chain: &str) -> Option<(ServicePortName, Option<(IpAddr, u16)>)> {
    let (_, rest) = chain.split_once('-')?; // service | external | endpoint | firewall
    let (_hash, rest) = rest.split_once('-')?;
    let (svc, ep) = match rest.split_once("__") {
        Some((s, e)) => (s, Some(e)),
        None => (rest, None),
    };
    let mut it = svc.split('/');
    let (ns, name, _proto, port) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let service = ServicePortName::parse(&format!("{ns}/{name}:{port}"))?;
    let endpoint = match ep {
        None => None,
        Some(e) => {
            let (ip, port) = e.rsplit_once('/')?;
            // kube-proxy writes an IPv6 endpoint with its colons as dots (colons are not
            // allowed in a chain name): `fd00.10.244..5` is fd00:10:244::5.
            let ip = ip.parse().ok().or_else(|| ip.replace('.', ":").parse().ok())?;
            Some((ip, port.parse().ok()?))
        }
    };
    Some((service, endpoint))
}

fn goto_target(e: &SetElem) -> Option<&str> {
    match &e.data {
        Some(Data::Verdict(Verdict::Goto(c) | Verdict::Jump(c))) => Some(c),
        _ => None,
    }
}

/// What a no-endpoint map element does: `goto reject-chain` (whose one rule is `reject`:
/// ICMP port unreachable) or `drop`.
fn no_endpoint_verdict(e: &SetElem, v6: bool) -> Option<FwVerdict> {
    match &e.data {
        Some(Data::Verdict(Verdict::Drop)) => Some(FwVerdict::Drop),
        Some(Data::Verdict(Verdict::Goto(c) | Verdict::Jump(c))) if c == "reject-chain" => {
            Some(FwVerdict::Reject(RejectWith::Icmp {
                family: if v6 { "icmpv6".into() } else { "icmp".into() },
                code: "port-unreachable".into(),
            }))
        }
        _ => None,
    }
}

fn map_ref(fam: &str, map: &str, text: String) -> RuleRef {
    RuleRef {
        tool: FirewallTool::Nftables,
        family: fam.into(),
        table: TABLE.into(),
        chain: format!("map {map}"),
        handle: None,
        position: None,
        line: None,
        policy: false,
        text,
    }
}

fn elem_text(key: &str, e: &SetElem) -> String {
    let comment = e.comment.as_ref().map(|c| format!(" comment {c:?}")).unwrap_or_default();
    let verdict = match &e.data {
        Some(Data::Verdict(v)) => v.text(),
        _ => "?".into(),
    };
    format!("{key}{comment} : {verdict}")
}

/// The Service that owns the probed address and port in kube-proxy's nftables table of
/// the calling thread's namespace; None when there is no such table or no such Service.
pub fn recognise(probe: &Probe, role: FirewallRole, deadline: Instant) -> Result<Option<ServiceMatch>, NfnlError> {
    let v6 = probe.address.is_ipv6();
    let (nffam, fam) = if v6 { (NfFamily::IP6, "ip6") } else { (NfFamily::IP, "ip") };
    let mut r = TableReader::open(nffam, TABLE, deadline)?;
    let key = key_addr_proto_port(probe.address, probe.port);
    let key_text = format!("{} . tcp . {}", probe.address, probe.port);
    let base = |service: ServicePortName, kind: FrontendKind| ServiceMatch {
        role,
        mode: ProxyMode::Nftables,
        service,
        protocol: "tcp".into(),
        kind,
        address: probe.address,
        port: probe.port,
        frontend: None,
        endpoints: Vec::new(),
        no_endpoints: None,
        followed: Vec::new(),
    };

    // A Service without endpoints: the element's comment names it.
    let mut lookups: Vec<(&str, Vec<u8>, String, FrontendKind)> =
        vec![("no-endpoint-services", key.clone(), key_text.clone(), FrontendKind::ClusterIp)];
    let node_port = probe.local && r.element("nodeport-ips", &addr_key(probe.address))?.is_some();
    if node_port {
        lookups.push((
            "no-endpoint-nodeports",
            key_proto_port(probe.port),
            format!("tcp . {}", probe.port),
            FrontendKind::NodePort,
        ));
    }
    for (map, k, text, kind) in &lookups {
        let Some(e) = r.element(map, k)? else { continue };
        let (Some(service), Some(verdict)) =
            (e.comment.as_deref().and_then(ServicePortName::parse), no_endpoint_verdict(&e, v6))
        else {
            continue;
        };
        let rule = map_ref(fam, map, elem_text(text, &e));
        let kind = if *kind == FrontendKind::ClusterIp && r.element("cluster-ips", &addr_key(probe.address))?.is_none()
        {
            FrontendKind::ExternalIp
        } else {
            *kind
        };
        let mut m = base(service, kind);
        m.frontend = Some(rule.clone());
        m.no_endpoints = Some(NoEndpoints { verdict, rule });
        return Ok(Some(m));
    }

    // A Service with endpoints: follow its chain to the endpoint chains.
    let mut hit = None;
    if let Some(e) = r.element("service-ips", &key)? {
        hit = Some(("service-ips", key_text, e));
    } else if node_port {
        if let Some(e) = r.element("service-nodeports", &key_proto_port(probe.port))? {
            hit = Some(("service-nodeports", format!("tcp . {}", probe.port), e));
        }
    }
    let Some((map, text, e)) = hit else { return Ok(None) };
    let Some(chain) = goto_target(&e).map(str::to_string) else { return Ok(None) };
    let Some((service, _)) = parse_chain_name(&chain) else { return Ok(None) };
    let kind = match (map, chain.starts_with("service-")) {
        ("service-nodeports", _) => FrontendKind::NodePort,
        (_, true) => FrontendKind::ClusterIp,
        (_, false) => FrontendKind::ExternalIp,
    };
    let mut m = base(service, kind);
    m.frontend = Some(map_ref(fam, map, elem_text(&text, &e)));
    m.endpoints = endpoints(&mut r, fam, &chain)?;
    Ok(Some(m))
}

/// The set-element key of a single address (`nodeport-ips`, `cluster-ips`).
fn addr_key(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `external-…` → `service-…` → every `endpoint-…` its rules (and their anonymous
/// verdict maps) go to.
fn endpoints(r: &mut TableReader, fam: &str, start: &str) -> Result<Vec<ServiceEndpoint>, NfnlError> {
    let mut out: Vec<ServiceEndpoint> = Vec::new();
    let mut chains = vec![start.to_string()];
    let mut seen = std::collections::HashSet::new();
    while let Some(chain) = chains.pop() {
        if !seen.insert(chain.clone()) || seen.len() > 8 {
            continue;
        }
        for rule in r.rules(&chain, MAX_RULES)? {
            let rref = |text: String| RuleRef {
                tool: FirewallTool::Nftables,
                family: fam.into(),
                table: TABLE.into(),
                chain: chain.clone(),
                handle: Some(rule.handle),
                position: None,
                line: None,
                policy: false,
                text,
            };
            let push = |target: &str, text: String, out: &mut Vec<ServiceEndpoint>| {
                if let Some((_, Some((address, port)))) = parse_chain_name(target) {
                    if out.len() < MAX_ENDPOINTS && !out.iter().any(|e| e.address == address && e.port == port) {
                        out.push(ServiceEndpoint { address, port, rule: rref(text) });
                    }
                }
            };
            for x in &rule.exprs {
                match x {
                    Expr::Immediate { dreg: 0, data: Data::Verdict(Verdict::Goto(t) | Verdict::Jump(t)) } => {
                        if t.starts_with("service-") {
                            chains.push(t.clone());
                        } else if t.starts_with("endpoint-") {
                            push(t, format!("goto {t}"), &mut out);
                        }
                    }
                    // `numgen random mod N vmap { 0 : goto endpoint-…, … }`: an anonymous map.
                    Expr::Lookup { set, dreg: Some(0), .. } => {
                        let elems = r.elements(set, MAX_ENDPOINTS)?;
                        let n = elems.len();
                        for (i, e) in elems.iter().enumerate() {
                            if let Some(t) = goto_target(e) {
                                let idx = e.key.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
                                let idx = idx.map(|v| v.to_string()).unwrap_or_else(|| i.to_string());
                                push(t, format!("numgen random mod {n} vmap {{ {idx} : goto {t} }}"), &mut out);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.sort_by_key(|e| (e.address, e.port));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_registers() {
        assert_eq!(
            key_addr_proto_port("10.96.0.20".parse().unwrap(), 6379),
            vec![10, 96, 0, 20, 6, 0, 0, 0, 0x18, 0xeb, 0, 0]
        );
        assert_eq!(key_addr_proto_port("fd00::1".parse().unwrap(), 80).len(), 24);
        assert_eq!(key_proto_port(30379), vec![6, 0, 0, 0, 0x76, 0xab, 0, 0]);
    }

    #[test]
    fn chain_names_carry_service_and_endpoint() {
        // From pkg/proxy/nftables/proxier_test.go (TestOverallNFTablesRules).
        let (s, ep) = parse_chain_name("service-ULMVA6XW-ns1/svc1/tcp/p80").unwrap();
        assert_eq!((s.to_string(), ep), ("ns1/svc1:p80".to_string(), None));
        let (s, ep) = parse_chain_name("endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80").unwrap();
        assert_eq!(s.to_string(), "ns1/svc1:p80");
        assert_eq!(ep, Some(("10.180.0.1".parse().unwrap(), 80)));
        let (_, ep) = parse_chain_name("endpoint-XXXXXXXX-ns1/svc1/tcp/p80__fd00:10:180::1/80").unwrap();
        assert_eq!(ep, Some(("fd00:10:180::1".parse().unwrap(), 80)));
        // The shape kube-proxy writes (servicePortEndpointChainNameBase: ':' → '.').
        let (s, ep) = parse_chain_name("endpoint-XXXXXXXX-default/web/tcp/http__fd00.10.244..5/8080").unwrap();
        assert_eq!(s.to_string(), "default/web:http");
        assert_eq!(ep, Some(("fd00:10:244::5".parse().unwrap(), 8080)));
        assert!(parse_chain_name("reject-chain").is_none());
        assert!(parse_chain_name("filter-output").is_none());
    }
}
