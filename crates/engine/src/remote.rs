//! `diagnose --ssh`: the server-side gatherers run on another machine, through the system's
//! OpenSSH client, as `conndoc inspect --bracket --json` (docs/remote.md).
//!
//! One SSH session per diagnosis: the remote reads the "before" counters and says `ready`,
//! the probe runs here, one follow-up line tells the remote what the probe did, and the
//! remote answers with the host facts. Everything the remote says is size-limited, parsed
//! strictly against [`INSPECT_SCHEMA`] and redacted before it joins the evidence; every
//! wait has a deadline at which the ssh child is killed. A failure of any kind is a skipped
//! check with ssh's own words, never the end of the diagnosis.

use conndoc_facts::firewall::HostFirewall;
use conndoc_facts::host::{InspectScope, Inspected};
use conndoc_facts::inspect::{InspectFollowUp, InspectOutput, InspectPhase, ProbeFlow, INSPECT_SCHEMA};
use conndoc_facts::{Evidence, SkippedCheck, REDACTED};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that replaces the `ssh` command (split like a shell would).
pub const SSH_COMMAND_ENV: &str = "CONNDOC_SSH_COMMAND";
/// The most the remote may print in one line, and in all.
const MAX_LINE: usize = 4 << 20;
const MAX_STDOUT: usize = 8 << 20;
/// How much of ssh's stderr is kept for the message.
const MAX_STDERR: usize = 64 << 10;
/// How long of ssh's message the report quotes.
const MAX_MESSAGE: usize = 300;
/// The name every check about the remote side is recorded under.
pub const CHECK: &str = "server-side inspection over ssh";

/// How to reach the server (`--ssh`, `--remote-conndoc`, CONNDOC_SSH_COMMAND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshOptions {
    pub destination: Destination,
    /// The ssh program and its own arguments (default `["ssh"]`).
    pub command: Vec<String>,
    /// The conndoc to run there (default `conndoc` from the remote PATH).
    pub remote_conndoc: String,
    /// Deadline of connecting, authenticating and the remote's "ready".
    pub connect_timeout: Duration,
    /// Reuse connections through an OpenSSH ControlMaster socket in this (0700) directory,
    /// the master staying `ControlPersist` seconds after its last session (watch, check).
    pub control_dir: Option<PathBuf>,
    pub control_persist: Duration,
}

/// Where `watch`/`check` keep their ControlMaster sockets: `$XDG_RUNTIME_DIR/conndoc-ssh`,
/// else `/tmp/conndoc-ssh-UID`. Made 0700 when missing; an existing one must be a real
/// directory (not a symlink) of this user with no access for others, or it is not used.
pub fn control_dir() -> PathBuf {
    let uid = my_uid();
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("conndoc-ssh"),
        None => PathBuf::from(format!("/tmp/conndoc-ssh-{uid}")),
    }
}

/// This process's uid, from /proc (no unsafe call needed).
fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(u32::MAX)
}

/// Make `dir` private (0700) or check that it is. Err: why it must not be used.
pub(crate) fn ensure_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    // ssh refuses a ControlPath near sun_path's 108 bytes (it adds a 17-byte temp suffix).
    if dir.as_os_str().len() + 1 + 40 + 17 >= 108 {
        return Err(format!("{} is too long for a ControlMaster socket path", dir.display()));
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.file_type().is_dir() {
        return Err(format!("{} is not a directory (a symlink?)", dir.display()));
    }
    if m.uid() != my_uid() || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not private to this user (owner {}, mode {:o})",
            dir.display(),
            m.uid(),
            m.mode() & 0o777
        ));
    }
    Ok(())
}

/// `[USER@]HOST[:PORT]` (IPv6 in brackets when a port follows: `user@[fd00::2]:22`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        match self.port {
            Some(p) if self.host.contains(':') => write!(f, "[{}]:{p}", self.host),
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Destination {
    /// Parse `--ssh`. Only names, addresses and a user: nothing ssh could read as an option.
    pub fn parse(s: &str) -> Result<Destination, String> {
        let bad = |why: &str| Err(format!("--ssh {s:?}: {why} (expected [USER@]HOST[:PORT])"));
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, s),
        };
        if let Some(u) = user {
            if !name_ok(u) {
                return bad("the user may only have letters, digits, '.', '_' and '-'");
            }
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else { return bad("unclosed '['") };
            match after {
                "" => (h, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None => return bad("junk after ']'"),
                },
            }
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address: no port.
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let v6 = host.parse::<std::net::Ipv6Addr>().is_ok();
        if !v6 && !name_ok(host) {
            return bad("the host may only have letters, digits, '.', '_' and '-', or be an address");
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return bad("the port must be 1-65535"),
            },
        };
        Ok(Destination { user: user.map(str::to_string), host: host.to_string(), port })
    }
}

