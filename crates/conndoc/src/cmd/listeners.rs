//! `conndoc listeners`: the listening TCP sockets with their process, queues and warnings.

use super::usage;
use conndoc_engine::container::ListenerContainer;
use conndoc_facts::host::Listener;
use conndoc_facts::nat::NetnsIdentity;
use conndoc_facts::Port;
use conndoc_host::NetnsSpec;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Only listeners on this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Look inside this network namespace (name under /run/netns, or a path).
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "netns_pid")]
    pub netns: Option<String>,
    /// Look inside the network namespace of this process (e.g. a container's).
    #[arg(long, value_name = "PID")]
    pub netns_pid: Option<u32>,
    /// Every network namespace on this machine (containers, pods, `ip netns`), one group
    /// each, headed by the namespace and its container or pod when known (needs root).
    #[arg(long, conflicts_with_all = ["netns", "netns_pid"])]
    pub all_netns: bool,
}

/// Namespaces listed at most by `--all-netns`, and the time they may take.
const ALL_NETNS_MAX: usize = 1024;
const ALL_NETNS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Share of the fd limit at which a process is "near" it.
const FD_NEAR: f64 = 0.8;

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    listener: &'a Listener,
    /// The container behind the listener (its owner's, or the one a docker-proxy forwards to).
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a ListenerContainer>,
    warnings: Vec<&'static str>,
    /// `--all-netns`: the inode of the namespace the listener is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    netns_inode: Option<u64>,
}

/// One namespace of `--all-netns`.
#[derive(Serialize)]
struct Group<'a> {
    netns: &'a NetnsIdentity,
    /// The container whose namespace it is (engine name, or the cgroup's short id).
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a ListenerContainer>,
    /// CNI's name of a pod's namespace (`cni-…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_netns: Option<&'a str>,
    /// conndoc's own namespace.
    own: bool,
    listeners: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Output<'a> {
    schema: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<String>,
    listeners: Vec<Row<'a>>,
    /// `--all-netns`: every namespace listed, in the order of `listeners`' groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespaces: Option<Vec<Group<'a>>>,
    /// `--all-netns`: what was left out (bound, deadline).
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete: Option<String>,
}

/// Whether an IPv4 listener of the same table serves the IPv4 side of a v6-only listener: the
/// pair docker-proxy (and many daemons) open, `[::]:P` with IPV6_V6ONLY next to `0.0.0.0:P`
/// (or `[::1]:P` next to `127.0.0.1:P`). Such a row reaches IPv4 clients, so no `ipv6-only`.
fn v4_twin(l: &Listener, all: &[Listener]) -> bool {
    all.iter().any(|o| {
        o.local.is_ipv4()
            && o.port() == l.port()
            && ((l.wildcard() && o.wildcard()) || (l.loopback_only() && o.loopback_only()))
    })
}

/// The warnings of `l`, a row of the table `all` (one namespace's listeners).
fn warnings(l: &Listener, all: &[Listener]) -> Vec<&'static str> {
    let mut w = Vec::new();
    if l.loopback_only() {
        w.push("loopback-only");
    }
    if l.v6only == Some(true) && !v4_twin(l, all) {
        w.push("ipv6-only");
    }
    if l.queue_full() {
        w.push("queue-full");
    }
    if l.process.as_ref().and_then(|p| p.fd_fill()).is_some_and(|f| f >= FD_NEAR) {
        w.push("near-fd-limit");
    }
    w
}

/// `3/128 [#.........]`: accept queue over backlog, ten cells.
fn fill(l: &Listener) -> String {
    let (q, b) = (l.accept_queue.0, l.backlog.0);
    let cells = if b == 0 {
        if q > 0 {
            10
        } else {
            0
        }
    } else {
        ((q as u64 * 10).div_ceil(b as u64)).min(10) as usize
    };
    format!("{q}/{b} [{}{}]", "#".repeat(cells), ".".repeat(10 - cells))
}

/// `cache`, or `→cache 172.17.0.2:6379` for a docker-proxy row.
fn container_cell(c: Option<&ListenerContainer>) -> String {
    match c {
        None => "-".into(),
        Some(ListenerContainer { name, forwards_to: Some(a), .. }) => format!("→{name} {a}"),
        Some(c) => c.name.clone(),
    }
}

