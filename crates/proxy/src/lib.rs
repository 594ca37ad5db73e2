//! The gateway: turns a validated configuration into a running reverse proxy.
//!
//! - `server`: accept loop, client connections, protocol detection, client timeouts, graceful
//!   shutdown;
//! - `prescan`: the raw request bytes, for what hyper's parsed request no longer shows;
//! - `admit`: the first phase: Host, authority and body framing of a request;
//! - `forward`: the request lifecycle in phases (admit, route, upstream request, respond);
//! - `attempt`: the attempt loop and the retry rules;
//! - `conn`: the state a client connection shares with its requests;
//! - `framing`: how an upstream response's body is framed, and what is relayed of it;
//! - `body`: streaming bodies both ways, and the request log written when a response ends;
//! - `page`: the error surface (status, `Proxy-Status`, negotiated page);
//! - `headers`: hop-by-hop and forwarding headers, request ids;
//! - `route`: host and path prefix to upstream;
//! - `log`: access lines and gateway-error lines.
//!
//! Connecting to upstreams and classifying what went wrong is `crates/net`'s job; pools and
//! endpoint choice are `crates/upstream`'s. This crate decides nothing about statuses: it asks
//! `cause::Failure::answer`.

mod acme;
mod admin;
mod admit;
mod attempt;
mod body;
mod cached;
mod conn;
mod flight;
mod forward;
mod framing;
mod headers;
mod live;
pub mod log;
mod metrics;
pub mod page;
mod prescan;
mod route;
mod server;
mod tls;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use config::Config;
use net::{ConnectOptions, Deadlines};
use upstream::{Endpoint, Upstream};

pub use body::ProxyBody;
pub use conn::{ConnState, Edge};
pub use live::{Live, ReloadOutcome};
pub use tls::{read_certificates, CertReport, ReloadReport};
pub use tokio_util::sync::CancellationToken;

/// A configured gateway, ready to serve listeners.
pub struct Gateway {
    config: Config,
    router: route::Router,
    upstreams: Vec<Arc<Upstream>>,
    deadlines: Vec<Deadlines>,
    /// Retry settings per route, in configuration order.
    retries: Vec<config::RetryConfig>,
    logger: Arc<log::Logger>,
    /// `Via` for responses.
    via: http::HeaderValue,
    /// `Via` for requests, by the client's version: 1.0, 1.1, 2.
    via_request: [http::HeaderValue; 3],
    /// Client connections served at once, across every worker.
    permits: Arc<tokio::sync::Semaphore>,
    /// Certificates and handshakes, when there are TLS listeners; the same across reloads.
    tls: Option<Arc<tls::TlsEdge>>,
    /// The ACME challenges being validated now.
    challenges: Arc<acme::Challenges>,
    /// Upstream name lookups, shared by every upstream.
    resolver: net::resolver::Resolver,
    /// The response cache (`[cache]`), kept across reloads that do not change it.
    cache: Option<Arc<cached::ResponseCache>>,
}

impl Gateway {
    /// Builds the gateway. Fails when the resolver cannot be set up or a certificate cannot be
    /// used; certificate warnings (expired, expiring soon) are logged.
    pub fn new(config: Config, logger: Arc<log::Logger>) -> Result<Arc<Gateway>, String> {
        Gateway::build(config, logger, None)
            .map(|(gw, _)| gw)
            .map_err(|problems| problems.join("\n"))
    }

