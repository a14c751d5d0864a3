//! Secrets out of command lines before they reach a report.

use conndoc_facts::REDACTED;

/// Options whose next argument is a secret.
const SECRET_FLAGS: &[&str] =
    &["--requirepass", "--masterauth", "--password", "--pass", "--passwd", "--token", "--secret", "--api-key", "-a"];

/// Words that mark `name=value` (or `name value` in one argument) as a secret.
const SECRET_WORDS: &[&str] = &["pass", "secret", "token", "auth", "key", "credential"];

fn secret_name(name: &str) -> bool {
    let n = name.trim_start_matches('-').to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| n.contains(w))
}

/// Join a command line, replacing secret values with `<redacted>`.
pub fn redact_cmdline(args: &[String]) -> String {
    let mut out = Vec::with_capacity(args.len());
    let mut next_secret = false;
    for a in args {
        if next_secret {
            out.push(REDACTED.to_string());
            next_secret = false;
            continue;
        }
        if SECRET_FLAGS.contains(&a.as_str()) || (a.starts_with("--") && !a.contains('=') && secret_name(a)) {
            out.push(a.clone());
            next_secret = true;
            continue;
        }
        if let Some((k, _)) = a.split_once('=') {
            if secret_name(k) {
                out.push(format!("{k}={REDACTED}"));
                continue;
            }
        }
        // URLs with credentials: scheme://user:pass@host
        // The `@` is searched after the `://` (an `@` before it, which any process may put in
        // its argv, used to panic the slice) and the last one (a password may hold `@`).
        if let Some(s) = a.find("://") {
            if let Some(at) = a[s + 3..].rfind('@').map(|i| s + 3 + i) {
                if let Some(colon) = a[s + 3..at].find(':') {
                    let cut = s + 3 + colon + 1;
                    out.push(format!("{}{REDACTED}{}", &a[..cut], &a[at..]));
                    continue;
                }
            }
        }
        out.push(a.clone());
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn secrets_are_redacted() {
        let r = redact_cmdline(&v(&["redis-server", "--port", "6380", "--requirepass", "hunter2"]));
        assert_eq!(r, "redis-server --port 6380 --requirepass <redacted>");
        let r = redact_cmdline(&v(&["app", "DB_PASSWORD=s3cret", "--api-token", "abc", "x"]));
        assert_eq!(r, "app DB_PASSWORD=<redacted> --api-token <redacted> x");
        let r = redact_cmdline(&v(&["worker", "redis://default:pw@10.0.0.2:6379/0"]));
        assert_eq!(r, "worker redis://default:<redacted>@10.0.0.2:6379/0");
        assert!(!redact_cmdline(&v(&["redis-cli", "-a", "topsecret"])).contains("topsecret"));
        assert_eq!(redact_cmdline(&v(&["nginx", "-g", "daemon off;"])), "nginx -g daemon off;");
        // Found by tests/fuzz.rs: an `@` before the `://` panicked; a password holding `@`.
        assert_eq!(redact_cmdline(&v(&["a@b://u:pw@h"])), "a@b://u:<redacted>@h");
        assert_eq!(redact_cmdline(&v(&["redis://u:p@ss@h:1"])), "redis://u:<redacted>@h:1");
    }
}
