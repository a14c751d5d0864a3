//! Shared parts of the watch integration tests: a real daemon process, a real service
//! port, a real webhook receiver, HTTP over loopback. Every wait is bounded; every process
//! and listener is owned by the test and ends with it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `conndoc` binary cargo built from this tree for these tests.
pub fn conndoc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_conndoc"))
}

pub use conndoc_testsupport::{which, Need};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("conndoc-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback port that was free a moment ago (bound, noted, closed).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A service on a loopback port: accepts and closes connections until stopped.
pub struct Service {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    pub fn start(port: u16) -> Service {
        let l = bind_retry(port);
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // A healthy service keeps what it accepts open (a peer that closes right after the
        // handshake is `accepted-then-closed`); the newest 256 are held, the oldest closed.
        let thread = std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        if held.len() == 256 {
                            held.pop_front();
                        }
                        held.push_back(c);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Service { port, stop, thread: Some(thread) }
    }
    pub fn stop(mut self) {
        self.halt();
    }
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
impl Drop for Service {
    fn drop(&mut self) {
        self.halt();
    }
}

fn bind_retry(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() > deadline => panic!("binding 127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A webhook receiver on loopback recording every JSON body it is POSTed.
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Value>>>,
    /// The request line of every request (`POST /hook HTTP/1.1`; a proxy sees the
    /// absolute form `POST http://host/hook HTTP/1.1`).
    pub lines: Arc<Mutex<Vec<String>>>,
    svc: Service,
}

impl Receiver {
    pub fn start(port: u16, got: Arc<Mutex<Vec<Value>>>) -> Receiver {
        let l = bind_retry(port);
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, g) = (stop.clone(), got.clone());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ls = lines.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        if let Some((line, body)) = read_request_body(&mut c) {
                            ls.lock().unwrap().push(line);
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                g.lock().unwrap().push(v);
                            }
                            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { port, got, lines, svc: Service { port, stop, thread: Some(thread) } }
    }
    pub fn stop(self) {
        self.svc.stop();
    }
    pub fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

fn read_request_body(c: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))?;
    while buf.len() < head_end + len {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf[..head_end]).lines().next().unwrap_or("").to_string();
    Some((line, buf[head_end..head_end + len].to_vec()))
}

/// GET over loopback: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Poll `f` until it returns Some, or panic with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running daemon process (the `conndoc` binary, or this test binary re-executed).
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, addr: SocketAddr, log: &Path) -> Daemon {
        Daemon::start_with_env(config, addr, log, &[])
    }
    /// With these environment variables; proxy variables of the test's own environment
    /// are removed so deliveries go where the test says.
    pub fn start_with_env(config: &Path, addr: SocketAddr, log: &Path, env: &[(&str, String)]) -> Daemon {
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut cmd = Command::new(conndoc_bin());
        cmd.arg("watch").arg("--config").arg(config);
        for v in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
            cmd.env_remove(v).env_remove(v.to_ascii_uppercase());
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf).spawn().unwrap();
        let d = Daemon { child, addr, config: config.to_path_buf(), log: log.to_path_buf() };
        wait_for(Duration::from_secs(10), "the daemon to listen", || {
            http_get(addr, "/-/healthy").filter(|r| r.0 == 200)
        });
        d
    }
    pub fn targets(&self) -> Vec<Value> {
        http_get(self.addr, "/api/targets")
            .and_then(|(_, b)| serde_json::from_str::<Vec<Value>>(&b).ok())
            .unwrap_or_default()
    }
    pub fn target(&self, name: &str) -> Option<Value> {
        self.targets().into_iter().find(|t| t["name"] == name)
    }
    /// Wait until target `name` is in `state`; returns its /api/targets object.
    pub fn wait_state(&self, name: &str, state: &str, limit: Duration) -> Value {
        wait_for(limit, &format!("{name} to be {state} (log: {})", self.log.display()), || {
            self.target(name).filter(|t| t["state"] == state && !(state == "down" && t["diagnosing"] == true))
        })
    }
    pub fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").map(|r| r.1).unwrap_or_default()
    }
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(st.success());
    }
    /// SIGTERM and wait for the exit status (bounded).
    pub fn terminate(mut self) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config for the tests: fast intervals, thresholds of 2, one target per (name, port),
/// one receiver per (name, type, port) at `http://127.0.0.1:PORT/hook`.
pub fn config(dir: &TempDir, listen: u16, targets: &[(&str, u16)], receivers: &[(&str, &str, u16)]) -> PathBuf {
    let urls: Vec<(&str, &str, String)> =
        receivers.iter().map(|(name, kind, port)| (*name, *kind, format!("http://127.0.0.1:{port}/hook"))).collect();
    config_urls(dir, listen, targets, &urls)
}

/// [`config`] with each receiver's URL given whole (name, type, url): a name only a proxy
/// knows, an https URL.
pub fn config_urls(dir: &TempDir, listen: u16, targets: &[(&str, u16)], receivers: &[(&str, &str, String)]) -> PathBuf {
    let mut s = format!(
        "listen = \"127.0.0.1:{listen}\"\nhistory = \"{}\"\nhistory_resolution = \"1s\"\n\n",
        dir.path("history.db").display()
    );
    for (name, port) in targets {
        s.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nurl = \"tcp://127.0.0.1:{port}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nfailures_before_down = 2\nsuccesses_before_up = 2\nlabels = {{ team = \"core\" }}\n\n"
        ));
    }
    for (name, kind, url) in receivers {
        s.push_str(&format!(
            "[[receiver]]\nname = \"{name}\"\ntype = \"{kind}\"\nurl = \"{url}\"\ntimeout = \"1s\"\nretry_max = \"1s\"\n\n"
        ));
    }
    let p = dir.path("watch.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// 127.0.0.1:`port`.
pub fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}