/// The ssh command: CONNDOC_SSH_COMMAND split like a shell would (as GIT_SSH_COMMAND), else `ssh`.
pub fn ssh_command_from_env() -> Result<Vec<String>, String> {
    match std::env::var(SSH_COMMAND_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(vec!["ssh".into()]),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{SSH_COMMAND_ENV} is not valid UTF-8")),
        Ok(v) if v.trim().is_empty() => Ok(vec!["ssh".into()]),
        Ok(v) => match shlex::split(&v) {
            Some(words) if !words.is_empty() => Ok(words),
            _ => Err(format!("{SSH_COMMAND_ENV}: cannot split it like a shell would (an unclosed quote?)")),
        },
    }
}

fn quote(s: &str) -> String {
    shlex::try_quote(s).map(|c| c.into_owned()).unwrap_or_else(|_| "''".into())
}

/// The command the remote shell runs: find conndoc, and run it as root when we are root
/// or passwordless sudo allows it (`sudo -n`), else as the login user (fewer checks).
pub(crate) fn remote_command(remote_conndoc: &str, inspect_args: &[String]) -> String {
    let args: Vec<String> = inspect_args.iter().map(|a| quote(a)).collect();
    let args = args.join(" ");
    let bin = quote(remote_conndoc);
    format!(
        "R=$(command -v {bin}) || {{ echo \"conndoc-remote: {bin} not found (PATH=$PATH)\" >&2; exit 127; }}; \
         if [ \"$(id -u)\" = 0 ]; then exec \"$R\" inspect {args}; \
         elif sudo -n true 2>/dev/null; then exec sudo -n \"$R\" inspect {args}; \
         else exec \"$R\" inspect {args}; fi"
    )
}

/// The full argv of the ssh child.
pub(crate) fn ssh_argv(o: &SshOptions, remote: String) -> Vec<String> {
    let program = o.command.first().cloned().unwrap_or_else(|| "ssh".into());
    let is_ssh = std::path::Path::new(&program).file_name().is_some_and(|n| n == "ssh");
    let secs = o.connect_timeout.as_secs().saturating_sub(1).max(1);
    let ours: [String; 5] =
        ["-o".into(), "BatchMode=yes".into(), "-o".into(), format!("ConnectTimeout={secs}"), "-T".into()];
    let mut v = vec![program];
    if is_ssh {
        // Before the user's own arguments: ssh keeps the first value given for an option,
        // and these two are what make it never prompt and never hang.
        v.extend(ours);
        v.extend(o.command.iter().skip(1).cloned());
    } else {
        // A wrapper (`sh -c …`, a script) gets its own arguments first; ours follow, for
        // the ssh it runs.
        v.extend(o.command.iter().skip(1).cloned());
        v.extend(ours);
    }
    if let Some(dir) = &o.control_dir {
        v.extend([
            "-o".into(),
            "ControlMaster=auto".into(),
            "-o".into(),
            format!("ControlPath={}/%C", dir.display()),
            "-o".into(),
            format!("ControlPersist={}", o.control_persist.as_secs().max(1)),
        ]);
    }
    if let Some(p) = o.destination.port {
        v.extend(["-p".into(), p.to_string()]);
    }
    if let Some(u) = &o.destination.user {
        v.extend(["-l".into(), u.clone()]);
    }
    v.push(o.destination.host.clone());
    v.push(remote);
    v
}

/// Why the remote side could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    SshNotFound,
    Refused,
    TimedOut,
    AuthFailed,
    HostKey,
    UnknownHost,
    Unreachable,
    SshFailed,
    ConndocMissing,
    ConndocTooOld,
    SchemaMismatch,
    BadOutput,
    RemoteFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    fn hint(&self, o: &SshOptions) -> String {
        let d = &o.destination;
        let host = &d.host;
        match self.kind {
            FailureKind::SshNotFound => {
                format!("install the OpenSSH client, or point {SSH_COMMAND_ENV} at it")
            }
            FailureKind::Refused => format!("is sshd running on {host} (and on that port)? try: ssh {d} true"),
            FailureKind::TimedOut => format!(
                "nothing answered within {}s: check the address, a firewall in front of sshd, or a jump host ({SSH_COMMAND_ENV}=\"ssh -J JUMP\")",
                o.connect_timeout.as_secs()
            ),
            FailureKind::AuthFailed => format!(
                "conndoc uses BatchMode (no password prompts): load a key into ssh-agent or pass one with {SSH_COMMAND_ENV}=\"ssh -i KEY\"; try: ssh {d} true"
            ),
            FailureKind::HostKey => format!(
                "the host key of {host} is unknown or changed: check it, then `ssh {d} true` once (or fix known_hosts) — conndoc never accepts a key for you"
            ),
            FailureKind::UnknownHost => format!("{host} does not resolve here (or in ~/.ssh/config)"),
            FailureKind::Unreachable => format!("no route to {host} from here; a jump host goes in {SSH_COMMAND_ENV}=\"ssh -J JUMP\""),
            FailureKind::SshFailed => format!("try: ssh {d} true"),
            FailureKind::ConndocMissing => format!(
                "install conndoc on {host} (the same version as here, {}), or name it with --remote-conndoc PATH",
                env!("CARGO_PKG_VERSION")
            ),
            FailureKind::ConndocTooOld | FailureKind::SchemaMismatch => format!(
                "install the same conndoc version on {host} as here ({}); `conndoc inspect --json` there must speak {INSPECT_SCHEMA}",
                env!("CARGO_PKG_VERSION")
            ),
            FailureKind::BadOutput | FailureKind::RemoteFailed => format!(
                "run it there by hand: ssh {d} {} inspect --port PORT --json",
                quote(&o.remote_conndoc)
            ),
        }
    }

    pub fn skipped(&self, o: &SshOptions) -> SkippedCheck {
        SkippedCheck {
            check: CHECK.into(),
            reason: format!("ssh {}: {}", o.destination, self.message),
            hint: Some(self.hint(o)),
        }
    }
}

