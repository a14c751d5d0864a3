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
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub dns: Vec<DnsSpec>,
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
    #[serde(default, rename = "finding")]
    pub findings: Vec<ExpectFinding>,
    #[serde(default)]
    pub json: Vec<ExpectJson>,
    /// Strings that must NOT appear anywhere in stdout or stderr (e.g. a password).
    #[serde(default)]
    pub absent: Vec<String>,
    /// Strings stdout must contain (for text output runs).
    #[serde(default)]
    pub stdout_contains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectFinding {
    pub cause: String,
    #[serde(default)]
    pub severity: Option<String>,
    /// Evidence kinds the finding must carry.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// Strings the finding's JSON must contain.
    #[serde(default)]
    pub contains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectJson {
    pub pointer: String,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default)]
    pub contains: Option<String>,
    /// The value at the pointer must exist (any value).
    #[serde(default)]
    pub exists: Option<bool>,
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
        let known = |h: &str| self.hosts.iter().any(|x| x.name == h);
        for h in &self.hosts {
            if h.name.is_empty() || h.name.len() > 12 || !h.name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return bad(format!("host name {:?}: 1-12 letters/digits", h.name));
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
        let steps = self.steps.iter().map(|s| ("step", s)).chain(self.after.iter().map(|s| ("after step", s)));
        let mut n = std::collections::HashMap::new();
        for (what, s) in steps {
            let i = n.entry(what).and_modify(|i| *i += 1).or_insert(1);
            if let Some(h) = &s.host {
                if !known(h) {
                    return bad(format!("{what} {i} names unknown host {h}"));
                }
            }
            let actions = [s.sh.is_some(), s.spawn.is_some(), s.kill.is_some(), s.sleep_ms.is_some()];
            if actions.iter().filter(|a| **a).count() != 1 && s.wait_listen.is_none() {
                return bad(format!("{what} {i} must have exactly one of sh, spawn, kill, sleep_ms"));
            }
            if (s.sh.is_some() || s.spawn.is_some() || s.wait_listen.is_some()) && s.host.is_none() {
                return bad(format!("{what} {i} needs a host"));
            }
        }
        if !known(&self.diagnose.from) {
            return bad(format!("diagnose.from names unknown host {}", self.diagnose.from));
        }
        if self.diagnose.target.is_none() == self.diagnose.argv.is_none() {
            return bad("diagnose needs exactly one of target or argv".into());
        }
        Ok(())
    }
}
