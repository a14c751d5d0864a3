//! The AF_PACKET socket: the only place this crate talks to the kernel directly.

use crate::bpf::Insn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SO_ATTACH_FILTER: libc::c_int = 26;
const SOL_PACKET: libc::c_int = 263;
const PACKET_STATISTICS: libc::c_int = 6;
pub const PACKET_OUTGOING: u8 = 4;
const ETH_P_ALL: u16 = 0x0003;

/// A packet as received: bytes from the IP header on, link-level type and interface,
/// kernel receive time.
#[derive(Debug, Clone)]
pub struct Received {
    pub len: usize,
    pub pkttype: u8,
    pub ifindex: i32,
    pub ts_sec: i64,
    pub ts_usec: i64,
}

pub struct PacketSocket {
    fd: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[allow(unsafe_code)]
fn packet_socket() -> io::Result<OwnedFd> {
    // Protocol 0: no packet is queued before the filter is attached and the socket bound.
    // SAFETY: plain syscall with constant arguments; the fd is owned right away.
    let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[allow(unsafe_code)]
fn attach(fd: &OwnedFd, prog: &[Insn]) -> io::Result<()> {
    let mut filters: Vec<libc::sock_filter> =
        prog.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(filters.len()).map_err(|_| io::Error::other("BPF program too long"))?,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: fprog points at `filters`, which outlives the call; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[allow(unsafe_code)]
fn enable_timestamps(fd: &OwnedFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a c_int option value of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

#[allow(unsafe_code)]
fn bind_all(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = 0; // every interface
                         // SAFETY: sll is a valid sockaddr_ll and its size is passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

impl PacketSocket {
    /// Open a capture on every interface of the calling thread's network namespace with
    /// `prog` attached before any packet is queued. Needs CAP_NET_RAW (EPERM otherwise).
    pub fn open(prog: &[Insn]) -> io::Result<PacketSocket> {
        let fd = packet_socket()?;
        attach(&fd, prog)?;
        // Stamp packets on arrival (SCM_TIMESTAMP with each packet).
        enable_timestamps(&fd)?;
        bind_all(&fd)?;
        Ok(PacketSocket { fd })
    }

    /// Take one queued packet without waiting; None when the queue is empty. The receive
    /// time comes from the SCM_TIMESTAMP control message (SO_TIMESTAMP is on).
    #[allow(unsafe_code)]
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        // SAFETY: all-zero sockaddr_ll and msghdr are valid values; the pointers set below
        // refer to locals that outlive the recvmsg call, with their true lengths.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = std::ptr::addr_of_mut!(sll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg describes valid, writable buffers (see above).
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        let (mut ts_sec, mut ts_usec) = (0i64, 0i64);
        // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen;
        // an SCM_TIMESTAMP payload is one timeval (read unaligned).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMP {
                    let tv: libc::timeval = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    ts_sec = tv.tv_sec;
                    ts_usec = tv.tv_usec;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Some(Received {
            len: (n as usize).min(buf.len()),
            pkttype: sll.sll_pkttype,
            ifindex: sll.sll_ifindex,
            ts_sec,
            ts_usec,
        }))
    }

    /// Wait up to `ms` for a packet to become readable.
    #[allow(unsafe_code)]
    pub fn wait(&self, ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(r > 0)
    }

    /// Packets the kernel dropped because the socket buffer was full (resets on read).
    #[allow(unsafe_code)]
    pub fn drops(&self) -> io::Result<u32> {
        let mut st = [0u32; 2]; // struct tpacket_stats { tp_packets, tp_drops }
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: st has room for a tpacket_stats; len says so.
        cvt(unsafe {
            libc::getsockopt(self.fd.as_raw_fd(), SOL_PACKET, PACKET_STATISTICS, st.as_mut_ptr().cast(), &mut len)
        })?;
        Ok(st[1])
    }
}

/// The interface index of the loopback device in the calling thread's namespace.
#[allow(unsafe_code)]
pub fn loopback_index() -> i32 {
    // SAFETY: a NUL-terminated constant string.
    unsafe { libc::if_nametoindex(c"lo".as_ptr()) as i32 }
}
