//! Container identity (docs/containers.md): which container owns a process or namespace and
//! what its engine says about it.
//!
//! - The Docker Engine API over its unix socket (`DOCKER_HOST` honoured, else
//!   `/var/run/docker.sock`), GET only: `/containers/json?all=1`, `/containers/{id}/json`,
//!   `/containers/{id}/logs?tail=N`. One deadline for all of it, a size limit on every body,
//!   a bound on how many containers are inspected and on the connections used at once.
//! - The container id in `/proc/PID/cgroup` ([`cgroup`]) as the engine-agnostic fallback
//!   (containerd, CRI-O, podman, or Docker with its socket unreadable).
//!
//! Never read: environment variables (they hold secrets), anything that changes a container.

pub mod api;
pub mod cgroup;
pub mod model;

use api::{Client, Endpoint};
use conndoc_facts::container::{Container, ContainerFacts, ContainerState, IdentitySource};
use conndoc_facts::{Micros, SkippedCheck};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("connecting to the engine socket {socket}: {source}")]
    Connect { socket: String, source: std::io::Error },
    #[error("the engine did not answer in time ({what})")]
    Deadline { what: String },
    #[error("GET {path}: {message}")]
    Http { path: String, message: String },
    #[error("GET {path}: status {status}: {message}")]
    Status { path: String, status: u16, message: String },
    #[error("GET {path}: unexpected JSON: {message}")]
    Json { path: String, message: String },
    #[error("starting the engine client: {0}")]
    Runtime(std::io::Error),
}

/// What to look for.
#[derive(Debug, Clone)]
pub struct Request {
    pub endpoint: Endpoint,
    /// Whether the endpoint was named (DOCKER_HOST set): then a missing socket is reported.
    pub endpoint_named: bool,
    /// The target port.
    pub port: u16,
    /// The target's addresses (a container may own one on an engine network).
    pub addresses: Vec<IpAddr>,
    /// Processes of interest (listener owners, the expected service elsewhere).
    pub pids: Vec<u32>,
    /// The probe failed: also inspect stopped containers and running ones that publish
    /// nothing, since one of them may be what should serve the port.
    pub wide: bool,
    pub deadline: Duration,
    /// At most this many containers are inspected.
    pub max_inspect: usize,
    /// Log lines kept of a stopped container.
    pub log_lines: usize,
}

impl Request {
    pub fn new(port: u16) -> Request {
        let v = std::env::var("DOCKER_HOST").ok();
        Request {
            endpoint_named: v.as_deref().is_some_and(|v| !v.trim().is_empty()),
            endpoint: Endpoint::from_docker_host(v.as_deref()),
            port,
            addresses: Vec::new(),
            pids: Vec::new(),
            wide: false,
            deadline: Duration::from_secs(1),
            max_inspect: 32,
            log_lines: 10,
        }
    }
}

const LIST_LIMIT: usize = 8 << 20;
const INSPECT_LIMIT: usize = 1 << 20;
const LOG_LIMIT: usize = 64 << 10;
/// Stopped containers whose logs are read, at most.
const MAX_LOGS: usize = 3;
const CHECK: &str = "container engine";

/// The engine's list, and the inspects of the containers that publish the port or own one of
/// the addresses (inspected whatever the probe finds), asked on a thread of their own while
/// the probe and the host stage run: one after the other they were a third of a Docker
/// diagnosis's time (docs/benchmarks.md, "Docker faults"). Once told the probe failed
/// ([`Prefetch::probe_outcome`]), the same thread also inspects what a failure widens the
/// search to (stopped containers, running ones that publish nothing) and reads the log tail
/// of a stopped one that covers the port, beside the host stage instead of after it.
pub struct Prefetch {
    handle: std::thread::JoinHandle<Result<Early, ContainerError>>,
    outcome: Arc<Outcome>,
}

/// Whether the probe failed, once the engine stage knows it.
#[derive(Default)]
struct Outcome {
    failed: Mutex<Option<bool>>,
    known: Condvar,
}

