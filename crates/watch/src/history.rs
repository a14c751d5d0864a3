//! History in an embedded SQLite database (WAL): per-target state (restored after a
//! restart), state transitions with their diagnosis report, probe results downsampled into
//! time buckets, and the alert outbox. Retention and a size bound keep disk use in check.

use crate::health::State;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("opening history database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("creating directory {path} for the history database: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("history database {path}: {op}: {source}")]
    Sql { path: PathBuf, op: &'static str, source: rusqlite::Error },
    #[error("history database: {0}")]
    File(String),
    #[error("history database {path} is in use by another conndoc watch ({lock} is locked); give each daemon its own `history`")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("history database {path}: locking {lock}: {source}")]
    Lock { path: PathBuf, lock: PathBuf, source: std::io::Error },
    #[error("history database {path} has schema version {found}, newer than this conndoc knows ({known}): upgrade conndoc or use another file")]
    TooNew { path: PathBuf, found: i64, known: i64 },
}

/// Schema version 1: the tables as first shipped (`CREATE … IF NOT EXISTS`, so a database
/// written before versions existed is taken as it is).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS target_state(
  name TEXT PRIMARY KEY, url TEXT NOT NULL, state TEXT NOT NULL, cause TEXT,
  since_ms INTEGER NOT NULL, event_id INTEGER);
CREATE TABLE IF NOT EXISTS probes(
  target TEXT NOT NULL, bucket_ms INTEGER NOT NULL, count INTEGER NOT NULL, failures INTEGER NOT NULL,
  latency_sum_us INTEGER NOT NULL, latency_max_us INTEGER NOT NULL,
  PRIMARY KEY(target, bucket_ms)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS probes_bucket ON probes(bucket_ms);
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY, target TEXT NOT NULL, at_ms INTEGER NOT NULL, from_state TEXT NOT NULL,
  to_state TEXT NOT NULL, cause TEXT, summary TEXT, report TEXT);
CREATE INDEX IF NOT EXISTS events_target ON events(target, id);
CREATE TABLE IF NOT EXISTS alerts(
  id INTEGER PRIMARY KEY, event_id INTEGER, receiver TEXT NOT NULL, target TEXT NOT NULL,
  status TEXT NOT NULL, payload TEXT NOT NULL, created_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_attempt_ms INTEGER NOT NULL,
  delivered_ms INTEGER, last_error TEXT);
CREATE INDEX IF NOT EXISTS alerts_pending ON alerts(delivered_ms, next_attempt_ms);
";

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// Migration to version N is `MIGRATIONS[N-1]`; each runs in one transaction with the
/// version bump, so a crash leaves the old version or the new one, never half.
const MIGRATIONS: [fn(&rusqlite::Transaction) -> rusqlite::Result<()>; SCHEMA_VERSION as usize] =
    [|tx| tx.execute_batch(SCHEMA_V1), migrate_v2_redact, migrate_v3_redact_whole_userinfo];

/// Version 3: a Redis password holding `#`, `?` or `/` is redacted up to the last `@`
/// (`redis://SEK#RIT@h:1` was stored as written). Wherever such a target's stored URL
/// appears — its state row, its events' summaries and reports, its alerts' payloads (still
/// to be sent, some of them) — it is replaced by the redacted form.
fn migrate_v3_redact_whole_userinfo(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    let rows: Vec<(String, String)> = {
        let mut st = tx.prepare("SELECT name, url FROM target_state")?;
        let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<Result<_, _>>()?
    };
    for (name, url) in rows {
        let shown = redact_target_url(&url);
        if shown == url {
            continue;
        }
        tx.execute("UPDATE target_state SET url=?2 WHERE name=?1", params![name, shown])?;
        // As written in text and inside JSON strings.
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default().trim_matches('"').to_string();
        for (old, new) in [(url.clone(), shown.clone()), (json(&url), json(&shown))] {
            tx.execute(
                "UPDATE events SET summary=replace(summary, ?2, ?3), report=replace(report, ?2, ?3) WHERE target=?1",
                params![name, old, new],
            )?;
            tx.execute("UPDATE alerts SET payload=replace(payload, ?2, ?3) WHERE target=?1", params![name, old, new])?;
        }
    }
    Ok(())
}

