//! The read model (crate::snapshot) built from this table: snapshots in attention order, a
//! real history file, and the page's bucket read checked at every step of a flush. Here and
//! not in snapshot's own tests: snapshot must not import table (no import cycle).

use super::*;
use crate::config::Config;
use crate::history::{Bucket, History};
use crate::snapshot::{ReadModel, Snapshot};
use crate::stats::Stats;
use crate::testkit::TempDir;
use conndoc_facts::ConnectKind;

fn config() -> Arc<Config> {
    let text = "history_resolution = \"1s\"\n\
        [[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1:1\"\nfailures_before_down = 1\nsuccesses_before_up = 1\n\
        [[target]]\nname = \"db\"\nurl = \"tcp://127.0.0.1:2\"\nfailures_before_down = 1\nsuccesses_before_up = 1\n\
        [[target]]\nname = \"web\"\nurl = \"tcp://127.0.0.1:3\"\nfailures_before_down = 1\nsuccesses_before_up = 1\n";
    Arc::new(crate::config::load_str(std::path::Path::new("w.toml"), text, &Default::default()).unwrap())
}

fn result(ok: bool) -> ProbeResult {
    ProbeResult {
        kind: if ok { ConnectKind::Connected } else { ConnectKind::Refused },
        elapsed: Duration::from_micros(300),
        errno: None,
        unresolved: false,
        peer_close: None,
    }
}

const P: RecordParams = RecordParams { resolution_ms: 1_000, rediagnose_ms: 0 };

fn table(cfg: &Config) -> Table {
    let t = Table::default();
    for c in &cfg.targets {
        let mut e = Entry::new(Arc::new(c.clone()), 0);
        e.set_task(1, tokio::spawn(async {}));
        t.insert(e);
    }
    t
}

fn snapshot(t: &Table, cfg: &Arc<Config>, at: i64) -> Snapshot {
    let (views, mark) = t.views();
    Snapshot::at(at, views, cfg.clone(), mark)
}

#[tokio::test]
async fn built_from_the_state_in_attention_order() {
    let cfg = config();
    let t = table(&cfg);
    t.record("web", 1, result(true), 1_000, P).unwrap();
    for (n, at) in [("api", 2_000), ("db", 3_000)] {
        let tr = t.record(n, 1, result(false), at, P).unwrap().transition.unwrap();
        t.with(n, |e| e.st.event_stored(tr, at, 1)).unwrap();
    }
    t.with("db", |e| e.st.diagnosed(1, "no-listener", "nothing listens", Some("pg-1".into()), true)).unwrap();
    let s = snapshot(&t, &cfg, 4_000);
    // Down first, the newest outage first; up last.
    let order: Vec<_> = s.targets.iter().map(|v| (v.name.as_str(), v.state, v.cause.as_str())).collect();
    assert_eq!(order, [("db", State::Down, "no-listener"), ("api", State::Down, "unknown"), ("web", State::Up, "ok")]);
    let db = s.get("db").unwrap();
    assert_eq!((db.container.as_deref(), db.since_ms, db.last_outcome), (Some("pg-1"), 3_000, Some("refused")));
    assert_eq!(db.last_latency, Some(Duration::from_micros(300)));
    assert_eq!(db.unflushed.len(), 1);
    assert!(s.get("nope").is_none());
}

#[tokio::test]
async fn a_published_snapshot_stays_unchanged_while_held() {
    let cfg = config();
    let t = table(&cfg);
    let dir = TempDir::new("snapshot-publish");
    let h = Arc::new(History::open(&dir.path("h.db")).unwrap());
    let m = ReadModel::new(snapshot(&t, &cfg, 1), Arc::new(Stats::default()), h, 0.0);
    let held = m.snapshot();
    t.record("web", 1, result(true), 1_000, P).unwrap();
    m.publish(snapshot(&t, &cfg, 2));
    assert_eq!(held.taken_ms, 1);
    assert_eq!(held.get("web").unwrap().state, State::Unknown);
    assert_eq!(m.snapshot().get("web").unwrap().state, State::Up);
}

/// What a target page counts in bucket `b` when it holds snapshot `s`.
fn page_count(m: &ReadModel, s: &Snapshot, b: i64) -> u32 {
    let v = s.get("api").unwrap();
    m.buckets(s, v, 0).iter().filter(|x| x.0 == b).map(|x| x.1.count).sum()
}

#[tokio::test]
async fn a_page_counts_every_check_once_at_every_step_of_a_flush() {
    let cfg = config();
    let t = table(&cfg);
    let dir = TempDir::new("snapshot-flush");
    let h = Arc::new(History::open(&dir.path("h.db")).unwrap());
    let m = ReadModel::new(snapshot(&t, &cfg, 0), Arc::new(Stats::default()), h.clone(), 0.0);
    let b = 10_000;
    for i in 0..3 {
        t.record("api", 1, result(true), b + i * 100, P).unwrap();
    }
    let before = snapshot(&t, &cfg, b + 300);
    assert_eq!(page_count(&m, &before, b), 3);
    // The flush takes the buckets; a snapshot built now has them only as the batch in flight.
    let batch = t.take_unflushed();
    let during = snapshot(&t, &cfg, b + 400);
    assert!(during.get("api").unwrap().unflushed.is_empty());
    assert_eq!(page_count(&m, &before, b), 3);
    assert_eq!(page_count(&m, &during, b), 3, "the batch in flight is counted, not lost");
    // Another check lands in the same bucket while the batch is written.
    t.record("api", 1, result(false), b + 500, P).unwrap();
    h.add_flush(&batch.rows, batch.generation).unwrap();
    // Written, but pages still hold the snapshots from before: nothing counts twice.
    assert_eq!(page_count(&m, &before, b), 3, "the old snapshot's live buckets are in the database now");
    assert_eq!(page_count(&m, &during, b), 3);
    t.flushed(batch.generation);
    let after = snapshot(&t, &cfg, b + 600);
    assert_eq!(page_count(&m, &after, b), 4, "stored 3 plus the live one");
    let rows = m.buckets(&after, after.get("api").unwrap(), 0);
    assert_eq!(rows, [(b, Bucket { count: 4, failures: 1, latency_sum_us: 1_200, latency_max_us: 300 })]);
    // A failed write: the batch is no longer in flight and nothing claims it is stored.
    let lost = t.take_unflushed();
    t.flushed(lost.generation);
    assert_eq!(page_count(&m, &snapshot(&t, &cfg, b + 700), b), 3);
}
