//! The daemon: one scheduled task per target, the state machine and its change hook, the
//! diagnosis on every transition to down, the alert outbox, history flushing and pruning,
//! reload on SIGHUP and a graceful stop on SIGTERM/SIGINT.

use crate::config::{CheckKind, Config, Overrides, ReceiverKind, TargetConfig};
use crate::health::{State, Transition};
use crate::history::{now_ms, Bucket, Diagnosis, History, SavedState};
use crate::outbox::{Alert, Firing, Outbox};
use crate::probe::{self, ProbeResult};
use crate::scheduler::Schedule;
use crate::snapshot::{ReadModel, Snapshot, TargetView};
use crate::state::{AfterEvent, RecordParams, TargetState};
use crate::stats::Stats;
use conndoc_facts::ConnectKind;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    History(#[from] crate::history::HistoryError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signal(std::io::Error),
}

/// Called on every state change (after the state machine flipped), before any diagnosis.
pub type ChangeHook = Arc<dyn Fn(&str, Transition) + Send + Sync>;

/// One target: its config, its pure state (crate::state) and the task that probes it.
pub struct Entry {
    pub cfg: Arc<TargetConfig>,
    pub st: TargetState,
    generation: u64,
    task: Option<JoinHandle<()>>,
}

impl Entry {
    fn new(cfg: Arc<TargetConfig>) -> Entry {
        Entry {
            st: TargetState::new(cfg.failures_before_down, cfg.successes_before_up, now_ms()),
            cfg,
            generation: 0,
            task: None,
        }
    }
}

pub struct Daemon {
    pub cfg: RwLock<Arc<Config>>,
    pub overrides: Overrides,
    /// By name. A hash map: every probe looks its target up, and a B-tree's string
    /// comparisons over 10,000 names were ~4% of the daemon's CPU. Views sort.
    pub targets: Mutex<HashMap<String, Entry>>,
    pub history: Arc<History>,
    pub stats: Arc<Stats>,
    /// What the dashboard, the API and /metrics render from.
    pub view: Arc<ReadModel>,
    publish_wake: Notify,
    pub hostname: String,
    pub start_unix: f64,
    epoch: Instant,
    probe_sem: Arc<Semaphore>,
    /// Sockets reused by `close = "rst"` probes (at most `concurrency` of them).
    sockets: probe::Sockets,
    diag_sem: Arc<Semaphore>,
    outbox: Arc<Outbox>,
    stop: watch::Sender<bool>,
    hook: Option<ChangeHook>,
    next_generation: std::sync::atomic::AtomicU64,
}

use crate::diagnosis::Diagnosed;
pub use crate::sys::log;
pub use conndoc_probe::time::rfc3339;

/// The read model is refreshed at least this often.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Run the daemon until SIGTERM/SIGINT. Builds its own runtime.
pub fn run_blocking(cfg: Config, overrides: Overrides, hook: Option<ChangeHook>) -> Result<(), WatchError> {
    crate::sys::limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(64)
        .enable_all()
        .thread_name("conndoc-watch")
        .build()
        .map_err(WatchError::Runtime)?;
    rt.block_on(run(cfg, overrides, hook))
}

