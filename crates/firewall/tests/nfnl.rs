//! The netlink reader against the real kernel and the real `nft`: each case loads a ruleset
//! with `nft -f` into a network namespace of its own, reads it both over netlink and with
//! `nft -j list ruleset`, and checks that a matrix of packets meets the same verdict at the
//! same rule (table, chain, handle) either way, and that rules read as `nft -a` prints them.
//! Needs root and nft; the namespaces are removed also when a case fails.

mod common;

use common::{root_with_nft, Netns, T};
use conndoc_facts::firewall::{FirewallTool, FwVerdict, Hook, RejectWith};
use conndoc_facts::Family;
use conndoc_firewall::model::Ruleset;
use conndoc_firewall::{build, nfnl, nft, read, Packet};
use conndoc_host::netns::{run_in, NetnsSpec};
use conndoc_testsupport::{tests, Need, Tests};
use std::collections::HashSet;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Both readings, in the namespace: (netlink, nft -j, nft -a text).
fn read_both(ns: &Netns) -> (Ruleset, Ruleset, nft::RuleTexts) {
    run_in(&NetnsSpec::Named(ns.0.clone()), || {
        let nl = std::sync::Arc::unwrap_or_clone(nfnl::read(T).expect("netlink dump").ruleset);
        let (json, text) = read::read_nft_json(T);
        let texts = nft::parse_text(&text.expect("nft -a list ruleset"));
        let js = nft::parse_json(&json.expect("nft -j list ruleset"), &texts, 0, &HashSet::new()).unwrap();
        (nl, js, texts)
    })
    .expect("enter namespace")
}

const V4_SOURCES: &[&str] =
    &["10.77.0.1", "10.77.0.5", "10.77.0.20", "10.77.9.9", "192.0.2.7", "192.0.2.9", "198.51.100.7"];
const V6_SOURCES: &[&str] = &["fd77::1", "fd77::5", "fd77::1:1", "2001:db8::1", "fd00::1", "2001:db9::1"];

fn ports() -> Vec<u16> {
    let mut p: Vec<u16> =
        vec![22, 53, 443, 6379, 7010, 7011, 7100, 7101, 7102, 7200, 7300, 7400, 7500, 8000, 8005, 8011, 9000];
    p.extend(7000..=7005);
    p.extend(80..=105);
    p
}

/// Every packet of the matrix on every hook: (hook, packet).
fn matrix(skip_ports: &[u16]) -> Vec<(Hook, Packet)> {
    let mut out = Vec::new();
    for (fam, srcs, dst) in [(Family::Ipv4, V4_SOURCES, "10.77.0.2"), (Family::Ipv6, V6_SOURCES, "fd77::2")] {
        let dst: IpAddr = dst.parse().unwrap();
        for s in srcs.iter() {
            for port in ports().into_iter().filter(|p| !skip_ports.contains(p)) {
                for iif in ["eth0", "veth3", "lo"] {
                    let base = Packet {
                        family: fam,
                        source: Some(s.parse().unwrap()),
                        destination: dst,
                        source_port: Some(40000),
                        destination_port: port,
                        input_interface: Some(iif.into()),
                        output_interface: None,
                        destination_local: None,
                    };
                    out.push((Hook::Input, base.clone()));
                    out.push((Hook::Forward, Packet { output_interface: Some("eth1".into()), ..base.clone() }));
                    if iif == "eth0" {
                        out.push((
                            Hook::Output,
                            Packet { input_interface: None, output_interface: Some("eth0".into()), ..base },
                        ));
                    }
                }
            }
        }
    }
    out
}

fn loc(r: &Option<conndoc_facts::firewall::RuleRef>) -> Option<(String, String, String, Option<u64>, bool)> {
    r.as_ref().map(|r| (r.family.clone(), r.table.clone(), r.chain.clone(), r.handle, r.policy))
}

/// Same verdict, same deciding rule and same jump path from both readings.
fn assert_same(nl: &Ruleset, js: &Ruleset, skip_ports: &[u16]) -> usize {
    let mut n = 0;
    for (hook, p) in matrix(skip_ports) {
        let a = nl.evaluate(hook, &p);
        let b = js.evaluate(hook, &p);
        let what =
            format!("{hook:?} {:?} → {}:{} iif {:?}", p.source, p.destination, p.destination_port, p.input_interface);
        assert_eq!(a.verdict, b.verdict, "verdict for {what}");
        assert_eq!(loc(&a.decided_by), loc(&b.decided_by), "deciding rule for {what}");
        let path = |e: &conndoc_facts::firewall::Evaluation| e.path.iter().map(|r| r.handle).collect::<Vec<_>>();
        assert_eq!(path(&a), path(&b), "jump path for {what}");
        n += 1;
    }
    n
}

/// Every rule netlink read renders as `nft -a list ruleset` prints it, except where the
/// renderer shows an expression raw (`[ fib ]`, `[ exthdr write ]`).
fn assert_texts(nl: &Ruleset, texts: &nft::RuleTexts) {
    let mut checked = 0;
    for ((_, fam, table, chain), ch) in &nl.chains {
        for r in ch.rules.iter().filter(|r| !r.reference.text.contains("[ ")) {
            let h = r.reference.handle.unwrap();
            let want = texts.get(&(fam.clone(), table.clone(), chain.clone(), h)).expect("rule in nft -a output");
            assert_eq!(&r.reference.text, want, "{fam} {table} {chain} handle {h}");
            checked += 1;
        }
    }
    assert_eq!(nl.rule_count as usize, texts.len());
    assert!(checked + 2 >= texts.len());
}

