//! The web dashboard: server-rendered HTML, no JavaScript, refreshes itself with a meta
//! refresh. An index of all targets (state, cause, time since change) and a page per target
//! with an availability timeline, its transitions and the last diagnosis for people.

use crate::health::State;
use crate::history::now_ms;
use crate::snapshot::{ReadModel, TargetView};
use conndoc_probe::time::rfc3339;
use serde_json::json;
use std::fmt::Write;
use std::time::Duration;

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `3d 4h`, `5m 2s`, `7s`: the two largest units.
pub fn ago(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

fn latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;align-items:baseline;gap:24px}
header h1{font-size:20px;margin:0} header a{color:#fff;text-decoration:none}
main{padding:16px 24px}
.counts span{margin-right:16px;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e4e6ea;vertical-align:top;font-size:14px}
th{background:#eceef2;font-weight:600}
.badge{display:inline-block;min-width:64px;text-align:center;border-radius:4px;padding:2px 8px;font-weight:700;color:#fff;text-transform:uppercase;font-size:12px}
.badge.up{background:#1f8a4c}.badge.down{background:#c62828}.badge.unknown{background:#7a7f8a}
tr.down td{background:#fdecec}
code{font-family:ui-monospace,Menlo,monospace;font-size:13px}
.cause{font-weight:700;color:#b71c1c}.ok{color:#1f8a4c;font-weight:600}
.muted{color:#6b7280}.n-down{color:#c62828}.n-up{color:#1f8a4c}
.timeline{display:flex;gap:1px;height:28px;margin:8px 0 4px;max-width:960px}
.timeline span{flex:1;background:#d5d8de}
.timeline .a100{background:#1f8a4c}.timeline .a50{background:#f0a500}.timeline .a0{background:#c62828}
pre{background:#fff;border:1px solid #e4e6ea;padding:12px;overflow:auto;font-size:13px;max-width:1100px;white-space:pre-wrap}
h2{font-size:16px;margin:20px 0 6px}
";

fn page(title: &str, refresh: u64, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style>{STYLE}</style></head>\
         <body><header><h1><a href=\"/\">conndoc watch</a></h1><span class=\"muted\">refreshes every {refresh} s</span></header><main>{body}</main></body></html>\n",
        esc(title)
    )
}

fn refresh_secs(views: &[TargetView]) -> u64 {
    views.iter().map(|v| v.interval.as_secs()).min().unwrap_or(5).clamp(2, 30)
}

pub fn index(m: &ReadModel) -> String {
    let snap = m.snapshot();
    let views = &snap.targets;
    let now = now_ms();
    let (mut up, mut down, mut unknown) = (0, 0, 0);
    for v in views {
        match v.state {
            State::Up => up += 1,
            State::Down => down += 1,
            State::Unknown => unknown += 1,
        }
    }
    let mut b = String::with_capacity(512 + views.len() * 420);
    let _ = write!(
        b,
        "<p class=\"counts\"><span id=\"count-down\" class=\"{}\">{down} down</span><span id=\"count-up\" class=\"{}\">{up} up</span><span id=\"count-unknown\" class=\"muted\">{unknown} unknown</span></p>\
         <table id=\"targets\"><thead><tr><th>Target</th><th>State</th><th>Cause</th><th>Since</th><th>Last check</th><th>URL</th></tr></thead><tbody>",
        if down > 0 { "n-down" } else { "muted" },
        if up > 0 { "n-up" } else { "muted" },
    );
    for v in views {
        let name = esc(&v.name);
        let st = v.state.as_str();
        let cause = if v.state == State::Down && v.diagnosing && v.summary.is_none() {
            "<span class=\"muted\">diagnosing…</span>".to_string()
        } else if v.cause == "ok" {
            "<span class=\"ok\">ok</span>".into()
        } else {
            let summary =
                v.summary.as_deref().map(|s| format!(" <span class=\"muted\">{}</span>", esc(s))).unwrap_or_default();
            format!("<code class=\"cause\">{}</code>{summary}", esc(&v.cause))
        };
        let last = match (v.last_outcome, v.last_latency) {
            (Some(o), Some(l)) => format!("{o} in {}, {} ago", latency(l), ago(now - v.last_ms)),
            _ => "<span class=\"muted\">not yet</span>".into(),
        };
        let _ = write!(
            b,
            "<tr class=\"{st}\" data-target=\"{name}\" data-state=\"{st}\" data-cause=\"{}\"><td><a href=\"/target/{name}\">{name}</a></td>\
             <td><span class=\"badge {st}\">{st}</span></td><td>{cause}</td><td title=\"{}\">{}</td><td>{last}</td><td><code>{}</code></td></tr>",
            esc(&v.cause),
            rfc3339((v.since_ms / 1000) as u64),
            ago(now - v.since_ms),
            esc(v.url.shown())
        );
    }
    b.push_str("</tbody></table>");
    let title =
        if down > 0 { format!("{down} down · conndoc watch") } else { format!("all {up} up · conndoc watch") };
    page(&title, refresh_secs(views), &b)
}

pub fn api_targets(m: &ReadModel) -> String {
    let v: Vec<_> = m.snapshot().targets.iter().map(view_json).collect();
    serde_json::to_string(&v).unwrap_or_else(|_| "[]".into())
}

fn view_json(v: &TargetView) -> serde_json::Value {
    json!({
        "name": v.name,
        "state": v.state,
        "cause": v.cause,
        "summary": v.summary,
        "since": rfc3339((v.since_ms / 1000) as u64),
        "url": v.url,
        "labels": v.labels,
        "last_check": v.last_outcome,
        "last_latency_us": v.last_latency.map(|l| l.as_micros() as u64),
        "diagnosing": v.diagnosing,
    })
}

struct Detail {
    view: TargetView,
    slots: Vec<Option<f64>>,
    window_ms: i64,
    events: Vec<crate::history::Event>,
    report: Option<(i64, String)>,
}

/// Reads the history database: call it off the runtime's worker (the HTTP server does).
fn detail(m: &ReadModel, name: &str) -> Option<Detail> {
    let view = m.snapshot().get(name)?.clone();
    let unflushed: Vec<(i64, u32, u32)> = view.unflushed.iter().map(|(b, v)| (*b, v.count, v.failures)).collect();
    let now = now_ms();
    let h = &m.history;
    let (buckets, events, report) = (
        h.buckets(name, now - 86_400_000).unwrap_or_default(),
        h.events(name, 20).unwrap_or_default(),
        h.last_report(name).ok().flatten(),
    );
    // The timeline spans from the first result (at most a day ago) to now, in 60 slots.
    let first = buckets.iter().chain(unflushed.iter()).map(|b| b.0).min().unwrap_or(now);
    let window_ms = (now - first).clamp(60_000, 86_400_000);
    let start = now - window_ms;
    let mut agg = vec![(0u64, 0u64); 60];
    for (b, c, f) in buckets.iter().chain(unflushed.iter()) {
        if *b < start {
            continue;
        }
        let i = (((b - start) as f64 / window_ms as f64) * 60.0) as usize;
        let slot = &mut agg[i.min(59)];
        slot.0 += *c as u64;
        slot.1 += *f as u64;
    }
    let slots = agg.into_iter().map(|(c, f)| if c == 0 { None } else { Some((c - f) as f64 / c as f64) }).collect();
    Some(Detail { view, slots, window_ms, events, report })
}

pub fn target_page(m: &ReadModel, name: &str) -> Option<String> {
    let x = detail(m, name)?;
    let v = &x.view;
    let now = now_ms();
    let st = v.state.as_str();
    let mut b = String::new();
    let cause = if v.cause == "ok" {
        "<span class=\"ok\">ok</span>".to_string()
    } else {
        format!("<code class=\"cause\" id=\"cause\">{}</code>", esc(&v.cause))
    };
    let _ = write!(
        b,
        "<h2 style=\"font-size:22px\" id=\"target\" data-state=\"{st}\" data-cause=\"{}\">{} <span class=\"badge {st}\" id=\"state\">{st}</span></h2>\
         <p>{cause} {} <span class=\"muted\">since {} ({} ago)</span></p><p class=\"muted\"><code>{}</code>{}</p>",
        esc(&v.cause),
        esc(&v.name),
        v.summary.as_deref().map(esc).unwrap_or_default(),
        rfc3339((v.since_ms / 1000) as u64),
        ago(now - v.since_ms),
        esc(v.url.shown()),
        v.labels.iter().map(|(k, val)| format!(" · {}={}", esc(k), esc(val))).collect::<String>()
    );
    let _ = write!(b, "<h2>Availability, last {}</h2><div class=\"timeline\" id=\"timeline\">", ago(x.window_ms));
    for s in &x.slots {
        let (class, title) = match s {
            None => ("", "no data".to_string()),
            Some(a) if *a >= 0.999 => ("a100", "100% up".to_string()),
            Some(a) if *a > 0.0 => ("a50", format!("{:.0}% up", a * 100.0)),
            Some(_) => ("a0", "down".to_string()),
        };
        let _ = write!(b, "<span class=\"{class}\" title=\"{title}\"></span>");
    }
    b.push_str(
        "</div><p class=\"muted\">green: all checks passed · amber: some failed · red: all failed · grey: no data</p>",
    );
    b.push_str("<h2>Transitions</h2><table id=\"events\"><thead><tr><th>When</th><th>Change</th><th>Cause</th><th>Summary</th></tr></thead><tbody>");
    for e in &x.events {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{} → {}</td><td><code>{}</code></td><td>{}</td></tr>",
            rfc3339((e.at_ms / 1000) as u64),
            e.from,
            e.to,
            esc(e.cause.as_deref().unwrap_or(if e.to == State::Down { "diagnosing…" } else { "" })),
            esc(e.summary.as_deref().unwrap_or(""))
        );
    }
    if x.events.is_empty() {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">no transitions recorded yet</td></tr>");
    }
    b.push_str("</tbody></table><h2>Last diagnosis</h2>");
    match x
        .report
        .as_ref()
        .and_then(|(id, j)| serde_json::from_str::<conndoc_diagnose::Report>(j).ok().map(|r| (id, r)))
    {
        Some((id, r)) => {
            let _ = write!(
                b,
                "<p class=\"muted\">event {id}, started {}</p><pre id=\"report\">{}</pre>",
                esc(&r.started_at),
                esc(&conndoc_diagnose::render::text(&r, false))
            );
        }
        None => {
            b.push_str("<p class=\"muted\" id=\"report\">no diagnosis yet: one runs each time the target goes down</p>")
        }
    }
    let title = format!("{} {st} · conndoc watch", v.name);
    Some(page(&title, refresh_secs(std::slice::from_ref(v)), &b))
}

pub fn api_target(m: &ReadModel, name: &str) -> Option<String> {
    let x = detail(m, name)?;
    let mut v = view_json(&x.view);
    v["events"] = x
        .events
        .iter()
        .map(|e| {
            json!({"id": e.id, "at": rfc3339((e.at_ms / 1000) as u64), "from": e.from, "to": e.to, "cause": e.cause, "summary": e.summary})
        })
        .collect();
    v["report"] = x.report.and_then(|(_, j)| serde_json::from_str(&j).ok()).unwrap_or(serde_json::Value::Null);
    v["availability"] = x.slots.iter().map(|s| json!(s)).collect();
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_durations() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(ago(7_000), "7s");
        assert_eq!(ago(62_000), "1m 2s");
        assert_eq!(ago(3_600_000 * 26), "1d 2h");
        assert_eq!(latency(Duration::from_micros(120)), "120 µs");
    }
}
