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
/// has); otherwise one SOCK_DIAG_BY_FAMILY request per family. Messages go to `each` as
/// they arrive (nothing is collected: a port with 100,000 TIME_WAIT sockets costs a count,
/// not a list).
pub fn dump(families: &[u8], states: u32, filter: Bytecode, mut each: impl FnMut(DiagMsg)) -> Result<(), HostError> {
    let mut sock = Socket::open(NlFamily::SockDiag)?;
    let deadline = Instant::now() + DEADLINE;
    if families.len() > 1 {
        let req = DiagRequest { family: AF_INET, states, ext: 0, filter: filter.clone() };
        let mut delivered = false;
        let r = sock.inet_diag_both(&req, deadline, |m| {
            if families.contains(&m.family) {
                delivered = true;
                each(m);
            }
        });
        match r {
            Ok(()) => return Ok(()),
            // The kernel refuses the legacy request before it sends a socket; only then can
            // the per-family requests follow without counting a socket twice.
            Err(NetlinkError::Kernel { .. }) if !delivered => sock = Socket::open(NlFamily::SockDiag)?,
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
/// ports' sockets with one comparison instead of running the filter on each. What it
/// cannot skip is the walk itself: sock_diag has no index by local port, so every dump
/// visits every socket of the kernel's connection hash (all namespaces' sockets share it);
/// the filters only decide what is copied out.
pub fn dump_local_port(states: u32, port: u16, mut each: impl FnMut(DiagMsg)) -> Result<(), HostError> {
    let filter = Bytecode(vec![Cond::LocalPort { lo: port, hi: port }]);
    let req = DiagRequest { family: AF_INET, states, ext: 0, filter: filter.clone() };
    let mut payload = req.encode_compat();
    // struct inet_diag_req: family, src_len, dst_len, ext, then inet_diag_sockid, whose
    // first field is idiag_sport (network byte order).
    payload[4..6].copy_from_slice(&port.to_be_bytes());
    let mut sock = Socket::open(NlFamily::SockDiag)?;
    let mut delivered = false;
    let r = sock.dump("tcpdiag", TCPDIAG_GETSOCK, &payload, Instant::now() + DEADLINE, |m| {
        if m.ty == TCPDIAG_GETSOCK {
            let d = parse_diag_msg(m.payload).ok_or_else(|| NetlinkError::Parse {
                what: "inet_diag_msg",
                detail: format!("{} byte payload", m.payload.len()),
            })?;
            // The id's port is a hint the kernel may ignore: the filter decides.
            if d.local.port() == port {
                delivered = true;
                each(d);
            }
        }
        Ok(())
    });
    match r {
        Ok(_) => Ok(()),
        Err(NetlinkError::Kernel { .. }) if !delivered => dump(&[AF_INET, AF_INET6], states, filter, each),
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
pub(crate) mod tests {
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

    /// Open `n` connections to `l` that the server side closes first, each client closing
    /// after the server's FIN: every one leaves a TIME_WAIT socket on the server's port.
    pub(crate) fn server_closes_first(l: &TcpListener, n: usize) {
        use std::io::Read;
        let to = l.local_addr().unwrap();
        for _ in 0..n {
            let mut c = TcpStream::connect(to).unwrap();
            drop(l.accept().unwrap().0);
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert_eq!(c.read(&mut [0u8; 8]).unwrap(), 0, "EOF from the server's close");
        }
    }

    /// The walk's counts are what the findings read (time-wait-pileup: TIME_WAIT;
    /// syn-backlog-overflow: SYN_RECV; the evidence lists every state): exact per state,
    /// over both families in the one walk, ESTABLISHED and other ports' sockets left out.
    #[test]
    fn counts_each_state_on_the_port_exactly_in_both_families() {
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l4.local_addr().unwrap().port();
        // An IPv6-only listener on the same port number: its sockets are AF_INET6.
        let s6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        s6.set_only_v6(true).unwrap();
        let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let l6: Option<TcpListener> = s6.bind(&v6.into()).and_then(|_| s6.listen(128)).ok().map(|_| s6.into());
        // Another port's TIME_WAIT, which must not be counted.
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        server_closes_first(&other, 7);

        server_closes_first(&l4, 150);
        let v6_tw = if let Some(l6) = &l6 {
            server_closes_first(l6, 40);
            40
        } else {
            0 // no ::1 here: the IPv4 half still proves the counts
        };
        let mut close_wait = Vec::new();
        for _ in 0..3 {
            let c = TcpStream::connect(l4.local_addr().unwrap()).unwrap();
            close_wait.push(l4.accept().unwrap().0);
            drop(c); // the client closes, the server has not: CLOSE_WAIT on the port
        }
        let established: Vec<_> =
            (0..5).map(|_| (TcpStream::connect(l4.local_addr().unwrap()).unwrap(), l4.accept().unwrap().0)).collect();

        let want = BTreeMap::from([(SocketState::TimeWait, 150 + v6_tw), (SocketState::CloseWait, 3)]);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = sockets_on_port(port).unwrap();
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "port {port}: got {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The same counts through the per-family requests (the fallback path) and through
        // a dump of the port range (what `conndoc check` snapshots read).
        let mut per_family: BTreeMap<SocketState, u32> = BTreeMap::new();
        let filter = Bytecode(vec![Cond::LocalPort { lo: port, hi: port }]);
        dump(&[AF_INET], TELLING_STATES, filter.clone(), |m| {
            *per_family.entry(SocketState::from_kernel(m.state).unwrap()).or_insert(0) += 1
        })
        .unwrap();
        dump(&[AF_INET6], TELLING_STATES, filter.clone(), |m| {
            *per_family.entry(SocketState::from_kernel(m.state).unwrap()).or_insert(0) += 1
        })
        .unwrap();
        assert_eq!(per_family, want);
        let mut both: BTreeMap<SocketState, u32> = BTreeMap::new();
        dump(&[AF_INET, AF_INET6], TELLING_STATES, filter, |m| {
            *both.entry(SocketState::from_kernel(m.state).unwrap()).or_insert(0) += 1
        })
        .unwrap();
        assert_eq!(both, want);
        drop((close_wait, established));
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
