//! Step 8c, `--error-log FILE`: the gateway's log lines near the time of the doctor's request.
//!
//! The log analyzer (`crates/logscan`, the engine of `cleargate logs`) reads the file in any of
//! the formats it knows and classifies each line into a cause. This step keeps the gateway errors
//! logged within a few minutes of the request, newest last, and tells apart the lines written
//! *while the doctor ran* (the file is measured when the run starts): those are about the
//! doctor's own requests, or at least about the same minute, and weigh as strong evidence; older
//! ones only support. Log times without a zone are read as UTC, so the window is generous.
//!
//! Besides the errors a client saw, cleargate's log says what it covered for: an attempt that
//! failed and was retried (`attempt_retried`), an endpoint ejected after failures. Those are
//! kept too, marked `absorbed`, so that a URL that looks healthy can still be told to be failing
//! underneath.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, SystemTime};

use cause::{Cause, Phase};
use serde::Serialize;

/// How far from the request a log line may be and still be shown.
const WINDOW: Duration = Duration::from_secs(5 * 60);
/// At most this many lines are reported.
const MAX_FINDINGS: usize = 10;

/// One gateway error from the log, classified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// Milliseconds since the epoch, when the line has a time.
    pub time: Option<i64>,
    #[serde(serialize_with = "crate::display")]
    pub cause: Cause,
    #[serde(serialize_with = "crate::display")]
    pub phase: Phase,
    pub detail: String,
    /// The upstream address or name the line names.
    pub upstream: Option<String>,
    /// The rule that matched, like `nginx.too_big_header` (or `cleargate.attempt_retried`).
    pub rule: String,
    /// The status the client got, when the line says.
    pub status: Option<u16>,
    /// Written after the doctor started: about its own requests, or the same moment.
    pub during_run: bool,
    /// The gateway covered for it (a retried attempt, an ejection): no client saw this failure.
    pub absorbed: bool,
}

impl LogEntry {
    /// The line as shown in the report.
    pub fn text(&self) -> String {
        let mut s = match self.time {
            Some(t) => format!("{} {}@{}", logscan::time::format(t), self.cause, self.phase),
            None => format!("{}@{}", self.cause, self.phase),
        };
        if !self.detail.is_empty() {
            s.push_str(&format!(" ({})", self.detail));
        }
        if let Some(u) = &self.upstream {
            s.push_str(&format!(" upstream {u}"));
        }
        s.push_str(&format!(" [{}]", self.rule));
        if self.absorbed {
            s.push_str(" (absorbed: the gateway covered for it)");
        }
        if self.during_run {
            s.push_str(" (during this run)");
        }
        s
    }

    /// Whether the line can be about `upstream` (`HOST:PORT`): lines that name no address, or
    /// name a backend by a name, may be.
    pub fn may_be_about(&self, upstream: &str) -> bool {
        match &self.upstream {
            None => true,
            Some(u) => {
                let bare = u
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .split('/')
                    .next()
                    .unwrap_or("");
                let looks_like_address = bare.contains(':')
                    && bare
                        .rsplit(':')
                        .next()
                        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
                !looks_like_address || bare.eq_ignore_ascii_case(upstream)
            }
        }
    }
}

/// What the error log showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorLogStep {
    pub file: String,
    /// False when the file could not be read.
    pub available: bool,
    pub note: String,
    /// Log lines near the request, with the cause each stands for, as shown.
    pub findings: Vec<String>,
    /// The same lines, classified, for the diagnosis.
    pub entries: Vec<LogEntry>,
}

/// The size of `file` now: lines after this offset are written during the run.
pub fn mark(file: &Path) -> Option<u64> {
    std::fs::metadata(file).ok().map(|m| m.len())
}

/// Looks for gateway errors in `file` near `around`; lines past byte `since` were written while
/// the doctor ran (a file smaller than `since` was rotated: every line counts as new).
pub fn correlate(file: &Path, around: SystemTime, since: Option<u64>) -> ErrorLogStep {
    let name = file.display().to_string();
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            return ErrorLogStep {
                file: name,
                available: false,
                note: format!("cannot read it: {e}"),
                findings: Vec::new(),
                entries: Vec::new(),
            }
        }
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let since = since.filter(|s| *s <= len);
    let at = around
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let window = WINDOW.as_millis() as i64;
    let mut reader = std::io::BufReader::new(f);
    let mut state = logscan::State::default();
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut near: Vec<LogEntry> = Vec::new();
    let mut total = 0usize;
    let mut error = None;
    loop {
        line.clear();
        let start = offset;
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(n) => offset += n as u64,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let during_run = since.is_none_or(|s| start >= s);
        let entry = match logscan::parse_line(text, None, &mut state) {
            logscan::Line::Finding(f) if f.role != logscan::Role::FollowUp => {
                total += 1;
                Some(LogEntry {
                    time: f.time,
                    cause: f.cause,
                    phase: f.phase,
                    detail: f.detail.to_string(),
                    upstream: f.upstream.map(|u| String::from_utf8_lossy(u).into_owned()),
                    rule: f.rule.to_string(),
                    status: f.status,
                    during_run,
                    absorbed: false,
                })
            }
            logscan::Line::Skipped(Some(logscan::Format::Cleargate)) => {
                absorbed(text).inspect(|_| total += 1)
            }
            _ => None,
        };
        let Some(mut entry) = entry else { continue };
        entry.during_run = during_run;
        // A line without a time is near only when it was written during the run.
        let close = match entry.time {
            Some(t) => (t - at).abs() <= window,
            None => during_run && since.is_some(),
        };
        if close {
            near.push(entry);
        }
    }
    // The newest lines, and among them those written during the run first of all.
    let keep_from = near.len().saturating_sub(MAX_FINDINGS);
    let shown: Vec<LogEntry> = near[keep_from..].to_vec();
    let note = match &error {
        Some(e) => format!("reading stopped early: {e}"),
        None if near.is_empty() => format!(
            "{total} gateway error(s) in the file, none within {} minutes of the request",
            WINDOW.as_secs() / 60
        ),
        None => {
            let during = near.iter().filter(|e| e.during_run).count();
            let absorbed = near.iter().filter(|e| e.absorbed).count();
            let mut s = format!(
                "{} gateway error(s) within {} minutes of the request ({total} in the file)",
                near.len(),
                WINDOW.as_secs() / 60
            );
            if since.is_some() {
                s.push_str(&format!(", {during} written during this run"));
            }
            if absorbed > 0 {
                s.push_str(&format!(
                    ", {absorbed} covered for by the gateway (retried or ejected)"
                ));
            }
            s
        }
    };
    ErrorLogStep {
        file: name,
        available: error.is_none(),
        note,
        findings: shown.iter().map(LogEntry::text).collect(),
        entries: shown,
    }
}

