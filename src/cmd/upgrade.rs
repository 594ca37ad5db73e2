//! Listening sockets handed from one process to the next: systemd's socket activation
//! (`LISTEN_FDS`) and the zero-downtime binary upgrade on SIGUSR2, which starts the binary on
//! disk with every listening socket inherited and waits until it says it is ready.
//!
//! The protocol is systemd's: the sockets are descriptors 3, 4, ... and `LISTEN_FDS` says how
//! many; `LISTEN_FDNAMES` (colon-separated) names the one that is the admin listener `admin`.
//! The new process says `READY=1` on the datagram socket named by `CLEARGATE_UPGRADE_NOTIFY`.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The first descriptor systemd passes.
const FIRST_FD: RawFd = 3;
/// The variable naming the socket on which a process started by an upgrade says it is ready.
pub const UPGRADE_NOTIFY: &str = "CLEARGATE_UPGRADE_NOTIFY";
/// How long the new binary has to bind, build its configuration and say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The sockets this process was started with.
#[derive(Default)]
pub struct Inherited {
    pub listeners: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
    /// Descriptors that were passed but cannot serve (not a listening TCP socket).
    pub problems: Vec<String>,
}

/// Takes the sockets passed by systemd or by the process that upgraded to this one, and
/// removes the variables that described them (so that nothing started later sees them).
/// Called at start, before any thread is started.
pub fn take_inherited() -> Inherited {
    let mut out = Inherited::default();
    let count = std::env::var("LISTEN_FDS").ok();
    let pid = std::env::var("LISTEN_PID").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    let Some(count) = count else { return out };
    // systemd sets LISTEN_PID to the process it meant; a child that inherited the variables
    // by mistake must not take descriptors that are not its own.
    if let Some(pid) = pid {
        if pid.trim() != std::process::id().to_string() {
            return out;
        }
    }
    let Ok(count) = count.trim().parse::<RawFd>() else {
        out.problems.push(format!(
            "LISTEN_FDS={count:?} is not a number; no socket inherited"
        ));
        return out;
    };
    let names: Vec<&str> = names.split(':').collect();
    for i in 0..count.clamp(0, 1024) {
        let fd = FIRST_FD + i;
        match listener_at(fd) {
            Ok(l) => {
                if names.get(i as usize) == Some(&"admin") {
                    out.admin = Some(l);
                } else {
                    out.listeners.push(l);
                }
            }
            Err(e) => out.problems.push(format!("inherited descriptor {fd}: {e}")),
        }
    }
    out
}

/// The listening TCP socket at `fd`, marked close-on-exec.
fn listener_at(fd: RawFd) -> Result<TcpListener, String> {
    // SAFETY: fcntl on a descriptor number only reads or sets its flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err("not open".into());
    }
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let mut listening: libc::c_int = 0;
    let mut len2 = len;
    // SAFETY: getsockopt writes at most `len` bytes into the integers given.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
            && libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&mut listening as *mut libc::c_int).cast(),
                &mut len2,
            ) == 0
    };
    if !ok || kind != libc::SOCK_STREAM || listening == 0 {
        return Err("not a listening stream socket; left alone".into());
    }
    // SAFETY: the descriptor is open, is a listening stream socket, and nothing else in this
    // process owns it (it was passed to us at exec).
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    match l.local_addr() {
        Ok(SocketAddr::V4(_) | SocketAddr::V6(_)) => Ok(l),
        Err(_) => {
            // A Unix socket: not ours to serve, and not ours to close either.
            std::mem::forget(l);
            Err("not a TCP socket; left alone".into())
        }
    }
}

/// Whether an inherited socket bound to `bound` serves a listener configured as `wanted`
/// (a port of 0 in the configuration accepts whatever port the socket has).
pub fn serves(bound: SocketAddr, wanted: SocketAddr) -> bool {
    bound == wanted || (wanted.port() == 0 && bound.ip() == wanted.ip())
}

/// Starts the binary at `exe` with `args`, handing it `sockets` (the admin listener's last,
/// when there is one), and waits until it says it is ready. Returns its process id; on any
/// failure the new process is stopped and this one keeps serving.
pub async fn start(
    exe: &std::path::Path,
    args: &[std::ffi::OsString],
    sockets: Vec<OwnedFd>,
    admin: bool,
) -> Result<u32, String> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::process::CommandExt;
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("cleargate-upgrade-{}-{n}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name)
        .map_err(|e| format!("cannot name the notify socket: {e}"))?;
    let notify = std::os::unix::net::UnixDatagram::bind_addr(&addr)
        .map_err(|e| format!("cannot open the notify socket: {e}"))?;
    notify
        .set_nonblocking(true)
        .map_err(|e| format!("notify socket: {e}"))?;
    let notify = tokio::net::UnixDatagram::from_std(notify).map_err(|e| e.to_string())?;

    // Each socket is first moved above the numbers it is given in the new process, so that
    // placing one never overwrites another.
    let count = sockets.len() as RawFd;
    let high: Vec<OwnedFd> = sockets
        .iter()
        .map(|s| {
            // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1) that we then own.
            let fd = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_FD + count) };
            if fd < 0 {
                Err(std::io::Error::last_os_error().to_string())
            } else {
                // SAFETY: `fd` was just created and is owned by nothing else.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })
        .collect::<Result<_, _>>()?;
    drop(sockets);
    let raw: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();
    let mut names = vec!["listen"; raw.len()];
    if admin {
        if let Some(last) = names.last_mut() {
            *last = "admin";
        }
    }
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .env("LISTEN_FDS", raw.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID")
        .env(UPGRADE_NOTIFY, format!("@{name}"));
    // SAFETY: between fork and exec only dup2, which is async-signal-safe, runs; it places
    // each socket at 3, 4, ... without close-on-exec.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, FIRST_FD + i as RawFd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    drop(high);
    let pid = child.id();

    let deadline = tokio::time::sleep(READY_TIMEOUT);
    tokio::pin!(deadline);
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    let mut buf = [0u8; 4096];
    let failure = loop {
        tokio::select! {
            got = notify.recv(&mut buf) => {
                let Ok(n) = got else { continue };
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|l| l == "READY=1") {
                    // Reaped by whoever adopts it once this process has gone.
                    std::mem::forget(child);
                    return Ok(pid);
                }
            }
            _ = poll.tick() => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "the new process (pid {pid}) exited before it was ready: {status}"
                    ));
                }
            }
            _ = &mut deadline => {
                break format!(
                    "the new process (pid {pid}) was not ready within {} s; it was stopped",
                    READY_TIMEOUT.as_secs()
                );
            }
        }
    };
    // SAFETY: kill sends a signal to our own child, which has not been reaped yet (so its
    // process id cannot have been reused).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    Err(failure)
}
