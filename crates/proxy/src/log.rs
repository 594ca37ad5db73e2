//! Request logs and gateway-error lines, written off the request path by one writer thread.
//!
//! Every request ends in exactly one access line; every gateway-made error also gets a WARN (or
//! ERROR) line with its explanation. Lines are JSON by default, or a text format for terminals.
//! The line is formatted by the caller and handed to the writer through a channel, so a slow
//! terminal or disk never holds a request.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use cause::{Cause, Failure, Level, Phase};
use serde_json::{json, Map, Value};

/// `,"name":` as one literal, written in one go.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// What failed and where: cause, phase, upstream and endpoint.
fn where_fields(m: &mut Map<String, Value>, failure: &Failure) {
    m.insert("cause".into(), json!(failure.cause.as_str()));
    m.insert("phase".into(), json!(failure.phase.as_str()));
    m.insert("upstream".into(), json!(failure.upstream));
    m.insert("endpoint".into(), json!(failure.endpoint));
}

/// The facts of the failed exchange: reuse, bytes each way, and the technical detail.
fn exchange_fields(m: &mut Map<String, Value>, failure: &Failure) {
    m.insert("reused".into(), json!(failure.reused));
    m.insert("sent".into(), json!(failure.request_bytes));
    m.insert("received".into(), json!(failure.response_bytes));
    m.insert("detail".into(), json!(failure.detail));
}

/// Where log lines go.
#[derive(Clone, Debug)]
pub enum Sink {
    Stdout,
    Stderr,
    File(PathBuf),
    /// Kept in memory, for tests and embedding.
    Memory(Arc<Mutex<Vec<String>>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Lines waiting for the writer thread. Requests only append to their worker's buffer; the
/// writer takes each whole every few milliseconds (or at once when one grows large), so a busy
/// gateway writes in large batches and no request pays for a thread wake-up. The lines of one
/// write that come from more than one buffer are merged by their times (to the millisecond),
/// each buffer's order kept.
struct Pending {
    /// One buffer per worker, so that two workers never wait for each other's lines, and the
    /// last one for the lines of other threads (the gateway's own: starting, reloading,
    /// stopping).
    shards: Box<[Shard]>,
    /// Set when a buffer passed [`BATCH`]: the writer thread waits for it (or for
    /// [`FLUSH_EVERY`]).
    ready: Mutex<bool>,
    wake: Condvar,
    /// Lines dropped because the writer could not keep up (the buffer is bounded), since the
    /// last drain, and in all.
    dropped: AtomicU64,
    dropped_total: AtomicU64,
    /// Lines in batches whose write failed (a full disk, a closed pipe), in all.
    failed_total: AtomicU64,
    format: Format,
    writer: Mutex<Writer>,
}

/// One worker's pending lines, on cache lines of its own.
#[repr(align(128))]
struct Shard {
    buf: Mutex<Vec<u8>>,
    /// The buffer last written out, kept empty with its capacity for the next swap: the two
    /// trade places at every drain, so that once they have grown to the traffic's batch size
    /// a line never reallocates (and copies) the buffer it joins.
    spare: Mutex<Vec<u8>>,
}

/// The log destination, and the failure to write to it while one lasts.
struct Writer {
    out: Box<dyn Write + Send>,
    /// Lines lost since writing began to fail, and what the last failure said.
    failing: Option<(u64, String)>,
    /// The lines of several buffers, merged by time; kept for its capacity.
    merged: Vec<u8>,
}

/// The buffer is handed over early past this size.
const BATCH: usize = 64 * 1024;
/// Past this size of one worker's buffer lines are dropped (and counted) rather than let
/// memory grow.
const MAX_PENDING: usize = 16 * 1024 * 1024;
/// How long a line may wait in the buffer when traffic is light.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

impl Pending {
    /// Appends one line (and its line end) for the writer thread.
    fn push(&self, line: &str) {
        self.push_with(|buf| buf.extend_from_slice(line.as_bytes()));
    }

    /// Appends the line that `write` writes (and its line end) for the writer thread: written
    /// straight into this thread's buffer, not copied there.
    fn push_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let workers = self.shards.len() - 1;
        let shard = match upstream::is_worker() {
            true => &self.shards[upstream::worker() % workers],
            false => &self.shards[workers],
        };
        let mut buf = shard.buf.lock().unwrap();
        let before = buf.len();
        write(&mut buf);
        if buf.len() > MAX_PENDING {
            buf.truncate(before);
            drop(buf);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buf.push(b'\n');
        // The writer is woken once, by the line that fills a batch.
        let filled = before < BATCH && buf.len() >= BATCH;
        drop(buf);
        if filled {
            *self.ready.lock().unwrap() = true;
            self.wake.notify_one();
        }
    }

    /// Writes out everything pending; called by the writer thread and by `flush`. A write that
    /// fails loses its batch: the lines are counted, standard error hears of it once, and the
    /// log itself says how many were lost as soon as it can be written again.
    fn drain(&self) {
        // The writer lock is taken first, so a batch taken out is written before another drain
        // (a `flush`) can return.
        let mut guard = self.writer.lock().unwrap();
        let Writer {
            out,
            failing,
            merged,
        } = &mut *guard;
        // Each buffer handed over is replaced by its spare, as large as the batches have needed.
        let mut batches: Vec<Vec<u8>> = self
            .shards
            .iter()
            .map(|shard| {
                let spare = std::mem::take(&mut *shard.spare.lock().unwrap());
                std::mem::replace(&mut *shard.buf.lock().unwrap(), spare)
            })
            .collect();
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let mut written = Ok(());
        if let Some((lost, error)) = failing.as_ref() {
            let said = warn_line(
                self.format,
                &format!(
                    "{lost} log lines lost: writing them to the log destination failed ({error})"
                ),
            );
            written = out.write_all(said.as_bytes());
            if written.is_ok() {
                *failing = None;
            }
        }
        // One buffer with lines (one worker's, the usual case) is written as it is; the lines
        // of several are merged by time first.
        let mut filled = batches.iter().filter(|b| !b.is_empty());
        let lines: &[u8] = match (filled.next(), filled.next()) {
            (None, _) => &[],
            (Some(only), None) => only,
            (Some(_), Some(_)) => {
                merged.clear();
                merge_by_time(&batches, merged);
                merged
            }
        };
        let count = || lines.iter().filter(|&&c| c == b'\n').count() as u64;
        // Lost when they are not written whole; a failure after them (the note below, the
        // flush) loses none of them, though it is a failure all the same.
        let mut lost = 0;
        if written.is_err() {
            lost = count();
        } else if !lines.is_empty() {
            written = out.write_all(lines);
            if written.is_err() {
                lost = count();
            }
        }
        if written.is_ok() && dropped > 0 {
            let said = warn_line(
                self.format,
                &format!(
                    "{dropped} log lines dropped: the log destination is slower than the traffic"
                ),
            );
            written = out.write_all(said.as_bytes());
        }
        if written.is_ok() {
            written = out.flush();
        }
        if let Err(e) = written {
            self.failed_total.fetch_add(lost, Ordering::Relaxed);
            // Said at the next drain that can write.
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            match failing {
                Some((n, error)) => {
                    *n += lost;
                    *error = e.to_string();
                }
                None => {
                    // The log cannot say it: standard error does, once a failure.
                    let said = warn_line(
                        self.format,
                        &format!("writing to the log destination failed ({e}): log lines are lost (and counted) until it works again"),
                    );
                    let _ = std::io::stderr().write_all(said.as_bytes());
                    *failing = Some((lost, e.to_string()));
                }
            }
        }
        for (shard, mut batch) in self.shards.iter().zip(batches.drain(..)) {
            batch.clear();
            *shard.spare.lock().unwrap() = batch;
        }
    }
}

/// The time a log line starts with, as its sort key: RFC 3339 to the millisecond, fixed width,
/// so that its bytes compare as the times do. JSON lines have it as their first field
/// (`{"time":"...`), text lines as their first word; a line without one sorts first.
fn time_key(line: &[u8]) -> &[u8] {
    const JSON: &[u8] = b"{\"time\":\"";
    const WIDTH: usize = "2026-01-01T00:00:00.000Z".len();
    let start = if line.starts_with(JSON) {
        JSON.len()
    } else {
        0
    };
    line.get(start..start + WIDTH).unwrap_or(&[])
}

/// The lines of `batches`, appended to `out` in the order of their times; each batch's own
/// order is kept, and of two lines of the same millisecond the earlier batch's goes first.
fn merge_by_time(batches: &[Vec<u8>], out: &mut Vec<u8>) {
    let mut at = vec![0usize; batches.len()];
    loop {
        let mut next: Option<(usize, &[u8])> = None;
        for (i, batch) in batches.iter().enumerate() {
            if at[i] < batch.len() {
                let key = time_key(&batch[at[i]..]);
                if next.is_none_or(|(_, best)| key < best) {
                    next = Some((i, key));
                }
            }
        }
        let Some((i, _)) = next else { return };
        let rest = &batches[i][at[i]..];
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |e| e + 1);
        out.extend_from_slice(&rest[..end]);
        at[i] += end;
    }
}

/// A line written byte by byte as text. Every piece written is UTF-8 (`json_string` cuts only
/// at ASCII bytes), so this takes the bytes as they are; were one not, it would be replaced,
/// not the line lost.
fn text_of(line: Vec<u8>) -> String {
    String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A WARN line of the log's own, in the log's format, with its line end.
fn warn_line(format: Format, message: &str) -> String {
    let time = rfc3339(SystemTime::now());
    match format {
        Format::Json => {
            let mut line = format!(
                "{{\"time\":\"{time}\",\"level\":\"WARN\",\"kind\":\"gateway\",\"message\":"
            )
            .into_bytes();
            json_string(&mut line, message);
            line.extend_from_slice(b"}\n");
            text_of(line)
        }
        Format::Text => format!("{time} WARN  gateway -- {message}\n"),
    }
}

/// Log lines that never reached the destination, since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinesLost {
    /// Dropped because the destination was slower than the traffic.
    pub slow: u64,
    /// In batches whose write failed.
    pub write_error: u64,
}

enum Out {
    Buffered(Arc<Pending>),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// The gateway's logger. Cheap to share.
pub struct Logger {
    format: Format,
    out: Out,
    /// What the lines say, counted for `/metrics`.
    metrics: crate::metrics::Metrics,
    /// The latest gateway errors, newest last, for the admin API.
    recent: Mutex<std::collections::VecDeque<Value>>,
}

/// How many gateway errors the admin API keeps.
const RECENT_ERRORS: usize = 200;

impl Logger {
    /// A logger for one worker.
    pub fn new(format: Format, sink: Sink) -> std::io::Result<Logger> {
        Logger::for_workers(format, sink, 1)
    }

