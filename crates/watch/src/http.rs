//! The read-only HTTP server (hyper): the dashboard, `/api/targets`, `/metrics`.
//!
//! Only GET and HEAD. Hostile clients are bounded: a request head must arrive complete
//! within [`HEAD_TIMEOUT`] and fit in [`MAX_HEAD`]; at most [`MAX_CONNECTIONS`] are open, and
//! when a new one comes in at the limit the oldest connection that is not being answered is
//! closed to make room (idle and slow clients go first, a scrape in progress is kept). Pages
//! are rendered on blocking threads, never on the runtime worker that runs the probes; the
//! snapshot a page renders is built there too, when the page asks (crate::snapshot).

use crate::snapshot::ReadModel;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Open connections at most; a new one beyond sheds the oldest idle one.
pub const MAX_CONNECTIONS: usize = 256;
/// A request head must be complete this long after the connection opened (or, on a
/// kept-alive connection, after the previous answer).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted (hyper answers 431 beyond).
pub const MAX_HEAD: usize = 16 * 1024;
/// No connection lives longer than this, busy or not.
const MAX_LIFETIME: Duration = Duration::from_secs(120);

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, body: body.into() }
    }
    fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }
}

/// Which `Host` headers the server answers (DNS rebinding: a page on an attacker's name
/// that resolves to this address must not read the dashboard).
#[derive(Debug, Clone)]
pub struct HostPolicy {
    names: Vec<String>,
    any: bool,
}

impl HostPolicy {
    pub fn new(cfg: &crate::config::Config) -> HostPolicy {
        let mut names: Vec<String> = cfg.allowed_hosts.clone();
        names.push("localhost".into());
        if let Some(h) = url::Url::parse(&cfg.dashboard_url).ok().and_then(|u| u.host_str().map(str::to_string)) {
            names.push(h.trim_matches(['[', ']']).to_ascii_lowercase());
        }
        HostPolicy { any: names.iter().any(|n| n == "*"), names }
    }
    /// IP literals (no rebinding is possible to them), `localhost`, the host of
    /// `dashboard_url` and `allowed_hosts`. A request without `Host` (HTTP/1.0) is allowed.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(h) = host else { return true };
        if self.any {
            return true;
        }
        let h = h.trim().to_ascii_lowercase();
        let name = match h.strip_prefix('[') {
            Some(r) => r.split(']').next().unwrap_or("").to_string(),
            None => h
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h.as_str(), |x| x.0)
                .to_string(),
        };
        let name = name.trim_end_matches('.');
        name.parse::<std::net::IpAddr>().is_ok() || self.names.iter().any(|n| n == name)
    }
}

/// One open connection as the shedding sees it.
struct Conn {
    busy: AtomicBool,
    close: Notify,
}

#[derive(Default)]
struct Conns {
    next: u64,
    /// By id, so the first entries are the oldest.
    open: BTreeMap<u64, Arc<Conn>>,
}

impl Conns {
    /// Register a new connection; at the limit, close the oldest idle one first. None when
    /// every open connection is answering a request (the new one is refused).
    fn admit(&mut self, limit: usize) -> Option<(u64, Arc<Conn>)> {
        if self.open.len() >= limit {
            let victim = self.open.iter().find(|(_, c)| !c.busy.load(Relaxed)).map(|(id, _)| *id)?;
            if let Some(c) = self.open.remove(&victim) {
                c.close.notify_one();
            }
        }
        self.next += 1;
        let c = Arc::new(Conn { busy: AtomicBool::new(false), close: Notify::new() });
        self.open.insert(self.next, c.clone());
        Some((self.next, c))
    }
}

