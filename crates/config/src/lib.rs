//! The configuration file: TOML in, a validated [`Config`] out, or every problem found.
//!
//! Parsing keeps the span of every key and value, so each problem is reported as
//! `FILE:LINE:COLUMN: message`, and validation goes on after the first problem so that one run of
//! `cleargate check` lists them all. Nothing here binds sockets or starts tasks; error-page files
//! are read, because a missing page is a configuration problem worth reporting up front.

mod schema;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use values::{parse_duration, parse_size};

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Plain listeners first (`listen`), then TLS ones (`listen_tls`), in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Certificates served on TLS listeners; the first is for clients that send no SNI.
    pub certificates: Vec<CertificateConfig>,
    /// The name shown on error pages, in `Via` and in `Proxy-Status`.
    pub server_name: String,
    pub log: LogConfig,
    pub limits: Limits,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// Operator pages per status, already read from disk.
    pub error_pages: BTreeMap<u16, ErrorPage>,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub resolver: ResolverConfig,
    /// Certificates obtained and renewed from an ACME server (`[acme]`).
    pub acme: Option<AcmeConfig>,
    /// `[admin]`: the operator's listener (metrics), never proxied traffic.
    pub admin: Option<AdminConfig>,
    /// `[cache]`: the in-memory response cache that routes with `cache = true` use.
    pub cache: Option<CacheConfig>,
    /// Clients that see upstream addresses and error details on error pages and in
    /// `Proxy-Status`; everyone else sees the upstream's name only.
    pub trusted_clients: Vec<ipnet::IpNet>,
    /// Worker threads, each with its own event loop, listeners and upstream connection pools.
    pub workers: usize,
}

/// One listening address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// TLS is terminated here (`listen_tls`).
    pub tls: bool,
    /// Plain listener only: every request is answered with a redirect to `https://`.
    pub redirect_https: bool,
    /// TLS listener only: the `Strict-Transport-Security` value added to every response.
    pub hsts: Option<String>,
}

/// Where something was written in the configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Place {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Place {
    /// A problem found here.
    pub fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}

/// One `[[certificate]]`: a PEM chain and its private key, read when the gateway starts and
/// again on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where `cert` and `key` were written, for problems found in the files.
    pub cert_at: Place,
    pub key_at: Place,
}

/// `[acme]`: one certificate for `domains`, obtained from an ACME server (RFC 8555) and renewed
/// before it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeConfig {
    pub email: Option<String>,
    /// The directory URL; Let's Encrypt's by default.
    pub directory: String,
    pub domains: Vec<String>,
    /// Where the account key and the certificate are kept.
    pub storage: PathBuf,
    /// CA certificates (PEM) that the directory's TLS is checked against, instead of the public
    /// roots (a test CA such as Pebble's).
    pub ca: Option<PathBuf>,
    /// A certificate is renewed once it has less than this left.
    pub renew_before: Duration,
    /// How the ACME server checks the domains.
    pub challenge: AcmeChallenge,
    pub at: Place,
}

/// The ACME challenge the gateway answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// HTTP-01: a file under `/.well-known/acme-challenge/` on port 80 (a plain listener).
    Http01,
    /// TLS-ALPN-01: a special certificate on port 443 (a TLS listener), RFC 8737.
    TlsAlpn01,
}

/// The operator's listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The HSTS value `hsts = true` stands for: one year.
pub const DEFAULT_HSTS: &str = "max-age=31536000";

impl Config {
    /// The plain listening addresses.
    pub fn plain_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| !l.tls)
            .map(|l| l.addr)
            .collect()
    }

    /// Every listening address, in the order of [`Config::listeners`].
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }
}

/// One worker per core, as nginx's `worker_processes auto`.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Loopback only: an operator on the gateway's own host sees everything.
pub fn default_trusted_clients() -> Vec<ipnet::IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid CIDR"),
        "::1/128".parse().expect("valid CIDR"),
    ]
}

impl Config {
    /// True when `ip` is inside one of the `trusted_clients` networks. An IPv4 client reached
    /// over an IPv6 socket (`::ffff:a.b.c.d`) is judged by its IPv4 address.
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_clients.iter().any(|n| n.contains(&ip))
    }
}

/// How upstream host names are resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolverConfig {
    /// Name servers to ask; empty means the system configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub destination: LogDestination,
}

