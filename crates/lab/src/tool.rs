//! `conndoc-labtool`: the small programs faults need, run inside lab namespaces.
//!
//! ```text
//! conndoc-labtool listen ADDR PORT [--backlog N] [--no-accept] [--v6only]
//! conndoc-labtool serve  ADDR PORT [--close]       accept and keep (or answer one line and close) every connection
//! conndoc-labtool churn  ADDR PORT COUNT           open and close COUNT connections, one after another
//! conndoc-labtool hold   ADDR PORT COUNT           open COUNT connections and keep them
//! conndoc-labtool fds    COUNT                     open /dev/null COUNT times and keep the fds (benchmarks: a large fd table)
//! conndoc-labtool engine SOCKET hang|trickle|huge   a Docker engine socket that never answers, answers a byte per 50 ms, or sends an endless body
//! conndoc-labtool run    SCENARIO.toml CONNDOC     build a scenario, run conndoc, print the result
//! ```
//! Each program runs until killed (the lab kills it at teardown); connection loops are
//! bounded by COUNT and by a per-connect deadline.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

pub fn main_with(args: Vec<String>) -> i32 {
    match dispatch(&args) {
        Ok(()) => 0,
        Err(Failure::Stdout(e)) => {
            say(format_args!("conndoc-labtool: writing stdout: {}", conndoc_files::os_error_text(&e)));
            3
        }
        Err(Failure::Bad(e)) => {
            say(format_args!("conndoc-labtool: {e}"));
            2
        }
    }
}

/// Why a program ended: its own error (exit 2), or stdout could not be written (exit 3, as
/// conndoc does).
enum Failure {
    Bad(String),
    Stdout(std::io::Error),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Bad(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Failure {
        Failure::Bad(e.into())
    }
}

/// One line on stderr. Never panics (eprintln! does when stderr is a full disk or a closed
/// pipe): a line that cannot be written is dropped.
pub(crate) fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `text` and a newline on stdout. A reader that closed the pipe (`| head -1`) is no failure:
/// nothing more is written (println! panicked here); any other error is a [`Failure::Stdout`].
fn write_out(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Stdout(e)),
        Ok(()) => Ok(()),
    }
}

fn dispatch(args: &[String]) -> Result<(), Failure> {
    let sub = args.first().map(String::as_str).unwrap_or("--help");
    let rest = &args[args.len().min(1)..];
    match sub {
        "listen" => Ok(listen(rest, false)?),
        "serve" => Ok(listen(rest, true)?),
        "hold" => Ok(hold(rest)?),
        "churn" => Ok(churn(rest)?),
        "fds" => Ok(fds(rest)?),
        "engine" => {
            let path = rest.first().ok_or("missing SOCKET")?;
            let mode = rest.get(1).ok_or("missing MODE (hang, trickle, huge)")?.parse()?;
            Ok(crate::enginesock::hostile(std::path::Path::new(path), mode)?)
        }
        "run" => run(rest),
        _ => Err("usage: conndoc-labtool listen|serve|hold|churn|fds|engine|run … (see crates/lab/src/tool.rs)".into()),
    }
}

fn addr(a: &[String]) -> Result<SocketAddr, String> {
    let ip: IpAddr = a.first().ok_or("missing ADDR")?.parse().map_err(|e| format!("ADDR: {e}"))?;
    let port: u16 = a.get(1).ok_or("missing PORT")?.parse().map_err(|e| format!("PORT: {e}"))?;
    Ok(SocketAddr::new(ip, port))
}

fn flag_value(a: &[String], name: &str) -> Option<String> {
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1).cloned())
}

