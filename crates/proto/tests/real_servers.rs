//! The probes against real redis-server processes on loopback (ports this test opens), and
//! the password on every output path: report JSON, report text, evidence file, Debug.
//! Reported ignored where redis-server or openssl is not installed (failed under CI=true).

use conndoc_diagnose::fixture;
use conndoc_facts::protocol::{MismatchDirection, ProtocolFacts, ProtocolProbe, TlsFailure};
use conndoc_facts::{ConnectKind, Evidence, Secret, Target};
use conndoc_proto::redis::{probe, RedisOptions};
use conndoc_proto::resp::{self, Parser, Reply};
use conndoc_proto::tls::TlsSetup;
use conndoc_testsupport::{program, Need, Tests};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Zq-real-test-pw-4471";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A redis-server killed on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start(port: u16, extra: &[&str]) -> Redis {
        let mut args = vec!["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let p = port.to_string();
        if !extra.contains(&"--tls-port") {
            args.extend(["--port", &p]);
        }
        args.extend(extra);
        let child =
            Command::new("redis-server").args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, addr }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn opts<'a>(pw: Option<&'a Secret>, user: Option<&'a str>, tls: Option<&'a TlsSetup>) -> RedisOptions<'a> {
    RedisOptions { user, password: pw, tls, timeout: Duration::from_secs(2), config: true, db: None }
}

/// Evidence as the engine would assemble it, for the output-path checks: the target (its
/// password kept, as the engine has it), a connect to 127.0.0.1 and the protocol probe.
fn evidence(target: Target, p: ProtocolProbe) -> Evidence {
    let mut ev = fixture::evidence(&format!("tcp://127.0.0.1:{}", target.port.get()));
    ev.probes = vec![fixture::connect("127.0.0.1", target.port.get(), ConnectKind::Connected)];
    ev.target = target;
    ev.protocol = Some(ProtocolFacts { probes: vec![p], ..Default::default() });
    ev
}

/// The password appears on no output path.
fn assert_no_secret(ev: &Evidence, secret: &str) {
    let report = conndoc_diagnose::diagnose(ev);
    let outputs = [
        ("evidence file", serde_json::to_string_pretty(ev).unwrap()),
        ("report json", serde_json::to_string_pretty(&report).unwrap()),
        ("report text", conndoc_diagnose::render::text(&report, false)),
        ("report text colour", conndoc_diagnose::render::text(&report, true)),
        ("evidence debug", format!("{ev:?}")),
        ("report debug", format!("{report:?}")),
    ];
    for (what, s) in outputs {
        assert!(!s.contains(secret), "{what} contains the password:\n{s}");
    }
}

fn healthy_with_password_and_config() {
    let r = Redis::start(free_port(), &["--requirepass", PASSWORD]);
    let pw = Secret::new(PASSWORD);
    let p = probe(r.addr, &opts(Some(&pw), None, None));
    let rf = p.redis.as_ref().unwrap();
    assert!(rf.pong, "{p:?}");
    assert_eq!(rf.exchanges[0].command, "AUTH <redacted>");
    assert_eq!(rf.exchanges[0].reply.as_deref(), Some("OK"));
    let info = rf.info.as_ref().unwrap();
    assert_eq!(info.tcp_port, Some(r.addr.port() as u32));
    assert_eq!(info.maxclients, Some(10000));
    assert_eq!(rf.config.get("bind").map(String::as_str), Some("127.0.0.1"));
    assert_eq!(rf.config.get("protected-mode").map(String::as_str), Some("yes"));
    assert_eq!(rf.config.get("port"), Some(&r.addr.port().to_string()));
    assert!(rf.config.contains_key("tcp-backlog") && rf.config.contains_key("maxclients"));
    let t = Target::parse(&format!("redis://:{PASSWORD}@{}", r.addr)).unwrap();
    let ev = evidence(t, p);
    assert_eq!(conndoc_diagnose::diagnose(&ev).verdict.cause, conndoc_diagnose::Cause::Ok);
    assert_no_secret(&ev, PASSWORD);
}

