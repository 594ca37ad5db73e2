//! The request lifecycle, a short closed sequence of phases:
//!
//! ```text
//! client request ─► limits ─► route ─► select endpoint ─► checkout (connect) ─► send ─► response head
//!      │              │         │              │                  │               │          │
//!      └──────────────┴─────────┴──────────────┴──────────────────┴───────────────┘          ▼
//!                          failure ─► one mapping ─► error page + WARN line         stream the body
//!                                                                                  (failure ─► abort)
//! ```
//!
//! Each step either moves on or produces a [`Failure`]; the error surface is built in one place,
//! [`Gateway::fail`]. Retries and health come later and slot in around "select endpoint".

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cause::{Cause, ClientFault, Failure, Phase};
use http::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::admit::{admit, Admitted};
use crate::body::{first_frame, LimitedBody, PoolLease, ProxyBody, RequestLog};
use crate::framing::response_framing;
use crate::headers::{
    append_via, forward_request_headers, new_request_id, sane_request_id, strip_hop_by_hop,
    Forwarding, X_REQUEST_ID,
};
use crate::log::{AccessRecord, AttemptRecord};
use crate::page::{self, PageContext};
use crate::server::ConnState;
use crate::Gateway;
use bytes::Bytes;
use std::time::Duration;
use upstream::Outcome;

fn proto_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

impl Gateway {
    /// This hop in `Via` for a request that came in over `v`.
    fn via_for(&self, v: Version) -> &HeaderValue {
        match v {
            Version::HTTP_2 => &self.via_request[2],
            Version::HTTP_10 => &self.via_request[0],
            _ => &self.via_request[1],
        }
    }
}

/// Size of the request head as the client sent it (request line and header lines).
fn head_size(req: &Request<Incoming>) -> usize {
    // Measured without formatting the URI: this runs on every request.
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| {
            a.as_str().len() + uri.scheme_str().map_or(0, |s| s.len() + 3)
        });
    let line = req.method().as_str().len() + target + 12;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

