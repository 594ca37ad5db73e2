//! `cleargate serve`: validates the configuration, binds, and serves until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use cause::Level;
use config::Config;
use proxy::{CancellationToken, Gateway};
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
    cmd_runtime_serve(config)?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_runtime_serve(config: Config) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let listeners = proxy::bind(&config.listen).await?;
        let logger = proxy::logger_for(&config)?;
        let addrs: Vec<String> = config.listen.iter().map(|a| a.to_string()).collect();
        logger.notice(
            Level::Info,
            "serving",
            &[
                ("listen", json!(addrs)),
                ("summary", json!(config.summary())),
            ],
        );
        let gateway = Gateway::new(config, logger.clone()).map_err(anyhow::Error::msg)?;
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(gateway.clone().serve(listeners, shutdown.clone()));
        #[cfg(unix)]
        {
            // SIGUSR1 flushes the DNS answers: upstream names are resolved again at once.
            let gw = gateway.clone();
            if let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            {
                tokio::spawn(async move {
                    while usr1.recv().await.is_some() {
                        gw.flush_dns();
                    }
                });
            }
        }
        super::shutdown_signal().await;
        logger.notice(
            Level::Info,
            "shutting down: no new connections, finishing in-flight requests",
            &[],
        );
        shutdown.cancel();
        serving.await?;
        logger.notice(Level::Info, "stopped", &[]);
        logger.flush();
        Ok(())
    })
}
