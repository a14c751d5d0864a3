//! Address translation in front of the dialled port, and the backend it leads to (issue 10).
//!
//! When the dialled `addr:port` is forwarded — a DNAT or redirect rule in a `nat` hook, or a
//! userland proxy such as `docker-proxy` — the diagnosis goes on at the backend: the network
//! namespace that owns the backend address, inspected there with the backend's port.

use crate::firewall::{Hook, RuleRef};
use crate::host::HostFacts;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How the dialled address is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TranslationKind {
    /// A DNAT rule (`-j DNAT --to-destination`, nft `dnat to`).
    Dnat,
    /// A redirect rule (`-j REDIRECT --to-ports`, nft `redirect to`): same host, another port.
    Redirect,
    /// A userland proxy accepts and opens its own connection to the backend (`docker-proxy`).
    Proxy,
}

impl TranslationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TranslationKind::Dnat => "DNAT",
            TranslationKind::Redirect => "redirect",
            TranslationKind::Proxy => "proxy",
        }
    }
}

/// The userland proxy that holds the dialled port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRef {
    pub pid: u32,
    /// `/proc/PID/comm` (`docker-proxy`).
    pub comm: String,
    /// Its command line (secrets redacted).
    pub cmdline: String,
}

/// One translation of the probe's destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Translation {
    pub kind: TranslationKind,
    /// The address and port the client dialled (for a proxy: the address it listens on).
    pub from: SocketAddr,
    /// Where connections really go.
    pub to: SocketAddr,
    /// The hook the rule sits in (prerouting for traffic from elsewhere, output for this host's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<Hook>,
    /// The DNAT/redirect rule, as a person finds it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// The proxy process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRef>,
    /// A rule translating to a range (`dnat to 10.0.0.2-10.0.0.3:6379-6380`, `--to-ports
    /// 6000-6010`): the backends the kernel may pick from, one per connection, in order
    /// (the first [`MAX_CHOICES`]); empty when there is one backend. `to` is the one inspected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<SocketAddr>,
    /// How many backends the range has in all (more than `choices` holds when large).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub choices_total: u64,
    /// For a dnat map (`dnat to tcp dport map { … }`, `@name`): the element the packet
    /// matched, as nft prints it (`16379 : 10.77.1.2 . 6379`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// Which of the `choices` was inspected, and why (the first that does not serve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picked: Option<String>,
}

/// `; 2 network namespaces own 172.17.0.2: A, B — the first was inspected: WHY`, or
/// nothing when one namespace does.
pub fn owners_note(
    owners: &[NetnsIdentity],
    inspected: Option<&NetnsIdentity>,
    addr: std::net::IpAddr,
    why: Option<&str>,
) -> String {
    if owners.len() < 2 {
        return String::new();
    }
    let list: Vec<String> = owners.iter().map(NetnsIdentity::describe).collect();
    let which = inspected.map(|n| format!("net:[{}]", n.inode)).unwrap_or_else(|| "none".into());
    format!(
        "; {} network namespaces own {addr}: {} — {which} was inspected: {}",
        owners.len(),
        list.join(", "),
        why.unwrap_or("the first found")
    )
}

/// Backends of a range listed in a translation at most.
pub const MAX_CHOICES: usize = 64;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Translation {
    /// `DNAT 10.0.0.2:6379 → 172.17.0.2:6379 (iptables-nft ipv4 nat DOCKER rule 1 (line 9))`.
    pub fn describe(&self) -> String {
        let by = match (&self.rule, &self.proxy) {
            (Some(r), _) => format!(" by {}: `{}`", r.location(), r.text),
            (None, Some(p)) => format!(" by {} pid {}: {}", p.comm, p.pid, p.cmdline),
            (None, None) => String::new(),
        };
        let mut how = String::new();
        if let Some(e) = &self.element {
            how.push_str(&format!(" (map element `{e}`)"));
        }
        if !self.choices.is_empty() {
            let total = self.choices_total.max(self.choices.len() as u64);
            let list: Vec<String> = self.choices.iter().map(|c| c.to_string()).collect();
            let more = if total > self.choices.len() as u64 {
                format!(" and {} more", total - self.choices.len() as u64)
            } else {
                String::new()
            };
            how.push_str(&format!(
                " (one of {total} backends the kernel picks from per connection: {}{more}",
                list.join(", ")
            ));
            if let Some(p) = &self.picked {
                how.push_str(&format!("; {p}"));
            }
            how.push(')');
        }
        format!("{} {} → {}{how}{by}", self.kind.as_str(), self.from, self.to)
    }
}

