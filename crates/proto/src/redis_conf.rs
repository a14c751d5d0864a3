//! redis.conf: a parser that follows `include`, and a lint of the directives that decide
//! who may connect (bind, protected-mode, requirepass, port) and how many (maxclients
//! against the fd limit, tcp-backlog against somaxconn).
//!
//! No value of `requirepass`, `masterauth` or a `user` line ever leaves this module: errors
//! name the file and line, never the line's text.

use conndoc_facts::protocol::{LintProblem, LintReport};
use std::path::{Path, PathBuf};

const MAX_INCLUDE_DEPTH: usize = 16;
/// Redis keeps this many descriptors for itself beyond maxclients (CONFIG_MIN_RESERVED_FDS).
pub const RESERVED_FDS: u64 = 32;
pub const DEFAULT_MAXCLIENTS: u64 = 10_000;
pub const DEFAULT_TCP_BACKLOG: u64 = 511;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// One line naming the file and why (missing, a FIFO, a device, over the size limit).
    #[error("{error}")]
    Read { path: String, error: conndoc_files::ReadError },
    #[error("{file}:{line}: {reason}")]
    Malformed { file: String, line: u32, reason: String },
    #[error("{file}:{line}: include nested deeper than {MAX_INCLUDE_DEPTH} (an include loop?)")]
    IncludeDepth { file: String, line: u32 },
    #[error("{file}: the includes add up to more than {MAX_FILES} files, {} MiB or {MAX_DIRECTIVES} directives", MAX_TOTAL_BYTES >> 20)]
    TooMuch { file: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub file: String,
    pub line: u32,
    /// Lower-cased.
    pub name: String,
    pub args: Vec<String>,
}

/// Split a line the way Redis does (sdssplitargs): words, "double quotes" with `\n`, `\xHH`
/// escapes, 'single quotes' with `\'`. A closing quote must be followed by a space or the end.
pub fn split_args(line: &str) -> Result<Vec<String>, &'static str> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let quote = match b[i] {
            b'"' | b'\'' => {
                i += 1;
                Some(b[i - 1])
            }
            _ => None,
        };
        loop {
            if i >= b.len() {
                if quote.is_some() {
                    return Err("unbalanced quotes");
                }
                break;
            }
            let c = b[i];
            match quote {
                None if c.is_ascii_whitespace() => break,
                None => cur.push(c),
                Some(b'"') if c == b'\\' && i + 1 < b.len() => {
                    i += 1;
                    match b[i] {
                        b'n' => cur.push(b'\n'),
                        b'r' => cur.push(b'\r'),
                        b't' => cur.push(b'\t'),
                        b'b' => cur.push(8),
                        b'a' => cur.push(7),
                        b'x' if i + 2 < b.len() + 1
                            && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
                        {
                            let h = std::str::from_utf8(&b[i + 1..i + 3]).map_err(|_| "bad escape")?;
                            cur.push(u8::from_str_radix(h, 16).map_err(|_| "bad escape")?);
                            i += 2;
                        }
                        other => cur.push(other),
                    }
                }
                Some(b'\'') if c == b'\\' && b.get(i + 1) == Some(&b'\'') => {
                    i += 1;
                    cur.push(b'\'');
                }
                Some(q) if c == q => {
                    if b.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                        return Err("closing quote must be followed by a space");
                    }
                    i += 1;
                    break;
                }
                Some(_) => cur.push(c),
            }
            i += 1;
        }
        out.push(String::from_utf8_lossy(&cur).into_owned());
    }
}

/// Bounds on one lint run, whatever the include graph looks like.
const MAX_FILES: usize = 1_000;
const MAX_TOTAL_BYTES: u64 = 64 << 20;
const MAX_DIRECTIVES: usize = 200_000;

/// Read `path` and every file it includes, in order. `files` receives each path read.
///
/// Each file is read and parsed once, so a fan-out of includes costs one pass per file, not
/// one per path through the graph. Including a file already read again still re-applies it,
/// as Redis does (`include b.conf`, `bind 0.0.0.0`, `include b.conf` binds as b.conf says):
/// what is appended then is the last directive of each kind from that file and its includes
/// (the lint reads only the last one of each), so the work stays bounded by files × kinds.
/// A file including itself, directly or through others, is an include loop (an error, as
/// Redis would recurse forever).
pub fn load(path: &Path) -> Result<(Vec<Directive>, Vec<String>), ConfError> {
    let mut l = Loader::default();
    l.load_into(path, 0)?;
    Ok((l.out, l.files))
}

