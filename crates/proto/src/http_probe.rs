//! The HTTP(S) probe: one GET with phase timings (connect, TLS, first byte, headers), the
//! status line and the `Server`/`Via` headers.

use crate::conn;
use crate::http;
use crate::tls::TlsSetup;
use crate::{confirm_tls_port, mismatch_from_first_bytes};
use conndoc_facts::protocol::{
    clip, HttpFacts, MismatchDirection, ProtocolKind, ProtocolProbe, TlsMismatch, REPLY_KEEP,
};
use conndoc_facts::{Micros, Port};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct HttpOptions<'a> {
    /// The Host header (`name:port` as the user wrote it).
    pub host_header: &'a str,
    pub path: &'a str,
    pub tls: Option<&'a TlsSetup>,
    pub timeout: Duration,
}

/// `Via` headers kept (one per proxy on the way; more is not a path a person reads).
const MAX_VIA: usize = 16;

/// nginx's answer to plain HTTP on a TLS port (a 400 with this sentence in the body).
const NGINX_PLAIN_TO_TLS: &str = "The plain HTTP request was sent to HTTPS port";

pub fn probe(addr: SocketAddr, o: &HttpOptions<'_>) -> ProtocolProbe {
    let port = Port::new(addr.port()).unwrap_or(Port::new(80).expect("non-zero"));
    let mut p = ProtocolProbe::empty(addr.ip(), port, ProtocolKind::Http, o.tls.is_some());
    let req = http::request(o.host_header, o.path);
    let mut h = HttpFacts {
        request_line: String::from_utf8_lossy(&req[..req.iter().position(|&b| b == b'\r').unwrap_or(0)]).into(),
        ..Default::default()
    };
    let deadline = Instant::now() + o.timeout;
    let start = Instant::now();
    let tcp = match conn::connect(addr, deadline) {
        Ok(t) => t,
        Err(e) => {
            p.error = Some(format!("connect to {addr}: {e}"));
            return p;
        }
    };
    h.connect_us = Some(Micros::from_duration(start.elapsed()));
    p.connect_us = h.connect_us;
    let mut c = match crate::secure(tcp, o.tls, || confirm_plain_http(addr, o, deadline)) {
        crate::Secured::Ready(c, tls) => {
            h.tls_us = tls.as_ref().and_then(|t| t.handshake_us);
            p.tls = tls;
            c
        }
        crate::Secured::Failed(tls, mismatch) => {
            h.tls_us = tls.handshake_us;
            p.tls = Some(tls);
            p.tls_mismatch = mismatch;
            p.http = Some(h);
            return p;
        }
    };
    let sent = Instant::now();
    if let Err(e) = c.write_all(&req).and_then(|_| c.flush()) {
        h.error = Some(format!("sending the request: {e}"));
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut closed = false;
    let mut body_from = None;
    loop {
        match http::parse_head(&buf) {
            Ok(Some((head, used))) => {
                h.headers_us = Some(Micros::from_duration(sent.elapsed()));
                // Server-chosen text is kept bounded (the head itself is at most MAX_HEAD).
                h.status_line = Some(clip(&head.status_line, REPLY_KEEP).to_string());
                h.status = Some(head.status);
                h.server = head.header("server").map(|s| clip(s, REPLY_KEEP).to_string());
                h.via = head.all("via").iter().take(MAX_VIA).map(|v| clip(v, REPLY_KEEP).to_string()).collect();
                body_from = Some((head, used));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                h.error = Some(clip(&e.to_string(), REPLY_KEEP).to_string());
                break;
            }
        }
        if closed {
            h.error.get_or_insert_with(|| "connection closed by server before a complete response".into());
            break;
        }
        match c.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => {
                if buf.is_empty() {
                    h.first_byte_us = Some(Micros::from_duration(sent.elapsed()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) => {
                h.error = Some(match e.kind() {
                    std::io::ErrorKind::TimedOut => "deadline passed waiting for the response".into(),
                    _ => format!("reading the response: {e}"),
                });
                if buf.is_empty() {
                    break;
                }
                closed = true;
            }
        }
    }
    // A 400 from nginx may be its "plain HTTP to HTTPS port" page: read its short body.
    if let Some((head, used)) = &body_from {
        if head.status == 400 && o.tls.is_none() {
            let want: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0).min(4096);
            while buf.len() < used + want {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if String::from_utf8_lossy(&buf[*used..]).contains(NGINX_PLAIN_TO_TLS) {
                p.tls_mismatch = Some(TlsMismatch {
                    direction: MismatchDirection::PlaintextToTls,
                    observed: format!("{}: \"{NGINX_PLAIN_TO_TLS}\"", head.status_line),
                });
            }
        }
    }
    let first = c.tcp().first_bytes.clone();
    if o.tls.is_none() && h.status.is_none() && p.tls_mismatch.is_none() {
        // A TLS server closes on plaintext; one that stays silent is hung, not TLS.
        p.tls_mismatch = mismatch_from_first_bytes(&first, false).or_else(|| {
            if crate::looks_like_tls(&first) || !buf.is_empty() || !closed {
                None
            } else {
                confirm_tls_port(addr, deadline)
            }
        });
    }
    p.http = Some(h);
    p
}

/// The TLS handshake got no TLS answer: does a plaintext GET get an HTTP one?
/// Within the probe's own deadline: a follow-up never adds a second timeout to the run.
fn confirm_plain_http(addr: SocketAddr, o: &HttpOptions<'_>, deadline: Instant) -> Option<TlsMismatch> {
    let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
    let plain = HttpOptions { host_header: o.host_header, path: o.path, tls: None, timeout: left };
    let p = probe(addr, &plain);
    let line = p.http?.status_line?;
    Some(TlsMismatch {
        direction: MismatchDirection::TlsToPlaintext,
        observed: format!("the TLS handshake got no TLS answer; a plaintext GET on the same port got \"{line}\""),
    })
}
