//! The certificates the gateway serves to its clients: read from PEM files and checked
//! (readable, the key belongs to the certificate, dates), chosen for each handshake by the name
//! the client asks for (SNI), and replaced on reload without touching open connections.
//!
//! Names come from each certificate's subject alternative names, wildcards included
//! (`*.example.com` covers one label). A name two certificates share goes to the one listed
//! first; the first certificate also serves clients that send no SNI or a name no certificate
//! has, as nginx's default server does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

use crate::tls::{cert_facts, CertFacts};

/// Which of a certificate's two files a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    Cert,
    Key,
}

/// Why a certificate could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertError {
    pub role: FileRole,
    pub message: String,
}

/// A certificate ready to serve.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The facts of the end-entity certificate: names, issuer, dates.
    pub facts: CertFacts,
    /// What is worth a warning but does not stop the certificate from being served: expired,
    /// not valid yet, expiring within 14 days, no DNS names.
    pub warnings: Vec<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks one certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<Loaded, CertError> {
    let cert_err = |message: String| CertError {
        role: FileRole::Cert,
        message,
    };
    let key_err = |message: String| CertError {
        role: FileRole::Key,
        message,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| {
        cert_err(format!(
            "cannot read certificate file `{}`: {e}",
            cert.display()
        ))
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            cert_err(format!(
                "`{}` is not a readable PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(format!(
            "`{}` holds no PEM certificate (no \"BEGIN CERTIFICATE\" block)",
            cert.display()
        )));
    };
    let facts = cert_facts(leaf).ok_or_else(|| {
        cert_err(format!(
            "the first certificate in `{}` does not parse as X.509",
            cert.display()
        ))
    })?;
    let key_pem = std::fs::read(key)
        .map_err(|e| key_err(format!("cannot read key file `{}`: {e}", key.display())))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        key_err(match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "`{}` holds no PEM private key (no \"BEGIN PRIVATE KEY\" block)",
                key.display()
            ),
            e => format!("`{}` is not a readable PEM private key: {e}", key.display()),
        })
    })?;
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        key_err(match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the key in `{}` does not belong to the certificate in `{}`",
                key.display(),
                cert.display()
            ),
            e => format!("cannot use the key in `{}`: {e}", key.display()),
        })
    })?;
    let warnings = date_warnings(&facts, now_secs());
    Ok(Loaded {
        key: Arc::new(certified),
        facts,
        warnings,
    })
}