/// A network namespace, as found on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsIdentity {
    /// Inode of the namespace (what `/proc/PID/ns/net` links to).
    pub inode: u64,
    /// Bind-mounted names of it (`/run/netns/NAME`, `/var/run/docker/netns/ID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Some processes that run in it (the first few, lowest pid first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// The path conndoc entered it by.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub entered_by: String,
}

impl NetnsIdentity {
    /// The name CNI gave a pod's namespace (`cni-<uuid>`, bind-mounted under `/run/netns`
    /// or `/var/run/netns` by containerd/CRI-O), when this is one.
    pub fn cni_name(&self) -> Option<&str> {
        self.paths.iter().chain(std::iter::once(&self.entered_by)).find_map(|p| {
            let name = p.strip_prefix("/run/netns/").or_else(|| p.strip_prefix("/var/run/netns/"))?;
            name.starts_with("cni-").then_some(name)
        })
    }

    /// A pod for a sentence: `pod 10.244.0.5 (netns cni-…)`, or the namespace when it has no CNI name.
    pub fn describe_pod(&self, address: std::net::IpAddr) -> String {
        match self.cni_name() {
            Some(n) => format!("pod {address} (netns {n}, net:[{}])", self.inode),
            None => format!("pod {address} ({})", self.describe()),
        }
    }

    /// `network namespace net:[4026532301] (/run/netns/x, pid 42)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.paths.clone();
        if let Some(p) = self.pids.first() {
            parts.push(format!("pid {p}"));
        }
        if parts.is_empty() {
            format!("network namespace net:[{}]", self.inode)
        } else {
            format!("network namespace net:[{}] ({})", self.inode, parts.join(", "))
        }
    }
}

/// The backend behind a translation, inspected in its own namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendFacts {
    pub translation: Translation,
    /// A second forward of the same port this connection does not take: docker-proxy
    /// holding the port while the engine's DNAT rule (followed) catches the SYN first.
    /// Connections the rule skips (to 127.0.0.1) go through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub also: Option<Translation>,
    /// The namespace that owns `translation.to`'s address; None when none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsIdentity>,
    /// Every network namespace found owning the address when more than one does (two
    /// engines' first containers, a duplicated address): `netns` is the one inspected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<NetnsIdentity>,
    /// Why `netns` is the one inspected among `owners`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_choice: Option<String>,
    /// The backend host inspected there, with the backend's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFacts>,
    /// Why the backend was not inspected (no namespace owns the address, search bound hit…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_inspected: Option<String>,
    /// Listeners of the backend namespace on other ports than the backend's (a few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_listeners: Vec<crate::host::Listener>,
    /// Namespaces searched, and how long the search took (µs).
    #[serde(default)]
    pub searched: u32,
    #[serde(default)]
    pub search_us: u64,
}

/// Who runs in a found namespace, when something knows: a container engine, the
/// container id in a process's cgroup, or CNI's pod namespace name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsOwner {
    /// The container's name (engine) or short id (cgroup only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The full container id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// How the container was named: `docker` (Engine API) or `cgroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The dialled address is no address of conndoc's own namespace but of another network
