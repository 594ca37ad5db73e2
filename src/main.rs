//! `cleargate`: the command-line entry point. It parses arguments, dispatches to one module per
//! subcommand and picks the exit code in one place; the work itself lives in `crates/`.

// Where glibc's malloc is what `System` calls: the lists rely on its alignment, and on the
// thread-exit hooks it offers (registering one allocates nothing through this allocator).
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
mod alloc;
mod cmd;

#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A reverse-proxy gateway that avoids needless 502s and explains the ones it must give.
#[derive(Parser)]
#[command(name = "cleargate", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file
    Serve(cmd::serve::Args),
    /// Validate a configuration file and exit: every problem as FILE:LINE:COLUMN
    Check(cmd::check::Args),
    /// See it all in one command: the gateway in front of fault-injecting upstreams
    Demo(cmd::demo::Args),
    /// A URL gives 502 (or 503, 504): find where and why, step by step, and what to do
    Doctor(cmd::doctor::Args),
    /// Start fault-injecting upstreams, one per failure mode, to test any gateway
    Lab(cmd::lab::Args),
    /// Read nginx, Apache, HAProxy, Caddy, Envoy or cleargate logs: every gateway error classified, counted and explained
    Logs(cmd::logs::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => cmd::serve::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Lab(a) => cmd::lab::run(a),
        Command::Doctor(a) => cmd::doctor::run(a),
        Command::Logs(a) => cmd::logs::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`cleargate lab | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("cleargate: {e:#}");
            ExitCode::from(2)
        }
    }
}
