//! Userland port proxies that hold a published port on behalf of a backend: the backend
//! address they forward to, read from their command line.

use std::net::{IpAddr, SocketAddr};

/// What a `docker-proxy` forwards (`-proto tcp -host-ip 0.0.0.0 -host-port 16379
/// -container-ip 172.17.0.2 -container-port 6379`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyArgs {
    pub proto: String,
    pub host: SocketAddr,
    pub backend: SocketAddr,
}

/// Programs whose arguments [`parse_docker_proxy`] reads.
pub fn is_docker_proxy(comm: &str, args: &[String]) -> bool {
    comm == "docker-proxy" || args.first().is_some_and(|a| a.rsplit('/').next() == Some("docker-proxy"))
}

/// Parse docker-proxy's Go-style flags (`-flag value`, `-flag=value`, `--flag value`).
/// None when a needed flag is missing or malformed.
pub fn parse_docker_proxy(args: &[String]) -> Option<ProxyArgs> {
    let mut proto = "tcp".to_string();
    let (mut hip, mut hport, mut cip, mut cport) = (None, None, None, None);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else { continue };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let wanted = matches!(name, "proto" | "host-ip" | "host-port" | "container-ip" | "container-port");
        if !wanted {
            continue;
        }
        let v = value.or_else(|| it.next().cloned())?;
        match name {
            "proto" => proto = v,
            "host-ip" => hip = Some(v.parse::<IpAddr>().ok()?),
            "host-port" => hport = Some(v.parse::<u16>().ok()?),
            "container-ip" => cip = Some(v.parse::<IpAddr>().ok()?),
            _ => cport = Some(v.parse::<u16>().ok()?),
        }
    }
    Some(ProxyArgs { proto, host: SocketAddr::new(hip?, hport?), backend: SocketAddr::new(cip?, cport?) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn reads_docker_proxy_command_lines() {
        // As dockerd 20.10 starts it (recorded from /proc/PID/cmdline).
        let a = v("/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 16379 -container-ip 172.17.0.2 -container-port 6379");
        assert!(is_docker_proxy("docker-proxy", &a));
        let p = parse_docker_proxy(&a).unwrap();
        assert_eq!(p.host, "0.0.0.0:16379".parse().unwrap());
        assert_eq!(p.backend, "172.17.0.2:6379".parse().unwrap());
        assert_eq!(p.proto, "tcp");
        let a = v("docker-proxy --proto=tcp -host-ip=:: -host-port=80 -container-ip=fd00::2 -container-port=8080");
        let p = parse_docker_proxy(&a).unwrap();
        assert_eq!(p.host, "[::]:80".parse().unwrap());
        assert_eq!(p.backend, "[fd00::2]:8080".parse().unwrap());
        assert!(parse_docker_proxy(&v("docker-proxy -proto tcp -host-port 80")).is_none());
        assert!(parse_docker_proxy(&v(
            "docker-proxy -host-ip x -host-port 80 -container-ip 1.2.3.4 -container-port 1"
        ))
        .is_none());
        assert!(parse_docker_proxy(&v("docker-proxy -container-port")).is_none());
    }
}
