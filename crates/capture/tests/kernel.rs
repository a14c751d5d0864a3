//! The capture against the real kernel, inside a network namespace this test creates
//! (loopback only, nothing leaves it). Needs root; without it the tests are reported ignored
//! (failed under CI=true, see conndoc-testsupport).

use conndoc_capture::Capture;
use conndoc_facts::capture::{BaselineSource, Direction};
use conndoc_testsupport::{program, root, Tests};
use std::net::{IpAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[allow(unsafe_code)]
fn enter(name: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: setns on a valid fd; affects only this (test) thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

fn captures_syn_rst_and_baseline_on_loopback_and_writes_pcap() {
    let name = format!("cdcap{}", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
    let ns = Ns(name.clone());
    assert!(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap().success());
    let dir = std::env::temp_dir().join(format!("cdcap{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("probe.pcap");
    let pcap2 = pcap.clone();
    let facts = std::thread::spawn(move || {
        enter(&name);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let cap = Capture::start(&[lo], 7411).unwrap();
        // Nothing listens on 7411 in the fresh namespace: SYN, then RST.
        let r = TcpStream::connect_timeout(&(lo, 7411).into(), Duration::from_secs(1));
        assert!(r.is_err());
        let (facts, pcap_error) = cap.finish(Duration::from_millis(300), Some(&pcap2)).unwrap();
        assert!(pcap_error.is_none(), "{pcap_error:?}");
        facts
    })
    .join()
    .unwrap();
    let f = &facts.flows[0];
    assert_eq!(f.syns_sent, 1, "{facts:#?}");
    assert_eq!(f.rst.as_ref().unwrap().ttl.0, 64);
    let b = &facts.baselines[0];
    assert_eq!((b.source, b.ttl.0), (BaselineSource::IcmpEchoReply, 64));
    assert!(facts.packets.iter().any(|p| p.direction == Direction::Sent && p.tcp.as_ref().is_some_and(|t| t.syn)));
    // Nothing else passed the filter: SYN, RST, echo reply.
    assert_eq!(facts.packets.len(), 3, "{:#?}", facts.packets);
    // Kernel receive times, in order, within the run.
    let at: Vec<u64> = facts.packets.iter().map(|p| p.at_us.0).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]) && at[2] < 1_000_000, "{at:?}");

    // tcpdump reads the file and sees the same exchange.
    let out = Command::new("tcpdump").args(["-nn", "-r"]).arg(&pcap).output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("127.0.0.1.7411: Flags [S]"), "{text}");
        assert!(text.contains("Flags [R.]"), "{text}");
        assert!(text.contains("ICMP echo reply"), "{text}");
    }
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drop CAP_NET_RAW from this thread's effective set (capabilities are per thread).
#[allow(unsafe_code)]
fn drop_net_raw_in_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_NET_RAW: u32 = 13;
    let mut h = Header { version: 0x2008_0522, pid: 0 };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as the ABI requires.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()), 0);
        d[0].effective &= !(1 << CAP_NET_RAW);
        assert_eq!(libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()), 0);
    }
}

fn without_cap_net_raw_the_capture_says_so() {
    let r = std::thread::spawn(|| {
        drop_net_raw_in_this_thread();
        Capture::start(&["127.0.0.1".parse().unwrap()], 7411).err().map(|e| e.to_string())
    })
    .join()
    .unwrap();
    let msg = r.expect("the capture must not open without CAP_NET_RAW");
    assert!(msg.contains("needs CAP_NET_RAW"), "{msg}");
}

fn main() {
    let mut t = Tests::new();
    let need = root().and(program("ip", "iproute2"));
    t.add(
        "captures_syn_rst_and_baseline_on_loopback_and_writes_pcap",
        &need,
        captures_syn_rst_and_baseline_on_loopback_and_writes_pcap,
    );
    t.add("without_cap_net_raw_the_capture_says_so", &need, without_cap_net_raw_the_capture_says_so);
    t.run();
}
