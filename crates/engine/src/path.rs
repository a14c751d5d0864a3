//! Path stage (issue 14): TTL-limited SYNs to the target port, placing a silent drop or a
//! forged reset at a hop.
//!
//! It runs beside the connect when the connect is still unanswered halfway through its
//! deadline (or from the start with `--path`), so the probes wait while the connect does;
//! after the connect when a reset fails the TTL test or a router answered unreachable.
//! Never for a target on this host, a healthy one or a plainly refused one.
use crate::{skip, Options};
use conndoc_capture::path::{self as trace, PathError, Request, Traced, MAX_HOPS};
use conndoc_facts::path::{ConnectEnded, PathFacts, PathTrigger};
use conndoc_facts::{Evidence, Outcome, Port};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CHECK: &str = "path probe";
/// Addresses traced per run, at most (each trace is MAX_HOPS probes).
const MAX_TRACES: usize = 4;
const HINT: &str = "run as root or grant CAP_NET_RAW (setcap cap_net_raw+ep conndoc)";

type Results = Vec<Result<Traced, PathError>>;

pub(crate) struct Beside {
    wake: mpsc::Sender<()>,
    connect_done: Arc<AtomicBool>,
    handle: JoinHandle<Results>,
    /// The addresses whose trace has nothing more to learn.
    located: Arc<Mutex<Vec<IpAddr>>>,
    started: Instant,
    timeout: Duration,
}

impl Beside {
    /// Whether the connect to `a` can stop waiting: its trace has located where the SYN
    /// dies (or reached the end), and the connect has had at least half its deadline —
    /// the point where the stage would have started without `--path`.
    pub(crate) fn connect_can_stop(&self, a: IpAddr) -> bool {
        self.started.elapsed() >= self.timeout / 2 && self.located.lock().is_ok_and(|l| l.contains(&a))
    }
}

fn remote(ev: &Evidence, addrs: &[IpAddr]) -> Vec<IpAddr> {
    addrs
        .iter()
        .filter(|a| !a.is_loopback() && !ev.client.local_addresses.contains(a))
        .take(MAX_TRACES)
        .copied()
        .collect()
}

