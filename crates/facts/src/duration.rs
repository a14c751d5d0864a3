//! The one duration parser of conndoc: `--timeout`, every duration in a watch config (fast
//! path and `toml` path alike), `check` and a SIGHUP reload all go through [`parse`] or
//! [`parse_in`], so a hostile value is rejected the same way everywhere.
//!
//! Integer arithmetic on nanoseconds with checked operations: no float rounding, no
//! overflow, no panic (`Duration::from_secs_f64` panics on `99999999999999999999999h`).

use std::fmt;
use std::time::Duration;

/// The longest duration any input may name (10 years); callers narrow it with [`parse_in`].
pub const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Longest input echoed back in an error; the rest is cut so a hostile value stays one line.
const ECHO_MAX: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0}: expected e.g. 500ms, 5s, 1m, 2h, 7d")]
    Invalid(Echo),
    #[error("duration {value} is too long: at most {max}")]
    TooLong { value: Echo, max: Human },
    #[error("duration {value} is too short: at least {min}")]
    TooShort { value: Echo, min: Human },
}

/// The user's input as an error shows it: quoted, escaped, cut at 40 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo(pub String);

impl Echo {
    fn of(s: &str) -> Echo {
        let cut: String = s.chars().take(ECHO_MAX).collect();
        Echo(if cut.len() < s.len() { format!("{cut:?}…") } else { format!("{cut:?}") })
    }
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A duration printed the way a config writes it (`500ms`, `5s`, `10m`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format(self.0))
    }
}

/// Parse `500ms`, `1s`, `2.5s`, `1m`, `2h`, `7d`, `250us`; a bare number is seconds.
/// At most [`MAX`].
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    parse_in(s, Duration::ZERO, MAX)
}

/// [`parse`], and the value must lie in `min..=max` (`max` is capped at [`MAX`]).
pub fn parse_in(s: &str, min: Duration, max: Duration) -> Result<Duration, DurationError> {
    let max = max.min(MAX);
    let nanos = parse_nanos(s).ok_or_else(|| DurationError::Invalid(Echo::of(s)))?;
    if nanos > max.as_nanos() {
        return Err(DurationError::TooLong { value: Echo::of(s), max: Human(max) });
    }
    // Below u64::MAX seconds now: `max` is at most 10 years.
    let d = Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32);
    if d < min {
        return Err(DurationError::TooShort { value: Echo::of(s), min: Human(min) });
    }
    Ok(d)
}

/// Nanoseconds, saturating far above [`MAX`] (so "too long" is told apart from "invalid").
fn parse_nanos(s: &str) -> Option<u128> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_ns: u128 = match unit.trim_start() {
        "" | "s" | "sec" | "secs" => 1_000_000_000,
        "ms" => 1_000_000,
        "us" | "µs" => 1_000,
        "ns" => 1,
        "m" | "min" | "mins" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => return None,
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    // Digits only from here (the split above kept only digits and dots).
    const CEIL: u128 = u128::MAX / 1_000_000;
    let mut whole: u128 = 0;
    for c in int.bytes() {
        whole = whole.saturating_mul(10).saturating_add(u128::from(c - b'0')).min(CEIL);
    }
    let mut total = whole.saturating_mul(unit_ns);
    // The fraction: as many digits as can still change the nanosecond count.
    let mut scale = unit_ns;
    for c in frac.bytes().take(20) {
        scale /= 10;
        total = total.saturating_add(u128::from(c - b'0') * scale);
    }
    Some(total)
}

/// Format a duration the shortest way the parser reads back exactly.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    for (unit, name) in [
        (86_400_000_000_000u128, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ] {
        if ns.is_multiple_of(unit) {
            return format!("{}{name}", ns / unit);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse(" 5 s ").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("0.001ms").unwrap(), Duration::from_micros(1));
        assert_eq!(parse("1.").unwrap(), Duration::from_secs(1));
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn garbage_is_invalid() {
        for bad in ["", "-1s", "1x", "ms", ".", "1..2s", "1e3s", "+1s", "NaN", "inf", "1s2", "d", "1 .5s"] {
            assert!(matches!(parse(bad), Err(DurationError::Invalid(_))), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn huge_values_are_too_long_not_a_panic() {
        for huge in [
            "99999999999999999999999h",
            "99999999999999999999999999999999999999999999999999999d",
            "3651d",
            "18446744073709551616",
            "1.0000000000000000000000000000000001e",
        ] {
            let r = parse(huge);
            assert!(matches!(r, Err(DurationError::TooLong { .. }) | Err(DurationError::Invalid(_))), "{huge}: {r:?}");
        }
        let e = parse("99999999999999999999999h").unwrap_err().to_string();
        assert_eq!(e, "duration \"99999999999999999999999h\" is too long: at most 3650d");
        assert_eq!(parse("3650d").unwrap(), MAX);
    }

    #[test]
    fn ranges_name_the_value() {
        let e = parse_in("20m", Duration::from_millis(1), Duration::from_secs(600)).unwrap_err();
        assert_eq!(e.to_string(), "duration \"20m\" is too long: at most 10m");
        let e = parse_in("0s", Duration::from_millis(1), Duration::from_secs(600)).unwrap_err();
        assert_eq!(e.to_string(), "duration \"0s\" is too short: at least 1ms");
        let long = "x".repeat(1000);
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.len() < 120, "{e}");
        let e = parse("1\x1b[2Js").unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e}");
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_millis(500),
            Duration::from_secs(5),
            Duration::from_secs(600),
            Duration::from_secs(7 * 86_400),
            Duration::from_micros(1500),
            Duration::from_nanos(7),
            MAX,
        ] {
            assert_eq!(parse(&format(d)).unwrap(), d, "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(600)), "10m");
    }
}
