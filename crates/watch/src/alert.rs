//! Alert payloads (generic JSON, Slack-compatible, PagerDuty Events v2) and their delivery
//! over HTTP with a deadline. Alerts go through the outbox in the history database, so an
//! alert that cannot be delivered is retried with backoff and never dropped.

use crate::config::{ReceiverConfig, ReceiverKind};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What an alert is about.
#[derive(Debug, Clone)]
pub struct AlertInfo<'a> {
    pub target: &'a str,
    pub url: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// `firing` or `resolved`.
    pub status: &'a str,
    pub state: &'a str,
    pub cause: &'a str,
    pub summary: &'a str,
    pub since: &'a str,
    pub event_id: i64,
    pub dashboard: String,
    /// The diagnosis rendered for people (firing alerts only).
    pub details: Option<&'a str>,
}

/// The body for one receiver kind. PagerDuty's routing key is added at send time so the
/// secret is never stored in the outbox.
pub fn payload(kind: ReceiverKind, a: &AlertInfo, host: &str) -> Value {
    match kind {
        ReceiverKind::Webhook => json!({
            "version": "1",
            "status": a.status,
            "target": a.target,
            "url": a.url,
            "labels": a.labels,
            "state": a.state,
            "cause": a.cause,
            "summary": a.summary,
            "since": a.since,
            "event_id": a.event_id,
            "dashboard": a.dashboard,
            "details": a.details,
            "agent": host,
        }),
        ReceiverKind::Slack => {
            let text = if a.status == "firing" {
                format!(
                    ":red_circle: *{}* is down: `{}`, {}\n<{}|dashboard>",
                    a.target, a.cause, a.summary, a.dashboard
                )
            } else {
                format!(
                    ":large_green_circle: *{}* is up again (was `{}`)\n<{}|dashboard>",
                    a.target, a.cause, a.dashboard
                )
            };
            let mut v = json!({ "text": text });
            if let (Some(d), "firing") = (a.details, a.status) {
                v["attachments"] = json!([{ "color": "danger", "text": format!("```{d}```") }]);
            }
            v
        }
        ReceiverKind::Pagerduty => json!({
            "event_action": if a.status == "firing" { "trigger" } else { "resolve" },
            "dedup_key": format!("conndoc/{host}/{}", a.target),
            "payload": {
                "summary": format!("{} is down: {} ({})", a.target, a.cause, a.summary),
                "source": host,
                "severity": "critical",
                "component": a.target,
                "class": a.cause,
                "custom_details": { "url": a.url, "cause": a.cause, "labels": a.labels, "since": a.since, "details": a.details },
            },
            "links": [{ "href": a.dashboard, "text": "conndoc dashboard" }],
            "client": "conndoc",
        }),
    }
}

/// An `http://` or `https://` URL to deliver to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let (tls, rest) = match (s.strip_prefix("https://"), s.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => return Err(format!("{s:?}: expected an http:// or https:// URL")),
        };
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if auth.contains('@') {
            return Err(format!("{s:?}: credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(r) = auth.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| format!("{s:?}: malformed IPv6 literal"))?;
            let port = r[close + 1..].strip_prefix(':').map(|p| p.parse::<u16>()).transpose();
            (r[..close].to_string(), port)
        } else {
            match auth.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse::<u16>()).transpose()),
                None => (auth.to_string(), Ok(None)),
            }
        };
        let port = port.map_err(|_| format!("{s:?}: invalid port"))?.unwrap_or(if tls { 443 } else { 80 });
        if host.is_empty() || port == 0 {
            return Err(format!("{s:?}: missing host or port"));
        }
        Ok(HttpUrl { tls, host, port, path: path.to_string() })
    }
}

fn request_head(u: &HttpUrl, len: usize) -> String {
    let host_hdr =
        if u.host.contains(':') { format!("[{}]:{}", u.host, u.port) } else { format!("{}:{}", u.host, u.port) };
    format!(
        "POST {} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: conndoc/{}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        u.path,
        env!("CARGO_PKG_VERSION"),
    )
}

fn status_of(url: &str, buf: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(buf);
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{url}: no HTTP status in the answer"))?;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(format!("{url}: HTTP {code}"))
    }
}

