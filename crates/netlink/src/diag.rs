//! sock_diag for TCP (inet_diag): request encoding, the in-kernel filter bytecode, and
//! parsing of `inet_diag_msg` replies.
//!
//! The bytecode runs in the kernel for each socket, so only matching sockets cross into
//! user space: the cost of asking about one port does not grow with the whole table.

use crate::bytecode::{self, HostCond, Op, Test};
use crate::route::ip_from;
use crate::wire::{attrs, push_attr, read_be16, read_u32};
use crate::{NetlinkError, Socket};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_SHUTDOWN: u16 = 8;
const INET_DIAG_SKV6ONLY: u16 = 11;
const INET_DIAG_MSG_LEN: usize = 72;

pub const AF_INET: u8 = libc::AF_INET as u8;
pub const AF_INET6: u8 = libc::AF_INET6 as u8;
/// TCP_LISTEN as a bit of `idiag_states`.
pub const STATE_LISTEN: u32 = 1 << 10;
pub const ALL_STATES: u32 = 0xfff << 1 | 1 << 12;

/// One condition of an in-kernel filter. A [`Bytecode`] is the AND of its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// Local port in `lo..=hi`.
    LocalPort { lo: u16, hi: u16 },
    /// Remote port in `lo..=hi`.
    RemotePort { lo: u16, hi: u16 },
    /// Local port `port`: one op (a port-only host condition, what `ss sport = :P` sends)
    /// where a range takes two.
    LocalPortIs(u16),
    /// Local address within `addr/prefix`, and port if given. An IPv4 address also
    /// matches IPv4-mapped addresses on dual-stack IPv6 sockets (the kernel does that).
    LocalAddr { addr: IpAddr, prefix: u8, port: Option<u16> },
    /// Remote address within `addr/prefix`, and port if given.
    RemoteAddr { addr: IpAddr, prefix: u8, port: Option<u16> },
}

/// An inet_diag filter program: every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bytecode(pub Vec<Cond>);

impl Bytecode {
    /// The program's ops: each moves on to the next when its condition holds and jumps
    /// past the end (reject) when it does not.
    pub fn ops(&self) -> Vec<Op> {
        let mut tests = Vec::new();
        for c in &self.0 {
            match *c {
                Cond::LocalPort { lo, hi } => tests.extend([Test::LocalPortGe(lo), Test::LocalPortLe(hi)]),
                Cond::RemotePort { lo, hi } => tests.extend([Test::RemotePortGe(lo), Test::RemotePortLe(hi)]),
                Cond::LocalPortIs(port) => tests.push(Test::Local(HostCond { addr: None, port: Some(port) })),
                Cond::LocalAddr { addr, prefix, port } => {
                    tests.push(Test::Local(HostCond { addr: Some((addr, prefix)), port }))
                }
                Cond::RemoteAddr { addr, prefix, port } => {
                    tests.push(Test::Remote(HostCond { addr: Some((addr, prefix)), port }))
                }
            }
        }
        bytecode::all_of(&tests)
    }

    /// Encode as `inet_diag_bc_op` instructions.
    pub fn encode(&self) -> Vec<u8> {
        bytecode::encode(&self.ops())
    }
}

/// A SOCK_DIAG_BY_FAMILY dump request for TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagRequest {
    pub family: u8,
    /// Bit set of TCP states (`1 << state`).
    pub states: u32,
    /// `idiag_ext`: extra attributes requested (bit `1 << (INET_DIAG_x - 1)`).
    pub ext: u8,
    pub filter: Bytecode,
}

impl DiagRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.family, libc::IPPROTO_TCP as u8, self.ext, 0];
        out.extend_from_slice(&self.states.to_ne_bytes());
        out.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: unused for dumps
        if !self.filter.0.is_empty() {
            push_attr(&mut out, INET_DIAG_REQ_BYTECODE, &self.filter.encode());
        }
        out
    }
}

/// The legacy TCPDIAG_GETSOCK request (`struct inet_diag_req`). The kernel dumps it with
/// the family left open (AF_UNSPEC), so one walk of the shared TCP hash returns IPv4 and
/// IPv6 sockets — half the kernel work of one SOCK_DIAG_BY_FAMILY request per family.
pub const TCPDIAG_GETSOCK: u16 = 18;

