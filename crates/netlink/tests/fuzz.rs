//! Fuzzing the netlink/sock_diag parsers with real kernel datagrams as seeds
//! (tests/corpus/, recorded by tests/record-corpus.py): no panic, no hang, bounded memory,
//! and every message the iterator yields lies inside the datagram.

use conndoc_netlink::{attrs, bytecode, diag, messages, route, NLMSG_HDRLEN};
use conndoc_testsupport::fuzz::{check_bytes, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

fn corpus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[test]
fn datagrams_never_panic_and_stay_in_bounds() {
    check_bytes(&corpus(), |buf| {
        let mut total = 0;
        for m in messages(buf).take(10_000) {
            let Ok(m) = m else { break };
            total += NLMSG_HDRLEN + m.payload.len();
            assert!(total <= buf.len() + 3 * 10_000, "messages reach past the datagram");
            for a in attrs(m.payload).take(10_000) {
                assert!(a.value.len() <= m.payload.len());
            }
            // Whatever the type says, every parser takes any payload.
            let _ = diag::parse_diag_msg(m.payload);
            let _ = route::parse_link(m.payload);
            let _ = route::parse_addr(m.payload);
            let _ = route::parse_neigh(m.payload);
            // And the filter bytecode's audit, and running what it lets through.
            if let Ok(ops) = bytecode::decode(m.payload) {
                let sk = bytecode::SockView {
                    local: "127.0.0.1:7003".parse().unwrap(),
                    remote: "[::1]:80".parse().unwrap(),
                };
                let _ = bytecode::run(&ops, &sk);
            }
        }
    });
}

#[test]
fn recorded_replies_parse() {
    // The seeds themselves are real replies: they must decode, not merely not panic.
    let read = |n: &str| std::fs::read(corpus().join(n)).unwrap();
    let socks: Vec<_> = messages(&read("diag-v4-0.bin"))
        .filter_map(Result::ok)
        .filter_map(|m| diag::parse_diag_msg(m.payload))
        .collect();
    assert!(socks.iter().any(|s| s.local.port() == 7000 && s.state == 10), "{socks:?}");
    let v6: Vec<_> = messages(&read("diag-v6-0.bin"))
        .filter_map(Result::ok)
        .filter_map(|m| diag::parse_diag_msg(m.payload))
        .collect();
    assert!(v6.iter().any(|s| s.local.port() == 7001), "{v6:?}");
    let links: Vec<_> = messages(&read("route-link-0.bin"))
        .filter_map(Result::ok)
        .filter_map(|m| route::parse_link(m.payload))
        .collect();
    assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
}
