//! The ruleset cache against the real kernel and the real `nft`: each case loads rules with
//! `nft -f` into a network namespace of its own and reads them with the cache levels given
//! (an on-disk directory of the test's own, or this process's memory), then changes the
//! ruleset and checks that the next read sees the change. Needs root and nft; namespaces and
//! directories are removed also when a case fails.

mod common;

use common::{root_with_nft, Netns, TempDir, T};
use conndoc_facts::firewall::{FwVerdict, Hook, RejectWith};
use conndoc_facts::Family;
use conndoc_firewall::cache::{CacheConfig, CacheLevel, MIN_OBJECTS};
use conndoc_firewall::nfnl::{self, NetlinkRuleset};
use conndoc_firewall::{build, Packet, RawRulesets};
use conndoc_host::netns::{run_in, NetnsSpec};
use conndoc_testsupport::{tests, Need, Tests};
use std::path::Path;
use std::process::Command;

fn read(ns: &Netns, cfg: &CacheConfig) -> NetlinkRuleset {
    run_in(&NetnsSpec::Named(ns.0.clone()), || nfnl::read_with(T, cfg)).expect("enter namespace").expect("read")
}

fn disk(dir: &Path) -> CacheConfig {
    CacheConfig { memory: false, dir: Some(dir.to_path_buf()), min_objects: MIN_OBJECTS }
}

fn memory() -> CacheConfig {
    CacheConfig { memory: true, dir: None, min_objects: MIN_OBJECTS }
}

/// `n` rules that no probe below meets, then `last` (if any), in `inet t input`.
fn big(n: usize, last: &str) -> String {
    let mut f = String::from("table inet t {\n chain input {\n  type filter hook input priority 0; policy accept;\n");
    for i in 0..n {
        f.push_str(&format!("  ip saddr 192.0.2.{} tcp dport {} drop\n", i % 250, 20000 + i));
    }
    f.push_str(&format!("  {last}\n }}\n}}\n"));
    f
}

fn probe() -> Packet {
    Packet {
        family: Family::Ipv4,
        source: Some("10.77.0.1".parse().unwrap()),
        destination: "10.77.0.2".parse().unwrap(),
        source_port: Some(40000),
        destination_port: 7000,
        input_interface: Some("eth0".into()),
        output_interface: None,
        destination_local: None,
    }
}

fn verdict(r: &NetlinkRuleset) -> FwVerdict {
    r.ruleset.evaluate(Hook::Input, &probe()).verdict
}

/// The handle of the first rule in `inet t input` whose text contains `needle`.
fn handle_of(ns: &Netns, needle: &str) -> String {
    let text = ns.nft(&["-a", "list", "chain", "inet", "t", "input"], None);
    let line = text.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no rule with {needle}:\n{text}"));
    line.rsplit("# handle ").next().unwrap().trim().to_string()
}

fn big_ruleset_is_cached_until_a_rule_changes() {
    let ns = Netns::new("cdcache");
    let dir = TempDir::new("cdcache");
    ns.load(&big(1200, "counter"));

    // Miss: dumped, and a file appears.
    let first = read(&ns, &disk(&dir.0));
    assert_eq!(first.cached, None);
    assert_eq!(verdict(&first), FwVerdict::Accept);
    assert_eq!(dir.files().len(), 1, "{:?}", dir.files());
    // Hit: the same generation, from the file; the same rules and evaluation.
    let second = read(&ns, &disk(&dir.0));
    assert_eq!(second.cached, Some(CacheLevel::Disk));
    assert_eq!(second.generation, first.generation);
    assert_eq!(second.ruleset.rule_count, 1201);
    assert_eq!(second.ruleset.chains, first.ruleset.chains);
    assert_eq!(second.ruleset.evaluate(Hook::Input, &probe()), first.ruleset.evaluate(Hook::Input, &probe()));
    // What the evidence says.
    let raw = RawRulesets { nft_netlink: Some(second.clone()), ..RawRulesets::from_nft(Err("not run".into()), None) };
    let (_, sources) = build(&raw);
    assert!(sources[0].cached);
    assert_eq!(sources[0].generation, Some(first.generation));
    assert_eq!(sources[0].command, conndoc_firewall::cached_command(first.generation));
    assert_eq!(sources[0].rules, 1201);
    let raw = RawRulesets { nft_netlink: Some(first.clone()), ..raw };
    let (_, sources) = build(&raw);
    assert!(!sources[0].cached);
    assert_eq!(sources[0].command, conndoc_firewall::NETLINK_COMMAND);

    // A rule that rejects the probe: the next read misses and sees it.
    ns.nft(&["add", "rule", "inet", "t", "input", "tcp", "dport", "7000", "reject", "with", "tcp", "reset"], None);
    let third = read(&ns, &disk(&dir.0));
    assert_eq!(third.cached, None);
    assert_ne!(third.generation, first.generation);
    assert_eq!(verdict(&third), FwVerdict::Reject(RejectWith::TcpReset));
    let fourth = read(&ns, &disk(&dir.0));
    assert_eq!(fourth.cached, Some(CacheLevel::Disk));
    assert_eq!(verdict(&fourth), FwVerdict::Reject(RejectWith::TcpReset));
    assert_eq!(dir.files().len(), 1, "one file per namespace: {:?}", dir.files());

    // Deleted again: accepted again, from a fresh dump.
    let h = handle_of(&ns, "tcp dport 7000 reject");
    ns.nft(&["delete", "rule", "inet", "t", "input", "handle", &h], None);
    let fifth = read(&ns, &disk(&dir.0));
    assert_eq!(fifth.cached, None);
    assert_eq!(verdict(&fifth), FwVerdict::Accept);
}

