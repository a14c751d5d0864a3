//! The Redis probe: AUTH (when a password is known), PING, INFO, CONFIG GET, keeping every
//! reply's exact text and timing. The password is written to the socket and nowhere else.

use crate::conn::{self, Conn};
use crate::resp::{self, Reply};
use crate::tls::TlsSetup;
use crate::{confirm_tls_port, looks_like_tls, mismatch_from_first_bytes};
use conndoc_facts::protocol::{
    clip, Exchange, MismatchDirection, ProtocolKind, ProtocolProbe, RedisError, RedisFacts, RedisInfo, TlsMismatch,
    REPLY_KEEP,
};
use conndoc_facts::{Micros, Port, Secret};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What to send.
pub struct RedisOptions<'a> {
    pub user: Option<&'a str>,
    pub password: Option<&'a Secret>,
    /// `rediss://`: wrap in TLS with this setup.
    pub tls: Option<&'a TlsSetup>,
    /// Deadline of the whole exchange on one address.
    pub timeout: Duration,
    /// Ask CONFIG GET (skipped by the benchmark's minimal probe).
    pub config: bool,
    /// `redis://host/N`: SELECT N before PING (0, the default database, is not sent).
    pub db: Option<u32>,
}

pub const CONFIG_KEYS: [&str; 6] = ["bind", "protected-mode", "maxclients", "port", "tcp-backlog", "databases"];

/// Replies read from a connection, with what ended it.
struct Session {
    conn: Conn,
    buf: Vec<u8>,
    /// The reply at the front of `buf`, parsed as far as it has arrived.
    parser: resp::Parser,
    closed: bool,
    /// An I/O error that ended the session (`ECONNRESET`, `deadline`).
    failed: Option<String>,
    /// Bytes that were not RESP.
    garbage: Option<String>,
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "deadline passed waiting for the reply".into(),
        io::ErrorKind::ConnectionReset => "connection reset by server (ECONNRESET)".into(),
        io::ErrorKind::BrokenPipe => "connection closed by server (EPIPE on write)".into(),
        io::ErrorKind::UnexpectedEof => "connection closed by server".into(),
        _ => e.to_string(),
    }
}

impl Session {
    fn new(conn: Conn) -> Session {
        Session { conn, buf: Vec::new(), parser: resp::Parser::default(), closed: false, failed: None, garbage: None }
    }

    /// Send `cmds` in one write (pipelined) and read one reply per command.
    fn exchange(&mut self, cmds: &[(String, Vec<u8>)]) -> Vec<(Exchange, Option<Reply>)> {
        let start = Instant::now();
        let mut out = Vec::with_capacity(cmds.len());
        let wire: Vec<u8> = cmds.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        if !self.closed && self.failed.is_none() {
            // A write error does not end the exchange: the server may have written its
            // reason (-DENIED, max clients) before closing, and that is still readable.
            if let Err(e) = self.conn.write_all(&wire).and_then(|_| self.conn.flush()) {
                self.failed = Some(io_text(&e));
            }
        }
        for (label, _) in cmds {
            let (reply, wire_len) = match self.read_reply() {
                Some((r, n)) => (Some(r), n),
                None => (None, 0),
            };
            let elapsed = Micros::from_duration(start.elapsed());
            let error = match &reply {
                Some(_) => None,
                None => Some(
                    self.garbage
                        .clone()
                        .or_else(|| self.failed.clone())
                        .unwrap_or_else(|| "connection closed by server".into()),
                ),
            };
            let (text, truncated) = match &reply {
                Some(Reply::Bulk(Some(b))) if label.starts_with("INFO") => {
                    (Some(format!("(bulk string, {} bytes)", b.len())), false)
                }
                Some(r) => {
                    let (t, cut) = r.text_bounded(REPLY_KEEP);
                    (Some(t), cut)
                }
                None => (None, false),
            };
            let length = truncated.then_some(wire_len as u64);
            let ex = Exchange { command: label.clone(), reply: text, truncated, length, elapsed_us: elapsed, error };
            out.push((ex, reply));
        }
        out
    }

