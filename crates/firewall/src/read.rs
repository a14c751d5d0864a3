//! Running the ruleset listing tools (read-only) in the calling thread's network namespace.

use crate::FirewallError;
use conndoc_facts::firewall::FirewallTool;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One `*-save` tool's output, or why it could not be read.
pub type SaveOutput = (FirewallTool, Result<String, String>);

/// Raw output of every tool, or why it could not be read.
#[derive(Debug, Clone)]
pub struct RawRulesets {
    /// The nf_tables ruleset read over netlink; when present the `nft` outputs are not used.
    pub nft_netlink: Option<crate::nfnl::NetlinkRuleset>,
    /// Why the netlink read failed (then `nft -j` was run instead).
    pub netlink_error: Option<String>,
    /// `nft -j list ruleset`: the fallback (Err when not run or failed).
    pub nft_json: Result<String, String>,
    /// `nft -a list ruleset`, for the rule texts.
    pub nft_text: Option<String>,
    pub iptables: Vec<SaveOutput>,
    /// The reads that did not finish within the deadline (their error texts): the ruleset
    /// was read in part, so a rule there may explain what the rest does not.
    pub deadline_exceeded: Vec<String>,
}

fn which(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).any(|d| d.join(prog).is_file())
}

fn find(prog: &str) -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Run a command, capturing stdout, killing it at the deadline.
pub fn run(prog: &str, args: &[&str], timeout: Duration) -> Result<String, FirewallError> {
    let command = format!("{prog} {}", args.join(" ")).trim().to_string();
    let path = find(prog).unwrap_or_else(|| prog.to_string());
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|source| FirewallError::Spawn { command: command.clone(), source })?;
    // Read both pipes on helper threads so a large ruleset never blocks the child.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(FirewallError::Timeout { command, ms: timeout.as_millis() });
            }
            Err(source) => return Err(FirewallError::Spawn { command, source }),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    if !status.success() {
        let detail = String::from_utf8_lossy(&stderr).lines().next().unwrap_or("").trim().to_string();
        return Err(FirewallError::Command { command, detail: format!("{status}: {detail}") });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Read every ruleset present on this host (the calling thread's network namespace).
/// Tools that are not installed are left out; tools that fail say why.
pub fn read(timeout: Duration) -> RawRulesets {
    let deadline = Instant::now() + timeout;
    // nftables over netlink (no process, no printing and parsing of nft's listing), on a
    // thread of its own — threads share the namespace of the one that made them — while
    // the legacy `*-save` tools run here. iptables-nft's tables come with that dump; its
    // `*-save` runs afterwards only for a family the dump could not be read as (see
    // [`crate::nfnl::iptnft`]), or when the dump failed.
    std::thread::scope(|s| {
        let netlink = s.spawn(move || crate::nfnl::read(timeout));
        let (mut iptables, mut deadline_exceeded) = read_iptables(timeout, &Pass::Legacy);
        let mut netlink_timed_out = false;
        let (nft_netlink, netlink_error) = match netlink.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
            Ok(d) => (Some(d), None),
            // The request that ran out says how long it had left, not the read's deadline.
            Err(crate::nfnl::NfnlError::Timeout { .. }) => {
                netlink_timed_out = true;
                let ms = timeout.as_millis();
                (None, Some(format!("the nf_tables netlink read (nft list ruleset) did not finish within {ms} ms")))
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let nft_tools: Vec<FirewallTool> = match &nft_netlink {
            Some(nl) => nl.iptables_nft.iter().filter(|r| r.rules.is_err()).map(|r| r.tool).collect(),
            None => vec![FirewallTool::IptablesNft, FirewallTool::Ip6tablesNft],
        };
        let rendered: Vec<FirewallTool> = nft_netlink
            .as_ref()
            .map(|nl| nl.iptables_nft.iter().filter(|r| r.rules.is_ok()).map(|r| r.tool).collect())
            .unwrap_or_default();
        // What is left of the deadline, but never less than a save needs to start.
        let left = deadline.saturating_duration_since(Instant::now()).max(SAVE_MIN.min(timeout));
        let (nft_saves, late) =
            read_iptables(left, &Pass::Nft { run: &nft_tools, dumped: nft_netlink.is_some(), rendered: &rendered });
        iptables.splice(0..0, nft_saves);
        deadline_exceeded.extend(late);
        // Only when netlink failed: `nft -j` (which also says why, e.g. no permission) —
        // but not after a netlink read that ran out of time: `nft` dumps the same ruleset
        // more slowly, and the deadline is spent.
        let (nft_json, nft_text) = if nft_netlink.is_some() {
            (Err("not run: the ruleset was read over netlink".to_string()), None)
        } else if netlink_timed_out {
            let e = netlink_error.clone().unwrap_or_default();
            deadline_exceeded.push(e.clone());
            (Err(format!("not run: the netlink read ran out of time ({e})")), None)
        } else {
            let (json, text) = read_nft_json(timeout);
            if let Err(e) = &json {
                if e.contains(TIMEOUT_MARK) {
                    deadline_exceeded.push(e.clone());
                }
            }
            (json, text)
        };
        RawRulesets { nft_netlink, netlink_error, nft_json, nft_text, iptables, deadline_exceeded }
    })
}

/// The least time a `*-save` run after the netlink read gets.
const SAVE_MIN: Duration = Duration::from_millis(200);

/// Which `*-save` tools one pass of [`read_iptables`] runs.
enum Pass<'a> {
    /// The legacy ones (x_tables), beside the netlink read.
    Legacy,
    /// After it: iptables-nft's for the families in `run`; where only `iptables-save` is
    /// installed, that for each family unless the dump (`dumped`) read that family's
    /// iptables-nft tables (`rendered`), or had none, and no legacy table exists.
    Nft { run: &'a [FirewallTool], dumped: bool, rendered: &'a [FirewallTool] },
}

const NAMED_TOOLS: [(FirewallTool, &str); 4] = [
    (FirewallTool::IptablesNft, "iptables-nft-save"),
    (FirewallTool::Ip6tablesNft, "ip6tables-nft-save"),
    (FirewallTool::IptablesLegacy, "iptables-legacy-save"),
    (FirewallTool::Ip6tablesLegacy, "ip6tables-legacy-save"),
];

/// The `*-save` tools of `pass` that are installed, run in turn, and the runs that
/// exceeded the deadline.
fn read_iptables(timeout: Duration, pass: &Pass<'_>) -> (Vec<SaveOutput>, Vec<String>) {
    let mut iptables = Vec::new();
    let mut late = Vec::new();
    let mut run_save = |prog: &str| match run(prog, &[], timeout) {
        Ok(out) => Ok(out),
        Err(e @ FirewallError::Timeout { .. }) => {
            late.push(e.to_string());
            Err(e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let any = NAMED_TOOLS.iter().any(|(_, prog)| which(prog));
    let legacy_empty = |tool| legacy_names_file(tool).is_some_and(|f| legacy_has_no_tables(read_names(f)));
    for (tool, prog) in NAMED_TOOLS {
        let legacy = matches!(tool, FirewallTool::IptablesLegacy | FirewallTool::Ip6tablesLegacy);
        let wanted = match pass {
            Pass::Legacy => legacy,
            Pass::Nft { run, .. } => run.contains(&tool),
        };
        if !wanted || !which(prog) {
            continue;
        }
        // No legacy table in this namespace: the tool would print nothing (see
        // `legacy_has_no_tables`), so its empty output is recorded without running it.
        let out = if legacy && legacy_empty(tool) { Ok(String::new()) } else { run_save(prog) };
        iptables.push((tool, out));
    }
    // Distributions that ship only `iptables-save`: its banner names the back-end.
    let Pass::Nft { run, dumped, rendered } = pass else { return (iptables, late) };
    if any {
        return (iptables, late);
    }
    for (prog, v4) in [("iptables-save", true), ("ip6tables-save", false)] {
        let (nft, legacy) = if v4 {
            (FirewallTool::IptablesNft, FirewallTool::IptablesLegacy)
        } else {
            (FirewallTool::Ip6tablesNft, FirewallTool::Ip6tablesLegacy)
        };
        // The dump read this family's iptables-nft tables (or it has none) and there is no
        // legacy table: the tool would print what is read already.
        if *dumped && !run.contains(&nft) && legacy_empty(legacy) {
            continue;
        }
        if !which(prog) {
            continue;
        }
        let out = run_save(prog);
        let is_legacy = out.as_ref().map(|s| !s.contains("(nf_tables)")).unwrap_or(true);
        // An nf_tables back-end's listing of tables the dump read already adds nothing.
        if !is_legacy && rendered.contains(&nft) {
            continue;
        }
        iptables.push((if is_legacy { legacy } else { nft }, out));
    }
    (iptables, late)
}

/// The file listing the legacy (x_tables) tables of a legacy tool's family in the calling
/// thread's namespace (`/proc/net` follows the process's first thread, `thread-self` this one).
fn legacy_names_file(tool: FirewallTool) -> Option<&'static str> {
    match tool {
        FirewallTool::IptablesLegacy => Some("/proc/thread-self/net/ip_tables_names"),
        FirewallTool::Ip6tablesLegacy => Some("/proc/thread-self/net/ip6_tables_names"),
        _ => None,
    }
}

/// At most this much of a table names file is read (a handful of short names).
const NAMES_LIMIT: u64 = 64 * 1024;

fn read_names(path: &str) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?.take(NAMES_LIMIT).read_to_string(&mut s)?;
    Ok(s)
}

/// Whether a legacy `*-save` would print nothing, from its family's table names file.
///
/// Kernel: the file is made by ip_tables.ko / ip6_tables.ko for each namespace
/// (`xt_proto_init`) and its read only walks the tables registered there
/// (`xt_table_seq_start` under the family's mutex): reading it loads no module and
/// instantiates no table — unlike the `IPT_SO_GET_INFO` a save tool sends for a named table,
/// which may `request_module("iptable_NAME")`. Tables are made in a namespace on first use,
/// so an empty file means no legacy rule there. The legacy `*-save` lists exactly the names
/// in this file and prints nothing (exit 0) when it is absent (ENOENT) or empty. Any other
/// read error (e.g. no permission): the tool is run, to say its own why.
pub fn legacy_has_no_tables(names: std::io::Result<String>) -> bool {
    match names {
        Ok(s) => s.trim().is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// What [`FirewallError::Timeout`] says, to tell a late `nft` from a failed one.
const TIMEOUT_MARK: &str = "did not finish within";

impl RawRulesets {
    /// Why nftables could not be read at all (None when it was, either way): the fallback's
    /// failure, with the netlink read's.
    pub fn nft_error(&self) -> Option<String> {
        if self.nft_netlink.is_some() {
            return None;
        }
        let e = self.nft_json.as_ref().err()?;
        Some(match &self.netlink_error {
            Some(nl) => format!("{e} (netlink: {nl})"),
            None => e.clone(),
        })
    }

    /// Only `nft` output (recorded fixtures, the fallback path).
    pub fn from_nft(nft_json: Result<String, String>, nft_text: Option<String>) -> RawRulesets {
        RawRulesets {
            nft_netlink: None,
            netlink_error: None,
            nft_json,
            nft_text,
            iptables: Vec::new(),
            deadline_exceeded: Vec::new(),
        }
    }
}

/// The fallback: `nft -j list ruleset` with `nft -a list ruleset` beside it (rule texts).
pub fn read_nft_json(timeout: Duration) -> (Result<String, String>, Option<String>) {
    if !which("nft") {
        return (Err("nft is not installed".into()), None);
    }
    // The text listing runs beside the JSON one: on a large ruleset each takes as long as
    // nft needs to dump it.
    let text_thread = std::thread::spawn(move || run("nft", &["-a", "list", "ruleset"], timeout).ok());
    let nft_json = run("nft", &["-j", "list", "ruleset"], timeout).map_err(|e| e.to_string());
    let nft_text = text_thread.join().ok().flatten().filter(|_| nft_json.is_ok());
    (nft_json, nft_text)
}

/// TCP listeners on `port` in the calling thread's network namespace, as `addr:port`
/// (IPv4 first, as `/proc/net/tcp` then `tcp6` list them).
///
/// Asked over sock_diag for listening sockets on the port: the kernel then walks only its
/// listening hash. `/proc/net/tcp{,6}` walk the whole established hash — shared by every
/// namespace, 262,144 buckets here — once per file and per read: 27–38 ms each on this
/// machine at load ~5, where the sock_diag answer takes well under a millisecond. The
/// files are read only when sock_diag cannot be asked.
pub fn listeners_on_port(port: u16) -> std::io::Result<Vec<String>> {
    match listeners_diag(port) {
        Ok(l) => Ok(l),
        Err(_) => listeners_proc(port),
    }
}

fn listeners_diag(port: u16) -> Result<Vec<String>, conndoc_netlink::NetlinkError> {
    use conndoc_netlink::diag::{AF_INET, STATE_LISTEN};
    use conndoc_netlink::{Bytecode, Cond, DiagRequest};
    let mut s = conndoc_netlink::Socket::open_small(conndoc_netlink::Family::SockDiag)?;
    let req =
        DiagRequest { family: AF_INET, states: STATE_LISTEN, ext: 0, filter: Bytecode(vec![Cond::LocalPortIs(port)]) };
    let mut found: Vec<std::net::SocketAddr> = Vec::new();
    let deadline = Instant::now() + conndoc_netlink::DEFAULT_DEADLINE;
    s.inet_diag_both(&req, deadline, |m| {
        if m.local.port() == port {
            found.push(m.local)
        }
    })?;
    found.sort_by_key(|a| a.is_ipv6());
    Ok(found
        .into_iter()
        .map(|a| match a.ip() {
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
            IpAddr::V4(ip) => format!("{ip}:{port}"),
        })
        .collect())
}

/// [`listeners_on_port`] from `/proc/thread-self/net/tcp{,6}`.
fn listeners_proc(port: u16) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/thread-self/net/tcp", false), ("/proc/thread-self/net/tcp6", true)] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(parse_proc_net_tcp(&text, v6, port));
    }
    Ok(out)
}

/// Listening sockets on `port` in a `/proc/net/tcp{,6}` table.
pub fn parse_proc_net_tcp(text: &str, v6: bool, port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((a, p)) = f[1].split_once(':') else { continue };
        if u16::from_str_radix(p, 16).ok() != Some(port) {
            continue;
        }
        let Some(addr) = hex_addr(a, v6) else { continue };
        out.push(match addr {
            IpAddr::V6(_) => format!("[{addr}]:{port}"),
            IpAddr::V4(_) => format!("{addr}:{port}"),
        });
    }
    out
}

/// The kernel prints addresses as host-order 32-bit words in hex.
fn hex_addr(s: &str, v6: bool) -> Option<IpAddr> {
    if !v6 {
        let w = u32::from_str_radix(s, 16).ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())));
    }
    if s.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for i in 0..4 {
        let w = u32::from_str_radix(&s[i * 8..i * 8 + 8], 16).ok()?;
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_listeners() {
        // Recorded from a namespace with `redis-server --port 6379` bound to 10.77.0.2
        // and a listener on [::]:6379 (little-endian host).
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 02004D0A:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   1: 02004D0A:18EC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   2: 02004D0A:18EB 01004D0A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(parse_proc_net_tcp(v4, false, 6379), vec!["10.77.0.2:6379"]);
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n";
        assert_eq!(parse_proc_net_tcp(v6, true, 6379), vec!["[::]:6379"]);
        assert!(parse_proc_net_tcp(v6, true, 80).is_empty());
    }

    #[test]
    fn listeners_over_sock_diag_are_the_proc_files_listing() {
        // Listeners this test opened (v4 and v6 on one port where the host has IPv6), read
        // both ways in this namespace.
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let _v6 = std::net::TcpListener::bind(("::1", port)).ok();
        let diag = listeners_on_port(port).unwrap();
        assert!(diag.contains(&format!("127.0.0.1:{port}")), "{diag:?}");
        assert_eq!(diag, listeners_proc(port).unwrap());
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(listeners_on_port(port).unwrap(), diag, "a connection is not a listener");
    }

    #[test]
    fn legacy_save_skipped_only_without_tables() {
        use std::io::{Error, ErrorKind};
        assert!(legacy_has_no_tables(Ok(String::new())));
        assert!(legacy_has_no_tables(Ok("\n".into())));
        assert!(legacy_has_no_tables(Err(Error::from(ErrorKind::NotFound))));
        assert!(!legacy_has_no_tables(Ok("filter\n".into())));
        assert!(!legacy_has_no_tables(Ok("nat\nfilter\n".into())));
        // Not readable: the tool runs and says why itself.
        assert!(!legacy_has_no_tables(Err(Error::from(ErrorKind::PermissionDenied))));
        assert_eq!(legacy_names_file(FirewallTool::IptablesNft), None);
        assert!(legacy_names_file(FirewallTool::Ip6tablesLegacy).unwrap().ends_with("ip6_tables_names"));
    }
}

