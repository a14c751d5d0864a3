//! The inet_diag filter bytecode (`INET_DIAG_REQ_BYTECODE`, linux/inet_diag.h): the
//! program the kernel runs on each socket of a dump, so that only matching sockets are
//! copied out (what `ss ... sport = :P` sends, iproute2 misc/ss.c ssfilter_bytecompile).
//!
//! An op is `struct inet_diag_bc_op { u8 code; u8 yes; u16 no; }` followed by its
//! argument. The kernel (net/ipv4/inet_diag.c inet_diag_bc_run) moves `yes` bytes on when
//! the op's test holds and `no` bytes on when it does not; the socket matches when the
//! program ends exactly at its last byte, and not when a jump leaves past it (ss jumps to
//! `len + 4` to reject). The kernel audits the program (`inet_diag_bc_audit`) before the
//! dump: [`decode`] checks the same.

use crate::diag::{AF_INET, AF_INET6};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Op codes (`INET_DIAG_BC_*`, kernel enum order).
pub mod code {
    pub const NOP: u8 = 0;
    pub const JMP: u8 = 1;
    pub const S_GE: u8 = 2;
    pub const S_LE: u8 = 3;
    pub const D_GE: u8 = 4;
    pub const D_LE: u8 = 5;
    pub const AUTO: u8 = 6;
    pub const S_COND: u8 = 7;
    pub const D_COND: u8 = 8;
    pub const DEV_COND: u8 = 9;
    pub const MARK_COND: u8 = 10;
    /// Port equality ops, known to newer kernels only (an older one refuses the program
    /// with EINVAL): conndoc's own programs test one port with a port-only host condition,
    /// as ss does.
    pub const S_EQ: u8 = 11;
    pub const D_EQ: u8 = 12;
    pub const CGROUP_COND: u8 = 13;
}

/// `AF_UNSPEC` in a host condition: no address, only the port is compared.
pub const AF_UNSPEC: u8 = 0;

/// `struct inet_diag_hostcond { u8 family; u8 prefix_len; int port; __be32 addr[]; }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCond {
    /// The address and the prefix compared (None: AF_UNSPEC, any address).
    pub addr: Option<(IpAddr, u8)>,
    /// The port, or any (-1 on the wire).
    pub port: Option<u16>,
}

/// What one op tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Nop,
    /// Always takes `no` (an unconditional jump).
    Jmp,
    LocalPortGe(u16),
    LocalPortLe(u16),
    RemotePortGe(u16),
    RemotePortLe(u16),
    LocalPortEq(u16),
    RemotePortEq(u16),
    /// The socket's local port was chosen by the kernel (autobind).
    Auto,
    Local(HostCond),
    Remote(HostCond),
    /// Bound to this interface index.
    Dev(u32),
    Mark {
        mark: u32,
        mask: u32,
    },
    Cgroup(u64),
}

/// One op: its test and where to go when it holds (`yes`) or not (`no`), in bytes from
/// the op's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub test: Test,
    pub yes: u8,
    pub no: u16,
}

impl Test {
    pub fn code(&self) -> u8 {
        match self {
            Test::Nop => code::NOP,
            Test::Jmp => code::JMP,
            Test::LocalPortGe(_) => code::S_GE,
            Test::LocalPortLe(_) => code::S_LE,
            Test::RemotePortGe(_) => code::D_GE,
            Test::RemotePortLe(_) => code::D_LE,
            Test::LocalPortEq(_) => code::S_EQ,
            Test::RemotePortEq(_) => code::D_EQ,
            Test::Auto => code::AUTO,
            Test::Local(_) => code::S_COND,
            Test::Remote(_) => code::D_COND,
            Test::Dev(_) => code::DEV_COND,
            Test::Mark { .. } => code::MARK_COND,
            Test::Cgroup(_) => code::CGROUP_COND,
        }
    }

