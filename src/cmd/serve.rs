//! `cleargate serve`: validates the configuration, binds, and serves until Ctrl-C or SIGTERM;
//! SIGHUP reloads the configuration, SIGUSR1 flushes DNS answers.

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
    // Every listener is bound before any thread starts: a port in use stops start-up cleanly.
    let sets = proxy::bind_workers(&config.listen_addrs(), workers)?;
    let logger = proxy::logger_for(&config)?;
    let admin = match &config.admin {
        Some(a) => Some(
            std::net::TcpListener::bind(a.listen)
                .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin): {e}", a.listen))?,
        ),
        None => None,
    };
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
                            sd_notify("RELOADING=1\nSTATUS=reading the configuration again");
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
            sd_notify(&format!(
                "READY=1\nSTATUS=serving on {}\nMAINPID={}",
                addrs.join(", "),
                std::process::id()
            ));
            super::shutdown_signal().await;
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
    #[cfg(unix)]
    {
        use std::os::unix::net::UnixDatagram;
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let Ok(sock) = UnixDatagram::unbound() else {
            return;
        };
        let path = path.to_string_lossy().into_owned();
        #[cfg(target_os = "linux")]
        if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
                let _ = sock.send_to_addr(state.as_bytes(), &addr);
            }
            return;
        }
        let _ = sock.send_to(state.as_bytes(), &path);
    }
    #[cfg(not(unix))]
    let _ = state;
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