pub async fn run(cfg: Config, overrides: Overrides, hook: Option<ChangeHook>) -> Result<(), WatchError> {
    let history = Arc::new(History::open(&cfg.history)?);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| WatchError::Listen { addr: cfg.listen, source })?;
    let (stop, _) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let start_unix = now_ms() as f64 / 1000.0;
    let view = Arc::new(ReadModel::new(
        Snapshot::new(now_ms(), Vec::new(), Arc::new(cfg.clone())),
        stats.clone(),
        history.clone(),
        start_unix,
    ));
    let d = Arc::new(Daemon {
        probe_sem: Arc::new(Semaphore::new(cfg.concurrency)),
        sockets: probe::Sockets::default(),
        diag_sem: Arc::new(Semaphore::new(cfg.diagnose_concurrency)),
        outbox: Arc::new(Outbox::new(history.clone(), stats.clone(), hostname.clone(), &cfg.receivers)),
        cfg: RwLock::new(Arc::new(cfg.clone())),
        overrides,
        targets: Mutex::new(HashMap::new()),
        history,
        stats: stats.clone(),
        view: view.clone(),
        publish_wake: Notify::new(),
        hostname,
        start_unix,
        epoch: Instant::now(),
        stop,
        hook,
        next_generation: 1.into(),
    });
    let saved = {
        let h = d.history.clone();
        tokio::task::spawn_blocking(move || h.load_states()).await.expect("load task")?
    };
    let saved: BTreeMap<String, SavedState> = saved.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut rediagnose = Vec::new();
    {
        let mut map = d.targets.lock().unwrap();
        for t in &cfg.targets {
            let mut e = Entry::new(Arc::new(t.clone()));
            if let Some(s) = saved.get(&t.name).filter(|s| s.url == t.url.shown()) {
                e.st.health.state = s.state;
                e.st.cause = s.cause.clone();
                e.st.since_ms = s.since_ms;
                e.st.down_since_ms = s.since_ms;
                e.st.event_id = s.event_id;
                // Killed while diagnosing: the event exists without its report; finish it.
                if s.state == State::Down && s.cause.is_none() {
                    if let Some(id) = s.event_id {
                        e.st.diagnosing = true;
                        rediagnose.push((t.name.clone(), id));
                    }
                }
            }
            map.insert(t.name.clone(), e);
        }
    }
    log(
        "info",
        format!(
            "conndoc watch {}: {} targets, listening on http://{}, history {}",
            env!("CARGO_PKG_VERSION"),
            cfg.targets.len(),
            cfg.listen,
            cfg.history.display()
        ),
    );
    d.view.publish(d.build_snapshot());
    let server = tokio::spawn(crate::http::serve(d.view.clone(), listener, d.stop.subscribe()));
    let publisher = tokio::spawn(d.clone().publish_loop());
    d.start_all();
    for (name, id) in rediagnose {
        tokio::spawn(d.clone().diagnose(name, id));
    }
    let alerts = {
        let d2 = d.clone();
        tokio::spawn(d.outbox.clone().deliver_loop(move || d2.config(), d.stop.subscribe()))
    };
    let flusher = tokio::spawn(d.clone().flush_loop());
    let resender = tokio::spawn(d.clone().resend_loop());

    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(WatchError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(WatchError::Signal)?;
    loop {
        tokio::select! {
            _ = hup.recv() => d.reload(),
            _ = term.recv() => { log("info", "SIGTERM: stopping"); break }
            _ = int.recv() => { log("info", "SIGINT: stopping"); break }
        }
    }
    resender.abort();
    publisher.abort();
    d.shutdown(server, alerts, flusher).await;
    Ok(())
}

impl Daemon {
    pub fn config(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn start_all(self: &Arc<Self>) {
        let mut map = self.targets.lock().unwrap();
        for e in map.values_mut() {
            self.start_target(e);
        }
    }

    fn start_target(self: &Arc<Self>, e: &mut Entry) {
        if let Some(t) = e.task.take() {
            t.abort();
        }
        let generation = self.next_generation.fetch_add(1, Relaxed);
        e.generation = generation;
        e.task = Some(tokio::spawn(self.clone().target_loop(e.cfg.clone(), generation, self.stop.subscribe())));
    }

    /// Probe one target on its schedule: nominal times are `epoch + phase + k*interval`, so
    /// lateness never accumulates (no drift); jitter is added per tick and not carried over.
    async fn target_loop(self: Arc<Self>, cfg: Arc<TargetConfig>, generation: u64, mut stop: watch::Receiver<bool>) {
        let interval = cfg.interval;
        let mut schedule = Schedule::new(&cfg.name, self.epoch, interval, self.config().jitter, Instant::now());
        loop {
            let due = schedule.next_due();
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.changed() => return,
            }
            let permit = match self.probe_sem.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let lag = Instant::now().saturating_duration_since(due);
            self.stats.record_lag(lag, interval);
            self.stats.probes_in_flight.fetch_add(1, Relaxed);
            let r = match cfg.check {
                CheckKind::Connect => probe::check_with(&cfg.target, cfg.timeout, cfg.close, Some(&self.sockets)).await,
                CheckKind::Diagnose => self.full_check(&cfg).await,
            };
            self.stats.probes_in_flight.fetch_sub(1, Relaxed);
            drop(permit);
            self.record(&cfg.name, generation, r);
            let missed = schedule.advance(Instant::now());
            self.stats.skipped.fetch_add(missed, Relaxed);
        }
    }

