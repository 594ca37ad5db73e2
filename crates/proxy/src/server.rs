//! The client side: accept loop, one task per connection, client timeouts, graceful shutdown.
//!
//! Each connection is served by hyper: HTTP/2 when its first bytes are the HTTP/2 preface (prior
//! knowledge), HTTP/1.1 otherwise. The protocol is told apart here rather than by hyper-util, so
//! that bytes that are neither (an HTTP/2 client speaking to the wrong port, say) are closed
//! without an HTTP/1 answer that such a client would misread as a frame, and so that hyper's
//! HTTP/1 builder gets the exact header-size limit. A small watchdog per HTTP/1 connection
//! enforces the request-head deadline with a real `408` page (hyper alone would close silently)
//! and closes idle keep-alive connections. The raw request bytes pass through the
//! [`HeadScanner`], which notices what hyper's parsed request no longer shows. Errors hyper
//! answers by itself (malformed requests) are logged here.

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use cause::{ClientFault, Failure};
use http::Method;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::conn::{ConnState, Edge};
use crate::log::AccessRecord;
use crate::page::{self, PageContext};
use crate::prescan::{Finding, HeadScanner};
use crate::{Gateway, Live};

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say it speaks.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    Http1,
    Http2,
    /// Neither an HTTP/1 request line nor the HTTP/2 preface.
    Neither(&'static str),
}

/// Tells HTTP/2 with prior knowledge from HTTP/1 by the first bytes; `None` while they are a
/// prefix of the preface and more must be read.
fn sniff(first: &[u8]) -> Option<Sniffed> {
    if first.len() >= H2_PREFACE.len() {
        if first.starts_with(H2_PREFACE) {
            return Some(Sniffed::Http2);
        }
    } else if H2_PREFACE.starts_with(first) {
        return None;
    }
    if first.starts_with(b"PRI ") {
        return Some(Sniffed::Neither("an HTTP/2 preface that is not valid"));
    }
    // A complete first line of three or more words whose last is not an HTTP version is neither
    // HTTP/1 nor HTTP/2. Shorter lines (HTTP/0.9 style) are left to hyper's 400.
    if let Some(end) = memchr::memchr(b'\n', first) {
        let mut words = first[..end]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let count = words.clone().count();
        if count >= 3
            && !words
                .nth(count - 1)
                .is_some_and(|w| w.starts_with(b"HTTP/"))
        {
            return Some(Sniffed::Neither(
                "a first line that is neither an HTTP/1 request line nor the HTTP/2 preface",
            ));
        }
    }
    Some(Sniffed::Http1)
}

