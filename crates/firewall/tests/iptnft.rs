//! iptables-nft's tables read from the nf_tables netlink dump against the real
//! `iptables-nft-save` of the same ruleset: each case loads rules with
//! `iptables-nft-restore` into a network namespace of its own and checks that the text
//! made from the dump is the tool's, line for line (its banner comments aside), and that
//! the model built from either is the same. Needs root and iptables-nft; the namespaces
//! are removed also when a case fails. `CONNDOC_RECORD=1` re-records the fixture the
//! recorded-bytes case reads.

mod common;

use common::{Netns, T};
use conndoc_facts::firewall::{FirewallRole, FirewallTool, Hook};
use conndoc_facts::Family;
use conndoc_firewall::{build, ipt, nfnl, read, RawRulesets};
use conndoc_host::netns::{run_in, NetnsSpec};
use conndoc_testsupport::{tests, Need, Tests};
use std::time::Instant;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lab/kube");

/// Lines without the banner comments (which carry the tool's name and the time).
fn body(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// The dump's text equals the tool's, and both build the same model.
fn assert_same(raw: &nfnl::RawDump, v4_save: &str, v6_save: &str) -> u32 {
    let d = nfnl::Dump::parse(raw).unwrap();
    let (v4, v6) = nfnl::iptnft::from_dump(&d);
    let mut rules = 0;
    for (fam, f, save, tool) in [
        (Family::Ipv4, &v4, v4_save, FirewallTool::IptablesNft),
        (Family::Ipv6, &v6, v6_save, FirewallTool::Ip6tablesNft),
    ] {
        let text = f.save_text(tool.list_command()).unwrap_or_else(|e| panic!("{fam}: {e}"));
        let (a, b) = (body(&text), body(save));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{fam} line {}", i + 1);
        }
        assert_eq!(a.len(), b.len(), "{fam}: line count");
        assert_eq!(text.lines().count(), save.lines().count(), "{fam}: line numbers agree");
        let m1 = ipt::parse_save(&text, tool, fam, 1);
        let m2 = ipt::parse_save(save, tool, fam, 1);
        assert_eq!(m1.rule_count, m2.rule_count);
        assert_eq!(m1.not_understood_total, m2.not_understood_total);
        for (id, ch) in &m2.chains {
            assert_eq!(m1.chains.get(id).map(|c| &c.rules), Some(&ch.rules), "{id:?}");
        }
        assert_eq!(m1.chains.len(), m2.chains.len());
        rules += f.rules;
    }
    rules
}

/// `v4` is loaded in order, each after the first with `--noflush`; then `nft` rules.
fn load_and_compare(v4: &[&str], v6: &str, record: Option<&str>) -> u32 {
    load_and_compare_with(v4, v6, &[], record)
}

fn load_and_compare_with(v4: &[&str], v6: &str, nft: &[&[&str]], record: Option<&str>) -> u32 {
    let ns = Netns::new("cdiptnft");
    for (i, part) in v4.iter().enumerate() {
        ns.exec("iptables-nft-restore", if i == 0 { &[] } else { &["--noflush"] }, part);
    }
    for args in nft {
        ns.nft(args, None);
    }
    ns.exec("ip6tables-nft-restore", &[], v6);
    let raw = run_in(&NetnsSpec::Named(ns.0.clone()), || nfnl::dump(Instant::now() + T).expect("netlink dump"))
        .expect("enter namespace");
    let s4 = ns.exec("iptables-nft-save", &[], "");
    let s6 = ns.exec("ip6tables-nft-save", &[], "");
    if let (Some(name), Some(_)) = (record, std::env::var_os("CONNDOC_RECORD")) {
        std::fs::write(format!("{FIXTURES}/{name}.bin"), raw.to_bytes()).unwrap();
        std::fs::write(format!("{FIXTURES}/{name}-v4.save"), &s4).unwrap();
        std::fs::write(format!("{FIXTURES}/{name}-v6.save"), &s6).unwrap();
    }
    assert_same(&raw, &s4, &s6)
}

fn lab(name: &str) -> String {
    std::fs::read_to_string(format!("{LAB}/{name}")).unwrap()
}

/// kube-proxy's rules as the lab loads them.
fn kube_rules_read_as_iptables_nft_save_prints_them() {
    let (v4, multi, v6) = (lab("iptables.rules"), lab("iptables-multi.rules"), lab("ip6tables.rules"));
    assert!(load_and_compare(&[&v4, &multi], &v6, Some("iptnft-kube")) > 50);
}

