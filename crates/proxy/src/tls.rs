//! TLS at the edge: the certificates of `[[certificate]]` read and checked, the handshake of
//! each connection on a `listen_tls` listener, and certificate reload.
//!
//! One rustls configuration serves every TLS listener of every worker, so session tickets made
//! on one worker resume on another. Reload reads each certificate again; one that fails keeps
//! the certificate served before it, with a WARN naming the file, and the others are replaced.
//! Open connections keep the certificate they were made with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cause::{ClientFault, Failure, Level};
use std::path::PathBuf;

use config::{CertificateConfig, Config, Place, Problem, UpstreamTlsConfig};
use net::certs::{CertResolver, FileRole, Loaded};
use net::upstream_tls::UpstreamTls;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::Gateway;

/// What reading the certificate files found: a certificate per `[[certificate]]` (absent where
/// it failed), the problems that stop the gateway from starting, and warnings that do not.
pub struct CertReport {
    pub loaded: Vec<Option<Loaded>>,
    /// TLS to each upstream, in configuration order (`None`: plain, or it failed).
    pub upstream_tls: Vec<Option<Arc<UpstreamTls>>>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

fn read_one(c: &CertificateConfig) -> Result<Loaded, Problem> {
    net::certs::load(&c.cert, &c.key).map_err(|e| match e.role {
        FileRole::Cert => c.cert_at.problem(e.message),
        FileRole::Key => c.key_at.problem(e.message),
    })
}

/// Reads the files of an upstream's `[tls]` and makes its client configuration.
fn upstream_tls(t: &UpstreamTlsConfig) -> Result<UpstreamTls, Problem> {
    let read = |(path, at): &(PathBuf, Place), what: &str| {
        std::fs::read(path)
            .map_err(|e| at.problem(format!("cannot read {what} file `{}`: {e}", path.display())))
    };
    let roots = match &t.ca {
        Some(ca) => {
            let pem = read(ca, "CA")?;
            Some(
                net::tls::load_pem_certs(&pem)
                    .map_err(|e| ca.1.problem(format!("`{}`: {e}", ca.0.display())))?,
            )
        }
        None => None,
    };
    let identity = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => Some(net::certs::load_identity(&cert.0, &key.0).map_err(
            |e| match e.role {
                FileRole::Cert => cert.1.problem(e.message),
                FileRole::Key => key.1.problem(e.message),
            },
        )?),
        _ => None,
    };
    UpstreamTls::new(roots, t.sni.clone(), t.verify, identity).map_err(|e| t.at.problem(e))
}

/// Reads and checks every `[[certificate]]` of `config`, as `check` and start-up do.
pub fn read_certificates(config: &Config) -> CertReport {
    let mut report = CertReport {
        loaded: Vec::new(),
        upstream_tls: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    for u in &config.upstreams {
        let tls = match &u.tls {
            Some(t) => match upstream_tls(t) {
                Ok(tls) => {
                    if !t.verify {
                        report.warnings.push(t.at.problem(format!(
                            "the certificates of upstream `{}` are not verified (`verify = false`): anyone on the path can pose as it",
                            u.name
                        )));
                    }
                    Some(Arc::new(tls))
                }
                Err(p) => {
                    report.problems.push(p);
                    None
                }
            },
            None => None,
        };
        report.upstream_tls.push(tls);
    }
    for c in &config.certificates {
        match read_one(c) {
            Ok(l) => {
                for w in &l.warnings {
                    report
                        .warnings
                        .push(c.cert_at.problem(format!("`{}`: {w}", c.cert.display())));
                }
                report.loaded.push(Some(l));
            }
            Err(p) => {
                report.problems.push(p);
                report.loaded.push(None);
            }
        }
    }
    report
}

/// The TLS side of a gateway with TLS listeners.
pub(crate) struct TlsEdge {
    acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
    /// What is served now, one per `[[certificate]]`.
    served: Mutex<Vec<Loaded>>,
    /// The certificate obtained by ACME, served after the configured ones.
    pub(crate) acme: Mutex<Option<Loaded>>,
}

impl TlsEdge {
    /// Sets up TLS from certificates already read; `None` when the configuration has no TLS
    /// listener, no certificate and no `[acme]`.
    pub(crate) fn new(config: &Config, loaded: Vec<Loaded>) -> Result<Option<TlsEdge>, String> {
        let wanted = config.listeners.iter().any(|l| l.tls) || config.acme.is_some();
        if loaded.is_empty() && !wanted {
            return Ok(None);
        }
        let resolver = Arc::new(CertResolver::new(&loaded));
        let server = net::certs::server_config(resolver.clone())?;
        let edge = TlsEdge {
            acceptor: TlsAcceptor::from(server),
            resolver,
            served: Mutex::new(loaded),
            acme: Mutex::new(None),
        };
        // A certificate obtained before is served from the start.
        if let Some(acme) = &config.acme {
            let (cert, key) = (acme.storage.join("cert.pem"), acme.storage.join("key.pem"));
            if cert.exists() {
                if let Ok(l) = net::certs::load(&cert, &key) {
                    *edge.acme.lock().unwrap() = Some(l);
                    edge.publish();
                }
            }
        }
        Ok(Some(edge))
    }

    /// Serves `loaded` in place of the configured certificates (a reload), from the next
    /// handshake on.
    pub(crate) fn serve_certificates(&self, loaded: Vec<Loaded>) {
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) = loaded;
        self.publish();
    }

    /// Serves the configured certificates and the ACME one from the next handshake on.
    pub(crate) fn publish(&self) {
        let mut all = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(a) = self.acme.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            all.push(a);
        }
        self.resolver.replace(&all);
    }
}

