//! One TCP connect per address, each with its own deadline, classified by errno.

use conndoc_facts::resolve::MAX_ADDRESSES;
use conndoc_facts::{ConnectKind, ConnectProbe, Errno, Family, Micros, PeerClose, PeerCloseKind, Port};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Connect to every address at once and classify each result. Results keep the order of
/// `addrs`. The resolver keeps at most [`MAX_ADDRESSES`] addresses, and at most that many
/// threads connect, so every connect of a resolved target runs in parallel under one
/// deadline; a longer list (not from the resolver) waits for a free worker.
pub fn connect_all(addrs: &[IpAddr], port: Port, timeout: Duration) -> Vec<ConnectProbe> {
    connect_all_watched(addrs, port, timeout, None)
}

/// [`connect_all`], watching each opened connection for up to `watch` for a close or reset
/// by the peer (see [`connect_watched`]).
pub fn connect_all_watched(
    addrs: &[IpAddr],
    port: Port,
    timeout: Duration,
    watch: Option<Duration>,
) -> Vec<ConnectProbe> {
    crate::pool::map_bounded(addrs, MAX_ADDRESSES, |&a| connect_watched(a, port, timeout, watch))
}

/// [`connect_all_watched`], each connect also given up before its deadline once
/// `stop(address)` says so (asked every [`STOP_POLL`]): what another stage learnt makes
/// further waiting pointless. A connect given up so is a timeout whose `elapsed_us` is the
/// time it really waited.
pub fn connect_all_stoppable(
    addrs: &[IpAddr],
    port: Port,
    timeout: Duration,
    watch: Option<Duration>,
    stop: &(dyn Fn(IpAddr) -> bool + Sync),
) -> Vec<ConnectProbe> {
    crate::pool::map_bounded(addrs, MAX_ADDRESSES, |&a| connect_until(a, port, timeout, watch, &|| stop(a)))
}

/// How often a stoppable connect asks whether to give up.
pub const STOP_POLL: Duration = Duration::from_millis(10);

/// A connect to `address:port` with this deadline, before it has a result.
pub fn unstarted(address: IpAddr, port: Port, timeout: Duration) -> ConnectProbe {
    ConnectProbe {
        address,
        port,
        family: Family::of(&address),
        outcome: ConnectKind::Other.outcome(),
        kind: ConnectKind::Other,
        errno: None,
        elapsed_us: Micros(0),
        deadline_us: Micros::from_duration(timeout),
        local: None,
        syn_retransmits: None,
        peer_close: None,
    }
}

/// Connect once and classify. The socket is closed before returning.
pub fn connect_one(address: IpAddr, port: Port, timeout: Duration) -> ConnectProbe {
    connect_watched(address, port, timeout, None)
}

/// Connect once and classify; when it connects and `watch` is set, wait up to `watch` for
/// the peer to close or reset the connection before it sends anything — what a proxy with a
/// dead backend does right after accepting. A peer that sends data, or stays quiet for the
/// whole window, is healthy.
pub fn connect_watched(address: IpAddr, port: Port, timeout: Duration, watch: Option<Duration>) -> ConnectProbe {
    connect_until(address, port, timeout, watch, &|| false)
}

/// A non-blocking connect waited for in slices of [`STOP_POLL`], so that `stop` can end
/// the wait before the deadline; the result is classified like a blocking connect's.
fn connect_stoppable(sock: &Socket, sa: &SockAddr, timeout: Duration, stop: &dyn Fn() -> bool) -> std::io::Result<()> {
    sock.set_nonblocking(true)?;
    let r = (|| {
        match sock.connect(sa) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop() {
                return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            if wait_writable(sock, left.min(STOP_POLL))? {
                return match sock.take_error()? {
                    None => Ok(()),
                    Some(e) => Err(e),
                };
            }
        }
    })();
    sock.set_nonblocking(false)?;
    r
}

/// poll(2) for POLLOUT (the connect finished, either way) for up to `wait`.
#[allow(unsafe_code)]
fn wait_writable(sock: &Socket, wait: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(sock), events: libc::POLLOUT, revents: 0 };
    let ms = i32::try_from(wait.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for an fd owned by `sock`, which stays open for the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    match rc {
        -1 => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0),
    }
}

/// [`connect_watched`], given up when `stop` says so.
fn connect_until(
    address: IpAddr,
    port: Port,
    timeout: Duration,
    watch: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> ConnectProbe {
    let sa = SocketAddr::new(address, port.get());
    let start = Instant::now();
    let mut probe = unstarted(address, port, timeout);
    let sock = match Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => {
            probe.errno = e.raw_os_error().map(Errno::from_raw);
            probe.elapsed_us = Micros::from_duration(start.elapsed());
            return probe;
        }
    };
    let result = connect_stoppable(&sock, &SockAddr::from(sa), timeout, stop);
    probe.elapsed_us = Micros::from_duration(start.elapsed());
    probe.local = sock.local_addr().ok().and_then(|l| l.as_socket()).filter(|l| l.port() != 0);
    let kind = match &result {
        Ok(()) => ConnectKind::Connected,
        Err(e) => classify(e),
    };
    if let Err(e) = &result {
        probe.errno = Some(match e.raw_os_error() {
            Some(code) => Errno::from_raw(code),
            None if kind == ConnectKind::Timeout => Errno("ETIMEDOUT".into()),
            None => Errno(e.to_string()),
        });
    }
    if kind == ConnectKind::Timeout {
        probe.syn_retransmits = syn_retransmits(&sock);
    }
    if let (ConnectKind::Connected, Some(w)) = (kind, watch.filter(|w| !w.is_zero())) {
        probe.peer_close = peer_close(&sock, start, w);
    }
    probe.kind = kind;
    probe.outcome = kind.outcome();
    probe
}

