//! The scenario file format (docs/lab.md): hosts, links, routes, DNS, steps, the conndoc
//! run and what its report must show.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Programs that must be on PATH; otherwise the scenario is skipped (visibly).
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    /// Linux bridges inside a host (a Kubernetes node's `cni0`).
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<BridgeSpec>,
    /// Pods: namespaces named like CNI's (`/run/netns/cni-<uuid>`), attached to a bridge by a
    /// veth pair as the bridge CNI plugin does. A pod is a host for steps and placeholders.
    #[serde(default, rename = "pod")]
    pub pods: Vec<PodSpec>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub dns: Vec<DnsSpec>,
    /// A real OpenSSH server in a host, with keys made for the scenario (docs/lab.md).
    #[serde(default)]
    pub sshd: Vec<SshdSpec>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    pub diagnose: RunSpec,
    /// Steps run after conndoc (before teardown), e.g. checking a `--pcap` file; a failing
    /// one fails the scenario.
    #[serde(default, rename = "after")]
    pub after: Vec<Step>,
    pub expect: Expect,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    /// Extra hosts-file lines (`ADDR NAME…`), written to /etc/netns/<ns>/hosts.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Nameservers for /etc/netns/<ns>/resolv.conf (default: 127.0.0.1, which stays inside).
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Run a real Docker engine (dockerd) inside this host (docs/lab.md, "Docker").
    #[serde(default)]
    pub docker: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub a: String,
    pub b: String,
    #[serde(default)]
    pub a_addr: Vec<String>,
    #[serde(default)]
    pub b_addr: Vec<String>,
}

/// A bridge in a host, with the addresses the bridge CNI plugin puts on it (`isGateway`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    pub host: String,
    /// Interface name, e.g. `cni0`.
    pub name: String,
    #[serde(default)]
    pub addr: Vec<String>,
}

/// A pod behind a bridge: `eth0` inside, `veth<8 hex>` on the bridge outside, default
/// routes via the bridge's addresses (or `gateway`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    /// The host holding the bridge.
    pub node: String,
    /// The bridge's name in that host.
    pub bridge: String,
    /// The pod's addresses (from the pod CIDR), with prefix length.
    pub addr: Vec<String>,
    /// Default gateways; default: the bridge's addresses.
    #[serde(default)]
    pub gateway: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub host: String,
    pub to: String,
    #[serde(default)]
    pub via: Option<String>,
    #[serde(default)]
    pub dev: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    pub host: String,
    pub listen: String,
    /// name → addresses (A and AAAA).
    #[serde(default)]
    pub records: BTreeMap<String, Vec<String>>,
    /// Domains answered only locally (unknown names get NXDOMAIN). Default: the TLDs of the records.
    #[serde(default)]
    pub local_domains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshdSpec {
    pub host: String,
    /// The address sshd listens on (and known_hosts names).
    pub listen: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Put the conndoc under test on the PATH of SSH sessions (default true).
    #[serde(default = "yes")]
    pub conndoc_on_path: bool,
}

