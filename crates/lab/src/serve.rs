//! What each fault does with one accepted connection.
//!
//! Two shapes: keep-alive servers that answer request after request (`ok`, `slow`, `flaky`,
//! `kashort`, `status`), and one-shot faults that read a request head, misbehave once, and end
//! the connection (or hold it open). Listening, accepting and stopping live in `lab.rs`; the
//! byte-level HTTP code lives in `wire.rs`.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{self, Conn, Framing, HeadRead, Request};
use crate::{Fault, LabOptions, Stats};

/// How long a closing connection keeps reading after its FIN, so that request bytes still in
/// flight are drained instead of turning the close into a RST (which is what Linux sends when a
/// socket is closed with unread data).
const LINGER: Duration = Duration::from_secs(2);

/// Body bytes announced by `truncated` and `stall`.
const PROMISED_BODY: u64 = 1_000_000;
/// Body bytes actually sent by `truncated` and `stall`.
const SENT_BODY: usize = 1_000;
/// Slice size used to stream generated bodies.
const CHUNK: usize = 64 * 1024;
/// The one buffer every generated body is cut from, so `/bytes/N` never allocates N.
static FILLER: [u8; CHUNK] = [b'a'; CHUNK];

/// Counters of one fault's listener, shared by its connection tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
}

impl Counters {
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request head read and returns its 1-based number for this fault.
    pub fn request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            connections: self.connections.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// Everything a connection task of one fault needs.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub fault: Fault,
    pub opts: LabOptions,
    pub counters: Counters,
    /// The certificate of a TLS certificate fault.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// Serves one accepted connection until the fault is done with it or the peer goes away.
pub(crate) async fn connection(stream: TcpStream, ctx: &Ctx) {
    if ctx.fault.tls() {
        return crate::tls::connection(stream, ctx).await;
    }
    // Small writes (heads, partial heads) must leave at once: the faults are about timing.
    let _ = stream.set_nodelay(true);
    let conn = Conn::new(stream);
    if ctx.fault.upgrade() {
        return crate::ws::connection(conn, ctx).await;
    }
    match ctx.fault {
        Fault::Ok | Fault::Slow | Fault::Flaky | Fault::Kashort | Fault::Status => {
            keep_alive(conn, ctx).await
        }
        _ => one_shot(conn, ctx).await,
    }
}

/// A keep-alive HTTP/1.1 server loop.
async fn keep_alive(mut conn: Conn, ctx: &Ctx) {
    let opts = &ctx.opts;
    let hint = opts
        .keepalive_timeout_hint
        .filter(|_| ctx.fault != Fault::Kashort);
    // kashort's whole point is an idle limit shorter than the gateway expects, unannounced. The
    // others close idle connections only when they announce a limit, and then keep their word.
    let idle = match ctx.fault {
        Fault::Kashort => Some(Duration::from_millis(opts.kashort_ms)),
        _ => hint.map(|s| Duration::from_secs(u64::from(s))),
    };
    loop {
        let read = match conn.read_head(idle).await {
            Ok(HeadRead::Idle) => return close_gracefully(conn.stream).await,
            Ok(HeadRead::Eof) | Err(_) => return,
            Ok(read) => read,
        };
        let nth = ctx.counters.request();
        let req = match read {
            HeadRead::Request(req) => req,
            HeadRead::Invalid(why) => return reject(conn, 400, why).await,
            _ => return reject(conn, 431, "request header section too large").await,
        };
        if ctx.fault == Fault::Flaky && flaky_fails(opts, nth) {
            return reset(conn.stream);
        }
        if req.expect_continue && req.body != Framing::None {
            let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
            if conn.stream.write_all(interim).await.is_err() {
                return;
            }
        }
        let body_bytes = match conn.discard_body(req.body).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return reject(conn, 400, "malformed chunked body").await
            }
            Err(_) => return,
        };
        if ctx.fault == Fault::Slow {
            tokio::time::sleep(opts.slow_delay).await;
        }
        if answer(&mut conn.stream, &req, body_bytes, ctx, hint)
            .await
            .is_err()
        {
            return;
        }
        if !req.keep_alive {
            return close_gracefully(conn.stream).await;
        }
    }
}

fn flaky_fails(opts: &LabOptions, nth: u64) -> bool {
    match opts.flaky_every {
        // checked_rem makes `Some(0)` mean "never" instead of a division by zero.
        Some(every) => nth.checked_rem(u64::from(every)) == Some(0),
        None => fastrand::f64() < opts.flaky_fraction,
    }
}

