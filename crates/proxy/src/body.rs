//! Bodies that cross the gateway, and the request record that is logged when a response ends.
//!
//! A response body is either a page the gateway made or the upstream's body streamed through
//! frame by frame (never held whole). The streamed body applies the body-idle deadline, gives
//! the connection back to the pool once the body has been read to its end, and turns a failure
//! after the head into an error that makes hyper abort the client connection or stream, so the
//! client never sees a response that looks complete but is not.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, Failure, Phase};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use net::{BoxError, Conn, Exchange};
use upstream::{Endpoint, Upstream};

use crate::log::{AccessRecord, Logger};

/// Logged once, when the response is over (completed, aborted, or dropped by a departing client).
pub struct RequestLog {
    pub record: AccessRecord,
    pub started: Instant,
    pub logger: Arc<Logger>,
    /// Request body bytes read from the client, as counted while streaming it upstream.
    pub bytes_in: Option<Arc<net::BodyProgress>>,
    /// Set once the response was handed to the client side.
    pub responded: bool,
    pub attempts: u32,
    /// Decremented when the request ends, so the connection knows it is idle again.
    pub inflight: Option<Arc<crate::conn::ConnState>>,
    /// False for the placeholder left behind when the log moved into a response body.
    pub armed: bool,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if !self.responded {
            // The client left before any response: hyper dropped the request future.
            self.record.status = 499;
            self.record.cause = Some(Cause::ClientAborted);
            self.record.phase = Some(Phase::Client);
        }
        if let Some(p) = &self.bytes_in {
            self.record.bytes_in = p.bytes();
        }
        self.record.duration = net::clock::since(self.started);
        self.logger.access(&self.record);
        if let Some(state) = &self.inflight {
            state.request_done();
        }
    }
}

/// The pooled connection travelling with a streamed response body, and the in-flight slot it
/// holds until the body ends.
pub struct PoolLease {
    pub conn: Conn,
    pub upstream: Arc<Upstream>,
    pub endpoint: Arc<Endpoint>,
    /// The upstream's `Keep-Alive: timeout=`, in seconds.
    pub keep_alive: Option<u64>,
    pub slot: upstream::Slot,
    /// The response's framing was ambiguous: close the connection instead of pooling it.
    pub close: bool,
}

/// A response body towards the client.
pub struct ProxyBody {
    kind: Kind,
    /// Boxed: a response is moved a dozen times on its way through hyper, and the log is most
    /// of its size.
    log: Option<Box<RequestLog>>,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Box<Streamed>),
    /// A coalesced answer's body, read from its flight (`flight.rs`).
    Shared(Box<SharedBody>),
}

struct SharedBody {
    reader: crate::flight::Reader,
    /// The body's length, when its head gave one.
    length: Option<u64>,
    sent: u64,
    done: bool,
}

struct Streamed {
    incoming: net::UpstreamBody,
    /// Made at the first wait on the upstream: most bodies arrive with their head and never
    /// need it.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the current wait on the upstream began.
    idle_from: tokio::time::Instant,
    idle_timeout: Duration,
    /// The idle deadline runs only while the gateway waits on the upstream: a slow client that
    /// takes a while to ask for the next frame must not count against the upstream.
    waiting: bool,
    lease: Option<PoolLease>,
    exchange: Exchange,
    attempt_started: Instant,
    sent: u64,
    done: bool,
    /// What a look at the body before the head went out found: a first frame to send, or
    /// (`Some(None)`) the end of the body.
    early: Option<Option<Frame<Bytes>>>,
    /// A failure held back for one turn, so that what was relayed before it (the head, the
    /// body so far) is flushed to the client before the connection is aborted. (Boxed, as
    /// `fill`: rare, and every stream is made, moved and kept with room for them.)
    deferred: Option<Box<Failure>>,
    /// A copy of the body for the cache, as it passes.
    fill: Option<Box<Fill>>,
}

/// Copies a body as it streams to the client, for the cache: at the body's clean end, the
/// whole of it goes to `commit`; past `limit` bytes, or if the body breaks, nothing does.
pub(crate) struct Fill {
    chunks: Vec<Bytes>,
    size: usize,
    limit: usize,
    commit: Option<Box<dyn FnOnce(Bytes) + Send>>,
    _count: FillCount,
}

