//! The read model (crate::snapshot) built from this table: snapshots in attention order, a
//! real history file, and the page's bucket read checked at every step of a flush. Here and
//! not in snapshot's own tests: snapshot must not import table (no import cycle).

use super::tests::{config, result, table, P};
use super::*;
use crate::config::Config;
use crate::history::{now_ms, Bucket, History};
use crate::snapshot::{ReadModel, Snapshot, Source};
use crate::stats::Stats;
use crate::testkit::TempDir;

fn three() -> Arc<Config> {
    Arc::new(config(&[("api", "tcp://127.0.0.1:1"), ("db", "tcp://127.0.0.1:2"), ("web", "tcp://127.0.0.1:3")]))
}

fn snapshot(t: &Table, cfg: &Arc<Config>, at: i64) -> Snapshot {
    let (views, mark) = t.views();
    Snapshot::at(at, views, cfg.clone(), mark)
}

/// The table as the daemon's read model sees it: snapshots built from it on read.
struct Live(Arc<Table>, Arc<Config>);

impl Source for Live {
    fn build(&self) -> Arc<Snapshot> {
        Arc::new(snapshot(&self.0, &self.1, now_ms()))
    }
    fn config(&self) -> Arc<Config> {
        self.1.clone()
    }
}

/// A read model over `t` with a real history file in `dir`.
fn model(t: &Arc<Table>, cfg: &Arc<Config>, dir: &TempDir) -> (ReadModel, Arc<History>) {
    let h = Arc::new(History::open(&dir.path("h.db")).unwrap());
    (ReadModel::new(Live(t.clone(), cfg.clone()), Arc::new(Stats::default()), h.clone(), 0.0), h)
}

#[tokio::test]
async fn built_from_the_state_in_attention_order() {
    let cfg = three();
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
    assert_eq!(db.last_latency, Some(Duration::from_micros(200)));
    assert_eq!(db.unflushed.len(), 1);
    assert!(s.get("nope").is_none());
}

#[tokio::test]
async fn a_snapshot_is_built_on_read_and_stays_unchanged_while_held() {
    let cfg = three();
    let t = Arc::new(table(&cfg));
    let dir = TempDir::new("snapshot-on-read");
    let (m, _) = model(&t, &cfg, &dir);
    let held = m.snapshot();
    assert_eq!(held.get("web").unwrap().state, State::Unknown);
    // A check changes only the live state; the next read sees it, the held one does not.
    t.record("web", 1, result(true), 1_000, P).unwrap();
    assert_eq!(m.snapshot().get("web").unwrap().state, State::Up, "no publish step: the read builds it");
    assert_eq!(held.get("web").unwrap().state, State::Unknown);
    assert_eq!(m.config().targets.len(), 3);
}

#[test]
fn readers_during_a_build_share_the_next_one_never_an_older_one() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    /// Counts its builds; each takes 300 ms and carries its number as `taken_ms`.
    struct Slow(Arc<AtomicU64>, Arc<Config>);
    impl Source for Slow {
        fn build(&self) -> Arc<Snapshot> {
            let n = self.0.fetch_add(1, SeqCst) + 1;
            std::thread::sleep(Duration::from_millis(300));
            Arc::new(Snapshot::new(n as i64, Vec::new(), self.1.clone()))
        }
        fn config(&self) -> Arc<Config> {
            self.1.clone()
        }
    }
    let dir = TempDir::new("snapshot-share");
    let h = Arc::new(History::open(&dir.path("h.db")).unwrap());
    let builds = Arc::new(AtomicU64::new(0));
    let m = Arc::new(ReadModel::new(Slow(builds.clone(), three()), Arc::new(Stats::default()), h, 0.0));
    assert_eq!(m.snapshot().taken_ms, 1);
    assert_eq!(m.snapshot().taken_ms, 2, "a read after a build finished builds again");
    // A read during a build waits for it, but needs a newer one: two such readers share it.
    let during = || {
        let m = m.clone();
        std::thread::spawn(move || m.snapshot().taken_ms)
    };
    let a = during();
    for _ in 0..500 {
        if builds.load(SeqCst) == 3 {
            break; // a's build runs
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (b, c) = (during(), during());
    assert_eq!(a.join().unwrap(), 3);
    assert_eq!((b.join().unwrap(), c.join().unwrap()), (4, 4), "one build for both, begun after they asked");
}

/// What a target page counts in bucket `b` when it holds snapshot `s`.
fn page_count(m: &ReadModel, s: &Snapshot, b: i64) -> u32 {
    let v = s.get("api").unwrap();
    m.buckets(s, v, 0).iter().filter(|x| x.0 == b).map(|x| x.1.count).sum()
}

#[tokio::test]
async fn a_page_counts_every_check_once_at_every_step_of_a_flush() {
    let cfg = three();
    let t = Arc::new(table(&cfg));
    let dir = TempDir::new("snapshot-flush");
    let (m, h) = model(&t, &cfg, &dir);
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
    assert_eq!(rows, [(b, Bucket { count: 4, failures: 1, latency_sum_us: 800, latency_max_us: 200 })]);
    // A failed write: the batch is no longer in flight and nothing claims it is stored.
    let lost = t.take_unflushed();
    t.flushed(lost.generation);
    assert_eq!(page_count(&m, &snapshot(&t, &cfg, b + 700), b), 3);
}