    /// A logger with a buffer for each of `workers` workers (lines of a thread that is no
    /// worker go to the first).
    pub fn for_workers(format: Format, sink: Sink, workers: usize) -> std::io::Result<Logger> {
        let out = match sink {
            Sink::Memory(lines) => Out::Memory(lines),
            other => {
                let writer: Box<dyn Write + Send> = match other {
                    Sink::Stdout => Box::new(std::io::stdout()),
                    Sink::Stderr => Box::new(std::io::stderr()),
                    Sink::File(path) => Box::new(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)?,
                    ),
                    Sink::Memory(_) => unreachable!(),
                };
                let pending = Arc::new(Pending {
                    // A buffer for each worker, and one for the other threads.
                    shards: (0..workers.max(1) + 1)
                        .map(|_| Shard {
                            buf: Mutex::new(Vec::with_capacity(2 * BATCH)),
                            spare: Mutex::new(Vec::with_capacity(2 * BATCH)),
                        })
                        .collect(),
                    ready: Mutex::new(false),
                    wake: Condvar::new(),
                    dropped: AtomicU64::new(0),
                    dropped_total: AtomicU64::new(0),
                    failed_total: AtomicU64::new(0),
                    format,
                    writer: Mutex::new(Writer {
                        out: writer,
                        failing: None,
                        merged: Vec::new(),
                    }),
                });
                let p = pending.clone();
                std::thread::Builder::new()
                    .name("cleargate-log".into())
                    .spawn(move || loop {
                        {
                            let ready = p.ready.lock().unwrap();
                            let (mut ready, _) = p
                                .wake
                                .wait_timeout_while(ready, FLUSH_EVERY, |ready| !*ready)
                                .unwrap();
                            *ready = false;
                        }
                        p.drain();
                    })?;
                Out::Buffered(pending)
            }
        };
        Ok(Logger {
            format,
            out,
            metrics: crate::metrics::Metrics::default(),
            recent: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// The counters kept beside the log: every access line, gateway error and retry.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    fn emit(&self, line: String) {
        match &self.out {
            Out::Buffered(p) => p.push(&line),
            Out::Memory(lines) => lines.lock().unwrap().push(line),
        }
    }

    /// Log lines that never reached the destination (none for lines kept in memory).
    pub fn lines_lost(&self) -> LinesLost {
        match &self.out {
            Out::Buffered(p) => LinesLost {
                slow: p.dropped_total.load(Ordering::Relaxed),
                write_error: p.failed_total.load(Ordering::Relaxed),
            },
            Out::Memory(_) => LinesLost::default(),
        }
    }

    /// Writes out every line logged so far.
    pub fn flush(&self) {
        if let Out::Buffered(p) = &self.out {
            p.drain();
        }
    }

    /// Writes one event: `fields` in order, after time and level.
    fn event(&self, level: &str, kind: &str, fields: Map<String, Value>) {
        let time = rfc3339(SystemTime::now());
        let line = match self.format {
            Format::Json => {
                let mut m = Map::new();
                m.insert("time".into(), json!(time));
                m.insert("level".into(), json!(level));
                m.insert("kind".into(), json!(kind));
                m.extend(fields);
                Value::Object(m).to_string()
            }
            Format::Text => {
                let mut s = format!("{time} {level:<5} {kind}");
                for (k, v) in fields {
                    match v {
                        Value::Null => continue,
                        Value::String(t) if k == "message" => s.push_str(&format!(" -- {t}")),
                        Value::String(t) => s.push_str(&format!(" {k}={}", quote_if_needed(&t))),
                        Value::Array(items) if k == "attempts" => {
                            for (i, a) in items.iter().enumerate() {
                                s.push_str(&format!(" try{}={}", i + 1, text_attempt(a)));
                            }
                        }
                        other => s.push_str(&format!(" {k}={other}")),
                    }
                }
                s
            }
        };
        self.emit(line);
    }

    /// A gateway event that is not tied to a request (start, stop, listener problems).
    pub fn notice(&self, level: Level, message: &str, fields: &[(&str, Value)]) {
        let mut m = Map::new();
        for (k, v) in fields {
            m.insert((*k).into(), v.clone());
        }
        m.insert("message".into(), json!(message));
        self.event(level.as_str(), "gateway", m);
    }

    /// The WARN line of a gateway-made error, with its explanation.
    ///
    /// (Its fields, and those of [`Logger::attempt_retried`], come from [`where_fields`] and
    /// [`exchange_fields`], so the two lines name a failure alike.)
    pub fn gateway_error(
        &self,
        request_id: &str,
        failure: &Failure,
        attempts: u32,
        status_sent: Option<u16>,
    ) {
        self.metrics.gateway_error(failure);
        let answer = failure.answer();
        let mut m = Map::new();
        m.insert("request_id".into(), json!(request_id));
        m.insert("status".into(), json!(status_sent.unwrap_or(answer.status)));
        where_fields(&mut m, failure);
        m.insert("attempts".into(), json!(attempts));
        exchange_fields(&mut m, failure);
        let mut message = format!("{} ({})", failure.cause.summary(), failure.phase.words());
        if failure.reused
            && failure.response_bytes == 0
            && matches!(failure.cause, Cause::Closed | Cause::Reset)
        {
            message.push_str("; this is the keep-alive race: the upstream closed a pooled connection just as it was reused");
        }
        if status_sent.is_some() {
            message.push_str(
                "; the response head was already sent, so the client connection was aborted",
            );
        }
        m.insert("message".into(), json!(message));
        {
            // The error path only: a short lock, never taken by a request that succeeds.
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_ERRORS {
                recent.pop_front();
            }
            let mut kept = m.clone();
            if let Some(first) = &failure.evidence {
                // What the upstream sent, escaped: the evidence of a malformed response.
                kept.insert("upstream_sent".into(), json!(cause::escape_bytes(first)));
            }
            kept.insert(
                "time".into(),
                json!(httpdate::fmt_http_date(std::time::SystemTime::now())),
            );
            recent.push_back(Value::Object(kept));
        }
        self.event(answer.level.as_str(), "gateway_error", m);
    }

    /// The latest gateway errors (at most 200), newest first.
    pub fn recent_errors(&self) -> Vec<Value> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().cloned().collect()
    }

