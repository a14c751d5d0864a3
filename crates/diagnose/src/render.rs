//! Text rendering for people: verdict first, then the evidence, then the fix.
//! Short and scannable; colour only when asked (the CLI asks on a terminal).

use crate::cause::Cause;
use crate::report::{Report, Severity};
use std::fmt::Write;

struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn sev(&self, sev: Severity, s: &str) -> String {
        match sev {
            Severity::Critical => self.paint("1;31", s),
            Severity::Warning => self.paint("33", s),
            Severity::Info => self.paint("36", s),
        }
    }
}

/// The whole report as text.
pub fn text(r: &Report, color: bool) -> String {
    // Server-controlled bytes (a Redis error, an HTTP reason phrase or Server header, a
    // linted value, any string of an evidence file given to `explain`) reach every field:
    // escape control characters in all of them before anything is written to a terminal.
    let escaped = escaped_report(r);
    let r = escaped.as_ref().unwrap_or(r);
    let st = Style { on: color };
    let mut o = String::new();
    let ok = r.verdict.cause == Cause::Ok;
    let warn = r.findings.iter().any(|f| f.cause == r.verdict.cause && f.severity == Severity::Warning);
    let mark = if ok {
        st.paint("1;32", "OK")
    } else if warn {
        st.sev(Severity::Warning, "WARN")
    } else {
        st.sev(Severity::Critical, "FAIL")
    };
    let _ = writeln!(o, "{mark} {}  {}", st.bold(r.verdict.cause.code()), r.verdict.summary);
    let _ = writeln!(
        o,
        "{}",
        st.dim(&format!("   target {}  ({} {}:{})", r.target.input, r.target.scheme, r.target.host, r.target.port))
    );

    let mut findings = r.findings.iter().filter(|f| f.severity != Severity::Info).peekable();
    if let Some(first) = findings.peek().filter(|f| !ok && f.cause == r.verdict.cause) {
        if !first.evidence.is_empty() {
            let _ = writeln!(o, "\n{}", st.bold("Evidence"));
            for e in &first.evidence {
                match path_trace(e) {
                    Some(t) => path_table(&mut o, &st, &t),
                    None => {
                        let _ = writeln!(o, "  • {}", e.text);
                    }
                }
            }
        }
        if let Some(p) = &first.partial {
            let _ = writeln!(o, "  {} {p}", st.paint("33", "partial:"));
        }
        if !first.remediation.is_empty() {
            let _ = writeln!(o, "\n{}", st.bold("Fix"));
            for (i, step) in first.remediation.iter().enumerate() {
                let _ = writeln!(o, "  {}. {step}", i + 1);
            }
        }
        findings.next();
    }
    let rest: Vec<_> = findings.collect();
    if !rest.is_empty() {
        let _ = writeln!(o, "\n{}", st.bold("Also found"));
        for f in rest {
            // A critical finding the verdict explains is its consequence (causes.md).
            let label = if f.severity == Severity::Critical && f.cause.rank() > r.verdict.cause.rank() {
                "consequence".to_string()
            } else {
                format!("{:?}", f.severity).to_lowercase()
            };
            let _ = writeln!(o, "  {} {}: {}", st.sev(f.severity, &label), f.cause, f.summary);
            for e in f.evidence.iter().take(4) {
                let _ = writeln!(o, "      • {}", e.text);
            }
            if let Some(step) = f.remediation.first() {
                let _ = writeln!(o, "      fix: {step}");
            }
        }
    }
    if !r.resolution.literal {
        let _ = writeln!(o, "\n{}", st.bold("Resolved"));
        let _ = writeln!(o, "  {}", resolution_line(r));
    }
    if !r.probes.is_empty() {
        let _ = writeln!(o, "\n{}", st.bold("Connects"));
        for p in &r.probes {
            let addr = match p.address {
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", p.port),
                a => format!("{a}:{}", p.port),
            };
            let status = if p.ok() { st.paint("32", p.kind.as_str()) } else { st.paint("31", p.kind.as_str()) };
            let errno = p.errno.as_ref().map(|e| format!(" {e}")).unwrap_or_default();
            let _ = writeln!(o, "  {addr:<28} {status}{errno}  {}", p.elapsed_us);
        }
    }
    if !r.skipped.is_empty() {
        let _ = writeln!(o, "\n{}", st.bold("Not checked"));
        for s in &r.skipped {
            let hint = s.hint.as_ref().map(|h| format!(" — {h}")).unwrap_or_default();
            let _ = writeln!(o, "  - {}: {}{hint}", s.check, s.reason);
        }
    }
    o
}

