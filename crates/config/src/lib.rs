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
    pub listen: Vec<SocketAddr>,
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

#[derive(Clone, Debug)]
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 100 * 1024 * 1024,
            request_header_timeout: Duration::from_secs(10),
            client_idle_timeout: Duration::from_secs(75),
            max_response_header_bytes: 64 * 1024,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ErrorPage {
    pub path: PathBuf,
    pub template: String,
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    pub name: String,
    /// `host:port` strings as written; a host may be an IP address or a name.
    pub endpoints: Vec<String>,
    pub timeouts: Timeouts,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
}

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
            "{} listener(s), {} upstream(s) with {} endpoint(s), {} route(s)",
            self.listen.len(),
            self.upstreams.len(),
            endpoints,
            self.routes.len()
        )
    }
}
