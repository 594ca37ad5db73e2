//! Certificates that renew themselves: an ACME client (RFC 8555) answering the HTTP-01
//! challenge on a plain listener or the TLS-ALPN-01 challenge (RFC 8737) on a TLS one.
//!
//! One certificate covers `[acme] domains`. It is kept in `storage` (`cert.pem`, `key.pem`, and
//! the account key `account.key`), loaded at start when it is there, obtained when it is missing
//! and renewed once less than `renew_before` is left. A failure keeps the certificate served
//! before and is logged at WARN with the ACME server's own words; the next try comes after a
//! pause that doubles from one minute up to an hour. HTTP-01 answers
//! (`/.well-known/acme-challenge/TOKEN`) are served before routing, on every listener; a
//! TLS-ALPN-01 validator (ALPN `acme-tls/1`) gets the challenge certificate and nothing else.
//!
//! Requests are JWS-signed with an ECDSA P-256 account key (ES256); a `badNonce` answer is
//! retried with the fresh nonce it carries, as RFC 8555 §6.5 says.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use config::AcmeConfig;
use http_body_util::{BodyExt, Full};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// Where HTTP-01 challenge answers are asked for.
pub(crate) const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The challenge answers the gateway serves now: token to key authorization.
#[derive(Debug, Default)]
pub(crate) struct Challenges {
    answers: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The key authorization for the token at the end of `path`, if one is being validated.
    pub(crate) fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        self.answers.lock().unwrap().get(token).cloned()
    }
    fn put(&self, token: &str, key_authorization: String) {
        self.answers
            .lock()
            .unwrap()
            .insert(token.to_string(), key_authorization);
    }
    fn remove(&self, token: &str) {
        self.answers.lock().unwrap().remove(token);
    }
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An answer of the ACME server.
struct Answer {
    status: u16,
    location: Option<String>,
    nonce: Option<String>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The problem document's words (RFC 7807), or the status.
    fn problem(&self) -> String {
        let v = self.json();
        match (v["type"].as_str(), v["detail"].as_str()) {
            (Some(t), Some(d)) => format!("{d} ({t})"),
            (Some(t), None) => t.to_string(),
            _ => format!("HTTP {}", self.status),
        }
    }
}

/// One ACME conversation: the account key, the directory, the current nonce.
struct Client {
    tls: Arc<net::upstream_tls::UpstreamTls>,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    jwk: Value,
    directory: Value,
    nonce: Option<String>,
    kid: Option<String>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Client {
    /// One HTTPS request to the ACME server.
    async fn request(
        &self,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        let uri: http::Uri = url.parse().map_err(|e| err(&format!("`{url}`"), e))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| err(&format!("cannot resolve {host}"), e))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .map_err(|_| format!("no connection to {addr} within 10s"))?
        .map_err(|e| err(&format!("cannot connect to {addr}"), e))?;
        let tls = self
            .tls
            .connect(tcp, &host, Duration::from_secs(10))
            .await
            .map_err(|f| format!("TLS with the ACME server: {}", f.detail.unwrap_or_default()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| err("HTTP with the ACME server", e))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(
                http::header::HOST,
                uri.authority().map_or(host.as_str(), |a| a.as_str()),
            )
            .header(http::header::USER_AGENT, "cleargate-acme");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/jose+json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| err("request", e))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
            .await
            .map_err(|_| format!("no answer from {url} within 30s"))?
            .map_err(|e| err(url, e))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (status, location, nonce) = (
            resp.status().as_u16(),
            header("location"),
            header("replay-nonce"),
        );
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(url, e))?
            .to_bytes();
        Ok(Answer {
            status,
            location,
            nonce,
            body,
        })
    }

    async fn fresh_nonce(&mut self) -> Result<String, String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let url = self.directory["newNonce"]
            .as_str()
            .ok_or("the directory has no newNonce")?
            .to_string();
        let a = self.request("HEAD", &url, None).await?;
        a.nonce
            .ok_or_else(|| "the ACME server gave no nonce".to_string())
    }

    /// A signed POST (`payload` `None`: POST-as-GET), retried on `badNonce`.
    async fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Answer, String> {
        for _ in 0..5 {
            let nonce = self.fresh_nonce().await?;
            let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
            match &self.kid {
                Some(kid) => protected["kid"] = json!(kid),
                None => protected["jwk"] = self.jwk.clone(),
            }
            let protected = b64url(protected.to_string().as_bytes());
            let payload = match payload {
                Some(p) => b64url(p.to_string().as_bytes()),
                None => String::new(),
            };
            let signing_input = format!("{protected}.{payload}");
            let signature = self
                .key
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| "cannot sign the ACME request".to_string())?;
            let body = json!({
                "protected": protected,
                "payload": payload,
                "signature": b64url(signature.as_ref()),
            });
            let a = self
                .request("POST", url, Some(body.to_string().into_bytes()))
                .await?;
            self.nonce = a.nonce.clone();
            if a.status == 400 && a.json()["type"] == "urn:ietf:params:acme:error:badNonce" {
                continue;
            }
            return Ok(a);
        }
        Err("the ACME server refused five nonces in a row".to_string())
    }

    /// Polls `url` until its `status` is no longer pending or processing.
    async fn poll(&mut self, url: &str, what: &str) -> Result<Value, String> {
        for _ in 0..60 {
            let a = self.post(url, None).await?;
            if a.status >= 400 {
                return Err(format!("{what}: {}", a.problem()));
            }
            let v = a.json();
            match v["status"].as_str() {
                Some("pending") | Some("processing") => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                _ => return Ok(v),
            }
        }
        Err(format!("{what} still pending after 30 s"))
    }
}

