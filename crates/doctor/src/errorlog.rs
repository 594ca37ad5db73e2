//! Step 8c, `--error-log FILE`: the gateway's log lines near the time of the doctor's request.
//!
//! The log analyzer (`crates/logscan`, the engine of `cleargate logs`) reads the file in any of
//! the formats it knows (nginx, Apache httpd, HAProxy, cleargate) and classifies each line into a
//! cause; this step keeps the gateway errors logged within a few minutes of the request, newest
//! last. Log times without a zone are read as UTC, so the window is generous.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How far from the request a log line may be and still be shown.
const WINDOW: Duration = Duration::from_secs(5 * 60);
/// At most this many lines are reported.
const MAX_FINDINGS: usize = 10;

/// What the error log showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorLogStep {
    pub file: String,
    /// False when the file could not be read.
    pub available: bool,
    pub note: String,
    /// Log lines near the request, with the cause each stands for.
    pub findings: Vec<String>,
}

/// Looks for gateway errors in `file` near `around`.
pub fn correlate(file: &Path, around: SystemTime) -> ErrorLogStep {
    let name = file.display().to_string();
    let mut reader: Box<dyn std::io::Read> = match std::fs::File::open(file) {
        Ok(f) => Box::new(std::io::BufReader::new(f)),
        Err(e) => {
            return ErrorLogStep {
                file: name,
                available: false,
                note: format!("cannot read it: {e}"),
                findings: Vec::new(),
            }
        }
    };
    let at = around
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let window = WINDOW.as_millis() as i64;
    let mut near = Vec::new();
    let mut on_finding = |f: &logscan::Finding<'_>, _line: &[u8]| {
        let Some(t) = f.time else { return };
        if (t - at).abs() > window {
            return;
        }
        let mut s = format!("{} {}@{}", logscan::time::format(t), f.cause, f.phase);
        if !f.detail.is_empty() {
            s.push_str(&format!(" ({})", f.detail));
        }
        if let Some(u) = f.upstream {
            s.push_str(&format!(" upstream {}", String::from_utf8_lossy(u)));
        }
        s.push_str(&format!(" [{}]", f.rule));
        near.push(s);
    };
    let mut scanner = logscan::scan::Scanner::new(None).with_callback(&mut on_finding);
    let result = scanner.read(&mut reader, None);
    let total = scanner.summary.total();
    drop(scanner);
    let skipped = near.len().saturating_sub(MAX_FINDINGS);
    near.drain(..skipped);
    let available = result.is_ok();
    let note = match result {
        Err(e) => format!("reading stopped early: {e}"),
        Ok(()) if near.is_empty() => format!(
            "{total} gateway error(s) in the file, none within {} minutes of the request",
            WINDOW.as_secs() / 60
        ),
        Ok(()) => format!(
            "{} gateway error(s) within {} minutes of the request ({total} in the file)",
            near.len() + skipped,
            WINDOW.as_secs() / 60
        ),
    };
    ErrorLogStep {
        file: name,
        available,
        note,
        findings: near,
    }
}
