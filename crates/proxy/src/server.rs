//! The client side: accept loop, one task per connection, client timeouts, graceful shutdown.
//!
//! Each connection is served by hyper (HTTP/1.1, or HTTP/2 with prior knowledge, detected from
//! the first bytes). A small watchdog per HTTP/1 connection enforces the request-head deadline
//! with a real `408` page (hyper alone would close silently) and closes idle keep-alive
//! connections. Errors hyper answers by itself (malformed requests) are logged here.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cause::{ClientFault, Failure, Level};
use http::Method;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::log::AccessRecord;
use crate::page::{self, PageContext};
use crate::Gateway;

/// What the watchdog of one client connection knows about it.
#[derive(Debug)]
pub struct ConnState {
    inflight: AtomicUsize,
    requests: AtomicU64,
    /// When the first byte of a not yet complete request head arrived.
    head_started: Mutex<Option<Instant>>,
    /// When the connection last became idle.
    idle_since: Mutex<Instant>,
    saw_first_read: AtomicBool,
    h2: AtomicBool,
    wake: tokio::sync::Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            head_started: Mutex::new(None),
            idle_since: Mutex::new(Instant::now()),
            saw_first_read: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn request_started(&self) {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self.head_started.lock().unwrap() = None;
    }

    /// Called when a request's response is over (sent, aborted or abandoned).
    pub fn request_done(&self) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock().unwrap() = Instant::now();
            self.wake.notify_one();
        }
    }

    fn bytes_arrived(&self, first: &[u8]) {
        if !self.saw_first_read.swap(true, Ordering::Relaxed)
            && first.starts_with(b"PRI * HTTP/2.0")
        {
            self.h2.store(true, Ordering::Relaxed);
        }
        if self.inflight.load(Ordering::Acquire) == 0 {
            let mut head = self.head_started.lock().unwrap();
            if head.is_none() {
                *head = Some(Instant::now());
                self.wake.notify_one();
            }
        }
    }
}