#[derive(Default)]
struct Loader {
    out: Vec<Directive>,
    files: Vec<String>,
    /// Canonical paths already read, each with the last directive of each kind it and its
    /// includes set (what including it again re-applies).
    seen: std::collections::HashMap<PathBuf, Vec<Directive>>,
    /// Canonical paths of the files being read (the include stack).
    stack: Vec<PathBuf>,
    bytes: u64,
}

impl Loader {
    fn load_into(&mut self, path: &Path, depth: usize) -> Result<(), ConfError> {
        let file = path.display().to_string();
        let bytes = conndoc_files::read(path, conndoc_files::limit::REDIS_CONF)
            .map_err(|e| ConfError::Read { path: file.clone(), error: e })?;
        let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.bytes += bytes.len() as u64;
        if self.files.len() >= MAX_FILES || self.bytes > MAX_TOTAL_BYTES {
            return Err(ConfError::TooMuch { file });
        }
        self.files.push(file.clone());
        self.stack.push(canon.clone());
        let start = self.out.len();
        let text = String::from_utf8_lossy(&bytes);
        for (n, raw) in text.lines().enumerate() {
            let line = (n + 1) as u32;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let mal = |reason: &str| ConfError::Malformed { file: file.clone(), line, reason: reason.into() };
            let mut args = split_args(t).map_err(mal)?;
            if args.is_empty() {
                continue;
            }
            let name = args.remove(0).to_ascii_lowercase();
            if name == "include" {
                if args.len() != 1 {
                    return Err(mal("include takes one path"));
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(ConfError::IncludeDepth { file, line });
                }
                let targets = resolve_include(path, &args[0]).map_err(|e| ConfError::Malformed {
                    file: file.clone(),
                    line,
                    reason: format!("include {}: {e}", args[0]),
                })?;
                for t in targets {
                    let c = std::fs::canonicalize(&t).unwrap_or_else(|_| t.clone());
                    if self.stack.contains(&c) {
                        return Err(ConfError::IncludeDepth { file, line });
                    }
                    if let Some(again) = self.seen.get(&c) {
                        if self.out.len() + again.len() > MAX_DIRECTIVES {
                            return Err(ConfError::TooMuch { file });
                        }
                        self.out.extend(again.iter().cloned());
                        continue;
                    }
                    self.load_into(&t, depth + 1)?;
                }
                continue;
            }
            if self.out.len() >= MAX_DIRECTIVES {
                return Err(ConfError::TooMuch { file });
            }
            self.out.push(Directive { file: file.clone(), line, name, args });
        }
        self.stack.pop();
        let summary = last_of_each_kind(&self.out[start..]);
        self.seen.insert(canon, summary);
        Ok(())
    }
}

/// The last directive of each kind, in their order: all the lint reads (`last`; for `user`,
/// the last line of each user).
fn last_of_each_kind(ds: &[Directive]) -> Vec<Directive> {
    let mut kinds = std::collections::HashSet::new();
    let mut keep: Vec<Directive> = ds
        .iter()
        .rev()
        .filter(|d| {
            let user = if d.name == "user" { d.args.first().map(String::as_str) } else { None };
            kinds.insert((d.name.as_str(), user))
        })
        .cloned()
        .collect();
    keep.reverse();
    keep
}

/// Redis resolves a relative include against its working directory; a lint run elsewhere
/// also tries the including file's directory. A `*` in the file name is a glob (Redis 7).
fn resolve_include(from: &Path, arg: &str) -> Result<Vec<PathBuf>, String> {
    let p = Path::new(arg);
    let candidates: Vec<PathBuf> = if p.is_absolute() {
        vec![p.to_path_buf()]
    } else {
        let mut v = vec![p.to_path_buf()];
        if let Some(dir) = from.parent() {
            v.push(dir.join(p));
        }
        v
    };
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.contains('*') {
        for c in &candidates {
            let dir = c.parent().unwrap_or(Path::new("."));
            let Ok(rd) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) else {
                continue;
            };
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect();
            found.sort();
            return Ok(found);
        }
        return Ok(Vec::new());
    }
    candidates.into_iter().find(|c| c.is_file()).map(|c| vec![c]).ok_or_else(|| "no such file".to_string())
}

