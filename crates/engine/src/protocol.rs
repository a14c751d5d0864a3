//! Protocol stage (issue 5): speak Redis / HTTP / TLS on the addresses that connected, and
//! (after host inspection) lint the redis.conf of the redis-server found there.

use crate::{skip, Options};
use conndoc_facts::host::{HostFacts, InspectScope, ProcessInfo};
use conndoc_facts::protocol::{GatewayFacts, LintReport, ProtocolFacts, RedisInfo};
use conndoc_facts::{Evidence, Host, Scheme, SkippedCheck};
use conndoc_host::NetnsSpec;
use conndoc_proto::{http_probe, redis, tls::TlsSetup};
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// At most this many connected addresses are spoken to (each has its own deadline).
const MAX_ADDRESSES: usize = 4;
/// Deadline of the follow-up INFO over the inspected host's loopback.
const LOOPBACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) fn run(ev: &mut Evidence, opts: &Options) {
    let scheme = ev.target.scheme;
    if scheme == Scheme::Tcp {
        return;
    }
    let addrs: Vec<SocketAddr> = ev
        .probes
        .iter()
        .filter(|p| p.ok())
        .map(|p| SocketAddr::new(p.address, p.port.get()))
        .take(MAX_ADDRESSES)
        .collect();
    if addrs.is_empty() {
        return;
    }
    let host = match &ev.target.host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.clone(),
    };
    let tls = if scheme.tls() {
        match TlsSetup::new(&host, opts.ca_file.as_deref(), opts.insecure) {
            Ok(s) => Some(s),
            Err(e) => {
                skip(
                    ev,
                    "tls-handshake",
                    e.to_string(),
                    Some("check --ca FILE (a PEM file of CA certificates)".into()),
                );
                return;
            }
        }
    } else {
        None
    };
    let target = &ev.target;
    let probe_one = |addr: SocketAddr| match scheme {
        Scheme::Redis | Scheme::Rediss => redis::probe(
            addr,
            &redis::RedisOptions {
                user: target.user.as_deref(),
                password: target.password.as_ref(),
                tls: tls.as_ref(),
                timeout: opts.timeout,
                config: true,
                db: target.db,
            },
        ),
        Scheme::Http | Scheme::Https => {
            let default = scheme.default_port() == Some(target.port.get());
            let host_header = if default { host.clone() } else { target.authority() };
            http_probe::probe(
                addr,
                &http_probe::HttpOptions {
                    host_header: &host_header,
                    path: if target.path.is_empty() { "/" } else { &target.path },
                    tls: tls.as_ref(),
                    timeout: opts.timeout,
                },
            )
        }
        Scheme::Tcp => unreachable!("returned above"),
    };
    // One address is spoken to on this thread; several in parallel, so the stage takes one
    // deadline however many addresses the name has.
    let mut facts = ProtocolFacts::default();
    if addrs.len() == 1 {
        facts.probes.push(probe_one(addrs[0]));
    } else {
        facts.probes = std::thread::scope(|s| {
            let handles: Vec<_> = addrs.iter().map(|a| s.spawn(|| probe_one(*a))).collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
    }
    ev.protocol = Some(facts);
}

/// After host inspection: lint the redis.conf of the redis-server found there, and read a
/// gateway's error log when it answered 502/503/504.
pub(crate) fn after_host(ev: &mut Evidence, opts: &Options) {
    let Some(host) = ev.host.clone() else { return };
    // Read over ssh: the remote linted redis.conf itself; its files are not readable here.
    if host.inspected.as_ref().is_some_and(|i| i.scope == InspectScope::Ssh) {
        let gateway_status = ev
            .protocol
            .as_ref()
            .is_some_and(|p| p.probes.iter().any(|pr| pr.http.as_ref().is_some_and(|h| h.gateway_error())));
        if gateway_status {
            skip(
                ev,
                "gateway-error-log",
                "the gateway's error log is on the server and is not read over ssh",
                Some("on the server: tail the nginx error_log for this client's address".into()),
            );
        }
        return;
    }
    match ev.target.scheme {
        Scheme::Redis | Scheme::Rediss => lint_redis_conf(ev, &host, opts),
        Scheme::Http | Scheme::Https => gateway_log(ev, &host),
        Scheme::Tcp => {}
    }
}

/// Ask the redis-server itself for its config file over the inspected host's loopback (from
/// inside its network namespace), where protected mode does not apply. Used when the remote
/// probe could not read INFO (protected mode, max clients) and the process title hides it.
fn config_file_via_loopback(ev: &Evidence, host: &HostFacts, opts: &Options) -> Option<(String, String)> {
    // A server that let the remote probe run into its deadline would do the same here: one
    // run, one deadline — a second full timeout is not spent on it.
    let timed_out = ev
        .protocol
        .as_ref()
        .is_some_and(|p| p.probes.iter().any(|pr| pr.error.as_deref().is_some_and(|e| e.contains("deadline passed"))));
    if timed_out {
        return None;
    }
    let port = ev.target.port.get();
    let l = host.listeners.iter().find(|l| l.port() == port)?;
    let ip = match l.local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, port);
    let tls = if ev.target.scheme.tls() { TlsSetup::new(&ip.to_string(), None, true).ok() } else { None };
    let o = redis::RedisOptions {
        user: ev.target.user.as_deref(),
        password: ev.target.password.as_ref(),
        tls: tls.as_ref(),
        // Loopback to a live redis-server answers in milliseconds.
        timeout: opts.timeout.min(LOOPBACK_TIMEOUT),
        config: false,
        db: None,
    };
    let spec = match host.inspected.as_ref().map(|i| i.scope) {
        Some(InspectScope::Netns) => opts.netns.clone().map(NetnsSpec::Named),
        Some(InspectScope::NetnsPid) => opts.netns_pid.map(NetnsSpec::Pid),
        _ => None,
    };
    let probe = match &spec {
        Some(spec) => conndoc_host::netns::run_in(spec, || redis::probe(addr, &o)).ok()?,
        None => redis::probe(addr, &o),
    };
    let path = probe.redis?.info?.config_file?;
    let where_ = match &spec {
        Some(s) => format!("INFO config_file asked over {addr} inside network namespace {}", s.label()),
        None => format!("INFO config_file asked over {addr}"),
    };
    Some((path, where_))
}

