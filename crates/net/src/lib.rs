//! The one upstream connector: resolve, TCP connect, HTTP/1.1 handshake, and one exchange with
//! separate deadlines per phase.
//!
//! This is the only crate that looks at `io::ErrorKind`, errno values and hyper's error
//! predicates; everything above it sees a [`Failure`] with a cause and a phase. The connection's
//! I/O is wrapped in a byte counter, so a failure knows whether the upstream had started to answer
//! (`closed` with 0 bytes is the keep-alive race; `closed` mid-header is a crash).
//!
//! Pooling lives in `crates/upstream`; this crate hands out single connections.

pub mod certs;
mod classify;
pub mod clock;
pub mod dns;
mod h1;
pub mod hop;
mod io;
pub mod probe;
pub mod resolver;
pub mod tls;
pub mod upstream_tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, Failure, Phase};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;

pub use classify::{classify_client_error, classify_connect_error, classify_hyper_error};
pub use io::{add_alone, CountingIo, IoStats};

/// Boxed error type for bodies that cross the gateway.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Deadlines of one upstream exchange, one per phase.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    pub connect: Duration,
    /// Longest pause in writing the request.
    pub send: Duration,
    /// From the request fully written to the response head.
    pub response: Duration,
    /// Longest pause between two reads of the response body.
    pub body_idle: Duration,
}

/// Options for opening a connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// Largest response header section accepted from the upstream.
    pub max_response_header_bytes: usize,
    /// Most header lines accepted in a response head.
    pub max_response_headers: usize,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub h2: bool,
    /// TLS to the endpoint, when the upstream has a `[tls]` table.
    pub tls: Option<Arc<upstream_tls::UpstreamTls>>,
}

