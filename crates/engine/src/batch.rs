//! Many targets at once (`conndoc check`): the host-wide facts are read once for all of
//! them, the connects run together from one thread (non-blocking sockets and poll), and a
//! refused port with no listener gets its evidence assembled from that one snapshot.
//!
//! Everything else (names to resolve, protocol schemes, other namespaces, an expected
//! process, a connect that did not end in a plain refusal, a port with a listener) goes
//! through [`crate::gather`] unchanged, so each target's evidence is what `gather` gives.

use crate::{gather, EngineError, Options};
use conndoc_facts::{
    ConnectKind, ConnectProbe, Errno, Evidence, Family, Host, Micros, RunOptions, Scheme, SkippedCheck, Target,
    EVIDENCE_SCHEMA,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connects in flight at once on the fast path (each holds one fd).
const WINDOW: usize = 512;

/// [`crate::gather`] for every target, in order.
pub fn gather_many(items: Vec<(Target, Options)>, concurrency: usize) -> Vec<Result<Evidence, EngineError>> {
    let out: Mutex<Vec<Option<Result<Evidence, EngineError>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    gather_each(items, concurrency, &|i, r| out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r));
    out.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}

/// [`crate::gather`] for every target; `each(index, result)` is called once per target as
/// it finishes (from several threads), in no particular order. Full gathers run
/// `concurrency` at a time.
pub fn gather_each(
    items: Vec<(Target, Options)>,
    concurrency: usize,
    each: &(dyn Fn(usize, Result<Evidence, EngineError>) + Sync),
) {
    let client = conndoc_probe::client::basics();
    let mut template = Evidence {
        schema: EVIDENCE_SCHEMA.into(),
        options: RunOptions { timeout_us: Micros(0), family: None, expect_process: None, netns: None },
        started_at: String::new(),
        elapsed_us: Micros(0),
        client,
        resolution: Default::default(),
        probes: Vec::new(),
        host: None,
        firewall: None,
        capture: None,
        protocol: None,
        skipped: Vec::new(),
        target: match items.first() {
            Some((t, _)) => t.clone(),
            None => return,
        },
    };
    crate::client::local_addresses(&mut template);

    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for (i, (t, o)) in items.into_iter().enumerate() {
        match fast_address(&template, &t, &o) {
            Some(ip) => fast.push((i, t, o, ip)),
            None => slow.push((i, t, o)),
        }
    }

    if !fast.is_empty() {
        let base = conndoc_host::counters::read().ok().map(|c| conndoc_host::Baseline { counters: c, at: Instant::now() });
        let targets: Vec<(SocketAddr, Duration)> =
            fast.iter().map(|(_, t, o, ip)| (SocketAddr::new(*ip, t.port.get()), o.timeout)).collect();
        let probes = connect_many(&targets);
        let ports: BTreeSet<u16> =
            fast.iter().zip(&probes).filter(|(_, p)| p.kind == ConnectKind::Refused).map(|(f, _)| f.1.port.get()).collect();
        let snap = if ports.is_empty() { None } else { conndoc_host::snapshot::snapshot(&ports, base.as_ref()).ok() };
        for ((i, t, o, ip), (probe, started_at)) in fast.into_iter().zip(probes.into_iter().zip(start_times(&targets))) {
            let facts = snap.as_ref().filter(|_| probe.kind == ConnectKind::Refused).and_then(|s| s.facts_for(t.port));
            match facts {
                // A refusal at one of the namespace's own addresses with no listener on
                // the port: no firewall or protocol stage would run (see firewall_relevant).
                Some((facts, skipped)) if facts.local_addresses.contains(&ip) => {
                    let mut ev = template.clone();
                    ev.options = RunOptions {
                        timeout_us: Micros::from_duration(o.timeout),
                        family: o.family,
                        expect_process: None,
                        netns: None,
                    };
                    ev.started_at = started_at;
                    ev.resolution = conndoc_probe::resolve::resolve(&t, o.family, o.timeout);
                    ev.elapsed_us = Micros(probe.elapsed_us.0 + facts.elapsed_us.0);
                    ev.probes = vec![probe];
                    ev.host = Some(facts);
                    ev.skipped.extend(skipped);
                    ev.target = t;
                    each(i, Ok(ev));
                }
                _ => slow.push((i, t, o)),
            }
        }
    }

    let next = AtomicUsize::new(0);
    let slow = &slow;
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, slow.len().max(1)) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Relaxed);
                let Some((i, t, o)) = slow.get(k) else { break };
                each(*i, gather(t.clone(), o));
            });
        }
    });
}

