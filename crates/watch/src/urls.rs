//! The two kinds of URL the daemon keeps, each with the one way it may be shown.
//!
//! A target URL can carry a Redis password (`redis://:PASSWORD@host`); a receiver URL is a
//! credential in itself more often than not (Slack's path, `?token=…`, userinfo). Both keep
//! the real text private and have a single redacted form that every output uses: the
//! dashboard, `/api/targets`, the history database, alert payloads, logs and errors.

use conndoc_facts::{Secret, Target, REDACTED};
use serde::{Serialize, Serializer};
use std::fmt;

/// A watch target's URL: the text as configured (kept secret) and its redacted form.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl {
    raw: Secret,
    shown: String,
}

impl TargetUrl {
    /// `raw` as written in the config, `t` what it parsed into.
    pub fn new(raw: &str, t: &Target) -> TargetUrl {
        // facts redacts the userinfo's password in `input`; should it ever miss one, show
        // only what cannot hold a secret.
        let shown = if t.has_password && !t.input.contains(REDACTED) {
            format!("{}://{REDACTED}@{}", t.scheme, t.authority())
        } else {
            t.input.clone()
        };
        TargetUrl { raw: Secret::new(raw), shown }
    }
    /// The redacted form, the only one ever shown or stored.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}
impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown, f)
    }
}
impl Serialize for TargetUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

/// Where a receiver's alerts are POSTed. Everything after the authority (path, query) and
/// any userinfo are treated as secret: shown as `https://hooks.slack.com/<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceiverUrl {
    url: url::Url,
    shown: String,
}

impl ReceiverUrl {
    /// Parse an `http://` or `https://` URL. The error never repeats the input.
    pub fn parse(s: &str) -> Result<ReceiverUrl, String> {
        let url = url::Url::parse(s.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("expected an http:// or https:// URL".into());
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err("the URL has no host".into());
        };
        if url.port() == Some(0) {
            return Err("port 0 is not a port to deliver to".into());
        }
        let mut shown = format!("{}://", url.scheme());
        let secret_part =
            !url.username().is_empty() || url.password().is_some() || url.path() != "/" || url.query().is_some();
        shown.push_str(host);
        if let Some(p) = url.port() {
            shown.push_str(&format!(":{p}"));
        }
        if secret_part {
            shown.push('/');
            shown.push_str(REDACTED);
        }
        Ok(ReceiverUrl { url, shown })
    }
    /// The real URL, for the one place that sends to it.
    pub fn expose(&self) -> &url::Url {
        &self.url
    }
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for ReceiverUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}
impl fmt::Debug for ReceiverUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown, f)
    }
}

/// Replace every occurrence of `secret` in `text` (for error texts of libraries that may
/// quote what they were given).
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.len() < 4 {
        return text.to_string();
    }
    text.replace(secret, REDACTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_never_show_the_password() {
        for raw in ["redis://:S3KRIT-pw@127.0.0.1:6379", "redis://app:S3KRIT-pw@cache:6380/2", "redis://S3KRIT-pw@h:1"]
        {
            let t = Target::parse(raw).unwrap();
            let u = TargetUrl::new(raw, &t);
            for shown in [u.to_string(), format!("{u:?}"), serde_json::to_string(&u).unwrap(), u.shown().into()] {
                assert!(!shown.contains("S3KRIT"), "{raw}: {shown}");
                assert!(shown.contains(REDACTED), "{raw}: {shown}");
            }
        }
        let t = Target::parse("tcp://127.0.0.1:8100").unwrap();
        assert_eq!(TargetUrl::new("tcp://127.0.0.1:8100", &t).shown(), "tcp://127.0.0.1:8100");
    }

    #[test]
    fn receiver_urls_hide_paths_queries_and_userinfo() {
        let cases = [
            ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/<redacted>"),
            ("http://127.0.0.1:9000/hook?token=XXXXSECRET", "http://127.0.0.1:9000/<redacted>"),
            ("https://user:XXXXSECRET@relay.example/", "https://relay.example/<redacted>"),
            ("http://[::1]:81", "http://[::1]:81"),
            ("http://relay", "http://relay"),
        ];
        for (raw, want) in cases {
            let u = ReceiverUrl::parse(raw).unwrap();
            assert_eq!(u.shown(), want);
            assert_eq!(format!("{u:?}"), format!("{want:?}"));
            assert_eq!(u.expose().as_str().trim_end_matches('/'), raw.trim_end_matches('/'));
        }
        for bad in [
            "ftp://XXXXSECRET@x",
            "http://:80/XXXXSECRET",
            "http://h:0/XXXXSECRET",
            "http://h:x/XXXXSECRET",
            "https://",
            "XXXXSECRET",
        ] {
            let e = ReceiverUrl::parse(bad).unwrap_err();
            assert!(!e.contains("XXXXSECRET"), "{bad}: {e}");
        }
    }
}