pub async fn serve(d: Arc<ReadModel>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let hosts = Arc::new(HostPolicy::new(&d.config()));
    loop {
        let (sock, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                // EMFILE and friends: wait a little instead of spinning.
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
            },
            _ = stop.changed() => return,
        };
        let Some((id, conn)) = conns.lock().unwrap().admit(MAX_CONNECTIONS) else {
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (d, hosts, conns) = (d.clone(), hosts.clone(), conns.clone());
        tokio::spawn(async move {
            let c = conn.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (d, hosts, c) = (d.clone(), hosts.clone(), c.clone());
                async move {
                    c.busy.store(true, Relaxed);
                    let r = answer(d, &hosts, req).await;
                    c.busy.store(false, Relaxed);
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).max_buf_size(MAX_HEAD).keep_alive(true);
            let serving = http.serve_connection(TokioIo::new(sock), svc);
            tokio::select! {
                _ = serving => {}
                _ = conn.close.notified() => {}
                _ = tokio::time::sleep(MAX_LIFETIME) => {}
            }
            conns.lock().unwrap().open.remove(&id);
        });
        // Let the new connection read its request before more accepts can shed it: a
        // client that sends its head at once becomes busy (kept) rather than oldest-idle.
        tokio::task::yield_now().await;
    }
}

async fn answer(d: Arc<ReadModel>, hosts: &HostPolicy, req: Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let head_only = req.method() == Method::HEAD;
    let host = req.headers().get(HOST).map(|h| h.to_str().unwrap_or("\u{fffd}").to_string());
    let r = if req.method() != Method::GET && !head_only {
        Response::text(405, "read-only: only GET and HEAD")
    } else if !hosts.allows(host.as_deref()) {
        Response::text(
            421,
            "this dashboard does not answer to that Host name (DNS rebinding protection): add it to allowed_hosts",
        )
    } else {
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let d2 = d.clone();
        match tokio::task::spawn_blocking(move || route(&d2, &path, query.as_deref())).await {
            Ok(r) => r,
            Err(_) => Response::text(500, "rendering failed"),
        }
    };
    let large = r.body.len() > 1 << 20;
    let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = out.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if r.status == 405 {
        h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if large {
        crate::sys::trim_heap();
    }
    out
}

/// A path segment percent-decoded into bytes, then checked to be UTF-8.
fn decode_name(s: &str) -> Result<String, Response> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    String::from_utf8(bytes).map_err(|_| Response::text(400, "the target name in the path is not UTF-8"))
}

