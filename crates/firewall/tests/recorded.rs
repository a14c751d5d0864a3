//! Parsing and evaluation against output recorded from the real tools (fixtures/record.sh
//! re-records them inside a throw-away network namespace).

mod common;

use conndoc_facts::firewall::{FirewallTool, FwVerdict, Hook, RejectWith};
use conndoc_facts::Family;
use conndoc_firewall::{build, Packet, RawRulesets, Ruleset};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn nft_only(json: &str, text: &str) -> Ruleset {
    let raw = RawRulesets::from_nft(Ok(fixture(json)), Some(fixture(text)));
    let (rs, sources) = build(&raw);
    assert!(sources[0].error.is_none(), "{:?}", sources[0]);
    rs
}

fn v4(src: &str, port: u16) -> Packet {
    common::packet(Family::Ipv4, src, "10.77.0.2", port, "veth0")
}

fn v6(src: &str, port: u16) -> Packet {
    common::packet(Family::Ipv6, src, "fd77::2", port, "veth0")
}

fn icmp(family: &str, code: &str) -> FwVerdict {
    FwVerdict::Reject(RejectWith::Icmp { family: family.into(), code: code.into() })
}

#[test]
fn nft_reject_in_jumped_chain() {
    let rs = nft_only("nft-mixed.json", "nft-mixed.txt");
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6379));
    assert_eq!(e.verdict, FwVerdict::Reject(RejectWith::TcpReset));
    let r = e.decided_by.unwrap();
    assert_eq!((r.table.as_str(), r.chain.as_str(), r.handle), ("filter", "redis", Some(20)));
    assert_eq!(r.text, "meta l4proto tcp ip saddr 10.77.0.0/24 reject with tcp reset");
    assert_eq!(e.path.len(), 1);
    assert_eq!(e.path[0].handle, Some(10));
    assert_eq!(e.path[0].text, "tcp dport 6379 jump redis");
    // From elsewhere the jumped-to chain returns, and the `ip strict` policy drops it.
    let e = rs.evaluate(Hook::Input, &v4("10.99.0.1", 6379));
    assert_eq!(e.verdict, FwVerdict::Drop);
    let r = e.decided_by.unwrap();
    assert!(r.policy);
    assert_eq!((r.family.as_str(), r.table.as_str(), r.chain.as_str()), ("ip", "strict", "input"));
}

#[test]
fn nft_named_sets() {
    let rs = nft_only("nft-mixed.json", "nft-mixed.txt");
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7005));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert_eq!(e.decided_by.unwrap().handle, Some(9));
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 9000));
    assert_eq!(e.decided_by.unwrap().handle, Some(9));
    // Accepted by the first base chain (address in @allowed), dropped by the policy of the
    // second: every chain on the hook must let the packet pass.
    let e = rs.evaluate(Hook::Input, &v4("10.77.5.9", 80));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert!(e.decided_by.unwrap().policy);
}

#[test]
fn nft_reject_types_by_family() {
    let rs = nft_only("nft-mixed.json", "nft-mixed.txt");
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7100));
    assert_eq!(e.verdict, icmp("icmp", "port-unreachable"));
    assert_eq!(e.decided_by.unwrap().handle, Some(11));
    let e = rs.evaluate(Hook::Input, &v6("fd77::1", 7100));
    assert_eq!(e.verdict, icmp("icmpv6", "port-unreachable"));
    assert_eq!(e.decided_by.unwrap().handle, Some(12));
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7200));
    assert_eq!(e.verdict, icmp("icmpx", "admin-prohibited"));
    let e = rs.evaluate(Hook::Input, &v6("fd77::1", 7400));
    assert_eq!(e.verdict, icmp("icmpv6", "port-unreachable"));
    assert_eq!(e.decided_by.unwrap().handle, Some(15));
    // `ip6 saddr` never matches an IPv4 packet.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7400));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert!(e.decided_by.unwrap().policy);
}

#[test]
fn nft_tcp_flags() {
    let rs = nft_only("nft-mixed.json", "nft-mixed.txt");
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7300));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert_eq!(e.decided_by.unwrap().handle, Some(14));
}

#[test]
fn nft_unknown_expressions_are_named() {
    let rs = nft_only("nft-mixed.json", "nft-mixed.txt");
    // limit, meta mark and the verdict map cannot be evaluated: counted, and named when
    // they lie on the packet's path.
    assert_eq!(rs.not_understood_total, 3);
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7500));
    let handles: Vec<_> = e.not_understood.iter().map(|n| n.rule.handle).collect();
    assert_eq!(handles, vec![Some(17), Some(19)]);
    assert!(e.not_understood[0].reason.contains("meta mark"), "{:?}", e.not_understood);
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 22));
    assert!(e.not_understood.iter().any(|n| n.rule.handle == Some(7) && n.reason.contains("rate limit")));
    // A rule whose known parts rule the packet out is not reported.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 8000));
    assert_eq!(e.verdict, FwVerdict::Accept);
    assert!(!e.not_understood.iter().any(|n| n.rule.handle == Some(17)));
}

