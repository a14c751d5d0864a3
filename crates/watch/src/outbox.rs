//! The alert outbox: builds the payload of every receiver, queues it in the history
//! database (durable across restarts), delivers due alerts in order per receiver with
//! backoff, and re-sends firing alerts to Alertmanager while a target stays down.

use crate::alert::{self, AlertInfo};
use crate::config::{fmt_duration, Config, ReceiverConfig, ReceiverKind, TargetConfig};
use crate::history::{now_ms, History, NewAlert};
use crate::stats::Stats;
use crate::sys::log;
use conndoc_probe::time::rfc3339;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// A target still down, as a re-send needs it.
pub struct Firing {
    pub t: Arc<TargetConfig>,
    pub cause: String,
    pub summary: String,
    pub fix: Option<String>,
    pub container: Option<String>,
    pub event_id: i64,
    pub down_since: i64,
}

/// What one alert says, for every receiver.
#[derive(Clone, Copy)]
pub struct Alert<'a> {
    pub status: &'a str,
    pub cause: &'a str,
    pub summary: &'a str,
    pub details: Option<&'a str>,
    pub fix: Option<&'a str>,
    pub container: Option<&'a str>,
}

pub struct Outbox {
    history: Arc<History>,
    stats: Arc<Stats>,
    /// The agent's host name (`instance`, PagerDuty's `source`).
    hostname: String,
    /// One HTTP client per receiver (TLS set up once), rebuilt on reload.
    clients: Mutex<HashMap<String, Result<reqwest::Client, String>>>,
    /// When a firing alert last went into the outbox, per (Alertmanager receiver, target).
    resent: Mutex<HashMap<(String, String), i64>>,
    /// Held while a re-sent firing alert or a resolved one is queued: they stay in order.
    pub order: tokio::sync::Mutex<()>,
    wake: Notify,
}

fn clients(receivers: &[ReceiverConfig]) -> HashMap<String, Result<reqwest::Client, String>> {
    receivers
        .iter()
        .map(|r| {
            let c = alert::client(r);
            if let Err(e) = &c {
                log("error", e);
            }
            (r.name.clone(), c)
        })
        .collect()
}

impl Outbox {
    pub fn new(history: Arc<History>, stats: Arc<Stats>, hostname: String, receivers: &[ReceiverConfig]) -> Outbox {
        Outbox {
            history,
            stats,
            hostname,
            clients: Mutex::new(clients(receivers)),
            resent: Mutex::new(HashMap::new()),
            order: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        }
    }

    /// A reload: new receivers get their clients.
    pub fn set_receivers(&self, receivers: &[ReceiverConfig]) {
        *self.clients.lock().unwrap() = clients(receivers);
    }

