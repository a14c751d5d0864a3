//! The path stage's gatherer: TCP SYNs to the target port with TTL (hop limit) 1..=N, all
//! in flight at once from a raw socket, and the answers (ICMP time exceeded/unreachable,
//! SYN-ACK, RST) read from an AF_PACKET capture and matched back to their probe.
//!
//! Each probe's source port is reserved by a bound (never listening) TCP socket, so a
//! SYN-ACK that comes back finds no socket and the kernel answers it with an RST: the
//! target's half-open connection is closed politely, and no other program gets the port.

pub mod wire;

use crate::{bpf, sys};
use conndoc_facts::path::{Hop, HopAnswer, PathTrace, PathTrigger};
use conndoc_facts::{Micros, Port, Ttl};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Probes per trace: TTL 1..=30, like traceroute's default.
pub const MAX_HOPS: u8 = 30;
/// At most this many packets are read per trace (answers plus anything else the filter
/// lets through).
const MAX_PACKETS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No CAP_NET_RAW: the caller records a skipped check.
    #[error("{op} for the path probe to {target}: {source} (needs CAP_NET_RAW)")]
    Permission { op: &'static str, target: IpAddr, source: io::Error },
    #[error("{op} for the path probe to {target}: {source}")]
    Io { op: &'static str, target: IpAddr, source: io::Error },
    #[error("building the path probe's capture filter: {0}")]
    Bpf(#[from] bpf::BpfError),
}

/// One trace to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: IpAddr,
    pub port: Port,
    pub trigger: PathTrigger,
    pub max_hops: u8,
    /// The stage ends here whatever is still missing.
    pub deadline: Instant,
}

/// A finished trace and the local ports its probes used (so the connect's own capture
/// can leave their packets out).
#[derive(Debug, Clone)]
pub struct Traced {
    pub trace: PathTrace,
    pub source_ports: Vec<u16>,
}

fn err(op: &'static str, target: IpAddr) -> impl Fn(io::Error) -> PathError {
    move |source| {
        if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            PathError::Permission { op, target, source }
        } else {
            PathError::Io { op, target, source }
        }
    }
}

