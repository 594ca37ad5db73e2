//! The request lifecycle, in named phases:
//!
//! ```text
//!  admit ──► route ──► upstream request ──► attempt loop ──► respond ──► (body streams) ──► log
//!    │         │              │                  │
//!    └─────────┴──────────────┴──────────────────┴──► fail: one mapping ─► page + WARN line ─► log
//! ```
//!
//! - **admit** ([`Gateway::admit_phase`]): request id, the head scanner's findings, Host and
//!   framing ([`crate::admit`]); the access record starts here.
//! - **route** ([`Gateway::route`]): size limits, the route, its upstream and retry rules.
//! - **upstream request** ([`Gateway::upstream_request`]): the head rewritten for the upstream,
//!   the body read whole when it can be replayed.
//! - **attempt loop** ([`crate::attempt`]): endpoint choice, in-flight slot, pooled or new
//!   connection, send, response head; the retry rules decide after each failure.
//! - **respond** ([`Gateway::respond`]): the upstream's head made the client's, its body
//!   streamed with the connection lease and the request log attached.
//! - **log** ([`crate::body::RequestLog`]): one access line when the response ends, however it
//!   ends.
//!
//! Each phase either moves on or produces a [`Failure`]; the error surface is built in one place,
//! [`Gateway::fail`]. A later phase (a cache lookup, an upgrade) slots in between two of these.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use cause::{Cause, ClientFault, Failure, Phase};
use http::header::{
    HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, STRICT_TRANSPORT_SECURITY, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::admit::{admit, Admitted};
use crate::attempt::Answered;
use crate::body::{LimitedBody, PoolLease, ProxyBody, RequestLog};
use crate::conn::ConnState;
use crate::headers::{
    append_via, forward_request_headers, new_request_id, request_id_value, sane_request_id,
    strip_hop_by_hop, strip_response_hop_by_hop, upgrade_token, Forwarding, IDEMPOTENCY_KEY,
    KEEP_ALIVE, X_REQUEST_ID,
};
use crate::log::{AccessRecord, Text};
use crate::page::{self, PageContext};
use crate::Gateway;
use bytes::Bytes;

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

/// What the route phase decided: where the request goes, and under which retry rules.
pub(crate) struct Routed<'g> {
    pub upstream: &'g Arc<upstream::Upstream>,
    /// Index of the upstream in the gateway's list (and of its deadlines).
    pub upstream_index: usize,
    /// Index of the route (and of its retry rules).
    pub route_index: usize,
    pub retry: &'g config::RetryConfig,
    /// The method (or an `Idempotency-Key`) allows sending the request again after a failure
    /// the upstream may have seen.
    pub idempotent: bool,
    /// A request that timed out may have been processed; only these are sent again then.
    pub repeatable: bool,
    /// The `hash` policy's key, if the upstream balances by one.
    pub key: Option<u64>,
    /// The route caches responses (`cache = true`).
    pub cache: bool,
    pub started: Instant,
    /// No attempt runs past it.
    pub deadline: Instant,
}

/// The upstream request before its first attempt.
pub(crate) struct Outgoing {
    /// The head as the upstream gets it, lent to each attempt.
    pub parts: Option<http::request::Parts>,
    pub body: PreparedBody,
    /// Set when a streamed body went over the size limit.
    pub too_large: Option<Arc<AtomicBool>>,
    pub request_id: HeaderValue,
    /// The lines the gateway adds to the head (`X-Forwarded-*`, `Via`, `X-Request-Id`),
    /// written after `parts`' own.
    pub added: crate::headers::Added,
    /// The protocol the client asked to switch to, and its side of the switch.
    pub upgrade: Option<Upgrade>,
}

/// A client's request to switch protocols (WebSocket), forwarded upstream.
pub(crate) struct Upgrade {
    pub token: HeaderValue,
    pub client: hyper::upgrade::OnUpgrade,
}

