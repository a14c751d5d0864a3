//! The daemon's counters and the duration histogram: written by the probes and the
//! outbox, read by `/metrics` through the read model.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms.
/// Few enough that 10,000 targets stay a reasonable scrape: loopback connects are ~100 µs,
/// a timeout is seconds.
pub const BUCKETS: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Debug, Clone, Default)]
pub struct Hist {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum: f64,
}

impl Hist {
    pub fn observe(&mut self, v: f64) {
        let i = BUCKETS.iter().position(|b| v <= *b).unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
    }
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Default)]
pub struct Stats {
    pub probes: AtomicU64,
    pub probes_in_flight: AtomicU64,
    /// Probes that started more than one interval after their scheduled time.
    pub late: AtomicU64,
    /// Scheduled probes skipped because the target fell a whole interval behind.
    pub skipped: AtomicU64,
    pub lag: Mutex<Hist>,
    pub max_lag_ns: AtomicU64,
    pub diagnoses: AtomicU64,
    pub diagnoses_in_flight: AtomicU64,
    pub diagnosis_errors: AtomicU64,
    pub history_errors: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub alerts_sent: Mutex<BTreeMap<String, u64>>,
    pub alerts_failed: Mutex<BTreeMap<String, u64>>,
    pub alerts_pending: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn record_lag(&self, lag: Duration, interval: Duration) {
        self.lag.lock().unwrap().observe(lag.as_secs_f64());
        self.max_lag_ns.fetch_max(lag.as_nanos() as u64, Relaxed);
        if lag > interval {
            self.late.fetch_add(1, Relaxed);
        }
    }
    pub fn alert_sent(&self, r: &str) {
        *self.alerts_sent.lock().unwrap().entry(r.to_string()).or_default() += 1;
    }
    pub fn alert_failed(&self, r: &str) {
        *self.alerts_failed.lock().unwrap().entry(r.to_string()).or_default() += 1;
    }
}
