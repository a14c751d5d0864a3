//! Benchmark helper for bench/firewall.sh: times conndoc's firewall stage (read, build,
//! evaluate) in the current network namespace (with the ruleset cache as the environment
//! says: bench/firewall.sh sets `CONNDOC_NO_CACHE=1` for the cold figures), the netlink dump
//! of nf_tables on its own (no cache), and reads that hit the cache in memory and on disk;
//! prints one JSON line.
//!
//! usage: fwbench DEST_ADDR PORT [RUNS]

use conndoc_facts::firewall::Hook;
use conndoc_facts::Family;
use conndoc_firewall::{build, nfnl, read, Packet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: fwbench DEST_ADDR PORT [RUNS]");
        std::process::exit(2);
    }
    let Ok(dst) = args[1].parse::<IpAddr>() else {
        eprintln!("fwbench: bad address {}", args[1]);
        std::process::exit(2);
    };
    let Ok(port) = args[2].parse::<u16>() else {
        eprintln!("fwbench: bad port {}", args[2]);
        std::process::exit(2);
    };
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let pkt = Packet {
        family: Family::of(&dst),
        source: Some(if dst.is_ipv4() { "10.77.0.1".parse().unwrap() } else { "fd77::1".parse().unwrap() }),
        destination: dst,
        source_port: Some(40000),
        destination_port: port,
        input_interface: Some("eth0".into()),
        output_interface: None,
        destination_local: None,
    };
    let (mut t_read, mut t_build, mut t_eval, mut t_total, mut t_nl) = (vec![], vec![], vec![], vec![], vec![]);
    let mut source = String::new();
    let mut rules = 0;
    let mut verdict = String::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let raw = read(Duration::from_secs(30));
        let t1 = Instant::now();
        let (rs, sources) = build(&raw);
        source = sources.first().map(|s| s.command.clone()).unwrap_or_default();
        let t2 = Instant::now();
        let e = rs.evaluate(Hook::Input, &pkt);
        let t3 = Instant::now();
        rules = rs.rule_count;
        verdict = format!(
            "{} by {}",
            e.verdict.describe(),
            e.decided_by.map(|r| r.location()).unwrap_or_else(|| "nothing".into())
        );
        t_read.push((t1 - t0).as_secs_f64() * 1e3);
        t_build.push((t2 - t1).as_secs_f64() * 1e3);
        t_eval.push((t3 - t2).as_secs_f64() * 1e3);
        t_total.push((t3 - t0).as_secs_f64() * 1e3);
        let t4 = Instant::now();
        let ok = nfnl::read_with(Duration::from_secs(30), &conndoc_firewall::cache::CacheConfig::off()).is_ok();
        if ok {
            t_nl.push(t4.elapsed().as_secs_f64() * 1e3);
        }
    }
    let netlink_ms = if t_nl.is_empty() { -1.0 } else { median(t_nl) };
    let c = cache_times(runs);
    println!(
        "{{\"rules\":{rules},\"source\":{source:?},\"netlink_ms\":{netlink_ms:.2},\"read_ms\":{:.2},\"build_ms\":{:.2},\"evaluate_ms\":{:.3},\"total_ms\":{:.2},\"verdict\":{:?},{c}}}",
        median(t_read),
        median(t_build),
        median(t_eval),
        median(t_total),
        verdict
    );
}

/// The cache (medians, ms): GETGEN + a hit in memory, GETGEN + a hit on disk (file read and
/// decoded), and the file decode alone; the file's size.
fn cache_times(runs: usize) -> String {
    use conndoc_firewall::cache::{self, CacheConfig, CacheLevel, MIN_OBJECTS};
    let dir = std::env::temp_dir().join(format!("fwbench-cache-{}", std::process::id()));
    let disk = CacheConfig { memory: false, dir: Some(dir.clone()), min_objects: MIN_OBJECTS };
    let mem = CacheConfig { memory: true, dir: None, min_objects: MIN_OBJECTS };
    let t = Duration::from_secs(30);
    let first = nfnl::read_with(t, &disk).ok();
    let _ = nfnl::read_with(t, &mem);
    let (mut t_mem, mut t_disk, mut t_load) = (vec![], vec![], vec![]);
    let mut hits = (0, 0);
    for _ in 0..runs {
        let t0 = Instant::now();
        hits.0 += u32::from(nfnl::read_with(t, &mem).is_ok_and(|r| r.cached == Some(CacheLevel::Memory)));
        t_mem.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        hits.1 += u32::from(nfnl::read_with(t, &disk).is_ok_and(|r| r.cached == Some(CacheLevel::Disk)));
        t_disk.push(t0.elapsed().as_secs_f64() * 1e3);
        if let Some(r) = &first {
            let cookie = std::fs::read_dir(&dir)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .and_then(|e| u64::from_str_radix(e.file_name().to_string_lossy().split('.').next()?, 16).ok());
            let t0 = Instant::now();
            let ok = cookie.and_then(|c| cache::load(&dir, c, r.generation)).is_some();
            if ok {
                t_load.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let bytes: u64 =
        std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    let m = |v: Vec<f64>| if v.is_empty() { -1.0 } else { median(v) };
    format!(
        "\"memory_hit_ms\":{:.3},\"disk_hit_ms\":{:.2},\"file_load_ms\":{:.2},\"file_bytes\":{bytes},\"hits\":\"{}/{} memory, {}/{} disk\"",
        m(t_mem),
        m(t_disk),
        m(t_load),
        hits.0,
        runs,
        hits.1,
        runs
    )
}
