//! Kernel log lines that matter: SYN flood warnings and OOM kills. Read from /dev/kmsg
//! without blocking and without consuming anything (each open reads the whole buffer).

use conndoc_facts::host::KernelEvent;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

/// Parse one kernel log message (the text after `PRI,SEQ,TS,FLAGS;` in /dev/kmsg, or a
/// `dmesg` line).
pub fn parse_line(msg: &str) -> Option<KernelEvent> {
    if let Some(i) = msg.find("Possible SYN flooding on port ") {
        let rest = &msg[i + "Possible SYN flooding on port ".len()..];
        // "0.0.0.0:7000." (IPv4, 6.x), "[::]:7000." (IPv6), "7000." (older kernels)
        let token = rest.split_whitespace().next()?.trim_end_matches('.');
        let port_part = match token.rsplit_once(':') {
            Some((_, p)) => p,
            None => token,
        };
        let port = port_part.parse().ok()?;
        let action = if rest.contains("Sending cookies") {
            "sending cookies"
        } else if rest.contains("Dropping request") {
            "dropping request"
        } else {
            "unknown"
        }
        .to_string();
        return Some(KernelEvent::SynFlood { port, action, line: msg.trim().to_string() });
    }
    if let Some(i) = msg.find("Killed process ") {
        if !msg[..i].contains("out of memory") && !msg[..i].contains("Out of memory") {
            return None;
        }
        let rest = &msg[i + "Killed process ".len()..];
        let (pid, rest) = rest.split_once(' ')?;
        let comm = rest.strip_prefix('(')?.split_once(')')?.0;
        return Some(KernelEvent::OomKill {
            pid: pid.parse().ok()?,
            comm: comm.to_string(),
            line: msg.trim().to_string(),
        });
    }
    None
}

/// The message text of one /dev/kmsg record (`6,1234,5678,-;text\n KEY=val…`) and its
/// timestamp in microseconds since boot.
pub fn record_text(rec: &str) -> Option<(u64, &str)> {
    let (head, text) = rec.split_once(';')?;
    let ts = head.split(',').nth(2)?.parse().ok()?;
    Some((ts, text.lines().next().unwrap_or("")))
}

fn uptime_us() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1e6) as u64)
}

/// Read the kernel ring buffer for matching events logged in the last `recent`. Err when
/// /dev/kmsg is not readable (dmesg_restrict without CAP_SYSLOG, or none in a container).
/// The kernel log is host-wide: a line names a port, not a network namespace.
pub fn read_events(deadline: Duration, recent: Duration) -> std::io::Result<Vec<KernelEvent>> {
    let since = uptime_us().map(|u| u.saturating_sub(recent.as_micros() as u64)).unwrap_or(0);
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    // Bounded: the ring buffer holds at most a few hundred thousand records.
    for _ in 0..1_000_000 {
        if start.elapsed() > deadline {
            break;
        }
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                if let Some((ts, text)) = record_text(&rec) {
                    if ts >= since {
                        out.extend(parse_line(text));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE: the record we were at was overwritten; the next read continues.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_flood_lines() {
        // Format of net/ipv4/tcp_input.c tcp_syn_flood_action, older and newer kernels.
        let old = "TCP: request_sock_TCP: Possible SYN flooding on port 7000. Sending cookies.  Check SNMP counters.";
        let new = "TCP: request_sock_TCP: Possible SYN flooding on port 10.77.0.2:7000. Dropping request.";
        match parse_line(old) {
            Some(KernelEvent::SynFlood { port: 7000, action, .. }) => assert_eq!(action, "sending cookies"),
            other => panic!("{other:?}"),
        }
        match parse_line(new) {
            Some(KernelEvent::SynFlood { port: 7000, action, .. }) => assert_eq!(action, "dropping request"),
            other => panic!("{other:?}"),
        }
        let v6 = "TCPv6: request_sock_TCPv6: Possible SYN flooding on port [fd77::2]:6379. Sending cookies.";
        assert!(matches!(parse_line(v6), Some(KernelEvent::SynFlood { port: 6379, .. })));
    }

    #[test]
    fn oom_lines() {
        let l = "Out of memory: Killed process 4242 (redis-server) total-vm:1048576kB, anon-rss:900000kB, file-rss:0kB, shmem-rss:0kB, UID:999 pgtables:2000kB oom_score_adj:0";
        match parse_line(l) {
            Some(KernelEvent::OomKill { pid, comm, .. }) => assert_eq!((pid, comm.as_str()), (4242, "redis-server")),
            other => panic!("{other:?}"),
        }
        let cg = "Memory cgroup out of memory: Killed process 77 (java) total-vm:1kB";
        assert!(matches!(parse_line(cg), Some(KernelEvent::OomKill { pid: 77, .. })));
        assert_eq!(parse_line("Killed process 1 (x)"), None);
        assert_eq!(parse_line("eth0: link up"), None);
    }

    #[test]
    fn kmsg_records() {
        let rec = "4,1234,5678901,-;TCP: request_sock_TCP: Possible SYN flooding on port 80. Sending cookies.\n SUBSYSTEM=net\n";
        let (ts, text) = record_text(rec).unwrap();
        assert_eq!(ts, 5678901);
        assert!(matches!(parse_line(text), Some(KernelEvent::SynFlood { port: 80, .. })));
        // Recorded on this machine's 6.18 kernel (dmesg) during host-syn-backlog-overflow.
        let real = "TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:7000. Dropping request.";
        match parse_line(real) {
            Some(KernelEvent::SynFlood { port, action, .. }) => {
                assert_eq!((port, action.as_str()), (7000, "dropping request"))
            }
            other => panic!("{other:?}"),
        }
    }
}
