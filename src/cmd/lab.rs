//! `cleargate lab`: fault-injecting upstreams on chosen ports, until Ctrl-C.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lab::{Fault, Lab, LabOptions};

#[derive(clap::Args)]
#[command(after_help = "\
Each fault is an HTTP/1.1 server (or, for `refused`, a port with nothing listening) that fails in
one precise way. Put any gateway in front of one and see what it answers and logs; the table
printed at start says what a gateway should report for each.

Examples:
  cleargate lab                              every fault on a free port
  cleargate lab --faults ok,hang,reset       just these three
  cleargate lab --port-base 9000             ports 9000, 9001, ... in table order
  cleargate lab --faults slow --slow-delay 5s")]
pub struct Args {
    /// Comma-separated faults to start (default: all). Known: ok, refused, unaccepted, reset,
    /// close, midheader, hang, slow, garbage, bigheader, truncated, badchunk, stall, flaky,
    /// kashort, status, expired, wrongname, selfsigned, plaintext, tlsstall, websocket, noupgrade
    #[arg(long, value_delimiter = ',')]
    faults: Vec<Fault>,
    /// First port; faults get consecutive ports from here (default: free ports)
    #[arg(long)]
    port_base: Option<u16>,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// How long `slow` waits before answering
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    slow_delay: Duration,
    /// Share of requests `flaky` resets, 0.0 to 1.0
    #[arg(long, default_value_t = 0.5)]
    flaky_fraction: f64,
    /// Make `flaky` deterministic: reset every Nth request instead (counted across
    /// connections; 0 never resets)
    #[arg(long, value_name = "N")]
    flaky_every: Option<u32>,
    /// How long `kashort` keeps an idle connection, in milliseconds
    #[arg(long, default_value_t = 1000)]
    kashort_ms: u64,
    /// The status `status` answers with
    #[arg(long, default_value_t = 503)]
    status: u16,
    /// Size of the response head `bigheader` sends, in bytes
    #[arg(long, default_value_t = 1024 * 1024)]
    bigheader_bytes: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let faults: Vec<Fault> = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let ports: Vec<(Fault, u16)> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let port = match args.port_base {
                Some(base) => base
                    .checked_add(i as u16)
                    .context("--port-base too high for that many faults"),
                None => Ok(0),
            };
            port.map(|p| (*f, p))
        })
        .collect::<anyhow::Result<_>>()?;
    let opts = LabOptions {
        slow_delay: args.slow_delay,
        flaky_fraction: args.flaky_fraction,
        flaky_every: args.flaky_every,
        kashort_ms: args.kashort_ms,
        status: args.status,
        bigheader_bytes: args.bigheader_bytes,
        ..LabOptions::default()
    };
    super::runtime()?.block_on(async move {
        let lab = Lab::start(&ports, args.host, opts)
            .await
            .context("cannot start the lab")?;
        println!("{}", lab.table());
        if let Some(pem) = lab.ca_pem() {
            // The TLS faults' certificates come from a CA made at start: trust it to tell
            // `expired` and `wrongname` from an unknown issuer.
            let path =
                std::env::temp_dir().join(format!("cleargate-lab-ca-{}.pem", std::process::id()));
            std::fs::write(&path, pem).context("cannot write the lab's CA certificate")?;
            println!("The TLS faults' CA certificate: {}", path.display());
        }
        println!("Lab running; Ctrl-C stops it.");
        super::shutdown_signal().await;
        lab.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
