//! WebSocket and HTTP Upgrade through the gateway: echoes of a few hundred messages over `ws://`
//! and `wss://` to the lab's WebSocket echo, pings and the close handshake, the access line and
//! the tunnel's end, `upgrade_failed` from an upstream that does not switch, a refusal relayed,
//! `Upgrade: h2c` never forwarded, the tunnel idle timeout, and graceful shutdown waiting for an
//! open tunnel.

#[path = "support/canned.rs"]
mod canned;
mod common;
#[path = "support/tls_server.rs"]
mod tls_server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab::{Fault, Lab, LabOptions};
use proxy::log::{Format, Logger, Sink};
use proxy::{CancellationToken, Gateway};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A small WebSocket client: masked frames out, unmasked frames in (RFC 6455).
struct Ws<S> {
    s: S,
    buf: Vec<u8>,
}

const KEY: &str = "x3JJHMbDL1EzLkh9GBhXDw==";

/// The opening handshake on `s`; the answer's head, when it is not a 101.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
) -> Result<Ws<S>, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: http://{host}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before the head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 101 ") {
        // The rest of the answer, to the close.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        return Err(String::from_utf8_lossy(&buf).into_owned());
    }
    let lower = head.to_ascii_lowercase();
    let accept =
        format!("sec-websocket-accept: {}\r\n", lab::ws::accept_key(KEY)).to_ascii_lowercase();
    assert!(lower.contains(&accept), "{head}");
    assert!(lower.contains("upgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("connection: upgrade\r\n"), "{head}");
    assert!(lower.contains("x-request-id: "), "{head}");
    buf.drain(..end);
    Ok(Ws { s, buf })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = fastrand_mask();
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).await.unwrap();
    }

    async fn fill(&mut self, want: usize) {
        while self.buf.len() < want {
            let mut chunk = [0u8; 16 * 1024];
            let n = self.s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the tunnel closed mid-frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame: opcode and payload.
    async fn recv(&mut self) -> (u8, Vec<u8>) {
        self.fill(2).await;
        assert_eq!(self.buf[1] & 0x80, 0, "a server frame is never masked");
        let (len, at) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(at + len).await;
        let op = self.buf[0] & 0x0f;
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        (op, payload)
    }

    /// Several hundred messages of many sizes, a ping, then the close handshake.
    async fn exchange_messages(&mut self) {
        for i in 0..300usize {
            let size = match i % 5 {
                0 => 0,
                1 => 1 + i,
                2 => 126 + i,
                3 => 70_000,
                _ => 20,
            };
            let msg: Vec<u8> = (0..size).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            let op = if i % 2 == 0 { 0x1 } else { 0x2 };
            self.send(op, &msg).await;
            let (got_op, got) = self.recv().await;
            assert_eq!(got_op, op, "message {i}");
            assert!(
                got == msg,
                "message {i}: {} bytes back for {}",
                got.len(),
                msg.len()
            );
        }
        self.send(0x9, b"are you there").await;
        assert_eq!(self.recv().await, (0xA, b"are you there".to_vec()));
        self.send(0x8, &[0x03, 0xe8]).await;
        assert_eq!(self.recv().await, (0x8, vec![0x03, 0xe8]));
        // The echo closes after the close frame, and so does the tunnel.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.s.read_to_end(&mut rest))
            .await
            .expect("the tunnel closes after the close handshake");
        assert_eq!(n.unwrap_or(0), 0);
        // And the client closes its side, as clients do.
        let _ = self.s.shutdown().await;
    }
}

fn fastrand_mask() -> [u8; 4] {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0x1234_5678);
    let n = N.fetch_add(0x9E37_79B9, std::sync::atomic::Ordering::Relaxed);
    n.to_le_bytes()
}

struct Setup {
    plain: SocketAddr,
    tls: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    ca: tls_server::Ca,
    dir: std::path::PathBuf,
    _lab: Lab,
    _canned: canned::Canned,
}

