//! TCP counters from /proc/net/netstat (TcpExt) and /proc/net/snmp (Tcp).
//!
//! Both files pair a header line of names with a line of values per group. They are read
//! through /proc/thread-self/net: /proc/self/net shows the namespace of the process's main
//! thread, not of a thread that entered another namespace with setns.

use crate::HostError;
use conndoc_facts::host::{SockStat, TcpCounters};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `Group: Name1 Name2` / `Group: v1 v2` pairs → group → name → value.
pub fn parse_pairs(text: &str) -> Result<BTreeMap<String, BTreeMap<String, u64>>, String> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(head) = lines.next() {
        if head.trim().is_empty() {
            continue;
        }
        let vals = lines.next().ok_or_else(|| format!("header without values: {head:.40}"))?;
        let (g1, names) = head.split_once(':').ok_or("line without a group")?;
        let (g2, values) = vals.split_once(':').ok_or("line without a group")?;
        if g1 != g2 {
            return Err(format!("group {g1} followed by {g2}"));
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(format!("{g1}: {} names, {} values", names.len(), values.len()));
        }
        let g = out.entry(g1.to_string()).or_default();
        for (n, v) in names.into_iter().zip(values) {
            // Tcp MaxConn is -1; negative values are not counters.
            if let Ok(v) = v.parse::<u64>() {
                g.insert(n.to_string(), v);
            }
        }
    }
    Ok(out)
}

/// Walk the `Group: names` / `Group: values` line pairs of `text`, checking each pair's
/// shape as [`parse_pairs`] does, and hand the (name, value) pairs of `group` to `each`.
/// No maps and no copies: the counters are read twice per diagnosis, and building a map of
/// every counter of both files was a third of a refused diagnosis's user-space
/// instructions (callgrind: 958 k of 2.8 M).
fn group_pairs(text: &str, group: &str, mut each: impl FnMut(&str, u64)) -> Result<(), String> {
    let mut lines = text.lines();
    while let Some(head) = lines.next() {
        if head.trim().is_empty() {
            continue;
        }
        let vals = lines.next().ok_or_else(|| format!("header without values: {head:.40}"))?;
        let (g1, names) = head.split_once(':').ok_or("line without a group")?;
        let (g2, values) = vals.split_once(':').ok_or("line without a group")?;
        if g1 != g2 {
            return Err(format!("group {g1} followed by {g2}"));
        }
        let (mut n, mut v) = (names.split_whitespace(), values.split_whitespace());
        loop {
            match (n.next(), v.next()) {
                (Some(name), Some(value)) => {
                    // Tcp MaxConn is -1; negative values are not counters.
                    if g1 == group {
                        if let Ok(value) = value.parse::<u64>() {
                            each(name, value);
                        }
                    }
                }
                (None, None) => break,
                _ => {
                    let (names, values) = (names.split_whitespace().count(), values.split_whitespace().count());
                    return Err(format!("{g1}: {names} names, {values} values"));
                }
            }
        }
    }
    Ok(())
}

/// Pick the counters that matter out of netstat and snmp.
pub fn counters_from(netstat: &str, snmp: &str) -> Result<TcpCounters, String> {
    let mut c = TcpCounters::default();
    group_pairs(netstat, "TcpExt", |k, v| match k {
        "ListenOverflows" => c.listen_overflows = v,
        "ListenDrops" => c.listen_drops = v,
        "SyncookiesSent" => c.syncookies_sent = v,
        "SyncookiesRecv" => c.syncookies_recv = v,
        "SyncookiesFailed" => c.syncookies_failed = v,
        "TCPReqQFullDrop" => c.req_q_full_drop = v,
        "TCPReqQFullDoCookies" => c.req_q_full_do_cookies = v,
        _ => {}
    })?;
    group_pairs(snmp, "Tcp", |k, v| match k {
        "AttemptFails" => c.attempt_fails = v,
        "OutRsts" => c.out_rsts = v,
        "EstabResets" => c.estab_resets = v,
        "PassiveOpens" => c.passive_opens = v,
        "ActiveOpens" => c.active_opens = v,
        _ => {}
    })?;
    Ok(c)
}

/// The "TCP:" line of /proc/net/sockstat: `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`.
pub fn parse_sockstat(text: &str) -> Option<SockStat> {
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| -> Option<u64> { words.chunks(2).find(|c| c[0] == k)?.get(1)?.parse().ok() };
    Some(SockStat { inuse: get("inuse")?, orphan: get("orphan")?, time_wait: get("tw")?, alloc: get("alloc")? })
}

