//! The path probe's bytes: the TCP SYN it sends and how an answer is matched back to the
//! probe it answers (pure; tested against recorded packets).
//!
//! Each TTL gets its own source port and sequence number. A SYN-ACK or RST names them in
//! its destination port and acknowledgement number; an ICMP error quotes the SYN's IP
//! header and first 8 TCP bytes (ports and sequence number), as TCP traceroute tools use.

use crate::packet::{self, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP};
use conndoc_facts::path::{HopAnswer, UnreachableKind};
use conndoc_facts::Ttl;
use std::net::IpAddr;

/// One probe as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub ttl: Ttl,
    pub source_port: u16,
    pub seq: u32,
}

/// What one received packet says about one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Index into the probes slice given to [`match_answer`].
    pub probe: usize,
    pub from: IpAddr,
    pub reply_ttl: Ttl,
    pub answer: HopAnswer,
}

/// A TCP SYN (with an MSS option, like a connect()'s) from `src:sport` to `dst:dport`,
/// checksum filled in over the pseudo-header of either family.
pub fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(24);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes()); // ack
    t.push(6 << 4); // data offset: 6 words (20 + MSS option)
    t.push(0x02); // SYN
    t.extend_from_slice(&64240u16.to_be_bytes()); // window
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let mss: u16 = if src.is_ipv6() { 1440 } else { 1460 };
    t.extend_from_slice(&[2, 4]);
    t.extend_from_slice(&mss.to_be_bytes());
    let c = tcp_checksum(src, dst, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

fn tcp_checksum(src: IpAddr, dst: IpAddr, seg: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + seg.len());
    let len = u32::try_from(seg.len()).unwrap_or(0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, PROTO_TCP]);
            pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            let o = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            pseudo.extend_from_slice(&o(s));
            pseudo.extend_from_slice(&o(d));
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, PROTO_TCP]);
        }
    }
    pseudo.extend_from_slice(seg);
    packet::checksum(&pseudo)
}

/// Match one received packet (starting at the IP header) to the probe it answers, if any:
/// a SYN-ACK/RST from `target:port` to a probe's source port acknowledging its sequence
/// number, or an ICMP time-exceeded/unreachable quoting a probe's ports and sequence.
pub fn match_answer(data: &[u8], target: IpAddr, port: u16, probes: &[Sent]) -> Option<Answer> {
    let h = packet::ip_header(data).ok()?;
    let body = data.get(h.payload_offset..)?;
    match h.protocol {
        PROTO_TCP => {
            if h.source != target || body.len() < 14 {
                return None;
            }
            let sport = u16::from_be_bytes([body[0], body[1]]);
            let dport = u16::from_be_bytes([body[2], body[3]]);
            let ack = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
            let flags = body[13];
            let (syn, rst, ackf) = (flags & 0x02 != 0, flags & 0x04 != 0, flags & 0x10 != 0);
            if sport != port {
                return None;
            }
            let i = probes.iter().position(|p| p.source_port == dport)?;
            // An RST without ACK carries no acknowledgement to check.
            if ackf && ack != probes[i].seq.wrapping_add(1) {
                return None;
            }
            let answer = if rst {
                HopAnswer::Rst
            } else if syn && ackf {
                HopAnswer::SynAck
            } else {
                return None;
            };
            Some(Answer { probe: i, from: h.source, reply_ttl: h.ttl, answer })
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let v6 = h.protocol == PROTO_ICMPV6;
            if body.len() < 8 {
                return None;
            }
            let (ty, code) = (body[0], body[1]);
            let answer = match (v6, ty) {
                (false, 11) | (true, 3) => HopAnswer::TimeExceeded,
                _ => {
                    let reason = UnreachableKind::classify(v6, ty, code)?;
                    HopAnswer::Unreachable { reason, icmp_type: ty, code }
                }
            };
            let quoted = &body[8..];
            let inner = packet::ip_header(quoted).ok()?;
            if inner.destination != target || inner.protocol != PROTO_TCP {
                return None;
            }
            let t = quoted.get(inner.payload_offset..inner.payload_offset + 8)?;
            let sport = u16::from_be_bytes([t[0], t[1]]);
            let dport = u16::from_be_bytes([t[2], t[3]]);
            let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            if dport != port {
                return None;
            }
            let i = probes.iter().position(|p| p.source_port == sport && p.seq == seq)?;
            Some(Answer { probe: i, from: h.source, reply_ttl: h.ttl, answer })
        }
        _ => None,
    }
}

