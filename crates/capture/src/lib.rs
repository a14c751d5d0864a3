//! Packet evidence during a probe: AF_PACKET capture with a BPF filter, TTLs, ICMP, pcap output.
//!
//! [`Capture::start`] opens the capture (filter attached before anything is queued) and
//! sends one ICMP echo to each target for the TTL baseline; the caller connects; then
//! [`Capture::finish`] reads what was queued, waits briefly for missing echo replies, and
//! summarises per probed address ([`summarize`] is pure).

pub mod bpf;
pub mod packet;
pub mod path;
pub mod pcap;
mod sys;

use conndoc_facts::capture::{
    BaselineSource, CaptureFacts, Direction, FlowSeen, IcmpReply, PacketSeen, ReplySeen, TtlBaseline,
};
use conndoc_facts::{Micros, Port, Ttl};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No CAP_NET_RAW: the caller records a skipped check.
    #[error("opening an AF_PACKET capture socket: {0} (needs CAP_NET_RAW)")]
    Permission(std::io::Error),
    #[error("{op}: {source}")]
    Io { op: &'static str, source: std::io::Error },
    #[error("building the capture filter: {0}")]
    Bpf(#[from] bpf::BpfError),
    #[error("writing the pcap file: {error}")]
    Pcap { path: String, error: conndoc_files::WriteError },
}

/// At most this many packets are kept (the filter keeps one flow per address; a long
/// retransmitting probe stays far below it).
const MAX_PACKETS: usize = 2000;

pub struct Capture {
    sock: sys::PacketSocket,
    targets: Vec<IpAddr>,
    port: u16,
    started_wall: SystemTime,
    echo_id: u16,
    echo_sent: Vec<IpAddr>,
    lo_index: i32,
    filter: String,
    /// Packets read so far (kept while waiting for echo replies).
    raw: Vec<(sys::Received, Vec<u8>)>,
    /// Local ports of the path stage's probes: their packets are not the connect's.
    ignored_ports: Vec<u16>,
}

impl Capture {
    /// Start capturing the flows to `targets` on `port`, in the calling thread's network
    /// namespace, and send the baseline echo requests.
    pub fn start(targets: &[IpAddr], port: u16) -> Result<Capture, CaptureError> {
        let prog = bpf::flow_filter(targets, &[port])?;
        let sock = sys::PacketSocket::open(&prog).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EACCES) {
                CaptureError::Permission(e)
            } else {
                CaptureError::Io { op: "opening the AF_PACKET capture socket", source: e }
            }
        })?;
        let echo_id = (std::process::id() as u16) ^ 0x5a5a;
        let mut c = Capture {
            sock,
            targets: targets.to_vec(),
            port,
            started_wall: SystemTime::now(),
            echo_id,
            echo_sent: Vec::new(),
            lo_index: sys::loopback_index(),
            filter: bpf::describe(targets, &[port]),
            raw: Vec::new(),
            ignored_ports: Vec::new(),
        };
        for t in targets {
            if send_echo(*t, echo_id).is_ok() {
                c.echo_sent.push(*t);
            }
        }
        Ok(c)
    }

    /// Leave out packets whose local port is one of these (the path stage's probes, which
    /// ran beside the connect), from the facts and the pcap file.
    pub fn ignore_local_ports(&mut self, ports: &[u16]) {
        self.ignored_ports.extend_from_slice(ports);
    }

    fn drain(&mut self) -> Result<(), CaptureError> {
        let mut buf = vec![0u8; 65536];
        while self.raw.len() < MAX_PACKETS {
            match self.sock.try_recv(&mut buf) {
                Ok(Some(r)) => {
                    // Loopback shows each packet twice (out and in): keep the incoming copy.
                    if r.ifindex == self.lo_index && r.pkttype == sys::PACKET_OUTGOING {
                        continue;
                    }
                    if path::wire::local_port(&buf[..r.len], &self.targets)
                        .is_some_and(|p| self.ignored_ports.contains(&p))
                    {
                        continue;
                    }
                    let data = buf[..r.len].to_vec();
                    self.raw.push((r, data));
                }
                Ok(None) => break,
                Err(source) => return Err(CaptureError::Io { op: "reading the capture socket", source }),
            }
        }
        Ok(())
    }

    fn echo_replied(&self, t: &IpAddr) -> bool {
        self.raw
            .iter()
            .any(|(_, d)| matches!(parse(d, &self.targets, self.port, self.echo_id), Some((p, true)) if &p.source == t))
    }

    /// Time from our first SYN to the first RST from `t`, when an RST came.
    fn rst_round_trip(&self, t: &IpAddr) -> Option<Duration> {
        let mut syn_at = None;
        for (r, d) in &self.raw {
            let Some((p, _)) = parse(d, &self.targets, self.port, self.echo_id) else { continue };
            let Some(tcp) = &p.tcp else { continue };
            let at = Duration::from_secs(u64::try_from(r.ts_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(r.ts_usec).unwrap_or(0));
            if p.direction == Direction::Sent && p.destination == *t && tcp.syn && syn_at.is_none() {
                syn_at = Some(at);
            }
            if p.direction == Direction::Received && p.source == *t && tcp.rst {
                return Some(syn_at.map(|s| at.saturating_sub(s)).unwrap_or_default());
            }
        }
        None
    }

    /// Stop: read everything queued, wait (at most `grace`, and only when an RST needs a
    /// baseline) for echo replies still missing,
    /// summarise, and write `pcap` when asked.
    /// A pcap file that cannot be written does not lose the evidence: its error comes back
    /// beside the facts.
    pub fn finish(
        mut self,
        grace: Duration,
        pcap_path: Option<&Path>,
    ) -> Result<(CaptureFacts, Option<CaptureError>), CaptureError> {
        self.drain()?;
        // The baseline only matters to judge an RST, so wait only for targets that sent
        // one, and no longer than a few times the SYN→RST round trip (at least 20 ms).
        let wait = match self.echo_sent.iter().filter_map(|t| self.rst_round_trip(t)).max() {
            Some(rtt) => grace.min((rtt * 3).max(Duration::from_millis(20))),
            None => Duration::ZERO,
        };
        let deadline = Instant::now() + wait;
        while self.echo_sent.iter().any(|t| !self.echo_replied(t) && self.rst_round_trip(t).is_some()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            match self.sock.wait(ms) {
                Ok(true) => self.drain()?,
                Ok(false) => {}
                Err(source) => return Err(CaptureError::Io { op: "waiting on the capture socket", source }),
            }
        }
        let kernel_drops = self.sock.drops().unwrap_or(0);

        let start_us = self.started_wall.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        let mut packets = Vec::new();
        let mut echo_from = Vec::new();
        let mut records = Vec::new();
        for (r, data) in &self.raw {
            records.push(pcap::Record {
                ts_sec: u32::try_from(r.ts_sec).unwrap_or(0),
                ts_usec: u32::try_from(r.ts_usec).unwrap_or(0),
                data: data.clone(),
            });
            let Some((mut p, our_echo)) = parse(data, &self.targets, self.port, self.echo_id) else { continue };
            let at = (r.ts_sec * 1_000_000 + r.ts_usec - start_us).max(0);
            p.at_us = Micros(at as u64);
            if our_echo {
                echo_from.push((p.source, p.ttl));
            }
            packets.push(p);
        }
        let port = Port::new(self.port).ok_or_else(|| CaptureError::Io {
            op: "summarising the capture",
            source: std::io::Error::other("port 0"),
        })?;
        let (flows, baselines) = summarize(&packets, &echo_from, &self.targets, port);
        let mut facts =
            CaptureFacts { filter: self.filter.clone(), flows, baselines, packets, pcap_file: None, kernel_drops };
        let mut pcap_error = None;
        if let Some(path) = pcap_path {
            let written = conndoc_files::create_private(path).and_then(|f| {
                pcap::write(std::io::BufWriter::new(f), &records)
                    .map_err(|error| conndoc_files::WriteError::Io { path: path.to_path_buf(), error })
            });
            match written {
                Ok(()) => facts.pcap_file = Some(path.display().to_string()),
                Err(error) => pcap_error = Some(CaptureError::Pcap { path: path.display().to_string(), error }),
            }
        }
        Ok((facts, pcap_error))
    }
}

