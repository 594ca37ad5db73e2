//! `cleargate demo`: the embedded default. Starts the lab and a gateway in front of it, with one
//! route per fault, and prints what each URL shows.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use config::Config;
use lab::{Fault, Lab, LabOptions};
use proxy::{CancellationToken, Gateway};

#[derive(clap::Args)]
pub struct Args {
    /// Where the gateway listens
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Log format of the gateway: text (readable) or json
    #[arg(long, default_value = "text")]
    log_format: String,
}

/// The URL path for each fault, and what a visitor sees there.
pub const DEMO_ROUTES: &[(&str, Fault, &str)] = &[
    ("/ok", Fault::Ok, "200 from a healthy upstream"),
    (
        "/slow",
        Fault::Slow,
        "200 after 2 s: slow, but within the timeout",
    ),
    (
        "/refused",
        Fault::Refused,
        "502 refused: nothing listens there (after waiting 1 s for a restart)",
    ),
    (
        "/connect-timeout",
        Fault::Unaccepted,
        "504 timeout@connect: the upstream's accept queue is full",
    ),
    (
        "/timeout",
        Fault::Hang,
        "504 timeout@read_head: the upstream never answers (3 s)",
    ),
    (
        "/reset",
        Fault::Reset,
        "502 reset: every new connection is reset (after waiting 1 s)",
    ),
    (
        "/closed",
        Fault::Close,
        "502 closed: the upstream closes without a word (after waiting 1 s)",
    ),
    (
        "/midheader",
        Fault::Midheader,
        "502 closed: the upstream dies mid-header",
    ),
    ("/garbage", Fault::Garbage, "502 invalid_response: not HTTP"),
    (
        "/bigheader",
        Fault::Bigheader,
        "502 response_too_large: 1 MiB of headers",
    ),
    (
        "/truncated",
        Fault::Truncated,
        "200, then the connection is aborted: body cut short",
    ),
    (
        "/badchunk",
        Fault::Badchunk,
        "200, then the connection is aborted: broken chunked framing",
    ),
    (
        "/stall",
        Fault::Stall,
        "200, then aborted after 3 s: the body stalls",
    ),
    (
        "/tls-expired",
        Fault::Expired,
        "502 tls: the upstream's certificate expired (and when)",
    ),
    (
        "/tls-wrongname",
        Fault::Wrongname,
        "502 tls: the upstream's certificate is for another name",
    ),
    ("/flaky", Fault::Flaky, "200 or 502 reset, half of the time"),
    (
        "/status",
        Fault::Status,
        "503 made by the upstream, relayed as is",
    ),
];

/// The demo's configuration, as TOML text: one upstream and one route per fault.
pub fn demo_config(listen: SocketAddr, lab: &Lab, log_format: &str) -> String {
    let mut toml = format!(
        "listen = [\"{listen}\"]\nserver_name = \"cleargate\"\n\n[log]\nformat = \"{log_format}\"\n\n[limits]\nrequest_header_timeout = \"10s\"\n\n"
    );
    // The TLS faults are reached over TLS, trusting the lab's own CA.
    let ca = lab.ca_pem().and_then(|pem| {
        let path =
            std::env::temp_dir().join(format!("cleargate-demo-ca-{}.pem", std::process::id()));
        std::fs::write(&path, pem).ok().map(|_| path)
    });
    for (path, fault, _) in DEMO_ROUTES {
        let addr = lab
            .addr(*fault)
            .expect("the demo starts every fault it routes to");
        let name = fault.name();
        toml.push_str(&format!(
            "[upstream.{name}]\nendpoints = [\"{addr}\"]\nconnect_timeout = \"1s\"\nresponse_timeout = \"3s\"\nbody_timeout = \"3s\"\nrestart_wait = \"1s\"\n"
        ));
        if let (true, Some(ca)) = (fault.tls(), &ca) {
            toml.push_str(&format!(
                "[upstream.{name}.tls]\nca = \"{}\"\n",
                ca.display()
            ));
        }
        toml.push_str(&format!(
            "\n[[route]]\npath = \"{path}\"\nupstream = \"{name}\"\n\n"
        ));
    }
    toml
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::runtime()?.block_on(async move {
        let faults: Vec<(Fault, u16)> = DEMO_ROUTES.iter().map(|(_, f, _)| (*f, 0)).collect();
        let lab = Lab::start(&faults, [127, 0, 0, 1].into(), LabOptions::default()).await.context("cannot start the lab")?;
        let text = demo_config(args.listen, &lab, &args.log_format);
        let config = Config::parse(&text, "<demo>", Path::new(".")).map_err(|p| anyhow::anyhow!("{p}"))?;
        let listeners = proxy::bind(&config.listen_addrs()).await.context("try another address with --listen 127.0.0.1:PORT")?;
        let bound = listeners[0].local_addr()?;
        let logger = proxy::logger_for(&config)?;
        let gateway = Gateway::new(config, logger).map_err(anyhow::Error::msg)?;
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(gateway.serve(listeners, shutdown.clone()));

        println!("cleargate demo: the gateway on http://{bound} in front of fault-injecting upstreams.\n");
        let width = DEMO_ROUTES.iter().map(|(p, _, _)| p.len()).max().unwrap_or(0) + bound.to_string().len() + 7;
        for (path, _, what) in DEMO_ROUTES {
            println!("  {:width$}  {what}", format!("http://{bound}{path}"));
        }
        println!("  {:width$}  404 no_route: no route for that path", format!("http://{bound}/nowhere"));
        println!("\nOpen them in a browser (HTML), or try:");
        println!("  curl -i http://{bound}/refused");
        println!("  curl -i -H 'Accept: application/json' http://{bound}/timeout");
        println!("Each gateway-made error carries Proxy-Status and X-Request-Id; the log lines below say the same.");
        println!("Ctrl-C stops the demo.\n");

        super::shutdown_signal().await;
        shutdown.cancel();
        serving.await?;
        lab.shutdown().await;
        println!("demo stopped");
        Ok(ExitCode::SUCCESS)
    })
}