impl Outgoing {
    /// The framing of the prepared body, said in the head: the client's `Content-Length` goes
    /// (the upstream client writes a length for a body of known size), chunks are asked for
    /// explicitly when the size is not known (or a GET's body of unknown size would be
    /// dropped).
    fn frame_body(&mut self, h2: bool, log: &mut RequestLog) {
        use http_body::Body as _;
        let Some(parts) = self.parts.as_mut() else {
            return;
        };
        parts.headers.remove(CONTENT_LENGTH);
        match &self.body {
            PreparedBody::Buffered(b) => log.record.bytes_in = b.len() as u64,
            PreparedBody::Streaming(Some(b)) if !h2 && b.size_hint().exact().is_none() => {
                parts
                    .headers
                    .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            }
            PreparedBody::Streaming(_) => {}
        }
        self.too_large = match &self.body {
            PreparedBody::Streaming(Some(b)) => Some(b.exceeded.clone()),
            _ => None,
        };
    }
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
        let (tls, redirect, hsts) = match &conn {
            Some((state, _)) => (
                state.edge.tls,
                state.edge.redirect_https,
                state.edge.hsts.clone(),
            ),
            None => (false, None, None),
        };
        let (admitted, mut log) = self.admit_phase(&req, client, conn);
        if self.config.acme.is_some() && admitted.is_ok() {
            // An ACME server checking a challenge: answered here, on any listener, before the
            // redirect to HTTPS and before routing.
            if let Some(answer) = self.challenges.answer(req.uri().path()) {
                return challenge_answer(answer, log);
            }
        }
        if let (Ok(_), Some(port)) = (&admitted, redirect) {
            return redirect_https(&req, port, log);
        }
        let format = page::negotiate(req.headers());
        let method = req.method().clone();
        let result = match admitted {
            Ok(admitted) => Self::proxy(&self, req, client, admitted, tls, &mut log).await,
            Err(failure) => Err(failure),
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(failure) => self.fail(failure, &method, format, log),
        };
        if let Some(v) = hsts {
            resp.headers_mut()
                .entry(STRICT_TRANSPORT_SECURITY)
                .or_insert(v);
        }
        resp
    }

    /// The phases after admission, up to the response head.
    async fn proxy(
        self: &Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        admitted: Admitted,
        tls: bool,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, Failure> {
        let routed = self.route(&req, client, log)?;
        // The cache phase, on caching routes: a fresh copy answers here.
        let mut lookup = match routed.cache {
            true => self.cache_lookup(req.method(), req.headers(), true, tls, log),
            false => None,
        };
        if let Some(hit) = lookup.as_ref().and_then(|l| self.cache_hit(l, log)) {
            return Ok(hit);
        }
        if let Some(l) = &lookup {
            // Until the cache answers otherwise: the error page says a copy was there.
            log.record.cache = Some(if l.has_copy() { "stale-copy" } else { "miss" });
        }
        let (mut outgoing, body) =
            self.upstream_request(req, client, admitted, tls, &routed, log)?;
        if let Some(body) = body {
            // Most requests have no body; the reading of one is boxed so that its state does
            // not make the future of every request larger.
            outgoing.body = Box::pin(self.prepare_body(body, routed.upstream)).await?;
        }
        outgoing.frame_body(
            routed.upstream.config.protocol == config::Protocol::H2c,
            log,
        );
        if let Some(l) = lookup.as_mut() {
            // Within `stale-while-revalidate`: the stored copy answers, and one refresh runs
            // in the background.
            if let Some(stale) = self.stale_while_revalidate(l, &routed, &outgoing, log) {
                return Ok(stale);
            }
            if let Some(shared) = self.cache_coalesce(l, log).await {
                return Ok(shared);
            }
            if let Some(parts) = outgoing.parts.as_mut() {
                self.cache_conditions(l, &mut parts.headers);
            }
        }
        // With a stale copy to fall back on, the client does not wait out the upstream: at
        // once when every endpoint is known to be out, else after a short while.
        let fallback = lookup.as_mut().filter(|l| self.stale_allowed(l));
        let tried = match fallback {
            None => self.attempts(&routed, &mut outgoing, log).await,
            Some(l) => {
                let down = routed.upstream.endpoints.iter().all(|e| !e.healthy());
                let waited = if down {
                    Err(Failure::new(Cause::NoHealthyUpstream, Phase::Select)
                        .with_detail("every endpoint is out (health checks or ejection)"))
                } else if self.presumed_down(l, &routed.upstream.name) {
                    Err(Failure::new(Cause::NoHealthyUpstream, Phase::Select)
                        .with_detail("the upstream failed another request a moment ago; not tried"))
                } else {
                    match tokio::time::timeout(
                        crate::cached::FAST_STALE,
                        self.attempts(&routed, &mut outgoing, log),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            // The copy answers this client; the upstream's answer is fetched
                            // in the background, with the upstream's own timeouts, for the
                            // next ones.
                            self.spawn_refresh(l, &routed, &outgoing, true);
                            Err(
                                Failure::new(Cause::Timeout, Phase::ReadHead).with_detail(format!(
                                    "no answer within {:?} while a stored copy could answer",
                                    crate::cached::FAST_STALE
                                )),
                            )
                        }
                    }
                };
                if let Err(failure) = &waited {
                    if let Some(stale) = self.serve_stale(l, Some(failure), None, log) {
                        return Ok(stale);
                    }
                }
                waited
            }
        };
        let answered = match tried {
            Ok(a) => a,
            Err(failure) => {
                // A stored copy, stale, rather than the error, when the rules allow it.
                let stale = lookup
                    .as_ref()
                    .and_then(|l| self.serve_stale(l, Some(&failure), None, log));
                return stale.ok_or(failure);
            }
        };
        if let Some(upgrade) = outgoing.upgrade.take() {
            return self.switch(answered, upgrade, &routed, &outgoing.request_id, log);
        }
        let Some(lookup) = lookup else {
            return Ok(self.respond(answered, &routed, &outgoing.request_id, log));
        };
        let status = answered.parts.status;
        if status == StatusCode::NOT_MODIFIED && lookup.revalidating() {
            // The stored copy is confirmed; the 304's empty body ends here, and its connection
            // goes back to the pool.
            let (parts, mut body) = self
                .respond(answered, &routed, &outgoing.request_id, log)
                .into_parts();
            if let Some(mut log) = body.take_log() {
                drop(body);
                return Ok(self.cache_confirmed(&lookup, &parts.headers, &mut log));
            }
            return Ok(self.cache_fill(lookup, Response::from_parts(parts, body)));
        }
        if matches!(status.as_u16(), 500 | 502 | 503 | 504) {
            if let Some(stale) = self.serve_stale(&lookup, None, Some(status), log) {
                // The upstream's error is not relayed; its connection is not reused.
                drop(answered);
                return Ok(stale);
            }
        }
        log.record.cache = Some("miss");
        let resp = self.respond(answered, &routed, &outgoing.request_id, log);
        Ok(self.cache_fill(lookup, resp))
    }

    /// Admission: the request id, what the head scanner found, then Host and framing. The
    /// access record starts here, so that a refused request is logged like any other.
    fn admit_phase(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
        conn: Option<(Arc<ConnState>, u64)>,
    ) -> (Result<Admitted, Failure>, RequestLog) {
        let started = net::clock::now();
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(sane_request_id)
            .unwrap_or_else(new_request_id);
        let length_and_coding = conn
            .as_ref()
            .is_some_and(|(state, n)| state.had_length_and_coding(*n));
        let oversized = conn
            .as_ref()
            .and_then(|(state, n)| state.oversized_head(*n));
        // Shared with the request's target, not copied.
        let path_and_query = match req.uri().path_and_query() {
            Some(p) => Text::path(p),
            None => Text::from("/"),
        };
        let limit = self.config.limits.max_request_header_bytes;
        let mut admitted = if let Some(size) = oversized {
            Err(Failure::client(
                ClientFault::HeadersTooLarge,
                format!("request header section is {size} bytes, the limit is {limit}"),
            ))
        } else if req.method() == Method::CONNECT {
            // Never an open proxy: CONNECT tunnels go nowhere.
            Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail("CONNECT tunnels are not offered by this gateway"))
        } else {
            admit(req, length_and_coding)
        };
        let log = RequestLog {
            record: AccessRecord {
                client: Some(client),
                client_text: conn.as_ref().and_then(|(state, _)| state.client_text),
                method: req.method().clone(),
                // The host routed by lives in the record from here on.
                host: match &mut admitted {
                    Ok(a) => std::mem::take(&mut a.host),
                    Err(_) => Text::default(),
                },
                path: path_and_query,
                proto: proto_name(req.version()),
                request_id,
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
        (admitted, log)
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
        if let Some(fwd) = log.record.cache {
            // A caching route: the cache went upstream (or had a copy it could not use) and
            // this error is the gateway's own; it is never stored.
            let fwd = if fwd == "stale-copy" {
                "stale"
            } else {
                "uri-miss"
            };
            let v = format!(
                "cleargate; fwd={fwd}; detail=\"{}\"",
                failure.cause.as_str()
            );
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().insert(crate::cached::CACHE_STATUS, v);
            }
            log.record.cache = Some("miss");
        }
        log.record.status = status;
        log.record.cause = Some(failure.cause);
        log.record.phase = Some(failure.phase);
        log.record.gateway_error = true;
        log.record.upstream = failure.upstream.as_deref().map(std::sync::Arc::from);
        log.record.endpoint = failure.endpoint.as_deref().map(std::sync::Arc::from);
        resp.map(|b| b.with_log(log))
    }

    /// Routing: the size limits first (an oversized request is refused before anything else is
    /// spent on it), then the route by host and path, its upstream and its retry rules.
    fn route(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
        log: &mut RequestLog,
    ) -> Result<Routed<'_>, Failure> {
        use http_body::Body as _;
        let limits = &self.config.limits;
        // hyper enforces the HTTP/1 head limit exactly while parsing; HTTP/2 heads are measured
        // here.
        if req.version() == Version::HTTP_2 {
            let size = head_size(req);
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
        let host = log.record.host.as_str();
        let path = req.uri().path();
        let Some(route) = self.router.find(host, path) else {
            return Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail(format!("no route for host `{host}` and path `{path}`")));
        };
        let upstream = &self.upstreams[route.upstream];
        let retry = &self.retries[route.index];
        log.record.upstream = Some(upstream.name.clone());
        upstream.budget.record_request(log.started);
        let method = req.method();
        // Looked up only where it changes something: GET and its like are idempotent and
        // repeatable with or without a key.
        let keyed = !matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) && req.headers().contains_key(&IDEMPOTENCY_KEY);
        let idempotent = keyed
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            );
        let repeatable = keyed
            || matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            );
        // The request's own start: one clock read less, and the deadline counts the time
        // admission took too.
        let started = log.started;
        Ok(Routed {
            upstream,
            upstream_index: route.upstream,
            route_index: route.index,
            retry,
            idempotent,
            repeatable,
            key: self.hash_key(upstream, req, client),
            cache: self.config.routes[route.index].cache,
            started,
            deadline: started + retry.deadline,
        })
    }

    /// The route phase's decision for a request the gateway makes itself (a background
    /// refresh of a stored copy): a GET on route `route_index` to upstream `upstream_index`,
    /// its deadline from now.
    pub(crate) fn routed_again(
        &self,
        route_index: usize,
        upstream_index: usize,
        key: Option<u64>,
    ) -> Routed<'_> {
        let retry = &self.retries[route_index];
        let started = Instant::now();
        Routed {
            upstream: &self.upstreams[upstream_index],
            upstream_index,
            route_index,
            retry,
            idempotent: true,
            repeatable: true,
            key,
            cache: true,
            started,
            deadline: started + retry.deadline,
        }
    }

    /// The upstream request: origin-form (absolute for HTTP/2), forwarding headers added. Its
    /// body is empty, and the client's body comes with it when there is one, to be prepared
    /// (kept for replay when it is small) and then framed ([`Outgoing::frame_body`]). Not
    /// `async`: a request without a body (nearly all) waits for nothing here.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        admitted: Admitted,
        tls: bool,
        routed: &Routed<'_>,
        log: &mut RequestLog,
    ) -> Result<(Outgoing, Option<Incoming>), Failure> {
        use http_body::Body as _;
        let version = req.version();
        let mut req = req;
        let upgrade = match upgrade_token(req.headers(), version) {
            Some(token) if routed.upstream.config.protocol == config::Protocol::H2c => {
                return Err(Failure::new(Cause::UpgradeFailed, Phase::Upgrade)
                    .with_detail(format!(
                        "the client asked to switch to {}, and upstream `{}` is spoken to in HTTP/2 (h2c), which cannot switch protocols",
                        String::from_utf8_lossy(token.as_bytes()),
                        routed.upstream.name
                    )));
            }
            Some(token) => Some(Upgrade {
                token,
                client: hyper::upgrade::on(&mut req),
            }),
            None => None,
        };
        let (mut parts, body) = req.into_parts();
        let host_header = admitted.host_value;
        let request_id = request_id_value(&log.record.request_id);
        let added = forward_request_headers(
            &mut parts.headers,
            &Forwarding {
                client_ip: client.ip(),
                client_ip_value: log.inflight.as_ref().map(|c| &c.client_ip),
                proto: if tls { "https" } else { "http" },
                host: host_header.as_ref(),
                via: self.via_for(version),
            },
        );
        if let Some(u) = &upgrade {
            // Dropped with the hop-by-hop headers above; this hop asks for the switch anew.
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(UPGRADE, u.token.clone());
        }
        let path_and_query = log.record.path.as_str();
        let h2 = routed.upstream.config.protocol == config::Protocol::H2c;
        parts.uri = if h2 {
            // HTTP/2 carries the authority in the URI; the Host header is not used.
            let authority = host_header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let uri = format!("http://{authority}{path_and_query}").parse::<Uri>();
            parts.headers.remove(HOST);
            uri.unwrap_or_else(|_| Uri::from_static("/"))
        } else {
            origin_form(&parts.uri)
        };
        parts.version = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        let body = (!body.is_end_stream()).then_some(body);
        Ok((
            Outgoing {
                parts: Some(parts),
                body: PreparedBody::Buffered(Bytes::new()),
                too_large: None,
                request_id,
                added,
                upgrade,
            },
            body,
        ))
    }

    /// The switch: the answer to a request that asked to change protocols. A `101` naming the
    /// protocol asked for is relayed and the two connections become a tunnel (`tunnel.rs`); a
    /// `101` to another protocol, or a 2xx (the upstream ignored the request to switch), is
    /// `upgrade_failed`; any other answer is the application's own refusal, relayed, after which
    /// the client connection is closed (its next bytes may already be in the new protocol).
    fn switch(
        &self,
        answered: Answered,
        upgrade: Upgrade,
        routed: &Routed<'_>,
        request_id: &HeaderValue,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, Failure> {
        let token = String::from_utf8_lossy(upgrade.token.as_bytes()).into_owned();
        let status = answered.parts.status;
        let failed = |answered: &Answered, detail: String| {
            let mut f = Failure::new(Cause::UpgradeFailed, Phase::Upgrade)
                .with_endpoint(answered.endpoint.name.to_string())
                .with_detail(detail);
            f.upstream = Some(routed.upstream.name.to_string());
            answered.exchange.fill(&mut f);
            f
        };
        if status != http::StatusCode::SWITCHING_PROTOCOLS {
            if status.is_success() {
                return Err(failed(
                    &answered,
                    format!("the upstream answered {status} to a request to switch to {token}: it does not speak {token} on this path"),
                ));
            }
            let mut resp = self.respond(answered, routed, request_id, log);
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(resp);
        }
        let switched_to = answered.parts.headers.get(UPGRADE).cloned();
        if !switched_to
            .as_ref()
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(upgrade.token.as_bytes()))
        {
            let detail = match &switched_to {
                Some(v) => format!(
                    "the upstream switched to `{}`, not to the {token} asked for",
                    String::from_utf8_lossy(v.as_bytes())
                ),
                None => format!("the upstream answered 101 without saying what it switched to (no Upgrade header); {token} was asked for"),
            };
            return Err(failed(&answered, detail));
        }
        let Answered {
            mut parts,
            incoming,
            endpoint,
            slot,
            ..
        } = answered;
        let Some(upstream_io) = incoming.into_upgraded() else {
            return Err(Failure::new(Cause::Internal, Phase::Upgrade)
                .with_detail("the upstream connection could not be taken over"));
        };
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(UPGRADE, upgrade.token.clone());
        append_via(&mut parts.headers, &self.via);
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        log.record.status = 101;
        let idle = self.config.limits.tunnel_idle_timeout;
        let logger = self.logger.clone();
        let id = log.record.request_id.clone();
        let tracker = log.inflight.as_ref().and_then(|c| c.edge.tracker.clone());
        let tunnel = async move {
            // The in-flight slot is held for the tunnel's life; the connection is never pooled.
            let _slot = slot;
            let started = Instant::now();
            let client = match upgrade.client.await {
                Ok(c) => hyper_util::rt::TokioIo::new(c),
                Err(e) => {
                    logger.notice(
                        cause::Level::Info,
                        "the client left before the switch of protocols",
                        &[
                            ("request_id", serde_json::json!(id.as_str())),
                            ("error", serde_json::json!(e.to_string())),
                        ],
                    );
                    return;
                }
            };
            let t = crate::tunnel::run(client, upstream_io, idle).await;
            logger.notice(
                cause::Level::Info,
                "tunnel ended",
                &[
                    ("request_id", serde_json::json!(id.as_str())),
                    ("endpoint", serde_json::json!(&*endpoint.name)),
                    ("protocol", serde_json::json!(token)),
                    ("from_client", serde_json::json!(t.from_client)),
                    ("from_upstream", serde_json::json!(t.from_upstream)),
                    ("ended", serde_json::json!(t.ended.as_str())),
                    (
                        "duration_ms",
                        serde_json::json!(started.elapsed().as_millis() as u64),
                    ),
                ],
            );
        };
        match tracker {
            Some(t) => drop(t.spawn(tunnel)),
            None => drop(tokio::spawn(tunnel)),
        }
        let log = log.take_boxed(&self.logger);
        Ok(Response::from_parts(
            parts,
            ProxyBody::empty().with_boxed_log(log),
        ))
    }

    /// The upstream's head becomes the client's: hop-by-hop headers dropped, this hop added to
    /// `Via`, the request id set; the body streams with the connection lease and the log.
    pub(crate) fn respond(
        &self,
        answered: Answered,
        routed: &Routed<'_>,
        request_id: &HeaderValue,
        log: &mut RequestLog,
    ) -> Response<ProxyBody> {
        let Answered {
            mut parts,
            incoming,
            framing,
            early,
            conn,
            exchange,
            endpoint,
            slot,
            attempt_started,
        } = answered;
        // The parse of the head said which hop-by-hop names it has: none is looked up in vain.
        let keep_alive = if exchange.head.hop_by_hop & net::hop::BIT_KEEP_ALIVE != 0 {
            keep_alive_timeout(&parts.headers)
        } else {
            None
        };
        strip_response_hop_by_hop(&mut parts.headers, &exchange.head);
        parts.headers.reserve(2);
        append_via(&mut parts.headers, &self.via);
        parts.headers.insert(X_REQUEST_ID, request_id.clone());
        log.record.status = parts.status.as_u16();
        let lease = PoolLease {
            conn,
            upstream: routed.upstream.clone(),
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
            self.deadlines[routed.upstream_index].body_idle,
        )
        .with_early(early);
        Response::from_parts(parts, body.with_boxed_log(log.take_boxed(&self.logger)))
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
pub(crate) enum PreparedBody {
    Buffered(Bytes),
    Streaming(Option<LimitedBody>),
}

impl PreparedBody {
    pub(crate) fn take_for_attempt(&mut self) -> Option<net::RequestBody> {
        match self {
            PreparedBody::Buffered(b) => Some(net::RequestBody::full(b.clone())),
            PreparedBody::Streaming(s) => s.take().map(net::RequestBody::new),
        }
    }

    /// The body can still be sent: it is buffered, or it was never handed to an attempt.
    pub(crate) fn available(&self) -> bool {
        matches!(
            self,
            PreparedBody::Buffered(_) | PreparedBody::Streaming(Some(_))
        )
    }
}

/// The request target as an HTTP/1.1 upstream gets it: the path and query alone. A target in
/// origin form (nearly all of them) is kept as it is, without a copy.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// The `timeout=` of a `Keep-Alive` response header, in seconds.
fn keep_alive_timeout(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(&KEEP_ALIVE)?
        .to_str()
        .ok()?
        .split(',')
        .filter_map(|p| p.trim().strip_prefix("timeout="))
        .find_map(|v| v.trim().parse().ok())
}

/// The answer to an ACME server's HTTP-01 check: the key authorization, as plain text.
fn challenge_answer(answer: String, mut log: RequestLog) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(answer)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    log.record.status = 200;
    resp.map(|b| b.with_log(log))
}

