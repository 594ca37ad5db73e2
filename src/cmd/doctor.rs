//! `cleargate doctor URL`: the 502 checklist, automated. Parses the options, shows progress on
//! a terminal, prints the report (human or JSON) and picks the exit code; the checks themselves
//! live in `crates/doctor`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args)]
#[command(after_help = "\
Steps: URL sanity, DNS (A/AAAA, CNAME chain, TTLs), TCP to each address, TLS (version, ALPN,
certificate chain and verdict), HTTP (status, headers, timings, a second request on the same
connection), who answered (server, gateway or CDN, and who made an error page; Proxy-Status is
read as direct evidence), repeats, and optionally the same request to --origin and --upstream.
The report ends with a ranked diagnosis and the hop at fault.

Exit codes: 0 healthy, 1 a problem was found, 2 a usage or input error.

Examples:
  cleargate doctor https://example.com/
  cleargate doctor http://127.0.0.1:8080/api --upstream 127.0.0.1:3001
  cleargate doctor https://www.example.com/ --origin 203.0.113.7
  cleargate doctor http://app.internal/ --resolver 10.0.0.2 --json")]
pub struct Args {
    /// The URL that gives the error (http:// or https://)
    url: String,
    /// Ask this name server (IP or IP:PORT) instead of the system's; repeat to compare several
    #[arg(long, value_parser = parse_resolver)]
    resolver: Vec<SocketAddr>,
    /// Send the same request straight to this address (IP or IP:PORT), bypassing the CDN or
    /// gateway, like curl --resolve
    #[arg(long, value_name = "ADDR")]
    origin: Option<String>,
    /// Probe the application behind the gateway directly (HOST:PORT or a URL)
    #[arg(long, value_name = "ADDR")]
    upstream: Option<String>,
    /// The gateway's error log, to find its lines about this request
    #[arg(long, value_name = "FILE")]
    error_log: Option<PathBuf>,
    /// Extra requests to measure the error rate and timing spread (default 3; 0 turns it off)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    repeat: Option<u32>,
    /// Deadline of each network step
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Bound of the whole run
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    max_time: Duration,
    /// Also trust the CA certificates in this PEM file (a private CA)
    #[arg(long, value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

fn parse_resolver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}` is not an IP address or IP:PORT"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = doctor::Options::new(args.url.clone());
    opts.resolvers = args.resolver;
    opts.origin = args.origin;
    opts.upstream = args.upstream;
    opts.error_log = args.error_log;
    opts.repeat = args.repeat;
    opts.timeout = args.timeout;
    opts.max_time = args.max_time;
    for file in &args.cacert {
        let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let certs =
            doctor::load_pem_certs(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        opts.extra_roots.extend(certs);
    }
    let stderr_tty = std::io::stderr().is_terminal();
    let color = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let progress = move |step: &str| {
        if stderr_tty {
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2K... {step}");
            let _ = e.flush();
        }
    };
    let result = super::runtime()?.block_on(doctor::run(&opts, &progress));
    if stderr_tty {
        eprint!("\r\x1b[2K");
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cleargate doctor: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let text = if args.json {
        doctor::render::json(&report) + "\n"
    } else {
        doctor::render::human(&report, color)
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::from(report.exit_code()))
}
