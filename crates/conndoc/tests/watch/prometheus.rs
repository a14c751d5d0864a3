//! A real Prometheus (Debian package) scrapes the daemon over loopback; its query API
//! returns the targets' up metric and cause. Also: `promtool check rules` and
//! `promtool test rules` on the shipped rules, and every query of the shipped Grafana
//! dashboard is accepted by the real Prometheus.

use super::common::*;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(prom: std::net::SocketAddr, q: &str) -> Option<Value> {
    let (code, body) = http_get(prom, &format!("/api/v1/query?query={}", enc(q)))?;
    let v: Value = serde_json::from_str(&body).ok()?;
    if code != 200 {
        return Some(v);
    }
    Some(v)
}

pub fn prometheus_scrapes_target_up_and_cause() {
    let prom_bin = which("prometheus").expect("checked by the trial's requirement");
    let dir = TempDir::new("prom");
    let (p_up, p_down, listen, prom_port) = (free_port(), free_port(), free_port(), free_port());
    let cfg = config(&dir, listen, &[("web", p_up), ("gone", p_down)], &[]);
    let _svc = Service::start(p_up);
    let d = Daemon::start(&cfg, ([127, 0, 0, 1], listen).into(), &dir.path("log"));
    d.wait_state("web", "up", Duration::from_secs(20));
    d.wait_state("gone", "down", Duration::from_secs(20));

    let pcfg = dir.path("prometheus.yml");
    std::fs::write(
        &pcfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: conndoc\n    static_configs:\n      - targets: ['127.0.0.1:{listen}']\n",
            repo().join("deploy/prometheus/conndoc-rules.yml").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path("prometheus.log")).unwrap();
    let _prom = Kill(
        Command::new(prom_bin)
            .arg(format!("--config.file={}", pcfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let prom: std::net::SocketAddr = ([127, 0, 0, 1], prom_port).into();
    let t = Duration::from_secs(60);
    let value_of = |q: &str| -> Option<(Value, String)> {
        let v = query(prom, q)?;
        let r = v["data"]["result"].as_array()?.first()?.clone();
        let val = r["value"][1].as_str()?.to_string();
        Some((r["metric"].clone(), val))
    };
    let (m, v) =
        wait_for(t, "Prometheus to return conndoc_target_up for web", || value_of("conndoc_target_up{target=\"web\"}"));
    assert_eq!(v, "1");
    assert_eq!(m["job"], "conndoc");
    assert_eq!(m["team"], "core", "target labels are exported");
    let (_, v) = value_of("conndoc_target_up{target=\"gone\"}").unwrap();
    assert_eq!(v, "0");
    let (m, _) = value_of("conndoc_target_cause{target=\"gone\"}").unwrap();
    assert_eq!(m["cause"], "no-listener");
    // The histogram and the counters came through the OpenMetrics parser too.
    let (_, v) = value_of("sum(conndoc_probe_duration_seconds_count{target=\"web\"})").unwrap();
    assert!(v.parse::<f64>().unwrap() >= 1.0, "{v}");
    let (_, v) = value_of("conndoc_probe_failures_total{target=\"gone\",cause=\"no-listener\"}").unwrap();
    assert!(v.parse::<f64>().unwrap() >= 1.0, "{v}");

    // The shipped alert fires with the cause as a label.
    let alert = wait_for(t, "ConndocTargetDown to fire in Prometheus", || {
        let (_, body) = http_get(prom, "/api/v1/alerts")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["alerts"].as_array()?.iter().find(|a| a["labels"]["alertname"] == "ConndocTargetDown").cloned()
    });
    assert_eq!(alert["labels"]["target"], "gone");
    assert_eq!(alert["labels"]["cause"], "no-listener");
    assert_eq!(alert["annotations"]["summary"], "gone is down: no-listener");

    // Every query of the Grafana dashboard is valid PromQL for a real Prometheus.
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/conndoc-watch.json")).unwrap())
            .unwrap();
    let mut n = 0;
    for p in dash["panels"].as_array().unwrap() {
        for tg in p["targets"].as_array().unwrap() {
            let q = tg["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$target", ".*")
                .replace("$__rate_interval", "1m");
            let v = query(prom, &q).unwrap();
            assert_eq!(v["status"], "success", "panel {:?}: {q}: {v}", p["title"]);
            n += 1;
        }
    }
    assert!(n >= 10);
    assert_eq!(d.terminate(), Some(0));
}

pub fn promtool_checks_and_tests_the_rules() {
    let promtool = which("promtool").expect("checked by the trial's requirement");
    let dir = repo().join("deploy/prometheus");
    let out = Command::new(&promtool).args(["check", "rules", "conndoc-rules.yml"]).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out =
        Command::new(&promtool).args(["test", "rules", "conndoc-rules.test.yml"]).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