/// A close or reset by the peer within `watch` of the connect (a 1-byte peek, never consuming).
fn peer_close(sock: &Socket, connected_at: Instant, watch: Duration) -> Option<PeerClose> {
    let watch_start = Instant::now();
    sock.set_read_timeout(Some(watch)).ok()?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    let kind = match sock.peek(&mut buf) {
        Ok(0) => PeerCloseKind::Eof,
        Ok(_) => return None,
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => PeerCloseKind::Reset,
        Err(_) => return None, // EAGAIN: quiet for the whole window, as a healthy server may be
    };
    Some(PeerClose {
        kind,
        after_us: Micros::from_duration(connected_at.elapsed()),
        watched_us: Micros::from_duration(watch_start.elapsed()),
    })
}

/// Classify a connect error the way every part of conndoc does (the watch daemon too).
pub fn classify(e: &std::io::Error) -> ConnectKind {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ConnectKind::Refused,
        Some(libc::ETIMEDOUT) => ConnectKind::Timeout,
        Some(libc::EHOSTUNREACH) => ConnectKind::HostUnreachable,
        Some(libc::ENETUNREACH) => ConnectKind::NetworkUnreachable,
        Some(libc::EADDRNOTAVAIL) => ConnectKind::NoLocalAddress,
        Some(libc::EPERM) | Some(libc::EACCES) => ConnectKind::PermissionDenied,
        Some(libc::ECONNRESET) => ConnectKind::Reset,
        Some(_) => ConnectKind::Other,
        None if e.kind() == std::io::ErrorKind::TimedOut => ConnectKind::Timeout,
        None => ConnectKind::Other,
    }
}

/// SYN retransmissions so far, from TCP_INFO (`tcpi_retransmits`, byte 2 of struct tcp_info).
fn syn_retransmits(sock: &Socket) -> Option<u8> {
    let info = tcp_info_bytes(sock)?;
    Some(info[2])
}

// SAFETY boundary: getsockopt(TCP_INFO) into a buffer we own, with its true length.
#[allow(unsafe_code)]
fn tcp_info_bytes(sock: &Socket) -> Option<[u8; 104]> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 104];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the fd is valid for the lifetime of `sock`; buf/len describe writable memory.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len)
    };
    (rc == 0 && len as usize >= 8).then_some(buf)
}

/// `connect(AF_UNSPEC)`: abort the socket's connection (an RST to the peer when it was
/// established) and leave the socket unconnected, ready to connect again — a connect check
/// then costs no socket creation and leaves no TIME_WAIT behind.
#[allow(unsafe_code)]
pub fn disconnect(sock: &Socket) -> std::io::Result<()> {
    let sa = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: `sa` is a valid, initialised sockaddr whose size is passed with it; the fd is
    // owned by `sock` and stays open for the call.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn refused_and_connected_on_loopback() {
        // A port this test owns: bound, then closed, so nothing listens on it.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port()).unwrap();
        let p = connect_one("127.0.0.1".parse().unwrap(), port, Duration::from_secs(1));
        assert_eq!(p.kind, ConnectKind::Connected);
        drop(l);
        let p = connect_one("127.0.0.1".parse().unwrap(), port, Duration::from_secs(1));
        assert_eq!(p.kind, ConnectKind::Refused);
        assert_eq!(p.errno.unwrap().as_str(), "ECONNREFUSED");
        assert!(p.local.is_some(), "a refused connect was bound to a source port");
    }

    #[test]
    fn accepted_then_closed_is_seen() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port()).unwrap();
        let closer = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            drop(c);
            // A quiet healthy peer next.
            let (c, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            drop(c);
        });
        let w = Some(Duration::from_millis(200));
        let p = connect_watched("127.0.0.1".parse().unwrap(), port, Duration::from_secs(1), w);
        assert_eq!(p.kind, ConnectKind::Connected);
        let pc = p.peer_close.expect("closed by the peer");
        assert_eq!(pc.kind, PeerCloseKind::Eof);
        assert!(!p.ok());
        let p = connect_watched("127.0.0.1".parse().unwrap(), port, Duration::from_secs(1), w);
        assert!(p.peer_close.is_none() && p.ok(), "{p:?}");
        closer.join().unwrap();
    }

    #[test]
    fn classify_errnos() {
        let e = |c| std::io::Error::from_raw_os_error(c);
        assert_eq!(classify(&e(libc::EADDRNOTAVAIL)), ConnectKind::NoLocalAddress);
        assert_eq!(classify(&e(libc::ENETUNREACH)), ConnectKind::NetworkUnreachable);
        assert_eq!(classify(&std::io::Error::new(std::io::ErrorKind::TimedOut, "t")), ConnectKind::Timeout);
    }
}
