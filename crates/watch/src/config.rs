//! The watch configuration file (docs/watch.md): parse the TOML keeping where every value
//! was written, merge command-line overrides over it, then validate field by field so each
//! error names the file, the line and the field.

use conndoc_facts::{Secret, Target};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod fast;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_HISTORY: &str = "/var/lib/conndoc/history.db";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_FAILURES_BEFORE_DOWN: u32 = 3;
pub const DEFAULT_SUCCESSES_BEFORE_UP: u32 = 2;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_MAX_HISTORY_MB: u64 = 512;
pub const DEFAULT_CONCURRENCY: usize = 1024;
pub const DEFAULT_DIAGNOSE_CONCURRENCY: usize = 4;
pub const DEFAULT_REDIAGNOSE: Duration = Duration::from_secs(300);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);
pub const DEFAULT_RECEIVER_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_JITTER: f64 = 0.1;
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (e.g. a missing field, a flag).
    pub line: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}: {}", self.file.display(), self.line, self.field, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.message)
        }
    }
}

/// Every problem found in one file (validation does not stop at the first).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigErrors {
    /// One line naming the path and why (missing, a FIFO, a device, over the size limit).
    #[error("{error}")]
    Read { path: PathBuf, error: std::sync::Arc<conndoc_files::ReadError> },
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigError>),
}

impl ConfigErrors {
    pub fn errors(&self) -> Vec<String> {
        match self {
            ConfigErrors::Read { .. } => vec![self.to_string()],
            ConfigErrors::Invalid(v) => v.iter().map(|e| e.to_string()).collect(),
        }
    }
}

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<Spanned<String>>,
    pub history: Option<Spanned<String>>,
    pub retention: Option<Spanned<String>>,
    pub max_history_mb: Option<Spanned<i64>>,
    pub history_resolution: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<i64>>,
    pub diagnose_concurrency: Option<Spanned<i64>>,
    pub rediagnose: Option<Spanned<String>>,
    pub jitter: Option<Spanned<f64>>,
    pub dashboard_url: Option<Spanned<String>>,
    pub allowed_hosts: Option<Spanned<Vec<String>>>,
    pub defaults: Option<RawDefaults>,
    #[serde(default)]
    pub target: Vec<Spanned<RawTarget>>,
    #[serde(default)]
    pub receiver: Vec<Spanned<RawReceiver>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub failures_before_down: Option<Spanned<i64>>,
    pub successes_before_up: Option<Spanned<i64>>,
    pub close: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub failures_before_down: Option<Spanned<i64>>,
    pub successes_before_up: Option<Spanned<i64>>,
    pub labels: Option<Spanned<BTreeMap<String, String>>>,
    pub check: Option<Spanned<String>>,
    pub netns: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub no_host: Option<bool>,
    pub password_file: Option<Spanned<String>>,
    pub close: Option<Spanned<String>>,
    pub ssh: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReceiver {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    /// Alertmanager: every instance of an HA cluster (each gets every alert).
    pub urls: Option<Spanned<Vec<String>>>,
    pub resend_interval: Option<Spanned<String>>,
    pub routing_key_file: Option<Spanned<String>>,
    pub routing_key: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub retry_max: Option<Spanned<String>>,
    pub send_resolved: Option<bool>,
    pub ca_file: Option<Spanned<String>>,
}

/// Values given on the command line; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub history: Option<PathBuf>,
}

// ---- the validated configuration -----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect with a deadline (cheap; the default).
    Connect,
    /// The full diagnosis every interval (protocol-level health, much more expensive).
    Diagnose,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    /// Shown and stored only in its redacted form.
    pub url: crate::urls::TargetUrl,
    pub target: Target,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures_before_down: u32,
    pub successes_before_up: u32,
    pub labels: BTreeMap<String, String>,
    pub check: CheckKind,
    pub netns: Option<String>,
    pub expect: Option<String>,
    pub no_host: bool,
    /// How a health check's connection is closed (`close = "rst"` or `"fin"`).
    pub close: crate::probe::Close,
    /// `ssh = "user@host"`: diagnoses read the server side there (docs/remote.md), over a
    /// reused OpenSSH ControlMaster connection.
    pub ssh: Option<conndoc_engine::remote::SshOptions>,
}