fn glob_match(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else { return false };
            rest = &rest[pos + part.len()..];
        }
    }
    rest.is_empty()
}

/// What the limits are compared against, when known, with a phrase saying where each came from.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub fd_limit: Option<(u64, String)>,
    pub somaxconn: Option<(u64, String)>,
}

fn last<'a>(ds: &'a [Directive], name: &str) -> Option<&'a Directive> {
    ds.iter().rev().find(|d| d.name == name)
}

fn one_arg(d: &Directive) -> Result<&str, ConfError> {
    match d.args.as_slice() {
        [a] => Ok(a),
        _ => Err(ConfError::Malformed {
            file: d.file.clone(),
            line: d.line,
            reason: format!("{} takes exactly one argument", d.name),
        }),
    }
}

fn number(d: &Directive, max: u64) -> Result<u64, ConfError> {
    let a = one_arg(d)?;
    a.parse::<u64>().ok().filter(|v| *v <= max).ok_or_else(|| ConfError::Malformed {
        file: d.file.clone(),
        line: d.line,
        reason: format!("{} expects a number from 0 to {max}, got {a:?}", d.name),
    })
}

fn yes_no(d: &Directive) -> Result<bool, ConfError> {
    match one_arg(d)?.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(ConfError::Malformed {
            file: d.file.clone(),
            line: d.line,
            reason: format!("{} expects yes or no, got {other:?}", d.name),
        }),
    }
}

