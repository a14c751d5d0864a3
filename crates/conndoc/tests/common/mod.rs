//! What the binary's tests share: running conndoc and capturing what it says, a temporary
//! directory that is removed also when a test fails, and the bad-input contract (exit 2, one
//! stderr line, no report). Network helpers give only loopback ports the test owned.
#![allow(dead_code)] // each test binary uses a part

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// conndoc from this tree, without colour and with no standard input.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conndoc"));
    c.args(args).env("NO_COLOR", "1").stdin(Stdio::null());
    c
}

/// Run conndoc and capture stdout and stderr.
pub fn conndoc(args: &[&str]) -> Output {
    command(args).output().expect("run conndoc")
}

/// Run with stdout going to `out`, bounded to 20 s: (status, stderr).
pub fn conndoc_to(args: &[&str], out: impl Into<Stdio>) -> (Option<i32>, String) {
    bounded(command(args), out)
}

/// Run `c` with stdout going to `out`, killed after 20 s: (status, stderr).
pub fn bounded(mut c: Command, out: impl Into<Stdio>) -> (Option<i32>, String) {
    let mut child = c.stdout(out).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("run {c:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?}: still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    (o.status.code(), text(&o.stderr))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// A loopback port that this test owned and closed again: nothing listens there.
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh temporary directory (named after the test binary and `tag`), removed on drop,
/// also when the test fails.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(tag: &str) -> Tmp {
        let name = format!("conndoc-{}-{tag}-{}", env!("CARGO_CRATE_NAME"), std::process::id());
        let d = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }

    /// `p` inside the directory, as the string a command line takes.
    pub fn path(&self, p: &str) -> String {
        self.join(p).display().to_string()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn mkfifo(p: &str) {
    assert!(Command::new("mkfifo").arg(p).status().expect("mkfifo (coreutils)").success());
}

pub fn symlink(to: &str, link: &str) {
    std::os::unix::fs::symlink(to, link).unwrap();
}

/// Exit 2, one line on stderr containing every needle, nothing on stdout, within seconds.
pub fn assert_bad_input(args: &[&str], needles: &[&str]) {
    let start = Instant::now();
    let o = conndoc(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: status {:?}, stderr {err}", o.status);
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
    assert!(o.stdout.is_empty(), "{args:?}: printed a report on bad input");
    assert!(start.elapsed() < Duration::from_secs(10), "{args:?}: took {:?}", start.elapsed());
}
