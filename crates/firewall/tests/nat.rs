//! Address translation rules (issue 10) read from output recorded from the real tools
//! (fixtures/record.sh, part 5): the nat chains of fixtures/nat.nft over netlink
//! (nat.bin) and with `nft -j` (nat-nft.json), and Docker's iptables nat rules from
//! iptables-nft-save, iptables-legacy-save and ip6tables-nft-save.

use conndoc_facts::firewall::FirewallTool;
use conndoc_facts::Family;
use conndoc_firewall::model::{Action, Cond, Elem, Key, NatAction, RouteType, Ruleset};
use conndoc_firewall::{ipt, nfnl, nft};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn netlink() -> Ruleset {
    let bytes = std::fs::read(format!("{}/tests/fixtures/nat.bin", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let raw = nfnl::RawDump::from_bytes(&bytes).unwrap();
    nfnl::to_ruleset(&nfnl::Dump::parse(&raw).unwrap(), 0, &HashSet::new())
}

fn json() -> Ruleset {
    let texts = nft::parse_text(&fixture("nat-nft.txt"));
    nft::parse_json(&fixture("nat-nft.json"), &texts, 0, &HashSet::new()).unwrap()
}

type Key4 = (String, String, String, u64);

/// (family, table, chain, handle) → (action, conditions, not understood, text).
fn by_handle(rs: &Ruleset) -> BTreeMap<Key4, (Action, Vec<Cond>, Option<String>, String)> {
    let mut out = BTreeMap::new();
    for ((_, fam, table, chain), ch) in &rs.chains {
        for r in &ch.rules {
            let k = (fam.clone(), table.clone(), chain.clone(), r.reference.handle.unwrap());
            out.insert(k, (r.action.clone(), r.conds.clone(), r.not_understood.clone(), r.reference.text.clone()));
        }
    }
    out
}

fn k(fam: &str, table: &str, chain: &str, h: u64) -> Key4 {
    (fam.into(), table.into(), chain.into(), h)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn dnat(a: &str, port: Option<u16>) -> Action {
    Action::Nat(NatAction::Dnat { addr: ip(a), port })
}

#[test]
fn nft_nat_statements_read_alike_over_netlink_and_json() {
    let (nl, js) = (netlink(), json());
    let (a, b) = (by_handle(&nl), by_handle(&js));
    assert_eq!(a.len(), 24);
    let want = [
        (k("ip", "hand", "prerouting", 7), dnat("10.77.1.2", Some(6379))),
        (k("ip", "hand", "prerouting", 8), Action::Jump("web".into())),
        (k("ip", "hand", "prerouting", 9), Action::Nat(NatAction::Redirect { port: Some(6390) })),
        (k("ip", "hand", "prerouting", 10), dnat("10.77.1.2", None)),
        (k("ip", "hand", "prerouting", 12), dnat("10.77.1.4", Some(6379))),
        (k("ip", "hand", "web", 14), dnat("10.77.1.3", Some(8080))),
        (k("ip", "hand", "output", 15), dnat("10.77.1.2", Some(6379))),
        (k("ip", "hand", "output", 16), Action::Nat(NatAction::Redirect { port: Some(6390) })),
        (k("ip", "hand", "output", 17), Action::Nat(NatAction::Redirect { port: None })),
        (k("ip", "hand", "postrouting", 18), Action::Nat(NatAction::Snat)),
        (k("ip6", "hand6", "prerouting", 2), dnat("fd77:1::2", Some(6379))),
        (k("inet", "both", "prerouting", 2), dnat("10.77.1.2", Some(6379))),
        (k("inet", "both", "prerouting", 3), dnat("fd77:1::2", Some(6379))),
    ];
    for (key, action) in &want {
        for (reader, m) in [("netlink", &a), ("nft -j", &b)] {
            let got = &m[key];
            assert_eq!(&got.0, action, "{reader} {key:?}");
            assert_eq!(got.2, None, "{reader} {key:?}");
        }
    }
    // Ranges are read as ranges; a map as one rule per element (the last one by handle).
    let range = |a: &str, b: &str, ports: Option<(u16, u16)>| {
        Action::Nat(NatAction::DnatRange { addrs: (ip(a), ip(b)), ports })
    };
    let mapped = |a: &str, port: Option<u16>, e: &str| {
        Action::Nat(NatAction::DnatMapped { addr: ip(a), port, element: e.into() })
    };
    let want = [
        (k("ip", "hand", "prerouting", 11), range("10.77.1.2", "10.77.1.2", Some((6000, 6010)))),
        (k("ip", "hand", "prerouting", 13), mapped("10.77.1.2", Some(6379), "7001 : 10.77.1.2 . 6379")),
        (k("ip6", "hand6", "prerouting", 3), Action::Nat(NatAction::RedirectRange { ports: (6390, 6392) })),
        (k("ip", "ranges", "prerouting", 3), range("10.77.1.2", "10.77.1.3", Some((6379, 6379)))),
        (k("ip", "ranges", "prerouting", 4), range("10.77.1.2", "10.77.1.2", Some((6379, 6380)))),
        (k("ip", "ranges", "prerouting", 6), mapped("10.77.1.3", None, "16394 : 10.77.1.3")),
        (k("ip", "ranges", "prerouting", 8), mapped("10.77.1.5", None, "10.77.0.5 : 10.77.1.5")),
        (k("ip", "ranges", "prerouting", 9), mapped("10.77.1.3", Some(6380), "16393 : 10.77.1.3 . 6380")),
        (k("ip", "ranges", "prerouting", 10), Action::Nat(NatAction::RedirectRange { ports: (6000, 6010) })),
        (k("ip", "ranges", "prerouting", 11), range("10.77.1.2", "10.77.1.4", None)),
    ];
    for (key, action) in &want {
        for (reader, m) in [("netlink", &a), ("nft -j", &b)] {
            let got = &m[key];
            assert_eq!(&got.0, action, "{reader} {key:?}");
            assert_eq!(got.2, None, "{reader} {key:?}");
        }
    }
    // The two-element map is two rules, each matching its own key.
    for (reader, rs) in [("netlink", &nl), ("nft -j", &js)] {
        let ch = &rs.chains[&(0, "ip".into(), "ranges".into(), "prerouting".into())];
        let six: Vec<_> = ch.rules.iter().filter(|r| r.reference.handle == Some(6)).collect();
        assert_eq!(six.len(), 2, "{reader}");
        assert_eq!(six[0].action, mapped("10.77.1.2", None, "16392 : 10.77.1.2"), "{reader}");
    }
    // `dnat ip to` in an inet table translates IPv4 only: both readers say so.
    for m in [&a, &b] {
        for (h, fam) in [(2, Family::Ipv4), (3, Family::Ipv6)] {
            let conds = &m[&k("inet", "both", "prerouting", h)].1;
            assert!(
                conds.contains(&Cond::Cmp {
                    key: Key::NfProto,
                    op: conndoc_firewall::model::Op::In,
                    elems: vec![Elem::Fam(fam)]
                }),
                "{conds:?}"
            );
        }
        // `fib daddr type local`
        let conds = &m[&k("ip", "hand", "prerouting", 12)].1;
        assert!(conds.iter().any(|c| matches!(c, Cond::Cmp { key: Key::DAddrType, elems, .. } if elems == &[Elem::RouteType(RouteType::LOCAL)])), "{conds:?}");
    }
}

#[test]
fn netlink_nat_rules_render_as_nft_prints_them() {
    let texts = nft::parse_text(&fixture("nat-nft.txt"));
    let nl = by_handle(&netlink());
    assert_eq!(nl.len(), texts.len());
    for ((fam, table, chain, h), (_, _, _, text)) in &nl {
        assert_eq!(text, &texts[&(fam.clone(), table.clone(), chain.clone(), *h)], "{fam} {table} {chain} {h}");
    }
}

#[test]
fn nat_chains_are_attached_apart_from_filter_chains() {
    for rs in [netlink(), json()] {
        assert!(rs.bases.is_empty(), "{:?}", rs.bases);
        let mut b: Vec<_> =
            rs.nat_bases.iter().map(|b| (b.chain.1.clone(), b.chain.3.clone(), b.hook.as_str(), b.priority)).collect();
        b.sort();
        assert_eq!(
            b,
            vec![
                ("inet".into(), "prerouting".into(), "prerouting", -100),
                ("ip".into(), "output".into(), "output", -100),
                ("ip".into(), "postrouting".into(), "postrouting", 100),
                ("ip".into(), "prerouting".into(), "prerouting", -100),
                ("ip".into(), "prerouting".into(), "prerouting", -100),
                ("ip6".into(), "prerouting".into(), "prerouting", -100),
            ]
        );
    }
}

/// (chain, position) → (action, not understood, text).
type SaveRules = BTreeMap<(String, u32), (Action, Option<String>, String)>;

/// A save file's rules.
fn save(name: &str, tool: FirewallTool, family: Family) -> (Ruleset, SaveRules) {
    let rs = ipt::parse_save(&fixture(name), tool, family, 1);
    let mut out = BTreeMap::new();
    for ((_, _, _, chain), ch) in &rs.chains {
        for r in &ch.rules {
            out.insert(
                (chain.clone(), r.reference.position.unwrap()),
                (r.action.clone(), r.not_understood.clone(), r.reference.text.clone()),
            );
        }
    }
    (rs, out)
}

#[test]
fn docker_iptables_nat_rules_from_both_backends() {
    for (name, tool) in [
        ("nat-iptables-nft.save", FirewallTool::IptablesNft),
        ("nat-iptables-legacy.save", FirewallTool::IptablesLegacy),
    ] {
        let (rs, m) = save(name, tool, Family::Ipv4);
        let r = |c: &str, p: u32| m[&(c.to_string(), p)].clone();
        let docker = r("DOCKER", 2);
        assert_eq!(docker.0, dnat("172.17.0.2", Some(6379)), "{name}");
        assert_eq!(docker.1, None);
        assert_eq!(
            docker.2,
            "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 16379 -j DNAT --to-destination 172.17.0.2:6379"
        );
        assert_eq!(r("DOCKER", 1).0, Action::Return);
        // Docker's jumps test the destination's address type.
        let jump = &rs.chains.iter().find(|(id, _)| id.3 == "PREROUTING").unwrap().1.rules[0];
        assert_eq!(jump.action, Action::Jump("DOCKER".into()));
        assert_eq!(jump.not_understood, None);
        assert!(jump.conds.contains(&Cond::Cmp {
            key: Key::DAddrType,
            op: conndoc_firewall::model::Op::In,
            elems: vec![Elem::RouteType(RouteType::LOCAL)]
        }));
        assert_eq!(r("PREROUTING", 2).0, Action::Nat(NatAction::Redirect { port: Some(6390) }));
        assert_eq!(r("PREROUTING", 3).0, dnat("10.77.1.2", None));
        let range = |a: &str, b: &str, ports| Action::Nat(NatAction::DnatRange { addrs: (ip(a), ip(b)), ports });
        assert_eq!(r("PREROUTING", 4).0, range("10.77.1.2", "10.77.1.2", Some((6000, 6010))), "{name}");
        assert_eq!(r("PREROUTING", 5).0, range("10.77.1.2", "10.77.1.3", Some((6379, 6380))), "{name}");
        assert_eq!(r("PREROUTING", 6).0, range("10.77.1.2", "10.77.1.4", None), "{name}");
        assert_eq!(r("OUTPUT", 2).0, Action::Nat(NatAction::RedirectRange { ports: (6390, 6392) }), "{name}");
        assert_eq!(r("POSTROUTING", 1).0, Action::Nat(NatAction::Snat));
        assert_eq!(rs.not_understood_total, 0, "{name}");
        // The nat table's built-in chains, never among the filter chains.
        assert!(rs.bases.is_empty());
        let mut hooks: Vec<_> = rs.nat_bases.iter().map(|b| (b.hook.as_str(), b.priority)).collect();
        hooks.sort();
        assert_eq!(hooks, vec![("input", 100), ("output", -100), ("postrouting", 100), ("prerouting", -100)]);
    }
    let (_, m) = save("nat-ip6tables-nft.save", FirewallTool::Ip6tablesNft, Family::Ipv6);
    assert_eq!(m[&("PREROUTING".to_string(), 1)].0, dnat("fd77:1::2", Some(6379)));
    assert_eq!(m[&("PREROUTING".to_string(), 2)].0, Action::Nat(NatAction::Redirect { port: Some(6390) }));
}

fn syn(dst: &str, port: u16, iif: Option<&str>, local: Option<bool>) -> conndoc_firewall::Packet {
    let d = ip(dst);
    conndoc_firewall::Packet {
        family: Family::of(&d),
        source: Some(if d.is_ipv4() { ip("10.77.0.1") } else { ip("fd77::1") }),
        destination: d,
        source_port: Some(40000),
        destination_port: port,
        input_interface: iif.map(String::from),
        output_interface: None,
        destination_local: local,
    }
}

#[test]
fn the_probe_meets_the_translation_its_rules_make() {
    use conndoc_facts::firewall::Hook;
    use conndoc_facts::nat::TranslationKind;
    for (reader, rs) in [("netlink", netlink()), ("nft -j", json())] {
        let pre = |dst: &str, port: u16, iif: &str, local: Option<bool>| {
            let p = syn(dst, port, Some(iif), local);
            (rs.translate(Hook::Prerouting, &p), p)
        };
        let (e, p) = pre("10.77.0.2", 16379, "veth0", Some(true));
        let t = e.translation(&p).unwrap().unwrap();
        assert_eq!(
            (t.kind, t.from.to_string(), t.to.to_string()),
            (TranslationKind::Dnat, "10.77.0.2:16379".into(), "10.77.1.2:6379".into()),
            "{reader}"
        );
        assert_eq!(t.rule.as_ref().and_then(|r| r.handle), Some(7), "{reader}");
        assert_eq!(t.hook, Some(Hook::Prerouting));
        // A jump, followed; the rule in the jumped-to chain translates.
        let (e, p) = pre("10.77.0.2", 16380, "veth0", Some(true));
        assert_eq!(e.path.iter().map(|r| r.handle).collect::<Vec<_>>(), vec![Some(8)], "{reader}");
        assert_eq!(e.translation(&p).unwrap().unwrap().to.to_string(), "10.77.1.3:8080");
        // From loopback the chain returns first; another address misses `ip daddr` in web.
        assert_eq!(pre("10.77.0.2", 16379, "lo", Some(true)).0.matched, None, "{reader}");
        assert_eq!(pre("10.77.0.9", 16380, "veth0", Some(true)).0.matched, None, "{reader}");
        // DNAT without a port keeps the dialled one; redirect keeps the address.
        let (e, p) = pre("10.77.0.2", 16382, "veth0", Some(true));
        assert_eq!(e.translation(&p).unwrap().unwrap().to.to_string(), "10.77.1.2:16382");
        let (e, p) = pre("10.77.0.2", 16381, "veth0", Some(true));
        let t = e.translation(&p).unwrap().unwrap();
        assert_eq!((t.kind, t.to.to_string()), (TranslationKind::Redirect, "10.77.0.2:6390".into()));
        // A port range: every backend listed, the first one is `to`.
        let (e, p) = pre("10.77.0.2", 16383, "veth0", Some(true));
        let t = e.translation(&p).unwrap().unwrap();
        assert_eq!((t.rule.as_ref().and_then(|r| r.handle), t.to.to_string()), (Some(11), "10.77.1.2:6000".into()));
        assert_eq!((t.choices.len(), t.choices_total), (11, 11), "{reader}");
        assert_eq!(t.choices[10].to_string(), "10.77.1.2:6010");
        assert!(t.describe().contains("one of 11 backends the kernel picks from per connection"), "{}", t.describe());
        // `fib daddr type local`: only for the host's own addresses; unknown is named.
        let (e, p) = pre("10.77.0.2", 16384, "veth0", Some(true));
        assert_eq!(e.translation(&p).unwrap().unwrap().to.to_string(), "10.77.1.4:6379");
        assert_eq!(pre("10.77.0.2", 16384, "veth0", Some(false)).0.matched, None, "{reader}");
        // A map applies to its keys only: the element the packet has is followed.
        let (e, p) = pre("10.77.0.2", 7001, "veth0", Some(true));
        let t = e.translation(&p).unwrap().unwrap();
        assert_eq!((t.rule.as_ref().and_then(|r| r.handle), t.to.to_string()), (Some(13), "10.77.1.2:6379".into()));
        assert_eq!(t.element.as_deref(), Some("7001 : 10.77.1.2 . 6379"), "{reader}");
        assert!(t.describe().contains("(map element `7001 : 10.77.1.2 . 6379`)"), "{}", t.describe());
        assert_eq!(pre("10.77.0.2", 7002, "veth0", Some(true)).0.matched, None, "{reader}");
        // The ranges table: an address range, an address-keyed map, a named map, a redirect range.
        let to = |dst: &str, port: u16| {
            let (e, p) = pre(dst, port, "veth0", Some(true));
            let t = e.translation(&p).unwrap().unwrap();
            (t.to.to_string(), t.choices.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            to("10.77.0.2", 16390),
            ("10.77.1.2:6379".into(), vec!["10.77.1.2:6379".into(), "10.77.1.3:6379".into()])
        );
        assert_eq!(to("10.77.0.2", 16391).1, vec!["10.77.1.2:6379".to_string(), "10.77.1.2:6380".into()]);
        assert_eq!(to("10.77.0.2", 16392), ("10.77.1.2:16392".into(), vec![]));
        // The map's other key: the rule's own `tcp dport 16392` comes first.
        assert_eq!(pre("10.77.0.2", 16394, "veth0", Some(true)).0.matched, None, "{reader}");
        assert_eq!(to("10.77.0.5", 16000), ("10.77.1.5:16000".into(), vec![]));
        assert_eq!(to("10.77.0.2", 16393), ("10.77.1.3:6380".into(), vec![]));
        assert_eq!(to("10.77.0.2", 16395).1.len(), 11);
        assert_eq!(
            to("10.77.0.2", 16396).1,
            vec!["10.77.1.2:16396".to_string(), "10.77.1.3:16396".into(), "10.77.1.4:16396".into()]
        );
        let (e, _) = pre("10.77.0.2", 16384, "veth0", None);
        assert!(e.not_understood.iter().any(|n| n.rule.handle == Some(12)), "{reader} {:?}", e.not_understood);
        // IPv6, and the inet table's `dnat ip6 to` for an IPv6 packet.
        let (e, p) = pre("fd77::2", 16379, "veth0", Some(true));
        assert_eq!(e.translation(&p).unwrap().unwrap().to.to_string(), "[fd77:1::2]:6379");
        let (e, p) = pre("fd77::2", 17379, "veth0", Some(true));
        let t = e.translation(&p).unwrap().unwrap();
        assert_eq!((t.to.to_string(), t.rule.unwrap().handle), ("[fd77:1::2]:6379".into(), Some(3)), "{reader}");
        // This host's own connection: nat OUTPUT; a redirect goes to loopback.
        let out = syn("10.77.0.2", 16381, Some(""), Some(true));
        let e = rs.translate(Hook::Output, &out);
        assert_eq!(e.translation(&out).unwrap().unwrap().to.to_string(), "127.0.0.1:6390");
        let out = syn("10.77.0.2", 16385, Some(""), Some(true));
        assert_eq!(
            rs.translate(Hook::Output, &out).translation(&out).unwrap().unwrap().to.to_string(),
            "127.0.0.1:16385"
        );
        // The source translation in postrouting is no destination translation.
        let p = syn("10.77.0.2", 16379, None, Some(true));
        assert_eq!(rs.translate(Hook::Postrouting, &p).translation(&p), Ok(None));
    }
}

#[test]
fn dockers_chain_is_followed_from_prerouting_and_output() {
    use conndoc_facts::firewall::Hook;
    for (name, tool) in [
        ("nat-iptables-nft.save", FirewallTool::IptablesNft),
        ("nat-iptables-legacy.save", FirewallTool::IptablesLegacy),
    ] {
        let (rs, _) = save(name, tool, Family::Ipv4);
        let p = syn("10.77.0.2", 16379, Some("eth0"), Some(true));
        let e = rs.translate(Hook::Prerouting, &p);
        let t = e.translation(&p).unwrap().unwrap();
        assert_eq!(t.to.to_string(), "172.17.0.2:6379", "{name}");
        assert_eq!(t.rule.as_ref().map(|r| (r.chain.as_str(), r.position)), Some(("DOCKER", Some(2))));
        assert_eq!(e.path.len(), 1);
        // From the bridge itself DOCKER returns; to another host's address the jump is not taken.
        assert_eq!(rs.translate(Hook::Prerouting, &syn("10.77.0.2", 16379, Some("docker0"), Some(true))).matched, None);
        assert_eq!(rs.translate(Hook::Prerouting, &syn("192.0.2.1", 16379, Some("eth0"), Some(false))).matched, None);
        // The host's own connection to its own address: OUTPUT's jump (no input interface:
        // the kernel compares an empty name, so `! -i docker0` holds).
        let p = syn("10.77.0.2", 16379, Some(""), Some(true));
        assert_eq!(rs.translate(Hook::Output, &p).translation(&p).unwrap().unwrap().to.to_string(), "172.17.0.2:6379");
        // ... but not to loopback (`! -d 127.0.0.0/8`).
        assert_eq!(rs.translate(Hook::Output, &syn("127.0.0.1", 16379, Some(""), Some(true))).matched, None);
    }
}

/// iptables-nft's nat table read from the netlink dump (its xt DNAT/REDIRECT targets):
/// the same ranges as iptables-nft-save prints, every backend listed.
#[test]
fn iptables_nft_ranges_over_netlink() {
    use conndoc_facts::firewall::Hook;
    let bytes = std::fs::read(format!("{}/tests/fixtures/nat-iptables-nft.bin", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let raw = nfnl::RawDump::from_bytes(&bytes).unwrap();
    let d = nfnl::Dump::parse(&raw).unwrap();
    let (v4, _) = nfnl::iptnft::from_dump(&d);
    let text = v4.save_text("iptables-nft-save").unwrap();
    assert!(text.contains("--dport 16390 -j DNAT --to-destination 10.77.1.2-10.77.1.3:6379-6380"), "{text}");
    let rs = ipt::parse_save(&text, FirewallTool::IptablesNft, Family::Ipv4, 1);
    assert_eq!(rs.not_understood_total, 0);
    let p = syn("10.77.0.2", 16390, Some("eth0"), Some(false));
    let t = rs.translate(Hook::Prerouting, &p).translation(&p).unwrap().unwrap();
    let got: Vec<String> = t.choices.iter().map(|c| c.to_string()).collect();
    assert_eq!(got, ["10.77.1.2:6379", "10.77.1.2:6380", "10.77.1.3:6379", "10.77.1.3:6380"]);
    assert_eq!(t.to.to_string(), "10.77.1.2:6379");
    let p = syn("10.77.0.2", 16381, Some(""), Some(false));
    let t = rs.translate(Hook::Output, &p).translation(&p).unwrap().unwrap();
    assert_eq!(
        t.choices.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ["127.0.0.1:6390", "127.0.0.1:6391", "127.0.0.1:6392"]
    );
}
