//! TLS to an upstream: one rustls client configuration per upstream, made once when the gateway
//! starts, and the handshake of each new connection under the connect deadline.
//!
//! A certificate the upstream presents is checked by webpki against the configured CA (or the
//! public roots). When it is refused, the reason is worked out from the certificate itself (the
//! date it expired, the names it does have, whether it signed itself) and carried in the rustls
//! error, so the `tls` failure tells a person what to fix.

use std::sync::Arc;
use std::time::Duration;

use cause::{Cause, Failure, Phase};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::{cert_facts, classify_tls_error, utc_date};

/// How one upstream is reached over TLS.
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The name sent in SNI and checked in the certificate, instead of the endpoint's host.
    sni: Option<String>,
    pub verify: bool,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .finish()
    }
}

/// A client certificate chain and its key, for mutual TLS.
pub type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl UpstreamTls {
    /// `roots`: the CA certificates to trust, or `None` for the public roots. `verify = false`
    /// accepts any certificate.
    pub fn new(
        roots: Option<Vec<CertificateDer<'static>>>,
        sni: Option<String>,
        verify: bool,
        client: Option<ClientIdentity>,
    ) -> Result<UpstreamTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = RootCertStore::empty();
        match roots {
            Some(certs) => {
                for cert in certs {
                    store
                        .add(cert)
                        .map_err(|e| format!("cannot trust the given CA certificate: {e}"))?;
                }
            }
            None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("no TLS version available: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Explaining { inner, verify }));
        let mut config = match client {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cannot use the client certificate: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        // The upstream is spoken to in HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            sni,
            verify,
        })
    }

    /// The TLS handshake over a new connection to an endpoint whose host is `host` (a name or
    /// an IP address), within `timeout`.
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let name = self.sni.as_deref().unwrap_or(host);
        let name = host_name(name).ok_or_else(|| {
            Failure::new(Cause::Tls, Phase::TlsHandshake)
                .with_detail(format!("`{name}` is not a name TLS can check; set `sni`"))
        })?;
        match tokio::time::timeout(timeout, self.connector.connect(name, stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(classify_tls_error(&e)),
            Err(_) => Err(
                Failure::new(Cause::Timeout, Phase::TlsHandshake).with_detail(format!(
                    "the TLS handshake did not finish within {timeout:?}"
                )),
            ),
        }
    }
}

/// `host` as a TLS server name: a DNS name, or an IP address (brackets of IPv6 removed).
fn host_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// Why a certificate was refused, in words; carried inside the rustls error.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// webpki's verdict, with the reason spelled out from the certificate when it refuses.
#[derive(Debug)]
struct Explaining {
    inner: Arc<WebPkiServerVerifier>,
    verify: bool,
}

impl ServerCertVerifier for Explaining {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(c)) => {
                let why = explain(&c, end_entity, intermediates.is_empty(), server_name, now);
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(Refused(why))),
                )))
            }
            Err(e) => Err(e),
        }
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

fn explain(
    c: &CertificateError,
    end_entity: &CertificateDer<'_>,
    alone: bool,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> String {
    let facts = cert_facts(end_entity);
    let now = now.as_secs() as i64;
    let name = server_name.to_str();
    match (c, &facts) {
        (CertificateError::Expired | CertificateError::ExpiredContext { .. }, Some(f)) => format!(
            "expired: the certificate expired on {} ({} day(s) ago)",
            utc_date(f.not_after),
            (now - f.not_after) / 86_400
        ),
        (CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }, Some(f)) => {
            format!(
                "not valid yet: the certificate is valid from {}",
                utc_date(f.not_before)
            )
        }
        (
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            Some(f),
        ) => format!(
            "wrong name: the certificate is for {} but not for {name}",
            if f.names.is_empty() {
                "no name".to_string()
            } else {
                f.names.join(", ")
            }
        ),
        (CertificateError::UnknownIssuer, Some(f)) if alone && f.subject == f.issuer => {
            "self-signed: the certificate signed itself and is not a trusted CA; give it with `ca`"
                .to_string()
        }
        (CertificateError::UnknownIssuer, Some(f)) => format!(
            "unknown issuer: `{}` is not trusted (give its CA with `ca`, or the upstream sends an incomplete chain)",
            f.issuer
        ),
        (other, _) => format!("invalid: {other:?}"),
    }
}
