//! Caddy v2 logs: JSON, one object per line (`log { format json }`, the default for files).
//!
//! The lines that matter, by `logger` and `msg`:
//!
//! - `http.log.error.*`: a handler failed; `msg` is the error text (Go's, like `dial tcp
//!   10.0.2.15:8080: connect: connection refused`), `status` what the client got, `request` the
//!   request (`remote_ip`, `remote_port`, `host`, `uri`).
//! - `http.log.access.*` `handled request`: every request, with its `status`. A 5xx after its
//!   error line is a follow-up; a 5xx that carries the upstream's response headers is the
//!   upstream's own answer, relayed.
//! - `http.handlers.reverse_proxy`: at debug level `upstream roundtrip` for every attempt (with
//!   `error` when it failed, before the error line of the request); at error level `reading from
//!   backend` and `aborting with incomplete response` when the body broke after the head was sent
//!   (these carry no request).
//! - `http.handlers.reverse_proxy.health_checker.active`: active health checks.
//!
//! The error text decides the cause; the phase comes from the Go operation in it (`dial`,
//! `write`/`readfrom`, `read`) and from whether the head had been sent. The reader looks up keys by
//! their `"key":` text instead of parsing JSON; values stay escaped as written.

use cause::{Cause, Phase};

use crate::time;
use crate::{hash, Finding, Format, Line, Recent, Relayed, Role, State};

/// The raw (still escaped) string after an opening quote, up to the closing one.
fn quoted(rest: &[u8]) -> Option<&[u8]> {
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

/// `str_field!(hay, b"\"key\":\"")`: the string value after that pattern in `hay`.
macro_rules! str_field {
    ($hay:expr, $pat:literal) => {{
        let hay: &[u8] = $hay;
        find!(hay, $pat).and_then(|i| quoted(&hay[i + $pat.len()..]))
    }};
}

/// The number after `at`, where a `"key":` pattern of `len` bytes starts.
fn number_at(line: &[u8], at: Option<usize>, len: usize) -> Option<&[u8]> {
    let rest = line.get(at? + len..)?;
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    let end = rest
        .iter()
        .position(|c| !(c.is_ascii_digit() || *c == b'.'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The request's facts, from its `"request":{...}` object.
#[derive(Default)]
struct Request<'a> {
    client: Option<&'a [u8]>,
    port: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    uri: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    fn of(line: &'a [u8]) -> Request<'a> {
        let Some(at) = find!(line, b"\"request\":{") else {
            return Request::default();
        };
        let r = &line[at..];
        Request {
            client: str_field!(r, b"\"client_ip\":\"")
                .or_else(|| str_field!(r, b"\"remote_ip\":\"")),
            port: str_field!(r, b"\"remote_port\":\""),
            host: str_field!(r, b"\"host\":\""),
            uri: str_field!(r, b"\"uri\":\""),
        }
    }

    /// What ties the lines of one request together: its client connection.
    fn key(&self) -> Option<u64> {
        let ip = self.client?;
        let port = self.port?;
        Some(hash(ip) ^ hash(port).rotate_left(17))
    }
}

fn timestamp(line: &[u8]) -> Option<time::Millis> {
    let at = find!(line, b"\"ts\":")?;
    let rest = &line[at + 5..];
    match rest.strip_prefix(b"\"") {
        Some(text) => time::iso(text),
        None => time::unix_number(rest),
    }
}

pub fn parse<'a>(line: &'a [u8], state: &mut State) -> Line<'a> {
    let logger = str_field!(line, b"\"logger\":\"").unwrap_or_default();
    let level = str_field!(line, b"\"level\":\"").unwrap_or_default();
    let msg = str_field!(line, b"\"msg\":\"").unwrap_or_default();
    let skipped = Line::Skipped(Some(Format::Caddy));
    if let Some(server) = logger.strip_prefix(b"http.log.") {
        if server.starts_with(b"access") {
            return access(line, msg, state);
        }
        if server.starts_with(b"error") {
            return error_line(line, msg, state);
        }
        return skipped;
    }
    if let Some(rest) = logger.strip_prefix(b"http.handlers.reverse_proxy") {
        if rest.starts_with(b".health_checker") {
            return health_check(line, msg);
        }
        return match msg {
            b"upstream roundtrip" => roundtrip(line, state),
            b"reading from backend" => body(line, false, state),
            b"aborting with incomplete response" => body(line, true, state),
            _ if is_error(level) => Line::Unrecognized(Format::Caddy),
            _ => skipped,
        };
    }
    skipped
}

fn is_error(level: &[u8]) -> bool {
    matches!(level, b"error" | b"panic" | b"fatal" | b"dpanic")
}

fn status_of(line: &[u8]) -> Option<u16> {
    let at = find!(line, b"\"status\":");
    number_at(line, at, 9)
        .and_then(crate::time::digits)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| *s > 0)
}

fn finding<'a>(c: Classified, line: &'a [u8], text: &'a [u8]) -> Finding<'a> {
    let mut f = Finding::new(Format::Caddy, c.rule, c.cause, c.phase).detail(c.detail);
    f.time = timestamp(line);
    f.upstream = endpoint(text);
    f
}

fn with_request<'a>(f: &mut Finding<'a>, r: &Request<'a>) {
    f.client = r.client;
    f.host = r.host;
    f.request = r.uri;
}

