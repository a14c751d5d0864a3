//! The pure per-target state: a check result in, the effects out (a transition, a diagnosis
//! wanted, an alert to queue). No I/O, no clock, no locks: the daemon applies the effects
//! (stores events, runs diagnoses, queues alerts), and every rule here is unit-tested alone.

use crate::health::{Health, State, Transition};
use crate::history::Bucket;
use crate::probe::ProbeResult;
use crate::stats::Hist;
use std::collections::BTreeMap;

/// The knobs of [`TargetState::record`] that come from the running config.
#[derive(Debug, Clone, Copy)]
pub struct RecordParams {
    /// `history_resolution` in ms: probe results are summed per bucket of this length.
    pub resolution_ms: i64,
    /// `rediagnose` in ms (0: never).
    pub rediagnose_ms: i64,
}

/// What one check result asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// The state flipped: store an event, log it, call the hook (then [`TargetState::event_stored`]).
    pub transition: Option<Transition>,
    /// Still down and due for another diagnosis of this event.
    pub rediagnose: Option<i64>,
}

/// What a stored transition event asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterEvent {
    /// Went down: diagnose, and queue the firing alert with its cause.
    Diagnose {
        event_id: i64,
    },
    /// Came back before its diagnosis finished: the resolved alert follows the firing one.
    ResolveAfterDiagnosis,
    /// Came back: queue the resolved alert (`down_event`: the event of the down period).
    Resolved {
        event_id: i64,
        down_event: Option<i64>,
    },
    Nothing,
}

/// What a finished diagnosis asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterDiagnosis {
    /// The target is still down (its state row keeps the cause).
    pub still_down: bool,
    /// The diagnosis is the current one of the target (not of an older down period).
    pub current: bool,
    /// Queue the resolved alert right after the firing one.
    pub send_resolved: bool,
}

/// One target's live state, without its config or its task.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub health: Health,
    /// The diagnosed cause while down; `ok` while up; None before a diagnosis finished.
    pub cause: Option<String>,
    pub summary: Option<String>,
    /// The container behind the target, from the last diagnosis.
    pub container: Option<String>,
    /// The first remediation of the last diagnosis (Alertmanager's `fix` annotation).
    pub fix: Option<String>,
    pub since_ms: i64,
    /// When the current (or last) down period began: Alertmanager's `startsAt`.
    pub down_since_ms: i64,
    pub event_id: Option<i64>,
    pub diagnosing: bool,
    /// The target came back while its diagnosis ran: send `resolved` after the `firing`.
    pub resolve_pending: bool,
    pub last: Option<ProbeResult>,
    pub last_ms: i64,
    pub last_diagnosis_ms: i64,
    pub duration: Hist,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub failures_by_cause: BTreeMap<String, u64>,
    pub transitions: BTreeMap<&'static str, u64>,
    pub unflushed: BTreeMap<i64, Bucket>,
}

impl TargetState {
    pub fn new(failures_before_down: u32, successes_before_up: u32, now_ms: i64) -> TargetState {
        TargetState {
            health: Health::new(failures_before_down, successes_before_up),
            cause: None,
            summary: None,
            container: None,
            fix: None,
            since_ms: now_ms,
            down_since_ms: now_ms,
            event_id: None,
            diagnosing: false,
            resolve_pending: false,
            last: None,
            last_ms: 0,
            last_diagnosis_ms: 0,
            duration: Hist::default(),
            outcomes: BTreeMap::new(),
            failures_by_cause: BTreeMap::new(),
            transitions: BTreeMap::new(),
            unflushed: BTreeMap::new(),
        }
    }

    /// The cause as /api/targets shows it: `ok` when up, the diagnosis when down.
    pub fn shown_cause(&self) -> &str {
        match self.health.state {
            State::Up => "ok",
            State::Down => self.cause.as_deref().unwrap_or("unknown"),
            State::Unknown => "unknown",
        }
    }

