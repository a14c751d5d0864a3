//! Container identity (issue 10 part B): which container owns a namespace or process, what
//! the engine says about it (state, exit code, OOM kill, restarts, published ports) and the
//! last log lines of a stopped one. Read from the engine's API (read-only) or, engine-agnostic,
//! from `/proc/PID/cgroup`. Environment variables are never read (they hold secrets).

use crate::host::Listener;
use crate::value::Micros;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The engine a container id belongs to, as the API or the cgroup path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerEngine {
    Docker,
    Containerd,
    Crio,
    Podman,
    /// A 64-hex id in a cgroup path with no engine marker.
    Unknown,
}

impl ContainerEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerEngine::Docker => "docker",
            ContainerEngine::Containerd => "containerd",
            ContainerEngine::Crio => "cri-o",
            ContainerEngine::Podman => "podman",
            ContainerEngine::Unknown => "unknown engine",
        }
    }
}

/// A container's state (Docker's `State.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    /// Known only from a cgroup path (the process runs, the engine was not asked).
    Unknown,
}

impl ContainerState {
    pub fn parse(s: &str) -> ContainerState {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
    /// Whether it serves: running (a paused or restarting container does not accept).
    pub fn serving(self) -> bool {
        self == ContainerState::Running
    }
}

/// A published port: the engine forwards `host_ip:host_port` to the container's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// None: every host address (`0.0.0.0`/`::` or empty in the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp`, `sctp`.
    pub protocol: String,
}

impl PortMapping {
    /// `0.0.0.0:6380 → 6379/tcp`
    pub fn text(&self) -> String {
        let ip = match self.host_ip {
            Some(IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None => "0.0.0.0".into(),
        };
        format!("{ip}:{} → {}/{}", self.host_port, self.container_port, self.protocol)
    }
}

/// Where the identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    /// The engine's API (names, state, ports…).
    EngineApi,
    /// Only the container id, from `/proc/PID/cgroup`.
    Cgroup,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Full id (64 hex digits).
    pub id: String,
    /// Names without Docker's leading `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    pub engine: ContainerEngine,
    pub state: ContainerState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u64>,
    /// The engine's error for a container that failed to start (`State.Error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time it finished, for a stopped container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Its first process (`State.Pid`), whose network namespace is the container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_inode: Option<u64>,
    /// Its addresses on the engine's networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    /// Published ports (for a stopped container: what it will publish when started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Whether the port map was read (an engine answer); false for cgroup-only identity.
    #[serde(default)]
    pub ports_known: bool,
    /// Listeners on the target port inside its network namespace (running containers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// Whether `listeners` was read.
    #[serde(default)]
    pub listeners_read: bool,
    /// The last log lines of a stopped container (stdout and stderr, in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    pub source: IdentitySource,
}

impl Container {
    /// The name a person would type (`docker logs NAME`), else the short id.
    pub fn name(&self) -> &str {
        self.names.first().map(String::as_str).unwrap_or_else(|| &self.id[..self.id.len().min(12)])
    }
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }
    /// "container cache (a1b2c3d4e5f6, image redis:7)"
    pub fn label(&self) -> String {
        let mut s = format!("container {} ({}", self.name(), self.short_id());
        if !self.image.is_empty() {
            s.push_str(&format!(", image {}", self.image));
        }
        s.push(')');
        s
    }
    /// The port map as text: `0.0.0.0:6380 → 6379/tcp, …` or `no published ports`.
    pub fn ports_text(&self) -> String {
        if self.ports.is_empty() {
            return "no published ports".into();
        }
        self.ports.iter().map(PortMapping::text).collect::<Vec<_>>().join(", ")
    }
    /// TCP mappings whose host port is `port`.
    pub fn published_on(&self, port: u16) -> impl Iterator<Item = &PortMapping> {
        self.ports.iter().filter(move |m| m.protocol == "tcp" && m.host_port == port)
    }
    /// TCP mappings to the container's `port`.
    pub fn mapping_to(&self, port: u16) -> impl Iterator<Item = &PortMapping> {
        self.ports.iter().filter(move |m| m.protocol == "tcp" && m.container_port == port)
    }
}

/// What the container stage found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFacts {
    /// The engine endpoint that answered (`unix:///var/run/docker.sock`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The engine's version (`/version`), if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Containers that matter for the target: those publishing or mapping its port, owning
    /// its address or the inspected namespace, or listening on the port.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// How many containers the engine has in all (listed), for context.
    #[serde(default)]
    pub total: u32,
    /// The engine socket was there but did not answer in full (why): with no `endpoint`
    /// nothing was read; with one, the list was read and the inspects were not (names,
    /// state and published ports then come from the list). Facts built on it are partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_error: Option<String>,
    pub elapsed_us: Micros,
}

impl ContainerFacts {
    /// The container whose network namespace has this inode.
    pub fn by_netns(&self, inode: u64) -> Option<&Container> {
        self.containers.iter().find(|c| c.netns_inode == Some(inode))
    }
    /// The container a process belongs to (its pid is the container's, or in its namespace).
    pub fn by_pid(&self, pid: u32) -> Option<&Container> {
        self.containers.iter().find(|c| c.pid == Some(pid))
    }
    /// The container that has this address on an engine network.
    pub fn by_address(&self, a: IpAddr) -> Option<&Container> {
        self.containers.iter().find(|c| c.addresses.contains(&a))
    }
}
