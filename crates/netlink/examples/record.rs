//! Print the raw payload of live sock_diag listener messages as hex, to record byte
//! fixtures for the parser tests: `cargo run -p conndoc-netlink --example record -- PORT`.

use conndoc_netlink::diag::{AF_INET, AF_INET6, STATE_LISTEN};
use conndoc_netlink::{Bytecode, Cond, DiagRequest, Family, Socket};
use std::time::{Duration, Instant};

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(6379);
    let mut s = Socket::open(Family::SockDiag).expect("open");
    for family in [AF_INET, AF_INET6] {
        let req = DiagRequest {
            family,
            states: STATE_LISTEN,
            ext: 0,
            filter: Bytecode(vec![Cond::LocalPort { lo: port, hi: port }]),
        };
        s.dump("sock_diag", 20, &req.encode(), Instant::now() + Duration::from_secs(2), |m| {
            let hex: Vec<String> = m.payload.iter().map(|b| format!("0x{b:02x}")).collect();
            println!("type {} payload [{}]", m.ty, hex.join(", "));
            Ok(())
        })
        .expect("dump");
    }
}