/// Every shape the reader knows, beside kube-proxy's: all five tables, interfaces and
/// wildcards, prefixes and masks, ports, ranges and flags, marks, the xt extensions, nat
/// targets of each kind, policies.
const SHAPES_V4: &str = r#"*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -j ACCEPT
COMMIT
*security
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:zeta - [0:0]
:alpha - [0:0]
-A INPUT -p tcp --dport 1000:2000 -j ACCEPT
-A INPUT -p tcp ! --dport 3000:3010 -j ACCEPT
-A INPUT -p udp ! --sport 53 -m comment --comment abc_DEF-1 -j DROP
-A INPUT -p tcp -m multiport --dports 80,443,6000:6100 -m statistic --mode random --probability 0.33333333349 -j ACCEPT
-A INPUT -p tcp -m multiport ! --sports 1,2 -j ACCEPT
-A INPUT -m statistic --mode nth --every 3 --packet 1 -j ACCEPT
-A INPUT -m mark --mark 0x1 -m addrtype --src-type LOCAL,UNICAST ! --dst-type LOCAL --limit-iface-in -j ACCEPT
-A INPUT -m mark ! --mark 0x10/0xf0 -j alpha
-A INPUT -m conntrack --ctstate NEW -m state --state ESTABLISHED -g zeta
-A INPUT -m conntrack --ctstate INVALID,UNTRACKED,SNAT -j DROP
-A INPUT -s 10.0.0.1 -d 192.0.2.0/24 -p icmp -j ACCEPT
-A INPUT -m comment --comment "a \"q\" b"
-A INPUT -p tcp -m tcp --dport 6379 -j REJECT --reject-with tcp-reset
-A INPUT -p tcp -m tcp --dport 6380 -j REJECT --reject-with icmp-host-prohibited
-A INPUT -p tcp -m tcp --dport 6381 -j REJECT
-A FORWARD -s 10.1.2.0/23 -i eth+ ! -o veth0 -p tcp -m tcp --sport 5 --dport 7 --tcp-flags SYN,ACK SYN -j ACCEPT
-A FORWARD -i eth0 -o + -j ACCEPT
-A FORWARD ! -i lo -p tcp --syn -j ACCEPT
-A FORWARD ! -p udp -j RETURN
-A zeta -j RETURN
-A alpha -m mark --mark 0x4000/0x4000 -j MARK --set-xmark 0x0/0x4000
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -p tcp -j DNAT --to-destination 1.2.3.4-1.2.3.9:80-90 --random
-A PREROUTING -p tcp -j DNAT --to-destination :80
-A PREROUTING -p tcp -j REDIRECT --to-ports 8080
-A PREROUTING -p tcp -j REDIRECT
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -j MASQUERADE --random-fully
-A POSTROUTING -p tcp -j MASQUERADE --to-ports 100-200
-A POSTROUTING -j SNAT --to-source 1.2.3.4
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 6379 -j DNAT --to-destination 172.17.0.2:6379
COMMIT
"#;

const SHAPES_V6: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s fd00::/ffff:0:ffff:: -j REJECT --reject-with icmp6-adm-prohibited
-A INPUT -s fd77::/64 -d fd77::2 -p tcp -m tcp --dport 7400 -j REJECT
-A INPUT -p tcp -m tcp --dport 7401 -j REJECT --reject-with tcp-reset
-A INPUT -p icmpv6 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination [fd77:1::2]:8080
-A PREROUTING -p tcp -m tcp --dport 81 -j DNAT --to-destination fd77:1::3
-A POSTROUTING -j MASQUERADE --random-fully
COMMIT
"#;

fn every_known_shape_reads_as_iptables_nft_save_prints_it() {
    // Rules nft adds in iptables-nft's shapes, a comment in their user data (which
    // iptables-nft prints as a comment match after the others).
    let nft: &[&[&str]] = &[
        &[
            "add",
            "rule",
            "ip",
            "filter",
            "INPUT",
            "ip",
            "saddr",
            "1.2.3.4",
            "counter",
            "accept",
            "comment",
            "\"hi there\"",
        ],
        &["add", "rule", "ip", "filter", "INPUT", "meta", "l4proto", "tcp", "counter", "accept", "comment", "\"c2\""],
    ];
    assert!(load_and_compare_with(&[SHAPES_V4], SHAPES_V6, nft, Some("iptnft-shapes")) > 40);
}

