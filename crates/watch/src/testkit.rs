//! Parts the unit tests share: a real HTTP receiver (hyper) on a loopback port the test
//! opened, that can be taken down and brought back on the same port, temporary paths, and
//! made-up check results and configs for the pure parts.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: serde_json::Value,
}

pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    /// A loopback port reserved (bound, then closed): connections are refused until [`Receiver::up`].
    pub fn reserved() -> Receiver {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = l.local_addr().unwrap();
        drop(l);
        Receiver { addr, got: Arc::default(), task: None }
    }

    /// Listen on the reserved port and record every request (answered 200, connection closed).
    pub async fn up(&mut self) {
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.unwrap_or_else(|| panic!("could not listen on {} again", self.addr));
        let got = self.got.clone();
        self.task = Some(tokio::spawn(async move {
            // Owned here: aborting the task closes every connection with it.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((sock, _)) = r else { continue };
                        let got = got.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                                let got = got.clone();
                                async move {
                                    let path = req.uri().path().to_string();
                                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                                    got.lock().unwrap().push(Received { path, body });
                                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .keep_alive(false)
                                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        }));
    }

    /// Stop listening (and drop open connections): the next POST is refused.
    pub async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Wait (bounded) until at least `n` requests arrived; returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let end = Instant::now() + within;
        while self.got.lock().unwrap().len() < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A fresh temporary directory for one test (removed when dropped).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("conndoc-watch-unit-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback TCP server that accepts and holds each connection open (a healthy `tcp://`
/// target: the check's accept watch sees no close). At most 256 held; the oldest is dropped.
pub struct Holder {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Holder {
    pub async fn on(addr: SocketAddr) -> Holder {
        let l = tokio::net::TcpListener::bind(addr).await.expect("bind the holder");
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            while let Ok((s, _)) = l.accept().await {
                held.push_back(s);
                if held.len() > 256 {
                    held.pop_front();
                }
            }
        });
        Holder { addr, task }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// GET `path` from `addr` (HTTP/1.0, bounded: 5 s, 64 MiB): the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(64 << 20).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), go).await.ok().flatten().unwrap_or((0, String::new()))
}

/// A made-up check result: connected or refused, after `elapsed_us`.
pub fn check_result(ok: bool, elapsed_us: u64) -> crate::probe::ProbeResult {
    crate::probe::ProbeResult {
        kind: if ok { conndoc_facts::ConnectKind::Connected } else { conndoc_facts::ConnectKind::Refused },
        elapsed: Duration::from_micros(elapsed_us),
        errno: None,
        unresolved: false,
        peer_close: None,
    }
}

/// A config of `targets` (name, URL), each down after one failure and up after one success,
/// with 1 s history buckets.
pub fn targets_config(targets: &[(&str, &str)]) -> crate::config::Config {
    let mut text = String::from("history_resolution = \"1s\"\n");
    for (name, url) in targets {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nurl = \"{url}\"\nfailures_before_down = 1\nsuccesses_before_up = 1\n"
        ));
    }
    crate::config::load_str(std::path::Path::new("w.toml"), &text, &Default::default()).expect("test config")
}