    /// Builds a gateway for `config`. With `previous` (a reload), what lasts across
    /// configurations is taken from it: the log, the connection limit, the TLS acceptor (given
    /// the new certificates), the ACME challenges, the resolver, and every upstream whose
    /// settings did not change, with its pools, health and ejections. The problems are the
    /// ones `check` reports, each with its position.
    pub(crate) fn build(
        mut config: Config,
        logger: Arc<log::Logger>,
        previous: Option<&Gateway>,
    ) -> Result<(Arc<Gateway>, live::Carried), Vec<String>> {
        let certs = read_certificates(&config);
        if !certs.problems.is_empty() {
            return Err(certs.problems.iter().map(|p| p.to_string()).collect());
        }
        for w in &certs.warnings {
            logger.notice(
                cause::Level::Warn,
                "TLS configuration warning",
                &[("problem", serde_json::json!(w.to_string()))],
            );
        }
        let mut carried = live::Carried::default();
        if let Some(old) = previous {
            carried.restart_needed = live::restart_needed(&old.config, &config);
            // What only a start can change keeps its running value.
            config.workers = old.config.workers;
            config.admin = old.config.admin.clone();
            config.log = old.config.log.clone();
            config.acme = old.config.acme.clone();
            config.resolver = old.config.resolver.clone();
            config.limits.max_client_connections = old.config.limits.max_client_connections;
        }
        let loaded: Vec<_> = certs.loaded.into_iter().flatten().collect();
        let tls = match previous.and_then(|p| p.tls.clone()) {
            Some(edge) => {
                edge.serve_certificates(loaded);
                Some(edge)
            }
            None => tls::TlsEdge::new(&config, loaded)
                .map_err(|e| vec![e])?
                .map(Arc::new),
        };
        let mut upstream_tls = certs.upstream_tls.into_iter();
        let resolver = match previous {
            Some(p) => p.resolver.clone(),
            None => {
                net::resolver::Resolver::new(&config.resolver.nameservers, config.resolver.timeout)
                    .map_err(|e| vec![e])?
            }
        };
        let events_logger = logger.clone();
        let events: upstream::Events = Arc::new(move |level, message: String, fields| {
            let fields: Vec<(&str, serde_json::Value)> = fields
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            events_logger.notice(level, &message, &fields);
        });
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                let tls = upstream_tls.next().flatten();
                let connect = ConnectOptions {
                    connect_timeout: u.timeouts.connect,
                    max_response_header_bytes: config.limits.max_response_header_bytes,
                    max_response_headers: config.limits.max_response_headers,
                    h2: u.protocol == config::Protocol::H2c,
                    tls,
                };
                // An upstream whose settings are the same keeps its endpoints' state.
                let same = previous.and_then(|p| {
                    p.upstreams.iter().find(|old| {
                        old.config == *u
                            && p.config.limits.max_response_header_bytes
                                == config.limits.max_response_header_bytes
                            && p.config.limits.max_response_headers
                                == config.limits.max_response_headers
                    })
                });
                match same {
                    Some(old) => {
                        carried.kept.push(u.name.clone());
                        old.clone()
                    }
                    None => {
                        if previous.is_some() {
                            carried.started.push(u.name.clone());
                        }
                        Upstream::new(u, connect, resolver.clone(), events.clone(), config.workers)
                    }
                }
            })
            .collect();
        if let Some(p) = previous {
            carried.removed = p
                .upstreams
                .iter()
                .filter(|old| !upstreams.iter().any(|u| Arc::ptr_eq(u, old)))
                .map(|old| old.name.to_string())
                .collect();
        }
        let deadlines = config
            .upstreams
            .iter()
            .map(|u| Deadlines {
                connect: u.timeouts.connect,
                send: u.timeouts.send,
                response: u.timeouts.response,
                body_idle: u.timeouts.body_idle,
            })
            .collect();
        let router = route::Router::new(&config.routes, |name| {
            config
                .upstreams
                .iter()
                .position(|u| u.name == name)
                .expect("validated config names only known upstreams")
        });
        let retries = config.routes.iter().map(|r| r.retry.clone()).collect();
        // `Via` values, made once: `1.0`, `1.1` and `2` for requests by the client's version,
        // `1.1` for responses.
        let via_value = |version: &str| {
            http::HeaderValue::from_str(&format!("{version} {}", config.server_name))
                .unwrap_or(http::HeaderValue::from_static("1.1 cleargate"))
        };
        let via_request = [via_value("1.0"), via_value("1.1"), via_value("2")];
        let via = via_value("1.1");
        let permits = match previous {
            Some(p) => p.permits.clone(),
            None => Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_client_connections,
            )),
        };
        logger.metrics().register(
            upstreams.iter().map(|u| u.name.clone()).collect(),
            config.workers,
        );
        let cache = config.cache.as_ref().map(|c| {
            previous
                .and_then(|p| p.cache.clone())
                .filter(|kept| kept.config == *c)
                .unwrap_or_else(|| Arc::new(cached::ResponseCache::new(c.clone())))
        });
        let gateway = Arc::new(Gateway {
            cache,
            challenges: previous.map_or_else(Default::default, |p| p.challenges.clone()),
            resolver,
            tls,
            permits,
            config,
            router,
            upstreams,
            deadlines,
            retries,
            logger,
            via,
            via_request,
        });
        Ok((gateway, carried))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn logger(&self) -> &Arc<log::Logger> {
        &self.logger
    }

    /// The upstream named `name`, for inspection.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }

    /// Everything `/metrics` shows, in Prometheus's text format: the counters kept with the log,
    /// then the upstreams' state as gauges.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(4096);
        self.logger.metrics().render(&mut out);
        let lost = self.logger.lines_lost();
        metrics::head(
            &mut out,
            "cleargate_log_lines_lost_total",
            "counter",
            "Log lines that never reached the log destination: dropped because it was slower than the traffic (reason=\"slow\"), or in a batch whose write failed (reason=\"write_error\").",
        );
        let _ = writeln!(
            out,
            "cleargate_log_lines_lost_total{{reason=\"slow\"}} {}\ncleargate_log_lines_lost_total{{reason=\"write_error\"}} {}",
            lost.slow, lost.write_error
        );
        metrics::head(
            &mut out,
            "cleargate_upstream_endpoint_healthy",
            "gauge",
            "1 when the endpoint takes requests (active checks pass, not ejected), 0 when it is out.",
        );
        for u in &self.upstreams {
            for e in &u.endpoints {
                let _ = writeln!(
                    out,
                    "cleargate_upstream_endpoint_healthy{{upstream=\"{}\",endpoint=\"{}\"}} {}",
                    metrics::escape(&u.name),
                    metrics::escape(&e.name),
                    u8::from(e.healthy())
                );
            }
        }
        for (name, kind, help, value) in [
            (
                "cleargate_upstream_connections_opened_total",
                "counter",
                "Connections opened to the endpoint.",
                Endpoint::connections_opened as fn(&Endpoint) -> u64,
            ),
            (
                "cleargate_upstream_ejections_total",
                "counter",
                "Times the endpoint was ejected after failures (outlier detection).",
                Endpoint::ejections_total,
            ),
        ] {
            metrics::head(&mut out, name, kind, help);
            for u in &self.upstreams {
                for e in &u.endpoints {
                    let _ = writeln!(
                        out,
                        "{name}{{upstream=\"{}\",endpoint=\"{}\"}} {}",
                        metrics::escape(&u.name),
                        metrics::escape(&e.name),
                        value(e)
                    );
                }
            }
        }
        for (name, help, value) in [
            (
                "cleargate_upstream_in_flight",
                "Requests in flight to the upstream now.",
                Upstream::in_flight as fn(&Upstream) -> usize,
            ),
            (
                "cleargate_upstream_queued",
                "Requests waiting now for an in-flight slot (max_in_flight reached).",
                Upstream::queued,
            ),
        ] {
            metrics::head(&mut out, name, "gauge", help);
            for u in &self.upstreams {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\"}} {}",
                    metrics::escape(&u.name),
                    value(u)
                );
            }
        }
        if let Some(cache) = &self.cache {
            cache.metrics(&mut out);
        }
        out
    }

    /// Re-resolves every upstream host name now.
    pub fn flush_dns(&self) {
        for u in &self.upstreams {
            u.flush_dns();
        }
        self.logger.notice(
            cause::Level::Info,
            "DNS answers flushed; upstream names are being resolved again",
            &[],
        );
    }
}

