//! The binary as a user meets it: bad input, JSON contract, evidence replay, secrets.
//! Network traffic goes only to loopback ports these tests opened themselves.

use std::net::TcpListener;
use std::process::{Command, Output};

fn conndoc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_conndoc")).args(args).env("NO_COLOR", "1").output().expect("run conndoc")
}

/// A loopback port that this test owned and closed again: nothing listens there.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_input_is_one_line_and_status_2() {
    let cases: &[&[&str]] = &[
        &["diagnose", "ftp://h:21"],
        &["diagnose", "127.0.0.1:0"],
        &["diagnose", "127.0.0.1:65536"],
        &["diagnose", ":80"],
        &["diagnose", "http://[::1"],
        &["diagnose", "host-without-port"],
        &["diagnose", "127.0.0.1:1", "--timeout", "-1s"],
        &["diagnose", "127.0.0.1:1", "--timeout", "0"],
        &["diagnose", "127.0.0.1:1", "--timeout", "3days"],
        &["diagnose", "127.0.0.1:1", "--timeout", "1000m"],
        &["diagnose", "127.0.0.1:1", "--netns", "no-such-namespace-conndoc"],
        &["diagnose", "127.0.0.1:1", "--password-file", "/nonexistent/pw"],
        &["diagnose", "127.0.0.1:1", "--evidence-out", "/nonexistent/dir/e.json"],
        &["explain", "/nonexistent/evidence.json"],
        &["diagnose", "127.0.0.1:1", "--ssh", "-oProxyCommand=touch /tmp/x"],
        &["diagnose", "127.0.0.1:1", "--ssh", "root@h:0"],
        &["diagnose", "127.0.0.1:1", "--ssh", "a;b"],
        &["diagnose", "127.0.0.1:1", "--ssh", "h", "--ssh-timeout", "0s"],
        &["diagnose", "127.0.0.1:1", "--ssh", "h", "--remote-conndoc", "-x"],
        &["diagnose", "127.0.0.1:1", "--remote-conndoc", "/x"],
        &["inspect", "--port", "0"],
        &["inspect", "--port", "http"],
        &["inspect", "--port", "80", "--address", "not-an-ip"],
        &["inspect", "--port", "80", "--bracket"],
        &["diagnose"],
        &["frobnicate"],
    ];
    for args in cases {
        let o = conndoc(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: status {:?}, stderr {err}", o.status);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: printed a report on bad input");
    }
}

/// CONNDOC_SSH_COMMAND that a shell could not split is bad input, not a run.
#[test]
fn unsplittable_ssh_command_is_bad_input() {
    let o = Command::new(env!("CARGO_BIN_EXE_conndoc"))
        .args(["diagnose", "127.0.0.1:1", "--ssh", "h"])
        .env("CONNDOC_SSH_COMMAND", "ssh -F 'unclosed")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("CONNDOC_SSH_COMMAND"), "{}", stderr(&o));
}

/// `conndoc inspect --json` on a port this test listens on: one message in the contract's
/// schema naming the listener (and, as a text, the same facts).
#[test]
fn inspect_json_names_our_listener() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let o = conndoc(&["inspect", "--port", &port, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON message");
    assert_eq!(v["schema"], "conndoc.inspect/v1");
    assert_eq!(v["phase"], "result");
    let local = format!("127.0.0.1:{port}");
    assert!(v["host"]["listeners"].as_array().unwrap().iter().any(|x| x["local"] == local.as_str()), "{v}");
    let t = conndoc(&["inspect", "--port", &port]);
    assert!(String::from_utf8_lossy(&t.stdout).contains(&local), "{}", String::from_utf8_lossy(&t.stdout));
}

#[test]
fn malformed_evidence_is_bad_input() {
    let dir = std::env::temp_dir().join(format!("conndoc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("garbage.json");
    std::fs::write(&f, "{not json").unwrap();
    let o = conndoc(&["explain", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not conndoc evidence"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refused_loopback_port_json_contract_and_replay() {
    let port = closed_port();
    let dir = std::env::temp_dir().join(format!("conndoc-cli-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ev = dir.join("ev.json");
    let target = format!("tcp://127.0.0.1:{port}");
    let o = conndoc(&["diagnose", &target, "--json", "--timeout", "1s", "--evidence-out", ev.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    assert_eq!(r["schema"], "conndoc.report/v1");
    assert_eq!(r["target"]["input"], target);
    assert_eq!(r["target"]["scheme"], "tcp");
    assert_eq!(r["target"]["host"], "127.0.0.1");
    assert_eq!(r["target"]["port"], port);
    assert_eq!(r["verdict"]["cause"], "no-listener");
    assert_eq!(r["findings"][0]["cause"], "no-listener");
    assert_eq!(r["findings"][0]["severity"], "critical");
    assert_eq!(r["probes"][0]["outcome"], "refused");
    assert_eq!(r["probes"][0]["errno"], "ECONNREFUSED");
    assert_eq!(r["probes"][0]["family"], "ipv4");
    assert!(r["probes"][0]["elapsed_us"].as_u64().is_some());
    assert!(!r["findings"][0]["remediation"].as_array().unwrap().is_empty());

    // The saved evidence gives the same report offline.
    let o2 = conndoc(&["explain", ev.to_str().unwrap(), "--json"]);
    assert_eq!(o2.status.code(), Some(1), "{}", stderr(&o2));
    let r2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(r, r2, "explain must reproduce the report from the evidence");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn healthy_loopback_listener_is_ok_with_status_0() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let o = conndoc(&["diagnose", &format!("127.0.0.1:{port}"), "--timeout", "1s"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.starts_with("OK ok"), "text output starts with the verdict: {out}");
    assert!(!out.contains('\x1b'), "no colour when not a terminal / NO_COLOR");
}

#[test]
fn text_output_is_verdict_then_evidence_then_fix() {
    let port = closed_port();
    let o = conndoc(&["diagnose", &format!("127.0.0.1:{port}"), "--timeout", "1s"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1));
    let (v, e, f) = (out.find("no-listener").unwrap(), out.find("Evidence").unwrap(), out.find("Fix").unwrap());
    assert!(v < e && e < f, "{out}");
    assert!(out.contains("ECONNREFUSED"), "{out}");
}

#[test]
fn passwords_never_printed() {
    let port = closed_port();
    let dir = std::env::temp_dir().join(format!("conndoc-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ev = dir.join("ev.json");
    let target = format!("redis://app:hunter2-secret@127.0.0.1:{port}/0");
    for json in [true, false] {
        let mut args = vec!["diagnose", &target, "--timeout", "1s", "--evidence-out", ev.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let o = conndoc(&args);
        let all =
            format!("{}{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o), std::fs::read_to_string(&ev).unwrap());
        assert!(!all.contains("hunter2"), "password leaked: {all}");
        assert!(all.contains("<redacted>"), "{all}");
    }
    // And in the error line of bad input.
    let o = conndoc(&["diagnose", "redis://app:hunter2-secret@h:99999"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