    /// The line of an attempt that failed and is being retried: the client may never see the
    /// failure, but the operator should. WARN, except for the keep-alive race, which the pool
    /// expects now and then (INFO).
    pub fn attempt_retried(&self, request_id: &str, failure: &Failure, attempt: u32, race: bool) {
        self.metrics.retry(failure);
        let mut m = Map::new();
        m.insert("request_id".into(), json!(request_id));
        where_fields(&mut m, failure);
        m.insert("attempt".into(), json!(attempt));
        exchange_fields(&mut m, failure);
        m.insert(
            "message".into(),
            json!(format!(
                "attempt {attempt} failed: {} ({}); retried on another endpoint",
                failure.cause.summary(),
                failure.phase.words()
            )),
        );
        let level = if race { Level::Info } else { Level::Warn };
        self.event(level.as_str(), "attempt_retried", m);
    }

    pub fn access(&self, record: &AccessRecord) {
        self.metrics
            .request(record.upstream.as_deref(), record.status, record.duration);
        if self.format == Format::Json {
            // The busiest line of all: written straight into the writer's buffer, no
            // intermediate map and no allocation of its own.
            match &self.out {
                Out::Buffered(p) => p.push_with(|buf| access_json(buf, record, net::clock::wall())),
                Out::Memory(_) => {
                    // Sized once, by `access_json`.
                    let mut line = Vec::new();
                    access_json(&mut line, record, net::clock::wall());
                    self.emit(text_of(line));
                }
            }
            return;
        }
        let mut m = Map::new();
        m.insert("client".into(), json!(record.client.map(|c| c.to_string())));
        m.insert("method".into(), json!(record.method.as_str()));
        m.insert("host".into(), json!(record.host.as_str()));
        m.insert("path".into(), json!(record.path.as_str()));
        m.insert("proto".into(), json!(record.proto));
        m.insert("status".into(), json!(record.status));
        m.insert("bytes_in".into(), json!(record.bytes_in));
        m.insert("bytes_out".into(), json!(record.bytes_out));
        m.insert("duration_ms".into(), json!(ms(record.duration)));
        m.insert("request_id".into(), json!(record.request_id.as_str()));
        m.insert("upstream".into(), json!(record.upstream.as_deref()));
        m.insert("endpoint".into(), json!(record.endpoint.as_deref()));
        m.insert("cause".into(), json!(record.cause.map(Cause::as_str)));
        m.insert("phase".into(), json!(record.phase.map(Phase::as_str)));
        m.insert("gateway_error".into(), json!(record.gateway_error));
        if let Some(c) = record.cache {
            m.insert("cache".into(), json!(c));
        }
        let attempts: Vec<Value> = record
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "endpoint": &*a.endpoint,
                    "reused": a.reused,
                    "idle_ms": a.idle.map(ms),
                    "conn_uses": a.conn_uses,
                    "conn_age_ms": a.conn_age.map(ms),
                    "cause": a.cause.map(Cause::as_str),
                    "phase": a.phase.map(Phase::as_str),
                    "status": a.status,
                    "connect_ms": a.connect.map(ms),
                    "first_byte_ms": a.first_byte.map(ms),
                    "total_ms": a.total.map(ms),
                })
            })
            .collect();
        if self.format == Format::Json || !attempts.is_empty() {
            m.insert("attempts".into(), Value::Array(attempts));
        }
        self.event("INFO", "access", m);
    }
}