    /// Account one check result at `now` and run the state machine.
    pub fn record(&mut self, r: ProbeResult, now: i64, p: RecordParams) -> Effects {
        let res = p.resolution_ms.max(1);
        self.duration.observe(r.elapsed.as_secs_f64());
        *self.outcomes.entry(r.outcome_label()).or_default() += 1;
        let b = self.unflushed.entry(now - now.rem_euclid(res)).or_default();
        b.count += 1;
        let us = r.elapsed.as_micros() as u64;
        b.latency_sum_us += us;
        b.latency_max_us = b.latency_max_us.max(us);
        if !r.ok() {
            b.failures += 1;
            let cause =
                if self.health.state == State::Down { self.shown_cause().to_string() } else { "unknown".into() };
            *self.failures_by_cause.entry(cause).or_default() += 1;
        }
        self.last = Some(r);
        self.last_ms = now;
        let transition = self.health.record(r.ok());
        let mut fx = Effects { transition, rediagnose: None };
        // While down, diagnose again every `rediagnose` so a changed cause shows.
        if transition.is_none()
            && p.rediagnose_ms > 0
            && self.health.state == State::Down
            && !self.diagnosing
            && now - self.last_diagnosis_ms >= p.rediagnose_ms
        {
            if let Some(id) = self.event_id {
                self.diagnosing = true;
                self.last_diagnosis_ms = now;
                fx.rediagnose = Some(id);
            }
        }
        if let Some(t) = transition {
            *self.transitions.entry(t.to.as_str()).or_default() += 1;
            self.since_ms = now;
            self.cause = if t.to == State::Up { Some("ok".into()) } else { None };
            self.summary = None;
            if t.to == State::Down {
                self.down_since_ms = now;
                self.fix = None;
                self.diagnosing = true;
                self.resolve_pending = false;
                self.last_diagnosis_ms = now;
            } else if t.from == State::Down && self.diagnosing {
                self.resolve_pending = true;
            }
        }
        fx
    }

    /// The event of transition `t` (made at `at_ms`) was stored as `id`.
    pub fn event_stored(&mut self, t: Transition, at_ms: i64, id: i64) -> AfterEvent {
        let prev_event = self.event_id;
        // A later transition may already have replaced this one; keep the newest id.
        if self.since_ms == at_ms {
            self.event_id = Some(id);
        }
        match (t.from, t.to) {
            (_, State::Down) => AfterEvent::Diagnose { event_id: id },
            (State::Down, State::Up) if self.resolve_pending => AfterEvent::ResolveAfterDiagnosis,
            (State::Down, State::Up) => AfterEvent::Resolved { event_id: id, down_event: prev_event },
            _ => AfterEvent::Nothing,
        }
    }