fn run_traces(
    addrs: &[IpAddr],
    port: Port,
    trigger: PathTrigger,
    timeout: Duration,
    keep: &(dyn Fn() -> bool + Sync),
    located: &(dyn Fn(IpAddr) + Sync),
) -> Results {
    let deadline = Instant::now() + timeout;
    std::thread::scope(|s| {
        let hs: Vec<_> = addrs
            .iter()
            .map(|&target| {
                s.spawn(move || {
                    let req = Request { target, port, trigger, max_hops: MAX_HOPS, deadline };
                    trace::trace(&req, keep, &|| located(target))
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// Start the stage beside the connect (it probes only if the connect is still running
/// after half its deadline, or at once with `--path`).
pub(crate) fn begin(ev: &mut Evidence, opts: &Options, addrs: &[IpAddr]) -> Option<Beside> {
    let targets = remote(ev, addrs);
    if targets.is_empty() {
        if opts.path && !addrs.is_empty() {
            skip(ev, CHECK, "the target is on this host: there is no path to probe", None);
        }
        return None;
    }
    let (wake, rx) = mpsc::channel::<()>();
    let connect_done = Arc::new(AtomicBool::new(false));
    let done = connect_done.clone();
    let (forced, timeout, port) = (opts.path, opts.timeout, ev.target.port);
    let located = Arc::new(Mutex::new(Vec::new()));
    let found = located.clone();
    let handle = std::thread::spawn(move || {
        // `--path` probes whatever the connect does (and however fast it ends).
        if !forced && !matches!(rx.recv_timeout(timeout / 2), Err(mpsc::RecvTimeoutError::Timeout)) {
            return Vec::new(); // the connect ended first: nothing to place
        }
        let trigger = if forced { PathTrigger::Forced } else { PathTrigger::ConnectTimeout };
        let mark = |a: IpAddr| {
            if let Ok(mut l) = found.lock() {
                l.push(a);
            }
        };
        run_traces(&targets, port, trigger, timeout, &|| !done.load(Ordering::SeqCst), &mark)
    });
    Some(Beside { wake, connect_done, handle, located, started: Instant::now(), timeout })
}

/// After the connect: let the stage finish its last round, record the traces, and return
/// the probes' local ports (the connect's capture leaves them out).
pub(crate) fn end(stage: Option<Beside>, ev: &mut Evidence) -> Vec<u16> {
    let Some(b) = stage else { return Vec::new() };
    b.connect_done.store(true, Ordering::SeqCst);
    let _ = b.wake.send(());
    let results = b.handle.join().unwrap_or_default();
    let located = b.located.lock().map(|l| l.clone()).unwrap_or_default();
    let ports = record(ev, results);
    // The connects this stage let stop waiting: timeouts before their deadline.
    let ended: Vec<ConnectEnded> = ev
        .probes
        .iter()
        .filter(|p| p.outcome == Outcome::Timeout && p.elapsed_us < p.deadline_us && located.contains(&p.address))
        .map(|p| ConnectEnded { address: p.address, after_us: p.elapsed_us, deadline_us: p.deadline_us })
        .collect();
    if let (Some(path), false) = (ev.path.as_mut(), ended.is_empty()) {
        path.connects_ended = ended;
    }
    ports
}

fn record(ev: &mut Evidence, results: Results) -> Vec<u16> {
    let mut ports = Vec::new();
    for r in results {
        match r {
            Ok(t) => {
                ports.extend(t.source_ports);
                ev.path.get_or_insert_with(PathFacts::default).traces.push(t.trace);
            }
            Err(e @ PathError::Permission { .. }) => {
                if !ev.skipped.iter().any(|s| s.check == CHECK) {
                    skip(ev, CHECK, e.to_string(), Some(HINT.into()));
                }
            }
            Err(e) => skip(ev, CHECK, e.to_string(), None),
        }
    }
    ports
}

/// After the capture: trace the addresses whose reset failed the TTL test (it came from
/// closer than the host) or that a router answered with an ICMP unreachable.
pub(crate) fn after_capture(ev: &mut Evidence, opts: &Options) {
    let Some(cap) = &ev.capture else { return };
    let traced = |a: &IpAddr| ev.path.as_ref().is_some_and(|p| p.trace(a).is_some());
    let mut want: Vec<(IpAddr, PathTrigger)> = Vec::new();
    for p in ev.probes.iter().filter(|p| !p.ok() && !traced(&p.address)) {
        let Some(flow) = cap.flow(&p.address) else { continue };
        let forged = p.outcome == Outcome::Refused
            && matches!((&flow.rst, cap.baseline(&p.address)), (Some(r), Some(b)) if r.ttl.hops() < b.ttl.hops());
        let router = p.outcome == Outcome::Unreachable && flow.icmp.as_ref().is_some_and(|i| i.from != p.address);
        if forged {
            want.push((p.address, PathTrigger::ResetTtl));
        } else if router {
            want.push((p.address, PathTrigger::RouterUnreachable));
        }
    }
    let addrs: Vec<IpAddr> = remote(ev, &want.iter().map(|w| w.0).collect::<Vec<_>>());
    if addrs.is_empty() {
        return;
    }
    let mut results = Vec::new();
    for trigger in [PathTrigger::ResetTtl, PathTrigger::RouterUnreachable] {
        let these: Vec<IpAddr> = addrs.iter().filter(|a| want.contains(&(**a, trigger))).copied().collect();
        if !these.is_empty() {
            results.extend(run_traces(&these, ev.target.port, trigger, opts.timeout, &|| false, &|_| {}));
        }
    }
    record(ev, results);
}
