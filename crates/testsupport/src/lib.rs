//! Honest skips for integration tests that need something the machine may lack (root, a
//! program). Such a test is never a silent pass:
//!
//! - requirement met → the test runs;
//! - not met → it is reported **ignored**, the reason in its name's `[kind]` and on stderr;
//! - not met and `CI=true` → it **fails** with the reason, so a missing install step in
//!   `.ci/run` cannot hide behind a green run.
//!
//! A test file using it sets `harness = false` in Cargo.toml and has a `main`:
//!
//! ```no_run
//! use conndoc_testsupport::{root, program, Tests};
//! fn tcp_reset_rule() { /* panics on failure, like a #[test] */ }
//! fn main() {
//!     let mut t = Tests::new();
//!     let need = root().and(program("nft", "nftables"));
//!     t.add("tcp_reset_rule", &need, tcp_reset_rule);
//!     t.run();
//! }
//! ```
//! `cargo test -- --ignored` runs the ignored ones anyway (they will then fail for the
//! reason given).

pub mod fuzz;

use libtest_mimic::{Arguments, Failed, Trial};
use std::path::PathBuf;

/// A requirement: met, or not with the reason (what is missing and how to get it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need(Result<(), String>);

impl Need {
    pub fn met() -> Need {
        Need(Ok(()))
    }
    pub fn missing(reason: impl Into<String>) -> Need {
        Need(Err(reason.into()))
    }
    /// Both requirements; the reasons of every unmet one.
    pub fn and(self, other: Need) -> Need {
        match (self.0, other.0) {
            (Ok(()), Ok(())) => Need::met(),
            (Err(a), Ok(())) | (Ok(()), Err(a)) => Need(Err(a)),
            (Err(a), Err(b)) => Need(Err(format!("{a}; {b}"))),
        }
    }
    pub fn reason(&self) -> Option<&str> {
        self.0.as_ref().err().map(String::as_str)
    }
    pub fn is_met(&self) -> bool {
        self.0.is_ok()
    }
}

/// Whether the effective user is root (uid 0 in /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Root (network namespaces, raw sockets, firewall rules).
pub fn root() -> Need {
    if is_root() {
        Need::met()
    } else {
        Need::missing("needs root (namespaces, CAP_NET_ADMIN/CAP_NET_RAW): run the tests as root")
    }
}

/// The first `name` on PATH (or in /usr/sbin, /sbin).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A program on PATH, from the Debian package `package` (for the reason text).
pub fn program(name: &str, package: &str) -> Need {
    match which(name) {
        Some(_) => Need::met(),
        None => Need::missing(format!("needs `{name}` (Debian package {package}; listed in .ci/packages)")),
    }
}

/// A fresh directory under the system's temporary directory, named `conndoc-TAG-PID`
/// (emptied first if a killed run left it), removed when dropped: also when the test fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("conndoc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        TempDir(d)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether this run is CI (`CI=true`, as CI services set it): a test that cannot run fails.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// What happens to a test, given its requirement and whether this is CI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Reported ignored, with this reason.
    Ignore(String),
    /// Reported failed, with this message.
    Fail(String),
}

pub fn decide(need: &Need, ci: bool) -> Decision {
    match need.reason() {
        None => Decision::Run,
        Some(why) if ci => Decision::Fail(format!("CI=true and this test cannot run here: {why}")),
        Some(why) => Decision::Ignore(why.to_string()),
    }
}

/// The trial for one test: run, ignored with the reason, or failed under CI.
pub fn trial<F>(name: impl Into<String>, need: &Need, ci: bool, f: F) -> Trial
where
    F: FnOnce() -> Result<(), Failed> + Send + 'static,
{
    let name = name.into();
    match decide(need, ci) {
        Decision::Run => Trial::test(name, f),
        Decision::Fail(msg) => Trial::test(name, move || Err(msg.into())).with_kind("cannot run"),
        Decision::Ignore(why) => {
            eprintln!("ignored {name}: {why}");
            Trial::test(name, f).with_ignored_flag(true).with_kind(short(&why))
        }
    }
}

/// The reason's first clause, short enough for the test list.
fn short(why: &str) -> String {
    let first = why.split([';', '(', ':']).next().unwrap_or(why).trim();
    first.to_string()
}

/// A test binary's tests (`harness = false`).
pub struct Tests {
    trials: Vec<Trial>,
    ci: bool,
}

impl Default for Tests {
    fn default() -> Self {
        Tests::new()
    }
}

impl Tests {
    pub fn new() -> Tests {
        Tests { trials: Vec::new(), ci: in_ci() }
    }

    /// A test function that panics on failure, run only when `need` is met.
    pub fn add(&mut self, name: &str, need: &Need, f: fn()) -> &mut Tests {
        self.trials.push(trial(name, need, self.ci, move || {
            f();
            Ok(())
        }));
        self
    }

    /// Any prepared trial (e.g. one per data file).
    pub fn push(&mut self, t: Trial) -> &mut Tests {
        self.trials.push(t);
        self
    }

    /// Run with the command line's arguments and exit.
    pub fn run(self) -> ! {
        let args = Arguments::from_args();
        libtest_mimic::run(&args, self.trials).exit()
    }
}

/// `tests!(need, fn_a, fn_b, …)`: add each function under its own name.
#[macro_export]
macro_rules! tests {
    ($t:expr, $need:expr, $($f:ident),+ $(,)?) => {
        $( $t.add(stringify!($f), &$need, $f); )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_met_requirement_runs_the_test() {
        assert_eq!(decide(&Need::met(), true), Decision::Run);
        assert_eq!(decide(&Need::met(), false), Decision::Run);
    }

    #[test]
    fn an_unmet_requirement_is_ignored_outside_ci_and_fails_in_ci() {
        assert_eq!(decide(&Need::missing("needs root"), false), Decision::Ignore("needs root".into()));
        match decide(&Need::missing("needs root"), true) {
            Decision::Fail(m) => assert!(m.contains("CI=true") && m.contains("needs root"), "{m}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn and_keeps_every_reason() {
        assert!(Need::met().and(Need::met()).is_met());
        let n = Need::missing("a").and(Need::met()).and(Need::missing("b"));
        assert_eq!(n.reason(), Some("a; b"));
        assert_eq!(short("needs `nft` (Debian package nftables)"), "needs `nft`");
    }

    #[test]
    fn program_looks_on_path() {
        assert!(program("sh", "dash").is_met());
        let n = program("conndoc-no-such-program", "none");
        assert!(n.reason().is_some_and(|r| r.contains("conndoc-no-such-program")), "{n:?}");
    }
}

#[cfg(test)]
mod workspace {
    use std::path::Path;

    /// Every crate inherits the workspace's rust-version, so clippy's `incompatible_msrv`
    /// checks each one against it (a new crate that forgets it fails here).
    #[test]
    fn every_crate_inherits_the_rust_version() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut n = 0;
        for e in std::fs::read_dir(&crates).unwrap() {
            let manifest = e.unwrap().path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            n += 1;
            assert!(
                text.contains("\nrust-version.workspace = true"),
                "{} lacks rust-version.workspace = true",
                manifest.display()
            );
        }
        assert!(n >= 10, "only {n} crates found under {}", crates.display());
        let root = std::fs::read_to_string(crates.join("../Cargo.toml")).unwrap();
        assert!(root.contains("\nrust-version = \"1."), "the workspace states a rust-version");
    }
}
