//! The daemon wired together in-process: real probes of loopback ports the test opened, the
//! real diagnosis, a real webhook receiver (crate::testkit), the HTTP views, reload and stop.

use super::*;
use crate::testkit::{get, Holder, Receiver, TempDir};
use std::sync::Mutex;

fn write_config(dir: &TempDir, targets: &[(&str, std::net::SocketAddr)], receiver: &Receiver) -> Config {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nhistory = {:?}\nhistory_resolution = \"1s\"\n\
         [defaults]\ninterval = \"200ms\"\ntimeout = \"500ms\"\nfailures_before_down = 1\nsuccesses_before_up = 1\n",
        dir.path("h.db")
    );
    for (n, a) in targets {
        text.push_str(&format!("[[target]]\nname = \"{n}\"\nurl = \"tcp://{a}\"\nlabels = {{ team = \"pay\" }}\n"));
    }
    text.push_str(&format!("[[receiver]]\nname = \"hook\"\nurl = \"{}/hook\"\nretry_max = \"1s\"\n", receiver.url()));
    let p = dir.path("watch.toml");
    std::fs::write(&p, &text).unwrap();
    crate::config::load(&p, &Overrides::default()).expect("test config")
}

/// Wait (bounded) until a snapshot (built on this read) satisfies `ok`.
async fn until(d: &Daemon, within: Duration, ok: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    let end = Instant::now() + within;
    loop {
        let s = d.read_model().snapshot();
        if ok(&s) || Instant::now() > end {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state(s: &Snapshot, name: &str) -> Option<(State, String)> {
    s.get(name).map(|v| (v.state, v.cause.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_is_diagnosed_alerted_shown_and_resolved() {
    let dir = TempDir::new("daemon-down");
    let mut hook_rx = Receiver::reserved();
    hook_rx.up().await;
    let web = Holder::on("127.0.0.1:0".parse().unwrap()).await;
    let api = Receiver::reserved().addr; // reserved and closed: refused
    let cfg = write_config(&dir, &[("api", api), ("web", web.addr)], &hook_rx);
    let seen: Arc<Mutex<Vec<(String, Transition)>>> = Arc::default();
    let s2 = seen.clone();
    let hook: ChangeHook = Arc::new(move |n: &str, t: Transition| s2.lock().unwrap().push((n.to_string(), t)));
    let r = start(cfg, Overrides::default(), Some(hook)).await.expect("start");
    let d = r.daemon().clone();

    let fired = hook_rx.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(fired.len(), 1, "one firing alert: {fired:?}");
    let a = &fired[0].body;
    assert_eq!((a["target"].as_str(), a["status"].as_str()), (Some("api"), Some("firing")), "{a}");
    assert_eq!(a["cause"], "no-listener", "the cause comes from the full diagnosis: {a}");
    assert!(a["details"].as_str().unwrap_or("").contains("no-listener"), "{a}");
    let s = until(&d, Duration::from_secs(10), |s| {
        state(s, "api").is_some_and(|x| x.1 == "no-listener") && state(s, "web").is_some_and(|x| x.0 == State::Up)
    })
    .await;
    assert_eq!(state(&s, "api"), Some((State::Down, "no-listener".into())));
    assert_eq!(state(&s, "web"), Some((State::Up, "ok".into())));
    assert_eq!(s.targets[0].name, "api", "what needs attention first");

    // The views render a snapshot built for each request, over the daemon's own HTTP server.
    let (code, body) = get(r.local_addr(), "/api/targets").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let api_row = v.as_array().and_then(|t| t.iter().find(|t| t["name"] == "api")).cloned();
    assert_eq!(api_row.as_ref().map(|t| t["cause"].clone()), Some("no-listener".into()), "{body}");
    let (_, metrics) = get(r.local_addr(), "/metrics").await;
    assert!(metrics.contains("conndoc_target_cause{target=\"api\",cause=\"no-listener\"} 1\n"), "{metrics}");
    let (code, page) = get(r.local_addr(), "/target/api").await;
    assert!(code == 200 && page.contains("no-listener"), "{code} {page}");

    // It comes back: the resolved alert follows, naming what it was.
    let _api = Holder::on(api).await;
    let got = hook_rx.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[1].body["status"].as_str(), got[1].body["cause"].as_str()),
        (Some("resolved"), Some("no-listener"))
    );
    until(&d, Duration::from_secs(10), |s| state(s, "api").is_some_and(|x| x.0 == State::Up)).await;
    assert!(d.stats().probes.load(Relaxed) > 2);

    let h = d.read_model().history.clone();
    r.stop().await;
    // The stop flushed every probe result: both targets have buckets, api with its failures.
    let (rows, flushed) = h.bucket_rows_flushed("api", 0).unwrap();
    assert!(flushed >= 1);
    assert!(rows.iter().map(|b| b.1.failures).sum::<u32>() >= 1, "{rows:?}");
    assert!(rows.iter().map(|b| b.1.count).sum::<u32>() > rows.iter().map(|b| b.1.failures).sum::<u32>());
    assert!(!h.bucket_rows_flushed("web", 0).unwrap().0.is_empty());
    let saved = h.load_states().unwrap();
    assert!(saved.iter().any(|s| s.name == "api" && s.state == State::Up), "{saved:?}");
    let seen = seen.lock().unwrap().clone();
    let api_changes: Vec<_> = seen.iter().filter(|x| x.0 == "api").map(|x| (x.1.from, x.1.to)).collect();
    assert_eq!(api_changes, [(State::Unknown, State::Down), (State::Down, State::Up)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_new_file_keeps_state_and_a_bad_one_changes_nothing() {
    let dir = TempDir::new("daemon-reload");
    let rx = Receiver::reserved();
    let (web, other) =
        (Holder::on("127.0.0.1:0".parse().unwrap()).await, Holder::on("127.0.0.1:0".parse().unwrap()).await);
    let cfg = write_config(&dir, &[("web", web.addr), ("old", other.addr)], &rx);
    let r = start(cfg, Overrides::default(), None).await.expect("start");
    let d = r.daemon().clone();
    let s = until(&d, Duration::from_secs(10), |s| s.targets.iter().all(|v| v.state == State::Up)).await;
    let since = s.get("web").map(|v| v.since_ms);
    assert!(s.targets.iter().all(|v| v.state == State::Up), "{:?}", s.targets);

    write_config(&dir, &[("web", web.addr), ("new", other.addr)], &rx);
    d.reload();
    assert_eq!(d.stats().reloads_ok.load(Relaxed), 1);
    let s = until(&d, Duration::from_secs(10), |s| s.get("new").is_some_and(|v| v.state == State::Up)).await;
    let names: Vec<_> = s.targets.iter().map(|v| v.name.as_str()).collect();
    assert!(names.contains(&"web") && names.contains(&"new") && !names.contains(&"old"), "{names:?}");
    assert_eq!(s.get("web").map(|v| v.since_ms), since, "kept with its state");

    std::fs::write(dir.path("watch.toml"), "[[target]]\nname = \"x\"\nurl = \"nope://\"\n").unwrap();
    d.reload();
    assert_eq!(d.stats().reloads_failed.load(Relaxed), 1);
    assert_eq!(d.config().targets.len(), 2, "the running config stays");
    r.stop().await;
}