fn default_ssh_port() -> u16 {
    22
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// A shell command run to completion inside the host; must exit 0.
    #[serde(default)]
    pub sh: Option<String>,
    /// A background process, killed at teardown.
    #[serde(default)]
    pub spawn: Option<Vec<String>>,
    /// RLIMIT_NOFILE for a spawned process.
    #[serde(default)]
    pub nofile: Option<u64>,
    /// Wait until a TCP listener on this port exists in the host.
    #[serde(default)]
    pub wait_listen: Option<u16>,
    /// SIGKILL the spawned step of this name and reap it.
    #[serde(default)]
    pub kill: Option<String>,
    #[serde(default)]
    pub sleep_ms: Option<u64>,
    /// `docker` CLI arguments, run against the host's engine (e.g. `["run", "-d", …]`).
    #[serde(default)]
    pub docker: Option<Vec<String>>,
    /// With `wait_listen`: wait for the listener inside this container's network namespace.
    #[serde(default)]
    pub container: Option<String>,
    /// Wait this long at most for `wait_listen` (default 5000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The host (namespace) conndoc runs in.
    pub from: String,
    /// `conndoc diagnose TARGET --json ARGS…` …
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// … or the whole argument list after `conndoc` (e.g. `["listeners", "--json"]`).
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Environment variables for the run.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A command conndoc runs under (e.g. `setpriv --bounding-set=-net_raw …` to drop a
    /// capability), placed between `ip netns exec NS` and conndoc.
    #[serde(default)]
    pub wrap: Vec<String>,
    /// Kill the run after this long (default 30000).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub cause: Option<String>,
    #[serde(default)]
    pub exit: Option<i32>,
    #[serde(default)]
    pub max_elapsed_ms: Option<u64>,
    /// `conndoc check --json` runs: the cause, finding and skipped checks read the report of
    /// the target with this name (its line of the output); `[[expect.json]]` pointers still
    /// point into the whole output (an array when several targets were checked).
    #[serde(default)]
    pub report_of: Option<String>,
    #[serde(default, rename = "finding")]
    pub findings: Vec<ExpectFinding>,
    #[serde(default)]
    pub json: Vec<ExpectJson>,
    /// Entries of the report's `skipped` list, found by their `check` name.
    #[serde(default)]
    pub skipped: Vec<ExpectSkipped>,
    /// Strings that must NOT appear anywhere in stdout or stderr (e.g. a password).
    #[serde(default)]
    pub absent: Vec<String>,
    /// Strings stdout must contain (for text output runs).
    #[serde(default)]
    pub stdout_contains: Vec<String>,
    /// Strings stderr must contain.
    #[serde(default)]
    pub stderr_contains: Vec<String>,
    /// Strings that must NOT appear in any process's command line on the machine (every
    /// namespace, so both sides of an SSH session) while conndoc runs: /proc/*/cmdline is
    /// sampled every few milliseconds for the whole run.
    #[serde(default)]
    pub absent_cmdline: Vec<String>,
    /// Strings some sampled command line must contain: proof the sampler saw the run
    /// (e.g. the remote `conndoc inspect`).
    #[serde(default)]
    pub seen_cmdline: Vec<String>,
}

/// A finding, found by its cause code. Text checks look only at the field they name: the
/// cause code itself (or the summary that repeats it) never satisfies an evidence check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFinding {
    pub cause: String,
    /// `false`: no finding with this cause may exist (no other key allowed then).
    #[serde(default = "yes")]
    pub exists: bool,
    #[serde(default)]
    pub severity: Option<String>,
    /// Evidence kinds the finding must carry.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// Strings each of which must occur in the `text` of one of the finding's evidence items.
    #[serde(default)]
    pub contains: Vec<String>,
    /// Strings that must occur in no evidence item's `text`.
    #[serde(default)]
    pub not_contains: Vec<String>,
    /// Strings the finding's `summary` must contain.
    #[serde(default)]
    pub summary_contains: Vec<String>,
    /// Strings each of which must occur in one of the finding's remediation steps.
    #[serde(default)]
    pub remediation_contains: Vec<String>,
    /// Strings the finding's `partial` note must contain (the note must exist).
    #[serde(default)]
    pub partial_contains: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectJson {
    pub pointer: String,
    /// The value at the pointer must equal this.
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The value at the pointer must contain this: a string value as itself, any other value
    /// as its JSON text.
    #[serde(default)]
    pub contains: Option<String>,
    /// `true`: a value must exist at the pointer; `false`: none may.
    #[serde(default)]
    pub exists: Option<bool>,
}

/// An entry of the report's `skipped` list, found by its `check` name (not its position).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSkipped {
    pub check: String,
    /// `false`: the check must not be listed as skipped (no other key allowed then).
    #[serde(default = "yes")]
    pub exists: bool,
    /// Strings the entry's `reason` must contain.
    #[serde(default)]
    pub reason_contains: Vec<String>,
    /// Strings the entry's `hint` must contain (the hint must exist).
    #[serde(default)]
    pub hint_contains: Vec<String>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, crate::LabError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::LabError::Read { path: path.display().to_string(), source: e })?;
        let mut s: Scenario = toml::from_str(&text)
            .map_err(|e| crate::LabError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        s.path = path.to_path_buf();
        s.validate()?;
        Ok(s)
    }

    /// Every scenario file in a directory, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, crate::LabError> {
        let rd =
            std::fs::read_dir(dir).map_err(|e| crate::LabError::Read { path: dir.display().to_string(), source: e })?;
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Scenario::load(p)).collect()
    }

    fn validate(&self) -> Result<(), crate::LabError> {
        let bad = |m: String| Err(crate::LabError::Invalid { path: self.path.display().to_string(), message: m });
        let known = |h: &str| self.hosts.iter().any(|x| x.name == h) || self.pods.iter().any(|p| p.name == h);
        let names = self.hosts.iter().map(|h| &h.name).chain(self.pods.iter().map(|p| &p.name));
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if name.is_empty() || name.len() > 12 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return bad(format!("host name {name:?}: 1-12 letters/digits"));
            }
            if !seen.insert(name) {
                return bad(format!("host or pod name {name:?} is used twice"));
            }
        }
        for b in &self.bridges {
            if !self.hosts.iter().any(|h| h.name == b.host) {
                return bad(format!("bridge {} names unknown host {}", b.name, b.host));
            }
            if b.name.is_empty() || b.name.len() > 15 {
                return bad(format!("bridge name {:?}: 1-15 characters", b.name));
            }
        }
        for p in &self.pods {
            let Some(br) = self.bridges.iter().find(|b| b.host == p.node && b.name == p.bridge) else {
                return bad(format!("pod {} names no bridge {} in host {}", p.name, p.bridge, p.node));
            };
            if p.addr.is_empty() {
                return bad(format!("pod {} needs an address", p.name));
            }
            if p.gateway.is_empty() && br.addr.is_empty() {
                return bad(format!("pod {}: bridge {} has no address to route through", p.name, br.name));
            }
        }
        for l in &self.links {
            if !known(&l.a) || !known(&l.b) {
                return bad(format!("link {}-{} names an unknown host", l.a, l.b));
            }
        }
        for r in &self.routes {
            if !known(&r.host) {
                return bad(format!("route names unknown host {}", r.host));
            }
        }
        for d in &self.dns {
            if !known(&d.host) {
                return bad(format!("dns names unknown host {}", d.host));
            }
        }
        for d in &self.sshd {
            if !known(&d.host) {
                return bad(format!("sshd names unknown host {}", d.host));
            }
        }
        if self.sshd.len() > 1 {
            return bad("at most one sshd per scenario".into());
        }
        let steps = self.steps.iter().map(|s| ("step", s)).chain(self.after.iter().map(|s| ("after step", s)));
        let mut n = std::collections::HashMap::new();
        for (what, s) in steps {
            let i = n.entry(what).and_modify(|i| *i += 1).or_insert(1);
            if let Some(h) = &s.host {
                if !known(h) {
                    return bad(format!("{what} {i} names unknown host {h}"));
                }
            }
            let actions =
                [s.sh.is_some(), s.spawn.is_some(), s.kill.is_some(), s.sleep_ms.is_some(), s.docker.is_some()];
            if actions.iter().filter(|a| **a).count() != 1 && s.wait_listen.is_none() {
                return bad(format!("{what} {i} must have exactly one of sh, spawn, kill, sleep_ms, docker"));
            }
            if (s.sh.is_some() || s.spawn.is_some() || s.wait_listen.is_some() || s.docker.is_some())
                && s.host.is_none()
            {
                return bad(format!("{what} {i} needs a host"));
            }
            let docker_host = |h: &Option<String>| self.hosts.iter().any(|x| Some(&x.name) == h.as_ref() && x.docker);
            if (s.docker.is_some() || s.container.is_some()) && !docker_host(&s.host) {
                return bad(format!("{what} {i}: docker steps need a host with docker = true"));
            }
            if s.container.is_some() && s.wait_listen.is_none() {
                return bad(format!("{what} {i}: container is only used with wait_listen"));
            }
        }
        if !known(&self.diagnose.from) {
            return bad(format!("diagnose.from names unknown host {}", self.diagnose.from));
        }
        if self.diagnose.target.is_none() == self.diagnose.argv.is_none() {
            return bad("diagnose needs exactly one of target or argv".into());
        }
        self.expect.validate().or_else(bad)
    }
}

