//! In-process Redis probe benchmark (bench/proto.sh runs it next to redis-benchmark).
//!
//! `probe_bench HOST:PORT [N]` prints, in microseconds, the median and p90 of N each of,
//! interleaved so all see the same machine state:
//! - conndoc's probe (connect + PING + INFO, no CONFIG GET);
//! - the floor any client pays for the same work: a bare std client that connects, writes
//!   the same PING + INFO pipelined, reads until both replies are complete and closes —
//!   no parsing, no facts;
//! - a bare connect to the same address (the close is not timed);
//!
//! with a barrier between them (see [`barrier`]) and the order of the first two alternating,
//! as one JSON line.

use conndoc_proto::redis::{probe, RedisOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

const WIRE: &[u8] =
    b"*1\r\n$4\r\nPING\r\n*5\r\n$4\r\nINFO\r\n$6\r\nserver\r\n$7\r\nclients\r\n$5\r\nstats\r\n$11\r\npersistence\r\n";

/// Both replies are in: `+PONG\r\n` then a bulk string `$LEN\r\n…\r\n` read to its end.
fn complete(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"+PONG\r\n".as_slice()) else { return false };
    let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else { return false };
    let len: usize = std::str::from_utf8(&rest[1..nl]).ok().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
    rest.len() >= nl + 2 + len.saturating_add(2)
}

fn floor(addr: SocketAddr, buf: &mut Vec<u8>) -> f64 {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    s.write_all(WIRE).expect("write");
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    while !complete(buf) {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    drop(s);
    t.elapsed().as_secs_f64() * 1e6
}

/// Wait until Redis has handled everything sent before (the last measurement's close among
/// it): a PING on a kept connection is answered only after the events ready with it. Two
/// in turn, because a connection closed before Redis accepted it is accepted in one turn of
/// its event loop and torn down in the next. Without this each measurement pays for Redis
/// tearing down the previous one's client.
fn barrier(keep: &mut TcpStream) {
    for _ in 0..2 {
        keep.write_all(b"*1\r\n$4\r\nPING\r\n").expect("barrier write");
        let mut b = [0u8; 7];
        keep.read_exact(&mut b).expect("barrier read");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: probe_bench HOST:PORT [N]");
        std::process::exit(2);
    };
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let o = RedisOptions {
        user: None,
        password: None,
        tls: None,
        timeout: Duration::from_secs(2),
        config: false,
        db: None,
    };
    let mut probes = Vec::with_capacity(n);
    let mut floors = Vec::with_capacity(n);
    let mut connects = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(8192);
    let mut keep = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    keep.set_nodelay(true).expect("nodelay");
    keep.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    // Warm up, then interleave so all see the same machine state.
    for _ in 0..100 {
        let _ = probe(addr, &o);
        floor(addr, &mut buf);
    }
    for i in 0..n {
        // Alternate which of the two goes first, so neither always follows the bare connect.
        for first in [i % 2 == 0, i % 2 != 0] {
            if first {
                let t = Instant::now();
                let p = probe(addr, &o);
                probes.push(t.elapsed().as_secs_f64() * 1e6);
                assert!(p.redis.as_ref().is_some_and(|r| r.pong && r.info.is_some()), "probe failed: {p:?}");
            } else {
                floors.push(floor(addr, &mut buf));
            }
            barrier(&mut keep);
        }
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        connects.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
        barrier(&mut keep);
    }
    println!(
        "{{\"n\":{n},\"probe_p50_us\":{:.1},\"probe_p90_us\":{:.1},\"floor_p50_us\":{:.1},\"floor_p90_us\":{:.1},\"connect_p50_us\":{:.1},\"connect_p90_us\":{:.1}}}",
        pct(&mut probes, 0.5),
        pct(&mut probes, 0.9),
        pct(&mut floors, 0.5),
        pct(&mut floors, 0.9),
        pct(&mut connects, 0.5),
        pct(&mut connects, 0.9)
    );
}