/// One fill counted in the cache's gauge while it lives.
pub(crate) struct FillCount(Arc<std::sync::atomic::AtomicUsize>);

impl FillCount {
    pub(crate) fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> FillCount {
        count.fetch_add(1, Ordering::Relaxed);
        FillCount(count.clone())
    }
}

impl Drop for FillCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Fill {
    pub(crate) fn new(
        limit: usize,
        commit: Box<dyn FnOnce(Bytes) + Send>,
        count: FillCount,
    ) -> Fill {
        Fill {
            chunks: Vec::new(),
            size: 0,
            limit,
            commit: Some(commit),
            _count: count,
        }
    }

    fn take(&mut self, data: &Bytes) {
        if self.commit.is_none() {
            return;
        }
        self.size += data.len();
        if self.size > self.limit {
            // Too large to store: streamed through, and the copy so far let go.
            self.commit = None;
            self.chunks = Vec::new();
        } else {
            self.chunks.push(data.clone());
        }
    }

    fn end(&mut self) {
        let Some(commit) = self.commit.take() else {
            return;
        };
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(self.size);
                for c in self.chunks.drain(..) {
                    all.extend_from_slice(&c);
                }
                all.freeze()
            }
        };
        commit(body);
    }
}

impl ProxyBody {
    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(if bytes.is_empty() { None } else { Some(bytes) }),
            log: None,
        }
    }

    /// The bytes of a page the gateway made; `None` for a streamed body.
    pub fn full_bytes(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(b) => Some(b.clone().unwrap_or_default()),
            Kind::Stream(_) | Kind::Shared(_) => None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::full(Bytes::new())
    }

    /// The upstream's body, streamed with the body-idle deadline.
    pub fn stream(
        incoming: net::UpstreamBody,
        lease: PoolLease,
        exchange: Exchange,
        attempt_started: Instant,
        idle_timeout: Duration,
    ) -> ProxyBody {
        ProxyBody {
            kind: Kind::Stream(Box::new(Streamed {
                incoming,
                idle: None,
                // Not read until the first wait on the upstream, which sets it: a body that
                // came with its head (most do) reads no clock for it.
                idle_from: tokio::time::Instant::from_std(attempt_started),
                waiting: false,
                idle_timeout,
                lease: Some(lease),
                exchange,
                attempt_started,
                sent: 0,
                done: false,
                early: None,
                deferred: None,
                fill: None,
            })),
            log: None,
        }
    }

    /// A body read from a coalesced answer's flight, `length` bytes long when known.
    pub(crate) fn shared(reader: crate::flight::Reader, length: Option<u64>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Shared(Box::new(SharedBody {
                reader,
                length,
                sent: 0,
                done: false,
            })),
            log: None,
        }
    }

    /// What broke a body that failed, as recorded in its log.
    pub(crate) fn failure(&self) -> Option<(Cause, Phase)> {
        let record = &self.log.as_ref()?.record;
        Some((record.cause?, record.phase?))
    }

    /// Puts back what [`first_frame`] read before the head went out.
    pub fn with_early(mut self, early: Option<Option<Frame<Bytes>>>) -> ProxyBody {
        if let Kind::Stream(s) = &mut self.kind {
            s.early = early;
        }
        self
    }

    /// Copies the body for the cache as it streams (see [`Fill`]).
    pub(crate) fn with_fill(mut self, fill: Fill) -> ProxyBody {
        if let Kind::Stream(s) = &mut self.kind {
            s.fill = Some(Box::new(fill));
        }
        self
    }

    /// Attaches the request log, written when this body ends.
    pub fn with_log(self, log: RequestLog) -> ProxyBody {
        self.with_boxed_log(Box::new(log))
    }

    /// [`ProxyBody::with_log`] for a log already boxed ([`RequestLog::take_boxed`]): the
    /// record is not moved again.
    pub(crate) fn with_boxed_log(mut self, mut log: Box<RequestLog>) -> ProxyBody {
        log.responded = true;
        if let Kind::Full(b) = &self.kind {
            log.record.bytes_out = b.as_ref().map_or(0, |b| b.len() as u64);
        }
        self.log = Some(log);
        self
    }

    /// Takes the request log back out (the body then ends unlogged).
    pub(crate) fn take_log(&mut self) -> Option<RequestLog> {
        self.log.take().map(|log| *log)
    }

    fn fail(&mut self, failure: Failure) -> BoxError {
        if let Some(log) = &mut self.log {
            log.logger.gateway_error(
                &log.record.request_id,
                &failure,
                log.attempts,
                Some(log.record.status),
            );
            log.record.cause = Some(failure.cause);
            log.record.phase = Some(failure.phase);
            log.record.gateway_error = true;
            if let Some(a) = log.record.attempts.last_mut() {
                a.cause = Some(failure.cause);
                a.phase = Some(failure.phase);
            }
        }
        let message = format!(
            "{} during {}: {}",
            failure.cause,
            failure.phase,
            failure.detail.unwrap_or_default()
        );
        message.into()
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Kind::Stream(s) = &mut self.kind {
            // An empty body (`Content-Length: 0`) is never polled: hyper sees its end from
            // `is_end_stream` and drops it. It was complete all the same.
            if !s.done && s.early.is_none() && s.incoming.is_end_stream() {
                s.finish();
            }
        }
        if let (Kind::Shared(s), Some(log)) = (&mut self.kind, &mut self.log) {
            log.record.bytes_out = s.sent;
            if !s.done && !s.reader.is_end() && log.record.cause.is_none() {
                log.record.cause = Some(Cause::ClientAborted);
                log.record.phase = Some(Phase::ReadBody);
            }
        }
        if let (Kind::Stream(s), Some(log)) = (&mut self.kind, &mut self.log) {
            log.record.bytes_out = s.sent;
            if !s.done && log.record.cause.is_none() {
                // Dropped before its end without an upstream failure: the client went away.
                log.record.cause = Some(Cause::ClientAborted);
                log.record.phase = Some(Phase::ReadBody);
            }
            if let Some(a) = log.record.attempts.last_mut() {
                a.total = Some(net::clock::since(s.attempt_started));
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let s = match &mut this.kind {
            Kind::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(s) => s,
            Kind::Shared(s) => {
                return match ready!(s.reader.poll_chunk(cx)) {
                    Some(Ok(chunk)) => {
                        s.sent += chunk.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    None => {
                        s.done = true;
                        Poll::Ready(None)
                    }
                    Some(Err(end)) => {
                        // The upstream's body broke under the answer this client shares: the
                        // reading task logged the failure; this client's line records it.
                        let (cause, phase) = match end {
                            crate::flight::End::Broken(c, p) => (c, p),
                            crate::flight::End::Complete => {
                                (Cause::InvalidResponse, Phase::ReadBody)
                            }
                        };
                        if let Some(log) = &mut this.log {
                            log.record.cause = Some(cause);
                            log.record.phase = Some(phase);
                            log.record.gateway_error = true;
                        }
                        Poll::Ready(Some(Err(format!(
                            "{cause} during {phase}: the shared upstream body broke"
                        )
                        .into())))
                    }
                };
            }
        };
        if let Some(f) = s.deferred.take() {
            return Poll::Ready(Some(Err(this.fail(*f))));
        }
        if let Some(early) = s.early.take() {
            let Some(frame) = early else {
                s.finish();
                return Poll::Ready(None);
            };
            if let Some(d) = frame.data_ref() {
                s.sent += d.len() as u64;
                if let Some(fill) = &mut s.fill {
                    fill.take(d);
                }
            }
            if s.incoming.is_end_stream() {
                s.finish();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut s.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    s.sent += d.len() as u64;
                    if let Some(fill) = &mut s.fill {
                        fill.take(d);
                    }
                }
                s.waiting = false;
                if s.incoming.is_end_stream() {
                    s.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                s.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                let mut f = net::body_failure(e, &s.exchange);
                s.annotate(&mut f);
                s.lease = None;
                // The error may come in the same turn as the data before it: let hyper write
                // that out first, as a client of the gateway sees what the upstream sent.
                s.deferred = Some(Box::new(f));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => {
                let deadline = if s.waiting {
                    s.idle_from + s.idle_timeout
                } else {
                    s.waiting = true;
                    s.idle_from = tokio::time::Instant::now();
                    let deadline = s.idle_from + s.idle_timeout;
                    if let Some(timer) = &mut s.idle {
                        timer.as_mut().reset(deadline);
                    }
                    deadline
                };
                let timer = s
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                ready!(timer.as_mut().poll(cx));
                let mut f = Failure::new(Cause::Timeout, Phase::ReadBody)
                    .with_detail(format!("no response body bytes for {:?}", s.idle_timeout));
                s.exchange.fill(&mut f);
                s.annotate(&mut f);
                s.lease = None;
                Poll::Ready(Some(Err(this.fail(f))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            // A frame read early is still to be sent, or the end still to be seen by `finish`.
            Kind::Stream(s) => s.early.is_none() && s.incoming.is_end_stream(),
            Kind::Shared(s) => s.length == Some(0) && s.reader.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(s) => s.incoming.size_hint(),
            Kind::Shared(s) => match s.length {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::new(),
            },
        }
    }
}

use std::future::Future;

impl Streamed {
    /// The body was read to its end: the connection may serve another request.
    fn finish(&mut self) {
        self.done = true;
        if let Some(fill) = &mut self.fill {
            fill.end();
        }
        if let Some(mut lease) = self.lease.take() {
            if !lease.close {
                lease.conn.rejoin(&mut self.incoming);
                lease
                    .upstream
                    .release(&lease.endpoint, lease.conn, lease.keep_alive);
            }
        }
    }

    /// Names the hop in `f` and counts it against the endpoint's health.
    fn annotate(&self, f: &mut Failure) {
        if let Some(lease) = &self.lease {
            f.endpoint = Some(lease.endpoint.name.to_string());
            f.upstream = Some(lease.upstream.name.to_string());
            lease
                .upstream
                .report(&lease.endpoint, upstream::Outcome::Failed(f));
        }
    }
}

/// Reads the first frame of an upstream body if it is already there or arrives at once, so
/// that a body broken from its first byte (a chunk size that overflows, say) becomes an error
/// response instead of a head followed by an abort. Only bodies without a known length are
/// looked at: a length-framed body cannot be broken before its first byte.
pub async fn first_frame(
    incoming: &mut net::UpstreamBody,
) -> Result<Option<Option<Frame<Bytes>>>, Failure> {
    if incoming.is_end_stream() || incoming.size_hint().exact().is_some() {
        return Ok(None);
    }
    // Two turns of the scheduler let the connection task decode what it has already read.
    let mut turns = 0;
    std::future::poll_fn(|cx| match Pin::new(&mut *incoming).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => Poll::Ready(Ok(Some(Some(frame)))),
        Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e)),
        Poll::Ready(None) => Poll::Ready(Ok(Some(None))),
        Poll::Pending if turns < 2 => {
            turns += 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(Ok(None)),
    })
    .await
}

/// The client's request body on its way upstream, cut off at the configured limit. A body
/// that was partly read to find out whether it could be kept whole starts with that prefix.
pub struct LimitedBody {
    prefix: Option<Bytes>,
    inner: Incoming,
    remaining: u64,
    pub exceeded: Arc<AtomicBool>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64) -> LimitedBody {
        LimitedBody::with_prefix(Bytes::new(), inner, limit)
    }

    /// `prefix` was read from `inner` already and counts against `limit`.
    pub fn with_prefix(prefix: Bytes, inner: Incoming, limit: u64) -> LimitedBody {
        LimitedBody {
            remaining: limit.saturating_sub(prefix.len() as u64),
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner,
            exceeded: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.remaining {
                        self.exceeded.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err("request body larger than the limit".into())));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.prefix {
            None => self.inner.size_hint(),
            // A prefix is only read from bodies of unknown length, which stay unknown.
            Some(p) => {
                let mut h = SizeHint::new();
                h.set_lower(p.len() as u64 + self.inner.size_hint().lower());
                h
            }
        }
    }
}
