//! `cleargate doctor URL`: the 502 troubleshooting checklist, automated.
//!
//! [`run`] walks the hops to a URL and records evidence at each step, using the gateway's own
//! connector (`crates/net`) so a failure is classified exactly as the gateway would classify it:
//!
//! 1. URL sanity (`url.rs`), 2. DNS (`net::dns`), 3. TCP to each address, 4. TLS, 5. HTTP with
//!    a second request on the same connection (`probe.rs`), 6. who answered (`who.rs`),
//!    7. repeats, 8. the same request to `--origin` and to `--upstream`, and the error log
//!    (`errorlog.rs`).
//!
//! Then `diagnose.rs` ranks the likely causes from that evidence, and `render.rs` writes the
//! report for people or as JSON. Nothing here looks at a raw I/O, TLS or DNS error: `net` hands
//! over a classified failure. Every network step has a deadline, and the whole run a budget.

pub mod diagnose;
pub mod errorlog;
pub mod probe;
pub mod render;
pub mod url;
pub mod watch;
pub mod who;

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use cause::{Cause, Phase};
use net::dns::DnsReport;
use net::tls::{CertificateDer, TlsOptions};
use serde::Serialize;

use crate::diagnose::{Candidate, Verdict};
use crate::errorlog::ErrorLogStep;
use crate::probe::{ms, Destination, Probe, Problem};
use crate::url::Target;
use crate::who::Who;

/// Reads a PEM bundle of CA certificates for [`Options::extra_roots`].
pub use net::tls::load_pem_certs;

/// What to check and how.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    /// Name servers to ask instead of the system's; the first one is used for the probe, all
    /// are compared.
    pub resolvers: Vec<SocketAddr>,
    /// Send the URL's request to this address instead (`IP` or `IP:PORT`), like curl --resolve.
    pub origin: Option<String>,
    /// Probe the application behind the gateway directly (`HOST:PORT` or a URL).
    pub upstream: Option<String>,
    pub error_log: Option<PathBuf>,
    /// Extra requests for the intermittency check; `None` is the default (3, fewer after a timeout).
    pub repeat: Option<u32>,
    /// Deadline of each network step.
    pub timeout: Duration,
    /// Bound of the whole run.
    pub max_time: Duration,
    /// Certificates to trust besides the public roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Options {
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            resolvers: Vec::new(),
            origin: None,
            upstream: None,
            error_log: None,
            repeat: None,
            timeout: Duration::from_secs(5),
            max_time: Duration::from_secs(60),
            extra_roots: Vec::new(),
        }
    }
}

/// The default number of repeats.
pub const DEFAULT_REPEAT: u32 = 3;

/// How long after the last request through the gateway its log is read.
const LOG_SETTLE: Duration = Duration::from_millis(250);

/// A run's time: each step gets at most `step`, and nothing starts after `deadline`.
#[derive(Clone, Debug)]
pub struct Budget {
    deadline: Instant,
    step: Duration,
}

impl Budget {
    pub fn new(step: Duration, total: Duration) -> Budget {
        Budget {
            deadline: Instant::now() + total,
            step,
        }
    }

