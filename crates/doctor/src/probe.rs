//! Steps 3 to 5 against one destination: TCP to each address, TLS, one HTTP request and a
//! second one on the same connection. Each step is timed and its failure classified by
//! `crates/net`, exactly as the gateway's would be; nothing here looks at a raw error.
//!
//! The same probe serves the URL itself, `--origin` (the URL's request sent to another
//! address) and `--upstream` (the application behind the gateway), and the repeats.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, Failure, Phase};
use http::Request;
use http_body_util::BodyExt;
use net::tls::{TlsFacts, TlsOptions};
use net::{Conn, ConnectOptions, Deadlines, RequestBody};
use serde::Serialize;

use crate::Budget;

/// How much of a body is kept for recognising error pages; the rest is only counted.
const BODY_KEEP: usize = 64 * 1024;

/// The largest response head the doctor reads. Far above every gateway's usual limit (nginx 4 to
/// 8 KiB, HAProxy 16 KiB, Envoy 60 KiB, cleargate 64 KiB), so that a head one of them refuses is
/// measured here instead of failing the doctor's own request.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// The most header lines the doctor reads, for the same reason.
pub const MAX_HEAD_LINES: usize = 1000;

/// The connection options of every doctor request.
pub(crate) fn connect_options(timeout: Duration) -> ConnectOptions {
    ConnectOptions {
        connect_timeout: timeout,
        max_response_header_bytes: MAX_HEAD_BYTES,
        max_response_headers: MAX_HEAD_LINES,
        h2: false,
        tls: None,
    }
}

/// Where to send a request and how.
#[derive(Clone, Debug)]
pub struct Destination {
    pub tls: bool,
    /// The name for SNI and certificate checks.
    pub server_name: String,
    /// The `Host` header.
    pub host_header: String,
    pub path: String,
    pub addrs: Vec<SocketAddr>,
}

/// A failure, as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(serialize_with = "crate::display")]
    pub cause: Cause,
    #[serde(serialize_with = "crate::display")]
    pub phase: Phase,
    pub detail: Option<String>,
    /// Request bytes written and response bytes read in the failing exchange.
    pub sent: u64,
    pub received: u64,
    pub reused: bool,
}

impl From<&Failure> for Problem {
    fn from(f: &Failure) -> Problem {
        Problem {
            cause: f.cause,
            phase: f.phase,
            detail: f.detail.clone(),
            sent: f.request_bytes,
            received: f.response_bytes,
            reused: f.reused,
        }
    }
}

/// One TCP connect.
#[derive(Clone, Debug, Serialize)]
pub struct TcpAttempt {
    pub addr: SocketAddr,
    pub family: &'static str,
    pub ms: f64,
    pub problem: Option<Problem>,
}

/// The TLS step.
#[derive(Clone, Debug, Serialize)]
pub struct TlsStep {
    pub server_name: String,
    pub ms: f64,
    pub version: Option<String>,
    pub alpn: Option<String>,
    pub cipher: Option<String>,
    pub chain: Vec<Cert>,
    /// Whether the chain is trusted and names the host.
    pub verified: bool,
    pub cert_problem: Option<String>,
    pub cert_problem_detail: Option<String>,
    /// When the handshake failed: the status the port answered in plain HTTP, if it did.
    pub plaintext_status: Option<u16>,
    pub problem: Option<Problem>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cert {
    pub subject: String,
    pub issuer: String,
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub days_left: i64,
}

/// One HTTP exchange.
#[derive(Clone, Debug, Serialize)]
pub struct Exchange {
    /// The request line and the headers sent.
    pub request: String,
    pub reused: bool,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub version: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The size of the response head as it came on the wire (status line, header lines, the
    /// blank line), give or take the spaces around each colon.
    pub head_bytes: u64,
    pub body_bytes: u64,
    pub body_complete: bool,
    /// Milliseconds from the request to the response head.
    pub first_byte_ms: Option<f64>,
    pub total_ms: f64,
    pub problem: Option<Problem>,
    #[serde(skip)]
    pub body_start: Vec<u8>,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body_start).into_owned()
    }
}

/// Timings of the first request, for the waterfall.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timing {
    pub dns_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    pub tls_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    pub body_ms: Option<f64>,
    pub total_ms: f64,
}