    /// A diagnosis of `event_id` finished with this cause. `first`: the diagnosis of the
    /// transition (it may owe a resolved alert), not a later re-diagnosis.
    pub fn diagnosed(
        &mut self,
        event_id: i64,
        cause: &str,
        summary: &str,
        container: Option<String>,
        first: bool,
    ) -> AfterDiagnosis {
        self.diagnosing = false;
        let still_down = self.health.state == State::Down;
        let current = still_down && self.event_id == Some(event_id);
        if current {
            self.cause = Some(cause.to_string());
            self.summary = Some(summary.to_string());
            self.container = container;
        }
        let send_resolved = first && std::mem::take(&mut self.resolve_pending);
        AfterDiagnosis { still_down, current, send_resolved }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RecordParams = RecordParams { resolution_ms: 1000, rediagnose_ms: 60_000 };

    fn result(ok: bool) -> ProbeResult {
        crate::testkit::check_result(ok, 250)
    }

    #[test]
    fn down_wants_a_diagnosis_then_a_firing_alert_then_resolved() {
        let mut s = TargetState::new(2, 1, 0);
        assert_eq!(
            s.record(result(true), 1_000, P).transition,
            Some(Transition { from: State::Unknown, to: State::Up })
        );
        assert_eq!(s.event_stored(Transition { from: State::Unknown, to: State::Up }, 1_000, 1), AfterEvent::Nothing);
        assert_eq!(s.shown_cause(), "ok");
        assert_eq!(s.record(result(false), 2_000, P), Effects::default(), "one failure is not down yet");
        let down = s.record(result(false), 3_000, P).transition.unwrap();
        assert_eq!(down, Transition { from: State::Up, to: State::Down });
        assert!(s.diagnosing && s.cause.is_none());
        assert_eq!(s.shown_cause(), "unknown", "no cause before the diagnosis");
        assert_eq!(s.event_stored(down, 3_000, 2), AfterEvent::Diagnose { event_id: 2 });
        let d = s.diagnosed(2, "no-listener", "nothing listens", Some("web".into()), true);
        assert_eq!(d, AfterDiagnosis { still_down: true, current: true, send_resolved: false });
        assert_eq!((s.shown_cause(), s.container.as_deref()), ("no-listener", Some("web")));
        // Failures while down count under the diagnosed cause.
        s.record(result(false), 4_000, P);
        assert_eq!(s.failures_by_cause.get("no-listener"), Some(&1));
        let up = s.record(result(true), 5_000, P).transition.unwrap();
        assert_eq!(s.event_stored(up, 5_000, 3), AfterEvent::Resolved { event_id: 3, down_event: Some(2) });
        assert_eq!(s.since_ms, 5_000);
        assert_eq!(s.transitions.get("down"), Some(&1));
    }

    #[test]
    fn back_up_while_diagnosing_resolves_after_the_firing_alert() {
        let mut s = TargetState::new(1, 1, 0);
        let down = s.record(result(false), 1_000, P).transition.unwrap();
        assert_eq!(s.event_stored(down, 1_000, 1), AfterEvent::Diagnose { event_id: 1 });
        let up = s.record(result(true), 1_500, P).transition.unwrap();
        assert_eq!(s.event_stored(up, 1_500, 2), AfterEvent::ResolveAfterDiagnosis);
        let d = s.diagnosed(1, "no-listener", "x", None, true);
        assert_eq!(d, AfterDiagnosis { still_down: false, current: false, send_resolved: true });
        assert_eq!(s.shown_cause(), "ok", "a late diagnosis does not overwrite up");
    }

    #[test]
    fn rediagnose_while_down_at_most_every_interval() {
        let mut s = TargetState::new(1, 1, 0);
        let down = s.record(result(false), 0, P).transition.unwrap();
        s.event_stored(down, 0, 7);
        assert_eq!(s.record(result(false), 70_000, P).rediagnose, None, "first diagnosis still running");
        s.diagnosed(7, "firewall-drop", "x", None, true);
        assert_eq!(s.record(result(false), 30_000, P).rediagnose, None, "not due yet");
        assert_eq!(s.record(result(false), 60_000, P).rediagnose, Some(7));
        assert_eq!(s.record(result(false), 61_000, P).rediagnose, None, "one at a time");
        let d = s.diagnosed(7, "no-route", "y", None, false);
        assert!(d.current && !d.send_resolved);
        assert_eq!(s.shown_cause(), "no-route", "a changed cause shows");
    }

    #[test]
    fn results_are_summed_per_bucket() {
        let mut s = TargetState::new(3, 1, 0);
        for (t, ok) in [(10_100, true), (10_900, false), (11_000, true)] {
            s.record(result(ok), t, P);
        }
        let b: Vec<_> = s.unflushed.iter().map(|(k, v)| (*k, v.count, v.failures)).collect();
        assert_eq!(b, [(10_000, 2, 1), (11_000, 1, 0)]);
        assert_eq!(s.outcomes.get("connected"), Some(&2));
        assert_eq!(s.failures_by_cause.get("unknown"), Some(&1), "failures before down have no cause yet");
        assert_eq!(s.duration.count(), 3);
    }
}
