//! conndoc: tells why a connection is refused or times out.
//!
//! The binary only parses arguments, merges configuration, renders and sets the exit
//! status; every capability lives in a library crate (see crates/README.md).

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "conndoc",
    version,
    about = "Tells why a connection is refused or times out, with the proof and the fix."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
                let _ = e.print();
                return ExitCode::from(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                });
            }
            // One clear line, not clap's multi-line block.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("conndoc: {first} (see conndoc --help)");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Diagnose(a) => cmd::diagnose::run(a),
        Command::Explain(a) => cmd::explain::run(a),
        Command::Listeners(a) => cmd::listeners::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Lint(a) => cmd::lint::run(a),
        Command::Watch(a) => cmd::watch::run(a),
        Command::Check(a) => cmd::check::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match e.downcast_ref::<cmd::UsageError>() {
                Some(_) => 2,
                None => 3,
            };
            eprintln!("conndoc: {e:#}");
            ExitCode::from(code)
        }
    }
}
