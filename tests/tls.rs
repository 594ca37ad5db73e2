//! TLS at the edge: certificates chosen by SNI (the first for clients without SNI), ALPN h2 and
//! http/1.1 on one listener, HSTS, the HTTPS redirect of a plain listener, a plain request on
//! the TLS port, certificate checks with positions, and reload (in process and by SIGHUP to
//! the real binary) that serves new certificates on new connections while open ones continue.

#[path = "support/canned.rs"]
mod canned;
mod common;
#[path = "support/tls_server.rs"]
mod tls_server;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::log::{Format, Logger, Sink};
use proxy::{CancellationToken, Gateway};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cleargate-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_cert(dir: &Path, stem: &str, cert: &tls_server::ServerCert) {
    std::fs::write(dir.join(format!("{stem}.pem")), &cert.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), &cert.key_pem).unwrap();
}

/// The configuration: a plain listener that redirects to HTTPS, a TLS listener with HSTS,
/// certificates `a` then `b` from `dir`, and the canned upstream.
fn config_text(dir: &Path, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"listen = [{{ address = "127.0.0.1:0", redirect_https = true }}]
listen_tls = [{{ address = "127.0.0.1:0", hsts = true }}]
[[certificate]]
cert = "{d}/a.pem"
key = "{d}/a.key"
[[certificate]]
cert = "{d}/b.pem"
key = "{d}/b.key"
[upstream.app]
endpoints = ["{upstream}"]
[[route]]
upstream = "app"
"#
    )
}

struct TlsGateway {
    plain: SocketAddr,
    tls: SocketAddr,
    gateway: Arc<Gateway>,
    logs: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _upstream: canned::Canned,
}

