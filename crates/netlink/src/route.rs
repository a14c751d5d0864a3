//! rtnetlink dumps: links (ifindex → name), addresses, neighbours (ARP/NDP).

use crate::wire::{attrs, read_i32, read_u16, read_u32};
use crate::{Family, NetlinkError, Socket, DEFAULT_DEADLINE};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFF_* flags (IFF_UP = 0x1, IFF_LOOPBACK = 0x8).
    pub flags: u32,
    /// Link-layer address (IFLA_ADDRESS) as `aa:bb:cc:dd:ee:ff`, when it has one.
    pub lladdr: Option<String>,
}

/// An address assigned to a local interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub ifindex: u32,
}

/// One neighbour-table (ARP / NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighEntry {
    pub address: IpAddr,
    pub ifindex: u32,
    /// Interface name; empty if the interface vanished during the dump.
    pub device: String,
    /// Raw NUD_* bits.
    pub nud: u16,
    /// NUD state name: REACHABLE, STALE, INCOMPLETE, FAILED, …
    pub state: String,
    /// Link-layer address as `aa:bb:cc:dd:ee:ff`, when known.
    pub lladdr: Option<String>,
}

/// NUD state bits as `ip neigh` names them; several bits join with `|`.
pub fn nud_state_name(nud: u16) -> String {
    const NAMES: [(u16, &str); 8] = [
        (0x01, "INCOMPLETE"),
        (0x02, "REACHABLE"),
        (0x04, "STALE"),
        (0x08, "DELAY"),
        (0x10, "PROBE"),
        (0x20, "FAILED"),
        (0x40, "NOARP"),
        (0x80, "PERMANENT"),
    ];
    if nud == 0 {
        return "NONE".into();
    }
    let names: Vec<&str> = NAMES.iter().filter(|(b, _)| nud & b != 0).map(|(_, n)| *n).collect();
    if names.is_empty() {
        format!("0x{nud:x}")
    } else {
        names.join("|")
    }
}

pub(crate) fn ip_from(family: u8, b: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?))),
        _ => None,
    }
}