impl DiagRequest {
    /// Encode as `struct inet_diag_req` (+ bytecode) for [`TCPDIAG_GETSOCK`]; `family` is
    /// ignored by the kernel for dumps.
    pub fn encode_compat(&self) -> Vec<u8> {
        let mut out = vec![self.family, 0, 0, self.ext];
        out.extend_from_slice(&[0u8; 48]); // inet_diag_sockid
        out.extend_from_slice(&self.states.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
        if !self.filter.0.is_empty() {
            push_attr(&mut out, INET_DIAG_REQ_BYTECODE, &self.filter.encode());
        }
        out
    }
}

/// One socket from an inet_diag reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagMsg {
    pub family: u8,
    /// Kernel TCP state number (1 = ESTABLISHED … 10 = LISTEN, 12 = NEW_SYN_RECV).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub ifindex: u32,
    pub cookie: u64,
    /// For a listener: the accept queue's current length. Otherwise bytes unread.
    pub rqueue: u32,
    /// For a listener: the backlog (sk_max_ack_backlog). Otherwise bytes unsent.
    pub wqueue: u32,
    pub uid: u32,
    pub inode: u32,
    /// IPV6_V6ONLY, reported by the kernel for IPv6 listening/closed sockets.
    pub v6only: Option<bool>,
    pub shutdown: Option<u8>,
}

/// Parse one inet_diag_msg payload.
pub fn parse_diag_msg(p: &[u8]) -> Option<DiagMsg> {
    if p.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = p[0];
    let sport = read_be16(p, 4)?;
    let dport = read_be16(p, 6)?;
    let src = ip_from(family, &p[8..24])?;
    let dst = ip_from(family, &p[24..40])?;
    let cookie = u64::from(read_u32(p, 44)?) | u64::from(read_u32(p, 48)?) << 32;
    let mut m = DiagMsg {
        family,
        state: p[1],
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        ifindex: read_u32(p, 40)?,
        cookie,
        rqueue: read_u32(p, 56)?,
        wqueue: read_u32(p, 60)?,
        uid: read_u32(p, 64)?,
        inode: read_u32(p, 68)?,
        v6only: None,
        shutdown: None,
    };
    for a in attrs(&p[INET_DIAG_MSG_LEN..]) {
        match a.ty {
            INET_DIAG_SKV6ONLY => m.v6only = a.u8().map(|v| v != 0),
            INET_DIAG_SHUTDOWN => m.shutdown = a.u8(),
            _ => {}
        }
    }
    Some(m)
}

impl Socket {
    /// Run one TCP dump of both families in a single kernel walk (legacy request type),
    /// handing every matching socket to `each`.
    pub fn inet_diag_both(
        &mut self,
        req: &DiagRequest,
        deadline: Instant,
        each: impl FnMut(DiagMsg),
    ) -> Result<(), NetlinkError> {
        self.diag_dump("tcpdiag", TCPDIAG_GETSOCK, &req.encode_compat(), deadline, each)
    }

    /// Run one TCP sock_diag dump, handing every matching socket to `each`. Open the
    /// socket with [`crate::Family::SockDiag`].
    pub fn inet_diag(
        &mut self,
        req: &DiagRequest,
        deadline: Instant,
        each: impl FnMut(DiagMsg),
    ) -> Result<(), NetlinkError> {
        self.diag_dump("sock_diag", SOCK_DIAG_BY_FAMILY, &req.encode(), deadline, each)
    }

