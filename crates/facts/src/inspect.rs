//! `conndoc inspect --json`: the server-side interface. One inspection of one port, as the
//! host stage of `diagnose` reads it, printed for another conndoc to join to its evidence
//! (`diagnose --ssh`). docs/report.md describes the contract.
//!
//! With `--bracket` the exchange is two lines out and one in, so counters bracket a probe
//! run elsewhere: the remote prints a `ready` message once it has read the "before"
//! counters, reads one [`InspectFollowUp`] line (what the probe did), then prints the
//! `result`. Every message carries [`INSPECT_SCHEMA`]; a reader refuses any other schema
//! rather than guess at its fields.

use crate::client::{Privileges, SkippedCheck};
use crate::firewall::HostFirewall;
use crate::host::HostFacts;
use crate::protocol::LintReport;
use crate::value::Port;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The schema of every `conndoc inspect --json` message. A new major version gets a new
/// string; fields may be added within one.
pub const INSPECT_SCHEMA: &str = "conndoc.inspect/v1";

/// Which message of the exchange this is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InspectPhase {
    /// `--bracket`: the "before" counters are read; waiting for one follow-up line on stdin.
    Ready,
    /// The inspection itself.
    #[default]
    Result,
}

/// One message of `conndoc inspect --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectOutput {
    /// Always [`INSPECT_SCHEMA`].
    pub schema: String,
    pub phase: InspectPhase,
    /// The conndoc version that answered (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The inspected host's name (`/proc/sys/kernel/hostname`).
    #[serde(default)]
    pub hostname: String,
    pub port: Port,
    /// What the inspecting process could do there: a non-root inspection skips checks.
    #[serde(default)]
    pub privileges: Privileges,
    /// The host facts (absent in `ready`, or when the socket table could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFacts>,
    /// The host's firewall evaluated for the probe's packets (role `target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<HostFirewall>,
    /// The lint of the redis.conf the server runs with, when one was named or found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_conf: Option<LintReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedCheck>,
    /// The inspection could not run at all (e.g. the namespace cannot be entered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One packet the probe sent: what the server's firewall is evaluated against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFlow {
    pub destination: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
}

/// `--bracket`: the one line the client sends after its probe. Never holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectFollowUp {
    /// The probe's flows (for the firewall evaluation).
    #[serde(default)]
    pub flows: Vec<ProbeFlow>,
    /// The probe failed: read everything (per-port socket states, logs, firewall).
    #[serde(default)]
    pub thorough: bool,
    /// Evaluate the firewall for `flows`.
    #[serde(default)]
    pub firewall: bool,
    /// Pids that probably own the listener (a Redis server's INFO process_id).
    #[serde(default)]
    pub owner_hint: Vec<u32>,
    /// The redis.conf the server named in INFO config_file, to lint there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_config_file: Option<String>,
}

impl InspectOutput {
    pub fn new(phase: InspectPhase, port: Port) -> InspectOutput {
        InspectOutput {
            schema: INSPECT_SCHEMA.into(),
            phase,
            version: String::new(),
            hostname: String::new(),
            port,
            privileges: Privileges::default(),
            host: None,
            firewall: None,
            redis_conf: None,
            skipped: Vec::new(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_schema() {
        let mut o = InspectOutput::new(InspectPhase::Ready, Port::new(6379).unwrap());
        o.version = "0.1.0".into();
        let s = serde_json::to_string(&o).unwrap();
        assert!(s.contains(r#""schema":"conndoc.inspect/v1""#), "{s}");
        assert!(s.contains(r#""phase":"ready""#), "{s}");
        let back: InspectOutput = serde_json::from_str(&s).unwrap();
        assert_eq!(back, o);
        let f = InspectFollowUp { thorough: true, ..Default::default() };
        let back: InspectFollowUp = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
