//! RESP2 (and the RESP3 scalar types a server may send) parsed from bytes.
//!
//! [`parse`] answers `Ok(None)` until a whole reply is buffered, so the caller keeps reading
//! under its deadline; [`Parser`] does the same resumably, each byte parsed once.

use std::fmt::Write as _;

/// Longest bulk string or array we accept; a larger length means the bytes are not RESP.
const MAX_LEN: i64 = 64 * 1024 * 1024;
const MAX_DEPTH: usize = 8;
/// Most bytes buffered for one reply: the longest bulk string and its framing.
pub const MAX_REPLY: usize = MAX_LEN as usize + 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("not a RESP reply: first byte {0}")]
    BadType(String),
    #[error("malformed RESP length {0:?}")]
    BadLength(String),
    #[error("malformed RESP integer {0:?}")]
    BadInteger(String),
    #[error("RESP bulk string not terminated by CRLF")]
    BadTerminator,
    #[error("RESP nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("RESP reply with more than {MAX_ELEMENTS} elements")]
    TooMany,
}

/// Parse one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`, or `Ok(None)`
/// when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    Parser::default().feed(buf)
}

/// The longest first line (type byte, length or simple text) we wait for.
const MAX_LINE: usize = 64 * 1024;
/// Most elements in one reply, all aggregates counted: bounds memory, since an element
/// costs far more as a `Reply` than its 3 bytes on the wire.
const MAX_ELEMENTS: usize = 1_000_000;

/// A reply parsed as its bytes arrive: each element is parsed once, so reading a 4 MB
/// array in 16 KiB chunks costs one pass, not one pass per chunk (what re-parsing from the
/// start cost: a valid 4 MB array missed a 3 s deadline).
///
/// Feed it the same buffer, grown, until it answers `Some`; it then starts over, and the
/// caller drops the bytes used from the front of its buffer.
#[derive(Debug, Default)]
pub struct Parser {
    /// Open aggregates, outermost first: the elements read so far and how many are left.
    stack: Vec<(Vec<Reply>, usize)>,
    /// Bytes of the current reply already parsed into `stack`.
    pos: usize,
    /// Where to resume looking for the CRLF of the element at `pos`.
    scanned: usize,
    /// Nothing new can be parsed before the buffer holds this many bytes.
    need: usize,
    elements: usize,
}

/// What one element at the front of a buffer is.
enum Step {
    /// A complete scalar (or nil/empty aggregate) and its bytes.
    Value(Reply, usize),
    /// An aggregate header: this many elements follow.
    Open(usize, usize),
    /// The CRLF ending the first line is not there yet (scanned up to the given offset).
    NoLine(usize),
    /// The element is this many bytes long; not all are there yet.
    Short(usize),
}

impl Parser {
    /// Continue with the reply at the front of `buf` (the buffer given last time, with more
    /// bytes appended).
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
        if buf.len() < self.need {
            return Ok(None);
        }
        loop {
            if self.stack.len() > MAX_DEPTH {
                return Err(RespError::TooDeep);
            }
            let mut value = match element(&buf[self.pos..], self.scanned.saturating_sub(self.pos))? {
                Step::NoLine(scanned) => {
                    self.scanned = self.pos + scanned;
                    self.need = buf.len() + 1;
                    return Ok(None);
                }
                Step::Short(len) => {
                    self.need = self.pos + len;
                    return Ok(None);
                }
                Step::Open(count, used) => {
                    self.advance(used)?;
                    self.stack.push((Vec::with_capacity(count.min(64)), count));
                    continue;
                }
                Step::Value(r, used) => {
                    self.advance(used)?;
                    r
                }
            };
            // Close every aggregate this value completes.
            loop {
                let Some((items, left)) = self.stack.last_mut() else {
                    let used = self.pos;
                    *self = Parser::default();
                    return Ok(Some((value, used)));
                };
                items.push(value);
                *left -= 1;
                if *left > 0 {
                    break;
                }
                let (items, _) = self.stack.pop().expect("non-empty");
                value = Reply::Array(Some(items));
            }
        }
    }

    fn advance(&mut self, used: usize) -> Result<(), RespError> {
        self.pos += used;
        self.scanned = self.pos;
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(RespError::TooMany);
        }
        Ok(())
    }
}

