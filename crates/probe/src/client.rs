//! Facts about the client host: who we are (privileges), and the kernel's route decision
//! for a destination, asked without sending a packet.

use conndoc_facts::client::RouteLookup;
use conndoc_facts::{ClientFacts, Privileges};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// Hostname, privileges and the local port range.
pub fn basics() -> ClientFacts {
    ClientFacts {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        privileges: privileges(),
        local_port_range: std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| parse_port_range(&s)),
        ..Default::default()
    }
}

pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Some((a, b)),
        _ => None,
    }
}

/// Effective uid and capabilities from /proc/self/status.
pub fn privileges() -> Privileges {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_privileges(&text)
}

pub fn parse_privileges(status: &str) -> Privileges {
    let mut p = Privileges { uid: u32::MAX, ..Default::default() };
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            // real, effective, saved, fs: the effective one decides.
            p.uid = v.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(u32::MAX);
        } else if let Some(v) = line.strip_prefix("CapEff:") {
            let caps = u64::from_str_radix(v.trim(), 16).unwrap_or(0);
            p.cap_net_admin = caps & (1 << 12) != 0;
            p.cap_net_raw = caps & (1 << 13) != 0;
            p.cap_sys_ptrace = caps & (1 << 19) != 0;
            p.cap_sys_admin = caps & (1 << 21) != 0;
        }
    }
    p
}

/// Ask the kernel which source address it would use for `dst`: connect() on a UDP socket
/// performs the route lookup and sends nothing.
pub fn route_lookup(dst: IpAddr) -> RouteLookup {
    let bind: SocketAddr = match dst {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let res = UdpSocket::bind(bind).and_then(|s| s.connect((dst, 9)).and_then(|_| s.local_addr()));
    let route = match dst {
        IpAddr::V4(v4) => std::fs::read_to_string("/proc/net/route").ok().and_then(|t| best_route_v4(&t, v4)),
        IpAddr::V6(v6) => std::fs::read_to_string("/proc/net/ipv6_route").ok().and_then(|t| best_route_v6(&t, v6)),
    };
    match res {
        Ok(local) => RouteLookup { destination: dst, source: Some(local.ip()), error: None, route },
        Err(e) => RouteLookup { destination: dst, source: None, error: Some(crate::dns::describe_io(&e)), route },
    }
}

/// The longest-prefix route for `dst` in /proc/net/route (little-endian hex), as `ip route` prints it.
pub fn best_route_v4(table: &str, dst: Ipv4Addr) -> Option<String> {
    let d = u32::from(dst);
    let mut best: Option<(u32, String)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        // The kernel prints the network-order word as a native u32: its native bytes are the address.
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| u32::from_be_bytes(v.to_ne_bytes()));
        let (Some(net), Some(gw), Some(mask)) = (hex(f[1]), hex(f[2]), hex(f[7])) else { continue };
        if d & mask != net {
            continue;
        }
        let plen = mask.count_ones();
        if best.as_ref().is_some_and(|(p, _)| *p > plen) {
            continue;
        }
        let dest = if plen == 0 { "default".to_string() } else { format!("{}/{plen}", Ipv4Addr::from(net)) };
        let via = if gw != 0 { format!(" via {}", Ipv4Addr::from(gw)) } else { String::new() };
        best = Some((plen, format!("{dest}{via} dev {}", f[0])));
    }
    best.map(|(_, s)| s)
}

/// The longest-prefix route for `dst` in /proc/net/ipv6_route.
pub fn best_route_v6(table: &str, dst: Ipv6Addr) -> Option<String> {
    let d = u128::from(dst);
    let mut best: Option<(u32, String)> = None;
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Ok(net), Ok(plen), Ok(gw)) =
            (u128::from_str_radix(f[0], 16), u32::from_str_radix(f[1], 16), u128::from_str_radix(f[4], 16))
        else {
            continue;
        };
        let mask = if plen == 0 { 0 } else { u128::MAX << (128 - plen.min(128)) };
        // Skip the kernel's reject/unreachable default entries on lo.
        if d & mask != net || f[9] == "lo" && plen == 0 {
            continue;
        }
        if best.as_ref().is_some_and(|(p, _)| *p > plen) {
            continue;
        }
        let dest = if plen == 0 { "default".to_string() } else { format!("{}/{plen}", Ipv6Addr::from(net)) };
        let via = if gw != 0 { format!(" via {}", Ipv6Addr::from(gw)) } else { String::new() };
        best = Some((plen, format!("{dest}{via} dev {}", f[9])));
    }
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded from a lab namespace: `cat /proc/net/route` with a /24 on eth0 and a default via 10.77.0.254.
    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\tFE004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn v4_longest_prefix() {
        assert_eq!(best_route_v4(ROUTE, "10.77.0.9".parse().unwrap()).unwrap(), "10.77.0.0/24 dev eth0");
        assert_eq!(best_route_v4(ROUTE, "10.99.0.9".parse().unwrap()).unwrap(), "default via 10.77.0.254 dev eth0");
        assert_eq!(best_route_v4(&ROUTE.lines().take(1).collect::<String>(), "10.99.0.9".parse().unwrap()), None);
    }

    // Recorded: /proc/net/ipv6_route with fd77::/64 on eth0 and the loopback entries.
    const ROUTE6: &str = "fd770000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";

    #[test]
    fn v6_longest_prefix() {
        assert_eq!(best_route_v6(ROUTE6, "fd77::2".parse().unwrap()).unwrap(), "fd77::/64 dev eth0");
        assert_eq!(best_route_v6(ROUTE6, "fd99::2".parse().unwrap()), None);
    }

    #[test]
    fn privileges_from_status() {
        let p = parse_privileges("Name:\tx\nUid:\t1000\t0\t0\t0\nCapEff:\t0000000000003000\n");
        assert_eq!(p.uid, 0);
        assert!(p.cap_net_admin && p.cap_net_raw && !p.cap_sys_admin);
        let p = parse_privileges("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n");
        assert!(!p.root() && !p.cap_net_raw);
    }

    #[test]
    fn port_range() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("x"), None);
    }
}