/// The fixtures recorded by the cases above, read without a kernel.
fn recorded_bytes_read_as_the_recorded_save_output() {
    for name in ["iptnft-kube", "iptnft-shapes"] {
        let raw = nfnl::RawDump::from_bytes(&std::fs::read(format!("{FIXTURES}/{name}.bin")).unwrap()).unwrap();
        let s4 = std::fs::read_to_string(format!("{FIXTURES}/{name}-v4.save")).unwrap();
        let s6 = std::fs::read_to_string(format!("{FIXTURES}/{name}-v6.save")).unwrap();
        assert!(assert_same(&raw, &s4, &s6) > 20, "{name}");
    }
}

/// A rule iptables-nft did not write (native nft in an iptables table) is named, not guessed.
fn a_native_nft_rule_makes_the_family_unread() {
    let ns = Netns::new("cdiptnft");
    ns.exec("iptables-nft", &["-A", "INPUT", "-j", "ACCEPT"], "");
    ns.nft(&["add", "rule", "ip", "filter", "INPUT", "tcp", "dport", "{", "1,", "2", "}", "accept"], None);
    let raw = run_in(&NetnsSpec::Named(ns.0.clone()), || nfnl::dump(Instant::now() + T).expect("netlink dump"))
        .expect("enter namespace");
    let (v4, v6) = nfnl::iptnft::from_dump(&nfnl::Dump::parse(&raw).unwrap());
    let e = v4.save_text("iptables-nft-save").unwrap_err();
    assert!(e.contains("ip filter INPUT handle") && e.contains("lookup"), "{e}");
    assert!(v6.is_empty());
}

