//! cleargate's own JSON log (crates/proxy/src/log.rs): one object per line.
//!
//! Every request writes one `"kind":"access"` line; a gateway-made error also writes a
//! `"kind":"gateway_error"` line just before it. The access line knows the request (client, host,
//! path) and the failing attempt (`reused`), so it is the finding; the `gateway_error` line is its
//! follow-up. The cause and phase are already in the vocabulary: no guessing here.
//!
//! The reader looks up top-level keys by their `"key":` text instead of parsing JSON: the
//! logger writes these keys first and in a fixed order, before the `attempts` array.

use cause::{Cause, Phase};

use crate::bytes::{contains, find};
use crate::time::{self, digits};
use crate::{Finding, Format, Line, Relayed, Role};

/// The raw (still escaped) string value of `"key":"..."`.
fn string<'a>(line: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let pat = format!("\"{key}\":\"");
    let start = find(line, pat.as_bytes())? + pat.len();
    let rest = &line[start..];
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            b'\\' => i += 2,
            b'"' => return Some(&rest[..i]),
            _ => i += 1,
        }
    }
    None
}

fn number(line: &[u8], key: &str) -> Option<u32> {
    let pat = format!("\"{key}\":");
    let start = find(line, pat.as_bytes())? + pat.len();
    let rest = &line[start..];
    let end = rest
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    digits(&rest[..end])
}

/// `2026-11-23T10:04:05.123Z`.
fn timestamp(t: &[u8]) -> Option<time::Millis> {
    if t.len() < 19 || t[4] != b'-' || t[7] != b'-' || t[10] != b'T' {
        return None;
    }
    let (h, m, s) = time::hms(&t[11..19])?;
    let ms = if t.get(19) == Some(&b'.') {
        time::fraction_ms(&t[20..])
    } else {
        0
    };
    time::make(
        digits(&t[0..4])?,
        digits(&t[5..7])?,
        digits(&t[8..10])?,
        h,
        m,
        s,
        ms,
    )
}

fn named<T: std::str::FromStr>(line: &[u8], key: &str) -> Option<T> {
    string(line, key)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

pub fn parse(line: &[u8]) -> Line<'_> {
    let kind = string(line, "kind");
    let access = kind == Some(b"access");
    if !access && kind != Some(b"gateway_error") {
        return Line::Skipped(kind.map(|_| Format::Cleargate));
    }
    let when = string(line, "time").and_then(timestamp);
    let status = number(line, "status").map(|s| s as u16);
    let cause: Option<Cause> = named(line, "cause");
    let phase: Option<Phase> = named(line, "phase");
    if access && !contains(line, b"\"gateway_error\":true") {
        // Not made by the gateway; an upstream's own 5xx was relayed.
        if cause.is_none() && status.is_some_and(|s| s >= 500) {
            return Line::Relayed(Relayed {
                format: Format::Cleargate,
                detail: "the upstream answered 5xx",
                time: when,
                status,
                upstream: string(line, "endpoint"),
            });
        }
        if cause.is_none() {
            return Line::Skipped(Some(Format::Cleargate));
        }
    }
    let (Some(cause), Some(phase)) = (cause, phase) else {
        return Line::Unrecognized(Format::Cleargate);
    };
    let mut f = Finding::new(Format::Cleargate, "cleargate", cause, phase);
    f.time = when;
    f.status = status;
    f.upstream = string(line, "endpoint").or_else(|| string(line, "upstream"));
    if access {
        f.client = string(line, "client").map(|c| match memchr::memrchr(b':', c) {
            Some(i) => &c[..i],
            None => c,
        });
        f.host = string(line, "host");
        f.request = string(line, "path");
        f.reused = Some(failed_attempt_reused(line));
    } else {
        f.role = Role::FollowUp;
        f.reused = Some(contains(line, b"\"reused\":true"));
    }
    if f.reused == Some(true) {
        f.detail = "on a reused connection";
    }
    Line::Finding(f)
}

/// Whether an attempt that failed (has a cause) ran on a reused connection.
fn failed_attempt_reused(line: &[u8]) -> bool {
    let Some(start) = find(line, b"\"attempts\":[") else {
        return false;
    };
    line[start..]
        .split(|c| *c == b'}')
        .any(|a| contains(a, b"\"reused\":true") && contains(a, b"\"cause\":\""))
}