/// The answer of the keep-alive faults to one request.
async fn answer(
    stream: &mut TcpStream,
    req: &Request,
    body_bytes: u64,
    ctx: &Ctx,
    hint: Option<u32>,
) -> io::Result<()> {
    let head_only = req.method == "HEAD";
    let mut fields: Vec<(&str, String)> = Vec::new();
    if !req.keep_alive {
        fields.push(("Connection", "close".into()));
    } else {
        if req.minor == 0 {
            fields.push(("Connection", "keep-alive".into()));
        }
        if let Some(secs) = hint {
            fields.push(("Keep-Alive", format!("timeout={secs}")));
        }
    }

    // Caching controls, from the query of any healthy answer: `cc=` sets Cache-Control,
    // `etag=` an ETag (and a 304 when `If-None-Match` names it), `vary=` a Vary, `cookie=` a
    // Set-Cookie (values %-encoded).
    for (param, field) in [
        ("cc", "Cache-Control"),
        ("etag", "ETag"),
        ("vary", "Vary"),
        ("cookie", "Set-Cookie"),
    ] {
        if let Some(v) = query_param(&req.target, param) {
            fields.push((field, v));
        }
    }

    // A conditional request whose `If-None-Match` names the ETag this answer would carry:
    // 304, no body (the lab's resources never change).
    if let Some(etag) = query_param(&req.target, "etag") {
        let matches = req
            .headers
            .iter()
            .filter(|(n, _)| n == "if-none-match")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim() == etag || t.trim() == "*");
        if matches && matches!(req.method.as_str(), "GET" | "HEAD") {
            return stream.write_all(&head(304, &fields)).await;
        }
    }

    if ctx.fault == Fault::Status {
        let status = ctx.opts.status;
        // These statuses never carry a body (RFC 9110 sections 15.3.5 and 15.4.5).
        let bodiless = status == 204 || status == 304;
        let body = format!("status {status} from the lab");
        if !bodiless {
            fields.push(("Content-Type", "text/plain; charset=utf-8".into()));
            fields.push(("Content-Length", body.len().to_string()));
        }
        let mut out = head(status, &fields);
        if !bodiless && !head_only {
            out.extend_from_slice(body.as_bytes());
        }
        return stream.write_all(&out).await;
    }

    // `/bytes/N` at the end of any path, so a gateway may route it under a prefix.
    let bytes_route = req.path().rsplit_once("/bytes/").map(|(_, n)| n);
    if let (Some(n), "GET" | "HEAD") = (
        bytes_route.and_then(|n| n.parse::<u64>().ok()),
        req.method.as_str(),
    ) {
        fields.push(("Content-Type", "application/octet-stream".into()));
        fields.push(("Content-Length", n.to_string()));
        stream.write_all(&head(200, &fields)).await?;
        if !head_only {
            send_filler(stream, n).await?;
        }
        return Ok(());
    }

    let body = echo_json(ctx.fault, req, body_bytes);
    fields.push(("Content-Type", "application/json".into()));
    fields.push(("Content-Length", body.len().to_string()));
    let mut out = head(200, &fields);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await
}

fn head(status: u16, fields: &[(&str, String)]) -> Vec<u8> {
    let borrowed: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    wire::response_head(status, &borrowed)
}

/// `{"fault":..,"method":..,"path":..,"body_bytes":..,"headers":{..}}`
fn echo_json(fault: Fault, req: &Request, body_bytes: u64) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"fault\":");
    wire::push_json_str(&mut out, fault.name());
    out.push_str(",\"method\":");
    wire::push_json_str(&mut out, &req.method);
    out.push_str(",\"path\":");
    wire::push_json_str(&mut out, &req.target);
    out.push_str(&format!(",\"body_bytes\":{body_bytes},\"headers\":{{"));
    for (i, (name, value)) in req.merged_headers().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        wire::push_json_str(&mut out, name);
        out.push(':');
        wire::push_json_str(&mut out, value);
    }
    out.push_str("}}");
    out
}

async fn send_filler(stream: &mut TcpStream, mut n: u64) -> io::Result<()> {
    while n > 0 {
        let take = n.min(CHUNK as u64) as usize;
        stream.write_all(&FILLER[..take]).await?;
        n -= take as u64;
    }
    Ok(())
}

/// Answers an unusable request with a short text error and closes, as servers do.
async fn reject(mut conn: Conn, status: u16, why: &str) {
    let body = format!("{status} {}: {why}\n", wire::reason(status));
    let fields = [
        ("Content-Type", "text/plain; charset=utf-8".to_string()),
        ("Content-Length", body.len().to_string()),
        ("Connection", "close".to_string()),
    ];
    let mut out = head(status, &fields);
    out.extend_from_slice(body.as_bytes());
    if conn.stream.write_all(&out).await.is_ok() {
        close_gracefully(conn.stream).await;
    }
}

