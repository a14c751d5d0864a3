//! Kernel and protocol values as their own types, so a port is never confused with a
//! queue length and every value is validated once, where it is parsed.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

/// A TCP/UDP port that can be dialled: 1..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Port(NonZeroU16);

impl Port {
    pub fn new(v: u16) -> Option<Port> {
        NonZeroU16::new(v).map(Port)
    }
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl TryFrom<u16> for Port {
    type Error = ValueError;
    fn try_from(v: u16) -> Result<Self, Self::Error> {
        Port::new(v).ok_or(ValueError::Port("0".into()))
    }
}
impl From<Port> for u16 {
    fn from(p: Port) -> u16 {
        p.get()
    }
}
impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}
impl FromStr for Port {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValueError::Port(s.to_string());
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: u32 = s.parse().map_err(|_| bad())?;
        u16::try_from(v).ok().and_then(Port::new).ok_or_else(bad)
    }
}

/// IP time-to-live / IPv6 hop limit of a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ttl(pub u8);

impl Ttl {
    /// The initial TTL the sender most likely used (the next power-of-two style default
    /// at or above the observed value: 64, 128 or 255), and so the hop count.
    pub fn likely_initial(self) -> u8 {
        match self.0 {
            0..=64 => 64,
            65..=128 => 128,
            _ => 255,
        }
    }
    pub fn hops(self) -> u8 {
        self.likely_initial() - self.0
    }
}

/// A socket queue length (accept queue, SYN queue) or backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct QueueLen(pub u32);

/// TCP socket states as the kernel numbers them (include/net/tcp_states.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SocketState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    NewSynRecv,
}

impl SocketState {
    /// From the kernel's numeric state (1..=12).
    pub fn from_kernel(v: u8) -> Option<SocketState> {
        use SocketState::*;
        Some(match v {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            _ => return None,
        })
    }
    pub fn kernel_value(self) -> u8 {
        use SocketState::*;
        match self {
            Established => 1,
            SynSent => 2,
            SynRecv => 3,
            FinWait1 => 4,
            FinWait2 => 5,
            TimeWait => 6,
            Close => 7,
            CloseWait => 8,
            LastAck => 9,
            Listen => 10,
            Closing => 11,
            NewSynRecv => 12,
        }
    }
    /// The kernel's name (`TIME_WAIT`), as in the JSON and in text output.
    pub fn as_str(self) -> &'static str {
        use SocketState::*;
        match self {
            Established => "ESTABLISHED",
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            FinWait1 => "FIN_WAIT1",
            FinWait2 => "FIN_WAIT2",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            Listen => "LISTEN",
            Closing => "CLOSING",
            NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

/// Address family of a socket or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: &std::net::IpAddr) -> Family {
        match addr {
            std::net::IpAddr::V4(_) => Family::Ipv4,
            std::net::IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// An errno by its symbolic name (`ECONNREFUSED`), the way engineers search for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Errno(pub String);

impl Errno {
    pub fn from_raw(code: i32) -> Errno {
        Errno(errno_name(code).map(str::to_string).unwrap_or_else(|| format!("errno {code}")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Linux errno values that a connect or a read can return, by name.
pub fn errno_name(code: i32) -> Option<&'static str> {
    Some(match code {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        32 => "EPIPE",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        115 => "EINPROGRESS",
        _ => return None,
    })
}

/// A duration in microseconds, the unit every elapsed time in a report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Micros(pub u64);

impl Micros {
    pub fn from_duration(d: std::time::Duration) -> Micros {
        Micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0)
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us < 1_000 {
            write!(f, "{us}µs")
        } else if us < 1_000_000 {
            write!(f, "{:.1}ms", us as f64 / 1_000.0)
        } else {
            write!(f, "{:.2}s", us as f64 / 1_000_000.0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid port {0:?}: expected a number from 1 to 65535")]
    Port(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_strictly() {
        assert_eq!("6379".parse::<Port>().unwrap().get(), 6379);
        assert_eq!("65535".parse::<Port>().unwrap().get(), 65535);
        for bad in ["0", "65536", "", "-1", "80a", " 80", "99999999999"] {
            assert!(bad.parse::<Port>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn port_json_rejects_zero() {
        assert!(serde_json::from_str::<Port>("0").is_err());
        assert_eq!(serde_json::from_str::<Port>("80").unwrap().get(), 80);
    }

    #[test]
    fn socket_states_round_trip() {
        for v in 1..=12u8 {
            assert_eq!(SocketState::from_kernel(v).unwrap().kernel_value(), v);
        }
        assert!(SocketState::from_kernel(0).is_none());
        assert!(SocketState::from_kernel(13).is_none());
    }

    #[test]
    fn ttl_hops() {
        assert_eq!(Ttl(64).hops(), 0);
        assert_eq!(Ttl(62).hops(), 2);
        assert_eq!(Ttl(255).hops(), 0);
        assert_eq!(Ttl(120).likely_initial(), 128);
    }

    #[test]
    fn errno_names() {
        assert_eq!(Errno::from_raw(111).as_str(), "ECONNREFUSED");
        assert_eq!(Errno::from_raw(9999).as_str(), "errno 9999");
    }
}