fn memory_level_sees_changes_too() {
    let ns = Netns::new("cdcache");
    ns.load(&big(1200, "counter"));
    let first = read(&ns, &memory());
    assert_eq!(first.cached, None);
    let second = read(&ns, &memory());
    assert_eq!(second.cached, Some(CacheLevel::Memory));
    assert!(std::sync::Arc::ptr_eq(&first.ruleset, &second.ruleset), "the same decode, not a copy");
    ns.nft(&["insert", "rule", "inet", "t", "input", "tcp", "dport", "7000", "drop"], None);
    let third = read(&ns, &memory());
    assert_eq!(third.cached, None);
    assert_eq!(verdict(&third), FwVerdict::Drop);
    assert_eq!(read(&ns, &memory()).cached, Some(CacheLevel::Memory));
}

fn small_ruleset_leaves_no_file() {
    let ns = Netns::new("cdcache");
    let dir = TempDir::new("cdcache");
    ns.load(&big(20, "tcp dport 7000 drop"));
    for _ in 0..2 {
        let r = read(&ns, &CacheConfig { memory: true, ..disk(&dir.0) });
        assert_eq!(r.cached, None);
        assert_eq!(verdict(&r), FwVerdict::Drop);
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());
    // A namespace that shrinks leaves no file behind either.
    ns.load(&format!("flush ruleset\n{}", big(1200, "counter")));
    read(&ns, &disk(&dir.0));
    assert_eq!(dir.files().len(), 1);
    ns.load(&format!("flush ruleset\n{}", big(20, "counter")));
    assert_eq!(read(&ns, &disk(&dir.0)).cached, None);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

fn sets_that_change_without_a_commit_are_not_cached() {
    let ns = Netns::new("cdcache");
    let dir = TempDir::new("cdcache");
    let rules = big(1200, "ip saddr @seen drop")
        .replace(" chain input {", " set seen { type ipv4_addr; flags timeout; timeout 1h; }\n chain input {");
    ns.load(&rules);
    for _ in 0..2 {
        assert_eq!(read(&ns, &CacheConfig { memory: true, ..disk(&dir.0) }).cached, None);
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

fn a_damaged_file_is_ignored_and_replaced() {
    let ns = Netns::new("cdcache");
    let dir = TempDir::new("cdcache");
    ns.load(&big(1200, "tcp dport 7000 drop"));
    read(&ns, &disk(&dir.0));
    let file = dir.files().pop().expect("cache file");
    let good = std::fs::read(&file).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    for bad in [flipped, good[..good.len() / 3].to_vec(), b"not a cache file".to_vec(), Vec::new()] {
        std::fs::write(&file, &bad).unwrap();
        let r = read(&ns, &disk(&dir.0));
        assert_eq!(r.cached, None, "a damaged file is not used");
        assert_eq!(verdict(&r), FwVerdict::Drop);
        assert_eq!(std::fs::read(&file).unwrap().len(), good.len(), "replaced by a sound one");
        assert_eq!(read(&ns, &disk(&dir.0)).cached, Some(CacheLevel::Disk));
    }
}

/// Namespace inode numbers are reused as soon as one is deleted, and generation ids of
/// fresh namespaces count alike: the cookie keeps them apart.
fn namespaces_with_the_same_generation_never_share_an_entry() {
    let dir = TempDir::new("cdcache");
    let both = CacheConfig { memory: true, ..disk(&dir.0) };
    let ino = |ns: &Netns| {
        std::fs::metadata(format!("/run/netns/{}", ns.0)).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).ok()
    };
    let a = Netns::new("cdcache");
    a.load(&big(1200, "tcp dport 7000 drop"));
    let ra = read(&a, &both);
    assert_eq!(verdict(&ra), FwVerdict::Drop);
    assert_eq!(read(&a, &both).cached, Some(CacheLevel::Memory));
    let ino_a = ino(&a);
    drop(a);
    let b = Netns::new("cdcache");
    b.load(&big(1200, "tcp dport 7000 reject with tcp reset"));
    let rb = read(&b, &both);
    assert_eq!(rb.generation, ra.generation, "the case this test is about: equal generation ids");
    eprintln!("namespace inode A {ino_a:?}, B {:?}", ino(&b));
    assert_eq!(rb.cached, None);
    assert_eq!(verdict(&rb), FwVerdict::Reject(RejectWith::TcpReset));
    // And from disk alone, in a process that never saw either namespace (memory off).
    let rb2 = read(&b, &disk(&dir.0));
    assert_eq!(rb2.cached, Some(CacheLevel::Disk));
    assert_eq!(verdict(&rb2), FwVerdict::Reject(RejectWith::TcpReset));
    assert_eq!(dir.files().len(), 2, "one file per namespace cookie: {:?}", dir.files());
}

/// `CONNDOC_CACHE_DIR` and `CONNDOC_NO_CACHE` as a conndoc process sees them: this test
/// binary runs again with them set, in the namespace, and reads through `read::read`.
fn environment_turns_the_cache_on_and_off() {
    if std::env::var_os("CONNDOC_CACHE_CHILD").is_some() {
        let raw = conndoc_firewall::read(T);
        let (rs, sources) = build(&raw);
        println!(
            "CHILD cached={} rules={} verdict={:?}",
            sources[0].cached,
            rs.rule_count,
            rs.evaluate(Hook::Input, &probe()).verdict
        );
        return;
    }
    let ns = Netns::new("cdcache");
    let dir = TempDir::new("cdcache");
    ns.load(&big(1200, "tcp dport 7000 drop"));
    let child = |no_cache: bool| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.0])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "environment_turns_the_cache_on_and_off", "--nocapture", "--test-threads=1"])
            .env("CONNDOC_CACHE_CHILD", "1")
            .env("CONNDOC_CACHE_DIR", &dir.0)
            .env_remove("CONNDOC_NO_CACHE");
        if no_cache {
            c.env("CONNDOC_NO_CACHE", "1");
        }
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        // libtest prints the test name on the same line first.
        let at = stdout.find("CHILD cached=").unwrap_or_else(|| panic!("child output: {stdout}"));
        stdout[at..].lines().next().unwrap_or_default().to_string()
    };
    assert!(child(true).contains("cached=false"));
    assert!(dir.files().is_empty(), "CONNDOC_NO_CACHE=1 writes nothing");
    let miss = child(false);
    assert!(miss.contains("cached=false") && miss.contains("verdict=Drop"), "{miss}");
    assert_eq!(dir.files().len(), 1);
    let hit = child(false);
    assert!(hit.contains("cached=true") && hit.contains("rules=1201") && hit.contains("verdict=Drop"), "{hit}");
    assert!(child(true).contains("cached=false"));
}

fn main() {
    let mut t = Tests::new();
    let need = root_with_nft();
    // The re-executed child (in the namespace) runs whatever the parent needed.
    let child = if std::env::var_os("CONNDOC_CACHE_CHILD").is_some() { Need::met() } else { need.clone() };
    tests!(
        t,
        need,
        big_ruleset_is_cached_until_a_rule_changes,
        memory_level_sees_changes_too,
        small_ruleset_leaves_no_file,
        sets_that_change_without_a_commit_are_not_cached,
        a_damaged_file_is_ignored_and_replaced,
        namespaces_with_the_same_generation_never_share_an_entry
    );
    tests!(t, child, environment_turns_the_cache_on_and_off);
    t.run();
}
