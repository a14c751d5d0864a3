//! The service answered, then refused at its protocol: Redis replies, TLS on one side only,
//! TLS handshake failures, HTTP 5xx; plus the redis.conf lint run during the diagnosis.

use crate::{Cause, Finding, Findings};
use conndoc_facts::protocol::{
    CertFacts, Exchange, MismatchDirection, ProtocolKind, ProtocolProbe, RedisFacts, TlsFacts, TlsFailure,
};
use conndoc_facts::{Evidence, Scheme};
use serde_json::json;

/// Days before `not_after` from which `certificate-expires-soon` is raised.
pub const EXPIRY_WARNING_DAYS: i64 = 21;

pub fn run(ev: &Evidence, out: &mut Findings) {
    let Some(pf) = &ev.protocol else { return };
    for p in &pf.probes {
        probe(ev, p, out);
    }
    lint_findings(ev, out);
}

fn at(p: &ProtocolProbe) -> String {
    match p.address {
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", p.port),
        a => format!("{a}:{}", p.port),
    }
}

fn probe(ev: &Evidence, p: &ProtocolProbe, out: &mut Findings) {
    let where_ = at(p);
    if let Some(m) = &p.tls_mismatch {
        let (summary, fix) = match (m.direction, p.kind) {
            (MismatchDirection::PlaintextToTls, ProtocolKind::Redis) => (
                format!("{where_} speaks TLS, but the client sent plaintext Redis"),
                format!("Connect with TLS: rediss://{}", ev.target.authority()),
            ),
            (MismatchDirection::PlaintextToTls, ProtocolKind::Http) => (
                format!("{where_} speaks TLS, but the client sent plaintext HTTP"),
                format!("Use https://{}{}", ev.target.authority(), ev.target.path),
            ),
            (MismatchDirection::TlsToPlaintext, ProtocolKind::Redis) => (
                format!("{where_} speaks plaintext Redis, but the client sent a TLS handshake"),
                format!("Connect without TLS (redis://{}), or enable tls-port on the server", ev.target.authority()),
            ),
            (MismatchDirection::TlsToPlaintext, ProtocolKind::Http) => (
                format!("{where_} speaks plaintext HTTP, but the client sent a TLS handshake"),
                format!("Use http://{}{}, or terminate TLS on that port", ev.target.authority(), ev.target.path),
            ),
        };
        out.push(
            Finding::critical(Cause::TlsRequired, summary)
                .evidence("tls-first-bytes", m.observed.clone(), json!(m))
                .fix(fix),
        );
        return;
    }
    if let Some(t) = &p.tls {
        if !t.ok {
            tls_failed(&where_, t, out);
            return;
        }
        expiry_warning(&where_, t, out);
    }
    if let Some(r) = &p.redis {
        redis(&where_, p, r, out);
    } else if let Some(h) = &p.http {
        if let Some(status) = h.status {
            let mut data = json!({"status_line": h.status_line, "server": h.server, "via": h.via,
                "connect_us": h.connect_us, "tls_us": h.tls_us, "first_byte_us": h.first_byte_us});
            if let Some(o) = data.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            let mut text = h.status_line.clone().unwrap_or_default();
            if let Some(s) = &h.server {
                text += &format!("; Server: {s}");
            }
            for v in &h.via {
                text += &format!("; Via: {v}");
            }
            if status >= 500 {
                let mut f = Finding::critical(
                    Cause::HttpError,
                    format!("{where_} answered {}", h.status_line.as_deref().unwrap_or("a 5xx status")),
                )
                .evidence("http-status", text, data);
                if h.gateway_error() {
                    let who = h.server.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
                    f = f
                        .evidence(
                            "gateway-hint",
                            format!("a {status} from a proxy{who} usually means the proxy's upstream refused the connection or timed out"),
                            json!({"status": status}),
                        )
                        .fix("Check the proxy's upstream: is the backend process running and listening where the proxy's config points (nginx: proxy_pass / upstream; its error.log names the upstream and the errno)?")
                        .fix("Run conndoc diagnose against the upstream address from the proxy's host (e.g. with --netns) to name why it refuses");
                    if let Some(g) = ev.protocol.as_ref().and_then(|p| p.gateway.as_ref()) {
                        let up = g.upstream.as_deref().unwrap_or("its upstream");
                        let err = g.upstream_error.as_deref().unwrap_or("an error");
                        let place = match g.upstream_on_inspected_host {
                            Some(true) => ", on the inspected host itself",
                            Some(false) => ", on another host",
                            None => "",
                        };
                        f.summary = format!(
                            "{where_} answered {}: {} could not reach its upstream {up}{place} ({err})",
                            h.status_line.as_deref().unwrap_or("a gateway error"),
                            g.proxy
                        );
                        f = f.evidence(
                            "gateway-upstream",
                            format!("{} ({}): {}", g.error_log, g.proxy, g.line),
                            json!(g),
                        );
                        if g.upstream_on_inspected_host == Some(true) {
                            let port = g.upstream.as_deref().and_then(|u| {
                                u.split("://").nth(1)?.split('/').next()?.rsplit_once(':').map(|(_, p)| p.to_string())
                            });
                            f = f.fix(format!(
                                "Start the backend on the gateway host{} (`ss -ltnp` there shows what listens)",
                                port.map(|p| format!(" so it listens on port {p}")).unwrap_or_default()
                            ));
                        }
                    }
                } else {
                    f = f.fix("Read the server's error log for this request; the service itself failed (5xx).");
                }
                out.push(f);
            } else {
                out.push(Finding::new(Cause::Ok, crate::Severity::Info, format!("{where_} answered {text}")).evidence(
                    "http-status",
                    text,
                    data,
                ));
            }
        } else if let Some(e) = &h.error {
            unknown_protocol(&where_, "http", e, json!(h), out);
        }
    } else if let Some(e) = &p.error {
        unknown_protocol(&where_, "protocol", e, json!(p), out);
    }
    // A healthy TLS service: its handshake and certificate are part of the `ok` evidence.
    if let (Some(t), Some(f)) = (p.tls.as_ref().filter(|t| t.ok), out.get_mut(Cause::Ok)) {
        let text = format!(
            "TLS {} with {:?} in {}{}",
            t.version.as_deref().unwrap_or("?"),
            t.server_name,
            t.handshake_us.map(|u| u.to_string()).unwrap_or_default(),
            if t.insecure { " (not verified: --insecure)" } else { ", certificate verified" }
        );
        f.evidence.push(crate::EvidenceItem {
            kind: "tls-handshake".into(),
            text,
            data: json!({"version": t.version, "cipher": t.cipher, "server_name": t.server_name,
                         "insecure": t.insecure, "handshake_us": t.handshake_us}),
        });
        if let Some(c) = t.chain.first() {
            f.evidence.push(crate::EvidenceItem { kind: "certificate".into(), text: cert_text(c), data: json!(c) });
        }
    }
}

