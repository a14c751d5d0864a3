//! The daemon end to end with real parts: a real service port turned off and on, a real
//! webhook receiver (also down for a while), SIGHUP, SIGTERM and kill -9 of the process.

use super::common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

pub fn down_with_cause_alert_then_resolved() {
    let dir = TempDir::new("alert");
    let (svc_port, listen, hook) = (free_port(), free_port(), free_port());
    let got = Arc::new(Mutex::new(Vec::new()));
    let rx = Receiver::start(hook, got.clone());
    let cfg = config(&dir, listen, &[("api", svc_port)], &[("ops", "webhook", hook), ("chat", "slack", hook)]);
    let svc = Service::start(svc_port);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    let t = d.wait_state("api", "up", T);
    assert_eq!(t["cause"], "ok");

    svc.stop();
    let t = d.wait_state("api", "down", T);
    // The cause comes from the full diagnosis: a refused loopback port is `no-listener`.
    assert_eq!(t["cause"], "no-listener", "{t}");
    assert!(t["summary"].as_str().unwrap().contains(&svc_port.to_string()), "{t}");

    let firing = wait_for(T, "the firing alert", || {
        let b = rx.bodies();
        let g = b.iter().find(|v| v["status"] == "firing")?.clone();
        let s = b.iter().find(|v| v["text"].as_str().is_some_and(|t| t.contains("is down")))?.clone();
        Some((g, s))
    });
    assert_eq!(firing.0["target"], "api");
    assert_eq!(firing.0["state"], "down");
    assert_eq!(firing.0["cause"], "no-listener");
    assert_eq!(firing.0["labels"]["team"], "core");
    assert_eq!(firing.0["dashboard"], format!("http://127.0.0.1:{listen}/target/api"));
    assert!(firing.0["details"].as_str().unwrap().contains("no-listener"), "{}", firing.0);
    assert!(firing.1["text"].as_str().unwrap().contains("`no-listener`"), "{}", firing.1);

    let m = d.metrics();
    assert!(m.contains("conndoc_target_up{target=\"api\",team=\"core\"} 0\n"), "{m}");
    assert!(m.contains("conndoc_target_cause{target=\"api\",cause=\"no-listener\"} 1\n"), "{m}");
    assert!(m.contains("conndoc_target_transitions_total{target=\"api\",to=\"down\"} 1\n"), "{m}");
    assert!(m.contains("conndoc_probe_results_total{target=\"api\",outcome=\"refused\"}"), "{m}");
    assert!(m.ends_with("# EOF\n"));

    let _svc = Service::start(svc_port);
    d.wait_state("api", "up", T);
    let resolved = wait_for(T, "the resolved alert", || rx.bodies().into_iter().find(|v| v["status"] == "resolved"));
    assert_eq!(resolved["target"], "api");
    assert_eq!(resolved["state"], "up");
    assert_eq!(resolved["cause"], "no-listener", "resolved names what it was");
    // Exactly one firing and one resolved per receiver.
    let b = rx.bodies();
    assert_eq!(b.iter().filter(|v| v["status"] == "firing").count(), 1, "{b:?}");
    assert_eq!(b.iter().filter(|v| v["status"] == "resolved").count(), 1, "{b:?}");

    // The target page shows the stored diagnosis for people.
    let (code, page) = http_get(addr(listen), "/target/api").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("id=\"report\""), "{page}");
    assert!(page.contains("no-listener"), "{page}");
    assert!(page.contains("down → up") && page.contains("up → down"), "{page}");
    assert_eq!(http_get(addr(listen), "/target/nope").unwrap().0, 404);
    assert_eq!(d.terminate(), Some(0));
}

