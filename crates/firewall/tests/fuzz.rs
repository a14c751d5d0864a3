//! Fuzzing the nf_tables decoder with real kernel bytes as seeds: tests/corpus/nfnl/ holds
//! fixtures/nfnl-mixed.bin (recorded by fixtures/record.sh) whole and cut into chunks of six
//! messages, in RawDump's file form. No panic, no hang, bounded memory; a dump that parses
//! becomes a ruleset whose rules all have text.
//!
//! The `*-save` text parser likewise: tests/corpus/ipt/ holds copies of the recorded
//! `iptables-legacy-save`, `iptables-nft-save`, `ip6tables-*-save` fixtures (fixtures/record.sh)
//! and one by-hand file with counters, quoted comments and a table without COMMIT.

use conndoc_facts::firewall::FirewallTool;
use conndoc_facts::Family;
use conndoc_firewall::{ipt, nfnl, Ruleset};
use conndoc_testsupport::fuzz::{check_bytes, check_str, CappedAlloc};
use std::collections::HashSet;
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

#[test]
fn nf_tables_dumps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/nfnl");
    check_bytes(&dir, |b| {
        let Some(raw) = nfnl::RawDump::from_bytes(b) else { return };
        assert_eq!(nfnl::RawDump::from_bytes(&raw.to_bytes()).as_ref(), Some(&raw), "file form round trip");
        if let Ok(d) = nfnl::Dump::parse(&raw) {
            let rs = nfnl::to_ruleset(&d, 0, &HashSet::new());
            let _ = format!("{rs:?}");
        }
    });
}

#[test]
fn the_whole_seed_decodes() {
    let b =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/nfnl/whole-nfnl-mixed.bin")).unwrap();
    let d = nfnl::Dump::parse(&nfnl::RawDump::from_bytes(&b).unwrap()).unwrap();
    let n = nfnl::to_ruleset(&d, 0, &HashSet::new()).rule_count;
    assert!(n > 10, "{n} rules");
}

/// The ruleset in an order that does not depend on hashing, for comparing two parses.
fn canonical(rs: &Ruleset) -> String {
    let mut chains: Vec<_> = rs.chains.iter().map(|(id, c)| format!("{id:?} {c:?}")).collect();
    chains.sort();
    let mut bases: Vec<_> = rs.bases.iter().chain(&rs.nat_bases).map(|b| format!("{b:?}")).collect();
    bases.sort();
    format!("{chains:?} {bases:?} {} {}", rs.rule_count, rs.not_understood_total)
}

#[test]
fn iptables_save_text() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/ipt");
    check_str(&dir, |text| {
        let lines: Vec<&str> = text.lines().collect();
        for (tool, family) in [(FirewallTool::IptablesNft, Family::Ipv4), (FirewallTool::Ip6tablesLegacy, Family::Ipv6)]
        {
            let rs = ipt::parse_save(text, tool, family, 1);
            assert_eq!(canonical(&rs), canonical(&ipt::parse_save(text, tool, family, 1)), "deterministic");
            let mut rules = 0u32;
            let mut unread = 0u32;
            for ((source, fam, table, chain), c) in &rs.chains {
                assert_eq!((*source, fam.as_str()), (1, family.to_string().as_str()));
                for (k, r) in c.rules.iter().enumerate() {
                    let at = &r.reference;
                    assert_eq!((&at.table, &at.chain, at.position), (table, chain, Some(k as u32 + 1)), "{at:?}");
                    let n = at.line.expect("a rule has its line") as usize;
                    assert!(n >= 1 && n <= lines.len(), "line {n} of {}", lines.len());
                    assert!(lines[n - 1].contains(at.text.as_str()), "rule text {:?} not on line {n}", at.text);
                    rules += 1;
                    unread += u32::from(r.not_understood.is_some());
                }
            }
            assert_eq!((rs.rule_count, rs.not_understood_total), (rules, unread));
            // A policy belongs to a chain the input declared in that table, at its line.
            for b in rs.bases.iter().chain(&rs.nat_bases) {
                assert!(rs.chains.contains_key(&b.chain), "policy of undeclared chain {:?}", b.chain);
                let n = b.policy.0.line.expect("a policy has its line") as usize;
                // The chain is the first word after `:`, as iptables-restore reads it (strtok):
                // `: INPUT DROP` declares INPUT too.
                let declared = lines[n - 1].trim_start().strip_prefix(':').and_then(|d| d.split_whitespace().next());
                assert_eq!(declared, Some(b.chain.3.as_str()), "policy line {n}");
            }
        }
    });
}

#[test]
fn the_recorded_saves_parse_fully() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/ipt/iptables-legacy.save"))
            .unwrap();
    let rs = ipt::parse_save(&text, FirewallTool::IptablesLegacy, Family::Ipv4, 1);
    assert!(rs.rule_count > 5 && !rs.bases.is_empty(), "{} rules", rs.rule_count);
}

/// Found by `iptables_save_text`: a table without COMMIT lent its policies to the next table
/// (filter's `:FORWARD DROP` became a nat base chain).
#[test]
fn a_table_without_commit_keeps_its_policies() {
    let rs = ipt::parse_save(
        "*filter\n:FORWARD DROP [0:0]\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
        FirewallTool::IptablesNft,
        Family::Ipv4,
        1,
    );
    let tables = |bs: &[conndoc_firewall::model::BaseChain]| {
        bs.iter().map(|b| b.chain.2.clone() + "/" + &b.chain.3).collect::<Vec<_>>()
    };
    assert_eq!(tables(&rs.bases), ["filter/FORWARD"]);
    assert_eq!(tables(&rs.nat_bases), ["nat/PREROUTING"]);
    assert!(!rs.bases[0].policy.1, "DROP");
}