impl Expect {
    /// Reject expectations that could never fail or contradict themselves.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.findings {
            let extra = f.severity.is_some()
                || !f.evidence.is_empty()
                || !f.contains.is_empty()
                || !f.not_contains.is_empty()
                || !f.summary_contains.is_empty()
                || !f.remediation_contains.is_empty()
                || !f.partial_contains.is_empty();
            if !f.exists && extra {
                return Err(format!("expect.finding {}: exists = false takes no other key", f.cause));
            }
            if let Some(e) =
                [&f.contains, &f.not_contains, &f.summary_contains, &f.remediation_contains, &f.partial_contains]
                    .iter()
                    .flat_map(|v| v.iter())
                    .find(|s| s.is_empty())
            {
                return Err(format!("expect.finding {}: an empty string {e:?} matches anything", f.cause));
            }
        }
        for j in &self.json {
            if !(j.pointer.is_empty() || j.pointer.starts_with('/')) {
                return Err(format!("expect.json pointer {:?} must be empty or start with /", j.pointer));
            }
            if j.equals.is_none() && j.contains.is_none() && j.exists.is_none() {
                return Err(format!("expect.json {}: needs equals, contains or exists", j.pointer));
            }
            if j.exists == Some(false) && (j.equals.is_some() || j.contains.is_some()) {
                return Err(format!("expect.json {}: exists = false takes no equals/contains", j.pointer));
            }
            if j.contains.as_deref() == Some("") {
                return Err(format!("expect.json {}: an empty contains matches anything", j.pointer));
            }
        }
        for k in &self.skipped {
            let has_text_checks = !k.reason_contains.is_empty() || !k.hint_contains.is_empty();
            if !k.exists && has_text_checks {
                return Err(format!("expect.skipped {}: exists = false takes no other key", k.check));
            }
        }
        let strs = self
            .absent
            .iter()
            .chain(&self.stdout_contains)
            .chain(&self.stderr_contains)
            .chain(&self.absent_cmdline)
            .chain(&self.seen_cmdline);
        if strs.clone().any(String::is_empty) {
            return Err("expect: an empty string in absent/stdout_contains/stderr_contains".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario in the repository parses and validates (runs without root).
    #[test]
    fn every_scenario_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/scenarios");
        let all = Scenario::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(all.len() > 10, "only {} scenarios found in {}", all.len(), dir.display());
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "scenario names are unique");
    }
}