impl TargetConfig {
    /// Whether a change of this target must reset its state (what is probed changed).
    pub fn same_probe(&self, o: &TargetConfig) -> bool {
        self.url == o.url && self.netns == o.netns && self.close == o.close
    }
    /// Engine options for a full diagnosis of this target.
    pub fn engine_options(&self) -> conndoc_engine::Options {
        conndoc_engine::Options {
            timeout: self.timeout,
            expect_process: self.expect.clone(),
            netns: self.netns.clone(),
            no_host: self.no_host,
            ssh: self.ssh.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    Webhook,
    Slack,
    Pagerduty,
    /// Alertmanager's v2 API (`POST /api/v2/alerts`), the way Prometheus sends.
    Alertmanager,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Pagerduty => "pagerduty",
            ReceiverKind::Alertmanager => "alertmanager",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// A secret as a whole (tokens in paths and queries): shown only as its redacted form.
    pub url: crate::urls::ReceiverUrl,
    pub routing_key: Option<Secret>,
    pub timeout: Duration,
    pub retry_max: Duration,
    pub send_resolved: bool,
    /// Extra CA certificates (PEM) trusted for an https receiver.
    pub ca_file: Option<PathBuf>,
    /// Alertmanager: a firing alert is sent again this often while the target is down (its
    /// `endsAt` is 4 of these ahead, so Alertmanager never resolves a live alert itself).
    pub resend: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub history: PathBuf,
    pub retention: Duration,
    pub max_history_bytes: u64,
    pub history_resolution: Duration,
    pub concurrency: usize,
    pub diagnose_concurrency: usize,
    pub rediagnose: Duration,
    pub jitter: f64,
    pub dashboard_url: String,
    /// Host names the dashboard answers to besides IP literals, `localhost` and the host of
    /// `dashboard_url` (DNS rebinding protection); `*` answers to any.
    pub allowed_hosts: Vec<String>,
    pub targets: Vec<TargetConfig>,
    pub receivers: Vec<ReceiverConfig>,
}

// ---- loading ------------------------------------------------------------------------

/// Read, parse, merge the overrides and validate.
pub fn load(path: &Path, ov: &Overrides) -> Result<Config, ConfigErrors> {
    let text = conndoc_files::read_to_string(path, conndoc_files::limit::CONFIG)
        .map_err(|e| ConfigErrors::Read { path: path.to_path_buf(), error: std::sync::Arc::new(e) })?;
    load_str(path, &text, ov)
}

/// Parse and validate config text as if read from `path`.
pub fn load_str(path: &Path, text: &str, ov: &Overrides) -> Result<Config, ConfigErrors> {
    let mut v =
        Validator { file: path.to_path_buf(), text, lines: Vec::new(), errors: Vec::new(), last_duration: None };
    let parsed = match fast::parse(text) {
        Some(r) => Ok(r),
        None => toml::from_str(text),
    };
    let raw: RawConfig = match parsed {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| v.line(s.start)).unwrap_or(0);
            let msg = e.message().trim().to_string();
            let line_text = e.span().map(|s| {
                let start = text[..s.start.min(text.len())].rfind('\n').map(|i| i + 1).unwrap_or(0);
                let end = text[start..].find('\n').map(|i| start + i).unwrap_or(text.len());
                &text[start..end]
            });
            let field = field_from_toml_error(&msg, line_text);
            v.errors.push(ConfigError { file: v.file.clone(), line, field, message: msg });
            return Err(ConfigErrors::Invalid(v.errors));
        }
    };
    let cfg = v.validate(raw, ov);
    if v.errors.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigErrors::Invalid(v.errors))
    }
}