fn hex_lladdr(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// Parse one RTM_NEWLINK payload (ifinfomsg + attributes).
pub fn parse_link(p: &[u8]) -> Option<Link> {
    let index = read_i32(p, 4)?;
    let flags = read_u32(p, 8)?;
    let (mut name, mut lladdr) = (None, None);
    for a in attrs(p.get(16..)?) {
        match a.ty {
            IFLA_IFNAME => name = Some(a.string()),
            IFLA_ADDRESS if !a.value.is_empty() => lladdr = Some(hex_lladdr(a.value)),
            _ => {}
        }
    }
    Some(Link { index: u32::try_from(index).ok()?, name: name?, flags, lladdr })
}

/// Parse one RTM_NEWADDR payload (ifaddrmsg + attributes).
pub fn parse_addr(p: &[u8]) -> Option<IfAddr> {
    let family = *p.first()?;
    let prefix_len = *p.get(1)?;
    let ifindex = read_u32(p, 4)?;
    let (mut local, mut address) = (None, None);
    for a in attrs(p.get(8..)?) {
        match a.ty {
            IFA_LOCAL => local = ip_from(family, a.value),
            IFA_ADDRESS => address = ip_from(family, a.value),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    Some(IfAddr { address: local.or(address)?, prefix_len, ifindex })
}

/// Parse one RTM_NEWNEIGH payload (ndmsg + attributes); the device name is left empty.
pub fn parse_neigh(p: &[u8]) -> Option<NeighEntry> {
    let family = *p.first()?;
    let ifindex = u32::try_from(read_i32(p, 4)?).ok()?;
    let nud = read_u16(p, 8)?;
    let (mut address, mut lladdr) = (None, None);
    for a in attrs(p.get(12..)?) {
        match a.ty {
            NDA_DST => address = ip_from(family, a.value),
            NDA_LLADDR if !a.value.is_empty() => lladdr = Some(hex_lladdr(a.value)),
            _ => {}
        }
    }
    Some(NeighEntry { address: address?, ifindex, device: String::new(), nud, state: nud_state_name(nud), lladdr })
}

/// All interfaces of the current network namespace.
pub fn links() -> Result<Vec<Link>, NetlinkError> {
    let mut s = Socket::open(Family::Route)?;
    let mut out = Vec::new();
    let req = [0u8; 16]; // ifinfomsg, AF_UNSPEC
    s.dump("RTM_GETLINK", RTM_GETLINK, &req, Instant::now() + DEFAULT_DEADLINE, |m| {
        if m.ty == RTM_NEWLINK {
            out.extend(parse_link(m.payload));
        }
        Ok(())
    })?;
    Ok(out)
}

/// All IPv4 and IPv6 addresses of the current network namespace.
pub fn addresses() -> Result<Vec<IfAddr>, NetlinkError> {
    let mut s = Socket::open(Family::Route)?;
    let mut out = Vec::new();
    let req = [0u8; 8]; // ifaddrmsg, AF_UNSPEC
    s.dump("RTM_GETADDR", RTM_GETADDR, &req, Instant::now() + DEFAULT_DEADLINE, |m| {
        if m.ty == RTM_NEWADDR {
            out.extend(parse_addr(m.payload));
        }
        Ok(())
    })?;
    Ok(out)
}

/// [`addresses`] for many small namespaces (one dump each, `nsfind`): the kernel's default
/// receive buffer, and the big one only when a dump did not fit.
pub fn addresses_small() -> Result<Vec<IfAddr>, NetlinkError> {
    let mut s = Socket::open_small(Family::Route)?;
    let mut out = Vec::new();
    let req = [0u8; 8]; // ifaddrmsg, AF_UNSPEC
    let r = s.dump("RTM_GETADDR", RTM_GETADDR, &req, Instant::now() + DEFAULT_DEADLINE, |m| {
        if m.ty == RTM_NEWADDR {
            out.extend(parse_addr(m.payload));
        }
        Ok(())
    });
    match r {
        Ok(_) => Ok(out),
        Err(NetlinkError::Lost { .. }) => addresses(),
        Err(e) => Err(e),
    }
}

/// The IPv4 and IPv6 neighbour tables of the current network namespace, with device names.
pub fn neighbours() -> Result<Vec<NeighEntry>, NetlinkError> {
    let names: BTreeMap<u32, String> = links()?.into_iter().map(|l| (l.index, l.name)).collect();
    let mut s = Socket::open(Family::Route)?;
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let mut req = [0u8; 12]; // ndmsg
        req[0] = family;
        s.dump("RTM_GETNEIGH", RTM_GETNEIGH, &req, Instant::now() + DEFAULT_DEADLINE, |m| {
            if m.ty == RTM_NEWNEIGH {
                if let Some(mut n) = parse_neigh(m.payload) {
                    n.device = names.get(&n.ifindex).cloned().unwrap_or_default();
                    out.push(n);
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages;

    /// RTM_NEWNEIGH for 10.0.0.2 on ifindex 3, REACHABLE, lladdr 02:00:0a:00:00:02,
    /// framed as one netlink message (x86_64 / little-endian, as the kernel sends it),
    /// with an NDA_CACHEINFO and NDA_PROBES attribute in between like a real dump.
    const NEIGH_V4: &[u8] = &[
        0x4c, 0, 0, 0, 28, 0, 2, 0, 1, 0, 0, 0, 0x39, 0x30, 0, 0, // nlmsghdr
        2, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 1, // ndmsg: AF_INET, ifindex 3, REACHABLE, RTN_UNICAST
        8, 0, 1, 0, 10, 0, 0, 2, // NDA_DST
        10, 0, 2, 0, 2, 0, 10, 0, 0, 2, 0, 0, // NDA_LLADDR (padded)
        8, 0, 4, 0, 1, 0, 0, 0, // NDA_PROBES
        20, 0, 3, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, // NDA_CACHEINFO
    ];

    /// RTM_NEWNEIGH for fe80::1 on ifindex 2, FAILED, without a link-layer address.
    const NEIGH_V6_FAILED: &[u8] = &[
        0x30, 0, 0, 0, 28, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
        10, 0, 0, 0, 2, 0, 0, 0, 0x20, 0, 0, 1, // ndmsg: AF_INET6, ifindex 2, FAILED
        20, 0, 1, 0, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // NDA_DST
    ];

    #[test]
    fn small_address_dump_reads_what_the_big_one_reads() {
        // Our own namespace's addresses, twice (no privilege needed): same set.
        let key = |a: &IfAddr| (a.address, a.ifindex);
        let mut big: Vec<_> = addresses().expect("dump").iter().map(key).collect();
        let mut small: Vec<_> = addresses_small().expect("dump").iter().map(key).collect();
        big.sort();
        small.sort();
        assert_eq!(big, small);
    }

    #[test]
    fn neighbour_fixtures() {
        let m = messages(NEIGH_V4).next().unwrap().unwrap();
        assert_eq!(m.ty, RTM_NEWNEIGH);
        let n = parse_neigh(m.payload).unwrap();
        assert_eq!(n.address, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(n.ifindex, 3);
        assert_eq!(n.state, "REACHABLE");
        assert_eq!(n.lladdr.as_deref(), Some("02:00:0a:00:00:02"));

        let m = messages(NEIGH_V6_FAILED).next().unwrap().unwrap();
        let n = parse_neigh(m.payload).unwrap();
        assert_eq!(n.address, "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(n.state, "FAILED");
        assert_eq!(n.lladdr, None);
        // truncated payloads parse to nothing instead of panicking
        for cut in 0..m.payload.len() {
            let _ = parse_neigh(&m.payload[..cut]);
        }
        assert!(parse_neigh(&m.payload[..12]).is_none());
    }

    #[test]
    fn nud_names() {
        assert_eq!(nud_state_name(0x04), "STALE");
        assert_eq!(nud_state_name(0x01), "INCOMPLETE");
        assert_eq!(nud_state_name(0), "NONE");
        assert_eq!(nud_state_name(0x82), "REACHABLE|PERMANENT");
    }

    #[test]
    fn link_and_addr_fixtures() {
        // ifinfomsg: AF_UNSPEC, ARPHRD_LOOPBACK(772), index 1, flags UP|LOOPBACK|RUNNING
        let mut p = vec![0, 0, 0x04, 0x03, 1, 0, 0, 0, 0x49, 0, 1, 0, 0, 0, 0, 0];
        p.extend([7, 0, 3, 0, b'l', b'o', 0, 0]);
        let l = parse_link(&p).unwrap();
        assert_eq!((l.index, l.name.as_str(), l.flags & 0x8), (1, "lo", 0x8));

        // ifaddrmsg: AF_INET /8 scope host, index 1; IFA_ADDRESS + IFA_LOCAL 127.0.0.1
        let p = [2, 8, 0x80, 254, 1, 0, 0, 0, 8, 0, 1, 0, 127, 0, 0, 1, 8, 0, 2, 0, 127, 0, 0, 1];
        let a = parse_addr(&p).unwrap();
        assert_eq!(a.address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((a.prefix_len, a.ifindex), (8, 1));
    }

    #[test]
    fn live_dumps_in_this_namespace() {
        // Loopback exists in every network namespace and always carries 127.0.0.1.
        let links = links().unwrap();
        assert!(links.iter().any(|l| l.flags & libc::IFF_LOOPBACK as u32 != 0));
        let addrs = addresses().unwrap();
        assert!(addrs.iter().any(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // the neighbour table may be empty, but the dump must succeed
        let n = neighbours().unwrap();
        assert!(n.iter().all(|e| !e.state.is_empty()));
    }
}
