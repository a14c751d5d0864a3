//! The process table: who owns a socket, what runs in a namespace, fd counts and limits.
//!
//! Finding a socket's owner the way `ss -p` does means reading every fd of every process.
//! Here the candidates shrink first — only processes in the inspected network namespace
//! (a socket lives in exactly one), the expected service's processes first — and each
//! process's low fds (where listeners usually sit) are tried before its whole fd table.

use crate::redact::redact_cmdline;
use conndoc_facts::host::ProcessInfo;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

/// The proc root; tests and benchmarks use the real one.
const PROC: &str = "/proc";

/// Every pid in /proc.
pub fn pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir(PROC) else { return Vec::new() };
    let mut v: Vec<u32> = rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect();
    v.sort_unstable();
    v
}

fn pid_path(pid: u32, rest: &str) -> PathBuf {
    // One formatted string: this runs a few times per process of the whole table.
    PathBuf::from(format!("{PROC}/{pid}/{rest}"))
}

/// Parse the inode out of a namespace link target such as `net:[4026531840]`, or a
/// socket fd's `socket:[12345]`.
pub fn bracket_inode(link: &str, prefix: &str) -> Option<u64> {
    link.strip_prefix(prefix)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

/// The network namespace inode of a process (None when not permitted or gone).
pub fn netns_of(pid: u32) -> Option<u64> {
    let l = fs::read_link(pid_path(pid, "ns/net")).ok()?;
    bracket_inode(l.to_str()?, "net")
}

/// The network namespace inode of the calling thread.
pub fn current_netns() -> Option<u64> {
    let l = fs::read_link("/proc/thread-self/ns/net").ok()?;
    bracket_inode(l.to_str()?, "net")
}

/// `/proc/PID/comm`, in one read: the kernel keeps at most 15 bytes (TASK_COMM_LEN 16) and
/// adds a newline, so a small buffer holds all of it (`read_to_string` asked for the size
/// with a statx and read twice: five syscalls per process instead of three).
pub fn comm(pid: u32) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(pid_path(pid, "comm")).ok()?;
    let mut b = [0u8; 64];
    let n = f.read(&mut b).ok()?;
    let text = b[..n].strip_suffix(b"\n").unwrap_or(&b[..n]);
    Some(String::from_utf8_lossy(text).into_owned())
}

/// The base name of `/proc/PID/exe`'s target (without the ` (deleted)` the kernel adds for
/// a replaced binary). `Err(NotFound)` for a kernel thread or a zombie (no memory map, so
/// no executable and no command line), or a process that is gone.
fn exe_name(pid: u32) -> std::io::Result<String> {
    let l = fs::read_link(pid_path(pid, "exe"))?;
    let s = l.to_string_lossy();
    let s = s.strip_suffix(" (deleted)").unwrap_or(&s);
    Ok(s.rsplit('/').next().unwrap_or("").to_string())
}

/// Whether `comm` is what exec gave the process: the executable's base name as the kernel
/// cuts it (15 bytes). Then the process runs the binary it was started as, under that
/// name, and its argv[0] is not read. A renamed comm (`prctl(PR_SET_NAME)`, a write to
/// /proc/PID/comm), a symlink to another binary (`python3` → `python3.11`), a script (comm
/// is the script's name, exe its interpreter) all differ, and their argv[0] is read.
fn comm_is_exe(comm: &str, exe: &str) -> bool {
    let cut = exe.char_indices().nth(15).map_or(exe, |(i, _)| &exe[..i]);
    comm == cut
}

/// The command line, NUL-separated arguments joined with spaces (secrets not yet redacted).
pub fn cmdline_args(pid: u32) -> Vec<String> {
    let Ok(b) = fs::read(pid_path(pid, "cmdline")) else { return Vec::new() };
    split_cmdline(&b)
}