fn field_from_toml_error(msg: &str, line: Option<&str>) -> String {
    // serde's "unknown field `x`" and "missing field `x`" name it in backticks.
    let names_field =
        ["unknown field", "missing field", "duplicate field", "duplicate key"].iter().any(|p| msg.contains(p));
    if let Some(i) = msg.find('`').filter(|_| names_field) {
        if let Some(j) = msg[i + 1..].find('`') {
            return msg[i + 1..i + 1 + j].to_string();
        }
    }
    // Otherwise the key written on the offending line.
    match line.map(str::trim) {
        Some(l) if l.contains('=') => l.split('=').next().unwrap_or(l).trim().trim_matches('"').to_string(),
        Some(l) if l.starts_with('[') => l.trim_matches(['[', ']']).trim().to_string(),
        _ => "syntax".into(),
    }
}

struct Validator<'a> {
    file: PathBuf,
    text: &'a str,
    /// Offsets of the line ends, built at the first error (a line lookup is then a binary
    /// search, not a scan of the file: a file with thousands of errors stays fast).
    lines: Vec<usize>,
    errors: Vec<ConfigError>,
    /// The last duration text that parsed, and its value.
    last_duration: Option<(String, Duration)>,
}

impl Validator<'_> {
    fn line(&mut self, offset: usize) -> usize {
        if self.lines.is_empty() {
            self.lines = self.text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect();
        }
        self.lines.partition_point(|&nl| nl < offset.min(self.text.len())) + 1
    }
    fn err<T>(&mut self, s: Option<&Spanned<T>>, field: impl fmt::Display, message: impl Into<String>) {
        let line = s.map(|s| self.line(s.span().start)).unwrap_or(0);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn validate(&mut self, raw: RawConfig, ov: &Overrides) -> Config {
        let listen = validate_listen(self, raw.listen.as_ref(), ov.listen.as_deref());
        let history = match (&ov.history, &raw.history) {
            (Some(h), _) => h.clone(),
            (None, Some(h)) if h.get_ref().trim().is_empty() => {
                self.err(Some(h), "history", "must be a file path");
                PathBuf::new()
            }
            (None, Some(h)) => PathBuf::from(h.get_ref()),
            (None, None) => PathBuf::from(DEFAULT_HISTORY),
        };
        let retention =
            self.duration(raw.retention.as_ref(), "retention", DEFAULT_RETENTION, Duration::from_secs(3600), None);
        let max_mb = self.int(raw.max_history_mb.as_ref(), "max_history_mb", DEFAULT_MAX_HISTORY_MB as i64, 1, 1 << 20);
        let history_resolution = self.duration(
            raw.history_resolution.as_ref(),
            "history_resolution",
            Duration::from_secs(60),
            Duration::from_secs(1),
            Some(Duration::from_secs(3600)),
        );
        let concurrency = self.int(raw.concurrency.as_ref(), "concurrency", DEFAULT_CONCURRENCY as i64, 1, 100_000);
        let diagnose_concurrency = self.int(
            raw.diagnose_concurrency.as_ref(),
            "diagnose_concurrency",
            DEFAULT_DIAGNOSE_CONCURRENCY as i64,
            1,
            256,
        );
        let rediagnose = self.duration(raw.rediagnose.as_ref(), "rediagnose", DEFAULT_REDIAGNOSE, Duration::ZERO, None);
        let jitter = match &raw.jitter {
            None => DEFAULT_JITTER,
            Some(j) if (0.0..=0.5).contains(j.get_ref()) => *j.get_ref(),
            Some(j) => {
                self.err(Some(j), "jitter", "must be a fraction of the interval from 0 to 0.5");
                DEFAULT_JITTER
            }
        };
        let dashboard_url = match &raw.dashboard_url {
            Some(u) if !(u.get_ref().starts_with("http://") || u.get_ref().starts_with("https://")) => {
                self.err(Some(u), "dashboard_url", "must start with http:// or https://");
                String::new()
            }
            Some(u) => u.get_ref().trim_end_matches('/').to_string(),
            None => format!("http://{listen}"),
        };
        let mut allowed_hosts = Vec::new();
        if let Some(a) = &raw.allowed_hosts {
            for h in a.get_ref() {
                let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
                if h.is_empty() || h.len() > 253 || h.bytes().any(|b| b.is_ascii_whitespace() || b"/@?#".contains(&b)) {
                    self.err(
                        Some(a),
                        "allowed_hosts",
                        "each entry is a host name such as \"watch.example.com\", or \"*\"",
                    );
                } else {
                    allowed_hosts.push(h);
                }
            }
        }

        let d = raw.defaults.unwrap_or_default();
        let def_interval = self.duration(
            d.interval.as_ref(),
            "defaults.interval",
            DEFAULT_INTERVAL,
            Duration::from_millis(100),
            Some(Duration::from_secs(86_400)),
        );
        let def_timeout = d.timeout.as_ref().map(|t| {
            self.duration(
                Some(t),
                "defaults.timeout",
                DEFAULT_TIMEOUT,
                Duration::from_millis(1),
                Some(Duration::from_secs(600)),
            )
        });
        let def_fail = self.int(
            d.failures_before_down.as_ref(),
            "defaults.failures_before_down",
            DEFAULT_FAILURES_BEFORE_DOWN as i64,
            1,
            1000,
        );
        let def_succ = self.int(
            d.successes_before_up.as_ref(),
            "defaults.successes_before_up",
            DEFAULT_SUCCESSES_BEFORE_UP as i64,
            1,
            1000,
        );

        let def_close = close_kind(self, d.close.as_ref(), "defaults.close", crate::probe::Close::default());
        let defaults = TargetDefaults {
            interval: def_interval,
            timeout: def_timeout,
            failures: def_fail as u32,
            successes: def_succ as u32,
            close: def_close,
        };
        let (checked, errors) = self.targets(&raw.target, &defaults);
        let mut errors = errors.into_iter().peekable();
        let mut targets = Vec::with_capacity(raw.target.len());
        let mut seen = std::collections::HashMap::with_capacity(raw.target.len());
        // In file order: each target's own errors, then its name's duplicate.
        for (i, (t, tc)) in raw.target.iter().zip(checked).enumerate() {
            while let Some(e) = errors.next_if(|(at, _)| *at == i) {
                self.errors.push(e.1);
            }
            if let Some(tc) = tc {
                let name = t.get_ref().name.as_ref().map_or("", |n| n.get_ref().as_str());
                if let Some(prev) = seen.insert(name, i) {
                    let at = t.get_ref().name.as_ref();
                    self.err(
                        at,
                        format!("target[{i}].name"),
                        format!("duplicate target name {:?} (also target[{prev}])", tc.name),
                    );
                }
                targets.push(tc);
            }
        }
        let mut receivers = Vec::new();
        let mut seen_r = BTreeMap::new();
        for (i, r) in raw.receiver.iter().enumerate() {
            for rc in validate_receiver(self, i, r) {
                if let Some(prev) = seen_r.insert(rc.name.clone(), i) {
                    let at = r.get_ref().name.as_ref();
                    self.err(
                        at,
                        format!("receiver[{i}].name"),
                        format!("duplicate receiver name {:?} (also receiver[{prev}])", rc.name),
                    );
                }
                receivers.push(rc);
            }
        }
        Config {
            path: self.file.clone(),
            listen,
            history,
            retention,
            max_history_bytes: max_mb as u64 * 1024 * 1024,
            history_resolution,
            concurrency: concurrency as usize,
            diagnose_concurrency: diagnose_concurrency as usize,
            rediagnose,
            jitter,
            dashboard_url,
            allowed_hosts,
            targets,
            receivers,
        }
    }

    /// Every target checked, with the errors found (by target index, in file order). A
    /// big file is split in two halves checked side by side: `conndoc check` waits for
    /// the whole config before its first connect (10,000 targets took ~15 ms on one core).
    #[allow(clippy::type_complexity)]
    fn targets(
        &self,
        raw: &[Spanned<RawTarget>],
        d: &TargetDefaults,
    ) -> (Vec<Option<TargetConfig>>, Vec<(usize, ConfigError)>) {
        let part = |from: usize, raw: &[Spanned<RawTarget>]| {
            let mut v = Validator {
                file: self.file.clone(),
                text: self.text,
                lines: Vec::new(),
                errors: Vec::new(),
                last_duration: None,
            };
            let mut errors = Vec::new();
            let checked: Vec<Option<TargetConfig>> = raw
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    let tc = validate_target(&mut v, from + k, t, d);
                    errors.extend(v.errors.drain(..).map(|e| (from + k, e)));
                    tc
                })
                .collect();
            (checked, errors)
        };
        let two = raw.len() >= PARALLEL_TARGETS && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        if !two {
            return part(0, raw);
        }
        let half = raw.len() / 2;
        let (first, second) = raw.split_at(half);
        let ((mut checked, mut errors), (c2, e2)) = std::thread::scope(|s| {
            let later = s.spawn(|| part(half, second));
            let now = part(0, first);
            (now, later.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        });
        checked.extend(c2);
        errors.extend(e2);
        (checked, errors)
    }

    fn duration(
        &mut self,
        s: Option<&Spanned<String>>,
        field: impl fmt::Display,
        default: Duration,
        min: Duration,
        max: Option<Duration>,
    ) -> Duration {
        let Some(s) = s else { return default };
        // Most targets repeat the same few durations ("2s" 10,000 times): the last text
        // that parsed is kept with its value.
        let parsed = match &self.last_duration {
            Some((text, d)) if text == s.get_ref() => Ok(*d),
            _ => parse_duration(s.get_ref()),
        };
        if let Ok(d) = parsed {
            if self.last_duration.as_ref().is_none_or(|(text, _)| text != s.get_ref()) {
                self.last_duration = Some((s.get_ref().clone(), d));
            }
        }
        match parsed {
            Err(e) => {
                self.err(Some(s), field, e);
                default
            }
            Ok(d) if d < min => {
                self.err(Some(s), field, format!("{:?} is too short: at least {}", s.get_ref(), fmt_duration(min)));
                default
            }
            Ok(d) if max.is_some_and(|m| d > m) => {
                self.err(
                    Some(s),
                    field,
                    format!("{:?} is too long: at most {}", s.get_ref(), fmt_duration(max.unwrap())),
                );
                default
            }
            Ok(d) => d,
        }
    }

    fn int(&mut self, s: Option<&Spanned<i64>>, field: impl fmt::Display, default: i64, min: i64, max: i64) -> i64 {
        match s {
            None => default,
            Some(v) if (min..=max).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.err(Some(v), field, format!("{} is out of range: expected {min} to {max}", v.get_ref()));
                default
            }
        }
    }
}

