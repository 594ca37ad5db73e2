//! The cause spine: the closed vocabulary every part of cleargate speaks.
//!
//! A gateway failure is data: a [`Cause`] (what went wrong) in a [`Phase`] (when), plus the facts
//! of the attempt ([`Failure`]). [`Failure::answer`] is the one mapping from a failure to the status,
//! `Proxy-Status`, `Retry-After`, log level and metric label. Nothing else in the project decides
//! those. The plain-words texts shown on error pages and in logs live here too, so that the page,
//! the log line and the docs cannot drift apart.
//!
//! This crate does no I/O and depends only on `std`.

use std::fmt;
use std::str::FromStr;

/// When, in the life of a request, a failure happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Resolve,
    Connect,
    TlsHandshake,
    SendRequest,
    ReadHead,
    ReadBody,
    Upgrade,
    Queue,
    Select,
    Client,
}

impl Phase {
    pub const ALL: &'static [Phase] = &[
        Phase::Resolve,
        Phase::Connect,
        Phase::TlsHandshake,
        Phase::SendRequest,
        Phase::ReadHead,
        Phase::ReadBody,
        Phase::Upgrade,
        Phase::Queue,
        Phase::Select,
        Phase::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::TlsHandshake => "tls_handshake",
            Phase::SendRequest => "send_request",
            Phase::ReadHead => "read_head",
            Phase::ReadBody => "read_body",
            Phase::Upgrade => "upgrade",
            Phase::Queue => "queue",
            Phase::Select => "select",
            Phase::Client => "client",
        }
    }

    /// Plain words for the phase, as used in sentences ("while connecting").
    pub fn words(self) -> &'static str {
        match self {
            Phase::Resolve => "while resolving the upstream's name",
            Phase::Connect => "while connecting to the upstream",
            Phase::TlsHandshake => "during the TLS handshake with the upstream",
            Phase::SendRequest => "while sending the request to the upstream",
            Phase::ReadHead => "while waiting for the upstream's response headers",
            Phase::ReadBody => "while reading the upstream's response body",
            Phase::Upgrade => "while upgrading the connection",
            Phase::Queue => "while queued for a free upstream slot",
            Phase::Select => "while choosing an upstream endpoint",
            Phase::Client => "while reading the client's request",
        }
    }

    /// True for phases in which nothing of the request has reached the upstream yet.
    pub fn before_send(self) -> bool {
        matches!(
            self,
            Phase::Resolve | Phase::Connect | Phase::TlsHandshake | Phase::Queue | Phase::Select
        )
    }
}

/// What went wrong. Stable snake_case names: this is the public vocabulary.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    Dns,
    Refused,
    Unreachable,
    Timeout,
    Reset,
    Closed,
    Tls,
    InvalidResponse,
    ResponseTooLarge,
    UpgradeFailed,
    NoHealthyUpstream,
    Overloaded,
    LocalExhausted,
    NoRoute,
    Denied,
    RateLimited,
    ClientInvalid,
    ClientAborted,
    Internal,
}

/// Which side of the gateway a cause belongs to; decides which hop an error page marks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's request or connection.
    Client,
    /// The gateway itself: its rules, its protection, its host.
    Gateway,
    /// The upstream, or the network between the gateway and it.
    Upstream,
}