/// `http.log.error`: the request's error, the one line it always writes.
fn error_line<'a>(line: &'a [u8], msg: &'a [u8], state: &mut State) -> Line<'a> {
    let status = status_of(line);
    let Some(c) = classify(msg, false) else {
        return if status.is_none_or(|s| s >= 500) {
            Line::Unrecognized(Format::Caddy)
        } else {
            // A 4xx from a handler (a file not found): not a gateway error.
            Line::Skipped(Some(Format::Caddy))
        };
    };
    let r = Request::of(line);
    let mut f = finding(c, line, msg);
    f.status = status;
    with_request(&mut f, &r);
    if let Some(key) = r.key() {
        // The attempt was counted from its `upstream roundtrip` line (debug level).
        if state.recent(key, f.time).is_some() {
            f.role = Role::FollowUp;
        }
        remember(state, key, &f);
    }
    Line::Finding(f)
}

fn remember(state: &mut State, key: u64, f: &Finding<'_>) {
    state.remember_recent(Recent {
        key,
        time: f.time,
        cause: f.cause,
        phase: f.phase,
    });
}

/// `upstream roundtrip` (debug level): one attempt; a failed one is counted here.
fn roundtrip<'a>(line: &'a [u8], state: &mut State) -> Line<'a> {
    let Some(err) = str_field!(line, b"\"error\":\"") else {
        return Line::Skipped(Some(Format::Caddy));
    };
    let Some(c) = classify(err, false) else {
        return Line::Unrecognized(Format::Caddy);
    };
    let r = Request::of(line);
    let mut f = finding(c, line, err);
    with_request(&mut f, &r);
    f.upstream = str_field!(line, b"\"upstream\":\"").or(f.upstream);
    if let Some(key) = r.key() {
        remember(state, key, &f);
    }
    Line::Finding(f)
}

