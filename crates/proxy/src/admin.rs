//! The admin listener: what an operator (and Prometheus) reads about the gateway, never proxied
//! traffic. `GET /metrics` is the Prometheus text format; other paths are 404, other methods 405.

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

use crate::Gateway;

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

impl Gateway {
    /// One admin request.
    fn admin(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        match (method, path) {
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
                format!("404 Not Found: {path}; the admin listener serves /metrics\n"),
            ),
        }
    }

    /// Serves the admin listener until `shutdown`.
    pub async fn serve_admin(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(ok) => ok,
                    Err(e) => {
                        self.logger.notice(Level::Error, "admin accept failed", &[("error", json!(e.to_string()))]);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let gw = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let resp = gw.admin(req.method(), req.uri().path());
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
