//! HTTP/1.x response head parsed from bytes: status line and headers.

/// Largest response head we wait for.
pub const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status line exactly as sent, without CRLF.
    pub status_line: String,
    /// `HTTP/1.1`
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("not an HTTP response: {0:?}")]
    NotHttp(String),
    #[error("malformed HTTP status line {0:?}")]
    BadStatusLine(String),
    #[error("protocol violation: HTTP status outside 100-599 in status line {0:?}")]
    StatusOutOfRange(String),
    #[error("malformed HTTP header line {0:?}")]
    BadHeader(String),
    #[error("HTTP response head larger than {MAX_HEAD} bytes")]
    TooLarge,
}

/// Parse a response head from the front of `buf`: `Ok(Some((head, bytes used)))` once the
/// blank line ending the head is buffered, `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    // Reject early, so a non-HTTP peer is named at its first bytes.
    let probe = &buf[..buf.len().min(5)];
    if !b"HTTP/".starts_with(probe) {
        return Err(HttpError::NotHttp(crate::resp::escape(&buf[..buf.len().min(32)])));
    }
    let Some(end) = find(buf, b"\r\n\r\n").map(|p| (p, 4)).or_else(|| find(buf, b"\n\n").map(|p| (p, 2))) else {
        return if buf.len() > MAX_HEAD { Err(HttpError::TooLarge) } else { Ok(None) };
    };
    let head = String::from_utf8_lossy(&buf[..end.0]);
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or("").to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    let code = parts.next().unwrap_or("");
    let reason = parts.next().unwrap_or("").to_string();
    let bad = || HttpError::BadStatusLine(status_line.clone());
    if !version.starts_with("HTTP/") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    // RFC 9110 §15: 100–599. A 999 is a protocol violation, not an "HTTP error".
    if !(100..=599).contains(&status) {
        return Err(HttpError::StatusOutOfRange(status_line.clone()));
    }
    let mut headers = Vec::new();
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { return Err(HttpError::BadHeader(l.to_string())) };
        if k.is_empty() || k.contains(' ') {
            return Err(HttpError::BadHeader(l.to_string()));
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Some((ResponseHead { status_line, version, status, reason, headers }, end.0 + end.1)))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The request conndoc sends: a plain GET that asks the server to close afterwards.
pub fn request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: conndoc/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NGINX_502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 04:40:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 157\r\nConnection: close\r\n\r\n<html>\r\n<head><title>502 Bad Gateway</title></head>";

    #[test]
    fn nginx_502() {
        let (h, used) = parse_head(NGINX_502).unwrap().unwrap();
        assert_eq!(h.status, 502);
        assert_eq!(h.status_line, "HTTP/1.1 502 Bad Gateway");
        assert_eq!(h.reason, "Bad Gateway");
        assert_eq!(h.header("server"), Some("nginx/1.22.1"));
        assert_eq!(&NGINX_502[used..used + 6], b"<html>");
    }

    #[test]
    fn via_headers_repeat() {
        let b = b"HTTP/1.1 200 OK\r\nVia: 1.1 edge\r\nvia: 1.1 gw (nginx)\r\n\r\n";
        let (h, _) = parse_head(b).unwrap().unwrap();
        assert_eq!(h.all("via"), vec!["1.1 edge".to_string(), "1.1 gw (nginx)".to_string()]);
        assert_eq!(h.header("server"), None);
    }

    #[test]
    fn bare_lf_and_empty_reason() {
        let (h, _) = parse_head(b"HTTP/1.0 204\nServer: x\n\n").unwrap().unwrap();
        assert_eq!(h.status, 204);
        assert_eq!(h.reason, "");
    }

    #[test]
    fn incomplete() {
        for p in [&b""[..], b"HTT", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nServer: a\r\n\r"] {
            assert_eq!(parse_head(p).unwrap(), None, "{}", crate::resp::escape(p));
        }
    }

    #[test]
    fn not_http() {
        assert!(matches!(parse_head(b"-ERR unknown command"), Err(HttpError::NotHttp(_))));
        assert!(matches!(parse_head(b"\x15\x03\x01\x00\x02\x02\x50"), Err(HttpError::NotHttp(_))));
        assert!(matches!(parse_head(b"HTTP/1.1 20 OK\r\n\r\n"), Err(HttpError::BadStatusLine(_))));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"), Err(HttpError::BadHeader(_))));
        let big = [b"HTTP/1.1 200 OK\r\n".as_slice(), &vec![b'a'; MAX_HEAD + 1]].concat();
        assert!(matches!(parse_head(&big), Err(HttpError::TooLarge)));
    }

    #[test]
    fn request_is_http11_with_host() {
        let r = String::from_utf8(request("api.lab:8080", "/health?x=1")).unwrap();
        assert!(r.starts_with("GET /health?x=1 HTTP/1.1\r\nHost: api.lab:8080\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
