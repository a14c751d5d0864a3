//! `conndoc lint PATH`: lint a redis.conf (and the files it includes).
//! Exit 0 when clean, 1 when problems were found, 2 for an unreadable or malformed file.

use super::usage;
use conndoc_proto::redis_conf;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The redis.conf to lint; `include` lines are followed.
    pub path: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compare maxclients with this fd limit instead of the one found on this machine.
    #[arg(long, value_name = "N")]
    pub fd_limit: Option<u64>,
    /// Compare tcp-backlog with this somaxconn instead of this machine's.
    #[arg(long, value_name = "N")]
    pub somaxconn: Option<u64>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut limits = redis_conf::local_limits(&a.path);
    if let Some(n) = a.fd_limit {
        limits.fd_limit = Some((n, "--fd-limit".into()));
    }
    if let Some(n) = a.somaxconn {
        limits.somaxconn = Some((n, "--somaxconn".into()));
    }
    let report = match redis_conf::lint(&a.path, &limits) {
        Ok(r) => r,
        // Unreadable or malformed: one line (file:line, never the line's text), exit 2.
        Err(e) => return Err(usage(e.to_string())),
    };
    if a.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        super::diagnose::write_out(&s)?;
    } else {
        let mut s = String::new();
        if report.problems.is_empty() {
            s += &format!("{}: no problems found\n", report.path);
        } else {
            s += &format!(
                "{}: {} problem{}\n",
                report.path,
                report.problems.len(),
                if report.problems.len() == 1 { "" } else { "s" }
            );
            for p in &report.problems {
                let loc = if p.line == 0 {
                    format!("{} ({} not set)", p.file, p.directive)
                } else {
                    format!("{}:{}", p.file, p.line)
                };
                s += &format!("  {loc}: [{}] {}\n      fix: {}\n", p.code, p.message, p.fix);
            }
        }
        let eff: Vec<String> = report.effective.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s += &format!("  effective: {}\n", eff.join(", "));
        if report.files.len() > 1 {
            s += &format!("  files read: {}\n", report.files.join(", "));
        }
        for c in &report.compared_with {
            s += &format!("  compared with {c}\n");
        }
        // Values come from the linted file: no raw escape sequence reaches the terminal.
        super::diagnose::write_out(&conndoc_diagnose::render::escape_control(&s))?;
    }
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}
