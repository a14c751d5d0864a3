//! The parts of the Engine API's JSON that conndoc reads. Fields not named here — above all
//! `Config.Env`, which holds secrets — are never deserialized.

use conndoc_facts::container::{Container, ContainerEngine, ContainerState, IdentitySource, PortMapping};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One row of `GET /containers/json?all=1`.
#[derive(Debug, Deserialize)]
pub struct ListItem {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    #[serde(rename = "State", default)]
    pub state: String,
    #[serde(rename = "Ports", default)]
    pub ports: Vec<ListPort>,
    #[serde(rename = "NetworkSettings", default)]
    pub network: Option<ListNetworks>,
}

#[derive(Debug, Deserialize)]
pub struct ListPort {
    #[serde(rename = "PrivatePort", default)]
    pub private: u16,
    #[serde(rename = "PublicPort", default)]
    pub public: Option<u16>,
    #[serde(rename = "IP", default)]
    pub ip: String,
    #[serde(rename = "Type", default)]
    pub kind: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListNetworks {
    #[serde(rename = "Networks", default)]
    pub networks: BTreeMap<String, Network>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Network {
    #[serde(rename = "IPAddress", default)]
    pub ip: String,
    #[serde(rename = "GlobalIPv6Address", default)]
    pub ip6: String,
}

impl Network {
    fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        [&self.ip, &self.ip6].into_iter().filter_map(|s| s.parse().ok())
    }
}

impl ListItem {
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.network.iter().flat_map(|n| n.networks.values()).flat_map(Network::addrs).collect()
    }
    pub fn touches_port(&self, port: u16) -> bool {
        self.ports.iter().any(|p| p.private == port || p.public == Some(port))
    }

    /// The facts the list alone gives (its inspect did not answer): names, state, addresses
    /// and the published ports; no pid, exit code or restart count.
    pub fn to_container(&self) -> Container {
        let mut ports: Vec<PortMapping> = Vec::new();
        for p in &self.ports {
            let Some(host_port) = p.public else { continue }; // exposed, not published
            let m = PortMapping {
                host_ip: p.ip.parse::<IpAddr>().ok().filter(|a| !a.is_unspecified()),
                host_port,
                container_port: p.private,
                protocol: if p.kind.is_empty() { "tcp".into() } else { p.kind.clone() },
            };
            if !ports.contains(&m) {
                ports.push(m);
            }
        }
        engine_api(
            self.id.clone(),
            self.names.iter().map(|n| n.trim_start_matches('/').to_string()).filter(|n| !n.is_empty()).collect(),
            String::new(),
            ContainerState::parse(&self.state),
            self.addresses(),
            ports,
        )
    }
}

/// What the Engine API says of every container, list row or inspect: identity, state,
/// addresses and the port map (read, so `ports_known`). What only an inspect says (exit
/// code, pid, …) or the host adds later (listeners, log tail) is left empty.
fn engine_api(
    id: String,
    names: Vec<String>,
    image: String,
    state: ContainerState,
    addresses: Vec<IpAddr>,
    ports: Vec<PortMapping>,
) -> Container {
    Container {
        id,
        names,
        image,
        engine: ContainerEngine::Docker,
        state,
        exit_code: None,
        oom_killed: None,
        restart_count: None,
        error: None,
        finished_at: None,
        pid: None,
        netns_inode: None,
        addresses,
        ports,
        ports_known: true,
        listeners: Vec::new(),
        listeners_read: false,
        log_tail: Vec::new(),
        source: IdentitySource::EngineApi,
    }
}

/// `GET /containers/{id}/json`, the fields conndoc reads.
#[derive(Debug, Deserialize)]
pub struct Inspect {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "RestartCount", default)]
    pub restart_count: u64,
    #[serde(rename = "State")]
    pub state: State,
    #[serde(rename = "Config", default)]
    pub config: Config,
    #[serde(rename = "HostConfig", default)]
    pub host_config: HostConfig,
    #[serde(rename = "NetworkSettings", default)]
    pub network: NetworkSettings,
}