fn no_password_wrong_password_acl_user() {
    let r =
        Redis::start(free_port(), &["--requirepass", PASSWORD, "--user", "app", "on", ">app-pw-Real-1", "~*", "+@all"]);
    let p = probe(r.addr, &opts(None, None, None));
    assert_eq!(p.redis.as_ref().unwrap().first_error.as_ref().unwrap().code, "NOAUTH");

    let wrong = Secret::new("wrong-Real-pw-9");
    let p = probe(r.addr, &opts(Some(&wrong), Some("app"), None));
    let rf = p.redis.as_ref().unwrap();
    assert_eq!(rf.first_error.as_ref().unwrap().code, "WRONGPASS");
    assert_eq!(rf.exchanges[0].command, "AUTH app <redacted>");
    let t = Target::parse(&format!("redis://app:wrong-Real-pw-9@{}", r.addr)).unwrap();
    let ev = evidence(t, p);
    let report = conndoc_diagnose::diagnose(&ev);
    assert_eq!(report.verdict.cause, conndoc_diagnose::Cause::RedisAuthFailed);
    assert_no_secret(&ev, "wrong-Real-pw-9");

    let right = Secret::new("app-pw-Real-1");
    let p = probe(r.addr, &opts(Some(&right), Some("app"), None));
    assert!(p.redis.as_ref().unwrap().pong, "{p:?}");
}

fn max_clients_reply_on_accept() {
    let r = Redis::start(free_port(), &["--maxclients", "1"]);
    // Let Redis drop the start-up check's connection before taking the one slot.
    std::thread::sleep(Duration::from_millis(200));
    let _held = TcpStream::connect(r.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let p = probe(r.addr, &opts(None, None, None));
    let rf = p.redis.as_ref().unwrap();
    assert!(rf.first_error.as_ref().is_some_and(|e| e.is_max_clients()), "{p:?}");
    assert!(rf.closed_by_server, "{p:?}");
    assert_eq!(rf.unsolicited.as_deref(), Some("-ERR max number of clients reached"));
}

/// A CA and a leaf for `cn` (and 127.0.0.1) signed by it, valid `days`: (ca.pem, leaf.key, leaf.pem).
fn openssl_chain(dir: &Path, cn: &str, days: u32) -> (PathBuf, PathBuf, PathBuf) {
    let sh = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=test-ca -keyout ca.key -out ca.pem; \
         openssl req -newkey rsa:2048 -nodes -subj /CN={cn} -keyout leaf.key -out leaf.csr; \
         printf 'subjectAltName=DNS:{cn},IP:127.0.0.1\\n' > ext; \
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days {days} -extfile ext -out leaf.pem",
        d = dir.display()
    );
    let ok = Command::new("sh").args(["-c", &sh]).stderr(Stdio::null()).status().unwrap().success();
    assert!(ok, "openssl failed");
    (dir.join("ca.pem"), dir.join("leaf.key"), dir.join("leaf.pem"))
}

fn tls_redis_both_ways() {
    let dir = TempDir::new("conndoc-proto-tls");
    let (ca, key, pem) = openssl_chain(&dir.0, "localhost", 5);
    let port = free_port();
    let ps = port.to_string();
    let r = Redis::start(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &ps,
            "--tls-cert-file",
            pem.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    // Trusted with --ca: healthy, certificate facts kept, expiry warning (5 days).
    let setup = TlsSetup::new("localhost", Some(&ca), false).unwrap();
    let p = probe(r.addr, &opts(None, None, Some(&setup)));
    let t = p.tls.as_ref().unwrap();
    assert!(t.ok, "{p:?}");
    assert_eq!(t.chain[0].subject, "CN=localhost");
    assert!(t.chain[0].sans.contains(&"DNS:localhost".to_string()));
    assert!((3..=5).contains(&t.chain[0].expires_in_days), "{:?}", t.chain[0]);
    assert_eq!(t.chain[0].issuer, "CN=test-ca");
    assert!(p.redis.as_ref().unwrap().pong);
    // Not trusted: unknown issuer, chain still recorded.
    let setup = TlsSetup::new("localhost", None, false).unwrap();
    let p = probe(r.addr, &opts(None, None, Some(&setup)));
    assert_eq!(p.tls.as_ref().unwrap().failure, Some(TlsFailure::UnknownIssuer));
    assert_eq!(p.tls.as_ref().unwrap().chain[0].subject, "CN=localhost");
    // Wrong name against the trusted certificate.
    let setup = TlsSetup::new("cache.example", Some(&ca), false).unwrap();
    let p = probe(r.addr, &opts(None, None, Some(&setup)));
    assert_eq!(p.tls.as_ref().unwrap().failure, Some(TlsFailure::NameMismatch));
    // --insecure accepts it.
    let setup = TlsSetup::new("cache.example", None, true).unwrap();
    assert!(probe(r.addr, &opts(None, None, Some(&setup))).redis.unwrap().pong);
    // Plaintext to the TLS port.
    let p = probe(r.addr, &opts(None, None, None));
    assert_eq!(p.tls_mismatch.as_ref().unwrap().direction, MismatchDirection::PlaintextToTls, "{p:?}");
    drop(r);
}

/// A directory of the test's own, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn silent_server_hits_the_deadline() {
    // A real listener that accepts and never answers: the probe returns at its deadline.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(800));
        drop(s);
    });
    let start = Instant::now();
    let o = RedisOptions {
        user: None,
        password: None,
        tls: None,
        timeout: Duration::from_millis(300),
        config: true,
        db: None,
    };
    let p = probe(addr, &o);
    assert!(start.elapsed() < Duration::from_millis(700), "took {:?}", start.elapsed());
    let rf = p.redis.unwrap();
    assert!(rf.exchanges[0].error.as_deref().unwrap().contains("deadline"), "{rf:?}");
    t.join().unwrap();
}

