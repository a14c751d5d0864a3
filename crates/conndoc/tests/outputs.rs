//! Where conndoc writes, built for real: `--pcap`, `man --out` and `watch --history` given a
//! symlink (dangling or not) or a FIFO; stdout a full disk (`/dev/full`) or a pipe whose
//! reader is gone. A refused path is one stderr line and exit 2 before anything is probed or
//! created; stdout that cannot be written says "writing stdout" and exits 3; a closed pipe
//! ends quietly with the command's own status (docs/report.md).
//! Network traffic goes only to loopback ports these tests opened themselves, and (the labtool
//! case) inside the lab namespaces of one scenario.

mod common;

use common::{assert_bad_input, bounded, closed_port, command, conndoc, conndoc_to, mkfifo, stderr, symlink, Tmp};
use conndoc_testsupport::{program, root, tests, Need, Tests};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// The files in a directory, sorted.
fn names(dir: &str) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// `watch.toml` in `t`: a closed loopback listen port, history `history` in `t`, one
/// target `url` with a 300 ms timeout.
fn watch_config(t: &Tmp, history: &str, url: &str) -> String {
    let cfg = t.path("watch.toml");
    let toml = format!(
        "listen = \"127.0.0.1:{}\"\nhistory = \"{}\"\n\n[[target]]\nname = \"a\"\nurl = \"{url}\"\ntimeout = \"300ms\"\n",
        closed_port(),
        t.path(history)
    );
    std::fs::write(&cfg, toml).unwrap();
    cfg
}

