//! Many targets at once (`conndoc check`): the host-wide facts are read once for all of
//! them, the connects run together from one thread (non-blocking sockets and poll), and a
//! refused port with no listener gets its evidence assembled from that one snapshot.
//!
//! Everything else (names to resolve, protocol schemes, other namespaces, an expected
//! process, a connect that did not end in a plain refusal, a port with a listener) goes
//! through [`crate::gather`] unchanged, so each target's evidence is what `gather` gives.

use crate::{gather, EngineError, Options};
use conndoc_facts::{ConnectKind, ConnectProbe, Errno, Evidence, Family, Host, Micros, Port, Scheme, Target};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
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
    let Some((first, _)) = items.first() else { return };
    let mut template = crate::new_evidence(first.clone(), &Options::default(), client);
    crate::client::local_addresses(&mut template);

    let mut fast = Vec::new();
    let mut slow = Vec::new();
    for (i, (t, o)) in items.into_iter().enumerate() {
        match fast_address(&template, &t, &o) {
            Some(ip) => fast.push((i, t, o, ip)),
            None => slow.push(Job::Gather(i, Box::new((t, o)))),
        }
    }

    // Connects and snapshots run here, chunk by chunk, while `concurrency` workers hand
    // the assembled evidence to the caller (CPU work) and run the full gathers (mostly
    // waiting): the two overlap on a multi-core machine.
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let (gtx, grx) = std::sync::mpsc::channel::<Job>();
    let (rx, grx) = (Mutex::new(rx), Mutex::new(grx));
    // Assembled evidence is CPU work: one worker per core but the one connecting (more
    // only adds allocator and page-fault contention and slows the connects). Full
    // gathers mostly wait: `concurrency` of them.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ready_workers = cores.saturating_sub(1).min(concurrency).max(1);
    let gather_workers = concurrency.clamp(1, (fast.len() + slow.len()).max(1));
    let work = |rx: &Mutex<std::sync::mpsc::Receiver<Job>>| loop {
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(Job::Ready(i, ev)) => each(i, Ok(*ev)),
            Ok(Job::Gather(i, to)) => {
                let (t, o) = *to;
                each(i, gather(t, &o))
            }
            Err(_) => break,
        }
    };
    std::thread::scope(|s| {
        for _ in 0..ready_workers {
            s.spawn(|| work(&rx));
        }
        for _ in 0..gather_workers {
            s.spawn(|| work(&grx));
        }
        let mut fast = fast.into_iter().peekable();
        while fast.peek().is_some() {
            let chunk: Vec<_> = fast.by_ref().take(CHUNK).collect();
            for job in fast_chunk(&template, chunk) {
                let _ = match job {
                    Job::Ready(..) => tx.send(job),
                    Job::Gather(..) => gtx.send(job),
                };
            }
        }
        for job in slow {
            let _ = gtx.send(job);
        }
        drop(tx);
        drop(gtx);
        // Connecting is over: this thread helps with what is left of the assembled ones.
        work(&rx);
    });
}

/// Targets connected together and inspected with one snapshot.
const CHUNK: usize = 1024;

/// Connect to one chunk of fast-path targets, snapshot the namespace once, and assemble
/// each plain refusal's evidence; the rest become full gathers.
fn fast_chunk(template: &Evidence, fast: Vec<(usize, Target, Options, IpAddr)>) -> Vec<Job> {
    // Counters before the connects, so their deltas cover this chunk's probes.
    let base = conndoc_host::counters::read().ok().map(|c| conndoc_host::Baseline { counters: c, at: Instant::now() });
    let targets: Vec<(IpAddr, Port, Duration)> = fast.iter().map(|(_, t, o, ip)| (*ip, t.port, o.timeout)).collect();
    let started_at = conndoc_probe::time::now_rfc3339();
    let probes = connect_many(&targets);
    let ports: BTreeSet<u16> =
        fast.iter().zip(&probes).filter(|(_, p)| p.kind == ConnectKind::Refused).map(|(f, _)| f.1.port.get()).collect();
    let snap = if ports.is_empty() { None } else { conndoc_host::snapshot::snapshot(&ports, base.as_ref()).ok() };
    let mut jobs = Vec::with_capacity(fast.len());
    for ((i, t, o, ip), probe) in fast.into_iter().zip(probes) {
        let facts = snap.as_ref().filter(|_| probe.kind == ConnectKind::Refused).and_then(|s| s.facts_for(t.port));
        match facts {
            // A refusal at one of the namespace's own addresses with no listener on the
            // port: no firewall, capture or protocol stage would run (see firewall_relevant).
            Some((facts, skipped)) if facts.local_addresses.contains(&ip) => {
                let mut ev = template.clone();
                ev.options = crate::run_options(&t, &o);
                ev.started_at = started_at.clone();
                ev.resolution = conndoc_probe::resolve::resolve(&t, o.family, o.timeout);
                ev.elapsed_us = Micros(probe.elapsed_us.0 + facts.elapsed_us.0);
                ev.probes = vec![probe];
                ev.host = Some(facts);
                ev.skipped.extend(skipped);
                ev.target = t;
                jobs.push(Job::Ready(i, Box::new(ev)));
            }
            _ => jobs.push(Job::Gather(i, Box::new((t, o)))),
        }
    }
    jobs
}

enum Job {
    Ready(usize, Box<Evidence>),
    Gather(usize, Box<(Target, Options)>),
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

struct Pending {
    index: usize,
    sock: Socket,
    start: Instant,
    deadline: Instant,
}

/// Connect to every address, [`WINDOW`] at a time, each with its own deadline, and
/// classify each result the way [`conndoc_probe::connect::connect_one`] does.
pub fn connect_many(targets: &[(IpAddr, Port, Duration)]) -> Vec<ConnectProbe> {
    let mut out: Vec<ConnectProbe> = targets
        .iter()
        .map(|&(address, port, timeout)| conndoc_probe::connect::unstarted(address, port, timeout))
        .collect();
    let mut next = 0;
    let mut pending: Vec<Pending> = Vec::new();
    while next < targets.len() || !pending.is_empty() {
        while pending.len() < WINDOW && next < targets.len() {
            let (ip, port, timeout) = targets[next];
            let start = Instant::now();
            match start_connect(SocketAddr::new(ip, port.get())) {
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
    // SOCK_NONBLOCK at creation: two fcntl calls fewer per port.
    let sock =
        Socket::new(Domain::for_address(sa), Type::STREAM.nonblocking(), Some(Protocol::TCP)).map_err(|e| (None, e))?;
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
