use super::*;

fn ok(text: &str) -> Config {
    load_str(Path::new("w.toml"), text, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"))
}
fn errs(text: &str) -> Vec<String> {
    match load_str(Path::new("w.toml"), text, &Overrides::default()) {
        Ok(_) => panic!("should fail:\n{text}"),
        Err(e) => e.errors(),
    }
}

#[test]
fn minimal_example_from_the_issue() {
    let c = ok(r#"listen = "127.0.0.1:9464"
history = "/var/lib/conndoc/history.db"

[[target]]
name = "api"
url = "tcp://127.0.0.1:8100"
interval = "1s"
"#);
    assert_eq!(c.listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.targets.len(), 1);
    let t = &c.targets[0];
    assert_eq!(t.interval, Duration::from_secs(1));
    assert_eq!(t.timeout, Duration::from_secs(1), "timeout defaults to min(2s, interval)");
    assert_eq!(t.failures_before_down, DEFAULT_FAILURES_BEFORE_DOWN);
    assert_eq!(t.target.port.get(), 8100);
    assert_eq!(c.dashboard_url, "http://127.0.0.1:9464");
}

#[test]
fn defaults_apply_when_absent() {
    let c = ok("[[target]]\nname = \"a\"\nurl = \"127.0.0.1:1\"\n");
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.history, PathBuf::from(DEFAULT_HISTORY));
    assert_eq!(c.targets[0].interval, DEFAULT_INTERVAL);
    assert_eq!(c.targets[0].timeout, DEFAULT_TIMEOUT);
}

#[test]
fn flags_win_over_the_file() {
    let c = load_str(
        Path::new("w.toml"),
        "listen = \"127.0.0.1:1000\"\nhistory = \"/a.db\"\n",
        &Overrides { listen: Some("127.0.0.1:2000".into()), history: Some("/b.db".into()) },
    )
    .unwrap();
    assert_eq!(c.listen.port(), 2000);
    assert_eq!(c.history, PathBuf::from("/b.db"));
}

#[test]
fn errors_name_file_line_and_field() {
    let e = errs("listen = \"127.0.0.1:9464\"\n\n[[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1:8100\"\ninterval = \"fast\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("w.toml:6: target[0].interval: "), "{}", e[0]);

    let e = errs(
        "[[target]]\nname = \"a\"\nurl = \"tcp://h\"\n[[target]]\nname = \"a\"\nurl = \"h:1\"\ntimeout = \"9s\"\n",
    );
    assert!(e.iter().any(|m| m.starts_with("w.toml:3: target[0].url: ") && m.contains("no port")), "{e:?}");
    assert!(e.iter().any(|m| m.starts_with("w.toml:7: target[1].timeout: ")), "{e:?}");

    let e = errs("[[target]]\nname = \"a\"\nurl = \"h:1\"\n[[target]]\nname = \"a\"\nurl = \"h:2\"\n");
    assert!(e[0].starts_with("w.toml:5: target[1].name: duplicate"), "{e:?}");
}

#[test]
fn unknown_fields_and_syntax_errors_are_located() {
    let e = errs("listen = \"127.0.0.1:9464\"\n[[target]]\nname = \"a\"\nurl = \"h:1\"\nintervall = \"1s\"\n");
    assert!(e[0].starts_with("w.toml:5: intervall: "), "{e:?}");
    let e = errs("listen = \n");
    assert!(e[0].starts_with("w.toml:1: "), "{e:?}");
    let e = errs("\nlisten = 5\n");
    assert!(e[0].starts_with("w.toml:2: listen: "), "{e:?}");
    let e = errs("[[target]]\nname = \"a\"\n");
    assert!(e[0].starts_with("w.toml:1: target[0].url: missing"), "{e:?}");
}

#[test]
fn receivers() {
    let c = ok("[[receiver]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/hook\"\n[[receiver]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = \"R0UT1NG\"\n");
    assert_eq!(c.receivers[0].kind, ReceiverKind::Webhook);
    assert_eq!(c.receivers[1].url.expose().as_str(), PAGERDUTY_URL);
    assert!(!format!("{:?}", c.receivers[1]).contains("R0UT1NG"));
    let e = errs("[[receiver]]\nname = \"pd\"\ntype = \"pagerduty\"\n");
    assert!(e[0].contains("receiver[0].routing_key: missing"), "{e:?}");
    let e = errs("[[receiver]]\nname = \"x\"\nurl = \"ftp://h/\"\n");
    assert!(e[0].starts_with("w.toml:3: receiver[0].url: "), "{e:?}");
}

#[test]
fn secrets_in_urls_stay_out_of_errors_and_debug() {
    let c = ok("[[target]]\nname = \"r\"\nurl = \"redis://:S3KRIT-pw@127.0.0.1:6379\"\n[[receiver]]\nname = \"s\"\ntype = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/T0KEN-S3KRIT\"\n");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("S3KRIT"), "{dbg}");
    assert_eq!(c.targets[0].url.shown(), "redis://:<redacted>@127.0.0.1:6379");
    assert_eq!(c.receivers[0].url.shown(), "https://hooks.slack.com/<redacted>");
    for bad in ["ftp://u:S3KRIT@h/", "http://h:99999/?token=S3KRIT", "S3KRIT"] {
        let e = errs(&format!("[[receiver]]\nname = \"x\"\nurl = \"{bad}\"\n"));
        assert!(e[0].starts_with("w.toml:3: receiver[0].url: "), "{e:?}");
        assert!(!e[0].contains("S3KRIT"), "{e:?}");
    }
}

#[test]
fn alertmanager_receivers_one_per_instance() {
    let c = ok("[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurls = [\"http://am1:9093\", \"http://am2:9093/prefix/\"]\nresend_interval = \"30s\"\n");
    let names: Vec<_> = c.receivers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["am/1", "am/2"]);
    assert_eq!(c.receivers[0].url.expose().as_str(), "http://am1:9093/api/v2/alerts");
    assert_eq!(c.receivers[1].url.expose().as_str(), "http://am2:9093/prefix/api/v2/alerts");
    assert_eq!(c.receivers[1].resend, Duration::from_secs(30));
    let c = ok("[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurl = \"http://am:9093/api/v2/alerts\"\n");
    assert_eq!((c.receivers[0].name.as_str(), c.receivers[0].resend), ("am", DEFAULT_RESEND));
    assert_eq!(c.receivers[0].url.expose().as_str(), "http://am:9093/api/v2/alerts");
    let e = errs("[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\n");
    assert!(e[0].contains("receiver[0].url: missing"), "{e:?}");
    let e = errs("[[receiver]]\nname = \"w\"\nurls = [\"http://a\"]\n");
    assert!(e[0].contains("receiver[0].urls: only an alertmanager"), "{e:?}");
    let e = errs("[[receiver]]\nname = \"am\"\ntype = \"alertmanager\"\nurls = []\n");
    assert!(e[0].contains("receiver[0].urls: 1 to 16"), "{e:?}");
}