fn validate_listen(v: &mut Validator, file: Option<&Spanned<String>>, flag: Option<&str>) -> SocketAddr {
    let fallback: SocketAddr = DEFAULT_LISTEN.parse().expect("default listen address parses");
    if let Some(f) = flag {
        return match f.parse() {
            Ok(a) => a,
            Err(_) => {
                v.errors.push(ConfigError {
                    file: v.file.clone(),
                    line: 0,
                    field: "--listen".into(),
                    message: format!("{f:?} is not an address:port such as 127.0.0.1:9464"),
                });
                fallback
            }
        };
    }
    match file {
        None => fallback,
        Some(s) => match s.get_ref().parse() {
            Ok(a) => a,
            Err(_) => {
                v.err(
                    Some(s),
                    "listen",
                    format!("{} is not an address:port such as 127.0.0.1:9464", quoted(s.get_ref())),
                );
                fallback
            }
        },
    }
}

/// From this many targets on, they are checked on two threads (when there are two cores).
const PARALLEL_TARGETS: usize = 2_000;

/// What `[defaults]` gives every target.
struct TargetDefaults {
    interval: Duration,
    timeout: Option<Duration>,
    failures: u32,
    successes: u32,
    close: crate::probe::Close,
}

fn close_kind(
    v: &mut Validator,
    s: Option<&Spanned<String>>,
    field: impl fmt::Display,
    default: crate::probe::Close,
) -> crate::probe::Close {
    match s.map(|c| c.get_ref().as_str()) {
        None => default,
        Some("rst") => crate::probe::Close::Reset,
        Some("fin") => crate::probe::Close::Fin,
        Some(o) => {
            v.err(s, field, format!("{o:?}: expected \"rst\" (reset, the default) or \"fin\""));
            default
        }
    }
}

