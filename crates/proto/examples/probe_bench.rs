//! In-process Redis probe benchmark (bench/proto.sh runs it next to redis-benchmark).
//!
//! `probe_bench HOST:PORT [N]` prints, in microseconds, the median and p90 of N probes
//! (connect + PING + INFO, no CONFIG GET) and of N bare TCP connects to the same address,
//! as one JSON line.

use conndoc_proto::redis::{probe, RedisOptions};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
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
    let mut connects = Vec::with_capacity(n);
    // Warm up, then interleave so both see the same machine state.
    for _ in 0..100 {
        let _ = probe(addr, &o);
    }
    for _ in 0..n {
        let t = Instant::now();
        let p = probe(addr, &o);
        probes.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(p.redis.as_ref().is_some_and(|r| r.pong && r.info.is_some()), "probe failed: {p:?}");
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        connects.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    println!(
        "{{\"n\":{n},\"probe_p50_us\":{:.1},\"probe_p90_us\":{:.1},\"connect_p50_us\":{:.1},\"connect_p90_us\":{:.1}}}",
        pct(&mut probes, 0.5),
        pct(&mut probes, 0.9),
        pct(&mut connects, 0.5),
        pct(&mut connects, 0.9)
    );
}