/// 4,000 targets, `extra(i)` after target i (a header for what follows, or nothing).
fn big(extra: impl Fn(usize) -> String) -> String {
    (0..4000)
        .map(|i| {
            format!("[[target]]\nname = \"p{i}\"\nurl = \"tcp://127.0.0.1:{}\"\ntimeout = \"2s\"\n{}", i + 1, extra(i))
        })
        .collect()
}

/// The fast reader (config/fast.rs) must build exactly what toml builds, spans
/// included, or decline; and it must take the usual files.
#[test]
fn fast_reader_agrees_with_toml() {
    let taken = [
            include_str!("../../../../examples/watch.toml").to_string(),
            "listen = \"127.0.0.1:9464\"\nhistory = \"/var/lib/conndoc/history.db\"\n\n[[target]]\nname = \"api\"\nurl = \"tcp://127.0.0.1:8100\"\ninterval = \"1s\"\n".into(),
            (0..50).map(|i| format!("[[target]]\nname = \"p{i}\"\nurl = \"tcp://127.0.0.1:{i}\"\ntimeout = \"2s\"\n")).collect(),
            "[[target]]\n[[target]] # c\n\n[[target]]\nname='a'\n[target.labels]\n[[target]]\n".into(),
            "[[target]]\nname = \"a\"  # x\n\n# y\n".into(),
            "\r\n# c\r\njitter = 0.25\r\nconcurrency = +12\r\n[defaults]\r\ninterval = \"5s\"\r\n".into(),
            "[[target]]\r\nname = \"a\"\r\nlabels = {}\r\n[[receiver]]\r\nname = \"r\"\r\nsend_resolved = false".into(),
            "[[target]]\nname = \"\"\nurl = 'tcp://h:1'\nlabels = { a = \"b\", c_d = 'é' }\nno_host = true\n".into(),
            "[[target]]\nname = \"x\"\nfailures_before_down = -3\n[target.labels]\nk = \"v\"\nz = \"w\" # c\n[[target]]\nname = \"y\"\n".into(),
            "max_history_mb = 0\nlisten = \"no\"\n\t[[target]]\t\n\tname\t=\t\"t\"\n".into(),
            "".into(),
            "# only a comment".into(),
            // Big enough to be read in two halves: receivers before and after the split,
            // [defaults] in the second half, label tables on both sides.
            "listen = \"127.0.0.1:9\"\n".to_string()
                + &big(|i| match i {
                0 => "[[receiver]]\nname = \"a\"\n".into(),
                3999 => "[[receiver]]\nname = \"b\"\n[defaults]\ninterval = \"7s\"\n".into(),
                i if i % 7 == 0 => format!("[target.labels]\nk{i} = \"v\"\n"),
                _ => String::new(),
            }),
        ];
    let declined = [
        "listen = \"a\\tb\"\n",             // escapes
        "listen = \"\"\"a\"\"\"\n",         // multi-line strings
        "listen = \"a\"\nlisten = \"b\"\n", // duplicate key
        "listn = \"a\"\n",                  // unknown key
        "concurrency = \"a\"\n",            // wrong type
        "concurrency = 012\n",
        "concurrency = 1_000\n",
        "jitter = 1\n",
        "jitter = 1e-1\n",
        "[ defaults ]\n",
        "[defaults]\n[defaults]\n",
        "[target]\nname = \"a\"\n",
        "[target.labels]\n",
        "[[target]]\nlabels = { a = \"b\" }\n[target.labels]\n",
        "[[target]]\nlabels = { a = \"b\", }\n",
        "[[target]]\nlabels.a = \"b\"\n",
        "[[target]]\n\"name\" = \"b\"\n",
        "[[target]]\nname = \"b\" x\n",
        "[[target]]\nname = \"b\nc\"\n",
        "listen = \n",
        "listen = \"a\"\r",
        "\u{feff}listen = \"a\"\n",
        "listen = \"a\u{1}\"\n",
        "[[receiver]]\n[target.labels]\n",
    ];
    let declined_big = [
        // [defaults] on both sides of the split (toml: a duplicate table).
        big(|i| if i == 0 || i == 3999 { "[defaults]\ninterval = \"7s\"\n".into() } else { String::new() }),
        // A multi-line string across the split, holding target headers.
        big(|i| match i {
            0 => "listen = \"\"\"\n".into(),
            3999 => "\"\"\"\n".into(),
            _ => String::new(),
        }),
    ];
    let declined: Vec<&str> = declined.into_iter().chain(declined_big.iter().map(String::as_str)).collect();
    assert!(taken.last().unwrap().len() >= 2 * fast::PARALLEL_BYTES);
    for text in taken.iter().map(String::as_str).chain(declined.iter().copied()) {
        let fast = fast::parse(text);
        let slow = toml::from_str::<RawConfig>(text);
        if let Some(f) = &fast {
            let slow = slow.as_ref().unwrap_or_else(|e| panic!("fast reader took what toml rejects ({e}):\n{text}"));
            assert_eq!(format!("{f:?}"), format!("{slow:?}"), "{text}");
        }
    }
    for text in &taken {
        assert!(fast::parse(text).is_some(), "fast reader declined:\n{text}");
    }
    for text in &declined {
        assert!(fast::parse(text).is_none(), "fast reader took:\n{text}");
    }
}