/// Every shape the fw-nft lab scenarios use.
const LAB: &str = r#"
table inet lab {
  set blocked { type ipv4_addr; flags interval; elements = { 10.77.0.0/28, 192.0.2.7 } }
  chain input {
    type filter hook input priority 0; policy drop;
    meta mark 0x42 tcp dport 7000 accept
    tcp dport 7001 counter drop
    tcp dport 7000-7010 jump services
    ip saddr @blocked drop
    tcp dport 7100 reject with icmp type port-unreachable
    tcp dport 7101 reject with icmpv6 type port-unreachable
    tcp dport 7102 reject with tcp reset
    tcp dport 22 accept
  }
  chain services {
    ip saddr 10.77.0.0/24 tcp dport 7000 reject with tcp reset
  }
}
table inet gw {
  chain forward {
    type filter hook forward priority 0;
    iifname "eth0" oifname "eth1" tcp dport 7000 reject with icmp type admin-prohibited
    tcp dport 7001 reject with icmp type admin-prohibited
    tcp dport 7002 reject with tcp reset
  }
}
"#;

const FAMILIES: &str = r#"
table ip filt {
  set ports { type inet_service; flags interval; elements = { 8000-8010, 9000 } }
  set nets { type ipv4_addr; flags interval; elements = { 192.0.2.0/24, 198.51.100.1-198.51.100.20 } }
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    iifname "lo" accept
    iifname "veth*" tcp dport 8001 drop
    tcp dport @ports drop
    ip saddr @nets tcp dport 80 reject
    ip saddr != 10.77.0.0/16 tcp dport 81 drop
    ip saddr { 10.77.0.1, 10.77.0.5 } tcp dport { 82, 83 } reject with icmp type host-prohibited
    tcp dport 84 jump sub
    tcp dport 85 goto sub
    tcp dport 85 accept
    tcp flags & (syn|ack) == syn tcp dport 86 drop
    tcp flags & (fin|rst) != 0 tcp dport 87 drop
    tcp dport != { 1-1000, 7000-9999 } tcp dport < 20000 log drop
    ip protocol tcp tcp dport 88 drop
    meta l4proto udp accept
    udp dport 89 drop
    tcp sport 40000 tcp dport 89 drop
  }
  chain sub {
    ip saddr 10.77.0.0/28 return
    tcp dport 84 reject with icmp type net-prohibited
  }
  chain output {
    type filter hook output priority 0; policy accept;
    oifname "eth0" tcp dport 7000 drop
    oifname != "eth0" tcp dport 7001 drop
  }
  chain routed {
    type filter hook forward priority 0; policy drop;
    tcp flags syn tcp option maxseg size set rt mtu
    iifname "eth0" oifname "eth1" tcp dport 7000-7005 accept
  }
}
table ip6 filt6 {
  set nets6 { type ipv6_addr; flags interval; elements = { fd77::/64, 2001:db8::/32, fd00::1 } }
  chain input {
    type filter hook input priority -10; policy accept;
    ip6 saddr @nets6 tcp dport 90 reject
    ip6 saddr fd77::/120 tcp dport 91 reject with icmpv6 type admin-prohibited
    ip6 saddr { fd77::1, fd77::5 } tcp dport 92 drop
    ip6 nexthdr tcp tcp dport 93 drop
    tcp dport 94 reject with tcp reset
    ip6 daddr fd77::2 tcp dport 7000 jump deeper
  }
  chain deeper {
    ip6 saddr fd77::1 return
    reject with icmpv6 type addr-unreachable
  }
}
table inet mix {
  chain input {
    type filter hook input priority 5; policy accept;
    tcp dport 95 reject with icmpx type admin-prohibited
    tcp dport 96 reject with icmpx type host-unreachable
    tcp dport 97 reject
    meta nfproto ipv6 tcp dport 98 reject with icmpv6 type no-route
    tcp dport 99 numgen inc mod 2 0 drop
    tcp dport 100 quota over 1 mbytes drop
    tcp dport 101 limit rate 1/second accept
    tcp dport 102 counter log prefix "hi " accept comment "let it in"
    iif "lo" tcp dport 103 drop
    ip daddr 10.77.0.2 tcp dport 104 drop
    ip6 daddr fd77::2 tcp dport 104 reject
    iifname { "eth0", "lo" } tcp dport 105 drop
    ip saddr 10.77.0.1 tcp dport != 7000-7010 tcp dport 7000-7500 drop
    meta protocol ip6 tcp dport 7200 drop
    icmp type echo-request accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
    udp dport { 53, 7000 } drop
    fib daddr type local tcp dport 7400 drop
    ip saddr 10.77.0.1-10.77.0.9 tcp dport 7300 reject with icmp type prot-unreachable
  }
}
"#;

fn lab_shapes_read_the_same_both_ways() {
    let ns = Netns::new("cdnfnl");
    ns.load(LAB);
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    assert!(assert_same(&nl, &js, &[]) > 1000);
    // the shapes the lab asserts on, spelled out
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.20", 7000));
    assert_eq!(e.verdict, FwVerdict::Reject(RejectWith::TcpReset));
    let r = e.decided_by.unwrap();
    assert_eq!(
        (r.chain.as_str(), r.text.as_str()),
        ("services", "ip saddr 10.77.0.0/24 tcp dport 7000 reject with tcp reset")
    );
    assert_eq!(e.path[0].text, "tcp dport 7000-7010 jump services");
    assert!(e.not_understood.iter().any(|n| n.reason == "meta mark"), "{:?}", e.not_understood);
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.1", 7001));
    assert!(e.decided_by.unwrap().text.starts_with("tcp dport 7001 counter packets 0 bytes 0 drop"));
    let e = nl.evaluate(Hook::Input, &v4("192.0.2.7", 22));
    assert_eq!(e.decided_by.unwrap().text, "ip saddr @blocked drop");
    let e = nl.evaluate(Hook::Input, &v6("fd77::1", 7101));
    assert_eq!(
        e.verdict,
        FwVerdict::Reject(RejectWith::Icmp { family: "icmpv6".into(), code: "port-unreachable".into() })
    );
    let e = nl.evaluate(Hook::Input, &v6("fd77::1", 7100));
    assert!(e.decided_by.unwrap().policy, "icmp reject is IPv4 only");
}

