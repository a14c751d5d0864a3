//! The read model: an immutable [`Snapshot`] of every target, built when a view asks for it
//! (a scrape, a dashboard page, an API call) rather than after checks: a check only
//! updates its target's live state, and the copy of every target is paid per read, not per
//! second. The dashboard, `/api/targets` and `/metrics` render from the snapshot and never
//! touch the daemon's live state, so a slow render holds no lock the probes need (the
//! targets' lock is held only while the views are copied). Readers that ask while a build
//! runs share the next build instead of each copying the targets again.
//!
//! A target page shows stored buckets (the history database) plus those not yet written
//! (the snapshot's). The two are read at different moments, so the snapshot says which flush
//! its buckets belong to ([`FlushMark`]) and the history answers which flushes it holds
//! (`History::bucket_rows_flushed`, in the same read as the rows): [`Snapshot::unwritten`]
//! then adds exactly the buckets the database does not have: none twice, none missing.

use crate::config::{Config, TargetConfig};
use crate::health::State;
use crate::history::{Bucket, History};
use crate::stats::{Hist, Stats};
use crate::urls::TargetUrl;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One target as the views see it.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub name: String,
    pub url: TargetUrl,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    /// `ok` when up, the diagnosed cause when down, `unknown` before one.
    pub cause: String,
    pub summary: Option<String>,
    /// The container behind the target, when the diagnosis found one (docs/containers.md).
    pub container: Option<String>,
    pub since_ms: i64,
    pub last_ms: i64,
    pub last_latency: Option<Duration>,
    pub last_outcome: Option<&'static str>,
    pub diagnosing: bool,
    pub interval: Duration,
    pub cfg: Arc<TargetConfig>,
    pub duration: Hist,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub failures_by_cause: BTreeMap<String, u64>,
    pub transitions: BTreeMap<&'static str, u64>,
    /// Probe buckets not yet written to the history database.
    pub unflushed: Vec<(i64, Bucket)>,
}

impl TargetView {
    /// What needs attention first: down (the newest outage first: what someone opening the
    /// dashboard comes for), then unknown, then up; then by name.
    pub fn attention_key(&self) -> (u8, i64, &str) {
        let rank = match self.state {
            State::Down => 0,
            State::Unknown => 1,
            State::Up => 2,
        };
        (rank, if self.state == State::Down { -self.since_ms } else { 0 }, &self.name)
    }
}

/// Probe buckets taken from the live state to be written to the database as flush
/// number `generation`.
#[derive(Debug, Default)]
pub struct FlushBatch {
    pub generation: u64,
    pub rows: Vec<(String, i64, Bucket)>,
}

/// Where a snapshot stands against the history writes.
#[derive(Debug, Default, Clone)]
pub struct FlushMark {
    /// Flush batches taken before the snapshot: its views' `unflushed` buckets go into
    /// batch `taken + 1`.
    pub taken: u64,
    /// A batch taken but not yet written when the snapshot was built (its buckets are in no
    /// view any more).
    pub in_flight: Option<Arc<FlushBatch>>,
}

/// Every target at one moment, sorted by [`TargetView::attention_key`].
#[derive(Debug)]
pub struct Snapshot {
    pub taken_ms: i64,
    pub targets: Vec<TargetView>,
    pub config: Arc<Config>,
    pub flush: FlushMark,
}

impl Snapshot {
    pub fn new(taken_ms: i64, targets: Vec<TargetView>, config: Arc<Config>) -> Snapshot {
        Snapshot::at(taken_ms, targets, config, FlushMark::default())
    }
    pub fn at(taken_ms: i64, mut targets: Vec<TargetView>, config: Arc<Config>, flush: FlushMark) -> Snapshot {
        targets.sort_unstable_by(|a, b| a.attention_key().cmp(&b.attention_key()));
        Snapshot { taken_ms, targets, config, flush }
    }
    pub fn get(&self, name: &str) -> Option<&TargetView> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The buckets of `view` that a history read holding flushes up to `flushed` lacks: the
    /// view's own unless their batch is written, and the in-flight batch's unless written.
    pub fn unwritten(&self, view: &TargetView, flushed: u64) -> Vec<(i64, Bucket)> {
        let mut out = Vec::new();
        if let Some(b) = self.flush.in_flight.as_ref().filter(|b| flushed < b.generation) {
            out.extend(b.rows.iter().filter(|r| r.0 == view.name).map(|r| (r.1, r.2)));
        }
        if flushed <= self.flush.taken {
            out.extend(view.unflushed.iter().copied());
        }
        out
    }
}

