//! The HTTP/1.1 client side of an upstream connection, driven from the request's own task.
//!
//! No connection task and no channel: the request's task writes the head and the body and reads
//! the response head in one future, and the response body reads from the same socket. Between
//! exchanges the connection sits in the pool with a waker of its own registered on the socket,
//! so the moment the upstream closes an idle connection is known (it is how the pool learns
//! an upstream's idle timeout) without any task polling it.
//!
//! The parsing rules are RFC 9112's, with hyper's client decisions where the RFC leaves a
//! choice (so the gateway behaves as it did on hyper's client):
//!
//! - 1xx heads other than 101 are skipped; a 101 nobody asked for is an invalid response. A 101
//!   to a request that asked for an upgrade ends the exchange: the socket and what was read
//!   past the head become an [`Upgraded`] stream, never pooled.
//! - HEAD responses, 204 and 304 have no body; `Transfer-Encoding` ending in `chunked` frames by
//!   chunks, any other coding reads to the close; `Content-Length` lines must agree; a
//!   `Transfer-Encoding` in an HTTP/1.0 response is invalid; neither means read to the close.
//! - The head limit is exact: a head of `limit` bytes is read, one byte more is too large.
//! - Chunk size lines end in CRLF; trailers are read and dropped (the gateway forwards none).

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::hop::{self, has_token, HeadFacts, Scan};
use crate::RequestBody;

/// The byte stream under a connection: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Room for a read while looking for a head: a head and a small body in one read.
const HEAD_READ: usize = 16 * 1024;
/// The most a body read asks the socket for.
const BODY_READ: usize = 64 * 1024;
/// The most buffered request bytes before they are written out.
const WRITE_BATCH: usize = 64 * 1024;
/// The longest chunk size line (size and extensions).
const CHUNK_LINE: usize = 4096;

/// What ended an exchange before its response head was whole.
#[derive(Debug)]
pub(crate) enum H1Error {
    Io(io::Error),
    /// The upstream closed the connection; `mid_head` when some of a head had arrived.
    Closed {
        mid_head: bool,
    },
    Invalid(String),
    TooLarge,
    /// The request body broke off (its failure is in the body's progress).
    RequestBody,
    /// `Invalid` or `TooLarge`, with the first bytes of the head that caused it.
    Evidence(Box<H1Error>, Vec<u8>),
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Io(e) => write!(f, "{e}"),
            H1Error::Closed { mid_head: false } => {
                f.write_str("the upstream closed the connection before any response byte")
            }
            H1Error::Closed { mid_head: true } => {
                f.write_str("the upstream closed the connection in the middle of the response head")
            }
            H1Error::Invalid(why) => write!(f, "invalid response head: {why}"),
            H1Error::TooLarge => f.write_str("the response head is too large"),
            H1Error::RequestBody => f.write_str("the request body broke off"),
            H1Error::Evidence(e, _) => e.fmt(f),
        }
    }
}

/// Records when the socket of an idle connection became readable: the upstream closed it (or
/// sent bytes nobody asked for, which makes it just as unusable).
#[derive(Debug, Default)]
struct IdleMark {
    fired: AtomicBool,
    at: Mutex<Option<Instant>>,
}

impl Wake for IdleMark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.fired.swap(true, Ordering::AcqRel) {
            *self.at.lock().unwrap() = Some(Instant::now());
        }
    }
}

/// The socket and buffers of a connection; lent to a response body while it is read.
struct Wire {
    io: Box<dyn Io>,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    /// The request being written.
    out: Vec<u8>,
}

/// One HTTP/1.1 connection to an upstream.
pub(crate) struct H1 {
    /// `None` while a response body has the wire, or once the connection is unusable.
    wire: Option<Box<Wire>>,
    idle: Arc<IdleMark>,
    idle_waker: Waker,
    head_limit: usize,
    header_lines: usize,
}

impl H1 {
    pub(crate) fn new(io: Box<dyn Io>, head_limit: usize, header_lines: usize) -> H1 {
        let idle = Arc::new(IdleMark::default());
        let mut h1 = H1 {
            wire: Some(Box::new(Wire {
                io,
                buf: BytesMut::new(),
                out: Vec::new(),
            })),
            idle_waker: Waker::from(idle.clone()),
            idle,
            head_limit,
            header_lines,
        };
        // Watched from the start, like a connection back from an exchange: one that waits
        // unused (in the pool) is seen to close.
        h1.watch_idle();
        h1
    }