/// The address to probe when the target can take the fast path: a TCP address literal on
/// this host, inspected in conndoc's own namespace with no expected process.
fn fast_address(template: &Evidence, t: &Target, o: &Options) -> Option<IpAddr> {
    let Host::Ip(ip) = t.host else { return None };
    let plain = t.scheme == Scheme::Tcp
        && t.scheme.expected_process().is_none()
        && o.expect_process.is_none()
        && o.netns.is_none()
        && o.netns_pid.is_none()
        && o.pcap_out.is_none()
        && !o.no_host
        && o.family.is_none_or(|f| f == Family::of(&ip));
    (plain && crate::host::is_local(template, &ip)).then_some(ip)
}

/// RFC 3339 start time of each connect (they all start within the same run).
fn start_times(targets: &[(SocketAddr, Duration)]) -> impl Iterator<Item = String> {
    let now = conndoc_probe::time::now_rfc3339();
    std::iter::repeat_n(now, targets.len())
}

struct Pending {
    index: usize,
    sock: Socket,
    start: Instant,
    deadline: Instant,
}

/// Connect to every address, [`WINDOW`] at a time, each with its own deadline, and
/// classify each result the way [`conndoc_probe::connect::connect_one`] does.
pub fn connect_many(targets: &[(SocketAddr, Duration)]) -> Vec<ConnectProbe> {
    let mut out: Vec<ConnectProbe> = targets
        .iter()
        .map(|(sa, timeout)| ConnectProbe {
            address: sa.ip(),
            port: conndoc_facts::Port::new(sa.port()).unwrap_or(conndoc_facts::Port::MIN),
            family: Family::of(&sa.ip()),
            outcome: ConnectKind::Other.outcome(),
            kind: ConnectKind::Other,
            errno: None,
            elapsed_us: Micros(0),
            deadline_us: Micros::from_duration(*timeout),
            local: None,
            syn_retransmits: None,
        })
        .collect();
    let mut next = 0;
    let mut pending: Vec<Pending> = Vec::new();
    while next < targets.len() || !pending.is_empty() {
        while pending.len() < WINDOW && next < targets.len() {
            let (sa, timeout) = targets[next];
            let start = Instant::now();
            match start_connect(sa) {
                Ok(Some(sock)) => pending.push(Pending { index: next, sock, start, deadline: start + timeout }),
                Ok(None) => finish(&mut out[next], None, start, Ok(())),
                Err((sock, e)) => finish(&mut out[next], sock.as_ref(), start, Err(e)),
            }
            next += 1;
        }
        if pending.is_empty() {
            continue;
        }
        let now = Instant::now();
        let wait = pending.iter().map(|p| p.deadline.saturating_duration_since(now)).min().unwrap_or_default();
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|p| libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&p.sock), events: libc::POLLOUT, revents: 0 })
            .collect();
        // Wake at least every 100 ms so deadlines are noticed even if poll is interrupted.
        let ms = wait.as_millis().min(100) as i32;
        if poll(&mut fds, ms).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let now = Instant::now();
        let mut keep = Vec::with_capacity(pending.len());
        for (p, fd) in pending.into_iter().zip(&fds) {
            if fd.revents != 0 {
                let r = match p.sock.take_error() {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) | Err(e) => Err(e),
                };
                finish(&mut out[p.index], Some(&p.sock), p.start, r);
            } else if now >= p.deadline {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                finish(&mut out[p.index], Some(&p.sock), p.start, Err(e));
            } else {
                keep.push(p);
            }
        }
        pending = keep;
    }
    out
}

/// A non-blocking connect: Ok(Some) while in progress, Ok(None) when already connected.
fn start_connect(sa: SocketAddr) -> Result<Option<Socket>, (Option<Socket>, std::io::Error)> {
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP)).map_err(|e| (None, e))?;
    if let Err(e) = sock.set_nonblocking(true) {
        return Err((Some(sock), e));
    }
    match sock.connect(&SockAddr::from(sa)) {
        Ok(()) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(Some(sock)),
        Err(e) => Err((Some(sock), e)),
    }
}

fn finish(p: &mut ConnectProbe, sock: Option<&Socket>, start: Instant, r: std::io::Result<()>) {
    p.elapsed_us = Micros::from_duration(start.elapsed());
    p.local = sock.and_then(|s| s.local_addr().ok()).and_then(|l| l.as_socket()).filter(|l| l.port() != 0);
    let kind = match &r {
        Ok(()) => ConnectKind::Connected,
        Err(e) => conndoc_probe::connect::classify(e),
    };
    if let Err(e) = &r {
        p.errno = Some(match e.raw_os_error() {
            Some(code) => Errno::from_raw(code),
            None if kind == ConnectKind::Timeout => Errno("ETIMEDOUT".into()),
            None => Errno(e.to_string()),
        });
    }
    p.kind = kind;
    p.outcome = kind.outcome();
}

#[allow(unsafe_code)]
fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> std::io::Result<usize> {
    // SAFETY: `fds` is an exclusively borrowed, initialised slice of pollfd whose length is
    // passed with it; the kernel writes only `revents` within it.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Unused placeholder removed below.
#[allow(dead_code)]
fn _skipped(_: &[SkippedCheck]) {}