/// `read` takes iptables-nft's tables from the dump and runs neither `iptables-nft-save`
/// nor `ip6tables-nft-save`; what it builds decides every packet as the tools' output does,
/// at the same rule (text, line, position).
fn read_takes_iptables_nft_from_the_dump_without_running_the_tool() {
    let ns = Netns::new("cdiptnft");
    ns.exec("iptables-nft-restore", &[], &lab("iptables.rules"));
    ns.exec("ip6tables-nft-restore", &[], &lab("ip6tables.rules"));
    let raw = run_in(&NetnsSpec::Named(ns.0.clone()), || read::read(T)).expect("enter namespace");
    let nl = raw.nft_netlink.as_ref().expect("netlink read");
    assert!(nl.iptables_nft.iter().all(|r| r.rules.is_ok()), "{:?}", nl.iptables_nft);
    assert_eq!(nl.iptables_nft.len(), 2);
    let ran: Vec<FirewallTool> = raw.iptables.iter().map(|(t, _)| *t).collect();
    assert!(!ran.contains(&FirewallTool::IptablesNft) && !ran.contains(&FirewallTool::Ip6tablesNft), "{ran:?}");
    let (rs, sources) = build(&raw);
    let dumped: Vec<_> = sources.iter().filter(|s| s.command.contains("iptables-nft's tables")).collect();
    assert_eq!(dumped.len(), 2, "{sources:?}");
    assert!(dumped.iter().all(|s| s.rules > 10 && s.error.is_none() && s.generation.is_some()));
    assert_eq!(sources[0].rules, 0, "no nft rules beside iptables-nft's");

    let tools = RawRulesets {
        iptables: vec![
            (FirewallTool::IptablesNft, Ok(ns.exec("iptables-nft-save", &[], ""))),
            (FirewallTool::Ip6tablesNft, Ok(ns.exec("ip6tables-nft-save", &[], ""))),
        ],
        ..RawRulesets::from_nft(Err("not run".into()), None)
    };
    let (by_tool, _) = build(&tools);
    assert_eq!(rs.rule_count, by_tool.rule_count);
    let mut n = 0;
    for (fam, dst, src) in [
        (Family::Ipv4, ["10.96.0.20", "10.96.0.30", "127.0.0.1", "10.0.0.9"], "10.244.0.9"),
        (Family::Ipv6, ["fd00:10:96::20", "fd00:10:96::30", "::1", "fd00::9"], "fd00:10:244::9"),
    ] {
        for d in dst {
            for port in [80, 6379, 30080, 30379, 22] {
                for hook in [Hook::Input, Hook::Forward, Hook::Output] {
                    let mut p = common::packet(fam, src, d, port, "eth0");
                    p.destination_local = Some(d.starts_with("127") || d == "::1");
                    let (a, b) = (rs.evaluate(hook, &p), by_tool.evaluate(hook, &p));
                    let at = |e: &conndoc_facts::firewall::Evaluation| {
                        e.decided_by.as_ref().map(|r| (r.text.clone(), r.line, r.position, r.chain.clone()))
                    };
                    assert_eq!((a.verdict.clone(), at(&a)), (b.verdict.clone(), at(&b)), "{hook:?} {d}:{port}");
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 120);
    let probe = conndoc_firewall::kube::Probe { address: "10.96.0.20".parse().unwrap(), port: 6379, local: false };
    let m = conndoc_firewall::kube::recognise(&rs, FirewallRole::Client, &probe).expect("Service found");
    assert!(format!("{m:?}").contains("redis"), "{m:?}");
}

/// A family whose tables hold a rule not read as iptables-nft's is read by the tool, and
/// the source says why; the other family still comes from the dump.
fn a_family_the_dump_cannot_read_runs_the_tool_and_says_why() {
    let ns = Netns::new("cdiptnft");
    ns.exec("iptables-nft-restore", &[], &lab("iptables.rules"));
    ns.exec("ip6tables-nft-restore", &[], &lab("ip6tables.rules"));
    ns.nft(&["add", "rule", "ip", "filter", "INPUT", "tcp", "dport", "{", "1,", "2", "}", "accept"], None);
    let raw = run_in(&NetnsSpec::Named(ns.0.clone()), || read::read(T)).expect("enter namespace");
    let ran: Vec<FirewallTool> = raw.iptables.iter().map(|(t, _)| *t).collect();
    assert!(ran.contains(&FirewallTool::IptablesNft) && !ran.contains(&FirewallTool::Ip6tablesNft), "{ran:?}");
    let (rs, sources) = build(&raw);
    let v4 = sources.iter().find(|s| s.tool == FirewallTool::IptablesNft).unwrap();
    assert!(v4.command.starts_with("iptables-nft-save (") && v4.command.contains("lookup"), "{}", v4.command);
    // iptables-nft-save prints the table as incompatible: the nft reading of it is kept.
    let p = common::packet(Family::Ipv4, "10.0.0.1", "10.0.0.2", 2, "eth0");
    assert_eq!(rs.evaluate(Hook::Input, &p).verdict, conndoc_facts::firewall::FwVerdict::Accept);
    assert!(sources
        .iter()
        .any(|s| s.tool == FirewallTool::Ip6tablesNft && s.command.contains("iptables-nft's tables")));
}

/// `-j DNAT --to-destination :P[-Q]`: the port alone, for a packet from outside, for this
/// host's own (nat OUTPUT) and in IPv6; `-j NETMAP --to A/len`, which maps the destination
/// in prerouting and the source in postrouting.
const PORT_ONLY_V4: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i lo -j RETURN
-A PREROUTING -p tcp -m tcp --dport 16379 -j DNAT --to-destination :6390
-A PREROUTING -p tcp -m tcp --dport 16380 -j DNAT --to-destination :6000-6002
-A PREROUTING -p tcp -m tcp --dport 16383 -j NETMAP --to 10.77.1.0/24
-A OUTPUT -p tcp -m tcp --dport 16381 -j DNAT --to-destination :6391
-A POSTROUTING -j NETMAP --to 10.77.9.0/24
COMMIT
";
const PORT_ONLY_V6: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 16379 -j DNAT --to-destination :6390
-A PREROUTING -p tcp -m tcp --dport 16383 -j NETMAP --to fd77:1::/64
COMMIT
";

/// The port-only DNAT and NETMAP rules above, written with iptables-nft (read from the
/// netlink dump, its text line for line the tool's) and with iptables-legacy (read from
/// iptables-legacy-save) in namespaces of their own: both follow the packet to its own
/// address at the rule's port — not to loopback, which is what a REDIRECT would do — and
/// list every port of a range; NETMAP keeps the host bits of the dialled address.
fn port_only_dnat_and_netmap_are_followed_with_both_backends() {
    assert!(load_and_compare(&[PORT_ONLY_V4], PORT_ONLY_V6, None) >= 7);
    for (v4, v6, tool, tool6) in [
        ("iptables-nft-restore", "ip6tables-nft-restore", FirewallTool::IptablesNft, FirewallTool::Ip6tablesNft),
        (
            "iptables-legacy-restore",
            "ip6tables-legacy-restore",
            FirewallTool::IptablesLegacy,
            FirewallTool::Ip6tablesLegacy,
        ),
    ] {
        let ns = Netns::new("cdiptdp");
        ns.exec(v4, &[], PORT_ONLY_V4);
        ns.exec(v6, &[], PORT_ONLY_V6);
        let raw = run_in(&NetnsSpec::Named(ns.0.clone()), || read::read(T)).expect("enter namespace");
        let (rs, _) = build(&raw);
        assert_eq!(rs.not_understood_total, 0, "{tool:?}");
        let at = |hook: Hook, fam: Family, src: &str, dst: &str, port: u16, iif: &str| {
            let mut p = common::packet(fam, src, dst, port, iif);
            p.destination_local = Some(true);
            let e = rs.translate(hook, &p);
            let t = e.translation(&p).unwrap_or_else(|u| panic!("{tool:?} {dst}:{port}: unfollowed {u:?}"));
            t.map(|t| {
                let r = t.rule.clone().unwrap();
                assert_eq!(r.tool, if fam == Family::Ipv4 { tool } else { tool6 }, "{dst}:{port}");
                (t.to.to_string(), t.choices.iter().map(|c| c.to_string()).collect::<Vec<_>>(), r.text)
            })
        };
        let (to, choices, text) = at(Hook::Prerouting, Family::Ipv4, "10.77.0.1", "10.77.0.2", 16379, "eth0").unwrap();
        assert_eq!((to.as_str(), choices.len()), ("10.77.0.2:6390", 0), "{tool:?}");
        assert!(text.ends_with("--dport 16379 -j DNAT --to-destination :6390"), "{text}");
        let (to, choices, _) = at(Hook::Prerouting, Family::Ipv4, "10.77.0.1", "10.77.0.2", 16380, "eth0").unwrap();
        assert_eq!(to, "10.77.0.2:6000", "{tool:?}");
        assert_eq!(choices, ["10.77.0.2:6000", "10.77.0.2:6001", "10.77.0.2:6002"], "{tool:?}");
        // This host's own connection keeps its destination address too.
        let (to, _, _) = at(Hook::Output, Family::Ipv4, "10.77.0.2", "10.77.0.2", 16381, "").unwrap();
        assert_eq!(to, "10.77.0.2:6391", "{tool:?}");
        let (to, _, _) = at(Hook::Prerouting, Family::Ipv6, "fd77::1", "fd77::2", 16379, "eth0").unwrap();
        assert_eq!(to, "[fd77::2]:6390", "{tool:?}");
        // NETMAP: one address for one, the port kept; in postrouting it maps the source.
        let (to, choices, text) = at(Hook::Prerouting, Family::Ipv4, "10.77.0.1", "10.77.0.5", 16383, "eth0").unwrap();
        assert_eq!((to.as_str(), choices.len()), ("10.77.1.5:16383", 0), "{tool:?}");
        assert!(text.ends_with("-j NETMAP --to 10.77.1.0/24"), "{text}");
        let (to, _, _) = at(Hook::Prerouting, Family::Ipv6, "fd77::1", "fd77::5:6", 16383, "eth0").unwrap();
        assert_eq!(to, "[fd77:1::5:6]:16383", "{tool:?}");
        assert_eq!(at(Hook::Postrouting, Family::Ipv4, "10.77.0.1", "10.77.0.5", 16383, "eth0"), None);
        // Other ports, and loopback's RETURN, are not translated.
        assert_eq!(at(Hook::Prerouting, Family::Ipv4, "10.77.0.1", "10.77.0.2", 16382, "eth0"), None);
        assert_eq!(at(Hook::Prerouting, Family::Ipv4, "127.0.0.1", "127.0.0.1", 16379, "lo"), None);
    }
}

fn main() {
    let mut t = Tests::new();
    let need = common::root_with_nft()
        .and(conndoc_testsupport::program("iptables-nft-restore", "iptables"))
        .and(conndoc_testsupport::program("ip6tables-nft-restore", "iptables"));
    tests!(
        t,
        need,
        kube_rules_read_as_iptables_nft_save_prints_them,
        every_known_shape_reads_as_iptables_nft_save_prints_it,
        a_native_nft_rule_makes_the_family_unread,
        read_takes_iptables_nft_from_the_dump_without_running_the_tool,
        a_family_the_dump_cannot_read_runs_the_tool_and_says_why
    );
    let legacy = need
        .clone()
        .and(conndoc_testsupport::program("iptables-legacy-restore", "iptables"))
        .and(conndoc_testsupport::program("ip6tables-legacy-restore", "iptables"));
    tests!(t, legacy, port_only_dnat_and_netmap_are_followed_with_both_backends);
    tests!(t, Need::met(), recorded_bytes_read_as_the_recorded_save_output);
    t.run();
}