/// Known lines of ssh's stderr and what they mean.
fn classify_ssh(stderr: &str) -> Option<(FailureKind, String)> {
    const PATTERNS: &[(&str, FailureKind)] = &[
        ("Host key verification failed", FailureKind::HostKey),
        ("No ED25519 host key is known", FailureKind::HostKey),
        ("host key is known", FailureKind::HostKey),
        ("Permission denied", FailureKind::AuthFailed),
        ("Too many authentication failures", FailureKind::AuthFailed),
        ("Connection refused", FailureKind::Refused),
        ("Connection timed out", FailureKind::TimedOut),
        ("timed out", FailureKind::TimedOut),
        ("Could not resolve hostname", FailureKind::UnknownHost),
        ("Name or service not known", FailureKind::UnknownHost),
        ("No route to host", FailureKind::Unreachable),
        ("Network is unreachable", FailureKind::Unreachable),
        ("Connection closed by", FailureKind::SshFailed),
        ("Connection reset", FailureKind::SshFailed),
    ];
    // A changed key prints a banner of '@' before its verdict: name both.
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        let verdict = stderr.lines().find(|l| l.contains("verification failed")).map(bounded).unwrap_or_default();
        return Some((FailureKind::HostKey, bounded(&format!("REMOTE HOST IDENTIFICATION HAS CHANGED! {verdict}"))));
    }
    // The most telling line first.
    for (pat, kind) in PATTERNS {
        if let Some(line) = stderr.lines().find(|l| l.contains(pat)) {
            return Some((*kind, bounded(line)));
        }
    }
    None
}

/// The first line worth quoting: not ssh's chatter.
fn first_relevant(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("Warning: Permanently added")
                && !l.starts_with("Pseudo-terminal")
                && !l.chars().all(|c| c == '@' || c == ' ')
        })
        .map(bounded)
}