/// Everything one probe of a destination saw.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub tcp: Vec<TcpAttempt>,
    pub tls: Option<TlsStep>,
    pub http: Option<Exchange>,
    /// The second request on the same connection.
    pub keepalive: Option<Exchange>,
    /// Why the keep-alive request was not made.
    pub keepalive_note: Option<String>,
    pub timing: Timing,
    /// The first failure on the way, if any.
    pub problem: Option<Problem>,
    /// The address used after the connects.
    pub used: Option<SocketAddr>,
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// Probes `dest`: every address, then TLS and HTTP over the first that connects; with
/// `keepalive`, a second request on the same connection.
pub async fn probe(
    dest: &Destination,
    tls: &TlsOptions,
    budget: &Budget,
    keepalive: bool,
) -> Probe {
    let started = Instant::now();
    let mut out = Probe {
        tcp: Vec::new(),
        tls: None,
        http: None,
        keepalive: None,
        keepalive_note: None,
        timing: Timing::default(),
        problem: None,
        used: None,
    };
    let mut stream = None;
    for addr in &dest.addrs {
        let t = Instant::now();
        let r = net::probe::tcp_connect(*addr, budget.step()).await;
        let attempt = TcpAttempt {
            addr: *addr,
            family: if addr.is_ipv4() { "ipv4" } else { "ipv6" },
            ms: ms(t.elapsed()),
            problem: r.as_ref().err().map(Problem::from),
        };
        if let Ok(s) = r {
            if stream.is_none() {
                out.timing.connect_ms = Some(attempt.ms);
                out.used = Some(*addr);
                stream = Some(s);
            }
        }
        out.tcp.push(attempt);
    }
    let Some(stream) = stream else {
        out.problem = out
            .tcp
            .iter()
            .filter_map(|a| a.problem.clone())
            // A refusal or an unreachable network says more than a timeout on another address.
            .min_by_key(|p| p.cause == Cause::Timeout);
        out.timing.total_ms = ms(started.elapsed());
        return out;
    };
    let addr = out.used.expect("set with the stream");
    let opts = connect_options(budget.step());
    let conn = if dest.tls {
        let t = Instant::now();
        let tls_opts = TlsOptions {
            timeout: budget.step(),
            ..tls.clone()
        };
        let result = net::tls::handshake(stream, &dest.server_name, &tls_opts).await;
        let elapsed = ms(t.elapsed());
        let (stream, facts, problem) = match result {
            Ok((s, f)) => (Some(s), f, None),
            Err((failure, f)) => (None, f, Some(Problem::from(&failure))),
        };
        out.timing.tls_ms = Some(elapsed);
        let mut problem = problem;
        let mut plaintext = None;
        if problem.as_ref().is_some_and(|p| {
            matches!(p.cause, Cause::Timeout | Cause::Tls) && facts.chain.is_empty()
        }) {
            // A server waiting for a request head, or answering our hello with an HTTP error,
            // is a plain HTTP server: ask it in plain HTTP to be sure.
            let plain = Destination {
                tls: false,
                addrs: vec![addr],
                ..dest.clone()
            };
            let seen = Box::pin(probe(&plain, tls, budget, false)).await;
            if let Some(status) = seen.http.as_ref().and_then(|h| h.status) {
                plaintext = Some(status);
                problem = Some(Problem::from(
                    &Failure::new(Cause::Tls, Phase::TlsHandshake).with_detail(format!(
                        "the server speaks plain HTTP on this port, not TLS (it answered {status} in plain HTTP): \
                         use http://, or enable TLS on the server"
                    )),
                ));
            }
        }
        let mut step = tls_step(&dest.server_name, elapsed, facts, problem.clone());
        step.plaintext_status = plaintext;
        out.tls = Some(step);
        let Some(stream) = stream else {
            out.problem = problem;
            out.timing.total_ms = ms(started.elapsed());
            return out;
        };
        net::probe::handshake_http1(stream, addr, &opts).await
    } else {
        net::probe::handshake_http1(stream, addr, &opts).await
    };
    let conn = match conn {
        Ok(c) => c,
        Err(f) => {
            out.problem = Some(Problem::from(&f));
            out.timing.total_ms = ms(started.elapsed());
            return out;
        }
    };
    let (first, conn) = exchange(conn, dest, budget).await;
    out.timing.first_byte_ms = first.first_byte_ms;
    out.timing.body_ms = first
        .first_byte_ms
        .map(|f| ((first.total_ms - f) * 100.0).round() / 100.0);
    out.problem = first.problem.clone();
    let closes = first
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    out.http = Some(first);
    out.timing.total_ms = ms(started.elapsed());
    if !keepalive {
        return out;
    }
    match conn {
        None => out.keepalive_note = Some("the connection could not be used again".into()),
        Some(_) if closes => {
            out.keepalive_note =
                Some("the server asked to close the connection (Connection: close)".into())
        }
        Some(mut conn) => {
            if budget.expired() {
                out.keepalive_note = Some("skipped: the time budget is spent".into());
            } else if !conn.ready(Duration::from_millis(200)).await {
                out.keepalive_note = Some(
                    "the server closed the connection after the first response without saying so"
                        .into(),
                );
            } else {
                let (second, _) = exchange(conn, dest, budget).await;
                out.keepalive = Some(second);
            }
        }
    }
    out
}

