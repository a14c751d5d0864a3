//! The live targets: each one's config, pure state (crate::state) and probe task, behind
//! one lock held only to read or update them (never across I/O). Also the flush
//! bookkeeping that lets a page read the snapshot and the history as one consistent pair:
//! every batch of probe buckets taken for the database gets a generation, and a snapshot
//! carries the generation its live buckets will be written in and the batch in flight.

use crate::config::TargetConfig;
use crate::health::State;
use crate::history::{Bucket, SavedState};
use crate::outbox::Firing;
use crate::probe::ProbeResult;
use crate::snapshot::{FlushBatch, FlushMark, TargetView};
use crate::state::{Effects, RecordParams, TargetState};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// One target: its config, its pure state and the task that probes it.
pub struct Entry {
    pub cfg: Arc<TargetConfig>,
    pub st: TargetState,
    /// Which start of its task this is: results of an older (restarted) task are dropped.
    generation: u64,
    task: Option<JoinHandle<()>>,
}

impl Entry {
    pub fn new(cfg: Arc<TargetConfig>, now_ms: i64) -> Entry {
        Entry {
            st: TargetState::new(cfg.failures_before_down, cfg.successes_before_up, now_ms),
            cfg,
            generation: 0,
            task: None,
        }
    }

    /// Take over the state saved by the previous run (same URL only). Returns the event to
    /// diagnose again when the run was killed between the transition and its diagnosis.
    pub fn restore(&mut self, s: &SavedState) -> Option<i64> {
        if s.url != self.cfg.url.shown() {
            return None;
        }
        self.st.health.state = s.state;
        self.st.cause = s.cause.clone();
        self.st.since_ms = s.since_ms;
        self.st.down_since_ms = s.since_ms;
        self.st.event_id = s.event_id;
        let unfinished = (s.state == State::Down && s.cause.is_none()).then_some(s.event_id).flatten();
        self.st.diagnosing = unfinished.is_some();
        unfinished
    }

    /// A new task for this entry (the old one is stopped).
    pub fn set_task(&mut self, generation: u64, task: JoinHandle<()>) {
        self.stop_task();
        self.generation = generation;
        self.task = Some(task);
    }

    fn stop_task(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// The view the dashboard, the API and /metrics render.
    fn view(&self) -> TargetView {
        let (e, st) = (&self.cfg, &self.st);
        TargetView {
            name: e.name.clone(),
            url: e.url.clone(),
            labels: e.labels.clone(),
            state: st.health.state,
            cause: st.shown_cause().to_string(),
            summary: st.summary.clone(),
            container: st.container.clone(),
            since_ms: st.since_ms,
            last_ms: st.last_ms,
            last_latency: st.last.map(|r| r.elapsed),
            last_outcome: st.last.map(|r| r.outcome_label()),
            diagnosing: st.diagnosing,
            interval: e.interval,
            cfg: e.clone(),
            duration: st.duration.clone(),
            outcomes: st.outcomes.clone(),
            failures_by_cause: st.failures_by_cause.clone(),
            transitions: st.transitions.clone(),
            unflushed: st.unflushed.iter().map(|(b, v)| (*b, *v)).collect(),
        }
    }

    /// What a re-send to Alertmanager needs, while down with a stored, diagnosed event.
    fn firing(&self) -> Option<Firing> {
        let st = &self.st;
        if st.health.state != State::Down || st.diagnosing {
            return None;
        }
        Some(Firing {
            t: self.cfg.clone(),
            cause: st.cause.clone()?,
            summary: st.summary.clone().unwrap_or_default(),
            fix: st.fix.clone(),
            container: st.container.clone(),
            event_id: st.event_id?,
            down_since: st.down_since_ms,
        })
    }
}

#[derive(Default)]
struct Inner {
    /// By name. A hash map: every probe looks its target up, and a B-tree's string
    /// comparisons over 10,000 names were ~4% of the daemon's CPU. Views sort.
    entries: HashMap<String, Entry>,
    /// Flush batches taken so far (the generation of the last one).
    flushes: u64,
    /// The batch being written, until the database has it.
    in_flight: Option<Arc<FlushBatch>>,
}

/// What a reload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    pub kept: usize,
    pub added: usize,
    pub removed: usize,
}

