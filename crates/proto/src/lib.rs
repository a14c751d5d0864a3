//! Speaks Redis, HTTP and TLS far enough to name a refusal after the handshake; lints redis.conf.
//!
//! Every probe here is blocking I/O with one deadline per address: each read and write gets
//! the time left before it (see [`conn::TimedTcp`]). Parsers ([`resp`], [`http`],
//! [`redis_conf`]) work on bytes and are tested against byte fixtures.

pub mod conn;
pub mod http;
pub mod http_probe;
pub mod redis;
pub mod redis_conf;
pub mod resp;
pub mod tls;

use conndoc_facts::protocol::{MismatchDirection, TlsFacts, TlsFailure, TlsMismatch};
use std::net::SocketAddr;
use std::time::Instant;

/// The first bytes of a TLS record: alert (0x15) or handshake (0x16), version 3.x.
pub fn looks_like_tls(b: &[u8]) -> bool {
    b.len() >= 3 && matches!(b[0], 0x15 | 0x16) && b[1] == 3 && b[2] <= 4
}

/// Printable text the way RESP, HTTP and most line protocols start.
fn looks_like_plaintext(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().take(16).all(|&c| c == b'\r' || c == b'\n' || c == b'\t' || (0x20..0x7f).contains(&c))
}

/// What the server's first bytes say about TLS on one side only. `sent_tls`: whether we
/// sent a ClientHello.
pub fn mismatch_from_first_bytes(first: &[u8], sent_tls: bool) -> Option<TlsMismatch> {
    if sent_tls && looks_like_plaintext(first) {
        return Some(TlsMismatch {
            direction: MismatchDirection::TlsToPlaintext,
            observed: format!("the server answered the TLS ClientHello in plaintext: \"{}\"", resp::escape(first)),
        });
    }
    if !sent_tls && looks_like_tls(first) {
        return Some(TlsMismatch {
            direction: MismatchDirection::PlaintextToTls,
            observed: format!("the server answered plaintext with a TLS record: {}", resp::escape(first)),
        });
    }
    None
}

/// A connection ready for the protocol, or the TLS handshake that failed.
pub enum Secured {
    Ready(conn::Conn, Option<TlsFacts>),
    /// The handshake failed; the mismatch says whether the port speaks plaintext.
    Failed(TlsFacts, Option<TlsMismatch>),
}

/// Wrap `tcp` in TLS when `setup` is given. When the handshake fails without a readable
/// answer, `confirm_plain` re-dials in plaintext to tell a plaintext-only port from a dead one.
pub fn secure(
    tcp: conn::TimedTcp,
    setup: Option<&tls::TlsSetup>,
    confirm_plain: impl FnOnce() -> Option<TlsMismatch>,
) -> Secured {
    let Some(setup) = setup else { return Secured::Ready(conn::Conn::Plain(tcp), None) };
    // Half the time left for the handshake: a plaintext server that waits for more bytes
    // leaves the other half to `confirm_plain`, inside the same deadline (one run, one
    // deadline — not a second full timeout).
    let mut tcp = tcp;
    let full = tcp.deadline;
    let now = Instant::now();
    tcp.deadline = now + full.saturating_duration_since(now) / 2;
    let (c, facts, first) = conn::handshake(tcp, setup);
    match c {
        Some(mut c) => {
            c.set_deadline(full);
            Secured::Ready(c, Some(facts))
        }
        None => {
            let mismatch = mismatch_from_first_bytes(&first, true).or_else(|| {
                matches!(facts.failure, Some(TlsFailure::Closed | TlsFailure::Timeout | TlsFailure::NotTls))
                    .then(confirm_plain)
                    .flatten()
            });
            Secured::Failed(facts, mismatch)
        }
    }
}

/// Plaintext got nothing back: does a TLS handshake on the same port get an answer? Within
/// the first probe's `deadline`, so a silent server costs one timeout, not two.
pub fn confirm_tls_port(addr: SocketAddr, deadline: Instant) -> Option<TlsMismatch> {
    let setup = tls::TlsSetup::new(&addr.ip().to_string(), None, true).ok()?;
    let tcp = conn::connect(addr, deadline).ok()?;
    let (_, facts, first) = conn::handshake(tcp, &setup);
    if !(facts.ok || !facts.chain.is_empty() || looks_like_tls(&first)) {
        return None;
    }
    let what = match (&facts.version, facts.chain.first()) {
        (Some(v), Some(c)) => format!("{v}, certificate subject {:?}", c.subject),
        (Some(v), None) => v.clone(),
        _ => format!("first bytes {}", resp::escape(&first)),
    };
    Some(TlsMismatch {
        direction: MismatchDirection::PlaintextToTls,
        observed: format!(
            "plaintext got no answer before the server closed; a TLS handshake on the same port was answered ({what})"
        ),
    })
}
