//! The TLS step: a rustls handshake over an open connection, its failures classified into
//! `tls` (or the I/O cause) in phase `tls_handshake`, and the facts of the certificate chain.
//!
//! The handshake runs in "inspect" mode: a verifier wraps the normal webpki one, records its
//! verdict and the presented chain, and lets the handshake finish either way. So an expired,
//! misnamed or self-signed certificate is reported with its subject, issuer, names and dates,
//! and still counts as the `tls` failure it is; the connection is never used after a bad verdict.
//!
//! Only this file looks at rustls errors. What HTTP does over the stream is in `probe.rs`.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cause::{Cause, Failure, Phase};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How to set up TLS with a server.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Trusted in addition to the built-in public roots (a private CA, a test CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Deadline of the whole handshake.
    pub timeout: Duration,
}

/// What the handshake showed: the negotiated parameters, the chain and the verdict on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsFacts {
    /// `TLSv1.3`, `TLSv1.2`; absent when the handshake did not finish.
    pub version: Option<String>,
    pub alpn: Option<String>,
    pub cipher: Option<String>,
    /// The presented chain, end-entity certificate first.
    pub chain: Vec<CertFacts>,
    /// The certificate problem, when verification failed.
    pub problem: Option<CertProblem>,
}

/// What is wrong with a presented certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertProblem {
    /// Stable name: `expired`, `not_yet_valid`, `wrong_name`, `self_signed`, `unknown_issuer`,
    /// `revoked`, `invalid`.
    pub kind: &'static str,
    /// Plain words.
    pub detail: String,
}

/// The facts of one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses the certificate is valid for.
    pub names: Vec<String>,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: i64,
}

/// Reads PEM certificates (a CA bundle) to trust in addition to the public roots.
pub fn load_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if c.is_empty() => Err("no PEM certificate found".to_string()),
        Ok(c) => Ok(c),
        Err(e) => Err(format!("unreadable PEM: {e}")),
    }
}

/// Performs the TLS handshake with `server_name` (a host name or an IP address) over `io`.
///
/// On success the stream is ready for HTTP and the facts carry a clean verdict. On failure the
/// facts are returned when the server got as far as presenting a certificate.
pub async fn handshake<IO>(
    io: IO,
    server_name: &str,
    opts: &TlsOptions,
) -> Result<(TlsStream<IO>, TlsFacts), (Failure, TlsFacts)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = match ServerName::try_from(server_name.to_string()) {
        Ok(n) => n,
        Err(_) => {
            return Err((
                Failure::new(Cause::Tls, Phase::TlsHandshake)
                    .with_detail(format!("`{server_name}` is not a valid TLS server name")),
                TlsFacts::default(),
            ))
        }
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let config = match client_config(opts, seen.clone()) {
        Ok(c) => c,
        Err(e) => {
            return Err((
                Failure::new(Cause::Internal, Phase::TlsHandshake).with_detail(e),
                TlsFacts::default(),
            ))
        }
    };
    let connector = TlsConnector::from(Arc::new(config));
    let result = tokio::time::timeout(opts.timeout, connector.connect(name, io)).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut facts = TlsFacts {
        chain: seen.chain.iter().filter_map(|c| cert_facts(c)).collect(),
        ..TlsFacts::default()
    };
    let stream = match result {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err((classify_tls_error(&e), facts)),
        Err(_) => {
            return Err((
                Failure::new(Cause::Timeout, Phase::TlsHandshake)
                    .with_detail(format!("no TLS handshake within {:?}", opts.timeout)),
                facts,
            ))
        }
    };
    let (_, session) = stream.get_ref();
    facts.version = session.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    });
    facts.alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    facts.cipher = session
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    if let Some(err) = seen.verdict {
        let problem = cert_problem(&err, &facts.chain, server_name);
        let failure = Failure::new(Cause::Tls, Phase::TlsHandshake)
            .with_detail(format!("certificate rejected: {}", problem.detail));
        facts.problem = Some(problem);
        return Err((failure, facts));
    }
    Ok((stream, facts))
}

/// A TLS error met after the handshake, in words.
pub(crate) fn tls_words(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            "the upstream wants a client certificate (mutual TLS): set `client_cert` and `client_key`"
                .to_string()
        }
        Some(rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::AccessDenied),
        )) => format!("the upstream refused the gateway's client certificate (TLS alert {alert:?})"),
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the upstream ended TLS with the alert {alert:?}")
        }
        Some(other) => format!("TLS error: {other}"),
        None => e.to_string(),
    }
}