    /// When the upstream closed this idle connection, if it did.
    pub(crate) fn closed_at(&self) -> Option<Instant> {
        if self.idle.fired.load(Ordering::Acquire) {
            *self.idle.at.lock().unwrap()
        } else {
            None
        }
    }

    /// True when a request can be sent now: the last exchange ended cleanly and the upstream
    /// has not closed the connection since.
    pub(crate) fn is_open(&self) -> bool {
        self.wire.is_some() && !self.idle.fired.load(Ordering::Acquire)
    }

    /// Says whether a request can be sent. The idle socket needs no look of its own here: the
    /// waker [`H1::rejoin`] registered on it has set `fired` if the runtime saw a close or
    /// stray bytes, and a read now would see no more than the runtime has (it would only find
    /// the readiness the runtime recorded, without asking the kernel).
    pub(crate) fn check(&mut self) -> bool {
        self.is_open()
    }

    /// Takes the wire back from a response body that was read to its end, and starts watching
    /// the idle socket. Otherwise (the body broke off, or the connection cannot be reused) the
    /// connection is closed at once.
    pub(crate) fn rejoin(&mut self, body: &mut H1Body) {
        // Taken either way: a connection that cannot be reused is closed now.
        let wire = body.wire.take();
        if body.state != Decode::Done || !body.reusable {
            return;
        }
        if let Some(wire) = wire.filter(|w| w.buf.is_empty()) {
            self.wire = Some(wire);
            self.watch_idle();
        }
    }

    /// Registers the idle waker on the socket, or finds the connection closed (or sent
    /// unrequested bytes) already.
    fn watch_idle(&mut self) {
        let Some(wire) = &mut self.wire else { return };
        let mut cx = Context::from_waker(&self.idle_waker);
        if wire.buf.capacity() - wire.buf.len() < 64 {
            wire.buf.reserve(64);
        }
        match poll_read_buf(Pin::new(&mut wire.io), &mut cx, &mut wire.buf) {
            Poll::Pending => {}
            Poll::Ready(_) => {
                // A close, an error, or bytes nobody asked for: the connection is done.
                self.idle.wake_by_ref();
                self.wire = None;
            }
        }
    }

    /// Sends `req` and reads the response head. The body comes with the connection's wire,
    /// which [`H1::rejoin`] takes back once the body has been read.
    pub(crate) async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        extra: &[(&HeaderName, &HeaderValue)],
        mut body: RequestBody,
    ) -> Result<(Response<H1Body>, HeadFacts), H1Error> {
        let Some(mut wire) = self.wire.take() else {
            return Err(H1Error::Closed { mid_head: false });
        };
        self.idle.fired.store(false, Ordering::Release);
        *self.idle.at.lock().unwrap() = None;
        wire.out.clear();
        let (framing, named) = encode_head(parts, extra, &body, &mut wire.out);
        let mut writer = Writer {
            framing,
            written: 0,
            body_done: false,
            flushed: false,
        };
        writer.body_done = body.is_end_stream() || writer.framing == ReqFraming::None;
        // Looked up only when the names are there (after the hop-by-hop headers went, nearly
        // never).
        let close_asked = named.connection
            && parts
                .headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| has_token(v.as_bytes(), b"close"));
        let head_method = parts.method == Method::HEAD;
        let connect = parts.method == Method::CONNECT;
        let upgrade = named.upgrade
            && named.connection
            && parts
                .headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| has_token(v.as_bytes(), b"upgrade"));
        let limit = self.head_limit;
        let lines = self.header_lines;
        let head = poll_fn(|cx| loop {
            let wrote = if writer.done() {
                false
            } else {
                writer.poll(cx, &mut wire, &mut body)?
            };
            if let Poll::Ready(head) = poll_head(cx, &mut wire, limit, lines, upgrade)? {
                return Poll::Ready(Ok(head));
            }
            // Again only while there is more to write: once the request is out, the read
            // that just found nothing has asked to be woken.
            if !wrote || writer.done() {
                return Poll::Pending;
            }
        })
        .await?;
        let Head {
            status,
            version,
            headers,
            reason,
            scan,
        } = head;
        let switched = status == StatusCode::SWITCHING_PROTOCOLS;
        let state = match decoder(status, version, &headers, &scan, head_method, connect)? {
            _ if switched => Decode::Done,
            Decode::Length(0) => Decode::Done,
            d => d,
        };
        // A response that came before the request was written whole leaves the connection in
        // an unknown state: it is closed after this response. A switched one is never reused.
        let keep_alive = scan.keeps_alive(version == Version::HTTP_11);
        let reusable =
            keep_alive && !close_asked && writer.done() && state != Decode::Eof && !switched;
        let body = H1Body {
            wire: Some(wire),
            state,
            reusable,
            trailer_limit: limit,
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        if let Some(reason) = reason {
            resp.extensions_mut().insert(reason);
        }
        Ok((resp, scan.done()))
    }
}

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqFraming {
    /// No body at all.
    None,
    Length,
    Chunked,
}

