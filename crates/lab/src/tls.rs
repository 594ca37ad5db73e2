//! The TLS faults: certificates made when the lab starts (a CA of its own, and an expired, a
//! misnamed and a self-signed server certificate), and what each TLS fault does with a
//! connection.
//!
//! A gateway that trusts the lab's CA ([`crate::Lab::ca_pem`]) can tell the faults apart: the
//! expired and misnamed certificates chain to a trusted CA and fail only on their date or name;
//! the self-signed one chains to nothing. Should a gateway accept a certificate anyway (its
//! verification off), every request head on the connection gets `200 ok`.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serve::Ctx;
use crate::Fault;

/// The lab's certificates, one server configuration per certificate fault.
pub(crate) struct LabCerts {
    pub ca_pem: String,
    pub expired: Arc<ServerConfig>,
    pub wrongname: Arc<ServerConfig>,
    pub selfsigned: Arc<ServerConfig>,
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("cannot make the lab's TLS certificates: {e}"))
}

fn server_config(cert: CertificateDer<'static>, key: &KeyPair) -> io::Result<Arc<ServerConfig>> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(tls_error)?;
    Ok(Arc::new(config))
}

impl LabCerts {
    /// Makes the CA and the certificates; the good names are `localhost` and `host`.
    pub fn new(host: IpAddr) -> io::Result<LabCerts> {
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cleargate lab CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(tls_error)?;
        let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(tls_error)?;
        let names = vec!["localhost".to_string(), host.to_string()];
        let leaf = |names: Vec<String>, expired: bool| -> io::Result<CertificateParams> {
            let mut p = CertificateParams::new(names.clone()).map_err(tls_error)?;
            p.distinguished_name
                .push(DnType::CommonName, names[0].clone());
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            Ok(p)
        };
        let signed = |params: CertificateParams| -> io::Result<Arc<ServerConfig>> {
            let key = KeyPair::generate().map_err(tls_error)?;
            let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
            server_config(cert.der().clone(), &key)
        };
        let expired = signed(leaf(names.clone(), true)?)?;
        let wrongname = signed(leaf(vec!["wrong.lab.invalid".to_string()], false)?)?;
        let self_key = KeyPair::generate().map_err(tls_error)?;
        let self_cert = leaf(names, false)?
            .self_signed(&self_key)
            .map_err(tls_error)?;
        let selfsigned = server_config(self_cert.der().clone(), &self_key)?;
        Ok(LabCerts {
            ca_pem: issuer.pem(),
            expired,
            wrongname,
            selfsigned,
        })
    }

    pub fn config_for(&self, fault: Fault) -> Option<Arc<ServerConfig>> {
        match fault {
            Fault::Expired => Some(self.expired.clone()),
            Fault::Wrongname => Some(self.wrongname.clone()),
            Fault::Selfsigned => Some(self.selfsigned.clone()),
            _ => None,
        }
    }
}

/// Serves one connection of a TLS fault.
pub(crate) async fn connection(mut stream: TcpStream, ctx: &Ctx) {
    let _ = stream.set_nodelay(true);
    match ctx.fault {
        Fault::Plaintext => {
            // What a plain HTTP server makes of a TLS hello: a 400, then the close.
            let mut buf = [0u8; 4096];
            if matches!(stream.read(&mut buf).await, Ok(1..)) {
                ctx.counters.request();
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n")
                    .await;
                crate::serve::close_gracefully(stream).await;
            }
        }
        Fault::Tlsstall => {
            // The hello is read and never answered; the connection stays open until the peer
            // gives up.
            let mut buf = [0u8; 4096];
            while let Ok(1..) = stream.read(&mut buf).await {}
        }
        _ => {
            let Some(config) = ctx.tls.clone() else {
                return;
            };
            let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else {
                // The usual outcome: the gateway refused the certificate.
                return;
            };
            // A gateway that accepted the certificate anyway gets `200 ok` per request head.
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..end + 4);
                    ctx.counters.request();
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
                    if tls.write_all(answer).await.is_err() {
                        return;
                    }
                }
                if pending.len() > 64 * 1024 {
                    return;
                }
            }
        }
    }
}
