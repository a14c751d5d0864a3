//! Alert payloads (generic JSON, Slack-compatible, PagerDuty Events v2) and their delivery
//! over HTTP with a deadline. Alerts go through the outbox in the history database, so an
//! alert that cannot be delivered is retried with backoff and never dropped.

use crate::config::{ReceiverConfig, ReceiverKind};
use crate::urls::{scrub, ReceiverUrl};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// What an alert is about.
#[derive(Debug, Clone)]
pub struct AlertInfo<'a> {
    pub target: &'a str,
    pub url: &'a crate::urls::TargetUrl,
    pub labels: &'a BTreeMap<String, String>,
    /// `firing` or `resolved`.
    pub status: &'a str,
    pub state: &'a str,
    pub cause: &'a str,
    pub summary: &'a str,
    pub since: &'a str,
    pub event_id: i64,
    pub dashboard: String,
    /// The diagnosis rendered for people (firing alerts only).
    pub details: Option<&'a str>,
    /// When the target went down (RFC 3339): Alertmanager's `startsAt`.
    pub starts_at: &'a str,
    /// The first remediation of the diagnosis.
    pub fix: Option<&'a str>,
    /// The container behind the target, when the diagnosis found one.
    pub container: Option<&'a str>,
}

/// Alertmanager's `alertname` for a target that is down (the shipped Prometheus rule's name).
pub const ALERTNAME: &str = "ConndocTargetDown";

/// The body for one receiver kind. PagerDuty's routing key is added at send time so the
/// secret is never stored in the outbox.
pub fn payload(kind: ReceiverKind, a: &AlertInfo, host: &str) -> Value {
    match kind {
        ReceiverKind::Webhook => json!({
            "version": "1",
            "status": a.status,
            "target": a.target,
            "url": a.url.shown(),
            "labels": a.labels,
            "state": a.state,
            "cause": a.cause,
            "summary": a.summary,
            "since": a.since,
            "event_id": a.event_id,
            "dashboard": a.dashboard,
            "details": a.details,
            "agent": host,
            "container": a.container,
        }),
        ReceiverKind::Slack => {
            let ctr = a.container.map(|c| format!(" (container `{c}`)")).unwrap_or_default();
            let text = if a.status == "firing" {
                format!(
                    ":red_circle: *{}*{ctr} is down: `{}`, {}\n<{}|dashboard>",
                    a.target, a.cause, a.summary, a.dashboard
                )
            } else {
                format!(
                    ":large_green_circle: *{}* is up again (was `{}`)\n<{}|dashboard>",
                    a.target, a.cause, a.dashboard
                )
            };
            let mut v = json!({ "text": text });
            if let (Some(d), "firing") = (a.details, a.status) {
                v["attachments"] = json!([{ "color": "danger", "text": format!("```{d}```") }]);
            }
            v
        }
        ReceiverKind::Alertmanager => {
            // The target's own labels first; conndoc's (and a default severity) on top.
            let mut labels: serde_json::Map<String, Value> =
                a.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            labels.entry("severity").or_insert_with(|| json!("critical"));
            labels.insert("alertname".into(), json!(ALERTNAME));
            labels.insert("target".into(), json!(a.target));
            labels.insert("cause".into(), json!(a.cause));
            labels.insert("instance".into(), json!(host));
            let mut annotations = json!({
                "summary": format!("{} is down: {} ({})", a.target, a.cause, a.summary),
                "dashboard": a.dashboard,
                "url": a.url.shown(),
            });
            if let Some(f) = a.fix {
                annotations["fix"] = json!(f);
            }
            // An annotation, not a label: a container recreated under the same name is
            // still the same alert.
            if let Some(c) = a.container {
                annotations["container"] = json!(c);
            }
            let mut alert = json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": a.starts_at,
                "generatorURL": a.dashboard,
            });
            if a.status == "resolved" {
                alert["endsAt"] = json!(a.since);
            }
            json!([alert])
        }
        ReceiverKind::Pagerduty => json!({
            "event_action": if a.status == "firing" { "trigger" } else { "resolve" },
            "dedup_key": format!("conndoc/{host}/{}", a.target),
            "payload": {
                "summary": format!("{} is down: {} ({})", a.target, a.cause, a.summary),
                "source": host,
                "severity": "critical",
                "component": a.target,
                "class": a.cause,
                "custom_details": { "url": a.url.shown(), "cause": a.cause, "labels": a.labels, "since": a.since, "details": a.details, "container": a.container },
            },
            "links": [{ "href": a.dashboard, "text": "conndoc dashboard" }],
            "client": "conndoc",
        }),
    }
}

