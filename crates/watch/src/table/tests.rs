//! The targets table alone: no daemon, no probes (check results are made up), no I/O.

use super::*;
use crate::config::Config;
pub(super) use crate::testkit::targets_config as config;

/// A check result after 200 µs.
pub(super) fn result(ok: bool) -> ProbeResult {
    crate::testkit::check_result(ok, 200)
}

pub(super) const P: RecordParams = RecordParams { resolution_ms: 1_000, rediagnose_ms: 0 };

/// A table of `cfg`'s targets, each with a (do-nothing) task of generation 1.
pub(super) fn table(cfg: &Config) -> Table {
    let t = Table::default();
    for c in &cfg.targets {
        let mut e = Entry::new(Arc::new(c.clone()), 0);
        e.set_task(1, tokio::spawn(async {}));
        t.insert(e);
    }
    t
}

#[tokio::test]
async fn results_of_a_restarted_or_removed_task_are_dropped() {
    let cfg = config(&[("api", "tcp://127.0.0.1:1")]);
    let t = table(&cfg);
    assert!(t.record("api", 1, result(true), 1_000, P).is_some());
    assert!(t.record("api", 0, result(false), 1_100, P).is_none(), "an older task's result is stale");
    assert!(t.record("gone", 1, result(false), 1_100, P).is_none());
    assert_eq!(t.with("api", |e| e.st.health.state), Some(State::Up));
}

#[tokio::test]
async fn a_reload_keeps_the_state_of_unchanged_probes_and_restarts_only_what_changed() {
    let cfg = config(&[("api", "tcp://127.0.0.1:1"), ("db", "tcp://127.0.0.1:2"), ("old", "tcp://127.0.0.1:3")]);
    let t = table(&cfg);
    for n in ["api", "db", "old"] {
        t.record(n, 1, result(true), 1_000, P).unwrap();
    }
    let since = t.with("api", |e| e.st.since_ms).unwrap();
    // db changes its URL (a new probe: new state), api its interval (same state, new task).
    let mut new = config(&[("api", "tcp://127.0.0.1:1"), ("db", "tcp://127.0.0.1:4"), ("new", "tcp://127.0.0.1:5")]);
    new.targets[0].interval = Duration::from_secs(1);
    let mut started = Vec::new();
    let r = t.reload(&new.targets, 2_000, |e| {
        started.push(e.cfg.name.clone());
        e.set_task(2, tokio::spawn(async {}));
    });
    assert_eq!(r, Reloaded { kept: 1, added: 2, removed: 1 });
    started.sort();
    assert_eq!(started, ["api", "db", "new"]);
    assert_eq!(t.len(), 3);
    assert_eq!(
        t.with("api", |e| (e.st.health.state, e.st.since_ms, e.cfg.interval)),
        Some((State::Up, since, Duration::from_secs(1)))
    );
    assert_eq!(t.with("db", |e| e.st.health.state), Some(State::Unknown), "a new probe starts unknown");
    assert!(t.with("old", |_| ()).is_none());
    assert!(t.record("api", 1, result(false), 2_100, P).is_none(), "the task before the reload is stale");
}

#[tokio::test]
async fn only_diagnosed_down_targets_are_re_sent() {
    let cfg = config(&[("api", "tcp://127.0.0.1:1"), ("db", "tcp://127.0.0.1:2")]);
    let t = table(&cfg);
    for n in ["api", "db"] {
        let fx = t.record(n, 1, result(false), 1_000, P).unwrap();
        let tr = fx.transition.expect("down after one failure");
        t.with(n, |e| e.st.event_stored(tr, 1_000, 7)).unwrap();
    }
    assert!(t.firing().is_empty(), "diagnosing: no cause to send yet");
    t.with("api", |e| e.st.diagnosed(7, "no-listener", "nothing listens", None, true)).unwrap();
    let f = t.firing();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].t.name.as_str(), f[0].cause.as_str(), f[0].event_id), ("api", "no-listener", 7));
}

#[tokio::test]
async fn a_flush_batch_stays_visible_until_written() {
    let cfg = config(&[("api", "tcp://127.0.0.1:1")]);
    let t = table(&cfg);
    t.record("api", 1, result(true), 1_000, P).unwrap();
    let (v, mark) = t.views();
    assert_eq!((v[0].unflushed.len(), mark.taken, mark.in_flight.is_none()), (1, 0, true));
    let (one, _) = t.view_of("api").unwrap();
    assert_eq!((one.name.as_str(), one.unflushed.len()), ("api", 1), "one target's view, as in views()");
    assert!(t.view_of("nope").is_none());
    let b = t.take_unflushed();
    assert_eq!((b.generation, b.rows.len()), (1, 1));
    t.record("api", 1, result(true), 1_500, P).unwrap();
    let (v, mark) = t.views();
    assert_eq!(v[0].unflushed[0].1.count, 1, "only the check after the take is live");
    assert_eq!((mark.taken, mark.in_flight.as_ref().map(|b| b.generation)), (1, Some(1)));
    t.flushed(2); // not the batch in flight: it stays
    assert!(t.views().1.in_flight.is_some());
    t.flushed(1);
    assert!(t.views().1.in_flight.is_none());
    assert_eq!(t.take_unflushed().generation, 2);
}