/// Resolves `endpoint` (`ip:port` or `name:port`) to addresses.
pub async fn resolve(endpoint: &str) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(addr) = endpoint.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    match tokio::net::lookup_host(endpoint).await {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(Failure::new(Cause::Dns, Phase::Resolve).with_detail("the name has no address"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(Failure::new(Cause::Dns, Phase::Resolve).with_detail(e.to_string())),
    }
}

enum Sender {
    /// Driven from the request's task; see `h1.rs`.
    H1(h1::H1),
    H2(http2::SendRequest<RequestBody>),
}

/// The body of an upstream response. Its errors are failures in phase `read_body`, classified
/// but without the exchange's facts ([`body_failure`] adds them).
pub struct UpstreamBody {
    inner: BodyInner,
}

pub use h1::Upgraded;

impl UpstreamBody {
    /// After an HTTP/1.1 `101 Switching Protocols`: the connection in the new protocol.
    pub fn into_upgraded(self) -> Option<Upgraded> {
        match self.inner {
            BodyInner::H1(b) => b.into_upgraded(),
            BodyInner::H2(_) => None,
        }
    }
}

enum BodyInner {
    H1(h1::H1Body),
    H2(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Failure>>> {
        match &mut self.inner {
            BodyInner::H1(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| classify::h1_body_error(&e)))),
            BodyInner::H2(b) => std::pin::Pin::new(b).poll_frame(cx).map(|o| {
                o.map(|r| r.map_err(|e| classify_hyper_error(&e, Phase::ReadBody, false)))
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            BodyInner::H1(b) => b.is_end_stream(),
            BodyInner::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::H1(b) => b.size_hint(),
            BodyInner::H2(b) => b.size_hint(),
        }
    }
}

/// One connection to an upstream endpoint: HTTP/1.1 (one request at a time) or HTTP/2 (shared by
/// many requests at once, see [`Conn::share`]). Boxed: a request moves its connection half a
/// dozen times (checkout, exchange, response body, pool), and a pointer moves for less than
/// its 160 bytes.
pub struct Conn(Box<ConnFields>);

/// What a [`Conn`] holds.
pub struct ConnFields {
    sender: Sender,
    stats: Arc<IoStats>,
    /// HTTP/2: when the connection task ended (the upstream or the gateway closed it).
    closed_at: Arc<std::sync::Mutex<Option<Instant>>>,
    /// The largest response head accepted and the most header lines, for the detail of a
    /// `response_too_large`.
    head_limit: usize,
    header_lines: usize,
    pub addr: SocketAddr,
    pub created: Instant,
    /// Requests sent on this connection before the current one.
    pub uses: u32,
    pub last_used: Instant,
    /// The send and response deadlines of this connection's exchanges: one timer for its
    /// life, moved on in place from one exchange to the next (made at the first).
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl std::ops::Deref for Conn {
    type Target = ConnFields;
    fn deref(&self) -> &ConnFields {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnFields {
        &mut self.0
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .field("uses", &self.uses)
            .finish()
    }
}

/// Opens a TCP connection to `addr` and performs the HTTP handshake.
pub async fn connect(addr: SocketAddr, opts: &ConnectOptions) -> Result<Conn, Failure> {
    connect_host(addr, "", opts).await
}

/// Opens a connection to `addr`, an address of the endpoint whose host is `host`: TCP, then
/// TLS when the upstream has it (`host`, or the configured SNI, is the name checked), then the
/// HTTP handshake. The connect deadline covers TCP and TLS together.
pub async fn connect_host(
    addr: SocketAddr,
    host: &str,
    opts: &ConnectOptions,
) -> Result<Conn, Failure> {
    let started = Instant::now();
    let stream = probe::tcp_connect(addr, opts.connect_timeout).await?;
    match &opts.tls {
        Some(tls) => {
            let left = opts.connect_timeout.saturating_sub(started.elapsed());
            let stream = tls
                .connect(stream, host, left)
                .await
                .map_err(|f| f.with_endpoint(addr.to_string()))?;
            handshake(stream, addr, opts).await
        }
        None => handshake(stream, addr, opts).await,
    }
}

/// The HTTP handshake (HTTP/1.1, or h2c with prior knowledge) over an open stream to `addr`,
/// with the stream's bytes counted from here on.
pub(crate) async fn handshake<IO>(
    io: IO,
    addr: SocketAddr,
    opts: &ConnectOptions,
) -> Result<Conn, Failure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let stats = Arc::new(IoStats::default());
    let closed_at = Arc::new(std::sync::Mutex::new(None));
    let mark = closed_at.clone();
    let handshake_failed = |e: hyper::Error| {
        classify_hyper_error(&e, Phase::Connect, false).with_endpoint(addr.to_string())
    };
    let sender = if opts.h2 {
        let io = TokioIo::new(CountingIo::new(io, stats.clone()));
        let (sender, conn) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .max_header_list_size(opts.max_response_header_bytes.min(u32::MAX as usize) as u32)
            .handshake(io)
            .await
            .map_err(handshake_failed)?;
        tokio::spawn(async move {
            let _ = conn.await;
            *mark.lock().unwrap() = Some(Instant::now());
        });
        Sender::H2(sender)
    } else {
        // The head limit is exact: a head of the limit is read, one byte more is too large.
        let io = CountingIo::new(io, stats.clone());
        Sender::H1(h1::H1::new(
            Box::new(io),
            opts.max_response_header_bytes,
            opts.max_response_headers,
        ))
    };
    let now = Instant::now();
    Ok(Conn(Box::new(ConnFields {
        sender,
        stats,
        closed_at,
        head_limit: opts.max_response_header_bytes,
        header_lines: opts.max_response_headers.max(100),
        addr,
        created: now,
        uses: 0,
        last_used: now,
        timer: None,
    })))
}

impl Conn {
    /// True when the connection can carry another request right now.
    pub fn is_open(&self) -> bool {
        match &self.sender {
            Sender::H1(c) => c.is_open(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// When the upstream (or the gateway) closed this connection, if it is closed.
    pub fn closed_at(&self) -> Option<Instant> {
        match &self.sender {
            Sender::H1(c) => c.closed_at(),
            Sender::H2(_) => *self.closed_at.lock().unwrap(),
        }
    }

    /// Takes the connection back from a response body that was read to its end, so that it can
    /// carry another request; a body that did not end cleanly leaves the connection closed.
    pub fn rejoin(&mut self, body: &mut UpstreamBody) {
        if let (Sender::H1(c), BodyInner::H1(b)) = (&mut self.sender, &mut body.inner) {
            c.rejoin(b);
        }
    }

    /// Another handle on a shared HTTP/2 connection; `None` for HTTP/1.1.
    pub fn share(&self) -> Option<Conn> {
        match &self.sender {
            Sender::H2(s) => Some(Conn(Box::new(ConnFields {
                sender: Sender::H2(s.clone()),
                stats: self.stats.clone(),
                closed_at: self.closed_at.clone(),
                head_limit: self.head_limit,
                header_lines: self.header_lines,
                addr: self.addr,
                created: self.created,
                uses: self.uses,
                last_used: self.last_used,
                timer: None,
            }))),
            Sender::H1(_) => None,
        }
    }

    /// True when the connection can take a request at once (its last exchange is over and,
    /// for HTTP/1.1, the upstream has not closed it).
    pub fn is_ready(&mut self) -> bool {
        match &mut self.sender {
            Sender::H1(c) => c.check(),
            Sender::H2(s) => s.is_ready(),
        }
    }

    /// Waits until the connection is ready for a request, at most `within`.
    pub async fn ready(&mut self, within: Duration) -> bool {
        let ready = async {
            match &mut self.sender {
                Sender::H1(c) => {
                    if c.check() {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
                Sender::H2(s) => s.ready().await.map_err(|_| ()),
            }
        };
        matches!(tokio::time::timeout(within, ready).await, Ok(Ok(())))
    }

    pub fn stats(&self) -> &Arc<IoStats> {
        &self.stats
    }

    /// Sends the request (`head` and `body`) and waits for the response head, applying the
    /// send and response deadlines. HTTP/1.1 writes the head from the borrowed parts, so a
    /// request that may be retried needs no copy of it; HTTP/2 takes a copy.
    ///
    /// On success the connection is handed back with the response body, which releases it when
    /// the body has been read to its end.
    pub async fn send(
        self,
        head: &http::request::Parts,
        body: RequestBody,
        deadlines: &Deadlines,
    ) -> Result<(Response<UpstreamBody>, Conn, Exchange), (Failure, Exchange)> {
        self.send_with(head, &[], body, deadlines).await
    }

    /// [`Conn::send`], with `extra` header lines after those of `head`: what the gateway adds
    /// to every request goes out without being put into the request's header map.
    pub async fn send_with(
        mut self,
        head: &http::request::Parts,
        extra: &[(&http::HeaderName, &http::HeaderValue)],
        body: RequestBody,
        deadlines: &Deadlines,
    ) -> Result<(Response<UpstreamBody>, Conn, Exchange), (Failure, Exchange)> {
        let reused = self.uses > 0;
        self.uses += 1;
        let now = clock::now();
        self.last_used = now;
        // An empty body is sent with the head: the response deadline runs from the start.
        let progress = body.progress.clone();
        let sent_whole_at = progress.is_none().then_some(now);
        let exchange = Exchange {
            reused,
            read_at_start: self.stats.read(),
            written_at_start: self.stats.written(),
            started: now,
            stats: self.stats.clone(),
            head: hop::HeadFacts::default(),
        };
        let mut last_written = exchange.stats.written();
        // Only a body still being sent needs the send deadline; with none, the response
        // deadline is the timer's, and no clock is read for this.
        let sending_from = if progress.is_some() {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::from_std(now)
        };
        let mut send_deadline = sending_from + deadlines.send;
        let mut timer = self
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(send_deadline)));
        let (head_limit, header_lines) = (self.head_limit, self.header_lines);
        let result = {
            // Either protocol's future, pinned in place: no allocation per exchange.
            use tokio_util::either::Either;
            let fut = match &mut self.sender {
                Sender::H1(c) => Either::Left(async move {
                    let (resp, facts) =
                        c.exchange(head, extra, body).await.map_err(SendError::H1)?;
                    Ok((
                        resp.map(|b| UpstreamBody {
                            inner: BodyInner::H1(b),
                        }),
                        facts,
                    ))
                }),
                Sender::H2(s) => Either::Right(async move {
                    let mut head = head.clone();
                    for (name, value) in extra {
                        head.headers.append(*name, (*value).clone());
                    }
                    let req = Request::from_parts(head, body);
                    let resp = s.send_request(req).await.map_err(SendError::H2)?;
                    let facts = hop::HeadFacts::of(resp.headers());
                    Ok((
                        resp.map(|b| UpstreamBody {
                            inner: BodyInner::H2(b),
                        }),
                        facts,
                    ))
                }),
            };
            let mut fut = std::pin::pin!(fut);
            loop {
                let response_deadline = progress
                    .as_ref()
                    .map_or(sent_whole_at, |p| p.finished_at())
                    .map(|at| tokio::time::Instant::from_std(at) + deadlines.response);
                let body_sent = async {
                    match &progress {
                        Some(p) => p.done.notified().await,
                        None => std::future::pending().await,
                    }
                };
                let wake = match response_deadline {
                    Some(d) => d,
                    None => send_deadline,
                };
                // A later deadline than the timer's (the usual case: the connection's last
                // exchange armed it) leaves it in place; it fires early, is found early below,
                // and only then moves. Re-arming costs a trip into the timer wheel.
                if wake < timer.deadline() || timer.is_elapsed() {
                    timer.as_mut().reset(wake);
                }
                // In the order written, not a random one: no random number a poll, and the
                // answer wins over a deadline reached in the same turn.
                tokio::select! {
                    biased;
                    // The body was sent whole: from now on the response deadline applies.
                    _ = body_sent, if response_deadline.is_none() => continue,
                    r = &mut fut => break r.map_err(|e| {
                        let finished = progress.as_ref().is_none_or(|p| p.is_finished());
                        let phase = if finished { Phase::ReadHead } else { Phase::SendRequest };
                        if let Some(p) = progress.as_ref().filter(|p| p.client_failed()) {
                            // The client's body broke off; the upstream is not to blame.
                            return p.client_failure();
                        }
                        let mut f = match &e {
                            SendError::H1(e) => classify::h1_error(e, phase, reused),
                            SendError::H2(e) => classify_hyper_error(e, phase, reused),
                        };
                        if f.cause == Cause::ResponseTooLarge {
                            f.detail = Some(format!(
                                "the upstream's response head exceeds the limit of {} bytes or {} header lines (max_response_header_bytes, max_response_headers)",
                                head_limit,
                                header_lines
                            ));
                        }
                        f
                    }),
                    _ = timer.as_mut() => {
                        let now = tokio::time::Instant::now();
                        if now < wake {
                            // Armed for an earlier exchange: set to this one's deadline above.
                            continue;
                        }
                        if let Some(d) = response_deadline {
                            if now >= d {
                                break Err(Failure::new(Cause::Timeout, Phase::ReadHead)
                                    .with_detail(format!("no response head within {:?} of the request", deadlines.response)));
                            }
                            continue;
                        }
                        let written = exchange.stats.written();
                        if written != last_written {
                            last_written = written;
                            send_deadline = now + deadlines.send;
                            continue;
                        }
                        // Nothing moved: either the client stopped sending its body (its fault, 408)
                        // or the upstream stopped reading it (timeout in send_request).
                        if let Some(p) = progress.as_ref().filter(|p| p.client_failed()) {
                            break Err(p.client_failure());
                        }
                        if progress.as_ref().is_some_and(|p| p.waiting_on_client()) {
                            break Err(Failure::client(
                                cause::ClientFault::Slow,
                                format!("the client sent no request body bytes for {:?}", deadlines.send),
                            ));
                        }
                        break Err(Failure::new(Cause::Timeout, Phase::SendRequest)
                            .with_detail(format!("the upstream accepted no request bytes for {:?}", deadlines.send)));
                    }
                }
            }
        };
        self.timer = Some(timer);
        match result {
            Ok((resp, facts)) => {
                let mut exchange = exchange;
                exchange.head = facts;
                Ok((resp, self, exchange))
            }
            Err(mut f) => {
                exchange.fill(&mut f);
                f.endpoint = Some(self.addr.to_string());
                Err((f, exchange))
            }
        }
    }
}

/// What ended an exchange before its response head, by protocol.
enum SendError {
    H1(h1::H1Error),
    H2(hyper::Error),
}

/// Facts of one exchange on a connection, for the failure and the log.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub reused: bool,
    read_at_start: u64,
    written_at_start: u64,
    pub started: Instant,
    stats: Arc<IoStats>,
    /// What the response head holds of framing and hop-by-hop names, once it has arrived.
    pub head: hop::HeadFacts,
}

impl Exchange {
    pub fn response_bytes(&self) -> u64 {
        self.stats.read() - self.read_at_start
    }

    pub fn request_bytes(&self) -> u64 {
        self.stats.written() - self.written_at_start
    }

    /// Copies this exchange's facts into `f`.
    pub fn fill(&self, f: &mut Failure) {
        if f.cause != Cause::ClientAborted || f.phase != Phase::Client {
            f.reused = self.reused;
        }
        f.request_bytes = self.request_bytes();
        f.response_bytes = self.response_bytes();
    }
}

/// Shared progress of a request body: how the gateway knows the send phase is over.
#[derive(Debug, Default)]
pub struct BodyProgress {
    finished: AtomicBool,
    finished_at: std::sync::Mutex<Option<Instant>>,
    client_failed: AtomicBool,
    /// The last poll of the client's body found nothing yet: the gateway waits on the client.
    waiting_on_client: AtomicBool,
    bytes: AtomicU64,
    /// What broke the client's body, once it broke.
    client_error: std::sync::Mutex<Option<String>>,
    /// Woken when the body has been sent whole, so the response deadline starts on time.
    done: tokio::sync::Notify,
}

impl BodyProgress {
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
    pub fn finished_at(&self) -> Option<Instant> {
        *self.finished_at.lock().unwrap()
    }
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Acquire)
    }
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Acquire)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// The failure for a request body that broke off on the client's side: a `400`, whether the
    /// chunked framing was broken or the body ended before its length (the client closed or
    /// half-closed), as nginx also answers; it is the client's doing, never the upstream's.
    pub fn client_failure(&self) -> Failure {
        let why = self
            .client_error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default();
        Failure::client(
            cause::ClientFault::Malformed,
            format!("the client's request body broke off: {why}"),
        )
    }
    fn finish(&self) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            *self.finished_at.lock().unwrap() = Some(Instant::now());
            self.done.notify_one();
        }
    }
}

