//! `Type=notify`: the real binary, started with `NOTIFY_SOCKET` pointing at a datagram socket of
//! the test's, says READY=1 once it serves, RELOADING=1 then READY=1 around SIGHUP, and
//! STOPPING=1 on SIGTERM, as systemd expects.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn the_gateway_tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = std::env::temp_dir().join(format!("cleargate-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = dir.join("cleargate.toml");
    std::fs::write(
        &config,
        "listen = [\"127.0.0.1:0\"]\nworkers = 1\n[upstream.app]\nendpoints = [\"127.0.0.1:9\"]\n[[route]]\nupstream = \"app\"\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["serve", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = next(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains("STATUS=serving on 127.0.0.1:"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );

    signal(child.id(), "-HUP");
    assert!(next(&sock).starts_with("RELOADING=1\n"));
    assert!(next(&sock).starts_with("READY=1\n"));

    signal(child.id(), "-TERM");
    assert!(next(&sock).starts_with("STOPPING=1\n"));
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