fn families_sets_and_rejects_read_the_same_both_ways() {
    let ns = Netns::new("cdnfnl");
    ns.load(FAMILIES);
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    assert!(assert_same(&nl, &js, &[]) > 1000);
    let e = nl.evaluate(Hook::Input, &v6("2001:db8::1", 90));
    assert_eq!(
        e.verdict,
        FwVerdict::Reject(RejectWith::Icmp { family: "icmpv6".into(), code: "port-unreachable".into() })
    );
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.1", 95));
    assert_eq!(
        e.verdict,
        FwVerdict::Reject(RejectWith::Icmp { family: "icmpx".into(), code: "admin-prohibited".into() })
    );
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.1", 102));
    assert_eq!(
        e.decided_by.unwrap().text,
        "tcp dport 102 counter packets 0 bytes 0 log prefix \"hi \" accept comment \"let it in\""
    );
    // not understood: named, never applied
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.1", 99));
    assert!(e.not_understood.iter().any(|n| n.reason.contains("numgen")), "{:?}", e.not_understood);
    // numgen, quota, limit; icmp matches and `fib daddr type` are understood
    assert_eq!((nl.not_understood_total, js.not_understood_total), (3, 3));
}

fn recorded_fixture_ruleset_reads_the_same_both_ways() {
    let ns = Netns::new("cdnfnl");
    ns.load(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nfnl-mixed.nft")).unwrap());
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    // 83 and 84 meet a verdict map, which only the netlink reading evaluates
    assert!(assert_same(&nl, &js, &[83, 84]) > 1000);
}

fn verdict_maps_are_evaluated() {
    let ns = Netns::new("cdnfnl");
    ns.load(
        r#"table inet vm {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport vmap { 7000 : drop, 7001 : accept, 7002 : jump rej }
    ct state vmap { established : accept, invalid : drop }
    tcp dport 7003 drop
  }
  chain rej { reject with tcp reset; }
}"#,
    );
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    let vmap = |e: &conndoc_facts::firewall::Evaluation| e.decided_by.as_ref().and_then(|r| r.handle);
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.1", 7000));
    assert_eq!((e.verdict.clone(), vmap(&e)), (FwVerdict::Drop, Some(4)));
    let e = nl.evaluate(Hook::Input, &v4("10.77.0.1", 7002));
    assert_eq!(e.verdict, FwVerdict::Reject(RejectWith::TcpReset));
    assert_eq!(e.path.iter().map(|r| r.handle).collect::<Vec<_>>(), vec![Some(4)]);
    assert_eq!(e.path[0].text, "tcp dport vmap { 7000 : drop, 7001 : accept, 7002 : jump rej }");
    // a new connection is in no element of the ct state map: on to the next rule
    let e = nl.evaluate(Hook::Input, &v6("fd77::1", 7003));
    assert_eq!(e.decided_by.unwrap().text, "tcp dport 7003 drop");
    assert!(e.not_understood.is_empty());
    // the JSON reading names the map instead
    let e = js.evaluate(Hook::Input, &v4("10.77.0.1", 7000));
    assert!(e.not_understood.iter().any(|n| n.reason.contains("verdict map")));

    // A dormant table sees no packet: its drop policy does not count. (nft 1.0.6's JSON
    // prints its release name as the table's flags, so only netlink can tell.)
    ns.load("table inet sleepy { flags dormant; chain input { type filter hook input priority -50; policy drop; }; }");
    let (nl, _, _) = read_both(&ns);
    assert!(nl.bases.iter().all(|b| b.chain.2 != "sleepy"));
    assert!(nl.chains.keys().any(|c| c.2 == "sleepy"));
    let e = nl.evaluate(Hook::Input, &v6("fd77::1", 7003));
    assert_eq!(e.decided_by.unwrap().text, "tcp dport 7003 drop");
}

fn build_prefers_netlink_and_skips_the_text_listing() {
    let ns = Netns::new("cdnfnl");
    ns.load(LAB);
    let raw = run_in(&NetnsSpec::Named(ns.0.clone()), || read::read(T)).unwrap();
    assert!(raw.nft_netlink.is_some(), "{:?}", raw.netlink_error);
    assert!(raw.nft_text.is_none() && raw.nft_json.is_err(), "nft was run on the fast path");
    let (rs, sources) = build(&raw);
    assert_eq!(sources[0].command, conndoc_firewall::NETLINK_COMMAND);
    assert_eq!(sources[0].rules, 12);
    assert!(sources[0].error.is_none());
    assert_eq!(rs.evaluate(Hook::Input, &v4("10.77.0.20", 7102)).verdict, FwVerdict::Reject(RejectWith::TcpReset));
}

