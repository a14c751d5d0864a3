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
    read_wanted(Wanted::ALL)
}

/// Which groups of parameters to read. Each is one file read; an inspection reads only
/// those a finding can cite (see [`Wanted::for_findings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    /// `net.core.somaxconn`: the low-somaxconn and small-backlog warnings on every listener.
    pub somaxconn: bool,
    /// `tcp_abort_on_overflow`: a full accept queue.
    pub accept_queue: bool,
    /// `tcp_max_syn_backlog`, `tcp_syncookies`: SYN-queue counters that rose.
    pub syn_queue: bool,
    /// `tcp_fin_timeout`, `tcp_tw_reuse`: a TIME_WAIT pile-up on the port.
    pub time_wait: bool,
    /// `ip_local_port_range`, `fs.file-max`, `fs.nr_open`: shown, cited by no host finding.
    pub rest: bool,
}

impl Wanted {
    pub const ALL: Wanted =
        Wanted { somaxconn: true, accept_queue: true, syn_queue: true, time_wait: true, rest: true };

    /// What the host findings (crates/diagnose, rules/host.rs) can cite given the facts: a
    /// listener's full queue, SYN-queue counters that rose (or counters not read), TIME_WAIT
    /// sockets on the port at the pile-up threshold. somaxconn always (its warning stands
    /// alone).
    pub fn for_findings(queue_full: bool, syn_counters_rose: Option<bool>, port_time_wait: u32) -> Wanted {
        Wanted {
            somaxconn: true,
            accept_queue: queue_full,
            syn_queue: syn_counters_rose.unwrap_or(true),
            time_wait: port_time_wait >= TIME_WAIT_PILEUP,
            rest: false,
        }
    }
}

/// TIME_WAIT sockets on one port from which the time-wait-pileup warning fires (the rule's
/// threshold, crates/diagnose rules/host.rs).
pub const TIME_WAIT_PILEUP: u32 = 1000;

pub fn read_wanted(w: Wanted) -> Sysctls {
    Sysctls {
        somaxconn: w.somaxconn.then(|| num("net/core/somaxconn")).flatten(),
        tcp_max_syn_backlog: w.syn_queue.then(|| num("net/ipv4/tcp_max_syn_backlog")).flatten(),
        tcp_syncookies: w.syn_queue.then(|| num("net/ipv4/tcp_syncookies")).flatten(),
        tcp_abort_on_overflow: w.accept_queue.then(|| num("net/ipv4/tcp_abort_on_overflow")).flatten(),
        ip_local_port_range: w
            .rest
            .then(|| read("net/ipv4/ip_local_port_range").as_deref().and_then(parse_range))
            .flatten(),
        tcp_fin_timeout: w.time_wait.then(|| num("net/ipv4/tcp_fin_timeout")).flatten(),
        tcp_tw_reuse: w.time_wait.then(|| num("net/ipv4/tcp_tw_reuse")).flatten(),
        file_max: w.rest.then(|| num("fs/file-max")).flatten(),
        nr_open: w.rest.then(|| num("fs/nr_open")).flatten(),
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
        assert!(s.tcp_fin_timeout.is_some() && s.tcp_syncookies.is_some() && s.nr_open.is_some());
    }

    #[test]
    fn only_what_a_finding_can_cite_is_read() {
        // A refused port nobody listens on, counters read and quiet, no TIME_WAIT.
        let w = Wanted::for_findings(false, Some(false), 0);
        assert_eq!(w, Wanted { somaxconn: true, ..Default::default() });
        let s = read_wanted(w);
        assert!(s.somaxconn.is_some());
        assert_eq!(Sysctls { somaxconn: None, ..s }, Sysctls::default());
        // Each trouble reads its own group; counters that could not be read count as risen.
        assert!(Wanted::for_findings(true, Some(false), 0).accept_queue);
        assert!(Wanted::for_findings(false, Some(true), 0).syn_queue);
        assert!(Wanted::for_findings(false, None, 0).syn_queue);
        assert!(Wanted::for_findings(false, Some(false), TIME_WAIT_PILEUP).time_wait);
        assert!(!Wanted::for_findings(false, Some(false), TIME_WAIT_PILEUP - 1).time_wait);
        let s = read_wanted(Wanted::for_findings(true, Some(true), TIME_WAIT_PILEUP));
        assert!(s.tcp_abort_on_overflow.is_some() && s.tcp_syncookies.is_some() && s.tcp_tw_reuse.is_some());
        assert!(s.file_max.is_none());
    }
}