/// The local TCP port a packet belongs to: a TCP segment's port on conndoc's side (the
/// destination port of one from a target, else the source port), or the source port an
/// ICMP error quotes.
pub fn local_port(data: &[u8], targets: &[IpAddr]) -> Option<u16> {
    let h = packet::ip_header(data).ok()?;
    let body = data.get(h.payload_offset..)?;
    let ports = |t: &[u8]| -> Option<(u16, u16)> {
        Some((u16::from_be_bytes([*t.first()?, *t.get(1)?]), u16::from_be_bytes([*t.get(2)?, *t.get(3)?])))
    };
    match h.protocol {
        PROTO_TCP => {
            let (s, d) = ports(body)?;
            Some(if targets.contains(&h.source) { d } else { s })
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let quoted = body.get(8..)?;
            let inner = packet::ip_header(quoted).ok()?;
            if inner.protocol != PROTO_TCP {
                return None;
            }
            Some(ports(quoted.get(inner.payload_offset..)?)?.0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn syn_checksum_verifies_over_the_pseudo_header() {
        for (s, d) in [("10.0.0.1", "10.0.1.2"), ("fd00::1", "fd01::2")] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let seg = syn(s, d, 40000, 7000, 0x1234_5678);
            assert_eq!(seg.len(), 24);
            assert_eq!(seg[13], 0x02);
            // Summing a segment with a correct checksum over the pseudo-header gives 0.
            assert_eq!(tcp_checksum(s, d, &seg), 0);
        }
    }

    // Recorded with tcpdump in a lab namespace (client 10.9.0.1, three routers, target
    // 10.9.3.2:7000): a TTL-1 probe, the first router's time exceeded quoting it, and a
    // TTL-4 probe with the target's SYN-ACK.
    const PROBE_TTL1: &str = "4500002ce13840000106817f0a0900010a090302936b1b589af29f10000000006002faf09d5a0000020405b4";
    const TIME_EXCEEDED: &str = "45c0004835b6000040012f2f0a0900fe0a0900010b000c33000000004500002ce13840000106817f0a0900010a090302936b1b589af29f10000000006002faf09d5a0000020405b4";
    const PROBE_TTL4: &str = "4500002ce13b400004067e7c0a0900010a09030284fd1b589b229f10000000006002faf0ab980000020405b4";
    const SYN_ACK: &str = "4500002c000040003d0626b80a0903020a0900011b5884fd708550629b229f116012faf017330000020405b4";

    fn recorded_probes() -> Vec<Sent> {
        vec![
            Sent { ttl: Ttl(1), source_port: 0x936b, seq: 0x9af2_9f10 },
            Sent { ttl: Ttl(4), source_port: 0x84fd, seq: 0x9b22_9f10 },
        ]
    }

    #[test]
    fn our_syn_is_byte_for_byte_what_was_sent() {
        let sent = hex(PROBE_TTL1);
        let seg = syn("10.9.0.1".parse().unwrap(), "10.9.3.2".parse().unwrap(), 0x936b, 7000, 0x9af2_9f10);
        assert_eq!(&sent[20..], &seg[..]);
        let sent = hex(PROBE_TTL4);
        assert_eq!(sent[8], 4, "TTL");
    }

    #[test]
    fn time_exceeded_matches_its_probe_by_the_quoted_header() {
        let target: IpAddr = "10.9.3.2".parse().unwrap();
        let a = match_answer(&hex(TIME_EXCEEDED), target, 7000, &recorded_probes()).unwrap();
        assert_eq!(a.probe, 0);
        assert_eq!(a.from, "10.9.0.254".parse::<IpAddr>().unwrap());
        assert_eq!(a.answer, HopAnswer::TimeExceeded);
        assert_eq!(a.reply_ttl, Ttl(64));
        // Another sequence number on the same port is not our probe.
        let other = [Sent { ttl: Ttl(1), source_port: 0x936b, seq: 1 }];
        assert!(match_answer(&hex(TIME_EXCEEDED), target, 7000, &other).is_none());
        // Nor is a probe to another port.
        assert!(match_answer(&hex(TIME_EXCEEDED), target, 7001, &recorded_probes()).is_none());
        assert_eq!(local_port(&hex(TIME_EXCEEDED), &[target]), Some(0x936b));
    }

    #[test]
    fn syn_ack_matches_by_port_and_acknowledgement() {
        let target: IpAddr = "10.9.3.2".parse().unwrap();
        let a = match_answer(&hex(SYN_ACK), target, 7000, &recorded_probes()).unwrap();
        assert_eq!((a.probe, a.answer, a.reply_ttl), (1, HopAnswer::SynAck, Ttl(61)));
        let wrong_seq = [Sent { ttl: Ttl(4), source_port: 0x84fd, seq: 5 }];
        assert!(match_answer(&hex(SYN_ACK), target, 7000, &wrong_seq).is_none());
        assert_eq!(local_port(&hex(SYN_ACK), &[target]), Some(0x84fd));
        assert_eq!(local_port(&hex(PROBE_TTL4), &[target]), Some(0x84fd));
    }

    // IPv6, recorded the same way (client fd77:1::1, one router fd77:1::2, target
    // fd77:2::2:7000 refusing): the hop-limit-1 probe, the router's ICMPv6 time exceeded
    // quoting it, the hop-limit-2 probe and the target's RST,ACK.
    const PROBE6_HL1: &str = "60074b9700180601fd770001000000000000000000000001fd770002000000000000000000000002a32f1b584b453f83000000006002faf059040000020405a0";
    const TIME_EXCEEDED6: &str = "600e154000483a40fd770001000000000000000000000002fd77000100000000000000000000000103004fef0000000060074b9700180601fd770001000000000000000000000001fd770002000000000000000000000002a32f1b584b453f83000000006002faf059040000020405a0";
    const RST6: &str = "600357de0014063ffd770002000000000000000000000002fd7700010000000000000000000000011b58c491000000004b553f8450140000fb0f0000";

    #[test]
    fn ipv6_probe_time_exceeded_and_rst() {
        let (src, target): (IpAddr, IpAddr) = ("fd77:1::1".parse().unwrap(), "fd77:2::2".parse().unwrap());
        let probes = [
            Sent { ttl: Ttl(1), source_port: 0xa32f, seq: 0x4b45_3f83 },
            Sent { ttl: Ttl(2), source_port: 0xc491, seq: 0x4b55_3f83 },
        ];
        let sent = hex(PROBE6_HL1);
        assert_eq!(&sent[40..], &syn(src, target, 0xa32f, 7000, 0x4b45_3f83)[..]);
        let a = match_answer(&hex(TIME_EXCEEDED6), target, 7000, &probes).unwrap();
        assert_eq!((a.probe, a.answer), (0, HopAnswer::TimeExceeded));
        assert_eq!(a.from, "fd77:1::2".parse::<IpAddr>().unwrap());
        let r = match_answer(&hex(RST6), target, 7000, &probes).unwrap();
        assert_eq!((r.probe, r.answer, r.reply_ttl), (1, HopAnswer::Rst, Ttl(63)));
        assert_eq!(local_port(&hex(TIME_EXCEEDED6), &[target]), Some(0xa32f));
    }

    #[test]
    fn unreachable_is_classified_from_type_and_code() {
        // The recorded time exceeded turned into an admin-prohibited unreachable (type 3
        // code 13): same quote, other kind.
        let mut b = hex(TIME_EXCEEDED);
        b[20] = 3;
        b[21] = 13;
        let target: IpAddr = "10.9.3.2".parse().unwrap();
        let a = match_answer(&b, target, 7000, &recorded_probes()).unwrap();
        assert_eq!(
            a.answer,
            HopAnswer::Unreachable { reason: UnreachableKind::AdminProhibited, icmp_type: 3, code: 13 }
        );
    }

    #[test]
    fn unrelated_packets_match_nothing() {
        let probes = [Sent { ttl: Ttl(1), source_port: 40000, seq: 7 }];
        assert!(match_answer(&[], "10.0.0.1".parse().unwrap(), 7000, &probes).is_none());
        assert!(match_answer(&[0x45, 0, 0], "10.0.0.1".parse().unwrap(), 7000, &probes).is_none());
    }
}
