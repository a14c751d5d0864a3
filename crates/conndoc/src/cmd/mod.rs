//! One module per subcommand; each has clap `Args` and `run(args) -> anyhow::Result<u8>`
//! returning the exit status. Errors wrapped in [`UsageError`] exit 2, others exit 3.

pub mod check;
pub mod completions;
pub mod diagnose;
pub mod explain;
pub mod inspect;
pub mod lint;
pub mod listeners;
pub mod man;
pub mod watch;

/// `--no-color`, a global flag: set once by `main` before any subcommand runs.
static NO_COLOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_no_color(v: bool) {
    NO_COLOR.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// Whether text output should be coloured: a terminal, no --no-color, no NO_COLOR.
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    !NO_COLOR.load(std::sync::atomic::Ordering::Relaxed)
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// Bad input or usage: printed as one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// Writing the result to stdout failed (a full disk, a revoked terminal): exit 3, and the line
/// says it was stdout, not the target or a file, that failed.
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing stdout: {}", conndoc_files::os_error_text(&self.0))
    }
}
impl std::error::Error for StdoutError {}

/// One line on stderr. Never panics (eprintln! does when stderr is a full disk or a closed
/// pipe): a message that cannot be written is dropped, the exit status still says it.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Return a usage error (exit 2) from a subcommand.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// Parse a `--timeout` value: positive, at most 10 minutes.
pub fn parse_timeout(s: &str) -> anyhow::Result<std::time::Duration> {
    use std::time::Duration;
    conndoc_facts::duration::parse_in(s, Duration::from_millis(1), Duration::from_secs(600))
        .map_err(|e| usage(format!("--timeout: {e}")))
}

/// Print a report as JSON or text.
pub fn print_report(report: &conndoc_diagnose::Report, json: bool) -> anyhow::Result<()> {
    if json {
        let mut s = serde_json::to_string_pretty(report)?;
        s.push('\n');
        diagnose::write_out(&s)
    } else {
        let s = conndoc_diagnose::render::text(report, use_color());
        diagnose::write_out(&s)
    }
}