/// The answer of a plain listener with `redirect_https`: `308 Permanent Redirect` to the same
/// host and path over HTTPS (308 keeps the method and body, unlike 301), on the port of the
/// first TLS listener.
fn redirect_https(req: &Request<Incoming>, port: u16, mut log: RequestLog) -> Response<ProxyBody> {
    let host = log.record.host.as_str();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (open, close) = if host.contains(':') {
        ("[", "]")
    } else {
        ("", "")
    };
    let location = if port == 443 {
        format!("https://{open}{host}{close}{path}")
    } else {
        format!("https://{open}{host}{close}:{port}{path}")
    };
    let body = format!("Moved to {location}\n");
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(http::header::LOCATION, v);
    }
    log.record.status = 308;
    resp.map(|b| b.with_log(log))
}

impl RequestLog {
    /// The log, moved into a box once for the response body that writes it, and a
    /// placeholder left in its place (the record is large: each move of it is a copy).
    pub(crate) fn take_boxed(&mut self, logger: &Arc<crate::log::Logger>) -> Box<RequestLog> {
        let mut boxed = Box::new(RequestLog::detached(logger));
        std::mem::swap(&mut *boxed, self);
        boxed
    }

    /// A placeholder left behind when the real log moved into a response body; never written.
    pub(crate) fn detached(logger: &Arc<crate::log::Logger>) -> RequestLog {
        RequestLog {
            record: AccessRecord::default(),
            // Never read: the placeholder is never written.
            started: log_epoch(),
            logger: logger.clone(),
            bytes_in: None,
            responded: true,
            attempts: 0,
            inflight: None,
            armed: false,
        }
    }
}

/// A fixed instant for placeholders, read from the clock once per thread.
fn log_epoch() -> Instant {
    thread_local! {
        static EPOCH: Instant = Instant::now();
    }
    EPOCH.with(|e| *e)
}
