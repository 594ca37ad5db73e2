//! A certificate issued by a real ACME server and served, end to end on loopback: Debian's
//! `pebble` with its `pebble-challtestsrv` (name server for the test domains), the gateway's
//! ACME client answering the HTTP-01 challenge on its plain listener, then a TLS client that
//! trusts Pebble's root connecting to the gateway by SNI.
//!
//! `.ci/run` installs pebble. Without it (a machine that has only the Rust toolchain) the test
//! says so in one line and passes, except under `CI`, where it fails.

#[path = "support/canned.rs"]
mod canned;
#[path = "support/tls_server.rs"]
mod tls_server;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy::log::{Format, Logger, Sink};
use proxy::{CancellationToken, Gateway};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Kills the child processes when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn wait_listening(addr: SocketAddr, what: &str) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start listening on {addr}");
}

fn tls_client(
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GET over TLS with `Connection: close`; the whole answer.
async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> (String, Vec<String>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS with {name} at {addr}: {e}"));
    let names = {
        let (_, session) = tls.get_ref();
        net::tls::cert_facts(&session.peer_certificates().unwrap()[0])
            .unwrap()
            .names
    };
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    (String::from_utf8_lossy(&out).into_owned(), names)
}

#[tokio::test]
async fn a_certificate_issued_by_pebble_is_served() {
    if !installed("pebble") || !installed("pebble-challtestsrv") {
        assert!(
            std::env::var_os("CI").is_none(),
            "pebble is not installed: .ci/run must install it (apt-get install pebble)"
        );
        println!("pebble is not installed (apt-get install pebble): the ACME end-to-end test did not run");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cleargate-acme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Pebble's own HTTPS certificate, from a test CA the gateway is told to trust.
    let ca = tls_server::ca();
    let pebble_cert = tls_server::signed(&ca, &["localhost", "127.0.0.1"], false);
    std::fs::write(dir.join("pebble-ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("pebble.pem"), &pebble_cert.cert_pem).unwrap();
    std::fs::write(dir.join("pebble.key"), &pebble_cert.key_pem).unwrap();

    let dns_port = free_udp_port();
    let chall_mgmt = free_tcp_port();
    let mut children = Children(Vec::new());
    children.0.push(
        Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{chall_mgmt}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(
        format!("127.0.0.1:{chall_mgmt}").parse().unwrap(),
        "pebble-challtestsrv",
    )
    .await;
    // HTTP-01 on the plain listener, then TLS-ALPN-01 on the TLS one.
    issue_and_serve(&dir, &ca, dns_port, "http-01", &mut children).await;
    issue_and_serve(&dir, &ca, dns_port, "tls-alpn-01", &mut children).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a Pebble whose validator checks the ports of a new gateway, lets the gateway obtain a
/// certificate with `challenge`, checks it is served, then starts the gateway again from what it
/// stored.
async fn issue_and_serve(
    dir: &std::path::Path,
    ca: &tls_server::Ca,
    dns_port: u16,
    challenge: &str,
    children: &mut Children,
) {
    // The gateway's listeners first: Pebble checks the challenges on their ports.
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    let (acme_port, mgmt_port) = (free_tcp_port(), free_tcp_port());
    let pebble_json = dir.join(format!("pebble-{challenge}.json"));
    std::fs::write(
        &pebble_json,
        format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme_port}", "managementListenAddress": "127.0.0.1:{mgmt_port}",
"certificate": "{d}/pebble.pem", "privateKey": "{d}/pebble.key", "httpPort": {http}, "tlsPort": {https},
"ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            d = dir.display(),
            http = plain_addr.port(),
            https = tls_addr.port()
        ),
    )
    .unwrap();
    children.0.push(
        Command::new("pebble")
            .arg("-config")
            .arg(&pebble_json)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(format!("127.0.0.1:{acme_port}").parse().unwrap(), "pebble").await;

    let upstream = canned::start().await;
    let text = format!(
        r#"listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
[acme]
email = "ops@shop.test"
directory = "https://127.0.0.1:{acme_port}/dir"
domains = ["shop.test", "www.shop.test"]
storage = "acme-{challenge}"
ca = "pebble-ca.pem"
challenge = "{challenge}"
[upstream.app]
endpoints = ["{up}"]
[[route]]
upstream = "app"
"#,
        up = upstream.addr
    );
    let config = config::Config::parse(&text, "acme.toml", dir).unwrap_or_else(|p| panic!("{p}"));
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(logs.clone())).unwrap());
    let gateway = Gateway::new(config, logger).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.clone().serve(vec![plain, tls], shutdown.clone()));

    // The gateway obtains the certificate by itself.
    let mut obtained = None;
    for _ in 0..1200 {
        let lines: Vec<serde_json::Value> = logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if let Some(l) = lines
            .iter()
            .find(|l| l["message"] == "certificate obtained from the ACME server")
        {
            obtained = Some(l.clone());
            break;
        }
        if let Some(l) = lines.iter().find(|l| l["level"] == "WARN") {
            panic!("the ACME client failed: {l}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let obtained = obtained.expect("a certificate within 60 s");
    assert_eq!(
        obtained["names"],
        serde_json::json!(["shop.test", "www.shop.test"])
    );
    let storage = dir.join(format!("acme-{challenge}"));
    assert!(storage.join("cert.pem").exists() && storage.join("key.pem").exists());
    assert!(storage.join("account.key").exists());

    // Pebble's root, from its management interface, is what a client trusts.
    let mgmt_trust = tls_client(vec![ca.der.clone()]);
    let (root, _) = https_get(
        &mgmt_trust,
        format!("127.0.0.1:{mgmt_port}").parse().unwrap(),
        "localhost",
        "/roots/0",
    )
    .await;
    let pem = &root[root.find("-----BEGIN").expect("a PEM root")..];
    let roots = net::tls::load_pem_certs(pem.as_bytes()).unwrap();
    let client = tls_client(roots);
    for name in ["shop.test", "www.shop.test"] {
        let (answer, names) = https_get(&client, tls_addr, name, "/echo").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(names, ["shop.test", "www.shop.test"]);
    }
    shutdown.cancel();
    task.await.unwrap();
    // This Pebble is done; the next one checks the next gateway's ports.
    if let Some(mut pebble) = children.0.pop() {
        let _ = pebble.kill();
        let _ = pebble.wait();
    }

    // Started again with the certificate stored, the gateway serves it at once (Pebble gone).
    let config = config::Config::parse(&text, "acme.toml", dir).unwrap();
    let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(Default::default())).unwrap());
    let gateway = Gateway::new(config, logger).unwrap();
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.serve(vec![plain, tls], shutdown.clone()));
    let (answer, _) = https_get(&client, tls_addr, "shop.test", "/echo").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    shutdown.cancel();
    task.await.unwrap();
}
