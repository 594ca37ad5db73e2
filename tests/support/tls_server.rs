//! Test certificates (a private CA, and good, expired, misnamed and self-signed server
//! certificates) and a small TLS server that answers every request with `200 ok`.

// Shared by several test binaries; each uses a part.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct Ca {
    pub der: CertificateDer<'static>,
    pub pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The same certificate and key as PEM files hold them.
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cleargate test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Ca {
        der: issuer.der().clone(),
        pem: issuer.pem(),
        issuer,
    }
}

fn params(names: &[&str], expired: bool) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].to_string());
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    params
}

fn key_der(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// A certificate for `names` signed by `ca`; `expired` sets dates in the past.
pub fn signed(ca: &Ca, names: &[&str], expired: bool) -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let cert = params(names, expired).signed_by(&key, &ca.issuer).unwrap();
    ServerCert {
        chain: vec![cert.der().clone()],
        key: key_der(&key),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

pub fn self_signed(names: &[&str]) -> ServerCert {
    let key = KeyPair::generate().unwrap();
    let cert = params(names, false).self_signed(&key).unwrap();
    ServerCert {
        chain: vec![cert.der().clone()],
        key: key_der(&key),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Serves `cert` on 127.0.0.1; every request gets `200 ok` on a kept-alive connection.
pub async fn serve(cert: ServerCert) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    serve_with(cert, None).await
}

/// Like [`serve`], and with `clients` every client must present a certificate it signed.
pub async fn serve_with(
    cert: ServerCert,
    clients: Option<&Ca>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(cert.chain, cert.key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tls.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}
