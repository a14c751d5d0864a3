//! TLS client setup (rustls with the `ring` provider), certificate chain facts, and the
//! classification of handshake failures in the catalogue's words.

use conndoc_facts::protocol::{CertFacts, TlsFacts, TlsFailure};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{error}")]
    ReadCa { path: String, error: conndoc_files::ReadError },
    #[error("CA file {0} holds no PEM certificate")]
    EmptyCa(String),
    #[error("CA file {path}: certificate rejected: {reason}")]
    BadCa { path: String, reason: String },
    #[error("invalid TLS server name {0:?}")]
    BadName(String),
}

/// Trust anchors and options for every TLS connection of one diagnosis.
pub struct TlsSetup {
    roots: Arc<RootCertStore>,
    server_name: ServerName<'static>,
    pub insecure: bool,
    pub ca_file: Option<String>,
}

/// The chain the server presented, recorded by the verifier even when it rejects it.
pub type Recorder = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// The trust anchors of a `--ca` PEM file. A file that cannot be used (missing, a device,
/// too large, no certificate, a certificate rustls rejects) is an error, never an empty
/// store: a bad CA file is bad input, not a reason to skip the check.
pub fn load_ca(p: &Path) -> Result<RootCertStore, TlsSetupError> {
    let path = p.display().to_string();
    let data = conndoc_files::read(p, conndoc_files::limit::CA)
        .map_err(|error| TlsSetupError::ReadCa { path: path.clone(), error })?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&data) {
        let c = c.map_err(|e| TlsSetupError::BadCa { path: path.clone(), reason: pem_reason(&e) })?;
        roots.add(c).map_err(|e| TlsSetupError::BadCa { path: path.clone(), reason: e.to_string() })?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::EmptyCa(path));
    }
    Ok(roots)
}

/// A PEM error in words: the library's `Display` prints markers and lines as byte arrays.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let text = |b: &[u8]| {
        let t: String = String::from_utf8_lossy(b).chars().take(80).collect();
        t.escape_debug().to_string()
    };
    match e {
        Error::MissingSectionEnd { end_marker } => {
            format!("a PEM section never ends (no \"-----END {}-----\" line)", text(end_marker))
        }
        Error::IllegalSectionStart { line } => format!("malformed PEM section start \"{}\"", text(line)),
        Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        other => other.to_string(),
    }
}

impl TlsSetup {
    /// `host` is what the user dialled (a name or an address); `ca_file` replaces the system
    /// trust store; `insecure` accepts any chain (its facts are still recorded).
    pub fn new(host: &str, ca_file: Option<&Path>, insecure: bool) -> Result<TlsSetup, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(p) => roots = load_ca(p)?,
            None if !insecure => {
                // Certificates the system store cannot parse are skipped, as browsers do.
                let found = rustls_native_certs::load_native_certs();
                let _ = roots.add_parsable_certificates(found.certs);
            }
            None => {}
        }
        let server_name = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(|_| TlsSetupError::BadName(host.into()))?,
        };
        Ok(TlsSetup {
            roots: Arc::new(roots),
            server_name,
            insecure,
            ca_file: ca_file.map(|p| p.display().to_string()),
        })
    }

    pub fn server_name_text(&self) -> String {
        match &self.server_name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        }
    }

    /// A fresh client connection with its own chain recorder.
    pub fn connection(&self) -> Result<(rustls::ClientConnection, Recorder), String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = if self.roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| format!("TLS verifier: {e}"))?,
            )
        };
        let recorder: Recorder = Arc::default();
        let verifier = Arc::new(RecordingVerifier {
            inner,
            insecure: self.insecure,
            chain: recorder.clone(),
            provider: provider.clone(),
        });
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS config: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), self.server_name.clone())
            .map_err(|e| format!("TLS client: {e}"))?;
        Ok((conn, recorder))
    }
}

