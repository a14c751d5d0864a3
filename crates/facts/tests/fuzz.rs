//! Fuzzing the two text parsers every input goes through: durations (one parser for the
//! whole project) and target URLs. Seeds: tests/corpus/{duration,target}/ (written by
//! hand: the forms the docs name and the hostile ones issue 11 found).

use conndoc_facts::{duration, Target};
use conndoc_testsupport::fuzz::{check_str, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

fn corpus(kind: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(kind)
}

#[test]
fn durations_are_in_range_and_format_back_exactly() {
    check_str(&corpus("duration"), |s| {
        if let Ok(d) = duration::parse(s) {
            assert!(d <= duration::MAX, "{s:?} → {d:?} is past the maximum");
            let text = duration::format(d);
            assert_eq!(duration::parse(&text).ok(), Some(d), "{s:?} → {d:?} → {text:?}");
        }
    });
}

#[test]
fn targets_parse_or_refuse_without_echoing_a_password() {
    // A password: between "user:" and the last "@". Only one that occurs nowhere else in the
    // input can be told apart.
    fn password(s: &str) -> Option<&str> {
        let at = s.rfind('@')?;
        let colon = s.find("://").map_or(0, |i| i + 3);
        let pw_start = s[colon..at.max(colon)].find(':').map(|i| colon + i + 1)?;
        let pw = &s[pw_start..at];
        (pw.len() >= 6 && !pw.contains(['@', ':']) && !s[at..].contains(pw) && !s[..pw_start].contains(pw))
            .then_some(pw)
    }
    check_str(&corpus("target"), |s| match Target::parse(s) {
        Ok(t) => {
            let _ = (t.authority(), format!("{t:?}"));
            // redis(s):// and tcp:// take everything up to the last '@' as the userinfo, so
            // a parsed target never shows its password (http keeps the URL standard's split).
            let lower = s.trim().to_ascii_lowercase();
            if ["redis://", "rediss://", "tcp://"].iter().any(|p| lower.starts_with(p)) {
                if let Some(pw) = password(s.trim()) {
                    assert!(!t.input.contains(pw), "{s:?}: input {:?}", t.input);
                    assert!(!format!("{t:?}").contains(pw), "{s:?}: {t:?}");
                }
            }
        }
        Err(e) => {
            if let Some(pw) = password(s) {
                assert!(!e.to_string().contains(pw), "{s:?}: {e}");
            }
        }
    });
}