/// Answer one GET for `path` (`query`: the index's filters). Blocking: reads the history
/// database.
pub fn route(d: &ReadModel, path: &str, query: Option<&str>) -> Response {
    match path {
        "/" => Response::new(200, "text/html; charset=utf-8", crate::dashboard::index(d, query)),
        "/metrics" => Response::new(200, crate::metrics::CONTENT_TYPE, crate::metrics::render(d)),
        "/api/targets" => Response::new(200, "application/json", crate::dashboard::api_targets(d)),
        "/-/healthy" => Response::text(200, "ok"),
        p => {
            if let Some(name) = p.strip_prefix("/target/") {
                let name = match decode_name(name) {
                    Ok(n) => n,
                    Err(r) => return r,
                };
                match crate::dashboard::target_page(d, &name) {
                    Some(html) => Response::new(200, "text/html; charset=utf-8", html),
                    None => Response::text(404, &format!("no target named {name:?}")),
                }
            } else if let Some(name) = p.strip_prefix("/api/targets/") {
                let name = match decode_name(name) {
                    Ok(n) => n,
                    Err(r) => return r,
                };
                match crate::dashboard::api_target(d, &name) {
                    Some(json) => Response::new(200, "application/json", json),
                    None => Response::text(404, &format!("no target named {name:?}")),
                }
            } else {
                Response::text(404, "not found: try /, /api/targets, /metrics")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_decode_to_bytes_then_utf8() {
        assert_eq!(decode_name("api%2Dv2").ok().as_deref(), Some("api-v2"));
        assert_eq!(decode_name("%C3%A9").ok().as_deref(), Some("é"));
        // A percent escape cut inside a UTF-8 character, and a lone continuation byte.
        for bad in ["%a\u{e9}", "%C3", "%A9x", "%ff"] {
            let r = decode_name(bad);
            if bad == "%a\u{e9}" {
                // "%a" is not an escape: kept literally, the é is valid UTF-8.
                assert_eq!(r.ok().as_deref(), Some("%a\u{e9}"));
            } else {
                assert_eq!(r.err().map(|r| r.status), Some(400), "{bad}");
            }
        }
    }

    #[test]
    fn host_policy() {
        let mut cfg = crate::config::load_str(
            std::path::Path::new("w.toml"),
            "dashboard_url = \"https://watch.example.com/\"\nallowed_hosts = [\"Node1.internal\"]\n",
            &Default::default(),
        )
        .unwrap();
        let p = HostPolicy::new(&cfg);
        for ok in [
            None,
            Some("127.0.0.1:9464"),
            Some("[::1]:9464"),
            Some("10.1.2.3"),
            Some("localhost:9464"),
            Some("watch.example.com"),
            Some("node1.internal:80"),
        ] {
            assert!(p.allows(ok), "{ok:?}");
        }
        for bad in [Some("evil.example:9464"), Some("localhost.evil.example"), Some("127.0.0.1.evil.example")] {
            assert!(!p.allows(bad), "{bad:?}");
        }
        cfg.allowed_hosts = vec!["*".into()];
        assert!(HostPolicy::new(&cfg).allows(Some("evil.example")));
    }

    /// Issue 15: rendering never runs on the runtime worker that schedules the probes. A
    /// runtime with one worker; the source notes the thread every snapshot is built on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn pages_and_their_snapshots_are_built_off_the_runtime_worker() {
        use crate::config::Config;
        use crate::snapshot::{Snapshot, Source};
        use std::thread::ThreadId;
        struct Where(Arc<Mutex<Vec<ThreadId>>>, Arc<Config>);
        impl Source for Where {
            fn build(&self) -> Arc<Snapshot> {
                self.0.lock().unwrap().push(std::thread::current().id());
                Arc::new(Snapshot::new(0, Vec::new(), self.1.clone()))
            }
            fn config(&self) -> Arc<Config> {
                self.1.clone()
            }
        }
        let dir = crate::testkit::TempDir::new("http-threads");
        let cfg = crate::config::load_str(std::path::Path::new("w.toml"), "", &Default::default()).unwrap();
        let h = Arc::new(crate::history::History::open(&dir.path("h.db")).unwrap());
        let built: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
        let m = Arc::new(ReadModel::new(Where(built.clone(), Arc::new(cfg)), Arc::default(), h, 0.0));
        let worker = tokio::spawn(async { std::thread::current().id() }).await.unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        let server = tokio::spawn(serve(m, l, rx));
        let paths = ["/", "/metrics", "/api/targets", "/target/x", "/api/targets/x"];
        for p in paths {
            let (code, _) = crate::testkit::get(addr, p).await;
            assert!(code == 200 || code == 404, "{p}: {code}");
        }
        let _ = stop.send(true);
        let _ = server.await;
        let built = built.lock().unwrap().clone();
        assert_eq!(built.len(), paths.len(), "one snapshot per page, built when asked");
        assert!(built.iter().all(|t| *t != worker), "built on the worker: {built:?} (worker {worker:?})");
    }

    #[test]
    fn shedding_closes_the_oldest_idle_connection() {
        let mut c = Conns::default();
        let a = c.admit(2).unwrap();
        let b = c.admit(2).unwrap();
        a.1.busy.store(true, Relaxed);
        // At the limit: a is answering, so b (idle) makes room.
        let n = c.admit(2).unwrap();
        assert!(c.open.contains_key(&a.0) && c.open.contains_key(&n.0) && !c.open.contains_key(&b.0));
        n.1.busy.store(true, Relaxed);
        assert!(c.admit(2).is_none(), "all busy: the new one is refused");
    }
}