/// Add `extra` buckets into `stored` (summed per bucket start; kept sorted by it).
pub fn merge_buckets(stored: &mut Vec<(i64, Bucket)>, extra: &[(i64, Bucket)]) {
    for (b, v) in extra {
        match stored.iter_mut().find(|x| x.0 == *b) {
            Some(x) => {
                x.1.count += v.count;
                x.1.failures += v.failures;
                x.1.latency_sum_us += v.latency_sum_us;
                x.1.latency_max_us = x.1.latency_max_us.max(v.latency_max_us);
            }
            None => stored.push((*b, *v)),
        }
    }
    stored.sort_by_key(|x| x.0);
}

/// Where snapshots come from: the daemon's live targets, or one fixed snapshot (tests,
/// benches). Implemented outside this module, so the read model needs nothing of the daemon.
pub trait Source: Send + Sync {
    /// Copy every target's state into a new snapshot. Blocking: holds the targets' lock
    /// while copying, so call it off the runtime worker that schedules the probes.
    fn build(&self) -> Arc<Snapshot>;
    /// A snapshot of target `name` alone (a target page needs no other), None when there is
    /// no such target. Blocking, as [`Source::build`]; by default a whole build.
    fn build_one(&self, name: &str) -> Option<Arc<Snapshot>> {
        Some(self.build()).filter(|s| s.get(name).is_some())
    }
    /// The running config, without copying any target.
    fn config(&self) -> Arc<Config>;
}

/// A snapshot that never changes (tests, benches).
pub struct Fixed(pub Arc<Snapshot>);

impl Source for Fixed {
    fn build(&self) -> Arc<Snapshot> {
        self.0.clone()
    }
    fn config(&self) -> Arc<Config> {
        self.0.config.clone()
    }
}

/// The last build and its place in the order builds started.
#[derive(Default)]
struct Built {
    /// Builds started so far, counting this one.
    started: u64,
    snap: Option<Arc<Snapshot>>,
}

/// What the views read: snapshots of the live state built on demand, the daemon's counters
/// and the history database (per-target pages read their buckets and events from it).
pub struct ReadModel {
    source: Box<dyn Source>,
    /// Builds run one at a time under this lock; `started` is also read without it.
    built: Mutex<Built>,
    started: std::sync::atomic::AtomicU64,
    pub stats: Arc<Stats>,
    pub history: Arc<History>,
    pub start_unix: f64,
}

impl ReadModel {
    pub fn new(source: impl Source + 'static, stats: Arc<Stats>, history: Arc<History>, start_unix: f64) -> ReadModel {
        ReadModel {
            source: Box::new(source),
            built: Mutex::new(Built::default()),
            started: 0.into(),
            stats,
            history,
            start_unix,
        }
    }
    /// A read model of one fixed snapshot (tests, benches).
    pub fn fixed(snap: Snapshot, stats: Arc<Stats>, history: Arc<History>, start_unix: f64) -> ReadModel {
        ReadModel::new(Fixed(Arc::new(snap)), stats, history, start_unix)
    }
    /// A snapshot of the state at least as new as this call: built now, or by a build that
    /// started after this call began (readers arriving during a build share the next one).
    /// It stays valid (and unchanged) for as long as it is held. Blocking: see [`Source::build`].
    pub fn snapshot(&self) -> Arc<Snapshot> {
        use std::sync::atomic::Ordering::SeqCst;
        let asked_after = self.started.load(SeqCst);
        let mut b = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = b.snap.as_ref().filter(|_| b.started > asked_after) {
            return s.clone();
        }
        b.started = self.started.fetch_add(1, SeqCst) + 1;
        let s = self.source.build();
        b.snap = Some(s.clone());
        s
    }
    /// A snapshot holding target `name` only, built now (not shared): what a target page and
    /// `/api/targets/NAME` read. None when there is no such target.
    pub fn snapshot_of(&self, name: &str) -> Option<Arc<Snapshot>> {
        self.source.build_one(name)
    }
    /// The running config (no snapshot is built).
    pub fn config(&self) -> Arc<Config> {
        self.source.config()
    }
    /// The buckets of `view` (a target of `snap`) since `from_ms`: the stored ones plus the
    /// snapshot's that the database does not hold yet, read as one consistent pair.
    /// Blocking: reads the database.
    pub fn buckets(&self, snap: &Snapshot, view: &TargetView, from_ms: i64) -> Vec<(i64, Bucket)> {
        let (mut rows, flushed) = self.history.bucket_rows_flushed(&view.name, from_ms).unwrap_or_default();
        let extra: Vec<_> = snap.unwritten(view, flushed).into_iter().filter(|(b, _)| *b >= from_ms).collect();
        merge_buckets(&mut rows, &extra);
        rows
    }
}

#[cfg(test)]
mod tests;
