//! The cause catalogue (docs/causes.md). Codes are a public contract: never rename or reuse.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! causes {
    ($( $variant:ident = $code:literal, $rank:literal; )*) => {
        /// A cause code from the catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Cause { $( $variant, )* }

        impl Cause {
            pub const ALL: &'static [Cause] = &[ $( Cause::$variant, )* ];
            pub fn code(self) -> &'static str {
                match self { $( Cause::$variant => $code, )* }
            }
            /// Lower ranks explain higher ones: when several critical findings hold, the
            /// lowest rank is the root cause (causes.md, "When several causes hold").
            pub fn rank(self) -> u8 {
                match self { $( Cause::$variant => $rank, )* }
            }
            pub fn from_code(code: &str) -> Option<Cause> {
                match code { $( $code => Some(Cause::$variant), )* _ => None }
            }
        }
    };
}

// Rank bands: 0-9 name resolution, 10-19 client host, 20-39 target host configuration
// (evidence from the target host outranks client-side inference), 40-49 policy,
// 50-59 capacity, 60-69 protocol, 70-79 path, 80-89 bare client-side symptoms, 99 unknown.
causes! {
    Ok = "ok", 0;
    DnsNoAddress = "dns-no-address", 1;
    DnsServerUnreachable = "dns-server-unreachable", 2;
    DnsHostsOverride = "dns-hosts-override", 3;
    EphemeralPortExhaustion = "ephemeral-port-exhaustion", 10;
    NetworkUnreachable = "network-unreachable", 11;
    SelinuxDenied = "selinux-denied", 20;
    PortInUse = "port-in-use", 21;
    ProcessNotRunning = "process-not-running", 22;
    ContainerNotRunning = "container-not-running", 22;
    ContainerPortNotPublished = "container-port-not-published", 23;
    ContainerBoundToLoopback = "container-bound-to-loopback", 24;
    BoundToLoopback = "bound-to-loopback", 25;
    BoundToOtherAddress = "bound-to-other-address", 26;
    AddressFamilyMismatch = "address-family-mismatch", 27;
    WrongPort = "wrong-port", 28;
    FdExhaustion = "fd-exhaustion", 30;
    // Outranks firewall-reject/-drop: kube-proxy's rule is the symptom of the empty Service.
    ServiceNoEndpoints = "service-no-endpoints", 39;
    // Some of a Service's endpoints fail: a warning that is the verdict when nothing is
    // critical (a connect that reached a good endpoint is not `ok`).
    ServiceEndpointFailing = "service-endpoint-failing", 38;
    FirewallReject = "firewall-reject", 40;
    FirewallDrop = "firewall-drop", 41;
    MiddleboxReset = "middlebox-reset", 42;
    AcceptQueueOverflow = "accept-queue-overflow", 50;
    SynBacklogOverflow = "syn-backlog-overflow", 51;
    RedisProtectedMode = "redis-protected-mode", 60;
    RedisAuthRequired = "redis-auth-required", 61;
    RedisAuthFailed = "redis-auth-failed", 62;
    RedisMaxClients = "redis-max-clients", 63;
    RedisLoading = "redis-loading", 64;
    TlsRequired = "tls-required", 65;
    TlsHandshakeFailed = "tls-handshake-failed", 66;
    HttpError = "http-error", 67;
    RedisSelectFailed = "redis-select-failed", 68;
    HostUnreachable = "host-unreachable", 70;
    PathDrop = "path-drop", 71;
    NoListener = "no-listener", 80;
    AcceptedThenClosed = "accepted-then-closed", 82;
    ConnectTimeout = "connect-timeout", 85;
    Unknown = "unknown", 99;
    // Secondary findings: warnings, never a verdict on their own.
    TimeWaitPileup = "time-wait-pileup", 100;
    LowSomaxconn = "low-somaxconn", 101;
    LowNofileLimit = "low-nofile-limit", 102;
    ListenerBacklogBelowSomaxconn = "listener-backlog-below-somaxconn", 103;
    RedisNoPassword = "redis-no-password", 104;
    RedisBoundToAllInterfaces = "redis-bound-to-all-interfaces", 105;
    RedisRejectedConnections = "redis-rejected-connections", 106;
    CertificateExpiresSoon = "certificate-expires-soon", 107;
}

impl Cause {
    /// A warning that is still the verdict (exit 1) when no finding is critical: the
    /// target is reachable but not healthy (report.md: `ok` is reachable AND healthy).
    pub fn fails_when_warning(self) -> bool {
        matches!(self, Cause::ServiceEndpointFailing)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Cause {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cause::from_code(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown cause code {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in Cause::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(Cause::from_code(c.code()), Some(*c));
            let j = serde_json::to_string(c).unwrap();
            assert_eq!(serde_json::from_str::<Cause>(&j).unwrap(), *c);
        }
    }

    /// Every code in the catalogue document is known to the code, and the reverse.
    #[test]
    fn catalogue_doc_lists_every_code() {
        let doc = include_str!("../../../docs/causes.md");
        for c in Cause::ALL {
            assert!(doc.contains(&format!("`{}`", c.code())), "docs/causes.md lacks `{}`", c.code());
        }
    }
}
