//! The report contract (docs/report.md): what `--json` prints and what every other output
//! (text, metrics, alerts, dashboard) is rendered from.

use crate::cause::Cause;
use conndoc_facts::{ConnectProbe, Evidence, SkippedCheck};
use serde::{Deserialize, Serialize};

pub const REPORT_SCHEMA: &str = "conndoc.report/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// One piece of evidence: a stable `kind` scripts can match on, a sentence for people, and
/// the structured facts behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceItem {
    pub kind: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub cause: Cause,
    pub severity: Severity,
    pub summary: String,
    pub evidence: Vec<EvidenceItem>,
    pub remediation: Vec<String>,
    /// Set when the evidence is incomplete (a check was skipped), saying what is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
}

impl Finding {
    pub fn new(cause: Cause, severity: Severity, summary: impl Into<String>) -> Finding {
        Finding {
            cause,
            severity,
            summary: summary.into(),
            evidence: Vec::new(),
            remediation: Vec::new(),
            partial: None,
        }
    }
    pub fn critical(cause: Cause, summary: impl Into<String>) -> Finding {
        Finding::new(cause, Severity::Critical, summary)
    }
    pub fn warning(cause: Cause, summary: impl Into<String>) -> Finding {
        Finding::new(cause, Severity::Warning, summary)
    }
    pub fn evidence(mut self, kind: &str, text: impl Into<String>, data: serde_json::Value) -> Finding {
        if evidence_kept(kind) {
            self.evidence.push(EvidenceItem { kind: kind.into(), text: text.into(), data });
        }
        self
    }
    /// [`Finding::evidence`] built only when it is kept: for items on the path of every
    /// refused port (their JSON was an eighth of `conndoc check`'s samples).
    pub fn evidence_with(mut self, kind: &str, item: impl FnOnce() -> (String, serde_json::Value)) -> Finding {
        if evidence_kept(kind) {
            let (text, data) = item();
            self.evidence.push(EvidenceItem { kind: kind.into(), text, data });
        }
        self
    }
    pub fn fix(mut self, step: impl Into<String>) -> Finding {
        self.remediation.push(step.into());
        self
    }
    /// [`Finding::fix`] written only when evidence is wanted (not for a verdict alone).
    pub fn fix_with(mut self, step: impl FnOnce() -> String) -> Finding {
        if evidence_wanted() {
            self.remediation.push(step());
        }
        self
    }
    pub fn partial(mut self, what: impl Into<String>) -> Finding {
        self.partial = Some(what.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub input: String,
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub cause: Cause,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub target: TargetSummary,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    pub probes: Vec<ConnectProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<conndoc_facts::host::HostFacts>,
    /// Containers that matter for the target: names, state, port maps (docs/containers.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<conndoc_facts::container::ContainerFacts>,
    /// The namespace that owns the dialled address when it is not conndoc's own, found
    /// with no flag and inspected as the target (docs/report.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<conndoc_facts::nat::FoundFacts>,
    /// How each name turned into addresses.
    pub resolution: conndoc_facts::Resolution,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedCheck>,
    pub started_at: String,
    pub elapsed_us: conndoc_facts::Micros,
    pub conndoc_version: String,
}

impl Report {
    /// Exit status of `conndoc diagnose` for this report (report.md).
    pub fn exit_status(&self) -> i32 {
        if self.verdict.cause == Cause::Ok {
            0
        } else {
            1
        }
    }
    pub fn finding(&self, cause: Cause) -> Option<&Finding> {
        self.findings.iter().find(|f| f.cause == cause)
    }
}

thread_local! {
    /// False while [`crate::verdict`] runs the rules on this thread: only the verdict is
    /// wanted, so evidence items are not built.
    static EVIDENCE_WANTED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether the diagnosis running on this thread keeps its evidence items.
pub(crate) fn evidence_wanted() -> bool {
    EVIDENCE_WANTED.with(|w| w.get())
}

/// Whether an item of this kind is kept. Without evidence wanted only `firewall-rule`
/// items are: the kube rules read them to decide (a kube-proxy reject that translation
/// bypasses is dropped), so a verdict may depend on them.
fn evidence_kept(kind: &str) -> bool {
    evidence_wanted() || kind == "firewall-rule"
}

/// Run `f` with evidence items not built on this thread (restored on return or unwind).
pub(crate) fn without_evidence<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            EVIDENCE_WANTED.with(|w| w.set(self.0));
        }
    }
    let _restore = Restore(EVIDENCE_WANTED.with(|w| w.replace(false)));
    f()
}

/// Build the report from evidence and the findings the rules produced.
pub(crate) fn assemble(ev: &Evidence, mut findings: Vec<Finding>) -> Report {
    let verdict = verdict(ev, &mut findings);
    Report {
        schema: REPORT_SCHEMA.into(),
        target: TargetSummary {
            input: ev.target.input.clone(),
            scheme: ev.target.scheme.as_str().into(),
            host: ev.target.host.to_string(),
            port: ev.target.port.get(),
        },
        verdict,
        findings,
        probes: ev.probes.clone(),
        host: ev.host.clone(),
        containers: ev.containers.clone(),
        found: ev.found.clone(),
        resolution: ev.resolution.clone(),
        skipped: ev.skipped.clone(),
        started_at: ev.started_at.clone(),
        elapsed_us: ev.elapsed_us,
        conndoc_version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Order the findings (root cause first: critical before warning before info, then by
/// catalogue rank) and name the verdict.
pub(crate) fn verdict(ev: &Evidence, findings: &mut [Finding]) -> Verdict {
    findings.sort_by_key(|f| (f.severity, f.cause.rank()));
    let at = findings
        .iter()
        .position(|f| f.severity == Severity::Critical)
        .or_else(|| findings.iter().position(|f| f.severity == Severity::Warning && f.cause.fails_when_warning()));
    // A warning that is the verdict comes first too (findings are ordered most-likely first).
    if let Some(i) = at {
        findings[..=i].rotate_right(1);
    }
    match at.map(|_| &findings[0]) {
        Some(f) => Verdict { cause: f.cause, summary: f.summary.clone() },
        None => {
            let n = ev.probes.len();
            Verdict {
                cause: Cause::Ok,
                summary: format!(
                    "{} is reachable: {} of {} address{} connected",
                    ev.target.authority(),
                    ev.probes.iter().filter(|p| p.ok()).count(),
                    n,
                    if n == 1 { "" } else { "es" }
                ),
            }
        }
    }
}
