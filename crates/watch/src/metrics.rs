//! Prometheus exposition in the OpenMetrics text format: per-target state, probe duration
//! histogram, failures by cause code, transitions, alert delivery, and the daemon's own
//! health (schedule lag, probes in flight, process CPU and memory).

use crate::health::State;
use crate::snapshot::{ReadModel, TargetView};
pub use crate::stats::{Hist, BUCKETS};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Escape a label value (backslash, double quote, newline).
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

fn le(b: f64) -> String {
    if b.fract() == 0.0 {
        format!("{b:.1}")
    } else {
        format!("{b}")
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str, unit: Option<&str>) {
    let _ = writeln!(o, "# TYPE {name} {kind}");
    if let Some(u) = unit {
        let _ = writeln!(o, "# UNIT {name} {u}");
    }
    let _ = writeln!(o, "# HELP {name} {help}");
}

fn hist(o: &mut String, name: &str, labels: &str, h: &Hist) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cum += h.counts[i];
        let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cum}", le(*b));
    }
    cum += h.counts[BUCKETS.len()];
    let _ = writeln!(o, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
    let b = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(o, "{name}_count{b} {cum}");
    let _ = writeln!(o, "{name}_sum{b} {}", h.sum);
}

pub fn render(m: &ReadModel) -> String {
    let mut o = String::with_capacity(1 << 16);
    let snap = m.snapshot();
    let mut snaps: Vec<&TargetView> = snap.targets.iter().collect();
    snaps.sort_unstable_by(|a, b| a.cfg.name.cmp(&b.cfg.name));
    let n = snaps.len();
    o.reserve(n * 1200);

    family(&mut o, "conndoc_target_up", "gauge", "1 when the target is up, 0 when down; absent while unknown.", None);
    for e in snaps.iter() {
        let v = match e.state {
            State::Up => 1,
            State::Down => 0,
            State::Unknown => continue,
        };
        let mut l = format!("target=\"{}\"", esc(&e.cfg.name));
        for (k, val) in &e.cfg.labels {
            let _ = write!(l, ",{k}=\"{}\"", esc(val));
        }
        let _ = writeln!(o, "conndoc_target_up{{{l}}} {v}");
    }
    family(&mut o, "conndoc_target_state", "gauge", "1 for the target's current state (up, down or unknown).", None);
    for e in snaps.iter() {
        for s in [State::Up, State::Down, State::Unknown] {
            let _ = writeln!(
                o,
                "conndoc_target_state{{target=\"{}\",state=\"{s}\"}} {}",
                esc(&e.cfg.name),
                (e.state == s) as u8
            );
        }
    }
    family(
        &mut o,
        "conndoc_target_cause",
        "gauge",
        "1 with the cause code of a down target (from its diagnosis).",
        None,
    );
    for e in snaps.iter().filter(|e| e.state == State::Down) {
        let _ = writeln!(o, "conndoc_target_cause{{target=\"{}\",cause=\"{}\"}} 1", esc(&e.cfg.name), esc(&e.cause));
    }
    family(
        &mut o,
        "conndoc_target_state_since_seconds",
        "gauge",
        "Unix time of the last state change.",
        Some("seconds"),
    );
    for e in snaps.iter() {
        let _ = writeln!(
            o,
            "conndoc_target_state_since_seconds{{target=\"{}\"}} {}",
            esc(&e.cfg.name),
            e.since_ms as f64 / 1000.0
        );
    }
    family(&mut o, "conndoc_probe_duration_seconds", "histogram", "Duration of the health checks.", Some("seconds"));
    for e in snaps.iter() {
        hist(&mut o, "conndoc_probe_duration_seconds", &format!("target=\"{}\"", esc(&e.cfg.name)), &e.duration);
    }
    family(
        &mut o,
        "conndoc_probe_results",
        "counter",
        "Health checks by outcome (connected, refused, timeout, …).",
        None,
    );
    for e in snaps.iter() {
        for (k, v) in &e.outcomes {
            let _ = writeln!(o, "conndoc_probe_results_total{{target=\"{}\",outcome=\"{k}\"}} {v}", esc(&e.cfg.name));
        }
    }
    family(
        &mut o,
        "conndoc_probe_failures",
        "counter",
        "Failed health checks by cause code (the diagnosis of the target).",
        None,
    );
    for e in snaps.iter() {
        for (k, v) in &e.failures_by_cause {
            let _ =
                writeln!(o, "conndoc_probe_failures_total{{target=\"{}\",cause=\"{}\"}} {v}", esc(&e.cfg.name), esc(k));
        }
    }
    family(&mut o, "conndoc_target_transitions", "counter", "State changes by the state entered.", None);
    for e in snaps.iter() {
        for (k, v) in &e.transitions {
            let _ = writeln!(o, "conndoc_target_transitions_total{{target=\"{}\",to=\"{k}\"}} {v}", esc(&e.cfg.name));
        }
    }
    let mut by_state = [0u64; 3];
    for e in snaps.iter() {
        by_state[e.state as usize] += 1;
    }

    family(&mut o, "conndoc_targets", "gauge", "Targets by state.", None);
    for s in [State::Unknown, State::Up, State::Down] {
        let _ = writeln!(o, "conndoc_targets{{state=\"{s}\"}} {}", by_state[s as usize]);
    }
    let s = &m.stats;
    family(&mut o, "conndoc_alert_deliveries", "counter", "Alerts delivered, by receiver.", None);
    for (r, v) in s.alerts_sent.lock().unwrap().iter() {
        let _ = writeln!(o, "conndoc_alert_deliveries_total{{receiver=\"{}\"}} {v}", esc(r));
    }
    family(
        &mut o,
        "conndoc_alert_delivery_failures",
        "counter",
        "Failed alert delivery attempts (each is retried), by receiver.",
        None,
    );
    let cfg = &snap.config;
    let failed = s.alerts_failed.lock().unwrap().clone();
    for r in &cfg.receivers {
        let _ = writeln!(
            o,
            "conndoc_alert_delivery_failures_total{{receiver=\"{}\"}} {}",
            esc(&r.name),
            failed.get(&r.name).unwrap_or(&0)
        );
    }
    family(
        &mut o,
        "conndoc_alerts_pending",
        "gauge",
        "Alerts waiting for delivery (kept until delivered), by receiver.",
        None,
    );
    let pending = s.alerts_pending.lock().unwrap().clone();
    for r in &cfg.receivers {
        let _ = writeln!(
            o,
            "conndoc_alerts_pending{{receiver=\"{}\"}} {}",
            esc(&r.name),
            pending.get(&r.name).unwrap_or(&0)
        );
    }
    for (r, v) in pending.iter().filter(|(r, _)| !cfg.receivers.iter().any(|c| &&c.name == r)) {
        let _ = writeln!(o, "conndoc_alerts_pending{{receiver=\"{}\"}} {v}", esc(r));
    }
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        family(o, name, "counter", help, None);
        let _ = writeln!(o, "{name}_total {v}");
    };
    counter(&mut o, "conndoc_probes", "Health checks run.", s.probes.load(Relaxed));
    counter(&mut o, "conndoc_probes_late", "Health checks started more than one interval late.", s.late.load(Relaxed));
    counter(
        &mut o,
        "conndoc_probes_skipped",
        "Scheduled health checks skipped after falling an interval behind.",
        s.skipped.load(Relaxed),
    );
    counter(&mut o, "conndoc_diagnoses", "Full diagnoses run.", s.diagnoses.load(Relaxed));
    counter(&mut o, "conndoc_diagnosis_errors", "Diagnoses that failed to run.", s.diagnosis_errors.load(Relaxed));
    counter(
        &mut o,
        "conndoc_history_write_errors",
        "Failed writes to the history database.",
        s.history_errors.load(Relaxed),
    );
    family(&mut o, "conndoc_config_reloads", "counter", "Configuration reloads by result.", None);
    let _ = writeln!(o, "conndoc_config_reloads_total{{result=\"success\"}} {}", s.reloads_ok.load(Relaxed));
    let _ = writeln!(o, "conndoc_config_reloads_total{{result=\"failure\"}} {}", s.reloads_failed.load(Relaxed));
    family(&mut o, "conndoc_probes_in_flight", "gauge", "Health checks running now.", None);
    let _ = writeln!(o, "conndoc_probes_in_flight {}", s.probes_in_flight.load(Relaxed));
    family(&mut o, "conndoc_diagnoses_in_flight", "gauge", "Diagnoses running now.", None);
    let _ = writeln!(o, "conndoc_diagnoses_in_flight {}", s.diagnoses_in_flight.load(Relaxed));
    family(
        &mut o,
        "conndoc_schedule_lag_seconds",
        "histogram",
        "How long after its scheduled time each health check started.",
        Some("seconds"),
    );
    hist(&mut o, "conndoc_schedule_lag_seconds", "", &s.lag.lock().unwrap());
    family(
        &mut o,
        "conndoc_schedule_lag_max_seconds",
        "gauge",
        "Largest schedule lag seen since start.",
        Some("seconds"),
    );
    let _ = writeln!(o, "conndoc_schedule_lag_max_seconds {}", s.max_lag_ns.load(Relaxed) as f64 / 1e9);
    family(&mut o, "conndoc_build", "info", "conndoc version.", None);
    let _ = writeln!(o, "conndoc_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    if let Some((cpu, rss)) = process_usage() {
        family(&mut o, "process_cpu_seconds", "counter", "User and system CPU time of the daemon.", Some("seconds"));
        let _ = writeln!(o, "process_cpu_seconds_total {cpu}");
        family(&mut o, "process_resident_memory_bytes", "gauge", "Resident memory of the daemon.", Some("bytes"));
        let _ = writeln!(o, "process_resident_memory_bytes {rss}");
    }
    family(&mut o, "process_start_time_seconds", "gauge", "Unix time the daemon started.", Some("seconds"));
    let _ = writeln!(o, "process_start_time_seconds {}", m.start_unix);
    o.push_str("# EOF\n");
    o
}

