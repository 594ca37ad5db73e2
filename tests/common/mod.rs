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
    for (fault, addr) in lab.addrs() {
        let name = fault.name();
        s.push_str(&format!(
            "[upstream.{name}]\nendpoints = [\"{addr}\"]\n{UPSTREAM_TIMEOUTS}\n[[route]]\npath = \"/f/{name}\"\nupstream = \"{name}\"\n\n"
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
    let text = config_text(&lab, top);
    let config =
        config::Config::parse(&text, "test.toml", Path::new(".")).unwrap_or_else(|p| panic!("{p}"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(logs.clone())).unwrap());
    let gateway = Gateway::new(config, logger).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.serve(vec![listener], shutdown.clone()));
    Harness {
        addr,
        lab,
        logs,
        shutdown,
        task,
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
