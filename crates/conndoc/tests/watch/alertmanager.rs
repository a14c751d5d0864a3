//! The `alertmanager` receiver against real Alertmanagers (Debian prometheus-alertmanager),
//! two of them on loopback ports this test opened, standing for an HA pair: both get the
//! alert with its cause label; a silence made through the API silences it; one of them down
//! for a while, then back with empty storage: the alert arrives, nothing lost; the re-sends
//! keep it open past its own `endsAt`; the target back up resolves it in both.

use super::common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

struct Am {
    child: Child,
    port: u16,
}

impl Am {
    fn start(dir: &Path, port: u16, tag: &str) -> Am {
        let cfg = dir.join("alertmanager.yml");
        std::fs::write(&cfg, "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n").unwrap();
        let log = std::fs::File::create(dir.join(format!("am-{tag}.log"))).unwrap();
        let child = Command::new(which("prometheus-alertmanager").expect("checked by the requirement"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.join(format!("am-{tag}")).display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: the two instances are independent, as conndoc must reach each.
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let am = Am { child, port };
        wait_for(T, "Alertmanager to be ready", || http_get(am.addr(), "/-/ready").filter(|r| r.0 == 200));
        am
    }
    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
    fn alerts(&self) -> Vec<Value> {
        http_get(self.addr(), "/api/v2/alerts")
            .and_then(|(c, b)| (c == 200).then(|| serde_json::from_str(&b).ok()).flatten())
            .unwrap_or_default()
    }
    /// The active (not yet ended) conndoc alert for `target`.
    fn alert(&self, target: &str) -> Option<Value> {
        self.alerts()
            .into_iter()
            .find(|a| a["labels"]["target"] == target && a["labels"]["alertname"] == "ConndocTargetDown")
    }
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Am {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post_json(a: SocketAddr, path: &str, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, out)
}

pub fn alertmanager_receives_silences_survives_downtime_and_resolves() {
    let dir = TempDir::new("alertmanager");
    let (svc_port, listen, p1, p2) = (free_port(), free_port(), free_port(), free_port());
    let am1 = Am::start(&dir.0, p1, "1");
    let am2 = Am::start(&dir.0, p2, "2");
    let svc = Service::start(svc_port);
    let cfg = dir.path("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{listen}\"\nhistory = \"{}\"\nhistory_resolution = \"1s\"\n\n\
             [[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1:{svc_port}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
             failures_before_down = 2\nsuccesses_before_up = 2\nlabels = {{ team = \"core\" }}\n\n\
             [[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurls = [\"http://127.0.0.1:{p1}\", \"http://127.0.0.1:{p2}/\"]\n\
             resend_interval = \"1s\"\ntimeout = \"1s\"\nretry_max = \"1s\"\n",
            dir.path("history.db").display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&cfg, ([127, 0, 0, 1], listen).into(), &dir.path("log"));
    d.wait_state("api", "up", T);
    svc.stop();
    d.wait_state("api", "down", T);

    // Both instances of the pair get it, with the cause as a label.
    for am in [&am1, &am2] {
        let a = wait_for(T, "the alert in Alertmanager", || am.alert("api"));
        assert_eq!(a["labels"]["cause"], "no-listener", "{a}");
        assert_eq!(a["labels"]["team"], "core", "{a}");
        assert_eq!(a["labels"]["severity"], "critical", "{a}");
        assert!(a["labels"]["instance"].as_str().is_some_and(|i| !i.is_empty()), "{a}");
        assert!(a["annotations"]["summary"].as_str().unwrap().contains("no-listener"), "{a}");
        assert!(a["annotations"]["fix"].as_str().is_some_and(|f| !f.is_empty()), "{a}");
        assert_eq!(a["annotations"]["dashboard"], format!("http://127.0.0.1:{listen}/target/api"));
        assert_eq!(a["status"]["state"], "active", "{a}");
    }

    // A silence made through Alertmanager's own API silences it.
    let (code, text) = post_json(
        am1.addr(),
        "/api/v2/silences",
        &json!({
            "matchers": [{"name": "cause", "value": "no-listener", "isRegex": false, "isEqual": true}],
            "startsAt": "2020-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "conndoc test",
            "comment": "maintenance",
        }),
    );
    assert_eq!(code, 200, "{text}");
    let a =
        wait_for(T, "the alert to be silenced", || am1.alert("api").filter(|a| a["status"]["state"] == "suppressed"));
    assert!(!a["status"]["silencedBy"].as_array().unwrap().is_empty(), "{a}");

    // The second instance goes away for a while; it comes back with no memory at all.
    am2.stop();
    wait_for(T, "failed deliveries to the stopped instance", || {
        let m = d.metrics();
        let l = m.lines().find(|l| l.starts_with("conndoc_alert_delivery_failures_total{receiver=\"am/2\"}"))?;
        (l.rsplit(' ').next()?.parse::<u64>().ok()? >= 2).then_some(())
    });
    // Meanwhile the first keeps the alert open well past one `endsAt` (4 × 1 s): the re-sends.
    std::thread::sleep(Duration::from_secs(6));
    assert!(am1.alert("api").is_some(), "re-sends keep a live alert open");
    let _ = std::fs::remove_dir_all(dir.path("am-2"));
    let am2 = Am::start(&dir.0, p2, "2");
    let a = wait_for(T, "the alert after the instance came back", || am2.alert("api"));
    assert_eq!(a["labels"]["cause"], "no-listener");
    // At most one firing alert per target waits in the outbox for an instance that is down.
    let pending = d.metrics();
    assert!(!pending.contains("conndoc_alerts_pending{receiver=\"am/2\"} 2"), "{pending}");

    // Back up: resolved in both (an ended alert leaves the active list).
    let _svc = Service::start(svc_port);
    d.wait_state("api", "up", T);
    for am in [&am1, &am2] {
        wait_for(T, "the alert to be resolved", || am.alert("api").is_none().then_some(()));
    }
    assert_eq!(d.terminate(), Some(0));
}

/// The fleet page's example configs pass the real tools: conndoc, promtool, amtool.
pub fn fleet_examples_pass_their_tools() {
    let ex = repo().join("examples/fleet");
    let out =
        Command::new(conndoc_bin()).args(["watch", "--check-config"]).arg(ex.join("watch.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("amtool").arg("check-config").arg(ex.join("alertmanager.yml")).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // prometheus.yml names the shipped rules file next to it.
    let dir = TempDir::new("fleet-prom");
    std::fs::copy(ex.join("prometheus.yml"), dir.path("prometheus.yml")).unwrap();
    std::fs::copy(repo().join("deploy/prometheus/conndoc-rules.yml"), dir.path("conndoc-rules.yml")).unwrap();
    let out =
        Command::new("promtool").args(["check", "config", "prometheus.yml"]).current_dir(&dir.0).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
