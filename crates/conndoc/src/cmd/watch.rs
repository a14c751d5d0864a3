//! `conndoc watch --config F`: run the watch daemon; `--check-config F`: validate and exit.

use super::usage;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The watch configuration file (docs/watch.md).
    #[arg(long, value_name = "FILE", required_unless_present = "check_config", conflicts_with = "check_config")]
    pub config: Option<PathBuf>,
    /// Validate this configuration file, print every problem (file:line: field: message) and exit.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Address for the dashboard, /api and /metrics (overrides `listen`; default 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// History database file (overrides `history`).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let ov = conndoc_watch::Overrides { listen: a.listen, history: a.history };
    if let Some(path) = a.check_config {
        return match conndoc_watch::load(&path, &ov) {
            Ok(c) => {
                super::diagnose::write_out(&format!(
                    "{}: ok: {} target{}, {} receiver{}, listen {}, history {}\n",
                    path.display(),
                    c.targets.len(),
                    if c.targets.len() == 1 { "" } else { "s" },
                    c.receivers.len(),
                    if c.receivers.len() == 1 { "" } else { "s" },
                    c.listen,
                    c.history.display()
                ))?;
                Ok(0)
            }
            Err(e) => {
                for line in e.errors() {
                    super::say(line);
                }
                Ok(2)
            }
        };
    }
    let path = a.config.ok_or_else(|| usage("--config FILE is required"))?;
    let cfg = match conndoc_watch::load(&path, &ov) {
        Ok(c) => c,
        Err(e) => {
            let errs = e.errors();
            for line in &errs[..errs.len() - 1] {
                super::say(format_args!("conndoc: {line}"));
            }
            return Err(usage(errs.last().cloned().unwrap_or_default()));
        }
    };
    match conndoc_watch::run_blocking(cfg, ov, None) {
        Ok(()) => Ok(0),
        // Another daemon owns the history, or the file is not one to use: bad input.
        Err(
            e @ conndoc_watch::WatchError::History(
                conndoc_watch::history::HistoryError::Locked { .. }
                | conndoc_watch::history::HistoryError::File(_)
                | conndoc_watch::history::HistoryError::TooNew { .. },
            ),
        ) => Err(usage(e.to_string())),
        Err(e) => Err(e.into()),
    }
}