impl Cause {
    pub const ALL: &'static [Cause] = &[
        Cause::Dns,
        Cause::Refused,
        Cause::Unreachable,
        Cause::Timeout,
        Cause::Reset,
        Cause::Closed,
        Cause::Tls,
        Cause::InvalidResponse,
        Cause::ResponseTooLarge,
        Cause::UpgradeFailed,
        Cause::NoHealthyUpstream,
        Cause::Overloaded,
        Cause::LocalExhausted,
        Cause::NoRoute,
        Cause::Denied,
        Cause::RateLimited,
        Cause::ClientInvalid,
        Cause::ClientAborted,
        Cause::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Dns => "dns",
            Cause::Refused => "refused",
            Cause::Unreachable => "unreachable",
            Cause::Timeout => "timeout",
            Cause::Reset => "reset",
            Cause::Closed => "closed",
            Cause::Tls => "tls",
            Cause::InvalidResponse => "invalid_response",
            Cause::ResponseTooLarge => "response_too_large",
            Cause::UpgradeFailed => "upgrade_failed",
            Cause::NoHealthyUpstream => "no_healthy_upstream",
            Cause::Overloaded => "overloaded",
            Cause::LocalExhausted => "local_exhausted",
            Cause::NoRoute => "no_route",
            Cause::Denied => "denied",
            Cause::RateLimited => "rate_limited",
            Cause::ClientInvalid => "client_invalid",
            Cause::ClientAborted => "client_aborted",
            Cause::Internal => "internal",
        }
    }

    pub fn side(self) -> Side {
        match self {
            Cause::ClientInvalid | Cause::ClientAborted => Side::Client,
            Cause::NoRoute
            | Cause::Denied
            | Cause::RateLimited
            | Cause::Overloaded
            | Cause::LocalExhausted
            | Cause::Internal => Side::Gateway,
            _ => Side::Upstream,
        }
    }

    /// A transient cause may well be gone on the next try; the error page offers to try again.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Cause::Refused
                | Cause::Unreachable
                | Cause::Timeout
                | Cause::Reset
                | Cause::Closed
                | Cause::NoHealthyUpstream
                | Cause::Overloaded
                | Cause::RateLimited
                | Cause::LocalExhausted
        )
    }

    /// One sentence naming what happened, in plain words, for people who do not run the gateway.
    pub fn summary(self) -> &'static str {
        match self {
            Cause::Dns => "The gateway could not find the address of the server behind it: its name did not resolve.",
            Cause::Refused => "The server behind the gateway refused the connection: nothing is listening there, it may be down or restarting.",
            Cause::Unreachable => "The server behind the gateway could not be reached over the network.",
            Cause::Timeout => "The server behind the gateway did not answer in time.",
            Cause::Reset => "The server behind the gateway abruptly reset the connection.",
            Cause::Closed => "The server behind the gateway closed the connection before sending a complete response.",
            Cause::Tls => "The secure (TLS) connection between the gateway and the server behind it failed.",
            Cause::InvalidResponse => "The server behind the gateway sent a response that is not valid HTTP.",
            Cause::ResponseTooLarge => "The server behind the gateway sent response headers larger than the gateway accepts.",
            Cause::UpgradeFailed => "The server behind the gateway did not accept the connection upgrade (for example WebSocket).",
            Cause::NoHealthyUpstream => "Every server behind the gateway is currently out of service.",
            Cause::Overloaded => "The gateway is protecting the servers behind it from more load than they can take.",
            Cause::LocalExhausted => "The gateway's own host ran out of a resource (connections, ports or memory).",
            Cause::NoRoute => "The gateway has no route for this address.",
            Cause::Denied => "The gateway's access rules do not allow this request.",
            Cause::RateLimited => "Too many requests came from this client in a short time.",
            Cause::ClientInvalid => "The request was malformed, too large or too slow to arrive.",
            Cause::ClientAborted => "The client went away before the response was complete.",
            Cause::Internal => "The gateway hit an internal error.",
        }
    }

    /// What a visitor of the site can do about it.
    pub fn visitor_advice(self) -> &'static str {
        match self {
            Cause::NoRoute => "Check the address you typed; this page may not exist here.",
            Cause::Denied => "If you believe you should have access, contact the site's owner.",
            Cause::RateLimited => "Wait a moment, then try again more slowly.",
            Cause::ClientInvalid => "Check the request: it may be too large, malformed, or your connection too slow.",
            Cause::ClientAborted => "Nothing to do.",
            c if c.is_transient() => "This is usually temporary: wait a few seconds and try again.",
            _ => "This is a problem on the site's side, not yours. Try again later or tell the site's owner.",
        }
    }

    /// What the operator should check first, in order.
    pub fn operator_checks(self) -> &'static [&'static str] {
        match self {
            Cause::Dns => &[
                "the upstream host name is spelled right in the configuration",
                "the name resolves from the gateway host (cleargate doctor, dig)",
                "the resolver the gateway uses is reachable and answering",
            ],
            Cause::Refused => &[
                "the upstream process is running and listening on that address and port",
                "it is not restarting or crash-looping (service manager, container status)",
                "the port in the configuration matches the one the application binds",
            ],
            Cause::Unreachable => &[
                "the upstream host is up and has a route from the gateway host",
                "firewalls and security groups allow the gateway to reach that port",
                "the address in the configuration is the right one",
            ],
            Cause::Timeout => &[
                "the phase: a connect timeout points at the network or a full accept queue, a read timeout at a slow application",
                "the application's own logs and latency for this request",
                "the gateway's timeouts against the application's real response times",
            ],
            Cause::Reset => &[
                "the application's logs for a crash or a killed worker at that time",
                "keep-alive settings: the upstream's idle timeout should exceed the gateway's",
                "middleboxes (firewalls, load balancers) that reset idle connections",
            ],
            Cause::Closed => &[
                "the application's logs for a crash or worker restart at that time",
                "keep-alive settings: the upstream's idle timeout should exceed the gateway's",
                "response size or time limits in the application server that cut responses short",
            ],
            Cause::Tls => &[
                "the upstream really speaks TLS on that port (not plain HTTP)",
                "its certificate is valid, unexpired and names the host the gateway uses",
                "TLS versions and ciphers on both sides overlap",
            ],
            Cause::InvalidResponse => &[
                "the upstream speaks HTTP on that port (not another protocol, not TLS)",
                "the application writes valid headers and framing (no stray output before headers)",
                "the upstream's logs for the response it sent",
            ],
            Cause::ResponseTooLarge => &[
                "what makes the application's response headers so large (cookies, debug headers)",
                "the gateway's response header limit, if such headers are expected",
            ],
            Cause::UpgradeFailed => &[
                "the upstream supports the requested upgrade (WebSocket) on that path",
                "the upstream answered 101 and not a regular response",
            ],
            Cause::NoHealthyUpstream => &[
                "why every endpoint is failing health checks or was ejected",
                "recent deploys or restarts of the whole pool",
            ],
            Cause::Overloaded => &[
                "the traffic level against the configured in-flight and queue limits",
                "whether the upstream is slower than usual, which holds slots longer",
            ],
            Cause::LocalExhausted => &[
                "the gateway host's file descriptor limit (ulimit -n) and ephemeral port range",
                "memory on the gateway host",
            ],
            Cause::NoRoute => &[
                "the routes in the configuration: host names and path prefixes",
            ],
            Cause::Denied => &["the allow and deny rules that matched this client"],
            Cause::RateLimited => &["the rate limit for this client against its real needs"],
            Cause::ClientInvalid => &[
                "the gateway's header, body and timeout limits against what clients legitimately send",
            ],
            Cause::ClientAborted => &["client-side timeouts shorter than the upstream's response time"],
            Cause::Internal => &["the gateway's log around this request id, and report it"],
        }
    }

    /// The RFC 9209 `Proxy-Status` error type for this cause in this phase.
    pub fn proxy_status_error(self, phase: Phase) -> &'static str {
        match self {
            Cause::Dns if phase == Phase::Resolve => "dns_error",
            Cause::Dns => "dns_error",
            Cause::Refused => "connection_refused",
            Cause::Unreachable => "destination_ip_unroutable",
            Cause::Timeout => match phase {
                Phase::Resolve => "dns_timeout",
                Phase::Connect | Phase::TlsHandshake => "connection_timeout",
                Phase::SendRequest => "connection_write_timeout",
                Phase::ReadBody => "connection_read_timeout",
                _ => "http_response_timeout",
            },
            Cause::Reset => "connection_terminated",
            Cause::Closed => match phase {
                Phase::ReadHead | Phase::ReadBody => "http_response_incomplete",
                _ => "connection_terminated",
            },
            Cause::Tls => "tls_protocol_error",
            Cause::InvalidResponse => "http_protocol_error",
            Cause::ResponseTooLarge => "http_response_header_section_size",
            Cause::UpgradeFailed => "http_upgrade_failed",
            Cause::NoHealthyUpstream => "destination_unavailable",
            Cause::Overloaded => "connection_limit_reached",
            Cause::LocalExhausted => "proxy_internal_error",
            Cause::NoRoute => "destination_not_found",
            Cause::Denied | Cause::RateLimited => "http_request_denied",
            Cause::ClientInvalid | Cause::ClientAborted => "http_request_error",
            Cause::Internal => "proxy_internal_error",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a name outside the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName(pub String);

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown name `{}`", self.0)
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Cause {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cause::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_string()))
    }
}

