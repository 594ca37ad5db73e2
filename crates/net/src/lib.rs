//! The one upstream connector: resolve, TCP connect, HTTP/1.1 handshake, and one exchange with
//! separate deadlines per phase.
//!
//! This is the only crate that looks at `io::ErrorKind`, errno values and hyper's error
//! predicates; everything above it sees a [`Failure`] with a cause and a phase. The connection's
//! I/O is wrapped in a byte counter, so a failure knows whether the upstream had started to answer
//! (`closed` with 0 bytes is the keep-alive race; `closed` mid-header is a crash).
//!
//! Pooling lives in `crates/upstream`; this crate hands out single connections.

mod classify;
pub mod dns;
mod io;
pub mod probe;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, Failure, Phase};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

pub use classify::{classify_client_error, classify_connect_error, classify_hyper_error};
pub use io::{CountingIo, IoStats};

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
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    /// Largest response header section accepted from the upstream.
    pub max_response_header_bytes: usize,
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

/// One HTTP/1.1 connection to an upstream endpoint.
pub struct Conn {
    sender: http1::SendRequest<RequestBody>,
    stats: Arc<IoStats>,
    pub addr: SocketAddr,
    pub created: Instant,
    /// Requests sent on this connection before the current one.
    pub uses: u32,
    pub last_used: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .field("uses", &self.uses)
            .finish()
    }
}

/// Opens a TCP connection to `addr` and performs the HTTP/1.1 handshake.
pub async fn connect(addr: SocketAddr, opts: &ConnectOptions) -> Result<Conn, Failure> {
    let stream = match tokio::time::timeout(
        opts.connect_timeout,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(classify_connect_error(&e).with_endpoint(addr.to_string())),
        Err(_) => {
            return Err(Failure::new(Cause::Timeout, Phase::Connect)
                .with_endpoint(addr.to_string())
                .with_detail(format!("no connection within {:?}", opts.connect_timeout)))
        }
    };
    // Latency over throughput: requests are small and answered in turn.
    let _ = stream.set_nodelay(true);
    let stats = Arc::new(IoStats::default());
    let io = TokioIo::new(CountingIo::new(stream, stats.clone()));
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(opts.max_response_header_bytes.max(8192))
        .handshake(io)
        .await
        .map_err(|e| {
            classify_hyper_error(&e, Phase::Connect, &stats, false).with_endpoint(addr.to_string())
        })?;
    tokio::spawn(async move {
        // The error, if any, also reaches the pending request, which classifies it.
        let _ = conn.await;
    });
    let now = Instant::now();
    Ok(Conn {
        sender,
        stats,
        addr,
        created: now,
        uses: 0,
        last_used: now,
    })
}

impl Conn {
    /// True when the connection can carry another request right now.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Waits until the connection is ready for a request, at most `within`.
    pub async fn ready(&mut self, within: Duration) -> bool {
        matches!(
            tokio::time::timeout(within, self.sender.ready()).await,
            Ok(Ok(()))
        )
    }

    pub fn stats(&self) -> &Arc<IoStats> {
        &self.stats
    }

    /// Sends `req` and waits for the response head, applying the send and response deadlines.
    ///
    /// On success the connection is handed back with the response body, which releases it when
    /// the body has been read to its end.
    pub async fn send(
        mut self,
        req: Request<RequestBody>,
        deadlines: &Deadlines,
    ) -> Result<(Response<Incoming>, Conn, Exchange), (Failure, Exchange)> {
        let reused = self.uses > 0;
        self.uses += 1;
        self.last_used = Instant::now();
        let progress = req.body().progress.clone();
        let exchange = Exchange {
            reused,
            read_at_start: self.stats.read(),
            written_at_start: self.stats.written(),
            started: Instant::now(),
            stats: self.stats.clone(),
        };
        let fut = self.sender.send_request(req);
        tokio::pin!(fut);
        let mut last_written = exchange.stats.written();
        let mut send_deadline = tokio::time::Instant::now() + deadlines.send;
        let result = loop {
            let response_deadline = progress
                .finished_at()
                .map(|at| tokio::time::Instant::from_std(at) + deadlines.response);
            let wake = match response_deadline {
                Some(d) => d,
                None => send_deadline,
            };
            tokio::select! {
                r = &mut fut => break r.map_err(|e| {
                    let phase = if progress.is_finished() { Phase::ReadHead } else { Phase::SendRequest };
                    if progress.client_failed() {
                        // The client's body broke off; the upstream is not to blame.
                        return Failure::new(Cause::ClientAborted, Phase::Client).with_detail("the client's request body ended early");
                    }
                    classify_hyper_error(&e, phase, &exchange.stats, reused)
                }),
                _ = tokio::time::sleep_until(wake) => {
                    let now = tokio::time::Instant::now();
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
                    break Err(Failure::new(if progress.client_failed() { Cause::ClientAborted } else { Cause::Timeout }, Phase::SendRequest)
                        .with_detail(format!("no request bytes could be written for {:?}", deadlines.send)));
                }
            }
        };
        match result {
            Ok(resp) => Ok((resp, self, exchange)),
            Err(mut f) => {
                exchange.fill(&mut f);
                f.endpoint = Some(self.addr.to_string());
                Err((f, exchange))
            }
        }
    }
}

/// Facts of one exchange on a connection, for the failure and the log.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub reused: bool,
    read_at_start: u64,
    written_at_start: u64,
    pub started: Instant,
    stats: Arc<IoStats>,
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
    bytes: AtomicU64,
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
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn finish(&self) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            *self.finished_at.lock().unwrap() = Some(Instant::now());
        }
    }
}

type InnerBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The body of a request on its way upstream: tracks when it ended and whether the client broke
/// it off, so that the phase of a failure and its side are known.
pub struct RequestBody {
    inner: InnerBody,
    progress: Arc<BodyProgress>,
}

impl RequestBody {
    pub fn new<B>(body: B) -> RequestBody
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        let progress = Arc::new(BodyProgress::default());
        let inner = body.map_err(Into::into).boxed_unsync();
        if inner.is_end_stream() {
            progress.finish();
        }
        RequestBody { inner, progress }
    }

    pub fn empty() -> RequestBody {
        RequestBody::new(http_body_util::Empty::<Bytes>::new())
    }

    pub fn progress(&self) -> &Arc<BodyProgress> {
        &self.progress
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            std::task::Poll::Ready(None) => self.progress.finish(),
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.progress
                        .bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if self.inner.is_end_stream() {
                    self.progress.finish();
                }
            }
            std::task::Poll::Ready(Some(Err(_))) => {
                self.progress.client_failed.store(true, Ordering::Release)
            }
            std::task::Poll::Pending => {}
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

/// Classifies an error from reading an upstream response body (phase `read_body`).
pub fn body_failure(err: &hyper::Error, exchange: &Exchange) -> Failure {
    let mut f = classify_hyper_error(err, Phase::ReadBody, &exchange.stats, exchange.reused);
    exchange.fill(&mut f);
    f
}
