//! `cleargate serve`: validates the configuration, binds, and serves until Ctrl-C or SIGTERM;
//! SIGHUP reloads the configuration, SIGUSR1 flushes DNS answers, SIGUSR2 upgrades the binary.

use std::path::PathBuf;
use std::process::ExitCode;

use cause::Level;
use config::Config;
use proxy::{CancellationToken, Gateway, Live};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration file
    #[arg(short, long, default_value = "cleargate.toml")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Validation comes before anything is bound, with the same report as `check`.
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found; nothing was started", problems.0.len());
            return Ok(ExitCode::from(1));
        }
    };
    // Certificate files are checked before anything is bound, too.
    let certs = proxy::read_certificates(&config);
    if !certs.problems.is_empty() {
        for p in &certs.problems {
            eprintln!("{p}");
        }
        eprintln!(
            "{} problem(s) found; nothing was started",
            certs.problems.len()
        );
        return Ok(ExitCode::from(1));
    }
    cmd_runtime_serve(config, args.config)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_runtime_serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let workers = config.workers;
    // Sockets passed by systemd (socket activation) or by the process that upgraded to this
    // one; taken before any thread starts, as the variables that describe them are removed.
    #[cfg(target_os = "linux")]
    let mut inherited = super::upgrade::take_inherited();
    #[cfg(target_os = "linux")]
    let upgrade_notify = {
        let v = std::env::var_os(super::upgrade::UPGRADE_NOTIFY);
        std::env::remove_var(super::upgrade::UPGRADE_NOTIFY);
        v
    };
    // What a binary upgrade starts: this binary as it is on disk now, with the same arguments.
    let exe = std::env::current_exe().ok();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let logger = proxy::logger_for(&config)?;
    // Every listener is bound before any thread starts: a port in use stops start-up cleanly.
    #[cfg(target_os = "linux")]
    let sets = {
        for p in &inherited.problems {
            logger.notice(
                Level::Warn,
                "inherited socket not used",
                &[("problem", json!(p))],
            );
        }
        let sets = proxy::bind_workers_inherited(
            &config.listen_addrs(),
            workers,
            &mut inherited.listeners,
        )?;
        for l in inherited.listeners.drain(..) {
            logger.notice(
                Level::Warn,
                "an inherited socket matches no configured listener; it is closed",
                &[("addr", json!(l.local_addr().ok().map(|a| a.to_string())))],
            );
        }
        sets
    };
    #[cfg(not(target_os = "linux"))]
    let sets = proxy::bind_workers(&config.listen_addrs(), workers)?;
    let admin =
        match &config.admin {
            Some(a) => {
                #[cfg(target_os = "linux")]
                let passed = inherited.admin.take().filter(|l| {
                    l.local_addr()
                        .is_ok_and(|b| super::upgrade::serves(b, a.listen))
                });
                #[cfg(not(target_os = "linux"))]
                let passed: Option<std::net::TcpListener> = None;
                match passed {
                    Some(l) => Some(l),
                    None => Some(std::net::TcpListener::bind(a.listen).map_err(|e| {
                        anyhow::anyhow!("cannot listen on {} (admin): {e}", a.listen)
                    })?),
                }
            }
            None => None,
        };
    // Kept to hand the admin listener to a new binary on upgrade.
    #[cfg(target_os = "linux")]
    let admin_socket = admin.as_ref().and_then(|a| {
        use std::os::fd::AsFd;
        a.as_fd().try_clone_to_owned().ok()
    });
    // The addresses as bound: a port of 0 in the configuration shows as the one chosen.
    let addrs: Vec<String> = sets[0]
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect();
    let mut sets = sets.into_iter();
    logger.notice(
        Level::Info,
        "serving",
        &[
            ("listen", json!(addrs)),
            ("workers", json!(workers)),
            (
                "admin",
                json!(admin
                    .as_ref()
                    .and_then(|a| a.local_addr().ok())
                    .map(|a| a.to_string())),
            ),
            ("pid", json!(std::process::id())),
            ("summary", json!(config.summary())),
        ],
    );
    let gateway = Gateway::new(config, logger.clone()).map_err(anyhow::Error::msg)?;
    let live = Live::new(gateway, Some(path));
    let shutdown = CancellationToken::new();
    let threads = (0..workers)
        .map(|index| {
            let set = sets.next().unwrap_or_default();
            let gw = live.clone();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("cleargate-w{index}"))
                .spawn(move || serve_worker(gw, index, set, shutdown))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Signals are waited for on this thread, away from the workers.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // The admin listener runs here, on the signal thread, away from the workers.
            if let Some(listener) = admin {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                tokio::spawn(live.clone().serve_admin(listener, shutdown.clone()));
            }
            #[cfg(unix)]
            {
                // SIGUSR1 flushes the DNS answers: upstream names are resolved again at once.
                let gw = live.clone();
                if let Ok(mut usr1) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                {
                    tokio::spawn(async move {
                        while usr1.recv().await.is_some() {
                            gw.current().flush_dns();
                        }
                    });
                }
                // SIGHUP reads the configuration file again (and the certificates): the new
                // one is used by the next request, or the running one stays if it has problems.
                let gw = live.clone();
                if let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                {
                    tokio::spawn(async move {
                        while hup.recv().await.is_some() {
                            sd_notify(&format!(
                                "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reading the configuration again",
                                monotonic_usec()
                            ));
                            let status = match gw.reload() {
                                Ok(o) => format!("serving configuration {}", o.generation),
                                Err(p) => format!(
                                    "serving configuration {}; the file has {} problem(s)",
                                    gw.generation(),
                                    p.len()
                                ),
                            };
                            sd_notify(&format!("READY=1\nSTATUS={status}"));
                        }
                    });
                }
            }
            // Every worker has its listeners by now (bound before the threads started).
            let ready = format!(
                "READY=1\nSTATUS=serving on {}\nMAINPID={}",
                addrs.join(", "),
                std::process::id()
            );
            sd_notify(&ready);
            #[cfg(target_os = "linux")]
            if let Some(to) = &upgrade_notify {
                notify_to(&to.to_string_lossy(), &ready);
            }
            let stop = super::shutdown_signal();
            tokio::pin!(stop);
            #[cfg(target_os = "linux")]
            {
                // SIGUSR2 starts the binary on disk with every listening socket inherited;
                // once it is ready, this process stops accepting and finishes its requests.
                let mut usr2 =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = usr2.recv() => {
                            let Some(exe) = &exe else {
                                logger.notice(
                                    Level::Error,
                                    "upgrade failed; this process keeps serving",
                                    &[("problem", json!("the path of the running binary is unknown"))],
                                );
                                continue;
                            };
                            logger.notice(
                                Level::Info,
                                "upgrade: starting the binary on disk with the listening sockets",
                                &[("exe", json!(exe.display().to_string()))],
                            );
                            let mut sockets = live.listening_sockets();
                            let with_admin = match admin_socket.as_ref().map(|s| s.try_clone()) {
                                Some(Ok(s)) => {
                                    sockets.push(s);
                                    true
                                }
                                _ => false,
                            };
                            match super::upgrade::start(exe, &args, sockets, with_admin).await {
                                Ok(pid) => {
                                    sd_notify(&format!(
                                        "MAINPID={pid}\nSTATUS=handing over to pid {pid}"
                                    ));
                                    logger.notice(
                                        Level::Info,
                                        "upgrade: the new process is serving; this one stops accepting and finishes its requests",
                                        &[("new_pid", json!(pid))],
                                    );
                                    break;
                                }
                                Err(problem) => logger.notice(
                                    Level::Error,
                                    "upgrade failed; this process keeps serving",
                                    &[("problem", json!(problem))],
                                ),
                            }
                        }
                    }
                }
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = (&exe, &args);
                stop.await;
            }
            sd_notify("STOPPING=1\nSTATUS=finishing in-flight requests");
            Ok::<_, std::io::Error>(())
        })?;
    logger.notice(
        Level::Info,
        "shutting down: no new connections, finishing in-flight requests",
        &[],
    );
    shutdown.cancel();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("a worker thread panicked"),
        }
    }
    logger.notice(Level::Info, "stopped", &[]);
    logger.flush();
    Ok(())
}

