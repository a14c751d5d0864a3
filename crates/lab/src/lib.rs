//! Builds fault scenarios in network namespaces from data files (docs/lab.md), runs conndoc
//! inside the client namespace and checks the report. Everything built is torn down by
//! [`Lab`]'s `Drop`, also when a test fails or panics.

pub mod check;
pub mod docker;
pub mod enginesock;
pub mod scenario;
mod sshd;
pub mod tool;

pub use check::check;
pub use scenario::Scenario;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("lab setup step `{what}` failed: {message}")]
    Setup { what: String, message: String },
}

pub(crate) fn setup_err(what: impl Into<String>, message: impl Into<String>) -> LabError {
    LabError::Setup { what: what.into(), message: message.into() }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this process can build labs (root is required for namespaces and firewall rules).
pub fn can_run() -> Result<(), String> {
    if std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        != Some(true)
    {
        return Err("lab scenarios need root (network namespaces, nftables); run the tests as root".into());
    }
    if which("ip").is_none() {
        return Err("lab scenarios need `ip` (Debian package iproute2)".into());
    }
    Ok(())
}

/// Whether a scenario's `requires` entry is met here: a program on PATH, or a machine
/// feature by its name (`cgroup2`: a writable cgroup v2 hierarchy, for scenarios that make
/// their own cgroup). Err is the reason the scenario is skipped.
pub fn requirement(r: &str) -> Result<(), String> {
    match r {
        "cgroup2" => match cgroup2_mount_rw() {
            Some((_, true)) => Ok(()),
            Some((m, false)) => {
                Err(format!("needs a writable cgroup v2 hierarchy ({} is mounted read-only)", m.display()))
            }
            None => Err("needs a cgroup v2 hierarchy (no cgroup2 mount in /proc/self/mounts)".into()),
        },
        prog if which(prog).is_some() => Ok(()),
        prog => Err(format!("needs `{prog}` (install it; CI lists it in .ci/packages)")),
    }
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A built scenario. Dropping it kills every process and deletes every namespace.
pub struct Lab {
    /// host name → namespace name
    pub ns: BTreeMap<String, String>,
    /// spawned step name → child
    children: Vec<(Option<String>, Child)>,
    /// host name → its Docker engine (hosts with `docker = true`)
    engines: BTreeMap<String, docker::Dockerd>,
    pub dir: PathBuf,
    keep_dir: bool,
    /// The `lab/` directory (parent of the scenario's directory): `{lab}` in steps, for
    /// data files such as kube-proxy's rules in `lab/kube/`.
    files: PathBuf,
    /// Sample every process's command line during the conndoc run (`absent_cmdline`).
    pub sample_cmdlines: bool,
    has_sshd: bool,
    link_on_path: bool,
    /// `{cgroup}`: this lab's own cgroup v2 directory (made by the scenario's steps, e.g. a
    /// hand-made `libpod-ID.scope` inside; removed, children first, at teardown).
    cgroup: Option<PathBuf>,
}

/// What a conndoc run printed.
#[derive(Debug)]
pub struct RunOutput {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub json: Option<Value>,
    pub elapsed: Duration,
    pub argv: Vec<String>,
    /// Command lines seen on the machine during the run (when sampled).
    pub cmdlines: Vec<String>,
    /// What each lab engine saw of the run.
    pub engines: Vec<EngineRun>,
}

/// One lab engine during a conndoc run: the requests made through its recording proxy and
/// its containers' states before and after.
#[derive(Debug)]
pub struct EngineRun {
    pub host: String,
    /// The run's DOCKER_HOST was this engine's proxy.
    pub proxied: bool,
    pub requests: Vec<String>,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

impl EngineRun {
    /// Read-only towards the engine: every request a GET, no container changed; and a run
    /// pointed at the engine asked it something (else the check proved nothing).
    pub fn errors(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let writes: Vec<&String> = self.requests.iter().filter(|r| !r.starts_with("GET ")).collect();
        if !writes.is_empty() {
            errs.push(format!(
                "conndoc sent {} non-GET request(s) to {}'s engine: {writes:?}",
                writes.len(),
                self.host
            ));
        }
        if self.proxied && self.requests.is_empty() {
            errs.push(format!("conndoc made no request to {}'s engine through its recording proxy", self.host));
        }
        if self.before != self.after {
            errs.push(format!(
                "{}'s containers changed during the run:\n    before: {:?}\n    after:  {:?}",
                self.host, self.before, self.after
            ));
        }
        errs
    }
}

impl Lab {
    /// Build every host, link, route, DNS server and step of the scenario.
    pub fn build(s: &Scenario) -> Result<Lab, LabError> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("cdl{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("conndoc-lab-{id}-{}", s.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| setup_err("create temp dir", e.to_string()))?;
        let mut lab = Lab {
            ns: BTreeMap::new(),
            children: Vec::new(),
            engines: BTreeMap::new(),
            dir,
            keep_dir: std::env::var_os("CONNDOC_LAB_KEEP").is_some(),
            files: std::fs::canonicalize(&s.path)
                .ok()
                .and_then(|p| p.parent().and_then(Path::parent).map(Path::to_path_buf))
                .unwrap_or_default(),
            sample_cmdlines: false,
            has_sshd: !s.sshd.is_empty(),
            link_on_path: false,
            cgroup: cgroup2_mount().map(|m| m.join(format!("conndoc-lab-{id}.slice"))),
        };
        for h in &s.hosts {
            let ns = format!("{id}{}", h.name);
            lab.add_namespace(&h.name, &ns, &h.hosts, &h.nameservers)?;
            for (k, v) in &h.sysctl {
                lab.exec(&h.name, &["sysctl", "-q", "-w", &format!("{k}={v}")])?;
            }
        }
        // The bridge CNI plugin's work (plugins/main/bridge): the bridge with the gateway
        // address, forwarding on, one veth per pod with `eth0` inside and a default route.
        for b in &s.bridges {
            let ns = lab.ns[&b.host].clone();
            run(&["ip", "-n", &ns, "link", "add", &b.name, "type", "bridge"])?;
            for a in &b.addr {
                add_addr(&ns, &b.name, a)?;
            }
            run(&["ip", "-n", &ns, "link", "set", &b.name, "up"])?;
            for k in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                lab.exec(&b.host, &["sysctl", "-q", "-w", k])?;
            }
        }
        for p in &s.pods {
            // containerd names a pod's namespace `cni-<uuid>` under /run/netns.
            let ns = format!("cni-{}", uuid()?);
            lab.add_namespace(&p.name, &ns, &[], &[])?;
            let node = lab.ns[&p.node].clone();
            let veth = format!("veth{}", &ns[4..12]);
            run(&["ip", "-n", &node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["ip", "-n", &node, "link", "set", &veth, "master", &p.bridge, "up"])?;
            for a in &p.addr {
                add_addr(&ns, "eth0", a)?;
            }
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            let bridge = s.bridges.iter().find(|b| b.host == p.node && b.name == p.bridge);
            let gws: Vec<String> = if p.gateway.is_empty() {
                bridge
                    .map(|b| b.addr.iter().map(|a| a.split('/').next().unwrap_or_default().to_string()).collect())
                    .unwrap_or_default()
            } else {
                p.gateway.clone()
            };
            for gw in &gws {
                let fam = if gw.contains(':') { "-6" } else { "-4" };
                run(&["ip", "-n", &ns, fam, "route", "add", "default", "via", gw, "dev", "eth0"])?;
            }
            for a in &p.addr {
                lab.wait_reachable(&p.node, a.split('/').next().unwrap_or_default());
            }
        }
        let mut ifcount: BTreeMap<String, u32> = BTreeMap::new();
        let mut next_if = |h: &str| {
            let c = ifcount.entry(h.to_string()).or_insert(0);
            *c += 1;
            format!("eth{}", *c - 1)
        };
        for l in &s.links {
            let (na, nb) = (lab.ns[&l.a].clone(), lab.ns[&l.b].clone());
            let (ia, ib) = (next_if(&l.a), next_if(&l.b));
            run(&["ip", "-n", &na, "link", "add", &ia, "type", "veth", "peer", "name", &ib, "netns", &nb])?;
            for (ns, ifname, addrs) in [(&na, &ia, &l.a_addr), (&nb, &ib, &l.b_addr)] {
                for a in addrs {
                    let mut cmd = vec!["ip", "-n", ns, "addr", "add", a, "dev", ifname];
                    if a.contains(':') {
                        cmd.push("nodad"); // no 1-2 s of "tentative" before the address works
                    }
                    run(&cmd)?;
                }
                run(&["ip", "-n", ns, "link", "set", ifname, "up"])?;
            }
        }
        // Fresh links drop the first neighbour solicitation while they settle; wait until
        // each link carries traffic (bounded, lab namespaces only) so the first SYN of a
        // scenario is not lost to that.
        for l in &s.links {
            for peer_addr in &l.b_addr {
                let ip = peer_addr.split('/').next().unwrap_or_default();
                lab.wait_reachable(&l.a, ip);
            }
        }
        for r in &s.routes {
            let ns = lab.ns[&r.host].clone();
            let mut cmd: Vec<&str> = vec!["ip", "-n", &ns];
            if r.to.contains(':') || r.via.as_deref().is_some_and(|v| v.contains(':')) {
                cmd.push("-6");
            }
            cmd.extend(["route", "add", r.to.as_str()]);
            if let Some(v) = &r.via {
                cmd.extend(["via", v.as_str()]);
            }
            if let Some(d) = &r.dev {
                cmd.extend(["dev", d.as_str()]);
            }
            run(&cmd)?;
        }
        for d in &s.dns {
            lab.start_dns(d)?;
        }
        for d in &s.sshd {
            sshd::start(&mut lab, d)?;
            if d.conndoc_on_path {
                lab.link_on_path = true;
            }
        }
        for h in s.hosts.iter().filter(|h| h.docker) {
            let ns = lab.ns[&h.name].clone();
            let engine = docker::Dockerd::start(&h.name, &ns, &lab.dir)?;
            lab.engines.insert(h.name.clone(), engine);
        }
        for (i, st) in s.steps.iter().enumerate() {
            lab.step(i, st).map_err(|e| match e {
                LabError::Setup { what, message } => setup_err(format!("step {}: {what}", i + 1), message),
                e => e,
            })?;
        }
        Ok(lab)
    }

    /// Create a namespace for a host or pod: loopback up, no DAD, its own hosts file and
    /// resolv.conf. Registered before it is created, so a half-built lab is cleaned up too.
    fn add_namespace(
        &mut self,
        name: &str,
        ns: &str,
        hosts_lines: &[String],
        nameservers: &[String],
    ) -> Result<(), LabError> {
        self.ns.insert(name.to_string(), ns.to_string());
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        // No duplicate-address detection in a lab: addresses, link-local ones included,
        // work at once instead of after 1-2 s of "tentative" (first SYNs would be lost).
        for k in ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"] {
            run(&["ip", "netns", "exec", ns, "sysctl", "-q", "-w", k])?;
        }
        let etc = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&etc).map_err(|e| setup_err("create /etc/netns dir", e.to_string()))?;
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
        for line in hosts_lines {
            hosts.push_str(line);
            hosts.push('\n');
        }
        write(&etc.join("hosts"), &hosts)?;
        // Always give the namespace its own resolv.conf so no query can go to the
        // machine's real nameservers.
        let servers = if nameservers.is_empty() { vec!["127.0.0.1".to_string()] } else { nameservers.to_vec() };
        let mut rc: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
        rc.push_str("options timeout:1 attempts:1\n");
        write(&etc.join("resolv.conf"), &rc)
    }

    fn ns_of(&self, host: &str) -> Result<&str, LabError> {
        self.ns.get(host).map(String::as_str).ok_or_else(|| setup_err("host lookup", format!("unknown host {host}")))
    }

    /// Run a command inside a host to completion; it must succeed.
    pub fn exec(&self, host: &str, argv: &[&str]) -> Result<String, LabError> {
        let ns = self.ns_of(host)?;
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        run(&full)
    }

    fn spawn(
        &mut self,
        host: &str,
        name: Option<String>,
        argv: &[String],
        nofile: Option<u64>,
    ) -> Result<u32, LabError> {
        let ns = self.ns_of(host)?.to_string();
        let tag = name.clone().unwrap_or_else(|| format!("p{}", self.children.len()));
        let log = std::fs::File::create(self.dir.join(format!("{tag}.log")))
            .map_err(|e| setup_err("log file", e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| setup_err("log file", e.to_string()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match nofile {
            // The shell sets the limit and then becomes the program (exec), so the pid is the program's.
            Some(n) => {
                let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
                cmd.args(["sh", "-c", &format!("ulimit -n {n} && exec {}", quoted.join(" "))]);
            }
            None => {
                cmd.args(argv);
            }
        }
        cmd.current_dir(&self.dir).stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(|e| setup_err(format!("spawn {argv:?}"), e.to_string()))?;
        let pid = child.id();
        self.children.push((name, child));
        Ok(pid)
    }

    /// The pid of a spawned step.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.iter().find(|(n, _)| n.as_deref() == Some(name)).map(|(_, c)| c.id())
    }

    fn step(&mut self, _i: usize, st: &scenario::Step) -> Result<(), LabError> {
        if let Some(ms) = st.sleep_ms {
            std::thread::sleep(Duration::from_millis(ms.min(30_000)));
        }
        if let Some(sh) = &st.sh {
            let host = st.host.as_deref().unwrap_or_default();
            let sh = self.expand(sh);
            self.exec(host, &["sh", "-c", &sh])?;
        }
        if let Some(argv) = &st.spawn {
            let host = st.host.clone().unwrap_or_default();
            let argv: Vec<String> = argv.iter().map(|a| self.expand(a)).collect();
            self.spawn(&host, st.name.clone(), &argv, st.nofile)?;
        }
        if let Some(args) = &st.docker {
            let host = st.host.clone().unwrap_or_default();
            let args: Vec<String> = args.iter().map(|a| self.expand(a)).collect();
            let engine = self
                .engines
                .get_mut(&host)
                .ok_or_else(|| setup_err("docker", format!("host {host} runs no Docker engine")))?;
            engine.step(&args)?;
        }
        if let Some(port) = st.wait_listen {
            let host = st.host.clone().unwrap_or_default();
            let max = Duration::from_millis(st.wait_ms.unwrap_or(5000));
            match &st.container {
                Some(c) => self.wait_container_listen(&host, c, port, max)?,
                None => self.wait_listen(&host, port, max)?,
            }
        }
        if let Some(name) = &st.kill {
            let idx = self
                .children
                .iter()
                .position(|(n, _)| n.as_deref() == Some(name.as_str()))
                .ok_or_else(|| setup_err("kill", format!("no spawned step named {name}")))?;
            let (_, mut child) = self.children.remove(idx);
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Wait until a TCP socket listens on `port` inside the host.
    pub fn wait_listen(&self, host: &str, port: u16, max: Duration) -> Result<(), LabError> {
        let start = Instant::now();
        let ns = self.ns_of(host)?.to_string();
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "ss", "-Htln", &format!("sport = :{port}")])
                .output()
                .map_err(|e| setup_err("ss", e.to_string()))?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            if start.elapsed() > max {
                let logs = self.logs();
                return Err(setup_err(
                    format!("wait_listen {port} in {host}"),
                    format!("no listener after {max:?}; logs:\n{logs}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until a TCP socket listens on `port` inside a container's network namespace.
    fn wait_container_listen(&self, host: &str, name: &str, port: u16, max: Duration) -> Result<(), LabError> {
        let engine =
            self.engines.get(host).ok_or_else(|| setup_err("wait_listen", format!("{host} runs no engine")))?;
        let start = Instant::now();
        loop {
            let listening = engine.container_pid(name).ok().is_some_and(|pid| {
                Command::new("nsenter")
                    .arg(format!("--net=/proc/{pid}/ns/net"))
                    .args(["ss", "-Htln", &format!("sport = :{port}")])
                    .output()
                    .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            });
            if listening {
                return Ok(());
            }
            if start.elapsed() > max {
                let logs = engine.cli(&["logs", "--tail", "15", name], Duration::from_secs(5)).unwrap_or_default();
                return Err(setup_err(
                    format!("wait_listen {port} in container {name}"),
                    format!("no listener after {max:?}; container logs:\n{logs}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Ping `ip` from `host` until it answers (at most ~3 s); a link that never answers is
    /// left for the scenario to show.
    fn wait_reachable(&self, host: &str, ip: &str) {
        let Ok(ns) = self.ns_of(host) else { return };
        for _ in 0..6 {
            let ok = Command::new("ip")
                .args(["netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", "1", "-i", "0.2", ip])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
        }
    }

    /// The logs of every spawned process, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    s.push_str(&format!("--- {}\n{tail}\n", e.file_name().to_string_lossy()));
                }
            }
        }
        s
    }

    fn start_dns(&mut self, d: &scenario::DnsSpec) -> Result<(), LabError> {
        let bin =
            which("dnsmasq").ok_or_else(|| setup_err("dns", "dnsmasq not found (Debian package dnsmasq-base)"))?;
        let mut argv = vec![
            bin.display().to_string(),
            "--keep-in-foreground".into(),
            "--no-hosts".into(),
            "--no-resolv".into(),
            "--conf-file=/dev/null".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={}", d.listen),
            "--port=53".into(),
            "--user=root".into(),
            format!("--pid-file={}", self.dir.join(format!("dnsmasq-{}.pid", d.host)).display()),
        ];
        let mut domains = d.local_domains.clone();
        for (name, addrs) in &d.records {
            argv.push(format!("--host-record={name},{}", addrs.join(",")));
            if d.local_domains.is_empty() {
                if let Some(tld) = name.rsplit('.').next() {
                    if !domains.iter().any(|x| x == tld) {
                        domains.push(tld.to_string());
                    }
                }
            }
        }
        for dom in &domains {
            argv.push(format!("--local=/{dom}/"));
        }
        self.spawn(&d.host, Some(format!("dns-{}", d.host)), &argv, None)?;
        // Wait until it answers on UDP 53: its TCP listener comes up at the same time.
        self.wait_listen(&d.host, 53, Duration::from_secs(5))
    }

    /// Replace `{ns:HOST}`, `{pid:STEP}`, `{dir}`, `{lab}`, `{ssh_command}`, `{ssh_dir}`,
    /// `{image}`, `{docker:HOST}` (that host's DOCKER_HOST) and `{cpid:CONTAINER}` (a running
    /// container's pid) placeholders.
    pub fn expand(&self, s: &str) -> String {
        let mut out = s
            .replace("{dir}", &self.dir.display().to_string())
            .replace("{lab}", &self.files.display().to_string())
            .replace("{image}", docker::IMAGE);
        if let Some(c) = &self.cgroup {
            // Through this process's root: `ip netns exec` remounts /sys, hiding the
            // cgroup mounts from a step run inside a namespace.
            out = out.replace("{cgroup}", &format!("/proc/{}/root{}", std::process::id(), c.display()));
        }
        if self.has_sshd {
            out = out.replace("{ssh_command}", &sshd::ssh_command(self));
            out = out.replace("{ssh_dir}", &sshd::dir(self).display().to_string());
            out = out.replace("{ssh_runtime}", &sshd::runtime_dir(self).display().to_string());
        }
        for (h, e) in &self.engines {
            out = out.replace(&format!("{{docker:{h}}}"), &e.docker_host());
        }
        while let Some(i) = out.find("{cpid:") {
            let Some(j) = out[i..].find('}') else { break };
            let name = out[i + 6..i + j].to_string();
            let pid = self.engines.values().find_map(|e| e.container_pid(&name).ok()).map(|p| p.to_string());
            out.replace_range(i..i + j + 1, &pid.unwrap_or_else(|| format!("no-running-container-{name}")));
        }
        for (h, ns) in &self.ns {
            out = out.replace(&format!("{{ns:{h}}}"), ns);
        }
        for (name, child) in &self.children {
            if let Some(n) = name {
                out = out.replace(&format!("{{pid:{n}}}"), &child.id().to_string());
            }
        }
        out
    }

    /// Run conndoc as the scenario says, inside the `from` host, with a hard deadline.
    pub fn run_conndoc(&self, bin: &Path, spec: &scenario::RunSpec) -> Result<RunOutput, LabError> {
        let ns = self.ns_of(&spec.from)?.to_string();
        let mut argv: Vec<String> = match (&spec.argv, &spec.target) {
            (Some(a), _) => a.iter().map(|x| self.expand(x)).collect(),
            (None, Some(t)) => {
                let mut v = vec!["diagnose".to_string(), self.expand(t), "--json".into()];
                v.extend(spec.args.iter().map(|x| self.expand(x)));
                // Recording mode: keep the evidence as a fixture for the rules' replay tests.
                // A scenario that writes its own evidence file gets it copied after the run;
                // one run under another user (`wrap`) is not recorded (it could not write there).
                if let Some(path) = record_path(self) {
                    if !v.iter().any(|a| a == "--evidence-out") && spec.wrap.is_empty() {
                        v.push("--evidence-out".into());
                        v.push(path.display().to_string());
                    }
                }
                v
            }
            (None, None) => unreachable!("validated: target or argv"),
        };
        let bin_s = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf()).display().to_string();
        for a in argv.iter_mut() {
            *a = a.replace("{conndoc}", &bin_s);
        }
        argv.insert(0, bin.display().to_string());
        for (i, w) in spec.wrap.iter().enumerate() {
            argv.insert(i, self.expand(w));
        }
        if self.link_on_path {
            sshd::link_conndoc(self, bin)?;
        }
        let mut env: BTreeMap<String, String> = spec.env.iter().map(|(k, v)| (k.clone(), self.expand(v))).collect();
        // conndoc run on a Docker host talks to that host's engine, as a user's would.
        if let Some(e) = self.engines.get(&spec.from) {
            env.entry("DOCKER_HOST".into()).or_insert_with(|| e.docker_host());
        }
        let mut before = BTreeMap::new();
        for (h, e) in &self.engines {
            e.clear_requests();
            before.insert(h.clone(), e.states()?);
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).args(&argv).envs(&env).stdin(Stdio::null());
        let sampler = self.sample_cmdlines.then(sshd::CmdlineSampler::start);
        let start = Instant::now();
        let out = output_with_deadline(cmd, Duration::from_millis(spec.deadline_ms.unwrap_or(30_000)));
        let elapsed = start.elapsed();
        let cmdlines = sampler.map(sshd::CmdlineSampler::finish).unwrap_or_default();
        let out = out?;
        let mut engines = Vec::new();
        for (h, e) in &self.engines {
            engines.push(EngineRun {
                host: h.clone(),
                proxied: env.get("DOCKER_HOST") == Some(&e.docker_host()),
                requests: e.requests(),
                before: before.remove(h).unwrap_or_default(),
                after: e.states()?,
            });
        }
        if let (Some(record), Some(own)) = (record_path(self), argv.iter().position(|a| a == "--evidence-out")) {
            if let Some(own) = argv.get(own + 1).filter(|p| Path::new(p.as_str()) != record) {
                let _ = std::fs::copy(own, &record);
            }
        }
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = parse_json(&stdout);
        Ok(RunOutput {
            status: out.status.code(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            json,
            elapsed,
            argv,
            cmdlines,
            engines,
        })
    }
}

/// Where recording mode (`CONNDOC_LAB_EVIDENCE_DIR`) keeps this scenario's evidence.
/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
/// host), from /proc/self/mounts.
fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mount_rw().map(|(m, _)| m)
}

/// The cgroup v2 mount point and whether it is mounted read-write.
fn cgroup2_mount_rw() -> Option<(PathBuf, bool)> {
    let m = std::fs::read_to_string("/proc/self/mounts").ok()?;
    m.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let rw = f.get(3).is_some_and(|o| o.split(',').any(|o| o == "rw"));
        (f.get(2) == Some(&"cgroup2")).then(|| (PathBuf::from(f[1]), rw))
    })
}

/// Remove a cgroup directory the lab made (its processes are gone by now): sub-cgroups
/// first, `depth` levels at most. A cgroup directory is removed with rmdir, never by
/// deleting its (kernel) files.
fn remove_cgroup(dir: &Path, depth: u32) {
    if depth == 0 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path(), depth - 1);
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// One JSON object (`diagnose --json`), or an array of one object a line (`check --json`
/// with several targets).
fn parse_json(stdout: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(stdout) {
        return Some(v);
    }
    let lines: Result<Vec<Value>, _> =
        stdout.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect();
    lines.ok().filter(|l| l.len() > 1).map(Value::Array)
}

fn record_path(lab: &Lab) -> Option<PathBuf> {
    let dir = std::env::var_os("CONNDOC_LAB_EVIDENCE_DIR")?;
    let name = lab.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let scenario = name.splitn(4, '-').nth(3).unwrap_or(&name).to_string();
    Some(PathBuf::from(dir).join(format!("{scenario}.json")))
}

/// SIGKILL every process in a lab namespace (daemons that forked, container shims).
fn kill_ns_pids(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
        // Engines first: their containers are removed through the engine, then anything
        // left in the namespace is killed, before the namespace goes.
        for (host, engine) in std::mem::take(&mut self.engines) {
            let ns = self.ns.get(&host).cloned().unwrap_or_default();
            docker::finish(engine, || kill_ns_pids(&ns));
        }
        for ns in self.ns.values() {
            // Anything a step started in the namespace (daemons that forked) goes too.
            kill_ns_pids(ns);
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        if let Some(c) = &self.cgroup {
            remove_cgroup(c, 4);
        }
        if self.has_sshd {
            let _ = std::fs::remove_dir_all(sshd::runtime_dir(self));
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Build the scenario, run conndoc, check; Err carries a readable failure report.
pub fn run_scenario(s: &Scenario, conndoc: &Path) -> Result<RunOutput, String> {
    let mut lab = Lab::build(s).map_err(|e| format!("{}: {e}", s.name))?;
    lab.sample_cmdlines = !s.expect.absent_cmdline.is_empty() || !s.expect.seen_cmdline.is_empty();
    let out = lab.run_conndoc(conndoc, &s.diagnose).map_err(|e| format!("{}: {e}", s.name))?;
    let mut errs = check(&s.expect, &out);
    errs.extend(out.engines.iter().flat_map(EngineRun::errors));
    for (i, st) in s.after.iter().enumerate() {
        if let Err(e) = lab.step(i, st) {
            errs.push(format!("after step {}: {e}", i + 1));
        }
    }
    if errs.is_empty() {
        return Ok(out);
    }
    Err(format!(
        "scenario {} ({}) failed:\n  - {}\n  command: {}\n  exit: {:?}, elapsed {:?}\n  engine requests: {:?}\n  stdout:\n{}\n  stderr:\n{}\n  process logs:\n{}",
        s.name,
        s.path.display(),
        errs.join("\n  - "),
        out.argv.join(" "),
        out.status,
        out.elapsed,
        out.engines.iter().map(|e| (&e.host, &e.requests)).collect::<Vec<_>>(),
        out.stdout,
        out.stderr,
        lab.logs()
    ))
}

pub(crate) fn run(argv: &[&str]) -> Result<String, LabError> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| setup_err(argv.join(" "), e.to_string()))?;
    if !out.status.success() {
        return Err(setup_err(argv.join(" "), String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Add an address to an interface in a namespace (IPv6 without DAD, usable at once).
fn add_addr(ns: &str, ifname: &str, addr: &str) -> Result<(), LabError> {
    let mut cmd = vec!["ip", "-n", ns, "addr", "add", addr, "dev", ifname];
    if addr.contains(':') {
        cmd.push("nodad");
    }
    run(&cmd).map(|_| ())
}

/// A random UUID from the kernel (what containerd's `cni-<uuid>` names look like).
fn uuid() -> Result<String, LabError> {
    let u = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(|e| setup_err("read /proc/sys/kernel/random/uuid", e.to_string()))?;
    Ok(u.trim().to_string())
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|e| setup_err(format!("write {}", path.display()), e.to_string()))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Run a command, killing it if it outlives the deadline.
pub(crate) fn output_with_deadline(mut cmd: Command, max: Duration) -> Result<std::process::Output, LabError> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| setup_err("run conndoc", e.to_string()))?;
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < max {
            if d2.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().map_err(|e| setup_err("run conndoc", e.to_string()));
    done.store(true, Ordering::SeqCst);
    let _ = killer.join();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_names_what_is_missing() {
        let e = requirement("conndoc-no-such-program-x").unwrap_err();
        assert!(e.contains("`conndoc-no-such-program-x`"), "{e}");
        assert!(requirement("sh").is_ok());
        // cgroup2 is met exactly when /proc/self/mounts has a read-write cgroup2 mount.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let rw = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&"cgroup2") && f.get(3).is_some_and(|o| o.starts_with("rw"))
        });
        match requirement("cgroup2") {
            Ok(()) => assert!(rw, "cgroup2 met without a rw cgroup2 mount"),
            Err(e) => assert!(!rw && e.contains("cgroup v2"), "{e}"),
        }
    }
}