fn unknown_protocol(where_: &str, kind: &str, err: &str, data: serde_json::Value, out: &mut Findings) {
    out.push(
        Finding::critical(
            Cause::Unknown,
            format!("{where_} accepted the connection but the {kind} exchange failed: {err}"),
        )
        .evidence("protocol-exchange", err.to_string(), data)
        .fix("Read the server's log for this connection; check that the port serves the protocol the URL names."),
    );
}

fn cert_text(c: &CertFacts) -> String {
    let sans = if c.sans.is_empty() { "none".into() } else { c.sans.join(", ") };
    format!(
        "subject {}; SANs {sans}; issuer {}; valid {} to {}{}",
        c.subject,
        c.issuer,
        c.not_before,
        c.not_after,
        if c.self_signed { " (self-signed)" } else { "" }
    )
}

fn tls_failed(where_: &str, t: &TlsFacts, out: &mut Findings) {
    let failure = t.failure.unwrap_or(TlsFailure::Other);
    let leaf = t.chain.first();
    let detail = match (failure, leaf) {
        (TlsFailure::Expired, Some(c)) => format!(" (not after {}, {} days ago)", c.not_after, -c.expires_in_days),
        (TlsFailure::NotYetValid, Some(c)) => format!(" (not before {})", c.not_before),
        (TlsFailure::NameMismatch, Some(c)) => format!(
            " ({:?} is not among {})",
            t.server_name,
            if c.sans.is_empty() { format!("the subject {}", c.subject) } else { c.sans.join(", ") }
        ),
        (TlsFailure::UnknownIssuer, Some(c)) => format!(" (issuer {})", c.issuer),
        _ => String::new(),
    };
    let mut f = Finding::critical(
        Cause::TlsHandshakeFailed,
        format!("TLS handshake with {where_} failed: {}{detail}", failure.describe()),
    )
    .evidence(
        "tls-handshake",
        format!("{:?}: {}", failure, t.error.as_deref().unwrap_or("handshake failed")),
        json!({"failure": failure, "error": t.error, "server_name": t.server_name,
               "ca_file": t.ca_file, "handshake_us": t.handshake_us}),
    );
    for c in &t.chain {
        f = f.evidence("certificate", cert_text(c), json!(c));
    }
    if t.chain.is_empty() {
        f = f.partial("the server sent no certificate before the handshake failed");
    }
    f = match failure {
        TlsFailure::Expired => f.fix("Renew the server certificate and reload the service"),
        TlsFailure::NotYetValid => f.fix("Check the clocks of server and client (NTP); reissue with a not-before in the past"),
        TlsFailure::NameMismatch => f
            .fix(format!(
                "Connect by a name the certificate lists ({}), or reissue it with subjectAltName=DNS:{}",
                leaf.map(|c| c.sans.join(", ")).unwrap_or_default(),
                t.server_name
            )),
        TlsFailure::UnknownIssuer => f
            .fix("Give the issuing CA with --ca FILE (or install it into the system trust store)")
            .fix("If the server should use a publicly trusted certificate, check that it sends its intermediate certificates"),
        TlsFailure::ProtocolVersion => {
            f.fix("Enable TLS 1.2 or 1.3 on the server (e.g. nginx ssl_protocols TLSv1.2 TLSv1.3; redis tls-protocols)")
        }
        _ => f.fix("Read the server's log for the handshake error; compare its TLS settings with the client's"),
    };
    out.push(f);
}