impl FromStr for Phase {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_string()))
    }
}

/// What exactly was wrong with a client's request; decides the 4xx of `client_invalid`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ClientFault {
    /// Malformed request: 400.
    #[default]
    Malformed,
    /// The request head did not arrive in time: 408.
    Slow,
    /// The body is larger than the limit: 413.
    BodyTooLarge,
    /// The header section is larger than the limit: 431.
    HeadersTooLarge,
    /// The request uses a transfer coding the gateway does not implement: 501.
    NotImplemented,
}

/// How loud a failure is in the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// One failed attempt (or one refusal by the gateway itself), with the facts that explain it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub phase: Phase,
    /// The attempt ran on a pooled connection that had served requests before.
    pub reused: bool,
    /// Request bytes written to the upstream connection during this attempt.
    pub request_bytes: u64,
    /// Response bytes read from the upstream connection during this attempt.
    pub response_bytes: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The upstream endpoint (address or name) the attempt was aimed at, if one was chosen.
    pub endpoint: Option<String>,
    /// The upstream's configured name, if the request got that far.
    pub upstream: Option<String>,
    /// A short technical detail ("connection refused (os error 111)", "header section 70 KiB > 64 KiB").
    pub detail: Option<String>,
    /// For `client_invalid`: which 4xx.
    pub client_fault: ClientFault,
    /// Seconds the client should wait before retrying, overriding the cause's default.
    pub retry_after: Option<u32>,
    /// The upstream certainly did not process the request (HTTP/2 REFUSED_STREAM, or a stream
    /// above a GOAWAY's last stream id): it may be replayed whatever its method.
    pub unprocessed: bool,
    /// The earlier attempts of the same request, as `endpoint/cause@phase`, oldest first.
    pub earlier: Vec<String>,
    /// For `invalid_response` and `response_too_large`: the first bytes the upstream sent, as
    /// they came (at most [`EVIDENCE_BYTES`]).
    pub evidence: Option<Vec<u8>>,
}