fn validate_target(v: &mut Validator, i: usize, st: &Spanned<RawTarget>, d: &TargetDefaults) -> Option<TargetConfig> {
    let (def_interval, def_timeout, def_fail, def_succ) = (d.interval, d.timeout, d.failures, d.successes);
    let t = st.get_ref();
    // Field names are only spelled out when there is an error to report.
    let f = |name: &'static str| Field("target", i, name);
    let before = v.errors.len();
    let name = match &t.name {
        None => {
            v.err(Some(st), f("name"), "missing: every target needs a name");
            String::new()
        }
        Some(n) if !valid_name(n.get_ref()) => {
            v.err(
                Some(n),
                f("name"),
                format!("{}: use 1 to 100 letters, digits, '.', '_' or '-'", quoted(n.get_ref())),
            );
            String::new()
        }
        Some(n) => n.get_ref().clone(),
    };
    let (url, target) = match &t.url {
        None => {
            v.err(Some(st), f("url"), "missing: e.g. url = \"tcp://127.0.0.1:8100\"");
            (None, None)
        }
        Some(u) => match Target::parse(u.get_ref()) {
            Ok(tg) => (Some(crate::urls::TargetUrl::new(u.get_ref(), &tg)), Some(tg)),
            Err(e) => {
                v.err(Some(u), f("url"), e.to_string());
                (None, None)
            }
        },
    };
    let interval = v.duration(
        t.interval.as_ref(),
        f("interval"),
        def_interval,
        Duration::from_millis(100),
        Some(Duration::from_secs(86_400)),
    );
    let timeout = match &t.timeout {
        Some(_) => v.duration(
            t.timeout.as_ref(),
            f("timeout"),
            DEFAULT_TIMEOUT,
            Duration::from_millis(1),
            Some(Duration::from_secs(600)),
        ),
        None => def_timeout.unwrap_or(DEFAULT_TIMEOUT).min(interval),
    };
    if timeout > interval {
        v.err(
            t.timeout.as_ref(),
            f("timeout"),
            format!("{} is longer than the interval {}", fmt_duration(timeout), fmt_duration(interval)),
        );
    }
    let failures = v.int(t.failures_before_down.as_ref(), f("failures_before_down"), def_fail as i64, 1, 1000) as u32;
    let successes = v.int(t.successes_before_up.as_ref(), f("successes_before_up"), def_succ as i64, 1, 1000) as u32;
    let labels = match &t.labels {
        None => BTreeMap::new(),
        Some(l) => {
            for k in l.get_ref().keys() {
                if !valid_label_name(k) || k == "target" || k.starts_with("__") {
                    v.err(
                        Some(l),
                        format!("target[{i}].labels.{k}"),
                        "label names are [a-zA-Z_][a-zA-Z0-9_]*, not `target`, not starting with __",
                    );
                }
            }
            l.get_ref().clone()
        }
    };
    let check = match t.check.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("connect") => CheckKind::Connect,
        Some("diagnose") => CheckKind::Diagnose,
        Some(o) => {
            v.err(t.check.as_ref(), f("check"), format!("{o:?}: expected \"connect\" or \"diagnose\""));
            CheckKind::Connect
        }
    };
    let close = close_kind(v, t.close.as_ref(), f("close"), d.close);
    let ssh = t.ssh.as_ref().and_then(|s| match ssh_options(s.get_ref()) {
        Ok(o) => Some(o),
        Err(e) => {
            v.err(Some(s), f("ssh"), e);
            None
        }
    });
    let (mut target, url) = (target?, url?);
    if let Some(pf) = &t.password_file {
        match conndoc_files::read_to_string(pf.get_ref(), conndoc_files::limit::PASSWORD) {
            Ok(s) if !s.trim_end_matches(['\n', '\r']).is_empty() => {
                target.password = Some(Secret::new(s.trim_end_matches(['\n', '\r'])));
                target.has_password = true;
            }
            Ok(_) => v.err(Some(pf), f("password_file"), format!("{} is empty", pf.get_ref())),
            Err(e) => v.err(Some(pf), f("password_file"), e.to_string()),
        }
    }
    if v.errors.len() > before {
        return None;
    }
    Some(TargetConfig {
        name,
        url,
        target,
        interval,
        timeout,
        failures_before_down: failures,
        successes_before_up: successes,
        labels,
        check,
        netns: t.netns.as_ref().map(|n| n.get_ref().clone()),
        expect: t.expect.as_ref().map(|n| n.get_ref().clone()),
        no_host: t.no_host.unwrap_or(false),
        close,
        ssh,
    })
}

