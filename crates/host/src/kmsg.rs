//! Kernel log lines that matter: SYN flood warnings and OOM kills. Read without consuming
//! anything: the whole buffer in one `syslog(READ_ALL)` call (what `dmesg` does), or — when
//! printk prints no timestamps — from /dev/kmsg without blocking, one read per record.

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
/// the log is not readable (dmesg_restrict without CAP_SYSLOG, or none in a container).
/// The kernel log is host-wide: a line names a port, not a network namespace.
pub fn read_events(deadline: Duration, recent: Duration) -> std::io::Result<Vec<KernelEvent>> {
    let since = uptime_us().map(|u| u.saturating_sub(recent.as_micros() as u64)).unwrap_or(0);
    // One system call and a substring search instead of ~1,000 reads (one per record) each
    // parsed: the /dev/kmsg loop was ~39% of a Docker diagnosis's instructions (callgrind).
    if let Some(text) = read_all() {
        return Ok(events_in_text(&text, since));
    }
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

/// The largest buffer asked for: the kernel's own log_buf_len is 128 KiB–32 MiB.
const READ_ALL_MAX: usize = 64 << 20;

/// The whole ring buffer as `dmesg` reads it (`<PRI>[SECONDS.MICROS] text` lines), when
/// printk prefixes every line with its timestamp (`printk.time`, the default): without it
/// the age of a line is unknown here, and /dev/kmsg (which always has it) is read instead.
/// None also when the call is refused: /dev/kmsg then reports the error.
fn read_all() -> Option<Vec<u8>> {
    let time = std::fs::read("/sys/module/printk/parameters/time").ok()?;
    if time.first() != Some(&b'Y') {
        return None;
    }
    // SAFETY: SYSLOG_ACTION_SIZE_BUFFER (10) takes no buffer.
    #[allow(unsafe_code)]
    let size = unsafe { libc::klogctl(10, std::ptr::null_mut(), 0) };
    if size <= 0 {
        return None;
    }
    // Each record gains its `<PRI>[…] ` prefix when formatted: twice the buffer holds them.
    let len = (size as usize).saturating_mul(2).min(READ_ALL_MAX);
    let mut buf = vec![0u8; len];
    // SAFETY: SYSLOG_ACTION_READ_ALL (3) writes at most `len` bytes into `buf`, which is
    // `len` bytes long, and returns how many it wrote.
    #[allow(unsafe_code)]
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), len as libc::c_int) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// The timestamp (µs since boot) and text of one `dmesg`-format line: `<6>[ 1069.682870]
/// text`, with the caller field of CONFIG_PRINTK_CALLER (`[  T123]`) skipped when present.
pub fn syslog_line(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix('<')?.split_once('>')?.1;
    let (ts, mut text) = rest.strip_prefix('[')?.split_once(']')?;
    if let Some(after) = text.strip_prefix('[').and_then(|t| t.split_once(']')) {
        text = after.1;
    }
    let (secs, micros) = ts.trim().split_once('.')?;
    let us = secs.parse::<u64>().ok()?.checked_mul(1_000_000)?.checked_add(micros.parse().ok()?)?;
    Some((us, text.strip_prefix(' ').unwrap_or(text)))
}

/// The matching events of a `dmesg`-format buffer logged at or after `since` (µs since
/// boot). Only the lines holding one of the two phrases are looked at, found by a
/// substring search over the bytes (memchr's memmem): the buffer as a whole is never
/// copied or checked as UTF-8.
pub fn events_in_text(text: &[u8], since: u64) -> Vec<KernelEvent> {
    let mut hits: Vec<usize> = [&b"Possible SYN flooding on port "[..], b"Killed process "]
        .iter()
        .flat_map(|needle| memchr::memmem::find_iter(text, needle))
        .map(|i| memchr::memrchr(b'\n', &text[..i]).map_or(0, |n| n + 1))
        .collect();
    hits.sort_unstable();
    hits.dedup();
    hits.into_iter()
        .filter_map(|start| {
            let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |n| start + n);
            let line = String::from_utf8_lossy(&text[start..end]);
            let (ts, msg) = syslog_line(&line)?;
            (ts >= since).then(|| parse_line(msg)).flatten()
        })
        .collect()
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
    fn dmesg_buffer() {
        // As SYSLOG_ACTION_READ_ALL returned it on this machine's 6.18 kernel.
        let text = "<6>[    0.000000] Linux version 6.18.44\n\
<4>[  700.100000] TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:7000. Dropping request.  Check SNMP counters.\n\
<6>[ 1069.682870] docker0: port 4(vethb7fdc19) entered disabled state\n\
<3>[ 1070.000001][ T4242] Out of memory: Killed process 4242 (redis-server) total-vm:1kB\n\
<3>[ 1071.5] Killed process 1 (x)\n";
        assert_eq!(syslog_line("<6>[ 1069.682870] docker0: up"), Some((1_069_682_870, "docker0: up")));
        assert_eq!(syslog_line("<3>[ 1.000001][  T12] a"), Some((1_000_001, "a")));
        assert_eq!(syslog_line("no prefix"), None);
        let all = events_in_text(text.as_bytes(), 0);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(matches!(&all[0], KernelEvent::SynFlood { port: 7000, .. }));
        assert!(matches!(&all[1], KernelEvent::OomKill { pid: 4242, comm, .. } if comm == "redis-server"));
        // Older lines than `since` are left out.
        let recent = events_in_text(text.as_bytes(), 1_000_000_000);
        assert_eq!(recent.len(), 1);
        assert!(events_in_text(b"", 0).is_empty());
    }

    /// This kernel's buffer, when readable: every line carries the prefix parsed here, and
    /// both reads see the same events.
    #[test]
    fn the_real_buffer_parses() {
        let Some(raw) = read_all() else { return };
        let text = String::from_utf8_lossy(&raw);
        assert!(text.lines().all(|l| syslog_line(l).is_some()), "every line has a timestamp");
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").unwrap();
        let mut buf = vec![0u8; 8192];
        let mut from_kmsg = Vec::new();
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            let rec = String::from_utf8_lossy(&buf[..n]);
            from_kmsg.extend(record_text(&rec).and_then(|(_, t)| parse_line(t)));
        }
        let from_text = events_in_text(&raw, 0);
        // The buffer may have gained a line between the two reads.
        assert!(from_text.len().abs_diff(from_kmsg.len()) <= 1, "{from_text:?} vs {from_kmsg:?}");
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