/// One line, control characters replaced, at most [`MAX_MESSAGE`] characters.
fn bounded(s: &str) -> String {
    let mut out: String = s.trim().chars().map(|c| if c.is_control() { '?' } else { c }).take(MAX_MESSAGE).collect();
    if s.trim().chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// What stdout's reader thread sends.
enum Out {
    Line(Vec<u8>),
    TooLong,
    Eof,
}

/// One running `ssh … conndoc inspect --bracket`.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Out>,
    stderr: Arc<Mutex<Vec<u8>>>,
    opts: SshOptions,
    started: Instant,
    port: u16,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Never leave the child behind, whatever path ended the session.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The inspect arguments for the remote.
pub(crate) fn inspect_args(port: u16, expect: Option<&str>, netns: Option<&str>, timeout: Duration) -> Vec<String> {
    let mut a = vec!["--bracket".into(), "--json".into(), "--port".into(), port.to_string()];
    if let Some(x) = expect {
        a.extend(["--expect".into(), x.to_string()]);
    }
    if let Some(n) = netns {
        a.extend(["--netns".into(), n.to_string()]);
    }
    a.extend(["--timeout".into(), format!("{}ms", timeout.as_millis().max(1))]);
    a
}

impl Session {
    /// Start ssh (connecting happens in the background while resolution runs here).
    pub fn start(
        o: &SshOptions,
        port: u16,
        expect: Option<&str>,
        netns: Option<&str>,
        timeout: Duration,
    ) -> Result<Session, Failure> {
        let remote = remote_command(&o.remote_conndoc, &inspect_args(port, expect, netns, timeout));
        // A control directory that is not private is not used (a session per check instead).
        let mut o = o.clone();
        if let Some(d) = &o.control_dir {
            if ensure_private_dir(d).is_err() {
                o.control_dir = None;
            }
        }
        let o = &o;
        let argv = ssh_argv(o, remote);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Failure {
            kind: if e.kind() == std::io::ErrorKind::NotFound {
                FailureKind::SshNotFound
            } else {
                FailureKind::SshFailed
            },
            message: format!("cannot run {}: {e}", argv[0]),
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr_pipe = child.stderr.take();
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(mut out) = stdout {
            std::thread::spawn(move || {
                let mut buf: Vec<u8> = Vec::new();
                let mut total = 0usize;
                let mut chunk = [0u8; 64 << 10];
                loop {
                    match out.read(&mut chunk) {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Out::Eof);
                            return;
                        }
                        Ok(n) => {
                            total += n;
                            // Only the new bytes are searched: a long line costs O(n), not O(n²).
                            let mut from = buf.len();
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(i) = buf[from..].iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = buf.drain(..=from + i).collect();
                                from = 0;
                                if tx.send(Out::Line(line)).is_err() {
                                    return;
                                }
                            }
                            if buf.len() > MAX_LINE || total > MAX_STDOUT {
                                let _ = tx.send(Out::TooLong);
                                return;
                            }
                        }
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut err) = stderr_pipe {
            let keep = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8 << 10];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut k = keep.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_STDERR.saturating_sub(k.len());
                    k.extend_from_slice(&chunk[..n.min(room)]);
                }
            });
        }
        Ok(Session { child, stdin, lines: rx, stderr, opts: o.clone(), started: Instant::now(), port })
    }

    /// Wait for the remote's `ready` (the "before" counters are read there).
    pub fn wait_ready(&mut self) -> Result<InspectOutput, Failure> {
        let deadline = self.started + self.opts.connect_timeout;
        let o = self.next_message(deadline)?;
        if o.phase != InspectPhase::Ready {
            return Err(Failure {
                kind: FailureKind::BadOutput,
                message: "the remote answered without the `ready` message of --bracket".into(),
            });
        }
        Ok(o)
    }

    /// Send what the probe did; wait (until `deadline`) for the remote's result.
    pub fn finish(&mut self, follow: &InspectFollowUp, deadline: Instant) -> Result<InspectOutput, Failure> {
        let mut line = serde_json::to_vec(follow).unwrap_or_default();
        line.push(b'\n');
        if let Some(mut stdin) = self.stdin.take() {
            // A remote that died shows as EOF below, with its message.
            let _ = stdin.write_all(&line).and_then(|_| stdin.flush());
        }
        let o = self.next_message(deadline)?;
        if o.phase != InspectPhase::Result {
            return Err(Failure { kind: FailureKind::BadOutput, message: "the remote sent a second `ready`".into() });
        }
        Ok(o)
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The next JSON line, or why there is none.
    fn next_message(&mut self, deadline: Instant) -> Result<InspectOutput, Failure> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Out::Line(l)) => {
                    let text = String::from_utf8_lossy(&l);
                    let text = text.trim();
                    // Login banners, motd lines from a shell profile: not ours.
                    if !text.starts_with('{') {
                        continue;
                    }
                    return parse_message(text, self.port);
                }
                Ok(Out::TooLong) => {
                    self.kill();
                    return Err(Failure {
                        kind: FailureKind::BadOutput,
                        message: format!(
                            "the remote printed more than {} MiB in one line (or {} MiB in all); ignored, ssh was stopped",
                            MAX_LINE >> 20,
                            MAX_STDOUT >> 20
                        ),
                    });
                }
                Ok(Out::Eof) | Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    // What ssh said so far is the best explanation of the wait.
                    let said = self.stderr_text();
                    let message = match classify_ssh(&said).map(|c| c.1).or_else(|| first_relevant(&said)) {
                        Some(m) => format!("no answer within {:.1}s ({m}); ssh was stopped", self.elapsed()),
                        None => format!("no answer within {:.1}s; ssh was stopped", self.elapsed()),
                    };
                    return Err(Failure { kind: FailureKind::TimedOut, message });
                }
            }
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// stdout ended early: why, from ssh's exit status and stderr.
    fn ended(&mut self) -> Failure {
        // stdout is closed; the process exits at once (bounded anyway).
        let until = Instant::now() + Duration::from_secs(1);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    self.kill();
                    break None;
                }
            }
        };
        // The stderr reader may still be copying the last bytes.
        std::thread::sleep(Duration::from_millis(20));
        let said = self.stderr_text();
        let code = status.and_then(|s| s.code());
        if code == Some(127) || said.contains("conndoc-remote:") {
            let m = said.lines().find(|l| l.contains("conndoc-remote:")).map(bounded);
            return Failure {
                kind: FailureKind::ConndocMissing,
                message: m
                    .unwrap_or_else(|| format!("{} was not found on the remote (exit 127)", self.opts.remote_conndoc)),
            };
        }
        if code == Some(255) {
            if let Some((kind, message)) = classify_ssh(&said) {
                return Failure { kind, message };
            }
        }
        if code == Some(2)
            && (said.contains("unrecognized subcommand")
                || said.contains("unexpected argument")
                || said.contains("inspect"))
        {
            return Failure {
                kind: FailureKind::ConndocTooOld,
                message: format!(
                    "the remote conndoc does not know `inspect --bracket` ({})",
                    first_relevant(&said).unwrap_or_default()
                ),
            };
        }
        let what = match code {
            Some(c) => format!("exit status {c}"),
            None => "killed".into(),
        };
        Failure {
            kind: if code == Some(255) { FailureKind::SshFailed } else { FailureKind::RemoteFailed },
            message: match first_relevant(&said) {
                Some(m) => format!("{m} ({what})"),
                None => format!("ended without an answer ({what})"),
            },
        }
    }
}