fn lint_redis_conf(ev: &mut Evidence, host: &HostFacts, opts: &Options) {
    let info = ev.protocol.as_ref().and_then(|p| p.probes.iter().find_map(|pr| pr.redis.as_ref()?.info.clone()));
    match redis_conf_lint(host, info.as_ref(), || config_file_via_loopback(ev, host, opts)) {
        None => {}
        Some(Ok(report)) => ev.protocol.get_or_insert_with(Default::default).redis_conf = Some(report),
        Some(Err(s)) => ev.skipped.push(s),
    }
}

/// Lint the redis.conf of the redis-server found on the inspected host (the file INFO
/// names, else its command line's, else what `loopback` asks the server itself). None
/// when there is no redis-server to lint for; a skipped check when the file is unknown or
/// unreadable. Reads the file, so it runs where the server is.
pub(crate) fn redis_conf_lint(
    host: &HostFacts,
    info: Option<&RedisInfo>,
    loopback: impl FnOnce() -> Option<(String, String)>,
) -> Option<Result<LintReport, SkippedCheck>> {
    let skipped =
        |reason: String, hint: String| SkippedCheck { check: "redis-conf-lint".into(), reason, hint: Some(hint) };
    // Redis rewrites its process title (`redis-server *:6379`), so INFO's config_file is
    // the reliable source; a command line that kept the path is the fallback.
    let mut procs: Vec<&ProcessInfo> = host.listeners.iter().filter_map(|l| l.process.as_ref()).collect();
    if let Some(exp) = &host.expected {
        procs.extend(exp.running.iter());
    }
    let redis_procs: Vec<&ProcessInfo> = procs
        .into_iter()
        .filter(|p| {
            p.comm.starts_with("redis-server")
                || p.cmdline.split_whitespace().next().is_some_and(|a| a.ends_with("redis-server"))
        })
        .collect();
    let from_info = info.and_then(|i| i.config_file.clone()).map(|p| (p, "INFO config_file".to_string()));
    let path = from_info
        .or_else(|| {
            redis_procs
                .iter()
                .find_map(|p| config_arg(&p.cmdline).map(|c| (c, format!("command line of pid {}", p.pid))))
        })
        // Asking again over loopback only helps when the probe could not read INFO: when it
        // could, the server has no config file to name (it runs on built-in defaults).
        .or_else(|| if redis_procs.is_empty() || info.is_some() { None } else { loopback() });
    let Some((path, source)) = path else {
        if !redis_procs.is_empty() || info.is_some() {
            return Some(Err(skipped(
                "the redis.conf path is unknown: INFO was not readable (or names no config file) and redis-server's process title does not show it".into(),
                "conndoc lint /etc/redis/redis.conf (or the file the service starts with)".into(),
            )));
        }
        return None;
    };
    let path = std::path::PathBuf::from(path);
    let proc_ = info
        .and_then(|i| i.process_id)
        .and_then(|pid| redis_procs.iter().find(|p| p.pid == pid))
        .or(redis_procs.first())
        .copied();
    let mut limits = conndoc_proto::redis_conf::Limits::default();
    if let Some(p) = proc_ {
        if let Some(n) = p.nofile_soft {
            limits.fd_limit = Some((n, format!("soft limit of redis-server pid {}", p.pid)));
        }
    }
    if limits.fd_limit.is_none() {
        limits.fd_limit = conndoc_proto::redis_conf::local_limits(&path).fd_limit;
    }
    if let Some(n) = host.sysctls.somaxconn {
        limits.somaxconn = Some((n as u64, "net.core.somaxconn of the inspected host".into()));
    }
    Some(match conndoc_proto::redis_conf::lint(&path, &limits) {
        Ok(mut report) => {
            report.source = Some(source);
            Ok(report)
        }
        Err(e) => Err(skipped(e.to_string(), format!("conndoc lint {}", path.display()))),
    })
}

