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
            // The certificate files are read and checked like the configuration itself:
            // readable, the key belongs to the certificate, and the dates.
            let certs = proxy::read_certificates(&c);
            for w in &certs.warnings {
                eprintln!("warning: {w}");
            }
            if !certs.problems.is_empty() {
                for p in &certs.problems {
                    eprintln!("{p}");
                }
                eprintln!("{} problem(s) found", certs.problems.len());
                return Ok(ExitCode::from(1));
            }
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
