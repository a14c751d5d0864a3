//! The per-target charts, server-rendered SVG (no JavaScript): the availability strip, the
//! latency chart and the cause timeline over the history window. Pure: buckets and events
//! in, markup out.
//!
//! Every strip cell spans a whole number of history buckets (at least one), aligned to the
//! buckets, so each bucket falls into exactly one cell: a target checked every second
//! never shows a "no data" cell between two checks. Grey means no check was made then.

use crate::health::State;
use crate::history::{Bucket, Event};
use conndoc_probe::time::rfc3339;
use std::fmt::Write;

/// Most cells in a strip (and points in the latency chart).
pub const MAX_CELLS: i64 = 90;
/// The drawing's width in SVG user units (it scales to the page).
const W: f64 = 960.0;

/// The checks made in one stretch of time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub start_ms: i64,
    pub end_ms: i64,
    pub count: u64,
    pub failures: u64,
    pub latency_sum_us: u64,
    pub latency_max_us: u64,
    /// The cause of the down period the cell's failures fall into.
    pub cause: Option<String>,
}

impl Cell {
    /// `up` (all passed), `part` (some failed), `down` (all failed), `none` (no check).
    pub fn class(&self) -> &'static str {
        match (self.count, self.failures) {
            (0, _) => "none",
            (_, 0) => "up",
            (c, f) if f >= c => "down",
            _ => "part",
        }
    }
    pub fn availability(&self) -> Option<f64> {
        (self.count > 0).then(|| (self.count - self.failures.min(self.count)) as f64 / self.count as f64)
    }
    pub fn mean_latency_us(&self) -> Option<u64> {
        (self.count > 0).then(|| self.latency_sum_us / self.count)
    }
}

/// A down period: from the transition to down until the one back (None: still down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: Option<i64>,
    /// The diagnosed cause (`diagnosing…` while the diagnosis runs).
    pub cause: String,
    pub summary: Option<String>,
}

impl Period {
    fn end(&self, now_ms: i64) -> i64 {
        self.to_ms.unwrap_or(now_ms)
    }
}

/// Down periods from a target's events (in any order), oldest first.
pub fn periods(events: &[Event]) -> Vec<Period> {
    let mut ev: Vec<&Event> = events.iter().collect();
    ev.sort_by_key(|e| (e.at_ms, e.id));
    let mut out: Vec<Period> = Vec::new();
    for e in ev {
        let open = out.last().is_some_and(|p| p.to_ms.is_none());
        if e.to == State::Down {
            if open {
                continue;
            }
            out.push(Period {
                from_ms: e.at_ms,
                to_ms: None,
                cause: e.cause.clone().unwrap_or_else(|| "diagnosing…".into()),
                summary: e.summary.clone(),
            });
        } else if open {
            if let Some(p) = out.last_mut() {
                p.to_ms = Some(e.at_ms);
            }
        }
    }
    out
}

/// The strip's cells up to `now_ms`: from the first bucket (at most `max_window_ms` back)
/// to the end of the current bucket, each cell a whole number of `res_ms` buckets.
pub fn cells(buckets: &[(i64, Bucket)], res_ms: i64, now_ms: i64, max_window_ms: i64, periods: &[Period]) -> Vec<Cell> {
    let res = res_ms.max(1);
    let end = now_ms - now_ms.rem_euclid(res) + res;
    let earliest = end - max_window_ms.max(res);
    let first = buckets.iter().map(|b| b.0).filter(|b| *b >= earliest && *b < end).min().unwrap_or(end - res);
    let first = first - first.rem_euclid(res);
    let span_buckets = (end - first) / res;
    let per_cell = (span_buckets + MAX_CELLS - 1) / MAX_CELLS;
    let cell_ms = per_cell.max(1) * res;
    let n = ((end - first) + cell_ms - 1) / cell_ms;
    let start = end - n * cell_ms;
    let mut out: Vec<Cell> = (0..n)
        .map(|i| Cell { start_ms: start + i * cell_ms, end_ms: start + (i + 1) * cell_ms, ..Cell::default() })
        .collect();
    for (b, v) in buckets {
        if *b < start || *b >= end {
            continue;
        }
        let c = &mut out[((b - start) / cell_ms) as usize];
        c.count += v.count as u64;
        c.failures += v.failures as u64;
        c.latency_sum_us += v.latency_sum_us;
        c.latency_max_us = c.latency_max_us.max(v.latency_max_us);
    }
    for c in out.iter_mut().filter(|c| c.failures > 0) {
        c.cause =
            periods.iter().rev().find(|p| p.from_ms < c.end_ms && p.end(now_ms) >= c.start_ms).map(|p| p.cause.clone());
    }
    out
}

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

/// `12:04:05` (UTC) of a time in ms.
pub fn clock(ms: i64) -> String {
    let s = rfc3339((ms.max(0) / 1000) as u64);
    s.get(11..19).unwrap_or(&s).to_string()
}

