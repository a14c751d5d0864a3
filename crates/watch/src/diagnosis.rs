//! What the daemon keeps of one full diagnosis (pure: a report in, the stored and shown
//! parts out): the cause, a bounded summary and report, the text for alerts, the first fix
//! and the container behind the target.

use crate::history::{bounded_report, cut_text};
use conndoc_diagnose::{Cause, Report};

/// Longest diagnosis text in an alert (`details`).
pub const MAX_ALERT_DETAILS: usize = 16 * 1024;
/// Longest summary kept for a target, its events and alerts.
pub const MAX_SUMMARY: usize = 1024;

/// One diagnosis as the daemon stores and shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosed {
    pub cause: String,
    pub summary: String,
    /// The report as stored (bounded, docs/watch.md "History").
    pub json: String,
    /// The report rendered for people, bounded (the alerts' `details`).
    pub text: String,
    /// The first remediation (Alertmanager's `fix` annotation).
    pub fix: Option<String>,
    /// The container behind the target (dashboard and alerts).
    pub container: Option<String>,
}

impl Diagnosed {
    /// The daemon does no reasoning of its own: a report that finds the target reachable
    /// although the health checks fail becomes `unknown`, saying so.
    pub fn from_report(rep: &Report) -> Diagnosed {
        // Bounded before anything is stored or sent: a server's huge reply must not grow
        // the history past max_history_mb or every alert payload with it.
        let json = bounded_report(&serde_json::to_string(rep).unwrap_or_default());
        let text = cut_text(&conndoc_diagnose::render::text(rep, false), MAX_ALERT_DETAILS);
        let summary = cut_text(&rep.verdict.summary, MAX_SUMMARY);
        let fix = rep
            .findings
            .iter()
            .find(|f| f.cause == rep.verdict.cause)
            .or(rep.findings.first())
            .and_then(|f| f.remediation.first())
            .map(|f| cut_text(f, MAX_SUMMARY));
        let (cause, summary) = if rep.verdict.cause == Cause::Ok {
            (Cause::Unknown.code().to_string(), format!("health checks fail but the diagnosis reached it: {summary}"))
        } else {
            (rep.verdict.cause.code().to_string(), summary)
        };
        Diagnosed { cause, summary, json, text, fix, container: container_of(rep) }
    }

    /// A diagnosis that could not run.
    pub fn failed(error: &str) -> Diagnosed {
        Diagnosed {
            cause: Cause::Unknown.code().into(),
            summary: cut_text(&format!("diagnosis failed: {error}"), MAX_SUMMARY),
            json: "null".into(),
            text: String::new(),
            fix: None,
            container: None,
        }
    }
}

/// The container that serves the target, by the evidence's identity: the one owning the
/// inspected network namespace, else the one with a dialled address, else the one
/// publishing the port, else the only one in the report.
pub fn container_of(rep: &Report) -> Option<String> {
    let cf = rep.containers.as_ref()?;
    let by_netns =
        rep.host.as_ref().and_then(|h| h.inspected.as_ref()).and_then(|i| i.netns_inode).and_then(|n| cf.by_netns(n));
    let c = by_netns
        .or_else(|| rep.probes.iter().find_map(|p| cf.by_address(p.address)))
        .or_else(|| cf.containers.iter().find(|c| c.published_on(rep.target.port).next().is_some()))
        .or_else(|| (cf.containers.len() == 1).then(|| &cf.containers[0]))?;
    Some(c.name().to_string())
}
