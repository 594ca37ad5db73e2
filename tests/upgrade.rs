//! Sockets handed between processes, with the real binary: SIGUSR2 starts the binary on disk
//! with every listening socket inherited, and once it is ready the old process drains and
//! exits, under load and without a failed request; systemd's socket activation (`LISTEN_FDS`)
//! serves on the sockets passed.
#![cfg(target_os = "linux")]

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lab::{Fault, Lab, LabOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cleargate-upgrade-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A lab with one healthy upstream, and a configuration file that routes everything to it
/// from `listen`, with the settings `top`.
async fn setup(name: &str, listen: &str, top: &str) -> (Lab, PathBuf, PathBuf) {
    let lab = Lab::start(
        &[(Fault::Ok, 0)],
        "127.0.0.1".parse().unwrap(),
        LabOptions::default(),
    )
    .await
    .unwrap();
    let dir = temp_dir(name);
    let file = dir.join("cleargate.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"{listen}\"]\n{top}\n[upstream.app]\nendpoints = [\"{}\"]\n[[route]]\nupstream = \"app\"\n",
            lab.addr(Fault::Ok).unwrap()
        ),
    )
    .unwrap();
    (lab, dir, file)
}

/// The gateway's log lines (its stdout, shared by every process that inherits it), as they
/// come; the channel closes when the last process holding the pipe has exited.
fn lines(out: std::process::ChildStdout) -> mpsc::UnboundedReceiver<serde_json::Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    rx
}

/// The next line for which `pred` holds, within 30 s.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = rx.recv().await.expect("the gateway's output ended");
            if pred(&line) {
                return line;
            }
        }
    })
    .await
    .expect("the line within 30 s")
}

/// Kills the process when dropped, so that a failed test leaves no gateway running.
struct Reap(u64);

impl Drop for Reap {
    fn drop(&mut self) {
        // Zero: the process is known to have exited (its id may belong to another by now).
        if self.0 == 0 {
            return;
        }
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn signal(pid: u64, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// One GET over `sender`: `Ok` for a complete 200, `Err(true)` when the connection closed
/// before any of the response came (a keep-alive race any client retries), `Err(false)` else.
async fn one(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    close: bool,
) -> Result<(), (bool, String)> {
    let mut req = http::Request::get("/").header("host", "gw.test");
    if close {
        req = req.header("connection", "close");
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    if sender.ready().await.is_err() {
        return Err((true, "connection closed while idle".into()));
    }
    match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status();
            match resp.into_body().collect().await {
                Ok(_) if status == 200 => Ok(()),
                Ok(_) => Err((false, format!("status {status}"))),
                Err(e) => Err((false, format!("body: {e}"))),
            }
        }
        Err(e) => Err((e.is_canceled() || e.is_incomplete_message(), e.to_string())),
    }
}

async fn connect(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    answered: AtomicU64,
    /// Keep-alive requests sent again on a new connection because the old one closed first.
    retried: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Clients that each open a connection per request (`Connection: close`): any refused or
/// reset connection is a failure.
async fn close_client(addr: SocketAddr, load: Arc<Load>) {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while !load.stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
        let r = match connect(addr).await {
            Ok(mut s) => one(&mut s, true).await.map_err(|(_, e)| e),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => load.answered.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                load.failures
                    .lock()
                    .unwrap()
                    .push(format!("close client: {e}"));
                return;
            }
        };
    }
}

/// A keep-alive client: when the connection it reused is closed before any of the answer came
/// (the server closing an idle connection as the request leaves), it sends the request again
/// once on a new connection, as browsers do; anything else is a failure.
async fn keepalive_client(addr: SocketAddr, load: Arc<Load>) {
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sender = match connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            load.failures.lock().unwrap().push(e);
            return;
        }
    };
    while !load.stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
        let r = match one(&mut sender, false).await {
            Err((true, _)) => {
                load.retried.fetch_add(1, Ordering::Relaxed);
                match connect(addr).await {
                    Ok(s) => {
                        sender = s;
                        one(&mut sender, false).await.map_err(|(_, e)| e)
                    }
                    Err(e) => Err(e),
                }
            }
            r => r.map_err(|(_, e)| e),
        };
        match r {
            Ok(()) => load.answered.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                load.failures
                    .lock()
                    .unwrap()
                    .push(format!("keep-alive client: {e}"));
                return;
            }
        };
    }
}

