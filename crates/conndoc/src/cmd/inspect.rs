//! `conndoc inspect --port P`: the host facts for one port, as the local host stage of
//! `diagnose` gathers them (docs/report.md, "conndoc inspect"). `--bracket` is the
//! two-step exchange `diagnose --ssh` drives over one SSH session (docs/remote.md).

use super::usage;
use conndoc_engine::inspect::InspectOptions;
use conndoc_facts::inspect::{InspectFollowUp, InspectOutput};
use conndoc_facts::Port;
use conndoc_host::NetnsSpec;
use std::fmt::Write as _;
use std::io::{BufRead, Read as _};
use std::net::IpAddr;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The port to inspect.
    #[arg(long, value_name = "PORT")]
    pub port: String,
    /// An address clients dial (repeatable): the firewall is evaluated for a SYN to it.
    #[arg(long = "address", value_name = "ADDR")]
    pub addresses: Vec<String>,
    /// The process that should serve the port (e.g. redis-server).
    #[arg(long, value_name = "PROCESS")]
    pub expect: Option<String>,
    /// Inspect inside this network namespace (name under /run/netns, or a path).
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "netns_pid")]
    pub netns: Option<String>,
    /// Inspect the network namespace of this process.
    #[arg(long, value_name = "PID")]
    pub netns_pid: Option<u32>,
    /// Print JSON messages (schema conndoc.inspect/v1).
    #[arg(long)]
    pub json: bool,
    /// Read the counters, print a `ready` line, wait for one follow-up line on stdin (what
    /// a probe run elsewhere did), then inspect: what `diagnose --ssh` runs remotely.
    #[arg(long, requires = "json")]
    pub bracket: bool,
    /// Deadline of each tool run, and (with --bracket) of the wait for the follow-up times 20.
    #[arg(long, default_value = "3s", value_name = "DURATION")]
    pub timeout: String,
}

/// The follow-up line is small (a few flows); anything bigger is not from conndoc.
const MAX_FOLLOW_UP: u64 = 64 << 10;

pub fn run(a: Args) -> anyhow::Result<u8> {
    let port: u16 = a.port.parse().map_err(|_| usage(format!("--port {:?}: expected 1-65535", a.port)))?;
    let port = Port::new(port).ok_or_else(|| usage("--port 0: expected 1-65535"))?;
    let timeout = super::parse_timeout(&a.timeout)?;
    let mut addresses = Vec::new();
    for s in &a.addresses {
        let ip: IpAddr = s.parse().map_err(|_| usage(format!("--address {s:?}: not an IP address")))?;
        addresses.push(ip);
    }
    let netns = match (&a.netns, a.netns_pid) {
        (Some(n), _) => {
            let spec = NetnsSpec::Named(n.clone());
            conndoc_host::netns::check_spec(&spec).map_err(usage)?;
            Some(spec)
        }
        (None, Some(pid)) => {
            conndoc_host::netns::check_spec(&NetnsSpec::Pid(pid)).map_err(usage)?;
            Some(NetnsSpec::Pid(pid))
        }
        (None, None) => None,
    };
    let opts = InspectOptions { port, addresses, expect: a.expect, netns, timeout };
    let bracket = conndoc_engine::inspect::begin(&opts);
    let follow = if a.bracket {
        print_json(&conndoc_engine::inspect::ready(&opts))?;
        match read_follow_up(timeout * 20) {
            Ok(Some(f)) => f,
            // The client went away (or gave up): nothing to answer.
            Ok(None) => return Ok(0),
            Err(e) => return Err(usage(e)),
        }
    } else {
        InspectFollowUp::default()
    };
    let out = conndoc_engine::inspect::finish(bracket, &opts, &follow);
    if a.json {
        print_json(&out)?;
    } else {
        super::diagnose::write_out(&text(&out))?;
    }
    Ok(if out.error.is_some() { 3 } else { 0 })
}

fn print_json(o: &InspectOutput) -> anyhow::Result<()> {
    // One message per line: the reader splits on newlines.
    let mut s = serde_json::to_string(o)?;
    s.push('\n');
    super::diagnose::write_out(&s)
}

/// One line from stdin, bounded in size and time. None: EOF (or the deadline) first.
fn read_follow_up(wait: Duration) -> Result<Option<InspectFollowUp>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let r = std::io::stdin().lock().take(MAX_FOLLOW_UP).read_line(&mut line).map(|_| line);
        let _ = tx.send(r);
    });
    let line = match rx.recv_timeout(wait) {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Err(format!("reading the follow-up line on stdin: {e}")),
        Err(_) => return Ok(None),
    };
    if line.is_empty() {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        return Err(format!("the follow-up line on stdin is longer than {MAX_FOLLOW_UP} bytes or unterminated"));
    }
    serde_json::from_str(&line).map(Some).map_err(|e| format!("the follow-up line on stdin does not parse: {e}"))
}

