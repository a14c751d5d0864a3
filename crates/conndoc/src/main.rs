//! conndoc: tells why a connection is refused or times out.
//!
//! The binary only parses arguments, merges configuration, renders and sets the exit
//! status; every capability lives in a library crate (see crates/README.md).

mod cmd;
mod logging;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "conndoc",
    version,
    about = "Tells why a connection is refused or times out, with the proof and the fix."
)]
struct Cli {
    /// No colour in text output, for every subcommand (NO_COLOR is honoured too).
    #[arg(long, global = true)]
    no_color: bool,
    /// Log lines on stderr: human text, or one JSON object per line (CONNDOC_LOG picks which).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text, value_name = "FORMAT")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

// `defer`: a subcommand's arguments are built only when that subcommand runs (or help,
// completions and man pages build them all); building every subcommand's `Command` for
// every run was start-up work a refused-port diagnosis paid for nothing (issue 16).
#[derive(Subcommand)]
#[command(defer = true)]
enum Command {
    /// Diagnose why TARGET refuses or times out (exit 0 healthy, 1 failing, 2 bad input, 3 tool failure).
    Diagnose(cmd::diagnose::Args),
    /// Re-run the rules on evidence saved with `diagnose --evidence-out` and print the report.
    Explain(cmd::explain::Args),
    /// List listening TCP sockets with their process, queues and warnings.
    Listeners(cmd::listeners::Args),
    /// Print the server-side facts for one port (what `diagnose --ssh` runs on the server).
    Inspect(cmd::inspect::Args),
    /// Lint a redis.conf: bind, protected-mode, requirepass, limits.
    Lint(cmd::lint::Args),
    /// Health-check the targets of a config continuously; diagnose each one that goes down.
    Watch(cmd::watch::Args),
    /// Diagnose every target of a config once; exit 0 only if all are healthy.
    Check(cmd::check::Args),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(cmd::completions::Args),
    /// Write the manual pages (generated from this CLI definition).
    #[command(hide = true)]
    Man(cmd::man::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let code = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 };
                return match e.print() {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        cmd::say(format_args!("conndoc: {}", cmd::StdoutError(e)));
                        ExitCode::from(3)
                    }
                    _ => ExitCode::from(code),
                };
            }
            // One clear line, not clap's multi-line block.
            cmd::say(format_args!("conndoc: {} (see conndoc --help)", clap_error_line(&e.to_string())));
            return ExitCode::from(2);
        }
    };
    cmd::set_no_color(cli.no_color);
    // The daemon's log is its output; the one-shot commands print their result instead.
    let default_level = match cli.command {
        Command::Watch(_) => logging::LevelFilter::INFO,
        _ => logging::LevelFilter::WARN,
    };
    match logging::filter(std::env::var(logging::FILTER_ENV).ok().as_deref(), default_level) {
        Ok(f) => logging::init(cli.log_format, f),
        Err(e) => {
            cmd::say(format_args!("conndoc: {e}"));
            return ExitCode::from(2);
        }
    }
    if let Err(e) = conndoc_engine::firewall_timeout_from_env() {
        cmd::say(format_args!("conndoc: {e}"));
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Diagnose(a) => cmd::diagnose::run(a),
        Command::Explain(a) => cmd::explain::run(a),
        Command::Listeners(a) => cmd::listeners::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Lint(a) => cmd::lint::run(a),
        Command::Watch(a) => cmd::watch::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Completions(a) => cmd::completions::run(a, Cli::command()),
        Command::Man(a) => cmd::man::run(a, Cli::command()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match e.downcast_ref::<cmd::UsageError>() {
                Some(_) => 2,
                None => 3,
            };
            cmd::say(format_args!("conndoc: {}", one_line(&e)));
            ExitCode::from(code)
        }
    }
}

/// clap's error block as one line: its first line, and when that line ends in `:` ("the
/// following required arguments were not provided:") the indented lines it introduces,
/// which name what is missing.
fn clap_error_line(msg: &str) -> String {
    let mut lines = msg.lines();
    let mut line = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
    if line.ends_with(':') {
        let named: Vec<&str> =
            lines.take_while(|l| l.starts_with(char::is_whitespace) && !l.trim().is_empty()).map(str::trim).collect();
        if !named.is_empty() {
            line.push(' ');
            line.push_str(&named.join(", "));
        }
    }
    line
}

/// The error and its causes as one line, each OS error named once: a cause whose text the
/// line already holds (a library that prints its source, then anyhow's chain) is left out,
/// and Rust's ` (os error N)` suffix is dropped.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = strip_os_error_numbers(&cause.to_string());
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `Invalid argument (os error 22)` → `Invalid argument`, everywhere in the text.
fn strip_os_error_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" (os error ") {
        let after = &rest[i + " (os error ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(')') {
            out.push_str(&rest[..i]);
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_argument_is_named_on_the_one_line() {
        for (argv, want) in [
            (&["conndoc", "diagnose"][..], "the following required arguments were not provided: <TARGET>"),
            (
                &["conndoc", "diagnose", "--ssh-timeout", "1s", "x:1"][..],
                "were not provided: --ssh <[USER@]HOST[:PORT]>",
            ),
        ] {
            let e = Cli::try_parse_from(argv).err().expect("a usage error");
            let line = clap_error_line(&e.to_string());
            assert!(line.ends_with(want), "{line:?}");
            assert!(!line.contains('\n'), "{line:?}");
        }
        let e = Cli::try_parse_from(["conndoc", "diagnose", "x:1", "--bogus"]).err().expect("a usage error");
        assert_eq!(clap_error_line(&e.to_string()), "unexpected argument '--bogus' found");
    }

    #[test]
    fn an_os_error_is_named_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("enter network namespace x: {0}")]
        struct Netns(#[source] std::io::Error);
        let e = anyhow::Error::new(Netns(std::io::Error::from_raw_os_error(22))).context("listing sockets");
        assert_eq!(one_line(&e), "listing sockets: enter network namespace x: Invalid argument");
        assert_eq!(strip_os_error_numbers("a (os error x) b (os error 2)"), "a (os error x) b");
    }
}
