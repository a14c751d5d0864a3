//! Hostile servers built for real: tiny TCP servers on loopback ports these tests opened,
//! sending what a broken or malicious Redis/HTTP server sends (a 64 MiB reply, an endless
//! head, `-DENIED` on loopback). The probes stay bounded, and the report says what happened.

use conndoc_diagnose::fixture;
use conndoc_facts::protocol::{ProtocolFacts, ProtocolProbe};
use conndoc_facts::{ConnectKind, Evidence};
use conndoc_proto::http_probe::{self, HttpOptions};
use conndoc_proto::redis::{self, RedisOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// A one-connection server: reads what the client sends first, writes `reply`, closes.
/// Write errors are ignored: the client may stop reading once it has seen enough.
fn serve_once(reply: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 4096];
        let _ = c.read(&mut b);
        let _ = c.write_all(&reply);
    });
    (addr, t)
}

/// Evidence as the engine would assemble it around one protocol probe.
fn evidence(target: &str, p: ProtocolProbe) -> Evidence {
    let mut ev = fixture::evidence(target);
    ev.probes = vec![fixture::connect("127.0.0.1", ev.target.port.get(), ConnectKind::Connected)];
    ev.protocol = Some(ProtocolFacts { probes: vec![p], ..Default::default() });
    ev
}

/// Every output of one diagnosis (evidence file, report JSON, report text), each at most
/// `max` bytes.
fn outputs_bounded(ev: &Evidence, max: usize) -> (String, String) {
    let report = conndoc_diagnose::diagnose(ev);
    let json = serde_json::to_string(&report).unwrap();
    let text = conndoc_diagnose::render::text(&report, false);
    for (what, len) in
        [("evidence", serde_json::to_string(ev).unwrap().len()), ("report json", json.len()), ("text", text.len())]
    {
        assert!(len <= max, "{what} is {len} bytes (at most {max})");
    }
    (json, text)
}

fn redis_opts(timeout: Duration) -> RedisOptions<'static> {
    RedisOptions { user: None, password: None, tls: None, timeout, config: true, db: None }
}

#[test]
fn a_64_mib_redis_reply_is_stated_by_its_length_not_copied() {
    let payload = 64 * MIB;
    let mut reply = format!("${payload}\r\n").into_bytes();
    reply.resize(reply.len() + payload, b'x');
    reply.extend_from_slice(b"\r\n");
    let wire = reply.len() as u64;
    let (addr, t) = serve_once(reply);
    let p = redis::probe(addr, &redis_opts(Duration::from_secs(20)));
    t.join().unwrap();
    let rf = p.redis.as_ref().unwrap();
    let ping = &rf.exchanges[0];
    assert_eq!(ping.command, "PING");
    assert!(ping.truncated, "{:?}", ping.length);
    assert_eq!(ping.length, Some(wire));
    let kept = ping.reply.as_deref().unwrap();
    assert!(kept.len() <= 4096 && kept.starts_with("xxxx"), "{} bytes kept", kept.len());
    let ev = evidence(&format!("redis://{addr}"), p);
    let (json, text) = outputs_bounded(&ev, 64 * 1024);
    assert!(json.contains(&format!("\"length\":{wire}")) && json.contains("\"truncated\":true"), "{json}");
    assert!(text.contains(&format!("4096 bytes shown of a {wire}-byte reply")), "{text}");
}

#[test]
fn a_long_redis_error_and_array_are_cut_too() {
    // An error line of 60 KiB (under the line limit) and an array of 100,000 bulk strings.
    let mut reply = format!("-ERR {}\r\n", "e".repeat(60 * 1024)).into_bytes();
    reply.extend_from_slice(b"*100000\r\n");
    for _ in 0..100_000 {
        reply.extend_from_slice(b"$3\r\nabc\r\n");
    }
    let (addr, t) = serve_once(reply);
    let p = redis::probe(addr, &redis_opts(Duration::from_secs(10)));
    t.join().unwrap();
    let rf = p.redis.as_ref().unwrap();
    assert!(rf.exchanges[0].truncated && rf.exchanges[1].truncated, "{:?}", rf.exchanges);
    assert_eq!(rf.exchanges[1].length, Some(9 + 100_000 * 9));
    assert!(rf.first_error.as_ref().unwrap().text.len() <= 4096);
    outputs_bounded(&evidence(&format!("redis://{addr}"), p), 64 * 1024);
}

#[test]
fn a_64_mib_http_body_or_an_endless_head_stays_out_of_the_report() {
    let mut body = b"HTTP/1.1 503 Service Unavailable\r\nServer: big\r\nContent-Length: 67108864\r\n\r\n".to_vec();
    body.resize(body.len() + 64 * MIB, b'b');
    let mut head = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
    head.resize(head.len() + 64 * MIB, b'h');
    for (what, reply) in [("body", body), ("head", head)] {
        let (addr, t) = serve_once(reply);
        let o = HttpOptions { host_header: "h", path: "/", tls: None, timeout: Duration::from_secs(5) };
        let start = Instant::now();
        let p = http_probe::probe(addr, &o);
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: took {:?}", start.elapsed());
        drop(t); // the server may still be blocked writing what the probe never read
        let h = p.http.clone().unwrap();
        if what == "body" {
            assert_eq!(h.status, Some(503), "{h:?}");
        } else {
            assert!(h.error.as_deref().unwrap().contains("larger than 65536 bytes"), "{h:?}");
        }
        outputs_bounded(&evidence(&format!("http://{addr}"), p), 64 * 1024);
    }
}

#[test]
fn denied_to_a_loopback_client_does_not_say_it_is_not_on_loopback() {
    // What protected mode writes on accept to a client it does not see on loopback; here the
    // client is on loopback, so something in between (a proxy, a port forward) is the reason.
    let denied = b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface.\r\n";
    let (addr, t) = serve_once(denied.to_vec());
    let p = redis::probe(addr, &redis_opts(Duration::from_secs(2)));
    t.join().unwrap();
    let rf = p.redis.as_ref().unwrap();
    assert!(rf.unsolicited.as_deref().is_some_and(|u| u.starts_with("-DENIED")), "{rf:?}");
    let report = conndoc_diagnose::diagnose(&evidence(&format!("redis://{addr}"), p));
    let f = &report.findings[0];
    let json = serde_json::to_string(f).unwrap();
    assert_eq!(f.cause.code(), "redis-protected-mode", "{json}");
    assert!(!f.summary.contains("the client is not on loopback"), "{}", f.summary);
    assert!(f.summary.contains("although this client dialled loopback the server saw"), "{}", f.summary);
    assert!(
        f.evidence.iter().any(|e| e.kind == "redis-reply" && e.text.contains("-DENIED Redis is running")),
        "{json}"
    );
}