fn table(ls: &[Listener], cs: &[Option<ListenerContainer>]) -> String {
    let mut rows = vec![[
        "ADDRESS".to_string(),
        "PORT".into(),
        "FAMILY".into(),
        "V6ONLY".into(),
        "QUEUE".into(),
        "PROCESS".into(),
        "CONTAINER".into(),
        "FDS".into(),
        "WARNINGS".into(),
    ]];
    for (i, l) in ls.iter().enumerate() {
        let p = l.process.as_ref();
        rows.push([
            l.local.ip().to_string(),
            l.port().to_string(),
            l.family.to_string(),
            l.v6only.map(|v| if v { "yes" } else { "no" }).unwrap_or("-").to_string(),
            fill(l),
            p.map(|p| format!("{}/{}", p.comm, p.pid)).unwrap_or_else(|| "?".into()),
            container_cell(cs.get(i).and_then(Option::as_ref)),
            p.and_then(|p| {
                Some(format!("{}/{}", p.open_fds?, p.nofile_soft.map(|n| n.to_string()).unwrap_or("∞".into())))
            })
            .unwrap_or_else(|| "-".into()),
            warnings(l, ls).join(","),
        ]);
    }
    let widths: Vec<usize> = (0..9).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if ls.iter().any(|l| l.process.is_none()) {
        out.push_str(
            "(?: owner not found: a process this user may not inspect (run as root), or outside this PID namespace)\n",
        );
    }
    out
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let port = a.port.as_deref().map(|p| p.parse::<Port>().map_err(|e| usage(format!("--port: {e}")))).transpose()?;
    if a.all_netns {
        return all_netns(port, a.json);
    }
    let spec = match (&a.netns, a.netns_pid) {
        (Some(n), _) => {
            conndoc_host::netns::check_name(n).map_err(usage)?;
            Some(NetnsSpec::Named(n.clone()))
        }
        (None, Some(pid)) => Some(NetnsSpec::Pid(pid)),
        _ => None,
    };
    if let Some(s) = &spec {
        conndoc_host::netns::check_spec(s).map_err(usage)?;
    }
    let ls = conndoc_host::listener_table(port.map(Port::get), spec.as_ref())?;
    let cs = conndoc_engine::container::listener_containers(&ls, a.netns_pid);
    let s = if a.json {
        let out = Output {
            schema: "conndoc.listeners/v1",
            netns: spec.as_ref().map(NetnsSpec::label),
            listeners: ls
                .iter()
                .zip(&cs)
                .map(|(l, c)| Row { listener: l, container: c.as_ref(), warnings: warnings(l, &ls), netns_inode: None })
                .collect(),
            namespaces: None,
            incomplete: None,
        };
        let mut s = serde_json::to_string_pretty(&out)?;
        s.push('\n');
        s
    } else if ls.is_empty() {
        match port {
            Some(p) => format!("no TCP listener on port {p}\n"),
            None => "no TCP listeners\n".to_string(),
        }
    } else {
        table(&ls, &cs)
    };
    super::diagnose::write_out(&s)?;
    Ok(0)
}

/// The header of one namespace's group: the namespace, and whose it is.
fn group_header(id: &NetnsIdentity, c: Option<&ListenerContainer>, own: bool) -> String {
    let whose = match (own, id.cni_name(), c) {
        (true, _, _) => " — conndoc's own".to_string(),
        (false, Some(n), _) => format!(" — pod (netns {n})"),
        (false, None, Some(c)) if c.name != c.id => format!(" — container {} ({})", c.name, c.id),
        (false, None, Some(c)) => format!(" — container {}", c.id),
        (false, None, None) => String::new(),
    };
    format!("== {}{whose}\n", id.describe())
}