/// The socket totals of the calling thread's network namespace.
pub fn read_sockstat() -> Option<SockStat> {
    parse_sockstat(&std::fs::read_to_string("/proc/thread-self/net/sockstat").ok()?)
}

/// Read the counters of the calling thread's network namespace.
pub fn read() -> Result<TcpCounters, HostError> {
    let rd = |name: &str| {
        let path = PathBuf::from(format!("/proc/thread-self/net/{name}"));
        std::fs::read_to_string(&path).map_err(|source| HostError::Read { path, source })
    };
    let netstat = rd("netstat")?;
    let snmp = rd("snmp")?;
    counters_from(&netstat, &snmp)
        .map_err(|detail| HostError::Parse { path: "/proc/thread-self/net/netstat".into(), detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from a Linux 6.x /proc/net/netstat and /proc/net/snmp (columns trimmed
    /// to keep the fixture short; the format is one header and one value line per group).
    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop\n\
TcpExt: 12 3 1 0 57 60 12 4\n\
IpExt: InNoRoutes InTruncatedPkts\n\
IpExt: 0 0\n";
    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\n\
Tcp: 1 200 120000 -1 1000 900 15 7 3 50000 48000 20 0 33 0\n\
Udp: InDatagrams NoPorts\nUdp: 5 1\n";

    #[test]
    fn fixture_counters() {
        let c = counters_from(NETSTAT, SNMP).unwrap();
        assert_eq!(c.listen_overflows, 57);
        assert_eq!(c.listen_drops, 60);
        assert_eq!(c.syncookies_sent, 12);
        assert_eq!(c.req_q_full_drop, 4);
        assert_eq!(c.attempt_fails, 15);
        assert_eq!(c.out_rsts, 33);
        assert_eq!(c.passive_opens, 900);
    }

    #[test]
    fn sockstat_line() {
        // /proc/net/sockstat as Linux prints it (net/ipv4/proc.c sockstat_seq_show)
        let t = "sockets: used 213\nTCP: inuse 50003 orphan 0 tw 1200 alloc 50010 mem 30\nUDP: inuse 2 mem 1\n";
        let s = parse_sockstat(t).unwrap();
        assert_eq!((s.inuse, s.orphan, s.time_wait, s.alloc), (50003, 0, 1200, 50010));
        assert!(parse_sockstat("UDP: inuse 2\n").is_none());
        assert!(read_sockstat().is_some());
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in ["TcpExt: A B\nTcpExt: 1\n", "TcpExt: A B\n", "TcpExt: A\nIpExt: 1\n", "IpExt: A\nIpExt: 1 2\n"] {
            assert!(parse_pairs(bad).is_err(), "{bad}");
            assert_eq!(counters_from(bad, SNMP).err(), parse_pairs(bad).err(), "{bad}");
        }
    }

    #[test]
    fn picked_counters_agree_with_the_parsed_map() {
        // The live files, and the fixtures: every counter as the full parse reads it.
        let live = |n: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{n}")).unwrap();
        for (netstat, snmp) in [(NETSTAT.to_string(), SNMP.to_string()), (live("netstat"), live("snmp"))] {
            let (ns, sn) = (parse_pairs(&netstat).unwrap(), parse_pairs(&snmp).unwrap());
            let ext = |k: &str| ns["TcpExt"].get(k).copied().unwrap_or(0);
            let tcp = |k: &str| sn["Tcp"].get(k).copied().unwrap_or(0);
            let want = TcpCounters {
                listen_overflows: ext("ListenOverflows"),
                listen_drops: ext("ListenDrops"),
                syncookies_sent: ext("SyncookiesSent"),
                syncookies_recv: ext("SyncookiesRecv"),
                syncookies_failed: ext("SyncookiesFailed"),
                req_q_full_drop: ext("TCPReqQFullDrop"),
                req_q_full_do_cookies: ext("TCPReqQFullDoCookies"),
                attempt_fails: tcp("AttemptFails"),
                out_rsts: tcp("OutRsts"),
                estab_resets: tcp("EstabResets"),
                passive_opens: tcp("PassiveOpens"),
                active_opens: tcp("ActiveOpens"),
            };
            assert_eq!(counters_from(&netstat, &snmp).unwrap(), want);
        }
    }

    #[test]
    fn live_read() {
        let c = read().unwrap();
        let again = read().unwrap();
        assert!(again.since(&c).listen_overflows < 1_000_000);
    }
}