fn expiry_warning(where_: &str, t: &TlsFacts, out: &mut Findings) {
    if let Some(c) = t.chain.first() {
        if c.expires_in_days < EXPIRY_WARNING_DAYS {
            out.push(
                Finding::warning(
                    Cause::CertificateExpiresSoon,
                    if c.expires_in_days < 0 {
                        format!(
                            "the certificate of {where_} expired {} days ago ({}); it was accepted only because of --insecure",
                            -c.expires_in_days,
                            c.not_after
                        )
                    } else {
                        format!("the certificate of {where_} expires in {} days ({})", c.expires_in_days, c.not_after)
                    },
                )
                .evidence("certificate", cert_text(c), json!(c))
                .fix(if c.expires_in_days < 0 {
                    "Renew the certificate: clients that verify it are refused"
                } else {
                    "Renew the certificate before it expires"
                }),
            );
        }
    }
}

/// `… (4096 bytes shown of a 67108877-byte reply)` after a reply evidence keeps only the
/// start of.
fn cut_note(e: &Exchange) -> String {
    match (e.truncated, e.length) {
        (true, Some(n)) => format!("… ({} bytes shown of a {n}-byte reply)", e.reply.as_deref().map_or(0, str::len)),
        (true, None) => "… (truncated)".into(),
        _ => String::new(),
    }
}

fn reply_items(r: &RedisFacts) -> Vec<(String, serde_json::Value)> {
    r.exchanges
        .iter()
        .map(|e| {
            let t = match (&e.reply, &e.error) {
                (Some(rep), _) => format!("{} → {}{} ({})", e.command, rep, cut_note(e), e.elapsed_us),
                (None, Some(err)) => format!("{} → no reply: {err}", e.command),
                (None, None) => format!("{} → no reply", e.command),
            };
            (t, json!(e))
        })
        .collect()
}