fn wall_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Send the probes and collect answers until every TTL is answered, the path is known up
/// to the first end point, or waiting is over: once `keep_waiting` says no (the connect
/// this stage runs beside has ended, or at once for a stage run on its own), one more
/// round (4× the slowest answer, at least 100 ms) after the last answer; never past the
/// deadline.
///
/// `located` is called once, as soon as the trace has nothing more to learn: it is
/// resolved, or some hops answered and the rest stayed silent for a whole round since the
/// last answer (a drop located) — the connect beside it can stop waiting then, and the
/// trace ends as soon as it does, that round already waited.
pub fn trace(req: &Request, keep_waiting: &dyn Fn() -> bool, located: &dyn Fn()) -> Result<Traced, PathError> {
    let started = Instant::now();
    let target = req.target;
    let port = req.port.get();
    let dst = SocketAddr::new(target, port);
    // The source address the kernel would pick for a connect (needed for the checksum).
    let src = {
        let any: SocketAddr = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
        let u = std::net::UdpSocket::bind(any).map_err(err("binding a UDP socket", target))?;
        u.connect(dst).map_err(err("looking up the route", target))?;
        u.local_addr().map_err(err("reading the route's source address", target))?.ip()
    };
    let prog = bpf::flow_filter(&[target], &[port])?;
    let cap = sys::PacketSocket::open(&prog).map_err(err("opening an AF_PACKET capture socket", target))?;
    let domain = if target.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let raw = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).map_err(err("opening a raw TCP socket", target))?;
    raw.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(err("binding the raw socket", target))?;

    let hops = req.max_hops.clamp(1, MAX_HOPS);
    let mut reserved = Vec::with_capacity(usize::from(hops));
    let mut probes = Vec::with_capacity(usize::from(hops));
    let seq_base = (wall_us() as u32) ^ (std::process::id() << 12);
    for ttl in 1..=hops {
        let s =
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(err("reserving a source port", target))?;
        s.bind(&SockAddr::from(SocketAddr::new(src, 0))).map_err(err("reserving a source port", target))?;
        let p = s.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).ok_or_else(|| PathError::Io {
            op: "reading a reserved port",
            target,
            source: io::Error::other("no port"),
        })?;
        reserved.push(s);
        probes.push(wire::Sent { ttl: Ttl(ttl), source_port: p, seq: seq_base.wrapping_add(u32::from(ttl) << 20) });
    }

    let mut sent_at = vec![0i64; probes.len()];
    let to = SockAddr::from(SocketAddr::new(target, 0));
    for (i, p) in probes.iter().enumerate() {
        let set = if target.is_ipv6() {
            raw.set_unicast_hops_v6(u32::from(p.ttl.0))
        } else {
            raw.set_ttl(u32::from(p.ttl.0))
        };
        set.map_err(err("setting the probe's TTL", target))?;
        let seg = wire::syn(src, target, p.source_port, port, p.seq);
        sent_at[i] = wall_us();
        raw.send_to(&seg, &to).map_err(err("sending a probe", target))?;
    }

    let mut answers: Vec<Option<(wire::Answer, i64)>> = vec![None; probes.len()];
    let mut buf = vec![0u8; 65536];
    let mut read = 0usize;
    let mut last_answer = Instant::now();
    let mut slowest = Duration::ZERO;
    let lo = sys::loopback_index();
    let mut stopped: Option<Instant> = None;
    let mut told = false;
    loop {
        while read < MAX_PACKETS {
            let r = match cap.try_recv(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return Err(PathError::Io { op: "reading the capture socket", target, source: e }),
            };
            read += 1;
            if r.pkttype == sys::PACKET_OUTGOING && r.ifindex != lo {
                continue;
            }
            let Some(a) = wire::match_answer(&buf[..r.len], target, port, &probes) else { continue };
            if answers[a.probe].is_none() {
                let at = r.ts_sec * 1_000_000 + r.ts_usec;
                let rtt = Duration::from_micros(u64::try_from(at - sent_at[a.probe]).unwrap_or(0));
                slowest = slowest.max(rtt);
                last_answer = Instant::now();
                answers[a.probe] = Some((a, at));
            }
        }
        if resolved(&answers) {
            located();
            break;
        }
        let now = Instant::now();
        if now >= req.deadline || read >= MAX_PACKETS {
            break;
        }
        let round = (slowest * 4).max(Duration::from_millis(100));
        let quiet = answers.iter().any(Option::is_some) && now >= last_answer + round;
        if quiet && !told {
            told = true;
            located();
        }
        let mut until = req.deadline;
        if quiet && !keep_waiting() {
            break;
        }
        if !keep_waiting() {
            // The extra round counts from the later of the last answer and the moment
            // waiting stopped being asked for.
            let since = *stopped.get_or_insert(now);
            until = until.min(since.max(last_answer) + round);
            if now >= until {
                break;
            }
        }
        // Wake at least every 20 ms to see whether the connect has ended.
        let wait = until.saturating_duration_since(now).min(Duration::from_millis(20));
        let ms = i32::try_from(wait.as_millis().max(1)).unwrap_or(20);
        cap.wait(ms).map_err(|e| PathError::Io { op: "waiting on the capture socket", target, source: e })?;
    }
    drop(reserved);

    let mut out = Vec::with_capacity(probes.len());
    for (i, p) in probes.iter().enumerate() {
        let hop = match &answers[i] {
            Some((a, at)) => Hop {
                ttl: p.ttl,
                address: Some(a.from),
                answer: a.answer,
                rtt_us: Some(Micros(u64::try_from(at - sent_at[i]).unwrap_or(0))),
                reply_ttl: Some(a.reply_ttl),
            },
            None => Hop { ttl: p.ttl, address: None, answer: HopAnswer::Nothing, rtt_us: None, reply_ttl: None },
        };
        let end = hop.answer.terminal();
        out.push(hop);
        if end {
            break;
        }
    }
    Ok(Traced {
        trace: PathTrace {
            target,
            port: req.port,
            trigger: req.trigger,
            max_hops: hops,
            hops: out,
            elapsed_us: Micros::from_duration(started.elapsed()),
        },
        source_ports: probes.iter().map(|p| p.source_port).collect(),
    })
}

/// Nothing more to learn: every probe is answered, or some probe reached an end (SYN-ACK,
/// RST, unreachable) and every lower TTL is answered.
fn resolved(answers: &[Option<(wire::Answer, i64)>]) -> bool {
    match answers.iter().position(|a| a.as_ref().is_some_and(|(a, _)| a.answer.terminal())) {
        Some(k) => answers[..k].iter().all(Option::is_some),
        None => answers.iter().all(Option::is_some),
    }
}
