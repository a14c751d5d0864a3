//! The watch config's fast reader (crates/watch/src/config/fast.rs) against the `toml`
//! crate, as a property: on any input the fast reader either declines or builds exactly
//! what toml builds (spans included) — it must never accept what toml rejects. Seeds:
//! tests/corpus/watch-config/ (the shipped example configs and the shapes its unit test
//! names). The module is compiled here from its source file, so the code under test is
//! the code in the tree.

use conndoc_testsupport::fuzz::{check_str, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

// fast.rs reaches these as `super::…`.
#[allow(unused_imports)]
use conndoc_watch::config::{RawConfig, RawDefaults, RawReceiver, RawTarget};
#[path = "../../watch/src/config/fast.rs"]
#[allow(dead_code)]
mod fast;

#[test]
fn fast_reader_declines_or_agrees_with_toml() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/watch-config");
    check_str(&dir, |text| {
        if let Some(fast) = fast::parse(text) {
            let slow = toml::from_str::<RawConfig>(text)
                .unwrap_or_else(|e| panic!("the fast reader took what toml rejects ({e}):\n{text:?}"));
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text:?}");
        }
    });
}

#[test]
fn the_seeds_take_the_fast_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/watch-config");
    for name in ["example-watch.toml", "small.toml", "crlf-inline.toml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(fast::parse(&text).is_some(), "{name}: the fast reader declined");
    }
}
