//! One module per subcommand; each has clap `Args` and `run(args) -> anyhow::Result<u8>`
//! returning the exit status. Errors wrapped in [`UsageError`] exit 2, others exit 3.

pub mod check;
pub mod diagnose;
pub mod explain;
pub mod listeners;
pub mod lint;
pub mod watch;

/// Bad input or usage: printed as one line, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UsageError {}

/// Return a usage error (exit 2) from a subcommand.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}