/// namespace on this machine (a container's bridge address, a pod IP, a lab namespace):
/// that namespace, found with no flag given, inspected as the target host (issues 10, 12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundFacts {
    /// The dialled address and port.
    pub address: SocketAddr,
    /// The namespace that owns the address; None when none was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsIdentity>,
    /// Every network namespace found owning the address when more than one does (two
    /// engines' first containers, a duplicated address): `netns` is the one inspected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<NetnsIdentity>,
    /// Why `netns` is the one inspected among `owners`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_choice: Option<String>,
    /// The container or pod whose namespace it is, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<NetnsOwner>,
    /// The namespace's socket table and processes for the dialled port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFacts>,
    /// Why it was not inspected (no owner found, search bound hit, entering denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_inspected: Option<String>,
    /// Listeners of the namespace on other ports (a few), for wrong-port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_listeners: Vec<crate::host::Listener>,
    /// Namespaces searched, and how long the search took (µs).
    #[serde(default)]
    pub searched: u32,
    #[serde(default)]
    pub search_us: u64,
}

impl FoundFacts {
    /// The namespace for a sentence: `pod 10.244.0.5 (netns cni-…)`, `container cache
    /// (network namespace net:[…] (pid 42))`, or the namespace alone.
    pub fn describe(&self) -> String {
        let Some(n) = &self.netns else { return format!("the owner of {}", self.address.ip()) };
        if n.cni_name().is_some() {
            return n.describe_pod(self.address.ip());
        }
        match self.owner.as_ref().and_then(|o| o.container.as_deref()) {
            Some(c) => format!("container {c} ({})", n.describe()),
            None => n.describe(),
        }
    }

    /// Whether a container or pod runs in the namespace (not just a named namespace).
    pub fn is_container(&self) -> bool {
        self.netns.as_ref().is_some_and(|n| n.cni_name().is_some())
            || self.owner.as_ref().is_some_and(|o| o.container.is_some())
    }

    /// What a person calls the inside of it: `the pod`, `the container`, `the namespace`.
    pub fn inside(&self) -> &'static str {
        match (self.netns.as_ref().and_then(|n| n.cni_name()), self.is_container()) {
            (Some(_), _) => "the pod",
            (None, true) => "the container",
            (None, false) => "the namespace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_and_round_trips() {
        let t = Translation {
            kind: TranslationKind::Proxy,
            from: "0.0.0.0:16379".parse().unwrap(),
            to: "172.17.0.2:6379".parse().unwrap(),
            hook: None,
            rule: None,
            proxy: Some(ProxyRef { pid: 7, comm: "docker-proxy".into(), cmdline: "docker-proxy -proto tcp".into() }),
            choices: Vec::new(),
            choices_total: 0,
            element: None,
            picked: None,
        };
        assert_eq!(
            t.describe(),
            "proxy 0.0.0.0:16379 → 172.17.0.2:6379 by docker-proxy pid 7: docker-proxy -proto tcp"
        );
        let b = BackendFacts {
            also: None,
            translation: t,
            netns: Some(NetnsIdentity {
                inode: 5,
                paths: vec!["/run/netns/a".into()],
                pids: vec![9],
                entered_by: "/run/netns/a".into(),
            }),
            host: None,
            not_inspected: None,
            owners: Vec::new(),
            owner_choice: None,
            other_listeners: Vec::new(),
            searched: 3,
            search_us: 10,
        };
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<BackendFacts>(&j).unwrap(), b);
        let n = b.netns.unwrap();
        assert_eq!(n.describe(), "network namespace net:[5] (/run/netns/a, pid 9)");
        assert_eq!(n.cni_name(), None);
        let pod = NetnsIdentity { inode: 6, paths: vec!["/run/netns/cni-1f2e".into()], ..Default::default() };
        assert_eq!(pod.cni_name(), Some("cni-1f2e"));
        assert_eq!(pod.describe_pod("10.244.0.5".parse().unwrap()), "pod 10.244.0.5 (netns cni-1f2e, net:[6])");
    }
}
