//! Minimal netlink client (rtnetlink, sock_diag, nfnetlink): open, send a request, iterate
//! messages and attributes.
//!
//! Everything that touches bytes is a pure function over `&[u8]` (tested against byte
//! fixtures); [`Socket`] only moves those bytes to and from the kernel with a deadline.
//! A netlink socket belongs to the network namespace of the thread that opened it, so a
//! caller that entered another namespace with `setns` on its own thread opens the socket
//! there.

pub mod bytecode;
pub mod diag;
pub mod route;
mod wire;

pub use diag::{Bytecode, Cond, DiagMsg, DiagRequest};
pub use route::{addresses, addresses_small, links, neighbours, IfAddr, Link, NeighEntry, RouteAsker};
pub use wire::{attrs, encode, messages, Attr, Message, NLMSG_HDRLEN};

use socket2::{Domain, Protocol, Socket as RawSocket, Type};
use std::io::Read;
use std::time::{Duration, Instant};

/// Deadline of one dump unless the caller gives another.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("open netlink socket ({family}): {source}")]
    Open { family: &'static str, source: std::io::Error },
    #[error("send {what} request: {source}")]
    Send { what: &'static str, source: std::io::Error },
    #[error("receive {what} reply: {source}")]
    Recv { what: &'static str, source: std::io::Error },
    #[error("{what} dump did not finish within {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{what} request refused by the kernel: {errno}")]
    Kernel { what: &'static str, errno: std::io::Error },
    #[error("malformed {what} message: {detail}")]
    Parse { what: &'static str, detail: String },
    #[error("{what} replies were lost (ENOBUFS or an interrupted dump): read again")]
    Lost { what: &'static str },
}

/// Which netlink family to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Route,
    SockDiag,
    Netfilter,
}

impl Family {
    fn proto(self) -> i32 {
        match self {
            Family::Route => libc::NETLINK_ROUTE,
            Family::SockDiag => libc::NETLINK_SOCK_DIAG,
            Family::Netfilter => libc::NETLINK_NETFILTER,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::Route => "NETLINK_ROUTE",
            Family::SockDiag => "NETLINK_SOCK_DIAG",
            Family::Netfilter => "NETLINK_NETFILTER",
        }
    }
}

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
/// The dump was interrupted by a table change: its content may be inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

/// A netlink socket in the calling thread's network namespace.
pub struct Socket {
    sock: RawSocket,
    seq: u32,
    buf: Vec<u8>,
    /// The receive timeout last set on the socket: not set again while it is within 1 ms
    /// of what the deadline allows (one setsockopt per request instead of per datagram).
    timeout: Option<Duration>,
}

impl Socket {
    pub fn open(family: Family) -> Result<Socket, NetlinkError> {
        let open_err = |source| NetlinkError::Open { family: family.name(), source };
        let sock = RawSocket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(family.proto())))
            .map_err(open_err)?;
        // Big dumps arrive in bursts; a larger buffer avoids ENOBUFS on busy hosts.
        let _ = sock.set_recv_buffer_size(1 << 20);
        Ok(Socket { sock, seq: 0, buf: vec![0; 64 * 1024], timeout: None })
    }

    /// A socket with the kernel's default receive buffer, for small dumps done many times
    /// (one per namespace, `nsfind`): a dump it cannot hold comes back as lost, and the
    /// caller reads again with [`Socket::open`].
    pub fn open_small(family: Family) -> Result<Socket, NetlinkError> {
        let open_err = |source| NetlinkError::Open { family: family.name(), source };
        let sock = RawSocket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(family.proto())))
            .map_err(open_err)?;
        Ok(Socket { sock, seq: 0, buf: vec![0; 64 * 1024], timeout: None })
    }

    /// Send a dump request (`msg_type`, payload) and hand every reply message to `each`
    /// until NLMSG_DONE, an error, or `deadline` passes. Returns whether the kernel flagged
    /// the dump as interrupted (NLM_F_DUMP_INTR).
    pub fn dump(
        &mut self,
        what: &'static str,
        msg_type: u16,
        payload: &[u8],
        deadline: Instant,
        each: impl FnMut(&Message<'_>) -> Result<(), NetlinkError>,
    ) -> Result<bool, NetlinkError> {
        match self.request(what, msg_type, NLM_F_DUMP, payload, deadline, each)? {
            Replies::Done { interrupted } => Ok(interrupted),
            Replies::Lost => Err(NetlinkError::Lost { what }),
        }
    }

    /// Send one request (`msg_type`, `flags` besides NLM_F_REQUEST, payload) and hand each
    /// reply message of it to `each`, until NLMSG_DONE (dumps) or the ACK, an error, or
    /// `deadline`. Lost replies (ENOBUFS, an overrun, a dump the kernel asks to restart)
    /// come back as [`Replies::Lost`] for the caller to read again.
    pub fn request<E: From<NetlinkError>>(
        &mut self,
        what: &'static str,
        msg_type: u16,
        flags: u16,
        payload: &[u8],
        deadline: Instant,
        mut each: impl FnMut(&Message<'_>) -> Result<(), E>,
    ) -> Result<Replies, E> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = wire::encode(msg_type, NLM_F_REQUEST | flags, seq, payload);
        loop {
            match self.sock.send(&req) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(NetlinkError::Send { what, source }.into()),
            }
        }
        let start = Instant::now();
        let mut interrupted = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetlinkError::Timeout { what, after: start.elapsed() }.into());
            }
            // Each read waits at most the timeout set, which must not outlast the deadline
            // by more than a millisecond.
            let want = left.max(Duration::from_millis(1));
            if self.timeout.is_none_or(|t| t < want || t > want + Duration::from_millis(1)) {
                self.sock.set_read_timeout(Some(want)).map_err(|source| NetlinkError::Recv { what, source })?;
                self.timeout = Some(want);
            }
            let n = match (&self.sock).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(NetlinkError::Timeout { what, after: start.elapsed() }.into())
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Replies::Lost),
                Err(source) => return Err(NetlinkError::Recv { what, source }.into()),
            };
            if n == 0 {
                return Err(NetlinkError::Parse { what, detail: "empty datagram".into() }.into());
            }
            for msg in messages(&self.buf[..n]) {
                let msg = msg.map_err(|detail| NetlinkError::Parse { what, detail })?;
                if msg.seq != seq {
                    continue; // a late reply to an earlier request
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.ty {
                    NLMSG_DONE => {
                        // DONE carries the dump's int status; a negative one is an error.
                        if let Some(code) = wire::read_i32(msg.payload, 0) {
                            if code < 0 {
                                return Err(NetlinkError::Kernel {
                                    what,
                                    errno: std::io::Error::from_raw_os_error(-code),
                                }
                                .into());
                            }
                        }
                        return Ok(Replies::Done { interrupted });
                    }
                    NLMSG_ERROR => {
                        let code = wire::read_i32(msg.payload, 0)
                            .ok_or_else(|| NetlinkError::Parse { what, detail: "short NLMSG_ERROR".into() })?;
                        if code == 0 {
                            return Ok(Replies::Done { interrupted }); // the ACK
                        }
                        if code == -libc::ENOBUFS || code == -libc::EINTR || code == -libc::EAGAIN {
                            return Ok(Replies::Lost);
                        }
                        let errno = std::io::Error::from_raw_os_error(-code);
                        return Err(NetlinkError::Kernel { what, errno }.into());
                    }
                    NLMSG_OVERRUN => return Ok(Replies::Lost),
                    _ => each(&msg)?,
                }
            }
        }
    }
}

impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// How the replies to one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    Done {
        /// The kernel flagged the dump as interrupted (NLM_F_DUMP_INTR).
        interrupted: bool,
    },
    /// Replies were lost (ENOBUFS, an overrun, EINTR/EAGAIN from the kernel): read again.
    Lost,
}