    /// The argument's bytes after the 4-byte op word.
    fn arg(&self) -> Vec<u8> {
        match *self {
            Test::Nop | Test::Jmp | Test::Auto => Vec::new(),
            // A port comparison's port sits in the `no` field of a second op word.
            Test::LocalPortGe(p)
            | Test::LocalPortLe(p)
            | Test::RemotePortGe(p)
            | Test::RemotePortLe(p)
            | Test::LocalPortEq(p)
            | Test::RemotePortEq(p) => {
                let mut v = vec![0, 0];
                v.extend_from_slice(&p.to_ne_bytes());
                v
            }
            Test::Local(c) | Test::Remote(c) => hostcond(c),
            Test::Dev(i) => i.to_ne_bytes().to_vec(),
            Test::Mark { mark, mask } => [mark.to_ne_bytes(), mask.to_ne_bytes()].concat(),
            Test::Cgroup(id) => id.to_ne_bytes().to_vec(),
        }
    }

    /// The op's size with its argument.
    pub fn size(&self) -> usize {
        4 + self.arg().len()
    }
}

fn hostcond(c: HostCond) -> Vec<u8> {
    let (family, prefix, bytes) = match c.addr {
        // ss gives an AF_UNSPEC condition a 4-byte address all the same; the kernel skips it.
        None => (AF_UNSPEC, 0, vec![0; 4]),
        Some((IpAddr::V4(a), p)) => (AF_INET, p.min(32), a.octets().to_vec()),
        Some((IpAddr::V6(a), p)) => (AF_INET6, p.min(128), a.octets().to_vec()),
    };
    let mut v = vec![family, prefix, 0, 0];
    v.extend_from_slice(&c.port.map_or(-1i32, i32::from).to_ne_bytes());
    v.extend_from_slice(&bytes);
    v
}

/// The program's bytes.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        out.push(op.test.code());
        out.push(op.yes);
        out.extend_from_slice(&op.no.to_ne_bytes());
        out.extend_from_slice(&op.test.arg());
    }
    out
}

/// The AND of `tests`: each op moves on to the next when its test holds and jumps past the
/// end (reject) when it does not.
pub fn all_of(tests: &[Test]) -> Vec<Op> {
    let total: usize = tests.iter().map(Test::size).sum();
    let mut at = 0;
    tests
        .iter()
        .map(|t| {
            let len = t.size();
            let op = Op { test: *t, yes: len as u8, no: (total - at + 4) as u16 };
            at += len;
            op
        })
        .collect()
}

/// Why a program would be refused by the kernel's audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytecodeError {
    #[error("inet_diag bytecode: op at byte {at}: {why}")]
    Op { at: usize, why: &'static str },
    #[error("inet_diag bytecode: {len} bytes do not end on an op")]
    Trailing { len: usize },
}