/// The last 64 KiB of a file.
fn tail(path: &Path) -> Option<String> {
    // A log named /dev/stderr (containers) is refused, not read from our own terminal.
    let buf = conndoc_files::read_tail(path, 64 * 1024).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `-c`/`-e`/`-p` of an nginx command line (`nginx: master process nginx -c /x.conf`).
fn nginx_flag(cmdline: &str, flag: &str) -> Option<String> {
    let mut it = cmdline.split_whitespace();
    while let Some(a) = it.next() {
        if a == flag {
            return it.next().map(str::to_string);
        }
    }
    None
}

/// The first `error_log PATH` directive of an nginx config file.
fn nginx_error_log(conf: &str) -> Option<String> {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find_map(|l| l.strip_prefix("error_log").filter(|r| r.starts_with([' ', '\t'])))
        .and_then(|r| r.split_whitespace().next())
        .map(|p| p.trim_end_matches(';').to_string())
        .filter(|p| p != "stderr" && !p.starts_with("syslog:"))
}

fn gateway_log(ev: &mut Evidence, host: &HostFacts) {
    let gateway_status = ev
        .protocol
        .as_ref()
        .is_some_and(|p| p.probes.iter().any(|pr| pr.http.as_ref().is_some_and(|h| h.gateway_error())));
    if !gateway_status {
        return;
    }
    let Some(nginx) = host.listeners.iter().filter_map(|l| l.process.as_ref()).find(|p| p.comm == "nginx") else {
        return;
    };
    // A worker's title has no arguments: read them from its master (the parent).
    let mut master = (nginx.pid, nginx.cmdline.clone());
    if !nginx.cmdline.contains("master process") {
        let ppid = std::fs::read_to_string(format!("/proc/{}/status", nginx.pid))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|v| v.trim().parse::<u32>().ok()));
        if let Some(pp) = ppid {
            if let Ok(c) = std::fs::read(format!("/proc/{pp}/cmdline")) {
                master = (pp, String::from_utf8_lossy(&c).replace('\0', " "));
            }
        }
    }
    let prefix = nginx_flag(&master.1, "-p").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/share/nginx"));
    let rel = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            prefix.join(p)
        }
    };
    let conf = nginx_flag(&master.1, "-c").map(rel).unwrap_or_else(|| PathBuf::from("/etc/nginx/nginx.conf"));
    let log = conndoc_files::read_to_string(&conf, conndoc_files::limit::SERVER_FILE)
        .ok()
        .and_then(|c| nginx_error_log(&c))
        .map(rel)
        .or_else(|| nginx_flag(&master.1, "-e").map(rel))
        .unwrap_or_else(|| PathBuf::from("/var/log/nginx/error.log"));
    let Some(text) = tail(&log) else {
        skip(ev, "gateway-error-log", format!("cannot read nginx error log {}", log.display()), None);
        return;
    };
    // Our own request's line: the one naming this client's source address, latest first.
    let sources: Vec<String> =
        ev.probes.iter().filter_map(|p| p.local.map(|l| format!("client: {}", l.ip()))).collect();
    let line = text
        .lines()
        .rev()
        .filter(|l| sources.is_empty() || sources.iter().any(|s| l.contains(s.as_str())))
        .find_map(GatewayFacts::parse_nginx_line);
    let Some(mut g) = line else { return };
    g.pid = Some(master.0);
    g.error_log = log.display().to_string();
    g.upstream_on_inspected_host =
        g.upstream.as_deref().and_then(upstream_ip).map(|ip| ip.is_loopback() || host.local_addresses.contains(&ip));
    ev.protocol.get_or_insert_with(Default::default).gateway = Some(g);
}