    /// Deliver now what is due (after something was queued).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queue alerts of `event_id` in the outbox and wake the delivery.
    pub async fn queue(&self, event_id: i64, alerts: Vec<NewAlert>) {
        let h = self.history.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || h.enqueue(Some(event_id), &alerts)).await {
            self.stats.history_errors.fetch_add(1, Relaxed);
            log("error", e.to_string());
        }
        self.wake.notify_one();
    }

    /// The alerts for every receiver, or only for `only`.
    pub fn build(
        &self,
        cfg: &Config,
        t: &TargetConfig,
        a: &Alert,
        event_id: i64,
        down_since_ms: i64,
        only: Option<&str>,
    ) -> Vec<NewAlert> {
        let wanted = |r: &ReceiverConfig| only.is_none_or(|o| o == r.name);
        let (status, cause, summary, details) = (a.status, a.cause, a.summary, a.details);
        let now = now_ms();
        let since = rfc3339((now / 1000) as u64);
        let starts_at = rfc3339((down_since_ms.max(0) / 1000) as u64);
        if status == "firing" {
            let mut sent = self.resent.lock().unwrap();
            for r in cfg.receivers.iter().filter(|r| r.kind == ReceiverKind::Alertmanager && wanted(r)) {
                sent.insert((r.name.clone(), t.name.clone()), now);
            }
        }
        let info = AlertInfo {
            target: &t.name,
            url: &t.url,
            labels: &t.labels,
            status,
            state: if status == "firing" { "down" } else { "up" },
            cause,
            summary,
            since: &since,
            event_id,
            dashboard: format!("{}/target/{}", cfg.dashboard_url, t.name),
            details,
            starts_at: &starts_at,
            fix: a.fix,
            container: a.container,
        };
        cfg.receivers
            .iter()
            .filter(|r| wanted(r) && (status == "firing" || r.send_resolved))
            .map(|r| NewAlert {
                receiver: r.name.clone(),
                target: t.name.clone(),
                status: status.into(),
                payload: alert::payload(r.kind, &info, &self.hostname).to_string(),
            })
            .collect()
    }

    /// Deliver due alerts in order per receiver; a failure holds back that receiver's later
    /// alerts (so `resolved` never overtakes `firing`) and schedules a retry with backoff.
    pub async fn deliver_loop(self: Arc<Self>, config: impl Fn() -> Arc<Config>, mut stop: watch::Receiver<bool>) {
        let mut warned_missing = std::collections::HashSet::new();
        loop {
            let h = self.history.clone();
            let due = match tokio::task::spawn_blocking(move || h.due_alerts(now_ms(), 500)).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    log("error", e.to_string());
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            let cfg = config();
            let mut held = std::collections::HashSet::new();
            for a in due {
                if held.contains(&a.receiver) || *stop.borrow() {
                    continue;
                }
                let Some(r) = cfg.receivers.iter().find(|r| r.name == a.receiver) else {
                    if warned_missing.insert(a.receiver.clone()) {
                        log(
                            "warn",
                            format!("alerts for receiver {:?} stay queued: it is no longer configured", a.receiver),
                        );
                    }
                    continue;
                };
                let body = alert::wire_body(r, &a.payload);
                let client = self.clients.lock().unwrap().get(&r.name).cloned();
                let res = match client {
                    Some(Ok(c)) => alert::post_json(&c, &r.url, body, r.timeout).await,
                    Some(Err(e)) => Err(e),
                    None => Err(format!("receiver {}: no HTTP client", r.name)),
                };
                let h = self.history.clone();
                let id = a.id;
                match res {
                    Ok(_) => {
                        self.stats.alert_sent(&r.name);
                        log("info", format!("alert {} ({} {}) delivered to {}", a.id, a.status, a.target, r.name));
                        let _ = tokio::task::spawn_blocking(move || h.delivered(id, now_ms())).await;
                    }
                    Err(err) => {
                        self.stats.alert_failed(&r.name);
                        let wait = alert::backoff(a.attempts, r.retry_max);
                        log(
                            "warn",
                            format!(
                                "alert {} ({} {}) to {} failed (attempt {}): {err}; retrying in {}",
                                a.id,
                                a.status,
                                a.target,
                                r.name,
                                a.attempts + 1,
                                fmt_duration(wait)
                            ),
                        );
                        let next = now_ms() + wait.as_millis() as i64;
                        let _ = tokio::task::spawn_blocking(move || h.failed(id, next, &err)).await;
                        held.insert(a.receiver.clone());
                    }
                }
                if r.kind == ReceiverKind::Pagerduty {
                    // PagerDuty rate-limits per key; a short gap keeps bursts polite.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if let Ok(Ok(p)) = {
                let h = self.history.clone();
                tokio::task::spawn_blocking(move || h.pending_counts()).await
            } {
                *self.stats.alerts_pending.lock().unwrap() = p.into_iter().collect();
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Alertmanager forgets an alert it is not told about again (`endsAt`, then
    /// `resolve_timeout`): queue the firing alert of every target in `due` (still down)
    /// again once `resend_interval` passed per Alertmanager receiver, unless one is still
    /// waiting in the outbox (an Alertmanager that is down gets one alert per target, not
    /// a backlog). Call it with [`Outbox::order`] held.
    pub async fn resend(&self, cfg: &Config, due: &[Firing], now: i64) {
        let ams: Vec<_> = cfg.receivers.iter().filter(|r| r.kind == ReceiverKind::Alertmanager).collect();
        let mut queue = Vec::new();
        for f in due {
            let t = &f.t;
            for r in &ams {
                let key = (r.name.clone(), t.name.clone());
                let last = self.resent.lock().unwrap().get(&key).copied().unwrap_or(0);
                if now - last < r.resend.as_millis() as i64 {
                    continue;
                }
                let h = self.history.clone();
                let (rn, tn) = key.clone();
                let waiting = tokio::task::spawn_blocking(move || h.has_pending(&rn, &tn)).await;
                if !matches!(waiting, Ok(Ok(false))) {
                    continue;
                }
                let a = Alert {
                    status: "firing",
                    cause: &f.cause,
                    summary: &f.summary,
                    details: None,
                    fix: f.fix.as_deref(),
                    container: f.container.as_deref(),
                };
                let alerts = self.build(cfg, t, &a, f.event_id, f.down_since, Some(&r.name));
                queue.extend(alerts.into_iter().map(|x| (Some(f.event_id), x)));
            }
        }
        if queue.is_empty() {
            return;
        }
        let h = self.history.clone();
        let r = tokio::task::spawn_blocking(move || {
            for (id, a) in queue {
                h.enqueue(id, std::slice::from_ref(&a))?;
            }
            Ok::<_, crate::history::HistoryError>(())
        })
        .await;
        if let Ok(Err(e)) = r {
            self.stats.history_errors.fetch_add(1, Relaxed);
            log("error", e.to_string());
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests;