fn redis(where_: &str, p: &ProtocolProbe, r: &RedisFacts, out: &mut Findings) {
    let replies = reply_items(r);
    let with_replies = |mut f: Finding| {
        for (t, d) in &replies {
            f = f.evidence("redis-reply", t.clone(), d.clone());
        }
        f
    };
    let closed = if r.closed_by_server { ", then closed the connection" } else { "" };
    if let Some(e) = &r.first_error {
        let f = if e.code == "DENIED" {
            Some(
                with_replies(Finding::critical(
                    Cause::RedisProtectedMode,
                    if p.address.is_loopback() {
                        // Then the server did not see our loopback address: something between
                        // (a proxy, a port forward, docker-proxy) connected from another one.
                        format!("Redis at {where_} is in protected mode: it answered -DENIED{closed} (no password is set, and although this client dialled loopback the server saw the connection come from a non-loopback address — a proxy or port forward in between)")
                    } else {
                        format!("Redis at {where_} is in protected mode: it answered -DENIED{closed} (no password is set and the client is not on loopback)")
                    },
                ))
                .fix("Set a password: `requirepass <secret>` (or an ACL user) in redis.conf, restart, and give it to clients")
                .fix("Or, on a trusted network only: bind the interface clients use and run `redis-cli CONFIG SET protected-mode no` from the server's loopback"),
            )
        } else if e.code == "NOAUTH" {
            Some(
                with_replies(Finding::critical(
                    Cause::RedisAuthRequired,
                    format!("Redis at {where_} requires a password and none was given (-NOAUTH)"),
                ))
                .fix("Give the password: redis://:PASSWORD@host, --password-file FILE, or REDISCLI_AUTH"),
            )
        } else if e.is_auth_failure() {
            let who = r.auth_user.as_deref().unwrap_or("default");
            Some(
                with_replies(Finding::critical(
                    Cause::RedisAuthFailed,
                    format!("Redis at {where_} rejected the password for user {who:?}: -{}", e.text),
                ))
                .fix(format!("Check the password (and that the ACL user {who:?} exists and is `on`): ACL LIST / redis.conf requirepass"))
                .fix("The password itself is never shown by conndoc; compare it at the source you took it from"),
            )
        } else if e.is_max_clients() {
            let mut f = with_replies(Finding::critical(
                Cause::RedisMaxClients,
                format!("Redis at {where_} refused the client: -{}{closed}", e.text),
            ));
            match r.info.as_ref().and_then(|i| Some((i.maxclients?, i.connected_clients?))) {
                Some((m, c)) => {
                    f = f.evidence("redis-info", format!("maxclients {m}, connected_clients {c}"), json!({"maxclients": m, "connected_clients": c}))
                }
                None => f = f.partial("INFO could not be read: the server closed this connection; maxclients and connected_clients are unknown"),
            }
            Some(
                f.fix("Find who holds the connections: `redis-cli CLIENT LIST` from a client already connected (or from loopback)")
                    .fix("Raise `maxclients` (and the fd limit with it) or fix the client that leaks connections"),
            )
        } else if e.code == "LOADING" {
            let mut f = with_replies(Finding::critical(
                Cause::RedisLoading,
                format!("Redis at {where_} is loading its dataset into memory and refuses commands (-LOADING)"),
            ));
            if let Some(info) = &r.info {
                let o = &info.other;
                if let (Some(p), Some(eta)) = (o.get("loading_loaded_perc"), o.get("loading_eta_seconds")) {
                    f = f.evidence(
                        "redis-info",
                        format!("INFO persistence: loading {p}% done, about {eta}s left"),
                        json!({"loading_loaded_perc": p, "loading_eta_seconds": eta, "loading_total_bytes": o.get("loading_total_bytes")}),
                    );
                }
            }
            Some(f.fix("Wait until loading finishes (INFO persistence: loading:0); clients should retry on -LOADING"))
        } else if r.select_error.as_deref() == Some(e.text.as_str()) {
            let n = r.db.unwrap_or(0);
            let mut f = with_replies(Finding::critical(
                Cause::RedisSelectFailed,
                format!("Redis at {where_} refused database {n} from the URL: SELECT {n} → -{}", e.text),
            ));
            let databases = r.config.get("databases");
            if let Some(d) = databases {
                f = f.evidence("redis-config", format!("CONFIG GET databases → {d}"), json!({"databases": d}));
            }
            if e.text.contains("cluster mode") {
                f = f.fix("Redis Cluster has only database 0: drop the /N from the URL (and SELECT from the client)");
            } else {
                let below = databases
                    .map(|d| format!(" (databases is {d}: 0 to {})", d.parse::<u32>().unwrap_or(1).saturating_sub(1)))
                    .unwrap_or_default();
                f = f
                    .fix(format!("Use a database the server has{below}: fix the /N in the client's URL"))
                    .fix("Or raise `databases` in redis.conf and restart Redis");
            }
            Some(f)
        } else {
            None
        };
        if let Some(f) = f {
            out.push(f);
            return;
        }
    }
    if !r.pong {
        let why = p.error.clone().unwrap_or_else(|| "PING was not answered with PONG".into());
        let mut f = Finding::critical(
            Cause::Unknown,
            format!("Redis at {where_} accepted the connection but did not answer PING: {why}"),
        );
        for (t, d) in &replies {
            f = f.evidence("redis-reply", t.clone(), d.clone());
        }
        out.push(f.fix("Read the Redis log; check that the port serves Redis (and whether it expects TLS)."));
        return;
    }
    // Healthy: keep the reply as the `ok` evidence (with the SELECT of the URL's database),
    // then the warnings.
    let ping = r.exchanges.iter().find(|e| e.command == "PING");
    if let Some(pe) = ping {
        let in_db = r.db.map(|n| format!(" (database {n})")).unwrap_or_default();
        let mut f = Finding::new(
            Cause::Ok,
            crate::Severity::Info,
            format!("Redis at {where_} answered PING with PONG in {}{in_db}", pe.elapsed_us),
        );
        for e in r.exchanges.iter().filter(|e| e.command.starts_with("SELECT ") || e.command == "PING") {
            f = f.evidence(
                "redis-reply",
                format!("{} → {}{} ({})", e.command, e.reply.as_deref().unwrap_or(""), cut_note(e), e.elapsed_us),
                json!(e),
            );
        }
        out.push(f);
    }
    let bind = r.config.get("bind");
    let all_interfaces = bind.is_some_and(|b| {
        b.is_empty()
            || b.split_whitespace().any(|a| matches!(a.trim_start_matches('-'), "*" | "0.0.0.0" | "::" | "::*"))
    });
    // Redis 6+ answers AUTH on a server without a password with this error, then serves anyway.
    let auth_unneeded = r.first_error.as_ref().filter(|e| e.text.contains("without any password configured"));
    if !r.auth_sent || auth_unneeded.is_some() {
        let (text, data) = match auth_unneeded {
            Some(e) => (format!("AUTH <redacted> → -{}", e.text), json!({"auth_sent": true, "reply": e.text})),
            None => ("PING → PONG without AUTH".to_string(), json!({"auth_sent": false})),
        };
        out.push(
            Finding::warning(Cause::RedisNoPassword, format!("Redis at {where_} answers without a password"))
                .evidence("redis-reply", text, data)
                .fix("Set `requirepass` (or ACL users) so only clients with the secret can read and write"),
        );
        if all_interfaces {
            let b = bind.cloned().unwrap_or_default();
            out.push(
                Finding::warning(
                    Cause::RedisBoundToAllInterfaces,
                    format!("Redis at {where_} listens on every interface (bind {b:?}) and needs no password"),
                )
                .evidence("redis-config", format!("CONFIG GET bind → {b:?}"), json!({"bind": b}))
                .fix("Bind only the addresses clients use (`bind 127.0.0.1 10.0.0.5`) or set a password"),
            );
        }
    }
    if let Some(info) = &r.info {
        if let Some(n) = info.rejected_connections.filter(|n| *n > 0) {
            let rising = info.rejected_connections_after.filter(|a| *a > n);
            let text = match rising {
                Some(a) => format!("rejected_connections rose from {n} to {a} during the probe"),
                None => format!("rejected_connections is {n} since the server started"),
            };
            let mut f = Finding::warning(
                Cause::RedisRejectedConnections,
                format!("Redis at {where_} has turned clients away: {text}"),
            )
            .evidence(
                "redis-info",
                format!(
                    "{text}; maxclients {}, connected_clients {}",
                    info.maxclients.map(|m| m.to_string()).unwrap_or("?".into()),
                    info.connected_clients.map(|m| m.to_string()).unwrap_or("?".into())
                ),
                json!({"rejected_connections": n, "rejected_connections_after": info.rejected_connections_after,
                       "maxclients": info.maxclients, "connected_clients": info.connected_clients}),
            )
            .fix("Raise maxclients (with the fd limit), or find the client holding too many connections (CLIENT LIST)");
            if rising.is_none() {
                f = f.partial("the counter did not rise during the probe; the rejections may be old");
            }
            out.push(f);
        }
    }
}