    /// `check = "diagnose"`: the full diagnosis is the health check.
    async fn full_check(&self, cfg: &TargetConfig) -> ProbeResult {
        let start = Instant::now();
        let (t, o) = (cfg.target.clone(), cfg.engine_options());
        let r = tokio::task::spawn_blocking(move || {
            conndoc_engine::gather(t, &o).map(|ev| conndoc_diagnose::diagnose(&ev))
        })
        .await;
        let ok = matches!(&r, Ok(Ok(rep)) if rep.exit_status() == 0);
        ProbeResult {
            kind: if ok { ConnectKind::Connected } else { ConnectKind::Other },
            elapsed: start.elapsed(),
            errno: None,
            unresolved: false,
            peer_close: None,
        }
    }

    /// Account one result and run the state machine.
    fn record(self: &Arc<Self>, name: &str, generation: u64, r: ProbeResult) {
        let now = now_ms();
        let cfg = self.config();
        let res = cfg.history_resolution.as_millis().max(1) as i64;
        let rediagnose_every = cfg.rediagnose.as_millis() as i64;
        drop(cfg);
        let p = RecordParams { resolution_ms: res, rediagnose_ms: rediagnose_every };
        let fx = {
            let mut map = self.targets.lock().unwrap();
            let Some(e) = map.get_mut(name) else { return };
            if e.generation != generation {
                return;
            }
            self.stats.probes.fetch_add(1, Relaxed);
            e.st.record(r, now, p)
        };
        let (transition, rediagnose) = (fx.transition, fx.rediagnose);
        let Some(t) = transition else {
            if let Some(id) = rediagnose {
                tokio::spawn(self.clone().rediagnose(name.to_string(), id));
            }
            return;
        };
        log("info", format!("target {name}: {} -> {}", t.from, t.to));
        self.changed();
        if let Some(h) = &self.hook {
            h(name, t);
        }
        tokio::spawn(self.clone().on_transition(name.to_string(), t, now));
    }