impl Prefetch {
    /// Say whether the probe failed (the `wide` of the [`Request`] the stage will make). The
    /// first word counts; the stage says it again before taking the answers, so the engine
    /// thread never waits past them.
    pub fn probe_outcome(&self, failed: bool) {
        let mut g = self.outcome.failed.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(failed);
            self.outcome.known.notify_all();
        }
    }
}

struct Early {
    list: Vec<model::ListItem>,
    /// id → inspect, of those asked early that answered.
    inspected: BTreeMap<String, Inspected>,
}

/// One container's inspect, and whether its log tail was asked already.
struct Inspected {
    container: Container,
    tty: bool,
    logs_asked: bool,
}

impl From<model::Inspect> for Inspected {
    fn from(ins: model::Inspect) -> Inspected {
        let tty = ins.config.tty;
        Inspected { container: ins.into_container(), tty, logs_asked: false }
    }
}

/// Start asking the engine of `req` (its port, addresses, deadline, inspect bound and log
/// lines; the pids and `wide` come later, in [`gather_prefetched`]). None when there is no
/// socket.
pub fn prefetch(req: &Request) -> Option<Prefetch> {
    let Endpoint::Unix(socket) = &req.endpoint else { return None };
    if !socket.exists() {
        return None;
    }
    let (socket, port, addrs, deadline, max, lines) =
        (socket.clone(), req.port, req.addresses.clone(), req.deadline, req.max_inspect, req.log_lines);
    let outcome = Arc::new(Outcome::default());
    let told = outcome.clone();
    let handle = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let rt = runtime()?;
            let until = Instant::now() + deadline;
            rt.block_on(async {
                let deadline = tokio::time::Instant::now() + deadline;
                let mut c = Client::connect(&socket, deadline).await?;
                let list: Vec<model::ListItem> = c.get_json(LIST_PATH, LIST_LIMIT).await?;
                let direct =
                    |it: &model::ListItem| it.touches_port(port) || it.addresses().iter().any(|a| addrs.contains(a));
                // A refused port's probe has usually ended by the time the list arrives: then
                // what a failure inspects goes in the same batch as the direct ones (one round
                // of parallel requests, not two one after the other).
                let known = *told.failed.lock().unwrap_or_else(|e| e.into_inner());
                let wide_now = known == Some(true);
                let mut first: Vec<(u8, &model::ListItem)> =
                    list.iter().filter_map(|it| rank(it, direct(it), wide_now).map(|r| (r, it))).collect();
                first.sort_by_key(|(r, _)| *r);
                let ids: Vec<String> = first.iter().take(max).map(|(_, it)| it.id.clone()).collect();
                // A failure here is asked again (and reported) by the stage itself.
                let mut order = ids.clone();
                let mut inspected: BTreeMap<String, Inspected> =
                    match inspect_all(&mut c, &socket, deadline, &ids).await {
                        Ok(v) => ids.into_iter().zip(v.into_iter().map(Inspected::from)).collect(),
                        Err(_) => return Ok(Early { list, inspected: BTreeMap::new() }),
                    };
                // The probe's outcome: known by now for a refused port; else wait for it
                // (the stage says it before it takes these answers), within the deadline.
                let failed = {
                    let g = told.failed.lock().unwrap_or_else(|e| e.into_inner());
                    let left = until.saturating_duration_since(Instant::now());
                    let (g, _) =
                        told.known.wait_timeout_while(g, left, |f| f.is_none()).unwrap_or_else(|e| e.into_inner());
                    g.unwrap_or(false)
                };
                if failed && !wide_now {
                    // What the stage picks for a failed probe, in its order, minus what is
                    // asked already; the pids it adds later are inspected there if missing.
                    let mut more: Vec<(u8, &model::ListItem)> = list
                        .iter()
                        .filter(|it| !inspected.contains_key(&it.id))
                        .filter_map(|it| rank(it, direct(it), true).map(|r| (r, it)))
                        .collect();
                    more.sort_by_key(|(r, _)| *r);
                    let ids: Vec<String> =
                        more.iter().take(max.saturating_sub(inspected.len())).map(|(_, it)| it.id.clone()).collect();
                    if let Ok(v) = inspect_all(&mut c, &socket, deadline, &ids).await {
                        order.extend(ids.iter().cloned());
                        inspected.extend(ids.into_iter().zip(v.into_iter().map(Inspected::from)));
                    }
                }
                if failed {
                    // In the stage's order: it reads at most MAX_LOGS tails, the first ones.
                    let mut logs_read = 0;
                    for id in &order {
                        let Some(ins) = inspected.get_mut(id) else { continue };
                        if log_tail(&mut c, ins, port, lines, &mut logs_read).await.is_err() {
                            break; // asked again by the stage
                        }
                    }
                }
                Ok(Early { list, inspected })
            })
        })
        .ok()?;
    Some(Prefetch { handle, outcome })
}

