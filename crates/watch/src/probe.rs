//! The cheap periodic health check: one async TCP connect with a deadline, classified the
//! way the client probe classifies it. The full diagnosis (engine + rules) only runs when
//! the state machine says a target went down.

use conndoc_facts::{ConnectKind, Host, Target};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What one health check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResult {
    pub kind: ConnectKind,
    pub elapsed: Duration,
    /// The errno behind a failure, when the kernel gave one.
    pub errno: Option<i32>,
    /// The name did not resolve (no address to connect to).
    pub unresolved: bool,
}

impl ProbeResult {
    pub fn ok(&self) -> bool {
        self.kind == ConnectKind::Connected
    }
    /// The coarse outcome label used in metrics (`connected`, `refused`, `timeout`, …).
    pub fn outcome_label(&self) -> &'static str {
        if self.unresolved {
            return "unresolved";
        }
        kind_label(self.kind)
    }
}

pub fn kind_label(k: ConnectKind) -> &'static str {
    // Metric label values: `other` where the report says `error`.
    match k {
        ConnectKind::Other => "other",
        k => k.as_str(),
    }
}

/// Classify a connect error exactly like the client probe does.
pub fn classify(e: &std::io::Error) -> ConnectKind {
    conndoc_probe::connect::classify(e)
}

/// Resolve the target's addresses (address literals need no lookup).
pub async fn addresses(t: &Target, deadline: Duration) -> Vec<SocketAddr> {
    match &t.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, t.port.get())],
        Host::Name(n) => {
            match tokio::time::timeout(deadline, tokio::net::lookup_host((n.as_str(), t.port.get()))).await {
                Ok(Ok(it)) => it.collect(),
                _ => Vec::new(),
            }
        }
    }
}

/// Connect to the target within `timeout`: the first address that connects makes it healthy.
pub async fn check(t: &Target, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let addrs = addresses(t, timeout).await;
    if addrs.is_empty() {
        return ProbeResult { kind: ConnectKind::Other, elapsed: start.elapsed(), errno: None, unresolved: true };
    }
    let mut last = ProbeResult { kind: ConnectKind::Other, elapsed: Duration::ZERO, errno: None, unresolved: false };
    for a in addrs {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            last = ProbeResult { kind: ConnectKind::Timeout, elapsed: start.elapsed(), errno: None, unresolved: false };
            break;
        }
        let (kind, errno) = connect_one(a, left).await;
        last = ProbeResult { kind, elapsed: start.elapsed(), errno, unresolved: false };
        if kind == ConnectKind::Connected {
            break;
        }
    }
    last
}

/// One connect. The socket is closed with an RST (SO_LINGER 0) so thousands of probes a
/// second leave no TIME_WAIT sockets behind to exhaust the local port range.
pub async fn connect_one(a: SocketAddr, timeout: Duration) -> (ConnectKind, Option<i32>) {
    let sock = match if a.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() } {
        Ok(s) => s,
        Err(e) => return (classify(&e), e.raw_os_error()),
    };
    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    match tokio::time::timeout(timeout, sock.connect(a)).await {
        Ok(Ok(_stream)) => (ConnectKind::Connected, None),
        Ok(Err(e)) => (classify(&e), e.raw_os_error()),
        Err(_) => (ConnectKind::Timeout, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classes() {
        let k = |n| classify(&std::io::Error::from_raw_os_error(n));
        assert_eq!(k(libc::ECONNREFUSED), ConnectKind::Refused);
        assert_eq!(k(libc::EHOSTUNREACH), ConnectKind::HostUnreachable);
        assert_eq!(k(libc::ENETUNREACH), ConnectKind::NetworkUnreachable);
        assert_eq!(k(libc::EADDRNOTAVAIL), ConnectKind::NoLocalAddress);
        assert_eq!(k(libc::EPERM), ConnectKind::PermissionDenied);
        assert_eq!(k(libc::ECONNRESET), ConnectKind::Reset);
        assert_eq!(k(libc::EIO), ConnectKind::Other);
    }

    #[tokio::test]
    async fn connected_then_refused_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::parse(&format!("127.0.0.1:{port}")).unwrap();
        let r = check(&t, Duration::from_secs(2)).await;
        assert_eq!(r.kind, ConnectKind::Connected, "{r:?}");
        drop(l);
        let r = check(&t, Duration::from_secs(2)).await;
        assert_eq!(r.kind, ConnectKind::Refused, "{r:?}");
        assert_eq!(r.errno, Some(libc::ECONNREFUSED));
        assert_eq!(r.outcome_label(), "refused");
    }
}
