//! Unix sockets standing in front of (or instead of) a lab Docker engine (docs/lab.md,
//! "Docker"):
//!
//! - [`Recorder`]: a proxy in front of the engine's real socket that passes every byte
//!   through unchanged and records each HTTP request's method and path, so a scenario can
//!   prove conndoc only read from the engine (`GET`, never `POST`/`DELETE`/`PUT`).
//! - [`hostile`]: an engine socket that misbehaves (accepts and never answers, answers
//!   one byte at a time, or sends an endless body), run by `conndoc-labtool engine`.
//!
//! Bounded: connections held, bytes sent, requests recorded; every thread ends when its
//! peer closes.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests recorded per recorder, at most.
const MAX_RECORDS: usize = 10_000;
/// A request head longer than this is recorded as unparsed and the rest passed through raw.
const MAX_HEAD: usize = 64 << 10;
/// Connections served at once, at most.
const MAX_CONNS: usize = 256;

/// A recording proxy: `listen` ⇄ `upstream`.
pub struct Recorder {
    path: PathBuf,
    records: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn start(listen: &Path, upstream: &Path) -> std::io::Result<Recorder> {
        let _ = std::fs::remove_file(listen);
        let l = UnixListener::bind(listen)?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2, up) = (records.clone(), stop.clone(), upstream.to_path_buf());
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = std::thread::spawn(move || {
            for c in l.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(c) = c else { continue };
                if live.load(Ordering::SeqCst) >= MAX_CONNS {
                    continue; // dropped: the client sees the connection closed
                }
                let Ok(u) = UnixStream::connect(&up) else { continue };
                live.fetch_add(1, Ordering::SeqCst);
                let (r3, live2) = (r2.clone(), live.clone());
                std::thread::spawn(move || {
                    pipe(c, u, &r3);
                    live2.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(Recorder { path: listen.to_path_buf(), records, stop, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `METHOD PATH` of every request since the last [`Recorder::clear`].
    pub fn requests(&self) -> Vec<String> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copy both ways; the client's side is parsed for request heads on the way.
fn pipe(client: UnixStream, upstream: UnixStream, records: &Mutex<Vec<String>>) {
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let (mut u_read, mut c_write) = (upstream, client);
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut u_read, &mut c_write);
        let _ = c_write.shutdown(std::net::Shutdown::Write);
    });
    let mut parser = Parser::default();
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match c_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for r in parser.feed(&buf[..n]) {
            let mut g = records.lock().unwrap_or_else(|e| e.into_inner());
            if g.len() < MAX_RECORDS {
                g.push(r);
            }
        }
        if u_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = u_write.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

/// Finds request heads in the client's byte stream (HTTP/1.1 keep-alive: one after
/// another, a `Content-Length` body skipped). After anything it cannot follow (a chunked
/// body, an upgrade, an oversized head) it stops parsing; that request is already recorded.
#[derive(Default)]
pub(crate) struct Parser {
    acc: Vec<u8>,
    body_left: usize,
    raw: bool,
}

impl Parser {
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !self.raw && !bytes.is_empty() {
            if self.body_left > 0 {
                let k = self.body_left.min(bytes.len());
                self.body_left -= k;
                bytes = &bytes[k..];
                continue;
            }
            self.acc.extend_from_slice(bytes);
            bytes = &[];
            while let Some(end) = self.acc.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.acc[..end]).into_owned();
                let rest = self.acc.split_off(end + 4);
                self.acc = Vec::new();
                let mut lines = head.lines();
                let first = lines.next().unwrap_or_default();
                let mut words = first.split_whitespace();
                out.push(format!("{} {}", words.next().unwrap_or("?"), words.next().unwrap_or("?")));
                let mut len = 0usize;
                for l in lines {
                    let Some((k, v)) = l.split_once(':') else { continue };
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                    match k.as_str() {
                        "content-length" => len = v.parse().unwrap_or(0),
                        "transfer-encoding" if v.contains("chunked") => self.raw = true,
                        "upgrade" => self.raw = true,
                        _ => {}
                    }
                }
                if self.raw {
                    return out;
                }
                let k = len.min(rest.len());
                self.body_left = len - k;
                self.acc = rest[k..].to_vec();
                if self.body_left > 0 {
                    break;
                }
            }
            if self.acc.len() > MAX_HEAD {
                out.push("<unparsed request head>".into());
                self.raw = true;
            }
        }
        out
    }
}

/// How a hostile engine socket misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Accept every connection, read what is sent, never answer.
    Hang,
    /// Answer every request with a valid empty list, one byte every 50 ms.
    Trickle,
    /// Answer with `200 OK` and an endless chunked JSON body, as fast as it goes (1 GiB at most).
    Huge,
}

impl std::str::FromStr for Hostile {
    type Err = String;
    fn from_str(s: &str) -> Result<Hostile, String> {
        match s {
            "hang" => Ok(Hostile::Hang),
            "trickle" => Ok(Hostile::Trickle),
            "huge" => Ok(Hostile::Huge),
            _ => Err(format!("unknown engine mode {s:?} (hang, trickle, huge)")),
        }
    }
}

/// Serve `mode` on a new socket at `path` until killed.
pub fn hostile(path: &Path, mode: Hostile) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    crate::tool::say(format_args!("hostile engine ({mode:?}) on {}", path.display()));
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        if live.load(Ordering::SeqCst) >= MAX_CONNS {
            continue;
        }
        live.fetch_add(1, Ordering::SeqCst);
        let live2 = live.clone();
        std::thread::spawn(move || {
            let _ = serve_hostile(&mut c, mode);
            live2.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn serve_hostile(c: &mut UnixStream, mode: Hostile) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    if mode == Hostile::Hang {
        // Read (so the client's write never blocks) and never answer.
        while c.read(&mut buf)? > 0 {}
        return Ok(());
    }
    // Wait for a request head before answering.
    let mut parser = Parser::default();
    loop {
        let n = c.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if !parser.feed(&buf[..n]).is_empty() {
            break;
        }
    }
    match mode {
        Hostile::Trickle => {
            let body = "[]";
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            for b in resp.as_bytes() {
                c.write_all(&[*b])?;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Hostile::Huge => {
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let item = br#"{"Id":"0000000000000000000000000000000000000000000000000000000000000000","Names":["/x"],"State":"running","Ports":[]},"#;
            let mut chunk = Vec::new();
            while chunk.len() < 60 << 10 {
                chunk.extend_from_slice(item);
            }
            // `[` first, then the array goes on until the client stops reading.
            c.write_all(b"1\r\n[\r\n")?;
            let mut sent = 0usize;
            while sent < 1 << 30 {
                c.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                c.write_all(&chunk)?;
                c.write_all(b"\r\n")?;
                sent += chunk.len();
            }
        }
        Hostile::Hang => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_finds_every_request_head() {
        let mut p = Parser::default();
        let mut got = p.feed(b"GET /containers/json?all=1 HTTP/1.1\r\nhost: docker\r\n\r\nGET /containers/ab");
        got.extend(p.feed(b"c/json HTTP/1.1\r\nhost: docker\r\n\r\n"));
        // A body by Content-Length is skipped, also split over reads.
        got.extend(p.feed(b"POST /containers/abc/stop HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"t\":"));
        got.extend(p.feed(b"1}DELETE /containers/abc HTTP/1.1\r\n\r\n"));
        assert_eq!(
            got,
            vec![
                "GET /containers/json?all=1",
                "GET /containers/abc/json",
                "POST /containers/abc/stop",
                "DELETE /containers/abc"
            ]
        );
        // A chunked body ends the parsing; its request is recorded.
        let mut p = Parser::default();
        assert_eq!(p.feed(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n"), vec!["PUT /x"]);
        assert!(p.feed(b"GET /y HTTP/1.1\r\n\r\n").is_empty());
    }

    /// Through a real socket pair: what the client sends arrives unchanged, the answer comes
    /// back, and the requests are recorded — a POST included, so the lab's check can fail.
    #[test]
    fn recorder_passes_bytes_and_records() {
        let dir = std::env::temp_dir().join(format!("conndoc-lab-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let up = UnixListener::bind(dir.join("up.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = up.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < 2 {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            got
        });
        let rec = Recorder::start(&dir.join("rec.sock"), &dir.join("up.sock")).unwrap();
        let mut c = UnixStream::connect(rec.path()).unwrap();
        let sent = b"GET /version HTTP/1.1\r\n\r\nPOST /containers/x/kill HTTP/1.1\r\n\r\n";
        c.write_all(sent).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(server.join().unwrap(), sent);
        assert_eq!(answer, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(rec.requests(), vec!["GET /version", "POST /containers/x/kill"]);
        drop(rec);
        assert!(!dir.join("rec.sock").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