/// Where a container stands in the stage's pick: 0 what the target names directly (its
/// port, its address, a process of interest), and after a failed probe 1 a stopped
/// container, 2 a running one; None when it is not inspected.
fn rank(it: &model::ListItem, direct: bool, wide: bool) -> Option<u8> {
    if direct {
        Some(0)
    } else if !wide {
        None
    } else if it.state != "running" {
        Some(1)
    } else {
        Some(2)
    }
}

/// Whether [`log_tail`] would ask anything.
fn wants_logs(ins: &Inspected, port: u16, lines: usize, logs_read: usize) -> bool {
    let ct = &ins.container;
    let covers = ct.published_on(port).next().is_some() || ct.mapping_to(port).next().is_some();
    !ins.logs_asked && !ct.state.serving() && covers && lines > 0 && logs_read < MAX_LOGS
}

/// Read the last log lines of a stopped container that covers `port` (publishes it or maps
/// to it), at most [`MAX_LOGS`] per run (`logs_read` counts them); once per container.
async fn log_tail(
    c: &mut Client,
    ins: &mut Inspected,
    port: u16,
    lines: usize,
    logs_read: &mut usize,
) -> Result<(), ContainerError> {
    if !wants_logs(ins, port, lines, *logs_read) {
        return Ok(());
    }
    let ct = &mut ins.container;
    let path = format!("/containers/{}/logs?stdout=1&stderr=1&tail={lines}", ct.id);
    let (status, body) = c.get(&path, LOG_LIMIT).await?;
    ins.logs_asked = true;
    *logs_read += 1;
    if status == 200 {
        let text = if ins.tty { String::from_utf8_lossy(&body).into_owned() } else { api::demux_logs(&body) };
        ct.log_tail = last_lines(&text, lines);
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, ContainerError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ContainerError::Runtime)
}

const LIST_PATH: &str = "/containers/json?all=1";

/// Gather container facts. `None` when there is no engine and no process of interest runs
/// in a container (nothing to say); a missing, unreadable or hanging engine is a skipped check.
pub fn gather(req: &Request) -> (Option<ContainerFacts>, Vec<SkippedCheck>) {
    gather_prefetched(req, None)
}