/// Waits until the clients have had `n` more answers, within 30 s.
async fn more_answers(load: &Load, n: u64) {
    let start = load.answered.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tokio::time::timeout(Duration::from_secs(30), async {
        while load.answered.load(Ordering::Relaxed) < start + n {
            assert!(
                load.failures.lock().unwrap().is_empty(),
                "{:?}",
                load.failures.lock().unwrap()
            );
            tick.tick().await;
        }
    })
    .await
    .expect("the clients are answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_under_load_loses_no_request() {
    let (lab, dir, file) = setup(
        "load",
        "127.0.0.1:0",
        "workers = 2\n[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let mut old = Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["serve", "-c"])
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reap_old = Reap(old.id().into());
    let mut rx = lines(old.stdout.take().unwrap());
    let serving = wait_for(&mut rx, |l| l["message"] == "serving").await;
    assert_eq!(serving["pid"], old.id(), "{serving}");
    let addr: SocketAddr = serving["listen"][0].as_str().unwrap().parse().unwrap();
    let admin: SocketAddr = serving["admin"].as_str().unwrap().parse().unwrap();

    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(close_client(addr, load.clone())));
        clients.push(tokio::spawn(keepalive_client(addr, load.clone())));
    }
    more_answers(&load, 300).await;

    signal(old.id().into(), "-USR2");
    let handed = wait_for(&mut rx, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("upgrade: the new process is serving"))
    })
    .await;
    let new_pid = handed["new_pid"].as_u64().unwrap();
    let mut reap_new = Reap(new_pid);
    assert_ne!(new_pid, u64::from(old.id()));
    // The old process drains and exits by itself.
    let status = tokio::task::spawn_blocking(move || old.wait())
        .await
        .unwrap()
        .unwrap();
    reap_old.0 = 0;
    assert!(status.success(), "{status:?}");
    // The new one serves on the same sockets: the clients go on being answered, the admin
    // listener too.
    more_answers(&load, 300).await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:?}");
    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("cleargate_requests_total"), "{metrics}");
    let retried = load.retried.load(Ordering::Relaxed);
    let answered = load.answered.load(Ordering::Relaxed);
    // Each keep-alive client reconnects once when the old process closes its idle connection,
    // and perhaps once more after an answer with `Connection: close` from the draining one.
    assert!(
        retried <= 8,
        "{retried} keep-alive requests were sent again"
    );
    eprintln!("{answered} answered, {retried} keep-alive requests sent again, 0 failed");

    signal(new_pid, "-TERM");
    // The output ends once the new process, the last holding it, has exited.
    let stopped = wait_for(&mut rx, |l| l["message"] == "stopped").await;
    assert_eq!(stopped["level"], "INFO");
    tokio::time::timeout(Duration::from_secs(30), async {
        while rx.recv().await.is_some() {}
    })
    .await
    .expect("the new process exits");
    reap_new.0 = 0;
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_upgrade_keeps_the_old_process_serving() {
    let (lab, dir, file) = setup("failed", "127.0.0.1:0", "workers = 1").await;
    let mut old = Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["serve", "-c"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reap = Reap(old.id().into());
    let mut rx = lines(old.stdout.take().unwrap());
    let serving = wait_for(&mut rx, |l| l["message"] == "serving").await;
    let addr: SocketAddr = serving["listen"][0].as_str().unwrap().parse().unwrap();
    // The new binary reads the file as it is now: broken, so it refuses to start.
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:0\"]\n[[route]]\nupstream = \"nowhere\"\n",
    )
    .unwrap();
    signal(old.id().into(), "-USR2");
    let failed = wait_for(&mut rx, |l| {
        l["message"] == "upgrade failed; this process keeps serving"
    })
    .await;
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert!(
        failed["problem"]
            .as_str()
            .unwrap()
            .contains("exited before it was ready"),
        "{failed}"
    );
    let mut s = connect(addr).await.unwrap();
    one(&mut s, true).await.unwrap();
    signal(old.id().into(), "-TERM");
    assert!(old.wait().unwrap().success());
    reap.0 = 0;
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn socket_activation_serves_on_the_sockets_systemd_passes() {
    // As systemd does: the sockets are bound by the parent, without SO_REUSEPORT, and passed
    // as descriptors 3 and 4; the second matches no listener of the configuration.
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let (lab, dir, file) = setup("activation", &addr.to_string(), "workers = 2").await;
    let fds = [passed.as_raw_fd(), stray.as_raw_fd()];
    let mut command = Command::new(env!("CARGO_BIN_EXE_cleargate"));
    command
        .args(["serve", "-c"])
        .arg(&file)
        .env("LISTEN_FDS", "2")
        .stdout(Stdio::piped());
    // SAFETY: only fcntl and dup2 (async-signal-safe) run between fork and exec: each socket
    // is first copied above the targets, then placed at 3 and 4.
    unsafe {
        command.pre_exec(move || {
            let mut high = [0; 2];
            for (i, fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut reap = Reap(child.id().into());
    drop(passed);
    drop(stray);
    let mut rx = lines(child.stdout.take().unwrap());
    let stray_line = wait_for(&mut rx, |l| {
        l["message"] == "an inherited socket matches no configured listener; it is closed"
    })
    .await;
    assert_eq!(stray_line["level"], "WARN");
    let serving = wait_for(&mut rx, |l| l["message"] == "serving").await;
    assert_eq!(serving["listen"][0], addr.to_string(), "{serving}");
    // This process has closed its copy: only the gateway holds the socket, and serves on it
    // (it could not have bound the address itself: the socket allows no second one).
    for _ in 0..8 {
        let mut s = connect(addr).await.unwrap();
        one(&mut s, true).await.unwrap();
    }
    signal(child.id().into(), "-TERM");
    assert!(child.wait().unwrap().success());
    reap.0 = 0;
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
