//! Times the pure part of the firewall stage on saved tool output (bench/firewall.sh):
//! JSON parse, model build, evaluation.
//!
//! usage: fwparse NFT_JSON_FILE [NFT_TEXT_FILE]
use conndoc_facts::firewall::Hook;
use conndoc_facts::Family;
use conndoc_firewall::{build, Packet, RawRulesets};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(json_path) = args.get(1) else {
        eprintln!("usage: fwparse NFT_JSON_FILE [NFT_TEXT_FILE]");
        std::process::exit(2);
    };
    let json = match std::fs::read_to_string(json_path) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("fwparse: reading {json_path}: {e}");
            std::process::exit(2);
        }
    };
    let text = args.get(2).and_then(|p| std::fs::read_to_string(p).ok());
    let t0 = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let t_json = t0.elapsed();
    drop(v);
    let raw = RawRulesets::from_nft(Ok(json), text);
    let t1 = Instant::now();
    let (rs, _) = build(&raw);
    let t_build = t1.elapsed();
    let pkt = Packet {
        family: Family::Ipv4,
        source: Some("10.77.1.1".parse().unwrap()),
        destination: "10.77.1.2".parse().unwrap(),
        source_port: Some(40000),
        destination_port: 7000,
        input_interface: Some("eth0".into()),
        output_interface: None,
        destination_local: None,
    };
    let t2 = Instant::now();
    let e = rs.evaluate(Hook::Input, &pkt);
    let t_eval = t2.elapsed();
    println!(
        "{{\"rules\":{},\"json_ms\":{:.2},\"build_ms\":{:.2},\"evaluate_ms\":{:.3},\"verdict\":{:?}}}",
        rs.rule_count,
        t_json.as_secs_f64() * 1e3,
        t_build.as_secs_f64() * 1e3,
        t_eval.as_secs_f64() * 1e3,
        e.verdict.describe()
    );
}