/// The JSON access line, with the same fields in the same order as the text format, written
/// into `o` by hand: numbers and times without `fmt`, strings copied whole unless they hold a
/// byte to escape, no allocation when `o` has room.
fn access_json(o: &mut Vec<u8>, r: &AccessRecord, now: SystemTime) {
    o.reserve(line_room(r));
    o.extend_from_slice(b"{\"time\":\"");
    push_rfc3339(o, now);
    o.extend_from_slice(b"\",\"level\":\"INFO\",\"kind\":\"access\",\"client\":");
    // Addresses need no escaping.
    match (&r.client_text, r.client) {
        (Some(text), _) => {
            o.push(b'"');
            o.extend_from_slice(text.as_str().as_bytes());
            o.push(b'"');
        }
        // A record that is not a connection's request (rare): written from the address.
        (None, Some(c)) => {
            let mut text = crate::headers::IpText::new();
            text.push_socket_addr(c);
            o.push(b'"');
            o.extend_from_slice(text.as_bytes());
            o.push(b'"');
        }
        (None, None) => o.extend_from_slice(b"null"),
    }
    json_plain(o, key!("method"), Some(r.method.as_str()));
    json_str(o, key!("host"), Some(&r.host));
    json_str(o, key!("path"), Some(&r.path));
    json_plain(o, key!("proto"), Some(r.proto));
    json_uint(o, key!("status"), Some(u64::from(r.status)));
    json_uint(o, key!("bytes_in"), Some(r.bytes_in));
    json_uint(o, key!("bytes_out"), Some(r.bytes_out));
    json_ms(o, key!("duration_ms"), Some(r.duration));
    json_str(o, key!("request_id"), Some(&r.request_id));
    json_str(o, key!("upstream"), r.upstream.as_deref());
    json_str(o, key!("endpoint"), r.endpoint.as_deref());
    json_plain(o, key!("cause"), r.cause.map(Cause::as_str));
    json_plain(o, key!("phase"), r.phase.map(Phase::as_str));
    json_bool(o, key!("gateway_error"), r.gateway_error);
    if r.cache.is_some() {
        json_str(o, key!("cache"), r.cache);
    }
    o.extend_from_slice(b",\"attempts\":[");
    for (i, a) in r.attempts.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        o.extend_from_slice(b"{\"endpoint\":");
        json_string(o, &a.endpoint);
        json_bool(o, key!("reused"), a.reused);
        json_ms(o, key!("idle_ms"), a.idle);
        json_uint(o, key!("conn_uses"), Some(u64::from(a.conn_uses)));
        json_ms(o, key!("conn_age_ms"), a.conn_age);
        json_plain(o, key!("cause"), a.cause.map(Cause::as_str));
        json_plain(o, key!("phase"), a.phase.map(Phase::as_str));
        json_uint(o, key!("status"), a.status.map(u64::from));
        json_ms(o, key!("connect_ms"), a.connect);
        json_ms(o, key!("first_byte_ms"), a.first_byte);
        json_ms(o, key!("total_ms"), a.total);
        o.push(b'}');
    }
    o.extend_from_slice(b"]}");
}

/// Enough room for `r`'s access line, so that writing it grows the buffer at most once: the
/// fixed text, numbers at their longest, and every string as if each byte were escaped.
fn line_room(r: &AccessRecord) -> usize {
    let text = |s: Option<&str>| s.map_or(0, str::len) * 6;
    let strings = text(Some(&r.host))
        + text(Some(&r.path))
        + text(Some(&r.request_id))
        + text(r.upstream.as_deref())
        + text(r.endpoint.as_deref())
        + text(r.cache);
    let attempts: usize = r.attempts.iter().map(|a| 512 + a.endpoint.len() * 6).sum();
    1024 + strings + attempts
}

/// A key made by [`key!`].
// Inlined, so that each key is a constant and its copy needs no call.
#[inline(always)]
fn json_key(o: &mut Vec<u8>, key: &str) {
    o.extend_from_slice(key.as_bytes());
}

/// The decimal pairs `00` to `99`, two digits written at a time.
static DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Decimal digits of `v`, written in place: two at a time, from the last.
fn push_uint(o: &mut Vec<u8>, mut v: u64) {
    // Most numbers of a line are a digit long (a zero, a short time).
    if v < 10 {
        o.push(b'0' + v as u8);
        return;
    }
    let n = v.checked_ilog10().map_or(1, |l| l as usize + 1);
    o.reserve(n);
    let len = o.len();
    let digits = &mut o.spare_capacity_mut()[..n];
    let mut i = n;
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        digits[i].write(DIGIT_PAIRS[pair]);
        digits[i + 1].write(DIGIT_PAIRS[pair + 1]);
    }
    // One or two digits are left, and as many places at the front.
    if v >= 10 {
        let pair = v as usize * 2;
        digits[0].write(DIGIT_PAIRS[pair]);
        digits[1].write(DIGIT_PAIRS[pair + 1]);
    } else {
        digits[0].write(b'0' + v as u8);
    }
    debug_assert_eq!(i, if v >= 10 { 2 } else { 1 });
    // SAFETY: `v` has exactly `n` digits, and each of the `n` places after `len` was written.
    unsafe { o.set_len(len + n) };
}

/// `v` with at least `width` digits, zero-padded.
fn push_padded(o: &mut Vec<u8>, v: u64, width: usize) {
    let mut n = 1;
    let mut x = v;
    while x >= 10 {
        x /= 10;
        n += 1;
    }
    for _ in n..width {
        o.push(b'0');
    }
    push_uint(o, v);
}

// Inlined, so that each key is a constant and its copy needs no call.
#[inline(always)]
fn json_uint(o: &mut Vec<u8>, key: &str, v: Option<u64>) {
    json_key(o, key);
    match v {
        Some(v) => push_uint(o, v),
        None => o.extend_from_slice(b"null"),
    }
}

// Inlined, so that each key is a constant and its copy needs no call.
#[inline(always)]
fn json_bool(o: &mut Vec<u8>, key: &str, v: bool) {
    json_key(o, key);
    o.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Milliseconds rounded to the microsecond, as the shortest decimal: `12`, `0.5`, `3.142`
/// (what `ms(d)` prints through `fmt`).
// Inlined, so that each key is a constant and its copy needs no call.
#[inline(always)]
fn json_ms(o: &mut Vec<u8>, key: &str, d: Option<Duration>) {
    json_key(o, key);
    let Some(d) = d else {
        o.extend_from_slice(b"null");
        return;
    };
    let micros = micros(d);
    push_uint(o, micros / 1000);
    // The microseconds after a point, without trailing zeros.
    let frac = (micros % 1000) as u32;
    if frac != 0 {
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = match frac {
            f if f % 10 != 0 => 4,
            f if f % 100 != 0 => 3,
            _ => 2,
        };
        o.extend_from_slice(&digits[..len]);
    }
}

/// `,"key":"escaped"`, `null` when absent.
// Inlined, so that each key is a constant and its copy needs no call.
#[inline(always)]
fn json_str(o: &mut Vec<u8>, key: &str, v: Option<&str>) {
    json_key(o, key);
    match v {
        Some(v) => json_string(o, v),
        None => o.extend_from_slice(b"null"),
    }
}

/// `,"key":"value"` for a value that never needs escaping (a method, which is a token; a
/// protocol name; a cause or a phase), copied as it is; `null` when absent.
// Inlined, so that each key is a constant and its copy needs no call.
#[inline(always)]
fn json_plain(o: &mut Vec<u8>, key: &str, v: Option<&str>) {
    json_key(o, key);
    match v {
        Some(v) => {
            debug_assert!(!v.bytes().any(|b| ESCAPED[usize::from(b)]), "{v:?}");
            o.push(b'"');
            o.extend_from_slice(v.as_bytes());
            o.push(b'"');
        }
        None => o.extend_from_slice(b"null"),
    }
}

/// The bytes a JSON string cannot hold as they are: controls, `"` and `\\`.
static ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// True when one of the eight bytes in `w` is a control, `"` or `\\` (it may also be true
/// for a byte just above one of those; the caller then looks byte by byte).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    below_space || zero_in(w ^ (ONES * u64::from(b'"'))) || zero_in(w ^ (ONES * u64::from(b'\\')))
}