/// `victim.EXT` holding "precious", and the paths a writer must refuse with the words it
/// names them by: a symlink to the victim, a dangling one (to `nowhere.EXT`) and a FIFO.
fn refused_paths(t: &Tmp, ext: &str) -> (String, [(String, &'static str); 3]) {
    let victim = t.path(&format!("victim.{ext}"));
    std::fs::write(&victim, "precious").unwrap();
    let [link, dangling, fifo] = ["link", "dangling", "fifo"].map(|n| t.path(&format!("{n}.{ext}")));
    symlink(&victim, &link);
    symlink(&t.path(&format!("nowhere.{ext}")), &dangling);
    mkfifo(&fifo);
    (victim, [(link, "symbolic link"), (dangling, "symbolic link"), (fifo, "FIFO")])
}

fn pcap_through_a_link_or_into_a_fifo_is_refused_before_probing() {
    let t = Tmp::new("pcap");
    // The target listens: a probe would show up here as a connection.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let target = format!("tcp://127.0.0.1:{}", server.local_addr().unwrap().port());
    let (victim, refused) = refused_paths(&t, "pcap");
    for (file, what) in &refused {
        assert_bad_input(&["diagnose", &target, "--timeout", "500ms", "--pcap", file], &["--pcap", file, what]);
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!Path::new(&t.path("nowhere.pcap")).exists(), "created through the dangling link");
    match server.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the target was probed before the --pcap refusal: {other:?}"),
    }
}

fn man_out_never_writes_through_a_link() {
    let t = Tmp::new("man");
    // DIR a dangling symlink, and a symlink to a real directory: refused, nothing created.
    let (real, dangling, linked) = (t.path("real"), t.path("dangling"), t.path("linked"));
    std::fs::create_dir(&real).unwrap();
    symlink(&t.path("missing"), &dangling);
    symlink(&real, &linked);
    assert_bad_input(&["man", "--out", &dangling], &["--out", "symbolic link", "does not exist"]);
    assert!(!Path::new(&t.path("missing")).exists(), "created the link's target");
    assert_bad_input(&["man", "--out", &linked], &["--out", "symbolic link"]);
    assert!(names(&real).is_empty(), "wrote through the directory link: {:?}", names(&real));
    // A page that is a symlink (to a file, or dangling) or a FIFO: refused before any page is written.
    let victim = t.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    for (page, make) in [("conndoc.1", "link"), ("conndoc-diagnose.1", "dangling"), ("conndoc-watch.1", "fifo")] {
        let dir = t.path(&format!("pages-{make}"));
        std::fs::create_dir(&dir).unwrap();
        let p = format!("{dir}/{page}");
        let what = match make {
            "link" => {
                symlink(&victim, &p);
                "symbolic link"
            }
            "dangling" => {
                symlink(&t.path("gone.1"), &p);
                "symbolic link"
            }
            _ => {
                mkfifo(&p);
                "not a regular file"
            }
        };
        assert_bad_input(&["man", "--out", &dir], &[page, what]);
        assert_eq!(names(&dir), [page], "{make}: pages written before the refusal");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!Path::new(&t.path("gone.1")).exists());
    // The normal case still works: every page, 0600.
    let fresh = t.path("fresh/man1");
    let o = conndoc(&["man", "--out", &fresh]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(names(&fresh).contains(&"conndoc-diagnose.1".to_string()), "{:?}", names(&fresh));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(format!("{fresh}/conndoc.1")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn watch_history_through_a_link_leaves_no_lock_file() {
    let t = Tmp::new("history");
    let cfg = watch_config(&t, "unused.db", &format!("tcp://127.0.0.1:{}", closed_port()));
    let (victim, refused) = refused_paths(&t, "db");
    for (file, what) in &refused {
        assert_bad_input(&["watch", "--config", &cfg, "--history", file], &[file, what]);
        let lock = format!("{file}.lock");
        assert!(std::fs::symlink_metadata(&lock).is_err(), "{lock} left behind");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!Path::new(&t.path("nowhere.db")).exists());
    assert_eq!(names(&t.0.display().to_string()), ["dangling.db", "fifo.db", "link.db", "victim.db", "watch.toml"]);
}

/// Every command that prints a result, with the status it has when stdout works.
fn printing_commands(t: &Tmp) -> Vec<(Vec<String>, i32)> {
    let target = format!("tcp://127.0.0.1:{}", closed_port());
    let cfg = watch_config(t, "h.db", &target);
    let conf = t.path("redis.conf");
    std::fs::write(&conf, "bind 127.0.0.1\nport 6379\n").unwrap();
    let evidence = t.path("e.json");
    let o = conndoc(&["diagnose", &target, "--no-host", "--timeout", "300ms", "--evidence-out", &evidence]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let port = target.rsplit(':').next().unwrap().to_string();
    let v = |a: &[&str], code| (a.iter().map(|s| s.to_string()).collect(), code);
    vec![
        v(&["diagnose", &target, "--no-host", "--timeout", "300ms"], 1),
        v(&["diagnose", &target, "--no-host", "--timeout", "300ms", "--json"], 1),
        v(&["explain", &evidence], 1),
        v(&["inspect", "--port", &port], 0),
        v(&["inspect", "--port", &port, "--json"], 0),
        v(&["lint", &conf], 0),
        v(&["listeners"], 0),
        v(&["man"], 0),
        v(&["man", "diagnose"], 0),
        v(&["completions", "bash"], 0),
        v(&["watch", "--check-config", &cfg], 0),
        v(&["check", "--config", &cfg, "--no-progress"], 1),
        v(&["--help"], 0),
        v(&["--version"], 0),
    ]
}

fn a_full_disk_on_stdout_says_writing_stdout_and_exits_3() {
    let t = Tmp::new("full");
    for (args, _) in printing_commands(&t) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        let (code, err) = conndoc_to(&args, full);
        assert_eq!(code, Some(3), "{args:?}: {err}");
        assert_eq!(err, "conndoc: writing stdout: No space left on device\n", "{args:?}");
    }
}

fn a_closed_stdout_pipe_ends_quietly_with_the_commands_status() {
    let t = Tmp::new("pipe");
    for (args, want) in printing_commands(&t) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The reader is closed before conndoc starts: every write to the pipe fails (EPIPE).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (code, err) = conndoc_to(&args, writer);
        assert_eq!(code, Some(want), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// stderr a full disk: the message is dropped, the status still says what happened (bad
/// input 2, a failing target 1) — eprintln! panicked here (101).
fn a_full_stderr_never_panics() {
    let t = Tmp::new("stderr");
    let bad = t.path("bad.toml");
    std::fs::write(&bad, "[[target]]\nname = \"a\"\n").unwrap();
    let target = format!("tcp://127.0.0.1:{}", closed_port());
    let cases: [(&[&str], i32); 5] = [
        (&["diagnose", "ftp://h:21"], 2),
        (&["frobnicate"], 2),
        (&["watch", "--check-config", &bad], 2),
        (&["check", "--config", &bad], 2),
        (&["diagnose", &target, "--no-host", "--timeout", "300ms"], 1),
    ];
    for (args, want) in cases {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
        let o = command(args).stderr(full).stdout(Stdio::null()).output().unwrap();
        assert_eq!(o.status.code(), Some(want), "{args:?}");
    }
}

/// The pre-run check creates the file; a capture that then cannot start (no CAP_NET_RAW:
/// setpriv drops it from the bounding set) must not leave an empty, unreadable pcap behind
/// while the report says it "was not written".
fn a_pcap_that_could_not_be_captured_leaves_no_empty_file() {
    let t = Tmp::new("nocap");
    let pcap = t.path("probe.pcap");
    let target = format!("tcp://127.0.0.1:{}", closed_port());
    let o = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw", env!("CARGO_BIN_EXE_conndoc")])
        .args(["diagnose", &target, "--json", "--timeout", "300ms", "--pcap", &pcap])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("{pcap} was not written")), "{out}");
    assert!(std::fs::symlink_metadata(&pcap).is_err(), "an empty {pcap} was left behind");
    // With the capability the file is written (a pcap header at least) and kept.
    let o = conndoc(&["diagnose", &target, "--timeout", "300ms", "--pcap", &pcap]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(std::fs::metadata(&pcap).unwrap().len() >= 24, "no pcap header in {pcap}");
}

/// conndoc-labtool prints the report of the scenario it ran: a full disk on stdout is one
/// "writing stdout" line and exit 3, a closed pipe ends quietly with 0 (println! panicked).
fn labtool_run_writes_stdout_like_conndoc() {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lab/scenarios/client-refused-v4.toml");
    let labtool = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_conndoc-labtool"));
        c.args(["run", scenario, env!("CARGO_BIN_EXE_conndoc")]).stdin(Stdio::null());
        c
    };
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let (code, err) = bounded(labtool(), full);
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err, "conndoc-labtool: writing stdout: No space left on device\n");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (code, err) = bounded(labtool(), writer);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.starts_with("scenario client-refused-v4: passed"), "{err}");
}

fn main() {
    let mut t = Tests::new();
    tests!(
        t,
        Need::met(),
        pcap_through_a_link_or_into_a_fifo_is_refused_before_probing,
        man_out_never_writes_through_a_link,
        watch_history_through_a_link_leaves_no_lock_file,
        a_full_disk_on_stdout_says_writing_stdout_and_exits_3,
        a_closed_stdout_pipe_ends_quietly_with_the_commands_status,
        a_full_stderr_never_panics,
    );
    tests!(t, root().and(program("setpriv", "util-linux")), a_pcap_that_could_not_be_captured_leaves_no_empty_file);
    tests!(t, root().and(program("ip", "iproute2")), labtool_run_writes_stdout_like_conndoc);
    t.run();
}
