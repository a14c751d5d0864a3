//! The `conndoc watch --check-config` and `conndoc check` command lines, through the real
//! binary (built by `cargo build -p conndoc` / `cargo test --workspace`).

use super::common::*;
use std::process::Command;

fn run(bin: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("timeout").arg("120").arg(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn check_config_accepts_the_documented_examples() {
    let b = conndoc_bin();
    let dir = TempDir::new("cli-ok");
    // The minimal file, exactly as written.
    let minimal = dir.path("minimal.toml");
    std::fs::write(
        &minimal,
        "listen = \"127.0.0.1:9464\"\nhistory = \"/var/lib/conndoc/history.db\"\n\n[[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1:8100\"\ninterval = \"1s\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&b, &["watch", "--check-config", minimal.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 1 target"), "{out}");
    // The commented example in the repo.
    let ex = repo().join("examples/watch.toml");
    let (code, out, err) = run(&b, &["watch", "--check-config", ex.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // The config shipped in the Kubernetes manifest.
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/conndoc-daemonset.yaml")).unwrap();
    let toml: String = yaml
        .split("watch.toml: |\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let k8s = dir.path("k8s.toml");
    std::fs::write(&k8s, toml).unwrap();
    let (code, out, err) = run(&b, &["watch", "--check-config", k8s.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

pub fn check_config_errors_name_file_line_and_field() {
    let b = conndoc_bin();
    let dir = TempDir::new("cli-bad");
    let f = dir.path("bad.toml");
    std::fs::write(
        &f,
        "listen = \"127.0.0.1:9464\"\n\n[[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1\"\ninterval = \"soon\"\n\n[[receiver]]\nname = \"pd\"\ntype = \"pagerduty\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&b, &["watch", "--check-config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let fp = f.display().to_string();
    assert!(err.contains(&format!("{fp}:5: target[0].url: ")), "{err}");
    assert!(err.contains(&format!("{fp}:6: target[0].interval: invalid duration \"soon\"")), "{err}");
    assert!(err.contains(&format!("{fp}:8: receiver[0].routing_key: missing")), "{err}");
    // Starting with a bad file fails the same way, exit 2, without starting anything.
    let (code, _, err) = run(&b, &["watch", "--config", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&b, &["watch", "--config", "/nonexistent/watch.toml"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/watch.toml"), "{err}");
}

pub fn check_diagnoses_every_target_once() {
    let b = conndoc_bin();
    let dir = TempDir::new("cli-check");
    let (p_up, p_down) = (free_port(), free_port());
    let cfg = config(&dir, free_port(), &[("web", p_up), ("gone", p_down)], &[]);
    let _svc = Service::start(p_up);
    let c = cfg.to_str().unwrap();

    let (code, out, err) = run(&b, &["check", "--config", c]);
    assert_eq!(code, 1, "one target is down: {out}{err}");
    let row =
        |name: &str| out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_default().to_string();
    let web = row("web");
    let gone = row("gone");
    assert_eq!(web.split_whitespace().nth(1), Some("up"), "{out}");
    assert_eq!(web.split_whitespace().nth(2), Some("ok"), "{out}");
    assert_eq!(gone.split_whitespace().nth(1), Some("down"), "{out}");
    assert_eq!(gone.split_whitespace().nth(2), Some("no-listener"), "{out}");
    assert!(out.lines().next().unwrap().starts_with("TARGET"), "{out}");
    assert!(out.contains("2 targets: 1 healthy, 1 failing"), "{out}");
    assert!(!err.contains('\r'), "no progress bar when stderr is not a terminal: {err:?}");

    let (code, out, _) = run(&b, &["check", "--config", c, "--json"]);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "web");
    assert_eq!(lines[0]["state"], "up");
    assert_eq!(lines[0]["report"]["verdict"]["cause"], "ok");
    assert_eq!(lines[1]["name"], "gone");
    assert_eq!(lines[1]["report"]["verdict"]["cause"], "no-listener");
    assert_eq!(lines[1]["report"]["probes"][0]["outcome"], "refused");

    let (code, out, _) = run(&b, &["check", "--config", c, "--target", "web"]);
    assert_eq!(code, 0, "all (selected) healthy: {out}");
    let (code, _, err) = run(&b, &["check", "--config", c, "--target", "nope"]);
    assert_eq!(code, 2, "{err}");
}

/// On a terminal (a pty from util-linux `script`) a progress bar is drawn on stderr.
pub fn check_draws_a_progress_bar_on_a_terminal() {
    let b = conndoc_bin();
    let dir = TempDir::new("cli-tty");
    let (p_up, p_down) = (free_port(), free_port());
    let cfg = config(&dir, free_port(), &[("web", p_up), ("gone", p_down)], &[]);
    let _svc = Service::start(p_up);
    let cmdline = format!("{} check --config {} >/dev/null", b.display(), cfg.display());
    let out = Command::new("timeout").args(["60", "script", "-qec", &cmdline, "/dev/null"]).output().unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("\r[") && tty.contains("2/2 checked, 1 failing"), "{tty:?}");
}
