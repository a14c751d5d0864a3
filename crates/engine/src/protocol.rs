//! Protocol stage (issue 5): speak Redis / HTTP / TLS on the addresses that connected, and
//! (after host inspection) lint the redis.conf of the redis-server found there.

use crate::{skip, Options};
use conndoc_facts::protocol::ProtocolFacts;
use conndoc_facts::{Evidence, Host, Scheme};
use conndoc_proto::{http_probe, redis, tls::TlsSetup};
use std::net::SocketAddr;

/// At most this many connected addresses are spoken to (each has its own deadline).
const MAX_ADDRESSES: usize = 4;

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
    let mut facts = ProtocolFacts::default();
    for addr in addrs {
        let p = match scheme {
            Scheme::Redis | Scheme::Rediss => redis::probe(
                addr,
                &redis::RedisOptions {
                    user: ev.target.user.as_deref(),
                    password: ev.target.password.as_ref(),
                    tls: tls.as_ref(),
                    timeout: opts.timeout,
                    config: true,
                },
            ),
            Scheme::Http | Scheme::Https => {
                let default = scheme.default_port() == Some(ev.target.port.get());
                let host_header = if default { host.clone() } else { ev.target.authority() };
                http_probe::probe(
                    addr,
                    &http_probe::HttpOptions {
                        host_header: &host_header,
                        path: if ev.target.path.is_empty() { "/" } else { &ev.target.path },
                        tls: tls.as_ref(),
                        timeout: opts.timeout,
                    },
                )
            }
            Scheme::Tcp => unreachable!("returned above"),
        };
        facts.probes.push(p);
    }
    ev.protocol = Some(facts);
}

/// After host inspection: when the target host was inspected and a redis-server serves (or
/// should serve) the port, lint the config file named on its command line.
#[allow(dead_code)] // Wired in by gather() once the lead adds the call (REQUESTS.md).
pub(crate) fn after_host(ev: &mut Evidence, _opts: &Options) {
    if !matches!(ev.target.scheme, Scheme::Redis | Scheme::Rediss) || ev.host.is_none() {
        return;
    }
    let from_info = ev
        .protocol
        .as_ref()
        .and_then(|p| p.probes.iter().find_map(|pr| pr.redis.as_ref()?.info.as_ref()?.config_file.clone()));
    let Some(path) = from_info.or_else(|| redis_config_from_host(ev)) else { return };
    let path = std::path::PathBuf::from(path);
    let limits = conndoc_proto::redis_conf::local_limits(&path);
    match conndoc_proto::redis_conf::lint(&path, &limits) {
        Ok(report) => ev.protocol.get_or_insert_with(Default::default).redis_conf = Some(report),
        Err(e) => skip(ev, "redis-conf-lint", e.to_string(), Some(format!("conndoc lint {}", path.display()))),
    }
}

/// The redis.conf path from the redis-server command line seen by host inspection: the
/// first argument that is not an option.
fn redis_config_from_host(ev: &Evidence) -> Option<String> {
    let host = serde_json::to_value(ev.host.as_ref()?).ok()?;
    let mut found = None;
    walk_processes(&host, &mut |p| {
        if found.is_some() {
            return;
        }
        let comm = p.get("comm").and_then(|c| c.as_str()).unwrap_or("");
        let cmd = p.get("cmdline").and_then(|c| c.as_str()).unwrap_or("");
        if comm.starts_with("redis-server")
            || cmd.split_whitespace().next().is_some_and(|a| a.ends_with("redis-server"))
        {
            found = config_arg(cmd);
        }
    });
    found
}

/// `redis-server /etc/redis/redis.conf --port 1` → the path; `redis-server *:6379` (the
/// process title Redis sets) has none.
pub(crate) fn config_arg(cmdline: &str) -> Option<String> {
    let arg = cmdline.split_whitespace().nth(1)?;
    (!arg.starts_with('-') && !arg.contains(':') && arg.ends_with(".conf")
        || arg.starts_with('/') && !arg.contains(':'))
    .then(|| arg.to_string())
}

/// Visit every JSON object that looks like a process (`pid` + `cmdline`) in the host facts,
/// so this stays independent of where host inspection puts them.
fn walk_processes(v: &serde_json::Value, f: &mut dyn FnMut(&serde_json::Map<String, serde_json::Value>)) {
    match v {
        serde_json::Value::Object(m) => {
            if m.contains_key("pid") && m.contains_key("cmdline") {
                f(m);
            }
            for x in m.values() {
                walk_processes(x, f);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| walk_processes(x, f)),
        _ => {}
    }
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
}