impl Gateway {
    /// Handles one client request from start to response head. `conn` is the client
    /// connection's state and the request's number on it (absent in unit tests).
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        conn: Option<(Arc<ConnState>, u64)>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(sane_request_id)
            .unwrap_or_else(new_request_id);
        let length_and_coding = conn
            .as_ref()
            .is_some_and(|(state, n)| state.had_length_and_coding(*n));
        let oversized = conn
            .as_ref()
            .and_then(|(state, n)| state.oversized_head(*n));
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let limit = self.config.limits.max_request_header_bytes;
        let admitted = if let Some(size) = oversized {
            Err(Failure::client(
                ClientFault::HeadersTooLarge,
                format!("request header section is {size} bytes, the limit is {limit}"),
            ))
        } else if req.method() == Method::CONNECT {
            // Never an open proxy: CONNECT tunnels go nowhere.
            Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail("CONNECT tunnels are not offered by this gateway"))
        } else {
            admit(&req, length_and_coding)
        };
        let mut log = RequestLog {
            record: AccessRecord {
                client: Some(client),
                method: req.method().clone(),
                host: match &admitted {
                    Ok(a) => a.host.clone(),
                    Err(_) => String::new(),
                },
                path: path_and_query.clone(),
                proto: proto_name(req.version()),
                request_id: request_id.clone(),
                ..AccessRecord::default()
            },
            started,
            logger: self.logger.clone(),
            bytes_in: None,
            responded: false,
            attempts: 0,
            inflight: conn.map(|(state, _)| state),
            armed: true,
        };
        let format = page::negotiate(req.headers());
        let method = req.method().clone();
        let admitted = match admitted {
            Ok(a) => a,
            Err(failure) => return self.fail(failure, &method, format, log),
        };
        match self
            .forward(
                req,
                client,
                &admitted,
                &path_and_query,
                &request_id,
                &mut log,
            )
            .await
        {
            Ok(resp) => resp,
            Err(failure) => self.fail(failure, &method, format, log),
        }
    }

    /// Builds the error response for `failure`, logs it, and attaches the request log.
    fn fail(
        &self,
        mut failure: Failure,
        method: &Method,
        format: page::Format,
        mut log: RequestLog,
    ) -> Response<ProxyBody> {
        if !failure.answer().sent_to_client {
            // A status that is only ever logged (499) must not reach the wire; a request that
            // still gets an answer broke off on the client's side, which is a 400.
            failure = Failure::client(
                ClientFault::Malformed,
                failure
                    .detail
                    .unwrap_or_else(|| "the request broke off".into()),
            );
        }
        let status = failure.answer().status;
        // Every attempt appears in Proxy-Status: the earlier ones in `details`.
        let tried = &log.record.attempts;
        failure.earlier = tried
            .iter()
            .take(tried.len().saturating_sub(1))
            .map(|a| match (a.cause, a.phase) {
                (Some(c), Some(p)) => format!("{}/{c}@{p}", a.endpoint),
                _ => format!("{}/{}", a.endpoint, a.status.unwrap_or(0)),
            })
            .collect();
        let attempts = log.attempts;
        self.logger
            .gateway_error(&log.record.request_id, &failure, attempts, None);
        let template = self
            .config
            .error_pages
            .get(&status)
            .map(|p| p.template.as_str());
        let cx = PageContext {
            server_name: &self.config.server_name,
            request_id: &log.record.request_id,
            method,
            attempts,
            format,
            template,
        };
        // The log above has everything; a client outside `trusted_clients` sees names only.
        // Judged here, on failures only, so a request that succeeds never pays for it.
        let trusted = log
            .record
            .client
            .is_some_and(|c| self.config.is_trusted(c.ip()));
        let mut resp = if trusted {
            page::error_response(&failure, &cx)
        } else {
            page::error_response(&failure.redacted(), &cx)
        };
        append_via(resp.headers_mut(), &self.via);
        log.record.status = status;
        log.record.cause = Some(failure.cause);
        log.record.phase = Some(failure.phase);
        log.record.gateway_error = true;
        log.record.upstream = failure.upstream.clone();
        log.record.endpoint = failure.endpoint.clone();
        resp.map(|b| b.with_log(log))
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        admitted: &Admitted,
        path_and_query: &str,
        request_id: &str,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, Failure> {
        use http_body::Body as _;
        let limits = &self.config.limits;
        // Limits first: an oversized request is refused before anything else is spent on it.
        // hyper enforces the HTTP/1 head limit exactly while parsing; HTTP/2 heads are measured
        // here.
        if req.version() == Version::HTTP_2 {
            let size = head_size(&req);
            if size > limits.max_request_header_bytes {
                return Err(Failure::client(
                    ClientFault::HeadersTooLarge,
                    format!(
                        "request header section is {size} bytes, the limit is {}",
                        limits.max_request_header_bytes
                    ),
                ));
            }
        }
        // The length hyper framed the body by; it cannot disagree with what is read.
        if let Some(n) = req.body().size_hint().exact() {
            if n > limits.max_request_body_bytes {
                return Err(Failure::client(
                    ClientFault::BodyTooLarge,
                    format!(
                        "request body is {n} bytes, the limit is {}",
                        limits.max_request_body_bytes
                    ),
                ));
            }
        }

        // Absolute-form requests route like any other: the gateway never dials the target's
        // host, it only matches it against the routes.
        let host = admitted.host.as_str();
        let path = req.uri().path().to_string();
        let Some(route) = self.router.find(host, &path) else {
            return Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail(format!("no route for host `{host}` and path `{path}`")));
        };
        let upstream = self.upstreams[route.upstream].clone();
        let retry = self.retries[route.index].clone();
        log.record.upstream = Some(upstream.name.clone());
        upstream.budget.record_request();
        let started = Instant::now();
        let deadline = started + retry.deadline;

        // The upstream request: origin-form, forwarding headers added.
        let version = req.version();
        let method = req.method().clone();
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        ) || req.headers().contains_key("idempotency-key");
        // A request that timed out may have been processed; only these are sent again then.
        let repeatable = matches!(
            method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) || req.headers().contains_key("idempotency-key");
        let key = self.hash_key(&upstream, &req, client);
        let (mut parts, body) = req.into_parts();
        let host_header = admitted.host_value.clone();
        let request_id_value =
            HeaderValue::from_str(request_id).unwrap_or(HeaderValue::from_static("-"));
        forward_request_headers(
            &mut parts.headers,
            &Forwarding {
                client_ip: client.ip(),
                proto: "http",
                host: host_header.as_ref(),
                via: self.via_for(version),
                request_id: &request_id_value,
            },
        );
        let h2 = upstream.config.protocol == config::Protocol::H2c;
        parts.uri = if h2 {
            // HTTP/2 carries the authority in the URI; the Host header is not used.
            let authority = host_header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_string();
            parts.headers.remove(HOST);
            format!("http://{authority}{path_and_query}").parse::<Uri>()
        } else {
            path_and_query.parse::<Uri>()
        }
        .unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        let mut body = self.prepare_body(body, &upstream).await?;
        // hyper's client writes the framing from the body: a length for a body of known size,
        // chunks otherwise (said explicitly, or hyper would drop a GET's body of unknown size).
        parts.headers.remove(CONTENT_LENGTH);
        match &body {
            PreparedBody::Buffered(b) => log.record.bytes_in = b.len() as u64,
            PreparedBody::Streaming(Some(b)) if !h2 && b.size_hint().exact().is_none() => {
                parts
                    .headers
                    .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
            PreparedBody::Streaming(_) => {}
        }
        let too_large = match &body {
            PreparedBody::Streaming(Some(b)) => Some(b.exceeded.clone()),
            _ => None,
        };

        let mut tried: Vec<usize> = Vec::new();
        let mut retries_left = retry.attempts.saturating_sub(1);
        let restart_until = started + upstream.config.restart_wait;
        let mut backoff = Duration::from_millis(25);
        loop {
            let attempt_started = Instant::now();
            // Choosing an endpoint and waiting for a slot are not attempts: nothing reached the
            // upstream if they fail, and the attempt count says so.
            let choice = upstream.select(&tried, key).map_err(|mut f| {
                f.attempt = log.attempts;
                f
            })?;
            let endpoint = choice.endpoint;
            log.record.endpoint = Some(endpoint.name.clone());
            let mut attempt = AttemptRecord {
                endpoint: endpoint.name.clone(),
                ..AttemptRecord::default()
            };
            let slot = upstream
                .acquire(&endpoint, deadline)
                .await
                .map_err(|mut f| {
                    f.attempt = log.attempts;
                    f
                })?;
            log.attempts += 1;
            let attempt_no = log.attempts;
            let outcome = match upstream.checkout(&endpoint, slot, !idempotent).await {
                Err(f) => Err((f, None)),
                Ok(checkout) => {
                    attempt.reused = checkout.conn.uses > 0;
                    attempt.connect = Some(attempt_started.elapsed());
                    attempt.idle = checkout.idle_for;
                    attempt.conn_uses = checkout.conn.uses;
                    attempt.conn_age = Some(checkout.conn.created.elapsed());
                    let idle_for = checkout.idle_for;
                    let Some(req_body) = body.take_for_attempt() else {
                        // The retry rules below never allow this; say so loudly if they ever do.
                        return Err(Failure::new(Cause::Internal, Phase::SendRequest)
                            .with_detail("a streamed request body cannot be sent twice"));
                    };
                    let req = Request::from_parts(parts.clone(), req_body);
                    if log.bytes_in.is_none() {
                        log.bytes_in = Some(req.body().progress().clone());
                    }
                    let mut deadlines = self.deadlines[route.upstream];
                    if let Some(per_try) = retry.per_try_timeout {
                        deadlines.response = deadlines.response.min(per_try);
                    }
                    // No attempt runs past the route's deadline.
                    deadlines.response = deadlines
                        .response
                        .min(deadline.saturating_duration_since(Instant::now()));
                    match checkout.conn.send(req, &deadlines).await {
                        Ok((resp, conn, exchange)) => {
                            Ok((resp, conn, exchange, checkout.endpoint, checkout.slot))
                        }
                        Err((f, _)) => Err((f, idle_for)),
                    }
                }
            };
            // The response head arrived; is its body framed so that it can be relayed, and is
            // its start readable?
            let outcome = match outcome {
                Ok((resp, conn, exchange, endpoint, slot)) => {
                    let (mut parts, mut incoming) = resp.into_parts();
                    let checked = match response_framing(&mut parts.headers) {
                        Ok(framing) => match first_frame(&mut incoming).await {
                            Ok(early) => Ok((framing, early)),
                            Err(e) => Err(net::body_failure(&e, &exchange)),
                        },
                        Err(mut f) => {
                            exchange.fill(&mut f);
                            Err(f)
                        }
                    };
                    match checked {
                        Ok((framing, early)) => Ok((
                            parts, incoming, framing, early, conn, exchange, endpoint, slot,
                        )),
                        Err(mut f) => {
                            f.endpoint = Some(endpoint.name.clone());
                            Err((f, None))
                        }
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok((mut parts, incoming, framing, early, conn, exchange, endpoint, slot)) => {
                    attempt.first_byte = Some(attempt_started.elapsed());
                    attempt.status = Some(parts.status.as_u16());
                    log.record.attempts.push(attempt);
                    upstream.report(&endpoint, Outcome::Answered(parts.status.as_u16()));
                    let keep_alive = keep_alive_timeout(&parts.headers);
                    strip_hop_by_hop(&mut parts.headers);
                    append_via(&mut parts.headers, &self.via);
                    parts.headers.insert(X_REQUEST_ID, request_id_value.clone());
                    log.record.status = parts.status.as_u16();
                    let lease = PoolLease {
                        conn,
                        upstream: upstream.clone(),
                        endpoint,
                        keep_alive,
                        slot,
                        close: framing.close_upstream,
                    };
                    let body = ProxyBody::stream(
                        incoming,
                        lease,
                        exchange,
                        attempt_started,
                        self.deadlines[route.upstream].body_idle,
                    )
                    .with_early(early);
                    let log = std::mem::replace(log, RequestLog::detached(&self.logger));
                    return Ok(Response::from_parts(parts, body.with_log(log)));
                }
                Err((mut f, idle_for)) => {
                    f.attempt = attempt_no;
                    f.upstream.get_or_insert_with(|| upstream.name.clone());
                    f.endpoint.get_or_insert_with(|| endpoint.name.clone());
                    if too_large
                        .as_ref()
                        .is_some_and(|t| t.load(Ordering::Acquire))
                    {
                        f = Failure::client(
                            ClientFault::BodyTooLarge,
                            format!(
                                "request body exceeds the limit of {} bytes",
                                limits.max_request_body_bytes
                            ),
                        );
                    }
                    attempt.cause = Some(f.cause);
                    attempt.phase = Some(f.phase);
                    attempt.total = Some(attempt_started.elapsed());
                    log.record.attempts.push(attempt);
                    if f.cause.side() != cause::Side::Upstream {
                        return Err(f);
                    }
                    upstream.report(&endpoint, Outcome::Failed(&f));
                    let race = f.reused
                        && f.response_bytes == 0
                        && matches!(f.cause, Cause::Closed | Cause::Reset);
                    if race {
                        if let Some(idle) = idle_for {
                            upstream.lost_race(&endpoint, idle);
                        }
                    }
                    // The retry rules: facts first, then the request's properties, then limits.
                    let unsent = f.phase.before_send() || f.unprocessed;
                    let replayable = body.available();
                    let timed_out = f.cause == Cause::Timeout;
                    let allowed = replayable
                        && (unsent
                            || (idempotent
                                && (race
                                    || (retry.on.contains(&f.cause)
                                        && (!timed_out || repeatable)))));
                    if !allowed || Instant::now() >= deadline {
                        return Err(f);
                    }
                    tried.push(endpoint.index);
                    // The signs of an endpoint going down or coming up: nothing listens, or a new
                    // connection dies before a single response byte (a process being killed).
                    let going_away = (f.phase == Phase::Connect
                        && matches!(f.cause, Cause::Refused | Cause::Unreachable | Cause::Reset))
                        || (!f.reused
                            && f.response_bytes == 0
                            && matches!(f.cause, Cause::Reset | Cause::Closed));
                    if going_away && tried.len() >= upstream.endpoints.len() {
                        // A restart gap: every endpoint is down. Idempotent requests wait a
                        // little for one to come back instead of failing at once.
                        if !idempotent || Instant::now() + backoff >= restart_until.min(deadline) {
                            return Err(f);
                        }
                        // A refused connect costs the upstream nothing; a request it received
                        // and dropped does, so those waits draw on the retry budget.
                        if f.request_bytes > 0 && !upstream.budget.try_retry() {
                            f.detail = Some(format!(
                                "{}; not retried: the retry budget is spent",
                                f.detail.unwrap_or_default()
                            ));
                            return Err(f);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(250));
                        tried.clear();
                        continue;
                    }
                    // Every endpoint already failed this request: only a lost keep-alive race or a
                    // request the upstream refused unprocessed is worth another try on them.
                    if retries_left == 0
                        || (tried.len() >= upstream.endpoints.len() && !race && !f.unprocessed)
                    {
                        return Err(f);
                    }
                    if !upstream.budget.try_retry() {
                        f.detail = Some(format!(
                            "{}; not retried: the retry budget is spent",
                            f.detail.unwrap_or_default()
                        ));
                        return Err(f);
                    }
                    self.logger
                        .attempt_retried(&log.record.request_id, &f, attempt_no, race);
                    retries_left -= 1;
                }
            }
        }
    }

    /// Reads a small request body whole, so that a failed attempt can be replayed; larger
    /// bodies are streamed and sent once. A body of unknown length (chunked) is read up to the
    /// replay limit within the upstream's send timeout: if it ends by then it is kept whole
    /// like a small length-framed one, otherwise what was read is sent first and the rest
    /// streamed after it. A body the client breaks (bad chunk framing, an early end) is a 400.
    async fn prepare_body(
        &self,
        mut body: Incoming,
        upstream: &upstream::Upstream,
    ) -> Result<PreparedBody, Failure> {
        use http_body::Body as _;
        use http_body_util::BodyExt;
        let limits = &self.config.limits;
        if body.is_end_stream() {
            return Ok(PreparedBody::Buffered(Bytes::new()));
        }
        let broke = |e: hyper::Error| {
            Failure::client(
                ClientFault::Malformed,
                format!(
                    "the client's request body broke off: {}",
                    net::error_chain(&e)
                ),
            )
        };
        let replay = limits.max_replay_body_bytes as u64;
        let send_timeout = upstream.config.timeouts.send;
        match body.size_hint().exact() {
            Some(n) if n <= replay => {
                match tokio::time::timeout(send_timeout, body.collect()).await {
                    Ok(Ok(collected)) => Ok(PreparedBody::Buffered(collected.to_bytes())),
                    Ok(Err(e)) => Err(broke(e)),
                    Err(_) => Err(Failure::client(
                        ClientFault::Slow,
                        "the request body did not arrive in time",
                    )),
                }
            }
            Some(_) => Ok(PreparedBody::Streaming(Some(LimitedBody::new(
                body,
                limits.max_request_body_bytes,
            )))),
            None => {
                let cap = replay.min(limits.max_request_body_bytes);
                let mut read = bytes::BytesMut::new();
                let until = tokio::time::Instant::now() + send_timeout;
                loop {
                    let frame = match tokio::time::timeout_at(until, body.frame()).await {
                        Err(_) => break,
                        Ok(None) => return Ok(PreparedBody::Buffered(read.freeze())),
                        Ok(Some(Err(e))) => return Err(broke(e)),
                        Ok(Some(Ok(frame))) => frame,
                    };
                    // Trailers are not forwarded (hyper's client sends only declared ones).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    read.extend_from_slice(&data);
                    if read.len() as u64 > limits.max_request_body_bytes {
                        return Err(Failure::client(
                            ClientFault::BodyTooLarge,
                            format!(
                                "request body exceeds the limit of {} bytes",
                                limits.max_request_body_bytes
                            ),
                        ));
                    }
                    if body.is_end_stream() {
                        return Ok(PreparedBody::Buffered(read.freeze()));
                    }
                    if read.len() as u64 > cap {
                        break;
                    }
                }
                Ok(PreparedBody::Streaming(Some(LimitedBody::with_prefix(
                    read.freeze(),
                    body,
                    limits.max_request_body_bytes,
                ))))
            }
        }
    }

    /// The `hash` policy's key for this request, if the upstream uses it.
    fn hash_key(
        &self,
        upstream: &upstream::Upstream,
        req: &Request<Incoming>,
        client: SocketAddr,
    ) -> Option<u64> {
        let config::Balance::Hash(on) = &upstream.config.balance else {
            return None;
        };
        let value = match on {
            config::HashOn::ClientIp => Some(client.ip().to_string()),
            config::HashOn::Header(name) => req
                .headers()
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            config::HashOn::Cookie(name) => req
                .headers()
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string()),
        };
        value.map(|v| upstream::hash_key(&v))
    }
}