fn path_trace(e: &crate::report::EvidenceItem) -> Option<conndoc_facts::path::PathTrace> {
    if e.kind != "path" {
        return None;
    }
    serde_json::from_value(e.data.clone()).ok()
}

/// The hop list as a short table; a run of silent TTLs is one row.
fn path_table(o: &mut String, st: &Style, t: &conndoc_facts::path::PathTrace) {
    use conndoc_facts::path::HopAnswer;
    let _ = writeln!(o, "  • path to {} port {} (TCP SYN with TTL 1-{}):", t.target, t.port, t.max_hops);
    let mut rows = Vec::new();
    let mut i = 0;
    while i < t.hops.len() {
        let h = &t.hops[i];
        let mut j = i;
        if h.answer == HopAnswer::Nothing {
            while j + 1 < t.hops.len() && t.hops[j + 1].answer == HopAnswer::Nothing {
                j += 1;
            }
        }
        let ttl = if j > i { format!("{}-{}", h.ttl.0, t.hops[j].ttl.0) } else { h.ttl.0.to_string() };
        let address = h.address.map(|a| a.to_string()).unwrap_or_else(|| "*".into());
        let rtt = h.rtt_us.map(|r| r.to_string()).unwrap_or_default();
        rows.push([ttl, address, h.answer.to_string(), rtt]);
        i = j + 1;
    }
    let w = |c: usize, head: &str| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0).max(head.len());
    let (w0, w1, w2) = (w(0, "TTL"), w(1, "address"), w(2, "answer"));
    let _ = writeln!(o, "    {}", st.dim(&format!("{:>w0$}  {:<w1$}  {:<w2$}  rtt", "TTL", "address", "answer")));
    for [ttl, address, answer, rtt] in rows {
        let line = format!("{ttl:>w0$}  {address:<w1$}  {answer:<w2$}  {rtt}");
        let _ = writeln!(o, "    {}", line.trim_end());
    }
}

/// `api.lab → 10.0.0.3 (hosts /etc/hosts:3), 10.0.0.2 (dns); DNS says 10.0.0.2`
fn resolution_line(r: &Report) -> String {
    use conndoc_facts::resolve::AddrSource;
    let res = &r.resolution;
    let addrs: Vec<String> = res
        .system
        .addresses
        .iter()
        .map(|a| {
            let src = match &a.source {
                AddrSource::Literal => "literal".to_string(),
                AddrSource::HostsFile { path, line } => format!("hosts {path}:{line}"),
                AddrSource::Dns => "dns".to_string(),
                AddrSource::System => "system resolver".to_string(),
            };
            format!("{} ({src})", a.address)
        })
        .collect();
    let mut line = format!(
        "{} → {}",
        r.target.host,
        if addrs.is_empty() {
            res.system.error.clone().unwrap_or_else(|| "no address".into())
        } else {
            addrs.join(", ")
        }
    );
    if let Some(d) = &res.dns {
        let dns: Vec<String> = d.addresses().iter().map(|a| a.to_string()).collect();
        line.push_str(&format!(
            "; DNS ({}) says {}",
            d.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
            if dns.is_empty() { "nothing".into() } else { dns.join(", ") }
        ));
    }
    line
}

/// The report with every control character in every string (other than newline and tab)
/// written as `\u{1b}`; `None` when there is none (the common case: no copy).
fn escaped_report(r: &Report) -> Option<Report> {
    let mut v = serde_json::to_value(r).ok()?;
    if !escape_strings(&mut v) {
        return None;
    }
    serde_json::from_value(v).ok()
}

fn escape_strings(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => {
            *s = escape_control(s);
            true
        }
        Value::Array(a) => a.iter_mut().fold(false, |acc, x| escape_strings(x) | acc),
        Value::Object(m) => m.values_mut().fold(false, |acc, x| escape_strings(x) | acc),
        _ => false,
    }
}

/// Control characters as `\u{..}` escapes; everything else as is.
pub fn escape_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}
