//! `conndoc check --config F`: diagnose every target of a watch config once, concurrently
//! (bounded), with a progress bar on a terminal; a summary table (or one JSON report per
//! target with --json); exit 0 only if every target is healthy.

use super::usage;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The watch configuration file whose targets to check (docs/watch.md).
    ///
    /// Redis passwords belong in the file (`password_file` per target, or the URL there),
    /// never on a command line, where `ps` shows them to every user.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// One JSON object per target and line: {"name", "labels", "state", "report"}.
    #[arg(long)]
    pub json: bool,
    /// Diagnoses running at the same time.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub concurrency: usize,
    /// Only these targets (repeatable).
    #[arg(long = "target", value_name = "NAME")]
    pub only: Vec<String>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

struct Row {
    name: String,
    healthy: bool,
    cause: &'static str,
    summary: String,
    latency: Option<Duration>,
    /// Boxed: a report inline made every row 1.6 kB (32 MB of rows for 10,000 targets,
    /// each page of it faulted in).
    report: Option<Box<conndoc_diagnose::Report>>,
    /// The diagnosis itself failed (no report): logged as a warning.
    tool_failed: bool,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    if a.concurrency == 0 || a.concurrency > 4096 {
        return Err(usage("--concurrency: must be from 1 to 4096"));
    }
    let cfg = conndoc_watch::load(&a.config, &Default::default()).map_err(|e| {
        let errs = e.errors();
        for line in &errs[..errs.len().saturating_sub(1)] {
            super::say(format_args!("conndoc: {line}"));
        }
        usage(errs.last().cloned().unwrap_or_default())
    })?;
    let mut targets = cfg.targets;
    if !a.only.is_empty() {
        for n in &a.only {
            if !targets.iter().any(|t| &t.name == n) {
                return Err(usage(format!("--target {n:?}: no such target in {}", a.config.display())));
            }
        }
        targets.retain(|t| a.only.contains(&t.name));
    }
    if targets.is_empty() {
        return Err(usage(format!("{}: no targets to check", a.config.display())));
    }
    let n = targets.len();
    // The engine takes each target's `Target` (moved, not cloned: 10,000 allocations and
    // copies before the first connect); the rows keep what they show.
    let (items, targets): (Vec<_>, Vec<Shown>) = targets
        .into_iter()
        .map(|t| {
            let o = t.engine_options();
            let conndoc_watch::config::TargetConfig { name, url, labels, target, .. } = t;
            ((target, o), Shown { name, url, labels })
        })
        .unzip();
    let done = AtomicUsize::new(0);
    let failing = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<Row>>> = Mutex::new((0..n).map(|_| None).collect());
    let progress = !a.no_progress && std::io::stderr().is_terminal();
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Host-wide facts once for all targets; plain refusals without a listener are
            // assembled from them, everything else gets its own full gather.
            let keep = if a.json { conndoc_engine::Keep::Everything } else { conndoc_engine::Keep::Verdict };
            conndoc_engine::gather_each(items, a.concurrency, keep, &|i, r| {
                let row = to_row(&targets[i], r, a.json);
                log_row(&targets[i], &row);
                if !row.healthy {
                    failing.fetch_add(1, Relaxed);
                }
                rows.lock().unwrap()[i] = Some(row);
                done.fetch_add(1, Relaxed);
            });
        });
        if progress {
            s.spawn(|| {
                let mut err = std::io::stderr();
                loop {
                    let d = done.load(Relaxed);
                    let width = 30;
                    let filled = d * width / n;
                    let _ = write!(
                        err,
                        "\r[{}{}] {d}/{n} checked, {} failing, {:.1}s ",
                        "#".repeat(filled),
                        " ".repeat(width - filled),
                        failing.load(Relaxed),
                        start.elapsed().as_secs_f64()
                    );
                    let _ = err.flush();
                    if d >= n {
                        let _ = writeln!(err);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    let rows: Vec<Row> = rows.into_inner().unwrap().into_iter().flatten().collect();
    let all_ok = rows.iter().all(|r| r.healthy);
    let mut out = String::new();
    if a.json {
        for (r, t) in rows.iter().zip(&targets) {
            let v = serde_json::json!({
                "name": r.name,
                "labels": t.labels,
                "state": if r.healthy { "up" } else { "down" },
                "report": r.report,
                "error": if r.report.is_none() { Some(&r.summary) } else { None },
            });
            out.push_str(&serde_json::to_string(&v)?);
            out.push('\n');
        }
    } else {
        let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
        let wc = rows.iter().map(|r| r.cause.len()).max().unwrap_or(5).max(5);
        out.reserve(rows.iter().map(|r| w + wc + r.summary.len() + 32).sum());
        let _ = writeln!(out, "{:w$}  {:5}  {:wc$}  {:>9}  SUMMARY", "TARGET", "STATE", "CAUSE", "LATENCY");
        // Padded by hand: 10,000 rows through the formatting machinery took ~10 ms.
        let pad = |out: &mut String, s: &str, width: usize| {
            out.push_str(s);
            out.extend(std::iter::repeat_n(' ', width.saturating_sub(s.chars().count())));
        };
        for r in &rows {
            let lat = r.latency.map(fmt_latency);
            pad(&mut out, &r.name, w);
            out.push_str("  ");
            pad(&mut out, if r.healthy { "up" } else { "down" }, 5);
            out.push_str("  ");
            pad(&mut out, r.cause, wc);
            out.push_str("  ");
            let lat = lat.as_deref().unwrap_or("-");
            out.extend(std::iter::repeat_n(' ', 9usize.saturating_sub(lat.chars().count())));
            out.push_str(lat);
            out.push_str("  ");
            out.push_str(&r.summary);
            out.push('\n');
        }
        let bad = rows.iter().filter(|r| !r.healthy).count();
        out.push_str(&format!(
            "{} target{}: {} healthy, {bad} failing ({:.1}s)\n",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            rows.len() - bad,
            start.elapsed().as_secs_f64()
        ));
    }
    super::diagnose::write_out(&out)?;
    // The process ends next: freeing the rows and targets one allocation at a time (tens
    // of thousands of frees for 10,000 targets) is work nobody waits for.
    std::mem::forget((rows, targets, out));
    Ok(if all_ok { 0 } else { 1 })
}

/// What a row shows of its target.
struct Shown {
    name: String,
    url: conndoc_watch::urls::TargetUrl,
    labels: std::collections::BTreeMap<String, String>,
}

fn to_row(t: &Shown, r: Result<conndoc_facts::Evidence, conndoc_engine::EngineError>, keep_report: bool) -> Row {
    match r {
        Ok(ev) => {
            let latency = ev.probes.iter().filter(|p| p.ok()).map(|p| p.elapsed_us.as_duration()).min();
            // Only --json prints the report: the table needs the verdict alone (the same
            // rules, without copying the evidence into thousands of reports).
            let (verdict, report) = if keep_report {
                let rep = conndoc_diagnose::diagnose(&ev);
                (rep.verdict.clone(), Some(Box::new(rep)))
            } else {
                (conndoc_diagnose::verdict(&ev), None)
            };
            Row {
                name: t.name.clone(),
                healthy: verdict.cause == conndoc_diagnose::Cause::Ok,
                cause: verdict.cause.code(),
                summary: verdict.summary,
                latency,
                report,
                tool_failed: false,
            }
        }
        Err(e) => Row {
            name: t.name.clone(),
            healthy: false,
            cause: "unknown",
            summary: format!("diagnosis failed: {e}"),
            latency: None,
            report: None,
            tool_failed: true,
        },
    }
}

/// One event per checked target (info: shown with CONNDOC_LOG=info); the URL only redacted.
fn log_row(t: &Shown, r: &Row) {
    let latency_ms = r.latency.map(|d| d.as_secs_f64() * 1e3);
    let state = if r.healthy { "up" } else { "down" };
    if r.tool_failed {
        tracing::warn!(name = %t.name, url = %t.url.shown(), state, cause = %r.cause, "target {}: {}", t.name, r.summary);
    } else {
        tracing::info!(name = %t.name, url = %t.url.shown(), state, cause = %r.cause, latency_ms, "target {}: {state} {}", t.name, r.cause);
    }
}

fn fmt_latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}