pub fn latency_text(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// The availability strip: one rect per cell, coloured by the checks made in it, with the
/// cause of its failures (`data-cause`) and a tooltip.
pub fn strip_svg(cells: &[Cell]) -> String {
    let n = cells.len().max(1) as f64;
    let w = W / n;
    let mut o = format!(
        "<svg id=\"strip\" class=\"strip\" viewBox=\"0 0 {W} 28\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"availability\">"
    );
    for (i, c) in cells.iter().enumerate() {
        let title = match c.availability() {
            None => "no check".to_string(),
            Some(a) => {
                let mut t = format!("{:.0}% up, {} checks", a * 100.0, c.count);
                if c.failures > 0 {
                    let _ = write!(t, ", {} failed", c.failures);
                }
                if let Some(cause) = &c.cause {
                    let _ = write!(t, ": {cause}");
                }
                t
            }
        };
        let cause = c.cause.as_deref().map(|x| format!(" data-cause=\"{}\"", esc(x))).unwrap_or_default();
        let _ = write!(
            o,
            "<rect class=\"cell {}\"{cause} x=\"{:.2}\" y=\"0\" width=\"{:.2}\" height=\"28\"><title>{}–{} {}</title></rect>",
            c.class(),
            i as f64 * w,
            (w - if w > 3.0 { 1.0 } else { 0.0 }).max(0.5),
            clock(c.start_ms),
            clock(c.end_ms),
            esc(&title)
        );
    }
    o.push_str("</svg>");
    o
}

/// The latency chart: the mean check time per cell as a line (broken where no check was
/// made), the slowest check per cell as light bars; the scale on the left.
pub fn latency_svg(cells: &[Cell]) -> String {
    const H: f64 = 120.0;
    const TOP: f64 = 12.0;
    let top_us = cells.iter().map(|c| c.latency_max_us).max().unwrap_or(0).max(1);
    let n = cells.len().max(1) as f64;
    let w = W / n;
    let y = |us: u64| H - (us as f64 / top_us as f64) * (H - TOP);
    let mut o = format!(
        "<svg id=\"latency\" class=\"chart\" viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"latency\">\
         <line x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\" class=\"axis\"/><line x1=\"0\" y1=\"{TOP}\" x2=\"{W}\" y2=\"{TOP}\" class=\"grid\"/>"
    );
    for (i, c) in cells.iter().enumerate().filter(|(_, c)| c.count > 0) {
        let _ = write!(
            o,
            "<rect class=\"max\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"><title>{}: slowest {}</title></rect>",
            i as f64 * w,
            y(c.latency_max_us),
            (w - 1.0).max(0.5),
            H - y(c.latency_max_us),
            clock(c.start_ms),
            latency_text(c.latency_max_us)
        );
    }
    let mut line = String::new();
    let flush = |line: &mut String, o: &mut String| {
        if !line.is_empty() {
            let _ = write!(o, "<polyline class=\"mean\" points=\"{}\"/>", line.trim_end());
            line.clear();
        }
    };
    for (i, c) in cells.iter().enumerate() {
        match c.mean_latency_us() {
            Some(us) => {
                let _ = write!(line, "{:.1},{:.1} ", i as f64 * w + w / 2.0, y(us));
            }
            None => flush(&mut line, &mut o),
        }
    }
    flush(&mut line, &mut o);
    let _ = write!(o, "<text x=\"4\" y=\"10\" class=\"label\">{}</text></svg>", latency_text(top_us));
    o
}

/// The cause timeline on the strip's time axis: one red band per down period, named by
/// its cause.
pub fn timeline_svg(periods: &[Period], start_ms: i64, end_ms: i64, now_ms: i64) -> String {
    let span = (end_ms - start_ms).max(1) as f64;
    let x = |t: i64| (t.clamp(start_ms, end_ms) - start_ms) as f64 / span * W;
    let mut o = format!(
        "<svg id=\"causes\" class=\"causes\" viewBox=\"0 0 {W} 24\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"cause timeline\">\
         <rect class=\"ok\" x=\"0\" y=\"0\" width=\"{W}\" height=\"24\"/>"
    );
    for p in periods.iter().filter(|p| p.end(now_ms) >= start_ms && p.from_ms < end_ms) {
        let (x0, x1) = (x(p.from_ms), x(p.end(now_ms)).max(x(p.from_ms) + 2.0));
        let to = p.to_ms.map(clock).unwrap_or_else(|| "now".into());
        let _ = write!(
            o,
            "<g class=\"period\" data-cause=\"{c}\"><rect x=\"{x0:.2}\" y=\"0\" width=\"{:.2}\" height=\"24\"/><title>{c} {}–{to}</title>",
            x1 - x0,
            clock(p.from_ms),
            c = esc(&p.cause)
        );
        // The name only where it fits (about 7 units per character at this size).
        if x1 - x0 > 7.0 * p.cause.len() as f64 + 8.0 {
            let _ = write!(o, "<text x=\"{:.2}\" y=\"16\">{}</text>", x0 + 4.0, esc(&p.cause));
        }
        o.push_str("</g>");
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(count: u32, failures: u32) -> Bucket {
        Bucket { count, failures, latency_sum_us: count as u64 * 200, latency_max_us: 400 }
    }

    fn ev(id: i64, at_ms: i64, to: State, cause: Option<&str>) -> Event {
        Event { id, target: "api".into(), at_ms, from: State::Up, to, cause: cause.map(str::to_string), summary: None }
    }

    #[test]
    fn a_target_checked_every_second_has_no_empty_cell() {
        // 1 s buckets over 10 minutes, one check each: more buckets than cells.
        let now = 1_000_000_000_000i64 + 599_500;
        let first = now - now % 1000 - 599_000;
        let buckets: Vec<_> = (0..600).map(|i| (first + i * 1000, b(1, 0))).collect();
        let c = cells(&buckets, 1000, now, 86_400_000, &[]);
        assert!(c.len() as i64 <= MAX_CELLS && !c.is_empty());
        let width = c[0].end_ms - c[0].start_ms;
        assert!(width >= 1000 && width % 1000 == 0, "a cell is whole buckets: {width}");
        assert!(c.iter().all(|x| x.class() == "up"), "{c:?}");
        assert_eq!(c.iter().map(|x| x.count).sum::<u64>(), 600, "every check in exactly one cell");
        // Few buckets (just started): one cell per bucket, still none empty.
        let c = cells(&buckets[590..], 1000, now, 86_400_000, &[]);
        assert_eq!(c.len(), 10);
        assert!(c.iter().all(|x| x.count == 1));
        // 1 m buckets, checks every second: cells are at least a minute wide.
        let m0 = first - first % 60_000;
        let c = cells(&[(m0, b(60, 0)), (m0 + 60_000, b(60, 0))], 60_000, m0 + 90_000, 86_400_000, &[]);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|x| x.end_ms - x.start_ms == 60_000 && x.count == 60), "{c:?}");
    }

    #[test]
    fn failures_carry_the_cause_of_their_down_period() {
        let t0 = 1_700_000_000_000i64;
        let events = [
            ev(1, t0, State::Up, None),
            ev(2, t0 + 10_000, State::Down, Some("no-listener")),
            ev(3, t0 + 20_000, State::Up, Some("ok")),
            ev(4, t0 + 30_000, State::Down, None),
        ];
        let p = periods(&events);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].from_ms, p[0].to_ms, p[0].cause.as_str()), (t0 + 10_000, Some(t0 + 20_000), "no-listener"));
        assert_eq!((p[1].to_ms, p[1].cause.as_str()), (None, "diagnosing…"));
        let buckets: Vec<_> =
            (0..35).map(|i| (t0 + i * 1000, if (10..20).contains(&i) { b(1, 1) } else { b(1, 0) })).collect();
        let c = cells(&buckets, 1000, t0 + 34_500, 86_400_000, &p);
        let down: Vec<_> = c.iter().filter(|x| x.class() == "down").collect();
        assert_eq!(down.len(), 10);
        assert!(down.iter().all(|x| x.cause.as_deref() == Some("no-listener")));
        let svg = strip_svg(&c);
        assert_eq!(svg.matches("class=\"cell down\" data-cause=\"no-listener\"").count(), 10, "{svg}");
        assert!(!svg.contains("cell none"), "{svg}");
        let tl = timeline_svg(&p, c[0].start_ms, c.last().unwrap().end_ms, t0 + 34_500);
        assert!(tl.contains("<g class=\"period\" data-cause=\"no-listener\">"), "{tl}");
        assert!(tl.contains("<text x=") && tl.contains(">no-listener</text>"), "{tl}");
        let lat = latency_svg(&c);
        assert_eq!(lat.matches("<polyline").count(), 1, "{lat}");
        assert!(lat.contains(">400 µs</text>"), "{lat}");
    }

    #[test]
    fn hostile_names_are_escaped_and_gaps_break_the_line() {
        let p = [Period { from_ms: 0, to_ms: Some(500), cause: "<x\"".into(), summary: None }];
        let s = timeline_svg(&p, 0, 1000, 1000);
        assert!(s.contains("&lt;x&quot;") && !s.contains("<x\""), "{s}");
        let mut c = vec![Cell { count: 1, latency_sum_us: 10, latency_max_us: 10, ..Cell::default() }; 3];
        c[1].count = 0;
        assert_eq!(latency_svg(&c).matches("<polyline").count(), 2);
        assert_eq!(c[1].class(), "none");
    }
}