fn tls_step(name: &str, ms: f64, facts: TlsFacts, problem: Option<Problem>) -> TlsStep {
    TlsStep {
        server_name: name.to_string(),
        ms,
        version: facts.version,
        alpn: facts.alpn,
        cipher: facts.cipher,
        chain: facts
            .chain
            .into_iter()
            .map(|c| Cert {
                subject: c.subject,
                issuer: c.issuer,
                names: c.names,
                not_before: c.not_before,
                not_after: c.not_after,
                days_left: c.days_left,
            })
            .collect(),
        verified: problem.is_none(),
        cert_problem: facts.problem.as_ref().map(|p| p.kind.to_string()),
        cert_problem_detail: facts.problem.map(|p| p.detail),
        plaintext_status: None,
        problem,
    }
}

/// Sends one GET and reads the whole response; hands the connection back when it may be reused.
pub async fn exchange(conn: Conn, dest: &Destination, budget: &Budget) -> (Exchange, Option<Conn>) {
    let started = Instant::now();
    let reused = conn.uses > 0;
    let ua = concat!("cleargate-doctor/", env!("CARGO_PKG_VERSION"));
    let request_text = format!(
        "GET {} HTTP/1.1\nHost: {}\nUser-Agent: {ua}\nAccept: */*",
        dest.path, dest.host_header
    );
    let mut ex = Exchange {
        request: request_text,
        reused,
        status: None,
        reason: None,
        version: None,
        headers: Vec::new(),
        head_bytes: 0,
        body_bytes: 0,
        body_complete: false,
        first_byte_ms: None,
        total_ms: 0.0,
        problem: None,
        body_start: Vec::new(),
    };
    let req = Request::get(dest.path.as_str())
        .header(http::header::HOST, dest.host_header.as_str())
        .header(http::header::USER_AGENT, ua)
        .header(http::header::ACCEPT, "*/*")
        .body(RequestBody::empty());
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            ex.problem = Some(Problem::from(
                &Failure::new(Cause::ClientInvalid, Phase::Client).with_detail(e.to_string()),
            ));
            return (ex, None);
        }
    };
    let step = budget.step();
    let deadlines = Deadlines {
        connect: step,
        send: step,
        response: step,
        body_idle: step,
    };
    let (head, body) = req.into_parts();
    let (resp, conn, exchange) = match conn.send(&head, body, &deadlines).await {
        Ok(ok) => ok,
        Err((f, _)) => {
            ex.problem = Some(Problem::from(&f));
            ex.total_ms = ms(started.elapsed());
            return (ex, None);
        }
    };
    ex.first_byte_ms = Some(ms(started.elapsed()));
    ex.status = Some(resp.status().as_u16());
    ex.reason = resp.status().canonical_reason().map(str::to_string);
    ex.version = Some(format!("{:?}", resp.version()));
    ex.headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // "HTTP/1.1 200 Reason\r\n", "Name: value\r\n" per line, "\r\n".
    let status_line = 15 + ex.reason.as_deref().map_or(0, str::len);
    ex.head_bytes = (status_line
        + 2
        + ex.headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()) as u64;
    let mut body = resp.into_body();
    loop {
        let wait = budget.step();
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                let mut f = Failure::new(Cause::Timeout, Phase::ReadBody)
                    .with_detail(format!("the body stopped for {wait:?}"));
                exchange.fill(&mut f);
                ex.problem = Some(Problem::from(&f));
                break;
            }
            Ok(None) => {
                ex.body_complete = true;
                break;
            }
            Ok(Some(Err(e))) => {
                ex.problem = Some(Problem::from(&net::body_failure(e, &exchange)));
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            keep(&mut ex.body_start, &data);
            ex.body_bytes += data.len() as u64;
        }
    }
    ex.total_ms = ms(started.elapsed());
    let conn = if ex.body_complete {
        let mut conn = conn;
        conn.rejoin(&mut body);
        Some(conn)
    } else {
        None
    };
    (ex, conn)
}

fn keep(buf: &mut Vec<u8>, data: &Bytes) {
    let room = BODY_KEEP.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}
