//! Minimal rtnetlink/sock_diag client: open, send a dump request, iterate messages and
//! attributes.
//!
//! Everything that touches bytes is a pure function over `&[u8]` (tested against byte
//! fixtures); [`Socket`] only moves those bytes to and from the kernel with a deadline.
//! A netlink socket belongs to the network namespace of the thread that opened it, so a
//! caller that entered another namespace with `setns` on its own thread opens the socket
//! there.

pub mod diag;
pub mod route;
mod wire;

pub use diag::{Bytecode, Cond, DiagMsg, DiagRequest};
pub use route::{addresses, links, neighbours, IfAddr, Link, NeighEntry};
pub use wire::{attrs, messages, Attr, Message, NLMSG_HDRLEN};

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
}

/// Which netlink family to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Route,
    SockDiag,
}

impl Family {
    fn proto(self) -> i32 {
        match self {
            Family::Route => libc::NETLINK_ROUTE,
            Family::SockDiag => libc::NETLINK_SOCK_DIAG,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::Route => "NETLINK_ROUTE",
            Family::SockDiag => "NETLINK_SOCK_DIAG",
        }
    }
}

pub const NLM_F_REQUEST: u16 = 0x1;
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
}

impl Socket {
    pub fn open(family: Family) -> Result<Socket, NetlinkError> {
        let open_err = |source| NetlinkError::Open { family: family.name(), source };
        let sock = RawSocket::new(Domain::from(libc::AF_NETLINK), Type::RAW, Some(Protocol::from(family.proto())))
            .map_err(open_err)?;
        // Big dumps arrive in bursts; a larger buffer avoids ENOBUFS on busy hosts.
        let _ = sock.set_recv_buffer_size(1 << 20);
        Ok(Socket { sock, seq: 0, buf: vec![0; 64 * 1024] })
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
        mut each: impl FnMut(&Message<'_>) -> Result<(), NetlinkError>,
    ) -> Result<bool, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = wire::encode(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, payload);
        self.sock.send(&req).map_err(|source| NetlinkError::Send { what, source })?;
        let start = Instant::now();
        let mut interrupted = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetlinkError::Timeout { what, after: start.elapsed() });
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|source| NetlinkError::Recv { what, source })?;
            let n = match (&self.sock).read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(NetlinkError::Timeout { what, after: start.elapsed() })
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(NetlinkError::Recv { what, source }),
            };
            if n == 0 {
                return Err(NetlinkError::Parse { what, detail: "empty datagram".into() });
            }
            for msg in messages(&self.buf[..n]) {
                let msg = msg.map_err(|detail| NetlinkError::Parse { what, detail })?;
                if msg.seq != seq {
                    continue; // a late reply to an earlier request
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.ty {
                    NLMSG_DONE => {
                        // sock_diag puts an int status in DONE; a negative one is an error.
                        if let Some(code) = wire::read_i32(msg.payload, 0) {
                            if code < 0 {
                                return Err(NetlinkError::Kernel {
                                    what,
                                    errno: std::io::Error::from_raw_os_error(-code),
                                });
                            }
                        }
                        return Ok(interrupted);
                    }
                    NLMSG_ERROR => {
                        let code = wire::read_i32(msg.payload, 0)
                            .ok_or_else(|| NetlinkError::Parse { what, detail: "short NLMSG_ERROR".into() })?;
                        if code == 0 {
                            return Ok(interrupted); // an ACK
                        }
                        return Err(NetlinkError::Kernel { what, errno: std::io::Error::from_raw_os_error(-code) });
                    }
                    NLMSG_OVERRUN => return Err(NetlinkError::Parse { what, detail: "overrun".into() }),
                    _ => each(&msg)?,
                }
            }
        }
    }
}