/// How many of the bytes an upstream sent a failure keeps as evidence.
pub const EVIDENCE_BYTES: usize = 512;

/// `bytes` written for a reader: printable ASCII as is, `\r`, `\n`, `\t`, `\\` and `\xHH`
/// for the rest.
pub fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() + 16);
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

impl Failure {
    pub fn new(cause: Cause, phase: Phase) -> Failure {
        Failure {
            cause,
            phase,
            reused: false,
            request_bytes: 0,
            response_bytes: 0,
            attempt: 1,
            endpoint: None,
            upstream: None,
            detail: None,
            client_fault: ClientFault::default(),
            retry_after: None,
            unprocessed: false,
            earlier: Vec::new(),
            evidence: None,
        }
    }

    pub fn client(fault: ClientFault, detail: impl Into<String>) -> Failure {
        Failure {
            client_fault: fault,
            detail: Some(detail.into()),
            ..Failure::new(Cause::ClientInvalid, Phase::Client)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Failure {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Failure {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The failure as a client outside `trusted_clients` may see it: the upstream's name instead
    /// of any address, port or host name of an endpoint, and no technical detail (which may hold
    /// OS error text or resolved addresses). The log always gets the whole failure.
    pub fn redacted(&self) -> Failure {
        let name = self.upstream.clone();
        let shown = name.as_deref().unwrap_or("upstream");
        Failure {
            endpoint: self.endpoint.as_ref().map(|_| shown.to_string()),
            detail: None,
            earlier: self
                .earlier
                .iter()
                .map(|e| match e.split_once('/') {
                    Some((_, rest)) => format!("{shown}/{rest}"),
                    None => shown.to_string(),
                })
                .collect(),
            ..self.clone()
        }
    }

    /// The one mapping: status, headers, log level and metric label for this failure.
    pub fn answer(&self) -> Answer {
        let status = match self.cause {
            Cause::Dns
            | Cause::Refused
            | Cause::Unreachable
            | Cause::Reset
            | Cause::Closed
            | Cause::Tls
            | Cause::InvalidResponse
            | Cause::ResponseTooLarge
            | Cause::UpgradeFailed => 502,
            Cause::Timeout => 504,
            Cause::NoHealthyUpstream | Cause::Overloaded | Cause::LocalExhausted => 503,
            Cause::NoRoute => 404,
            Cause::Denied => 403,
            Cause::RateLimited => 429,
            Cause::ClientInvalid => match self.client_fault {
                ClientFault::Malformed => 400,
                ClientFault::Slow => 408,
                ClientFault::BodyTooLarge => 413,
                ClientFault::HeadersTooLarge => 431,
                ClientFault::NotImplemented => 501,
            },
            Cause::ClientAborted => 499,
            Cause::Internal => 500,
        };
        let default_retry_after = match self.cause {
            Cause::NoHealthyUpstream => Some(5),
            Cause::Overloaded => Some(2),
            Cause::RateLimited => Some(1),
            _ => None,
        };
        let level = match self.cause {
            Cause::ClientAborted => Level::Info,
            Cause::Internal | Cause::LocalExhausted => Level::Error,
            _ => Level::Warn,
        };
        Answer {
            status,
            proxy_status_error: self.cause.proxy_status_error(self.phase),
            retry_after: default_retry_after.map(|d| self.retry_after.unwrap_or(d)),
            level,
            metric_label: self.cause.as_str(),
            // 499 is a log-only code: the client is gone and nothing is sent.
            sent_to_client: self.cause != Cause::ClientAborted,
        }
    }

    /// The `Proxy-Status` header value (RFC 9209) naming this failure. `proxy` is the gateway's
    /// name as a structured-field token; `attempts` is how many attempts the request made.
    pub fn proxy_status(&self, proxy: &str, attempts: u32) -> String {
        let answer = self.answer();
        let mut value = format!("{}; error={}", sf_token(proxy), answer.proxy_status_error);
        if let Some(endpoint) = &self.endpoint {
            value.push_str("; next-hop=");
            push_sf_string(&mut value, endpoint);
        }
        let mut details = format!(
            "cause={} phase={} attempts={} reused={} sent={} received={}",
            self.cause, self.phase, attempts, self.reused, self.request_bytes, self.response_bytes
        );
        if let Some(upstream) = &self.upstream {
            details.push_str(" upstream=");
            details.push_str(upstream);
        }
        if !self.earlier.is_empty() {
            details.push_str(" earlier=");
            details.push_str(&self.earlier.join(","));
        }
        if let Some(d) = &self.detail {
            // In words, after the facts; a redacted failure has none. No `;`: naive readers
            // split Proxy-Status parameters on it even inside quotes.
            details.push_str(" / ");
            details.extend(d.chars().map(|c| match c {
                '"' => '\'',
                ';' => ',',
                c => c,
            }));
        }
        value.push_str("; details=");
        push_sf_string(&mut value, &details);
        value
    }
}

/// What the gateway does about a failure, as decided by [`Failure::answer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub proxy_status_error: &'static str,
    pub retry_after: Option<u32>,
    pub level: Level,
    pub metric_label: &'static str,
    pub sent_to_client: bool,
}

/// Makes `name` a valid structured-field token (RFC 8941), so any configured server name is safe.
pub fn sf_token(name: &str) -> String {
    let mut out: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(*c))
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '*') {
        out.insert_str(0, "gw-");
    }
    out
}

/// Appends `s` as a structured-field string: quoted, `\` and `"` escaped, non-printable dropped.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out.push('"');
}