/// cleargate's lines about failures it covered for: `attempt_retried`, and an endpoint ejected
/// after failures.
fn absorbed(line: &[u8]) -> Option<LogEntry> {
    let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    let retried = has(b"\"kind\":\"attempt_retried\"");
    let ejected = has(b"\"message\":\"endpoint ejected");
    if !retried && !ejected {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let time = v["time"].as_str().and_then(rfc3339_ms);
    let upstream = v["endpoint"].as_str().map(str::to_string);
    if retried {
        let cause: Cause = v["cause"].as_str()?.parse().ok()?;
        let phase: Phase = v["phase"].as_str()?.parse().ok()?;
        return Some(LogEntry {
            time,
            cause,
            phase,
            detail: format!(
                "attempt {} failed and was retried",
                v["attempt"].as_u64().unwrap_or(1)
            ),
            upstream,
            rule: "cleargate.attempt_retried".into(),
            status: None,
            during_run: false,
            absorbed: true,
        });
    }
    let message = v["message"].as_str()?;
    let (cause, phase) = if let Some(i) = message.find("(last ") {
        let rest = &message[i + 6..];
        let end = rest.find(')')?;
        let (c, p) = rest[..end].split_once('@')?;
        (c.parse().ok()?, p.parse().ok()?)
    } else if message.contains("response timeout") {
        (Cause::Timeout, Phase::ReadHead)
    } else {
        // Ejected for 5xx answers: the application's own errors, not a transport failure.
        return None;
    };
    Some(LogEntry {
        time,
        cause,
        phase,
        detail: message.to_string(),
        upstream,
        rule: "cleargate.endpoint_ejected".into(),
        status: None,
        during_run: false,
        absorbed: true,
    })
}

/// `2026-11-23T10:04:05.123Z` (the time cleargate writes) in milliseconds since the epoch.
fn rfc3339_ms(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !t.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let days = logscan::time::days_from_civil(num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let frac = t[19..t.len() - 1].strip_prefix('.').unwrap_or("");
    let ms = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    Some(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleargate_times_parse() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(rfc3339_ms("1970-01-02T00:00:00Z"), Some(86_400_000));
        assert_eq!(rfc3339_ms("nonsense"), None);
    }

    #[test]
    fn retried_attempts_and_ejections_are_absorbed_failures() {
        let line = br#"{"time":"2026-12-02T10:00:00.250Z","level":"WARN","kind":"attempt_retried","request_id":"x","cause":"reset","phase":"read_head","upstream":"app","endpoint":"127.0.0.1:3001","attempt":1}"#;
        let e = absorbed(line).unwrap();
        assert_eq!((e.cause, e.phase), (Cause::Reset, Phase::ReadHead));
        assert!(e.absorbed);
        assert_eq!(e.upstream.as_deref(), Some("127.0.0.1:3001"));
        let line = br#"{"time":"2026-12-02T10:00:00Z","level":"WARN","kind":"gateway","upstream":"app","endpoint":"127.0.0.1:3001","message":"endpoint ejected for 5s after 5 consecutive failures (last closed@read_head)"}"#;
        let e = absorbed(line).unwrap();
        assert_eq!((e.cause, e.phase), (Cause::Closed, Phase::ReadHead));
        let line = br#"{"time":"2026-12-02T10:00:00Z","level":"WARN","kind":"gateway","message":"endpoint ejected for 5s after 5 consecutive 5xx answers (last 503)"}"#;
        assert!(absorbed(line).is_none());
    }

    #[test]
    fn lines_name_an_upstream_or_may_be_about_any() {
        let mut e = absorbed(br#"{"time":"2026-12-02T10:00:00Z","kind":"attempt_retried","cause":"reset","phase":"read_head","endpoint":"127.0.0.1:3001"}"#).unwrap();
        assert!(e.may_be_about("127.0.0.1:3001"));
        assert!(!e.may_be_about("127.0.0.1:3002"));
        e.upstream = Some("http://127.0.0.1:3002/f/x".into());
        assert!(e.may_be_about("127.0.0.1:3002"));
        e.upstream = Some("be_app/s1".into());
        assert!(e.may_be_about("127.0.0.1:3002"));
        e.upstream = None;
        assert!(e.may_be_about("anything"));
    }
}
