//! A fast reader for the usual shape of a watch config: `key = value` lines, `[defaults]`,
//! `[[target]]`, `[[receiver]]` and `[target.labels]` headers, comments, and values that
//! are plain strings (no escapes), decimal integers, plain floats, booleans and one-line
//! inline tables of strings. It builds the same [`RawConfig`], spans included, as the
//! `toml` crate does, about 20 times faster (a 10,000-target file is read in ~2 ms
//! instead of ~40 ms, which was most of `conndoc check`'s start-up).
//!
//! It gives up (returns `None`) at the first thing outside that subset, including every
//! error, duplicate or unknown key: the caller then parses with `toml`, so anything unusual
//! is still read exactly as TOML says and every error message still comes from `toml`.
//! A test compares both readers on many files.

use super::{RawConfig, RawDefaults, RawReceiver, RawTarget};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

pub(super) fn parse(text: &str) -> Option<RawConfig> {
    // A big file is read in two halves side by side, split before a `[[target]]` header
    // line (`conndoc check` waits for the whole config before its first connect). The
    // second half starts at a header, so it holds no root keys; anything that spans lines
    // (a multi-line string or array) makes the first half give up, and with it the whole.
    let mid = text.len() / 2;
    let split = (text.len() >= PARALLEL_BYTES && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2))
        .then(|| text[mid..].find("\n[[target]]\n").map(|i| mid + i + 1))
        .flatten();
    let Some(split) = split else { return parse_part(text, 0, true) };
    let (first, second) = std::thread::scope(|s| {
        let later = s.spawn(|| parse_part(text, split, false));
        let now = parse_part(&text[..split], 0, true);
        (now, later.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    let (mut cfg, second) = (first?, second?);
    let RawConfig { defaults, target, receiver, .. } = second;
    if defaults.is_some() {
        if cfg.defaults.is_some() {
            return None;
        }
        cfg.defaults = defaults;
    }
    cfg.target.extend(target);
    cfg.receiver.extend(receiver);
    Some(cfg)
}

/// From this size on (~1,400 targets) a file is read in two halves.
pub(super) const PARALLEL_BYTES: usize = 100_000;

/// Read `text` from `from`; root keys only with `root` (a second half starts at a header).
fn parse_part(text: &str, from: usize, root: bool) -> Option<RawConfig> {
    // Control characters (other than tab and line ends) are errors or need care in TOML.
    // In blocks without an early exit, so the check runs on vectors.
    let bad = |b: u8| (b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r') || b == 0x7f;
    if text.as_bytes()[from..].chunks(256).any(|c| c.iter().fold(false, |a, &b| a | bad(b))) {
        return None;
    }
    let mut p = Reader { text, s: text.as_bytes(), i: from };
    let mut cfg = RawConfig::default();
    // One allocation for the list, not a dozen growing copies of it.
    cfg.target.reserve(text[from..].matches("[[target]]").count());
    let mut table = Table::Root;
    // The open [[target]]/[[receiver]]/[target.labels]: where its header starts and where
    // its last value ends (toml's span for the table).
    let mut open: Option<Range<usize>> = None;
    // The [[target]] being read, pushed with its span when it ends: a RawTarget is ~500
    // bytes, and pushing a default one to re-span it at its end copied it three times.
    let mut cur: Option<RawTarget> = None;
    loop {
        p.skip_ws();
        let Some(c) = p.peek() else { break };
        match c {
            b'\n' | b'\r' | b'#' => p.end_of_line()?,
            b'[' => {
                close(&mut cfg, table, open.take(), &mut cur);
                let start = p.i;
                let array = p.s.get(p.i + 1) == Some(&b'[');
                p.i += if array { 2 } else { 1 };
                let name = p.bare_key_or_dotted()?;
                p.expect(if array { b"]]" } else { b"]" })?;
                let header = start..p.i;
                p.end_of_line()?;
                table = match (array, name) {
                    (true, "target") => {
                        cur = Some(RawTarget::default());
                        Table::Target
                    }
                    (true, "receiver") => {
                        cfg.receiver.push(Spanned::new(header.clone(), RawReceiver::default()));
                        Table::Receiver
                    }
                    (false, "defaults") if cfg.defaults.is_none() => {
                        cfg.defaults = Some(RawDefaults::default());
                        Table::Defaults
                    }
                    // Only right after its own [[target]] (anything else is rare: let toml judge).
                    (false, "target.labels") if table == Table::Target => {
                        let t = cfg.target.last_mut()?.get_mut();
                        if t.labels.is_some() {
                            return None;
                        }
                        t.labels = Some(Spanned::new(header.clone(), BTreeMap::new()));
                        Table::Labels
                    }
                    _ => return None,
                };
                if table != Table::Defaults {
                    open = Some(header);
                }
            }
            _ if table == Table::Root && !root => return None,
            _ => {
                let key = p.bare_key()?;
                p.skip_ws();
                p.expect(b"=")?;
                p.skip_ws();
                let (value, span) = p.value()?;
                p.end_of_line()?;
                if let Some(o) = &mut open {
                    o.end = span.end;
                }
                set(&mut cfg, cur.as_mut(), table, key, value, span)?;
            }
        }
    }
    close(&mut cfg, table, open, &mut cur);
    Some(cfg)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Root,
    Defaults,
    Target,
    Receiver,
    Labels,
}

/// The table that ends here gets the span toml gives it: header to last value (the
/// [[target]] being read is pushed with it).
fn close(cfg: &mut RawConfig, table: Table, span: Option<Range<usize>>, cur: &mut Option<RawTarget>) {
    fn respan<T: Default>(s: &mut Spanned<T>, span: Range<usize>) {
        let v = std::mem::take(s.get_mut());
        *s = Spanned::new(span, v);
    }
    let Some(span) = span else { return };
    match table {
        Table::Target => {
            if let Some(t) = cur.take() {
                cfg.target.push(Spanned::new(span, t))
            }
        }
        Table::Receiver => {
            if let Some(r) = cfg.receiver.last_mut() {
                respan(r, span)
            }
        }
        Table::Labels => {
            if let Some(l) = cfg.target.last_mut().and_then(|t| t.get_mut().labels.as_mut()) {
                respan(l, span)
            }
        }
        Table::Root | Table::Defaults => {}
    }
}

enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Inline(BTreeMap<String, String>),
}

impl Value {
    fn str(self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    fn int(self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }
    fn bool(self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// Fill one field; `None` for an unknown or repeated key or a value of another type.
fn set(
    cfg: &mut RawConfig,
    cur: Option<&mut RawTarget>,
    table: Table,
    key: &str,
    v: Value,
    span: Range<usize>,
) -> Option<()> {
    fn put<T>(slot: &mut Option<Spanned<T>>, v: Option<T>, span: Range<usize>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(Spanned::new(span, v?));
        Some(())
    }
    fn flag(slot: &mut Option<bool>, v: Option<bool>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(v?);
        Some(())
    }
    match table {
        Table::Root => match key {
            "listen" => put(&mut cfg.listen, v.str(), span),
            "history" => put(&mut cfg.history, v.str(), span),
            "retention" => put(&mut cfg.retention, v.str(), span),
            "max_history_mb" => put(&mut cfg.max_history_mb, v.int(), span),
            "history_resolution" => put(&mut cfg.history_resolution, v.str(), span),
            "concurrency" => put(&mut cfg.concurrency, v.int(), span),
            "diagnose_concurrency" => put(&mut cfg.diagnose_concurrency, v.int(), span),
            "rediagnose" => put(&mut cfg.rediagnose, v.str(), span),
            "jitter" => match v {
                Value::Float(f) => put(&mut cfg.jitter, Some(f), span),
                _ => None,
            },
            "dashboard_url" => put(&mut cfg.dashboard_url, v.str(), span),
            _ => None,
        },
        Table::Defaults => {
            let d = cfg.defaults.as_mut()?;
            match key {
                "interval" => put(&mut d.interval, v.str(), span),
                "timeout" => put(&mut d.timeout, v.str(), span),
                "failures_before_down" => put(&mut d.failures_before_down, v.int(), span),
                "successes_before_up" => put(&mut d.successes_before_up, v.int(), span),
                "close" => put(&mut d.close, v.str(), span),
                _ => None,
            }
        }
        Table::Target => {
            let t = cur?;
            match key {
                "name" => put(&mut t.name, v.str(), span),
                "url" => put(&mut t.url, v.str(), span),
                "interval" => put(&mut t.interval, v.str(), span),
                "timeout" => put(&mut t.timeout, v.str(), span),
                "failures_before_down" => put(&mut t.failures_before_down, v.int(), span),
                "successes_before_up" => put(&mut t.successes_before_up, v.int(), span),
                "labels" => match v {
                    Value::Inline(m) => put(&mut t.labels, Some(m), span),
                    _ => None,
                },
                "check" => put(&mut t.check, v.str(), span),
                "netns" => put(&mut t.netns, v.str(), span),
                "expect" => put(&mut t.expect, v.str(), span),
                "no_host" => flag(&mut t.no_host, v.bool()),
                "password_file" => put(&mut t.password_file, v.str(), span),
                "close" => put(&mut t.close, v.str(), span),
                "ssh" => put(&mut t.ssh, v.str(), span),
                _ => None,
            }
        }
        Table::Labels => {
            let l = cfg.target.last_mut()?.get_mut().labels.as_mut()?.get_mut();
            let v = v.str()?;
            l.insert(key.to_string(), v).is_none().then_some(())
        }
        Table::Receiver => {
            let r = cfg.receiver.last_mut()?.get_mut();
            match key {
                "name" => put(&mut r.name, v.str(), span),
                "type" => put(&mut r.kind, v.str(), span),
                "url" => put(&mut r.url, v.str(), span),
                "routing_key_file" => put(&mut r.routing_key_file, v.str(), span),
                "routing_key" => put(&mut r.routing_key, v.str(), span),
                "timeout" => put(&mut r.timeout, v.str(), span),
                "retry_max" => put(&mut r.retry_max, v.str(), span),
                "send_resolved" => flag(&mut r.send_resolved, v.bool()),
                "ca_file" => put(&mut r.ca_file, v.str(), span),
                _ => None,
            }
        }
    }
}

struct Reader<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn expect(&mut self, what: &[u8]) -> Option<()> {
        self.s[self.i..].starts_with(what).then(|| self.i += what.len())
    }
    /// Spaces, an optional comment, then a line end or the end of the text.
    fn end_of_line(&mut self) -> Option<()> {
        self.skip_ws();
        if self.peek() == Some(b'#') {
            while !matches!(self.peek(), None | Some(b'\n' | b'\r')) {
                self.i += 1;
            }
        }
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.i += 1;
                Some(())
            }
            Some(b'\r') if self.s.get(self.i + 1) == Some(&b'\n') => {
                self.i += 2;
                Some(())
            }
            _ => None,
        }
    }
    fn bare_key(&mut self) -> Option<&'a str> {
        let start = self.i;
        while matches!(self.peek(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-')) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.text[start..self.i])
    }
    /// A table name: bare keys joined by dots, no spaces.
    fn bare_key_or_dotted(&mut self) -> Option<&'a str> {
        let start = self.i;
        self.bare_key()?;
        while self.peek() == Some(b'.') {
            self.i += 1;
            self.bare_key()?;
        }
        Some(&self.text[start..self.i])
    }
    /// A one-line string without escapes: "..." or '...'.
    fn string(&mut self) -> Option<String> {
        let q = self.peek()?;
        if self.s[self.i..].starts_with(&[q, q]) {
            // "" is fine, """ starts a multi-line string.
            if self.s.get(self.i + 2) == Some(&q) {
                return None;
            }
            self.i += 2;
            return Some(String::new());
        }
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek()? {
                b'\n' | b'\r' => return None,
                b'\\' if q == b'"' => return None,
                c if c == q => break,
                _ => self.i += 1,
            }
        }
        let s = self.text[start..self.i].to_string();
        self.i += 1;
        Some(s)
    }
    fn value(&mut self) -> Option<(Value, Range<usize>)> {
        let start = self.i;
        let v = match self.peek()? {
            b'"' | b'\'' => Value::Str(self.string()?),
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        self.skip_ws();
                        let k = self.bare_key()?;
                        self.skip_ws();
                        self.expect(b"=")?;
                        self.skip_ws();
                        if !matches!(self.peek(), Some(b'"' | b'\'')) {
                            return None;
                        }
                        let v = self.string()?;
                        if m.insert(k.to_string(), v).is_some() {
                            return None;
                        }
                        self.skip_ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Value::Inline(m)
            }
            _ => {
                while !matches!(self.peek(), None | Some(b' ' | b'\t' | b'\n' | b'\r' | b'#')) {
                    self.i += 1;
                }
                scalar(&self.text[start..self.i])?
            }
        };
        Some((v, start..self.i))
    }
}

/// true, false, a decimal integer or a plain float (`0.25`); anything else is left to toml.
fn scalar(tok: &str) -> Option<Value> {
    match tok {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    let digits = tok.strip_prefix(['+', '-']).unwrap_or(tok);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let plain = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    // No leading zeros in TOML integers.
    if !plain(int) || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    match frac {
        None => tok.parse().ok().map(Value::Int),
        Some(f) if plain(f) => tok.parse().ok().map(Value::Float),
        Some(_) => None,
    }
}