struct Writer {
    framing: ReqFraming,
    /// Bytes of `out` already written.
    written: usize,
    body_done: bool,
    flushed: bool,
}

impl Writer {
    fn done(&self) -> bool {
        self.flushed
    }

    /// Moves the request on: gathers what the body has ready, writes what is gathered.
    /// `Ok(true)` when something moved.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        wire: &mut Wire,
        body: &mut RequestBody,
    ) -> Result<bool, H1Error> {
        let mut moved = false;
        loop {
            while !self.body_done && wire.out.len() - self.written < WRITE_BATCH {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        moved = true;
                        // Trailers are not forwarded.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        if self.framing == ReqFraming::Chunked {
                            push_hex(&mut wire.out, data.len());
                            wire.out.extend_from_slice(b"\r\n");
                            wire.out.extend_from_slice(&data);
                            wire.out.extend_from_slice(b"\r\n");
                        } else {
                            wire.out.extend_from_slice(&data);
                        }
                    }
                    Poll::Ready(None) => {
                        moved = true;
                        self.body_done = true;
                        if self.framing == ReqFraming::Chunked {
                            wire.out.extend_from_slice(b"0\r\n\r\n");
                        }
                    }
                    Poll::Ready(Some(Err(_))) => return Err(H1Error::RequestBody),
                    Poll::Pending => break,
                }
            }
            if self.written < wire.out.len() {
                match Pin::new(&mut wire.io).poll_write(cx, &wire.out[self.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Err(H1Error::Io(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        moved = true;
                        self.written += n;
                        if self.written == wire.out.len() {
                            wire.out.clear();
                            self.written = 0;
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Err(H1Error::Io(e)),
                    Poll::Pending => return Ok(moved),
                }
            }
            if !self.body_done {
                return Ok(moved);
            }
            return match Pin::new(&mut wire.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.flushed = true;
                    Ok(true)
                }
                Poll::Ready(Err(e)) => Err(H1Error::Io(e)),
                Poll::Pending => Ok(moved),
            };
        }
    }
}

/// Which of the names that decide an exchange a request head holds.
#[derive(Clone, Copy, Default)]
struct Named {
    connection: bool,
    upgrade: bool,
}