/// Tells systemd (`Type=notify`) how the service is doing, when it started us with
/// `NOTIFY_SOCKET`; nothing otherwise. A path starting with `@` is Linux's abstract namespace.
fn sd_notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path.to_string_lossy(), state);
    }
}

/// CLOCK_MONOTONIC in microseconds, which systemd wants with RELOADING=1.
fn monotonic_usec() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the one given.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
        }
    }
    0
}

/// Sends `state` as one datagram to the Unix socket at `path` (`@name`: abstract).
fn notify_to(path: &str, state: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::net::UnixDatagram;
        let Ok(sock) = UnixDatagram::unbound() else {
            return;
        };
        #[cfg(target_os = "linux")]
        if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
                let _ = sock.send_to_addr(state.as_bytes(), &addr);
            }
            return;
        }
        let _ = sock.send_to(state.as_bytes(), path);
    }
    #[cfg(not(unix))]
    let _ = (path, state);
}

/// One worker: its own single-threaded event loop, its own listeners and upstream pools.
/// Worker 0 also runs the upstreams' health checks and DNS refresh.
fn serve_worker(
    live: std::sync::Arc<Live>,
    index: usize,
    listeners: Vec<std::net::TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listeners = listeners
                .into_iter()
                .map(tokio::net::TcpListener::from_std)
                .collect::<Result<Vec<_>, _>>()?;
            if index == 0 {
                live.serve(listeners, shutdown).await;
            } else {
                live.serve_worker(index, listeners, shutdown).await;
            }
            Ok(())
        })
}