    async fn on_transition(self: Arc<Self>, name: String, t: Transition, at_ms: i64) {
        let saved = {
            let map = self.targets.lock().unwrap();
            let Some(e) = map.get(&name) else { return };
            SavedState {
                name: name.clone(),
                url: e.cfg.url.shown().to_string(),
                state: t.to,
                cause: e.st.cause.clone(),
                since_ms: at_ms,
                event_id: None,
            }
        };
        let h = self.history.clone();
        let cause = saved.cause.clone();
        let id = match tokio::task::spawn_blocking(move || h.transition(&saved, t.from, cause.as_deref(), None)).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                self.stats.history_errors.fetch_add(1, Relaxed);
                log("error", e.to_string());
                return;
            }
            Err(_) => return,
        };
        let next = {
            let mut map = self.targets.lock().unwrap();
            let Some(e) = map.get_mut(&name) else { return };
            e.st.event_stored(t, at_ms, id)
        };
        match next {
            AfterEvent::Diagnose { event_id } => self.clone().diagnose(name, event_id).await,
            AfterEvent::Resolved { event_id, down_event } => self.queue_resolved(&name, event_id, down_event).await,
            AfterEvent::ResolveAfterDiagnosis | AfterEvent::Nothing => {}
        }
    }

    /// Full diagnosis of a target that went down; stores the report with the event and
    /// queues the firing alerts (and the resolved ones if it already came back).
    async fn diagnose(self: Arc<Self>, name: String, event_id: i64) {
        let Some(dg) = self.run_diagnosis(&name).await else { return };
        let (after, cfg, down_since) = {
            let mut map = self.targets.lock().unwrap();
            let Some(e) = map.get_mut(&name) else { return };
            e.st.fix = dg.fix.clone();
            let after = e.st.diagnosed(event_id, &dg.cause, &dg.summary, dg.container.clone(), true);
            (after, e.cfg.clone(), e.st.down_since_ms)
        };
        self.changed();
        log("info", format!("target {name}: diagnosis {}: {}", dg.cause, dg.summary));
        let a = Alert {
            status: "firing",
            cause: &dg.cause,
            summary: &dg.summary,
            details: Some(&dg.text),
            fix: dg.fix.as_deref(),
            container: dg.container.as_deref(),
        };
        let conf = self.config();
        let mut alerts = self.outbox.build(&conf, &cfg, &a, event_id, down_since, None);
        if after.send_resolved {
            let a = Alert { status: "resolved", details: None, ..a };
            alerts.extend(self.outbox.build(&conf, &cfg, &a, event_id, down_since, None));
        }
        let h = self.history.clone();
        let n = name.clone();
        let r = tokio::task::spawn_blocking(move || {
            h.diagnosed(
                event_id,
                &n,
                &Diagnosis { cause: &dg.cause, summary: &dg.summary, report_json: &dg.json },
                after.still_down,
                &alerts,
            )
        })
        .await;
        if let Ok(Err(e)) = r {
            self.stats.history_errors.fetch_add(1, Relaxed);
            log("error", e.to_string());
        }
        self.outbox.wake();
    }

    /// A later diagnosis while still down: update the cause and the stored report.
    async fn rediagnose(self: Arc<Self>, name: String, event_id: i64) {
        let Some(dg) = self.run_diagnosis(&name).await else { return };
        let after = {
            let mut map = self.targets.lock().unwrap();
            let Some(e) = map.get_mut(&name) else { return };
            e.st.fix = dg.fix.clone();
            e.st.diagnosed(event_id, &dg.cause, &dg.summary, dg.container.clone(), false)
        };
        self.changed();
        if after.current {
            let h = self.history.clone();
            let _ = tokio::task::spawn_blocking(move || {
                h.diagnosed(
                    event_id,
                    &name,
                    &Diagnosis { cause: &dg.cause, summary: &dg.summary, report_json: &dg.json },
                    true,
                    &[],
                )
            })
            .await;
        }
    }

    /// A full diagnosis of the target, on a blocking thread, at most `diagnose_concurrency` at once.
    async fn run_diagnosis(&self, name: &str) -> Option<Diagnosed> {
        let cfg = self.targets.lock().unwrap().get(name)?.cfg.clone();
        let _permit = self.diag_sem.acquire().await.ok()?;
        self.stats.diagnoses.fetch_add(1, Relaxed);
        self.stats.diagnoses_in_flight.fetch_add(1, Relaxed);
        let (t, o) = (cfg.target.clone(), cfg.engine_options());
        let r = tokio::task::spawn_blocking(move || {
            conndoc_engine::gather(t, &o).map(|ev| Diagnosed::from_report(&conndoc_diagnose::diagnose(&ev)))
        })
        .await;
        self.stats.diagnoses_in_flight.fetch_sub(1, Relaxed);
        Some(match r {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                self.stats.diagnosis_errors.fetch_add(1, Relaxed);
                Diagnosed::failed(&e.to_string())
            }
            Err(e) => {
                self.stats.diagnosis_errors.fetch_add(1, Relaxed);
                Diagnosed::failed(&e.to_string())
            }
        })
    }

    async fn queue_resolved(&self, name: &str, event_id: i64, down_event: Option<i64>) {
        let (cfg, cause, down_since, container) = {
            let map = self.targets.lock().unwrap();
            let Some(e) = map.get(name) else { return };
            (e.cfg.clone(), String::from("unknown"), e.st.down_since_ms, e.st.container.clone())
        };
        let h = self.history.clone();
        // The cause it had while down, for the resolved message.
        let prev_cause = match down_event {
            Some(_) => {
                let n = name.to_string();
                tokio::task::spawn_blocking(move || h.events(&n, 2))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .and_then(|ev| ev.into_iter().find(|e| e.to == State::Down).and_then(|e| e.cause))
                    .unwrap_or(cause)
            }
            None => cause,
        };
        let a = Alert {
            status: "resolved",
            cause: &prev_cause,
            summary: "up again",
            details: None,
            fix: None,
            container: container.as_deref(),
        };
        let alerts = self.outbox.build(&self.config(), &cfg, &a, event_id, down_since, None);
        // In order after any Alertmanager re-send of the firing alert (see resend_loop).
        let _order = self.outbox.order.lock().await;
        self.outbox.queue(event_id, alerts).await;
    }

    /// While a target stays down, its firing alert goes to Alertmanager again (Outbox::resend).
    async fn resend_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            let cfg = self.config();
            if !cfg.receivers.iter().any(|r| r.kind == ReceiverKind::Alertmanager) {
                continue;
            }
            let _order = self.outbox.order.lock().await;
            let due: Vec<Firing> = {
                let map = self.targets.lock().unwrap();
                map.values()
                    .filter(|e| e.st.health.state == State::Down && !e.st.diagnosing)
                    .filter_map(|e| {
                        Some(Firing {
                            t: e.cfg.clone(),
                            cause: e.st.cause.clone()?,
                            summary: e.st.summary.clone().unwrap_or_default(),
                            fix: e.st.fix.clone(),
                            container: e.st.container.clone(),
                            event_id: e.st.event_id?,
                            down_since: e.st.down_since_ms,
                        })
                    })
                    .collect()
            };
            self.outbox.resend(&cfg, &due, now_ms()).await;
        }
    }

    /// Write the downsampled probe results every few seconds; prune every ten minutes.
    async fn flush_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut last_prune: Option<Instant> = None;
        loop {
            let period = self.config().history_resolution.min(Duration::from_secs(10));
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.changed() => return,
            }
            self.flush().await;
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
                last_prune = Some(Instant::now());
                let cfg = self.config();
                let h = self.history.clone();
                match tokio::task::spawn_blocking(move || h.prune(cfg.retention, cfg.max_history_bytes, now_ms())).await
                {
                    Ok(Ok(n)) if n > 0 => log("info", format!("history: pruned {n} old rows")),
                    Ok(Err(e)) => log("error", e.to_string()),
                    _ => {}
                }
            }
        }
    }

    pub async fn flush(&self) {
        let rows: Vec<(String, i64, Bucket)> = {
            let mut map = self.targets.lock().unwrap();
            map.iter_mut()
                .flat_map(|(n, e)| {
                    std::mem::take(&mut e.st.unflushed).into_iter().map(|(b, v)| (n.clone(), b, v)).collect::<Vec<_>>()
                })
                .collect()
        };
        let h = self.history.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || h.add_buckets(&rows)).await {
            self.stats.history_errors.fetch_add(1, Relaxed);
            log("error", e.to_string());
        }
    }

    /// SIGHUP: re-read the file; keep the state of every target whose probe did not change.
    pub fn reload(self: &Arc<Self>) {
        let path = self.config().path.clone();
        let new = match crate::config::load(&path, &self.overrides) {
            Ok(c) => c,
            Err(e) => {
                self.stats.reloads_failed.fetch_add(1, Relaxed);
                for line in e.errors() {
                    log("error", format!("reload rejected, keeping the running config: {line}"));
                }
                return;
            }
        };
        let old = self.config();
        if new.listen != old.listen || new.history != old.history {
            log("warn", "reload: listen and history changes take effect at the next restart");
        }
        let mut new = new;
        new.listen = old.listen;
        new.history = old.history.clone();
        let (mut kept, mut added, mut removed) = (0, 0, 0);
        {
            let mut map = self.targets.lock().unwrap();
            let names: std::collections::HashSet<_> = new.targets.iter().map(|t| t.name.clone()).collect();
            map.retain(|n, e| {
                let keep = names.contains(n);
                if !keep {
                    if let Some(t) = e.task.take() {
                        t.abort();
                    }
                    removed += 1;
                }
                keep
            });
            for t in &new.targets {
                let cfg = Arc::new(t.clone());
                match map.get_mut(&t.name) {
                    Some(e) if e.cfg.same_probe(t) => {
                        e.st.health.failures_before_down = t.failures_before_down;
                        e.st.health.successes_before_up = t.successes_before_up;
                        let restart =
                            e.cfg.interval != t.interval || e.cfg.timeout != t.timeout || e.cfg.check != t.check;
                        e.cfg = cfg;
                        if restart {
                            self.start_target(e);
                        }
                        kept += 1;
                    }
                    _ => {
                        let mut e = Entry::new(cfg);
                        self.start_target(&mut e);
                        if let Some(old) = map.insert(t.name.clone(), e) {
                            if let Some(task) = old.task {
                                task.abort();
                            }
                        }
                        added += 1;
                    }
                }
            }
        }
        self.outbox.set_receivers(&new.receivers);
        *self.cfg.write().unwrap() = Arc::new(new);
        self.stats.reloads_ok.fetch_add(1, Relaxed);
        self.changed();
        log(
            "info",
            format!(
                "reloaded {}: {kept} targets kept with their state, {added} new, {removed} removed",
                path.display()
            ),
        );
    }

    async fn shutdown(self: &Arc<Self>, server: JoinHandle<()>, alerts: JoinHandle<()>, flusher: JoinHandle<()>) {
        let _ = self.stop.send(true);
        // In-flight probes end within their own deadline; give them that long, then cancel.
        let longest = {
            let map = self.targets.lock().unwrap();
            map.values().map(|e| e.cfg.timeout).max().unwrap_or_default()
        };
        let tasks: Vec<_> = self.targets.lock().unwrap().values_mut().filter_map(|e| e.task.take()).collect();
        let wait = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(longest + Duration::from_millis(500), wait).await.is_err() {
            log("warn", "stop: cancelled probes that outlived their deadline");
        }
        // Diagnoses in flight are left to finish only briefly; their events are completed at
        // the next start.
        let deadline = Instant::now() + longest.max(Duration::from_secs(1)) * 2;
        while self.stats.diagnoses_in_flight.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), alerts).await;
        flusher.abort();
        server.abort();
        self.flush().await;
        let h = self.history.clone();
        let _ = tokio::task::spawn_blocking(move || h.checkpoint()).await;
        log("info", "stopped; history flushed");
    }

    /// Copy every target's state into a new snapshot (the lock is held only to copy).
    pub fn build_snapshot(&self) -> Snapshot {
        let views: Vec<TargetView> = {
            let map = self.targets.lock().unwrap();
            map.values()
                .map(|e| TargetView {
                    name: e.cfg.name.clone(),
                    url: e.cfg.url.clone(),
                    labels: e.cfg.labels.clone(),
                    state: e.st.health.state,
                    cause: e.st.shown_cause().to_string(),
                    summary: e.st.summary.clone(),
                    container: e.st.container.clone(),
                    since_ms: e.st.since_ms,
                    last_ms: e.st.last_ms,
                    last_latency: e.st.last.map(|r| r.elapsed),
                    last_outcome: e.st.last.map(|r| r.outcome_label()),
                    diagnosing: e.st.diagnosing,
                    interval: e.cfg.interval,
                    cfg: e.cfg.clone(),
                    duration: e.st.duration.clone(),
                    outcomes: e.st.outcomes.clone(),
                    failures_by_cause: e.st.failures_by_cause.clone(),
                    transitions: e.st.transitions.clone(),
                    unflushed: e.st.unflushed.iter().map(|(b, v)| (*b, *v)).collect(),
                })
                .collect()
        };
        Snapshot::new(now_ms(), views, self.config())
    }

    /// Publish a fresh snapshot at once after a change that people look for (a transition,
    /// a diagnosis, a reload) and at least every second for the counters. Built on a
    /// blocking thread: never on the runtime worker that schedules the probes.
    async fn publish_loop(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PUBLISH_EVERY) => {}
                _ = self.publish_wake.notified() => {}
                _ = stop.changed() => return,
            }
            let d = self.clone();
            let _ = tokio::task::spawn_blocking(move || d.view.publish(d.build_snapshot())).await;
        }
    }

    /// Ask for a new snapshot soon (coalesced: many changes in a burst make one).
    pub fn changed(&self) {
        self.publish_wake.notify_one();
    }
}