/// POST a JSON body; Ok on a 2xx answer within the deadline. `ca_file` adds trusted CAs
/// for https (the system store is always used).
pub async fn post_json(
    url: &str,
    body: &[u8],
    deadline: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<u16, String> {
    let u = HttpUrl::parse(url)?;
    if u.tls {
        let (url, body, ca) = (url.to_string(), body.to_vec(), ca_file.map(|p| p.to_path_buf()));
        return tokio::task::spawn_blocking(move || post_tls(&u, &url, &body, deadline, ca.as_deref()))
            .await
            .unwrap_or_else(|e| Err(format!("{e}")));
    }
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((u.host.as_str(), u.port))
            .await
            .map_err(|e| format!("connect {}:{}: {e}", u.host, u.port))?;
        s.write_all(request_head(&u, body.len()).as_bytes()).await.map_err(|e| format!("sending to {url}: {e}"))?;
        s.write_all(body).await.map_err(|e| format!("sending to {url}: {e}"))?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        // The status line is all we need; stop reading once it is complete.
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
            let n = s.read(&mut chunk).await.map_err(|e| format!("reading answer from {url}: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        status_of(url, &buf)
    };
    match tokio::time::timeout(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("{url}: no answer within {}", crate::config::fmt_duration(deadline))),
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(p) = ca_file {
        let pem = std::fs::read(p).map_err(|e| format!("reading CA file {}: {e}", p.display()))?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            let c = c.map_err(|e| format!("CA file {}: {e}", p.display()))?;
            roots.add(c).map_err(|e| format!("CA file {}: {e}", p.display()))?;
        }
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(std::sync::Arc::new(cfg))
}

/// HTTPS delivery on a blocking thread: rustls over a std socket with timeouts.
fn post_tls(
    u: &HttpUrl,
    url: &str,
    body: &[u8],
    deadline: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<u16, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let start = std::time::Instant::now();
    let cfg = tls_config(ca_file)?;
    let name = rustls::pki_types::ServerName::try_from(u.host.clone()).map_err(|e| format!("{url}: {e}"))?;
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", u.host))?
        .next()
        .ok_or_else(|| format!("resolving {}: no address", u.host))?;
    let tcp = std::net::TcpStream::connect_timeout(&addr, deadline).map_err(|e| format!("connect {addr}: {e}"))?;
    let left = deadline.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
    tcp.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| format!("{url}: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request_head(u, body.len()).as_bytes()).map_err(|e| format!("sending to {url}: {e}"))?;
    tls.write_all(body).map_err(|e| format!("sending to {url}: {e}"))?;
    tls.flush().map_err(|e| format!("sending to {url}: {e}"))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("reading answer from {url}: {e}")),
        }
    }
    status_of(url, &buf)
}

/// The body actually sent for an outbox payload (adds PagerDuty's routing key).
pub fn wire_body(r: &ReceiverConfig, stored: &str) -> Vec<u8> {
    if r.kind == ReceiverKind::Pagerduty {
        if let (Ok(mut v), Some(k)) = (serde_json::from_str::<Value>(stored), &r.routing_key) {
            v["routing_key"] = Value::String(k.expose().to_string());
            return serde_json::to_vec(&v).unwrap_or_default();
        }
    }
    stored.as_bytes().to_vec()
}

/// Delay before the next attempt: 1 s doubling per attempt, capped.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let d = Duration::from_secs(1).saturating_mul(1u32 << attempts.min(20));
    d.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(labels: &BTreeMap<String, String>) -> AlertInfo<'_> {
        AlertInfo {
            target: "api",
            url: "tcp://127.0.0.1:8100",
            labels,
            status: "firing",
            state: "down",
            cause: "no-listener",
            summary: "nothing listens on 127.0.0.1:8100",
            since: "2026-11-21T04:00:00Z",
            event_id: 7,
            dashboard: "http://127.0.0.1:9464/target/api".into(),
            details: Some("no-listener: …"),
        }
    }

    #[test]
    fn payload_shapes() {
        let l = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let g = payload(ReceiverKind::Webhook, &info(&l), "node1");
        assert_eq!(g["cause"], "no-listener");
        assert_eq!(g["state"], "down");
        assert_eq!(g["labels"]["env"], "prod");
        assert_eq!(g["dashboard"], "http://127.0.0.1:9464/target/api");
        let s = payload(ReceiverKind::Slack, &info(&l), "node1");
        assert!(s["text"].as_str().unwrap().contains("`no-listener`"));
        let p = payload(ReceiverKind::Pagerduty, &info(&l), "node1");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "conndoc/node1/api");
        assert_eq!(p["payload"]["severity"], "critical");
        assert!(p.get("routing_key").is_none(), "the key is added at send time only");
        let mut r = info(&l);
        r.status = "resolved";
        assert_eq!(payload(ReceiverKind::Pagerduty, &r, "n")["event_action"], "resolve");
    }

    #[test]
    fn urls() {
        assert_eq!(
            HttpUrl::parse("http://127.0.0.1:9000/hook?a=1").unwrap(),
            HttpUrl { tls: false, host: "127.0.0.1".into(), port: 9000, path: "/hook?a=1".into() }
        );
        assert_eq!(HttpUrl::parse("http://[::1]:81").unwrap().host, "::1");
        assert_eq!(HttpUrl::parse("http://relay").unwrap().port, 80);
        let s = HttpUrl::parse("https://hooks.slack.com/services/x").unwrap();
        assert!(s.tls);
        assert_eq!((s.port, s.path.as_str()), (443, "/services/x"));
        for bad in ["ftp://x", "http://:80/", "http://h:0/", "http://h:x/", "https://"] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(0, cap), Duration::from_secs(1));
        assert_eq!(backoff(3, cap), Duration::from_secs(8));
        assert_eq!(backoff(30, cap), cap);
    }
}
