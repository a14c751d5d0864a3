//! Pure reasoning: [`diagnose`] turns gathered [`Evidence`] into an ordered [`Report`].
//! No I/O happens here, so every rule is tested from recorded facts.

pub mod cause;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;
pub mod render;
pub mod report;
mod rules;

pub use cause::Cause;
pub use report::{EvidenceItem, Finding, Report, Severity, Verdict, REPORT_SCHEMA};

use conndoc_facts::Evidence;

/// Run every rule over the evidence and assemble the report.
pub fn diagnose(ev: &Evidence) -> Report {
    report::assemble(ev, findings(ev))
}

/// The verdict [`diagnose`] gives, from the same rules, without copying the evidence into
/// a report: what `conndoc check` prints for each of thousands of targets (the copies and
/// their drop were a fifth of a refused port's diagnosis there). Evidence items are not
/// built either, except those a rule reads to decide (report::evidence_kept).
pub fn verdict(ev: &Evidence) -> Verdict {
    report::without_evidence(|| report::verdict(ev, &mut findings(ev)))
}

fn findings(ev: &Evidence) -> Vec<Finding> {
    rules::client::forget_connect_items();
    let mut out = Findings::default();
    rules::client::run(ev, &mut out);
    rules::host::run(ev, &mut out);
    rules::backend::run(ev, &mut out);
    rules::found::run(ev, &mut out);
    rules::firewall::run(ev, &mut out);
    rules::loopback::run(ev, &mut out);
    rules::kube::run(ev, &mut out);
    rules::path::run(ev, &mut out);
    rules::protocol::run(ev, &mut out);
    rules::container::run(ev, &mut out);
    rules::firewall::unread(ev, &mut out);
    rules::fallback(ev, &mut out);
    rules::client::forget_connect_items();
    out.0
}

/// The findings collected so far. A second finding of a cause already present adds its
/// evidence to the first instead of repeating the cause.
#[derive(Debug, Default)]
pub struct Findings(Vec<Finding>);

impl Findings {
    pub fn push(&mut self, f: Finding) {
        if let Some(existing) = self.0.iter_mut().find(|e| e.cause == f.cause) {
            for item in f.evidence {
                if !existing.evidence.contains(&item) {
                    existing.evidence.push(item);
                }
            }
            for step in f.remediation {
                if !existing.remediation.contains(&step) {
                    existing.remediation.push(step);
                }
            }
            if existing.severity > f.severity {
                existing.severity = f.severity;
                existing.summary = f.summary;
            }
            return;
        }
        self.0.push(f);
    }
    pub fn has(&self, cause: Cause) -> bool {
        self.0.iter().any(|f| f.cause == cause)
    }
    pub fn any_critical(&self) -> bool {
        self.0.iter().any(|f| f.severity == Severity::Critical)
    }
    pub fn get_mut(&mut self, cause: Cause) -> Option<&mut Finding> {
        self.0.iter_mut().find(|f| f.cause == cause)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter()
    }
    /// Drop the finding of this cause (a rule found it was built on a wrong premise).
    pub fn remove(&mut self, cause: Cause) -> Option<Finding> {
        let i = self.0.iter().position(|f| f.cause == cause)?;
        Some(self.0.remove(i))
    }
}
