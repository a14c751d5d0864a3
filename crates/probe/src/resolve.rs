//! Name → addresses, three ways at once, each under the deadline: the system resolver
//! (getaddrinfo, exactly what the application sees), the hosts file, and a direct DNS
//! query to every configured nameserver. Every address says where it came from.

use crate::dns;
use conndoc_facts::resolve::{
    AddrSource, DnsLookup, DnsQuery, HostsEntry, QType, ResolvedAddr, SystemLookup, MAX_ADDRESSES, MAX_NAMESERVERS,
};
use conndoc_facts::{Family, Host, Micros, Resolution, Target};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Resolve the target's host. Never blocks past `timeout` (plus thread start-up).
pub fn resolve(t: &Target, _family: Option<Family>, timeout: Duration) -> Resolution {
    let name = match &t.host {
        Host::Ip(ip) => {
            return Resolution {
                literal: true,
                system: SystemLookup {
                    addresses: vec![ResolvedAddr { address: *ip, source: AddrSource::Literal }],
                    ..Default::default()
                },
                ..Default::default()
            }
        }
        Host::Name(n) => n.clone(),
    };
    let deadline = Instant::now() + timeout;
    let sys = spawn_system_lookup(name.clone(), t.port.get());
    let dns_thread = {
        let name = name.clone();
        std::thread::spawn(move || dns_lookup(&name, deadline))
    };
    let hosts_entries = hosts_lookup(&name);
    let mut system = wait_system_lookup(sys, deadline);
    let dns = dns_thread.join().ok();
    let dns_addrs = dns.as_ref().map(DnsLookup::addresses).unwrap_or_default();
    for a in &mut system.addresses {
        a.source = match hosts_entries.iter().find(|h| h.address == a.address) {
            Some(h) => AddrSource::HostsFile { path: h.path.clone(), line: h.line },
            None if dns_addrs.contains(&a.address) => AddrSource::Dns,
            None => AddrSource::System,
        };
    }
    Resolution { literal: false, system, hosts_entries, dns }
}

/// The addresses to connect to: what the system resolver returned, in its order,
/// without duplicates, restricted to one family when asked, at most [`MAX_ADDRESSES`].
pub fn addresses_to_probe(r: &Resolution, family: Option<Family>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    for a in &r.system.addresses {
        if family.is_none_or(|f| Family::of(&a.address) == f) && !v.contains(&a.address) {
            v.push(a.address);
        }
    }
    v.truncate(MAX_ADDRESSES);
    v
}

/// The resolver's addresses without duplicates, the first [`MAX_ADDRESSES`] kept, and how
/// many more there were.
fn keep_addresses(all: Vec<IpAddr>) -> (Vec<IpAddr>, u32) {
    let mut kept: Vec<IpAddr> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut dropped = 0u32;
    for a in all {
        if !seen.insert(a) {
            continue;
        }
        if kept.len() < MAX_ADDRESSES {
            kept.push(a);
        } else {
            dropped = dropped.saturating_add(1);
        }
    }
    (kept, dropped)
}

type SysResult = (Result<Vec<IpAddr>, String>, Duration);

fn spawn_system_lookup(name: String, port: u16) -> mpsc::Receiver<SysResult> {
    let (tx, rx) = mpsc::channel();
    // getaddrinfo cannot be cancelled: it runs on its own thread and is abandoned at the
    // deadline (the process exits soon after anyway).
    std::thread::spawn(move || {
        let start = Instant::now();
        let r = (name.as_str(), port)
            .to_socket_addrs()
            .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>())
            .map_err(|e| gai_error(&e.to_string()));
        let _ = tx.send((r, start.elapsed()));
    });
    rx
}

fn wait_system_lookup(rx: mpsc::Receiver<SysResult>, deadline: Instant) -> SystemLookup {
    let start = Instant::now();
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok((Ok(addrs), took)) => {
            let (kept, dropped) = keep_addresses(addrs);
            SystemLookup {
                addresses: kept
                    .into_iter()
                    .map(|address| ResolvedAddr { address, source: AddrSource::System })
                    .collect(),
                error: None,
                timed_out: false,
                elapsed_us: Micros::from_duration(took),
                dropped,
            }
        }
        Ok((Err(e), took)) => SystemLookup {
            addresses: vec![],
            error: Some(e),
            timed_out: false,
            elapsed_us: Micros::from_duration(took),
            dropped: 0,
        },
        Err(_) => SystemLookup {
            addresses: vec![],
            error: Some("the system resolver did not answer before the deadline".into()),
            timed_out: true,
            elapsed_us: Micros::from_duration(start.elapsed()),
            dropped: 0,
        },
    }
}

/// Name the getaddrinfo error the way its man page does.
fn gai_error(msg: &str) -> String {
    let msg = msg.trim_start_matches("failed to lookup address information: ");
    let code = if msg.contains("Temporary failure") {
        "EAI_AGAIN"
    } else if msg.contains("Name or service not known") {
        "EAI_NONAME"
    } else if msg.contains("No address associated") {
        "EAI_NODATA"
    } else if msg.contains("Non-recoverable") {
        "EAI_FAIL"
    } else {
        return msg.to_string();
    };
    format!("{code}: {msg}")
}

