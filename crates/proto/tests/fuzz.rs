//! Fuzzing the hand-written RESP parser and the HTTP response-head parsing (httparse behind
//! our limits) with replies of real servers as seeds (tests/corpus/, recorded by
//! tests/record-corpus.py; plus a deep nesting, a RESP3 seed, a mixed nested reply, an HTTP
//! 999 and a head with control bytes written by hand): no panic, no hang, bounded memory,
//! and the incremental contract — a reply never claims more bytes than it was given, any
//! strict prefix of a complete reply asks for more instead of failing, and the resumable
//! parser fed the bytes in steps gives the same reply. redis.conf lines (the directives
//! redis-server 7.0 ships in /etc/redis/redis.conf, plus quotes and secrets by hand) are
//! split and linted: no panic, plain words split as whitespace does, and no `requirepass`
//! or `user` value in a lint error.

use conndoc_proto::{http, redis_conf, resp};
use conndoc_testsupport::fuzz::{check_bytes, CappedAlloc};
use std::path::Path;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(512 << 20);

fn corpus(kind: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(kind)
}

#[test]
fn resp_replies() {
    check_bytes(&corpus("resp"), |buf| {
        let mut at = 0;
        // A pipelined stream: parse reply after reply, as the probe does.
        for _ in 0..1000 {
            match resp::parse(&buf[at..]) {
                Ok(Some((reply, used))) => {
                    assert!(used > 0 && used <= buf.len() - at, "used {used} of {}", buf.len() - at);
                    for k in [0, used / 2, used.saturating_sub(1)] {
                        if k < used {
                            let p = resp::parse(&buf[at..at + k]);
                            assert!(matches!(p, Ok(None)), "prefix {k} of a {used}-byte reply: {p:?}");
                        }
                    }
                    // Fed as it arrives (in odd-sized steps), the resumable parser agrees.
                    let mut p = resp::Parser::default();
                    let mut end = 0;
                    let fed = loop {
                        end = (end + 1 + end % 7).min(used);
                        match p.feed(&buf[at..at + end]) {
                            Ok(None) if end < used => {}
                            other => break other,
                        }
                    };
                    assert_eq!(fed, Ok(Some((reply.clone(), used))), "fed in steps");
                    let _ = (reply.text(), reply.error(), reply.bulk_text(), reply.pairs());
                    at += used;
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
}

#[test]
fn http_heads() {
    check_bytes(&corpus("http"), |buf| {
        if let Ok(Some((head, used))) = http::parse_head(buf) {
            assert!(used <= buf.len());
            let _ = (head.header("server"), head.all("set-cookie"));
            // A complete head stays complete with more bytes after it.
            let mut more = buf.to_vec();
            more.extend_from_slice(b"trailing body bytes");
            let again = http::parse_head(&more);
            assert!(matches!(again, Ok(Some((_, u))) if u == used), "{again:?}");
        }
    });
}

#[test]
fn recorded_replies_parse() {
    let read = |k: &str, n: &str| std::fs::read(corpus(k).join(n)).unwrap();
    let (r, _) = resp::parse(&read("resp", "noauth")).unwrap().unwrap();
    assert!(r.error().is_some_and(|e| e.starts_with("NOAUTH")), "{r:?}");
    let (h, _) = http::parse_head(&read("http", "busybox-404")).unwrap().unwrap();
    assert_eq!(h.status, 404);
    assert!(resp::parse(&read("resp", "deep-nesting")).is_err(), "nesting is bounded");
    let mixed = read("resp", "nested-mixed");
    assert!(matches!(resp::parse(&mixed), Ok(Some((_, n))) if n == mixed.len()));
    assert!(matches!(http::parse_head(&read("http", "status-999")), Err(http::HttpError::StatusOutOfRange(_))));
    assert!(matches!(http::parse_head(&read("http", "control-bytes")), Err(http::HttpError::BadStatusLine(_))));
}

#[test]
fn redis_conf_lines() {
    conndoc_testsupport::fuzz::check_str(&corpus("redis-conf"), |text| {
        let mut ds = Vec::new();
        for (n, line) in text.lines().enumerate().take(10_000) {
            let Ok(mut args) = redis_conf::split_args(line) else { continue };
            if !line.contains(['"', '\'', '\\']) {
                assert_eq!(args, line.split_ascii_whitespace().collect::<Vec<_>>(), "{line:?}");
            }
            if args.is_empty() {
                continue;
            }
            let name = args.remove(0).to_ascii_lowercase();
            ds.push(redis_conf::Directive { file: "redis.conf".into(), line: n as u32 + 1, name, args });
        }
        let secrets: Vec<&String> = ds
            .iter()
            .filter(|d| d.name == "requirepass" || d.name == "user" || d.name == "masterauth")
            .flat_map(|d| d.args.iter().skip(usize::from(d.name == "user")))
            .filter(|a| a.len() >= 6 && !"redis.conf".contains(a.as_str()))
            .collect();
        // What the lint shows, as text (its error, or its problems and effective config).
        let show = |ds: &[redis_conf::Directive]| match redis_conf::lint_directives(
            "redis.conf",
            vec![],
            ds,
            &redis_conf::Limits::default(),
        ) {
            Ok(r) => format!("{:?}{:?}", r.problems, r.effective),
            Err(e) => e.to_string(),
        };
        let shown = show(&ds);
        // The same input with every secret-bearing value replaced: a secret that shows up in
        // `shown` but not here came from the secret (a value like "-backlog" also occurs
        // inside the directive name tcp-backlog, which is no leak).
        let masked: Vec<redis_conf::Directive> = ds
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if d.name == "requirepass" || d.name == "user" || d.name == "masterauth" {
                    let keep = usize::from(d.name == "user");
                    for a in d.args.iter_mut().skip(keep) {
                        *a = "x".into();
                    }
                }
                d
            })
            .collect();
        let without = show(&masked);
        for s in &secrets {
            assert!(!shown.contains(s.as_str()) || without.contains(s.as_str()), "{s:?} in {shown}");
        }
    });
}