pub fn receiver_down_then_back_nothing_lost() {
    let dir = TempDir::new("outbox");
    let (svc_port, listen, hook) = (free_port(), free_port(), free_port());
    let cfg = config(&dir, listen, &[("db", svc_port)], &[("ops", "webhook", hook)]);
    let svc = Service::start(svc_port);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    d.wait_state("db", "up", T);
    // The receiver is down while the target fails.
    svc.stop();
    d.wait_state("db", "down", T);
    wait_for(T, "a failed delivery in the metrics", || {
        let m = d.metrics();
        let failed = m.lines().find(|l| l.starts_with("conndoc_alert_delivery_failures_total{receiver=\"ops\"}"))?;
        (failed.rsplit(' ').next()?.parse::<u64>().ok()? >= 2).then_some(())
    });
    assert!(d.metrics().contains("conndoc_alerts_pending{receiver=\"ops\"} 1\n"));
    assert!(d.log_text().contains("to ops failed"), "{}", d.log_text());
    // The target comes back while the receiver is still down: `resolved` queues behind `firing`.
    let _svc = Service::start(svc_port);
    d.wait_state("db", "up", T);
    wait_for(T, "two pending alerts", || {
        d.metrics().contains("conndoc_alerts_pending{receiver=\"ops\"} 2\n").then_some(())
    });
    // The receiver comes back: both arrive, in order.
    let got = Arc::new(Mutex::new(Vec::new()));
    let rx = Receiver::start(hook, got.clone());
    let b = wait_for(T, "both alerts after the receiver came back", || {
        let b = rx.bodies();
        (b.len() >= 2).then_some(b)
    });
    assert_eq!(b[0]["status"], "firing", "{b:?}");
    assert_eq!(b[0]["cause"], "no-listener", "{b:?}");
    assert_eq!(b[1]["status"], "resolved", "{b:?}");
    wait_for(T, "the pending gauge to drain", || {
        d.metrics().contains("conndoc_alerts_pending{receiver=\"ops\"} 0\n").then_some(())
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(rx.bodies().len(), 2, "no duplicates");
    assert_eq!(d.terminate(), Some(0));
}

pub fn kill9_and_restart_keeps_state_and_history() {
    let dir = TempDir::new("kill9");
    let (svc_port, listen, hook) = (free_port(), free_port(), free_port());
    let got = Arc::new(Mutex::new(Vec::new()));
    let rx = Receiver::start(hook, got.clone());
    let cfg = config(&dir, listen, &[("cache", svc_port)], &[("ops", "webhook", hook)]);
    let svc = Service::start(svc_port);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    d.wait_state("cache", "up", T);
    svc.stop();
    let before = d.wait_state("cache", "down", T);
    wait_for(T, "the firing alert", || rx.bodies().into_iter().find(|v| v["status"] == "firing"));
    let page_before = http_get(addr(listen), "/api/targets/cache").unwrap().1;
    let before_detail: serde_json::Value = serde_json::from_str(&page_before).unwrap();
    d.kill9();

    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    // Restored from the database at once, before any probe could decide again.
    let t = d.target("cache").unwrap();
    assert_eq!(t["state"], "down", "{t}");
    assert_eq!(t["cause"], "no-listener", "{t}");
    assert_eq!(t["since"], before["since"], "{t}");
    let after: serde_json::Value =
        serde_json::from_str(&http_get(addr(listen), "/api/targets/cache").unwrap().1).unwrap();
    assert_eq!(after["events"], before_detail["events"]);
    assert_eq!(after["report"]["verdict"]["cause"], "no-listener");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rx.bodies().iter().filter(|v| v["status"] == "firing").count(), 1, "no second alert after restart");
    // And it keeps working: back up, resolved.
    let _svc = Service::start(svc_port);
    d.wait_state("cache", "up", T);
    wait_for(T, "the resolved alert", || rx.bodies().into_iter().find(|v| v["status"] == "resolved"));
    assert_eq!(d.terminate(), Some(0));
}

pub fn sighup_reload_keeps_state_and_sigterm_flushes() {
    let dir = TempDir::new("reload");
    let (p1, p2, listen) = (free_port(), free_port(), free_port());
    let cfg = config(&dir, listen, &[("one", p1)], &[]);
    let _s1 = Service::start(p1);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    let before = d.wait_state("one", "up", T);

    // A broken file is rejected and the running config stays.
    std::fs::write(&cfg, "listen = 5\n").unwrap();
    d.signal("HUP");
    wait_for(T, "the rejected reload", || d.log_text().contains("reload rejected").then_some(()));
    assert!(d.log_text().contains("watch.toml:1: listen:"), "{}", d.log_text());
    assert_eq!(d.targets().len(), 1);

    // A second target (refused) is added; the first keeps its state and its `since`.
    config(&dir, listen, &[("one", p1), ("two", p2)], &[]);
    d.signal("HUP");
    let two = d.wait_state("two", "down", T);
    assert_eq!(two["cause"], "no-listener");
    let one = d.target("one").unwrap();
    assert_eq!(one["state"], "up");
    assert_eq!(one["since"], before["since"], "state kept across the reload");
    assert!(d.metrics().contains("conndoc_config_reloads_total{result=\"success\"} 1\n"));
    assert!(d.metrics().contains("conndoc_config_reloads_total{result=\"failure\"} 1\n"));

    let log = d.log.clone();
    assert_eq!(d.terminate(), Some(0), "graceful stop exits 0");
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("history flushed"), "{text}");
    // The downsampled probe results reached the database.
    let db = rusqlite::Connection::open(dir.path("history.db")).unwrap();
    let n: i64 = db.query_row("SELECT sum(count) FROM probes WHERE target='one'", [], |r| r.get(0)).unwrap();
    assert!(n >= 2, "{n} probe results stored");
    let mode: String = db.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

pub fn dashboard_and_api_shapes() {
    let dir = TempDir::new("api");
    let (p1, p2, listen) = (free_port(), free_port(), free_port());
    let cfg = config(&dir, listen, &[("web", p1), ("gone", p2)], &[]);
    let _s = Service::start(p1);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    d.wait_state("web", "up", T);
    d.wait_state("gone", "down", T);
    let list = d.targets();
    assert_eq!(list.len(), 2);
    for t in &list {
        assert!(t["name"].is_string() && t["state"].is_string() && t["cause"].is_string(), "{t}");
    }
    assert_eq!(list[0]["name"], "gone", "down first");
    let (code, html) = http_get(addr(listen), "/").unwrap();
    assert_eq!(code, 200);
    assert!(html.contains("<meta http-equiv=\"refresh\""));
    assert!(!html.contains("<script"), "works without JavaScript");
    assert!(html.contains("data-target=\"gone\" data-state=\"down\" data-cause=\"no-listener\""), "{html}");
    assert!(html.contains("1 down"));
    let (code, _) = http_get(addr(listen), "/api/targets/web").unwrap();
    assert_eq!(code, 200);
    // Read-only: anything but GET/HEAD is refused.
    let mut s = std::net::TcpStream::connect(addr(listen)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"POST /api/targets HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert_eq!(d.terminate(), Some(0));
}

/// A server that accepts and closes at once (a proxy whose backend is down, docs/nat.md
/// "Accepted, then closed"): the `tcp://` check fails although the connect succeeds, and
/// the target goes down with the diagnosis's cause.
pub fn accepted_then_closed_is_down_with_its_cause() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = TempDir::new("closer");
    let (port, listen) = (free_port(), free_port());
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let server = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => drop(c),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let cfg = config(&dir, listen, &[("proxy", port)], &[]);
    let d = Daemon::start(&cfg, addr(listen), &dir.path("log"));
    d.wait_state("proxy", "down", T);
    let t = wait_for(T, "the diagnosis", || d.target("proxy").filter(|t| t["cause"] != "unknown"));
    assert_eq!(t["cause"], "accepted-then-closed", "{t}");
    assert_eq!(t["last_check"], "closed", "{t}");
    let m = d.metrics();
    assert!(m.contains("conndoc_probe_results_total{target=\"proxy\",outcome=\"closed\"}"), "{m}");
    assert!(!m.contains("conndoc_target_up{target=\"proxy\",team=\"core\"} 1"), "{m}");
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert_eq!(d.terminate(), Some(0));
}
