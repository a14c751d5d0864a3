//! Proxy variables and the daemon: alert deliveries go through HTTP_PROXY/HTTPS_PROXY (the
//! receivers' HTTP client honours them, tested in hardening.rs), health checks and diagnoses
//! never do, and a password in the proxy URL goes to the proxy alone — never into a log
//! line, the dashboard, /api, /metrics, the history database or an error (docs/protocols.md).
//! All traffic goes to loopback ports this test opened; every wait is bounded.

use super::common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const PASSWORD: &str = "pr0xyS3cret";
/// base64("alice:pr0xyS3cret"): the Proxy-Authorization the proxy, and only it, may see.
const BASIC: &str = "YWxpY2U6cHIweHlTM2NyZXQ=";

pub fn tests() -> Vec<(&'static str, Need, fn())> {
    vec![("proxy::a_proxy_password_goes_to_the_proxy_alone", Need::met(), a_proxy_password_goes_to_the_proxy_alone)]
}

/// A proxy that wants credentials it never accepts: records each request head, answers 407.
struct Proxy {
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start() -> (u16, Proxy) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (heads, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (h, s) = (heads.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while buf.len() < 64 << 10 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                h.lock().unwrap().push(String::from_utf8_lossy(&buf).into_owned());
                let _ = c.write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"relay\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        (port, Proxy { heads, stop })
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn a_proxy_password_goes_to_the_proxy_alone() {
    let dir = TempDir::new("proxy-secret");
    let (svc_port, listen) = (free_port(), free_port());
    let (proxy_port, proxy) = Proxy::start();
    let svc = Service::start(svc_port);
    let cfg = config_urls(
        &dir,
        listen,
        &[("api", svc_port)],
        &[
            ("plain", "webhook", "http://alerts.relay.invalid:8080/hook".into()),
            ("tls", "webhook", "https://alerts.relay.invalid:8443/hook".into()),
        ],
    );
    let proxy_url = format!("http://alice:{PASSWORD}@127.0.0.1:{proxy_port}");
    let env: Vec<(&str, String)> =
        ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"].iter().map(|v| (*v, proxy_url.clone())).collect();
    let mut env = env;
    env.push(("CONNDOC_LOG", "debug".into()));
    let mut seen: Vec<(String, String)> = Vec::new();
    let check = Command::new(conndoc_bin())
        .args(["watch", "--check-config"])
        .arg(&cfg)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    seen.push(("--check-config".into(), format!("{check:?}")));
    let d = Daemon::start_with_env(&cfg, addr(listen), &dir.path("log"), &env);
    d.wait_state("api", "up", T);
    svc.stop();
    d.wait_state("api", "down", T);
    wait_for(T, "both deliveries refused by the proxy, logged", || {
        let log = d.log_text();
        (log.contains("to plain failed") && log.contains("to tls failed")).then_some(())
    });
    let heads = proxy.heads();
    assert!(heads.iter().any(|h| h.starts_with("POST http://alerts.relay.invalid:8080/hook ")), "{heads:?}");
    assert!(heads.iter().any(|h| h.starts_with("CONNECT alerts.relay.invalid:8443 ")), "{heads:?}");
    for h in &heads {
        // Deliveries only: the health checks and the diagnosis of the target never came here.
        let line = h.lines().next().unwrap_or("");
        assert!(line.contains("alerts.relay.invalid:"), "not a delivery through the proxy: {h}");
        assert!(
            h.to_ascii_lowercase().contains(&format!("proxy-authorization: basic {}", BASIC.to_ascii_lowercase())),
            "{h}"
        );
    }
    for path in ["/", "/target/api", "/api/targets", "/api/targets/api", "/metrics"] {
        seen.push((path.into(), http_get(addr(listen), path).map(|r| r.1).unwrap_or_default()));
    }
    let log = d.log.clone();
    assert_eq!(d.terminate(), Some(0));
    seen.push(("log".into(), std::fs::read_to_string(&log).unwrap_or_default()));
    // Every byte of the database files (the WAL too), whatever table a text landed in.
    for e in std::fs::read_dir(&dir.0).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("history.db") {
            seen.push((p.display().to_string(), String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()));
        }
    }
    for (what, text) in &seen {
        for s in [PASSWORD, BASIC] {
            assert!(!text.contains(s), "{s} in {what}: {text}");
        }
    }
}