/// What a certificate reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Certificates read again and served from now on.
    pub replaced: usize,
    /// Certificates that failed and are still served as before, with why.
    pub kept: Vec<String>,
}

impl Gateway {
    /// Reads every certificate file again (SIGHUP). A certificate that fails to read, to parse
    /// or whose key does not match keeps the one served before, and a WARN names the file; the
    /// others are served from the next handshake on. Open connections are not touched.
    pub fn reload_certificates(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let Some(tls) = &self.tls else {
            return report;
        };
        let mut served = tls.served.lock().unwrap_or_else(|e| e.into_inner());
        for (c, current) in self.config.certificates.iter().zip(served.iter_mut()) {
            match read_one(c) {
                Ok(l) => {
                    for w in &l.warnings {
                        self.logger.notice(
                            Level::Warn,
                            "certificate reloaded with a problem",
                            &[
                                ("file", json!(c.cert.display().to_string())),
                                ("problem", json!(w)),
                            ],
                        );
                    }
                    *current = l;
                    report.replaced += 1;
                }
                Err(p) => {
                    self.logger.notice(
                        Level::Warn,
                        "certificate not reloaded; the one loaded before is still served",
                        &[
                            ("file", json!(c.cert.display().to_string())),
                            ("problem", json!(p.to_string())),
                        ],
                    );
                    report.kept.push(p.to_string());
                }
            }
        }
        drop(served);
        tls.publish();
        let served = tls.served.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&str> = served
            .iter()
            .flat_map(|l| l.facts.names.iter().map(String::as_str))
            .collect();
        self.logger.notice(
            Level::Info,
            "certificates reloaded",
            &[
                ("replaced", json!(report.replaced)),
                ("kept", json!(report.kept.len())),
                ("names", json!(names)),
            ],
        );
        report
    }

