//! The web dashboard: server-rendered HTML and SVG, no JavaScript, refreshes itself with a
//! meta refresh. The index lists the targets by what needs attention, filtered by state,
//! cause and label (query parameters), with counts by cause; a page per target shows the
//! availability strip, the latency chart and the cause timeline over the history window,
//! its last diagnoses and the last report for people. Everything renders from the read
//! model's snapshot (and, for a target's page, the history database).

use crate::charts::{self, Cell, Period};
use crate::health::State;
use crate::history::now_ms;
use crate::snapshot::{ReadModel, TargetView};
use conndoc_probe::time::rfc3339;
use serde_json::json;
use std::fmt::Write;
use std::time::Duration;

pub use crate::charts::esc;

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
    charts::latency_text(d.as_micros() as u64)
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
svg.strip,svg.chart,svg.causes{display:block;width:100%;max-width:960px;margin:6px 0 2px}
svg.strip{height:28px}svg.chart{height:120px;background:#fff}svg.causes{height:24px}
.cell.up{fill:#1f8a4c}.cell.part{fill:#f0a500}.cell.down{fill:#c62828}.cell.none{fill:#d5d8de}
.chart .axis{stroke:#9aa0aa}.chart .grid{stroke:#e4e6ea}.chart .max{fill:#c9d7f2}.chart .mean{fill:none;stroke:#2457c5;stroke-width:2;vector-effect:non-scaling-stroke}
.chart .label{font-size:10px;fill:#6b7280}
.causes .ok{fill:#e3f1e8}.causes .period rect{fill:#c62828}.causes text{font-size:12px;fill:#fff;font-weight:700}
.axis-times{display:flex;justify-content:space-between;max-width:960px;font-size:12px;color:#6b7280}
.ctr{display:inline-block;margin-left:6px;padding:0 6px;border-radius:4px;background:#e8eaf6;color:#283593;font-size:12px}
form.filter{margin:8px 0 12px;display:flex;gap:8px;align-items:center;flex-wrap:wrap}
.bycause a{margin-right:12px;text-decoration:none}
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

/// What the index shows: `state`, `cause` and `label` (`KEY=VALUE`) from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<String>,
    pub cause: Option<String>,
    pub label: Option<(String, String)>,
}

/// Longest query string read (the request head is bounded already; this bounds the work).
const MAX_QUERY: usize = 2048;

impl Filter {
    pub fn parse(query: Option<&str>) -> Filter {
        let mut f = Filter::default();
        let q = query.unwrap_or("");
        let cut = (0..=MAX_QUERY.min(q.len())).rev().find(|i| q.is_char_boundary(*i)).unwrap_or(0);
        let q = &q[..cut];
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            match &*k {
                "state" => f.state = Some(v.to_string()),
                "cause" => f.cause = Some(v.to_string()),
                "label" => {
                    f.label = Some(match v.split_once('=') {
                        Some((a, b)) => (a.trim().to_string(), b.trim().to_string()),
                        None => (v.to_string(), String::new()),
                    })
                }
                _ => {}
            }
        }
        f
    }
    pub fn matches(&self, v: &TargetView) -> bool {
        self.state.as_deref().is_none_or(|s| v.state.as_str() == s)
            && self.cause.as_deref().is_none_or(|c| v.cause == c)
            && self.label.as_ref().is_none_or(|(k, val)| v.labels.get(k).is_some_and(|x| val.is_empty() || x == val))
    }
    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

fn cause_cell(v: &TargetView) -> String {
    let mut s = if v.state == State::Down && v.diagnosing && v.summary.is_none() {
        "<span class=\"muted\">diagnosing…</span>".to_string()
    } else if v.cause == "ok" {
        "<span class=\"ok\">ok</span>".into()
    } else {
        let summary =
            v.summary.as_deref().map(|s| format!(" <span class=\"muted\">{}</span>", esc(s))).unwrap_or_default();
        format!("<code class=\"cause\">{}</code>{summary}", esc(&v.cause))
    };
    if let Some(c) = &v.container {
        let _ = write!(s, "<span class=\"ctr\" title=\"container\">container {}</span>", esc(c));
    }
    s
}

pub fn index(m: &ReadModel, query: Option<&str>) -> String {
    let snap = m.snapshot();
    let all = &snap.targets;
    let filter = Filter::parse(query);
    let now = now_ms();
    let (mut up, mut down, mut unknown) = (0, 0, 0);
    let mut by_cause: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut labels: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for v in all {
        match v.state {
            State::Up => up += 1,
            State::Down => down += 1,
            State::Unknown => unknown += 1,
        }
        if v.state == State::Down {
            *by_cause.entry(&v.cause).or_default() += 1;
        }
        if labels.len() < 200 {
            labels.extend(v.labels.iter().map(|(k, val)| format!("{k}={val}")));
        }
    }
    let views: Vec<&TargetView> = all.iter().filter(|v| filter.matches(v)).collect();
    let mut b = String::with_capacity(2048 + views.len() * 480);
    let _ = write!(
        b,
        "<p class=\"counts\"><a href=\"?state=down\"><span id=\"count-down\" class=\"{}\">{down} down</span></a><a href=\"?state=up\"><span id=\"count-up\" class=\"{}\">{up} up</span></a><a href=\"?state=unknown\"><span id=\"count-unknown\" class=\"muted\">{unknown} unknown</span></a></p>",
        if down > 0 { "n-down" } else { "muted" },
        if up > 0 { "n-up" } else { "muted" },
    );
    if !by_cause.is_empty() {
        // The most frequent cause first: one fault (a firewall, a dead host) often takes many targets.
        let mut causes: Vec<_> = by_cause.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        b.push_str("<p class=\"bycause\" id=\"by-cause\">Down by cause: ");
        for (c, n) in causes {
            let _ = write!(
                b,
                "<a href=\"?cause={}\" data-cause=\"{}\"><code class=\"cause\">{}</code> {n}</a>",
                enc(c),
                esc(c),
                esc(c)
            );
        }
        b.push_str("</p>");
    }
    let sel = |cur: Option<&str>, v: &str| if cur == Some(v) { " selected" } else { "" };
    let _ = write!(b, "<form class=\"filter\" method=\"get\" action=\"/\"><label>state <select name=\"state\"><option value=\"\">any</option>");
    for s in ["down", "unknown", "up"] {
        let _ = write!(b, "<option{}>{s}</option>", sel(filter.state.as_deref(), s));
    }
    b.push_str("</select></label><label>cause <select name=\"cause\"><option value=\"\">any</option>");
    let mut cause_opts: Vec<&str> = by_cause.keys().copied().collect();
    if let Some(c) = filter.cause.as_deref().filter(|c| !cause_opts.contains(c)) {
        cause_opts.push(c);
    }
    for c in cause_opts {
        let _ = write!(b, "<option{}>{}</option>", sel(filter.cause.as_deref(), c), esc(c));
    }
    let label_now = filter.label.as_ref().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") });
    let _ = write!(
        b,
        "</select></label><label>label <input name=\"label\" list=\"labels\" placeholder=\"team=core\" value=\"{}\"></label><datalist id=\"labels\">",
        esc(label_now.as_deref().unwrap_or(""))
    );
    for l in &labels {
        let _ = write!(b, "<option value=\"{}\">", esc(l));
    }
    b.push_str("</datalist><button type=\"submit\">filter</button>");
    if !filter.is_empty() {
        let _ = write!(
            b,
            " <a href=\"/\">all targets</a> <span class=\"muted\" id=\"shown\">{} of {} shown</span>",
            views.len(),
            all.len()
        );
    }
    b.push_str("</form><table id=\"targets\"><thead><tr><th>Target</th><th>State</th><th>Cause</th><th>Since</th><th>Last check</th><th>URL</th></tr></thead><tbody>");
    for v in &views {
        let name = esc(&v.name);
        let st = v.state.as_str();
        let last = match (v.last_outcome, v.last_latency) {
            (Some(o), Some(l)) => format!("{o} in {}, {} ago", latency(l), ago(now - v.last_ms)),
            _ => "<span class=\"muted\">not yet</span>".into(),
        };
        let _ = write!(
            b,
            "<tr class=\"{st}\" data-target=\"{name}\" data-state=\"{st}\" data-cause=\"{}\"><td><a href=\"/target/{}\">{name}</a></td>\
             <td><span class=\"badge {st}\">{st}</span></td><td>{}</td><td title=\"{}\">{}</td><td>{last}</td><td><code>{}</code></td></tr>",
            esc(&v.cause),
            enc(&v.name),
            cause_cell(v),
            rfc3339((v.since_ms / 1000) as u64),
            ago(now - v.since_ms),
            esc(v.url.shown())
        );
    }
    if views.is_empty() {
        b.push_str("<tr><td colspan=\"6\" class=\"muted\">no target matches</td></tr>");
    }
    b.push_str("</tbody></table>");
    let title =
        if down > 0 { format!("{down} down · conndoc watch") } else { format!("all {up} up · conndoc watch") };
    page(&title, refresh_secs(all), &b)
}

/// What a query-string or path value keeps unencoded: cause codes and target names
/// (letters, digits, `.`, `_`, `-`) stay readable in links.
const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// A query-string or path value, percent-encoded.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
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
        "container": v.container,
    })
}

struct Detail {
    view: TargetView,
    cells: Vec<Cell>,
    periods: Vec<Period>,
    events: Vec<crate::history::Event>,
    report: Option<(i64, String)>,
}

/// The longest history window the charts show.
const WINDOW_MS: i64 = 86_400_000;
/// Events read for the cause timeline and the tables.
const MAX_EVENTS: usize = 500;

/// Reads the history database: call it off the runtime's worker (the HTTP server does).
fn detail(m: &ReadModel, name: &str) -> Option<Detail> {
    let snap = m.snapshot_of(name)?;
    let view = snap.get(name)?.clone();
    let res = snap.config.history_resolution.as_millis().max(1) as i64;
    let now = now_ms();
    let h = &m.history;
    // Stored and not yet written buckets as one consistent read (crate::snapshot, FlushMark).
    let buckets = m.buckets(&snap, &view, now - WINDOW_MS);
    let (events, report) = (h.events(name, MAX_EVENTS).unwrap_or_default(), h.last_report(name).ok().flatten());
    let mut periods = charts::periods(&events);
    // The open period carries the live cause: the event row is written just after the
    // diagnosis reaches the live state (and a re-diagnosis may have changed it).
    if let Some(p) = periods.last_mut().filter(|p| p.to_ms.is_none() && view.state == State::Down) {
        if view.cause != "unknown" || p.cause == "diagnosing…" {
            p.cause = view.cause.clone();
        }
    }
    // Up to the snapshot's last check: later checks are not in it yet, and the bucket they
    // fill would show as a cell without a check.
    let upto = if view.last_ms > 0 { view.last_ms } else { snap.taken_ms };
    let cells = charts::cells(&buckets, res, upto.min(now), WINDOW_MS, &periods);
    Some(Detail { view, cells, periods, events, report })
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
    let container = v
        .container
        .as_deref()
        .map(|c| format!("<span class=\"ctr\" id=\"container\">container {}</span>", esc(c)))
        .unwrap_or_default();
    let _ = write!(
        b,
        "<h2 style=\"font-size:22px\" id=\"target\" data-state=\"{st}\" data-cause=\"{}\">{} <span class=\"badge {st}\" id=\"state\">{st}</span>{container}</h2>\
         <p>{cause} {} <span class=\"muted\">since {} ({} ago)</span></p><p class=\"muted\"><code>{}</code>{}</p>",
        esc(&v.cause),
        esc(&v.name),
        v.summary.as_deref().map(esc).unwrap_or_default(),
        rfc3339((v.since_ms / 1000) as u64),
        ago(now - v.since_ms),
        esc(v.url.shown()),
        v.labels.iter().map(|(k, val)| format!(" · {}={}", esc(k), esc(val))).collect::<String>()
    );
    let (start, end) = match (x.cells.first(), x.cells.last()) {
        (Some(a), Some(z)) => (a.start_ms, z.end_ms),
        _ => (now, now),
    };
    let cell_ms = x.cells.first().map_or(0, |c| c.end_ms - c.start_ms);
    let _ = write!(
        b,
        "<h2>Availability, last {}</h2>{}<div class=\"axis-times\"><span>{}</span><span>{} per cell</span><span>now</span></div>\
         <p class=\"muted\">green: all checks passed · amber: some failed · red: all failed · grey: no check made</p>",
        ago(end - start),
        charts::strip_svg(&x.cells),
        charts::clock(start),
        ago(cell_ms)
    );
    let _ = write!(b, "<h2>Cause timeline</h2>{}", charts::timeline_svg(&x.periods, start, end, now));
    b.push_str(
        "<table id=\"timeline\"><thead><tr><th>Cause</th><th>From</th><th>To</th><th>For</th></tr></thead><tbody>",
    );
    for p in x.periods.iter().rev().take(20) {
        let to = p.to_ms.map(|t| rfc3339((t / 1000) as u64)).unwrap_or_else(|| "now".into());
        let _ = write!(
            b,
            "<tr class=\"period\" data-cause=\"{c}\"><td><code class=\"cause\">{c}</code></td><td>{}</td><td>{to}</td><td>{}</td></tr>",
            rfc3339((p.from_ms / 1000) as u64),
            ago(p.to_ms.unwrap_or(now) - p.from_ms),
            c = esc(&p.cause)
        );
    }
    if x.periods.is_empty() {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">never down in the recorded history</td></tr>");
    }
    b.push_str("</tbody></table>");
    let _ = write!(b, "<h2>Check duration (mean line, slowest bars)</h2>{}", charts::latency_svg(&x.cells));
    b.push_str("<h2>Last diagnoses</h2><table id=\"diagnoses\"><thead><tr><th>When</th><th>Cause</th><th>Summary</th></tr></thead><tbody>");
    let downs: Vec<_> = x.events.iter().filter(|e| e.to == State::Down).take(10).collect();
    for e in &downs {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            rfc3339((e.at_ms / 1000) as u64),
            esc(e.cause.as_deref().unwrap_or("diagnosing…")),
            esc(e.summary.as_deref().unwrap_or(""))
        );
    }
    if downs.is_empty() {
        b.push_str("<tr><td colspan=\"3\" class=\"muted\">no diagnosis yet</td></tr>");
    }
    b.push_str("</tbody></table>");
    b.push_str("<h2>Transitions</h2><table id=\"events\"><thead><tr><th>When</th><th>Change</th><th>Cause</th><th>Summary</th></tr></thead><tbody>");
    for e in x.events.iter().take(20) {
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
    b.push_str("</tbody></table><h2>Last report</h2>");
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
        .take(20)
        .map(|e| {
            json!({"id": e.id, "at": rfc3339((e.at_ms / 1000) as u64), "from": e.from, "to": e.to, "cause": e.cause, "summary": e.summary})
        })
        .collect();
    v["report"] = x.report.and_then(|(_, j)| serde_json::from_str(&j).ok()).unwrap_or(serde_json::Value::Null);
    v["availability"] = x.cells.iter().map(|c| json!(c.availability())).collect();
    v["timeline"] = x
        .periods
        .iter()
        .map(|p| {
            json!({"cause": p.cause, "from": rfc3339((p.from_ms / 1000) as u64),
                   "to": p.to_ms.map(|t| rfc3339((t / 1000) as u64)), "summary": p.summary})
        })
        .collect();
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

    fn view(t: &std::sync::Arc<crate::config::TargetConfig>, state: State, cause: &str, since_ms: i64) -> TargetView {
        TargetView {
            name: t.name.clone(),
            url: t.url.clone(),
            labels: t.labels.clone(),
            state,
            cause: cause.into(),
            summary: (state == State::Down).then(|| "nothing listens <here>".into()),
            container: (t.name == "db").then(|| "pg-1".into()),
            since_ms,
            last_ms: since_ms,
            last_latency: Some(Duration::from_micros(180)),
            last_outcome: Some(if state == State::Down { "refused" } else { "connected" }),
            diagnosing: false,
            interval: t.interval,
            cfg: t.clone(),
            duration: Default::default(),
            outcomes: Default::default(),
            failures_by_cause: Default::default(),
            transitions: Default::default(),
            unflushed: Vec::new(),
        }
    }

    /// Three targets (two down with different causes, one up) in a read model over a real
    /// history file.
    fn model(dir: &std::path::Path) -> ReadModel {
        let text = format!(
            "history = \"{}\"\n[[target]]\nname = \"web\"\nurl = \"tcp://127.0.0.1:1\"\nlabels = {{ team = \"core\" }}\n\
             [[target]]\nname = \"db\"\nurl = \"tcp://127.0.0.1:2\"\nlabels = {{ team = \"data\" }}\n\
             [[target]]\nname = \"cache\"\nurl = \"tcp://127.0.0.1:3\"\nlabels = {{ team = \"core\" }}\n",
            dir.join("h.db").display()
        );
        let cfg = crate::config::load_str(std::path::Path::new("w.toml"), &text, &Default::default()).unwrap();
        let t: Vec<_> = cfg.targets.iter().map(|t| std::sync::Arc::new(t.clone())).collect();
        let views = vec![
            view(&t[0], State::Up, "ok", 1_000),
            view(&t[1], State::Down, "no-listener", 2_000),
            view(&t[2], State::Down, "firewall-drop", 3_000),
        ];
        let history = std::sync::Arc::new(crate::history::History::open(&cfg.history).unwrap());
        let snap = crate::snapshot::Snapshot::new(now_ms(), views, std::sync::Arc::new(cfg));
        ReadModel::fixed(snap, Default::default(), history, 0.0)
    }

    #[test]
    fn index_sorts_by_attention_counts_causes_and_filters() {
        let dir = std::env::temp_dir().join(format!("conndoc-dash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let m = model(&dir);
        let html = index(&m, None);
        let pos = |n: &str| html.find(&format!("data-target=\"{n}\"")).unwrap_or_else(|| panic!("{n} in {html}"));
        assert!(pos("cache") < pos("db") && pos("db") < pos("web"), "down first, newest outage first");
        assert!(html.contains("<a href=\"?cause=no-listener\" data-cause=\"no-listener\">"), "{html}");
        assert!(html.contains("2 down") && html.contains("1 up"));
        assert!(html.contains("container pg-1"), "the container shows with its target");
        assert!(html.contains("nothing listens &lt;here&gt;") && !html.contains("<here>"));
        assert!(!html.contains("<script"));
        let rows = |q: &str| index(&m, Some(q)).matches("<tr class=").count();
        assert_eq!(rows("state=down"), 2);
        assert_eq!(rows("cause=no-listener"), 1);
        assert_eq!(rows("label=team%3Dcore"), 2);
        assert_eq!(rows("label=team%3Dcore&state=down"), 1);
        assert_eq!(rows("label=team"), 3, "a label name alone: any value");
        assert_eq!(rows("state=up&cause=no-listener"), 0);
        assert!(index(&m, Some("cause=firewall-drop")).contains("1 of 3 shown"));
        // Unknown parameters and hostile values are ignored or escaped, never a panic.
        let h = index(&m, Some(&format!("x=1&cause=%3Cb%3E&label=%ff{}", "a".repeat(10_000))));
        assert!(h.contains("&lt;b&gt;") && !h.contains("<b>"), "the filter value is escaped");
        assert_eq!(Filter::parse(Some("state=&cause=")), Filter::default());
        // The target page renders its charts from the history (none yet: one grey cell).
        let page = target_page(&m, "db").unwrap();
        assert!(
            page.contains("<svg id=\"strip\"")
                && page.contains("<svg id=\"latency\"")
                && page.contains("<svg id=\"causes\"")
        );
        assert!(page.contains("id=\"container\">container pg-1"), "{page}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
