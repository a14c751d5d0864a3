//! A bounded worker pool: every fan-out in the probe (one connect per address, one query
//! per nameserver) runs on at most a fixed number of threads, however many items come.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Run `f` on every item using at most `workers` threads, the caller's among them; the
/// results keep the items' order. A thread that cannot be started leaves its share to the
/// others (the caller's thread always works), so a thread limit slows the work down
/// instead of losing it. One item runs on the caller's thread alone: no thread is spawned
/// for the usual single-address connect (a spawn is ~50 µs of a ~2 ms diagnosis).
pub fn map_bounded<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else { break };
        let r = f(item);
        if let Ok(mut s) = slots.lock() {
            s[i] = Some(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers.min(items.len()) {
            let _ = std::thread::Builder::new().name("conndoc-probe".into()).spawn_scoped(s, work);
        }
        work();
    });
    slots.into_inner().unwrap_or_default().into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn never_more_threads_than_workers_and_order_kept() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..200).collect();
        let out = map_bounded(&items, 8, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 8 && peak > 1, "peak concurrency {peak}");
    }

    #[test]
    fn empty_and_single() {
        assert!(map_bounded(&[] as &[u8], 4, |_| 1).is_empty());
        assert_eq!(map_bounded(&[5u8], 0, |&x| x + 1), vec![6], "zero workers still runs the work");
    }
}
