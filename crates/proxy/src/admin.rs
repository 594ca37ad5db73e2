//! The admin listener: what an operator (and Prometheus) reads about the gateway, never proxied
//! traffic.
//!
//! - `GET /metrics`: the Prometheus text format;
//! - `GET /api/upstreams`: every endpoint with its state and why it is out;
//! - `GET /api/errors`: the latest gateway errors, newest first;
//! - `POST /api/reload`: the configuration file read again (422 with the problems if it has any);
//! - `POST /api/dns/flush`, `POST /api/upstreams/NAME/endpoints/ADDR/drain` and `/undrain`;
//! - `GET /`: the status page, self-contained, refreshing by itself.
//!
//! Mutations are POST only (405 otherwise) and refuse a browser's cross-origin request (an
//! `Origin` that is not this listener, or `Sec-Fetch-Site` other than `same-origin`/`none`), so
//! a page on another site cannot drain an endpoint through an operator's browser.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cause::Level;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Gateway, Live};

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json_answer(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(v).unwrap_or_default();
    body.push('\n');
    answer(status, "application/json", body)
}

/// True when a browser sent the request from another origin.
fn cross_origin(headers: &http::HeaderMap) -> bool {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_elsewhere = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| {
            let o = o.split_once("://").map_or(o, |(_, rest)| rest);
            o != host
        });
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s != "same-origin" && s != "none");
    origin_elsewhere || fetch_site
}