/// `--all-netns`: each namespace's listeners, one group each.
fn all_netns(port: Option<Port>, json: bool) -> anyhow::Result<u8> {
    let (groups, incomplete) =
        conndoc_host::nsfind::listeners_everywhere(port.map(Port::get), ALL_NETNS_MAX, ALL_NETNS_DEADLINE);
    let ours = conndoc_host::procs::current_netns();
    // conndoc's own namespace first, then bind-mounted ones, then processes' (nsfind's order).
    let mut groups = groups;
    groups.sort_by_key(|g| Some(g.identity.inode) != ours);
    let ns: Vec<(u64, Vec<u32>)> = groups.iter().map(|g| (g.identity.inode, g.identity.pids.clone())).collect();
    let owners = conndoc_engine::container::netns_containers(&ns);
    let rows: Vec<Listener> = groups.iter().flat_map(|g| g.listeners.iter().cloned()).collect();
    let cs = conndoc_engine::container::listener_containers(&rows, None);
    let s = if json {
        let mut out_rows = Vec::with_capacity(rows.len());
        let mut i = 0;
        for g in &groups {
            for l in &g.listeners {
                out_rows.push(Row {
                    listener: l,
                    container: cs.get(i).and_then(Option::as_ref),
                    warnings: warnings(l, &g.listeners),
                    netns_inode: Some(g.identity.inode),
                });
                i += 1;
            }
        }
        let out = Output {
            schema: "conndoc.listeners/v1",
            netns: None,
            listeners: out_rows,
            namespaces: Some(
                groups
                    .iter()
                    .zip(&owners)
                    .map(|(g, c)| Group {
                        netns: &g.identity,
                        container: c.as_ref(),
                        pod_netns: g.identity.cni_name(),
                        own: Some(g.identity.inode) == ours,
                        listeners: g.listeners.len(),
                        error: g.error.as_deref(),
                    })
                    .collect(),
            ),
            incomplete: incomplete.clone(),
        };
        let mut s = serde_json::to_string_pretty(&out)?;
        s.push('\n');
        s
    } else {
        let mut s = String::new();
        let mut i = 0;
        for (g, c) in groups.iter().zip(&owners) {
            s.push_str(&group_header(&g.identity, c.as_ref(), Some(g.identity.inode) == ours));
            let n = g.listeners.len();
            match (&g.error, n) {
                (Some(e), _) => s.push_str(&format!("(not read: {e})\n")),
                (None, 0) => s.push_str(match port {
                    Some(_) => "(no TCP listener on this port)\n",
                    None => "(no TCP listeners)\n",
                }),
                (None, _) => s.push_str(&table(&g.listeners, &cs[i..i + n])),
            }
            i += n;
            s.push('\n');
        }
        s.push_str(&format!("{} network namespace(s)\n", groups.len()));
        s
    };
    if let Some(why) = &incomplete {
        super::say(format_args!("conndoc: listeners --all-netns: incomplete: {why}"));
    }
    super::diagnose::write_out(&s)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conndoc_facts::{Family, QueueLen};

    fn l(addr: &str, q: u32, b: u32) -> Listener {
        let local: std::net::SocketAddr = addr.parse().unwrap();
        Listener {
            family: Family::of(&local.ip()),
            local,
            v6only: local.is_ipv6().then_some(true),
            accept_queue: QueueLen(q),
            backlog: QueueLen(b),
            uid: 0,
            inode: 1,
            process: None,
        }
    }

    #[test]
    fn fill_and_warnings() {
        assert_eq!(fill(&l("0.0.0.0:80", 0, 128)), "0/128 [..........]");
        assert_eq!(fill(&l("0.0.0.0:80", 2, 1)), "2/1 [##########]");
        assert_eq!(fill(&l("0.0.0.0:80", 3, 128)), "3/128 [#.........]");
        assert_eq!(warnings(&l("127.0.0.1:80", 0, 128), &[]), vec!["loopback-only"]);
        assert_eq!(warnings(&l("[::]:80", 2, 1), &[]), vec!["ipv6-only", "queue-full"]);
        let t = table(&[l("127.0.0.1:6379", 0, 511)], &[None]);
        assert!(t.starts_with("ADDRESS"));
        assert!(t.contains("127.0.0.1  6379"));
    }

    #[test]
    fn v6only_row_with_an_ipv4_twin_is_not_ipv6_only() {
        // docker-proxy's pair: [::]:P (v6only) and 0.0.0.0:P.
        let pair = [l("0.0.0.0:6379", 0, 4096), l("[::]:6379", 0, 4096)];
        assert!(warnings(&pair[1], &pair).is_empty());
        let lo = [l("127.0.0.1:53", 0, 5), l("[::1]:53", 0, 5)];
        assert_eq!(warnings(&lo[1], &lo), vec!["loopback-only"]);
        // Another port, or only a loopback IPv4 row, leaves the wildcard v6 row IPv6-only.
        let other = [l("0.0.0.0:6380", 0, 5), l("127.0.0.1:6379", 0, 5), l("[::]:6379", 0, 5)];
        assert_eq!(warnings(&other[2], &other), vec!["ipv6-only"]);
        // An IPv6 row never twins another one.
        let v6 = [l("[::1]:6379", 0, 5), l("[::]:6379", 0, 5)];
        assert_eq!(warnings(&v6[1], &v6), vec!["ipv6-only"]);
    }

    #[test]
    fn table_renders() {
        let t = table(&[l("127.0.0.1:6379", 0, 511)], &[None]);
        assert!(t.starts_with("ADDRESS"));
        assert!(t.contains("127.0.0.1  6379"));
    }

    #[test]
    fn group_headers_name_the_namespace_and_whose_it_is() {
        let id = |paths: &[&str]| NetnsIdentity {
            inode: 9,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            pids: vec![42],
            entered_by: String::new(),
        };
        assert_eq!(group_header(&id(&[]), None, true), "== network namespace net:[9] (pid 42) — conndoc's own\n");
        assert_eq!(
            group_header(&id(&["/run/netns/cni-1f"]), None, false),
            "== network namespace net:[9] (/run/netns/cni-1f, pid 42) — pod (netns cni-1f)\n"
        );
        let c = ListenerContainer { name: "cache".into(), id: "ed8ca1dffc9a".into(), forwards_to: None };
        assert_eq!(
            group_header(&id(&[]), Some(&c), false),
            "== network namespace net:[9] (pid 42) — container cache (ed8ca1dffc9a)\n"
        );
        let bare = ListenerContainer { name: "ed8ca1dffc9a".into(), id: "ed8ca1dffc9a".into(), forwards_to: None };
        assert!(group_header(&id(&[]), Some(&bare), false).ends_with("— container ed8ca1dffc9a\n"));
    }
}
