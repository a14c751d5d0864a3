//! SELinux AVC denials from the audit log (`type=AVC msg=audit(…): avc:  denied  { … }`).

use conndoc_facts::host::AvcDenial;
use std::io::{Read, Seek, SeekFrom};

pub const AUDIT_LOG: &str = "/var/log/audit/audit.log";

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let i = line.find(&pat)? + pat.len();
    let rest = &line[i..];
    let v = rest.split_whitespace().next()?;
    Some(v.trim_matches('"'))
}

/// Parse one audit.log line; None unless it is an AVC denial.
pub fn parse_avc(line: &str) -> Option<AvcDenial> {
    if !line.contains("type=AVC") && !line.contains("type=USER_AVC") {
        return None;
    }
    let i = line.find("denied")?;
    let rest = &line[i..];
    let open = rest.find('{')?;
    let close = rest.find('}')?;
    let permission = rest.get(open + 1..close)?.split_whitespace().collect::<Vec<_>>().join(" ");
    let port = field(line, "src").or_else(|| field(line, "dest")).and_then(|p| p.parse().ok());
    Some(AvcDenial {
        permission,
        pid: field(line, "pid").and_then(|p| p.parse().ok()),
        comm: field(line, "comm").map(str::to_string),
        port,
        scontext: field(line, "scontext")?.to_string(),
        tcontext: field(line, "tcontext")?.to_string(),
        tclass: field(line, "tclass")?.to_string(),
        permissive: field(line, "permissive") == Some("1"),
        line: line.trim().to_string(),
    })
}

/// `name_bind` denials in the last `tail` bytes of an audit log text.
pub fn bind_denials(text: &str) -> Vec<AvcDenial> {
    text.lines().filter_map(parse_avc).filter(|d| d.permission.split(' ').any(|p| p == "name_bind")).collect()
}

/// Read the end of the audit log (bounded) and return its name_bind denials.
pub fn read_bind_denials(path: &str, tail: u64) -> std::io::Result<Vec<AvcDenial>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(tail)))?;
    let mut buf = Vec::new();
    f.take(tail).read_to_end(&mut buf)?;
    Ok(bind_denials(&String::from_utf8_lossy(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // FIXTURE, not captured here (no SELinux on these machines): AVC records in the exact
    // audit.log format (Red Hat SELinux guide, "Raw audit messages"), for a redis-server
    // denied binding port 6380, plus neighbouring record types that must be ignored.
    const AUDIT: &str = include_str!("../tests/fixtures/audit-avc-name-bind.log");

    #[test]
    fn name_bind_denial() {
        let d = bind_denials(AUDIT);
        assert_eq!(d.len(), 1, "{d:?}");
        let d = &d[0];
        assert_eq!(d.permission, "name_bind");
        assert_eq!(d.pid, Some(2817));
        assert_eq!(d.comm.as_deref(), Some("redis-server"));
        assert_eq!(d.port, Some(6380));
        assert_eq!(d.scontext, "system_u:system_r:redis_t:s0");
        assert_eq!(d.tcontext, "system_u:object_r:unreserved_port_t:s0");
        assert_eq!(d.tclass, "tcp_socket");
        assert!(!d.permissive);
        // the name_connect denial parses but is not a bind denial
        let all: Vec<_> = AUDIT.lines().filter_map(parse_avc).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].permission, "name_connect");
        assert_eq!(all[1].port, Some(5432));
    }
}
