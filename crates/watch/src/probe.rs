//! The cheap periodic health check: one async TCP connect with a deadline, classified the
//! way the client probe classifies it. The full diagnosis (engine + rules) only runs when
//! the state machine says a target went down.

use conndoc_facts::{ConnectKind, Host, PeerCloseKind, Target};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// How a probe's established connection is closed (`close` in the config, docs/watch.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Close {
    /// With a reset, like HAProxy's health checks: no FIN exchange and no TIME_WAIT socket
    /// left on the prober (at 2,000 probes/s a FIN close keeps ~120,000 of them), and the
    /// socket is reused for the next probe.
    #[default]
    Reset,
    /// With the normal FIN handshake, for servers that log or alarm on resets.
    Fin,
}

impl Close {
    pub fn as_str(self) -> &'static str {
        match self {
            Close::Reset => "rst",
            Close::Fin => "fin",
        }
    }
}

/// Sockets kept between probes with [`Close::Reset`]. A probe on loopback (or any
/// handshake that is over when `connect` returns) then costs a connect, a second connect
/// that reports the result and, after a success, a disconnect (which sends the reset) and
/// the read of the error it leaves: 4 system calls instead of socket + setsockopt + connect +
/// 2 epoll_ctl + getsockopt + close, and the kernel neither creates nor frees a socket. A
/// slower handshake is waited for with the socket registered in the reactor for that
/// probe only. At most as many sockets are kept as probes run at once.
#[derive(Default)]
pub struct Sockets {
    v4: Mutex<Vec<Socket>>,
    v6: Mutex<Vec<Socket>>,
}

impl Sockets {
    fn list(&self, a: &SocketAddr) -> &Mutex<Vec<Socket>> {
        if a.is_ipv4() {
            &self.v4
        } else {
            &self.v6
        }
    }
    fn take(&self, a: &SocketAddr) -> std::io::Result<Socket> {
        if let Some(s) = self.list(a).lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(s);
        }
        Socket::new(Domain::for_address(*a), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))
    }
    fn put(&self, a: &SocketAddr, s: Socket) {
        self.list(a).lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
    /// Sockets kept now.
    pub fn kept(&self) -> usize {
        self.v4.lock().map_or(0, |v| v.len()) + self.v6.lock().map_or(0, |v| v.len())
    }
}

/// What one health check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeResult {
    pub kind: ConnectKind,
    pub elapsed: Duration,
    /// The errno behind a failure, when the kernel gave one.
    pub errno: Option<i32>,
    /// The name did not resolve (no address to connect to).
    pub unresolved: bool,
    /// The server accepted, then closed or reset the connection at once (docs/nat.md
    /// "Accepted, then closed"): a failure although the connect succeeded.
    pub peer_close: Option<PeerCloseKind>,
}

impl ProbeResult {
    pub fn ok(&self) -> bool {
        self.kind == ConnectKind::Connected && self.peer_close.is_none()
    }
    /// The coarse outcome label used in metrics (`connected`, `refused`, `timeout`, …).
    pub fn outcome_label(&self) -> &'static str {
        if self.unresolved {
            return "unresolved";
        }
        if self.peer_close.is_some() {
            return "closed";
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

/// How long a check of a `tcp://` target watches the connection it opened for a close or
/// reset by the server (the same window as the diagnosis, docs/nat.md "Accepted, then
/// closed": a proxy whose backend is down accepts, then closes within milliseconds).
pub const ACCEPT_WATCH: Duration = Duration::from_millis(150);

/// The accept watch of a check of `t` with this deadline: `tcp://` targets only (a server
/// that speaks first sends data, one that waits stays quiet: both healthy).
pub fn accept_watch(t: &Target, timeout: Duration) -> Option<Duration> {
    (t.scheme == conndoc_facts::Scheme::Tcp).then(|| ACCEPT_WATCH.min(timeout))
}

/// Connect to the target within `timeout`: the first address that connects makes it
/// healthy. The connection is closed with a reset on a fresh socket.
pub async fn check(t: &Target, timeout: Duration) -> ProbeResult {
    check_with(t, timeout, Close::Reset, None).await
}

/// [`check`] closing the way `close` says, reusing `sockets` for [`Close::Reset`], and
/// watching a `tcp://` connection for [`ACCEPT_WATCH`] (see [`accept_watch`]). `elapsed`
/// is the connect's time; the watch is not latency.
pub async fn check_with(t: &Target, timeout: Duration, close: Close, sockets: Option<&Sockets>) -> ProbeResult {
    let start = Instant::now();
    let watch = accept_watch(t, timeout);
    let addrs = addresses(t, timeout).await;
    if addrs.is_empty() {
        return ProbeResult {
            kind: ConnectKind::Other,
            elapsed: start.elapsed(),
            errno: None,
            unresolved: true,
            peer_close: None,
        };
    }
    let mut last = ProbeResult {
        kind: ConnectKind::Other,
        elapsed: Duration::ZERO,
        errno: None,
        unresolved: false,
        peer_close: None,
    };
    for a in addrs {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            last = ProbeResult {
                kind: ConnectKind::Timeout,
                elapsed: start.elapsed(),
                errno: None,
                unresolved: false,
                peer_close: None,
            };
            break;
        }
        let c = match (close, sockets) {
            (Close::Reset, Some(pool)) => connect_reusing(pool, a, left, watch).await,
            _ => connect_one(a, left, close, watch).await,
        };
        last = ProbeResult {
            kind: c.kind,
            elapsed: c.elapsed,
            errno: c.errno,
            unresolved: false,
            peer_close: c.peer_close,
        };
        last.elapsed += start.elapsed().saturating_sub(c.total);
        if last.ok() {
            break;
        }
    }
    last
}

/// One connect's result: its kind and errno, the connect's own time, the time including
/// the accept watch, and a close by the server during the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connect {
    pub kind: ConnectKind,
    pub errno: Option<i32>,
    pub elapsed: Duration,
    pub total: Duration,
    pub peer_close: Option<PeerCloseKind>,
}

