//! The rules against recorded facts: every file in tests/evidence/ is the evidence a real
//! lab scenario gathered (`CONNDOC_LAB_EVIDENCE_DIR=… cargo test -p conndoc --test lab`),
//! and replaying it must give the verdict that scenario expects. Runs without root.

use std::path::Path;

#[test]
fn recorded_evidence_gives_the_scenarios_verdict() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/evidence");
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/scenarios");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let scenario = std::fs::read_to_string(scenarios.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("{name}: evidence without a scenario file: {e}"));
        let scenario: toml::Value = toml::from_str(&scenario).unwrap();
        let Some(want) = scenario.get("expect").and_then(|e| e.get("cause")).and_then(|c| c.as_str()) else {
            continue;
        };
        let ev: conndoc_facts::Evidence =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Each file says which conndoc recorded it, so a file older than a gatherer it
        // depends on can be told apart (and re-recorded: docs/lab.md).
        if ev.conndoc_version.is_none() {
            failures.push(format!("{name}: no conndoc_version (re-record it from the lab)"));
        }
        // Recorded as root, nftables rulesets come from the netlink reader, not the
        // `nft -j` fallback: the rules replay on the facts conndoc gathers today.
        for h in ev.firewall.iter().flat_map(|f| &f.hosts) {
            for s in h.sources.iter().filter(|s| s.tool == conndoc_facts::firewall::FirewallTool::Nftables) {
                if !s.command.starts_with("nf_tables netlink") {
                    failures.push(format!("{name}: nftables read by the fallback ({}), not netlink", s.command));
                }
            }
        }
        let report = conndoc_diagnose::diagnose(&ev);
        // `conndoc check`'s verdict-only path gives the report's verdict.
        if conndoc_diagnose::verdict(&ev) != report.verdict {
            failures.push(format!("{name}: verdict() differs from diagnose().verdict"));
        }
        if report.verdict.cause.code() != want {
            failures.push(format!("{name}: expected {want}, rules say {}", report.verdict.cause));
        }
        // Every finding the scenario asserts (warnings too) comes back from the facts alone.
        let expected = scenario.get("expect").and_then(|e| e.get("finding")).and_then(|f| f.as_array());
        // (`exists = false` asserts a finding's absence.)
        let present = |f: &&toml::Value| f.get("exists").and_then(|e| e.as_bool()) != Some(false);
        for want in
            expected.into_iter().flatten().filter(present).filter_map(|f| f.get("cause").and_then(|c| c.as_str()))
        {
            if !report.findings.iter().any(|f| f.cause.code() == want) {
                failures.push(format!("{name}: the scenario expects a {want} finding, the rules give none"));
            }
        }
        // Every critical finding carries evidence (a cause is never named on a guess).
        for f in &report.findings {
            if f.severity == conndoc_diagnose::Severity::Critical && f.evidence.is_empty() {
                failures.push(format!("{name}: finding {} has no evidence", f.cause));
            }
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 5, "only {checked} recorded evidence files were checked");
}

#[test]
fn root_cause_outranks_its_consequences() {
    use conndoc_diagnose::Cause::*;
    // causes.md: "When several causes hold" — the finding that explains the others first.
    assert!(FdExhaustion.rank() < AcceptQueueOverflow.rank());
    assert!(FirewallDrop.rank() < ConnectTimeout.rank());
    assert!(BoundToLoopback.rank() < NoListener.rank());
    assert!(DnsHostsOverride.rank() < NoListener.rank());
    assert!(DnsHostsOverride.rank() < HostUnreachable.rank());
    assert!(FirewallReject.rank() < NoListener.rank());
    assert!(PortInUse.rank() < ProcessNotRunning.rank());
}