/// Limits that protect the gateway from clients and from upstreams.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest client request header section (request line and headers), in bytes.
    pub max_request_header_bytes: usize,
    /// Largest client request body, in bytes.
    pub max_request_body_bytes: u64,
    /// How long a client may take to send a complete request head.
    pub request_header_timeout: Duration,
    /// How long an idle client keep-alive connection is kept open.
    pub client_idle_timeout: Duration,
    /// Largest upstream response header section, in bytes.
    pub max_response_header_bytes: usize,
    /// Most header lines in an upstream response head. Up to 100 cost nothing; above, every
    /// response parse reserves room for this many.
    pub max_response_headers: usize,
    /// Request bodies up to this size are kept so that a failed attempt can be replayed.
    pub max_replay_body_bytes: usize,
    /// Client connections served at once; more wait in the kernel's accept queue.
    pub max_client_connections: usize,
    /// How long an upgraded connection (WebSocket) may pass no byte either way.
    pub tunnel_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 100 * 1024 * 1024,
            request_header_timeout: Duration::from_secs(10),
            client_idle_timeout: Duration::from_secs(75),
            max_response_header_bytes: 64 * 1024,
            max_response_headers: 100,
            max_replay_body_bytes: 64 * 1024,
            max_client_connections: 10_000,
            tunnel_idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ErrorPage {
    pub path: PathBuf,
    pub template: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<EndpointConfig>,
    pub timeouts: Timeouts,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    pub balance: Balance,
    pub protocol: Protocol,
    /// Requests in flight to the whole upstream at once; 0 = no limit.
    pub max_in_flight: usize,
    /// Requests in flight to one endpoint at once; 0 = no limit.
    pub max_in_flight_per_endpoint: usize,
    /// Requests that may wait for a free slot; beyond that, 503 `overloaded`.
    pub queue_size: usize,
    /// How long a request may wait in the queue.
    pub queue_timeout: Duration,
    /// How long idempotent requests wait for an endpoint to come back when all refuse.
    pub restart_wait: Duration,
    /// Ramp-up time of an endpoint's share of traffic after it recovers; zero = off.
    pub slow_start: Duration,
    /// Below this percentage of usable endpoints, ejections are ignored (all endpoints are used).
    pub panic_threshold: u32,
    /// Retries allowed as a percentage of requests.
    pub retry_budget_percent: u32,
    /// Retries always allowed per second, whatever the percentage.
    pub retry_budget_min_per_second: usize,
    pub dns_min_ttl: Duration,
    pub dns_max_ttl: Duration,
    pub health: Option<HealthConfig>,
    pub outlier: OutlierConfig,
    /// `[upstream.NAME.tls]`: TLS to every endpoint.
    pub tls: Option<UpstreamTlsConfig>,
}

/// TLS to an upstream's endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// CA certificates (PEM) to trust instead of the system's roots.
    pub ca: Option<(PathBuf, Place)>,
    /// The name sent in SNI and checked in the certificate; default: each endpoint's host.
    pub sni: Option<String>,
    /// `false` accepts any certificate (a WARN at start).
    pub verify: bool,
    /// A client certificate and key for mutual TLS.
    pub client_cert: Option<(PathBuf, Place)>,
    pub client_key: Option<(PathBuf, Place)>,
    /// Where the table was written.
    pub at: Place,
}

impl UpstreamConfig {
    /// An upstream with every setting at its default and no endpoints.
    pub fn new(name: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.to_string(),
            endpoints: Vec::new(),
            timeouts: Timeouts::default(),
            max_idle_per_endpoint: 256,
            idle_timeout: Duration::from_secs(30),
            balance: Balance::RoundRobin,
            protocol: Protocol::Http1,
            max_in_flight: 0,
            max_in_flight_per_endpoint: 0,
            queue_size: 100,
            queue_timeout: Duration::from_secs(1),
            restart_wait: Duration::from_secs(3),
            slow_start: Duration::ZERO,
            panic_threshold: 50,
            retry_budget_percent: 20,
            retry_budget_min_per_second: 10,
            dns_min_ttl: Duration::from_secs(1),
            dns_max_ttl: Duration::from_secs(300),
            health: None,
            outlier: OutlierConfig::default(),
            tls: None,
        }
    }
}

