//! The TCP socket table through sock_diag, filtered in the kernel.

use crate::HostError;
use conndoc_facts::host::Listener;
use conndoc_facts::{Family, QueueLen, SocketState};
use conndoc_netlink::diag::{parse_diag_msg, AF_INET, AF_INET6, ALL_STATES, STATE_LISTEN, TCPDIAG_GETSOCK};
use conndoc_netlink::{Bytecode, Cond, DiagMsg, DiagRequest, Family as NlFamily, NetlinkError, Socket};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Deadline of one socket-table query.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// Which families' tables can hold a socket for `ip`: IPv4 peers also appear as
/// IPv4-mapped addresses on dual-stack IPv6 sockets.
fn families_for(ip: &IpAddr) -> &'static [u8] {
    match ip {
        IpAddr::V4(_) => &[AF_INET, AF_INET6],
        IpAddr::V6(_) => &[AF_INET6],
    }
}

/// Run a dump with one filter over the families in `families`. Both families are read in
/// one kernel walk of the TCP hash when the kernel takes the legacy request (it always
/// has); otherwise one SOCK_DIAG_BY_FAMILY request per family.
pub fn dump(families: &[u8], states: u32, filter: Bytecode, mut each: impl FnMut(DiagMsg)) -> Result<(), HostError> {
    let mut sock = Socket::open(NlFamily::SockDiag)?;
    let deadline = Instant::now() + DEADLINE;
    if families.len() > 1 {
        let req = DiagRequest { family: AF_INET, states, ext: 0, filter: filter.clone() };
        let mut got = Vec::new();
        match sock.inet_diag_both(&req, deadline, |m| got.push(m)) {
            Ok(()) => {
                got.into_iter().filter(|m| families.contains(&m.family)).for_each(&mut each);
                return Ok(());
            }
            Err(conndoc_netlink::NetlinkError::Kernel { .. }) => {
                sock = Socket::open(NlFamily::SockDiag)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    for &family in families {
        let req = DiagRequest { family, states, ext: 0, filter: filter.clone() };
        sock.inet_diag(&req, deadline, &mut each)?;
    }
    Ok(())
}

/// Both families' sockets whose local port is `port`, in one walk. The port goes into the
/// request's socket id as well as into the filter: the kernel then passes over other
/// ports' sockets with one comparison instead of running the filter on each, which is
/// what a walk of a table full of other ports' TIME_WAIT sockets costs.
pub fn dump_local_port(states: u32, port: u16, mut each: impl FnMut(DiagMsg)) -> Result<(), HostError> {
    let filter = Bytecode(vec![Cond::LocalPort { lo: port, hi: port }]);
    let req = DiagRequest { family: AF_INET, states, ext: 0, filter: filter.clone() };
    let mut payload = req.encode_compat();
    // struct inet_diag_req: family, src_len, dst_len, ext, then inet_diag_sockid, whose
    // first field is idiag_sport (network byte order).
    payload[4..6].copy_from_slice(&port.to_be_bytes());
    let mut sock = Socket::open(NlFamily::SockDiag)?;
    let mut got = Vec::new();
    let r = sock.dump("tcpdiag", TCPDIAG_GETSOCK, &payload, Instant::now() + DEADLINE, |m| {
        if m.ty == TCPDIAG_GETSOCK {
            let d = parse_diag_msg(m.payload).ok_or_else(|| NetlinkError::Parse {
                what: "inet_diag_msg",
                detail: format!("{} byte payload", m.payload.len()),
            })?;
            got.push(d);
        }
        Ok(())
    });
    match r {
        Ok(_) => {
            // The id's port is a hint the kernel may ignore: the filter decides.
            got.into_iter().filter(|m| m.local.port() == port).for_each(&mut each);
            Ok(())
        }
        Err(NetlinkError::Kernel { .. }) => dump(&[AF_INET, AF_INET6], states, filter, each),
        Err(e) => Err(e.into()),
    }
}

/// Count TCP sockets in the current network namespace whose remote end is `dst`, by state.
/// The kernel filters on the address and port, so only those sockets are read.
pub fn sockets_to(dst: SocketAddr) -> Result<BTreeMap<SocketState, u32>, HostError> {
    let prefix = if dst.is_ipv4() { 32 } else { 128 };
    let filter = Bytecode(vec![Cond::RemoteAddr { addr: dst.ip(), prefix, port: Some(dst.port()) }]);
    let mut out = BTreeMap::new();
    dump(families_for(&dst.ip()), ALL_STATES, filter, |m| {
        if let Some(s) = SocketState::from_kernel(m.state) {
            *out.entry(s).or_insert(0) += 1;
        }
    })?;
    Ok(out)
}

/// States worth counting on a server port: everything but LISTEN and ESTABLISHED. Leaving
/// ESTABLISHED out lets the kernel skip a busy port's healthy connections by their state
/// alone, before the filter runs, so the cost follows the sockets that tell something
/// (TIME_WAIT, CLOSE_WAIT, SYN_RECV …).
pub const TELLING_STATES: u32 = ALL_STATES & !STATE_LISTEN & !(1 << 1);

/// Count TCP sockets whose local port is `port` (the server side of a service), by state,
/// for the [`TELLING_STATES`].
pub fn sockets_on_port(port: u16) -> Result<BTreeMap<SocketState, u32>, HostError> {
    let mut out = BTreeMap::new();
    dump_local_port(TELLING_STATES, port, |m| {
        if let Some(s) = SocketState::from_kernel(m.state) {
            *out.entry(s).or_insert(0) += 1;
        }
    })?;
    Ok(out)
}

/// Listening TCP sockets (IPv4 and IPv6), on `port` only when given. Owners are not
/// looked up here (see [`crate::procs::owners`]).
pub fn listeners(port: Option<u16>) -> Result<Vec<Listener>, HostError> {
    let filter = Bytecode(port.map(|p| Cond::LocalPort { lo: p, hi: p }).into_iter().collect());
    let mut out = Vec::new();
    dump(&[AF_INET, AF_INET6], STATE_LISTEN, filter, |m| {
        out.push(Listener {
            family: if m.family == AF_INET { Family::Ipv4 } else { Family::Ipv6 },
            local: m.local,
            v6only: m.v6only,
            accept_queue: QueueLen(m.rqueue),
            backlog: QueueLen(m.wqueue),
            uid: m.uid,
            inode: u64::from(m.inode),
            process: None,
        })
    })?;
    out.sort_by_key(|l| (l.local.port(), l.family, l.local.ip()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn counts_only_sockets_to_the_destination() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = a.local_addr().unwrap();
        let to_a: Vec<_> = (0..3).map(|_| TcpStream::connect(dst).unwrap()).collect();
        let _to_b = TcpStream::connect(b.local_addr().unwrap()).unwrap();
        let counts = sockets_to(dst).unwrap();
        assert_eq!(counts.get(&SocketState::Established), Some(&3), "{counts:?}");
        assert_eq!(counts.values().sum::<u32>(), 3, "{counts:?}");

        // Closing our ends first leaves them in TIME_WAIT (after the peer closes too).
        let accepted: Vec<_> = (0..3).map(|_| a.accept().unwrap().0).collect();
        drop(to_a);
        drop(accepted);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let c = sockets_to(dst).unwrap();
            if c.get(&SocketState::TimeWait) == Some(&3) {
                break;
            }
            assert!(Instant::now() < deadline, "no TIME_WAIT seen: {c:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let server_side = sockets_on_port(dst.port()).unwrap();
        assert!(!server_side.contains_key(&SocketState::Established), "{server_side:?}");
    }

    #[test]
    fn server_side_close_wait() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_server_end, _) = l.accept().unwrap();
        assert!(sockets_on_port(port).unwrap().is_empty(), "ESTABLISHED is not counted");
        drop(c); // the client closes, the server has not: CLOSE_WAIT on the server port
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let m = sockets_on_port(port).unwrap();
            if m.get(&SocketState::CloseWait) == Some(&1) {
                break;
            }
            assert!(Instant::now() < deadline, "no CLOSE_WAIT: {m:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn ipv4_mapped_peers_are_counted() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = l.local_addr().unwrap();
        // A dual-stack IPv6 socket dialling an IPv4 address.
        let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        s.set_only_v6(false).unwrap();
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", dst.port()).parse().unwrap();
        s.connect_timeout(&mapped.into(), Duration::from_secs(1)).unwrap();
        let c = sockets_to(dst).unwrap();
        assert_eq!(c.get(&SocketState::Established), Some(&1), "{c:?}");
    }
}