/// The access line: skipped when fine, a follow-up after its error line, relayed when the
/// upstream answered the 5xx itself.
fn access<'a>(line: &'a [u8], msg: &'a [u8], state: &mut State) -> Line<'a> {
    if msg != b"handled request" {
        return Line::Skipped(Some(Format::Caddy));
    }
    let status = status_of(line);
    let r = Request::of(line);
    let time = timestamp(line);
    let known = r.key().and_then(|k| {
        let found = state.recent(k, time);
        state.forget_recent(k);
        found
    });
    let Some(status) = status.filter(|s| *s >= 500) else {
        return Line::Skipped(Some(Format::Caddy));
    };
    let mut f = match known {
        Some(k) => {
            let mut f = Finding::new(Format::Caddy, "caddy.access_after_error", k.cause, k.phase);
            f.role = Role::FollowUp;
            f
        }
        None => {
            // The response headers are the upstream's when it answered; Caddy's own error
            // response has none but its `Server`.
            let own = find!(line, b"\"resp_headers\":{\"Server\":[\"Caddy\"]}").is_some()
                || find!(line, b"\"resp_headers\":{}").is_some();
            if !own {
                return Line::Relayed(Relayed {
                    format: Format::Caddy,
                    detail: "the upstream answered 5xx",
                    time,
                    status: Some(status),
                    upstream: None,
                });
            }
            // Without the error line only the status tells, and only for these two.
            let (rule, cause, phase) = match status {
                504 => ("caddy.access_504", Cause::Timeout, Phase::ReadHead),
                503 => ("caddy.access_503", Cause::NoHealthyUpstream, Phase::Select),
                _ => return Line::Unrecognized(Format::Caddy),
            };
            Finding::new(Format::Caddy, rule, cause, phase).detail("access line only")
        }
    };
    f.time = time;
    f.status = Some(status);
    with_request(&mut f, &r);
    Line::Finding(f)
}

/// The body broke after the head was sent: `reading from backend` names the upstream's side,
/// `aborting with incomplete response` follows it (or stands alone when the client went away).
fn body<'a>(line: &'a [u8], aborting: bool, state: &mut State) -> Line<'a> {
    let Some(err) = str_field!(line, b"\"error\":\"") else {
        return Line::Unrecognized(Format::Caddy);
    };
    let time = timestamp(line);
    let key = hash(err) ^ 0x5ca1_ab1e;
    let known = aborting.then(|| state.recent(key, time)).flatten();
    let c = if known.is_some() {
        None
    } else if aborting && (has!(err, b"write ") || has!(err, b"context canceled")) {
        Some(Classified {
            rule: "caddy.client_gone",
            cause: Cause::ClientAborted,
            phase: Phase::Client,
            detail: "",
        })
    } else {
        classify(err, true)
    };
    let mut f = match (known, c) {
        (Some(k), _) => {
            state.forget_recent(key);
            let mut f = Finding::new(Format::Caddy, "caddy.aborting", k.cause, k.phase);
            f.role = Role::FollowUp;
            f.time = time;
            f
        }
        (None, Some(c)) => finding(c, line, err),
        (None, None) => return Line::Unrecognized(Format::Caddy),
    };
    if !aborting {
        remember(state, key, &f);
    }
    f.upstream = f.upstream.or_else(|| endpoint(err));
    Line::Finding(f)
}

/// Active health checks: a failed one is an event under the cause of its error.
fn health_check<'a>(line: &'a [u8], msg: &'a [u8]) -> Line<'a> {
    let host = str_field!(line, b"\"host\":\"");
    if msg == b"unexpected status code" || has!(msg, b"status code out of tolerances") {
        return Line::Relayed(Relayed {
            format: Format::Caddy,
            detail: "health check: wrong status",
            time: timestamp(line),
            status: None,
            upstream: host,
        });
    }
    let Some(err) = str_field!(line, b"\"error\":\"") else {
        return Line::Skipped(Some(Format::Caddy));
    };
    let Some(c) = classify(err, false) else {
        return Line::Unrecognized(Format::Caddy);
    };
    let mut f = finding(c, line, err).role(Role::Event);
    f.detail = "health check failed";
    f.upstream = host.or(f.upstream);
    Line::Finding(f)
}

/// The endpoint named in a Go network error: `dial tcp ADDR: ...`, `read tcp LOCAL->ADDR: ...`,
/// `dial unix PATH: ...`.
fn endpoint(err: &[u8]) -> Option<&[u8]> {
    let start = if let Some(i) = find!(err, b"->") {
        i + 2
    } else {
        let i = find!(err, b"dial tcp ").or_else(|| find!(err, b"dial unix "))?;
        let rest = &err[i..];
        i + memchr::memchr(b' ', &rest[5..])? + 6
    };
    let rest = &err[start..];
    let end = find!(rest, b": ").unwrap_or(rest.len());
    let addr = &rest[..end];
    (!addr.is_empty() && !addr.starts_with(b"lookup")).then_some(addr)
}

