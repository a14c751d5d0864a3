//! A TCP connection where every read and write has a deadline, optionally wrapped in TLS,
//! remembering the first bytes the server sent (to tell TLS from plaintext).

use crate::tls::{self, TlsSetup};
use conndoc_facts::protocol::TlsFacts;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How many of the server's first bytes are kept.
const KEEP: usize = 64;

/// A socket whose reads and writes fail with `TimedOut` once `deadline` has passed.
pub struct TimedTcp {
    pub sock: TcpStream,
    pub deadline: Instant,
    /// The first bytes read from the socket (raw, before any TLS decryption).
    pub first_bytes: Vec<u8>,
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
    }
    // A zero timeout would mean "block forever" to the socket API.
    Ok((deadline - now).max(Duration::from_millis(1)))
}

fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
    } else {
        e
    }
}

impl Read for TimedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.set_read_timeout(Some(remaining(self.deadline)?))?;
        let n = self.sock.read(buf).map_err(timeout_kind)?;
        if self.first_bytes.len() < KEEP {
            let take = n.min(KEEP - self.first_bytes.len());
            self.first_bytes.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

impl Write for TimedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.set_write_timeout(Some(remaining(self.deadline)?))?;
        self.sock.write(buf).map_err(timeout_kind)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// Connect with a deadline.
pub fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<TimedTcp> {
    let sock = TcpStream::connect_timeout(&addr, remaining(deadline)?)?;
    let _ = sock.set_nodelay(true);
    Ok(TimedTcp { sock, deadline, first_bytes: Vec::new() })
}

pub enum Conn {
    Plain(TimedTcp),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TimedTcp>>),
}

impl Conn {
    pub fn tcp(&self) -> &TimedTcp {
        match self {
            Conn::Plain(t) => t,
            Conn::Tls(s) => &s.sock,
        }
    }
    pub fn set_deadline(&mut self, d: Instant) {
        match self {
            Conn::Plain(t) => t.deadline = d,
            Conn::Tls(s) => s.sock.deadline = d,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(t) => t.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}
impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(t) => t.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(t) => t.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// Run the TLS handshake over `tcp`; on failure the facts say why and the raw first bytes
/// are handed back for the plaintext check.
pub fn handshake(tcp: TimedTcp, setup: &TlsSetup) -> (Option<Conn>, TlsFacts, Vec<u8>) {
    let start = Instant::now();
    let (conn, recorder) = match setup.connection() {
        Ok(c) => c,
        Err(e) => {
            let facts = TlsFacts {
                server_name: setup.server_name_text(),
                insecure: setup.insecure,
                ca_file: setup.ca_file.clone(),
                failure: Some(conndoc_facts::protocol::TlsFailure::Other),
                error: Some(e),
                ..Default::default()
            };
            return (None, facts, Vec::new());
        }
    };
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut result = Ok(());
    while stream.conn.is_handshaking() {
        if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
            result = Err(e);
            break;
        }
    }
    let elapsed = start.elapsed();
    let facts = tls::facts(setup, &stream.conn, &recorder, result.as_ref().err(), elapsed);
    let first = stream.sock.first_bytes.clone();
    if result.is_ok() {
        (Some(Conn::Tls(Box::new(stream))), facts, first)
    } else {
        (None, facts, first)
    }
}
