//! Logs: `tracing` events from every crate, written to stderr by one subscriber set up here.
//!
//! Human text by default (`TIME LEVEL target: message field=value`), one JSON object per line
//! with `--log-format json` (for journald/Loki/Elasticsearch pipelines). Which events show is
//! `CONNDOC_LOG` (`info`, `debug`, `conndoc_watch=debug,warn`, …); without it the daemon
//! (`watch`) logs at info and the one-shot commands, whose result is their output, only
//! warnings and errors. Logs never carry a secret: call sites log only redacted forms
//! (`TargetUrl::shown`, `Target::input`), and the tests check the lines.

use std::str::FromStr;
pub use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event and line: timestamp, level, target, fields (message included).
    Json,
}

/// The environment variable that picks which events are logged.
pub const FILTER_ENV: &str = "CONNDOC_LOG";

/// Which events pass: `CONNDOC_LOG` if set (an unparseable value is bad input), else `default`.
pub fn filter(env: Option<&str>, default: LevelFilter) -> Result<Targets, String> {
    match env.map(str::trim) {
        None | Some("") => Ok(Targets::new().with_default(default)),
        Some(s) => Targets::from_str(s).map_err(|e| format!("{FILTER_ENV}={s:?}: {e}")),
    }
}

/// Install the process-wide subscriber writing to stderr. Called once, before any subcommand.
pub fn init(format: LogFormat, filter: Targets) {
    let registry = tracing_subscriber::registry().with(filter);
    // Errors only if a subscriber is already set (never in the binary): keep that one.
    let _ = match format {
        LogFormat::Text => registry.with(text_layer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(json_layer(std::io::stderr)).try_init(),
    };
}

/// Plain text, no colour codes: the lines end up in journald and files more often than on a terminal.
fn text_layer<S, W>(w: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer().with_writer(w).with_ansi(false)
}

fn json_layer<S, W>(w: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).with_writer(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let filter = filter(None, LevelFilter::INFO).unwrap();
        let registry = tracing_subscriber::registry().with(filter);
        match format {
            LogFormat::Text => tracing::subscriber::with_default(registry.with(text_layer(buf.clone())), f),
            LogFormat::Json => tracing::subscriber::with_default(registry.with(json_layer(buf.clone())), f),
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_are_one_object_each_with_the_fields_at_the_top() {
        let out = capture(LogFormat::Json, || {
            tracing::info!(target_name = "cache", state = "down", "target cache: up -> down");
            tracing::debug!("not shown at info");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "target cache: up -> down");
        assert_eq!(v["target_name"], "cache");
        assert_eq!(v["state"], "down");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
    }

    #[test]
    fn text_lines_have_time_level_message_and_fields_without_colour() {
        let out = capture(LogFormat::Text, || tracing::warn!(receiver = "ops", "alert failed"));
        assert!(out.contains(" WARN "), "{out}");
        assert!(out.contains("alert failed receiver=\"ops\""), "{out}");
        assert!(!out.contains('\x1b'), "{out:?}");
    }

    #[test]
    fn a_logged_target_with_a_password_shows_it_redacted() {
        // What every call site logs for a target: its redacted input, never the raw URL.
        let t = conndoc_facts::Target::parse("redis://:S3KRIT@127.0.0.1:6379").unwrap();
        for format in [LogFormat::Text, LogFormat::Json] {
            let out = capture(format, || tracing::info!(url = %t.input, "checked"));
            assert!(out.contains("redis://:<redacted>@127.0.0.1:6379"), "{out}");
            assert!(!out.contains("S3KRIT"), "{out}");
        }
    }

    #[test]
    fn the_filter_comes_from_the_environment_or_the_default() {
        assert_eq!(filter(None, LevelFilter::WARN).unwrap().default_level(), Some(LevelFilter::WARN));
        let t = filter(Some("conndoc_watch=debug,info"), LevelFilter::WARN).unwrap();
        assert!(t.would_enable("conndoc_watch::daemon", &tracing::Level::DEBUG));
        assert!(!t.would_enable("conndoc_engine", &tracing::Level::DEBUG));
        assert!(filter(Some("=nonsense=="), LevelFilter::WARN).is_err());
    }
}