/// Everything read on one host (in the calling thread's namespace) for the evaluation.
#[derive(Debug, Clone)]
pub struct HostView {
    pub raw: RawRulesets,
    pub listeners: Option<Vec<String>>,
    /// Which of the asked addresses are configured on this host.
    pub local: Vec<IpAddr>,
    /// The interface each asked address is routed through from here (`ip route get`).
    pub route_dev: Vec<(IpAddr, String)>,
    /// Asked addresses that are Services in kube-proxy's nftables table here (role to be
    /// set by the caller), and why that table could not be read, if it could not.
    pub kube_nft: Vec<conndoc_facts::kube::ServiceMatch>,
    pub kube_nft_error: Option<String>,
}

impl HostView {
    /// Why this host's rules were read only in part (a read ran out of time, kube-proxy's
    /// nftables table could not be asked): empty when everything was read.
    pub fn incomplete(&self) -> Vec<String> {
        let mut why = self.raw.deadline_exceeded.clone();
        if let Some(e) = &self.kube_nft_error {
            why.push(format!("kube-proxy's nftables table: {e}"));
        }
        why
    }
}

/// Whether `addr` is one of this host's addresses: binding to it succeeds only then.
pub fn is_local(addr: IpAddr) -> bool {
    addr.is_loopback() || std::net::UdpSocket::bind((addr, 0)).is_ok()
}