/// Read one reply from `c` in 16 KiB reads (as the probe does) before `deadline`: the reply
/// and its bytes.
fn read_reply(c: &mut TcpStream, deadline: Instant) -> (Reply, Vec<u8>) {
    let mut buf = Vec::new();
    let mut parser = Parser::default();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((r, used)) = parser.feed(&buf).unwrap() {
            assert_eq!(used, buf.len(), "one reply at a time");
            return (r, buf);
        }
        let left = deadline.checked_duration_since(Instant::now()).expect("deadline passed reading the reply");
        c.set_read_timeout(Some(left)).unwrap();
        let n = c.read(&mut chunk).unwrap();
        assert!(n > 0, "redis-server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A 4 MB array from a real redis-server (LRANGE of 150,000 elements) is read within a 3 s
/// deadline, by the parser directly and by the probe's own reading loop (the same bytes
/// replayed as the answer to its PING). Parsing from the start on every read missed it.
fn a_4_mb_array_is_read_within_the_deadline() {
    let r = Redis::start(free_port(), &[]);
    let mut c = TcpStream::connect(r.addr).unwrap();
    for batch in 0..15 {
        let items: Vec<String> = (0..10_000).map(|i| format!("element-{:06}-padding", batch * 10_000 + i)).collect();
        let mut args: Vec<&[u8]> = vec![b"RPUSH", b"big"];
        args.extend(items.iter().map(|s| s.as_bytes()));
        c.write_all(&resp::encode(&args)).unwrap();
        let (n, _) = read_reply(&mut c, Instant::now() + Duration::from_secs(10));
        assert_eq!(n, Reply::Integer((batch + 1) * 10_000));
    }
    let start = Instant::now();
    c.write_all(&resp::encode(&[b"LRANGE", b"big", b"0", b"-1"])).unwrap();
    let (reply, wire) = read_reply(&mut c, start + Duration::from_secs(3));
    let took = start.elapsed();
    assert!(matches!(&reply, Reply::Array(Some(v)) if v.len() == 150_000), "{:?}", reply.text_bounded(80));
    assert!(wire.len() > 4_000_000, "{} bytes", wire.len());
    eprintln!("LRANGE of {} bytes read and parsed in {took:?}", wire.len());

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let len = wire.len() as u64;
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = s.read(&mut [0u8; 4096]);
        let _ = s.write_all(&wire);
    });
    let start = Instant::now();
    let o =
        RedisOptions { user: None, password: None, tls: None, timeout: Duration::from_secs(3), config: true, db: None };
    let p = probe(addr, &o);
    server.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    let ping = &p.redis.as_ref().unwrap().exchanges[0];
    assert_eq!((ping.truncated, ping.length), (true, Some(len)), "{ping:?}");
    assert!(ping.reply.as_deref().unwrap().starts_with(r#"["element-000000-padding", "#), "{ping:?}");
}

fn main() {
    let mut t = Tests::new();
    let redis = program("redis-server", "redis-server");
    let redis_tls = redis.clone().and(program("openssl", "openssl"));
    t.add("healthy_with_password_and_config", &redis, healthy_with_password_and_config);
    t.add("no_password_wrong_password_acl_user", &redis, no_password_wrong_password_acl_user);
    t.add("max_clients_reply_on_accept", &redis, max_clients_reply_on_accept);
    t.add("a_4_mb_array_is_read_within_the_deadline", &redis, a_4_mb_array_is_read_within_the_deadline);
    t.add("tls_redis_both_ways", &redis_tls, tls_redis_both_ways);
    t.add("silent_server_hits_the_deadline", &Need::met(), silent_server_hits_the_deadline);
    t.run();
}
