//! Step 8c, `--error-log FILE`: the gateway's log lines near the time of the doctor's request.
//!
//! Reading gateway logs (nginx, HAProxy, Apache, cleargate) and classifying their lines into
//! causes is the job of the log analyzer (`cleargate logs`), which is not part of this build
//! yet. Until it is, this step says so plainly and changes nothing else: the exit code and the
//! diagnosis stand on the other evidence. When the analyzer exists, [`correlate`] is the one
//! place to call it; the report's shape already has room for what it finds.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

/// What the error log showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorLogStep {
    pub file: String,
    /// False while the log analyzer is not available.
    pub available: bool,
    pub note: String,
    /// Log lines near the request, with the cause each stands for.
    pub findings: Vec<String>,
}

/// Looks for lines of `file` near `around`.
pub fn correlate(file: &Path, around: SystemTime) -> ErrorLogStep {
    let _ = around;
    ErrorLogStep {
        file: file.display().to_string(),
        available: false,
        note: "not available yet: reading gateway error logs needs the log analyzer \
               (`cleargate logs`), which this build does not have; the diagnosis uses the \
               other evidence"
            .into(),
        findings: Vec::new(),
    }
}