#[test]
fn many_targets_and_errors_keep_their_lines() {
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!("[[target]]\nname = \"t{i}\"\nurl = \"tcp://127.0.0.1:{}\"\ninterval = \"x\"\n", i + 1));
    }
    let e = errs(&text);
    assert_eq!(e.len(), 3000);
    assert!(e[2999].starts_with("w.toml:12000: target[2999].interval: "), "{}", e[2999]);
}

#[test]
fn close_defaults_to_reset_and_is_validated() {
    use crate::probe::Close;
    let c = ok("[defaults]\nclose = \"fin\"\n[[target]]\nname = \"a\"\nurl = \"h:1\"\n[[target]]\nname = \"b\"\nurl = \"h:2\"\nclose = \"rst\"\n");
    assert_eq!((c.targets[0].close, c.targets[1].close), (Close::Fin, Close::Reset));
    assert_eq!(ok("[[target]]\nname = \"a\"\nurl = \"h:1\"\n").targets[0].close, Close::Reset);
    let e = errs("[[target]]\nname = \"a\"\nurl = \"h:1\"\nclose = \"linger\"\n");
    assert!(e[0].starts_with("w.toml:4: target[0].close: "), "{e:?}");
    let e = errs("[defaults]\nclose = \"x\"\n");
    assert!(e[0].starts_with("w.toml:2: defaults.close: "), "{e:?}");
}

