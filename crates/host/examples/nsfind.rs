//! `nsfind ADDR`: which network namespace owns ADDR, and how long the search took
//! (bench/nsfind.sh). Needs root.
fn main() {
    let Some(addr) = std::env::args().nth(1).and_then(|a| a.parse().ok()) else {
        eprintln!("usage: nsfind ADDR");
        std::process::exit(2);
    };
    let s = conndoc_host::nsfind::find_owner(addr, &[], std::time::Duration::from_secs(5), None);
    let found = s.found.map(|f| f.describe()).unwrap_or_else(|| "none".into());
    println!(
        "found={found} searched={} elapsed_us={} incomplete={:?}",
        s.searched,
        s.elapsed.as_micros(),
        s.incomplete
    );
}