/// The faults that misbehave once per connection.
async fn one_shot(mut conn: Conn, ctx: &Ctx) {
    // Any complete head, even an invalid or oversized one, triggers the fault: the fault is the
    // point, not the request's validity.
    let target = match conn.read_head(None).await {
        Ok(HeadRead::Eof) | Ok(HeadRead::Idle) | Err(_) => return,
        Ok(HeadRead::Request(req)) => Some(req.target),
        Ok(_) => None,
    };
    ctx.counters.request();
    let mut stream = conn.stream;
    let sent = match ctx.fault {
        Fault::Reset => return reset(stream),
        Fault::Close | Fault::Hang => Ok(()),
        Fault::Midheader => stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Ty").await,
        Fault::Garbage => stream.write_all(b"this is not http\r\n\r\n").await,
        // Write errors are expected here: a gateway hangs up once the head passes its limit.
        Fault::Bigheader => {
            let size = target
                .as_deref()
                .and_then(bytes_param)
                .unwrap_or(ctx.opts.bigheader_bytes);
            send_big_head(&mut stream, size).await
        }
        Fault::Truncated | Fault::Stall => {
            let cc = target.as_deref().and_then(|t| query_param(t, "cc"));
            send_partial_body(&mut stream, cc).await
        }
        Fault::Badchunk => {
            let fields = [("Transfer-Encoding", "chunked".to_string())];
            let mut out = head(200, &fields);
            out.extend_from_slice(b"5\r\nhello\r\nzz\r\n");
            stream.write_all(&out).await
        }
        // Keep-alive faults never get here; refused and unaccepted never accept.
        _ => return,
    };
    if sent.is_err() {
        // The peer is gone; nothing left to do.
        return;
    }
    match ctx.fault {
        Fault::Hang | Fault::Stall => drain_until_eof(&mut stream).await,
        _ => close_gracefully(stream).await,
    }
}

/// The head and part of the body it promises; `cc` is a `Cache-Control` to send with it.
async fn send_partial_body(stream: &mut TcpStream, cc: Option<String>) -> io::Result<()> {
    let mut fields = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Content-Length", PROMISED_BODY.to_string()),
    ];
    if let Some(cc) = cc {
        fields.push(("Cache-Control", cc));
    }
    let mut out = head(200, &fields);
    out.extend_from_slice(&FILLER[..SENT_BODY]);
    stream.write_all(&out).await
}

/// `HTTP/1.1 200 OK`, then filler headers of about 1000 bytes each until `total` bytes, then
/// `Content-Length: 0` and the end of the head. Written in batches so memory stays bounded
/// whatever `total` is.
/// The `bytes=N` of a request target's query, as `bigheader` reads it.
fn bytes_param(target: &str) -> Option<usize> {
    target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("bytes="))?
        .parse()
        .ok()
}

/// The value of `name=` in a request target's query, %-decoded (`+` is a space).
fn query_param(target: &str, name: &str) -> Option<String> {
    let raw = target
        .split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A response head of exactly `total` bytes (status line to the empty line), made of filler
/// header lines of about 1000 bytes; heads too short for the fixed lines come out at their
/// minimum size.
async fn send_big_head(stream: &mut TcpStream, total: usize) -> io::Result<()> {
    const START: &[u8] = b"HTTP/1.1 200 OK\r\nServer: cleargate-lab\r\n";
    const END: &[u8] = b"Content-Length: 0\r\n\r\n";
    let mut batch = Vec::with_capacity(CHUNK + 1024);
    batch.extend_from_slice(START);
    let mut left = total.saturating_sub(START.len() + END.len());
    let mut n = 0u64;
    while left > 0 {
        let name = format!("X-Filler-{n}: ");
        let fixed = name.len() + 2;
        // The shortest filler line is its name and line end; a remainder too small for one is
        // folded into the line before by making that one longer.
        let line = if left > 1000 + fixed || left <= 1000 {
            left.min(1000).max(fixed)
        } else {
            left - fixed - 1
        };
        batch.extend_from_slice(name.as_bytes());
        batch.extend_from_slice(&FILLER[..line.saturating_sub(fixed)]);
        batch.extend_from_slice(b"\r\n");
        left = left.saturating_sub(line);
        n += 1;
        if batch.len() >= CHUNK {
            stream.write_all(&batch).await?;
            batch.clear();
        }
    }
    batch.extend_from_slice(END);
    stream.write_all(&batch).await
}

/// Closes with RST instead of FIN: a zero linger time makes the kernel abort the connection.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Sends FIN, then reads and drops whatever the peer still sends until it closes too (bounded
/// by [`LINGER`]), so the close is seen as a clean EOF and never as a reset.
pub(crate) async fn close_gracefully(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, drain_until_eof(&mut stream)).await;
}

/// Reads and drops input until the peer closes (or errors); used to hold a connection open.
async fn drain_until_eof(stream: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaky_every_is_deterministic() {
        let opts = LabOptions {
            flaky_every: Some(3),
            ..LabOptions::default()
        };
        let fails: Vec<bool> = (1..=6).map(|n| flaky_fails(&opts, n)).collect();
        assert_eq!(fails, [false, false, true, false, false, true]);
        let never = LabOptions {
            flaky_every: Some(0),
            ..LabOptions::default()
        };
        assert!(!(1..=10).any(|n| flaky_fails(&never, n)));
        let always = LabOptions {
            flaky_fraction: 1.0,
            ..LabOptions::default()
        };
        assert!((1..=10).all(|n| flaky_fails(&always, n)));
    }

    #[test]
    fn echo_is_json() {
        let req = wire::parse_request(
            b"GET /x?\"q\" HTTP/1.1\r\nHost: x\r\nA: 1\r\nA: 2\r\nB: \"quoted\"\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            echo_json(Fault::Ok, &req, 7),
            r#"{"fault":"ok","method":"GET","path":"/x?\"q\"","body_bytes":7,"headers":{"host":"x","a":"1, 2","b":"\"quoted\""}}"#
        );
    }
}