/// Writes the request line and the header section into `out` and decides the body's framing,
/// as hyper's client did: a body of known size gets a length, one of unknown size chunks
/// (none at all for GET, HEAD and CONNECT), an explicit `Transfer-Encoding` is kept. The
/// header lines are `parts`', then `extra`'s (lines the gateway adds, never framing ones).
/// Also says whether the head has `Connection` and `Upgrade` lines, found in the same pass.
fn encode_head(
    parts: &http::request::Parts,
    extra: &[(&HeaderName, &HeaderValue)],
    body: &RequestBody,
    out: &mut Vec<u8>,
) -> (ReqFraming, Named) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match (parts.uri.scheme(), parts.uri.path_and_query()) {
        (None, Some(pq)) => out.extend_from_slice(pq.as_str().as_bytes()),
        (None, None) => out.push(b'/'),
        (Some(_), _) => out.extend_from_slice(parts.uri.to_string().as_bytes()),
    }
    out.extend_from_slice(if parts.version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let empty = body.is_end_stream();
    // One pass over the names instead of a lookup by each.
    let (mut has_te, mut has_cl, mut named) = (false, false, Named::default());
    for name in parts.headers.keys() {
        if name == TRANSFER_ENCODING {
            has_te = true;
        } else if name == CONTENT_LENGTH {
            has_cl = true;
        } else if name == CONNECTION {
            named.connection = true;
        } else if name == UPGRADE {
            named.upgrade = true;
        }
    }
    let mut framing = if empty {
        ReqFraming::None
    } else if has_te {
        ReqFraming::Chunked
    } else if has_cl {
        ReqFraming::Length
    } else {
        match body.size_hint().exact() {
            Some(_) => ReqFraming::Length,
            None if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT) => {
                ReqFraming::None
            }
            None => ReqFraming::Chunked,
        }
    };
    if framing == ReqFraming::Length && !has_cl && body.size_hint().exact() == Some(0) {
        framing = ReqFraming::None;
    }
    for (name, value) in &parts.headers {
        let skip = (name == TRANSFER_ENCODING && framing != ReqFraming::Chunked)
            || (name == CONTENT_LENGTH && framing == ReqFraming::Chunked);
        if skip {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ReqFraming::Length if !has_cl => {
            let n = body.size_hint().exact().unwrap_or(0);
            out.extend_from_slice(b"content-length: ");
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            let mut v = n;
            loop {
                i -= 1;
                digits[i] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            out.extend_from_slice(&digits[i..]);
            out.extend_from_slice(b"\r\n");
        }
        ReqFraming::Chunked if !has_te => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    (framing, named)
}

fn push_hex(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = HEX[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    reason: Option<hyper::ext::ReasonPhrase>,
    /// What the one pass over the lines found (framing, hop-by-hop names, keep-alive).
    scan: Scan,
}

/// Reads until a final response head is whole (1xx heads are skipped).
fn poll_head(
    cx: &mut Context<'_>,
    wire: &mut Wire,
    limit: usize,
    lines: usize,
    upgrade: bool,
) -> Poll<Result<Head, H1Error>> {
    // What the upstream sent, kept with the error (the evidence an operator reads).
    let evidence = |e: H1Error, buf: &[u8]| {
        let first = buf[..buf.len().min(cause::EVIDENCE_BYTES)].to_vec();
        H1Error::Evidence(Box::new(e), first)
    };
    loop {
        if !wire.buf.is_empty() {
            match parse_head(&mut wire.buf, limit, lines, upgrade) {
                Ok(Some(head)) => return Poll::Ready(Ok(head)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(evidence(e, &wire.buf))),
            }
            if wire.buf.len() > limit {
                return Poll::Ready(Err(evidence(H1Error::TooLarge, &wire.buf)));
            }
        }
        if wire.buf.capacity() - wire.buf.len() < HEAD_READ / 4 {
            wire.buf.reserve(HEAD_READ);
        }
        match poll_read_buf(Pin::new(&mut wire.io), cx, &mut wire.buf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(H1Error::Closed {
                    mid_head: !wire.buf.is_empty(),
                }))
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(H1Error::Io(e))),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Parses a head at the start of `buf`; `None` when more bytes are needed. A 1xx head is
/// consumed and skipped, except a 101 when `upgrade` was asked for, which is the final head.
fn parse_head(
    buf: &mut BytesMut,
    limit: usize,
    lines: usize,
    upgrade: bool,
) -> Result<Option<Head>, H1Error> {
    loop {
        // Uninitialised slots: nothing is written for header lines the head does not have.
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
        let mut heap;
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if lines > stack.len() {
            heap = Vec::with_capacity(lines);
            heap.resize_with(lines, MaybeUninit::uninit);
            &mut heap
        } else {
            &mut stack[..lines]
        };
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::TooLarge),
            Err(e) => return Err(H1Error::Invalid(e.to_string())),
        };
        if len > limit {
            return Err(H1Error::TooLarge);
        }
        let code = res.code.unwrap_or(0);
        let status =
            StatusCode::from_u16(code).map_err(|_| H1Error::Invalid(format!("status {code}")))?;
        if status.is_informational() && !(code == 101 && upgrade) {
            if code == 101 {
                return Err(H1Error::Invalid(
                    "the upstream switched protocols (101) although no upgrade was asked for"
                        .into(),
                ));
            }
            buf.advance(len);
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let version = if res.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let reason = res
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok());
        // Where each name and value sits in the head, so that the values share its bytes.
        let base = buf.as_ptr() as usize;
        let count = res.headers.len();
        type Span = (u32, u32, u32, u32);
        // Uninitialised too: only the head's own lines are written, then read.
        let mut on_stack = [const { MaybeUninit::<Span>::uninit() }; 100];
        let mut on_heap;
        let room: &mut [MaybeUninit<Span>] = if count > on_stack.len() {
            on_heap = Vec::with_capacity(count);
            on_heap.resize_with(count, MaybeUninit::uninit);
            &mut on_heap
        } else {
            &mut on_stack[..count]
        };
        // A head is at most the limit long, far below 4 GiB.
        for (span, h) in room.iter_mut().zip(res.headers.iter()) {
            span.write((
                (h.name.as_ptr() as usize - base) as u32,
                h.name.len() as u32,
                (h.value.as_ptr() as usize - base) as u32,
                h.value.len() as u32,
            ));
        }
        // SAFETY: `res.headers` has exactly `count` lines, so every slot of `room` was written.
        let spans: &[Span] =
            unsafe { std::slice::from_raw_parts(room.as_ptr().cast::<Span>(), count) };
        let head = buf.split_to(len).freeze();
        // Room for the two lines the gateway adds to every answer (`Via`, `X-Request-Id`):
        // a map filled to its last usable slot probes long for each of them.
        let mut headers = HeaderMap::with_capacity(count + 2);
        let mut scan = Scan::default();
        for &(ns, nl, vs, vl) in spans {
            let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
            let name = header_name(&head[ns..ns + nl])
                .map_err(|_| H1Error::Invalid("a header name is not a token".into()))?;
            // SAFETY: httparse accepts in a value exactly the bytes a `HeaderValue` may hold
            // (HTAB, 0x20-0x7E and 0x80-0xFF), so checking them again would find nothing.
            let value =
                unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(vs..vs + vl)) };
            scan.line(&name, value.as_bytes());
            // A `Connection` line of `keep-alive` and `close` alone concerns this hop only, and
            // the scan holds what it says: the map, which is relayed, never gets it. One that
            // names other headers stays, for the step that strips those.
            if name == CONNECTION && !scan.connection_names_more {
                continue;
            }
            headers.append(name, value);
        }
        return Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            scan,
        }));
    }
}

