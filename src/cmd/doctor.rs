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

Watch (--watch [INTERVAL], default 1s): one request on a new connection every INTERVAL until
Ctrl-C or --for DURATION; a line per failure (cause and phase, or the status), a line when the
URL recovers, a live status line on a terminal, and a summary at the end (availability, failures
by cause, longest outage, latency). With --json, one object per probe and a final
summary object (type summary). Put the URL before --watch. --origin, --upstream, --repeat,
--error-log and --max-time do not apply to a watch and are refused with it.

Exit codes: 0 healthy (with --watch: every probe succeeded), 1 a problem was found (any probe
failed), 2 a usage or input error.

Examples:
  cleargate doctor https://example.com/
  cleargate doctor http://127.0.0.1:8080/api --upstream 127.0.0.1:3001
  cleargate doctor https://www.example.com/ --origin 203.0.113.7
  cleargate doctor http://app.internal/ --resolver 10.0.0.2 --json
  cleargate doctor https://example.com/ --watch
  cleargate doctor http://127.0.0.1:8080/api --watch 250ms --for 10m --json")]
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
    /// Print the report as JSON (with --watch: one JSON object per line)
    #[arg(long)]
    json: bool,
    /// Watch the URL: one request every INTERVAL (default 1s) until Ctrl-C or --for
    #[arg(
        long,
        value_name = "INTERVAL",
        num_args = 0..=1,
        default_missing_value = "1s",
        value_parser = parse_interval,
        conflicts_with_all = ["origin", "upstream", "repeat", "error_log", "max_time"]
    )]
    watch: Option<Duration>,
    /// With --watch: stop after this long
    #[arg(
        long = "for",
        value_name = "DURATION",
        requires = "watch",
        value_parser = parse_duration
    )]
    for_: Option<Duration>,
    /// With --watch: stop after N probes
    #[arg(
        long,
        value_name = "N",
        requires = "watch",
        hide = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    count: Option<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

/// `--watch`'s value; a URL there means it was put after `--watch`, which takes the next word.
fn parse_interval(s: &str) -> Result<Duration, String> {
    if s.contains("://") || s.contains('/') {
        return Err(format!(
            "`{s}` is not an interval: put the URL before --watch (cleargate doctor URL --watch [INTERVAL])"
        ));
    }
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
    if let Some(interval) = args.watch {
        let w = doctor::watch::WatchOptions {
            interval,
            duration: args.for_,
            count: args.count,
        };
        return watch(&opts, &w, args.json);
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

/// `--watch`: prints each failure (or, with --json, every probe) as it comes, keeps a status line
/// on a terminal, and the summary at the end.
fn watch(
    opts: &doctor::Options,
    w: &doctor::watch::WatchOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Err(e) = doctor::watch::check(opts, w) {
        eprintln!("cleargate doctor: {e}");
        return Ok(ExitCode::from(2));
    }
    let live = !json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut failed_write: Option<std::io::Error> = None;
    if !json {
        let mut head = format!("Watching {} every {:?}", opts.url.trim(), w.interval);
        if let Some(d) = w.duration {
            head.push_str(&format!(" for {d:?}"));
        }
        head.push_str(if live { " (Ctrl-C to stop)\n" } else { "\n" });
        out.write_all(head.as_bytes())?;
        out.flush()?;
    }
    let on_step = |step: doctor::watch::Step<'_>| {
        let mut text = String::new();
        if json {
            text.push_str(&step.sample.json());
            text.push('\n');
        } else {
            if live {
                text.push_str("\r\x1b[2K");
            }
            if !step.sample.ok {
                text.push_str(&step.sample.human());
                text.push('\n');
            }
            if let Some(o) = step.recovered {
                text.push_str(&o.recovered_line(step.sample.time));
                text.push('\n');
            }
            if live {
                text.push_str(&step.tally.status_line());
            }
        }
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                failed_write = Some(e);
                false
            }
        }
    };
    let stop = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let result = super::runtime()?.block_on(doctor::watch::watch(opts, w, stop, on_step));
    if let Some(e) = failed_write {
        return Err(e.into());
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cleargate doctor: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut out = std::io::stdout().lock();
    if live {
        out.write_all(b"\r\x1b[2K")?;
    }
    let text = if json {
        summary.json() + "\n"
    } else {
        summary.human()
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::from(summary.exit_code()))
}
