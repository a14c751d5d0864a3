//! Kernel parameters. `/proc/sys/net` shows the network namespace of the reading thread,
//! so a thread that entered the target namespace reads the target's values.

use conndoc_facts::host::Sysctls;
use std::fs;

fn read(path: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/sys/{path}")).ok().map(|s| s.trim().to_string())
}

fn num<T: std::str::FromStr>(path: &str) -> Option<T> {
    read(path)?.parse().ok()
}

/// `ip_local_port_range` is two numbers separated by whitespace.
pub fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace();
    let lo = it.next()?.parse().ok()?;
    let hi = it.next()?.parse().ok()?;
    it.next().is_none().then_some((lo, hi))
}

pub fn read_all() -> Sysctls {
    Sysctls {
        somaxconn: num("net/core/somaxconn"),
        tcp_max_syn_backlog: num("net/ipv4/tcp_max_syn_backlog"),
        tcp_syncookies: num("net/ipv4/tcp_syncookies"),
        tcp_abort_on_overflow: num("net/ipv4/tcp_abort_on_overflow"),
        ip_local_port_range: read("net/ipv4/ip_local_port_range").as_deref().and_then(parse_range),
        tcp_fin_timeout: num("net/ipv4/tcp_fin_timeout"),
        tcp_tw_reuse: num("net/ipv4/tcp_tw_reuse"),
        file_max: num("fs/file-max"),
        nr_open: num("fs/nr_open"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_live_values() {
        assert_eq!(parse_range("32768\t60999"), Some((32768, 60999)));
        assert_eq!(parse_range("32768"), None);
        assert_eq!(parse_range("1 2 3"), None);
        let s = read_all();
        assert!(s.somaxconn.is_some_and(|v| v > 0));
        assert!(s.ip_local_port_range.is_some());
    }
}