impl Connect {
    fn failed(kind: ConnectKind, errno: Option<i32>, start: Instant) -> Connect {
        let t = start.elapsed();
        Connect { kind, errno, elapsed: t, total: t, peer_close: None }
    }
}

/// How the server ended the connection right after accepting it, from a 1-byte peek on a
/// readable socket: None while it is open (quiet or sending data).
fn peeked(r: std::io::Result<usize>) -> Option<PeerCloseKind> {
    match r {
        Ok(0) => Some(PeerCloseKind::Eof),
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => Some(PeerCloseKind::Reset),
        _ => None,
    }
}

/// One connect on a fresh socket. With [`Close::Reset`] it is closed with an RST
/// (SO_LINGER 0) so thousands of probes a second leave no TIME_WAIT sockets behind to
/// exhaust the local port range. With `watch`, an open connection is watched that long
/// for a close by the server.
pub async fn connect_one(a: SocketAddr, timeout: Duration, close: Close, watch: Option<Duration>) -> Connect {
    let start = Instant::now();
    let sock = match if a.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() } {
        Ok(s) => s,
        Err(e) => return Connect::failed(classify(&e), e.raw_os_error(), start),
    };
    if close == Close::Reset {
        let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    }
    match tokio::time::timeout(timeout, sock.connect(a)).await {
        Ok(Ok(stream)) => {
            let elapsed = start.elapsed();
            let mut peer_close = None;
            if let Some(w) = watch {
                peer_close = watch_close(socket2::SockRef::from(&stream), w).await;
            }
            Connect { kind: ConnectKind::Connected, errno: None, elapsed, total: start.elapsed(), peer_close }
        }
        Ok(Err(e)) => Connect::failed(classify(&e), e.raw_os_error(), start),
        Err(_) => Connect::failed(ConnectKind::Timeout, None, start),
    }
}

/// One connect on a kept socket (see [`Sockets`]). The socket goes back to the pool after
/// a result the kernel has fully settled (connected and reset, or refused); after a
/// timeout or an unexpected error it is closed instead. With `watch`, an open connection
/// is watched that long for a close by the server before it is reset.
pub async fn connect_reusing(pool: &Sockets, a: SocketAddr, timeout: Duration, watch: Option<Duration>) -> Connect {
    let start = Instant::now();
    let (sock, r) = match handshake(pool, a, timeout).await {
        Ok(x) => x,
        Err(c) => return Connect::failed(c.0, c.1, start),
    };
    let elapsed = start.elapsed();
    let peer_close = match (&r, watch) {
        (Ok(()), Some(w)) => watch_close(socket2::SockRef::from(&sock), w).await,
        _ => None,
    };
    let (kind, errno) = settle(pool, a, sock, r);
    Connect { kind, errno, elapsed, total: start.elapsed(), peer_close }
}

