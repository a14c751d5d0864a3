//! Many targets at once (`conndoc check`): the host-wide facts are read once for all of
//! them, the connects run together, chunk by chunk, from one thread per core up to two
//! (non-blocking sockets and poll), and a refused port with no listener gets its evidence
//! assembled from its chunk's snapshot.
//!
//! The connecting threads only connect (the critical path); a helper thread takes each
//! chunk's snapshot while the next chunk connects; evidence is assembled, handed over and
//! dropped on the worker threads (the CPU work runs on the other core, and each allocation
//! is freed by the thread that made it).
//!
//! Everything else (names to resolve, protocol schemes, other namespaces, an expected
//! process, a connect that did not end in a plain refusal, a port with a listener) goes
//! through [`crate::gather`] unchanged, so each target's evidence is what `gather` gives.

use crate::{found, gather_in, EngineError, Options};
use conndoc_facts::{ConnectKind, ConnectProbe, Errno, Evidence, Family, Host, Micros, Port, Scheme, Target};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connects in flight at once on the fast path (each holds one fd).
const WINDOW: usize = 512;

/// What the caller of [`gather_each`] reads of each target's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// All of it (a report is built from it).
    Everything,
    /// Only its verdict (`conndoc check`'s table): the fast path's connects do not read
    /// their local address (a `getsockname` per port, shown only in the connect evidence,
    /// which a verdict alone does not build; no rule's verdict reads it).
    Verdict,
}

/// [`crate::gather`] for every target, in order.
pub fn gather_many(items: Vec<(Target, Options)>, concurrency: usize) -> Vec<Result<Evidence, EngineError>> {
    let out: Mutex<Vec<Option<Result<Evidence, EngineError>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    gather_each(items, concurrency, Keep::Everything, &|i, r| {
        out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r)
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}

/// [`crate::gather`] for every target; `each(index, result)` is called once per target as
/// it finishes (from several threads), in no particular order. Full gathers run
/// `concurrency` at a time.
pub fn gather_each(
    items: Vec<(Target, Options)>,
    concurrency: usize,
    keep: Keep,
    each: &(dyn Fn(usize, Result<Evidence, EngineError>) + Sync),
) {
    let client = conndoc_probe::client::basics();
    let Some((first, _)) = items.first() else { return };
    let mut template = crate::new_evidence(first.clone(), &Options::default(), client);
    crate::client::local_addresses(&mut template);
    // Whether a container engine is there to ask, once for the batch: a fast-path refusal
    // has no listener, expected process or namespace pid, so without an engine the
    // container stage has nothing to do (it was a getenv and a stat per port).
    let engine = crate::container::engine_named_or_present();

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
    // A target whose refused address is another namespace's (a container, a pod) takes the
    // found stage in its full gather: the machine's namespaces are listed once for all.
    let namespaces = found::Namespaces::default();
    let gather = |t: Target, o: &Options| gather_in(t, o, Some(&namespaces));
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let (gtx, grx) = std::sync::mpsc::channel::<Job>();
    let (rx, grx) = (Mutex::new(rx), Mutex::new(grx));
    // Assembled evidence is CPU work: one worker per core but the one connecting (more
    // only adds allocator and page-fault contention and slows the connects). Full
    // gathers mostly wait: `concurrency` of them.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ready_workers = cores.saturating_sub(1).min(concurrency).max(1);
    // Spawned as gathers turn up (spawning 64 threads up front slowed the first connects).
    let max_gather_workers = concurrency.clamp(1, (fast.len() + slow.len()).max(1));
    // `fwd`: where a ready job that needs a full gather after all goes (each holder of a
    // sender keeps the gather workers alive until it is done).
    let work = |rx: &Mutex<std::sync::mpsc::Receiver<Job>>, fwd: Option<std::sync::mpsc::Sender<Job>>| loop {
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(Job::Ready(i, f, chunk)) => match assemble(&template, *f, &chunk, engine) {
                Ok(ev) => each(i, Ok(ev)),
                Err(to) => match &fwd {
                    Some(g) => {
                        let _ = g.send(Job::Gather(i, to));
                    }
                    None => each(i, gather(to.0, &to.1)),
                },
            },
            Ok(Job::Gather(i, to)) => {
                let (t, o) = *to;
                each(i, gather(t, &o))
            }
            Err(_) => break,
        }
    };
    std::thread::scope(|s| {
        for _ in 0..ready_workers {
            let g = gtx.clone();
            s.spawn(|| work(&rx, Some(g)));
        }
        // At least one from the start: a ready job may be forwarded to them at any time.
        let mut gather_workers = 0;
        let mut gathers = slow.len().max(1);
        let more_gather_workers = |gathers: usize, spawned: &mut usize| {
            while *spawned < gathers.min(max_gather_workers) {
                s.spawn(|| work(&grx, None));
                *spawned += 1;
            }
        };
        more_gather_workers(gathers, &mut gather_workers);
        for job in slow {
            let _ = gtx.send(job);
        }
        // Each chunk's snapshot is taken on a helper thread while this one connects the
        // next chunk: the connects are the critical path.
        let (stx, srx) = std::sync::mpsc::channel::<Connected>();
        let helper_gtx = gtx.clone();
        s.spawn(move || {
            for c in srx {
                for job in inspect_chunk(c) {
                    let _ = match job {
                        Job::Ready(..) => tx.send(job),
                        Job::Gather(..) => {
                            gathers += 1;
                            helper_gtx.send(job)
                        }
                    };
                }
                more_gather_workers(gathers, &mut gather_workers);
            }
        });
        let mut fast = fast.into_iter().peekable();
        let mut chunks = Vec::new();
        let mut size = if cores == 1 { usize::MAX } else { CHUNK };
        while fast.peek().is_some() {
            chunks.push(fast.by_ref().take(size).collect::<Vec<_>>());
            size = size.saturating_mul(2).min(MAX_CHUNK.max(size));
        }
        let local = keep == Keep::Everything;
        // With two cores or more, two threads connect, each taking the next chunk: the
        // loopback handshakes of one chunk run beside another's (10,000 refused ports:
        // median wall 0.309 → 0.225 s and 0.354 → 0.322 s in two alternating runs at load
        // 5–6, the CPU time unchanged; docs/benchmarks.md).
        let connectors = if cores >= 2 { CONNECTORS.min(chunks.len()) } else { 1 };
        let queue = Mutex::new(chunks.into_iter());
        let connect = |stx: std::sync::mpsc::Sender<Connected>| {
            let mut spare = Spare { local, ..Default::default() };
            loop {
                let Some(chunk) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else { break };
                let _ = stx.send(connect_chunk(chunk, &mut spare));
            }
        };
        std::thread::scope(|cs| {
            for _ in 1..connectors {
                let stx = stx.clone();
                cs.spawn(|| connect(stx));
            }
            connect(stx.clone());
        });
        drop(stx);
        // Connecting is over: this thread helps with what is left of the assembled ones.
        work(&rx, Some(gtx));
    });
}