/// Binds every configured listen address, failing on the first that cannot be bound.
pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::new();
    for set in bind_workers(addrs, 1)? {
        for l in set {
            listeners.push(tokio::net::TcpListener::from_std(l)?);
        }
    }
    Ok(listeners)
}

/// Binds every configured listen address once per worker, with `SO_REUSEPORT`, so that the
/// kernel spreads new connections over the workers and no worker hands a connection to another.
/// A port of 0 is chosen once and then shared by every worker. The listeners are left
/// non-blocking, ready for `tokio::net::TcpListener::from_std` inside each worker's runtime.
pub fn bind_workers(
    addrs: &[SocketAddr],
    workers: usize,
) -> std::io::Result<Vec<Vec<std::net::TcpListener>>> {
    bind_workers_inherited(addrs, workers, &mut Vec::new())
}

/// As [`bind_workers`], using first the listening sockets `inherited` from the process that
/// started this one (socket activation, a binary upgrade): a socket whose address is the one
/// configured (or, for a port of 0, whose IP is) serves a worker instead of a new socket.
/// When fewer are inherited than there are workers, the other workers bind their own with
/// `SO_REUSEPORT`, or share the inherited socket when it does not allow that. The inherited
/// sockets used are taken out of `inherited`; those left match no configured address.
pub fn bind_workers_inherited(
    addrs: &[SocketAddr],
    workers: usize,
    inherited: &mut Vec<std::net::TcpListener>,
) -> std::io::Result<Vec<Vec<std::net::TcpListener>>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut sets: Vec<Vec<std::net::TcpListener>> =
        (0..workers.max(1)).map(|_| Vec::new()).collect();
    for addr in addrs {
        let matches = |l: &std::net::TcpListener| {
            l.local_addr()
                .is_ok_and(|a| a == *addr || (addr.port() == 0 && a.ip() == addr.ip()))
        };
        let mut mine: Vec<std::net::TcpListener> = Vec::new();
        let mut i = 0;
        while i < inherited.len() {
            if matches(&inherited[i])
                && (mine.is_empty()
                    || addr.port() != 0
                    || inherited[i].local_addr().ok() == mine[0].local_addr().ok())
            {
                mine.push(inherited.remove(i));
            } else {
                i += 1;
            }
        }
        let mut addr = match mine.first().and_then(|l| l.local_addr().ok()) {
            Some(a) => a,
            None => *addr,
        };
        let mut mine = mine.into_iter();
        let mut first_inherited: Option<std::net::TcpListener> = None;
        for set in sets.iter_mut() {
            if let Some(l) = mine.next() {
                l.set_nonblocking(true)?;
                if first_inherited.is_none() {
                    first_inherited = l.try_clone().ok();
                }
                set.push(l);
                continue;
            }
            let bound = (|| {
                let socket =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                socket.set_reuse_address(true)?;
                #[cfg(unix)]
                socket.set_reuse_port(true)?;
                if addr.is_ipv6() {
                    socket.set_only_v6(true)?;
                }
                socket.set_nonblocking(true)?;
                socket.bind(&addr.into())?;
                socket.listen(1024)?;
                Ok::<_, std::io::Error>(std::net::TcpListener::from(socket))
            })();
            let bound = match (bound, &first_inherited) {
                (Ok(b), _) => b,
                // An inherited socket without SO_REUSEPORT: the workers share it.
                (Err(_), Some(shared)) => shared.try_clone()?,
                (Err(e), None) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot listen on {addr}: {e}"),
                    ))
                }
            };
            // The first worker's port, when the kernel picked it, is every worker's port.
            addr = bound.local_addr()?;
            set.push(bound);
        }
        // More inherited sockets than workers (the old process had more): each still serves.
        for (k, l) in mine.enumerate() {
            l.set_nonblocking(true)?;
            let n = sets.len();
            sets[k % n].push(l);
        }
    }
    Ok(sets)
}

/// Opens the log sink the configuration names.
pub fn logger_for(config: &Config) -> std::io::Result<Arc<log::Logger>> {
    let format = match config.log.format {
        config::LogFormat::Json => log::Format::Json,
        config::LogFormat::Text => log::Format::Text,
    };
    let sink = match &config.log.destination {
        config::LogDestination::Stdout => log::Sink::Stdout,
        config::LogDestination::Stderr => log::Sink::Stderr,
        config::LogDestination::File(p) => log::Sink::File(p.clone()),
    };
    Ok(Arc::new(log::Logger::for_workers(
        format,
        sink,
        config.workers,
    )?))
}
