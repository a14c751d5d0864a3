//! A hostile nameserver built for real: a tiny UDP responder on a loopback port this test
//! opened, answering every query (with its id, so the answer is taken) with a malformed
//! reply. The lookup names the malformation at once, and the diagnosis says the answer was
//! malformed — not that no nameserver answered.

use conndoc_facts::resolve::{DnsLookup, DnsOutcome, Resolution, SystemLookup};
use conndoc_facts::{Evidence, Micros};
use conndoc_probe::resolve::dns_lookup_in;
use std::net::UdpSocket;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Builds the reply to one query.
type Reply = fn(&[u8]) -> Vec<u8>;

/// Answers up to `n` queries with `reply(query)`, for at most 10 s.
fn responder(n: usize, reply: Reply) -> (u16, JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let t = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(10);
        let mut served = 0;
        let mut b = [0u8; 512];
        while served < n && Instant::now() < end {
            if let Ok((len, from)) = sock.recv_from(&mut b) {
                let _ = sock.send_to(&reply(&b[..len]), from);
                served += 1;
            }
        }
    });
    (port, t)
}

/// The query's id and question, as an answer header saying `answers` records follow.
fn header(q: &[u8], answers: u16) -> Vec<u8> {
    let mut r = vec![q[0], q[1], 0x81, 0x80, 0, 1];
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..]);
    r
}

fn no_record_after_the_count(q: &[u8]) -> Vec<u8> {
    header(q, 1)
}

fn label_loop(q: &[u8]) -> Vec<u8> {
    let mut r = header(q, 1);
    // 200 one-byte labels, never ending: more than any name may have.
    for _ in 0..200 {
        r.extend_from_slice(&[1, b'a']);
    }
    r
}

fn five_byte_address(q: &[u8]) -> Vec<u8> {
    let mut r = header(q, 1);
    let qtype = [q[q.len() - 4], q[q.len() - 3]];
    r.extend_from_slice(&[0xc0, 0x0c, qtype[0], qtype[1], 0, 1, 0, 0, 0, 60, 0, 5, 10, 0, 0, 1, 9]);
    r
}

fn shorter_than_a_header(q: &[u8]) -> Vec<u8> {
    q[..5].to_vec()
}

fn another_id(q: &[u8]) -> Vec<u8> {
    let mut r = header(q, 0);
    r[1] ^= 0xff;
    r
}

/// Evidence of a name the system resolver could not resolve, with this DNS lookup.
fn evidence(dns: DnsLookup) -> Evidence {
    let mut ev = conndoc_diagnose::fixture::evidence("api.lab:6379");
    ev.resolution = Resolution {
        system: SystemLookup {
            error: Some("EAI_NONAME: Name or service not known".into()),
            elapsed_us: Micros(900),
            ..Default::default()
        },
        dns: Some(dns),
        ..Default::default()
    };
    ev
}

#[test]
fn a_malformed_dns_answer_is_named_not_taken_for_silence() {
    let cases: [(Reply, &str); 5] = [
        (no_record_after_the_count, "DNS reply shorter than its header says"),
        (label_loop, "DNS reply has a name-compression loop"),
        (five_byte_address, "record with 5 bytes of address"),
        (shorter_than_a_header, "DNS reply shorter than its header says"),
        // Not ours, so waited past (as a resolver does), but named at the deadline.
        (another_id, "only a reply to another query came back: DNS reply id"),
    ];
    for (reply, message) in cases {
        let (port, t) = responder(2, reply);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(800);
        let dns = dns_lookup_in("nameserver 127.0.0.1\n", "/test/resolv.conf", port, "api.lab", deadline);
        // A malformed answer is named at once, not waited out as silence.
        let wait = if message.starts_with("only") { 1500 } else { 500 };
        assert!(start.elapsed() < Duration::from_millis(wait), "{message}: took {:?}", start.elapsed());
        t.join().unwrap();
        assert_eq!(dns.queries.len(), 2, "{dns:?}");
        for q in &dns.queries {
            assert!(
                matches!(&q.outcome, DnsOutcome::Malformed { message: m } if m.contains(message)),
                "{message}: {q:?}"
            );
        }
        let report = conndoc_diagnose::diagnose(&evidence(dns));
        let f = &report.findings[0];
        let json = serde_json::to_string(f).unwrap();
        assert_eq!(report.verdict.cause.code(), "dns-no-address", "{json}");
        assert!(f.summary.contains("a nameserver answered, but its answer was malformed"), "{json}");
        assert!(!json.contains("no nameserver answered"), "{json}");
        assert!(
            f.evidence
                .iter()
                .any(|e| e.text.starts_with("127.0.0.1 A api.lab → malformed answer: ") && e.text.contains(message)),
            "{json}"
        );
    }
}
