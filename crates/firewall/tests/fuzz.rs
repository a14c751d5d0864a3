//! Fuzzing the nf_tables decoder with real kernel bytes as seeds: tests/corpus/nfnl/ holds
//! fixtures/nfnl-mixed.bin (recorded by fixtures/record.sh) whole and cut into chunks of six
//! messages, in RawDump's file form. No panic, no hang, bounded memory; a dump that parses
//! becomes a ruleset whose rules all have text.

use conndoc_firewall::nfnl;
use conndoc_testsupport::fuzz::{check_bytes, CappedAlloc};
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
