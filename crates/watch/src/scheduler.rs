//! The drift-free schedule of one target: checks at `epoch + phase + k × interval`, the
//! phase stable per name (spreading targets over the interval), jitter added per check
//! and never carried over, due times rounded up to a shared tick. Pure arithmetic on
//! `Instant`s: the daemon's per-target task sleeps until [`Schedule::next_due`].

use std::time::{Duration, Instant};

/// Scheduling granularity: a check starts at most this much after its slot (plus jitter).
pub const SCHED_TICK: Duration = Duration::from_millis(10);

pub fn round_up(d: Duration, tick: Duration) -> Duration {
    let t = tick.as_nanos().max(1);
    Duration::from_nanos((d.as_nanos().div_ceil(t) * t) as u64)
}

pub fn hash(s: &str) -> u64 {
    // FNV-1a: a stable per-target phase across restarts and reloads.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

#[derive(Debug, Clone)]
pub struct Schedule {
    epoch: Instant,
    interval: Duration,
    jitter_frac: f64,
    rng: u64,
    nominal: Instant,
}

impl Schedule {
    /// The schedule of target `name`, its first slot the next one after `now`.
    pub fn new(name: &str, epoch: Instant, interval: Duration, jitter_frac: f64, now: Instant) -> Schedule {
        let iv_ns = interval.as_nanos().max(1) as u64;
        let phase = Duration::from_nanos(hash(name) % iv_ns);
        let since_epoch = now.saturating_duration_since(epoch);
        let k = (since_epoch.saturating_sub(phase).as_nanos() as u64 / iv_ns) + 1;
        Schedule {
            epoch,
            interval,
            jitter_frac,
            rng: hash(name) | 1,
            nominal: epoch + phase + Duration::from_nanos(k * iv_ns),
        }
    }

    /// When the next check starts: its slot plus this check's jitter, rounded up to the
    /// tick so checks due within the same 10 ms wake together (thousands of targets cost
    /// ~100 wake-ups a second, not thousands).
    pub fn next_due(&mut self) -> Instant {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let iv_ns = self.interval.as_nanos().max(1) as f64;
        let jitter = Duration::from_nanos(((self.rng % 10_000) as f64 / 10_000.0 * self.jitter_frac * iv_ns) as u64);
        self.epoch + round_up(self.nominal + jitter - self.epoch, SCHED_TICK)
    }

    /// A check ended at `now`: move to the next slot. Returns how many slots were skipped
    /// because the target fell more than an interval behind (e.g. the host was suspended).
    pub fn advance(&mut self, now: Instant) -> u64 {
        let iv_ns = self.interval.as_nanos().max(1) as u64;
        self.nominal += self.interval;
        if self.nominal + self.interval <= now {
            let missed = (now - self.nominal).as_nanos() as u64 / iv_ns;
            self.nominal += Duration::from_nanos(missed * iv_ns);
            return missed;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ticks_and_phases() {
        let t = SCHED_TICK;
        assert_eq!(round_up(Duration::from_millis(0), t), Duration::ZERO);
        assert_eq!(round_up(Duration::from_millis(1), t), Duration::from_millis(10));
        assert_eq!(round_up(Duration::from_millis(10), t), Duration::from_millis(10));
        assert_eq!(round_up(Duration::from_micros(10_001), t), Duration::from_millis(20));
        // Phases are stable per name and spread over the interval.
        // FNV-1a of "api": the phase must not change between releases (it is the schedule).
        assert_eq!(hash("api"), 0xe74f_c019_056a_ae07);
        let iv = 5_000_000_000u64;
        let phases: std::collections::BTreeSet<u64> =
            (0..1000).map(|i| hash(&format!("t{i}")) % iv / 500_000_000).collect();
        assert_eq!(phases.len(), 10, "1000 targets fall into every tenth of the interval");
    }

    #[test]
    fn no_drift_jitter_bounded_and_skips_after_a_stall() {
        let epoch = Instant::now();
        let iv = Duration::from_secs(1);
        let mut s = Schedule::new("api", epoch, iv, 0.1, epoch);
        let first = s.next_due();
        let phase = Duration::from_nanos(hash("api") % 1_000_000_000);
        let slot0 = epoch + phase + iv;
        assert!(first >= slot0 && first <= slot0 + iv / 10 + SCHED_TICK, "{:?}", first - epoch);
        // 100 checks that each end late: the slots stay on the grid (no drift).
        for k in 1..=100u32 {
            assert_eq!(s.advance(slot0 + iv * (k - 1) + Duration::from_millis(300)), 0);
            let due = s.next_due();
            let slot = slot0 + iv * k;
            assert!(due >= slot && due <= slot + iv / 10 + SCHED_TICK, "check {k} at {:?}", due - slot);
        }
        // Stalled for 5 s: the missed slots are skipped, not run in a burst.
        let now = slot0 + iv * 100 + Duration::from_millis(5_500);
        assert_eq!(s.advance(now), 4);
        assert!(s.next_due() + iv > now);
    }
}