/// [`gather`], taking the list and early inspects from a [`prefetch`] of the same engine.
pub fn gather_prefetched(req: &Request, early: Option<Prefetch>) -> (Option<ContainerFacts>, Vec<SkippedCheck>) {
    let start = Instant::now();
    let by_cgroup: BTreeMap<String, (u32, cgroup::CgroupId)> =
        req.pids.iter().filter_map(|&pid| cgroup::of_pid(pid).map(|c| (c.id.clone(), (pid, c)))).collect();
    let mut skipped = Vec::new();
    let mut facts = ContainerFacts::default();
    let skip = |reason: String, hint: Option<&str>| SkippedCheck {
        check: CHECK.into(),
        reason,
        hint: hint.map(str::to_string),
    };
    match &req.endpoint {
        Endpoint::Unsupported(v) => skipped.push(skip(
            format!("DOCKER_HOST={v} is not a unix socket; only unix:// endpoints are read"),
            Some("set DOCKER_HOST=unix:///var/run/docker.sock (or the engine's socket) to name containers"),
        )),
        Endpoint::Unix(path) if !path.exists() => {
            if req.endpoint_named || !by_cgroup.is_empty() {
                skipped.push(skip(
                    format!("no engine socket at {}", path.display()),
                    Some("set DOCKER_HOST=unix://PATH to the engine's socket to read names, state and port maps"),
                ));
            }
        }
        Endpoint::Unix(_) => match run(req, &mut facts, early) {
            Ok(partial) => {
                facts.endpoint = Some(req.endpoint.label());
                if let Some(why) = partial {
                    skipped.push(skip(why.clone(), None));
                    facts.engine_error = Some(why);
                }
            }
            Err(e) => {
                facts.engine_error = Some(e.to_string());
                let hint = match &e {
                    ContainerError::Connect { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                        Some("reading the engine socket needs root or the docker group")
                    }
                    _ => None,
                };
                skipped.push(skip(e.to_string(), hint));
                facts.containers.clear();
            }
        },
    }
    // Processes in containers the engine did not tell about (another engine, or none).
    for (id, (pid, cg)) in by_cgroup {
        if let Some(c) = facts.containers.iter_mut().find(|c| c.id == id) {
            // Known from the list only (no inspect): its process is the one in its cgroup.
            c.pid = c.pid.or(Some(pid));
            continue;
        }
        facts.containers.push(Container {
            id,
            names: Vec::new(),
            image: String::new(),
            engine: cg.engine,
            state: ContainerState::Unknown,
            exit_code: None,
            oom_killed: None,
            restart_count: None,
            error: None,
            finished_at: None,
            pid: Some(pid),
            netns_inode: None,
            addresses: Vec::new(),
            ports: Vec::new(),
            ports_known: false,
            listeners: Vec::new(),
            listeners_read: false,
            log_tail: Vec::new(),
            source: IdentitySource::Cgroup,
        });
    }
    if facts.endpoint.is_none() && facts.containers.is_empty() {
        return (None, skipped);
    }
    facts.elapsed_us = Micros::from_duration(start.elapsed());
    (Some(facts), skipped)
}