/// False only when no byte of `bytes` needs escaping; true when one may (the byte-by-byte
/// path then decides). Eight bytes at a time, the last eight read again where they overlap.
fn may_need_escape(bytes: &[u8]) -> bool {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| ESCAPED[usize::from(b)]);
    }
    let mut at = 0;
    while at + 8 <= bytes.len() {
        if needs_escape(word(at)) {
            return true;
        }
        at += 8;
    }
    at < bytes.len() && needs_escape(word(bytes.len() - 8))
}

/// A JSON string literal (RFC 8259 escaping).
fn json_string(o: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    o.push(b'"');
    // Nearly every string needs no escaping and is copied whole, between its quotes.
    if !may_need_escape(bytes) {
        o.extend_from_slice(bytes);
        o.push(b'"');
        return;
    }
    // Runs of bytes that need no escaping are copied whole. Every byte escaped is ASCII, so
    // each run ends on a character boundary and the line stays UTF-8.
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !ESCAPED[usize::from(b)] {
            continue;
        }
        o.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        match b {
            b'"' => o.extend_from_slice(b"\\\""),
            b'\\' => o.extend_from_slice(b"\\\\"),
            b'\n' => o.extend_from_slice(b"\\n"),
            b'\r' => o.extend_from_slice(b"\\r"),
            b'\t' => o.extend_from_slice(b"\\t"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                o.extend_from_slice(b"\\u00");
                o.push(HEX[usize::from(b >> 4)]);
                o.push(HEX[usize::from(b & 0xf)]);
            }
        }
    }
    o.extend_from_slice(&bytes[start..]);
    o.push(b'"');
}

/// `127.0.0.1:3001/refused@connect/0.2ms` or `127.0.0.1:3001/200/connect=0.1ms,first_byte=2.3ms`.
fn text_attempt(a: &Value) -> String {
    let mut s = a["endpoint"].as_str().unwrap_or("-").to_string();
    if let (Some(c), Some(p)) = (a["cause"].as_str(), a["phase"].as_str()) {
        s.push_str(&format!("/{c}@{p}"));
    } else if let Some(st) = a["status"].as_u64() {
        s.push_str(&format!("/{st}"));
    }
    if a["reused"].as_bool() == Some(true) {
        s.push_str("/reused");
    }
    let times: Vec<String> = ["connect_ms", "first_byte_ms", "total_ms"]
        .iter()
        .filter_map(|k| {
            a[*k]
                .as_f64()
                .map(|v| format!("{}={v}ms", k.trim_end_matches("_ms")))
        })
        .collect();
    if !times.is_empty() {
        s.push('/');
        s.push_str(&times.join(","));
    }
    s
}

fn ms(d: Duration) -> f64 {
    micros(d) as f64 / 1000.0
}

/// `d` rounded to the microsecond, in integers (exact however long `d` is).
fn micros(d: Duration) -> u64 {
    d.as_secs() * 1_000_000 + u64::from((d.subsec_nanos() + 500) / 1000)
}

fn quote_if_needed(s: &str) -> String {
    if s.is_empty() || s.contains([' ', '"', '=']) {
        format!("{s:?}")
    } else {
        s.to_string()
    }
}

/// One attempt at the upstream, for the access line.
#[derive(Clone, Debug, Default)]
pub struct AttemptRecord {
    pub endpoint: std::sync::Arc<str>,
    pub reused: bool,
    /// How long the pooled connection had been idle, when reused.
    pub idle: Option<Duration>,
    /// Requests the connection had carried before this one.
    pub conn_uses: u32,
    /// How old the connection was when this attempt started.
    pub conn_age: Option<Duration>,
    pub cause: Option<Cause>,
    pub phase: Option<Phase>,
    pub status: Option<u16>,
    pub connect: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub total: Option<Duration>,
}

/// A request's attempts, in order. The first is held in place: nearly every request makes
/// exactly one, and it then costs no allocation.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    first: Option<AttemptRecord>,
    more: Vec<AttemptRecord>,
}

impl AttemptRecord {
    /// An attempt at `endpoint`, nothing measured yet. (Not `..Default::default()`: the
    /// default's empty name is a shared static whose count every worker would touch.)
    pub fn at(endpoint: std::sync::Arc<str>) -> AttemptRecord {
        AttemptRecord {
            endpoint,
            reused: false,
            idle: None,
            conn_uses: 0,
            conn_age: None,
            cause: None,
            phase: None,
            status: None,
            connect: None,
            first_byte: None,
            total: None,
        }
    }
}

