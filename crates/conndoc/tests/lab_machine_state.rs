//! The machine is left as it was found after a docker lab (issue 10): the lab starts its
//! own dockerd, which writes firewall rules, sysctls, links, files and cgroups. This test
//! records the root namespace's state, runs a docker scenario end to end (engine started,
//! container run, conndoc run, engine stopped, lab torn down) and compares.
//!
//! It runs in a test binary of its own: the restore happens when the *last* engine of the
//! process stops, so comparing while other docker scenarios of the same process still run
//! would see their engines, not a leak.

use conndoc_testsupport::Need;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What is compared, by name: a rule dump, a sysctl, the link list, a path's existence.
type State = BTreeMap<String, String>;

/// `CMD ARGS` output, without what changes by itself (generation comments, counters);
/// `absent` when the program is not installed.
fn dump(argv: &[&str]) -> String {
    let Some(prog) = conndoc_testsupport::which(argv[0]) else { return "absent".into() };
    match Command::new(prog).args(&argv[1..]).output() {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            let lines: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    // `:INPUT ACCEPT [12:345]` → `:INPUT ACCEPT`; `counter packets 3 bytes 180` → `counter`
                    let l = l.split(" [").next().unwrap_or(l);
                    strip_counters(l)
                })
                .collect();
            format!("exit {:?}\n{}", o.status.code(), lines.join("\n"))
        }
        Err(e) => format!("could not run: {e}"),
    }
}

fn strip_counters(l: &str) -> String {
    let words: Vec<&str> = l.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if (words[i] == "packets" || words[i] == "bytes") && i + 1 < words.len() {
            i += 2;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

fn snapshot() -> State {
    let mut s = State::new();
    for argv in [
        &["iptables-save"][..],
        &["ip6tables-save"],
        &["iptables-legacy-save"],
        &["ip6tables-legacy-save"],
        &["nft", "list", "ruleset"],
    ] {
        s.insert(argv.join(" "), dump(argv));
    }
    let mut sysctls =
        vec![PathBuf::from("/proc/sys/net/ipv4/ip_forward"), PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding")];
    if let Ok(rd) = std::fs::read_dir("/proc/sys/net/bridge") {
        sysctls.extend(rd.flatten().map(|e| e.path()));
    }
    // A bridge sysctl that appears (br_netfilter loaded) is a change too: list the names.
    for p in ["/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"] {
        sysctls.push(PathBuf::from(p));
    }
    for p in sysctls {
        let v = std::fs::read_to_string(&p).map(|v| v.trim().to_string()).unwrap_or_else(|_| "absent".into());
        s.insert(p.display().to_string(), v);
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut names: Vec<String> = t
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
                .collect();
            names.sort();
            names.join(" ")
        })
        .unwrap_or_else(|e| format!("could not run ip: {e}"));
    s.insert("links of the root namespace".into(), links);
    // Files and cgroups are the machine's, not a namespace's: another engine running here
    // (another test process, a benchmark) makes and removes them on its own schedule.
    let engines = engines_running();
    if !engines.is_empty() {
        s.insert("files".into(), format!("not compared: other engines run here (pids {engines:?})"));
        return with_mounts(s);
    }
    let mut paths: Vec<PathBuf> = ["/etc/docker/key.json", "/run/docker", "/var/run/docker.sock", "/run/containerd"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        paths.extend(rd.flatten().map(|e| e.path().join("docker")));
    }
    paths.push(PathBuf::from("/sys/fs/cgroup/docker"));
    for p in paths {
        s.insert(format!("exists {}", p.display()), Path::new(&p).exists().to_string());
    }
    with_mounts(s)
}

/// dockerd and containerd processes on the machine (this process's have stopped when asked).
fn engines_running() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| matches!(c.trim(), "dockerd" | "containerd"))
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn with_mounts(mut s: State) -> State {
    // Mounts the engine makes (overlay, nsfs under its exec root) live in its private
    // mount namespace: none may show up in ours.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut engine_mounts: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| m.contains("/cdk-") || m.contains("docker") || m.contains("containerd"))
        .collect();
    engine_mounts.sort();
    s.insert("engine mounts".into(), engine_mounts.join(" "));
    s
}

/// The differences, one line per changed item. Files are compared only when no other
/// engine ran at either snapshot (the note says so on stderr).
fn diff(before: &State, after: &State) -> Vec<String> {
    let files = !(before.contains_key("files") || after.contains_key("files"));
    // Part of the comparison not made is a skip, and under CI=true a skip fails the run.
    assert!(
        files || !conndoc_testsupport::in_ci(),
        "CI=true and the files/cgroups comparison cannot run here: {}",
        before.get("files").or(after.get("files")).map(String::as_str).unwrap_or("")
    );
    if !files {
        eprintln!(
            "lab-machine-state: files and cgroups {}",
            before.get("files").or(after.get("files")).map(String::as_str).unwrap_or("")
        );
    }
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| files || (!k.starts_with("exists ") && k.as_str() != "files"))
        .filter_map(|k| {
            let b = before.get(k).map(String::as_str).unwrap_or("(missing)");
            let a = after.get(k).map(String::as_str).unwrap_or("(missing)");
            let indent = |t: &str| t.replace('\n', "\n            ");
            (a != b).then(|| format!("{k}:\n    before: {}\n    after:  {}", indent(b), indent(a)))
        })
        .collect()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/scenarios");
    let conndoc = PathBuf::from(env!("CARGO_BIN_EXE_conndoc"));
    let labtool = PathBuf::from(env!("CARGO_BIN_EXE_conndoc-labtool"));
    let mut dirs = vec![labtool.parent().expect("binary dir").to_path_buf()];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::set_var("PATH", std::env::join_paths(dirs).expect("PATH"));

    // The scenario whose engine publishes a port (DOCKER chain, DNAT, docker-proxy, docker0).
    let name = "docker-bound-loopback-dnat";
    let scenario = conndoc_lab::Scenario::load(&root.join(format!("{name}.toml")));
    let mut need = match conndoc_lab::can_run() {
        Ok(()) => Need::met(),
        Err(why) => Need::missing(why),
    };
    if let Ok(s) = &scenario {
        for r in &s.requires {
            if let Err(why) = conndoc_lab::requirement(r) {
                need = need.and(Need::missing(why));
            }
        }
    }
    let mut tests = conndoc_testsupport::Tests::new();
    let ci = conndoc_testsupport::in_ci();
    tests.push(conndoc_testsupport::trial("lab-machine-state-restored-after-docker", &need, ci, move || {
        let s = scenario.map_err(|e| format!("loading {name}: {e}"))?;
        let before = snapshot();
        let run = conndoc_lab::run_scenario(&s, &conndoc);
        // The lab is torn down (engine stopped, namespaces deleted) when run_scenario returns.
        let after = snapshot();
        let changes = diff(&before, &after);
        let mut errs = Vec::new();
        if let Err(e) = run {
            errs.push(format!("the scenario itself failed: {e}"));
        }
        if !changes.is_empty() {
            errs.push(format!(
                "the docker lab left the machine changed ({} item(s)):\n  {}",
                changes.len(),
                changes.join("\n  ")
            ));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n").into())
        }
    }));
    tests.run()
}