/// Classifies an error of a TLS handshake.
pub fn classify_tls_error(e: &io::Error) -> Failure {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        let detail = match tls {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the server did not answer with TLS: is this a plain HTTP port?".to_string()
            }
            rustls::Error::AlertReceived(alert) => {
                format!("the server refused the handshake with the TLS alert {alert:?}")
            }
            rustls::Error::PeerIncompatible(p) => {
                format!("no TLS version or cipher in common with the server ({p:?})")
            }
            rustls::Error::InvalidCertificate(CertificateError::Other(o))
                if o.0.downcast_ref::<crate::upstream_tls::Refused>().is_some() =>
            {
                format!("certificate rejected: {}", o.0)
            }
            rustls::Error::InvalidCertificate(c) => format!("certificate rejected: {c:?}"),
            other => other.to_string(),
        };
        return Failure::new(Cause::Tls, Phase::TlsHandshake).with_detail(detail);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Failure::new(Cause::Tls, Phase::TlsHandshake).with_detail(
            "the server closed the connection during the TLS handshake: it may not speak TLS on this port",
        ),
        _ => {
            let mut f = crate::classify_connect_error(e);
            f.phase = Phase::TlsHandshake;
            if f.cause == Cause::Refused {
                // An open connection cannot be refused; whatever else broke it is a TLS failure.
                f.cause = Cause::Tls;
            }
            f
        }
    }
}

fn cert_problem(err: &rustls::Error, chain: &[CertFacts], host: &str) -> CertProblem {
    let self_signed = chain.len() == 1 && chain[0].subject == chain[0].issuer;
    let end = chain.first();
    let (kind, detail) = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "expired",
                match end {
                    Some(e) => format!("the certificate expired {} day(s) ago", -e.days_left),
                    None => "the certificate has expired".to_string(),
                },
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "not_yet_valid",
                "the certificate is not valid yet".to_string(),
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                (
                    "wrong_name",
                    match end {
                        Some(e) => format!(
                            "the certificate is for {} but not for {host}",
                            e.names.join(", ")
                        ),
                        None => format!("the certificate does not name {host}"),
                    },
                )
            }
            CertificateError::UnknownIssuer if self_signed => (
                "self_signed",
                "the certificate is self-signed: no trusted authority vouches for it".to_string(),
            ),
            CertificateError::UnknownIssuer => (
                "unknown_issuer",
                "the certificate's issuer is not trusted (a private CA, or an incomplete chain)"
                    .to_string(),
            ),
            CertificateError::Revoked => ("revoked", "the certificate was revoked".to_string()),
            other => ("invalid", format!("{other:?}")),
        },
        other => ("invalid", other.to_string()),
    };
    CertProblem { kind, detail }
}

/// Decodes the facts of one DER certificate; `None` when it does not parse.
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    let a: [u8; 4] = (*b).try_into().ok()?;
                    names.push(std::net::IpAddr::from(a).to_string());
                }
                GeneralName::IPAddress(b) if b.len() == 16 => {
                    let a: [u8; 16] = (*b).try_into().ok()?;
                    names.push(std::net::IpAddr::from(a).to_string());
                }
                _ => {}
            }
        }
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Some(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_before,
        not_after,
        days_left: (not_after - now).div_euclid(86_400),
    })
}

/// `YYYY-MM-DD` of a time in seconds since the epoch, in UTC.
pub fn utc_date(secs: i64) -> String {
    // Days to a civil date, proleptic Gregorian (the algorithm of Howard Hinnant's date notes).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[derive(Debug, Default)]
struct Seen {
    chain: Vec<Vec<u8>>,
    verdict: Option<rustls::Error>,
}

fn client_config(
    opts: &TlsOptions,
    seen: Arc<Mutex<Seen>>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in &opts.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("cannot trust the given CA certificate: {e}"))?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("no TLS version available: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Inspecting { inner, seen }))
        .with_no_client_auth();
    // The connector speaks HTTP/1.1 only; offering h2 would get an answer it cannot read.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Records the chain and the webpki verdict, and lets the handshake finish either way.
#[derive(Debug)]
struct Inspecting {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Seen>>,
}

impl ServerCertVerifier for Inspecting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let mut seen = self.seen.lock().unwrap();
        seen.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        seen.verdict = verdict.err();
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