fn is_loopback(a: &str) -> bool {
    let a = a.trim_start_matches('-');
    a == "localhost" || a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_wildcard(a: &str) -> bool {
    matches!(a.trim_start_matches('-'), "*" | "0.0.0.0" | "::" | "::*")
}

/// Lint a redis.conf and its includes.
pub fn lint(path: &Path, limits: &Limits) -> Result<LintReport, ConfError> {
    let (ds, files) = load(path)?;
    lint_directives(&path.display().to_string(), files, &ds, limits)
}

/// The lint over parsed directives (pure, so it is tested without files).
pub fn lint_directives(
    path: &str,
    files: Vec<String>,
    ds: &[Directive],
    limits: &Limits,
) -> Result<LintReport, ConfError> {
    let mut r = LintReport { path: path.to_string(), files, ..Default::default() };
    let mut problem = |code: &str, d: Option<&Directive>, directive: &str, message: String, fix: String| {
        r.problems.push(LintProblem {
            code: code.into(),
            file: d.map(|d| d.file.clone()).unwrap_or_else(|| path.to_string()),
            line: d.map(|d| d.line).unwrap_or(0),
            directive: directive.into(),
            message,
            fix,
        });
    };

    let port_d = last(ds, "port");
    let port = match port_d {
        Some(d) => number(d, 65535)?,
        None => 6379,
    };
    let bind_d = last(ds, "bind");
    if let Some(d) = bind_d {
        if d.args.is_empty() {
            return Err(ConfError::Malformed {
                file: d.file.clone(),
                line: d.line,
                reason: "bind needs an address".into(),
            });
        }
    }
    let bind: Vec<String> = bind_d.map(|d| d.args.clone()).unwrap_or_default();
    let pm_d = last(ds, "protected-mode");
    let protected = match pm_d {
        Some(d) => yes_no(d)?,
        None => true,
    };
    let rp_d = last(ds, "requirepass");
    let requirepass = match rp_d {
        Some(d) => !one_arg(d)?.is_empty(),
        None => false,
    };
    // ACL: a `user default` line with a password (>pw or #hash) and without nopass, or an aclfile.
    let default_user = ds.iter().rev().find(|d| d.name == "user" && d.args.first().is_some_and(|u| u == "default"));
    let acl_password = default_user.is_some_and(|d| {
        d.args.iter().any(|a| a.starts_with('>') || a.starts_with('#')) && !d.args.iter().any(|a| a == "nopass")
    });
    let default_nopass = default_user.is_some_and(|d| d.args.iter().any(|a| a == "nopass"));
    let default_off = default_user.is_some_and(|d| d.args.iter().any(|a| a == "off"));
    let aclfile = last(ds, "aclfile").is_some();
    let has_password = (requirepass && !default_nopass) || acl_password || default_off || aclfile;
    let maxclients_d = last(ds, "maxclients");
    let maxclients = match maxclients_d {
        Some(d) => number(d, u32::MAX as u64)?,
        None => DEFAULT_MAXCLIENTS,
    };
    let backlog_d = last(ds, "tcp-backlog");
    let backlog = match backlog_d {
        Some(d) => number(d, u32::MAX as u64)?,
        None => DEFAULT_TCP_BACKLOG,
    };

    r.effective.insert("port".into(), port.to_string());
    r.effective.insert("bind".into(), if bind.is_empty() { "(all interfaces)".into() } else { bind.join(" ") });
    r.effective.insert("protected-mode".into(), if protected { "yes" } else { "no" }.into());
    r.effective
        .insert("requirepass".into(), if requirepass { conndoc_facts::REDACTED.into() } else { "(not set)".into() });
    r.effective.insert("maxclients".into(), maxclients.to_string());
    r.effective.insert("tcp-backlog".into(), backlog.to_string());

    let loopback_only = !bind.is_empty() && bind.iter().all(|a| is_loopback(a));
    let all_interfaces = bind.is_empty() || bind.iter().any(|a| is_wildcard(a));
    let where_bind = bind_d.map(|d| format!("{}:{}", d.file, d.line)).unwrap_or_else(|| "no bind line".into());

    if port == 0 {
        problem(
            "tcp-disabled",
            port_d,
            "port",
            "port 0: Redis does not listen on TCP at all, so every TCP client is refused".into(),
            "Set `port 6379` (or the port clients use), or have clients use the unixsocket".into(),
        );
    }
    if !has_password && !loopback_only {
        let d = if default_nopass { default_user } else { rp_d.or(default_user) };
        if protected {
            problem(
                "protected-mode-blocks-remote",
                pm_d.or(bind_d),
                "protected-mode",
                format!(
                    "no password is set and Redis listens beyond loopback ({where_bind}): protected mode answers every remote client with -DENIED"
                ),
                "Set a password (`requirepass` or an ACL user), or bind only the addresses clients use, then restart".into(),
            );
        } else {
            problem(
                "open-to-network",
                pm_d,
                "protected-mode",
                "protected-mode no without a password: anyone who reaches the port can read, write and reconfigure Redis".into(),
                "Set a password (`requirepass` or an ACL user) and `protected-mode yes`".into(),
            );
        }
        problem(
            "no-password",
            d,
            "requirepass",
            if default_nopass {
                "the default user has `nopass`: connections need no password".into()
            } else {
                "no requirepass and no ACL password for the default user".into()
            },
            "Add `requirepass <a long random secret>` (or `user default on >secret ~* &* +@all`)".into(),
        );
    }
    if all_interfaces && !has_password {
        problem(
            "bind-all-interfaces",
            bind_d,
            "bind",
            format!("Redis listens on every interface ({})", r.effective["bind"]),
            "Bind only the addresses clients use, e.g. `bind 127.0.0.1 10.0.0.5`".into(),
        );
    }
    if let Some((limit, from)) = &limits.fd_limit {
        if maxclients + RESERVED_FDS > *limit {
            problem(
                "maxclients-above-fd-limit",
                maxclients_d,
                "maxclients",
                format!(
                    "maxclients {maxclients} needs {} file descriptors but the limit is {limit} ({from}): Redis lowers maxclients to {} at start",
                    maxclients + RESERVED_FDS,
                    limit.saturating_sub(RESERVED_FDS)
                ),
                format!(
                    "Raise the limit to at least {} (systemd: LimitNOFILE= in the redis unit; else ulimit -n), or lower maxclients",
                    maxclients + RESERVED_FDS
                ),
            );
        }
    }
    if let Some((somaxconn, from)) = &limits.somaxconn {
        if backlog > *somaxconn {
            problem(
                "tcp-backlog-above-somaxconn",
                backlog_d,
                "tcp-backlog",
                format!("tcp-backlog {backlog} is above net.core.somaxconn {somaxconn} ({from}): the kernel silently caps the accept queue at {somaxconn}"),
                format!("Raise net.core.somaxconn to at least {backlog} (sysctl -w net.core.somaxconn={backlog}, and in /etc/sysctl.d), or lower tcp-backlog"),
            );
        }
    }
    if let Some((l, f)) = &limits.fd_limit {
        r.compared_with.push(format!("fd limit {l} ({f})"));
    }
    if let Some((s, f)) = &limits.somaxconn {
        r.compared_with.push(format!("net.core.somaxconn {s} ({f})"));
    }
    Ok(r)
}

/// The soft `Max open files` of `/proc/PID/limits` text.
pub fn parse_proc_limits_nofile(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let v = line["Max open files".len()..].split_whitespace().next()?;
    if v == "unlimited" {
        Some(u64::MAX)
    } else {
        v.parse().ok()
    }
}

/// Limits read on this machine: the fd limit of the running redis-server that uses this
/// config (named on its command line, else — since Redis rewrites its process title to
/// `redis-server ADDR:PORT` — the one in this network namespace listening on the config's
/// port), else this process's hard limit (which Redis can raise its own soft limit to); and
/// `net.core.somaxconn` of the current network namespace.
pub fn local_limits(config: &Path) -> Limits {
    let mut l = Limits::default();
    let want = std::fs::canonicalize(config).ok();
    let port = load(config)
        .ok()
        .and_then(|(ds, _)| last(&ds, "port").and_then(|d| d.args.first()?.parse::<u16>().ok()))
        .unwrap_or(6379);
    let my_netns = std::fs::read_link("/proc/self/ns/net").ok();
    let mut by_port = None;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
            let args: Vec<String> = cmd
                .split(|&b| b == 0)
                .flat_map(|a| String::from_utf8_lossy(a).split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .collect();
            if !args.first().is_some_and(|a| a.ends_with("redis-server")) {
                continue;
            }
            let Some(nofile) =
                std::fs::read_to_string(format!("/proc/{pid}/limits")).ok().and_then(|t| parse_proc_limits_nofile(&t))
            else {
                continue;
            };
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            let named = args.get(1).is_some_and(|a| {
                let p = Path::new(a);
                let p = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
                want.is_some() && std::fs::canonicalize(p).ok() == want
            });
            if named {
                l.fd_limit = Some((nofile, format!("soft limit of the running redis-server, pid {pid}")));
                break;
            }
            let same_ns = my_netns.is_some() && std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == my_netns;
            if same_ns && by_port.is_none() && args.get(1).is_some_and(|a| a.ends_with(&format!(":{port}"))) {
                by_port = Some((
                    nofile,
                    format!(
                        "soft limit of the redis-server listening on port {port} in this network namespace, pid {pid}"
                    ),
                ));
            }
        }
    }
    if l.fd_limit.is_none() {
        l.fd_limit = by_port;
    }
    if l.fd_limit.is_none() {
        if let Some(n) = std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| hard_nofile(&t)) {
            l.fd_limit = Some((n, "hard limit of this shell; no running redis-server uses this file".into()));
        }
    }
    if let Some(n) = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok()) {
        l.somaxconn = Some((n, "/proc/sys/net/core/somaxconn".into()));
    }
    l
}

