//! The read model: an immutable [`Snapshot`] of every target, published by the daemon and
//! swapped atomically (one `Arc` under a lock held only for the swap). The dashboard,
//! `/api/targets` and `/metrics` render from it and never touch the daemon's live state,
//! so a slow render holds no lock the probes need.

use crate::config::{Config, TargetConfig};
use crate::health::State;
use crate::history::{Bucket, History};
use crate::stats::{Hist, Stats};
use crate::urls::TargetUrl;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
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

/// Every target at one moment, sorted by [`TargetView::attention_key`].
#[derive(Debug)]
pub struct Snapshot {
    pub taken_ms: i64,
    pub targets: Vec<TargetView>,
    pub config: Arc<Config>,
}

impl Snapshot {
    pub fn new(taken_ms: i64, mut targets: Vec<TargetView>, config: Arc<Config>) -> Snapshot {
        targets.sort_unstable_by(|a, b| a.attention_key().cmp(&b.attention_key()));
        Snapshot { taken_ms, targets, config }
    }
    pub fn get(&self, name: &str) -> Option<&TargetView> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// What the views read: the current snapshot, the daemon's counters and the history
/// database (per-target pages read their buckets and events from it).
pub struct ReadModel {
    current: RwLock<Arc<Snapshot>>,
    pub stats: Arc<Stats>,
    pub history: Arc<History>,
    pub start_unix: f64,
}

impl ReadModel {
    pub fn new(first: Snapshot, stats: Arc<Stats>, history: Arc<History>, start_unix: f64) -> ReadModel {
        ReadModel { current: RwLock::new(Arc::new(first)), stats, history, start_unix }
    }
    /// The newest snapshot; it stays valid (and unchanged) for as long as it is held.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn publish(&self, s: Snapshot) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}
