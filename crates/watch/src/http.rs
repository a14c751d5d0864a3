//! A small read-only HTTP/1.1 server: the dashboard, `/api/targets`, `/metrics`.
//! Only GET and HEAD; every connection has a read deadline and is closed after one answer.

use crate::daemon::Daemon;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

pub async fn serve(d: Arc<Daemon>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let conns = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            continue; // too many open connections: drop this one
        };
        let d = d.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), handle(d, sock)).await;
            drop(permit);
        });
    }
}

async fn handle(d: Arc<Daemon>, mut sock: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        let n = match tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 16 * 1024 {
            return write(&mut sock, Response::text(431, "request head too large"), false).await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let head_only = method == "HEAD";
    let resp = if method != "GET" && !head_only {
        Response::text(405, "read-only: only GET and HEAD")
    } else {
        route(&d, target).await
    };
    let large = resp.body.len() > 1 << 20;
    let r = write(&mut sock, resp, head_only).await;
    if large {
        crate::daemon::trim_heap();
    }
    r
}

async fn write(sock: &mut TcpStream, r: Response, head_only: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    sock.write_all(out.as_bytes()).await?;
    if !head_only {
        sock.write_all(&r.body).await?;
    }
    sock.shutdown().await
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn route(d: &Arc<Daemon>, target: &str) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    match path {
        "/" => Response::new(200, "text/html; charset=utf-8", crate::dashboard::index(d)),
        "/metrics" => {
            let d = d.clone();
            let body = tokio::task::spawn_blocking(move || crate::metrics::render(&d)).await.unwrap_or_default();
            Response::new(200, crate::metrics::CONTENT_TYPE, body)
        }
        "/api/targets" => Response::new(200, "application/json", crate::dashboard::api_targets(d)),
        "/-/healthy" => Response::text(200, "ok"),
        p => {
            if let Some(name) = p.strip_prefix("/target/") {
                let name = percent_decode(name);
                match crate::dashboard::target_page(d, &name).await {
                    Some(html) => Response::new(200, "text/html; charset=utf-8", html),
                    None => Response::text(404, &format!("no target named {name:?}")),
                }
            } else if let Some(name) = p.strip_prefix("/api/targets/") {
                let name = percent_decode(name);
                match crate::dashboard::api_target(d, &name).await {
                    Some(json) => Response::new(200, "application/json", json),
                    None => Response::text(404, &format!("no target named {name:?}")),
                }
            } else {
                Response::text(404, "not found: try /, /api/targets, /metrics")
            }
        }
    }
}