/// The targets table.
#[derive(Default)]
pub struct Table {
    inner: Mutex<Inner>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, e: Entry) {
        if let Some(mut old) = self.lock().entries.insert(e.cfg.name.clone(), e) {
            old.stop_task();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run `f` on every entry (starting the tasks).
    pub fn for_each(&self, mut f: impl FnMut(&mut Entry)) {
        for e in self.lock().entries.values_mut() {
            f(e);
        }
    }

    /// Read or update one target; None when it is gone.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.lock().entries.get_mut(name).map(f)
    }

    /// One check result of the task started as `generation`: None when the target was
    /// removed or its task restarted since (the result is stale).
    pub fn record(&self, name: &str, generation: u64, r: ProbeResult, now_ms: i64, p: RecordParams) -> Option<Effects> {
        let mut g = self.lock();
        let e = g.entries.get_mut(name).filter(|e| e.generation == generation)?;
        Some(e.st.record(r, now_ms, p))
    }

    /// Targets still down with a diagnosed event, for the Alertmanager re-send.
    pub fn firing(&self) -> Vec<Firing> {
        self.lock().entries.values().filter_map(Entry::firing).collect()
    }

    /// The longest check deadline of any target.
    pub fn longest_timeout(&self) -> Duration {
        self.lock().entries.values().map(|e| e.cfg.timeout).max().unwrap_or_default()
    }

    /// Take every probe task (to wait for them at stop).
    pub fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        self.lock().entries.values_mut().filter_map(|e| e.task.take()).collect()
    }

    /// Every target's view and the flush mark, copied under one lock hold.
    pub fn views(&self) -> (Vec<TargetView>, FlushMark) {
        let g = self.lock();
        let views = g.entries.values().map(Entry::view).collect();
        (views, FlushMark { taken: g.flushes, in_flight: g.in_flight.clone() })
    }

    /// One target's view and the flush mark, copied under one lock hold.
    pub fn view_of(&self, name: &str) -> Option<(TargetView, FlushMark)> {
        let g = self.lock();
        let view = g.entries.get(name)?.view();
        Some((view, FlushMark { taken: g.flushes, in_flight: g.in_flight.clone() }))
    }

    /// Take the buckets not yet written as the next flush batch (kept visible to
    /// snapshots as in flight until [`Table::flushed`]).
    pub fn take_unflushed(&self) -> Arc<FlushBatch> {
        let mut g = self.lock();
        let rows: Vec<(String, i64, Bucket)> = g
            .entries
            .iter_mut()
            .flat_map(|(n, e)| std::mem::take(&mut e.st.unflushed).into_iter().map(move |(b, v)| (n.clone(), b, v)))
            .collect();
        g.flushes += 1;
        let batch = Arc::new(FlushBatch { generation: g.flushes, rows });
        g.in_flight = Some(batch.clone());
        batch
    }

    /// The write of batch `generation` ended (stored or failed: either way it is no longer
    /// in flight).
    pub fn flushed(&self, generation: u64) {
        let mut g = self.lock();
        if g.in_flight.as_ref().is_some_and(|b| b.generation == generation) {
            g.in_flight = None;
        }
    }

    /// A reload: drop targets no longer configured, keep the state of every target whose
    /// probe is the same, add new ones. `start` (re)starts an entry's task: called for new
    /// targets and for kept ones whose interval, timeout or check kind changed.
    pub fn reload(&self, targets: &[TargetConfig], now_ms: i64, mut start: impl FnMut(&mut Entry)) -> Reloaded {
        let mut r = Reloaded::default();
        let mut g = self.lock();
        let names: HashSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        g.entries.retain(|n, e| {
            let keep = names.contains(n.as_str());
            if !keep {
                e.stop_task();
                r.removed += 1;
            }
            keep
        });
        for t in targets {
            let cfg = Arc::new(t.clone());
            match g.entries.get_mut(&t.name) {
                Some(e) if e.cfg.same_probe(t) => {
                    e.st.health.failures_before_down = t.failures_before_down;
                    e.st.health.successes_before_up = t.successes_before_up;
                    let restart = e.cfg.interval != t.interval || e.cfg.timeout != t.timeout || e.cfg.check != t.check;
                    e.cfg = cfg;
                    if restart {
                        start(e);
                    }
                    r.kept += 1;
                }
                _ => {
                    let mut e = Entry::new(cfg, now_ms);
                    start(&mut e);
                    if let Some(mut old) = g.entries.insert(t.name.clone(), e) {
                        old.stop_task();
                    }
                    r.added += 1;
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod read_model_tests;
#[cfg(test)]
mod tests;
