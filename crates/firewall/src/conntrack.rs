//! One conntrack entry by its original tuple (ctnetlink `IPCTNL_MSG_CT_GET`, what
//! `conntrack -G` does): where the kernel really sent a connection conndoc made. A connect
//! to a Kubernetes ClusterIP that succeeded was DNAT'd to one endpoint; the reply tuple's
//! source names it, whichever tool wrote the rule (nftables, iptables-nft, iptables-legacy)
//! — one round trip instead of reading every rule to learn that a healthy connect was
//! translated. Needs CAP_NET_ADMIN.

use conndoc_netlink::{attrs, Family, NetlinkError, Socket, NLM_F_ACK};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
const CT_GET: u16 = (1 << 8) | 1;
/// NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW (the reply)
const CT_NEW: u16 = 1 << 8;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

fn nla(ty: u16, v: &[u8], nested: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + v.len());
    out.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&(if nested { ty | 0x8000 } else { ty }).to_ne_bytes());
    out.extend_from_slice(v);
    out.resize((out.len() + 3) & !3, 0);
    out
}

/// (CTA_IP_*_SRC, CTA_IP_*_DST) and the address bytes of one family.
fn ip_attrs(a: IpAddr) -> (u16, u16, Vec<u8>) {
    match a {
        IpAddr::V4(v) => (1, 2, v.octets().to_vec()),
        IpAddr::V6(v) => (3, 4, v.octets().to_vec()),
    }
}

/// The CT_GET request for the TCP connection `src` → `dst` (its original direction).
pub fn request(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
    let (s_ty, d_ty, s) = ip_attrs(src.ip());
    let (_, _, d) = ip_attrs(dst.ip());
    let mut ip = nla(s_ty, &s, false);
    ip.extend(nla(d_ty, &d, false));
    let mut proto = nla(CTA_PROTO_NUM, &[libc::IPPROTO_TCP as u8], false);
    proto.extend(nla(CTA_PROTO_SRC_PORT, &src.port().to_be_bytes(), false));
    proto.extend(nla(CTA_PROTO_DST_PORT, &dst.port().to_be_bytes(), false));
    let mut tuple = nla(CTA_TUPLE_IP, &ip, true);
    tuple.extend(nla(CTA_TUPLE_PROTO, &proto, true));
    let mut p = vec![family, 0, 0, 0]; // struct nfgenmsg: family, version, res_id
    p.extend(nla(CTA_TUPLE_ORIG, &tuple, true));
    p
}

/// The reply tuple's source (address, port) in a CT_NEW message's payload.
pub fn parse_reply_source(payload: &[u8]) -> Option<SocketAddr> {
    let reply = attrs(payload.get(4..)?).find(|a| a.ty == CTA_TUPLE_REPLY)?;
    let mut ip = None;
    let mut port = None;
    for a in attrs(reply.value) {
        match a.ty {
            CTA_TUPLE_IP => {
                for x in attrs(a.value) {
                    match (x.ty, x.value.len()) {
                        (1, 4) => ip = Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(x.value).ok()?))),
                        (3, 16) => ip = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(x.value).ok()?))),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for x in attrs(a.value) {
                    if x.ty == CTA_PROTO_SRC_PORT && x.value.len() == 2 {
                        port = Some(u16::from_be_bytes([x.value[0], x.value[1]]));
                    }
                }
            }
            _ => {}
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

/// Where the TCP connection `src` → `dst` really went (the reply tuple's source): `dst`
/// itself when nothing translated it, None when conntrack has no such entry.
pub fn reply_source(src: SocketAddr, dst: SocketAddr, deadline: Instant) -> Result<Option<SocketAddr>, NetlinkError> {
    let mut sock = Socket::open_small(Family::Netfilter)?;
    let mut found = None;
    let r = sock.request("conntrack GET", CT_GET, NLM_F_ACK, &request(src, dst), deadline, |m| {
        if m.ty == CT_NEW {
            found = found.or_else(|| parse_reply_source(m.payload));
        }
        Ok::<(), NetlinkError>(())
    });
    match r {
        Ok(_) => Ok(found),
        Err(NetlinkError::Kernel { errno, .. }) if errno.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_reply_round_trip() {
        let src: SocketAddr = "10.77.9.2:40000".parse().unwrap();
        let dst: SocketAddr = "10.96.0.40:80".parse().unwrap();
        let req = request(src, dst);
        assert_eq!(req[0], libc::AF_INET as u8);
        // A reply message carries the same shape under CTA_TUPLE_REPLY.
        let back: SocketAddr = "10.244.0.7:8080".parse().unwrap();
        let mut reply = req.clone();
        let tuple = request(back, src);
        let inner = &tuple[4 + 4..]; // skip nfgenmsg and the CTA_TUPLE_ORIG header
        reply.extend(nla(CTA_TUPLE_REPLY, inner, true));
        assert_eq!(parse_reply_source(&reply), Some(back));
        let v6 = request("[fd77:9::2]:1".parse().unwrap(), "[fd00:10:96::30]:80".parse().unwrap());
        assert_eq!(v6[0], libc::AF_INET6 as u8);
        assert_eq!(parse_reply_source(&v6), None, "no reply tuple");
    }
}