/// Reads the `details` of a cleargate `Proxy-Status` back into cause and phase; `None` when the
/// value was not written by [`Failure::proxy_status`].
pub fn parse_details(proxy_status: &str) -> Option<(Cause, Phase)> {
    let start = proxy_status.find("details=\"")? + "details=\"".len();
    let rest = &proxy_status[start..];
    let details = &rest[..rest.find('"')?];
    let mut cause = None;
    let mut phase = None;
    for word in details.split(' ') {
        if let Some(v) = word.strip_prefix("cause=") {
            cause = v.parse().ok();
        } else if let Some(v) = word.strip_prefix("phase=") {
            phase = v.parse().ok();
        }
    }
    Some((cause?, phase?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn evidence_is_escaped_for_a_reader() {
        assert_eq!(
            super::escape_bytes(b"HTTP/1.1 2OO OK\r\nX: \\\x00\xff\n"),
            "HTTP/1.1 2OO OK\\r\\nX: \\\\\\x00\\xff\\n"
        );
    }

    use super::*;

    #[test]
    fn names_round_trip_and_are_snake_case() {
        for c in Cause::ALL {
            assert_eq!(c.as_str().parse::<Cause>().unwrap(), *c);
            assert!(c
                .as_str()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_'));
        }
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), *p);
        }
        assert!("bogus".parse::<Cause>().is_err());
    }

    fn check(cause: Cause, phase: Phase, status: u16, error: &str, retry_after: Option<u32>) {
        let answer = Failure::new(cause, phase).answer();
        assert_eq!(answer.status, status, "{cause}@{phase}");
        assert_eq!(answer.proxy_status_error, error, "{cause}@{phase}");
        assert_eq!(answer.retry_after, retry_after, "{cause}@{phase}");
    }

    #[test]
    fn status_table_matches_design() {
        check(Cause::Dns, Phase::Resolve, 502, "dns_error", None);
        check(
            Cause::Refused,
            Phase::Connect,
            502,
            "connection_refused",
            None,
        );
        check(
            Cause::Unreachable,
            Phase::Connect,
            502,
            "destination_ip_unroutable",
            None,
        );
        check(
            Cause::Timeout,
            Phase::Connect,
            504,
            "connection_timeout",
            None,
        );
        check(
            Cause::Timeout,
            Phase::ReadHead,
            504,
            "http_response_timeout",
            None,
        );
        check(
            Cause::Timeout,
            Phase::SendRequest,
            504,
            "connection_write_timeout",
            None,
        );
        check(
            Cause::Reset,
            Phase::ReadHead,
            502,
            "connection_terminated",
            None,
        );
        check(
            Cause::Closed,
            Phase::ReadHead,
            502,
            "http_response_incomplete",
            None,
        );
        check(
            Cause::Tls,
            Phase::TlsHandshake,
            502,
            "tls_protocol_error",
            None,
        );
        check(
            Cause::InvalidResponse,
            Phase::ReadHead,
            502,
            "http_protocol_error",
            None,
        );
        check(
            Cause::ResponseTooLarge,
            Phase::ReadHead,
            502,
            "http_response_header_section_size",
            None,
        );
        check(
            Cause::UpgradeFailed,
            Phase::Upgrade,
            502,
            "http_upgrade_failed",
            None,
        );
        check(
            Cause::NoHealthyUpstream,
            Phase::Select,
            503,
            "destination_unavailable",
            Some(5),
        );
        check(
            Cause::Overloaded,
            Phase::Queue,
            503,
            "connection_limit_reached",
            Some(2),
        );
        check(
            Cause::LocalExhausted,
            Phase::Connect,
            503,
            "proxy_internal_error",
            None,
        );
        check(
            Cause::NoRoute,
            Phase::Select,
            404,
            "destination_not_found",
            None,
        );
        check(
            Cause::Denied,
            Phase::Client,
            403,
            "http_request_denied",
            None,
        );
        check(
            Cause::RateLimited,
            Phase::Client,
            429,
            "http_request_denied",
            Some(1),
        );
        check(
            Cause::ClientInvalid,
            Phase::Client,
            400,
            "http_request_error",
            None,
        );
        check(
            Cause::Internal,
            Phase::Select,
            500,
            "proxy_internal_error",
            None,
        );
        assert_eq!(
            Failure::client(ClientFault::HeadersTooLarge, "x")
                .answer()
                .status,
            431
        );
        assert_eq!(
            Failure::client(ClientFault::BodyTooLarge, "x")
                .answer()
                .status,
            413
        );
        assert_eq!(Failure::client(ClientFault::Slow, "x").answer().status, 408);
        assert!(
            !Failure::new(Cause::ClientAborted, Phase::Client)
                .answer()
                .sent_to_client
        );
    }

    #[test]
    fn every_cause_has_words_and_checks() {
        for c in Cause::ALL {
            assert!(c.summary().ends_with('.'), "{c}");
            assert!(!c.visitor_advice().is_empty(), "{c}");
            assert!(!c.operator_checks().is_empty(), "{c}");
        }
    }

    #[test]
    fn proxy_status_is_parseable_and_escaped() {
        let mut f = Failure::new(Cause::Refused, Phase::Connect).with_endpoint("127.0.0.1:3001");
        f.upstream = Some("app".into());
        let v = f.proxy_status("cleargate", 2);
        assert_eq!(
            v,
            "cleargate; error=connection_refused; next-hop=\"127.0.0.1:3001\"; \
             details=\"cause=refused phase=connect attempts=2 reused=false sent=0 received=0 upstream=app\""
        );
        assert_eq!(parse_details(&v), Some((Cause::Refused, Phase::Connect)));
        f.earlier = vec!["127.0.0.1:3002/reset@read_head".into()];
        let v = f.proxy_status("cleargate", 2);
        assert!(
            v.ends_with(" upstream=app earlier=127.0.0.1:3002/reset@read_head\""),
            "{v}"
        );
        assert_eq!(parse_details(&v), Some((Cause::Refused, Phase::Connect)));
        let odd = Failure::new(Cause::Dns, Phase::Resolve).with_endpoint("we\"ird\\name\n");
        assert!(odd
            .proxy_status("1 bad name", 1)
            .starts_with("gw-1badname; error=dns_error; next-hop=\"we\\\"ird\\\\name\""));
    }

    #[test]
    fn redacted_failures_name_the_upstream_only() {
        let mut f = Failure::new(Cause::Refused, Phase::Connect).with_endpoint("10.0.0.7:3001");
        f.upstream = Some("app".into());
        f.detail = Some("connection refused (os error 111)".into());
        f.earlier = vec!["10.0.0.8:3001/reset@read_head".into()];
        let r = f.redacted();
        assert_eq!(r.endpoint.as_deref(), Some("app"));
        assert_eq!(r.detail, None);
        assert_eq!(r.earlier, vec!["app/reset@read_head".to_string()]);
        let ps = r.proxy_status("cleargate", 2);
        assert!(!ps.contains("10.0.0"), "{ps}");
        assert!(ps.contains("next-hop=\"app\""), "{ps}");
        assert_eq!(parse_details(&ps), Some((Cause::Refused, Phase::Connect)));
        let client = Failure::client(ClientFault::NotImplemented, "gzip");
        assert_eq!(client.answer().status, 501);
    }
}