/// One message of the remote, checked against the contract.
pub(crate) fn parse_message(text: &str, port: u16) -> Result<InspectOutput, Failure> {
    let bad = |m: String| Failure { kind: FailureKind::BadOutput, message: m };
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not a conndoc inspect message: {e}")))?;
    match v.get("schema").and_then(|s| s.as_str()) {
        Some(INSPECT_SCHEMA) => {}
        Some(other) => {
            let version = v.get("version").and_then(|s| s.as_str()).map(bounded).unwrap_or_else(|| "?".into());
            return Err(Failure {
                kind: FailureKind::SchemaMismatch,
                message: format!(
                    "the remote conndoc {version} speaks {:?}, this one {INSPECT_SCHEMA}: its facts are not read",
                    bounded(other)
                ),
            });
        }
        None => return Err(bad("a JSON line without a `schema` field".into())),
    }
    let o: InspectOutput =
        serde_json::from_value(v).map_err(|e| bad(format!("a {INSPECT_SCHEMA} message that does not parse: {e}")))?;
    if o.port.get() != port {
        return Err(bad(format!("the remote inspected port {}, not {port}", o.port)));
    }
    Ok(o)
}

/// Replace a secret wherever it appears and re-redact command lines, in every string of
/// the remote's answer: it is redacted like local output, whoever wrote it.
pub(crate) fn redact_value(v: &mut serde_json::Value, secrets: &[&str]) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                if s.contains(secret) {
                    *s = s.replace(secret, REDACTED);
                }
            }
            if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                *s = s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '?' } else { c }).collect();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact_value(x, secrets)),
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "cmdline" {
                    if let Value::String(s) = x {
                        let words: Vec<String> = s.split_whitespace().map(str::to_string).collect();
                        *s = conndoc_host::redact::redact_cmdline(&words);
                    }
                }
                redact_value(x, secrets);
            }
        }
        _ => {}
    }
}

/// What the firewall stage gets from the remote.
pub(crate) enum RemoteFirewall {
    Read(Box<HostFirewall>),
    /// Not read there; the check to record (None: already recorded).
    Skipped(Option<SkippedCheck>),
}

/// The remote side of one diagnosis: started at the beginning of the run.
pub(crate) enum Remote {
    Running(Box<Session>),
    Failed(Failure),
}

pub(crate) fn start(ev: &Evidence, o: &SshOptions, timeout: Duration) -> Remote {
    let port = ev.target.port.get();
    let expect = ev.options.expect_process.as_deref();
    let netns = ev.options.netns.as_deref();
    match Session::start(o, port, expect, netns, timeout) {
        Ok(s) => Remote::Running(Box::new(s)),
        Err(f) => Remote::Failed(f),
    }
}

/// Before the probe: wait until the remote has read its "before" counters.
pub(crate) fn ready(r: Remote) -> Remote {
    match r {
        Remote::Running(mut s) => match s.wait_ready() {
            Ok(_) => Remote::Running(s),
            Err(f) => Remote::Failed(f),
        },
        f => f,
    }
}

/// After the probe: the remote's facts join the evidence (or the failure is recorded).
pub(crate) fn end(r: Remote, ev: &mut Evidence, o: &SshOptions, timeout: Duration) -> RemoteFirewall {
    let mut session = match r {
        Remote::Running(s) => s,
        Remote::Failed(f) => return failed(ev, o, &f),
    };
    let flows = crate::firewall::flows(ev);
    let redis_info = ev.protocol.as_ref().and_then(|p| p.probes.iter().find_map(|pr| pr.redis.as_ref()?.info.clone()));
    let follow = InspectFollowUp {
        flows: flows.iter().map(|(d, s, p)| ProbeFlow { destination: *d, source: *s, source_port: *p }).collect(),
        thorough: ev.probes.is_empty() || ev.probes.iter().any(|p| !p.ok()),
        firewall: ev.probes.iter().any(|p| !p.ok()),
        owner_hint: redis_info.as_ref().and_then(|i| i.process_id).into_iter().collect(),
        redis_config_file: redis_info.and_then(|i| i.config_file),
    };
    // The remote bounds each of its reads by the same timeout; this bounds the whole.
    let deadline = Instant::now() + timeout.max(Duration::from_secs(2));
    let result = session.finish(&follow, deadline);
    drop(session);
    let out = match result {
        Ok(out) => out,
        Err(f) => return failed(ev, o, &f),
    };
    join(ev, o, out)
}