#[derive(Clone, Copy)]
struct Classified {
    rule: &'static str,
    cause: Cause,
    phase: Phase,
    detail: &'static str,
}

/// Go's error text to a cause; `body` when the response head had already been sent.
fn classify(err: &[u8], body: bool) -> Option<Classified> {
    use Cause::*;
    let c = |rule, cause, phase, detail| {
        Some(Classified {
            rule,
            cause,
            phase,
            detail,
        })
    };
    let late = if body {
        Phase::ReadBody
    } else {
        Phase::ReadHead
    };
    if has!(err, b"no upstreams available") {
        return c(
            "caddy.no_upstreams",
            NoHealthyUpstream,
            Phase::Select,
            "no upstreams available",
        );
    }
    if has!(err, b"context canceled") {
        return c("caddy.client_canceled", ClientAborted, Phase::Client, "");
    }
    if has!(err, b"server response headers exceeded") {
        return c(
            "caddy.headers_too_large",
            ResponseTooLarge,
            Phase::ReadHead,
            "",
        );
    }
    if has!(err, b"TLS handshake timeout") {
        return c(
            "caddy.tls_timeout",
            Timeout,
            Phase::TlsHandshake,
            "TLS handshake timed out",
        );
    }
    if has!(err, b"first record does not look like a TLS handshake")
        || has!(err, b"server gave HTTP response to HTTPS client")
    {
        return c(
            "caddy.tls_plain",
            Tls,
            Phase::TlsHandshake,
            "plain HTTP on the TLS port",
        );
    }
    if has!(err, b"x509: ") {
        let name = has!(err, b"certificate is valid for") || has!(err, b"not valid for any names");
        return c(
            "caddy.tls_certificate",
            Tls,
            Phase::TlsHandshake,
            if name {
                "certificate name mismatch"
            } else {
                "certificate verify failed"
            },
        );
    }
    if has!(err, b"tls: ") {
        return c(
            "caddy.tls_handshake",
            Tls,
            Phase::TlsHandshake,
            "handshake failed",
        );
    }
    if has!(err, b"lookup ") && (has!(err, b"dial ") || has!(err, b"no such host")) {
        return if has!(err, b"no such host") {
            c("caddy.dns_not_found", Dns, Phase::Resolve, "name not found")
        } else if has!(err, b"i/o timeout") || has!(err, b"timeout") {
            c(
                "caddy.dns_timeout",
                Timeout,
                Phase::Resolve,
                "resolver timed out",
            )
        } else if has!(err, b"server misbehaving") {
            c(
                "caddy.dns_failed",
                Dns,
                Phase::Resolve,
                "resolver server failure",
            )
        } else {
            c("caddy.dns_failed", Dns, Phase::Resolve, "resolution failed")
        };
    }
    if has!(err, b"dial ") {
        return connect_error(err);
    }
    if has!(err, b"timeout awaiting response headers") {
        return c(
            "caddy.response_header_timeout",
            Timeout,
            Phase::ReadHead,
            "",
        );
    }
    if has!(err, b"context deadline exceeded") {
        return c("caddy.deadline", Timeout, late, "deadline exceeded");
    }
    // Writing the request to the upstream: `readfrom` copies the request body into it.
    let readfrom = has!(err, b"readfrom ");
    if readfrom && has!(err, b"request body too large") {
        return c(
            "caddy.client_body_too_large",
            ClientInvalid,
            Phase::Client,
            "request body too large",
        );
    }
    if readfrom || (!body && (has!(err, b"write tcp") || has!(err, b"write unix"))) {
        if has!(err, b"broken pipe") || has!(err, b"connection reset by peer") {
            return c("caddy.reset_sending", Reset, Phase::SendRequest, "");
        }
        if has!(err, b"i/o timeout") {
            return c("caddy.send_timeout", Timeout, Phase::SendRequest, "");
        }
        if readfrom && has!(err, b"unexpected EOF") {
            return c(
                "caddy.client_upload_cut",
                ClientAborted,
                Phase::Client,
                "request body cut off",
            );
        }
    }
    if has!(err, b"invalid byte in chunk length")
        || has!(err, b"malformed chunked encoding")
        || has!(err, b"chunk length too large")
    {
        return c(
            "caddy.invalid_chunked",
            InvalidResponse,
            Phase::ReadBody,
            "invalid chunked framing",
        );
    }
    if has!(err, b"malformed HTTP")
        || has!(err, b"malformed MIME header")
        || has!(err, b"bad Content-Length")
        || has!(err, b"invalid Content-Length")
        || has!(err, b"multiple Content-Length")
        || has!(err, b"invalid header field")
    {
        return c(
            "caddy.malformed_response",
            InvalidResponse,
            Phase::ReadHead,
            "malformed response head",
        );
    }
    if has!(err, b"connection reset by peer") {
        return c(
            if body {
                "caddy.reset_reading_body"
            } else {
                "caddy.reset_reading_header"
            },
            Reset,
            late,
            "",
        );
    }
    if has!(err, b"i/o timeout") {
        return c(
            if body {
                "caddy.read_body_timeout"
            } else {
                "caddy.read_timeout"
            },
            Timeout,
            late,
            "",
        );
    }
    if has!(err, b"unexpected EOF") || err == b"EOF" || err.ends_with(b": EOF") {
        return c(
            if body {
                "caddy.closed_body"
            } else {
                "caddy.closed_header"
            },
            Closed,
            late,
            "",
        );
    }
    if has!(err, b"http2: ") || has!(err, b"stream error") {
        return c("caddy.h2_reset", Reset, late, "http/2 stream reset");
    }
    if has!(err, b"broken pipe") {
        return c("caddy.reset_sending", Reset, Phase::SendRequest, "");
    }
    // Go's transport wraps what broke the connection; whatever it was, the head was bad.
    if has!(err, b"transport connection broken") {
        return c(
            "caddy.connection_broken",
            InvalidResponse,
            Phase::ReadHead,
            "connection broken",
        );
    }
    None
}