impl Gateway {
    /// The state of every upstream and endpoint, as JSON.
    pub fn upstreams_json(&self) -> serde_json::Value {
        let upstreams: Vec<serde_json::Value> = self
            .upstreams
            .iter()
            .map(|u| {
                let endpoints: Vec<serde_json::Value> = u
                    .endpoints
                    .iter()
                    .map(|e| {
                        let s = e.state();
                        json!({
                            "endpoint": &*s.name,
                            "healthy": s.healthy,
                            "why_out": s.why_out,
                            "active_checks_pass": s.active_up,
                            "ejected_for_s": s.ejected_for.map(|d| d.as_secs()),
                            "ejections": s.ejections,
                            "draining": s.draining,
                            "in_flight": s.in_flight,
                            "idle_connections": s.idle,
                            "learned_idle_timeout_ms": s.learned_idle.map(|d| d.as_millis() as u64),
                            "addresses": s.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({
                    "upstream": &*u.name,
                    "in_flight": u.in_flight(),
                    "healthy_endpoints": u.endpoints.iter().filter(|e| e.healthy()).count(),
                    "endpoints": endpoints,
                })
            })
            .collect();
        json!({ "upstreams": upstreams })
    }

    /// A POST of the admin API.
    fn admin_post(&self, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        if path == "/api/cache/purge" {
            return self.purge(query);
        }
        if path == "/api/dns/flush" {
            self.flush_dns();
            return json_answer(StatusCode::OK, &json!({"flushed": true}));
        }
        // /api/upstreams/NAME/endpoints/ADDR/(drain|undrain)
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if let ["api", "upstreams", name, "endpoints", addr, action @ ("drain" | "undrain")] =
            parts.as_slice()
        {
            let Some(u) = self.upstream(name) else {
                return json_answer(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no upstream `{name}`")}),
                );
            };
            let Some(e) = u.endpoints.iter().find(|e| &*e.name == *addr) else {
                return json_answer(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("upstream `{name}` has no endpoint `{addr}`")}),
                );
            };
            let on = *action == "drain";
            e.drain(on);
            self.logger.notice(
                Level::Warn,
                if on {
                    "endpoint drained by the operator: no new requests"
                } else {
                    "endpoint back in rotation (undrained by the operator)"
                },
                &[("upstream", json!(name)), ("endpoint", json!(addr))],
            );
            return json_answer(
                StatusCode::OK,
                &json!({"upstream": name, "endpoint": addr, "draining": on}),
            );
        }
        json_answer(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no action at {path}")}),
        )
    }

    /// `POST /api/cache/purge?url=KEY` forgets the stored responses of one URL (every
    /// variant); `?prefix=P` those of every URL whose key begins with `P` (an empty prefix:
    /// everything). Keys are `scheme://host/path?query`, the host in lower case, as requests
    /// are forwarded; values are %-encoded.
    fn purge(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let Some(cache) = &self.cache else {
            return json_answer(
                StatusCode::NOT_FOUND,
                &json!({"error": "no [cache] is configured"}),
            );
        };
        let param = |name: &str| {
            query?.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| percent_decode(v))
            })
        };
        let (what, purged) = match (param("url"), param("prefix")) {
            (Some(url), None) => {
                let had = cache.store.contains(&url);
                cache.store.invalidate(&url);
                (json!({"url": url}), usize::from(had))
            }
            (None, Some(prefix)) => {
                let n = cache.store.purge_prefix(&prefix);
                (json!({"prefix": prefix}), n)
            }
            _ => {
                return json_answer(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "name what to purge: ?url=KEY or ?prefix=PREFIX (%-encoded)"}),
                )
            }
        };
        self.logger.notice(
            Level::Warn,
            "cache purged by the operator",
            &[("what", what.clone()), ("purged", json!(purged))],
        );
        json_answer(StatusCode::OK, &json!({"purge": what, "purged": purged}))
    }

    /// One admin request.
    fn admin(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Response<Full<Bytes>> {
        let mutation = path == "/api/dns/flush"
            || path == "/api/reload"
            || path == "/api/cache/purge"
            || path.ends_with("/drain")
            || path.ends_with("/undrain");
        if mutation {
            if method != Method::POST {
                let mut r = json_answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"error": "changes are made with POST"}),
                );
                r.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
                return r;
            }
            if cross_origin(headers) {
                return json_answer(
                    StatusCode::FORBIDDEN,
                    &json!({"error": "cross-origin requests may not change the gateway"}),
                );
            }
            return self.admin_post(path, query);
        }
        match (method, path) {
            (&Method::GET, "/") => answer(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
            (&Method::GET, "/api/upstreams") => json_answer(StatusCode::OK, &self.upstreams_json()),
            (&Method::GET, "/api/errors") => json_answer(StatusCode::OK, &json!({"errors": self.logger.recent_errors()})),
            (&Method::GET | &Method::HEAD, "/metrics") => {
                answer(StatusCode::OK, PROMETHEUS_TEXT, self.metrics_text())
            }
            (_, "/metrics") => {
                let mut r = answer(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain; charset=utf-8",
                    "405 Method Not Allowed: /metrics is read with GET\n".into(),
                );
                r.headers_mut().insert(
                    http::header::ALLOW,
                    http::HeaderValue::from_static("GET, HEAD"),
                );
                r
            }
            _ => answer(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("404 Not Found: {path}; the admin listener serves /, /metrics, /api/upstreams, /api/errors and the POST actions\n"),
            ),
        }
    }

    /// Serves the admin listener until `shutdown`, for this configuration for good (no
    /// reload): [`Live::serve_admin`].
    pub async fn serve_admin(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        Live::new(self, None).serve_admin(listener, shutdown).await;
    }
}

impl Live {
    /// One admin request, answered by the configuration in use; `POST /api/reload` here.
    fn admin(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Response<Full<Bytes>> {
        let gw = self.current();
        if path == "/api/reload" && method == Method::POST && !cross_origin(headers) {
            return match self.reload() {
                Ok(outcome) => json_answer(StatusCode::OK, &outcome.to_json()),
                Err(problems) => json_answer(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({
                        "reloaded": false,
                        "generation": self.generation(),
                        "problems": problems,
                    }),
                ),
            };
        }
        gw.admin(method, path, query, headers)
    }

    /// Serves the admin listener until `shutdown`.
    pub async fn serve_admin(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(ok) => ok,
                    Err(e) => {
                        self.current().logger.notice(Level::Error, "admin accept failed", &[("error", json!(e.to_string()))]);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let live = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let resp = live.admin(
                        req.method(),
                        req.uri().path(),
                        req.uri().query(),
                        req.headers(),
                    );
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }
}

/// The status page: upstreams and endpoints with their state and why they are out, recent
/// gateway errors by cause with a timeline of the last ten minutes, refreshed every 2 s. No
/// external assets.
const STATUS_PAGE: &str = include_str!("status.html");

/// `%XX` sequences decoded (and `+` left as it is); invalid ones kept as they are.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
