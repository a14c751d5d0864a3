//! Plain, serializable facts gathered by conndoc, and the value types they are made of.
//!
//! Gatherers (`probe`, `host`, `firewall`, `capture`, `proto`) produce these; the pure
//! rules in `conndoc-diagnose` read them. An [`Evidence`] saved with `--evidence-out` can be
//! replayed with `conndoc explain`, so everything here round-trips through JSON.

pub mod capture;
pub mod client;
pub mod connect;
pub mod container;
pub mod duration;
pub mod firewall;
pub mod host;
pub mod inspect;
pub mod kube;
pub mod nat;
pub mod path;
pub mod protocol;
pub mod resolve;
pub mod target;
pub mod value;

pub use client::{ClientFacts, Privileges, SkippedCheck};
pub use connect::{ConnectKind, ConnectProbe, Outcome, PeerClose, PeerCloseKind};
pub use resolve::Resolution;
pub use target::{Host, Scheme, Secret, Target, TargetError, REDACTED};
pub use value::{Errno, Family, Micros, Port, QueueLen, SocketState, Ttl, ValueError};

use serde::{Deserialize, Serialize};

pub const EVIDENCE_SCHEMA: &str = "conndoc.evidence/v1";

/// Options the diagnosis ran with, kept with the evidence so a replay knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    pub timeout_us: Micros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<Family>,
    /// The process the user expects to serve the port (`--expect`), or the scheme's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_process: Option<String>,
    /// The network namespace named with `--netns`/`--netns-pid`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The SSH destination the server side was read on (`--ssh`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
}

/// Everything gathered for one diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub schema: String,
    /// The conndoc that gathered it: `0.1.0 (git 1ea1aca0f3b2)`. Absent in evidence written
    /// before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conndoc_version: Option<String>,
    pub target: Target,
    pub options: RunOptions,
    /// RFC 3339 time the gathering started.
    pub started_at: String,
    pub elapsed_us: Micros,
    pub client: ClientFacts,
    pub resolution: Resolution,
    pub probes: Vec<ConnectProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<host::HostFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<firewall::FirewallFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<capture::CaptureFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<protocol::ProtocolFacts>,
    /// Containers that matter for the target (issue 10): names, state, port maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<container::ContainerFacts>,
    /// TTL-limited SYN probes along the path (when the connect timed out, a reset failed
    /// the TTL test, a router answered unreachable, or `--path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<path::PathFacts>,
    /// The backend behind a DNAT rule or a userland proxy on the dialled port, inspected in
    /// the network namespace that owns its address (issue 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<nat::BackendFacts>,
    /// The namespace on this machine that owns the dialled address when it is not conndoc's
    /// own (a container's or pod's address dialled directly), found and inspected there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<nat::FoundFacts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedCheck>,
    /// Probed addresses that are Kubernetes Services in kube-proxy's rules (issue 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<kube::KubeFacts>,
}