/// Version 2: URLs are stored redacted. Rows written before may hold a Redis password in
/// `target_state.url` or an alert payload's `url`, and a receiver's URL (a token) in
/// `alerts.last_error`: redact them in place.
fn migrate_v2_redact(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    let rows: Vec<(String, String)> = {
        let mut st = tx.prepare("SELECT name, url FROM target_state")?;
        let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<Result<_, _>>()?
    };
    for (name, url) in rows {
        tx.execute("UPDATE target_state SET url=?2 WHERE name=?1", params![name, redact_target_url(&url)])?;
    }
    let alerts: Vec<(i64, String)> = {
        let mut st = tx.prepare("SELECT id, payload FROM alerts")?;
        let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        r.collect::<Result<_, _>>()?
    };
    for (id, payload) in alerts {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&payload) else { continue };
        let mut changed = false;
        for ptr in ["/url", "/payload/custom_details/url"] {
            if let Some(u) = v.pointer_mut(ptr) {
                if let Some(s) = u.as_str() {
                    *u = serde_json::Value::String(redact_target_url(s));
                    changed = true;
                }
            }
        }
        if changed {
            tx.execute("UPDATE alerts SET payload=?2 WHERE id=?1", params![id, v.to_string()])?;
        }
    }
    tx.execute("UPDATE alerts SET last_error='(from an older conndoc, removed: it could quote a receiver URL)' WHERE last_error IS NOT NULL", [])?;
    Ok(())
}

fn redact_target_url(raw: &str) -> String {
    match conndoc_facts::Target::parse(raw) {
        Ok(t) => crate::urls::TargetUrl::new(raw, &t).shown().to_string(),
        Err(_) => conndoc_facts::REDACTED.to_string(),
    }
}

/// Longest stored string inside a diagnosis report (a server's 64 MB reply stays out of the
/// history; the cut is marked with the real length).
pub const MAX_REPORT_STRING: usize = 8 * 1024;
/// Longest array kept inside a stored report.
pub const MAX_REPORT_ITEMS: usize = 1000;
/// Longest stored report as a whole; beyond, only the verdict is kept.
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// The report JSON as stored: long strings and arrays cut, the whole bounded.
pub fn bounded_report(json: &str) -> String {
    if json.len() <= MAX_REPORT_STRING {
        return json.to_string();
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else {
        return "null".into();
    };
    bound_value(&mut v);
    let s = v.to_string();
    if s.len() <= MAX_REPORT_BYTES {
        return s;
    }
    serde_json::json!({ "verdict": v.get("verdict"), "truncated": format!("report of {} bytes not stored", s.len()) })
        .to_string()
}

fn bound_value(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) if s.len() > MAX_REPORT_STRING => *s = cut_text(s, MAX_REPORT_STRING),
        Value::Array(a) => {
            if a.len() > MAX_REPORT_ITEMS {
                let n = a.len();
                a.truncate(MAX_REPORT_ITEMS);
                a.push(Value::String(format!("… {} more items not stored", n - MAX_REPORT_ITEMS)));
            }
            a.iter_mut().for_each(bound_value);
        }
        Value::Object(o) => o.values_mut().for_each(bound_value),
        _ => {}
    }
}

/// `s` cut to at most `max` bytes at a character boundary, marked with its real length.
pub fn cut_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut: {} bytes in all)", &s[..end], s.len())
}

/// A target's persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    pub name: String,
    pub url: String,
    pub state: State,
    pub cause: Option<String>,
    pub since_ms: i64,
    pub event_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: i64,
    pub target: String,
    pub at_ms: i64,
    pub from: State,
    pub to: State,
    pub cause: Option<String>,
    pub summary: Option<String>,
}

/// Probe results of one target in one time bucket, as accumulated in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub count: u32,
    pub failures: u32,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAlert {
    pub id: i64,
    pub receiver: String,
    pub target: String,
    pub status: String,
    pub payload: String,
    pub attempts: u32,
}

/// A diagnosis as stored with its event.
#[derive(Debug, Clone, Copy)]
pub struct Diagnosis<'a> {
    pub cause: &'a str,
    pub summary: &'a str,
    pub report_json: &'a str,
}

/// A new alert to put into the outbox.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub receiver: String,
    pub target: String,
    pub status: String,
    pub payload: String,
}

pub struct History {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Held (flock) for as long as the database is open.
    _lock: std::fs::File,
    /// The last flush generation written ([`History::add_flush`]); changed and read only
    /// with `conn` locked, so it always matches what the rows hold.
    flushed: std::sync::atomic::AtomicU64,
}

