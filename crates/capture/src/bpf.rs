//! The classic BPF program that lets only the probe's flows through: TCP between conndoc
//! and the target addresses on the probed ports, and ICMP/ICMPv6 unreachable, time
//! exceeded and echo replies (userspace keeps the ICMP that is about the probe).
//! The program runs on packets starting at the IP header (AF_PACKET SOCK_DGRAM).

use std::net::IpAddr;

/// One instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcodes (linux/filter.h).
const LD_B_ABS: u16 = 0x30;
const LD_H_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const LD_H_IND: u16 = 0x48;
const LD_B_IND: u16 = 0x50;
const LDX_B_MSH: u16 = 0xb1;
const ALU_RSH_K: u16 = 0x74;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    Label(usize),
}

#[derive(Debug, Clone, Copy)]
struct Op {
    code: u16,
    k: u32,
    jt: To,
    jf: To,
}

#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn here(&mut self, l: usize) {
        self.labels[l] = Some(self.ops.len());
    }
    fn op(&mut self, code: u16, k: u32) {
        self.ops.push(Op { code, k, jt: To::Next, jf: To::Next });
    }
    fn jeq(&mut self, k: u32, jt: To, jf: To) {
        self.ops.push(Op { code: JEQ_K, k, jt, jf });
    }
    /// Unconditional jump (the offset goes in k once labels are placed).
    fn ja(&mut self, l: usize) {
        self.ops.push(Op { code: JA, k: 0, jt: To::Label(l), jf: To::Next });
    }
    fn finish(self) -> Result<Vec<Insn>, BpfError> {
        let mut out = Vec::with_capacity(self.ops.len());
        for (i, op) in self.ops.iter().enumerate() {
            let off = |t: To| -> Result<u8, BpfError> {
                match t {
                    To::Next => Ok(0),
                    To::Label(l) => {
                        let at = self.labels[l].ok_or(BpfError::Label)?;
                        let d = at.checked_sub(i + 1).ok_or(BpfError::Backwards)?;
                        u8::try_from(d).map_err(|_| BpfError::TooFar)
                    }
                }
            };
            if op.code == JA {
                out.push(Insn { code: JA, jt: 0, jf: 0, k: u32::from(off(op.jt)?) });
                continue;
            }
            out.push(Insn { code: op.code, jt: off(op.jt)?, jf: off(op.jf)?, k: op.k });
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    #[error("BPF program refers to a label never placed")]
    Label,
    #[error("BPF program jumps backwards")]
    Backwards,
    #[error("BPF program too long for 8-bit jumps (too many target addresses)")]
    TooFar,
}

/// Accept: snap length.
const ACCEPT: u32 = 0xffff;

/// Build the filter for `targets` and `ports`.
pub fn flow_filter(targets: &[IpAddr], ports: &[u16]) -> Result<Vec<Insn>, BpfError> {
    let mut a = Asm::default();
    let (accept, drop, v4, v6, tcp4, tcp6, icmp4, icmp6) =
        (a.label(), a.label(), a.label(), a.label(), a.label(), a.label(), a.label(), a.label());

    a.op(LD_B_ABS, 0);
    a.op(ALU_RSH_K, 4);
    a.jeq(4, To::Label(v4), To::Next);
    a.jeq(6, To::Label(v6), To::Label(drop));

    // IPv4
    a.here(v4);
    a.op(LD_B_ABS, 9);
    a.jeq(1, To::Label(icmp4), To::Next);
    a.jeq(6, To::Label(tcp4), To::Label(drop));
    a.here(icmp4);
    a.op(LDX_B_MSH, 0);
    a.op(LD_B_IND, 0);
    a.jeq(0, To::Label(accept), To::Next); // echo reply
    a.jeq(3, To::Label(accept), To::Next); // destination unreachable
    a.jeq(11, To::Label(accept), To::Label(drop)); // time exceeded
    a.here(tcp4);
    // (saddr is a target and sport a probed port) or (daddr is a target and dport one);
    // on loopback both hold for different packets of the same flow.
    let v4s: Vec<u32> = targets
        .iter()
        .filter_map(|t| match t {
            IpAddr::V4(v) => Some(u32::from(*v)),
            _ => None,
        })
        .collect();
    let (s4, d4, dp4) = (a.label(), a.label(), a.label());
    a.op(LD_W_ABS, 12);
    for t in &v4s {
        a.jeq(*t, To::Label(s4), To::Next);
    }
    a.ja(d4);
    a.here(s4);
    a.op(LDX_B_MSH, 0);
    a.op(LD_H_IND, 0);
    for p in ports {
        a.jeq(u32::from(*p), To::Label(accept), To::Next);
    }
    a.here(d4);
    a.op(LD_W_ABS, 16);
    for t in &v4s {
        a.jeq(*t, To::Label(dp4), To::Next);
    }
    a.op(RET_K, 0);
    a.here(dp4);
    a.op(LDX_B_MSH, 0);
    a.op(LD_H_IND, 2);
    for p in ports {
        a.jeq(u32::from(*p), To::Label(accept), To::Next);
    }
    a.op(RET_K, 0);

    // IPv6 (TCP or ICMPv6 directly after the fixed header)
    a.here(v6);
    a.op(LD_B_ABS, 6);
    a.jeq(58, To::Label(icmp6), To::Next);
    a.jeq(6, To::Label(tcp6), To::Label(drop));
    a.here(icmp6);
    a.op(LD_B_ABS, 40);
    a.jeq(1, To::Label(accept), To::Next);
    a.jeq(3, To::Label(accept), To::Next);
    a.jeq(129, To::Label(accept), To::Label(drop));
    a.here(tcp6);
    let v6s: Vec<[u8; 16]> = targets
        .iter()
        .filter_map(|t| match t {
            IpAddr::V6(v) => Some(v.octets()),
            _ => None,
        })
        .collect();
    for (addr_off, port_off, last) in [(8u32, 40u32, false), (24u32, 42u32, true)] {
        let (hit, miss) = (a.label(), a.label());
        for t in &v6s {
            let next = a.label();
            for w in 0..4u32 {
                let i = (w * 4) as usize;
                let word = u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
                a.op(LD_W_ABS, addr_off + w * 4);
                a.jeq(word, if w == 3 { To::Label(hit) } else { To::Next }, To::Label(next));
            }
            a.here(next);
        }
        a.ja(miss);
        a.here(hit);
        a.op(LD_H_ABS, port_off);
        for p in ports {
            a.jeq(u32::from(*p), To::Label(accept), To::Next);
        }
        a.here(miss);
        if last {
            a.op(RET_K, 0);
        }
    }

    a.here(accept);
    a.op(RET_K, ACCEPT);
    a.here(drop);
    a.op(RET_K, 0);
    a.finish()
}

/// A tcpdump-like description of what the filter lets through.
pub fn describe(targets: &[IpAddr], ports: &[u16]) -> String {
    let hosts: Vec<String> = targets.iter().map(|t| format!("host {t}")).collect();
    let ports: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
    format!(
        "(tcp and ({}) and ({})) or icmp[0] in (0,3,11) or icmp6[0] in (1,3,129)",
        hosts.join(" or "),
        ports.join(" or ")
    )
}

/// Run a program the way the kernel does (the subset `flow_filter` emits); for tests and
/// to check a program before attaching it.
pub fn run(prog: &[Insn], pkt: &[u8]) -> u32 {
    let (mut a, mut x): (u32, u32) = (0, 0);
    let mut pc = 0usize;
    let ld = |off: usize, n: usize| -> Option<u32> {
        let b = pkt.get(off..off + n)?;
        Some(b.iter().fold(0u32, |acc, v| (acc << 8) | u32::from(*v)))
    };
    while let Some(i) = prog.get(pc) {
        pc += 1;
        let k = i.k as usize;
        match i.code {
            LD_B_ABS | LD_H_ABS | LD_W_ABS => {
                let n = match i.code {
                    LD_B_ABS => 1,
                    LD_H_ABS => 2,
                    _ => 4,
                };
                match ld(k, n) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LD_H_IND | LD_B_IND => {
                let n = if i.code == LD_H_IND { 2 } else { 1 };
                match ld(x as usize + k, n) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            LDX_B_MSH => match pkt.get(k) {
                Some(v) => x = u32::from(v & 0x0f) * 4,
                None => return 0,
            },
            ALU_RSH_K => a >>= i.k,
            JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            JA => pc += i.k as usize,
            RET_K => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{ADMIN_PROHIBITED, RST_V4, SYN_V4};

    #[test]
    fn filter_keeps_the_flow_only() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let prog = flow_filter(&[lo], &[6379]).unwrap();
        assert_eq!(run(&prog, SYN_V4), ACCEPT);
        assert_eq!(run(&prog, RST_V4), ACCEPT);
        assert_eq!(run(&prog, ADMIN_PROHIBITED), ACCEPT);
        let other = flow_filter(&[lo], &[80]).unwrap();
        assert_eq!(run(&other, SYN_V4), 0);
        let elsewhere = flow_filter(&["10.0.0.1".parse().unwrap()], &[6379]).unwrap();
        assert_eq!(run(&elsewhere, RST_V4), 0);
        assert_eq!(run(&prog, &[0x45, 0, 0]), 0);
    }

    #[test]
    fn filter_ipv6() {
        let t: IpAddr = "fd77::2".parse().unwrap();
        let prog = flow_filter(&[t, "10.0.0.1".parse().unwrap()], &[7000]).unwrap();
        let mut p = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        p.extend("fd77::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend("fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        p.extend([0x9c, 0x40, 0x1b, 0x58, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0]);
        assert_eq!(run(&prog, &p), ACCEPT);
        p[24 + 15] = 3; // to fd77::3
        assert_eq!(run(&prog, &p), 0);
    }
}