    /// The next reply and its size on the wire.
    fn read_reply(&mut self) -> Option<(Reply, usize)> {
        loop {
            match self.parser.feed(&self.buf) {
                Ok(Some((r, used))) => {
                    self.buf.drain(..used);
                    return Some((r, used));
                }
                Ok(None) => {}
                Err(e) => {
                    if self.garbage.is_none() {
                        self.garbage = Some(format!("{e}: {}", resp::escape(&self.buf[..self.buf.len().min(48)])));
                    }
                    return None;
                }
            }
            if self.closed || self.failed.as_deref().is_some_and(|f| f.starts_with("deadline")) {
                return None;
            }
            if self.buf.len() >= resp::MAX_REPLY {
                self.garbage = Some(format!("a RESP reply larger than {} bytes: stopped reading", resp::MAX_REPLY));
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.conn.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof) {
                        self.closed = true;
                    }
                    self.failed = Some(io_text(&e));
                    if !self.closed {
                        return None;
                    }
                }
            }
        }
    }
}

fn auth_command(user: Option<&str>, password: &Secret) -> (String, Vec<u8>) {
    match user {
        Some(u) => (
            format!("AUTH {u} {}", conndoc_facts::REDACTED),
            resp::encode(&[b"AUTH", u.as_bytes(), password.expose().as_bytes()]),
        ),
        None => (format!("AUTH {}", conndoc_facts::REDACTED), resp::encode(&[b"AUTH", password.expose().as_bytes()])),
    }
}

fn cmd(args: &[&str]) -> (String, Vec<u8>) {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    (args.join(" "), resp::encode(&bytes))
}

