//! The outbox alone: a real History file, real HTTP receivers on loopback ports the tests
//! opened (crate::testkit), the real delivery loop.

use super::*;
use crate::testkit::{Receiver, TempDir};
use std::time::Instant;

fn config(dir: &TempDir, receivers: &str) -> Config {
    let text = format!(
        "history = {:?}\n[[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1:9\"\nlabels = {{ team = \"pay\" }}\n\
         [[target]]\nname = \"db\"\nurl = \"tcp://127.0.0.1:10\"\n{receivers}",
        dir.path("h.db")
    );
    crate::config::load_str(&dir.path("watch.toml"), &text, &Default::default()).expect("test config")
}

fn outbox(h: &Arc<History>, cfg: &Config) -> Arc<Outbox> {
    Arc::new(Outbox::new(h.clone(), Arc::new(Stats::default()), "node1".into(), &cfg.receivers))
}

/// A webhook receiver `hook` on a reserved port (refusing until it is up), a config that
/// sends to it (retries at most 1 s apart), its history and the outbox. The directory
/// lives as long as the returned value.
fn with_hook(tag: &str) -> (TempDir, Receiver, Config, Arc<History>, Arc<Outbox>) {
    let dir = TempDir::new(tag);
    let rx = Receiver::reserved();
    let cfg =
        config(&dir, &format!("[[receiver]]\nname = \"hook\"\nurl = \"{}/hook\"\nretry_max = \"1s\"\n", rx.url()));
    let h = Arc::new(History::open(&cfg.history).unwrap());
    let o = outbox(&h, &cfg);
    (dir, rx, cfg, h, o)
}

fn alert<'a>(status: &'a str, cause: &'a str) -> Alert<'a> {
    Alert { status, cause, summary: "nothing listens", details: None, fix: Some("start it"), container: None }
}

/// The delivery loop of `o` on `cfg`, stopped when the returned sender is dropped or sent to.
fn deliver(o: &Arc<Outbox>, cfg: &Config) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, rx) = watch::channel(false);
    let cfg = Arc::new(cfg.clone());
    (stop, tokio::spawn(o.clone().deliver_loop(move || cfg.clone(), rx)))
}

async fn stop(s: (watch::Sender<bool>, tokio::task::JoinHandle<()>)) {
    let _ = s.0.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), s.1).await.expect("the delivery loop stops");
}

fn pending(h: &History) -> HashMap<String, u64> {
    h.pending_counts().unwrap().into_iter().collect()
}

fn label<'a>(r: &'a crate::testkit::Received, k: &str) -> &'a str {
    r.body[0]["labels"][k].as_str().unwrap_or("")
}

#[tokio::test]
async fn queued_alerts_survive_a_restart_and_are_delivered_after_it() {
    let (_dir, mut rx, cfg, h, o) = with_hook("outbox-restart");
    let a = o.build(&cfg, &cfg.targets[0], &alert("firing", "refused"), 7, 1_000, None);
    assert_eq!(a.len(), 1);
    o.queue(7, a).await;
    // The daemon dies before any delivery.
    drop((o, h));
    let h = Arc::new(History::open(&cfg.history).unwrap());
    assert_eq!(pending(&h).get("hook"), Some(&1), "the alert is still queued after the restart");
    rx.up().await;
    let o = outbox(&h, &cfg);
    let d = deliver(&o, &cfg);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    stop(d).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].body["status"], "firing");
    assert_eq!(got[0].body["cause"], "refused");
    assert_eq!(got[0].body["event_id"], 7);
    assert!(pending(&h).is_empty(), "delivered alerts leave the queue: {:?}", pending(&h));
}

#[tokio::test]
async fn a_failed_delivery_is_retried_after_its_backoff() {
    let (_dir, mut rx, cfg, h, o) = with_hook("outbox-retry");
    let start = Instant::now();
    o.queue(1, o.build(&cfg, &cfg.targets[0], &alert("firing", "refused"), 1, 0, None)).await;
    let d = deliver(&o, &cfg);
    // The first attempt is refused: the alert stays, with its next attempt 1 s later.
    let end = Instant::now() + Duration::from_secs(5);
    while o.stats.alerts_failed.lock().unwrap().get("hook").is_none() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(o.stats.alerts_failed.lock().unwrap().get("hook"), Some(&1));
    let now = now_ms();
    assert!(h.due_alerts(now, 10).unwrap().is_empty(), "not due again before the backoff");
    let later = h.due_alerts(now + 1_100, 10).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].attempts, 1);
    rx.up().await;
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let took = start.elapsed();
    stop(d).await;
    assert_eq!(got.len(), 1, "delivered once the receiver is back: {got:?}");
    assert!(took >= Duration::from_millis(900), "retried before its 1 s backoff: {took:?}");
    assert_eq!(o.stats.alerts_sent.lock().unwrap().get("hook"), Some(&1));
    // Backoff doubles and stops at retry_max.
    assert_eq!(alert::backoff(0, Duration::from_secs(60)), Duration::from_secs(1));
    assert_eq!(alert::backoff(3, Duration::from_secs(60)), Duration::from_secs(8));
    assert_eq!(alert::backoff(30, Duration::from_secs(60)), Duration::from_secs(60));
}