/// The names nearly every response has, as servers spell them: compared whole, they are found
/// without the case folding and table walk of [`HeaderName::from_bytes`].
static COMMON: [(&[u8], HeaderName); 7] = [
    (b"Date", http::header::DATE),
    (b"Server", http::header::SERVER),
    (b"Connection", CONNECTION),
    (b"Content-Type", http::header::CONTENT_TYPE),
    (b"Content-Length", CONTENT_LENGTH),
    (b"Last-Modified", http::header::LAST_MODIFIED),
    (b"ETag", http::header::ETAG),
];

/// The header name `raw` spells: a common one by one comparison, any other as `http` reads it.
fn header_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    for (spelled, name) in &COMMON {
        if raw.len() == spelled.len() && raw == *spelled {
            return Ok(name.clone());
        }
    }
    HeaderName::from_bytes(raw)
}

/// How the response body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decode {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Eof,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// A size line is next.
    Size,
    /// Data bytes of the current chunk still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines until an empty one; the bytes read so far.
    Trailers(usize),
}

/// RFC 9112 §6.3, with hyper's choices (see the module comment).
fn decoder(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    scan: &Scan,
    head_method: bool,
    connect: bool,
) -> Result<Decode, H1Error> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED || head_method {
        return Ok(Decode::Done);
    }
    if connect && status.is_success() {
        return Err(H1Error::Invalid(
            "a tunnel through the upstream was not asked for".into(),
        ));
    }
    // Nearly every head: no `Transfer-Encoding` and at most one plain length, already read.
    if scan.hop_by_hop & hop::BIT_TRANSFER_ENCODING == 0 {
        match (scan.lengths, scan.length) {
            (0, _) => return Ok(Decode::Eof),
            (1, Some(n)) => return Ok(Decode::Length(n)),
            _ => {}
        }
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(H1Error::Invalid(
                "an HTTP/1.0 response cannot have Transfer-Encoding".into(),
            ));
        }
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
            .map(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            .unwrap_or(false);
        return Ok(if last {
            Decode::Chunked(Chunk::Size)
        } else {
            Decode::Eof
        });
    }
    let mut length: Option<u64> = None;
    let mut any = false;
    for value in headers.get_all(CONTENT_LENGTH) {
        any = true;
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = hop::parse_decimal(part.trim_ascii());
            match (n, length) {
                (None, _) => return Err(H1Error::Invalid("Content-Length is not a number".into())),
                (Some(n), Some(l)) if n != l => {
                    return Err(H1Error::Invalid("Content-Length values disagree".into()))
                }
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(match length {
        Some(n) => Decode::Length(n),
        None if any => return Err(H1Error::Invalid("Content-Length is empty".into())),
        None => Decode::Eof,
    })
}

/// Why a response body could not be read to its end.
#[derive(Debug)]
pub(crate) enum BodyError {
    Io(io::Error),
    /// The upstream closed the connection before the end of the body.
    Closed,
    Invalid(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Io(e) => write!(f, "error reading the response body: {e}"),
            BodyError::Closed => {
                f.write_str("the upstream closed the connection before the end of the body")
            }
            BodyError::Invalid(why) => write!(f, "invalid response body framing: {why}"),
        }
    }
}

