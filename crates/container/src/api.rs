//! A read-only Docker Engine API client over its unix socket: GET requests only, one
//! HTTP/1.1 connection per client (hyper), one deadline for everything, a size limit on
//! every body.

use crate::ContainerError;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Where the engine listens: `DOCKER_HOST` if set (only `unix://` is read), else the
/// default socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// A `DOCKER_HOST` that is not a unix socket (tcp://, ssh://): not read.
    Unsupported(String),
}

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

impl Endpoint {
    /// From the value of `DOCKER_HOST` (None or empty: the default socket).
    pub fn from_docker_host(v: Option<&str>) -> Endpoint {
        match v.map(str::trim).filter(|v| !v.is_empty()) {
            None => Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)),
            Some(v) => match v.strip_prefix("unix://") {
                Some(p) if p.starts_with('/') => Endpoint::Unix(PathBuf::from(p)),
                _ => Endpoint::Unsupported(v.to_string()),
            },
        }
    }
    pub fn from_env() -> Endpoint {
        Endpoint::from_docker_host(std::env::var("DOCKER_HOST").ok().as_deref())
    }
    pub fn label(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Unsupported(v) => v.clone(),
        }
    }
}

/// One open connection to the engine.
pub struct Client {
    sender: SendRequest<Empty<Bytes>>,
    deadline: Instant,
    socket: PathBuf,
}

impl Client {
    /// Connect within the deadline.
    pub async fn connect(socket: &Path, deadline: Instant) -> Result<Client, ContainerError> {
        let err = |e: std::io::Error| ContainerError::Connect { socket: socket.display().to_string(), source: e };
        let stream = tokio::time::timeout_at(deadline, UnixStream::connect(socket))
            .await
            .map_err(|_| ContainerError::Deadline { what: format!("connecting to {}", socket.display()) })?
            .map_err(err)?;
        let (sender, conn) =
            tokio::time::timeout_at(deadline, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
                .await
                .map_err(|_| ContainerError::Deadline { what: format!("handshake with {}", socket.display()) })?
                .map_err(|e| ContainerError::Http { path: "/".into(), message: e.to_string() })?;
        // The connection task ends when the sender is dropped or the deadline's runtime ends.
        tokio::spawn(conn);
        Ok(Client { sender, deadline, socket: socket.to_path_buf() })
    }

    /// GET `path`; the body must be at most `limit` bytes. Returns the status and body.
    pub async fn get(&mut self, path: &str, limit: usize) -> Result<(u16, Bytes), ContainerError> {
        let http = |m: String| ContainerError::Http { path: path.to_string(), message: m };
        let work = async {
            self.sender.ready().await.map_err(|e| http(e.to_string()))?;
            let req = hyper::Request::get(path)
                .header("host", "docker")
                .header("user-agent", concat!("conndoc/", env!("CARGO_PKG_VERSION")))
                .body(Empty::<Bytes>::new())
                .map_err(|e| http(e.to_string()))?;
            let resp = self.sender.send_request(req).await.map_err(|e| http(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| http(format!("reading the body (limit {limit} bytes): {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout_at(self.deadline, work)
            .await
            .map_err(|_| ContainerError::Deadline { what: format!("GET {path} from {}", self.socket.display()) })?
    }

    /// GET a JSON document that must answer 200.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        limit: usize,
    ) -> Result<T, ContainerError> {
        let (status, body) = self.get(path, limit).await?;
        if status != 200 {
            let msg = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            return Err(ContainerError::Status { path: path.to_string(), status, message: msg });
        }
        serde_json::from_slice(&body)
            .map_err(|e| ContainerError::Json { path: path.to_string(), message: e.to_string() })
    }
}

/// Split Docker's multiplexed log stream (non-TTY containers) into its text: frames of
/// `[stream, 0, 0, 0, size u32 BE]` + payload. A stream that does not start with a valid
/// header (a TTY container's raw output) is returned as it is.
pub fn demux_logs(body: &[u8]) -> String {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while !rest.is_empty() {
        let valid = rest.len() >= 8 && rest[0] <= 2 && rest[1..4] == [0, 0, 0];
        if !valid {
            if out.is_empty() {
                return String::from_utf8_lossy(body).into_owned();
            }
            break; // a truncated frame at the size limit
        }
        let size = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let end = (8 + size).min(rest.len());
        out.extend_from_slice(&rest[8..end]);
        rest = &rest[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values() {
        assert_eq!(Endpoint::from_docker_host(None), Endpoint::Unix(DEFAULT_SOCKET.into()));
        assert_eq!(Endpoint::from_docker_host(Some("")), Endpoint::Unix(DEFAULT_SOCKET.into()));
        assert_eq!(Endpoint::from_docker_host(Some("unix:///tmp/d.sock")), Endpoint::Unix("/tmp/d.sock".into()));
        assert!(matches!(Endpoint::from_docker_host(Some("tcp://10.0.0.1:2375")), Endpoint::Unsupported(_)));
        assert!(matches!(Endpoint::from_docker_host(Some("unix://relative")), Endpoint::Unsupported(_)));
    }

    /// Bytes as dockerd 20.10 sent them for `logs?stdout=1&stderr=1` of a non-TTY container
    /// (one stderr frame, one stdout frame), recorded in the lab.
    #[test]
    fn demultiplexes_frames() {
        let mut b = vec![2, 0, 0, 0, 0, 0, 0, 12];
        b.extend_from_slice(b"Fatal error\n");
        b.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 3]);
        b.extend_from_slice(b"ok\n");
        assert_eq!(demux_logs(&b), "Fatal error\nok\n");
        // Truncated last frame (size limit): what arrived is kept.
        let mut t = vec![1, 0, 0, 0, 0, 0, 0, 100];
        t.extend_from_slice(b"partial");
        assert_eq!(demux_logs(&t), "partial");
        // A TTY container: raw text.
        assert_eq!(demux_logs(b"plain text\n"), "plain text\n");
        assert_eq!(demux_logs(b""), "");
        // A short garbage header after a frame ends the text there.
        let mut g = vec![1, 0, 0, 0, 0, 0, 0, 2];
        g.extend_from_slice(b"a\n\x09\x09");
        assert_eq!(demux_logs(&g), "a\n");
    }
}