/// The request body as it goes to the upstream: whole (replayable) or streamed once.
enum PreparedBody {
    Buffered(Bytes),
    Streaming(Option<LimitedBody>),
}

impl PreparedBody {
    fn take_for_attempt(&mut self) -> Option<net::RequestBody> {
        match self {
            PreparedBody::Buffered(b) => {
                Some(net::RequestBody::new(http_body_util::Full::new(b.clone())))
            }
            PreparedBody::Streaming(s) => s.take().map(net::RequestBody::new),
        }
    }

    /// The body can still be sent: it is buffered, or it was never handed to an attempt.
    fn available(&self) -> bool {
        matches!(
            self,
            PreparedBody::Buffered(_) | PreparedBody::Streaming(Some(_))
        )
    }
}

/// The `timeout=` of a `Keep-Alive` response header, in seconds.
fn keep_alive_timeout(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get("keep-alive")?
        .to_str()
        .ok()?
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("timeout="))
        .find_map(|v| v.trim().parse().ok())
}

impl RequestLog {
    /// A placeholder left behind when the real log moved into a response body; never written.
    fn detached(logger: &Arc<crate::log::Logger>) -> RequestLog {
        RequestLog {
            record: AccessRecord::default(),
            started: Instant::now(),
            logger: logger.clone(),
            bytes_in: None,
            responded: true,
            attempts: 0,
            inflight: None,
            armed: false,
        }
    }
}
