//! One module per area of evidence. Each `run` reads the evidence and pushes findings.

pub mod backend;
pub mod client;
pub mod container;
pub mod firewall;
pub mod found;
pub mod host;
pub mod kube;
pub mod loopback;
pub mod path;
pub mod protocol;

use crate::{Cause, Finding, Findings};
use conndoc_facts::Evidence;
use serde_json::json;

/// When something failed and no rule named it: `unknown`, carrying every probe result so
/// a person can take over.
pub fn fallback(ev: &Evidence, out: &mut Findings) {
    let failed: Vec<_> = ev.probes.iter().filter(|p| !p.ok()).collect();
    if out.any_critical()
        || out.iter().any(|f| f.cause.fails_when_warning())
        || (failed.is_empty() && !ev.probes.is_empty())
    {
        return;
    }
    let mut f = Finding::critical(Cause::Unknown, format!("{} fails and no check explains why", ev.target.authority()));
    for p in &failed {
        let (text, data) = crate::rules::client::connect_item(p);
        f = f.evidence("connect", text, data);
    }
    for s in &ev.skipped {
        f = f.evidence("skipped-check", format!("{} was skipped: {}", s.check, s.reason), json!(s));
    }
    f = f.fix("Run the skipped checks (see `skipped`), then read the evidence above; `conndoc diagnose --evidence-out FILE` keeps it for a colleague.");
    out.push(f);
}