impl TlsGateway {
    async fn start(dir: &Path) -> TlsGateway {
        let upstream = canned::start().await;
        let text = config_text(dir, upstream.addr);
        let config =
            config::Config::parse(&text, "test.toml", dir).unwrap_or_else(|p| panic!("{p}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(logs.clone())).unwrap());
        let gateway = Gateway::new(config, logger).unwrap();
        // In the order of the configuration: `listen`, then `listen_tls`.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway.clone().serve(vec![plain, tls], shutdown.clone()));
        TlsGateway {
            plain: plain_addr,
            tls: tls_addr,
            gateway,
            logs,
            shutdown,
            task,
            _upstream: upstream,
        }
    }

    fn notices(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["kind"] != "access")
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// Accepts any certificate, so that a test can look at the one served for any name.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A handshake that verifies the gateway's certificate against `ca` for `name`.
async fn connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    name: &str,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

/// The certificate served to a client that asks for `sni` (`None`: sends no SNI), and the
/// TLS version.
async fn served_cert(
    addr: SocketAddr,
    sni: Option<&str>,
    tls12: bool,
) -> (CertificateDer<'static>, rustls::ProtocolVersion) {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.invalid").to_string()).unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (_, session) = tls.get_ref();
    (
        session.peer_certificates().unwrap()[0].clone().into_owned(),
        session.protocol_version().unwrap(),
    )
}

fn names_of(der: &CertificateDer<'_>) -> Vec<String> {
    net::tls::cert_facts(der).unwrap().names
}

/// GET `path` over an HTTP/1.1 connection already open.
async fn get_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> (http::StatusCode, http::HeaderMap, String) {
    let req = http::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn h1_client(
    tls: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_the_first_serves_clients_without_sni() {
    let dir = temp_dir("sni");
    let ca = tls_server::ca();
    write_cert(
        &dir,
        "a",
        &tls_server::signed(&ca, &["a.test", "www.a.test"], false),
    );
    write_cert(&dir, "b", &tls_server::signed(&ca, &["*.b.test"], false));
    let gw = TlsGateway::start(&dir).await;
    for (sni, tls12, expect) in [
        (Some("a.test"), false, "a.test"),
        (Some("WWW.A.TEST"), false, "a.test"),
        (Some("shop.b.test"), false, "*.b.test"),
        (Some("shop.b.test"), true, "*.b.test"),
        // One label only: a wildcard does not cover deeper names, nor the bare parent.
        (Some("x.shop.b.test"), false, "a.test"),
        (Some("b.test"), false, "a.test"),
        (Some("unknown.test"), false, "a.test"),
        (None, false, "a.test"),
        (None, true, "a.test"),
    ] {
        let (cert, version) = served_cert(gw.tls, sni, tls12).await;
        assert_eq!(names_of(&cert)[0], expect, "SNI {sni:?}");
        let want = if tls12 {
            rustls::ProtocolVersion::TLSv1_2
        } else {
            rustls::ProtocolVersion::TLSv1_3
        };
        assert_eq!(version, want);
    }
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn alpn_h2_and_http11_are_both_served_and_the_upstream_is_told_https() {
    let dir = temp_dir("alpn");
    let ca = tls_server::ca();
    write_cert(&dir, "a", &tls_server::signed(&ca, &["a.test"], false));
    write_cert(&dir, "b", &tls_server::signed(&ca, &["*.b.test"], false));
    let gw = TlsGateway::start(&dir).await;

    // HTTP/1.1, verified against the CA for the name asked.
    let tls = connect(gw.tls, &ca.der, "shop.b.test", b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut sender = h1_client(tls).await;
    for _ in 0..3 {
        let (status, headers, body) = get_h1(&mut sender, "shop.b.test", "/echo").await;
        assert_eq!(status, 200);
        assert_eq!(headers["strict-transport-security"], "max-age=31536000");
        let forwarded = body.to_ascii_lowercase();
        assert!(forwarded.contains("x-forwarded-proto: https\r\n"), "{body}");
        assert!(forwarded.contains("host: shop.b.test\r\n"), "{body}");
    }

    // HTTP/2 on the same listener, chosen by ALPN.
    let tls = connect(gw.tls, &ca.der, "a.test", b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = http::Request::get("https://a.test/echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(
            resp.headers()["strict-transport-security"],
            "max-age=31536000"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let forwarded = String::from_utf8_lossy(&body).to_ascii_lowercase();
        assert!(
            forwarded.contains("x-forwarded-proto: https\r\n"),
            "{forwarded}"
        );
    }
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_plain_listener_with_redirect_https_sends_clients_to_the_tls_port() {
    let dir = temp_dir("redirect");
    let ca = tls_server::ca();
    write_cert(&dir, "a", &tls_server::signed(&ca, &["a.test"], false));
    write_cert(&dir, "b", &tls_server::signed(&ca, &["*.b.test"], false));
    let gw = TlsGateway::start(&dir).await;
    let answer = common::raw(
        gw.plain,
        b"POST /cart/add?item=7 HTTP/1.1\r\nHost: Shop.A.Test:8080\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"),
        "{answer}"
    );
    let location = format!(
        "location: https://shop.a.test:{}/cart/add?item=7\r\n",
        gw.tls.port()
    );
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    // No HSTS over plain HTTP: browsers ignore it there.
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{answer}"
    );
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_plain_http_request_on_the_tls_port_is_answered_in_plain_http() {
    let dir = temp_dir("plain-on-tls");
    let ca = tls_server::ca();
    write_cert(&dir, "a", &tls_server::signed(&ca, &["a.test"], false));
    write_cert(&dir, "b", &tls_server::signed(&ca, &["*.b.test"], false));
    let gw = TlsGateway::start(&dir).await;
    let answer = common::raw(gw.tls, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("This port speaks HTTPS, and the request came in plain HTTP"),
        "{answer}"
    );
    assert_eq!(answer.matches("connection: close").count(), 1, "{answer}");
    // The listener goes on with TLS.
    let tls = connect(gw.tls, &ca.der, "a.test", b"http/1.1").await;
    let mut sender = h1_client(tls).await;
    assert_eq!(get_h1(&mut sender, "a.test", "/echo").await.0, 200);
    // A client that gives up during the handshake is logged, not an error.
    let mut tcp = TcpStream::connect(gw.tls).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0])
        .await
        .unwrap();
    drop(tcp);
    let mut found = false;
    for _ in 0..500 {
        if gw
            .notices()
            .iter()
            .any(|l| l["message"] == "TLS handshake with a client failed; connection closed")
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(found, "{:#?}", gw.notices());
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn reload_serves_new_certificates_on_new_connections_and_keeps_open_ones() {
    let dir = temp_dir("reload");
    let ca = tls_server::ca();
    write_cert(&dir, "a", &tls_server::signed(&ca, &["a.test"], false));
    write_cert(&dir, "b", &tls_server::signed(&ca, &["*.b.test"], false));
    let gw = TlsGateway::start(&dir).await;
    let (before, _) = served_cert(gw.tls, Some("a.test"), false).await;

    let open = connect(gw.tls, &ca.der, "a.test", b"http/1.1").await;
    let mut sender = h1_client(open).await;
    assert_eq!(get_h1(&mut sender, "a.test", "/echo").await.0, 200);

    // A new certificate for a.test, and b renamed to c.test.
    write_cert(
        &dir,
        "a",
        &tls_server::signed(&ca, &["a.test", "new.a.test"], false),
    );
    write_cert(&dir, "b", &tls_server::signed(&ca, &["c.test"], false));
    let report = gw.gateway.reload_certificates();
    assert_eq!(report.replaced, 2);
    assert!(report.kept.is_empty());
    let (after, _) = served_cert(gw.tls, Some("a.test"), false).await;
    assert_ne!(after, before);
    assert_eq!(names_of(&after), ["a.test", "new.a.test"]);
    assert_eq!(
        names_of(&served_cert(gw.tls, Some("c.test"), false).await.0),
        ["c.test"]
    );
    // The name b no longer has goes to the first certificate.
    assert_eq!(
        names_of(&served_cert(gw.tls, Some("x.b.test"), false).await.0)[0],
        "a.test"
    );
    // The connection opened before the reload goes on.
    assert_eq!(get_h1(&mut sender, "a.test", "/echo").await.0, 200);

    // A key that does not belong to its certificate: the old one stays, with a WARN.
    let other = tls_server::signed(&ca, &["a.test"], false);
    std::fs::write(dir.join("a.key"), &other.key_pem).unwrap();
    std::fs::write(dir.join("b.pem"), "not a certificate").unwrap();
    let report = gw.gateway.reload_certificates();
    assert_eq!(report.replaced, 0);
    assert_eq!(report.kept.len(), 2, "{report:?}");
    assert!(
        report.kept[0].contains("does not belong to the certificate"),
        "{report:?}"
    );
    assert!(report.kept[0].starts_with("test.toml:5:7: "), "{report:?}");
    assert!(
        report.kept[1].contains("holds no PEM certificate"),
        "{report:?}"
    );
    assert!(report.kept[1].starts_with("test.toml:7:8: "), "{report:?}");
    let warns: Vec<_> = gw
        .notices()
        .into_iter()
        .filter(|l| {
            l["message"] == "certificate not reloaded; the one loaded before is still served"
        })
        .collect();
    assert_eq!(warns.len(), 2);
    assert_eq!(warns[0]["level"], "WARN");
    assert!(
        warns[0]["file"].as_str().unwrap().ends_with("/a.pem"),
        "{warns:?}"
    );
    assert_eq!(served_cert(gw.tls, Some("a.test"), false).await.0, after);
    assert_eq!(get_h1(&mut sender, "a.test", "/echo").await.0, 200);
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn certificate_files_are_checked_with_the_position_of_their_setting() {
    let dir = temp_dir("check");
    let ca = tls_server::ca();
    let good = tls_server::signed(&ca, &["a.test"], false);
    let other = tls_server::signed(&ca, &["a.test"], false);
    let expired = tls_server::signed(&ca, &["old.test"], true);
    std::fs::write(dir.join("a.pem"), &good.cert_pem).unwrap();
    std::fs::write(dir.join("a.key"), &other.key_pem).unwrap();
    write_cert(&dir, "old", &expired);
    let text = r#"listen_tls = ["127.0.0.1:0"]
[[certificate]]
cert = "a.pem"
key = "a.key"
[[certificate]]
cert = "old.pem"
key = "old.key"
[[certificate]]
cert = "missing.pem"
key = "old.key"
[upstream.app]
endpoints = ["127.0.0.1:9"]
[[route]]
upstream = "app"
"#;
    let config = config::Config::parse(text, "site.toml", &dir).unwrap();
    let report = proxy::read_certificates(&config);
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("site.toml:4:7: the key in `"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("a.key` does not belong to the certificate in `"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("site.toml:9:8: cannot read certificate file `"),
        "{problems:?}"
    );
    let warnings: Vec<String> = report.warnings.iter().map(|p| p.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("site.toml:6:8: `"), "{warnings:?}");
    assert!(
        warnings[0].contains("the certificate expired on 2021-01-01"),
        "{warnings:?}"
    );
    // The gateway does not start on such a file.
    let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(Default::default())).unwrap());
    let err = Gateway::new(config, logger).err().unwrap();
    assert!(err.contains("site.toml:4:7: "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary: `serve` with a TLS listener, then SIGHUP after the files changed: the
/// configuration is read again, and with it the certificates.
#[test]
fn sighup_reloads_the_certificates_of_a_running_gateway() {
    let dir = temp_dir("sighup");
    let ca = tls_server::ca();
    write_cert(&dir, "a", &tls_server::signed(&ca, &["a.test"], false));
    write_cert(&dir, "b", &tls_server::signed(&ca, &["*.b.test"], false));
    let file = dir.join("cleargate.toml");
    std::fs::write(
        &file,
        config_text(&dir, "127.0.0.1:9".parse().unwrap()).replacen(
            "listen =",
            "workers = 2\nlisten =",
            1,
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["serve", "-c"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut wait_for = |message: &str| -> serde_json::Value {
        for line in lines.by_ref() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["message"] == message {
                return v;
            }
        }
        panic!("the gateway ended without logging {message:?}");
    };
    let serving = wait_for("serving");
    let tls: SocketAddr = serving["listen"][1].as_str().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (before, _) = rt.block_on(served_cert(tls, Some("a.test"), false));
    assert_eq!(names_of(&before), ["a.test"]);
    write_cert(
        &dir,
        "a",
        &tls_server::signed(&ca, &["a.test", "v2.a.test"], false),
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reloaded = wait_for("configuration reloaded");
    assert_eq!(reloaded["generation"], 1);
    // Every worker serves the new certificate: several connections, spread by the kernel.
    for _ in 0..8 {
        let (after, _) = rt.block_on(served_cert(tls, Some("a.test"), false));
        assert_eq!(names_of(&after), ["a.test", "v2.a.test"]);
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway in front of one TLS upstream at `upstream`, with `tls` as its `[tls]` table.
async fn tls_upstream_gateway(dir: &Path, upstream: SocketAddr, tls: &str) -> common::Gw {
    let d = dir.display();
    let tls = tls.replace("DIR", &d.to_string());
    common::gateway(&format!(
        r#"listen = ["127.0.0.1:0"]
[upstream.api]
endpoints = ["{upstream}"]
connect_timeout = "2s"
[upstream.api.tls]
{tls}
[[route]]
upstream = "api"
"#
    ))
    .await
}

async fn get_plain(addr: SocketAddr) -> common::Seen {
    common::send(
        addr,
        common::get(addr, "/")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn an_upstream_over_tls_answers_and_each_certificate_problem_is_named() {
    let dir = temp_dir("upstream");
    let ca = tls_server::ca();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let settings = "ca = \"DIR/ca.pem\"\nsni = \"api.internal\"";

    // A CA file and an SNI name: the upstream answers, over one kept-alive connection.
    let (good, _t1) = tls_server::serve(tls_server::signed(&ca, &["api.internal"], false)).await;
    let gw = tls_upstream_gateway(&dir, good, settings).await;
    for _ in 0..3 {
        let seen = get_plain(gw.addr).await;
        assert_eq!(seen.status, 200, "{}", seen.text());
        assert_eq!(seen.text(), "ok");
    }
    gw.stop().await;

    // Each problem: 502, `tls` in Proxy-Status, and the detail says which.
    let (misnamed, _t2) =
        tls_server::serve(tls_server::signed(&ca, &["other.internal"], false)).await;
    let (expired, _t3) = tls_server::serve(tls_server::signed(&ca, &["api.internal"], true)).await;
    let (selfsigned, _t4) = tls_server::serve(tls_server::self_signed(&["api.internal"])).await;
    // A plain HTTP server, which answers the TLS hello with a 400 as nginx does.
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = plain_listener.local_addr().unwrap();
    let _t5 = tokio::spawn(async move {
        while let Ok((mut s, _)) = plain_listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    for (addr, words) in [
        (
            misnamed,
            "wrong name: the certificate is for other.internal but not for api.internal",
        ),
        (expired, "expired: the certificate expired on 2021-01-01 ("),
        (selfsigned, "self-signed: the certificate signed itself"),
        (
            plain,
            "the server did not answer with TLS: is this a plain HTTP port?",
        ),
    ] {
        let gw = tls_upstream_gateway(&dir, addr, settings).await;
        let seen = get_plain(gw.addr).await;
        assert_eq!(seen.status, 502, "{words}: {}", seen.text());
        let ps = seen.header("proxy-status");
        assert!(ps.contains("error=tls_protocol_error"), "{ps}");
        assert!(ps.contains("cause=tls phase=tls_handshake"), "{ps}");
        assert!(
            ps.contains(&format!(" / certificate rejected: {words}"))
                || ps.contains(&format!(" / {words}")),
            "{words}: {ps}"
        );
        assert!(
            seen.text()
                .contains(&format!("Detail: certificate rejected: {words}"))
                || seen.text().contains(words),
            "{}",
            seen.text()
        );
        let line = gw
            .wait_line("the gateway error", |l| l["kind"] == "gateway_error")
            .await;
        assert_eq!(line["cause"], "tls");
        assert!(line["detail"].as_str().unwrap().contains(words), "{line}");
        gw.stop().await;
    }

    // `verify = false` accepts the self-signed one, with a WARN at start.
    let gw = tls_upstream_gateway(&dir, selfsigned, "verify = false").await;
    assert_eq!(get_plain(gw.addr).await.status, 200);
    let warn = gw
        .wait_line("the verify warning", |l| {
            l["message"] == "TLS configuration warning"
        })
        .await;
    assert_eq!(warn["level"], "WARN");
    assert!(
        warn["problem"].as_str().unwrap().contains("not verified"),
        "{warn}"
    );
    gw.stop().await;

    // Mutual TLS: an upstream that wants a client certificate refuses the gateway without one
    // and answers with it.
    let client = tls_server::signed(&ca, &["gateway.internal"], false);
    write_cert(&dir, "client", &client);
    let (mtls, _t6) =
        tls_server::serve_with(tls_server::signed(&ca, &["api.internal"], false), Some(&ca)).await;
    let gw = tls_upstream_gateway(&dir, mtls, settings).await;
    let seen = get_plain(gw.addr).await;
    assert_eq!(seen.status, 502, "{}", seen.text());
    assert!(
        seen.header("proxy-status").contains("cause=tls"),
        "{}",
        seen.header("proxy-status")
    );
    gw.stop().await;
    let with_cert =
        format!("{settings}\nclient_cert = \"DIR/client.pem\"\nclient_key = \"DIR/client.key\"");
    let gw = tls_upstream_gateway(&dir, mtls, &with_cert).await;
    let seen = get_plain(gw.addr).await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