/// Targets connected together and inspected with one snapshot: the first chunk, so that
/// the workers start early; each next one twice the last, up to [`MAX_CHUNK`] (a snapshot
/// walks the kernel's whole connection hash, shared by every namespace: 10 of them were
/// ~8 % of a 10,000-port run). On one core nothing runs beside the connects: one chunk.
const CHUNK: usize = 1024;
/// Threads connecting chunks at once on a machine with two or more cores.
const CONNECTORS: usize = 2;
const MAX_CHUNK: usize = 4096;

/// One chunk of fast-path targets after its connects.
struct Connected {
    fast: Vec<(usize, Target, Options, IpAddr)>,
    probes: Vec<ConnectProbe>,
    base: Option<conndoc_host::Baseline>,
    started_at: String,
}

/// Connect to one chunk of fast-path targets.
fn connect_chunk(fast: Vec<(usize, Target, Options, IpAddr)>, spare: &mut Spare) -> Connected {
    // Counters before the connects, so their deltas cover this chunk's probes.
    let base = conndoc_host::counters::read().ok().map(|c| conndoc_host::Baseline { counters: c, at: Instant::now() });
    let targets: Vec<(IpAddr, Port, Duration)> = fast.iter().map(|(_, t, o, ip)| (*ip, t.port, o.timeout)).collect();
    let started_at = conndoc_probe::time::now_rfc3339();
    let probes = connect_reusing(&targets, spare);
    Connected { fast, probes, base, started_at }
}