impl Attempts {
    pub fn push(&mut self, a: AttemptRecord) {
        match self.first {
            None => self.first = Some(a),
            Some(_) => self.more.push(a),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &AttemptRecord> {
        self.first.iter().chain(&self.more)
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn last_mut(&mut self) -> Option<&mut AttemptRecord> {
        match self.more.last_mut() {
            Some(a) => Some(a),
            None => self.first.as_mut(),
        }
    }
}

impl From<Vec<AttemptRecord>> for Attempts {
    fn from(all: Vec<AttemptRecord>) -> Attempts {
        let mut attempts = Attempts::default();
        for a in all {
            attempts.push(a);
        }
        attempts
    }
}

/// The method of an access line about a connection rather than a request: `-`.
pub fn no_request_method() -> http::Method {
    http::Method::from_bytes(b"-").unwrap_or_default()
}

/// Everything the access line says about one request.
#[derive(Clone, Debug, Default)]
pub struct AccessRecord {
    pub client: Option<SocketAddr>,
    /// `client` as text, when the connection made it once for all its requests.
    pub client_text: Option<Inline>,
    /// `-` for a line about a connection rather than a request.
    pub method: http::Method,
    /// Held in place when short (nearly always).
    pub host: Text,
    /// The request's path and query, shared with its target (so the head's bytes live as long
    /// as the record: to the end of the response, no longer).
    pub path: Text,
    pub proto: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    /// Shared with the request's `X-Request-Id` and with the one the gateway sets.
    pub request_id: Text,
    pub upstream: Option<std::sync::Arc<str>>,
    pub endpoint: Option<std::sync::Arc<str>>,
    pub cause: Option<Cause>,
    pub phase: Option<Phase>,
    pub gateway_error: bool,
    pub attempts: Attempts,
    /// On a caching route: what the cache did (`hit`, `miss`, `stale`, ...); absent elsewhere.
    pub cache: Option<&'static str>,
}

/// Text of a record that is most often bytes a request already holds (its target, a header
/// value): shared with them, a reference counted, instead of copied into a string of its own;
/// or, when short, held in place.
#[derive(Clone, Debug)]
pub struct Text(Repr);

#[derive(Clone, Debug)]
enum Repr {
    Owned(String),
    /// A short text held in place (a host name, most often): no allocation.
    Inline(Inline),
    /// A header value of ASCII bytes only (checked when made, by [`Text::ascii_value`]).
    Value(http::HeaderValue),
    Path(http::uri::PathAndQuery),
}

/// Up to [`Inline::ROOM`] bytes of UTF-8, held in place.
#[derive(Clone, Copy, Debug)]
pub struct Inline {
    len: u8,
    bytes: [u8; Inline::ROOM],
}

impl Inline {
    pub const ROOM: usize = 38;

    /// `s` held in place, when it fits.
    pub fn new(s: &str) -> Option<Inline> {
        let mut inline = Inline {
            len: u8::try_from(s.len())
                .ok()
                .filter(|&n| usize::from(n) <= Self::ROOM)?,
            bytes: [0; Inline::ROOM],
        };
        inline.bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(inline)
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the bytes were a whole `&str`'s (`new`), changed since only by
        // `make_ascii_lowercase`, which keeps UTF-8 UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }

    pub fn make_ascii_lowercase(&mut self) {
        self.bytes[..usize::from(self.len)].make_ascii_lowercase();
    }
}

impl Text {
    /// `s`, held in place when it is short, else copied into a string of its own.
    pub fn copied(s: &str) -> Text {
        match Inline::new(s) {
            Some(inline) => Text(Repr::Inline(inline)),
            None => Text(Repr::Owned(s.to_string())),
        }
    }

    /// `v`, shared, when it is ASCII.
    pub fn ascii_value(v: &http::HeaderValue) -> Option<Text> {
        v.as_bytes()
            .is_ascii()
            .then(|| Text(Repr::Value(v.clone())))
    }

    /// A request target's path and query, shared.
    pub fn path(p: &http::uri::PathAndQuery) -> Text {
        Text(Repr::Path(p.clone()))
    }

    /// The header value this text is, when it is one.
    pub fn header_value(&self) -> Option<&http::HeaderValue> {
        match &self.0 {
            Repr::Value(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(s) => s,
            Repr::Inline(inline) => inline.as_str(),
            // SAFETY: a `Value` holds ASCII bytes only (`ascii_value`), which are UTF-8.
            Repr::Value(v) => unsafe { std::str::from_utf8_unchecked(v.as_bytes()) },
            Repr::Path(p) => p.as_str(),
        }
    }
}

impl Default for Text {
    fn default() -> Text {
        Text(Repr::Owned(String::new()))
    }
}

impl From<Inline> for Text {
    fn from(inline: Inline) -> Text {
        Text(Repr::Inline(inline))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Repr::Owned(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Repr::Owned(s.to_string()))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `2026-11-23T10:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let mut s = Vec::with_capacity(24);
    push_rfc3339(&mut s, t);
    text_of(s)
}

/// The civil date of `secs` since 1970-01-01 UTC: year, month, day (Howard Hinnant's algorithm).
fn civil_date(secs: u64) -> (i64, i64, i64) {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Writes `t` as `2026-11-23T10:04:05.123Z` into `o`.
fn push_rfc3339(o: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        /// The last second written, and its text up to the seconds: every line of that second
        /// reuses it.
        static SECOND: std::cell::RefCell<(u64, Vec<u8>)> =
            const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
    }
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            push_date_time(&mut cached.1, secs);
            cached.0 = secs;
        }
        o.extend_from_slice(&cached.1);
    });
    let ms = d.subsec_millis();
    o.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// `2026-11-23T10:04:05` for `secs` since 1970-01-01 UTC.
fn push_date_time(o: &mut Vec<u8>, secs: u64) {
    let rem = secs % 86_400;
    let (year, month, day) = civil_date(secs);
    push_padded(o, year.max(0) as u64, 4);
    o.push(b'-');
    push_padded(o, month as u64, 2);
    o.push(b'-');
    push_padded(o, day as u64, 2);
    o.push(b'T');
    push_padded(o, rem / 3600, 2);
    o.push(b':');
    push_padded(o, rem % 3600 / 60, 2);
    o.push(b':');
    push_padded(o, rem % 60, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_435_445_123);
        assert_eq!(rfc3339(t), "2026-11-23T12:04:05.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_access_lines_escape_and_parse() {
        let r = AccessRecord {
            client: Some("127.0.0.1:5000".parse().unwrap()),
            method: http::Method::GET,
            host: "h".into(),
            path: "/a\"b\\c\n\u{1}é".into(),
            proto: "HTTP/1.1",
            status: 502,
            duration: Duration::from_micros(1500),
            request_id: "id".into(),
            cause: Some(Cause::Reset),
            phase: Some(Phase::ReadHead),
            gateway_error: true,
            attempts: Attempts::from(vec![AttemptRecord {
                endpoint: "127.0.0.1:1".into(),
                reused: true,
                idle: Some(Duration::from_millis(40)),
                cause: Some(Cause::Reset),
                phase: Some(Phase::ReadHead),
                ..AttemptRecord::default()
            }]),
            ..AccessRecord::default()
        };
        let mut line = Vec::new();
        access_json(&mut line, &r, SystemTime::now());
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["status"], 502);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream"], Value::Null);
        assert_eq!(v["cause"], "reset");
        assert_eq!(v["attempts"][0]["idle_ms"], 40.0);
        assert_eq!(v["attempts"][0]["reused"], true);
        assert_eq!(v["attempts"][0]["status"], Value::Null);
    }

    /// The access line as it was written through `fmt` before it was written by hand: the
    /// reference the hand-written line must match byte for byte.
    fn reference_line(r: &AccessRecord, now: SystemTime) -> String {
        use std::fmt::Write as _;
        fn reference_string(s: &str) -> String {
            let mut o = String::from('"');
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    '\n' => o.push_str("\\n"),
                    '\r' => o.push_str("\\r"),
                    '\t' => o.push_str("\\t"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(o, "\\u{:04x}", c as u32);
                    }
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
        fn reference_str(o: &mut String, key: &str, v: Option<&str>) {
            o.push_str(key);
            match v {
                Some(v) => o.push_str(&reference_string(v)),
                None => o.push_str("null"),
            }
        }
        fn raw(o: &mut String, key: &str, v: Option<impl std::fmt::Display>) {
            o.push_str(",\"");
            o.push_str(key);
            o.push_str("\":");
            match v {
                Some(v) => {
                    let _ = write!(o, "{v}");
                }
                None => o.push_str("null"),
            }
        }
        fn reference_time(t: SystemTime) -> String {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let secs = d.as_secs();
            let rem = secs % 86_400;
            let (year, month, day) = civil_date(secs);
            format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                d.subsec_millis()
            )
        }
        let mut o = String::new();
        o.push_str("{\"time\":\"");
        o.push_str(&reference_time(now));
        o.push_str("\",\"level\":\"INFO\",\"kind\":\"access\"");
        let client = r.client.map(|c| c.to_string());
        reference_str(&mut o, key!("client"), client.as_deref());
        reference_str(&mut o, key!("method"), Some(r.method.as_str()));
        reference_str(&mut o, key!("host"), Some(&r.host));
        reference_str(&mut o, key!("path"), Some(&r.path));
        reference_str(&mut o, key!("proto"), Some(r.proto));
        raw(&mut o, "status", Some(r.status));
        raw(&mut o, "bytes_in", Some(r.bytes_in));
        raw(&mut o, "bytes_out", Some(r.bytes_out));
        raw(&mut o, "duration_ms", Some(ms(r.duration)));
        reference_str(&mut o, key!("request_id"), Some(&r.request_id));
        reference_str(&mut o, key!("upstream"), r.upstream.as_deref());
        reference_str(&mut o, key!("endpoint"), r.endpoint.as_deref());
        reference_str(&mut o, key!("cause"), r.cause.map(Cause::as_str));
        reference_str(&mut o, key!("phase"), r.phase.map(Phase::as_str));
        raw(&mut o, "gateway_error", Some(r.gateway_error));
        if r.cache.is_some() {
            reference_str(&mut o, key!("cache"), r.cache);
        }
        o.push_str(",\"attempts\":[");
        for (i, a) in r.attempts.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str("{\"endpoint\":");
            o.push_str(&reference_string(&a.endpoint));
            raw(&mut o, "reused", Some(a.reused));
            raw(&mut o, "idle_ms", a.idle.map(ms));
            raw(&mut o, "conn_uses", Some(a.conn_uses));
            raw(&mut o, "conn_age_ms", a.conn_age.map(ms));
            reference_str(&mut o, key!("cause"), a.cause.map(Cause::as_str));
            reference_str(&mut o, key!("phase"), a.phase.map(Phase::as_str));
            raw(&mut o, "status", a.status);
            raw(&mut o, "connect_ms", a.connect.map(ms));
            raw(&mut o, "first_byte_ms", a.first_byte.map(ms));
            raw(&mut o, "total_ms", a.total.map(ms));
            o.push('}');
        }
        o.push_str("]}");
        o
    }

    #[test]
    fn strings_are_escaped_wherever_the_byte_to_escape_sits() {
        // The fast path looks at eight bytes at a time: each byte that needs escaping (and
        // its neighbours that do not) is tried at every offset of a longer string.
        for special in [
            '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '!', '#', '[', ']', 'é', '\u{7f}',
        ] {
            for at in 0..24 {
                let mut text: String = "abcdefghijklmnopqrstuvwx".into();
                text.insert(at, special);
                let mut ours = Vec::new();
                json_string(&mut ours, &text);
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    serde_json::to_string(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn the_hand_written_access_line_is_byte_for_byte_the_reference() {
        let mut rng = fastrand::Rng::with_seed(7);
        let durations = |rng: &mut fastrand::Rng| -> Option<Duration> {
            match rng.u8(..6) {
                0 => None,
                1 => Some(Duration::ZERO),
                2 => Some(Duration::from_nanos(rng.u64(..2_000_000))),
                3 => Some(Duration::from_micros(rng.u64(..100_000_000))),
                4 => Some(Duration::from_millis(rng.u64(..10_000) * 10)),
                _ => Some(Duration::from_nanos(rng.u64(..3_600_000_000_000))),
            }
        };
        let clients = [
            None,
            Some("127.0.0.1:40250".parse().unwrap()),
            Some("[::1]:8080".parse().unwrap()),
            Some("[2001:db8::1:0:0:1]:65535".parse().unwrap()),
            Some("10.0.0.255:1".parse().unwrap()),
        ];
        let mut line = Vec::new();
        for i in 0..20_000u64 {
            let attempts: Vec<AttemptRecord> = (0..rng.usize(..4))
                .map(|_| AttemptRecord {
                    endpoint: format!("10.0.0.{}:{}", rng.u8(..), rng.u16(..)).into(),
                    reused: rng.bool(),
                    idle: durations(&mut rng),
                    conn_uses: rng.u32(..),
                    conn_age: durations(&mut rng),
                    cause: [None, Some(Cause::Reset), Some(Cause::Timeout)][rng.usize(..3)],
                    phase: [None, Some(Phase::ReadHead)][rng.usize(..2)],
                    status: [None, Some(200), Some(503)][rng.usize(..3)],
                    connect: durations(&mut rng),
                    first_byte: durations(&mut rng),
                    total: durations(&mut rng),
                })
                .collect();
            let client = clients[rng.usize(..clients.len())];
            let r = AccessRecord {
                client,
                // The text the connection made once, or none (then written from `client`).
                client_text: client
                    .filter(|_| rng.bool())
                    .and_then(|c| Inline::new(&c.to_string())),
                method: [http::Method::GET, http::Method::POST, no_request_method()]
                    [rng.usize(..3)]
                .clone(),
                // Short and long, with a byte to escape in the first word, in the last
                // (overlapping) one, or nowhere.
                host: ["gw.test", "", "h\u{7}\u{1f}ö", "api.example.test:8443"][rng.usize(..4)]
                    .into(),
                // Owned, or shared with a request target where the text is one.
                path: match [
                    "/",
                    "/a\"b\\c\n\t\r",
                    "/ü?x=1",
                    "/a/long/path/of/many/segments?q=1",
                    "/a/long/path/of/many/segments\u{1}",
                    "/0123456789\"",
                ][rng.usize(..6)]
                {
                    p if rng.bool() => match http::uri::PathAndQuery::try_from(p) {
                        Ok(target) => Text::path(&target),
                        Err(_) => p.into(),
                    },
                    p => p.into(),
                },
                proto: ["HTTP/1.1", "HTTP/2.0"][rng.usize(..2)],
                status: rng.u16(..),
                bytes_in: rng.u64(..),
                bytes_out: [0, u64::MAX, rng.u64(..)][rng.usize(..3)],
                duration: durations(&mut rng).unwrap_or_default(),
                request_id: match format!("{:016x}", rng.u64(..)) {
                    id if rng.bool() => {
                        Text::ascii_value(&http::HeaderValue::from_str(&id).unwrap()).unwrap()
                    }
                    id => id.into(),
                },
                upstream: [None, Some("app".into())][rng.usize(..2)].clone(),
                endpoint: [None, Some("127.0.0.1:3001".into())][rng.usize(..2)].clone(),
                cause: [None, Some(Cause::ClientAborted)][rng.usize(..2)],
                phase: [None, Some(Phase::ReadBody)][rng.usize(..2)],
                gateway_error: rng.bool(),
                attempts: attempts.into(),
                cache: [None, Some("stale")][rng.usize(..2)],
            };
            // Times from 1970 to 2200, with milliseconds.
            let now = SystemTime::UNIX_EPOCH
                + Duration::from_millis(if i == 0 {
                    0
                } else {
                    rng.u64(..7_258_118_400_000)
                });
            line.clear();
            access_json(&mut line, &r, now);
            assert_eq!(
                std::str::from_utf8(&line).unwrap(),
                reference_line(&r, now),
                "record {i}"
            );
        }
    }

    #[test]
    fn buffered_lines_reach_the_file() {
        let path = std::env::temp_dir().join(format!("cg-log-{}.log", std::process::id()));
        let log = Logger::new(Format::Json, Sink::File(path.clone())).unwrap();
        for i in 0..1000 {
            log.notice(Level::Info, &format!("line {i}"), &[]);
        }
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1000);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
        std::fs::remove_file(&path).unwrap();
    }

    /// A FIFO is a destination that fails and recovers for real: with no reader, writes fail
    /// (a broken pipe); once a reader opens it again, they succeed.
    #[test]
    fn lines_a_failing_destination_loses_are_counted_and_the_log_says_so_when_it_works_again() {
        use std::io::Read as _;
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = std::env::temp_dir().join(format!("cg-log-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid, NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let open_reader = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .unwrap()
        };
        let read_lines = |r: &mut std::fs::File| {
            let mut text = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            String::from_utf8(text)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        };
        let mut reader = open_reader();
        let log = Logger::new(Format::Json, Sink::File(path.clone())).unwrap();
        log.notice(Level::Info, "first", &[]);
        log.flush();
        let seen = read_lines(&mut reader);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0]["message"], "first");
        assert_eq!(log.lines_lost(), LinesLost::default());

        drop(reader);
        log.notice(Level::Info, "second", &[]);
        log.notice(Level::Info, "third", &[]);
        log.flush();
        assert_eq!(
            log.lines_lost(),
            LinesLost {
                slow: 0,
                write_error: 2
            }
        );

        let mut reader = open_reader();
        log.notice(Level::Info, "fourth", &[]);
        log.flush();
        let seen = read_lines(&mut reader);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0]["level"], "WARN");
        let said = seen[0]["message"].as_str().unwrap();
        assert!(
            said.starts_with("2 log lines lost: writing them to the log destination failed (")
                && said.contains("Broken pipe"),
            "{said}"
        );
        assert_eq!(seen[1]["message"], "fourth");
        assert_eq!(log.lines_lost().write_error, 2, "nothing more was lost");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn every_workers_lines_reach_the_file_in_their_order() {
        let path = std::env::temp_dir().join(format!("cg-log-workers-{}.log", std::process::id()));
        let log = Arc::new(Logger::for_workers(Format::Json, Sink::File(path.clone()), 3).unwrap());
        let threads: Vec<_> = (0..3)
            .map(|w| {
                let log = log.clone();
                std::thread::spawn(move || {
                    upstream::set_worker(w);
                    for i in 0..3000 {
                        log.notice(Level::Info, &format!("{w} {i}"), &[]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // A line of the gateway's own (this thread is no worker), logged after all of theirs.
        log.notice(Level::Info, "after", &[]);
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let (rest, last) = text.trim_end().rsplit_once('\n').unwrap();
        assert!(last.contains("\"message\":\"after\""), "{last}");
        // (Across two writes the times may step back a little: a line's time is read before
        // it joins its buffer.)
        let mut next = [0u32; 3];
        for line in rest.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let (w, i) = v["message"].as_str().unwrap().split_once(' ').unwrap();
            let (w, i): (usize, u32) = (w.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[w], "worker {w}'s lines out of order");
            next[w] += 1;
        }
        assert_eq!(next, [3000; 3], "every line of every worker");
        assert_eq!(log.lines_lost(), LinesLost::default());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn lines_of_several_buffers_merge_by_time_each_keeping_its_order() {
        let line = |t: &str, m: &str| {
            format!("{{\"time\":\"2026-12-07T02:42:{t}Z\",\"message\":\"{m}\"}}\n")
        };
        let a = [
            line("50.001", "a1"),
            line("50.003", "a2"),
            line("50.003", "a3"),
        ]
        .concat();
        let b = [
            line("50.002", "b1"),
            line("50.003", "b2"),
            line("50.009", "b3"),
        ]
        .concat();
        // Text lines start with the time; a line with none sorts first.
        let c = "2026-12-07T02:42:50.000Z INFO  gateway -- c1\nno time here\n".to_string();
        let mut out = Vec::new();
        merge_by_time(&[a.into_bytes(), b.into_bytes(), c.into_bytes()], &mut out);
        let order: Vec<&str> = std::str::from_utf8(&out)
            .unwrap()
            .lines()
            .map(|l| {
                l.rsplit_once("\"message\":\"")
                    .map_or(l, |(_, m)| m.trim_end_matches("\"}"))
            })
            .collect();
        assert_eq!(
            order,
            [
                "2026-12-07T02:42:50.000Z INFO  gateway -- c1",
                "no time here",
                "a1",
                "b1",
                "a2",
                "a3",
                "b2",
                "b3"
            ]
        );
    }

    #[test]
    fn the_values_copied_without_escaping_need_none() {
        let plain = |v: &str| !v.bytes().any(|b| ESCAPED[usize::from(b)]);
        assert!(Cause::ALL.iter().all(|c| plain(c.as_str())));
        assert!(Phase::ALL.iter().all(|p| plain(p.as_str())));
        // A method is a token (RFC 9110 §9.1): `http` refuses any other.
        for m in [&b"GET"[..], b"M-SEARCH", b"X!#$%&'*+.^_`|~9"] {
            assert!(plain(http::Method::from_bytes(m).unwrap().as_str()));
        }
        for bad in [&b"A\"B"[..], b"A\\B", b"A\nB", b"A B"] {
            assert!(http::Method::from_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_lines_are_readable() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Logger::new(Format::Text, Sink::Memory(lines.clone())).unwrap();
        let f = Failure::new(Cause::Refused, Phase::Connect).with_endpoint("127.0.0.1:1");
        log.gateway_error("abc", &f, 1, None);
        let line = lines.lock().unwrap()[0].clone();
        assert!(
            line.contains(
                " WARN  gateway_error request_id=abc status=502 cause=refused phase=connect"
            ),
            "{line}"
        );
        assert!(
            line.contains("-- The server behind the gateway refused the connection"),
            "{line}"
        );
    }
}