/// Probe one address. Never panics; every failure is a fact in the result.
pub fn probe(addr: SocketAddr, o: &RedisOptions<'_>) -> ProtocolProbe {
    let port = Port::new(addr.port()).unwrap_or(Port::new(6379).expect("non-zero"));
    let mut p = ProtocolProbe::empty(addr.ip(), port, ProtocolKind::Redis, o.tls.is_some());
    let deadline = Instant::now() + o.timeout;
    let start = Instant::now();
    let tcp = match conn::connect(addr, deadline) {
        Ok(t) => t,
        Err(e) => {
            p.error = Some(format!("connect to {addr}: {}", io_text(&e)));
            return p;
        }
    };
    p.connect_us = Some(Micros::from_duration(start.elapsed()));
    let conn = match crate::secure(tcp, o.tls, || confirm_plain_redis(addr, deadline)) {
        crate::Secured::Ready(c, tls) => {
            p.tls = tls;
            c
        }
        crate::Secured::Failed(tls, mismatch) => {
            p.tls = Some(tls);
            p.tls_mismatch = mismatch;
            return p;
        }
    };
    let mut s = Session::new(conn);
    let mut r = RedisFacts::default();
    let note = |r: &mut RedisFacts, res: &[(Exchange, Option<Reply>)]| {
        for (ex, reply) in res {
            if r.first_error.is_none() {
                if let Some(Reply::Error(t)) = reply {
                    r.first_error = Some(RedisError::parse(clip(t, REPLY_KEEP)));
                }
            }
            r.exchanges.push(ex.clone());
        }
    };

    if let Some(pw) = o.password {
        r.auth_sent = true;
        r.auth_user = Some(o.user.unwrap_or("default").to_string());
        let res = s.exchange(&[auth_command(o.user, pw)]);
        note(&mut r, &res);
    }
    // SELECT, PING and INFO in one round trip.
    let db = o.db.filter(|&n| n > 0);
    let mut cmds = Vec::with_capacity(3);
    if let Some(n) = db {
        cmds.push(cmd(&["SELECT", &n.to_string()]));
    }
    cmds.push(cmd(&["PING"]));
    cmds.push(cmd(&["INFO", "server", "clients", "stats", "persistence"]));
    let mut res = s.exchange(&cmds);
    note(&mut r, &res);
    if let Some(n) = db {
        r.db = Some(n);
        if let Some(Reply::Error(e)) = &res[0].1 {
            r.select_error = Some(clip(e, REPLY_KEEP).to_string());
        }
        res.remove(0);
    }
    r.pong = matches!(&res[0].1, Some(Reply::Simple(t)) if t == "PONG");
    match &res[1].1 {
        Some(Reply::Bulk(Some(b))) => r.info = Some(RedisInfo::parse_bytes(b)),
        // Before 7.0 INFO takes one section: fall back to the whole default INFO.
        Some(Reply::Error(e)) if e.contains("wrong number of arguments") || e.contains("syntax") => {
            let res = s.exchange(&[cmd(&["INFO"])]);
            if let Some(Reply::Bulk(Some(b))) = &res[0].1 {
                r.info = Some(RedisInfo::parse_bytes(b));
            }
            r.exchanges.extend(res.into_iter().map(|(e, _)| e));
        }
        _ => {}
    }
    if o.config && r.pong {
        let mut args = vec!["CONFIG", "GET"];
        args.extend(CONFIG_KEYS);
        let res = s.exchange(&[cmd(&args)]);
        match &res[0].1 {
            Some(Reply::Error(e)) if e.contains("wrong number of arguments") => {
                // Before 7.0 CONFIG GET takes one pattern.
                let cmds: Vec<_> = CONFIG_KEYS.iter().map(|k| cmd(&["CONFIG", "GET", k])).collect();
                let res = s.exchange(&cmds);
                for (ex, reply) in &res {
                    match reply {
                        Some(Reply::Error(e)) if r.config_refused.is_none() => {
                            r.config_refused = Some(format!("-{}", clip(e, REPLY_KEEP)))
                        }
                        Some(rep) => r.config.extend(rep.pairs()),
                        None => {}
                    }
                    r.exchanges.push(ex.clone());
                }
            }
            Some(Reply::Error(e)) => {
                r.config_refused = Some(format!("-{}", clip(e, REPLY_KEEP)));
                r.exchanges.push(res[0].0.clone());
            }
            Some(rep) => {
                r.config.extend(rep.pairs());
                r.exchanges.push(res[0].0.clone());
            }
            None => r.exchanges.push(res[0].0.clone()),
        }
    }
    // Rejections since start: read them again to see whether they rise during the probe.
    if r.info.as_ref().and_then(|i| i.rejected_connections).unwrap_or(0) > 0 && !s.closed {
        let res = s.exchange(&[cmd(&["INFO", "stats"])]);
        if let (Some(Reply::Bulk(Some(b))), Some(info)) = (&res[0].1, r.info.as_mut()) {
            info.rejected_connections_after = RedisInfo::parse_bytes(b).rejected_connections;
        }
        r.exchanges.push(res[0].0.clone());
    }
    // Protected mode and max clients are written on accept, before any command is read.
    if let Some(first) = r.exchanges.first().and_then(|e| e.reply.clone()) {
        if first.starts_with("-DENIED") || first.contains("max number of clients reached") {
            r.unsolicited = Some(first);
        }
    }
    r.closed_by_server =
        s.closed || s.failed.as_deref().is_some_and(|f| f.contains("ECONNRESET") || f.contains("EPIPE"));
    let first_bytes = s.conn.tcp().first_bytes.clone();
    if let Some(g) = &s.garbage {
        p.error = Some(g.clone());
    } else if r.exchanges.iter().all(|e| e.reply.is_none()) {
        p.error = s.failed.clone().or(Some("connection closed by server without a reply".into()));
    }
    if o.tls.is_none() && r.exchanges.iter().all(|e| e.reply.is_none()) {
        p.tls_mismatch = mismatch_from_first_bytes(&first_bytes, false).or_else(|| {
            if looks_like_tls(&first_bytes) {
                None
            } else {
                confirm_tls_port(addr, deadline)
            }
        });
    }
    p.redis = Some(r);
    p
}

/// A TLS handshake failed without a readable answer: does a plaintext PING get one?
/// Within the probe's own deadline: a follow-up never adds a second timeout to the run.
fn confirm_plain_redis(addr: SocketAddr, deadline: Instant) -> Option<TlsMismatch> {
    let tcp = conn::connect(addr, deadline).ok()?;
    let mut s = Session::new(Conn::Plain(tcp));
    let res = s.exchange(&[cmd(&["PING"])]);
    let reply = res.into_iter().next()?.1?;
    Some(TlsMismatch {
        direction: MismatchDirection::TlsToPlaintext,
        observed: format!(
            "the TLS handshake got no TLS answer; a plaintext PING on the same port got {:?}",
            reply.text()
        ),
    })
}