#[test]
fn durations_with_days() {
    assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("d").is_err());
    assert_eq!(fmt_duration(Duration::from_secs(300)), "5m");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
}

/// A big file is checked in two halves side by side: the errors still come in file order,
/// each target's own errors before its name's duplicate, duplicates found across the
/// halves, the memoized durations still range-checked per field, and the targets in order.
#[test]
fn halves_checked_side_by_side_keep_the_file_order() {
    let n = 2 * PARALLEL_TARGETS + 3;
    let mut text = String::new();
    for i in 0..n {
        // Target n-1 repeats target 0's name; target n-2 has a bad url and a duplicate
        // name; every 1,000th a timeout longer than its interval (the same "2s" text that
        // every other target's timeout has).
        let name = match i {
            i if i == n - 1 => "t0".to_string(),
            i if i == n - 2 => "t5".to_string(),
            i => format!("t{i}"),
        };
        let url =
            if i == n - 2 { "tcp://127.0.0.1:0".to_string() } else { format!("tcp://127.0.0.1:{}", i % 60000 + 1) };
        let interval = if i % 1000 == 999 { "1s" } else { "5s" };
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\nurl = \"{url}\"\ninterval = \"{interval}\"\ntimeout = \"2s\"\n"
        ));
    }
    let e = errs(&text);
    let line = |e: &str| e.split(':').nth(1).unwrap().parse::<usize>().unwrap();
    assert!(e.windows(2).all(|w| line(&w[0]) <= line(&w[1])), "file order: {e:#?}");
    let timeouts = e.iter().filter(|e| e.contains("is longer than the interval")).count();
    assert_eq!(timeouts, n / 1000, "{e:#?}");
    let last = &e[e.len() - 1];
    assert!(last.contains(&format!("target[{}].name: duplicate target name \"t0\" (also target[0])", n - 1)), "{last}");
    // Target n-2 failed its url: no duplicate is reported for a target that is not kept.
    assert!(e[e.len() - 2].contains(&format!("target[{}].url", n - 2)), "{e:#?}");
    let c = ok(&text
        .replace("interval = \"1s\"", "interval = \"5s\"")
        .replace("tcp://127.0.0.1:0\"", "tcp://127.0.0.1:1\"")
        .replace(
            &format!("name = \"t0\"\nurl = \"tcp://127.0.0.1:{}\"", (n - 1) % 60000 + 1),
            &format!("name = \"last\"\nurl = \"tcp://127.0.0.1:{}\"", (n - 1) % 60000 + 1),
        )
        .replace("name = \"t5\"\nurl = \"tcp://127.0.0.1:1\"", "name = \"t5b\"\nurl = \"tcp://127.0.0.1:1\""));
    assert_eq!(c.targets.len(), n);
    assert!(c.targets.iter().enumerate().take(n - 2).all(|(i, t)| t.name == format!("t{i}")), "targets in file order");
    assert!(c.targets.iter().all(|t| t.timeout == Duration::from_secs(2) && t.interval == Duration::from_secs(5)));
}

/// A hostile name is named by its first 64 bytes and its length: one readable line, not
/// the whole value echoed back (a 2 MB name made a 2 MB error line).
#[test]
fn a_huge_bad_name_is_cut_in_its_error() {
    let name = "x".repeat(2_000_000);
    let e = errs(&format!("[[target]]\nname = \"{name}\"\nurl = \"tcp://127.0.0.1:1\"\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("w.toml:2: target[0].name: \""), "{}", &e[0][..100]);
    assert!(e[0].contains(&format!("{}\"… (2000000 bytes): use 1 to 100", "x".repeat(64))), "{}", &e[0][..200]);
    assert!(e[0].len() < 300, "{} bytes", e[0].len());
}