/// A client connection as accepted, or with TLS terminated.
enum ClientStream {
    Plain(TcpStream),
    // Boxed: rustls's connection state would otherwise make every plain connection larger.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The client connection's I/O: replays the bytes read to tell the protocol, reports arriving
/// bytes to the watchdog, and shows HTTP/1 bytes to the head scanner.
struct ClientIo {
    stream: ClientStream,
    state: Arc<ConnState>,
    replay: Bytes,
    scan: Option<HeadScanner>,
}

impl ClientIo {
    fn scan(&mut self, bytes: &[u8]) {
        if let Some(scan) = &mut self.scan {
            match scan.feed(bytes) {
                Some(Finding::LengthAndCoding { head }) => {
                    self.state.cl_and_te.store(head, Ordering::Relaxed)
                }
                Some(Finding::TooLarge { head, bytes })
                    if self.state.oversized.load(Ordering::Relaxed) == u64::MAX =>
                {
                    self.state.oversized_bytes.store(bytes, Ordering::Relaxed);
                    self.state.oversized.store(head, Ordering::Relaxed);
                }
                Some(Finding::TooLarge { .. }) => {}
                None => {}
            }
            if !scan.following() {
                self.scan = None;
            }
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            if self.replay.is_empty() {
                // Let go of the sniffing buffer: an idle connection should hold only hyper's.
                self.replay = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived();
            let this = &mut *self;
            if this.scan.is_some() {
                let fresh = &buf.filled()[before..];
                this.scan(fresh);
            }
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
    /// Serves `listeners` until `shutdown` is cancelled, with this configuration for good (no
    /// reload): [`Live::serve`].
    pub async fn serve(self: Arc<Self>, listeners: Vec<TcpListener>, shutdown: CancellationToken) {
        Live::new(self, None).serve(listeners, shutdown).await;
    }

    /// Serves one client connection: the handshake and the protocol with this gateway's
    /// limits, each request with the gateway current when it starts.
    pub(crate) async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        edge: Arc<Edge>,
        client: SocketAddr,
        shutdown: CancellationToken,
        live: Arc<Live>,
    ) {
        #[cfg(unix)]
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let tls = edge.tls;
        let state = Arc::new(ConnState::new(edge, client));
        let limits = &self.config.limits;
        // A connection accepted just before a shutdown (or a binary upgrade) may have its
        // request on the way: it gets a short grace to send it, and that request is served.
        let grace = SHUTDOWN_HEAD_GRACE.min(limits.request_header_timeout);
        let mut stream = if tls {
            // Boxed, like the first read below: the task of every connection keeps room for
            // its largest wait for as long as the connection lives, idle or not.
            let handshake = Box::pin(self.tls_handshake(stream, client));
            match Box::pin(until_shutdown_then_grace(handshake, &shutdown, grace)).await {
                Some(Some(s)) => ClientStream::Tls(Box::new(s)),
                _ => return,
            }
        } else {
            ClientStream::Plain(stream)
        };
        // The first bytes tell the protocol. A connection that sends nothing within the head
        // deadline is closed silently, as an idle one would be.
        let read = tokio::time::timeout(
            limits.request_header_timeout,
            read_first(&mut stream, &state),
        );
        let first = match Box::pin(until_shutdown_then_grace(read, &shutdown, grace)).await {
            Some(Ok(Some(first))) => first,
            _ => return,
        };
        let protocol = sniff(&first).unwrap_or(Sniffed::Http1);
        if let Sniffed::Neither(what) = protocol {
            // An HTTP/1 400 would be read by an HTTP/2 client as the head of a huge frame.
            let failure = Failure::client(
                ClientFault::Malformed,
                format!("the connection began with {what}; closed without an answer"),
            );
            self.logger
                .gateway_error(&crate::headers::new_request_id(), &failure, 0, None);
            return;
        }
        let h2 = protocol == Sniffed::Http2;
        state.h2.store(h2, Ordering::Relaxed);
        // The gateway measures heads exactly itself, to answer an oversized one with its own
        // 431; hyper's parser stops heads that never end at twice the limit.
        let head_limit = limits.max_request_header_bytes;
        let backstop = (head_limit * 2).max(16 * 1024);
        let mut io = ClientIo {
            stream,
            state: state.clone(),
            replay: Bytes::new(),
            scan: (!h2).then(|| HeadScanner::new(head_limit, backstop)),
        };
        io.scan(&first);
        io.replay = first.freeze();
        let io = TokioIo::new(io);
        let svc_state = state.clone();
        let service = service_fn(move |req| {
            let n = svc_state.request_started();
            // The configuration in use when the request starts, to its end.
            let gw = live.current();
            let st = svc_state.clone();
            // Boxed before hyper sees it: hyper keeps room for the request future in every
            // connection, idle or not, and a box is all that room then holds.
            let handling = boxed_in_place(|| gw.handle(req, client, Some((st, n))));
            async move { Ok::<_, Infallible>(handling.await) }
        });
        if h2 {
            let conn = http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(limits.max_request_header_bytes.min(u32::MAX as usize) as u32)
                .serve_connection(io, service);
            self.watch(
                Box::pin(conn),
                |c| c.graceful_shutdown(),
                &state,
                client,
                shutdown,
                None,
            )
            .await;
        } else {
            let conn = http1::Builder::new()
                .max_header_size(backstop)
                .max_buf_size(backstop + 8 * 1024)
                // RFC 9112 §3 lets a server split the request line on any whitespace; the line
                // is written anew upstream, so no one behind the gateway sees the spaces.
                .allow_multiple_spaces_in_request_line_delimiters(true)
                .serve_connection(io, service)
                // A request that switches protocols (WebSocket) takes the connection over.
                .with_upgrades();
            // A 408 is written on the raw socket after hyper lets go of it: not possible through
            // TLS, where a late head only closes the connection (and is logged).
            #[cfg(unix)]
            let answer_fd = (!tls).then_some(fd);
            #[cfg(not(unix))]
            let answer_fd = None;
            self.watch(
                Box::pin(conn),
                |c| c.graceful_shutdown(),
                &state,
                client,
                shutdown,
                answer_fd,
            )
            .await;
        }
    }

    /// Drives a client connection until it ends, with the watchdog: the head deadline, the idle
    /// timeout and graceful shutdown.
    async fn watch<C>(
        &self,
        mut conn: Pin<Box<C>>,
        graceful: fn(Pin<&mut C>),
        state: &ConnState,
        client: SocketAddr,
        shutdown: CancellationToken,
        answer_fd: Option<i32>,
    ) where
        C: std::future::Future<Output = Result<(), hyper::Error>>,
    {
        let mut shutting_down = false;
        // During shutdown: until when a request head that had begun may still become a request.
        let mut held: Option<Instant> = None;
        let mut held_tick: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // One timer for the connection's life. A later deadline (the usual case: a request
        // ended, the idle deadline moves on) leaves it where it is: it fires early, the check
        // finds the connection fine and sets it to the deadline of then, so a busy connection
        // re-arms it about once an idle period rather than once a request. Only an earlier
        // deadline (a head started) or a timer that has fired re-arms it at once.
        let first = self
            .next_check(state)
            .unwrap_or_else(|| Instant::now() + self.config.limits.client_idle_timeout);
        let timer = tokio::time::sleep_until(first.into());
        tokio::pin!(timer);
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        // Woken by what ends a request outside this task (an upgraded connection's tunnel);
        // what happens inside the connection's own poll is looked at right after it.
        let notified = state.wake.notified();
        tokio::pin!(notified);
        // The shutdown, the wake-up and the timer are polled with a waker of their own, which
        // marks that one of them fired before it wakes this task: the turns that the
        // connection's own reads and writes cause (nearly all of them) do not poll the three
        // again. Each of them keeps the waker it was last polled with and wakes it when it fires.
        let mut marked: Option<(Arc<Marked>, Waker)> = None;
        loop {
            let turn = std::future::poll_fn(|cx| {
                // A task's waker does not change while it runs; should it, the three are
                // polled with a new one.
                if !marked
                    .as_ref()
                    .is_some_and(|(m, _)| m.task.will_wake(cx.waker()))
                {
                    let m = Arc::new(Marked {
                        fired: AtomicBool::new(true),
                        task: cx.waker().clone(),
                    });
                    marked = Some((m.clone(), Waker::from(m)));
                }
                let Some((mark, own)) = marked.as_ref() else {
                    return Poll::Pending;
                };
                // Looked at before it is cleared: nearly every turn finds it clear, and a load
                // is not a locked instruction. (Set right after the load, it wakes the task
                // again, and the next turn sees it.)
                let mut look =
                    mark.fired.load(Ordering::Acquire) && mark.fired.swap(false, Ordering::AcqRel);
                let mut own = Context::from_waker(own);
                // Whatever this turn returns for, the next one looks at the three again (a
                // new wake-up future, a timer set anew are polled before they can fire).
                let ready = |turn: Turn| {
                    mark.fired.store(true, Ordering::Release);
                    Poll::Ready(turn)
                };
                // Seen late by a request ending elsewhere, this only costs a needless
                // wake-up; the store that ends the poll is the one that must be ordered.
                state.polling.store(true, Ordering::Relaxed);
                let polled = {
                    // One clock read for all the work of this poll (`net::clock`).
                    let _turn = net::clock::Turn::start();
                    conn.as_mut().poll(cx)
                };
                state.polling.store(false, Ordering::SeqCst);
                if let Poll::Ready(r) = polled {
                    return Poll::Ready(Turn::Ended(r));
                }
                // The bytes and requests of this poll moved the deadline: the timer follows,
                // without a wake-up of its own. While a request is in flight there is none.
                if let Some(wake) = self.next_check(state) {
                    let wake = tokio::time::Instant::from_std(wake);
                    if wake < timer.deadline() || timer.is_elapsed() {
                        timer.as_mut().reset(wake);
                        look = true;
                    }
                }
                if held_tick.is_some() {
                    // Shutdown only: polled every turn, with the task's own waker.
                    if let Some(tick) = held_tick.as_mut() {
                        if tick.as_mut().poll(cx).is_ready() {
                            return ready(Turn::HeldTick);
                        }
                    }
                }
                if !look {
                    return Poll::Pending;
                }
                if !shutting_down && cancelled.as_mut().poll(&mut own).is_ready() {
                    return ready(Turn::Shutdown);
                }
                if notified.as_mut().poll(&mut own).is_ready() {
                    notified.set(state.wake.notified());
                    return ready(Turn::Woken);
                }
                if !shutting_down && timer.as_mut().poll(&mut own).is_ready() {
                    return ready(Turn::Timer);
                }
                Poll::Pending
            })
            .await;
            match turn {
                Turn::Ended(r) => {
                    if let Err(e) = r {
                        self.log_connection_error(&e, client);
                    }
                    return;
                }
                Turn::Shutdown => {
                    shutting_down = true;
                    // A head that has begun to arrive is let through (within a grace), so
                    // that the request it carries is answered, not cut off unanswered.
                    if state.head_started.is_some() {
                        let grace =
                            SHUTDOWN_HEAD_GRACE.min(self.config.limits.request_header_timeout);
                        held = Some(Instant::now() + grace);
                        held_tick = Some(Box::pin(tokio::time::sleep(HELD_TICK)));
                    } else {
                        graceful(conn.as_mut());
                    }
                }
                // Shutdown only: looks every few milliseconds whether the held head has become
                // a request (hyper disables keep-alive for it) or the grace is over.
                Turn::HeldTick => {
                    let started = !state.head_started.is_some();
                    if started || held.is_some_and(|t| Instant::now() >= t) {
                        held = None;
                        held_tick = None;
                        graceful(conn.as_mut());
                    } else if let Some(tick) = held_tick.as_mut() {
                        tick.as_mut().reset(tokio::time::Instant::now() + HELD_TICK);
                    }
                }
                Turn::Woken => {}
                Turn::Timer => {
                    match self.check(state) {
                        Verdict::Fine => {}
                        Verdict::Idle => {
                            shutting_down = true;
                            graceful(conn.as_mut());
                        }
                        Verdict::SlowHead => {
                            // Keep a second handle on the socket to answer after hyper lets go of it.
                            #[cfg(unix)]
                            let answer_on = answer_fd.and_then(|fd| {
                                // SAFETY: `fd` belongs to the stream owned by `conn`, alive here.
                                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                                socket2::SockRef::from(&borrowed).try_clone().ok()
                            });
                            drop(conn);
                            #[cfg(unix)]
                            self.answer_slow_head(answer_on, client);
                            return;
                        }
                    }
                    if !shutting_down {
                        // In flight, or fired early: look again when the connection's deadline
                        // comes, or after another idle period.
                        let now = Instant::now();
                        let next = match self.next_check(state) {
                            Some(t) if t > now => t,
                            _ => now + self.config.limits.client_idle_timeout,
                        };
                        timer.as_mut().reset(next.into());
                    }
                }
            }
        }
    }

    /// When the watchdog should next look at the connection; `None` while a request is in
    /// flight (its own deadlines apply) and on HTTP/2 (hyper keeps its streams).
    fn next_check(&self, state: &ConnState) -> Option<Instant> {
        let limits = &self.config.limits;
        if state.h2.load(Ordering::Relaxed) || state.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if let Some(t) = state.head_started.load() {
            return Some(t + limits.request_header_timeout);
        }
        let idle_since = state.idle_since();
        // A connection that never sent a byte gets the head deadline, not the keep-alive one.
        Some(if state.requests.load(Ordering::Relaxed) == 0 {
            idle_since + limits.request_header_timeout
        } else {
            idle_since + limits.client_idle_timeout
        })
    }

    fn check(&self, state: &ConnState) -> Verdict {
        let now = Instant::now();
        if state.h2.load(Ordering::Relaxed) {
            return Verdict::Fine;
        }
        if let Some(t) = state.head_started.load() {
            if now >= t + self.config.limits.request_header_timeout
                && state.inflight.load(Ordering::Acquire) == 0
            {
                return Verdict::SlowHead;
            }
            return Verdict::Fine;
        }
        if self.next_check(state).is_some_and(|t| now >= t) {
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
        let answer = self.raw_answer(&failure, None);
        if let Some(s) = socket {
            // The send buffer of a connection that only received is empty: this small write fits.
            let _ = s.send(&answer.bytes);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        self.log_raw_answer(answer, &failure, client, timeout);
    }

    /// A gateway-made answer written by the gateway itself rather than by hyper, as raw
    /// HTTP/1.1 bytes: the error page of `failure`, or its head with `text` (a line, the
    /// request id follows it) as the body. The gateway error is logged here.
    pub(crate) fn raw_answer(&self, failure: &Failure, text: Option<&str>) -> RawAnswer {
        let request_id = crate::headers::new_request_id();
        self.logger.gateway_error(&request_id, failure, 0, None);
        let cx = PageContext {
            server_name: &self.config.server_name,
            request_id: &request_id,
            method: &Method::GET,
            attempts: 0,
            format: page::Format::Text,
            template: None,
        };
        let resp = page::error_response(failure, &cx);
        let mut raw = format!("HTTP/1.1 {}\r\n", resp.status());
        for (k, v) in resp.headers() {
            raw.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
        }
        let body = match text {
            Some(t) => Bytes::from(format!(
                "{} {}\n\n{t}\n\nRequest id: {request_id}\nServer: {}\n",
                resp.status().as_u16(),
                resp.status().canonical_reason().unwrap_or(""),
                self.config.server_name
            )),
            None => resp.body().full_bytes().unwrap_or_default(),
        };
        if !resp.headers().contains_key(http::header::CONNECTION) {
            raw.push_str("connection: close\r\n");
        }
        raw.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(&body);
        RawAnswer {
            status: resp.status().as_u16(),
            body_len: body.len(),
            bytes,
            request_id,
        }
    }

    /// The access line of a [`RawAnswer`].
    pub(crate) fn log_raw_answer(
        &self,
        answer: RawAnswer,
        failure: &Failure,
        client: SocketAddr,
        duration: Duration,
    ) {
        self.logger.access(&AccessRecord {
            client: Some(client),
            method: crate::log::no_request_method(),
            status: answer.status,
            bytes_out: answer.body_len as u64,
            request_id: answer.request_id,
            cause: Some(failure.cause),
            phase: Some(failure.phase),
            gateway_error: true,
            proto: "HTTP/1.1",
            duration,
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
                method: crate::log::no_request_method(),
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

/// An answer the gateway writes on the socket itself.
pub(crate) struct RawAnswer {
    pub status: u16,
    pub body_len: usize,
    pub bytes: Vec<u8>,
    pub request_id: crate::log::Text,
}

/// The waker of a watchdog's own futures: it marks that one of them fired, then wakes the
/// connection's task.
struct Marked {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for Marked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// What woke a connection's watchdog.
enum Turn {
    /// The connection is over.
    Ended(Result<(), hyper::Error>),
    Shutdown,
    HeldTick,
    Woken,
    Timer,
}

/// During shutdown, how often a held request head is looked at.
const HELD_TICK: Duration = Duration::from_millis(5);

enum Verdict {
    Fine,
    Idle,
    SlowHead,
}

/// Reads a connection's first bytes, as many as it takes to tell the protocol. `None` when the
/// client closed first.
/// How long, once shutdown begins, a connection whose request has begun to arrive (or that was
/// just accepted) may take to complete the request head.
const SHUTDOWN_HEAD_GRACE: Duration = Duration::from_secs(1);

/// `make()`'s value, boxed: the value is written where the box points instead of built on the
/// stack and copied there (the request future is about 5 KiB, its useful part a few hundred
/// bytes when it starts).
fn boxed_in_place<T>(make: impl FnOnce() -> T) -> Pin<Box<T>> {
    let mut b = Box::<T>::new_uninit();
    b.write(make());
    // SAFETY: written on the line above.
    Box::into_pin(unsafe { b.assume_init() })
}

/// Runs `work` to its end; once `shutdown` is cancelled, only for `grace` more (`None` then).
async fn until_shutdown_then_grace<F: std::future::Future>(
    work: F,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => Some(out),
        _ = shutdown.cancelled() => tokio::time::timeout(grace, work).await.ok(),
    }
}

async fn read_first(stream: &mut ClientStream, state: &ConnState) -> Option<BytesMut> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {
                state.bytes_arrived();
                if sniff(&buf).is_some() {
                    return Some(buf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        let check = |first: &[u8], expect: Option<Sniffed>| {
            assert_eq!(sniff(first), expect, "{}", String::from_utf8_lossy(first));
        };
        check(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0",
            Some(Sniffed::Http2),
        );
        check(b"PRI * HTTP/2", None);
        check(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Some(Sniffed::Http1));
        check(b"GET  /x  HTTP/1.1\r\n", Some(Sniffed::Http1));
        check(b"G", Some(Sniffed::Http1));
        // HTTP/0.9 and other two-word lines are left to hyper's 400.
        check(b"GET /\r\n", Some(Sniffed::Http1));
        assert!(matches!(
            sniff(b"INVALID CONNECTION PREFACE\r\n\r\n"),
            Some(Sniffed::Neither(_))
        ));
        assert!(matches!(
            sniff(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),
            Some(Sniffed::Neither(_))
        ));
    }
}