/// The redis.conf lint: its problems become evidence (and warnings) of the diagnosis.
fn lint_findings(ev: &Evidence, out: &mut Findings) {
    let Some(l) = ev.protocol.as_ref().and_then(|p| p.redis_conf.as_ref()) else { return };
    if !matches!(ev.target.scheme, Scheme::Redis | Scheme::Rediss | Scheme::Tcp) {
        return;
    }
    for pr in &l.problems {
        let at = if pr.line == 0 {
            format!("{} ({} not set)", pr.file, pr.directive)
        } else {
            format!("{}:{}", pr.file, pr.line)
        };
        let text = format!("{at}: {} (fix: {})", pr.message, pr.fix);
        let data = json!(pr);
        // Attach to the verdict finding this line explains, else raise it as a warning.
        let target = match pr.code.as_str() {
            "protected-mode-blocks-remote" => Some(Cause::RedisProtectedMode),
            "maxclients-above-fd-limit" => Some(Cause::RedisMaxClients),
            _ => None,
        };
        if let Some(f) = target.and_then(|c| out.get_mut(c)) {
            f.evidence.push(crate::EvidenceItem { kind: "redis-conf".into(), text, data });
            if !f.remediation.contains(&pr.fix) {
                f.remediation.push(pr.fix.clone());
            }
            continue;
        }
        let (cause, summary) = match pr.code.as_str() {
            "no-password" | "open-to-network" | "protected-mode-blocks-remote" => {
                (Cause::RedisNoPassword, "redis.conf sets no password")
            }
            "bind-all-interfaces" => (Cause::RedisBoundToAllInterfaces, "redis.conf binds every interface"),
            "maxclients-above-fd-limit" => (Cause::LowNofileLimit, "redis.conf maxclients is above the fd limit"),
            "tcp-backlog-above-somaxconn" => (Cause::LowSomaxconn, "redis.conf tcp-backlog is above somaxconn"),
            _ => continue,
        };
        out.push(Finding::warning(cause, summary).evidence("redis-conf", text, data).fix(pr.fix.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose, fixture, Severity};
    use conndoc_facts::protocol::*;
    use conndoc_facts::{Evidence, Micros};

    /// Evidence as `--evidence-out` writes it: one connected probe and the protocol facts.
    fn evidence(target: &str, pf: ProtocolFacts) -> Evidence {
        let mut ev = fixture::evidence(target);
        let mut p = fixture::connect("10.77.0.2", ev.target.port.get(), conndoc_facts::ConnectKind::Connected);
        p.elapsed_us = Micros(80);
        ev.resolution.literal = true;
        ev.resolution.system.addresses = vec![conndoc_facts::resolve::ResolvedAddr {
            address: p.address,
            source: conndoc_facts::resolve::AddrSource::Literal,
        }];
        ev.probes = vec![p];
        ev.protocol = Some(pf);
        ev
    }

    fn probe(kind: ProtocolKind) -> ProtocolProbe {
        ProtocolProbe {
            address: "10.77.0.2".parse().unwrap(),
            port: conndoc_facts::Port::new(6379).unwrap(),
            kind,
            tls_requested: false,
            connect_us: Some(Micros(90)),
            tls: None,
            redis: None,
            http: None,
            tls_mismatch: None,
            error: None,
        }
    }

    fn ex(cmd: &str, reply: Option<&str>) -> Exchange {
        Exchange {
            command: cmd.into(),
            reply: reply.map(str::to_string),
            elapsed_us: Micros(120),
            ..Default::default()
        }
    }

    fn redis_with(first: &str, closed: bool) -> ProtocolFacts {
        let mut p = probe(ProtocolKind::Redis);
        p.redis = Some(RedisFacts {
            exchanges: vec![ex("PING", Some(first)), ex("INFO server clients stats", None)],
            first_error: Some(RedisError::parse(first)),
            closed_by_server: closed,
            ..Default::default()
        });
        ProtocolFacts { probes: vec![p], ..Default::default() }
    }

    const DENIED: &str = "-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface.";

    #[test]
    fn protected_mode_even_when_closed() {
        let r = diagnose(&evidence("redis://10.77.0.2", redis_with(DENIED, true)));
        assert_eq!(r.verdict.cause, Cause::RedisProtectedMode);
        let f = r.finding(Cause::RedisProtectedMode).unwrap();
        assert!(f.summary.contains("closed the connection"));
        assert!(f.evidence.iter().any(|e| e.kind == "redis-reply" && e.text.contains("-DENIED Redis is running")));
    }

    #[test]
    fn denied_over_loopback_does_not_blame_the_client_address() {
        let mut pf = redis_with(DENIED, true);
        pf.probes[0].address = "127.0.0.1".parse().unwrap();
        let r = diagnose(&evidence("redis://127.0.0.1", pf));
        let f = r.finding(Cause::RedisProtectedMode).unwrap();
        assert!(!f.summary.contains("not on loopback"), "{}", f.summary);
        assert!(f.summary.contains("proxy or port forward"), "{}", f.summary);
        let r = diagnose(&evidence("redis://10.77.0.2", redis_with(DENIED, true)));
        assert!(r.finding(Cause::RedisProtectedMode).unwrap().summary.contains("not on loopback"));
    }

    #[test]
    fn auth_required_failed_maxclients_loading() {
        for (reply, cause) in [
            ("-NOAUTH Authentication required.", Cause::RedisAuthRequired),
            ("-WRONGPASS invalid username-password pair or user is disabled.", Cause::RedisAuthFailed),
            ("-ERR invalid password", Cause::RedisAuthFailed),
            ("-ERR max number of clients reached", Cause::RedisMaxClients),
            ("-LOADING Redis is loading the dataset in memory", Cause::RedisLoading),
        ] {
            let r = diagnose(&evidence("redis://10.77.0.2", redis_with(reply, false)));
            assert_eq!(r.verdict.cause, cause, "{reply}");
            assert!(r.finding(cause).unwrap().evidence.iter().any(|e| e.text.contains(reply)), "{reply}");
        }
        let r = diagnose(&evidence("redis://10.77.0.2", redis_with("-ERR max number of clients reached", true)));
        assert!(r.finding(Cause::RedisMaxClients).unwrap().partial.is_some());
    }

    /// Evidence recorded with `--evidence-out` from a real redis-server 7.0 restarted on a
    /// 285 MB RDB (see docs/protocols.md): a LOADING state cannot be held still for a lab.
    #[test]
    fn recorded_loading_evidence() {
        let json = include_str!("../../../proto/tests/fixtures/redis-loading.evidence.json");
        let ev: Evidence = serde_json::from_str(json).unwrap();
        let r = diagnose(&ev);
        assert_eq!(r.verdict.cause, Cause::RedisLoading);
        let f = r.finding(Cause::RedisLoading).unwrap();
        assert!(f.evidence.iter().any(|e| e.text.contains("-LOADING Redis is loading the dataset in memory")));
        assert!(f.evidence.iter().any(|e| e.kind == "redis-info" && e.text.contains("0.73%")), "{f:?}");
    }

    #[test]
    fn healthy_with_warnings() {
        let mut pf = redis_with("+PONG", false);
        let r = pf.probes[0].redis.as_mut().unwrap();
        r.first_error = None;
        r.pong = true;
        r.exchanges[0].reply = Some("PONG".into());
        r.config.insert("bind".into(), "* -::*".into());
        r.info = Some(RedisInfo {
            rejected_connections: Some(3),
            rejected_connections_after: Some(5),
            maxclients: Some(1),
            connected_clients: Some(1),
            ..Default::default()
        });
        let rep = diagnose(&evidence("redis://10.77.0.2", pf));
        assert_eq!(rep.verdict.cause, Cause::Ok);
        for c in [Cause::RedisNoPassword, Cause::RedisBoundToAllInterfaces, Cause::RedisRejectedConnections] {
            assert_eq!(rep.finding(c).unwrap().severity, Severity::Warning, "{c}");
        }
        assert!(rep.finding(Cause::RedisRejectedConnections).unwrap().summary.contains("rose from 3 to 5"));
        assert!(rep.finding(Cause::Ok).unwrap().evidence[0].text.contains("PONG"));
    }

    #[test]
    fn tls_mismatch_both_ways() {
        let mut pf = redis_with("", false);
        pf.probes[0].redis = None;
        pf.probes[0].tls_mismatch = Some(TlsMismatch {
            direction: MismatchDirection::PlaintextToTls,
            observed: "plaintext got no answer before the server closed; a TLS handshake on the same port was answered (TLSv1_3)".into(),
        });
        let r = diagnose(&evidence("redis://10.77.0.2", pf.clone()));
        assert_eq!(r.verdict.cause, Cause::TlsRequired);
        assert!(r.finding(Cause::TlsRequired).unwrap().remediation[0].contains("rediss://"));
        pf.probes[0].tls_mismatch.as_mut().unwrap().direction = MismatchDirection::TlsToPlaintext;
        pf.probes[0].tls = Some(TlsFacts { failure: Some(TlsFailure::NotTls), ..Default::default() });
        let r = diagnose(&evidence("rediss://10.77.0.2", pf));
        assert_eq!(r.verdict.cause, Cause::TlsRequired);
        assert!(r.verdict.summary.contains("plaintext Redis"));
    }

    fn tls_failure(f: TlsFailure, days: i64) -> ProtocolFacts {
        let mut p = probe(ProtocolKind::Http);
        p.tls_requested = true;
        p.tls = Some(TlsFacts {
            ok: f == TlsFailure::Other && days > 0,
            server_name: "api.lab".into(),
            failure: (days <= 0 || f != TlsFailure::Other).then_some(f),
            error: Some("invalid peer certificate".into()),
            chain: vec![CertFacts {
                subject: "CN=api.lab".into(),
                issuer: "CN=Lab CA".into(),
                sans: vec!["DNS:other.lab".into()],
                not_before: "2020-01-01T00:00:00Z".into(),
                not_after: "2020-02-01T00:00:00Z".into(),
                expires_in_days: days,
                ..Default::default()
            }],
            ..Default::default()
        });
        ProtocolFacts { probes: vec![p], ..Default::default() }
    }

    #[test]
    fn tls_handshake_reasons() {
        for (f, word) in [
            (TlsFailure::Expired, "expired"),
            (TlsFailure::NameMismatch, "does not name"),
            (TlsFailure::UnknownIssuer, "does not trust"),
            (TlsFailure::ProtocolVersion, "protocol version"),
        ] {
            let r = diagnose(&evidence("https://api.lab", tls_failure(f, -5)));
            assert_eq!(r.verdict.cause, Cause::TlsHandshakeFailed);
            assert!(r.verdict.summary.contains(word), "{}", r.verdict.summary);
            let fi = r.finding(Cause::TlsHandshakeFailed).unwrap();
            assert!(fi.evidence.iter().any(|e| e.kind == "certificate" && e.text.contains("CN=Lab CA")));
        }
        let r = diagnose(&evidence("https://api.lab", tls_failure(TlsFailure::Other, 3)));
        assert_eq!(r.verdict.cause, Cause::Ok);
        assert!(r.finding(Cause::CertificateExpiresSoon).is_some());
    }

    #[test]
    fn gateway_502() {
        let mut p = probe(ProtocolKind::Http);
        p.http = Some(HttpFacts {
            status_line: Some("HTTP/1.1 502 Bad Gateway".into()),
            status: Some(502),
            server: Some("nginx/1.22.1".into()),
            ..Default::default()
        });
        let r = diagnose(&evidence(
            "http://10.77.0.2:8080/",
            ProtocolFacts { probes: vec![p.clone()], ..Default::default() },
        ));
        assert_eq!(r.verdict.cause, Cause::HttpError);
        let f = r.finding(Cause::HttpError).unwrap();
        assert!(f.evidence.iter().any(|e| e.kind == "gateway-hint" && e.text.contains("upstream")));
        assert!(f.evidence.iter().any(|e| e.text.contains("Server: nginx/1.22.1")));
        // With the gateway's own log line (host inspected), the summary names the upstream.
        let mut pf = ProtocolFacts { probes: vec![p.clone()], ..Default::default() };
        pf.gateway = GatewayFacts::parse_nginx_line(
            r#"2026/11/21 04:50:00 [error] 77#77: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 10.77.6.1, server: , request: "GET / HTTP/1.1", upstream: "http://127.0.0.1:9000/", host: "api.lab:8080""#,
        );
        pf.gateway.as_mut().unwrap().upstream_on_inspected_host = Some(true);
        let r = diagnose(&evidence("http://10.77.0.2:8080/", pf));
        assert!(
            r.verdict
                .summary
                .contains("upstream http://127.0.0.1:9000/, on the inspected host itself (111: Connection refused)"),
            "{}",
            r.verdict.summary
        );
        assert!(r.finding(Cause::HttpError).unwrap().remediation.iter().any(|x| x.contains("port 9000")));
        p.http.as_mut().unwrap().status = Some(200);
        p.http.as_mut().unwrap().status_line = Some("HTTP/1.1 200 OK".into());
        let r = diagnose(&evidence("http://10.77.0.2:8080/", ProtocolFacts { probes: vec![p], ..Default::default() }));
        assert_eq!(r.verdict.cause, Cause::Ok);
    }

    #[test]
    fn lint_problems_join_the_verdict() {
        let mut pf = redis_with(DENIED, true);
        pf.redis_conf = Some(LintReport {
            path: "/etc/redis/redis.conf".into(),
            files: vec!["/etc/redis/redis.conf".into()],
            problems: vec![LintProblem {
                code: "protected-mode-blocks-remote".into(),
                file: "/etc/redis/redis.conf".into(),
                line: 3,
                directive: "protected-mode".into(),
                message: "no password is set".into(),
                fix: "Set a password".into(),
            }],
            ..Default::default()
        });
        let r = diagnose(&evidence("redis://10.77.0.2", pf));
        let f = r.finding(Cause::RedisProtectedMode).unwrap();
        assert!(f.evidence.iter().any(|e| e.kind == "redis-conf" && e.text.starts_with("/etc/redis/redis.conf:3:")));
    }
}
