//! Render time of the dashboard with 10,000 targets (issue 15: under 200 ms), each render
//! building its read-model snapshot from a live targets table as the daemon's do (on
//! read): the snapshot build alone, the index unfiltered and filtered, a target
//! page with a day of 1-minute buckets, `/api/targets` and `/metrics`. A benchmark, not a
//! timed test: `cargo bench -p conndoc-watch --bench dashboard` (N=…, RUNS=… to change).
//! Prints the median and the slowest of RUNS renders each, with the load average and nproc.

use conndoc_facts::ConnectKind;
use conndoc_watch::config::Config;
use conndoc_watch::health::State;
use conndoc_watch::history::{Bucket, History};
use conndoc_watch::probe::ProbeResult;
use conndoc_watch::snapshot::{ReadModel, Snapshot, Source};
use conndoc_watch::table::{Entry, Table};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The daemon's source of snapshots (a copy of the table's views in attention order), for
/// a table this benchmark fills.
struct Live {
    table: Arc<Table>,
    cfg: Arc<Config>,
}

impl Source for Live {
    fn build(&self) -> Arc<Snapshot> {
        let (views, mark) = self.table.views();
        Arc::new(Snapshot::at(conndoc_watch::history::now_ms(), views, self.cfg.clone(), mark))
    }
    fn config(&self) -> Arc<Config> {
        self.cfg.clone()
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let n = env("N", 10_000);
    let runs = env("RUNS", 15);
    let dir = std::env::temp_dir().join(format!("conndoc-dash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!("history = \"{}\"\nhistory_resolution = \"1m\"\n", dir.join("h.db").display());
    let causes = ["no-listener", "firewall-drop", "accepted-then-closed", "dns-nxdomain"];
    for i in 0..n {
        text.push_str(&format!(
            "[[target]]\nname = \"svc-{i:05}\"\nurl = \"tcp://10.{}.{}.{}:{}\"\nlabels = {{ team = \"t{}\" }}\n",
            i / 65536 % 256,
            i / 256 % 256,
            i % 256,
            1000 + i % 50000,
            i % 20
        ));
    }
    let cfg = conndoc_watch::config::load_str(std::path::Path::new("bench.toml"), &text, &Default::default())
        .expect("generated config");
    let now = conndoc_watch::history::now_ms();
    // The live targets table, filled as the daemon's checks and diagnoses would leave it.
    let table = Arc::new(Table::default());
    for (i, t) in cfg.targets.iter().enumerate() {
        let mut e = Entry::new(Arc::new(t.clone()), now - (i as i64 * 1000));
        let st = &mut e.st;
        // One target in ten down, with one of four causes; two in a hundred unknown.
        st.health.state = match i % 100 {
            0..=9 => State::Down,
            10..=11 => State::Unknown,
            _ => State::Up,
        };
        let down = st.health.state == State::Down;
        st.cause = match st.health.state {
            State::Down => Some(causes[i % causes.len()].to_string()),
            State::Up => Some("ok".into()),
            State::Unknown => None,
        };
        st.summary = down.then(|| format!("Nothing accepts connections on {}", t.url.shown()));
        st.container = (i % 7 == 0).then(|| format!("app-{i}"));
        st.last = Some(ProbeResult {
            kind: if down { ConnectKind::Refused } else { ConnectKind::Connected },
            elapsed: Duration::from_micros(150 + i as u64 % 300),
            errno: None,
            unresolved: false,
            peer_close: None,
        });
        st.last_ms = now - 500;
        st.outcomes.insert(if down { "refused" } else { "connected" }, 1000 + i as u64);
        st.unflushed
            .insert(now - now % 60_000, Bucket { count: 3, failures: 0, latency_sum_us: 600, latency_max_us: 300 });
        table.insert(e);
    }
    let history = Arc::new(History::open(&cfg.history).expect("history"));
    // A day of 1-minute buckets for the target whose page is rendered, with a down hour.
    let day: Vec<(String, i64, Bucket)> = (0..1440)
        .map(|k| {
            let b = now - now % 60_000 - k * 60_000;
            let f = if (300..360).contains(&k) { 12 } else { 0 };
            (
                "svc-00000".to_string(),
                b,
                Bucket { count: 12, failures: f, latency_sum_us: 12 * 200, latency_max_us: 900 },
            )
        })
        .collect();
    history.add_buckets(&day).unwrap();
    let m = ReadModel::new(Live { table, cfg: Arc::new(cfg) }, Default::default(), history, 0.0);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "dashboard render, {n} targets, {runs} runs each; load average {}; nproc {nproc}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let bench = |what: &str, f: &dyn Fn() -> usize| {
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for _ in 0..runs {
            let t = Instant::now();
            bytes = std::hint::black_box(f());
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{what:<34} median {:>7.1} ms  slowest {:>7.1} ms  ({:.1} MB)",
            times[times.len() / 2],
            times[times.len() - 1],
            bytes as f64 / 1e6
        );
    };
    // Every render below builds its snapshot from the table first, as the daemon's do.
    bench("snapshot build (copy + attention order)", &|| m.snapshot().targets.len());
    bench("index", &|| conndoc_watch::dashboard::index(&m, None).len());
    bench("index ?state=down", &|| conndoc_watch::dashboard::index(&m, Some("state=down")).len());
    bench("index ?cause=no-listener&label=t1", &|| {
        conndoc_watch::dashboard::index(&m, Some("cause=no-listener&label=team%3Dt1")).len()
    });
    bench("target page (1 day of 1m buckets)", &|| {
        conndoc_watch::dashboard::target_page(&m, "svc-00000").unwrap().len()
    });
    bench("/api/targets", &|| conndoc_watch::dashboard::api_targets(&m).len());
    bench("/metrics", &|| conndoc_watch::metrics::render(&m).len());
    let _ = std::fs::remove_dir_all(&dir);
}
