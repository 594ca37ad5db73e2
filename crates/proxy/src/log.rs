//! Request logs and gateway-error lines, written off the request path by one writer thread.
//!
//! Every request ends in exactly one access line; every gateway-made error also gets a WARN (or
//! ERROR) line with its explanation. Lines are JSON by default, or a text format for terminals.
//! The line is formatted by the caller and handed to the writer through a channel, so a slow
//! terminal or disk never holds a request.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cause::{Cause, Failure, Level, Phase};
use serde_json::{json, Map, Value};

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

enum Msg {
    Line(String),
    /// Answered once every earlier line is written and flushed.
    Flush(mpsc::Sender<()>),
}

enum Out {
    Channel(mpsc::Sender<Msg>),
    Memory(Arc<Mutex<Vec<String>>>),
}

/// The gateway's logger. Cheap to share.
pub struct Logger {
    format: Format,
    out: Out,
}

impl Logger {
    pub fn new(format: Format, sink: Sink) -> std::io::Result<Logger> {
        let out = match sink {
            Sink::Memory(lines) => Out::Memory(lines),
            other => {
                let mut writer: Box<dyn Write + Send> = match other {
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
                let (tx, rx) = mpsc::channel::<Msg>();
                std::thread::Builder::new()
                    .name("cleargate-log".into())
                    .spawn(move || {
                        let mut buf = std::io::BufWriter::new(&mut writer);
                        let write = |msg: Msg, buf: &mut std::io::BufWriter<_>| match msg {
                            Msg::Line(line) => {
                                let _ = writeln!(buf, "{line}");
                            }
                            Msg::Flush(done) => {
                                let _ = buf.flush();
                                let _ = done.send(());
                            }
                        };
                        while let Ok(msg) = rx.recv() {
                            write(msg, &mut buf);
                            // Flush when the burst is over, so lines appear promptly but in batches.
                            while let Ok(msg) = rx.try_recv() {
                                write(msg, &mut buf);
                            }
                            let _ = buf.flush();
                        }
                    })?;
                Out::Channel(tx)
            }
        };
        Ok(Logger { format, out })
    }

    fn emit(&self, line: String) {
        match &self.out {
            Out::Channel(tx) => {
                let _ = tx.send(Msg::Line(line));
            }
            Out::Memory(lines) => lines.lock().unwrap().push(line),
        }
    }

    /// Waits (at most a second) until every line logged so far is written out.
    pub fn flush(&self) {
        if let Out::Channel(tx) = &self.out {
            let (done_tx, done_rx) = mpsc::channel();
            if tx.send(Msg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(Duration::from_secs(1));
            }
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
    pub fn gateway_error(
        &self,
        request_id: &str,
        failure: &Failure,
        attempts: u32,
        status_sent: Option<u16>,
    ) {
        let answer = failure.answer();
        let mut m = Map::new();
        m.insert("request_id".into(), json!(request_id));
        m.insert("status".into(), json!(status_sent.unwrap_or(answer.status)));
        m.insert("cause".into(), json!(failure.cause.as_str()));
        m.insert("phase".into(), json!(failure.phase.as_str()));
        m.insert("upstream".into(), json!(failure.upstream));
        m.insert("endpoint".into(), json!(failure.endpoint));
        m.insert("attempts".into(), json!(attempts));
        m.insert("reused".into(), json!(failure.reused));
        m.insert("sent".into(), json!(failure.request_bytes));
        m.insert("received".into(), json!(failure.response_bytes));
        m.insert("detail".into(), json!(failure.detail));
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
        self.event(answer.level.as_str(), "gateway_error", m);
    }

    pub fn access(&self, record: &AccessRecord) {
        let mut m = Map::new();
        m.insert("client".into(), json!(record.client.map(|c| c.to_string())));
        m.insert("method".into(), json!(record.method));
        m.insert("host".into(), json!(record.host));
        m.insert("path".into(), json!(record.path));
        m.insert("proto".into(), json!(record.proto));
        m.insert("status".into(), json!(record.status));
        m.insert("bytes_in".into(), json!(record.bytes_in));
        m.insert("bytes_out".into(), json!(record.bytes_out));
        m.insert("duration_ms".into(), json!(ms(record.duration)));
        m.insert("request_id".into(), json!(record.request_id));
        m.insert("upstream".into(), json!(record.upstream));
        m.insert("endpoint".into(), json!(record.endpoint));
        m.insert("cause".into(), json!(record.cause.map(Cause::as_str)));
        m.insert("phase".into(), json!(record.phase.map(Phase::as_str)));
        m.insert("gateway_error".into(), json!(record.gateway_error));
        let attempts: Vec<Value> = record
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "endpoint": a.endpoint,
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
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
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
    pub endpoint: String,
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

/// Everything the access line says about one request.
#[derive(Clone, Debug, Default)]
pub struct AccessRecord {
    pub client: Option<SocketAddr>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub proto: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub request_id: String,
    pub upstream: Option<String>,
    pub endpoint: Option<String>,
    pub cause: Option<Cause>,
    pub phase: Option<Phase>,
    pub gateway_error: bool,
    pub attempts: Vec<AttemptRecord>,
}

/// `2026-11-23T10:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
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
