//! Alert delivery over HTTPS (rustls) to a real TLS receiver on loopback, with a
//! certificate made by the openssl CLI: trusted through `ca_file` it arrives; without it the
//! certificate is refused, the alert stays queued and the failure shows in the metrics.

use super::common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn tls_receiver(
    cert: &std::path::Path,
    key: &std::path::Path,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
) -> (u16, Arc<AtomicBool>) {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, c);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and the Content-Length body; a refused handshake just ends here.
            let body = loop {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break Some(buf[i + 4..i + 4 + len].to_vec());
                    }
                }
            };
            if let Some(b) = body {
                if let Ok(v) = serde_json::from_slice(&b) {
                    got.lock().unwrap().push(v);
                }
                let _ = tls.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    (port, stop)
}

pub fn alerts_over_https_with_a_private_ca() {
    let dir = TempDir::new("https");
    // A private CA and a leaf certificate for localhost signed by it.
    let (ca, ca_key, cert, key, csr, ext) = (
        dir.path("ca.pem"),
        dir.path("ca.key"),
        dir.path("cert.pem"),
        dir.path("key.pem"),
        dir.path("leaf.csr"),
        dir.path("leaf.ext"),
    );
    std::fs::write(&ext, "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let openssl = |args: Vec<std::ffi::OsString>| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let os = |v: &[&dyn AsRef<std::ffi::OsStr>]| v.iter().map(|a| a.as_ref().to_os_string()).collect::<Vec<_>>();
    let mut a =
        os(&[&"req", &"-x509", &"-days", &"1", &"-subj", &"/CN=conndoc test CA", &"-keyout", &ca_key, &"-out", &ca]);
    a.extend(ec.iter().map(|s| s.into()));
    openssl(a);
    let mut a = os(&[&"req", &"-new", &"-subj", &"/CN=localhost", &"-keyout", &key, &"-out", &csr]);
    a.extend(ec.iter().map(|s| s.into()));
    openssl(a);
    openssl(os(&[
        &"x509",
        &"-req",
        &"-in",
        &csr,
        &"-CA",
        &ca,
        &"-CAkey",
        &ca_key,
        &"-CAcreateserial",
        &"-days",
        &"1",
        &"-extfile",
        &ext,
        &"-out",
        &cert,
    ]));
    let got = Arc::new(Mutex::new(Vec::new()));
    let (hook, stop) = tls_receiver(&cert, &key, got.clone());

    let (svc_port, listen) = (free_port(), free_port());
    let cfg = dir.path("watch.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"listen = "127.0.0.1:{listen}"
history = "{}"

[[target]]
name = "api"
url = "tcp://127.0.0.1:{svc_port}"
interval = "200ms"
failures_before_down = 2
successes_before_up = 2

[[receiver]]
name = "trusted"
url = "https://localhost:{hook}/hook"
ca_file = "{}"
timeout = "2s"
retry_max = "1s"

[[receiver]]
name = "untrusted"
url = "https://localhost:{hook}/hook"
timeout = "2s"
retry_max = "1s"
"#,
            dir.path("history.db").display(),
            ca.display()
        ),
    )
    .unwrap();
    let svc = Service::start(svc_port);
    let d = Daemon::start(&cfg, ([127, 0, 0, 1], listen).into(), &dir.path("log"));
    d.wait_state("api", "up", Duration::from_secs(20));
    svc.stop();
    d.wait_state("api", "down", Duration::from_secs(20));
    let a = wait_for(Duration::from_secs(20), "the alert over https", || got.lock().unwrap().first().cloned());
    assert_eq!(a["status"], "firing");
    assert_eq!(a["cause"], "no-listener");
    wait_for(Duration::from_secs(20), "the untrusted receiver's failure in the metrics", || {
        let m = d.metrics();
        (m.contains("conndoc_alert_delivery_failures_total{receiver=\"untrusted\"} ")
            && !m.contains("conndoc_alert_delivery_failures_total{receiver=\"untrusted\"} 0\n")
            && m.contains("conndoc_alerts_pending{receiver=\"untrusted\"} 1\n"))
        .then_some(())
    });
    let log = d.log_text();
    assert!(log.contains("to untrusted failed") && log.to_ascii_lowercase().contains("certificate"), "{log}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(got.lock().unwrap().len(), 1, "the untrusted receiver got nothing");
    assert_eq!(d.terminate(), Some(0));
    stop.store(true, Ordering::Relaxed);
}