    /// Keeps the `[acme]` certificate: obtains it when there is none, renews it once less than
    /// `renew_before` is left; a failure keeps what is served and is tried again after a pause
    /// (one minute, doubling up to an hour). Runs on worker 0 until shutdown.
    pub(crate) async fn keep_acme_certificate(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let (Some(cfg), Some(tls)) = (self.config.acme.clone(), self.tls.as_ref()) else {
            return;
        };
        let mut pause = Duration::from_secs(60);
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let renew_at = tls
                .acme
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|l| l.facts.not_after - cfg.renew_before.as_secs() as i64);
            let wait = match renew_at {
                Some(at) if at > now => Duration::from_secs((at - now) as u64),
                _ => Duration::ZERO,
            };
            if !wait.is_zero() {
                // Looked at again at least twice a day.
                let wait = wait.min(Duration::from_secs(12 * 3600));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            let started = Instant::now();
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = crate::acme::obtain(&cfg, crate::acme::Solver { http: &self.challenges, tls: Some(&tls.resolver) }) => r,
            };
            let stored = result.and_then(|issued| {
                let (cert, key) = (cfg.storage.join("cert.pem"), cfg.storage.join("key.pem"));
                write_atomically(&key, issued.key_pem.as_bytes())?;
                write_atomically(&cert, issued.chain_pem.as_bytes())?;
                net::certs::load(&cert, &key).map_err(|e| e.message)
            });
            match stored {
                Ok(l) => {
                    self.logger.notice(
                        Level::Info,
                        "certificate obtained from the ACME server",
                        &[
                            ("names", json!(l.facts.names)),
                            ("not_after", json!(net::tls::utc_date(l.facts.not_after))),
                            ("directory", json!(cfg.directory)),
                            ("duration_ms", json!(started.elapsed().as_millis() as u64)),
                        ],
                    );
                    *tls.acme.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
                    tls.publish();
                    pause = Duration::from_secs(60);
                }
                Err(why) => {
                    self.logger.notice(
                        Level::Warn,
                        "certificate not obtained from the ACME server; what was served before stays",
                        &[
                            ("domains", json!(cfg.domains)),
                            ("directory", json!(cfg.directory)),
                            ("error", json!(why)),
                            ("next_try_s", json!(pause.as_secs())),
                        ],
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(3600));
                }
            }
        }
    }

    /// The TLS handshake of a connection on a TLS listener, within the request-head deadline.
    /// A plain HTTP request sent to the TLS port is answered in plain HTTP with a 400 that says
    /// so; a failed handshake is logged with its reason. `None` when the connection is over.
    pub(crate) async fn tls_handshake(
        &self,
        stream: TcpStream,
        client: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let tls = self.tls.as_ref()?;
        let deadline = self.config.limits.request_header_timeout;
        let started = Instant::now();
        let mut first = [0u8; 1];
        match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1..)) => {}
            // Closed, or silent past the deadline: nothing was asked, nothing to say.
            Ok(_) | Err(_) => return None,
        }
        // Every TLS connection opens with a handshake record (content type 22).
        if first[0] != 0x16 {
            if first[0].is_ascii_alphabetic() {
                self.answer_plain_on_tls(stream, client, started).await;
            } else {
                self.log_handshake_failure(client, "the client did not start a TLS handshake");
            }
            return None;
        }
        match tokio::time::timeout(
            deadline.saturating_sub(started.elapsed()),
            tls.acceptor.accept(stream),
        )
        .await
        {
            Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(net::certs::ACME_TLS_ALPN) => {
                // An ACME validator has seen the challenge certificate: nothing more to say.
                let mut s = s;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
                None
            }
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                self.log_handshake_failure(client, &handshake_error(&e));
                None
            }
            Err(_) => {
                self.log_handshake_failure(
                    client,
                    &format!("the handshake did not finish within {deadline:?}"),
                );
                None
            }
        }
    }

    /// Client handshake failures are the client's business (scanners, old clients, a client
    /// that does not trust the certificate): logged at INFO, not as gateway errors.
    fn log_handshake_failure(&self, client: SocketAddr, why: &str) {
        self.logger.notice(
            Level::Info,
            "TLS handshake with a client failed; connection closed",
            &[("client", json!(client.to_string())), ("error", json!(why))],
        );
    }

    /// A plain HTTP request on a TLS listener: read what came, answer 400 in plain HTTP, close.
    async fn answer_plain_on_tls(
        &self,
        mut stream: TcpStream,
        client: SocketAddr,
        started: Instant,
    ) {
        let failure = Failure::client(
            ClientFault::Malformed,
            "a plain HTTP request came to a TLS listener; use https://",
        );
        // Read the request first: closing with unread bytes would reset the connection and
        // the client would never see the answer.
        let mut buf = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        let answer = self.raw_answer(
            &failure,
            Some("This port speaks HTTPS, and the request came in plain HTTP: use an https:// address."),
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(&answer.bytes).await;
            let _ = stream.shutdown().await;
            // Let the client read the answer before the socket goes away.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        self.log_raw_answer(answer, &failure, client, started.elapsed());
    }
}

/// Writes `data` to `path` through a temporary file and a rename, so a reader never sees half.
fn write_atomically(path: &std::path::Path, data: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The reason of a failed client handshake in plain words.
fn handshake_error(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the client refused the handshake with alert {alert:?} (it may not trust the certificate)")
        }
        Some(rustls::Error::PeerIncompatible(why)) => {
            format!("the client offers nothing this gateway accepts: {why:?}")
        }
        Some(other) => other.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the client closed the connection during the handshake".to_string()
        }
        None => e.to_string(),
    }
}