/// The device `ip route get ADDR` names.
pub fn route_dev(addr: IpAddr, timeout: Duration) -> Option<String> {
    route_devs(&[addr], timeout).pop().map(|(_, d)| d)
}

/// The device `ip route get ADDR` names for each of `addrs` that has a route, asked over
/// rtnetlink (one socket, a request per address and per interface named: no `ip` process
/// each, which cost a fork, an exec and a 2 ms wait step); `ip -o route get` runs only for
/// the addresses netlink could not be asked about.
pub fn route_devs(addrs: &[IpAddr], timeout: Duration) -> Vec<(IpAddr, String)> {
    let mut asker = conndoc_netlink::RouteAsker::open(Instant::now() + timeout).ok();
    let mut out = Vec::new();
    for a in addrs {
        let dev = match asker.as_mut().map(|r| r.device(*a)) {
            Some(Ok(dev)) => dev,
            _ => route_dev_ip(*a, timeout),
        };
        out.extend(dev.map(|d| (*a, d)));
    }
    out
}

/// The device `ip -o route get ADDR` prints.
fn route_dev_ip(addr: IpAddr, timeout: Duration) -> Option<String> {
    let out = run("ip", &["-o", "route", "get", &addr.to_string()], timeout).ok()?;
    parse_route_dev(&out)
}

