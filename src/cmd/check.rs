//! `cleargate check`: validates a configuration like `nginx -t`, listing every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The configuration file
    #[arg(short, long, default_value = "cleargate.toml")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match Config::load(&args.config) {
        Ok(c) => {
            println!("{}: ok: {}", args.config.display(), c.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.0.len());
            Ok(ExitCode::from(1))
        }
    }
}