    fn diag_dump(
        &mut self,
        what: &'static str,
        ty: u16,
        payload: &[u8],
        deadline: Instant,
        mut each: impl FnMut(DiagMsg),
    ) -> Result<(), NetlinkError> {
        self.dump(what, ty, payload, deadline, |m| {
            if m.ty == ty {
                let d = parse_diag_msg(m.payload).ok_or_else(|| NetlinkError::Parse {
                    what: "inet_diag_msg",
                    detail: format!("{} byte payload", m.payload.len()),
                })?;
                each(d);
            }
            Ok(())
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages;

    #[test]
    fn port_range_bytecode() {
        let bc = Bytecode(vec![Cond::LocalPort { lo: 6379, hi: 6379 }]).encode();
        // S_GE 6379 → yes 8, no 16+4 ; S_LE 6379 → yes 8, no 8+4
        let p = 6379u16.to_ne_bytes();
        assert_eq!(bc, vec![2, 8, 20, 0, 0, 0, p[0], p[1], 3, 8, 12, 0, 0, 0, p[0], p[1]],);
    }

    #[test]
    fn hostcond_bytecode() {
        let addr: IpAddr = "10.1.2.3".parse().unwrap();
        let bc = Bytecode(vec![Cond::RemoteAddr { addr, prefix: 32, port: Some(80) }]).encode();
        assert_eq!(bc.len(), 16);
        assert_eq!(&bc[..4], &[8, 16, 20, 0]);
        assert_eq!(&bc[4..8], &[2, 32, 0, 0]);
        assert_eq!(&bc[8..12], &80i32.to_ne_bytes());
        assert_eq!(&bc[12..], &[10, 1, 2, 3]);
        let any = Bytecode(vec![Cond::LocalAddr { addr, prefix: 40, port: None }]).encode();
        assert_eq!(any[5], 32, "prefix clamped to the address length");
        assert_eq!(&any[8..12], &(-1i32).to_ne_bytes());
    }

    #[test]
    fn one_port_is_one_op_as_ss_sends_it() {
        // `ss -tan state all sport = :7003` (iproute2 6.1, recorded with strace).
        let ss = [7, 16, 20, 0, 0, 0, 0, 0, 0x5b, 0x1b, 0, 0, 0, 0, 0, 0];
        assert_eq!(Bytecode(vec![Cond::LocalPortIs(7003)]).encode(), ss);
        let both = Bytecode(vec![Cond::LocalPortIs(7003), Cond::RemotePort { lo: 1, hi: 1024 }]);
        let ops = bytecode::decode(&both.encode()).unwrap();
        assert_eq!(ops.len(), 3);
        let sk = |l: &str, r: &str| bytecode::SockView { local: l.parse().unwrap(), remote: r.parse().unwrap() };
        assert!(bytecode::run(&ops, &sk("127.0.0.1:7003", "127.0.0.1:80")));
        assert!(!bytecode::run(&ops, &sk("127.0.0.1:7003", "127.0.0.1:8080")));
        assert!(!bytecode::run(&ops, &sk("127.0.0.1:7004", "127.0.0.1:80")));
    }

    #[test]
    fn request_encoding() {
        let r = DiagRequest {
            family: AF_INET6,
            states: STATE_LISTEN,
            ext: 0,
            filter: Bytecode(vec![Cond::LocalPort { lo: 1, hi: 2 }]),
        };
        let b = r.encode();
        assert_eq!(b.len(), 56 + 4 + 16);
        assert_eq!(&b[..4], &[10, 6, 0, 0]);
        assert_eq!(&b[4..8], &(1u32 << 10).to_ne_bytes());
        assert_eq!(&b[56..60], &[20, 0, 1, 0]);
        let plain = DiagRequest { filter: Bytecode::default(), ..r };
        assert_eq!(plain.encode().len(), 56);
    }

    /// A SOCK_DIAG_BY_FAMILY reply for an IPv6 listener on [::]:6379, v6only=1,
    /// accept queue 3 of backlog 511, uid 999, inode 12345 — as one netlink message
    /// with the INET_DIAG_SHUTDOWN and INET_DIAG_SKV6ONLY attributes the kernel adds.
    fn listener_fixture() -> Vec<u8> {
        let mut p = vec![10, 10, 0, 0, 0x18, 0xeb, 0, 0]; // AF_INET6, LISTEN, sport 6379
        p.extend([0u8; 32]); // src ::, dst ::
        p.extend(0u32.to_ne_bytes()); // if
        p.extend([0x11, 0x22, 0, 0, 0, 0, 0, 0]); // cookie
        p.extend(0u32.to_ne_bytes()); // expires
        p.extend(3u32.to_ne_bytes()); // rqueue
        p.extend(511u32.to_ne_bytes()); // wqueue
        p.extend(999u32.to_ne_bytes()); // uid
        p.extend(12345u32.to_ne_bytes()); // inode
        push_attr(&mut p, INET_DIAG_SHUTDOWN, &[0]);
        push_attr(&mut p, INET_DIAG_SKV6ONLY, &[1]);
        crate::wire::encode(SOCK_DIAG_BY_FAMILY, 2, 1, &p)
    }

    #[test]
    fn listener_message() {
        let buf = listener_fixture();
        let m = messages(&buf).next().unwrap().unwrap();
        let d = parse_diag_msg(m.payload).unwrap();
        assert_eq!(d.state, 10);
        assert_eq!(d.local, "[::]:6379".parse().unwrap());
        assert_eq!((d.rqueue, d.wqueue, d.uid, d.inode), (3, 511, 999, 12345));
        assert_eq!(d.v6only, Some(true));
        assert_eq!(d.cookie, 0x2211);
        assert!(parse_diag_msg(&m.payload[..71]).is_none());
    }

    #[test]
    fn ipv4_established_message() {
        let mut p = vec![2, 1, 0, 0, 0x9c, 0x40, 0x00, 0x50]; // 40000 → 80
        p.extend([127, 0, 0, 1]);
        p.extend([0u8; 12]);
        p.extend([127, 0, 0, 2]);
        p.extend([0u8; 12]);
        p.extend([0u8; 8 + 4 + 4 + 4 + 4 + 4 + 4]);
        let d = parse_diag_msg(&p).unwrap();
        assert_eq!(d.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(d.remote, "127.0.0.2:80".parse().unwrap());
        assert_eq!(d.v6only, None);
    }

    /// Recorded on Linux 6.18 (x86_64) with `examples/record.rs` in a lab namespace:
    /// `listen 127.0.0.1 6379 --backlog 7` and `listen :: 6379 --backlog 511 --v6only`,
    /// nobody connected. The kernel adds SHUTDOWN, MARK, CGROUP_ID, SOCKOPT attributes (and
    /// SKV6ONLY for the IPv6 listener).
    const RECORDED_V4: &[u8] = &[
        0x02, 0x0a, 0x00, 0x00, 0x18, 0xeb, 0x00, 0x00, 0x7f, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xab, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x17, 0x67, 0x02, 0x00,
        0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00,
        0x15, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00, 0x16, 0x00, 0x52, 0x00, 0x00, 0x00,
    ];
    const RECORDED_V6: &[u8] = &[
        0x0a, 0x0a, 0x00, 0x00, 0x18, 0xeb, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xac, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x67, 0x02, 0x00,
        0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x00, 0x00, 0x08, 0x00,
        0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x15, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x06, 0x00, 0x16, 0x00, 0x12, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn recorded_listeners() {
        let v4 = parse_diag_msg(RECORDED_V4).unwrap();
        assert_eq!(v4.family, AF_INET);
        assert_eq!(v4.state, 10);
        assert_eq!(v4.local, "127.0.0.1:6379".parse().unwrap());
        assert_eq!((v4.rqueue, v4.wqueue), (0, 7));
        assert_eq!(v4.inode, 0x26717);
        assert_eq!(v4.v6only, None);
        assert_eq!(v4.shutdown, Some(0));
        let v6 = parse_diag_msg(RECORDED_V6).unwrap();
        assert_eq!(v6.local, "[::]:6379".parse().unwrap());
        assert_eq!((v6.rqueue, v6.wqueue), (0, 511));
        assert_eq!(v6.v6only, Some(true));
    }
}

#[cfg(test)]
mod live {
    use super::*;
    use crate::Family;
    use std::time::Duration;

    #[test]
    fn one_walk_returns_both_families() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind(("::1", port)).unwrap();
        let mut s = Socket::open(Family::SockDiag).unwrap();
        let req = DiagRequest {
            family: AF_INET,
            states: STATE_LISTEN,
            ext: 0,
            filter: Bytecode(vec![Cond::LocalPort { lo: port, hi: port }]),
        };
        let mut got = Vec::new();
        s.inet_diag_both(&req, Instant::now() + Duration::from_secs(2), |m| got.push(m.local)).unwrap();
        got.sort();
        assert_eq!(got, vec![v4.local_addr().unwrap(), v6.local_addr().unwrap()]);
    }

    /// The kernel takes the one-op port test and the port equality op, and returns the
    /// port's sockets only.
    #[test]
    fn the_kernel_runs_the_port_programs() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let _ = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let (_server, _) = l.accept().unwrap();
        let eq = bytecode::all_of(&[Test::LocalPortEq(port)]);
        for filter in [Bytecode(vec![Cond::LocalPortIs(port)]).encode(), bytecode::encode(&eq)] {
            let mut s = Socket::open(Family::SockDiag).unwrap();
            let req = DiagRequest { family: AF_INET, states: ALL_STATES, ext: 0, filter: Bytecode::default() };
            let mut payload = req.encode();
            push_attr(&mut payload, INET_DIAG_REQ_BYTECODE, &filter);
            let mut got = Vec::new();
            s.diag_dump("sock_diag", SOCK_DIAG_BY_FAMILY, &payload, Instant::now() + Duration::from_secs(2), |m| {
                got.push((m.state, m.local))
            })
            .unwrap();
            got.sort();
            // The listener and the accepted end; not the client end, not the other port.
            assert_eq!(got, vec![(1, c.peer_addr().unwrap()), (10, l.local_addr().unwrap())], "{filter:?}");
        }
    }
}