pub fn parse_route_dev(out: &str) -> Option<String> {
    let w: Vec<&str> = out.split_whitespace().collect();
    w.windows(2).find(|p| p[0] == "dev").map(|p| p[1].to_string())
}

/// The least time kube-proxy's nftables table lookups get (a handful of round trips).
const KUBE_LOOKUP_MIN: Duration = Duration::from_millis(200);

/// kube-proxy's nftables Services among `addrs` (a few targeted netlink reads each).
fn kube_nft(
    port: u16,
    addrs: &[IpAddr],
    local: &[IpAddr],
    timeout: Duration,
) -> (Vec<conndoc_facts::kube::ServiceMatch>, Option<String>) {
    // A lookup by key costs the same among 5 Services or 50,000: it does not need the
    // dump's deadline to be long, only to be bounded, so a short deadline still leaves it room.
    let deadline = Instant::now() + timeout.max(KUBE_LOOKUP_MIN);
    let mut found = Vec::new();
    for a in addrs {
        let probe = crate::kube::Probe { address: *a, port, local: local.contains(a) };
        match crate::kube::nft::recognise(&probe, conndoc_facts::firewall::FirewallRole::Client, deadline) {
            Ok(Some(m)) => found.push(m),
            Ok(None) => {}
            Err(e) => return (found, Some(e.to_string())),
        }
    }
    (found, None)
}

/// Read the rulesets, the listeners on `port`, which of `addrs` are local and how each of
/// `addrs` is routed — all in the calling thread's network namespace.
pub fn inspect_here(port: u16, addrs: &[IpAddr], timeout: Duration) -> HostView {
    // The rulesets are read on a thread (same namespace) while the rest is looked up here.
    std::thread::scope(|s| {
        let raw = s.spawn(move || read(timeout));
        let listeners = listeners_on_port(port).ok();
        let local: Vec<IpAddr> = addrs.iter().copied().filter(|a| is_local(*a)).collect();
        let route_dev = route_devs(addrs, timeout);
        let (kube_nft, kube_nft_error) = kube_nft(port, addrs, &local, timeout);
        let raw = raw.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        HostView { raw, listeners, local, route_dev, kube_nft, kube_nft_error }
    })
}