/// Ask the engine. `Ok(Some(why))`: the list was read but the inspects were not, even after
/// one retry within the deadline (a container removed between the two calls, a busy
/// engine); the containers then carry what the list says, and `why` says so.
fn run(req: &Request, facts: &mut ContainerFacts, early: Option<Prefetch>) -> Result<Option<String>, ContainerError> {
    let Endpoint::Unix(socket) = &req.endpoint else { return Ok(None) };
    let early = early.map(|p| {
        p.probe_outcome(req.wide);
        p.handle.join().unwrap_or_else(|_| {
            Err(ContainerError::Http { path: LIST_PATH.into(), message: "the engine thread panicked".into() })
        })
    });
    let rt = runtime()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + req.deadline;
        let (list, mut asked, mut conn) = match early {
            Some(e) => {
                let e = e?;
                (e.list, e.inspected, None)
            }
            None => {
                let mut c = Client::connect(socket, deadline).await?;
                let list: Vec<model::ListItem> = c.get_json(LIST_PATH, LIST_LIMIT).await?;
                (list, BTreeMap::new(), Some(c))
            }
        };
        facts.total = list.len() as u32;
        let pids_ids: Vec<String> = req.pids.iter().filter_map(|&p| cgroup::of_pid(p)).map(|c| c.id).collect();
        // Most telling first; the list is newest first within each group.
        let mut picked: Vec<(u8, &model::ListItem)> = list
            .iter()
            .filter_map(|it| {
                let direct = pids_ids.contains(&it.id)
                    || it.touches_port(req.port)
                    || it.addresses().iter().any(|a| req.addresses.contains(a));
                rank(it, direct, req.wide).map(|r| (r, it))
            })
            .collect();
        picked.sort_by_key(|(r, _)| *r);
        picked.truncate(req.max_inspect);
        let ids: Vec<String> = picked.iter().map(|(_, it)| it.id.clone()).collect();
        // Those the prefetch did not inspect.
        let rest: Vec<String> = ids.iter().filter(|id| !asked.contains_key(*id)).cloned().collect();
        let inspected = if rest.is_empty() {
            Ok(Vec::new())
        } else {
            let first = match conn.take() {
                Some(c) => Ok(c),
                None => Client::connect(socket, deadline).await,
            };
            match first {
                Ok(mut c) => match inspect_all(&mut c, socket, deadline, &rest).await {
                    Ok(v) => {
                        conn = Some(c);
                        Ok(v)
                    }
                    // Once more on a fresh connection, while the deadline allows.
                    Err(e) if !matches!(e, ContainerError::Deadline { .. }) => {
                        match Client::connect(socket, deadline).await {
                            Ok(mut c2) => {
                                let r = inspect_all(&mut c2, socket, deadline, &rest).await;
                                conn = Some(c2);
                                r
                            }
                            Err(_) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        let inspected: Result<Vec<Inspected>, _> = inspected.map(|v| {
            asked.extend(rest.into_iter().zip(v.into_iter().map(Inspected::from)));
            ids.iter().filter_map(|id| asked.remove(id)).collect()
        });
        let inspected = match inspected {
            Ok(v) => v,
            Err(e) => {
                facts.containers = picked.iter().map(|(_, it)| it.to_container()).collect();
                return Ok(Some(format!(
                    "{e}: names, state and published ports of {} container{} are from the engine's list only (GET /containers/json)",
                    ids.len(),
                    if ids.len() == 1 { "" } else { "s" }
                )));
            }
        };
        let mut logs_read = inspected.iter().filter(|i| i.logs_asked).count();
        for mut ins in inspected {
            if wants_logs(&ins, req.port, req.log_lines, logs_read) {
                let c = match &mut conn {
                    Some(c) => c,
                    None => conn.insert(Client::connect(socket, deadline).await?),
                };
                log_tail(c, &mut ins, req.port, req.log_lines, &mut logs_read).await?;
            }
            facts.containers.push(ins.container);
        }
        Ok(None)
    })
}

/// Inspects run on at most this many connections at once: each is a round trip to a daemon
/// that may be busy, and one after another they add up (measured in docs/benchmarks.md,
/// "Docker faults").
const PARALLEL_INSPECTS: usize = 4;

/// `GET /containers/{id}/json` of each id, in the order given, spread over up to
/// [`PARALLEL_INSPECTS`] connections (`c` is one of them); all under the one deadline.
async fn inspect_all(
    c: &mut Client,
    socket: &std::path::Path,
    deadline: tokio::time::Instant,
    ids: &[String],
) -> Result<Vec<model::Inspect>, ContainerError> {
    let path = |id: &str| format!("/containers/{id}/json");
    if ids.len() <= 1 {
        let mut out = Vec::new();
        for id in ids {
            out.push(c.get_json(&path(id), INSPECT_LIMIT).await?);
        }
        return Ok(out);
    }
    // Connection k takes ids k, k + n, k + 2n…; the first one is `c` itself (its share is
    // asked while the others connect).
    let n = PARALLEL_INSPECTS.min(ids.len());
    let mut set = tokio::task::JoinSet::new();
    for k in 1..n {
        let socket = socket.to_path_buf();
        let mine: Vec<(usize, String)> = ids.iter().cloned().enumerate().skip(k).step_by(n).collect();
        set.spawn(async move {
            let mut c = Client::connect(&socket, deadline).await?;
            let mut got = Vec::new();
            for (i, id) in mine {
                got.push((i, c.get_json::<model::Inspect>(&path(&id), INSPECT_LIMIT).await?));
            }
            Ok::<_, ContainerError>(got)
        });
    }
    let mut all: Vec<(usize, model::Inspect)> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate().step_by(n) {
        all.push((i, c.get_json(&path(id), INSPECT_LIMIT).await?));
    }
    while let Some(r) = set.join_next().await {
        let got =
            r.map_err(|e| ContainerError::Http { path: "/containers/{id}/json".into(), message: e.to_string() })??;
        all.extend(got);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, x)| x).collect())
}

/// The last `n` non-empty lines, each cut to 300 characters.
fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.chars().take(300).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in engine on a unix socket, for what a real engine cannot be made to do on
    /// cue (an inspect that fails after the list named the container; every request seen in
    /// order): answers `conns` connections, up to 8 requests on each, with `answer(path)`.
    fn fake_engine(
        sock: &std::path::Path,
        conns: usize,
        answer: impl Fn(&str) -> (&'static str, Vec<u8>) + Send + Sync + 'static,
    ) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
        let answer = std::sync::Arc::new(answer);
        std::thread::spawn(move || {
            for c in listener.incoming().take(conns) {
                let Ok(c) = c else { continue };
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    for _ in 0..8 {
                        let mut first = String::new();
                        if r.read_line(&mut first).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut l = String::new();
                        while r.read_line(&mut l).is_ok_and(|n| n > 2) {
                            l.clear();
                        }
                        let (status, body) = answer(first.split_whitespace().nth(1).unwrap_or(""));
                        let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n", body.len());
                        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(&body)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn keeps_the_last_lines() {
        assert_eq!(last_lines("a\n\nb\r\nc\n", 2), vec!["b", "c"]);
        assert_eq!(last_lines("", 5), Vec::<String>::new());
        assert_eq!(last_lines(&"x".repeat(1000), 1)[0].len(), 300);
    }

    #[test]
    fn missing_socket_is_quiet_unless_named() {
        let mut r = Request::new(6379);
        r.endpoint = Endpoint::Unix("/nonexistent/docker.sock".into());
        r.endpoint_named = false;
        let (f, s) = gather(&r);
        assert!(f.is_none() && s.is_empty());
        r.endpoint_named = true;
        let (f, s) = gather(&r);
        assert!(f.is_none());
        assert_eq!(s.len(), 1);
        assert!(s[0].reason.contains("/nonexistent/docker.sock"), "{:?}", s[0]);
    }

    /// The race seen under load: the engine lists a container, and its inspect fails (here
    /// a 404, as for a container removed in between). The inspect is asked once more; then
    /// the list's facts are kept, with the reason, instead of none.
    #[test]
    fn failed_inspect_is_retried_then_the_list_is_kept() {
        let dir = conndoc_testsupport::TempDir::new("container-race");
        let sock = dir.join("docker.sock");
        let inspects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = inspects.clone();
        fake_engine(&sock, 4, move |path| {
            if path.starts_with("/containers/json") {
                let list = r#"[{"Id":"e789749d466b394f7abd25eab1ccda533d154f6a4df486ee2c8589f53e3cfa6d","Names":["/cache"],"State":"running","Ports":[{"IP":"0.0.0.0","PrivatePort":6379,"PublicPort":6380,"Type":"tcp"}]}]"#;
                ("200 OK", list.as_bytes().to_vec())
            } else {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ("404 Not Found", br#"{"message":"No such container"}"#.to_vec())
            }
        });
        let mut r = Request::new(6379);
        r.endpoint = Endpoint::Unix(sock);
        r.wide = true;
        let (f, s) = gather(&r);
        assert_eq!(inspects.load(std::sync::atomic::Ordering::SeqCst), 2, "asked once more");
        let f = f.expect("the list's facts are kept");
        assert_eq!(f.containers.len(), 1);
        let c = &f.containers[0];
        assert_eq!((c.name(), c.ports_text().as_str()), ("cache", "0.0.0.0:6380 → 6379/tcp"));
        assert!(c.ports_known);
        let why = f.engine_error.as_deref().unwrap_or_default();
        assert!(why.contains("status 404") && why.contains("from the engine's list only"), "{why}");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].reason, why);
    }

    /// A stopped container that publishes the port: the list shows it with no ports (the
    /// engine lists a stopped container's ports empty), so only a failed probe has it
    /// inspected. Told of the failure, the engine thread inspects it and reads its log tail
    /// before the stage takes the answers; the stage then asks nothing more.
    #[test]
    fn a_failed_probe_widens_the_prefetch() {
        let dir = conndoc_testsupport::TempDir::new("container-prefetch");
        let sock = dir.join("docker.sock");
        let asked = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = asked.clone();
        let id = "0c07112a2837fb7f6e09c371effda32ac065396fc05acc3d1568f73e98ee0aff";
        fake_engine(&sock, 8, move |path| {
            seen.lock().unwrap().push(path.to_string());
            let body: Vec<u8> = if path.starts_with("/containers/json") {
                format!(r#"[{{"Id":"{id}","Names":["/stopped"],"State":"exited","Ports":[]}}]"#).into_bytes()
            } else if path.contains("/logs") {
                let mut b = vec![2, 0, 0, 0, 0, 0, 0, 12];
                b.extend_from_slice(b"Fatal error\n");
                b
            } else {
                format!(r#"{{"Id":"{id}","Name":"/stopped","State":{{"Status":"exited","ExitCode":1}},"HostConfig":{{"PortBindings":{{"6384/tcp":[{{"HostIp":"","HostPort":"6384"}}]}}}}}}"#).into_bytes()
            };
            ("200 OK", body)
        });
        let mut r = Request::new(6384);
        r.endpoint = Endpoint::Unix(sock);
        let early = prefetch(&r).expect("a socket");
        early.probe_outcome(true);
        let want = [
            "/containers/json?all=1",
            &format!("/containers/{id}/json"),
            &format!("/containers/{id}/logs?stdout=1&stderr=1&tail=10"),
        ];
        for _ in 0..500 {
            if asked.lock().unwrap().len() >= want.len() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*asked.lock().unwrap(), want, "asked on the engine thread");
        r.wide = true;
        let (f, s) = gather_prefetched(&r, Some(early));
        assert!(s.is_empty(), "{s:?}");
        let f = f.expect("facts");
        assert_eq!(f.containers.len(), 1);
        let c = &f.containers[0];
        assert_eq!(
            (c.name(), c.exit_code, c.log_tail.as_slice()),
            ("stopped", Some(1), &["Fatal error".to_string()][..])
        );
        assert_eq!(asked.lock().unwrap().len(), want.len(), "nothing asked twice: {:?}", asked.lock().unwrap());
        // Not told (a healthy probe): the stopped container is not inspected early.
        let early = prefetch(&r).expect("a socket");
        early.probe_outcome(false);
        r.wide = false;
        let (f, _) = gather_prefetched(&r, Some(early));
        assert!(f.is_some_and(|f| f.containers.is_empty()));
        assert_eq!(asked.lock().unwrap().len(), want.len() + 1, "the list only");
    }

    /// A socket that accepts and never answers is bounded by the deadline.
    #[test]
    fn hanging_socket_is_bounded() {
        let dir = conndoc_testsupport::TempDir::new("container-hang");
        let sock = dir.join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let mut r = Request::new(6379);
        r.endpoint = Endpoint::Unix(sock);
        r.deadline = Duration::from_millis(200);
        let t = Instant::now();
        let (f, s) = gather(&r);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(f.is_none());
        assert_eq!(s.len(), 1);
        assert!(s[0].reason.contains("did not answer in time"), "{:?}", s[0]);
    }
}