    /// The deadline for the next step.
    pub fn step(&self) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.step.min(left).max(Duration::from_millis(1))
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// The DNS step as reported.
#[derive(Clone, Debug, Serialize)]
pub struct DnsStep {
    pub name: String,
    pub resolver: String,
    pub system: bool,
    pub a: String,
    pub aaaa: String,
    pub addrs: Vec<DnsAddr>,
    pub cnames: Vec<DnsAlias>,
    pub ms: f64,
    pub problem: Option<Problem>,
    /// The other resolvers' answers, when several were given.
    pub compared: Vec<DnsComparison>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DnsAddr {
    pub ip: IpAddr,
    pub ttl: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct DnsAlias {
    pub name: String,
    pub target: String,
    pub ttl: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct DnsComparison {
    pub resolver: String,
    pub a: String,
    pub aaaa: String,
    pub addrs: Vec<IpAddr>,
    /// True when it gave the same set of addresses as the first resolver.
    pub agrees: bool,
}

fn dns_step(name: &str, r: &DnsReport) -> DnsStep {
    DnsStep {
        name: name.to_string(),
        resolver: r.resolver.clone(),
        system: r.system,
        a: r.a.name(),
        aaaa: r.aaaa.name(),
        addrs: r
            .addrs
            .iter()
            .map(|a| DnsAddr {
                ip: a.ip,
                ttl: a.ttl,
            })
            .collect(),
        cnames: r
            .aliases
            .iter()
            .map(|a| DnsAlias {
                name: a.name.clone(),
                target: a.target.clone(),
                ttl: a.ttl,
            })
            .collect(),
        ms: ms(r.elapsed),
        problem: r.failure(name).as_ref().map(Problem::from),
        compared: Vec::new(),
    }
}

/// One request of the intermittency check.
#[derive(Clone, Debug, Serialize)]
pub struct Try {
    pub reused: bool,
    pub status: Option<u16>,
    pub problem: Option<Problem>,
    pub ms: f64,
    #[serde(skip)]
    pub who: Option<Who>,
}

impl Try {
    pub fn failed(&self) -> bool {
        self.problem.is_some() || self.status.is_some_and(|s| s >= 500)
    }
}

/// The intermittency check: requests on new connections and on one reused connection.
#[derive(Clone, Debug, Serialize)]
pub struct Repeat {
    pub fresh: Vec<Try>,
    pub reused: Vec<Try>,
    pub fresh_failed: usize,
    pub reused_failed: usize,
    pub min_ms: Option<f64>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub note: Option<String>,
}

/// A probe of another address than the URL's (`--origin`, `--upstream`).
#[derive(Clone, Debug, Serialize)]
pub struct SideProbe {
    /// What was given.
    pub given: String,
    /// What was requested there.
    pub url: String,
    pub dns: Option<DnsStep>,
    pub probe: Option<Probe>,
    pub who: Option<Who>,
    pub problem: Option<Problem>,
    /// More requests on new connections, to measure how often it fails (`--upstream` only).
    pub repeat: Option<SideRepeat>,
    /// A TLS handshake tried on the same port, when the URL failed and the port answered plain
    /// HTTP: does it speak TLS at all? (`--upstream` only.)
    pub tls_check: Option<TlsCheck>,
}

/// Repeated direct requests to the upstream.
#[derive(Clone, Debug, Serialize)]
pub struct SideRepeat {
    pub tries: usize,
    pub failed: usize,
    /// `cause@phase` (or `status 503`) of each failure, in order.
    pub failures: Vec<String>,
}

/// The outcome of a TLS handshake tried against a port that answered plain HTTP.
#[derive(Clone, Debug, Serialize)]
pub struct TlsCheck {
    /// The handshake completed.
    pub speaks_tls: bool,
    /// What happened, in words.
    pub detail: String,
}

impl SideProbe {
    /// The first problem seen, or an error status.
    pub fn failed(&self) -> bool {
        self.problem.is_some()
            || self
                .probe
                .as_ref()
                .and_then(|p| p.http.as_ref())
                .and_then(|h| h.status)
                .is_some_and(|s| s >= 500)
    }

    pub fn status(&self) -> Option<u16> {
        self.probe.as_ref()?.http.as_ref()?.status
    }
}

/// One hop of the path, for the diagram.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    pub name: String,
    /// `you`, `dns`, `cdn`, `gateway`, `upstream` or `server`.
    pub kind: &'static str,
    pub failed: bool,
}

/// Everything the doctor saw and concluded. `verdict` comes first and is the stable part.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub url: Target,
    pub dns: Option<DnsStep>,
    pub probe: Probe,
    pub who: Option<Who>,
    pub repeat: Option<Repeat>,
    pub origin: Option<SideProbe>,
    pub upstream: Option<SideProbe>,
    pub error_log: Option<ErrorLogStep>,
    pub hops: Vec<Hop>,
    pub diagnosis: Vec<Candidate>,
    /// Observations that are worth knowing and are not problems.
    pub notes: Vec<String>,
    pub elapsed_ms: f64,
}

impl Report {
    /// 0 healthy, 1 a problem found.
    pub fn exit_code(&self) -> u8 {
        if self.verdict.healthy {
            0
        } else {
            1
        }
    }
}

/// An input the doctor cannot check (exit code 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError(pub String);

impl Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Runs the checklist against `opts.url`. `progress` is told what slow step starts.
pub async fn run(opts: &Options, progress: &(dyn Fn(&str) + Sync)) -> Result<Report, InputError> {
    let started = Instant::now();
    let target =
        url::parse(&opts.url).map_err(|e| InputError(format!("{}: {e}", opts.url.trim())))?;
    let origin_addr = match &opts.origin {
        Some(o) => Some(parse_origin(o, target.port)?),
        None => None,
    };
    let upstream_target = match &opts.upstream {
        Some(u) => Some(parse_upstream(u, &target)?),
        None => None,
    };
    let budget = Budget::new(opts.timeout, opts.max_time);
    // Lines the gateway writes from now on are about this run.
    let log_mark = opts.error_log.as_deref().and_then(errorlog::mark);
    let tls = TlsOptions {
        extra_roots: opts.extra_roots.clone(),
        timeout: opts.timeout,
    };
    let mut notes: Vec<String> = Vec::new();

    // DNS.
    let (dns, addrs) = match target.ip() {
        Some(ip) => (None, vec![SocketAddr::new(ip, target.port)]),
        None => {
            progress(&format!("resolving {}", target.host));
            let (step, addrs) =
                resolve_step(&target.host, target.port, &opts.resolvers, &budget).await;
            (Some(step), addrs)
        }
    };

    // TCP, TLS, HTTP.
    let dest = Destination {
        tls: target.is_tls(),
        server_name: target.host.clone(),
        host_header: target.host_header(),
        path: target.path.clone(),
        addrs: addrs.clone(),
    };
    let mut probe = if addrs.is_empty() {
        empty_probe(dns.as_ref().and_then(|d| d.problem.clone()))
    } else {
        progress(&format!("connecting to {}", list(&addrs)));
        probe::probe(&dest, &tls, &budget, true).await
    };
    probe.timing.dns_ms = dns.as_ref().map(|d| d.ms);
    let who = probe
        .http
        .as_ref()
        .filter(|h| h.status.is_some())
        .map(who::identify);
    if let Some(t) = &probe.tls {
        if let Some(c) = t.chain.first() {
            if t.verified && c.days_left < 14 {
                notes.push(format!("the certificate expires in {} day(s)", c.days_left));
            }
        }
    }

    // Intermittency.
    let repeat = match probe.used {
        Some(addr) if !budget.expired() => {
            let n = match opts.repeat {
                Some(n) => n,
                None if probe
                    .problem
                    .as_ref()
                    .is_some_and(|p| p.cause == Cause::Timeout) =>
                {
                    0
                }
                None => DEFAULT_REPEAT,
            };
            if n == 0 {
                if opts.repeat.is_none() {
                    notes.push("repeats skipped: the first request timed out, so repeating would only wait again (use --repeat N)".into());
                }
                None
            } else {
                progress(&format!("repeating the request {n} times"));
                Some(repeat(&dest, addr, &tls, &budget, n).await)
            }
        }
        _ => None,
    };

    // Direct to the origin, and to the upstream.
    let origin = match origin_addr {
        Some(addr) if !budget.expired() => {
            progress(&format!("sending the same request to the origin {addr}"));
            let d = Destination {
                addrs: vec![addr],
                ..dest.clone()
            };
            let p = probe::probe(&d, &tls, &budget, false).await;
            Some(side(
                opts.origin.clone().unwrap_or_default(),
                format!("{} via {addr}", target.url),
                None,
                p,
            ))
        }
        _ => None,
    };
    // The gateway's log, once every request through it is done. Gateways write a line a moment
    // after the response (cleargate batches its lines every few milliseconds, HAProxy logs at the
    // end of the stream), so the file is read a quarter of a second after the last request.
    let error_log = match &opts.error_log {
        Some(f) => {
            progress("reading the error log");
            tokio::time::sleep(LOG_SETTLE).await;
            Some(errorlog::correlate(f, SystemTime::now(), log_mark))
        }
        None => None,
    };
    let upstream = match upstream_target {
        Some(up) if !budget.expired() => {
            progress(&format!("probing the upstream {}", up.url));
            let (dns, addrs) = match up.ip() {
                Some(ip) => (None, vec![SocketAddr::new(ip, up.port)]),
                None => {
                    let (step, addrs) =
                        resolve_step(&up.host, up.port, &opts.resolvers, &budget).await;
                    (Some(step), addrs)
                }
            };
            let d = Destination {
                tls: up.is_tls(),
                server_name: up.host.clone(),
                host_header: target.host_header(),
                path: target.path.clone(),
                addrs: addrs.clone(),
            };
            let p = if addrs.is_empty() {
                empty_probe(dns.as_ref().and_then(|d| d.problem.clone()))
            } else {
                probe::probe(&d, &tls, &budget, false).await
            };
            let mut side = side(
                opts.upstream.clone().unwrap_or_default(),
                up.url.clone(),
                dns,
                p,
            );
            let url_failed = probe.problem.is_some()
                || probe
                    .http
                    .as_ref()
                    .and_then(|h| h.status)
                    .is_some_and(|s| s >= 500);
            if let Some(addr) = side.probe.as_ref().and_then(|p| p.used) {
                let one = Destination {
                    addrs: vec![addr],
                    ..d.clone()
                };
                let n = opts.repeat.unwrap_or(DEFAULT_REPEAT);
                if n > 0 && !budget.expired() {
                    progress(&format!("asking the upstream {n} more times"));
                    side.repeat = Some(side_repeat(&one, &tls, &budget, n).await);
                }
                if url_failed && !up.is_tls() && side.status().is_some() && !budget.expired() {
                    progress("trying a TLS handshake with the upstream");
                    side.tls_check = Some(tls_check(&one, &tls, &budget).await);
                }
            }
            Some(side)
        }
        _ => None,
    };

    if budget.expired() {
        notes.push(format!(
            "the run reached its time limit ({:?}); later steps were skipped",
            opts.max_time
        ));
    }

    let mut report = Report {
        verdict: Verdict::healthy(),
        url: target,
        dns,
        probe,
        who,
        repeat,
        origin,
        upstream,
        error_log,
        hops: Vec::new(),
        diagnosis: Vec::new(),
        notes,
        elapsed_ms: 0.0,
    };
    diagnose::diagnose(&mut report);
    report.elapsed_ms = ms(started.elapsed());
    Ok(report)
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn empty_probe(problem: Option<Problem>) -> Probe {
    Probe {
        tcp: Vec::new(),
        tls: None,
        http: None,
        keepalive: None,
        keepalive_note: None,
        timing: probe::Timing::default(),
        problem,
        used: None,
    }
}

fn side(given: String, url: String, dns: Option<DnsStep>, p: Probe) -> SideProbe {
    let who = p
        .http
        .as_ref()
        .filter(|h| h.status.is_some())
        .map(who::identify);
    SideProbe {
        given,
        url,
        problem: p.problem.clone(),
        dns,
        probe: Some(p),
        who,
        repeat: None,
        tls_check: None,
    }
}

async fn resolve_step(
    host: &str,
    port: u16,
    resolvers: &[SocketAddr],
    budget: &Budget,
) -> (DnsStep, Vec<SocketAddr>) {
    let first = resolvers.first().copied();
    let report = net::dns::lookup(host, first, budget.step()).await;
    let mut step = dns_step(host, &report);
    for other in resolvers.iter().skip(1) {
        let r = net::dns::lookup(host, Some(*other), budget.step()).await;
        let mut mine: Vec<IpAddr> = report.addrs.iter().map(|a| a.ip).collect();
        let mut theirs: Vec<IpAddr> = r.addrs.iter().map(|a| a.ip).collect();
        mine.sort();
        theirs.sort();
        step.compared.push(DnsComparison {
            resolver: r.resolver.clone(),
            a: r.a.name(),
            aaaa: r.aaaa.name(),
            agrees: mine == theirs,
            addrs: theirs,
        });
    }
    let addrs = report
        .addrs
        .iter()
        .map(|a| SocketAddr::new(a.ip, port))
        .collect();
    (step, addrs)
}

/// Repeats the request `n` times on new connections, then `n` times on one reused connection.
async fn repeat(
    dest: &Destination,
    addr: SocketAddr,
    tls: &TlsOptions,
    budget: &Budget,
    n: u32,
) -> Repeat {
    let one = Destination {
        addrs: vec![addr],
        ..dest.clone()
    };
    let mut out = Repeat {
        fresh: Vec::new(),
        reused: Vec::new(),
        fresh_failed: 0,
        reused_failed: 0,
        min_ms: None,
        median_ms: None,
        max_ms: None,
        note: None,
    };
    for _ in 0..n {
        if budget.expired() {
            out.note = Some("stopped early: the time budget is spent".into());
            return finish(out);
        }
        let p = probe::probe(&one, tls, budget, false).await;
        out.fresh.push(Try {
            reused: false,
            status: p.http.as_ref().and_then(|h| h.status),
            problem: p.problem.clone(),
            ms: p.timing.total_ms,
            who: failing_who(p.http.as_ref()),
        });
    }
    let Some(conn) = reopen(&one, tls, budget).await else {
        out.note = Some("no connection could be opened for the reused requests".into());
        return finish(out);
    };
    // The first request opens the connection; the reused ones follow on it.
    let (ex, mut next) = probe::exchange(conn, &one, budget).await;
    out.fresh.push(try_of(&ex));
    for _ in 0..n {
        let Some(mut conn) = next.take() else {
            if out.reused.is_empty() {
                out.note =
                    Some("the connection could not be reused after its first response".into());
            }
            break;
        };
        if budget.expired() {
            out.note = Some("stopped early: the time budget is spent".into());
            break;
        }
        if !conn.ready(Duration::from_millis(200)).await {
            out.reused.push(Try {
                reused: true,
                status: None,
                problem: Some(Problem::from(
                    &cause::Failure::new(Cause::Closed, Phase::SendRequest).with_detail(
                        "the server closed the kept-alive connection between requests",
                    ),
                )),
                ms: 0.0,
                who: None,
            });
            break;
        }
        let (ex, back) = probe::exchange(conn, &one, budget).await;
        out.reused.push(try_of(&ex));
        next = back;
    }
    finish(out)
}

/// `n` more direct requests to the upstream, each on a new connection.
async fn side_repeat(dest: &Destination, tls: &TlsOptions, budget: &Budget, n: u32) -> SideRepeat {
    let mut out = SideRepeat {
        tries: 0,
        failed: 0,
        failures: Vec::new(),
    };
    for _ in 0..n {
        if budget.expired() {
            break;
        }
        let p = probe::probe(dest, tls, budget, false).await;
        out.tries += 1;
        let status = p.http.as_ref().and_then(|h| h.status);
        match (&p.problem, status) {
            (Some(pr), _) => {
                out.failed += 1;
                out.failures.push(format!("{}@{}", pr.cause, pr.phase));
            }
            (None, Some(s)) if s >= 500 => {
                out.failed += 1;
                out.failures.push(format!("status {s}"));
            }
            _ => {}
        }
    }
    out
}

/// One TLS handshake with a port that answered plain HTTP.
async fn tls_check(dest: &Destination, tls: &TlsOptions, budget: &Budget) -> TlsCheck {
    let d = Destination {
        tls: true,
        ..dest.clone()
    };
    let p = probe::probe(&d, tls, budget, false).await;
    let step = p.tls.as_ref();
    let handshook = step.is_some_and(|t| t.version.is_some());
    let detail = match (step, &p.problem) {
        (Some(t), _) if t.version.is_some() => format!(
            "the handshake completes ({}): the port speaks TLS too",
            t.version.as_deref().unwrap_or("TLS")
        ),
        (_, Some(pr)) => format!(
            "the handshake fails: {}",
            pr.detail
                .clone()
                .unwrap_or_else(|| format!("{}@{}", pr.cause, pr.phase))
        ),
        _ => "the handshake fails".into(),
    };
    TlsCheck {
        speaks_tls: handshook,
        detail,
    }
}

async fn reopen(dest: &Destination, tls: &TlsOptions, budget: &Budget) -> Option<net::Conn> {
    let addr = *dest.addrs.first()?;
    let stream = net::probe::tcp_connect(addr, budget.step()).await.ok()?;
    let opts = probe::connect_options(budget.step());
    if dest.tls {
        let tls = TlsOptions {
            timeout: budget.step(),
            ..tls.clone()
        };
        let (s, _) = net::tls::handshake(stream, &dest.server_name, &tls)
            .await
            .ok()?;
        net::probe::handshake_http1(s, addr, &opts).await.ok()
    } else {
        net::probe::handshake_http1(stream, addr, &opts).await.ok()
    }
}

fn failing_who(http: Option<&probe::Exchange>) -> Option<Who> {
    http.filter(|h| h.status.is_some_and(|s| s >= 500))
        .map(who::identify)
}

fn try_of(ex: &probe::Exchange) -> Try {
    Try {
        reused: ex.reused,
        status: ex.status,
        problem: ex.problem.clone(),
        ms: ex.total_ms,
        who: failing_who(Some(ex)),
    }
}

fn finish(mut out: Repeat) -> Repeat {
    out.fresh_failed = out.fresh.iter().filter(|t| t.failed()).count();
    out.reused_failed = out.reused.iter().filter(|t| t.failed()).count();
    let mut times: Vec<f64> = out
        .fresh
        .iter()
        .chain(&out.reused)
        .filter(|t| !t.failed())
        .map(|t| t.ms)
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    out.min_ms = times.first().copied();
    out.max_ms = times.last().copied();
    out.median_ms = times.get(times.len() / 2).copied();
    out
}

fn parse_origin(given: &str, default_port: u16) -> Result<SocketAddr, InputError> {
    if let Ok(a) = given.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = given.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(InputError(format!(
        "--origin `{given}`: give an IP address, with a port if it differs from the URL's (203.0.113.7 or 203.0.113.7:8443)"
    )))
}

fn parse_upstream(given: &str, target: &Target) -> Result<Target, InputError> {
    let text = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let mut t = url::parse(&text).map_err(|e| InputError(format!("--upstream `{given}`: {e}")))?;
    if !given.contains("://") && !given.contains(':') {
        return Err(InputError(format!(
            "--upstream `{given}`: give HOST:PORT (the address the gateway forwards to)"
        )));
    }
    t.path = target.path.clone();
    t.url = format!("{}://{}:{}{}", t.scheme, t.host, t.port, t.path);
    Ok(t)
}

/// Serialises through `Display` (for the cause vocabulary).
pub(crate) fn display<T: Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) fn display_opt<T: Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub(crate) fn display_list<T: Display, S: serde::Serializer>(
    v: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for item in v {
        seq.serialize_element(&item.to_string())?;
    }
    seq.end()
}

/// The phase in words, as seen from the doctor's side of a connection (the gateway's words
/// speak of "the upstream", which is not always the hop the doctor talks to).
pub fn phase_words(phase: Phase) -> &'static str {
    match phase {
        Phase::Resolve => "while resolving the name",
        Phase::Connect => "while connecting",
        Phase::TlsHandshake => "during the TLS handshake",
        Phase::SendRequest => "while sending the request",
        Phase::ReadHead => "while waiting for the response headers",
        Phase::ReadBody => "while reading the response body",
        other => other.words(),
    }
}

/// A cause × phase in words: "refused while connecting".
pub fn cause_words(cause: Cause, phase: Option<Phase>) -> String {
    match phase {
        Some(p) => format!("{cause} ({p})"),
        None => cause.to_string(),
    }
}