/// Send one ICMP (v6) echo request from a raw socket; the reply's TTL is the baseline.
fn send_echo(to: IpAddr, id: u16) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, proto, v6) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, false),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, true),
    };
    let s = Socket::new(domain, Type::RAW, Some(proto))?;
    s.send_to(&packet::echo_request(v6, id, 1), &SocketAddr::new(to, 0).into())?;
    Ok(())
}

/// Summarise one captured packet; the bool says it is a reply to our own echo request.
/// Packets of no interest (other ICMP, malformed) give None.
pub fn parse(data: &[u8], targets: &[IpAddr], port: u16, echo_id: u16) -> Option<(PacketSeen, bool)> {
    let h = packet::ip_header(data).ok()?;
    let body = data.get(h.payload_offset..)?;
    let mut p = PacketSeen {
        at_us: Micros(0),
        direction: Direction::Received,
        source: h.source,
        destination: h.destination,
        ttl: h.ttl,
        tcp: None,
        icmp: None,
    };
    let mut our_echo = false;
    match h.protocol {
        packet::PROTO_TCP => {
            let t = packet::tcp(body).ok()?;
            if t.destination_port == port && targets.contains(&h.destination) && !(t.rst && t.source_port == port) {
                p.direction = Direction::Sent;
            }
            p.tcp = Some(t);
        }
        packet::PROTO_ICMP | packet::PROTO_ICMPV6 => {
            let (i, id) = packet::icmp(body, h.protocol == packet::PROTO_ICMPV6).ok()?;
            match id {
                Some(id) if id == echo_id => our_echo = true,
                Some(_) => return None, // someone else's ping
                None => {}
            }
            p.icmp = Some(i);
        }
        _ => return None,
    }
    Some((p, our_echo))
}