fn listen(a: &[String], serve: bool) -> Result<(), String> {
    let sa = addr(a)?;
    let backlog: i32 =
        flag_value(a, "--backlog").map(|v| v.parse().map_err(|_| "bad --backlog")).transpose()?.unwrap_or(128);
    let no_accept = a.iter().any(|x| x == "--no-accept");
    // The server closing first leaves the TIME_WAIT sockets on its own side.
    let close = serve && a.iter().any(|x| x == "--close");
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP)).map_err(|e| e.to_string())?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    if sa.is_ipv6() {
        s.set_only_v6(a.iter().any(|x| x == "--v6only")).map_err(|e| e.to_string())?;
    }
    s.bind(&SockAddr::from(sa)).map_err(|e| format!("bind {sa}: {e}"))?;
    s.listen(backlog).map_err(|e| format!("listen {sa}: {e}"))?;
    say(format_args!("listening on {sa} backlog {backlog}{}", if no_accept { " (never accepting)" } else { "" }));
    let mut held = Vec::new();
    loop {
        if no_accept || !serve && held.len() > 100_000 {
            std::thread::sleep(Duration::from_secs(3600));
            continue;
        }
        match s.accept() {
            // A line first: a server that answers and then closes (TIME_WAIT on its side),
            // not one that accepts and drops the connection unanswered (accepted-then-closed).
            Ok((c, _)) if close => {
                let _ = std::io::Write::write_all(&mut &c, b"bye\r\n");
                drop(c)
            }
            Ok((c, _)) => held.push(c),
            Err(e) => {
                // At the fd limit: keep the listener, back off, try again.
                say(format_args!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn hold(a: &[String]) -> Result<(), String> {
    let sa = addr(a)?;
    let count: usize = a.get(2).ok_or("missing COUNT")?.parse().map_err(|_| "bad COUNT")?;
    let mut held = Vec::new();
    for i in 0..count.min(100_000) {
        match TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
            Ok(c) => held.push(c),
            Err(e) => say(format_args!("connect {i}: {e}")),
        }
    }
    say(format_args!("holding {} connections to {sa}", held.len()));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Hold COUNT open files (at most 1,000,000 and the fd limit): a process with a large fd
/// table, as `ss -p` and conndoc's owner lookup meet on a busy machine.
fn fds(a: &[String]) -> Result<(), String> {
    let count: usize = a.first().ok_or("missing COUNT")?.parse().map_err(|_| "bad COUNT")?;
    let mut held = Vec::with_capacity(count.min(1_000_000));
    for _ in 0..count.min(1_000_000) {
        held.push(std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?);
    }
    say(format_args!("holding {} open files", held.len()));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Open and close COUNT connections in turn, waiting for the server's FIN (if it closes
/// first) before closing. Exits non-zero when fewer than COUNT connects succeeded.
fn churn(a: &[String]) -> Result<(), String> {
    use std::io::Read;
    let sa = addr(a)?;
    let count: usize = a.get(2).ok_or("missing COUNT")?.parse().map_err(|_| "bad COUNT")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut ok = 0;
    for _ in 0..count.min(100_000) {
        if std::time::Instant::now() > deadline {
            break;
        }
        let Ok(mut c) = TcpStream::connect_timeout(&sa, Duration::from_secs(2)) else { continue };
        ok += 1;
        let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
        // Read what the server says up to its FIN (bounded by the read timeout and 4 reads).
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            if !matches!(c.read(&mut buf), Ok(n) if n > 0) {
                break;
            }
        }
    }
    say(format_args!("churn: {ok} of {count} connections to {sa} opened and closed"));
    if ok < count {
        return Err(format!("only {ok} of {count} connects to {sa} succeeded"));
    }
    Ok(())
}

fn run(a: &[String]) -> Result<(), Failure> {
    let path = a.first().ok_or("missing SCENARIO.toml")?;
    let bin = a
        .get(1)
        .map(std::path::PathBuf::from)
        .or_else(|| crate::which("conndoc"))
        .ok_or("missing CONNDOC binary path")?;
    crate::can_run()?;
    let s = crate::Scenario::load(std::path::Path::new(path)).map_err(|e| e.to_string())?;
    let out = crate::run_scenario(&s, &bin)?;
    write_out(&out.stdout)?;
    say(format_args!("scenario {}: passed ({:?})", s.name, out.elapsed));
    Ok(())
}