/// Snapshot the namespace once for a connected chunk: a plain refusal with no listener
/// becomes a ready job (evidence assembled by a worker), the rest full gathers. The
/// counter deltas run from before the chunk's connects to the snapshot (which may overlap
/// the next chunk's connects).
fn inspect_chunk(c: Connected) -> Vec<Job> {
    let Connected { fast, probes, base, started_at } = c;
    let ports: BTreeSet<u16> =
        fast.iter().zip(&probes).filter(|(_, p)| p.kind == ConnectKind::Refused).map(|(f, _)| f.1.port.get()).collect();
    // With nat chains in this namespace a refused port may be forwarded (DNAT, redirect):
    // those targets take the full gather, which reads the rules.
    let nat = !ports.is_empty() && crate::firewall::nat_present(&crate::Options::default());
    let snap =
        if ports.is_empty() || nat { None } else { conndoc_host::snapshot::snapshot(&ports, base.as_ref()).ok() };
    let chunk = std::sync::Arc::new(Chunk { snap, started_at });
    let mut jobs = Vec::with_capacity(fast.len());
    for ((i, t, o, ip), probe) in fast.into_iter().zip(probes) {
        let ready =
            probe.kind == ConnectKind::Refused && chunk.snap.as_ref().is_some_and(|s| !s.has_listener(t.port.get()));
        if ready {
            jobs.push(Job::Ready(i, Box::new(Fast { target: t, opts: o, ip, probe }), chunk.clone()));
        } else {
            jobs.push(Job::Gather(i, Box::new((t, o))));
        }
    }
    jobs
}

/// What one chunk's targets share.
struct Chunk {
    snap: Option<conndoc_host::snapshot::Snapshot>,
    started_at: String,
}

struct Fast {
    target: Target,
    opts: Options,
    ip: IpAddr,
    probe: ConnectProbe,
}

/// The evidence of a plain refusal, from the chunk's snapshot; `Err` when the target
/// needs a full gather after all.
fn assemble(template: &Evidence, f: Fast, chunk: &Chunk, engine: bool) -> Result<Evidence, Box<(Target, Options)>> {
    let Fast { target: t, opts: o, ip, probe } = f;
    match chunk.snap.as_ref().and_then(|s| s.facts_for(t.port)) {
        // A refusal at one of the namespace's own addresses with no listener on the
        // port: no firewall, capture or protocol stage would run (see firewall_relevant).
        Some((facts, skipped)) if crate::host::owns_address(&facts.local_addresses, &ip) => {
            let mut ev = template.clone();
            ev.options = crate::run_options(&t, &o);
            ev.started_at = chunk.started_at.clone();
            ev.resolution = conndoc_probe::resolve::resolve(&t, o.family, o.timeout);
            ev.elapsed_us = Micros(probe.elapsed_us.0 + facts.elapsed_us.0);
            ev.probes = vec![probe];
            ev.host = Some(facts);
            ev.skipped.extend(skipped);
            ev.target = t;
            // A refusal on a Docker host may be a stopped or unpublished container.
            if !o.no_host && engine {
                crate::container::run(&mut ev, &o);
            }
            Ok(ev)
        }
        _ => Err(Box::new((t, o))),
    }
}

enum Job {
    Ready(usize, Box<Fast>, std::sync::Arc<Chunk>),
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
        && o.ssh.is_none()
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
    local: Option<SocketAddr>,
}

/// Connect to every address, [`WINDOW`] at a time, each with its own deadline, and
/// classify each result the way [`conndoc_probe::connect::connect_one`] does.
pub fn connect_many(targets: &[(IpAddr, Port, Duration)]) -> Vec<ConnectProbe> {
    connect_reusing(targets, &mut Spare { local: true, ..Default::default() })
}

/// Sockets whose connect was refused, disconnected and ready for the next connect: a
/// refused port then costs two connect calls instead of socket + connect + close (the
/// kernel's socket set-up and tear-down were a third of the connecting thread's time).
#[derive(Default)]
struct Spare {
    v4: Vec<Socket>,
    v6: Vec<Socket>,
    /// Whether each probe records its local address (see [`Keep::Verdict`]).
    local: bool,
}