/// One endpoint: `host:port` as written (an IP address or a name), and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    pub address: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Weighted,
    /// Power of two choices over in-flight counts.
    LeastRequest,
    Hash(HashOn),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    /// Lowercased header name.
    Header(String),
    Cookie(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 without TLS, prior knowledge.
    H2c,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthCheck {
    Http { path: String },
    Tcp,
}

/// Active health checks.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    pub check: HealthCheck,
    pub interval: Duration,
    pub timeout: Duration,
    /// Inclusive status ranges that count as healthy.
    pub expect: Vec<(u16, u16)>,
    /// Consecutive passes to become healthy.
    pub rise: u32,
    /// Consecutive failures to become unhealthy.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            check: HealthCheck::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            expect: vec![(200, 399)],
            rise: 2,
            fall: 3,
        }
    }
}

/// Passive outlier ejection.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive gateway-side failures (connect, reset, timeout...) that eject; 0 = off.
    pub consecutive_failures: u32,
    /// Consecutive 5xx answers from the upstream that eject; 0 = off.
    pub consecutive_5xx: u32,
    /// First ejection time; each repeat adds as much again, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share of the endpoints is ejected at once.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            consecutive_5xx: 0,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// Retry settings of a route.
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    /// Limit of one attempt (connect to response head); `None` = the upstream's timeouts.
    pub per_try_timeout: Option<Duration>,
    /// Limit of the whole request until its response head, waits and retries included.
    pub deadline: Duration,
    /// Causes that are retried for idempotent requests with a replayable body, beyond the
    /// always-safe ones (nothing sent; the keep-alive race). `timeout` is retried only for
    /// requests that are safe to repeat even if the first attempt was processed: GET, HEAD,
    /// OPTIONS and TRACE, or any request with an `Idempotency-Key`.
    pub on: Vec<cause::Cause>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            per_try_timeout: None,
            deadline: Duration::from_secs(15),
            on: vec![
                cause::Cause::Reset,
                cause::Cause::Closed,
                cause::Cause::Timeout,
            ],
        }
    }
}

/// Causes a route may list in `retry.on`.
pub const RETRYABLE: &[cause::Cause] = &[
    cause::Cause::Dns,
    cause::Cause::Refused,
    cause::Cause::Unreachable,
    cause::Cause::Timeout,
    cause::Cause::Reset,
    cause::Cause::Closed,
    cause::Cause::Tls,
    cause::Cause::InvalidResponse,
];

/// One deadline per phase of an upstream exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (resolve included).
    pub connect: Duration,
    /// Longest pause while writing the request to the upstream.
    pub send: Duration,
    /// From the request fully sent to the response head received.
    pub response: Duration,
    /// Longest pause between two reads of the response body.
    pub body_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            send: Duration::from_secs(30),
            response: Duration::from_secs(60),
            body_idle: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// Lowercased host without port; `None` matches any host.
    pub host: Option<String>,
    pub path: String,
    pub upstream: String,
    pub retry: RetryConfig,
    /// Responses on this route are cached (`[cache]` must exist).
    pub cache: bool,
}

/// `[cache]`: one in-memory store for every caching route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes of headers and bodies stored, at most.
    pub size: u64,
    /// A larger response is streamed through, not stored.
    pub max_object: u64,
    /// How long past its freshness a stored response may answer when the upstream fails
    /// (the response's own `stale-if-error` may allow longer).
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            size: 256 << 20,
            max_object: 8 << 20,
            stale_if_error: Duration::from_secs(600),
        }
    }
}

/// One problem found in a configuration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a configuration file.
#[derive(Clone, Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                file: file.clone(),
                line: 1,
                column: 1,
                message: format!("cannot read the configuration file: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&src, &file, base)
    }

    /// Validates `src`; `file` names it in problems and `base` anchors relative paths.
    pub fn parse(src: &str, file: &str, base: &Path) -> Result<Config, Problems> {
        schema::parse(src, file, base)
    }

    /// A one-line summary for `cleargate check`.
    pub fn summary(&self) -> String {
        let endpoints: usize = self.upstreams.iter().map(|u| u.endpoints.len()).sum();
        format!(
            "{} listener(s), {} upstream(s) with {} endpoint(s), {} route(s){}",
            self.listeners.len(),
            self.upstreams.len(),
            endpoints,
            self.routes.len(),
            match self.certificates.len() {
                0 => String::new(),
                n => format!(", {n} certificate(s)"),
            }
        )
    }
}