/// (CPU seconds, resident bytes) of this process from /proc.
pub fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // /proc reports in USER_HZ, which is 100 on Linux whatever the kernel's HZ.
    let cpu = (f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((cpu, kb * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Hist::default();
        h.observe(0.0004);
        h.observe(0.003);
        h.observe(20.0);
        let mut o = String::new();
        hist(&mut o, "x_seconds", "target=\"a\"", &h);
        assert!(o.contains("x_seconds_bucket{target=\"a\",le=\"0.0005\"} 1\n"), "{o}");
        assert!(o.contains("x_seconds_bucket{target=\"a\",le=\"0.005\"} 2\n"), "{o}");
        assert!(o.contains("x_seconds_bucket{target=\"a\",le=\"5.0\"} 2\n"), "{o}");
        assert!(o.contains("x_seconds_bucket{target=\"a\",le=\"+Inf\"} 3\n"), "{o}");
        assert!(o.contains("x_seconds_count{target=\"a\"} 3\n"), "{o}");
    }

    #[test]
    fn label_escaping() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn own_process_usage() {
        let (cpu0, rss) = process_usage().unwrap();
        assert!(rss > 1024 * 1024);
        // Burn CPU until the reading moves (bounded): a constant or wrong counter fails.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut x = 0u64;
        let mut cpu = cpu0;
        while cpu - cpu0 < 0.05 && std::time::Instant::now() < deadline {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            cpu = process_usage().unwrap().0;
        }
        assert!(cpu - cpu0 >= 0.05, "CPU time went from {cpu0} to {cpu} while spinning");
    }
}
