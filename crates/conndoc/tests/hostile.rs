//! Hostile input to the binary, built for real: files that are devices, FIFOs, huge or
//! symlinks; durations that overflow. Bad input is one line on stderr and exit 2 — never a
//! panic (101), an abort (134), a hang or a file written through a symlink.
//! Network traffic goes only to loopback ports these tests opened themselves.

mod common;

use common::{assert_bad_input, closed_port, conndoc, mkfifo, stderr, Tmp};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn huge_durations_are_bad_input_not_a_panic() {
    let t = Tmp::new("dur");
    let target = format!("127.0.0.1:{}", closed_port());
    assert_bad_input(&["diagnose", &target, "--timeout", "99999999999999999999999h"], &["is too long: at most 10m"]);
    assert_bad_input(&["diagnose", &target, "--timeout", "1e400s"], &["invalid duration"]);
    for (key, value) in [("interval", "99999999999999999999999h"), ("timeout", "99999999999999999999999d")] {
        let cfg = t.path("w.toml");
        std::fs::write(
            &cfg,
            format!("[defaults]\n{key} = \"{value}\"\n\n[[target]]\nname = \"a\"\nurl = \"{target}\"\n"),
        )
        .unwrap();
        for args in [vec!["watch", "--check-config", &cfg], vec!["check", "--config", &cfg]] {
            let o = conndoc(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: status {:?}, stderr {err}", o.status);
            assert!(err.contains("too long"), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn special_files_are_refused_everywhere() {
    let t = Tmp::new("special");
    let fifo = t.path("fifo");
    mkfifo(&fifo);
    let dir = t.0.display().to_string();
    let target = format!("redis://127.0.0.1:{}", closed_port());
    for f in ["/dev/zero", fifo.as_str(), dir.as_str()] {
        let what = if f == "/dev/zero" {
            "character device"
        } else if f == fifo {
            "FIFO"
        } else {
            "directory"
        };
        assert_bad_input(&["diagnose", &target, "--password-file", f], &[what]);
        assert_bad_input(&["diagnose", "https://127.0.0.1:1", "--ca", f], &[what]);
        assert_bad_input(&["explain", f], &[what]);
        assert_bad_input(&["lint", f], &[what]);
        assert_bad_input(&["check", "--config", f], &[what]);
        assert_bad_input(&["watch", "--check-config", f], &[what]);
    }
}

#[test]
fn an_unusable_ca_file_is_bad_input_never_healthy() {
    let t = Tmp::new("ca");
    // A listener this test opened: with a bad --ca it must never be reported healthy.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("https://127.0.0.1:{}", l.local_addr().unwrap().port());
    let empty = t.path("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let garbage = t.path("garbage.pem");
    std::fs::write(&garbage, "\x00\x01 not a certificate at all\n").unwrap();
    let bad_der = t.path("bad-der.pem");
    std::fs::write(&bad_der, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let bad_b64 = t.path("bad-b64.pem");
    std::fs::write(&bad_b64, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
    let unterminated = t.path("unterminated.pem");
    std::fs::write(&unterminated, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    for (f, needle) in [
        (empty.as_str(), "holds no PEM certificate"),
        (garbage.as_str(), "holds no PEM certificate"),
        (bad_der.as_str(), "certificate rejected"),
        (bad_b64.as_str(), "not valid base64"),
        (unterminated.as_str(), "a PEM section never ends (no \"-----END CERTIFICATE-----\" line)"),
        ("/dev/zero", "character device"),
        (t.0.to_str().unwrap(), "directory"),
    ] {
        assert_bad_input(&["diagnose", &target, "--no-host", "--timeout", "1s", "--ca", f], &[needle]);
    }
}

#[test]
fn a_600_mb_config_fails_cleanly() {
    let t = Tmp::new("huge");
    let big = t.path("big.toml");
    // Sparse: 600 MB of zeros on no disk space.
    std::fs::File::create(&big).unwrap().set_len(600 << 20).unwrap();
    for args in [
        vec!["check", "--config", big.as_str()],
        vec!["watch", "--check-config", big.as_str()],
        vec!["explain", big.as_str()],
        vec!["lint", big.as_str()],
    ] {
        assert_bad_input(&args, &["larger than the limit"]);
    }
    // Standard input is bounded too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_conndoc"))
        .args(["explain", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..200 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot read standard input: larger than the limit"), "{}", stderr(&o));
}

#[test]
fn evidence_is_private_and_never_written_through_a_symlink() {
    let t = Tmp::new("write");
    let target = format!("127.0.0.1:{}", closed_port());
    let out = t.path("e.json");
    let o = conndoc(&["diagnose", &target, "--no-host", "--timeout", "500ms", "--evidence-out", &out]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let victim = t.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = t.path("link.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    assert_bad_input(&["diagnose", &target, "--no-host", "--evidence-out", &link], &["symbolic link"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(Path::new(&victim).exists());
}

#[test]
fn a_file_that_is_not_a_network_namespace_is_bad_input() {
    assert_bad_input(&["listeners", "--netns", "/etc/passwd"], &["not a network namespace"]);
    assert_bad_input(&["listeners", "--netns", "/proc/self/ns/mnt"], &["not a network namespace"]);
    let target = format!("127.0.0.1:{}", closed_port());
    assert_bad_input(&["diagnose", &target, "--netns", "/etc/passwd"], &["not a network namespace"]);
}

#[test]
fn parse_errors_never_echo_a_url_password() {
    for raw in ["redis://u:SEKRIT/abc@h:99999", "u:SEKRIT@h:1", "redis://u:SEKRIT?@h:99999", "SEKRIT@h:1"] {
        let o = conndoc(&["diagnose", raw]);
        assert_eq!(o.status.code(), Some(2), "{raw}: {}", stderr(&o));
        assert!(!stderr(&o).contains("SEKRIT"), "{raw}: {}", stderr(&o));
        assert!(stderr(&o).contains("<redacted>"), "{raw}: {}", stderr(&o));
    }
    assert_bad_input(&["diagnose", "http://127.0.0.1:1/a\r\nX-Injected: 1"], &["control characters"]);
}

#[test]
fn a_password_holding_hash_slash_or_question_mark_is_never_shown() {
    // It used to end the authority: host "sekrit" (asked of DNS), the password in the report.
    let port = closed_port();
    for raw in [format!("redis://SEKRIT#x@127.0.0.1:{port}"), format!("redis://u:SEKRIT/x?y@127.0.0.1:{port}")] {
        for json in [false, true] {
            let mut args = vec!["diagnose", raw.as_str(), "--no-host", "--timeout", "1s"];
            if json {
                args.push("--json");
            }
            let o = conndoc(&args);
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(1), "{raw}: {out} {}", stderr(&o));
            assert!(!out.contains("SEKRIT") && !stderr(&o).contains("SEKRIT"), "{raw}: {out}");
            assert!(out.contains(&format!("127.0.0.1:{port}")) && out.contains("<redacted>"), "{raw}: {out}");
            assert!(!out.to_ascii_lowercase().contains("sekrit"), "{raw}: {out}");
        }
    }
}

/// A server on a loopback port this test opened that accepts and never says a word.
struct Silent {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}
impl Silent {
    fn start() -> Silent {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            let end = Instant::now() + Duration::from_secs(60);
            while !s.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Silent { port, stop, thread: Some(thread) }
    }
}
impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_silent_server_costs_one_timeout_not_two() {
    let s = Silent::start();
    for scheme in ["redis", "rediss", "https", "http"] {
        let target = format!("{scheme}://127.0.0.1:{}", s.port);
        let start = Instant::now();
        let o = conndoc(&["diagnose", &target, "--timeout", "1s"]);
        let took = start.elapsed();
        assert_eq!(o.status.code(), Some(1), "{target}: {}", stderr(&o));
        // One 1 s deadline plus inspection; two would be over 2 s.
        assert!(took < Duration::from_millis(1800), "{target}: took {took:?}");
    }
}

/// A one-shot server on a loopback port this test opened: reads a little, answers `reply`.
fn answering(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        l.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while Instant::now() < end && served < 4 {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                    let mut b = [0u8; 4096];
                    let _ = c.read(&mut b);
                    let _ = c.write_all(reply);
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, t)
}

#[test]
fn server_bytes_never_reach_the_terminal_raw() {
    for (scheme, reply) in [
        ("http", &b"HTTP/1.1 503 \x1b[2J\x1b]0;pwned\x07\r\nServer: evil\x1b[31m\r\nContent-Length: 0\r\n\r\n"[..]),
        ("redis", &b"-ERR \x1b[2Jgone\x1b]0;pwned\x07\r\n"[..]),
    ] {
        let (port, _t) = answering(reply);
        let target = format!("{scheme}://127.0.0.1:{port}");
        let o = conndoc(&["diagnose", &target, "--no-host", "--timeout", "1s"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{target}: {out} {}", stderr(&o));
        assert!(!out.contains('\x1b') && !out.contains('\x07'), "{target}: raw escape in {out:?}");
        assert!(out.contains("\\u{1b}"), "{target}: {out}");
    }
    let t = Tmp::new("lint-escape");
    let conf = t.path("redis.conf");
    std::fs::write(&conf, "bind \"0.0.0.0\x1b[2J\"\nprotected-mode no\n").unwrap();
    let o = conndoc(&["lint", &conf]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains('\x1b'), "{out:?}");
}

#[test]
fn strings_in_an_evidence_file_are_escaped_by_explain() {
    let t = Tmp::new("explain-escape");
    let target = format!("127.0.0.1:{}", closed_port());
    let ev = t.path("ev.json");
    let o = conndoc(&["diagnose", &target, "--no-host", "--timeout", "500ms", "--evidence-out", &ev]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // A hostile evidence file: escape sequences in the strings explain prints.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ev).unwrap()).unwrap();
    let evil = "\x1b[2J\x1b]0;pwned\x07";
    let input = v["target"]["input"].as_str().unwrap().to_string();
    v["target"]["input"] = serde_json::Value::String(format!("{input}{evil}"));
    std::fs::write(&ev, v.to_string()).unwrap();
    let o = conndoc(&["explain", &ev]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out} {}", stderr(&o));
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "raw escape in {out:?}");
    assert!(out.contains(&format!("{input}\\u{{1b}}[2J")), "{out}");
}

#[test]
fn an_out_of_range_http_status_is_a_protocol_violation() {
    let (port, _t) = answering(b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n");
    let o = conndoc(&["diagnose", &format!("http://127.0.0.1:{port}"), "--no-host", "--timeout", "1s"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(!out.contains("http-error"), "{out}");
    assert!(out.contains("protocol violation") && out.contains("HTTP/1.1 999 Weird"), "{out}");
}

#[test]
fn a_64_mib_reply_is_stated_not_copied_into_the_report() {
    let mut reply = b"$67108864\r\n".to_vec();
    reply.resize(reply.len() + 64 * 1024 * 1024, b'x');
    reply.extend_from_slice(b"\r\n");
    let wire = reply.len();
    let (port, _t) = answering(Box::leak(reply.into_boxed_slice()));
    let t = Tmp::new("64mib");
    let evidence = t.path("ev.json");
    let target = format!("redis://127.0.0.1:{port}");
    let o = conndoc(&["diagnose", &target, "--no-host", "--timeout", "10s", "--json", "--evidence-out", &evidence]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(out.len() < 64 * 1024, "report JSON is {} bytes", out.len());
    assert!(out.contains(&format!("\"length\": {wire}")) && out.contains("\"truncated\": true"), "{out}");
    let ev = std::fs::metadata(&evidence).unwrap().len();
    assert!(ev < 64 * 1024, "evidence file is {ev} bytes");
    eprintln!("{wire}-byte reply: report JSON {} bytes, evidence file {ev} bytes", out.len());
}