/// The address of `http://10.0.0.5:9000/x` or `http://[::1]:80/`, when it is a literal.
fn upstream_ip(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let auth = rest.split('/').next()?;
    if let Some(v6) = auth.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    auth.rsplit_once(':').map(|(h, _)| h).unwrap_or(auth).parse().ok()
}

/// `redis-server /etc/redis/redis.conf --port 1` → the path; `redis-server *:6379` (the
/// process title Redis sets) has none.
pub(crate) fn config_arg(cmdline: &str) -> Option<String> {
    let arg = cmdline.split_whitespace().nth(1)?;
    (!arg.starts_with('-') && !arg.contains(':') && (arg.ends_with(".conf") || arg.starts_with('/')))
        .then(|| arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_from_cmdline() {
        assert_eq!(config_arg("/usr/bin/redis-server /etc/redis/redis.conf").as_deref(), Some("/etc/redis/redis.conf"));
        assert_eq!(config_arg("redis-server lab.conf --port 6380").as_deref(), Some("lab.conf"));
        assert_eq!(config_arg("/usr/bin/redis-server 127.0.0.1:6379"), None);
        assert_eq!(config_arg("redis-server --port 6379"), None);
        assert_eq!(config_arg("redis-server"), None);
    }

    #[test]
    fn nginx_bits() {
        let cmd = "nginx: master process nginx -e /tmp/x/error.log -p /tmp/x -c /tmp/x/nginx.conf";
        assert_eq!(nginx_flag(cmd, "-c").as_deref(), Some("/tmp/x/nginx.conf"));
        assert_eq!(nginx_flag(cmd, "-p").as_deref(), Some("/tmp/x"));
        assert_eq!(nginx_flag("nginx: worker process", "-c"), None);
        assert_eq!(
            nginx_error_log("daemon off;\n# error_log /no;\nerror_log /var/log/a.log warn;\n").as_deref(),
            Some("/var/log/a.log")
        );
        assert_eq!(nginx_error_log("error_log stderr;"), None);
        assert_eq!(upstream_ip("http://127.0.0.1:9000/v1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(upstream_ip("http://[::1]:80/"), Some("::1".parse().unwrap()));
        assert_eq!(upstream_ip("http://backend/"), None);
    }

    /// The lint runs on the file INFO names, with the limits host inspection read.
    #[test]
    fn lint_from_info_and_host_limits() {
        use conndoc_facts::protocol::{ProtocolKind, ProtocolProbe, RedisFacts, RedisInfo};
        let dir = conndoc_testsupport::TempDir::new("engine-lint");
        let conf = dir.join("redis.conf");
        std::fs::write(&conf, "bind 0.0.0.0\nrequirepass x\nmaxclients 1000\ntcp-backlog 511\n").unwrap();
        let mut ev = conndoc_diagnose::fixture::evidence("redis://10.0.0.2");
        ev.protocol = Some(ProtocolFacts {
            probes: vec![ProtocolProbe {
                address: "10.0.0.2".parse().unwrap(),
                port: conndoc_facts::Port::new(6379).unwrap(),
                kind: ProtocolKind::Redis,
                tls_requested: false,
                connect_us: None,
                tls: None,
                redis: Some(RedisFacts {
                    info: Some(RedisInfo {
                        config_file: Some(conf.display().to_string()),
                        process_id: Some(4242),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                http: None,
                tls_mismatch: None,
                error: None,
            }],
            ..Default::default()
        });
        let mut host = HostFacts::default();
        host.sysctls.somaxconn = Some(128);
        host.expected = Some(conndoc_facts::host::ExpectedService {
            name: "redis-server".into(),
            running: vec![ProcessInfo {
                pid: 4242,
                comm: "redis-server".into(),
                cmdline: "redis-server 0.0.0.0:6379".into(),
                uid: 0,
                user: None,
                open_fds: Some(10),
                nofile_soft: Some(512),
                nofile_hard: Some(512),
                in_target_netns: Some(true),
            }],
            ..Default::default()
        });
        ev.host = Some(host);
        after_host(&mut ev, &Options::default());
        let r = ev.protocol.unwrap().redis_conf.expect("linted");
        let codes: Vec<_> = r.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["maxclients-above-fd-limit", "tcp-backlog-above-somaxconn"]);
        assert!(r.problems[0].message.contains("redis-server pid 4242"));
        assert!(r.problems[1].message.contains("inspected host"));
    }
}
