//! `--no-color` is a global flag: every subcommand accepts it (before or after the
//! subcommand's name) and prints no colour with it, even on a terminal. The terminal is a
//! real pty (`script` from util-linux); traffic goes only to loopback ports opened here.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_conndoc")
}

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("conndoc-nocolor-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Single-quoted for `sh -c` (the paths and arguments here hold no quote).
fn quoted(args: &[&str]) -> String {
    let mut s = format!("'{}'", bin());
    for a in args {
        assert!(!a.contains('\''), "{a}");
        s.push_str(&format!(" '{a}'"));
    }
    s
}

/// Run conndoc with its stdout on a pty, NO_COLOR unset: only `--no-color` may turn colour off.
fn on_terminal(args: &[&str]) -> (Option<i32>, String) {
    // `script -e` returns the child's status; its own output is the pty's.
    let o: Output = Command::new("script")
        .args(["-qec", &quoted(args), "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .expect("run script (util-linux)");
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Every subcommand, with arguments that make it print text and exit with a known status.
fn subcommands(d: &Dir, port: u16, listening: u16) -> Vec<(Vec<String>, i32)> {
    let target = format!("tcp://127.0.0.1:{port}");
    let ev = d.0.join("ev.json").display().to_string();
    // Evidence for `explain`, saved by a real run.
    let o = Command::new(bin())
        .args(["diagnose", &target, "--timeout", "1s", "--json", "--evidence-out", &ev])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let conf = d.file("redis.conf", "bind 127.0.0.1\nport 6379\nprotected-mode yes\n");
    let watch = d.file(
        "watch.toml",
        &format!("listen = \"127.0.0.1:0\"\n\n[[target]]\nname = \"api\"\nurl = \"{target}\"\ninterval = \"1s\"\n"),
    );
    let lint_status = Command::new(bin()).args(["lint", &conf]).output().unwrap().status.code().unwrap();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (s(&["diagnose", &target, "--timeout", "1s"]), 1),
        (s(&["explain", &ev]), 1),
        (s(&["listeners", "--port", &listening.to_string()]), 0),
        (s(&["inspect", "--port", &listening.to_string()]), 0),
        (s(&["lint", &conf]), lint_status),
        (s(&["watch", "--check-config", &watch]), 0),
        (s(&["check", "--config", &watch, "--no-progress"]), 1),
    ]
}

#[test]
fn every_subcommand_accepts_no_color_and_prints_none() {
    let d = Dir::new("all");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let listening = l.local_addr().unwrap().port();
    let cases = subcommands(&d, closed_port(), listening);
    assert_eq!(cases.len(), 7, "one case per subcommand");
    for (args, status) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // After the subcommand's name, and before it (global).
        let mut after = args.clone();
        after.push("--no-color");
        let mut before = vec!["--no-color"];
        before.extend(&args);
        for argv in [after, before] {
            let (code, out) = on_terminal(&argv);
            assert_eq!(code, Some(*status), "{argv:?}: {out}");
            assert!(!out.trim().is_empty(), "{argv:?} printed nothing");
            assert!(!out.contains('\x1b'), "{argv:?} printed colour: {out:?}");
        }
    }
}

/// The pty test can fail: without the flag, a failing diagnosis on a terminal is coloured.
#[test]
fn without_the_flag_a_terminal_gets_colour() {
    let (code, out) = on_terminal(&["diagnose", &format!("127.0.0.1:{}", closed_port()), "--timeout", "1s"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("\x1b["), "no colour on a terminal: {out:?}");
}