fn hard_nofile(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let v = line["Max open files".len()..].split_whitespace().nth(1)?;
    if v == "unlimited" {
        Some(u64::MAX)
    } else {
        v.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Vec<Directive> {
        let dir = tmpdir("parse");
        let f = dir.join("redis.conf");
        std::fs::write(&f, text).unwrap();
        let (ds, _) = load(&f).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        ds
    }

    fn tmpdir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "conndoc-conf-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn split_like_redis() {
        assert_eq!(split_args("bind 127.0.0.1 -::1").unwrap(), vec!["bind", "127.0.0.1", "-::1"]);
        assert_eq!(split_args(r#"requirepass "a b\x41\n""#).unwrap(), vec!["requirepass", "a bA\n"]);
        assert_eq!(split_args(r"requirepass 'it\'s'").unwrap(), vec!["requirepass", "it's"]);
        assert_eq!(split_args("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_args(r#"x """#).unwrap(), vec!["x", ""]);
        assert!(split_args(r#"requirepass "abc"#).is_err());
        assert!(split_args(r#"requirepass "abc"def"#).is_err());
    }

    #[test]
    fn debian_default_is_clean() {
        let ds = parse_text("# comment\nbind 127.0.0.1 -::1\nprotected-mode yes\nport 6379\ntcp-backlog 511\n");
        let r = lint_directives("redis.conf", vec![], &ds, &Limits::default()).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn open_and_protected() {
        let ds = parse_text("bind 0.0.0.0\nprotected-mode yes\n");
        let r = lint_directives("c", vec![], &ds, &Limits::default()).unwrap();
        let codes: Vec<_> = r.problems.iter().map(|p| p.code.as_str()).collect();
        assert_eq!(codes, ["protected-mode-blocks-remote", "no-password", "bind-all-interfaces"]);
        assert_eq!(r.problems[0].line, 2);
        assert_eq!(r.problems[2].line, 1);
        let ds = parse_text("protected-mode no\n");
        let r = lint_directives("c", vec![], &ds, &Limits::default()).unwrap();
        assert_eq!(r.problems[0].code, "open-to-network");
        assert_eq!(r.problems[0].line, 1);
        // A password makes binding everywhere acceptable.
        let ds = parse_text("bind * -::*\nrequirepass hunter2\n");
        let r = lint_directives("c", vec![], &ds, &Limits::default()).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.effective["requirepass"], "<redacted>");
        assert!(!format!("{r:?}").contains("hunter2"));
        // ACL password for the default user counts; nopass does not.
        let ds = parse_text("bind 0.0.0.0\nuser default on >s3cret ~* +@all\n");
        assert!(lint_directives("c", vec![], &ds, &Limits::default()).unwrap().problems.is_empty());
        let ds = parse_text("bind 0.0.0.0\nrequirepass x\nuser default on nopass ~* +@all\n");
        let r = lint_directives("c", vec![], &ds, &Limits::default()).unwrap();
        assert!(r.problems.iter().any(|p| p.code == "no-password" && p.line == 3));
    }

    #[test]
    fn limits_compared() {
        let ds = parse_text("bind 127.0.0.1\nmaxclients 5000\ntcp-backlog 1024\nport 0\n");
        let limits = Limits { fd_limit: Some((1024, "test".into())), somaxconn: Some((128, "test".into())) };
        let r = lint_directives("c", vec![], &ds, &limits).unwrap();
        let p: Vec<_> = r.problems.iter().map(|p| (p.code.as_str(), p.line)).collect();
        assert_eq!(p, [("tcp-disabled", 4), ("maxclients-above-fd-limit", 2), ("tcp-backlog-above-somaxconn", 3)]);
        assert!(r.problems[1].message.contains("5032"));
        assert!(r.problems[1].message.contains("992"));
        // Defaults are compared too (maxclients 10000 needs 10032).
        let r = lint_directives("c", vec![], &parse_text("bind 127.0.0.1\n"), &limits).unwrap();
        assert!(r.problems.iter().any(|p| p.code == "maxclients-above-fd-limit" && p.line == 0));
    }

    #[test]
    fn malformed_values_name_file_and_line_not_text() {
        for (text, line) in [
            ("port 70000\n", 1),
            ("port\n", 1),
            ("\nprotected-mode maybe\n", 2),
            ("maxclients -1\n", 1),
            ("requirepass \"hunter2\n", 1),
            ("requirepass a b\n", 1),
        ] {
            let dir = tmpdir("mal");
            let f = dir.join("redis.conf");
            std::fs::write(&f, text).unwrap();
            let e = lint(&f, &Limits::default()).unwrap_err();
            match &e {
                ConfError::Malformed { line: l, .. } => assert_eq!(*l, line, "{text:?}: {e}"),
                other => panic!("{text:?}: {other}"),
            }
            assert!(!e.to_string().contains("hunter2"), "{e}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn includes_are_followed_and_later_lines_win() {
        let dir = tmpdir("inc");
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "protected-mode no\n").unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "port 6380\n").unwrap();
        std::fs::write(dir.join("local.conf"), "maxclients 1\n").unwrap();
        let main = dir.join("redis.conf");
        std::fs::write(
            &main,
            format!("bind 0.0.0.0\ninclude {}/conf.d/*.conf\ninclude local.conf\nport 6381\n", dir.display()),
        )
        .unwrap();
        let r = lint(&main, &Limits::default()).unwrap();
        assert_eq!(r.files.len(), 4, "{:?}", r.files);
        assert_eq!(r.effective["port"], "6381");
        assert_eq!(r.effective["maxclients"], "1");
        let open = r.problems.iter().find(|p| p.code == "open-to-network").unwrap();
        assert!(open.file.ends_with("conf.d/a.conf") && open.line == 1, "{open:?}");
        std::fs::write(&main, "include missing.conf\n").unwrap();
        assert!(matches!(lint(&main, &Limits::default()), Err(ConfError::Malformed { line: 1, .. })));
        std::fs::write(&main, format!("include {}\n", main.display())).unwrap();
        assert!(matches!(lint(&main, &Limits::default()), Err(ConfError::IncludeDepth { .. })));
        assert!(matches!(lint(&dir.join("nope.conf"), &Limits::default()), Err(ConfError::Read { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_include_fan_out_reads_each_file_once() {
        // 15 files, each including the next one 4 times: 4^14 paths through the graph.
        let dir = tmpdir("fanout");
        for i in 0..15 {
            let body = if i == 14 {
                "port 7000\n".to_string()
            } else {
                format!("maxclients {}\n", 100 + i) + &format!("include c{}.conf\n", i + 1).repeat(4)
            };
            std::fs::write(dir.join(format!("c{i}.conf")), body).unwrap();
        }
        let start = std::time::Instant::now();
        let r = lint(&dir.join("c0.conf"), &Limits::default()).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
        assert_eq!(r.files.len(), 15, "{:?}", r.files);
        assert_eq!(r.effective["port"], "7000");
        assert_eq!(r.effective["maxclients"], "113");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_included_again_applies_again() {
        // Redis re-reads b.conf at the second include: it binds to loopback, so no
        // open-to-network problem (skipping the second include said there was one).
        let dir = tmpdir("again");
        std::fs::write(dir.join("b.conf"), "bind 127.0.0.1\nport 7001\n").unwrap();
        let main = dir.join("redis.conf");
        std::fs::write(&main, "include b.conf\nbind 0.0.0.0\nport 7002\nprotected-mode no\ninclude b.conf\n").unwrap();
        let r = lint(&main, &Limits::default()).unwrap();
        assert_eq!(r.effective["bind"], "127.0.0.1", "{:?}", r.effective);
        assert_eq!(r.effective["port"], "7001");
        assert!(r.problems.iter().all(|p| p.code != "open-to-network"), "{:?}", r.problems);
        assert_eq!(r.files.len(), 2, "{:?}", r.files);
        // And the other way: the second include is the one the later line overrides.
        std::fs::write(&main, "include b.conf\nprotected-mode no\ninclude b.conf\nbind 0.0.0.0\n").unwrap();
        let r = lint(&main, &Limits::default()).unwrap();
        assert_eq!(r.effective["bind"], "0.0.0.0");
        assert!(r.problems.iter().any(|p| p.code == "open-to-network"), "{:?}", r.problems);
        // Through a nested include: c.conf includes b.conf, whose directives re-apply.
        std::fs::write(dir.join("c.conf"), "include b.conf\n").unwrap();
        std::fs::write(&main, "include c.conf\nbind 0.0.0.0\ninclude c.conf\n").unwrap();
        let r = lint(&main, &Limits::default()).unwrap();
        assert_eq!(r.effective["bind"], "127.0.0.1", "{:?}", r.effective);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn special_and_huge_files_are_refused() {
        let dir = tmpdir("special");
        let e = lint(Path::new("/dev/zero"), &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = lint(&dir, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let main = dir.join("redis.conf");
        std::fs::write(&main, "include /dev/zero\n").unwrap();
        assert!(lint(&main, &Limits::default()).is_err());
        let big = dir.join("big.conf");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(conndoc_files::limit::REDIS_CONF + 1).unwrap();
        let e = lint(&big, &Limits::default()).unwrap_err();
        assert!(e.to_string().contains("larger than the limit"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proc_limits() {
        let t = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_proc_limits_nofile(t), Some(1024));
        assert_eq!(hard_nofile(t), Some(524288));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(glob_match("a*b*c", "aXbYc"));
    }
}
