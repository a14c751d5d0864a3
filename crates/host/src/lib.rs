//! Target-host inspection: socket table via sock_diag, owning processes, limits, sysctls,
//! counters, service manager, logs; entering a network namespace.
//!
//! Every reader here is read-only and bounded by a deadline. Everything that parses text
//! or bytes is a pure function with tests over fixtures; the readers are thin.

pub mod audit;
pub mod counters;
pub mod inspect;
pub mod kmsg;
pub mod netns;
pub mod nsfind;
pub mod procs;
pub mod proxy;
pub mod redact;
pub mod snapshot;
pub mod sockets;
pub mod sysctl;
pub mod systemd;

pub use inspect::{baseline, inspect, listener_table, Baseline, InspectRequest};
pub use netns::NetnsSpec;
pub use sockets::{listeners, sockets_to};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("socket table: {0}")]
    Netlink(#[from] conndoc_netlink::NetlinkError),
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("enter network namespace {ns}: {source}")]
    Netns { ns: String, source: std::io::Error },
}