/// A request body: in memory (most requests, whose bodies are read whole or are empty), or
/// streamed from the client. The one in memory is not boxed.
enum InnerBody {
    Full(http_body_util::Full<Bytes>),
    Boxed(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl InnerBody {
    fn poll_frame(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            InnerBody::Full(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            InnerBody::Boxed(b) => std::pin::Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InnerBody::Full(b) => b.is_end_stream(),
            InnerBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InnerBody::Full(b) => b.size_hint(),
            InnerBody::Boxed(b) => b.size_hint(),
        }
    }
}

/// The request body as it goes upstream, with its progress shared with the exchange.
pub struct RequestBody {
    inner: InnerBody,
    progress: Option<Arc<BodyProgress>>,
}

impl RequestBody {
    pub fn new<B>(body: B) -> RequestBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        RequestBody::with(InnerBody::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    /// A body held whole in memory (empty for most requests).
    pub fn full(bytes: Bytes) -> RequestBody {
        RequestBody::with(InnerBody::Full(http_body_util::Full::new(bytes)))
    }

    fn with(inner: InnerBody) -> RequestBody {
        // An empty body is sent whole the moment its head is: it has no progress to share.
        let progress = (!inner.is_end_stream()).then(|| Arc::new(BodyProgress::default()));
        RequestBody { inner, progress }
    }

    pub fn empty() -> RequestBody {
        RequestBody::full(Bytes::new())
    }

    /// How far the body has been sent; `None` for an empty body.
    pub fn progress(&self) -> Option<&Arc<BodyProgress>> {
        self.progress.as_ref()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = self.inner.poll_frame(cx);
        let Some(progress) = &self.progress else {
            return r;
        };
        match &r {
            std::task::Poll::Ready(None) => progress.finish(),
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    progress.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if self.inner.is_end_stream() {
                    progress.finish();
                }
            }
            std::task::Poll::Ready(Some(Err(e))) => {
                *progress.client_error.lock().unwrap() = Some(error_chain(e.as_ref()));
                progress.client_failed.store(true, Ordering::Release)
            }
            std::task::Poll::Pending => progress.waiting_on_client.store(true, Ordering::Release),
        }
        if r.is_ready() {
            progress.waiting_on_client.store(false, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An error and its sources, as one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// An error from reading an upstream response body (phase `read_body`), with the exchange's
/// facts added.
pub fn body_failure(mut f: Failure, exchange: &Exchange) -> Failure {
    exchange.fill(&mut f);
    f
}
