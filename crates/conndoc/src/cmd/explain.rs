//! `conndoc explain FILE`: re-run the rules on saved evidence, offline.

use super::usage;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Evidence saved with `conndoc diagnose --evidence-out FILE` (`-` for standard input).
    pub file: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let limit = conndoc_files::limit::EVIDENCE;
    let bytes = if a.file.as_os_str() == "-" {
        conndoc_files::read_stream(std::io::stdin().lock(), limit, "standard input")
    } else {
        conndoc_files::read(&a.file, limit)
    }
    .map_err(|e| usage(e.to_string()))?;
    let ev: conndoc_facts::Evidence = serde_json::from_slice(&bytes)
        .map_err(|e| usage(format!("{} is not conndoc evidence: {e}", a.file.display())))?;
    if ev.schema != conndoc_facts::EVIDENCE_SCHEMA {
        return Err(usage(format!(
            "{}: evidence schema {:?} is not {:?}",
            a.file.display(),
            ev.schema,
            conndoc_facts::EVIDENCE_SCHEMA
        )));
    }
    let report = conndoc_diagnose::diagnose(&ev);
    super::print_report(&report, a.json)?;
    Ok(report.exit_status() as u8)
}
