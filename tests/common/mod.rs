//! Test setup: the lab, a gateway in front of it on an ephemeral port, its log lines in memory,
//! and small HTTP clients (HTTP/1.1 and h2c) that report body errors instead of hiding them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lab::{Fault, Lab, LabOptions};
use proxy::log::{Format, Logger, Sink};
use proxy::{CancellationToken, Gateway};
use tokio::net::{TcpListener, TcpStream};

pub struct Harness {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub lab: Lab,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Fast deadlines so that timeouts are reached in a fraction of a second.
pub const UPSTREAM_TIMEOUTS: &str =
    "connect_timeout = \"300ms\"\nresponse_timeout = \"300ms\"\nbody_timeout = \"300ms\"\nsend_timeout = \"2s\"\nrestart_wait = \"200ms\"\n";

/// The config text: one upstream per lab fault, routed at `/f/NAME`, plus `top` at the top
/// level (limits, pages).
pub fn config_text(lab: &Lab, top: &str) -> String {
    let mut s = format!("listen = [\"127.0.0.1:0\"]\n{top}\n");
    // The TLS faults are reached over TLS, trusting the lab's CA.
    let ca = lab.ca_pem().map(|pem| {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "cleargate-lab-ca-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, pem).unwrap();
        path
    });
    for (fault, addr) in lab.addrs() {
        let name = fault.name();
        s.push_str(&format!(
            "[upstream.{name}]\nendpoints = [\"{addr}\"]\n{UPSTREAM_TIMEOUTS}\n"
        ));
        if let (true, Some(ca)) = (fault.tls(), &ca) {
            s.push_str(&format!(
                "[upstream.{name}.tls]\nca = \"{}\"\n",
                ca.display()
            ));
        }
        s.push_str(&format!(
            "[[route]]\npath = \"/f/{name}\"\nupstream = \"{name}\"\n\n"
        ));
    }
    s
}

pub async fn start(top: &str) -> Harness {
    let opts = LabOptions {
        slow_delay: Duration::from_millis(100),
        flaky_every: Some(2),
        ..LabOptions::default()
    };
    let lab = Lab::start_all(opts).await.expect("lab starts");
    start_with(lab, top).await
}

pub async fn start_with(lab: Lab, top: &str) -> Harness {
    let gw = gateway(&config_text(&lab, top)).await;
    Harness {
        addr: gw.addr,
        gateway: gw.gateway,
        lab,
        logs: gw.logs,
        shutdown: gw.shutdown,
        task: gw.task,
    }
}

impl Harness {
    /// Log lines parsed as JSON.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }

    /// The access line of request `id`, waiting (bounded) until it is written: a streamed
    /// response is logged when its body ends, a moment after the client saw the end.
    pub async fn access_line(&self, id: &str) -> serde_json::Value {
        self.wait_line(|l| l["kind"] == "access" && l["request_id"] == id)
            .await
    }

