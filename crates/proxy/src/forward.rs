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
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::body::{LimitedBody, PoolLease, ProxyBody, RequestLog};
use crate::headers::{
    append_via, forward_request_headers, new_request_id, sane_request_id, strip_hop_by_hop,
    Forwarding,
};
use crate::log::{AccessRecord, AttemptRecord};
use crate::page::{self, PageContext};
use crate::route::normalize_host;
use crate::server::ConnState;
use crate::Gateway;

fn proto_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn via_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}

/// Size of the request head as the client sent it (request line and header lines).
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

impl Gateway {
    /// Handles one client request from start to response head.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        conn_state: Option<Arc<ConnState>>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(sane_request_id)
            .unwrap_or_else(new_request_id);
        // HTTP/1 absolute-form names a target host, as sent to forward proxies; an HTTP/2
        // `:authority` is the Host header's equivalent and always present.
        let absolute = req.version() != Version::HTTP_2 && req.uri().authority().is_some();
        let host_raw = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let host = normalize_host(&host_raw);
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut log = RequestLog {
            record: AccessRecord {
                client: Some(client),
                method: req.method().to_string(),
                host: host.clone(),
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
            inflight: conn_state,
            armed: true,
        };
        let format = page::negotiate(req.headers());
        let method = req.method().clone();

        match self
            .forward(
                req,
                client,
                &host,
                absolute,
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
        failure: Failure,
        method: &Method,
        format: page::Format,
        mut log: RequestLog,
    ) -> Response<ProxyBody> {
        let status = failure.answer().status;
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
        let mut resp = page::error_response(&failure, &cx);
        append_via(resp.headers_mut(), &self.via);
        log.record.status = status;
        log.record.cause = Some(failure.cause);
        log.record.phase = Some(failure.phase);
        log.record.gateway_error = true;
        log.record.upstream = failure.upstream.clone();
        log.record.endpoint = failure.endpoint.clone();
        resp.map(|b| b.with_log(log))
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        host: &str,
        absolute: bool,
        path_and_query: &str,
        request_id: &str,
        log: &mut RequestLog,
    ) -> Result<Response<ProxyBody>, Failure> {
        let limits = &self.config.limits;
        // Limits first: an oversized or odd request is refused before anything else is spent on it.
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
        if let Some(len) = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
        {
            match len.trim().parse::<u64>() {
                Ok(n) if n > limits.max_request_body_bytes => {
                    return Err(Failure::client(
                        ClientFault::BodyTooLarge,
                        format!(
                            "request body is {n} bytes, the limit is {}",
                            limits.max_request_body_bytes
                        ),
                    ))
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(Failure::client(
                        ClientFault::Malformed,
                        "invalid Content-Length",
                    ))
                }
            }
        }

        // Never an open proxy: CONNECT and requests for foreign hosts go nowhere.
        if req.method() == Method::CONNECT {
            return Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail("CONNECT tunnels are not offered by this gateway"));
        }
        if absolute && !self.router.names_host(host) {
            return Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail(format!("no route names host `{host}`")));
        }
        let path = req.uri().path().to_string();
        let Some(route) = self.router.find(host, &path) else {
            return Err(Failure::new(Cause::NoRoute, Phase::Select)
                .with_detail(format!("no route for host `{host}` and path `{path}`")));
        };
        let upstream = self.upstreams[route.upstream].clone();
        log.record.upstream = Some(upstream.name.clone());

        // The upstream request: origin-form, HTTP/1.1, forwarding headers added.
        let version = req.version();
        let (mut parts, body) = req.into_parts();
        let host_header = parts.headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let via = format!("{} {}", via_version(version), self.config.server_name);
        forward_request_headers(
            &mut parts.headers,
            &Forwarding {
                client_ip: client.ip(),
                proto: "http",
                host: host_header.as_ref(),
                via: &via,
                request_id,
            },
        );
        parts.uri = path_and_query
            .parse::<Uri>()
            .unwrap_or_else(|_| Uri::from_static("/"));
        parts.version = Version::HTTP_11;
        let limited = LimitedBody::new(body, limits.max_request_body_bytes);
        let too_large = limited.exceeded.clone();
        let body = net::RequestBody::new(limited);
        log.bytes_in = Some(body.progress().clone());
        let upstream_req = Request::from_parts(parts, body);

        let endpoint = upstream.pick();
        log.attempts = 1;
        log.record.endpoint = Some(endpoint.name.clone());
        let attempt_started = Instant::now();
        let mut attempt = AttemptRecord {
            endpoint: endpoint.name.clone(),
            ..AttemptRecord::default()
        };
        let annotate = |mut f: Failure, attempt: &mut AttemptRecord, log: &mut RequestLog| {
            if too_large.load(Ordering::Acquire) {
                f = Failure::client(
                    ClientFault::BodyTooLarge,
                    format!(
                        "request body exceeds the limit of {} bytes",
                        limits.max_request_body_bytes
                    ),
                );
            }
            if f.cause.side() == cause::Side::Upstream || f.phase != Phase::Client {
                f.upstream.get_or_insert_with(|| upstream.name.clone());
                f.endpoint.get_or_insert_with(|| endpoint.name.clone());
            }
            attempt.cause = Some(f.cause);
            attempt.phase = Some(f.phase);
            attempt.total = Some(attempt_started.elapsed());
            log.record.attempts.push(attempt.clone());
            f
        };

        let checkout = match upstream.checkout(&endpoint).await {
            Ok(c) => c,
            Err(f) => return Err(annotate(f, &mut attempt, log)),
        };
        attempt.reused = checkout.conn.uses > 0;
        attempt.connect = Some(attempt_started.elapsed());
        let deadlines = self.deadlines[route.upstream];
        let (resp, conn, exchange) = match checkout.conn.send(upstream_req, &deadlines).await {
            Ok(ok) => ok,
            Err((f, _)) => return Err(annotate(f, &mut attempt, log)),
        };
        attempt.first_byte = Some(attempt_started.elapsed());
        attempt.status = Some(resp.status().as_u16());
        log.record.attempts.push(attempt);

        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        append_via(
            &mut parts.headers,
            &format!("1.1 {}", self.config.server_name),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            parts.headers.insert("x-request-id", v);
        }
        log.record.status = parts.status.as_u16();
        let lease = PoolLease {
            conn,
            upstream: upstream.clone(),
            endpoint: checkout.endpoint,
        };
        let body = ProxyBody::stream(
            incoming,
            lease,
            exchange,
            attempt_started,
            deadlines.body_idle,
        );
        let log = std::mem::replace(log, RequestLog::detached(&self.logger));
        Ok(Response::from_parts(parts, body.with_log(log)))
    }
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
