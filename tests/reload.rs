//! Changing the configuration without a restart: reloads under load lose no request and keep
//! the upstreams that did not change; a broken file leaves the running configuration serving
//! and says where the problem is; listeners come and go; the admin API reloads.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lab::{Fault, Lab, LabOptions};
use proxy::log::{Format, Logger, Sink};
use proxy::{CancellationToken, Gateway, Live};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cleargate-reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The configuration of generation `name`: `app` always the same; `extra` (and its route) and
/// a second listener on 127.0.0.2 only when asked.
fn text(name: &str, ok: SocketAddr, extra: bool, second_listener: bool, top: &str) -> String {
    let listen = if second_listener {
        r#"["127.0.0.1:0", "127.0.0.2:0"]"#
    } else {
        r#"["127.0.0.1:0"]"#
    };
    let mut s = format!(
        "server_name = \"{name}\"\nlisten = {listen}\n{top}\n[upstream.app]\nendpoints = [\"{ok}\"]\n"
    );
    if extra {
        s.push_str(&format!(
            "[upstream.extra]\nendpoints = [\"{ok}\"]\n[[route]]\npath = \"/extra\"\nupstream = \"extra\"\n"
        ));
    }
    s.push_str("[[route]]\nupstream = \"app\"\n");
    s
}