/// The client connection's I/O, reporting arriving bytes to the watchdog.
struct ClientIo {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Gateway {
    /// Serves `listeners` until `shutdown` is cancelled, then lets in-flight requests finish for
    /// up to the configured shutdown timeout.
    pub async fn serve(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        for upstream in &self.upstreams {
            upstream.start(shutdown.clone());
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.config.limits.max_client_connections,
        ));
        for listener in listeners {
            let gw = self.clone();
            let tracker2 = tracker.clone();
            let shutdown = shutdown.clone();
            let permits = permits.clone();
            tracker
                .spawn(async move { gw.accept_loop(listener, tracker2, shutdown, permits).await });
        }
        shutdown.cancelled().await;
        tracker.close();
        let deadline = self.config.shutdown_timeout;
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            self.logger.notice(
                Level::Warn,
                "shutdown deadline passed with requests still in flight; they are cut off",
                &[("shutdown_timeout_ms", json!(deadline.as_millis() as u64))],
            );
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        permits: Arc<tokio::sync::Semaphore>,
    ) {
        loop {
            // At the connection limit, new connections wait in the kernel's accept queue.
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, client) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(ok) => ok,
                    Err(e) => {
                        // Out of descriptors or similar: say so, back off briefly, keep serving.
                        self.logger.notice(Level::Error, "accept failed", &[("error", json!(e.to_string()))]);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                gw.serve_connection(stream, client, shutdown).await;
                drop(permit);
            });
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        shutdown: CancellationToken,
    ) {
        #[cfg(unix)]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let state = Arc::new(ConnState::new());
        let io = TokioIo::new(ClientIo {
            stream,
            state: state.clone(),
        });
        let gw = self.clone();
        let svc_state = state.clone();
        let service = service_fn(move |req| {
            svc_state.request_started();
            let gw = gw.clone();
            let st = svc_state.clone();
            async move { Ok::<_, Infallible>(gw.handle(req, client, Some(st)).await) }
        });
        let limits = &self.config.limits;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size((limits.max_request_header_bytes * 2).max(16 * 1024))
            .max_headers(500);
        builder
            .http2()
            .max_header_list_size(limits.max_request_header_bytes.min(u32::MAX as usize) as u32);
        // Boxed so that it can be dropped early, releasing the socket to the 408 answer.
        let mut conn = Box::pin(builder.serve_connection(io, service));
        let mut shutting_down = false;
        loop {
            let wake = self.next_check(&state);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        self.log_connection_error(&*e, client);
                    }
                    return;
                }
                _ = shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = state.wake.notified() => {}
                _ = tokio::time::sleep_until(wake.into()), if !shutting_down => {
                    match self.check(&state) {
                        Verdict::Fine => {}
                        Verdict::Idle => {
                            shutting_down = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        Verdict::SlowHead => {
                            // Keep a second handle on the socket to answer after hyper lets go of it.
                            #[cfg(unix)]
                            let answer_on = {
                                // SAFETY: `fd` belongs to the stream owned by `conn`, alive here.
                                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                                socket2::SockRef::from(&borrowed).try_clone().ok()
                            };
                            drop(conn);
                            #[cfg(unix)]
                            self.answer_slow_head(answer_on, client);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// When the watchdog should next look at the connection.
    fn next_check(&self, state: &ConnState) -> Instant {
        let limits = &self.config.limits;
        if state.h2.load(Ordering::Relaxed) {
            return Instant::now() + limits.client_idle_timeout;
        }
        if let Some(t) = *state.head_started.lock().unwrap() {
            return t + limits.request_header_timeout;
        }
        if state.inflight.load(Ordering::Acquire) > 0 {
            return Instant::now() + limits.client_idle_timeout;
        }
        let idle_since = *state.idle_since.lock().unwrap();
        // A connection that never sent a byte gets the head deadline, not the keep-alive one.
        if state.requests.load(Ordering::Relaxed) == 0 {
            idle_since + limits.request_header_timeout
        } else {
            idle_since + limits.client_idle_timeout
        }
    }

    fn check(&self, state: &ConnState) -> Verdict {
        let now = Instant::now();
        if state.h2.load(Ordering::Relaxed) {
            return Verdict::Fine;
        }
        if let Some(t) = *state.head_started.lock().unwrap() {
            if now >= t + self.config.limits.request_header_timeout
                && state.inflight.load(Ordering::Acquire) == 0
            {
                return Verdict::SlowHead;
            }
            return Verdict::Fine;
        }
        if state.inflight.load(Ordering::Acquire) == 0 && now >= self.next_check(state) {
            return Verdict::Idle;
        }
        Verdict::Fine
    }

    /// Answers a request head that did not arrive in time with a 408 page, then closes.
    #[cfg(unix)]
    fn answer_slow_head(&self, socket: Option<socket2::Socket>, client: SocketAddr) {
        let timeout = self.config.limits.request_header_timeout;
        let failure = Failure::client(
            ClientFault::Slow,
            format!("the request head did not arrive within {timeout:?}"),
        );
        let request_id = crate::headers::new_request_id();
        self.logger.gateway_error(&request_id, &failure, 0, None);
        let cx = PageContext {
            server_name: &self.config.server_name,
            request_id: &request_id,
            method: &Method::GET,
            attempts: 0,
            format: page::Format::Text,
            template: None,
        };
        let resp = page::error_response(&failure, &cx);
        let mut raw = format!("HTTP/1.1 {}\r\n", resp.status());
        for (k, v) in resp.headers() {
            raw.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
        }
        let body = resp.body().full_bytes().unwrap_or_default();
        raw.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(&body);
        if let Some(s) = socket {
            // The send buffer of a connection that only received is empty: this small write fits.
            let _ = s.send(&bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        self.logger.access(&AccessRecord {
            client: Some(client),
            method: "-".into(),
            status: 408,
            bytes_out: body.len() as u64,
            request_id,
            cause: Some(failure.cause),
            phase: Some(failure.phase),
            gateway_error: true,
            proto: "HTTP/1.1",
            duration: timeout,
            ..AccessRecord::default()
        });
    }

    /// Logs a connection that hyper ended with an error, if it was the client's doing.
    fn log_connection_error(&self, e: &(dyn std::error::Error + 'static), client: SocketAddr) {
        let Some((failure, status)) = net::classify_client_error(e) else {
            return;
        };
        let request_id = crate::headers::new_request_id();
        self.logger.gateway_error(&request_id, &failure, 0, status);
        if let Some(status) = status {
            self.logger.access(&AccessRecord {
                client: Some(client),
                method: "-".into(),
                status,
                request_id,
                cause: Some(failure.cause),
                phase: Some(failure.phase),
                gateway_error: true,
                proto: "HTTP/1.1",
                ..AccessRecord::default()
            });
        }
    }
}

enum Verdict {
    Fine,
    Idle,
    SlowHead,
}