/// Parse the element at the front of `buf`; its CRLF is not before `scanned`.
fn element(buf: &[u8], scanned: usize) -> Result<Step, RespError> {
    let Some(&first) = buf.first() else { return Ok(Step::Short(1)) };
    if !matches!(first, b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b'#' | b',' | b'(' | b'!' | b'=' | b'%' | b'~' | b'>')
    {
        return Err(RespError::BadType(escape(&buf[..1])));
    }
    // A CR at the end may be the start of the CRLF: look again from there.
    let from = scanned.max(1).min(buf.len());
    let Some(cr) = buf[from..].windows(2).position(|w| w == b"\r\n").map(|p| p + from) else {
        // A first line that long is not a reply we know how to wait for.
        if buf.len() > MAX_LINE {
            return Err(RespError::BadLength(escape(&buf[1..32.min(buf.len())])));
        }
        return Ok(Step::NoLine(buf.len().saturating_sub(1).max(1)));
    };
    let used = cr + 2;
    let text = String::from_utf8_lossy(&buf[1..cr]).into_owned();
    let value = |r| Ok(Step::Value(r, used));
    match first {
        b'+' | b'#' | b',' | b'(' => value(Reply::Simple(text)),
        b'-' => value(Reply::Error(text)),
        b':' => value(Reply::Integer(text.parse().map_err(|_| RespError::BadInteger(text))?)),
        b'_' => value(Reply::Bulk(None)),
        b'$' | b'!' | b'=' => {
            let n: i64 = text.parse().map_err(|_| RespError::BadLength(text.clone()))?;
            if n == -1 {
                return value(Reply::Bulk(None));
            }
            if !(0..=MAX_LEN).contains(&n) {
                return Err(RespError::BadLength(text));
            }
            let n = n as usize;
            if buf.len() < used + n + 2 {
                return Ok(Step::Short(used + n + 2));
            }
            if &buf[used + n..used + n + 2] != b"\r\n" {
                return Err(RespError::BadTerminator);
            }
            let data = buf[used..used + n].to_vec();
            let reply = if first == b'!' {
                Reply::Error(String::from_utf8_lossy(&data).into_owned())
            } else {
                Reply::Bulk(Some(data))
            };
            Ok(Step::Value(reply, used + n + 2))
        }
        _ => {
            // '*', '%', '~', '>': aggregates (a map has two elements per entry).
            let n: i64 = text.parse().map_err(|_| RespError::BadLength(text.clone()))?;
            if n == -1 {
                return value(Reply::Array(None));
            }
            if !(0..=1_000_000).contains(&n) {
                return Err(RespError::BadLength(text));
            }
            match if first == b'%' { n * 2 } else { n } as usize {
                0 => value(Reply::Array(Some(Vec::new()))),
                count => Ok(Step::Open(count, used)),
            }
        }
    }
}

/// Encode a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A text sink that keeps at most `max` bytes (cut at a character boundary) and remembers
/// whether anything was left out, so a 64 MiB reply is never rendered whole.
struct Bounded {
    s: String,
    max: usize,
    cut: bool,
}

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, t: &str) -> std::fmt::Result {
        if self.cut {
            return Ok(());
        }
        let room = self.max - self.s.len();
        let kept = conndoc_facts::protocol::clip(t, room);
        self.s.push_str(kept);
        self.cut = kept.len() < t.len();
        Ok(())
    }
}

/// Lossy UTF-8 of at most a little more than `max` bytes of `b`: enough for the first `max`
/// bytes of text (a replacement character is never shorter than what it replaces).
fn lossy_prefix(b: &[u8], max: usize) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&b[..b.len().min(max.saturating_add(4))])
}

