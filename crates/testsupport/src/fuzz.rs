//! Bounded fuzzing on stable Rust: property tests (proptest) that feed a parser mutated
//! seeds from a corpus kept in the repository, plus random inputs, and check it neither
//! panics nor hangs nor allocates without bound (docs/testing.md, "Fuzz tests").
//!
//! - Every corpus file is replayed first, every run.
//! - Then up to `CONNDOC_FUZZ_CASES` (default 2,000) generated inputs, stopping early when
//!   the time budget `CONNDOC_FUZZ_SECS` (default 3 s) is spent.
//! - A case that does not return within the budget plus 20 s is a hang: the test fails and
//!   prints the input (hex), to add to the corpus once fixed.
//! - Memory: a test binary that declares [`CappedAlloc`] as its global allocator aborts on
//!   the first allocation past the cap.
//!
//! Longer runs: `CONNDOC_FUZZ_CASES=1000000 CONNDOC_FUZZ_SECS=600 cargo test -p CRATE --test fuzz`.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Generated cases per property (`CONNDOC_FUZZ_CASES`).
pub fn cases() -> u32 {
    env_num("CONNDOC_FUZZ_CASES", 2000).min(u32::MAX as u64) as u32
}

/// Time budget per property (`CONNDOC_FUZZ_SECS`).
pub fn budget() -> Duration {
    Duration::from_secs(env_num("CONNDOC_FUZZ_SECS", 3))
}

/// Every file in `dir`, sorted by name (the corpus). Panics when there is none: a fuzz
/// test without seeds tests little.
pub fn corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files.iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap())).collect()
}

#[derive(Debug, Clone)]
enum Op {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Remove(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Repeat(prop::sample::Index, u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    use prop::sample::Index;
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Op::Flip(i, b)),
        // Boundary bytes a length or type field is most sensitive to.
        (any::<Index>(), prop_oneof![Just(0u8), Just(0xff), Just(0x7f), Just(0x80), Just(1), any::<u8>()])
            .prop_map(|(i, v)| Op::Set(i, v)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Op::Insert(i, v)),
        (any::<Index>(), 1u8..32).prop_map(|(i, n)| Op::Remove(i, n)),
        any::<Index>().prop_map(Op::Truncate),
        (any::<Index>(), 1u8..64, 1u8..8).prop_map(|(i, n, k)| Op::Repeat(i, n, k)),
    ]
}