/// `PATH.lock` next to the database, locked exclusively: a second daemon on the same
/// history fails at start instead of interleaving writes and alerts with the first.
fn lock_file(path: &Path) -> Result<std::fs::File, HistoryError> {
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    let f = private_file(&lock).map_err(|e| HistoryError::File(e.to_string()))?;
    match flock_exclusive(&f) {
        Ok(()) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            Err(HistoryError::Locked { path: path.to_path_buf(), lock })
        }
        Err(source) => Err(HistoryError::Lock { path: path.to_path_buf(), lock, source }),
    }
}

#[allow(unsafe_code)]
fn flock_exclusive(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this File owns; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Create or open `p` as a private (0600) regular file of ours, never through a link
/// (conndoc_files: O_NOFOLLOW, FIFOs/devices/hard links/other owners refused).
fn private_file(p: &Path) -> Result<std::fs::File, conndoc_files::WriteError> {
    conndoc_files::open_private(p)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl History {
    /// Open (or create) the database: private files, never through a symbolic link, locked
    /// against a second daemon, migrated to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir { path: dir.to_path_buf(), source })?;
        }
        // SQLite creates the -wal and -shm files with the main file's mode; create or check
        // all three as private regular files of ours first. The database itself before the
        // lock: a symlink or FIFO given as history leaves no `PATH.lock` behind.
        private_file(path).map_err(|e| HistoryError::File(e.to_string()))?;
        let lock = lock_file(path)?;
        for suffix in ["-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if std::fs::symlink_metadata(&p).is_ok() {
                private_file(&p).map_err(|e| HistoryError::File(e.to_string()))?;
            }
        }
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|source| HistoryError::Open { path: path.to_path_buf(), source })?;
        let h = History { path: path.to_path_buf(), conn: Mutex::new(conn), _lock: lock, flushed: 0.into() };
        {
            let mut c = h.lock();
            // auto_vacuum must be chosen before the first table exists; harmless afterwards.
            c.execute_batch(
                "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
            )
            .map_err(|e| h.sql("setting pragmas", e))?;
            h.migrate(&mut c)?;
        }
        Ok(h)
    }

    fn migrate(&self, c: &mut Connection) -> Result<(), HistoryError> {
        let found: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql("reading the schema version", e))?;
        if found > SCHEMA_VERSION {
            return Err(HistoryError::TooNew { path: self.path.clone(), found, known: SCHEMA_VERSION });
        }
        for v in found.max(0)..SCHEMA_VERSION {
            let tx = c.transaction().map_err(|e| self.sql("migrating", e))?;
            MIGRATIONS[v as usize](&tx).map_err(|e| self.sql("migrating", e))?;
            tx.pragma_update(None, "user_version", v + 1).map_err(|e| self.sql("migrating", e))?;
            tx.commit().map_err(|e| self.sql("migrating", e))?;
        }
        Ok(())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, HistoryError> {
        self.lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.sql("reading the schema version", e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn sql(&self, op: &'static str, source: rusqlite::Error) -> HistoryError {
        HistoryError::Sql { path: self.path.clone(), op, source }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load_states(&self) -> Result<Vec<SavedState>, HistoryError> {
        let c = self.lock();
        let mut st = c
            .prepare("SELECT name, url, state, cause, since_ms, event_id FROM target_state")
            .map_err(|e| self.sql("reading states", e))?;
        let rows = st
            .query_map([], |r| {
                Ok(SavedState {
                    name: r.get(0)?,
                    url: r.get(1)?,
                    state: State::parse(&r.get::<_, String>(2)?).unwrap_or(State::Unknown),
                    cause: r.get(3)?,
                    since_ms: r.get(4)?,
                    event_id: r.get(5)?,
                })
            })
            .map_err(|e| self.sql("reading states", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql("reading states", e))
    }

    pub fn save_state(&self, s: &SavedState) -> Result<(), HistoryError> {
        self.lock()
            .execute(
                "INSERT INTO target_state(name, url, state, cause, since_ms, event_id) VALUES (?1,?2,?3,?4,?5,?6)
                 ON CONFLICT(name) DO UPDATE SET url=?2, state=?3, cause=?4, since_ms=?5, event_id=?6",
                params![s.name, s.url, s.state.as_str(), s.cause, s.since_ms, s.event_id],
            )
            .map_err(|e| self.sql("saving state", e))?;
        Ok(())
    }

    /// Record a transition and the target's new state in one transaction; returns the event id.
    pub fn transition(
        &self,
        s: &SavedState,
        from: State,
        cause: Option<&str>,
        summary: Option<&str>,
    ) -> Result<i64, HistoryError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.sql("recording transition", e))?;
        tx.execute(
            "INSERT INTO events(target, at_ms, from_state, to_state, cause, summary) VALUES (?1,?2,?3,?4,?5,?6)",
            params![s.name, s.since_ms, from.as_str(), s.state.as_str(), cause, summary],
        )
        .map_err(|e| self.sql("recording transition", e))?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO target_state(name, url, state, cause, since_ms, event_id) VALUES (?1,?2,?3,?4,?5,?6)
             ON CONFLICT(name) DO UPDATE SET url=?2, state=?3, cause=?4, since_ms=?5, event_id=?6",
            params![s.name, s.url, s.state.as_str(), s.cause, s.since_ms, id],
        )
        .map_err(|e| self.sql("recording transition", e))?;
        tx.commit().map_err(|e| self.sql("recording transition", e))?;
        Ok(id)
    }

    /// Attach a diagnosis to an event, update the target's cause and queue alerts, atomically.
    pub fn diagnosed(
        &self,
        event_id: i64,
        target: &str,
        d: &Diagnosis,
        update_state: bool,
        alerts: &[NewAlert],
    ) -> Result<(), HistoryError> {
        let (cause, summary, report_json) = (d.cause, d.summary, d.report_json);
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.sql("storing diagnosis", e))?;
        tx.execute(
            "UPDATE events SET cause=?2, summary=?3, report=?4 WHERE id=?1",
            params![event_id, cause, summary, report_json],
        )
        .map_err(|e| self.sql("storing diagnosis", e))?;
        if update_state {
            tx.execute("UPDATE target_state SET cause=?2 WHERE name=?1", params![target, cause])
                .map_err(|e| self.sql("storing diagnosis", e))?;
        }
        insert_alerts(&tx, Some(event_id), alerts).map_err(|e| self.sql("queueing alerts", e))?;
        tx.commit().map_err(|e| self.sql("storing diagnosis", e))?;
        Ok(())
    }

    pub fn enqueue(&self, event_id: Option<i64>, alerts: &[NewAlert]) -> Result<(), HistoryError> {
        let mut c = self.lock();
        let tx = c.transaction().map_err(|e| self.sql("queueing alerts", e))?;
        insert_alerts(&tx, event_id, alerts).map_err(|e| self.sql("queueing alerts", e))?;
        tx.commit().map_err(|e| self.sql("queueing alerts", e))?;
        Ok(())
    }

    /// Alerts not yet delivered, oldest first, of every receiver whose oldest undelivered
    /// alert is due. A receiver waits as a whole behind its first alert's backoff: a later
    /// alert (a `resolved`) never overtakes an earlier one (its `firing`) that is waiting.
    pub fn due_alerts(&self, now_ms: i64, limit: usize) -> Result<Vec<PendingAlert>, HistoryError> {
        let c = self.lock();
        let mut st = c
            .prepare_cached(
                "WITH heads AS (SELECT receiver, min(id) AS id FROM alerts WHERE delivered_ms IS NULL GROUP BY receiver),
                      ready AS (SELECT h.receiver FROM heads h JOIN alerts a ON a.id = h.id WHERE a.next_attempt_ms <= ?1)
                 SELECT id, receiver, target, status, payload, attempts FROM alerts
                 WHERE delivered_ms IS NULL AND receiver IN (SELECT receiver FROM ready) ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.sql("reading alerts", e))?;
        let rows = st
            .query_map(params![now_ms, limit as i64], |r| {
                Ok(PendingAlert {
                    id: r.get(0)?,
                    receiver: r.get(1)?,
                    target: r.get(2)?,
                    status: r.get(3)?,
                    payload: r.get(4)?,
                    attempts: r.get(5)?,
                })
            })
            .map_err(|e| self.sql("reading alerts", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql("reading alerts", e))
    }

    /// Whether an alert for this receiver and target still waits for delivery.
    pub fn has_pending(&self, receiver: &str, target: &str) -> Result<bool, HistoryError> {
        self.lock()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM alerts WHERE delivered_ms IS NULL AND receiver=?1 AND target=?2)",
                params![receiver, target],
                |r| r.get(0),
            )
            .map_err(|e| self.sql("reading alerts", e))
    }

    /// Undelivered alerts per receiver.
    pub fn pending_counts(&self) -> Result<Vec<(String, u64)>, HistoryError> {
        let c = self.lock();
        let mut st = c
            .prepare("SELECT receiver, count(*) FROM alerts WHERE delivered_ms IS NULL GROUP BY receiver")
            .map_err(|e| self.sql("counting alerts", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.sql("counting alerts", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql("counting alerts", e))
    }

    pub fn delivered(&self, id: i64, at_ms: i64) -> Result<(), HistoryError> {
        self.lock()
            .execute(
                "UPDATE alerts SET delivered_ms=?2, attempts=attempts+1, last_error=NULL WHERE id=?1",
                params![id, at_ms],
            )
            .map_err(|e| self.sql("marking alert delivered", e))?;
        Ok(())
    }

    pub fn failed(&self, id: i64, next_ms: i64, error: &str) -> Result<(), HistoryError> {
        self.lock()
            .execute(
                "UPDATE alerts SET attempts=attempts+1, next_attempt_ms=?2, last_error=?3 WHERE id=?1",
                params![id, next_ms, error],
            )
            .map_err(|e| self.sql("recording alert failure", e))?;
        Ok(())
    }

    /// Add probe results to their buckets (summing with what is already stored).
    pub fn add_buckets(&self, rows: &[(String, i64, Bucket)]) -> Result<(), HistoryError> {
        let mut c = self.lock();
        self.write_buckets(&mut c, rows)
    }

    /// [`History::add_buckets`] as flush number `generation`: once committed, reads through
    /// [`History::bucket_rows_flushed`] report it with the rows (both under one lock hold).
    pub fn add_flush(&self, rows: &[(String, i64, Bucket)], generation: u64) -> Result<(), HistoryError> {
        let mut c = self.lock();
        self.write_buckets(&mut c, rows)?;
        self.flushed.fetch_max(generation, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Buckets of one target since `from_ms` (with their latencies, oldest first) and the last flush
    /// generation they include.
    pub fn bucket_rows_flushed(&self, target: &str, from_ms: i64) -> Result<(Vec<(i64, Bucket)>, u64), HistoryError> {
        let c = self.lock();
        let rows = self.read_bucket_rows(&c, target, from_ms)?;
        Ok((rows, self.flushed.load(std::sync::atomic::Ordering::Relaxed)))
    }

    fn write_buckets(&self, c: &mut Connection, rows: &[(String, i64, Bucket)]) -> Result<(), HistoryError> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = c.transaction().map_err(|e| self.sql("writing probe results", e))?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO probes(target, bucket_ms, count, failures, latency_sum_us, latency_max_us) VALUES (?1,?2,?3,?4,?5,?6)
                     ON CONFLICT(target, bucket_ms) DO UPDATE SET count=count+?3, failures=failures+?4,
                       latency_sum_us=latency_sum_us+?5, latency_max_us=max(latency_max_us, ?6)",
                )
                .map_err(|e| self.sql("writing probe results", e))?;
            for (t, b, v) in rows {
                st.execute(params![t, b, v.count, v.failures, v.latency_sum_us as i64, v.latency_max_us as i64])
                    .map_err(|e| self.sql("writing probe results", e))?;
            }
        }
        tx.commit().map_err(|e| self.sql("writing probe results", e))?;
        Ok(())
    }

    /// Buckets of one target since `from_ms`, oldest first: (bucket start, count, failures).
    pub fn buckets(&self, target: &str, from_ms: i64) -> Result<Vec<(i64, u32, u32)>, HistoryError> {
        let c = self.lock();
        let mut st = c
            .prepare_cached(
                "SELECT bucket_ms, count, failures FROM probes WHERE target=?1 AND bucket_ms>=?2 ORDER BY bucket_ms",
            )
            .map_err(|e| self.sql("reading probe results", e))?;
        let rows = st
            .query_map(params![target, from_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.sql("reading probe results", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql("reading probe results", e))
    }

    /// Buckets of one target since `from_ms` with their latencies, oldest first.
    fn read_bucket_rows(&self, c: &Connection, target: &str, from_ms: i64) -> Result<Vec<(i64, Bucket)>, HistoryError> {
        let mut st = c
            .prepare_cached(
                "SELECT bucket_ms, count, failures, latency_sum_us, latency_max_us FROM probes \
                 WHERE target=?1 AND bucket_ms>=?2 ORDER BY bucket_ms",
            )
            .map_err(|e| self.sql("reading probe results", e))?;
        let rows = st
            .query_map(params![target, from_ms], |r| {
                Ok((
                    r.get(0)?,
                    Bucket {
                        count: r.get(1)?,
                        failures: r.get(2)?,
                        latency_sum_us: r.get::<_, i64>(3)?.max(0) as u64,
                        latency_max_us: r.get::<_, i64>(4)?.max(0) as u64,
                    },
                ))
            })
            .map_err(|e| self.sql("reading probe results", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql("reading probe results", e))
    }

    pub fn events(&self, target: &str, limit: usize) -> Result<Vec<Event>, HistoryError> {
        let c = self.lock();
        let mut st = c
            .prepare_cached(
                "SELECT id, target, at_ms, from_state, to_state, cause, summary FROM events WHERE target=?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.sql("reading events", e))?;
        let rows = st
            .query_map(params![target, limit as i64], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    at_ms: r.get(2)?,
                    from: State::parse(&r.get::<_, String>(3)?).unwrap_or(State::Unknown),
                    to: State::parse(&r.get::<_, String>(4)?).unwrap_or(State::Unknown),
                    cause: r.get(5)?,
                    summary: r.get(6)?,
                })
            })
            .map_err(|e| self.sql("reading events", e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql("reading events", e))
    }

    /// The newest diagnosis report stored for a target (JSON), with its event id.
    pub fn last_report(&self, target: &str) -> Result<Option<(i64, String)>, HistoryError> {
        self.lock()
            .query_row(
                "SELECT id, report FROM events WHERE target=?1 AND report IS NOT NULL ORDER BY id DESC LIMIT 1",
                params![target],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql("reading report", e))
    }

    /// Drop what is older than the retention, then the oldest probe buckets and reports
    /// until the file is under `max_bytes`. Undelivered alerts are never dropped.
    pub fn prune(&self, retention: Duration, max_bytes: u64, now_ms: i64) -> Result<u64, HistoryError> {
        let cutoff = now_ms - retention.as_millis() as i64;
        let c = self.lock();
        let mut removed = 0u64;
        let ex = |sql: &str, p: &[&dyn rusqlite::ToSql]| c.execute(sql, p).map_err(|e| self.sql("pruning", e));
        removed += ex("DELETE FROM probes WHERE bucket_ms < ?1", &[&cutoff])? as u64;
        removed += ex(
            "DELETE FROM events WHERE at_ms < ?1 AND id NOT IN (SELECT event_id FROM target_state WHERE event_id IS NOT NULL)",
            &[&cutoff],
        )? as u64;
        removed += ex("DELETE FROM alerts WHERE delivered_ms IS NOT NULL AND delivered_ms < ?1", &[&cutoff])? as u64;
        for _ in 0..20 {
            let size: i64 = c
                .query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |r| {
                    r.get(0)
                })
                .map_err(|e| self.sql("measuring size", e))?;
            let free: i64 = c
                .query_row(
                    "SELECT freelist_count * page_size FROM pragma_freelist_count(), pragma_page_size()",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| self.sql("measuring size", e))?;
            if ((size - free).max(0) as u64) <= max_bytes {
                break;
            }
            // Oldest tenth of the probe buckets first, then old reports (the events stay).
            let n = ex(
                "DELETE FROM probes WHERE bucket_ms <= (SELECT bucket_ms FROM probes ORDER BY bucket_ms
                   LIMIT 1 OFFSET (SELECT count(*)/10 FROM probes))",
                &[],
            )?;
            let m = if n == 0 {
                ex(
                    "UPDATE events SET report=NULL WHERE id IN (SELECT id FROM events WHERE report IS NOT NULL
                       AND id NOT IN (SELECT event_id FROM target_state WHERE event_id IS NOT NULL) ORDER BY id LIMIT 100)",
                    &[],
                )?
            } else {
                0
            };
            removed += (n + m) as u64;
            if n == 0 && m == 0 {
                break;
            }
        }
        c.execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| self.sql("vacuuming", e))?;
        Ok(removed)
    }

    /// Flush the WAL into the main file (at shutdown).
    pub fn checkpoint(&self) -> Result<(), HistoryError> {
        self.lock().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").map_err(|e| self.sql("checkpointing", e))
    }
}