#[tokio::test]
async fn resolved_never_overtakes_firing_while_a_receiver_is_down() {
    let (_dir, mut rx, cfg, h, o) = with_hook("outbox-order");
    let d = deliver(&o, &cfg);
    for (t, id) in [(0, 1), (1, 2)] {
        o.queue(id, o.build(&cfg, &cfg.targets[t], &alert("firing", "refused"), id, 0, None)).await;
    }
    o.queue(1, o.build(&cfg, &cfg.targets[0], &alert("resolved", "refused"), 3, 0, None)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the head was tried: while it waits for its backoff, the later alerts of that
    // receiver wait behind it (none is tried, none can overtake it).
    let q = h.due_alerts(now_ms() + 60_000, 10).unwrap();
    assert_eq!(q.iter().map(|a| a.attempts).collect::<Vec<_>>(), vec![1, 0, 0], "{q:?}");
    rx.up().await;
    let got = rx.wait_for(3, Duration::from_secs(10)).await;
    stop(d).await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| (r.body["target"].as_str().unwrap().into(), r.body["status"].as_str().unwrap().into()))
        .collect();
    let want = [("api", "firing"), ("db", "firing"), ("api", "resolved")];
    assert_eq!(seen, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

#[tokio::test]
async fn every_alertmanager_of_a_pair_gets_every_alert_and_one_down_loses_nothing() {
    let dir = TempDir::new("outbox-ha");
    let (mut am1, mut am2) = (Receiver::reserved(), Receiver::reserved());
    let cfg = config(
        &dir,
        &format!(
            "[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurls = [\"{}\", \"{}\"]\nretry_max = \"1s\"\n",
            am1.url(),
            am2.url()
        ),
    );
    assert_eq!(cfg.receivers.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["am/1", "am/2"]);
    let h = Arc::new(History::open(&cfg.history).unwrap());
    let o = outbox(&h, &cfg);
    am1.up().await;
    let d = deliver(&o, &cfg);
    o.queue(1, o.build(&cfg, &cfg.targets[0], &alert("firing", "refused"), 1, 0, None)).await;
    o.queue(2, o.build(&cfg, &cfg.targets[1], &alert("firing", "timeout"), 2, 0, None)).await;
    o.queue(1, o.build(&cfg, &cfg.targets[0], &alert("resolved", "refused"), 3, 0, None)).await;
    // The instance that is up gets all three without waiting for the one that is down.
    let got1 = am1.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got1.len(), 3, "{got1:?}");
    assert_eq!(pending(&h).get("am/2"), Some(&3), "the down instance's alerts wait: {:?}", pending(&h));
    am2.up().await;
    let got2 = am2.wait_for(3, Duration::from_secs(10)).await;
    // Now the other one goes away for a while: the same holds the other way round.
    am1.down().await;
    o.queue(4, o.build(&cfg, &cfg.targets[1], &alert("resolved", "timeout"), 4, 0, None)).await;
    assert_eq!(am2.wait_for(4, Duration::from_secs(10)).await.len(), 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pending(&h).get("am/1"), Some(&1), "{:?}", pending(&h));
    am1.up().await;
    assert_eq!(am1.wait_for(4, Duration::from_secs(10)).await.len(), 4);
    stop(d).await;
    for got in [&got1, &got2] {
        assert!(got.iter().all(|r| r.path == "/api/v2/alerts"), "{got:?}");
        let seen: Vec<_> = got.iter().map(|r| (label(r, "target"), label(r, "cause"))).collect();
        assert_eq!(seen, [("api", "refused"), ("db", "timeout"), ("api", "refused")]);
        assert_eq!(label(&got[0], "alertname"), alert::ALERTNAME);
        assert_eq!(label(&got[0], "team"), "pay");
        assert_eq!(label(&got[0], "instance"), "node1");
        // Firing: endsAt ahead (set at send time); resolved: endsAt is the resolve time.
        assert!(got[0].body[0]["endsAt"].is_string());
        assert_eq!(got[0].body[0]["annotations"]["fix"], "start it");
    }
    assert!(pending(&h).is_empty(), "{:?}", pending(&h));
}

#[tokio::test]
async fn firing_alerts_are_resent_to_alertmanager_once_per_interval_without_a_backlog() {
    let dir = TempDir::new("outbox-resend");
    let cfg = config(
        &dir,
        "[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://127.0.0.1:9\"\nresend_interval = \"1s\"\n\
         [[receiver]]\nname = \"hook\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let h = Arc::new(History::open(&cfg.history).unwrap());
    let o = outbox(&h, &cfg);
    let first = o.build(&cfg, &cfg.targets[0], &alert("firing", "refused"), 1, 0, None);
    assert_eq!(first.len(), 2, "one per receiver");
    let f = Firing {
        t: Arc::new(cfg.targets[0].clone()),
        cause: "refused".into(),
        summary: "nothing listens".into(),
        fix: None,
        container: None,
        event_id: 1,
        down_since: 0,
    };
    let now = now_ms();
    o.resend(&cfg, std::slice::from_ref(&f), now + 500).await;
    assert!(pending(&h).is_empty(), "not yet: the interval has not passed");
    o.resend(&cfg, std::slice::from_ref(&f), now + 1_500).await;
    assert_eq!(pending(&h), HashMap::from([("am".to_string(), 1)]), "Alertmanager only, not the webhook");
    // Still undelivered: no second copy queues behind it.
    o.resend(&cfg, std::slice::from_ref(&f), now + 3_000).await;
    assert_eq!(pending(&h).get("am"), Some(&1));
    let q = h.due_alerts(now_ms(), 10).unwrap();
    h.delivered(q[0].id, now_ms()).unwrap();
    o.resend(&cfg, std::slice::from_ref(&f), now + 4_500).await;
    assert_eq!(pending(&h).get("am"), Some(&1), "delivered, the interval passed: sent again");
}
