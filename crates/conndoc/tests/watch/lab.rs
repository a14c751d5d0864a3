//! Lab targets turned off and on during a run: two network namespaces joined by a veth
//! pair (created inside them; nothing is added to the machine's namespace), a server in one,
//! the daemon in the other. The server is stopped and started, then a firewall rule in the
//! server namespace drops the SYNs and is removed; the daemon's history database shows each
//! transition with the diagnosed cause. Needs root; skipped (visibly) otherwise.

use super::common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SERVER_ENV: &str = "CONNDOC_WATCH_TEST_SERVER";

/// This test binary re-executed inside the server namespace (called first by main):
/// accept and hold connections on the given address.
pub fn server_child() {
    if let Ok(addr) = std::env::var(SERVER_ENV) {
        let l = std::net::TcpListener::bind(&addr).unwrap_or_else(|e| {
            eprintln!("bind {addr}: {e}");
            std::process::exit(2)
        });
        // Ends when the test kills it (bounded by the test's own deadlines). Holds what it
        // accepts (newest 256), as a healthy service does.
        let mut held = std::collections::VecDeque::new();
        for c in l.incoming().flatten() {
            if held.len() == 256 {
                held.pop_front();
            }
            held.push_back(c);
        }
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

struct Lab {
    client: String,
    server: String,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.client]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.server]).status();
    }
}

fn start_server(lab: &Lab) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &lab.server])
        .arg(std::env::current_exe().unwrap())
        .env(SERVER_ENV, "10.213.0.2:8080")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn state(db: &std::path::Path) -> Option<(String, Option<String>)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    c.query_row("SELECT state, cause FROM target_state WHERE name='app'", [], |r| Ok((r.get(0)?, r.get(1)?))).ok()
}

fn wait_state(db: &std::path::Path, want: &str, log: &std::path::Path) -> Option<String> {
    wait_for(Duration::from_secs(30), &format!("app to be {want} (log {})", log.display()), || {
        state(db).filter(|(s, c)| s == want && (want != "down" || c.is_some())).map(|(_, c)| c)
    })
}

pub fn lab_target_off_on_and_firewalled() {
    let id = std::process::id();
    let mut lab = Lab { client: format!("cdw{id}c"), server: format!("cdw{id}s"), children: Vec::new() };
    sh(&["ip", "netns", "add", &lab.client]);
    sh(&["ip", "netns", "add", &lab.server]);
    let (c, s) = (lab.client.clone(), lab.server.clone());
    sh(&["ip", "-n", &c, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &s]);
    sh(&["ip", "-n", &c, "addr", "add", "10.213.0.1/24", "dev", "va"]);
    sh(&["ip", "-n", &s, "addr", "add", "10.213.0.2/24", "dev", "vb"]);
    for (ns, dev) in [(&c, "va"), (&s, "vb")] {
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    lab.children.push(start_server(&lab));

    let dir = TempDir::new("lab");
    let db = dir.path("history.db");
    let log = dir.path("log");
    let cfg = dir.path("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:9464\"\nhistory = \"{}\"\n\n[[target]]\nname = \"app\"\nurl = \"tcp://10.213.0.2:8080\"\n\
             interval = \"400ms\"\ntimeout = \"300ms\"\nfailures_before_down = 2\nsuccesses_before_up = 2\nnetns = \"{s}\"\n",
            db.display()
        ),
    )
    .unwrap();
    let logf = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &c]);
    cmd.arg(conndoc_bin()).arg("watch").arg("--config").arg(&cfg);
    lab.children.push(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf).spawn().unwrap());

    wait_state(&db, "up", &log);
    // Off: nothing listens any more.
    let mut srv = lab.children.remove(0);
    srv.kill().unwrap();
    srv.wait().unwrap();
    assert_eq!(wait_state(&db, "down", &log).as_deref(), Some("no-listener"));
    // On again.
    lab.children.push(start_server(&lab));
    wait_state(&db, "up", &log);
    // A firewall in the server namespace drops the SYNs: the checks time out, and the
    // diagnosis (the target's namespace is inspected, `netns` in the config) names the rule.
    sh(&["ip", "netns", "exec", &s, "nft", "add table inet cdw; add chain inet cdw in { type filter hook input priority 0; }; add rule inet cdw in tcp dport 8080 drop"]);
    let cause = wait_state(&db, "down", &log).unwrap_or_default();
    assert!(cause == "firewall-drop", "cause {cause:?}; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    eprintln!("firewalled lab target diagnosed as {cause}");
    sh(&["ip", "netns", "exec", &s, "nft", "delete table inet cdw"]);
    wait_state(&db, "up", &log);
    // Every transition is in the history with its cause.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut st = conn.prepare("SELECT from_state, to_state, cause FROM events WHERE target='app' ORDER BY id").unwrap();
    let ev: Vec<(String, String, Option<String>)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap();
    let downs: Vec<_> = ev.iter().filter(|e| e.1 == "down").map(|e| e.2.clone().unwrap_or_default()).collect();
    assert_eq!(downs.len(), 2, "{ev:?}");
    assert_eq!(downs[0], "no-listener");
    assert_eq!(ev.iter().filter(|e| e.1 == "up").count(), 3, "{ev:?}");
}