fn failed(ev: &mut Evidence, o: &SshOptions, f: &Failure) -> RemoteFirewall {
    ev.skipped.push(f.skipped(o));
    RemoteFirewall::Skipped(Some(SkippedCheck {
        check: "firewall of the target host".into(),
        reason: format!("not read: the server-side inspection over ssh to {} failed", o.destination),
        hint: None,
    }))
}

/// Redact and join the remote's answer to the evidence.
pub(crate) fn join(ev: &mut Evidence, o: &SshOptions, out: InspectOutput) -> RemoteFirewall {
    let out = match serde_json::to_value(&out) {
        Ok(mut v) => {
            let pw = ev.target.password.as_ref().map(|p| p.expose().to_string());
            let secrets: Vec<&str> = pw.as_deref().into_iter().collect();
            redact_value(&mut v, &secrets);
            match serde_json::from_value::<InspectOutput>(v) {
                Ok(o) => o,
                Err(e) => {
                    return failed(
                        ev,
                        o,
                        &Failure { kind: FailureKind::BadOutput, message: format!("after redaction: {e}") },
                    )
                }
            }
        }
        Err(e) => return failed(ev, o, &Failure { kind: FailureKind::BadOutput, message: e.to_string() }),
    };
    let dest = o.destination.to_string();
    for mut s in out.skipped {
        s.reason = format!("on {dest}: {}", s.reason);
        ev.skipped.push(s);
    }
    if !out.privileges.root() {
        ev.skipped.push(SkippedCheck {
            check: "root on the server".into(),
            reason: format!(
                "conndoc inspect ran as uid {} on {dest} (not root, and `sudo -n` was not allowed): checks that need root there were skipped",
                out.privileges.uid
            ),
            hint: Some(format!(
                "ssh as root, or let {} run `sudo -n {}` without a password (a sudoers NOPASSWD rule for that one binary)",
                o.destination.user.as_deref().unwrap_or("the login user"),
                o.remote_conndoc
            )),
        });
    }
    if let Some(mut h) = out.host {
        let netns = h.inspected.as_ref().and_then(|i| i.netns.clone());
        let inode = h.inspected.as_ref().and_then(|i| i.netns_inode);
        h.inspected = Some(Inspected {
            scope: InspectScope::Ssh,
            netns,
            netns_inode: inode,
            destination: Some(dest.clone()),
            remote_version: Some(out.version.clone()),
            remote_hostname: Some(out.hostname.clone()).filter(|h| !h.is_empty()),
        });
        ev.host = Some(h);
    }
    if let Some(r) = out.redis_conf {
        ev.protocol.get_or_insert_with(Default::default).redis_conf = Some(r);
    }
    match out.firewall {
        Some(mut fw) => {
            fw.ssh = Some(dest);
            RemoteFirewall::Read(Box::new(fw))
        }
        // The remote recorded why (it is in `skipped` above), or was not asked.
        None => RemoteFirewall::Skipped(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = Destination::parse("root@10.0.0.2:2222").unwrap();
        assert_eq!((d.user.as_deref(), d.host.as_str(), d.port), (Some("root"), "10.0.0.2", Some(2222)));
        assert_eq!(d.to_string(), "root@10.0.0.2:2222");
        let d = Destination::parse("db1").unwrap();
        assert_eq!((d.user, d.host.as_str(), d.port), (None, "db1", None));
        let d = Destination::parse("u@[fd00::2]:22").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("fd00::2", Some(22)));
        assert_eq!(d.to_string(), "u@[fd00::2]:22");
        assert_eq!(Destination::parse("fd00::2").unwrap().host, "fd00::2");
        for bad in ["-oProxyCommand=x", "u@-x", "a b", "h:0", "h:99999", "[::1", "x;rm", "", "u@"] {
            assert!(Destination::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn argv_puts_batch_mode_first_and_no_secret() {
        let o = SshOptions {
            destination: Destination::parse("root@10.0.0.2:2222").unwrap(),
            command: vec!["ssh".into(), "-F".into(), "/x/cfg".into(), "-o".into(), "BatchMode=no".into()],
            remote_conndoc: "/opt/my conndoc".into(),
            connect_timeout: Duration::from_secs(5),
            control_dir: Some("/run/c".into()),
            control_persist: Duration::from_secs(60),
        };
        let remote =
            remote_command(&o.remote_conndoc, &inspect_args(6379, Some("redis-server"), None, Duration::from_secs(3)));
        let v = ssh_argv(&o, remote);
        assert_eq!(&v[..5], ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=4"]);
        let user_batch = v.iter().position(|a| a == "BatchMode=no").unwrap();
        assert!(user_batch > 2, "ours first: ssh keeps the first value");
        assert!(v.contains(&"ControlPath=/run/c/%C".to_string()));
        assert!(v.contains(&"ControlPersist=60".to_string()));
        assert_eq!(v[v.len() - 2], "10.0.0.2");
        let cmd = v.last().unwrap();
        assert!(cmd.contains("command -v '/opt/my conndoc'"), "{cmd}");
        assert!(cmd.contains("sudo -n"), "{cmd}");
        assert!(cmd.contains("inspect --bracket --json --port 6379 --expect redis-server --timeout 3000ms"), "{cmd}");
        // A wrapper keeps its own arguments first.
        let wrapped =
            SshOptions { command: vec!["/usr/local/bin/ssh-wrap".into(), "--via".into(), "x".into()], ..o.clone() };
        let w = ssh_argv(&wrapped, "true".into());
        assert_eq!(&w[..4], ["/usr/local/bin/ssh-wrap", "--via", "x", "-o"]);
    }

    #[test]
    fn ssh_messages_are_classified() {
        let cases = [
            ("ssh: connect to host 10.0.0.2 port 22: Connection refused\r\n", FailureKind::Refused),
            ("ssh: connect to host 10.0.0.2 port 22: Connection timed out\n", FailureKind::TimedOut),
            ("root@10.0.0.2: Permission denied (publickey).\n", FailureKind::AuthFailed),
            ("Host key verification failed.\n", FailureKind::HostKey),
            (
                "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n",
                FailureKind::HostKey,
            ),
            ("ssh: Could not resolve hostname nope: Name or service not known\n", FailureKind::UnknownHost),
        ];
        for (text, kind) in cases {
            let (k, m) = classify_ssh(text).unwrap();
            assert_eq!(k, kind, "{text}");
            assert!(!m.contains('\r') && !m.is_empty());
        }
        assert_eq!(
            first_relevant("Warning: Permanently added 'x' (ED25519) to the list of known hosts.\nboom\n").as_deref(),
            Some("boom")
        );
        let long = "x".repeat(5000);
        assert!(bounded(&long).chars().count() <= MAX_MESSAGE + 1);
        assert_eq!(bounded("a\x1b[31mb"), "a?[31mb");
    }

    #[test]
    fn control_dir_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = conndoc_testsupport::TempDir::new("ctl-test");
        let d = base.join("ctl");
        ensure_private_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        ensure_private_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ensure_private_dir(&d).unwrap_err().contains("not private"));
        let link = base.join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(ensure_private_dir(&link).unwrap_err().contains("symlink"));
    }

    #[test]
    fn messages_are_parsed_strictly() {
        assert_eq!(parse_message("{\"x\":1}", 80).unwrap_err().kind, FailureKind::BadOutput);
        assert_eq!(parse_message("not json", 80).unwrap_err().kind, FailureKind::BadOutput);
        let f = parse_message(r#"{"schema":"conndoc.inspect/v9","version":"9.0"}"#, 80).unwrap_err();
        assert_eq!(f.kind, FailureKind::SchemaMismatch);
        assert!(f.message.contains("v9") && f.message.contains("9.0"), "{}", f.message);
        let ok = r#"{"schema":"conndoc.inspect/v1","phase":"ready","version":"0.1.0","port":80}"#;
        assert_eq!(parse_message(ok, 80).unwrap().phase, InspectPhase::Ready);
        assert_eq!(parse_message(ok, 81).unwrap_err().kind, FailureKind::BadOutput);
        // Wrong types inside a right schema: refused, not half-read.
        let bad =
            r#"{"schema":"conndoc.inspect/v1","phase":"result","version":"0.1.0","port":80,"host":{"listeners":7}}"#;
        assert_eq!(parse_message(bad, 80).unwrap_err().kind, FailureKind::BadOutput);
        // Deep nesting is refused by the parser's recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_message(&deep, 80).unwrap_err().kind, FailureKind::BadOutput);
    }

    /// The remote's answer joins the evidence: scope ssh, its skipped checks say where, a
    /// non-root inspection is a skipped check of its own, the password is gone.
    #[test]
    fn an_answer_joins_the_evidence() {
        let t = conndoc_facts::Target::parse("redis://:Pw-123@10.0.0.2:6379").unwrap();
        let mut ev = crate::new_evidence(t, &crate::Options::default(), Default::default());
        let o = SshOptions {
            destination: Destination::parse("admin@10.0.0.2").unwrap(),
            command: vec!["ssh".into()],
            remote_conndoc: "conndoc".into(),
            connect_timeout: Duration::from_secs(5),
            control_dir: None,
            control_persist: Duration::ZERO,
        };
        let mut out = InspectOutput::new(InspectPhase::Result, conndoc_facts::Port::new(6379).unwrap());
        out.version = "0.1.0".into();
        out.privileges.uid = 1000;
        out.skipped.push(SkippedCheck { check: "kernel log".into(), reason: "EPERM".into(), hint: None });
        let mut host = conndoc_facts::host::HostFacts::default();
        host.unavailable.push("journal said Pw-123".into());
        out.host = Some(host);
        let fw = join(&mut ev, &o, out);
        assert!(matches!(fw, RemoteFirewall::Skipped(None)));
        let h = ev.host.as_ref().unwrap();
        let i = h.inspected.as_ref().unwrap();
        assert_eq!((i.scope, i.destination.as_deref()), (InspectScope::Ssh, Some("admin@10.0.0.2")));
        assert_eq!(h.unavailable, ["journal said <redacted>"]);
        assert!(ev.skipped.iter().any(|s| s.check == "kernel log" && s.reason == "on admin@10.0.0.2: EPERM"));
        let root = ev.skipped.iter().find(|s| s.check == "root on the server").expect("non-root is said");
        assert!(root.reason.contains("uid 1000") && root.hint.as_deref().unwrap().contains("sudo -n conndoc"));
    }

    /// A fake `ssh` (a script named ssh that ignores its arguments) plays hostile remotes:
    /// the session machinery (limits, deadlines, exit statuses) without an sshd.
    fn fake_remote(name: &str, script: &str) -> Result<InspectOutput, Failure> {
        use std::os::unix::fs::PermissionsExt;
        let dir = conndoc_testsupport::TempDir::new(&format!("fake-ssh-{name}"));
        let ssh = dir.join("ssh");
        std::fs::write(&ssh, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        let o = SshOptions {
            destination: Destination::parse("h").unwrap(),
            command: vec![ssh.display().to_string()],
            remote_conndoc: "conndoc".into(),
            connect_timeout: Duration::from_secs(3),
            control_dir: None,
            control_persist: Duration::ZERO,
        };
        let start = Instant::now();
        let r = Session::start(&o, 7000, None, None, Duration::from_secs(1)).and_then(|mut s| s.wait_ready());
        assert!(start.elapsed() < Duration::from_secs(5), "{name}: took {:?}", start.elapsed());
        r
    }

    #[test]
    fn hostile_remotes_are_bounded() {
        let f = fake_remote("big", "head -c 5242880 /dev/zero | tr '\\000' x; exec sleep 30").unwrap_err();
        assert_eq!(f.kind, FailureKind::BadOutput);
        assert!(f.message.contains("in one line"), "{}", f.message);
        let f = fake_remote("garbage", "echo 'Welcome'; echo '{not json'; exec sleep 30").unwrap_err();
        assert_eq!(f.kind, FailureKind::BadOutput, "{}", f.message);
        let f = fake_remote("v2", "echo '{\"schema\":\"conndoc.inspect/v2\",\"version\":\"2.0\"}'").unwrap_err();
        assert_eq!(f.kind, FailureKind::SchemaMismatch, "{}", f.message);
        let f =
            fake_remote("missing", "echo 'conndoc-remote: conndoc not found (PATH=/bin)' >&2; exit 127").unwrap_err();
        assert_eq!(f.kind, FailureKind::ConndocMissing, "{}", f.message);
        let f = fake_remote("refused", "echo 'ssh: connect to host h port 22: Connection refused' >&2; exit 255")
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Refused, "{}", f.message);
        let f = fake_remote("silent", "exec sleep 30").unwrap_err();
        assert_eq!(f.kind, FailureKind::TimedOut, "{}", f.message);
        let ok = fake_remote(
            "ready",
            "echo '{\"schema\":\"conndoc.inspect/v1\",\"phase\":\"ready\",\"version\":\"0.1.0\",\"port\":7000}'; exec sleep 30",
        );
        assert_eq!(ok.unwrap().phase, InspectPhase::Ready);
    }

    #[test]
    fn remote_strings_are_redacted() {
        let mut v = serde_json::json!({
            "a": ["the pw is hunter2!", {"cmdline": "redis-server --requirepass other --port 1"}],
            "b": "esc\u{1b}[2J"
        });
        redact_value(&mut v, &["hunter2"]);
        let s = v.to_string();
        assert!(!s.contains("hunter2") && !s.contains("other"), "{s}");
        assert!(s.contains("<redacted>"));
        assert!(!s.contains('\u{1b}'));
    }
}