/// /proc/PID/cmdline's bytes → its arguments (NUL-separated, empty ones dropped).
pub fn split_cmdline(b: &[u8]) -> Vec<String> {
    b.split(|&c| c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Whether process `pid` is the program `name`: its comm (kernel-truncated to 15 bytes),
/// or the base name of argv[0] (a process title like `redis-server *:6379` included).
pub fn is_program(comm: &str, args: &[String], name: &str) -> bool {
    let short: String = name.chars().take(15).collect();
    if comm == short {
        return true;
    }
    let Some(a0) = args.first() else { return false };
    let first_word = a0.split_whitespace().next().unwrap_or("");
    first_word.rsplit('/').next() == Some(name)
}

/// The real uid from /proc/PID/status.
pub fn parse_status_uid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// "Max open files" soft and hard limits from /proc/PID/limits (None = unlimited).
pub fn parse_nofile(limits: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut it = line["Max open files".len()..].split_whitespace();
    let val = |s: Option<&str>| -> Option<Option<u64>> {
        match s? {
            "unlimited" => Some(None),
            v => v.parse().ok().map(Some),
        }
    };
    Some((val(it.next())?, val(it.next())?))
}

/// User name for a uid from /etc/passwd.
pub fn user_name(uid: u32) -> Option<String> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Count open fds. Since Linux 6.2 the size of /proc/PID/fd is the count (one stat, not a
/// listing of a possibly huge directory); older kernels report 0 and the entries are
/// counted.
pub fn fd_count(pid: u32) -> Option<u64> {
    let dir = pid_path(pid, "fd");
    match fs::metadata(&dir).ok()?.len() {
        0 => Some(fs::read_dir(&dir).ok()?.count() as u64),
        n => Some(n),
    }
}

/// Everything the report shows about one process.
pub fn info(pid: u32, target_netns: Option<u64>) -> Option<ProcessInfo> {
    let comm = comm(pid)?;
    let args = cmdline_args(pid);
    let uid = fs::read_to_string(pid_path(pid, "status")).ok().as_deref().and_then(parse_status_uid)?;
    let (soft, hard) =
        fs::read_to_string(pid_path(pid, "limits")).ok().as_deref().and_then(parse_nofile).unwrap_or((None, None));
    Some(ProcessInfo {
        pid,
        comm,
        cmdline: redact_cmdline(&args),
        uid,
        user: user_name(uid),
        open_fds: fd_count(pid),
        nofile_soft: soft,
        nofile_hard: hard,
        in_target_netns: target_netns.and_then(|t| netns_of(pid).map(|n| n == t)),
    })
}

/// fds below this are tried first in every candidate process, without listing its fd
/// table: listeners are opened early, so they almost always sit here.
const LOW_FDS: u32 = 16;

/// Record `pid` as the holder of the socket behind fd `fd`, if it is wanted (or if
/// `wanted` is empty: every socket).
fn check_fd(pid: u32, fd: u32, wanted: &BTreeSet<u64>, found: &mut BTreeMap<u64, u32>) {
    if let Ok(l) = fs::read_link(pid_path(pid, &format!("fd/{fd}"))) {
        if let Some(ino) = l.to_str().and_then(|s| bracket_inode(s, "socket")) {
            if wanted.is_empty() || wanted.contains(&ino) {
                found.entry(ino).or_insert(pid);
            }
        }
    }
}

fn all_found(wanted: &BTreeSet<u64>, found: &BTreeMap<u64, u32>) -> bool {
    !wanted.is_empty() && wanted.iter().all(|i| found.contains_key(i))
}

/// The low fds of `pid`.
fn scan_low(pid: u32, wanted: &BTreeSet<u64>, found: &mut BTreeMap<u64, u32>) -> bool {
    for fd in 0..LOW_FDS {
        check_fd(pid, fd, wanted, found);
        if all_found(wanted, found) {
            return true;
        }
    }
    false
}

/// The rest of `pid`'s fd table, in ascending order, stopping once everything is found.
fn scan_rest(pid: u32, wanted: &BTreeSet<u64>, found: &mut BTreeMap<u64, u32>) -> bool {
    let Ok(rd) = fs::read_dir(pid_path(pid, "fd")) else { return false };
    let mut fds: Vec<u32> =
        rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&f| f >= LOW_FDS).collect();
    fds.sort_unstable();
    for fd in fds {
        check_fd(pid, fd, wanted, found);
        if all_found(wanted, found) {
            return true;
        }
    }
    false
}

/// Find which process holds each socket inode in `wanted`. Only processes in network
/// namespace `netns` (when known) are searched; processes named `prefer` first. First the
/// low fds of every candidate, then — only for what is still missing — whole fd tables.
/// Returns inode → pid for those found, and how many whole fd tables were read.
pub fn owners(wanted: &BTreeSet<u64>, netns: Option<u64>, prefer: Option<&str>) -> (BTreeMap<u64, u32>, usize) {
    owners_hinted(wanted, netns, prefer, &[])
}

/// [`owners`], trying first the low fds of the `hint` pids (say, the pid a server reported
/// about itself) and then of the processes named `prefer`, before reading anything about
/// the rest of the process table. A hint is only a guess: the fd link naming the socket's
/// inode is the proof, so a wrong pid (another pid namespace, a restart) costs nothing.
pub fn owners_hinted(
    wanted: &BTreeSet<u64>,
    netns: Option<u64>,
    prefer: Option<&str>,
    hint: &[u32],
) -> (BTreeMap<u64, u32>, usize) {
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return (found, 0);
    }
    for &pid in hint {
        if scan_low(pid, wanted, &mut found) {
            return (found, 0);
        }
    }
    let all = pids();
    let mut preferred = BTreeSet::new();
    if let Some(name) = prefer {
        // comm alone (one small read per process) picks the likely owners out.
        for &pid in &all {
            if comm(pid).is_some_and(|c| is_program(&c, &[], name)) {
                preferred.insert(pid);
                if scan_low(pid, wanted, &mut found) {
                    return (found, 0);
                }
            }
        }
    }
    let mut cands: Vec<(bool, u32)> = Vec::new();
    for &pid in &all {
        if let Some(ns) = netns {
            if netns_of(pid) != Some(ns) {
                continue;
            }
        }
        cands.push((!preferred.contains(&pid), pid));
    }
    cands.sort_unstable();
    // Threads share their leader's fd table; /proc lists only leaders.
    for &(_, pid) in cands.iter().filter(|(other, _)| *other) {
        if scan_low(pid, wanted, &mut found) {
            return (found, 0);
        }
    }
    let mut read = 0;
    for &(_, pid) in &cands {
        read += 1;
        if scan_rest(pid, wanted, &mut found) {
            break;
        }
    }
    (found, read)
}

/// Every socket inode held by `pid`.
pub fn sockets_of(pid: u32) -> BTreeSet<u64> {
    let mut found = BTreeMap::new();
    let none = BTreeSet::new();
    scan_low(pid, &none, &mut found);
    scan_rest(pid, &none, &mut found);
    found.into_keys().collect()
}

/// Processes that are program `name`: (pid, in the namespace `netns`?).
///
/// A process is the program when its comm is the name (cut to 15 bytes) or the base name of
/// its argv[0] is (a process title like `redis-server *:6379` included). The command line
/// is read only where the comm cannot rule the process out: most of a process table is
/// kernel threads (no executable: one readlink says so) and programs whose comm is still the
/// executable's name (exec set it, nothing renamed it); reading every argv[0] as well was
/// half of this scan's syscalls (`strace -c`, docs/benchmarks.md). Where the executable
/// cannot be read (another user's process without CAP_SYS_PTRACE) argv[0] is read as before.
pub fn find_program(name: &str, netns: Option<u64>) -> Vec<(u32, Option<bool>)> {
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(CMDLINE_CHUNK);
    let short: String = name.chars().take(15).collect();
    for pid in pids() {
        let exe = match exe_name(pid) {
            // A kernel thread, a zombie, or gone: no command line, no program's.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => None,
            Ok(x) => Some(x),
        };
        let Some(c) = comm(pid) else { continue };
        let is = if c == short || c == name {
            // Of the command line only argv[0] would be looked at (is_program): a process
            // named so by its comm needs none of it, but one that cannot be read (gone
            // meanwhile) is no program's, as in the scan below.
            exe.is_some() || first_arg(pid, &mut buf).is_some()
        } else if exe.as_deref().is_some_and(|x| comm_is_exe(&c, x)) {
            false
        } else {
            // Only argv[0] is read, not the whole line with every argument copied — a
            // compiler's runs to tens of KiB (callgrind). A command line that cannot be read,
            // or an empty one (a kernel thread), is no program's.
            first_arg(pid, &mut buf).is_some_and(|a| is_program(&c, &a, name))
        };
        if is {
            out.push((pid, netns.and_then(|ns| netns_of(pid).map(|n| n == ns))));
        }
    }
    out
}

/// How much of a command line one read asks for.
const CMDLINE_CHUNK: usize = 4096;

/// The first non-empty argument of `pid`'s command line (none when it has none), reading
/// only as far as its end. None when the command line cannot be read or is empty (a kernel
/// thread).
fn first_arg(pid: u32, buf: &mut Vec<u8>) -> Option<Vec<String>> {
    use std::io::Read;
    buf.clear();
    let mut f = fs::File::open(pid_path(pid, "cmdline")).ok()?;
    let mut chunk = [0u8; CMDLINE_CHUNK];
    // Bounded: the kernel ends a command line at the process's argument area.
    loop {
        let n = f.read(&mut chunk).ok()?;
        buf.extend_from_slice(&chunk[..n]);
        let whole = buf.iter().position(|&b| b != 0).is_some_and(|s| buf[s..].contains(&0));
        if n == 0 || whole {
            break;
        }
    }
    if buf.is_empty() {
        return None;
    }
    Some(
        buf.split(|&b| b == 0)
            .find(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .into_iter()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parse_proc_text() {
        assert_eq!(bracket_inode("net:[4026531840]", "net"), Some(4026531840));
        assert_eq!(bracket_inode("socket:[12345]", "socket"), Some(12345));
        assert_eq!(bracket_inode("pipe:[12345]", "socket"), None);
        assert_eq!(bracket_inode("socket:[x]", "socket"), None);
        // /proc/PID/limits as Linux prints it (fs/proc/base.c proc_pid_limits)
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile(limits), Some((Some(1024), Some(524288))));
        let unl = "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_nofile(unl), Some((None, None)));
        let status = "Name:\tredis-server\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t999\t999\t999\t999\n";
        assert_eq!(parse_status_uid(status), Some(999));
    }

    #[test]
    fn first_argument_only() {
        let mut buf = Vec::new();
        let me = first_arg(std::process::id(), &mut buf).expect("own command line");
        assert_eq!(me, cmdline_args(std::process::id()).into_iter().take(1).collect::<Vec<_>>());
        // A kernel thread (kthreadd is pid 2 in the first pid namespace): an empty command line.
        if comm(2).as_deref() == Some("kthreadd") {
            assert_eq!(first_arg(2, &mut buf), None);
        }
        assert_eq!(first_arg(u32::MAX, &mut buf), None);
    }

    #[test]
    fn comm_against_the_executable() {
        assert!(comm_is_exe("redis-server", "redis-server"));
        // The kernel cuts comm to 15 bytes; exe_name has already dropped " (deleted)".
        assert!(comm_is_exe("memfd:sealed-91", "memfd:sealed-91173221a7ea"));
        assert!(!comm_is_exe("worker", "bash"), "a renamed comm");
        assert!(!comm_is_exe("python3", "python3.11"), "started through a symlink");
        assert_eq!(
            exe_name(std::process::id()).ok(),
            std::env::current_exe().ok().and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        );
        // A kernel thread has no executable, and is no program.
        if comm(2).as_deref() == Some("kthreadd") {
            assert_eq!(exe_name(2).map_err(|e| e.kind()), Err(std::io::ErrorKind::NotFound));
            assert!(!find_program("kthreadd", None).iter().any(|(p, _)| *p == 2));
        }
        assert_eq!(comm(u32::MAX), None);
    }

    #[test]
    fn program_names() {
        let title = vec!["redis-server *:6379".to_string()];
        assert!(is_program("redis-server", &title, "redis-server"));
        assert!(is_program("x", &title, "redis-server"));
        assert!(is_program("x", &["/usr/bin/redis-server".into(), "/etc/r.conf".into()], "redis-server"));
        assert!(!is_program("redis-cli", &["redis-cli".into()], "redis-server"));
        // the kernel truncates comm to 15 bytes
        assert!(is_program("a-very-long-nam", &[], "a-very-long-name-indeed"));
    }

    #[test]
    fn finds_own_listener_and_limits() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ls = crate::sockets::listeners(Some(port)).unwrap();
        assert_eq!(ls.len(), 1, "{ls:?}");
        let me = std::process::id();
        let wanted: BTreeSet<u64> = ls.iter().map(|x| x.inode).collect();
        let (found, _) = owners(&wanted, current_netns(), None);
        assert_eq!(found.get(&ls[0].inode), Some(&me));
        // A hint that holds no such socket is dropped; the right one is enough on its own.
        let (hinted, _) = owners_hinted(&wanted, current_netns(), None, &[1]);
        assert_eq!(hinted.get(&ls[0].inode), Some(&me));
        let (hinted, read) = owners_hinted(&wanted, current_netns(), None, &[me]);
        assert_eq!((hinted.get(&ls[0].inode), read), (Some(&me), 0));
        let p = info(me, current_netns()).unwrap();
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.nofile_soft.is_some());
        assert_eq!(p.in_target_netns, Some(true));
        assert!(sockets_of(me).contains(&ls[0].inode));
        // fd_count against a listing, on a process whose fds stand still (this test
        // process's other test threads open and close files meanwhile).
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id();
        // Until exec has closed them, the child still holds copies of this process's fds:
        // compare once two listings around the count agree.
        let list = || fs::read_dir(pid_path(pid, "fd")).map(|d| d.count() as u64).ok();
        let mut seen = Vec::new();
        for _ in 0..200 {
            let (before, counted, after) = (list(), fd_count(pid), list());
            if before.is_some() && before == after {
                seen.push((counted, before));
                if comm(pid).as_deref() == Some("sleep") {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        let (counted, listed) = *seen.last().expect("a stable listing");
        assert_eq!(counted, listed, "{seen:?}");
    }
}