impl Setup {
    /// A gateway with a plain and a TLS listener in front of the lab's upgrade faults and the
    /// canned upstream (`/echo` shows the request as forwarded).
    async fn start(extra: &str) -> Setup {
        let lab = Lab::start(
            &[
                (Fault::Websocket, 0),
                (Fault::Noupgrade, 0),
                (Fault::Status, 0),
            ],
            [127, 0, 0, 1].into(),
            LabOptions {
                status: 403,
                ..LabOptions::default()
            },
        )
        .await
        .unwrap();
        let canned = canned::start().await;
        let dir = std::env::temp_dir().join(format!(
            "cleargate-ws-{}-{}",
            std::process::id(),
            fastrand_mask()[0]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = tls_server::ca();
        let cert = tls_server::signed(&ca, &["ws.test"], false);
        std::fs::write(dir.join("ws.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.join("ws.key"), &cert.key_pem).unwrap();
        let ws = lab.addr(Fault::Websocket).unwrap();
        let no = lab.addr(Fault::Noupgrade).unwrap();
        let refuse = lab.addr(Fault::Status).unwrap();
        let text = format!(
            r#"listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
{extra}
[[certificate]]
cert = "{d}/ws.pem"
key = "{d}/ws.key"
[upstream.ws]
endpoints = ["{ws}"]
[upstream.no]
endpoints = ["{no}"]
[upstream.refuse]
endpoints = ["{refuse}"]
[upstream.canned]
endpoints = ["{canned}"]
[[route]]
path = "/chat"
upstream = "ws"
[[route]]
path = "/none"
upstream = "no"
[[route]]
path = "/refuse"
upstream = "refuse"
[[route]]
path = "/"
upstream = "canned"
"#,
            d = dir.display(),
            canned = canned.addr
        );
        let config =
            config::Config::parse(&text, "ws.toml", &dir).unwrap_or_else(|p| panic!("{p}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(logs.clone())).unwrap());
        let gateway = Gateway::new(config, logger).unwrap();
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (plain_addr, tls_addr) = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway.serve(vec![plain, tls], shutdown.clone()));
        Setup {
            plain: plain_addr,
            tls: tls_addr,
            logs,
            shutdown,
            task,
            ca,
            dir,
            _lab: lab,
            _canned: canned,
        }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn wait_line(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        for _ in 0..1000 {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no such line in {:#?}", self.lines());
    }

    async fn wss(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        // A WebSocket client offers HTTP/1.1 only: the switch is HTTP/1.1's.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(self.tls).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("ws.test").unwrap(), tcp)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_websocket_echo_works_through_ws_and_wss() {
    let s = Setup::start("").await;
    let tcp = TcpStream::connect(s.plain).await.unwrap();
    let mut ws = open(tcp, "ws.test", "/chat").await.unwrap();
    ws.exchange_messages().await;
    let ended = s.wait_line(|l| l["message"] == "tunnel ended").await;
    assert_eq!(ended["ended"], "closed");
    assert_eq!(ended["protocol"], "websocket");
    assert!(
        ended["from_client"].as_u64().unwrap() > 300 * 14_000,
        "{ended}"
    );
    assert!(
        ended["from_upstream"].as_u64().unwrap() > 300 * 14_000,
        "{ended}"
    );
    let access = s
        .wait_line(|l| l["kind"] == "access" && l["request_id"] == ended["request_id"])
        .await;
    assert_eq!(access["status"], 101);
    assert_eq!(access["upstream"], "ws");

    let tls = s.wss().await;
    let mut ws = open(tls, "ws.test", "/chat").await.unwrap();
    ws.exchange_messages().await;
    s.stop().await;
}

#[tokio::test]
async fn an_upstream_that_does_not_switch_is_upgrade_failed_and_a_refusal_is_relayed() {
    let s = Setup::start("").await;
    let tcp = TcpStream::connect(s.plain).await.unwrap();
    let answer = open(tcp, "ws.test", "/none").await.err().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"),
        "{answer}"
    );
    assert!(answer.contains("error=http_upgrade_failed"), "{answer}");
    assert!(
        answer.contains("cause=upgrade_failed phase=upgrade"),
        "{answer}"
    );
    assert!(
        answer.contains("the upstream answered 200 OK to a request to switch to websocket"),
        "{answer}"
    );
    let warn = s
        .wait_line(|l| l["kind"] == "gateway_error" && l["cause"] == "upgrade_failed")
        .await;
    assert_eq!(warn["level"], "WARN");

    // The application's own 403 is its answer: relayed, and the connection closed after it.
    let tcp = TcpStream::connect(s.plain).await.unwrap();
    let answer = open(tcp, "ws.test", "/refuse").await.err().unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("connection: close\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("proxy-status"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn upgrade_h2c_is_never_forwarded() {
    let s = Setup::start("").await;
    let answer = common::raw(
        s.plain,
        b"GET /echo HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let forwarded = answer.to_ascii_lowercase();
    assert!(!forwarded.contains("upgrade: h2c"), "{answer}");
    assert!(!forwarded.contains("http2-settings"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_shutdown_waits_for_an_open_one() {
    let s = Setup::start("[limits]\ntunnel_idle_timeout = \"300ms\"").await;
    let tcp = TcpStream::connect(s.plain).await.unwrap();
    let mut ws = open(tcp, "ws.test", "/chat").await.unwrap();
    ws.send(0x1, b"once").await;
    assert_eq!(ws.recv().await, (0x1, b"once".to_vec()));
    // Then nothing: the gateway closes the tunnel.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), ws.s.read_to_end(&mut rest))
        .await
        .expect("the idle tunnel is closed");
    assert_eq!(n.unwrap(), 0);
    let ended = s.wait_line(|l| l["message"] == "tunnel ended").await;
    assert_eq!(ended["ended"], "idle_timeout");
    s.stop().await;

    // A tunnel open when shutdown starts goes on until it ends.
    let s = Setup::start("").await;
    let tcp = TcpStream::connect(s.plain).await.unwrap();
    let mut ws = open(tcp, "ws.test", "/chat").await.unwrap();
    s.shutdown.cancel();
    for i in 0..20u8 {
        ws.send(0x2, &[i; 10]).await;
        assert_eq!(ws.recv().await, (0x2, vec![i; 10]));
    }
    assert!(!s.task.is_finished(), "shutdown waits for the tunnel");
    ws.send(0x8, &[]).await;
    assert_eq!(ws.recv().await.0, 0x8);
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("shutdown ends once the tunnel has")
        .unwrap();
}