/// Parse and audit a program as the kernel does (`inet_diag_bc_audit`): every op's code is
/// known and its argument complete, `yes` and `no` are multiples of 4 no shorter than the
/// op and no further than 4 past the end, and every `no` inside the program lands on an op.
pub fn decode(bc: &[u8]) -> Result<Vec<Op>, BytecodeError> {
    let mut ops = Vec::new();
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bc.len() {
        let err = |why| BytecodeError::Op { at, why };
        let rest = &bc[at..];
        if rest.len() < 4 {
            return Err(err("shorter than an op"));
        }
        let (c, yes, no) = (rest[0], rest[1], u16::from_ne_bytes([rest[2], rest[3]]));
        let arg = &rest[4..];
        let need = |n: usize| if arg.len() < n { Err(err("argument cut short")) } else { Ok(()) };
        let u16_at = |i: usize| u16::from_ne_bytes([arg[i], arg[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([arg[i], arg[i + 1], arg[i + 2], arg[i + 3]]);
        let (test, min) = match c {
            code::NOP => (Test::Nop, 4),
            code::JMP => (Test::Jmp, 4),
            code::AUTO => (Test::Auto, 4),
            code::S_GE | code::S_LE | code::D_GE | code::D_LE | code::S_EQ | code::D_EQ => {
                need(4)?;
                let p = u16_at(2);
                let t = match c {
                    code::S_GE => Test::LocalPortGe(p),
                    code::S_LE => Test::LocalPortLe(p),
                    code::D_GE => Test::RemotePortGe(p),
                    code::D_LE => Test::RemotePortLe(p),
                    code::S_EQ => Test::LocalPortEq(p),
                    _ => Test::RemotePortEq(p),
                };
                (t, 8)
            }
            code::S_COND | code::D_COND => {
                need(8)?;
                let port = i32::from_ne_bytes([arg[4], arg[5], arg[6], arg[7]]);
                let port =
                    if port == -1 { None } else { Some(u16::try_from(port).map_err(|_| err("port out of range"))?) };
                let (addr, min) = match arg[0] {
                    AF_UNSPEC => (None, 12),
                    AF_INET => {
                        need(12)?;
                        let a = Ipv4Addr::new(arg[8], arg[9], arg[10], arg[11]);
                        (Some((IpAddr::V4(a), arg[1])), 16)
                    }
                    AF_INET6 => {
                        need(24)?;
                        let a: [u8; 16] = arg[8..24].try_into().expect("24 bytes checked");
                        (Some((IpAddr::V6(Ipv6Addr::from(a)), arg[1])), 28)
                    }
                    _ => return Err(err("host condition of an unknown family")),
                };
                if addr.is_some_and(|(a, p)| u32::from(p) > if a.is_ipv4() { 32 } else { 128 }) {
                    return Err(err("prefix longer than the address"));
                }
                let cond = HostCond { addr, port };
                (if c == code::S_COND { Test::Local(cond) } else { Test::Remote(cond) }, min)
            }
            code::DEV_COND => {
                need(4)?;
                (Test::Dev(u32_at(0)), 8)
            }
            code::MARK_COND => {
                need(8)?;
                (Test::Mark { mark: u32_at(0), mask: u32_at(4) }, 12)
            }
            code::CGROUP_COND => {
                need(8)?;
                (Test::Cgroup(u64::from_ne_bytes(arg[..8].try_into().expect("8 bytes checked"))), 12)
            }
            _ => return Err(err("unknown op code")),
        };
        let left = bc.len() - at;
        let bad = |j: usize| j < min || j > left + 4 || !j.is_multiple_of(4);
        if c != code::NOP && bad(usize::from(no)) {
            return Err(err("no jump out of bounds or misaligned"));
        }
        if bad(usize::from(yes)) {
            return Err(err("yes jump out of bounds or misaligned"));
        }
        starts.push(at);
        ops.push((at, Op { test, yes, no }));
        at += usize::from(yes);
    }
    if at != bc.len() {
        return Err(BytecodeError::Trailing { len: bc.len() });
    }
    // A `no` that stays inside the program must land where an op starts.
    for (op_at, op) in &ops {
        let to = op_at + usize::from(op.no);
        if op.test != Test::Nop && to < bc.len() && !starts.contains(&to) {
            return Err(BytecodeError::Op { at: *op_at, why: "no jump lands inside an op" });
        }
    }
    Ok(ops.into_iter().map(|(_, op)| op).collect())
}

/// What a program sees of a socket (the tests that conndoc's programs use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockView {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
}

/// Run a program on a socket as `inet_diag_bc_run` does, for the port and host tests
/// (others do not match). For checking programs in tests and fuzzing.
pub fn run(ops: &[Op], sk: &SockView) -> bool {
    // Index ops by byte offset.
    let mut offs = Vec::with_capacity(ops.len());
    let mut at = 0usize;
    for op in ops {
        offs.push(at);
        at += usize::from(op.yes);
    }
    let total = at as isize;
    let mut pos = 0isize;
    while pos < total {
        let Some(i) = offs.iter().position(|&o| o as isize == pos) else { return false };
        let op = &ops[i];
        let (sp, dp) = (sk.local.port(), sk.remote.port());
        let holds = match op.test {
            Test::Nop => true,
            Test::Jmp => false,
            Test::LocalPortGe(p) => sp >= p,
            Test::LocalPortLe(p) => sp <= p,
            Test::RemotePortGe(p) => dp >= p,
            Test::RemotePortLe(p) => dp <= p,
            Test::LocalPortEq(p) => sp == p,
            Test::RemotePortEq(p) => dp == p,
            Test::Local(c) => host_holds(c, sk.local),
            Test::Remote(c) => host_holds(c, sk.remote),
            Test::Auto | Test::Dev(_) | Test::Mark { .. } | Test::Cgroup(_) => false,
        };
        pos += if holds { isize::from(op.yes) } else { op.no as isize };
    }
    pos == total
}

/// `inet_diag_bc_run`'s S_COND/D_COND: port, then the prefix (an IPv4 condition also
/// matches an IPv4-mapped IPv6 address).
fn host_holds(c: HostCond, a: std::net::SocketAddr) -> bool {
    if c.port.is_some_and(|p| p != a.port()) {
        return false;
    }
    let Some((want, prefix)) = c.addr else { return true };
    // The family first (an IPv4 condition on an IPv6 socket looks at a mapped address
    // only), then the prefix.
    let have = match (want, a.ip()) {
        (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        (_, ip) => ip,
    };
    if want.is_ipv4() != have.is_ipv4() {
        return false;
    }
    if prefix == 0 {
        return true;
    }
    let bits = |ip: IpAddr| -> u128 {
        match ip {
            IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
            IpAddr::V6(v) => u128::from(v),
        }
    };
    let mask = if prefix >= 128 { u128::MAX } else { !(u128::MAX >> prefix) };
    bits(want) & mask == bits(have) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sk(local: &str, remote: &str) -> SockView {
        SockView { local: local.parse().unwrap(), remote: remote.parse().unwrap() }
    }

    // Recorded from iproute2 6.1's `ss -tan state all FILTER` (strace -e write=all of its
    // SOCK_DIAG_BY_FAMILY request), x86_64.
    /// `sport = :7003`
    const SS_SPORT_EQ: &[u8] = &[7, 16, 20, 0, 0, 0, 0, 0, 0x5b, 0x1b, 0, 0, 0, 0, 0, 0];
    /// `sport >= :7000 and sport <= :7002`
    const SS_SPORT_RANGE: &[u8] = &[2, 8, 20, 0, 0, 0, 0x58, 0x1b, 3, 8, 12, 0, 0, 0, 0x5a, 0x1b];
    /// `dport = :80`
    const SS_DPORT_EQ: &[u8] = &[8, 16, 20, 0, 0, 0, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0];
    /// `sport = :7003 or sport = :7004`
    const SS_SPORT_OR: &[u8] = &[
        7, 16, 20, 0, 0, 0, 0, 0, 0x5b, 0x1b, 0, 0, 0, 0, 0, 0, 1, 4, 20, 0, 7, 16, 20, 0, 0, 0, 0, 0, 0x5c, 0x1b, 0,
        0, 0, 0, 0, 0,
    ];
    /// `src 127.0.0.1:7003`
    const SS_SRC: &[u8] = &[7, 16, 20, 0, 2, 32, 0, 0, 0x5b, 0x1b, 0, 0, 127, 0, 0, 1];
    /// `not sport = :22`
    const SS_NOT: &[u8] = &[7, 16, 20, 0, 0, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 1, 4, 8, 0];

    #[test]
    fn ss_programs_decode() {
        let port_only = |p| HostCond { addr: None, port: Some(p) };
        assert_eq!(decode(SS_SPORT_EQ).unwrap(), vec![Op { test: Test::Local(port_only(7003)), yes: 16, no: 20 }]);
        assert_eq!(
            decode(SS_SPORT_RANGE).unwrap(),
            vec![
                Op { test: Test::LocalPortGe(7000), yes: 8, no: 20 },
                Op { test: Test::LocalPortLe(7002), yes: 8, no: 12 }
            ]
        );
        assert_eq!(decode(SS_DPORT_EQ).unwrap(), vec![Op { test: Test::Remote(port_only(80)), yes: 16, no: 20 }]);
        let or = decode(SS_SPORT_OR).unwrap();
        assert_eq!(or.len(), 3);
        assert_eq!(or[1], Op { test: Test::Jmp, yes: 4, no: 20 });
        let src = decode(SS_SRC).unwrap();
        let want = HostCond { addr: Some(("127.0.0.1".parse().unwrap(), 32)), port: Some(7003) };
        assert_eq!(src, vec![Op { test: Test::Local(want), yes: 16, no: 20 }]);
        // Every one encodes back to ss's bytes.
        for bc in [SS_SPORT_EQ, SS_SPORT_RANGE, SS_DPORT_EQ, SS_SPORT_OR, SS_SRC, SS_NOT] {
            assert_eq!(encode(&decode(bc).unwrap()), bc);
        }
    }

    #[test]
    fn ss_programs_run_as_the_kernel_runs_them() {
        let run_on = |bc, local, remote| run(&decode(bc).unwrap(), &sk(local, remote));
        assert!(run_on(SS_SPORT_EQ, "127.0.0.1:7003", "127.0.0.1:40000"));
        assert!(run_on(SS_SPORT_EQ, "[::1]:7003", "[::1]:40000"));
        assert!(!run_on(SS_SPORT_EQ, "127.0.0.1:7004", "127.0.0.1:7003"));
        assert!(run_on(SS_SPORT_RANGE, "127.0.0.1:7001", "127.0.0.1:1"));
        assert!(!run_on(SS_SPORT_RANGE, "127.0.0.1:7003", "127.0.0.1:1"));
        assert!(run_on(SS_SPORT_OR, "127.0.0.1:7004", "127.0.0.1:1"));
        assert!(run_on(SS_SPORT_OR, "127.0.0.1:7003", "127.0.0.1:1"));
        assert!(!run_on(SS_SPORT_OR, "127.0.0.1:7005", "127.0.0.1:1"));
        assert!(run_on(SS_SRC, "[::ffff:127.0.0.1]:7003", "[::1]:1"), "IPv4-mapped");
        assert!(!run_on(SS_SRC, "127.0.0.2:7003", "127.0.0.1:1"));
        assert!(!run_on(SS_NOT, "127.0.0.1:22", "127.0.0.1:1"));
        assert!(run_on(SS_NOT, "127.0.0.1:23", "127.0.0.1:1"));
        assert!(run_on(SS_DPORT_EQ, "127.0.0.1:1", "10.0.0.1:80"));
    }

    #[test]
    fn all_of_matches_what_ss_sends() {
        let ops = all_of(&[Test::LocalPortGe(7000), Test::LocalPortLe(7002)]);
        assert_eq!(encode(&ops), SS_SPORT_RANGE);
        let ops = all_of(&[Test::Local(HostCond { addr: None, port: Some(7003) })]);
        assert_eq!(encode(&ops), SS_SPORT_EQ);
        let eq = all_of(&[Test::LocalPortEq(7003), Test::RemotePortEq(80)]);
        assert_eq!(decode(&encode(&eq)).unwrap(), eq);
        assert!(run(&eq, &sk("127.0.0.1:7003", "127.0.0.1:80")));
        assert!(!run(&eq, &sk("127.0.0.1:7003", "127.0.0.1:81")));
    }

    #[test]
    fn the_audit_refuses_what_the_kernel_refuses() {
        let bad = |bc: &[u8]| decode(bc).is_err();
        assert!(bad(&[2, 8, 12, 0, 0, 0]), "argument cut short");
        assert!(bad(&[99, 4, 8, 0]), "unknown code");
        assert!(bad(&[2, 6, 12, 0, 0, 0, 1, 0]), "yes not a multiple of 4");
        assert!(bad(&[2, 8, 16, 0, 0, 0, 1, 0]), "no past end + 4");
        assert!(bad(&[2, 4, 12, 0, 0, 0, 1, 0]), "yes shorter than the op");
        assert!(bad(&[7, 16, 20, 0, 2, 33, 0, 0, 0, 0, 0, 0, 127, 0, 0, 1]), "prefix too long");
        assert!(bad(&[7, 16, 20, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "unknown family");
        // `no` into the middle of the next op's argument.
        assert!(bad(&[2, 8, 12, 0, 0, 0, 1, 0, 3, 8, 8, 0, 0, 0, 2, 0]));
        assert!(decode(&[]).unwrap().is_empty());
    }
}