/// The HTTP client of one receiver: built once (TLS roots, the receiver's CA file, proxy
/// settings from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`) and reused for every delivery.
pub fn client(r: &ReceiverConfig) -> Result<reqwest::Client, String> {
    let tls = tls_config(r.ca_file.as_deref())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("conndoc/", env!("CARGO_PKG_VERSION")))
        // A redirect could send the payload somewhere the config never named.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(r.timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("receiver {}: building the HTTP client: {}", r.name, chain(&e)))
}

/// An error and its sources on one line (reqwest's own text says little: "error sending
/// request"; the cause is further down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// POST a JSON body; Ok on a 2xx answer within the deadline. Errors name the receiver URL
/// only in its redacted form.
pub async fn post_json(
    client: &reqwest::Client,
    url: &ReceiverUrl,
    body: Vec<u8>,
    deadline: Duration,
) -> Result<u16, String> {
    let send = client
        .post(url.expose().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(deadline)
        .send();
    let resp = match send.await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(format!("{url}: no answer within {}", crate::config::fmt_duration(deadline)))
        }
        Err(e) => {
            let text = chain(&e.without_url());
            return Err(format!("{url}: {}", scrub(&text, url.expose().as_str())));
        }
    };
    let code = resp.status().as_u16();
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(format!("{url}: HTTP {code}"))
    }
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(p) = ca_file {
        // Bounded, and a FIFO or device is refused (conndoc_files).
        let pem = conndoc_files::read(p, conndoc_files::limit::CA).map_err(|e| format!("CA file: {e}"))?;
        let mut n = 0;
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| format!("CA file {}: {e}", p.display()))?;
            roots.add(c).map_err(|e| format!("CA file {}: {e}", p.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("CA file {}: no PEM certificate in it", p.display()));
        }
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(cfg)
}

/// The body actually sent for an outbox payload (adds PagerDuty's routing key; a firing
/// Alertmanager alert gets `endsAt` four resend intervals from now, as Prometheus does, so it
/// stays open exactly as long as conndoc keeps sending it).
pub fn wire_body(r: &ReceiverConfig, stored: &str) -> Vec<u8> {
    if r.kind == ReceiverKind::Alertmanager {
        if let Ok(mut v) = serde_json::from_str::<Value>(stored) {
            let until = crate::history::now_ms() / 1000 + 4 * r.resend.as_secs().max(1) as i64;
            for a in v.as_array_mut().into_iter().flatten() {
                if a.get("endsAt").is_none() {
                    a["endsAt"] = json!(conndoc_probe::time::rfc3339(until.max(0) as u64));
                }
            }
            return serde_json::to_vec(&v).unwrap_or_default();
        }
    }
    if r.kind == ReceiverKind::Pagerduty {
        if let (Ok(mut v), Some(k)) = (serde_json::from_str::<Value>(stored), &r.routing_key) {
            v["routing_key"] = Value::String(k.expose().to_string());
            return serde_json::to_vec(&v).unwrap_or_default();
        }
    }
    stored.as_bytes().to_vec()
}

