//! Fuzzing the DNS reply parser with real dnsmasq replies as seeds (tests/corpus/dns,
//! recorded by tests/record-corpus.py, query id 0x1234): no panic, no hang, bounded memory,
//! and never more addresses than answer records.

use conndoc_facts::resolve::{DnsOutcome, QType};
use conndoc_probe::dns::parse_reply;
use conndoc_testsupport::fuzz::{check_bytes, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dns")
}

#[test]
fn dns_replies() {
    check_bytes(&corpus(), |buf| {
        for qt in [QType::A, QType::Aaaa] {
            if let Ok(DnsOutcome::Answer { addresses, .. }) = parse_reply(buf, 0x1234, qt) {
                let an = u16::from_be_bytes([buf[6], buf[7]]) as usize;
                assert!(!addresses.is_empty() && addresses.len() <= an);
            }
        }
    });
}

#[test]
fn recorded_replies_parse() {
    let read = |n: &str| std::fs::read(corpus().join(n)).unwrap();
    let a = parse_reply(&read("a-api.lab"), 0x1234, QType::A).unwrap();
    assert!(matches!(&a, DnsOutcome::Answer { addresses, .. } if addresses[0].to_string() == "10.77.0.2"), "{a:?}");
    let c = parse_reply(&read("cname-a-alias.lab"), 0x1234, QType::A).unwrap();
    assert!(matches!(&c, DnsOutcome::Answer { addresses, .. } if addresses[0].to_string() == "10.77.0.2"), "{c:?}");
    assert_eq!(parse_reply(&read("nxdomain-none.lab"), 0x1234, QType::A).unwrap(), DnsOutcome::NxDomain);
}