/// The handshake on a kept socket: the socket and how its connect ended, or (kind, errno)
/// when it never ended (timeout) or could not start.
async fn handshake(
    pool: &Sockets,
    a: SocketAddr,
    timeout: Duration,
) -> Result<(Socket, std::io::Result<()>), (ConnectKind, Option<i32>)> {
    let sock = pool.take(&a).map_err(|e| (classify(&e), e.raw_os_error()))?;
    let sa = socket2::SockAddr::from(a);
    match sock.connect(&sa) {
        Ok(()) => return Ok((sock, Ok(()))),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Ok((sock, Err(e))),
    }
    // On loopback the whole handshake ran inside that connect: ask before waiting.
    if let Some(r) = outcome(&sock, &sa) {
        return Ok((sock, r));
    }
    // Registered afresh for this wait only: readiness (closed states are sticky in the
    // reactor) never carries over from an earlier probe on the same socket.
    let afd = register(sock).map_err(|e| (classify(&e), e.raw_os_error()))?;
    let wait = async {
        loop {
            let mut ready = afd.writable().await?;
            match outcome(afd.get_ref(), &sa) {
                Some(r) => return r,
                // Woken but still connecting: a closed state cannot be cleared, so it
                // would wake us again at once; it means the connection is gone anyway.
                None if ready.ready().is_write_closed() => {
                    let e = afd.get_ref().take_error()?;
                    return Err(e.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::ECONNABORTED)));
                }
                None => ready.clear_ready(),
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => Ok((afd.into_inner(), r)),
        // Still in SYN_SENT: dropping the socket closes it.
        Err(_) => Err((ConnectKind::Timeout, None)),
    }
}

/// Whether the server closed or reset a connected socket within `watch`. A close stays
/// visible on the socket, so one non-blocking 1-byte peek (never consuming) at the end of
/// the window sees it: no readiness registration per check (at thousands of checks a
/// second that saves an epoll_ctl pair and a wake-up each), only a timer.
async fn watch_close(sock: socket2::SockRef<'_>, watch: Duration) -> Option<PeerCloseKind> {
    tokio::time::sleep(watch).await;
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    peeked(sock.peek(&mut b))
}

/// Connecting again reports how a non-blocking connect ended: 0 once connected, its error
/// once it failed (the kernel then also disconnects the socket), EALREADY (`None`) while
/// the handshake runs.
fn outcome(sock: &Socket, sa: &socket2::SockAddr) -> Option<std::io::Result<()>> {
    match sock.connect(sa) {
        Err(e) if e.raw_os_error() == Some(libc::EALREADY) => None,
        Err(e) if e.raw_os_error() == Some(libc::EISCONN) => Some(Ok(())),
        r => Some(r),
    }
}

/// Classify the result and return the socket to the pool when it can start a new connect.
fn settle(pool: &Sockets, a: SocketAddr, sock: Socket, r: std::io::Result<()>) -> (ConnectKind, Option<i32>) {
    match r {
        Ok(()) => {
            // AF_UNSPEC disconnects: an RST to the server, the port released, and
            // ECONNRESET left pending, which the take_error below clears.
            if conndoc_probe::connect::disconnect(&sock).is_ok() && sock.take_error().is_ok() {
                pool.put(&a, sock);
            }
            (ConnectKind::Connected, None)
        }
        Err(e) => {
            let kind = classify(&e);
            // A failed connect already left the socket disconnected (the kernel's
            // sock_error path), with its error consumed.
            if kind == ConnectKind::Refused {
                pool.put(&a, sock);
            }
            (kind, e.raw_os_error())
        }
    }
}