fn connect_error(err: &[u8]) -> Option<Classified> {
    use Cause::*;
    let unix = has!(err, b"dial unix ");
    let (rule, cause, detail) = if unix && has!(err, b"no such file or directory") {
        ("caddy.unix_socket_missing", Refused, "unix socket missing")
    } else if unix && has!(err, b"permission denied") {
        (
            "caddy.unix_socket_permission",
            Refused,
            "unix socket permission denied",
        )
    } else if unix && has!(err, b"resource temporarily unavailable") {
        (
            "caddy.unix_socket_backlog_full",
            Refused,
            "unix socket backlog full",
        )
    } else if has!(err, b"connection refused") {
        if unix {
            (
                "caddy.unix_socket_refused",
                Refused,
                "unix socket: nothing listening",
            )
        } else {
            ("caddy.connect_refused", Refused, "connection refused")
        }
    } else if has!(err, b"timeout") {
        ("caddy.connect_timeout", Timeout, "connect timed out")
    } else if has!(err, b"no route to host")
        || has!(err, b"network is unreachable")
        || has!(err, b"host is down")
    {
        ("caddy.connect_unreachable", Unreachable, "no route")
    } else if has!(err, b"cannot assign requested address") {
        (
            "caddy.connect_no_ephemeral_port",
            LocalExhausted,
            "no free local port",
        )
    } else if has!(err, b"too many open files") {
        (
            "caddy.too_many_open_files",
            LocalExhausted,
            "file descriptors exhausted",
        )
    } else if has!(err, b"connection reset by peer") {
        ("caddy.connect_reset", Reset, "reset while connecting")
    } else {
        return None;
    };
    Some(Classified {
        rule,
        cause,
        phase: Phase::Connect,
        detail,
    })
}