/// A legacy `*-save` runs only where its family has a legacy table: in a namespace without
/// one the names file is empty and the tool (which would print nothing) is not run.
fn legacy_save_runs_only_when_the_namespace_has_legacy_tables() {
    let ns = Netns::new("cdlegacy");
    let spec = NetnsSpec::Named(ns.0.clone());
    let in_ns = |f: fn() -> (bool, bool, read::RawRulesets)| run_in(&spec, f).expect("enter namespace");
    let look = || {
        let names = |f: &str| read::legacy_has_no_tables(std::fs::read_to_string(f));
        let v4 = names("/proc/thread-self/net/ip_tables_names");
        let v6 = names("/proc/thread-self/net/ip6_tables_names");
        (v4, v6, read::read(T))
    };
    let legacy = |raw: &read::RawRulesets, tool: FirewallTool| {
        raw.iptables.iter().find(|(t, _)| *t == tool).map(|(_, o)| o.clone()).expect("legacy tool listed")
    };
    let (v4, v6, raw) = in_ns(look);
    assert!(v4 && v6, "a new namespace has no legacy table");
    assert_eq!(legacy(&raw, FirewallTool::IptablesLegacy), Ok(String::new()));
    assert_eq!(legacy(&raw, FirewallTool::Ip6tablesLegacy), Ok(String::new()));
    // What the tool itself prints there: nothing, as recorded without running it.
    let out = Command::new("ip").args(["netns", "exec", &ns.0, "iptables-legacy-save"]).output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");

    let ok = Command::new("ip")
        .args(["netns", "exec", &ns.0, "iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", "7001", "-j", "DROP"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "iptables-legacy -A");
    let (v4, v6, raw) = in_ns(look);
    assert!(!v4 && v6, "the filter table now exists for IPv4 only");
    let saved = legacy(&raw, FirewallTool::IptablesLegacy).expect("iptables-legacy-save ran");
    assert!(saved.contains("-A INPUT -p tcp -m tcp --dport 7001 -j DROP"), "{saved}");
    assert_eq!(legacy(&raw, FirewallTool::Ip6tablesLegacy), Ok(String::new()));
}

/// Without CAP_NET_ADMIN the kernel refuses the dump (EPERM) and `read` falls back to nft.
/// Runs this test binary again under setpriv, in a namespace of its own.
fn without_cap_net_admin_the_read_falls_back() {
    if std::env::var_os("CONNDOC_NFNL_EPERM_CHILD").is_some() {
        let e = nfnl::read(T).unwrap_err();
        assert!(e.is_permission(), "{e}");
        let raw = read::read(T);
        assert!(raw.nft_netlink.is_none());
        assert!(raw.netlink_error.as_deref().unwrap().contains("Operation not permitted"));
        let (_, sources) = build(&raw);
        assert_eq!(sources[0].command, "nft -j list ruleset");
        println!("CHILD-OK");
        return;
    }
    let ns = Netns::new("cdnfnl");
    ns.load(LAB);
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"])
        .arg(exe)
        .args(["--exact", "without_cap_net_admin_the_read_falls_back", "--nocapture", "--test-threads=1"])
        .env("CONNDOC_NFNL_EPERM_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("CHILD-OK"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

fn v4(src: &str, port: u16) -> Packet {
    common::packet(Family::Ipv4, src, "10.77.0.2", port, "eth0")
}

fn v6(src: &str, port: u16) -> Packet {
    common::packet(Family::Ipv6, src, "fd77::2", port, "eth0")
}

/// The same comparison on recorded output (no root needed): the kernel's bytes of
/// fixtures/nfnl-mixed.nft against nft's JSON and text listings of it.
fn recorded_bytes_and_nft_json_agree() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let raw = nfnl::RawDump::from_bytes(&std::fs::read(format!("{dir}/nfnl-mixed.bin")).unwrap()).unwrap();
    let mut d = nfnl::Dump::parse(&raw).unwrap();
    d.ifnames = vec![(1, "lo".into())];
    let nl = nfnl::to_ruleset(&d, 0, &HashSet::new());
    let texts = nft::parse_text(&std::fs::read_to_string(format!("{dir}/nfnl-mixed.txt")).unwrap());
    let json = std::fs::read_to_string(format!("{dir}/nfnl-mixed.json")).unwrap();
    let js = nft::parse_json(&json, &texts, 0, &HashSet::new()).unwrap();
    assert_texts(&nl, &texts);
    assert!(assert_same(&nl, &js, &[83, 84]) > 1000);
    // iptables-nft's tables are left to iptables-nft-save: dropped, counts adjusted
    let skip: HashSet<(String, String)> = [("ip".to_string(), "strict".to_string())].into();
    let without = nfnl::without_tables(&nl, &skip);
    assert_eq!(without.rule_count, nl.rule_count - 6);
    assert!(without.chains.keys().all(|c| c.2 != "strict") && without.bases.iter().all(|b| b.chain.2 != "strict"));
}

/// While another process swaps the whole ruleset back and forth (one transaction each),
/// every read is one committed state: the set and the rules come from the same one. The
/// read compares the generation before and after and starts over when it moved.
fn reads_stay_consistent_while_the_ruleset_changes() {
    let ns = Netns::new("cdnfnl");
    let state = |x: u16| {
        let mut f = format!(
            "flush ruleset\ntable inet race {{\n set s {{ type inet_service; elements = {{ {x} }} }}\n chain c {{\n  type filter hook input priority 0;\n  tcp dport @s accept\n"
        );
        for i in 0..50 {
            f.push_str(&format!("  tcp dport {} drop\n", x * 100 + i));
        }
        f.push_str(" }\n}\n");
        f
    };
    let tmp = common::TempDir::new("cdnfnl-race");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let (a, b) = (tmp.0.join("a.nft"), tmp.0.join("b.nft"));
    std::fs::write(&a, state(1)).unwrap();
    std::fs::write(&b, state(2)).unwrap();
    ns.load(&state(1));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut ok, mut changing) = (0, 0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let f = if i % 2 == 0 { &b } else { &a };
                let _ = Command::new("ip").args(["netns", "exec", &ns.0, "nft", "-f"]).arg(f).status();
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_millis(1500);
        run_in(&NetnsSpec::Named(ns.0.clone()), || {
            while std::time::Instant::now() < deadline {
                match nfnl::read(T) {
                    Ok(r) => {
                        let mut ports: Vec<u64> = Vec::new();
                        for ch in r.ruleset.chains.values() {
                            for rule in &ch.rules {
                                for c in &rule.conds {
                                    if let conndoc_firewall::model::Cond::Cmp {
                                        key: conndoc_firewall::model::Key::DPort,
                                        elems,
                                        ..
                                    } = c
                                    {
                                        ports.extend(elems.iter().filter_map(|e| match e {
                                            conndoc_firewall::model::Elem::Int(p) => Some(*p),
                                            _ => None,
                                        }));
                                    }
                                }
                            }
                        }
                        assert_eq!(ports.len(), 51, "{ports:?}");
                        let x = ports.iter().min().copied().unwrap();
                        assert!(x == 1 || x == 2, "{ports:?}");
                        assert!(ports.iter().all(|p| *p == x || p / 100 == x), "torn read: {ports:?}");
                        ok += 1;
                    }
                    Err(nfnl::NfnlError::Changing { .. }) => changing += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .unwrap();
        stop.store(true, Ordering::SeqCst);
    });
    assert!(ok > 10, "{ok} consistent reads, {changing} gave up");
}

/// kube-proxy's nftables table (lab/kube/nftables.nft, its own shapes): the concatenated
/// verdict maps are evaluated, and the Services are found with targeted reads.
fn kube_proxy_table_is_evaluated_and_its_services_found() {
    let ns = Netns::new("cdkube");
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../lab/kube/nftables.nft")).unwrap();
    ns.load(&rules);
    // (Rule texts are not compared: `mark` arithmetic renders differently from nft's.)
    let (nl, _, _) = read_both(&ns);
    let out = |dst: &str, port: u16| Packet {
        family: Family::Ipv4,
        source: Some("10.77.9.2".parse().unwrap()),
        destination: dst.parse().unwrap(),
        source_port: None,
        destination_port: port,
        input_interface: None,
        output_interface: Some("eth0".into()),
        destination_local: None,
    };
    // No endpoints: `no-endpoint-services` sends it to reject-chain.
    let e = nl.evaluate(Hook::Output, &out("10.96.0.20", 6379));
    let icmp = RejectWith::Icmp { family: "icmp".into(), code: "port-unreachable".into() };
    assert_eq!(e.verdict, FwVerdict::Reject(icmp));
    assert_eq!(e.decided_by.as_ref().map(|r| r.chain.as_str()), Some("reject-chain"));
    let path: Vec<&str> = e.path.iter().map(|r| r.text.as_str()).collect();
    assert!(path.contains(&"ip daddr . meta l4proto . th dport vmap @no-endpoint-services"), "{path:?}");
    assert!(e.not_understood.is_empty(), "{:?}", e.not_understood);
    // Another port of that ClusterIP: cluster-ips-check rejects it ("invalid ports").
    let e = nl.evaluate(Hook::Output, &out("10.96.0.20", 6380));
    assert_eq!(e.decided_by.as_ref().map(|r| r.chain.as_str()), Some("cluster-ips-check"));

    run_in(&NetnsSpec::Named(ns.0.clone()), || {
        use conndoc_firewall::kube::{nft::recognise, Probe};
        let role = conndoc_facts::firewall::FirewallRole::Client;
        let deadline = std::time::Instant::now() + T;
        let p = |a: &str, port: u16, local: bool| Probe { address: a.parse().unwrap(), port, local };
        let m = recognise(&p("10.96.0.20", 6379, false), role, deadline).unwrap().unwrap();
        assert_eq!(m.service.to_string(), "default/redis:redis");
        let ne = m.no_endpoints.unwrap();
        assert_eq!(ne.rule.text, r#"10.96.0.20 . tcp . 6379 comment "default/redis:redis" : goto reject-chain"#);
        // NodePort on a node address (in nodeport-ips), no endpoints either.
        let m = recognise(&p("10.77.9.2", 30379, true), role, deadline).unwrap().unwrap();
        assert_eq!(m.kind, conndoc_facts::kube::FrontendKind::NodePort);
        assert!(m.no_endpoints.is_some());
        // With endpoints: service-ips → service chain → numgen vmap → endpoint chain.
        let m = recognise(&p("10.96.0.30", 80, false), role, deadline).unwrap().unwrap();
        assert_eq!(m.service.to_string(), "default/web:http");
        let eps: Vec<String> = m.endpoints.iter().map(|e| format!("{}:{}", e.address, e.port)).collect();
        assert_eq!(eps, vec!["10.244.0.5:8080"]);
        assert!(m.endpoints[0].rule.text.contains("goto endpoint-4VJT4MCW-default/web/tcp/http__10.244.0.5/8080"));
        assert!(recognise(&p("10.96.0.30", 81, false), role, deadline).unwrap().is_none());
        assert!(recognise(&p("10.96.0.99", 80, false), role, deadline).unwrap().is_none());
    })
    .unwrap();
    // No kube-proxy table at all: nothing, and no error.
    let empty = Netns::new("cdkube");
    run_in(&NetnsSpec::Named(empty.0.clone()), || {
        let p = conndoc_firewall::kube::Probe { address: "10.96.0.20".parse().unwrap(), port: 6379, local: false };
        let r = conndoc_firewall::kube::nft::recognise(
            &p,
            conndoc_facts::firewall::FirewallRole::Client,
            std::time::Instant::now() + T,
        );
        assert!(matches!(r, Ok(None)), "{r:?}");
    })
    .unwrap();
}

/// The nat chains of fixtures/nat.nft, loaded into the kernel now: both readings render
/// them as nft prints them and send every packet of a matrix to the same translation at
/// the same rule (or to none).
fn nat_chains_translate_the_same_both_ways() {
    let ns = Netns::new("cdnfnl");
    ns.load(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nat.nft")).unwrap());
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    let mut translated = 0;
    for (dst, src) in [("10.77.0.2", "10.77.0.1"), ("10.77.0.9", "10.77.0.1"), ("fd77::2", "fd77::1")] {
        for port in [16379, 16380, 16381, 16382, 16383, 16384, 16385, 17379, 7001, 7002] {
            for iif in ["veth0", "lo", ""] {
                for local in [Some(true), Some(false), None] {
                    for hook in [Hook::Prerouting, Hook::Output, Hook::Postrouting] {
                        let d: IpAddr = dst.parse().unwrap();
                        let p = Packet {
                            family: Family::of(&d),
                            source: Some(src.parse().unwrap()),
                            destination: d,
                            source_port: Some(40000),
                            destination_port: port,
                            input_interface: Some(iif.into()),
                            output_interface: None,
                            destination_local: local,
                        };
                        let (a, b) = (nl.translate(hook, &p), js.translate(hook, &p));
                        let what = format!("{hook:?} {dst}:{port} iif {iif:?} local {local:?}");
                        let rule = |e: &conndoc_firewall::NatEvaluation| {
                            e.matched.as_ref().map(|(r, a)| (r.family.clone(), r.chain.clone(), r.handle, a.clone()))
                        };
                        assert_eq!(rule(&a), rule(&b), "{what}");
                        assert_eq!(a.translation(&p).ok(), b.translation(&p).ok(), "{what}");
                        translated += usize::from(matches!(a.translation(&p), Ok(Some(_))));
                    }
                }
            }
        }
    }
    assert!(translated > 50, "{translated}");
}

/// dnat maps keyed by a concatenation, loaded with `nft -f`: an anonymous map to
/// `addr . port`, named maps to `addr . port` and to `addr` alone, an interval
/// concatenation, and IPv6 (a 16-byte address then the port, each field padded to 4 bytes
/// in the registers and in the keys). Both readings render them as nft prints them; over
/// netlink the element the packet has is followed, a packet in no element meets no rule.
const CONCAT_MAPS: &str = r#"
table ip cm {
  map both { type ipv4_addr . inet_service : ipv4_addr . inet_service; elements = { 10.77.0.2 . 16401 : 10.77.1.3 . 6380, 10.77.0.3 . 16401 : 10.77.1.4 . 6381 } }
  map addr { type ipv4_addr . inet_service : ipv4_addr; elements = { 10.77.0.2 . 16402 : 10.77.1.5 } }
  map wide { type ipv4_addr . inet_service : ipv4_addr . inet_service; flags interval; elements = { 10.77.0.0/24 . 16410-16419 : 10.77.1.6 . 7000 } }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "lo" return
    dnat ip to ip daddr . tcp dport map { 10.77.0.2 . 16400 : 10.77.1.2 . 8080 }
    dnat ip to ip daddr . tcp dport map @both
    dnat to ip daddr . tcp dport map @addr
    dnat ip to ip daddr . tcp dport map @wide
    dnat to ip saddr . tcp dport map { 10.77.0.1 . 16420 : 10.77.1.7 }
  }
}
table ip6 cm6 {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    dnat ip6 to ip6 daddr . tcp dport map { fd77::2 . 16400 : fd77:1::2 . 8080 }
  }
}
"#;

fn concatenated_dnat_maps_are_followed() {
    let ns = Netns::new("cdcmap");
    ns.load(CONCAT_MAPS);
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    assert_eq!(nl.not_understood_total, 0, "{:?}", nl.chains);
    let to = |rs: &Ruleset, src: &str, dst: &str, port: u16| {
        let d: IpAddr = dst.parse().unwrap();
        let p = Packet {
            family: Family::of(&d),
            source: Some(src.parse().unwrap()),
            destination: d,
            source_port: Some(40000),
            destination_port: port,
            input_interface: Some("veth0".into()),
            output_interface: None,
            destination_local: Some(true),
        };
        let e = rs.translate(Hook::Prerouting, &p);
        assert!(e.not_understood.is_empty(), "{dst}:{port}: {:?}", e.not_understood);
        e.translation(&p)
            .unwrap()
            .map(|t| (t.to.to_string(), t.rule.and_then(|r| r.handle), t.element.unwrap_or_default()))
    };
    // (source, destination, port, (backend, map element) or no translation)
    type Want<'a> = (&'a str, &'a str, u16, Option<(&'a str, &'a str)>);
    let want: &[Want] = &[
        ("10.77.0.1", "10.77.0.2", 16400, Some(("10.77.1.2:8080", "10.77.0.2 . 16400 : 10.77.1.2 . 8080"))),
        // The address of one element with the port of another is in neither.
        ("10.77.0.1", "10.77.0.3", 16400, None),
        ("10.77.0.1", "10.77.0.2", 16401, Some(("10.77.1.3:6380", "10.77.0.2 . 16401 : 10.77.1.3 . 6380"))),
        ("10.77.0.1", "10.77.0.3", 16401, Some(("10.77.1.4:6381", "10.77.0.3 . 16401 : 10.77.1.4 . 6381"))),
        ("10.77.0.1", "10.77.0.4", 16401, None),
        // Data `addr` alone: the dialled port is kept.
        ("10.77.0.1", "10.77.0.2", 16402, Some(("10.77.1.5:16402", "10.77.0.2 . 16402 : 10.77.1.5"))),
        ("10.77.0.1", "10.77.0.9", 16415, Some(("10.77.1.6:7000", "10.77.0.0/24 . 16410-16419 : 10.77.1.6 . 7000"))),
        ("10.77.0.1", "10.77.0.9", 16420, Some(("10.77.1.7:16420", "10.77.0.1 . 16420 : 10.77.1.7"))),
        ("10.77.0.5", "10.77.0.9", 16420, None),
        ("fd77::1", "fd77::2", 16400, Some(("[fd77:1::2]:8080", "fd77::2 . 16400 : fd77:1::2 . 8080"))),
        ("fd77::1", "fd77::3", 16400, None),
    ];
    for (src, dst, port, expect) in want {
        let got = to(&nl, src, dst, *port);
        assert_eq!(got.as_ref().map(|(a, _, e)| (a.as_str(), e.as_str())), *expect, "netlink {src} → {dst}:{port}");
        // nft -j reads the same translation at the same rule.
        assert_eq!(to(&js, src, dst, *port), got, "nft -j {src} → {dst}:{port}");
    }
}

/// nft's own forms of the same: `dnat to :P[-Q]` (the port alone), `dnat prefix to A/len`
/// (NETMAP) in ip and ip6, and `dnat ip prefix to … map` (a prefix per element); load-balancing maps (`dnat to numgen inc mod 2 map { … }`: every
/// element a backend, and one missing a value named, not followed); a map to address ranges;
/// a redirect map. Alike
/// over netlink and with nft -j, rendered as nft prints them.
const PORT_ONLY_AND_NETMAP: &str = r#"
table ip pn {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport 16431 dnat to :6390
    tcp dport 16432 dnat to :6000-6002
    tcp dport 16430 dnat prefix to 10.77.1.0/24
    tcp dport 16433 dnat ip prefix to ip daddr map { 10.77.0.0/24 : 10.77.1.0/24 }
    tcp dport 16434 dnat to numgen inc mod 2 map { 0 : 10.77.1.2, 1 : 10.77.1.3 }
    tcp dport 16435 dnat ip to numgen random mod 2 map { 0 : 10.77.1.2 . 6379, 1 : 10.77.1.3 . 6380 }
    tcp dport 16436 dnat to numgen inc mod 3 map { 0 : 10.77.1.2, 1 : 10.77.1.3 }
    tcp dport 16442 dnat to jhash ip saddr mod 2 map { 0 : 10.77.1.2, 1 : 10.77.1.3 }
    tcp dport 16443 dnat to symhash mod 2 offset 1 map { 1 : 10.77.1.2, 2 : 10.77.1.3 }
    tcp dport 16440 dnat ip to ip daddr map { 10.77.0.2 : 10.77.1.2-10.77.1.3, 10.77.0.3 : 10.77.1.4-10.77.1.6 }
    tcp dport 16437-16438 redirect to tcp dport map { 16437 : 8083, 16438 : 8084 }
  }
  chain output {
    type nat hook output priority -100; policy accept;
    tcp dport 16431 dnat to :6391
  }
}
table ip6 pn6 {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport 16431 dnat to :6390
    tcp dport 16430 dnat prefix to fd77:1::/64
  }
}
"#;

fn port_only_dnat_and_netmap_read_alike_both_ways() {
    let ns = Netns::new("cdpnmap");
    ns.load(PORT_ONLY_AND_NETMAP);
    let (nl, js, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    let to = |rs: &Ruleset, hook: Hook, dst: &str, port: u16| {
        let d: IpAddr = dst.parse().unwrap();
        let src = if d.is_ipv4() { "10.77.0.1" } else { "fd77::1" };
        let p = Packet {
            family: Family::of(&d),
            source: Some(src.parse().unwrap()),
            destination: d,
            source_port: Some(40000),
            destination_port: port,
            input_interface: Some(if hook == Hook::Output { "" } else { "veth0" }.into()),
            output_interface: None,
            destination_local: Some(true),
        };
        let e = rs.translate(hook, &p);
        if !e.not_understood.is_empty() {
            return Err(format!("not understood: {:?}", e.not_understood[0].reason));
        }
        match e.translation(&p) {
            Ok(t) => Ok(t.map(|t| (t.to.to_string(), t.choices.len()))),
            Err(u) => Err(u.why),
        }
    };
    let every = |rs: &Ruleset, port: u16| {
        let p = Packet {
            family: Family::Ipv4,
            source: Some("10.77.0.1".parse().unwrap()),
            destination: "10.77.0.2".parse().unwrap(),
            source_port: Some(40000),
            destination_port: port,
            input_interface: Some("veth0".into()),
            output_interface: None,
            destination_local: Some(true),
        };
        let t = rs.translate(Hook::Prerouting, &p).translation(&p).unwrap().unwrap();
        (t.kind, t.choices.iter().map(|c| c.to_string()).collect::<Vec<_>>(), t.element)
    };
    for (reader, rs) in [("netlink", &nl), ("nft -j", &js)] {
        let pre = |dst: &str, port: u16| to(rs, Hook::Prerouting, dst, port);
        assert_eq!(pre("10.77.0.2", 16431), Ok(Some(("10.77.0.2:6390".into(), 0))), "{reader}");
        assert_eq!(pre("10.77.0.2", 16432), Ok(Some(("10.77.0.2:6000".into(), 3))), "{reader}");
        assert_eq!(to(rs, Hook::Output, "10.77.0.2", 16431), Ok(Some(("10.77.0.2:6391".into(), 0))), "{reader}");
        assert_eq!(pre("10.77.0.9", 16430), Ok(Some(("10.77.1.9:16430".into(), 0))), "{reader}");
        assert_eq!(pre("fd77::2", 16431), Ok(Some(("[fd77::2]:6390".into(), 0))), "{reader}");
        assert_eq!(pre("fd77::7:8", 16430), Ok(Some(("[fd77:1::7:8]:16430".into(), 0))), "{reader}");
        // NETMAP through a map: the element's prefix, the host bits kept.
        assert_eq!(pre("10.77.0.9", 16433), Ok(Some(("10.77.1.9:16433".into(), 0))), "{reader}");
        assert_eq!(pre("10.77.2.9", 16433), Ok(None), "{reader}");
        // Load balancing: every element is a backend; a map missing a value is named.
        use conndoc_facts::nat::TranslationKind;
        assert_eq!(pre("10.77.0.2", 16434), Ok(Some(("10.77.1.2:16434".into(), 2))), "{reader}");
        assert_eq!(every(rs, 16434).1, ["10.77.1.2:16434", "10.77.1.3:16434"], "{reader}");
        assert_eq!(every(rs, 16435).1, ["10.77.1.2:6379", "10.77.1.3:6380"], "{reader}");
        // Hashes pick per flow, from every element alike.
        assert_eq!(every(rs, 16442).1, ["10.77.1.2:16442", "10.77.1.3:16442"], "{reader}");
        assert_eq!(every(rs, 16443).1, ["10.77.1.2:16443", "10.77.1.3:16443"], "{reader}");
        assert!(pre("10.77.0.2", 16436).is_err_and(|w| w.contains("2 of the 3 values")), "{reader}");
        // A map to an address range: one address of the element's range per connection.
        assert_eq!(every(rs, 16440).1, ["10.77.1.2:16440", "10.77.1.3:16440"], "{reader}");
        assert_eq!(pre("10.77.0.3", 16440), Ok(Some(("10.77.1.4:16440".into(), 3))), "{reader}");
        assert_eq!(pre("10.77.0.4", 16440), Ok(None), "{reader}");
        // A redirect map: this host, the element's port.
        assert_eq!(pre("10.77.0.2", 16437), Ok(Some(("10.77.0.2:8083".into(), 0))), "{reader}");
        let (kind, _, element) = every(rs, 16438);
        assert_eq!((kind, element.as_deref()), (TranslationKind::Redirect, Some("16438 : 8084")), "{reader}");
        assert_eq!(pre("10.77.0.2", 16439), Ok(None), "{reader}");
    }
}

/// An anonymous verdict map on a concatenation (`ip saddr . tcp dport vmap { … }`): the
/// element the packet has decides, an interval element included; rendered as nft prints it.
fn anonymous_concatenated_verdict_maps_are_evaluated() {
    let ns = Netns::new("cdcvmap");
    ns.load(
        r#"table inet cv {
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr . tcp dport vmap { 10.77.0.1 . 7010 : drop, 10.77.0.5 . 7010 : accept, 10.77.0.9 . 7011 : jump rej }
    tcp dport 7010 reject
  }
  chain rej { reject with tcp reset; }
}
table inet cw {
  chain input {
    type filter hook input priority 10; policy accept;
    ip saddr . tcp dport vmap { 10.77.0.0/24 . 7020-7029 : drop }
  }
}
table ip cx {
  chain input {
    type filter hook input priority 20; policy accept;
    tcp dport 7030 jump rej
  }
  chain rej { reject with tcp reset; }
}"#,
    );
    let (nl, _, texts) = read_both(&ns);
    assert_texts(&nl, &texts);
    assert_eq!(nl.not_understood_total, 0);
    let decided = |src: &str, port: u16| {
        let e = nl.evaluate(Hook::Input, &v4(src, port));
        assert!(e.not_understood.is_empty(), "{src}:{port} {:?}", e.not_understood);
        (e.verdict, e.decided_by.map(|r| r.text))
    };
    let map =
        "ip saddr . tcp dport vmap { 10.77.0.1 . 7010 : drop, 10.77.0.5 . 7010 : accept, 10.77.0.9 . 7011 : jump rej }";
    assert_eq!(decided("10.77.0.1", 7010), (FwVerdict::Drop, Some(map.to_string())));
    assert_eq!(decided("10.77.0.5", 7010).0, FwVerdict::Accept);
    // in no element: the next rule; the jump's chain rejects
    let (v, by) = decided("10.77.0.9", 7010);
    assert!(matches!(v, FwVerdict::Reject(RejectWith::Icmp { .. })), "{v:?}");
    assert_eq!(by.as_deref(), Some("tcp dport 7010 reject"));
    assert_eq!(decided("10.77.0.9", 7011).0, FwVerdict::Reject(RejectWith::TcpReset));
    assert_eq!(decided("10.77.0.77", 7025).0, FwVerdict::Drop);
    assert_eq!(decided("10.77.1.77", 7025).0, FwVerdict::Accept);
    assert_eq!(
        decided("10.77.1.77", 7030),
        (FwVerdict::Reject(RejectWith::TcpReset), Some("reject with tcp reset".into()))
    );
}

/// The cheap question a refused port asks (`nfnl::nat_chains_present`) answers as the whole
/// read does: an empty namespace, a filter-only ruleset, a regular chain named nat, then
/// an ip6 nat base chain.
fn nat_chains_present_answers_as_the_read_does() {
    let ns = Netns::new("cdnatq");
    let ask = |ns: &Netns| {
        run_in(&NetnsSpec::Named(ns.0.clone()), || {
            let quick = nfnl::nat_chains_present(T).expect("GETCHAIN dump");
            let full = !nfnl::read(T).expect("netlink dump").ruleset.nat_bases.is_empty();
            (quick, full)
        })
        .expect("enter namespace")
    };
    assert_eq!(ask(&ns), (false, false), "empty");
    ns.load("table inet f {\n chain input {\n type filter hook input priority 0;\n tcp dport 22 accept\n }\n}\n");
    assert_eq!(ask(&ns), (false, false), "filter only");
    ns.load("table ip t {\n chain nat {\n }\n}\n");
    assert_eq!(ask(&ns), (false, false), "a regular chain named nat");
    ns.load("table ip6 n {\n chain pre {\n type nat hook prerouting priority -100;\n tcp dport 80 redirect to :8080\n }\n}\n");
    assert_eq!(ask(&ns), (true, true), "ip6 nat base chain");
}

fn main() {
    let mut t = Tests::new();
    let need = root_with_nft();
    // The re-executed child (without CAP_NET_ADMIN) runs whatever the parent needed.
    let child = if std::env::var_os("CONNDOC_NFNL_EPERM_CHILD").is_some() { Need::met() } else { need.clone() };
    tests!(
        t,
        need,
        lab_shapes_read_the_same_both_ways,
        families_sets_and_rejects_read_the_same_both_ways,
        recorded_fixture_ruleset_reads_the_same_both_ways,
        verdict_maps_are_evaluated,
        nat_chains_translate_the_same_both_ways,
        concatenated_dnat_maps_are_followed,
        anonymous_concatenated_verdict_maps_are_evaluated,
        port_only_dnat_and_netmap_read_alike_both_ways,
        nat_chains_present_answers_as_the_read_does,
        kube_proxy_table_is_evaluated_and_its_services_found,
        build_prefers_netlink_and_skips_the_text_listing
    );
    let legacy = need.clone().and(conndoc_testsupport::program("iptables-legacy", "iptables"));
    tests!(t, legacy, legacy_save_runs_only_when_the_namespace_has_legacy_tables);
    tests!(t, child, without_cap_net_admin_the_read_falls_back);
    tests!(t, Need::met(), recorded_bytes_and_nft_json_agree);
    tests!(t, need, reads_stay_consistent_while_the_ruleset_changes);
    t.run();
}
