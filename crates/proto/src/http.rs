//! HTTP/1.x response head parsed from bytes (on `httparse`): status line and headers.

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
    #[error("HTTP response head with more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("HTTP response head larger than {MAX_HEAD} bytes")]
    TooLarge,
}

/// Header lines read from one response head (a probe needs two or three of them).
pub const MAX_HEADERS: usize = 128;
/// Longest status or header line an error repeats.
const ECHO: usize = 200;

/// Parse a response head from the front of `buf` (with `httparse`): `Ok(Some((head, bytes
/// used)))` once the blank line ending the head is buffered, `Ok(None)` when more bytes are
/// needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    // Reject early, so a non-HTTP peer is named at its first bytes.
    let probe = &buf[..buf.len().min(5)];
    if !b"HTTP/".starts_with(probe) {
        return Err(HttpError::NotHttp(crate::resp::escape(&buf[..buf.len().min(32)])));
    }
    let status_line = || {
        let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        let line = &buf[..end.min(MAX_HEAD)];
        String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned()
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue | httparse::Error::NewLine) => {
            return Err(HttpError::BadHeader(bad_header_line(buf)))
        }
        Err(_) => return Err(HttpError::BadStatusLine(clip_echo(status_line()))),
    };
    let status = resp.code.unwrap_or(0);
    // RFC 9110 §15: 100–599. A 999 is a protocol violation, not an "HTTP error".
    if !(100..=599).contains(&status) {
        return Err(HttpError::StatusOutOfRange(clip_echo(status_line())));
    }
    let head = ResponseHead {
        status_line: status_line(),
        version: format!("HTTP/1.{}", resp.version.unwrap_or(1)),
        status,
        reason: resp.reason.unwrap_or("").to_string(),
        headers: resp
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_string()))
            .collect(),
    };
    Ok(Some((head, used)))
}

fn clip_echo(mut s: String) -> String {
    s.truncate(conndoc_facts::protocol::clip(&s, ECHO).len());
    s
}

/// The header line httparse refused, for the error: the first one without a colon, with
/// white space before its colon, or with a control byte (httparse says only which rule).
fn bad_header_line(buf: &[u8]) -> String {
    let head = &buf[..buf.len().min(MAX_HEAD)];
    let line = head
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| match l.iter().position(|&b| b == b':') {
            None => true,
            Some(c) => {
                c == 0
                    || l[..c].iter().any(|b| !b.is_ascii_graphic())
                    || l[c + 1..].iter().any(|&b| b != b'\t' && (b < 0x20 || b == 0x7f))
            }
        })
        .unwrap_or(b"");
    clip_echo(String::from_utf8_lossy(line).into_owned())
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
    fn protocol_violations_are_named() {
        let e = parse_head(b"HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n").unwrap_err();
        assert_eq!(e, HttpError::StatusOutOfRange("HTTP/1.1 999 Weird".into()));
        assert!(matches!(parse_head(b"HTTP/1.1 099 Low\r\n\r\n"), Err(HttpError::StatusOutOfRange(_))));
        assert!(matches!(parse_head(b"HTTP/2 200 OK\r\n\r\n"), Err(HttpError::BadStatusLine(_))));
        let e = parse_head(b"HTTP/1.1 503 \x1b[2J\r\n\r\n").unwrap_err();
        assert_eq!(e, HttpError::BadStatusLine("HTTP/1.1 503 \x1b[2J".into()));
        let e = parse_head(b"HTTP/1.1 200 OK\r\nDate: x\r\nServer: evil\x1b[31m\r\n\r\n").unwrap_err();
        assert_eq!(e, HttpError::BadHeader("Server: evil\x1b[31m".into()));
        let e = parse_head(b"HTTP/1.1 200 OK\r\nServer : x\r\n\r\n").unwrap_err();
        assert_eq!(e, HttpError::BadHeader("Server : x".into()));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(parse_head(many.as_bytes()), Err(HttpError::TooManyHeaders));
        // An error repeats at most the start of a long line.
        let long = format!("HTTP/1.1 999 {}\r\n\r\n", "r".repeat(10_000));
        assert!(matches!(parse_head(long.as_bytes()), Err(HttpError::StatusOutOfRange(l)) if l.len() == ECHO));
    }

    #[test]
    fn request_is_http11_with_host() {
        let r = String::from_utf8(request("api.lab:8080", "/health?x=1")).unwrap();
        assert!(r.starts_with("GET /health?x=1 HTTP/1.1\r\nHost: api.lab:8080\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
