//! conndoc's hop list against Debian's `traceroute -T -n` on the same lab path (issue 14):
//! three routers, healthy and with a drop on the second router's forwarding path.

use conndoc_lab::{Lab, Scenario};
use conndoc_testsupport::{trial, Need, Tests};
use libtest_mimic::Failed;
use std::path::{Path, PathBuf};

const TARGET: &str = "10.77.3.2";

fn main() {
    let labtool = PathBuf::from(env!("CARGO_BIN_EXE_conndoc-labtool"));
    let bindir = labtool.parent().expect("binary dir").to_path_buf();
    let mut dirs = vec![bindir];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::set_var("PATH", std::env::join_paths(dirs).expect("PATH"));

    let need = match conndoc_lab::can_run() {
        Ok(()) => Need::met(),
        Err(why) => Need::missing(why),
    }
    .and(conndoc_testsupport::program("traceroute", "traceroute"))
    .and(conndoc_testsupport::program("nft", "nftables"));
    let ci = conndoc_testsupport::in_ci();
    let mut t = Tests::new();
    t.push(trial("path_hops_match_traceroute_healthy", &need, ci, || compare(None)));
    t.push(trial("path_hops_match_traceroute_drop_at_second_router", &need, ci, || compare(Some("r2"))));
    t.run()
}

/// TTL → answering address (None: nothing answered), from `traceroute -n -q 1` output.
fn traceroute_hops(out: &str) -> Vec<(u8, Option<String>)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let ttl: u8 = w.next()?.parse().ok()?;
            let a = w.next()?;
            Some((ttl, (a != "*").then(|| a.to_string())))
        })
        .collect()
}

fn compare(drop_on: Option<&str>) -> Result<(), Failed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/path/three-routers.toml");
    let s = Scenario::load(&root).map_err(|e| e.to_string())?;
    let lab = Lab::build(&s).map_err(|e| e.to_string())?;
    if let Some(r) = drop_on {
        lab.exec(
            r,
            &["sh", "-c", "nft add table inet p && nft add chain inet p forward '{ type filter hook forward priority 0; }' && nft add rule inet p forward tcp dport 7000 drop"],
        )
        .map_err(|e| e.to_string())?;
    }
    let ev_file = lab.expand("{dir}/evidence.json");
    let conndoc = env!("CARGO_BIN_EXE_conndoc");
    let cmd = format!(
        "{conndoc} diagnose --path --timeout 1s --evidence-out {ev_file} tcp://{TARGET}:7000 >/dev/null; test -s {ev_file}"
    );
    lab.exec("client", &["sh", "-c", &cmd]).map_err(|e| e.to_string())?;
    let ev: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ev_file).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let hops = ev["path"]["traces"][0]["hops"].as_array().ok_or("no path trace in the evidence")?;
    let ours: Vec<(u8, Option<String>)> = hops
        .iter()
        .map(|h| (h["ttl"].as_u64().unwrap_or(0) as u8, h["address"].as_str().map(str::to_string)))
        .collect();

    // -m 6 keeps traceroute's silent tail short; -w 1 as a user would.
    let tr = lab
        .exec("client", &["traceroute", "-T", "-n", "-q", "1", "-w", "1", "-m", "6", "-p", "7000", TARGET])
        .map_err(|e| e.to_string())?;
    let theirs = traceroute_hops(&tr);
    if theirs.is_empty() {
        return Err(format!("no hops in traceroute's output:\n{tr}").into());
    }
    for (ttl, addr) in &theirs {
        let mine = ours.iter().find(|(t, _)| t == ttl).map(|(_, a)| a.clone());
        match mine {
            Some(m) if &m == addr => {}
            _ => {
                return Err(format!(
                    "TTL {ttl}: traceroute says {addr:?}, conndoc {mine:?}\ntraceroute:\n{tr}\nconndoc: {ours:?}"
                )
                .into())
            }
        }
    }
    // conndoc's list ends where traceroute's does when the target answers.
    if drop_on.is_none() {
        let last = theirs.last().and_then(|(_, a)| a.clone());
        if last.as_deref() != Some(TARGET) || ours.len() != theirs.len() {
            return Err(format!("traceroute {theirs:?} vs conndoc {ours:?}").into());
        }
    } else if ours.iter().filter(|(_, a)| a.is_some()).count() != 2 {
        return Err(format!("expected hops 1 and 2 to answer, conndoc {ours:?}").into());
    }
    Ok(())
}
