//! Every benchmark script (bench/*.sh) keeps the hygiene docs/benchmarks.md relies on
//! (issue 16): it builds a network namespace of its own and deletes it on exit (so none
//! touches the machine's loopback or port ranges), prints its ratios, and records the load
//! average and the core count beside the figures. The scripts need root and real tools to
//! run (the lead runs them); this reads their text, so a new script without these fails here.

use std::path::PathBuf;

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench")
}

fn scripts() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(bench_dir())
        .expect("bench/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Scripts whose figure has no anchor tool to divide by, and why.
const NO_RATIO: &[(&str, &str)] = &[(
    "watch-callgrind.sh",
    "instructions per health check, compared build against build; bench/watch.sh has the ratio to blackbox-exporter",
)];

#[test]
fn every_bench_script_runs_in_its_own_namespace_and_records_ratios_load_and_cores() {
    let all = scripts();
    assert!(all.len() >= 10, "bench/*.sh: found only {:?}", all.iter().map(|(n, _)| n).collect::<Vec<_>>());
    let mut bad = Vec::new();
    for (name, text) in &all {
        let lower = text.to_lowercase();
        let mut missing = Vec::new();
        if !text.contains("ip netns add") {
            missing.push("makes no network namespace of its own (`ip netns add`)");
        }
        if !text.contains("ip netns del") || !text.contains("trap ") {
            missing.push("does not delete its namespace on exit (`trap` … `ip netns del`)");
        }
        // (bench/alternate.py records it as load_before/load_after for the scripts using it)
        if !["/proc/loadavg", "uptime", "load_before"].iter().any(|w| text.contains(w)) {
            missing.push("records no load average (/proc/loadavg, uptime or alternate.py's load_before)");
        }
        if !text.contains("nproc") && !text.contains("cpu_count") {
            missing.push("records no core count (nproc)");
        }
        if !lower.contains("ratio") && !NO_RATIO.iter().any(|(n, _)| n == name) {
            missing.push("prints no ratio to its anchor tool");
        }
        if !missing.is_empty() {
            bad.push(format!("bench/{name}: {}", missing.join("; ")));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_exemptions_name_scripts_that_exist() {
    let all = scripts();
    for (name, why) in NO_RATIO {
        assert!(all.iter().any(|(n, _)| n == name), "NO_RATIO names bench/{name}, which is gone ({why})");
    }
}
