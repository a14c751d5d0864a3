//! Hostile input against a running daemon: secrets in URLs, bad reloads, a second daemon on
//! the same history, hostile dashboard clients. All traffic goes to loopback ports these
//! tests opened; every loop is bounded in count and time.

use super::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "S3KRIT-pw";
const TOKEN: &str = "T0KEN-S3KRIT";

pub fn tests() -> Vec<(&'static str, Need, fn())> {
    let none = Need::met();
    vec![
        ("hardening::secrets_never_leave_the_daemon", none.clone(), secrets_never_leave_the_daemon),
        ("hardening::huge_durations_are_bad_input_and_a_bad_reload_keeps_running", none.clone(), huge_durations),
        ("hardening::second_daemon_on_one_history_exits_2", none.clone(), second_daemon_on_one_history_exits_2),
        ("hardening::dashboard_rejects_bad_paths_and_foreign_hosts", none.clone(), bad_paths_and_hosts),
        ("hardening::dashboard_serves_metrics_under_idle_and_slow_clients", none.clone(), idle_and_slow_clients),
        ("hardening::alerts_honour_http_proxy_and_no_proxy", none, alerts_through_a_proxy),
        (
            "hardening::every_resolved_address_is_tried",
            conndoc_testsupport::root().and(conndoc_testsupport::program("nc", "netcat-openbsd")),
            every_resolved_address_is_tried,
        ),
    ]
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("timeout").arg("60").arg(conndoc_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every text in every table of the history database, as one string.
fn dump_db(p: &std::path::Path) -> String {
    let c = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let n = st.column_count();
        let mut rows = st.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            for i in 0..n {
                if let Ok(s) = r.get::<_, String>(i) {
                    out.push_str(&s);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// A Redis password in a target URL and tokens in receiver URLs: nowhere in the API, the
/// pages, the alerts, the logs, the database or `--check-config`.
fn secrets_never_leave_the_daemon() {
    let dir = TempDir::new("leaks");
    let (up_port, down_port, listen, hook, dead_hook) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    let got = Arc::new(Mutex::new(Vec::new()));
    let rx = Receiver::start(hook, got.clone());
    let _svc = Service::start(up_port);
    let db = dir.path("history.db");
    let cfg = dir.path("watch.toml");
    let text = format!(
        "listen = \"127.0.0.1:{listen}\"\nhistory = \"{}\"\nhistory_resolution = \"1s\"\n\n\
         [[target]]\nname = \"cache\"\nurl = \"redis://:{SECRET}@127.0.0.1:{up_port}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
         failures_before_down = 2\nsuccesses_before_up = 2\n\n\
         [[target]]\nname = \"gone\"\nurl = \"redis://app:{SECRET}@127.0.0.1:{down_port}/2\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
         failures_before_down = 2\nsuccesses_before_up = 2\n\n\
         [[receiver]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{hook}/hook?token={TOKEN}\"\ntimeout = \"1s\"\nretry_max = \"1s\"\n\n\
         [[receiver]]\nname = \"chat\"\ntype = \"slack\"\nurl = \"http://127.0.0.1:{hook}/services/T0/B0/{TOKEN}\"\ntimeout = \"1s\"\nretry_max = \"1s\"\n\n\
         [[receiver]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = \"R0UT1NG\"\nurl = \"http://127.0.0.1:{hook}/v2/enqueue\"\ntimeout = \"1s\"\nretry_max = \"1s\"\n\n\
         [[receiver]]\nname = \"dead\"\nurl = \"http://user:{TOKEN}@127.0.0.1:{dead_hook}/x?token={TOKEN}\"\ntimeout = \"1s\"\nretry_max = \"1s\"\n",
        db.display()
    );
    std::fs::write(&cfg, &text).unwrap();
    let (code, out, err) = run(&["watch", "--check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!(out.clone() + &err).contains("S3KRIT"), "{out}{err}");

    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    d.wait_state("cache", "up", T);
    d.wait_state("gone", "down", T);
    let bodies = wait_for(T, "alerts at all three live receivers", || {
        let b = rx.bodies();
        let kinds = [
            b.iter().any(|v| v["version"] == "1"),
            b.iter().any(|v| v["text"].is_string()),
            b.iter().any(|v| v["event_action"] == "trigger"),
        ];
        kinds.iter().all(|k| *k).then_some(b)
    });
    wait_for(T, "two failed deliveries to the dead receiver", || {
        (d.log_text().matches("to dead failed").count() >= 2).then_some(())
    });
    // A reload whose receiver URL is broken must not quote it either.
    std::fs::write(&cfg, text.replace(&format!("http://127.0.0.1:{hook}/hook?token="), "ftp://127.0.0.1/hook?token="))
        .unwrap();
    d.signal("HUP");
    wait_for(T, "the rejected reload", || d.log_text().contains("reload rejected").then_some(()));

    let mut seen = vec![
        ("alerts", serde_json::to_string(&bodies).unwrap()),
        ("log", d.log_text()),
        ("/api/targets", http_get(addr(listen), "/api/targets").unwrap().1),
        ("/", http_get(addr(listen), "/").unwrap().1),
        ("/metrics", d.metrics()),
    ];
    for name in ["cache", "gone"] {
        seen.push(("/target/", http_get(addr(listen), &format!("/target/{name}")).unwrap().1));
        seen.push(("/api/targets/", http_get(addr(listen), &format!("/api/targets/{name}")).unwrap().1));
    }
    let api = &seen[2].1;
    assert!(api.contains("redis://:<redacted>@127.0.0.1"), "{api}");
    assert!(api.contains("redis://app:<redacted>@127.0.0.1"), "{api}");
    assert!(seen[0].1.contains("<redacted>"), "alerts carry the redacted url: {}", seen[0].1);
    assert!(seen[1].1.contains("http://127.0.0.1:") && seen[1].1.contains("/<redacted>"), "{}", seen[1].1);
    assert_eq!(d.terminate(), Some(0));
    seen.push(("history database", dump_db(&db)));
    for (what, text) in &seen {
        for s in [SECRET, TOKEN, "R0UT1NG"] {
            // PagerDuty's key is sent to PagerDuty (added at send time), nowhere else.
            if s == "R0UT1NG" && *what == "alerts" {
                continue;
            }
            assert!(!text.contains(s), "{s} in {what}: {text}");
        }
    }
    for f in ["history.db", "history.db.lock"] {
        let mode = std::fs::metadata(dir.path(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    drop(rx);
}

/// Durations beyond any range: bad input for --check-config and check (exit 2, one line
/// each), and a SIGHUP reload with them keeps the daemon and its running config.
fn huge_durations() {
    let dir = TempDir::new("durations");
    let (svc_port, listen) = (free_port(), free_port());
    let _svc = Service::start(svc_port);
    let cfg = config(&dir, listen, &[("one", svc_port)], &[]);
    let good = std::fs::read_to_string(&cfg).unwrap();
    let huge = "99999999999999999999999h";
    let variants = [
        good.replace("interval = \"200ms\"", &format!("interval = \"{huge}\"")),
        good.replace("history_resolution = \"1s\"", &format!("history_resolution = \"1s\"\nretention = \"{huge}\"")),
        good.replace(
            "history_resolution = \"1s\"",
            "history_resolution = \"1s\"\nretention = \"99999999999999999999999d\"",
        ),
        good.replace("history_resolution = \"1s\"", &format!("history_resolution = \"1s\"\nrediagnose = \"{huge}\"")),
        good.replace("timeout = \"150ms\"", "timeout = \"1e300s\""),
    ];
    for (i, v) in variants.iter().enumerate() {
        let f = dir.path(&format!("bad{i}.toml"));
        std::fs::write(&f, v).unwrap();
        for args in
            [vec!["watch", "--check-config", f.to_str().unwrap()], vec!["check", "--config", f.to_str().unwrap()]]
        {
            let (code, out, err) = run(&args);
            assert_eq!(code, 2, "{args:?}: {out}{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    let before = d.wait_state("one", "up", T);
    for (i, v) in variants.iter().enumerate() {
        std::fs::write(&cfg, v).unwrap();
        d.signal("HUP");
        wait_for(T, "the rejected reload", || {
            d.metrics()
                .contains(&format!("conndoc_config_reloads_total{{result=\"failure\"}} {}\n", i + 1))
                .then_some(())
        });
    }
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // One line per problem (a variant may have two), each reload rejected (counted above).
    assert!(log.matches("reload rejected, keeping the running config").count() >= variants.len(), "{log}");
    let after = d.target("one").expect("still running with the old config");
    assert_eq!((after["state"].clone(), after["since"].clone()), (before["state"].clone(), before["since"].clone()));
    assert_eq!(d.terminate(), Some(0));
}

fn second_daemon_on_one_history_exits_2() {
    let dir = TempDir::new("lock");
    let (svc_port, l1, l2) = (free_port(), free_port(), free_port());
    let _svc = Service::start(svc_port);
    let cfg = config(&dir, l1, &[("one", svc_port)], &[]);
    let d = Daemon::start(&cfg, addr(l1), &dir.path("log"));
    let (code, _, err) = run(&["watch", "--config", cfg.to_str().unwrap(), "--listen", &format!("127.0.0.1:{l2}")]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("in use by another conndoc watch"), "{err}");
    assert!(http_get(addr(l2), "/-/healthy").is_none(), "the second one must not serve");
    assert_eq!(d.terminate(), Some(0));
}

/// The raw answer to raw request bytes (status code, whole text).
fn raw(a: SocketAddr, req: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

fn bad_paths_and_hosts() {
    let dir = TempDir::new("paths");
    let (svc_port, listen) = (free_port(), free_port());
    let _svc = Service::start(svc_port);
    let cfg = config(&dir, listen, &[("one", svc_port)], &[]);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    let a = addr(listen);
    // Percent escapes cut inside a UTF-8 character, raw UTF-8 and invalid bytes in the path.
    for path in [&b"/target/%a\xc3\xa9"[..], b"/target/%C3", b"/api/targets/%ff%fe", b"/target/\xff"] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(format!(" HTTP/1.1\r\nHost: 127.0.0.1:{listen}\r\nConnection: close\r\n\r\n").as_bytes());
        let (code, text) = raw(a, &req);
        assert!(code == 400 || code == 404, "{}: {text}", String::from_utf8_lossy(path));
    }
    assert_eq!(http_get(a, "/-/healthy").unwrap().0, 200, "still serving");
    // DNS rebinding: a name that is not this dashboard's is refused; IP literals and localhost answer.
    let get = |host: &str| {
        raw(a, format!("GET /api/targets HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
    };
    let (code, text) = get("evil.example:80");
    assert_eq!(code, 421, "{text}");
    assert!(!text.contains("\"one\""), "{text}");
    for ok in [format!("127.0.0.1:{listen}"), format!("localhost:{listen}")] {
        let (code, text) = get(&ok);
        assert_eq!(code, 200, "{ok}: {text}");
    }
    // An oversized head is refused, not buffered.
    let big = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(64 * 1024));
    let (code, _) = raw(a, big.as_bytes());
    assert!(code == 431 || code == 400 || code == 0, "{code}");
    // Keep-alive works: two requests on one connection.
    let (_, text) = raw(
        a,
        "GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            .as_bytes(),
    );
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(d.terminate(), Some(0));
}

fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// `/metrics` within 2 s, five times in a row.
fn metrics_answer(a: SocketAddr, what: &str) {
    for i in 0..5 {
        let start = Instant::now();
        let r = http_get(a, "/metrics");
        assert!(
            r.as_ref().is_some_and(|r| r.0 == 200 && r.1.ends_with("# EOF\n"))
                && start.elapsed() < Duration::from_secs(2),
            "{what}: /metrics attempt {i} failed after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn idle_and_slow_clients() {
    let dir = TempDir::new("slow");
    let (svc_port, listen) = (free_port(), free_port());
    let _svc = Service::start(svc_port);
    let cfg = config(&dir, listen, &[("one", svc_port)], &[]);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    let a = addr(listen);
    // 300 connections that never send a byte.
    let idle: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()).collect();
    assert_eq!(idle.len(), 300);
    metrics_answer(a, "300 idle connections");
    drop(idle);
    // Up to 2,000 slow clients, one byte each every 5 s, for 12 s; shed ones reconnect
    // (at most 2,000 reconnects in all).
    let n = 2000.min(open_files_limit().saturating_sub(200) / 2);
    let mut slow: Vec<TcpStream> =
        (0..n).filter_map(|_| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()).collect();
    for s in &slow {
        s.set_nonblocking(true).unwrap();
    }
    let stop = Instant::now() + Duration::from_secs(12);
    let mut reconnects = 0;
    let mut next_byte = Instant::now();
    let mut checks = 0;
    while Instant::now() < stop {
        if Instant::now() >= next_byte {
            next_byte += Duration::from_secs(5);
            for s in slow.iter_mut() {
                if s.write(b"G").is_err() && reconnects < 2000 {
                    if let Ok(c) = TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
                        let _ = c.set_nonblocking(true);
                        let _ = (&c).write(b"G");
                        *s = c;
                        reconnects += 1;
                    }
                }
            }
        }
        metrics_answer(a, &format!("{n} slow connections"));
        checks += 1;
    }
    assert!(checks >= 3, "{checks}");
    eprintln!("{n} slow clients, {reconnects} reconnects: /metrics answered {} times", checks * 5);
    drop(slow);
    assert_eq!(http_get(a, "/-/healthy").unwrap().0, 200);
    assert_eq!(d.terminate(), Some(0));
}

/// HTTP_PROXY carries deliveries to a name only the proxy knows; NO_PROXY sends the other
/// receiver's directly.
fn alerts_through_a_proxy() {
    let dir = TempDir::new("proxy");
    let (svc_port, listen, proxy_port, hook) = (free_port(), free_port(), free_port(), free_port());
    let proxy = Receiver::start(proxy_port, Arc::new(Mutex::new(Vec::new())));
    let direct = Receiver::start(hook, Arc::new(Mutex::new(Vec::new())));
    let svc = Service::start(svc_port);
    let cfg = config_urls(
        &dir,
        listen,
        &[("api", svc_port)],
        &[
            ("far", "webhook", "http://alerts.relay.invalid:8080/hook".into()),
            ("near", "webhook", format!("http://127.0.0.1:{hook}/hook")),
        ],
    );
    let env = [("HTTP_PROXY", format!("http://127.0.0.1:{proxy_port}")), ("NO_PROXY", "127.0.0.1".to_string())];
    let d = Daemon::start_with_env(&cfg, addr(listen), &dir.path("log"), &env);
    d.wait_state("api", "up", T);
    svc.stop();
    d.wait_state("api", "down", T);
    wait_for(T, "the alert through the proxy and the direct one", || {
        (!proxy.bodies().is_empty() && !direct.bodies().is_empty()).then_some(())
    });
    let via_proxy = proxy.lines.lock().unwrap().clone();
    assert!(via_proxy.iter().all(|l| l.starts_with("POST http://alerts.relay.invalid:8080/hook ")), "{via_proxy:?}");
    let direct_lines = direct.lines.lock().unwrap().clone();
    assert!(direct_lines.iter().all(|l| l.starts_with("POST /hook ")), "NO_PROXY: {direct_lines:?}");
    assert_eq!(proxy.bodies()[0]["cause"], "no-listener");
    assert_eq!(d.terminate(), Some(0));
}

/// A network namespace with its own hosts file (`ip netns exec` mounts /etc/netns/NAME/hosts
/// over /etc/hosts), removed with everything in it on drop.
struct HostsNs {
    name: String,
    children: Vec<std::process::Child>,
}

impl Drop for HostsNs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// A receiver name resolving to two addresses, the first refusing: the delivery goes on to
/// the second (every resolved address is tried).
fn every_resolved_address_is_tried() {
    let name = format!("cdwh{}", std::process::id());
    let mut ns = HostsNs { name: name.clone(), children: Vec::new() };
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    std::fs::create_dir_all(format!("/etc/netns/{name}")).unwrap();
    std::fs::write(format!("/etc/netns/{name}/hosts"), "127.0.0.2 relay.test\n127.0.0.3 relay.test\n").unwrap();
    assert!(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap().success());
    let dir = TempDir::new("addrs");
    let got = dir.path("received");
    // The second address only: netcat prints the request it gets.
    let out = std::fs::File::create(&got).unwrap();
    ns.children.push(
        Command::new("ip")
            .args(["netns", "exec", &name, "nc", "-l", "127.0.0.3", "8080"])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let cfg = dir.path("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            "history = \"{}\"\n[[target]]\nname = \"gone\"\nurl = \"tcp://127.0.0.1:1\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
             failures_before_down = 1\n[[receiver]]\nname = \"relay\"\nurl = \"http://relay.test:8080/hook\"\ntimeout = \"2s\"\n",
            dir.path("history.db").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path("log")).unwrap();
    ns.children.push(
        Command::new("ip")
            .args(["netns", "exec", &name])
            .arg(conndoc_bin())
            .args(["watch", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let text = wait_for(T, "the alert at the second address", || {
        std::fs::read_to_string(&got).ok().filter(|t| t.contains("POST /hook HTTP/1.1"))
    });
    assert!(text.contains("\"cause\":\"no-listener\""), "{text}");
}