#[derive(Debug)]
struct RecordingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    insecure: bool,
    chain: Recorder,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Ok(mut c) = self.chain.lock() {
            c.clear();
            c.push(end_entity.clone().into_owned());
            c.extend(intermediates.iter().map(|i| i.clone().into_owned()));
        }
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The handshake's facts: result, negotiated parameters, chain, and the failure reason.
pub fn facts(
    setup: &TlsSetup,
    conn: &rustls::ClientConnection,
    recorder: &Recorder,
    err: Option<&std::io::Error>,
    elapsed: Duration,
) -> TlsFacts {
    let now = unix_now();
    let chain = recorder.lock().map(|c| c.iter().filter_map(|d| cert_facts(d, now)).collect()).unwrap_or_default();
    let (failure, error) = match err {
        None => (None, None),
        Some(e) => {
            let (f, t) = classify(e);
            (Some(f), Some(t))
        }
    };
    TlsFacts {
        ok: err.is_none(),
        server_name: setup.server_name_text(),
        insecure: setup.insecure,
        ca_file: setup.ca_file.clone(),
        handshake_us: Some(conndoc_facts::Micros::from_duration(elapsed)),
        version: conn.protocol_version().map(|v| format!("{v:?}")),
        cipher: conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())),
        failure,
        error,
        chain,
    }
}

/// Name a handshake failure; the text is the library's own wording.
pub fn classify(e: &std::io::Error) -> (TlsFailure, String) {
    use std::io::ErrorKind as K;
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        let mut text = tls.to_string();
        if text.contains("CaUsedAsEndEntity") {
            text += " (the server presents a CA certificate as its own certificate, e.g. made with \
                     `openssl req -x509`; issue a leaf certificate signed by that CA instead)";
        }
        return (classify_tls(tls), text);
    }
    let f = match e.kind() {
        K::TimedOut | K::WouldBlock => TlsFailure::Timeout,
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => TlsFailure::Closed,
        _ => TlsFailure::Other,
    };
    let text = match e.kind() {
        K::UnexpectedEof => "the server closed the connection during the handshake".to_string(),
        _ => e.to_string(),
    };
    (f, text)
}

pub fn classify_tls(e: &Error) -> TlsFailure {
    use rustls::AlertDescription as A;
    match e {
        Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => TlsFailure::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => TlsFailure::NotYetValid,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            _ => TlsFailure::Other,
        },
        Error::AlertReceived(A::ProtocolVersion) => TlsFailure::ProtocolVersion,
        Error::PeerIncompatible(p) => {
            let s = format!("{p:?}");
            if s.contains("Tls12") || s.contains("Version") {
                TlsFailure::ProtocolVersion
            } else {
                TlsFailure::Other
            }
        }
        Error::InvalidMessage(_) => TlsFailure::NotTls,
        _ => TlsFailure::Other,
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Parse one DER certificate; `now` is the probe time in Unix seconds.
pub fn cert_facts(der: &[u8], now: i64) -> Option<CertFacts> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b).ok().map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    };
                    sans.push(format!("IP:{}", ip.unwrap_or_else(|| crate::resp::escape(b))));
                }
                GeneralName::RFC822Name(e) => sans.push(format!("email:{e}")),
                GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    Some(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: rfc3339(nb),
        not_after: rfc3339(na),
        not_before_unix: nb,
        not_after_unix: na,
        expires_in_days: (na - now).div_euclid(86_400),
        self_signed: cert.subject() == cert.issuer(),
        serial: cert.raw_serial_as_string(),
    })
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    if m <= 2 {
        y += 1;
    }
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn classify_certificate_errors() {
        let c = |e| classify_tls(&Error::InvalidCertificate(e));
        assert_eq!(c(CertificateError::Expired), TlsFailure::Expired);
        assert_eq!(c(CertificateError::NotValidYet), TlsFailure::NotYetValid);
        assert_eq!(c(CertificateError::NotValidForName), TlsFailure::NameMismatch);
        assert_eq!(c(CertificateError::UnknownIssuer), TlsFailure::UnknownIssuer);
        assert_eq!(
            classify_tls(&Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)),
            TlsFailure::ProtocolVersion
        );
        let io =
            std::io::Error::new(std::io::ErrorKind::InvalidData, Error::InvalidCertificate(CertificateError::Expired));
        assert_eq!(classify(&io).0, TlsFailure::Expired);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&eof).0, TlsFailure::Closed);
    }

    #[test]
    fn bad_ca_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("conndoc-proto-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        assert!(matches!(TlsSetup::new("h", Some(&f), false), Err(TlsSetupError::EmptyCa(_))));
        assert!(matches!(TlsSetup::new("h", Some(&dir.join("missing.pem")), false), Err(TlsSetupError::ReadCa { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