fn apply(mut b: Vec<u8>, ops: &[Op]) -> Vec<u8> {
    for o in ops {
        let n = b.len();
        match o {
            Op::Flip(i, bit) if n > 0 => b[i.index(n)] ^= 1 << bit,
            Op::Set(i, v) if n > 0 => b[i.index(n)] = *v,
            Op::Insert(i, v) => {
                let at = i.index(n + 1);
                b.splice(at..at, v.iter().copied());
            }
            Op::Remove(i, k) if n > 0 => {
                let at = i.index(n);
                b.drain(at..(at + *k as usize).min(n));
            }
            Op::Truncate(i) => b.truncate(i.index(n + 1)),
            Op::Repeat(i, len, times) if n > 0 => {
                let at = i.index(n);
                let chunk: Vec<u8> = b[at..(at + *len as usize).min(n)].to_vec();
                for _ in 0..*times {
                    b.splice(at..at, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    b
}

/// Inputs: a corpus seed with a few mutations, or random bytes.
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (prop::sample::select(seeds), prop::collection::vec(op(), 0..6)).prop_map(|(s, ops)| apply(s, &ops));
    prop_oneof![4 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..512)]
}

/// Fuzz `f` with the corpus in `corpus_dir` (replayed first) and generated inputs; `f`
/// panics on a wrong result (e.g. a property that does not hold), returns otherwise.
pub fn check_bytes(corpus_dir: &Path, f: impl Fn(&[u8]) + Send + Sync + 'static) {
    let seeds = corpus(corpus_dir);
    let regressions = corpus_dir.with_extension("regressions");
    check(seeds, regressions, Arc::new(f));
}

/// As [`check_bytes`], for a text parser: inputs are made valid UTF-8 (lossily).
pub fn check_str(corpus_dir: &Path, f: impl Fn(&str) + Send + Sync + 'static) {
    check_bytes(corpus_dir, move |b| f(&String::from_utf8_lossy(b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The function under test, shared with the worker thread.
type Target = Arc<dyn Fn(&[u8]) + Send + Sync>;

fn check(seeds: Vec<(String, Vec<u8>)>, regressions: PathBuf, f: Target) {
    let current: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let (cur, budget, cases) = (current.clone(), budget(), cases());
    let worker = std::thread::spawn(move || {
        for (name, s) in &seeds {
            *cur.lock().unwrap() = s.clone();
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s))) {
                let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string()));
                let _ = tx.send(Err(format!("corpus file {name} fails: {}", msg.unwrap_or_default())));
                return;
            }
        }
        let config = Config {
            cases,
            max_global_rejects: 64,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(Box::leak(
                regressions.display().to_string().into_boxed_str(),
            )))),
            ..Config::default()
        };
        let start = Instant::now();
        let spent = std::sync::atomic::AtomicBool::new(false);
        let mut runner = TestRunner::new(config);
        let strategy = inputs(seeds.into_iter().map(|(_, s)| s).collect());
        let result = runner.run(&strategy, |input| {
            if start.elapsed() > budget {
                // Budget spent: reject the rest, which ends the run (max_global_rejects).
                spent.store(true, Ordering::Relaxed);
                return Err(TestCaseError::reject("time budget spent"));
            }
            *cur.lock().unwrap() = input.clone();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&input))).map_err(|p| {
                let msg = p.downcast_ref::<String>().cloned().or(p.downcast_ref::<&str>().map(|s| s.to_string()));
                TestCaseError::fail(msg.unwrap_or_else(|| "panic".into()))
            })
        });
        let _ = tx.send(match result {
            Ok(()) => Ok(()),
            Err(TestError::Abort(_)) if spent.load(Ordering::Relaxed) => Ok(()),
            Err(TestError::Fail(why, input)) => {
                Err(format!("{why}\n  minimal input ({} bytes): {}", input.len(), hex(&input)))
            }
            Err(e) => Err(e.to_string()),
        });
    });
    match rx.recv_timeout(budget * 2 + Duration::from_secs(20)) {
        Ok(Ok(())) => {
            let _ = worker.join();
        }
        Ok(Err(e)) => panic!("fuzz: {e}"),
        Err(_) => {
            let input = current.lock().map(|c| hex(&c)).unwrap_or_default();
            panic!("fuzz: a case did not return (hang) — input: {input}");
        }
    }
}

/// A global allocator that refuses (so the process aborts) any allocation that would take
/// the live total past `cap` bytes: unbounded memory in a parser fails the test run.
pub struct CappedAlloc {
    cap: usize,
    live: AtomicUsize,
}

impl CappedAlloc {
    pub const fn new(cap: usize) -> CappedAlloc {
        CappedAlloc { cap, live: AtomicUsize::new(0) }
    }
}

// SAFETY: delegates to the system allocator; only counts, and refuses by returning null
// as GlobalAlloc allows.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.live.fetch_add(layout.size(), Ordering::Relaxed) + layout.size() > self.cap {
            self.live.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        // SAFETY: same layout as asked.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_in_bounds() {
        let mut runner = TestRunner::new(Config { cases: 500, failure_persistence: None, ..Config::default() });
        runner
            .run(&(prop::collection::vec(any::<u8>(), 0..20), prop::collection::vec(op(), 0..10)), |(b, ops)| {
                let out = apply(b.clone(), &ops);
                prop_assert!(out.len() <= b.len() + 10 * 64 * 8);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_panicking_parser_is_caught_with_its_input() {
        let dir = std::env::temp_dir().join(format!("cdfuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("seed"), b"ok").unwrap();
        let r = std::panic::catch_unwind(|| {
            check_bytes(&dir, |b| assert!(!b.contains(&0xff), "found 0xff"));
        });
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(dir.with_extension("regressions"));
        let msg = r.expect_err("the property fails on an input with 0xff");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("found 0xff") && msg.contains("minimal input"), "{msg}");
    }
}
