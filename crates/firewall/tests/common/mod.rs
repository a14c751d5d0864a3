//! What the kernel tests share: a namespace of their own and the probe's packet.
#![allow(dead_code)] // each test binary uses a part

use conndoc_facts::Family;
use conndoc_firewall::Packet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub const T: Duration = Duration::from_secs(10);

/// Root and nft, which the kernel tests need (else ignored; failed under CI=true).
pub fn root_with_nft() -> conndoc_testsupport::Need {
    conndoc_testsupport::root()
        .and(conndoc_testsupport::program("nft", "nftables"))
        .and(conndoc_testsupport::program("ip", "iproute2"))
}

/// A number unique in this test process (namespace and directory names).
pub fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A network namespace that is deleted when dropped (also on panic).
pub struct Netns(pub String);

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}{}x{}", std::process::id(), unique());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    /// `PROG ARGS` inside the namespace, with `stdin`; its stdout, panicking unless it succeeds.
    pub fn exec(&self, prog: &str, args: &[&str], stdin: &str) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, prog])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft ARGS` inside the namespace, with `stdin`; panics unless it succeeds.
    pub fn nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.exec("nft", args, stdin.unwrap_or(""))
    }

    pub fn load(&self, rules: &str) {
        self.nft(&["-f", "-"], Some(rules));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The probe's SYN from `src` to `dst`:`port`, arriving on `iface`.
pub fn packet(family: Family, src: &str, dst: &str, port: u16, iface: &str) -> Packet {
    Packet {
        family,
        source: Some(src.parse().unwrap()),
        destination: dst.parse().unwrap(),
        source_port: Some(40000),
        destination_port: port,
        input_interface: Some(iface.into()),
        output_interface: None,
        destination_local: None,
    }
}

/// A directory of the test's own (created empty), removed when dropped, also on panic.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&d);
        TempDir(d)
    }

    /// The files in it, sorted (none when it does not exist yet).
    pub fn files(&self) -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(&self.0) else { return Vec::new() };
        let mut v: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