/// Delay before the next attempt: 1 s doubling per attempt, capped.
pub fn backoff(attempts: u32, cap: Duration) -> Duration {
    let d = Duration::from_secs(1).saturating_mul(1u32 << attempts.min(20));
    d.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(labels: &'a BTreeMap<String, String>, url: &'a crate::urls::TargetUrl) -> AlertInfo<'a> {
        AlertInfo {
            target: "api",
            url,
            labels,
            status: "firing",
            state: "down",
            cause: "no-listener",
            summary: "nothing listens on 127.0.0.1:8100",
            since: "2026-11-21T04:00:00Z",
            event_id: 7,
            dashboard: "http://127.0.0.1:9464/target/api".into(),
            details: Some("no-listener: …"),
            starts_at: "2026-11-21T03:59:00Z",
            fix: Some("start the service"),
            container: Some("web-1"),
        }
    }

    #[test]
    fn payload_shapes() {
        let l = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let raw = "redis://:S3KRIT-pw@127.0.0.1:8100";
        let u = crate::urls::TargetUrl::new(raw, &conndoc_facts::Target::parse(raw).unwrap());
        for kind in [ReceiverKind::Webhook, ReceiverKind::Slack, ReceiverKind::Pagerduty, ReceiverKind::Alertmanager] {
            let body = payload(kind, &info(&l, &u), "node1").to_string();
            assert!(!body.contains("S3KRIT"), "{kind:?}: {body}");
        }
        let g = payload(ReceiverKind::Webhook, &info(&l, &u), "node1");
        assert_eq!(g["cause"], "no-listener");
        assert_eq!(g["state"], "down");
        assert_eq!(g["labels"]["env"], "prod");
        assert_eq!(g["dashboard"], "http://127.0.0.1:9464/target/api");
        let s = payload(ReceiverKind::Slack, &info(&l, &u), "node1");
        assert!(s["text"].as_str().unwrap().contains("`no-listener`"));
        let p = payload(ReceiverKind::Pagerduty, &info(&l, &u), "node1");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "conndoc/node1/api");
        assert_eq!(p["payload"]["severity"], "critical");
        assert!(p.get("routing_key").is_none(), "the key is added at send time only");
        let am = payload(ReceiverKind::Alertmanager, &info(&l, &u), "node1");
        let a = &am[0];
        assert_eq!(a["labels"]["alertname"], ALERTNAME);
        assert_eq!((a["labels"]["target"].as_str(), a["labels"]["cause"].as_str()), (Some("api"), Some("no-listener")));
        assert_eq!((a["labels"]["env"].as_str(), a["labels"]["instance"].as_str()), (Some("prod"), Some("node1")));
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["annotations"]["fix"], "start the service");
        assert_eq!(a["annotations"]["container"], "web-1");
        assert!(a["labels"].get("container").is_none(), "not a label: a recreated container is the same alert");
        assert_eq!(g["container"], "web-1");
        assert!(s["text"].as_str().unwrap().contains("*api* (container `web-1`) is down"));
        assert_eq!(p["payload"]["custom_details"]["container"], "web-1");
        assert_eq!(a["startsAt"], "2026-11-21T03:59:00Z");
        assert!(a.get("endsAt").is_none(), "firing: endsAt is set at send time");
        let mut r = info(&l, &u);
        r.status = "resolved";
        assert_eq!(payload(ReceiverKind::Pagerduty, &r, "n")["event_action"], "resolve");
        assert_eq!(payload(ReceiverKind::Alertmanager, &r, "n")[0]["endsAt"], "2026-11-21T04:00:00Z");
    }

    #[test]
    fn unusable_ca_files_are_errors_not_hangs() {
        let d = std::env::temp_dir().join(format!("conndoc-ca-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let empty = d.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let garbage = d.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let bad_der = d.join("bad-der.pem");
        std::fs::write(&bad_der, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        let unterminated = d.join("unterminated.pem");
        std::fs::write(&unterminated, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        for p in [std::path::Path::new("/dev/zero"), &d, &empty, &garbage, &bad_der, &unterminated] {
            assert!(tls_config(Some(p)).is_err(), "{}", p.display());
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(0, cap), Duration::from_secs(1));
        assert_eq!(backoff(3, cap), Duration::from_secs(8));
        assert_eq!(backoff(30, cap), cap);
    }
}