#[test]
fn nft_unknown_statement_does_not_fail_the_read() {
    let json = r#"{"nftables":[{"table":{"family":"inet","name":"t","handle":1}},
      {"chain":{"family":"inet","table":"t","name":"in","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
      {"rule":{"family":"inet","table":"t","chain":"in","handle":2,"expr":[{"future-thing":{"x":1}},{"accept":null}]}},
      {"rule":{"family":"inet","table":"t","chain":"in","handle":3,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":6379}},{"accept":null}]}}]}"#;
    let raw = RawRulesets::from_nft(Ok(json.into()), None);
    let (rs, _) = build(&raw);
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6379));
    assert_eq!(e.verdict, FwVerdict::Accept);
    assert_eq!(e.decided_by.unwrap().handle, Some(3));
    assert_eq!(e.not_understood.len(), 1);
    assert!(e.not_understood[0].reason.contains("future-thing"));
    let raw = RawRulesets::from_nft(Ok("{not json".into()), None);
    let (_, sources) = build(&raw);
    assert!(sources[0].error.as_ref().unwrap().contains("not JSON"));
}

fn legacy() -> Ruleset {
    let raw = RawRulesets {
        iptables: vec![
            (FirewallTool::IptablesLegacy, Ok(fixture("iptables-legacy.save"))),
            (FirewallTool::Ip6tablesLegacy, Ok(fixture("ip6tables-legacy.save"))),
        ],
        ..RawRulesets::from_nft(Err("nft is not installed".into()), None)
    };
    let (rs, sources) = build(&raw);
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[1].rules, 12);
    assert_eq!(sources[2].rules, 3);
    rs
}

#[test]
fn iptables_legacy_verdicts() {
    let rs = legacy();
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6379));
    assert_eq!(e.verdict, FwVerdict::Reject(RejectWith::TcpReset));
    let r = e.decided_by.unwrap();
    assert_eq!(r.tool, FirewallTool::IptablesLegacy);
    assert_eq!((r.table.as_str(), r.chain.as_str(), r.position, r.line), ("filter", "INPUT", Some(4), Some(10)));
    assert_eq!(r.text, "-A INPUT -p tcp -m tcp --dport 6379 -j REJECT --reject-with tcp-reset");

    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6380));
    assert_eq!(e.verdict, icmp("icmp", "port-unreachable"));
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6381));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert_eq!(e.decided_by.unwrap().position, Some(6));

    // Nothing matches: the DROP policy decides, found again by its line.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 7000));
    assert_eq!(e.verdict, FwVerdict::Drop);
    let r = e.decided_by.unwrap();
    assert!(r.policy);
    assert_eq!((r.chain.as_str(), r.line, r.text.as_str()), ("INPUT", Some(3), ":INPUT DROP"));

    // The quoted comment with escaped quotes is read, the rule applies.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.9", 6382));
    assert_eq!(e.verdict, FwVerdict::Accept);
    assert_eq!(e.decided_by.unwrap().position, Some(7));

    // Unknown match module: named, not applied.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6383));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert!(e.not_understood.iter().any(|n| n.reason.contains("recent")), "{:?}", e.not_understood);

    // LOG goes on to the next rule.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6384));
    assert!(e.decided_by.unwrap().policy);
}

#[test]
fn iptables_legacy_user_chain_return_and_reject() {
    let rs = legacy();
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.5", 6050));
    assert_eq!(e.verdict, icmp("icmp", "admin-prohibited"));
    let r = e.decided_by.unwrap();
    assert_eq!((r.chain.as_str(), r.position), ("services", Some(2)));
    assert_eq!(e.path[0].position, Some(3));
    // RETURN from the user chain: back in INPUT, nothing else matches, policy drops.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6050));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert!(e.decided_by.unwrap().policy);
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.5", 443));
    assert_eq!(e.verdict, FwVerdict::Accept);
}

#[test]
fn ip6tables_legacy_verdicts() {
    let rs = legacy();
    let e = rs.evaluate(Hook::Input, &v6("fd77::1", 6379));
    assert_eq!(e.verdict, icmp("icmpv6", "port-unreachable"));
    assert_eq!(e.decided_by.as_ref().unwrap().tool, FirewallTool::Ip6tablesLegacy);
    let e = rs.evaluate(Hook::Input, &v6("fd77::1", 6381));
    assert_eq!(e.verdict, FwVerdict::Drop);
    let e = rs.evaluate(Hook::Input, &v6("fd99::1", 6381));
    assert_eq!(e.verdict, icmp("icmpv6", "admin-prohibited"));
    // `! --dport 22`
    let e = rs.evaluate(Hook::Input, &v6("fd99::1", 22));
    assert_eq!(e.verdict, FwVerdict::Accept);
    assert!(e.decided_by.is_none());
}

#[test]
fn iptables_nft_tables_are_read_from_the_save_output() {
    let raw = RawRulesets {
        iptables: vec![(FirewallTool::IptablesNft, Ok(fixture("iptables-nft.save")))],
        ..RawRulesets::from_nft(Ok(fixture("iptables-nft-nft.json")), Some(fixture("iptables-nft-nft.txt")))
    };
    let (rs, sources) = build(&raw);
    // nft shows only its native table; the ip filter table comes from iptables-nft-save.
    assert_eq!(sources[0].rules, 1);
    assert_eq!(sources[1].rules, 3);
    assert_eq!(rs.not_understood_total, 0);
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6379));
    let r = e.decided_by.unwrap();
    assert_eq!((r.tool, r.chain.as_str(), r.position), (FirewallTool::IptablesNft, "INPUT", Some(2)));
    // The native chain has priority -5 and comes first.
    let e = rs.evaluate(Hook::Input, &v4("10.77.0.1", 6390));
    let r = e.decided_by.unwrap();
    assert_eq!((r.tool, r.table.as_str(), r.handle), (FirewallTool::Nftables, "native", Some(2)));
    let e = rs.evaluate(Hook::Input, &v4("10.1.2.3", 444));
    assert_eq!(e.verdict, FwVerdict::Drop);
    assert_eq!(e.decided_by.unwrap().chain, "sub");
}

#[test]
fn unknown_interface_is_said() {
    let rs = legacy();
    let mut p = v4("10.77.0.1", 7000);
    p.input_interface = None;
    let e = rs.evaluate(Hook::Input, &p);
    assert!(e.not_understood.iter().any(|n| n.reason.contains("input interface")));
}