/// Watch the socket for writability only (the server's close needs no wake-up).
#[allow(unsafe_code)]
fn register(s: Socket) -> std::io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket owns its fd, which stays open and the same for the AsyncFd's whole
    // life (into_inner gives the same Socket back).
    unsafe { AsyncFd::register_with_interest(s, tokio::io::Interest::WRITABLE) }.map_err(std::io::Error::from)
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

    /// What the server sees of one probe: a reset (read fails) or a FIN (read returns 0).
    fn server_sees(l: &std::net::TcpListener) -> Result<usize, i32> {
        use std::io::Read;
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.read(&mut [0u8; 16]).map_err(|e| e.raw_os_error().unwrap_or(-1))
    }

    #[tokio::test]
    async fn kept_sockets_reset_reconnect_and_refuse() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::parse(&format!("127.0.0.1:{port}")).unwrap();
        let pool = Sockets::default();
        for _ in 0..5 {
            let r = check_with(&t, Duration::from_secs(2), Close::Reset, Some(&pool)).await;
            assert_eq!(r.kind, ConnectKind::Connected, "{r:?}");
            assert_eq!(server_sees(&l), Err(libc::ECONNRESET), "closed with a reset");
            assert_eq!(pool.kept(), 1, "one socket, reused");
        }
        drop(l);
        for _ in 0..3 {
            let r = check_with(&t, Duration::from_secs(2), Close::Reset, Some(&pool)).await;
            assert_eq!((r.kind, r.errno), (ConnectKind::Refused, Some(libc::ECONNREFUSED)), "{r:?}");
            assert_eq!(pool.kept(), 1);
        }
    }

    /// A kept socket that connected before, then a SYN nobody answers (the listener's
    /// accept queue is full, so its SYNs are dropped): the probe times out on time.
    #[tokio::test]
    async fn kept_socket_times_out_after_a_success() {
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        l.listen(1).unwrap();
        let port = l.local_addr().unwrap().as_socket().unwrap().port();
        let t = Target::parse(&format!("127.0.0.1:{port}")).unwrap();
        let pool = Sockets::default();
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let start = Instant::now();
            let r = check_with(&t, Duration::from_millis(300), Close::Reset, Some(&pool)).await;
            assert!(start.elapsed() < Duration::from_secs(2), "{r:?} took {:?}", start.elapsed());
            kinds.push(r.kind);
        }
        // Backlog 1 holds two connections that are never accepted.
        assert_eq!(kinds[..2], [ConnectKind::Connected, ConnectKind::Connected], "{kinds:?}");
        assert_eq!(kinds[2..], [ConnectKind::Timeout, ConnectKind::Timeout], "{kinds:?}");
    }

    #[tokio::test]
    async fn fin_close_and_fresh_socket_reset() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Target::parse(&format!("127.0.0.1:{port}")).unwrap();
        let r = check_with(&t, Duration::from_secs(2), Close::Fin, None).await;
        assert_eq!(r.kind, ConnectKind::Connected, "{r:?}");
        assert_eq!(server_sees(&l), Ok(0), "closed with a FIN");
        let r = check(&t, Duration::from_secs(2)).await;
        assert_eq!(r.kind, ConnectKind::Connected, "{r:?}");
        assert_eq!(server_sees(&l), Err(libc::ECONNRESET), "closed with a reset");
    }

    /// A server that accepts every connection and closes it at once: with a FIN, or with
    /// a reset (SO_LINGER 0), like a proxy whose backend is down. Serves `n` connections.
    fn accept_and_close(reset: bool, n: usize) -> (u16, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            for _ in 0..n {
                let Ok((c, _)) = l.accept() else { return };
                if reset {
                    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
                }
                drop(c);
            }
        });
        (port, h)
    }

    #[tokio::test]
    async fn accepted_then_closed_is_a_failure_on_every_path() {
        for (reset, want) in [(false, PeerCloseKind::Eof), (true, PeerCloseKind::Reset)] {
            let (port, server) = accept_and_close(reset, 3);
            let t = Target::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
            let pool = Sockets::default();
            for (close, pool) in [(Close::Reset, Some(&pool)), (Close::Reset, None), (Close::Fin, None)] {
                let r = check_with(&t, Duration::from_secs(2), close, pool).await;
                assert!(!r.ok(), "accepted, then closed: a failed check: {close:?} {r:?}");
                // A reset can overtake the end of the non-blocking connect: then the
                // connect itself reports ECONNRESET (a failure as well).
                if (r.kind, r.errno) != (ConnectKind::Reset, Some(libc::ECONNRESET)) || !reset {
                    assert_eq!((r.kind, r.peer_close), (ConnectKind::Connected, Some(want)), "{close:?} {r:?}");
                    assert_eq!(r.outcome_label(), "closed");
                }
                assert!(r.elapsed < ACCEPT_WATCH, "latency is the connect, not the watch: {r:?}");
            }
            server.join().unwrap();
        }
    }

    #[tokio::test]
    async fn a_quiet_or_talking_server_passes_the_accept_watch() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        // Talks first (a banner), then keeps the connection; the second connection stays quiet.
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            for i in 0..2 {
                let (mut c, _) = l.accept().unwrap();
                if i == 0 {
                    c.write_all(b"SSH-2.0-x\r\n").unwrap();
                }
                held.push(c);
            }
            std::thread::sleep(Duration::from_millis(500));
        });
        let t = Target::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
        let pool = Sockets::default();
        for _ in 0..2 {
            let start = Instant::now();
            let r = check_with(&t, Duration::from_secs(2), Close::Reset, Some(&pool)).await;
            assert!(r.ok() && r.peer_close.is_none(), "{r:?}");
            assert!(start.elapsed() < Duration::from_secs(1), "bounded by the watch: {:?}", start.elapsed());
        }
        server.join().unwrap();
        // Only tcp:// is watched: a redis:// connect check does not wait.
        let redis = Target::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        assert_eq!(accept_watch(&redis, Duration::from_secs(2)), None);
        assert_eq!(accept_watch(&t, Duration::from_millis(100)), Some(Duration::from_millis(100)));
    }
}