/// A certificate just obtained: the PEM chain and its key.
pub(crate) struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

fn account_key(storage: &Path, rng: &SystemRandom) -> Result<EcdsaKeyPair, String> {
    let path = storage.join("account.key");
    let pkcs8 = match std::fs::read(&path) {
        Ok(der) => der,
        Err(_) => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
                .map_err(|_| "cannot make an account key".to_string())?;
            std::fs::write(&path, doc.as_ref())
                .map_err(|e| err(&format!("cannot write {}", path.display()), e))?;
            doc.as_ref().to_vec()
        }
    };
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, rng)
        .map_err(|_| format!("{} is not an ECDSA P-256 account key", path.display()))
}

/// How the challenges are answered: files for HTTP-01, certificates for TLS-ALPN-01.
pub(crate) struct Solver<'a> {
    pub http: &'a Challenges,
    pub tls: Option<&'a net::certs::CertResolver>,
}

/// Obtains a certificate for `cfg.domains`, answering the configured challenge through `solver`.
pub(crate) async fn obtain(cfg: &AcmeConfig, solver: Solver<'_>) -> Result<Issued, String> {
    std::fs::create_dir_all(&cfg.storage)
        .map_err(|e| err(&format!("cannot create {}", cfg.storage.display()), e))?;
    let roots = match &cfg.ca {
        Some(ca) => {
            let pem =
                std::fs::read(ca).map_err(|e| err(&format!("cannot read {}", ca.display()), e))?;
            Some(net::tls::load_pem_certs(&pem).map_err(|e| err(&ca.display().to_string(), e))?)
        }
        None => None,
    };
    let tls = Arc::new(net::upstream_tls::UpstreamTls::new(
        roots, None, true, None,
    )?);
    let rng = SystemRandom::new();
    let key = account_key(&cfg.storage, &rng)?;
    let public = key.public_key().as_ref();
    // An uncompressed P-256 point: 0x04, x, y.
    let (x, y) = (&public[1..33], &public[33..65]);
    let jwk = json!({"crv": "P-256", "kty": "EC", "x": b64url(x), "y": b64url(y)});
    // RFC 7638: the members in lexical order, no spaces.
    let thumbprint_input = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        b64url(x),
        b64url(y)
    );
    let thumbprint =
        b64url(ring::digest::digest(&ring::digest::SHA256, thumbprint_input.as_bytes()).as_ref());
    let mut c = Client {
        tls,
        key,
        rng,
        jwk,
        directory: Value::Null,
        nonce: None,
        kid: None,
    };
    let dir = c.request("GET", &cfg.directory, None).await?;
    if dir.status != 200 {
        return Err(format!(
            "the directory {} answered {}",
            cfg.directory, dir.status
        ));
    }
    c.directory = dir.json();
    let url = |c: &Client, name: &str| {
        c.directory[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("the directory has no {name}"))
    };

    let new_account = url(&c, "newAccount")?;
    let mut account = json!({"termsOfServiceAgreed": true});
    if let Some(email) = &cfg.email {
        account["contact"] = json!([format!("mailto:{email}")]);
    }
    let a = c.post(&new_account, Some(&account)).await?;
    if a.status >= 400 {
        return Err(format!("account refused: {}", a.problem()));
    }
    c.kid = Some(a.location.ok_or("the ACME server gave no account URL")?);

    let new_order = url(&c, "newOrder")?;
    let identifiers: Vec<Value> = cfg
        .domains
        .iter()
        .map(|d| json!({"type": "dns", "value": d}))
        .collect();
    let a = c
        .post(&new_order, Some(&json!({"identifiers": identifiers})))
        .await?;
    if a.status >= 400 {
        return Err(format!("order refused: {}", a.problem()));
    }
    let order_url = a
        .location
        .clone()
        .ok_or("the ACME server gave no order URL")?;
    let order = a.json();

    for authz_url in order["authorizations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let authz_url = authz_url.as_str().unwrap_or_default().to_string();
        let authz = c.post(&authz_url, None).await?.json();
        let domain = authz["identifier"]["value"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        if authz["status"] == "valid" {
            continue;
        }
        let kind = match (cfg.challenge, solver.tls) {
            (config::AcmeChallenge::TlsAlpn01, Some(_)) => "tls-alpn-01",
            _ => "http-01",
        };
        let challenge = authz["challenges"]
            .as_array()
            .and_then(|cs| cs.iter().find(|ch| ch["type"] == kind))
            .cloned()
            .ok_or_else(|| format!("{domain}: the ACME server offers no {kind} challenge"))?;
        let token = challenge["token"].as_str().unwrap_or_default().to_string();
        let challenge_url = challenge["url"].as_str().unwrap_or_default().to_string();
        let key_authorization = format!("{token}.{thumbprint}");
        match (kind, solver.tls) {
            ("tls-alpn-01", Some(resolver)) => resolver.set_challenge(
                &domain,
                net::certs::acme_challenge_key(&domain, &key_authorization)?,
            ),
            _ => solver.http.put(&token, key_authorization),
        }
        let result = async {
            let a = c.post(&challenge_url, Some(&json!({}))).await?;
            if a.status >= 400 {
                return Err(format!("{domain}: challenge refused: {}", a.problem()));
            }
            let done = c
                .poll(&authz_url, &format!("{domain}: authorization"))
                .await?;
            if done["status"] != "valid" {
                let why = done["challenges"]
                    .as_array()
                    .and_then(|cs| cs.iter().find_map(|ch| ch["error"]["detail"].as_str()))
                    .unwrap_or("no reason given")
                    .to_string();
                return Err(format!(
                    "{domain}: the ACME server could not validate the {kind} challenge: {why}"
                ));
            }
            Ok(())
        }
        .await;
        solver.http.remove(&token);
        if let Some(resolver) = solver.tls {
            resolver.clear_challenge(&domain);
        }
        result?;
    }

    // The certificate's key, and the request for it.
    let cert_key =
        rcgen::KeyPair::generate().map_err(|e| err("cannot make the certificate key", e))?;
    let params = rcgen::CertificateParams::new(cfg.domains.clone()).map_err(|e| err("CSR", e))?;
    let csr = params
        .serialize_request(&cert_key)
        .map_err(|e| err("CSR", e))?;
    let finalize = order["finalize"]
        .as_str()
        .ok_or("the order has no finalize URL")?
        .to_string();
    let a = c
        .post(&finalize, Some(&json!({"csr": b64url(csr.der())})))
        .await?;
    if a.status >= 400 {
        return Err(format!("finalize refused: {}", a.problem()));
    }
    let done = c.poll(&order_url, "order").await?;
    if done["status"] != "valid" {
        return Err(format!("the order ended {}", done["status"]));
    }
    let cert_url = done["certificate"]
        .as_str()
        .ok_or("the order has no certificate URL")?
        .to_string();
    let a = c.post(&cert_url, None).await?;
    if a.status != 200 {
        return Err(format!("certificate download: {}", a.problem()));
    }
    Ok(Issued {
        chain_pem: String::from_utf8_lossy(&a.body).into_owned(),
        key_pem: cert_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_has_no_padding() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn challenge_answers_are_found_by_token() {
        let c = Challenges::default();
        c.put("abc", "abc.thumb".into());
        assert_eq!(
            c.answer("/.well-known/acme-challenge/abc").as_deref(),
            Some("abc.thumb")
        );
        assert_eq!(c.answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.answer("/abc"), None);
        c.remove("abc");
        assert_eq!(c.answer("/.well-known/acme-challenge/abc"), None);
    }
}