impl Reply {
    /// The reply as redis-cli would show it: `+PONG` → `PONG`, `-NOAUTH …` → `-NOAUTH …`,
    /// bulk text as is; an array on one line, its strings quoted (`["bind", "127.0.0.1"]`),
    /// so evidence lines stay one line each.
    pub fn text(&self) -> String {
        self.text_bounded(usize::MAX).0
    }
    /// [`Reply::text`] cut to its first `max` bytes, and whether it was cut.
    pub fn text_bounded(&self, max: usize) -> (String, bool) {
        let mut out = Bounded { s: String::new(), max, cut: false };
        self.render(&mut out);
        (out.s, out.cut)
    }
    fn render(&self, s: &mut Bounded) {
        let max = s.max;
        match self {
            Reply::Simple(t) => {
                let _ = s.write_str(t);
            }
            Reply::Error(t) => {
                let _ = write!(s, "-{t}");
            }
            Reply::Integer(i) => {
                let _ = write!(s, "(integer) {i}");
            }
            Reply::Bulk(None) | Reply::Array(None) => {
                let _ = s.write_str("(nil)");
            }
            Reply::Bulk(Some(b)) => {
                let _ = s.write_str(&lossy_prefix(b, max));
                s.cut |= b.len() > max;
            }
            Reply::Array(Some(items)) => {
                let _ = s.write_str("[");
                for (i, it) in items.iter().enumerate() {
                    if s.cut {
                        return;
                    }
                    if i > 0 {
                        let _ = s.write_str(", ");
                    }
                    match it {
                        Reply::Bulk(Some(b)) => {
                            let _ = write!(s, "{:?}", lossy_prefix(b, max));
                            s.cut |= b.len() > max;
                        }
                        Reply::Simple(t) => {
                            let _ = write!(s, "{t:?}");
                        }
                        it => it.render(s),
                    }
                }
                let _ = s.write_str("]");
            }
        }
    }
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(t) => Some(t),
            _ => None,
        }
    }
    pub fn bulk_text(&self) -> Option<String> {
        match self {
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Simple(t) => Some(t.clone()),
            _ => None,
        }
    }
    /// A flat array of bulk strings as pairs (CONFIG GET's answer).
    pub fn pairs(&self) -> Vec<(String, String)> {
        let Reply::Array(Some(items)) = self else { return Vec::new() };
        items
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => Some((k.bulk_text()?, v.bulk_text()?)),
                _ => None,
            })
            .collect()
    }
}

