//! The daemon: one scheduled task per target, the state machine and its change hook, the
//! diagnosis on every transition to down, the alert outbox, history flushing and pruning,
//! reload on SIGHUP and a graceful stop on SIGTERM/SIGINT.

use crate::config::{CheckKind, Config, Overrides, ReceiverKind, TargetConfig};
use crate::health::{State, Transition};
use crate::history::{now_ms, Diagnosis, History, SavedState};
use crate::outbox::{Alert, Outbox};
use crate::probe::{self, ProbeResult};
use crate::scheduler::Schedule;
use crate::snapshot::{ReadModel, Snapshot, Source};
use crate::state::{AfterEvent, RecordParams};
use crate::stats::Stats;
use crate::table::{Entry, Table};
use conndoc_facts::ConnectKind;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
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

/// The running daemon's parts, each behind its own narrow methods: the config, the targets
/// table (crate::table: per-target state and task), the history database, the counters, the
/// read model the views render from, the outbox, and what the probe tasks share.
pub struct Daemon {
    /// Shared with the read model's [`Live`] source, as is `targets`.
    cfg: Arc<RwLock<Arc<Config>>>,
    overrides: Overrides,
    targets: Arc<Table>,
    history: Arc<History>,
    stats: Arc<Stats>,
    /// What the dashboard, the API and /metrics render from.
    view: Arc<ReadModel>,
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

/// The live targets and the running config, as the read model's source: a snapshot is
/// copied from them when a view asks (crate::snapshot), never after a check.
struct Live {
    targets: Arc<Table>,
    cfg: Arc<RwLock<Arc<Config>>>,
}

impl Source for Live {
    fn build(&self) -> Arc<Snapshot> {
        let (views, mark) = self.targets.views();
        Arc::new(Snapshot::at(now_ms(), views, self.config(), mark))
    }
    fn build_one(&self, name: &str) -> Option<Arc<Snapshot>> {
        let (view, mark) = self.targets.view_of(name)?;
        Some(Arc::new(Snapshot::at(now_ms(), vec![view], self.config(), mark)))
    }
    fn config(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

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

/// Start, then reload on SIGHUP and stop on SIGTERM/SIGINT.
pub async fn run(cfg: Config, overrides: Overrides, hook: Option<ChangeHook>) -> Result<(), WatchError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(WatchError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(WatchError::Signal)?;
    let running = start(cfg, overrides, hook).await?;
    loop {
        tokio::select! {
            _ = hup.recv() => running.daemon().reload(),
            _ = term.recv() => { log("info", "SIGTERM: stopping"); break }
            _ = int.recv() => { log("info", "SIGINT: stopping"); break }
        }
    }
    running.stop().await;
    Ok(())
}

/// A started daemon and its background tasks; [`Running::stop`] ends them in order.
pub struct Running {
    d: Arc<Daemon>,
    addr: std::net::SocketAddr,
    server: JoinHandle<()>,
    alerts: JoinHandle<()>,
    flusher: JoinHandle<()>,
    resender: JoinHandle<()>,
}

impl Running {
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.d
    }
    /// Where the dashboard listens (the real port when the config said port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    /// Stop probing, let in-flight work end within its deadlines, flush the history.
    pub async fn stop(self) {
        self.resender.abort();
        self.d.shutdown(self.server, self.alerts, self.flusher).await;
    }
}

/// Open the history, restore the saved states, listen, and start every task.
pub async fn start(cfg: Config, overrides: Overrides, hook: Option<ChangeHook>) -> Result<Running, WatchError> {
    let history = Arc::new(History::open(&cfg.history)?);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| WatchError::Listen { addr: cfg.listen, source })?;
    let addr = listener.local_addr().unwrap_or(cfg.listen);
    let (stop, _) = watch::channel(false);
    let stats = Arc::new(Stats::default());
    let hostname =
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let start_unix = now_ms() as f64 / 1000.0;
    let targets = Arc::new(Table::default());
    let shared_cfg = Arc::new(RwLock::new(Arc::new(cfg.clone())));
    let live = Live { targets: targets.clone(), cfg: shared_cfg.clone() };
    let view = Arc::new(ReadModel::new(live, stats.clone(), history.clone(), start_unix));
    let d = Arc::new(Daemon {
        probe_sem: Arc::new(Semaphore::new(cfg.concurrency)),
        sockets: probe::Sockets::default(),
        diag_sem: Arc::new(Semaphore::new(cfg.diagnose_concurrency)),
        outbox: Arc::new(Outbox::new(history.clone(), stats.clone(), hostname, &cfg.receivers)),
        cfg: shared_cfg,
        overrides,
        targets,
        history,
        stats,
        view,
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
    for t in &cfg.targets {
        let mut e = Entry::new(Arc::new(t.clone()), now_ms());
        // Killed while diagnosing: the event exists without its report; finish it.
        if let Some(id) = saved.get(&t.name).and_then(|s| e.restore(s)) {
            rediagnose.push((t.name.clone(), id));
        }
        d.targets.insert(e);
    }
    log(
        "info",
        format!(
            "conndoc watch {}: {} targets, listening on http://{addr}, history {}",
            env!("CARGO_PKG_VERSION"),
            cfg.targets.len(),
            cfg.history.display()
        ),
    );
    let server = tokio::spawn(crate::http::serve(d.view.clone(), listener, d.stop.subscribe()));
    d.targets.for_each(|e| d.start_target(e));
    for (name, id) in rediagnose {
        tokio::spawn(d.clone().diagnose(name, id));
    }
    let alerts = {
        let d2 = d.clone();
        tokio::spawn(d.outbox.clone().deliver_loop(move || d2.config(), d.stop.subscribe()))
    };
    let flusher = tokio::spawn(d.clone().flush_loop());
    let resender = tokio::spawn(d.clone().resend_loop());
    Ok(Running { d, addr, server, alerts, flusher, resender })
}

impl Daemon {
    pub fn config(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The counters (also what /metrics shows).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// What the dashboard, the API and /metrics render from.
    pub fn read_model(&self) -> &Arc<ReadModel> {
        &self.view
    }

    fn start_target(self: &Arc<Self>, e: &mut Entry) {
        let generation = self.next_generation.fetch_add(1, Relaxed);
        e.set_task(
            generation,
            tokio::spawn(self.clone().target_loop(e.cfg.clone(), generation, self.stop.subscribe())),
        );
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
        let Some(fx) = self.targets.record(name, generation, r, now, p) else { return };
        self.stats.probes.fetch_add(1, Relaxed);
        let (transition, rediagnose) = (fx.transition, fx.rediagnose);
        let Some(t) = transition else {
            if let Some(id) = rediagnose {
                tokio::spawn(self.clone().rediagnose(name.to_string(), id));
            }
            return;
        };
        log("info", format!("target {name}: {} -> {}", t.from, t.to));
        if let Some(h) = &self.hook {
            h(name, t);
        }
        tokio::spawn(self.clone().on_transition(name.to_string(), t, now));
    }

    async fn on_transition(self: Arc<Self>, name: String, t: Transition, at_ms: i64) {
        let Some(saved) = self.targets.with(&name, |e| SavedState {
            name: name.clone(),
            url: e.cfg.url.shown().to_string(),
            state: t.to,
            cause: e.st.cause.clone(),
            since_ms: at_ms,
            event_id: None,
        }) else {
            return;
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
        let Some(next) = self.targets.with(&name, |e| e.st.event_stored(t, at_ms, id)) else { return };
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
        let Some((after, cfg, down_since)) = self.targets.with(&name, |e| {
            e.st.fix = dg.fix.clone();
            let after = e.st.diagnosed(event_id, &dg.cause, &dg.summary, dg.container.clone(), true);
            (after, e.cfg.clone(), e.st.down_since_ms)
        }) else {
            return;
        };
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
        let Some(after) = self.targets.with(&name, |e| {
            e.st.fix = dg.fix.clone();
            e.st.diagnosed(event_id, &dg.cause, &dg.summary, dg.container.clone(), false)
        }) else {
            return;
        };
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
        let cfg = self.targets.with(name, |e| e.cfg.clone())?;
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
        let Some((cfg, down_since, container)) =
            self.targets.with(name, |e| (e.cfg.clone(), e.st.down_since_ms, e.st.container.clone()))
        else {
            return;
        };
        let cause = String::from("unknown");
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
            let due = self.targets.firing();
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

    /// Write the probe buckets not yet in the database (as one numbered flush batch: see
    /// crate::table and crate::snapshot for how pages stay consistent meanwhile).
    pub async fn flush(&self) {
        let batch = self.targets.take_unflushed();
        let (h, b) = (self.history.clone(), batch.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || h.add_flush(&b.rows, b.generation)).await {
            self.stats.history_errors.fetch_add(1, Relaxed);
            log("error", e.to_string());
        }
        self.targets.flushed(batch.generation);
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
        let r = self.targets.reload(&new.targets, now_ms(), |e| self.start_target(e));
        self.outbox.set_receivers(&new.receivers);
        *self.cfg.write().unwrap() = Arc::new(new);
        self.stats.reloads_ok.fetch_add(1, Relaxed);
        log(
            "info",
            format!(
                "reloaded {}: {} targets kept with their state, {} new, {} removed",
                path.display(),
                r.kept,
                r.added,
                r.removed
            ),
        );
    }

    async fn shutdown(self: &Arc<Self>, server: JoinHandle<()>, alerts: JoinHandle<()>, flusher: JoinHandle<()>) {
        let _ = self.stop.send(true);
        // In-flight probes end within their own deadline; give them that long, then cancel.
        let longest = self.targets.longest_timeout();
        let tasks = self.targets.take_tasks();
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
}

#[cfg(test)]
mod tests;