/// `ssh = "[USER@]HOST[:PORT]"` of a target: the diagnosis reads the server there, over one
/// ControlMaster connection per host kept for a while, so a flapping target does not open
/// an SSH session per check.
fn ssh_options(dest: &str) -> Result<conndoc_engine::remote::SshOptions, String> {
    use conndoc_engine::remote::{control_dir, ssh_command_from_env, Destination, SshOptions};
    Ok(SshOptions {
        destination: Destination::parse(dest)?,
        command: ssh_command_from_env()?,
        remote_conndoc: "conndoc".into(),
        connect_timeout: Duration::from_secs(5),
        control_dir: Some(control_dir()),
        control_persist: Duration::from_secs(120),
    })
}

/// One receiver as configured; an Alertmanager with several `urls` becomes one receiver
/// per instance (`NAME/1`, `NAME/2`, …), each with its own ordered outbox.
fn validate_receiver(v: &mut Validator, i: usize, sr: &Spanned<RawReceiver>) -> Vec<ReceiverConfig> {
    let r = sr.get_ref();
    let f = |name: &'static str| Field("receiver", i, name);
    let before = v.errors.len();
    let name = match &r.name {
        None => {
            v.err(Some(sr), f("name"), "missing: every receiver needs a name");
            String::new()
        }
        Some(n) if !valid_name(n.get_ref()) => {
            v.err(
                Some(n),
                f("name"),
                format!("{}: use 1 to 100 letters, digits, '.', '_' or '-'", quoted(n.get_ref())),
            );
            String::new()
        }
        Some(n) => n.get_ref().clone(),
    };
    let kind = match r.kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("webhook") => ReceiverKind::Webhook,
        Some("slack") => ReceiverKind::Slack,
        Some("pagerduty") => ReceiverKind::Pagerduty,
        Some("alertmanager") => ReceiverKind::Alertmanager,
        Some(o) => {
            v.err(
                r.kind.as_ref(),
                f("type"),
                format!("{o:?}: expected \"webhook\", \"slack\", \"pagerduty\" or \"alertmanager\""),
            );
            ReceiverKind::Webhook
        }
    };
    if let (Some(u), ReceiverKind::Alertmanager) = (&r.urls, kind) {
        if r.url.is_some() {
            v.err(Some(u), f("urls"), "give url or urls, not both");
        } else if u.get_ref().is_empty() || u.get_ref().len() > 16 {
            v.err(Some(u), f("urls"), "1 to 16 Alertmanager URLs");
        }
    } else if let Some(u) = &r.urls {
        v.err(Some(u), f("urls"), "only an alertmanager receiver takes several URLs");
    }
    let raw_urls: Vec<&String> = match (&r.url, &r.urls) {
        (Some(u), _) => vec![u.get_ref()],
        (None, Some(us)) => us.get_ref().iter().collect(),
        (None, None) => vec![],
    };
    let mut am_urls = Vec::new();
    if kind == ReceiverKind::Alertmanager {
        if raw_urls.is_empty() {
            v.err(Some(sr), f("url"), "missing: the Alertmanager's address, e.g. http://127.0.0.1:9093");
        }
        for u in &raw_urls {
            // The base address (`http://am:9093`, maybe a path prefix); the API path is added.
            let full = format!("{}/api/v2/alerts", u.trim_end_matches('/').trim_end_matches("/api/v2/alerts"));
            match crate::urls::ReceiverUrl::parse(&full) {
                Ok(x) => am_urls.push(x),
                Err(e) => match &r.url {
                    Some(at) => v.err(Some(at), f("url"), e),
                    None => v.err(r.urls.as_ref(), f("urls"), e),
                },
            }
        }
    }
    let resend = v.duration(
        r.resend_interval.as_ref(),
        f("resend_interval"),
        DEFAULT_RESEND,
        Duration::from_secs(1),
        Some(Duration::from_secs(3600)),
    );
    let url = match (&r.url, kind) {
        (_, ReceiverKind::Alertmanager) => am_urls.first().cloned(),
        (None, ReceiverKind::Pagerduty) => crate::urls::ReceiverUrl::parse(PAGERDUTY_URL).ok(),
        (None, _) => {
            v.err(Some(sr), f("url"), "missing: the address to POST alerts to");
            None
        }
        // The error never quotes the URL: it may be a token.
        (Some(u), _) => match crate::urls::ReceiverUrl::parse(u.get_ref()) {
            Ok(u) => Some(u),
            Err(e) => {
                v.err(Some(u), f("url"), e);
                None
            }
        },
    };
    let routing_key = match (&r.routing_key, &r.routing_key_file) {
        (Some(k), None) => Some(Secret::new(k.get_ref().clone())),
        (None, Some(p)) => match conndoc_files::read_to_string(p.get_ref(), conndoc_files::limit::PASSWORD) {
            Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            Ok(_) => {
                v.err(Some(p), f("routing_key_file"), format!("{} is empty", p.get_ref()));
                None
            }
            Err(e) => {
                v.err(Some(p), f("routing_key_file"), e.to_string());
                None
            }
        },
        (Some(k), Some(_)) => {
            v.err(Some(k), f("routing_key"), "give routing_key or routing_key_file, not both");
            None
        }
        (None, None) => None,
    };
    if kind == ReceiverKind::Pagerduty && routing_key.is_none() && v.errors.len() == before {
        v.err(
            Some(sr),
            f("routing_key"),
            "missing: PagerDuty needs the integration's routing key (routing_key_file is preferred)",
        );
    }
    let timeout = v.duration(
        r.timeout.as_ref(),
        f("timeout"),
        DEFAULT_RECEIVER_TIMEOUT,
        Duration::from_millis(10),
        Some(Duration::from_secs(120)),
    );
    let retry_max = v.duration(
        r.retry_max.as_ref(),
        f("retry_max"),
        DEFAULT_RETRY_MAX,
        Duration::from_millis(100),
        Some(Duration::from_secs(86_400)),
    );
    let ca_file = r.ca_file.as_ref().map(|c| PathBuf::from(c.get_ref()));
    if let (Some(c), Some(p)) = (&r.ca_file, &ca_file) {
        if let Err(e) = std::fs::metadata(p) {
            v.err(Some(c), f("ca_file"), format!("cannot read {}: {e}", p.display()));
        }
    }
    if v.errors.len() > before {
        return Vec::new();
    }
    let Some(url) = url else { return Vec::new() };
    let one = ReceiverConfig {
        name: name.clone(),
        kind,
        url,
        routing_key,
        timeout,
        retry_max,
        send_resolved: r.send_resolved.unwrap_or(true),
        ca_file,
        resend,
    };
    if am_urls.len() > 1 {
        am_urls
            .into_iter()
            .enumerate()
            .map(|(n, u)| ReceiverConfig { name: format!("{name}/{}", n + 1), url: u, ..one.clone() })
            .collect()
    } else {
        vec![one]
    }
}

/// `target[3].interval`, formatted only when needed.
#[derive(Clone, Copy)]
struct Field(&'static str, usize, &'static str);

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}].{}", self.0, self.1, self.2)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Durations as the config writes them: `500ms`, `5s`, `1m`, `2h`, `7d` (the project's one
/// parser, conndoc_facts::duration: range-checked, never panics).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    conndoc_facts::duration::parse(s).map_err(|e| e.to_string())
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(86_400_000) && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A rejected value as the error line shows it: quoted, and cut after 64 bytes with its
/// length, so a 2 MB name is one readable line, not the whole value echoed back.
fn quoted(s: &str) -> String {
    let shown = conndoc_facts::protocol::clip(s, 64);
    if shown.len() == s.len() {
        format!("{s:?}")
    } else {
        format!("{shown:?}… ({} bytes)", s.len())
    }
}

#[cfg(test)]
mod tests;