/// An upstream connection after `101 Switching Protocols`: bytes either way, in the protocol
/// switched to.
pub struct Upgraded {
    io: Box<dyn Io>,
    /// Bytes that came after the 101's head, read before the switch.
    buf: BytesMut,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len().min(out.remaining());
            out.put_slice(&self.buf[..n]);
            self.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The body of an HTTP/1.1 response, read from the connection's wire.
pub(crate) struct H1Body {
    wire: Option<Box<Wire>>,
    state: Decode,
    /// The connection may carry another request once this body has ended.
    reusable: bool,
    trailer_limit: usize,
}

impl H1Body {
    /// The connection of a `101 Switching Protocols`, as a byte stream in the new protocol:
    /// what the upstream sent after the head comes first.
    pub(crate) fn into_upgraded(mut self) -> Option<Upgraded> {
        let wire = self.wire.take()?;
        let Wire { io, buf, .. } = *wire;
        Some(Upgraded { io, buf })
    }

    pub(crate) fn exact_len(&self) -> Option<u64> {
        match self.state {
            Decode::Length(n) => Some(n),
            Decode::Done => Some(0),
            _ => None,
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let Some(wire) = self.wire.as_deref_mut() else {
                return Poll::Ready(None);
            };
            match self.state {
                Decode::Done => return Poll::Ready(None),
                Decode::Length(left) => {
                    if !wire.buf.is_empty() {
                        let n = (wire.buf.len() as u64).min(left) as usize;
                        let data = wire.buf.split_to(n).freeze();
                        self.state = match left - n as u64 {
                            0 => Decode::Done,
                            rest => Decode::Length(rest),
                        };
                        return Poll::Ready(Some(Ok(data)));
                    }
                    let want = left.clamp(4096, BODY_READ as u64) as usize;
                    match ready_read(cx, wire, want) {
                        Poll::Ready(Ok(0)) => return self.fail(BodyError::Closed),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return self.fail(BodyError::Io(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Decode::Eof => {
                    if !wire.buf.is_empty() {
                        let data = wire.buf.split().freeze();
                        return Poll::Ready(Some(Ok(data)));
                    }
                    match ready_read(cx, wire, BODY_READ / 4) {
                        Poll::Ready(Ok(0)) => {
                            self.state = Decode::Done;
                            self.reusable = false;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return self.fail(BodyError::Io(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Decode::Chunked(chunk) => match decode_chunk(&mut wire.buf, chunk) {
                    Err(why) => return self.fail(BodyError::Invalid(why)),
                    Ok(Step::Data(data, next)) => {
                        self.state = Decode::Chunked(next);
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Step::Next(next)) => self.state = Decode::Chunked(next),
                    Ok(Step::End) => self.state = Decode::Done,
                    Ok(Step::More(next)) => {
                        if let Chunk::Trailers(read) = next {
                            if read + wire.buf.len() > self.trailer_limit {
                                return self.fail(BodyError::Invalid(
                                    "the trailer section is too large".into(),
                                ));
                            }
                        }
                        self.state = Decode::Chunked(next);
                        let want = match next {
                            Chunk::Data(left) => left.clamp(4096, BODY_READ as u64) as usize,
                            _ => 4096,
                        };
                        match ready_read(cx, wire, want) {
                            Poll::Ready(Ok(0)) => return self.fail(BodyError::Closed),
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(e)) => return self.fail(BodyError::Io(e)),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                },
            }
        }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.wire = None;
        self.reusable = false;
        Poll::Ready(Some(Err(e)))
    }
}

/// Reads what the socket has, with room for at least `want` more bytes.
fn ready_read(cx: &mut Context<'_>, wire: &mut Wire, want: usize) -> Poll<io::Result<usize>> {
    if wire.buf.capacity() - wire.buf.len() < want {
        wire.buf.reserve(want);
    }
    poll_read_buf(Pin::new(&mut wire.io), cx, &mut wire.buf)
}

/// One step of the chunked decoder over the buffered bytes.
enum Step {
    Data(Bytes, Chunk),
    /// A size line or a chunk's end was consumed.
    Next(Chunk),
    /// More bytes are needed in this state.
    More(Chunk),
    End,
}

fn decode_chunk(buf: &mut BytesMut, chunk: Chunk) -> Result<Step, String> {
    match chunk {
        Chunk::Size => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                if buf.len() > CHUNK_LINE {
                    return Err("a chunk size line is too long".into());
                }
                return Ok(Step::More(chunk));
            };
            if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
                return Err("a chunk size line does not end in CRLF".into());
            }
            let line = &buf[..lf - 1];
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            if digits == 0 {
                return Err("a chunk size is not a hexadecimal number".into());
            }
            let rest = line[digits..].trim_ascii_start();
            if !rest.is_empty() && rest[0] != b';' {
                return Err("a chunk size is followed by something other than an extension".into());
            }
            let mut size: u64 = 0;
            for &d in &line[..digits] {
                let v = (d as char).to_digit(16).unwrap_or(0) as u64;
                size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(v))
                    .ok_or_else(|| "a chunk size overflows".to_string())?;
            }
            buf.advance(lf + 1);
            Ok(Step::Next(if size == 0 {
                Chunk::Trailers(0)
            } else {
                Chunk::Data(size)
            }))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::More(chunk));
            }
            let n = (buf.len() as u64).min(left) as usize;
            let data = buf.split_to(n).freeze();
            let next = match left - n as u64 {
                0 => Chunk::DataEnd,
                rest => Chunk::Data(rest),
            };
            Ok(Step::Data(data, next))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                if buf.first().is_some_and(|&b| b != b'\r') {
                    return Err("a chunk's data is not followed by CRLF".into());
                }
                return Ok(Step::More(chunk));
            }
            if &buf[..2] != b"\r\n" {
                return Err("a chunk's data is not followed by CRLF".into());
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size))
        }
        Chunk::Trailers(read) => {
            let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                return Ok(Step::More(chunk));
            };
            if lf == 0 || buf[lf - 1] != b'\r' {
                return Err("a trailer line does not end in CRLF".into());
            }
            let empty = lf == 1;
            buf.advance(lf + 1);
            if empty {
                Ok(Step::End)
            } else {
                Ok(Step::Next(Chunk::Trailers(read + lf + 1)))
            }
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.poll_data(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.state == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(input: &[u8]) -> Result<Vec<u8>, String> {
        let mut buf = BytesMut::from(input);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match decode_chunk(&mut buf, state)? {
                Step::Data(d, next) => {
                    out.extend_from_slice(&d);
                    state = next;
                }
                Step::Next(next) => state = next,
                Step::More(_) => return Err("incomplete".into()),
                Step::End => return Ok(out),
            }
        }
    }

    #[test]
    fn chunked_framing() {
        assert_eq!(chunked(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(
            chunked(b"5;ext=1\r\nhello\r\n2 \r\n, \r\n0\r\nx-t: 1\r\n\r\n").unwrap(),
            b"hello, "
        );
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"z\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
        ] {
            let r = chunked(bad);
            assert!(
                r.is_err() && r.as_ref().unwrap_err() != "incomplete",
                "{:?} gave {r:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(chunked(b"5\r\nhel").unwrap_err(), "incomplete");
    }

    fn head(raw: &str) -> Result<Option<Head>, H1Error> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), 1000, 100, false)
    }

    #[test]
    fn heads() {
        let h = head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Fine\r\nA: 1\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert!(!h.scan.keeps_alive(h.version == Version::HTTP_11));
        assert_eq!(h.reason.unwrap().as_bytes(), b"Fine");
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.scan.keeps_alive(h.version == Version::HTTP_11) && h.reason.is_none());
        let h = head("HTTP/1.0 200 OK\r\nA: 1\r\n\r\n").unwrap().unwrap();
        assert!(!h.scan.keeps_alive(h.version == Version::HTTP_11));
        let h = head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.scan.keeps_alive(h.version == Version::HTTP_11));
        // Lines of `keep-alive` and `close` alone stay out of the relayed map; one naming
        // another header stays in, for the strip of what it names.
        assert!(h.headers.get(CONNECTION).is_none());
        assert_ne!(h.scan.hop_by_hop & hop::BIT_CONNECTION, 0);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nX-T: 1\r\nConnection: x-t\r\n\r\n")
            .unwrap()
            .unwrap();
        let lines: Vec<_> = h.headers.get_all(CONNECTION).iter().collect();
        assert_eq!(lines, ["x-t"]);
        assert!(h.scan.connection_names_more && !h.scan.keeps_alive(true));
        assert!(head("HTTP/1.1 200 OK\r\nA: 1\r\n").unwrap().is_none());
        assert!(matches!(
            head("HTTP/1.1 101 Switching\r\n\r\n"),
            Err(H1Error::Invalid(_))
        ));
        assert!(matches!(
            head("HTTX/1.1 200 OK\r\n\r\n"),
            Err(H1Error::Invalid(_))
        ));
        let mut big = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        for _ in 0..3 {
            big.extend_from_slice(b"X: 1\r\n");
        }
        big.extend_from_slice(b"\r\n");
        let n = big.len();
        assert!(parse_head(&mut big.clone(), n, 100, false)
            .unwrap()
            .is_some());
        assert!(matches!(
            parse_head(&mut big.clone(), n - 1, 100, false),
            Err(H1Error::TooLarge)
        ));
        assert!(matches!(
            parse_head(&mut big, n, 2, false),
            Err(H1Error::TooLarge)
        ));
    }

    fn decode(
        status: u16,
        version: Version,
        fields: &[(&str, &str)],
        head: bool,
    ) -> Result<Decode, H1Error> {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let scan = Scan::of(&h);
        let status = StatusCode::from_u16(status).unwrap();
        let decided = decoder(status, version, &h, &scan, head, false);
        // The shortcut the scan allows decides as the full reading of the lines does.
        let read_whole = Scan {
            hop_by_hop: hop::BIT_TRANSFER_ENCODING,
            ..Scan::default()
        };
        let whole = decoder(status, version, &h, &read_whole, head, false);
        assert_eq!(
            decided.as_ref().map_err(|e| e.to_string()),
            whole.as_ref().map_err(|e| e.to_string()),
            "{fields:?}"
        );
        decided
    }

    #[test]
    fn common_names_are_read_as_http_reads_them() {
        for spelled in [
            "Date",
            "date",
            "DATE",
            "Server",
            "Connection",
            "connection",
            "Content-Type",
            "content-type",
            "Content-Length",
            "Content-length",
            "Last-Modified",
            "ETag",
            "Etag",
            "X-Custom",
            "Set-Cookie",
            "Dates",
            "Dat",
        ] {
            assert_eq!(
                header_name(spelled.as_bytes()).unwrap(),
                HeaderName::from_bytes(spelled.as_bytes()).unwrap(),
                "{spelled}"
            );
        }
        assert!(header_name(b"Bad Name").is_err());
        assert!(header_name(b"").is_err());
    }

    #[test]
    fn body_framing() {
        use Version as V;
        assert_eq!(
            decode(200, V::HTTP_11, &[("content-length", "5")], true).unwrap(),
            Decode::Done
        );
        assert_eq!(
            decode(304, V::HTTP_11, &[("content-length", "5")], false).unwrap(),
            Decode::Done
        );
        assert_eq!(
            decode(200, V::HTTP_11, &[("content-length", "5, 5")], false).unwrap(),
            Decode::Length(5)
        );
        assert!(decode(
            200,
            V::HTTP_11,
            &[("content-length", "5"), ("content-length", "6")],
            false
        )
        .is_err());
        assert!(decode(200, V::HTTP_11, &[("content-length", "+5")], false).is_err());
        assert_eq!(
            decode(
                200,
                V::HTTP_11,
                &[
                    ("transfer-encoding", "gzip, chunked"),
                    ("content-length", "5")
                ],
                false
            )
            .unwrap(),
            Decode::Chunked(Chunk::Size)
        );
        assert_eq!(
            decode(200, V::HTTP_11, &[("transfer-encoding", "gzip")], false).unwrap(),
            Decode::Eof
        );
        assert!(decode(200, V::HTTP_10, &[("transfer-encoding", "chunked")], false).is_err());
        assert_eq!(decode(200, V::HTTP_11, &[], false).unwrap(), Decode::Eof);
    }
}
