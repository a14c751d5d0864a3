//! Proxy variables and the probes: `conndoc diagnose` connects to the target itself, whatever
//! HTTP_PROXY/HTTPS_PROXY/ALL_PROXY say (a proxy would answer for the target and hide the
//! fault being diagnosed), and a proxy URL's password never shows (docs/protocols.md).
//! The alert receivers, which do use the proxy, are tested in tests/watch/proxy.rs.
//! Network traffic goes only to loopback ports this test opened itself.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASSWORD: &str = "pr0xyS3cret";

/// An HTTP server on loopback answering every GET with 200; records the request lines.
fn http_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            g.lock().unwrap().push(head.lines().next().unwrap_or("").to_string());
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, got)
}

#[test]
fn probes_ignore_proxy_variables_and_never_show_their_password() {
    // The "proxy": a listener nobody should ever connect to.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://alice:{PASSWORD}@127.0.0.1:{}", proxy.local_addr().unwrap().port());
    let (port, got) = http_server();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("conndoc-proxy-env-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let evidence = dir.join("e.json");
    let cases = [
        (format!("http://127.0.0.1:{port}/"), 0),
        (format!("https://127.0.0.1:{closed}/"), 1),
        (format!("redis://127.0.0.1:{closed}"), 1),
        (format!("tcp://127.0.0.1:{closed}"), 1),
    ];
    let with_proxies = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_conndoc"));
        cmd.args(args);
        for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
            cmd.env(v, &proxy_url);
        }
        cmd.env_remove("NO_PROXY").env_remove("no_proxy").env("CONNDOC_LOG", "debug").stdin(Stdio::null());
        cmd.output().unwrap()
    };
    // `check` probes every target of a config the same way.
    let cfg = dir.join("check.toml");
    let mut toml = String::new();
    for (i, (target, _)) in cases.iter().enumerate() {
        toml.push_str(&format!("[[target]]\nname = \"t{i}\"\nurl = \"{target}\"\ntimeout = \"1s\"\n\n"));
    }
    std::fs::write(&cfg, toml).unwrap();
    let o = with_proxies(&["check", "--config", cfg.to_str().unwrap(), "--no-progress"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{err}{out}");
    assert!(out.lines().any(|l| l.starts_with("t0 ") && l.contains(" ok ")), "{out}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD), "{err}{out}");
    for (target, want) in &cases {
        let o = with_proxies(&[
            "diagnose",
            target,
            "--json",
            "--timeout",
            "1s",
            "--evidence-out",
            evidence.to_str().unwrap(),
        ]);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(*want), "{target}: {err}{out}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        if *want == 0 {
            assert_eq!(report["verdict"]["cause"], "ok", "{target}: {out}");
        }
        let ev = std::fs::read_to_string(&evidence).unwrap();
        for (what, text) in [("stdout", &*out), ("stderr", &*err), ("evidence", &ev)] {
            assert!(!text.contains(PASSWORD), "{target}: the proxy password in {what}: {text}");
        }
    }
    assert!(
        got.lock().unwrap().iter().any(|l| l.starts_with("GET / HTTP/1.1")),
        "the target got the GET directly (origin form, not a proxy's absolute form): {:?}",
        got.lock().unwrap()
    );
    match proxy.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a probe went through the proxy: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