    pub async fn wait_line(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        for _ in 0..500 {
            if let Some(l) = self.log_lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no such log line in {:#?}", self.log_lines());
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.lab.shutdown().await;
    }
}

/// A response as the client saw it; `body` is `Err` when the body did not end cleanly.
#[derive(Debug)]
pub struct Seen {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl Seen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref().expect("complete body")).into_owned()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// Sends `req` over a new HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("a response head");
    collect(resp).await
}

/// Sends `req` over a new h2c (prior knowledge) connection.
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("a response head");
    collect(resp).await
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> Seen {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Seen {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn get(addr: SocketAddr, path: &str) -> http::request::Builder {
    let _ = addr;
    Request::get(path).header("host", "gw.test")
}

pub async fn get_fault(h: &Harness, fault: Fault, accept: Option<&str>) -> Seen {
    let mut b = get(h.addr, &format!("/f/{}", fault.name()));
    if let Some(a) = accept {
        b = b.header("accept", a);
    }
    if fault.upgrade() {
        // The upgrade faults show only to a request that asks to switch to WebSocket.
        b = b
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    send(h.addr, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Writes raw bytes on a new connection and reads everything until the gateway closes it.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A gateway from a complete configuration text, without a lab of its own.
pub struct Gw {
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub gateway: Arc<Gateway>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

pub async fn gateway(text: &str) -> Gw {
    let config =
        config::Config::parse(text, "test.toml", Path::new(".")).unwrap_or_else(|p| panic!("{p}"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(logs.clone())).unwrap());
    let gateway = Gateway::new(config, logger).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.clone().serve(vec![listener], shutdown.clone()));
    Gw {
        addr,
        logs,
        gateway,
        shutdown,
        task,
    }
}

impl Gw {
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded, 10 s) for a log line matching `pred`, reading only lines not yet seen.
    pub async fn wait_line(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut seen = 0;
        for _ in 0..1000 {
            let fresh: Vec<String> = {
                let lines = self.logs.lock().unwrap();
                let fresh = lines[seen..].to_vec();
                seen = lines.len();
                fresh
            };
            for l in fresh {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                if pred(&v) {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let notices: Vec<String> = self
            .log_lines()
            .iter()
            .filter(|l| l["kind"] != "access")
            .rev()
            .take(20)
            .map(|l| l.to_string())
            .collect();
        panic!(
            "no log line: {what}; latest other lines:\n{}",
            notices.join("\n")
        );
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// A keep-alive HTTP/1.1 client connection to the gateway, reused across requests.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &'static [u8]) -> Seen {
        self.sender.ready().await.unwrap();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gw.test")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let resp = self
            .sender
            .send_request(req)
            .await
            .expect("a response head");
        collect(resp).await
    }
}

/// Starts one lab fault on `ip`, on `port` (0 = any).
pub async fn one(fault: Fault, ip: [u8; 4], port: u16, opts: LabOptions) -> Lab {
    Lab::start(&[(fault, port)], ip.into(), opts)
        .await
        .expect("lab starts")
}

/// How the fake name server answers a name.
#[derive(Clone, Debug)]
pub enum DnsAnswer {
    /// A records with this TTL in seconds.
    A(Vec<std::net::Ipv4Addr>, u32),
    NxDomain,
    /// No answer at all, as a dead name server.
    Silent,
}

/// A fake DNS server on 127.0.0.1 (UDP), answering from a table that tests change at will.
pub struct FakeDns {
    pub addr: SocketAddr,
    pub table: Arc<Mutex<std::collections::HashMap<String, DnsAnswer>>>,
    pub queries: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDns {
    pub async fn start() -> FakeDns {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let table: Arc<Mutex<std::collections::HashMap<String, DnsAnswer>>> = Arc::default();
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (t, q) = (table.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                q.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reply = dns_reply(&buf[..n], &t.lock().unwrap());
                if let Some(reply) = reply {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        FakeDns {
            addr,
            table,
            queries,
            task,
        }
    }

    pub fn set(&self, name: &str, answer: DnsAnswer) {
        self.table.lock().unwrap().insert(name.to_string(), answer);
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the reply to one query (RFC 1035 4.1), or `None` to stay silent.
fn dns_reply(q: &[u8], table: &std::collections::HashMap<String, DnsAnswer>) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels up to the zero byte, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    while i < q.len() && q[i] != 0 {
        let len = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let question_end = i + 5;
    let name = labels.join(".");
    let answer = table.get(&name).cloned().unwrap_or(DnsAnswer::NxDomain);
    let (rcode, records): (u8, Vec<(std::net::Ipv4Addr, u32)>) = match answer {
        DnsAnswer::Silent => return None,
        DnsAnswer::NxDomain => (3, vec![]),
        // Only A records: an AAAA question gets an empty, successful answer.
        DnsAnswer::A(ips, ttl) if qtype == 1 => (0, ips.into_iter().map(|ip| (ip, ttl)).collect()),
        DnsAnswer::A(..) => (0, vec![]),
    };
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&q[0..2]);
    r.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    r.push(0x80 | rcode); // RA, rcode
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&(records.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..question_end)?);
    for (ip, ttl) in records {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}