fn insert_alerts(tx: &rusqlite::Transaction, event_id: Option<i64>, alerts: &[NewAlert]) -> rusqlite::Result<()> {
    let now = now_ms();
    for a in alerts {
        tx.execute(
            "INSERT INTO alerts(event_id, receiver, target, status, payload, created_ms, next_attempt_ms) VALUES (?1,?2,?3,?4,?5,?6,?6)",
            params![event_id, a.receiver, a.target, a.status, a.payload, now],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("conndoc-hist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("h.db")
    }

    #[test]
    fn state_events_and_alerts_round_trip() {
        let p = tmp("rt");
        let h = History::open(&p).unwrap();
        let mode: String = h.lock().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let s = SavedState {
            name: "api".into(),
            url: "h:1".into(),
            state: State::Down,
            cause: None,
            since_ms: 5,
            event_id: None,
        };
        let id = h.transition(&s, State::Up, None, None).unwrap();
        let a =
            NewAlert { receiver: "ops".into(), target: "api".into(), status: "firing".into(), payload: "{}".into() };
        let d = Diagnosis { cause: "no-listener", summary: "nothing listens", report_json: "{\"x\":1}" };
        h.diagnosed(id, "api", &d, true, &[a]).unwrap();
        drop(h);
        let h = History::open(&p).unwrap();
        let st = h.load_states().unwrap();
        assert_eq!(st[0].state, State::Down);
        assert_eq!(st[0].cause.as_deref(), Some("no-listener"));
        assert_eq!(st[0].event_id, Some(id));
        assert_eq!(h.last_report("api").unwrap().unwrap().1, "{\"x\":1}");
        let due = h.due_alerts(now_ms() + 1, 10).unwrap();
        assert_eq!(due.len(), 1);
        h.failed(due[0].id, now_ms() + 60_000, "refused").unwrap();
        assert!(h.due_alerts(now_ms() + 1, 10).unwrap().is_empty());
        assert_eq!(h.pending_counts().unwrap(), vec![("ops".to_string(), 1)]);
        h.delivered(due[0].id, now_ms()).unwrap();
        assert!(h.pending_counts().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn a_version_2_database_loses_passwords_holding_hash_or_slash() {
        let p = tmp("v2");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let leaked = "redis://HASH#S3KRIT@127.0.0.1:2";
        {
            // As conndoc at schema version 2 wrote it: the URL taken as host "hash".
            let c = Connection::open(&p).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.pragma_update(None, "user_version", 2).unwrap();
            c.execute("INSERT INTO target_state(name, url, state, since_ms) VALUES ('h', ?1, 'down', 1)", [leaked])
                .unwrap();
            let report = serde_json::json!({"target": {"input": leaked}, "findings": [{"summary": "x"}]}).to_string();
            c.execute(
                "INSERT INTO events(target, at_ms, from_state, to_state, cause, summary, report)
                 VALUES ('h', 1, 'unknown', 'down', 'dns-no-address', ?1, ?2)",
                params![format!("target {leaked} down"), report],
            )
            .unwrap();
            let payload = serde_json::json!({"url": leaked, "text": format!("down\n   target {leaked}")}).to_string();
            c.execute(
                "INSERT INTO alerts(receiver, target, status, payload, created_ms, next_attempt_ms)
                 VALUES ('ops', 'h', 'firing', ?1, 1, 1)",
                [payload],
            )
            .unwrap();
            // Another target's rows are left as they are.
            c.execute(
                "INSERT INTO target_state(name, url, state, since_ms) VALUES ('ok', 'redis://:<redacted>@h:1', 'up', 1)",
                [],
            )
            .unwrap();
        }
        let h = History::open(&p).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        let states = h.load_states().unwrap();
        let url = |n: &str| states.iter().find(|s| s.name == n).unwrap().url.clone();
        assert_eq!(url("h"), "redis://<redacted>@127.0.0.1:2");
        assert_eq!(url("ok"), "redis://:<redacted>@h:1");
        let dump: String = h
            .lock()
            .query_row(
                "SELECT (SELECT group_concat(summary || report) FROM events) || (SELECT group_concat(payload) FROM alerts)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!dump.contains("S3KRIT"), "{dump}");
        assert!(dump.contains("redis://<redacted>@127.0.0.1:2"), "{dump}");
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn legacy_database_is_migrated_and_its_secrets_redacted() {
        let p = tmp("legacy");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        {
            // A database as the version before schema versions wrote it.
            let c = Connection::open(&p).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute(
                "INSERT INTO target_state(name, url, state, since_ms) VALUES ('r', 'redis://:S3KRIT-pw@127.0.0.1:6379', 'down', 1)",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO alerts(receiver, target, status, payload, created_ms, next_attempt_ms, last_error)
                 VALUES ('ops', 'r', 'firing', '{\"url\":\"redis://:S3KRIT-pw@127.0.0.1:6379\"}', 1, 1, 'https://h/T0KEN-S3KRIT: HTTP 500')",
                [],
            )
            .unwrap();
        }
        let h = History::open(&p).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(h.load_states().unwrap()[0].url, "redis://:<redacted>@127.0.0.1:6379");
        let dump: String = h
            .lock()
            .query_row("SELECT group_concat(payload || coalesce(last_error, '')) FROM alerts", [], |r| r.get(0))
            .unwrap();
        assert!(!dump.contains("S3KRIT"), "{dump}");
        drop(h);
        // Opening again runs nothing twice.
        assert_eq!(History::open(&p).unwrap().schema_version().unwrap(), SCHEMA_VERSION);
        // A database from a newer conndoc is refused, not rewritten.
        Connection::open(&p).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let e = History::open(&p).err().expect("newer schema refused").to_string();
        assert!(e.contains("newer than this conndoc knows"), "{e}");
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn private_locked_and_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp("priv");
        let h = History::open(&p).unwrap();
        h.save_state(&SavedState {
            name: "a".into(),
            url: "h:1".into(),
            state: State::Up,
            cause: None,
            since_ms: 1,
            event_id: None,
        })
        .unwrap();
        for f in ["", "-wal", "-shm", ".lock"] {
            let f = format!("{}{f}", p.display());
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        // A second daemon on the same file: refused with a clear line.
        let e = History::open(&p).err().expect("second open refused").to_string();
        assert!(e.contains("in use by another conndoc watch"), "{e}");
        drop(h);
        // A symlink where the database should be (to a file the attacker wants clobbered).
        let d = p.parent().unwrap();
        let victim = d.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = d.join("link.db");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(History::open(&link).is_err(), "opened through a symlink");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // Refused before anything is created next to it (the lock was, once).
        let dangling = d.join("dangling.db");
        std::os::unix::fs::symlink(d.join("nowhere"), &dangling).unwrap();
        assert!(History::open(&dangling).is_err(), "opened through a dangling symlink");
        for l in [&link, &dangling] {
            let lock = PathBuf::from(format!("{}.lock", l.display()));
            assert!(std::fs::symlink_metadata(&lock).is_err(), "{} left behind", lock.display());
        }
        assert!(!d.join("nowhere").exists(), "created through the dangling link");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn huge_reports_are_bounded_with_their_real_length() {
        let big = "x".repeat(5 << 20);
        let report = serde_json::json!({"verdict": {"cause": "ok"}, "reply": big, "items": vec![1; 5000]}).to_string();
        let stored = bounded_report(&report);
        assert!(stored.len() < 64 * 1024, "{}", stored.len());
        let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(v["verdict"]["cause"], "ok");
        assert!(v["reply"].as_str().unwrap().ends_with(&format!("(cut: {} bytes in all)", 5 << 20)));
        assert_eq!(v["items"].as_array().unwrap().len(), MAX_REPORT_ITEMS + 1);
        assert_eq!(cut_text("é", 1), "… (cut: 2 bytes in all)");
        assert_eq!(bounded_report("{\"a\":1}"), "{\"a\":1}");
    }

    #[test]
    fn buckets_sum_and_prune() {
        let p = tmp("b");
        let h = History::open(&p).unwrap();
        let b = Bucket { count: 2, failures: 1, latency_sum_us: 10, latency_max_us: 7 };
        h.add_buckets(&[("a".into(), 1000, b), ("a".into(), 2000, b)]).unwrap();
        h.add_buckets(&[("a".into(), 1000, b)]).unwrap();
        assert_eq!(h.buckets("a", 0).unwrap(), vec![(1000, 4, 2), (2000, 2, 1)]);
        let removed = h.prune(Duration::from_secs(3600), u64::MAX, 3_600_000 + 1500).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(h.buckets("a", 0).unwrap(), vec![(2000, 2, 1)]);
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}
