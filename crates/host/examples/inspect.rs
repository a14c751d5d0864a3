//! Run one host inspection of a port in the current network namespace and print the facts
//! as JSON: what `conndoc diagnose` reads on the server, as a whole process (the benchmark
//! in bench/host.sh times it against `ss`).
//!
//! `cargo run --release -p conndoc-host --example inspect -- PORT [EXPECTED-PROCESS]`
//! With `THOROUGH=1` in the environment it reads everything, as after a failed probe.

use conndoc_facts::host::InspectScope;
use conndoc_facts::{Port, Privileges};
use conndoc_host::{baseline, inspect, InspectRequest};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(port) = args.next().and_then(|p| p.parse::<Port>().ok()) else {
        eprintln!("usage: inspect PORT [EXPECTED-PROCESS]");
        std::process::exit(2);
    };
    let req = InspectRequest {
        port,
        expect: args.next(),
        scope: InspectScope::Local,
        netns: None,
        thorough: std::env::var_os("THOROUGH").is_some_and(|v| v == "1"),
        addresses: None,
        privileges: Privileges {
            uid: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| conndoc_host::procs::parse_status_uid(&s))
                .unwrap_or(u32::MAX),
            ..Default::default()
        },
    };
    let base = baseline(&req).ok();
    match inspect(&req, base.as_ref()) {
        Ok((facts, skipped)) => {
            println!("{}", serde_json::json!({ "host": facts, "skipped": skipped }));
        }
        Err(e) => {
            eprintln!("inspect: {e}");
            std::process::exit(3);
        }
    }
}
