//! Fuzzing the /proc readers with real files as seeds: tests/corpus/proc/ holds
//! /proc/self/net/{snmp,netstat,sockstat}, /proc/self/{limits,status} and the cmdline of a
//! `sleep 30` copied from the machine the test was written on, plus one cmdline by hand with
//! secrets in each form the redactor knows. Every parser runs on every input: no panic, no
//! hang, bounded memory, and what each returns is in the input.

use conndoc_host::{audit, counters, kmsg, procs, proxy, redact, sysctl, systemd};
use conndoc_testsupport::fuzz::{check_bytes, check_str, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

#[test]
fn proc_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/proc");
    check_bytes(&dir, |b| {
        let text = String::from_utf8_lossy(b);
        if let Ok(groups) = counters::parse_pairs(&text) {
            for (g, names) in &groups {
                assert!(text.contains(&format!("{g}:")), "group {g} not in the input");
                for (n, v) in names {
                    assert!(text.contains(n.as_str()) && text.contains(&v.to_string()), "{g} {n} {v}");
                }
            }
        }
        let _ = counters::counters_from(&text, &text);
        if let Some(s) = counters::parse_sockstat(&text) {
            assert!(text.contains(&format!("inuse {}", s.inuse)), "{s:?}");
        }
        if let Some(uid) = procs::parse_status_uid(&text) {
            assert!(text.contains(&uid.to_string()));
        }
        if let Some((soft, hard)) = procs::parse_nofile(&text) {
            for v in [soft, hard].into_iter().flatten() {
                assert!(text.contains(&v.to_string()), "limit {v}");
            }
        }
        let args = procs::split_cmdline(b);
        assert!(args.iter().all(|a| !a.is_empty() && !a.contains('\0')));
        let shown = redact::redact_cmdline(&args);
        // A value after a secret flag is never shown.
        let mut with_flag = vec!["--requirepass".to_string(), "S3CR3T-fuzz".to_string()];
        with_flag.extend(args);
        assert!(!redact::redact_cmdline(&with_flag).contains("S3CR3T-fuzz") || shown.contains("S3CR3T-fuzz"));
    });
}

/// The text readers beside /proc: audit AVC lines, kernel log lines, `systemctl show`,
/// `journalctl -o json`, `ip_local_port_range`, docker-proxy arguments. Seeds in
/// tests/corpus/text/: the recorded fixtures of tests/fixtures/ (README there says where
/// from), this machine's ip_local_port_range, two kernel lines by hand.
#[test]
fn recorded_text_readers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/text");
    check_str(&dir, |text| {
        for line in text.lines() {
            let _ = format!("{:?} {:?}", audit::parse_avc(line), kmsg::parse_line(line));
        }
        let _ = format!("{:?}", systemd::parse_show("redis.service", text));
        let _ = format!("{:?}", systemd::parse_journal_json(text));
        if let Some((lo, hi)) = sysctl::parse_range(text) {
            assert!(text.contains(&lo.to_string()) && text.contains(&hi.to_string()));
        }
        let args: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        let _ = format!("{:?}", proxy::parse_docker_proxy(&args));
    });
}
