//! Text rendering for people: verdict first, then evidence, then the fix.

use crate::report::{Report, Severity};

pub fn text(r: &Report, _color: bool) -> String {
    format!("{}: {}\n", r.verdict.cause, r.verdict.summary)
        + &r.findings
            .iter()
            .filter(|f| f.severity != Severity::Info)
            .map(|f| format!("  {}\n", f.summary))
            .collect::<String>()
}