/// Lines of the hosts file that name `name`.
pub fn hosts_lookup(name: &str) -> Vec<HostsEntry> {
    let Ok(text) = conndoc_files::read_to_string(HOSTS, conndoc_files::limit::HOSTS) else { return vec![] };
    let path = hosts_origin().unwrap_or_else(|| HOSTS.to_string());
    parse_hosts(&text, name, &path)
}

pub fn parse_hosts(text: &str, name: &str, path: &str) -> Vec<HostsEntry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let mut it = line.split_whitespace();
        let Some(addr) = it.next().and_then(|a| a.split('%').next()).and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        if it.any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name.trim_end_matches('.'))) {
            out.push(HostsEntry { path: path.to_string(), line: i as u32 + 1, address: addr, text: line.to_string() });
        }
    }
    out
}

/// Under `ip netns exec`, /etc/hosts is a bind mount of /etc/netns/NAME/hosts: that is the
/// file a person has to edit, so name it.
fn hosts_origin() -> Option<String> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(4) == Some(&HOSTS))
            .then(|| f.get(3).map(|root| root.to_string()))
            .flatten()
            .filter(|r| r.starts_with("/etc/netns/"))
    })
}

fn dns_lookup(name: &str, deadline: Instant) -> DnsLookup {
    let text = match conndoc_files::read_to_string(RESOLV_CONF, conndoc_files::limit::RESOLV) {
        Ok(t) => t,
        Err(e) => {
            return DnsLookup {
                resolv_conf: RESOLV_CONF.into(),
                name: name.into(),
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    dns_lookup_in(&text, RESOLV_CONF, dns::PORT, name, deadline)
}

/// [`dns_lookup`] with the resolv.conf text given (read from `path`) and the nameservers
/// asked on `port` (53; a test's own responder listens on another).
pub fn dns_lookup_in(text: &str, path: &str, port: u16, name: &str, deadline: Instant) -> DnsLookup {
    let rc = dns::parse_resolv_conf(text);
    // The name as the resolver would ask it first: with the first search domain when it
    // has fewer dots than ndots.
    let dots = name.trim_end_matches('.').matches('.').count() as u32;
    let fqdn = if dots < rc.ndots && !name.ends_with('.') {
        rc.search.first().map(|d| format!("{name}.{d}")).unwrap_or_else(|| name.to_string())
    } else {
        name.trim_end_matches('.').to_string()
    };
    // resolv.conf parsing kept at most MAX_NAMESERVERS: two questions each, all at once.
    let questions: Vec<(IpAddr, QType)> = rc.servers.iter().flat_map(|&s| [(s, QType::A), (s, QType::Aaaa)]).collect();
    let queries = crate::pool::map_bounded(&questions, 2 * MAX_NAMESERVERS, |&(server, qtype)| {
        let start = Instant::now();
        let outcome = dns::query(SocketAddr::new(server, port), &fqdn, qtype, deadline);
        DnsQuery { server, qtype, outcome, elapsed_us: Micros::from_duration(start.elapsed()) }
    });
    DnsLookup {
        ignored_servers: rc.ignored_servers,
        resolv_conf: path.into(),
        error: rc.servers.is_empty().then(|| format!("{path} names no nameserver")),
        servers: rc.servers,
        search: rc.search,
        name: fqdn,
        queries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_with_numbers() {
        let text = "127.0.0.1 localhost\n# 10.0.0.1 api.lab\n10.9.9.9   api.lab api # stale\n::1 localhost\nbad line\n10.1.1.1 API.LAB.\n";
        let e = parse_hosts(text, "api.lab", "/etc/hosts");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].line, 3);
        assert_eq!(e[0].address, "10.9.9.9".parse::<IpAddr>().unwrap());
        assert_eq!(e[0].text, "10.9.9.9   api.lab api");
        assert_eq!(e[1].line, 6);
    }

    #[test]
    fn gai_errors_are_named() {
        assert!(gai_error("failed to lookup address information: Name or service not known").starts_with("EAI_NONAME"));
        assert!(gai_error("failed to lookup address information: Temporary failure in name resolution")
            .starts_with("EAI_AGAIN"));
    }

    #[test]
    fn a_long_answer_is_capped_and_counted() {
        let all: Vec<IpAddr> = (0..4000u32).map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a4d_0000 + i))).collect();
        let (kept, dropped) = keep_addresses([all.clone(), all.clone()].concat());
        assert_eq!(kept, all[..MAX_ADDRESSES]);
        assert_eq!(dropped, 4000 - MAX_ADDRESSES as u32, "duplicates are not counted as dropped");
        let r = Resolution {
            system: SystemLookup {
                addresses: all.iter().map(|&address| ResolvedAddr { address, source: AddrSource::System }).collect(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(addresses_to_probe(&r, None).len(), MAX_ADDRESSES);
    }

    #[test]
    fn literal_needs_no_lookup() {
        let t = Target::parse("10.1.2.3:80").unwrap();
        let r = resolve(&t, None, Duration::from_millis(10));
        assert!(r.literal);
        assert_eq!(addresses_to_probe(&r, None), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert!(addresses_to_probe(&r, Some(Family::Ipv6)).is_empty());
    }
}
