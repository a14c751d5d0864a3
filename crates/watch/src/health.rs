//! Per-target health state machine: `unknown` until enough results agree, then `up` or
//! `down`, flipping only after N consecutive results the other way.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Unknown,
    Up,
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "unknown" => Some(State::Unknown),
            "up" => Some(State::Up),
            "down" => Some(State::Down),
            _ => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, handed to the change hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    /// Consecutive successes / failures so far (one of them is always 0).
    pub successes: u32,
    pub failures: u32,
    pub failures_before_down: u32,
    pub successes_before_up: u32,
}

impl Health {
    pub fn new(failures_before_down: u32, successes_before_up: u32) -> Health {
        Health {
            state: State::Unknown,
            successes: 0,
            failures: 0,
            failures_before_down: failures_before_down.max(1),
            successes_before_up: successes_before_up.max(1),
        }
    }

    /// Record one result; returns the transition when the state changes.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let to = if ok && self.state != State::Up && self.successes >= self.successes_before_up {
            State::Up
        } else if !ok && self.state != State::Down && self.failures >= self.failures_before_down {
            State::Down
        } else {
            return None;
        };
        let t = Transition { from: self.state, to };
        self.state = to;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_only_after_n_consecutive() {
        let mut h = Health::new(3, 2);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Transition { from: State::Unknown, to: State::Up }));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a success resets the failure run");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(Transition { from: State::Up, to: State::Down }));
        assert_eq!(h.record(false), None, "no repeated transition");
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(Transition { from: State::Down, to: State::Up }));
        assert_eq!(h.state, State::Up);
    }

    #[test]
    fn unknown_to_down() {
        let mut h = Health::new(1, 1);
        assert_eq!(h.record(false), Some(Transition { from: State::Unknown, to: State::Down }));
        assert_eq!(State::parse("down"), Some(State::Down));
        assert_eq!(State::parse("x"), None);
    }
}