struct Running {
    live: Arc<Live>,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(file: &Path) -> Running {
    let config = config::Config::load(file).unwrap_or_else(|p| panic!("{p}"));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let logger = Arc::new(Logger::new(Format::Json, Sink::Memory(logs.clone())).unwrap());
    let gateway = Gateway::new(config, logger).unwrap();
    let live = Live::new(gateway, Some(file.to_path_buf()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(live.clone().serve(vec![listener], shutdown.clone()));
    Running {
        live,
        addr,
        logs,
        shutdown,
        task,
    }
}

impl Running {
    fn lines(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// One request on a new connection; the status and the `Via` of the answer.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "gw.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let via = resp
        .headers()
        .get("via")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    (status, via)
}

/// An admin request over a new connection; the status line and the body.
async fn admin(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_lose_no_request_and_keep_unchanged_upstreams() {
    let lab = Lab::start(
        &[(Fault::Ok, 0)],
        "127.0.0.1".parse().unwrap(),
        LabOptions::default(),
    )
    .await
    .unwrap();
    let ok = lab.addr(Fault::Ok).unwrap();
    let dir = temp_dir("load");
    let file = dir.join("cleargate.toml");
    let a = text("gen-a", ok, true, false, "");
    let b = text("gen-b", ok, false, false, "");
    std::fs::write(&file, &a).unwrap();
    let gw = start(&file).await;
    let app = gw.live.current().upstream("app").unwrap().clone();

    // Eight keep-alive clients, each sending requests one after another until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed, seen_a, seen_b) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, answered, failed, seen_a, seen_b, failures) = (
            stop.clone(),
            answered.clone(),
            failed.clone(),
            seen_a.clone(),
            seen_b.clone(),
            failures.clone(),
        );
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            // Bounded: at most 10 s of requests however fast they go.
            let until = tokio::time::Instant::now() + Duration::from_secs(15);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
                let req = http::Request::get("/")
                    .header("host", "gw.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let via = resp
                            .headers()
                            .get("via")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = resp.into_body().collect().await;
                        if status == 200 && body.is_ok() {
                            answered.fetch_add(1, Ordering::Relaxed);
                            match via.as_str() {
                                "1.1 gen-a" => seen_a.fetch_add(1, Ordering::Relaxed),
                                _ => seen_b.fetch_add(1, Ordering::Relaxed),
                            };
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().unwrap().push(format!("{status}"));
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().unwrap().push(e.to_string());
                        return;
                    }
                }
            }
        }));
    }

    // Ten reloads, one a second, alternating between the two files.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for i in 1..=10u64 {
        tick.tick().await;
        let next = if i % 2 == 1 { &b } else { &a };
        std::fs::write(&file, next).unwrap();
        let outcome = gw.live.reload().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(outcome.generation, i);
        assert_eq!(outcome.upstreams_kept, ["app"], "{outcome:?}");
        if i % 2 == 1 {
            assert_eq!(outcome.upstreams_removed, ["extra"], "{outcome:?}");
        } else {
            assert_eq!(outcome.upstreams_started, ["extra"], "{outcome:?}");
        }
    }
    tick.tick().await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{failures:?}");
    assert!(answered.load(Ordering::Relaxed) > 1000);
    // The keep-alive connections saw both configurations: a reload reaches open connections.
    assert!(seen_a.load(Ordering::Relaxed) > 0);
    assert!(seen_b.load(Ordering::Relaxed) > 0);
    // `app` never changed: the same upstream, its pool kept, so the lab saw about as many
    // upstream connections as clients at once (eight, and a few replaced by the pool's own
    // hygiene), not eight per configuration (88).
    assert!(Arc::ptr_eq(
        &app,
        gw.live.current().upstream("app").unwrap()
    ));
    let opened = lab.stats(Fault::Ok).connections;
    assert!(opened <= 20, "{opened} upstream connections were opened");
    let reloads = gw
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "configuration reloaded")
        .count();
    assert_eq!(reloads, 10);
    gw.stop().await;
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_broken_file_keeps_the_running_configuration_and_listeners_come_and_go() {
    let lab = Lab::start(
        &[(Fault::Ok, 0)],
        "127.0.0.1".parse().unwrap(),
        LabOptions::default(),
    )
    .await
    .unwrap();
    let ok = lab.addr(Fault::Ok).unwrap();
    let dir = temp_dir("broken");
    let file = dir.join("cleargate.toml");
    std::fs::write(&file, text("gen-a", ok, true, false, "")).unwrap();
    let gw = start(&file).await;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    tokio::spawn(
        gw.live
            .clone()
            .serve_admin(admin_listener, gw.shutdown.clone()),
    );
    assert_eq!(get(gw.addr, "/").await, (200, "1.1 gen-a".to_string()));

    // A route to an upstream that does not exist, on line 7.
    std::fs::write(
        &file,
        text("gen-b", ok, false, false, "").replace("upstream = \"app\"", "upstream = \"nosuch\""),
    )
    .unwrap();
    let (status, body) = admin(admin_addr, "POST", "/api/reload").await;
    assert_eq!(status, "HTTP/1.1 422 Unprocessable Entity", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reloaded"], false);
    assert_eq!(v["generation"], 0);
    let problem = v["problems"][0].as_str().unwrap().to_string();
    let at = format!("{}:7:", file.display());
    assert!(problem.starts_with(&at), "{problem}");
    assert!(problem.contains("nosuch"), "{problem}");
    let warns: Vec<_> = gw
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "configuration problem")
        .collect();
    assert_eq!(warns.len(), 1);
    assert_eq!(warns[0]["level"], "WARN");
    assert_eq!(warns[0]["problem"], problem.as_str());
    // The old configuration still serves, routes and upstreams alike.
    assert_eq!(get(gw.addr, "/").await, (200, "1.1 gen-a".to_string()));
    assert_eq!(get(gw.addr, "/extra").await.0, 200);

    // Mutations are POST only.
    let (status, _) = admin(admin_addr, "GET", "/api/reload").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");

    // A good file with a second listener, a setting only a start can change, and no `extra`.
    std::fs::write(&file, text("gen-b", ok, false, true, "workers = 3")).unwrap();
    let (status, body) = admin(admin_addr, "POST", "/api/reload").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["upstreams"]["kept"], serde_json::json!(["app"]));
    assert_eq!(v["upstreams"]["removed"], serde_json::json!(["extra"]));
    assert_eq!(v["restart_needed"], serde_json::json!(["workers"]));
    let second: SocketAddr = v["listeners"]["added"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(second.ip().to_string(), "127.0.0.2");
    assert_ne!(second.port(), 0);
    assert_eq!(get(second, "/").await, (200, "1.1 gen-b".to_string()));
    assert_eq!(get(gw.addr, "/").await, (200, "1.1 gen-b".to_string()));
    // `/extra` now falls to the catch-all route.
    let (status, via) = get(gw.addr, "/extra").await;
    assert_eq!((status, via.as_str()), (200, "1.1 gen-b"));
    assert!(gw.lines().iter().any(|l| l["level"] == "WARN"
        && l["message"]
            .as_str()
            .unwrap()
            .starts_with("some changed settings take effect only at the next start")));

    // Back without the second listener: it stops accepting; the first goes on.
    std::fs::write(&file, text("gen-c", ok, false, false, "")).unwrap();
    let (status, body) = admin(admin_addr, "POST", "/api/reload").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["listeners"]["removed"],
        serde_json::json!([second.to_string()])
    );
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(second).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the removed listener still accepts");
    assert_eq!(get(gw.addr, "/").await, (200, "1.1 gen-c".to_string()));
    gw.stop().await;
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