/// Per probed address: SYNs sent, what came back (SYN-ACK, RST, ICMP error) with TTLs,
/// and the host's own TTL from our echo replies or, failing that, a SYN-ACK it sent.
pub fn summarize(
    packets: &[PacketSeen],
    echo_replies: &[(IpAddr, Ttl)],
    targets: &[IpAddr],
    port: Port,
) -> (Vec<FlowSeen>, Vec<TtlBaseline>) {
    let mut flows = Vec::new();
    let mut baselines = Vec::new();
    let pn = port.get();
    for addr in targets {
        let mut f = FlowSeen { address: *addr, port, syns_sent: 0, syn_ack_ttl: None, rst: None, icmp: None };
        for p in packets {
            if let Some(t) = &p.tcp {
                if p.direction == Direction::Sent && p.destination == *addr && t.destination_port == pn {
                    if t.syn && !t.ack {
                        f.syns_sent += 1;
                    }
                } else if p.direction == Direction::Received && p.source == *addr && t.source_port == pn {
                    if t.syn && t.ack && f.syn_ack_ttl.is_none() {
                        f.syn_ack_ttl = Some(p.ttl);
                    }
                    if t.rst && f.rst.is_none() {
                        f.rst = Some(ReplySeen { from: p.source, ttl: p.ttl });
                    }
                }
            }
            if let Some(i) = &p.icmp {
                let about_us = i.about_destination == Some(*addr) && i.about_port.is_none_or(|x| x == pn);
                if about_us && f.icmp.is_none() {
                    f.icmp = Some(IcmpReply { from: p.source, ttl: p.ttl, icmp: i.clone() });
                }
            }
        }
        flows.push(f);
        if let Some((_, ttl)) = echo_replies.iter().find(|(a, _)| a == addr) {
            baselines.push(TtlBaseline {
                address: *addr,
                source: BaselineSource::IcmpEchoReply,
                port: None,
                ttl: *ttl,
            });
        } else if let Some((p, t)) = packets.iter().find_map(|p| {
            let t = p.tcp.as_ref()?;
            (p.direction == Direction::Received && p.source == *addr && t.syn && t.ack).then_some((p, t))
        }) {
            baselines.push(TtlBaseline {
                address: *addr,
                source: BaselineSource::SynAck,
                port: Port::new(t.source_port),
                ttl: p.ttl,
            });
        }
    }
    (flows, baselines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tests::{ADMIN_PROHIBITED, RST_V4, SYN_V4};

    #[test]
    fn summarises_refused_flow() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let pk: Vec<PacketSeen> = [SYN_V4, RST_V4].iter().map(|d| parse(d, &[lo], 6379, 1).unwrap().0).collect();
        assert_eq!(pk[0].direction, Direction::Sent);
        assert_eq!(pk[1].direction, Direction::Received);
        let (flows, baselines) = summarize(&pk, &[(lo, Ttl(64))], &[lo], Port::new(6379).unwrap());
        assert_eq!(flows[0].syns_sent, 1);
        assert_eq!(flows[0].rst, Some(ReplySeen { from: lo, ttl: Ttl(64) }));
        assert_eq!(baselines[0].ttl, Ttl(64));
        assert_eq!(baselines[0].source, BaselineSource::IcmpEchoReply);
    }

    #[test]
    fn icmp_error_is_tied_to_its_flow() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let (p, _) = parse(ADMIN_PROHIBITED, &[lo], 6380, 1).unwrap();
        let (flows, baselines) = summarize(std::slice::from_ref(&p), &[], &[lo], Port::new(6380).unwrap());
        let i = flows[0].icmp.as_ref().unwrap();
        assert_eq!((i.icmp.icmp_type, i.icmp.code), (3, 13));
        assert!(baselines.is_empty());
        // …and not to another port's flow.
        let (flows, _) = summarize(&[p], &[], &[lo], Port::new(6379).unwrap());
        assert!(flows[0].icmp.is_none());
    }
}
