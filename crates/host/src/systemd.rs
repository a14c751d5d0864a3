//! The service manager: a unit's state (`systemctl show`) and its last journal lines
//! (`journalctl -o json`). Both run as child processes with a deadline.

use conndoc_facts::host::{JournalLine, UnitState};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// systemd is the init: the documented test (sd_booted) is /run/systemd/system existing.
pub fn is_init() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Parse `systemctl show UNIT` (`Key=Value` per line).
pub fn parse_show(unit: &str, text: &str) -> UnitState {
    let mut u = UnitState { unit: unit.to_string(), ..Default::default() };
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k {
            "Id" if !v.is_empty() => u.unit = v.to_string(),
            "LoadState" => u.load_state = v.to_string(),
            "ActiveState" => u.active_state = v.to_string(),
            "SubState" => u.sub_state = v.to_string(),
            "Result" => u.result = v.to_string(),
            "MainPID" => u.main_pid = v.parse().ok().filter(|&p| p != 0),
            "ExecMainStatus" => u.exec_main_status = v.parse().ok(),
            "ExecMainCode" => u.exec_main_code = v.parse().ok().filter(|&c| c != 0),
            _ => {}
        }
    }
    u
}

/// MESSAGE is a string, or an array of bytes when it is not valid UTF-8 (journalctl(1),
/// "json" output mode); null when too large.
fn message_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => {
            let bytes: Vec<u8> = a.iter().filter_map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

/// Parse `journalctl -o json` output: one JSON object per line, values as strings.
pub fn parse_journal_json(text: &str) -> Vec<JournalLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|o| {
            let message = message_of(o.get("MESSAGE")?)?;
            let s = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::to_string);
            Some(JournalLine {
                time_us: s("__REALTIME_TIMESTAMP").and_then(|t| t.parse().ok()).unwrap_or(0),
                pid: s("_PID").and_then(|p| p.parse().ok()),
                identifier: s("SYSLOG_IDENTIFIER"),
                message,
            })
        })
        .collect()
}

/// Journal lines that explain a failed start, e.g. "Main process exited, status=1/FAILURE"
/// or "Address already in use".
pub fn telling(line: &JournalLine) -> bool {
    let m = line.message.to_ascii_lowercase();
    [
        "address already in use",
        "main process exited",
        "failed with result",
        "permission denied",
        "cannot assign requested address",
        "could not create server tcp listening socket",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Run a command with a deadline; stdout when it exits (any status).
pub fn run_with_deadline(argv: &[&str], max: Duration) -> Result<String, String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > max => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not finish within {max:?}", argv.join(" ")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Unit names a program is usually installed as: `redis-server` → redis-server.service,
/// redis.service.
pub fn unit_candidates(program: &str) -> Vec<String> {
    let mut v = vec![format!("{program}.service")];
    for suffix in ["-server", "d"] {
        if let Some(base) = program.strip_suffix(suffix) {
            if !base.is_empty() {
                v.push(format!("{base}.service"));
            }
        }
    }
    v
}

/// The first unit of `candidates` that systemd knows, with its last journal lines.
pub fn unit_state(candidates: &[String], max: Duration) -> Result<Option<UnitState>, String> {
    for unit in candidates {
        let text = run_with_deadline(
            &[
                "systemctl",
                "show",
                unit,
                "--property=Id,LoadState,ActiveState,SubState,Result,MainPID,ExecMainStatus,ExecMainCode",
                "--no-pager",
            ],
            max,
        )?;
        let mut u = parse_show(unit, &text);
        if u.load_state != "loaded" {
            continue;
        }
        let j = run_with_deadline(&["journalctl", "-u", &u.unit, "-n", "20", "-o", "json", "--no-pager"], max)
            .unwrap_or_default();
        u.journal = parse_journal_json(&j);
        return Ok(Some(u));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    // FIXTURES, not captured on this machine (systemd is not PID 1 here): written in the
    // exact format `systemctl show` and `journalctl -o json` print (systemctl(1),
    // journalctl(1) "json", systemd.journal-fields(7)) for a redis-server unit whose
    // start failed because port 6379 was taken.
    const SHOW: &str = include_str!("../tests/fixtures/systemctl-show-redis-failed.txt");
    const JOURNAL: &str = include_str!("../tests/fixtures/journalctl-redis-failed.json");

    #[test]
    fn failed_unit() {
        let u = parse_show("redis-server.service", SHOW);
        assert_eq!(u.load_state, "loaded");
        assert_eq!(u.active_state, "failed");
        assert_eq!(u.sub_state, "failed");
        assert_eq!(u.result, "exit-code");
        assert_eq!(u.exec_main_status, Some(1));
        assert_eq!(u.exec_main_code, Some(1));
        assert_eq!(u.main_pid, None);
    }

    #[test]
    fn journal_lines() {
        let j = parse_journal_json(JOURNAL);
        assert_eq!(j.len(), 4);
        assert!(j[0].message.contains("Address already in use"));
        assert_eq!(j[0].pid, Some(2817));
        assert_eq!(j[0].identifier.as_deref(), Some("redis-server"));
        assert_eq!(j[0].time_us, 1_700_000_123_456_789);
        assert!(j[1].message.contains("Main process exited, code=exited, status=1/FAILURE"));
        // a MESSAGE given as a byte array (not valid UTF-8 in the journal)
        assert_eq!(j[3].message, "bad\u{fffd}byte");
        let telling: Vec<_> = j.iter().filter(|l| telling(l)).collect();
        assert_eq!(telling.len(), 3);
        assert!(parse_journal_json("not json\n{}\n").is_empty());
    }

    #[test]
    fn candidates() {
        assert_eq!(unit_candidates("redis-server"), vec!["redis-server.service", "redis.service"]);
        assert_eq!(unit_candidates("sshd"), vec!["sshd.service", "ssh.service"]);
    }

    #[test]
    fn deadline_kills_a_slow_command() {
        let e = run_with_deadline(&["sleep", "5"], Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("did not finish"));
        assert_eq!(run_with_deadline(&["echo", "hi"], Duration::from_secs(2)).unwrap(), "hi\n");
    }
}