/// A TLS-ALPN-01 challenge certificate for `domain` (RFC 8737 §3): self-signed, naming the
/// domain, with the critical acmeIdentifier extension holding SHA-256 of `key_authorization`.
pub fn acme_challenge_key(
    domain: &str,
    key_authorization: &str,
) -> Result<Arc<CertifiedKey>, String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
        .map_err(|e| format!("challenge certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    let private = PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    ));
    // Not `from_der`: its key check parses the certificate with webpki, which refuses the
    // critical acmeIdentifier extension it does not know. The key was made for this certificate.
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// Reads a certificate chain and its key for use as a client identity (mutual TLS to an
/// upstream), checked like [`load`].
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<crate::upstream_tls::ClientIdentity, CertError> {
    load(cert, key)?;
    let read_err = |role, e: String| CertError { role, message: e };
    let cert_pem = std::fs::read(cert).map_err(|e| read_err(FileRole::Cert, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(FileRole::Cert, e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| read_err(FileRole::Key, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| read_err(FileRole::Key, e.to_string()))?;
    Ok((chain, key))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn date_warnings(facts: &CertFacts, now: i64) -> Vec<String> {
    let mut warnings = Vec::new();
    let day = |t: i64| crate::tls::utc_date(t);
    if facts.not_after < now {
        warnings.push(format!(
            "the certificate expired on {} ({} days ago); browsers will refuse it",
            day(facts.not_after),
            (now - facts.not_after) / 86_400
        ));
    } else if facts.not_before > now {
        warnings.push(format!(
            "the certificate is not valid before {}",
            day(facts.not_before)
        ));
    } else if facts.not_after - now < 14 * 86_400 {
        warnings.push(format!(
            "the certificate expires on {}, in {} days",
            day(facts.not_after),
            (facts.not_after - now) / 86_400
        ));
    }
    if !facts
        .names
        .iter()
        .any(|n| n.parse::<std::net::IpAddr>().is_err())
    {
        warnings.push(
            "the certificate names no DNS name (subject alternative names); clients checking names will refuse it"
                .to_string(),
        );
    }
    warnings
}

/// The certificates by name, one set at a time.
#[derive(Debug, Default)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    first: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    fn new(certs: &[Loaded]) -> CertSet {
        let mut set = CertSet {
            first: certs.first().map(|c| c.key.clone()),
            ..CertSet::default()
        };
        for c in certs {
            for name in &c.facts.names {
                let name = name.to_ascii_lowercase();
                let (map, name) = match name.strip_prefix("*.") {
                    Some(rest) => (&mut set.wildcard, rest.to_string()),
                    None => (&mut set.exact, name),
                };
                map.entry(name).or_insert_with(|| c.key.clone());
            }
        }
        set
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(parent) {
                    return Some(k.clone());
                }
            }
        }
        self.first.clone()
    }
}

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Chooses the certificate of each handshake; the set inside is replaced on reload.
#[derive(Debug, Default)]
pub struct CertResolver {
    set: RwLock<Arc<CertSet>>,
    /// TLS-ALPN-01 challenge certificates by domain, while an ACME server validates them.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn new(certs: &[Loaded]) -> CertResolver {
        CertResolver {
            set: RwLock::new(Arc::new(CertSet::new(certs))),
            challenges: RwLock::new(HashMap::new()),
        }
    }

    /// Answers TLS-ALPN-01 for `domain` with `key` until [`CertResolver::clear_challenge`].
    pub fn set_challenge(&self, domain: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_ascii_lowercase(), key);
    }

    pub fn clear_challenge(&self, domain: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&domain.to_ascii_lowercase());
    }

    /// Serves `certs` from the next handshake on; connections already open keep theirs.
    pub fn replace(&self, certs: &[Loaded]) {
        let set = Arc::new(CertSet::new(certs));
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
    }

    /// The certificate a client asking for `sni` gets.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner()).clone();
        set.pick(sni)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // An ACME validator: only a challenge certificate answers it (RFC 8737 §3).
            let name = hello.server_name()?.to_ascii_lowercase();
            let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            return challenges.get(&name).cloned();
        }
        self.pick(hello.server_name())
    }
}

/// The TLS settings of every TLS listener of the process: TLS 1.3 and 1.2, ALPN `h2` and
/// `http/1.1`, session tickets from one key generator (so that a client resumes on any worker)
/// and a session cache of 4096 entries.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("no TLS version available: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // `acme-tls/1` last: only an ACME validator offers it.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| format!("cannot make the session ticket key: {e}"))?;
    config.session_storage = ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(names: &[&str], not_before: i64, not_after: i64) -> CertFacts {
        CertFacts {
            subject: String::new(),
            issuer: String::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
            not_before,
            not_after,
            days_left: 0,
        }
    }

    #[test]
    fn dates_and_names_give_warnings() {
        let now = 1_800_000_000;
        assert_eq!(crate::tls::utc_date(0), "1970-01-01");
        assert_eq!(crate::tls::utc_date(now), "2027-01-15");
        assert_eq!(crate::tls::utc_date(951_782_400), "2000-02-29");
        assert!(date_warnings(&facts(&["a.test"], now - 10, now + 90 * 86_400), now).is_empty());
        let w = date_warnings(&facts(&["a.test"], 0, now - 3 * 86_400), now);
        assert!(
            w[0].starts_with("the certificate expired on 2027-01-"),
            "{w:?}"
        );
        assert!(w[0].contains("(3 days ago)"), "{w:?}");
        let w = date_warnings(&facts(&["a.test"], now - 10, now + 5 * 86_400), now);
        assert!(w[0].ends_with("in 5 days"), "{w:?}");
        let w = date_warnings(&facts(&["127.0.0.1"], now - 10, now + 90 * 86_400), now);
        assert!(w[0].contains("no DNS name"), "{w:?}");
    }
}