/// Bytes as printable text: ASCII kept, CR/LF as `\r\n`, others as `\xNN`.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &[u8]) -> Reply {
        let (r, used) = parse(b).unwrap().unwrap();
        assert_eq!(used, b.len(), "consumed all of {}", escape(b));
        r
    }

    #[test]
    fn simple_error_integer() {
        assert_eq!(one(b"+PONG\r\n"), Reply::Simple("PONG".into()));
        assert_eq!(one(b":42\r\n"), Reply::Integer(42));
        let denied = b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface.\r\n";
        let r = one(denied);
        assert!(r.error().unwrap().starts_with("DENIED Redis is running in protected mode"));
        assert_eq!(one(b"-NOAUTH Authentication required.\r\n").text(), "-NOAUTH Authentication required.");
        assert_eq!(
            one(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n").error(),
            Some("WRONGPASS invalid username-password pair or user is disabled.")
        );
        assert_eq!(one(b"-ERR max number of clients reached\r\n").text(), "-ERR max number of clients reached");
    }

    #[test]
    fn bulk_and_arrays() {
        assert_eq!(one(b"$5\r\nhello\r\n"), Reply::Bulk(Some(b"hello".to_vec())));
        assert_eq!(one(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(one(b"$0\r\n\r\n"), Reply::Bulk(Some(vec![])));
        let cfg = b"*4\r\n$4\r\nbind\r\n$7\r\n0.0.0.0\r\n$4\r\nport\r\n$4\r\n6379\r\n";
        let r = one(cfg);
        assert_eq!(r.pairs(), vec![("bind".into(), "0.0.0.0".into()), ("port".into(), "6379".into())]);
        assert_eq!(one(b"*0\r\n"), Reply::Array(Some(vec![])));
        assert_eq!(one(b"*-1\r\n"), Reply::Array(None));
        // Bulk containing CRLF must be length-delimited, not line-delimited.
        assert_eq!(one(b"$4\r\na\r\nb\r\n").bulk_text().unwrap(), "a\r\nb");
    }

    #[test]
    fn arrays_render_on_one_line() {
        let r = one(b"*4\r\n$4\r\nbind\r\n$18\r\n127.0.0.1 -::1 \"x\"\r\n:3\r\n*0\r\n");
        assert_eq!(r.text(), r#"["bind", "127.0.0.1 -::1 \"x\"", (integer) 3, []]"#);
    }

    #[test]
    fn incomplete_needs_more() {
        for partial in [&b""[..], b"+PON", b"$5\r\nhel", b"*2\r\n$1\r\na\r\n", b"$5\r\nhello\r"] {
            assert_eq!(parse(partial).unwrap(), None, "{}", escape(partial));
        }
    }

    #[test]
    fn fed_byte_by_byte_is_the_same_reply() {
        let replies: [&[u8]; 5] = [
            b"*4\r\n$4\r\nbind\r\n$7\r\n0.0.0.0\r\n*2\r\n:1\r\n*0\r\n+x\r\n",
            b"-NOAUTH Authentication required.\r\n",
            b"$4\r\na\r\nb\r\n",
            b"%1\r\n+k\r\n*-1\r\n",
            b"*2\r\n$-1\r\n_\r\n",
        ];
        for r in replies {
            let whole = parse(r).unwrap().unwrap();
            let mut p = Parser::default();
            for n in 1..r.len() {
                assert_eq!(p.feed(&r[..n]).unwrap(), None, "{n} bytes of {}", escape(r));
            }
            assert_eq!(p.feed(r).unwrap(), Some(whole.clone()), "{}", escape(r));
            // It starts over for the next reply.
            assert_eq!(p.feed(r).unwrap(), Some(whole));
        }
    }

    #[test]
    fn each_byte_is_parsed_once() {
        // 200,000 elements fed in 16 KiB steps: linear, so well under a second even unoptimised.
        let mut b = b"*200000\r\n".to_vec();
        for i in 0..200_000 {
            b.extend_from_slice(format!("$6\r\n{i:06}\r\n").as_bytes());
        }
        let start = std::time::Instant::now();
        let mut p = Parser::default();
        let mut got = None;
        for end in (16 * 1024..b.len()).step_by(16 * 1024).chain([b.len()]) {
            got = p.feed(&b[..end]).unwrap();
        }
        let (r, used) = got.unwrap();
        assert_eq!(used, b.len());
        assert!(matches!(r, Reply::Array(Some(ref v)) if v.len() == 200_000));
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
        // A line dripped in one byte at a time is scanned once, and still found.
        let line = format!("+{}\r\n", "p".repeat(60_000));
        let mut p = Parser::default();
        for n in 1..line.len() {
            assert_eq!(p.feed(&line.as_bytes()[..n]).unwrap(), None);
        }
        assert_eq!(p.feed(line.as_bytes()).unwrap().unwrap().1, line.len());
    }

    #[test]
    fn element_count_is_bounded() {
        let mut b = b"*2\r\n".to_vec();
        for _ in 0..2 {
            b.extend_from_slice(b"*600000\r\n");
            b.extend(std::iter::repeat_n(*b"+\r\n", 600_000).flatten());
        }
        assert_eq!(parse(&b), Err(RespError::TooMany));
    }

    #[test]
    fn pipelined_replies_split() {
        let b = b"+PONG\r\n-NOAUTH Authentication required.\r\n";
        let (r1, u1) = parse(b).unwrap().unwrap();
        let (r2, u2) = parse(&b[u1..]).unwrap().unwrap();
        assert_eq!(r1, Reply::Simple("PONG".into()));
        assert!(r2.error().unwrap().starts_with("NOAUTH"));
        assert_eq!(u1 + u2, b.len());
    }

    #[test]
    fn not_resp() {
        // A TLS alert record (what a TLS server may send to a plaintext client).
        assert!(matches!(parse(b"\x15\x03\x03\x00\x02\x02\x46"), Err(RespError::BadType(_))));
        // An HTTP answer.
        assert!(matches!(parse(b"HTTP/1.1 400 Bad Request\r\n"), Err(RespError::BadType(_))));
        assert!(matches!(parse(b"$abc\r\n"), Err(RespError::BadLength(_))));
        assert!(matches!(parse(b"$3\r\nabcXY"), Err(RespError::BadTerminator)));
        assert!(matches!(parse(b":x\r\n"), Err(RespError::BadInteger(_))));
        let deep = "*1\r\n".repeat(20);
        assert!(matches!(parse(deep.as_bytes()), Err(RespError::TooDeep)));
    }

    #[test]
    fn encode_commands() {
        assert_eq!(encode(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(encode(&[b"CONFIG", b"GET", b"port"]), b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nport\r\n");
    }

    #[test]
    fn bounded_text_is_cut_at_a_character() {
        let big = one(b"$6\r\nh\xc3\xa9llo\r\n");
        assert_eq!(big.text_bounded(2), ("h".to_string(), true));
        assert_eq!(big.text_bounded(6), ("h\u{e9}llo".to_string(), false));
        let arr = one(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n:7\r\n");
        assert_eq!(arr.text_bounded(100), (r#"["a", "b", (integer) 7]"#.to_string(), false));
        assert_eq!(arr.text_bounded(8), (r#"["a", "b"#.to_string(), true));
        assert_eq!(arr.text(), arr.text_bounded(usize::MAX).0);
    }

    #[test]
    fn escape_is_printable() {
        assert_eq!(escape(b"\x15\x03\x03ab\r\n"), "\\x15\\x03\\x03ab\\r\\n");
    }
}