impl Spare {
    fn take(&mut self, sa: &SocketAddr) -> Option<Socket> {
        if sa.is_ipv4() {
            self.v4.pop()
        } else {
            self.v6.pop()
        }
    }
    /// Keep a refused socket, reset for another connect. Refused means the kernel already
    /// moved it to CLOSE (its port released, no RST to send).
    fn keep(&mut self, sock: Socket, v4: bool) {
        if self.v4.len() + self.v6.len() < WINDOW {
            if v4 {
                self.v4.push(sock)
            } else {
                self.v6.push(sock)
            }
        }
    }
}

fn connect_reusing(targets: &[(IpAddr, Port, Duration)], spare: &mut Spare) -> Vec<ConnectProbe> {
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
            let sa = SocketAddr::new(ip, port.get());
            match start_connect(sa, spare.take(&sa), spare.local) {
                Ok(Started::Pending(sock, local)) => {
                    pending.push(Pending { index: next, sock, start, deadline: start + timeout, local })
                }
                Ok(Started::Connected(local)) => finish(&mut out[next], local, start, Ok(())),
                Err((sock, local, e)) => {
                    finish(&mut out[next], local, start, Err(e));
                    // Refused by the second connect, the kernel has already reset the
                    // socket for the next one.
                    if let Some(s) = sock.filter(|_| out[next].kind == ConnectKind::Refused) {
                        spare.keep(s, ip.is_ipv4());
                    }
                }
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
                finish(&mut out[p.index], p.local, p.start, r);
                // The error was read with SO_ERROR, which leaves the socket layer
                // connecting: disconnected before it is used again.
                if out[p.index].kind == ConnectKind::Refused && conndoc_probe::connect::disconnect(&p.sock).is_ok() {
                    spare.keep(p.sock, targets[p.index].0.is_ipv4());
                }
            } else if now >= p.deadline {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                finish(&mut out[p.index], p.local, p.start, Err(e));
            } else {
                keep.push(p);
            }
        }
        pending = keep;
    }
    out
}

/// How a connect started.
enum Started {
    /// Still in progress: wait for it with poll.
    Pending(Socket, Option<SocketAddr>),
    /// Connected (the socket is dropped, closing the connection).
    Connected(Option<SocketAddr>),
}

/// A non-blocking connect (on a spare socket when there is one), with its local address.
///
/// On loopback the SYN and the peer's answer are processed before the first connect
/// returns EINPROGRESS, so a second connect at once reports the result: the error a
/// refusal left (and the kernel resets the socket for another connect, as for AF_UNSPEC),
/// 0 or EISCONN once connected, EALREADY while still in progress. That is two system
/// calls for a refused port where poll + SO_ERROR + a disconnect were three more.
/// The local address is read in between (the second connect forgets it).
fn start_connect(
    sa: SocketAddr,
    spare: Option<Socket>,
    want_local: bool,
) -> Result<Started, (Option<Socket>, Option<SocketAddr>, std::io::Error)> {
    let local_of = |s: &Socket| if want_local { local_of(s) } else { None };
    let sock = match spare {
        Some(s) => s,
        // SOCK_NONBLOCK at creation: two fcntl calls fewer per port.
        None => Socket::new(Domain::for_address(sa), Type::STREAM.nonblocking(), Some(Protocol::TCP))
            .map_err(|e| (None, None, e))?,
    };
    let to = SockAddr::from(sa);
    match sock.connect(&to) {
        Ok(()) => return Ok(Started::Connected(local_of(&sock))),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => {
            let local = local_of(&sock);
            return Err((Some(sock), local, e));
        }
    }
    let local = local_of(&sock);
    match sock.connect(&to) {
        Ok(()) => Ok(Started::Connected(local)),
        Err(e) if e.raw_os_error() == Some(libc::EISCONN) => Ok(Started::Connected(local)),
        Err(e) if e.raw_os_error() == Some(libc::EALREADY) => Ok(Started::Pending(sock, local)),
        Err(e) => Err((Some(sock), local, e)),
    }
}

/// The socket's local address, when it has a port.
fn local_of(sock: &Socket) -> Option<SocketAddr> {
    sock.local_addr().ok().and_then(|l| l.as_socket()).filter(|l| l.port() != 0)
}

fn finish(p: &mut ConnectProbe, local: Option<SocketAddr>, start: Instant, r: std::io::Result<()>) {
    p.elapsed_us = Micros::from_duration(start.elapsed());
    p.local = local;
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
