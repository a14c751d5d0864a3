//! Dump the nf_tables ruleset of the current network namespace over netlink and print each
//! rule as conndoc reads it; with `--raw FILE` also save the kernel's bytes (how the
//! fixtures in tests/fixtures/nfnl-*.bin were recorded).
//!
//! usage: nfnldump [--raw FILE]

use conndoc_firewall::nfnl;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let raw_out = match args.get(1).map(String::as_str) {
        Some("--raw") => match args.get(2) {
            Some(f) => Some(f.clone()),
            None => {
                eprintln!("usage: nfnldump [--raw FILE]");
                std::process::exit(2);
            }
        },
        Some(_) => {
            eprintln!("usage: nfnldump [--raw FILE]");
            std::process::exit(2);
        }
        None => None,
    };
    let t0 = Instant::now();
    let raw = match nfnl::dump(Instant::now() + Duration::from_secs(5)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nfnldump: {e}");
            std::process::exit(1);
        }
    };
    let t_dump = t0.elapsed();
    if let Some(f) = raw_out {
        if let Err(e) = std::fs::write(&f, raw.to_bytes()) {
            eprintln!("nfnldump: writing {f}: {e}");
            std::process::exit(1);
        }
    }
    let t1 = Instant::now();
    let d = match nfnl::Dump::parse(&raw) {
        Ok(d) => nfnl::Dump { ifnames: nfnl::interface_names(), ..d },
        Err(e) => {
            eprintln!("nfnldump: {e}");
            std::process::exit(1);
        }
    };
    let t_parse = t1.elapsed();
    let t2 = Instant::now();
    let rs = nfnl::to_ruleset(&d, 0, &HashSet::new());
    let t_model = t2.elapsed();
    let mut chains: Vec<_> = rs.chains.iter().collect();
    chains.sort_by(|a, b| a.0.cmp(b.0));
    for (id, ch) in chains {
        println!("{} {} {}", id.1, id.2, id.3);
        let mut last = None;
        for r in &ch.rules {
            if last == r.reference.handle {
                continue;
            }
            last = r.reference.handle;
            let nu = r.not_understood.as_deref().map(|w| format!("   [not understood: {w}]")).unwrap_or_default();
            println!("\t{} # handle {}{nu}", r.reference.text, r.reference.handle.unwrap_or(0));
        }
    }
    let t3 = Instant::now();
    let piped = nfnl::read(Duration::from_secs(5)).map(|r| r.ruleset.rule_count);
    let t_read = t3.elapsed();
    eprintln!("nfnl::read (receive ‖ decode): {:.2} ms, {piped:?} rules", t_read.as_secs_f64() * 1e3);
    eprintln!(
        "generation {}, {} messages, {} rules, dump {:.2} ms, parse {:.2} ms, model {:.2} ms",
        raw.generation,
        raw.messages.len(),
        rs.rule_count,
        t_dump.as_secs_f64() * 1e3,
        t_parse.as_secs_f64() * 1e3,
        t_model.as_secs_f64() * 1e3
    );
}