/// The facts as text: what a person reads on the server.
fn text(o: &InspectOutput) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "conndoc inspect: port {} on {} (conndoc {}, uid {})",
        o.port, o.hostname, o.version, o.privileges.uid
    );
    if let Some(e) = &o.error {
        let _ = writeln!(s, "  error: {e}");
    }
    if let Some(h) = &o.host {
        if h.listeners.is_empty() {
            let _ = writeln!(s, "Listeners\n  none on port {}", o.port);
        } else {
            let _ = writeln!(s, "Listeners");
            for l in &h.listeners {
                let owner = l
                    .process
                    .as_ref()
                    .map(|p| format!("pid {} {} ({})", p.pid, p.comm, p.cmdline))
                    .unwrap_or_else(|| "owner unknown".into());
                let v6 = if l.v6only == Some(true) { " v6only" } else { "" };
                let _ = writeln!(s, "  {}{v6}  accept queue {}/{}  {owner}", l.local, l.accept_queue.0, l.backlog.0);
                if let Some(p) = &l.process {
                    if let (Some(n), Some(lim)) = (p.open_fds, p.nofile_soft) {
                        let _ = writeln!(s, "    open fds {n} of soft limit {lim}");
                    }
                }
            }
        }
        if let Some(x) = &h.expected {
            let _ = writeln!(s, "Expected service {}: {} running here", x.name, x.running.len());
            for p in &x.running {
                let _ = writeln!(s, "  pid {} {} ({})", p.pid, p.comm, p.cmdline);
            }
        }
        if !h.port_sockets.is_empty() {
            let parts: Vec<String> = h.port_sockets.iter().map(|(k, v)| format!("{k:?} {v}")).collect();
            let _ = writeln!(s, "Other sockets on the port: {}", parts.join(", "));
        }
        // Only the parameters the inspection read (those a finding can cite).
        let sc = &h.sysctls;
        let known: Vec<String> = [
            ("somaxconn", sc.somaxconn.map(u64::from)),
            ("tcp_max_syn_backlog", sc.tcp_max_syn_backlog.map(u64::from)),
            ("tcp_syncookies", sc.tcp_syncookies.map(u64::from)),
            ("tcp_abort_on_overflow", sc.tcp_abort_on_overflow.map(u64::from)),
            ("tcp_fin_timeout", sc.tcp_fin_timeout.map(u64::from)),
            ("tcp_tw_reuse", sc.tcp_tw_reuse.map(u64::from)),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{k} {}", v?)))
        .collect();
        if !known.is_empty() {
            let _ = writeln!(s, "Kernel: {}", known.join("  "));
        }
        if let Some(c) = &h.counters {
            let _ = writeln!(
                s,
                "Counters since boot: ListenOverflows {}  ListenDrops {}  SyncookiesSent {}  TCPReqQFullDrop {}",
                c.total.listen_overflows, c.total.listen_drops, c.total.syncookies_sent, c.total.req_q_full_drop
            );
        }
        if let Some(u) = &h.unit {
            let _ = writeln!(s, "Unit {}: {} {} ({})", u.unit, u.active_state, u.sub_state, u.result);
            for j in u.journal.iter().rev().take(5) {
                let _ = writeln!(s, "  {}", j.message);
            }
        }
        for e in &h.kernel_log {
            let line = match e {
                conndoc_facts::host::KernelEvent::SynFlood { line, .. } => line,
                conndoc_facts::host::KernelEvent::OomKill { line, .. } => line,
            };
            let _ = writeln!(s, "Kernel log: {line}");
        }
        for u in &h.unavailable {
            let _ = writeln!(s, "Not available: {u}");
        }
    }
    if let Some(fw) = &o.firewall {
        let _ = writeln!(s, "Firewall");
        for e in &fw.evaluations {
            let _ = writeln!(s, "  {}", serde_json::to_string(e).unwrap_or_default());
        }
    }
    if let Some(r) = &o.redis_conf {
        let _ = writeln!(s, "redis.conf {}: {} problem(s)", r.path, r.problems.len());
        for p in &r.problems {
            let _ = writeln!(s, "  {}: {}", p.code, p.message);
        }
    }
    for k in &o.skipped {
        let _ = writeln!(s, "Skipped {}: {}", k.check, k.reason);
    }
    s
}