#[derive(Debug, Deserialize)]
pub struct State {
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Pid", default)]
    pub pid: i64,
    #[serde(rename = "ExitCode", default)]
    pub exit_code: i64,
    #[serde(rename = "OOMKilled", default)]
    pub oom_killed: bool,
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "FinishedAt", default)]
    pub finished_at: String,
}

/// `Config`: the image name and whether it has a TTY (its logs are then not multiplexed).
/// `Env` is deliberately absent.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Tty", default)]
    pub tty: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct HostConfig {
    #[serde(rename = "PortBindings", default)]
    pub port_bindings: Option<BTreeMap<String, Option<Vec<Binding>>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NetworkSettings {
    #[serde(rename = "Ports", default)]
    pub ports: Option<BTreeMap<String, Option<Vec<Binding>>>>,
    #[serde(rename = "Networks", default)]
    pub networks: BTreeMap<String, Network>,
}

#[derive(Debug, Deserialize)]
pub struct Binding {
    #[serde(rename = "HostIp", default)]
    pub host_ip: String,
    #[serde(rename = "HostPort", default)]
    pub host_port: String,
}

/// `"6379/tcp" → {HostIp, HostPort}…` as mappings; the `0.0.0.0` and `::` rows of one
/// mapping become one with no host address.
fn mappings(map: &BTreeMap<String, Option<Vec<Binding>>>) -> Vec<PortMapping> {
    let mut out: Vec<PortMapping> = Vec::new();
    for (key, binds) in map {
        let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let Ok(container_port) = port.parse::<u16>() else { continue };
        for b in binds.iter().flatten() {
            let Ok(host_port) = b.host_port.parse::<u16>() else { continue };
            let host_ip = b.host_ip.parse::<IpAddr>().ok().filter(|a| !a.is_unspecified());
            let m = PortMapping { host_ip, host_port, container_port, protocol: proto.to_string() };
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

impl Inspect {
    /// The facts, with the port map from the running container's settings, or (stopped)
    /// from the bindings it will publish when started.
    pub fn into_container(self) -> Container {
        let running_map = self.network.ports.as_ref().map(mappings).unwrap_or_default();
        let ports = if running_map.is_empty() {
            self.host_config.port_bindings.as_ref().map(mappings).unwrap_or_default()
        } else {
            running_map
        };
        let state = ContainerState::parse(&self.state.status);
        let stopped = !matches!(state, ContainerState::Running | ContainerState::Paused);
        let names = [self.name.trim_start_matches('/').to_string()].into_iter().filter(|n| !n.is_empty()).collect();
        let addresses = self.network.networks.values().flat_map(Network::addrs).collect();
        Container {
            exit_code: stopped.then_some(self.state.exit_code),
            oom_killed: Some(self.state.oom_killed),
            restart_count: Some(self.restart_count),
            error: Some(self.state.error.clone()).filter(|e| !e.is_empty()),
            finished_at: Some(self.state.finished_at.clone())
                .filter(|t| stopped && !t.is_empty() && !t.starts_with("0001-")),
            pid: u32::try_from(self.state.pid).ok().filter(|p| *p > 0),
            ..engine_api(self.id, names, self.config.image, state, addresses, ports)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /containers/ID/json` of a stopped container published with -p 6380:6379,
    /// recorded from dockerd 20.10 in the lab (trimmed to the fields read, plus Env to show
    /// it is never taken).
    const STOPPED: &str = r#"{"Id":"e789749d466b394f7abd25eab1ccda533d154f6a4df486ee2c8589f53e3cfa6d",
      "Name":"/cache","RestartCount":2,
      "State":{"Status":"exited","Running":false,"OOMKilled":true,"Dead":false,"Pid":0,"ExitCode":137,
               "Error":"","StartedAt":"2026-12-02T05:49:05Z","FinishedAt":"2026-12-02T05:50:01.5Z"},
      "Config":{"Image":"conndoc-lab/redis:1","Tty":false,"Env":["REDIS_PASSWORD=hunter2"]},
      "HostConfig":{"PortBindings":{"6379/tcp":[{"HostIp":"","HostPort":"6380"}]}},
      "NetworkSettings":{"Ports":{},"Networks":{"bridge":{"IPAddress":"","GlobalIPv6Address":""}}}}"#;

    const RUNNING: &str = r#"{"Id":"aaaa","Name":"/web","RestartCount":0,
      "State":{"Status":"running","Pid":4242,"ExitCode":0,"OOMKilled":false,"FinishedAt":"0001-01-01T00:00:00Z"},
      "Config":{"Image":"nginx"},
      "HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}},
      "NetworkSettings":{"Ports":{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"},{"HostIp":"::","HostPort":"8080"}],
                                  "443/tcp":null,"53/udp":[{"HostIp":"127.0.0.1","HostPort":"5353"}]},
                         "Networks":{"bridge":{"IPAddress":"172.17.0.2","GlobalIPv6Address":""}}}}"#;

    #[test]
    fn stopped_container_facts() {
        let c = serde_json::from_str::<Inspect>(STOPPED).unwrap().into_container();
        assert_eq!(c.name(), "cache");
        assert_eq!(c.state, ContainerState::Exited);
        assert_eq!((c.exit_code, c.oom_killed, c.restart_count), (Some(137), Some(true), Some(2)));
        assert_eq!(c.pid, None);
        assert_eq!(c.ports_text(), "0.0.0.0:6380 → 6379/tcp");
        assert_eq!(c.finished_at.as_deref(), Some("2026-12-02T05:50:01.5Z"));
        assert!(!format!("{c:?}").contains("hunter2"), "Env is never read");
    }

    #[test]
    fn running_container_facts() {
        let c = serde_json::from_str::<Inspect>(RUNNING).unwrap().into_container();
        assert_eq!(c.pid, Some(4242));
        assert_eq!(c.exit_code, None);
        assert_eq!(c.finished_at, None);
        assert_eq!(c.addresses, vec!["172.17.0.2".parse::<IpAddr>().unwrap()]);
        // One row for the 0.0.0.0 and :: bindings; the exposed-only 443 has none.
        assert_eq!(c.ports_text(), "127.0.0.1:5353 → 53/udp, 0.0.0.0:8080 → 80/tcp");
        assert_eq!(c.published_on(8080).count(), 1);
        assert_eq!(c.published_on(5353).count(), 0, "udp");
    }

    #[test]
    fn list_rows() {
        let rows: Vec<ListItem> = serde_json::from_str(
            r#"[{"Id":"aaaa","Names":["/web"],"State":"running","Ports":[{"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8080,"Type":"tcp"},{"PrivatePort":443,"Type":"tcp"}],
                 "NetworkSettings":{"Networks":{"bridge":{"IPAddress":"172.17.0.2"}}}},
                {"Id":"bbbb","Names":["/old"],"State":"exited","Ports":[]}]"#,
        )
        .unwrap();
        assert!(rows[0].touches_port(8080) && rows[0].touches_port(443) && !rows[0].touches_port(6379));
        assert_eq!(rows[0].addresses(), vec!["172.17.0.2".parse::<IpAddr>().unwrap()]);
        assert!(rows[1].addresses().is_empty());
        // Without its inspect: the published port only (443 is exposed, not published).
        let c = rows[0].to_container();
        assert_eq!((c.name(), c.state, c.ports_known), ("web", ContainerState::Running, true));
        assert_eq!(c.ports_text(), "0.0.0.0:8080 → 80/tcp");
        assert_eq!(c.mapping_to(80).count(), 1);
        assert_eq!(rows[1].to_container().ports_text(), "no published ports");
    }
}
