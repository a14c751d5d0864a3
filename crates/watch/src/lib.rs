//! conndoc watch: continuous health checks whose alerts already say why.
//!
//! A cheap async TCP connect per target on a drift-free schedule feeds a per-target state
//! machine; every transition to down runs the full diagnosis (`conndoc_engine::gather` +
//! `conndoc_diagnose::diagnose`) and stores the report with the event in SQLite. Alerts go
//! out through a persistent outbox; `/metrics`, `/api/targets` and an HTML dashboard show
//! the state. The daemon itself never reasons about causes: the rules do.

pub mod alert;
pub mod charts;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod diagnosis;
pub mod health;
pub mod history;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod probe;
pub mod scheduler;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod sys;
pub mod table;
#[cfg(test)]
mod testkit;
pub mod urls;

pub use config::{load, Config, ConfigErrors, Overrides};
pub use daemon::{run, run_blocking, start, ChangeHook, Running, WatchError};
pub use health::{State, Transition};
